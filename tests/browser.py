"""Headless Chromium for tests that look at pages as a person would (Debian's `chromium`).

`make test` installs the package (tests/setup_browser.sh); the flags are the ones that keep
Chromium quiet on a machine with no network but loopback.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise RuntimeError("chromium is not installed: run `bash tests/setup_browser.sh` (make test does)")
    return exe


def _run(args: list[str], timeout_s: float = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout_s, check=True)


def dump_dom(page: Path, budget_ms: int = 5000) -> str:
    """The page's DOM after its scripts ran (images decoded, load handlers done)."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", page.resolve().as_uri()]).stdout


def screenshot(page: Path, out_png: Path, size: tuple[int, int] = (1200, 2400)) -> Path:
    _run([f"--screenshot={out_png.resolve()}", f"--window-size={size[0]},{size[1]}",
          "--virtual-time-budget=5000", page.resolve().as_uri()])
    return out_png
