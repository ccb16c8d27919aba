"""VoxelWorld's state: the voxel grid and the numba queries on it (rays, collision, movement).

    python -c "from worldloom.envs.world import World; w = World.generate(0, (64, 48, 64)); print(w.spawn_point())"

The world holds the blocks and what is derived from them (column tops, the highest block);
the things living in it (player, animals, dropped items) are in `objects.py` and update
themselves against it. Physics constants are Minecraft's per-tick values (20 ticks/s, as our
steps): gravity 0.08 blocks/tick^2, drag 0.98, jump speed 0.42, player box 0.6 x 1.8.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from worldloom.envs import worldgen
from worldloom.envs.blocks import AIR, BLOCK_ID, SOLID, WATER
from worldloom.envs.mesh import Mesh

# Blocks a player may spawn on (not water, tree tops or cacti).
GROUND = tuple(BLOCK_ID[n] for n in ("grass", "dirt", "sand", "snow", "stone", "gravel"))

GRAVITY = 0.08
DRAG = 0.98
JUMP_SPEED = 0.42


COARSE = 4  # columns per side of a coarse cell in the skip map (a power of two: x >> 2)


@numba.njit(cache=True, fastmath=True)
def trace_ray(blocks, coarse, max_top, ox, oy, oz, dx, dy, dz, max_dist, skip_water):
    """Voxel DDA: (block id, distance, axis of the face hit, cell x, y, z); id 0 = nothing hit.

    Two cheap skips (DESIGN section 4): a ray above the highest block that does not go down is
    sky at once; and on entering a 4x4-column cell whose highest block (`coarse`) stays below
    the ray all the way across, the ray jumps to the cell's far side instead of stepping
    through every voxel of open air above the terrain.
    """
    sx, sy, sz = blocks.shape
    x, y, z = int(math.floor(ox)), int(math.floor(oy)), int(math.floor(oz))
    stx = 1 if dx > 0 else -1
    sty = 1 if dy > 0 else -1
    stz = 1 if dz > 0 else -1
    # Reciprocals once per ray: divisions cost as much as the rest of a DDA step.
    inv_x = 1.0 / dx if dx != 0 else 1e30
    inv_z = 1.0 / dz if dz != 0 else 1e30
    ddx = abs(inv_x)
    ddy = abs(1.0 / dy) if dy != 0 else 1e30
    ddz = abs(inv_z)
    tx = ((x + 1 - ox) if dx > 0 else (ox - x)) * ddx
    ty = ((y + 1 - oy) if dy > 0 else (oy - y)) * ddy
    tz = ((z + 1 - oz) if dz > 0 else (oz - z)) * ddz
    t, axis = 0.0, -1
    last_cx, last_cz = -1, -1
    while t < max_dist:
        if 0 <= x < sx and 0 <= z < sz:
            cx, cz = x >> 2, z >> 2
            if cx != last_cx or cz != last_cz:
                last_cx, last_cz = cx, cz
                # Distance at which the ray leaves this coarse cell in x or z.
                ex = ((cx * COARSE + (COARSE if dx > 0 else 0)) - ox) * inv_x if dx != 0 else 1e30
                ez = ((cz * COARSE + (COARSE if dz > 0 else 0)) - oz) * inv_z if dz != 0 else 1e30
                te = min(ex, ez, max_dist)
                low = oy + dy * (te if dy < 0 else t)  # the ray's lowest point across the cell
                if te > t and low >= coarse[cx, cz]:
                    if te >= max_dist:
                        break
                    # Jump to just past the exit and restart the DDA there.
                    t = te
                    px, py, pz = ox + dx * t, oy + dy * t, oz + dz * t
                    x, y, z = int(math.floor(px)), int(math.floor(py)), int(math.floor(pz))
                    if ex <= ez:
                        x = cx * COARSE + (COARSE if dx > 0 else -1)
                        axis = 0
                    else:
                        z = cz * COARSE + (COARSE if dz > 0 else -1)
                        axis = 2
                    tx = (((x + 1 - ox) if dx > 0 else (ox - x)) * ddx) if dx != 0 else 1e30
                    ty = (((y + 1 - oy) if dy > 0 else (oy - y)) * ddy) if dy != 0 else 1e30
                    tz = (((z + 1 - oz) if dz > 0 else (oz - z)) * ddz) if dz != 0 else 1e30
                    continue
            if 0 <= y < sy:
                b = blocks[x, y, z]
                if b != 0 and not (skip_water and b == WATER):
                    return b, t, axis, x, y, z
            if y >= max_top and dy >= 0:
                break  # above every block and not going down: sky
            if y < 0 and dy <= 0:
                break
        elif (x < 0 and dx <= 0) or (x >= sx and dx >= 0) or (z < 0 and dz <= 0) or (z >= sz and dz >= 0):
            break  # outside the world and leaving it
        if tx < ty and tx < tz:
            t, axis, x, tx = tx, 0, x + stx, tx + ddx
        elif ty < tz:
            t, axis, y, ty = ty, 1, y + sty, ty + ddy
        else:
            t, axis, z, tz = tz, 2, z + stz, tz + ddz
    return 0, max_dist, -1, 0, 0, 0


def coarse_tops(tops: np.ndarray) -> np.ndarray:
    """(ceil(SX/4), ceil(SZ/4)) int32: the highest column top in each 4x4 group of columns."""
    sx, sz = tops.shape
    padded = np.zeros((-(-sx // COARSE) * COARSE, -(-sz // COARSE) * COARSE), dtype=np.int32)
    padded[:sx, :sz] = tops
    return padded.reshape(padded.shape[0] // COARSE, COARSE, padded.shape[1] // COARSE, COARSE).max(axis=(1, 3))


@numba.njit(cache=True)
def collides(blocks, solid, x, y, z, half_width, height):
    """Whether a box (feet centre x, y, z) overlaps a solid block; outside the grid is empty."""
    sx, sy, sz = blocks.shape
    eps = 1e-6
    for bx in range(int(math.floor(x - half_width)), int(math.floor(x + half_width - eps)) + 1):
        if bx < 0 or bx >= sx:
            continue
        for bz in range(int(math.floor(z - half_width)), int(math.floor(z + half_width - eps)) + 1):
            if bz < 0 or bz >= sz:
                continue
            for by in range(int(math.floor(y)), int(math.floor(y + height - eps)) + 1):
                if 0 <= by < sy and solid[blocks[bx, by, bz]]:
                    return True
    return False


@numba.njit(cache=True)
def move_body(blocks, solid, pos, vel, move_x, move_z, jump, sneak, in_water, on_ground, half_width, height):
    """One tick of movement with gravity and collision; updates pos/vel in place, returns on_ground."""
    # Minecraft's order: the jump sets the speed, the body moves, then gravity and drag apply.
    if in_water and jump:
        vel[1] = 0.12  # swim up
    elif jump and on_ground:
        vel[1] = JUMP_SPEED
    # Horizontal, one axis at a time; sneaking on the ground never walks off an edge. The grid's
    # sides are a world border (Minecraft's): a body inside stops at it, as at a wall.
    for axis in (0, 2):
        step = move_x if axis == 0 else move_z
        if step == 0.0:
            continue
        p = pos[axis]
        lo, hi = half_width + 1e-4, blocks.shape[axis] - half_width - 1e-4
        if step > 0 and p + step > hi:
            step = max(hi - p, 0.0)
        elif step < 0 and p + step < lo:
            step = min(lo - p, 0.0)
        if step == 0.0:
            continue  # against the border
        nx = pos[0] + step if axis == 0 else pos[0]
        nz = pos[2] + step if axis == 2 else pos[2]
        if collides(blocks, solid, nx, pos[1], nz, half_width, height):
            # Move up to contact with the blocking block instead of stopping short of it.
            if step > 0:
                contact = math.floor(p + half_width + step) - half_width - 1e-4
            else:
                contact = math.floor(p - half_width + step) + 1.0 + half_width + 1e-4
            if (contact - p) * step <= 0:
                continue
            nx = contact if axis == 0 else pos[0]
            nz = contact if axis == 2 else pos[2]
            if collides(blocks, solid, nx, pos[1], nz, half_width, height):
                continue
        if sneak and on_ground and not collides(blocks, solid, nx, pos[1] - 0.05, nz, half_width, 0.05):
            continue
        pos[0], pos[2] = nx, nz
    ny = pos[1] + vel[1]
    landed = False
    if collides(blocks, solid, pos[0], ny, pos[2], half_width, height):
        landed = vel[1] < 0
        if landed:
            pos[1] = math.floor(ny) + 1.0
            if collides(blocks, solid, pos[0], pos[1], pos[2], half_width, height):
                pos[1] = ny - vel[1]  # could not resolve: stay where we were
        elif vel[1] > 0:
            # The head meets a block: up to contact with it, as Minecraft moves a body (a jump under leaves
            # two blocks up rises 0.2 blocks and falls back, where stopping short would show nothing).
            top = math.floor(ny + height) - height - 1e-4
            if top > pos[1] and not collides(blocks, solid, pos[0], top, pos[2], half_width, height):
                pos[1] = top
        vel[1] = 0.0
    else:
        pos[1] = ny
    vel[1] = vel[1] * 0.8 - 0.02 if in_water else (vel[1] - GRAVITY) * DRAG
    return landed


class World:
    """The voxel grid of one episode and the values derived from it."""

    def __init__(self, blocks: np.ndarray, biome: np.ndarray, seed: int):
        self.blocks = blocks  # (SX, SY, SZ) uint8
        self.biome = biome  # (SX, SZ) uint8
        self.seed = seed
        self.tops = worldgen.column_tops(blocks)  # (SX, SZ) int32
        self.max_top = int(self.tops.max())
        self.coarse = coarse_tops(self.tops)  # (SX/4, SZ/4) int32, the ray caster's skip map
        self.mesh = Mesh(blocks)  # the visible faces as quads, what the rasterizer draws
        self.solid = SOLID
        self.edits = 0  # blocks changed by `set` so far: what a cache of block positions keys on

    @classmethod
    def generate(cls, seed: int, size: tuple[int, int, int]) -> World:
        gen = worldgen.generate(seed, *size)
        return cls(gen.blocks, gen.biome, seed)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """What `from_state` needs to rebuild this world exactly: the grid and what is derived from it."""
        return {"blocks": self.blocks, "biome": self.biome, "tops": self.tops, "coarse": self.coarse}

    @classmethod
    def from_state(cls, blocks: np.ndarray, biome: np.ndarray, tops: np.ndarray, coarse: np.ndarray,
                   seed: int, max_top: int) -> World:
        """The world `state_arrays` described, as it was (its derived values too, not recomputed)."""
        world = cls.__new__(cls)
        world.blocks, world.biome, world.seed = blocks, biome, seed
        world.tops, world.coarse, world.max_top = tops, coarse, max_top
        world.mesh = Mesh(blocks)  # derived from the blocks alone: meshed afresh (restored frames equal: test_envs_state)
        world.solid = SOLID
        world.edits = 0
        return world

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.blocks.shape

    def inside(self, x: int, y: int, z: int) -> bool:
        sx, sy, sz = self.blocks.shape
        return 0 <= x < sx and 0 <= y < sy and 0 <= z < sz

    def get(self, x: int, y: int, z: int) -> int:
        return int(self.blocks[x, y, z]) if self.inside(x, y, z) else AIR

    def set(self, x: int, y: int, z: int, block: int) -> None:
        """Change one block, keeping the column tops, the world top and the skip map current (the mesh on its next update)."""
        self.blocks[x, y, z] = block
        self.edits += 1
        if block != AIR:
            self.tops[x, z] = max(self.tops[x, z], y + 1)
            self.max_top = max(self.max_top, y + 1)
        elif self.tops[x, z] == y + 1:
            column = np.flatnonzero(self.blocks[x, : y + 1, z])
            self.tops[x, z] = int(column[-1]) + 1 if column.size else 0
        cx, cz = x // COARSE * COARSE, z // COARSE * COARSE
        self.coarse[x // COARSE, z // COARSE] = self.tops[cx:cx + COARSE, cz:cz + COARSE].max()
        self.mesh.touch(x, y, z)

    def ground(self, x: int, z: int) -> int:
        """The y one above the highest block of column (x, z)."""
        return int(self.tops[x, z])

    def biome_centre(self, biome: int) -> tuple[int, int] | None:
        """The column of `biome` nearest the world's centre, or None if the world has none."""
        xs, zs = np.nonzero(self.biome == biome)
        if xs.size == 0:
            return None
        sx, _, sz = self.blocks.shape
        k = int(np.argmin((xs - sx // 2) ** 2 + (zs - sz // 2) ** 2))
        return int(xs[k]), int(zs[k])

    def spawn_point(self, radius: int = 10, near: tuple[int, int] | None = None,
                    allowed: np.ndarray | None = None) -> np.ndarray:
        """Feet position (3,) on the highest dry ground within `radius` of `near` (default: the centre),
        among the columns where `allowed` ((sx, sz) bool, default all) is true.

        High ground first, so the first frames look out over the world rather than into a tree.
        """
        sx, sy, sz = self.blocks.shape
        cx, cz = near if near is not None else (sx // 2, sz // 2)
        best, best_score = None, -1e9
        for x in range(max(cx - radius, 0), min(cx + radius + 1, sx)):
            for z in range(max(cz - radius, 0), min(cz + radius + 1, sz)):
                top = int(self.tops[x, z])
                if (allowed is None or allowed[x, z]) and 0 < top < sy - 2 and self.blocks[x, top - 1, z] in GROUND:
                    # Not pressed against a tree or a wall: that first frame would be all leaves.
                    around = self.tops[max(x - 1, 0):x + 2, max(z - 1, 0):z + 2]
                    score = top - 0.05 * float(np.hypot(x - cx, z - cz)) - 100.0 * (around.max() > top + 1)
                    if score > best_score:
                        best, best_score = (x, top, z), score
        if best is None:
            return np.array([cx + 0.5, float(sy - 3), cz + 0.5])
        return np.array([best[0] + 0.5, float(best[1]), best[2] + 0.5])
