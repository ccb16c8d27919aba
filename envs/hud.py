"""The HUD drawn over the view: hand, crosshair, hotbar, air bar and the inventory screen.

    python -m worldloom.envs.cli show --env voxel --seeds 0-7 --out grid.png

Sizes scale with the frame's short side (`m = min(H, W)`), as Minecraft's GUI scale follows the
window height: at 640x360 the hotbar is as tall, relative to the frame, as at 128x128, centred,
and the hand keeps its shape at the right. In a square frame every position is what it was when
sizes followed the width.
"""

from __future__ import annotations

import math

import numba


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


CURSOR_SAMPLES = 4  # subsamples per pixel side: the cursor moves by fractions of a pixel, as a mouse does


@numba.njit(cache=True)
def _cursor(frame, x, y, size):
    """The mouse pointer over an open screen: a white arrow outlined in black, its tip at (x, y)
    in pixels (float), `size` pixels tall, each pixel blended by how much of it the arrow covers.

    A desktop pointer moves in screen pixels, a fraction of a pixel of a downscaled recording
    (VPT's 640x360 to 128x128), so a small mouse move still changes the frame: the area-weighted
    drawing keeps that, where a pointer snapped to whole pixels hid moves under a pixel (about
    1 degree of camera here, `objects.GUI_CURSOR_DEG`).
    """
    h, w = frame.shape[0], frame.shape[1]
    n = CURSOR_SAMPLES
    slope, border = 0.6, max(size / 7.0, 0.8)  # arrow width per unit of height; outline width
    for i in range(max(int(y) - 1, 0), min(int(y + size) + 2, h)):
        for j in range(max(int(x) - 1, 0), min(int(x + size * slope) + 2, w)):
            white = black = 0.0
            for a in range(n):
                for b in range(n):
                    v, u = i + (a + 0.5) / n - y, j + (b + 0.5) / n - x  # below and right of the tip
                    if v < 0.0 or v > size or u < 0.0 or u > v * slope:
                        continue
                    inner = v < size - border and u > border * 0.5 and u < v * slope - border
                    if inner:
                        white += 1.0
                    else:
                        black += 1.0
            cover = (white + black) / (n * n)
            if cover > 0.0:
                for k in range(3):
                    frame[i, j, k] = int(frame[i, j, k] * (1.0 - cover) + 255.0 * white / (n * n) + 0.5)


@numba.njit(cache=True)
def _hand(frame, colour, swing, swing_kind, held):
    """The held item (or bare hand) at the bottom right; it swings on attack and pushes on use,
    as Minecraft's first-person hand does, and leans while either is held (bit 1 attack, bit 2
    use), so both buttons show in every frame of the footage."""
    h, w = frame.shape[0], frame.shape[1]
    m = min(h, w)
    lift = math.sin(math.pi * swing)
    dx = -lift * 0.16 * m if swing_kind == 1 else 0.0
    dy = -lift * 0.14 * m if swing_kind == 1 else lift * 0.10 * m
    if held & 1:
        dx -= 0.05 * m
    if held & 2:
        dy += 0.06 * m
    # Anchored to the bottom right corner; (w - m) and (h - m) are 0 in a square frame.
    x0, y0 = int(0.78 * m + (w - m) + dx), int(0.70 * m + (h - m) + dy)
    if colour < 0:
        r, g, b = 200, 150, 110
    else:
        r, g, b = (colour >> 16) & 255, (colour >> 8) & 255, colour & 255
    _fill(frame, y0, y0 + int(0.32 * m), x0, x0 + int(0.16 * m), r * 0.8, g * 0.8, b * 0.8, 1.0)
    _fill(frame, y0, y0 + int(0.05 * m), x0, x0 + int(0.16 * m), min(r * 1.15, 255), min(g * 1.15, 255), min(b * 1.15, 255), 1.0)


@numba.njit(cache=True)
def draw_hud(frame, hud, hotbar_slot, gui_open, cursor, inventory, underwater, air, swing, swing_kind, held):
    """Hand, crosshair, hotbar (selected slot framed in white), air bar, and the inventory screen."""
    h, w = frame.shape[0], frame.shape[1]
    m = min(h, w)
    if not gui_open:
        _hand(frame, hud[hotbar_slot, 2] if hud[hotbar_slot, 0] >= 0 and hud[hotbar_slot, 1] > 0 else -1,
              swing, swing_kind, held)
    s = max(m // 14, 5)
    x0 = (w - 9 * s) // 2
    y0 = h - s - 1
    for k in range(9):
        _slot(frame, y0, x0 + k * s, s, hud[k, 2] if hud[k, 0] >= 0 else -1, hud[k, 1], k == hotbar_slot)
    if underwater:
        bar = int((9 * s) * max(min(air, 1.0), 0.0))
        _fill(frame, y0 - 3, y0 - 1, x0, x0 + bar, 120, 180, 255, 1.0)
    arm = max(m // 40, 2)
    if gui_open:
        # The inventory screen: a panel over the view, items in a 9-wide grid, and the cursor.
        _fill(frame, 0, h, 0, w, 0, 0, 0, 0.45)
        px0 = (w - m) // 2 + m // 10
        py0, py1, px1 = h // 6, h - h // 4, w - px0
        _fill(frame, py0, py1, px0, px1, 198, 198, 198, 1.0)
        cell = max((px1 - px0 - 2) // 9, 3)
        for k in range(inventory.shape[0]):
            r, c = k // 9, k % 9
            _slot(frame, py0 + 2 + r * cell, px0 + 1 + c * cell, cell, inventory[k, 0], inventory[k, 1], False)
        _cursor(frame, cursor[0] * (w - 1), cursor[1] * (h - 1), max(0.09 * m, 5.0))
    else:
        ci, cj = h // 2, w // 2
        _fill(frame, ci, ci + 1, cj - arm, cj + arm + 1, 255, 255, 255, 0.8)
        _fill(frame, ci - arm, ci + arm + 1, cj, cj + 1, 255, 255, 255, 0.8)
