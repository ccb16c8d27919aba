"""Ray actors counted against this machine's free memory before any starts (worldloom.cluster.actors_that_fit):
`capture run`, `dataset ingest`, `idm label` and `agent eval` with more --num-workers than fit.

    pytest tests/test_actor_memory.py -q
"""

from __future__ import annotations

import collections

import psutil
import pytest

from worldloom.capture import CaptureConfig
from worldloom.capture.driver import capture
from worldloom.capture.recorder import recorder_memory_bytes
from worldloom.cluster import ACTOR_BASE_BYTES, actors_that_fit, ray_session
from worldloom.datasets import Dataset
from worldloom.errors import UserError


def free_memory(monkeypatch, available_bytes: int) -> None:
    """This machine as one with `available_bytes` free (what psutil says; Ray's own view is left alone)."""
    memory = collections.namedtuple("svmem", "total available")(64 * 2**30, available_bytes)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)


def test_a_recorder_is_counted_with_its_episode_frames():
    """The measured base, and the frames of one episode held about three times (raw, then while written)."""
    small, large = recorder_memory_bytes(64, 64, 400), recorder_memory_bytes(360, 360, 2000)
    assert ACTOR_BASE_BYTES < small < ACTOR_BASE_BYTES + 20 * 2**20  # 4.9 MB of frames, held 3 times
    assert large > 2 * 2**30  # 2,000 steps at 360x360 hold 0.8 GB raw: several copies


def test_capture_starts_only_the_recorders_that_fit_in_free_memory(tmp_path, monkeypatch, capsys):
    """`capture run --num-workers 2` where one recorder fits: one starts, with a one-line note, and every episode is
    recorded; until 2026-12-08 both started whatever the memory (64 of them on a laptop: Ray's OOM killer, minutes in)."""
    cfg = CaptureConfig(out=str(tmp_path / "ds"), env="voxel", player="random", episodes=2, steps=8, resolution=64,
                        num_workers=2, seed=0, progress=False)
    per_actor = recorder_memory_bytes(64, 64, 8)
    with ray_session(num_cpus=2):
        free_memory(monkeypatch, int(1.5 * per_actor / 0.8))  # one fits in the 80% a check may take, two do not
        result = capture(cfg)
    err = capsys.readouterr().err
    assert "worldloom capture run: note: 2 recorders need about" in err and "starting 1" in err, err
    assert result.num_recorded == 2 and len(Dataset(cfg.out).episode_ids) == 2


def test_no_actor_fits_is_one_line_before_any_starts(monkeypatch):
    with ray_session(num_cpus=2):
        free_memory(monkeypatch, 100 * 2**20)
        with pytest.raises(UserError, match=r"^worldloom dataset ingest: one of its ingest actors needs about 0\.\d GiB "
                                            r"but 0\.1 GiB of memory is free here"):
            actors_that_fit(4, ACTOR_BASE_BYTES, "ingest actors", "dataset ingest")
        free_memory(monkeypatch, 64 * 2**30)
        assert actors_that_fit(4, ACTOR_BASE_BYTES, "ingest actors", "dataset ingest") == 4  # room: as asked


def test_dataset_ingest_starts_only_the_actors_that_fit(tmp_path, monkeypatch, capsys):
    """The same helper behind `dataset ingest --num-workers 2` (and idm label, agent eval): one actor fits, one starts."""
    from videos import write_video

    from worldloom.datasets.ingest import INGEST_ACTOR_BYTES, IngestConfig, ingest

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        write_video(videos / f"v{i}.mp4", num_frames=10 + i)
    with ray_session(num_cpus=2):
        free_memory(monkeypatch, int(1.5 * INGEST_ACTOR_BYTES / 0.8))
        summary = ingest(IngestConfig(data=(str(videos),), out=str(tmp_path / "ds"), format="video", fps=20,
                                      num_workers=2))
    assert sorted(summary["ingested"]) == ["v0.mp4", "v1.mp4"], summary
    assert "worldloom dataset ingest: note: 2 ingest actors need about" in capsys.readouterr().err


def test_the_recorder_estimate_is_not_below_a_real_recorders_peak(tmp_path):
    """A real voxel recorder in its own process (as a Ray actor is: ray imported, its env made, one episode played and
    written): its peak resident memory stays under `recorder_memory_bytes`, so a cap never lets more start than fit.
    The peak is the process's own (Linux's VmHWM, of its address space since exec): getrusage's ru_maxrss keeps the
    parent's peak across exec, and in a CI run the pytest worker's 1.9 GiB read as the recorder's."""
    import subprocess
    import sys

    script = f"""
import resource, sys, ray
from worldloom.capture.config import EpisodeSpec
from worldloom.capture.recorder import Recorder
rec = Recorder({{"env": {str(tmp_path / "ds")!r}}}, env="voxel", height=128, width=128)
rec.record([(EpisodeSpec("e0", 0, "voxel", 0, "mixture", 200, 128, 128), ("env",))])
if sys.platform == "darwin":  # bytes there
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
else:  # this process's peak (kB), not the one ru_maxrss carries over from the parent across exec
    print(int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))) * 1024)
"""
    peak = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              timeout=300).stdout.split()[-1])
    assert peak < recorder_memory_bytes(128, 128, 200), (peak >> 20, recorder_memory_bytes(128, 128, 200) >> 20)
