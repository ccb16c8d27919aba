"""What a reader checks before it trusts a dataset's two index files: `dataset.json` and
`episodes.parquet`. Both may come from anyone (downloaded, copied, edited by hand), so every
field the format defines is checked for its type, its range and its agreement with the other
fields before a shard is opened, and a shard path must stay inside the dataset.

    from worldloom.datasets.manifest import check_manifest, committed_episodes
    check_manifest(manifest, "data/run1/dataset.json")     # UserError naming the field and value
    table = committed_episodes(episodes, manifest, "data/run1/episodes.parquet")

Checked in `dataset.json`: format, format_version, height, width, fps, codec, channels,
rows_per_group, action_space (that of format version 1), label_sources, num_episodes,
num_frames, and per shard: path (`frames/NAME.parquet`, see `worldloom.paths`), num_rows,
num_episodes, size_bytes, checksum, writer_id; paths unique; the counts add up. `config` and
`created_at` are free-form. In `episodes.parquet`: the schema, every shard path, and for the
rows of committed shards: ids unique and present, num_steps >= 1, label_source known, and each
shard's episodes tile its rows exactly (row_start 0, then each one where the last ended).
File contents (sizes, checksums, frames) are `validate`'s work: it reads every byte.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from worldloom.errors import UserError
from worldloom.paths import PLAIN_PATH, check_relative

from . import schema
from .codecs import CODECS

__all__ = ["action_space", "check_manifest", "committed_episodes", "conform", "same_values", "schema_differences",
           "MAX_SIZE_PX"]

FORMAT_NAME = "worldloom-dataset"
MAX_SIZE_PX = 4096
MAX_FPS = 1000.0
MAX_ROWS_PER_GROUP = 1_000_000
SHARD_PATH = re.compile(rf"^{schema.FRAMES_DIR}/[^/]+\.parquet$")
CHECKSUM = re.compile(r"^blake2b-128:[0-9a-f]{32}$")


def action_space(version: int = schema.FORMAT_VERSION) -> dict:
    """The action space a manifest of `version` records (VPT's buttons, camera degrees; version 2
    adds the keys that exist but are not predicted and the null-action column)."""
    space = {
        "buttons": list(schema.BUTTONS),
        "button_columns": list(schema.BUTTON_COLUMNS),
        "camera_axes": list(schema.CAMERA_AXES),
        "camera_columns": list(schema.CAMERA_COLUMNS),
        "camera_units": schema.CAMERA_UNITS,
        "alignment": schema.ACTION_ALIGNMENT,
    }
    if version >= 2:
        space.update({"extra_buttons": list(schema.EXTRA_BUTTONS),
                      "extra_button_columns": list(schema.EXTRA_BUTTON_COLUMNS),
                      "null_action_column": schema.NULL_ACTION_COLUMN})
    return space


def schema_differences(actual: pa.Schema, expected: pa.Schema = schema.FRAME_SCHEMA,
                       version: int = schema.FORMAT_VERSION) -> list[str]:
    """Human-readable differences between two schemas (names and types; nullability ignored; a type
    another Parquet tool writes for the same values, `same_values`, is no difference)."""
    out = []
    have = {f.name: f.type for f in actual}
    for field in expected:
        if field.name not in have:
            out.append(f"column {field.name!r} is missing")
        elif not same_values(have[field.name], field.type):
            out.append(f"column {field.name!r} is {have[field.name]}, expected {field.type}")
    # A column added by another tool: the readers take only the format's columns, and whether they should pass others
    # by is undecided; so said, with what keeps the added data.
    out.extend(f"column {name!r} is not part of format version {version} (added by another tool?); keep it in a "
               "file beside the dataset (joined on episode_id and step) and write the shard without it"
               for name in have if name not in expected.names)
    return out


def _kind(type_: pa.DataType) -> str:
    """The family of values a type holds, whatever its Arrow layout."""
    if pa.types.is_dictionary(type_):
        return _kind(type_.value_type)
    checks = (("string", (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)),
              ("binary", (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)),
              ("integer", (pa.types.is_integer,)), ("float", (pa.types.is_floating,)))
    for kind, tests in checks:
        if any(test(type_) for test in tests):
            return kind
    return str(type_)


def same_values(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of `actual` type holds `expected`'s values in another layout, as other Parquet tools
    write them: strings as large_string, string_view or plain (DuckDB, Spark and any writer without pyarrow's
    schema note write no dictionary type), dictionaries with other index types (pandas int8, Polars uint32),
    large_binary (Polars), large lists, other integer or float widths and integers with nulls as floats (pandas),
    and a column of nulls only.
    `conform` casts them to the documented types (an integer that does not fit is refused there)."""
    if actual == expected or pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual) and not pa.types.is_dictionary(expected):
        return same_values(actual.value_type, expected)
    if pa.types.is_dictionary(expected):
        return same_values(actual.value_type if pa.types.is_dictionary(actual) else actual, expected.value_type)
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_list_view, pa.types.is_large_list_view)
    if any(t(expected) for t in lists):
        return any(t(actual) for t in lists) and same_values(actual.value_type, expected.value_type)
    if pa.types.is_struct(expected):
        if not pa.types.is_struct(actual) or {f.name for f in actual} != {f.name for f in expected}:
            return False
        return all(same_values(actual.field(f.name).type, f.type) for f in expected)
    if _kind(expected) == "integer" and _kind(actual) == "float":  # pandas stores an integer column with nulls as float64
        return True
    return _kind(actual) == _kind(expected) and _kind(expected) in ("string", "binary", "integer", "float")


