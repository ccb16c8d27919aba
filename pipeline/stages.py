"""Cached, timed stages for the pipeline: a stage reruns only when its key changes.

A stage's key is a hash of its config and of the keys of the stages it reads, so changing the
IDM preset redoes the IDM and everything downstream of it, and nothing upstream. Completed
stages are recorded in `<out>/pipeline.json` (written to a temporary name, then renamed) with
their outputs, figures, wall time and core-seconds.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from worldloom.io import atomic_write_json


def stage_key(config: Any, upstream_keys: list[str]) -> str:
    """A short hash of a stage's config (JSON-able) and its inputs' keys."""
    blob = json.dumps({"config": config, "upstream": upstream_keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


class StageRunner:
    """Runs stages in order, skipping those whose key matches a completed record."""

    def __init__(self, out_dir: Path, redo_from: str | None, order: tuple[str, ...], state_file: str = "pipeline.json"):
        self.out_dir = out_dir
        self.path = out_dir / state_file
        self.order = order
        self.records: dict[str, StageRecord] = {}
        if self.path.exists():
            raw = json.loads(self.path.read_text())
            self.records = {k: StageRecord(**v) for k, v in raw.get("stages", {}).items()}
        if redo_from is not None:
            for name in order[order.index(redo_from):]:
                self.records.pop(name, None)

    def run(self, name: str, key: str, fn: Callable[[], tuple[dict, dict]]) -> StageRecord:
        """Run `fn` (returning outputs, figures) unless `name` already completed with `key`."""
        done = self.records.get(name)
        if done is not None and done.key == key:
            print(f"[{self.path.stem}] {name}: cached ({done.wall_s:.0f} s when it ran)", flush=True)
            return done
        print(f"[{self.path.stem}] {name}: running", flush=True)
        start = time.perf_counter()
        with CoreClock() as clock:
            outputs, figures = fn()
        record = StageRecord(key, outputs, figures, time.perf_counter() - start, clock.core_s)
        self.records[name] = record
        self._save()
        print(f"[{self.path.stem}] {name}: done in {record.wall_s:.0f} s ({record.core_s:.0f} core-s)", flush=True)
        return record

    def _save(self) -> None:
        data = {"stages": {k: vars(v) for k, v in self.records.items()}}
        atomic_write_json(self.path, data)
