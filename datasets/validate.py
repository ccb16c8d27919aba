"""Check a dataset without changing it: `validate(root)` lists every problem with file and row.

    worldloom dataset validate data/run1          # exit 1 and one line per problem if any

Rows are 0-based row numbers inside the named Parquet file. Checks: the manifest (format
version, spec), shards against the manifest (missing, extra, size, checksum, row count,
readable Parquet, schema), episodes.parquet against the shards, and inside every shard: each
episode's rows contiguous with steps 0, 1, 2, ... (no gap, no repeat), every frame decodable to
the declared size, actions present when labeled and in range, label fields valid.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from worldloom import paths
from worldloom.errors import UserError

from . import codecs, schema, storage
from .manifest import committed_episodes, conform, schema_differences
from .writer import file_checksum, nonfinite_rows

# `capture run`, `dataset ingest|merge|split` and `idm label` delete every unlisted file under frames/ of
# their (locked, local) output when they end (datasets.jobs.sweep_orphans); other writers leave them.
LEFTOVER_HINT = ("if `worldloom capture run`, `dataset ingest|merge|split` or `idm label` made this dataset, re-run the "
                 "same command: it resumes, records those episodes and removes such files; otherwise delete them once "
                 "no writer runs")


# What to do about a shard that differs from dataset.json (said once for all such shards).
REPAIR_HINT = ("restore the file(s) from a copy, or run `worldloom dataset repair` (it says which command makes "
               "the dropped episodes again)")


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the dataset root
    row: int | None
    message: str  # what is wrong
    fix: str = ""  # what to do, when many problems share it (the CLI says it once); else in `message`

    @property
    def where(self) -> str:
        return self.file if self.row is None else f"{self.file} row {self.row}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" + (f"; {self.fix}" if self.fix else "")


def validate(root: str | os.PathLike, filesystem: pafs.FileSystem | None = None, check_frames: bool = True) -> list[Problem]:
    """Every problem found in the dataset at `root` (empty list: valid). Never writes."""
    loc = storage.resolve(root, filesystem)
    try:
        manifest = storage.read_manifest(loc)
    except UserError as err:
        return [Problem(schema.MANIFEST_NAME, None, str(err).split(": ", 1)[-1])]
    if manifest is None:
        return [Problem(schema.MANIFEST_NAME, None, "missing: this is not a WorldLoom dataset directory (or its manifest was deleted)")]
    try:
        spec = storage.spec_of(manifest)
    except (KeyError, ValueError) as err:
        return [Problem(schema.MANIFEST_NAME, None, f"invalid frame spec ({err}); restore dataset.json from a copy")]
    problems: list[Problem] = []
    version = storage.version_of(manifest)
    listed = {s["path"]: s for s in manifest.get("shards", [])}
    problems += check_extra_files(loc, listed)
    shard_episodes: dict[str, list[tuple[str, int, int]]] = {}
    for rel, entry in listed.items():
        found, episodes = check_shard(loc, rel, entry, spec, check_frames, version)
        problems += found
        if episodes is not None:
            shard_episodes[rel] = episodes
    problems += check_episodes_table(loc, listed, shard_episodes, manifest)
    return problems


def format_problems(root: str, problems: list[Problem]) -> list[str]:
    """One line per distinct problem (files sharing a message are listed on one line), then each
    distinct fix once with the files it is for: a hundred leftover shards print no hundred paragraphs."""
    by_message: dict[tuple[str, int | None], list[str]] = {}
    by_fix: dict[str, list[str]] = {}
    for p in problems:
        by_message.setdefault((p.message, p.row), []).append(p.file)
        if p.fix:
            by_fix.setdefault(p.fix, []).append(p.file)
    # the first file in full (below a URI: before its ?query, so it opens pasted), the others relative to the root
    lines = [f"{paths.child(root, files[0])}{''.join(', ' + f for f in files[1:])}{'' if row is None else f' row {row}'}: {message}"
             for (message, row), files in by_message.items()]
    # a file with two problems that share a fix is named once (a truncated shard named itself twice)
    return lines + [f"{root}: what to do for {', '.join(dict.fromkeys(files))}: {fix}" for fix, files in by_fix.items()]


def check_extra_files(loc: storage.Location, listed: dict) -> list[Problem]:
    selector = pafs.FileSelector(loc.join(schema.FRAMES_DIR), allow_not_found=True)
    problems = []
    for info in loc.fs.get_file_info(selector):
        rel = f"{schema.FRAMES_DIR}/{posixpath.basename(info.path)}"
        if info.type != pafs.FileType.File or rel in listed:
            continue
        if rel.endswith(".tmp"):
            problems.append(Problem(rel, None, "temporary file of a writer that is still running or was interrupted, not part "
                                               "of the dataset", LEFTOVER_HINT))
        else:
            problems.append(Problem(rel, None, "extra shard not listed in dataset.json (a writer was interrupted before its "
                                               "commit, or it was copied in): its episodes are not in the dataset",
                                    LEFTOVER_HINT))
    return problems


def check_shard(loc: storage.Location, rel: str, entry: dict, spec: storage.FrameSpec, check_frames: bool,
                version: int = schema.FORMAT_VERSION):
    """(problems, [(episode_id, first_row, num_rows)] or None if unreadable) for one shard."""
    try:
        path = loc.member(rel, source=loc.uri_of(schema.MANIFEST_NAME), field="shard path")
    except UserError as err:
        return [Problem(rel, None, str(err).split(": ", 1)[-1])], None
    if not storage.exists(loc, path):
        return [Problem(rel, None, "listed in dataset.json but missing", REPAIR_HINT)], None
    problems = []
    checksum, size = file_checksum(loc.fs, path)
    if size != entry.get("size_bytes"):
        problems.append(Problem(rel, None, f"size is {size} bytes, dataset.json says {entry.get('size_bytes')} (truncated or "
                                           "changed)", REPAIR_HINT))
    elif checksum != entry.get("checksum"):
        problems.append(Problem(rel, None, f"checksum {checksum} differs from dataset.json's {entry.get('checksum')} (corrupt or "
                                           "changed)", REPAIR_HINT))
    found, episodes = _read_shard(loc, path, rel, entry, spec, check_frames, version)
    if problems and check_frames and not found and episodes is not None:  # changed, yet every row reads and checks out
        problems = [_rewritten(rel, entry, checksum, size, episodes)]
    return problems + found, episodes


def _rewritten(rel: str, entry: dict, checksum: str, size: int, episodes: list) -> Problem:
    """The problem of a shard whose bytes differ from dataset.json's but whose rows all read and check out: most
    likely rewritten by another tool (other compression or row groups); whether the change is wanted only the user
    knows (a flipped byte inside a frame reads too), and `repair` would drop the episodes."""
    what = (f"size is {size} bytes, dataset.json says {entry.get('size_bytes')}" if size != entry.get("size_bytes")
            else f"checksum {checksum} differs from dataset.json's {entry.get('checksum')}")
    return Problem(rel, None, f"{what}, yet all its {sum(n for _, _, n in episodes)} rows ({len(episodes)} episode(s)) still "
                              "read and check out (schema, episodes, steps, frame sizes): changed since it was committed, "
                              "as when another tool rewrites it (other compression or row groups); a changed pixel or "
                              "action would pass these checks too",
                   f"if you rewrote it, record it: set this shard's \"size_bytes\": {size} and \"checksum\": "
                   f"\"{checksum}\" in dataset.json; else restore the file from a copy (`worldloom dataset repair` would "
                   "drop its episodes)")


def _read_shard(loc: storage.Location, path: str, rel: str, entry: dict, spec: storage.FrameSpec, check_frames: bool,
                version: int):
    """(problems, episodes or None) of reading the shard's rows: schema, row count, and every row's checks."""
    problems: list[Problem] = []
    try:
        file = pq.ParquetFile(loc.fs.open_input_file(path))
    except (pa.ArrowInvalid, OSError) as err:
        return problems + [Problem(rel, None, f"not a readable Parquet file ({err})", REPAIR_HINT)], None
    differences = schema_differences(file.schema_arrow, schema.frame_schema(version), version)
    if differences:
        return problems + [Problem(rel, None, f"schema mismatch: {d}") for d in differences], None
    if file.metadata.num_rows != entry.get("num_rows"):
        problems.append(Problem(rel, None, f"has {file.metadata.num_rows} rows, dataset.json says {entry.get('num_rows')}"))
    scan = _ShardScan(rel, spec, check_frames)
    try:
        for i in range(file.metadata.num_row_groups):
            scan.feed(conform(file.read_row_group(i), schema.frame_schema(version), rel))
    except (pa.ArrowInvalid, OSError) as err:
        scan.problems.append(Problem(rel, scan.row, f"cannot read row group ({err}); restore the file from a copy"))
    except UserError as err:  # a value that does not fit the documented type (conform): not read on
        return problems + scan.problems + [Problem(rel, scan.row, str(err).split(": ", 1)[-1])], None
    episodes = scan.finish()
    return problems + scan.problems, episodes


class _ShardScan:
    """Row-by-row checks of one shard, fed one row group at a time."""

    def __init__(self, rel: str, spec: storage.FrameSpec, check_frames: bool):
        self.rel, self.spec, self.check_frames = rel, spec, check_frames
        self.row = 0
        self.problems: list[Problem] = []
        self.episodes: list[tuple[str, int, int]] = []  # (episode_id, first row, num rows)
        self.current: str | None = None
        self.last_step = -1
        self.seen_ids: set[str] = set()
        self.chunk_cells: list[bytes | None] = []  # frame cells of a chunked codec (h264)

    def add(self, row: int, message: str) -> None:
        self.problems.append(Problem(self.rel, row, message))

    def feed(self, table: pa.Table) -> None:
        ids = table.column("episode_id").cast(pa.string()).to_pylist()
        steps = table.column("step").to_numpy(zero_copy_only=False)
        sources = table.column("label_source").cast(pa.string()).to_pylist()
        buttons_null = np.stack([table.column(c).is_null().to_numpy(zero_copy_only=False) for c in schema.BUTTON_COLUMNS], 1)
        camera = np.stack([table.column(c).fill_null(0.0).to_numpy() for c in schema.CAMERA_COLUMNS], 1)
        camera_null = np.stack([table.column(c).is_null().to_numpy(zero_copy_only=False) for c in schema.CAMERA_COLUMNS], 1)
        confidence = table.column("label_confidence").fill_null(0.5).to_numpy()
        reward = table.column("reward").fill_null(0.0).to_numpy()
        state_bad = {}  # row -> the first state column holding NaN or an infinity (null is unknown)
        for name in reversed([n for n in schema.STATE_COLUMNS if n in table.column_names]):
            column = table.column(name)
            for i in nonfinite_rows(column):
                state_bad[int(i)] = (name, column[int(i)].as_py())
        for i, (eid, step, source) in enumerate(zip(ids, steps, sources, strict=True)):
            row = self.row + i
            self.check_step(row, eid, int(step))
            if source not in schema.LABEL_SOURCES:
                self.add(row, f"label_source is {source!r}, expected one of {schema.LABEL_SOURCES}")
            elif source != "none" and (buttons_null[i].any() or camera_null[i].any()):
                self.add(row, f"label_source is {source!r} but the action has nulls; relabel the episode or mark it 'none'")
            if not (np.isfinite(camera[i]).all() and (np.abs(camera[i]) <= schema.CAMERA_LIMIT).all()):
                self.add(row, f"camera {camera[i].tolist()} is outside [-180, 180] degrees")
            if not 0.0 <= confidence[i] <= 1.0:
                self.add(row, f"label_confidence {confidence[i]} is outside [0, 1]")
            if not np.isfinite(reward[i]):
                self.add(row, f"reward {reward[i]} is not a finite number (null where unknown)")
            if i in state_bad:
                self.add(row, f"{state_bad[i][0]} {state_bad[i][1]} is not a finite number (null where unknown)")
        if self.check_frames:
            self.check_frame_column(table.column("frame"))
        self.row += table.num_rows

    def check_step(self, row: int, eid: str, step: int) -> None:
        if eid != self.current:
            if eid in self.seen_ids:
                self.add(row, f"episode {eid!r} starts again after other episodes (rows of an episode must be contiguous); "
                              "rewrite the shard with one run per episode")
            self.seen_ids.add(eid)
            self.episodes.append((eid, row, 0))
            self.current, self.last_step = eid, -1
            if step != 0:
                self.add(row, f"episode {eid!r} starts at step {step}, expected 0")
        elif step == self.last_step:
            self.add(row, f"duplicate step {step} of episode {eid!r}; drop the repeated row and re-number")
        elif step != self.last_step + 1:
            self.add(row, f"step {step} follows step {self.last_step} in episode {eid!r} (steps must count up by 1); "
                          "re-capture the episode or re-number its steps")
        eid0, first, count = self.episodes[-1]
        self.episodes[-1] = (eid0, first, count + 1)
        self.last_step = step

    def check_frame_column(self, column: pa.ChunkedArray) -> None:
        h, w, codec = self.spec.height, self.spec.width, self.spec.codec
        if codec == "raw":  # vectorised: a raw frame is right iff its byte length is
            lengths = pa.compute.binary_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(lengths != h * w * 3):
                self.add(self.row + int(i), f"frame has {lengths[i]} bytes, expected {h * w * 3} ({w}x{h}x3 raw); "
                                            "re-capture the episode at the dataset's size")
            return
        if codecs.get_codec(codec).chunk_frames > 1:  # chunks may span row groups: decode per episode in finish()
            self.chunk_cells.extend(column.to_pylist())
            return
        for i, value in enumerate(column.to_pylist()):
            try:
                codecs.decode_one(codec, value, h, w)
            except codecs.FrameDecodeError as err:
                self.add(self.row + i, f"{err}; re-capture the episode at the dataset's size")

    def finish(self) -> list[tuple[str, int, int]]:
        h, w, codec = self.spec.height, self.spec.width, self.spec.codec
        size = codecs.get_codec(codec).chunk_frames
        for eid, first, count in (self.episodes if self.chunk_cells else ()):
            # A reader decodes steps [a, b) from the chunk at a // size * size: a chunk that starts
            # elsewhere (another tool's writer) decodes whole but not from a clip's step.
            starts = [i for i, cell in enumerate(self.chunk_cells[first : first + count]) if cell]
            wrong = sorted(set(starts) ^ set(range(0, count, size)))
            if wrong:
                off = wrong[0]
                self.add(first + off, f"episode {eid!r}: its {codec} chunks must start at steps 0, {size}, {2 * size}, ... "
                                      f"(a frame stream there, empty cells between), step {off} "
                                      f"{'holds none' if off not in starts else 'is not where one starts'} "
                                      f"(chunks start at steps {', '.join(map(str, starts[:4]))}"
                                      f"{', ...' if len(starts) > 4 else ''}): a clip read from inside the episode "
                                      "does not decode; write the episode again with DatasetWriter")
                continue
            try:
                codecs.decode_frames(codec, pa.array(self.chunk_cells[first : first + count], pa.binary()), h, w)
            except codecs.FrameDecodeError as err:
                self.add(first + err.index, f"{err}; re-capture the episode")
        return self.episodes


def check_episodes_table(loc: storage.Location, listed: dict, shard_episodes: dict, manifest: dict) -> list[Problem]:
    name = schema.EPISODES_NAME
    if not storage.exists(loc, loc.join(name)):
        return [Problem(name, None, "missing; it lists the episodes of the shards; restore it from a copy")] if listed else []
    try:
        with loc.fs.open_input_file(loc.join(name)) as f:  # one handle: see storage.read_episodes
            table = pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as err:
        return [Problem(name, None, f"not a readable Parquet file ({err}); restore it from a copy")]
    differences = schema_differences(table.schema, schema.EPISODE_SCHEMA)
    if differences:
        return [Problem(name, None, f"schema mismatch: {d}") for d in differences]
    problems = []
    in_shards = {(rel, first): (eid, n) for rel, eps in shard_episodes.items() for eid, first, n in eps}
    listed_rows = set()
    seen = set()
    for row, r in enumerate(table.to_pylist()):
        if r["shard"] not in listed:
            continue  # rows of an uncommitted shard (a crash between two renames): not data
        if r["episode_id"] in seen:
            problems.append(Problem(name, row, f"episode {r['episode_id']!r} is listed twice; drop one row"))
        seen.add(r["episode_id"])
        if r["env_config"] is not None:
            try:
                json.loads(r["env_config"])
            except json.JSONDecodeError:
                problems.append(Problem(name, row, "env_config is not valid JSON"))
        if r["shard"] not in shard_episodes:
            continue  # the shard itself is unreadable: reported there
        listed_rows.add((r["shard"], r["row_start"]))
        got = in_shards.get((r["shard"], r["row_start"]))
        if got is None or got[0] != r["episode_id"]:
            problems.append(Problem(name, row, f"episode {r['episode_id']!r} is not at row {r['row_start']} of {r['shard']}"))
        elif got[1] != r["num_steps"]:
            problems.append(Problem(name, row, f"episode {r['episode_id']!r} has num_steps {r['num_steps']} but {got[1]} rows in {r['shard']}"))
    for (rel, first), (eid, _) in sorted(in_shards.items()):
        if (rel, first) not in listed_rows:
            problems.append(Problem(rel, first, f"episode {eid!r} is not listed in {name}; restore {name} from a copy"))
    if not problems:  # whatever else a reader would refuse (label sources, tiling, counts): the same words
        try:
            committed_episodes(table, manifest, loc.uri_of(name))
        except UserError as err:
            problems.append(Problem(name, None, str(err).split(": ", 1)[-1]))
    return problems