def conform(table: pa.Table, expected: pa.Schema, where: str) -> pa.Table:
    """`table` with each column of `expected` cast to its documented type (see `same_values`); a UserError
    naming `where` and the column when a value does not fit (an int64 of 300 in an int8 column)."""
    fields = {f.name: f for f in expected}
    for i, name in enumerate(table.column_names):
        column, field = table.column(i), fields.get(name)
        if field is None or table.schema.field(i) == field:
            continue
        target = field.type
        try:
            if pa.types.is_dictionary(column.type) or pa.types.is_dictionary(target):
                # via the plain values: pyarrow casts no string_view (nor a dictionary's index) straight to a dictionary
                plain = target.value_type if pa.types.is_dictionary(target) else target
                column = column.cast(column.type.value_type if pa.types.is_dictionary(column.type) else column.type)
                column = column.cast(plain).cast(target)
            else:
                column = column.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise UserError(f"{where}: column {name!r} is {table.column(i).type} and does not cast to {target} ({err}); "
                            f"write it as {target}") from None
        table = table.set_column(i, field, column)
    return table


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Fields:
    """Field checks of one JSON object, each a one-line UserError naming `where` and the field."""

    def __init__(self, where: str, data: dict, prefix: str = ""):
        self.where, self.data, self.prefix = where, data, prefix

    def fail(self, name: str, why: str) -> UserError:
        return UserError(f"{self.where}: {self.prefix}{name} {why}; restore the file from its source "
                         "(`worldloom dataset validate` lists what else is wrong)")

    def get(self, name: str) -> Any:
        if name not in self.data:
            raise self.fail(name, "is missing")
        return self.data[name]

    def int(self, name: str, low: int, high: int | None = None) -> int:
        value = self.get(name)
        if not _is_int(value) or value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise self.fail(name, f"is {_short(value)}, expected an integer {span}")
        return value

    def number(self, name: str, low: float, high: float) -> float:
        value = self.get(name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and low < value <= high):
            raise self.fail(name, f"is {_short(value)}, expected a number in ({low:g}, {high:g}]")
        return float(value)

    def equal(self, name: str, expected: Any) -> None:
        value = self.get(name)
        if type(value) is not type(expected) or value != expected:
            raise self.fail(name, f"is {_short(value)}, expected {_short(expected)}")

    def string(self, name: str, pattern: re.Pattern | None = None) -> str:
        value = self.get(name)
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            raise self.fail(name, f"is {_short(value)}, expected a string" + (f" like {pattern.pattern}" if pattern else ""))
        return value


