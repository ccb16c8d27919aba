"""Cached, timed stages for the pipeline: a stage reruns only when its key changes, or when a path it
made is gone (a deleted dataset or run folder: its record is not the thing), and then every later
stage with it, as `--from` that stage would.

A stage's key is a hash of its config and of the keys of the stages it reads, so changing the
IDM preset redoes the IDM and everything downstream of it, and nothing upstream. What a stage
reads of an earlier one is that one's key and a token drawn each time it runs (`made_key`), so an
earlier stage that runs again with its old config (interrupted under another one, or its outputs
rewritten) makes every stage that reads it run again too, never 'cached' on what it made before. Completed
stages are recorded in `<out>/pipeline.json` (written to a temporary name, then renamed) with
their outputs, figures, wall time and core-seconds. A stage's outputs are paths (every string in
them): stored relative to the run directory, and on reading checked to stay inside it
(`worldloom.paths.inside`), so a copied or edited pipeline.json cannot point the report at a
file elsewhere on the machine.

A stage that reads datasets (the IDM, the labeler, the trainers, the evaluations) records their content
fingerprints as it starts (`reads`: committed episodes and shard checksums, from dataset.json and episodes.parquet,
no frame read); when another command has since changed one (`capture run` into the same folder, `dataset merge`
or `repair`), the stage runs again with every later one, one line naming the dataset, and what the user added
stays.

A stage that runs again with another key (its config, or a stage it reads, changed; or `--from`
names it or a stage before it) first removes what it wrote the last time (`writes`: its datasets
and runs, inside the run directory), saying so in one line: the capture would otherwise find a
dataset of another config in its place, and a trainer a run it may not resume. The key of a stage
that started is saved before it runs, so a stage interrupted and asked again with another config
is cleaned up too; asked again with the same one it resumes where it was.

The stages a `--from` run has still to redo are saved too (`redo`), so that the run interrupted and
asked again (with the same `--from`, or none) resumes: the stage it stopped in keeps what it wrote,
the stages it redid stay done, and the later ones are still redone, never 'cached' from before.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from worldloom.errors import UserError
from worldloom.io import atomic_write_json
from worldloom.paths import inside, is_inside


def stage_key(config: Any, upstream_keys: list[str]) -> str:
    """A short hash of a stage's config (JSON-able) and its inputs' keys."""
    blob = json.dumps({"config": config, "upstream": upstream_keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def portable(config: Any, out_dir: Path) -> Any:
    """`config` (JSON-able) with every path inside the run directory written relative to it ("<out>/data/..."), so a
    run moved or copied elsewhere keeps its stages' keys (its stages stay done, and nothing is removed to redo them)."""
    root = str(out_dir)
    if isinstance(config, dict):
        return {k: portable(v, out_dir) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [portable(v, out_dir) for v in config]
    if isinstance(config, str) and (config == root or config.startswith(root + os.sep)):
        return "<out>" + config[len(root):]
    return config


class CoreClock:
    """Core-seconds spent by this process and every process below it (Ray workers included).

    Ray's workers are grandchildren that may exit before the stage ends, so a thread samples
    the process tree twice a second and keeps each process's last CPU time.
    """

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self._last: dict[int, float] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[int, float]:
        me = psutil.Process()
        seen = {}
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                seen[p.pid] = t.user + t.system
            except psutil.Error:
                continue
        return seen

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._last.update(self._sample())

    def __enter__(self) -> CoreClock:
        self._start = self._sample()
        self._last = dict(self._start)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())

    @property
    def core_s(self) -> float:
        return sum(t - self._start.get(pid, 0.0) for pid, t in self._last.items())


@dataclass
class StageRecord:
    key: str
    outputs: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    core_s: float = 0.0
    made: str = ""  # a token drawn each time the stage runs ("" in records from before it): `StageRunner.made_key`
    reads: dict[str, str] = field(default_factory=dict)  # {dataset path relative to the run: content_fingerprint}


