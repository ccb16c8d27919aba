"""Where a dataset lives: filesystems (local, S3, GCS through pyarrow), the manifest, the lock.

Every file of a dataset is written to a temporary name in the same directory and renamed, so a
reader sees a whole file or none. On a local filesystem an exclusive lock file serialises the
read-modify-write of `dataset.json` and `episodes.parquet` between writer processes; on object
stores (no locks) one driver commits the shards that its workers report (`commit_shards`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from worldloom import paths
from worldloom.errors import UserError
from worldloom.io import json_text

from . import schema
from .codecs import get_codec
from .manifest import check_manifest

MIN_SIDE, MAX_SIDE = 8, 4096  # pixels a side of a stored frame


@dataclass(frozen=True)
class FrameSpec:
    """What every frame of a dataset shares; two datasets merge only if these are equal."""

    height: int
    width: int
    fps: float
    codec: str

    def __post_init__(self) -> None:
        if not (isinstance(self.height, int) and MIN_SIDE <= self.height <= MAX_SIDE):
            raise ValueError(f"height must be an int in {MIN_SIDE}..{MAX_SIDE}, got {self.height!r}")
        if not (isinstance(self.width, int) and MIN_SIDE <= self.width <= MAX_SIDE):
            raise ValueError(f"width must be an int in {MIN_SIDE}..{MAX_SIDE}, got {self.width!r}")
        if not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ValueError(f"fps must be > 0, got {self.fps!r}")
        get_codec(self.codec)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Location:
    """A dataset root on a pyarrow filesystem; `path` is in the filesystem's own form."""

    fs: pafs.FileSystem
    path: str
    uri: str  # what the user typed, credentials redacted (worldloom.paths.redact_uri): for messages

    def join(self, *parts: str) -> str:
        """A path below the root built by WorldLoom itself (for a path read from a file: `member`)."""
        return posixpath.join(self.path, *parts)

    def uri_of(self, *parts: str) -> str:
        """How a message names `parts` below the root: the user's URI (redacted) with them in its path,
        before its `?query` (`s3://b/d/episodes.parquet?endpoint_override=...`; worldloom.paths.child),
        so that a command it suggests runs when pasted."""
        return paths.child(self.uri, *parts)

    @property
    def arg(self) -> str:
        """The root as a word of a command a hint suggests (`worldloom dataset validate {loc.arg}`): the
        user's URI, redacted, quoted for the shell where it holds `?`, `&` or a space (paths.shell_word)."""
        return paths.shell_word(self.uri)

    def child(self, *parts: str) -> Location:
        """The Location of a folder below the root (a split's dataset under `dataset split --out`)."""
        return Location(self.fs, self.join(*parts), self.uri_of(*parts))

    def member(self, rel: object, *, source: str, field: str) -> str:
        """The full path of `rel`, a path read from `source`'s `field`, after checking that it stays
        inside the root (symlinks resolved on local disk, under the prefix on object stores);
        UserError naming the file, the field and the path otherwise, before anything is opened."""
        if self.is_local:
            return str(paths.inside(self.path, rel, source=source, field=field))
        return self.join(paths.check_relative(rel, source=source, field=field))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)


# Google Cloud Storage: how long pyarrow retries a request that fails before it gives up. Its own
# default is 15 minutes, so `dataset inspect gs://...` on a machine without credentials or network
# sat silent for 16 minutes (and ignored Ctrl-C meanwhile). A URI's own `retry_limit_seconds` wins.
GCS_RETRY_LIMIT_S = 30


