"""MineRL v0 trajectories (`recording.mp4` + `rendered.npz` + `metadata.json`) -> WorldLoom steps.

    worldloom dataset ingest --format minerl --data MineRLTreechop-v0/ --out data/minerl

    from worldloom.datasets import minerl
    npz = minerl.read_npz("traj/rendered.npz")          # UserError naming a missing key
    steps = minerl.convert(npz)                          # buttons, camera, rewards, state, counts
    skip = minerl.first_frame(steps.num_actions, video_frames)

The layout and alignment are MineRL's own data pipeline's (minerllabs/minerl
`minerl/data/data_pipeline.py`): the npz holds N actions and rewards (`action$forward`,
`action$camera` [pitch, yaw] in degrees, ..., `reward`) and N + 1 observations
(`observation$inventory$<item>`, ...); the video's last N + 1 frames are the N + 1 states (the
frames before them show the world loading; `metadata.json`'s `true_video_frame_count` counts
them all). Action t is applied between state t and state t + 1, as in every WorldLoom dataset, so
step t stores frame `skip + t`, action t and reward t; the last state has no action and is not
stored.

Mapping: forward, back, left, right, jump, sneak, sprint, attack -> the same buttons; camera ->
camera (clipped to [-180, 180]); `place` other than "none" -> `use` (placing is a right click
with the block in hand; which block is lost). `equip`, `craft`, `nearbyCraft` and `nearbySmelt`
(menu macros with no key in VPT's action space) are not mapped: the steps that used them are
counted in the episode's `env_config`. `observation$inventory$*` -> `state_inventory`,
`observation$equipped_items.mainhand.type` -> `state_held_item` (when stored as text).

The npz is read with `allow_pickle=False`: a key stored as Python objects is never unpickled; it
is reported, and the trajectory is skipped if that key is required.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldloom.actions import BUTTONS, CAMERA_LIMIT, NUM_BUTTONS
from worldloom.errors import UserError

VIDEO_NAME, NPZ_NAME, METADATA_NAME = "recording.mp4", "rendered.npz", "metadata.json"
MOVE_BUTTONS = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")
REQUIRED_KEYS = ("reward", "action$camera", *(f"action${b}" for b in MOVE_BUTTONS))
UNMAPPED_ACTIONS = ("equip", "craft", "nearbyCraft", "nearbySmelt")
# MineRL v0 stores enum actions as text, or as the index into the enum's sorted values (its
# published spec): the index of "none" for each.
NONE_INDEX = {"place": 4, "equip": 3, "craft": 1, "nearbyCraft": 3, "nearbySmelt": 2}
INVENTORY_PREFIX = "observation$inventory$"
HELD_KEYS = ("observation$equipped_items.mainhand.type", "observation$equipped_items$mainhand$type")
_INDEX = {name: i for i, name in enumerate(BUTTONS)}


@dataclass
class Steps:
    """One trajectory's N actions, converted."""

    buttons: np.ndarray  # (N, 20) bool
    camera: np.ndarray  # (N, 2) float32 degrees [pitch, yaw]
    rewards: np.ndarray  # (N,) float32
    null_action: np.ndarray  # (N,) bool
    state: dict[str, list]  # state_* -> N values (observation t: the state the action starts from)
    counts: dict = field(default_factory=dict)

    @property
    def num_actions(self) -> int:
        return len(self.buttons)

    def part(self, start: int, stop: int) -> dict:
        return {"buttons": self.buttons[start:stop], "camera": self.camera[start:stop],
                "rewards": self.rewards[start:stop], "null_action": self.null_action[start:stop],
                "state": {k: v[start:stop] for k, v in self.state.items()}}


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every key of rendered.npz that holds plain arrays; UserError naming a required key that is
    missing or stored as Python objects. Keys of objects are returned as None."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); re-download the trajectory")
    if path.is_file() and not zipfile.is_zipfile(path):  # numpy would try it as a pickle, and advise unpickling
        raise UserError(f"{path}: not an .npz archive (no zip structure in it); re-download the trajectory")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{path}: not a readable .npz file ({err}); re-download the trajectory") from None
    out: dict[str, np.ndarray | None] = {}
    with archive:
        for key in archive.files:
            try:
                out[key] = archive[key]
            except ValueError:  # object arrays need pickle: never
                out[key] = None
            except (OSError, zipfile.BadZipFile, EOFError) as err:
                raise UserError(f"{path}: key {key!r} cannot be read ({err}); re-download the trajectory") from None
    for key in REQUIRED_KEYS:
        if key not in out:
            raise UserError(f"{path}: has no {key!r}; every MineRL v0 trajectory records the reward, the camera and "
                            f"the 8 movement keys ({', '.join(MOVE_BUTTONS)})")
        if out[key] is None:
            raise UserError(f"{path}: {key!r} is stored as Python objects, which WorldLoom never unpickles")
    return out


