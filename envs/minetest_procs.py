"""The processes and files of one Minetest instance: install check, the lock-step shim, Xvfb,
the reaper, the start lock, minetest.conf, HOME and the world (used by `minetest_engine.py`).

    from worldloom.envs.minetest_procs import find_install, Reaper, start_xvfb
    install = find_install()               # MinetestNotInstalled names what is missing
    xvfb, display = start_xvfb(install.xvfb, timeout_s=30, marker="/tmp/my-instance")

Every process started here runs in its own process group and carries MARKER in its environment
(tests find leftovers by it); every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worldloom.envs import EnvCrashed
from worldloom.errors import UserError
from worldloom.io import atomic_path

if TYPE_CHECKING:
    from .minetest_engine import EngineConfig

FILES = Path(__file__).with_name("minetest_files")
DEBIAN_PACKAGES = "minetest minetest-data xvfb gcc"
INSTALL_HINT = (f"Minetest is not installed: run `bash tests/setup_minetest.sh` (Debian packages: {DEBIAN_PACKAGES}; "
                "Python: python-xlib), or use env 'voxel'")
BINARY_PATHS = ("/usr/games/minetest",)  # where Debian puts it (not on a non-login PATH)
MARKER = "WORLDLOOM_MINETEST_INSTANCE"  # in the environment of every process an Engine starts
GAME_DIRS = ("/usr/share/games/minetest/games/minetest_game", "/usr/share/minetest/games/minetest_game",
             "/usr/local/share/minetest/games/minetest_game")
SCREEN_PX = 1024  # the X screen: the window sits in its middle, so pointer moves of +-440 px are not clamped
START_LOCK = Path(tempfile.gettempdir()) / "worldloom-minetest-start.lock"


class MinetestNotInstalled(UserError, ImportError):
    """The minetest binary, its game, Xvfb, gcc or python-xlib is missing."""


class EngineCrashed(EnvCrashed):
    """The engine died, hung past the step timeout, or broke lock-step; the env restarts it."""


class PortInUse(EngineCrashed):
    """Singleplayer picked a UDP port another server holds; starting again picks another."""


# ---------------------------------------------------------------- installation and the shim


@dataclass(frozen=True)
class Install:
    binary: str
    xvfb: str
    game_dir: str
    shim: str


def find_install() -> Install:
    """The binaries and game this machine has, with the lock-step shim built; else MinetestNotInstalled."""
    binary = shutil.which("minetest") or next((p for p in BINARY_PATHS if os.access(p, os.X_OK)), None)
    xvfb = shutil.which("Xvfb")
    game_dir = next((d for d in GAME_DIRS if os.path.isfile(os.path.join(d, "game.conf"))), None)
    missing = [name for name, found in (("minetest", binary), ("Xvfb", xvfb), ("minetest_game (minetest-data)", game_dir),
                                        ("gcc", shutil.which("gcc"))) if not found]
    try:
        import Xlib  # noqa: F401
    except ImportError:
        missing.append("python-xlib")
    if missing:
        raise MinetestNotInstalled(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
    template = [FILES / name for name in ("lockstep.c", "wlrec/init.lua", "wlsrv/init.lua")]
    absent = [str(p) for p in template if not p.is_file()]
    if absent:
        raise MinetestNotInstalled(f"WorldLoom's Minetest files are missing: {', '.join(absent)}; reinstall worldloom "
                                   f"(pip install -e .) so that envs/minetest_files/ is complete")
    return Install(binary, xvfb, game_dir, build_shim())


def build_shim() -> str:
    """Compile lockstep.c once per source version into the user's cache; the path of the .so."""
    source = (FILES / "lockstep.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "worldloom" / "minetest"
    out = cache / f"lockstep-{digest}.so"
    if out.exists():
        return str(out)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        result = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp), str(FILES / "lockstep.c"), "-ldl"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise MinetestNotInstalled(f"cannot build the lock-step shim {FILES / 'lockstep.c'}: {result.stderr.strip()[-400:]}")
    return str(out)


# ---------------------------------------------------------------- processes


