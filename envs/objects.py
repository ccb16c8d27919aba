"""The things living in a VoxelWorld, each with a small update(): the player, animals, dropped items.

    python -c "from worldloom.envs.voxel import VoxelWorldEnv; e = VoxelWorldEnv(); e.reset(seed=0); print(e.player.position)"

The player's step reads as a table of contents (GUI, camera, movement, mining, placing,
dropping); each part is a small method. Randomness in animals is an integer hash of (seed,
step, animal), so an episode never depends on the order envs run in a process.
"""

from __future__ import annotations

import math

import numpy as np

from worldloom.envs import worldgen
from worldloom.envs.blocks import (
    AIR,
    ANIMALS,
    BLOCK_ID,
    BLOCKS,
    HARDNESS,
    ITEM_COLOURS,
    ITEM_ID,
    PLACEABLE,
    START_COUNT,
    START_HOTBAR,
    WATER,
)
from worldloom.envs.raycast import ray_box
from worldloom.envs.world import collides, move_body, trace_ray

HALF_WIDTH, HEIGHT = 0.3, 1.8
EYE, EYE_SNEAK = 1.62, 1.32  # eye heights; sneaking lowers the view (visible in the footage)
# Blocks per tick (Minecraft: walk 4.3 m/s, sprint 5.6, sneak 1.3, at 20 ticks/s).
WALK, SPRINT, SNEAK = 0.215, 0.28, 0.065
REACH = 4.5
AIR_STEPS = 300  # 15 s of breath under water, as Minecraft
HIT_COOLDOWN = 8  # steps between two hits on an animal while attack is held
SWING_STEPS = 6  # Minecraft's arm swing lasts 6 ticks
GUI_CURSOR_DEG = 60.0  # degrees of camera move that sweep the cursor across the whole screen


# Item colours packed as 0xRRGGBB, the form the HUD kernel takes.
PACKED_COLOURS = {name: (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]) for name, c in zip(ITEM_ID, ITEM_COLOURS, strict=False)}


def item_colour(item: str) -> int:
    return PACKED_COLOURS[item]


