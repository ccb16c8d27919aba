"""Tasks: VoxelWorld with a reward, a success criterion and a time limit, each a gymnasium id.

    import gymnasium, worldloom.envs
    env = gymnasium.make("worldloom/CollectLogs-v0", height=64, width=64)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    info["task"]     # {"name": "CollectLogs", "progress": 0.0, "success": False, "goal": array([x, y, z]), ...}
    worldloom envs play --env collect_logs --player mixture --steps 400 --out logs.gif

Reward and success come from the engine's state (the player's inventory gains, its position,
the block at its feet), never from pixels, so a policy's score is exact. Every task is a row of
`TASKS` (game rules as data): what it measures (`metric`), where an episode starts (`biome`, a
VoxelWorld reset option), how long it lasts and when it counts as a success. Episodes are
VoxelWorld's: the same seed and actions give the same frames and the same score.

| id | metric (the return) | success | starts | time limit |
|---|---|---|---|---|
| worldloom/CollectLogs-v0 | logs gained (mined from trees) | >= 1 log | forest | 600 steps |
| worldloom/MineStone-v0 | cobblestone gained (mined stone) | >= 1 cobblestone | a pit dug to the stone | 600 steps |
| worldloom/Explore-v0 | horizontal distance from spawn at the end, blocks | >= 16 blocks | high ground | 400 steps |
| worldloom/FindWater-v0 | 1 once in water (the episode ends) | in water | dry ground 9-14 blocks from water, facing any way | 600 steps |
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worldloom.envs.blocks import AIR, BLOCK_ID, BLOCKS, WATER
from worldloom.envs.voxel import VoxelWorldEnv

__all__ = ["Task", "TASKS", "TASK_IDS", "TaskEnv", "short_name", "task_by_name", "make_task_env"]


@dataclass(frozen=True)
class Task:
    """One task's rules: `metric` is what the return adds up to."""

    name: str  # CamelCase, as in the gymnasium id
    metric: str  # "collect" (items gained), "distance" (farthest from spawn), "reach" (a block at the feet)
    target: float  # success: the metric reaches this
    max_steps: int  # the time limit (20 steps = 1 s of game time)
    items: tuple[str, ...] = ()  # collect: the items that count
    biome: str | None = None  # where an episode starts (VoxelWorld's reset option); None: high ground near the centre
    quarry: int = 0  # > 0: the start is the floor of a pit of this radius dug down to the stone
    # (near, far): the start is the highest dry ground whose nearest goal block at the surface is near..far
    # blocks away horizontally (a world with no such ground keeps the default start)
    start_from_goal: tuple[float, float] | None = None
    end_on_success: bool = False  # reach: the episode ends at the goal
    summary: str = ""

    @property
    def env_id(self) -> str:
        return f"worldloom/{self.name}-v0"

    @property
    def goal_blocks(self) -> tuple[int, ...]:
        """Block ids the task is about: those that drop a collected item, water for FindWater, none for Explore."""
        if self.metric == "collect":
            return tuple(i for i, b in enumerate(BLOCKS) if b.drop and b.drop in self.items)
        if self.metric == "reach":
            return (WATER,)
        return ()


TASKS: dict[str, Task] = {
    "collect_logs": Task("CollectLogs", "collect", 1.0, 600, items=("log",), biome="forest",
                         summary="logs gained by mining trees; starts in a forest"),
    "mine_stone": Task("MineStone", "collect", 1.0, 600, items=("cobblestone",), quarry=2,
                       summary="cobblestone gained by mining stone; starts on the floor of a 5x5 pit dug to the stone"),
    "explore": Task("Explore", "distance", 16.0, 400,
                    summary="horizontal distance from the spawn point at the episode's end, in blocks"),
    "find_water": Task("FindWater", "reach", 1.0, 600, end_on_success=True, start_from_goal=(9.0, 14.0),
                       summary="1 when the player's feet are in water (the episode ends there); starts on dry "
                               "ground 9 to 14 blocks from the nearest water, facing any way"),
}
TASK_IDS: tuple[str, ...] = tuple(t.env_id for t in TASKS.values())


def short_name(name: str) -> str:
    """A task's short name (collect_logs: the TASKS key, the env column of its datasets) from any of
    the names `task_by_name` takes; ValueError for an unknown task."""
    task = task_by_name(name)
    return next(short for short, t in TASKS.items() if t is task)


