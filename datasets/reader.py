"""Read a dataset: `Dataset(path)`, its episodes table, and frames of an episode by step range.

    from worldloom.datasets import Dataset
    ds = Dataset("data/run1")                  # or "s3://bucket/run1?endpoint_override=..."
    clip = ds.frames("ep-000", 0, 16)          # clip.frames (16, H, W, 3) uint8, clip.buttons ...

Only committed shards are read (those listed in dataset.json). A shard is opened lazily, once
per process (DataLoader workers fork: each reopens its own files), and only the row groups that
hold the asked steps are read.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from worldloom.errors import UserError

from . import codecs, schema, storage
from .manifest import committed_episodes, conform, schema_differences


@dataclass
class Clip:
    """Steps `[start, start + T)` of one episode, decoded."""

    episode_id: str
    start: int
    frames: np.ndarray  # (T, H, W, 3) uint8
    buttons: np.ndarray | None  # (T, 20) bool; None when label_source is "none"
    camera: np.ndarray | None  # (T, 2) float32 degrees [pitch, yaw]; None when unlabeled
    rewards: np.ndarray  # (T,) float32, NaN where unknown
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray  # (T,) bool
    label_source: str
    label_model: str | None
    label_confidence: np.ndarray | None  # (T,) float32 for idm labels
    captions: list[str | None] | None = None  # (T,) each step's clip caption; None when the dataset has none
    pitch: np.ndarray | None = None  # (T,) float32 degrees, the view's pitch at each frame (state_pitch; positive
                                     # looks down), NaN where not recorded; None when the dataset has no state columns


@dataclass(frozen=True)
class EpisodeRef:
    shard: str
    row_start: int
    num_steps: int
    label_source: str
    label_model: str | None


class _Shard:
    """An open shard file and the first row of each of its row groups."""

    def __init__(self, loc: storage.Location, rel: str, num_rows: int, version: int = schema.FORMAT_VERSION):
        self.rel = rel
        path = loc.member(rel, source=loc.uri_of(schema.MANIFEST_NAME), field="shard path")
        try:
            self.file = pq.ParquetFile(loc.fs.open_input_file(path))
        except FileNotFoundError:
            raise UserError(f"{loc.uri_of(rel)}: shard listed in dataset.json is missing; run `worldloom dataset validate {loc.arg}`") from None
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"{loc.uri_of(rel)}: cannot read this shard ({err}); run `worldloom dataset validate {loc.arg}`") from None
        meta = self.file.metadata
        differences = schema_differences(self.file.schema_arrow, schema.frame_schema(version), version)
        if differences or meta.num_rows != num_rows:
            why = differences[0] if differences else f"holds {meta.num_rows} rows, dataset.json says {num_rows}"
            raise UserError(f"{loc.uri_of(rel)}: {why}; run `worldloom dataset validate {loc.arg}`")
        self.where, self.root_arg, self.schema = loc.uri_of(rel), loc.arg, schema.frame_schema(version)
        self.group_starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]).tolist()

    def read_rows(self, start: int, stop: int, columns: list[str]) -> pa.Table:
        first = bisect.bisect_right(self.group_starts, start) - 1
        last = bisect.bisect_left(self.group_starts, stop) - 1
        try:
            table = self.file.read_row_groups(list(range(first, last + 1)), columns=columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"{self.where}: cannot read rows {start}..{stop - 1} ({err}); run `worldloom dataset validate {self.root_arg}`") from None
        table = conform(table, self.schema, self.where)  # a shard another Parquet tool rewrote: the documented types
        return table.slice(start - self.group_starts[first], stop - start)


class Dataset:
    """A WorldLoom dataset at a local path or URI; see the package docstring for the layout."""

    def __init__(self, root: str | os.PathLike, filesystem: pafs.FileSystem | None = None):
        self.location = storage.resolve(root, filesystem)
        manifest = storage.read_manifest(self.location)
        if manifest is None:
            raise UserError(f"{self.location.uri}: no {schema.MANIFEST_NAME} here; is this a WorldLoom dataset directory?")
        self.manifest = manifest
        self.spec = storage.spec_of(manifest)
        self.version = storage.version_of(manifest)  # 1, 2: the columns added since read as nulls
        where = self.location.uri_of(schema.EPISODES_NAME)
        # In episode id order, not commit order: workers commit as they finish (a capture, ingest or label with
        # --num-workers 2 commits e1 before e0, or not, run to run), and the seeded splits, subsets, clip orders and
        # eval clips drawn from this order must follow the data, not which worker was quicker.
        self.episodes: pa.Table = committed_episodes(storage.read_episodes(self.location), manifest, where).sort_by("episode_id")
        cols = self.episodes.select(["episode_id", "shard", "row_start", "num_steps", "label_source", "label_model"]).to_pydict()
        self._refs = {
            eid: EpisodeRef(shard, int(row), int(num), src, model)
            for eid, shard, row, num, src, model in zip(
                cols["episode_id"], cols["shard"], cols["row_start"], cols["num_steps"], cols["label_source"],
                cols["label_model"], strict=True,
            )
        }
        self._num_rows = {s["path"]: s["num_rows"] for s in manifest["shards"]}
        self._shards: dict[str, _Shard] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # Open files stay behind when pickled (spawned DataLoader workers, Ray tasks).
        return {**self.__dict__, "_shards": {}}

    @property
    def episode_ids(self) -> list[str]:
        return self.episodes.column("episode_id").to_pylist()

    @property
    def num_frames(self) -> int:
        return sum(r.num_steps for r in self._refs.values())

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        s = self.spec
        return f"Dataset({self.location.uri!r}, episodes={len(self)}, frames={self.num_frames}, {s.width}x{s.height} @ {s.fps} fps, codec={s.codec})"

    def episode(self, episode_id: str) -> EpisodeRef:
        try:
            return self._refs[episode_id]
        except KeyError:
            raise KeyError(f"episode {episode_id!r} is not in {self.location.uri}") from None

    def _shard(self, rel: str) -> _Shard:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: never share file handles
            self._shards, self._pid = {}, os.getpid()
        if rel not in self._shards:
            self._shards[rel] = _Shard(self.location, rel, self._num_rows[rel], self.version)
        return self._shards[rel]

    def read_shard(self, rel: str, columns: list[str]) -> pa.Table:
        """Columns of a whole committed shard (rel: its path in dataset.json)."""
        shard = self._shard(rel)
        return shard.read_rows(0, shard.group_starts[-1], columns)

    def read_table(self, episode_id: str, start: int = 0, stop: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """Raw Arrow rows of steps `[start, stop)` of an episode (frame bytes still encoded), in the
        current format's columns (a version-1 dataset's rows get the version-2 columns as nulls)."""
        ref = self.episode(episode_id)
        stop = ref.num_steps if stop is None else stop
        if not 0 <= start < stop <= ref.num_steps:
            raise IndexError(f"episode {episode_id!r} has steps 0..{ref.num_steps - 1}, asked [{start}, {stop})")
        names = list(columns or schema.FRAME_SCHEMA.names)
        stored = schema.frame_schema(self.version)
        have = [n for n in names if n in stored.names]
        keys = [k for k in ("episode_id", "step") if k not in have]
        table = self._shard(ref.shard).read_rows(ref.row_start + start, ref.row_start + stop, have + keys)
        self._check_rows(table, episode_id, ref, start)
        return with_null_columns(table.drop_columns(keys), names)

    def _check_rows(self, table: pa.Table, episode_id: str, ref: EpisodeRef, start: int) -> None:
        """UserError naming the row unless the rows are steps start, start + 1, ... of `episode_id`: a
        shard rewritten by another tool (rows reordered, a step repeated or dropped) or an episodes
        table that points at the wrong rows would otherwise hand a trainer frames out of order."""
        ids = table.column("episode_id").cast(pa.string()).to_numpy(zero_copy_only=False)
        steps = table.column("step").to_numpy(zero_copy_only=False)
        bad = np.flatnonzero((ids != episode_id) | (steps != np.arange(start, start + len(steps))))
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{self.location.uri_of(ref.shard)} row {ref.row_start + start + i}: holds step {steps[i]} of "
                            f"episode {ids[i]!r}, but {schema.EPISODES_NAME} puts step {start + i} of {episode_id!r} "
                            "there (rows reordered, repeated or dropped by another tool?); run "
                            f"`worldloom dataset validate {self.location.arg}`")

    def frames(self, episode_id: str, start: int = 0, stop: int | None = None) -> Clip:
        """Steps `[start, stop)` of an episode, decoded (the whole episode by default)."""
        ref = self.episode(episode_id)
        labeled = ref.label_source != "none"
        columns = ["frame", "reward", "terminated", "truncated", "label_confidence"]
        captioned = self.version >= 3  # older datasets have no caption column: no read, no nulls to make
        if captioned:
            columns.append(schema.CAPTION_COLUMN)
        stated = self.version >= 2  # the engine's state columns came with version 2
        if stated:
            columns.append("state_pitch")
        if labeled:
            columns += list(schema.ACTION_COLUMNS)
        stop = ref.num_steps if stop is None else stop
        # Chunked codecs (h264) decode whole chunks: read from the chunk holding `start`.
        chunk = codecs.get_codec(self.spec.codec).chunk_frames
        first = start // chunk * chunk
        last = min(-(-stop // chunk) * chunk, ref.num_steps)
        table = self.read_table(episode_id, first, last, columns)
        try:
            frames = codecs.decode_frames(self.spec.codec, table.column("frame"), self.spec.height, self.spec.width)
        except codecs.FrameDecodeError as err:
            row = ref.row_start + first + err.index
            raise UserError(f"{self.location.uri_of(ref.shard)} row {row}: {err}; run `worldloom dataset validate {self.location.arg}`") from None
        frames = frames[start - first : stop - first]
        table = table.slice(start - first, stop - start)
        buttons = camera = None
        if labeled:
            buttons = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in schema.BUTTON_COLUMNS], axis=1)
            camera = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in schema.CAMERA_COLUMNS], axis=1)
            self._check_actions(table, ref, start)
            buttons, camera = buttons.astype(bool), camera.astype(np.float32)  # (T, 20), (T, 2)
        confidence = None
        if table.column("label_confidence").null_count < table.num_rows:
            confidence = _floats(table.column("label_confidence"))
        return Clip(
            episode_id=episode_id, start=start, frames=frames, buttons=buttons, camera=camera,
            rewards=_floats(table.column("reward")),
            terminated=table.column("terminated").to_numpy(zero_copy_only=False).astype(bool),
            truncated=table.column("truncated").to_numpy(zero_copy_only=False).astype(bool),
            label_source=ref.label_source, label_model=ref.label_model, label_confidence=confidence,
            captions=_captions(table) if captioned else None,
            pitch=_pitch(table) if stated else None,
        )


    def _check_actions(self, table: pa.Table, ref: EpisodeRef, start: int) -> None:
        """UserError naming the row and column of a labeled step whose action is null, NaN, infinite or
        beyond the camera's [-180, 180] degrees: such a value is corrupt data, not an action, and it would
        reach a trainer's loss as a NaN (or an overflow) far from the file that holds it."""
        for name in schema.ACTION_COLUMNS:
            column = table.column(name)
            bad = column.is_null().to_numpy(zero_copy_only=False)
            if name in schema.CAMERA_COLUMNS:
                values = column.fill_null(0.0).to_numpy().astype(np.float64)
                bad = bad | ~(np.abs(values) <= schema.CAMERA_LIMIT)  # NaN fails the comparison
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise UserError(f"{self.location.uri_of(ref.shard)} row {ref.row_start + start + i}: {name} is "
                                f"{_shown(column[i].as_py())} in an episode labeled {ref.label_source!r} (camera: finite "
                                f"degrees in [-{schema.CAMERA_LIMIT:g}, {schema.CAMERA_LIMIT:g}]; buttons: not null); "
                                f"fix the value, or run `worldloom dataset validate {self.location.arg}` for every such row")


