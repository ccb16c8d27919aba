"""The main job: capture, IDM, label, pretrain, evaluate; one command, one report.

    worldloom pipeline run --preset tiny --out runs/demo          # the README's demo (make demo)
    worldloom pipeline run --preset micro --out runs/ci           # the whole loop in minutes
    worldloom pipeline run --preset tiny --out runs/demo --from pretrain   # redo pretrain onwards
    worldloom pipeline run --preset small --sizes.steps 200 --out runs/s  # a preset, cut down
    worldloom pipeline run --preset large --out runs/large --address auto --device cuda   # a Ray cluster with GPUs

The VPT-to-Sora loop on one machine: a little labeled play (the "contractor data"), a larger
set whose actions are withheld (truth kept aside), a held-out set on world seeds no model saw,
an IDM trained on the labeled set and scored on the held-out one, the withheld set pseudo-
labeled by it, a world model pretrained on labeled plus pseudo-labeled clips and scored on the
held-out set, with controllability judged by a second IDM that did not make the labels.

Every stage is cached in `<out>/pipeline.json` under a key of its config and of the stages it reads (their
keys, and a token drawn each time one runs: `StageRunner.made_key`), and runs again when another command changed
a dataset it reads (episodes added to data/labeled by `capture run`, a `dataset merge` or `repair` there):
running again reuses completed stages, `--from STAGE` redoes that stage and all after it, and a
run killed midway resumes (capture and training resume inside a stage too).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldloom.capture.config import MAX_STEPS
from worldloom.cluster import MAX_WORKERS, NUM_WORKERS_RANGE
from worldloom.config import (
    add_dataclass_args,
    check_range,
    dataclass_from_args,
    deprecated_flag,
    doc,
    to_json_dict,
)
from worldloom.pipeline.stages import StageRunner, fingerprint, portable, stage_key


@dataclass(frozen=True)
class Preset:
    """Sizes of one pipeline run; one code path, presets only change sizes (DESIGN section 10).

    `resolution` is the one place the frame size is named: capture records at it, and the IDM's
    input and the world model's frames are set to it (`stage_configs`).
    """

    resolution: int = doc("frame height and width in pixels of every dataset and both models", 64)
    steps: int = doc("steps per episode (20 per second of game time; at least the IDM's window and the world model's "
                     "context + eval horizon)", 400)
    labeled_episodes: int = doc("episodes of labeled play (the contractor data)", 24)
    footage_episodes: int = doc("episodes recorded with actions withheld (truth kept aside), pseudo-labeled by the IDM", 48)
    heldout_episodes: int = doc("episodes on world seeds no model trains on: every score is measured there", 8)
    judge_episodes: int = doc("labeled episodes for the judge IDM (controllability scoring only; 0: no judge)", 16)
    idm_preset: str = doc("the IDM's model preset", "tiny")
    idm_minutes: float = doc("IDM training budget in minutes", 5.0)
    idm_batch_size: int | None = doc("IDM windows per step (default: the IDM preset's); validation scores twice as many", None)
    judge_minutes: float = doc("judge IDM training budget in minutes", 2.0)
    wm_preset: str = doc("the world model's preset", "tiny")
    wm_minutes: float = doc("world-model training budget in minutes", 6.0)
    wm_batch_size: int = doc("world-model clips per step", 16)
    eval_clips: int = doc("held-out clips the world model is scored on", 32)
    eval_horizon: int = doc("rollout frames scored by PSNR/SSIM per horizon", 16)
    rollout_horizon: int = doc("frames generated for each rollout video", 48)
    rollout_videos: int = doc("held-out episodes rolled out into videos for the report", 2)
    engine_states: int = doc("saved states on held-out world seeds, each played in the engine and the world model under "
                             "the engine_branches action sequences: engine-truth controllability (0: none; over 8 states "
                             "its 95% interval is about 0.2 wide, over 32 about 0.1)", 32)
    engine_horizon: int = doc("steps played from each saved state (the goal is read at 8)", 8)
    engine_branches: tuple[str, ...] = doc("action sequences played from each saved state: player, turn, walk, still",
                                           ("player", "turn", "walk", "still"))
    revisit_states: int = doc("saved states on held-out world seeds whose paths return to where they started, played "
                              "in the engine and the world model: revisit consistency (0: none)", 0)
    expected: str = doc("time and hardware, for the docs and --help", "")

    def __post_init__(self) -> None:
        from worldloom.idm.model import PRESETS as IDM_PRESETS
        from worldloom.pretrain.model import PRESETS as WM_PRESETS

        for name, low, high, unit in SIZE_RANGES:
            check_range(f"sizes.{name}", getattr(self, name), low, high, unit, integer="minutes" not in name)
        if self.idm_batch_size is not None:
            check_range("sizes.idm_batch_size", self.idm_batch_size, 1, 4096, "windows per step")
        if self.idm_preset not in IDM_PRESETS:
            raise ValueError(f"sizes.idm_preset must be one of {', '.join(sorted(IDM_PRESETS))}, got {self.idm_preset!r}")
        if self.wm_preset not in WM_PRESETS:
            raise ValueError(f"sizes.wm_preset must be one of {', '.join(sorted(WM_PRESETS))}, got {self.wm_preset!r}")
        low, why = self.min_steps
        check_range("sizes.steps", self.steps, low, MAX_STEPS, f"steps per episode; at least {why}")
        most, why = self.max_wm_batch
        check_range("sizes.wm_batch_size", self.wm_batch_size, 1, most, f"clips per step; at most {why}")

    @property
    def max_wm_batch(self) -> tuple[int, str]:
        """The most clips a world-model batch can hold, and why: the datasets' whole clips per epoch
        (pretrain/data.py drops a partial batch; an epoch without a full one stops training)."""
        from worldloom.pretrain.model import PRESETS as WM_PRESETS

        model = WM_PRESETS[self.wm_preset]
        played = self.labeled_episodes + self.footage_episodes
        limits = [(played * (self.steps // model.num_frames),
                   f"the {played} x {self.steps // model.num_frames} clips of {model.num_frames} steps in "
                   f"--sizes.labeled-episodes + --sizes.footage-episodes of --sizes.steps {self.steps}")]
        if model.prediction == "x_skip":  # the camera warp is fitted on pairs from the labeled episodes first
            limits.append((self.labeled_episodes * (self.steps // 2),
                           f"the {self.labeled_episodes} x {self.steps // 2} frame pairs of the labeled episodes the "
                           "camera field of view is fitted on"))
        return min(limits)

    @property
    def min_steps(self) -> tuple[int, str]:
        """The fewest steps per episode every stage can use, and the stage that needs them: checked
        while the flags are parsed, not when a later stage finds the episodes too short."""
        from worldloom.idm.model import PRESETS as IDM_PRESETS
        from worldloom.pretrain.model import PRESETS as WM_PRESETS

        window, context = IDM_PRESETS[self.idm_preset].num_frames, WM_PRESETS[self.wm_preset].num_frames - 1
        needs = [(window, f"the IDM's window of {window} frames ({self.idm_preset})"),
                 (context + self.eval_horizon, f"the world model's {context} context frames and the eval horizon of "
                                               f"{self.eval_horizon}"),
                 (9, "8 + 1 for the rollout videos")]
        return max(needs)


MAX_EPISODES = 10_000_000  # capture's own ceiling (capture/config.py)
# (size, least, most, unit) of the Preset numbers checked on parsing; steps and wm_batch_size have
# ranges that depend on the other sizes (Preset.min_steps, Preset.max_wm_batch).
SIZE_RANGES = (
    ("resolution", 1, 4096, "pixels"),
    ("labeled_episodes", 1, MAX_EPISODES, "episodes"),
    ("footage_episodes", 1, MAX_EPISODES, "episodes"),
    ("heldout_episodes", 1, MAX_EPISODES, "episodes"),
    ("judge_episodes", 0, MAX_EPISODES, "episodes; 0: no judge"),
    ("idm_minutes", 0, 10**6, "minutes"),
    ("judge_minutes", 0, 10**6, "minutes"),
    ("wm_minutes", 0, 10**6, "minutes"),
    ("eval_clips", 1, 1_000_000, "clips"),
    ("eval_horizon", 1, MAX_STEPS, "frames"),
    ("rollout_horizon", 1, MAX_STEPS, "frames"),
    ("rollout_videos", 1, 1000, "videos"),
    ("engine_states", 0, 1_000_000, "saved states; 0: none"),
    ("engine_horizon", 1, MAX_STEPS, "steps"),
    ("revisit_states", 0, 1_000_000, "saved states; 0: none"),
)

PRESETS: dict[str, Preset] = {
    "micro": Preset(resolution=64, steps=64, labeled_episodes=4, footage_episodes=4, heldout_episodes=2,
                    judge_episodes=3, idm_preset="micro", idm_minutes=0.35, judge_minutes=0.15, wm_preset="tiny",
                    wm_minutes=0.4, eval_clips=4, eval_horizon=8, rollout_horizon=12, engine_states=2, engine_horizon=4,
                    expected="CI: about 2 minutes on 2 CPU cores"),
    "tiny": Preset(resolution=64, steps=400, labeled_episodes=320, footage_episodes=48, heldout_episodes=8,
                   judge_episodes=16, idm_preset="tiny", idm_minutes=6.0, judge_minutes=1.5, wm_preset="tiny",
                   wm_minutes=4.0, wm_batch_size=8, eval_clips=32, eval_horizon=16, rollout_horizon=64,
                   revisit_states=2, expected="make demo: about 20 minutes on 2 CPU cores, the install included"),
    "small": Preset(resolution=64, steps=1000, labeled_episodes=200, footage_episodes=800, heldout_episodes=40,
                    judge_episodes=100, idm_preset="small", idm_minutes=30.0, judge_minutes=15.0, wm_preset="small",
                    wm_minutes=60.0, eval_clips=128, eval_horizon=16, rollout_horizon=64,
                    engine_states=64, revisit_states=8, expected="about 2 hours on a 16-core workstation; a GPU (--device cuda) shortens training"),
    "large": Preset(resolution=128, steps=2000, labeled_episodes=2000, footage_episodes=20000, heldout_episodes=200,
                    judge_episodes=500, idm_preset="vpt", idm_minutes=600.0, judge_minutes=120.0, wm_preset="large",
                    wm_minutes=1440.0, eval_clips=512, eval_horizon=16, rollout_horizon=64,
                    engine_states=256, engine_horizon=16, revisit_states=32, expected="a Ray cluster with GPUs (--address auto --device cuda): about a day on 8 GPUs"),
}

STAGES = ("capture", "idm", "idm_eval", "label", "pretrain", "pretrain_eval", "report")


@dataclass(frozen=True)
class PipelineConfig:
    """One run of the whole loop."""

    out: str = doc("run directory: datasets, models, report.html")
    preset: str = doc(f"sizes: {', '.join(f'{k} ({v.expected})' for k, v in PRESETS.items())}", "tiny")
    sizes: Preset | None = doc("the preset's sizes, flag by flag (e.g. --sizes.steps 64)", None)
    env: str = doc("env every dataset is recorded in", "voxel")
    seed: int = doc("seed of every stage (world seeds of the held-out set are disjoint from training's)", 0)
    num_workers: int = doc("Ray actors for capture and labeling (0: one per CPU of the cluster)", 0)
    address: str | None = doc("Ray cluster to join (HOST:PORT or auto); default: a local one on loopback", None)
    device: str = doc("where the models train: auto, cpu or cuda (with --address and cuda: one Ray Train "
                      "worker per GPU of the cluster)", "auto")
    from_stage: str | None = doc(f"redo this stage and every one after it (a --from run interrupted and asked again resumes): {', '.join(STAGES)}", None)

    def __post_init__(self) -> None:
        from worldloom.envs import ENV_NAMES, check_resolution
        from worldloom.training import check_device_name

        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.from_stage is not None and self.from_stage not in STAGES:
            raise ValueError(f"from must be one of {', '.join(STAGES)}, got {self.from_stage!r}")
        check_range("num_workers", self.num_workers, 0, MAX_WORKERS, NUM_WORKERS_RANGE)
        if self.env not in ENV_NAMES:
            raise ValueError(f"env must be one of {', '.join(ENV_NAMES)}, got {self.env!r}")
        check_resolution(self.env, self.resolved_sizes.resolution, "sizes.resolution")  # capture's range, checked now
        check_device_name(self.device)

    @classmethod
    def nested_default(cls, name: str, values: dict) -> Preset | None:
        """`--sizes.*` flags apply on top of the preset's sizes (worldloom.config)."""
        return PRESETS.get(values.get("preset", "tiny")) if name == "sizes" else None

    @property
    def resolved_sizes(self) -> Preset:
        """The sizes this run uses: `sizes` if given, else the preset's."""
        return self.sizes if self.sizes is not None else PRESETS[self.preset]

    @property
    def workers(self) -> int:
        """Recorder and labeler actors: --num-workers, else one per CPU of this machine (a local cluster)."""
        return self.num_workers or max(1, os.cpu_count() or 1)

    @property
    def multi_gpu(self) -> bool:
        """Train the world model with one Ray Train worker per GPU of the cluster: --device cuda on a
        joined cluster, or on this machine when torch sees a GPU (else the CPU, with a loud warning)."""
        import torch

        return self.device.startswith("cuda") and (self.address is not None or torch.cuda.is_available())


