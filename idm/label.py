"""Pseudo-label unlabeled footage with a trained IDM: videos or WorldLoom datasets in, a dataset out.

    worldloom idm label --model runs/idm --input data/unlabeled --out data/pseudo      # a dataset (label_source none)
    worldloom idm label --model runs/idm --input gameplay.mp4 --out data/pseudo        # one video
    worldloom idm label --model runs/idm --input videos/ --out data/pseudo --num-workers 2   # a folder, Ray actors

The output is a WorldLoom dataset whose frames are the input's frames unchanged (decoded
pixels stored losslessly; `--frames model` stores them at the model's size instead), with
label_source `idm`, label_model = the checkpoint id and a per-step confidence (the model's
probability of the whole decoded action). The model sees frames resized with INTER_LINEAR to its
size (as VPT resizes); a video whose frame rate is not `--fps` is resampled in time by picking
the nearest frame. Both are recorded: the dataset config says how the model saw the frames, each
episode's env_config names its source file, fps, size and first step.

Each video (or input episode) is one work item; long videos are stored as episodes of at most
`--chunk-steps` steps, labeled with the previous chunk's last frames as context so that the
cut is seamless. Items already committed in `--out` are skipped (run it again to resume). A bad
file is reported and skipped; the others' labels are kept. With `--num-workers N > 1`, a pool
of Ray actors labels items in parallel (each a fraction of a GPU when there is one).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from worldloom.config import doc, to_json_dict
from worldloom.errors import UserError
from worldloom.idm.checkpoint import checkpoint_id, load_idm
from worldloom.idm.data import open_dataset
from worldloom.idm.infer import predict_sequence, resize_frames
from worldloom.idm.video import VIDEO_SUFFIXES, VideoError, probe_video, read_chunks
from worldloom.paths import redact_text

FIRST_SEGMENT = "0000"


@dataclass(frozen=True)
class LabelConfig:
    """What to label, with which model, into where."""

    model: str = doc("IDM run directory (from `worldloom idm train`)")
    input: str = doc("a WorldLoom dataset, a video file, or a directory of videos")
    out: str = doc("output dataset directory (resumed if it exists)")
    fps: float = doc("steps per second for videos (0: keep each video's own rate)", 20.0)
    frames: str = doc("stored frames: original (unchanged) or model (resized to the model's size)", "original")
    chunk_steps: int = doc("steps per stored episode when splitting long videos", 2400)
    all_episodes: bool = doc("dataset input: also relabel episodes that have env labels", False)
    num_workers: int = doc("Ray actors (1: label in this process)", 1)
    batch_size: int = doc("windows per forward pass", 8)
    threads: int = doc("torch CPU threads per worker (0: torch's default)", 0)

    def __post_init__(self) -> None:
        if self.frames not in ("original", "model"):
            raise ValueError(f"LabelConfig.frames must be 'original' or 'model', got {self.frames!r}")
        if self.fps < 0 or self.chunk_steps < 1 or self.num_workers < 1 or self.batch_size < 1 or self.threads < 0:
            raise ValueError("LabelConfig: fps >= 0, chunk_steps, num_workers, batch_size >= 1, threads >= 0 required")


def discover(cfg: LabelConfig) -> tuple[str, list[dict]]:
    """("dataset" | "videos", work items): one item per input episode or per video file."""
    src = Path(cfg.input)
    if not src.exists():
        raise UserError(f"--input {src} does not exist")
    if src.is_dir() and (src / "dataset.json").exists():
        ds = open_dataset(str(src))
        table = ds.episodes.select(["episode_id", "label_source"]).to_pydict()
        items = [{"kind": "episode", "source": str(src), "episode_id": eid}
                 for eid, ls in zip(table["episode_id"], table["label_source"], strict=False) if cfg.all_episodes or ls == "none"]
        if not items and len(ds):
            raise UserError(f"{src}: every episode already has labels; pass --all-episodes to relabel them")
        return "dataset", items
    if src.is_file():
        return "videos", [{"kind": "video", "source": str(src), "episode_id": src.name}]
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise UserError(f"{src} holds no dataset.json and no video files ({', '.join(VIDEO_SUFFIXES)})")
    return "videos", [{"kind": "video", "source": str(p), "episode_id": p.relative_to(src).as_posix()} for p in files]


def first_episode_id(item: dict) -> str:
    """The id that marks an item as done in the output (videos store several segments)."""
    return item["episode_id"] if item["kind"] == "episode" else f"{item['episode_id']}:{FIRST_SEGMENT}"


class Labeler:
    """Labels items into its own shards; a plain class, wrapped by `ray.remote` for the pool."""

    def __init__(self, cfg: LabelConfig, model_id: str, job_config: dict) -> None:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cfg = cfg
        self.model, self.model_cfg = load_idm(cfg.model, device=device)
        self.model_id, self.job_config = model_id, job_config
        self.writers: dict[tuple, object] = {}

    def _writer(self, height: int, width: int, fps: float, codec: str):
        from worldloom.datasets import DatasetWriter

        if self.cfg.frames == "model":
            height, width = self.model_cfg.height, self.model_cfg.width
        key = (height, width, fps, codec)
        if key not in self.writers:
            self.writers[key] = DatasetWriter(self.cfg.out, height=height, width=width, fps=fps, codec=codec,
                                              config=self.job_config, autocommit=False)
        return self.writers[key]

    def _store(self, frames: np.ndarray) -> np.ndarray:
        return resize_frames(frames, self.model_cfg.height, self.model_cfg.width) if self.cfg.frames == "model" else frames

    def _add(self, writer, episode_id: str, frames: np.ndarray, pred: dict, meta: dict) -> None:
        writer.add_episode(episode_id, self._store(frames), buttons=pred["buttons"], camera=pred["camera_deg"],
                           label_source="idm", label_model=self.model_id, label_confidence=pred["confidence"], **meta)

    def label_episode(self, item: dict) -> int:
        ds = open_dataset(item["source"])
        clip = ds.frames(item["episode_id"])
        row = ds.episodes.filter(pc.equal(ds.episodes.column("episode_id"), item["episode_id"])).to_pylist()[0]
        self._check_length(len(clip.frames), item)
        pred = predict_sequence(self.model, clip.frames, self.cfg.batch_size)
        codec = ds.spec.codec if ds.spec.codec != "jpeg" else "png"  # never lose pixels to a re-encode
        env_config = json.loads(row["env_config"]) if row.get("env_config") else {}
        env_config["idm_source"] = {"dataset": item["source"], "size": [ds.spec.width, ds.spec.height]}
        meta = {"env": row.get("env"), "env_config": env_config, "seed": row.get("seed"),
                "player": row.get("player"), "split": row.get("split")}
        self._add(self._writer(ds.spec.height, ds.spec.width, ds.spec.fps, codec), item["episode_id"], clip.frames, pred, meta)
        return len(clip.frames)

    def label_video(self, item: dict) -> int:
        info = probe_video(item["source"])
        fps = self.cfg.fps or info.fps
        T, total = self.model_cfg.num_frames, 0
        context = np.zeros((0, self.model_cfg.height, self.model_cfg.width, 3), np.uint8)
        writer = self._writer(info.height, info.width, fps, "raw")
        for k, (start, frames) in enumerate(read_chunks(item["source"], self.cfg.chunk_steps, fps)):
            small = resize_frames(frames, self.model_cfg.height, self.model_cfg.width)
            if k == 0 and len(frames) < self.cfg.chunk_steps:  # the whole video
                self._check_length(len(frames), item)
            pred = predict_sequence(self.model, np.concatenate([context, small]), self.cfg.batch_size)
            pred = {key: value[len(context):] for key, value in pred.items()}
            context = small[-T:] if len(small) >= T else np.concatenate([context, small])[-T:]
            meta = {"env": "video", "player": None, "seed": None, "split": None, "env_config": {
                "source": item["source"], "source_fps": info.fps, "source_size": [info.width, info.height],
                "fps": fps, "first_step": start,
                "time_resampling": "none" if abs(fps - info.fps) < 1e-6 else f"nearest frame, {info.fps:g} -> {fps:g} fps"}}
            self._add(writer, f"{item['episode_id']}:{k:04d}", frames, pred, meta)
            total += len(frames)
        return total

    def _check_length(self, num_steps: int, item: dict) -> None:
        if num_steps < self.model_cfg.num_frames:
            raise UserError(f"{item['source']} ({item['episode_id']}): {num_steps} frames, fewer than the model's "
                            f"window of {self.model_cfg.num_frames}")

    def label(self, item: dict) -> dict:
        """Label one item; returns its committed-to-be shards (JSON) or the error that skipped it."""
        try:
            num_steps = self.label_episode(item) if item["kind"] == "episode" else self.label_video(item)
        except Exception as err:  # noqa: BLE001 - one bad item is reported and skipped, never ends the job
            for writer in self.writers.values():
                writer.abort()
            self.writers.clear()  # shards it finished for this item stay uncommitted: never part of the data
            message = str(err) if isinstance(err, (UserError, VideoError)) else f"{type(err).__name__}: {err}"
            return {"item": item, "ok": False, "error": message, "shards": []}
        shards = [info.to_json() for writer in self.writers.values() for info in writer.flush()]
        return {"item": item, "ok": True, "num_steps": num_steps, "shards": shards}


def run_items(cfg: LabelConfig, items: list[dict], model_id: str, job_config: dict):
    """Yield each item's result, in this process or from a pool of Ray actors."""
    if cfg.num_workers <= 1 or len(items) <= 1:
        labeler = Labeler(cfg, model_id, job_config)
        yield from (labeler.label(item) for item in items)
        return
    import ray
    from ray.util import ActorPool

    from worldloom.cluster import ray_session

    with ray_session(None, cfg.num_workers):  # the session that is up, or a local one on loopback
        gpu = 1.0 / cfg.num_workers if torch.cuda.is_available() else 0
        remote = ray.remote(Labeler).options(num_cpus=1, num_gpus=gpu, max_restarts=1)
        actor_cfg = dataclasses.replace(cfg, threads=cfg.threads or 1)  # one CPU each: never oversubscribe
        actors = [remote.remote(actor_cfg, model_id, job_config) for _ in range(min(cfg.num_workers, len(items)))]
        yield from ActorPool(actors).map_unordered(lambda actor, item: actor.label.remote(item), items)