def convert(npz: dict[str, np.ndarray | None], path: str | Path = NPZ_NAME) -> Steps:
    """The steps of one trajectory's npz arrays (module docstring for the mapping)."""
    num = _num_actions(npz, path)
    buttons = np.zeros((num, NUM_BUTTONS), bool)
    for name in MOVE_BUTTONS:
        buttons[:, _INDEX[name]] = _pressed(npz, f"action${name}", num, path)
    camera = _numbers(npz, "action$camera", num, path).reshape(num, -1)
    if camera.shape[1] != 2:
        raise UserError(f"{path}: 'action$camera' has shape {npz['action$camera'].shape}, expected ({num}, 2)")
    _finite(camera, "action$camera", path, "degrees")
    counts = {"camera_clipped": int((np.abs(camera) > CAMERA_LIMIT).sum()), "unmapped_action_steps": {},
              "unreadable_keys": sorted(k for k, v in npz.items() if v is None)}
    camera = np.clip(camera, -CAMERA_LIMIT, CAMERA_LIMIT).astype(np.float32)
    if npz.get("action$place") is not None:
        buttons[:, _INDEX["use"]] = _used(npz["action$place"], "place", num, path)
    unmapped = np.zeros(num, bool)
    for name in UNMAPPED_ACTIONS:
        if npz.get(f"action${name}") is not None:
            used = _used(npz[f"action${name}"], name, num, path)
            counts["unmapped_action_steps"][name] = int(used.sum())
            unmapped |= used
    known = {*REQUIRED_KEYS, "action$place", *(f"action${n}" for n in UNMAPPED_ACTIONS), *HELD_KEYS}
    counts["unmapped_keys"] = sorted(k for k in npz if k not in known and not k.startswith(INVENTORY_PREFIX))
    rewards = _numbers(npz, "reward", num, path)
    _finite(rewards, "reward", path, "a reward")
    rewards = rewards.astype(np.float32)
    null = ~buttons.any(1) & ~camera.any(1) & ~unmapped
    counts["null_action_steps"] = int(null.sum())
    return Steps(buttons, camera, rewards, null, observations(npz, num, path), counts)


def _num_actions(npz: dict, path) -> int:
    """N, the actions of the trajectory: the length most of its per-action arrays share ('reward', the camera,
    the movement keys), so that a short one is the one named (`_column`); UserError for none."""
    lengths = []
    for key in REQUIRED_KEYS:
        values = np.asarray(npz[key])
        lengths.append(len(values) if values.ndim else -1)
    num = max(set(lengths), key=lambda n: (lengths.count(n), n == lengths[0]))
    if num <= 0:
        raise UserError(f"{path}: {'no' if num == 0 else 'a single value in place of'} actions ('reward' and the "
                        "action arrays are empty); nothing to ingest: re-download the trajectory")
    return num


