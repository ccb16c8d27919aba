"""Run a trained IDM over frames of any length and size: the function other stages call.

    from worldloom.idm import load_idm, predict
    model, cfg = load_idm("runs/idm")
    out = predict(model, frames)     # frames (T, H, W, 3) or (B, T, H, W, 3) uint8, any T and size
    out["buttons"], out["camera_deg"], out["confidence"]

    stream = StreamPredictor(model)  # a long video, fed in pieces of any size (labeling)
    for frames in pieces:
        out = stream.push(frames)    # predictions of the steps no later frame can change (maybe none)
    out = stream.finish()            # the rest

Long sequences are cut into windows of T frames with stride T/2, and each step keeps the
prediction of the window where it sits nearest the centre; the first window keeps its first
quarter and the last window its last quarter (VPT labels its videos the same way: windows of
128, stride 64, the middle 64 kept, edges from the first and last windows). A sequence shorter
than T is padded by repeating its last frame, and the padded steps are dropped.

Each frame's ResNet features are computed once (the stem sees real neighbours, black frames
beyond the sequence's ends, exactly as in training); only the transformer runs per window.

Fed in pieces, the predictions are bit for bit those of one pass, whatever the pieces: every
computation is cut at absolute positions of the sequence, never at a piece's edge. Features run
in blocks of `batch_size * T` frames counted from step 0, each with its `context` real frames on
both sides; windows run in batches of `batch_size` counted from the first window. A block or a
batch runs once every frame it depends on has arrived, so the same tensors of the same shapes go
through the model in the same order (and a step is returned only once its window's keep range
cannot change: when the sequence is known to go on for at least another T/2 + T frames).

Held keys (`hold_steps`, 1 by default: each step on its own, as VPT decodes): with `hold_steps = n`
(odd), the movement keys (forward, back, left, right, sneak, sprint: keys a player holds for many
steps) are decided on their probability averaged over the n steps centred on the step, the sequence's
first and last steps repeated beyond its ends. A step is then returned once (n - 1) / 2 later steps
are known, and the average is summed in one fixed order, so pieces still give the one-pass labels
bit for bit. Why: docs/idm.md, "Held keys".
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from worldloom.actions import BUTTONS, CAMERA_MAXVAL, dequantize_camera
from worldloom.idm.data import padded_frames
from worldloom.idm.model import IDM

HELD_KEYS = ("forward", "back", "left", "right", "sneak", "sprint")  # averaged over hold_steps (module docstring)
HELD_INDEX = np.array([BUTTONS.index(k) for k in HELD_KEYS])
MAX_HOLD_STEPS = 41  # about 2 s at 20 steps/s


def check_hold_steps(hold_steps: int) -> None:
    """ValueError unless `hold_steps` is odd and in [1, MAX_HOLD_STEPS]."""
    if not (isinstance(hold_steps, int) and 1 <= hold_steps <= MAX_HOLD_STEPS and hold_steps % 2 == 1):
        raise ValueError(f"hold_steps must be an odd number of steps from 1 to {MAX_HOLD_STEPS} (1: each step on its "
                         f"own), got {hold_steps!r}")


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
def block_features(model: IDM, frames: np.ndarray) -> torch.Tensor:
    """Features (n, D) of the n middle frames of (n + 2 context, H, W, 3) uint8: one ResNet call."""
    device = _model_device(model)
    x = torch.from_numpy(np.ascontiguousarray(frames))[None].to(device)  # (1, n + 2 ctx, H, W, 3)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model.frame_features(x)[0].float()  # (n, D)


@torch.inference_mode()
def window_probs(model: IDM, windows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Window features (W, T, D) -> button probabilities (W, T, 20) and camera probabilities (W, T, 2, 11).

    A button's probability is sigmoid(logit - `model.button_logit_shift`): the press weight its training loss
    gave presses taken out (checkpoint.button_logit_shift; 0 on a model that was not loaded from a run)."""
    device = _model_device(model)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model.heads(windows)
    buttons = out["buttons"].float() - getattr(model, "button_logit_shift", 0.0)
    return torch.sigmoid(buttons).cpu().numpy(), torch.softmax(out["camera"].float(), -1).cpu().numpy()


