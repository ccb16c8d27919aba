"""An IDM run directory in WorldLoom's checkpoint format (`worldloom.checkpoint`, kind "idm").

    model, cfg = load_idm("runs/idm")          # the latest checkpoint, in eval mode
    checkpoint_id("runs/idm")                  # "idm@step1200-3fa2c9d1e0b4": written as label_model
    load_idm("vpt:models/4x_idm.weights")      # OpenAI's released IDM (worldloom.idm.vpt), wherever a run goes

RUN/
  config.json                   format_version, kind "idm", the TrainConfig and IDMConfig; data: {"fps": steps
                                per second of the datasets it learned} (absent in runs trained before it)
  checkpoint/model.safetensors  weights
  checkpoint/optimizer.safetensors, checkpoint/state.json   AdamW state; step, schedule, elapsed time
  checkpoint/button_thresholds.json   press thresholds fitted on the validation episodes (train's end), on the
                                press probabilities (`press_probabilities`: "calibrated"; older files: the raw
                                sigmoid, converted on reading)
  checkpoint/camera_spread.json   per camera axis, the factor that gives the expected move the spread of the
                                true moves on the validation episodes (train's end; `idm label --camera matched`)
  metrics.csv, curves.png       written by train

Runs travel (downloaded, copied from a colleague), so loading checks what it reads: the format
version and kind, every `train` and `model` value typed and finite (`worldloom.untrusted`), the
weights' shapes against the config before the model is built, every tensor finite. File names
inside a run are fixed, so no path is ever taken from a run's JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from worldloom import checkpoint as ckpt
from worldloom.actions import BUTTONS, FPS, NUM_BUTTONS
from worldloom.errors import UserError
from worldloom.idm import vpt
from worldloom.idm.model import IDM, IDMConfig
from worldloom.io import atomic_write_json
from worldloom.untrusted import MAX_EXACT_INT, dataclass_from_json

KIND = "idm"
THRESHOLDS_FILE = "button_thresholds.json"
SPREAD_FILE = "camera_spread.json"
SPREAD_RANGE = (0.5, 2.0)  # a fitted factor is kept inside this (a validation set too small to trust says more)


def read_config(run_dir: str | Path) -> dict:
    """config.json of an IDM run, checked (format version, kind, its `train` section typed and
    finite as a TrainConfig), or a one-line UserError naming the file and the field."""
    doc = ckpt.read_run_config(run_dir, KIND)
    from worldloom.idm.train import TrainConfig  # here: train imports this module

    dataclass_from_json(TrainConfig, doc.get("train"), source=Path(run_dir) / ckpt.CONFIG_FILE, field="train",
                        require_all=False, max_int=MAX_EXACT_INT, version=doc["format_version"])
    return doc


def model_config(run_dir: str | Path) -> IDMConfig:
    """The IDMConfig a run was trained with, every value typed and checked (a VPTConfig for
    `vpt:PATH`, read without the weights)."""
    if vpt.is_spec(run_dir):
        return vpt.model_config(run_dir)[0]
    doc = read_config(run_dir)
    return dataclass_from_json(IDMConfig, doc.get("model"), source=Path(run_dir) / ckpt.CONFIG_FILE, field="model",
                               version=doc["format_version"])


def load_idm(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[IDM, IDMConfig]:
    """The latest checkpoint of a run as (model in eval mode, its IDMConfig); `vpt:PATH/4x_idm.weights`
    gives OpenAI's IDM (worldloom.idm.vpt) with its VPTConfig."""
    if vpt.is_spec(run_dir):
        return vpt.load_vpt_idm(run_dir, device)
    cfg = model_config(run_dir)
    model = ckpt.load_model(run_dir, KIND, lambda: IDM(cfg))
    model.button_logit_shift = button_logit_shift(run_dir)  # read by infer.window_probs
    model.button_thresholds = button_thresholds(run_dir)  # read by infer's decoding; None: 0.5 each
    return model.to(device).eval(), cfg


