"""Discovery for `worldloom dataset ingest`: its inputs (folders, files, .txt lists) -> work items,
one per recording, each with the `Source` that resume decisions read.

    from worldloom.datasets.ingest import IngestConfig, discover
    items, bad = discover(IngestConfig(data=("recordings/",), out="data/vpt"))   # [(item, Source)], [unusable inputs]

A VPT item pairs an .mp4 with its .jsonl (same name, in any case, or a `VIDEO JSONL` line of a
list); a MineRL item is a trajectory folder (recording.mp4, rendered.npz, metadata.json); a video
item is one video file. An input that cannot form an item (a missing partner file) is returned
with the reason, never passed over.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from worldloom.errors import UserError

from . import minerl, vpt
from .sources import HASH_PREFIX, Source, file_hash, relative_name
from .video import (
    PICTURE_SUFFIXES,
    VIDEO_SUFFIXES,
    files_under,
    left_out_words,
    output_folders,
    video_files,
)

if TYPE_CHECKING:
    from .ingest import IngestConfig

VPT_SUFFIXES = (".mp4", ".jsonl")  # a VPT recording's two files, in any case


class FilesSource(Source):
    """An input made of several files (a VPT pair, a MineRL trajectory): its content is all of them."""

    files: tuple[str, ...] = ()
    checksums: dict[str, str] | None = None

    def content_key(self) -> str:
        if self.key is None:
            self.checksums = {path: file_hash(path) for path in self.files}
            digest = hashlib.blake2b(digest_size=16)
            for path in self.files:
                digest.update(self.checksums[path].encode())
            self.key = HASH_PREFIX + digest.hexdigest()
        return self.key

    def identity(self, name: str) -> dict:
        """Source.identity, plus each file's blake2b checksum."""
        record = super().identity(name)
        record["file_checksums"] = self.checksums
        return record


def files_source(main: Path, files: list[Path], root: Path, name: str) -> FilesSource:
    """A Source named `name`, changed when any of `files` changes size or modification time."""
    stats = [f.stat() for f in files]
    source = FilesSource(origin=str(main.resolve()), name=name, relpath=name,
                         size_bytes=sum(s.st_size for s in stats), mtime_ns=max(s.st_mtime_ns for s in stats),
                         ctime_ns=max(s.st_ctime_ns for s in stats))
    source.files = tuple(str(f.resolve()) for f in files)
    return source


def _inputs(cfg: IngestConfig) -> list[tuple[Path, Path, Path | None]]:
    """(path, the root its name is relative to, its partner file or None) of every input: folders stay
    folders; a .txt list gives a file per line, or a pair (`VIDEO JSONL`) when a line names two."""
    out = []
    for entry in cfg.data:
        path = Path(entry).expanduser()
        if not path.exists():
            raise UserError(f"--data {entry}: no such file or folder")
        if not (path.is_file() and path.suffix.lower() == ".txt"):
            out.append((path, path if path.is_dir() else path.parent, None))
            continue
        for listed in _listed_files(path):
            out.append((listed[0], listed[0].parent, listed[1] if len(listed) == 2 else None))
    return out


