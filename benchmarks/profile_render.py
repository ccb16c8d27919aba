"""Where VoxelWorld's renderer spends its time: per size, per stage, per pixel, per ray.

    nice -n 10 taskset -c 1 python benchmarks/profile_render.py
    nice -n 10 taskset -c 1 python benchmarks/profile_render.py --sizes 128x128 --frames 40 --out profile.json
    nice -n 10 taskset -c 1 python benchmarks/profile_render.py --sizes 128x128 --world-size 256 64 256

Views are recorded once from a real episode (the mixture player, 64x64, seed 0), then every
view is drawn at each size, so every size draws the same scenes. Printed per size, in CPU ms
per frame without the HUD: the reference ray caster (`reference_world`: ns per pixel, million
rays per second), the rasterizer (`render_world`) and its visibility pass alone, the
rasterizer antialiased, the HUD, and the rays' statistics (share of sky rays, mean hit
distance, mean voxel boundaries a plain DDA crosses per ray). A least-squares line through
(pixels, ms) splits each renderer's cost into a fixed part per frame and a part per pixel.
Times are the best of `--repeats` passes over the views, in CPU seconds of this process (one
thread), so other work on a shared machine counts little. For cache behaviour, `--world-size`
grows the world (and with it the voxel grid and the mesh) past the caches while the views stay
player views.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from worldloom.envs.world import trace_ray  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    """"WxH" or "S" (square) -> (height, width)."""
    w, _, h = text.partition("x")
    return (int(h or w), int(w))


def record_views(num_frames: int, seed: int = 0, every: int = 4, world_size: tuple = (64, 48, 64)) -> list:
    """`num_frames` View copies from one mixture-player episode, one every `every` steps."""
    from worldloom.envs import make_env, make_player

    env = make_env("voxel", height=64, width=64, world_size=world_size)
    player = make_player("mixture", seed=seed)
    obs, info = env.reset(seed=seed)
    views = []
    step = 0
    while len(views) < num_frames:
        obs, _, term, trunc, info = env.step(player.act(obs, info))
        step += 1
        if step % every == 0:
            views.append(copy.deepcopy(env._view()))
        if term or trunc:
            obs, info = env.reset(seed=seed + step)
    return views


@numba.njit(cache=True)
def ray_stats(blocks, coarse, max_top, eye, yaw, pitch, fov_deg, view_distance, underwater, h, w):
    """(sky rays, sum of hit distances, sum of voxel boundaries crossed) over one frame's rays."""
    cy, sy_ = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    fwd = (cp * sy_, -sp, cp * cy)
    right = (cy, 0.0, -sy_)
    up = (sp * sy_, cp, sp * cy)
    half = math.tan(math.radians(fov_deg) * 0.5)
    aspect = w / h
    ox, oy, oz = eye[0], eye[1], eye[2]
    max_dist = view_distance * (0.4 if underwater else 1.0)
    sky, dist, crossed = 0, 0.0, 0
    for i in range(h):
        v = (1.0 - 2.0 * (i + 0.5) / h) * half
        for j in range(w):
            u = (2.0 * (j + 0.5) / w - 1.0) * half * aspect
            dx = fwd[0] + u * right[0] + v * up[0]
            dy = fwd[1] + u * right[1] + v * up[1]
            dz = fwd[2] + u * right[2] + v * up[2]
            inv = 1.0 / math.sqrt(dx * dx + dy * dy + dz * dz)
            dx, dy, dz = dx * inv, dy * inv, dz * inv
            b, t, axis, hx, hy, hz = trace_ray(blocks, coarse, max_top, ox, oy, oz, dx, dy, dz, max_dist, underwater)
            if b == 0:
                sky += 1
            else:
                dist += t
            crossed += (abs(math.floor(ox + dx * t) - math.floor(ox)) + abs(math.floor(oy + dy * t) - math.floor(oy))
                        + abs(math.floor(oz + dz * t) - math.floor(oz)))
    return sky, dist, crossed


def time_pass(fn, views, repeats: int) -> float:
    """Best CPU seconds per view of `fn(view)` over `repeats` passes."""
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        for v in views:
            fn(v)
        best = min(best, (time.process_time() - start) / len(views))
    return best


