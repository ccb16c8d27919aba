"""The world model's convolutional peer: a DIAMOND-style U-Net in pixel space (benchmarks only).

    from unet_peer import UNetConfig, UNetPeer          # benchmarks/ on sys.path
    peer = UNetPeer(UNetConfig(camera_fov_deg=70.0))    # answers WorldModel's call: flow.py trains and samples it

DIAMOND (Alonso et al. 2024) predicts the next frame with a U-Net that sees the last 4 frames
stacked as channels, with the noise level and the actions entering every residual block through
an adaptive group norm. This peer keeps that backbone and shares everything else with the `tiny`
DiT (pretrain/model.py), so `benchmarks/bench_pretrain.py --curve-minutes` compares backbones, not
recipes: the same rectified-flow loss and objective, the same x_skip output (a correction to the
previous frame turned by the camera action, about the world's vertical where the frame's pitch is
known and zoomed by sprinting's field of view, a per-pixel turn gate, zero at initialisation, the
dead zone, the flows of the movement keys), the same signal input (a noisy frame enters scaled by
1 - t) and the same sampler.

To run flow.py's sampler unchanged it answers the DiT's call signature: called on the context with
`return_kv=True` it returns the context as its "keys and values" (frames; actions, masks and noise
levels), and called on the new frame with `past_kv` it stacks them as channels. In training
(neither) it predicts only the last frame of the window from the frames before it; the other
frames' velocities are zeros, so train it with every window in the sampling pattern
(FlowConfig(p_sampling_pattern=1), the tiny objective), where only the last frame is scored.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldloom.pretrain.camera import rotate_frames
from worldloom.pretrain.model import (
    ACTION_DIM,
    MOVE_COMPONENTS,
    camera_from_actions,
    movement_flow,
    skip_velocity,
    timestep_embedding,
    view_fov_deg,
)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    image_size: int = 64
    channels: tuple[int, ...] = (34, 68, 102, 136)  # per level (64, 32, 16, 8 px): 2.29M parameters, the tiny DiT 2.25M
    blocks: int = 1  # residual blocks per level, on the way down and on the way up
    cond_dim: int = 128  # noise-level and action embedding width
    num_frames: int = 5  # 4 context frames + the predicted one (DIAMOND: 4)
    camera_fov_deg: float = 0.0  # as WorldModelConfig's: the previous frame is turned by the camera action
    turned_input: bool = True  # the turned previous frame as extra input channels
    signal_input: bool = True  # a noisy frame enters scaled by (1 - t), as the tiny DiT's
    dead_zone: float = 3.0  # corrections under this many 8-bit levels are dropped, as the tiny DiT's
    move_flow: float = 0.0  # as WorldModelConfig's: the base moved by per-pixel flows times the movement keys
    sprint_fov_deg: float = 0.0  # as WorldModelConfig's: sprinting widens the view (0: it does not change)
    world_yaw: bool = False  # as WorldModelConfig's: where a frame's pitch is known, the yaw turns about the world's vertical
    color_channels: int = 3

    def __post_init__(self):
        if self.num_frames < 2 or not self.channels or self.blocks < 1:
            raise ValueError(f"need num_frames >= 2, channels and blocks >= 1; got {self.num_frames}, {self.channels}, {self.blocks}")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"image_size {self.image_size} must halve {len(self.channels) - 1} times")

    @property
    def turns_camera(self) -> bool:
        return self.camera_fov_deg > 0


class AdaGroupNorm(nn.Module):
    """GroupNorm whose scale and shift come from the condition (noise level + actions), as DIAMOND's."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(channels, 8), channels, affine=False)
        self.ada = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, c):  # x (B, C, H, W), c (B, cond_dim)
        scale, shift = self.ada(c)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + scale) + shift


