"""Ingest speed: `worldloom dataset ingest --format vpt` beside a bare PyAV decode of the same mp4s.

    python benchmarks/bench_ingest.py                       # 4 recordings of 150 frames, 640x360 -> 128x128
    python benchmarks/bench_ingest.py --recordings 8 --frames 300 --rounds 7 --json out.json

The recordings are VPT-format pairs written here: a 640x360 H.264 mp4 (yuv420p, 20 fps, a moving
blurred texture: camera-like footage) and a jsonl in the published format (walking, turning,
attacking, a GUI open 10% of the time, so the cursor is drawn). Ingest does everything the command
does, in this process with one decoder thread: plan (blake2b of every file, for resuming), decode,
jsonl conversion, cursor, resize to 128x128 (INTER_AREA), raw encode, Parquet (zstd) shards and
the commits. The peer decodes the same files to RGB arrays with PyAV (`frame.to_ndarray(format=
"rgb24")`), one thread, and nothing else: the goal is ingest at >= 0.7x the decode-only rate. A
second, stricter line decodes the way ingest's reader does (one reused `VideoReformatter`, which
converts in about 0.15 ms a frame less than `to_ndarray(format=...)`): ingest against its own
decode stage, for information. They alternate for `--rounds` rounds so a busy machine slows all
alike; figures are frames per second of wall time and per CPU second of this process, medians over
the rounds, and each ratio is the median of the per-round ratios. The CPU ratio is the steady one:
on a shared machine the wall clock mostly measures who else ran meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from worldloom.datasets.ingest import IngestConfig, ingest
from worldloom.io import json_text


def write_recording(folder: Path, name: str, num_frames: int, seed: int) -> Path:
    """name.mp4 (640x360) + name.jsonl (one line per frame)."""
    rng = np.random.default_rng(seed)
    width, height = 640, 360
    tex = cv2.GaussianBlur(rng.integers(0, 256, (height, width + 4 * num_frames, 3), dtype=np.uint8), (5, 5), 0)
    video = folder / f"{name}.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[:, 4 * i:4 * i + width]), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    lines = []
    for t in range(num_frames):
        gui = (t // 20) % 10 == 9
        keys = ["key.keyboard.w"] if rng.random() < 0.6 else []
        buttons = [0] if rng.random() < 0.3 else []
        lines.append({"mouse": {"x": float(rng.integers(0, 1280)), "y": float(rng.integers(0, 720)),
                                "dx": float(rng.integers(-20, 21)), "dy": float(rng.integers(-8, 9)),
                                "buttons": buttons, "newButtons": buttons},
                      "keyboard": {"keys": keys, "newKeys": []}, "isGuiOpen": gui, "hotbar": int(t // 50) % 9,
                      "yaw": float(t), "pitch": 0.0, "xpos": 0.5 * t, "ypos": 64.0, "zpos": 0.0, "tick": t,
                      "inventory": [{"type": "oak_log", "quantity": 1 + t // 30}]})
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return video


def decode_only(videos: list[Path]) -> int:
    """The peer: PyAV decode to RGB uint8 arrays, one thread, nothing else."""
    n = 0
    for path in videos:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24")
                n += 1
    return n


def decode_reused(videos: list[Path]) -> int:
    """Decode as ingest's reader does: one thread, one VideoReformatter reused for every frame."""
    from av.video.reformatter import VideoReformatter

    n = 0
    for path in videos:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            reformatter = VideoReformatter()
            for frame in container.decode(stream):
                reformatter.reformat(frame, format="rgb24").to_ndarray()
                n += 1
    return n


def timed(fn) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resolution", default="128")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "recordings" / "10.0"
        src.mkdir(parents=True)
        videos = [write_recording(src, f"rec-{i:012d}-20220101-000000", args.frames, i) for i in range(args.recordings)]
        rows = {"ingest": [], "decode": [], "decode_reused": []}
        for r in range(args.rounds):
            out = Path(tmp) / f"ds{r}"
            cfg = IngestConfig(data=(str(src.parent),), out=str(out), resolution=args.resolution, threads=1)
            for name, fn in (("ingest", lambda cfg=cfg: ingest(cfg)["num_steps"]), ("decode", lambda: decode_only(videos)),
                             ("decode_reused", lambda: decode_reused(videos))):
                n, wall, cpu = timed(fn)
                rows[name].append((n / wall, n / cpu))
            print(f"round {r}: ingest {rows['ingest'][-1][0]:.0f} fps, decode {rows['decode'][-1][0]:.0f} fps (wall)",
                  file=sys.stderr)
    result = {name: {"frames_per_s_wall": statistics.median(v[0] for v in vals),
                     "frames_per_cpu_s": statistics.median(v[1] for v in vals)} for name, vals in rows.items()}
    for peer, key in (("decode", "ratio"), ("decode_reused", "ratio_reused")):
        for i, clock in ((0, "wall"), (1, "cpu")):
            result[f"{key}_{clock}"] = statistics.median(a[i] / b[i] for a, b in zip(rows["ingest"], rows[peer], strict=True))
    total = args.recordings * args.frames
    print(f"{args.recordings} VPT recordings x {args.frames} frames = {total} frames, 640x360 -> {args.resolution}, "
          f"one decoder thread, medians over {args.rounds} alternating rounds:")
    for name, label in (("ingest", "worldloom dataset ingest --format vpt"), ("decode", "PyAV decode only (peer)"),
                        ("decode_reused", "PyAV decode, reused reformatter")):
        print(f"  {label:40s} {result[name]['frames_per_s_wall']:7.0f} frames/s wall  "
              f"{result[name]['frames_per_cpu_s']:7.0f} frames/CPU s")
    print(f"  ingest / decode: {result['ratio_wall']:.2f}x wall, {result['ratio_cpu']:.2f}x CPU (goal >= 0.7x)")
    print(f"  ingest / decode with a reused reformatter: {result['ratio_reused_wall']:.2f}x wall, "
          f"{result['ratio_reused_cpu']:.2f}x CPU (information)")
    if args.json:
        Path(args.json).write_text(json_text(result, indent=2))


if __name__ == "__main__":
    main()
