"""Write episodes into a dataset: `DatasetWriter`, `commit_shards`, `committed_episode_ids`.

    from worldloom.datasets import DatasetWriter
    with DatasetWriter("data/run1", height=64, width=64, fps=20) as w:
        w.add_episode("ep-000", frames, buttons=buttons, camera=camera)

A writer streams episodes into its own shard files (`frames/part-<writer_id>-<n>.parquet`),
each written under a hidden temporary name and renamed when whole. A shard enters the dataset
only when it is committed: its episodes are appended to `episodes.parquet` and the shard to
`dataset.json`, both rewritten atomically under a lock. With `autocommit=False` (Ray actors) the
writer only writes shards and returns their `ShardInfo`; the driver calls `commit_shards`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from worldloom.errors import UserError
from worldloom.io import json_text
from worldloom.paths import redact_json

from . import codecs, schema, storage
from .manifest import SHARD_PATH, action_space, committed_episodes

DEFAULT_ROWS_PER_GROUP = 256  # "a few hundred frames of one episode" (DESIGN section 5)
DEFAULT_SHARD_MAX_FRAMES = 20_000


@dataclass(frozen=True)
class ShardInfo:
    """One finished shard, small and JSON-able: what a worker hands the driver to commit."""

    path: str  # relative to the dataset root, e.g. "frames/part-a1b2c3-00000.parquet"
    num_rows: int
    size_bytes: int
    checksum: str  # "blake2b-128:<hex>" of the file's bytes
    writer_id: str
    episodes: tuple[dict, ...]  # rows for episodes.parquet

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "episodes": list(self.episodes)}

    @classmethod
    def from_json(cls, data: dict) -> ShardInfo:
        return cls(**{**data, "episodes": tuple(data["episodes"])})

    def manifest_entry(self) -> dict:
        return {
            "path": self.path, "num_rows": self.num_rows, "num_episodes": len(self.episodes),
            "size_bytes": self.size_bytes, "checksum": self.checksum, "writer_id": self.writer_id,
        }


def file_checksum(fs: pafs.FileSystem, path: str) -> tuple[str, int]:
    """("blake2b-128:<hex>", size in bytes) of a file."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with fs.open_input_stream(path) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return "blake2b-128:" + digest.hexdigest(), size


