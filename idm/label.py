"""Pseudo-label unlabeled footage with a trained IDM: videos or WorldLoom datasets in, a dataset out.

    worldloom idm label --model runs/idm --data data/unlabeled --out data/pseudo      # a dataset (label_source none)
    worldloom idm label --model runs/idm --data gameplay.mp4 --out data/pseudo        # one video
    worldloom idm label --model runs/idm --data videos/ --out data/pseudo --num-workers 2   # a folder, Ray actors

The output is a WorldLoom dataset whose frames are the input's frames unchanged (decoded
pixels stored losslessly; `--frames model` stores them at the model's size instead), with
label_source `idm`, label_model = the checkpoint id and a per-step confidence (the model's
probability of the whole decoded action). A dataset's episodes keep their engine truth, which
the IDM does not predict: the `state_*` columns and the `caption` column (made by the rules from
the state where the input has state but no captions, e.g. format version 2); the actions are the
IDM's. A button is labeled pressed where the IDM's probability passes 0.5 (the more likely of
press and release, as VPT labels; the probability with the press weight of the IDM's training
loss taken out, `checkpoint.button_logit_shift`); the movement keys, which players hold, on
their probability averaged over `--hold-steps` steps centred on the step (7 by default; 1 decides
every step on its own, as VPT; docs/idm.md, held keys). `--presses fitted` uses the run's F1-fitted
thresholds instead, which flood another player's footage with rare presses (docs/idm.md). The
model sees frames resized with INTER_LINEAR to its size (as VPT resizes). Videos are read by `worldloom.datasets.video`: time from presentation
timestamps, step k showing the frame on screen at k / --fps seconds (the rule is written into
the dataset's config), PyAV then OpenCV as decoders. Each episode's env_config names its source
file, its identity, fps, size, first step and how it decoded.

Each video (or input episode) is one work item; long videos are stored as episodes of at most
`--chunk-steps` steps. The labels do not depend on the chunking: the video streams through
`StreamPredictor`, which gives every window its real frames on both sides, so any
`--chunk-steps` gives the same labels at every step, bit for bit on CPU. Resuming is by content
(`worldloom.datasets.sources`): an input is skipped only if the same file (path, size, mtime and ctime,
or its hash) was committed whole, labeled by the same model (weights); a changed file, or one another
model labeled (a retrained IDM under the same run name, another --model), is labeled again and its new episodes replace
the old ones in one commit; same names in different folders stay distinct. A file that decodes
fewer frames than its container promises is reported as truncated and skipped (`--keep-truncated`
keeps what decodes, with a warning in the summary and `truncated` in its env_config). A clip shorter
than the model's window is labeled as `infer.predict` labels one (its last frame repeated to fill the
window, the padded steps dropped), with a warning in the summary. A bad file
is reported and skipped; the others' labels are kept. With `--num-workers N > 1`, a pool of Ray
actors labels items in parallel (each a fraction of a GPU when there is one).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from worldloom.cluster import (
    ACTOR_BASE_BYTES,
    MAX_WORKERS,
    NUM_WORKERS_RANGE,
    TORCH_BYTES,
    actors_that_fit,
    num_actors,
    ray_session,
    store_credentials,
)
from worldloom.config import check_range, doc, to_json_dict
from worldloom.datasets.jobs import discard_unused, job_lock, raise_if_output_failed, swept
from worldloom.datasets.sources import (
    Source,
    episode_source,
    file_source,
    plan_resume,
    retire_duplicates,
    say_duplicates,
    say_kept_truncated,
)
from worldloom.datasets.storage import (
    MAX_SIDE,
    MIN_SIDE,
    FrameSpec,
    SpecMismatch,
    resize_words,
    stored_fps,
)
from worldloom.datasets.video import (
    FPS_RANGE,
    PICTURE_SUFFIXES,
    RESAMPLING,
    VIDEO_SUFFIXES,
    VideoError,
    VideoReader,
    left_out_words,
    output_folders,
    video_files,
)
from worldloom.datasets.video_report import SUMMARY_KEYS
from worldloom.datasets.writer import abort_writers
from worldloom.errors import UserError
from worldloom.folders import check_out
from worldloom.idm.checkpoint import (
    button_logit_shift,
    camera_spread,
    check_step_rate,
    checkpoint_id,
    load_idm,
    model_config,
    step_rate,
)
from worldloom.idm.data import open_dataset
from worldloom.idm.infer import (
    MAX_HOLD_STEPS,
    StreamPredictor,
    concat_predictions,
    predict_sequence,
    resize_frames,
    short_window_words,
)
from worldloom.io import json_text
from worldloom.paths import redact_text
from worldloom.progress import StepCount, nothing_done

MAX_CHUNK_STEPS = 72_000  # an hour at 20 steps per second


PRESSES = ("likely", "fitted")
CAMERA_LABELS = ("matched", "expected")
CAMERA_STILL = ("likely", "expected")


@dataclass(frozen=True)
class LabelConfig:
    """What to label, with which model, into where."""

    model: str = doc("IDM run directory (from `worldloom idm train`), or vpt:PATH/4x_idm.weights (OpenAI's IDM)")
    data: str = doc("what to label: a WorldLoom dataset (a folder or a URI such as s3://bucket/prefix?...), "
                    "a video file, or a directory of videos (local)")
    out: str = doc("output dataset directory (resumed if it exists)")
    fps: float = doc("steps per second for videos (1..240; the IDM's actions are per step of the game's 20)", 20.0)
    frames: str = doc("stored frames: original (unchanged) or model (resized to the model's size)", "original")
    chunk_steps: int = doc("steps per stored episode when splitting long videos (labels do not depend on it)", 2400)
    all_episodes: bool = doc("dataset input: also relabel episodes that have env labels", False)
    keep_truncated: bool = doc("label what decodes of a truncated video (with a warning) instead of skipping it", False)
    num_workers: int = doc("Ray actors (1: label in this process; 0: one per CPU of the cluster)", 1)
    address: str | None = doc("Ray cluster to join (HOST:PORT or auto); unset: a local one on loopback", None)
    batch_size: int = doc("windows per forward pass", 8)
    threads: int = doc("torch CPU threads per worker (0: torch's default)", 0)
    hold_steps: int = doc("movement keys (forward, back, left, right, sneak, sprint) are decided on their probability "
                          "averaged over this many steps centred on the step (odd, 1 to 41; 1: each step on its own, as "
                          "VPT labels); docs/idm.md, held keys", 7)
    presses: str = doc("when a button is labeled pressed: likely (its probability above 0.5: the most likely "
                       "action, as VPT labels; what behaviour cloning needs) or fitted (the run's per-button "
                       "thresholds that maximise validation F1, which press rare buttons far more often)", "likely")
    camera: str = doc("camera labels: matched (the expected move scaled per axis so its spread is the true moves' on "
                      "the IDM's validation episodes: checkpoint/camera_spread.json; without that file, as expected) "
                      "or expected (the mean of the IDM's bins: the least squared error, and strokes smaller than the "
                      "player's); docs/idm.md, camera spread", "matched")
    camera_still: str = doc("an axis whose most likely bin is the still one: likely labels it 0 (the IDM's most likely "
                            "answer, as a button is labeled by its more likely state) or expected (the expected move "
                            "there too: a little of the IDM's doubt, which a cloned policy plays as stray turns); "
                            "docs/idm.md, still camera", "likely")

    def __post_init__(self) -> None:
        if self.presses not in PRESSES:
            raise ValueError(f"LabelConfig.presses must be one of {', '.join(PRESSES)}, got {self.presses!r}")
        if self.camera not in CAMERA_LABELS:
            raise ValueError(f"LabelConfig.camera must be one of {', '.join(CAMERA_LABELS)}, got {self.camera!r}")
        if self.camera_still not in CAMERA_STILL:
            raise ValueError(f"LabelConfig.camera_still must be one of {', '.join(CAMERA_STILL)}, got {self.camera_still!r}")
        if self.frames not in ("original", "model"):
            raise ValueError(f"LabelConfig.frames must be 'original' or 'model', got {self.frames!r}")
        check_range("fps", self.fps, *FPS_RANGE, "steps per second", integer=False)
        check_range("chunk_steps", self.chunk_steps, 1, MAX_CHUNK_STEPS, "steps per stored episode, an hour at most")
        check_range("num_workers", self.num_workers, 0, MAX_WORKERS, f"1: this process; {NUM_WORKERS_RANGE}")
        check_range("batch_size", self.batch_size, 1, 4096, "windows per forward pass")
        check_range("threads", self.threads, 0, 256, "0: torch's default")
        check_range("hold_steps", self.hold_steps, 1, MAX_HOLD_STEPS, "steps averaged for the movement keys")
        if self.hold_steps % 2 == 0:
            raise ValueError(f"--hold-steps must be odd (the step and as many on each side), got {self.hold_steps}")


def label_model_id(cfg: LabelConfig) -> str:
    """The label_model written with each label: the checkpoint id, and `+fitted-presses` where the run's fitted
    thresholds decided the presses (labels of one model made both ways differ; resuming tells them apart), or
    `+likely` where a run trained with a press weight labels the more likely (checkpoint.button_logit_shift;
    before 2026-12-05 its labels pressed where sigmoid(logit) passed 0.5, and resuming labels those again), then
    `+hold7` where the movement keys were decided on 7-step averages (`hold_steps`), then `+spread` where
    the camera was scaled by the run's fitted spread (`camera` matched, the file there), then `+still` where an
    axis whose most likely bin is the still one was labeled 0 (`camera_still` likely; not for OpenAI's IDM, which
    decodes its argmax bin, so a still bin is 0 either way)."""
    model_id = checkpoint_id(cfg.model)
    if cfg.presses == "fitted":
        model_id += "+fitted-presses"
    elif button_logit_shift(cfg.model):
        model_id += "+likely"
    model_id += f"+hold{cfg.hold_steps}" if cfg.hold_steps > 1 else ""
    model_id += "+spread" if cfg.camera == "matched" and camera_spread(cfg.model) is not None else ""
    from worldloom.idm import vpt

    return model_id + ("+still" if cfg.camera_still == "likely" and not vpt.is_spec(cfg.model) else "")


def discover(cfg: LabelConfig) -> tuple[str, list[tuple[dict, Source]]]:
    """("dataset" | "videos", [(work item, its Source)]): one per input episode or video file.

    --data is a local dataset, video file or folder of videos, or a dataset's URI (`s3://bucket/prefix?...`,
    read as every command reads one); videos on an object store are refused in one line (VideoReader reads
    local files). An item's `source` is --data as given, credentials and all, for the worker that opens it;
    what is written or shown of it is redacted (the origin in source_identity: the redacted URI)."""
    if "://" in str(cfg.data):
        return discover_uri(cfg)
    src = Path(cfg.data)
    if not src.exists():
        raise UserError(f"--data {src} does not exist")
    if src.is_dir() and (src / "dataset.json").exists():
        return "dataset", dataset_items(cfg, str(src), str(src.resolve()))
    if src.is_file():
        return "videos", [({"kind": "video", "source": str(src)}, file_source(src))]
    files, left_out = video_files(src, skip=output_folders(cfg.out))  # --out may lie inside --data
    if left_out:  # never silently: a camera's clips under a suffix not listed would be missing from the data
        print(f"idm label: {left_out_words(src, left_out)}", file=sys.stderr)
    if not files:
        raise UserError(f"{src} holds no dataset.json and no video files ({', '.join(VIDEO_SUFFIXES)}, or an animated {'/'.join(PICTURE_SUFFIXES)})")
    return "videos", [({"kind": "video", "source": str(p)}, file_source(p, root=src)) for p in files]


def dataset_items(cfg: LabelConfig, source: str, origin: str) -> list[tuple[dict, Source]]:
    """The work items of the dataset at `source` (a path or URI, as given): its unlabeled episodes (every
    one with --all-episodes), each with its Source under `origin` (the dataset's absolute path, or its
    redacted URI); UserError (one line) when it holds none to label."""
    ds = open_dataset(source)
    where = ds.location.uri
    checksums = {s["path"]: s["checksum"] for s in ds.manifest["shards"]}
    table = ds.episodes.select(["episode_id", "label_source", "shard", "row_start", "num_steps"]).to_pylist()
    items = [({"kind": "episode", "source": source, "episode_id": row["episode_id"]},
              episode_source(origin, row["episode_id"], checksums[row["shard"]], row["row_start"], row["num_steps"]))
             for row in table if cfg.all_episodes or row["label_source"] == "none"]
    if not len(ds):  # an empty dataset (a capture that recorded nothing yet): nothing would be labeled, exit 0
        raise UserError(f"{where}: the dataset holds no episodes; nothing to label (record or ingest footage into it first)")
    if not items:
        raise UserError(f"{where}: every episode already has labels; pass --all-episodes to relabel them")
    return items


def discover_uri(cfg: LabelConfig) -> tuple[str, list[tuple[dict, Source]]]:
    """--data given as a URI: the dataset there (read as `worldloom dataset inspect` reads one), else one line:
    videos are read from local disk only."""
    import pyarrow.fs as pafs

    from worldloom.datasets import schema, storage

    loc = storage.resolve(cfg.data)  # UserError naming the URI if pyarrow cannot open it
    if storage.read_manifest(loc) is not None:
        return "dataset", dataset_items(cfg, str(cfg.data), loc.uri)
    found = loc.fs.get_file_info(loc.path).type
    what = {pafs.FileType.File: "is a file, not a WorldLoom dataset",
            pafs.FileType.Directory: f"holds no {schema.MANIFEST_NAME}"}.get(found, "does not exist")
    raise UserError(f"--data {loc.uri} {what}; from an object store idm label reads WorldLoom datasets only: copy "
                    "videos to a local folder and give that folder (or `worldloom dataset ingest --format video` them "
                    "into a dataset on the store, and label that)")


PROGRESS_STEPS = 256  # a video is read and predicted this many steps at a time (its episodes stay --chunk-steps long)


class Labeler:
    """Labels items into its own shards; a plain class, wrapped by `ray.remote` for the pool."""

    def __init__(self, cfg: LabelConfig, model_id: str, job_config: dict, on_steps=None,
                 environ: dict[str, str] | None = None) -> None:
        """`on_steps(n)`, where given, hears of every n steps predicted (progress inside a long input);
        `environ`: the driver's object-store credentials, for an actor on another machine (store_credentials)."""
        os.environ.update(environ or {})
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cfg = cfg
        self.model, self.model_cfg = load_idm(cfg.model, device=device)
        if cfg.presses == "likely":
            self.model.button_thresholds = None  # decoded at 0.5 (infer.decode)
        if cfg.camera == "matched":
            self.model.camera_spread = camera_spread(cfg.model)  # None: the expected move (infer.decode)
        self.model.camera_still = cfg.camera_still == "likely"  # an axis whose likeliest bin is still: 0 (infer.decode)
        self.model_id, self.job_config = model_id, job_config
        self.writers: dict[tuple, object] = {}
        self.on_steps = on_steps or (lambda n: None)

    def _writer(self, height: int, width: int, fps: float, codec: str, item: dict):
        from worldloom.datasets import DatasetWriter

        if self.cfg.frames == "model":
            height, width = self.model_cfg.height, self.model_cfg.width
        elif not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise UserError(f"{item_words(item)}: frames {width}x{height}, and a dataset stores {MIN_SIDE} to {MAX_SIDE} "
                            f"pixels a side: pass --frames model to store them at the model's "
                            f"{self.model_cfg.width}x{self.model_cfg.height}")
        key = (height, width, fps, codec)
        if key not in self.writers:
            try:
                self.writers[key] = DatasetWriter(self.cfg.out, height=height, width=width, fps=fps, codec=codec,
                                                  config=self.job_config, autocommit=False)
            except SpecMismatch as err:
                raise UserError(f"{item_words(item)}: {err}{self._fit_hint(err.dataset, item, (height, width))}") from None
        self.writers[key].release_ids(item["replaces"])  # this item's new episodes replace them at commit
        return self.writers[key]

    def _fit_hint(self, dataset: FrameSpec, item: dict, stored: tuple[int, int]) -> str:
        """The flags that store this input (its frames `stored` (height, width) as written) in `dataset`
        (its size, its fps), where there are such flags."""
        hints = []
        size = (self.model_cfg.height, self.model_cfg.width)
        if item["kind"] == "video" and dataset.fps != self.cfg.fps:
            hints.append(f"--fps {dataset.fps:g}")
        hint = f", or pass {' and '.join(hints)}" if hints else ""
        if self.cfg.frames == "original" and (dataset.height, dataset.width) != stored:
            # inputs of several sizes (a folder of them: the first one stored set the dataset's) fit one
            # dataset only at one size: the model's; a new --out alone meets the same first input again
            where = "" if (dataset.height, dataset.width) == size else " with a new --out"
            hint += (f"; inputs of several sizes go in one dataset with --frames model{where} (every input stored at "
                     f"the model's {size[1]}x{size[0]})")
        return hint

    def _store(self, frames: np.ndarray) -> np.ndarray:
        return resize_frames(frames, self.model_cfg.height, self.model_cfg.width) if self.cfg.frames == "model" else frames

    def _add(self, writer, episode_id: str, frames: np.ndarray, pred: dict, meta: dict) -> None:
        writer.add_episode(episode_id, self._store(frames), buttons=pred["buttons"], camera=pred["camera_deg"],
                           label_source="idm", label_model=self.model_id, label_confidence=pred["confidence"], **meta)

    @staticmethod
    def _truth(ds, episode_id: str) -> dict:
        """The footage's own engine truth, which the IDM does not predict: its `state_*` columns (those
        not all null) and its `caption` column; captions made by the rules from its state (and its own
        actions, if any) where it has state but no stored captions (format version 2, or older writers)."""
        from worldloom.datasets.captions import episode_columns, row_captions
        from worldloom.datasets.schema import CAPTION_COLUMN, STATE_COLUMNS

        if ds.version < 2:
            return {}
        names = [*STATE_COLUMNS, CAPTION_COLUMN] if ds.version >= 3 else list(STATE_COLUMNS)
        table = ds.read_table(episode_id, columns=names)
        state = {n: table.column(n).to_pylist() for n in STATE_COLUMNS if table.column(n).null_count < len(table)}
        if not state:
            return {}
        caption = table.column(CAPTION_COLUMN).to_pylist() if ds.version >= 3 else []
        if not any(caption):
            caption = row_captions(episode_columns(ds, episode_id), episode_id, float(ds.spec.fps))
        return {"state": state, "caption": caption if any(caption) else None}

    def label_episode(self, item: dict, warnings: list[str]) -> tuple[int, dict]:
        ds = open_dataset(item["source"])
        clip = ds.frames(item["episode_id"])
        row = ds.episodes.filter(pc.equal(ds.episodes.column("episode_id"), item["episode_id"])).to_pylist()[0]
        warnings.extend(self._check_length(len(clip.frames), float(ds.spec.fps), item))
        pred = predict_sequence(self.model, clip.frames, self.cfg.batch_size, self.cfg.hold_steps)
        self.on_steps(len(clip.frames))
        codec = ds.spec.codec if ds.spec.codec != "jpeg" else "png"  # never lose pixels to a re-encode
        env_config = json.loads(row["env_config"]) if row.get("env_config") else {}
        env_config["idm_source"] = {"dataset": redact_text(item["source"]), "episode_id": item["episode_id"],
                                    "size": [ds.spec.width, ds.spec.height]}
        env_config["source_identity"] = item["identity"]
        meta = {"env": row.get("env"), "env_config": env_config, "seed": row.get("seed"),
                "player": row.get("player"), "split": row.get("split"), **self._truth(ds, item["episode_id"])}
        writer = self._writer(ds.spec.height, ds.spec.width, ds.spec.fps, codec, item)
        self._add(writer, item["name"], clip.frames, pred, meta)
        return len(clip.frames), {}, (ds.spec.height, ds.spec.width)

    def label_video(self, item: dict, warnings: list[str]) -> tuple[int, dict]:
        """Stream one video through the model; episodes of chunk_steps steps. Returns (steps, decode report)."""
        with VideoReader(item["source"], fps=self.cfg.fps, threads=self.cfg.threads) as reader:
            report, fps, chunk = reader.report, reader.fps, self.cfg.chunk_steps
            writer = self._writer(report.height, report.width, fps, "raw", item)
            stream = StreamPredictor(self.model, self.cfg.batch_size, self.cfg.hold_steps)
            frames: list[np.ndarray] = []  # decoded steps not stored yet, and their predictions
            preds: list[dict] = []
            num_stored = 0

            def store(final: bool) -> None:
                nonlocal frames, preds, num_stored
                if not final and sum(len(p["confidence"]) for p in preds) < chunk:
                    return  # an episode's worth not predicted yet: nothing to copy
                all_frames, all_preds = np.concatenate(frames), concat_predictions(preds)
                ready = len(all_preds["confidence"])
                while ready >= chunk or (final and ready > 0):
                    n = min(chunk, ready)
                    meta = {"env": "video", "player": None, "seed": None, "split": None, "env_config": {
                        "source": item["source"], "source_identity": item["identity"], "source_fps": report.header_fps,
                        "source_size": [report.width, report.height], "fps": fps, "first_step": num_stored,
                        "time_resampling": RESAMPLING}}
                    self._add(writer, f"{item['name']}:{num_stored // chunk:04d}", all_frames[:n],
                              {k: v[:n] for k, v in all_preds.items()}, meta)
                    all_frames, all_preds = all_frames[n:], {k: v[n:] for k, v in all_preds.items()}
                    num_stored, ready = num_stored + n, ready - n
                frames, preds = [all_frames], [all_preds]

            for _, piece in reader.chunks(min(chunk, PROGRESS_STEPS)):  # pieces, for progress inside a long video
                frames.append(piece)
                preds.append(stream.push(piece))
                self.on_steps(len(piece))
                store(final=False)
            warnings.extend(self._check_length(report.num_steps, fps, item))
            preds.append(stream.finish())
            if report.truncated and not self.cfg.keep_truncated:
                raise VideoError(f"{item['source']}: truncated: {report.truncation()}; skipped (re-download or "
                                 "repair it, or pass --keep-truncated to label what decodes)")
            store(final=True)
        return num_stored, report.to_json(), (report.height, report.width)

    def _check_length(self, num_steps: int, fps: float, item: dict) -> list[str]:
        """Refuse a clip of one step (no motion to read an action from); a warning line for one shorter than the
        model's window, which is labeled all the same: as `infer.StreamPredictor` runs any sequence's first window
        (its real steps at the window's first positions), its last frame repeated after its end (the padded
        steps' predictions dropped), or, for VPT's IDM, a window of its own length."""
        window = self.model_cfg.num_frames
        if num_steps < 2:
            raise UserError(f"{item_words(item)}: {num_steps} step(s) at {fps:g} fps: an IDM reads an action from the "
                            "motion between frames, so a clip needs 2 steps at least; nothing to label")
        if num_steps >= window:
            return []
        return [f"{item_words(item)}: {num_steps} steps ({num_steps / fps:.2f} s at {fps:g} fps), shorter than the "
                f"model's window of {window} ({window / fps:.2f} s): labeled with {short_window_words(self.model)}; its last steps' labels are "
                "the least sure"]

    def label(self, item: dict) -> dict:
        """Label one item; returns its committed-to-be shards (JSON) or the error that skipped it."""
        warnings: list[str] = []  # lines for the summary (a clip shorter than the window)
        try:
            num_steps, decoded, source_hw = (self.label_episode(item, warnings) if item["kind"] == "episode"
                                             else self.label_video(item, warnings))
        except BaseException as err:  # noqa: BLE001 - one bad item is reported and skipped, never ends the job
            abort_writers(self.writers)  # its finished shards stay uncommitted, its open one's file goes
            if not isinstance(err, Exception):  # Ctrl-C, SystemExit: on their way, nothing left behind
                raise
            raise_if_output_failed(err, self.cfg.out, "inputs labeled")  # the output's disk: the job stops
            message = str(err) if isinstance(err, (UserError, VideoError)) else f"{type(err).__name__}: {err}"
            if item["source"] not in message and redact_text(item["source"]) not in message:  # every skipped line names its input
                message = f"{item_words(item)}: {message}"
            return {"item": item, "ok": False, "error": message, "shards": []}
        shards = [info.to_json() for writer in self.writers.values() for info in writer.flush()]
        if decoded:  # known only once the whole file is read: added to each of its episodes' rows
            summary = {k: decoded[k] for k in SUMMARY_KEYS}
            for shard in shards:
                for row in shard["episodes"]:
                    env_config = json.loads(row["env_config"])
                    row["env_config"] = json_text({**env_config, "decode": summary, "truncated": decoded["truncated"]},
                                                   indent=None, sort_keys=True)
        return {"item": item, "ok": True, "num_steps": num_steps, "shards": shards, "decoded": decoded,
                "source_hw": source_hw, "warnings": warnings}


