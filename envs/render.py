"""The renderer: a CPU ray caster compiled with numba, behind one function, `render`.

    python -m worldloom.envs.cli show --env voxel --seeds 0-7 --out grid.png

`render(view, frame)` draws the first-person view and the HUD into a (H, W, 3) uint8 frame; a GPU
rasterizer can replace it by keeping that signature. One thread by default: parallelism comes
from processes (one Ray actor per core), because numba threads inside several busy processes
ran up to 10x slower than one thread on the prototype (DESIGN section 4).

Per pixel: a voxel DDA (Amanatides & Woo 1987) from the eye; textures are 16x16 per face kind
(top, side, bottom), shaded by the face's angle to the sun, blended into the sky by distance
(fog). Cheap wins from DESIGN section 4: a ray above the highest block of the world that does
not go down is sky at once, and a ray stops at the fog distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from worldloom.envs.blocks import CRACK_MASK, TEXTURES
from worldloom.envs.world import trace_ray

TEX = TEXTURES.astype(np.float32)  # (num_blocks, 3, 16, 16, 3)


@dataclass
class View:
    """Everything `render` needs about one moment of the world (arrays are not copied)."""

    blocks: np.ndarray  # (SX, SY, SZ) uint8
    coarse: np.ndarray  # (SX/4, SZ/4) int32 highest top per 4x4 columns: open air the rays skip
    max_top: int  # 1 + the highest non-air y anywhere: rays above it going up are sky
    eye: np.ndarray  # (3,) float64 eye position
    yaw: float  # radians; 0 looks along +z, positive turns right
    pitch: float  # radians; positive looks down (Minecraft and MineRL convention)
    fov_deg: float  # vertical field of view
    view_distance: float  # blocks; fog reaches the sky colour here
    sun: np.ndarray  # (3,) unit vector towards the sun
    light: float  # 0 (night) .. 1 (noon): scales face shading and the sky colour
    target: np.ndarray  # (3,) int64 block being mined, or -1s
    crack_stage: int  # 0 = none, 1..9 = how far the targeted block is cracked
    animals: np.ndarray  # (N, 8) float32: x, y, z (feet centre), width, height, r, g, b
    underwater: bool
    hud: np.ndarray  # (9, 4) int32 hotbar: item id (-1 empty), count, r*65536+g*256+b, unused
    hotbar_slot: int  # 0..8
    gui_open: bool
    cursor: np.ndarray  # (2,) float64 GUI cursor in 0..1 (x, y) while the inventory is open
    inventory: np.ndarray  # (K, 2) int32 inventory screen items: colour (packed), count
    air: float  # 0..1 breath left; drawn as a bar while underwater
    swing: float  # 0..1 phase of the hand's swing animation
    swing_kind: int  # 0 none, 1 attack, 2 use
    hand_held: int  # bit 1: attack held this step, bit 2: use held


@numba.njit(cache=True, fastmath=True)
def _sky(dx, dy, dz, sun, light, out):
    """Sky colour for a ray direction: a vertical gradient, plus the sun disc."""
    t = max(dy, 0.0)
    out[0] = (150.0 + (90.0 - 150.0) * t) * light + 8.0
    out[1] = (190.0 + (140.0 - 190.0) * t) * light + 8.0
    out[2] = (235.0 + (230.0 - 235.0) * t) * light + 20.0
    if dx * sun[0] + dy * sun[1] + dz * sun[2] > 0.9985:
        out[0] = 255.0
        out[1] = 250.0
        out[2] = 210.0


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


@numba.njit(cache=True, fastmath=True)
def _shade_block(b, t, axis, cx, cy, cz, ox, oy, oz, dx, dy, dz, shade, target, crack_stage, tex, crack, out):
    """Colour of block `b` hit at distance t on face `axis`: texture x sun shading x cracks."""
    px, py, pz = ox + dx * t, oy + dy * t, oz + dz * t
    if axis == 1:
        u, v = px - cx, pz - cz
        face = 0 if dy < 0 else 2
        sidx = 2 if dy < 0 else 3  # a ray going down hits a top face (normal +y)
    elif axis == 0:
        u, v = pz - cz, 1.0 - (py - cy)
        face = 1
        sidx = 1 if dx < 0 else 0
    elif axis == 2:
        u, v = px - cx, 1.0 - (py - cy)
        face = 1
        sidx = 5 if dz < 0 else 4
    else:  # the eye is inside this block
        u, v, face, sidx = 0.5, 0.5, 1, 0
    iu = min(max(int(u * 16.0), 0), 15)
    iv = min(max(int(v * 16.0), 0), 15)
    s = shade[sidx]
    if crack_stage > 0 and cx == target[0] and cy == target[1] and cz == target[2]:
        if crack[iv, iu] <= crack_stage:
            s *= 0.3
    out[0] = tex[b, face, iv, iu, 0] * s
    out[1] = tex[b, face, iv, iu, 1] * s
    out[2] = tex[b, face, iv, iu, 2] * s


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


@numba.njit(cache=True, fastmath=True)
def render_world(blocks, coarse, max_top, eye, yaw, pitch, fov_deg, view_distance, sun, light, target,
                 crack_stage, animals, underwater, tex, crack, frame):
    """Ray-cast the first-person view into frame (H, W, 3) uint8."""
    h, w = frame.shape[0], frame.shape[1]
    cy, sy_ = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    fwd = (cp * sy_, -sp, cp * cy)
    right = (cy, 0.0, -sy_)
    up = (sp * sy_, cp, sp * cy)
    half = math.tan(math.radians(fov_deg) * 0.5)
    aspect = w / h
    ox, oy, oz = eye[0], eye[1], eye[2]
    # Face shading: ambient plus the sun's angle to each face (-x, +x, +y, -y, -z, +z).
    shade = np.empty(6)
    normals = ((-1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0), (0.0, 0.0, 1.0))
    for k in range(6):
        n = normals[k]
        lam = max(n[0] * sun[0] + n[1] * sun[1] + n[2] * sun[2], 0.0)
        shade[k] = (0.45 + 0.55 * lam) * (0.25 + 0.75 * light)
    max_dist = view_distance * (0.4 if underwater else 1.0)
    fog_start = max_dist * 0.55
    rects = _box_rects(animals, ox, oy, oz, fwd, right, up, half, aspect, h, w, max_dist)
    col = np.zeros(3)
    fog_col = np.empty(3)
    if underwater:
        fog_col[0], fog_col[1], fog_col[2] = 30.0 * light + 5, 60.0 * light + 10, 140.0 * light + 25
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
            if best_a < 0 and b == 0:
                f = 1.0  # nothing hit: all fog (the sky above water)
            else:
                if best_a >= 0:
                    sidx = 2 if best_axis == 1 else (0 if best_axis == 0 else 4)
                    for c in range(3):
                        col[c] = animals[best_a, 5 + c] * shade[sidx]
                else:
                    _shade_block(b, t, axis, hx, hy, hz, ox, oy, oz, dx, dy, dz, shade, target, crack_stage, tex, crack, col)
                f = min(max((t - fog_start) / (max_dist - fog_start), 0.0), 1.0)
            if f <= 0.0:
                frame[i, j, 0] = min(int(col[0]), 255)
                frame[i, j, 1] = min(int(col[1]), 255)
                frame[i, j, 2] = min(int(col[2]), 255)
                continue
            # The sky colour is only worked out where it shows: misses and fogged hits.
            if not underwater:
                _sky(dx, dy, dz, sun, light, fog_col)
            for c in range(3):
                val = col[c] + (fog_col[c] - col[c]) * f if f < 1.0 else fog_col[c]
                frame[i, j, c] = min(max(int(val), 0), 255)


@numba.njit(cache=True)
def _fill(frame, y0, y1, x0, x1, r, g, b, alpha):
    h, w = frame.shape[0], frame.shape[1]
    for i in range(max(y0, 0), min(y1, h)):
        for j in range(max(x0, 0), min(x1, w)):
            frame[i, j, 0] = int(frame[i, j, 0] * (1 - alpha) + r * alpha)
            frame[i, j, 1] = int(frame[i, j, 1] * (1 - alpha) + g * alpha)
            frame[i, j, 2] = int(frame[i, j, 2] * (1 - alpha) + b * alpha)


@numba.njit(cache=True)
def _slot(frame, y0, x0, s, colour, count, selected):
    """One item slot: dark frame, item icon, a count bar; a white frame when selected."""
    edge = 255 if selected else 60
    _fill(frame, y0, y0 + s, x0, x0 + s, edge, edge, edge, 0.9)
    _fill(frame, y0 + 1, y0 + s - 1, x0 + 1, x0 + s - 1, 40, 40, 40, 0.85)
    if colour >= 0 and count > 0:
        r, g, b = (colour >> 16) & 255, (colour >> 8) & 255, colour & 255
        m = max(s // 4, 1)
        _fill(frame, y0 + m, y0 + s - m - 1, x0 + m, x0 + s - m, r, g, b, 1.0)
        bar = max(1, (s - 2) * min(count, 64) // 64)
        _fill(frame, y0 + s - 2, y0 + s - 1, x0 + 1, x0 + 1 + bar, 255, 255, 255, 1.0)


@numba.njit(cache=True)
def _hand(frame, colour, swing, swing_kind, held):
    """The held item (or bare hand) at the bottom right; it swings on attack and pushes on use,
    as Minecraft's first-person hand does, and leans while either is held (bit 1 attack, bit 2
    use), so both buttons show in every frame of the footage."""
    h, w = frame.shape[0], frame.shape[1]
    lift = math.sin(math.pi * swing)
    dx = -lift * 0.16 * w if swing_kind == 1 else 0.0
    dy = -lift * 0.14 * h if swing_kind == 1 else lift * 0.10 * h
    if held & 1:
        dx -= 0.05 * w
    if held & 2:
        dy += 0.06 * h
    x0, y0 = int(0.78 * w + dx), int(0.70 * h + dy)
    if colour < 0:
        r, g, b = 200, 150, 110
    else:
        r, g, b = (colour >> 16) & 255, (colour >> 8) & 255, colour & 255
    _fill(frame, y0, y0 + int(0.32 * h), x0, x0 + int(0.16 * w), r * 0.8, g * 0.8, b * 0.8, 1.0)
    _fill(frame, y0, y0 + int(0.05 * h), x0, x0 + int(0.16 * w), min(r * 1.15, 255), min(g * 1.15, 255), min(b * 1.15, 255), 1.0)


@numba.njit(cache=True)
def draw_hud(frame, hud, hotbar_slot, gui_open, cursor, inventory, underwater, air, swing, swing_kind, held):
    """Hand, crosshair, hotbar (selected slot framed in white), air bar, and the inventory screen."""
    h, w = frame.shape[0], frame.shape[1]
    if not gui_open:
        _hand(frame, hud[hotbar_slot, 2] if hud[hotbar_slot, 0] >= 0 and hud[hotbar_slot, 1] > 0 else -1,
              swing, swing_kind, held)
    s = max(w // 14, 5)
    x0 = (w - 9 * s) // 2
    y0 = h - s - 1
    for k in range(9):
        _slot(frame, y0, x0 + k * s, s, hud[k, 2] if hud[k, 0] >= 0 else -1, hud[k, 1], k == hotbar_slot)
    if underwater:
        bar = int((9 * s) * max(min(air, 1.0), 0.0))
        _fill(frame, y0 - 3, y0 - 1, x0, x0 + bar, 120, 180, 255, 1.0)
    if gui_open:
        # The inventory screen: a panel over the view, items in a 9-wide grid, and the cursor.
        _fill(frame, 0, h, 0, w, 0, 0, 0, 0.45)
        py0, py1, px0, px1 = h // 6, h - h // 4, w // 10, w - w // 10
        _fill(frame, py0, py1, px0, px1, 198, 198, 198, 1.0)
        cell = max((px1 - px0 - 2) // 9, 3)
        for k in range(inventory.shape[0]):
            r, c = k // 9, k % 9
            _slot(frame, py0 + 2 + r * cell, px0 + 1 + c * cell, cell, inventory[k, 0], inventory[k, 1], False)
        cx, cy = int(cursor[0] * (w - 1)), int(cursor[1] * (h - 1))
        arm = max(w // 40, 2)
        _fill(frame, cy - arm, cy + arm + 1, cx, cx + 1, 255, 255, 255, 1.0)
        _fill(frame, cy, cy + 1, cx - arm, cx + arm + 1, 255, 255, 255, 1.0)
        _fill(frame, cy + 1, cy + arm + 1, cx + 1, cx + 2, 0, 0, 0, 1.0)
    else:
        arm = max(w // 40, 2)
        ci, cj = h // 2, w // 2
        _fill(frame, ci, ci + 1, cj - arm, cj + arm + 1, 255, 255, 255, 0.8)
        _fill(frame, ci - arm, ci + arm + 1, cj, cj + 1, 255, 255, 255, 0.8)


def render(view: View, frame: np.ndarray) -> np.ndarray:
    """Draw `view` into `frame` (H, W, 3) uint8 and return it: the one entry point of the renderer."""
    render_world(view.blocks, view.coarse, view.max_top, view.eye, view.yaw, view.pitch, view.fov_deg,
                 view.view_distance, view.sun, view.light, view.target, view.crack_stage,
                 view.animals, view.underwater, TEX, CRACK_MASK, frame)
    draw_hud(frame, view.hud, view.hotbar_slot, view.gui_open, view.cursor, view.inventory,
             view.underwater, view.air, view.swing, view.swing_kind, view.hand_held)
    return frame
