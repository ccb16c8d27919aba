"""From WorldLoom datasets to model tensors: checks that sources agree, batches of clips, scaling.

    spec = check_sources(["data/env", "data/idm"])     # UserError if empty or disagreeing
    for batch in train_batches(sources, clip_len=8, batch_size=16, seed=0, weights=None):
        x, action, has_action = to_model_inputs(batch, image_size=64)

Clips come from `worldloom.datasets.ClipStream` (shuffled, sharded over DataLoader workers and
distributed ranks, mixed by weights). Clips of label_source `none` have has_action False and
train with the null action.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from worldloom.actions import BUTTONS
from worldloom.datasets import Dataset
from worldloom.datasets.reader import check_distinct, check_same_frames
from worldloom.errors import UserError
from worldloom.idm.data import note_incomplete
from worldloom.progress import counted

from .model import encode_actions


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    height: int
    width: int
    fps: float
    num_episodes: int
    num_frames: int
    label_sources: tuple[str, ...]


def check_sources(paths: Sequence[str], min_steps: int = 2) -> SourceSpec:
    """Open every dataset; refuse empty ones and ones that disagree on size, fps or action space."""
    if not paths:
        raise UserError("no dataset given: pass --data DIR [DIR ...]")
    datasets = [Dataset(path) for path in paths]
    check_distinct(datasets)
    check_same_frames(datasets)
    note_incomplete(datasets, "pretrain")
    episodes = frames = 0
    labels: set[str] = set()
    for path, ds in zip(paths, datasets, strict=True):
        longest = max((ds.episode(e).num_steps for e in ds.episode_ids), default=0)
        if len(ds) == 0 or longest < min_steps:
            raise UserError(f"{path}: no episode with at least {min_steps} steps ({counted(len(ds), 'episode')}); capture more data first")
        buttons = tuple(ds.manifest.get("action_space", {}).get("buttons", BUTTONS))
        if buttons != BUTTONS:
            raise UserError(f"{path}: action space {list(buttons)} differs from WorldLoom's {list(BUTTONS)}")
        episodes += len(ds)
        frames += ds.num_frames
        labels.update(ds.episodes.column("label_source").to_pylist())
    spec = datasets[0].spec
    return SourceSpec(spec.height, spec.width, float(spec.fps), episodes, frames, tuple(sorted(labels)))


def frames_to_model(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, T, 3, S, S) in [-1, 1], area-resized when sizes differ."""
    B, T, H, W, _ = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)  # (B, T, 3, H, W)
    if (H, W) != (image_size, image_size):
        x = F.interpolate(x.reshape(B * T, 3, H, W), size=(image_size, image_size), mode="area")
        x = x.reshape(B, T, 3, image_size, image_size)
    return x


def model_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float (…, 3, H, W) in [-1, 1] -> uint8 (…, H, W, 3)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1)


def to_model_inputs(batch: dict, image_size: int, use_actions: bool = True):
    """A collated ClipStream batch -> x (B, T, 3, S, S), action (B, T, 24), has_action (B, T)."""
    x = frames_to_model(torch.as_tensor(batch["frames"]), image_size)
    action = encode_actions(torch.as_tensor(batch["buttons"]), torch.as_tensor(batch["camera"]))
    has = torch.as_tensor(batch["has_action"]).bool()
    if not use_actions:
        has = torch.zeros_like(has)
    return x, action, has[:, None].expand(-1, x.shape[1])


def train_batches(sources: Sequence[str], clip_len: int, batch_size: int, seed: int,
                  weights: Sequence[float] | None = None, num_workers: int = 0, skip: int = 0,
                  label_sources: Sequence[str] | None = None) -> Iterator[dict]:
    """Endless collated batches of clips; `skip` batches are drawn and dropped (exact resume);
    `label_sources` keeps only episodes labeled so (e.g. ("env",): the game's own actions)."""
    from worldloom.datasets import ClipStream

    stream = ClipStream(list(sources), clip_len=clip_len, seed=seed, weights=list(weights) if weights else None,
                        label_sources=label_sources)
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=collate, drop_last=True)
    done, epoch = 0, 0
    while True:
        stream.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            if done >= skip:
                yield batch
            done += 1
        if empty:
            raise UserError(f"no full batch of {batch_size} clips of {clip_len} steps in {list(sources)}; lower --batch-size or add data")
        epoch += 1


def collate(items: list[dict]) -> dict:
    """Stack tensors and arrays; keep strings and ints as lists."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], (str, int)) and not isinstance(values[0], bool):
            out[key] = values
        else:
            out[key] = torch.stack([torch.as_tensor(v) for v in values])
    return out
