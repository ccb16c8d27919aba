"""Train the inverse dynamics model on labeled episodes.

    worldloom idm train --data data/voxel --preset tiny --out runs/idm --minutes 15
    python -m worldloom.idm.train --data data/voxel --out runs/idm      # the same

Windows of T frames are drawn from episodes whose actions were recorded by the env
(label_source `env`), split into train and validation by whole episodes. AdamW with linear
warmup and a cosine decay; bf16 autocast on CUDA. Running it again with the same `--out`
resumes from the last checkpoint and ends exactly where an uninterrupted run would: the batch
at step s and the dropout noise are pure functions of (seed, s), and the optimizer state is
saved (see checkpoint.py for the run directory's layout).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from worldloom.actions import two_hot
from worldloom.config import add_dataclass_args, dataclass_from_args, doc, to_json_dict
from worldloom.errors import UserError
from worldloom.idm import data as idm_data
from worldloom.idm import metrics
from worldloom.idm.checkpoint import (
    CONFIG_FILE,
    load_optimizer,
    read_config,
    read_state,
    run_file,
    save_checkpoint,
    write_json_atomic,
)
from worldloom.idm.model import IDM, PRESETS, IDMConfig, num_parameters

# Training defaults per preset, used where TrainConfig's batch_size / lr / warmup_steps are left
# unset (0, 0, -1). `tiny` is tuned for minutes on a CPU (docs/idm.md, "Making tiny learn fast"):
# T = 16 windows in batches of 16 (more distinct windows per second of compute than 8 x 32, and
# 1.5x more frames/s on one core), a peak rate of 3e-3 and a short warmup.
PRESET_TRAIN_DEFAULTS: dict[str, dict] = {"tiny": {"batch_size": 16, "lr": 3e-3, "warmup_steps": 10}}
TRAIN_DEFAULTS: dict = {"batch_size": 8, "lr": 1e-3, "warmup_steps": 50}


def preset_train_defaults(preset: str) -> dict:
    """{batch_size, lr, warmup_steps} a run of `preset` uses where the config leaves them unset."""
    return {**TRAIN_DEFAULTS, **PRESET_TRAIN_DEFAULTS.get(preset, {})}


METRIC_FIELDS = ("step", "lr", "loss", "button_loss", "camera_loss", "val_loss", "val_button_accuracy",
                 "val_button_macro_f1", "val_camera_bin_accuracy", "elapsed_s", "windows_per_s")


@dataclass(frozen=True)
class TrainConfig:
    """How to train an IDM; stored as config.json in the run directory."""

    data: tuple[str, ...] = doc("labeled WorldLoom dataset directories (label_source env)")
    out: str = doc("run directory: checkpoints, metrics.csv, curves.png (resumed if it exists)")
    preset: str = doc(f"model size: one of {sorted(PRESETS)}", "tiny")
    steps: int = doc("optimizer steps: the cosine schedule's length (0: 2000, or as many as --minutes allows)", 0)
    minutes: float = doc("wall-clock budget in minutes (0: none); the schedule is shortened to fit", 0.0)
    batch_size: int = doc("windows per step (0: the preset's default, 16 for tiny, else 8)", 0)
    lr: float = doc("peak learning rate (0: the preset's default, 3e-3 for tiny, else 1e-3)", 0.0)
    min_lr_ratio: float = doc("final learning rate as a fraction of the peak", 0.05)
    warmup_steps: int = doc("linear warmup steps (-1: the preset's default, 10 for tiny, else 50)", -1)
    weight_decay: float = doc("AdamW weight decay", 0.05)
    camera_weight: float = doc("weight of the camera cross-entropy beside the button loss", 1.0)
    button_pos_weight: float = doc("BCE weight of a pressed button against a released one (rare presses: F1)", 3.0)
    max_hours: float = doc("train on at most this many hours of labeled play (0: all; for scaling curves)", 0.0)
    val_fraction: float = doc("fraction of episodes held out for validation", 0.1)
    val_windows: int = doc("validation windows scored at each evaluation", 32)
    eval_every: int = doc("steps between validation passes", 100)
    ckpt_every: int = doc("steps between checkpoints", 100)
    seed: int = doc("seed of the model init, the split and the batches", 0)
    device: str = doc("auto, cpu or cuda[:N]", "auto")
    threads: int = doc("torch CPU threads (0: torch's default)", 0)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("TrainConfig.data must name at least one dataset directory")
        if self.preset not in PRESETS:
            raise ValueError(f"TrainConfig.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.steps == 0:  # with a time budget the budget decides (a 2000 cap left 4 of 15 minutes unused)
            object.__setattr__(self, "steps", 1_000_000 if self.minutes else 2000)
        unset = {"batch_size": self.batch_size == 0, "lr": self.lr == 0, "warmup_steps": self.warmup_steps == -1}
        for name, value in preset_train_defaults(self.preset).items():
            if unset[name]:
                object.__setattr__(self, name, value)
        for name in ("steps", "batch_size", "eval_every", "ckpt_every", "val_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.threads < 0 or self.minutes < 0 or self.max_hours < 0:
            raise ValueError("TrainConfig.warmup_steps, threads, minutes and max_hours must be >= 0")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"TrainConfig.val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.button_pos_weight <= 0:
            raise ValueError(f"TrainConfig.button_pos_weight must be > 0, got {self.button_pos_weight}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")

    @property
    def model(self) -> IDMConfig:
        return PRESETS[self.preset]


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def losses(out: dict[str, torch.Tensor], buttons: torch.Tensor, camera_pos: torch.Tensor,
           pos_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(button loss, camera loss): BCE summed over the 20 buttons (presses weighted by pos_weight),
    cross-entropy against two-hot bin targets summed over the 2 axes."""
    weight = torch.full((buttons.shape[-1],), float(pos_weight), device=buttons.device)
    button_loss = F.binary_cross_entropy_with_logits(out["buttons"].float(), buttons, pos_weight=weight,
                                                     reduction="none").sum(-1).mean()
    logits = out["camera"].float()  # (B, T, 2, bins)
    target = two_hot(camera_pos, logits.shape[-1])  # (B, T, 2, bins)
    camera_loss = -(target * F.log_softmax(logits, -1)).sum(-1).mean() * 2
    return button_loss, camera_loss


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(batch["frames"]).to(device), torch.from_numpy(batch["buttons"]).to(device),
            torch.from_numpy(batch["camera_pos"]).to(device))


