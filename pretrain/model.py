"""The world model: a diffusion transformer over spacetime patches, causal in time, driven by actions.

    from worldloom.pretrain.model import WorldModel, WorldModelConfig, PRESETS
    model = WorldModel(PRESETS["tiny"])
    v = model(x, t, action, action_mask)         # velocity for frames x at noise levels t
    model = WorldModel(PRESETS["tiny"], text=TextConfig(vocab=vocab))   # text-conditioned (pretrain/text.py)
    v = model(x, t, action, action_mask, text=tokens)                   # tokens (B, L): one caption per window

Sora's recipe made playable, as Oasis and Genie do: each frame (pixels, or latents of the
package's autoencoder) is cut into patches; a block is spatial attention inside a frame, then
causal temporal attention across frames at the same patch position (RoPE over frame index, so
a sliding window can go on for ever), then an MLP. Each frame has its own noise level and its
own action; both enter through adaLN-zero (DiT). Frame t is conditioned on action[t-1], the
action that produced it (DESIGN section 3: action[t] is applied between frame[t] and frame[t+1]);
the first frame of a window, and every frame without a label, gets a learned null action, which
also makes classifier-free guidance on actions possible.

Objective: rectified flow, x_t = (1 - t) x_0 + t * noise, velocity v = noise - x_0, with an
independent t per frame (diffusion forcing). With prediction "x_skip" (the default) the network
outputs a correction to the previous frame, x_0 = (1 - t_prev) * x_prev + out, converted to a
velocity (JiT-style x-prediction): at initialisation the model copies the last frame. Measured
on VoxelWorld: 19.3 dB next-frame PSNR at step 225 against 8.6-11.3 dB for plain velocity
prediction at steps 100-425 (docs/pretrain.md). With a camera field of view (fitted from the
training data, camera.py) the previous frame is first turned by the frame's camera action, and a
per-pixel gate the network outputs chooses between the turned and the unturned frame (the HUD,
an open inventory and a pitch stopped at 90 degrees do not turn), and the network sees the
turned frame as input beside the noisy one (turned_input). With move_flow the network also
outputs per-pixel flows for one step walked forward and one strafed right, and the base is moved
by them times the step's movement keys (`movement`): nothing moves without a key held, and the
frames say how far away each pixel's surface is (docs/pretrain.md, "movement flow").

With a caption encoder (`text`, pretrain/text.py; none by default, so presets and checkpoints
without one are unchanged) a window's caption embedding is added to every frame's condition, as
the noise level and the action are: a global, per-window condition through adaLN (what a
caption names, biome, time of day and activity, holds for the whole clip). No caption, or one
dropped for guidance, is the encoder's learned null embedding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldloom.actions import (
    BUTTONS,
    NUM_BUTTONS,
    WORLD_MODEL_ACTION_DIM,
    world_model_camera,
    world_model_features,
)
from worldloom.config import doc

from .camera import hud_fill_index, pixel_centres, rotate_frames
from .text import TextConfig, TextEncoder

ACTION_DIM = WORLD_MODEL_ACTION_DIM  # 20 buttons, mu-law and linear pitch and yaw (worldloom.actions)
PREDICTIONS = ("v", "x_skip")
MOVE_COMPONENTS = 2  # walked forward, strafed right (VoxelWorld moves horizontally at once, no inertia: envs/objects.py)
T_MIN = 0.05  # x-prediction -> velocity divides by t; clamped as in JiT (Li & He 2025)


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    image_size: int = doc("frame height and width in pixels", 64)
    patch_size: int = doc("patch side, in pixels (or latent cells with an autoencoder)", 8)
    latent_channels: int = doc("autoencoder latent channels; 0 = work on pixels", 0)
    latent_downsample: int = doc("autoencoder spatial downsampling factor", 8)
    width: int = doc("transformer width", 128)
    depth: int = doc("number of blocks (spatial + temporal attention + MLP each)", 5)
    num_heads: int = doc("attention heads", 4)
    mlp_ratio: float = doc("MLP hidden width / width", 4.0)
    num_frames: int = doc("frames per training window (the rollout context is num_frames - 1)", 6)
    prediction: str = doc("output: v (velocity) or x_skip (clean frame = previous frame + output; trained on velocity)", "x_skip")
    camera_fov_deg: float = doc("x_skip turns the previous frame by the frame's camera action, as a pinhole camera of "
                                "this vertical field of view (`worldloom pretrain` fits it to the data; 0 = no turn)", 0.0)
    turned_input: bool = doc("x_skip: the network also sees the previous frame turned by the camera action, as extra "
                             "input channels (the base it corrects, pixel-aligned)", True)
    signal_input: bool = doc("the network sees each noisy frame scaled by (1 - t), its signal's share: a pure-noise frame "
                             "enters as zeros, so one-step sampling from t = 1 is deterministic and no noise leaks into "
                             "the output", False)
    dead_zone: float = doc("x_skip: corrections smaller than this many 8-bit levels are dropped (soft threshold forward, "
                           "identity backward): where nothing changes the previous frame comes through exactly", 0.0)

    hud_mask: bool = doc("x_skip with a camera warp: pixels that stay put while the view turns in the training data (the "
                         "HUD: hotbar, held item), fitted at the start and kept in the weights, are never turned (issue "
                         "18's log, section 12: the HUD kept for 64 frames)", False)
    hud_fill: bool = doc("hud_mask: before the warp turns the previous frame, its HUD pixels are filled from the nearest "
                         "scene pixel, so a turn moves no copy of the HUD into the scene (issue 18's log, section 13: "
                         "no ghost crosshairs or hotbars, +0.2 dB next frame)", False)
    move_flow: float = doc("x_skip: the network also outputs, per pixel, how far the picture moves for one step walked "
                           "forward and one strafed right (at most this many pixels each, tanh); the base is moved by "
                           "them times the step's movement keys (worldloom.pretrain.model.movement), so releasing the "
                           "keys moves nothing (0 = off)", 0.0)
    sprint_fov_deg: float = doc("x_skip with a camera warp: the vertical field of view while sprinting forward (VoxelWorld "
                                "renders 1.1 times its 70 degrees, Minecraft widens the view too): where a frame starts or "
                                "stops sprinting, the warp zooms the previous frame by the change (`view_fov_deg`; "
                                "`worldloom pretrain` fits it to the data; 0 = the view never changes)", 0.0)
    world_yaw: bool = doc("x_skip with a camera warp: where a frame's absolute pitch is known (a dataset's state_pitch, "
                          "a rollout's context), the warp turns the yaw about the world's vertical, as Minecraft does, "
                          "not about the view's own (the same at pitch 0; issue 18's log, section 34); unknown pitch: 0",
                          False)

    # Fields a checkpoint of an older format may lack (worldloom.checkpoint.FORMAT_VERSION): the version that added each.
    FIELDS_ADDED: ClassVar[dict[str, int]] = {"signal_input": 2, "dead_zone": 2, "hud_mask": 3, "hud_fill": 4, "move_flow": 6,
                                            "sprint_fov_deg": 8, "world_yaw": 8}

    def __post_init__(self):
        for name in ("image_size", "patch_size", "width", "depth", "num_heads", "num_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (context + one frame), got {self.num_frames}")
        if self.width % self.num_heads or (self.width // self.num_heads) % 2:
            raise ValueError(f"width {self.width} must split into {self.num_heads} heads of even size")
        if self.grid_size * self.patch_size != self.input_size:
            raise ValueError(f"patch_size {self.patch_size} must divide the input size {self.input_size}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.turned_input and self.prediction != "x_skip":
            raise ValueError("turned_input needs prediction x_skip")
        if not 0.0 < self.mlp_ratio <= 64.0:
            raise ValueError(f"mlp_ratio must be in (0, 64], got {self.mlp_ratio}")
        if not 0.0 <= self.dead_zone <= 64.0:
            raise ValueError(f"dead_zone must be in [0, 64] 8-bit levels, got {self.dead_zone}")
        if self.dead_zone and self.prediction != "x_skip":
            raise ValueError("dead_zone needs prediction x_skip")
        if self.hud_mask and (self.prediction != "x_skip" or self.latent_channels):
            raise ValueError("hud_mask needs prediction x_skip on pixels (latent_channels 0)")
        if self.hud_fill and not self.hud_mask:
            raise ValueError("hud_fill needs hud_mask (the pixels it fills)")
        if not 0.0 <= self.move_flow <= 16.0 or (self.move_flow and (self.prediction != "x_skip" or self.latent_channels)):
            raise ValueError(f"move_flow must be in [0, 16] pixels, and needs prediction x_skip on pixels; got {self.move_flow}")
        for name in ("camera_fov_deg", "sprint_fov_deg"):
            if not 0.0 <= getattr(self, name) < 180.0:
                raise ValueError(f"{name} must be in [0, 180) degrees, got {getattr(self, name)}")
        if self.latent_channels and self.image_size % self.latent_downsample:
            raise ValueError(f"latent_downsample {self.latent_downsample} must divide image_size {self.image_size}")

    @property
    def channels(self) -> int:
        return self.latent_channels or 3

    @property
    def input_size(self) -> int:
        """Side of what the transformer sees: pixels, or the latent grid."""
        return self.image_size // self.latent_downsample if self.latent_channels else self.image_size

    @property
    def turns_camera(self) -> bool:
        """x_skip with a camera warp: the output carries a gate channel besides the correction."""
        return self.prediction == "x_skip" and self.camera_fov_deg > 0

    @property
    def out_channels(self) -> int:
        """Correction (C), the turn gate's logit where the camera turns, then the movement flows (2 x 2)."""
        return self.channels + int(self.turns_camera) + (2 * MOVE_COMPONENTS if self.move_flow else 0)

    @property
    def in_channels(self) -> int:
        return self.channels * (2 if self.turned_input else 1)

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_size**2


