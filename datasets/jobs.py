"""One writing job at a time per local dataset, and the sweep of what killed jobs left behind.

    from worldloom.datasets.jobs import job_lock, swept
    with job_lock([out], "dataset ingest"), swept(out) as sweep:
        ...                                   # write shards, commit them
    sweep["removed"]                          # what crashes left, deleted when the job ended (or was interrupted)

The jobs that write shards into a dataset (`capture run`, `dataset ingest|merge|split`, `idm label`) write them
and commit them to the manifest; a job killed between the two leaves whole but unlisted shards
and hidden `.*.tmp` files under frames/. Each of those jobs holds the lock while it writes and
sweeps frames/ when it ends, so a re-run of a killed command leaves a dataset that validates.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import posixpath
import time
import uuid
from collections.abc import Iterator

import pyarrow.fs as pafs

from worldloom.errors import UserError

from . import schema, storage

JOB_LOCK_NAME = ".job.lock"
# Errors of writing a job's output, never of reading an input: a full disk or quota, a read-only disk.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def raise_if_output_failed(err: BaseException, out: str, inputs: str = "inputs") -> None:
    """Raise again an error of one input's item that is the output's disk failing (OUTPUT_ERRNOS), for the
    jobs that skip a bad input and go on (`dataset ingest`, `idm label`): every input after it would fail
    the same way, each read first, and be skipped as if it were bad (until 2026-12-08). A full disk is
    raised as it is (the line every command gives for it, pipeline/cli.py), a read-only one as a UserError
    naming `out`. Anything else returns: the input's own fault."""
    if not (isinstance(err, OSError) and err.errno in OUTPUT_ERRNOS):
        return
    if err.errno == errno.EROFS:
        raise UserError(f"{out}: cannot write the dataset ({err.strerror or err}); the {inputs} done before are "
                        "committed: make it writable, then run the same command again to finish") from None
    raise err


@contextlib.contextmanager
def job_lock(roots: list[str], job: str) -> Iterator[None]:
    """One writing job at a time per local output (the lock dies with its process); object stores
    have no locks, so there the user keeps jobs apart. `job` names the command for the error. A
    folder the lock made and the job left empty is removed: a failed job leaves nothing behind."""
    fds, made = [], []
    try:
        for root in roots:
            loc = storage.resolve(root)
            if not loc.is_local:
                continue
            fresh = not os.path.isdir(loc.path)
            try:
                os.makedirs(loc.path, exist_ok=True)
                if fresh:
                    made.append(loc)
                fds.append(os.open(loc.join(JOB_LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644))
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # a full disk: the line every command gives for it (pipeline/cli.py)
                raise UserError(f"{root}: cannot write here ({err.strerror or err}); give an --out on a disk this "
                                "user can write") from None
            try:
                fcntl.flock(fds[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{root}: another job (capture run, dataset ingest|merge|split or idm label) is writing here; "
                                f"wait for it to end or stop it before this {job}") from None
        yield
    finally:
        for loc in made:  # a job that wrote nothing leaves no folder behind (removed while still locked)
            if os.path.isdir(loc.path) and os.listdir(loc.path) == [JOB_LOCK_NAME]:
                os.unlink(loc.join(JOB_LOCK_NAME))
                os.rmdir(loc.path)
        for fd in fds:
            os.close(fd)


def unused(manifest: dict | None) -> bool:
    """A dataset.json that lists no shard and no episode: a dataset a job created and committed nothing to."""
    return manifest is not None and not (manifest.get("shards") or manifest.get("num_episodes"))


def discard_unused(root: str) -> bool:
    """Remove a local dataset that holds no shard (its dataset.json, its empty frames/ and its lock file), as a
    job that created it and committed nothing leaves it, for `idm label` and `dataset ingest` to call under
    their job lock before they start: the frame size of the dataset they make is the first input's, and an
    empty one left by a failed run refused the next run's inputs (a new-user trial, session 57: `idm label` of
    a 1-frame clip failed, and the same --out then refused a 641x359 video as "the dataset stores 64x64
    frames"). The failed run's dataset stays until then: what it reports (0 steps) can be read. Anything
    else there stays; returns whether it removed one."""
    loc = storage.resolve(root)
    if not loc.is_local:
        return False  # no lock there to make it safe
    frames = loc.join(schema.FRAMES_DIR)
    try:
        manifest = storage.read_manifest(loc)
        leftovers = os.listdir(frames) if os.path.isdir(frames) else []
    except (OSError, UserError):
        return False  # unreadable: not ours to judge
    if not unused(manifest) or leftovers:
        return False
    os.unlink(loc.join(schema.MANIFEST_NAME))
    if os.path.isdir(frames):
        os.rmdir(frames)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(loc.join(schema.LOCK_NAME))
    return True


def sweep_orphans(root: str, run_token: str, started_at: float) -> int:
    """Delete what crashes left under frames/ (files the manifest does not list); returns how many.
    A local output is locked by this job (job_lock), so every such file is garbage; on an object
    store a file newer than this run that is not this run's (`-{run_token}-` in its name) may
    belong to another job and stays."""
    loc = storage.resolve(root)
    manifest = storage.read_manifest(loc)
    listed = {posixpath.basename(s["path"]) for s in (manifest or {}).get("shards", [])}
    selector = pafs.FileSelector(loc.join(schema.FRAMES_DIR), allow_not_found=True)
    removed = 0
    for info in loc.fs.get_file_info(selector):
        name = posixpath.basename(info.path)
        if info.type != pafs.FileType.File or name in listed:
            continue
        mtime = info.mtime.timestamp() if info.mtime is not None else started_at
        if loc.is_local or f"-{run_token}-" in name or mtime < started_at:
            loc.fs.delete_file(info.path)
            removed += 1
    return removed


@contextlib.contextmanager
def swept(root: str) -> Iterator[dict]:
    """Sweep `root`'s frames/ (`sweep_orphans`) when the job inside ends: on success {"removed": n} is
    set; on an interrupt or error too (Ctrl-C while Ray actors write leaves their temporary files), then the
    exception goes on. Use it inside `job_lock`, which makes every unlisted file garbage."""
    run_token, started_at = uuid.uuid4().hex[:6], time.time() - 1.0  # 1 s of clock skew
    result = {"removed": 0, "run_token": run_token}
    try:
        yield result
    except BaseException:
        with contextlib.suppress(Exception):
            sweep_orphans(root, run_token, started_at)
        raise
    result["removed"] = sweep_orphans(root, run_token, started_at)


def job_running(root: str) -> bool:
    """Whether a writing job (capture run, dataset ingest|merge, idm label) holds `root`'s lock now;
    False for an object store (no locks there). Never writes."""
    loc = storage.resolve(root)
    if not loc.is_local:
        return False
    try:
        fd = os.open(loc.join(JOB_LOCK_NAME), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