@torch.no_grad()
def validate(model: IDM, batch: dict[str, np.ndarray], cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Loss and scores on the fixed validation windows."""
    if not batch:
        return {}
    model.eval()
    outs, total = [], 0.0
    for i in range(0, len(batch["frames"]), cfg.batch_size):
        part = {k: v[i:i + cfg.batch_size] for k, v in batch.items()}
        frames, buttons, camera_pos = to_device(part, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(frames)
        b_loss, c_loss = losses(out, buttons, camera_pos, cfg.button_pos_weight)
        total += float(b_loss + cfg.camera_weight * c_loss) * len(frames)
        outs.append((out["buttons"].float().cpu() > 0, out["camera"].float().argmax(-1).cpu()))
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


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Create the run directory and write config.json, or check that a resumed run's config matches."""
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"train": to_json_dict(cfg), "model": to_json_dict(cfg.model)}
    path = run_dir / CONFIG_FILE
    if path.exists():
        have = read_config(run_dir)  # checked: a damaged or edited config.json is a one-line error
        ignore = {"minutes", "steps", "device", "threads"}  # may change on resume
        diff = sorted(k for k in wanted["train"] if k not in ignore and have.get("train", {}).get(k) != wanted["train"][k])
        if diff or have.get("model") != wanted["model"]:
            raise UserError(f"{run_dir} holds a run with a different config ({', '.join(diff) or 'model'}): "
                            "use a new --out, or the same flags to resume it")
    write_json_atomic(path, wanted)
    return run_dir


def read_metrics(run_dir: Path, upto_step: int) -> list[dict]:
    """metrics.csv rows up to a step (a resumed run rewrites the rows after its checkpoint)."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) <= upto_step]


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    tmp = run_dir / "metrics.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(run_dir / "metrics.csv")


def plot_curves(run_dir: Path, rows: list[dict]) -> None:
    """curves.png: training and validation loss, validation scores, by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        ax1.plot(*series(key), label=key)
    ax1.set_xlabel("step"), ax1.set_ylabel("loss"), ax1.set_yscale("log"), ax1.legend()
    for key in ("val_button_accuracy", "val_button_macro_f1", "val_camera_bin_accuracy"):
        ax2.plot(*series(key), marker="o", label=key)
    ax2.set_xlabel("step"), ax2.set_ylim(0, 1), ax2.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png.tmp.png", dpi=80)
    plt.close(fig)
    (run_dir / "curves.png.tmp.png").replace(run_dir / "curves.png")


def init_state(cfg: TrainConfig, run_dir: Path, device: torch.device) -> tuple[IDM, torch.optim.AdamW, dict]:
    """A fresh model and optimizer, or both restored from the run's last checkpoint."""
    torch.manual_seed(cfg.seed)
    model = IDM(cfg.model).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    state = read_state(run_dir)
    if state is None:
        return model, optimizer, {"step": 0, "total_steps": cfg.steps, "elapsed_s": 0.0, "budget_fixed": False}
    model.load_state_dict(load_file(str(run_file(run_dir, state, "model_file")), device=str(device)))
    load_optimizer(optimizer, load_file(str(run_file(run_dir, state, "optim_file")), device=str(device)), state["param_groups"])
    return model, optimizer, state


