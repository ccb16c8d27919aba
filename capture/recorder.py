"""The recorder: owns an env, plays episode specs and writes them into dataset shards.

    from worldloom.capture.recorder import Recorder
    rec = Recorder({"env": "data/run1"}, env="voxel", height=128, width=128)
    result = rec.record([(spec, ("env",))])     # shard infos (JSON), frame count, timings
    commit_shards("data/run1", result["shards"]["env"])

`Recorder` is a plain class that works without Ray; `remote_recorder()` wraps it in a thin
`ray.remote` actor with restarts and task retries. It returns shard metadata only, never frames
(one 64x64 frame per Ray call costs 0.76 ms here, more than rendering it: REFERENCES.md).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worldloom import actions
from worldloom.actions import FPS
from worldloom.datasets import DatasetWriter

from .config import EpisodeSpec
from .state import captions_of, state_columns

# An actor killed by the OS (SIGKILL, OOM) is started again and its unfinished tasks run again,
# up to these counts; a task that raised an exception is not retried (it would fail again).
MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4
# An env whose engine crashed or hung mid-episode (EnvCrashed) restarts it on the next reset: the
# episode is played again from its spec, up to this many times.
MAX_EPISODE_RETRIES = 2

# (spec, label sources to write it as): "env" keeps the actions, "none" strips them.
WorkItem = tuple[EpisodeSpec, Sequence[str]]


@dataclass
class Episode:
    """One played episode: `frames[t]` is seen, then `buttons[t]`/`camera[t]` applied."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    buttons: np.ndarray  # (T, 20) bool
    camera: np.ndarray  # (T, 2) float32 degrees [pitch, yaw]
    rewards: np.ndarray  # (T,) float32
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray  # (T,) bool
    state: dict[str, list]  # the dataset's state_* columns (T values each) from the env's infos; {} if none


def play_episode(env: Any, player: Any, spec: EpisodeSpec) -> Episode:
    """Play `spec` to its step limit or the env's end; deterministic in the spec."""
    frames = np.empty((spec.steps, spec.height, spec.width, 3), np.uint8)  # (T, H, W, 3)
    rewards = np.zeros(spec.steps, np.float32)
    terminated = np.zeros(spec.steps, bool)
    truncated = np.zeros(spec.steps, bool)
    taken, infos = [], []
    obs, info = env.reset(seed=spec.seed)
    num = spec.steps
    for t in range(spec.steps):
        frames[t] = obs
        infos.append(info)  # the state at frame t, before its action
        action = player.act(obs, info)
        obs, reward, term, trunc, info = env.step(action)
        # An env may report what its engine executed (Minetest: the engine's own camera change).
        taken.append(info.get("action", action))
        rewards[t], terminated[t], truncated[t] = reward, term, trunc
        if term or trunc:
            num = t + 1
            break
    # The job's step limit ends the episode the way gymnasium's TimeLimit does: truncated.
    truncated[num - 1] |= not terminated[num - 1]
    buttons, camera = actions.to_arrays(taken)  # (T, 20) bool, (T, 2) float32
    return Episode(frames[:num], buttons, camera, rewards[:num], terminated[:num], truncated[:num], state_columns(infos))


def _default_make_env(name: str, height: int, width: int, **options: Any) -> Any:
    from worldloom.envs import make_env

    return make_env(name, height=height, width=width, **options)


def _default_make_player(name: str, seed: int) -> Any:
    from worldloom.envs import make_player

    return make_player(name, seed=seed)


