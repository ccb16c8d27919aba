"""Closed-loop evaluation speed per core beside the bare task env, in the same run.

    nice -n 10 taskset -c 1 python benchmarks/bench_agent.py            # one core: the figure the goal uses
    taskset -c 1 python benchmarks/bench_agent.py --policy runs/study/policies/bc-env-s0   # a trained policy
    python benchmarks/bench_agent.py --task explore --batch 16 --preset tiny --rounds 4 --out bench_agent.json

The peer is the bare task env (`worldloom.envs.tasks.make_task_env`) stepped by the random
player, one env, nothing else, on the same worlds as the runners (the eval's episode seeds,
each episode's player seeded by it as the eval's are). Beside it, `EpisodeRunner` (what each
`worldloom agent eval` actor runs) plays `--batch` episodes side by side: with the random player
(the runner's own cost), and with a policy, choosing all the batch's actions in one forward pass
per step, one thread, twice: its step run by ONNX Runtime (`--runtime onnxruntime`, what `agent
eval` plays with on a CPU) and by torch (`--runtime torch`, agent/inference.py's FastPolicy). The
policy is an untrained one of `--preset` (in the policy checkpoint format), or the trained run
`--policy` (frames at its own size). Every episode is cut at `--episode-steps` steps, in the
peers too. The players run in interleaved rounds, so a busy shared machine slows all alike;
steps/s are env steps per second of this process's CPU time (`time.process_time`). The goal
(issue 15): the policy's closed-loop steps/s at least 0.8x the bare env's, the column `x bare env`.

The env's cost depends on the actions: the untrained policy presses every button half the time
and turns the camera by a random bin every step, and those steps cost the env more than the
random player's (a sticky, sparser press); a trained policy's cost it less. So a second peer
replays the policy's own actions (recorded in a pass before the timed rounds; the policy is
deterministic given the episode seeds) in the bare env, on the same worlds: the same env steps
without the policy, and the column `x same steps` divides by it: what the policy and the runner
cost, apart from the env. A mistake in the arguments is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def untrained_policy_run(root: Path, preset: str, size: int) -> str:
    """A policy run directory holding a freshly initialised policy of `preset` at size x size, conditioned on
    every task as the study's policies are (its task embedding is part of each step)."""
    import dataclasses

    import torch

    from worldloom import checkpoint as ckpt
    from worldloom.agent.model import PRESETS, Policy, action_space_doc
    from worldloom.config import to_json_dict
    from worldloom.envs.tasks import TASKS

    root.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(PRESETS[preset], height=size, width=size, tasks=tuple(TASKS))
    torch.manual_seed(0)
    ckpt.write_run_config(root, "policy", {"model": to_json_dict(cfg), "action_space": action_space_doc()})
    ckpt.save_checkpoint(root, "policy", {"model": Policy(cfg).state_dict()}, {"step": 0})
    return str(root)


class BareEnv:
    """A peer: one task env playing given episodes, nothing else."""

    def __init__(self, task: str, size: int, limit: int):
        from worldloom.envs.tasks import make_task_env

        self.env = make_task_env(task, height=size, width=size, max_steps=limit)

    def random_player(self, seeds: list[int]) -> int:
        """Each world seed's episode played by the random player seeded by it; -> env steps."""
        from worldloom.envs import make_player

        steps = 0
        for seed in seeds:
            player, (obs, info), done = make_player("random", seed=seed), self.env.reset(seed=seed), False
            while not done:
                obs, _, term, trunc, info = self.env.step(player.act(obs, info))
                done, steps = term or trunc, steps + 1
        return steps

    def replay(self, seeds: list[int], script: dict[int, list[dict]]) -> int:
        """Each world seed's episode played with the actions `script` holds for it; -> env steps."""
        for seed in seeds:
            self.env.reset(seed=seed)
            for action in script[seed]:
                self.env.step(action)
        return sum(len(script[seed]) for seed in seeds)