def _paths(out: Path) -> dict[str, Path]:
    data = out / "data"
    return {"labeled": data / "labeled", "footage": data / "footage", "truth": data / "footage-truth",
            "heldout": data / "heldout", "judge_data": data / "judge", "pseudo": data / "pseudo",
            "idm": out / "idm", "judge": out / "idm-judge", "wm": out / "world-model", "figures": out / "figures",
            "branches": data / "engine-branches.safetensors", "revisits": data / "engine-revisits.safetensors"}


def stage_configs(cfg: PipelineConfig, paths: dict[str, Path]) -> dict[str, Any]:
    """Every stage's config, derived from the pipeline's: one resolution, one seed scheme, one
    cluster. Pure (builds configs, runs nothing), so a test can check that they agree."""
    from worldloom.capture import CaptureConfig
    from worldloom.capture.branches import BranchesConfig
    from worldloom.capture.revisits import RevisitsConfig
    from worldloom.idm.label import LabelConfig
    from worldloom.idm.model import PRESETS as IDM_PRESETS
    from worldloom.idm.train import TrainConfig as IDMTrainConfig
    from worldloom.pretrain.evaluate import EvalConfig
    from worldloom.pretrain.model import PRESETS as WM_PRESETS
    from worldloom.pretrain.train import TrainConfig as WMTrainConfig

    s, res = cfg.resolved_sizes, cfg.resolved_sizes.resolution
    jobs = {  # name: (episodes, seed offset, strip actions to); seeds are disjoint, so held-out worlds stay unseen
        "labeled": (s.labeled_episodes, 1, None),
        "footage": (s.footage_episodes, 2, str(paths["truth"])),
        "heldout": (s.heldout_episodes, 3, None),
        "judge_data": (s.judge_episodes, 4, None),
    }
    capture = {name: CaptureConfig(
        out=str(paths[name]), env=cfg.env, player="mixture", episodes=episodes, steps=s.steps, resolution=res,
        seed=cfg.seed * 10 + offset, num_workers=cfg.workers, address=cfg.address, strip_actions=strip)
        for name, (episodes, offset, strip) in jobs.items() if episodes > 0}
    # engine truth on held-out world seeds (1000000 + seed + i, apart from capture's hashed seeds), with
    # as many context frames as the world model reads; only VoxelWorld saves and restores its state
    context = WM_PRESETS[s.wm_preset].num_frames - 1
    engine = {}
    if s.engine_states and cfg.env == "voxel":
        engine["branches"] = BranchesConfig(out=str(paths["branches"]), env=cfg.env, episodes=s.engine_states,
                                            context=context, horizon=s.engine_horizon, branches=tuple(s.engine_branches),
                                            resolution=res, seed=cfg.seed * 10 + 5)
    if s.revisit_states and cfg.env == "voxel":
        engine["revisits"] = RevisitsConfig(out=str(paths["revisits"]), env=cfg.env, episodes=s.revisit_states,
                                            context=context, resolution=res, seed=cfg.seed * 10 + 6)
    idm_model = dataclasses.replace(IDM_PRESETS[s.idm_preset], height=res, width=res)
    idm_batch = s.idm_batch_size or IDMTrainConfig(data=("-",), out="-", preset=s.idm_preset).hparams.batch_size
    idm = {name: IDMTrainConfig(data=(str(paths[data]),), out=str(paths[name]), preset=s.idm_preset, model=idm_model,
                                minutes=minutes, seed=cfg.seed + offset, device=cfg.device, batch_size=idm_batch,
                                val_windows=2 * idm_batch)
           for name, data, minutes, offset in (("idm", "labeled", s.idm_minutes, 0),
                                               ("judge", "judge_data", s.judge_minutes, 1))
           if name == "idm" or s.judge_episodes > 0}
    wm = WMTrainConfig(data=(str(paths["labeled"]), str(paths["pseudo"])), out=str(paths["wm"]), preset=s.wm_preset,
                       model=dataclasses.replace(WM_PRESETS[s.wm_preset], image_size=res), minutes=s.wm_minutes,
                       batch_size=s.wm_batch_size,
                       seed=cfg.seed, device=cfg.device, address=cfg.address, num_workers=0 if cfg.multi_gpu else 1)
    return {
        "capture": capture, "engine": engine, "idm": idm,
        "label": LabelConfig(model=str(paths["idm"]), data=str(paths["footage"]), out=str(paths["pseudo"]),
                             num_workers=cfg.workers, address=cfg.address),
        "pretrain": wm,
        "pretrain_eval": EvalConfig(model=str(paths["wm"]), data=(str(paths["heldout"]),),
                                    idm=str(paths["judge"]) if "judge" in idm else None,
                                    num_clips=s.eval_clips, horizon=s.eval_horizon, seed=cfg.seed,
                                    next_frame_positions=min(4, s.eval_horizon),
                                    stability_horizon=max(s.eval_horizon, s.rollout_horizon),
                                    counterfactual=engine["branches"].out if "branches" in engine else None,
                                    revisit=engine["revisits"].out if "revisits" in engine else None,
                                    revisit_whole_path=False),
    }


