"""Capture speed: recorded frames/s per core beside the bare env's steps/s, 1 vs 2 workers, and
the cost of an hour of 20 fps footage in core-hours.

    python benchmarks/bench_capture.py                       # voxel, 128x128, 24 episodes x 300 steps
    python benchmarks/bench_capture.py --env crafter --episodes 8 --steps 300 --json out.json

The peer is the bare env measured in this same run: one process playing the same episodes
(env.reset, player.act, env.step) with nothing recorded. Capture is end to end: Ray actors
play, encode and write Parquet shards, the driver commits them; the clock starts when the job
is submitted (Ray already up, actors not yet started) and stops when the last shard is committed.
Goals (issue 4): capture per core >= 0.85x bare; 2 workers >= 1.8x one; <= 0.1 core-hours per
hour of 20 fps 128x128 footage. Timings on a shared machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import threading
import time

import ray

from worldloom.actions import FPS
from worldloom.capture import CaptureConfig, capture, expand_specs
from worldloom.envs import make_env, make_player
from worldloom.io import json_text


def bare_env(cfg: CaptureConfig) -> dict:
    """The peer: the same episodes played in this process with nothing recorded."""
    env = make_env(cfg.env, height=cfg.resolution, width=cfg.resolution)
    env.reset(seed=0)  # warm-up (numba compile or cache load), as the actors' __init__ does
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    for spec in expand_specs(cfg):
        player = make_player(spec.player, seed=spec.seed)
        obs, info = env.reset(seed=spec.seed)
        for _ in range(spec.steps):
            obs, _, terminated, truncated, info = env.step(player.act(obs, info))
            steps += 1
            if terminated or truncated:
                break
    return {"steps_per_s": steps / (time.perf_counter() - start),
            "steps_per_cpu_s": steps / (time.process_time() - cpu_start)}


class TreeCpu:
    """CPU seconds used by this process and every process under it (Ray's daemons, the actors)
    while active; sampled every 0.2 s, so an actor killed at the end still counts (its last
    sample: at most 0.2 s of its time is missed)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, float], float] = {}
        self.base: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, into: dict) -> None:
        import psutil  # Ray's own copy (ray/thirdparty_files) when psutil is not installed

        for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                t = proc.cpu_times()
                into[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.NoSuchProcess:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._sample(self.seen)

    def __enter__(self) -> TreeCpu:
        self._sample(self.base)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(self.seen)

    @property
    def cpu_s(self) -> float:
        return sum(v - self.base.get(k, 0.0) for k, v in self.seen.items())


def capture_run(cfg: CaptureConfig) -> dict:
    with TreeCpu() as meter:
        result = capture(cfg)
    all_cpu_s = meter.cpu_s
    busy_s = result.play_s + result.write_s
    return {
        "workers": cfg.num_workers, "frames": result.num_frames, "wall_s": result.duration_s,
        "frames_per_s": result.num_frames / result.duration_s,
        "frames_per_s_per_core": result.num_frames / result.duration_s / cfg.num_workers,
        "frames_per_cpu_s": result.num_frames / result.cpu_s,  # robust to other load on the machine
        # everything: actor start-up, Ray's raylet/GCS, the driver, commits
        "frames_per_cpu_s_all": result.num_frames / all_cpu_s,
        "play_share": result.play_s / (result.duration_s * cfg.num_workers),
        "write_share": result.write_s / (result.duration_s * cfg.num_workers),
        "init_share": result.init_s / (result.duration_s * cfg.num_workers),  # actor start: env, writers
        "other_share": 1 - (busy_s + result.init_s) / (result.duration_s * cfg.num_workers),  # Ray, commits, idle
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="voxel")
    parser.add_argument("--player", default="mixture")
    # Long enough that starting the actors (~1-2 s each: process, imports, world) is a small share.
    parser.add_argument("--episodes", type=int, default=48)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-capture-")
    ray_tmp = tempfile.mkdtemp(prefix="wlb", dir="/tmp")
    base = dict(env=args.env, player=args.player, episodes=args.episodes, steps=args.steps,
                resolution=args.resolution, progress=False)
    try:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=ray_tmp,
                 logging_level=logging.WARNING)
        peer = bare_env(CaptureConfig(out=work, **base))
        one = capture_run(CaptureConfig(out=os.path.join(work, "w1"), num_workers=1, **base))
        two = capture_run(CaptureConfig(out=os.path.join(work, "w2"), num_workers=2, **base))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    bare, bare_cpu = peer["steps_per_s"], peer["steps_per_cpu_s"]
    figures = {
        "job": base, "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "bare_env": peer,
        "one_worker": one, "two_workers": two,
        "per_core_vs_bare": one["frames_per_s_per_core"] / bare,
        "per_cpu_s_vs_bare": one["frames_per_cpu_s"] / bare_cpu,
        "two_vs_one": two["frames_per_s"] / one["frames_per_s"],
        # An hour of footage is 3600 * FPS frames; at r frames per core-second it costs
        # 3600 * FPS / r core-seconds = FPS / r core-hours. Wall clock: what a job pays for its cores.
        "core_hours_per_footage_hour": FPS / one["frames_per_s_per_core"],
        "core_hours_per_footage_hour_cpu_time": FPS / one["frames_per_cpu_s"],
        "core_hours_per_footage_hour_cpu_time_all": FPS / one["frames_per_cpu_s_all"],
        "core_hours_per_footage_hour_bare_env": FPS / bare,
    }
    res = f"{args.resolution}x{args.resolution}"
    print(f"capture benchmark: {args.env} {res}, {args.episodes} episodes x {args.steps} steps, "
          f"{os.cpu_count()} cores (shared machines are noisy)")
    print(f"{'':28s}{'frames/s':>9s}{'per core':>9s}{'vs bare':>8s}{'per CPU-s':>10s}{'vs bare':>8s}"
          f"{'all CPU':>8s}{'vs bare':>8s}   wall split play/write/start/other")
    print(f"{'bare env (peer, 1 process)':28s}{bare:9.0f}{bare:9.0f}{1.0:8.2f}{bare_cpu:10.0f}{1.0:8.2f}"
          f"{bare_cpu:8.0f}{1.0:8.2f}")
    for name, r in (("capture, 1 worker", one), ("capture, 2 workers", two)):
        print(f"{name:28s}{r['frames_per_s']:9.0f}{r['frames_per_s_per_core']:9.0f}"
              f"{r['frames_per_s_per_core'] / bare:8.2f}{r['frames_per_cpu_s']:10.0f}{r['frames_per_cpu_s'] / bare_cpu:8.2f}"
              f"{r['frames_per_cpu_s_all']:8.0f}{r['frames_per_cpu_s_all'] / bare_cpu:8.2f}   "
              f"{r['play_share']:.0%} / {r['write_share']:.0%} / {r['init_share']:.0%} / {r['other_share']:.0%}")
    print("per CPU-s: the actors' task CPU time; all CPU: every process of the job, Ray's daemons included")
    print(f"load average during the run: {figures['load_avg_1m']:.1f} on {os.cpu_count()} cores")
    print(f"per core vs bare env (1 worker): {figures['per_core_vs_bare']:.2f}x wall, "
          f"{figures['per_cpu_s_vs_bare']:.2f}x CPU time (goal >= 0.85)")
    print(f"2 workers vs 1: {figures['two_vs_one']:.2f}x (goal >= 1.8 on 2 cores)")
    print(f"cost of 1 hour of {FPS} fps {res} footage: {figures['core_hours_per_footage_hour']:.3f} core-hours wall, "
          f"{figures['core_hours_per_footage_hour_cpu_time']:.3f} in task CPU time, "
          f"{figures['core_hours_per_footage_hour_cpu_time_all']:.3f} in all CPU time "
          f"(bare env alone {figures['core_hours_per_footage_hour_bare_env']:.3f}; goal <= 0.1)")
    if args.json:
        with open(args.json, "w") as f:
            f.write(json_text(figures, indent=2))


if __name__ == "__main__":
    main()