def with_retry_limit(uri: str) -> str:
    """`uri` with `retry_limit_seconds=GCS_RETRY_LIMIT_S` added when it is a gs:// URI without one."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in ("gs", "gcs") or "retry_limit_seconds=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}retry_limit_seconds={GCS_RETRY_LIMIT_S}"


def resolve(root: str | os.PathLike | Location, filesystem: pafs.FileSystem | None = None) -> Location:
    """A local path, a URI (`s3://bucket/prefix?endpoint_override=...`), a path on `filesystem`, or a
    Location as it is. Messages name a Location by its `uri`: for a path on `filesystem` that is the
    bare path (`bucket/prefix`), which no command opens, so code that has the user's Location (a
    writer, a split) passes it on rather than its `path` and `fs`."""
    if isinstance(root, Location):
        return root
    text = os.fspath(root)
    if filesystem is not None:
        return Location(filesystem, text.rstrip("/"), paths.redact_uri(text))
    if "://" in text:
        try:
            fs, path = pafs.FileSystem.from_uri(with_retry_limit(text))
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"{paths.redact_uri(text)}: cannot open this filesystem URI ({paths.redact_text(str(err))})") from None
        return Location(fs, path.rstrip("/"), paths.redact_uri(text))
    return Location(pafs.LocalFileSystem(), os.path.abspath(text), text)


def exists(loc: Location, path: str) -> bool:
    return loc.fs.get_file_info(path).type != pafs.FileType.NotFound


def tmp_name(path: str) -> str:
    """A temporary sibling of `path`: hidden (leading dot) and not ending in .parquet/.json, so
    globs like `frames/*.parquet` and pyarrow datasets never pick up a half-written file."""
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}.{uuid.uuid4().hex[:8]}.tmp")


def sync_local(loc: Location, path: str) -> None:
    """On a local disk, flush `path` (a file, or the folder a rename changed) to the disk: a power cut
    after a commit keeps the committed file, not an empty one. Object stores commit on close."""
    if not isinstance(loc.fs, pafs.LocalFileSystem):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on a system that does not open folders (Windows): the rename stands unflushed
        if os.path.isdir(path):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(loc: Location, path: str, data: bytes) -> None:
    """`data` to `path` under a temporary name, flushed to disk, then renamed (readers see all or nothing)."""
    tmp = tmp_name(path)
    with loc.fs.open_output_stream(tmp) as out:
        out.write(data)
    sync_local(loc, tmp)
    loc.fs.move(tmp, path)
    sync_local(loc, posixpath.dirname(path))


def write_table_atomic(loc: Location, path: str, table: pa.Table) -> None:
    """A Parquet table to `path`, the same way as write_bytes_atomic."""
    tmp = tmp_name(path)
    pq.write_table(table, tmp, filesystem=loc.fs, compression="zstd")
    sync_local(loc, tmp)
    loc.fs.move(tmp, path)
    sync_local(loc, posixpath.dirname(path))


def read_manifest(loc: Location) -> dict | None:
    """The parsed `dataset.json`, or None if the directory holds no dataset yet."""
    path = loc.join(schema.MANIFEST_NAME)
    try:  # the first byte a command reads of a dataset: an object store out of reach or refusing is said here
        if not exists(loc, path):
            return None
        with loc.fs.open_input_stream(path) as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except OSError as err:
        where = "check the URI's address (endpoint_override) and credentials" if not loc.is_local else "check its permissions"
        raise UserError(f"{loc.uri}: cannot read its {schema.MANIFEST_NAME} ({paths.redact_text(str(err))}); {where}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise UserError(f"{loc.uri_of(schema.MANIFEST_NAME)}: not valid JSON ({err}); restore it from a backup or re-create the dataset") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if isinstance(version, bool) or version not in schema.READABLE_VERSIONS:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > max(schema.READABLE_VERSIONS)
        raise UserError(
            f"{loc.uri_of(schema.MANIFEST_NAME)}: format_version is {version!r}, this WorldLoom reads "
            f"versions {' and '.join(map(str, schema.READABLE_VERSIONS))}; "
            + ("it was written by a newer WorldLoom: upgrade WorldLoom to read it" if newer else
               "use the WorldLoom release that wrote it or convert the dataset")
        )
    check_manifest(manifest, loc.uri_of(schema.MANIFEST_NAME))
    return manifest


def content_id(root: str | os.PathLike) -> str | None:
    """'blake2b-64:<hex>' of the shards a dataset has committed (their paths and checksums): what a trainer's
    run records of its data, so that another capture, label or edit under the same name is not taken for the
    data it was trained on; None where no dataset is there."""
    import hashlib

    manifest = read_manifest(resolve(root))
    if manifest is None:
        return None
    shards = sorted((str(s.get("path")), str(s.get("checksum"))) for s in manifest.get("shards", []))
    return "blake2b-64:" + hashlib.blake2b(json.dumps(shards).encode(), digest_size=8).hexdigest()


def content_ids(roots) -> dict[str, str | None]:
    """{dataset folder as given: its content_id}: what a trainer records in its run's config.json."""
    return {str(root): content_id(root) for root in roots}