def run_capture(cfg: PipelineConfig, configs: dict) -> tuple[dict, dict]:
    """Record the datasets (one Ray session for all of them, opened by `main`), then the engine's
    truth from saved held-out states (branches and revisits files, in this process)."""
    from worldloom.capture import capture
    from worldloom.capture.branches import record_branches
    from worldloom.capture.revisits import record_revisits

    figures = {}
    for name, capture_cfg in configs["capture"].items():
        t0 = time.perf_counter()
        capture(capture_cfg)
        figures[name] = {"episodes": capture_cfg.episodes, "wall_s": time.perf_counter() - t0}
    for name, engine_cfg in configs["engine"].items():
        t0 = time.perf_counter()
        recorded = (record_branches if name == "branches" else record_revisits)(engine_cfg)
        figures[name] = {"states": int(recorded.frames.shape[0]), "wall_s": time.perf_counter() - t0}
    return {k: c.out for k, c in (configs["capture"] | configs["engine"]).items()}, figures


def run_idm(configs: dict) -> tuple[dict, dict]:
    from worldloom.idm.train import train

    return {name: {"run": str(train(c))} for name, c in configs["idm"].items()}, {}


def run_idm_eval(paths: dict[str, Path]) -> tuple[dict, dict]:
    from worldloom.idm.evaluate import evaluate

    heldout = evaluate(paths["idm"], [str(paths["heldout"])], out=paths["idm"] / "eval-heldout")
    footage = evaluate(paths["idm"], [str(paths["footage"])], truth=[str(paths["truth"])],
                       out=paths["idm"] / "eval-footage")
    return {"heldout": heldout["out"], "footage": footage["out"]}, {
        "heldout": heldout, "footage": footage, "unseen": unseen_margins({"heldout": heldout, "footage": footage})}


