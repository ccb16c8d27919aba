"""Train the world model: one process, or N Ray Train workers running the same function.

    worldloom pretrain train --data data/env --preset tiny --out runs/wm --minutes 20
    worldloom pretrain train --data data/env data/idm --weights 1 3 --out runs/wm --num-workers 2
    worldloom pretrain train --data data/env --preset large --out runs/wm-large --device cuda --num-workers 0 --address auto
    worldloom pretrain train --data data/env --out runs/wm-text --text       # conditioned on the captions too

    from worldloom.pretrain.train import TrainConfig, main
    main(TrainConfig(data=("data/env",), out="runs/wm", max_steps=200))

Running the same command again on the same --out resumes exactly (weights, EMA, optimizer,
schedule and data position) from RUN/checkpoint. Writes RUN/config.json, metrics.csv and
curves.png (layout: worldloom/checkpoint.py). A non-finite loss or gradient stops the run at
once (exit 2) with the last good checkpoint kept. `--num-workers 0 --device cuda` trains with
one Ray Train worker per GPU of the cluster.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from worldloom import checkpoint as ckpt
from worldloom.cluster import MAX_WORKERS, cluster_resources, ray_session
from worldloom.config import check_range, doc, to_json_dict
from worldloom.datasets import Dataset
from worldloom.datasets.storage import content_ids, resize_words
from worldloom.errors import UserError
from worldloom.folders import check_out, run_lock
from worldloom.paths import redact_text
from worldloom.training import (
    DEVICES,
    LR_MAX,
    MEMORY_HEADROOM,
    RESUMABLE_FIELDS,
    CtrlC,
    MetricsLog,
    TimeBudget,
    available_memory_bytes,
    check_device_name,
    check_finite,
    ema_decay_at,
    lr_at,
    resolve_device,
    update_ema,
)

from . import checkpoint
from .autoencoder import AE_FILE, PixelCodec, load_codec, save_codec, train_autoencoder
from .camera import fit_fov_deg, fit_hud_mask, fit_sprint_fov_deg
from .data import check_sources, frames_to_model, to_model_inputs, train_batches
from .flow import FlowConfig, flow_loss
from .model import PRESETS, WorldModel, WorldModelConfig, encode_actions, num_params, sprinting
from .text import TextConfig, build_vocab, tokenize

# The objective per model preset, chosen by quality per CPU-minute. tiny: every window is scored on
# its last frame from pure noise (t = 1, the one level one-step sampling reads) under a per-frame
# log-MSE: +1.47 dB next-frame PSNR over copy-last at 5 CPU-minutes, where the diffusion-forcing
# mix (the FlowConfig defaults, kept for the larger presets, which sample in several steps) was
# 0.6-4.6 dB below it (docs/log/2026-11-30-issue18.md, sections 5 and 7).
OBJECTIVES: dict[str, dict] = {"tiny": {"p_sampling_pattern": 1.0, "p_pure_noise": 1.0, "log_mse": True}}
FIT_PAIRS = 512  # frame pairs the camera field of view is fitted on (a few seconds on one core)
SPRINT_PAIRS, SPRINT_WINDOWS = 64, 4096  # pairs the sprint field of view is fitted on, found in at most this many windows
KIND = checkpoint.KIND
METRIC_FIELDS = ("step", "loss", "lr", "grad_norm", "clips_per_s", "elapsed_s")
CURVE_PANELS = (("loss", ("loss",), True), ("learning rate", ("lr",), False), ("clips/s", ("clips_per_s",), False))
# A resume may also stop early again (--stop-after counts this call's steps) or join another Ray cluster.
# --num-workers and --loader-workers are not among them: they change the batches (ClipStream deals by rank).
RESUMABLE = RESUMABLE_FIELDS | {"stop_after", "address"}
# Fitted from the data when not given, and kept in config.json (train and model or text sections).
FITTED_FIELDS = ("camera_fov_deg", "sprint_fov_deg", "text_vocab")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...] = doc("dataset directories (labeled env, pseudo-labeled idm, or unlabeled)")
    out: str = doc("run directory (resumed if it holds a checkpoint)")
    preset: str = doc(f"model size: {', '.join(PRESETS)}", "tiny")
    model: WorldModelConfig | None = doc("the model's shape, flag by flag on top of the preset's (e.g. --model.width 128)", None)
    weights: tuple[float, ...] | None = doc("sampling weight per dataset (default: by size)", None)
    num_workers: int = doc("Ray Train workers (1: this process, no Ray; 0 with --device cuda: one per GPU of the cluster)", 1)
    device: str = doc(f"where to train: {DEVICES} (cuda: bf16 autocast; with Ray Train, one GPU per worker)", "auto")
    address: str | None = doc("Ray cluster to join for Ray Train (HOST:PORT or auto); unset: a local one on loopback", None)
    minutes: float = doc("time budget, all resumes included: the schedule is fitted to it after 10 steps, and training stops when it runs out (0 = none)", 0.0)
    max_steps: int | None = doc("optimizer steps: the cosine schedule's length (default: 2000, or as many as --minutes allows)", None)
    batch_size: int = doc("clips per step per worker", 16)
    lr: float = doc("peak learning rate", 5e-4)
    warmup_steps: int = doc("linear warmup steps", 50)
    weight_decay: float = doc("AdamW weight decay", 0.0)
    grad_clip: float = doc("gradient norm clip", 1.0)
    ema_decay: float = doc("EMA decay (warmed up as (1+s)/(10+s))", 0.999)
    seed: int = doc("seed for data order, noise and init", 0)
    checkpoint_every: int = doc("steps between checkpoints", 100)
    log_every: int = doc("steps between metrics rows (metrics.csv rewritten at each, curves.png at most every 30 s)", 10)
    # Each DataLoader worker reads whole blocks of its own, so the count deals other batches. Dealing one process's
    # batches out to the workers instead read clip by clip: 165 clips/s against 676 with 2 workers (session 60).
    loader_workers: int = doc("DataLoader worker processes per training worker (each reads blocks of its own: another "
                              "number trains on other batches, and a resume keeps the run's)", 0)
    use_actions: bool = doc("condition on actions (off: every clip trains with the null action)", True)
    action_dropout: float = doc("probability a frame's action is replaced by the null action", 0.1)
    p_sampling_pattern: float | None = doc("fraction of windows noised like sampling (the rest: a noise level per "
                                           "frame); default: the preset's objective (OBJECTIVES)", None)
    p_pure_noise: float | None = doc("fraction of sampling-pattern windows whose last frame is pure noise (t = 1); "
                                     "default: the preset's objective", None)
    own_previous: float = doc("self forcing: fraction of sampling-pattern windows whose frame before the last is the "
                              "model's own one-step prediction", 0.0)
    log_mse: bool | None = doc("weight pure-noise frames by a per-frame log-MSE (the per-frame PSNR eval scores); "
                               "default: the preset's objective", None)
    camera_fov_deg: float | None = doc("field of view that turns the previous frame by the camera action (x_skip); "
                                       "default: fitted to the training data at the start and kept in config.json; 0: no turn", None)
    sprint_fov_deg: float | None = doc("field of view while sprinting, which the warp zooms to and from where sprinting starts "
                                       "or stops (x_skip with a turn); default: fitted to the training data at the start and "
                                       "kept in config.json; 0: the view never zooms", None)
    threads: int = doc("torch CPU threads per worker (0 = cores / workers)", 0)
    ae_steps: int = doc("autoencoder training steps before the world model (latent presets only)", 2000)
    stop_after: int = doc("stop (as if killed, checkpoint kept) after this many steps in this call; 0 = never", 0)
    text: bool = doc("condition on the datasets' captions too (a caption encoder trained from scratch, pretrain/text.py)", False)
    text_layers: int = doc("transformer blocks of the caption encoder (0: a bag of word embeddings and an MLP)", 1)
    caption_dropout: float = doc("--text: probability a window's caption is replaced by the null caption (guidance)", 0.1)
    context_dropout: float = doc("--text: probability a window's frames before the last are blanks (prompt-only rollouts)", 0.1)
    prompt_levels: float = doc("--text: fraction of blank windows whose frame is at a random noise level, for "
                               "prompt-only first frames drawn in several steps (--sample.prompt-steps; docs/pretrain.md, "
                               "'Prompt retrieval': the biome read from prompt-only rollouts 0.70x real clips -> 0.85x)", 0.5)
    text_vocab: tuple[str, ...] = doc("--text: the encoder's words (default: the captions' words, found at the start and "
                                      "kept in config.json)", ())

    def __post_init__(self):
        if not self.data:
            raise ValueError("no dataset given: pass --data DIR [DIR ...]")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.weights is not None and len(self.weights) != len(self.data):
            raise ValueError(f"weights has {len(self.weights)} values for {len(self.data)} datasets; give one per --data")
        if self.weights is not None and (min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError(f"weights must be >= 0 with a positive sum, got {list(self.weights)}")
        for name in ("batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "loader_workers", "ae_steps", "stop_after", "text_layers", "weight_decay"):
            if getattr(self, name) < 0:  # else torch's own error, as a traceback, after config.json is written
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        check_range("num_workers", self.num_workers, 0 if self.device.startswith("cuda") else 1, MAX_WORKERS,
                    "1: this process; 0 with --device cuda: one per GPU of the cluster")
        # one line for the flag that is wrong (they were refused together, naming four values; a new-user trial)
        if self.minutes < 0:
            raise ValueError(f"minutes must be >= 0 (0: no time limit), got {self.minutes}")
        if not 0 < self.lr <= LR_MAX:
            raise ValueError(f"lr must be in (0, {LR_MAX:.3g}] (float32's largest), got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check_device_name(self.device)
        _ = self.flow, self.model_config  # their own checks, naming the field

    @classmethod
    def nested_default(cls, name: str, values: dict) -> WorldModelConfig | None:
        """`--model.*` flags apply on top of the preset's model (worldloom.config)."""
        return PRESETS.get(values.get("preset", "tiny")) if name == "model" else None

    @property
    def model_config(self) -> WorldModelConfig:
        """The preset (or `model`), with the camera field of view once it is known (resolve_camera sets it)."""
        base = self.model if self.model is not None else PRESETS[self.preset]
        return dataclasses.replace(base, camera_fov_deg=self.camera_fov_deg or 0.0, sprint_fov_deg=self.sprint_fov_deg or 0.0)

    @property
    def flow(self) -> FlowConfig:
        """The training objective: the preset's (OBJECTIVES), with any field given here on top."""
        given = {name: getattr(self, name) for name in ("p_sampling_pattern", "p_pure_noise", "log_mse")}
        objective = {**OBJECTIVES.get(self.preset, {}), **{k: v for k, v in given.items() if v is not None}}
        return FlowConfig(action_dropout=self.action_dropout, own_previous=self.own_previous,  # dropouts: text runs only
                          caption_dropout=self.caption_dropout, context_dropout=self.context_dropout,
                          prompt_levels=self.prompt_levels, **objective)

    @property
    def text_config(self) -> TextConfig | None:
        """The caption encoder (--text), with its vocabulary once it is known (resolve_text sets it)."""
        return TextConfig(layers=self.text_layers, vocab=self.text_vocab) if self.text else None

    @property
    def gpu(self) -> bool:
        """Training on GPUs (asked for and present: resolve_device warns when absent)."""
        return self.device.startswith("cuda") and torch.cuda.is_available()


