"""The capture driver: expand the job, skip what is committed, fan out to Ray actors, commit.

    worldloom capture --env voxel --player mixture --episodes 8 --steps 200 --out data/run1
    worldloom capture ... --address 127.0.0.1:6379        # join a running Ray cluster
    python -c "from worldloom.capture import run, CaptureConfig; run(CaptureConfig(out='data/run1'))"

Exactly once: episodes are pure functions of their specs; actors write shards that enter the
dataset only when this driver commits them, and a commit skips nothing twice because the driver
only submits episodes that `committed_episode_ids` does not list. A killed actor is restarted by
Ray and its task (episode) run again under a new writer id; a killed driver leaves whole but
uncommitted shards behind, which the next run ignores while it records those episodes again.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from worldloom.actions import FPS
from worldloom.cluster import actors_that_fit, num_actors, ray_session, store_credentials
from worldloom.datasets import DatasetWriter, commit_shards, committed_episode_ids, storage
from worldloom.datasets.jobs import job_lock, sweep_orphans
from worldloom.datasets.repair import damaged_shards
from worldloom.errors import UserError
from worldloom.folders import check_out
from worldloom.paths import child, redact_text, shell_word

from .config import (
    CaptureConfig,
    EpisodeSpec,
    batch_specs,
    config_mismatch,
    dataset_config,
    expand_specs,
)
from .recorder import MAX_RESTARTS, recorder_memory_bytes, remote_recorder

COMMIT_EVERY_S = 2.0  # a killed driver loses at most this much committed work
TASKS_IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: an actor never waits for the driver


class CaptureFailed(RuntimeError):
    """The job stopped (an actor died for good, an env crashed); committed episodes are intact."""


@dataclass
class CaptureResult:
    """What a capture run did; `path` is the dataset."""

    path: str
    truth_path: str | None
    num_episodes: int  # in the job
    num_skipped: int  # committed before this run started
    num_recorded: int = 0  # recorded and committed by this run
    num_frames: int = 0  # frames recorded by this run (per dataset)
    duration_s: float = 0.0  # wall time of the recording (Ray start excluded)
    play_s: float = 0.0  # summed over actors: env steps and player decisions
    write_s: float = 0.0  # summed over actors: frame encoding and Parquet writing
    init_s: float = 0.0  # summed over recorder processes: making the env and the writers
    cpu_s: float = 0.0  # CPU time of the actors' tasks plus the driver's loop (not Ray's own processes)
    num_orphans_removed: int = 0  # uncommitted shards / temporary files of killed writers deleted
    node_ids: set[str] = field(default_factory=set)
    writer_ids: set[str] = field(default_factory=set)  # one per recorder process (a restart gets a new one)
    pids: set[int] = field(default_factory=set)  # recorder processes whose shards were committed


def target_roots(cfg: CaptureConfig) -> dict[str, str]:
    """label_source -> dataset root: the footage (and the truth when actions are stripped)."""
    if cfg.strip_actions is not None:
        return {"none": _absolute(cfg.out), "env": _absolute(cfg.strip_actions)}
    return {"env": _absolute(cfg.out)}


def _absolute(root: str) -> str:
    # Actors run in their own working directories (and maybe on other machines).
    return root if "://" in root else os.path.abspath(os.path.expanduser(root))


def check_env(cfg: CaptureConfig) -> None:
    """Build and reset the env once here: a size it does not support, or a missing install,
    is a one-line error before anything is written or any actor starts."""
    from worldloom.envs import make_env

    try:
        env = make_env(cfg.env, height=cfg.resolution, width=cfg.resolution, **cfg.env_options)
        env.reset(seed=0)
        env.close()
    except (ValueError, ImportError, UserError) as err:
        raise UserError(f"env {cfg.env!r} at resolution {cfg.resolution}: {err}") from None


def check_target(cfg: CaptureConfig, label: str, root: str) -> set[str]:
    """UserError naming the difference unless `root` is new, empty or this job's dataset; its committed
    episode ids (none for a new one). Writes nothing."""
    check_out(root, "dataset")
    loc = storage.resolve(root)
    manifest = storage.read_manifest(loc)
    if manifest is None and loc.is_local and os.path.isdir(loc.path) and _has_files(loc.path):
        raise UserError(f"{redact_text(root)}: the directory is not empty and holds no dataset; give a new or empty directory")
    if manifest is None:
        return set()
    problem = config_mismatch(cfg, label, manifest.get("config") or {})
    if problem:
        raise UserError(f"{redact_text(root)}: holds a different dataset ({problem}); write to a new directory "
                        f"or run the job that made it")
    return committed_episode_ids(root)


def prepare_target(cfg: CaptureConfig, label: str, root: str) -> set[str]:
    """Create the dataset at `root` or check that it is this job's (`check_target`: UserError, nothing
    written); its committed episode ids."""
    check_target(cfg, label, root)
    loc = storage.resolve(root)
    manifest = storage.read_manifest(loc)
    try:
        DatasetWriter(root, height=cfg.resolution, width=cfg.resolution, fps=FPS, codec=cfg.codec,
                      config=dataset_config(cfg, label) if manifest is None else None,
                      writer_id="driver", autocommit=False).close()
        _probe_writable(loc)
    except OSError as err:
        raise UserError(f"{redact_text(root)}: cannot write the dataset here ({redact_text(str(err))})") from None
    return committed_episode_ids(root)


def check_skipped_shards(roots: dict[str, str], committed: dict[str, set[str]], wanted: set[str]) -> None:
    """UserError if a shard holding an episode this run would skip is missing or has another size
    than dataset.json says (cheap: no byte is read); `worldloom dataset repair` drops them."""
    for label, root in roots.items():
        bad = damaged_shards(root, committed[label] & wanted)
        if bad:
            rel, problem = next(iter(bad.items()))
            more = f" (and {len(bad) - 1} more shard(s))" if len(bad) > 1 else ""
            raise UserError(f"{child(redact_text(str(root)), rel)}: {problem}{more}; its episodes count as recorded, so run "
                            f"`worldloom dataset repair {shell_word(root)}`, then this command again to re-record them")


def _has_files(path: str) -> bool:
    return any(not name.startswith(".") for name in os.listdir(path))


def _probe_writable(loc: storage.Location) -> None:
    probe = loc.join("frames", f".probe-{uuid.uuid4().hex[:8]}.tmp")
    with loc.fs.open_output_stream(probe) as out:
        out.write(b"ok")
    loc.fs.delete_file(probe)


def plan_tasks(specs: list[EpisodeSpec], committed: dict[str, set[str]], per_task: int) -> list[list[tuple]]:
    """Work items (spec, labels still missing), batched `per_task` episodes to a task/shard."""
    items = []
    for spec in specs:
        labels = tuple(label for label, done in committed.items() if spec.episode_id not in done)
        if labels:
            items.append((spec, labels))
    return batch_specs(items, per_task)


def start_recorders(cfg: CaptureConfig, roots: dict[str, str], num_tasks: int, run_token: str) -> list:
    """min(num_workers, tasks, cluster CPUs) recorder actors, spread over the cluster's nodes."""
    import ray

    cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
    wanted = num_actors(cfg.num_workers)  # 0: one per CPU of the cluster
    count = max(1, min(wanted, num_tasks, cluster_cpus or wanted))
    if cfg.num_workers and count < min(cfg.num_workers, num_tasks):
        tqdm.write(f"worldloom capture: the cluster has {cluster_cpus} CPUs; starting {count} recorders, not {cfg.num_workers}")
    count = actors_that_fit(count, recorder_memory_bytes(cfg.resolution, cfg.resolution, cfg.steps), "recorders",
                            "capture run")
    environ = store_credentials(roots.values())  # an actor argument, never a runtime_env (logged to disk)
    actor_class = remote_recorder()
    return [
        actor_class.options(scheduling_strategy="SPREAD").remote(
            roots, cfg.env, cfg.resolution, cfg.resolution, FPS, cfg.split, f"{run_token}-w{i}",
            env_options=cfg.env_options, environ=environ,
        )
        for i in range(count)
    ]


