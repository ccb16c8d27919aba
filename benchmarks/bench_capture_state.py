"""What the engine-state and caption columns cost capture: CPU per recorded frame with and without them.

    python benchmarks/bench_capture_state.py                          # voxel, 128x128, 5 rounds of 2 x 300 steps
    python benchmarks/bench_capture_state.py --resolution 64 --rounds 3 --json out.json

One process, no Ray: the recorder's own path (`capture.recorder.play_episode`, then
`DatasetWriter.add_episode` and a committed shard), the same episodes played with the state
columns and the captions made from them written (`capture.state.captions_of`, as the recorder
does) and without either (`state=None, caption=None`: the columns are all null), in alternating
rounds so a busy machine affects both alike, after a warm-up of each. The figure is the ratio of
CPU seconds per frame, with state and captions over without, per round and its median. Goal
(issue 16): at most 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from worldloom.capture.config import EpisodeSpec
from worldloom.capture.recorder import play_episode
from worldloom.capture.state import captions_of
from worldloom.datasets import DatasetWriter
from worldloom.envs import make_env, make_player


def record(env, specs: list[EpisodeSpec], root: str, with_state: bool) -> tuple[float, int]:
    """CPU seconds and frames to play `specs` and write them as one committed dataset under `root`."""
    start, frames = time.process_time(), 0
    with DatasetWriter(root, height=specs[0].height, width=specs[0].width) as writer:
        for spec in specs:
            episode = play_episode(env, make_player(spec.player, spec.seed), spec)
            caption = captions_of(episode.state, episode.buttons, spec.episode_id, 20.0) if with_state else None
            writer.add_episode(spec.episode_id, episode.frames, buttons=episode.buttons, camera=episode.camera,
                               rewards=episode.rewards, terminated=episode.terminated, truncated=episode.truncated,
                               env=spec.env, seed=spec.seed, player=spec.player,
                               state=episode.state if with_state else None, caption=caption)
            frames += len(episode.frames)
    return time.process_time() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="voxel")
    parser.add_argument("--player", default="mixture")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=2, help="episodes per round and mode")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    env = make_env(args.env, height=args.resolution, width=args.resolution)
    env.reset(seed=0)  # warm-up: numba compile or cache load
    specs = [EpisodeSpec(f"ep-{i}", i, args.env, seed=i, player=args.player, steps=args.steps,
                         height=args.resolution, width=args.resolution) for i in range(args.episodes)]
    ratios, per_frame = [], {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("with", "without"):  # warm-up: first-use costs (Arrow kernels, Parquet writer) in neither figure
            record(env, specs[:1], f"{tmp}/warm-{mode}", mode == "with")
        for r in range(args.rounds):
            cost = {}
            order = ("with", "without") if r % 2 == 0 else ("without", "with")
            for mode in order:
                cpu, frames = record(env, specs, f"{tmp}/{r}-{mode}", mode == "with")
                cost[mode] = cpu / frames
                per_frame[mode].append(cost[mode] * 1e3)
            ratios.append(cost["with"] / cost["without"])
            print(f"round {r}: {per_frame['with'][-1]:.3f} ms/frame with state and captions, {per_frame['without'][-1]:.3f} without, "
                  f"ratio {ratios[-1]:.3f}")
    result = {"env": args.env, "resolution": args.resolution, "frames_per_round": args.episodes * args.steps,
              "ms_per_frame_with": per_frame["with"], "ms_per_frame_without": per_frame["without"], "ratios": ratios,
              "median_ratio": statistics.median(ratios)}
    print(f"median ratio with/without state and captions: {result['median_ratio']:.3f} (goal <= 1.05)")
    if args.json:
        from worldloom.io import atomic_write_json

        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