def task_by_name(name: str) -> Task:
    """A task by short name (collect_logs), id (worldloom/CollectLogs-v0) or CamelCase name."""
    for short, task in TASKS.items():
        if name in (short, task.env_id, task.name, f"{task.name}-v0"):
            return task
    raise ValueError(f"unknown task {name!r}; known: {', '.join(TASK_IDS)}")


def progress(task: Task, collected_total: dict[str, int], position: np.ndarray, spawn: np.ndarray,
             in_water: bool, previous: float) -> float:
    """The task's metric after a step, from engine state: items gained so far, the distance
    from spawn now, or 1 once the goal block was reached."""
    if task.metric == "collect":
        return float(sum(collected_total.get(item, 0) for item in task.items))
    if task.metric == "distance":
        return float(math.hypot(position[0] - spawn[0], position[2] - spawn[2]))
    return max(previous, 1.0 if in_water else 0.0)


class TaskEnv(VoxelWorldEnv):
    """VoxelWorld playing one task: reward = the metric's increase, `info["task"]` = its state.

    Keyword arguments are VoxelConfig's (height, width, world_size, ...); `max_steps` defaults
    to the task's time limit. The env's own `task` reward option is not used.
    """

    task_spec: Task

    def __init__(self, task: str | Task = "collect_logs", render_mode: str | None = "rgb_array", **kwargs):
        self.task_spec = task if isinstance(task, Task) else task_by_name(task)
        kwargs.setdefault("max_steps", self.task_spec.max_steps)
        super().__init__(render_mode=render_mode, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = dict(options or {})
        if self.task_spec.biome is not None:
            options.setdefault("biome", self.task_spec.biome)
        obs, info = super().reset(seed=seed, options=options)
        self.spawn = self.player.position.copy()
        self.collected_total: dict[str, int] = {}
        self.progress = 0.0
        info["task"] = self._task_info()
        return obs, info

    def _arrange_start(self) -> None:
        """The task's start, before the first frame: FindWater's band around water, MineStone's quarry."""
        moved = None
        if self.task_spec.start_from_goal is not None:
            allowed = columns_near(self.world, self.task_spec.goal_blocks, *self.task_spec.start_from_goal)
            if allowed.any():
                sx, _, sz = self.world.shape
                moved = self.world.spawn_point(radius=max(sx, sz), allowed=allowed)
        if self.task_spec.quarry:
            moved = dig_quarry(self.world, self.player.position, self.task_spec.quarry)
        if moved is not None:
            self.player.position[:] = moved
            self.player.update_target(self.world)

    def step(self, action: dict):
        obs, _, terminated, truncated, info = super().step(action)
        for item, n in self.player.collected.items():
            self.collected_total[item] = self.collected_total.get(item, 0) + n
        before = self.progress
        self.progress = progress(self.task_spec, self.collected_total, self.player.position, self.spawn,
                                 bool(info["in_water"]), before)
        reward = self.progress - before
        success = self.progress >= self.task_spec.target
        if success and self.task_spec.end_on_success:
            terminated, truncated = True, False
        info["task"] = self._task_info()
        return obs, reward, terminated, truncated, info

    def _task_info(self) -> dict:
        eye, ids = self.player.eye, self.task_spec.goal_blocks
        candidates = None
        if ids:  # the goal blocks around the eye's cell, searched again when the cell, the world or its blocks change
            cell = np.floor(eye).astype(np.int64)
            stamp = (self.world.edits, *cell.tolist())
            world, old_stamp, candidates = getattr(self, "_goal_cache", (None, None, None))
            if world is not self.world or old_stamp != stamp:
                candidates = goal_candidates(self.world.blocks, cell, ids)
                self._goal_cache = (self.world, stamp, candidates)
        goal, distance = nearest_block(self.world.blocks, eye, ids, candidates)
        return {"name": self.task_spec.name, "progress": self.progress,
                "success": bool(self.progress >= self.task_spec.target),
                "goal": goal, "goal_block": BLOCKS[self.world.blocks[tuple(goal)]].name if goal[0] >= 0 else "",
                "goal_distance": distance}


GOAL_RADIUS = (16, 8)  # blocks searched around the eye for the nearest goal block: horizontally, vertically


def goal_candidates(blocks: np.ndarray, cell: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    """(N, 3) int64 positions of the blocks of `ids` within GOAL_RADIUS of the block `cell`."""
    r, ry = GOAL_RADIUS
    lo = np.maximum(cell - (r, ry, r), 0)
    hi = np.minimum(cell + (r + 1, ry + 1, r + 1), blocks.shape)
    box = blocks[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    hit = box == ids[0]
    for i in ids[1:]:
        hit |= box == i
    return np.argwhere(hit) + lo


def nearest_block(blocks: np.ndarray, eye: np.ndarray, ids: tuple[int, ...],
                  candidates: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The nearest block of one of `ids` to `eye` within GOAL_RADIUS: ((x, y, z) int64, distance to its
    centre in blocks), or ((-1, -1, -1), inf) when there is none. What a scripted player that knows
    the task walks to (`info["task"]["goal"]`); engine truth, not what the frame shows.
    `candidates`: `goal_candidates` of the eye's cell, when the caller has them."""
    if not ids:
        return np.full(3, -1, np.int64), math.inf
    if candidates is None:
        candidates = goal_candidates(blocks, np.floor(eye).astype(np.int64), ids)
    if not len(candidates):
        return np.full(3, -1, np.int64), math.inf
    d2 = ((candidates + 0.5 - eye) ** 2).sum(axis=1)
    k = int(np.argmin(d2))
    return candidates[k].copy(), float(math.sqrt(d2[k]))


def columns_near(world, ids: tuple[int, ...], near: float, far: float) -> np.ndarray:
    """(sx, sz) bool: the columns topped by dry ground (`world.GROUND`) whose nearest column topped by one
    of `ids` is `near` to `far` blocks away, centre to centre, and whose ground is at most 5 blocks above
    that column's top (so the goal is inside `GOAL_RADIUS` from the start, and the way down is a walk).
    Of equally near goal columns the one with the smallest (x, z) counts. All false when no column is
    topped by `ids`. Cost: one pass over the grid per offset within `far` (about 620 at 14 blocks), so it
    grows with the world's area (a brute force over goal columns grew with its square: 3.4 s at 256x256)."""
    from worldloom.envs.world import GROUND

    sx, sy, sz = world.shape
    top = world.blocks[np.arange(sx)[:, None], np.clip(world.tops - 1, 0, sy - 1), np.arange(sz)[None, :]]
    goal = np.isin(top, ids)
    dry = np.isin(top, GROUND) & (world.tops > 0)
    nearest = np.full((sx, sz), np.inf)
    goal_top = np.zeros((sx, sz), world.tops.dtype)
    r = int(math.floor(far))
    for dx in range(-r, r + 1):  # ascending offsets: of equal distances the smallest goal (x, z) is kept
        for dz in range(-r, r + 1):
            d = math.sqrt(dx * dx + dz * dz)
            if d > far:
                continue
            cells = (slice(max(0, -dx), min(sx, sx - dx)), slice(max(0, -dz), min(sz, sz - dz)))
            goals = (slice(max(0, dx), min(sx, sx + dx)), slice(max(0, dz), min(sz, sz + dz)))
            near_here, top_here = nearest[cells], goal_top[cells]  # views
            hit = goal[goals] & (d < near_here)
            near_here[hit] = d
            top_here[hit] = world.tops[goals][hit]
    return dry & (nearest >= near) & (nearest <= far) & (world.tops - goal_top <= 5)


def dig_quarry(world, feet: np.ndarray, radius: int) -> np.ndarray:
    """Clear every block above the stone in the (2r+1)^2 columns around `feet`; -> the new feet
    position (3,) on the centre column's stone. Columns without stone are left as they are."""
    cx, cz = int(math.floor(feet[0])), int(math.floor(feet[2]))
    sx, sy, sz = world.shape
    floor = None
    for x in range(max(cx - radius, 0), min(cx + radius + 1, sx)):
        for z in range(max(cz - radius, 0), min(cz + radius + 1, sz)):
            stone = np.flatnonzero(world.blocks[x, :, z] == BLOCK_ID["stone"])
            if not stone.size:
                continue
            top = int(stone[-1])
            for y in range(sy - 1, top, -1):
                if world.blocks[x, y, z] != AIR:
                    world.set(x, y, z, AIR)
            if (x, z) == (cx, cz):
                floor = top + 1
    return np.array([cx + 0.5, float(floor if floor is not None else feet[1]), cz + 0.5])


def make_task_env(name: str, **kwargs) -> TaskEnv:
    """A task env by short name or id."""
    return TaskEnv(task_by_name(name), **kwargs)


def _factory(short: str):
    def make(**kwargs) -> TaskEnv:
        return TaskEnv(TASKS[short], **kwargs)

    make.__name__ = make.__qualname__ = TASKS[short].name
    make.metadata = VoxelWorldEnv.metadata  # env_metadata reads it
    return make


CollectLogs = _factory("collect_logs")
MineStone = _factory("mine_stone")
Explore = _factory("explore")
FindWater = _factory("find_water")
