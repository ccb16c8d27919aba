"""Train the inverse dynamics model on labeled episodes.

    worldloom idm train --data data/voxel --preset tiny --out runs/idm --minutes 15
    worldloom idm train --data data/voxel --preset tiny --model.height 128 --model.width 128 --out runs/idm128

Windows of T frames are drawn from episodes whose actions were recorded by the env
(label_source `env`), split into train and validation by whole episodes. AdamW with linear
warmup and a cosine decay; bf16 autocast on CUDA. Running it again with the same `--out`
resumes from the last checkpoint and ends exactly where an uninterrupted run would: the batch
at step s and the dropout noise are pure functions of (seed, s), and the optimizer state is
saved (the run directory's layout: idm/checkpoint.py). A non-finite loss or gradient stops the
run at once with the last good checkpoint kept.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldloom import checkpoint as ckpt
from worldloom.actions import camera_to_bin_position, two_hot
from worldloom.config import doc, to_json_dict
from worldloom.datasets.storage import content_ids
from worldloom.errors import UserError
from worldloom.folders import check_out, run_lock
from worldloom.idm import data as idm_data
from worldloom.idm import metrics
from worldloom.idm.checkpoint import (
    KIND,
    SPREAD_RANGE,
    button_thresholds,
    camera_spread,
    load_idm,
    press_probability,
    read_config,
    write_button_thresholds,
    write_camera_spread,
)
from worldloom.idm.model import IDM, PRESETS, IDMConfig, num_parameters
from worldloom.training import (
    DEVICES,
    LR_MAX,
    CtrlC,
    MetricsLog,
    TimeBudget,
    adamw,
    capped_warmup,
    check_device_name,
    lr_at,
    resolve_device,
    run_steps,
)


@dataclass(frozen=True)
class TrainHparams:
    """The optimizer settings a preset trains with where the config leaves them unset."""

    batch_size: int
    lr: float
    warmup_steps: int
    camera_weight: float = 1.0
    reader_batch_size: int = 64
    trunk_every: int = 1


# `tiny` is tuned for minutes on a CPU (docs/idm.md, "Making tiny learn fast"): T = 16 windows in
# batches of 16 (more distinct windows per second of compute than 8 x 32, and 1.5x more frames/s
# on one core), a peak rate of 3e-3 and a short warmup. The camera's loss stays weighted 1: weight 2
# bought camera R² +0.02-0.05 pitch on section 30's harness, but in the demo it took the rare
# buttons' F1 down to persistence's (macro F1 0.392 against 0.367; issue 18's log, section 32).
# The camera reader's 256 cached windows a step cost about half of tiny's trunk step on one core (0.30 s
# against 0.54 s); its held-out camera R² rose until about 64,000-96,000 windows (issue 18's log, section 39).
# With the button reader beside it, the trunk trains every third step: on a machine half as fast as the
# one the demo was tuned on, every third step gave held-out macro F1 0.480 and camera R² 0.707 / 0.789
# against 0.430 and 0.651 / 0.761 for every step (persistence 0.367, 0.689 / 0.764; section 40).
TRAIN_PRESETS: dict[str, TrainHparams] = {"tiny": TrainHparams(batch_size=16, lr=3e-3, warmup_steps=10, reader_batch_size=256,
                                                               trunk_every=3)}
DEFAULT_HPARAMS = TrainHparams(batch_size=8, lr=1e-3, warmup_steps=50)

METRIC_FIELDS = ("step", "lr", "loss", "button_loss", "camera_loss", "val_loss", "val_button_accuracy",
                 "val_button_macro_f1", "val_camera_bin_accuracy", "elapsed_s", "windows_per_s")
CURVE_PANELS = (("loss", ("loss", "val_loss"), True),
                ("validation", ("val_button_accuracy", "val_button_macro_f1", "val_camera_bin_accuracy"), False))


@dataclass(frozen=True)
class TrainConfig:
    """How to train an IDM; stored in config.json in the run directory."""

    data: tuple[str, ...] = doc("labeled WorldLoom dataset directories (label_source env)")
    out: str = doc("run directory: checkpoint, metrics.csv, curves.png (resumed if it exists)")
    preset: str = doc(f"model size: one of {', '.join(sorted(PRESETS))}", "tiny")
    model: IDMConfig | None = doc("the model's shape, flag by flag on top of the preset's (e.g. --model.height 128)", None)
    max_steps: int | None = doc("optimizer steps: the cosine schedule's length (default: 2000, or as many as "
                                "--minutes allows)", None)
    minutes: float = doc("wall-clock budget in minutes, all resumes included (0: none); the schedule is fitted to it", 0.0)
    batch_size: int | None = doc("windows per step (default: the preset's, 16 for tiny, else 8)", None)
    lr: float | None = doc("peak learning rate (default: the preset's, 3e-3 for tiny, else 1e-3)", None)
    min_lr_ratio: float = doc("final learning rate as a fraction of the peak", 0.05)
    warmup_steps: int | None = doc("linear warmup steps (default: the preset's, 10 for tiny, else 50)", None)
    weight_decay: float = doc("AdamW weight decay", 0.05)
    camera_weight: float | None = doc("weight of the camera cross-entropy beside the button loss (default: the "
                                      "preset's: 1)", None)
    reader_batch_size: int | None = doc("cached windows of motion matches the camera and button readers train on each "
                                        "step, beside the trunk's (default: the preset's, 256 for tiny, else 64; models "
                                        "without the readers ignore it)", None)
    trunk_every: int | None = doc("the trunk trains on every this many steps, the readers alone on the others (a "
                                  "trunk step costs several reader steps; default: the preset's, 3 for tiny, else 1)", None)
    reader_cache_gb: float = doc("memory for the camera reader's cache of motion matches (float16, about 6.2 kB a step "
                                 "of play at 64x64); episodes past it are read through the trunk's windows only", 4.0)
    button_pos_weight: float = doc("BCE weight of a pressed button against a released one (rare presses: F1)", 3.0)
    mirror: float = doc("probability that a training window is mirrored left-right (left/right swapped, yaw "
                        "negated, hotbar reversed); measured worse on VoxelWorld, whose HUD is not symmetric "
                        "(docs/idm.md)", 0.0)
    reader_mirror: float = doc("probability that a readers' cached window is mirrored left-right (its matches "
                               "permuted as the mirrored frames' are, its labels as --mirror's): twice the readers' data",
                               0.5)
    max_hours: float = doc("train on at most this many hours of labeled play (0: all; for scaling curves)", 0.0)
    val_fraction: float = doc("fraction of episodes held out for validation", 0.1)
    val_windows: int = doc("validation windows scored at each evaluation", 32)
    log_every: int = doc("steps between metrics rows (metrics.csv rewritten at each, curves.png at most every 30 s)", 10)
    eval_every: int = doc("steps between validation passes (their rows add the val_* columns)", 100)
    checkpoint_every: int = doc("steps between checkpoints", 100)
    seed: int = doc("seed of the model init, the split and the batches", 0)
    device: str = doc(f"where to train: {DEVICES}", "auto")
    threads: int = doc("torch CPU threads (0: torch's default)", 0)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data must name at least one dataset directory")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(sorted(PRESETS))}, got {self.preset!r}")
        for name in ("max_steps", "batch_size", "warmup_steps", "reader_batch_size", "trunk_every"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"{name} must be >= {0 if name == 'warmup_steps' else 1}, got {value}")
        for name in ("log_every", "eval_every", "checkpoint_every", "val_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "minutes", "max_hours", "weight_decay", "camera_weight", "reader_cache_gb"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        for name in ("mirror", "reader_mirror"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.button_pos_weight <= 0:
            raise ValueError(f"button_pos_weight must be > 0, got {self.button_pos_weight}")
        if self.lr is not None and not 0 < self.lr <= LR_MAX or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"lr must be a number in (0, {LR_MAX:.3g}] (float32's largest) and min_lr_ratio in [0, 1], "
                             f"got {self.lr}, {self.min_lr_ratio}")
        check_device_name(self.device)

    @classmethod
    def nested_default(cls, name: str, values: dict) -> IDMConfig | None:
        """`--model.*` flags apply on top of the preset's model (worldloom.config)."""
        return PRESETS.get(values.get("preset", "tiny")) if name == "model" else None

    @property
    def model_config(self) -> IDMConfig:
        """The model's shape: `model` if given, else the preset's."""
        return self.model if self.model is not None else PRESETS[self.preset]

    @property
    def hparams(self) -> TrainHparams:
        """batch_size, lr, warmup_steps, camera_weight, reader_batch_size and trunk_every: the given ones, else the
        preset's."""
        base = TRAIN_PRESETS.get(self.preset, DEFAULT_HPARAMS)
        given = {k: getattr(self, k) for k in ("batch_size", "lr", "warmup_steps", "camera_weight", "reader_batch_size",
                                               "trunk_every")
                 if getattr(self, k) is not None}
        return dataclasses.replace(base, **given)


