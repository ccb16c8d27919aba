"""IDM speed: training windows/s, and labeling frames/s beside decoding the same video alone.

    python benchmarks/bench_idm.py                      # tiny preset, 2 threads
    python benchmarks/bench_idm.py --preset small --threads 16 --json out.json

Labeling cannot run faster than the video decodes, so the decode-only rate of the same mp4,
measured in the same run, is the peer: the ratio says how much of the limit labeling reaches.
The model's speed does not depend on its weights, so an untrained model of the preset is used.
The video is real VoxelWorld play (mixture player) written with OpenCV.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import cv2
import torch

from worldloom.datasets.video import read_video
from worldloom.idm.checkpoint import save_idm
from worldloom.idm.infer import predict
from worldloom.idm.label import LabelConfig, label
from worldloom.idm.model import IDM, PRESETS
from worldloom.idm.train import losses
from worldloom.io import json_text


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def voxel_video(path: Path, num_frames: int, size: int) -> Path:
    """num_frames of real VoxelWorld play as an mp4 (size x size, 20 fps)."""
    from worldloom.envs import make_env, make_player

    env, player = make_env("voxel", height=size, width=size), make_player("mixture", seed=0)
    obs, info = env.reset(seed=0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20, (size, size))
    for _ in range(num_frames):
        writer.write(cv2.cvtColor(obs, cv2.COLOR_RGB2BGR))
        obs, _, term, trunc, info = env.step(player.act(obs, info))
        if term or trunc:
            obs, info = env.reset(seed=1)
    writer.release()
    return path


def untrained_run(run_dir: Path, preset: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = IDM(PRESETS[preset])
    return save_idm(run_dir, model, {"preset": preset})


def train_windows_per_s(preset: str, batch_size: int, num_steps: int, device: torch.device) -> float:
    cfg = PRESETS[preset]
    model = IDM(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = torch.randint(0, 256, (batch_size, cfg.num_frames + 2 * cfg.context, cfg.height, cfg.width, 3),
                           dtype=torch.uint8, device=device)
    buttons = (torch.rand(batch_size, cfg.num_frames, 20, device=device) < 0.1).float()
    camera_pos = torch.rand(batch_size, cfg.num_frames, 2, device=device) * 10

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(frames)
        b, c = losses(out, buttons, camera_pos)
        optimizer.zero_grad()
        (b + c).backward()
        optimizer.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(num_steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * num_steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1200, help="frames in the benchmark video")
    parser.add_argument("--video-size", type=int, default=128, help="the video's frame size (resized to the model's)")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = {"preset": args.preset, "device": device_name(), "threads": args.threads}
    result["train_windows_per_s"] = train_windows_per_s(args.preset, args.batch_size, args.train_steps, device)
    cfg = PRESETS[args.preset]
    result["train_frames_per_s"] = result["train_windows_per_s"] * cfg.num_frames
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = voxel_video(tmp / "play.mp4", args.frames, args.video_size)
        run = untrained_run(tmp / "run", args.preset)
        t0 = time.perf_counter()
        frames, _ = read_video(video)
        decode_s = time.perf_counter() - t0
        from worldloom.idm.checkpoint import load_idm

        model, _ = load_idm(run, device=device)
        predict(model, frames[: cfg.num_frames * 2])  # warm-up
        t0 = time.perf_counter()
        predict(model, frames)
        model_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = label(LabelConfig(model=str(run), data=str(video), out=str(tmp / "out"), threads=args.threads))
        label_s = time.perf_counter() - t0
    n = len(frames)
    result.update({
        "video": f"{n} frames of VoxelWorld play, {args.video_size}x{args.video_size} mp4v",
        "decode_only_frames_per_s": n / decode_s,
        "predict_frames_per_s": n / model_s,
        "label_end_to_end_frames_per_s": summary["num_steps"] / label_s,
    })
    result["label_vs_decode_ratio"] = result["label_end_to_end_frames_per_s"] / result["decode_only_frames_per_s"]
    print(f"device: {result['device']} ({args.threads} threads), preset {args.preset}")
    print(f"train:  {result['train_windows_per_s']:.1f} windows/s ({result['train_frames_per_s']:.0f} frames/s), batch {args.batch_size}")
    print(f"decode only (peer):    {result['decode_only_frames_per_s']:8.0f} frames/s  ({result['video']})")
    print(f"predict (model only):  {result['predict_frames_per_s']:8.0f} frames/s")
    print(f"label, end to end:     {result['label_end_to_end_frames_per_s']:8.0f} frames/s  "
          f"= {result['label_vs_decode_ratio']:.2f}x the decode-only rate")
    if args.json:
        Path(args.json).write_text(json_text(result, indent=2))


if __name__ == "__main__":
    main()
