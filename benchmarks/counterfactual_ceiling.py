"""The engine-truth controllability of a model exact on geometry that draws nothing new: the ceiling of a warp.

    python benchmarks/counterfactual_ceiling.py --episodes 48 --seed 500 --horizon 8     # issue 18's log, section 37
    python benchmarks/counterfactual_ceiling.py --fill rowmean         # the unseen filled with its row's mean (section 41)
    python benchmarks/counterfactual_ceiling.py --antialias            # the engine's frames antialiased
    python benchmarks/counterfactual_ceiling.py --resolution 128       # frames of 128x128 (session 58)

For each saved state (`worldloom capture branches`' seeds and player: the same states and branches as its file) and
each branch frame, the last context frame is moved by the exact geometry of the engine's frame: every pixel traced by
VoxelWorld's depth buffer to its surface, then into the context frame's view (each view's own pose and field of view,
a stopped sprint's zoom included); what the context frame did not see (outside its view, or hidden there by its own
depth buffer) is filled from the nearest pixel it saw, as the eval's seen-only reference fills; the HUD rows are the
context's. Scored by the eval's `controllability` beside copy-last, with the table by pair at the last horizon.
A model that moves pixels perfectly and invents nothing scores this; what is above it needs the new view drawn.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

HUD_ROWS = 48 / 64  # the hotbar and hand are below this share of the rows (the context's are kept)


def camera_axes(yaw_deg: float, pitch_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward, right, up) of a view: the engine's own (envs/raycast.py camera())."""
    from worldloom.envs.raycast import camera

    fwd, right, up, _ = camera(math.radians(yaw_deg), math.radians(pitch_deg), 70.0)
    return np.array(fwd), np.array(right), np.array(up)


def view_and_depth(env):
    """The env's current view and its 1/depth buffer (H, W), or None when the eye is inside a block."""
    from worldloom.envs import raster
    from worldloom.envs import render as engine_render

    v = env._view()
    zbuf, ids = engine_render._buffers(*env._frame.shape[:2])
    if raster.eye_block(v.blocks, v.eye, v.underwater):
        return v, None
    raster.rasterize(v.quads, v.chunks, raster.box_quads(v.animals), v.eye, v.yaw, v.pitch, v.fov_deg,
                     v.view_distance, v.underwater, zbuf, ids)
    return v, zbuf.copy()


