"""Scores of predicted actions against true ones, and the baselines to read them beside.

    scores = score(pred_buttons, pred_bins, true_buttons, true_camera)   # dict of floats and lists
    noop = noop_prediction(true_buttons.shape[0])                        # what "do nothing" scores
    persist = persistence_prediction(true_buttons, true_camera, episode_starts)
    counts = episode_counts(pred_buttons, pred_deg, true_buttons, true_camera, episode_starts)
    margins(counts, episode_counts(*persistence_degrees(persist), true_buttons, true_camera, episode_starts))
    # -> {score: IDM minus persistence, with a 95% bootstrap interval over episodes}

VPT reported per-button accuracy and camera R²; an always-no-op baseline already reaches about
83% micro accuracy on such data (REFERENCES.md), so F1 per button, macro F1 over the buttons
that occur, exact match and camera bin accuracy are reported beside them.
"""

from __future__ import annotations

import numpy as np

from worldloom.actions import BUTTONS, CAMERA_MAXVAL, dequantize_camera, quantize_camera

NOOP_BIN = 5  # the camera bin of a 0-degree move


def f1_counts(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn) per column of boolean (N, K) arrays."""
    return ((pred & true).sum(0), (pred & ~true).sum(0), (~pred & true).sum(0))


def f1_scores(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """F1 per column; NaN where the column is never true and never predicted."""
    tp, fp, fn = (c.astype(np.float64) for c in f1_counts(pred, true))
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def r2(pred: np.ndarray, true: np.ndarray) -> float:
    """Coefficient of determination; NaN when the truth has no variance."""
    ss_tot = float(((true - true.mean()) ** 2).sum())
    return float("nan") if ss_tot == 0 else 1.0 - float(((true - pred) ** 2).sum()) / ss_tot


# Why a score can have no value: JSON writes it as null (worldloom.io.finite_json), and a report says why here.
UNDEFINED = {"button_macro_f1": "no button was pressed in the data",
             "camera_r2_pitch": "the camera never moved in pitch (R² divides by the true moves' variance)",
             "camera_r2_yaw": "the camera never moved in yaw (R² divides by the true moves' variance)"}
UNDEFINED |= {"camera_r2_bins_pitch": UNDEFINED["camera_r2_pitch"], "camera_r2_bins_yaw": UNDEFINED["camera_r2_yaw"]}


def undefined(scores: dict) -> dict[str, str]:
    """{score: why it has no value} for each NaN score of `scores` ("undefined: the camera never moved ...")."""
    return {k: f"undefined: {why}" for k, why in UNDEFINED.items() if k in scores and scores[k] != scores[k]}


def score(pred_buttons: np.ndarray, pred_bins: np.ndarray, true_buttons: np.ndarray,
          true_camera: np.ndarray, pred_deg: np.ndarray | None = None) -> dict:
    """Every reported score of (N, 20) bool / (N, 2) bin predictions against (N, 20) / (N, 2) degrees.

    Camera R² scores `pred_deg` (N, 2) when given (the IDM's expected move), else the bins'
    centres; `camera_r2_bins_*` always scores the bins' centres (argmax decoding).
    """
    pred_buttons, true_buttons = pred_buttons.astype(bool), true_buttons.astype(bool)
    true_bins = quantize_camera(true_camera)
    true_deg = np.clip(true_camera, -CAMERA_MAXVAL, CAMERA_MAXVAL)
    bin_deg = dequantize_camera(pred_bins)
    pred_deg = bin_deg if pred_deg is None else np.clip(pred_deg, -CAMERA_MAXVAL, CAMERA_MAXVAL)
    accuracy = (pred_buttons == true_buttons).mean(0)
    f1 = f1_scores(pred_buttons, true_buttons)
    occurs = true_buttons.any(0)
    scores = {
        "num_steps": int(true_buttons.shape[0]),
        "button_accuracy_mean": float(accuracy.mean()),
        "button_macro_f1": float(np.nanmean(np.where(occurs, f1, np.nan))) if occurs.any() else float("nan"),
        "button_exact_match": float((pred_buttons == true_buttons).all(1).mean()),
        "camera_r2_pitch": r2(pred_deg[:, 0], true_deg[:, 0]),
        "camera_r2_yaw": r2(pred_deg[:, 1], true_deg[:, 1]),
        "camera_r2_bins_pitch": r2(bin_deg[:, 0], true_deg[:, 0]),
        "camera_r2_bins_yaw": r2(bin_deg[:, 1], true_deg[:, 1]),
        "camera_bin_accuracy": float((pred_bins == true_bins).mean()),
        "per_button": {name: {"accuracy": float(accuracy[i]), "f1": None if np.isnan(f1[i]) else float(f1[i]),
                              "true_rate": float(true_buttons[:, i].mean()), "occurs": bool(occurs[i])}
                       for i, name in enumerate(BUTTONS)},
    }
    return {**scores, "undefined": undefined(scores)}


def noop_prediction(num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Always no button and a 0-degree camera move."""
    return np.zeros((num_steps, len(BUTTONS)), bool), np.full((num_steps, 2), NOOP_BIN, np.int64)


def persistence_prediction(true_buttons: np.ndarray, true_camera: np.ndarray,
                           episode_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the previous step's true action (no-op at each episode's first step)."""
    buttons = np.roll(true_buttons.astype(bool), 1, axis=0)
    bins = np.roll(quantize_camera(true_camera), 1, axis=0)
    buttons[episode_starts] = False
    bins[episode_starts] = NOOP_BIN
    return buttons, bins


# The goal scores an IDM must beat persistence on (docs/idm.md), and how their margins are read.
GOAL_SCORES = ("button_macro_f1", "camera_r2_pitch", "camera_r2_yaw")
BOOTSTRAP_DRAWS = 1000


def persistence_degrees(prediction: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """persistence_prediction's (buttons, bins) as (buttons, bin centres in degrees): what `score` rates."""
    buttons, bins = prediction
    return buttons, dequantize_camera(bins)


def episode_counts(pred_buttons: np.ndarray, pred_deg: np.ndarray, true_buttons: np.ndarray, true_camera: np.ndarray,
                   episode_starts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-episode sums the goal scores pool from, so episodes can be resampled without predicting again.

    Inputs are concatenated episodes: (N, 20) bool buttons, (N, 2) camera degrees (predicted ones clipped to
    +-10 as `score` clips them), `episode_starts` (E,) the first step of each. Returns (E, 20) int "tp", "fp",
    "fn" and, per camera axis, (E, 2) float "n", "sum" and "sumsq" of the true moves and "sse", the squared error.
    """
    starts = np.asarray(episode_starts, np.int64)
    pred_b, true_b = pred_buttons.astype(bool), true_buttons.astype(bool)
    true_deg = np.clip(true_camera, -CAMERA_MAXVAL, CAMERA_MAXVAL).astype(np.float64)
    err = (np.clip(pred_deg, -CAMERA_MAXVAL, CAMERA_MAXVAL) - true_deg) ** 2

    def per_episode(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, starts, axis=0)

    return {"tp": per_episode((pred_b & true_b).astype(np.int64)), "fp": per_episode((pred_b & ~true_b).astype(np.int64)),
            "fn": per_episode((~pred_b & true_b).astype(np.int64)), "n": per_episode(np.ones_like(true_deg)),
            "sum": per_episode(true_deg), "sumsq": per_episode(true_deg ** 2), "sse": per_episode(err)}


def pooled_goal_scores(counts: dict[str, np.ndarray], weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The goal scores of the episodes in `counts` pooled, as `score` computes them on their concatenation.

    weights: (D, E) how many times each episode is drawn, one row per resample (None: each once). Returns
    each score as a (D,) array (NaN where undefined: no button pressed, a camera axis that never moved).
    """
    w = np.ones((1, counts["tp"].shape[0])) if weights is None else np.asarray(weights, np.float64)
    tp, fp, fn = (w @ counts[k] for k in ("tp", "fp", "fn"))
    occurs = (tp + fn) > 0
    f1 = np.where(occurs, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        macro = np.where(occurs.any(1), np.where(occurs, f1, 0.0).sum(1) / np.maximum(occurs.sum(1), 1), np.nan)
        n, total, sumsq, sse = (w @ counts[k] for k in ("n", "sum", "sumsq", "sse"))
        ss_tot = sumsq - total ** 2 / np.maximum(n, 1)
        r2s = np.where(ss_tot > 1e-9 * np.maximum(sumsq, 1), 1 - sse / ss_tot, np.nan)
    return {"button_macro_f1": macro, "camera_r2_pitch": r2s[:, 0], "camera_r2_yaw": r2s[:, 1]}


def concat_counts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The episode_counts of several evaluations as one set of episodes (pooled datasets)."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def margins(model: dict[str, np.ndarray], baseline: dict[str, np.ndarray], draws: int = BOOTSTRAP_DRAWS,
            seed: int = 0) -> dict[str, dict]:
    """Each goal score of `model` minus `baseline` on the same episodes, with a 95% interval.

    The interval is a bootstrap over episodes (`draws` resamples, both sides scored on the same draw; steps of
    an episode are not independent, episodes are): {score: {"model", "baseline", "margin", "ci95": [lo, hi],
    "episodes"}}, None where a score is undefined; with one episode the interval is the point.
    """
    num = model["tp"].shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(num, np.full(num, 1 / num), size=draws) if num > 1 else np.ones((1, 1))
    a, b = pooled_goal_scores(model), pooled_goal_scores(baseline)
    da, db = pooled_goal_scores(model, weights), pooled_goal_scores(baseline, weights)
    out = {}
    for key in GOAL_SCORES:
        x, y = float(a[key][0]), float(b[key][0])
        diffs = (da[key] - db[key])[np.isfinite(da[key] - db[key])]
        ok = np.isfinite(x - y) and diffs.size > 0
        out[key] = {"model": x if np.isfinite(x) else None, "baseline": y if np.isfinite(y) else None,
                    "margin": x - y if ok else None, "episodes": int(num),
                    "ci95": [float(v) for v in np.percentile(diffs, [2.5, 97.5])] if ok else None}
    return out


def quantization_ceiling(true_camera: np.ndarray) -> dict:
    """Camera R² of perfect bin predictions: binning alone costs this much against true degrees."""
    true_deg = np.clip(true_camera, -CAMERA_MAXVAL, CAMERA_MAXVAL)
    deg = dequantize_camera(quantize_camera(true_camera))
    scores = {"camera_r2_pitch": r2(deg[:, 0], true_deg[:, 0]), "camera_r2_yaw": r2(deg[:, 1], true_deg[:, 1])}
    return {**scores, "undefined": undefined(scores)}


def camera_confusion(pred_bins: np.ndarray, true_bins: np.ndarray, num_bins: int = 11) -> np.ndarray:
    """(2, 11, 11) counts: [axis, true bin, predicted bin]."""
    out = np.zeros((2, num_bins, num_bins), np.int64)
    for axis in range(2):
        np.add.at(out[axis], (true_bins[:, axis], pred_bins[:, axis]), 1)
    return out
