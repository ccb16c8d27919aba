"""What the Minetest test files share: the fast env options, an action that turns, and a check that
no minetest or Xvfb process a test started outlives it (tests/test_envs_minetest*.py)."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest

from worldloom import actions as act
from worldloom.envs import minetest_procs as procs

FAST = {"spawn_radius": 40, "settle_steps": 5}  # near the map's origin: little new terrain to generate


def engine_processes() -> list[psutil.Process]:
    """Live minetest and Xvfb processes that an Engine started (they carry its marker)."""
    found = []
    for p in psutil.process_iter(["name"]):
        if p.info["name"] not in ("minetest", "Xvfb"):
            continue
        try:
            with open(f"/proc/{p.pid}/environ", "rb") as f:
                if procs.MARKER.encode() in f.read() and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
        except (OSError, psutil.NoSuchProcess):
            pass
    return found


def wait_gone(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    """The pids still alive (not zombies) after waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind():
    """Module-wide (a shared env lives across tests); each fault test checks its own processes."""
    before = {p.pid for p in engine_processes()}
    yield
    left = [p.pid for p in engine_processes() if p.pid not in before]
    assert wait_gone(left) == [], "a minetest or Xvfb process outlived its test"


def turn(yaw: float, pitch: float = 0.0, **buttons) -> dict:
    """A no-op action with this camera move (degrees) and these buttons held."""
    a = act.noop()
    a["camera"] = np.array([pitch, yaw], np.float32)
    a.update(buttons)
    return a
