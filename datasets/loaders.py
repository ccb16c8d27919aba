"""Torch and Ray loaders: `ClipStream` (shuffled training clips), `ClipDataset` (evaluation),
`to_ray_dataset` (distributed reads).

    from torch.utils.data import DataLoader
    from worldloom.datasets import ClipStream
    stream = ClipStream(["data/labeled", "data/pseudo"], clip_len=16, seed=0, weights=[0.3, 0.7])
    for epoch in range(3):
        stream.set_epoch(epoch)
        for batch in DataLoader(stream, batch_size=32, num_workers=2):
            batch["frames"]  # (B, T, H, W, 3) uint8

How `ClipStream` shuffles (the shard-then-buffer scheme of webdataset and Ray Data): each epoch,
every episode is cut into non-overlapping clips of T steps from a random offset (so over epochs
every window is seen, and a clip never crosses an episode). Runs of consecutive clips form
blocks of about 1,024 frames, read with one Parquet call each. The block list is shuffled (or
mixed by source weight) with the seed and epoch, dealt round-robin to the `world_size x
num_workers` readers, and each reader shuffles the clips of a few blocks at a time. Same seed,
epoch, world size and worker count: the same clips in the same order. Ranks may receive a few
clips more or less than each other: with DDP, run a fixed number of steps per epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset, get_worker_info

from worldloom.errors import UserError

from . import codecs, schema
from .reader import Clip, Dataset

Source = str | os.PathLike | Dataset
BLOCK_FRAMES = 1024  # frames read per Parquet call: 4 row groups of 256


def open_sources(sources: Source | Sequence[Source]) -> list[Dataset]:
    """One `Dataset` per source (a path, URI or `Dataset`); all must share height and width."""
    if isinstance(sources, (str, os.PathLike, Dataset)):
        sources = [sources]
    datasets = [s if isinstance(s, Dataset) else Dataset(s) for s in sources]
    if not datasets:
        raise UserError("no dataset given: name at least one dataset directory or URI")
    sizes = {(d.spec.height, d.spec.width) for d in datasets}
    if len(sizes) > 1:
        said = ", ".join(f"{d.location.uri} is {d.spec.height}x{d.spec.width}" for d in datasets)
        h, w = datasets[0].spec.height, datasets[0].spec.width
        raise UserError(f"datasets differ in frame size: {said}; read datasets of one size: leave some out, or record "
                        f"them again at {h}x{w} (`worldloom capture run ... --resolution {h}`, "
                        f"`worldloom dataset ingest ... --resolution {h}x{w}`)")
    return datasets


def select_episodes(ds: Dataset, min_steps: int, label_sources: Sequence[str] | None, splits: Sequence[str] | None) -> list[tuple[str, int]]:
    """(episode_id, num_steps) of the episodes that pass the filters and hold at least one clip."""
    rows = ds.episodes.select(["episode_id", "num_steps", "label_source", "split"]).to_pylist()
    return [
        (r["episode_id"], r["num_steps"]) for r in rows
        if r["num_steps"] >= min_steps
        and (label_sources is None or r["label_source"] in label_sources)
        and (splits is None or r["split"] in splits)
    ]


def clip_items(clip: Clip, clip_len: int, source: int) -> list[dict]:
    """Cut a decoded block into item dicts of `clip_len` steps each."""
    frames = torch.from_numpy(clip.frames)  # (N, H, W, 3) uint8
    num = clip.frames.shape[0] // clip_len
    has_action = clip.buttons is not None
    if has_action:
        buttons = torch.from_numpy(clip.buttons.astype(np.float32))  # (N, 20)
        camera = torch.from_numpy(clip.camera)  # (N, 2)
    else:
        buttons = torch.zeros(num * clip_len, schema.NUM_BUTTONS)
        camera = torch.zeros(num * clip_len, 2)
    pitch = torch.full((num * clip_len,), float("nan")) if clip.pitch is None else torch.from_numpy(clip.pitch)
    items = []
    for k in range(num):
        sl = slice(k * clip_len, (k + 1) * clip_len)
        last = (k + 1) * clip_len - 1
        items.append({
            "frames": frames[sl], "buttons": buttons[sl], "camera": camera[sl],
            "has_action": torch.tensor(has_action), "episode_id": clip.episode_id,
            "start": clip.start + k * clip_len, "source": source,
            # the caption of the clip's last step (the frame a world model predicts); "" when none
            "caption": (clip.captions[last] or "") if clip.captions is not None else "",
            # each frame's view pitch in degrees (state_pitch), NaN where the dataset did not record it
            "pitch": pitch[sl],
        })
    return items


@dataclass(frozen=True)
class Block:
    source: int
    episode_id: str
    start: int
    num_clips: int


def episode_blocks(episode_id: str, num_steps: int, clip_len: int, source: int, rng: np.random.Generator) -> list[Block]:
    """An episode's clips for one epoch, from a random offset, grouped into blocks."""
    offset = int(rng.integers(0, num_steps % clip_len + 1))
    num_clips = (num_steps - offset) // clip_len
    per_block = max(1, BLOCK_FRAMES // clip_len)
    return [
        Block(source, episode_id, offset + first * clip_len, min(per_block, num_clips - first))
        for first in range(0, num_clips, per_block)
    ]


def mix_blocks(per_source: list[list[Block]], weights: Sequence[float] | None, rng: np.random.Generator) -> list[Block]:
    """One epoch's block order: all blocks shuffled, or drawn by source weight (sources cycle, so
    a small heavily weighted source repeats within the epoch and a light one is subsampled)."""
    if weights is None:
        blocks = [b for blocks in per_source for b in blocks]
        return [blocks[i] for i in rng.permutation(len(blocks))]
    live = [i for i, blocks in enumerate(per_source) if blocks]
    p = np.array([weights[i] for i in live], float)
    p = p / p.max() if live and p.max() > 0 else p  # relative weights: 1e308 1e308 summed to inf, p to NaN
    total = sum(len(b) for b in per_source)
    if not live or total == 0:
        return []
    order = [list(rng.permutation(len(per_source[i]))) for i in live]
    cursor = [0] * len(live)
    out = []
    for pick in rng.choice(len(live), size=total, p=p / p.sum()):
        if cursor[pick] == len(order[pick]):
            order[pick], cursor[pick] = list(rng.permutation(len(order[pick]))), 0
        out.append(per_source[live[pick]][order[pick][cursor[pick]]])
        cursor[pick] += 1
    return out


def reader_slot(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(this reader's index, number of readers) over distributed ranks x DataLoader workers."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world_size = 0, 1
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
    return rank * num_workers + worker, world_size * num_workers


class ClipStream(IterableDataset):
    """Shuffled clips of `clip_len` steps from one or more datasets; call `set_epoch` per epoch."""

    def __init__(
        self, sources: Source | Sequence[Source], clip_len: int = 16, seed: int = 0,
        weights: Sequence[float] | None = None, label_sources: Sequence[str] | None = None,
        splits: Sequence[str] | None = None, shuffle_blocks: int = 4,
        rank: int | None = None, world_size: int | None = None,
    ):
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        self.datasets = open_sources(sources)
        if weights is not None and (len(weights) != len(self.datasets) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"weights must be {len(self.datasets)} non-negative numbers with a positive sum, got {weights}")
        self.clip_len, self.seed, self.weights = clip_len, seed, weights
        self.episodes = [select_episodes(d, clip_len, label_sources, splits) for d in self.datasets]
        self.shuffle_blocks = max(1, shuffle_blocks)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def blocks(self, epoch: int) -> list[Block]:
        """Every reader's blocks for `epoch`, in order (the same list on every rank and worker)."""
        per_source = []
        for source, episodes in enumerate(self.episodes):
            rng = np.random.default_rng([self.seed, epoch, source])
            per_source.append([b for eid, n in episodes for b in episode_blocks(eid, n, self.clip_len, source, rng)])
        return mix_blocks(per_source, self.weights, np.random.default_rng([self.seed, epoch, 1_000_003]))

    def __iter__(self) -> Iterator[dict]:
        slot, num_slots = reader_slot(self.rank, self.world_size)
        mine = self.blocks(self.epoch)[slot::num_slots]
        rng = np.random.default_rng([self.seed, self.epoch, slot, 7])
        for first in range(0, len(mine), self.shuffle_blocks):
            items = []
            for block in mine[first : first + self.shuffle_blocks]:
                ds = self.datasets[block.source]
                clip = ds.frames(block.episode_id, block.start, block.start + block.num_clips * self.clip_len)
                items.extend(clip_items(clip, self.clip_len, block.source))
            for i in rng.permutation(len(items)):
                yield items[i]


class ClipDataset(TorchDataset):
    """Every clip at `stride` steps (default: clip_len, no overlap) of every episode, by index."""

    def __init__(
        self, sources: Source | Sequence[Source], clip_len: int = 16, stride: int | None = None,
        label_sources: Sequence[str] | None = None, splits: Sequence[str] | None = None,
    ):
        stride = clip_len if stride is None else stride
        if clip_len < 1 or stride < 1:
            raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
        self.datasets = open_sources(sources)
        self.clip_len = clip_len
        self.index = [
            (source, eid, start)
            for source, d in enumerate(self.datasets)
            for eid, n in select_episodes(d, clip_len, label_sources, splits)
            for start in range(0, n - clip_len + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        source, eid, start = self.index[i]
        clip = self.datasets[source].frames(eid, start, start + self.clip_len)
        return clip_items(clip, self.clip_len, source)[0]


def to_ray_dataset(root: str | os.PathLike, columns: Sequence[str] | None = None, decode: bool = True, filesystem=None):
    """The committed frame rows as a `ray.data.Dataset`; `decode` turns `frame` into `(H, W, 3)` arrays."""
    import ray.data

    ds = Dataset(root, filesystem)
    where = ds.location.uri_of(schema.MANIFEST_NAME)
    paths = [ds.location.member(s["path"], source=where, field="shard path") for s in ds.manifest["shards"]]
    if not paths:
        raise ValueError(f"{ds.location.uri} has no committed shards")
    # each file in the documented types: shards other tools rewrote (DuckDB's plain-string episode_id beside
    # pyarrow's dictionary) would otherwise fail Ray's schema merge before a row is read
    rows = ray.data.read_parquet(paths, filesystem=ds.location.fs, schema=schema.frame_schema(ds.version))
    if columns:
        rows = rows.select_columns(list(columns))
    if decode and (columns is None or "frame" in columns):
        if codecs.get_codec(ds.spec.codec).chunk_frames > 1:
            raise ValueError(f"{ds.location.uri}: codec {ds.spec.codec} stores chunks of frames that Ray batches would "
                             "cut; use decode=False, or ClipStream/Dataset.frames")
        rows = rows.map_batches(_FrameDecoder(ds.spec.codec, ds.spec.height, ds.spec.width), batch_format="pyarrow")
    return rows


class _FrameDecoder:
    """A picklable batch function: the encoded `frame` column -> a `(N, H, W, 3)` uint8 column."""

    def __init__(self, codec: str, height: int, width: int):
        self.codec, self.height, self.width = codec, height, width

    def __call__(self, batch):
        import pyarrow as pa

        out = {"frame": codecs.decode_frames(self.codec, batch.column("frame"), self.height, self.width)}
        for name in batch.column_names:
            column = batch.column(name)
            if name != "frame":
                if pa.types.is_dictionary(column.type):
                    column = column.cast(column.type.value_type)
                out[name] = column.to_numpy(zero_copy_only=False)
        return out
