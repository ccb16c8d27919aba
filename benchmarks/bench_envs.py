"""Env speed per core: VoxelWorld beside Crafter, in the same run, as ratios.

    taskset -c 0 python benchmarks/bench_envs.py                 # one core, the figure the goals use
    python benchmarks/bench_envs.py --steps 3000 --sizes 64 128 --out bench_envs.json

Steps/s include everything a capture job pays: the player's act(), env.step() (physics,
animals, rendering, HUD) and the resets when episodes end (VoxelWorld's default 1000-step
episodes; Crafter's end when its player dies or at 10000 steps). The peer is Crafter 1.8.3
(danijar/crafter) with a uniform random policy over its 17 actions, called directly (no
adapter), at the same frame size. Reset time is the mean of fresh `reset(seed)` calls; memory
is what one env holds after reset (tracemalloc peak of building and resetting it).
Numba compiles (or loads its cache) before timing starts.

Steps/s are steps per second of this process's CPU time (`time.process_time`, one thread), so
other work on a shared machine does not count against either env; wall-clock figures are
printed beside them. Run it on an otherwise idle core for wall figures that mean the same.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402


class Clock:
    """CPU seconds and wall seconds since start."""

    def __init__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def rates(self, steps: int) -> tuple[float, float]:
        return steps / (time.process_time() - self.cpu), steps / (time.perf_counter() - self.wall)


def bench_voxel(size: int, player_name: str, steps: int, seed: int = 0) -> tuple[float, float]:
    from worldloom.envs import make_env, make_player

    env = make_env("voxel", height=size, width=size)
    player = make_player(player_name, seed=seed)
    obs, info = env.reset(seed=seed)
    for _ in range(50):  # warm up (numba cache load, first allocations)
        obs, _, term, trunc, info = env.step(player.act(obs, info))
    obs, info = env.reset(seed=seed + 1)
    clock = Clock()
    for _ in range(steps):
        obs, _, term, trunc, info = env.step(player.act(obs, info))
        if term or trunc:
            obs, info = env.reset()
            player.reset()
    return clock.rates(steps)


def bench_crafter(size: int, steps: int, seed: int = 0) -> tuple[float, float]:
    import crafter

    env = crafter.Env(size=(size, size), seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    clock = Clock()
    for _ in range(steps):
        _, _, done, _ = env.step(int(rng.integers(0, 17)))
        if done:
            env.reset()
    return clock.rates(steps)


def reset_and_memory(name: str, size: int, num_resets: int = 10) -> tuple[float, float]:
    """(mean reset seconds, MB held by one env after reset)."""
    if name == "voxel":
        from worldloom.envs import make_env

        def build():
            return make_env("voxel", height=size, width=size)

        def reset(env, s):
            env.reset(seed=s)
    else:
        import crafter

        def build():
            return crafter.Env(size=(size, size), seed=0)

        def reset(env, s):
            env._seed = s
            env.reset()
    env = build()
    reset(env, 0)
    start = time.process_time()
    for s in range(num_resets):
        reset(env, s + 1)
    reset_s = (time.process_time() - start) / num_resets
    tracemalloc.start()
    env2 = build()
    reset(env2, 0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return reset_s, peak / 2**20


def main(args: argparse.Namespace) -> dict:
    rows = []
    for size in args.sizes:
        crafter_sps, crafter_wall = bench_crafter(size, args.steps)
        c_reset, c_mem = reset_and_memory("crafter", size)
        v_reset, v_mem = reset_and_memory("voxel", size)
        for player in args.players:
            sps, wall = bench_voxel(size, player, args.steps)
            rows.append({"size": size, "player": player, "voxel_steps_per_s": round(sps, 1),
                         "crafter_steps_per_s": round(crafter_sps, 1), "ratio": round(sps / crafter_sps, 2),
                         "voxel_wall_steps_per_s": round(wall, 1), "crafter_wall_steps_per_s": round(crafter_wall, 1),
                         "voxel_reset_ms": round(v_reset * 1e3, 2), "crafter_reset_ms": round(c_reset * 1e3, 2),
                         "voxel_env_mb": round(v_mem, 2), "crafter_env_mb": round(c_mem, 2)})
    print("steps/s per CPU second (wall-clock steps/s in brackets); Crafter: random policy, same size")
    print(f"{'size':>7} {'player':>8} {'voxel st/s':>16} {'crafter st/s':>16} {'ratio':>6} "
          f"{'reset ms v/c':>14} {'env MB v/c':>12}")
    for r in rows:
        voxel = f"{r['voxel_steps_per_s']:.0f} ({r['voxel_wall_steps_per_s']:.0f})"
        peer = f"{r['crafter_steps_per_s']:.0f} ({r['crafter_wall_steps_per_s']:.0f})"
        print(f"{r['size']:>4}x{r['size']:<3d}{r['player']:>8} {voxel:>16} {peer:>16} {r['ratio']:>6.2f} "
              f"{r['voxel_reset_ms']:>6.1f}/{r['crafter_reset_ms']:<7.1f} {r['voxel_env_mb']:>5.1f}/{r['crafter_env_mb']:<5.1f}")
    import resource

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS (Python + numba + crafter + both envs): {rss_mb:.0f} MB")
    result = {"cpu_affinity": sorted(os.sched_getaffinity(0)), "steps": args.steps, "rows": rows,
              "peak_rss_mb": round(rss_mb, 1)}
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per configuration")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--players", nargs="+", default=["random", "mixture"])
    parser.add_argument("--out", default="", help="also write the rows as JSON here")
    main(parser.parse_args())
