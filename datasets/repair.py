"""Drop the episodes of damaged or missing shards so that capture can record them again.

    worldloom dataset repair data/run1        # prints the shards set aside and the episodes dropped
    worldloom capture run ... --out data/run1  # the same command as before: records exactly those

A shard is damaged when it is missing, or its size or checksum differs from `dataset.json`.
`repair` removes such shards from the manifest in one atomic write (the commit point, as in
`commit_shards`), then rewrites `episodes.parquet` without their rows, and moves each damaged
file that still exists to `damaged/` under the dataset root (never deleted: the user decides).
Their episodes are then no longer committed, so re-running the capture command records them
again, exactly once. `damaged_shards(..., check_sums=False)` is the cheap check (file exists,
size matches) that `capture run` makes on the shards of the episodes it would skip.
"""

from __future__ import annotations

import os
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from worldloom.errors import UserError

from . import schema, storage
from .writer import _committed_episodes, file_checksum

__all__ = ["DAMAGED_DIR", "damaged_shards", "repair"]

DAMAGED_DIR = "damaged"


def _parquet_magic(path: str) -> bool:
    """Whether the local file at `path` begins and ends with Parquet's magic bytes (PAR1)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if f.seek(0, os.SEEK_END) < 8:
            return False
        f.seek(-4, os.SEEK_END)
        return head == b"PAR1" and f.read(4) == b"PAR1"


def shard_problem(loc: storage.Location, entry: dict, check_sums: bool) -> str | None:
    """Why the listed shard `entry` is damaged ("missing", "size ...", "checksum ..."), or None."""
    info = loc.fs.get_file_info(loc.join(entry["path"]))
    if info.type != pafs.FileType.File:
        return "missing"
    if info.size != entry["size_bytes"]:
        return f"size is {info.size} bytes, dataset.json says {entry['size_bytes']}"
    if loc.is_local and not check_sums and not _parquet_magic(loc.join(entry["path"])):
        # A crash can leave a file of the right size full of zeros on a local disk (delayed
        # allocation); 8 bytes read tell it from a Parquet file. Object stores write whole objects.
        return "not a Parquet file (its first and last 4 bytes are not PAR1: zeroed or overwritten)"
    if check_sums:
        checksum, _ = file_checksum(loc.fs, loc.join(entry["path"]))
        if checksum != entry["checksum"]:
            return f"checksum {checksum} differs from dataset.json's {entry['checksum']}"
    return None


def damaged_shards(root: str | os.PathLike, episode_ids: set[str] | None = None, check_sums: bool = False,
                   filesystem: pafs.FileSystem | None = None) -> dict[str, str]:
    """{shard path: what is wrong} for the listed shards that are damaged, among those holding one
    of `episode_ids` (all listed shards if None). `check_sums` also reads every byte."""
    loc = storage.resolve(root, filesystem)
    manifest = storage.read_manifest(loc)
    if manifest is None:
        return {}
    entries = manifest["shards"]
    if episode_ids is not None:
        episodes = _committed_episodes(loc, manifest)
        wanted = episodes.filter(pc.is_in(episodes.column("episode_id"), value_set=pa.array(sorted(episode_ids), pa.string())))
        paths = set(wanted.column("shard").to_pylist())
        entries = [e for e in entries if e["path"] in paths]
    found = {}
    for entry in entries:
        problem = shard_problem(loc, entry, check_sums)
        if problem is not None:
            found[entry["path"]] = problem
    return found


def repair(root: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> dict:
    """Drop the damaged shards of the dataset at `root` and their episodes; returns
    {"shards": {path: problem}, "episodes": [ids dropped], "moved": {path: where it went},
    "hint": how to get them back}. UserError if there is no dataset, or its index files are themselves unreadable."""
    loc = storage.resolve(root, filesystem)
    # Checked before the lock, which makes the folder: a typo'd path or a file is refused with nothing made.
    if storage.read_manifest(loc) is None:
        raise UserError(f"{loc.uri}: no {schema.MANIFEST_NAME} here; give the directory of a WorldLoom dataset")
    with storage.locked(loc):
        manifest = storage.read_manifest(loc)
        if manifest is None:
            raise UserError(f"{loc.uri}: no {schema.MANIFEST_NAME} here; give the directory of a WorldLoom dataset")
        episodes = _committed_episodes(loc, manifest)  # UserError naming the file if unreadable
        bad = {e["path"]: p for e in manifest["shards"] if (p := shard_problem(loc, e, check_sums=True)) is not None}
        if not bad:
            return {"shards": {}, "episodes": [], "moved": {}, "hint": ""}
        in_bad = pc.is_in(episodes.column("shard"), value_set=pa.array(sorted(bad), pa.string()))
        dropped = sorted(episodes.filter(in_bad).column("episode_id").to_pylist())
        kept = episodes.filter(pc.invert(in_bad))
        # The manifest is the commit point: once it stops listing the shards, their rows in
        # episodes.parquet are not data (see manifest.committed_episodes), so a crash between
        # the two writes leaves a valid dataset either way.
        manifest["shards"] = [s for s in manifest["shards"] if s["path"] not in bad]
        manifest["num_frames"] = sum(s["num_rows"] for s in manifest["shards"])
        manifest["num_episodes"] = kept.num_rows
        sources = set(kept.column("label_source").to_pylist())
        manifest["label_sources"] = [s for s in schema.LABEL_SOURCES if s in sources]
        storage.write_manifest(loc, manifest)
        storage.write_table_atomic(loc, loc.join(schema.EPISODES_NAME), kept)
        moved = {}
        for rel, problem in bad.items():
            if problem != "missing":
                moved[rel] = _move_aside(loc, rel)
    return {"shards": bad, "episodes": dropped, "moved": moved, "hint": remake_hint(manifest.get("config"))}


def remake_hint(config: object) -> str:
    """How to get dropped episodes back, from the dataset's `config` (free-form: anything may be there)."""
    config = config if isinstance(config, dict) else {}
    sources = config.get("merged_from")
    if isinstance(sources, list) and sources:  # a merge into this dataset refuses the episodes it still holds
        return (f"merge its sources ({', '.join(map(str, sources))}) again into a new --out to get them back "
                "(a merge into this dataset refuses the episodes it still holds)")
    if "split_of" in config:
        return "re-run the `worldloom dataset split` command that made it to copy them again"
    if config.get("job") in ("worldloom idm label", "worldloom dataset ingest"):
        return f"re-run the `{config['job']}` command that made them to record them again"
    return "re-run the capture command that made them to record them again"


def _move_aside(loc: storage.Location, rel: str) -> str:
    """Move the shard at `rel` to damaged/NAME (NAME.1, NAME.2, ... if taken); the new relative path."""
    loc.fs.create_dir(loc.join(DAMAGED_DIR), recursive=True)
    name = posixpath.basename(rel)
    target, n = f"{DAMAGED_DIR}/{name}", 0
    while storage.exists(loc, loc.join(target)):
        n += 1
        target = f"{DAMAGED_DIR}/{name}.{n}"
    loc.fs.move(loc.join(rel), loc.join(target))
    return target
