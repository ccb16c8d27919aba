"""Revisit paths: from saved VoxelWorld states, action sequences that come back to where they started.

    worldloom capture revisits --episodes 8 --context 5 --paths walk1 look1 walk4 look9 turn360 \\
        --resolution 64 --out data/revisits.safetensors

    from worldloom.capture.revisits import RevisitsConfig, record_revisits
    revisits = record_revisits(RevisitsConfig(out="data/revisits.safetensors"))

A path goes out and comes back: `turn360` turns right 360 degrees in place (at `turn_deg` per
step: 36 steps at 10, VPT's largest camera move, `worldloom.actions.CAMERA_MAXVAL`), `walkN`
walks forward N steps and back N, `lookN` turns right N steps and left N. Its farthest point is
step 18 of a turn360 (facing backwards) and step N of the others; its return is its last step,
where the engine shows the first visit again (the frame at the saved state) up to animals that
moved. After its return a path stands still up to the longest path's length, so all paths share
one horizon. The last `settle` steps before the state stand still, so the first visit shows no
arm swing or block cracks that would fade. A state from which a path does not return to the
same position, yaw and pitch (a walk that slides along a wall or goes down a slope, a jump in
flight), or with a screen open, is skipped and the next world tried. Written in the branches format (datasets/branches.py) with `info["kind"] = "revisit"` and
each path's `far` and `return` step, for `worldloom pretrain eval --revisit FILE`
(pretrain/revisit.py).

A world model remembers a path only when the first visit is still in its context window at the
return: a path of R steps needs R <= context frames (the tiny preset's context is 2: walk1 and
look1; a 4-frame context: up to walk2 and look2; turn360 needs 36).
"""

from __future__ import annotations

import dataclasses
import re
import sys

import numpy as np

from worldloom import actions as act
from worldloom.config import doc
from worldloom.datasets.branches import Branches, check_branches_out, save_branches
from worldloom.envs import PLAYER_NAMES, check_player, check_resolution
from worldloom.errors import UserError

from .branches import MAX_STATE_SEED, SEED_BASE, EngineCase, to_branches

PATHS: tuple[str, ...] = ("walk1", "look1", "walk4", "look9", "turn360")
PATTERN = re.compile(r"^(turn360|walk([1-9][0-9]?)|look([1-9][0-9]?))$")
POSE_TOLERANCE = 1e-6  # blocks and degrees: a return is to the same pose, up to float rounding