def recording_env(task: str, size: int, limit: int, script: dict[int, list[dict]]):
    """A task env that keeps each episode's actions in `script` under its world seed."""
    import gymnasium

    from worldloom.envs.tasks import make_task_env

    class Recording(gymnasium.Wrapper):
        def reset(self, *, seed=None, options=None):
            self.actions = script[seed] = []
            return self.env.reset(seed=seed, options=options)

        def step(self, action):
            self.actions.append(action)
            return self.env.step(action)

    return Recording(make_task_env(task, height=size, width=size, max_steps=limit))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="explore", help="the task played (short name or id; default: explore)")
    ap.add_argument("--size", type=int, default=None, help="frame height and width (default: the --policy's, else 64)")
    ap.add_argument("--preset", default=None, help="an untrained policy of this preset (worldloom.agent.model.PRESETS; "
                                                   "default: tiny)")
    ap.add_argument("--policy", default=None, help="a trained policy run to play instead of an untrained --preset one "
                                                    "(its actions, not half of all buttons, decide the env's cost)")
    ap.add_argument("--batch", type=int, default=16, help="episodes an actor plays side by side (default: 16)")
    ap.add_argument("--episode-steps", type=int, default=50, help="steps each episode is cut at (default: 50)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up round (default: 3)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    from worldloom.errors import UserError

    try:
        bench(args)
    except UserError as err:
        print(f"bench_agent: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def check_args(args: argparse.Namespace) -> None:
    """UserError naming the flag for what the benchmark cannot play; fills --size and --preset."""
    from worldloom.agent.players import is_reference
    from worldloom.envs.tasks import task_by_name
    from worldloom.errors import UserError

    try:
        task_by_name(args.task)
    except ValueError as err:
        raise UserError(f"--task {args.task}: {err}") from None
    for name in ("batch", "episode_steps", "rounds"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: at least 1")
    if args.policy is None:
        args.preset, args.size = args.preset or "tiny", args.size or 64
        return
    if args.preset is not None:
        raise UserError(f"--preset {args.preset} and --policy {args.policy}: give one (an untrained policy of a preset, "
                        "or a trained run)")
    if is_reference(args.policy):
        raise UserError(f"--policy {args.policy}: give a policy run; the random player is the peer the runs are "
                        "measured against, and scripted players have no network to time")
    from worldloom.agent.checkpoint import model_config

    try:
        height = model_config(args.policy).height
    except UserError as err:  # a folder that is no policy run
        raise UserError(f"--policy {err}") from None
    if args.size not in (None, height):
        raise UserError(f"--size {args.size}: {args.policy} takes {height}x{height} frames; leave --size out or give "
                        f"{height}")
    args.size = height
    from worldloom.agent.players import no_task_note

    if (note := no_task_note(args.policy, args.task)) is not None:
        print(f"bench_agent: note: {note} (give --task one of those)", file=sys.stderr)


def bench(args: argparse.Namespace) -> None:
    check_args(args)
    import torch

    from worldloom.agent.evaluate import EpisodeRunner, episode_seed

    torch.set_num_threads(1)
    rounds = [[(i, episode_seed(k, i)) for i in range(args.batch)] for k in range(args.rounds + 1)]  # 0: warm-up
    with tempfile.TemporaryDirectory() as tmp:
        run = args.policy or untrained_policy_run(Path(tmp) / "policy", args.preset, args.size)
        who = Path(args.policy).name if args.policy else f"{args.preset} policy"
        policy_name = f"eval, {who}, onnxruntime"
        script: dict[int, list[dict]] = {}  # world seed -> the policy's actions in that episode
        EpisodeRunner(run, args.task, args.size, batch=args.batch, time_limit=args.episode_steps,
                      make_env=lambda: recording_env(args.task, args.size, args.episode_steps, script)
                      ).run([w for r in rounds for w in r])
        bare = BareEnv(args.task, args.size, args.episode_steps)
        peers = {"bare env, random player": bare.random_player,
                 "bare env, the policy's actions": lambda seeds: bare.replay(seeds, script)}
        runners = {name: EpisodeRunner(spec, args.task, args.size, batch=args.batch, time_limit=args.episode_steps,
                                       runtime=runtime)
                   for name, spec, runtime in (("eval, random player", "random", "auto"),
                                               (policy_name, run, "onnxruntime"),
                                               (f"eval, {who}, torch", run, "torch"))}
        cpu = dict.fromkeys([*peers, *runners], 0.0)
        steps = dict.fromkeys(cpu, 0)
        for k, work in enumerate(rounds):  # round 0 warms up: numba cache load, first allocations
            seeds = [seed for _, seed in work]
            for name, play in [*peers.items(), *((n, r.run) for n, r in runners.items())]:
                t = time.process_time()
                n = play(seeds) if name in peers else play(work)["steps"]
                if k:
                    cpu[name] += time.process_time() - t
                    steps[name] += n
    rate = {k: steps[k] / max(cpu[k], 1e-9) for k in cpu}
    replay = rate["bare env, the policy's actions"]
    peer, same = rate["bare env, random player"], {policy_name: replay, f"eval, {who}, torch": replay,
                                                  "eval, random player": rate["bare env, random player"]}
    print(f"{args.task} at {args.size}x{args.size}, {args.batch} episodes side by side, {args.episode_steps} steps each, "
          f"{args.rounds} round{'s' if args.rounds != 1 else ''}; the goal: x bare env at least 0.8")
    print(f"{'who':<36} {'steps/s per core':>17} {'x bare env':>11} {'x same steps':>13}")
    for k, v in rate.items():
        print(f"{k:<36} {v:>17.0f} {v / peer:>11.2f} {f'{v / same[k]:.2f}' if k in same else '':>13}")
    if args.out:
        from worldloom.io import atomic_write_json

        atomic_write_json(Path(args.out), {"config": vars(args), "steps": steps, "steps_per_cpu_s": rate,
                                           "ratio_to_bare": {k: v / peer for k, v in rate.items()},
                                           "ratio_to_same_steps": {k: rate[k] / same[k] for k in same}})


if __name__ == "__main__":
    main()