class ResBlock(nn.Module):
    """norm-SiLU-conv twice, conditioned; the residual branch starts at zero."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.n1, self.c1 = AdaGroupNorm(cin, cond_dim), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = AdaGroupNorm(cout, cond_dim), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x, c):
        h = self.c1(F.silu(self.n1(x, c)))
        h = self.c2(F.silu(self.n2(h, c)))
        return self.skip(x) + h


class UNetPeer(nn.Module):
    """Velocity of the last frame of a window from the frames before it (as channels) and the window's actions."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        C, ch, cd, K = cfg.color_channels, cfg.channels, cfg.cond_dim, cfg.num_frames - 1
        self.t_embed = nn.Sequential(nn.Linear(256, cd), nn.SiLU(), nn.Linear(cd, cd))
        self.a_embed = nn.Sequential(nn.Linear(ACTION_DIM, cd), nn.SiLU(), nn.Linear(cd, cd))
        self.null_action = nn.Parameter(torch.randn(cd) * 0.02)
        self.a_mix = nn.Linear((K + 1) * cd, cd)  # the actions into the context frames and into the new one
        self.conv_in = nn.Conv2d(C * (1 + K + int(cfg.turned_input)), ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(ch):  # level i: blocks at ch[i], then a stride-2 conv (none at the bottom)
            cin = ch[i - 1] if i else ch[0]
            self.down.append(nn.ModuleList(ResBlock(cin if b == 0 else c, c, cd) for b in range(cfg.blocks)))
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(ch) - 1 else nn.Identity())
        self.mid = ResBlock(ch[-1], ch[-1], cd)
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):  # level i: its skip concatenated, out at the level above's width
            out = ch[i - 1] if i else ch[0]
            self.up.append(nn.ModuleList(ResBlock(2 * ch[i] if b == 0 else out, out, cd) for b in range(cfg.blocks)))
        self.norm_out = nn.GroupNorm(math.gcd(ch[0], 8), ch[0])
        flows = 2 * MOVE_COMPONENTS if cfg.move_flow else 0
        self.conv_out = nn.Conv2d(ch[0], C + int(cfg.turns_camera) + flows, 3, padding=1)  # correction (+ gate, flows)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _net(self, x, c):
        """x (B, Cin, H, W), c (B, cond_dim) -> (B, Cout, H, W)."""
        h = self.conv_in(x)
        skips = []
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for block in blocks:
                h = block(h, c)
            skips.append(h)
            h = down(h)
        h = self.mid(h, c)
        for blocks in self.up:
            s = skips.pop()
            if h.shape[-1] != s.shape[-1]:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = torch.cat([h, s], 1)
            for block in blocks:
                h = block(h, c)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _frame(self, x_new, t_new, context, t_ctx, action, mask, dead_zone=None, recall=None, canvas=None, pitch=None):
        """The new frame's velocity. x_new (B, C, H, W) at levels t_new (B,); context (B, K', C, H, W) at levels
        t_ctx (B, K'); action (B, K'+1, A), mask (B, K'+1): the action into each context frame, then the new one's;
        pitch (B,) degrees: the frame before's absolute pitch, or None. -> (B, C, H, W)."""
        B, Kc = context.shape[:2]
        K = self.cfg.num_frames - 1
        if Kc < K:  # fewer frames than the model reads (an episode's start): zeros at noise level 1 before them
            pad = K - Kc
            context = torch.cat([context.new_zeros(B, pad, *context.shape[2:]), context], 1)
            t_ctx = torch.cat([t_ctx.new_ones(B, pad), t_ctx], 1)
            action = torch.cat([action.new_zeros(B, pad, action.shape[-1]), action], 1)
            mask = torch.cat([mask.new_zeros(B, pad), mask], 1)
        context, t_ctx, action, mask = context[:, -K:], t_ctx[:, -K:], action[:, -K - 1:], mask[:, -K - 1:]
        prev, prev_t = context[:, -1], t_ctx[:, -1]
        before = prev if canvas is None else canvas.stack(prev)  # the sampler's canvas: the same warps, as the DiT's
        views = view_fov_deg(action, mask, self.cfg)  # (B, K+1) each, or None: the field of view before and after
        turned = rotate_frames(before, camera_from_actions(action[:, -1], mask[:, -1]), self.cfg.camera_fov_deg,
                               None if views is None else (views[0][:, -1], views[1][:, -1]), pitch)
        if recall is not None and recall[0] is not None:  # pose memory's view of the new frame (pretrain/memory.py)
            turned = (torch.where(recall[1][:, None], recall[0].to(turned.dtype), turned) if canvas is None
                      else canvas.with_recall(turned, recall[0], recall[1]))
        shown = turned if canvas is None else canvas.collapse(turned)
        if self.cfg.signal_input:
            x_in, ctx_in = x_new * (1 - t_new)[:, None, None, None], context * (1 - t_ctx)[..., None, None, None]
        else:
            x_in, ctx_in = x_new, context
        inp = [x_in, ctx_in.flatten(1, 2)] + ([shown] if self.cfg.turned_input else [])  # (B, C*(1+K[+1]), H, W)
        a = torch.where(mask[..., None], self.a_embed(action), self.null_action)  # (B, K+1, cd)
        c = self.t_embed(timestep_embedding(t_new, 256)) + self.a_mix(a.flatten(1))  # (B, cd)
        out = self._net(torch.cat(inp, 1), c)[:, None]  # (B, 1, C[+1], H, W)
        C = x_new.shape[1]
        correction = out[:, :, :C]
        zone = self.cfg.dead_zone if dead_zone is None else dead_zone
        if zone > 0:  # soft threshold forward, identity backward, as the DiT's
            tau = zone * 2.0 / 255.0
            correction = correction + (correction.sign() * (correction.abs() - tau).clamp_min(0) - correction).detach()
        gate = out[:, :, C:C + 1] if self.cfg.turns_camera else None
        flow = moving = None
        if self.cfg.move_flow:  # as WorldModel.forward: the fields per step walked and strafed, times the keys
            flow, moving = movement_flow(out[:, :, C + int(self.cfg.turns_camera):], action[:, -1:], mask[:, -1:],
                                         self.cfg.move_flow)
        v = skip_velocity(x_new[:, None], t_new[:, None], correction, gate, before[:, None], turned[:, None], prev_t[:, None],
                          flow, moving, canvas=canvas)
        return v[:, 0]

    def forward(self, x, t, action, action_mask, past_kv=None, start=0, return_kv=False, prev=None, prev_t=None,
                dead_zone=None, recall=None, canvas=None, prev_action=None, view_pitch=None):
        """WorldModel's call: x (B, T, C, H, W), t (B, T), action (B, T, A) (frame t's: the action that produced it),
        action_mask (B, T) -> v (B, T, C, H, W); see the module docstring for past_kv and return_kv; dead_zone:
        the sampler's (none: the config's); recall and canvas: the sampler's pose memory and canvas, as WorldModel takes them;
        view_pitch (B, T) degrees, the frame before each frame's (NaN: unknown), as WorldModel takes it; prev_action:
        unused (the kept context holds the actions before the new frame, which its field of view comes from)."""
        pitch = None
        if view_pitch is not None and self.cfg.world_yaw and not return_kv:
            pitch = view_pitch[:, -1].nan_to_num(0.0)  # (B,): the frame before the predicted one
        if return_kv:  # the sampler's context pass: keep the frames, actions, masks and levels for the next call
            meta = torch.cat([action, action_mask[..., None].to(action.dtype), t[..., None].to(action.dtype)], -1)
            return torch.zeros_like(x), [(x, meta)]  # (B, Tc, C, H, W), (B, Tc, A + 2)
        if past_kv is not None:  # the new frame after a kept context
            ctx, meta = past_kv[0]
            A = action.shape[-1]
            acts = torch.cat([meta[..., :A], action[:, :1]], 1)
            masks = torch.cat([meta[..., A] > 0.5, action_mask[:, :1]], 1)
            return self._frame(x[:, 0], t[:, 0], ctx, meta[..., A + 1], acts, masks, dead_zone, recall, canvas, pitch)[:, None]
        # training: the last frame of the window from the frames before it
        v = self._frame(x[:, -1], t[:, -1], x[:, :-1], t[:, :-1], action, action_mask, pitch=pitch)
        out = torch.zeros_like(x)
        out[:, -1] = v
        return out
