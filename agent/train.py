"""Behaviour cloning: train a policy to predict the action a player took after each frame.

    worldloom agent train --data data/truth --out runs/bc-env --minutes 5
    worldloom agent train --data data/pseudo --out runs/bc-idm --minutes 5        # IDM pseudo-labels
    worldloom agent train --data data/footage --labels noop --out runs/bc-noop     # the no-op baseline
    worldloom agent train --data data/truth --preset tiny --model.memory 32 --out runs/bc32
    worldloom agent train --data data/truth-* --out runs/bc --task-conditioned false   # one policy for every task

VPT's behaviour cloning at small scale: windows of frames with the actions taken after them,
the policy's causal predictions scored by the IDM's losses (binary cross-entropy per button,
two-hot cross-entropy over the 11 mu-law camera bins per axis), AdamW with warmup and a cosine
decay, bf16 autocast on CUDA. Where the labels came from (env, idm and which IDM checkpoint, or
no-op) is stored in config.json. Footage recorded in several tasks' worlds (the study's) trains
a task-conditioned policy (a goal-conditioned BC, as STEVE-1 conditions VPT on its goal): each
window's task is an embedding added to every frame's token, dropped to "no task" in
`--task-dropout` of the windows, so the policy also plays a task it was not given. Without it
one policy must guess from the first frames whether to mine, walk far or seek water, and the
study's policies traded tasks against each other between runs (docs/agent.md). Resumable like the IDM's trainer (idm/train.py): the batch at
step s and the dropout noise are pure functions of (seed, s), so a killed run started again with
the same --out ends where an uninterrupted one would; a non-finite loss or gradient stops the
run with the last good checkpoint kept.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldloom import checkpoint as ckpt
from worldloom.actions import two_hot
from worldloom.config import MAX_SEED, check_range, doc, to_json_dict
from worldloom.datasets.storage import content_ids
from worldloom.folders import check_out, run_lock
from worldloom.idm import data as idm_data
from worldloom.idm import metrics
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

from . import data as bc_data
from .checkpoint import KIND, read_config
from .model import PRESETS, Policy, PolicyConfig, action_space_doc, num_parameters

MAX_OPTIMIZER_STEPS = 100_000_000
# (field, least, most, unit) of the numbers that size memory or seed numpy, checked on parsing: a
# typo past these would allocate batch_size x window frames (`--batch-size 1e9`: 179 TiB) or
# reach numpy's SeedSequence, which takes no negative seed, as a traceback.
TRAIN_RANGES = (
    ("batch_size", 1, 4096, "windows per step"),
    ("window", 0, 1_000_000, "frames; 0: twice the policy's memory; longer than the longest episode: that episode"),
    ("val_windows", 1, 4096, "windows"),
    ("seed", 0, MAX_SEED, ""),
    ("threads", 0, 1024, "0: torch's default"),
)
METRIC_FIELDS = ("step", "lr", "loss", "button_loss", "camera_loss", "val_loss", "val_button_accuracy",
                 "val_button_macro_f1", "val_camera_bin_accuracy", "elapsed_s", "windows_per_s")
CURVE_PANELS = (("loss", ("loss", "val_loss"), True),
                ("validation", ("val_button_accuracy", "val_button_macro_f1", "val_camera_bin_accuracy"), False))


@dataclass(frozen=True)
class TrainConfig:
    """How to train a policy by behaviour cloning; stored in config.json in the run directory."""

    data: tuple[str, ...] = doc("WorldLoom dataset directories: labeled (env) or pseudo-labeled (idm) play")
    out: str = doc("run directory: checkpoint, metrics.csv, curves.png (resumed if it exists)")
    preset: str = doc(f"policy size: one of {', '.join(sorted(PRESETS))}", "tiny")
    model: PolicyConfig | None = doc("the policy's shape, flag by flag on top of the preset's (e.g. --model.memory 32)", None)
    labels: str = doc(f"which actions to clone: {' or '.join(bc_data.LABELS)} (dataset: the labels the data carries; "
                      "noop: every action replaced by the no-op, the baseline)", "dataset")
    max_steps: int | None = doc("optimizer steps: the cosine schedule's length (default: 2000, or as many as "
                                "--minutes allows)", None)
    minutes: float = doc("wall-clock budget in minutes, all resumes included (0: none); the schedule is fitted to it", 0.0)
    batch_size: int = doc("windows per step", 16)
    window: int = doc("frames per training window (0: twice the policy's memory, so most steps see a full memory)", 0)
    lr: float = doc("peak learning rate", 2e-3)
    min_lr_ratio: float = doc("final learning rate as a fraction of the peak", 0.05)
    warmup_steps: int = doc("linear warmup steps", 20)
    weight_decay: float = doc("AdamW weight decay", 0.05)
    ema_decay: float = doc("decay of the weights' exponential moving average, which the checkpoint keeps beside "
                           "them and eval plays (0: none, the last step's weights)", 0.0)
    camera_weight: float = doc("weight of the camera cross-entropy beside the button loss", 1.0)
    task_conditioned: bool = doc("condition the policy on the task whose world recorded each episode (the datasets' "
                                 "env column; VoxelWorld tasks only), unless --model.tasks names them; false: one "
                                 "unconditioned policy", True)
    task_balance: bool = doc("draw training windows from every world's footage (the datasets' env column) equally "
                             "often, then its episodes by length; false: every step of play equally often", True)
    task_dropout: float = doc("fraction of training windows shown as no task (the embedding a policy plays a task "
                              "it was not conditioned on with)", 0.1)
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
        if self.labels not in bc_data.LABELS:
            raise ValueError(f"labels must be one of {', '.join(bc_data.LABELS)}, got {self.labels!r}")
        if self.max_steps is not None:
            check_range("max_steps", self.max_steps, 1, MAX_OPTIMIZER_STEPS, "optimizer steps")
        for name, low, high, unit in TRAIN_RANGES:
            check_range(name, getattr(self, name), low, high, unit)
        for name in ("log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("minutes", "warmup_steps", "weight_decay", "camera_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.task_dropout <= 1:
            raise ValueError(f"task_dropout must lie in [0, 1], got {self.task_dropout}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not 0 < self.lr <= LR_MAX or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"lr must be a number in (0, {LR_MAX:.3g}] (float32's largest) and min_lr_ratio in [0, 1], "
                             f"got {self.lr}, {self.min_lr_ratio}")
        check_device_name(self.device)
        if self.model is not None and self.model.tasks:
            from worldloom.envs.tasks import TASKS

            unknown = [t for t in self.model.tasks if t not in TASKS]
            if unknown:
                raise ValueError(f"model.tasks names {', '.join(map(repr, unknown))}, not a task's short name: "
                                 f"one of {', '.join(TASKS)}")

    @classmethod
    def nested_default(cls, name: str, values: dict) -> PolicyConfig | None:
        """`--model.*` flags apply on top of the preset's policy (worldloom.config)."""
        return PRESETS.get(values.get("preset", "tiny")) if name == "model" else None

    @property
    def model_config(self) -> PolicyConfig:
        return self.model if self.model is not None else PRESETS[self.preset]

    @property
    def window_frames(self) -> int:
        return self.window or 2 * self.model_config.memory


