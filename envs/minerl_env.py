"""MineRL 1.0 behind WorldLoom's action and observation contract (optional: needs Java 8).

    pip install worldloom[minerl]        # plus a JDK 8; MineRL builds Minecraft on first use
    env = worldloom.envs.make_env("minerl", height=128, width=128)

MineRL 1.0 (`HumanSurvival`) already speaks the MineRL action dict that WorldLoom's action
space copies: 23 keys (our 20 buttons + ESC, swapHands, pickItem, which VPT does not predict)
and `camera` [pitch, yaw] degrees in [-180, 180]. `to_minerl` adds the three unused keys;
`from_minerl` drops them. Observations: `pov` (360, 640, 3) is resized to (H, W) with
INTER_LINEAR, as VPT resizes its footage. The mapping functions run without minerl installed
(and are tested); building the env without it raises `MineRLNotInstalled`.
"""

from __future__ import annotations

import cv2
import gymnasium
import numpy as np

from worldloom import actions as act
from worldloom.errors import UserError

INSTALL_HINT = ("MineRL is not installed: `pip install worldloom[minerl]` and a Java 8 JDK "
                "(MineRL builds Minecraft with gradle on first use); or use env 'voxel'")


class MineRLNotInstalled(UserError, ImportError):
    """Raised when the MineRL adapter is built without `minerl` installed."""


def to_minerl(action: dict) -> dict:
    """Our action dict -> a MineRL 1.0 action dict (ESC, swapHands, pickItem released)."""
    act.validate(action)
    out = {name: int(bool(action[name])) for name in act.BUTTONS}
    out.update({key: 0 for key in act.IGNORED_KEYS})
    out["camera"] = np.asarray(action["camera"], dtype=np.float32).copy()
    return out


def from_minerl(action: dict) -> dict:
    """A MineRL 1.0 action dict -> ours (ESC, swapHands, pickItem dropped)."""
    out = {name: int(np.asarray(action.get(name, 0)).item() != 0) for name in act.BUTTONS}
    out["camera"] = np.asarray(action.get("camera", np.zeros(2)), dtype=np.float32).reshape(2).copy()
    act.validate(out)
    return out


def pov_to_obs(pov: np.ndarray, height: int, width: int) -> np.ndarray:
    """MineRL's `pov` (360, 640, 3) uint8 -> our (H, W, 3) uint8, resized as VPT does."""
    if pov.shape[:2] == (height, width):
        return np.ascontiguousarray(pov, dtype=np.uint8)
    return cv2.resize(pov, (width, height), interpolation=cv2.INTER_LINEAR)


class MineRLEnv(gymnasium.Env):
    """worldloom/MineRL-v0: MineRL's HumanSurvival with gymnasium's API and our action dict."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, height: int = 128, width: int = 128, env_id: str = "MineRLBasaltFindCave-v0",
                 max_steps: int = 6000, render_mode: str | None = "rgb_array"):
        try:
            import gym  # noqa: F401  minerl 1.0 registers with the old gym
            import minerl  # noqa: F401
        except ImportError as err:
            raise MineRLNotInstalled(INSTALL_HINT) from err
        from worldloom.envs.voxel import action_space

        self.height, self.width, self.max_steps = height, width, max_steps
        self.render_mode = render_mode
        self._env = gym.make(env_id)
        self.observation_space = gymnasium.spaces.Box(0, 255, (height, width, 3), np.uint8)
        self.action_space = action_space()
        self._obs = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(int(seed))
        self._step = 0
        raw = self._env.reset()
        self._obs = pov_to_obs(raw["pov"], self.height, self.width)
        return self._obs.copy(), {"inventory": dict(raw.get("inventory", {}))}

    def step(self, action: dict):
        raw, reward, done, info = self._env.step(to_minerl(action))
        self._step += 1
        self._obs = pov_to_obs(raw["pov"], self.height, self.width)
        truncated = self._step >= self.max_steps and not done
        return self._obs.copy(), float(reward), bool(done), truncated, {"inventory": dict(raw.get("inventory", {}))}

    def render(self):
        return None if self._obs is None else self._obs.copy()

    def close(self):
        if hasattr(self, "_env"):
            self._env.close()
