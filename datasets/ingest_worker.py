"""The worker of `worldloom dataset ingest`: `Ingester` turns one work item (a VPT recording, a MineRL
trajectory, a video) into an episode in its own shards, and the frame stage it streams through.

    from worldloom.datasets.ingest import Ingester
    result = Ingester(cfg, job_config_of(cfg)).ingest(item)   # an item plan_resume left to do: its shards, or the error

Frames are decoded, converted (VPT's cursor drawn at the source size), resized and handed over in
parts of `part_steps` steps, made one part ahead in a thread (`Prefetch`), so a long recording never
sits in memory whole. The driver (`worldloom.datasets.ingest`) runs Ingesters here or as Ray actors
and commits their shards.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worldloom.actions import FPS
from worldloom.errors import UserError

from . import minerl, vpt
from .captions import captions_of
from .jobs import raise_if_output_failed
from .resize import resize
from .storage import MAX_SIDE, MIN_SIDE, SpecMismatch
from .video import PER_FRAME, RESAMPLING, VideoError, VideoReader
from .video_backends import listed_shown_frames
from .video_report import SUMMARY_KEYS
from .writer import abort_writers

if TYPE_CHECKING:
    from .ingest import IngestConfig

PART_BYTES = 48 << 20  # decoded source pixels per streamed part (640x360: 64 frames)
RESIZE = {"down": "INTER_AREA", "up": "INTER_LINEAR"}
VPT_FPS = float(FPS)  # the recorder logs one jsonl line per frame, at the game's 20 Hz


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
    return {k: data[k] for k in SUMMARY_KEYS}


def decoded_warnings(item: dict, report, warnings: list[str]) -> None:
    """Add what the decode of `item`'s video found (damage, skipped packets, frames missing from a recording
    logged per frame: `DecodeReport.warnings`) to `warnings`. Every format says them: until 2026-12-07 a VPT
    or MineRL video said none, so a recording with a frame missing paired every later action with the
    frame after its own, without a word (a new-user trial)."""
    warnings.extend(f"{item['source']}: {line}" for line in report.warnings())


def stored_captions_of(steps, num: int, name: str) -> list[str | None] | None:
    """The `caption` column of a recording's first `num` steps (those its video gives), made from
    their state and keys alone, as `caption_episode` makes it from the stored dataset. Until 2026-12-07
    the whole jsonl (npz) was captioned, so where the video was shorter the last clip was described by
    lines past its last stored step (a new-user trial). A video that decodes fewer frames than its
    container lists (damage) still stores captions made for the listed ones."""
    return captions_of({k: v[:num] for k, v in steps.state.items()}, None if steps.buttons is None else steps.buttons[:num],
                       name, VPT_FPS)


# ---- the worker ----------------------------------------------------------------------------------

class Ingester:
    """Ingests items into its own shards; a plain class, wrapped by `ray.remote` for the pool."""

    def __init__(self, cfg: IngestConfig, job_config: dict, on_steps=None, environ: dict[str, str] | None = None) -> None:
        """`on_steps(n)`, where given, hears of every n steps stored (progress inside a long input); `environ`:
        the driver's object-store credentials, for an actor on another machine (store_credentials)."""
        os.environ.update(environ or {})
        self.cfg, self.job_config = cfg, job_config
        self.writers: dict[tuple, object] = {}
        self.on_steps = on_steps or (lambda n: None)

    def _counted(self, parts: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        """`parts` as they are, each one's steps told to `on_steps`."""
        for start, frames in parts:
            self.on_steps(len(frames))
            yield start, frames

    def _writer(self, height: int, width: int, fps: float, item: dict):
        from .writer import DatasetWriter

        if self.cfg.size is not None:
            height, width = self.cfg.size
        elif not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise UserError(f"{item['source']}: frames {width}x{height}, and a dataset stores {MIN_SIDE} to {MAX_SIDE} "
                            f"pixels a side: pass --resolution WxH (e.g. --resolution 64x64) to store them resized")
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
        except BaseException as err:  # noqa: BLE001 - one bad item is reported and skipped, never ends the job
            abort_writers(self.writers)  # its finished shards stay uncommitted, its open one's file goes
            if not isinstance(err, Exception):  # Ctrl-C, SystemExit: on their way, nothing left behind
                raise
            raise_if_output_failed(err, self.cfg.out, "inputs ingested")  # the output's disk: the job stops
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
        with VideoReader(item["video"], fps=VPT_FPS, threads=self.cfg.threads, timing="frames") as reader:
            report = reader.report
            # from the jsonl's state and keys, of the steps the video will give (frame i pairs with line i)
            captions = stored_captions_of(steps, min(steps.num_steps, listed_shown_frames(item["video"], report) or steps.num_steps),
                                          item["name"])
            writer = self._writer(report.height, report.width, VPT_FPS, item)
            cursors = [0]

            def draw(step: int, frame: np.ndarray) -> None:  # at the source size, as VPT draws it
                cursors[0] += vpt.draw_cursors(frame[None], steps, step)

            def parts() -> Iterator[dict]:
                # frames after the last jsonl line are decoded (counted) and dropped, as VPT ignores them
                for start, frames in self._counted(stored_parts(reader, self.cfg.size, steps.num_steps, draw=draw)):
                    yield {"frames": frames, **steps.part(start, start + len(frames)),
                           "caption": None if captions is None else captions[start : start + len(frames)]}
                self._check_truncated(item["video"], report)

            def env_config() -> dict:
                decoded_warnings(item, report, warnings)
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
        meta = _read_json(item["metadata"]) if Path(item["metadata"]).is_file() else {}
        with VideoReader(item["video"], fps=VPT_FPS, threads=self.cfg.threads, timing="frames") as reader:
            report = reader.report
            stated = meta.get("true_video_frame_count") if isinstance(meta.get("true_video_frame_count"), int) else None
            # the video's own frame table over metadata.json where they disagree: the last N + 1 frames of the video
            # are the states (until 2026-12-07 a wrong metadata count set every action off by the difference)
            # the frames a player shows: an edit list's hidden ones left out (until 2026-12-07 they were counted,
            # so a recording cut with `ffmpeg -ss -c copy` had every action paired with a frame that many later)
            listed = listed_shown_frames(item["video"], report)
            count = listed or stated
            if stated is not None and listed and stated != listed:
                warnings.append(f"{item['source']}: {minerl.METADATA_NAME} says {stated} video frames, "
                                f"{minerl.VIDEO_NAME} lists {listed}: aligned by the video's")
            skip = minerl.first_frame(steps.num_actions, count)
            # inventory and held item only, of the steps the video will give (step t shows frame skip + t)
            captions = stored_captions_of(steps, steps.num_actions if count is None else
                                          max(0, min(steps.num_actions, count - skip)), item["name"])
            writer = self._writer(report.height, report.width, VPT_FPS, item)

            def parts() -> Iterator[dict]:
                for start, frames in self._counted(stored_parts(reader, self.cfg.size, skip + steps.num_actions, first=skip)):
                    t = start - skip  # step t shows state t: video frame skip + t
                    part = {"frames": frames, **steps.part(t, t + len(frames)),
                            "caption": None if captions is None else captions[t : t + len(frames)]}
                    if t + len(frames) == steps.num_actions:
                        part["terminated"] = np.arange(t, t + len(frames)) == steps.num_actions - 1
                    yield part
                self._check_truncated(item["video"], report)

            def env_config() -> dict:
                decoded_warnings(item, report, warnings)
                states = max(0, report.num_steps - skip)
                kept = min(states, steps.num_actions)
                if count is not None and report.num_steps != count or states < steps.num_actions + 1:
                    warnings.append(f"{item['source']}: {minerl.VIDEO_NAME} decodes {report.num_steps} frames "
                                    f"(metadata: {count}), {minerl.NPZ_NAME} has {steps.num_actions} actions and "
                                    f"{steps.num_actions + 1} states: kept {kept} steps, state 0 at video frame {skip}")
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
                for _, frames in self._counted(stored_parts(reader, self.cfg.size)):
                    yield {"frames": frames}
                self._check_truncated(item["video"], report)

            def env_config() -> dict:
                decoded_warnings(item, report, warnings)
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


def _read_json(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # -sig: a BOM is not part of the JSON
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a JSON object expected, got {type(data).__name__}")
    return data