def unseen_margins(reports: dict[str, dict]) -> dict:
    """The IDM against persistence on every episode it never trained on (the held-out seeds and the withheld
    footage pooled), each goal score's margin with a 95% interval over those episodes; pops the reports'
    per-episode counts (numpy, not stage figures)."""
    from worldloom.idm import metrics

    counts = [r.pop("episode_counts") for r in reports.values()]
    vs = metrics.margins(*(metrics.concat_counts([c[side] for c in counts]) for side in ("idm", "persistence")))
    return {"datasets": {name: r["num_episodes"] for name, r in reports.items()}, "vs_persistence": vs}


def run_label(configs: dict) -> tuple[dict, dict]:
    from worldloom.idm.label import label

    result = label(configs["label"])
    return {"pseudo": configs["label"].out}, {"label": result}


def run_pretrain(configs: dict) -> tuple[dict, dict]:
    from worldloom.pretrain.train import main

    return {"run": str(main(configs["pretrain"]))}, {}


def run_pretrain_eval(cfg: PipelineConfig, configs: dict, paths: dict[str, Path]) -> tuple[dict, dict]:
    from worldloom.datasets import Dataset
    from worldloom.pretrain.evaluate import evaluate
    from worldloom.pretrain.rollout import RolloutConfig, rollout_episode

    report = evaluate(configs["pretrain_eval"])
    paths["figures"].mkdir(parents=True, exist_ok=True)
    rollouts, s = [], cfg.resolved_sizes
    for i, episode in enumerate(Dataset(str(paths["heldout"])).episode_ids[:s.rollout_videos]):
        gif = paths["figures"] / f"rollout-{i}.gif"
        rollout_episode(RolloutConfig(model=str(paths["wm"]), data=str(paths["heldout"]), episode=episode,
                                      out=str(gif), horizon=min(s.rollout_horizon, s.steps - 8), scale=3))
        rollouts.append(str(gif))
    eval_json = paths["wm"] / "eval" / "eval.json"  # a cached stage whose report was rewritten since runs again
    return ({"eval": str(paths["wm"] / "eval"), "rollouts": rollouts},
            {"world_model": report, "fingerprints": {str(eval_json.relative_to(paths["wm"].parent)): fingerprint(eval_json)}})


