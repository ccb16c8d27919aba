"""Paths and URIs that cross a trust boundary: paths read from files stay inside their root, and
URIs lose their credentials before they are stored or shown.

    from worldloom.paths import inside, redact_uri
    weights = inside(run_dir, state["model_file"], source=run_dir / "state.json", field="model_file")
    manifest["config"] = redact_json(config)        # s3://KEY:SECRET@b/p -> s3://***@b/p
    child("s3://b/splits?endpoint_override=h:9000", "train")  # s3://b/splits/train?endpoint_override=h:9000
    f"run `worldloom dataset validate {shell_word(uri)}`"       # 's3://b/d?endpoint_override=h:9000&scheme=http'

Datasets and runs travel: users download them, copy them from colleagues, read them from shared
buckets. So a path that a manifest, an episodes table, a run's JSON or a pipeline record names is
checked before anything is opened: it must be a normalised relative POSIX path (no `..`, no
leading `/`, no drive such as `C:`, no backslash, no URL scheme, no %-escape such as `%2e`, no
control character) and, on local disk, it must still lie inside the root once every symlink is
resolved. A URI keeps its scheme, host and path; its user-info and every query parameter whose
name says key, secret, token, password, signature or credential become `***`. A file or folder
below a URI goes into its path, before its `?query` (`child`): a URI with a name pasted after its
query opens another place, or none.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from worldloom.errors import UserError

__all__ = ["check_relative", "child", "inside", "shell_word", "is_inside", "redact_uri", "redact_text", "redact_json", "REDACTED", "PLAIN_PATH"]

REDACTED = "***"
_DRIVE = re.compile(r"^[A-Za-z]:")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The common case, accepted at once: components of letters, digits, `_`, `-` and `.`, none
# starting with a dot (so none is `.` or `..`), e.g. frames/part-w0-00000.parquet
PLAIN_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
# Query parameter names that carry a credential in pyarrow, fsspec, boto and signed-URL URIs:
# access_key, secret_key, session_token, account_key, sas_token, X-Amz-Signature, X-Amz-Credential ...
_SECRET_NAME = re.compile(r"key|secret|token|passw|pwd|signature|^sig$|credential|auth", re.IGNORECASE)
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _why_not_relative(rel: Any) -> str | None:
    """Why `rel` is not a safe relative path, or None when it is."""
    if not isinstance(rel, str):
        return f"is {type(rel).__name__}, not a path string"
    if PLAIN_PATH.fullmatch(rel):
        return None
    if not rel:
        return "is empty"
    if _CONTROL.search(rel):
        return "holds a control character"
    if "\\" in rel:
        return "holds a backslash (paths in WorldLoom files are POSIX, relative to their root)"
    if "://" in rel or _SCHEME.match(rel) and not _DRIVE.match(rel):
        return "is a URL, not a path relative to its root"
    if _DRIVE.match(rel):
        return "starts with a drive letter"
    if rel.startswith("/"):
        return "is absolute"
    if _ESCAPE.search(rel):
        return "holds a %-escape (URL-encoded characters such as %2e are not decoded)"
    if ".." in rel.split("/"):
        return "climbs out with '..'"
    if rel == ".":
        return "names the directory itself, not a file in it"
    if posixpath.normpath(rel) != rel:
        return f"is not normalised (would be {posixpath.normpath(rel)!r})"
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_relative(rel: Any, *, source: str | os.PathLike, field: str) -> str:
    """`rel` itself if it is a normalised relative POSIX path; else UserError naming the file
    (`source`), the field and the value. Reads nothing: fit for object stores too."""
    why = _why_not_relative(rel)
    if why is not None:
        raise UserError(f"{redact_text(os.fspath(source))}: {field} {_short(rel)} {why}; paths in it must stay "
                        "inside its directory: restore the file from its source")
    return rel


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True if `path`, symlinks resolved, is `root` or lies below it (symlinks resolved too)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def inside(root: str | os.PathLike, rel: Any, *, source: str | os.PathLike, field: str) -> Path:
    """The local path of `rel` below `root`, symlinks resolved, checked to stay inside `root`
    before anything there is opened; UserError naming `source`, `field` and the value if not."""
    check_relative(rel, source=source, field=field)
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, rel))
    if not is_inside(real_root, real):
        raise UserError(f"{os.fspath(source)}: {field} {_short(rel)} leads outside {os.fspath(root)} (a symlink "
                        f"to {real}); paths in it must stay inside its directory: remove the link")
    return Path(real)


def child(base: str | os.PathLike, *parts: str) -> str:
    """The path or URI of `parts` (names WorldLoom built, or checked by `check_relative`) below `base`:
    below a URI they go into its path, before its `?query` and `#fragment`, which stay as they are
    (`s3://b/out?endpoint_override=h:9000` + `train` -> `s3://b/out/train?endpoint_override=h:9000`);
    below a local path they are joined with `/`. Redacts nothing: give it a redacted URI to show."""
    text = os.fspath(base)
    if not parts:
        return text
    scheme, sep, rest = text.partition("://")
    if not sep:
        return posixpath.join(text, *parts)
    rest, fsep, fragment = rest.partition("#")
    hier, qsep, query = rest.partition("?")
    return f"{scheme}://{posixpath.join(hier, *parts)}{qsep}{query}{fsep}{fragment}"


def redact_uri(uri: str) -> str:
    """`uri` with its user-info and credential-like query values replaced by `***`; any other
    string (a local path) is returned as it is.

    Conservative where a URI is malformed (a secret holding `/`, `?` or `@` unescaped): everything
    between `://` and the last `@` goes, so no part of a user-info survives any parse of it."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    if "@" in rest:
        rest = REDACTED + "@" + rest.rpartition("@")[2]
    rest, fsep, fragment = rest.partition("#")
    hier, qsep, query = rest.partition("?")
    query, fragment = ("&".join(_redact_param(p) for p in part.split("&")) for part in (query, fragment))
    return f"{scheme}://{hier}{qsep}{query}{fsep}{fragment}"


def _redact_param(param: str) -> str:
    name, sep, value = param.partition("=")
    return f"{name}={REDACTED}" if sep and value and _SECRET_NAME.search(name) else param


def shell_word(path: str | os.PathLike) -> str:
    """`path` (a local path or a URI, as the user gave it) as one word of a command that a hint tells the
    user to run: redacted (`redact_uri`), and quoted for a POSIX shell where it would split or expand it
    (a URI's `?` and `&`, a space); a plain path stays as it is (`data/run1`)."""
    import shlex

    return shlex.quote(redact_uri(os.fspath(path)))


def redact_text(text: str) -> str:
    """Every URI inside a message or log line redacted as `redact_uri` does."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text) if "://" in text else text


def redact_json(data: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, tuples, strings) with every URI in it redacted, keys too (a run's
    `data_content` is keyed by its dataset folders)."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {redact_text(k) if isinstance(k, str) else k: redact_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_json(v) for v in data]
    return data
