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
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import queue
import re
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldloom.actions import FPS
from worldloom.cluster import MAX_WORKERS, NUM_WORKERS_RANGE, num_actors, ray_session
from worldloom.config import check_range, doc, parse_resolution, to_json_dict
from worldloom.errors import UserError
from worldloom.folders import check_out
from worldloom.progress import nothing_done

from . import codecs, minerl, storage, vpt
from .captions import captions_of
from .jobs import job_lock, sweep_orphans
from .resize import resize
from .sources import HASH_PREFIX, Source, file_hash, plan_resume, relative_name, say_kept_truncated
from .storage import SpecMismatch, resize_words
from .video import (
    FPS_RANGE,
    PER_FRAME,
    RESAMPLING,
    VIDEO_SUFFIXES,
    VideoError,
    VideoReader,
    files_under,
    left_out_words,
    video_files,
)

FORMATS = ("vpt", "minerl", "video")
PART_BYTES = 48 << 20  # decoded source pixels per streamed part (640x360: 64 frames)
RESIZE = {"down": "INTER_AREA", "up": "INTER_LINEAR"}
VPT_SUFFIXES = (".mp4", ".jsonl")  # a VPT recording's two files, in any case
VPT_FPS = float(FPS)  # the recorder logs one jsonl line per frame, at the game's 20 Hz
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


# ---- discovery: inputs -> items ----------------------------------------------------------------

class FilesSource(Source):
    """An input made of several files (a VPT pair, a MineRL trajectory): its content is all of them."""

    files: tuple[str, ...] = ()
    checksums: dict[str, str] | None = None

    def content_key(self) -> str:
        if self.key is None:
            self.checksums = {path: file_hash(path) for path in self.files}
            digest = hashlib.blake2b(digest_size=16)
            for path in self.files:
                digest.update(self.checksums[path].encode())
            self.key = HASH_PREFIX + digest.hexdigest()
        return self.key

    def identity(self, name: str) -> dict:
        """Source.identity, plus each file's blake2b checksum."""
        record = super().identity(name)
        record["file_checksums"] = self.checksums
        return record


def files_source(main: Path, files: list[Path], root: Path, name: str) -> FilesSource:
    """A Source named `name`, changed when any of `files` changes size or modification time."""
    stats = [f.stat() for f in files]
    source = FilesSource(origin=str(main.resolve()), name=name, relpath=name,
                         size_bytes=sum(s.st_size for s in stats), mtime_ns=max(s.st_mtime_ns for s in stats),
                         ctime_ns=max(s.st_ctime_ns for s in stats))
    source.files = tuple(str(f.resolve()) for f in files)
    return source


def _inputs(cfg: IngestConfig) -> list[tuple[Path, Path, Path | None]]:
    """(path, the root its name is relative to, its partner file or None) of every input: folders stay
    folders; a .txt list gives a file per line, or a pair (`VIDEO JSONL`) when a line names two."""
    out = []
    for entry in cfg.data:
        path = Path(entry).expanduser()
        if not path.exists():
            raise UserError(f"--data {entry}: no such file or folder")
        if not (path.is_file() and path.suffix.lower() == ".txt"):
            out.append((path, path if path.is_dir() else path.parent, None))
            continue
        for listed in _listed_files(path):
            out.append((listed[0], listed[0].parent, listed[1] if len(listed) == 2 else None))
    return out


