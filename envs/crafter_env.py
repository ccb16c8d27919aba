"""Crafter behind WorldLoom's action and observation contract (worldloom/Crafter-v0).

    env = worldloom.envs.make_env("crafter", height=64, width=64)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(worldloom.actions.noop())

Crafter (danijar/crafter, `crafter` on PyPI) is a 2D top-down Minecraft-like game with the old
gym 4-tuple API and 17 discrete actions. This adapter speaks gymnasium's 5-tuple and takes our
MineRL-style action dict, mapped by `to_crafter` (first rule that applies wins):

| our action                                   | Crafter action                     |
|----------------------------------------------|------------------------------------|
| `attack`                                     | `do` (collect, attack, drink, eat) |
| `use` with hotbar slot 1..9 selected         | place_stone, place_table, place_furnace, place_plant, make_wood_pickaxe, make_stone_pickaxe, make_iron_pickaxe, make_wood_sword, make_stone_sword |
| `use` + `sneak` with slot 9 selected         | make_iron_sword                    |
| `forward` / `back` / `left` / `right`        | move_up / move_down / move_left / move_right |
| `sneak` alone                                | sleep                              |
| anything else (camera, jump, sprint, ...)    | noop                               |

The selected slot is state, as in Minecraft: `hotbar.k` selects slot k and stays selected.
Crafter is not deterministic across processes: its creature balancing iterates a Python set of
objects whose order depends on memory addresses, so the same seed and actions can give
different frames in two processes (worlds at reset are the same; episodes drift later).
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np
from gymnasium import spaces

from worldloom import actions as act

CRAFTER_ACTIONS: tuple[str, ...] = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)
SLOT_ACTIONS: tuple[str, ...] = (
    "place_stone", "place_table", "place_furnace", "place_plant", "make_wood_pickaxe",
    "make_stone_pickaxe", "make_iron_pickaxe", "make_wood_sword", "make_stone_sword",
)
MOVES: tuple[tuple[str, str], ...] = (
    ("forward", "move_up"), ("back", "move_down"), ("left", "move_left"), ("right", "move_right"),
)


VITALS = ("health", "food", "drink", "energy")  # in Crafter's inventory, but not items
VITAL_MAX = 9
CRAFTER_DAY = 300  # steps (crafter/env.py `_update_time`)
# Crafter's daylight is 1 - |cos(pi * p)|^3 with p = (step / 300) % 1 + 0.3: darkest at p = 1; it
# rises through 0.5 at p = 1 + arccos(0.5^(1/3)) / pi ~ 1.2084, which is sunrise here.
CRAFTER_SUNRISE = 1.0 + math.acos(0.5 ** (1 / 3)) / math.pi


def crafter_time_of_day(step: int | None) -> float:
    """Fraction of Crafter's day since sunrise, [0, 1) (the dataset's state_time_of_day)."""
    return ((((step or 0) / CRAFTER_DAY) % 1.0 + 0.3) - CRAFTER_SUNRISE) % 1.0


def select_slot(action: dict, slot: int) -> int:
    """The hotbar slot (0..8) selected after `action`, starting from `slot`."""
    for k in range(9):
        if action[f"hotbar.{k + 1}"]:
            return k
    return slot


def to_crafter(action: dict, slot: int) -> int:
    """Our action dict and the selected slot (0..8) -> Crafter's discrete action index."""
    if action["attack"]:
        name = "do"
    elif action["use"]:
        name = "make_iron_sword" if (slot == 8 and action["sneak"]) else SLOT_ACTIONS[slot]
    else:
        name = next((crafter_name for key, crafter_name in MOVES if action[key]), None)
        if name is None:
            name = "sleep" if action["sneak"] else "noop"
    return CRAFTER_ACTIONS.index(name)


class CrafterEnv(gymnasium.Env):
    """worldloom/Crafter-v0: Crafter with gymnasium's API and WorldLoom's action dict."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, height: int = 128, width: int = 128, max_steps: int = 10000, area: int = 64,
                 reward: bool = True, render_mode: str | None = "rgb_array"):
        import crafter

        # Crafter draws a 9x9 view at side // 9 pixels a tile and the inventory's digits at 0.6 of a tile:
        # below 18 pixels a digit is 0 pixels and Crafter fails ('height and width must be > 0').
        if not (18 <= height <= 1024 and 18 <= width <= 1024):
            raise ValueError(f"height and width must be in 18..1024, got {height}x{width}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.height, self.width, self.max_steps = height, width, max_steps
        self.render_mode = render_mode
        self._env = crafter.Env(area=(area, area), size=(height, width), reward=reward, length=max_steps)
        self.observation_space = spaces.Box(0, 255, (height, width, 3), np.uint8)
        from worldloom.envs.voxel import action_space

        self.action_space = action_space()
        self._obs: np.ndarray | None = None
        self.slot = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # crafter seeds episode k with hash((seed, k)): restart its episode count for a fresh seed.
            self._env._seed, self._env._episode = int(seed), 0
        self.slot = 0
        self._obs = self._env.reset()
        self._step = 0
        return self._obs.copy(), self._info({})

    def step(self, action: dict):
        act.validate(action)
        self.slot = select_slot(action, self.slot)
        obs, reward, done, info = self._env.step(to_crafter(action, self.slot))
        self._obs = obs
        self._step += 1
        truncated = bool(done and self._step >= self.max_steps)
        terminated = bool(done and not truncated)
        return obs.copy(), float(reward), terminated, truncated, self._info(info)

    def _info(self, info: dict) -> dict:
        player = self._env._player
        facing = tuple(int(v) for v in player.facing)
        material, _ = self._env._world[(player.pos[0] + facing[0], player.pos[1] + facing[1])]
        return {
            "position": np.array(player.pos, dtype=np.float64),  # (x, y) cell of the 2D map
            "facing": facing,
            "inventory": {k: int(v) for k, v in player.inventory.items() if v and k not in VITALS},
            "achievements": sorted(k for k, v in info.get("achievements", {}).items() if v),
            "hotbar_slot": self.slot,
            # What the engine knows that VoxelWorld's info also carries (the dataset's state_* columns).
            "target_block": material or "",  # the cell the player faces; "" off the map
            "target_distance": 1.0 if material else float("inf"),
            "health": float(player.inventory["health"]) * 20.0 / VITAL_MAX,  # Crafter's 0..9 as hit points
            "vitals": {k: int(player.inventory[k]) for k in VITALS},
            "time_of_day": crafter_time_of_day(self._env._step),
            "step": self._step,
        }

    def render(self):
        return None if self._obs is None or self.render_mode is None else self._obs.copy()