# a time-budgeted run's warmup: at most WARMUP_FRACTION (worldloom.training) of the steps it plans


def warmup_for(cfg: TrainConfig, budget: TimeBudget) -> int:
    """`cfg.warmup_steps`, but once a time budget has planned the run at most WARMUP_FRACTION of
    the planned steps (and not under the steps taken before the plan, so the ramp still ends at
    the peak): a short run must reach its peak rate. A function of the saved plan: resumes exact."""
    return budget.warmup(cfg.warmup_steps)


def lr_for(step: int, cfg: TrainConfig, budget: TimeBudget) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak at the budget's total steps (worldloom.training.lr_at)."""
    return lr_at(step, peak_lr=cfg.lr, warmup_steps=warmup_for(cfg, budget), total_steps=budget.total_steps,
                 min_lr_ratio=0.1)


def estimate_memory_bytes(mcfg: WorldModelConfig, batch_size: int) -> int:
    """Training memory per worker: fp32 weights, grads, AdamW moments, EMA, plus activations."""
    D, L = mcfg.width, mcfg.depth
    per_block = 2 * (4 * D * D) + 2 * int(mcfg.mlp_ratio * D) * D + 9 * D * D
    params = L * per_block + 2 * (D * mcfg.channels * mcfg.patch_size**2) + 6 * D * D + 300 * D
    tokens = batch_size * mcfg.num_frames * mcfg.tokens_per_frame
    acts = tokens * L * D * (14 + 3 * mcfg.mlp_ratio) * 4  # saved activations per block, fp32
    scores = batch_size * mcfg.num_frames * mcfg.num_heads * mcfg.tokens_per_frame**2 * 4 * L  # spatial attention
    return int(params * 4 * 5 + acts + scores)


