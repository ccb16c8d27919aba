"""Env speed per core: VoxelWorld (plain and antialiased) beside Crafter, at each size, in the same run.

    nice -n 10 taskset -c 1 python benchmarks/bench_envs.py          # one core: the figures the goals use
    python benchmarks/bench_envs.py --steps 600 --sizes 64x64 128x128 --players random --out bench_envs.json
    python benchmarks/bench_envs.py --sizes 128x128 --minetest       # + Minetest, 1 and 2 instances (all cores)
    python benchmarks/bench_envs.py --sizes 128x128 --minetest --minetest-viewing-range 40 25   # + a shorter view

Steps/s include everything a capture job pays: the player's act(), env.step() (physics,
animals, rendering, HUD) and the resets when episodes end (VoxelWorld's default 1000-step
episodes; Crafter's end when its player dies or at 10000 steps). The peer is Crafter 1.8.3
(danijar/crafter) with a uniform random policy over its 17 actions, called directly (no
adapter), at the same frame size (W x H). Numba compiles (or loads its cache) before timing.

The three envs of a size run in interleaved rounds of `--round` steps each, so a busy shared
machine slows all three alike and the ratios hold; steps/s are steps per second of this
process's CPU time (`time.process_time`, one thread). `render %` is the share of VoxelWorld's
CPU time spent making the observation (gathering the view, re-meshing edited chunks, drawing
the frame and the HUD). `AA cost` is antialiased render time over
plain render time. Reset time is the mean of fresh `reset(seed)` calls; memory is what one env
holds after reset (tracemalloc peak of building and resetting it). Wall-clock steps/s go to the
JSON too; `--minetest` prints lock-step Minetest (wall-clock, its engine and Xvfb counted) beside
this run's 128x128 VoxelWorld and Crafter.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SIZES = ("64x64", "128x128", "256x256", "640x360")


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (height, width)."""
    w, _, h = text.partition("x")
    return int(h or w), int(w)


class RenderClock:
    """Wraps VoxelWorld's `_observe` (gather the view, re-mesh edited chunks, render, copy) to add up its CPU seconds per env."""

    def __init__(self):
        from worldloom.envs.voxel import VoxelWorldEnv

        self.seconds: dict[int, float] = {}
        inner = VoxelWorldEnv._observe

        def timed(env):
            start = time.process_time()
            out = inner(env)
            self.seconds[id(env)] = self.seconds.get(id(env), 0.0) + time.process_time() - start
            return out

        VoxelWorldEnv._observe = timed


class VoxelRunner:
    def __init__(self, h: int, w: int, player: str, antialias: bool, clock: RenderClock, seed: int = 0):
        from worldloom.envs import make_env, make_player

        self.env = make_env("voxel", height=h, width=w, **({"antialias": True} if antialias else {}))
        self.player = make_player(player, seed=seed)
        self.clock, self.cpu, self.wall = clock, 0.0, 0.0
        self.obs, self.info = self.env.reset(seed=seed)
        self.steps(50)  # warm up (numba cache load, first allocations)
        self.obs, self.info = self.env.reset(seed=seed + 1)
        self.cpu, self.wall, self.clock.seconds[id(self.env)] = 0.0, 0.0, 0.0

    def steps(self, n: int) -> None:
        start, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            self.obs, _, term, trunc, self.info = self.env.step(self.player.act(self.obs, self.info))
            if term or trunc:
                self.obs, self.info = self.env.reset()
                self.player.reset()
        self.cpu += time.process_time() - start
        self.wall += time.perf_counter() - wall

    @property
    def render_s(self) -> float:
        return self.clock.seconds[id(self.env)]


class CrafterRunner:
    def __init__(self, h: int, w: int, seed: int = 0):
        import crafter

        self.env = crafter.Env(size=(w, h), seed=seed)  # crafter's size is (width, height)
        self.rng = np.random.default_rng(seed)
        self.env.reset()
        self.cpu, self.wall = 0.0, 0.0

    def steps(self, n: int) -> None:
        start, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            _, _, done, _ = self.env.step(int(self.rng.integers(0, 17)))
            if done:
                self.env.reset()
        self.cpu += time.process_time() - start
        self.wall += time.perf_counter() - wall