def fit_budget(state: dict, cfg: TrainConfig, step: int, seconds: float, steps_timed: int) -> None:
    """Set total_steps so that the run fits in cfg.minutes at the speed measured so far; refitted at
    every evaluation (a shared machine's speed drifts) and stored, so a resume keeps it."""
    per_step = seconds / max(1, steps_timed)
    fitted = int((cfg.minutes * 60 - state["elapsed_s"]) / per_step) + step
    state["total_steps"] = max(step + 1, min(cfg.steps, fitted))
    state["budget_fixed"] = True


def main(cfg: TrainConfig, stop_after: int | None = None) -> Path:
    """Train (or resume) and return the run directory. `stop_after` simulates a kill (tests)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    run_dir = prepare_run_dir(cfg)
    episodes = idm_data.load_episodes(cfg.data, require_labels=True)
    idm_data.check_frame_size(episodes, cfg.model.height, cfg.model.width, "training")
    train_eps, val_eps = idm_data.split_episodes(idm_data.usable(episodes, cfg.model.num_frames), cfg.val_fraction, cfg.seed)
    train_eps = idm_data.take_hours(train_eps, cfg.max_hours, cfg.seed)
    val_batch = idm_data.fixed_windows(val_eps, cfg.model.num_frames, cfg.model.context, cfg.val_windows, cfg.seed)
    model, optimizer, state = init_state(cfg, run_dir, device)
    if not cfg.minutes:
        state["total_steps"] = cfg.steps
    rows = read_metrics(run_dir, state["step"])
    print(f"idm train: {num_parameters(model) / 1e6:.2f}M parameters, {len(train_eps)} train / {len(val_eps)} val episodes, "
          f"{sum(e.num_steps for e in train_eps)} train steps of play, device {device}", file=sys.stderr)
    model.train()
    start_step, t0, last_log = state["step"], time.perf_counter(), time.perf_counter()
    elapsed0 = state["elapsed_s"]
    bar = tqdm(total=state["total_steps"], initial=start_step, desc="idm train", unit="step", dynamic_ncols=True)
    step = start_step
    while step < state["total_steps"]:
        batch = idm_data.sample_windows(train_eps, cfg.batch_size, cfg.model.num_frames, cfg.model.context,
                                        np.random.default_rng([cfg.seed, step]))
        frames, buttons, camera_pos = to_device(batch, device)
        lr = lr_at(step, cfg, state["total_steps"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout noise as a function of the step
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(frames)
        b_loss, c_loss = losses(out, buttons, camera_pos, cfg.button_pos_weight)
        loss = b_loss + cfg.camera_weight * c_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        state["step"], state["elapsed_s"] = step, elapsed0 + time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
        first_fit = not state["budget_fixed"] and step - start_step >= min(10, max(1, cfg.warmup_steps))
        if cfg.minutes and (first_fit or (state["budget_fixed"] and step % cfg.eval_every == 0)):
            fit_budget(state, cfg, step, time.perf_counter() - t0, step - start_step)
            bar.total = state["total_steps"]
        if stop_after is not None and step >= stop_after:
            bar.close()
            return run_dir  # a kill: nothing after the last checkpoint survives
        if cfg.minutes and state["elapsed_s"] > cfg.minutes * 60 * 1.05:  # the estimate was off: stop anyway
            state["total_steps"] = step
        final = step >= state["total_steps"]
        if step % cfg.eval_every == 0 or final:
            now = time.perf_counter()
            row = {"step": step, "lr": lr, "loss": loss.item(), "button_loss": b_loss.item(),
                   "camera_loss": c_loss.item(), "elapsed_s": round(state["elapsed_s"], 2),
                   "windows_per_s": round(cfg.batch_size * cfg.eval_every / max(1e-9, now - last_log), 2)}
            row.update(validate(model, val_batch, cfg, device))
            rows.append(row)
            last_log = time.perf_counter()
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if step % cfg.ckpt_every == 0 or final:
            save_checkpoint(run_dir, model, optimizer, state)
            write_metrics(run_dir, rows)
            plot_curves(run_dir, rows)
    bar.close()
    return run_dir


def train(cfg: TrainConfig) -> Path:
    """Train an IDM (resuming a run in cfg.out) and return its run directory."""
    return main(cfg)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, TrainConfig)
    try:
        main(dataclass_from_args(TrainConfig, parser.parse_args()))
    except UserError as err:
        sys.exit(f"idm train: error: {err}")

