"""Who plays a task: a trained policy, a scripted player or the random player, behind one interface.

    controller = make_controller("runs/bc-env", batch=8, task="collect_logs")  # or "random", "scripted:mixture"
    controller.begin(slot=0, seed=123)                          # a new episode in slot 0
    actions = controller.act(obs, infos)                        # obs (B, H, W, 3) uint8 -> B action dicts

A controller plays B episodes side by side (slots); a policy runs one batched forward pass per
step for all of them, and each slot samples from its own generator seeded by its episode, so an
episode's actions do not depend on which other episodes shared the batch. A task-conditioned
policy is given the task it plays (its embedding; "no task" for one it was not trained on).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np

from worldloom import actions as act
from worldloom.envs import PLAYER_NAMES, make_player
from worldloom.errors import UserError

REFERENCES = ("random", *(f"scripted:{name}" for name in PLAYER_NAMES if name != "random"))


def is_reference(spec: str) -> bool:
    """True for the players that need no training: random and scripted:NAME."""
    return spec == "random" or spec.startswith("scripted:")


def spec_name(spec: str) -> str:
    """A short, file-safe name: the run directory's name, `random` or `scripted-mixture`."""
    return spec.replace(":", "-") if is_reference(spec) else Path(spec).resolve().name


class ScriptedController:
    """One scripted (or random) player per slot, each seeded by its episode."""

    frame_shape: tuple[int, int] | None = None  # plays at any resolution
    runtime = None  # no network
    runtime_note = ""

    def __init__(self, name: str, batch: int):
        if name not in PLAYER_NAMES:
            raise UserError(f"unknown scripted player {name!r}; known: {', '.join(PLAYER_NAMES)} "
                            "(--policy random or --policy scripted:NAME)")
        self.name, self.players = name, [make_player(name, seed=0) for _ in range(batch)]

    def begin(self, slot: int, seed: int) -> None:
        self.players[slot] = make_player(self.name, seed=seed)

    def act(self, obs: np.ndarray, infos: list[dict]) -> list[dict]:
        return [player.act(o, info) for player, o, info in zip(self.players, obs, infos, strict=True)]


class PolicyController:
    """A trained policy playing B slots with one batched forward pass per step."""

    def __init__(self, run_dir: str, batch: int, temperature: float = 1.0, device: str = "cpu",
                 task: str | None = None, runtime: str = "auto"):
        import torch

        from .checkpoint import load_policy
        from .inference import closed_loop_player

        self.torch = torch
        self.device = torch.device(device)
        self.policy, self.cfg = load_policy(run_dir, self.device)
        # Policy.step arranged for speed (ONNX Runtime on a CPU, else torch), built once: the weights stay as loaded
        self.player, self.runtime, self.runtime_note = closed_loop_player(self.policy, runtime, batch)
        self.frame_shape = (self.cfg.height, self.cfg.width)
        self.temperature = temperature
        self.state = self.policy.initial_state(batch, self.device)
        self.fresh = np.zeros(batch, bool)
        self.rngs = [np.random.default_rng(0) for _ in range(batch)]
        # the task's embedding row (0: no task, for a task this policy was not conditioned on)
        self.task = torch.full((batch,), self.cfg.task_index(task), dtype=torch.int64, device=self.device) \
            if self.cfg.tasks else None

    def begin(self, slot: int, seed: int) -> None:
        self.fresh[slot] = True
        self.rngs[slot] = np.random.default_rng([seed, 0x5A3])

    def act(self, obs: np.ndarray, infos: list[dict]) -> list[dict]:
        from .model import sample_actions

        torch = self.torch
        frames = torch.from_numpy(np.ascontiguousarray(obs)).to(self.device)  # (B, H, W, 3) uint8
        reset = torch.from_numpy(self.fresh.copy()) if self.fresh.any() else None
        with torch.inference_mode():
            logits, self.state = self.player.step(frames, self.state, reset, self.task)
        self.fresh[:] = False
        buttons, camera = sample_actions(logits, self.temperature, self.rngs)
        return actions_from_arrays(buttons, camera)


