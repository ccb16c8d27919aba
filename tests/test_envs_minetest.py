"""worldloom/Minetest-v0 on the real Debian engine: contract, lock-step, alignment, scripted players.

    bash tests/setup_minetest.sh && pytest tests/test_envs_minetest*.py -q

Every test runs the real minetest binary under Xvfb (setup_minetest.sh installs them; make test
runs it first). Faults are in test_envs_minetest_faults.py and capture in
test_envs_minetest_capture.py: three files, so that `pytest -n --dist loadfile` runs them side by
side. Afterwards no minetest or Xvfb process that a test started is left (minetest_engines.py).
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
from minetest_engines import (
    FAST,
    nothing_left_behind,  # noqa: F401 (autouse, module-wide)
    turn,
)

from worldloom import actions as act
from worldloom.envs import env_metadata, make_env, make_player


@pytest.fixture(scope="module")
def env():
    env = make_env("minetest", height=64, width=64, **FAST)
    yield env
    env.close()


# ---- contract ---------------------------------------------------------------------------------


def test_reset_and_step_follow_the_contract(env):
    obs, info = env.reset(seed=1)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 5
    assert env.engine.cfg.width == 128  # 64 px frames are rendered at 128 and area-resized
    for key in ("position", "yaw", "pitch", "inventory", "hotbar", "hotbar_slot", "hp", "time_of_day", "controls",
                "gui_open", "target_block", "frame", "action"):
        assert key in info, key
    assert info["hotbar_slot"] == 0 and info["inventory"]["default:dirt"] == 40 and len(info["hotbar"]) == 9
    assert abs(info["time_of_day"] - 0.5) < 1e-3
    obs2, reward, terminated, truncated, info2 = env.step(turn(0.0, forward=1))
    assert obs2.shape == obs.shape and reward == 0.0 and not terminated and not truncated
    assert info2["frame"] == info["frame"] + 1 and info2["controls"] == ["up"]
    assert env_metadata("minetest")["licence"]["frames"].startswith("CC BY-SA 3.0")


def test_gymnasium_id_and_the_same_seed_starts_in_the_same_pose(env):
    assert "worldloom/Minetest-v0" in gymnasium.envs.registry
    _, a = env.reset(seed=5)
    _, b = env.reset(seed=5)
    _, c = env.reset(seed=6)
    np.testing.assert_allclose(a["position"], b["position"], atol=0.01)
    assert abs(a["yaw"] - b["yaw"]) < 0.01 and abs(a["yaw"] - c["yaw"]) > 0.01


def test_buttons_reach_the_engine_and_are_cross_checked(env):
    env.reset(seed=2)
    for name in ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack", "use"):
        _, _, _, _, info = env.step(turn(0.0, **{name: 1}))
        assert info["action"][name] == 1, name
    _, _, _, _, info = env.step(turn(0.0, **{"hotbar.4": 1}))
    assert info["hotbar_slot"] == 3
    env.step(act.noop())
    _, _, _, _, info = env.step(turn(0.0, inventory=1))  # I opens the inventory: the mouse moves the cursor
    assert info["gui_open"]
    yaw = info["yaw"]
    _, _, _, _, info = env.step(turn(6.0, 3.0))
    assert info["yaw"] == yaw and info["cursor"][0] > 0.5 and info["action"]["camera"][1] == pytest.approx(6.0, abs=0.1)
    _, _, _, _, info = env.step(turn(0.0, inventory=1))
    assert not info["gui_open"] and info["control_mismatches"] == 0


# ---- lock-step and exact actions -----------------------------------------------------------


def test_lockstep_one_frame_per_step_and_the_camera_sums_exactly(env):
    """Every step is one engine frame of 50 ms (the engine raises EnvCrashed otherwise), and the
    recorded camera (the engine's own change) sums to the commanded total less the carried rest."""
    _, info = env.reset(seed=3)
    rng = np.random.default_rng(0)
    frames, commanded, executed = [info["frame"]], np.zeros(2), np.zeros(2)
    start_yaw = info["yaw"]
    pitch_moves = np.tile([1.0, -1.0], 60) * rng.uniform(0.0, 0.9, 120)  # stays far from the +-89.5 clamp
    for t in range(120):
        a = turn(float(rng.normal(0.0, 3.0)), float(pitch_moves[t]), forward=int(t % 50 < 30))
        _, _, _, _, info = env.step(a)
        frames.append(info["frame"])
        commanded += a["camera"]
        executed += info["action"]["camera"]
    assert np.all(np.diff(frames) == 1)
    np.testing.assert_allclose(executed, commanded - env.carry, atol=0.01)
    assert abs(math.remainder(executed[1] - (info["yaw"] - start_yaw), 360.0)) < 0.01
    assert info["control_mismatches"] == 0


def horizontal_shift(a: np.ndarray, b: np.ndarray, max_px: int = 20) -> int:
    """The whole-pixel horizontal shift that best maps the band around the horizon of `a` onto `b`."""
    band = slice(8, 48)  # above the hotbar
    fa, fb = a[band].astype(np.float32), b[band].astype(np.float32)
    w = fa.shape[1]
    costs = [np.abs(fa[:, max(0, -s):w - max(0, s)] - fb[:, max(0, s):w - max(0, -s)]).mean()
             for s in range(-max_px, max_px + 1)]
    return int(np.argmin(costs)) - max_px


def test_action_t_lies_between_frame_t_and_frame_t_plus_1(env):
    """Large turns, replayed on open grassland: the image shift from frame t to t+1 matches the
    camera of action t, not that of the action before or after it."""
    obs, _ = env.reset(seed=0, options={"position": (-828, -526), "yaw": 200.0})  # a plain of map 42
    for _ in range(20):  # the terrain around a teleport arrives over a few frames on a slow machine
        obs, *_ = env.step(turn(0.0))
    rng = np.random.default_rng(1)
    yaws = rng.choice([-12.0, 0.0, 12.0], 40)
    frames, executed = [obs], []
    for yaw in yaws:
        obs, _, _, _, info = env.step(turn(float(yaw)))
        frames.append(obs)
        executed.append(info["action"]["camera"][1])
    focal = 32 / math.tan(math.radians(env.engine.cfg.fov_y_deg) / 2)  # pixels, at 64 px
    measured = np.array([horizontal_shift(frames[t], frames[t + 1]) for t in range(len(yaws))])
    predicted = -focal * np.tan(np.radians(executed))  # a right turn moves the picture left
    # the median: a frame whose terrain is still arriving must not decide which lag fits
    errors = {lag: np.median(np.abs(measured[2:-2] - np.roll(predicted, -lag)[2:-2])) for lag in (-1, 0, 1)}
    assert errors[0] < 2.0 and errors[0] * 3 < min(errors[-1], errors[1]), errors


# ---- players -----------------------------------------------------------------------------------


def test_scripted_players_play_it(env):
    obs, info = env.reset(seed=7)
    player = make_player("explorer", seed=7)
    start = info["position"].copy()
    for _ in range(40):
        obs, _, _, _, info = env.step(player.act(obs, info))
    assert np.linalg.norm(info["position"] - start) > 1.0 and info["control_mismatches"] == 0
