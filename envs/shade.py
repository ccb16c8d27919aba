"""What colour a ray gets once it is known what it hit: one set of numba functions for every renderer.

    python -c "from worldloom.envs.shade import TEX_MIPS; print(TEX_MIPS.shape)"

The ray caster (`raycast.py`) and the rasterizer (`raster.py`) find the hit in different ways
and colour it here, so the same hit gives the same bytes in both. A block face is its 16x16
texture (top, side or bottom) times the face's shading by the sun, darkened where it is cracked;
boxes (animals, dropped items) are flat colours; everything fades into the sky colour with
distance (fog), and a ray that hits nothing is sky.

Antialiased frames read textures from a mip chain (`TEX_MIPS`, 16x16 down to 1x1, each level
the 2x2 mean of the one above), at the level whose texels are about as large as the pixel's
footprint on the face, as Minecraft's mipmapped textures are: far faces average their texture
instead of showing one texel picked per pixel, which flickers as the camera moves.

For whoever edits this file: numba's on-disk cache does not notice changes to functions defined
in another file (numba's "Notes on Caching": cache invalidation fails to recognize changes in
symbols defined in a different file), and these helpers are inlined into `raster.py` and
`raycast.py`; delete `envs/__pycache__/*.nb?` after an edit here, or those keep the old code.
"""

from __future__ import annotations

import numba
import numpy as np

from worldloom.envs.blocks import CRACK_MASK, TEXTURE_SIZE, TEXTURES

TEX = TEXTURES.astype(np.float32)  # (num_blocks, 3, 16, 16, 3)
NUM_MIPS = 5  # 16, 8, 4, 2, 1 texels per side


def make_mips(tex: np.ndarray) -> np.ndarray:
    """(NUM_MIPS, num_blocks, 3, 16, 16, 3) float32: level k holds (16 >> k)^2 texels at the top left, the rest 0."""
    mips = np.zeros((NUM_MIPS,) + tex.shape, dtype=np.float32)
    level = tex.astype(np.float64)
    for k in range(NUM_MIPS):
        n = TEXTURE_SIZE >> k
        mips[k, :, :, :n, :n] = level
        level = level.reshape(*level.shape[:2], n // 2, 2, n // 2, 2, 3).mean(axis=(3, 5)) if n > 1 else level
    return mips


TEX_MIPS = make_mips(TEX)


@numba.njit(cache=True, fastmath=True)
def face_shades(sun, light):
    """Shading of the faces -x, +x, +y, -y, -z, +z (a 6-tuple): ambient plus the sun's angle."""
    lam = (max(-sun[0], 0.0), max(sun[0], 0.0), max(sun[1], 0.0), max(-sun[1], 0.0), max(-sun[2], 0.0),
           max(sun[2], 0.0))
    k = 0.25 + 0.75 * light
    return ((0.45 + 0.55 * lam[0]) * k, (0.45 + 0.55 * lam[1]) * k, (0.45 + 0.55 * lam[2]) * k,
            (0.45 + 0.55 * lam[3]) * k, (0.45 + 0.55 * lam[4]) * k, (0.45 + 0.55 * lam[5]) * k)


# Per-pixel helpers take and return scalars and tuples, never arrays: numba counts references to
# an array argument at every call, even inlined, and that cost 40-80 ns a pixel.


@numba.njit(cache=True, fastmath=True, inline="always")
def sky(dx, dy, dz, sun, light):
    """Sky colour (r, g, b) for a ray direction: a vertical gradient, plus the sun disc."""
    if dx * sun[0] + dy * sun[1] + dz * sun[2] > 0.9985:
        return 255.0, 250.0, 210.0
    t = max(dy, 0.0)
    return ((150.0 + (90.0 - 150.0) * t) * light + 8.0, (190.0 + (140.0 - 190.0) * t) * light + 8.0,
            (235.0 + (230.0 - 235.0) * t) * light + 20.0)


@numba.njit(cache=True, fastmath=True, inline="always")
def shade_block(b, t, axis, cx, cy, cz, ox, oy, oz, dx, dy, dz, shade, target, crack_stage, level):
    """Colour (r, g, b) of block `b` hit at distance t on face `axis` of cell (cx, cy, cz): texture x sun x cracks.

    `shade` is face_shades' 6-tuple, `target` the (x, y, z) being mined; `level` the mip level
    (0: the 16x16 texture itself); axis -1 means the eye is inside the block.
    """
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
        if CRACK_MASK[iv, iu] <= crack_stage:
            s *= 0.3
    ju, jv = iu >> level, iv >> level
    return (TEX_MIPS[level, b, face, jv, ju, 0] * s, TEX_MIPS[level, b, face, jv, ju, 1] * s,
            TEX_MIPS[level, b, face, jv, ju, 2] * s)


@numba.njit(cache=True, fastmath=True, inline="always")
def box_shade(axis, shade):
    """The shading of a box (animal, dropped item) face hit on `axis`."""
    return shade[2] if axis == 1 else (shade[0] if axis == 0 else shade[4])


@numba.njit(cache=True, fastmath=True, inline="always")
def finish(hit, t, dx, dy, dz, r, g, b, fog_col, fog_start, max_dist, underwater, sun, light):
    """The pixel (r, g, b) ints 0..255: the colour blended into the fog by distance t; a miss (not hit) is all fog.

    Above water the fog colour is the sky's in this direction, worked out only where it shows.
    """
    f = min(max((t - fog_start) / (max_dist - fog_start), 0.0), 1.0) if hit else 1.0
    if f <= 0.0:
        return min(int(r), 255), min(int(g), 255), min(int(b), 255)
    fr, fg, fb = sky(dx, dy, dz, sun, light) if not underwater else fog_col
    if f >= 1.0:
        return min(max(int(fr), 0), 255), min(max(int(fg), 0), 255), min(max(int(fb), 0), 255)
    return (min(max(int(r + (fr - r) * f), 0), 255), min(max(int(g + (fg - g) * f), 0), 255),
            min(max(int(b + (fb - b) * f), 0), 255))


@numba.njit(cache=True)
def underwater_fog(light):
    """The fog colour (r, g, b) under water (the sky's colour is not seen through it)."""
    return 30.0 * light + 5, 60.0 * light + 10, 140.0 * light + 25


@numba.njit(cache=True, fastmath=True, inline="always")
def mip_level(s, len2, d_axis, texel_scale):
    """Mip level whose texels match a pixel's footprint where the ray o + s d (|d|^2 = len2) meets a face.

    `d_axis` is d's component along the face's normal, `texel_scale` texels per block of distance
    across one pixel, seen head-on. The footprint is t = s |d| times that, stretched by
    1/cos = |d| / |d_axis| across the face; the square root of the stretch is a middle way
    between the blur of the long side and the shimmer of the short. Compared in the 4th power,
    so no square root or division: footprint^4 = s^4 |d|^6 scale^4 / d_axis^2 against 2^4, 4^4,
    8^4, 16^4, both sides times d_axis^2.
    """
    s2 = s * s * texel_scale * texel_scale
    f4 = s2 * s2 * len2 * len2 * len2  # footprint^4 x d_axis^2: compared without a division
    threshold = 16.0 * d_axis * d_axis
    level = 0
    while f4 >= threshold and level < NUM_MIPS - 1:
        threshold *= 16.0
        level += 1
    return level
