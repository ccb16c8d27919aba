"""VoxelWorld: a first-person Minecraft-like block world, the embedded default env.

    import gymnasium, worldloom.envs
    env = gymnasium.make("worldloom/VoxelWorld-v0", height=64, width=64)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

The env only orchestrates: the world comes from `worldgen.generate(seed)`, the player, animals
and dropped items update themselves (`objects.py`), and `render.render` draws the frame. The
action is a MineRL 1.0 style dict (20 buttons + camera [pitch, yaw] degrees, `actions.py`); the
observation is RGB uint8 (H, W, 3); `info` carries the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import gymnasium
import numpy as np
from gymnasium import spaces

from worldloom import actions as act
from worldloom.config import MAX_SEED, doc
from worldloom.envs.blocks import BLOCK_NAMES
from worldloom.envs.objects import Animals, Items, Player
from worldloom.envs.render import View, render
from worldloom.envs.world import World
from worldloom.envs.worldgen import BIOMES

# Optional task rewards: item collected -> reward per item. Documented in docs/envs.md.
TASKS: dict[str, dict[str, float]] = {
    "none": {},
    "collect_logs": {"log": 1.0},
    "mine_stone": {"cobblestone": 1.0},
    "find_ores": {"coal": 1.0, "iron_ore": 2.0, "gold_ore": 4.0},
    "hunt": {"meat": 1.0, "wool": 1.0, "feather": 1.0},
}


@dataclass(frozen=True)
class VoxelConfig:
    height: int = doc("observation height in pixels (64..360)", 128)
    width: int = doc("observation width in pixels (64..640)", 128)
    fov_deg: float = doc("vertical field of view in degrees (Minecraft's default is 70)", 70.0)
    world_size: tuple[int, int, int] = doc("world size in blocks (x, y up, z)", (64, 48, 64))
    max_steps: int = doc("episode length in steps before truncation (20 steps = 1 s)", 1000)
    view_distance: float = doc("fog distance in blocks", 40.0)
    num_animals: int = doc("animals placed at reset", 6)
    day_night: bool = doc("cycle the sun through a day of `day_length` steps", False)
    day_length: int = doc("steps in a full day when day_night is on", 2400)
    task: str = doc(f"reward task: {', '.join(TASKS)}", "none")
    antialias: bool = doc("2x2 samples per pixel, averaged (edges and far textures blend as in real footage)", False)

    def __post_init__(self):
        kinds = {"int": (int, np.integer), "float": (int, float, np.integer, np.floating), "bool": (bool, np.bool_),
                 "str": (str,)}
        for f in fields(self):  # make(width="64") was a bare TypeError from a comparison below
            value, kind = getattr(self, f.name), kinds.get(str(f.type))
            if kind and (not isinstance(value, kind) or (str(f.type) != "bool" and isinstance(value, (bool, np.bool_)))):
                words = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "a string"}
                raise ValueError(f"{f.name} must be {words[str(f.type)]}, got {value!r}")
        if not 64 <= self.height <= 360:
            raise ValueError(f"height must be in 64..360, got {self.height}")
        if not 64 <= self.width <= 640:
            raise ValueError(f"width must be in 64..640, got {self.width}")
        if not 20.0 <= self.fov_deg <= 130.0:
            raise ValueError(f"fov_deg must be in 20..130, got {self.fov_deg}")
        sx, sy, sz = self.world_size
        if min(sx, sz) < 16 or sy < 24 or max(sx, sz) > 512 or sy > 256:
            raise ValueError(f"world_size must be (16..512, 24..256, 16..512), got {self.world_size}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.view_distance <= 1:
            raise ValueError(f"view_distance must be > 1, got {self.view_distance}")
        if self.num_animals < 0:
            raise ValueError(f"num_animals must be >= 0, got {self.num_animals}")
        if self.day_length < 2:
            raise ValueError(f"day_length must be >= 2, got {self.day_length}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")


def action_space() -> spaces.Dict:
    """MineRL 1.0's action space restricted to VPT's 20 buttons and the camera."""
    entries = {name: spaces.Discrete(2) for name in act.BUTTONS}
    entries["camera"] = spaces.Box(-act.CAMERA_LIMIT, act.CAMERA_LIMIT, (2,), np.float32)
    return spaces.Dict(entries)


def time_of_day(step: int, cfg: VoxelConfig) -> float:
    """Fraction of the day since sunrise, [0, 1): 0.25 is noon, 0.5 sunset; 0.15 (mid-morning) without day/night."""
    return (step / cfg.day_length + 0.15) % 1.0 if cfg.day_night else 0.15


def sun_state(step: int, cfg: VoxelConfig) -> tuple[np.ndarray, float]:
    """Sun direction (unit (3,)) and daylight 0..1; a fixed mid-morning sun without day/night."""
    phase = (step / cfg.day_length + 0.15) if cfg.day_night else 0.15  # 0.25 = noon (time_of_day, unwrapped)
    angle = 2 * math.pi * phase
    sun = np.array([math.cos(angle) * 0.8, math.sin(angle), 0.45])
    sun /= np.linalg.norm(sun)
    light = min(max(sun[1] * 2.0 + 0.35, 0.15), 1.0)
    return sun, float(light)


class VoxelWorldEnv(gymnasium.Env):
    """worldloom/VoxelWorld-v0: see the module docstring; keyword arguments are VoxelConfig's."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    RESET_OPTIONS: tuple[str, ...] = ("biome",)  # what reset(options=...) reads: start in or beside a biome

    def __init__(self, render_mode: str | None = "rgb_array", **kwargs):
        names = {f.name for f in fields(VoxelConfig)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown VoxelWorld option(s) {unknown}; known: {', '.join(sorted(names))}")
        if "world_size" in kwargs:
            kwargs["world_size"] = tuple(kwargs["world_size"])
        self.cfg = VoxelConfig(**kwargs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (self.cfg.height, self.cfg.width, 3), np.uint8)
        self.action_space = action_space()
        self._frame = np.zeros((self.cfg.height, self.cfg.width, 3), dtype=np.uint8)
        self.world: World | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """seed: a whole number in 0..MAX_SEED (None: drawn); options: a dict of RESET_OPTIONS. ValueError
        for anything else: a larger seed made the same world as a smaller one, a misspelt option was ignored."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or not 0 <= seed <= MAX_SEED):
            raise ValueError(f"seed must be a whole number in 0..{MAX_SEED} (worlds are made from 31 bits of it), "
                             f"got {seed!r}")
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"options must be a dict (keys: {', '.join(self.RESET_OPTIONS)}), got {options!r:.60}")
        unknown = sorted(set(options or {}) - set(self.RESET_OPTIONS), key=str)
        if unknown:
            raise ValueError(f"unknown reset option(s) {', '.join(map(repr, unknown))}; {type(self).__name__} reads "
                             f"{', '.join(self.RESET_OPTIONS)}")
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, MAX_SEED))
        self.seed_value = int(seed)
        self.world = World.generate(self.seed_value, self.cfg.world_size)
        near = self._spawn_centre(options or {})
        spawn = self.world.spawn_point(radius=10 if near is None else 3, near=near)
        yaw = float(self.np_random.uniform(0.0, 360.0))
        self.player = Player(spawn, yaw)
        self.animals = Animals(self.world, self.seed_value, self.cfg.num_animals)
        self.items = Items()
        self.step_count = 0
        self.player.update_target(self.world)
        self._arrange_start()
        return self._observe(), self._info()

    def _arrange_start(self) -> None:
        """Called by `reset` before the first frame is rendered: a subclass may move the player or change
        the world here (the tasks' starts, envs/tasks.py). VoxelWorld's own start stays as it is."""

    def _spawn_centre(self, options: dict) -> tuple[int, int] | None:
        """options["biome"] asks to start in (or beside) that biome when the world has it."""
        biome = options.get("biome")
        if biome is None:
            return None
        if biome not in BIOMES:
            raise ValueError(f"options['biome'] must be one of {', '.join(BIOMES)}, got {biome!r}")
        return self.world.biome_centre(BIOMES.index(biome))

    def step(self, action: dict):
        if self.world is None:
            raise RuntimeError("call reset() before step()")
        act.validate(action)
        self.player.update(self.world, self.animals, self.items, action)
        self.animals.update(self.world, self.step_count)
        self.items.update(self.world)
        self.step_count += 1
        reward = float(sum(TASKS[self.cfg.task].get(item, 0.0) * n for item, n in self.player.collected.items()))
        # Death: falling out of the world or running out of breath under water.
        terminated = bool(self.player.position[1] < -8.0 or self.player.air <= 0.0)
        truncated = self.step_count >= self.cfg.max_steps and not terminated
        return self._observe(), reward, terminated, truncated, self._info()

    def render(self):
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def get_state(self) -> bytes:
        """Everything that decides what comes next (world edits, player, animals, items, rng, time) as
        bytes; `set_state` in any VoxelWorldEnv with the same world size, day/night and task continues
        with the same frames (format and checks: `envs/snapshot.py`)."""
        from worldloom.envs import snapshot

        return snapshot.save(self)

    def set_state(self, state: bytes) -> tuple[np.ndarray, dict]:
        """Restore `get_state()`'s bytes; returns the observation and info at that state, as reset does.
        A blob that is not a whole VoxelWorld state: `snapshot.StateError` (one line), env untouched."""
        from worldloom.envs import snapshot

        snapshot.restore(self, state)
        return self._observe(), self._info()

    def _view(self) -> View:
        p = self.player
        sun, light = sun_state(self.step_count, self.cfg)
        boxes = self.animals.render_array()
        if len(self.items.state):
            boxes = np.concatenate([boxes, self.items.render_array()])
        target = np.array(p.mining if p.mining else (-1, -1, -1), dtype=np.int64)
        fov = self.cfg.fov_deg * (1.1 if p.sprinting else 1.0)  # Minecraft widens the view when sprinting
        mesh = self.world.mesh
        mesh.update()  # re-mesh the chunks that block edits changed
        return View(self.world.blocks, self.world.coarse, self.world.max_top, p.eye, math.radians(p.yaw), math.radians(p.pitch),
                    fov, self.cfg.view_distance, sun, light, target, p.crack_stage, boxes, p.underwater,
                    p.hud_array(), p.hotbar_slot, p.gui_open, p.cursor, p.inventory_array(), p.air,
                    p.swing, p.swing_kind, p.hand_held, mesh.quads, mesh.chunks)

    def _observe(self) -> np.ndarray:
        render(self._view(), self._frame, self.cfg.antialias)
        return self._frame.copy()

    def _info(self) -> dict:
        p = self.player
        target = p.target
        ix, iz = int(math.floor(p.position[0])), int(math.floor(p.position[2]))
        sx, _, sz = self.world.shape
        biome = BIOMES[self.world.biome[ix, iz]] if 0 <= ix < sx and 0 <= iz < sz else "void"
        return {
            "position": p.position.copy(),
            "yaw": p.yaw,
            "pitch": p.pitch,
            "on_ground": p.on_ground,
            "in_water": p.in_water(self.world),
            # No None values: gymnasium's vector envs stack infos into typed arrays.
            "target_block": BLOCK_NAMES[target[0]] if target else "",
            "target_pos": np.array(target[1:4] if target else (-1, -1, -1)),
            "target_distance": target[5] if target else math.inf,
            "inventory": {k: v for k, v in p.inventory.items() if v > 0},
            "hotbar": list(p.hotbar),
            "hotbar_slot": p.hotbar_slot,
            "gui_open": p.gui_open,
            "cursor": p.cursor.copy(),  # (x, y) in 0..1, where the GUI cursor is while the inventory is open
            "air": p.air,
            "biome": biome,
            "step": self.step_count,
            "time_of_day": time_of_day(self.step_count, self.cfg),
            "world_size": self.cfg.world_size,
            "mining_progress": p.crack_stage / 9.0,
        }
