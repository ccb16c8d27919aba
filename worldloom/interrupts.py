"""Ctrl-C (SIGINT) and SIGTERM as one KeyboardInterrupt that remembers its signal, from a
command's first line to its exit code.

    with signals_as_interrupts():          # pipeline/cli.py, around every command
        ...                                # a signal raises `interrupt(signum)` wherever it lands

A library may turn the KeyboardInterrupt into something else: numba's first compile, interrupted
inside an llvmlite callback, prints `Exception ignored on calling ctypes callback` and then fails
with `RuntimeError: no compiled object yet for <Library ...>`. So the signals taken are recorded
(`signal_taken`), and the CLI reports any error raised after one as the interruption it is. An
interrupt that Python could only print and drop (a `__del__`, a ctypes callback) is delivered
again, so that it lands where it can stop the command. Imports stay small: the CLI installs this
from its first line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["interrupt", "sigterm_as_interrupt", "signal_taken", "exit_code", "signals_as_interrupts", "quiet_until_exit"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVER_AFTER_S = 0.05  # a dropped interrupt's second delivery: after the hook and the callback that dropped it return

# Signals our handlers took that no exit code has reported yet: `ray.get` re-raises a bare
# KeyboardInterrupt in place of the one a handler raised, so the exception cannot always carry it.
_taken: list[signal.Signals] = []


def interrupt(signum: int, words: str = "") -> KeyboardInterrupt:
    """A KeyboardInterrupt with `words` that carries the signal that stopped the command (`exit_code`)."""
    err = KeyboardInterrupt(words) if words else KeyboardInterrupt()
    err.signum = signal.Signals(signum)
    _taken.append(err.signum)
    return err


def sigterm_as_interrupt(signum, frame) -> None:
    """A SIGINT or SIGTERM handler: stop as Ctrl-C does, through every `finally` (a Ray session is
    shut down on the way out), to the CLI's one line and exit code 128 + signum."""
    raise interrupt(signum)


def signal_taken() -> bool:
    """Whether a signal was taken that no exit code has reported yet."""
    return bool(_taken)


def exit_code(err: BaseException) -> int:
    """128 + the signal that stopped the command: the one `err` carries, else the last one our
    handlers took, else SIGINT (Python's own Ctrl-C): 130 for Ctrl-C, 143 for SIGTERM."""
    signum = getattr(err, "signum", None) or (_taken[-1] if _taken else signal.SIGINT)
    _taken.clear()
    return 128 + int(signum)


def _redeliver(previous_hook):
    """An unraisablehook: a KeyboardInterrupt Python could only drop is raised again at the next
    line of Python that can take it; other unraisable errors go to `previous_hook`."""
    def hook(unraisable) -> None:
        err = unraisable.exc_value
        if isinstance(err, KeyboardInterrupt):  # sent again a little later, once this hook has returned
            resend = threading.Timer(REDELIVER_AFTER_S, _resend, (getattr(err, "signum", signal.SIGINT),))
            resend.daemon = True
            resend.start()
        else:
            previous_hook(unraisable)
    return hook


def _resend(signum: int) -> None:
    """The second delivery, only while a `signals_as_interrupts` block still turns it into an interrupt
    (once the block has ended, a late timer must not stop whatever runs next)."""
    if _blocks:
        os.kill(os.getpid(), signum)


_blocks: list[bool] = []  # one entry per open signals_as_interrupts block


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise `interrupt(signum)` inside the block (main thread only; a block
    elsewhere changes nothing); the handlers and the unraisablehook from before are given back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _taken.clear()
    previous = {s: signal.signal(s, sigterm_as_interrupt) for s in SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver(previous_hook)
    _blocks.append(True)
    try:
        yield
    finally:
        _blocks.pop()
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def quiet_until_exit() -> None:
    """After the `interrupted` line of a process about to exit: further signals are ignored and
    finalizers' complaints dropped (Ray's `ObjectRef.__del__` on a session already shut down), so
    that line is the last."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    sys.unraisablehook = lambda unraisable: None
