"""Bring recordings in: VPT contractor data, MineRL v0 trajectories or any video, into a dataset.

    worldloom dataset ingest --format vpt --data recordings/ --out data/vpt --resolution 128
    worldloom dataset ingest --format vpt --data a.mp4 b.jsonl pairs.txt --out data/vpt
    worldloom dataset ingest --format minerl --data MineRLTreechop-v0/ --out data/minerl
    worldloom dataset ingest --format video --data footage/ --out data/footage --fps 20 --num-workers 4

One work item per recording (a VPT mp4 + jsonl pair, a MineRL trajectory folder, a video file),
one episode per item, streamed in parts so a 5-minute 640x360 segment never sits in memory whole.
Items run in this process or on a pool of Ray actors (`--num-workers`); each writes its own
shards and the driver commits them, item by item, with progress. Resuming is by content
(`worldloom.datasets.sources`): an item whose files are unchanged (path, size, mtime and ctime, or the
same bytes elsewhere) is skipped; a changed one is ingested again and replaces its old episode in
one commit. Each episode's `env_config` names its source files, their identity (blake2b of the
bytes), how they decoded and what the conversion changed (`docs/ingest.md`).

VPT and MineRL recordings carry per-frame state (VPT: position, yaw, pitch, GUI, hotbar slot,
inventory, tick; MineRL: inventory, held item): each row also gets its 2 s clip's caption,
made from what is known (datasets/captions.py leaves out a fact whose column is null, e.g.
"walks, then collects oak log"). Plain video knows nothing: its captions are null.

Frames keep the source's size unless `--resolution` names one: INTER_AREA when shrinking,
INTER_LINEAR when growing (recorded in the manifest's config). A bad input (a malformed jsonl
line, a missing partner file, a file that is not video, a video that stops early, an npz without
a required key) is skipped and reported with one line; the rest of the job is kept.

Code: this module holds the job's config and its driver; `ingest_inputs.py` the discovery of work
items, `ingest_worker.py` the worker (`Ingester`) and its frame stage; their public names are
importable from here as well.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from worldloom.cluster import (
    ACTOR_BASE_BYTES,
    MAX_WORKERS,
    NUM_WORKERS_RANGE,
    actors_that_fit,
    num_actors,
    ray_session,
    store_credentials,
)
from worldloom.config import check_range, doc, parse_resolution, to_json_dict
from worldloom.errors import UserError
from worldloom.folders import check_out
from worldloom.progress import StepCount, nothing_done

from . import codecs, storage, vpt
from .ingest_inputs import VPT_SUFFIXES, FilesSource, discover, files_source, made_by
from .ingest_worker import (
    PART_BYTES,
    RESIZE,
    VPT_FPS,
    Ingester,
    Prefetch,
    decode_summary,
    part_steps,
    stored_parts,
)
from .jobs import discard_unused, job_lock, swept, unused
from .sources import plan_resume, retire_duplicates, say_duplicates, say_kept_truncated
from .storage import resize_words
from .video import FPS_RANGE, PER_FRAME, RESAMPLING

__all__ = [
    "FORMATS", "MAX_THREADS", "PART_BYTES", "RESIZE", "SIDE_RANGE", "VPT_FPS", "VPT_SUFFIXES", "FilesSource",
    "IngestConfig", "Ingester", "Prefetch", "decode_summary", "discover", "files_source", "fit_to_out", "ingest",
    "job_config_of", "made_by", "part_steps", "resizes_of", "run_items", "stored_parts",
]

FORMATS = ("vpt", "minerl", "video")
SIDE_RANGE = (16, 4096)  # --resolution: pixels a side a dataset stores (4K at most)
MAX_THREADS = 256


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest, in which format, into where."""

    data: tuple[str, ...] = doc("inputs: folders (searched recursively), files, or .txt lists of files (one per line; "
                                "vpt: `VIDEO JSONL` pairs or either file of a pair; `#` comments)")
    out: str = doc("output dataset directory (resumed if it exists)")
    format: str = doc(f"input format: {', '.join(FORMATS)} (vpt: mp4 + jsonl pairs; minerl: MineRL v0 trajectory "
                      "folders; video: any video, no actions)", "vpt")
    resolution: str | None = doc("store frames at N or WIDTHxHEIGHT pixels (INTER_AREA down, INTER_LINEAR up); "
                                 "unset: the source's size", None)
    fps: float = doc("video format: steps per second (1..240), frames picked by presentation timestamps "
                     "(vpt and minerl store one step per recorded frame)", 20.0)
    codec: str | None = doc(f"frame codec: {', '.join(sorted(codecs.CODECS))} (unset: the --out dataset's, raw for a "
                            "new one)", None)
    recorder_version: str | None = doc("vpt: the recorder version that sets the GUI mouse scaler (default: each "
                                       "recording's folder name, as in the published `<version>/<name>` layout)", None)
    keep_truncated: bool = doc("keep what decodes of a video that stops before its container's end (with a "
                               "warning) instead of skipping it", False)
    num_workers: int = doc("Ray actors (1: ingest in this process; 0: one per CPU of the cluster)", 1)
    address: str | None = doc("Ray cluster to join (HOST:PORT or auto); unset: a local one on loopback", None)
    threads: int = doc("decoder threads per worker (0: FFmpeg's choice)", 0)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"IngestConfig.format must be one of {FORMATS}, got {self.format!r}")
        if not self.data:
            raise ValueError("IngestConfig.data must name at least one folder or file")
        if self.resolution is not None:
            for side in parse_resolution(self.resolution):
                check_range("resolution", side, *SIDE_RANGE, f"pixels a side, N or WIDTHxHEIGHT; got {self.resolution}")
        if self.codec is not None:
            codecs.get_codec(self.codec)
        if self.recorder_version is not None and vpt.version_name(self.recorder_version) is None:
            # anything else would silently mean "no scaler" (1.0): GUI mouse moves off by 2x for 6.7-6.9
            raise ValueError(f"--recorder-version must be a version as VPT's folders name it ({', '.join(vpt.GUI_SCALERS)}, "
                             f"10.0, ...), got {self.recorder_version!r}")
        check_range("fps", self.fps, *FPS_RANGE, "steps per second", integer=False)
        check_range("num_workers", self.num_workers, 0, MAX_WORKERS, f"1: this process; {NUM_WORKERS_RANGE}")
        check_range("threads", self.threads, 0, MAX_THREADS, "0: FFmpeg's choice")

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) to store, or None for the source's size."""
        return None if self.resolution is None else parse_resolution(self.resolution)


