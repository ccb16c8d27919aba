"""Minetest (a real 3D block game engine) behind WorldLoom's gymnasium contract: worldloom/Minetest-v0.

    bash tests/setup_minetest.sh                 # Debian: minetest minetest-data xvfb gcc
    env = worldloom.envs.make_env("minetest", height=128, width=128)
    obs, info = env.reset(seed=3)                # a start pose drawn from the seed, in a fixed map
    obs, reward, terminated, truncated, info = env.step(worldloom.actions.noop())
    env.close()                                  # no minetest or Xvfb process left behind
    worldloom capture --env minetest --player mixture --num-workers 2 --out data/mt

The unmodified Debian binary runs in lock-step (`minetest_engine.py`): one engine frame of exactly
50 ms of game time per step, checked every step from the engine's own frame counter and dtime.
The observation is the frame rendered from the state in `info`; the action of a step is applied in
the next frame, so action[t] lies between frame[t] and frame[t+1] as in every WorldLoom dataset.

Actions (MineRL dict, `worldloom.actions`) become X input: forward/back/left/right W/S/A/D, jump
Space, sneak Shift, sprint aux1 (E; wlsrv makes aux1 + forward a 1.3x sprint with a 1.1x wider
view, since minetest_game has none), attack / use the left / right button, drop Q, inventory I,
hotbar.k the key k. The camera [pitch, yaw] degrees becomes pointer pixels at `deg_per_px`; the
sub-pixel rest is carried to the next step. `info["action"]` is what the engine executed: the
camera is the engine's own yaw and pitch change (or the cursor's move while the inventory is
open), the movement buttons its control state; the recorder stores it.

Observations smaller than 128 px are rendered at 128 and area-resized: at 64 px Minetest's HUD
cannot shrink enough and its hotbar would cover 40% of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import gymnasium
import numpy as np
from gymnasium import spaces

from worldloom import actions as act
from worldloom.config import MAX_SEED, doc
from worldloom.errors import UserError

from .minetest_engine import (
    SCREEN_PX,
    Engine,
    EngineConfig,
    EngineCrashed,
    FrameState,
    MinetestNotInstalled,
    PortInUse,
    find_install,
)

__all__ = ["MinetestConfig", "MinetestEnv", "MinetestNotInstalled", "EngineCrashed", "LICENCE", "KEYS"]

# Written into every dataset captured from this env (capture/config.py: dataset_config).
LICENCE = {
    "engine": "Minetest 5.6 (LGPL-2.1-or-later)",
    "game": "minetest_game (code LGPL-2.1-or-later; media CC BY-SA 3.0)",
    "frames": "CC BY-SA 3.0: frames show minetest_game's textures; credit 'Minetest Game contributors' and "
              "share the frames (and datasets of them) under the same licence",
}
# Buttons -> X keysym names (keys) or pointer buttons (ints).
KEYS: dict[str, str | int] = {
    "attack": 1, "use": 3, "forward": "w", "back": "s", "left": "a", "right": "d", "jump": "space",
    "sneak": "Shift_L", "sprint": "e", "drop": "q", "inventory": "i", **{f"hotbar.{k}": str(k) for k in range(1, 10)},
}
# Buttons whose effect the engine reports each frame (wlrec's get_control names).
CONTROLS: dict[str, str] = {
    "attack": "dig", "use": "place", "forward": "up", "back": "down", "left": "left", "right": "right",
    "jump": "jump", "sneak": "sneak", "sprint": "aux1",
}
MIN_RENDER_PX = 128
MAX_POINTER_PX = SCREEN_PX // 2 - MIN_RENDER_PX  # pointer pixels one step may move before the screen edge clamps it
SETTLE_MORE = 60  # frames a reset may add after settle_steps until the player stands still (3 s of play)


@dataclass(frozen=True)
class MinetestConfig:
    height: int = doc("observation height in pixels (64..512; under 128 rendered at 128 and area-resized)", 128)
    width: int = doc("observation width in pixels (64..512)", 128)
    max_steps: int = doc("episode length in steps before truncation (20 steps = 1 s)", 1000)
    map_seed: int = doc("Minetest's fixed_map_seed (mapgen v7): the same seed gives the same terrain", 42)
    spawn_radius: int = doc("start positions are drawn from the reset seed in a square of this half-width (nodes)", 500)
    viewing_range: int = doc("Minetest's viewing_range in nodes (rendering and map generation grow with it)", 40)
    settle_steps: int = doc("frames run after a reset, before the first observation (terrain loads)", 20)
    time_of_day: float = doc("time of day at reset, 0..1 (0.5 noon); it stands still (time_speed 0)", 0.5)
    deg_per_px: float = doc("camera degrees per pointer pixel (VPT's human data: 0.15)", 0.15)
    lockstep: bool = doc("lock-step (exact); False: real time at 20 fps, a fallback that may drop or repeat frames", True)
    step_timeout_s: float = doc("a step that takes longer is a hung engine: it is restarted", 10.0)
    start_tries: int = doc("engine starts tried before reset gives up (a port collision or a crash is retried)", 3)

    def __post_init__(self):
        if not (64 <= self.height <= 512 and 64 <= self.width <= 512):
            raise ValueError(f"height and width must be in 64..512, got {self.height}x{self.width}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 <= self.spawn_radius <= 30000:
            raise ValueError(f"spawn_radius must be in 0..30000, got {self.spawn_radius}")
        if not 20 <= self.viewing_range <= 500:
            raise ValueError(f"viewing_range must be in 20..500, got {self.viewing_range}")
        if not 0.0 <= self.time_of_day <= 1.0:
            raise ValueError(f"time_of_day must be in 0..1, got {self.time_of_day}")
        if not 0.01 <= self.deg_per_px <= 1.0:
            raise ValueError(f"deg_per_px must be in 0.01..1, got {self.deg_per_px}")
        if self.settle_steps < 0 or self.step_timeout_s <= 0 or self.start_tries < 1:
            raise ValueError("settle_steps must be >= 0, step_timeout_s > 0 and start_tries >= 1, got "
                             f"{self.settle_steps}, {self.step_timeout_s}, {self.start_tries}")

    @property
    def render_size(self) -> tuple[int, int]:
        """(H, W) of the game window: the observation size scaled up to at least 128 px."""
        k = max(1, math.ceil(MIN_RENDER_PX / min(self.height, self.width)))
        return self.height * k, self.width * k

    def engine_config(self) -> EngineConfig:
        h, w = self.render_size
        return EngineConfig(width=w, height=h, map_seed=self.map_seed, viewing_range=self.viewing_range,
                            deg_per_px=self.deg_per_px, lockstep=self.lockstep, step_timeout_s=self.step_timeout_s)


def wrap_deg(d: float) -> float:
    """An angle difference in degrees, wrapped into [-180, 180)."""
    return (d + 180.0) % 360.0 - 180.0


def our_yaw(state: FrameState) -> float:
    """WorldLoom's yaw in degrees (0 faces +z, 90 faces +x: a right turn increases it, as in VoxelWorld)."""
    return (-math.degrees(state.yaw_rad)) % 360.0


