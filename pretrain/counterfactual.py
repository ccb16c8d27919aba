"""Engine-truth controllability: a world model's rollouts scored against its own engine's, from saved states.

    from worldloom.envs import make_env
    from worldloom.pretrain.checkpoint import load_world_model
    from worldloom.pretrain.counterfactual import counterfactual_scores, engine_cases
    model, _, codec = load_world_model("runs/wm")
    cases = engine_cases(make_env("voxel", height=64, width=64), "mixture", seeds=range(8), context=5, horizon=8)
    scores = counterfactual_scores(model, codec, cases)  # controllability and PSNR by horizon, beside baselines

An inverse dynamics model reading generated frames (MineWorld, GameWorld; `evaluate.controllability`)
is a proxy for whether a world model obeys its actions. VoxelWorld saves and restores its whole
state (`envs/snapshot.py`), so the truth is at hand: from one saved state, K action sequences
(BRANCHES: the scripted player's own next actions, a turn, a walk, standing still) are played in
the engine and, from the same context frames, in the model.

The engine-truth controllability at horizon h is the fraction of (state, ordered pair of
sequences A != B) for which the model's frame h under A is closer (mean squared error) to the
engine's frame h under A than to the engine's frame h under B. Pairs whose engine frames are
equal at h (a walk into a wall and standing still) say nothing and are left out; an exact tie
counts one half. Copying the last context frame scores 0.5 by construction (of a pair and its
reverse exactly one wins); the engine itself scores 1. Beside the model, in the same run: the
model given another branch's actions (a derangement), copy-last and the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worldloom import actions as act
from worldloom.errors import UserError

BRANCHES: tuple[str, ...] = ("player", "turn", "walk", "still")
TURN_DEG = 6.0  # yaw degrees per step of the turn branch (a full turn in 3 s at 20 fps)


@dataclass
class EngineCase:
    """One saved state, the context frames that led to it and what the engine showed next under each branch."""

    seed: int
    context_frames: np.ndarray  # (C, H, W, 3) uint8; the last is the frame at the saved state
    context_actions: list[dict]  # the C - 1 actions between the context frames
    state: bytes  # VoxelWorldEnv.get_state() at the last context frame
    branches: dict[str, list[dict]]  # branch name -> its `horizon` actions, the first taken at the saved state
    frames: np.ndarray  # (K, horizon, H, W, 3) uint8: the engine's frames after each action, in `branches` order


def branch_actions(name: str, horizon: int, player_actions: list[dict] | None = None) -> list[dict]:
    """`horizon` actions of a branch: player (its recorded actions), turn (yaw right), walk (forward), still."""
    if name == "player":
        if player_actions is None or len(player_actions) < horizon:
            raise ValueError(f"the player branch needs {horizon} recorded actions")
        return list(player_actions[:horizon])
    step = act.noop()
    if name == "turn":
        step["camera"] = np.array([0.0, TURN_DEG], np.float32)
    elif name == "walk":
        step["forward"] = 1
    elif name != "still":
        raise ValueError(f"unknown branch {name!r}; known: {', '.join(BRANCHES)}")
    return [dict(step) for _ in range(horizon)]


def play_from(env, state: bytes, sequence: list[dict]) -> np.ndarray:
    """Restore `state` and play `sequence`: the frame after each action, (T, H, W, 3) uint8."""
    env.set_state(state)
    return np.stack([env.step(a)[0] for a in sequence])


def engine_cases(env, player: str, seeds, context: int, horizon: int, warmup: int = 20,
                 branches: tuple[str, ...] = BRANCHES) -> list[EngineCase]:
    """A saved state per seed: `player` plays `warmup + context - 1` steps from `env.reset(seed)`
    (the last `context` frames are the model's context), the state is saved, and every branch is
    played `horizon` steps from it. A seed whose episode ends before that is skipped. `env` must
    save and restore its state (VoxelWorld); UserError otherwise."""
    from worldloom.envs import make_player

    if not (hasattr(env, "get_state") and hasattr(env, "set_state")):
        raise UserError(f"{type(env).__name__} cannot save and restore its state; the counterfactual eval needs VoxelWorld")
    if context < 1 or horizon < 1:
        raise ValueError(f"context and horizon must be >= 1, got {context} and {horizon}")
    cases = []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        p = make_player(player, seed=int(seed))
        frames, taken, ended = [obs], [], False
        for _ in range(warmup + context - 1 + horizon):
            if len(taken) == warmup + context - 1:
                state = env.get_state()
            a = p.act(obs, info)
            obs, _, term, trunc, info = env.step(a)
            frames.append(obs)
            taken.append(a)
            if term or trunc:
                ended = True
                break
        if ended:
            continue
        cut = warmup + context - 1
        own = {"player": np.stack(frames[cut + 1:])}  # the player went on from the state: no replay needed
        sequences = {name: branch_actions(name, horizon, taken[cut:]) for name in branches}
        played = [own[name] if name in own else play_from(env, state, sequences[name]) for name in branches]
        cases.append(EngineCase(int(seed), np.stack(frames[cut - context + 1:cut + 1]), taken[cut - context + 1:cut],
                                state, sequences, np.stack(played)))
    return cases


def resize(frames: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (..., H, W, 3) frames at the model's size (area), as the model sees and makes them."""
    from .data import frames_to_model, model_to_frames

    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames.reshape(1, -1, *frames.shape[-3:])))
    return model_to_frames(frames_to_model(x, image_size))[0].numpy().reshape(*lead, image_size, image_size, 3)