def camera_loss(logits: torch.Tensor, camera_pos: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of camera logits (B, T, 2, bins) against two-hot targets at the continuous bin
    positions (B, T, 2), summed over the 2 axes."""
    logits = logits.float()
    target = two_hot(camera_pos, logits.shape[-1])  # (B, T, 2, bins)
    return -(target * F.log_softmax(logits, -1)).sum(-1).mean() * 2


def button_loss(logits: torch.Tensor, buttons: torch.Tensor, pos_weight: float = 1.0,
                keep: torch.Tensor | None = None) -> torch.Tensor:
    """BCE of button logits (B, T, 20) against 0/1 targets, summed over the 20 buttons (presses weighted
    by pos_weight; `keep` (20,) 0/1: only the buttons it keeps)."""
    weight = torch.full((buttons.shape[-1],), float(pos_weight), device=buttons.device)
    bce = F.binary_cross_entropy_with_logits(logits.float(), buttons, pos_weight=weight, reduction="none")  # (B, T, 20)
    return (bce if keep is None else bce * keep).sum(-1).mean()


def losses(out: dict[str, torch.Tensor], buttons: torch.Tensor, camera_pos: torch.Tensor,
           pos_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(button loss, camera loss): `button_loss` and `camera_loss`."""
    return button_loss(out["buttons"], buttons, pos_weight), camera_loss(out["camera"], camera_pos)


class MatchCache:
    """The motion branch's raw matches (`MotionBranch.raw`) of every step of the training episodes, kept
    in float16 on the CPU, and their camera and button targets: windows for the camera and button readers
    at about a thirtieth of the cost of the trunk's (the matching has no parameters, so a step's matches
    never change), mirrored left-right by a permutation where asked (`MotionBranch.mirror_map`).

    Episodes are taken in a seeded order until `max_bytes`; a step's matches are those its window in
    the trunk sees (the frame after an episode's last one black, as `idm_data.padded_frames` pads).
    """

    CHUNK = 256  # steps matched per call

    def __init__(self, model: IDM, episodes: list, max_bytes: float, seed: int, device: torch.device) -> None:
        self.num_frames = model.cfg.num_frames
        self.mirror_index, self.mirror_sign = model.motion.mirror_map()  # raw of the frames mirrored left-right
        per_step = 2 * model.motion.num_raw  # float16 bytes
        self.raw, self.camera_pos, self.buttons, self.index = [], [], [], {}  # index: episode's position in `episodes` -> in raw
        used = 0
        for i in np.random.default_rng([seed, 5381]).permutation(len(episodes)):
            ep = episodes[i]
            if used + ep.num_steps * per_step > max_bytes:
                break
            used += ep.num_steps * per_step
            self.index[int(i)] = len(self.raw)
            frames = idm_data.padded_frames(ep.frames, 0, ep.num_steps + 1)  # (N + 1, H, W, 3)
            parts = []
            for start in range(0, ep.num_steps, self.CHUNK):
                chunk = torch.from_numpy(frames[start:start + self.CHUNK + 1]).to(device)
                pixels = chunk.permute(3, 0, 1, 2)[None].float() / 255.0  # (1, 3, n + 1, H, W)
                parts.append(model.motion.raw(pixels)[0].to("cpu", torch.float16))  # (n, num_raw)
            self.raw.append(torch.cat(parts))
            self.camera_pos.append(torch.from_numpy(camera_to_bin_position(ep.camera[:ep.num_steps]).astype(np.float32)))
            self.buttons.append(torch.from_numpy(np.ascontiguousarray(ep.buttons[:ep.num_steps], dtype=np.float32)))
        self.nbytes = used

    @property
    def num_steps(self) -> int:
        return sum(len(r) for r in self.raw)

    def mirrored(self, raw: torch.Tensor, flips: np.ndarray) -> torch.Tensor:
        """Windows' matches (B, T, num_raw) with those where `flips` (B,) is true replaced by the matches of
        their frames mirrored left-right (`MotionBranch.mirror_map`)."""
        if not flips.any():
            return raw
        rows = torch.from_numpy(np.flatnonzero(flips))
        raw = raw.clone()
        raw[rows] = raw[rows][..., self.mirror_index] * self.mirror_sign.to(raw.dtype)
        return raw

    def windows(self, batch: dict[str, np.ndarray]) -> torch.Tensor | None:
        """The matches (B, T, num_raw) float32 of a batch of `idm_data.sample_windows` (mirrored where its
        windows are), or None where one of its windows' episodes is not cached (the model then matches
        its frames itself)."""
        if not all(int(i) in self.index for i in batch["episode"]):
            return None
        T = batch["camera_pos"].shape[1]
        raw = torch.stack([self.raw[self.index[int(i)]][s:s + T] for i, s in zip(batch["episode"], batch["start"], strict=True)]).float()
        return self.mirrored(raw, batch["mirrored"])

    def sample(self, batch_size: int, rng: np.random.Generator,
               mirror: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random windows of T steps: raw (B, T, num_raw) float32, camera bin positions (B, T, 2), buttons
        (B, T, 20) 0/1; episodes drawn in proportion to their windows, as `idm_data.sample_windows` draws
        the trunk's; each mirrored left-right with probability `mirror`."""
        T = self.num_frames
        counts = np.array([len(r) - T + 1 for r in self.raw], dtype=np.float64)
        picks = rng.choice(len(self.raw), size=batch_size, p=counts / counts.sum())
        starts = [int(rng.integers(0, counts[i])) for i in picks]
        raw = torch.stack([self.raw[i][s:s + T] for i, s in zip(picks, starts, strict=True)]).float()
        pos = torch.stack([self.camera_pos[i][s:s + T] for i, s in zip(picks, starts, strict=True)])
        buttons = torch.stack([self.buttons[i][s:s + T] for i, s in zip(picks, starts, strict=True)])
        flips = rng.random(batch_size) < mirror if mirror > 0 else np.zeros(batch_size, bool)
        if flips.any():  # the labels as `idm_data.mirror_window` mirrors them
            buttons[flips], pos[flips] = map(torch.from_numpy, idm_data.mirror_labels(buttons[flips].numpy(), pos[flips].numpy()))
        return self.mirrored(raw, flips), pos, buttons


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(batch["frames"]).to(device), torch.from_numpy(batch["buttons"]).to(device),
            torch.from_numpy(batch["camera_pos"]).to(device))


@torch.no_grad()
def validate(model: IDM, batch: dict[str, np.ndarray], cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Loss and scores on the fixed validation windows."""
    if not batch:
        return {}
    model.eval()
    outs, total, size = [], 0.0, cfg.hparams.batch_size
    for i in range(0, len(batch["frames"]), size):
        part = {k: v[i:i + size] for k, v in batch.items()}
        frames, buttons, camera_pos = to_device(part, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(frames)
        b_loss, c_loss = losses(out, buttons, camera_pos, cfg.button_pos_weight)
        total += float(b_loss + cfg.hparams.camera_weight * c_loss) * len(frames)
        # pressed where a press is the more likely (checkpoint.button_logit_shift): what `idm label` writes
        outs.append((out["buttons"].float().cpu() > math.log(cfg.button_pos_weight), out["camera"].float().argmax(-1).cpu()))
    model.train()
    pred_buttons = torch.cat([o[0] for o in outs]).flatten(0, 1).numpy()
    pred_bins = torch.cat([o[1] for o in outs]).flatten(0, 1).numpy()
    true_buttons = batch["buttons"].reshape(-1, batch["buttons"].shape[-1]) > 0.5
    true_bins = np.rint(batch["camera_pos"]).astype(np.int64).reshape(-1, 2)
    f1 = metrics.f1_scores(pred_buttons, true_buttons)
    occurs = true_buttons.any(0)
    return {"val_loss": total / len(batch["frames"]),
            "val_button_accuracy": float((pred_buttons == true_buttons).mean()),
            "val_button_macro_f1": float(np.nanmean(f1[occurs])) if occurs.any() else float("nan"),
            "val_camera_bin_accuracy": float((pred_bins == true_bins).mean())}




def check_resumable(cfg: TrainConfig) -> None:
    """UserError (one line) if cfg.out holds a checkpoint of a run with another config (worldloom.checkpoint)."""
    ckpt.check_resumable(cfg.out, cfg, {"model": to_json_dict(cfg.model_config)}, read_checked,
                         data_content=content_ids(cfg.data))


def read_checked(run_dir: str | Path) -> dict:
    """config.json with its `model` section checked too (`model_config`): a hand-edited value is named, field and
    file, where comparing it said "a different config (model): ... or the same flags to resume it" to a user who
    had given the same flags (a new-user trial, session 57)."""
    from worldloom.idm.checkpoint import model_config

    model_config(run_dir)
    return read_config(run_dir)


def prepare_run_dir(cfg: TrainConfig, fps: float) -> Path:
    """Create the run directory and write config.json (with `fps`, the datasets' step rate, which eval and
    label check their data against), or check that a resumed run's config matches. A run that stopped
    before its first checkpoint has nothing to resume: its folder is reused."""
    check_out(cfg.out, KIND)
    check_resumable(cfg)
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_run_config(run_dir, KIND, {"train": to_json_dict(cfg), "model": to_json_dict(cfg.model_config),
                                          "data": {"fps": float(fps)}, ckpt.DATA_CONTENT: content_ids(cfg.data)})
    return run_dir


def init_state(cfg: TrainConfig, run_dir: Path, device: torch.device) -> tuple[IDM, torch.optim.AdamW, dict]:
    """A fresh model and optimizer, or both restored from the run's last checkpoint."""
    torch.manual_seed(cfg.seed)
    model = IDM(cfg.model_config).to(device)
    optimizer = adamw(model, cfg.hparams.lr, cfg.weight_decay)  # no weight decay on biases and norms
    return model, optimizer, ckpt.resume_or_start(run_dir, KIND, model, optimizer, device)


def main(cfg: TrainConfig, stop_after: int | None = None) -> Path:
    """Train (or resume) and return the run directory. `stop_after` simulates a kill (tests).
    Ctrl-C or SIGTERM stops at once before the first step, else at the end of its step (CtrlC)."""
    with CtrlC() as ctrl_c, run_lock(cfg.out, KIND, "idm train"):
        return _train(cfg, ctrl_c, stop_after)


def _train(cfg: TrainConfig, ctrl_c: CtrlC, stop_after: int | None) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    mcfg, hp = cfg.model_config, cfg.hparams
    check_resumable(cfg)  # (--out was checked by run_lock) another config: that error, before "already finished"
    finished = ckpt.finished_run(cfg.out, KIND, "idm train", cfg.minutes, cfg.max_steps)
    if finished and button_thresholds(cfg.out) is not None and camera_spread(cfg.out) is not None:
        print(finished, file=sys.stderr)  # its decoding fits, curves and config are left as they are
        return Path(cfg.out)
    episodes = idm_data.load_episodes(cfg.data, require_labels=True, same_frames=True)  # checked before anything is written into --out: a failed command leaves no config.json behind
    idm_data.check_frame_size(episodes, mcfg.height, mcfg.width, "training")
    train_eps, val_eps = idm_data.split_episodes(idm_data.usable(episodes, mcfg.num_frames), cfg.val_fraction, cfg.seed)
    idm_data.check_learnable(train_eps)  # frozen frames or no action: nothing to learn, one line
    if finished:  # stopped on its last step (Ctrl-C, a kill) before its decoding was fitted, or trained before the
        # camera spread was (2026-12-05): fit them now, on the same validation episodes
        print(f"{finished}; fitting the press thresholds and camera spread labeling decodes with" if val_eps else finished,
              file=sys.stderr)
        if val_eps:  # (no validation episodes: a run that never had them)
            fit_decoding(Path(cfg.out), val_eps, device)
        return Path(cfg.out)
    train_eps = idm_data.take_hours(train_eps, cfg.max_hours, cfg.seed)
    val_batch = idm_data.fixed_windows(val_eps, mcfg.num_frames, mcfg.context, cfg.val_windows, cfg.seed)
    run_dir = prepare_run_dir(cfg, episodes[0].fps)  # load_episodes(same_frames): one rate
    model, optimizer, state = init_state(cfg, run_dir, device)
    budget = TimeBudget(cfg.minutes, cfg.max_steps, state.get("planned_steps"))
    log = MetricsLog(run_dir, METRIC_FIELDS, resume_step=state["step"], panels=CURVE_PANELS)
    print(f"idm train: {num_parameters(model) / 1e6:.2f}M parameters, {len(train_eps)} train / {len(val_eps)} val episodes, "
          f"{sum(e.num_steps for e in train_eps)} train steps of play, device {device}", file=sys.stderr)
    cache = None
    if model.camera_reader is not None and not budget.done(state["step"], state["elapsed_s"]):
        start = time.perf_counter()
        cache = MatchCache(model, train_eps, cfg.reader_cache_gb * 2**30, cfg.seed, device)
        spent = time.perf_counter() - start
        state["elapsed_s"] += spent  # counted in --minutes, every resume's own
        print(f"idm train: cached the motion matches of {cache.num_steps} steps of play ({cache.nbytes / 2**20:.0f} MiB, "
              f"{len(cache.raw)} of {len(train_eps)} episodes) for the readers in {spent:.0f} s", file=sys.stderr)
        if not cache.raw:
            raise UserError(f"--reader-cache-gb {cfg.reader_cache_gb:g} holds no episode of the training data; give it more")
    model.train()

    def loss_of(step: int):
        if cache is not None and step % hp.trunk_every:  # the readers alone (the trunk's weights keep no gradient)
            return readers_loss(step)
        batch = idm_data.sample_windows(train_eps, hp.batch_size, mcfg.num_frames, mcfg.context,
                                        np.random.default_rng([cfg.seed, step]), mirror=cfg.mirror)
        frames, buttons, camera_pos = to_device(batch, device)
        raw = cache.windows(batch) if cache is not None else None  # the trunk's own windows' matches, where cached
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(frames, None if raw is None else raw.to(device))
        b_loss, c_loss = losses(out, buttons, camera_pos, cfg.button_pos_weight)
        if cache is not None:  # every window weighs the same
            n, r = hp.batch_size, hp.reader_batch_size
            _, parts = readers_loss(step)
            c_loss = (c_loss * n + parts["camera_loss"] * r) / (n + r)
            if "button_loss" in parts:  # the button reader alone on its windows, with the trunk on the trunk's
                b_loss = (b_loss * n + parts["button_loss"] * r) / (n + r)
        return b_loss + hp.camera_weight * c_loss, {"button_loss": b_loss, "camera_loss": c_loss}

    def readers_loss(step: int):
        """The readers on `reader_batch_size` cached windows: (loss, its parts)."""
        raw, pos, buttons = cache.sample(hp.reader_batch_size, np.random.default_rng([cfg.seed, step, 1]), cfg.reader_mirror)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model.readers_from_raw(raw.to(device))
        parts = {"camera_loss": camera_loss(out["camera"], pos.to(device))}
        if "buttons" in out:
            parts["button_loss"] = button_loss(out["buttons"], buttons.to(device), cfg.button_pos_weight,
                                               model.reader_buttons)  # the ones it leaves to the trunk are not its loss
        return parts.get("button_loss", 0.0) + hp.camera_weight * parts["camera_loss"], parts

    def lr_of(step: int, total_steps: int) -> float:
        warmup = budget.warmup(capped_warmup(hp.warmup_steps, cfg.max_steps))
        return lr_at(step, peak_lr=hp.lr, warmup_steps=warmup, total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio)

    if not run_steps("idm train", KIND, run_dir, model, optimizer, state, budget, log, ctrl_c, loss_of,
                     lambda: validate(model, val_batch, cfg, device), lr_of=lr_of, seed=cfg.seed,
                     # the trunk's windows: on reader-only steps (trunk_every) it sees none
                     windows_per_step=hp.batch_size / (hp.trunk_every if cache is not None else 1),
                     log_every=cfg.log_every, eval_every=cfg.eval_every,
                     checkpoint_every=cfg.checkpoint_every, stop_after=stop_after):
        return run_dir  # a kill (tests): nothing after the last checkpoint survives
    if not (run_dir / ckpt.CHECKPOINT_DIR / ckpt.STATE_FILE).exists():  # the budget was spent before step 1
        # (caching the readers' motion matches counts in it): fitting the decoding said 'no checkpoint yet; train
        # the run first' of the run being trained (a new-user trial, 2026-12-07)
        raise UserError(f"--minutes {cfg.minutes:g} ({cfg.minutes * 60:.2g} s) were spent before the first step "
                        f"({state['elapsed_s']:.1f} s went to loading and caching): no step trained, no checkpoint "
                        "written; give more --minutes")
    if val_eps:  # the loop ends only when the budget is spent (a kill or an error returns or raises above)
        fit_decoding(run_dir, val_eps, device)
    return run_dir


# Where the fit looks, and how many presses a button needs in the validation episodes before its
# own threshold is trusted over 0.5 (issue 18's log, section 8: on two demo runs, held-out macro F1
# 0.438 -> 0.491 and 0.324 -> 0.371, the hotbar keys with 5-11 validation presses included). The grid
# is on the sigmoid of the trained logit, as it was fitted then; the file holds it on the press
# probabilities (checkpoint.button_logit_shift), the same cuts.
THRESHOLD_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
THRESHOLD_MIN_PRESSES = 3


def fit_decoding(run_dir: Path, val_eps: list, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """What labeling decodes with, fitted on the validation episodes (whole episodes, predicted as
    labeling predicts them, in one pass): the press thresholds (`fit_button_thresholds`) and the
    camera spread (`fit_camera_spread`), each written next to the weights. Returns both."""
    from worldloom.idm.infer import predict

    model, _ = load_idm(run_dir, device=device)
    model.button_thresholds = None  # fit on the probabilities themselves
    preds = [predict(model, ep.frames) for ep in val_eps]
    probs = np.concatenate([p["buttons_prob"] for p in preds])  # (N, 20)
    true = np.concatenate([ep.buttons for ep in val_eps]).astype(bool)  # (N, 20)
    thresholds = fit_button_thresholds(run_dir, probs, true, model.button_logit_shift)
    expected = np.concatenate([p["camera_deg"] for p in preds])  # (N, 2) the expected move, degrees
    true_camera = np.concatenate([ep.camera for ep in val_eps])  # (N, 2)
    spread = fit_camera_spread(expected, true_camera)
    path = write_camera_spread(run_dir, spread, {"fitted_on_steps": int(len(true_camera)),
                                                 "moves_over_a_degree": (np.abs(true_camera) > 1).sum(0).tolist()})
    print(f"idm train: camera spread {spread[0]:.2f} (pitch) / {spread[1]:.2f} (yaw) fitted on {len(true_camera)} "
          f"validation steps -> {path}", file=sys.stderr)
    return thresholds, spread


def fit_button_thresholds(run_dir: Path, probs: np.ndarray, true: np.ndarray, logit_shift: float) -> np.ndarray:
    """Per button, the press threshold with the best F1 on the validation steps (`probs` (N, 20) press
    probabilities against `true` (N, 20)) among THRESHOLD_GRID's cuts of the trained logit's sigmoid,
    written on the press probabilities; the grid's 0.5 for a button pressed fewer than
    THRESHOLD_MIN_PRESSES times there. Macro F1 counts rare buttons (a hotbar key: 0.2% of steps)
    as much as frequent ones, and a model trained for minutes is under-confident on them.
    Written next to the weights (checkpoint.write_button_thresholds); returns the (20,) values."""
    presses = true.sum(0)
    grid = press_probability(np.asarray(THRESHOLD_GRID), logit_shift)  # the same cuts of the logit
    thresholds = np.full(true.shape[1], grid[THRESHOLD_GRID.index(0.5)])
    for k in np.flatnonzero(presses >= THRESHOLD_MIN_PRESSES):
        f1 = [metrics.f1_scores(probs[:, k:k + 1] > g, true[:, k:k + 1])[0] for g in grid]
        thresholds[k] = grid[int(np.nanargmax(f1))]
    path = write_button_thresholds(run_dir, thresholds, {"fitted_on_steps": int(len(true)),
                                                         "validation_presses": presses.astype(int).tolist()})
    print(f"idm train: press thresholds fitted on {len(true)} validation steps -> {path}", file=sys.stderr)
    return thresholds


# A camera axis needs this many validation steps that turn it by more than a degree before its spread is
# fitted; with fewer the factor is 1 (the expected move as it is).
SPREAD_MIN_MOVES = 20


def fit_camera_spread(expected: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per camera axis, the factor that gives the expected move (`expected` (N, 2) degrees: the mean of
    the model's bins) the root mean square of the true move (`true` (N, 2), clipped to the bins'
    +-CAMERA_MAXVAL, the most a label can say) on the validation steps, kept in SPREAD_RANGE; 1 for an
    axis turned by more than a degree on fewer than SPREAD_MIN_MOVES steps.

    Why: an expected move is the mean of what the model thinks possible, so its spread is the truth's
    times about the square root of the model's R^2 (0.74 / 0.70 of the truth's on the agent study's
    validation steps, R^2 0.52 / 0.68): strokes come out smaller, and a policy cloned on them turns
    less than its teacher (docs/agent.md, the camera's spread). Scaled, the labels keep the expected
    move's direction and ranking and the truth's spread. Returns the (2,) factors (pitch, yaw);
    `fit_decoding` writes them next to the weights, `idm label --camera matched` (the default) applies them."""
    from worldloom.actions import CAMERA_MAXVAL

    true = np.clip(true.astype(np.float64), -CAMERA_MAXVAL, CAMERA_MAXVAL)
    expected = expected.astype(np.float64)
    spread = np.ones(2)
    for k in range(2):
        rms_true, rms_expected = np.sqrt((true[:, k] ** 2).mean()), np.sqrt((expected[:, k] ** 2).mean())
        if (np.abs(true[:, k]) > 1).sum() >= SPREAD_MIN_MOVES and rms_expected > 1e-6:
            spread[k] = np.clip(rms_true / rms_expected, *SPREAD_RANGE)
    return spread


def train(cfg: TrainConfig) -> Path:
    """Train an IDM (resuming a run in cfg.out) and return its run directory."""
    return main(cfg)
