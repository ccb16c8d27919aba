"""Engine state in every captured frame: the `state_*` columns equal what the env reported with
each frame (VoxelWorld, Crafter), footage carries none, and the time of day means the same thing
in both engines (0 = sunrise, 0.25 = noon in VoxelWorld).

    pytest tests/test_capture_state.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldloom.capture import Recorder
from worldloom.capture.config import EpisodeSpec
from worldloom.capture.state import state_columns
from worldloom.datasets import Dataset, commit_shards
from worldloom.datasets.schema import STATE_COLUMNS
from worldloom.datasets.validate import validate
from worldloom.envs import make_env, make_player
from worldloom.envs.crafter_env import CRAFTER_DAY, crafter_time_of_day
from worldloom.envs.voxel import VoxelConfig, sun_state, time_of_day

SMALL = dict(world_size=(32, 32, 32))
STEPS = 40


def small_voxel(name: str, height: int, width: int):
    return make_env(name, height=height, width=width, **SMALL)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One 40-step VoxelWorld episode written as labeled data and as footage, and the infos of
    the same episode played again in a fresh env (capture is deterministic in its spec)."""
    root = tmp_path_factory.mktemp("state")
    targets = {"env": str(root / "env"), "none": str(root / "none")}
    spec = EpisodeSpec("ep-0", 0, "voxel", seed=1, player="mixture", steps=STEPS, height=64, width=64)
    rec = Recorder(targets, env="voxel", height=64, width=64, make_env=small_voxel)
    result = rec.record([(spec, ("env", "none"))])
    for label, root_ in targets.items():
        commit_shards(root_, result["shards"][label])
    env, player = small_voxel("voxel", 64, 64), make_player("mixture", seed=1)
    obs, info = env.reset(seed=1)
    infos = []
    for _ in range(STEPS):
        infos.append(info)
        obs, _, term, trunc, info = env.step(player.act(obs, info))
        if term or trunc:
            break
    return targets, infos


def test_voxel_capture_writes_the_engine_state_of_every_frame(recorded):
    targets, infos = recorded
    ds = Dataset(targets["env"])
    table = ds.read_table("ep-0", columns=list(STATE_COLUMNS)).to_pydict()
    assert len(table["state_x"]) == len(infos) == STEPS
    for t, info in enumerate(infos):
        assert [table[f"state_{a}"][t] for a in "xyz"] == pytest.approx(list(info["position"]))
        assert table["state_yaw"][t] == pytest.approx(info["yaw"], abs=1e-3)
        assert table["state_pitch"][t] == pytest.approx(info["pitch"], abs=1e-3)
        assert table["state_tick"][t] == t == info["step"]
        assert table["state_biome"][t] == info["biome"]
        assert table["state_on_ground"][t] == info["on_ground"]
        assert table["state_hotbar_slot"][t] == info["hotbar_slot"]
        assert table["state_target_block"][t] == (info["target_block"] or None)
        if info["target_block"]:
            assert table["state_target_distance"][t] == pytest.approx(info["target_distance"], rel=1e-5)
        else:
            assert table["state_target_distance"][t] is None
        assert {e["item"]: e["count"] for e in table["state_inventory"][t]} == info["inventory"]
        held = info["hotbar"][info["hotbar_slot"]]
        assert table["state_held_item"][t] == (held if held and info["inventory"].get(held) else "air")
        assert table["state_time_of_day"][t] == pytest.approx(time_of_day(t, VoxelConfig()), abs=1e-6)
    # what VoxelWorld does not model is null, not made up
    assert table["state_health"] == [None] * STEPS
    assert any(table["state_target_block"]) and len(set(table["state_x"])) > 1  # the episode moved and looked at things
    assert [str(p) for p in validate(targets["env"])] == []


def test_footage_carries_no_engine_state(recorded):
    targets, _ = recorded
    table = Dataset(targets["none"]).read_table("ep-0", columns=list(STATE_COLUMNS)).to_pydict()
    assert all(v is None for column in table.values() for v in column)


