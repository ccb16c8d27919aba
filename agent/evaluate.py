"""Closed-loop evaluation: play a policy (or a reference player) on a task in parallel Ray actors.

    worldloom agent eval --policy runs/bc-env --task worldloom/CollectLogs-v0 --episodes 32 --num-workers 2
    worldloom agent eval --policy random --task worldloom/Explore-v0 --episodes 32
    worldloom agent eval --policy scripted:mixture --task worldloom/MineStone-v0 --episodes 32 --videos 2
    worldloom agent eval --policy runs/bc-env --task worldloom/Explore-v0 --in-world-model runs/wm   # dreaming (dream.py)

Episode i plays the world seed `episode_seed(seed, i)` (disjoint from capture's seeds), so every
player meets the same worlds. The episodes are dealt to `--num-workers` actors; each plays
`--envs-per-worker` of them side by side, a policy choosing all their actions in one batched
forward pass per step. The success rate comes with Wilson's 95% interval and the mean return with
a 95% percentile-bootstrap interval over the episodes (10,000 resamples), and the first `--videos`
episodes are written as mp4 or gif with the action drawn under each frame.

OUT/ (default: RUN/eval-<Task> for a policy run, eval-<player>-<Task> for a reference)
  eval.json                  the summary, the config and one row per episode
  videos/<player>-<Task>-ep0000.mp4
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldloom.cluster import MAX_WORKERS, NUM_WORKERS_RANGE
from worldloom.config import MAX_SEED, check_range, doc, to_json_dict
from worldloom.envs import PLAYER_NAMES, check_resolution
from worldloom.errors import UserError
from worldloom.folders import check_out
from worldloom.io import atomic_write_json
from worldloom.progress import counted
from worldloom.training import check_device_name

from .players import (
    check_compatible,
    conditioning,
    frame_shape_of,
    is_reference,
    make_controller,
    no_task_note,
    spec_name,
)

BOOTSTRAP_RESAMPLES = 10_000
VIDEO_SCALE = 4  # a filmed frame's upscaling (film_frame)
VIDEO_FPS = 20.0  # a filmed episode's frame rate: the games' step rate (worldloom.actions.FPS)
LOOKING_DOWN_DEG = 45.0  # pitch (positive looks down) past which a step counts as looking down
# Each episode's row in eval.json carries `behaviour`, from the engine's state after every step (not the frames):
BEHAVIOUR = {
    "pitch_mean": "mean pitch, degrees (positive looks down)",
    "looking_down": f"share of steps looking down more than {LOOKING_DOWN_DEG:.0f} degrees",
    "aim": "share of steps with one of the task's goal blocks in the crosshair, within reach (None for a task "
           "without goal blocks: Explore)",
    "walked": "horizontal path length, blocks",
}
MAX_EPISODES = 10_000_000  # capture's own ceiling; the episode list is built whole (`deal`)
MAX_STEPS = 1_000_000  # capture's ceiling on an episode's steps (capture/config.py)
# (field, least, most, unit) of every EvalConfig number but num_workers and resolution, checked on
# parsing: a value past these is a typo, and left through it fills memory (`--videos 1e11` builds
# the set of filmed episodes) or plays for days before saying so.
EVAL_RANGES = (
    ("episodes", 1, MAX_EPISODES, "episodes"),
    ("envs_per_worker", 1, 4096, "episodes an actor plays side by side"),
    ("temperature", 0, 100, "0: the most likely action"),
    ("time_limit", 0, MAX_STEPS, "steps; 0: the task's own"),
    ("videos", 0, 1000, "episodes filmed"),
    ("seed", 0, MAX_SEED, ""),
    ("horizon", 1, MAX_STEPS, "steps"),
    ("sample_steps", 1, 1000, "Euler steps per frame"),
    ("sample_guidance", 0, 100, "1: no guidance"),
    ("scorer_steps", 1, 100_000_000, "optimizer steps"),
    ("scorer_members", 1, 100, "scorers averaged"),
    ("scorer_dreams", 0, 1_000_000, "windows; 0: real frames only"),
)


CRITIC_READINGS = ("mean", "max")  # how a critic reduces a dream's frames (agent/dream.py ValueHead.reading)
# EvalConfig's fields that only dreaming (in_world_model) reads: a closed-loop evaluation is the same without them.
DREAM_FIELDS = frozenset({"horizon", "sample_steps", "sample_guidance", "scorer", "data", "scorer_steps",
                          "scorer_members", "scorer_dreams", "critic_reading"})
# added after the study's older stage keys (2026-12-06)
LATER_DREAM_FIELDS = frozenset({"sample_guidance", "scorer_members", "scorer_dreams", "critic_reading"})


@dataclass(frozen=True)
class EvalConfig:
    """One closed-loop (or, with in_world_model, imagined) evaluation of one player on one task."""

    policy: str = doc("a policy run directory, `random`, or `scripted:NAME` (expert, contractor, mixture, explorer, miner, "
                      "builder)")
    task: str = doc("task id (worldloom/CollectLogs-v0, worldloom/MineStone-v0, worldloom/Explore-v0, "
                    "worldloom/FindWater-v0) or its short name")
    episodes: int = doc("episodes to play (each on its own world seed)", 16)
    num_workers: int = doc("Ray actors playing episodes in parallel (0: one per CPU of the cluster)", 2)
    envs_per_worker: int = doc("episodes an actor plays side by side (a policy batches their frames)", 16)
    temperature: float = doc("sampling temperature of a policy's buttons and camera (0: the most likely action)", 1.0)
    resolution: int | None = doc("frame height and width the task renders (default: the policy's, 64 for references)", None)
    time_limit: int = doc("steps before an episode is cut (0: the task's own time limit)", 0)
    videos: int = doc("episodes written as videos with the action overlay (the first ones)", 2)
    video_format: str = doc("video type: mp4 or gif", "mp4")
    out: str | None = doc("report directory (default: RUN/eval-<Task>, or ./eval-<player>-<Task> for references; "
                          "dreaming: RUN/dream-<Task>, ./dream-<player>-<Task>)", None)
    seed: int = doc("seed of the episodes' worlds and of the players' sampling", 0)
    device: str = doc("where a policy runs: auto, cpu, cuda or cuda:N (actors ask Ray for a GPU then)", "cpu")
    runtime: str = doc("what runs a policy's steps: onnxruntime (its step exported as one graph: a step in about 0.65x "
                       "torch's time on a CPU, an evaluation of the tiny preset about 5-10% faster), torch, or auto "
                       "(onnxruntime on a CPU where it is installed, else torch); the episodes are the same", "auto")
    address: str | None = doc("Ray cluster to join (HOST:PORT or auto); unset: a local one on loopback", None)
    in_world_model: str | None = doc("a world-model run: play inside it instead of the env (dreaming; agent/dream.py)", None)
    horizon: int = doc("dreaming: imagined steps after the real context (96: Explore's distance needs the length, and "
                       "the scorers learn from re-dreams this long; docs/agent.md, 'Dreams of 96 steps')", 96)
    sample_steps: int = doc("dreaming: Euler steps per generated frame", 1)
    sample_guidance: float = doc("dreaming: classifier-free guidance on actions (1: none). In the tiny world model "
                                 "1.5 and more saturate a dream into stripes within 8-16 steps (docs/agent.md, "
                                 "'Dreaming's scorers, and guidance measured')", 1.0)
    scorer: str | None = doc("dreaming: a task-scorer run (default: WM_RUN/scorer-<Task>, trained on --data if missing)", None)
    data: tuple[str, ...] = doc("dreaming: datasets recorded on the task (with rewards and the engine's state) to train "
                                "the task scorer on (an odometer for Explore, a mining classifier for CollectLogs and "
                                "MineStone, a critic for FindWater)", ())
    scorer_steps: int = doc("dreaming: training steps of a new task scorer (an odometer trains 4x as many; "
                            "the study 600)", 300)
    scorer_members: int = doc("dreaming: a new task scorer is the mean of this many, trained from seeds seed, seed + 1, "
                              "...: one critic's ranking of players moves with its seed by as much as the world model "
                              "does (docs/agent.md)", 5)
    scorer_dreams: int = doc("dreaming: windows of --data's play the world model re-dreams under its recorded actions, "
                             "which a new task scorer also learns from (half of each batch), so that it reads a dream "
                             "as the world model draws it: the odometer its motion, the others its softened picture (0: "
                             "real frames only; docs/agent.md)", 128)
    critic_reading: str = doc("dreaming: how a critic reads a dream: mean (the mean return to come over its frames) or "
                              "max (its best frame; on CollectLogs it ranked the tiny study's players at 0.95 and 0.98 "
                              "where the mean read 0.62 and 0.83, on MineStone and FindWater lower: docs/agent.md)",
                              "mean")

    def __post_init__(self) -> None:
        from worldloom.envs.tasks import task_by_name

        try:
            task_by_name(self.task)
        except ValueError as err:
            raise ValueError(str(err)) from None
        for name, low, high, unit in EVAL_RANGES:
            check_range(name, getattr(self, name), low, high, unit, integer=name not in ("temperature", "sample_guidance"))
        check_range("num_workers", self.num_workers, 0, MAX_WORKERS, NUM_WORKERS_RANGE)
        if self.resolution is not None:
            check_resolution("voxel", self.resolution)  # the tasks are VoxelWorld's
        if self.video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format must be mp4 or gif, got {self.video_format!r}")
        if self.critic_reading not in CRITIC_READINGS:
            raise ValueError(f"critic_reading must be one of {', '.join(CRITIC_READINGS)}, got {self.critic_reading!r}")
        check_device_name(self.device)
        from .inference import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")

    @property
    def task_spec(self):
        from worldloom.envs.tasks import task_by_name

        return task_by_name(self.task)

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        where = "dream" if self.in_world_model else "eval"
        if is_reference(self.policy):
            return Path(f"{where}-{spec_name(self.policy)}-{self.task_spec.name}")
        return Path(self.policy) / f"{where}-{self.task_spec.name}"


def episode_seed(seed: int, index: int) -> int:
    """World seed of evaluation episode `index`; a 3-word entropy, so never one of capture's."""
    return int(np.random.SeedSequence([seed, 0xE7A1, index]).generate_state(1)[0] & MAX_SEED)


def bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95,
                 resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean over episodes."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng([seed, 0xB007])
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(1)  # (resamples,)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(lo), float(hi)


def hierarchical_bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95,
                              resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float]:
    """(mean, low, high) of runs' scores `values` (runs, episodes): the mean over runs of each run's
    mean over episodes, and the percentile interval of a two-level bootstrap: runs drawn with
    replacement, then the episodes of each drawn run (Saravanan, Berman & Sober 2020, "Application
    of the hierarchical bootstrap to multi-level data in neuroscience"). Policies cloned on other
    seeds differ by more than their episodes' intervals (docs/agent.md), so an interval over
    episodes alone claims a precision about the recipe that one seed does not have; with one run
    this is the bootstrap over episodes of `bootstrap_ci`."""
    values = _runs_by_episodes(values, "hierarchical_bootstrap_ci")
    means = _hierarchical_means(values, np.random.default_rng([seed, 0xB007, 2]), resamples)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(lo), float(hi)


def hierarchical_ratio_ci(numerator: np.ndarray, denominator: np.ndarray, seed: int = 0, level: float = 0.95,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float] | None:
    """(ratio, low, high) of two recipes' mean scores, each given as (runs, episodes): the ratio of
    their means and the percentile interval of the ratio under `hierarchical_bootstrap_ci`'s two-level
    resampling, drawn for each recipe on its own (the study's bc-idm over bc-env: its goal is a ratio,
    and two seeds a policy leave it this wide). None where the denominator's mean is 0, or is 0 in
    more than 1% of the resamples (a ratio with no scale)."""
    num = _runs_by_episodes(numerator, "hierarchical_ratio_ci")
    den = _runs_by_episodes(denominator, "hierarchical_ratio_ci")
    rng = np.random.default_rng([seed, 0xB007, 3])
    top, bottom = _hierarchical_means(num, rng, resamples), _hierarchical_means(den, rng, resamples)
    if den.mean() == 0 or (bottom == 0).mean() > 0.01:
        return None
    ratios = top[bottom != 0] / bottom[bottom != 0]
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(num.mean() / den.mean()), float(lo), float(hi)


