"""Score a trained IDM on labeled episodes, beside the always-no-op and persistence baselines.

    worldloom idm eval --model runs/idm --data data/heldout-seeds
    worldloom idm eval --model runs/idm --data data/unlabeled --truth data/truth   # truth by episode_id

Every step of every episode is predicted (windows of T, stride T/2, centres kept: the labeling
path; an episode shorter than the window padded as `idm label` pads it), then scored: per-button
accuracy and F1, macro F1 over the buttons that occur, exact match over all 20 buttons, camera R² per axis in degrees (bin centres against the true move
clipped to +-10) and camera bin accuracy. Beside persistence (the previous step's true action, the
bar an IDM must clear) the goal scores' margins come with a 95% interval, a bootstrap over episodes
(`vs_persistence`): a margin read on a few episodes moves with which episodes they are. Writes
eval.json, eval.md and confusion.png.
Frames of another size are resized as labeling resizes them (INTER_LINEAR), and the report says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldloom.errors import UserError
from worldloom.folders import check_out
from worldloom.idm import metrics
from worldloom.idm.checkpoint import check_step_rate, checkpoint_id, load_idm, run_folder
from worldloom.idm.data import Episode, load_episodes, open_dataset
from worldloom.idm.infer import predict_sequence, short_window_words
from worldloom.io import atomic_path, atomic_write_json, atomic_write_text
from worldloom.paths import redact_json, redact_text
from worldloom.progress import Stages, counted, figure


def made_labels(data: list[str]) -> tuple[str, str, str] | None:
    """(dataset, episode id, label_model) of the first episode in `data` whose actions a model made
    (label_source idm), or None where every label was recorded by the env (or there is none)."""
    for root in data:
        table = open_dataset(root).episodes
        models = table.column("label_model").to_pylist() if "label_model" in table.column_names else None
        for k, (ep_id, source) in enumerate(zip(table.column("episode_id").to_pylist(),
                                                table.column("label_source").to_pylist(), strict=True)):
            if source == "idm":
                return str(root), str(ep_id), str(models[k]) if models and models[k] else "an IDM"
    return None


def truth_for(episodes: list[Episode], truth: list[str] | None, data: list[str] | None = None) -> list[Episode]:
    """The episodes that carry the true actions: `episodes` themselves (read from `data`, whose
    labels must be the env's: scoring a model against an IDM's pseudo-labels measures agreement
    with that IDM, not accuracy), or the same ids among the env-labeled episodes of `truth`."""
    if not truth:
        unlabeled = [ep.episode_id for ep in episodes if ep.buttons is None]
        if unlabeled:
            raise UserError(f"{len(unlabeled)} episode(s) have no recorded actions (e.g. {unlabeled[0]}): "
                            "give --truth DIR with the same episode ids and their env labels")
        made = made_labels(data or [])
        if made:
            root, ep_id, model = made
            raise UserError(f"{redact_text(root)}: episode {ep_id!r} is labeled by {model} (label_source idm), not "
                            "recorded by the env, so scores against it measure agreement with that model: give --truth "
                            "DIR, the true actions (the dataset `capture run --strip-actions DIR` wrote)")
        return episodes
    if not any("env" in open_dataset(t).episodes.column("label_source").to_pylist() for t in truth):
        raise UserError(f"--truth {', '.join(map(redact_text, truth))}: no episode there has actions recorded by the env; "
                        "give the dataset of true actions (the one `capture run --strip-actions TRUTH` wrote)")
    by_id = {ep.episode_id: ep for ep in load_episodes(truth, require_labels=True)}
    missing = [ep.episode_id for ep in episodes if ep.episode_id not in by_id]
    if missing:
        raise UserError(f"--truth has no actions recorded by the env for {len(missing)} episode(s), e.g. {missing[0]!r}")
    out = []
    for ep in episodes:
        ref = by_id[ep.episode_id]
        if ref.num_steps != ep.num_steps:
            raise UserError(f"episode {ep.episode_id}: {ep.num_steps} steps in --data but {ref.num_steps} in --truth")
        out.append(ref)
    return out


def scored_episodes(episodes: list[Episode], window: int, model) -> list[Episode]:
    """The episodes to score, as `idm label` takes them: one of a single step is left out (no motion to read an
    action from; label refuses it), one shorter than the window is scored as label labels it (infer.StreamPredictor:
    its last frame repeated to fill the window, the padded steps dropped); a line on stderr counts each kind."""
    single = [ep for ep in episodes if ep.num_steps < 2]
    short = [ep for ep in episodes if 2 <= ep.num_steps < window]
    if single:
        print(f"idm eval: warning: {len(single)} episode(s) of one step left out (an IDM reads an action from the motion "
              f"between frames; idm label refuses them too), e.g. {single[0].episode_id!r}", file=sys.stderr)
    if short:
        print(f"idm eval: warning: {len(short)} episode(s) shorter than the model's window of {window} frames "
              f"(e.g. {short[0].episode_id!r}, {short[0].num_steps} steps) scored as idm label labels them: with {short_window_words(model)}",
              file=sys.stderr)
    kept = [ep for ep in episodes if ep.num_steps >= 2]
    if not kept:
        raise UserError(f"every episode in {', '.join(sorted({ep.source for ep in episodes}))} has one step: an IDM "
                        "reads an action from the motion between frames; evaluate on episodes of 2 steps or more")
    return kept


def run_model(model, episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted buttons (N, 20) bool, camera bins (N, 2) and expected camera degrees (N, 2), concatenated."""
    preds = []
    with tqdm(total=sum(ep.num_steps for ep in episodes), desc="idm eval", unit="step", dynamic_ncols=True) as bar:
        for ep in episodes:
            preds.append(predict_sequence(model, ep.frames))
            bar.update(ep.num_steps)
    return tuple(np.concatenate([p[k] for p in preds]) for k in ("buttons", "camera_bins", "camera_deg"))


