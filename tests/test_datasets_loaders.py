"""ClipStream, ClipDataset and the Ray Data entry point on small real datasets."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
from conftest import pixel_frames
from torch.utils.data import DataLoader

from worldloom.datasets import ClipDataset, ClipStream, Dataset, DatasetWriter

LENGTHS = {"ep-0": 40, "ep-1": 33, "ep-2": 20, "ep-3": 50}


def keys(items) -> list[tuple[str, int]]:
    return [(it["episode_id"], int(it["start"])) for it in items]


def check_item(item, clip_len=8):
    """The clip is exactly the episode's frames at [start, start+T): never crosses episodes."""
    eid, start = item["episode_id"], int(item["start"])
    seed = int(eid.split("-")[1])
    assert 0 <= start and start + clip_len <= LENGTHS[eid]
    expected = pixel_frames(LENGTHS[eid], 32, 32, seed=seed)[start : start + clip_len]
    assert item["frames"].dtype == torch.uint8 and tuple(item["frames"].shape) == (clip_len, 32, 32, 3)
    np.testing.assert_array_equal(item["frames"].numpy(), expected)
    assert bool(item["has_action"]) == (eid != "ep-3")
    assert item["buttons"].dtype == torch.float32 and tuple(item["buttons"].shape) == (clip_len, 20)


def test_clip_stream_is_deterministic_and_never_crosses_episodes(small_dataset):
    stream = ClipStream(small_dataset, clip_len=8, seed=3)
    first = list(stream)
    assert keys(first) == keys(ClipStream(small_dataset, clip_len=8, seed=3))
    for item in first:
        check_item(item)
    # Every episode gives floor(L / T) clips per epoch: 5 + 4 + 2 + 6.
    assert collections.Counter(e for e, _ in keys(first)) == {"ep-0": 5, "ep-1": 4, "ep-2": 2, "ep-3": 6}
    assert keys(first) != keys(ClipStream(small_dataset, clip_len=8, seed=4))
    stream.set_epoch(1)
    assert keys(first) != keys(stream)  # new offsets and order each epoch


def test_clip_stream_shards_across_workers_and_ranks(small_dataset):
    whole = sorted(keys(ClipStream(small_dataset, clip_len=8, seed=0)))
    per_rank = [keys(ClipStream(small_dataset, clip_len=8, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1]) and sorted(per_rank[0] + per_rank[1]) == whole
    loader = DataLoader(ClipStream(small_dataset, clip_len=8, seed=0, rank=0, world_size=2), batch_size=None, num_workers=2)
    from_workers = keys(loader)
    # Rank 0 of 2 with 2 workers reads reader slots 0 and 1 of 4.
    slots = [keys(ClipStream(small_dataset, clip_len=8, seed=0, rank=r, world_size=4)) for r in range(4)]
    assert sorted(from_workers) == sorted(slots[0] + slots[1])
    assert sorted(sum(slots, [])) == whole and all(slots)
    batch = next(iter(DataLoader(ClipStream(small_dataset, clip_len=8), batch_size=4)))
    assert tuple(batch["frames"].shape) == (4, 8, 32, 32, 3) and len(batch["episode_id"]) == 4


def test_clip_stream_filters_and_weights(small_dataset, tmp_path):
    labeled = keys(ClipStream(small_dataset, clip_len=8, label_sources=["env"]))
    assert {e for e, _ in labeled} == {"ep-0", "ep-1", "ep-2"}
    assert {e for e, _ in keys(ClipStream(small_dataset, clip_len=8, splits=["val"]))} == {"ep-3"}
    other = tmp_path / "other"
    with DatasetWriter(other, 32, 32) as w:
        w.add_episode("x-0", pixel_frames(400, 32, 32, seed=9))
    items = list(ClipStream([small_dataset, other], clip_len=8, weights=[0.0, 1.0]))
    assert {it["source"] for it in items} == {1}
    with pytest.raises(ValueError, match="weights"):
        ClipStream([small_dataset, other], weights=[1.0])


def test_clip_dataset_random_access(small_dataset):
    ds = ClipDataset(small_dataset, clip_len=8, stride=4)
    # starts 0,4,..,L-8 per episode: 9 + 7 + 4 + 11
    assert len(ds) == 31
    for i in (0, 8, 30):
        check_item(ds[i])
    assert ds[30]["episode_id"] == "ep-3" and int(ds[30]["start"]) == 40
    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=False)))
    assert tuple(batch["camera"].shape) == (5, 8, 2)
    assert len(ClipDataset(Dataset(small_dataset), clip_len=8, label_sources=["none"])) == 6


