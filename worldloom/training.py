"""The training plumbing the trainers share: schedule, time budget, device, metrics, NaN stop.

    from worldloom import training
    device = training.resolve_device("auto")                 # a loud warning if a GPU was asked for and is absent
    budget = training.TimeBudget(minutes=15, max_steps=None)  # the schedule's length fitted to the speed
    log = training.MetricsLog(run, fields, resume_step=0, panels=[("loss", ("loss",), True)])
    for step in range(start, ...):
        lr = training.lr_at(step, peak_lr=3e-3, warmup_steps=10, total_steps=budget.total_steps)
        ...
        training.check_finite(loss, grad_norm, step + 1, last_checkpoint)   # TrainingDiverged at once
        budget.update(step + 1, elapsed_s)
        if budget.done(step + 1, elapsed_s): break

`run_steps` is the step loop of `idm train` and `agent train` (the same windows-of-frames
supervised loop); the world model keeps its own (pretrain/train.py: distributed, EMA). The
checkpoint format is `worldloom.checkpoint`.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldloom.errors import UserError
from worldloom.interrupts import exit_code, interrupt, sigterm_as_interrupt
from worldloom.io import atomic_path, atomic_write_text
from worldloom.progress import figure

__all__ = ["lr_at", "resolve_device", "TimeBudget", "MetricsLog", "CtrlC", "TrainingDiverged", "check_finite",
           "check_finite_scores", "LR_MAX", "run_steps", "update_ema", "ema_decay_at", "adamw", "DEFAULT_MAX_STEPS", "RESUMABLE_FIELDS", "DEVICES", "exit_code", "interrupt", "sigterm_as_interrupt"]

# The largest learning rate a config takes: float32's largest number. Above it torch cannot apply the update
# (a RuntimeError traceback at the first optimizer step); nan or inf would make every weight NaN.
LR_MAX = 3.4028234663852886e38

# The flags a resumed run may change: how long and where it runs, not what it learns ("out": a run
# may be moved or copied). One set for the trainers, which check a resume's config with
# worldloom.checkpoint.check_resumable (idm, agent; pretrain adds its own few).
RESUMABLE_FIELDS = frozenset({"out", "minutes", "max_steps", "device", "threads", "log_every"})

# Without --minutes and --max-steps a run takes this many optimizer steps.
DEFAULT_MAX_STEPS = 2000
DEVICES = "auto, cpu, cuda or cuda:N"


WARMUP_FRACTION = 0.1  # the most of a run's steps its warmup takes where the steps are known (capped_warmup)


def capped_warmup(warmup_steps: int, max_steps: int | None) -> int:
    """`warmup_steps`, but at most WARMUP_FRACTION of a fixed step budget (at least 1; None or 0: no cap): a run no
    longer than its warmup ended at its peak rate, its cosine never begun (a new-user trial, session 44: `agent
    train --max-steps 20` with the default 20 warmup steps). A function of the config: a resume is exact."""
    if not max_steps:
        return warmup_steps
    return min(warmup_steps, max(1, int(WARMUP_FRACTION * max_steps)))


def lr_at(step: int, *, peak_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup to `peak_lr` over `warmup_steps`, then cosine decay to `peak_lr * min_lr_ratio`
    at `total_steps` (held there after it)."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def check_device_name(name: str) -> None:
    """ValueError unless `name` is auto, cpu, cuda or cuda:N (for config validation)."""
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return
    raise ValueError(f"device must be {DEVICES}, got {name!r}")


MEMORY_HEADROOM = 0.8  # the share of `available_memory_bytes` a memory check lets one job's estimate take


def available_memory_bytes(gpu: bool = False) -> int:
    """Bytes free for new allocations: the current CUDA device's free memory where `gpu` and CUDA is up, else the
    machine's available memory as psutil reads it (MemAvailable on Linux; free plus inactive on macOS). Until
    2026-12-07 it read /proc/meminfo, which a Mac has not, so the memory checks before training, `agent eval
    --videos` and `pretrain rollout` failed there with FileNotFoundError."""
    if gpu:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


def resolve_device(name: str, doing: str = "training"):
    """`auto` -> cuda when torch sees a GPU, else cpu; `cuda` without a GPU -> cpu with a loud warning
    (a run that was meant for a GPU should not look fine while it crawls on the CPU) that says what
    moves to the CPU (`doing`: "training", "evaluating")."""
    import torch

    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        print(f"WARNING: --device {name} asked for a GPU but torch ({torch.__version__}, {build}) sees none: "
              f"{doing} on the CPU instead. Install a CUDA build of torch (make ... TORCH_INDEX=...) or pass "
              "--device cpu to silence this.", file=sys.stderr, flush=True)
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class TimeBudget:
    """`--minutes` and `--max-steps` -> how many optimizer steps the schedule has.

    With a time budget the length is fitted to the measured speed (optimizer steps a second since
    step 2: the first ones include compilation and warm caches) after `plan_after` steps, and refitted
    as the run goes (a shared machine's speed drifts, validation passes and checkpoints take their
    time): at twice as many steps into the run as at the last fit (20, 40, 80, ...), every
    `refit_every` steps, and every `1 / REFITS` of the budget's time. So the last refit comes in the
    budget's last twentieth, and one past its end makes the next step the last: a timed run ends with
    its schedule finished (its learning rate at the schedule's end), also a run of seconds (`--minutes
    0.2` stopped at step 73 of the 167 fitted at step 10, its rate at 1.5e-3 of a 2e-3 peak, when only
    every 100th step refitted). Without a time budget the length is `max_steps` (or DEFAULT_MAX_STEPS)
    and never changes. Its state is saved in checkpoints, so a resumed run continues on the same
    schedule; `elapsed_s` counts every resume.
    """

    REFITS = 20  # refits by time over the budget, at least

    minutes: float = 0.0
    max_steps: int | None = None
    planned_steps: int | None = None
    plan_after: int = 10
    refit_every: int = 100
    _probe: tuple[int, float] | None = field(default=None, repr=False)
    _fitted: tuple[int, float] | None = field(default=None, repr=False)  # (step, elapsed_s) of this call's last fit

    @property
    def limit(self) -> int:
        """The most steps the run may take."""
        if self.max_steps is not None:
            return self.max_steps
        return 10**9 if self.minutes else DEFAULT_MAX_STEPS

    @property
    def total_steps(self) -> int:
        """The schedule's length now."""
        return self.planned_steps if self.planned_steps is not None else self.limit

    @property
    def shown_total(self) -> int | None:
        """The progress bar's total: None (a plain count) while a time budget is not yet fitted."""
        return None if self.minutes and self.planned_steps is None and self.max_steps is None else self.total_steps

    def update(self, step: int, elapsed_s: float, steps_this_call: int) -> bool:
        """After optimizer step `step` (the count done), `elapsed_s` into the run; True when the plan changed."""
        if not self.minutes:
            return False
        if steps_this_call == 2:
            self._probe = (step, elapsed_s)
        if self._probe is None or step <= self._probe[0]:
            return False
        if not (self._first_fit(step, steps_this_call) or self._refit_due(step, elapsed_s)):
            return False
        step_s = (elapsed_s - self._probe[1]) / (step - self._probe[0])
        fitted = step + int((self.minutes * 60 - elapsed_s) / max(step_s, 1e-9))  # past the budget: step + 1
        before, self._fitted = self.planned_steps, (step, elapsed_s)
        self.planned_steps = max(step + 1, min(self.limit, fitted))
        return self.planned_steps != before

    def _first_fit(self, step: int, steps_this_call: int) -> bool:
        return self.planned_steps is None and steps_this_call >= self.plan_after

    def _refit_due(self, step: int, elapsed_s: float) -> bool:
        """A plan made (here or before a resume) is refitted at twice the steps of the last fit, every
        `refit_every` steps, and every 1 / REFITS of the budget's time since the last fit (the probe's, after a resume)."""
        if self.planned_steps is None:
            return False
        last_step, last_s = self._fitted or self._probe
        return (step >= 2 * last_step or step % self.refit_every == 0
                or elapsed_s - last_s >= self.minutes * 60 / self.REFITS)

    def warmup(self, warmup_steps: int) -> int:
        """`warmup_steps`, but once a time budget has planned the run at most WARMUP_FRACTION of the planned steps
        (and not under the `plan_after` steps taken before the plan, so the ramp still ends at the peak): a short
        timed run must reach its peak and decay from it (agent train's 20 warmup steps took 20 of a 24-step
        `--minutes 0.2` run, and its last step's rate was 19% of the peak where the schedule ends at 5%). As given
        without a time budget or before the plan; a function of the saved plan, so a resume is exact."""
        if not self.minutes or self.planned_steps is None:
            return warmup_steps
        return min(warmup_steps, max(self.plan_after, int(WARMUP_FRACTION * self.planned_steps)))

    def out_of_time(self, elapsed_s: float) -> bool:
        """True when the time is spent (5% grace for a drifting estimate)."""
        return bool(self.minutes) and elapsed_s > self.minutes * 60 * 1.05

    def done(self, step: int, elapsed_s: float) -> bool:
        """True when the schedule is finished or the time is spent."""
        return step >= self.total_steps or self.out_of_time(elapsed_s)

    def state(self) -> dict[str, Any]:
        return {"planned_steps": self.planned_steps}

    def clock(self, elapsed_s: float) -> dict[str, str]:
        """The progress bar's time against `--minutes` (`{"time": "2.1/5 min"}`; none without it):
        the step total is known only once the schedule is fitted, the end in time always."""
        return {"time": f"{elapsed_s / 60:.1f}/{self.minutes:g} min"} if self.minutes else {}

    def resuming(self, command: str, step: int, elapsed_s: float, checkpoint_dir: str | Path) -> str:
        """`idm train: resuming from step 120 of 400, 1.5 of 5 minutes spent (RUN/checkpoint)`."""
        total = f" of {self.total_steps}" if self.shown_total is not None else ""
        spent = f", {elapsed_s / 60:.1f} of {self.minutes:g} minutes spent" if self.minutes else ""
        return f"{command}: resuming from step {step}{total}{spent} ({checkpoint_dir})"

    @property
    def flags(self) -> str:
        """The budget as the flags that set it: `--minutes 3`, `--max-steps 40`, or the default."""
        words = ([f"--minutes {self.minutes:g}"] if self.minutes else []) + (
            [f"--max-steps {self.max_steps}"] if self.max_steps is not None else [])
        return " ".join(words) or f"the default {DEFAULT_MAX_STEPS} steps"


class CtrlC:
    """Ctrl-C (SIGINT) and SIGTERM (`timeout`, `kill`, a batch scheduler) in a trainer. Installed
    when the command starts, a signal stops it at once until the loop's first step begins (there is
    nothing to save yet); from `begin_steps()` on it is taken at the end of the step it falls in, so
    that the loop can save a checkpoint of a whole step (a resume stays exact) before it stops:

        with CtrlC() as ctrl_c:                      # at the top: loading data, building the model ...
            ...
            ctrl_c.begin_steps()
            while ...:
                ...                                   # one optimizer step
                pressed = ctrl_c.pressed
                if pressed or step % checkpoint_every == 0:
                    save_checkpoint(...)
                if pressed:
                    raise ctrl_c.stopped(step, run / "checkpoint")

    A second signal stops at once. Only the main thread can take signals: elsewhere (a Ray Train
    worker) `pressed` stays False and the signals are the caller's. The CLI prints the raised
    KeyboardInterrupt's words in its one line: `interrupted; checkpoint saved at step 37 (RUN/
    checkpoint); re-run the same command to resume`, or `interrupted before the first step;
    nothing saved` (pipeline/cli.py), and exits 128 + its `signum` (`exit_code`): 130 after
    SIGINT, 143 after SIGTERM, as a shell reports a process that signal ended.
    """

    SIGNALS = ("SIGINT", "SIGTERM")
    BEFORE_FIRST_STEP = "before the first training step; no checkpoint saved"

    def __init__(self) -> None:
        self.pressed = False
        self.stepping = False
        self.signum = signal.SIGINT  # the last signal taken: the exit code says which it was
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        self.signum = signal.Signals(signum)
        if not self.stepping:
            raise self._interrupt(self.BEFORE_FIRST_STEP)
        if self.pressed:
            raise self._interrupt()
        self.pressed = True

    def _interrupt(self, words: str = "") -> KeyboardInterrupt:
        return interrupt(self.signum, words)

    def install(self) -> CtrlC:
        """Take SIGINT and SIGTERM (main thread only); `restore()` gives them back."""
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for name in self.SIGNALS:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def begin_steps(self) -> CtrlC:
        """From here on a signal is taken at the end of its step (`pressed`)."""
        self.stepping = True
        return self

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> CtrlC:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def stopped(self, step: int, checkpoint_dir: str | Path) -> KeyboardInterrupt:
        """The KeyboardInterrupt to raise once the checkpoint of `step` is saved."""
        return self._interrupt(f"checkpoint saved at step {step} ({checkpoint_dir})")


class TrainingDiverged(UserError):
    """The loss or gradient became NaN or infinite; the last good checkpoint is kept."""


def check_finite(loss: float, grad_norm: float | None, step: int, last_checkpoint: str | None) -> None:
    """TrainingDiverged naming the step and the last good checkpoint when the loss or the gradient
    norm is not finite (checked before the optimizer step, so the weights stay good). `step` counts
    from 1, as metrics.csv and checkpoints number steps: the step whose loss this is."""
    bad = [] if math.isfinite(loss) else [f"loss {loss}"]
    if grad_norm is not None and not math.isfinite(grad_norm):
        bad.append(f"gradient norm {grad_norm}")
    if not bad:
        return
    raise TrainingDiverged(f"{' and '.join(bad)} at step {step}: training stopped; {_kept(last_checkpoint)}; "
                           f"{_advice(last_checkpoint)}")


def check_finite_scores(scores: dict[str, float], step: int, last_checkpoint: str | None) -> None:
    """TrainingDiverged when validation after `step` (counted from 1) gives a non-finite `val_loss`: the
    step's update was taken on a finite loss and gradient but left weights that give NaN or infinity
    (a learning rate far too high), and they must not be saved as the model."""
    loss = scores.get("val_loss")
    if loss is None or math.isfinite(loss):
        return
    raise TrainingDiverged(f"validation loss {loss} after step {step}: training stopped; {_kept(last_checkpoint)}; "
                           f"{_advice(last_checkpoint)}")


def _kept(last_checkpoint: str | None) -> str:
    return f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"


def _advice(last_checkpoint: str | None) -> str:
    """What to do after a divergence. Where a checkpoint is kept the run resumes only with its own flags, so a lower
    --lr needs a new --out: 'lower the learning rate' alone led to 'holds a run with a different config (lr)'
    (a new-user trial, 2026-12-07). A run with no checkpoint is started again in its folder, whatever its flags."""
    where = (" and train into a new --out (this run resumes only with its own flags)" if last_checkpoint else "")
    return f"lower --lr{where}, or check the data for non-finite values"


class MetricsLog:
    """metrics.csv (one row per logged step; rewritten atomically) and curves.png, in a run directory.

    Both trainers call `write()` at every logged row (`--log-every`), so a run shows its curve
    from its first rows on; curves.png is redrawn at most every `plot_every_s` seconds (a plot
    costs 0.3-1 s on a busy CPU, a tiny model's 10 steps about as much), and always when
    `write(plot=True)` (checkpoints, the end). On resume the rows after `resume_step` are dropped
    (they belong to the steps being redone). `panels` are (title, metric names, log scale) for
    curves.png, one subplot each, over the "step" column (named `x_label` on the axes).
    """

    def __init__(self, run_dir: str | Path, fields: Sequence[str], resume_step: int = 0,
                 panels: Sequence[tuple[str, Sequence[str], bool]] = (), enabled: bool = True,
                 plot_every_s: float = 30.0, x_label: str = "step"):
        self.run_dir, self.fields, self.panels, self.enabled = Path(run_dir), tuple(fields), tuple(panels), enabled
        self.x_label = x_label
        self.path = self.run_dir / "metrics.csv"
        self.plot_every_s, self._plotted_at = plot_every_s, -math.inf
        self.rows: list[dict[str, Any]] = []
        if enabled and resume_step > 0 and self.path.exists():
            with self.path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if r.get("step") and int(float(r["step"])) <= resume_step]

    def row(self, **values: Any) -> None:
        if self.enabled:
            self.rows.append(values)

    def write(self, plot: bool | None = None) -> None:
        """metrics.csv and curves.png, both atomically; curves.png when `plot`, or with None when
        `plot_every_s` have passed since it was last drawn."""
        if not self.enabled:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(self.path, buf.getvalue())
        now = time.monotonic()
        if self.panels and (plot or plot is None and now - self._plotted_at >= self.plot_every_s):
            self.plot(self.run_dir / "curves.png")
            self._plotted_at = now

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pts = []
        for r in self.rows:
            v = r.get(key)
            if v in (None, "", "nan"):
                continue
            v = float(v)
            if math.isfinite(v):
                pts.append((int(float(r["step"])), v))
        return [p[0] for p in pts], [p[1] for p in pts]

    def plot(self, out_png: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(self.panels), figsize=(4 * len(self.panels), 3.2), squeeze=False)
        for ax, (title, keys, log_scale) in zip(axes[0], self.panels, strict=True):
            for key in keys:
                steps, values = self.series(key)
                if steps:
                    ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
            ax.set_title(title)
            ax.set_xlabel(self.x_label)
            if log_scale and any(self.series(k)[1] for k in keys):
                ax.set_yscale("log")
            if len(keys) > 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)


def adamw(model, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95)):
    """AdamW over `model`'s parameters, with no weight decay on biases and norms (1-D parameters)."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def update_ema(ema, model, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers are the copy's: fixed
    after the copy in every model here)."""
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """The decay used after optimizer step `step` (0-based): `decay`, warmed up as (1 + step) / (10 + step)
    so that the first steps' average is not held at the initial weights."""
    return min(decay, (1 + step) / (10 + step))


def run_steps(name: str, kind: str, run_dir: Path, model, optimizer, state: dict[str, Any], budget: TimeBudget,
              log: MetricsLog, ctrl_c: CtrlC, loss_of: Callable[[int], tuple[Any, dict[str, Any]]],
              validate: Callable[[], dict[str, float]], *, lr_of: Callable[[int, int], float], seed: int,
              windows_per_step: int, log_every: int, eval_every: int, checkpoint_every: int,
              stop_after: int | None = None, ema=None, ema_decay: float = 0.0) -> bool:
    """Train `model` from `state` (the checkpoint's: step, elapsed_s) until `budget` is spent.

    Each step: the learning rate `lr_of(step, total_steps)`, torch's seed from (seed, step) (dropout
    as a function of the step: an exact resume), `loss_of(step)` -> (loss, named parts: its own batch
    of that step, forward and loss), backward, gradient clipped at 1, a NaN stop (TrainingDiverged,
    the last good checkpoint named), the optimizer step. Rows go to `log` every `log_every` steps
    (loss, parts, lr, elapsed_s, windows_per_s from `windows_per_step`) with `validate()`'s scores
    every `eval_every`; a checkpoint of `kind` every `checkpoint_every` and at the end. A progress
    bar named `name` ("idm train") shows the time budget. Returns True when the budget is spent,
    False where `stop_after` (a simulated kill, for tests) ended it with nothing saved after the
    last checkpoint. A Ctrl-C or SIGTERM (`ctrl_c`) saves its step, then raises `ctrl_c.stopped`.
    With `ema` (a copy of `model`), it follows the weights after each step as an exponential moving
    average of decay `ema_decay`, warmed up as (1 + step) / (10 + step) (`ema_decay_at`, the world
    model's), and is saved beside them ("ema" in the checkpoint).
    """
    import torch
    from tqdm import tqdm

    from worldloom import checkpoint as ckpt

    start_step = step = state["step"]
    elapsed0, t0 = state["elapsed_s"], time.perf_counter()
    last_log, last_log_step = t0, start_step
    last_good = f"{run_dir / ckpt.CHECKPOINT_DIR} (step {start_step})" if start_step else None
    if start_step:
        print(budget.resuming(name, start_step, elapsed0, run_dir / ckpt.CHECKPOINT_DIR), file=sys.stderr)
    bar = tqdm(total=budget.shown_total, initial=start_step, desc=name, unit="step", dynamic_ncols=True)
    ctrl_c.begin_steps()  # Ctrl-C / SIGTERM from here on: at the end of its step
    try:
        # The one test of the budget is after a step, so the step that ends a run is always saved (tested
        # at the loop's top as well, time spent logging or validating ended the loop with steps unsaved).
        final = budget.done(step, elapsed0)  # a resumed run whose budget is spent takes no step
        while not final:
            lr = lr_of(step, budget.total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(seed * 1_000_003 + step)  # dropout noise as a function of the step
            loss, parts = loss_of(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            check_finite(loss.item(), float(grad_norm), step + 1, last_good)  # numbered as its metrics row
            optimizer.step()
            if ema is not None:
                update_ema(ema, model, ema_decay_at(step, ema_decay))
            step += 1
            elapsed = elapsed0 + time.perf_counter() - t0
            if budget.update(step, elapsed, step - start_step):
                bar.total = budget.shown_total
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}", **budget.clock(elapsed))
            if stop_after is not None and step >= stop_after:
                return False  # a kill: nothing after the last checkpoint survives
            final, pressed = budget.done(step, elapsed), ctrl_c.pressed  # Ctrl-C: save this step, then stop
            evaluating, saving = step % eval_every == 0 or final, step % checkpoint_every == 0 or final or pressed
            if step % log_every == 0 or evaluating:
                now = time.perf_counter()
                row = {"step": step, "lr": lr, "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                       "elapsed_s": round(elapsed, 2),
                       "windows_per_s": round(windows_per_step * (step - last_log_step) / max(1e-9, now - last_log), 2)}
                if evaluating:
                    scores = validate()
                    check_finite_scores(scores, step, last_good)  # weights giving NaN are never saved
                    row.update(scores)
                    bar.write(" ".join(f"{k}={figure(v, '.4g')}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in row.items()))
                    sys.stdout.flush()  # tqdm does not: redirected to a file, the lines came only at the end
                log.row(**row)
                last_log, last_log_step = time.perf_counter(), step
                if not saving:
                    log.write()  # metrics.csv at every row, curves.png every 30 s (the checkpoint below: both)
            if saving:
                weights = {"model": model.state_dict(), **({"ema": ema.state_dict()} if ema is not None else {})}
                ckpt.save_checkpoint(run_dir, kind, weights,
                                     {"step": step, "elapsed_s": elapsed, **budget.state()}, optimizer=optimizer)
                last_good = f"{run_dir / ckpt.CHECKPOINT_DIR} (step {step})"
                log.write(plot=True)
            if pressed:
                raise ctrl_c.stopped(step, run_dir / ckpt.CHECKPOINT_DIR)
    finally:
        ctrl_c.restore()
        bar.close()
    return True