def label(cfg: LabelConfig) -> dict:
    """Label everything under cfg.input not yet in cfg.out; returns a summary (done, skipped, failed)."""
    from worldloom.datasets import commit_shards, committed_episode_ids

    kind, items = discover(cfg)
    model_id = checkpoint_id(cfg.model)
    _, model_cfg = load_idm(cfg.model)
    done = committed_episode_ids(cfg.out) if Path(cfg.out).exists() else set()
    todo = [item for item in items if first_episode_id(item) not in done]
    job_config = {"job": "worldloom idm label", "label_model": model_id, "input_kind": kind,
                  "label": to_json_dict(cfg),
                  "model_input": {"height": model_cfg.height, "width": model_cfg.width, "interpolation": "INTER_LINEAR",
                                  "note": "frames resized to the model's size for prediction only; stored frames unchanged"}}
    summary = {"out": redact_text(cfg.out), "label_model": model_id, "num_items": len(items), "skipped_done": len(items) - len(todo),
               "labeled": [], "failed": [], "num_steps": 0}
    for result in tqdm(run_items(cfg, todo, model_id, job_config), total=len(todo), desc="idm label", unit="item"):
        if result["ok"]:
            commit_shards(cfg.out, result["shards"])
            summary["labeled"].append(result["item"]["episode_id"])
            summary["num_steps"] += result["num_steps"]
        else:
            summary["failed"].append({"input": result["item"]["source"], "error": redact_text(result["error"])})
            print(f"idm label: skipped: {redact_text(result['error'])}", file=sys.stderr)
    if todo and not summary["labeled"] and not summary["skipped_done"]:
        raise UserError(f"nothing was labeled: {summary['failed'][0]['error']}")
    return summary
