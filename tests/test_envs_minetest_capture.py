"""worldloom/Minetest-v0 under capture: two Ray recorder actors, and a recorder whose engine crashes.

    bash tests/setup_minetest.sh && pytest tests/test_envs_minetest_capture.py -q
"""

from __future__ import annotations

import math
import os
import signal

import numpy as np
from minetest_engines import (
    FAST,
    nothing_left_behind,  # noqa: F401 (autouse, module-wide)
)

from worldloom.capture import CaptureConfig, Recorder, capture
from worldloom.capture.config import EpisodeSpec
from worldloom.datasets import Dataset
from worldloom.envs import make_env, make_player
from worldloom.envs import minetest_engine as me


def test_capture_with_two_actors_records_the_executed_actions_and_the_licence(tmp_path):
    cfg = CaptureConfig(out=str(tmp_path / "mt"), env="minetest", player="mixture", episodes=2, steps=16,
                        resolution=64, num_workers=2, progress=False)
    result = capture(cfg)
    assert result.num_recorded == 2 and len(result.pids) == 2
    ds = Dataset(cfg.out)
    assert ds.manifest["config"]["licence"]["frames"].startswith("CC BY-SA 3.0")
    ep = ds.frames(ds.episodes.column("episode_id")[0].as_py())
    assert ep.frames.shape == (16, 64, 64, 3) and ep.frames.std() > 5
    # The camera is the engine's own change: whole pixels at its degrees per pixel (0.15; 0.176
    # while sprinting widens the view 1.1x), not the player's floats.
    yaw = np.asarray(ep.camera, dtype=np.float64)[:, 1]
    sprint_fov = me.EngineConfig().fov_y_deg * 1.1
    dpp = np.array([0.15, me.EngineConfig().mouse_sensitivity * math.tan(math.radians(sprint_fov) / 2) * me.SENSITIVITY_SCALE])
    off_grid = np.abs(yaw[:, None] / dpp - np.round(yaw[:, None] / dpp)).min(axis=1)
    assert np.abs(yaw).sum() > 0 and off_grid.max() < 1e-3


def test_the_recorder_replays_an_episode_whose_engine_crashed(tmp_path):
    """The engine is SIGKILLed mid-episode: the recorder gets EnvCrashed, the env starts a fresh
    engine at the next reset, and the episode is played again from its spec, whole."""
    rec = None

    class KillsTheEngineOnce:
        def __init__(self, seed):
            self.inner, self.t = make_player("explorer", seed=seed), 0

        def act(self, obs, info):
            self.t += 1
            if self.t == 5 and rec.env.num_starts == 1:
                os.kill(rec.env.engine.proc.pid, signal.SIGKILL)
            return self.inner.act(obs, info)

    rec = Recorder({"env": str(tmp_path / "d")}, env="minetest", height=64, width=64,
                   make_env=lambda name, h, w: make_env(name, height=h, width=w, **FAST),
                   make_player=lambda name, seed: KillsTheEngineOnce(seed))
    spec = EpisodeSpec("minetest-e0", 0, "minetest", seed=5, player="explorer", steps=12, height=64, width=64)
    try:
        result = rec.record([(spec, ("env",))])
    finally:
        rec.env.close()
    assert result["replayed"] == 1 and result["frames"] == 12 and rec.env.num_starts >= 2