def _listed_files(path: Path) -> Iterator[list[Path]]:
    """The files of each line of a .txt list: one file, or a `VIDEO JSONL` pair. Lines are as people
    write them: blank lines and `#` comments skipped, a BOM, CRLF, names with spaces (whole, or quoted),
    `~`; a relative path is relative to the list's folder. UserError naming the line otherwise."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot be read as a text list of files ({err})") from None

    def file(part: str) -> Path:
        return path.parent / Path(part).expanduser()  # an absolute part stays absolute

    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if file(line).exists():  # one file, spaces and all
            yield [file(line)]
            continue
        try:
            parts = shlex.split(line)  # "my recs/a.mp4" "my recs/a.jsonl"
        except ValueError:
            parts = line.split()
        if len(parts) <= 2 and all(file(part).exists() for part in parts):
            yield [file(part) for part in parts]
            continue
        splits = [[file(line[:m.start()]), file(line[m.end():])] for m in re.finditer(r"\s+", line)]
        pair = next((two for two in splits if all(f.exists() for f in two)), None)  # a pair, unquoted spaces
        if pair:
            yield pair
        elif len(parts) > 2:
            raise UserError(f"{path} line {number}: one file or a `VIDEO JSONL` pair per line, got {len(parts)} "
                            "names (quote a name that has spaces)")
        else:  # a pair with one file missing names it; else the line is taken as one name
            found = [file(part).exists() for part in parts]
            missing = file(parts[found.index(False)]) if any(found) else file(line)
            raise UserError(f"{path} line {number}: {missing} does not exist")


def discover(cfg: IngestConfig) -> tuple[list[tuple[dict, Source]], list[dict]]:
    """([(work item, its Source)], [inputs that cannot form an item, with the reason])."""
    found = {"vpt": _discover_vpt, "minerl": _discover_minerl, "video": _discover_video}[cfg.format](_inputs(cfg))
    items, bad, seen = [], [], set()
    for item, source, error in found:
        if error:
            bad.append({"item": item, "ok": False, "error": error})
        elif source.origin not in seen:
            seen.add(source.origin)
            source.made_by = made_by(cfg, item)
            items.append((item, source))
    if not items and not bad:
        what = {"vpt": "VPT recordings (.mp4 + .jsonl)", "minerl": "MineRL trajectories (rendered.npz)",
                "video": f"video files ({', '.join(VIDEO_SUFFIXES)})"}[cfg.format]
        raise UserError(f"--data {' '.join(cfg.data)}: holds no {what}")
    return items, bad


def made_by(cfg: IngestConfig, item: dict) -> str | None:
    """How this job converts the input where a flag decides it (`sources.conversion` reads it back from an
    episode): a VPT recording's recorder version, --recorder-version or its folder's (it sets the GUI mouse
    scaler), so that one ingested under another version is not done. None for MineRL and plain video."""
    if item["kind"] != "vpt":
        return None
    return f"recorder version {cfg.recorder_version or vpt.recorder_version(item['jsonl']) or 'unknown'}"


def _discover_vpt(inputs: list[tuple[Path, Path, Path | None]]):
    pairs: dict[Path, tuple[Path, Path, Path]] = {}  # stem path -> (root, video, jsonl)
    for path, root, partner in inputs:
        if partner is not None:  # a listed pair: the files may have different names
            video, jsonl = (path, partner) if path.suffix.lower() != ".jsonl" else (partner, path)
            pairs[video.with_suffix("")] = (root, video, jsonl)
            continue
        files = files_under(path) if path.is_dir() else [path]
        siblings = _by_folded_stem(files if path.is_dir() else [p for p in path.parent.iterdir() if p.is_file()])
        for f in files:
            if f.suffix.lower() in VPT_SUFFIXES or not path.is_dir():
                video, jsonl = _vpt_pair(f, siblings)
                pairs.setdefault(video.with_suffix(""), (root, video, jsonl))
    for stem, (root, video, jsonl) in sorted(pairs.items()):
        name = relative_name(stem, root)
        item = {"kind": "vpt", "source": str(video if video.exists() else jsonl), "video": str(video), "jsonl": str(jsonl)}
        if not jsonl.is_file():
            yield item, None, (f"{video}: no {jsonl.name} beside it (a VPT recording is an .mp4 and a .jsonl of the same "
                               "name); for plain videos without actions pass --format video")
        elif not video.is_file():
            yield item, None, f"{jsonl}: no {video.name} beside it (a VPT recording is an .mp4 and a .jsonl of the same name)"
        else:
            yield item, files_source(video, [video, jsonl], root, name), None


def _by_folded_stem(files: list[Path]) -> dict[tuple[Path, str], list[Path]]:
    """The VPT files (.mp4, .jsonl in any case) among `files`, by (folder, name without suffix, lower case)."""
    out: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        if f.suffix.lower() in VPT_SUFFIXES:
            out.setdefault((f.parent, f.stem.lower()), []).append(f)
    return out


def _vpt_pair(f: Path, siblings: dict[tuple[Path, str], list[Path]]) -> tuple[Path, Path]:
    """(video, jsonl) of the recording `f` belongs to: the same name with .mp4 and .jsonl, matched
    regardless of case when its folder holds one of each under that name (`REC.MP4` beside `rec.jsonl`,
    as copies through Windows, FAT drives and cameras leave them); else the exact names."""
    group = siblings.get((f.parent, f.stem.lower()), [])
    videos = [p for p in group if p.suffix.lower() == ".mp4"]
    jsonls = [p for p in group if p.suffix.lower() == ".jsonl"]
    if len(videos) == 1 and len(jsonls) == 1:
        return videos[0], jsonls[0]
    video = f if f.suffix.lower() == ".mp4" else f.parent / (f.stem + ".mp4")
    return video, f if f.suffix.lower() == ".jsonl" else f.parent / (f.stem + ".jsonl")


def _discover_minerl(inputs: list[tuple[Path, Path, Path | None]]):
    folders: dict[Path, Path] = {}
    for path, root, _ in inputs:
        if path.is_dir():
            # a folder with either main file is a trajectory: one missing its npz (a partial download) is
            # reported, never passed over in silence
            names = (minerl.NPZ_NAME, minerl.VIDEO_NAME)
            hits = [path] if any((path / n).exists() for n in names) else sorted({p.parent for p in files_under(path)
                                                                                  if p.name in names})
            for folder in hits:
                folders.setdefault(folder, root if folder != path else path.parent)
        else:
            folders.setdefault(path.parent, path.parent.parent)
    for folder, root in sorted(folders.items()):
        video, npz, meta = folder / minerl.VIDEO_NAME, folder / minerl.NPZ_NAME, folder / minerl.METADATA_NAME
        item = {"kind": "minerl", "source": str(folder), "video": str(video), "npz": str(npz), "metadata": str(meta)}
        missing = [p.name for p in (video, npz) if not p.is_file()]
        if missing:
            yield item, None, f"{folder}: no {' and no '.join(missing)} (a MineRL v0 trajectory folder holds " \
                              f"{minerl.VIDEO_NAME}, {minerl.NPZ_NAME} and {minerl.METADATA_NAME})"
            continue
        files = [video, npz] + ([meta] if meta.is_file() else [])
        yield item, files_source(folder, files, root, relative_name(folder, root)), None


def _discover_video(inputs: list[tuple[Path, Path, Path | None]]):
    inputs = [(p, root, None) for path, root, partner in inputs for p in (path, partner) if p is not None]
    for path, root, _ in inputs:
        files, left_out = video_files(path) if path.is_dir() else ([path], [])
        if left_out:  # never silently: a camera's clips under a suffix not listed would be missing from the data
            print(f"dataset ingest: {left_out_words(path, left_out)}", file=sys.stderr)
        for f in files:
            name = relative_name(f, root)
            yield ({"kind": "video", "source": str(f), "video": str(f)},
                   files_source(f, [f], root, name), None)


# ---- frames ------------------------------------------------------------------------------------

def part_steps(height: int, width: int) -> int:
    """Steps per streamed part: about PART_BYTES of stored pixels, a multiple of 32 (h264 chunks), 32..256."""
    steps = PART_BYTES // (height * width * 3)
    return int(min(256, max(32, steps // 32 * 32)))


class Prefetch:
    """Iterate an iterator in a background thread, `depth` items ahead. Ingest runs its whole frame stage
    there (decode, convert, cursor, resize: PyAV and the resize kernel release the GIL) and hands over
    finished parts, so the main thread's encoding and Parquet writes overlap it; one hand-over per
    part, not per frame (per frame, the queue cost about 5% of ingest's CPU time)."""

    _END = object()

    def __init__(self, items: Iterator, depth: int = 1) -> None:
        self.queue: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(items,), daemon=True, name="ingest-decode")
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(err)

    def __iter__(self) -> Iterator:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _parts(reader, size: tuple[int, int] | None, limit: int | None, first: int, draw,
           num: int) -> Iterator[tuple[int, np.ndarray]]:
    """stored_parts' frame stage: (first step, frames (n, H, W, 3)) of at most `num` steps."""
    batch: list[np.ndarray] = []
    start = first
    for step, frame in enumerate(reader.steps()):
        if step < first or (limit is not None and step >= limit):
            continue
        if draw is not None:
            draw(step, frame)
        batch.append(resize(frame, size))
        if len(batch) == num:
            yield start, np.stack(batch)
            start, batch = start + num, []
    if batch:
        yield start, np.stack(batch)


