"""Loading a run that someone else wrote: its JSON typed and finite, its weights the shapes that
its config says, checked before a model is built or a byte of weights is read.

    from worldloom.untrusted import read_json, dataclass_from_json, check_fits
    doc = read_json(run / "config.json", what="an IDM run's config")
    cfg = dataclass_from_json(IDMConfig, doc.get("model"), source=run / "config.json", field="model")
    check_fits(lambda: IDM(cfg), run / "checkpoint/model.safetensors", source=run / "config.json")
    # worldloom.checkpoint.load_model does all of this, then loads the weights (finite) into the model

Runs travel like datasets do (downloaded, copied from a colleague), so a loader treats their
files as input: a wrong type, a missing key, a NaN, a negative or huge count is a one-line
UserError naming the file and the field, never a traceback, a hang or an allocation of memory
the weights file does not justify. A config's model is first built on the `meta` device (no
memory) and its tensors compared with the safetensors header; the build stops early when it
registers more tensors than the file holds (a depth of 10^9 fails in microseconds).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from worldloom.errors import UserError

__all__ = ["read_json", "dataclass_from_json", "check_fits", "MAX_CONFIG_INT", "MAX_EXACT_INT"]

T = TypeVar("T")
# Model configs hold sizes (pixels, channels, layers, frames): none is anywhere near 2^16, and a
# bound keeps a hostile value from sizing a numpy table or a Python loop at build time.
MAX_CONFIG_INT = 2**16
# Any other integer in a run's JSON (steps, seeds, frame counts): JSON's exact range (RFC 8259).
MAX_EXACT_INT = 2**53 - 1


def read_json(path: str | os.PathLike, *, what: str) -> Any:
    """The parsed JSON at `path`; UserError naming the file when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; is this {what}?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"{path}: not readable JSON ({err}); restore {what} from its source") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(value: Any, annotation: Any, name: str, max_int: int, version: int | None = None) -> Any:
    """`value` converted to `annotation` (lists to tuples), or ValueError saying why not."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _typed(value, arg, name, max_int, version)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{name} is {_short(value)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} is {_short(value)}, expected a list")
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis] or [Any]
        items = [_typed(v, args[min(i, len(args) - 1)], f"{name}[{i}]", max_int, version) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} is {_short(value)}, expected true or false")
        return value
    if annotation is int:
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > max_int:
            raise ValueError(f"{name} is {_short(value)}, expected an integer of at most {max_int} in size")
        return value
    if annotation is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name} is {_short(value)}, expected a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} is {_short(value)}, expected a string")
        return value
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} is {_short(value)}, expected an object")
        return value
    if dataclasses.is_dataclass(annotation):
        return _dataclass(annotation, value, name, max_int, require_all=True, version=version)
    return value  # Any or a type JSON cannot carry: the dataclass's own checks decide


def _dataclass(cls: type[T], data: Any, name: str, max_int: int, require_all: bool, version: int | None = None) -> T:
    if data is None:  # the section was left out (`doc.get(field)`), or written as null
        raise ValueError(f"{name} is missing")
    if not isinstance(data, dict):
        raise ValueError(f"{name} is {_short(data)}, expected an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{name}.{unknown[0]} is not a field of {cls.__name__}")
    values = {}
    added = getattr(cls, "FIELDS_ADDED", {})  # field -> the format version that added it
    for key, f in fields.items():
        if key not in data:
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            older = version is not None and key in added and version < added[key]  # written before the field
            if (require_all and not older) or not has_default:
                raise ValueError(f"{name}.{key} is missing")
            continue
        values[key] = _typed(data[key], hints[key], f"{name}.{key}", max_int, version)
    try:
        return cls(**values)
    except (ValueError, TypeError, UserError, ArithmeticError) as err:
        raise ValueError(f"{name}: {err}") from None


def dataclass_from_json(cls: type[T], data: Any, *, source: str | os.PathLike, field: str,
                        require_all: bool = True, max_int: int = MAX_CONFIG_INT, version: int | None = None) -> T:
    """`cls` built from JSON `data` (the `field` of the file `source`): every value of the type
    its annotation says (ints not bools, floats finite, lists for tuples, nested dataclasses),
    no unknown key, every key present unless `require_all` is False (then defaults fill in) or the
    file's format `version` predates the field (the class's FIELDS_ADDED maps a field to the
    version that added it; such a field's default does what the code did before it), and
    ints bounded by `max_int`; then the dataclass's own `__post_init__` checks. UserError naming
    the file and the field otherwise."""
    try:
        return _dataclass(cls, data, field, max_int, require_all, version)
    except ValueError as err:
        raise UserError(f"{source}: {err}; restore the file from its source or retrain") from None


class _TooManyTensors(Exception):
    pass


def _header_shapes(path: Path, source: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise UserError(f"{path}: missing, though {source} names it; restore the run from its source") from None
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for damaged headers
        raise UserError(f"{path}: not a readable safetensors file ({err}); restore it from its source") from None


def _meta_shapes(build: Callable[[], Any], limit: int, source: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the model `build` makes, built on the meta device; stops past `limit` tensors."""
    import torch
    from torch.nn.modules import module as nn_module

    count = 0

    def hook(*_: Any) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise _TooManyTensors

    handles = [nn_module.register_module_parameter_registration_hook(hook),
               nn_module.register_module_buffer_registration_hook(hook)]
    try:
        with torch.device("meta"):
            model = build()
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}
    except _TooManyTensors:
        raise UserError(f"{source}: describes a model with more than {limit} tensors, far more than its weights "
                        "file holds; restore the file from its source") from None
    except (ValueError, TypeError, RuntimeError, ArithmeticError, MemoryError, IndexError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""  # torch appends a C++ backtrace
        raise UserError(f"{source}: cannot build the model it describes ({type(err).__name__}: {first}); "
                        "restore the file from its source") from None
    finally:
        for handle in handles:
            handle.remove()


def check_fits(build: Callable[[], Any], path: str | os.PathLike, *, source: str | os.PathLike) -> None:
    """UserError naming `source` (the config), the file and the first difference unless every
    tensor `build()` registers has the name and shape the safetensors header at `path` gives
    (built on the meta device: no memory; stops early past the file's tensor count)."""
    path, source = Path(path), os.fspath(source)
    shapes = _header_shapes(path, source)
    wanted = _meta_shapes(build, 2 * len(shapes) + 64, source)
    for key in sorted(set(wanted) | set(shapes)):
        if wanted.get(key) != shapes.get(key):
            have = "absent" if key not in shapes else f"{list(shapes[key])}"
            want = "absent" if key not in wanted else f"{list(wanted[key])}"
            raise UserError(f"{source}: describes a model whose tensor {key!r} is {want}, but {path.name} has it "
                            f"{have}; the config and the weights are from different runs: restore the run from its source")
