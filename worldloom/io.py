"""Atomic writes on local disk: a file is written under a temporary name, then renamed into place.

    from worldloom.io import atomic_path, atomic_write_json
    atomic_write_json(run / "state.json", {"step": 100})
    with atomic_path(run / "curves.png") as tmp:      # the temporary name keeps the suffix,
        fig.savefig(tmp)                              # so matplotlib and OpenCV pick the format

A reader sees the old file or the new one, never half of one; a crash or an exception leaves
the old file and no temporary behind (the temporary is hidden, `.NAME.tmp-PID-TOKEN.SUFFIX`,
so listings and globs skip it). Object stores are written whole by pyarrow and need none of
this (`worldloom.datasets.storage`).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "temporary_name"]


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden sibling of `path` unique to this process and call, with the same suffix."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to `path`, on an exception delete it.

    Works for a file or a directory written at the temporary path. A directory replaces an
    existing directory at `path` (the old one is renamed aside, then deleted).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = temporary_name(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write `data` as JSON to `path` atomically (non-JSON values, e.g. paths, as strings)."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=str))