class Recorder:
    """Plays episodes of one env and writes each batch as one shard per target dataset."""

    def __init__(
        self, targets: dict[str, str], env: str, height: int, width: int, fps: float = FPS,
        split: str = "train", writer_prefix: str = "rec",
        make_env: Callable[..., Any] = _default_make_env, make_player: Callable[..., Any] = _default_make_player,
        env_options: dict | None = None, environ: dict[str, str] | None = None,
    ):
        init_start = time.perf_counter()
        # Object-store credentials from the driver's environment arrive as an argument, not as a
        # Ray runtime_env: Ray writes a runtime_env, env_vars included, into its session logs.
        os.environ.update(environ or {})
        # A fresh writer id per process: an actor restarted after a kill never reuses the shard
        # names of its previous life, so nothing it wrote (committed or not) is overwritten.
        self.writer_id = f"{writer_prefix}-{uuid.uuid4().hex[:8]}"
        self.env_name, self.height, self.width, self.split, self.fps = env, height, width, split, fps
        self.env_options = dict(env_options or {})  # e.g. {"antialias": True}
        self.env = make_env(env, height, width, **self.env_options)  # expensive (world gen, numba compile): once per actor
        self.env.reset(seed=0)  # the first reset loads compiled code and caches: not an episode's cost
        self.num_replayed = 0  # episodes played again after their env crashed
        self.make_player = make_player
        self.writers = {
            label: DatasetWriter(root, height=height, width=width, fps=fps, writer_id=self.writer_id, autocommit=False)
            for label, root in targets.items()
        }
        self.init_s = time.perf_counter() - init_start

    def where(self) -> dict:
        """Which process and node this recorder runs in (the node id under Ray)."""
        node_id = None
        try:
            import ray

            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
        except ImportError:
            pass
        return {"host": socket.gethostname(), "pid": os.getpid(), "node_id": node_id, "writer_id": self.writer_id,
                "init_s": self.init_s}

    def record(self, items: Sequence[WorkItem]) -> dict:
        """Play and write `items`; returns {"shards": {label: [ShardInfo JSON]}, "frames", timings}."""
        play_s = write_s = 0.0
        num_frames = 0
        cpu_start = time.process_time()
        try:
            for spec, labels in items:
                start = time.perf_counter()
                episode = self._play(spec)
                play_s += time.perf_counter() - start
                start = time.perf_counter()
                for label in labels:
                    self._write(label, spec, episode)
                write_s += time.perf_counter() - start
                num_frames += len(episode.frames)
            start = time.perf_counter()
            shards = {label: [info.to_json() for info in w.flush()] for label, w in self.writers.items()}
            write_s += time.perf_counter() - start
        except BaseException:
            for w in self.writers.values():  # leave no half-written temporary shard behind
                try:
                    w.abort()
                except OSError:
                    pass
            raise
        return {"shards": shards, "frames": num_frames, "episodes": len(items), "play_s": play_s,
                "replayed": self.num_replayed,
                "write_s": write_s, "cpu_s": time.process_time() - cpu_start, **self.where()}

    def _play(self, spec: EpisodeSpec) -> Episode:
        """Play `spec`; an episode cut short by a crashed engine is played again from the start."""
        from worldloom.envs import EnvCrashed

        for attempt in range(MAX_EPISODE_RETRIES + 1):
            try:
                return play_episode(self.env, self.make_player(spec.player, spec.seed), spec)
            except EnvCrashed:
                if attempt == MAX_EPISODE_RETRIES:
                    raise
                self.num_replayed += 1
        raise AssertionError("unreachable")

    def _write(self, label: str, spec: EpisodeSpec, episode: Episode) -> None:
        labeled = label != "none"
        self.writers[label].add_episode(
            spec.episode_id, episode.frames,
            buttons=episode.buttons if labeled else None, camera=episode.camera if labeled else None,
            # Footage keeps only what a video shows: no actions, rewards, episode ends or engine state.
            rewards=episode.rewards if labeled else None,
            terminated=episode.terminated if labeled else None, truncated=episode.truncated if labeled else None,
            state=episode.state if labeled else None,
            caption=captions_of(episode.state, episode.buttons, spec.episode_id, self.fps) if labeled else None,
            label_source=label, env=spec.env, env_config={"height": spec.height, "width": spec.width, **self.env_options},
            seed=spec.seed, player=spec.player, split=self.split,
        )


# An episode's frames are held raw while it plays and again while its shard is written: a recorder's resident
# memory grew by 2.5-2.8x one episode's raw frames over ACTOR_BASE_BYTES (voxel, 400 steps at 128x128 and 256x256,
# measured with psutil on 2026-12-08).
EPISODE_FRAME_COPIES = 3


def recorder_memory_bytes(height: int, width: int, steps: int) -> int:
    """About what one recorder actor holds at its peak, in bytes: the worker with its env, and the frames of
    one episode of `steps` steps at `height` x `width` (EPISODE_FRAME_COPIES times)."""
    from worldloom.cluster import ACTOR_BASE_BYTES

    return ACTOR_BASE_BYTES + EPISODE_FRAME_COPIES * steps * height * width * 3


def remote_recorder(num_cpus: float = 1):
    """`Recorder` as a Ray actor class: restarted when its process dies, its tasks retried."""
    import ray

    return ray.remote(num_cpus=num_cpus, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)(Recorder)
