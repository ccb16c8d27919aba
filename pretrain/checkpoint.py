"""A world-model run directory in WorldLoom's checkpoint format (`worldloom.checkpoint`, kind "world_model").

```
RUN/
├── config.json              format_version, kind, the TrainConfig, model and flow configs that made the run
├── autoencoder.safetensors  latent presets only: the frame autoencoder (autoencoder.py)
├── checkpoint/              the last good checkpoint (replaced whole)
│   ├── model.safetensors    raw weights
│   ├── ema.safetensors      EMA weights (what eval and rollout use)
│   ├── optimizer.safetensors, state.json   AdamW state; step, planned steps, elapsed time
├── metrics.csv, curves.png
```
"""

from __future__ import annotations

from pathlib import Path

import torch

from worldloom import checkpoint as ckpt
from worldloom.errors import UserError

KIND = "world_model"
CHECKPOINT_DIR = ckpt.CHECKPOINT_DIR


def read_config(run_dir: str | Path) -> dict:
    """config.json of a world-model run (checked: format version and kind), or a one-line UserError."""
    return ckpt.read_run_config(run_dir, KIND)


def has_checkpoint(run_dir: str | Path) -> bool:
    return ckpt.has_checkpoint(run_dir)


def save_checkpoint(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                    state: dict) -> Path:
    """Weights, EMA weights, optimizer and loop state, written whole (a non-finite tensor: TrainingDiverged)."""
    return ckpt.save_checkpoint(run_dir, KIND, {"model": model.state_dict(), "ema": ema.state_dict()}, state,
                                optimizer=opt)


def load_checkpoint(run_dir: Path, model, ema, opt, device="cpu") -> dict:
    """Restore model, EMA and optimizer in place; return the loop state (step, ...)."""
    tensors, state = ckpt.load_checkpoint(run_dir, KIND, ("model", "ema"), optimizer=opt, device=device)
    ckpt.load_weights_into(model, tensors["model"], Path(run_dir) / CHECKPOINT_DIR / "model.safetensors")
    ckpt.load_weights_into(ema, tensors["ema"], Path(run_dir) / CHECKPOINT_DIR / "ema.safetensors")
    return state


def load_world_model(run_dir: str | Path, which: str = "ema", device="cpu"):
    """A trained run as (WorldModel in eval mode with `which` weights, config.json dict, frame codec)."""
    from .autoencoder import load_codec
    from .model import WorldModel, WorldModelConfig

    run_dir = Path(run_dir)
    doc = read_config(run_dir)
    try:
        cfg = WorldModelConfig(**doc["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{run_dir / ckpt.CONFIG_FILE}: its model config is not valid ({err})") from None
    tensors, _ = ckpt.load_checkpoint(run_dir, KIND, (which,), device=device)
    model = WorldModel(cfg)
    ckpt.load_weights_into(model, tensors[which], run_dir / CHECKPOINT_DIR / f"{which}.safetensors")
    return model.to(device).eval(), doc, load_codec(run_dir, cfg, device)