@pytest.mark.ray
def test_ray_data_reads_committed_rows_and_shards_of_two_layouts(small_dataset):
    """The rows, then the same after DuckDB rewrote one shard (episode_id a plain string beside pyarrow's
    dictionary in the other): until 2026-12-07 Ray refused to merge the two files' schemas before reading a row
    ("Unable to merge: Field episode_id has incompatible types"); each file is now read in the documented types."""
    import duckdb
    import pyarrow.fs as pafs

    from worldloom.cluster import ray_session
    from worldloom.datasets import to_ray_dataset
    from worldloom.datasets.writer import file_checksum

    def rows() -> list[dict]:
        got = to_ray_dataset(small_dataset, columns=["episode_id", "step", "frame", "action_attack", "label_source"])
        return sorted(got.take_all(), key=lambda r: (r["episode_id"], r["step"]))

    with ray_session(num_cpus=2):
        before = rows()
        manifest = json.loads((small_dataset / "dataset.json").read_text())
        entry = manifest["shards"][0]
        path = small_dataset / entry["path"]
        duckdb.sql(f"COPY (SELECT * FROM read_parquet('{path}')) TO '{path}.new' (FORMAT parquet)")
        path.with_name(path.name + ".new").replace(path)
        entry["checksum"], entry["size_bytes"] = file_checksum(pafs.LocalFileSystem(), str(path))
        (small_dataset / "dataset.json").write_text(json.dumps(manifest))
        after = rows()
    assert len(before) == 143  # one execution: each Ray Data execution starts its own tasks
    (row,) = [r for r in before if r["episode_id"] == "ep-1" and r["step"] == 5]
    np.testing.assert_array_equal(row["frame"], pixel_frames(33, 32, 32, seed=1)[5])
    assert len(after) == 143 and all(
        a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(after, before, strict=True))


def test_clip_stream_over_chunked_h264(tmp_path):
    root = tmp_path / "h"
    with DatasetWriter(root, 32, 32, codec="h264") as w:
        w.add_episode("h-0", pixel_frames(75, 32, 32, seed=4))
    ds = Dataset(root)
    whole = ds.frames("h-0").frames
    items = list(ClipStream(root, clip_len=10, seed=1))
    assert len(items) == 7
    for it in items:  # clips start inside chunks of 32; pixels equal the whole-episode decode
        start = int(it["start"])
        np.testing.assert_array_equal(it["frames"].numpy(), whole[start : start + 10])


def test_source_weights_are_relative_however_large():
    """`--weights 1e308 1e308` (each finite) summed to inf and drew from NaN probabilities (a traceback in a
    loader worker): weights are relative, so they mean what 1 1 means."""
    from worldloom.datasets.loaders import mix_blocks

    per_source = [[("a", i) for i in range(3)], [("b", i) for i in range(5)]]
    for weights in ([1e308, 1e308], [1e308, 3e307], [5e-324, 5e-324]):
        small = [w / max(weights) for w in weights]
        assert mix_blocks(per_source, weights, np.random.default_rng(0)) == mix_blocks(per_source, small,
                                                                                      np.random.default_rng(0))


def test_what_is_drawn_from_a_dataset_follows_its_episodes_not_their_commit_order(tmp_path):
    """Workers commit episodes as they finish: the same capture with --num-workers 2 stored e1 before e0 (or
    not, run to run), and the IDM's train/val split, its --max-hours subset, the world model's clip order
    and eval's clips, all drawn by position, changed with it (the same data trained another model). The
    reader gives episodes in id order: the same episodes give the same draws, whatever order committed them."""
    from worldloom.idm.data import load_episodes, split_episodes, take_hours
    from worldloom.pretrain.evaluate import eval_clips

    ids = [f"ep-{i:02d}" for i in range(12)]
    roots = {}
    for name, order in (("ordered", ids), ("as-workers-finished", ids[1::2] + ids[::2])):
        roots[name] = tmp_path / name
        with DatasetWriter(roots[name], 32, 32, fps=20, shard_max_frames=1) as w:  # a shard per episode, as a worker
            for eid in order:
                n = 20 + int(eid[-2:])
                w.add_episode(eid, pixel_frames(n, 32, 32, seed=int(eid[-2:])), buttons=np.zeros((n, 20), bool),
                              camera=np.zeros((n, 2), np.float32), label_source="env")
    a, b = (Dataset(roots[name]) for name in ("ordered", "as-workers-finished"))
    assert a.episode_ids == b.episode_ids == ids
    draws = []
    for root in roots.values():
        episodes = load_episodes([str(root)])
        train, val = split_episodes(episodes, 0.25, seed=0)
        stream = ClipStream(str(root), clip_len=8, seed=0)
        draws.append(([e.episode_id for e in train], [e.episode_id for e in val],
                      [e.episode_id for e in take_hours(episodes, 0.002, seed=0)], keys(stream),
                      eval_clips([str(root)], 8, 5)["frames"]))
    (*lists_a, clips_a), (*lists_b, clips_b) = draws
    assert lists_a == lists_b
    assert torch.equal(clips_a, clips_b)