def profile_size(views, h: int, w: int, repeats: int) -> dict:
    from worldloom.envs import raster
    from worldloom.envs import render as r

    frame = np.zeros((h, w, 3), dtype=np.uint8)
    reference = time_pass(lambda v: r.reference_world(v, frame), views, repeats)
    fast = time_pass(lambda v: r.render_world(v, frame), views, repeats)
    fast_aa = time_pass(lambda v: r.render_world(v, frame, antialias=True), views, repeats)
    zbuf, ids = r._buffers(h, w)

    def visibility(v):
        raster.rasterize(v.quads, v.chunks, raster.box_quads(v.animals), v.eye, v.yaw, v.pitch, v.fov_deg,
                         v.view_distance * (0.4 if v.underwater else 1.0), v.underwater, zbuf, ids)

    vis = time_pass(visibility, views, repeats)
    hud = time_pass(lambda v: r._hud(v, frame), views, repeats)
    sky = dist = crossed = 0.0
    for v in views:
        s, d, c = ray_stats(v.blocks, v.coarse, v.max_top, v.eye, v.yaw, v.pitch, v.fov_deg, v.view_distance,
                            v.underwater, h, w)
        sky, dist, crossed = sky + s, dist + d, crossed + c
    rays = h * w * len(views)
    return {"size": f"{w}x{h}", "pixels": h * w, "reference_ms": reference * 1e3, "world_ms": fast * 1e3,
            "visibility_ms": vis * 1e3, "antialias_ms": fast_aa * 1e3, "hud_ms": hud * 1e3,
            "reference_ns_per_pixel": reference / (h * w) * 1e9, "ns_per_pixel": fast / (h * w) * 1e9,
            "reference_mrays_per_s": h * w / reference / 1e6,
            "sky_share": sky / rays, "mean_hit_dist": dist / max(rays - sky, 1), "boundaries_per_ray": crossed / rays}


def main(args: argparse.Namespace) -> dict:
    views = record_views(args.frames, world_size=tuple(args.world_size))
    rows = []
    for text in args.sizes:
        h, w = parse_size(text)
        profile_size(views[:2], h, w, 1)  # compile / load the cache
        rows.append(profile_size(views, h, w, args.repeats))
    print(f"{len(views)} views of a mixture-player episode; best of {args.repeats} passes, CPU ms per frame, one thread")
    print(f"{'size':>8} {'raycast':>8} {'ns/px':>6} {'Mray/s':>6} | {'raster':>7} {'(visib.)':>8} {'ns/px':>6} "
          f"{'x faster':>8} | {'AA':>7} {'AA/plain':>8} | {'hud':>6} | {'sky':>4} {'hit d':>5} {'cells':>5}")
    for r in rows:
        print(f"{r['size']:>8} {r['reference_ms']:>8.3f} {r['reference_ns_per_pixel']:>6.1f} {r['reference_mrays_per_s']:>6.2f} | "
              f"{r['world_ms']:>7.3f} {r['visibility_ms']:>8.3f} {r['ns_per_pixel']:>6.1f} {r['reference_ms'] / r['world_ms']:>8.2f} | "
              f"{r['antialias_ms']:>7.3f} {r['antialias_ms'] / r['world_ms']:>8.2f} | {r['hud_ms']:>6.3f} | "
              f"{r['sky_share']:>4.2f} {r['mean_hit_dist']:>5.1f} {r['boundaries_per_ray']:>5.1f}")
    fits = {}
    px = np.array([r["pixels"] for r in rows], dtype=np.float64)
    for key in ("reference_ms", "world_ms", "antialias_ms"):
        ms = np.array([r[key] for r in rows])
        fit = np.polyfit(px, ms, 1) if len(rows) > 1 else (ms[0] / px[0], 0.0)
        fits[key] = {"fixed_ms": float(fit[1]), "ns_per_pixel": float(fit[0] * 1e6)}
        print(f"{key:>13} ~= {fit[1]:.3f} ms fixed + {fit[0] * 1e6:.1f} ns x pixels")
    result = {"frames": len(views), "rows": rows, "fits": fits}
    if args.out:
        from worldloom.io import atomic_write_json

        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64x64", "128x128", "256x256", "640x360"])
    parser.add_argument("--frames", type=int, default=60, help="views recorded from the episode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--world-size", type=int, nargs=3, default=[64, 48, 64],
                        help="blocks x, y, z: a larger world tests how the renderers use the caches")
    parser.add_argument("--out", default="", help="also write the rows as JSON here")
    main(parser.parse_args())