def check_memory(cfg: TrainConfig) -> int:
    mcfg = cfg.model_config
    need, have = estimate_memory_bytes(mcfg, cfg.batch_size), available_memory_bytes(cfg.gpu)
    per_host = need * (1 if cfg.gpu else max(1, cfg.num_workers))  # CPU workers share this machine's memory
    if per_host > MEMORY_HEADROOM * have:
        raise UserError(
            f"preset {cfg.preset!r} with batch {cfg.batch_size} needs about {per_host / 2**30:.1f} GiB "
            f"({'per GPU' if cfg.gpu else f'{cfg.num_workers} worker(s)'}) but {have / 2**30:.1f} GiB is free; "
            "lower --batch-size or pick a smaller preset"
        )
    return need


def fit_camera(cfg: TrainConfig) -> float:
    """The camera field of view that best turns frame t into frame t+1 on labeled training pairs (0: none helps).

    Fitted on the episodes whose actions the game recorded (label_source env) where there are any:
    pseudo-labels are noisy where the fit needs them exact (on the demo's data, 48-60 degrees from
    pseudo-labeled pairs against 70 from true ones, the voxel world's field of view; issue 18's log).
    """
    mcfg = cfg.model_config
    if not cfg.use_actions or mcfg.prediction != "x_skip":
        return 0.0
    return fit_fov_deg(*camera_pairs(cfg))


