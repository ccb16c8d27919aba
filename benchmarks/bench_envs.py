"""Env speed per core: VoxelWorld beside Crafter, in the same run, as ratios.

    taskset -c 0 python benchmarks/bench_envs.py                 # one core, the figure the goals use
    python benchmarks/bench_envs.py --steps 3000 --sizes 64 128 --out bench_envs.json
    python benchmarks/bench_envs.py --sizes 128 --minetest       # + Minetest, 1 and 2 instances (all cores)

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


def _minetest_worker(size: int, steps: int, seed: int, barrier, results) -> None:
    """One lock-step Minetest env in this process: start, reset, warm up, wait for the others, time."""
    import psutil

    from worldloom.envs import make_env, make_player

    start = time.perf_counter()
    env = make_env("minetest", height=size, width=size)
    obs, info = env.reset(seed=seed)
    ready_s = time.perf_counter() - start
    player = make_player("mixture", seed=seed)
    for _ in range(50):
        obs, _, term, trunc, info = env.step(player.act(obs, info))
    procs = [psutil.Process(), psutil.Process(env.engine.proc.pid), psutil.Process(env.engine.xvfb.pid)]

    def cpu_s() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    barrier.wait(timeout=300)
    cpu0, wall0 = cpu_s(), time.perf_counter()
    for _ in range(steps):
        obs, _, term, trunc, info = env.step(player.act(obs, info))
        if term or trunc:
            obs, info = env.reset()
    wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    results.put({"wall_steps_per_s": steps / wall, "steps_per_cpu_s": steps / cpu, "cores": cpu / wall,
                 "engine_start_s": env.engine.start_s, "ready_s": ready_s})
    env.close()


def bench_minetest(size: int, steps: int, instances: int) -> dict:
    """Lock-step Minetest (worldloom/Minetest-v0, mixture player): `instances` envs in their own
    processes, timed together. Steps/s are wall-clock per instance and summed; CPU counts the
    engine, its Xvfb and the controller process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(instances), ctx.Queue()
    workers = [ctx.Process(target=_minetest_worker, args=(size, steps, 100 + i, barrier, results)) for i in range(instances)]
    for w in workers:
        w.start()
    rows = [results.get(timeout=1800) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    total = sum(r["wall_steps_per_s"] for r in rows)
    return {"size": size, "instances": instances, "total_wall_steps_per_s": round(total, 1),
            "per_instance_wall_steps_per_s": [round(r["wall_steps_per_s"], 1) for r in rows],
            "steps_per_cpu_s": round(float(np.mean([r["steps_per_cpu_s"] for r in rows])), 1),
            "cores": round(sum(r["cores"] for r in rows), 2),
            "engine_start_s": round(float(np.mean([r["engine_start_s"] for r in rows])), 2)}


def minetest_rows(args: argparse.Namespace, rows: list[dict]) -> list[dict]:
    """Minetest at 128x128, one instance and two at once, printed beside this run's VoxelWorld and Crafter."""
    steps = min(args.steps, 2000)
    out = [bench_minetest(128, steps, n) for n in (1, 2)]
    peers = {r["player"]: r for r in rows if r["size"] == 128}
    peer = peers.get("mixture") or next(iter(peers.values()), None)
    print("Minetest 5.6, lock-step (one 50 ms engine frame per step), 128x128, mixture player; wall-clock steps/s")
    for r in out:
        line = (f"  {r['instances']} instance(s): {r['total_wall_steps_per_s']:.0f} steps/s "
                f"({' + '.join(f'{v:.0f}' for v in r['per_instance_wall_steps_per_s'])}), "
                f"{r['steps_per_cpu_s']:.0f} steps per CPU s, {r['cores']:.2f} cores, start-up {r['engine_start_s']:.2f} s")
        if r["instances"] == 2:
            line += f"; {r['total_wall_steps_per_s'] / out[0]['total_wall_steps_per_s']:.2f}x one instance"
        print(line)
    if peer:
        print(f"  same run, 128x128, one process: VoxelWorld {peer['voxel_wall_steps_per_s']:.0f} steps/s "
              f"({peer['player']}), Crafter {peer['crafter_wall_steps_per_s']:.0f} steps/s (wall)")
    return out


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
    if args.minetest:
        result["minetest"] = minetest_rows(args, rows)
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
    parser.add_argument("--minetest", action="store_true",
                        help="also time worldloom/Minetest-v0 at 128x128, 1 and 2 instances (needs tests/setup_minetest.sh)")
    main(parser.parse_args())