def decode(buttons_prob: np.ndarray, camera_prob: np.ndarray, camera_decoding: str = "expected",
           thresholds: np.ndarray | None = None, camera_spread: np.ndarray | None = None,
           camera_still: bool = False) -> dict[str, np.ndarray]:
    """Probabilities -> the action dict of `predict`.

    A button is pressed where its probability exceeds its threshold: `thresholds` (20,), those
    the run fitted on its validation episodes (`checkpoint.button_thresholds`), else 0.5 (VPT's
    argmax of press / no press). Camera bins are decoded by argmax, as VPT. `camera_deg` is the expected
    move over the bins' centres in degrees: the model is trained on two-hot targets linear in degrees
    (worldloom.actions.two_hot), so a sure answer decodes to the move itself, not a bin centre, and an
    unsure one to its mean in degrees (where the model cannot tell a turn's direction, near 0 instead
    of a confident wrong side; docs/idm.md). Labels store `camera_deg`. A model that
    says `camera_decoding = "argmax"` (OpenAI's VPT IDM, trained on one-hot bins) gets the argmax
    bin's centre, as VPT decodes. `camera_spread` (2,), where given (`idm label --camera matched`: the
    run's `checkpoint.camera_spread`), multiplies the expected move per axis (pitch, yaw) so its spread
    is the true moves' on the run's validation episodes, clipped to the bins' +-CAMERA_MAXVAL.
    `camera_still` (`idm label --camera-still likely`): an axis whose most likely bin is the still one (0
    degrees) is labeled 0, the model's most likely answer, as a button is labeled by its more likely state;
    elsewhere the expected move. (The expected move of a still step is rarely exactly 0: a little of the
    model's doubt on either side. Cloned as a two-hot target, that is a policy that turns now and then
    where its teacher held still; docs/idm.md, still camera.)
    """
    buttons = buttons_prob > (0.5 if thresholds is None else thresholds)
    camera_bins = camera_prob.argmax(-1)
    if camera_decoding == "argmax":
        camera_deg = dequantize_camera(camera_bins)
    else:
        centres = dequantize_camera(np.arange(camera_prob.shape[-1]))  # (bins,) degrees
        camera_deg = (camera_prob * centres).sum(-1)  # (..., 2) expected move in degrees
        if camera_spread is not None:
            camera_deg = np.clip(camera_deg * np.asarray(camera_spread), -CAMERA_MAXVAL, CAMERA_MAXVAL)
        if camera_still:
            camera_deg = np.where(camera_bins == camera_prob.shape[-1] // 2, 0.0, camera_deg)
    # The probability of the whole decoded action, heads taken as independent.
    confidence = np.where(buttons, buttons_prob, 1 - buttons_prob).prod(-1) * camera_prob.max(-1).prod(-1)
    return {"buttons_prob": buttons_prob.astype(np.float32), "buttons": buttons,
            "camera_bins": camera_bins.astype(np.int64), "camera_deg": camera_deg.astype(np.float32),
            "confidence": confidence.astype(np.float32)}


class StreamPredictor:
    """Per-step predictions of one sequence fed in pieces: bit for bit those of one pass (module docstring)."""

    def __init__(self, model: IDM, batch_size: int = 8, hold_steps: int = 1) -> None:
        """`hold_steps`: the movement keys' probabilities averaged over this many steps (odd; module docstring)."""
        check_hold_steps(hold_steps)
        cfg = model.cfg
        self.model, self.T, self.ctx = model, cfg.num_frames, cfg.context
        self.stride, self.quarter = cfg.num_frames // 2, cfg.num_frames // 4
        self.window_batch = max(1, batch_size)  # windows per transformer call
        self.block = self.window_batch * cfg.num_frames  # frames per ResNet call
        self.frames = np.zeros((0, cfg.height, cfg.width, 3), np.uint8)  # frames [frames_from, num_frames)
        self.frames_from = self.num_frames = 0
        self.features = torch.zeros(0, cfg.feature_dim, device=_model_device(model))  # of frames [features_from, num_features)
        self.features_from = self.num_features = 0
        self.num_windows = 0  # windows run (a multiple of window_batch until finish)
        self.window_out: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # window index -> probs, until returned
        self.num_returned_windows = 0
        self.finished = False
        self.pad_short = getattr(model, "pads_short_windows", True)  # VPT's IDM runs short windows as they are
        self.camera_decoding = getattr(model, "camera_decoding", "expected")
        self.thresholds = getattr(model, "button_thresholds", None)  # set by checkpoint.load_idm
        self.camera_spread = getattr(model, "camera_spread", None)  # set by idm label (--camera matched)
        self.camera_still = getattr(model, "camera_still", False)  # set by idm label (--camera-still likely)
        self.hold = hold_steps // 2  # steps on each side of a held key's average
        self.pending = (np.zeros((0, 20), np.float32), np.zeros((0, 2, 11), np.float32))  # probs not returned yet
        self.held_before: np.ndarray | None = None  # the held keys' last `hold` probs before the pending steps

    def push(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Add the next frames (n, H, W, 3) uint8, any size; the predictions of the steps now final."""
        if self.finished:
            raise ValueError("StreamPredictor.push after finish")
        small = resize_frames(np.asarray(frames, dtype=np.uint8), self.model.cfg.height, self.model.cfg.width)
        self.frames = np.concatenate([self.frames, small])
        self.num_frames += len(small)
        self._run_blocks(final_frames=self.num_frames)
        self._run_windows(last_window=None)
        stable = (self.num_frames - self.T) // self.stride  # windows before it keep what the grid says
        return self._release(*self._take(min(self.num_windows, stable), plan=None), final=False)

    def finish(self) -> dict[str, np.ndarray]:
        """The predictions of every step not returned yet; the sequence ends here."""
        self.finished = True
        num_steps = self.num_frames
        if num_steps == 0:
            return self._release(np.zeros((0, 20), np.float32), np.zeros((0, 2, 11), np.float32), final=True)
        if num_steps < self.T and self.pad_short:  # pad by repeating the last frame; the padded steps are dropped below
            self.frames = np.concatenate([self.frames, np.repeat(self.frames[-1:], self.T - num_steps, 0)])
            self.num_frames = self.T
        self._run_blocks(final_frames=None)
        plan = window_plan(self.num_frames, self.T)
        self._run_windows(last_window=len(plan))
        probs_b, probs_c = self._take(len(plan), plan=plan)
        padded = self.num_frames - num_steps  # the repeated frames' steps, dropped
        return self._release(probs_b[:len(probs_b) - padded], probs_c[:len(probs_c) - padded], final=True)

    def _run_blocks(self, final_frames: int | None) -> None:
        """Features of every whole block whose frames (and context) have arrived; at the end, of the rest."""
        while self.num_features < self.num_frames:
            start, stop = self.num_features, self.num_features + self.block
            if final_frames is not None and stop + self.ctx > final_frames:
                return  # this block needs frames that have not arrived
            stop = min(stop, self.num_frames)
            local = padded_frames(self.frames, start - self.ctx - self.frames_from, stop + self.ctx - self.frames_from)
            feats = block_features(self.model, local)  # (stop - start, D)
            self.features = torch.cat([self.features, feats])
            self.num_features = stop
            drop = max(0, self.num_features - self.ctx - self.frames_from)  # keep the next block's left context
            self.frames, self.frames_from = self.frames[drop:], self.frames_from + drop

    def _run_windows(self, last_window: int | None) -> None:
        """Run window batches whose features are final; at the end (last_window given), all the rest."""
        while True:
            first = self.num_windows
            stop = first + self.window_batch if last_window is None else min(first + self.window_batch, last_window)
            if stop <= first:
                return
            starts = [self._window_start(i, last_window) for i in range(first, stop)]
            if last_window is None and starts[-1] + self.T > self.num_features:
                return  # the batch's last window still waits for features
            windows = torch.stack([self.features[s - self.features_from:s - self.features_from + self.T] for s in starts])
            probs_b, probs_c = window_probs(self.model, windows)  # (W, T, 20), (W, T, 2, 11)
            for i, b, c in zip(range(first, stop), probs_b, probs_c, strict=True):
                self.window_out[i] = (b, c)
            self.num_windows = stop
            # Features before the last run window's start are never read again (the plan's last window
            # starts after it: it ends at the sequence's last frame).
            drop = (stop - 1) * self.stride - self.features_from if last_window is None else 0
            if drop > 0:
                self.features, self.features_from = self.features[drop:], self.features_from + drop

    def _window_start(self, i: int, last_window: int | None) -> int:
        if last_window is not None and i == last_window - 1 and self.num_frames > self.T:
            return self.num_frames - self.T  # the plan's last window ends at the last frame
        return i * self.stride

    def _take(self, upto: int, plan: list[tuple[int, int, int]] | None) -> tuple[np.ndarray, np.ndarray]:
        """Button (n, 20) and camera (n, 2, 11) probabilities of the kept steps of windows
        [num_returned_windows, upto) (grid keep ranges, or the plan's)."""
        probs_b, probs_c = [], []
        for i in range(self.num_returned_windows, upto):
            if plan is not None:
                start, keep_from, keep_to = plan[i]
            else:
                start = i * self.stride
                keep_from = 0 if i == 0 else start + self.T - self.quarter - self.stride
                keep_to = start + self.T - self.quarter
            b, c = self.window_out.pop(i)
            probs_b.append(b[keep_from - start:keep_to - start])
            probs_c.append(c[keep_from - start:keep_to - start])
        self.num_returned_windows = max(self.num_returned_windows, upto)
        if not probs_b:
            return np.zeros((0, 20), np.float32), np.zeros((0, 2, 11), np.float32)
        return np.concatenate(probs_b), np.concatenate(probs_c)

    def _release(self, probs_b: np.ndarray, probs_c: np.ndarray, final: bool) -> dict[str, np.ndarray]:
        """Decode the steps whose held-key average is known: all but the last `hold` pending ones, or all at the end."""
        pending_b = np.concatenate([self.pending[0], probs_b])
        pending_c = np.concatenate([self.pending[1], probs_c])
        ready = len(pending_b) if final else max(0, len(pending_b) - self.hold)
        out_b = pending_b[:ready].copy()
        if self.hold and ready:
            held = pending_b[:, HELD_INDEX]  # (P, 6)
            if self.held_before is None:  # the sequence's first step, repeated before it
                self.held_before = np.repeat(held[:1], self.hold, 0)
            after = np.repeat(held[-1:], self.hold, 0) if final else held[:0]  # its last step, repeated after it
            span = np.concatenate([self.held_before, held, after])  # step i's window is span[i : i + 2 * hold + 1]
            total = span[:ready].copy()
            for j in range(1, 2 * self.hold + 1):  # one fixed order of sums, whatever the pieces
                total += span[j:j + ready]
            out_b[:, HELD_INDEX] = total / np.float32(2 * self.hold + 1)
            self.held_before = span[ready:ready + self.hold]
        self.pending = (pending_b[ready:], pending_c[ready:])
        return decode(out_b, pending_c[:ready], self.camera_decoding, self.thresholds, self.camera_spread,
                      self.camera_still)


def concat_predictions(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-step prediction dicts along the step axis."""
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def short_window_words(model) -> str:
    """How a sequence shorter than the model's window is run (`StreamPredictor`), as `idm label` and `idm eval` say it."""
    if getattr(model, "pads_short_windows", True):
        return "its last frame repeated to fill the window (the padded steps dropped)"
    return "a window of its own length, as VPT runs one"


def predict_sequence(model: IDM, frames: np.ndarray, batch_size: int = 8, hold_steps: int = 1) -> dict[str, np.ndarray]:
    """One sequence (T, H, W, 3) uint8 -> per-step predictions, windowed and stitched (`hold_steps`: StreamPredictor)."""
    stream = StreamPredictor(model, batch_size, hold_steps)
    return concat_predictions([stream.push(frames), stream.finish()])


def predict(model: IDM, frames: np.ndarray, batch_size: int = 8, hold_steps: int = 1) -> dict[str, np.ndarray]:
    """Frames (T, H, W, 3) or (B, T, H, W, 3) uint8 -> buttons_prob (..., T, 20), buttons bool,
    camera_bins (..., T, 2) int, camera_deg (..., T, 2) float, confidence (..., T). `hold_steps` (odd): the
    movement keys decided on their probability averaged over that many steps around each (`idm label` uses 7;
    module docstring), their `buttons_prob` the average."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (4, 5) or frames.shape[-1] != 3 or frames.shape[-4] == 0:
        raise ValueError(f"predict takes uint8 frames (T, H, W, 3) or (B, T, H, W, 3) with T >= 1, "
                         f"got {frames.dtype} {frames.shape}")
    if frames.ndim == 4:
        return predict_sequence(model, frames, batch_size, hold_steps)
    outs = [predict_sequence(model, seq, batch_size, hold_steps) for seq in frames]
    return {key: np.stack([o[key] for o in outs]) for key in outs[0]}
