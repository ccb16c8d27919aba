"""Scripted players that make human-like footage: random (sticky), explorer, miner, builder, mixture.

    python -m worldloom.envs.players --steps 3000        # each player's action histogram
    python -m worldloom.envs.players --steps 1500 --players mixture --visibility

A player sees `(obs, info)` and returns a MineRL-style action dict; scripted players read
info's ground truth (position, target block, inventory). People hold keys for a while and
move the mouse smoothly in strokes, so every player here holds its choices for several steps
and moves the camera through an eased stroke (`CameraHand`), with the occasional fast flick
that reaches VPT's outer camera bins. Every player also has `Habits` (switching hotbar slots,
a glance at the inventory, strafing, dropping an item) so that the whole action space shows
up in any player's footage, and each habit has a visible effect on the frame.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from worldloom import actions as act
from worldloom.envs.objects import EYE, GUI_CURSOR_DEG, REACH

__all__ = ["RandomPlayer", "Explorer", "Miner", "Builder", "Mixture", "Expert", "make_player", "action_histogram",
           "visible_presses", "report", "PLAYERS"]


class CameraHand:
    """Smooth camera strokes: eased moves of a chosen size over a chosen number of steps."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.queue: list[np.ndarray] = []

    def busy(self) -> bool:
        return bool(self.queue)

    def stroke(self, d_pitch: float, d_yaw: float, steps: int) -> None:
        """Plan a move of (d_pitch, d_yaw) degrees over `steps` steps with a bell-shaped speed profile."""
        steps = max(int(steps), 1)
        w = np.sin(np.linspace(0, math.pi, steps + 2)[1:-1]) ** 2
        w = w / w.sum()
        self.queue = [np.array([d_pitch * wi, d_yaw * wi]) for wi in w]

    def flick(self, max_deg: float = 14.0) -> None:
        """A fast flick of a few steps (people do these): reaches the outer bins (+-10 degrees)."""
        sign = self.rng.choice([-1.0, 1.0], size=2)
        size = self.rng.uniform(8.0, max_deg, size=2) * sign
        if self.rng.random() < 0.5:
            size[0] *= 0.3
        self.queue = [size, size * 0.5]

    def next(self) -> np.ndarray:
        move = self.queue.pop(0) if self.queue else np.zeros(2)
        jitter = self.rng.normal(0.0, 0.08, 2) if self.rng.random() < 0.3 else np.zeros(2)
        return np.clip(move + jitter, -act.CAMERA_LIMIT, act.CAMERA_LIMIT).astype(np.float32)


