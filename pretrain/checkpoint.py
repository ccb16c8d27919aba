"""A run directory's checkpoint: safetensors for tensors, JSON for everything else, swapped in whole.

```
RUN/
├── config.json              the TrainConfig and the model config that made the run
├── checkpoint/              the last good checkpoint (replaced atomically)
│   ├── model.safetensors    raw weights
│   ├── ema.safetensors      EMA weights (what eval and rollout use)
│   ├── optimizer.safetensors  AdamW moments, one tensor per (param index, name)
│   └── state.json           step, planned steps, optimizer param groups, elapsed time
├── metrics.csv, curves.png
```
Never pickle: optimizer state is flattened to tensors plus JSON (torch.load is not used).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoint"


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """An optimizer state_dict as flat tensors (`state.<i>.<name>`) plus its JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": torch.as_tensor(v).contiguous() for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, i, name = key.split(".", 2)
        state.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> Path:
    """Write a whole checkpoint under a temporary name, then swap it for the old one."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{CHECKPOINT_DIR}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
    tensors, groups = optimizer_to_tensors(opt)
    save_file({k: v.cpu() for k, v in tensors.items()}, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({**state, "param_groups": groups}, indent=1))
    final = run_dir / CHECKPOINT_DIR
    old = run_dir / f".{CHECKPOINT_DIR}-old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / "state.json").exists()


def load_checkpoint(run_dir: Path, model, ema, opt, device="cpu") -> dict:
    """Restore model, EMA and optimizer in place; return the state dict (step, ...)."""
    ckpt = Path(run_dir) / CHECKPOINT_DIR
    model.load_state_dict(load_file(ckpt / "model.safetensors", device=str(device)))
    ema.load_state_dict(load_file(ckpt / "ema.safetensors", device=str(device)))
    state = json.loads((ckpt / "state.json").read_text())
    optimizer_from_tensors(opt, load_file(ckpt / "optimizer.safetensors", device=str(device)), state.pop("param_groups"))
    return state


def load_weights(run_dir: Path, which: str = "ema", device="cpu") -> dict[str, torch.Tensor]:
    """Weights only: `ema` (default, for sampling) or `model`."""
    return load_file(Path(run_dir) / CHECKPOINT_DIR / f"{which}.safetensors", device=str(device))


def load_world_model(run_dir: Path, which: str = "ema", device="cpu"):
    """A trained run as (WorldModel in eval mode with `which` weights, config.json dict, frame codec)."""
    from worldloom.errors import UserError
    from worldloom.untrusted import load_fitting_weights, read_json

    from .autoencoder import load_codec
    from .model import WorldModel

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not has_checkpoint(run_dir):
        raise UserError(f"{run_dir}: not a trained world model run (config.json and checkpoint/ expected); train one with `worldloom pretrain`")
    doc = read_json(run_dir / "config.json", what="a world model run's config")
    if isinstance(doc, dict) and isinstance(doc.get("model"), dict) and "camera_fov_deg" not in doc["model"]:
        raise UserError(f"{run_dir}: a run from before the camera warp (its action features differ); retrain it")
    sections = check_config(doc, run_dir / "config.json")
    state = read_json(run_dir / CHECKPOINT_DIR / "state.json", what="a world model checkpoint's state")
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise UserError(f"{run_dir / CHECKPOINT_DIR / 'state.json'}: step is {step!r}, expected an integer >= 0; "
                        "restore the run from its source")
    cfg = sections["model"]
    weights = run_dir / CHECKPOINT_DIR / f"{which}.safetensors"
    model = load_fitting_weights(lambda: WorldModel(cfg), weights, source=run_dir / "config.json", device=device)
    return model.to(device).eval(), doc, load_codec(run_dir, cfg, device)


def check_config(doc: object, path: Path) -> dict:
    """config.json's sections as their dataclasses (train, model, flow, data), each value typed and
    checked; UserError naming the file and the field otherwise (worldloom.untrusted)."""
    from worldloom.datasets import LABEL_SOURCES
    from worldloom.errors import UserError
    from worldloom.untrusted import MAX_CONFIG_INT, MAX_EXACT_INT, dataclass_from_json

    from .data import SourceSpec
    from .flow import FlowConfig
    from .model import WorldModelConfig
    from .train import TrainConfig

    if not isinstance(doc, dict):
        raise UserError(f"{path}: holds a JSON {type(doc).__name__}, expected an object; restore the run from its source")
    classes = {"train": (TrainConfig, False, MAX_EXACT_INT), "model": (WorldModelConfig, True, MAX_CONFIG_INT),
               "flow": (FlowConfig, False, MAX_CONFIG_INT), "data": (SourceSpec, True, MAX_EXACT_INT)}
    sections = {name: dataclass_from_json(cls, doc.get(name), source=path, field=name, require_all=strict, max_int=bound)
                for name, (cls, strict, bound) in classes.items()}
    unknown = sorted(set(sections["data"].label_sources) - set(LABEL_SOURCES))
    if unknown:
        raise UserError(f"{path}: data.label_sources holds {unknown[0]!r}, not one of {LABEL_SOURCES}; restore the run from its source")
    return sections