def check_manifest(manifest: Any, where: str) -> None:
    """UserError (one line, naming `where` and the field) unless `manifest` is a well-formed
    manifest of a format version this WorldLoom reads, whose counts agree. Reads no file."""
    if not isinstance(manifest, dict):
        raise UserError(f"{where}: holds a JSON {type(manifest).__name__}, not a dataset manifest object; restore it from its source")
    f = _Fields(where, manifest)
    f.equal("format", FORMAT_NAME)
    version = f.get("format_version")
    if isinstance(version, bool) or version not in schema.READABLE_VERSIONS:
        raise f.fail("format_version", f"is {_short(version)}, expected one of {', '.join(map(str, schema.READABLE_VERSIONS))}")
    f.int("height", 8, MAX_SIZE_PX)
    f.int("width", 8, MAX_SIZE_PX)
    f.number("fps", 0.0, MAX_FPS)
    codec = f.get("codec")
    if not isinstance(codec, str) or codec not in CODECS:
        raise f.fail("codec", f"is {_short(codec)}, expected one of {', '.join(CODECS)}")
    f.equal("channels", 3)
    f.int("rows_per_group", 1, MAX_ROWS_PER_GROUP)
    f.equal("action_space", action_space(version))
    sources = f.get("label_sources")
    if not (isinstance(sources, list) and all(isinstance(s, str) and s in schema.LABEL_SOURCES for s in sources)
            and len(set(sources)) == len(sources)):
        raise f.fail("label_sources", f"is {_short(sources)}, expected distinct names from {schema.LABEL_SOURCES}")
    num_episodes = f.int("num_episodes", 0)
    num_frames = f.int("num_frames", 0)
    shards = f.get("shards")
    if not isinstance(shards, list):
        raise f.fail("shards", f"is {_short(shards)}, expected a list")
    seen: set[str] = set()
    for i, entry in enumerate(shards):
        if _entry_ok(entry) and entry["path"] not in seen:  # the common case, without building messages
            seen.add(entry["path"])
        else:
            _check_shard_entry(where, i, entry, seen)
    if sum(s["num_rows"] for s in shards) != num_frames:
        raise f.fail("num_frames", f"is {num_frames} but the shards hold {sum(s['num_rows'] for s in shards)} rows")
    if sum(s["num_episodes"] for s in shards) != num_episodes:
        raise f.fail("num_episodes", f"is {num_episodes} but the shards hold {sum(s['num_episodes'] for s in shards)}")


def _entry_ok(entry: Any) -> bool:
    """What `_check_shard_entry` checks, as one expression (a 10,000-shard manifest in ~10 ms)."""
    return (type(entry) is dict and type(entry.get("path")) is str and SHARD_PATH.match(entry["path"]) is not None
            and PLAIN_PATH.fullmatch(entry["path"]) is not None and type(entry.get("num_rows")) is int
            and entry["num_rows"] >= 1 and type(entry.get("num_episodes")) is int and entry["num_episodes"] >= 1
            and type(entry.get("size_bytes")) is int and entry["size_bytes"] >= 1
            and type(entry.get("checksum")) is str and CHECKSUM.match(entry["checksum"]) is not None
            and type(entry.get("writer_id")) is str)


def _check_shard_entry(where: str, i: int, entry: Any, seen: set[str]) -> None:
    prefix = f"shards[{i}]."
    if not isinstance(entry, dict):
        raise UserError(f"{where}: shards[{i}] is {_short(entry)}, expected an object; restore the file from its source")
    f = _Fields(where, entry, prefix)
    path = check_relative(f.get("path"), source=where, field=f"{prefix}path")
    if not SHARD_PATH.match(path):
        raise f.fail("path", f"is {path!r}, expected {schema.FRAMES_DIR}/NAME.parquet")
    if path in seen:
        raise f.fail("path", f"{path!r} is listed twice")
    seen.add(path)
    f.int("num_rows", 1)
    f.int("num_episodes", 1)
    f.int("size_bytes", 1)
    f.string("checksum", CHECKSUM)
    f.string("writer_id")