# One labeling actor before its inputs: the worker with torch (452 MiB once worldloom.idm.label is imported, read
# with psutil on 2026-12-08); the model's weights (a few MiB for the presets here, more for VPT's) and a window
# of frames come on top.
LABEL_ACTOR_BYTES = ACTOR_BASE_BYTES + TORCH_BYTES


def run_items(cfg: LabelConfig, items: list[dict], model_id: str, job_config: dict, on_steps=None):
    """Yield each item's result, in this process (`on_steps(n)` hearing of the steps predicted) or
    from a pool of Ray actors (progress by whole items)."""
    if cfg.num_workers == 1 or len(items) <= 1:
        if cfg.address and items:  # asked for a cluster, and said why it is not used
            why = "--num-workers 1" if cfg.num_workers == 1 else "a single input"
            print(f"idm label: note: --address {redact_text(cfg.address)} is not used: with {why}, labeling runs in "
                  "this process", file=sys.stderr)
        labeler = Labeler(cfg, model_id, job_config, on_steps)
        yield from (labeler.label(item) for item in items)
        return
    import ray
    from ray.util import ActorPool

    with ray_session(cfg.address, cfg.num_workers or None):  # the pipeline's session, or a local one on loopback
        count = min(num_actors(cfg.num_workers), len(items))  # 0: one per CPU of the cluster
        count = actors_that_fit(count, LABEL_ACTOR_BYTES, "labeling actors", "idm label")
        gpu = 1.0 / count if torch.cuda.is_available() else 0
        remote = ray.remote(Labeler).options(num_cpus=1, num_gpus=gpu, max_restarts=1)
        actor_cfg = dataclasses.replace(cfg, threads=cfg.threads or 1)  # one CPU each: never oversubscribe
        environ = store_credentials([cfg.data, cfg.out])  # a remote cluster's actors have none of their own
        actors = [remote.remote(actor_cfg, model_id, job_config, environ=environ) for _ in range(count)]
        yield from ActorPool(actors).map_unordered(lambda actor, item: actor.label.remote(item), items)


