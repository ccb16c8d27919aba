"""A long command's stages as one progress bar on stderr, beside the bars of its loops.

    from worldloom.progress import Stages
    with Stages("pretrain eval", ["loading the model", "reading clips", "generating"]) as stages:
        stages.start("loading the model")     # the bar names the stage now running
        ...
        stages.start("reading clips")         # the one before is done
        ...

A bar, not printed lines: it redraws in place on a terminal, shows from the command's first
second (so a slow start is never silent), and a user's mistake still ends in exactly one error
line (tests/test_trust.py reads stderr with the bars' redraws removed).
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

__all__ = ["Stages"]


class Stages:
    """tqdm over named stages; `start(name)` ends the running stage and shows `name`."""

    def __init__(self, desc: str, names: Sequence[str]) -> None:
        self.names = list(names)
        self.bar = tqdm(total=len(self.names), desc=desc, unit="stage", dynamic_ncols=True)
        self.running: str | None = None

    def start(self, name: str) -> None:
        if self.running is not None:
            self.bar.update(1)
        self.running = name
        self.bar.set_postfix_str(name.replace("]", ")"), refresh=True)

    def close(self, done: bool = True) -> None:
        """Close the bar; `done`: the running stage ended. On an error the bar is wiped, so the
        error is the one line left on the terminal."""
        if done and self.running is not None and self.bar.n < self.bar.total:
            self.bar.update(1)
        self.bar.leave = done
        self.bar.close()

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(done=exc_type is None)