# Presets change sizes only (DESIGN section 10). tiny: a few M params, trains on 2 CPU cores.
PRESETS: dict[str, WorldModelConfig] = {
    "tiny": WorldModelConfig(num_frames=3, signal_input=True, dead_zone=3.0, hud_mask=True, hud_fill=True,
                             move_flow=2.0, world_yaw=True),  # issue 18's log, 7-8, 12-13, 21, 34
    "small": WorldModelConfig(image_size=64, patch_size=4, width=384, depth=8, num_heads=6, num_frames=16),
    "large": WorldModelConfig(image_size=128, patch_size=2, latent_channels=8, latent_downsample=8,
                              width=768, depth=12, num_heads=12, num_frames=32),
}


def encode_actions(buttons: torch.Tensor, camera_deg: torch.Tensor) -> torch.Tensor:
    """(…, 20) buttons and (…, 2) camera degrees -> (…, 24) action features (worldloom.actions)."""
    return world_model_features(buttons, camera_deg)


def camera_from_actions(action: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """Camera degrees of action features (…, 24), zero where the mask drops the action. -> (…, 2)."""
    return world_model_camera(action) * action_mask[..., None]


_B = {name: BUTTONS.index(name) for name in ("back", "forward", "left", "right", "sneak", "sprint")}


def sprinting(action: torch.Tensor) -> torch.Tensor:
    """Whether each action sprints, as VoxelWorld and Minecraft decide it: sprint held while moving forward,
    not sneaking (envs/objects.py, apply_movement). Action features (…, 24) -> (…) bool."""
    b = action[..., :NUM_BUTTONS] > 0.5
    return b[..., _B["sprint"]] & b[..., _B["forward"]] & ~b[..., _B["back"]] & ~b[..., _B["sneak"]]


def view_fov_deg(action: torch.Tensor, action_mask: torch.Tensor, cfg, prev_action=None):
    """Each frame's vertical field of view before and after its action, for a config with a sprint field of view
    (sprinting widens it): two (B, T) tensors in degrees, or None (the view never changes). action (B, T, 24),
    action_mask (B, T); prev_action: (action (B, 24), mask (B,)) of the frame before frame 0, or None. Where an
    action is unknown (masked), the view is taken not to change across it."""
    if not getattr(cfg, "sprint_fov_deg", 0.0) or cfg.camera_fov_deg <= 0:
        return None
    base, sprint = cfg.camera_fov_deg, cfg.sprint_fov_deg
    after = torch.where(sprinting(action) & action_mask, sprint, base).float()  # (B, T)
    if prev_action is None:
        first, first_known = after[:, :1], torch.zeros_like(action_mask[:, :1])
    else:
        first = torch.where(sprinting(prev_action[0]) & prev_action[1], sprint, base).float()[:, None]
        first_known = prev_action[1][:, None].bool()
    before = torch.cat([first, after[:, :-1]], dim=1)
    known = action_mask.bool() & torch.cat([first_known, action_mask[:, :-1].bool()], dim=1)
    return torch.where(known, before, after), after
SPRINT_SPEED, SNEAK_SPEED = 1.3, 0.3  # per step, against walking's 1 (envs/objects.py: 0.28, 0.065 and 0.215 blocks;
                                      # Minecraft: 5.6 and 1.3 against 4.3 m/s); also pose memory's (memory.py)


def movement(action: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """How far each step's keys move the player, in walking steps: (forward, right) (…, 2), from action
    features (…, 24) (sprinting forward 1.3, sneaking 0.3, diagonals 0.71 each); zero where the mask drops
    the action. An open inventory also stops movement in the engine; the frames show it, the keys do not."""
    b = action[..., :NUM_BUTTONS] > 0.5
    fwd = b[..., _B["forward"]].float() - b[..., _B["back"]].float()
    side = b[..., _B["right"]].float() - b[..., _B["left"]].float()
    sneak = b[..., _B["sneak"]]
    speed = torch.where(sneak, SNEAK_SPEED, torch.where(b[..., _B["sprint"]] & (fwd > 0), SPRINT_SPEED, 1.0))
    speed = speed * torch.where((fwd != 0) & (side != 0), 0.7071, 1.0)
    return torch.stack([fwd, side], -1) * (speed * action_mask.float())[..., None]


def movement_flow(raw: torch.Tensor, action: torch.Tensor, action_mask: torch.Tensor, max_px: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's flow channels (B, T, 2 MOVE_COMPONENTS, H, W) and each frame's action features
    (B, T, 24), mask (B, T) -> the base's flow (B, T, 2, H, W) in pixels, (dx, dy): each field (at
    most max_px, tanh) times its movement key (`movement`), and which frames move at all (B, T) bool."""
    fields = torch.tanh(raw.float()).unflatten(2, (MOVE_COMPONENTS, 2)) * max_px  # (B, T, K, 2, H, W)
    keys = movement(action, action_mask)  # (B, T, K)
    return (fields * keys[..., None, None, None]).sum(2), (keys != 0).any(-1)


def move_frames(frames: torch.Tensor, flow_px: torch.Tensor) -> torch.Tensor:
    """frames (N, C, H, W) resampled where each pixel's flow (N, 2, H, W), (dx, dy) in pixels, points:
    out(p) = frames(p + flow(p)), bilinear, the border repeated (as the camera warp's)."""
    N, C, H, W = frames.shape
    gy, gx = pixel_centres(H, W, frames.device, flow_px.dtype)
    flow_px = flow_px.nan_to_num(0.0, 0.0, 0.0)  # a diverged network's NaN: grid_sample reads memory out of bounds on one
    grid = torch.stack([gx + flow_px[:, 0] * (2.0 / W), gy + flow_px[:, 1] * (2.0 / H)], dim=-1)  # (N, H, W, 2)
    return F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
                         ).to(frames.dtype)


def shift_actions(action: torch.Tensor, has_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step actions -> the action that produced each frame: frame t gets action[t-1].

    action (B, T, A), has_action (B, T) bool -> same shapes; frame 0 has none (null action).
    """
    action = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], dim=1)
    has_action = torch.cat([torch.zeros_like(has_action[:, :1]), has_action[:, :-1]], dim=1)
    return action, has_action


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of noise levels t in [0, 1] (scaled by 1000 as in DiT). (…) -> (…, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * 1000.0 * freqs  # (…, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding (MAE / DiT). -> (grid*grid, dim), on the CPU: a constant, also where the
    model is built on the meta device for its shapes (arange there takes torch's Python decompositions, whose first
    use imports them: 1.6 s of every process that checks a checkpoint against its config; untrusted.check_fits)."""
    coords = torch.arange(grid, dtype=torch.float32, device="cpu")
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32, device="cpu") / quarter)
    out = [f(pos.reshape(-1, 1) * omega) for pos in (yy, xx) for f in (torch.sin, torch.cos)]
    emb = torch.cat(out, dim=1)  # (N, 4*quarter)
    return F.pad(emb, (0, dim - emb.shape[1]))


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding over the last dim. x (…, T, Dh), pos (T,) frame indices."""
    half = x.shape[-1] // 2
    freqs = 1.0 / 10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = pos.float()[:, None] * freqs  # (T, half)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis; optional RoPE, causal mask, past K/V."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, pos=None, causal=False, past_kv=None):
        # x (B', L, D); pos (L,) frame indices for RoPE; past_kv ((B', H, P, Dh), (B', H, P, Dh))
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        if pos is not None:  # (B', H, L, Dh)
            q, k = rope(q, pos), rope(k, pos)
        kv = (k, v)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
            causal = causal and L > 1
            if causal:  # query i (absolute P+i) sees keys 0..P+i
                P = past_kv[0].shape[2]
                mask = torch.ones(L, P + L, dtype=torch.bool, device=x.device).tril(P)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = out.transpose(1, 2).reshape(B, L, D)  # (B', L, D)
        return self.proj(out), kv


class Block(nn.Module):
    """Spatial attention within each frame, causal temporal attention per patch, MLP; adaLN-zero."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.spatial = Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.temporal = Attention(width, num_heads)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 9 * width))

    def forward(self, x, c, pos, past_kv=None):
        # x (B, T, N, D) tokens; c (B, T, D) per-frame condition; pos (T,) frame indices
        B, T, N, D = x.shape
        mods = self.ada(c)[:, :, None].chunk(9, dim=-1)  # 9 x (B, T, 1, D)
        h = modulate(self.norm1(x), mods[0], mods[1]).reshape(B * T, N, D)
        h, _ = self.spatial(h)
        x = x + mods[2] * h.view(B, T, N, D)
        h = modulate(self.norm2(x), mods[3], mods[4]).transpose(1, 2).reshape(B * N, T, D)
        h, kv = self.temporal(h, pos=pos, causal=True, past_kv=past_kv)  # (B*N, T, D)
        x = x + mods[5] * h.view(B, N, T, D).transpose(1, 2)
        x = x + mods[8] * self.mlp(modulate(self.norm3(x), mods[6], mods[7]))
        return x, kv  # (B, T, N, D)


class WorldModel(nn.Module):
    """Velocity v(x_t, t, action[, caption]) for every frame of a window, causal in time."""

    def __init__(self, cfg: WorldModelConfig, text: TextConfig | None = None):
        super().__init__()
        self.cfg, self.text_cfg = cfg, text
        p, D = cfg.patch_size, cfg.width
        self.patch_embed = nn.Linear(cfg.in_channels * p * p, D)
        self.register_buffer("pos_embed", sincos_2d(cfg.grid_size, D), persistent=False)
        self.t_embed = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.a_embed = nn.Sequential(nn.Linear(ACTION_DIM, D), nn.SiLU(), nn.Linear(D, D))
        self.null_action = nn.Parameter(torch.zeros(D))
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.final = nn.Linear(D, cfg.out_channels * p * p)
        if cfg.hud_mask:  # (H, W) 1 where the picture never turns (set by training), saved with the weights
            self.register_buffer("hud", torch.zeros(cfg.input_size, cfg.input_size))
        self._init_weights()
        self.text = None if text is None else TextEncoder(text, D)  # its own init (pretrain/text.py)

    def hud_fill_index(self):
        """hud_fill_index of the HUD mask, cached until the mask changes (training sets it after init)."""
        cached = getattr(self, "_hud_fill", None)
        if cached is None or cached[0].device != self.hud.device or not torch.equal(cached[0], self.hud):
            self._hud_fill = (self.hud.clone(), hud_fill_index(self.hud))
        return self._hud_fill[1]

    def _init_weights(self):
        if self.null_action.is_meta:  # built for its shapes (untrusted.check_fits): no values to draw, and meta's
            return  # normal_ takes torch's Python decompositions, whose first use imports dynamo (3 s a process)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.null_action, std=0.02)
        for block in self.blocks:  # adaLN-zero: every residual branch starts as identity
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.final_ada[-1], self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def condition(self, t, action, action_mask, text=None):
        """Per-frame condition: noise level + action (or the null action) [+ caption]. -> (B, T, D)."""
        # t (B, T); action (B, T, A) features of the action that produced each frame; action_mask (B, T);
        # text (B, L) word ids of each window's caption (all PAD or None: the null caption)
        a = self.a_embed(action)  # (B, T, D)
        a = torch.where(action_mask[..., None], a, self.null_action.to(a.dtype))
        c = self.t_embed(timestep_embedding(t, 256)) + a
        if self.text is not None:
            if text is None:
                e = self.text.null.to(c.dtype).expand(c.shape[0], -1)  # (B, D)
            else:
                e = self.text(text)  # (B, D)
            c = c + e[:, None].to(c.dtype)
        elif text is not None:
            raise ValueError("this world model has no caption encoder (trained without --text); pass text=None")
        return c

    def patchify(self, x):
        B, T, C, H, W = x.shape  # (B, T, C, H, W)
        p, g = self.cfg.patch_size, self.cfg.grid_size
        x = x.reshape(B, T, C, g, p, g, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(B, T, g * g, C * p * p)  # (B, T, N, C*p*p)

    def unpatchify(self, x):
        B, T, N, Cpp = x.shape  # (B, T, N, C*p*p)
        p, g = self.cfg.patch_size, self.cfg.grid_size
        C = Cpp // (p * p)
        x = x.reshape(B, T, g, g, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, T, C, g * p, g * p)  # (B, T, C, H, W)

    def forward(self, x, t, action, action_mask, past_kv=None, start=0, return_kv=False, prev=None, prev_t=None,
                dead_zone=None, text=None, recall=None, canvas=None, prev_action=None, view_pitch=None):
        """x (B, T, C, H, W), t (B, T), action (B, T, A), action_mask (B, T) bool -> v (B, T, C, H, W).

        past_kv: per-block temporal K/V of earlier frames (from a previous call with
        return_kv=True); start: frame index of x[:, 0], so RoPE sees absolute positions;
        prev (B, C, H, W) and prev_t (B,): the frame before x[:, 0] as the model saw it
        (x_skip only; none: the first frame has no skip); dead_zone: 8-bit levels of correction
        dropped (x_skip; none: the config's, the one it was trained with; samplers pass their own);
        text (B, L): word ids of each window's caption (pretrain/text.py; models with a caption encoder);
        recall (seen (B, C, H, W), take (B, H, W) bool) or None: what a pose memory shows of the last frame's
        view (pretrain/memory.py), which replaces the turned previous frame where `take` (x_skip with a warp);
        canvas: a rollout's pretrain/canvas.Canvas of `prev` (one new frame, x_skip with a warp): the warps
        move its coordinates with the frame, and the base samples the real frame once (its `pending` is the new one's);
        prev_action: (action (B, A), mask (B,)) that produced the frame before x[:, 0] (its field of view: `view_fov_deg`);
        view_pitch: (B, T) the absolute pitch in degrees of the frame before each frame (positive looks down; NaN where
        unknown), which a `world_yaw` model's warp turns the yaw about the world's vertical from; None: unknown.
        """
        T, cfg = x.shape[1], self.cfg
        seen = x * (1 - t)[..., None, None, None] if cfg.signal_input else x  # (B, T, C, H, W)
        if cfg.prediction == "x_skip":
            before, levels = previous_frames(x, t, prev, prev_t)
            if canvas is not None:  # (B, 1, 2C + 3, H, W): the frame, its sharp layer, coordinates and share
                before = canvas.stack(before[:, 0])[:, None]
            source = before
            if cfg.hud_fill:  # the HUD is not part of the scene: fill it from beside it before turning
                source = before.flatten(-2)[..., self.hud_fill_index()].view_as(before)
            pitch = view_pitch.nan_to_num(0.0) if view_pitch is not None and getattr(cfg, "world_yaw", False) else None
            turned = rotate_frames(source, camera_from_actions(action, action_mask), cfg.camera_fov_deg,
                                   view_fov_deg(action, action_mask, cfg, prev_action), pitch)
            if cfg.hud_mask:  # the HUD stays where it is, whatever the turn
                turned = torch.where(self.hud > 0.5, before, turned)
            if recall is not None and recall[0] is not None:  # a remembered view of the newest frame: the better base
                if canvas is not None:
                    last = canvas.with_recall(turned[:, -1], recall[0], recall[1])
                else:
                    last = torch.where(recall[1][:, None], recall[0].to(turned.dtype), turned[:, -1])
                turned = torch.cat([turned[:, :-1], last[:, None]], dim=1)
            if cfg.turned_input:
                shown = turned if canvas is None else canvas.collapse(turned[:, 0])[:, None].to(x.dtype)
                seen = torch.cat([seen, shown], dim=2)  # (B, T, 2C, H, W)
        h = self.patch_embed(self.patchify(seen)) + self.pos_embed  # (B, T, N, D)
        c = self.condition(t, action, action_mask, text)  # (B, T, D)
        pos = torch.arange(start, start + T, device=x.device)
        new_kv = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, c, pos, None if past_kv is None else past_kv[i])
            new_kv.append(kv)
        shift, scale = self.final_ada(c)[:, :, None].chunk(2, dim=-1)  # (B, T, 1, D)
        h = modulate(self.final_norm(h), shift, scale)  # (B, T, N, D)
        out = self.unpatchify(self.final(h))  # (B, T, out_channels, H, W)
        C = cfg.channels
        if cfg.prediction == "x_skip":
            turn = out[:, :, C:C + 1] if cfg.turns_camera else None
            correction = out[:, :, :C]
            flow = moving = None
            if cfg.move_flow:  # (B, T, 2, H, W) pixels: the fields per step walked and strafed, times the keys
                flow, moving = movement_flow(out[:, :, C + int(cfg.turns_camera):], action, action_mask, cfg.move_flow)
                if recall is not None and recall[0] is not None:  # a remembered view is already where the keys led
                    flow = torch.cat([flow[:, :-1], flow[:, -1:] * ~recall[1][:, None, None]], dim=1)
            zone = cfg.dead_zone if dead_zone is None else dead_zone
            if zone > 0:  # soft threshold forward, identity backward (the net still learns inside the zone)
                tau = zone * 2.0 / 255.0  # 8-bit levels in model units ([-1, 1])
                correction = correction + (correction.sign() * (correction.abs() - tau).clamp_min(0) - correction).detach()
            out = skip_velocity(x, t, correction, turn, before, turned, levels, flow, moving,
                                self.hud_fill_index() if cfg.hud_fill else None, self.hud if cfg.hud_mask else None,
                                canvas)
        return (out, new_kv) if return_kv else out


def previous_frames(x, t, prev=None, prev_t=None):
    """The frame before each frame of x and its noise level. -> (B, T, C, H, W), (B, T).

    prev (B, C, H, W), prev_t (B,): the frame before x[:, 0]; none: zeros at noise level 1 (no skip).
    """
    if prev is None:
        prev, prev_t = torch.zeros_like(x[:, 0]), torch.ones_like(t[:, 0])
    return torch.cat([prev[:, None], x[:, :-1]], dim=1), torch.cat([prev_t[:, None], t[:, :-1]], dim=1)


def skip_velocity(x, t, correction, turn, before, turned, levels, flow=None, moving=None, fill=None, hud=None,
                  canvas=None):
    """x_skip: clean frame = (1 - t_prev) * base + correction, base = the previous frame, turned where the
    turn gate says; -> velocity (x_t - x_0) / t.

    At initialisation (correction 0, gate 0.5) the model predicts the previous frame half turned by
    the camera action, and it learns only what changes (the strong baseline of slow video, and the
    motion-compensated prediction of video codecs). A noisy previous frame counts less.
    correction (B, T, C, H, W); turn (B, T, 1, H, W) logits, or None without a camera warp; flow
    (B, T, 2, H, W) pixels the base is moved by in the frames where `moving` (B, T) (the movement keys
    are held; elsewhere the flow is zero and the base stays exact), its source with the HUD filled
    (`fill`, a hud_fill_index) and the HUD (`hud` (H, W)) left in place; None: no movement flow.
    canvas (pretrain/canvas.py): before and turned are its stacks (B, 1, 2C + 3, H, W) of one new frame;
    the base is the stack collapsed after the gate and the flow.
    """
    base = before
    if turn is not None and canvas is not None:
        base = canvas.mix(before[:, 0], turned[:, 0], torch.sigmoid(turn[:, 0].float()))[:, None]
    elif turn is not None:
        base = before + torch.sigmoid(turn.float()) * (turned - before)  # 1: turned, 0: as it was
    if flow is not None:
        if moving.any():  # (also at a zero flow: the warp's gradient is how the flow learns)
            src = base[moving]  # (N, C, H, W)
            if fill is not None:
                src = src.flatten(-2)[..., fill].view_as(src)
            moved = move_frames(src, flow[moving])
            if hud is not None:
                moved = torch.where(hud > 0.5, base[moving], moved)
            base = base.clone()
            base[moving] = moved.to(base.dtype)
    if canvas is not None:
        base = canvas.collapse(base[:, 0])[:, None].to(x.dtype)
    x0 = (1 - levels)[..., None, None, None] * base + correction
    return (x - x0) / t.clamp_min(T_MIN)[..., None, None, None]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_frame(cfg: WorldModelConfig, context: int | None = None) -> float:
    """Forward FLOPs for one frame's tokens (matmuls only): 2 * params-in-matmuls * tokens + attention."""
    D, N, L = cfg.width, cfg.tokens_per_frame, cfg.depth
    T = context or cfg.num_frames
    per_token = L * (2 * (4 * D * D) * 2 + 2 * 2 * cfg.mlp_ratio * D * D)  # 2 attentions + MLP
    attn = L * 2 * 2 * D * (N + T)  # scores + weighted sum, spatial over N, temporal over T
    return N * (per_token + attn) + 2 * N * D * cfg.channels * cfg.patch_size**2 * 2