class Player:
    """The first-person player: body physics, view, inventory, hotbar and what it is mining."""

    def __init__(self, position: np.ndarray, yaw: float):
        self.position = position.astype(np.float64)  # (3,) feet centre
        self.velocity = np.zeros(3)
        self.yaw, self.pitch = yaw, 0.0  # degrees; pitch positive looks down
        self.on_ground = False
        self.sneaking = self.sprinting = False
        self.inventory: dict[str, int] = {item: START_COUNT for item in START_HOTBAR if item}
        self.hotbar: list[str] = list(START_HOTBAR)
        self.hotbar_slot = 0
        self.gui_open = False
        self.cursor = np.array([0.5, 0.5])
        self.air = 1.0
        self.mining: tuple[int, int, int] | None = None
        self.mining_steps = 0
        self.hit_cooldown = 0
        self.target: tuple | None = None  # (block id, x, y, z, axis, distance) looked at
        self.collected: dict[str, int] = {}  # items gained this step (for task rewards)
        self._prev_inventory_key = 0
        self.swing_steps, self.swing_kind = 0, 0  # hand animation, restarted while attack/use is held
        self._prev_swing_key = False
        self.hand_held = 0

    # ------------------------------------------------------------------ saved states
    def state_dict(self) -> dict:
        """Every attribute as JSON (`envs/snapshot.py` keeps the types): the player's whole state."""
        from worldloom.envs.snapshot import to_json_value

        return {name: to_json_value(value) for name, value in vars(self).items()}

    @classmethod
    def from_state_dict(cls, state: dict) -> Player:
        """The player `state_dict` described; StateError when an attribute is missing, extra or mistyped."""
        from worldloom.envs.snapshot import StateError, from_json_value

        player = cls(np.zeros(3), 0.0)
        names = set(vars(player))
        if not isinstance(state, dict) or set(state) != names:
            got = set(state) if isinstance(state, dict) else set()
            raise StateError(f"damaged VoxelWorld state: player attributes differ (missing {sorted(names - got)}, "
                             f"unknown {sorted(got - names)})")
        for name in names:
            setattr(player, name, from_json_value(state[name], getattr(player, name), name))
        return player

    # ------------------------------------------------------------------ view
    @property
    def eye(self) -> np.ndarray:
        return self.position + np.array([0.0, EYE_SNEAK if self.sneaking else EYE, 0.0])

    def look_dir(self) -> tuple[float, float, float]:
        yaw, pitch = math.radians(self.yaw), math.radians(self.pitch)
        return (math.cos(pitch) * math.sin(yaw), -math.sin(pitch), math.cos(pitch) * math.cos(yaw))

    def update_target(self, world) -> None:
        """The block under the crosshair within reach, or None."""
        e, d = self.eye, self.look_dir()
        b, t, axis, x, y, z = trace_ray(world.blocks, world.coarse, world.max_top, e[0], e[1], e[2], d[0], d[1], d[2], REACH, True)
        self.target = (int(b), int(x), int(y), int(z), int(axis), float(t)) if b else None

    # ------------------------------------------------------------------ step
    def update(self, world, animals, items, action: dict) -> None:
        """Apply one action: GUI toggles, hotbar, camera, movement, mining or hitting, placing, dropping."""
        self.collected = {}
        self.apply_gui(action)
        self.apply_hotbar(action)
        self.apply_camera(action)
        self.apply_movement(world, action)
        self.update_target(world)
        self.apply_attack(world, animals, action)
        self.apply_use(world, animals, action)
        self.apply_drop(items, action)
        self.apply_breath(world)
        self.apply_swing(action)

    def apply_gui(self, action: dict) -> None:
        # `inventory` toggles the screen on the press, not while held (Minecraft's key-down).
        key = int(action["inventory"])
        if key and not self._prev_inventory_key:
            self.gui_open = not self.gui_open
        self._prev_inventory_key = key

    def apply_hotbar(self, action: dict) -> None:
        for k in range(9):
            if action[f"hotbar.{k + 1}"]:
                self.hotbar_slot = k
                break

    def apply_camera(self, action: dict) -> None:
        pitch, yaw = float(action["camera"][0]), float(action["camera"][1])
        if self.gui_open:  # with a screen open the mouse moves the cursor, as in Minecraft
            self.cursor[0] = min(max(self.cursor[0] + yaw / GUI_CURSOR_DEG, 0.0), 1.0)
            self.cursor[1] = min(max(self.cursor[1] + pitch / GUI_CURSOR_DEG, 0.0), 1.0)
            return
        self.pitch = min(max(self.pitch + pitch, -90.0), 90.0)
        self.yaw = (self.yaw + yaw) % 360.0

    def apply_movement(self, world, action: dict) -> None:
        gui = self.gui_open
        fwd = 0 if gui else int(action["forward"]) - int(action["back"])
        side = 0 if gui else int(action["right"]) - int(action["left"])
        self.sneaking = bool(action["sneak"]) and not gui
        self.sprinting = bool(action["sprint"]) and fwd > 0 and not self.sneaking
        speed = SNEAK if self.sneaking else (SPRINT if self.sprinting else WALK)
        yaw = math.radians(self.yaw)
        mx = (fwd * math.sin(yaw) + side * math.cos(yaw)) * speed
        mz = (fwd * math.cos(yaw) - side * math.sin(yaw)) * speed
        if fwd and side:
            mx, mz = mx * 0.7071, mz * 0.7071
        in_water = world.get(*self.block_at(0.4)) == WATER
        jump = bool(action["jump"]) and not gui
        self.on_ground = bool(move_body(world.blocks, world.solid, self.position, self.velocity, mx, mz, jump,
                                        self.sneaking, in_water, self.on_ground, HALF_WIDTH, HEIGHT))

    def block_at(self, height: float) -> tuple[int, int, int]:
        p = self.position
        return int(math.floor(p[0])), int(math.floor(p[1] + height)), int(math.floor(p[2]))

    def apply_attack(self, world, animals, action: dict) -> None:
        """Held attack hits the animal in reach, or cracks the targeted block until it breaks."""
        self.hit_cooldown = max(self.hit_cooldown - 1, 0)
        if not action["attack"] or self.gui_open:
            self.mining, self.mining_steps = None, 0
            return
        block_dist = self.target[5] if self.target else REACH
        hit = animals.first_hit(self.eye, self.look_dir(), block_dist)
        if hit >= 0:
            if self.hit_cooldown == 0:
                self.hit_cooldown = HIT_COOLDOWN
                drop = animals.hurt(hit, self.look_dir())
                if drop:
                    self.gain(drop)
            self.mining, self.mining_steps = None, 0
            return
        if self.target is None:
            self.mining, self.mining_steps = None, 0
            return
        b, x, y, z = self.target[:4]
        if self.mining != (x, y, z):
            self.mining, self.mining_steps = (x, y, z), 0
        self.mining_steps += 1
        hardness = int(HARDNESS[b])
        if hardness > 0 and self.mining_steps >= hardness:
            world.set(x, y, z, AIR)
            if BLOCKS[b].drop:
                self.gain(BLOCKS[b].drop)
            self.mining, self.mining_steps = None, 0
            self.update_target(world)

    @property
    def crack_stage(self) -> int:
        """0 (intact) .. 9 (about to break) for the block being mined."""
        if self.mining is None or self.target is None:
            return 0
        hardness = int(HARDNESS[self.target[0]])
        return 0 if hardness == 0 else 1 + min(8, 9 * self.mining_steps // hardness)

    def apply_use(self, world, animals, action: dict) -> None:
        """`use` places the selected hotbar block against the face looked at."""
        if not action["use"] or self.gui_open or self.target is None:
            return
        item = self.hotbar[self.hotbar_slot]
        if item not in PLACEABLE or self.inventory.get(item, 0) <= 0:
            return
        _, x, y, z, axis, _ = self.target
        d = self.look_dir()
        px, py, pz = x, y, z
        if axis == 0:
            px -= 1 if d[0] > 0 else -1
        elif axis == 1:
            py -= 1 if d[1] > 0 else -1
        elif axis == 2:
            pz -= 1 if d[2] > 0 else -1
        else:
            return
        if not world.inside(px, py, pz) or world.get(px, py, pz) not in (AIR, WATER):
            return
        world.set(px, py, pz, PLACEABLE[item])
        # Never place a block into the player's own body or an animal.
        p = self.position
        if collides(world.blocks, world.solid, p[0], p[1], p[2], HALF_WIDTH, HEIGHT) or animals.occupies(px, py, pz):
            world.set(px, py, pz, AIR)
            return
        self.inventory[item] -= 1
        self.update_target(world)

    def apply_drop(self, items, action: dict) -> None:
        """`drop` throws one of the selected item forward (a small flying box)."""
        item = self.hotbar[self.hotbar_slot]
        if not action["drop"] or self.gui_open or not item or self.inventory.get(item, 0) <= 0:
            return
        self.inventory[item] -= 1
        items.throw(self.eye, self.look_dir(), ITEM_COLOURS[ITEM_ID[item]])

    def apply_swing(self, action: dict) -> None:
        if self.swing_steps > 0:
            self.swing_steps -= 1
        pressed = bool(action["attack"] or action["use"])
        # A new press restarts the swing (so every click shows); a held button keeps it going.
        if pressed and not self.gui_open and (self.swing_steps == 0 or not self._prev_swing_key):
            self.swing_steps, self.swing_kind = SWING_STEPS, 1 if action["attack"] else 2
        self._prev_swing_key = pressed
        # Which of attack (1) / use (2) is held this step: the hand's pose shows it, so a held
        # button is visible in every frame, not only when a swing starts.
        self.hand_held = 0 if self.gui_open else int(bool(action["attack"])) | (2 * int(bool(action["use"])))
        if self.swing_steps == 0:
            self.swing_kind = 0

    @property
    def swing(self) -> float:
        """Phase of the swing in (0, 1]: already under way in the frame right after the press."""
        return 1.0 - (self.swing_steps - 1) / SWING_STEPS if self.swing_steps else 0.0

    def in_water(self, world) -> bool:
        return world.get(*self.block_at(0.1)) == WATER

    def apply_breath(self, world) -> None:
        head = world.get(*self.block_at(EYE_SNEAK if self.sneaking else EYE))
        self.air = max(self.air - 1.0 / AIR_STEPS, 0.0) if head == WATER else 1.0

    @property
    def underwater(self) -> bool:
        return self.air < 1.0

    def gain(self, item: str, count: int = 1) -> None:
        """Put `item` in the inventory, and in the first free hotbar slot if not there yet."""
        self.inventory[item] = self.inventory.get(item, 0) + count
        self.collected[item] = self.collected.get(item, 0) + count
        if item not in self.hotbar:
            for k, slot in enumerate(self.hotbar):
                if not slot or self.inventory.get(slot, 0) == 0:
                    self.hotbar[k] = item
                    break

    def hud_array(self) -> np.ndarray:
        """(9, 4) int32: hotbar item id, count, packed colour, 0 (the renderer's HUD input)."""
        hud = np.full((9, 4), -1, dtype=np.int32)
        for k, item in enumerate(self.hotbar):
            if item:
                hud[k] = (ITEM_ID[item], self.inventory.get(item, 0), item_colour(item), 0)
        return hud

    def inventory_array(self) -> np.ndarray:
        """(K, 2) int32: packed colour and count of each inventory item, for the inventory screen."""
        rows = [(item_colour(i), n) for i, n in sorted(self.inventory.items()) if n > 0]
        return np.array(rows, dtype=np.int32).reshape(-1, 2)


class Animals:
    """A few animals that wander, fall to the ground, flee when hit, and drop an item when killed."""

    def __init__(self, world, seed: int, count: int):
        self.seed = seed
        sx, _, sz = world.shape
        rows = []
        for k in range(count * 8):
            if len(rows) == count:
                break
            x = 2 + int(worldgen._hash(k, 1, 0, seed + 97) * (sx - 4))
            z = 2 + int(worldgen._hash(k, 2, 0, seed + 97) * (sz - 4))
            top = world.ground(x, z)
            if top and world.get(x, top - 1, z) not in (WATER, BLOCK_ID["leaves"], BLOCK_ID["cactus"]):
                kind = k % len(ANIMALS)
                rows.append([x + 0.5, top, z + 0.5, 0.0, kind, ANIMALS[kind].health, 0, 0])
        # x, y, z, heading (radians), kind, health, hurt timer, walking (0/1)
        self.state = np.array(rows, dtype=np.float64).reshape(-1, 8)

    @classmethod
    def from_state(cls, seed: int, state: np.ndarray) -> Animals:
        """Animals with these rows (x, y, z, heading, kind, health, hurt timer, walking) and hash seed."""
        animals = cls.__new__(cls)
        animals.seed, animals.state = seed, state
        return animals

    def update(self, world, step: int) -> None:
        for k in range(self.state.shape[0]):
            a = self.state[k]
            r = worldgen._hash(step, k, 5, self.seed)
            if r < 0.02:
                a[3] = worldgen._hash(step, k, 6, self.seed) * 2 * math.pi
                a[7] = 1.0 if worldgen._hash(step, k, 7, self.seed) < 0.6 else 0.0
            a[6] = max(a[6] - 1, 0)
            speed = ANIMALS[int(a[4])].speed * (2.5 if a[6] > 0 else 1.0)
            if a[7] or a[6] > 0:
                self._walk(world, a, speed)

    def _walk(self, world, a: np.ndarray, speed: float) -> None:
        nx, nz = a[0] + math.sin(a[3]) * speed, a[2] + math.cos(a[3]) * speed
        sx, _, sz = world.shape
        ix, iz = int(math.floor(nx)), int(math.floor(nz))
        if not (1 <= ix < sx - 1 and 1 <= iz < sz - 1):
            a[3] += math.pi
            return
        top = world.ground(ix, iz)
        # Animals climb one block at most and keep out of water, as Minecraft's land animals.
        if top - a[1] > 1.01 or world.get(ix, top - 1, iz) == WATER:
            a[3] += math.pi * 0.5
            return
        a[0], a[2], a[1] = nx, nz, float(top)

    def render_array(self) -> np.ndarray:
        """(N, 8) float32 boxes for the renderer: x, y, z, width, height, r, g, b (red while hurt)."""
        out = np.zeros((self.state.shape[0], 8), dtype=np.float32)
        for k, a in enumerate(self.state):
            spec = ANIMALS[int(a[4])]
            colour = (230, 60, 60) if a[6] > HIT_COOLDOWN - 3 else spec.colour
            out[k] = (a[0], a[1], a[2], spec.size[0], spec.size[1], *colour)
        return out

    def first_hit(self, eye: np.ndarray, d: tuple, max_dist: float) -> int:
        """Index of the nearest animal the look ray hits closer than max_dist, or -1."""
        best, best_t = -1, max_dist
        boxes = self.render_array()
        for k in range(boxes.shape[0]):
            t, _ = ray_box(eye[0], eye[1], eye[2], d[0], d[1], d[2], boxes[k])
            if t < best_t:
                best, best_t = k, t
        return best

    def hurt(self, k: int, d: tuple) -> str:
        """Hit animal k: it flees away from the player; returns its drop when it dies, else ''."""
        a = self.state[k]
        a[5] -= 1
        a[6] = 20
        a[3] = math.atan2(d[0], d[2])
        if a[5] <= 0:
            drop = ANIMALS[int(a[4])].drop
            self.state = np.delete(self.state, k, axis=0)
            return drop
        return ""

    def occupies(self, x: int, y: int, z: int) -> bool:
        for a in self.state:
            w, h = ANIMALS[int(a[4])].size
            if abs(a[0] - (x + 0.5)) < 0.5 + w / 2 and a[1] - 1 < y < a[1] + h and abs(a[2] - (z + 0.5)) < 0.5 + w / 2:
                return True
        return False


class Items:
    """Dropped items: small boxes that fly forward, fall, and vanish after a second."""

    LIFETIME = 30

    def __init__(self):
        self.state = np.zeros((0, 10))  # x, y, z, vx, vy, vz, age, r, g, b

    def throw(self, eye: np.ndarray, d: tuple, colour: np.ndarray) -> None:
        row = [eye[0] + d[0] * 0.6, eye[1] - 0.3 + d[1] * 0.6, eye[2] + d[2] * 0.6,
               d[0] * 0.3, d[1] * 0.3 + 0.1, d[2] * 0.3, 0, *colour]
        self.state = np.vstack([self.state, row])

    def update(self, world) -> None:
        if not len(self.state):
            return
        s = self.state  # (n, 10)
        s[:, 4] -= 0.04
        s[:, 0:3] += s[:, 3:6]
        cells = np.floor(s[:, 0:3]).astype(np.int64)  # (n, 3) the block each item is in
        inside = ((cells >= 0) & (cells < world.blocks.shape)).all(1)  # outside the grid is air
        landed = np.zeros(len(s), bool)
        c = cells[inside]
        landed[inside] = world.solid[world.blocks[c[:, 0], c[:, 1], c[:, 2]]]
        s[landed, 1] = cells[landed, 1] + 1.0  # rests on the block's top
        s[landed, 3:6] = 0.0
        s[:, 6] += 1
        self.state = s[s[:, 6] < self.LIFETIME]

    def render_array(self) -> np.ndarray:
        out = np.zeros((len(self.state), 8), dtype=np.float32)
        if len(self.state):
            out[:, 0:3] = self.state[:, 0:3]
            out[:, 3] = 0.25
            out[:, 4] = 0.25
            out[:, 5:8] = self.state[:, 7:10]
        return out