def step_rate(run_dir: str | Path) -> float | None:
    """The steps per second a run's IDM learned (config.json's data.fps: its datasets'), the game's 20 for
    OpenAI's IDM (VPT's data is 20 Hz), or None: a run trained before the rate was recorded (unknown)."""
    if vpt.is_spec(run_dir):
        return float(FPS)
    doc = read_config(run_dir)
    fps = doc.get("data", {}).get("fps") if isinstance(doc.get("data"), dict) else None
    if fps is None:
        return None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
        raise UserError(f"{Path(run_dir) / ckpt.CONFIG_FILE}: data.fps must be a number of steps per second, got "
                        f"{fps!r}; restore the run from its source, or train it again")
    return float(fps)


def check_step_rate(run_dir: str | Path, data: list[str] | tuple[str, ...]) -> None:
    """UserError (one line naming both rates) when a dataset holds another step rate than the IDM learned: it
    reads an action per step, so a 10 fps step (1/10 s of play) would be read as one 1/20 s step. A run that
    did not record its rate is not refused (worldloom.datasets.reader.check_step_rate)."""
    from worldloom.datasets.reader import check_step_rate as check

    check(data, step_rate(run_dir), f"IDM {run_dir}", "reads an action", "an IDM")


def button_logit_shift(run_dir: str | Path) -> float:
    """What to subtract from the run's button logits to get press probabilities: log of the press weight its
    loss gave a press against a release (`train.button_pos_weight`; 0 for a run whose config does not say).

    Binary cross-entropy with a press weighted w is least where sigmoid(logit) = w p / (w p + 1 - p), p the
    chance of a press: the logit is p's log-odds plus log w (the weighted loss is the plain one on a sample
    where presses come w times as often). So sigmoid(logit - log w) is p, and a press labeled where it passes
    0.5 is the more likely of press and release; sigmoid(logit) > 0.5 would press wherever p > 1 / (1 + w)."""
    if vpt.is_spec(run_dir):
        return 0.0
    weight = read_config(run_dir).get("train", {}).get("button_pos_weight", 1.0)
    return float(np.log(weight))


def press_probability(raw: np.ndarray, shift: float) -> np.ndarray:
    """sigmoid(logit) in (0, 1) -> sigmoid(logit - shift): a cut on the raw sigmoid as a cut on the press probability."""
    return 1 / (1 + np.exp(-(np.log(raw / (1 - raw)) - shift)))


def button_thresholds(run_dir: str | Path) -> np.ndarray | None:
    """The (20,) press thresholds the run fitted on its validation episodes for these weights
    (`checkpoint/button_thresholds.json`, written by training), on the press probabilities
    (`button_logit_shift` taken out; a file fitted before that, on the raw sigmoid, is converted, so
    it decides the same presses), or None: absent (a run from before them, or one without
    validation episodes) or fitted on other weights (a run resumed and stopped before it
    refitted). A malformed file: one-line UserError naming it."""
    if (fitted := _read_fitted(run_dir, THRESHOLDS_FILE, "thresholds", "a thresholds file", "0.5 is used")) is None:
        return None
    path, doc, values, weights = fitted
    if values.shape != (NUM_BUTTONS,) or not np.all((values > 0) & (values < 1)):
        raise UserError(f"{path}: thresholds must be {NUM_BUTTONS} numbers in (0, 1); delete the file (0.5 is used "
                        "without it) or train the run again")
    if weights != checkpoint_id(run_dir):
        return None
    if doc.get("press_probabilities") != "calibrated":  # fitted on sigmoid(logit): the same cut on logit - shift
        values = press_probability(values, button_logit_shift(run_dir))
    return values


def _read_fitted(run_dir: str | Path, name: str, key: str, what: str, without: str
                 ) -> tuple[Path, dict, np.ndarray, str] | None:
    """(path, its JSON, its `key` as float64, the checkpoint id it was fitted for) of a file that training
    fits next to the weights (checkpoint/`name`), None where absent; unreadable or missing a field: one-line
    UserError naming it, saying what happens `without` it."""
    path = ckpt._run_file(run_dir, ckpt.CHECKPOINT_DIR, name)  # a link leading outside the run: refused
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        return path, doc, np.asarray(doc[key], dtype=np.float64), str(doc["checkpoint"])
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise UserError(f"{path}: not {what} ({type(err).__name__}: {err}); delete it ({without} without it) or "
                        "train the run again") from None