def fit_sources(cfg: TrainConfig) -> tuple[tuple[str, ...], tuple[float, ...] | None, tuple[str, ...] | None]:
    """What the fields of view are fitted on: (datasets, weights, label sources) for train_batches, the episodes
    whose actions the game recorded (label_source env) where there are any, else all the data as trained."""
    true = tuple(path for path in cfg.data if "env" in Dataset(path).episodes.column("label_source").to_pylist())
    return (true, None, ("env",)) if true else (cfg.data, cfg.weights, None)


def camera_pairs(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """About FIT_PAIRS consecutive frame pairs with their camera action, from the episodes with true actions
    where there are any. -> prev, next (N, 3, S, S) in model units, camera (N, 2) degrees."""
    mcfg = cfg.model_config
    data, weights, sources = fit_sources(cfg)
    batches = train_batches(data, 2, cfg.batch_size, cfg.seed + 2, weights, label_sources=sources)
    prev, nxt, camera = [], [], []
    for _ in range(max(1, FIT_PAIRS // cfg.batch_size)):
        b = next(batches)
        keep = torch.as_tensor(b["has_action"]).bool()
        x = frames_to_model(torch.as_tensor(b["frames"])[keep], mcfg.image_size)  # (n, 2, 3, S, S)
        prev.append(x[:, 0])
        nxt.append(x[:, 1])
        camera.append(torch.as_tensor(b["camera"])[keep][:, 0].float())  # applied between the two frames
    return torch.cat(prev), torch.cat(nxt), torch.cat(camera)


def sprint_pairs(cfg: TrainConfig, fov_deg: float) -> float:
    """The sprint field of view (fit_sprint_fov_deg) on consecutive frame pairs where sprinting starts or stops, from
    the episodes with true actions where there are any: windows of three frames (the first action says whether the
    pair's first frame sprints) until SPRINT_PAIRS such pairs or SPRINT_WINDOWS windows (players hold sprint for
    long stretches: 4 changes in 512 pairs of the demo's labeled play), or as many windows as the data has frames
    (about three passes over it: a small dataset's changes are all seen long before SPRINT_WINDOWS)."""
    mcfg = cfg.model_config
    data, weights, sources = fit_sources(cfg)
    frames = 0
    for path in data:
        episodes = Dataset(path).episodes
        keep = [sources is None or s in sources for s in episodes.column("label_source").to_pylist()]
        frames += sum(n for n, k in zip(episodes.column("num_steps").to_pylist(), keep, strict=False) if k)
    batches = train_batches(data, 3, cfg.batch_size, cfg.seed + 3, weights, label_sources=sources)
    prev, nxt, camera, before, after = [], [], [], [], []
    found = 0
    for _ in range(max(1, min(SPRINT_WINDOWS, frames) // cfg.batch_size)):
        b = next(batches)
        action = encode_actions(torch.as_tensor(b["buttons"]).float(), torch.as_tensor(b["camera"]).float())  # (n, 3, 24)
        sprints = sprinting(action)
        keep = torch.as_tensor(b["has_action"]).bool() & (sprints[:, 0] != sprints[:, 1])
        if not keep.any():
            continue
        x = frames_to_model(torch.as_tensor(b["frames"])[keep], mcfg.image_size)  # (n, 3, 3, S, S)
        prev.append(x[:, 1])
        nxt.append(x[:, 2])
        camera.append(torch.as_tensor(b["camera"])[keep][:, 1].float())  # applied between frames 1 and 2
        before.append(sprints[keep][:, 0])  # the action that made frame 1
        after.append(sprints[keep][:, 1])  # the one between frames 1 and 2
        found += int(keep.sum())
        if found >= SPRINT_PAIRS:
            break
    if not found:
        return 0.0
    return fit_sprint_fov_deg(torch.cat(prev), torch.cat(nxt), torch.cat(camera), torch.cat(before), torch.cat(after), fov_deg)


def resolve_camera(cfg: TrainConfig) -> TrainConfig:
    """cfg with a known camera field of view and sprint field of view: given, kept from the run being resumed, or
    fitted now (a run of an older format has no sprint field of view: 0)."""
    if cfg.camera_fov_deg is not None and cfg.sprint_fov_deg is not None:
        return cfg
    if checkpoint.has_checkpoint(Path(cfg.out)):  # the run's own, checked (a damaged file: one line)
        doc = checkpoint.read_config(cfg.out)
        model = checkpoint.check_config(doc, Path(cfg.out) / ckpt.CONFIG_FILE)["model"]
        fov, sprint = model.camera_fov_deg, model.sprint_fov_deg
    else:
        fov = cfg.camera_fov_deg if cfg.camera_fov_deg is not None else fit_camera(cfg)
        sprint = cfg.sprint_fov_deg
        if sprint is None:
            sprint = sprint_pairs(cfg, fov) if fov > 0 and cfg.use_actions and cfg.model_config.prediction == "x_skip" else 0.0
    return dataclasses.replace(cfg, camera_fov_deg=fov if cfg.camera_fov_deg is None else cfg.camera_fov_deg,
                               sprint_fov_deg=sprint if cfg.sprint_fov_deg is None else cfg.sprint_fov_deg)


def resolve_text(cfg: TrainConfig) -> TrainConfig:
    """cfg with the caption encoder's vocabulary: given, kept from the run being resumed, or the data's captions' words."""
    if not cfg.text or cfg.text_vocab:
        return cfg
    if checkpoint.has_checkpoint(Path(cfg.out)):
        text = checkpoint.check_config(checkpoint.read_config(cfg.out), Path(cfg.out) / ckpt.CONFIG_FILE)["text"]
        if text is not None:
            return dataclasses.replace(cfg, text_vocab=text.vocab)
    return dataclasses.replace(cfg, text_vocab=build_vocab(cfg.data))


def _stale_codec(run: Path, doc_: dict) -> bool:
    """Whether the autoencoder a checkpoint-less run left in `run` was trained for another model or data."""
    try:
        old = json.loads((run / ckpt.CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return True
    return not isinstance(old, dict) or any(old.get(k) != json.loads(json.dumps(doc_.get(k)))
                                            for k in ("model", "data", ckpt.DATA_CONTENT))  # counts alike, shards not


def run_sections(cfg: TrainConfig) -> dict:
    """The sections of config.json the flags make beside `train`, compared whole on resume."""
    return {"model": to_json_dict(cfg.model_config), "text": to_json_dict(cfg.text_config) if cfg.text else None}


def check_resumable(cfg: TrainConfig) -> None:
    """UserError (one line) if cfg.out holds a checkpoint of a run with another config (worldloom.checkpoint).
    The camera field of view and the caption vocabulary, fitted from the data and kept in config.json,
    are compared as flags only where one gives them (resolve_camera, resolve_text: the run's own otherwise)."""
    if checkpoint.has_checkpoint(Path(cfg.out)):
        not_given = {name for name in FITTED_FIELDS if getattr(cfg, name) in (None, ())}
        resolved = resolve_text(resolve_camera(cfg))
        ckpt.check_resumable(cfg.out, resolved, run_sections(resolved), checkpoint.read_config, RESUMABLE | not_given,
                             data_content=content_ids(cfg.data))


def prepare_run(cfg: TrainConfig) -> tuple[TrainConfig, Path]:
    """Validate data and memory, fit the camera warp, write config.json (or check it matches a run being resumed)."""
    check_out(cfg.out, KIND)
    spec = check_sources(cfg.data, min_steps=cfg.model_config.num_frames)
    if cfg.use_actions and set(spec.label_sources) <= {"none"}:
        raise UserError(f"{', '.join(cfg.data)}: no episode carries actions (label_source none) but the model is conditioned "
                        "on them; label the footage with `worldloom idm label` first, or pass --no-use-actions")
    need = check_memory(cfg)
    check_resumable(cfg)  # before config.json is written: it records the flags the steps were taken with
    cfg = resolve_text(resolve_camera(cfg))
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    doc_ = {"train": to_json_dict(cfg), "model": to_json_dict(cfg.model_config), "flow": to_json_dict(cfg.flow),
            "data": dataclasses.asdict(spec), "memory_estimate_bytes": need, ckpt.DATA_CONTENT: content_ids(cfg.data)}
    if cfg.text_config is not None:  # only text runs have the section: other runs' config.json is as it was
        doc_["text"] = to_json_dict(cfg.text_config)
    if not checkpoint.has_checkpoint(run) and (run / AE_FILE).exists() and _stale_codec(run, doc_):
        (run / AE_FILE).unlink()  # a run stopped before its first checkpoint, of another model or data: retrained
    ckpt.write_run_config(run, KIND, doc_)
    return cfg, run


def prepare_codec(cfg: TrainConfig, run: Path, rank: int, world: int, device):
    """Pixel presets: the identity. Latent presets: train the autoencoder once (rank 0), then load it."""
    mcfg = cfg.model_config
    if not mcfg.latent_channels:
        return PixelCodec()
    if rank == 0 and not (run / AE_FILE).exists():
        batches = train_batches(cfg.data, 2, cfg.batch_size, cfg.seed + 1, cfg.weights, cfg.loader_workers)
        frames = (frames_to_model(b["frames"], mcfg.image_size) for b in batches)
        save_codec(train_autoencoder(mcfg, frames, cfg.ae_steps, cfg.lr, device), run, mcfg)
    if world > 1:
        dist.barrier()
    return load_codec(run, mcfg, device)


def train_worker(cfg: TrainConfig, ctrl_c: CtrlC | None = None) -> dict:
    """The training loop every worker runs (rank 0 writes); distributed when a process group exists.
    `ctrl_c`: the caller's (installed at the command's start), else one is installed here (one process)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = torch.device(f"cuda:{torch.cuda.current_device()}") if cfg.gpu else torch.device("cpu")
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // (1 if cfg.gpu else world)))
    torch.manual_seed(cfg.seed)
    run, mcfg = Path(cfg.out), cfg.model_config
    model = WorldModel(mcfg, cfg.text_config).to(device)
    if mcfg.hud_mask and mcfg.turns_camera and not checkpoint.has_checkpoint(run):  # resumed: the saved one
        model.hud.copy_(fit_hud_mask(*camera_pairs(cfg), mcfg.camera_fov_deg).to(device))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    state = {"step": 0, "elapsed_s": 0.0, "planned_steps": None}
    if checkpoint.has_checkpoint(run):
        state = checkpoint.load_checkpoint(run, model, ema, opt, device)
    budget = TimeBudget(cfg.minutes, cfg.max_steps, state.get("planned_steps"))
    codec = prepare_codec(cfg, run, rank, world, device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    batches = train_batches(cfg.data, mcfg.num_frames, cfg.batch_size, cfg.seed,  # ClipStream deals by rank
                            cfg.weights, cfg.loader_workers, skip=state["step"])
    log = MetricsLog(run, METRIC_FIELDS, resume_step=state["step"], panels=CURVE_PANELS, enabled=rank == 0)
    if state["step"] and rank == 0:
        print(budget.resuming("pretrain train", state["step"], state["elapsed_s"], run / checkpoint.CHECKPOINT_DIR),
              file=sys.stderr)
    bar = tqdm(total=budget.shown_total, initial=state["step"], desc="pretrain", unit="step", disable=rank != 0,
               dynamic_ncols=True)
    if ctrl_c is None:  # Ctrl-C / SIGTERM at the end of its step; Ray Train's: the driver's
        ctrl_c = CtrlC().install() if world == 1 else CtrlC()
    ctrl_c.begin_steps()
    start_time, start_elapsed, step = time.perf_counter(), state["elapsed_s"], state["step"]
    step0, last_log, last_log_step = step, time.perf_counter(), step
    last_good = f"{run / checkpoint.CHECKPOINT_DIR} (step {step})" if step else None
    try:
        while step < budget.total_steps:
            batch = next(batches)
            if step == step0 and rank == 0:  # said once the data has read well (a bad shard: its one line only)
                announce_resize(tuple(batch["frames"].shape[-3:-1]), mcfg.image_size)
            x, action, has = (t.to(device) for t in to_model_inputs(batch, mcfg.image_size, cfg.use_actions))
            x = codec.encode(x)  # pixels, or autoencoder latents
            inputs = {"text": tokenize(batch["caption"], cfg.text_config).to(device)} if cfg.text else {}
            if "pitch" in batch:  # each frame's view pitch where the dataset recorded it (world_yaw models turn with it)
                inputs["pitch"] = torch.as_tensor(batch["pitch"]).float().to(device)
            lr = lr_for(step, cfg, budget)
            for g in opt.param_groups:
                g["lr"] = lr
            gen = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step * world + rank)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.gpu):
                loss = flow_loss(net, x, action, has, cfg.flow, generator=gen, **inputs)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            loss_all = _mean(loss.detach(), world)
            check_finite(loss_all.item(), float(grad_norm), step + 1, last_good)  # every rank sees the same mean
            opt.step()
            opt.zero_grad(set_to_none=True)
            update_ema(ema, model, ema_decay_at(step, cfg.ema_decay))
            step += 1
            bar.update(1)
            elapsed = start_elapsed + time.perf_counter() - start_time
            before = budget.planned_steps
            budget.update(step, elapsed, step - step0)
            # rank 0's plan and clock on every rank, at every step, in one broadcast: a refit falls due by each rank's
            # own clock (TimeBudget)
            planned, out_of_time = _agree((-1 if budget.planned_steps is None else budget.planned_steps,
                                           int(budget.out_of_time(elapsed))), device)
            budget.planned_steps, out_of_time = None if planned < 0 else planned, bool(out_of_time)
            if budget.planned_steps != before:
                bar.total = budget.shown_total
            pressed = ctrl_c.pressed  # Ctrl-C (this process, no Ray Train): save this step, then stop
            stopping = out_of_time or (cfg.stop_after > 0 and step - step0 >= cfg.stop_after) or pressed
            saving = step % cfg.checkpoint_every == 0 or step == budget.total_steps or stopping
            # a row at each --log-every step and at the run's end (its steps or its --minutes spent), as idm and agent
            # train log them; not where --stop-after or Ctrl-C stops it: the resume would keep that row, one an
            # uninterrupted run has not (rows 3, 5, 6, 7 for 3, 6, 7)
            if step % cfg.log_every == 0 or step == budget.total_steps or out_of_time:
                now = time.perf_counter()
                clips_s = cfg.batch_size * world * (step - last_log_step) / max(1e-9, now - last_log)
                last_log, last_log_step = now, step
                log.row(step=step, loss=loss_all.item(), lr=lr, grad_norm=float(grad_norm), clips_per_s=clips_s, elapsed_s=elapsed)
                bar.set_postfix(loss=f"{loss_all.item():.4f}", lr=f"{lr:.1e}", **budget.clock(elapsed))
                if not saving:
                    log.write()  # metrics.csv at every row, curves.png every 30 s (the checkpoint below: both)
            if saving:
                if rank == 0:
                    checkpoint.save_checkpoint(run, model, ema, opt, {"step": step, "elapsed_s": elapsed,
                                                                      "world_size": world, **budget.state()})
                    log.write(plot=True)
                last_good = f"{run / checkpoint.CHECKPOINT_DIR} (step {step})"
                if world > 1:
                    dist.barrier()
            if pressed:
                raise ctrl_c.stopped(step, run / checkpoint.CHECKPOINT_DIR)
            if stopping:
                break
    finally:
        ctrl_c.restore()
        bar.close()
    return {"step": step, "planned_steps": budget.total_steps}


def announce_resize(frame_hw: tuple[int, int], size: int) -> None:
    """One line when the datasets' frames are resized to the model's input (frames_to_model, every batch)."""
    if tuple(frame_hw) != (size, size):
        tqdm.write(f"pretrain train: {resize_words(frame_hw, (size, size))} for the model's input (area)", file=sys.stderr)


def _mean(value: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return value


def _agree(values: tuple[int, ...], device) -> tuple[int, ...]:
    """Rank 0's values on every rank (planned steps, the out-of-time flag), one broadcast."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.broadcast(t, 0)
    return tuple(int(v) for v in t.tolist())


def _ray_loop(config: dict) -> None:
    model = config.pop("model", None)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()},
                      model=WorldModelConfig(**model) if model else None)
    train_worker(cfg)


def run_ray(cfg: TrainConfig) -> None:
    """The same train_worker on Ray Train workers (gloo on CPU, nccl on GPU), in the session
    the caller opened (the pipeline's) or in one opened here (worldloom.cluster)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    with ray_session(cfg.address, None if cfg.gpu else max(cfg.num_workers, os.cpu_count() or 1)):
        gpu = cluster_gpu(cfg)
        num_workers = cfg.num_workers or int(cluster_resources().get("GPU", 0))
        if num_workers < 1:  # main checked before writing; a caller of run_ray alone hears the same
            raise UserError(f"{GPU_WORKERS}, but the Ray cluster has none; give --num-workers N to train with N Ray "
                            "Train workers on the CPU (1: in this process), or join a cluster with GPUs (--address)")
        abs_cfg = dataclasses.replace(cfg, out=str(Path(cfg.out).resolve()), data=tuple(_abs(d) for d in cfg.data))
        trainer = TorchTrainer(
            _ray_loop,
            train_loop_config=to_json_dict(abs_cfg),
            torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=gpu,
                                                   resources_per_worker=None if gpu else {"CPU": 1}),
            run_config=ray.train.RunConfig(name="ray-train", storage_path=str(Path(abs_cfg.out) / "ray")),
        )
        # Ray Train's own SIGINT handler (set inside fit) asks its controller to abort and then leaves
        # with sys.exit(0), which ended the command with exit code 1 and no word (a new-user trial).
        # Ctrl-C stays ours instead, as SIGTERM is: a KeyboardInterrupt here, the session shut down on
        # the way out, the CLI's `interrupted; ... resume` line and exit code 130.
        trainer._register_sigint_handler = lambda controller: None
        try:
            trainer.fit()
        except Exception as err:  # Ray wraps worker errors; a UserError inside stays a one-line message
            cause = err
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__ or getattr(cause, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            raise


def cluster_gpu(cfg: TrainConfig) -> bool:
    """Whether Ray Train's workers train on GPUs: `--device cuda` and the cluster of the running Ray session has
    one. A local cluster's GPUs are this machine's; a cluster joined with `--address` has its own, whatever the
    driver has (until 2026-12-07 the driver's torch decided: a laptop without a GPU driving a GPU cluster trained
    its workers on their CPUs, with gloo). `--device cuda` on a cluster without one: a loud warning (the driver
    warned already where it has no GPU itself), CPU workers."""
    if not cfg.device.startswith("cuda"):
        return False
    if int(cluster_resources().get("GPU", 0)) >= 1:
        return True
    if cfg.address is not None:
        print(f"WARNING: --device {cfg.device} asked for GPUs but the Ray cluster at --address "
              f"{redact_text(cfg.address)} has none: its Ray Train workers train on the CPU. Join a cluster with GPUs, "
              "or pass --device cpu to silence this.", file=sys.stderr, flush=True)
    return False


def _abs(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def main(cfg: TrainConfig) -> Path:
    """Check inputs, fit the camera warp, train (in-process or on Ray Train), return the run directory.
    Ctrl-C or SIGTERM stops at once before the first step, else at the end of its step (CtrlC)."""
    with CtrlC() as ctrl_c, run_lock(cfg.out, KIND, "pretrain train"), contextlib.ExitStack() as session:
        check_resumable(cfg)  # (--out was checked by run_lock) another config: that error, before "already finished"
        if finished := ckpt.finished_run(cfg.out, KIND, "pretrain train", cfg.minutes, cfg.max_steps):
            print(finished, file=sys.stderr)  # its samples, curves and config are left as they are
            return Path(cfg.out)
        if cfg.num_workers == 0:  # one Ray Train worker per GPU: refused before anything is written where there is none
            check_gpu_workers(cfg, session)
        # warns loudly when a GPU was asked for and is absent; a cluster joined decides for its own workers (cluster_gpu)
        joined = cfg.num_workers != 1 and cfg.address is not None
        device = "of the Ray cluster joined" if joined else resolve_device(cfg.device)
        cfg, run = prepare_run(cfg)
        mcfg = cfg.model_config
        words = f"; captions: {len(cfg.text_vocab)} words" if cfg.text else ""
        sprint = f" ({mcfg.sprint_fov_deg:g} sprinting)" if mcfg.sprint_fov_deg else ""
        print(f"pretrain: {cfg.preset} ({num_params(WorldModel(mcfg, cfg.text_config)) / 1e6:.2f}M params) on "
              f"{len(cfg.data)} dataset(s) -> {run}; device {device}; camera field of view {mcfg.camera_fov_deg:g} "
              f"degrees{sprint}{words}")
        if not cfg.minutes and cfg.max_steps is None:  # an hour or more on a CPU: said before it starts
            print(f"pretrain: budget {TimeBudget().flags} (set one with --minutes or --max-steps); Ctrl-C stops "
                  "after the step it is in and keeps the checkpoint")
        if cfg.num_workers != 1:
            ctrl_c.restore()  # Ray Train's driver takes Ctrl-C
            run_ray(cfg)
        else:
            train_worker(cfg, ctrl_c)
    return run


GPU_WORKERS = "--num-workers 0 asks for one Ray Train worker per GPU"


def check_gpu_workers(cfg: TrainConfig, session: contextlib.ExitStack) -> None:
    """UserError (one line, nothing written) when `--num-workers 0` (one Ray Train worker per GPU) finds no
    GPU: none on this machine without --address (a local cluster has this machine's GPUs), or none in the
    cluster joined (its session is opened here, in `session`, and `run_ray` uses it)."""
    if cfg.address is None and not torch.cuda.is_available():
        where = "torch sees none on this machine"
    else:
        session.enter_context(ray_session(cfg.address, None))
        if int(cluster_resources().get("GPU", 0)) >= 1:
            return
        where = "the Ray cluster has none"
    raise UserError(f"{GPU_WORKERS}, but {where}; give --num-workers N "
                    "to train with N Ray Train workers on the CPU (1: in this process), or join a cluster with GPUs "
                    "(--address)")