def _runs_by_episodes(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"{name} takes scores (runs, episodes), got shape {values.shape}")
    return values


def _hierarchical_means(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples,) means of `values` (runs, episodes) resampled runs first, then each drawn run's episodes."""
    runs, episodes = values.shape
    picked = rng.integers(0, runs, (resamples, runs, 1))  # (resamples, runs, 1) which runs
    drawn = rng.integers(0, episodes, (resamples, runs, episodes))  # and which of their episodes
    return values[picked, drawn].mean((1, 2))


def wilson_ci(successes: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high): Wilson's score interval of a success rate over episodes (0/1 values).

    The percentile bootstrap of a 0/1 sample collapses to a point at 0/n and n/n ([0, 0] from 16
    failures), so an interval compared with it claims a separation the episodes do not show; Wilson's
    keeps its width there (0/16: [0, 0.19]) and is the interval Brown, Cai & DasGupta (2001,
    "Interval estimation for a binomial proportion") recommend for small n."""
    from statistics import NormalDist

    x = np.asarray(successes, dtype=np.float64)
    n = x.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p, z = x.mean(), NormalDist().inv_cdf((1 + level) / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(p), float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass
class _Slot:
    index: int
    seed: int
    ret: float = 0.0
    steps: int = 0
    video: Any = None  # a worldloom.io.VideoWriter when this episode is filmed: each step's frame goes into it as it is played
    seen: int = 0  # steps whose info carried the engine's pose (VoxelWorld's tasks do; another env may not)
    pitch_sum: float = 0.0
    down: int = 0
    aimed: int = 0
    walked: float = 0.0
    last_xz: tuple[float, float] | None = None

    def observe(self, info: dict, goal_names: frozenset[str]) -> None:
        """Add one step's engine truth (info after the step) to the episode's `behaviour`."""
        pitch, pos = info.get("pitch"), info.get("position")
        if pitch is None or pos is None:
            return
        self.seen += 1
        self.pitch_sum += pitch
        self.down += pitch > LOOKING_DOWN_DEG
        self.aimed += info.get("target_block", "") in goal_names
        xz = (float(pos[0]), float(pos[2]))
        if self.last_xz is not None:
            self.walked += math.hypot(xz[0] - self.last_xz[0], xz[1] - self.last_xz[1])
        self.last_xz = xz

    def behaviour(self, aims: bool) -> dict | None:
        """What the player did, from the engine (BEHAVIOUR); None where the env gave no pose."""
        if not self.seen:
            return None
        return {"pitch_mean": round(self.pitch_sum / self.seen, 2), "looking_down": round(self.down / self.seen, 4),
                "aim": round(self.aimed / self.seen, 4) if aims else None, "walked": round(self.walked, 2)}


class EpisodeRunner:
    """Plays episodes of one task with one player, `batch` at a time; a plain class (Ray wraps it)."""

    def __init__(self, policy: str, task: str, resolution: int, batch: int, temperature: float = 1.0,
                 device: str = "cpu", video_dir: str | None = None, video_format: str = "mp4", time_limit: int = 0,
                 runtime: str = "auto", make_env=None):
        from worldloom.envs.tasks import make_task_env, short_name, task_by_name

        if not is_reference(policy):
            import torch

            torch.set_num_threads(1)  # parallelism comes from actors (DESIGN section 4)
        self.task = task_by_name(task)
        self.policy, self.video_dir, self.video_format = policy, video_dir, video_format
        self.controller = make_controller(policy, batch, temperature, device, short_name(task), runtime)
        limit = {"max_steps": time_limit} if time_limit else {}
        build = make_env or (lambda: make_task_env(task, height=resolution, width=resolution, **limit))
        self.envs = [build() for _ in range(batch)]
        from worldloom.envs.blocks import BLOCKS

        self.goal_names = frozenset(BLOCKS[i].name for i in self.task.goal_blocks)
        check_compatible(self.controller.frame_shape, self.envs[0], policy, self.task.env_id)

    def run(self, work: list[tuple[int, int]], filmed: set[int] | frozenset = frozenset()) -> dict:
        """Play `work` [(episode index, world seed)]; -> {"episodes": rows, "steps", "cpu_s", "wall_s"}."""
        t0, c0 = time.perf_counter(), time.process_time()
        pending, rows, steps = deque(work), [], 0
        B = len(self.envs)
        slots: list[_Slot | None] = [None] * B
        obs = np.zeros((B, *self.envs[0].observation_space.shape), np.uint8)
        infos: list[dict] = [{} for _ in range(B)]

        def start(k: int) -> None:
            if not pending:
                slots[k] = None
                return
            index, seed = pending.popleft()
            obs[k], infos[k] = self.envs[k].reset(seed=seed)
            self.controller.begin(k, seed)
            slots[k] = _Slot(index, seed, video=self._camera(index) if index in filmed else None)

        try:
            for k in range(B):
                start(k)
            while any(s is not None for s in slots):
                actions = self.controller.act(obs, infos)
                for k, slot in enumerate(slots):
                    if slot is None:
                        continue
                    if slot.video is not None:
                        slot.video.write(film_frame(obs[k], actions[k], slot.steps))
                    obs[k], reward, terminated, truncated, infos[k] = self.envs[k].step(actions[k])
                    slot.ret += reward
                    slot.steps += 1
                    slot.observe(infos[k], self.goal_names)
                    steps += 1
                    if terminated or truncated:
                        rows.append(self._finish(slot, infos[k], obs[k]))
                        start(k)
        finally:  # an error mid-episode: the videos being filmed leave no file
            for slot in slots:
                if slot is not None and slot.video is not None:
                    slot.video.abort()
        return {"episodes": rows, "steps": steps, "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0,
                "runtime": self.controller.runtime, "runtime_note": self.controller.runtime_note}

    def _camera(self, index: int):
        """The video episode `index` is filmed into (None without a video folder)."""
        from worldloom.io import VideoWriter

        if not self.video_dir:
            return None
        return VideoWriter(Path(self.video_dir) / f"{spec_name(self.policy)}-{self.task.name}-ep{index:04d}."
                           f"{self.video_format}", VIDEO_FPS)

    def _finish(self, slot: _Slot, info: dict, last: np.ndarray) -> dict:
        task = info["task"]
        row = {"index": slot.index, "seed": slot.seed, "return": round(slot.ret, 4), "success": bool(task["success"]),
               "progress": round(float(task["progress"]), 4), "steps": slot.steps,
               "behaviour": slot.behaviour(bool(self.goal_names)), "video": None}
        if slot.video is not None:
            slot.video.write(film_frame(last, None, slot.steps))  # the frame after the last action, with none under it
            row["video"], slot.video = str(slot.video.close()), None
        return row


def film_frame(frame: np.ndarray, action: dict | None, step: int) -> np.ndarray:
    """A filmed step: `frame` (H, W, 3) upscaled VIDEO_SCALE times with `action` (None: none) drawn under it
    -> (H * VIDEO_SCALE + BAR_PX, W * VIDEO_SCALE, 3)."""
    from worldloom.actions import BUTTONS
    from worldloom.datasets.export import draw_action, scale_frame

    big = scale_frame(frame, VIDEO_SCALE)
    if action is None:
        return draw_action(big, None, None, step)
    return draw_action(big, np.array([action[b] for b in BUTTONS], bool), action["camera"], step)


def deal(cfg: EvalConfig, num_actors: int) -> list[list[tuple[int, int]]]:
    """Episodes (index, seed) dealt round-robin to the actors."""
    work = [(i, episode_seed(cfg.seed, i)) for i in range(cfg.episodes)]
    return [work[k::num_actors] for k in range(num_actors) if work[k::num_actors]]


def resolve_resolution(cfg: EvalConfig) -> int:
    """The task's frame size: --resolution, else the policy's (64 for references)."""
    if is_reference(cfg.policy):
        if cfg.policy.startswith("scripted:") and cfg.policy.split(":", 1)[1] not in PLAYER_NAMES:
            raise UserError(f"--policy {cfg.policy}: unknown scripted player; known: "  # before any actor starts
                            f"{', '.join(f'scripted:{p}' for p in PLAYER_NAMES if p != 'random')}, or random")
        return cfg.resolution or 64
    if "://" not in cfg.policy and not Path(cfg.policy).exists():  # `Random`, `scripted-mixture`, a typo'd run
        near = [name for name in ("random", *(f"scripted:{p}" for p in PLAYER_NAMES if p != "random"))
                if name.replace(":", "").lower() == cfg.policy.replace(":", "").replace("-", "").lower()]
        hint = f" (did you mean --policy {near[0]}?)" if near else ""
        raise UserError(f"--policy {cfg.policy}: no such policy run{hint}; give a policy run directory, `random`, or "
                        "`scripted:NAME`")
    from .checkpoint import model_config

    pcfg = model_config(cfg.policy)
    return cfg.resolution or pcfg.height


class EvalWorker:
    """A long-lived actor: plays the work it is given with a runner kept for the next call with
    the same player and task (actors start once per Ray session; torch and numba load once)."""

    def __init__(self):
        self.key, self.runner = None, None

    def run(self, args: tuple, work: list[tuple[int, int]], filmed: set[int]) -> dict:
        if args != self.key:
            self.key, self.runner = None, None  # free the last one first
            self.runner, self.key = EpisodeRunner(*args), args
        return self.runner.run(work, filmed)


_POOLS: dict[str, list] = {}  # "<node id>/<job id>:<gpus per actor>" -> its EvalWorker actors


def worker_pool(num: int, gpu: float) -> list:
    """`num` EvalWorker actors of this Ray session, started on first use and kept until
    `release_workers` (each holds a CPU: other Ray work waits while they live)."""
    import ray

    context = ray.get_runtime_context()
    session = f"{context.get_node_id()}/{context.get_job_id()}"  # a restarted local cluster reuses job ids
    for stale in [k for k in _POOLS if not k.startswith(f"{session}:")]:
        del _POOLS[stale]  # actors of a session that has ended
    pool = _POOLS.setdefault(f"{session}:{gpu}", [])
    while len(pool) < num:
        pool.append(ray.remote(num_cpus=1, num_gpus=gpu)(EvalWorker).remote())
    return pool[:num]


def release_workers() -> None:
    """End every EvalWorker actor this process started, giving their CPUs back to the cluster."""
    import ray

    for pool in _POOLS.values():
        for actor in pool:
            if ray.is_initialized():
                ray.kill(actor)
    _POOLS.clear()


def play(cfg: EvalConfig, keep_workers: bool = False) -> dict:
    """Run the episodes in Ray actors (one Ray session: `worldloom.cluster.ray_session`).

    keep_workers: leave the actors up for the next evaluation in this session (the study's
    many evaluations); the caller then calls `release_workers`."""
    import ray

    from worldloom.cluster import actors_that_fit, num_actors, ray_session, user_error_of
    from worldloom.training import resolve_device

    resolution = resolve_resolution(cfg)
    device = str(resolve_device(cfg.device, "evaluating")) if not is_reference(cfg.policy) else "cpu"
    video_dir = str(cfg.out_dir / "videos") if cfg.videos else None
    filmed = set(range(cfg.videos))
    preflight(cfg, resolution)
    with ray_session(cfg.address, cfg.num_workers or None):
        actors_wanted = actors_that_fit(num_actors(cfg.num_workers), eval_actor_bytes(cfg), "evaluation actors",
                                        "agent eval")
        work = deal(cfg, actors_wanted)
        actors = worker_pool(len(work), 1 if device.startswith("cuda") else 0)
        calls = [a.run.remote((cfg.policy, cfg.task, resolution, min(cfg.envs_per_worker, len(w)), cfg.temperature,
                               device, video_dir, cfg.video_format, cfg.time_limit, cfg.runtime), w, filmed)
                 for a, w in zip(actors, work, strict=True)]
        try:
            results = wait_with_progress(calls, [len(w) for w in work], f"{cfg.task} on {len(work)} Ray actor(s)")
        except ray.exceptions.RayTaskError as err:
            if (user_error := user_error_of(err)) is not None:
                raise user_error from None
            raise
        finally:
            if not keep_workers:
                release_workers()
    return {"resolution": resolution, "actors": len(work), "results": results, "device": device}


def preflight(cfg: EvalConfig, resolution: int) -> None:
    """The player/task compatibility check (`check_compatible`) here, before any Ray actor starts:
    a mismatch is a one-line error in a fraction of a second, with nothing of Ray's start-up
    (its log lines included) before it. The actors check again on the envs they build."""
    from worldloom.envs.tasks import make_task_env

    check_video_memory(cfg, resolution)
    limit = {"max_steps": cfg.time_limit} if cfg.time_limit else {}
    env = make_task_env(cfg.task, height=resolution, width=resolution, **limit)
    try:
        check_compatible(frame_shape_of(cfg.policy), env, cfg.policy, cfg.task_spec.env_id)
    finally:
        env.close()
    if (note := no_task_note(cfg.policy, cfg.task)) is not None:
        print(f"agent eval: note: {note}", file=sys.stderr)


# A voxel world with its renderer's buffers, measured with psutil beside ACTOR_BASE_BYTES (2026-12-08: 46-150 MiB).
ENV_BYTES = 128 << 20


def eval_actor_bytes(cfg: EvalConfig) -> int:
    """About what one evaluation actor holds, in bytes: the worker with torch and the policy, and its envs."""
    from worldloom.cluster import ACTOR_BASE_BYTES, TORCH_BYTES

    return ACTOR_BASE_BYTES + TORCH_BYTES + cfg.envs_per_worker * ENV_BYTES


def check_video_memory(cfg: EvalConfig, resolution: int) -> None:
    """UserError (one line, before any actor starts) where the filmed episodes would not fit in this machine's free
    memory. Only a gif can: an mp4 is encoded step by step as the episode plays (EpisodeRunner), a few frames held
    whatever its length, but Pillow's GIF writer takes every frame at the end (worldloom.io.VideoWriter), so each
    filmed episode in play holds its frames until it ends: `gif_bytes_per_frame` of the upscaled frame with its
    action bar a step. Estimated for the longest episode (--time-limit, else the task's) and the filmed episodes in
    play at once over all actors, against MEMORY_HEADROOM (80%) of the memory free here (a cluster's own nodes are
    not asked)."""
    from worldloom.datasets.export import BAR_PX
    from worldloom.io import gif_bytes_per_frame
    from worldloom.training import MEMORY_HEADROOM, available_memory_bytes

    filmed = min(cfg.videos, cfg.episodes)
    if not filmed or cfg.video_format != "gif":
        return
    steps = (cfg.time_limit or cfg.task_spec.max_steps) + 1  # and the frame after the last action
    actors = max(1, min(cfg.num_workers or os.cpu_count() or 1, cfg.episodes))
    at_once = min(filmed, actors * cfg.envs_per_worker)  # filmed episodes in play together, over all actors
    frame = gif_bytes_per_frame(resolution * VIDEO_SCALE + BAR_PX, resolution * VIDEO_SCALE)
    need, have = steps * at_once * frame, available_memory_bytes(gpu=False)
    if need > MEMORY_HEADROOM * have:
        where = "--time-limit" if cfg.time_limit else "the task's time limit"
        raise UserError(f"--videos {cfg.videos} --video-format gif films episodes of up to {steps - 1} steps ({where}), "
                        f"each held in memory until written (a gif is written whole at the end): about "
                        f"{need / 2**30:.1f} GiB, but {have / 2**30:.1f} GiB free: use --video-format mp4 (written as "
                        "it plays), or film fewer or shorter episodes (--videos, --time-limit)")


def wait_with_progress(calls: list, episodes: list[int], what: str) -> list:
    """ray.get(calls) in their order, with a bar over the episodes (`what` beside it) that advances as each
    actor's share ends."""
    import ray

    size = dict(zip(calls, episodes, strict=True))
    pending = list(calls)
    with tqdm(total=sum(episodes), desc="agent eval", unit="episode", postfix=what, dynamic_ncols=True) as bar:
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # an actor's error surfaces here, at once
                bar.update(size[done[0]])
        except BaseException:
            bar.leave = False  # wiped: the error is the one line left
            raise
    return ray.get(calls)


def summarize(cfg: EvalConfig, played: dict, wall_s: float) -> dict:
    """eval.json: success rate (Wilson's interval) and mean return (percentile bootstrap) with their 95%
    intervals, and every episode."""
    from worldloom.envs.tasks import short_name

    rows = sorted((r for res in played["results"] for r in res["episodes"]), key=lambda r: r["index"])
    success = np.array([r["success"] for r in rows], dtype=np.float64)
    returns = np.array([r["return"] for r in rows], dtype=np.float64)
    steps = sum(res["steps"] for res in played["results"])
    cpu_s = sum(res["cpu_s"] for res in played["results"])
    return {"policy": cfg.policy, "player": spec_name(cfg.policy), "policy_id": policy_id(cfg.policy),
            "task": cfg.task_spec.env_id, "mode": "env", "episodes": len(rows),
            "conditioning": conditioning(cfg.policy, short_name(cfg.task)),
            "success_rate": dict(zip(("mean", "low", "high"), wilson_ci(success), strict=True)),
            "return": dict(zip(("mean", "low", "high"), bootstrap_ci(returns, cfg.seed), strict=True)),
            "steps": steps, "cpu_s": round(cpu_s, 2), "wall_s": round(wall_s, 2),
            "steps_per_cpu_s": round(steps / max(cpu_s, 1e-9), 1), "resolution": played["resolution"],
            "actors": played["actors"], "device": played.get("device", "cpu"),  # the one used: config says the one asked for
            "runtime": played["results"][0].get("runtime") if played["results"] else None,  # None: a reference player
            "videos": [r["video"] for r in rows if r["video"]], "behaviour": mean_behaviour(rows),
            "config": to_json_dict(cfg), "rows": rows}


def mean_behaviour(rows: list[dict]) -> dict | None:
    """The mean of the episodes' `behaviour` (BEHAVIOUR), each figure over the episodes that have it;
    None where no episode does (an env without the engine's pose)."""
    found = [r["behaviour"] for r in rows if r.get("behaviour")]
    if not found:
        return None
    return {k: (round(float(np.mean(v)), 4) if (v := [b[k] for b in found if b.get(k) is not None]) else None)
            for k in BEHAVIOUR}


def policy_id(spec: str) -> str:
    """The exact weights of a policy run (its checkpoint id), or the reference's name."""
    if is_reference(spec):
        return spec
    from .checkpoint import checkpoint_id

    return checkpoint_id(spec)


def evaluate(cfg: EvalConfig, keep_workers: bool = False) -> dict:
    """Play (or dream) the episodes, write OUT/eval.json, and return the summary (keep_workers: `play`)."""
    resolve_resolution(cfg)  # a --policy that is no policy run says so first (OUT defaults to a folder inside it)
    check_out(cfg.out or cfg.out_dir, "eval")  # before any episode is played; a report of its own kind is rewritten
    replacing = check_same_report(cfg)
    if cfg.in_world_model and cfg.scorer:
        check_out(cfg.scorer, "task_scorer", flag="--scorer")  # a new one is trained into it (agent/dream.py)
    earlier = listed_videos(cfg.out_dir)
    if cfg.in_world_model:
        from .dream import dream

        summary = dream(cfg)
        prune_videos(cfg.out_dir, summary["videos"], earlier)
        note_replaced(cfg, replacing)
        return summary
    note_dream_flags(cfg)
    t0 = time.perf_counter()
    played = play(cfg, keep_workers)
    note_runtime({r.get("runtime_note", "") for r in played["results"]})
    summary = summarize(cfg, played, time.perf_counter() - t0)
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "eval.json", summary)
    prune_videos(out, summary["videos"], earlier)
    note_replaced(cfg, replacing)
    summary["out"] = str(out)
    return summary


