"""The data-scaling curve: IDM scores against hours of labeled play, as VPT reported it.

    worldloom idm scaling --data data/voxel --eval-data data/heldout-seeds --hours 0.02 0.05 0.1 --out runs/scaling

One IDM is trained per amount of labeled play (episodes taken in a fixed seeded order, so each
run's data holds the smaller runs' data), each for the same number of steps, and each scored on
the same held-out episodes. Writes scaling.csv and scaling.png (mean button accuracy, macro F1
and camera R² against labeled hours, log axis).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from worldloom.config import doc
from worldloom.errors import UserError
from worldloom.idm.evaluate import evaluate
from worldloom.idm.model import PRESETS
from worldloom.idm.train import TrainConfig
from worldloom.idm.train import main as train_main
from worldloom.io import atomic_path

FIELDS = ("hours", "button_accuracy_mean", "button_macro_f1", "button_exact_match", "camera_r2_pitch",
          "camera_r2_yaw", "camera_bin_accuracy", "noop_button_macro_f1", "run")


@dataclass(frozen=True)
class ScalingConfig:
    """Which data, which amounts of it, and how long each run trains."""

    data: tuple[str, ...] = doc("labeled training datasets")
    eval_data: tuple[str, ...] = doc("held-out labeled datasets to score every run on")
    out: str = doc("directory for one run per amount, scaling.csv and scaling.png")
    hours: tuple[float, ...] = doc("amounts of labeled play in hours", (0.01, 0.03, 0.1))
    preset: str = doc(f"model size: one of {', '.join(sorted(PRESETS))}", "tiny")
    max_steps: int = doc("optimizer steps per run (the same for every amount)", 600)
    minutes: float = doc("wall-clock budget per run (0: none)", 0.0)
    batch_size: int | None = doc("windows per step (default: the preset's, as `idm train`)", None)
    seed: int = doc("seed of every run", 0)
    threads: int = doc("torch CPU threads (0: torch's default)", 0)

    def __post_init__(self) -> None:
        if not self.hours or min(self.hours) <= 0:
            raise ValueError(f"ScalingConfig.hours must be positive amounts, got {self.hours!r}")
        if not self.data or not self.eval_data:
            raise ValueError("ScalingConfig.data and eval_data must each name at least one dataset")


def plot(path: Path, rows: list[dict]) -> None:
    """scaling.png: scores against labeled hours on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [r["hours"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("button_accuracy_mean", "mean button accuracy"), ("button_macro_f1", "button macro F1"),
                       ("camera_r2_pitch", "camera R² pitch"), ("camera_r2_yaw", "camera R² yaw")):
        ax.plot(hours, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log"), ax.set_xlabel("labeled play (hours)"), ax.set_ylim(min(0, *(r["camera_r2_yaw"] for r in rows)), 1)
    ax.set_title("IDM scores on held-out episodes vs labeled data"), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def labeled_hours(data: tuple[str, ...]) -> float:
    """Hours of env-labeled play in `data` (what `idm train --max-hours` draws from), from the episode tables."""
    from worldloom.idm.data import open_dataset

    seconds = 0.0
    for root in data:
        ds = open_dataset(root)
        rows = ds.episodes.select(["num_steps", "label_source"]).to_pylist()
        seconds += sum(r["num_steps"] for r in rows if r["label_source"] == "env") / float(ds.spec.fps)
    return seconds / 3600.0


def main(cfg: ScalingConfig) -> list[dict]:
    """Train and score one IDM per amount of labeled play; returns the rows of scaling.csv."""
    have = labeled_hours(cfg.data)
    if max(cfg.hours) > have:  # every amount past it trains on the same episodes: a flat curve that looks measured
        raise UserError(f"--hours {max(cfg.hours):g} asks for more labeled play than --data holds ({have:.3g} h, "
                        f"{', '.join(map(str, cfg.data))}): give amounts up to {have:.3g} h or capture more play")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for hours in sorted(cfg.hours):
        run = out / f"hours-{hours:g}"
        train_main(TrainConfig(data=cfg.data, out=str(run), preset=cfg.preset, max_steps=cfg.max_steps, minutes=cfg.minutes,
                               batch_size=cfg.batch_size, seed=cfg.seed, max_hours=hours, threads=cfg.threads, eval_every=max(1, cfg.max_steps // 4),
                               checkpoint_every=max(1, cfg.max_steps // 4)))
        report = evaluate(run, list(cfg.eval_data), out=run / "eval")
        rows.append({"hours": hours, **{k: report["idm"][k] for k in FIELDS if k in report["idm"]},
                     "noop_button_macro_f1": report["always_noop"]["button_macro_f1"], "run": str(run)})
    with atomic_path(out / "scaling.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    plot(out / "scaling.png", rows)
    return rows