def stored_parts(reader, size: tuple[int, int] | None, limit: int | None = None, first: int = 0,
                 draw=None) -> Iterator[tuple[int, np.ndarray]]:
    """(first step, frames (n, H, W, 3)) of the reader's steps [first, limit), each drawn on at the source
    size by `draw(step, frame)` when given (in the decode thread, in step order), then resized: parts
    of `part_steps` steps, made one part ahead in a thread. Steps past `limit` are decoded (the
    report counts them) and dropped."""
    report = reader.report
    height, width = size or (report.height, report.width)
    with Prefetch(_parts(reader, size, limit, first, draw, part_steps(height, width))) as parts:
        yield from parts


def decode_summary(report) -> dict:
    data = report.to_json()
    return {k: data[k] for k in ("backend", "container", "codec", "timestamps", "decoded_frames", "expected_frames",
                                 "truncated", "decode_errors", "ffmpeg_errors", "ffmpeg_last_error", "tried",
                                 "video_stream", "num_video_streams")}


# ---- the worker ----------------------------------------------------------------------------------

class Ingester:
    """Ingests items into its own shards; a plain class, wrapped by `ray.remote` for the pool."""

    def __init__(self, cfg: IngestConfig, job_config: dict) -> None:
        self.cfg, self.job_config = cfg, job_config
        self.writers: dict[tuple, object] = {}

    def _writer(self, height: int, width: int, fps: float, item: dict):
        from .writer import DatasetWriter

        if self.cfg.size is not None:
            height, width = self.cfg.size
        key = (height, width, fps)
        if key not in self.writers:
            try:
                self.writers[key] = DatasetWriter(self.cfg.out, height=height, width=width, fps=fps, codec=self.cfg.codec,
                                                  config=self.job_config, autocommit=False)
            except SpecMismatch as err:
                have = err.dataset
                hint = "" if self.cfg.size else f", or pass --resolution {have.width}x{have.height} to store every input at its size"
                raise UserError(f"{item['source']}: {err}{hint}") from None
        self.writers[key].release_ids(item["replaces"])  # this item's episode replaces them at commit
        return self.writers[key]

    def ingest(self, item: dict) -> dict:
        """Ingest one item; returns its shards (JSON, to commit) or the error that skipped it."""
        warnings: list[str] = []
        try:
            num_steps = {"vpt": self._vpt, "minerl": self._minerl, "video": self._video}[item["kind"]](item, warnings)
        except Exception as err:  # noqa: BLE001 - one bad item is reported and skipped, never ends the job
            for writer in self.writers.values():
                writer.abort()
            self.writers.clear()  # shards it finished for this item stay uncommitted: never part of the data
            message = str(err) if isinstance(err, (UserError, VideoError)) else f"{type(err).__name__}: {err}"
            if not any(item.get(k) and item[k] in message for k in ("source", "video", "jsonl", "npz")):
                message = f"{item['source']}: {message}"
            return {"item": item, "ok": False, "error": message, "shards": []}
        shards = [info.to_json() for writer in self.writers.values() for info in writer.flush()]
        return {"item": item, "ok": True, "num_steps": num_steps, "shards": shards, "warnings": warnings}

    # -- VPT: mp4 + jsonl ---------------------------------------------------------------------------
    def _vpt(self, item: dict, warnings: list[str]) -> int:
        lines, notes = vpt.parse_jsonl(item["jsonl"])
        if notes["partial_last_line"]:
            warnings.append(f"{item['jsonl']}: its last line is cut off (the recording stopped mid-write): "
                            f"read the {len(lines)} whole lines before it")
        version = self.cfg.recorder_version or vpt.recorder_version(item["jsonl"])
        steps = vpt.convert(lines, version)
        if version is None and (steps.gui_open & steps.camera.any(1)).any():  # the scaler may be 0.5 or 2, unsaid
            warnings.append(f"{item['jsonl']}: recorder version unknown (its folder "
                            f"{Path(item['jsonl']).parent.name!r} is not one, as in VPT's <version>/<name> layout): "
                            f"{int((steps.gui_open & steps.camera.any(1)).sum())} mouse moves with a GUI open kept at "
                            "scale 1, where 5.7-5.8 need 0.5 and 6.7-6.9 need 2 (pass --recorder-version)")
        captions = captions_of(steps.state, steps.buttons, item["name"], VPT_FPS)  # from the jsonl's state and keys
        with VideoReader(item["video"], fps=VPT_FPS, threads=self.cfg.threads, timing="frames") as reader:
            report = reader.report
            writer = self._writer(report.height, report.width, VPT_FPS, item)
            cursors = [0]

            def draw(step: int, frame: np.ndarray) -> None:  # at the source size, as VPT draws it
                cursors[0] += vpt.draw_cursors(frame[None], steps, step)

            def parts() -> Iterator[dict]:
                # frames after the last jsonl line are decoded (counted) and dropped, as VPT ignores them
                for start, frames in stored_parts(reader, self.cfg.size, steps.num_steps, draw=draw):
                    yield {"frames": frames, **steps.part(start, start + len(frames)),
                           "caption": None if captions is None else captions[start : start + len(frames)]}
                self._check_truncated(item["video"], report)

            def env_config() -> dict:
                kept = min(report.num_steps, steps.num_steps)
                if report.num_steps != steps.num_steps:
                    warnings.append(f"{item['source']}: the video has {report.num_steps} frames and the jsonl "
                                    f"{steps.num_steps} lines: kept the first {kept} steps (frame i pairs with line i)")
                if steps.counts["unknown_keys"]:
                    warnings.append(f"{item['jsonl']}: ignored keys VPT does not map: "
                                    + ", ".join(f"{k} x{n}" for k, n in sorted(steps.counts["unknown_keys"].items())))
                return self._env_config(item, report, {
                    "format": "vpt", "jsonl": item["jsonl"], "video": item["video"], "recorder_version": version,
                    "gui_mouse_scaler": vpt.gui_scaler(version), "num_jsonl_lines": steps.num_steps,
                    "num_video_frames": report.num_steps, "num_steps": kept, "cursor_frames": cursors[0],
                    "jsonl_passed_over": notes, "conversion": steps.counts, "time": PER_FRAME})

            return writer.add_episode_parts(item["name"], parts(), label_source="env", env="vpt",
                                            env_config=env_config, player="human", split=None)

    # -- MineRL v0: recording.mp4 + rendered.npz + metadata.json -------------------------------------
    def _minerl(self, item: dict, warnings: list[str]) -> int:
        npz = minerl.read_npz(item["npz"])
        steps = minerl.convert(npz, item["npz"])
        captions = captions_of(steps.state, steps.buttons, item["name"], VPT_FPS)  # inventory and held item only
        meta = _read_json(item["metadata"]) if Path(item["metadata"]).is_file() else {}
        with VideoReader(item["video"], fps=VPT_FPS, threads=self.cfg.threads, timing="frames") as reader:
            report = reader.report
            count = meta.get("true_video_frame_count") if isinstance(meta.get("true_video_frame_count"), int) else None
            count = count or report.listed_frames
            skip = minerl.first_frame(steps.num_actions, count)
            writer = self._writer(report.height, report.width, VPT_FPS, item)

            def parts() -> Iterator[dict]:
                for start, frames in stored_parts(reader, self.cfg.size, skip + steps.num_actions, first=skip):
                    t = start - skip  # step t shows state t: video frame skip + t
                    part = {"frames": frames, **steps.part(t, t + len(frames)),
                            "caption": None if captions is None else captions[t : t + len(frames)]}
                    if t + len(frames) == steps.num_actions:
                        part["terminated"] = np.arange(t, t + len(frames)) == steps.num_actions - 1
                    yield part
                self._check_truncated(item["video"], report)

            def env_config() -> dict:
                states = max(0, report.num_steps - skip)
                kept = min(states, steps.num_actions)
                if count is not None and report.num_steps != count or states < steps.num_actions + 1:
                    warnings.append(f"{item['source']}: {minerl.VIDEO_NAME} decodes {report.num_steps} frames "
                                    f"(metadata: {count}), {minerl.NPZ_NAME} has {steps.num_actions} actions and "
                                    f"{steps.num_actions + 1} states: kept {kept} steps")
                for name, n in sorted(steps.counts["unmapped_action_steps"].items()):
                    if n:
                        warnings.append(f"{item['npz']}: {n} steps used action {name!r}, which has no VPT key (not mapped)")
                return self._env_config(item, report, {
                    "format": "minerl", "environment": meta.get("environment") or Path(item["source"]).parent.name,
                    "metadata": meta, "num_actions": steps.num_actions, "true_video_frame_count": count,
                    "num_video_frames": report.num_steps, "first_frame": skip, "num_steps": kept,
                    "conversion": steps.counts, "time": PER_FRAME})

            env = "minerl:" + Path(item["source"]).parent.name
            return writer.add_episode_parts(item["name"], parts(), label_source="env", env=env, env_config=env_config,
                                            player="human", split=None)

    # -- any video: frames only ----------------------------------------------------------------------
    def _video(self, item: dict, warnings: list[str]) -> int:
        with VideoReader(item["video"], fps=self.cfg.fps, threads=self.cfg.threads) as reader:
            report = reader.report
            writer = self._writer(report.height, report.width, reader.fps, item)

            def parts() -> Iterator[dict]:
                for _, frames in stored_parts(reader, self.cfg.size):
                    yield {"frames": frames}
                self._check_truncated(item["video"], report)

            def env_config() -> dict:
                warnings.extend(f"{item['source']}: {line}" for line in report.warnings())
                return self._env_config(item, report, {"format": "video", "fps": reader.fps,
                                                       "source_fps": report.header_fps, "time_resampling": RESAMPLING})

            return writer.add_episode_parts(item["name"], parts(), label_source="none", env="video",
                                            env_config=env_config, split=None)

    def _check_truncated(self, path: str, report) -> None:
        if report.truncated and not self.cfg.keep_truncated:
            raise VideoError(f"{path}: truncated: {report.truncation()}; skipped (re-download it, or pass "
                             "--keep-truncated to keep what decodes)")

    def _env_config(self, item: dict, report, extra: dict) -> dict:
        return {**extra, "source": item["source"], "source_files": item["files"], "source_identity": item["identity"],
                "source_size": [report.width, report.height],
                "resize": None if self.cfg.size is None or self.cfg.size == (report.height, report.width) else
                {"from": [report.width, report.height], "to": [self.cfg.size[1], self.cfg.size[0]],
                 "interpolation": RESIZE["down"] if self.cfg.size[0] <= report.height and self.cfg.size[1] <= report.width
                 else RESIZE["up"]},
                "decode": decode_summary(report), "truncated": report.truncated}


