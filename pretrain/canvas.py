"""A sharp canvas for rollouts: the last real frame resampled once through all the warps since, not once per step.

    sample = SampleConfig(canvas=True)                 # the default of eval and rollout
    frames = rollout(model, context, actions, has, horizon, sample)

An x_skip model builds each new frame on its previous one, turned by the camera action and moved
by the movement flow (model.py). A rollout feeds its own frames back, so a frame 32 steps in has
been resampled 32 times, and each bilinear resample at a fraction of a pixel is a low-pass
filter: the textures melt into gradients by horizon 8-16 and the colours drift with them
(issue 18's log, section 28: with the network's corrections switched off, the warps alone drift
the colours nearly as far as the model does). The canvas keeps the frame as two layers: a sharp
layer, the last real frame `R` sampled at a per-pixel coordinate map `M` (where each pixel's
content was in `R`), and the rest (the network's corrections since, and what the warps brought
into view). Every warp is linear in the image, so it moves `M` as it moves the image: the same
turn, gate and flow applied to the coordinate channels compose the warps, and `R` is sampled
once at the composed map. The rest is warped step by step as before; it holds the corrections,
which are smooth already.

The gate (the network's per-pixel mix of the turned and the unturned frame) mixes the image as
trained, but the coordinates take the side the gate favours (turned where it is over 0.5): a
mix of two coordinates would under-turn each step, and the image mix of the sharp layer would
leave a trail (measured, section 28). A pose-memory recall is a one-shot resample of a real
frame already; where it is taken the sharp layer is the recall itself, carried by the warps as an
image (a per-pixel share, moved with the coordinates, says how much of the sharp layer is the
last real frame's).

What it is not: it does not make up content. What a turn brings into view is the border of `R`
repeated, plus the network's correction, as before. Text-guided sampling (a doubled batch), latent
models and models without a camera warp do not use it (`flow.rollout` decides, as for pose memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .camera import pixel_centres


def identity_coords(B: int, H: int, W: int, device=None) -> torch.Tensor:
    """grid_sample coordinates of every pixel centre (align_corners=False): (B, 2, H, W), (x, y) in [-1, 1]."""
    gy, gx = pixel_centres(H, W, device)
    return torch.stack([gx, gy])[None].expand(B, 2, H, W).clone()


class Canvas:
    """The sharp layer of one rollout's newest frame (module docstring).

    real (B, C, H, W): the last real frame, the HUD filled where `fill` (a camera.hud_fill_index) is
    given; `hud` (H, W) bool or None: pixels that never turn (the sharp layer keeps them as they are).
    """

    CHANNELS = 3  # the coordinate map's two, and the share of the sharp layer that comes from the real frame

    def __init__(self, real: torch.Tensor, hud: torch.Tensor | None = None, fill: torch.Tensor | None = None):
        B, C, H, W = real.shape
        self.source = real.float() if fill is None else real.float().flatten(-2)[..., fill].view_as(real).float()
        self.hud = None if hud is None else hud.to(real.device) > 0.5
        self.sharp = real.float().clone()  # (B, C, H, W): the sharp layer of the newest frame
        self.coords = identity_coords(B, H, W, real.device)  # (B, 2, H, W): where it was in `real`
        self.share = torch.ones(B, 1, H, W, device=real.device)  # 1: the sharp layer is `real` at `coords`
        self.pending = None

    def stack(self, frame: torch.Tensor) -> torch.Tensor:
        """The newest frame (B, C, H, W) with its sharp layer, coordinates and share: (B, 2C + 3, H, W), what the
        warps move."""
        return torch.cat([frame.float(), self.sharp, self.coords, self.share], dim=1)

    def with_recall(self, stacked: torch.Tensor, seen: torch.Tensor, take: torch.Tensor) -> torch.Tensor:
        """A turned stack (B, 2C + 3, H, W) with a pose memory's recall (seen (B, C, H, W), take (B, H, W))
        in place: the frame and its sharp layer both the recalled pixels (no correction on them yet), which are
        not the real frame's (share 0: a recall is a one-shot resample of another real frame already)."""
        C = seen.shape[1]
        take = take[:, None]
        share = stacked[:, -1:] * ~take
        return torch.cat([torch.where(take, seen.float(), stacked[:, :C]), torch.where(take, seen.float(), stacked[:, C:2 * C]),
                          stacked[:, 2 * C:-1], share], dim=1)

    def mix(self, before: torch.Tensor, turned: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The gate's mix of stacks (B, 2C + 3, H, W), gate (B, 1, H, W) in [0, 1]: the images mixed, the
        coordinates and share from the side the gate favours."""
        C = (before.shape[1] - self.CHANNELS) // 2
        images = before[:, :2 * C] + gate * (turned[:, :2 * C] - before[:, :2 * C])
        coords = torch.where(gate > 0.5, turned[:, 2 * C:], before[:, 2 * C:])
        return torch.cat([images, coords], dim=1)

    def collapse(self, stacked: torch.Tensor) -> torch.Tensor:
        """A warped stack (B, 2C + 3, H, W) -> the frame (B, C, H, W): the real frame sampled once at the
        composed coordinates (where the sharp layer is its; elsewhere the sharp layer as warped), plus the
        frame's part outside its sharp layer, warped as it went. The new sharp layer, coordinates and share
        are kept as `pending` until `commit`."""
        C = (stacked.shape[1] - self.CHANNELS) // 2
        frame, old_sharp, coords, share = stacked[:, :C], stacked[:, C:2 * C], stacked[:, 2 * C:-1], stacked[:, -1:]
        resampled = F.grid_sample(self.source, coords.permute(0, 2, 3, 1).float(), mode="bilinear",
                                  padding_mode="border", align_corners=False)
        sharp = old_sharp + share * (resampled - old_sharp)
        if self.hud is not None:
            sharp = torch.where(self.hud, old_sharp, sharp)
        self.pending = (sharp, coords, share)
        return sharp + frame - old_sharp

    def commit(self) -> None:
        """The last `collapse` was the new frame's: its sharp layer becomes the canvas's."""
        if self.pending is not None:
            self.sharp, self.coords, self.share = self.pending
            self.pending = None