def warnings_of(result: dict) -> list[str]:
    """The warnings of one labeled item, one line each, naming the file: its own, then its decode's."""
    from worldloom.datasets.video import DecodeReport

    decoded = result.get("decoded") or {}
    if not decoded:
        return list(result.get("warnings", []))
    fields = {f.name for f in dataclasses.fields(DecodeReport)}
    report = DecodeReport(**{k: v for k, v in decoded.items() if k in fields})
    return [*result.get("warnings", []), *(f"{result['item']['source']}: {line}" for line in report.warnings())]


def item_words(item: dict) -> str:
    """How a line names one input: its video file, or its dataset and episode (a dataset has many)."""
    where = redact_text(item["source"])
    return f"{where} episode {item['episode_id']!r}" if item.get("kind") == "episode" else where


def check_label_out(out: str) -> None:
    """UserError (one line, nothing written) unless `out` is new, empty, or a dataset whose episodes
    are all IDM-labeled (resumed): never mixes pseudo-labels into env-labeled or unlabeled data."""
    from worldloom.datasets import storage

    check_out(out, "dataset")
    if storage.read_manifest(storage.resolve(out)) is None:
        return
    counts: dict[str, int] = {}
    for source in open_dataset(out).episodes.column("label_source").to_pylist():
        counts[source] = counts.get(source, 0) + 1
    other = {source: n for source, n in sorted(counts.items()) if source != "idm"}
    if other:
        held = ", ".join(f"{n} episode(s) of label_source {source}" for source, n in other.items())
        raise UserError(f"--out {redact_text(out)} holds a dataset with {held}; IDM pseudo-labels are never mixed "
                        "into it: give a new --out (a dataset of IDM labels is resumed)")