def capture(cfg: CaptureConfig) -> CaptureResult:
    """Record every episode of `cfg` not yet committed; returns what this run did."""
    roots = target_roots(cfg)
    specs = expand_specs(cfg)
    check_env(cfg)
    found = {label: check_target(cfg, label, root) for label, root in roots.items()}
    # Ray is joined (or started) before the dataset is created: a cluster that cannot be reached (or
    # refuses this driver) leaves no empty dataset behind whose config would hold the next run to this
    # one's flags. A job with nothing left to record starts no Ray.
    needs_ray = bool(plan_tasks(specs, found, cfg.episodes_per_shard))
    with ray_session(cfg.address, cfg.num_workers or None) if needs_ray else contextlib.nullcontext():
        return _capture_locked(cfg, roots, specs)


def _capture_locked(cfg: CaptureConfig, roots: dict[str, str], specs: list[EpisodeSpec]) -> CaptureResult:
    committed = {label: prepare_target(cfg, label, root) for label, root in roots.items()}
    with job_lock(list(roots.values()), "capture run"):
        committed = {label: committed_episode_ids(root) for label, root in roots.items()}  # now locked
        check_skipped_shards(roots, committed, {s.episode_id for s in specs})
        tasks = plan_tasks(specs, committed, cfg.episodes_per_shard)
        wanted = {s.episode_id for s in specs}
        result = CaptureResult(
            path=roots[cfg.label_source], truth_path=roots.get("env") if cfg.strip_actions else None,
            num_episodes=len(specs), num_skipped=min(len(wanted & ids) for ids in committed.values()),
        )
        run_token, started_at = uuid.uuid4().hex[:6], time.time() - 1.0  # 1 s of clock skew
        if tasks:
            with ray_session(cfg.address, cfg.num_workers or None):  # the one opened above, unless that had nothing to do
                actors = start_recorders(cfg, roots, len(tasks), run_token)
                try:
                    _drive(cfg, roots, actors, tasks, result)
                finally:
                    import ray

                    for actor in actors:
                        ray.kill(actor)
        # Also when there was nothing to record: a killed driver's actors may have finished a
        # last shard after it died.
        result.num_orphans_removed = sum(sweep_orphans(root, run_token, started_at) for root in roots.values())
    return result