def markdown_table(report: dict) -> str:
    """The headline scores of the IDM beside the baselines, then per-button rows."""
    keys = ("button_accuracy_mean", "button_macro_f1", "button_exact_match", "camera_r2_pitch",
            "camera_r2_yaw", "camera_r2_bins_pitch", "camera_r2_bins_yaw", "camera_bin_accuracy")
    cols = ("idm", "always_noop", "persistence")

    fmt = figure

    lines = [f"Model `{report['model']}` on {', '.join(report['data'])}: "
             f"{counted(report['num_episodes'], 'episode')}, {counted(report['num_steps'], 'step')}{report['resize_note']}.", "",
             "| metric | IDM | always no-op | persistence |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | " + " | ".join(fmt(report[c][k]) for c in cols) + " |" for k in keys]
    lines += ["", margin_sentence(report["vs_persistence"])]
    ceiling = report["camera_quantization_ceiling"]
    lines += ["", "camera_r2_*: the IDM's expected move in degrees; camera_r2_bins_*: the argmax bin's centre.",
              "", f"Camera R² of perfect bins (quantization ceiling): pitch {fmt(ceiling['camera_r2_pitch'])}, "
              f"yaw {fmt(ceiling['camera_r2_yaw'])}.", "",
              "| button | true rate | acc IDM | acc no-op | F1 IDM | F1 persistence |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in report["idm"]["per_button"].items():
        if row["occurs"]:
            pers = report["persistence"]["per_button"][name]
            lines.append(f"| {name} | {row['true_rate']:.3f} | {fmt(row['accuracy'])} | "
                         f"{fmt(1 - row['true_rate'])} | {fmt(row['f1'])} | {fmt(pers['f1'])} |")
    never = [n for n, r in report["idm"]["per_button"].items() if not r["occurs"]]
    if never:
        lines += ["", f"Never pressed in this data (left out of macro F1): {', '.join(never)}."]
    return "\n".join(lines) + "\n"


def margin_sentence(vs: dict) -> str:
    """One line: the IDM minus persistence on each goal score, with its 95% interval over episodes."""
    parts = []
    for key in metrics.GOAL_SCORES:
        m = vs[key]
        parts.append(f"{key} n/a" if m["margin"] is None else
                     f"{key} {m['margin']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]")
    episodes = next(iter(vs.values()))["episodes"]
    return (f"IDM minus persistence: {', '.join(parts)} (95% interval, a bootstrap over the "
            f"{counted(episodes, 'episode')}).")


def plot_confusion(path: Path, confusion: np.ndarray, per_button: dict) -> None:
    """confusion.png: camera bin confusion per axis (row-normalised) and per-button F1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for axis, name in enumerate(("pitch", "yaw")):
        counts = confusion[axis].astype(np.float64)
        norm = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        axes[axis].imshow(norm, cmap="viridis", vmin=0, vmax=1)
        axes[axis].set_title(f"camera {name} bins (rows: true, normalised)")
        axes[axis].set_xlabel("predicted bin"), axes[axis].set_ylabel("true bin")
        axes[axis].set_xticks(range(11)), axes[axis].set_yticks(range(11))
    names = [n for n, r in per_button.items() if r["occurs"]]
    axes[2].barh(names, [per_button[n]["f1"] or 0.0 for n in names])
    axes[2].set_xlim(0, 1), axes[2].set_title("F1 per button (buttons that occur)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def evaluate(model_dir: str | Path, data: list[str], truth: list[str] | None = None,
             out: str | Path | None = None) -> dict:
    """Score the run's latest checkpoint on `data`; write eval.json, eval.md, confusion.png to `out`.
    Its stages show as a bar from the first second (worldloom.progress), the steps predicted as another."""
    with Stages("idm eval", ["loading the IDM and the episodes", "predicting", "writing the report"]) as stages:
        return _evaluate(model_dir, data, truth, out, stages)


def _evaluate(model_dir: str | Path, data: list[str], truth: list[str] | None, out: str | Path | None,
              stages: Stages) -> dict:
    stages.start("loading the IDM and the episodes")
    if out:  # a file, a dataset or a run: refused before the work, not after it
        check_out(out, "eval")
    check_step_rate(model_dir, [*data, *(truth or [])])  # from config.json: before any weight or frame is read
    model, cfg = load_idm(model_dir)
    out_dir = Path(out) if out else run_folder(model_dir) / f"eval-{Path(str(data[0]).rstrip('/')).name}"
    check_out(out_dir, "eval")
    episodes = load_episodes(list(data), require_labels=False)
    if not episodes:
        raise UserError(f"no episodes in {', '.join(map(str, data))}")
    episodes = scored_episodes(episodes, cfg.num_frames, model)
    truths = truth_for(episodes, truth, list(data))
    sizes = sorted({tuple(ep.frames.shape[1:3]) for ep in episodes})
    resized = [s for s in sizes if s != (cfg.height, cfg.width)]
    true_buttons = np.concatenate([t.buttons for t in truths])
    true_camera = np.concatenate([t.camera for t in truths])
    starts = np.cumsum([0] + [ep.num_steps for ep in episodes[:-1]])
    stages.start("predicting")
    pred_buttons, pred_bins, pred_deg = run_model(model, episodes)
    stages.start("writing the report")
    persist = metrics.persistence_prediction(true_buttons, true_camera, starts)
    counts = {"idm": metrics.episode_counts(pred_buttons, pred_deg, true_buttons, true_camera, starts),
              "persistence": metrics.episode_counts(*metrics.persistence_degrees(persist), true_buttons, true_camera, starts)}
    report = {
        "model": checkpoint_id(model_dir), "data": [redact_text(str(d)) for d in data], "truth": redact_json(truth),
        "num_episodes": len(episodes), "num_steps": int(len(true_buttons)),
        "num_episodes_shorter_than_window": sum(ep.num_steps < cfg.num_frames for ep in episodes),
        "resized_from": [f"{w}x{h}" for h, w in resized],
        "resize_note": f", frames resized from {', '.join(f'{w}x{h}' for h, w in resized)} to {cfg.width}x{cfg.height} (INTER_LINEAR)" if resized else "",
        "idm": metrics.score(pred_buttons, pred_bins, true_buttons, true_camera, pred_deg),
        "always_noop": metrics.score(*metrics.noop_prediction(len(true_buttons)), true_buttons, true_camera),
        "persistence": metrics.score(*persist, true_buttons, true_camera),
        "camera_quantization_ceiling": metrics.quantization_ceiling(true_camera),
        "vs_persistence": metrics.margins(counts["idm"], counts["persistence"]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "eval.json", report)  # strict JSON: a NaN score as null
    atomic_write_text(out_dir / "eval.md", markdown_table(report))
    confusion = metrics.camera_confusion(pred_bins, metrics.quantize_camera(true_camera))
    plot_confusion(out_dir / "confusion.png", confusion, report["idm"]["per_button"])
    report["out"] = str(out_dir)
    report["episode_counts"] = counts  # not in eval.json: for pooling evaluations (metrics.concat_counts)
    return report
