"""Benchmark the world model: learning curves beside a U-Net peer; training clips/s and tokens/s, generated frames/s, GPU MFU.

    python benchmarks/bench_pretrain.py [--preset tiny] [--batch-size 8] [--repeats 5] [--gpu]       # speed
    python benchmarks/bench_pretrain.py --curve-minutes 2 5 10 20 --threads 1                        # quality per CPU-minute
    python benchmarks/bench_pretrain.py --curve-minutes 1 2 5 --data data/labeled --heldout data/heldout --json curves.json

Learning curves (--curve-minutes): the product's world model (the `tiny` DiT with the objective
`worldloom pretrain train --preset tiny` uses: pretrain/train.py PRESETS, OBJECTIVES, its learning
rate, warmup, cosine fitted to the time budget, clipping and EMA) and its convolutional peer, a
DIAMOND-style U-Net of about the same parameter count (unet_peer.py: 4 context frames as channels,
noise level and actions through adaptive group norms; the same x_skip output, loss and sampler), are
trained in one process, a step of one then a step of the other (whichever has used less CPU time),
so a busy machine slows both alike. At each listed budget of CPU-minutes (this process's CPU time,
data loading included, evaluation excluded; one run per model, its cosine fitted to the largest
budget, so earlier points are mid-schedule) the EMA weights are scored on fixed held-out clips as
`worldloom pretrain eval` scores them (one Euler step, clean context): next-frame PSNR beside
copy-last-frame, rollout PSNR at a few horizons beside copy-last, ΔPSNR true vs shuffled actions,
and the colour distance to the real frames at the long horizon (the stability score) beside
copy-last's. Without --data it first records a small VoxelWorld set (mixture player, 64x64; training
and held-out on different world seeds) into a temporary directory.

Speed (without --curve-minutes): each figure is printed beside a peer measured in the same run, as a ratio:
- training step: our factorised block (spatial attention in a frame, causal temporal attention
  per patch) against the same model with one full spacetime attention over all T*N tokens
  (frame-causal block mask), the naive Sora-style alternative;
- generation: our sampler (context encoded once per frame, its keys and values reused by every
  Euler step) against re-running the whole window at every Euler step.
On a GPU (--gpu, or when CUDA is present) it also prints model FLOPs utilisation against the
device's bf16 dense peak. The machine's other load makes CPU timings noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from worldloom.actions import NUM_BUTTONS
from worldloom.pretrain.flow import FlowConfig, SampleConfig, flow_loss, rollout
from worldloom.pretrain.model import (
    PRESETS,
    Block,
    WorldModel,
    encode_actions,
    flops_per_frame,
    modulate,
    num_params,
)

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


class FullAttentionBlock(Block):
    """The peer: one attention over every token of the window, frame-causal, same weights' shapes."""

    def forward(self, x, c, pos, past_kv=None):
        B, T, N, D = x.shape
        mods = self.ada(c)[:, :, None].chunk(9, dim=-1)
        h = modulate(self.norm1(x), mods[0], mods[1]).reshape(B, T * N, D)
        frame = torch.arange(T, device=x.device).repeat_interleave(N)
        mask = frame[:, None] >= frame[None, :]  # (T*N, T*N): a token sees its frame and earlier ones
        H = self.spatial.num_heads
        q, k, v = self.spatial.qkv(h).view(B, T * N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, T * N, D)
        x = x + mods[2] * self.spatial.proj(h).view(B, T, N, D)
        x = x + mods[8] * self.mlp(modulate(self.norm3(x), mods[6], mods[7]))
        return x, None


def full_attention_model(cfg) -> WorldModel:
    model = WorldModel(cfg)
    for i, block in enumerate(model.blocks):
        peer = FullAttentionBlock(cfg.width, cfg.num_heads, cfg.mlp_ratio)
        peer.load_state_dict(block.state_dict())
        model.blocks[i] = peer
    return model


def turning_actions(batch: int, steps: int, device) -> torch.Tensor:
    """No buttons, camera turns of a few degrees: the skip path's warp runs, as it does on real data."""
    camera = 5 * torch.randn(batch, steps, 2, generator=torch.Generator().manual_seed(0))
    return encode_actions(torch.zeros(batch, steps, NUM_BUTTONS), camera).to(device)