def note_dream_flags(cfg: EvalConfig) -> None:
    """One line on stderr naming the dreaming-only flags given to a closed-loop evaluation (they change nothing)."""
    defaults = EvalConfig(policy=cfg.policy, task=cfg.task)
    given = sorted(f"--{k.replace('_', '-')}" for k in DREAM_FIELDS if getattr(cfg, k) != getattr(defaults, k))
    if given:
        print(f"agent eval: note: {', '.join(given)} only apply with --in-world-model (dreaming); this evaluation plays "
              "the env", file=sys.stderr)


def check_same_report(cfg: EvalConfig) -> list[str]:
    """UserError (one line, before any episode) when OUT/eval.json reports another player, task or mode (closed
    loop, dreamt): a folder holds one player's evaluation on one task, and evaluating into it again replaces that
    report and its videos, which is how a player and task are evaluated anew, never how another one is added
    (a new-user trial, session 44, wrote the expert over a study's bc-env report). A policy run is told by its
    weights (`policy_id`), not its folder's name alone: another run of the same name is refused too (a new-user
    trial, 2026-12-07, replaced one `bc`'s report with another's without a word), and the same run folder trained
    again since is named in the note. Returns, for the same player's report made otherwise, what differs (its
    flags, and `checkpoint (ID then)` for other weights of the same run; `note_replaced` says so once the new one
    is written), else []."""
    path = cfg.out_dir / "eval.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        return []  # none yet (an unreadable one is rewritten)
    if not isinstance(before, dict):
        return []
    mode = "dream" if cfg.in_world_model else "env"
    mine = {"player": spec_name(cfg.policy), "task": cfg.task_spec.env_id, "mode": mode}
    theirs = {k: before.get(k) for k in mine}
    if theirs != mine:
        what = {"env": "played", "dream": "dreamt"}
        held = (f"the evaluation of {theirs['player']} on {theirs['task']} ({what[theirs['mode']]}), not of"
                if theirs["mode"] in what else "another command's evaluation report (eval.json, e.g. `idm eval`'s), not"
                " the evaluation of")
        raise UserError(f"--out {cfg.out_dir} holds {held} {mine['player']} on {mine['task']} ({what[mode]}): give a "
                        "new --out (a folder holds one player's evaluation of one task), or remove that folder first")
    weights = other_weights(cfg, before)
    mine_cfg, their_cfg = json.loads(json.dumps(to_json_dict(cfg))), before.get("config")
    if not isinstance(their_cfg, dict):
        return weights + (["settings"] if their_cfg != mine_cfg else [])
    same = {"policy", "task", "out"}  # the same player, task and folder (checked above), perhaps spelled otherwise
    return weights + [f"--{k.replace('_', '-')}" for k in mine_cfg if k not in same and mine_cfg[k] != their_cfg.get(k)] + \
        [f"--{k.replace('_', '-')}" for k in their_cfg if k not in mine_cfg and k not in same]