def actions_from_arrays(buttons: np.ndarray, camera: np.ndarray) -> list[dict]:
    """Buttons (B, 20) and camera (B, 2) degrees -> B action dicts, as `actions.from_arrays` makes each."""
    camera = np.asarray(camera, dtype=np.float32)
    return [{**dict(zip(act.BUTTONS, row, strict=True)), "camera": camera[i].copy()}
            for i, row in enumerate(np.asarray(buttons, bool).astype(np.int64).tolist())]


def make_controller(spec: str, batch: int, temperature: float = 1.0, device: str = "cpu", task: str | None = None,
                    runtime: str = "auto"):
    """`random`, `scripted:NAME` or a policy run directory -> a controller of `batch` slots; `task`:
    the short name of the task played (a task-conditioned policy's embedding; None: no task);
    `runtime`: what runs a policy's steps (agent/inference.py `closed_loop_player`)."""
    if spec == "random":
        return ScriptedController("random", batch)
    if spec.startswith("scripted:"):
        return ScriptedController(spec.split(":", 1)[1], batch)
    return PolicyController(spec, batch, temperature, device, task, runtime)


def frame_shape_of(spec: str) -> tuple[int, int] | None:
    """The (height, width) a player takes, read from its run's config without loading weights; None: any."""
    if is_reference(spec):
        return None
    from .checkpoint import model_config

    cfg = model_config(spec)
    return (cfg.height, cfg.width)


def conditioning(spec: str, task: str) -> str:
    """How `spec` is told the task (short name) it plays: "task" (its own embedding), "none" (a task-conditioned
    policy that was not trained on this task: it plays with the no-task embedding), "unconditioned" (a policy
    without task embeddings) or "reference" (random and scripted players, which read `info`)."""
    if is_reference(spec):
        return "reference"
    from .checkpoint import model_config

    tasks = model_config(spec).tasks
    return "unconditioned" if not tasks else "task" if task in tasks else "none"


def no_task_note(spec: str, task: str) -> str | None:
    """The note for a task-conditioned policy told a task it was not trained on (`conditioning` "none"), naming
    the tasks it knows; None otherwise. `task`: its id or short name."""
    from worldloom.envs.tasks import short_name, task_by_name

    if conditioning(spec, short_name(task)) != "none":
        return None
    from .checkpoint import model_config

    return (f"{spec} is conditioned on {', '.join(model_config(spec).tasks)}, not on {task_by_name(task).env_id}: it "
            "plays with its no-task embedding")


def check_compatible(want: tuple[int, int] | None, env: gymnasium.Env, spec: str, task_id: str) -> None:
    """UserError naming both sides when the env's observations or actions are not what the player takes.

    want: the player's (height, width) (`frame_shape_of`, a controller's `frame_shape`); None: any size."""
    shape = tuple(env.observation_space.shape or ())
    if len(shape) == 4:
        raise UserError(f"{task_id} gives stacks of {shape[0]} frames per observation {shape}, but {spec} takes one "
                        f"frame per step and keeps its own memory: evaluate on the unwrapped task")
    if want is not None and shape[:2] != want:
        raise UserError(f"{spec} takes {want[1]}x{want[0]} frames but {task_id} renders {shape[1]}x{shape[0]}: evaluate "
                        f"with --resolution {want[0]} (the policy's) or train a policy at {shape[0]}")
    keys = set(getattr(env.action_space, "spaces", {}) or {})
    expected = {*act.BUTTONS, "camera"}
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise UserError(f"{task_id}'s action space differs from the one {spec} acts in (WorldLoom's 20 buttons + camera): "
                        f"it lacks {missing or 'nothing'} and adds {extra or 'nothing'}")
