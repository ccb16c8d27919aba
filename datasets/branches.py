"""Engine branches: what an engine showed under several action sequences from the same saved states.

    from worldloom.datasets.branches import load_branches
    branches = load_branches("data/branches.safetensors")   # Branches: arrays by (state, branch, step)

Written by `worldloom capture branches` (capture/branches.py), read by `worldloom pretrain eval
--counterfactual FILE` (pretrain/counterfactual.py): the engine's truth as data, so the world
model's stage scores against an engine without importing one. One safetensors file (no pickle):

| tensor | shape, dtype | meaning |
|---|---|---|
| `context_frames` | (S, C, H, W, 3) uint8 | the C frames before each saved state; the last is the frame at the state |
| `context_buttons`, `context_camera` | (S, C-1, 20) uint8, (S, C-1, 2) float32 | the actions between them |
| `branch_buttons`, `branch_camera` | (S, K, T, 20) uint8, (S, K, T, 2) float32 | branch k's T actions, the first taken at the state |
| `frames` | (S, K, T, H, W, 3) uint8 | the engine's frame after each of those actions |

The metadata holds `format` (`worldloom-branches`), `version` (1) and `info`: JSON with the
branch names, env, player, seeds and resolution, and `context_pitch` (S x C degrees: the view's pitch
at each context frame, which a world model that turns about the world's vertical starts from; files
written before it have none). A file that is not this: UserError, one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldloom.actions import NUM_BUTTONS
from worldloom.errors import UserError
from worldloom.io import check_local, check_parents, json_text

FORMAT, VERSION = "worldloom-branches", 1
TENSORS = ("context_frames", "context_buttons", "context_camera", "branch_buttons", "branch_camera", "frames")


@dataclass
class Branches:
    """S saved states x K branches x T steps of engine truth (shapes in the module docstring)."""

    context_frames: np.ndarray
    context_buttons: np.ndarray
    context_camera: np.ndarray
    branch_buttons: np.ndarray
    branch_camera: np.ndarray
    frames: np.ndarray
    info: dict  # names (K branch names), env, player, seeds, resolution

    @property
    def names(self) -> list[str]:
        return list(self.info["names"])

    @property
    def context_pitch(self) -> np.ndarray | None:
        """(S, C) float32: the view's pitch at each context frame in degrees (positive looks down), NaN where a
        value is not a finite number in [-90, 90]; None for a file written without it (info "context_pitch")."""
        values = self.info.get("context_pitch")
        shape = self.context_frames.shape[:2]
        try:
            pitch = np.array(values, dtype=np.float32) if values is not None else None
        except (TypeError, ValueError):
            return None
        if pitch is None or pitch.shape != shape:
            return None
        pitch[~(np.abs(pitch) <= 90.0)] = np.nan
        return pitch

    def check(self, where: str = "branches") -> Branches:
        """Shapes and dtypes agree (UserError naming the tensor otherwise); returns self."""
        s, c = self.context_frames.shape[:2]
        k, t = self.frames.shape[1:3]
        h, w = self.context_frames.shape[2:4]
        want = {"context_frames": ((s, c, h, w, 3), np.uint8), "context_buttons": ((s, c - 1, NUM_BUTTONS), np.uint8),
                "context_camera": ((s, c - 1, 2), np.float32), "branch_buttons": ((s, k, t, NUM_BUTTONS), np.uint8),
                "branch_camera": ((s, k, t, 2), np.float32), "frames": ((s, k, t, h, w, 3), np.uint8)}
        for name, (shape, dtype) in want.items():
            array = getattr(self, name)
            if array.shape != shape or array.dtype != dtype:
                raise UserError(f"{where}: {name} is {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}; "
                                "make the file again with `worldloom capture branches`")
        if not isinstance(self.info.get("names"), list) or len(self.info["names"]) != k:
            raise UserError(f"{where}: info names {self.info.get('names')!r} do not match the {k} branches")
        if s < 1 or k < 2 or t < 1 or c < 1:
            raise UserError(f"{where}: needs at least 1 state, 2 branches, 1 step and 1 context frame; has {s}, {k}, {t}, {c}")
        if not (np.isfinite(self.context_camera).all() and np.isfinite(self.branch_camera).all()):
            raise UserError(f"{where}: camera actions must be finite")
        return self


def save_branches(path: str | Path, branches: Branches) -> None:
    """Write `branches` (checked first) as one safetensors file, atomically."""
    from safetensors.numpy import save

    from worldloom.io import atomic_write_bytes

    branches.check(str(path))
    tensors = {name: np.ascontiguousarray(getattr(branches, name)) for name in TENSORS}
    meta = {"format": FORMAT, "version": str(VERSION), "info": json_text(branches.info, indent=None)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def header_metadata(data: bytes) -> dict:
    """The `__metadata__` of a safetensors file whose first bytes are `data` ({} where its header is not all
    there); ValueError or UnicodeDecodeError for a header that is not JSON."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__", {}) if 8 < 8 + size <= len(data) else {}


def check_branches_out(path: str | Path, make: str) -> str | None:
    """Before recording into `path` with `make` (`capture branches` or `capture revisits`): UserError (one
    line) for a name that is not .safetensors, a folder, a path under a file (a missing folder is made when the
    file is written), or a file of another kind; the words of a note
    where an earlier branches or revisit file is replaced (the same command asked again), else None."""
    check_local(path)  # a URI: never `Path()`ed into a local folder named `s3:`
    out = Path(path)
    if out.suffix.lower() != ".safetensors":
        raise UserError(f"--out {path}: {make} writes one safetensors file; give a name ending in .safetensors")
    if out.is_dir():
        raise UserError(f"--out {path} is a folder; give a file name ending in .safetensors")
    check_parents(out, "--out", "give another path (nothing was written)")  # made when written (atomic_path)
    if not out.exists():
        return None
    try:
        with out.open("rb") as f:
            head = f.read(8)
            meta = header_metadata(head + f.read(min(int.from_bytes(head, "little"), 1 << 24)))
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        meta = {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"--out {path} is a file, not a WorldLoom branches file; give a new name (nothing was written)")
    return f"{make}: replacing {path}, the branches file made earlier there"


def load_branches(path: str | Path, make: str = "capture branches") -> Branches:
    """Read and check a branches file; UserError (one line, naming the file and `make`, the command that makes
    the file asked for: `capture branches`, or `capture revisits` for a revisit file) for anything else."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"{where}: cannot read it ({err.strerror or err}); make it with `worldloom {make}`") from None
    try:
        meta = header_metadata(data)
        if meta.get("format") != FORMAT:
            raise UserError(f"{where}: not a WorldLoom branches file; make it with `worldloom {make}`")
        if meta.get("version") != str(VERSION):
            raise UserError(f"{where}: branches format version {meta.get('version')!r}; this WorldLoom reads {VERSION}")
        tensors = load(data)
        info = json.loads(meta.get("info", "{}"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: damaged branches file ({str(err).splitlines()[0][:120]})") from None
    missing = [name for name in TENSORS if name not in tensors]
    if missing or not isinstance(info, dict):
        raise UserError(f"{where}: missing {', '.join(missing) or 'info'}; make it again with `worldloom {make}`")
    return Branches(**{name: tensors[name] for name in TENSORS}, info=info).check(where)