def _listed_files(path: Path) -> Iterator[list[Path]]:
    """The files of each line of a .txt list: one file, or a `VIDEO JSONL` pair. Lines are as people
    write them: blank lines and `#` comments skipped, a BOM, CRLF, names with spaces (whole, or quoted),
    `~`; a relative path is relative to the list's folder. UserError naming the line otherwise."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot be read as a text list of files ({err})") from None

    def file(part: str) -> Path:
        return path.parent / Path(part).expanduser()  # an absolute part stays absolute

    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if file(line).exists():  # one file, spaces and all
            yield [file(line)]
            continue
        try:
            parts = shlex.split(line)  # "my recs/a.mp4" "my recs/a.jsonl"
        except ValueError:
            parts = line.split()
        if len(parts) <= 2 and all(file(part).exists() for part in parts):
            yield [file(part) for part in parts]
            continue
        splits = [[file(line[:m.start()]), file(line[m.end():])] for m in re.finditer(r"\s+", line)]
        pair = next((two for two in splits if all(f.exists() for f in two)), None)  # a pair, unquoted spaces
        if pair:
            yield pair
        elif len(parts) > 2:
            raise UserError(f"{path} line {number}: one file or a `VIDEO JSONL` pair per line, got {len(parts)} "
                            "names (quote a name that has spaces)")
        else:  # a pair with one file missing names it; else the line is taken as one name
            found = [file(part).exists() for part in parts]
            missing = file(parts[found.index(False)]) if any(found) else file(line)
            raise UserError(f"{path} line {number}: {missing} does not exist")


def discover(cfg: IngestConfig) -> tuple[list[tuple[dict, Source]], list[dict]]:
    """([(work item, its Source)], [inputs that cannot form an item, with the reason])."""
    discover_format = {"vpt": _discover_vpt, "minerl": _discover_minerl, "video": _discover_video}[cfg.format]
    found = discover_format(_inputs(cfg), skip=output_folders(cfg.out))
    items, bad, seen = [], [], set()
    for item, source, error in found:
        if error:
            bad.append({"item": item, "ok": False, "error": error})
        elif source.origin not in seen:
            seen.add(source.origin)
            source.made_by = made_by(cfg, item)
            items.append((item, source))
    if not items and not bad:
        what = {"vpt": "VPT recordings (.mp4 + .jsonl)", "minerl": "MineRL trajectories (rendered.npz)",
                "video": f"video files ({', '.join(VIDEO_SUFFIXES)}, or an animated {'/'.join(PICTURE_SUFFIXES)})"}[cfg.format]
        raise UserError(f"--data {' '.join(cfg.data)}: holds no {what}")
    return items, bad


def made_by(cfg: IngestConfig, item: dict) -> str | None:
    """How this job converts the input where a flag decides it (`sources.conversion` reads it back from an
    episode): a VPT recording's recorder version, --recorder-version or its folder's (it sets the GUI mouse
    scaler), so that one ingested under another version is not done. None for MineRL and plain video."""
    if item["kind"] != "vpt":
        return None
    return f"recorder version {cfg.recorder_version or vpt.recorder_version(item['jsonl']) or 'unknown'}"


def _discover_vpt(inputs: list[tuple[Path, Path, Path | None]], skip: list[str]):
    pairs: dict[Path, tuple[Path, Path, Path]] = {}  # stem path -> (root, video, jsonl)
    for path, root, partner in inputs:
        if partner is not None:  # a listed pair: the files may have different names
            video, jsonl = (path, partner) if path.suffix.lower() != ".jsonl" else (partner, path)
            pairs[video.with_suffix("")] = (root, video, jsonl)
            continue
        files = files_under(path, skip=skip) if path.is_dir() else [path]
        siblings = _by_folded_stem(files if path.is_dir() else [p for p in path.parent.iterdir() if p.is_file()])
        for f in files:
            if f.suffix.lower() in VPT_SUFFIXES or not path.is_dir():
                video, jsonl = _vpt_pair(f, siblings)
                pairs.setdefault(video.with_suffix(""), (root, video, jsonl))
    for stem, (root, video, jsonl) in sorted(pairs.items()):
        name = relative_name(stem, root)
        item = {"kind": "vpt", "source": str(video if video.exists() else jsonl), "video": str(video), "jsonl": str(jsonl)}
        if not jsonl.is_file():
            yield item, None, (f"{video}: no {jsonl.name} beside it (a VPT recording is an .mp4 and a .jsonl of the same "
                               "name); for plain videos without actions pass --format video")
        elif not video.is_file():
            yield item, None, f"{jsonl}: no {video.name} beside it (a VPT recording is an .mp4 and a .jsonl of the same name)"
        else:
            yield item, files_source(video, [video, jsonl], root, name), None


def _by_folded_stem(files: list[Path]) -> dict[tuple[Path, str], list[Path]]:
    """The VPT files (.mp4, .jsonl in any case) among `files`, by (folder, name without suffix, lower case)."""
    out: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        if f.suffix.lower() in VPT_SUFFIXES:
            out.setdefault((f.parent, f.stem.lower()), []).append(f)
    return out


def _vpt_pair(f: Path, siblings: dict[tuple[Path, str], list[Path]]) -> tuple[Path, Path]:
    """(video, jsonl) of the recording `f` belongs to: the same name with .mp4 and .jsonl, matched
    regardless of case when its folder holds one of each under that name (`REC.MP4` beside `rec.jsonl`,
    as copies through Windows, FAT drives and cameras leave them); else the exact names."""
    group = siblings.get((f.parent, f.stem.lower()), [])
    videos = [p for p in group if p.suffix.lower() == ".mp4"]
    jsonls = [p for p in group if p.suffix.lower() == ".jsonl"]
    if len(videos) == 1 and len(jsonls) == 1:
        return videos[0], jsonls[0]
    video = f if f.suffix.lower() == ".mp4" else f.parent / (f.stem + ".mp4")
    return video, f if f.suffix.lower() == ".jsonl" else f.parent / (f.stem + ".jsonl")


def _discover_minerl(inputs: list[tuple[Path, Path, Path | None]], skip: list[str]):
    folders: dict[Path, Path] = {}
    for path, root, _ in inputs:
        if path.is_dir():
            # a folder with either main file is a trajectory: one missing its npz (a partial download) is
            # reported, never passed over in silence
            names = (minerl.NPZ_NAME, minerl.VIDEO_NAME)
            hits = [path] if any((path / n).exists() for n in names) else sorted({p.parent for p in files_under(path, skip=skip)
                                                                                  if p.name in names})
            for folder in hits:
                folders.setdefault(folder, root if folder != path else path.parent)
        else:
            folders.setdefault(path.parent, path.parent.parent)
    for folder, root in sorted(folders.items()):
        video, npz, meta = folder / minerl.VIDEO_NAME, folder / minerl.NPZ_NAME, folder / minerl.METADATA_NAME
        item = {"kind": "minerl", "source": str(folder), "video": str(video), "npz": str(npz), "metadata": str(meta)}
        missing = [p.name for p in (video, npz) if not p.is_file()]
        if missing:
            yield item, None, f"{folder}: no {' and no '.join(missing)} (a MineRL v0 trajectory folder holds " \
                              f"{minerl.VIDEO_NAME}, {minerl.NPZ_NAME} and {minerl.METADATA_NAME})"
            continue
        files = [video, npz] + ([meta] if meta.is_file() else [])
        yield item, files_source(folder, files, root, relative_name(folder, root)), None


def _discover_video(inputs: list[tuple[Path, Path, Path | None]], skip: list[str]):
    inputs = [(p, root, None) for path, root, partner in inputs for p in (path, partner) if p is not None]
    for path, root, _ in inputs:
        files, left_out = video_files(path, skip) if path.is_dir() else ([path], [])
        if left_out:  # never silently: a camera's clips under a suffix not listed would be missing from the data
            print(f"dataset ingest: {left_out_words(path, left_out)}", file=sys.stderr)
        for f in files:
            name = relative_name(f, root)
            yield ({"kind": "video", "source": str(f), "video": str(f)},
                   files_source(f, [f], root, name), None)
