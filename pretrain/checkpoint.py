"""A world-model run directory in WorldLoom's checkpoint format (`worldloom.checkpoint`, kind "world_model").

```
RUN/
├── config.json              format_version, kind, the TrainConfig, model and flow configs that made the run;
│                            text runs: the caption encoder's config and vocabulary ("text", pretrain/text.py)
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
    from .model import WorldModel

    run_dir = Path(run_dir)
    doc = read_config(run_dir)  # the format version and the kind
    sections = check_config(doc, run_dir / ckpt.CONFIG_FILE)  # every section typed and checked
    cfg, text = sections["model"], sections["text"]
    model = ckpt.load_model(run_dir, KIND, lambda: WorldModel(cfg, text), which=which, device=device)
    return model.to(device).eval(), doc, load_codec(run_dir, cfg, device)


def step_rate(doc: dict) -> float:
    """The steps per second a run's world model learned (its datasets'; the game's 20 where unrecorded)."""
    from worldloom.actions import FPS

    return float(doc.get("data", {}).get("fps", FPS))


def check_step_rate(run_dir: str | Path, data: list[str] | tuple[str, ...]) -> None:
    """UserError (one line) when a dataset holds another step rate than the world model learned: it is scored and
    rolled out step for step (worldloom.datasets.reader.check_step_rate). Read from config.json alone, before any
    weight is: the mistake is said at once, before a progress bar."""
    from worldloom.datasets.reader import check_step_rate as check

    doc = read_config(run_dir)
    check_config(doc, Path(run_dir) / ckpt.CONFIG_FILE)  # data.fps typed and checked
    check(data, step_rate(doc), f"world model {run_dir}", "generates", "a world model")


def check_config(doc: object, path: Path) -> dict:
    """config.json's sections as their dataclasses (train, model, flow, data; text, None for runs
    without a caption encoder), each value typed and checked; UserError naming the file and the
    field otherwise (worldloom.untrusted)."""
    from worldloom.datasets import LABEL_SOURCES
    from worldloom.untrusted import MAX_CONFIG_INT, MAX_EXACT_INT, dataclass_from_json

    from .data import SourceSpec
    from .flow import FlowConfig
    from .model import WorldModelConfig
    from .text import TextConfig
    from .train import TrainConfig

    if not isinstance(doc, dict):
        raise UserError(f"{path}: holds a JSON {type(doc).__name__}, expected an object; restore the run from its source")
    classes = {"train": (TrainConfig, False, MAX_EXACT_INT), "model": (WorldModelConfig, True, MAX_CONFIG_INT),
               "flow": (FlowConfig, False, MAX_CONFIG_INT), "data": (SourceSpec, True, MAX_EXACT_INT)}
    flow = doc.get("flow")
    if isinstance(flow, dict) and "loss_weight" in flow:  # a field until 2026-11-30; its value then was the only one kept
        if flow["loss_weight"] != "x0":
            raise UserError(f"{path}: flow.loss_weight is {flow['loss_weight']!r}, a loss this version no longer has "
                            "(only x0); train the run again")
        doc = {**doc, "flow": {k: v for k, v in flow.items() if k != "loss_weight"}}
    version = doc.get("format_version")
    sections = {name: dataclass_from_json(cls, doc.get(name), source=path, field=name, require_all=strict, max_int=bound,
                                          version=version if type(version) is int else None)
                for name, (cls, strict, bound) in classes.items()}
    sections["text"] = None if doc.get("text") is None else dataclass_from_json(
        TextConfig, doc["text"], source=path, field="text", require_all=True, max_int=MAX_CONFIG_INT)
    unknown = sorted(set(sections["data"].label_sources) - set(LABEL_SOURCES))
    if unknown:
        raise UserError(f"{path}: data.label_sources holds {unknown[0]!r}, not one of {LABEL_SOURCES}; restore the run from its source")
    written = tuple(sorted(set(sections["data"].label_sources)))  # training writes each source once, sorted
    if tuple(sections["data"].label_sources) != written:
        raise UserError(f"{path}: data.label_sources is {list(sections['data'].label_sources)}, not each source once in "
                        f"order as training writes it ({list(written)}); restore the run from its source")
    return sections
