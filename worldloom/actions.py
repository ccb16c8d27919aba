"""The action space, in one place: VPT / MineRL 1.0 buttons, camera, quantizer, FPS, encodings.

    from worldloom import actions
    a = actions.noop(); actions.validate(a)
    buttons, camera = actions.to_arrays([a, a])      # (T, 20) bool, (T, 2) float32 degrees
    bins = actions.quantize_camera(camera)           # (T, 2) int64 in 0..10

The buttons are VPT's `Buttons.ALL` (openai/Video-Pre-Training `lib/actions.py`); every stage
(the env, the dataset columns, both models) takes them from here. The camera is `[pitch, yaw]` in
degrees per step. Quantization is VPT's mu-law `CameraQuantizer` (`lib/actions.py`,
`camera_maxval=10, camera_binsize=2, mu=10`): 11 bins per axis with centres 0, +-0.615,
+-1.609, +-3.215, +-5.809, +-10 degrees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# Game time runs at 20 steps per second (MineRL and VPT record at 20 Hz), so footage is 20 fps.
FPS = 20

BUTTONS: tuple[str, ...] = (
    "attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop",
    "inventory", *(f"hotbar.{i}" for i in range(1, 10)),
)
NUM_BUTTONS = len(BUTTONS)  # 20
CAMERA_AXES: tuple[str, ...] = ("pitch", "yaw")
CAMERA_UNITS = "degrees per step"
# Written into every dataset's manifest: the order of events within a step.
ACTION_ALIGNMENT = "action[t] is applied between frame[t] and frame[t+1]"

__all__ = [
    "FPS", "BUTTONS", "NUM_BUTTONS", "CAMERA_AXES", "CAMERA_UNITS", "ACTION_ALIGNMENT", "CAMERA_MAXVAL", "CAMERA_BINSIZE", "CAMERA_MU", "NUM_CAMERA_BINS",
    "CAMERA_LIMIT", "IGNORED_KEYS", "noop", "validate", "to_arrays", "from_arrays",
    "camera_to_bin_position", "bin_position_to_camera",
    "quantize_camera", "dequantize_camera", "WORLD_MODEL_ACTION_DIM", "world_model_features", "world_model_camera", "two_hot",
]

CAMERA_MAXVAL = 10.0  # degrees; VPT clips camera moves to +-10 before quantizing
CAMERA_BINSIZE = 2.0
CAMERA_MU = 10.0
NUM_CAMERA_BINS = int(2 * CAMERA_MAXVAL / CAMERA_BINSIZE) + 1  # 11
CAMERA_LIMIT = 180.0  # MineRL 1.0's camera Box is [-180, 180]^2 degrees per step
# MineRL 1.0 keys that exist but are not predicted (as in VPT): accepted and ignored.
IGNORED_KEYS = ("ESC", "swapHands", "pickItem")


def noop() -> dict:
    """The action that does nothing: every button 0, camera [0, 0]."""
    action: dict = {name: 0 for name in BUTTONS}
    action["camera"] = np.zeros(2, dtype=np.float32)
    return action


def _check_button(name: str, value) -> None:
    if isinstance(value, (int, np.integer, np.bool_)) and (value == 0 or value == 1):
        return  # the common case, without building an array (validate runs on every step)
    arr = np.asarray(value)
    if arr.shape != ():
        raise ValueError(f"action[{name!r}] must be a scalar 0 or 1, got shape {arr.shape}: {value!r}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"action[{name!r}] must be 0 or 1, got {value!r}")
    if arr.dtype.kind == "f" and not math.isfinite(float(arr)):
        raise ValueError(f"action[{name!r}] must be 0 or 1, got {value!r}")
    if float(arr) not in (0.0, 1.0):
        raise ValueError(f"action[{name!r}] must be 0 or 1, got {value!r}")


def validate(action: Mapping) -> None:
    """Raise ValueError naming the key and value if `action` is not a valid action dict."""
    if not isinstance(action, Mapping):
        raise ValueError(f"an action must be a dict of {NUM_BUTTONS} buttons and 'camera', got {type(action).__name__}")
    missing = [k for k in (*BUTTONS, "camera") if k not in action]
    if missing:
        raise ValueError(f"action is missing key(s) {missing}; see worldloom.actions.noop()")
    unknown = [k for k in action if k not in BUTTONS and k != "camera" and k not in IGNORED_KEYS]
    if unknown:
        raise ValueError(f"action has unknown key(s) {unknown}; known: {[*BUTTONS, 'camera']}")
    for name in BUTTONS:
        _check_button(name, action[name])
    camera = action["camera"]
    try:
        cam = np.asarray(camera, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"action['camera'] must be 2 numbers [pitch, yaw], got {camera!r}") from err
    if cam.shape != (2,):
        raise ValueError(f"action['camera'] must have shape (2,) [pitch, yaw], got shape {cam.shape}: {camera!r}")
    if not np.all(np.isfinite(cam)):
        raise ValueError(f"action['camera'] must be finite, got {camera!r}")
    if np.any(np.abs(cam) > CAMERA_LIMIT):
        raise ValueError(f"action['camera'] must lie in [-{CAMERA_LIMIT:g}, {CAMERA_LIMIT:g}] degrees, got {camera!r}")


def to_arrays(actions: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    """A list of T action dicts -> buttons (T, 20) bool and camera (T, 2) float32 degrees."""
    num = len(actions)
    buttons = np.zeros((num, NUM_BUTTONS), dtype=bool)  # (T, 20)
    camera = np.zeros((num, 2), dtype=np.float32)  # (T, 2)
    for t, action in enumerate(actions):
        validate(action)
        buttons[t] = [bool(action[name]) for name in BUTTONS]
        camera[t] = np.asarray(action["camera"], dtype=np.float32)
    return buttons, camera


def from_arrays(buttons: np.ndarray, camera: np.ndarray) -> dict:
    """One step's buttons (20,) and camera (2,) degrees -> an action dict."""
    buttons = np.asarray(buttons)
    camera = np.asarray(camera, dtype=np.float32)
    if buttons.shape != (NUM_BUTTONS,):
        raise ValueError(f"buttons must have shape ({NUM_BUTTONS},), got {buttons.shape}")
    if camera.shape != (2,):
        raise ValueError(f"camera must have shape (2,), got {camera.shape}")
    action: dict = {name: int(bool(b)) for name, b in zip(BUTTONS, buttons, strict=False)}
    action["camera"] = camera.copy()
    return action