@torch.no_grad()
def model_branches(model, codec, case: EngineCase, sample=None, seed: int = 0,
                   sequences: list[list[dict]] | None = None) -> np.ndarray:
    """The model's rollouts from the case's context under each branch's actions (or `sequences`):
    (K, horizon, S, S, 3) uint8 at the model's size. UserError if the case's context is shorter
    than the model's (num_frames - 1)."""
    from .data import frames_to_model, model_to_frames
    from .flow import SampleConfig, rollout
    from .model import encode_actions

    sample = sample or SampleConfig(num_steps=1, context_noise=0.0)
    context = model.cfg.num_frames - 1
    if len(case.context_frames) < context:
        raise UserError(f"the cases have {len(case.context_frames)} context frames; the model needs {context}: "
                        f"make them with context={context}")
    sequences = sequences or list(case.branches.values())
    horizon = len(sequences[0])
    k = len(sequences)
    x = frames_to_model(torch.from_numpy(case.context_frames[-context:])[None], model.cfg.image_size)  # (1, Tc, 3, S, S)
    past = case.context_actions[len(case.context_actions) - (context - 1):] if context > 1 else []
    buttons, camera = zip(*(act.to_arrays(past + list(seq)) for seq in sequences), strict=True)
    action = encode_actions(torch.from_numpy(np.stack(buttons)), torch.from_numpy(np.stack(camera)))  # (K, Tc-1+H, 24)
    has = torch.ones(action.shape[:2], dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    latent = codec.encode(x).expand(k, *([-1] * (x.dim() - 1)))
    out = codec.decode(rollout(model, latent, action, has, horizon, sample, gen))  # (K, H, 3, S, S)
    return model_to_frames(out).numpy()


def controllability(generated: np.ndarray, engine: np.ndarray) -> dict:
    """Engine-truth controllability by horizon of generated vs engine frames, both (S, K, H, h, w, 3)
    uint8 (state, branch, horizon): {"by_horizon": [H fractions], "pairs": [H counted pairs]};
    a horizon with no informative pair gives None."""
    if generated.shape != engine.shape or generated.ndim != 6:
        raise ValueError(f"generated {generated.shape} and engine {engine.shape} must both be (S, K, H, h, w, 3)")
    g, e = generated.astype(np.float32), engine.astype(np.float32)
    num_branches, horizon = g.shape[1], g.shape[2]
    wins, counted = np.zeros(horizon), np.zeros(horizon, int)
    own = ((g - e) ** 2).mean(axis=(3, 4, 5))  # (S, K, H): model under A vs engine under A
    for a in range(num_branches):
        for b in range(num_branches):
            if a == b:
                continue
            other = ((g[:, a] - e[:, b]) ** 2).mean(axis=(2, 3, 4))  # (S, H): model under A vs engine under B
            informative = (e[:, a] != e[:, b]).any(axis=(2, 3, 4))  # (S, H)
            score = (own[:, a] < other) + 0.5 * (own[:, a] == other)
            wins += (score * informative).sum(axis=0)
            counted += informative.sum(axis=0)
    return {"by_horizon": [float(w / c) if c else None for w, c in zip(wins, counted, strict=True)],
            "pairs": counted.tolist()}


def psnr_by_horizon(generated: np.ndarray, engine: np.ndarray) -> list[float]:
    """Mean PSNR (dB, capped at 60) of (S, K, H, h, w, 3) frames against the engine's, by horizon."""
    mse = ((generated.astype(np.float32) - engine.astype(np.float32)) ** 2).mean(axis=(3, 4, 5))  # (S, K, H)
    return (10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))).clip(max=60.0).mean(axis=(0, 1)).tolist()


