"""Closed-loop evaluation speed per core beside the bare task env, in the same run.

    nice -n 10 taskset -c 1 python benchmarks/bench_agent.py            # one core: the figure the goal uses
    python benchmarks/bench_agent.py --task explore --batch 16 --preset tiny --rounds 4 --out bench_agent.json

The peer is the bare task env (`worldloom.envs.tasks.make_task_env`) stepped by the random
player, one env, nothing else. Beside it, `EpisodeRunner` (what each `worldloom agent eval` actor
runs) plays `--batch` episodes side by side: with the random player (the runner's own cost), and
with a policy of `--preset` (an untrained one in the policy checkpoint format: speed does not
depend on the weights), choosing all the batch's actions in one forward pass per step, one torch
thread. Every episode is cut at `--episode-steps` steps, in the peer too. The three run in
interleaved rounds, so a busy shared machine slows all alike; steps/s are env steps per second
of this process's CPU time (`time.process_time`). The goal (issue 15): the policy's closed-loop
steps/s at least 0.8x the bare env's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def untrained_policy_run(root: Path, preset: str, size: int) -> str:
    """A policy run directory holding a freshly initialised policy of `preset` at size x size."""
    import dataclasses

    import torch

    from worldloom import checkpoint as ckpt
    from worldloom.agent.model import PRESETS, Policy, action_space_doc
    from worldloom.config import to_json_dict

    root.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(PRESETS[preset], height=size, width=size)
    torch.manual_seed(0)
    ckpt.write_run_config(root, "policy", {"model": to_json_dict(cfg), "action_space": action_space_doc()})
    ckpt.save_checkpoint(root, "policy", {"model": Policy(cfg).state_dict()}, {"step": 0})
    return str(root)


class BareEnv:
    """The peer: one task env and the random player."""

    def __init__(self, task: str, size: int, limit: int):
        from worldloom.envs import make_player
        from worldloom.envs.tasks import make_task_env

        self.env = make_task_env(task, height=size, width=size, max_steps=limit)
        self.player = make_player("random", seed=0)
        self.obs, self.info = self.env.reset(seed=0)
        self.episode = 0

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.obs, _, term, trunc, self.info = self.env.step(self.player.act(self.obs, self.info))
            if term or trunc:
                self.episode += 1
                self.obs, self.info = self.env.reset(seed=self.episode)
                self.player.reset()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="explore")
    ap.add_argument("--size", type=int, default=64, help="frame height and width")
    ap.add_argument("--preset", default="tiny", help="the policy's preset (worldloom.agent.model.PRESETS)")
    ap.add_argument("--batch", type=int, default=16, help="episodes an actor plays side by side")
    ap.add_argument("--episode-steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    import torch

    from worldloom.agent.evaluate import EpisodeRunner, episode_seed

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = untrained_policy_run(Path(tmp) / "policy", args.preset, args.size)
        bare = BareEnv(args.task, args.size, args.episode_steps)
        runners = {name: EpisodeRunner(spec, args.task, args.size, batch=args.batch, time_limit=args.episode_steps)
                   for name, spec in (("eval, random player", "random"), (f"eval, {args.preset} policy", run))}
        work = [(i, episode_seed(0, i)) for i in range(args.batch)]
        bare.steps(50)  # numba cache load, first allocations
        for r in runners.values():
            r.run(work[:1])
        cpu = {"bare env, random player": 0.0, **{k: 0.0 for k in runners}}
        steps = dict.fromkeys(cpu, 0)
        per_round = args.batch * args.episode_steps
        for k in range(args.rounds):
            t = time.process_time()
            bare.steps(per_round)
            cpu["bare env, random player"] += time.process_time() - t
            steps["bare env, random player"] += per_round
            for name, runner in runners.items():
                round_work = [(i, episode_seed(k + 1, i)) for i in range(args.batch)]
                t = time.process_time()
                steps[name] += runner.run(round_work)["steps"]
                cpu[name] += time.process_time() - t
    rate = {k: steps[k] / max(cpu[k], 1e-9) for k in cpu}
    peer = rate["bare env, random player"]
    print(f"{args.task} at {args.size}x{args.size}, {args.batch} episodes side by side, {args.episode_steps} steps each, "
          f"{args.rounds} rounds")
    print(f"{'who':<28} {'steps/s per core':>17} {'x bare env':>11}")
    for k, v in rate.items():
        print(f"{k:<28} {v:>17.0f} {v / peer:>11.2f}")
    if args.out:
        from worldloom.io import atomic_write_json

        atomic_write_json(Path(args.out), {"config": vars(args), "steps_per_cpu_s": rate,
                                           "ratio_to_bare": {k: v / peer for k, v in rate.items()}})


if __name__ == "__main__":
    main()