def camera_to_bin_position(camera: np.ndarray) -> np.ndarray:
    """Degrees (..., 2) -> continuous mu-law bin position (..., 2) float64 in [0, 10]; its rint is the bin."""
    x = np.clip(np.asarray(camera, dtype=np.float64), -CAMERA_MAXVAL, CAMERA_MAXVAL)
    m, mu = CAMERA_MAXVAL, CAMERA_MU
    encoded = m * np.sign(x) * np.log1p(mu * np.abs(x) / m) / np.log1p(mu)
    return (encoded + m) / CAMERA_BINSIZE


def bin_position_to_camera(position: np.ndarray) -> np.ndarray:
    """Continuous bin positions (..., 2) in [0, 10] -> degrees (..., 2) float32 (inverts the mu-law)."""
    m, mu = CAMERA_MAXVAL, CAMERA_MU
    encoded = np.asarray(position, dtype=np.float64) * CAMERA_BINSIZE - m
    x = m * np.sign(encoded) * (np.power(1.0 + mu, np.abs(encoded) / m) - 1.0) / mu
    return x.astype(np.float32)


def quantize_camera(camera: np.ndarray) -> np.ndarray:
    """Degrees (..., 2) -> mu-law bin indices (..., 2) int64 in 0..10 (VPT's CameraQuantizer)."""
    return np.rint(camera_to_bin_position(camera)).astype(np.int64)


def dequantize_camera(bins: np.ndarray) -> np.ndarray:
    """Bin indices (..., 2) -> the bins' centres in degrees (..., 2) float32."""
    bins = np.asarray(bins)
    if bins.size and (bins.min() < 0 or bins.max() >= NUM_CAMERA_BINS):
        raise ValueError(f"camera bins must lie in 0..{NUM_CAMERA_BINS - 1}, got {bins.min()}..{bins.max()}")
    return bin_position_to_camera(bins)