def exact_warp(context: np.ndarray, before, after, fill: str = "nearest") -> np.ndarray:
    """context (H, W, 3) seen from `before` = (view, 1/depth, yaw, pitch) moved to `after`'s view, unseen filled."""
    import cv2
    import torch
    import torch.nn.functional as F

    (v0, z0, yaw0, pitch0), (v1, z1, yaw1, pitch1) = before, after
    if z0 is None or z1 is None:
        return context.copy()
    H, W = context.shape[:2]
    hud = round(HUD_ROWS * H)
    ys, xs = np.mgrid[0:H, 0:W]
    h0, h1 = math.tan(math.radians(v0.fov_deg) / 2), math.tan(math.radians(v1.fov_deg) / 2)
    f1, r1, u1 = camera_axes(yaw1, pitch1)
    f0, r0, u0 = camera_axes(yaw0, pitch0)
    xn, yn = ((xs + 0.5) / (W / 2) - 1) * h1 * W / H, -((ys + 0.5) / (H / 2) - 1) * h1
    z = np.where(z1 > 0, 1 / np.maximum(z1, 1e-9), 1e4)  # depth along the view; the sky far away
    world = np.asarray(v1.eye)[:, None, None] + z[None] * (f1[:, None, None] + xn[None] * r1[:, None, None]
                                                          + yn[None] * u1[:, None, None])
    d = world - np.asarray(v0.eye)[:, None, None]
    zo = np.tensordot(f0, d, 1)
    xo = np.tensordot(r0, d, 1) / np.maximum(zo, 1e-6) / (h0 * W / H)
    yo = np.tensordot(u0, d, 1) / np.maximum(zo, 1e-6) / h0
    col = np.clip(((xo + 1) * W / 2 - 0.5).round().astype(int), 0, W - 1)
    row = np.clip(((1 - yo) * H / 2 - 0.5).round().astype(int), 0, H - 1)
    z_there = np.where(z0[row, col] > 0, 1 / np.maximum(z0[row, col], 1e-9), 1e4)
    seen = (zo > 1e-3) & (np.abs(xo) <= 1) & (np.abs(yo) <= 1) & (zo <= z_there * 1.05 + 0.05)
    seen[hud:] = True
    grid = torch.from_numpy(np.stack([xo, -yo], -1)).float()[None]
    src = torch.from_numpy(context).permute(2, 0, 1)[None].float()
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)[0].permute(1, 2, 0).numpy()
    out[hud:] = context[hud:]
    if fill == "rowmean" and (~seen).any() and seen.any():  # each unseen pixel: the mean of the seen ones in its row
        scene = seen[:hud]
        fallback = out[:hud][scene].mean(0) if scene.any() else context[:hud].reshape(-1, 3).mean(0)
        for r in range(hud):
            m = seen[r]
            out[r, ~m] = out[r, m].mean(0) if m.any() else fallback
        return np.clip(out, 0, 255).round().astype(np.uint8)
    if fill == "mean" and (~seen).any() and seen[:hud].any():  # each unseen pixel: the mean of the seen scene
        out[~seen] = out[:hud][seen[:hud]].mean(0)
        return np.clip(out, 0, 255).round().astype(np.uint8)
    if (~seen).any() and seen.any():  # each unseen pixel: its nearest seen one
        _, labels = cv2.distanceTransformWithLabels((~seen).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        at = np.flatnonzero(seen.reshape(-1))
        pixel_of = np.zeros(labels.max() + 1, np.int64)
        pixel_of[labels.reshape(-1)[at]] = at
        out = out.reshape(-1, 3)[pixel_of[labels.reshape(-1)]].reshape(H, W, 3)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=48, help="saved states (capture branches' --episodes)")
    ap.add_argument("--seed", type=int, default=500, help="capture branches' --seed (worlds SEED_BASE + seed + i)")
    ap.add_argument("--horizon", type=int, default=8)
    ap.add_argument("--context", type=int, default=5)
    ap.add_argument("--player", default="mixture")
    ap.add_argument("--fill", default="nearest", choices=["nearest", "rowmean", "mean"],
                    help="what the context did not see: its nearest seen pixel, the mean of its row's seen pixels, or of all")
    ap.add_argument("--resolution", type=int, default=64, help="the engine's frames, square (pixels)")
    ap.add_argument("--antialias", action="store_true", help="render the engine's frames antialiased (VoxelWorld's antialias)")
    args = ap.parse_args()

    from worldloom.capture.branches import SEED_BASE, engine_cases
    from worldloom.envs import make_env
    from worldloom.pretrain.counterfactual import controllability

    env = make_env("voxel", height=args.resolution, width=args.resolution, antialias=args.antialias)
    seeds = range(SEED_BASE + args.seed, SEED_BASE + args.seed + args.episodes)
    cases = engine_cases(env, args.player, seeds, args.context, args.horizon)
    names = list(cases[0].branches)
    warped = np.zeros((len(cases), len(names), args.horizon, args.resolution, args.resolution, 3), np.uint8)
    engine = np.stack([c.frames for c in cases])
    for s, case in enumerate(cases):
        env.set_state(case.state)
        before = (*view_and_depth(env), env.player.yaw, env.player.pitch)
        for k, name in enumerate(names):
            env.set_state(case.state)
            for t, action in enumerate(case.branches[name]):
                env.step(action)
                warped[s, k, t] = exact_warp(case.context_frames[-1], before,
                                             (*view_and_depth(env), env.player.yaw, env.player.pitch), args.fill)
    copy = np.ascontiguousarray(np.broadcast_to(np.stack([c.context_frames[-1] for c in cases])[:, None, None], engine.shape))
    print(f"{len(cases)} states, branches {names}, horizons 1-{args.horizon}")
    print("exact-geometry warp", [round(x, 3) for x in controllability(warped, engine)["by_horizon"]])
    print("copy-last          ", [round(x, 3) for x in controllability(copy, engine)["by_horizon"]])
    g, e = warped.astype(np.float32), engine.astype(np.float32)
    print(f"by pair at horizon {args.horizon} (row A: the warp under A closer to the engine's A than its B)")
    for a in range(len(names)):
        cells = []
        for b in range(len(names)):
            if a == b:
                cells.append("  -  ")
                continue
            own = ((g[:, a, -1] - e[:, a, -1]) ** 2).mean((1, 2, 3))
            other = ((g[:, a, -1] - e[:, b, -1]) ** 2).mean((1, 2, 3))
            differ = (e[:, a, -1] != e[:, b, -1]).any((1, 2, 3))
            cells.append(f"{((own < other) + 0.5 * (own == other))[differ].mean():.2f}")
        print(f"  {names[a]:8s}", " ".join(cells))


if __name__ == "__main__":
    main()