def check_fps(cfg: LabelConfig, kind: str) -> None:
    """UserError when videos would be stored at another --fps than the existing --out dataset's: the videos
    already in it would be skipped as done, at the old rate (a new one is refused as it is written)."""
    from worldloom.datasets import storage

    manifest = storage.read_manifest(storage.resolve(cfg.out)) if kind == "videos" else None
    if manifest is not None and float(storage.spec_of(manifest).fps) != float(cfg.fps):
        have = storage.spec_of(manifest).fps
        raise UserError(f"--fps {cfg.fps:g}: {redact_text(cfg.out)} stores {have:g} steps per second (a dataset holds "
                        f"one rate); pass --fps {have:g} to add to it, or give a new --out")


def label(cfg: LabelConfig) -> dict:
    """Label everything under cfg.data not yet in cfg.out; returns a summary (done, skipped, failed)."""
    from worldloom.checkpoint import real_folders

    if real_folders([str(cfg.data)]) == real_folders([str(cfg.out)]):  # its labels would sit beside the episodes they label
        raise UserError(f"--out {redact_text(cfg.out)} is the --data being labeled; give a new --out (the labels are a "
                        "dataset of their own)")
    check_label_out(cfg.out)
    model_config(cfg.model)  # a dataset or another run given as --model is named before the inputs are looked at
    kind, found = discover(cfg)
    if kind == "dataset":  # videos are resampled to --fps as they are read
        check_step_rate(cfg.model, [cfg.data])
    elif (learned := step_rate(cfg.model)) is not None and learned != float(cfg.fps):
        raise UserError(f"--fps {cfg.fps:g}: IDM {cfg.model} learned {learned:g} steps per second (it reads an action "
                        f"step for step, so a {cfg.fps:g} fps step would be read as a 1/{learned:g} s one); pass --fps "
                        f"{learned:g}: videos are resampled to it as they are read")
    model_id = label_model_id(cfg)
    # Under the lock: shards and temporary files of a killed earlier run (or of items that failed in this one,
    # or of actors interrupted now) are in no manifest: deleted when the job ends (datasets/jobs.py).
    with job_lock([cfg.out], "idm label"), swept(cfg.out) as sweep:
        discard_unused(cfg.out)  # an empty dataset a failed run left: this run's first input sets the size
        summary = _label_locked(cfg, kind, found, model_id)
    summary["num_orphans_removed"] = sweep["removed"]
    summary["fps"] = stored_fps(cfg.out)  # its steps in seconds: an IDM of 10 fps play labels 10 a second, not 20
    if summary["failed"] and not summary["labeled"] and not summary["skipped_done"]:
        raise UserError(nothing_done("labeled", summary))
    return summary


