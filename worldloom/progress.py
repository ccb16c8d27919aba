"""A long command's stages as one progress bar on stderr, beside the bars of its loops.

    from worldloom.progress import Stages
    with Stages("pretrain eval", ["loading the model", "reading clips", "generating"]) as stages:
        stages.start("loading the model")     # the bar names the stage now running
        ...
        stages.start("reading clips")         # the one before is done
        ...

A job over many inputs (`idm label`, `dataset ingest`) ends with `job_summary`: one line of what
was written where, and a count of what was skipped, replaced or failed.

A bar, not printed lines: it redraws in place on a terminal and shows half a second after the
command starts (`SHOW_AFTER_S`; so a slow start is never silent), and a user's mistake, found in
that first half second as the checks of inputs are, writes nothing of it: the error is the one
line on stderr, on a terminal, in a pipe or in a log file alike (tests/test_floor.py).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Sequence

from tqdm import tqdm

from worldloom.actions import FPS

__all__ = ["LOG_EVERY_S", "SHOW_AFTER_S", "LogLines", "Stages", "counted", "for_log_files", "job_summary", "nothing_done"]

SHOW_AFTER_S = 0.5  # the bar's first drawing: later than a mistake's error, sooner than a wait a user notices
# A bar's redraws where stderr is no terminal (a log file, `nohup`, a cluster's job log): one line this
# often, not one a step, which made an hour's capture a log of one 300 kB line of \r's.
LOG_EVERY_S = 30.0


class LogLines:
    """A text stream (stderr in a log file) on which a progress bar's redraws (tqdm's `\r` + line + the
    spaces that blank a longer line before it) become lines, one every `every_s` seconds: a redraw is
    written as a line of its own where it comes at least `every_s` after the last bar line written (so the
    first one is), or when a newline ends it (a bar closed and left), unless it says what the line last written
    on the clock said, times and rate aside. A study's log showed its expert's Explore bar twice: the clock
    counted from the last line written on it, not from the bars closed since, so a bar of a second that began 30 s
    after it wrote its first redraw and its last line; and a bar whose last update came on the clock wrote that
    `100%` line, then the same again as it closed.
    A line blanked and not ended (a bar cleared for a message, or closed and not left) is dropped, as
    on a terminal. Other text passes as it is; attributes (`isatty`, `fileno`) are the stream's."""

    def __init__(self, stream, every_s: float = LOG_EVERY_S, clock=time.monotonic) -> None:
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self._line = ""  # the text since the last \r or \n, not yet written
        self._redrawn = False  # that text began with a \r (a bar's redraw), not a fresh line
        self._last = -float("inf")
        self._timed = ""  # the last redraw written for the clock: a bar's close that repeats it is not written again

    def write(self, text: str) -> int:
        out = []
        for piece in re.split(r"(\r|\n)", text):
            if piece == "\r":
                self._line, self._redrawn = "", True
            elif piece == "\n":
                repeat = self._redrawn and _progress(self._line) == _progress(self._timed)
                if (self._line.strip() or not self._redrawn) and not repeat:  # a blank line of its own is kept
                    out.append(self._line.rstrip() + "\n")
                    if self._redrawn:  # a bar's last line: the clock counts from it too
                        self._last = self.clock()
                self._line, self._redrawn, self._timed = "", False, ""
            else:
                self._line += piece
        if self._line and not self._redrawn:  # a line being written (a prompt, a message in parts): as it comes
            out.append(self._line)
            self._line = ""
        elif self._line.strip() and self.clock() - self._last >= self.every_s:  # a redraw (tqdm writes each whole)
            out.append(self._line.rstrip() + "\n")
            self._line, self._last, self._timed = "", self.clock(), self._line
        if out:
            self.stream.write("".join(out))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _progress(line: str) -> str:
    """A bar's line without its times and rate (tqdm's last `[elapsed<left, rate, postfix]`): what it says of the work."""
    return line.rpartition(" [")[0] or line


def for_log_files() -> None:
    """Where stderr is no terminal, progress bars' redraws as lines every `LOG_EVERY_S` (`LogLines`).
    Called once by the `worldloom` script, before any bar."""
    if sys.stderr is not None and not isinstance(sys.stderr, LogLines) and not sys.stderr.isatty():
        sys.stderr = LogLines(sys.stderr)


