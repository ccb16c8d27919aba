"""Benchmark the world model: training clips/s and tokens/s, generated frames/s, GPU MFU.

    python benchmarks/bench_pretrain.py [--preset tiny] [--batch-size 8] [--repeats 5] [--gpu]

Each figure is printed beside a peer measured in the same run, as a ratio:
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
import dataclasses
import json
import statistics
import time

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=[k for k, v in PRESETS.items() if not v.latent_channels])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--gen-batch", type=int, default=8, help="rollouts generated at once")
    p.add_argument("--horizon", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=4, help="Euler steps per frame")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gpu", action="store_true")
    args = p.parse_args()
    gpu = args.gpu or torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    cfg = dataclasses.replace(PRESETS[args.preset], camera_fov_deg=70.0)  # what training fits on VoxelWorld
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
