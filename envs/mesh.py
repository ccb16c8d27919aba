"""The visible block faces of a world as quads, greedy-merged per 16^3 chunk: what the rasterizer draws.

    python -c "from worldloom.envs.world import World; w = World.generate(0, (64, 48, 64)); print(w.mesh.quads.shape)"

A face is drawn where a block meets a cell a ray passes through. Rays stop at water unless the
eye is under water, so faces come in three kinds (`FLAG_*`): solid next to air, water next to air
(the surface, seen from above), solid next to water (the lake bed, seen from below the surface).
Above water the renderer draws the first two, under water the first and the last, which is what
the ray caster sees in each case. Outside the world counts as air.

Faces of the same block type, kind and plane that touch are merged into rectangles (greedy
meshing, Mikola Lysenko's "Meshing in a Minecraft game", 2012): the flat top of a plain becomes
a few quads instead of hundreds. A quad is one row of `quads` (float32): axis (0 x, 1 y, 2 z),
side (1: its normal points to +axis), plane (the coordinate of the face on that axis), lo1, hi1,
lo2, hi2 (its extent in cells on the other two axes, in increasing axis order) and key (block id
+ 256 x kind). A block edit re-meshes only its chunk and the neighbours it touches.
"""

from __future__ import annotations

import numba
import numpy as np

from worldloom.envs.blocks import WATER

CHUNK = 16  # cells per side of a chunk (x, y and z)
FLAG_AIR, FLAG_SURFACE, FLAG_BED = 0, 1, 2  # solid|air, water|air, solid|water
QUAD_FIELDS = 8  # axis, side, plane, lo1, hi1, lo2, hi2, key


@numba.njit(cache=True)
def _face_key(b: int, nb: int) -> int:
    """Key of the face between block `b` and its neighbour `nb` seen from the neighbour, 0 if none."""
    if b == 0:
        return 0
    if b == WATER:
        return b + 256 * FLAG_SURFACE if nb == 0 else 0
    if nb == 0:
        return b + 256 * FLAG_AIR
    if nb == WATER:
        return b + 256 * FLAG_BED
    return 0


@numba.njit(cache=True)
def mesh_chunk(blocks, x0, y0, z0):
    """Greedy-merged quads (N, 8) float32 of the chunk whose low corner is (x0, y0, z0)."""
    size = blocks.shape
    flat = blocks.ravel()
    strides = (size[1] * size[2], size[2], 1)
    lo = (x0, y0, z0)
    hi = (min(x0 + CHUNK, size[0]), min(y0 + CHUNK, size[1]), min(z0 + CHUNK, size[2]))
    out = np.empty((6 * CHUNK * CHUNK * CHUNK, QUAD_FIELDS), dtype=np.float32)
    n = 0
    mask = np.zeros((CHUNK, CHUNK), dtype=np.int32)
    for axis in range(3):
        a1 = 1 if axis == 0 else 0
        a2 = 1 if axis == 2 else 2
        sa, s1, s2 = strides[axis], strides[a1], strides[a2]
        lo1, lo2 = lo[a1], lo[a2]
        n1, n2 = hi[a1] - lo1, hi[a2] - lo2
        for side in range(2):
            step = sa if side == 1 else -sa
            edge = size[axis] - 1 if side == 1 else 0  # a cell here borders the outside: air
            for k in range(lo[axis], hi[axis]):
                any_face = False
                for p in range(n1):
                    base = k * sa + (lo1 + p) * s1 + lo2 * s2
                    for q in range(n2):
                        cell = base + q * s2
                        b = flat[cell]
                        m = 0
                        if b != 0:
                            m = _face_key(b, 0 if k == edge else flat[cell + step])
                        mask[p, q] = m
                        any_face = any_face or m != 0
                if not any_face:
                    continue
                plane = k + 1 if side == 1 else k
                for p in range(n1):
                    q = 0
                    while q < n2:
                        m = mask[p, q]
                        if m == 0:
                            q += 1
                            continue
                        wq = 1
                        while q + wq < n2 and mask[p, q + wq] == m:
                            wq += 1
                        hp = 1
                        while p + hp < n1:
                            same = True
                            for r in range(q, q + wq):
                                if mask[p + hp, r] != m:
                                    same = False
                                    break
                            if not same:
                                break
                            hp += 1
                        for pp in range(p, p + hp):
                            for r in range(q, q + wq):
                                mask[pp, r] = 0
                        out[n, 0], out[n, 1], out[n, 2] = axis, side, plane
                        out[n, 3], out[n, 4] = lo1 + p, lo1 + p + hp
                        out[n, 5], out[n, 6] = lo2 + q, lo2 + q + wq
                        out[n, 7] = m
                        n += 1
                        q += wq
    return out[:n].copy()


class Mesh:
    """The quads of every chunk of one world, kept current by `touch` + `update` after block edits."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks  # (SX, SY, SZ) uint8, shared with the World
        self.grid = tuple(-(-s // CHUNK) for s in blocks.shape)  # chunks per axis
        cx, cy, cz = np.meshgrid(*(np.arange(g) for g in self.grid), indexing="ij")
        low = np.stack([cx.ravel(), cy.ravel(), cz.ravel()], axis=1) * CHUNK  # (C, 3), chunk index order
        self.boxes = np.concatenate([low, np.minimum(low + CHUNK, blocks.shape)], axis=1).astype(np.int32)  # (C, 6)
        self.parts: list[np.ndarray] = [np.empty((0, QUAD_FIELDS), np.float32)] * len(low)
        self.dirty: set[int] = set(range(len(low)))
        self.quads = np.empty((0, QUAD_FIELDS), np.float32)  # (N, 8) all chunks' quads, chunk after chunk
        self.chunks = np.empty((0, 8), np.int32)  # (C', 8) non-empty chunks: x0, y0, z0, x1, y1, z1, first quad, end
        self.update()

    def touch(self, x: int, y: int, z: int) -> None:
        """Mark the chunks whose faces a change of block (x, y, z) can change (its own and the neighbours it borders)."""
        gx, gy, gz = self.grid
        for dx, dy, dz in ((0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)):
            cx, cy, cz = (x + dx) // CHUNK, (y + dy) // CHUNK, (z + dz) // CHUNK
            if 0 <= cx < gx and 0 <= cy < gy and 0 <= cz < gz:
                self.dirty.add((cx * gy + cy) * gz + cz)

    def update(self) -> None:
        """Re-mesh the chunks marked dirty and rebuild the flat arrays the renderer reads."""
        if not self.dirty:
            return
        for index in self.dirty:
            x0, y0, z0 = self.boxes[index, :3]
            self.parts[index] = mesh_chunk(self.blocks, x0, y0, z0)
        self.dirty.clear()
        sizes = np.array([len(p) for p in self.parts])
        ends = np.cumsum(sizes)
        self.quads = np.concatenate(self.parts)
        full = sizes > 0
        self.chunks = np.concatenate([self.boxes[full], (ends - sizes)[full, None], ends[full, None]],
                                     axis=1).astype(np.int32)