def our_pitch(state: FrameState) -> float:
    """WorldLoom's pitch in degrees, positive looking down (the camera reports it negated)."""
    return -math.degrees(state.pitch_rad)


def start_pose(seed: int, cfg: MinetestConfig) -> tuple[float, float, float]:
    """(x, z, yaw degrees) of an episode's start, a pure function of its seed."""
    rng = np.random.default_rng(seed)
    x, z = rng.uniform(-cfg.spawn_radius, cfg.spawn_radius, 2)
    return float(x), float(z), float(rng.uniform(0.0, 360.0))


class MinetestEnv(gymnasium.Env):
    """worldloom/Minetest-v0: see the module docstring; keyword arguments are MinetestConfig's."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": act.FPS, "licence": LICENCE}

    def __init__(self, render_mode: str | None = "rgb_array", **kwargs):
        names = {f.name for f in fields(MinetestConfig)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown Minetest option(s) {unknown}; known: {', '.join(sorted(names))}")
        self.cfg = MinetestConfig(**kwargs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.install = find_install()  # MinetestNotInstalled (a UserError) names what is missing
        self.observation_space = spaces.Box(0, 255, (self.cfg.height, self.cfg.width, 3), np.uint8)
        from worldloom.envs.voxel import action_space

        self.action_space = action_space()
        self.engine: Engine | None = None
        self.gui_open = False
        self.num_starts = 0  # engine processes started (a crash or hang costs one more)
        self._obs: np.ndarray | None = None

    # -- engine life

    def _engine(self) -> Engine:
        """The running engine, started (again) if there is none; UserError after start_tries failures."""
        if self.engine is not None:
            return self.engine
        problems = []
        for _ in range(self.cfg.start_tries):
            try:
                self.num_starts += 1
                self.engine = Engine(self.cfg.engine_config(), self.install)
                return self.engine
            except PortInUse as err:
                problems.append(str(err))
            except EngineCrashed as err:
                problems.append(str(err))
        raise UserError(f"minetest did not start in {self.cfg.start_tries} tries: {problems[-1]}")

    def _drop_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.gui_open = False  # a fresh engine starts with no inventory screen

    def close(self):
        self._drop_engine()

    # -- gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, MAX_SEED))
        options = options or {}
        x, z, yaw = start_pose(int(seed), self.cfg)
        x, z = options.get("position", (x, z))
        yaw, pitch = float(options.get("yaw", yaw)), float(options.get("pitch", 0.0))
        try:
            self._reset_engine(x, z, yaw, pitch)
        except EngineCrashed:
            self._drop_engine()  # a crash or hang during a reset: one fresh start, then give up
            self._reset_engine(x, z, yaw, pitch)
        return self._obs.copy(), self._info()

    def _reset_engine(self, x: float, z: float, yaw: float, pitch: float) -> None:
        engine = self._engine()
        try:
            if self.gui_open:
                engine.step(keys={"i"})  # close the inventory
            engine.step()  # release everything
            engine.reset_pose(x, z, math.radians(-yaw), math.radians(pitch), self.cfg.time_of_day)
            engine.step(keys={"1"})  # the server cannot set the wield index (5.6): select slot 1 by key
            for _ in range(max(self.cfg.settle_steps, 1)):
                engine.step()
            # Under load the terrain can arrive late and the player still be falling onto it after the settle
            # steps (a CI run started seed 5 at y 3.775, then at 3.5): step on until it stands still, so a seed
            # starts in one pose. A player in water may never stand; the bound ends it.
            for _ in range(SETTLE_MORE):
                before_y = engine.state.position[1]
                engine.step()
                state = engine.state
                if (state.on_ground or state.in_liquid) and abs(state.position[1] - before_y) < 1e-3:
                    break
        except EngineCrashed:
            self._drop_engine()
            raise
        self.step_count = 0
        self.carry = np.zeros(2)  # degrees not yet turned (sub-pixel rests), [pitch, yaw]
        self.gui_open = False
        self.hotbar_slot = engine.state.wield_index
        self.expect_slot: int | None = None
        self.mismatches = 0  # steps where the engine's controls differed from what was sent
        self.prev_action = act.noop()
        self.last_executed = act.noop()
        self._obs = self._observe()

    def step(self, action: dict):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        act.validate(action)
        engine = self.engine
        if engine is None:
            raise EngineCrashed("the engine stopped: call reset()")
        before = engine.state
        keys, buttons = self._held(action)
        dpp = engine.cfg.mouse_sensitivity * before.deg_per_px_at
        move_px = self._pointer_move(np.asarray(action["camera"], dtype=np.float64), dpp)
        gui_events = engine.gui_events
        try:
            after = engine.step(keys=keys, buttons=buttons, mouse=(int(move_px[1]), int(move_px[0])))
        except EngineCrashed:
            self._drop_engine()
            raise
        self._update_gui(action, gui_events, engine)
        executed = self._executed(action, before, after, move_px * dpp)
        self.last_executed = executed
        self.prev_action = action
        self.step_count += 1
        self._obs = self._observe()
        truncated = self.step_count >= self.cfg.max_steps
        return self._obs.copy(), 0.0, False, truncated, self._info()

    def render(self):
        return None if self._obs is None or self.render_mode is None else self._obs.copy()

    # -- one step's parts

    def _held(self, action: dict) -> tuple[set[str], set[int]]:
        keys, buttons = set(), set()
        for name, key in KEYS.items():
            if action[name]:
                (buttons if isinstance(key, int) else keys).add(key)
        return keys, buttons

    def _pointer_move(self, camera: np.ndarray, dpp: float) -> np.ndarray:
        """[dy, dx] whole pointer pixels for `camera` [pitch, yaw] plus the carried rest."""
        want = camera + self.carry
        px = np.round(want / dpp)
        self.carry = want - px * dpp  # only the sub-pixel rest is carried; a clamped move is dropped
        px = np.clip(px, -MAX_POINTER_PX, MAX_POINTER_PX)
        if self.gui_open:  # the cursor stays inside the window: people point at slots
            h, w = self.engine.cfg.height, self.engine.cfg.width
            cx, cy = self.engine.pointer_in_window()
            px[1] = min(max(cx + px[1], 0), w - 1) - cx
            px[0] = min(max(cy + px[0], 0), h - 1) - cy
        return px

    def _update_gui(self, action: dict, gui_events: int, engine: Engine) -> None:
        """Track the inventory screen: I opens it (wlrec confirms) and closes it."""
        pressed = action["inventory"] and not self.prev_action["inventory"]
        if pressed:
            self.gui_open = not self.gui_open
            if self.gui_open and engine.gui_events == gui_events:
                self.mismatches += 1  # the engine did not report the opening
                self.gui_open = False

    def _executed(self, action: dict, before: FrameState, after: FrameState, moved_deg: np.ndarray) -> dict:
        """The action the engine executed this step (what the recorder stores)."""
        executed = {name: int(action[name]) for name in act.BUTTONS}
        if not self.gui_open:
            for name, control in CONTROLS.items():
                engine_has = int(control in after.controls)
                if engine_has != executed[name]:
                    self.mismatches += 1
                    executed[name] = engine_has
            # The slot a hotbar key selects shows in this frame; the engine logs it one frame later.
            if self.expect_slot is not None and after.wield_index != self.expect_slot:
                self.mismatches += 1
            self.expect_slot = None
            for k in range(9):
                if action[f"hotbar.{k + 1}"] and not self.prev_action[f"hotbar.{k + 1}"]:
                    self.hotbar_slot = self.expect_slot = k
            camera = [our_pitch(after) - our_pitch(before), wrap_deg(our_yaw(after) - our_yaw(before))]
        else:
            camera = [float(moved_deg[0]), float(moved_deg[1])]
        executed["camera"] = np.array(camera, dtype=np.float32)
        return executed

    def _observe(self) -> np.ndarray:
        frame = self.engine.grab()  # (h, w, 3) at the render size
        if frame.shape[:2] != (self.cfg.height, self.cfg.width):
            frame = cv2.resize(frame, (self.cfg.width, self.cfg.height), interpolation=cv2.INTER_AREA)
        return frame

    def _info(self) -> dict:
        engine = self.engine
        s = engine.state
        inventory: dict[str, int] = {}
        for name, count in engine.inventory:
            if name:
                inventory[name] = inventory.get(name, 0) + count
        cursor = np.array([0.5, 0.5])
        if self.gui_open:
            cx, cy = engine.pointer_in_window()
            cursor = np.array([cx / engine.cfg.width, cy / engine.cfg.height])
        return {
            "position": s.position.copy(),
            "yaw": our_yaw(s),
            "pitch": our_pitch(s),
            "on_ground": s.on_ground,
            "in_water": s.in_liquid,
            "target_block": s.target_block,
            "target_pos": s.target_pos.copy(),
            "target_distance": s.target_distance if s.target_block else math.inf,
            "inventory": inventory,
            "hotbar": [name for name, _ in engine.inventory[:9]],
            "hotbar_slot": self.hotbar_slot,
            "gui_open": self.gui_open,
            "cursor": cursor,
            "air": s.breath / 10.0,
            "hp": s.hp,
            "health": float(s.hp),  # hit points, 20 = full (the dataset's state_health)
            "time_of_day": s.time_of_day,  # Minetest's own: 0 midnight, 0.5 noon
            # The dataset's state_time_of_day: the fraction of the day since sunrise (06:00 = 0.25).
            "time_since_sunrise": (s.time_of_day - 0.25) % 1.0,
            "controls": sorted(s.controls),
            "step": self.step_count,
            "frame": s.frame,  # the engine's own frame counter (the client mod's)
            "control_mismatches": self.mismatches,
            "action": self.last_executed,  # what the engine executed in the last step
        }
