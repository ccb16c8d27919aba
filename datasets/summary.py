"""What is in a dataset: `summarize(root)` for `worldloom dataset inspect` (reads no frames).

    worldloom dataset inspect data/run1 [--json]
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from worldloom.config import flag_name
from worldloom.errors import UserError
from worldloom.paths import shell_word
from worldloom.progress import counted

from . import schema, storage
from .jobs import job_running
from .reader import Dataset

CAMERA_EDGES_DEG = (-180, -10, -5, -2, -0.5, -0.05, 0.05, 0.5, 2, 5, 10, 180)


def summarize(root: str | os.PathLike | Dataset) -> dict:
    """Counts, size, action histograms and label summary, JSON-able."""
    ds = root if isinstance(root, Dataset) else Dataset(root)
    spec, manifest = ds.spec, ds.manifest
    num_frames = ds.num_frames
    size_bytes = sum(s["size_bytes"] for s in manifest["shards"])
    episodes = ds.episodes.to_pylist()
    out = {
        "path": ds.location.uri, "format_version": manifest["format_version"],
        "height": spec.height, "width": spec.width, "fps": spec.fps, "codec": spec.codec,
        "episodes": len(episodes), "frames": num_frames, "hours": num_frames / spec.fps / 3600,
        "shards": len(manifest["shards"]), "size_bytes": size_bytes,
        "bytes_per_frame": size_bytes / num_frames if num_frames else 0.0,
        "episode_steps": _stats([e["num_steps"] for e in episodes]),
        "label_sources": {k: {"episodes": v, "frames": sum(e["num_steps"] for e in episodes if e["label_source"] == k)}
                          for k, v in collections.Counter(e["label_source"] for e in episodes).items()},
        "splits": category_counts(e["split"] for e in episodes),
        "envs": category_counts(e["env"] for e in episodes),
        "players": category_counts(e["player"] for e in episodes),
    }
    out.update(completion(ds, len(episodes)))
    out.update(action_summary(ds))
    out["state_rows"] = state_summary(ds)
    return out


# Capture fields that say how a job runs, not what it records: left out of the command that finishes it.
_RUN_FIELDS = ("out", "strip_actions", "num_workers", "workers", "address", "episodes_per_shard", "progress")


# A category an episode leaves null (a plain video's player, a split before `dataset split`).
UNSET = "unset"


def category_counts(values) -> dict[str, int]:
    """Episodes per value of a category column, a null one counted as `unset` (never `None`)."""
    return dict(collections.Counter(UNSET if v is None else str(v) for v in values))


def completion(ds: Dataset, num_episodes: int) -> dict:
    """Whether the job that makes the dataset is done: `job_running` (it holds the dataset's lock
    now), `planned_episodes` (a capture's --episodes; None when unknown), `complete`, and
    `finish`, the command that completes it (None when complete or unknown)."""
    running = job_running(ds.location.uri)
    config = ds.manifest.get("config")
    capture = config.get("capture") if isinstance(config, dict) else None
    planned = capture.get("episodes") if isinstance(capture, dict) else None
    planned = planned if isinstance(planned, int) else None
    complete = not running and (planned is None or num_episodes >= planned)
    finish = None
    if not complete and planned is not None:
        flags = [f"{flag_name(k)} {v}" for k, v in capture.items() if k not in _RUN_FIELDS and v is not None and v is not False]
        out, truth = ds.location.uri, capture.get("strip_actions")
        if truth and config.get("label_source") == "env":  # the true actions of a footage job
            out, truth = pair_of(ds, capture, "none"), ds.location.uri
        elif truth:
            truth = pair_of(ds, capture, "env")
        flags += [f"--strip-actions {shell_word(truth)}"] if truth else []
        finish = f"worldloom capture run {' '.join(flags)} --out {shell_word(out)}"
    return {"job_running": running, "planned_episodes": planned, "complete": complete, "finish": finish}


def pair_of(ds: Dataset, capture: dict, label_source: str) -> str:
    """Where the other dataset of a `--strip-actions` job (the footage: `label_source` "none"; the truth: "env")
    is now: the path the job stored (as typed, relative to where it ran) where it holds that dataset, else the
    folder of the same name beside `ds` (a pair moved or copied together), else the stored path."""
    stored = str(capture.get("out" if label_source == "none" else "strip_actions"))
    candidates = [stored]
    if ds.location.is_local and "://" not in stored:
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(ds.location.path)), os.path.basename(stored)))
    for path in candidates:
        try:
            config = (storage.read_manifest(storage.resolve(path)) or {}).get("config") or {}
        except (OSError, ValueError, UserError):
            continue
        other = config.get("capture") if isinstance(config, dict) else None
        if config.get("label_source") == label_source and isinstance(other, dict) and \
                {k: v for k, v in other.items() if k not in _RUN_FIELDS} == \
                {k: v for k, v in capture.items() if k not in _RUN_FIELDS}:
            return path
    return stored


def state_summary(ds: Dataset) -> dict:
    """Rows with a value, per `state_*` column (format version 2; empty for version 1)."""
    if ds.version < 2:
        return {}
    counts = dict.fromkeys(schema.STATE_COLUMNS, 0)
    for shard in ds.manifest["shards"]:
        table = ds.read_shard(shard["path"], list(schema.STATE_COLUMNS))
        for name in schema.STATE_COLUMNS:
            counts[name] += table.num_rows - table.column(name).null_count
    return {name: n for name, n in counts.items() if n}


def action_summary(ds: Dataset) -> dict:
    """Press rate per button, camera histograms, and label confidence, over labeled rows."""
    columns = list(schema.ACTION_COLUMNS) + ["label_source", "label_confidence"]
    presses = np.zeros(schema.NUM_BUTTONS, np.int64)
    camera_counts = np.zeros((2, len(CAMERA_EDGES_DEG) - 1), np.int64)
    labeled = 0
    confidences = []
    for shard in ds.manifest["shards"]:
        table = ds.read_shard(shard["path"], columns)
        table = table.filter(pc.not_equal(table.column("label_source").cast(pa.string()), "none"))
        labeled += table.num_rows
        for i, c in enumerate(schema.BUTTON_COLUMNS):
            presses[i] += pc.sum(table.column(c).cast(pa.int64())).as_py() or 0
        for axis, c in enumerate(schema.CAMERA_COLUMNS):
            values = table.column(c).to_numpy(zero_copy_only=False)
            camera_counts[axis] += np.histogram(np.clip(values, -180, 180), bins=CAMERA_EDGES_DEG)[0]
        conf = table.column("label_confidence").drop_null().to_numpy()
        if conf.size:
            confidences.append(conf)
    conf = np.concatenate(confidences) if confidences else np.zeros(0)
    return {
        "labeled_frames": labeled,
        "button_press_rate": {b: (presses[i] / labeled if labeled else 0.0) for i, b in enumerate(schema.BUTTONS)},
        "camera_histogram": {"edges_deg": list(CAMERA_EDGES_DEG),
                             **{axis: camera_counts[i].tolist() for i, axis in enumerate(schema.CAMERA_AXES)}},
        "label_confidence": _stats(conf.tolist()),
    }


def _stats(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    a = np.asarray(values, float)
    return {"count": int(a.size), "min": float(a.min()), "mean": float(a.mean()),
            "p10": float(np.percentile(a, 10)), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def incomplete_line(s: dict) -> str:
    """What a person reads instead of the histograms of a dataset still being written or left unfinished."""
    of = f" of {s['planned_episodes']}" if s["planned_episodes"] is not None else ""
    state = "in progress: a job is writing it now" if s["job_running"] else "incomplete: its job stopped before the end"
    then = (f"; to finish it run: {s['finish']}" if s["finish"] and not s["job_running"]
            else "; inspect it again when the job ends")
    committed = f"{s['episodes']}{of} episode{'s' * ((s['planned_episodes'] or s['episodes']) != 1)}"
    return f"{s['path']}: {state}, {committed} committed; no action histograms until it is complete{then}"


def incomplete_note(ds: Dataset, command: str = "") -> str | None:
    """The one line (for stderr) of `command` about to read a dataset whose job has not finished: a capture that
    stopped early (with the command that finishes it) or one writing it now; None when complete or unknown. A
    trainer goes on with what is there (a partial dataset can be what a user wants), but says so."""
    done = completion(ds, len(ds))
    if done["complete"]:
        return None
    who = f"{command}: " if command else ""
    of = f" of {done['planned_episodes']}" if done["planned_episodes"] is not None else ""
    if done["job_running"]:
        return (f"{who}note: {ds.location.uri} is being written by a job now ({len(ds)}{of} episodes committed); "
                "using the episodes committed so far")
    then = f"; to finish it first run: {done['finish']}" if done["finish"] else ""
    return (f"{who}note: {ds.location.uri} is incomplete, its job stopped before the end ({len(ds)}{of} episodes "
            f"committed); using those{then}")


def format_summary(s: dict) -> str:
    """The summary as text for a person."""
    lines = [
        f"{s['path']}  (format v{s['format_version']})",
        f"  {counted(s['episodes'], 'episode')}, {counted(s['frames'], 'frame')} = {s['hours']:.3f} h at {s['fps']:g} fps, "
        f"{s['width']}x{s['height']} {s['codec']}",
        f"  {counted(s['shards'], 'shard')}, {s['size_bytes'] / 1e6:.2f} MB, {s['bytes_per_frame']:.0f} bytes/frame",
    ]
    st = s["episode_steps"]
    if st["count"]:
        lines.append(f"  steps per episode: min {st['min']:.0f}, median {st['p50']:.0f}, max {st['max']:.0f}")
    for name in ("label_sources", "splits", "envs", "players"):
        items = s[name].items()
        lines.append(f"  {name}: " + ", ".join(f"{k} {v['episodes'] if isinstance(v, dict) else v}" for k, v in items))
    if not s["complete"]:
        return "\n".join(lines + [incomplete_line(s)])
    if not s["labeled_frames"]:
        why = "no episodes yet" if not s["episodes"] else "every episode has label_source none"
        return "\n".join(lines + [f"  no labeled frames ({why}): no action histograms"])
    lines.append(f"  button press rate over {s['labeled_frames']} labeled frames:")
    for button, rate in s["button_press_rate"].items():
        lines.append(f"    {button:<10} {rate:6.1%} {'#' * round(rate * 40)}")
    edges = s["camera_histogram"]["edges_deg"]
    lines.append("  camera (degrees per step), frames per bin:")
    lines.append("    bins   " + " ".join(f"{f'<{e:g}':>7}" for e in edges[1:]))
    for axis in schema.CAMERA_AXES:
        lines.append(f"    {axis:<6} " + " ".join(f"{c:>7}" for c in s["camera_histogram"][axis]))
    if s.get("state_rows"):
        lines.append("  engine state (rows with a value): " + ", ".join(f"{k[6:]} {v}" for k, v in s["state_rows"].items()))
    c = s["label_confidence"]
    if c["count"]:
        lines.append(f"  label confidence ({c['count']} frames): min {c['min']:.3f}, mean {c['mean']:.3f}, "
                     f"p10 {c['p10']:.3f}, median {c['p50']:.3f}")
    return "\n".join(lines)