def test_crafter_state_columns():
    env, player = make_env("crafter", height=64, width=64), make_player("mixture", seed=1)
    obs, info = env.reset(seed=1)
    infos = []
    for _ in range(30):
        infos.append(info)
        obs, *_, info = env.step(player.act(obs, info))
    columns = state_columns(infos)
    assert "state_y" not in columns  # a 2D map: its cell goes to x and z
    assert columns["state_x"][0] == float(infos[0]["position"][0]) and columns["state_z"][0] == float(infos[0]["position"][1])
    assert columns["state_health"][0] == 20.0  # Crafter's 9 of 9 as hit points
    assert columns["state_tick"] == list(range(30))
    assert all(isinstance(b, str) and b for b in columns["state_target_block"])  # a cell is always faced on the map
    assert columns["state_target_distance"][0] == 1.0
    assert all("health" not in {e["item"] for e in inv} for inv in columns["state_inventory"])  # vitals are not items
    assert all(0.0 <= v < 1.0 for v in columns["state_time_of_day"])


def test_time_of_day_is_the_fraction_since_sunrise():
    cfg = VoxelConfig(day_night=True)
    # VoxelWorld: the sun is on the horizon at 0 (rising) and 0.5 (setting), highest at 0.25
    heights = {}
    for frac in (0.0, 0.25, 0.5, 0.75):
        step = round(((frac - 0.15) % 1.0) * cfg.day_length)
        off = (time_of_day(step, cfg) - frac + 0.5) % 1.0 - 0.5  # on the circle: 0.9999 is 0
        assert abs(off) <= 1.0 / cfg.day_length
        heights[frac] = sun_state(step, cfg)[0][1]
    assert time_of_day(123, VoxelConfig(day_night=False)) == 0.15  # a fixed mid-morning
    assert abs(heights[0.0]) < 0.05 and abs(heights[0.5]) < 0.05 and heights[0.25] > 0.9 and heights[0.75] < -0.9
    # Crafter: daylight (crafter/env.py) crosses 0.5 upwards at 0, is darkest past 0.5 (night)
    def daylight(step):
        progress = (step / CRAFTER_DAY) % 1 + 0.3
        return 1 - abs(math.cos(math.pi * progress)) ** 3

    steps = np.arange(3 * CRAFTER_DAY)
    tod = np.array([crafter_time_of_day(int(s)) for s in steps])
    light = np.array([daylight(int(s)) for s in steps])
    assert ((0 <= tod) & (tod < 1)).all()
    sunrise = steps[(np.abs(tod) < 1.0 / CRAFTER_DAY) | (tod > 1 - 1.0 / CRAFTER_DAY)]
    assert len(sunrise) and all(abs(daylight(int(s)) - 0.5) < 0.05 for s in sunrise)
    assert light[tod < 0.5].mean() > 0.7 > 0.3 > light[(tod > 0.6) & (tod < 0.9)].mean()


def test_minetest_clock_and_hit_points():
    """Minetest is not installed on CI machines: its adapter's info keys, written out here by hand
    (envs/minetest_env.py `_info`), go through the same conversion."""
    info = {"position": np.array([1.0, 2.0, 3.0]), "yaw": 10.0, "pitch": -5.0, "hp": 20, "health": 20.0,
            "time_of_day": 0.5, "time_since_sunrise": (0.5 - 0.25) % 1.0, "hotbar": ["default:dirt"] + [""] * 8,
            "hotbar_slot": 1, "inventory": {"default:dirt": 40}, "target_block": "", "target_distance": math.inf,
            "step": 7}
    columns = state_columns([info])
    assert columns["state_time_of_day"] == [0.25]  # Minetest's noon is the dataset's noon
    assert columns["state_health"] == [20.0] and columns["state_held_item"] == ["air"]  # slot 1 is empty
    assert columns["state_target_block"] == [None] and columns["state_target_distance"] == [None]
    assert columns["state_y"] == [2.0] and columns["state_tick"] == [7]
    assert state_columns([]) == {}
