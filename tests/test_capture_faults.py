"""Capture faults with real processes: a driver process is SIGKILLed mid-job, a recorder actor is
SIGKILLed mid-episode, a small tmpfs fills up. Afterwards every (episode, step) is there exactly
once and `worldloom.datasets.validate` finds nothing wrong.

    pytest tests/test_capture_faults.py -q
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from test_capture import RES, _parse, assert_exactly_once, kill_tree_matching, local_ray

from worldloom.capture import CaptureConfig, capture, expand_specs, play_episode
from worldloom.config import dataclass_from_args
from worldloom.datasets import Dataset, committed_episode_ids
from worldloom.datasets.validate import validate
from worldloom.envs import make_env, make_player
from worldloom.errors import UserError


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray() as cluster:
        yield cluster


def test_driver_killed_and_started_again_resumes(tmp_path, ray_cluster):
    out = tmp_path / "d"
    # The driver commits at once, then every COMMIT_EVERY_S seconds, then at the end. 6 episodes
    # of 600 steps once all committed between two looks at the dataset on a fast, busy CI machine
    # (the recorders finished the rest within a second of the first commit); 30 leave several
    # seconds and a few commits after the first, and SIGSTOP freezes the driver before counting.
    episodes = 30
    argv = ["capture", "run", "--env", "voxel", "--episodes", str(episodes), "--steps", "600", "--resolution", str(RES),
            "--num-workers", "2", "--out", str(out), "--no-progress"]
    ray_tmp = tempfile.mkdtemp(prefix="wld", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    proc = subprocess.Popen([sys.executable, "-m", "worldloom.pipeline.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not committed_episode_ids(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGSTOP)  # no commit can land between this count and the kill
        done = committed_episode_ids(out)
        assert 1 <= len(done) < episodes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        kill_tree_matching(ray_tmp)  # Ray fate-shares with its driver; this only makes sure
        shutil.rmtree(ray_tmp, ignore_errors=True)
    cfg = dataclass_from_args(CaptureConfig, _parse(argv))
    result = capture(cfg)  # on the module's cluster
    assert result.num_skipped >= len(done) and result.num_skipped + result.num_recorded == episodes
    assert_exactly_once(out, cfg)


def test_actor_killed_mid_episode_is_restarted_and_its_episode_redone(tmp_path, ray_cluster):
    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=4, steps=300, resolution=96, num_workers=2, progress=False)
    import psutil

    killed: list[int] = []
    born: list[float] = []  # its start time: a pid alone may be taken again by a new process on a busy machine

    def kill_one_recorder_in_a_task() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for p in psutil.process_iter(["cmdline"]):
                # Ray titles a busy actor process "ray::Recorder.record" (idle: "ray::Recorder")
                if (p.info["cmdline"] or [""])[0].startswith("ray::Recorder.record"):
                    born.append(p.create_time())
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_recorder_in_a_task)
    killer.start()
    result = capture(cfg)
    killer.join()
    assert killed, "no recorder was seen recording"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).create_time() != born[0] \
        or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    # the killed process returned nothing; its actor lived on in a new process (same actor slot)
    assert killed[0] not in result.pids and len(result.pids) == len(result.writer_ids) == 2
    assert result.num_recorded == 4
    assert_exactly_once(cfg.out, cfg)
    # Episodes 0 and 1 were the first tasks of the two actors (one of them killed): the redone
    # episode is the same as the one lost, frame for frame.
    env, ds = make_env("voxel", height=96, width=96), Dataset(cfg.out)
    for spec in expand_specs(cfg)[:2]:
        replay = play_episode(env, make_player(spec.player, seed=spec.seed), spec)
        np.testing.assert_array_equal(ds.frames(spec.episode_id).frames, replay.frames)


def test_full_disk_stops_with_a_clear_error_and_committed_shards_intact(full_disk, ray_cluster):
    cfg = CaptureConfig(out=str(full_disk("600k") / "d"), episodes=12, steps=60, resolution=128, num_workers=2,
                        progress=False)
    with pytest.raises(UserError, match="No space left|cannot"):
        capture(cfg)
    committed = committed_episode_ids(cfg.out)
    ds = Dataset(cfg.out)
    for episode_id in committed:
        assert ds.frames(episode_id).frames.shape == (60, 128, 128, 3)
    problems = [str(p) for p in validate(cfg.out)]
    # what the failure left is only files the manifest does not list (never a committed one)
    assert all("extra shard" in p or "temporary file" in p for p in problems), problems
