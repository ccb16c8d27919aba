"""Read plain video files (mp4 and whatever OpenCV decodes) as RGB frames at a chosen step rate.

    info = probe_video("clip.mp4")                           # VideoInfo(fps, num_frames, height, width)
    for start, frames in read_chunks("clip.mp4", chunk_steps=2400, fps=20):   # (n, H, W, 3) uint8 RGB
        ...

Frames are never changed here. When the video's frame rate differs from the wanted step rate,
steps pick the nearest source frame in time (frames dropped or repeated, never blended), so a
30 fps video becomes 20 steps per second of original frames; the mapping is recorded by the
caller. Corrupt, empty and undecodable files raise `VideoError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".gif")


class VideoError(ValueError):
    """A video file that cannot be read: the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int  # as the container reports it (may be approximate)
    height: int
    width: int


def _open(path: str | Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open this file (corrupt, or not a video format it decodes)")
    return cap


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, frame count and size of a video; reads the first frame to prove it decodes."""
    cap = _open(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"{path}: no frame could be decoded (corrupt, truncated or zero-length video)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        return VideoInfo(fps=float(fps) if fps and fps > 0 else 20.0,
                         num_frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                         height=int(frame.shape[0]), width=int(frame.shape[1]))
    finally:
        cap.release()


def source_index(step: int, video_fps: float, fps: float) -> int:
    """The source frame shown at `step` when the video's `video_fps` is resampled to `fps` steps/s."""
    return int(round(step * video_fps / fps))


def read_chunks(path: str | Path, chunk_steps: int, fps: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first step, frames (n, H, W, 3) uint8 RGB) chunks of at most `chunk_steps` steps."""
    info = probe_video(path)
    cap = _open(path)
    want_fps = fps or info.fps
    try:
        chunk: list[np.ndarray] = []
        step, first, src, last = 0, 0, -1, None
        while True:
            target = source_index(step, info.fps, want_fps)
            while src < target:  # decode up to the frame this step shows
                ok, frame = cap.read()
                if not ok:
                    break
                src, last = src + 1, frame
            if src < target or last is None:
                break  # the video ended
            chunk.append(cv2.cvtColor(last, cv2.COLOR_BGR2RGB))
            step += 1
            if len(chunk) == chunk_steps:
                yield first, np.stack(chunk)
                chunk, first = [], step
        if chunk:
            yield first, np.stack(chunk)
        if step == 0:
            raise VideoError(f"{path}: no frame could be decoded")
    finally:
        cap.release()


def decode_all(path: str | Path) -> np.ndarray:
    """Every frame of a video, (N, H, W, 3) uint8 RGB: the decode-only baseline of the benchmark."""
    return np.concatenate([frames for _, frames in read_chunks(path, 1 << 30)])
