"""Resume by content (`worldloom.datasets.sources`) and atomic replacement (`commit_shards(replace=...)`)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from worldloom.datasets import Dataset, DatasetWriter, commit_shards
from worldloom.datasets.sources import ResumeIndex, file_source
from worldloom.datasets.validate import validate
from worldloom.errors import UserError


def frames(n: int, value: int) -> np.ndarray:
    return np.full((n, 8, 8, 3), value, np.uint8)


def commit(root, episodes: dict[str, tuple[int, dict | None]], replace=()) -> None:
    """Write each episode (num steps, env_config) in one shard of its own and commit them."""
    writer = DatasetWriter(root, height=8, width=8, autocommit=False, codec="raw")
    writer.release_ids(replace)
    infos = []
    for eid, (n, env_config) in episodes.items():
        writer.add_episode(eid, frames(n, len(eid) + n), env_config=env_config)
        infos += writer.flush()
    commit_shards(root, infos, replace=replace)


def record(root, source, name: str, num_segments: int = 1) -> None:
    """Commit the episodes of one labeled input, as labeling does."""
    identity = source.identity(name)
    commit(root, {f"{name}:{k:04d}": (3, {"source_identity": identity}) for k in range(num_segments)})


def test_done_only_when_the_same_content_was_committed(tmp_path):
    out, videos = tmp_path / "out", tmp_path / "videos"
    (videos / "a").mkdir(parents=True)
    (videos / "b").mkdir()
    (videos / "a" / "clip.mp4").write_bytes(b"first recording")
    (videos / "b" / "clip.mp4").write_bytes(b"another recording, same name")
    a = file_source(videos / "a" / "clip.mp4")
    assert ResumeIndex.of(out).decide(a).reason == "new"
    record(out, a, "clip.mp4", num_segments=2)

    index = ResumeIndex.of(out)
    assert index.decide(file_source(videos / "a" / "clip.mp4")).reason == "unchanged"  # stat only: not read
    other = index.decide(file_source(videos / "b" / "clip.mp4"))  # same name, another folder and content
    assert not other.done and other.name.startswith("clip.mp4~") and other.name != "clip.mp4"
    (videos / "c").mkdir()
    shutil.copy(videos / "a" / "clip.mp4", videos / "c" / "moved.mp4")
    assert ResumeIndex.of(out).decide(file_source(videos / "c" / "moved.mp4")).reason.startswith("same content as")

    (videos / "a" / "clip.mp4").write_bytes(b"first recording, repaired: longer")  # size and mtime change
    changed = ResumeIndex.of(out).decide(file_source(videos / "a" / "clip.mp4"))
    assert not changed.done and changed.name == "clip.mp4" and sorted(changed.replaces) == ["clip.mp4:0000", "clip.mp4:0001"]
    os.utime(videos / "a" / "clip.mp4", ns=(1, 1))  # same bytes, another mtime: read, and found done
    (videos / "a" / "clip.mp4").write_bytes(b"first recording")
    os.utime(videos / "a" / "clip.mp4", ns=(5, 5))
    assert ResumeIndex.of(out).decide(file_source(videos / "a" / "clip.mp4")).done


def test_a_known_file_replaced_by_a_copy_of_another_input_is_its_duplicate_and_its_old_episodes_leave(tmp_path):
    """`cp b.mkv a.mkv` after both were done: a.mkv's content is b's, committed under b.mkv, but a.mkv's own
    episodes still hold its old content; "same content as b.mkv" left them there (a new-user trial,
    session 32), and then it was made again under its own name: b's content twice (until 2026-12-08). Its
    episodes are stale (`forget_changed`), so it is b.mkv's duplicate, made once, and they leave; alone,
    `decide` still never lets another input's episodes make a changed one done."""
    out = tmp_path / "out"
    for name, data in (("a.mkv", b"first recording"), ("b.mkv", b"second recording")):
        (tmp_path / name).write_bytes(data)
        record(out, file_source(tmp_path / name), name)
    shutil.copy(tmp_path / "b.mkv", tmp_path / "a.mkv")
    assert ResumeIndex.of(out).decide(file_source(tmp_path / "a.mkv")).reason == "changed"
    index = ResumeIndex.of(out)
    a, b = file_source(tmp_path / "a.mkv"), file_source(tmp_path / "b.mkv")
    index.forget_changed([a, b])
    duplicate = index.decide(a)
    assert duplicate.done and duplicate.replaces == ("a.mkv:0000",) and duplicate.reason == f"same content as {b.origin}"
    assert duplicate.done_ids == ("b.mkv:0000",) and index.decide(b).reason == "unchanged"


def test_a_second_input_with_the_same_content_in_one_job_is_done(tmp_path):
    for name in ("x.mp4", "y.mp4"):
        (tmp_path / name).write_bytes(b"identical bytes")
    index = ResumeIndex.of(tmp_path / "out")
    assert not index.decide(file_source(tmp_path / "x.mp4")).done
    assert index.decide(file_source(tmp_path / "y.mp4")).done


def test_replacing_episodes_is_one_commit_and_leaves_a_valid_dataset(tmp_path):
    out = tmp_path / "out"
    commit(out, {"clip.mp4:0000": (4, None), "clip.mp4:0001": (2, None)})
    commit(out, {"other.mp4:0000": (5, None)})
    old_shards = {s["path"] for s in Dataset(out).manifest["shards"]}
    commit(out, {"clip.mp4:0000": (9, None)}, replace=["clip.mp4:0000", "clip.mp4:0001"])
    ds = Dataset(out)
    assert sorted(ds.episode_ids) == ["clip.mp4:0000", "other.mp4:0000"]
    assert ds.episode("clip.mp4:0000").num_steps == 9 and ds.num_frames == 14 and ds.manifest["num_episodes"] == 2
    assert validate(out) == []  # no duplicate, no orphan: the old shards are gone
    assert len(old_shards - {s["path"] for s in ds.manifest["shards"]}) == 2
    assert not any((out / p).exists() for p in old_shards - {s["path"] for s in ds.manifest["shards"]})


def test_a_replaced_episode_must_own_its_shard(tmp_path):
    out = tmp_path / "out"
    writer = DatasetWriter(out, height=8, width=8, autocommit=False)
    writer.add_episode("a", frames(2, 1))
    writer.add_episode("b", frames(2, 2))  # same shard as "a"
    commit_shards(out, writer.flush())
    with pytest.raises(UserError, match="besides the ones to replace"):
        commit(out, {"a": (3, None)}, replace=["a"])
    ds = Dataset(out)  # unchanged; the refused shard is left uncommitted (validate lists it as extra)
    assert sorted(ds.episode_ids) == ["a", "b"] and ds.episode("a").num_steps == 2
    assert [p.message.split(" (")[0] for p in validate(out)] == ["extra shard not listed in dataset.json"]