# ---- The encodings the two models use (torch tensors; torch is imported where they run) -------

# World model: 20 buttons, mu-law pitch and yaw (VPT's curve, continuous), and pitch and yaw in
# units of 10 degrees, clipped at 90: the mu-law part resolves small moves, the linear part keeps
# moves past 10 degrees (a flick, a 24-degree look down) that the camera turn of the skip path needs.
WORLD_MODEL_ACTION_DIM = NUM_BUTTONS + 4
CAMERA_LINEAR_MAX_DEG = 90.0


def world_model_features(buttons, camera_deg):
    """Buttons (..., 20) and camera degrees (..., 2) torch tensors -> (..., 24) float features."""
    import torch

    cam = camera_deg.clamp(-CAMERA_MAXVAL, CAMERA_MAXVAL) / CAMERA_MAXVAL
    cam = cam.sign() * torch.log1p(CAMERA_MU * cam.abs()) / math.log1p(CAMERA_MU)
    linear = camera_deg.clamp(-CAMERA_LINEAR_MAX_DEG, CAMERA_LINEAR_MAX_DEG) / CAMERA_MAXVAL
    return torch.cat([buttons.float(), cam.float(), linear.float()], dim=-1)


def world_model_camera(features):
    """Camera degrees (..., 2) of world-model features (..., 24): the linear part, exact to 90 degrees."""
    return features[..., -2:].float() * CAMERA_MAXVAL


def two_hot_degrees(camera_deg):
    """Camera degrees (...) torch tensor -> (..., 11) two-hot over VPT's mu-law bins (`two_hot` of
    `camera_to_bin_position`, in torch): moves past CAMERA_MAXVAL are clipped to it."""
    import torch

    cam = camera_deg.clamp(-CAMERA_MAXVAL, CAMERA_MAXVAL) / CAMERA_MAXVAL
    encoded = cam.sign() * torch.log1p(CAMERA_MU * cam.abs()) / math.log1p(CAMERA_MU)
    return two_hot((encoded * CAMERA_MAXVAL + CAMERA_MAXVAL) / CAMERA_BINSIZE)


def two_hot(position, num_bins: int = NUM_CAMERA_BINS):
    """IDM camera targets: bin positions (...) in [0, num_bins - 1] -> (..., num_bins) two-hot.

    The mass is split between the two neighbouring bins so that its mean over the bins' centres
    in degrees is the move (DreamerV3's two-hot, here over VPT's mu-law bins, linear in degrees
    between them): the argmax stays next to VPT's bin, and the expected move over the centres
    (`idm.infer.decode`) is the exact move for a sure prediction and, for an unsure one, the
    conditional mean in degrees, the answer that camera R² rewards. Splitting linearly in the
    mu-law position instead (the first version) decoded unsure answers short of that mean:
    R² 0.437 / 0.589 against 0.447 / 0.607 on the same probabilities (issue 18's log, section 9).
    """
    import torch
    import torch.nn.functional as F

    position = position.clamp(0, num_bins - 1)
    lo = position.floor().clamp(max=num_bins - 2)  # (...)
    def degrees(pos):  # bin_position_to_camera in torch
        encoded = pos * CAMERA_BINSIZE - CAMERA_MAXVAL
        return CAMERA_MAXVAL * encoded.sign() * (torch.pow(1.0 + CAMERA_MU, encoded.abs() / CAMERA_MAXVAL) - 1) / CAMERA_MU

    move, c_lo, c_hi = degrees(position), degrees(lo), degrees(lo + 1)
    frac = ((move - c_lo) / (c_hi - c_lo)).clamp(0, 1).unsqueeze(-1)  # (..., 1) linear in degrees
    lo = F.one_hot(lo.long(), num_bins).to(position.dtype)  # (..., num_bins)
    return lo * (1 - frac) + lo.roll(1, -1) * frac