def main(cfg: PipelineConfig) -> Path:
    """Run (or resume) every stage in one Ray session, then write the report; returns report.html's path."""
    from worldloom.folders import run_lock

    with run_lock(cfg.out, "pipeline", "pipeline run"):
        return _main(cfg)


def _main(cfg: PipelineConfig) -> Path:
    from worldloom.cluster import ray_session
    from worldloom.pipeline.report import Report
    from worldloom.pipeline.sections import write_report

    out = Path(cfg.out).resolve()  # (checked by run_lock)
    out.mkdir(parents=True, exist_ok=True)
    paths = _paths(out)
    configs = stage_configs(cfg, paths)
    runner = StageRunner(out, cfg.from_stage, STAGES)
    keys: dict[str, str] = {}

    session, started = contextlib.ExitStack(), []

    def with_ray(fn):
        """`fn` inside the run's one Ray session, started on first use: a run whose stages are
        all cached starts no cluster."""
        def run():
            if not started:
                started.append(session.enter_context(ray_session(cfg.address, cfg.workers)))
            return fn()
        return run

    legacy: dict[str, str] = {}  # the keys with absolute paths (runs written before keys were `portable`)

    def stage(name: str, config: Any, upstream: tuple[str, ...], fn, reads: tuple[str, ...] = ()) -> Any:
        keys[name] = stage_key(portable(_json(config), out), [runner.made_key(u, keys[u]) for u in upstream])
        legacy[name] = stage_key(_json(config), [legacy[u] for u in upstream])
        run = with_ray(fn) if name != "report" else fn
        return runner.run(name, keys[name], lambda: (Report.remove(out), run())[1], writes.get(name, ()), legacy[name],
                          reads=[paths[k] for k in reads])

    writes = {"capture": [paths[k] for k in ("labeled", "footage", "truth", "heldout", "judge_data", "branches", "revisits")],
              "idm": [paths["idm"], paths["judge"]], "idm_eval": [paths["idm"] / "eval-heldout", paths["idm"] / "eval-footage"],
              "label": [paths["pseudo"]], "pretrain": [paths["wm"]],
              "pretrain_eval": [paths["wm"] / "eval", paths["figures"] / "rollout-*.gif"]}  # the report rewrites its own

    # One session for every stage (capture, label, Ray Train): --address and the worker count
    # reach them all; a local cluster is started once and bound to loopback.
    with session:
        if configs["pretrain"].num_workers == 0 and cfg.address is not None:  # one Ray Train worker per GPU there:
            with_ray(lambda: None)()  # the cluster is asked now, not after the stages before training
            configs["pretrain"] = gpus_or_in_process(cfg, configs["pretrain"])
        stage("capture", {**configs["capture"], **configs["engine"]}, (), lambda: run_capture(cfg, configs))
        # a stage that reads a dataset runs again when another command changed what it holds (StageRunner: reads)
        stage("idm", configs["idm"], ("capture",), lambda: run_idm(configs), reads=("labeled", "judge_data"))
        stage("idm_eval", {"verdict": "unseen"}, ("idm",), lambda: run_idm_eval(paths),
              reads=("heldout", "footage", "truth"))
        stage("label", configs["label"], ("idm",), lambda: run_label(configs), reads=("footage",))
        stage("pretrain", configs["pretrain"], ("label",), lambda: run_pretrain(configs), reads=("labeled", "pseudo"))
        stage("pretrain_eval", {"eval": configs["pretrain_eval"], "rollout": cfg.resolved_sizes.rollout_horizon,
                                "videos": cfg.resolved_sizes.rollout_videos},
              ("pretrain", "idm"), lambda: run_pretrain_eval(cfg, configs, paths), reads=("heldout",))
    stage("report", {"written_at": time.time()}, tuple(STAGES[:-1]),
          lambda: ({"html": str(write_report(cfg, paths, runner.records))}, {}))
    html = out / "report.html"
    print(f"[pipeline] report: {html}", flush=True)
    return html


