"""A policy run directory in WorldLoom's checkpoint format (`worldloom.checkpoint`, kind "policy").

    policy, cfg = load_policy("runs/bc")       # the latest checkpoint, in eval mode
    checkpoint_id("runs/bc")                   # "bc@step600-3fa2c9d1e0b4"

RUN/
  config.json                   format_version, kind "policy", the TrainConfig, the PolicyConfig, the
                                action space, and the data: each dataset's label sources and models
  checkpoint/model.safetensors  weights
  checkpoint/ema.safetensors    their moving average (a run trained with --ema-decay): what plays
  checkpoint/optimizer.safetensors, checkpoint/state.json   AdamW state; step, schedule, elapsed time
  metrics.csv, curves.png       written by train
"""

from __future__ import annotations

from pathlib import Path

import torch

from worldloom import checkpoint as ckpt
from worldloom.errors import UserError

from .model import Policy, PolicyConfig, action_space_doc

KIND = "policy"


def read_config(run_dir: str | Path) -> dict:
    """config.json of a policy run (checked: format version and kind), or a one-line UserError."""
    return ckpt.read_run_config(run_dir, KIND)


def model_config(run_dir: str | Path) -> PolicyConfig:
    """The PolicyConfig a run was trained with; a UserError names the file when it is not one."""
    doc = read_config(run_dir)
    try:
        cfg = PolicyConfig.from_dict(doc["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{Path(run_dir) / ckpt.CONFIG_FILE}: its model config is not valid ({err})") from None
    space = doc.get("action_space", action_space_doc())
    if space != action_space_doc():
        raise UserError(f"{Path(run_dir) / ckpt.CONFIG_FILE}: the policy acts in {space}, not in this WorldLoom's action "
                        f"space {action_space_doc()}: retrain it")
    return cfg


def load_policy(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Policy, PolicyConfig]:
    """The latest checkpoint of a run as (policy in eval mode, its PolicyConfig): the weights' moving
    average where the run kept one (checkpoint/ema.safetensors), else the weights."""
    cfg = model_config(run_dir)
    which = "ema" if (Path(run_dir) / ckpt.CHECKPOINT_DIR / "ema.safetensors").is_file() else "model"
    tensors, _ = ckpt.load_checkpoint(run_dir, KIND, (which,), device="cpu")
    model = Policy(cfg)
    ckpt.load_weights_into(model, tensors[which], Path(run_dir) / ckpt.CHECKPOINT_DIR / f"{which}.safetensors")
    return model.to(device).eval(), cfg


def checkpoint_id(run_dir: str | Path) -> str:
    """`<run name>@step<N>-<first 12 hex of the weights' sha256>`: names the exact weights."""
    return ckpt.checkpoint_id(run_dir, KIND)
