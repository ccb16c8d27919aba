"""The pipeline's report: what a person looks at after `make demo`.

Datasets (statistics and frame grids), the IDM beside its baselines, the world model beside
copy-last-frame and shuffled actions, rollouts beside the truth, training curves, time and
core-seconds per stage, and the config. Built from the stages' own JSON outputs, which go
into report.json unchanged, so every number on the page can be traced to a file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

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


# The goals the report judges each model by (issue 18; docs/pretrain.md, docs/idm.md).
NEXT_FRAME_GAIN_DB = 1.0   # world model: next-frame PSNR above copy-last-frame
DELTA_PSNR_DB = 1.0        # world model: PSNR with the true actions above the same rollout with shuffled ones
FRAMES_PER_S = 10.0        # world model: generation speed on the machine that ran the eval
COLOUR_MARGIN = 0.1        # a rollout collapses where its colour distance to the real frames exceeds copy-last's by more
JUDGE_FLOOR = 0.3          # judge IDM's score on real frames below which a generated / real ratio measures noise
# What a run that misses an IDM goal needs (docs/idm.md, "Results"; issue 18's log, sections 22, 26 and 39).
IDM_TRADE_NOTE = ("Where the IDM is below persistence it is short of labeled play and training steps together: "
                  "the tiny IDM passed persistence with the demo's 320 labeled episodes and 6 minutes on a 2-core "
                  "machine with AVX2 only (245 steps, the trunk on every third), and falls under it with fewer "
                  "steps (a slower or busy machine) or on 64 episodes, where its readers over-fit; more of both "
                  "(`--sizes.labeled-episodes`, `--sizes.idm-minutes`) move it up (docs/idm.md, Results).")
PERSISTENCE_NOTE = ("Persistence repeats the previous step's true action, which an IDM never sees: it is the bar "
                    "an IDM must clear, not a peer.")


def _db(x: float) -> str:
    return f"{x:+.2f} dB"


def world_model_verdict(r: dict) -> list[str]:
    """One plain sentence per goal of the world model, from its eval report (pretrain/evaluate.py)."""
    out = []
    nf = r["next_frame"]
    gain = nf["psnr"] - nf["copy_last_psnr"]
    if gain >= NEXT_FRAME_GAIN_DB:
        out.append(f"Next frame: beats copy-last-frame by {_db(gain)} ({nf['psnr']:.2f} vs {nf['copy_last_psnr']:.2f} dB; "
                   f"goal +{NEXT_FRAME_GAIN_DB:g}): met.")
    elif gain > 0:
        out.append(f"Next frame: above copy-last-frame by only {_db(gain)} ({nf['psnr']:.2f} vs {nf['copy_last_psnr']:.2f} dB; "
                   f"goal +{NEXT_FRAME_GAIN_DB:g}): not met.")
    else:
        out.append(f"Next frame: loses to copy-last-frame by {-gain:.2f} dB ({nf['psnr']:.2f} vs {nf['copy_last_psnr']:.2f} dB): "
                   "not met.")
    ro = r["rollout"]
    behind = [h + 1 for h, (m, c) in enumerate(zip(ro["psnr"], ro["copy_last_psnr"], strict=True)) if m <= c]
    n = len(ro["psnr"])
    if not behind:
        worst = min(m - c for m, c in zip(ro["psnr"], ro["copy_last_psnr"], strict=True))
        out.append(f"Rollout: beats copy-last-frame at every horizon 1-{n} (by {_db(worst)} at the closest): met.")
    else:
        out.append(f"Rollout: at or below copy-last-frame at {len(behind)} of {n} horizons ({_horizons(behind)}): not met.")
    st = r.get("stability")
    if st:
        L = st["horizon"]
        bad = [h + 1 for h, (m, c) in enumerate(zip(st["hist_distance"], st["copy_last_hist_distance"], strict=True))
               if m > c + COLOUR_MARGIN]
        if not bad:
            out.append(f"Stability: holds its colours for all {L} frames: met (colour distance to the real frames "
                       f"{st['hist_distance'][-1]:.2f} at {L}, copy-last {st['copy_last_hist_distance'][-1]:.2f}); "
                       f"PSNR within 3 dB of horizon 1 up to horizon {st['steady_horizon']}; "
                       f"sharpness at {L}: {st['edge_ratio'][-1]:.2f} of the real frames' edges.")
        else:
            h = bad[0]
            out.append(f"Stability: colours collapse from horizon {h} of {L} (colour distance {st['hist_distance'][h - 1]:.2f} "
                       f"vs copy-last {st['copy_last_hist_distance'][h - 1]:.2f}): not met.")
    d = r["delta_psnr"]["mean"]
    out.append(f"Actions: the true actions score {_db(d)} over shuffled ones (goal +{DELTA_PSNR_DB:g})"
               + (": met." if d >= DELTA_PSNR_DB else ": not met."))
    fps = r["frames_per_s"]
    out.append(f"Speed: {fps:.0f} generated frames/s (goal {FRAMES_PER_S:g})" + (": met." if fps >= FRAMES_PER_S else ": not met."))
    return out


def _and(items: list) -> str:
    """[1, 4, 16] -> '1, 4 and 16'."""
    items = [str(x) for x in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _horizons(hs: list[int]) -> str:
    return ", ".join(map(str, hs)) if len(hs) <= 6 else f"{', '.join(map(str, hs[:5]))}, ... {hs[-1]}"


IDM_GOALS = (("button macro F1", "button_macro_f1"), ("camera R² pitch", "camera_r2_pitch"),
             ("camera R² yaw", "camera_r2_yaw"))
UNSEEN_NAMES = {"heldout": "on held-out world seeds", "footage": "of the withheld footage"}


def idm_verdict(figures: dict) -> list[str]:
    """One plain sentence per goal of the IDM (beat persistence), from its evals (idm/evaluate.py).

    Judged on every episode the IDM never trained on, pooled (`figures["unseen"]`: the held-out seeds and the
    withheld footage), by the margin over persistence and its 95% interval over those episodes: met where the
    interval lies above 0, not settled where it spans 0. A run recorded before the pooled figures existed is
    judged on the held-out seeds alone, by the point scores."""
    unseen = figures.get("unseen")
    if unseen is None:
        return _idm_verdict_heldout(figures["heldout"])
    parts = [f"{n} {UNSEEN_NAMES.get(name, name)}" for name, n in unseen["datasets"].items()]
    out = [f"Judged on the {sum(unseen['datasets'].values())} episodes the IDM never trained on "
           f"({_and(parts)}), pooled; the interval is a 95% bootstrap over those episodes."]
    for label, key in IDM_GOALS:
        m = unseen["vs_persistence"][key]
        if m["margin"] is None:
            out.append(f"{label}: undefined on this data: not met.")
            continue
        lo, hi = m["ci95"]
        word = "beats" if m["margin"] > 0 else "below"
        verdict = "met." if lo > 0 else ("not settled: the interval spans 0." if m["margin"] > 0 else "not met.")
        out.append(f"{label}: {m['model']:.3f}, {word} persistence ({m['baseline']:.3f}) by {m['margin']:+.3f} "
                   f"[{lo:+.3f}, {hi:+.3f}]: {verdict}")
    if any(not line.endswith(": met.") for line in out[1:]):
        out.append(IDM_TRADE_NOTE)
    out.append(PERSISTENCE_NOTE)
    return out


def _idm_verdict_heldout(heldout: dict) -> list[str]:
    idm, per = heldout["idm"], heldout["persistence"]
    out = []
    for label, key in IDM_GOALS:
        a, b = idm[key], per[key]
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):  # null in eval.json: see its "undefined"
            out.append(f"{label}: undefined on this data ({idm.get('undefined', {}).get(key, 'no value')}): not met.")
            continue
        word = "beats" if a > b else "below"
        out.append(f"{label}: {a:.3f}, {word} persistence ({b:.3f})" + (": met." if a > b else ": not met."))
    if any(line.endswith("not met.") for line in out):
        out.append(IDM_TRADE_NOTE)
    out.append(PERSISTENCE_NOTE)
    return out


def controllability_ratios(c: dict, floor: float = JUDGE_FLOOR) -> tuple[dict, list[str]]:
    """The judge's generated / real ratios, with None where the judge reads real frames below `floor`, and why."""
    ratios, notes = dict(c["ratio"]), []
    for key, label in (("button_macro_f1", "button macro F1"), ("camera_r2_pitch", "camera R² pitch"),
                       ("camera_r2_yaw", "camera R² yaw")):
        real = c["real"].get(key)
        if real is None or not real >= floor:
            ratios[key] = None
            notes.append(f"{label} ratio hidden: the judge reads real frames at {real if real is None else f'{real:.2f}'}, "
                         f"below {floor:g}, so a ratio over it measures the judge's noise, not the world model.")
    ratios["button_accuracy_mean"] = None  # an always-no-op judge scores ~0.92 on any frames: the ratio says nothing
    return ratios, notes


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
        for split, model in (("heldout", "idm"), ("heldout", "always_noop"), ("heldout", "persistence"), ("footage", "idm"),
                             ("footage", "persistence")):
            value = _metric(rec.figures, split, model, m)
            row.append("n/a" if value is None else value)
            krow.append(f"idm.{split}.{model}.{m}" if value is not None else "")
        rows.append(row)
        keys.append(krow)
    s.table(["metric", "IDM (held-out seeds)", "always no-op", "persistence (held-out seeds)", "IDM (withheld footage)",
             "persistence (withheld footage)"], rows, keys)
    if "heldout" in rec.figures:
        s.lines(idm_verdict(rec.figures))
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
    s.lines(world_model_verdict(r))
    ro, n = r["rollout"], len(r["rollout"]["psnr"])
    rows = [
        ["next-frame PSNR (dB)", r["next_frame"]["psnr"], r["next_frame"]["copy_last_psnr"]],
        ["next-frame SSIM", r["next_frame"]["ssim"], r["next_frame"]["copy_last_ssim"]],
        [f"rollout PSNR at horizon {n} (dB)", ro["psnr"][-1], ro["copy_last_psnr"][-1]],
        ["ΔPSNR true − shuffled actions (dB)", r["delta_psnr"]["mean"], 0.0],
        ["generated frames/s", r["frames_per_s"], ""],
    ]
    keys = [["", "world_model.next_frame.psnr", "world_model.next_frame.copy_last_psnr"],
            ["", "world_model.next_frame.ssim", "world_model.next_frame.copy_last_ssim"],
            ["", f"world_model.rollout.psnr.{n - 1}", f"world_model.rollout.copy_last_psnr.{n - 1}"],
            ["", "world_model.delta_psnr.mean", ""], ["", "world_model.frames_per_s", ""]]
    st = r.get("stability")
    if st:
        L = st["horizon"]
        rows += [[f"colour distance to the real frames at horizon {L}", st["hist_distance"][-1], st["copy_last_hist_distance"][-1]],
                 [f"edge energy / real frames' at horizon {L}", st["edge_ratio"][-1], st["copy_last_edge_ratio"][-1]],
                 ["horizon where PSNR is still within 3 dB of horizon 1", st["steady_horizon"], st["copy_last_steady_horizon"]]]
        keys += [["", f"world_model.stability.hist_distance.{L - 1}", f"world_model.stability.copy_last_hist_distance.{L - 1}"],
                 ["", f"world_model.stability.edge_ratio.{L - 1}", f"world_model.stability.copy_last_edge_ratio.{L - 1}"],
                 ["", "world_model.stability.steady_horizon", "world_model.stability.copy_last_steady_horizon"]]
    s.table(["metric", "world model", "copy-last-frame"], rows, keys)
    strip = Path(rec.outputs["eval"]) / "strip.png"
    if strip.exists():
        shown = r.get("strip_horizons") or [1, 4, 16, 64]  # runs evaluated before the figure said which
        s.image(strip, f"held-out clips: the last real frame, then horizons {_and(shown)} of the rollout "
                       "(top: real, bottom: the world model)")
    for gif in rec.outputs.get("rollouts", []):
        s.video(gif, "left: truth, right: the world model (context from real frames, then generated)")
    c = r.get("controllability")
    if c:
        ratios, notes = controllability_ratios(c)
        report.data["world_model_shown_ratios"] = ratios
        metrics = ("button_macro_f1", "camera_r2_pitch", "camera_r2_yaw")
        crow, ckeys = [], []
        for k in ("real", "generated"):
            crow.append([k] + [c[k].get(m) if c[k].get(m) is not None else "n/a" for m in metrics])
            ckeys.append([""] + [f"world_model.controllability.{k}.{m}" if c[k].get(m) is not None else "" for m in metrics])
        crow.append(["generated / real"] + [ratios[m] if ratios[m] is not None else "hidden" for m in metrics])
        ckeys.append([""] + [f"world_model_shown_ratios.{m}" if ratios[m] is not None else "" for m in metrics])
        s.table(["judge IDM on", "button macro F1", "camera R² pitch", "camera R² yaw"], crow, ckeys)
        if notes:
            s.lines(notes)
    s.image(Path(rec.outputs["eval"]) / "eval.png", "rollout error by horizon, and stability over the long rollout")
    s.image(paths["wm"] / "curves.png", "world model training curves")