REAPER = r"""
import os, shutil, signal, sys
groups, dirs = [], []
for line in sys.stdin:
    kind, _, value = line.strip().partition(" ")
    if kind == "group":
        groups.append(int(value))
    elif kind == "dir":
        dirs.append(value)
    elif kind == "done":
        groups, dirs = [], []
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""


class Reaper:
    """A watchdog process in its own session: when our end of its stdin closes (this process
    exits, however it dies), it kills the registered process groups and deletes the directories."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", REAPER], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def register(self, kind: str, value: object) -> None:
        self.proc.stdin.write(f"{kind} {value}\n".encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        """Everything registered was cleaned up by its owner: tell the reaper, let it exit."""
        with contextlib.suppress(OSError, ValueError):
            self.register("done", "")
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def kill_group(proc: subprocess.Popen | None, timeout_s: float = 5.0) -> None:
    """SIGKILL the process group `proc` leads and reap `proc` (bounded wait)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)


def start_xvfb(xvfb: str, timeout_s: float, marker: str) -> tuple[subprocess.Popen, int]:
    """An Xvfb on a free display number (it picks one itself: `-displayfd`); (process, number)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [xvfb, "-displayfd", str(write_fd), "-screen", "0", f"{SCREEN_PX}x{SCREEN_PX}x24", "-dpi", "48",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, env={**os.environ, MARKER: marker})
    finally:
        os.close(write_fd)
    try:
        text = b""
        deadline = time.monotonic() + timeout_s
        while not text.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(read_fd, 64) if ready else b""
            if not chunk:
                err = b""
                if proc.poll() is not None:
                    err = proc.stderr.read()[-300:]
                kill_group(proc)
                raise EngineCrashed(f"Xvfb did not start within {timeout_s:.0f} s: {err.decode(errors='replace').strip()}")
            text += chunk
    finally:
        os.close(read_fd)
    proc.stderr.close()
    return proc, int(text)


@contextlib.contextmanager
def start_slot(timeout_s: float = 30.0):
    """Serialise engine starts on this machine, each in a later second than the last: singleplayer
    seeds its port choice with time(0) (minetest 5.6 src/main.cpp), so two starts in one second collide."""
    START_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(START_LOCK, "a+") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineCrashed(f"another engine held {START_LOCK} for {timeout_s:.0f} s") from None
                time.sleep(0.02)
        try:
            f.seek(0)
            last = float(f.read().strip() or 0.0)
            now = time.time()
            if int(now) <= int(last):
                time.sleep(int(last) + 1.02 - now)
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.write(f"{time.time():.3f}")
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- the instance's files


def settings_text(cfg: EngineConfig) -> str:
    """The minetest.conf of one instance (client and singleplayer server read the same file)."""
    settings = {
        "screen_w": cfg.width, "screen_h": cfg.height, "autosave_screensize": "false",
        "fps_max": 20 if not cfg.lockstep else 1000, "fps_max_unfocused": 20 if not cfg.lockstep else 1000,
        "pause_on_lost_focus": "false", "enable_sound": "false", "viewing_range": cfg.viewing_range,
        "enable_shaders": "false", "enable_clouds": "false", "enable_minimap": "false",
        "fixed_map_seed": cfg.map_seed, "mg_name": "v7", "time_speed": 0,
        "hud_scaling": 0.5, "gui_scaling": 0.5, "display_density_factor": 0.5, "bind_address": "127.0.0.1",
        "enable_client_modding": "true", "csm_restriction_flags": 0, "mouse_sensitivity": f"{cfg.mouse_sensitivity:.9f}",
        "fov": cfg.fov_deg, "camera_smoothing": 0, "cinematic": "false", "enable_damage": "false",
        "creative_mode": "false", "server_announce": "false", "show_debug": "false", "menu_last_game": "minetest_game",
        "doubletap_jump": "false", "aux1_descends": "false", "always_fly_fast": "false", "invert_mouse": "false",
        "enable_joysticks": "false", "recent_chat_messages": 0, "chat_message_limit_per_10sec": 10000,
    }
    settings.update(dict(cfg.extra_settings))
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def make_instance_dir(cfg: EngineConfig, game_dir: str) -> Path:
    """HOME (with the client mod), the world (with the server mod) and minetest.conf, in a new temp dir."""
    root = Path(tempfile.mkdtemp(prefix="worldloom-minetest-"))
    clientmods = root / "home" / ".minetest" / "clientmods"
    shutil.copytree(FILES / "wlrec", clientmods / "wlrec")
    (clientmods / "mods.conf").write_text("load_mod_wlrec = true\n")
    world = root / "world"
    shutil.copytree(FILES / "wlsrv", world / "worldmods" / "wlsrv")
    (world / "world.mt").write_text("gameid = minetest_game\nbackend = sqlite3\nplayer_backend = sqlite3\n"
                                    "auth_backend = sqlite3\ncreative_mode = false\nenable_damage = false\n")
    (root / "minetest.conf").write_text(settings_text(cfg))
    return root
