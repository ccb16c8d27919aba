"""Engine state of every recorded frame: an env's `info` -> the dataset's `state_*` columns.

    from worldloom.capture.state import state_columns, captions_of
    columns = state_columns(infos)       # {"state_x": [...], ...}: DatasetWriter.add_episode(state=...)
    captions = captions_of(columns, buttons, "ep-000", fps=20)   # DatasetWriter.add_episode(caption=...)

(`captions_of` lives in datasets/captions.py, shared with ingest; re-exported here.)

Envs report their ground truth in `info` under shared names (VoxelWorld, Minetest and Crafter's
adapter: `position`, `yaw`, `pitch`, `on_ground`, `in_water`, `gui_open`, `hotbar`,
`hotbar_slot`, `target_block`, `target_distance`, `biome`, `time_of_day`, `health`, `inventory`,
`step`). `time_of_day` is the fraction of the day since sunrise (0.25 noon); an engine whose
clock counts otherwise (Minetest: 0.5 noon) also reports `time_since_sunrise`, which wins. A
column whose key the env does not report is null (docs/dataset-format.md). `infos[t]` is the
info that came with frame t, so the state describes the frame, before its action.
Crafter's map is 2D: its (x, y) cell goes to state_x and state_z, state_y is null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from worldloom.datasets.captions import captions_of  # noqa: F401 - capture's caption column (re-exported)


def _position(infos: Sequence[dict]) -> dict[str, list]:
    positions = [info["position"] for info in infos]
    if len(positions[0]) == 2:  # a 2D map (Crafter): x and the map's second axis as z
        return {"state_x": [float(p[0]) for p in positions], "state_z": [float(p[1]) for p in positions]}
    return {f"state_{axis}": [float(p[k]) for p in positions] for k, axis in enumerate("xyz")}


def _held_item(info: dict) -> str:
    """The selected hotbar slot's item, "air" for an empty hand (MineRL's mainhand type)."""
    item = info["hotbar"][info["hotbar_slot"]]
    return item if item and info["inventory"].get(item, 0) > 0 else "air"


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def state_columns(infos: Sequence[dict]) -> dict[str, list]:
    """The `state_*` columns (lists of T values) of an episode's infos; keys the env does not report are left out."""
    if not infos:
        return {}
    first = infos[0]
    out: dict[str, list] = {}
    if "position" in first:
        out.update(_position(infos))
    for key, convert in (("yaw", float), ("pitch", float), ("on_ground", bool), ("in_water", bool),
                         ("gui_open", bool), ("hotbar_slot", int), ("biome", str), ("time_of_day", float),
                         ("health", float)):
        if key in first:
            out[f"state_{key}"] = [convert(info[key]) for info in infos]
    if "time_since_sunrise" in first:  # an engine whose own time_of_day counts from midnight (Minetest)
        out["state_time_of_day"] = [float(info["time_since_sunrise"]) for info in infos]
    if "held_item" in first:
        out["state_held_item"] = [info["held_item"] for info in infos]
    elif "hotbar" in first and "hotbar_slot" in first and "inventory" in first:
        out["state_held_item"] = [_held_item(info) for info in infos]
    if "target_block" in first:
        out["state_target_block"] = [info["target_block"] or None for info in infos]
        if "target_distance" in first:
            out["state_target_distance"] = [_finite_or_none(info["target_distance"]) if info["target_block"] else None
                                            for info in infos]
    if "inventory" in first:
        out["state_inventory"] = [[{"item": k, "count": int(v)} for k, v in sorted(info["inventory"].items())]
                                  for info in infos]
    if "step" in first:
        out["state_tick"] = [int(info["step"]) for info in infos]
    return out