def resolve_model(cfg: TrainConfig) -> PolicyConfig:
    """The policy's shape: the preset's (or --model.*), conditioned on the tasks among the data's envs
    when cfg.task_conditioned and --model.tasks names none."""
    model = cfg.model_config
    if cfg.task_conditioned and not model.tasks:
        model = dataclasses.replace(model, tasks=bc_data.data_tasks(cfg.data))
    return model


def losses(out: dict[str, torch.Tensor], buttons: torch.Tensor, camera_pos: torch.Tensor,
           mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(button loss, camera loss) over the unmasked steps: the IDM's losses (idm/train.py) at a
    press weight of 1, so the sigmoid is the press probability that sampling draws from."""
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    button = F.binary_cross_entropy_with_logits(out["buttons"].float(), buttons, reduction="none").sum(-1)  # (B, T)
    logits = out["camera"].float()  # (B, T, 2, 11)
    camera = -(two_hot(camera_pos, logits.shape[-1]) * F.log_softmax(logits, -1)).sum((-1, -2))  # (B, T)
    return (button * m).sum() / n, (camera * m).sum() / n


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, ...]:
    """frames, buttons, camera_pos, mask, task of a batch (agent/data.py) on `device`."""
    return tuple(torch.from_numpy(batch[k]).to(device) for k in ("frames", "buttons", "camera_pos", "mask", "task"))


@torch.no_grad()
def validate(model: Policy, batch: dict[str, np.ndarray], cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Loss and scores of the most likely action on the fixed validation windows."""
    if not batch:
        return {}
    model.eval()
    total, preds = 0.0, []
    for i in range(0, len(batch["frames"]), cfg.batch_size):
        frames, buttons, camera_pos, mask, task = to_device({k: v[i:i + cfg.batch_size] for k, v in batch.items()}, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(frames, task)
        b_loss, c_loss = losses(out, buttons, camera_pos, mask)
        total += float(b_loss + cfg.camera_weight * c_loss) * len(frames)
        preds.append((out["buttons"].float().cpu() > 0, out["camera"].float().argmax(-1).cpu()))
    model.train()
    mask = batch["mask"].reshape(-1)
    pred_buttons = torch.cat([p[0] for p in preds]).flatten(0, 1).numpy()[mask]
    pred_bins = torch.cat([p[1] for p in preds]).flatten(0, 1).numpy()[mask]
    true_buttons = batch["buttons"].reshape(-1, batch["buttons"].shape[-1])[mask] > 0.5
    true_bins = np.rint(batch["camera_pos"].reshape(-1, 2)[mask]).astype(np.int64)
    f1, occurs = metrics.f1_scores(pred_buttons, true_buttons), true_buttons.any(0)
    return {"val_loss": total / len(batch["frames"]),
            "val_button_accuracy": float((pred_buttons == true_buttons).mean()),
            "val_button_macro_f1": float(np.nanmean(f1[occurs])) if occurs.any() else float("nan"),
            "val_camera_bin_accuracy": float((pred_bins == true_bins).mean())}




def window_length(window_frames: int, episodes: list) -> int:
    """Frames per training window: the asked-for window, cut to the longest episode (the steps past
    an episode's end are masked out of the loss and, the policy being causal, change nothing
    before them: a longer window only costs memory and time)."""
    return max(1, min(window_frames, max((ep.num_steps for ep in episodes), default=window_frames)))


def check_resumable(cfg: TrainConfig) -> None:
    """UserError (one line) if cfg.out holds a checkpoint of a run with another config (worldloom.checkpoint)."""
    ckpt.check_resumable(cfg.out, cfg, {"model": to_json_dict(resolve_model(cfg))}, read_checked,
                         data_content=content_ids(cfg.data))


def read_checked(run_dir: str | Path) -> dict:
    """config.json with its `model` section checked too (`model_config`): a hand-edited value is named with the
    file, not read as "a different config (model)" by a user who gave the same flags (as `idm train`'s)."""
    from .checkpoint import model_config

    model_config(run_dir)
    return read_config(run_dir)


def prepare_run_dir(cfg: TrainConfig, sources: list[bc_data.SourceInfo]) -> Path:
    """Create the run directory and write config.json, or check that a resumed run's config matches.
    A run that stopped before its first checkpoint has nothing to resume: its folder is reused."""
    check_out(cfg.out, KIND)
    check_resumable(cfg)
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"train": to_json_dict(cfg), "model": to_json_dict(resolve_model(cfg)), "action_space": action_space_doc(),
              "data": {"labels": cfg.labels, "sources": [s.to_json() for s in sources],
                       "label_source": label_source(cfg.labels, sources)}, ckpt.DATA_CONTENT: content_ids(cfg.data)}
    ckpt.write_run_config(run_dir, KIND, wanted)
    return run_dir


def label_source(labels: str, sources: list[bc_data.SourceInfo]) -> str:
    """What the cloned actions are: noop, env, idm, or a mix such as "env+idm"."""
    if labels == "noop":
        return "noop"
    return "+".join(sorted({s for info in sources for s in info.label_sources if s != "none"}))


def init_state(cfg: TrainConfig, mcfg: PolicyConfig, run_dir: Path, device: torch.device
               ) -> tuple[Policy, torch.optim.AdamW, dict, Policy | None]:
    """A fresh policy of shape `mcfg`, its optimizer and (with `ema_decay`) its moving average, or all
    restored from the run's last checkpoint."""
    torch.manual_seed(cfg.seed)
    model = Policy(mcfg).to(device)
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)  # no weight decay on biases and norms
    state = ckpt.resume_or_start(run_dir, KIND, model, optimizer, device)
    ema = None
    if cfg.ema_decay:
        ema = copy.deepcopy(model).requires_grad_(False)
        if state["step"]:
            tensors, _ = ckpt.load_checkpoint(run_dir, KIND, ("ema",), device=device)
            ckpt.load_weights_into(ema, tensors["ema"], run_dir / ckpt.CHECKPOINT_DIR / "ema.safetensors")
    return model, optimizer, state, ema