def check_distinct(datasets: list[Dataset]) -> None:
    """UserError when datasets given together hold the same data twice: one folder named twice, or a
    copy (an episode in two of them: the same id, length, seed and env_config, which for ingested
    video names the source file's hash): its episodes would count twice, and a split by episode
    could put one copy in training and the other in validation."""
    folders: dict[str, str] = {}
    owner: dict[tuple, str] = {}
    for ds in datasets:
        loc = ds.location
        key = os.path.realpath(loc.path) if loc.is_local else loc.path
        if key in folders:
            raise UserError(f"{loc.uri} is given twice (also as {folders[key]}): its episodes would count twice; "
                            "give each dataset once")
        folders[key] = loc.uri
        for key in _episode_keys(ds.episodes):
            if key in owner:
                raise UserError(f"{loc.uri}: episode {key[0]!r} is also in {owner[key]} (a copy of the same data?): it "
                                "would count twice, and could be trained on and validated on at once; leave one out")
            owner[key] = loc.uri


# env_config keys that record where a copy of an episode came from (`dataset split`: its source shard and
# rows), not what was played: an episode and its copy differ in them and are still the same play.
COPY_RECORD_KEYS = ("split_source",)


def _episode_keys(episodes: pa.Table) -> list[tuple]:
    """(episode_id, num_steps, seed, env_config without COPY_RECORD_KEYS) of each episode: what makes two of
    them the same play."""
    names = ("episode_id", "num_steps", "seed", "env_config")
    columns = [episodes.column(n).to_pylist() if n in episodes.column_names else [None] * episodes.num_rows
               for n in names]
    columns[3] = [_played_config(text) for text in columns[3]]
    return list(zip(*columns, strict=True))