CONTROLLABILITY_GOAL = 0.9  # engine-truth controllability at horizon 8 (issue 16)
CONTROLLABILITY_HORIZON = 8
BRANCH_LABELS = {"model": "model", "shuffled_actions": "model, shuffled actions", "copy_last": "copy-last-frame",
                 "engine": "engine", "seen_only": "engine where the context saw, its nearest seen pixel elsewhere"}


def _score(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def engine_truth_verdict(cf: dict) -> str:
    """One plain sentence on engine-truth controllability (pretrain/counterfactual.py's scores), read
    at horizon 8 (or the last the run played), beside shuffled actions, copy-last, the engine and,
    where scored, the engine's frames with what the last context frame did not see filled from what
    it did (an upper reference, not a reachable score: docs/pretrain.md's geometric ceiling)."""
    h = min(CONTROLLABILITY_HORIZON, cf["horizon"])
    at = {k: cf[k]["controllability"][h - 1] for k in BRANCH_LABELS if k in cf}
    # Not what a model can reach: the reference keeps the engine's own walked pixels; the context moved by the exact
    # geometry reads about 0.80 (docs/pretrain.md). Until 2026-12-07 the line called 0.94 reachable.
    seen = (f"; the engine exact only where the context saw, {_score(at['seen_only'])}: a reference above any model, "
            "as its walked pixels are the engine's (the context moved by the exact geometry reads about 0.80, "
            "docs/pretrain.md)" if "seen_only" in at else "")
    ci = (cf["model"].get("ci95") or [None] * h)[h - 1]  # runs written before the intervals have none
    spread = f" (95% interval over the {cf['states']} saved states {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
    line = (f"Engine truth: at horizon {h} the rollout under one action sequence is closer to the engine's under it "
            f"than under another in {_score(at['model'])}{spread} of branch pairs (goal {CONTROLLABILITY_GOAL:g} at horizon "
            f"{CONTROLLABILITY_HORIZON}; shuffled actions {_score(at['shuffled_actions'])}, copy-last "
            f"{_score(at['copy_last'])}, engine {_score(at['engine'])}{seen})")
    if h < CONTROLLABILITY_HORIZON:
        return line + f": this run plays {h} steps, so the goal is not read."
    return line + (": met." if at["model"] is not None and at["model"] >= CONTROLLABILITY_GOAL else ": not met.")


def revisit_verdict(rv: dict) -> str:
    """One plain sentence on revisit consistency (pretrain/revisit.py's scores): the model's gain at
    the return over the farthest point on each path, beside the model cut to 4 frames of memory
    (when its window is longer than that)."""
    from worldloom.pretrain.revisit import cut_is_model

    cut = "model_cut" in rv and not cut_is_model(rv)  # else the same runs
    gains = ", ".join(f"{p} {_db(rv['model'][p]['gain_db'])}" + (f" (cut {_db(rv['model_cut'][p]['gain_db'])})" if cut else "")
                      for p in rv["paths"])
    met = [p for p, ok in rv["goal_met"].items() if ok]
    return (f"Revisit: PSNR at the return minus at the farthest point: {gains} (goal +{rv['goal_db']:g} dB on every path)"
            + (": met." if len(met) == len(rv["paths"]) else f": not met{' (met on ' + ', '.join(met) + ')' if met else ''}."))


def _engine_section(report: Report, records: dict[str, StageRecord]) -> None:
    rec = records.get("pretrain_eval")
    r = rec.figures["world_model"] if rec is not None else {}
    cf, rv = r.get("counterfactual"), r.get("revisit")
    if not (cf or rv):
        return
    s = report.section("Engine truth",
                       "Scores no proxy can fake: from saved VoxelWorld states on held-out world seeds, action "
                       "sequences are played in the engine and in the world model from the same context frames. "
                       "Controllability at horizon h: over ordered pairs of sequences (A, B) the engine tells apart, "
                       "how often the model's frame under A is closer to the engine's under A than under B (copy-last "
                       "scores 0.5 by construction, the engine 1).")
    if cf:
        s.lines([engine_truth_verdict(cf)])
        n = cf["horizon"]
        rows, keys = [], []
        for name, label in BRANCH_LABELS.items():
            if name not in cf:
                continue
            values = cf[name]["controllability"]
            rows.append([f"controllability, {label}", *[_score(v) if v is None else v for v in values]])
            keys.append(["", *[f"world_model.counterfactual.{name}.controllability.{h}" if v is not None else ""
                               for h, v in enumerate(values)]])
            if name == "model" and cf[name].get("ci95"):
                rows.append(["95% interval over the saved states",
                             *["n/a" if c is None else f"{c[0]:.2f}-{c[1]:.2f}" for c in cf[name]["ci95"]]])
                keys.append([""] * (n + 1))
        for name in ("model", "shuffled_actions", "copy_last"):
            rows.append([f"PSNR vs engine (dB), {BRANCH_LABELS[name]}", *cf[name]["psnr"]])
            keys.append(["", *[f"world_model.counterfactual.{name}.psnr.{h}" for h in range(n)]])
        s.table(["horizon", *[str(h + 1) for h in range(n)]], rows, keys)
        grid = cf.get("grid")
        if grid:
            s.image(Path(rec.outputs["eval"]) / "counterfactual.png",
                    f"one saved state: the frame at the state, then the steps played; rows: engine under {grid['a']}, "
                    f"model under {grid['a']}, engine under {grid['b']}, model under {grid['b']} "
                    f"({cf['states']} states x {len(cf['branches'])} sequences: {', '.join(cf['branches'])})")
    if rv:
        s.lines([revisit_verdict(rv)])
        from worldloom.pretrain.revisit import cut_is_model

        runners = [k for k in ("model", "model_cut", "model_long", "copy_last") if k in rv
                   and not (k == "model_cut" and cut_is_model(rv))]
        rows, keys = [], []
        for path, steps in rv["paths"].items():
            row, krow = [f"{path} ({steps['far']} out, back at {steps['return']})"], [""]
            for k in runners:
                row += [rv[k][path]["psnr_far"], rv[k][path]["psnr_return"]]
                krow += [f"world_model.revisit.{k}.{path}.psnr_far", f"world_model.revisit.{k}.{path}.psnr_return"]
            row.append(rv["engine"][path]["psnr_return_vs_first_visit"])
            krow.append(f"world_model.revisit.engine.{path}.psnr_return_vs_first_visit")
            rows.append(row)
            keys.append(krow)
        mem = rv.get("memory") or {}
        names = {"model": f"model{', pose memory ' + str(mem['model']) + ' steps' if mem.get('model') else ''}",
                 "model_cut": f"model, last {rv['windows']['model_cut']} frames"
                              + (f", {mem['model_cut']} steps of pose memory" if mem.get("model_cut") else ""),
                 "model_long": "model, whole path", "copy_last": "copy-last"}
        s.table(["path (PSNR dB vs the engine)", *[f"{names[k]}: {w}" for k in runners for w in ("farthest", "return")],
                 "engine: return vs first visit"], rows, keys)
        s.image(Path(rec.outputs["eval"]) / "revisit.png",
                "per path, one saved state: first visit, farthest point, return; rows: engine, model (then the "
                "model cut to its last frames, where that differs)")


CAPTION_EPISODES, CAPTIONS_PER_EPISODE, FRAMES_PER_CAPTION = 2, 3, 4


def _captions_section(report: Report, paths: dict[str, Path], figures_dir: Path) -> None:
    """A few held-out clips, each as frames across it, beside its engine-exact caption (datasets/captions.py):
    the dataset's stored `caption` column (what `pretrain train --text` reads); made from the state
    columns only for a dataset older than format version 3, which has no such column (the text says so)."""
    from worldloom.datasets import Dataset
    from worldloom.datasets.captions import caption_episode, stored_captions

    if not (paths["heldout"] / "dataset.json").exists():
        return
    ds = Dataset(str(paths["heldout"]))
    stored = ds.version >= 3
    how = ("as stored in the held-out dataset's caption column (what text-conditioned training reads), made at capture "
           "by rules from the engine's state and the actions, never from pixels" if stored else
           f"made now by rules from the engine's state and the actions (the held-out dataset is format version "
           f"{ds.version}, which has no caption column), never from pixels")
    s = report.section("Captions", f"Engine-exact captions of held-out clips (2 s each), {how}; "
                       f"{FRAMES_PER_CAPTION} frames across each clip.")
    shown = []
    for eid in ds.episode_ids[:CAPTION_EPISODES]:
        captions = [c for c in (stored_captions(ds, eid) if stored else caption_episode(ds, eid)) if c.text]
        for c in [captions[i] for i in sorted({round(x) for x in np.linspace(0, len(captions) - 1, CAPTIONS_PER_EPISODE)})
                  ] if captions else []:
            png = figures_dir / f"caption-{len(shown)}.png"
            _caption_strip(ds, eid, c, png)
            s.image(png, f"{c.text} ({eid}, steps {c.start}-{c.stop})")
            shown.append(c.to_json() | {"source": "stored" if stored else "made from state"})
    report.data["captions"] = shown
    if not shown:
        s.lines(["No captions: the held-out dataset's caption column is empty (the env reports no engine state)." if stored
                 else "No captions: the held-out dataset has no engine state (the env does not expose it)."])


def _caption_strip(ds, episode_id: str, c, png: Path) -> None:
    """FRAMES_PER_CAPTION frames across clip `c` side by side, 2x, written to `png`."""
    from worldloom.io import write_image

    idx = np.linspace(c.start, c.stop - 1, FRAMES_PER_CAPTION).round().astype(int)
    frames = ds.frames(episode_id, c.start, c.stop).frames[idx - c.start]  # (F, H, W, 3)
    gap = np.full((frames.shape[1], 2, 3), 255, np.uint8)
    strip = np.concatenate([x for f in frames for x in (f, gap)][:-1], axis=1)
    write_image(png, strip.repeat(2, 0).repeat(2, 1))


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
    _engine_section(report, records)
    _captions_section(report, paths, paths["figures"])
    _cost_section(report, records, stats)
    report.section("Config").code(json.dumps({"pipeline": report.data["config"], "preset": report.data["preset"]}, indent=2))
    return report.write(Path(cfg.out).resolve())
