"""What a folder holds, so that every command that writes a run or a dataset refuses, in one line
and before writing anything, an --out of the wrong kind (a typo'd dataset, another stage's run).

    from worldloom.folders import folder_kind, check_out
    folder_kind("runs/walk/labeled")    # "dataset"
    check_out(cfg.out, "idm")           # UserError naming the folder, what it holds and what to do

Kinds, recognised by the file that marks them:

- "dataset": `dataset.json`, a WorldLoom dataset (`capture run`, `dataset ingest|merge`, `idm label`);
- "idm" | "world_model" | "policy": `config.json` with that "kind", a run of `idm|pretrain|agent train`;
- "task_scorer": `config.json` with that "kind", the critic (task scorer) `agent eval --in-world-model` trains;
- "pipeline": `pipeline.json`, a `worldloom pipeline run`;
- "study": `study.json`, a `worldloom agent study`;
- "eval": `eval.json`, the report of one `worldloom agent eval` (closed loop or dreamt) or `idm eval`;
- "file": not a folder; None: nothing there yet, or an empty folder; "other": a folder holding
  none of these (a folder of runs, a project): left to each command.

Only local paths are looked at: a URI (s3://...) answers None, and the dataset writer checks a
remote dataset's manifest itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from worldloom.errors import UserError
from worldloom.io import check_local, check_parents

__all__ = ["KINDS", "folder_kind", "describe", "check_out", "run_lock", "dataset_holding"]

# kind: (what it is, in words; the file that marks it)
KINDS = {
    "dataset": ("a WorldLoom dataset", "dataset.json"),
    "idm": ("an IDM run", 'config.json with "kind": "idm"'),
    "world_model": ("a world model run", 'config.json with "kind": "world_model"'),
    "policy": ("a policy run", 'config.json with "kind": "policy"'),
    "task_scorer": ("a task scorer run", 'config.json with "kind": "task_scorer"'),
    "pipeline": ("a pipeline run", "pipeline.json"),
    "study": ("an agent study", "study.json"),
    "eval": ("an evaluation report", "eval.json"),
}

RUN_KINDS = ("idm", "world_model", "policy", "task_scorer")  # marked by their config.json's "kind"


def _config_kind(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return kind if kind in RUN_KINDS else None


def folder_kind(path: str | os.PathLike) -> str | None:
    """What `path` holds: a key of KINDS, "file", "other", or None (missing or empty). Reads at
    most one small JSON file; never raises for what it finds."""
    if "://" in os.fspath(path):
        return None
    p = Path(path)
    if not p.exists():
        return None
    if not p.is_dir():
        return "file"
    if (p / "dataset.json").is_file():
        return "dataset"
    if (p / "pipeline.json").is_file():
        return "pipeline"
    if (p / "config.json").is_file():
        kind = _config_kind(p / "config.json")
        if kind is not None:
            return kind
    for kind in ("study", "eval"):
        if (p / KINDS[kind][1]).is_file():
            return kind
    return "other" if any(not name.startswith(".") for name in os.listdir(p)) else None


def describe(kind: str) -> str:
    """`kind` in words with the file that marks it: 'a WorldLoom dataset (dataset.json)'."""
    what, mark = KINDS[kind]
    return f"{what} ({mark})"


def dataset_holding(folder: str | os.PathLike) -> Path | None:
    """The WorldLoom dataset that `folder` is, or lies inside (None: neither; a URI is not looked at)."""
    if "://" in os.fspath(folder):
        return None
    folder = Path(folder).absolute()
    return next((q for q in (folder, *folder.parents) if (q / KINDS["dataset"][1]).is_file()), None)


def check_out(path: str | os.PathLike, want: str, flag: str = "--out") -> None:
    """UserError (one line, nothing written) if `path` is a file or a folder holding something other
    than `want` (a key of KINDS), or an object-store URI for anything but a dataset (runs, reports, pipelines
    and studies are local folders); a new, empty or same-kind folder (resumed) passes, and so does a
    folder of no WorldLoom kind (each command decides about those)."""
    what = KINDS[want][0]
    if want != "dataset":  # pathlib reads `s3://b/run` as the local folder `s3:/b/run`
        check_local(path, flag, what)
    if "://" not in os.fspath(path):
        check_parents(path, flag, f"give a new folder for {what}")  # `--out README.md/x`: never made
        # `--out data/run1/frames`: a dataset's folder holds only its own files (a writer's sweep deletes the rest)
        if (dataset := dataset_holding(Path(path).absolute().parent)) is not None:
            raise UserError(f"{flag} {path} lies inside the WorldLoom dataset {dataset}; give a new folder outside it")
    kind = folder_kind(path)
    if kind in (None, "other", want):
        return
    if kind == "file":
        raise UserError(f"{flag} {path} is a file, not a folder; give a new folder for {what}")
    raise UserError(f"{flag} {path} holds {describe(kind)}, not {what}; give a new {flag} "
                    f"(or the folder of {what} to resume it)")


RUN_LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, want: str, command: str) -> Iterator[None]:
    """`check_out(path, want)`, then hold the run folder `path` for this process while the body runs: a second
    command writing the same run (two `idm train --out runs/idm` started side by side) is refused in one line
    naming `command` (until 2026-12-07 both ran, and each replaced the other's checkpoints and metrics). The
    lock (`.run.lock`, an flock that dies with its process) is removed at the end, and with it a folder it made
    that nothing was written into. Datasets have their own (`datasets.jobs.job_lock`)."""
    check_out(path, want)
    root = Path(path)
    made = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    lock = root / RUN_LOCK_NAME
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"--out {path}: another {command} (or another command) is writing {KINDS[want][0]} there "
                            "now; wait for it to end or stop it first") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break  # (else the job before removed the file between our open and our lock: lock the new one)
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # removed while still held: a job waiting on the old file locks a new one
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                root.rmdir()  # only when empty
