"""Labeled episodes for the IDM: load them from WorldLoom datasets, split them, cut windows.

    episodes = load_episodes(["data/run1"], require_labels=True)     # list[Episode], in memory
    train_eps, val_eps = split_episodes(episodes, val_fraction=0.1, seed=0)
    batch = sample_windows(train_eps, batch_size=8, num_frames=32, context=2, rng=np.random.default_rng(0))

The IDM's data is small (a few hours of labeled play at 64x64 is a few GB of uint8 at most), so
episodes are read once, whole, into memory, and a training batch is a pure function of
`(seed, step)`: a resumed run draws exactly the batches the killed run would have drawn.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldloom.actions import BUTTONS, NUM_BUTTONS, NUM_CAMERA_BINS, camera_to_bin_position
from worldloom.errors import UserError


@dataclass
class Episode:
    """One episode's frames and actions, whole, in memory."""

    episode_id: str
    frames: np.ndarray  # (N, H, W, 3) uint8
    buttons: np.ndarray | None  # (N, 20) bool, None when unlabeled
    camera: np.ndarray | None  # (N, 2) float32 degrees [pitch, yaw]
    source: str  # the dataset it came from
    seed: int | None = None
    split: str | None = None
    fps: float = 20.0
    env: str | None = None  # the env that recorded it (the episodes table's env: voxel, collect_logs, ...)

    @property
    def num_steps(self) -> int:
        return int(self.frames.shape[0])


def open_dataset(root: str):
    """A `worldloom.datasets.Dataset`, or a UserError that says what is wrong with `root`."""
    from worldloom.datasets import Dataset

    if "://" not in str(root) and not Path(root).exists():
        raise UserError(f"dataset {root} does not exist")
    try:
        return Dataset(str(root))
    except UserError:
        raise
    except (FileNotFoundError, ValueError, OSError) as err:
        raise UserError(f"{root} is not a readable WorldLoom dataset: {err}") from err


def _column(table, name: str, default=None) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [default] * table.num_rows


def open_datasets(sources: list[str] | tuple[str, ...], same_frames: bool = False) -> list:
    """`open_dataset` of each, after the checks of datasets given together: none given twice (nor a copy),
    and with `same_frames` (training) one frame size and fps (and a note for one whose job has not finished).
    UserError (one line) naming them."""
    from worldloom.datasets.reader import check_distinct, check_same_frames

    datasets = [open_dataset(root) for root in sources]
    check_distinct(datasets)
    if same_frames and datasets:
        check_same_frames(datasets)
        note_incomplete(datasets)
    return datasets


def note_incomplete(datasets: list, command: str = "") -> None:
    """One line on stderr for each dataset whose job has not finished (`datasets.summary.incomplete_note`): a
    trainer uses what is there, and says so."""
    from worldloom.datasets.summary import incomplete_note

    for ds in datasets:
        if (line := incomplete_note(ds, command)) is not None:
            print(line, file=sys.stderr)


def load_episodes(sources: list[str] | tuple[str, ...], require_labels: bool = True,
                  label_sources: tuple[str, ...] = ("env",), max_episodes: int | None = None,
                  same_frames: bool = False) -> list[Episode]:
    """Every episode of `sources` whose label_source is in `label_sources` (all if unlabeled ok);
    `same_frames` for training (open_datasets)."""
    episodes: list[Episode] = []
    for root, ds in zip(sources, open_datasets(sources, same_frames), strict=True):
        table = ds.episodes
        ids, sources_col = _column(table, "episode_id"), _column(table, "label_source", "env")
        seeds, splits, steps = _column(table, "seed"), _column(table, "split"), _column(table, "num_steps", 0)
        envs = _column(table, "env")
        for ep_id, label_source, seed, split, num_steps, env in zip(ids, sources_col, seeds, splits, steps, envs,
                                                                    strict=False):
            if require_labels and label_source not in label_sources:
                continue
            clip = ds.frames(ep_id, 0, int(num_steps))
            labeled = label_source != "none" and clip.buttons is not None
            episodes.append(Episode(
                episode_id=str(ep_id), frames=np.asarray(clip.frames, dtype=np.uint8),
                buttons=np.asarray(clip.buttons, dtype=bool) if labeled else None,
                camera=np.asarray(clip.camera, dtype=np.float32) if labeled else None,
                source=str(root), seed=seed, split=split, fps=float(ds.spec.fps), env=env))
            if max_episodes is not None and len(episodes) >= max_episodes:
                return episodes
    if require_labels and not episodes:
        raise UserError(f"no labeled episodes (label_source in {list(label_sources)}) in {', '.join(map(str, sources))}: "
                        "the IDM trains on actions recorded by the env; capture some with `worldloom capture`")
    return episodes