def _played_config(text: str | None) -> str | None:
    """An env_config's JSON text without the keys that record where a copy came from (canonical key order;
    None for none left)."""
    if not text:
        return text
    try:
        config = json.loads(text)
    except ValueError:
        return text
    if not isinstance(config, dict):
        return text
    played = {k: v for k, v in config.items() if k not in COPY_RECORD_KEYS}
    return json.dumps(played, sort_keys=True) if played else None  # a split of an episode without one: none


def check_same_frames(datasets: list[Dataset], what: str = "train on") -> None:
    """UserError naming the two datasets when their frames differ in size or rate: an action is a
    step's, so a model trained on both would learn two meanings for the same camera degrees."""
    first = datasets[0]
    want = (first.spec.height, first.spec.width, float(first.spec.fps))
    for ds in datasets[1:]:
        have = (ds.spec.height, ds.spec.width, float(ds.spec.fps))
        if have != want:
            raise UserError(f"datasets disagree: {first.location.uri} is {want[1]}x{want[0]} at {want[2]:g} fps, "
                            f"{ds.location.uri} is {have[1]}x{have[0]} at {have[2]:g} fps; {what} datasets with one "
                            f"frame size and fps: leave one out of --data, or "
                            f"{storage.record_at_hint(want[1], want[0])} at {want[2]:g} fps")