def time_it(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_s(model, cfg, batch: int, device, repeats: int, amp: bool, sync) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, cfg.num_frames, cfg.channels, cfg.input_size, cfg.input_size, device=device)
    a = turning_actions(batch, cfg.num_frames, device)
    h = torch.ones(batch, cfg.num_frames, dtype=torch.bool, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = flow_loss(model, x, a, h, FlowConfig())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_it(step, repeats, sync)


@torch.no_grad()
def naive_rollout(model, context, actions, has, horizon, num_steps):
    """The peer sampler: the whole window (context + new frame) through the model at every step."""
    from worldloom.pretrain.model import shift_actions

    frames = list(context.unbind(1))
    window = model.cfg.num_frames - 1
    for _ in range(horizon):
        n, lo = len(frames), max(0, len(frames) - window)
        x = torch.stack(frames[lo:] + [torch.randn_like(frames[0])], dim=1)
        a, m = shift_actions(actions[:, lo:n + 1], has[:, lo:n + 1])
        t = torch.zeros(x.shape[:2], device=x.device)
        for i in range(num_steps):
            t[:, -1] = 1.0 - i / num_steps
            v = model(x, t, a, m)[:, -1]
            x[:, -1] = x[:, -1] - v / num_steps
        frames.append(x[:, -1].clamp(-1, 1))
    return torch.stack(frames[context.shape[1]:], 1)


# ---- learning curves: the DiT and its U-Net peer, quality per CPU-minute ----

UNET_CONTEXT = 4  # DIAMOND's context frames


def capture_data(root: Path, episodes: int, heldout: int, steps: int, seed: int) -> tuple[list[str], str]:
    """A small VoxelWorld training set and a held-out one on other world seeds (as `worldloom pipeline` records)."""
    from worldloom.capture import CaptureConfig, capture

    for name, n, offset in (("train", episodes, 1), ("heldout", heldout, 3)):
        capture(CaptureConfig(out=str(root / name), env="voxel", player="mixture", episodes=n, steps=steps,
                              resolution=64, seed=seed * 10 + offset, num_workers=2, progress=False))
    return [str(root / "train")], str(root / "heldout")


class CurveRun:
    """One model trained as pretrain/train.py trains (AdamW, warmup, cosine fitted to the time budget, clipping,
    EMA), one step at a time, counting its own CPU seconds."""

    def __init__(self, name: str, model, flow, cfg, data: list[str], minutes: float):
        from worldloom.pretrain.data import train_batches
        from worldloom.training import TimeBudget

        self.name, self.model, self.flow, self.cfg = name, model, flow, cfg
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        self.batches = train_batches(data, model.cfg.num_frames, cfg.batch_size, cfg.seed)
        self.budget = TimeBudget(minutes=minutes)
        self.step, self.cpu_s, self.losses = 0, 0.0, []

    def train_step(self) -> None:
        from worldloom.pretrain.data import to_model_inputs
        from worldloom.pretrain.train import lr_for
        from worldloom.training import ema_decay_at, update_ema

        t0 = time.process_time()
        cfg = self.cfg
        batch = next(self.batches)
        x, action, has = to_model_inputs(batch, self.model.cfg.image_size, cfg.use_actions)
        # each frame's view pitch where the dataset recorded it, as train.py gives it (world_yaw models turn with it)
        pitch = {"pitch": torch.as_tensor(batch["pitch"]).float()} if "pitch" in batch else {}
        for g in self.opt.param_groups:
            g["lr"] = lr_for(self.step, cfg, self.budget)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        loss = flow_loss(self.model, x, action, has, self.flow, generator=gen, **pitch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        update_ema(self.ema, self.model, ema_decay_at(self.step, cfg.ema_decay))
        self.step += 1
        self.losses.append(loss.item())
        self.cpu_s += time.process_time() - t0
        self.budget.update(self.step, self.cpu_s, self.step)


@torch.no_grad()
def score_point(model, clips: dict, horizons: list[int], long_horizon: int, num_clips: int, seed: int) -> dict:
    """The curve's figures for one model on fixed held-out clips, scored by pretrain/evaluate.py."""
    from worldloom.pretrain import evaluate as ev
    from worldloom.pretrain.autoencoder import PixelCodec

    horizon = max(horizons)
    cfg = ev.EvalConfig(model="-", data=("-",), horizon=horizon, num_clips=num_clips, seed=seed,
                        next_frame_positions=min(4, horizon), stability_horizon=max(long_horizon, horizon))
    context = model.cfg.num_frames - 1
    gen = ev.generate(model, PixelCodec(), clips, cfg, model.cfg.image_size, long_horizon)
    s = ev.image_scores(gen, context, horizon, cfg.next_frame_positions)
    nf, ro = s["next_frame"], s["rollout"]
    out = {"next_frame_psnr": nf["psnr"], "copy_last_psnr": nf["copy_last_psnr"],
           "next_frame_gain_db": nf["psnr"] - nf["copy_last_psnr"],
           "rollout_psnr": {h: ro["psnr"][h - 1] for h in horizons},
           "rollout_copy_last_psnr": {h: ro["copy_last_psnr"][h - 1] for h in horizons},
           "rollout_worst_gain_db": min(m - c for m, c in zip(ro["psnr"], ro["copy_last_psnr"], strict=True)),
           "delta_psnr_db": s["delta_psnr"]["mean"], "frames_per_s": gen["frames_per_s"]}
    if long_horizon > horizon:
        st = ev.stability(gen, context, long_horizon)
        out.update({"long_horizon": long_horizon, "psnr_long": st["psnr"][-1], "copy_last_psnr_long": st["copy_last_psnr"][-1],
                    "colour_long": st["hist_distance"][-1], "copy_last_colour_long": st["copy_last_hist_distance"][-1],
                    "steady_horizon": st["steady_horizon"]})
    return out


def curve_models(args, data: list[str]):
    """The tiny DiT as `worldloom pretrain train --preset tiny` builds it, and the U-Net peer; their train config."""
    from unet_peer import UNetConfig, UNetPeer

    from worldloom.pretrain.train import TrainConfig, resolve_camera

    cfg = TrainConfig(data=tuple(data), out="-", preset="tiny", batch_size=args.batch_size, seed=args.seed)
    cfg = resolve_camera(cfg)  # the fields of view fitted on the training data, as train.py does
    torch.manual_seed(cfg.seed)
    dit = WorldModel(cfg.model_config)
    torch.manual_seed(cfg.seed)
    m = cfg.model_config
    unet = UNetPeer(UNetConfig(image_size=m.image_size, num_frames=args.unet_context + 1, camera_fov_deg=m.camera_fov_deg,
                               move_flow=m.move_flow, sprint_fov_deg=m.sprint_fov_deg, world_yaw=m.world_yaw))
    peer_flow = dataclasses.replace(cfg.flow, p_sampling_pattern=1.0)  # the tiny objective already; the peer scores the last frame only
    return cfg, {"dit": (dit, cfg.flow), "unet": (unet, peer_flow)}


def curve_table(points: dict[str, list[dict]], horizons: list[int]) -> list[str]:
    """The curves as a Markdown table: one row per budget and model."""
    first = next(iter(points.values()))[0]
    long = first.get("long_horizon")
    head = (["CPU-min", "model", "steps", "next frame (copy-last)", "gain"] + [f"rollout h{h} (copy-last)" for h in horizons]
            + ["ΔPSNR shuffled"] + ([f"colour h{long} (copy-last)", "steady h"] if long else []) + ["frames/s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = sorted((p["minutes"], name, p) for name, pts in points.items() for p in pts)
    for minutes, name, p in rows:
        cells = [f"{minutes:g}", name, str(p["steps"]), f"{p['next_frame_psnr']:.2f} ({p['copy_last_psnr']:.2f})",
                 f"{p['next_frame_gain_db']:+.2f}"]
        cells += [f"{p['rollout_psnr'][h]:.2f} ({p['rollout_copy_last_psnr'][h]:.2f})" for h in horizons]
        cells.append(f"{p['delta_psnr_db']:.2f}")
        if long:
            cells += [f"{p['colour_long']:.3f} ({p['copy_last_colour_long']:.3f})", str(p["steady_horizon"])]
        cells.append(f"{p['frames_per_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def learning_curves(args) -> None:
    from worldloom.pretrain import evaluate as ev

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # unet_peer.py, beside this file
    budgets = sorted(set(args.curve_minutes))
    if budgets[0] < 0 or budgets[-1] <= 0:
        raise SystemExit(f"--curve-minutes must be >= 0 (0: the untrained model) with one > 0, got {args.curve_minutes}")
    if (args.data is None) != (args.heldout is None):
        raise SystemExit("give --data and --heldout together (or neither: a small set is recorded)")
    tmp = None
    data, heldout = args.data, args.heldout
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-pretrain-")
        print(f"recording {args.episodes} + {args.heldout_episodes} VoxelWorld episodes of {args.steps} steps ...", flush=True)
        data, heldout = capture_data(Path(tmp.name), args.episodes, args.heldout_episodes, args.steps, args.seed)
    try:
        cfg, models = curve_models(args, data)
        runs = [CurveRun(name, model, flow, cfg, data, budgets[-1]) for name, (model, flow) in models.items()]
        contexts = {r.name: r.model.cfg.num_frames - 1 for r in runs}
        most = max(contexts.values())
        long_horizon = args.long_horizon
        clips = ev.eval_clips([heldout], most + max(max(args.horizons), long_horizon), args.clips)
        print(f"CPU, {torch.get_num_threads()} thread(s), batch {cfg.batch_size}, camera field of view "
              f"{cfg.model_config.camera_fov_deg:g} degrees, {len(clips['frames'])} held-out clips; budgets {budgets} CPU-min")
        for r in runs:
            print(f"  {r.name}: {num_params(r.model) / 1e6:.2f}M params, {contexts[r.name]} context frames", flush=True)
        points: dict[str, list[dict]] = {r.name: [] for r in runs}
        todo = {r.name: list(budgets) for r in runs}
        while any(todo.values()):
            run = min((r for r in runs if todo[r.name]), key=lambda r: r.cpu_s)  # the one behind goes next
            if todo[run.name][0] > 0:  # 0: score the untrained model first
                run.train_step()
            if run.cpu_s >= todo[run.name][0] * 60:
                minutes = todo[run.name].pop(0)
                cut = most - contexts[run.name]  # the same target frames whatever the model's context
                p = {"minutes": minutes, "steps": run.step, "cpu_s": run.cpu_s,
                     "loss": statistics.fmean(run.losses[-20:]) if run.losses else None,
                     **score_point(run.ema, {k: v[:, cut:] for k, v in clips.items()}, args.horizons, long_horizon,
                                   args.clips, args.seed)}
                points[run.name].append(p)
                print(f"  {run.name} at {minutes:g} CPU-min ({run.step} steps): next frame {p['next_frame_psnr']:.2f} dB "
                      f"({p['next_frame_gain_db']:+.2f} over copy-last), worst rollout gain {p['rollout_worst_gain_db']:+.2f} dB, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print("\nlearning curves (held-out clips; PSNR in dB, copy-last-frame in brackets; gain = next frame - copy-last):")
    print("\n".join(curve_table(points, args.horizons)))
    if args.json:
        result = {"threads": torch.get_num_threads(), "batch_size": cfg.batch_size,
                  "camera_fov_deg": cfg.model_config.camera_fov_deg, "data": data, "heldout": heldout,
                  "params": {r.name: num_params(r.model) for r in runs}, "curves": points}
        from worldloom.io import atomic_write_json

        atomic_write_json(args.json, result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=[k for k, v in PRESETS.items() if not v.latent_channels])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--gen-batch", type=int, default=8, help="rollouts generated at once")
    p.add_argument("--horizon", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=4, help="Euler steps per frame")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    c = p.add_argument_group("learning curves (--curve-minutes)")
    c.add_argument("--curve-minutes", type=float, nargs="+", default=None,
                   help="train the tiny DiT and its U-Net peer, scoring both at these CPU-minutes (e.g. 2 5 10 20)")
    c.add_argument("--data", nargs="+", default=None, help="training datasets (default: record a small VoxelWorld set)")
    c.add_argument("--heldout", default=None, help="held-out labeled dataset scored at each point (with --data)")
    c.add_argument("--horizons", type=int, nargs="+", default=[1, 4, 16], help="rollout horizons shown")
    c.add_argument("--long-horizon", type=int, default=64, help="stability horizon (colour distance); 0: none")
    c.add_argument("--clips", type=int, default=16, help="held-out clips scored at each point")
    c.add_argument("--unet-context", type=int, default=UNET_CONTEXT, help="context frames the U-Net peer reads")
    c.add_argument("--episodes", type=int, default=24, help="episodes recorded for training (without --data)")
    c.add_argument("--heldout-episodes", type=int, default=4, help="episodes recorded for held-out scoring (without --data)")
    c.add_argument("--steps", type=int, default=400, help="steps per recorded episode (without --data)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", default=None, help="also write the curves as JSON to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.curve_minutes:
        return learning_curves(args)
    gpu = args.gpu or torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    cfg = dataclasses.replace(PRESETS[args.preset], camera_fov_deg=70.0, sprint_fov_deg=77.0)  # what training fits on VoxelWorld
    name = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    torch.manual_seed(0)
    ours, peer = WorldModel(cfg).to(device), full_attention_model(cfg).to(device)
    tokens = args.batch_size * cfg.num_frames * cfg.tokens_per_frame
    s_ours = train_step_s(ours, cfg, args.batch_size, device, args.repeats, gpu, sync)
    s_peer = train_step_s(peer, cfg, args.batch_size, device, args.repeats, gpu, sync)
    result = {"device": name, "preset": args.preset, "params_M": num_params(ours) / 1e6, "batch": args.batch_size,
              "train_clips_per_s": args.batch_size / s_ours, "train_tokens_per_s": tokens / s_ours,
              "peer_full_attention_clips_per_s": args.batch_size / s_peer, "train_speedup_vs_full_attention": s_peer / s_ours}
    ours.eval()
    ctx = torch.randn(args.gen_batch, cfg.num_frames - 1, cfg.channels, cfg.input_size, cfg.input_size, device=device)
    acts = turning_actions(args.gen_batch, cfg.num_frames - 1 + args.horizon, device)
    has = torch.ones(acts.shape[:2], dtype=torch.bool, device=device)
    sample = SampleConfig(num_steps=args.num_steps)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
        g_ours = time_it(lambda: rollout(ours, ctx, acts, has, args.horizon, sample), max(1, args.repeats // 2), sync)
        g_peer = time_it(lambda: naive_rollout(ours, ctx, acts, has, args.horizon, args.num_steps), max(1, args.repeats // 2), sync)
    frames = args.gen_batch * args.horizon
    result.update({"gen_batch": args.gen_batch, "euler_steps": args.num_steps, "generated_frames_per_s": frames / g_ours,
                   "peer_full_window_frames_per_s": frames / g_peer, "generation_speedup": g_peer / g_ours})
    if gpu:
        train_flops = 3 * flops_per_frame(cfg) * args.batch_size * cfg.num_frames  # forward + backward
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        result["train_tflops"] = train_flops / s_ours / 1e12
        result["mfu"] = None if peak is None else result["train_tflops"] / peak
    print(json.dumps(result, indent=1))
    print(f"\n{name}, preset {args.preset} ({result['params_M']:.2f}M params):")
    print(f"  train: {result['train_clips_per_s']:.1f} clips/s, {result['train_tokens_per_s']:.0f} tokens/s; "
          f"full spacetime attention {result['peer_full_attention_clips_per_s']:.1f} clips/s -> x{result['train_speedup_vs_full_attention']:.2f}")
    print(f"  generate: {result['generated_frames_per_s']:.1f} frames/s ({args.num_steps} Euler steps, batch {args.gen_batch}); "
          f"whole window per step {result['peer_full_window_frames_per_s']:.1f} frames/s -> x{result['generation_speedup']:.2f}")
    if gpu:
        mfu = "unknown peak" if result["mfu"] is None else f"{result['mfu']:.1%}"
        print(f"  GPU: {result['train_tflops']:.1f} TFLOP/s, MFU {mfu}")


if __name__ == "__main__":
    main()