def _label_locked(cfg: LabelConfig, kind: str, found: list, model_id: str) -> dict:
    """Label and commit every item not yet in cfg.out (the caller holds the job lock)."""
    from worldloom.datasets import commit_shards

    model_cfg = model_config(cfg.model)
    todo, num_done, unreadable, duplicates = plan_resume(cfg.out, found, made_by=model_id,
                                                         keep_truncated=cfg.keep_truncated)
    say_kept_truncated("idm label", cfg.out, todo)
    say_duplicates("idm label", duplicates)
    if not todo:  # all there: nothing would be written to refuse the rate (an input to write names both flags)
        check_fps(cfg, kind)
    others = sorted({item["reason"].removeprefix("made by ") for item in todo if item["reason"].startswith("made by ")})
    if others:  # said before the work: the old labels are replaced as each input is labeled again
        count = sum(item["reason"].startswith("made by ") for item in todo)
        print(f"idm label: {count} input(s) in {redact_text(cfg.out)} were labeled by another model "
              f"({', '.join(map(str, others))}): labeled again by {model_id}, their episodes replaced "
              "(give another --out to keep both)", file=sys.stderr)
    job_config = {"job": "worldloom idm label", "label_model": model_id, "input_kind": kind,
                  "label": to_json_dict(cfg),
                  "model_input": {"height": model_cfg.height, "width": model_cfg.width, "interpolation": "INTER_LINEAR",
                                  "note": "frames resized to the model's size for prediction only; stored frames unchanged"},
                  "time_resampling": {"rule": RESAMPLING, "fps": cfg.fps}}
    summary = {"out": redact_text(cfg.out), "label_model": model_id, "num_items": len(found), "skipped_done": num_done,
               "duplicates": duplicates,
               "labeled": [], "replaced": retire_duplicates(cfg.out, duplicates), "failed": [], "truncated": [],
               "warnings": [], "num_steps": 0}
    counted_steps = StepCount()  # steps predicted, shown beside the items: an hour of video is one item
    results = tqdm(run_items(cfg, todo, model_id, job_config, lambda n: counted_steps.add(n, results)),
                   total=len(todo), desc="idm label", unit="item",
                   disable=not todo)  # no "0item" bar after the lines of inputs that could not start
    model_hw, said = (model_cfg.height, model_cfg.width), set()
    # Each item is committed as its result arrives (never a list of all of them first): a Ctrl-C or a
    # kill half way keeps every item finished before it.
    for result in itertools.chain(unreadable, results):
        item = result["item"]
        if result["ok"] and tuple(result["source_hw"]) not in said | {model_hw}:
            said.add(tuple(result["source_hw"]))
            stored = "stored resized (--frames model)" if cfg.frames == "model" else "stored as they are"
            results.write(f"idm label: {resize_words(tuple(result['source_hw']), model_hw)} for the model's input; "
                          f"{stored}", file=sys.stderr)
        if result["ok"]:
            commit_shards(cfg.out, result["shards"], replace=item["replaces"])
            summary["labeled"].append(item["name"])
            summary["num_steps"] += result["num_steps"]
            if item["replaces"]:
                summary["replaced"].append({"input": redact_text(item["source"]), "episodes": item["replaces"]})
            decoded = result.get("decoded") or {}
            if decoded.get("truncated"):
                summary["truncated"].append({"input": item["source"], "decoded_frames": decoded["decoded_frames"],
                                             "expected_frames": decoded["expected_frames"]})
            for line in warnings_of(result):
                summary["warnings"].append(line)
                results.write(f"idm label: warning: {line}", file=sys.stderr)  # on its own line, not after the bar
        else:
            summary["failed"].append({"input": redact_text(item["source"]), "error": redact_text(result["error"])})
            if summary["num_items"] > 1:  # the only input's reason is the job's error (nothing_done)
                results.write(f"idm label: skipped: {redact_text(result['error'])}", file=sys.stderr)
    return summary