def resizes_of(shards: list[dict]) -> list[str]:
    """The resizes of the episodes in `shards` (their env_config's `resize`), in words (`resize_words`)."""
    words = []
    for row in (row for shard in shards for row in shard["episodes"]):
        resize = json.loads(row["env_config"] or "{}").get("resize")
        if resize:
            (w0, h0), (w1, h1) = resize["from"], resize["to"]
            words.append(resize_words((h0, w0), (h1, w1)))
    return words


def _read_json(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # -sig: a BOM is not part of the JSON
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a JSON object expected, got {type(data).__name__}")
    return data


# ---- the driver --------------------------------------------------------------------------------

def run_items(cfg: IngestConfig, items: list[dict], job_config: dict) -> Iterator[dict]:
    """Yield each item's result, in this process or from a pool of Ray actors."""
    if cfg.num_workers == 1 or len(items) <= 1:
        ingester = Ingester(cfg, job_config)
        yield from (ingester.ingest(item) for item in items)
        return
    import ray
    from ray.util import ActorPool

    with ray_session(cfg.address, cfg.num_workers or None):  # the pipeline's session, or a local one on loopback
        remote = ray.remote(Ingester).options(num_cpus=1, max_restarts=1)
        actor_cfg = dataclasses.replace(cfg, threads=cfg.threads or 1)  # one CPU each: never oversubscribe
        actors = [remote.remote(actor_cfg, job_config) for _ in range(min(num_actors(cfg.num_workers), len(items)))]
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
    with job_lock([cfg.out], "dataset ingest"):
        run_token, started_at = uuid.uuid4().hex[:6], time.time() - 1.0  # 1 s of clock skew
        summary = _ingest_locked(cfg, found, bad)
        # Last, under the lock: shards and temporary files of a killed earlier run (or of items
        # that failed in this one) are in no manifest: deleted (datasets/jobs.py).
        summary["num_orphans_removed"] = sweep_orphans(cfg.out, run_token, started_at)
    if summary["failed"] and not summary["ingested"] and not summary["skipped_done"]:
        raise UserError(nothing_done("ingested", summary))
    return summary


def fit_to_out(cfg: IngestConfig) -> IngestConfig:
    """`cfg` with --codec, where unset, the existing --out dataset's (raw for a new one). UserError when --resolution,
    --codec or the step rate (--fps of video; VPT's and MineRL's 20) differs from what --out stores: the inputs
    already in it would be skipped as done, in their old kind of frame, and every new one refused."""
    manifest = storage.read_manifest(storage.resolve(cfg.out))
    if manifest is None:
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

    todo, num_done, unreadable = plan_resume(cfg.out, found, keep_truncated=cfg.keep_truncated)
    say_kept_truncated("dataset ingest", cfg.out, todo)
    redone = [item for item in todo if item["reason"].startswith("made by ")]
    if redone:  # said before the work: their episodes are replaced as each is ingested again
        print(f"dataset ingest: {len(redone)} input(s) in {cfg.out} were converted otherwise (e.g. {redone[0]['source']}: "
              f"{redone[0]['reason'].removeprefix('made by ')}, now {made_by(cfg, redone[0])}): ingested again, their "
              "episodes replaced (give another --out to keep both)", file=sys.stderr)
    job_config = job_config_of(cfg)
    summary = {"out": cfg.out, "format": cfg.format, "num_items": len(found) + len(bad), "skipped_done": num_done,
               "ingested": [], "replaced": [], "failed": [], "warnings": [], "num_steps": 0}
    results = tqdm(run_items(cfg, todo, job_config), total=len(todo), desc="dataset ingest", unit="item",
                   disable=not todo)  # no "0item" bar after the lines of inputs that could not start
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
