"""Merge datasets and split one by episode, without re-encoding a frame.

    worldloom dataset merge data/a data/b --out data/ab
    worldloom dataset split data/ab --out data/splits --fractions train=0.8 val=0.1 test=0.1

`merge` copies whole shard files byte for byte (their checksums are checked after the copy) and
commits them into the output in one step. A source of an older format version merged into a
version-3 output has its shards rewritten with the columns it lacks as nulls (frame bytes
unchanged), and the `caption` column made from its state columns (datasets/captions.py): this
is how an older dataset is upgraded. `split` assigns each episode by a hash of the seed and
its id (stable: adding episodes never moves the others), then copies its rows, frame bytes as
stored, into `<out>/<split name>/`. Sources are only read; nothing existing is overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from worldloom.errors import UserError
from worldloom.folders import KINDS, check_out, describe, folder_kind
from worldloom.io import json_text
from worldloom.paths import child, redact_json

from . import schema, storage
from .jobs import job_lock, sweep_orphans
from .reader import Dataset, check_distinct
from .validate import schema_differences
from .writer import (
    DatasetWriter,
    ShardInfo,
    _committed_episodes,
    commit_shards,
    committed_episode_ids,
    file_checksum,
    open_or_create,
    parquet_options,
)

# A shard whose bytes are not those dataset.json recorded: damaged, or rewritten by another tool (validate tells which).
CHANGED_SHARD = "checksum differs from its dataset.json (corrupt, or changed since it was committed)"


def check_same_spec(datasets: Sequence[Dataset]) -> None:
    """UserError naming the field and the two datasets whose frame spec differs."""
    first = datasets[0]
    for other in datasets[1:]:
        for field in ("height", "width", "fps", "codec"):
            a, b = getattr(first.spec, field), getattr(other.spec, field)
            if a != b:
                hint = storage.record_at_hint(first.spec.width, first.spec.height) if field in ("height", "width") else \
                    "record it again to match"
                raise UserError(f"{other.location.uri}: {field} is {b!r} but {first.location.uri} has {a!r}; "
                                f"datasets merge only with the same frame spec: leave one out, or {hint}")


def check_shard_schemas(ds: Dataset) -> None:
    for shard in ds.manifest["shards"]:
        path = ds.location.member(shard["path"], source=ds.location.uri_of(schema.MANIFEST_NAME), field="shard path")
        try:
            actual = pq.read_schema(ds.location.fs.open_input_file(path))
        except (OSError, ValueError) as err:
            raise UserError(f"{ds.location.uri_of(shard['path'])}: cannot read ({err}); run `worldloom dataset validate {ds.location.arg}`") from None
        differences = schema_differences(actual, schema.frame_schema(ds.version), ds.version)
        if differences:
            raise UserError(f"{ds.location.uri_of(shard['path'])}: schema mismatch: {differences[0]}; "
                            f"run `worldloom dataset validate {ds.location.arg}`")


def copy_file(src: storage.Location, src_path: str, dst: storage.Location, dst_path: str) -> None:
    """Byte copy between any two filesystems, through a temporary name."""
    tmp = storage.tmp_name(dst_path)
    with src.fs.open_input_stream(src_path) as fin, dst.fs.open_output_stream(tmp) as fout:
        while chunk := fin.read(8 << 20):
            fout.write(chunk)
    dst.fs.move(tmp, dst_path)


def merge(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Copy the committed shards of `sources` into `out` (new, or a dataset of the same spec)."""
    if not sources:
        raise UserError("merge needs at least one source dataset")
    check_out(out, "dataset")
    datasets = [Dataset(s) for s in sources]
    if not any(len(ds) for ds in datasets):  # else an empty --out is made and the merge says exit 0
        raise UserError(f"{', '.join(ds.location.uri for ds in datasets)}: no episodes in any source; nothing to merge")
    owner = check_sources(datasets)
    writer_id = f"merge-{uuid.uuid4().hex[:6]}"
    with job_lock([str(out)], "dataset merge"):
        started_at = time.time() - 1.0  # 1 s of clock skew
        manifest = _merge_locked(datasets, owner, out, writer_id)
        # Under the lock: what a killed merge (or capture, ingest, label) left under frames/ (datasets/jobs.py).
        sweep_orphans(str(out), writer_id.split("-")[1], started_at)
    return manifest