class StageRunner:
    """Runs stages in order, skipping those whose key matches a completed record."""

    def __init__(self, out_dir: Path, redo_from: str | None, order: tuple[str, ...], state_file: str = "pipeline.json",
                 unused: tuple[str, ...] = ()):
        """unused: stages this run does not have (the study's dream without --world-model): never said to run first."""
        self.out_dir = out_dir
        self.path = out_dir / state_file
        self.order = order
        self.records: dict[str, StageRecord] = {}
        self.started: dict[str, str] = {}  # stage -> the key it started with, until it completes
        left: dict = {}  # an interrupted --from run's: {"from": stage, "stages": those it had still to redo}
        if self.path.exists():
            self.records, self.started, left = self._load()
        self.redo_from = redo_from if redo_from is not None else left.get("from")
        self.redo = set(left.get("stages", ()))
        if redo_from is not None and redo_from != left.get("from"):  # a new --from, not the interrupted one again
            self.redo |= set(order[order.index(redo_from):])
        self.redoing = False  # a stage ran again for want of its outputs: every later one runs again too
        if redo_from is not None:  # `--from label` on a new folder ran everything without a word
            before = [s for s in order[:order.index(redo_from)] if s not in self.records and s not in unused]
            if before:
                print(f"[{self.path.stem}] --from {redo_from}: {', '.join(before)} never completed in {out_dir}, so "
                      f"{'they run' if len(before) > 1 else 'it runs'} first", flush=True)

    def _load(self) -> tuple[dict[str, StageRecord], dict[str, str], dict]:
        """The completed stages in pipeline.json, their outputs as absolute paths inside the run, the
        keys of the stages that started and did not complete, and what an interrupted --from run left to redo."""
        fix = "delete it to run every stage again"
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise UserError(f"{self.path}: not readable JSON ({err}); {fix}") from None
        stages = raw.get("stages") if isinstance(raw, dict) else None
        if not isinstance(stages, dict):
            raise UserError(f"{self.path}: 'stages' is missing or not an object; {fix}")
        def check(rel: str, field: str) -> str:
            return str(inside(self.out_dir, rel, source=self.path, field=field))

        records = {}
        for name, rec in stages.items():
            where = f"stages.{name}"
            fields = {f.name for f in dataclasses.fields(StageRecord)}
            if name not in self.order or not isinstance(rec, dict) or not fields - {"made", "reads"} <= set(rec) <= fields:
                raise UserError(f"{self.path}: {where} is not a record of a pipeline stage; {fix}")
            if not (isinstance(rec["key"], str) and isinstance(rec["outputs"], dict) and isinstance(rec["figures"], dict)
                    and all(isinstance(rec[k], (int, float)) and not isinstance(rec[k], bool) for k in ("wall_s", "core_s"))
                    and isinstance(rec.get("made", ""), str) and isinstance(rec.get("reads", {}), dict)
                    and all(isinstance(v, str) for v in rec.get("reads", {}).values())):
                raise UserError(f"{self.path}: {where} has a field of the wrong type; {fix}")
            outputs = _map_paths(rec["outputs"], check, f"{where}.outputs")
            reads = {_relative(check(rel, f"{where}.reads"), self.out_dir): v
                     for rel, v in rec.get("reads", {}).items()}
            records[name] = StageRecord(rec["key"], outputs, rec["figures"], float(rec["wall_s"]), float(rec["core_s"]),
                                        rec.get("made", ""), reads)
        started = raw.get("started", {})
        if not (isinstance(started, dict) and all(k in self.order and isinstance(v, str) for k, v in started.items())):
            raise UserError(f"{self.path}: 'started' is not an object of stage keys; {fix}")
        left = raw.get("redo", {})
        if left != {} and not (isinstance(left, dict) and set(left) == {"from", "stages"} and left["from"] in self.order
                and isinstance(left.get("stages"), list) and all(k in self.order for k in left["stages"])):
            raise UserError(f"{self.path}: 'redo' is not a --from stage and a list of stages; {fix}")
        return records, started, left

    def made_key(self, name: str, key: str) -> str:
        """What a later stage's key takes from stage `name` (run or found cached just before): its key and the token
        drawn when it last ran. A stage that runs again with the same config (interrupted under another, or
        redone) makes new outputs, so every stage that reads them gets a new key and runs again, its old outputs
        removed first: keyed by configs alone they stayed 'cached', and a world model trained on the IDM's earlier
        labels was resumed on the new ones and refused (a new-user trial, session 57). A record from before the
        token gives its key alone, so runs made before keep their stages; so does a stage with no record of `key`."""
        done = self.records.get(name)
        return f"{key}+{done.made}" if done is not None and done.key == key and done.made else key

    def _rewritten(self, done: StageRecord) -> list[str]:
        """The files a completed stage recorded in its figures' `fingerprints` ({path relative to the run: sha256})
        that another command has since rewritten (a `pretrain eval` into the pipeline's own MODEL/eval, a new-user
        trial of session 57: the report then showed the other run's pictures beside this run's numbers)."""
        prints = done.figures.get("fingerprints")
        if not isinstance(prints, dict):
            return []  # a record from before fingerprints: what it made is taken as it is
        changed = []
        for rel, sha in prints.items():
            path = self.out_dir / str(rel)
            try:
                same = path.is_file() and fingerprint(path) == sha
            except OSError:
                same = False
            if not same:
                changed.append(str(path))
        return changed

    def _changed_reads(self, done: StageRecord) -> list[str]:
        """The datasets a completed stage read (`reads`) whose content another command has changed since
        (`capture run` into the same folder, `dataset merge` or `repair`: episodes added, replaced or removed). The
        stage's key holds its config and its inputs' keys, not what the datasets hold: the IDM, the labels and the
        world model stayed 'cached' on the data as it was. A dataset the stage did not record is taken as it is."""
        from worldloom.datasets.writer import content_fingerprint

        return [str(self.out_dir / rel) for rel, sha in done.reads.items()
                if content_fingerprint(self.out_dir / rel) != sha]

    def run(self, name: str, key: str, fn: Callable[[], tuple[dict, dict]], writes=(),
            legacy: str | tuple[str, ...] | None = None, reads=()) -> StageRecord:
        """Run `fn` (returning outputs, figures) unless `name` already completed with `key`.

        writes: the paths the stage writes (inside the run directory; a '*' in a name matches as a glob),
        removed before it runs again with another key or under `--from` (module docstring). legacy: the key, or
        keys, an older WorldLoom gave the same stage (e.g. its paths absolute, not `portable`): a record of one
        of them is this key's. reads: the datasets the stage reads (inside the run directory): their content
        fingerprints (`content_fingerprint`: manifest and episode index, no frame) are recorded as it starts, and
        one that differs later makes it run again, with every later stage, as a missing output does."""
        for old in (legacy,) if isinstance(legacy, str) else legacy or ():
            if name in self.records and self.records[name].key == old:
                self.records[name].key = key
            if self.started.get(name) == old:
                self.started[name] = key
        done = self.records.get(name)
        gone = [] if done is None else _missing(done.outputs) or self._rewritten(done) or self._changed_reads(done)
        if done is not None and done.key == key and name not in self.redo and not gone and not self.redoing:
            print(f"[{self.path.stem}] {name}: cached ({done.wall_s:.0f} s when it ran)", flush=True)
            return done
        before = done.key if done is not None else self.started.get(name)
        why = None  # why a stage that ran (or started) before runs again
        if done is not None and done.key == key and name not in self.redo:  # done once, but what it made is gone
            why = ("an earlier stage ran again" if self.redoing else
                   f"{_relative(gone[0], self.out_dir)} {self._what_became(done, gone[0])}") + "; this stage and every later one"
            self.redoing = True
        elif before is not None and before != key and writes:  # (the report's key is its time: it always runs)
            why = "its config or its inputs changed"
        elif before is not None and name in self.redo:
            why = f"asked to by --from {self.redo_from}"
        print(f"[{self.path.stem}] {name}: running" + (f" again ({why})" if why else ""), flush=True)
        if why is not None:
            self._remove(name, writes)
        self.redo.discard(name)
        self.records.pop(name, None)
        self.started[name] = key
        self._save()
        read = self._fingerprints(reads)  # as the stage finds them: a change made while it runs shows next time
        start = time.perf_counter()
        with CoreClock() as clock:
            outputs, figures = fn()
        record = StageRecord(key, outputs, figures, time.perf_counter() - start, clock.core_s, uuid.uuid4().hex[:12],
                             read)
        self.records[name] = record
        self.started.pop(name, None)
        self._save()
        print(f"[{self.path.stem}] {name}: done in {record.wall_s:.0f} s ({record.core_s:.0f} core-s)", flush=True)
        return record

    def _what_became(self, done: StageRecord, path: str) -> str:
        """What became of `path`, one of a completed stage's outputs or inputs that made it stale."""
        if path in self._rewritten(done):
            return "was rewritten since, by another command"
        if path in self._changed_reads(done):
            return "changed since it ran (episodes added, replaced or removed by another command)"
        return "is gone"

    def _fingerprints(self, reads) -> dict[str, str]:
        """{path relative to the run: content_fingerprint} of the datasets in `reads` that exist (inside the run)."""
        from worldloom.datasets.writer import content_fingerprint

        found = {}
        for path in map(str, reads):
            if not is_inside(self.out_dir, path):
                raise ValueError(f"a stage reads {path}: only datasets inside the run directory {self.out_dir} are tracked")
            if os.path.isdir(path):
                found[_relative(path, self.out_dir)] = content_fingerprint(path)
        return found

    def _save(self) -> None:
        def relative(path: str, field: str) -> str:
            if not (isinstance(path, str) and os.path.isabs(path) and is_inside(self.out_dir, path)):
                raise ValueError(f"{field} is {path!r}: a stage's outputs are paths inside the run directory {self.out_dir}")
            return _relative(path, self.out_dir)

        stages = {k: {**vars(v), "outputs": _map_paths(v.outputs, relative, f"{k}.outputs")} for k, v in self.records.items()}
        left = {"redo": {"from": self.redo_from, "stages": [k for k in self.order if k in self.redo]}} if self.redo else {}
        atomic_write_json(self.path, {"stages": stages, **({"started": self.started} if self.started else {}), **left})

    def _remove(self, name: str, writes) -> None:
        """Delete what stage `name` wrote before (`writes`), each path checked to lie inside the run directory and
        not to be it or the state file; one line says what went."""
        gone, kept = [], []
        for spec in writes:
            spec = str(spec)
            for path in sorted(glob.glob(spec)) if "*" in Path(spec).name else [spec]:
                real = os.path.realpath(path)
                if not is_inside(self.out_dir, path) or real in (os.path.realpath(self.out_dir), os.path.realpath(self.path)):
                    raise ValueError(f"{name} writes {path}: a stage writes inside the run directory {self.out_dir}, "
                                     "not the directory itself or its state file")
                if os.path.isdir(path) and not os.path.islink(path):
                    kept += _remove_run_keeping_others(path)
                elif os.path.lexists(path):
                    os.remove(path)
                else:
                    continue
                gone.append(_relative(path, self.out_dir))
        if gone:
            print(f"[{self.path.stem}] {name}: removed what it wrote before: {', '.join(gone)}"
                  + (f" (kept what other commands wrote inside: {', '.join(_relative(k, self.out_dir) for k in kept)})"
                     if kept else ""), flush=True)


