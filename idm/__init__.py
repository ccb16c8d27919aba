"""worldloom.idm: a VPT-style inverse dynamics model: train, evaluate, pseudo-label footage.

    worldloom idm train --data data/voxel --preset tiny --out runs/idm --minutes 15
    worldloom idm eval --model runs/idm --data data/heldout
    worldloom idm label --model runs/idm --data videos/ --out data/pseudo

    from worldloom.idm import load_idm, predict
    model, cfg = load_idm("runs/idm")
    out = predict(model, frames)      # (T, H, W, 3) uint8 -> buttons (T, 20), camera_deg (T, 2), ...

Heavy modules load on first use, so `import worldloom.idm` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "IDM": "model", "IDMConfig": "model", "PRESETS": "model",
    "load_idm": "checkpoint", "checkpoint_id": "checkpoint",
    "predict": "infer",
    "TrainConfig": "train", "train": "train",
    "evaluate": "evaluate",
    "LabelConfig": "label", "label": "label",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
