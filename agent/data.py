"""Behaviour-cloning data: episodes of frames and actions from WorldLoom datasets, and windows of them.

    episodes, sources = load_bc_episodes(["data/truth", "data/pseudo"], labels="dataset")
    batch = sample_windows(episodes, batch_size=16, num_frames=32, rng=np.random.default_rng(0))

Episodes are read whole into memory by the IDM's loader (`worldloom.idm.data`), as the IDM's
training does. `labels="dataset"` trains on the actions the datasets carry, whatever made them
(label_source `env`: recorded by the env; `idm`: pseudo-labels); `labels="noop"` replaces every
action with the no-op (the baseline that shows what frames alone teach). A window may run past
an episode's end (short episodes, such as a FindWater episode that ended at the water): those
steps are masked out of the loss, so no episode is too short to learn from. Each window carries
its episode's task (`data_tasks`: the tasks among the datasets' envs), which a task-conditioned
policy takes as an embedding (PolicyConfig.tasks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldloom.actions import FPS, NUM_BUTTONS, camera_to_bin_position
from worldloom.errors import UserError
from worldloom.idm import data as idm_data
from worldloom.idm.data import Episode

LABELS = ("dataset", "noop")


@dataclass(frozen=True)
class SourceInfo:
    """What one dataset holds, for the run's config (its labels' provenance)."""

    path: str
    num_episodes: int
    num_steps: int
    label_sources: tuple[str, ...]  # env, idm, none
    label_models: tuple[str, ...]  # the IDM checkpoints that made idm labels

    def to_json(self) -> dict:
        return {"path": self.path, "num_episodes": self.num_episodes, "num_steps": self.num_steps,
                "label_sources": list(self.label_sources), "label_models": list(self.label_models)}


def describe(path: str) -> SourceInfo:
    """Label sources and models of a dataset; UserError if it is missing, unreadable or empty."""
    ds = idm_data.open_dataset(path)
    table = ds.episodes
    if table.num_rows == 0:
        raise UserError(f"{path} holds no episodes: record some with `worldloom capture run --out {path}`")
    column = lambda name: table.column(name).to_pylist() if name in table.column_names else []  # noqa: E731
    sources = tuple(sorted({str(s) for s in column("label_source") if s}))
    models = tuple(sorted({str(m) for m in column("label_model") if m}))
    return SourceInfo(str(path), table.num_rows, int(sum(column("num_steps") or [0])), sources, models)


def load_bc_episodes(paths: tuple[str, ...] | list[str], labels: str = "dataset") -> tuple[list[Episode], list[SourceInfo]]:
    """Every usable episode of `paths` and what each dataset holds.

    UserError (one line, naming the dataset) for an empty dataset, or, with labels "dataset", for
    one without labels (label_source none: label it with the IDM, or train with --labels noop)."""
    if labels not in LABELS:
        raise UserError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
    for ds in idm_data.open_datasets(paths, same_frames=True):  # none twice, one frame size and fps
        if float(ds.spec.fps) != float(FPS):  # step t's action is what was done for 1/fps s after frame t
            raise UserError(f"{ds.location.uri} holds {ds.spec.fps:g} steps per second; a policy acts once per step of "
                            f"the game's {FPS} (every env, closed-loop eval): record, ingest or label the footage at "
                            f"--fps {FPS}")
    infos = [describe(p) for p in paths]
    episodes: list[Episode] = []
    for info in infos:
        if labels == "dataset" and not set(info.label_sources) - {"none"}:
            raise UserError(f"{info.path} has no action labels (label_source none): label it with "
                            f"`worldloom idm label --data {info.path} --model IDM_RUN --out DIR`, or train the "
                            "no-op baseline with --labels noop")
        loaded = idm_data.load_episodes([info.path], require_labels=labels == "dataset", label_sources=("env", "idm"))
        for ep in loaded:
            if labels == "noop":
                ep.buttons = np.zeros((ep.num_steps, NUM_BUTTONS), bool)
                ep.camera = np.zeros((ep.num_steps, 2), np.float32)
            episodes.append(ep)
    return episodes, infos


def data_tasks(paths: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The tasks (short names, envs/tasks.py) whose worlds recorded episodes of `paths`, in the
    registry's order: the envs column of each dataset's episodes table (a label or split keeps it)."""
    from worldloom.envs.tasks import TASKS

    envs = set()
    for ds in idm_data.open_datasets(paths):
        table = ds.episodes
        if "env" in table.column_names:
            envs.update(str(e) for e in table.column("env").to_pylist() if e)
    return tuple(t for t in TASKS if t in envs)


def sample_windows(episodes: list[Episode], batch_size: int, num_frames: int, rng: np.random.Generator,
                   tasks: tuple[str, ...] = (), balance: bool = False) -> dict[str, np.ndarray]:
    """A batch of windows of `num_frames` steps, episodes drawn in proportion to their length; with
    `balance`, every world (the episodes' env) is drawn equally often first, then its episodes by
    length (a task whose episodes end at the goal, FindWater's, recorded a quarter of the others' steps).

    -> frames (B, T, H, W, 3) uint8, buttons (B, T, 20) float32, camera_pos (B, T, 2) float32
    (continuous mu-law bin positions), mask (B, T) bool (False past an episode's end), task (B,)
    int64: 1 + the place of the episode's env in `tasks`, 0 where it is none of them."""
    lengths = np.array([ep.num_steps for ep in episodes], dtype=np.float64)
    weights = lengths / lengths.sum()
    if balance:
        envs = [ep.env for ep in episodes]
        per_env = {e: weights[[k for k, x in enumerate(envs) if x == e]].sum() for e in set(envs)}
        weights = np.array([w / per_env[e] / len(per_env) for w, e in zip(weights, envs, strict=True)])
    picks = rng.choice(len(episodes), size=batch_size, p=weights / weights.sum())
    h, w = episodes[0].frames.shape[1:3]
    out = {"frames": np.zeros((batch_size, num_frames, h, w, 3), np.uint8),
           "buttons": np.zeros((batch_size, num_frames, NUM_BUTTONS), np.float32),
           "camera_pos": np.full((batch_size, num_frames, 2), 5.0, np.float32),
           "mask": np.zeros((batch_size, num_frames), bool),
           "task": np.zeros(batch_size, np.int64)}
    for b, i in enumerate(picks):
        ep = episodes[i]
        out["task"][b] = tasks.index(ep.env) + 1 if ep.env in tasks else 0
        start = int(rng.integers(0, max(ep.num_steps - num_frames, 0) + 1))
        n = min(num_frames, ep.num_steps - start)
        out["frames"][b, :n] = ep.frames[start:start + n]
        out["buttons"][b, :n] = ep.buttons[start:start + n]
        out["camera_pos"][b, :n] = camera_to_bin_position(ep.camera[start:start + n])
        out["mask"][b, :n] = True
    return out


def fixed_windows(episodes: list[Episode], batch_size: int, num_frames: int, seed: int,
                  tasks: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The same validation windows at every evaluation (empty without episodes)."""
    if not episodes:
        return {}
    return sample_windows(episodes, batch_size, num_frames, np.random.default_rng([seed, 7919]), tasks)