# What a stage's run directory can hold that another command made there, not derived from the run: a task scorer
# that `agent eval --in-world-model` trains into WM_RUN/scorer-<Task> (from real frames: still valid for the
# retrained model), a dataset or a run a user put there. Evaluation reports (eval.json) describe the run and go with it.
FOREIGN_KINDS = ("dataset", "idm", "world_model", "policy", "task_scorer", "pipeline", "study")


def _remove_run_keeping_others(path: str) -> list[str]:
    """Delete the folder `path`; when it is a run (idm, world model, policy), first move out the folders directly
    inside it that another command made (FOREIGN_KINDS), and put them back into the emptied folder. Returns their
    paths. (A new-user trial, session 44, lost a trained critic to a pipeline re-run.)"""
    from worldloom.folders import RUN_KINDS, folder_kind

    if folder_kind(path) not in RUN_KINDS:
        shutil.rmtree(path)
        return []
    others = [entry.path for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False)
              and folder_kind(entry.path) in FOREIGN_KINDS]
    if not others:
        shutil.rmtree(path)
        return []
    aside = Path(path).parent / f".{Path(path).name}.kept-{os.getpid()}"  # the same filesystem: renames
    aside.mkdir()
    for other in others:
        os.rename(other, aside / Path(other).name)
    shutil.rmtree(path)
    os.rename(aside, path)
    return others


def _relative(path: str, root: Path) -> str:
    return os.path.relpath(os.path.realpath(path), os.path.realpath(root))


def fingerprint(path: str | os.PathLike) -> str:
    """The sha256 of a file a stage made, for its figures' `fingerprints` (StageRunner._rewritten)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _missing(outputs: dict[str, Any]) -> list[str]:
    """The output paths of a completed stage that no longer exist: "done" is what it made, not its record."""
    gone: list[str] = []

    def check(path: str, field: str) -> str:
        if not os.path.exists(path):
            gone.append(path)
        return path

    _map_paths(outputs, check, "outputs")
    return gone


def _map_paths(value: Any, fn: Callable[[str, str], str], field: str) -> Any:
    """`value` (outputs: nested dicts and lists of path strings) with `fn(path, field)` applied to each path."""
    if isinstance(value, dict):
        return {k: _map_paths(v, fn, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_map_paths(v, fn, f"{field}[{i}]") for i, v in enumerate(value)]
    return fn(value, field)
