"""The pipeline's report: what a person looks at after `make demo`.

Datasets (statistics and frame grids), the IDM beside its baselines, the world model beside
copy-last-frame and shuffled actions, rollouts beside the truth, training curves, time and
core-seconds per stage, and the config. Built from the stages' own JSON outputs, which go
into report.json unchanged, so every number on the page can be traced to a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worldloom.actions import FPS
from worldloom.config import to_json_dict
from worldloom.paths import redact_json
from worldloom.pipeline.report import Report, Section
from worldloom.pipeline.stages import StageRecord

ENV_TITLES = {"voxel": "VoxelWorld", "crafter": "Crafter", "minetest": "Minetest", "minerl": "MineRL"}


def _dataset_rows(paths: dict[str, Path], figures_dir: Path, section: Section) -> dict:
    from worldloom.datasets import Dataset
    from worldloom.datasets.export import contact_sheet

    stats, rows, keys = {}, [], []
    for name in ("labeled", "footage", "heldout", "judge_data", "pseudo"):
        if not (paths[name] / "dataset.json").exists():
            continue
        ds = Dataset(str(paths[name]))
        num_frames = int(sum(ds.episodes.column("num_steps").to_pylist()))
        size_bytes = sum(s.get("size_bytes", 0) for s in ds.manifest.get("shards", []))
        sources = sorted(set(ds.episodes.column("label_source").to_pylist()))
        stats[name] = {"episodes": len(ds.episode_ids), "frames": num_frames, "hours": num_frames / FPS / 3600,
                       "bytes_per_frame": size_bytes / max(1, num_frames), "label_sources": sources}
        rows.append([name, len(ds.episode_ids), num_frames, round(num_frames / FPS / 60, 2),
                     round(stats[name]["bytes_per_frame"]), ", ".join(sources)])
        keys.append(["", f"datasets.{name}.episodes", f"datasets.{name}.frames", "", "", ""])
    section.table(["dataset", "episodes", "frames", "minutes at 20 fps", "bytes/frame", "label source"], rows, keys)
    for name in ("labeled", "heldout"):
        if name in stats:
            png = figures_dir / f"frames-{name}.png"
            contact_sheet(Dataset(str(paths[name])), str(png), num=24, cols=8, scale=2)
            section.image(png, f"{name}: the middle frame of each episode")
    return stats


def _metric(d: dict, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _idm_section(report: Report, records: dict[str, StageRecord], paths: dict[str, Path]) -> None:
    rec = records.get("idm_eval")
    s = report.section("Inverse dynamics model",
                       "Scored on held-out world seeds, beside the always-no-op and persistence baselines, and on "
                       "the withheld footage against its true actions.")
    if rec is None:
        return
    report.data["idm"] = rec.figures
    rows, keys = [], []
    metrics = [("button accuracy (mean)", "button_accuracy_mean"), ("button macro F1", "button_macro_f1"),
               ("exact match (20 buttons)", "button_exact_match"), ("camera R² pitch", "camera_r2_pitch"),
               ("camera R² yaw", "camera_r2_yaw"), ("camera bin accuracy", "camera_bin_accuracy")]
    for label, m in metrics:
        row, krow = [label], [""]
        for split, model in (("heldout", "idm"), ("heldout", "always_noop"), ("heldout", "persistence"), ("footage", "idm")):
            value = _metric(rec.figures, split, model, m)
            row.append("n/a" if value is None else value)
            krow.append(f"idm.{split}.{model}.{m}" if value is not None else "")
        rows.append(row)
        keys.append(krow)
    s.table(["metric", "IDM (held-out seeds)", "always no-op", "persistence", "IDM (withheld footage)"], rows, keys)
    for png, caption in ((paths["idm"] / "curves.png", "IDM training curves"),
                         (Path(rec.outputs["heldout"]) / "confusion.png", "camera bins and per-button F1, held-out seeds")):
        s.image(png, caption)


def _wm_section(report: Report, records: dict[str, StageRecord], paths: dict[str, Path]) -> None:
    rec = records.get("pretrain_eval")
    s = report.section("World model",
                       "Trained on the labeled plus pseudo-labeled data; scored on held-out world seeds. "
                       "Controllability: a judge IDM that did not make the labels reads the actions back "
                       "from generated frames, compared with the same judge on real frames.")
    if rec is None:
        return
    r = rec.figures["world_model"]
    report.data["world_model"] = r
    rows = [
        ["next-frame PSNR (dB)", r["next_frame"]["psnr"], r["next_frame"]["copy_last_psnr"]],
        ["next-frame SSIM", r["next_frame"]["ssim"], r["next_frame"]["copy_last_ssim"]],
        ["ΔPSNR true − shuffled actions (dB)", r["delta_psnr"]["mean"], 0.0],
        ["generated frames/s", r["frames_per_s"], ""],
    ]
    keys = [["", "world_model.next_frame.psnr", "world_model.next_frame.copy_last_psnr"],
            ["", "world_model.next_frame.ssim", "world_model.next_frame.copy_last_ssim"],
            ["", "world_model.delta_psnr.mean", ""], ["", "world_model.frames_per_s", ""]]
    s.table(["metric", "world model", "copy-last-frame"], rows, keys)
    c = r.get("controllability")
    if c:
        crow, ckeys = [], []
        for k in ("real", "generated", "ratio"):
            crow.append([k] + [c[k].get(m) if c[k].get(m) is not None else "n/a"
                               for m in ("button_macro_f1", "button_accuracy_mean", "camera_r2_pitch", "camera_r2_yaw")])
            ckeys.append([""] + [f"world_model.controllability.{k}.{m}" if c[k].get(m) is not None else ""
                                 for m in ("button_macro_f1", "button_accuracy_mean", "camera_r2_pitch", "camera_r2_yaw")])
        s.table(["judge IDM on", "button macro F1", "button accuracy", "camera R² pitch", "camera R² yaw"], crow, ckeys)
    for gif in rec.outputs.get("rollouts", []):
        s.video(gif, "left: truth, right: the world model (context from real frames, then generated)")
    s.image(Path(rec.outputs["eval"]) / "eval.png", "rollout error by horizon")
    s.image(paths["wm"] / "curves.png", "world model training curves")


def _cost_section(report: Report, records: dict[str, StageRecord], stats: dict) -> None:
    s = report.section("Time and cost per stage", "Wall time and core-seconds of this process and every process "
                       "below it (Ray workers included).")
    rows, keys, cost = [], [], {}
    for name, rec in records.items():
        if name == "report":
            continue
        cost[name] = {"wall_s": rec.wall_s, "core_s": rec.core_s}
        rows.append([name, rec.wall_s, rec.core_s])
        keys.append(["", f"cost.{name}.wall_s", f"cost.{name}.core_s"])
    captured = sum(stats.get(n, {}).get("frames", 0) for n in ("labeled", "footage", "heldout", "judge_data"))
    if "capture" in records and captured:
        cost["capture_frames_per_s"] = captured / records["capture"].wall_s
        cost["capture_core_hours_per_footage_hour"] = records["capture"].core_s / (captured / FPS)
        rows.append(["capture frames/s", cost["capture_frames_per_s"], ""])
        rows.append(["capture core-hours per hour of footage", cost["capture_core_hours_per_footage_hour"], ""])
        keys += [["", "cost.capture_frames_per_s", ""], ["", "cost.capture_core_hours_per_footage_hour", ""]]
    report.data["cost"] = cost
    s.table(["stage", "wall s", "core s"], rows, keys)


def write_report(cfg, paths: dict[str, Path], records: dict[str, StageRecord]) -> Path:
    """Assemble report.html / report.md / report.json in the run directory."""
    paths["figures"].mkdir(parents=True, exist_ok=True)
    report = Report(f"WorldLoom pipeline: preset {cfg.preset}", root=Path(cfg.out).resolve())
    report.data["config"] = redact_json(to_json_dict(cfg))
    report.data["preset"] = to_json_dict(cfg.resolved_sizes)
    stats = _dataset_rows(paths, paths["figures"], report.section(
        "Datasets", f"Recorded by Ray actors playing {ENV_TITLES.get(cfg.env, cfg.env)} with the mixture player; "
        "footage had its actions withheld and was pseudo-labeled by the IDM."))
    report.data["datasets"] = stats
    _idm_section(report, records, paths)
    _wm_section(report, records, paths)
    _cost_section(report, records, stats)
    report.section("Config").code(json.dumps({"pipeline": report.data["config"], "preset": report.data["preset"]}, indent=2))
    return report.write(Path(cfg.out).resolve())