def version_of(manifest: dict) -> int:
    """The format version of a manifest read by `read_manifest` (1 or 2)."""
    return int(manifest["format_version"])


def write_manifest(loc: Location, manifest: dict) -> None:
    data = (json_text(manifest, indent=2) + "\n").encode("utf-8")
    write_bytes_atomic(loc, loc.join(schema.MANIFEST_NAME), data)


def spec_of(manifest: dict) -> FrameSpec:
    return FrameSpec(
        height=int(manifest["height"]), width=int(manifest["width"]), fps=manifest["fps"], codec=manifest["codec"]
    )


def stored_fps(root: str | os.PathLike | Location) -> float | None:
    """The steps per second the dataset at `root` stores, None where it holds none yet: what its steps
    mean in seconds (a dataset of video ingested at --fps 10 holds 10 a second, not the game's 20)."""
    manifest = read_manifest(resolve(root))
    return None if manifest is None else float(spec_of(manifest).fps)


def record_at_hint(width: int, height: int) -> str:
    """The commands that make a dataset of `width` x `height` frames, for a size-mismatch message."""
    capture = f"`worldloom capture run ... --resolution {width}`, " if width == height else ""
    return f"record it again at {width}x{height} ({capture}`worldloom dataset ingest ... --resolution {width}x{height}`)"


def resize_words(from_hw: tuple[int, int], to_hw: tuple[int, int]) -> str:
    """`frames 512x540 -> 64x64 (aspect 0.95 -> 1)`: a resize of (height, width) frames in words,
    WIDTHxHEIGHT as everywhere, the aspect ratio (width / height) named when it changes."""
    (h0, w0), (h1, w1) = from_hw, to_hw
    aspect = round(w0 / h0, 2), round(w1 / h1, 2)
    squashed = f" (aspect {aspect[0]:g} -> {aspect[1]:g})" if aspect[0] != aspect[1] else ""
    return f"frames {w0}x{h0} -> {w1}x{h1}{squashed}"


class SpecMismatch(UserError):
    """Frames of another size, fps or codec than the dataset's; `dataset` is the dataset's spec."""

    def __init__(self, message: str, dataset: FrameSpec):
        super().__init__(message)
        self.dataset = dataset


def check_spec(loc: Location, manifest: dict, spec: FrameSpec) -> None:
    """SpecMismatch naming the first field where `spec` differs from the dataset's; a command that
    can store its input at another size adds its own flag for that (ingest --resolution, label --frames)."""
    have = spec_of(manifest)
    for field in ("height", "width", "fps", "codec"):
        theirs, ours = getattr(have, field), getattr(spec, field)
        if theirs != ours:
            raise SpecMismatch(
                f"{loc.uri_of(schema.MANIFEST_NAME)}: the dataset stores {have.width}x{have.height} frames at "
                f"{have.fps:g} fps ({have.codec}), these are {spec.width}x{spec.height} at {spec.fps:g} fps "
                f"({spec.codec}): {field} differs, and a dataset holds one kind of frame; give a new --out", have)


@contextlib.contextmanager
def locked(loc: Location) -> Iterator[None]:
    """Exclusive access to the manifest between processes (local filesystems only)."""
    if not loc.is_local:
        yield
        return
    os.makedirs(loc.path, exist_ok=True)
    fd = os.open(loc.join(schema.LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_episodes(loc: Location) -> pa.Table:
    """`episodes.parquet` as written (empty table with the schema if absent); unchecked: readers
    take the committed rows through `manifest.committed_episodes`."""
    path = loc.join(schema.EPISODES_NAME)
    if not exists(loc, path):
        return schema.EPISODE_SCHEMA.empty_table()
    try:
        # One open file: the dataset reader behind `pq.read_table(path)` may open the path twice
        # (footer, then pages), and a writer's rename in between pairs one file's footer with
        # another's pages ("Page was smaller than expected"); an open handle keeps its inode.
        with loc.fs.open_input_file(path) as f:
            return pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as err:
        raise UserError(
            f"{loc.uri_of(schema.EPISODES_NAME)}: cannot read ({err}); run `worldloom dataset validate {loc.arg}`"
        ) from None