def committed_episodes(table: pa.Table, manifest: dict, where: str) -> pa.Table:
    """The rows of `episodes.parquet` whose shard the (checked) manifest lists, after checking the
    whole table: schema, every shard path, and the committed rows against the manifest.

    Rows of shards the manifest does not list are a crash between the two renames of a commit:
    not data, skipped (their shard paths are still checked)."""
    differences = schema_differences(table.schema, schema.EPISODE_SCHEMA)
    if differences:
        raise UserError(f"{where}: {differences[0]}; restore the file from its source")
    table = conform(table, schema.EPISODE_SCHEMA, where)
    if table.column("shard").null_count:
        raise UserError(f"{where}: shard is null in {table.column('shard').null_count} row(s); restore the file from its source")
    paths = [s["path"] for s in manifest["shards"]]  # checked by check_manifest: only the others are checked here
    for rel in set(pc.unique(table.column("shard")).to_pylist()) - set(paths):
        check_relative(rel, source=where, field="shard")
    committed = table.filter(pc.is_in(table.column("shard"), value_set=pa.array(paths, pa.string())))
    ids = committed.column("episode_id")
    if ids.null_count or len(pc.unique(ids)) != len(ids):  # (count_distinct is 25x slower)
        counts = pc.value_counts(ids)
        twice = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
        raise UserError(f"{where}: episode_id {(twice or [None])[0]!r} is " + ("listed twice" if twice else "null")
                        + "; restore the file from its source")
    steps, starts = committed.column("num_steps"), committed.column("row_start")
    bad = pc.or_kleene(pc.less(steps, 1), pc.less(starts, 0)).fill_null(True)
    if pc.any(bad).as_py():
        row = committed.filter(bad).slice(0, 1).to_pylist()[0]
        raise UserError(f"{where}: episode {row['episode_id']!r} has num_steps {row['num_steps']!r} and row_start "
                        f"{row['row_start']!r}; expected num_steps >= 1, row_start >= 0")
    known = pc.is_in(committed.column("label_source"), value_set=pa.array(schema.LABEL_SOURCES)).fill_null(False)
    if pc.any(pc.invert(known)).as_py():  # any() of no rows is null: falsy
        row = committed.filter(pc.invert(known)).slice(0, 1).to_pylist()[0]
        raise UserError(f"{where}: episode {row['episode_id']!r} has label_source {_short(row['label_source'])}, "
                        f"expected one of {', '.join(schema.LABEL_SOURCES)}")
    _check_tiling(where, manifest["shards"], pc.index_in(committed.column("shard"), value_set=pa.array(paths, pa.string())),
                  starts, steps, ids)
    if len(ids) != manifest["num_episodes"]:
        raise UserError(f"{where}: lists {len(ids)} committed episodes, dataset.json says {manifest['num_episodes']}; "
                        "restore the two files from the same copy")
    return committed


def _check_tiling(where: str, entries: list[dict], shard: pa.ChunkedArray, starts: pa.ChunkedArray,
                  steps: pa.ChunkedArray, ids: pa.ChunkedArray) -> None:
    """Each shard's episodes cover its rows exactly: 0..a, a..b, ..., ..num_rows (vectorised:
    a dataset of 100,000 episodes is checked in a fraction of a second)."""
    shard_i = shard.to_numpy().astype(np.int64)
    start, num = starts.to_numpy().astype(np.int64), steps.to_numpy().astype(np.int64)
    order = np.lexsort((start, shard_i))
    shard_i, start, num = shard_i[order], start[order], num[order]
    first = np.r_[True, shard_i[1:] != shard_i[:-1]] if len(order) else np.zeros(0, bool)
    expected = np.where(first, 0, np.r_[0, (start + num)[:-1]])
    wrong = np.flatnonzero(start != expected)
    if wrong.size:
        k = int(wrong[0])
        raise UserError(f"{where}: episode {ids[int(order[k])].as_py()!r} starts at row {start[k]} of "
                        f"{entries[shard_i[k]]['path']}, expected {expected[k]} (episodes of a shard follow each "
                        "other); restore the file from its source")
    counts = np.bincount(shard_i, minlength=len(entries))
    ends = np.zeros(len(entries), np.int64)
    if len(order):
        last = np.r_[shard_i[1:] != shard_i[:-1], True]
        ends[shard_i[last]] = (start + num)[last]
    for i, entry in enumerate(entries):
        if ends[i] != entry["num_rows"] or counts[i] != entry["num_episodes"]:
            raise UserError(f"{where}: {counts[i]} episode(s) cover {ends[i]} rows of {entry['path']}, dataset.json says "
                            f"{entry['num_episodes']} episode(s) and {entry['num_rows']} rows; restore the two files "
                            "from the same copy")
