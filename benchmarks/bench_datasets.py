"""Dataset format benchmark: codecs on real Crafter frames, and clip loading against mp4 + PyAV.

    python benchmarks/bench_datasets.py                 # ~1 minute, pinned to one core
    python benchmarks/bench_datasets.py --frames 512 --json results.json

Part 1, per codec at 64x64 and 128x128: bytes per frame (whole shard file / frames), write and
read frames/s through `DatasetWriter` / `Dataset.frames`, PSNR against the rendered frames.
Part 2, T=16 clips of 64x64 delivered as torch uint8 tensors `(T, H, W, 3)`: our `ClipStream`
beside the way LeRobot stores video (one mp4 per episode, AV1 through libsvtav1 with a
keyframe every 2 frames, crf 30, yuv420p; LeRobot v3 defaults) decoded with PyAV, seeking to each
clip's first timestamp as LeRobot's `decode_video_frames_pyav` does. Same clips, same order,
same process, one core.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):  # one core: the figures are per core
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from worldloom.datasets import ClipStream, Dataset, DatasetWriter  # noqa: E402
from worldloom.datasets.codecs import CODECS  # noqa: E402

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
cv2.setNumThreads(1)
torch.set_num_threads(1)

EPISODE_STEPS = 128
FPS = 20


def crafter_frames(num: int, size: int, seed: int = 0) -> np.ndarray:
    """`(num, size, size, 3)` uint8 frames of Crafter played by a sticky random policy."""
    import crafter

    env = crafter.Env(size=(size, size), seed=seed)
    rng = np.random.default_rng(seed)
    frames = [env.reset()]
    action = 0
    while len(frames) < num:
        if rng.random() < 0.2:  # sticky actions: walks and looks like play, not noise
            action = int(rng.integers(0, env.action_space.n))
        obs, _, done, _ = env.step(action)
        frames.append(env.reset() if done else obs)
    return np.stack(frames[:num])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def bench_codec(frames: np.ndarray, codec: str, root: Path, repeats: int = 3) -> dict:
    """Best of `repeats` fresh write + full read (the first also warms pyarrow's lazy setup)."""
    num, h, w = frames.shape[:3]
    write_s = read_s = float("inf")
    for k in range(repeats):
        t0 = time.perf_counter()
        with DatasetWriter(root / str(k), h, w, fps=FPS, codec=codec) as writer:
            for e in range(num // EPISODE_STEPS):
                writer.add_episode(f"ep-{e:03d}", frames[e * EPISODE_STEPS : (e + 1) * EPISODE_STEPS])
        write_s = min(write_s, time.perf_counter() - t0)
        ds = Dataset(root / str(k))
        t0 = time.perf_counter()
        decoded = np.concatenate([ds.frames(eid).frames for eid in ds.episode_ids])
        read_s = min(read_s, time.perf_counter() - t0)
    size = sum(s["size_bytes"] for s in ds.manifest["shards"])
    return {"codec": codec, "size": f"{w}x{h}", "bytes_per_frame": size / num, "write_fps": num / write_s,
            "read_fps": num / read_s, "psnr_db": psnr(decoded, frames[: len(decoded)]), "lossless": CODECS[codec].lossless}


def write_mp4(frames: np.ndarray, path: Path, codec: str) -> None:
    """One episode to mp4 with LeRobot v3's encoder settings (g=2, crf=30, yuv420p)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": "2", "crf": "30"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def decode_clip_pyav(path: Path, start: int, clip_len: int) -> torch.Tensor:
    """LeRobot's pyav path: open, seek to the keyframe before the first timestamp, decode forward,
    keep frames whose timestamps fall in the clip (tolerance half a frame)."""
    first_ts, last_ts = start / FPS, (start + clip_len - 1) / FPS
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        container.seek(int(first_ts / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            ts = float(frame.pts * stream.time_base)
            if ts < first_ts - 0.5 / FPS:
                continue
            out.append(frame.to_ndarray(format="rgb24"))
            if ts >= last_ts - 0.5 / FPS:
                break
    return torch.from_numpy(np.stack(out))  # (T, H, W, 3) uint8


def stream_clips(root: Path, clip_len: int, seconds: float) -> tuple[float, list[tuple[str, int]]]:
    """(clips/s, the clips in order) of ClipStream over `root`, epochs until `seconds` pass."""
    stream = ClipStream(root, clip_len=clip_len, seed=0)
    clips, elapsed, epoch, order = 0, 0.0, 0, []
    while elapsed < seconds:
        stream.set_epoch(epoch)
        t0 = time.perf_counter()
        items = list(stream)
        elapsed += time.perf_counter() - t0
        clips += len(items)
        order += [(it["episode_id"], int(it["start"])) for it in items]
        epoch += 1
    return clips / elapsed, order


def bench_loaders(frames: np.ndarray, tmp: Path, clip_len: int, seconds: float) -> list[dict]:
    rows = []
    order = []
    for codec in ("raw", "h264"):
        root = tmp / f"stream-{codec}"
        with DatasetWriter(root, 64, 64, fps=FPS, codec=codec) as writer:
            for e in range(len(frames) // EPISODE_STEPS):
                writer.add_episode(f"ep-{e:03d}", frames[e * EPISODE_STEPS : (e + 1) * EPISODE_STEPS])
        size = sum(s["size_bytes"] for s in Dataset(root).manifest["shards"]) / len(frames)
        rate, clips = stream_clips(root, clip_len, seconds)
        order = order or clips
        rows.append({"loader": f"ClipStream ({codec} Parquet)", "clips_per_s": rate, "bytes_per_frame": size})
    mp4_codec = "libsvtav1" if "libsvtav1" in av.codecs_available else "libx264"
    for e in range(len(frames) // EPISODE_STEPS):
        write_mp4(frames[e * EPISODE_STEPS : (e + 1) * EPISODE_STEPS], tmp / f"ep-{e:03d}.mp4", mp4_codec)
    mp4_bytes = sum(p.stat().st_size for p in tmp.glob("ep-*.mp4")) / len(frames)
    peer_s, peer_clips, worst_psnr = 0.0, 0, float("inf")
    for eid, start in order:  # the same clips in the same order as ClipStream over raw
        t0 = time.perf_counter()
        clip = decode_clip_pyav(tmp / f"{eid}.mp4", start, clip_len)
        peer_s += time.perf_counter() - t0
        assert clip.shape == (clip_len, 64, 64, 3), clip.shape
        if peer_clips < 8:  # it is the same clip: compare with the rendered frames
            e = int(eid.split("-")[1])
            worst_psnr = min(worst_psnr, psnr(clip.numpy(), frames[e * EPISODE_STEPS + start :][:clip_len]))
        peer_clips += 1
        if peer_s > seconds:
            break
    rows.append({"loader": f"mp4 {mp4_codec} g=2 crf=30 + PyAV seek", "clips_per_s": peer_clips / peer_s,
                 "bytes_per_frame": mp4_bytes, "psnr_db": worst_psnr})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1024, help="Crafter frames per size (default: 1024)")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per loader (default: 4)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    num = max(EPISODE_STEPS, args.frames // EPISODE_STEPS * EPISODE_STEPS)
    results: dict = {"codecs": [], "loaders": []}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        frames64 = None
        for size in (64, 128):
            t0 = time.perf_counter()
            frames = crafter_frames(num, size)
            print(f"rendered {num} Crafter frames at {size}x{size} in {time.perf_counter() - t0:.1f} s")
            frames64 = frames if size == 64 else frames64
            for codec in CODECS:
                results["codecs"].append(bench_codec(frames, codec, tmp / f"{codec}-{size}"))
        (tmp / "loaders").mkdir()
        results["loaders"] = bench_loaders(frames64, tmp / "loaders", 16, args.seconds)

    print("\nCodecs (one core; bytes/frame = shard file size / frames)")
    print(f"{'codec':<6} {'size':<8} {'bytes/frame':>11} {'write f/s':>10} {'read f/s':>10} {'PSNR dB':>8}")
    for r in results["codecs"]:
        print(f"{r['codec']:<6} {r['size']:<8} {r['bytes_per_frame']:>11.0f} {r['write_fps']:>10.0f} "
              f"{r['read_fps']:>10.0f} {r['psnr_db']:>8.1f}")
    ours, ours_h264, peer = results["loaders"]
    print("\nT=16 64x64 clips as torch uint8 tensors (one core, same clips)")
    print(f"{'loader':<44} {'clips/s':>9} {'bytes/frame':>11} {'vs mp4':>7}")
    for r in results["loaders"]:
        print(f"{r['loader']:<44} {r['clips_per_s']:>9.0f} {r['bytes_per_frame']:>11.0f} "
              f"{r['clips_per_s'] / peer['clips_per_s']:>6.1f}x")
    ratio = ours["clips_per_s"] / peer["clips_per_s"]
    results["loader_ratio"] = ratio
    print(f"ratio ClipStream(raw) / mp4+PyAV: {ratio:.1f}x (goal >= 3x); mp4 PSNR {peer['psnr_db']:.1f} dB")
    raw64 = next(r for r in results["codecs"] if r["codec"] == "raw" and r["size"] == "64x64")
    print(f"lossless write at 64x64: {raw64['write_fps']:.0f} frames/s (goal >= 10,000)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
