"""Run a trained IDM over frames of any length and size: the function other stages call.

    from worldloom.idm import load_idm, predict
    model, cfg = load_idm("runs/idm")
    out = predict(model, frames)     # frames (T, H, W, 3) or (B, T, H, W, 3) uint8, any T and size
    out["buttons"], out["camera_deg"], out["confidence"]

Long sequences are cut into windows of T frames with stride T/2, and each step keeps the
prediction of the window where it sits nearest the centre; the first window keeps its first
quarter and the last window its last quarter (VPT labels its videos the same way: windows of
128, stride 64, the middle 64 kept, edges from the first and last windows). A sequence shorter
than T is padded by repeating its last frame, and the padded steps are dropped.

Each frame's ResNet features are computed once (the stem sees real neighbours, black frames
beyond the sequence's ends, exactly as in training); only the transformer runs per window.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from worldloom.actions import NUM_BUTTONS, bin_position_to_camera
from worldloom.idm.data import padded_frames
from worldloom.idm.model import IDM


def window_plan(num_steps: int, num_frames: int) -> list[tuple[int, int, int]]:
    """(window start, keep from, keep to) in absolute steps; the kept ranges tile [0, num_steps)."""
    if num_steps <= num_frames:
        return [(0, 0, num_steps)]
    stride, quarter = num_frames // 2, num_frames // 4
    starts = list(range(0, num_steps - num_frames + 1, stride))
    if starts[-1] != num_steps - num_frames:
        starts.append(num_steps - num_frames)
    plan, kept = [], 0
    for i, start in enumerate(starts):
        keep_to = num_steps if i == len(starts) - 1 else start + num_frames - quarter
        plan.append((start, kept, keep_to))
        kept = keep_to
    return plan


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w, 3) -> (T, height, width, 3) uint8 with INTER_LINEAR, as VPT resizes (aspect squashed)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in frames])


def _model_device(model: IDM) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def sequence_features(model: IDM, frames: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """Per-frame features (N, D) of a sequence (N, H, W, 3), black frames beyond its ends, once per frame."""
    ctx, device = model.cfg.context, _model_device(model)
    padded = padded_frames(frames, -ctx, len(frames) + ctx)  # (N + 2 ctx, H, W, 3)
    feats = []
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(np.ascontiguousarray(padded[i:i + chunk + 2 * ctx]))[None].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats.append(model.frame_features(x)[0].float())  # (chunk, D)
    return torch.cat(feats)


@torch.inference_mode()
def window_probs(model: IDM, windows: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Window features (W, T, D) -> button probabilities (W, T, 20) and camera probabilities (W, T, 2, 11)."""
    device = _model_device(model)
    probs_b, probs_c = [], []
    for i in range(0, len(windows), batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model.heads(windows[i:i + batch_size])
        probs_b.append(torch.sigmoid(out["buttons"].float()).cpu().numpy())
        probs_c.append(torch.softmax(out["camera"].float(), -1).cpu().numpy())
    return np.concatenate(probs_b), np.concatenate(probs_c)


def decode(buttons_prob: np.ndarray, camera_prob: np.ndarray) -> dict[str, np.ndarray]:
    """Probabilities -> the action dict of `predict`.

    Buttons and camera bins are decoded by argmax, as VPT. `camera_deg` decodes the expected bin
    position: the model is trained on two-hot targets (worldloom.actions.two_hot), so the expected position is
    the move itself, not a bin centre, and where the model cannot tell a turn's direction it answers
    near 0 instead of a confident wrong side (docs/idm.md). Labels store `camera_deg`.
    """
    buttons = buttons_prob > 0.5
    camera_bins = camera_prob.argmax(-1)
    position = (camera_prob * np.arange(camera_prob.shape[-1])).sum(-1)  # (..., 2) expected bin position
    camera_deg = bin_position_to_camera(position)
    # The probability of the whole decoded action, heads taken as independent.
    confidence = np.where(buttons, buttons_prob, 1 - buttons_prob).prod(-1) * camera_prob.max(-1).prod(-1)
    return {"buttons_prob": buttons_prob.astype(np.float32), "buttons": buttons,
            "camera_bins": camera_bins.astype(np.int64), "camera_deg": camera_deg.astype(np.float32),
            "confidence": confidence.astype(np.float32)}


def predict_sequence(model: IDM, frames: np.ndarray, batch_size: int = 8) -> dict[str, np.ndarray]:
    """One sequence (T, H, W, 3) uint8 -> per-step predictions, windowed and stitched."""
    cfg = model.cfg
    frames = resize_frames(np.asarray(frames, dtype=np.uint8), cfg.height, cfg.width)
    num_steps = len(frames)
    if num_steps < cfg.num_frames:
        frames = np.concatenate([frames, np.repeat(frames[-1:], cfg.num_frames - num_steps, 0)])
    features = sequence_features(model, frames, chunk=max(1, batch_size) * cfg.num_frames)  # (N, D)
    plan = window_plan(len(frames), cfg.num_frames)
    win_b, win_c = window_probs(model, torch.stack([features[s:s + cfg.num_frames] for s, _, _ in plan]))
    buttons_prob = np.empty((len(frames), NUM_BUTTONS), np.float32)
    camera_prob = np.empty((len(frames), 2, win_c.shape[-1]), np.float32)
    for (start, keep_from, keep_to), b, c in zip(plan, win_b, win_c, strict=False):
        buttons_prob[keep_from:keep_to] = b[keep_from - start:keep_to - start]
        camera_prob[keep_from:keep_to] = c[keep_from - start:keep_to - start]
    return decode(buttons_prob[:num_steps], camera_prob[:num_steps])


def predict(model: IDM, frames: np.ndarray, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Frames (T, H, W, 3) or (B, T, H, W, 3) uint8 -> buttons_prob (..., T, 20), buttons bool,
    camera_bins (..., T, 2) int, camera_deg (..., T, 2) float, confidence (..., T)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (4, 5) or frames.shape[-1] != 3 or frames.shape[-4] == 0:
        raise ValueError(f"predict takes uint8 frames (T, H, W, 3) or (B, T, H, W, 3) with T >= 1, "
                         f"got {frames.dtype} {frames.shape}")
    if frames.ndim == 4:
        return predict_sequence(model, frames, batch_size)
    outs = [predict_sequence(model, seq, batch_size) for seq in frames]
    return {key: np.stack([o[key] for o in outs]) for key in outs[0]}