def gpus_or_in_process(cfg: PipelineConfig, wm: Any) -> Any:
    """`wm` (the world model's TrainConfig) as it is when the Ray session's cluster has a GPU; else
    (`--device cuda --address` on a cluster without GPUs) a loud warning before the first stage and the world model trained in this process, as
    without --address (on the CPU, with resolve_device's warning, unless torch sees a GPU here). It was
    refused after capture, IDM and labeling had run, with a hint (--num-workers) that does not reach Ray
    Train from the pipeline (a new-user trial). Which workers train is no part of the stage's key."""
    from worldloom.cluster import cluster_resources
    from worldloom.paths import redact_text

    if int(cluster_resources().get("GPU", 0)) >= 1:
        return wm
    print(f"WARNING: --device {cfg.device} trains the world model with one Ray Train worker per GPU, but the Ray "
          f"cluster at --address {redact_text(cfg.address or '')} has no GPU: it trains in this process instead (on "
          "the CPU unless torch sees a GPU here). Join a cluster with GPUs, or pass --device cpu to silence this.",
          file=sys.stderr, flush=True)
    return dataclasses.replace(wm, num_workers=1)


def _json(config: Any) -> Any:
    """Configs (dataclasses, nested in dicts) as JSON-able data for stage keys; execution-only
    fields (workers, address, device) are left out, so a resumed run on another machine reuses stages."""
    if dataclasses.is_dataclass(config):
        return {k: v for k, v in to_json_dict(config).items() if k not in EXECUTION_FIELDS}
    if isinstance(config, dict):
        return {k: _json(v) for k, v in config.items()}
    return config


EXECUTION_FIELDS = {"num_workers", "address", "device", "progress", "threads"}


def register(subparsers, name: str, help_text: str) -> None:
    """`worldloom pipeline run`: the whole loop."""
    p = subparsers.add_parser(name, help=help_text, description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    run = sub.add_parser("run", help="run (or resume) the whole loop and write the report",
                         description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(run, PipelineConfig, skip=("from_stage",),
                       deprecated={"--workers": "num_workers"})
    deprecated_flag(run, "--gpu", "device", value="cuda")
    run.add_argument("--from", dest="from_stage", choices=STAGES, default=None,
                     help="redo this stage and every one after it")
    run.set_defaults(handler=lambda args: (main(dataclass_from_args(PipelineConfig, args)), 0)[1])
    p.set_defaults(handler=lambda args: p.print_help() or 2)


__all__ = ["PRESETS", "STAGES", "PipelineConfig", "Preset", "main", "stage_configs"]
