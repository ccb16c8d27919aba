"""Dataset format benchmark: codecs on real Crafter frames, and clip loading against mp4 + PyAV.

    python benchmarks/bench_datasets.py                 # ~1 minute, pinned to one core
    python benchmarks/bench_datasets.py --frames 512 --json results.json
    python benchmarks/bench_datasets.py --index-only    # part 3 alone, seconds

Part 1, per codec at 64x64 and 128x128: bytes per frame (whole shard file / frames), write and
read frames/s through `DatasetWriter` / `Dataset.frames`, PSNR against the rendered frames.
Part 2, T=16 clips of 64x64 delivered as torch uint8 tensors `(T, H, W, 3)`: our `ClipStream`
beside the way LeRobot stores video (one mp4 per episode, AV1 through libsvtav1 with a
keyframe every 2 frames, crf 30, yuv420p; LeRobot v3 defaults) decoded with PyAV, seeking to each
clip's first timestamp as LeRobot's `decode_video_frames_pyav` does. Same clips, same order,
same process, one core.
Part 3, opening a dataset whose index lists 100,000 episodes in 10,000 shards: what a reader
checks before it trusts dataset.json and episodes.parquet (`datasets/manifest.py`: every field,
every shard path, the episodes tiling their shards) beside the peer, reading the two files
(what opening a dataset always did), CPU seconds of one core.
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

from worldloom.actions import FPS  # noqa: E402
from worldloom.datasets import ClipStream, Dataset, DatasetWriter, schema  # noqa: E402
from worldloom.datasets.codecs import CODECS  # noqa: E402
from worldloom.datasets.manifest import action_space, check_manifest, committed_episodes  # noqa: E402
from worldloom.io import json_text  # noqa: E402

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
cv2.setNumThreads(1)
torch.set_num_threads(1)

EPISODE_STEPS = 128


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


class Clock:
    """Wall and CPU seconds of a block. The process is pinned to one core and other jobs share
    the machine: CPU seconds say what one dedicated core does; wall seconds include waiting."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def bench_codec(frames: np.ndarray, codec: str, root: Path, repeats: int = 3) -> dict:
    """Best of `repeats` fresh write + full read (the first also warms pyarrow's lazy setup)."""
    num, h, w = frames.shape[:3]
    best = {"write_cpu": float("inf"), "write_wall": float("inf"), "read_cpu": float("inf"), "read_wall": float("inf")}
    for k in range(repeats):
        with Clock() as write:
            with DatasetWriter(root / str(k), h, w, fps=FPS, codec=codec) as writer:
                for e in range(num // EPISODE_STEPS):
                    writer.add_episode(f"ep-{e:03d}", frames[e * EPISODE_STEPS : (e + 1) * EPISODE_STEPS])
        ds = Dataset(root / str(k))
        with Clock() as read:
            decoded = np.concatenate([ds.frames(eid).frames for eid in ds.episode_ids])
        for key, value in (("write_cpu", write.cpu), ("write_wall", write.wall), ("read_cpu", read.cpu), ("read_wall", read.wall)):
            best[key] = min(best[key], value)
    size = sum(s["size_bytes"] for s in ds.manifest["shards"])
    return {"codec": codec, "size": f"{w}x{h}", "bytes_per_frame": size / num,
            **{f"{key}_fps": num / value for key, value in best.items()},
            "psnr_db": psnr(decoded, frames[: len(decoded)]), "lossless": CODECS[codec].lossless}


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


def bench_loaders(frames: np.ndarray, tmp: Path, clip_len: int, seconds: float) -> list[dict]:
    """Rounds of: one ClipStream epoch per codec, then PyAV on the clips of the raw epoch. The
    loaders alternate so that they share the machine's load (other jobs come and go); each
    figure is the median over rounds, and so is the ratio."""
    streams, sizes = {}, {}
    for codec in ("raw", "h264"):
        root = tmp / f"stream-{codec}"
        with DatasetWriter(root, 64, 64, fps=FPS, codec=codec) as writer:
            for e in range(len(frames) // EPISODE_STEPS):
                writer.add_episode(f"ep-{e:03d}", frames[e * EPISODE_STEPS : (e + 1) * EPISODE_STEPS])
        sizes[codec] = sum(s["size_bytes"] for s in Dataset(root).manifest["shards"]) / len(frames)
        streams[codec] = ClipStream(root, clip_len=clip_len, seed=0)
    mp4_codec = "libsvtav1" if "libsvtav1" in av.codecs_available else "libx264"
    for e in range(len(frames) // EPISODE_STEPS):
        write_mp4(frames[e * EPISODE_STEPS : (e + 1) * EPISODE_STEPS], tmp / f"ep-{e:03d}.mp4", mp4_codec)
    sizes["mp4"] = sum(p.stat().st_size for p in tmp.glob("ep-*.mp4")) / len(frames)
    rates: dict[str, list[float]] = {"raw": [], "h264": [], "mp4": []}
    sample_psnr, t_start, epoch = float("inf"), time.perf_counter(), 0
    while time.perf_counter() - t_start < 3 * seconds or epoch < 3:
        order = []
        for codec, stream in streams.items():
            stream.set_epoch(epoch)
            with Clock() as clock:
                items = list(stream)
            rates[codec].append(len(items) / clock.cpu)
            order = order or [(it["episode_id"], int(it["start"])) for it in items]
        with Clock() as clock:
            for eid, start in order:  # the same clips in the same order as ClipStream over raw
                clip = decode_clip_pyav(tmp / f"{eid}.mp4", start, clip_len)
                assert clip.shape == (clip_len, 64, 64, 3), clip.shape
        rates["mp4"].append(len(order) / clock.cpu)
        if epoch == 0:  # it is the same clip: compare the last one with the rendered frames
            e = int(eid.split("-")[1])
            sample_psnr = psnr(clip.numpy(), frames[e * EPISODE_STEPS + start :][:clip_len])
        epoch += 1
    ratio = {c: float(np.median(np.array(rates[c]) / np.array(rates["mp4"]))) for c in rates}
    names = {"raw": "ClipStream (raw Parquet)", "h264": "ClipStream (h264 Parquet)",
             "mp4": f"mp4 {mp4_codec} g=2 crf=30 + PyAV seek"}
    return [{"loader": names[c], "clips_per_s": float(np.median(rates[c])), "bytes_per_frame": sizes[c],
             "vs_mp4": ratio[c], "rounds": epoch, **({"psnr_db": sample_psnr} if c == "mp4" else {})} for c in rates]


def bench_index(tmp: Path, num_episodes: int = 100_000, per_shard: int = 10, repeats: int = 5) -> dict:
    """CPU seconds (best of `repeats`) to read a big index, and to check it."""
    import pyarrow.parquet as pq

    shards = [{"path": f"frames/part-w-{i:05d}.parquet", "num_rows": 100 * per_shard, "num_episodes": per_shard,
               "size_bytes": 1 << 20, "checksum": "blake2b-128:" + "0" * 32, "writer_id": "w"}
              for i in range(num_episodes // per_shard)]
    manifest = {"format": "worldloom-dataset", "format_version": schema.FORMAT_VERSION, "height": 64, "width": 64,
                "fps": 20, "codec": "raw", "channels": 3, "rows_per_group": 256, "action_space": action_space(),
                "label_sources": ["env"], "num_episodes": num_episodes, "num_frames": 100 * num_episodes,
                "shards": shards, "config": None}
    n = num_episodes
    rows = {"episode_id": [f"ep-{i:06d}" for i in range(n)], "env": ["voxel"] * n, "env_config": ["{}"] * n,
            "seed": list(range(n)), "player": ["mixture"] * n, "num_steps": [100] * n,
            "shard": [shards[i // per_shard]["path"] for i in range(n)], "row_start": [i % per_shard * 100 for i in range(n)],
            "label_source": ["env"] * n, "label_model": [None] * n, "split": ["train"] * n}
    pq.write_table(pa.Table.from_pydict(rows, schema=schema.EPISODE_SCHEMA), tmp / "episodes.parquet")
    (tmp / "dataset.json").write_text(json.dumps(manifest))
    read = check = float("inf")
    for _ in range(repeats):
        with Clock() as clock:
            loaded = json.loads((tmp / "dataset.json").read_text())
            table = pq.read_table(tmp / "episodes.parquet")
        read = min(read, clock.cpu)
        with Clock() as clock:
            check_manifest(loaded, "dataset.json")
            committed_episodes(table, loaded, "episodes.parquet")
        check = min(check, clock.cpu)
    return {"episodes": num_episodes, "shards": len(shards), "read_cpu_s": read, "check_cpu_s": check,
            "check_vs_read": check / read}


def print_index(r: dict) -> None:
    print(f"\nOpening an index of {r['episodes']:,} episodes in {r['shards']:,} shards (one core, CPU seconds, best of 5)")
    print(f"read dataset.json + episodes.parquet (peer) {r['read_cpu_s']:.3f} s; checks {r['check_cpu_s']:.3f} s "
          f"= {r['check_vs_read']:.2f}x the read")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1024, help="Crafter frames per size (default: 1024)")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per loader, alternating (default: 4)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--index-only", action="store_true", help="part 3 alone: the cost of checking a big index")
    args = parser.parse_args()
    if args.index_only:
        with tempfile.TemporaryDirectory() as tmp_dir:
            print_index(bench_index(Path(tmp_dir)))
        return
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
        (tmp / "index").mkdir()
        results["index"] = bench_index(tmp / "index")

    print("\nCodecs (one core; frames per CPU second, wall-clock in brackets; bytes/frame = shard file / frames)")
    print(f"{'codec':<6} {'size':<8} {'bytes/frame':>11} {'write f/s':>18} {'read f/s':>18} {'PSNR dB':>8}")
    for r in results["codecs"]:
        write = f"{r['write_cpu_fps']:.0f} ({r['write_wall_fps']:.0f})"
        read = f"{r['read_cpu_fps']:.0f} ({r['read_wall_fps']:.0f})"
        print(f"{r['codec']:<6} {r['size']:<8} {r['bytes_per_frame']:>11.0f} {write:>18} {read:>18} {r['psnr_db']:>8.1f}")
    ours, _, peer = results["loaders"]
    print(f"\nT=16 64x64 clips as torch uint8 tensors (one core, same clips; clips per CPU second, "
          f"median of {ours['rounds']} alternating rounds)")
    print(f"{'loader':<44} {'clips/s':>9} {'bytes/frame':>11} {'vs mp4':>7}")
    for r in results["loaders"]:
        print(f"{r['loader']:<44} {r['clips_per_s']:>9.0f} {r['bytes_per_frame']:>11.0f} {r['vs_mp4']:>6.1f}x")
    results["loader_ratio"] = ours["vs_mp4"]
    print(f"ratio ClipStream(raw) / mp4+PyAV: {ours['vs_mp4']:.1f}x (goal >= 3x); mp4 PSNR {peer['psnr_db']:.1f} dB")
    raw64 = next(r for r in results["codecs"] if r["codec"] == "raw" and r["size"] == "64x64")
    print(f"lossless write at 64x64: {raw64['write_cpu_fps']:.0f} frames per CPU second, "
          f"{raw64['write_wall_fps']:.0f} per wall second (goal >= 10,000)")
    print_index(results["index"])
    if args.json:
        Path(args.json).write_text(json_text(results, indent=2))


if __name__ == "__main__":
    main()
