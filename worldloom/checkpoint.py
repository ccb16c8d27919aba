"""One versioned checkpoint format for every trained model: safetensors for tensors, JSON for the rest.

```
RUN/
├── config.json                  {"format_version": 2, "kind": "idm" | "world_model" | "policy", ...}
├── checkpoint/                  the last good checkpoint, replaced whole (temporary name, then rename)
│   ├── model.safetensors        weights
│   ├── ema.safetensors          EMA weights (optional; what sampling uses when present)
│   ├── optimizer.safetensors    AdamW moments, one tensor per (parameter index, name) (optional)
│   └── state.json               {"format_version": 2, "kind", "step", "param_groups", ...the loop's state}
├── metrics.csv, curves.png      worldloom.training.MetricsLog
```

    save_checkpoint(run, "idm", {"model": model.state_dict()}, {"step": 100}, optimizer=opt)
    tensors, state = load_checkpoint(run, "idm", ("model",), optimizer=opt)
    checkpoint_id(run)   # "idm-run@step100-3fa2c9d1e0b4": names the exact weights (label_model)

Replacing checkpoint/ takes two renames (worldloom.io); a run killed between them (SIGKILL, power
loss) has none, but its old and new copies under hidden temporary names: `has_checkpoint` and
`read_state` put the newest whole one back first, with one line on stderr.

Never pickle: optimizer state is flattened to tensors plus JSON, and nothing here calls
torch.load. A non-finite tensor is never written (TrainingDiverged instead) and a file that
holds one is refused on load, naming the file and the tensor. A run written by an older
WorldLoom, or by something else, is refused with one line naming the file and its version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from worldloom.errors import UserError
from worldloom.io import atomic_path, atomic_write_json, json_text, restore_dir
from worldloom.paths import redact_json, redact_uri
from worldloom.training import RESUMABLE_FIELDS, TimeBudget, TrainingDiverged

__all__ = ["FORMAT_VERSION", "CONFIG_FILE", "CHECKPOINT_DIR", "STATE_FILE", "write_run_config", "read_run_config", "finished_run",
           "changed_fields", "check_resumable",
           "save_checkpoint", "load_checkpoint", "has_checkpoint", "resume_or_start", "read_state", "checkpoint_id", "first_non_finite", "load_weights_into", "load_model"]

# 2 (2026-12-01): configs may hold fields added since 1; a version-1 file lacking such a field (a
# dataclass's FIELDS_ADDED names them) reads as its default, which does what the code did before.
# 3 (2026-12-01): the world model's hud_mask (pretrain/model.py); a version-2 run had none.
# 4: the world model's hud_fill (pretrain/model.py).
# 5 (2026-12-02): the IDM's motion_sparse_window (idm/model.py); a version-4 run had none.
# 6 (2026-12-02): the world model's move_flow (pretrain/model.py); a version-5 run had none.
# 7 (2026-12-03): the IDM's motion_sparse_prior (idm/model.py); a version-6 run had none.
# 8 (2026-12-03): the world model's sprint_fov_deg (pretrain/model.py); a version-7 run had none (its view never zooms).
# 9 (2026-12-04): the IDM's camera_reader (idm/model.py); a version-8 run had none (its camera came from the trunk).
# 10 (2026-12-04): the IDM's button_reader; a version-9 run had none (its buttons came from the trunk alone).
# 11 (2026-12-05): the IDM's button_reader_skips; a version-10 run's button reader read every button.
# 12 (2026-12-05): the policy's task_heads (agent/model.py); a version-11 policy had one head for every task.
FORMAT_VERSION = 12
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
TENSOR_FILES = ("model", "ema", "optimizer")
KIND_NAMES = {"idm": "an IDM", "world_model": "a world model", "policy": "a policy"}  # for messages


def _kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, f"a {kind!r}")


def _check_version(doc: Any, path: Path, kind: str) -> dict:
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a WorldLoom run file (a JSON object expected, got {type(doc).__name__})")
    version = doc.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        said = "no format_version (written by WorldLoom 0.1 or another tool)" if version is None else f"format_version {version!r}"
        # A newer run is kept and read by a newer WorldLoom: retraining it would throw its training away.
        todo = ("written by a newer WorldLoom: upgrade WorldLoom to use it" if type(version) is int and version > FORMAT_VERSION
                else "retrain the run with this version")
        raise UserError(f"{path}: {said}; this WorldLoom reads checkpoint formats {READABLE_VERSIONS[0]}-{FORMAT_VERSION}: "
                        f"{todo}")
    if doc.get("kind") != kind:
        raise UserError(f"{path}: {_kind_name(str(doc.get('kind')))} run, not {_kind_name(kind)} run; pass {_kind_name(kind)} "
                        "run directory")
    return doc


def _run_file(run_dir: str | Path, *parts: str) -> Path:
    """RUN/parts...: the names are fixed, but a file may be a symlink; UserError if it (or the
    checkpoint directory) leads outside the run, before a byte is read (worldloom.paths)."""
    from worldloom.paths import is_inside

    path = Path(run_dir).joinpath(*parts)
    if (path.exists() or path.is_symlink()) and not is_inside(run_dir, path):
        raise UserError(f"{path}: links outside its run directory {run_dir} (to {os.path.realpath(path)}); "
                        "a run's files stay inside it: restore the run from its source")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise UserError(f"{path}: cannot read it as JSON ({err}); restore the run from its source, or train "
                        "it again with a new --out") from None


def write_run_config(run_dir: str | Path, kind: str, doc: Mapping[str, Any]) -> None:
    """RUN/config.json: the configs that made the run, with the format version and the kind; every URI in it
    without its credentials (`s3://KEY:SECRET@b/p` -> `s3://***@b/p`; until 2026-12-07 a trainer's `--data`
    kept them in plain text), as a resume compares it (`real_folders`)."""
    atomic_write_json(Path(run_dir) / CONFIG_FILE, redact_json({"format_version": FORMAT_VERSION, "kind": kind, **doc}))


def read_run_config(run_dir: str | Path, kind: str) -> dict:
    """RUN/config.json, checked: UserError (one line) if missing, foreign or of another version."""
    path = _run_file(run_dir, CONFIG_FILE)
    if not path.is_file():
        raise UserError(f"{run_dir}: not {_kind_name(kind)} run ({CONFIG_FILE} is missing)")
    return _check_version(_read_json(path), path, kind)


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # as config.json holds it: tuples as lists


def changed_fields(have: Mapping[str, Any], cfg: Any, sections: Mapping[str, Any],
                   resumable: Collection[str] = RESUMABLE_FIELDS) -> list[str]:
    """The names in which a resume asked with the trainer config `cfg` (a dataclass) and the config.json
    `sections` it would write (e.g. {"model": ...}, compared whole) differ from the run's config.json
    `have`: its `train` fields, beside those a resume may change (`resumable`) and those a section
    covers (`train.model`: the flags on top of the preset; the section: the model they made). A field
    the file lacks (written before the field was added) reads as its default, as loading reads it."""
    train = have.get("train") if isinstance(have.get("train"), dict) else {}
    asked = _as_json(dataclasses.asdict(cfg))
    defaults = {f.name: _as_json(f.default) for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    diff = [name for name, value in asked.items() if name not in resumable and name not in sections
            and _spelled(name, train.get(name, defaults.get(name))) != _spelled(name, value)]
    return sorted(diff + [name for name, value in sections.items() if have.get(name) != _as_json(value)])


PATH_FIELDS = ("data",)  # trainer fields that list input folders: the same folder however it is spelled


def _spelled(name: str, value: Any) -> Any:
    """A field's value as compared on resume: the folders of a PATH_FIELDS list as real absolute paths (from the
    current folder), so `--data d1` and `--data /abs/d1` are one dataset; anything else as it is."""
    if name in PATH_FIELDS and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return real_folders(value)
    return value


def real_folders(folders: Iterable[str]) -> list[str]:
    """Dataset folders however spelled (relative, ~, through a link) as real absolute paths from the current
    folder, URIs without their credentials (as config.json records them): so `d1` and `/abs/d1` compare as
    one dataset."""
    return [redact_uri(v) if "://" in v else os.path.realpath(os.path.expanduser(v)) for v in folders]


def check_resumable(run_dir: str | Path, cfg: Any, sections: Mapping[str, Any], read: Callable[[str | Path], dict],
                    resumable: Collection[str] = RESUMABLE_FIELDS, data_content: Mapping[str, str | None] | None = None) -> None:
    """UserError (one line naming the run and the fields) if `run_dir` holds a checkpoint of a run
    made with another config (changed_fields; `read` is the trainer's checked config.json reader):
    its steps were taken with the old values, which config.json must keep recording. Likewise if a
    dataset of `data_content` ({folder: its content id}, what config.json's DATA_CONTENT records) holds
    other content than when the run was trained: the same name is not the same data, and a finished
    run on the old data is no model of the new."""
    if not has_checkpoint(run_dir):
        return
    have = read(run_dir)
    diff = changed_fields(have, cfg, sections, resumable)
    if "data" in diff and same_content(have, getattr(cfg, "data", ()), data_content or {}):
        diff.remove("data")  # the same datasets named from another folder (a relative --data, another working dir)
    if diff:
        raise UserError(f"{run_dir} holds a run with a different config ({', '.join(diff)}): use a new --out, "
                        "or the same flags to resume it")
    changed = changed_data(have, data_content or {})
    if changed:
        raise UserError(f"{run_dir} was trained on {', '.join(changed)} as {'it was' if len(changed) == 1 else 'they were'} "
                        "then, and its content has changed since (other shards under the same name): use a new --out "
                        "to train on it as it is now, or restore it to resume the run")


DATA_CONTENT = "data_content"  # config.json's {dataset folder: its content id when the run trained on it}


def same_content(have: Mapping[str, Any], data: Iterable[str], data_content: Mapping[str, str | None]) -> bool:
    """Whether the datasets `data` (in order, their content ids in `data_content`) hold what the run's config.json
    `have` recorded for its own `train.data`, one by one: the same data however the folders are reached (a
    relative `--data` given from another working directory named other folders by path until 2026-12-07, and
    the resume was refused)."""
    recorded, train = have.get(DATA_CONTENT), have.get("train")
    then = train.get("data") if isinstance(train, dict) else None
    now = list(data)
    if not (isinstance(recorded, dict) and isinstance(then, list) and len(then) == len(now)):
        return False
    ids_then = [recorded.get(p) for p in then]
    ids_now = [data_content.get(p) for p in now]
    return all(a is not None and a == b for a, b in zip(ids_then, ids_now, strict=True))


def changed_data(have: Mapping[str, Any], data_content: Mapping[str, str | None]) -> list[str]:
    """The folders of `data_content` whose content id differs from the one the run's config.json `have`
    records for the same folder (however spelled); none for a run written before ids were recorded."""
    recorded = have.get(DATA_CONTENT)
    if not isinstance(recorded, dict):
        return []
    old = {_spelled("data", [k])[0]: v for k, v in recorded.items()}
    return [path for path, cid in data_content.items() if old.get(_spelled("data", [path])[0], cid) != cid]


def first_non_finite(tensors: Mapping[str, Any]) -> str | None:
    """The name of the first floating tensor holding a NaN or an infinity, or None."""
    import torch

    for name, t in tensors.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def _optimizer_tensors(optimizer) -> tuple[dict, list[dict]]:
    import torch

    sd = optimizer.state_dict()
    tensors = {f"{idx}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
               for idx, state in sd["state"].items() for name, value in state.items()}
    return tensors, sd["param_groups"]


def _load_optimizer(optimizer, tensors: Mapping[str, Any], param_groups: list[dict], path: Path) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, _, name = key.partition(".")
        if not idx.isdigit() or not name:
            raise UserError(f"{path}: unexpected tensor name {key!r} in the optimizer state")
        state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: the optimizer state does not fit this model ({err})") from None


def save_checkpoint(run_dir: str | Path, kind: str, weights: Mapping[str, Mapping[str, Any]], state: Mapping[str, Any],
                    optimizer=None) -> Path:
    """Write RUN/checkpoint whole: `weights` maps "model" (and "ema") to state dicts; `state`
    is the loop's JSON state (must hold "step"). Raises TrainingDiverged, writing nothing, if a
    tensor is not finite."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    files = {name: {k: v.detach().cpu().contiguous() for k, v in sd.items()} for name, sd in weights.items()}
    groups = None
    if optimizer is not None:
        files["optimizer"], groups = _optimizer_tensors(optimizer)
    for name, tensors in files.items():
        bad = first_non_finite(tensors)
        if bad is not None:
            raise TrainingDiverged(f"{name} tensor {bad!r} is not finite at step {state.get('step')}: nothing was "
                                   f"written; the last good checkpoint in {run_dir / CHECKPOINT_DIR} is kept")
    final = run_dir / CHECKPOINT_DIR
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        for name, tensors in files.items():
            save_file(tensors, str(tmp / f"{name}.safetensors"), metadata={"step": str(state.get("step"))})
        doc = {"format_version": FORMAT_VERSION, "kind": kind, **state}
        if groups is not None:
            doc["param_groups"] = groups
        (tmp / STATE_FILE).write_text(json_text(doc, indent=1))
    return final


def _tensor_file_step(path: Path) -> str | None:
    """The step a safetensors file was saved at (its metadata), if the file is whole: its header reads
    and its length is the header's plus the tensors' bytes (a file cut short by a kill: None)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size)) if size <= 100 * 2**20 else None
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        if os.path.getsize(path) != 8 + size + max(ends, default=0):
            return None
        return (header.get("__metadata__") or {}).get("step")
    except (OSError, ValueError, struct.error, TypeError, KeyError, IndexError, AttributeError):
        return None


def _whole_checkpoint(directory: Path) -> tuple[int, float] | None:
    """(step, state.json's mtime) of a checkpoint directory whose files are all there and whole, else
    None. state.json is written last (save_checkpoint); the weights, and the optimizer its param_groups
    name, must be whole and saved at its step."""
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        step, mtime = state["step"], (directory / STATE_FILE).stat().st_mtime
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, TypeError, KeyError):
        return None
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    needed = ["model"] + (["optimizer"] if "param_groups" in state else [])
    present = [name for name in TENSOR_FILES if (directory / f"{name}.safetensors").exists()]
    if not set(needed) <= set(present):
        return None
    if any(_tensor_file_step(directory / f"{name}.safetensors") != str(step) for name in present):
        return None
    return step, mtime


def _restore_checkpoint(run_dir: str | Path) -> None:
    """A run killed (SIGKILL, power loss) between the two renames that replace checkpoint/ has none,
    but its old and new copies under temporary names (worldloom.io._swap_dirs): the newest whole one
    is put back, said in one line, and the other leftovers deleted."""
    final = Path(run_dir) / CHECKPOINT_DIR
    restored = restore_dir(final, _whole_checkpoint)
    if restored is not None:
        step = (_whole_checkpoint(final) or ("?",))[0]
        print(f"{run_dir}: {CHECKPOINT_DIR}/ was missing (a run killed while replacing it); put back the whole copy "
              f"of step {step} it left as {restored.name}, and removed the other leftovers", file=sys.stderr)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run has a checkpoint (one a kill left under a temporary name is put back first)."""
    _restore_checkpoint(run_dir)
    return (Path(run_dir) / CHECKPOINT_DIR / STATE_FILE).is_file()


def read_state(run_dir: str | Path, kind: str) -> dict:
    """checkpoint/state.json, checked: UserError (one line) if missing, foreign or of another version."""
    _restore_checkpoint(run_dir)
    path = _run_file(run_dir, CHECKPOINT_DIR, STATE_FILE)
    if not path.is_file():
        raise UserError(f"{run_dir}: no checkpoint yet ({CHECKPOINT_DIR}/{STATE_FILE} is missing); train the run first")
    state = _check_version(_read_json(path), path, kind)
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{path}: step must be a whole number >= 0, got {step!r}")
    return state


def finished_run(run_dir: str | Path, kind: str, command: str, minutes: float, max_steps: int | None) -> str | None:
    """The line for a run whose last checkpoint already ended its budget (None: no checkpoint, or
    steps left), asked again with the same budget; a UserError when a longer one is asked: a finished
    schedule is not extended (its learning rate has decayed to the end), a new --out trains anew; and
    one for an unfinished run asked for a budget it has already passed (it is not cut back)."""
    if not has_checkpoint(run_dir):
        return None
    train, state = read_run_config(run_dir, kind).get("train", {}), read_state(run_dir, kind)
    had = TimeBudget(train.get("minutes", 0.0), train.get("max_steps"), state.get("planned_steps"))
    step, elapsed_s = state["step"], float(state.get("elapsed_s", 0.0))
    asked = TimeBudget(minutes, max_steps)
    if not had.done(step, elapsed_s):
        if asked.done(step, elapsed_s):  # it would stop at once, its weights past the budget config.json would say
            raise UserError(f"{run_dir} stopped at {step} step{'s' * (step != 1)} in {elapsed_s / 60:.1f} minutes of "
                            f"its budget {had.flags}, already past {asked.flags}: a run is not cut back; resume it "
                            f"with {had.flags}, or use a new --out to train with {asked.flags}")
        return None
    check_weights_readable(run_dir)  # "already finished" of a damaged file would send a user on to eval it
    words = (f"{run_dir} is already finished: {step} step{'s' * (step != 1)} in {elapsed_s / 60:.1f} minutes, its budget "
             f"{had.flags}")
    if asked.flags != had.flags:
        raise UserError(f"{words}, and a finished schedule is not extended; to train with {asked.flags}, "
                        "use a new --out")
    return f"{command}: {words}; nothing to train (a longer budget needs a new --out)"


def check_weights_readable(run_dir: str | Path) -> None:
    """UserError (one line, as load_checkpoint's) when the checkpoint's model.safetensors is missing or its header
    does not cover the file (a truncated copy, another format); reads the header only."""
    from safetensors import SafetensorError, safe_open

    path = _run_file(run_dir, CHECKPOINT_DIR, "model.safetensors")
    if not path.is_file():
        raise _missing(path)
    try:
        with safe_open(str(path), "pt"):
            pass
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _unreadable(path, err, "model") from None


def _missing(path: Path) -> UserError:
    return UserError(f"{path} is missing: the checkpoint is incomplete; retrain or restore the run")


def _unreadable(path: Path, err: Exception, name: str) -> UserError:
    return UserError(f"{path}: not a readable safetensors file ({err}); {_next_step(name)}")


def load_checkpoint(run_dir: str | Path, kind: str, which: Sequence[str] = ("model",), optimizer=None,
                    device: Any = "cpu") -> tuple[dict[str, dict], dict]:
    """({name: state dict} for `which`, the state JSON); restores `optimizer` in place when given.

    UserError (one line) naming the file for a missing, unreadable or non-finite tensor file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = Path(run_dir) / CHECKPOINT_DIR
    state = read_state(run_dir, kind)
    names = list(which) + (["optimizer"] if optimizer is not None else [])
    loaded: dict[str, dict] = {}
    for name in names:
        if name not in TENSOR_FILES:
            raise ValueError(f"which must name files among {TENSOR_FILES}, got {name!r}")
        path = _run_file(run_dir, CHECKPOINT_DIR, f"{name}.safetensors")
        if not path.is_file():
            raise _missing(path)
        try:
            tensors = load_file(str(path), device=str(device))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise _unreadable(path, err, name) from None
        bad = first_non_finite(tensors)
        if bad is not None:
            raise UserError(f"{path}: tensor {bad!r} holds NaN or infinite values; {_next_step(name)}")
        loaded[name] = tensors
    if optimizer is not None:
        groups = state.get("param_groups")
        if not isinstance(groups, list):
            raise UserError(f"{ckpt / STATE_FILE}: param_groups missing; the optimizer state cannot be restored")
        _load_optimizer(optimizer, loaded.pop("optimizer"), groups, ckpt / "optimizer.safetensors")
    return loaded, {k: v for k, v in state.items() if k != "param_groups"}


def _next_step(name: str) -> str:
    """What a user can do about a damaged tensor file of a checkpoint (one of TENSOR_FILES)."""
    if name == "optimizer":
        return ("the weights (model.safetensors) do not need it: eval, label and rollout still read the run; to train "
                "on, put back a whole copy of this file, or train a new --out")
    return "put back a whole copy of this file (a backup, or the run's source), or train the run again into a new --out"


def resume_or_start(run_dir: str | Path, kind: str, model, optimizer, device: Any = "cpu") -> dict:
    """The run's last checkpoint (model "model" and optimizer) loaded in place, and its state JSON (step,
    elapsed_s, planned_steps, ...); a new run's state where there is none. UserError as load_checkpoint."""
    if not has_checkpoint(run_dir):
        return {"step": 0, "elapsed_s": 0.0, "planned_steps": None}
    tensors, state = load_checkpoint(run_dir, kind, ("model",), optimizer=optimizer, device=device)
    load_weights_into(model, tensors["model"], Path(run_dir) / CHECKPOINT_DIR / "model.safetensors")
    return state


def load_weights_into(module, tensors: Mapping[str, Any], path: Path) -> None:
    """`module.load_state_dict(tensors)` with a one-line error when they do not fit."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "shapes differ"
        raise UserError(f"{path}: the weights do not fit the model its config describes ({first})") from None


def load_model(run_dir: str | Path, kind: str, build, which: str = "model", device: Any = "cpu"):
    """`build()` (a module from the run's config) with checkpoint/`which`.safetensors loaded, after
    the checks a downloaded run needs: the format version and kind, every tensor's name and shape
    compared on the meta device with the file's header (before any weight is read or memory is
    allocated for a model the file does not justify), and every tensor finite. One-line UserErrors."""
    from worldloom.untrusted import check_fits

    read_state(run_dir, kind)
    path = _run_file(run_dir, CHECKPOINT_DIR, f"{which}.safetensors")
    if not path.is_file():
        raise UserError(f"{path} is missing: the checkpoint is incomplete; retrain or restore the run")
    check_fits(build, path, source=Path(run_dir) / CONFIG_FILE)
    tensors, _ = load_checkpoint(run_dir, kind, (which,), device=device)
    model = build()
    load_weights_into(model, tensors[which], path)
    return model


def checkpoint_id(run_dir: str | Path, kind: str) -> str:
    """`<run name>@step<N>-<first 12 hex of the weights' sha256>`: names the exact weights."""
    run_dir = Path(run_dir)
    state = read_state(run_dir, kind)
    digest = hashlib.sha256(_run_file(run_dir, CHECKPOINT_DIR, "model.safetensors").read_bytes()).hexdigest()[:12]
    return f"{run_dir.resolve().name}@step{state['step']}-{digest}"
