"""A training run's directory: safetensors weights, JSON config and state, no pickles.

    model, cfg = load_idm("runs/idm")          # the latest checkpoint, in eval mode
    checkpoint_id("runs/idm")                  # "idm@step1200-3fa2c9d1e0b4": written as label_model

RUN/
  config.json                   the TrainConfig and IDMConfig that made the run
  state.json                    the commit point: step, total_steps, elapsed time, file names
  model-00001200.safetensors    weights at that step
  optim-00001200.safetensors    AdamW moments and step counts (param_groups live in state.json)
  metrics.csv, curves.png       written by train

Weights and optimizer files carry the step in their names and state.json is renamed into place
last, so a crash at any moment leaves a consistent checkpoint (the previous one or the new one).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from worldloom.errors import UserError
from worldloom.idm.model import IDM, IDMConfig
from worldloom.paths import inside
from worldloom.untrusted import MAX_EXACT_INT, dataclass_from_json, load_fitting_weights, read_json

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary name, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW's state as flat tensors `{"3.exp_avg": ...}` plus its param_groups as JSON data."""
    sd = optimizer.state_dict()
    tensors = {f"{idx}.{name}": (value if torch.is_tensor(value) else torch.tensor(value))
               for idx, state in sd["state"].items() for name, value in state.items()}
    return tensors, sd["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> None:
    """The inverse of `optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def save_checkpoint(run_dir: Path, model: IDM, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write weights, optimizer and then state.json (the commit); drop the previous checkpoint's files."""
    step = int(state["step"])
    model_file, optim_file = f"model-{step:08d}.safetensors", f"optim-{step:08d}.safetensors"
    _save_tensors_atomic(model.state_dict(), run_dir / model_file, metadata={"step": str(step)})
    tensors, groups = optimizer_tensors(optimizer)
    _save_tensors_atomic(tensors, run_dir / optim_file)
    previous = read_state(run_dir)
    write_json_atomic(run_dir / STATE_FILE, {**state, "model_file": model_file, "optim_file": optim_file,
                                             "param_groups": groups})
    if previous and previous.get("model_file") != model_file:
        for name in ("model_file", "optim_file"):
            if previous.get(name):
                run_file(run_dir, previous, name).unlink(missing_ok=True)


def read_state(run_dir: Path) -> dict | None:
    """state.json of a run, or None when no checkpoint was committed yet; UserError unless it is
    an object with a step (an integer >= 0)."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    state = read_json(path, what="an IDM checkpoint's state")
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise UserError(f"{path}: step is {step!r}, expected an integer >= 0; restore the run from its source")
    return state


def run_file(run_dir: Path, state: dict, field: str) -> Path:
    """The file that state.json's `field` names, checked to stay inside the run directory."""
    return inside(run_dir, state.get(field), source=Path(run_dir) / STATE_FILE, field=field)


def read_config(run_dir: str | Path) -> dict:
    """config.json of a run, its `train` section checked as a TrainConfig (every value typed and
    finite); a UserError naming what is missing or wrong."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{run_dir} is not an IDM run: {CONFIG_FILE} is missing (train one with `worldloom idm train`)")
    config = read_json(path, what="an IDM run's config")
    if not isinstance(config, dict):
        raise UserError(f"{path}: holds a JSON {type(config).__name__}, expected an object; restore the run from its source")
    from worldloom.idm.train import TrainConfig  # here: train imports this module

    dataclass_from_json(TrainConfig, config.get("train"), source=path, field="train", require_all=False, max_int=MAX_EXACT_INT)
    return config


def load_idm(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[IDM, IDMConfig]:
    """The latest checkpoint of a run as (model in eval mode, its IDMConfig)."""
    run_dir = Path(run_dir)
    cfg = dataclass_from_json(IDMConfig, read_config(run_dir).get("model"), source=run_dir / CONFIG_FILE, field="model")
    state = read_state(run_dir)
    if state is None:
        raise UserError(f"{run_dir} has no checkpoint yet ({STATE_FILE} is missing): let `worldloom idm train` save one")
    model = load_fitting_weights(lambda: IDM(cfg), run_file(run_dir, state, "model_file"), source=run_dir / CONFIG_FILE)
    return model.to(device).eval(), cfg


def checkpoint_id(run_dir: str | Path) -> str:
    """`<run name>@step<N>-<first 12 hex of the weights' sha256>`: names the exact weights."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    if state is None:
        raise UserError(f"{run_dir} has no checkpoint yet ({STATE_FILE} is missing)")
    digest = hashlib.sha256(run_file(run_dir, state, "model_file").read_bytes()).hexdigest()[:12]
    return f"{run_dir.resolve().name}@step{state['step']}-{digest}"