def check_sources(datasets: list[Dataset]) -> dict[str, str]:
    """{episode id: its source}; UserError for sources of another spec or schema, or a shared episode id."""
    check_distinct(datasets)  # one folder named twice, or a copy: not two datasets whose ids clash
    check_same_spec(datasets)
    owner: dict[str, str] = {}
    for ds in datasets:
        check_shard_schemas(ds)
        for eid in ds.episode_ids:
            if eid in owner:
                raise UserError(f"{ds.location.uri}: episode {eid!r} is also in {owner[eid]}; episode ids must be "
                                "unique across merged datasets (split one off or re-capture with other ids)")
            owner[eid] = ds.location.uri
    return owner


def _merge_locked(datasets: list[Dataset], owner: dict[str, str], out: str | os.PathLike, writer_id: str) -> dict:
    """merge's copy and commit (the caller holds the job lock)."""
    dst = storage.resolve(out)
    clash = committed_episode_ids(dst) & owner.keys()
    if clash:
        raise UserError(f"{dst.uri}: already holds episode {sorted(clash)[0]!r}; merge into a new directory")
    config = {"merged_from": [d.location.uri for d in datasets]}
    dst_manifest = open_or_create(dst, datasets[0].spec, config, datasets[0].manifest.get("rows_per_group", 256))
    dst_version = storage.version_of(dst_manifest)
    for ds in datasets:
        if ds.version > dst_version:
            raise UserError(f"{dst.uri}: a format version {dst_version} dataset cannot take {ds.location.uri} (version "
                            f"{ds.version}); merge into a new directory")
    infos = []
    for k, ds in enumerate(datasets):
        rows_by_shard: dict[str, list[dict]] = {}
        for row in ds.episodes.to_pylist():
            rows_by_shard.setdefault(row["shard"], []).append(row)
        for n, shard in enumerate(ds.manifest["shards"]):
            rel = f"{schema.FRAMES_DIR}/part-{writer_id}-{k:03d}{n:05d}.parquet"
            rows = sorted(rows_by_shard.get(shard["path"], []), key=lambda r: r["row_start"])
            if ds.version != dst_version:
                checksum, size = upgrade_shard(ds, shard, rows, dst, rel, dst_manifest.get("rows_per_group", 256))
                episodes = tuple({**row, "shard": rel} for row in rows)
                infos.append(ShardInfo(rel, sum(r["num_steps"] for r in rows), size, checksum, writer_id, episodes))
                continue
            src = ds.location.member(shard["path"], source=ds.location.uri_of(schema.MANIFEST_NAME), field="shard path")
            copy_file(ds.location, src, dst, dst.join(rel))
            checksum, size = file_checksum(dst.fs, dst.join(rel))
            if checksum != shard["checksum"]:
                dst.fs.delete_file(dst.join(rel))
                raise UserError(f"{ds.location.uri_of(shard['path'])}: {CHANGED_SHARD}; run `worldloom dataset validate "
                                f"{ds.location.arg}` (the source: it says whether the file is damaged); nothing was committed")
            episodes = tuple({**row, "shard": rel} for row in rows_by_shard.get(shard["path"], []))
            infos.append(ShardInfo(rel, shard["num_rows"], size, checksum, writer_id, episodes))
    return commit_shards(dst, infos)


def upgrade_shard(ds: Dataset, shard: dict, rows: list[dict], dst: storage.Location, rel: str,
                  rows_per_group: int) -> tuple[str, int]:
    """Write an older shard's episodes as a current-version shard at `dst`/`rel` (frame bytes as stored,
    the new columns null but the captions, made from the state columns; one episode per row group
    run); returns (checksum, size in bytes)."""
    from .captions import episode_columns, row_captions
    checksum, _ = file_checksum(ds.location.fs, ds.location.join(shard["path"]))
    if checksum != shard["checksum"]:
        raise UserError(f"{ds.location.uri_of(shard['path'])}: {CHANGED_SHARD}; run `worldloom dataset validate "
                        f"{ds.location.arg}` (the source: it says whether the file is damaged); nothing was committed")
    path = dst.join(rel)
    tmp = storage.tmp_name(path)
    with dst.fs.open_output_stream(tmp) as stream:
        writer = pq.ParquetWriter(stream, schema.FRAME_SCHEMA, **parquet_options(ds.spec.codec))
        for row in rows:  # a row group at a time: an episode may not fit in memory (its state columns do)
            eid = row["episode_id"]
            captions = row_captions(episode_columns(ds, eid), eid, float(ds.spec.fps)) if ds.version >= 2 else None
            for start in range(0, row["num_steps"], rows_per_group):
                stop = min(start + rows_per_group, row["num_steps"])
                table = ds.read_table(eid, start, stop)  # the columns added since as nulls
                if captions is not None and ds.version < 3:
                    i = table.schema.get_field_index(schema.CAPTION_COLUMN)
                    table = table.set_column(i, schema.CAPTION_COLUMN, pa.array(captions[start:stop], pa.string()))
                writer.write_table(table.cast(schema.FRAME_SCHEMA), row_group_size=rows_per_group)
        writer.close()
    dst.fs.move(tmp, path)
    return file_checksum(dst.fs, path)