def _numbers(npz: dict, key: str, num: int, path) -> np.ndarray:
    """npz[key] per action as float64; UserError naming the key for text or other non-numbers."""
    values = _column(npz, key, num, path)
    if values.dtype.kind not in "biuf":
        raise UserError(f"{path}: {key!r} holds {values.dtype} values (e.g. {values.reshape(-1)[0]!r}), numbers "
                        "expected; the trajectory is not MineRL's format (re-download it)")
    return values.astype(np.float64)


def _pressed(npz: dict, key: str, num: int, path) -> np.ndarray:
    """(num,) bool: a movement key's 0/1 per action; UserError naming the key and the step for any other value
    (until 2026-12-07 -1 read as released and 0.5 or 2 as pressed, without a word)."""
    values = _numbers(npz, key, num, path)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        raise UserError(f"{path}: {key!r} is {values[bad[0]]:g} at step {bad[0]} ({len(bad)} step(s) not 0 or 1); a key "
                        "is pressed (1) or not (0): re-download the trajectory")
    return values > 0


def _finite(values: np.ndarray, key: str, path, what: str) -> None:
    """UserError naming the key and the first step whose value is NaN or infinite (until 2026-12-07 NaN was stored
    as 0 and infinity as the camera's 180-degree limit, without a word)."""
    bad = np.flatnonzero(~np.isfinite(values).reshape(len(values), -1).all(1))
    if len(bad):
        raise UserError(f"{path}: {key!r} is not finite at step {bad[0]} ({len(bad)} step(s)); {what} must be a finite "
                        "number: re-download the trajectory")


def _column(npz: dict, key: str, num: int, path, states: bool = False) -> np.ndarray:
    """npz[key], one row per action (`states`: per state, N + 1, or N); a per-step scalar stored as (N, 1)
    is flattened. UserError naming the key and both lengths when they disagree."""
    values = np.asarray(npz[key])
    if values.dtype == object:
        raise UserError(f"{path}: {key!r} is stored as Python objects, which WorldLoom never unpickles")
    if values.ndim == 0:
        raise UserError(f"{path}: {key!r} is a single value, not one per step; the trajectory is inconsistent")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if len(values) == num or states and len(values) == num + 1:
        return values[:num]
    want = f"{num + 1} (one per state)" if states else f"{num} (one per action)"
    raise UserError(f"{path}: {key!r} has {len(values)} rows, {want} expected: 'reward' and the action arrays have "
                    f"{num}; the trajectory is inconsistent (re-download it)")


def _used(values: np.ndarray, name: str, num: int, path) -> np.ndarray:
    """(num,) bool: the enum action `name` chose something other than "none"."""
    values = _column({f"action${name}": values}, f"action${name}", num, path)
    if values.dtype.kind in "US":
        return values.astype(str) != "none"
    if values.dtype.kind in "iu":
        return values != NONE_INDEX[name]
    raise UserError(f"{path}: 'action${name}' holds {values.dtype} values, expected text or enum indices")


def observations(npz: dict, num: int, path=NPZ_NAME) -> dict[str, list]:
    """state_inventory and state_held_item of observations 0..num-1 (the state each action starts from)."""
    items = sorted(k[len(INVENTORY_PREFIX):] for k, v in npz.items() if k.startswith(INVENTORY_PREFIX) and v is not None)
    state: dict[str, list] = {}
    if items:
        counts = np.stack([_column(npz, INVENTORY_PREFIX + i, num, path, states=True) for i in items], 1)  # (N, items)
        state["state_inventory"] = [[{"item": i, "count": int(c)} for i, c in zip(items, row, strict=True) if c > 0]
                                    for row in counts]
    for key in HELD_KEYS:
        held = npz.get(key)
        if held is not None and np.asarray(held).dtype.kind in "US":
            state["state_held_item"] = [str(h) for h in _column(npz, key, num, path, states=True)]
    return state


def first_frame(num_actions: int, video_frames: int | None) -> int:
    """The video frame of state 0: the last N + 1 frames are the states (0 when the count is unknown)."""
    if video_frames is None:
        return 0
    return max(0, video_frames - (num_actions + 1))