def reset_and_memory(name: str, h: int, w: int, num_resets: int = 10) -> tuple[float, float]:
    """(mean reset seconds, MB held by one env after reset)."""
    if name == "voxel":
        from worldloom.envs import make_env

        def build():
            return make_env("voxel", height=h, width=w)

        def reset(env, s):
            env.reset(seed=s)
    else:
        import crafter

        def build():
            return crafter.Env(size=(w, h), seed=0)

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


def steps_for(h: int, w: int, steps: int) -> int:
    """Timed steps at a size: `steps` up to 128x128, fewer above (the big frames are slow for both envs)."""
    return max(steps // 5, min(steps, steps * 128 * 128 * 3 // (h * w)))


def bench_size(text: str, player: str, args: argparse.Namespace, clock: RenderClock) -> dict:
    h, w = parse_size(text)
    plain, peer = VoxelRunner(h, w, player, False, clock), CrafterRunner(h, w)
    try:
        aa = VoxelRunner(h, w, player, True, clock)
    except ValueError:  # a VoxelWorld from before the antialias option (to measure the old renderer)
        aa = None
    steps = steps_for(h, w, args.steps)
    done = 0
    while done < steps:
        n = min(args.round, steps - done)
        for runner in (peer, plain, aa):
            if runner is not None:
                runner.steps(n)
        done += n
    if aa is None:
        aa = plain
    c_reset, c_mem = reset_and_memory("crafter", h, w)
    v_reset, v_mem = reset_and_memory("voxel", h, w)
    return {"size": text, "player": player, "steps": steps,
            "voxel_steps_per_s": round(steps / plain.cpu, 1), "voxel_aa_steps_per_s": round(steps / aa.cpu, 1),
            "crafter_steps_per_s": round(steps / peer.cpu, 1),
            "voxel_wall_steps_per_s": round(steps / plain.wall, 1), "crafter_wall_steps_per_s": round(steps / peer.wall, 1),
            "ratio": round(peer.cpu / plain.cpu, 2), "ratio_aa": round(peer.cpu / aa.cpu, 2),
            "render_share": round(plain.render_s / plain.cpu, 3), "render_share_aa": round(aa.render_s / aa.cpu, 3),
            "render_ms": round(plain.render_s / steps * 1e3, 3), "render_aa_ms": round(aa.render_s / steps * 1e3, 3),
            "aa_cost": round(aa.render_s / plain.render_s, 2),
            "voxel_reset_ms": round(v_reset * 1e3, 2), "crafter_reset_ms": round(c_reset * 1e3, 2),
            "voxel_env_mb": round(v_mem, 2), "crafter_env_mb": round(c_mem, 2)}


def _minetest_worker(size: int, steps: int, seed: int, viewing_range: int, barrier, results) -> None:
    """One lock-step Minetest env in this process: start, reset, warm up, wait for the others, time."""
    import psutil

    from worldloom.envs import make_env, make_player

    start = time.perf_counter()
    env = make_env("minetest", height=size, width=size, viewing_range=viewing_range)
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


def bench_minetest(size: int, steps: int, instances: int, viewing_range: int = 40) -> dict:
    """Lock-step Minetest (worldloom/Minetest-v0, mixture player): `instances` envs in their own
    processes, timed together. Steps/s are wall-clock per instance and summed; CPU counts the
    engine, its Xvfb and the controller process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(instances), ctx.Queue()
    workers = [ctx.Process(target=_minetest_worker, args=(size, steps, 100 + i, viewing_range, barrier, results)) for i in range(instances)]
    for w in workers:
        w.start()
    rows = [results.get(timeout=1800) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    total = sum(r["wall_steps_per_s"] for r in rows)
    return {"size": size, "instances": instances, "viewing_range": viewing_range, "total_wall_steps_per_s": round(total, 1),
            "per_instance_wall_steps_per_s": [round(r["wall_steps_per_s"], 1) for r in rows],
            "steps_per_cpu_s": round(float(np.mean([r["steps_per_cpu_s"] for r in rows])), 1),
            "cores": round(sum(r["cores"] for r in rows), 2),
            "engine_start_s": round(float(np.mean([r["engine_start_s"] for r in rows])), 2)}


def minetest_rows(args: argparse.Namespace, rows: list[dict]) -> list[dict]:
    """Minetest at 128x128, one instance and two at once for each viewing range asked, printed beside
    this run's VoxelWorld and Crafter."""
    steps = min(args.steps, 2000)
    out = [bench_minetest(128, steps, n, vr) for vr in args.minetest_viewing_range for n in (1, 2)]
    peers = {r["player"]: r for r in rows if r["size"] == "128x128"}
    peer = peers.get("mixture") or next(iter(peers.values()), None)
    print("Minetest 5.6, lock-step (one 50 ms engine frame per step), 128x128, mixture player; wall-clock steps/s")
    one = {}
    for r in out:
        one.setdefault(r["viewing_range"], r)
        line = (f"  viewing range {r['viewing_range']}, {r['instances']} instance(s): {r['total_wall_steps_per_s']:.0f} steps/s "
                f"({' + '.join(f'{v:.0f}' for v in r['per_instance_wall_steps_per_s'])}), "
                f"{r['steps_per_cpu_s']:.0f} steps per CPU s, {r['cores']:.2f} cores, start-up {r['engine_start_s']:.2f} s")
        if r["instances"] == 2:
            line += f"; {r['total_wall_steps_per_s'] / one[r['viewing_range']]['total_wall_steps_per_s']:.2f}x one instance"
        print(line)
    if peer:
        print(f"  same run, 128x128, one process: VoxelWorld {peer['voxel_wall_steps_per_s']:.0f} steps/s "
              f"({peer['player']}), Crafter {peer['crafter_wall_steps_per_s']:.0f} steps/s (wall)")
    return out


def main(args: argparse.Namespace) -> dict:
    clock = RenderClock()
    rows = [bench_size(size, player, args, clock) for size in args.sizes for player in args.players]
    print("steps per CPU second, one thread; Crafter: random policy, same size, interleaved in the same run")
    print(f"{'size':>8} {'player':>8} {'steps':>5} {'voxel':>7} {'AA':>7} {'crafter':>7} {'ratio':>6} {'AA ratio':>8} "
          f"{'render ms':>9} {'AA ms':>6} {'AA cost':>7} {'render %':>8} {'AA %':>5} {'reset ms v/c':>13} {'env MB v/c':>11}")
    for r in rows:
        print(f"{r['size']:>8} {r['player']:>8} {r['steps']:>5} {r['voxel_steps_per_s']:>7.0f} {r['voxel_aa_steps_per_s']:>7.0f} "
              f"{r['crafter_steps_per_s']:>7.0f} {r['ratio']:>6.2f} {r['ratio_aa']:>8.2f} {r['render_ms']:>9.3f} "
              f"{r['render_aa_ms']:>6.3f} {r['aa_cost']:>7.2f} {100 * r['render_share']:>7.0f}% {100 * r['render_share_aa']:>4.0f}% "
              f"{r['voxel_reset_ms']:>6.1f}/{r['crafter_reset_ms']:<6.1f} {r['voxel_env_mb']:>5.1f}/{r['crafter_env_mb']:<5.1f}")
    import resource

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS (Python + numba + crafter + the envs): {rss_mb:.0f} MB; load average {os.getloadavg()[0]:.1f}")
    result = {"cpu_affinity": sorted(os.sched_getaffinity(0)), "load_average": os.getloadavg()[0], "rows": rows,
              "peak_rss_mb": round(rss_mb, 1)}
    if args.minetest:
        result["minetest"] = minetest_rows(args, rows)
    if args.out:
        from worldloom.io import atomic_write_json

        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="timed steps per env up to 128x128 (fewer above)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="frame sizes, WxH")
    parser.add_argument("--players", nargs="+", default=["mixture"], help="VoxelWorld players: random, mixture, ...")
    parser.add_argument("--round", type=int, default=50, help="steps per env per interleaved round")
    parser.add_argument("--out", default="", help="also write the rows as JSON here")
    parser.add_argument("--minetest", action="store_true",
                        help="also time worldloom/Minetest-v0 at 128x128, 1 and 2 instances (needs tests/setup_minetest.sh)")
    parser.add_argument("--minetest-viewing-range", type=int, nargs="+", default=[40],
                        help="Minetest's viewing_range in nodes, one timing per value (the env's default: 40)")
    main(parser.parse_args())
