"""The main job: capture, IDM, label, pretrain, evaluate; one command, one report.

    worldloom pipeline --preset tiny --out runs/demo          # the README's demo (make demo)
    worldloom pipeline --preset micro --out runs/ci           # CI: the whole loop in minutes
    worldloom pipeline --preset tiny --out runs/demo --from pretrain   # redo pretrain onwards
    worldloom pipeline --preset large --out s3://... --address auto    # a Ray cluster with GPUs

The VPT-to-Sora loop on one machine: a little labeled play (the "contractor data"), a larger
set whose actions are withheld (truth kept aside), a held-out set on world seeds no model saw,
an IDM trained on the labeled set and scored on the held-out one, the withheld set pseudo-
labeled by it, a world model pretrained on labeled plus pseudo-labeled clips and scored on the
held-out set, with controllability judged by a second IDM that did not make the labels.

Every stage is cached in `<out>/pipeline.json` under a key of its config and its inputs' keys:
running again reuses completed stages, `--from STAGE` redoes that stage and all after it, and a
run killed midway resumes (capture and training resume inside a stage too).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldloom.config import add_dataclass_args, dataclass_from_args, doc
from worldloom.errors import UserError
from worldloom.pipeline.stages import StageRunner, stage_key


@dataclass(frozen=True)
class Preset:
    """Sizes of one pipeline run; one code path, presets only change sizes (DESIGN section 10)."""

    resolution: int
    steps: int                    # steps per episode (20 per second of game time)
    labeled_episodes: int         # the contractor data
    footage_episodes: int         # actions withheld, truth kept aside, pseudo-labeled by the IDM
    heldout_episodes: int         # world seeds no model trains on: every score is measured here
    judge_episodes: int           # labeled play for the judge IDM (controllability scoring only)
    idm_preset: str
    idm_minutes: float
    judge_minutes: float
    wm_preset: str
    wm_minutes: float
    eval_clips: int
    eval_horizon: int             # rollout frames scored by PSNR/SSIM per horizon
    rollout_horizon: int          # frames generated for each rollout video
    expected: str                 # time and hardware, for the docs and --help


PRESETS: dict[str, Preset] = {
    "micro": Preset(resolution=64, steps=64, labeled_episodes=4, footage_episodes=4, heldout_episodes=2,
                    judge_episodes=3, idm_preset="tiny", idm_minutes=0.35, judge_minutes=0.15, wm_preset="tiny",
                    wm_minutes=0.4, eval_clips=4, eval_horizon=8, rollout_horizon=12, expected="CI: about 4 minutes on 2 CPU cores"),
    "tiny": Preset(resolution=64, steps=400, labeled_episodes=24, footage_episodes=48, heldout_episodes=8,
                   judge_episodes=16, idm_preset="tiny", idm_minutes=5.0, judge_minutes=2.0, wm_preset="tiny",
                   wm_minutes=6.0, eval_clips=32, eval_horizon=16, rollout_horizon=48,
                   expected="README demo: under 20 minutes on 2 CPU cores"),
    "small": Preset(resolution=64, steps=1000, labeled_episodes=200, footage_episodes=800, heldout_episodes=40,
                    judge_episodes=100, idm_preset="small", idm_minutes=30.0, judge_minutes=15.0, wm_preset="small",
                    wm_minutes=60.0, eval_clips=128, eval_horizon=16, rollout_horizon=64,
                    expected="about 2 hours on a 16-core workstation; a GPU shortens the training stages"),
    "large": Preset(resolution=128, steps=2000, labeled_episodes=2000, footage_episodes=20000, heldout_episodes=200,
                    judge_episodes=500, idm_preset="vpt", idm_minutes=600.0, judge_minutes=120.0, wm_preset="large",
                    wm_minutes=1440.0, eval_clips=512, eval_horizon=16, rollout_horizon=64,
                    expected="a Ray cluster with GPUs (--address): about a day on 8 GPUs and 256 CPU cores"),
}

STAGES = ("capture", "idm", "idm_eval", "label", "pretrain", "pretrain_eval", "report")


@dataclass(frozen=True)
class PipelineConfig:
    """One run of the whole loop."""

    out: str = doc("run directory: datasets, models, report.html")
    preset: str = doc(f"sizes: {', '.join(f'{k} ({v.expected})' for k, v in PRESETS.items())}", "tiny")
    seed: int = doc("seed of every stage (world seeds of the held-out set are disjoint from training's)", 0)
    workers: int = doc("Ray actors for capture and labeling (default: the machine's cores)", 0)
    address: str | None = doc("Ray cluster to join (e.g. auto); default: a local one on loopback", None)
    from_stage: str | None = doc(f"redo this stage and every one after it: {', '.join(STAGES)}", None)
    gpu: bool = doc("train and label on GPUs", False)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.from_stage is not None and self.from_stage not in STAGES:
            raise UserError(f"--from-stage must be one of {', '.join(STAGES)}, got {self.from_stage!r}")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")

    @property
    def sizes(self) -> Preset:
        return PRESETS[self.preset]

    @property
    def num_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)


def _paths(out: Path) -> dict[str, Path]:
    data = out / "data"
    return {"labeled": data / "labeled", "footage": data / "footage", "truth": data / "footage-truth",
            "heldout": data / "heldout", "judge_data": data / "judge", "pseudo": data / "pseudo",
            "idm": out / "idm", "judge": out / "idm-judge", "wm": out / "world-model", "figures": out / "figures"}


def run_capture(cfg: PipelineConfig, paths: dict[str, Path]) -> tuple[dict, dict]:
    """Record the four datasets; seeds are disjoint so the held-out worlds stay unseen."""
    from worldloom.capture import CaptureConfig, capture
    from worldloom.cluster import ray_session

    s = cfg.sizes
    jobs = {  # name: (episodes, seed offset, strip actions to)
        "labeled": (s.labeled_episodes, 1, None),
        "footage": (s.footage_episodes, 2, str(paths["truth"])),
        "heldout": (s.heldout_episodes, 3, None),
        "judge_data": (s.judge_episodes, 4, None),
    }
    configs = {name: CaptureConfig(
        out=str(paths[name]), env="voxel", player="mixture", episodes=episodes, steps=s.steps,
        resolution=s.resolution, seed=cfg.seed * 10 + offset, workers=cfg.num_workers,
        address=cfg.address, strip_actions=strip) for name, (episodes, offset, strip) in jobs.items()}
    figures = {}
    with ray_session(cfg.address, cfg.num_workers):  # one cluster for the four jobs: Ray starts in seconds, not zero
        for name, capture_cfg in configs.items():
            t0 = time.perf_counter()
            capture(capture_cfg)
            figures[name] = {"episodes": capture_cfg.episodes, "wall_s": time.perf_counter() - t0}
    return {k: str(paths[k]) for k in jobs}, figures


def run_idm(cfg: PipelineConfig, paths: dict[str, Path], judge: bool) -> tuple[dict, dict]:
    from worldloom.idm.train import TrainConfig, train

    s = cfg.sizes
    data, out, minutes = ((paths["judge_data"], paths["judge"], s.judge_minutes) if judge
                          else (paths["labeled"], paths["idm"], s.idm_minutes))
    train(TrainConfig(data=(str(data),), out=str(out), preset=s.idm_preset, minutes=minutes,
                              steps=100_000, seed=cfg.seed + (1 if judge else 0),
                              device="cuda" if cfg.gpu else "cpu"))
    return {"run": str(out)}, {}


def run_idm_eval(cfg: PipelineConfig, paths: dict[str, Path]) -> tuple[dict, dict]:
    from worldloom.idm.evaluate import evaluate

    heldout = evaluate(paths["idm"], [str(paths["heldout"])], out=paths["idm"] / "eval-heldout")
    footage = evaluate(paths["idm"], [str(paths["footage"])], truth=[str(paths["truth"])],
                           out=paths["idm"] / "eval-footage")
    return {"heldout": heldout["out"], "footage": footage["out"]}, {"heldout": heldout, "footage": footage}


def run_label(cfg: PipelineConfig, paths: dict[str, Path]) -> tuple[dict, dict]:
    from worldloom.idm.label import LabelConfig, label

    result = label(LabelConfig(model=str(paths["idm"]), input=str(paths["footage"]),
                                       out=str(paths["pseudo"]), num_workers=1))
    return {"pseudo": str(paths["pseudo"])}, {"label": result}


def run_pretrain(cfg: PipelineConfig, paths: dict[str, Path]) -> tuple[dict, dict]:
    from worldloom.pretrain.train import TrainConfig, main

    s = cfg.sizes
    main(TrainConfig(data=(str(paths["labeled"]), str(paths["pseudo"])), out=str(paths["wm"]), preset=s.wm_preset,
                     minutes=s.wm_minutes, max_steps=100_000, seed=cfg.seed, gpu=cfg.gpu))
    return {"run": str(paths["wm"])}, {}


def run_pretrain_eval(cfg: PipelineConfig, paths: dict[str, Path]) -> tuple[dict, dict]:
    from worldloom.datasets import Dataset
    from worldloom.pretrain.evaluate import EvalConfig, evaluate
    from worldloom.pretrain.rollout import RolloutConfig, rollout_episode

    report = evaluate(EvalConfig(model=str(paths["wm"]), data=(str(paths["heldout"]),), idm=str(paths["judge"]),
                                 num_clips=cfg.sizes.eval_clips, horizon=cfg.sizes.eval_horizon,
                                 seed=cfg.seed))
    paths["figures"].mkdir(parents=True, exist_ok=True)
    rollouts = []
    for i, episode in enumerate(Dataset(str(paths["heldout"])).episode_ids[:2]):
        gif = paths["figures"] / f"rollout-{i}.gif"
        rollout_episode(RolloutConfig(model=str(paths["wm"]), data=str(paths["heldout"]), episode=episode,
                                      out=str(gif), horizon=min(cfg.sizes.rollout_horizon, cfg.sizes.steps - 8), scale=3))
        rollouts.append(str(gif))
    return {"eval": str(paths["wm"] / "eval"), "rollouts": rollouts}, {"world_model": report}


def main(cfg: PipelineConfig) -> Path:
    """Run (or resume) every stage, then write the report; returns report.html's path."""
    from worldloom.pipeline.sections import write_report

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = _paths(out)
    runner = StageRunner(out, cfg.from_stage, STAGES)
    sizes = dataclasses.asdict(cfg.sizes)
    keys: dict[str, str] = {}

    def stage(name: str, config: Any, upstream: tuple[str, ...], fn) -> Any:
        keys[name] = stage_key(config, [keys[u] for u in upstream])
        return runner.run(name, keys[name], fn)

    stage("capture", {"sizes": sizes, "seed": cfg.seed}, (), lambda: run_capture(cfg, paths))
    stage("idm", {"preset": cfg.sizes.idm_preset, "minutes": cfg.sizes.idm_minutes, "seed": cfg.seed,
                  "judge_minutes": cfg.sizes.judge_minutes}, ("capture",),
          lambda: _both(run_idm(cfg, paths, judge=False), run_idm(cfg, paths, judge=True)))
    stage("idm_eval", {}, ("idm",), lambda: run_idm_eval(cfg, paths))
    stage("label", {}, ("idm",), lambda: run_label(cfg, paths))
    stage("pretrain", {"preset": cfg.sizes.wm_preset, "minutes": cfg.sizes.wm_minutes, "seed": cfg.seed},
          ("label",), lambda: run_pretrain(cfg, paths))
    stage("pretrain_eval", {"clips": cfg.sizes.eval_clips, "horizon": cfg.sizes.eval_horizon}, ("pretrain", "idm"), lambda: run_pretrain_eval(cfg, paths))
    stage("report", {"written_at": time.time()}, tuple(STAGES[:-1]),
          lambda: ({"html": str(write_report(cfg, paths, runner.records))}, {}))
    html = out / "report.html"
    print(f"[pipeline] report: {html}", flush=True)
    return html


def _both(a: tuple[dict, dict], b: tuple[dict, dict]) -> tuple[dict, dict]:
    return {"idm": a[0], "judge": b[0]}, {"idm": a[1], "judge": b[1]}


def register(subparsers, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(p, PipelineConfig, skip=("from_stage",))
    p.add_argument("--from", dest="from_stage", choices=STAGES, default=None,
                   help="redo this stage and every one after it")
    p.set_defaults(handler=lambda args: (main(dataclass_from_args(PipelineConfig, args)), 0)[1])


__all__ = ["PRESETS", "STAGES", "PipelineConfig", "Preset", "main"]
