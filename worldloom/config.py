"""Typed configs on the command line: a frozen dataclass becomes argparse flags.

    @dataclass(frozen=True)
    class TrainConfig:
        data: tuple[str, ...] = doc("datasets to train on")
        model: IDMConfig | None = doc("model size (default: the preset's)", None)
    add_dataclass_args(parser, TrainConfig)          # --data ..., --model.width 96, ...
    cfg = dataclass_from_args(TrainConfig, args)     # a bad value: UserError naming the flag

Each field's `help` metadata is its `--help` line. A field whose type is a dataclass is one level
of nesting: its fields become `--field.sub` flags (tyro's spelling), built on top of the
default the parent class names in `nested_default(name, values)` (e.g. a model preset), or the
field's default, or the nested class's own defaults. Validation stays in the dataclasses'
`__post_init__`, which raise ValueError naming the field; `dataclass_from_args` alone turns that
into a UserError, the one-line message the CLI prints, with each field named as the flag the user
typed (`batch_size` -> `--batch-size`, `IDMConfig.width` -> `--model.width`: `flag_words`). So the
Python API and the CLI reject the same values, each in its own spelling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import numbers
import re
import sys
import types
import typing
from typing import Any, TypeVar

from worldloom.errors import UserError

T = TypeVar("T")

# The largest seed anywhere in WorldLoom (capture jobs and episodes, VoxelWorld worlds, evaluation and
# training): VoxelWorld's world generator makes a world from 31 bits of its seed (a larger one would
# repeat a world), and numpy's SeedSequence takes no negative seed. Derived seeds are masked to it.
MAX_SEED = 2**31 - 1

__all__ = ["doc", "add_dataclass_args", "dataclass_from_args", "to_json_dict", "flag_name", "deprecated_flag", "finite_float",
           "check_range", "flag_words"]


def doc(help: str, default: Any = dataclasses.MISSING, cli: bool = True, **kwargs: Any) -> Any:
    """A dataclass field with a `--help` line: `name: int = doc("what it is", 3)`; cli=False: no flag (a
    preset's own note, such as the time it takes)."""
    metadata = {"help": help, "cli": cli}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def check_range(name: str, value: Any, low: float, high: float, unit: str = "", integer: bool = True) -> None:
    """ValueError in one line naming the flag, the value and the accepted range unless `low <= value
    <= high` (and a whole number when `integer`): `--fps must be a number in 1..240 (steps per
    second), got 0`. `name` is the field's (`num_workers`, `sizes.steps`); for every numeric
    flag's check in a config's `__post_init__`, so the CLI refuses it while parsing."""
    kind_ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if kind_ok and low <= value <= high:
        return
    flag = "--" + name.replace("_", "-")
    kind = "a whole number" if integer else "a number"
    text = lambda x: str(int(x)) if float(x).is_integer() else f"{x:g}"  # noqa: E731
    raise ValueError(f"{flag} must be {kind} in {text(low)}..{text(high)}{f' ({unit})' if unit else ''}, got {value!r}")


def flag_name(field_name: str, prefix: str = "") -> str:
    """`num_workers` -> `--num-workers`; with prefix `model`: `--model.num-frames`."""
    name = field_name.replace("_", "-")
    return f"--{prefix}.{name}" if prefix else f"--{name}"


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


def _default(f: dataclasses.Field) -> tuple[bool, Any]:
    if f.default is not dataclasses.MISSING:
        return True, f.default
    if f.default_factory is not dataclasses.MISSING:
        return True, f.default_factory()
    return False, None


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def finite_float(text: str) -> float:
    """A float flag's value: `nan` and `inf` are refused while parsing, since every range check
    after it (`lr <= 0`, `low <= value <= high`) is false for a NaN and lets it through to the run."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                       deprecated: dict[str, str] | None = None) -> None:
    """Add one flag per field of the dataclass `cls` (one level of nesting for dataclass fields).

    `deprecated` maps an old flag spelling to a field name: it keeps working for one release
    and prints one deprecation line naming the new flag.
    """
    _add_fields(parser, cls, skip, prefix="")
    for old, field_name in (deprecated or {}).items():
        deprecated_flag(parser, old, field_name)
        for action in parser._actions:  # either spelling may give it: dataclass_from_args checks presence
            if action.dest == field_name:
                action.required = False


def _add_fields(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...], prefix: str,
                base: Any = None) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init or not f.metadata.get("cli", True):
            continue
        kind, many = _base_type(hints[f.name])
        dest = f"{prefix}.{f.name}" if prefix else f.name
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(kind):
            if prefix:
                raise TypeError(f"{cls.__name__}.{f.name}: configs nest one level deep, not more")
            group = parser.add_argument_group(f"{f.name} ({help_text})" if help_text else f.name)
            _, field_default = _default(f)
            _add_fields(group, kind, (), prefix=f.name, base=field_default)
            continue
        has_default, default = _default(f)
        said = "default" in help_text  # the help says it in words ("default: the preset's, 16 for tiny")
        if prefix and not said:  # nested: the parent's default instance, else the preset's (nested_default)
            help_text += f" (default: {getattr(base, f.name)})" if base is not None else " (default: the preset's)"
        elif has_default and default is not None and not said:  # None: unset, which the help explains
            help_text += f" (default: {default})"
        flag = flag_name(f.name, prefix)
        help_text = help_text.replace("%", "%%")  # argparse %-formats help ("at most 5% more" was a TypeError on --help)
        required = not has_default and not prefix
        if kind is bool and not many:
            if prefix:  # --model.flag true|false: BooleanOptionalAction cannot spell --no-model.flag
                parser.add_argument(flag, dest=dest, type=_parse_bool, default=argparse.SUPPRESS, help=help_text,
                                    metavar="BOOL")
            else:
                parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                    help=help_text)
            continue
        parse = finite_float if kind is float else kind if kind in (int, str) else str
        if kind is dict:
            parse = json.loads
        parser.add_argument(flag, dest=dest, type=parse, nargs="+" if many else None, default=argparse.SUPPRESS,
                            required=required, help=help_text, metavar=f.name.upper())


def deprecated_flag(parser: argparse.ArgumentParser, old: str, field_name: str, value: Any = None) -> None:
    """Accept `old` as a spelling of `field_name`'s flag (or, with `value`, as a switch that sets
    it to `value`), printing one deprecation line when it is used."""
    new = flag_name(field_name) + (f" {value}" if value is not None else "")

    class _Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"worldloom: {option_string} is deprecated and goes in the next release; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, value if value is not None else values)

    if value is not None:
        parser.add_argument(old, dest=field_name, action=_Deprecated, nargs=0, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
        return
    target = next((a for a in parser._actions if a.dest == field_name), None)  # parse as the new flag does
    parser.add_argument(old, dest=field_name, action=_Deprecated, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        type=getattr(target, "type", None), nargs=getattr(target, "nargs", None))


@dataclasses.dataclass
class _Nested:
    kind: type
    values: dict[str, Any]


def _values(cls: type, ns: argparse.Namespace | dict, prefix: str = "") -> dict[str, Any]:
    given = vars(ns) if isinstance(ns, argparse.Namespace) else ns
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        kind, many = _base_type(hints[f.name])
        if dataclasses.is_dataclass(kind) and not prefix:
            sub = _values(kind, given, prefix=f.name)
            if sub:
                values[f.name] = _Nested(kind, sub)
            continue
        if key in given:
            value = given[key]
            values[f.name] = tuple(value) if many and value is not None else value
    return values


def dataclass_from_args(cls: type[T], ns: argparse.Namespace, **overrides: Any) -> T:
    """Build `cls` from parsed args; fields the user did not give keep their defaults.

    Raises UserError (one line) when the config rejects a value.
    """
    values = _values(cls, ns)
    missing = [flag_name(f.name) for f in dataclasses.fields(cls)
               if f.init and f.name not in values and f.name not in overrides and not _default(f)[0]]
    if missing:
        raise UserError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    for name, value in list(values.items()):
        if isinstance(value, _Nested):
            base = _nested_base(cls, name, value.kind, values)
            try:
                values[name] = dataclasses.replace(base, **value.values)
            except (ValueError, TypeError) as err:
                raise UserError(flag_words(str(err), value.kind, prefix=name)) from None
    values.update(overrides)
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise UserError(flag_words(str(err), cls)) from None


# A field's name in a message: `batch_size`, `sizes.steps`, `IDMConfig.width`, or a flag `--width`
# (check_range's, from a nested class); not part of a longer word, a flag or a dotted name.
_NAME = re.compile(r"(?<![\w.'\"-])(--)?(?:([A-Za-z]\w*)\.)?([a-z][a-z0-9_-]*)(?![\w.-]*\w)")
# A name with a bound after it is a field's wherever it stands: "need minutes >= 0, lr > 0".
_COMPARED = re.compile(r"\s*(?:[<>]=?|==|!=)")
# Where a message's subject ends: "batch_size and lr must be ...", "width 64 is not ...".
_VERB = re.compile(r"\b(?:must|is|are|has|have|should)\b|:")


def flag_words(message: str, cls: type, prefix: str = "") -> str:
    """A config's ValueError in the command line's words: each field of `cls` it names becomes the
    flag that sets it (`batch_size must be >= 1` -> `--batch-size must be >= 1`; with prefix
    `model`, `IDMConfig.width` or `--width` -> `--model.width`; `sizes.steps` -> `--sizes.steps`).
    A plain word (`width`) is taken for a field only in the subject, before the verb."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: _base_type(hints[f.name])[0] for f in dataclasses.fields(cls) if f.init}
    verb = _VERB.search(message)
    subject_end = verb.start() if verb else 0
    by_class = {kind.__name__: name for name, kind in fields.items() if dataclasses.is_dataclass(kind)}

    def replace(match: re.Match) -> str:
        dashes, owner, name = match.groups()
        field, owner = name.replace("-", "_"), by_class.get(owner, owner)  # IDMConfig.width: --model.width
        if owner in fields and not prefix:  # sizes.steps, --sizes.steps
            nested = {f.name for f in dataclasses.fields(fields[owner])} if owner in by_class.values() else ()
            return flag_name(field, owner) if field in nested else match.group(0)
        mine = owner in (cls.__name__, prefix) if owner else bool(dashes and prefix)  # Inner.width, --width in --model.*
        if field not in fields or field in by_class.values() or owner and not mine or dashes and not mine:
            return match.group(0)
        compared = _COMPARED.match(message, match.end())  # "need minutes >= 0, lr > 0"
        if mine or "_" in field or compared or match.start() < subject_end:
            return flag_name(field, prefix)
        return match.group(0)

    return _NAME.sub(replace, message)


def _nested_base(cls: type, name: str, kind: type, values: dict[str, Any]) -> Any:
    """What nested flags are applied on top of: the class's `nested_default`, the field's
    default, or the nested class's defaults."""
    hook = getattr(cls, "nested_default", None)
    if hook is not None:
        base = hook(name, {k: v for k, v in values.items() if k != name})
        if base is not None:
            return base
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    has_default, default = _default(f)
    if has_default and default is not None:
        return default
    return kind()


def to_json_dict(cfg: Any) -> dict:
    """A config as plain JSON-able data (tuples become lists), to store beside its outputs."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def parse_resolution(text: str | int) -> tuple[int, int]:
    """`--resolution` values: "128" (square) or "640x360" (width x height, as video sizes are
    written) -> (height, width) in pixels. ValueError naming the value otherwise."""
    raw = str(text).strip().lower()
    try:
        if "x" in raw:
            width, height = (int(part) for part in raw.split("x", 1))
        else:
            width = height = int(raw)
    except ValueError:
        raise ValueError(f"resolution must be N or WIDTHxHEIGHT in pixels (e.g. 128 or 640x360), got {text!r}") from None
    if min(width, height) < 1:
        raise ValueError(f"resolution must be positive, got {text!r}")
    return height, width
