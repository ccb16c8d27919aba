"""worldloom/Minetest-v0 faults on the real engine: a killed process, a crashed or hung engine,
missing packages or files, an Xvfb that cannot start, a port collision, the real-time fallback.

    bash tests/setup_minetest.sh && pytest tests/test_envs_minetest_faults.py -q

Afterwards no minetest or Xvfb process that a test started is left, whether its env was closed,
its process SIGKILLed, or its engine crashed or hung.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from minetest_engines import (
    FAST,
    nothing_left_behind,  # noqa: F401 (autouse, module-wide)
    turn,
    wait_gone,
)

from worldloom import actions as act
from worldloom.envs import EnvCrashed, make_env
from worldloom.envs import minetest_engine as me
from worldloom.envs import minetest_procs as procs
from worldloom.envs.minetest_env import MinetestEnv
from worldloom.errors import UserError


def test_a_killed_process_leaves_no_engine_behind(tmp_path):
    code = textwrap.dedent(f"""
        import json, time
        from worldloom.envs import make_env
        env = make_env("minetest", height=64, width=64, **{FAST!r})
        env.reset(seed=0)
        e = env.engine
        print(json.dumps([e.proc.pid, e.xvfb.pid, str(e.dir)]), flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        minetest_pid, xvfb_pid, root = json.loads(child.stdout.readline())
    finally:
        child.kill()  # SIGKILL: no cleanup code of the child runs
        child.wait(timeout=10)
    assert wait_gone([minetest_pid, xvfb_pid]) == []
    deadline = time.monotonic() + 10
    while Path(root).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(root).exists()


def test_a_crashed_or_hung_engine_is_detected_and_restarted():
    env = make_env("minetest", height=64, width=64, step_timeout_s=3.0, **FAST)
    try:
        env.reset(seed=0)
        for fault in (signal.SIGKILL, signal.SIGSTOP):
            starts = env.num_starts
            env.step(act.noop())
            old = env.engine.proc.pid
            os.kill(old, fault)  # a crash, then a hang
            start = time.monotonic()
            with pytest.raises(EnvCrashed, match="exited|did not finish|closed"):
                for _ in range(5):
                    env.step(act.noop())
            assert time.monotonic() - start < 10
            assert wait_gone([old], 5.0) == []
            obs, info = env.reset(seed=0)  # a fresh engine
            assert env.num_starts >= starts + 1 and env.engine.proc.pid != old and obs.std() > 5
    finally:
        env.close()


def test_missing_packages_name_them(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(procs, "BINARY_PATHS", ())
    with pytest.raises(UserError, match="setup_minetest.sh.*minetest minetest-data xvfb gcc.*missing: minetest, Xvfb"):
        MinetestEnv(height=64, width=64)


def test_a_missing_world_template_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(procs, "FILES", tmp_path / "minetest_files")
    with pytest.raises(UserError, match="minetest_files.*wlsrv"):
        MinetestEnv(height=64, width=64)


def test_xvfb_that_cannot_start_is_a_one_line_error_after_retries(monkeypatch):
    real = me.find_install()
    monkeypatch.setattr("worldloom.envs.minetest_env.find_install",
                        lambda: me.Install(real.binary, "/bin/false", real.game_dir, real.shim))
    env = MinetestEnv(height=64, width=64, start_tries=2, **FAST)
    start = time.monotonic()
    with pytest.raises(UserError, match="did not start in 2 tries: Xvfb did not start"):
        env.reset(seed=0)
    assert time.monotonic() - start < 10 and env.engine is None


def test_a_port_collision_is_retried_and_close_leaves_nothing(monkeypatch):
    """The colliding port cannot be forced (singleplayer draws it at random), so its log line is
    fed to a real engine's reader, and the env's retry is shown with a first start that collides."""
    engine = me.Engine.__new__(me.Engine)
    engine.lines, engine.state = [], None
    with pytest.raises(me.PortInUse):
        engine._take("2026-11-30 12:00:00: ERROR[Main]: Bind failed: Address already in use (127.0.0.1:53766)")
    calls = []
    real_engine = me.Engine

    def first_collides(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise me.PortInUse("minetest could not bind its singleplayer port")
        return real_engine(*args, **kwargs)

    monkeypatch.setattr("worldloom.envs.minetest_env.Engine", first_collides)
    env = MinetestEnv(height=64, width=64, **FAST)
    try:
        obs, _ = env.reset(seed=0)
        assert len(calls) == 2 and env.num_starts == 2 and obs.std() > 5
        pids = [env.engine.proc.pid, env.engine.xvfb.pid, env.engine.reaper.proc.pid]
        root = env.engine.dir
    finally:
        env.close()
    assert wait_gone(pids, 5.0) == [] and not root.exists()  # close() leaves no process or directory


def test_the_real_time_fallback_runs_without_the_shim():
    env = make_env("minetest", height=64, width=64, lockstep=False, **FAST)
    try:
        with open(f"/proc/{env._engine().proc.pid}/environ", "rb") as f:
            assert b"LD_PRELOAD" not in f.read()
        _, info = env.reset(seed=0)
        frames = [info["frame"]]
        for _ in range(10):
            obs, _, _, _, info = env.step(turn(1.0))
            frames.append(info["frame"])
        assert obs.std() > 5 and np.all(np.diff(frames) >= 0) and frames[-1] > frames[0]
    finally:
        env.close()