def new_manifest(spec: storage.FrameSpec, config: dict | None, rows_per_group: int) -> dict:
    return {
        "format": "worldloom-dataset",
        "format_version": schema.FORMAT_VERSION,
        **spec.to_json(),
        "channels": 3,
        "rows_per_group": rows_per_group,
        "action_space": action_space(),
        "state_columns": list(schema.STATE_COLUMNS),
        "caption_column": schema.CAPTION_COLUMN,
        "label_sources": [],
        "num_episodes": 0,
        "num_frames": 0,
        "shards": [],
        "config": config,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def open_or_create(loc: storage.Location, spec: storage.FrameSpec, config: dict | None, rows_per_group: int) -> dict:
    """The dataset's manifest, created if absent; UserError if its spec differs from `spec`.
    URIs in `config` are stored with their credentials redacted (worldloom.paths.redact_json)."""
    config = redact_json(config)
    with storage.locked(loc):
        manifest = storage.read_manifest(loc)
        if manifest is None:
            loc.fs.create_dir(loc.join(schema.FRAMES_DIR), recursive=True)
            manifest = new_manifest(spec, config, rows_per_group)
            storage.write_manifest(loc, manifest)
            return manifest
        storage.check_spec(loc, manifest, spec)
        if config is not None and config != manifest.get("config") and config not in manifest.get("appended_configs", []):
            manifest.setdefault("appended_configs", []).append(config)
            storage.write_manifest(loc, manifest)
        return manifest


def committed_episode_ids(root: str | os.PathLike | storage.Location, filesystem: pafs.FileSystem | None = None) -> set[str]:
    """Episode ids already committed in the dataset at `root` (a path, a URI or a storage.Location; empty
    if there is none yet)."""
    loc = storage.resolve(root, filesystem)
    manifest = storage.read_manifest(loc)
    if manifest is None:
        return set()
    return set(_committed_episodes(loc, manifest).column("episode_id").to_pylist())


def content_fingerprint(root: str | os.PathLike | storage.Location, filesystem: pafs.FileSystem | None = None) -> str:
    """A short hash of what the dataset at `root` holds: its committed episodes' rows (id, shard, first row,
    steps, label source and model, split, ...) and its shards' paths, row counts and checksums, read from
    dataset.json and episodes.parquet alone (no frame is read: cheap at any size). Episodes added, replaced,
    relabeled or removed change it; reading or validating the dataset does not. "" where there is no dataset."""
    loc = storage.resolve(root, filesystem)
    manifest = storage.read_manifest(loc)
    if manifest is None:
        return ""
    rows = sorted(_committed_episodes(loc, manifest).to_pylist(), key=lambda r: (r["episode_id"], r["shard"]))
    shards = sorted((s["path"], s.get("num_rows"), s.get("checksum")) for s in manifest["shards"])
    blob = json_text({"episodes": rows, "shards": shards}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _committed_episodes(loc: storage.Location, manifest: dict) -> pa.Table:
    """Rows of episodes.parquet whose shard is in the manifest (a crash between the two atomic
    renames of a commit can leave rows of an uncommitted shard: they are not part of the data)."""
    return committed_episodes(storage.read_episodes(loc), manifest, loc.uri_of(schema.EPISODES_NAME))


def commit_shards(root: str | os.PathLike | storage.Location, infos: list[ShardInfo], filesystem: pafs.FileSystem | None = None,
                  replace: Iterable[str] = ()) -> dict:
    """Add finished shards to the manifest (idempotent per shard path); returns the manifest.

    `replace`: committed episode ids that the new shards supersede (a relabeled input). They leave
    the dataset in the same manifest write that adds the new shards, so a reader sees the old
    episodes or the new ones, never both and never neither (with no shards given they just leave).
    Their shards must hold nothing else; they are deleted after the commit.
    """
    loc = storage.resolve(root, filesystem)
    infos = [ShardInfo.from_json(i) if isinstance(i, dict) else i for i in infos]
    with storage.locked(loc):
        manifest = storage.read_manifest(loc)
        if manifest is None:
            raise UserError(f"{loc.uri}: no {schema.MANIFEST_NAME} here; open a DatasetWriter on it first")
        known = {s["path"]: s for s in manifest["shards"]}
        new = []
        for info in infos:
            if info.path in known:
                if known[info.path]["checksum"] != info.checksum:
                    raise UserError(f"{loc.uri_of(info.path)}: already committed with a different checksum; give the writer a new writer_id")
                continue
            path = loc.member(info.path, source=f"shard to commit into {loc.uri}", field="path")
            if not SHARD_PATH.match(info.path):
                raise UserError(f"{loc.uri}: shard to commit has path {info.path!r}, expected {schema.FRAMES_DIR}/NAME.parquet")
            if not storage.exists(loc, path):
                raise UserError(f"{loc.uri_of(info.path)}: shard to commit does not exist; re-run the episodes it held")
            new.append(info)
        if not new and (infos or not replace):  # committed already (a commit with no shards only retires)
            return manifest
        episodes = _committed_episodes(loc, manifest)
        retired_ids = set(replace) & set(episodes.column("episode_id").to_pylist())
        if not new and not retired_ids:
            return manifest
        retired_shards = _retired_shards(loc, episodes, retired_ids)
        kept = episodes.filter(pa.compute.invert(pa.compute.is_in(episodes.column("episode_id"),
                                                                  value_set=pa.array(sorted(retired_ids), pa.string()))))
        seen = set(kept.column("episode_id").to_pylist())
        rows = [row for info in new for row in info.episodes]
        for info in new:
            for row in info.episodes:
                if row["episode_id"] in seen:
                    raise UserError(
                        f"{loc.uri_of(info.path)}: episode {row['episode_id']!r} is already in the dataset; "
                        f"skip committed episodes (committed_episode_ids) or use new ids"
                    )
                seen.add(row["episode_id"])
        added = pa.Table.from_pylist(rows, schema=schema.EPISODE_SCHEMA)
        # Old and new rows both stay until the manifest (the commit point) names the new shards:
        # only rows of listed shards belong to the dataset, so a crash in between loses nothing.
        storage.write_table_atomic(loc, loc.join(schema.EPISODES_NAME), pa.concat_tables([episodes, added]))
        manifest["shards"] = [s for s in manifest["shards"] if s["path"] not in retired_shards]
        manifest["shards"].extend(info.manifest_entry() for info in new)
        manifest["num_frames"] = sum(s["num_rows"] for s in manifest["shards"])
        manifest["num_episodes"] = len(seen)
        sources = set(kept.column("label_source").to_pylist()) | {r["label_source"] for r in rows}
        manifest["label_sources"] = [s for s in schema.LABEL_SOURCES if s in sources]
        storage.write_manifest(loc, manifest)
        if retired_shards:
            storage.write_table_atomic(loc, loc.join(schema.EPISODES_NAME), pa.concat_tables([kept, added]))
            for rel in retired_shards:
                try:
                    loc.fs.delete_file(loc.join(rel))
                except OSError:
                    pass  # not listed any more: `validate` reports it as an extra file to delete
        return manifest


def _retired_shards(loc: storage.Location, episodes: pa.Table, retired_ids: set[str]) -> set[str]:
    """The shards of the retired episodes; UserError if one of them also holds another episode."""
    shards = set()
    for eid, shard in zip(episodes.column("episode_id").to_pylist(), episodes.column("shard").to_pylist(), strict=True):
        if eid in retired_ids:
            shards.add(shard)
    for eid, shard in zip(episodes.column("episode_id").to_pylist(), episodes.column("shard").to_pylist(), strict=True):
        if shard in shards and eid not in retired_ids:
            raise UserError(f"{loc.uri_of(shard)}: holds episode {eid!r} besides the ones to replace; "
                            "a replaced episode must have shards of its own")
    return shards


def _as_array(name: str, value: Any, shape: tuple[int, ...], dtype: Any, episode_id: str) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        raise UserError(f"episode {episode_id!r}: {name} has shape {array.shape}, expected {shape}")
    return array.astype(dtype, copy=False)


def build_frame_table(
    spec: storage.FrameSpec, episode_id: str, frames: np.ndarray, buttons: Any, camera: Any, rewards: Any,
    terminated: Any, truncated: Any, label_source: str, label_model: str | None, label_confidence: Any,
    start: int = 0, extra_buttons: Any = None, null_action: Any = None, state: dict | None = None,
    caption: Any = None, encode: bool = True,
) -> pa.Table:
    """Rows of steps `start, start + 1, ...` of one episode (format version 3), checked against the
    spec; UserError naming the bad argument. `encode` False leaves the frame cells empty, for a caller
    that encodes the frames itself (add_episode_parts: h264 chunks cut at the episode's steps). `extra_buttons` (T, 3) holds ESC, swapHands, pickItem;
    `state` maps `state_*` column names (or the names without the prefix) to T values each;
    `caption` holds T strings (None: unknown), each row's clip caption (datasets/captions.py)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (spec.height, spec.width, 3) or frames.dtype != np.uint8:
        raise UserError(
            f"episode {episode_id!r}: frames are {frames.dtype} {frames.shape}, the dataset needs uint8 "
            f"(T, {spec.height}, {spec.width}, 3); resize the frames or write to a dataset of that size"
        )
    num = frames.shape[0]
    if num == 0:
        raise UserError(f"episode {episode_id!r}: has no frames")
    if label_source not in schema.LABEL_SOURCES:
        raise UserError(f"episode {episode_id!r}: label_source must be one of {schema.LABEL_SOURCES}, got {label_source!r}")
    columns: dict[str, pa.Array] = {
        "episode_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(num, np.int32)), pa.array([episode_id])),
        "step": pa.array(np.arange(start, start + num, dtype=np.int32)),
        "frame": codecs.encode_frames(spec.codec, frames) if encode else pa.array([b""] * num, pa.binary()),
    }
    if label_source == "none":
        if buttons is not None or camera is not None:
            raise UserError(f"episode {episode_id!r}: label_source 'none' but actions were given; use 'env' or 'idm'")
        for c in schema.BUTTON_COLUMNS:
            columns[c] = pa.nulls(num, pa.bool_())
        for c in schema.CAMERA_COLUMNS:
            columns[c] = pa.nulls(num, pa.float32())
    else:
        if buttons is None or camera is None:
            raise UserError(f"episode {episode_id!r}: label_source {label_source!r} needs buttons and camera")
        b = _as_array("buttons", buttons, (num, schema.NUM_BUTTONS), np.float32, episode_id)
        cam = _as_array("camera", camera, (num, 2), np.float32, episode_id)
        if not np.isin(b, (0.0, 1.0)).all():
            raise UserError(f"episode {episode_id!r}: buttons must be 0/1, got {np.unique(b)[:5]}")
        if not (np.isfinite(cam).all() and (np.abs(cam) <= schema.CAMERA_LIMIT).all()):
            raise UserError(f"episode {episode_id!r}: camera must be finite degrees in [-180, 180]")
        for i, c in enumerate(schema.BUTTON_COLUMNS):
            columns[c] = pa.array(b[:, i] > 0.5)
        for i, c in enumerate(schema.CAMERA_COLUMNS):
            columns[c] = pa.array(cam[:, i])
    if rewards is None:
        columns["reward"] = pa.nulls(num, pa.float32())
    else:
        r = _as_array("rewards", rewards, (num,), np.float32, episode_id)
        if not np.isfinite(r).all():  # a trainer reading it would stop on a NaN loss far from this file
            i = int(np.flatnonzero(~np.isfinite(r))[0])
            raise UserError(f"episode {episode_id!r}: rewards must be finite numbers (None where unknown), got "
                            f"{r[i]} at step {start + i}")
        columns["reward"] = pa.array(r)
    for name, value in (("terminated", terminated), ("truncated", truncated)):
        columns[name] = pa.array(np.zeros(num, bool) if value is None else _as_array(name, value, (num,), bool, episode_id))
    columns["label_source"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(num, np.int32)), pa.array([label_source]))
    columns["label_model"] = pa.array([label_model] * num, pa.string())
    if label_confidence is None:
        columns["label_confidence"] = pa.nulls(num, pa.float32())
    else:
        columns["label_confidence"] = pa.array(_as_array("label_confidence", label_confidence, (num,), np.float32, episode_id))
    if label_source == "none" and (extra_buttons is not None or null_action is not None):
        raise UserError(f"episode {episode_id!r}: label_source 'none' but extra buttons or null_action were given")
    if extra_buttons is None:
        for c in schema.EXTRA_BUTTON_COLUMNS:
            columns[c] = pa.nulls(num, pa.bool_())
    else:
        extra = _as_array("extra_buttons", extra_buttons, (num, len(schema.EXTRA_BUTTONS)), np.float32, episode_id)
        for i, c in enumerate(schema.EXTRA_BUTTON_COLUMNS):
            columns[c] = pa.array(extra[:, i] > 0.5)
    columns[schema.NULL_ACTION_COLUMN] = (pa.nulls(num, pa.bool_()) if null_action is None
                                          else pa.array(_as_array("null_action", null_action, (num,), bool, episode_id)))
    columns.update(state_columns(state, num, episode_id, start))
    columns[schema.CAPTION_COLUMN] = caption_column(caption, num, episode_id)
    return pa.Table.from_pydict(columns, schema=schema.FRAME_SCHEMA)


def caption_column(caption: Any, num: int, episode_id: str) -> pa.Array:
    """The `caption` array of `num` rows from T strings or None (all null)."""
    if caption is None:
        return pa.nulls(num, pa.string())
    try:
        array = caption if isinstance(caption, pa.Array) else pa.array(list(caption), pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        raise UserError(f"episode {episode_id!r}: caption must be strings or None per step ({err})") from None
    if len(array) != num:
        raise UserError(f"episode {episode_id!r}: caption has {len(array)} values, expected {num}")
    return array


def state_columns(state: dict | None, num: int, episode_id: str, start: int = 0) -> dict[str, pa.Array]:
    """Typed `state_*` arrays of `num` rows from {name: values} (None, NaN: unknown -> null; infinite: refused)."""
    types = dict(schema.STATE_FIELDS)
    given = {}
    for key, values in (state or {}).items():
        name = key if key.startswith("state_") else f"state_{key}"
        if name not in types:
            raise UserError(f"episode {episode_id!r}: unknown state column {key!r}; known: {', '.join(schema.STATE_COLUMNS)}")
        given[name] = values
    out = {}
    for name, type_ in schema.STATE_FIELDS:
        values = given.get(name)
        if values is None:
            out[name] = pa.nulls(num, type_)
            continue
        try:
            array = values if isinstance(values, pa.Array) else pa.array(values, type_, from_pandas=True)
            array = array.cast(type_)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
            raise UserError(f"episode {episode_id!r}: {name} cannot be stored as {type_} ({err})") from None
        if len(array) != num:
            raise UserError(f"episode {episode_id!r}: {name} has {len(array)} values, expected {num}")
        bad = nonfinite_rows(array)
        if bad.size:  # a position read from it would go NaN far from this file (the odometer, captions)
            raise UserError(f"episode {episode_id!r}: {name} must be finite numbers (None or NaN where unknown), "
                            f"got {array[int(bad[0])].as_py()} at step {start + int(bad[0])}")
        out[name] = array
    return out


def refuse_nonfinite(ds, episode_id: str, table: pa.Table, noun: str) -> None:
    """UserError (one line naming the dataset, episode, step and value) for the first column of `table` (one
    episode's rows of `ds`) holding NaN or an infinity, not null: corrupt data (a tool that wrote the file
    another way), which a trainer read as a NaN loss or an episode left out without a word. `noun` names a
    value ("a reward", "a position")."""
    for name in table.column_names:
        bad = nonfinite_rows(table.column(name))
        if bad.size:
            raise UserError(f"{ds.location.uri}: episode {episode_id!r} step {int(bad[0])}: {name} is "
                            f"{table.column(name)[int(bad[0])].as_py()} ({bad.size} step(s)); {noun} is a finite number, "
                            f"null where unknown: fix the value, or run `worldloom dataset validate {ds.location.arg}` "
                            "for every such row")


def nonfinite_rows(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The rows of a floating-point column that hold NaN or an infinity, not null (unknown); none for other types."""
    if not pa.types.is_floating(array.type):
        return np.zeros(0, np.int64)
    return np.flatnonzero(~np.isfinite(array.fill_null(0.0).to_numpy(zero_copy_only=False)))


def to_version(table: pa.Table, version: int, episode_id: str) -> pa.Table:
    """Current-version rows as rows of `version`: an older dataset takes them only if every column
    added after its version is null (UserError naming the column otherwise). Captions are the
    exception: they are made from the state columns (datasets/captions.py), so an older dataset
    drops them and loses nothing (`worldloom dataset merge OLD --out NEW` upgrades and captions it)."""
    if version == schema.FORMAT_VERSION:
        return table
    for added, names in schema.COLUMNS_ADDED.items():
        for name in names:
            if (added > version and name != schema.CAPTION_COLUMN and name in table.column_names
                    and table.column(name).null_count != table.num_rows):
                raise UserError(f"episode {episode_id!r} has {name} values, which a format version {version} dataset "
                                f"cannot hold; write to a new directory (version {schema.FORMAT_VERSION}) or upgrade this "
                                "one with `worldloom dataset merge OLD --out NEW`")
    return table.select(schema.frame_schema(version).names)


DICTIONARY_COLUMNS = ("episode_id", "label_source", "label_model", "state_held_item", "state_target_block", "state_biome",
                      schema.CAPTION_COLUMN)


def upgrade_table(table: pa.Table) -> pa.Table:
    """Frame rows of any readable version as current-version rows (the columns older versions lack as nulls)."""
    missing = [f for f in schema.FRAME_SCHEMA if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(schema.FRAME_SCHEMA.names)


def parquet_options(codec: str, frame_schema: pa.Schema = schema.FRAME_SCHEMA) -> dict:
    """ParquetWriter keyword arguments for frame shards of `codec`."""
    frame_compression = codecs.get_codec(codec).parquet_compression
    names = frame_schema.names
    return {
        "compression": {n: (frame_compression if n == "frame" else "zstd") for n in names},
        "compression_level": {n: 3 for n in names if (frame_compression if n == "frame" else "zstd") == "zstd"},
        "use_dictionary": [n for n in DICTIONARY_COLUMNS if n in names],
        "write_statistics": [n for n in names if n != "frame"],  # min/max of image bytes is noise
    }


class DatasetWriter:
    """Appends whole episodes to a dataset at a local path or URI, in this writer's own shards."""

    def __init__(
        self, root: str | os.PathLike | storage.Location, height: int, width: int, fps: float = 20, codec: str | None = None,
        config: dict | None = None, writer_id: str | None = None, autocommit: bool = True,
        filesystem: pafs.FileSystem | None = None, rows_per_group: int = DEFAULT_ROWS_PER_GROUP,
        shard_max_frames: int = DEFAULT_SHARD_MAX_FRAMES,
    ):
        self.location = storage.resolve(root, filesystem)
        existing = storage.read_manifest(self.location)
        if codec is None:  # an existing dataset keeps its codec; a new one gets the default
            codec = existing["codec"] if existing else codecs.DEFAULT_CODEC
        try:
            self.spec = storage.FrameSpec(height=height, width=width, fps=fps, codec=codec)
        except ValueError as err:
            raise UserError(f"{self.location.uri}: {err}") from None
        if rows_per_group < 1 or shard_max_frames < 1:
            raise UserError(f"rows_per_group and shard_max_frames must be >= 1, got {rows_per_group}, {shard_max_frames}")
        chunk = codecs.get_codec(codec).chunk_frames  # row groups hold whole chunks
        rows_per_group = -(-rows_per_group // chunk) * chunk
        self.manifest = open_or_create(self.location, self.spec, config, rows_per_group)
        self.version = storage.version_of(self.manifest)  # appending keeps the dataset's format version
        self.frame_schema = schema.frame_schema(self.version)
        self.writer_id = writer_id or f"{socket.gethostname()[:16]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if not all(c.isalnum() or c in "-_." for c in self.writer_id):
            raise UserError(f"writer_id may hold letters, digits, '-', '_', '.', got {self.writer_id!r}")
        self.autocommit = autocommit
        self.rows_per_group = rows_per_group
        self.shard_max_frames = shard_max_frames
        self._known_ids = committed_episode_ids(self.location)
        self._next_seq = self._first_free_seq()
        self._shard: dict | None = None  # the open shard: path, tmp, stream, writer, rows, episodes
        self._unreported: list[ShardInfo] = []
        self.shards: list[ShardInfo] = []

    def _first_free_seq(self) -> int:
        selector = pafs.FileSelector(self.location.join(schema.FRAMES_DIR), allow_not_found=True)
        prefix = f"part-{self.writer_id}-"
        seqs = [-1]
        for info in self.location.fs.get_file_info(selector):
            name = posixpath.basename(info.path)
            if name.startswith(prefix) and name.endswith(".parquet"):
                stem = name[len(prefix):-len(".parquet")]
                if stem.isdigit():
                    seqs.append(int(stem))
        return max(seqs) + 1

    def _open_shard(self) -> dict:
        rel = f"{schema.FRAMES_DIR}/part-{self.writer_id}-{self._next_seq:05d}.parquet"
        self._next_seq += 1
        path = self.location.join(rel)
        tmp = storage.tmp_name(path)
        stream = self.location.fs.open_output_stream(tmp)
        writer = pq.ParquetWriter(stream, self.frame_schema, **parquet_options(self.spec.codec, self.frame_schema))
        return {"rel": rel, "path": path, "tmp": tmp, "stream": stream, "writer": writer, "rows": 0, "episodes": []}

    def add_episode(
        self, episode_id: str, frames: np.ndarray, buttons: Any = None, camera: Any = None, rewards: Any = None,
        terminated: Any = None, truncated: Any = None, label_source: str | None = None,
        label_model: str | None = None, label_confidence: Any = None, env: str | None = None,
        env_config: dict | None = None, seed: int | None = None, player: str | None = None, split: str | None = "train",
        extra_buttons: Any = None, null_action: Any = None, state: dict | None = None, caption: Any = None,
    ) -> None:
        """Append one whole episode: frames `(T, H, W, 3)` uint8, buttons `(T, 20)`, camera `(T, 2)` degrees;
        optionally extra_buttons `(T, 3)` (ESC, swapHands, pickItem), null_action `(T,)`, state
        `{column: (T,) values}` (format version 2) and caption `(T,)` strings (version 3)."""
        episode_id = self._check_new_id(episode_id)
        if label_source is None:
            label_source = "none" if buttons is None else "env"
        table = build_frame_table(self.spec, episode_id, frames, buttons, camera, rewards, terminated, truncated,
                                  label_source, label_model, label_confidence, 0, extra_buttons, null_action, state,
                                  caption)
        self._write_episode(to_version(table, self.version, episode_id),
                            self._episode_row(episode_id, label_source, label_model, env, env_config, seed, player, split))

    def add_episode_parts(
        self, episode_id: str, parts: Iterable[dict], label_source: str | None = None, label_model: str | None = None,
        env: str | None = None, env_config: dict | None = None, seed: int | None = None, player: str | None = None,
        split: str | None = "train",
    ) -> int:
        """Append one episode streamed in parts: each part is a dict of `add_episode`'s per-step
        arguments (frames, buttons, camera, rewards, terminated, truncated, label_confidence,
        extra_buttons, null_action, state, caption) for the next steps, of any sizes: the episode is
        stored as one `add_episode` call would store it. Only one part (and, for h264, the steps of
        the last that do not fill a 32-step chunk) is in memory at a time.
        The episode gets a shard of its own; if a part fails, nothing of the episode is written
        and the error propagates. `env_config` may be a callable, called once the last part is
        written (to record what was learned while reading). Returns the number of steps."""
        episode_id = self._check_new_id(episode_id)
        if self._shard is not None and self._shard["rows"]:
            self._close_shard()  # an episode that fails takes no other episode's rows with it
        # A chunked codec (h264: 32 steps a stream) is encoded here in whole chunks of the episode,
        # steps 0, C, 2C, ..., as add_episode stores it, whatever the parts' sizes: a reader decodes
        # a clip from the chunk start its first step falls after. The rows of a part not yet encoded
        # (fewer than C steps) wait for the next part.
        chunk = codecs.get_codec(self.spec.codec).chunk_frames
        held: list[tuple[pa.Table, np.ndarray]] = []  # rows (frame cells empty) and their frames, not yet written
        num = 0
        try:
            for part in parts:
                part = dict(part)
                source = label_source or ("none" if part.get("buttons") is None else "env")
                label_source = source
                frames = part.pop("frames")
                table = build_frame_table(
                    self.spec, episode_id, frames, part.pop("buttons", None), part.pop("camera", None),
                    part.pop("rewards", None), part.pop("terminated", None), part.pop("truncated", None), source,
                    label_model, part.pop("label_confidence", None), num, part.pop("extra_buttons", None),
                    part.pop("null_action", None), part.pop("state", None), part.pop("caption", None),
                    encode=chunk == 1)
                if part:
                    raise UserError(f"episode {episode_id!r}: unknown part field(s) {sorted(part)}")
                num += table.num_rows
                if chunk == 1:
                    self._write_part(table, episode_id)
                else:
                    held.append((table, np.asarray(frames)))
                    held = self._write_chunks(held, chunk, episode_id, last=False)
            if held:
                self._write_chunks(held, chunk, episode_id, last=True)
            if not num:
                raise UserError(f"episode {episode_id!r}: has no frames")
        except BaseException:
            self.abort()
            raise
        if callable(env_config):
            env_config = env_config()
        shard = self._shard
        row = self._episode_row(episode_id, label_source, label_model, env, env_config, seed, player, split)
        row.update(num_steps=num, shard=shard["rel"], row_start=shard["rows"])
        shard["episodes"].append({name: row.get(name) for name in schema.EPISODE_SCHEMA.names})
        shard["rows"] += num
        self._known_ids.add(episode_id)
        if shard["rows"] >= self.shard_max_frames:
            self._close_shard()
        return num

    def _write_part(self, table: pa.Table, episode_id: str) -> None:
        """Append rows of the episode being streamed to the open shard (opened if none)."""
        if self._shard is None:
            self._shard = self._open_shard()
        self._shard["writer"].write_table(to_version(table, self.version, episode_id), row_group_size=self.rows_per_group)

    def _write_chunks(self, held: list[tuple[pa.Table, np.ndarray]], chunk: int, episode_id: str,
                      last: bool) -> list[tuple[pa.Table, np.ndarray]]:
        """Encode and write the whole `chunk`-step chunks of `held` (every step when `last`); returns
        the rows left over: fewer than `chunk` steps, starting at a chunk boundary of the episode."""
        table = pa.concat_tables([t for t, _ in held])
        frames = np.concatenate([f for _, f in held]) if len(held) > 1 else held[0][1]
        ready = table.num_rows if last else table.num_rows // chunk * chunk
        if ready:
            rows = table.slice(0, ready)
            column = rows.schema.get_field_index("frame")
            self._write_part(rows.set_column(column, rows.schema.field(column), codecs.encode_frames(self.spec.codec, frames[:ready])),
                             episode_id)
        # a copy: the caller may reuse its frame buffer for the next part
        return [(table.slice(ready), frames[ready:].copy())] if ready < table.num_rows else []

    def _check_new_id(self, episode_id: str) -> str:
        episode_id = str(episode_id)
        if episode_id in self._known_ids:
            raise UserError(f"{self.location.uri}: episode {episode_id!r} is already in the dataset or this writer; use a new id")
        return episode_id

    @staticmethod
    def _episode_row(episode_id: str, label_source: str, label_model: str | None, env: str | None,
                     env_config: dict | None, seed: int | None, player: str | None, split: str | None) -> dict:
        return {
            "episode_id": episode_id, "env": env,
            "env_config": None if env_config is None else json_text(env_config, indent=None, sort_keys=True),
            "seed": None if seed is None else int(seed), "player": player, "label_source": label_source,
            "label_model": label_model, "split": split,
        }

    def release_ids(self, episode_ids: Iterable[str]) -> None:
        """Let this writer write `episode_ids` again: the commit of its shards replaces them
        (`commit_shards(..., replace=episode_ids)`)."""
        self._known_ids.difference_update(episode_ids)

    def add_encoded_episode(self, table: pa.Table, episode: dict) -> None:
        """Append one episode's rows as they are stored (frames stay encoded: merge and split
        copy bytes, never re-encode). `episode` is its episodes.parquet row; shard fields are set here."""
        episode_id = episode["episode_id"]
        if episode_id in self._known_ids:
            raise UserError(f"{self.location.uri}: episode {episode_id!r} is already in the dataset or this writer; use a new id")
        steps = table.column("step").to_numpy(zero_copy_only=False)
        if not np.array_equal(steps, np.arange(table.num_rows)):
            raise UserError(f"episode {episode_id!r}: steps are not 0..{table.num_rows - 1} in order; run `worldloom dataset validate`")
        self._write_episode(to_version(upgrade_table(table), self.version, episode_id).cast(self.frame_schema), dict(episode))

    def _write_episode(self, table: pa.Table, episode: dict) -> None:
        if self._shard is None:
            self._shard = self._open_shard()
        shard = self._shard
        shard["writer"].write_table(table, row_group_size=self.rows_per_group)
        episode.update(num_steps=table.num_rows, shard=shard["rel"], row_start=shard["rows"])
        shard["episodes"].append({name: episode.get(name) for name in schema.EPISODE_SCHEMA.names})
        shard["rows"] += table.num_rows
        episode_id = episode["episode_id"]
        self._known_ids.add(episode_id)
        if shard["rows"] >= self.shard_max_frames:
            self._close_shard()

    def _close_shard(self) -> None:
        shard, self._shard = self._shard, None
        if shard is None:
            return
        shard["writer"].close()
        shard["stream"].close()
        fs = self.location.fs
        checksum, size = file_checksum(fs, shard["tmp"])
        while storage.exists(self.location, shard["path"]):  # another writer took the name: never overwrite
            shard["rel"] = f"{schema.FRAMES_DIR}/part-{self.writer_id}-{self._next_seq:05d}.parquet"
            shard["path"] = self.location.join(shard["rel"])
            self._next_seq += 1
            for row in shard["episodes"]:
                row["shard"] = shard["rel"]
        storage.sync_local(self.location, shard["tmp"])  # on disk before a manifest names it
        fs.move(shard["tmp"], shard["path"])
        info = ShardInfo(shard["rel"], shard["rows"], size, checksum, self.writer_id, tuple(shard["episodes"]))
        self.shards.append(info)
        self._unreported.append(info)
        if self.autocommit:
            self.manifest = commit_shards(self.location, [info])

    def flush(self) -> list[ShardInfo]:
        """Finish the open shard (committing it if autocommit); the shards finished since the last flush."""
        self._close_shard()
        done, self._unreported = self._unreported, []
        return done

    def close(self) -> list[ShardInfo]:
        """Finish and return every shard this writer wrote (committed already if autocommit)."""
        self.flush()
        return list(self.shards)

    def abort(self) -> None:
        """Drop the open shard's temporary file; committed shards stay."""
        shard, self._shard = self._shard, None
        if shard is not None:
            try:
                shard["writer"].close()
                shard["stream"].close()
            finally:
                self.location.fs.delete_file(shard["tmp"])

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Also on an error: add_episode writes an episode whole or not at all, so the episodes
        # finished before the error are kept (LeRobot #2495: recordings lost after an exception).
        self.close()


def abort_writers(writers: dict) -> None:
    """Abort every writer of a job's failed item and forget them: the shards they finished stay uncommitted
    (never part of the data), their open shards' temporary files are deleted."""
    for writer in writers.values():
        writer.abort()
    writers.clear()
