"""The reference renderer: one voxel DDA ray per pixel (Amanatides & Woo 1987), compiled with numba.

    python -m worldloom.envs.cli show --env voxel --seeds 0-7 --out grid.png

It is the definition of what a frame shows: the rasterizer (`raster.py`), which draws the same
frames faster, is tested against it. The rays use `world.trace_ray`, the same query the player
uses to find the block it looks at; boxes (animals, dropped items) are tested only inside the
screen rectangle they project to; `shade.py` colours the hit.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from worldloom.envs import shade as sh
from worldloom.envs.world import trace_ray


@numba.njit(cache=True, fastmath=True)
def _slab(o, d, lo, hi, tmin, tmax, axis, k):
    """Clip the interval [tmin, tmax] by one axis' slab; returns the new (tmin, tmax, axis)."""
    if abs(d) < 1e-9:
        if o < lo or o > hi:
            return 1.0, 0.0, axis
        return tmin, tmax, axis
    t1 = (lo - o) / d
    t2 = (hi - o) / d
    if t1 > t2:
        t1, t2 = t2, t1
    if t1 > tmin:
        tmin, axis = t1, k
    return tmin, min(tmax, t2), axis


@numba.njit(cache=True, fastmath=True)
def ray_box(ox, oy, oz, dx, dy, dz, a):
    """Entry distance and hit axis (0..2) of a ray into box `a` (x, y, z feet centre, width, height), or (1e30, -1)."""
    hw = float(a[3]) * 0.5
    tmin, tmax, axis = 0.0, 1e30, -1
    tmin, tmax, axis = _slab(ox, dx, a[0] - hw, a[0] + hw, tmin, tmax, axis, 0)
    tmin, tmax, axis = _slab(oy, dy, float(a[1]), a[1] + a[4], tmin, tmax, axis, 1)
    tmin, tmax, axis = _slab(oz, dz, a[2] - hw, a[2] + hw, tmin, tmax, axis, 2)
    if tmin > tmax or axis < 0:
        return 1e30, -1
    return tmin, axis


@numba.njit(cache=True)
def _box_rects(animals, ox, oy, oz, fwd, right, up, half, aspect, h, w, max_dist):
    """Screen rectangles (i0, i1, j0, j1) that each box can cover; empty when out of view.

    Testing every box against every pixel cost as much as the whole voxel trace; projecting the
    8 corners once per frame bounds the pixels to test.
    """
    n = animals.shape[0]
    rects = np.zeros((n, 4), dtype=np.int64)
    for a in range(n):
        hw = animals[a, 3] * 0.5
        imin, imax, jmin, jmax = 1e9, -1e9, 1e9, -1e9
        behind, ahead = False, False
        for c in range(8):
            cx = animals[a, 0] + (hw if c & 1 else -hw) - ox
            cy = animals[a, 1] + (animals[a, 4] if c & 2 else 0.0) - oy
            cz = animals[a, 2] + (hw if c & 4 else -hw) - oz
            zc = cx * fwd[0] + cy * fwd[1] + cz * fwd[2]
            if zc < 0.05:
                behind = True
                continue
            ahead = True
            if zc > max_dist + 2:
                continue
            xs = (cx * right[0] + cy * right[1] + cz * right[2]) / zc
            ys = (cx * up[0] + cy * up[1] + cz * up[2]) / zc
            j = (xs / (half * aspect) + 1.0) * 0.5 * w
            i = (1.0 - ys / half) * 0.5 * h
            imin, imax, jmin, jmax = min(imin, i), max(imax, i), min(jmin, j), max(jmax, j)
        if behind and ahead:  # the box straddles the eye plane: test every pixel
            rects[a, 0], rects[a, 1], rects[a, 2], rects[a, 3] = 0, h, 0, w
        elif ahead and imax >= imin:
            rects[a, 0] = max(int(imin) - 1, 0)
            rects[a, 1] = min(int(imax) + 2, h)
            rects[a, 2] = max(int(jmin) - 1, 0)
            rects[a, 3] = min(int(jmax) + 2, w)
    return rects


@numba.njit(cache=True)
def camera(yaw, pitch, fov_deg):
    """(forward, right, up) unit vectors and tan(half the vertical field of view)."""
    cy, sy_ = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    fwd = (cp * sy_, -sp, cp * cy)
    right = (cy, 0.0, -sy_)
    up = (sp * sy_, cp, sp * cy)
    return fwd, right, up, math.tan(math.radians(fov_deg) * 0.5)


@numba.njit(cache=True, fastmath=True)
def raycast_world(blocks, coarse, max_top, eye, yaw, pitch, fov_deg, view_distance, sun, light, target,
                  crack_stage, animals, underwater, frame):
    """Ray-cast the first-person view into frame (H, W, 3) uint8, one ray through each pixel centre."""
    h, w = frame.shape[0], frame.shape[1]
    fwd, right, up, half = camera(yaw, pitch, fov_deg)
    aspect = w / h
    ox, oy, oz = eye[0], eye[1], eye[2]
    sun_t = (sun[0], sun[1], sun[2])
    shade = sh.face_shades(sun_t, light)
    target_t = (target[0], target[1], target[2])
    max_dist = view_distance * (0.4 if underwater else 1.0)
    fog_start = max_dist * 0.55
    rects = _box_rects(animals, ox, oy, oz, fwd, right, up, half, aspect, h, w, max_dist)
    fog_col = sh.underwater_fog(light)
    num_boxes = animals.shape[0]
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
            best_a, best_axis = -1, -1
            for a in range(num_boxes):
                if rects[a, 0] <= i < rects[a, 1] and rects[a, 2] <= j < rects[a, 3]:
                    ta, ax_a = ray_box(ox, oy, oz, dx, dy, dz, animals[a])
                    if ta < t:
                        t, best_a, best_axis = ta, a, ax_a
            r = g = bl = 0.0
            if best_a >= 0:
                s = sh.box_shade(best_axis, shade)
                r, g, bl = animals[best_a, 5] * s, animals[best_a, 6] * s, animals[best_a, 7] * s
            elif b != 0:
                r, g, bl = sh.shade_block(b, t, axis, hx, hy, hz, ox, oy, oz, dx, dy, dz, shade, target_t, crack_stage, 0)
            frame[i, j, 0], frame[i, j, 1], frame[i, j, 2] = sh.finish(
                best_a >= 0 or b != 0, t, dx, dy, dz, r, g, bl, fog_col, fog_start, max_dist, underwater, sun_t, light)
