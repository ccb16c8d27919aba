"""worldloom.envs: worlds behind the gymnasium API, and the scripted players that play them.

    import gymnasium, worldloom.envs
    env = gymnasium.make("worldloom/VoxelWorld-v0", height=64, width=64)
    env = worldloom.envs.make_env("voxel", height=64, width=64)      # voxel, crafter, minerl, minetest
    env = gymnasium.make("worldloom/CollectLogs-v0")                  # tasks: envs/tasks.py
    player = worldloom.envs.make_player("mixture", seed=3)           # random, explorer, miner, builder, mixture
    obs, info = env.reset(seed=3); obs, reward, terminated, truncated, info = env.step(player.act(obs, info))

Env modules are imported lazily so that listing them stays light.
"""

from __future__ import annotations

import importlib

# name -> (gymnasium id, "module:factory"); the factory takes keyword arguments.
ENVS: dict[str, tuple[str, str]] = {
    "voxel": ("worldloom/VoxelWorld-v0", "worldloom.envs.voxel:VoxelWorldEnv"),
    "crafter": ("worldloom/Crafter-v0", "worldloom.envs.crafter_env:CrafterEnv"),
    "minerl": ("worldloom/MineRL-v0", "worldloom.envs.minerl_env:MineRLEnv"),
    "minetest": ("worldloom/Minetest-v0", "worldloom.envs.minetest_env:MinetestEnv"),
    # Tasks (envs/tasks.py): VoxelWorld with a reward, a success criterion and a time limit.
    "collect_logs": ("worldloom/CollectLogs-v0", "worldloom.envs.tasks:CollectLogs"),
    "mine_stone": ("worldloom/MineStone-v0", "worldloom.envs.tasks:MineStone"),
    "explore": ("worldloom/Explore-v0", "worldloom.envs.tasks:Explore"),
    "find_water": ("worldloom/FindWater-v0", "worldloom.envs.tasks:FindWater"),
}
# name -> (smallest, largest) side in pixels of the square frames `capture run --resolution` asks of
# it: what the env's own config accepts (VoxelConfig: height 64..360; MinetestConfig: 64..512; CrafterEnv:
# 18..1024, its inventory digits vanish below; MineRL resizes to any size, so capture's own 16..1024), read
# here without importing it.
RESOLUTIONS: dict[str, tuple[int, int]] = {"voxel": (64, 360), "crafter": (18, 1024), "minerl": (16, 1024),
                                           "minetest": (64, 512), "collect_logs": (64, 360), "mine_stone": (64, 360),
                                           "explore": (64, 360), "find_water": (64, 360)}
ENV_NAMES: tuple[str, ...] = tuple(ENVS)
ENV_IDS: tuple[str, ...] = tuple(env_id for env_id, _ in ENVS.values())
PLAYER_NAMES: tuple[str, ...] = ("random", "explorer", "miner", "builder", "mixture", "expert", "contractor")

__all__ = ["ENVS", "ENV_NAMES", "ENV_IDS", "PLAYER_NAMES", "RESOLUTIONS", "check_player", "check_resolution", "EnvCrashed", "make_env", "make_player", "register_envs",
           "env_metadata"]


class EnvCrashed(RuntimeError):
    """An env's engine crashed or hung mid-episode; the env restarts it on the next reset, so the
    episode can be played again (the capture recorder does)."""


def _load(target: str):
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _resolve(name: str) -> str:
    """An env name or gymnasium id -> the short name; unknown ones list the known ones."""
    for short, (env_id, _) in ENVS.items():
        if name in (short, env_id, env_id.split("/")[-1]):
            return short
    raise ValueError(f"unknown env {name!r}; known: {', '.join(ENV_NAMES)} (ids: {', '.join(ENV_IDS)})")


def check_resolution(env: str, resolution: object, name: str = "resolution") -> None:
    """ValueError in one line naming the flag, the value and the range env `env` renders square
    frames at (RESOLUTIONS), for the configs' `__post_init__`: refused while the flags are parsed,
    not by the env once the job has started."""
    from worldloom.config import check_range

    low, high = RESOLUTIONS[_resolve(env)]
    check_range(name, resolution, low, high, f"pixels, for env {_resolve(env)!r}")


def check_player(name: object, field: str = "player") -> None:
    """ValueError in one line naming the flag, the value and the scripted players (PLAYER_NAMES), for the configs'
    `__post_init__`: a misspelt player is refused while the flags are parsed, not once the play has started."""
    if name not in PLAYER_NAMES:
        raise ValueError(f"{field} must be one of {', '.join(PLAYER_NAMES)}, got {name!r}")


def make_env(name: str, **kwargs):
    """Build an env by short name (voxel, crafter, minerl, minetest) or gymnasium id, without gymnasium's wrappers."""
    return _load(ENVS[_resolve(name)][1])(**kwargs)


def env_metadata(name: str) -> dict:
    """An env class's gymnasium `metadata` (e.g. its "licence"), without building the env."""
    return dict(getattr(_load(ENVS[_resolve(name)][1]), "metadata", {}))


def make_player(name: str, seed: int = 0, **kwargs):
    """Build a scripted player by name (random, explorer, miner, builder, mixture)."""
    from worldloom.envs import players

    return players.make_player(name, seed=seed, **kwargs)


def register_envs() -> None:
    """Register the worldloom/* ids with gymnasium; safe to call any number of times."""
    from gymnasium.envs.registration import register, registry

    for env_id, target in ENVS.values():
        if env_id not in registry:
            register(id=env_id, entry_point=target)


register_envs()
