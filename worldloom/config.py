"""Typed configs on the command line: a frozen dataclass becomes argparse flags.

Each field's `help` metadata is its `--help` line; validation stays in the dataclass's
`__post_init__`, so the Python API and the CLI reject the same values with the same message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def doc(help: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field with a `--help` line: `name: int = doc("what it is", 3)`."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_sequence) of an annotation such as `int`, `str | None`, `tuple[str, ...]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        return (args[0] if args else str), True
    return annotation, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per field of the dataclass `cls` (underscores become dashes)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        kind, many = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else None
        if has_default and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if has_default:
            help_text += f" (default: {default})"
        if kind is bool and not many:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        parse = kind if kind in (int, float, str) else str
        if kind is dict:
            parse = json.loads
        parser.add_argument(flag, type=parse, nargs="+" if many else None, default=argparse.SUPPRESS,
                            required=not has_default, help=help_text, metavar=f.name.upper())


def dataclass_from_args(cls: type[T], ns: argparse.Namespace, **overrides: Any) -> T:
    """Build `cls` from parsed args; fields the user did not give keep their defaults."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if hasattr(ns, f.name):
            value = getattr(ns, f.name)
            _, many = _base_type(hints[f.name])
            values[f.name] = tuple(value) if many and value is not None else value
    values.update(overrides)
    return cls(**values)


def to_json_dict(cfg: Any) -> dict:
    """A config as plain JSON-able data (tuples become lists), to store beside its outputs."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