def main(cfg: TrainConfig, stop_after: int | None = None) -> Path:
    """Train (or resume) and return the run directory. `stop_after` simulates a kill (tests).
    Ctrl-C or SIGTERM stops at once before the first step, else at the end of its step (CtrlC)."""
    with CtrlC() as ctrl_c, run_lock(cfg.out, KIND, "agent train"):
        return _train(cfg, ctrl_c, stop_after)


def _train(cfg: TrainConfig, ctrl_c: CtrlC, stop_after: int | None) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_resumable(cfg)  # (--out was checked by run_lock) another config: that error, before "already finished"
    if finished := ckpt.finished_run(cfg.out, KIND, "agent train", cfg.minutes, cfg.max_steps):
        print(finished, file=sys.stderr)  # its curves and config are left as they are
        return Path(cfg.out)
    device = resolve_device(cfg.device)
    mcfg = resolve_model(cfg)
    episodes, sources = bc_data.load_bc_episodes(cfg.data, cfg.labels)
    T = window_length(cfg.window_frames, episodes)
    idm_data.check_frame_size(episodes, mcfg.height, mcfg.width, "training")
    run_dir = prepare_run_dir(cfg, sources)
    train_eps, val_eps = idm_data.split_episodes(episodes, cfg.val_fraction, cfg.seed)
    val_batch = bc_data.fixed_windows(val_eps, cfg.val_windows, T, cfg.seed, mcfg.tasks)
    model, optimizer, state, ema = init_state(cfg, mcfg, run_dir, device)
    budget = TimeBudget(cfg.minutes, cfg.max_steps, state.get("planned_steps"))
    log = MetricsLog(run_dir, METRIC_FIELDS, resume_step=state["step"], panels=CURVE_PANELS)
    print(f"agent train: {num_parameters(model) / 1e6:.2f}M parameters, {len(train_eps)} train / {len(val_eps)} val "
          f"episodes, {sum(e.num_steps for e in train_eps)} steps of play labeled "
          f"{label_source(cfg.labels, sources)}, {'conditioned on ' + ', '.join(mcfg.tasks) if mcfg.tasks else 'no task'}, "
          f"device {device}", file=sys.stderr)
    model.train()

    def loss_of(step: int):
        rng = np.random.default_rng([cfg.seed, step])
        batch = bc_data.sample_windows(train_eps, cfg.batch_size, T, rng, mcfg.tasks, cfg.task_balance)
        batch["task"][rng.random(cfg.batch_size) < cfg.task_dropout] = 0  # shown as no task
        frames, buttons, camera_pos, mask, task = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(frames, task)
        b_loss, c_loss = losses(out, buttons, camera_pos, mask)
        return b_loss + cfg.camera_weight * c_loss, {"button_loss": b_loss, "camera_loss": c_loss}

    def lr_of(step: int, total_steps: int) -> float:
        warmup = budget.warmup(capped_warmup(cfg.warmup_steps, cfg.max_steps))
        return lr_at(step, peak_lr=cfg.lr, warmup_steps=warmup, total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio)

    run_steps("agent train", KIND, run_dir, model, optimizer, state, budget, log, ctrl_c, loss_of,
              lambda: validate(model if ema is None else ema, val_batch, cfg, device), lr_of=lr_of, seed=cfg.seed,
              windows_per_step=cfg.batch_size, log_every=cfg.log_every, eval_every=cfg.eval_every,
              checkpoint_every=cfg.checkpoint_every, stop_after=stop_after, ema=ema, ema_decay=cfg.ema_decay)
    return run_dir