def other_weights(cfg: EvalConfig, before: dict) -> list[str]:
    """For an earlier report (`before`, OUT/eval.json) of a player of the same name: [] where it played the same
    weights (or names none: a reference, a report from before `policy_id`), `["checkpoint (ID then)"]` where it
    played the same run folder's earlier weights (OUT inside the run, or its `policy` path, as given then, the same
    folder as --policy now); UserError (one line) where it played another run of the same name."""
    theirs = before.get("policy_id")
    if is_reference(cfg.policy) or not isinstance(theirs, str) or theirs == (mine := policy_id(cfg.policy)):
        return []
    run = Path(cfg.policy).resolve()
    their_path = before.get("policy")
    if run in cfg.out_dir.resolve().parents or (isinstance(their_path, str) and Path(their_path).resolve() == run):
        return [f"checkpoint ({theirs} then)"]
    raise UserError(f"--out {cfg.out_dir} holds the evaluation of {theirs} (--policy {their_path}) on "
                    f"{cfg.task_spec.env_id}, not of {mine} (--policy {cfg.policy}), another policy run of the same name: "
                    "give a new --out (a folder holds one player's evaluation of one task), or remove that folder first")


def note_replaced(cfg: EvalConfig, changed: list[str]) -> None:
    """Say, once the new report is written, that it replaced one made with other settings (`changed`: their flags)."""
    if changed:
        print(f"agent eval: note: replaced the earlier evaluation of {spec_name(cfg.policy)} on {cfg.task_spec.env_id} "
              f"in {cfg.out_dir} (made with another {', '.join(changed)})", file=sys.stderr)


