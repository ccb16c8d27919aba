"""The renderer behind one function, `render`: a numba rasterizer of the world's faces, then the HUD.

    python -m worldloom.envs.cli show --env voxel --seeds 0-7 --out grid.png
    nice -n 10 taskset -c 1 python benchmarks/profile_render.py          # where the time goes

`render(view, frame, antialias)` draws the first-person view and the HUD into a (H, W, 3) uint8
frame; a GPU renderer can replace it by keeping that signature. `render_reference` draws the
same frame with one voxel ray per pixel (`raycast.py`): it defines what a frame shows, and the
fast path is tested against it. One thread by default: parallelism comes from processes (one
Ray actor per core), because numba threads inside several busy processes ran up to 10x slower
than one thread on the prototype (DESIGN section 4).

Why a rasterizer: the ray caster spent about 150 ns per pixel at every size (a DDA step per
voxel crossed, about 13 per ray), so its cost grew with the pixel count; drawing the few
thousand quads in view costs about the same at any size, and what remains per pixel is one
plane intersection and a texture read (`docs/envs.md` has the profile before and after).

Antialiasing (`antialias=True`): 2x2 samples per pixel, each pixel the mean of its samples'
colours, as a frame rendered at twice the size and area-downsampled; the reference does
exactly that, the rasterizer shades once per pixel away from edges (see `raster.py`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from worldloom.envs import raster
from worldloom.envs.hud import draw_hud
from worldloom.envs.raycast import raycast_world

SUPERSAMPLE = 2  # samples per pixel side when antialiasing


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
    quads: np.ndarray  # (Q, 8) float32 the world's face quads (mesh.py), current with blocks
    chunks: np.ndarray  # (C, 8) int32 per chunk: its box and its range of quads


# Depth and quad-id buffers reused from frame to frame, by thread and size: every frame
# overwrites them whole, so no frame depends on another (or on which env drew before it).
_BUFFERS: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _buffers(hs: int, ws: int) -> tuple[np.ndarray, np.ndarray]:
    """(HS, WS) float32 depths and int32 quad ids for this thread."""
    key = (threading.get_ident(), hs, ws)
    if key not in _BUFFERS:
        _BUFFERS[key] = (np.zeros((hs, ws), np.float32), np.zeros((hs, ws), np.int32))
    return _BUFFERS[key]


def _hud(view: View, frame: np.ndarray) -> np.ndarray:
    draw_hud(frame, view.hud, view.hotbar_slot, view.gui_open, view.cursor, view.inventory,
             view.underwater, view.air, view.swing, view.swing_kind, view.hand_held)
    return frame


def render_world(view: View, frame: np.ndarray, antialias: bool = False) -> np.ndarray:
    """The view without the HUD, by the rasterizer, into frame (H, W, 3) uint8."""
    h, w = frame.shape[:2]
    if raster.eye_block(view.blocks, view.eye, view.underwater):
        # The eye is inside a block: every ray stops at once, as the reference draws it.
        return reference_world(view, frame)
    ss = SUPERSAMPLE if antialias else 1
    zbuf, ids = _buffers(h * ss, w * ss)
    boxes = raster.box_quads(view.animals)
    raster.rasterize(view.quads, view.chunks, boxes, view.eye, view.yaw, view.pitch, view.fov_deg,
                     view.view_distance * (0.4 if view.underwater else 1.0), view.underwater, zbuf, ids)
    raster.shade_frame(ids, view.quads, boxes, view.animals, view.eye, view.yaw, view.pitch, view.fov_deg,
                       view.view_distance, view.sun, view.light, view.target, view.crack_stage, view.underwater, frame)
    return frame


def reference_world(view: View, frame: np.ndarray, antialias: bool = False) -> np.ndarray:
    """The view without the HUD, by the ray caster (at 2x and area-averaged when antialiased)."""
    ss = SUPERSAMPLE if antialias else 1
    h, w = frame.shape[:2]
    big = np.zeros((h * ss, w * ss, 3), np.uint8) if ss > 1 else frame
    raycast_world(view.blocks, view.coarse, view.max_top, view.eye, view.yaw, view.pitch, view.fov_deg,
                  view.view_distance, view.sun, view.light, view.target, view.crack_stage, view.animals,
                  view.underwater, big)
    if ss > 1:
        total = big.reshape(h, ss, w, ss, 3).astype(np.int32).sum(axis=(1, 3))
        frame[:] = (total + ss * ss // 2) // (ss * ss)
    return frame


def render(view: View, frame: np.ndarray, antialias: bool = False) -> np.ndarray:
    """Draw `view` into `frame` (H, W, 3) uint8 and return it: the one entry point of the renderer."""
    return _hud(view, render_world(view, frame, antialias))


def render_reference(view: View, frame: np.ndarray, antialias: bool = False) -> np.ndarray:
    """What `render` draws, by one ray per pixel (or per sample): slow, the definition of a frame."""
    return _hud(view, reference_world(view, frame, antialias))