@dataclasses.dataclass(frozen=True)
class RevisitsConfig:
    out: str = doc("output file (.safetensors)")
    env: str = doc("env to play: voxel (the one that saves and restores its state)", "voxel")
    player: str = doc(f"scripted player ({', '.join(PLAYER_NAMES)}) that leads to each state", "mixture")
    episodes: int = doc("saved states (one world and spawn each; a world whose paths do not return is skipped)", 8)
    context: int = doc("frames before each state, the last at the state (a world model's context)", 5)
    paths: tuple[str, ...] = doc("paths: turn360 (360 degrees in place), walkN (N steps forward, N back), "
                                 "lookN (N steps right, N left); N in 1..99", PATHS)
    turn_deg: float = doc("yaw degrees per step of turn360 and lookN; 360 / turn_deg must be whole", act.CAMERA_MAXVAL)
    warmup: int = doc("steps the player plays before the context starts", 20)
    settle: int = doc("the last steps before the state stand still (a swing ends, cracks fade, a jump lands), so the "
                      "first visit is a frame the engine shows again on return", 4)
    resolution: int = doc("frame height and width in pixels (voxel: 64..360)", 64)
    antialias: bool = doc("2x2 samples per pixel, averaged (VoxelWorld's `antialias`; match the footage the world model learned from)", False)
    seed: int = doc("worlds are tried from seed 1000000 + seed on", 0)
    max_tries: int = doc("worlds tried per saved state before giving up", 20)

    def __post_init__(self):
        for name in ("episodes", "context", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.settle < 0:
            raise ValueError(f"warmup and settle must be >= 0, got {self.warmup} and {self.settle}")
        if not 0 <= self.seed <= MAX_STATE_SEED or self.episodes * self.max_tries > MAX_STATE_SEED:
            raise ValueError(f"seed must be a whole number in 0..{MAX_STATE_SEED} (worlds from 1000000 + seed on), "
                             f"got {self.seed}")
        check_resolution(self.env, self.resolution)  # the env's own range, refused now and not once it starts
        check_player(self.player)
        if self.antialias and self.env != "voxel":
            raise ValueError(f"antialias applies to the voxel env only, got env={self.env!r}")
        check_paths(self.paths)
        if not 0 < self.turn_deg <= act.CAMERA_MAXVAL or not float(360.0 / self.turn_deg).is_integer():
            raise ValueError(f"turn_deg must be in (0, {act.CAMERA_MAXVAL:g}] (VPT's largest camera move) and divide 360, "
                             f"got {self.turn_deg}")


def check_paths(paths: tuple[str, ...]) -> None:
    """ValueError (one line naming `paths`, what is wrong and why) unless `paths` are 2 or more different path names."""
    bad = [p for p in paths if not PATTERN.match(p)]
    if bad:
        raise ValueError(f"paths {' '.join(bad)}: not a path; give turn360, walkN or lookN (N in 1..99), e.g. walk1 look1")
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"paths has {' '.join(twice)} more than once; give each path once")
    if len(paths) < 2:
        # the file is in the branches format (datasets/branches.py), made for counterfactuals: 2 branches or more a
        # state, which `Branches.check` asks of every branches file it reads
        raise ValueError(f"paths {' '.join(paths) or '(none)'}: a revisit file holds 2 paths or more from each state "
                         "(it is written in the branches format, which holds 2 branches or more a state); add "
                         f"another, e.g. --paths {' '.join(paths) or 'walk1'} {'look1' if 'look1' not in paths else 'walk1'}")


def path_actions(name: str, turn_deg: float = act.CAMERA_MAXVAL) -> tuple[list[dict], int]:
    """A path's actions up to its return and its farthest step (1-based): turn360, walkN, lookN."""
    m = PATTERN.match(name)
    if not m:
        raise ValueError(f"unknown path {name!r}: turn360, walkN or lookN")

    def steps(n: int, **change) -> list[dict]:
        return [{**act.noop(), **change} for _ in range(n)]

    if name == "turn360":
        n = round(360.0 / turn_deg)
        return steps(n, camera=np.array([0.0, turn_deg], np.float32)), n // 2
    n = int(m.group(2) or m.group(3))
    if m.group(2):
        return steps(n, forward=1) + steps(n, back=1), n
    return steps(n, camera=np.array([0.0, turn_deg], np.float32)) + steps(n, camera=np.array([0.0, -turn_deg], np.float32)), n


def pose(info: dict) -> np.ndarray:
    """(x, y, z, yaw, pitch) of an env info dict."""
    return np.array([*np.asarray(info["position"], np.float64), info["yaw"], info["pitch"]])


def same_pose(a: np.ndarray, b: np.ndarray) -> bool:
    """Positions and pitch within POSE_TOLERANCE, yaw too (modulo 360)."""
    yaw = abs((a[3] - b[3] + 180.0) % 360.0 - 180.0)
    return bool(np.abs(a[[0, 1, 2, 4]] - b[[0, 1, 2, 4]]).max() <= POSE_TOLERANCE and yaw <= POSE_TOLERANCE)


def play_path(env, state: bytes, sequence: list[dict], ret: int) -> tuple[np.ndarray, bool]:
    """Restore `state` and play `sequence`: its frames (T, H, W, 3) uint8 and whether the pose after
    step `ret` (1-based) is the state's."""
    _, info = env.set_state(state)
    start, back, frames = pose(info), False, []
    for i, a in enumerate(sequence):
        obs, _, _, _, info = env.step(a)
        frames.append(obs)
        back = same_pose(start, pose(info)) if i + 1 == ret else back
    return np.stack(frames), back