class Habits:
    """Things every person does now and then; each returns held buttons for a few steps."""

    def __init__(self, rng: np.random.Generator, rate: float = 1.0):
        self.rng, self.rate = rng, rate
        self.held: dict[str, int] = {}  # button -> steps left
        self.gui_steps = 0
        self.steps = 0
        self.last_slot_use = np.zeros(9)

    def pick_slot(self, current: int) -> int:
        """Another slot: half the time the one unused longest (people cycle), else any."""
        others = [k for k in range(9) if k != current]
        if self.rng.random() < 0.5:
            return min(others, key=lambda k: self.last_slot_use[k])
        return int(self.rng.choice(others))

    def cursor_move(self, info: dict) -> tuple[float, float]:
        """(pitch, yaw) degrees that take the GUI cursor to a random slot of the inventory panel.

        People move the cursor to an item, not into the screen's edge, where it would stop while
        the mouse (the recorded action) goes on: a move no frame could show.
        """
        cursor = info.get("cursor")
        if cursor is None:
            return self.rng.uniform(-15, 15), self.rng.uniform(-25, 25)
        target = np.array([self.rng.uniform(0.12, 0.88), self.rng.uniform(0.2, 0.72)])  # (x, y) on the panel
        d_x, d_y = (target - np.asarray(cursor, dtype=np.float64)) * GUI_CURSOR_DEG
        return float(d_y), float(d_x)

    def apply(self, a: dict, info: dict, hand: CameraHand) -> None:
        self.steps += 1
        r = self.rng.random() / self.rate
        if info.get("gui_open"):
            # Browsing the inventory: the mouse sweeps the screen; close it after a while.
            self.gui_steps += 1
            for k in act.BUTTONS[:10]:
                a[k] = 0
            if not hand.busy():
                hand.stroke(*self.cursor_move(info), self.rng.integers(4, 10))
            if self.gui_steps > 8 and self.rng.random() < 0.1:
                a["inventory"] = 1
            return
        self.gui_steps = 0
        if r < 0.0025:  # a glance at the inventory now and then (a few % of the time in it)
            a["inventory"] = 1
        elif r < 0.024:  # a different slot, so the HUD highlight moves
            slot = self.pick_slot(info.get("hotbar_slot", 0))
            a[f"hotbar.{slot + 1}"] = 1
            self.last_slot_use[slot] = self.steps
        elif r < 0.029:
            hotbar, inventory = info.get("hotbar", []), info.get("inventory", {})
            if hotbar and inventory.get(hotbar[info.get("hotbar_slot", 0)], 0) > 0:
                self.held["drop"] = 1  # only with something in hand: an empty drop shows nothing
        elif r < 0.039:
            self.held[str(self.rng.choice(["left", "right"]))] = int(self.rng.integers(4, 15))
        elif r < 0.044:
            self.held["back"] = int(self.rng.integers(3, 10))
        elif r < 0.049:
            self.held["sneak"] = int(self.rng.integers(5, 30))
        elif r < 0.054:  # a click at whatever is in front (the hand swings)
            self.held["attack"] = int(self.rng.integers(2, 12))
        elif r < 0.057:
            self.held["use"] = int(self.rng.integers(1, 4))
        elif r < 0.062:
            self.held["sprint"] = self.held["forward"] = int(self.rng.integers(10, 40))
        elif r < 0.066:
            self.held["jump"] = int(self.rng.integers(1, 6))
        elif r < 0.072 and not hand.busy():  # a fast flick of the mouse: the outer camera bins
            hand.flick()
        for name in list(self.held):
            a[name] = 1
            self.held[name] -= 1
            if self.held[name] <= 0:
                del self.held[name]


def _ground(pos: np.ndarray) -> np.ndarray:
    """The position on the ground plane: (x, z) of a 3D world, (x, y) of a 2D one such as Crafter."""
    pos = np.asarray(pos, dtype=np.float64)
    return pos[[0, 2]] if pos.shape[0] == 3 else pos[:2]


class ScriptedPlayer:
    """Shared parts: a seeded rng, a camera hand, habits, and an edge guard."""

    habit_rate = 1.0

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.hand = CameraHand(self.rng)
        self.habits = Habits(self.rng, self.habit_rate)
        self.t = 0
        self.last_pos: np.ndarray | None = None
        self.stuck = 0

    def reset(self) -> None:
        self.hand.queue.clear()
        self.habits.held.clear()
        self.last_pos, self.stuck = None, 0

    def act(self, obs: np.ndarray, info: dict) -> dict:
        a = act.noop()
        if not info.get("gui_open"):
            self.behave(a, info)
        self.habits.apply(a, info, self.hand)
        if not (info.get("on_ground", True) or info.get("in_water", False)):
            a["jump"] = 0  # people tap jump; held in mid-air it does nothing a frame could show
        a["camera"] = self.hand.next()
        self.t += 1
        pos = info.get("position")
        if pos is not None:
            moved = self.last_pos is not None and np.hypot(*(_ground(pos) - _ground(self.last_pos))) > 0.02
            self.stuck = 0 if moved or not a["forward"] else self.stuck + 1
            self.last_pos = np.array(pos)
        return a

    def behave(self, a: dict, info: dict) -> None:
        raise NotImplementedError

    def delegate(self, member: ScriptedPlayer, a: dict, info: dict) -> None:
        """Let `member` (sharing this player's rng, hand and habits) choose this step, as of this player's state."""
        member.t, member.stuck, member.last_pos = self.t, self.stuck, self.last_pos
        member.behave(a, info)

    def look_home(self, info: dict, margin: float = 8.0) -> bool:
        """Turn towards the world's centre when near its edge; True if it did."""
        pos, size = info.get("position"), info.get("world_size")
        if pos is None or size is None:
            return False
        sx, _, sz = size
        if margin < pos[0] < sx - margin and margin < pos[2] < sz - margin:
            return False
        want = math.degrees(math.atan2(sx / 2 - pos[0], sz / 2 - pos[2]))
        turn = (want - info.get("yaw", 0.0) + 180.0) % 360.0 - 180.0
        if not self.hand.busy() and abs(turn) > 20:
            self.hand.stroke(-info.get("pitch", 0.0) * 0.5, turn, self.rng.integers(8, 20))
        return True