def parse_fractions(items: Sequence[str]) -> dict[str, float]:
    """["train=0.9", "val=0.1"] -> {"train": 0.9, "val": 0.1}; UserError unless they sum to 1."""
    fractions = {}
    for item in items:
        name, sep, value = item.partition("=")
        if name in fractions:
            raise UserError(f"--fractions names {name!r} twice; give each split once, like train=0.9 val=0.1")
        try:
            fractions[name] = float(value)
        except ValueError:
            raise UserError(f"--fractions takes name=fraction pairs like train=0.9, got {item!r}") from None
        if not sep or not name or not math.isfinite(fractions[name]) or fractions[name] < 0:
            raise UserError(f"--fractions takes name=fraction pairs like train=0.9, got {item!r}")
        if name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
            raise UserError(f"--fractions: a split name is a folder under --out: letters, digits, '-', '_', '.' "
                            f"(not first), got {name!r}")
    if not fractions or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise UserError(f"--fractions must sum to 1, got {fractions}")
    return fractions


def assign_split(episode_id: str, fractions: dict[str, float], seed: int) -> str:
    """The split of one episode: a uniform number from a hash of (seed, id), cut by fractions."""
    digest = hashlib.blake2b(f"{seed}:{episode_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    total = 0.0
    for name, fraction in fractions.items():
        total += fraction
        if u < total:
            return name
    return list(fractions)[-1]


def split(source: str | os.PathLike, out: str | os.PathLike, fractions: dict[str, float], seed: int = 0) -> dict[str, list[str]]:
    """Write `<out>/<name>` datasets holding each split's episodes; returns their episode ids.
    Resumable by content: a re-run (same source, fractions, seed) adds the episodes not yet committed,
    copies again the ones whose source content changed since (a relabeled or re-ingested episode: its
    shard checksum and rows, `env_config["split_source"]`), drops the ones the source no longer has,
    and sweeps what an interrupted run left (datasets/jobs.py)."""
    kind = folder_kind(out)
    if kind == "file" or kind in KINDS:  # OUT/train, OUT/val would be datasets nested inside a dataset or a run
        what = "is a file" if kind == "file" else f"holds {describe(kind)}"
        raise UserError(f"--out {out} {what}; split writes one dataset per split under --out "
                        f"({child(str(out), next(iter(fractions)))}, ...): give a new folder")
    for name in fractions:  # a file or a run where a split dataset goes: refused before anything is written
        check_out(child(out, name), "dataset")
    ds = Dataset(source)
    check_shard_schemas(ds)
    base = storage.resolve(out)
    config = {"split_of": ds.location.uri, "fractions": fractions, "seed": seed}
    roots = {name: base.child(name) for name in fractions}  # Locations: their messages name the user's URI
    made = False
    for root in roots.values():
        manifest = storage.read_manifest(root)
        if manifest is not None and manifest.get("config") != redact_json(config):
            raise UserError(f"{root.uri}: holds another dataset than this split ({manifest.get('config')}); "
                            "choose a new --out, or the same source, --fractions and --seed to finish it")
        made = made or manifest is not None
    if not len(ds) and not made:  # else empty split datasets are made, exit 0 (a split made before follows its source)
        raise UserError(f"{ds.location.uri}: the dataset holds no episodes; nothing to split")
    checksums = {s["path"]: s["checksum"] for s in ds.manifest["shards"]}
    rows = [with_split_source(r, checksums[r["shard"]]) for r in ds.episodes.to_pylist()]
    assigned = {name: [r for r in rows if assign_split(r["episode_id"], fractions, seed) == name] for name in fractions}
    say_empty(assigned, fractions, seed)
    spec, token = ds.spec, uuid.uuid4().hex[:6]
    local = [root.path for root in roots.values()] if base.is_local else []  # object stores have no locks: the user keeps jobs apart
    with job_lock(local, "dataset split"):
        started_at = time.time() - 1.0  # 1 s of clock skew
        for name, members in assigned.items():
            changed, stale = stale_episodes(roots[name], {r["episode_id"]: split_source_of(r) for r in rows})
            if stale:
                say_stale(roots[name].uri, ds.location.uri, changed, stale, {r["episode_id"] for r in members})
                with DatasetWriter(roots[name], spec.height, spec.width, spec.fps, spec.codec, config=config,
                                   writer_id=f"split-{token}-{name}-again", autocommit=False) as w:
                    w.release_ids(stale)
                    for row in members:
                        if row["episode_id"] in stale:
                            w.add_encoded_episode(ds.read_table(row["episode_id"]), {**row, "split": name})
                commit_shards(roots[name], w.shards, replace=stale)  # one manifest write: old or new
            done = committed_episode_ids(roots[name])
            with DatasetWriter(roots[name], spec.height, spec.width, spec.fps, spec.codec, config=config,
                               writer_id=f"split-{token}-{name}") as w:
                for row in members:
                    if row["episode_id"] not in done:
                        w.add_encoded_episode(ds.read_table(row["episode_id"]), {**row, "split": name})
        for root in local:
            sweep_orphans(root, token, started_at)
    return {name: [r["episode_id"] for r in members] for name, members in assigned.items()}


def say_empty(assigned: dict[str, list], fractions: dict[str, float], seed: int) -> None:
    """One warning line when a split asked for (fraction above 0) drew no episode while there are at least as
    many episodes as such splits (2 episodes at train=0.5 val=0.5 could both go to val without a word), naming
    the nearest --seed that fills every one. Each episode keeps its own draw, so that adding episodes never moves
    the others (a split's episodes never leak into another as a dataset grows); few episodes can leave a split empty."""
    wanted = [name for name, fraction in fractions.items() if fraction > 0]
    ids = [r["episode_id"] for members in assigned.values() for r in members]
    empty = [name for name in wanted if not assigned[name]]
    if not empty or len(ids) < len(wanted):
        return
    fills = next((s for s in range(seed + 1, seed + 10_001)
                  if {assign_split(eid, fractions, s) for eid in ids} >= set(wanted)), None)
    hint = f"--seed {fills} fills every split" if fills is not None else "give fewer splits"
    print(f"dataset split: warning: {', '.join(empty)} drew none of the {len(ids)} episodes (--seed {seed}): each "
          f"episode's split is drawn from a hash of the seed and its id, so that adding episodes never moves the "
          f"others, and few episodes can leave a split empty; {hint}", file=sys.stderr)


def say_stale(where: str, source: str, changed: set[str], retired: set[str], members: set[str]) -> None:
    """One line: which committed episodes of a split are copied again and which dropped, and why."""
    again, gone, mates = sorted(changed & members), sorted(changed - members), len(retired - changed)
    parts = [f"{len(again)} episode(s) changed in {source} since they were split (e.g. {again[0]!r}): copied again"] if again else []
    parts += [f"{len(gone)} no longer in {source} (e.g. {gone[0]!r}): dropped"] if gone else []
    mates_words = f" ({mates} other(s) of their shards copied again with them)" if mates else ""
    print(f"dataset split: {where}: {'; '.join(parts)}{mates_words}", file=sys.stderr)


def with_split_source(row: dict, shard_checksum: str) -> dict:
    """A source episode row whose env_config records what was split: its shard's checksum and rows."""
    env_config = json.loads(row["env_config"]) if row["env_config"] else {}
    env_config["split_source"] = f"shard:{shard_checksum}:{row['row_start']}:{row['num_steps']}"
    return {**row, "env_config": json_text(env_config, indent=None, sort_keys=True)}


def split_source_of(row: dict) -> str | None:
    """The `split_source` an episode row records (None for a row of a split made before it was recorded)."""
    return json.loads(row["env_config"]).get("split_source") if row["env_config"] else None


def stale_episodes(root: storage.Location, sources: dict[str, str | None]) -> tuple[set[str], set[str]]:
    """(changed, retired): the committed episodes of the split at `root` whose source content changed or is
    gone (or was not recorded), and those with every other episode of their shards (a replaced episode
    leaves with its whole shard)."""
    manifest = storage.read_manifest(root)
    if manifest is None:
        return set(), set()
    episodes = _committed_episodes(root, manifest).to_pylist()
    changed = {r["episode_id"] for r in episodes
               if split_source_of(r) is None or split_source_of(r) != sources.get(r["episode_id"])}
    shards = {r["shard"] for r in episodes if r["episode_id"] in changed}
    return changed, {r["episode_id"] for r in episodes if r["shard"] in shards}
