"""Motion compensation from camera actions: the previous frame turned by the action's rotation.

    fov = fit_fov_deg(prev, nxt, camera_deg)          # 1-D search on frame pairs of the training data
    base = rotate_frames(prev, camera_deg, fov)       # (…, C, H, W): what a turn of the view shows
    sprint = fit_sprint_fov_deg(prev, nxt, camera_deg, sprint_before, sprint_after, fov)  # the view while sprinting

A camera action [pitch, yaw] in degrees (MineRL convention: pitch positive looks down, yaw
positive turns right) rotates a pinhole camera about its centre, so the next frame is the
previous one moved by the rotation's homography, the motion-compensated prediction of video
codecs. Only the vertical field of view is unknown; it is fitted from data, so the same code
serves any env with camera actions (VoxelWorld renders at 70 degrees, Minecraft's default), and
a fitted 0 means no warp. Sprinting widens the view (VoxelWorld renders it at 1.1 times the field of
view; Minecraft widens it too), so where a frame starts or stops sprinting the warp also zooms, by a
sprint field of view fitted the same way (the frames of a stopped sprint are 1,500 8-bit levels²
from the last one on VoxelWorld, issue 16's counterfactual states, where a copy or a turn is 0).
The model's yaw turns about the view's vertical axis, exact at pitch 0 (the frame alone does not
say how far up or down the player looks); Minecraft turns it about the world's vertical, and
`rotation_grid` does too when given the previous view's absolute pitch (`pitch_deg`): looking down
40 degrees, a yaw of 8 is predicted 2-3 times closer (tested on VoxelWorld). The world model does
not pass a pitch yet (issue 18's log, section 34: how a pitch is known without the engine). The warp is bilinear (on
VoxelWorld's held-out pairs the best of copy and turn scores 20.27 dB on turning frames
bilinear, 19.96 nearest, 19.25 copy alone); a turn that moves the centre by under half a pixel
(the players' jitter) leaves the frame as it is, bit for bit. What turns into view repeats the
border; the network's correction fills it in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FOV_CANDIDATES_DEG = tuple(range(20, 131, 2))  # the search grid: every 2 degrees over plausible cameras
MIN_GAIN = 0.02  # a fitted warp must cut the moving pairs' error by 2%, else no warp (0)
MIN_SHIFT_PX = 0.5  # turns that move the centre less than this are left out: the frame stays exact


def pixel_centres(height: int, width: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample coordinates of every pixel centre (align_corners=False): y (H, W) down and x (H, W)
    right, in [-1, 1]. The one grid every warp here (turn, recall, movement flow, canvas) starts from."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    return torch.meshgrid(ys, xs, indexing="ij")


def view_rays(fov_deg: float, height: int, width: int, device=None) -> torch.Tensor:
    """Each pixel centre's ray in the camera's axes (right, up, forward), forward 1: (H, W, 3), for a
    pinhole of vertical field of view `fov_deg` and square pixels."""
    half = math.tan(math.radians(fov_deg) / 2)
    yn, xn = pixel_centres(height, width, device)
    aspect = width / height
    return torch.stack([xn * half * aspect, -yn * half, torch.ones_like(xn)], dim=-1)


def rotation_grid(camera_deg: torch.Tensor, fov_deg, height: int, width: int, fov_from_deg=None,
                  pitch_deg: torch.Tensor | None = None) -> torch.Tensor:
    """Where each pixel of the turned view was in the previous view. (N, 2) -> (N, H, W, 2) in [-1, 1].

    fov_deg: the turned view's vertical field of view, a float or (N,) degrees; fov_from_deg: the
    previous view's (default the same): a change of field of view (sprinting's, `view_fov_deg`) zooms.
    pitch_deg: (N,) the previous view's absolute pitch (degrees, positive looks down), or None: the yaw
    then turns about the view's own vertical axis, which is the world's only at pitch 0. Given, the
    yaw turns about the world's vertical, as Minecraft's does (the new pitch clamped to +-90): looking
    down, a yaw swings the picture about the point below the player (issue 18's log, section 34).
    """
    dev, n = camera_deg.device, camera_deg.shape[0]
    half_to, half_from = _half_extent(fov_deg, n, dev), _half_extent(fov_deg if fov_from_deg is None else fov_from_deg, n, dev)
    aspect = width / height
    yn, xn = pixel_centres(height, width, dev)  # (H, W) in [-1, 1]
    # each pixel's ray (right, up, forward): (H, W, 3), or (N, H, W, 3) with a field of view per view
    ray = torch.stack([xn * half_to * aspect, -yn * half_to, torch.ones_like(xn * half_to)], dim=-1)
    pitch, yaw = torch.deg2rad(camera_deg.float()).unbind(-1)  # (N,)
    if pitch_deg is None:
        rotation = _yaw(yaw) @ _look_down(pitch)
    else:  # the new view in the old one: un-pitch the old view, turn about the vertical, pitch to the new view
        before = pitch_deg.float().to(dev)
        after = (before + camera_deg[:, 0].float()).clamp(-90.0, 90.0)
        rotation = _look_down(-torch.deg2rad(before)) @ _yaw(yaw) @ _look_down(torch.deg2rad(after))
    old = torch.einsum("nij,hwj->nhwi" if ray.dim() == 3 else "nij,nhwj->nhwi", rotation, ray)  # (N, H, W, 3)
    z = old[..., 2].clamp_min(1e-3)
    return torch.stack([old[..., 0] / z / (half_from * aspect), -old[..., 1] / z / half_from], dim=-1)


def _look_down(pitch: torch.Tensor) -> torch.Tensor:
    """(N,) radians -> (N, 3, 3): a view pitched down by each angle, in the axes (right, up, forward)."""
    c, s, zero, one = pitch.cos(), pitch.sin(), torch.zeros_like(pitch), torch.ones_like(pitch)
    return torch.stack([one, zero, zero, zero, c, -s, zero, s, c], -1).view(-1, 3, 3)


def _yaw(yaw: torch.Tensor) -> torch.Tensor:
    """(N,) radians -> (N, 3, 3): a view turned right by each angle about its up axis."""
    c, s, zero, one = yaw.cos(), yaw.sin(), torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).view(-1, 3, 3)


def _half_extent(fov_deg, n: int, device):
    """tan(fov / 2): a float for one field of view, an (N, 1, 1) tensor for one per view."""
    if isinstance(fov_deg, (int, float)):
        return math.tan(math.radians(fov_deg) / 2)
    fov = torch.as_tensor(fov_deg, dtype=torch.float32, device=device).expand(n)
    return torch.tan(torch.deg2rad(fov) / 2)[:, None, None]


def centre_shift_px(camera_deg: torch.Tensor, fov_deg: float, height: int) -> torch.Tensor:
    """How far a turn moves the centre of the view, in pixels, along the larger axis. (…, 2) -> (…)."""
    return torch.tan(torch.deg2rad(camera_deg.float().abs())).amax(-1) * (height / 2) / math.tan(math.radians(fov_deg) / 2)


def rotate_frames(frames: torch.Tensor, camera_deg: torch.Tensor, fov_deg: float, view_fov_deg=None,
                  pitch_deg: torch.Tensor | None = None) -> torch.Tensor:
    """Each frame as the view after its camera action. frames (…, C, H, W), camera_deg (…, 2) -> (…, C, H, W).

    view_fov_deg: None, or each frame's (field of view before, after) in degrees, two (…) tensors
    (`view_fov_deg`: sprinting widens the view), so a change of it zooms as well as turns.
    pitch_deg: None, or (…) each frame's absolute pitch in degrees before its action: the yaw then turns
    about the world's vertical (`rotation_grid`).
    fov_deg 0, or a turn under half a pixel with no change of field of view, returns the frame itself, bit for bit.
    """
    if fov_deg <= 0:
        return frames
    lead, (C, H, W) = frames.shape[:-3], frames.shape[-3:]
    flat, cam = frames.reshape(-1, C, H, W), camera_deg.reshape(-1, 2)
    moved = centre_shift_px(cam, fov_deg, H) >= MIN_SHIFT_PX  # (N,)
    since = to = None
    if view_fov_deg is not None:
        since, to = (v.reshape(-1).to(cam.device).float() for v in view_fov_deg)
        moved = moved | (since != to)
    if not moved.any():
        return frames
    pitch = None if pitch_deg is None else pitch_deg.reshape(-1).to(cam.device).float()[moved]
    grid = rotation_grid(cam[moved], fov_deg if to is None else to[moved], H, W, None if since is None else since[moved],
                         pitch)
    out = flat.clone()
    out[moved] = F.grid_sample(flat[moved].float(), grid, mode="bilinear", padding_mode="border",
                               align_corners=False).to(frames.dtype)
    return out.view(*lead, C, H, W)


HUD_LEVELS = 4.0  # 8-bit levels: a change under this is none
HUD_MIN_PAIRS = 8  # pairs whose turn should move a pixel, needed to call it HUD


def fit_hud_mask(prev: torch.Tensor, nxt: torch.Tensor, camera_deg: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """Pixels that stay put where the turn should have moved them: the HUD (hotbar, held item), which the
    warp must not move. A pixel counts over the pairs where the turned frame differs there from the
    frame itself (a turn over a flat sky says nothing); HUD where, over at least HUD_MIN_PAIRS such
    pairs, the median change is under HUD_LEVELS. (N, C, H, W) x2, (N, 2) degrees -> (H, W) in {0, 1}.
    """
    tol = HUD_LEVELS * 2.0 / 255.0
    moved = (rotate_frames(prev, camera_deg, fov_deg) - prev).abs().amax(dim=1) > tol  # (N, H, W)
    change = (nxt - prev).abs().amax(dim=1).masked_fill(~moved, float("nan"))
    stayed = change.nanmedian(dim=0).values < tol  # NaN (no informative pair) compares False
    return (stayed & (moved.sum(dim=0) >= HUD_MIN_PAIRS)).float()


def hud_fill_index(hud: torch.Tensor) -> torch.Tensor:
    """For each pixel of an (H, W) HUD mask, the flat index of the nearest pixel outside it (itself outside it).

    The warp's source with the HUD filled from the scene beside it: `frame.flatten(-2)[..., index]`.
    (H, W) in {0, 1} -> (H * W,) long. No pixel outside the mask: every pixel is its own.
    """
    H, W = hud.shape
    flat = hud.flatten() > 0.5
    index = torch.arange(H * W, device=hud.device)
    if not flat.any() or flat.all():
        return index
    ys, xs = torch.div(index, W, rounding_mode="floor").float(), (index % W).float()
    inside, outside = index[flat], index[~flat]
    d = (ys[inside, None] - ys[None, outside]) ** 2 + (xs[inside, None] - xs[None, outside]) ** 2  # (n_in, n_out)
    index[inside] = outside[d.argmin(dim=1)]
    return index


def fit_fov_deg(prev: torch.Tensor, nxt: torch.Tensor, camera_deg: torch.Tensor) -> float:
    """The field of view whose warp best predicts nxt from prev (0: no warp helps). (N, C, H, W) x2, (N, 2).

    Each pair counts the better of warp and copy: some turns move nothing (an open inventory
    moves the cursor, pitch stops at 90 degrees), and the model's gate picks per pixel.
    """
    moved = camera_deg.abs().amax(-1) > 0.5  # pairs where a turn moves content by about half a pixel or more
    if moved.sum() < 8:
        return 0.0
    prev, nxt, cam = prev[moved], nxt[moved], camera_deg[moved]
    copy_err = (prev - nxt).pow(2).mean(dim=(1, 2, 3))  # (N,)

    def err(fov: float) -> float:
        warp_err = (rotate_frames(prev, cam, fov) - nxt).pow(2).mean(dim=(1, 2, 3))
        return torch.minimum(warp_err, copy_err).mean().item()

    errs = coarse_to_fine(err, FOV_CANDIDATES_DEG)
    best = min(errs, key=errs.get)
    return float(best) if errs[best] < (1 - MIN_GAIN) * copy_err.mean().item() else 0.0


COARSE_STRIDE = 5  # coarse_to_fine's first pass: every 5th candidate


def coarse_to_fine(err, candidates: tuple, stride: int = COARSE_STRIDE) -> dict:
    """{candidate: err(candidate)} over every `stride`-th candidate (and the first and last), then every
    candidate within `stride` places of the best of those: the grid's minimum where err has one valley
    wider than the stride, as the fields of view's errors have (10 degrees, 5%), in about a third of the
    calls (20 of 56 for FOV_CANDIDATES_DEG; the same fits as the whole grid on the demo's data, 2026-12-03)."""
    errs, n = {}, len(candidates)
    for i in sorted({*range(0, n, stride), n - 1}):
        errs[candidates[i]] = err(candidates[i])
    at = candidates.index(min(errs, key=errs.get))
    for i in range(max(0, at - stride + 1), min(n, at + stride)):
        if candidates[i] not in errs:
            errs[candidates[i]] = err(candidates[i])
    return errs


SPRINT_FOV_CANDIDATES = tuple(x / 100 for x in range(100, 141))  # sprinting's field of view over walking's, 1% apart
MIN_SPRINT_PAIRS = 8  # pairs where sprinting starts or stops, needed to fit its field of view


def fit_sprint_fov_deg(prev: torch.Tensor, nxt: torch.Tensor, camera_deg: torch.Tensor, sprint_before: torch.Tensor,
                       sprint_after: torch.Tensor, fov_deg: float) -> float:
    """The vertical field of view while sprinting whose zoom best predicts nxt from prev where sprinting starts or
    stops between them (0: no zoom helps, too few such pairs, or no warp). (N, C, H, W) x2, camera (N, 2) degrees,
    sprint_before, sprint_after (N,) bool, fov_deg the fitted walking field of view. VoxelWorld renders a sprint at
    1.1 times its field of view (envs/voxel.py), which this finds from the frames; a zoom must cut the median
    pair's error by MIN_GAIN against the turn alone (the median: the same pairs also walk, jump and turn, and a
    few whose content changes most would outweigh the rest; on the demo's play, 1.01 by the mean, 1.1 by the median)."""
    changed = sprint_before.bool() != sprint_after.bool()
    if fov_deg <= 0 or changed.sum() < MIN_SPRINT_PAIRS:
        return 0.0
    prev, nxt, cam = prev[changed], nxt[changed], camera_deg[changed]
    before, after = sprint_before.bool()[changed], sprint_after.bool()[changed]

    def err(sprint_fov: float) -> float:
        views = (torch.where(before, sprint_fov, fov_deg), torch.where(after, sprint_fov, fov_deg))
        return (rotate_frames(prev, cam, fov_deg, views) - nxt).pow(2).mean(dim=(1, 2, 3)).median().item()

    errs = coarse_to_fine(lambda ratio: err(fov_deg * ratio), tuple(r for r in SPRINT_FOV_CANDIDATES if fov_deg * r < 180.0))
    best = min(errs, key=errs.get)
    return round(fov_deg * best, 2) if best > 1.0 and errs[best] < (1 - MIN_GAIN) * errs[1.0] else 0.0
