"""Engine branches: from saved VoxelWorld states, several action sequences played in the engine.

    worldloom capture branches --episodes 16 --context 5 --horizon 8 --resolution 64 --out data/branches.safetensors

    from worldloom.capture.branches import BranchesConfig, record_branches
    branches = record_branches(BranchesConfig(out="data/branches.safetensors"))

For each seed the scripted player plays `warmup + context - 1` steps from `env.reset(seed)` (the
last `context` frames become a world model's context), the env's state is saved
(`VoxelWorldEnv.get_state`), and every branch is played `horizon` steps from it: `player` (the
player's own next actions), `turn` (yaw right), `walk` (forward), `still` (no-op). What the engine
showed is written in the branches format (datasets/branches.py) for `worldloom pretrain eval
--counterfactual FILE` (pretrain/counterfactual.py) to score a world model against.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from worldloom import actions as act
from worldloom.config import doc
from worldloom.datasets.branches import Branches, check_branches_out, save_branches
from worldloom.envs import PLAYER_NAMES, check_player, check_resolution
from worldloom.errors import UserError

BRANCHES: tuple[str, ...] = ("player", "turn", "walk", "still")
TURN_DEG = 6.0  # yaw degrees per step of the turn branch (a full turn in 3 s at 20 fps)
SEED_BASE = 1_000_000  # state i is played in the world of seed SEED_BASE + seed + i
MAX_STATE_SEED = 2**30  # SEED_BASE + seed + i stays a world seed (envs/voxel.py MAX_SEED: 31 bits)


@dataclasses.dataclass(frozen=True)
class BranchesConfig:
    out: str = doc("output file (.safetensors)")
    env: str = doc("env to play: voxel (the one that saves and restores its state)", "voxel")
    player: str = doc(f"scripted player ({', '.join(PLAYER_NAMES)}) that leads to each state and plays the player branch", "mixture")
    episodes: int = doc("saved states (one world and spawn each)", 16)
    context: int = doc("frames before each state, the last at the state (a world model's context)", 5)
    horizon: int = doc("steps played from each state in each branch", 8)
    branches: tuple[str, ...] = doc("branches, from player, turn, walk, still", BRANCHES)
    warmup: int = doc("steps the player plays before the context starts", 20)
    resolution: int = doc("frame height and width in pixels (voxel: 64..360)", 64)
    seed: int = doc("state i is played in the world of seed 1000000 + seed + i", 0)
    antialias: bool = doc("2x2 samples per pixel, averaged (VoxelWorld's `antialias`; match the footage the world model learned from)", False)

    def __post_init__(self):
        for name in ("episodes", "context", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.seed <= MAX_STATE_SEED or self.episodes > MAX_STATE_SEED:
            raise ValueError(f"seed must be a whole number in 0..{MAX_STATE_SEED} (worlds from 1000000 + seed on), "
                             f"got {self.seed}")
        check_resolution(self.env, self.resolution)  # the env's own range, refused now and not once it starts
        check_player(self.player)
        if self.antialias and self.env != "voxel":
            raise ValueError(f"antialias applies to the voxel env only, got env={self.env!r}")
        unknown = sorted(set(self.branches) - set(BRANCHES))
        if unknown or len(set(self.branches)) < 2 or len(set(self.branches)) != len(self.branches):
            raise ValueError(f"branches must be 2..4 different names of {', '.join(BRANCHES)}, got {list(self.branches)}")


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


@dataclasses.dataclass
class EngineCase:
    """One saved state, the context frames that led to it and what the engine showed next under each branch."""

    seed: int
    context_frames: np.ndarray  # (C, H, W, 3) uint8; the last is the frame at the saved state
    context_actions: list[dict]  # the C - 1 actions between the context frames
    state: bytes  # env.get_state() at the last context frame
    branches: dict[str, list[dict]]  # branch name -> its horizon actions, the first taken at the saved state
    frames: np.ndarray  # (K, horizon, H, W, 3) uint8: the engine's frame after each action, in `branches` order
    context_pitch: list[float] | None = None  # (C,) the view's pitch at each context frame (degrees, positive looks down)


def engine_cases(env, player: str, seeds, context: int, horizon: int, warmup: int = 20,
                 branches: tuple[str, ...] = BRANCHES) -> list[EngineCase]:
    """A saved state per seed and every branch played from it (see the module docstring). A seed
    whose episode ends before that is skipped. `env` must save and restore its state; UserError otherwise."""
    from worldloom.envs import make_player

    if not (hasattr(env, "get_state") and hasattr(env, "set_state")):
        raise UserError(f"{type(env).__name__} cannot save and restore its state; engine branches need VoxelWorld")
    cut = warmup + context - 1  # steps before the saved state
    cases = []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        p = make_player(player, seed=int(seed))
        frames, taken, ended, state = [obs], [], False, b""
        pitches = [info.get("pitch")]
        for _ in range(cut + horizon):
            if len(taken) == cut:
                state = env.get_state()
            a = p.act(obs, info)
            obs, _, term, trunc, info = env.step(a)
            frames.append(obs)
            pitches.append(info.get("pitch"))
            taken.append(a)
            if term or trunc:
                ended = True
                break
        if ended:
            continue
        own = {"player": np.stack(frames[cut + 1:])}  # the player went on from the state: no replay needed
        sequences = {name: branch_actions(name, horizon, taken[cut:]) for name in branches}
        played = [own[name] if name in own else play_from(env, state, sequences[name]) for name in branches]
        pitch = pitches[cut - context + 1:cut + 1]
        cases.append(EngineCase(int(seed), np.stack(frames[cut - context + 1:cut + 1]), taken[cut - context + 1:cut],
                                state, sequences, np.stack(played),
                                None if any(v is None for v in pitch) else [float(v) for v in pitch]))
    return cases


def to_branches(cases: list[EngineCase], info: dict) -> Branches:
    """Engine cases as the branches file's arrays."""
    if not cases:
        raise UserError("no saved states: every episode ended before its context and horizon were played")

    def arrays(action_lists):  # [[dict]] -> buttons (N, T, 20) uint8, camera (N, T, 2) float32
        pairs = [act.to_arrays(a) if a else (np.zeros((0, act.NUM_BUTTONS), bool), np.zeros((0, 2), np.float32))
                 for a in action_lists]
        return np.stack([b for b, _ in pairs]).astype(np.uint8), np.stack([c for _, c in pairs])

    ctx_b, ctx_c = arrays([c.context_actions for c in cases])
    names = list(cases[0].branches)
    br_b, br_c = arrays([c.branches[n] for c in cases for n in names])
    s, k = len(cases), len(names)
    pitch = {"context_pitch": [c.context_pitch for c in cases]} if all(c.context_pitch for c in cases) else {}
    return Branches(np.stack([c.context_frames for c in cases]), ctx_b, ctx_c,
                    br_b.reshape(s, k, *br_b.shape[1:]), br_c.reshape(s, k, *br_c.shape[1:]),
                    np.stack([c.frames for c in cases]), {**info, "names": names, "seeds": [c.seed for c in cases], **pitch})


def record_branches(cfg: BranchesConfig) -> Branches:
    """Play cfg's states and branches and write them to cfg.out; returns what was written."""
    from worldloom.envs import make_env

    note = check_branches_out(cfg.out, "capture branches")  # before the work: a folder or another file is refused now
    if note:
        print(note, file=sys.stderr)
    env = make_env(cfg.env, height=cfg.resolution, width=cfg.resolution,
                   **({"antialias": True} if cfg.antialias else {}))
    seeds = range(SEED_BASE + cfg.seed, SEED_BASE + cfg.seed + cfg.episodes)
    cases = engine_cases(env, cfg.player, seeds, cfg.context, cfg.horizon, cfg.warmup, tuple(cfg.branches))
    branches = to_branches(cases, {"env": cfg.env, "player": cfg.player, "resolution": cfg.resolution,
                                   "antialias": cfg.antialias, "warmup": cfg.warmup, "turn_deg": TURN_DEG})
    save_branches(cfg.out, branches)
    return branches