def revisit_case(env, player: str, seed: int, context: int, paths: tuple[str, ...], warmup: int = 20,
                 turn_deg: float = act.CAMERA_MAXVAL, settle: int = 4) -> EngineCase | None:
    """The state after `warmup + context - 1` steps in world `seed` (the player's, then `settle` standing
    still) and every path played from it, each stood still after its return up to the longest path;
    None when the episode ends first or a
    path does not return to the state's pose, or a screen (inventory) is open at the state."""
    from worldloom.envs import make_player

    cut = warmup + context - 1
    obs, info = env.reset(seed=int(seed))
    p = make_player(player, seed=int(seed))
    frames, taken, pitches = [obs], [], [info.get("pitch")]
    for i in range(cut):
        a = p.act(obs, info) if i < cut - settle else act.noop()
        obs, _, term, trunc, info = env.step(a)
        frames.append(obs)
        pitches.append(info.get("pitch"))
        taken.append(a)
        if term or trunc:
            return None
    if info.get("gui_open"):  # an open screen turns camera moves into cursor moves and stops walking
        return None
    state = env.get_state()
    sequences = {name: path_actions(name, turn_deg)[0] for name in paths}
    returns = {name: len(s) for name, s in sequences.items()}
    horizon = max(returns.values())
    sequences = {name: s + [act.noop() for _ in range(horizon - len(s))] for name, s in sequences.items()}
    played = []
    for name in paths:
        out, back = play_path(env, state, sequences[name], returns[name])
        if not back:
            return None
        played.append(out)
    pitch = pitches[cut - context + 1:]
    return EngineCase(int(seed), np.stack(frames[cut - context + 1:]), taken[cut - context + 1:], state, sequences,
                      np.stack(played), None if any(v is None for v in pitch) else [float(v) for v in pitch])


def revisit_info(paths: tuple[str, ...], turn_deg: float) -> dict:
    """The file's info for these paths: kind, turn_deg and each path's farthest and return step (1-based)."""
    steps = {name: path_actions(name, turn_deg) for name in paths}
    return {"kind": "revisit", "turn_deg": turn_deg,
            "paths": {name: {"far": far, "return": len(seq)} for name, (seq, far) in steps.items()}}


def record_revisits(cfg: RevisitsConfig) -> Branches:
    """Find cfg.episodes states whose paths all return, play them, write cfg.out; returns what was written."""
    from worldloom.envs import make_env

    note = check_branches_out(cfg.out, "capture revisits")  # before the work: a folder or another file is refused now
    if note:
        print(note, file=sys.stderr)
    env = make_env(cfg.env, height=cfg.resolution, width=cfg.resolution,
                   **({"antialias": True} if cfg.antialias else {}))
    if not (hasattr(env, "get_state") and hasattr(env, "set_state")):
        raise UserError(f"{type(env).__name__} cannot save and restore its state; revisit paths need VoxelWorld")
    cases, tried = [], 0
    seed = SEED_BASE + cfg.seed
    while len(cases) < cfg.episodes and tried < cfg.episodes * cfg.max_tries:
        case = revisit_case(env, cfg.player, seed + tried, cfg.context, tuple(cfg.paths), cfg.warmup, cfg.turn_deg,
                            cfg.settle)
        tried += 1
        if case is not None:
            cases.append(case)
    if not cases:
        raise UserError(f"no world of {tried} tried has a state from which every path ({', '.join(cfg.paths)}) returns; "
                        "try shorter walks or --max-tries")
    info = {"env": cfg.env, "player": cfg.player, "resolution": cfg.resolution, "antialias": cfg.antialias,
            "warmup": cfg.warmup, "settle": cfg.settle, "worlds_tried": tried, **revisit_info(tuple(cfg.paths), cfg.turn_deg)}
    branches = to_branches(cases, info)
    save_branches(cfg.out, branches)
    return branches