def note_runtime(notes: set[str]) -> None:
    """One line, from the driver, for each reason the actors (or dreaming's players) played on torch under --runtime auto."""
    for note in sorted(n for n in notes if n):
        print(f"agent eval: note: played on torch: {note}", file=sys.stderr)


def listed_videos(out: Path) -> list[str]:
    """The file names of the videos OUT/eval.json lists (none without a readable one)."""
    try:
        videos = json.loads((Path(out) / "eval.json").read_text()).get("videos", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [Path(v).name for v in videos if isinstance(v, str)] if isinstance(videos, list) else []


def prune_videos(out: Path, keep: list[str], earlier: list[str]) -> list[Path]:
    """Remove the videos an earlier evaluation wrote in OUT/videos (`earlier`: the names its eval.json
    listed) that this run's eval.json does not list, once the new eval.json is written: a folder evaluated
    again (another policy, fewer `--videos`) shows only the run its eval.json describes. Nothing else is
    touched: a user's own videos in a folder given as --out stay (a new-user trial, session 32, lost
    them). Returns what it removed."""
    folder = Path(out) / "videos"
    kept = {Path(v).name for v in keep}
    stale = [folder / name for name in dict.fromkeys(earlier) if name not in kept and Path(name).suffix in (".mp4", ".gif")]
    stale = [p for p in stale if p.is_file()]
    for p in stale:
        p.unlink()
    return stale


def guided(s: dict) -> str:
    """", guidance G" for a dream sampled with guidance on actions, else ""."""
    g = s.get("guidance", 1.0)
    return "" if g in (None, 1.0) else f", guidance {g:g}"


def scorer_name(head: str | None) -> str:
    """eval.json's `scorer_head` in words (agent/dream.py SCORER_NAMES; a run from before it was recorded: critic)."""
    from .dream import SCORER_NAMES

    return SCORER_NAMES.get(head, "critic")


def format_summary(s: dict) -> str:
    """One line: player, task, success rate and mean return (dreaming: imagined and real return) with intervals."""
    if s["mode"] == "dream":
        im, real, cr = s["imagined"], s["real"], s["critic_real"]
        return (f"{s['player']:<22} {s['task']:<26} imagined {im['mean']:.3f} [{im['low']:.3f}, {im['high']:.3f}]  "
                f"{scorer_name(s.get('scorer_head'))} on real frames {cr['mean']:.3f}  "
                f"real {real['mean']:.3f} [{real['low']:.3f}, {real['high']:.3f}]  ({counted(s['episodes'], 'episode')}, "
                f"{counted(s['horizon'], 'step')} dreamt{guided(s)})")
    sr, ret = s["success_rate"], s["return"]
    return (f"{s['player']:<22} {s['task']:<26} success {sr['mean']:.2f} [{sr['low']:.2f}, {sr['high']:.2f}]  "
            f"return {ret['mean']:.2f} [{ret['low']:.2f}, {ret['high']:.2f}]  ({counted(s['episodes'], 'episode')}, {s['mode']})")


def main(cfg: EvalConfig) -> dict:
    summary = evaluate(cfg)
    print(format_summary(summary))
    print(f"agent eval: eval.json{' and videos' if summary.get('videos') else ''} in {summary['out']}", file=sys.stderr)
    return summary