# ---- the driver --------------------------------------------------------------------------------

def resizes_of(shards: list[dict]) -> list[str]:
    """The resizes of the episodes in `shards` (their env_config's `resize`), in words (`resize_words`)."""
    words = []
    for row in (row for shard in shards for row in shard["episodes"]):
        resize = json.loads(row["env_config"] or "{}").get("resize")
        if resize:
            (w0, h0), (w1, h1) = resize["from"], resize["to"]
            words.append(resize_words((h0, w0), (h1, w1)))
    return words


# One ingest actor at its peak: the worker (ACTOR_BASE_BYTES) and the parts of a video in flight, one decoding,
# one prefetched, one being written (PART_BYTES each: worldloom.datasets.ingest_worker).
INGEST_ACTOR_BYTES = ACTOR_BASE_BYTES + 3 * PART_BYTES


def run_items(cfg: IngestConfig, items: list[dict], job_config: dict, on_steps=None) -> Iterator[dict]:
    """Yield each item's result, in this process (`on_steps(n)` hearing of the steps stored) or from a
    pool of Ray actors (progress by whole items)."""
    if cfg.num_workers == 1 or len(items) <= 1:
        ingester = Ingester(cfg, job_config, on_steps)
        yield from (ingester.ingest(item) for item in items)
        return
    import ray
    from ray.util import ActorPool

    with ray_session(cfg.address, cfg.num_workers or None):  # the pipeline's session, or a local one on loopback
        remote = ray.remote(Ingester).options(num_cpus=1, max_restarts=1)
        actor_cfg = dataclasses.replace(cfg, threads=cfg.threads or 1)  # one CPU each: never oversubscribe
        environ = store_credentials([*cfg.data, cfg.out])  # a remote cluster's actors have none of their own
        count = actors_that_fit(min(num_actors(cfg.num_workers), len(items)), INGEST_ACTOR_BYTES, "ingest actors",
                                "dataset ingest")
        actors = [remote.remote(actor_cfg, job_config, environ=environ) for _ in range(count)]
        yield from ActorPool(actors).map_unordered(lambda actor, item: actor.ingest.remote(item), items)


def job_config_of(cfg: IngestConfig) -> dict:
    """What the dataset's manifest records about this job."""
    size = cfg.size
    config = {"job": "worldloom dataset ingest", "ingest": to_json_dict(cfg),
              "resize": None if size is None else {"width": size[1], "height": size[0], **RESIZE},
              "time": RESAMPLING if cfg.format == "video" else PER_FRAME}
    if cfg.format == "vpt":
        config["action_conversion"] = {"source": "openai/Video-Pre-Training data_loader.py + json_action_to_env_action",
                                       "degrees_per_pixel": vpt.DEGREES_PER_PIXEL, "gui_scalers": vpt.GUI_SCALERS,
                                       "divergences": "docs/ingest.md"}
    return config


def ingest(cfg: IngestConfig) -> dict:
    """Ingest everything under cfg.data not yet in cfg.out; returns a summary (done, skipped, failed)."""
    check_out(cfg.out, "dataset")
    cfg = fit_to_out(cfg)
    found, bad = discover(cfg)
    # Under the lock: shards and temporary files of a killed earlier run (or of items that failed in this one,
    # or of actors interrupted now) are in no manifest: deleted when the job ends (datasets/jobs.py).
    with job_lock([cfg.out], "dataset ingest"), swept(cfg.out) as sweep:
        discard_unused(cfg.out)  # an empty dataset a failed run left: this run's first input sets the size
        summary = _ingest_locked(cfg, found, bad)
    summary["num_orphans_removed"] = sweep["removed"]
    summary["fps"] = storage.stored_fps(cfg.out)  # its steps in seconds: --fps 10 stores 10 a second, not 20
    if summary["failed"] and not summary["ingested"] and not summary["skipped_done"]:
        raise UserError(nothing_done("ingested", summary))
    return summary