def counterfactual_scores(model, codec, cases: list[EngineCase], sample=None, seed: int = 0) -> dict:
    """The model, the model given a derangement of the branches' actions, copy-last and the engine,
    each as {"controllability": by horizon, "psnr": by horizon}, on the cases (engine frames at
    the model's size); plus the number of states and branches."""
    if not cases:
        raise UserError("no saved states to score (every episode ended before the context and horizon were played)")
    size = model.cfg.image_size
    engine = resize(np.stack([c.frames for c in cases]), size)  # (S, K, H, S, S, 3)
    k = engine.shape[1]
    if k < 2:
        raise ValueError("controllability needs at least two branches")
    runs = {
        "model": [model_branches(model, codec, c, sample, seed) for c in cases],
        # branch i generated under branch i+1's actions and compared with the engine's branch i
        "shuffled_actions": [model_branches(model, codec, c, sample, seed,
                                            [list(c.branches.values())[(i + 1) % k] for i in range(k)]) for c in cases],
        "copy_last": [np.broadcast_to(resize(c.context_frames[-1], size), engine.shape[1:]) for c in cases],
        "engine": list(engine),
    }
    out = {"states": len(cases), "branches": list(cases[0].branches), "horizon": engine.shape[2]}
    for name, frames in runs.items():
        frames = np.stack(frames)
        out[name] = {"controllability": controllability(frames, engine)["by_horizon"], "psnr": psnr_by_horizon(frames, engine)}
    out["pairs"] = controllability(engine, engine)["pairs"]
    return out


COUNTERFACTUAL_SEED = 1_000_000  # state i is played in the world of seed COUNTERFACTUAL_SEED + i
WARMUP = 20  # steps the player plays before the context starts


def evaluate_counterfactual(model, codec, cfg) -> dict:
    """`worldloom pretrain eval --counterfactual K`: counterfactual_scores on `cfg.num_clips` states
    of VoxelWorld at the size of the first dataset in `cfg.data` (which must come from VoxelWorld),
    `cfg.horizon` steps, the first K of BRANCHES, the eval's sampling config and seed."""
    from worldloom.datasets import Dataset
    from worldloom.envs import make_env

    ds = Dataset(cfg.data[0])
    envs = set(ds.episodes.column("env").to_pylist())
    if envs != {"voxel"}:
        raise UserError(f"{cfg.data[0]}: episodes from {sorted(map(str, envs))}; --counterfactual plays VoxelWorld "
                        "states, so give held-out VoxelWorld data")
    env = make_env("voxel", height=ds.spec.height, width=ds.spec.width)
    seeds = range(COUNTERFACTUAL_SEED, COUNTERFACTUAL_SEED + cfg.num_clips)
    cases = engine_cases(env, "mixture", seeds, context=model.cfg.num_frames - 1, horizon=cfg.horizon, warmup=WARMUP,
                         branches=BRANCHES[:cfg.counterfactual])
    return counterfactual_scores(model, codec, cases, cfg.sample, cfg.seed)


def counterfactual_markdown(r: dict) -> list[str]:
    """eval.md's engine-truth table: controllability and PSNR against the engine, by horizon."""
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"Engine-truth controllability: {r['states']} saved VoxelWorld states, branches {', '.join(r['branches'])} "
             "(fraction of ordered branch pairs where the rollout under A is closer to the engine's A than to its B).", "",
             "| horizon | " + " | ".join(str(h + 1) for h in range(r["horizon"])) + " |", "|---|" + "---|" * r["horizon"]]
    names = {"model": "model", "shuffled_actions": "model, shuffled actions", "copy_last": "copy-last", "engine": "engine"}
    for key, label in names.items():
        lines.append(f"| controllability, {label} | " + " | ".join(fmt(v) for v in r[key]["controllability"]) + " |")
    for key in ("model", "shuffled_actions", "copy_last"):
        lines.append(f"| PSNR vs engine, {names[key]} | " + " | ".join(f"{v:.1f}" for v in r[key]["psnr"]) + " |")
    return lines + [""]