class Explorer(ScriptedPlayer):
    """Walks and sprints, looks around in smooth strokes, jumps obstacles, swims up in water."""

    def behave(self, a: dict, info: dict) -> None:
        a["forward"] = 1
        a["sprint"] = int((self.t // 60) % 3 == 0)
        if self.stuck > 2 or info.get("target_distance", 9.0) < 1.6 or info.get("air", 1.0) < 1.0:
            a["jump"] = 1
        if self.stuck > 12 and info.get("target_distance", 9.0) < 2.0:
            a["attack"] = 1  # boxed in: dig through what is in front, as a person would
        if self.stuck > 25:
            self.hand.stroke(-info.get("pitch", 0.0) - 10.0, self.rng.choice([-1, 1]) * self.rng.uniform(60, 150), 15)
            self.stuck = 0
        if self.look_home(info) or self.hand.busy():
            return
        if self.rng.random() < 0.03:
            self.hand.flick()
        elif self.rng.random() < 0.12:
            pitch_back = -info.get("pitch", 0.0) + self.rng.normal(5.0, 10.0)
            self.hand.stroke(pitch_back, self.rng.normal(0.0, 45.0), self.rng.integers(6, 25))


class Miner(ScriptedPlayer):
    """Bouts of mining: looks at a block, holds attack until it breaks (1-4 blocks), then walks on."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.walk = 0
        self.budget = 0  # blocks still to mine in this bout
        self.last_target: tuple | None = None

    def behave(self, a: dict, info: dict) -> None:
        if self.walk > 0:
            self.walk -= 1
            a["forward"] = 1
            a["jump"] = int(self.stuck > 2 or self.rng.random() < 0.1)
            return
        target = info.get("target_block")
        pos = tuple(np.asarray(info.get("target_pos", (-1,))).tolist())
        if target and target not in ("bedrock", "water") and self.budget > 0:
            if self.last_target is not None and pos != self.last_target:
                self.budget -= 1  # the last block broke (or the view moved on)
            self.last_target = pos
            a["attack"] = 1  # held until the block breaks
            return
        if self.look_home(info) or self.hand.busy():
            return
        # A bout over: walk on (jumping out of the hole dug), then pick the next block to mine.
        self.budget, self.last_target = int(self.rng.integers(1, 5)), None
        if self.rng.random() < 0.5:
            self.walk = int(self.rng.integers(5, 25))
        want_pitch = self.rng.uniform(15.0, 50.0) if self.rng.random() < 0.4 else self.rng.uniform(-15, 15)
        self.hand.stroke(want_pitch - info.get("pitch", 0.0), self.rng.normal(0.0, 50.0), self.rng.integers(5, 15))


class Builder(ScriptedPlayer):
    """Picks a block from the hotbar, places it on what it looks at, builds pillars and walls."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.pillar = 0

    def behave(self, a: dict, info: dict) -> None:
        hotbar, slot, inv = info.get("hotbar", []), info.get("hotbar_slot", 0), info.get("inventory", {})
        if hotbar and inv.get(hotbar[slot], 0) == 0:
            for k, item in enumerate(hotbar):
                if inv.get(item, 0) > 0 and item not in ("sapling", "coal", "meat", "wool", "feather"):
                    a[f"hotbar.{k + 1}"] = 1
                    break
        if self.pillar > 0:  # jump and place below: look straight down, jump, use
            self.pillar -= 1
            if info.get("pitch", 0.0) < 80 and not self.hand.busy():
                self.hand.stroke(88 - info.get("pitch", 0.0), 0.0, 6)
            a["jump"] = 1
            a["use"] = int(self.pillar % 4 == 0)
            return
        if self.look_home(info) or self.hand.busy():
            return
        r = self.rng.random()
        if info.get("target_block") and r < 0.25:
            a["use"] = 1
        elif r < 0.28:
            self.pillar = int(self.rng.integers(8, 24))
        elif r < 0.45:
            self.hand.stroke(self.rng.uniform(20, 50) - info.get("pitch", 0.0), self.rng.normal(0, 40), self.rng.integers(5, 15))
        elif r < 0.6:
            a["forward"] = 1
            a["jump"] = int(self.stuck > 2)
            self.habits.held["forward"] = int(self.rng.integers(3, 12))


class Mixture(ScriptedPlayer):
    """Switches between exploring, mining, building and standing still, as a person does."""

    habit_rate = 1.3

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.members = [Explorer(seed + 1), Miner(seed + 2), Builder(seed + 3)]
        for m in self.members:  # one hand and one set of habits: the same person
            m.rng, m.hand, m.habits = self.rng, self.hand, self.habits
        self.weights = np.array([0.45, 0.3, 0.2, 0.05])
        self.current, self.left = 0, 0

    IDLE = 3  # the activity (an index of `weights`) of standing still, looking around slowly

    def behave(self, a: dict, info: dict) -> None:
        if self.left <= 0:
            self.current = int(self.rng.choice(len(self.weights), p=self.weights))
            self.left = int(self.rng.integers(40, 200))
        self.left -= 1
        if self.current == self.IDLE:  # idle: look around slowly
            if not self.hand.busy() and self.rng.random() < 0.1:
                self.hand.stroke(self.rng.normal(0, 10) - info.get("pitch", 0.0) * 0.3, self.rng.normal(0, 60), self.rng.integers(10, 30))
            return
        self.delegate(self.members[self.current - (self.current > self.IDLE)], a, info)


class Expert(ScriptedPlayer):
    """Plays the task it is in, as a player told the goal would: turns to the nearest goal block
    (`info["task"]["goal"]`, worldloom.envs.tasks), walks to it, and mines it (CollectLogs,
    MineStone) or walks into it (FindWater); explores where the task names no block (Explore) or
    none is near, and plays as the explorer outside a task. Mining holds `attack` with the camera
    still until the block breaks, so its footage shows the whole of what a task needs; fewer
    habits than the other players (a player with a goal gets distracted less)."""

    habit_rate = 0.3

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.explorer = Explorer(seed + 1)
        self.explorer.rng, self.explorer.hand, self.explorer.habits = self.rng, self.hand, self.habits

    def behave(self, a: dict, info: dict) -> None:
        task = info.get("task") or {}
        goal = task.get("goal")
        if goal is None or goal[0] < 0 or info.get("position") is None:
            self.delegate(self.explorer, a, info)
            return
        eye = np.asarray(info["position"], np.float64) + (0.0, EYE, 0.0)
        d = np.asarray(goal, np.float64) + 0.5 - eye
        horizontal = float(np.hypot(d[0], d[2]))
        turn = (math.degrees(math.atan2(d[0], d[2])) - info.get("yaw", 0.0) + 180.0) % 360.0 - 180.0
        tilt = -math.degrees(math.atan2(d[1], horizontal)) - info.get("pitch", 0.0)
        target, target_pos = info.get("target_block", ""), np.asarray(info.get("target_pos", (-1, -1, -1)))
        on_goal = bool(target) and (target == task.get("goal_block") or bool(np.all(target_pos == goal)))
        if on_goal and task.get("goal_block") != "water":
            a["attack"] = 1  # held, the camera still, until the block breaks
            self.hand.queue.clear()
            return
        if not self.hand.busy() and max(abs(turn), abs(tilt)) > 5.0:
            self.hand.stroke(tilt, turn, int(np.clip(max(abs(turn), abs(tilt)) / 9.0, 2, 12)))
        in_reach = task.get("goal_distance", math.inf) < REACH - 0.3
        if in_reach:  # stand and aim; dig through what is in the way (leaves, dirt)
            if target and target != "water" and not self.hand.busy():
                a["attack"] = 1
            if task.get("goal_block") == "water":
                a["forward"] = 1
            return
        if abs(turn) < 50.0:
            a["forward"] = 1
            a["sprint"] = int(horizontal > 8.0 and abs(turn) < 15.0)
            blocked = bool(target) and info.get("target_distance", 9.0) < 1.6
            a["jump"] = int(self.stuck > 2 or blocked or info.get("in_water", False))
        if target and target != "water" and info.get("target_distance", 9.0) < 2.0 and self.stuck > 8:
            a["attack"] = 1  # boxed in: dig through


class Contractor(Mixture):
    """Plays freely as VPT's contractors did (Baker et al. 2022: the IDM learned from about 2,000 hours
    of people paid to play the game, who chop trees and dig as any player does): the mixture's
    exploring, mining, building and idling, and bouts of the task at hand played as the expert plays
    it (where the world names no goal, those bouts explore). The labeled play of `agent study`: an IDM learns the camera from
    play that looks like its footage (docs/agent.md, "The contractor's play")."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        expert = Expert(seed + 4)
        for m in (expert, expert.explorer):  # the same person's rng, hand and habits
            m.rng, m.hand, m.habits = self.rng, self.hand, self.habits
        self.members.append(expert)
        self.weights = np.array([0.25, 0.15, 0.1, 0.05, 0.45])  # explore, mine, build, idle, the task


class RandomPlayer:
    """Random actions with sticky buttons and a sticky camera velocity drawn over all 11 bins."""

    # Chance per step that a button is pressed when resampled; movement keys are pressed more.
    PRESS = {"forward": 0.5, "attack": 0.3, "jump": 0.2, "sprint": 0.2, "use": 0.15,
             "back": 0.1, "left": 0.15, "right": 0.15, "sneak": 0.1, "drop": 0.3, "inventory": 0.1}

    def __init__(self, seed: int = 0, stickiness: float = 0.9):
        self.rng = np.random.default_rng(seed)
        self.stickiness = stickiness
        self.buttons = np.zeros(act.NUM_BUTTONS, dtype=bool)
        self.camera = np.zeros(2, dtype=np.float32)
        self.press = np.array([self.PRESS.get(b, 0.2) for b in act.BUTTONS])

    def reset(self) -> None:
        self.buttons[:] = False
        self.camera[:] = 0

    # Keys that act once per press (toggles, slot choice, throwing): tapped, never held.
    TAPS = np.array([b == "inventory" or b == "drop" or b.startswith("hotbar") for b in act.BUTTONS])

    def act(self, obs: np.ndarray, info: dict) -> dict:
        resample = self.rng.random(act.NUM_BUTTONS) > self.stickiness
        fresh = self.rng.random(act.NUM_BUTTONS) < self.press
        self.buttons = np.where(resample, fresh, self.buttons)
        self.buttons[self.TAPS] = (fresh & resample)[self.TAPS]
        if info.get("gui_open") and self.rng.random() < 0.05:
            self.buttons[act.BUTTONS.index("inventory")] = True  # close the screen after a while
        if self.rng.random() > self.stickiness:
            bins = self.rng.integers(0, act.NUM_CAMERA_BINS, 2)
            self.camera = act.dequantize_camera(bins) * self.rng.uniform(0.85, 1.0, 2).astype(np.float32)
        return act.from_arrays(self.buttons, self.camera)


PLAYERS = {"random": RandomPlayer, "explorer": Explorer, "miner": Miner, "builder": Builder, "mixture": Mixture,
           "expert": Expert, "contractor": Contractor}


def make_player(name: str, seed: int = 0, **kwargs):
    """A player by name (random, explorer, miner, builder, mixture)."""
    if name not in PLAYERS:
        raise ValueError(f"unknown player {name!r}; known: {', '.join(PLAYERS)}")
    return PLAYERS[name](seed=seed, **kwargs)


def action_histogram(player_name: str, env, steps: int, seed: int = 0) -> dict:
    """Play `steps` steps; returns {'buttons': fraction of steps each button is held, 'camera_bins': (2, 11) counts}."""
    player = make_player(player_name, seed=seed)
    obs, info = env.reset(seed=seed)
    acts = []
    for _ in range(steps):
        a = player.act(obs, info)
        acts.append(a)
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            obs, info = env.reset()
            player.reset()
    buttons, camera = act.to_arrays(acts)
    bins = act.quantize_camera(camera)
    counts = np.stack([np.bincount(bins[:, k], minlength=act.NUM_CAMERA_BINS) for k in range(2)])
    return {"buttons": dict(zip(act.BUTTONS, buttons.mean(0).round(4).tolist(), strict=False)), "camera_bins": counts}


def visible_presses(player_name: str, env, steps: int, seed: int = 0) -> dict[str, tuple[int, int]]:
    """{button: (presses that changed the next frame, presses)}: an upper bound for what an
    inverse dynamics model can read from one frame. Each press is replayed on a copy of the env
    with that button released, and the two next frames are compared."""
    import copy

    player = make_player(player_name, seed=seed)
    obs, info = env.reset(seed=seed)
    counts = {b: [0, 0] for b in act.BUTTONS}
    for _ in range(steps):
        a = player.act(obs, info)
        pressed = [b for b in act.BUTTONS if a[b]]
        if pressed:
            with_it = copy.deepcopy(env).step(a)[0]
            for b in pressed:
                without = copy.deepcopy(env).step({**a, b: 0})[0]
                counts[b][0] += int(not np.array_equal(with_it, without))
                counts[b][1] += 1
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            obs, info = env.reset()
            player.reset()
    return {b: (v[0], v[1]) for b, v in counts.items()}


def report(players: tuple[str, ...] = tuple(PLAYERS), steps: int = 2000, env_name: str = "voxel", seed: int = 0) -> str:
    """A text table of each player's button frequencies and camera bin counts."""
    from worldloom.envs import make_env

    env = make_env(env_name, height=64, width=64)
    lines = []
    for name in players:
        h = action_histogram(name, env, steps, seed)
        lines.append(f"== {name} ({steps} steps): fraction of steps each button is held")
        lines.append("  " + "  ".join(f"{b}={v:.3f}" for b, v in h["buttons"].items()))
        for axis, label in enumerate(("pitch", "yaw")):
            lines.append(f"  camera {label} bins 0..10: {h['camera_bins'][axis].tolist()}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print each player's action histogram.")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--env", default="voxel")
    parser.add_argument("--players", nargs="+", default=list(PLAYERS))
    parser.add_argument("--visibility", action="store_true", help="also: share of presses visible in the next frame")
    args = parser.parse_args()
    print(report(tuple(args.players), args.steps, args.env))
    if args.visibility:
        from worldloom.envs import make_env

        for name in args.players:
            counts = visible_presses(name, make_env(args.env, height=64, width=64), args.steps)
            print(f"== {name}: presses visible in the next frame")
            print("  " + "  ".join(f"{b}={v / n:.2f}/{n}" for b, (v, n) in counts.items() if n))