def _drive(cfg: CaptureConfig, roots: dict[str, str], actors: list, tasks: list, result: CaptureResult) -> None:
    """Keep every actor busy, gather shard metadata, commit it every few seconds."""
    import ray

    queue = deque(tasks)
    pending: dict = {}  # ObjectRef -> actor index
    load = [0] * len(actors)
    uncommitted: dict[str, list[dict]] = {label: [] for label in roots}
    start, last_commit = time.perf_counter(), float("-inf")  # the first results commit at once
    cpu_start = time.process_time()
    bar = tqdm(total=result.num_episodes, initial=result.num_skipped, unit="episode", disable=not cfg.progress,
               desc="capture", dynamic_ncols=True)

    def submit() -> None:
        for _ in range(TASKS_IN_FLIGHT_PER_ACTOR):
            for i, actor in enumerate(actors):
                if queue and load[i] < TASKS_IN_FLIGHT_PER_ACTOR:
                    pending[actor.record.remote(queue.popleft())] = i
                    load[i] += 1

    def commit() -> None:
        for label, infos in uncommitted.items():
            if infos:
                try:
                    commit_shards(roots[label], infos)
                except OSError as err:
                    raise UserError(f"{redact_text(roots[label])}: cannot commit shards ({err}); the episodes committed "
                                    f"before are intact: fix it and run the same command again") from None
        result.num_recorded += len({row["episode_id"] for infos in uncommitted.values()
                                    for info in infos for row in info["episodes"]})
        for infos in uncommitted.values():
            infos.clear()

    try:
        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=COMMIT_EVERY_S)
            if ready:  # gather everything else that is done too
                rest = [r for r in pending if r not in ready]
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
            failures = []
            for ref in ready:
                load[pending.pop(ref)] -= 1
                try:
                    out = _get(ref, roots)
                except (UserError, CaptureFailed) as err:
                    failures.append(err)  # the others that finished are still committed below
                    continue
                for label, infos in out["shards"].items():
                    uncommitted[label].extend(infos)
                _account(result, out)
                bar.update(out["episodes"])
            if failures:
                raise failures[0]
            result.duration_s = time.perf_counter() - start
            bar.set_postfix(frames_per_s=f"{result.num_frames / max(result.duration_s, 1e-9):.0f}")
            if time.perf_counter() - last_commit >= COMMIT_EVERY_S or not pending:
                commit()
                last_commit = time.perf_counter()
            submit()
    finally:
        for ref in pending:  # on an error: drop queued work quietly before the actors are killed
            ray.cancel(ref)
        try:
            commit()  # whatever finished before an error is kept
        finally:
            bar.close()
    result.duration_s = time.perf_counter() - start
    result.cpu_s += time.process_time() - cpu_start


def _account(result: CaptureResult, out: dict) -> None:
    result.num_frames += out["frames"]
    result.play_s += out["play_s"]
    result.write_s += out["write_s"]
    result.cpu_s += out["cpu_s"]
    if out.get("node_id"):
        result.node_ids.add(out["node_id"])
    if out["writer_id"] not in result.writer_ids:
        result.init_s += out["init_s"]
    result.writer_ids.add(out["writer_id"])
    result.pids.add(out["pid"])


def _get(ref, roots: dict[str, str]) -> dict:
    """The task's result; its failure as a UserError (bad input, no space) or CaptureFailed."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        if isinstance(cause, OSError):
            raise UserError(f"writing to {redact_text(', '.join(roots.values()))} failed: {cause}; the committed episodes "
                            f"are intact: fix it and run the same command again to finish") from None
        raise CaptureFailed(f"a recorder failed: {cause!r}\n{err}") from None
    except ray.exceptions.RayActorError as err:
        raise CaptureFailed(f"a recorder died {1 + MAX_RESTARTS} times or could not start; the committed "
                            f"episodes are intact, run the same command again to finish ({err})") from None


def run(cfg: CaptureConfig) -> Path | str:
    """Record the job and return the dataset: a Path for a local directory, else the URI."""
    path = capture(cfg).path
    return path if "://" in path else Path(path)