class Stages:
    """tqdm over named stages; `start(name)` ends the running stage and shows `name`."""

    def __init__(self, desc: str, names: Sequence[str], show_after_s: float | None = None) -> None:
        show_after_s = SHOW_AFTER_S if show_after_s is None else show_after_s  # read now: tests set it to 0
        self.names = list(names)
        self.bar = tqdm(total=len(self.names), desc=desc, unit="stage", dynamic_ncols=True, delay=show_after_s)
        self.running: str | None = None
        self._lock = threading.Lock()
        self._shown = False
        self._born = time.monotonic()
        self._timer = threading.Timer(show_after_s, self._show)  # a first stage may be long and call nothing
        self._timer.daemon = True
        self._timer.start()

    def _show(self) -> None:
        with self._lock:
            if not self.bar.disable and self._timer is not None:
                self._shown = True
                self.bar.refresh()

    def start(self, name: str) -> None:
        with self._lock:
            if self.running is not None:
                self.bar.update(1)
            self.running = name
            late = time.monotonic() - self._born >= self.bar.delay
            self.bar.set_postfix_str(name.replace("]", ")"), refresh=self._shown or late)
            self._shown = self._shown or late

    def close(self, done: bool = True) -> None:
        """Close the bar; `done`: the running stage ended. On an error a shown bar is wiped on a
        terminal and its line ended in a pipe or a log file (which keep its text), so the error
        starts its own line (and a bar not yet shown never is)."""
        with self._lock:
            self._timer.cancel()
            self._timer = None
            if done and self.running is not None and self.bar.n < self.bar.total:
                self.bar.update(1)
            self.bar.leave = done
            wipe = self._shown and not done
            if wipe:  # tqdm's close skips a bar only `_show` drew: refresh() sets no print time
                self.bar.clear()
            fp = self.bar.fp
            self.bar.close()
            if wipe and not fp.isatty():
                fp.write("\n")

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(done=exc_type is None)


def job_summary(command: str, done: str, summary: dict, how: str = "") -> str:
    """`idm label: labeled 3 of 4 inputs (1,200 steps, 1.0 min of play) into data/pseudo by runs/idm;
    1 already there; 1 failed (reported above)`: the end of a job whose `summary` counts `num_items`,
    `num_steps`, `skipped_done` and lists `done` (item names), `replaced`, `truncated`, `failed`; minutes of play
    at the `fps` its output stores (the game's 20 where it says none)."""
    steps = summary["num_steps"]
    fps = summary.get("fps") or FPS
    line = (f"{command}: {done} {len(summary[done])} of {counted(summary['num_items'], 'input')} ({steps:,} "
            f"step{'s' * (steps != 1)}, "
            f"{steps / fps / 60:.1f} min of play) into {summary['out']}{f' {how}' if how else ''}")
    counts = [(summary.get("skipped_done", 0), "already there"),
              (len(summary.get("duplicates", ())), "the same as another input (made once)"),
              (len(summary.get("replaced", ())), "replaced"),
              (len(summary.get("truncated", ())), "truncated (cut short: what decoded was kept)"),
              (len(summary.get("failed", ())), "failed (reported above)")]
    return "; ".join([line, *(f"{n} {what}" for n, what in counts if n)])


def figure(x, spec: str = ".3f") -> str:
    """x formatted by `spec`, or "n/a" where it is undefined (None or NaN: a macro F1 over no pressed
    button, an R² of a constant truth)."""
    return "n/a" if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 episode`, `2 episodes`: a count and its noun in the number it takes (every count printed)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def nothing_done(done: str, summary: dict) -> str:
    """The error of a job that did nothing: the reason of its only input (whose `skipped:` line is
    not printed, so the sentence is said once), or how many inputs were skipped, each said above."""
    failed = summary["failed"]
    if summary["num_items"] == 1:
        return f"nothing was {done}: {failed[0]['error']}"
    return f"nothing was {done}: {counted(len(failed), 'input')} skipped, for the reasons above"


class StepCount:
    """Steps done so far and their rate, shown after a bar over whole inputs (`add`): one input (an
    hour of video) can be most of a job."""

    def __init__(self) -> None:
        self.steps, self.t0 = 0, time.perf_counter()

    def add(self, n: int, bar) -> None:
        """Count `n` more steps and show the total and the rate after `bar` (a tqdm)."""
        self.steps += n
        rate = self.steps / max(time.perf_counter() - self.t0, 1e-9)
        bar.set_postfix_str(f"{self.steps:,} steps, {rate:,.0f} steps/s")