def check_step_rate(paths: list[str] | tuple[str, ...], fps: float | None, model: str, reads: str, other: str) -> None:
    """UserError (one line, naming both rates) when a dataset of `paths` holds another step rate than `fps`, the
    rate `model` learned: a model reads or makes its data step for step, so a 10 fps step (1/10 s of play) would be
    taken for one 1/20 s step. `fps` None (a run that did not record its rate): unknown, nothing refused."""
    if fps is None:
        return
    for path in paths:
        have = float(Dataset(path).spec.fps)
        if have != float(fps):
            raise UserError(f"{path} holds {have:g} steps per second, but {model} learned {fps:g} (it {reads} step "
                            f"for step): ingest, label or record the data at --fps {fps:g}, or use {other} trained at "
                            f"{have:g} steps per second")


def with_null_columns(table: pa.Table, names: list[str]) -> pa.Table:
    """`table` with `names` in order, the ones it lacks (columns added in a later format version) as nulls."""
    types = {f.name: f.type for f in schema.FRAME_SCHEMA}
    for name in names:
        if name not in table.column_names:
            if name not in types:
                raise KeyError(f"no column {name!r} in the dataset format")
            table = table.append_column(pa.field(name, types[name]), pa.nulls(table.num_rows, types[name]))
    return table.select(names)


def _pitch(table: pa.Table) -> np.ndarray | None:
    """The state_pitch column as float32 degrees (T,), NaN where null or out of [-90, 90]; None when all are."""
    column = table.column("state_pitch")
    if column.null_count == table.num_rows:
        return None
    values = column.to_numpy(zero_copy_only=False).astype(np.float32)  # nulls become NaN
    values[~(np.abs(values) <= 90.0)] = np.nan
    return values


def _captions(table: pa.Table) -> list[str | None] | None:
    """The caption column as a list, or None when every row is null."""
    column = table.column(schema.CAPTION_COLUMN)
    return None if column.null_count == table.num_rows else column.to_pylist()


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return column.fill_null(float("nan")).to_numpy().astype(np.float32)


def _shown(value) -> str:
    return "null" if value is None else repr(value)