def check_frame_size(episodes: list[Episode], height: int, width: int, what: str = "data") -> None:
    """A UserError if the episodes' frames are not `height` x `width` (the model's size)."""
    for ep in episodes:
        h, w = ep.frames.shape[1:3]
        if (h, w) != (height, width):
            record = (f"`worldloom capture run --resolution {height}`" if height == width else
                      f"`worldloom capture run` at {width}x{height}")
            raise UserError(f"{what} frames are {w}x{h} (episode {ep.episode_id} in {ep.source}) but the model "
                            f"takes {width}x{height}: train a model at that size (`--model.height {h} --model.width {w}`) "
                            f"or record the data at {width}x{height} ({record})")


def take_hours(episodes: list[Episode], hours: float, seed: int) -> list[Episode]:
    """Episodes in a seeded order until `hours` of play are taken (all when hours <= 0)."""
    if hours <= 0:
        return list(episodes)
    taken, seconds = [], 0.0
    for i in np.random.default_rng([seed, 104729]).permutation(len(episodes)):
        if seconds >= hours * 3600:
            break
        taken.append(episodes[i])
        seconds += episodes[i].num_steps / episodes[i].fps
    return taken


def split_episodes(episodes: list[Episode], val_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """(train, val) by whole episodes: at least one of each when there are two or more episodes."""
    if len(episodes) < 2 or val_fraction <= 0:
        return list(episodes), []
    order = np.random.default_rng(seed).permutation(len(episodes))
    num_val = min(len(episodes) - 1, max(1, round(val_fraction * len(episodes))))
    val_idx = set(order[:num_val].tolist())
    return ([ep for i, ep in enumerate(episodes) if i not in val_idx],
            [ep for i, ep in enumerate(episodes) if i in val_idx])


def usable(episodes: list[Episode], num_frames: int) -> list[Episode]:
    """Episodes long enough for one window; a UserError if none is."""
    kept = [ep for ep in episodes if ep.num_steps >= num_frames]
    if episodes and not kept:
        longest = max(ep.num_steps for ep in episodes)
        raise UserError(f"every episode is shorter than the model's window ({num_frames} frames; the longest has "
                        f"{longest}): capture longer episodes or use a preset with fewer frames")
    return kept


def check_learnable(episodes: list[Episode]) -> None:
    """A UserError (one line) where the labeled `episodes` hold nothing an IDM can learn: frames that never change
    (each frame (H, W, 3) equal to the one before, in every episode: a frozen or black screen recorded; the IDM
    reads actions from the motion between frames) or labels with no action (no button pressed and the camera at
    0 degrees at every step: labels lost on the way). Until 2026-12-07 such data trained to the end, exit 0, into a
    model that labels any footage as it learned: nothing (field case 08's kind). One learnable episode is enough."""
    if not episodes:
        return
    num_steps = sum(ep.num_steps for ep in episodes)
    where = f"{len(episodes)} training episodes, {num_steps} steps"
    if not any(ep.num_steps > 1 and (ep.frames[1:] != ep.frames[:-1]).any() for ep in episodes):
        raise UserError(f"the training frames never change ({where}: every frame equals the one before): an IDM reads "
                        "actions from the motion between frames, so it can learn none; check the recording (a frozen "
                        "or black screen)")
    if not any(ep.buttons is not None and (ep.buttons.any() or np.any(ep.camera != 0)) for ep in episodes):
        raise UserError(f"the training labels hold no action ({where}: no button pressed and the camera still at "
                        "every step): an IDM trained on them labels every step a no-op; check that the data's "
                        "actions were recorded (`worldloom dataset inspect`)")


def padded_frames(frames: np.ndarray, start: int, stop: int) -> np.ndarray:
    """frames[start:stop] with black frames where the range leaves [0, len(frames))."""
    lo, hi = max(start, 0), min(stop, len(frames))
    return np.concatenate([np.zeros((lo - start, *frames.shape[1:]), np.uint8), frames[lo:hi],
                           np.zeros((stop - hi, *frames.shape[1:]), np.uint8)])


def window_targets(ep: Episode, start: int, num_frames: int, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (T + 2 * context, H, W, 3) uint8, buttons (T, 20) float32 and the camera's continuous mu-law
    bin positions (T, 2) float32 in [0, 10] (their rint is VPT's bin) of one window."""
    end = start + num_frames
    buttons = ep.buttons[start:end].astype(np.float32) if ep.buttons is not None else np.zeros((num_frames, NUM_BUTTONS), np.float32)
    camera = ep.camera[start:end] if ep.camera is not None else np.zeros((num_frames, 2), np.float32)
    return padded_frames(ep.frames, start - context, end + context), buttons, camera_to_bin_position(camera).astype(np.float32)


# A mirrored window: the world seen left-right reversed is played with left and right swapped, the
# yaw negated and the hotbar read from its other end (slot k is where slot 10 - k was).
_MIRROR_NAMES = {"left": "right", "right": "left", **{f"hotbar.{k}": f"hotbar.{10 - k}" for k in range(1, 10)}}
MIRROR_BUTTONS = np.array([BUTTONS.index(_MIRROR_NAMES.get(name, name)) for name in BUTTONS])


def mirror_labels(buttons: np.ndarray, camera_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Buttons (..., 20) and camera bin positions (..., 2) of play mirrored left-right: `left` and `right`
    swapped, the hotbar reversed, the yaw negated."""
    camera_pos = camera_pos.copy()
    camera_pos[..., 1] = (NUM_CAMERA_BINS - 1) - camera_pos[..., 1]  # mu-law bins are symmetric about the middle one
    return buttons[..., MIRROR_BUTTONS], camera_pos


def mirror_window(frames: np.ndarray, buttons: np.ndarray, camera_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window (frames (N, H, W, 3), buttons (T, 20), camera bin positions (T, 2)) mirrored left-right."""
    return (np.ascontiguousarray(frames[:, :, ::-1]), *mirror_labels(buttons, camera_pos))


def sample_windows(episodes: list[Episode], batch_size: int, num_frames: int, context: int,
                   rng: np.random.Generator, mirror: float = 0.0) -> dict[str, np.ndarray]:
    """A batch of random windows, episodes drawn in proportion to their number of windows; each
    mirrored left-right (`mirror_window`) with probability `mirror`. Beside the arrays a model reads,
    where each window comes from: `episode` (B,) index into `episodes`, `start` (B,) its first step,
    `mirrored` (B,) bool."""
    counts = np.array([ep.num_steps - num_frames + 1 for ep in episodes], dtype=np.float64)
    picks = rng.choice(len(episodes), size=batch_size, p=counts / counts.sum())
    starts = [int(rng.integers(0, counts[i])) for i in picks]
    items = [window_targets(episodes[i], start, num_frames, context) for i, start in zip(picks, starts, strict=True)]
    flips = rng.random(len(items)) < mirror if mirror > 0 else np.zeros(len(items), bool)
    items = [mirror_window(*it) if flip else it for it, flip in zip(items, flips, strict=True)]
    return {"frames": np.stack([it[0] for it in items]),  # (B, T + 2 * context, H, W, 3) uint8
            "buttons": np.stack([it[1] for it in items]),  # (B, T, 20) float32
            "camera_pos": np.stack([it[2] for it in items]),  # (B, T, 2) float32 bin positions
            "episode": picks.astype(np.int64), "start": np.array(starts, np.int64), "mirrored": flips}

def fixed_windows(episodes: list[Episode], num_frames: int, context: int, max_windows: int, seed: int) -> dict[str, np.ndarray]:
    """A fixed set of validation windows (the same every evaluation), or an empty dict."""
    if not episodes:
        return {}
    return sample_windows(episodes, max_windows, num_frames, context, np.random.default_rng([seed, 7919]))
