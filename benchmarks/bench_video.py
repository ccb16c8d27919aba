"""Video reading speed: `worldloom.datasets.video` beside a bare OpenCV and a bare PyAV decode loop.

    python benchmarks/bench_video.py                      # 128x128 and 640x360 H.264, 600 frames each
    python benchmarks/bench_video.py --frames 300 --json out.json

Every reader decodes the same mp4 to RGB uint8 arrays, one thread, in the same process; the
figure is frames per CPU second of this process (a shared machine slows all of them alike), best
of `--repeats`. The peers are the loops a user would write: `cv2.VideoCapture.read` + BGR->RGB,
and PyAV's `frame.to_ndarray(format="rgb24")`. Ours adds timestamps, the step clock and the
decode report on top of a PyAV decode with a reused reformatter (or OpenCV, its fallback).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from worldloom.datasets.video import VideoReader
from worldloom.io import json_text


def write_clip(path: Path, width: int, height: int, num_frames: int) -> Path:
    """A moving blurred texture as H.264 (yuv420p, 30 fps): camera-like footage, not flat game art."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (height, width + 4 * num_frames, 3), dtype=np.uint8), (5, 5), 0)
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[:, 4 * i:4 * i + width]), format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def bare_opencv(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            return n
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        n += 1


def bare_pyav(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return sum(1 for frame in container.decode(stream) if frame.to_ndarray(format="rgb24") is not None)


def ours(backend: str):
    def read(path: Path) -> int:
        with VideoReader(path, threads=1, backends=(backend,)) as reader:
            return sum(1 for _ in reader.steps())
    return read


def frames_per_cpu_s(fn, path: Path, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.process_time()
        n = fn(path)
        best = max(best, n / (time.process_time() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    readers = {"worldloom (PyAV)": ours("pyav"), "worldloom (OpenCV fallback)": ours("opencv"),
               "bare OpenCV (peer)": bare_opencv, "bare PyAV to_ndarray (peer)": bare_pyav}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in ((128, 128), (640, 360)):
            path = write_clip(Path(tmp) / f"clip{width}.mp4", width, height, args.frames)
            rates = {name: frames_per_cpu_s(fn, path, args.repeats) for name, fn in readers.items()}
            results[f"{width}x{height}"] = rates
            peer = rates["bare OpenCV (peer)"]
            print(f"{width}x{height} H.264, {args.frames} frames (frames per CPU second, best of {args.repeats}):")
            for name, rate in rates.items():
                print(f"  {name:30s} {rate:8.0f}   {rate / peer:.2f}x bare OpenCV")
    if args.json:
        Path(args.json).write_text(json_text(results, indent=2))


if __name__ == "__main__":
    main()