def write_button_thresholds(run_dir: str | Path, thresholds: np.ndarray, fitted_on: dict) -> Path:
    """Write `checkpoint/button_thresholds.json` for the run's current weights (atomic); `thresholds` on the
    press probabilities (`button_logit_shift` taken out)."""
    path = Path(run_dir) / ckpt.CHECKPOINT_DIR / THRESHOLDS_FILE
    atomic_write_json(path, {"checkpoint": checkpoint_id(run_dir), "press_probabilities": "calibrated",
                             "buttons": list(BUTTONS),
                             "thresholds": [float(t) for t in thresholds], **fitted_on})
    return path


def camera_spread(run_dir: str | Path) -> np.ndarray | None:
    """The (2,) factors (pitch, yaw) the run fitted on its validation episodes for these weights
    (`checkpoint/camera_spread.json`, written by training): the true moves' root mean square over
    the expected moves' (idm/train.py fit_decoding), so labels scaled by it spread as the player's
    camera did. None: absent (a run trained before 2026-12-05, one without validation episodes,
    OpenAI's IDM) or fitted on other weights. A malformed file: one-line UserError naming it."""
    if vpt.is_spec(run_dir):
        return None
    fitted = _read_fitted(run_dir, SPREAD_FILE, "spread", "a camera spread file", "labels take the expected move")
    if fitted is None:
        return None
    path, _, values, weights = fitted
    low, high = SPREAD_RANGE
    if values.shape != (2,) or not np.all((values >= low) & (values <= high)):
        raise UserError(f"{path}: spread must be 2 numbers (pitch, yaw) in [{low}, {high}]; delete the file (labels "
                        "take the expected move without it) or train the run again")
    return values if weights == checkpoint_id(run_dir) else None


def write_camera_spread(run_dir: str | Path, spread: np.ndarray, fitted_on: dict) -> Path:
    """Write `checkpoint/camera_spread.json` for the run's current weights (atomic)."""
    path = Path(run_dir) / ckpt.CHECKPOINT_DIR / SPREAD_FILE
    atomic_write_json(path, {"checkpoint": checkpoint_id(run_dir), "axes": ["pitch", "yaw"],
                             "spread": [float(v) for v in spread], **fitted_on})
    return path


def checkpoint_id(run_dir: str | Path) -> str:
    """`<run name>@step<N>-<first 12 hex of the weights' sha256>` (`vpt:<file>@sha256-<12 hex>` for
    OpenAI's IDM): names the exact weights."""
    if vpt.is_spec(run_dir):
        return vpt.checkpoint_id(run_dir)
    return ckpt.checkpoint_id(run_dir, KIND)


def run_folder(run_dir: str | Path) -> Path:
    """Where a run's own reports go: the run directory, or the folder of a `vpt:` weights file."""
    return vpt.weights_path(run_dir).parent if vpt.is_spec(run_dir) else Path(run_dir)


def save_idm(run_dir: str | Path, model: IDM, train: dict | None = None, step: int = 0) -> Path:
    """Write `model` as an IDM run (config.json + checkpoint/) that load_idm, eval and label read:
    for weights made elsewhere (imported, or untrained for a benchmark). `train`: its TrainConfig
    fields, as far as known; a run given none records `data` ["-"] (trained on no dataset here) and itself as `out`."""
    from worldloom.config import to_json_dict

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train = {"data": ["-"], "out": str(run_dir), **(train or {})}  # read_config needs both; "-": no data of ours
    ckpt.write_run_config(run_dir, KIND, {"train": train, "model": to_json_dict(model.cfg)})
    ckpt.save_checkpoint(run_dir, KIND, {"model": model.state_dict()}, {"step": step, "elapsed_s": 0.0})
    return run_dir
