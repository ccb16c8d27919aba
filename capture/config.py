"""What a capture job is: `CaptureConfig` (the job) and `EpisodeSpec` (one episode of it).

    from worldloom.capture.config import CaptureConfig, expand_specs
    cfg = CaptureConfig(out="data/run1", env="voxel", player="mixture", episodes=8, steps=200)
    specs = expand_specs(cfg)      # 8 EpisodeSpecs; the same cfg always gives the same list

An episode is a pure function of its spec (env, seed, player, steps, size): a job that runs
again, on any machine, replays exactly the episodes it lost and skips the committed ones.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldloom.actions import FPS
from worldloom.cluster import MAX_WORKERS, NUM_WORKERS_RANGE
from worldloom.config import MAX_SEED, check_range, doc, to_json_dict
from worldloom.datasets.codecs import CODECS
from worldloom.envs import ENV_NAMES, PLAYER_NAMES, check_player, check_resolution, env_metadata

# Fields that say how a job runs, not what it writes: a resumed job may change them freely.
# ("workers": the name of num_workers in datasets written by WorldLoom 0.1.)
EXECUTION_FIELDS = ("out", "num_workers", "workers", "address", "strip_actions", "episodes_per_shard", "progress")
MAX_STEPS = 1_000_000
# A recorder holds one whole episode's frames before writing it (the writer takes whole episodes).
MAX_EPISODE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class CaptureConfig:
    """One capture job: which env and player, how many episodes of how many steps, where to."""

    out: str = doc("output dataset: a local directory or a pyarrow URI (s3://bucket/prefix?endpoint_override=...)")
    env: str = doc(f"env to play: {', '.join(ENV_NAMES)}", "voxel")
    player: str = doc(f"scripted player: {', '.join(PLAYER_NAMES)}", "mixture")
    episodes: int = doc("number of episodes to record", 8)
    steps: int = doc("steps (frames) per episode; an episode that ends earlier is kept shorter", 200)
    resolution: int = doc("frame height and width in pixels (square frames; voxel 64..360, minetest 64..512, "
                          "crafter 18..1024, minerl 16..1024)", 128)
    antialias: bool = doc("voxel env: 2x2 samples per pixel, averaged (see docs/envs.md)", False)
    day_length: int = doc("voxel env: steps in a day-night cycle, the sun moving from mid-morning (0: a fixed "
                          "mid-morning sun); with it the captions name dawn, day, dusk and night", 0)
    seed: int = doc("job seed: episode i plays seed derived from (seed, i)", 0)
    num_workers: int = doc("recorder actors, one CPU each (0: one per CPU of the cluster)", 2)
    address: str | None = doc("Ray cluster to join (HOST:PORT or auto); unset: start a local one for this job", None)
    strip_actions: str | None = doc(
        "write the footage without actions (label_source none) to OUT and the true actions to this dataset", None
    )
    episodes_per_shard: int = doc("episodes per shard (per actor task): a killed actor loses at most this many", 1)
    codec: str = doc("frame codec of a new dataset: raw (lossless, zstd), png (lossless), jpeg or h264 (lossy, "
                     "32-frame chunks)", "raw")
    split: str = doc("split name written on every episode", "train")
    progress: bool = doc("show a progress bar", True)

    def __post_init__(self) -> None:
        if not isinstance(self.out, str) or not self.out.strip():
            raise ValueError(f"out must be a directory or URI, got {self.out!r}")
        if self.env not in ENV_NAMES:
            raise ValueError(f"env must be one of {', '.join(ENV_NAMES)}; got {self.env!r}")
        check_player(self.player)
        check_range("episodes", self.episodes, 1, 10_000_000)
        check_range("steps", self.steps, 1, MAX_STEPS)
        check_resolution(self.env, self.resolution)  # the env's own range, not a wider one it refuses later
        check_range("seed", self.seed, 0, MAX_SEED)
        check_range("num_workers", self.num_workers, 0, MAX_WORKERS, NUM_WORKERS_RANGE)
        check_range("episodes_per_shard", self.episodes_per_shard, 1, 10_000)
        if self.episode_bytes > MAX_EPISODE_BYTES:
            raise ValueError(f"steps x resolution^2 x 3 bytes must be at most 2 GiB (one episode is held in memory), "
                             f"got steps={self.steps}, resolution={self.resolution}: "
                             f"{self.episode_bytes / 1024**3:.1f} GiB; record shorter episodes")
        if self.strip_actions is not None and _same_place(self.strip_actions, self.out):
            raise ValueError(f"strip_actions must be another dataset than out, got {self.strip_actions!r} for both")
        if self.strip_actions is not None and (inner := _nested(self.strip_actions, self.out)):
            # refused here, not once the first of them is made (which stayed, holding the next run to these flags)
            raise ValueError(f"strip_actions and out are two datasets, neither inside the other, got "
                             f"{inner[0]!r} inside {inner[1]!r}; give folders side by side (e.g. data/run1 and "
                             "data/run1-truth)")
        if self.antialias and self.env != "voxel":
            raise ValueError(f"antialias applies to the voxel env only, got env={self.env!r}")
        if self.day_length and self.env != "voxel":
            raise ValueError(f"day_length applies to the voxel env only, got env={self.env!r}")
        if self.day_length:
            check_range("day_length", self.day_length, 2, MAX_STEPS)
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {self.codec!r}")
        if not self.split or "/" in self.split:
            raise ValueError(f"split must be a non-empty name without '/', got {self.split!r}")

    @property
    def label_source(self) -> str:
        """What the frames in `out` are labeled with: `none` when the actions are stripped."""
        return "none" if self.strip_actions is not None else "env"

    @property
    def env_options(self) -> dict:
        """Keyword arguments of make_env beyond the frame size."""
        options: dict = {"antialias": True} if self.antialias else {}
        if self.day_length:
            options.update(day_night=True, day_length=self.day_length)
        return options

    @property
    def episode_bytes(self) -> int:
        """Memory that one episode's frames take in a recorder."""
        return self.steps * self.resolution * self.resolution * 3


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that decides an episode's frames and actions; `episode_id` names it in the dataset."""

    episode_id: str
    index: int
    env: str
    seed: int
    player: str
    steps: int
    height: int
    width: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _same_place(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.abspath(a) == os.path.abspath(b)


def _nested(a: str, b: str) -> tuple[str, str] | None:
    """(inner, outer) when one of two different places lies inside the other, else None."""
    def parts(path: str) -> tuple[str, ...]:
        if "://" in path:
            return tuple(p for p in path.split("?")[0].split("/") if p)
        return Path(os.path.abspath(path)).parts

    a_parts, b_parts = parts(a), parts(b)
    if a_parts != b_parts and a_parts[:len(b_parts)] == b_parts:
        return a, b
    if a_parts != b_parts and b_parts[:len(a_parts)] == a_parts:
        return b, a
    return None


def episode_seed(job_seed: int, index: int) -> int:
    """The env/player seed of episode `index`: well mixed, so jobs with nearby seeds do not overlap."""
    return int(np.random.SeedSequence([job_seed, index]).generate_state(1)[0] & MAX_SEED)


def episode_id(cfg: CaptureConfig, index: int) -> str:
    """`voxel-mixture-j0-e000003`: sorts in index order and says which job made it."""
    return f"{cfg.env}-{cfg.player}-j{cfg.seed}-e{index:06d}"


def expand_specs(cfg: CaptureConfig) -> list[EpisodeSpec]:
    """The job's episodes, in order; a pure function of `cfg`."""
    return [
        EpisodeSpec(
            episode_id=episode_id(cfg, i), index=i, env=cfg.env, seed=episode_seed(cfg.seed, i),
            player=cfg.player, steps=cfg.steps, height=cfg.resolution, width=cfg.resolution,
        )
        for i in range(cfg.episodes)
    ]


def batch_specs(specs: list[EpisodeSpec], size: int) -> list[list[EpisodeSpec]]:
    """Consecutive groups of `size` specs: one group is one actor task and one shard."""
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def dataset_config(cfg: CaptureConfig, label_source: str) -> dict:
    """What is stored in a dataset's manifest: the whole job config, what its labels are, and the
    licence of what the frames show when the env declares one (Minetest's game media)."""
    config = {"capture": to_json_dict(cfg), "label_source": label_source, "fps": FPS}
    licence = env_metadata(cfg.env).get("licence")
    if licence:
        config["licence"] = licence
    return config


def content_fields(stored: dict) -> dict:
    """The part of a stored config that decides the dataset's contents."""
    if not isinstance(stored, dict) or not isinstance(stored.get("capture"), dict):
        return {}
    fields = {k: v for k, v in stored["capture"].items() if k not in EXECUTION_FIELDS}
    return {**fields, "label_source": stored.get("label_source")}


def config_mismatch(cfg: CaptureConfig, label_source: str, stored: dict | None) -> str | None:
    """None if a dataset made by `stored` (None: no dataset yet) may be completed by `cfg`; else why not."""
    if stored is None:
        return None
    ours = content_fields(dataset_config(cfg, label_source))
    theirs = content_fields(stored)
    if not theirs:
        return "it was not made by `worldloom capture` (its config has no capture settings)"
    # A field added after the dataset was made (e.g. antialias) had its default value there.
    defaults = {f.name: f.default for f in dataclasses.fields(CaptureConfig) if f.default is not dataclasses.MISSING}
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key, defaults.get(key)):
            return f"{key} is {theirs.get(key)!r} in the dataset but {ours.get(key)!r} in this job"
    return None