def fit_to_out(cfg: IngestConfig) -> IngestConfig:
    """`cfg` with --codec, where unset, the existing --out dataset's (raw for a new one). UserError when --resolution,
    --codec or the step rate (--fps of video; VPT's and MineRL's 20) differs from what --out stores: the inputs
    already in it would be skipped as done, in their old kind of frame, and every new one refused."""
    manifest = storage.read_manifest(storage.resolve(cfg.out))
    if manifest is None or unused(manifest):  # an empty one is removed under the job lock (discard_unused)
        return cfg if cfg.codec is not None else dataclasses.replace(cfg, codec="raw")
    have = storage.spec_of(manifest)
    if cfg.size is not None and (have.height, have.width) != cfg.size:
        raise UserError(f"--resolution {cfg.resolution}: {cfg.out} stores {have.width}x{have.height} frames (a dataset "
                        f"holds one size); pass --resolution {have.width}x{have.height} to add to it, or give a new --out")
    fps = cfg.fps if cfg.format == "video" else VPT_FPS
    if float(have.fps) != float(fps):
        how = (f"pass --fps {have.fps:g} to add to it" if cfg.format == "video"
               else f"{cfg.format} recordings are stored at {fps:g}")
        raise UserError(f"--fps {fps:g}: {cfg.out} stores {have.fps:g} steps per second (a dataset holds one rate); "
                        f"{how}, or give a new --out")
    if cfg.codec is not None and cfg.codec != have.codec:
        raise UserError(f"--codec {cfg.codec}: {cfg.out} stores {have.codec} frames (a dataset holds one codec); "
                        f"leave --codec out (or pass --codec {have.codec}) to add to it, or give a new --out")
    return dataclasses.replace(cfg, codec=have.codec)


def _ingest_locked(cfg: IngestConfig, found: list, bad: list[dict]) -> dict:
    """Ingest and commit every item not yet in cfg.out (the caller holds the job lock)."""
    from tqdm import tqdm

    from .writer import commit_shards

    todo, num_done, unreadable, duplicates = plan_resume(cfg.out, found, keep_truncated=cfg.keep_truncated)
    say_kept_truncated("dataset ingest", cfg.out, todo)
    say_duplicates("dataset ingest", duplicates)
    redone = [item for item in todo if item["reason"].startswith("made by ")]
    if redone:  # said before the work: their episodes are replaced as each is ingested again
        print(f"dataset ingest: {len(redone)} input(s) in {cfg.out} were converted otherwise (e.g. {redone[0]['source']}: "
              f"{redone[0]['reason'].removeprefix('made by ')}, now {made_by(cfg, redone[0])}): ingested again, their "
              "episodes replaced (give another --out to keep both)", file=sys.stderr)
    job_config = job_config_of(cfg)
    summary = {"out": cfg.out, "format": cfg.format, "num_items": len(found) + len(bad), "skipped_done": num_done,
               "duplicates": duplicates,
               "ingested": [], "replaced": retire_duplicates(cfg.out, duplicates), "failed": [], "warnings": [],
               "num_steps": 0}
    counted_steps = StepCount()  # steps stored, shown beside the items: an hour of video is one item
    results = tqdm(run_items(cfg, todo, job_config, lambda n: counted_steps.add(n, results)), total=len(todo),
                   desc="dataset ingest", unit="item", disable=not todo)  # no "0item" bar after inputs that could not start
    said: set[str] = set()
    # Each item is committed as its result arrives (never a list of all of them first): a Ctrl-C or a
    # kill half way keeps every item finished before it.
    for result in itertools.chain(bad, unreadable, results):
        item = result["item"]
        if result["ok"]:
            commit_shards(cfg.out, result["shards"], replace=item["replaces"])
            for line in sorted(set(resizes_of(result["shards"])) - said):
                said.add(line)
                results.write(f"dataset ingest: {line} (--resolution)", file=sys.stderr)
            summary["ingested"].append(item["name"])
            summary["num_steps"] += result["num_steps"]
            if item["replaces"]:
                summary["replaced"].append({"input": item["source"], "episodes": item["replaces"]})
            for line in result["warnings"]:
                summary["warnings"].append(line)
                results.write(f"dataset ingest: warning: {line}", file=sys.stderr)  # on its own line, not after the bar
        else:
            summary["failed"].append({"input": item["source"], "error": result["error"]})
            if summary["num_items"] > 1:  # the only input's reason is the job's error (nothing_done)
                results.write(f"dataset ingest: skipped: {result['error']}", file=sys.stderr)
    return summary
