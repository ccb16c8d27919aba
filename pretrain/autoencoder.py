"""A small convolutional autoencoder: frames to latents for the latent presets (`large`).

    codec = load_codec(run_dir, model_cfg)        # PixelCodec, or LatentCodec with trained weights
    z = codec.encode(x)                           # (B, T, 3, H, W) in [-1, 1] -> (B, T, C, h, w)
    x = codec.decode(z)

Oasis and Sora diffuse in an autoencoder's latent space; at 128x128 a x8 downsampling with 8
channels keeps 2 patches of 2x2 per 16 pixels, so a frame is 64 tokens. The autoencoder is
trained first, by `worldloom pretrain` itself (L1 + MSE reconstruction, a small latent L2
penalty), then frozen; latents are divided by their measured std so the flow sees unit scale
(Stable Diffusion's scale factor). Pixel presets use PixelCodec, the identity.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from worldloom.checkpoint import first_non_finite, load_weights_into
from worldloom.errors import UserError
from worldloom.io import atomic_path
from worldloom.training import TrainingDiverged, check_finite

AE_FILE = "autoencoder.safetensors"


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class Autoencoder(nn.Module):
    """Conv encoder (stride-2 stages) and decoder (nearest upsampling), log2(downsample) stages each."""

    def __init__(self, latent_channels: int, downsample: int, width: int = 64):
        super().__init__()
        stages = int(math.log2(downsample))
        if 2**stages != downsample:
            raise ValueError(f"downsample must be a power of 2, got {downsample}")
        enc, c = [nn.Conv2d(3, width, 3, padding=1)], width
        for i in range(stages):
            nxt = min(width * 2 ** (i + 1), 256)
            enc += [_stage(c, nxt), nn.Conv2d(nxt, nxt, 3, stride=2, padding=1)]
            c = nxt
        enc += [nn.Conv2d(c, latent_channels, 1)]
        dec = [nn.Conv2d(latent_channels, c, 3, padding=1)]
        for i in reversed(range(stages)):
            nxt = max(width * 2**i, width)
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), _stage(c, nxt)]
            c = nxt
        dec += [nn.Conv2d(c, 3, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x):
        z = self.encoder(x)  # (B, C, h, w)
        return self.decoder(z), z  # (B, 3, H, W)


def autoencoder_loss(ae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [-1, 1] -> reconstruction loss plus a small latent penalty."""
    recon, z = ae(x)
    return F.l1_loss(recon, x) + F.mse_loss(recon, x) + 1e-4 * z.pow(2).mean()


class PixelCodec:
    """Pixel presets: the model sees frames as they are."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class LatentCodec:
    """A frozen autoencoder and its latent scale; works on (B, T, ...) windows."""

    def __init__(self, ae: Autoencoder, scale: float):
        self.ae, self.scale = ae.eval().requires_grad_(False), scale

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        z = self.ae.encoder(x.flatten(0, 1)) / self.scale  # (B*T, C, h, w)
        return z.unflatten(0, (B, T))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        B, T = z.shape[:2]
        return self.ae.decoder(z.flatten(0, 1) * self.scale).clamp(-1, 1).unflatten(0, (B, T))


def train_autoencoder(model_cfg, frame_batches, steps: int, lr: float, device) -> LatentCodec:
    """Fit the autoencoder on (B, T, 3, H, W) batches for `steps` steps; return it with its scale."""
    ae = Autoencoder(model_cfg.latent_channels, model_cfg.latent_downsample).to(device)
    opt = torch.optim.AdamW(ae.parameters(), lr=lr)
    for step in range(steps):
        x = next(frame_batches).flatten(0, 1).to(device)
        loss = autoencoder_loss(ae, x)
        check_finite(loss.item(), None, step + 1, None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        scale = float(ae.encoder(next(frame_batches).flatten(0, 1).to(device)).std().clamp_min(1e-3))
    return LatentCodec(ae, scale)


def save_codec(codec: LatentCodec, run_dir: Path, model_cfg) -> None:
    meta = {"scale": json.dumps(codec.scale), "latent_channels": str(model_cfg.latent_channels),
            "downsample": str(model_cfg.latent_downsample)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in codec.ae.state_dict().items()}
    bad = first_non_finite(tensors)
    if bad is not None:
        raise TrainingDiverged(f"autoencoder tensor {bad!r} is not finite: nothing was written; lower --lr")
    with atomic_path(Path(run_dir) / AE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_codec(run_dir: Path, model_cfg, device="cpu"):
    """PixelCodec for pixel presets; the run's trained LatentCodec otherwise."""
    if not model_cfg.latent_channels:
        return PixelCodec()
    from safetensors import safe_open

    path = Path(run_dir) / AE_FILE
    with safe_open(str(path), framework="pt") as f:
        scale = json.loads(f.metadata()["scale"])
    ae = Autoencoder(model_cfg.latent_channels, model_cfg.latent_downsample)
    tensors = load_file(str(path), device=str(device))
    bad = first_non_finite(tensors)
    if bad is not None:
        raise UserError(f"{path}: tensor {bad!r} holds NaN or infinite values; this autoencoder cannot be used")
    load_weights_into(ae, tensors, path)
    return LatentCodec(ae.to(device), scale)
