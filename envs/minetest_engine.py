"""Drive one unmodified Minetest 5.6 process in lock-step: one engine frame of 50 ms per step.

    from worldloom.envs.minetest_engine import Engine, EngineConfig
    engine = Engine(EngineConfig(width=128, height=128))     # Xvfb + minetest, about 1.5 s
    state = engine.step(keys={"w"}, buttons={1}, mouse=(12, 0))  # hold W and the left button, turn
    frame = engine.grab()                                    # (128, 128, 3) uint8: the frame `state` describes
    engine.reset_pose(x=100, z=-40, yaw_rad=0.5, pitch_rad=0.0, time_of_day=0.5)
    engine.close()                                           # no process or file left behind

How (docs/envs.md has the figures; shared/minetest-notes.md the feasibility study):
- Each engine owns an X display (Xvfb picks a free one, `-displayfd`), a temporary HOME with the
  client mod `wlrec`, a world copied from `minetest_files/` with the server mod `wlsrv`, and one
  `minetest --go` process started with the `lockstep.c` shim in LD_PRELOAD (`minetest_procs.py`
  holds these processes and files).
- The shim parks the engine after each frame's buffer swap and gives it the next virtual time;
  `wlrec` logs the engine's own state (frame, dtime, position, yaw, pitch, controls, ...) on
  stdout once per frame, before rendering. So after `step()` returns, the window shows the frame
  rendered from exactly the state that `step()` returns, and the input sent in a step is applied
  in the next frame: action[t] lies between frame[t] and frame[t+1].
- Input is XTest on the instance's own display (keys, buttons, relative pointer motion; Minetest
  warps the pointer back to the window centre every frame), frames are XGetImage of the window.
- Nothing outlives the engine: the processes run in their own process groups, and a small reaper
  process kills them and deletes the instance directory when this process dies (even by SIGKILL);
  a parked engine also exits on its own when the controller's pipe closes. Every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import shutil
import struct
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldloom.io import atomic_write_text

from .minetest_procs import (  # noqa: F401  (re-exported: the env and the tests use them from here)
    MARKER,
    SCREEN_PX,
    EngineCrashed,
    Install,
    MinetestNotInstalled,
    PortInUse,
    Reaper,
    find_install,
    kill_group,
    make_instance_dir,
    start_slot,
    start_xvfb,
)

DT_NS = 50_000_000  # one engine frame = 50 ms of game time (20 steps per second, worldloom.actions.FPS)
SENSITIVITY_SCALE = 1.3763818698  # Game::getSensitivityScaleFactor (minetest 5.6 src/client/game.cpp)
LINE_TAIL = 40  # engine output lines kept for error messages


@dataclass(frozen=True)
class EngineConfig:
    """How one engine instance runs; the env builds it from its own config."""

    width: int = 128
    height: int = 128
    map_seed: int = 42
    viewing_range: int = 60  # nodes
    fov_deg: float = 72.0  # Minetest's `fov` setting (the horizontal base); the vertical one follows from the aspect
    deg_per_px: float = 0.15  # camera degrees per pointer pixel (VPT's recorded human data: 0.15)
    lockstep: bool = True  # False: real time at fps_max 20 (the fallback; frames may drop or repeat)
    step_timeout_s: float = 10.0  # a frame that takes longer than this is a hung engine
    start_timeout_s: float = 60.0
    extra_settings: tuple[tuple[str, str], ...] = ()

    @property
    def fov_y_deg(self) -> float:
        """The vertical field of view Minetest derives from `fov` and the aspect (Camera::update)."""
        aspect = self.width / self.height
        return self.fov_deg * min(max(math.sqrt(1.6 / aspect), 1.0), 1.4)

    @property
    def mouse_sensitivity(self) -> float:
        return self.deg_per_px / (math.tan(math.radians(self.fov_y_deg) / 2) * SENSITIVITY_SCALE)


# The client mod's controls bits, in wlrec's order.
CONTROL_BITS = ("up", "down", "left", "right", "jump", "aux1", "sneak", "zoom", "dig", "place")


@dataclass
class FrameState:
    """The engine's own state in one frame (logged by wlrec before that frame was rendered)."""

    frame: int
    dtime: float
    position: np.ndarray  # (3,) nodes: x east, y up, z north
    yaw_rad: float  # the camera's, as Minetest keeps it: turning right decreases it
    pitch_rad: float  # positive looks down
    fov_y_deg: float
    controls: frozenset[str]
    wield_index: int
    hp: int
    breath: int
    time_of_day: float
    on_ground: bool
    in_liquid: bool
    target_block: str
    target_pos: np.ndarray  # (3,) int
    target_distance: float

    @property
    def deg_per_px_at(self) -> float:
        """Degrees per pointer pixel at this frame's field of view, per unit mouse sensitivity."""
        return math.tan(math.radians(self.fov_y_deg) / 2) * SENSITIVITY_SCALE


_WL = re.compile(r": WL (\d+) (\S+) (\S+) (\S+) (\S+) (\S+) (\S+) (\S+) (\d+) (\d+) (\d+) (\d+) (\S+) (\d) (\d) (\S+) "
                 r"(-?\d+) (-?\d+) (-?\d+) (\S+)$")


def parse_state(line: str) -> FrameState | None:
    """One `WL ...` line of wlrec -> FrameState; None for any other line."""
    m = _WL.search(line)
    if m is None:
        return None
    g = m.groups()
    bits = int(g[8])
    return FrameState(
        frame=int(g[0]), dtime=float(g[1]), position=np.array([float(g[2]), float(g[3]), float(g[4])]),
        yaw_rad=float(g[5]), pitch_rad=float(g[6]), fov_y_deg=float(g[7]),
        controls=frozenset(name for i, name in enumerate(CONTROL_BITS) if bits >> i & 1),
        wield_index=int(g[9]), hp=int(g[10]), breath=int(g[11]), time_of_day=float(g[12]),
        on_ground=g[13] == "1", in_liquid=g[14] == "1", target_block="" if g[15] == "-" else g[15],
        target_pos=np.array([int(g[16]), int(g[17]), int(g[18])]), target_distance=float(g[19]),
    )


def parse_inventory(text: str) -> list[tuple[str, int]]:
    """wlsrv's `WLINV ["name count", ...]` payload -> [(name, count)] per slot ("" for empty)."""
    import json

    slots = []
    for entry in json.loads(text):
        name, _, count = entry.rpartition(" ")
        slots.append((name, int(count)) if name else ("", 0))
    return slots


# ---------------------------------------------------------------- the engine


@dataclass
class Held:
    """What the controller holds down on the X display."""

    keys: set[str] = field(default_factory=set)
    buttons: set[int] = field(default_factory=set)


class Engine:
    """One running Minetest instance on its own X display; `step()` advances exactly one frame."""

    def __init__(self, cfg: EngineConfig = EngineConfig(), install: Install | None = None):
        self.cfg = cfg
        self.install = install or find_install()
        self.xvfb: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None
        self.display = None
        self.reaper = Reaper()
        self._fds: list[int] = []
        self.lines: deque[str] = deque(maxlen=LINE_TAIL)
        self.state: FrameState | None = None
        self.inventory: list[tuple[str, int]] = []
        self.gui_events = 0  # inventory formspec openings that wlrec reported
        self.reset_acks: dict[int, np.ndarray] = {}
        self.held = Held()
        self.time_ns = 0
        self.frames = 0  # frames the shim reported since start
        self.start_s = 0.0
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # -- start and stop

    def _start(self) -> None:
        start = time.perf_counter()
        self.dir = make_instance_dir(self.cfg, self.install.game_dir)
        self.reaper.register("dir", self.dir)
        with start_slot():
            self.xvfb, number = start_xvfb(self.install.xvfb, min(self.cfg.start_timeout_s, 30.0), str(self.dir))
            self.reaper.register("group", self.xvfb.pid)
            self._open_display(number)
            self._launch(number)
            self._find_window(deadline=time.monotonic() + self.cfg.start_timeout_s)
        deadline = time.monotonic() + self.cfg.start_timeout_s
        if self.cfg.lockstep:
            self._wait_parked(self.cfg.start_timeout_s, starting=True)
        while self.state is None:  # loading-screen frames come before the game's first frame
            self.step(check=False)
            if time.monotonic() > deadline:
                raise EngineCrashed(f"minetest reported no player within {self.cfg.start_timeout_s:.0f} s{self._tail()}")
        self.start_s = time.perf_counter() - start

    def _open_display(self, number: int) -> None:
        from Xlib import X
        from Xlib import display as xdisplay

        self.display = xdisplay.Display(f":{number}")
        self.display.change_keyboard_control(auto_repeat_mode=X.AutoRepeatModeOff)  # held keys repeat in real time
        self.root = self.display.screen().root
        self.display_name = f":{number}"

    def _launch(self, number: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "DISPLAY", "WL_"))}
        env.update(HOME=str(self.dir / "home"), DISPLAY=f":{number}", LP_NUM_THREADS="1", **{MARKER: str(self.dir)})
        pass_fds: tuple[int, ...] = ()
        if self.cfg.lockstep:
            notify_r, notify_w = os.pipe()
            wake_r, wake_w = os.pipe()
            self.notify_fd, self.wake_fd = notify_r, wake_w
            self._fds = [notify_r, wake_w]
            env.update(LD_PRELOAD=self.install.shim, WL_GATE_NOTIFY_FD=str(notify_w), WL_GATE_WAKE_FD=str(wake_r))
            pass_fds = (notify_w, wake_r)
        cmd = [self.install.binary, "--config", str(self.dir / "minetest.conf"), "--go", "--world", str(self.dir / "world"),
               "--gameid", "minetest_game", "--logfile", ""]
        try:
            self.proc = subprocess.Popen(cmd, env=env, cwd=self.dir, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            for fd in pass_fds:
                os.close(fd)
        self.reaper.register("group", self.proc.pid)
        self.out_fd = self.proc.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        self._buffer = b""

    def _find_window(self, deadline: float) -> None:
        """Wait for the game window, centre it on the screen and give it the keyboard focus."""
        from Xlib import X

        while True:
            for child in self.root.query_tree().children:
                geom = child.get_geometry()
                if (geom.width, geom.height) == (self.cfg.width, self.cfg.height) and \
                        child.get_attributes().map_state == X.IsViewable:
                    self.window = child
                    x, y = (SCREEN_PX - self.cfg.width) // 2, (SCREEN_PX - self.cfg.height) // 2
                    child.configure(x=x, y=y)
                    self.display.set_input_focus(child, X.RevertToParent, X.CurrentTime)
                    self.display.sync()
                    return
            self._drain()
            self._check_alive("opening its window")
            if time.monotonic() > deadline:
                raise EngineCrashed(f"minetest opened no {self.cfg.width}x{self.cfg.height} window within "
                                    f"{self.cfg.start_timeout_s:.0f} s{self._tail()}")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop minetest and Xvfb (process groups, bounded waits) and delete the instance directory."""
        if self.display is not None:
            with contextlib.suppress(Exception):
                self.display.close()
            self.display = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        kill_group(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        kill_group(self.xvfb)
        self.proc = self.xvfb = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    # -- output of the engine

    def _drain(self) -> None:
        """Read what the engine printed so far (non-blocking) and take in its state lines."""
        while True:
            try:
                chunk = os.read(self.out_fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buffer += chunk
        if b"\n" not in self._buffer:
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._take(raw.decode(errors="replace"))

    def _take(self, line: str) -> None:
        state = parse_state(line)
        if state is not None:
            self._new_state(state)
            return
        if ": WLINV " in line:
            self.inventory = parse_inventory(line.split(": WLINV ", 1)[1])
        elif ": WLRESET " in line:
            seq, x, y, z = line.split(": WLRESET ", 1)[1].split()
            self.reset_acks[int(seq)] = np.array([float(x), float(y), float(z)])
        elif ": WLGUI " in line:
            self.gui_events += 1
        elif ": WLERROR " in line:
            raise EngineCrashed(f"the client mod wlrec failed: {line.split(': WLERROR ', 1)[1].strip()}")
        elif ": WLWAIT " in line:
            self._states_seen += 1  # a frame before the local player and camera exist
        else:
            self.lines.append(line)
            if "Bind failed" in line or "Address already in use" in line:
                raise PortInUse(f"minetest could not bind its singleplayer port: {line.strip()}")

    def _new_state(self, state: FrameState) -> None:
        self.state = state
        self._states_seen += 1

    _states_seen = 0

    def _tail(self) -> str:
        lines = [ln for ln in self.lines if "ERROR" in ln or "rror" in ln] or list(self.lines)[-5:]
        return ("; engine said: " + " | ".join(ln.strip()[-200:] for ln in lines[-5:])) if lines else ""

    def _check_alive(self, doing: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._drain()
            raise EngineCrashed(f"minetest exited with code {self.proc.returncode} while {doing}{self._tail()}")

    # -- lock-step

    def _wait_parked(self, timeout_s: float, starting: bool = False) -> int:
        """Wait until the shim reports the end of the next frame; its frame number."""
        deadline = time.monotonic() + timeout_s
        got = b""
        while len(got) < 8:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.notify_fd, self.out_fd], [], [], max(left, 0.0))
            if self.out_fd in ready:
                self._drain()
            if self.notify_fd in ready:
                chunk = os.read(self.notify_fd, 8 - len(got))
                if not chunk:
                    self._check_alive("running a frame")
                    raise EngineCrashed(f"minetest closed the lock-step pipe{self._tail()}")
                got += chunk
            if not ready:
                self._check_alive("starting" if starting else "running a frame")
                if time.monotonic() >= deadline:
                    what = "start its first frame" if starting else "finish a frame"
                    raise EngineCrashed(f"minetest did not {what} within {timeout_s:.0f} s{self._tail()}")
        frame = struct.unpack("<Q", got)[0]
        if starting:
            self.frames = frame
        elif frame != self.frames + 1:
            raise EngineCrashed(f"lock-step broken: frame {frame} after frame {self.frames}")
        self.frames = frame
        self._drain()
        return frame

    def _wait_state(self, timeout_s: float) -> None:
        """Real-time mode: wait for the next state line."""
        seen = self._states_seen
        deadline = time.monotonic() + timeout_s
        while self._states_seen == seen:
            ready, _, _ = select.select([self.out_fd], [], [], max(deadline - time.monotonic(), 0.0))
            if ready:
                self._drain()
            else:
                self._check_alive("running a frame")
                if time.monotonic() >= deadline:
                    raise EngineCrashed(f"minetest printed no frame state within {timeout_s:.0f} s{self._tail()}")

    def step(self, keys: set[str] = frozenset(), buttons: set[int] = frozenset(), mouse: tuple[int, int] = (0, 0),
             check: bool = True) -> FrameState:
        """Hold `keys` (X keysym names) and pointer `buttons` (1 left, 3 right), move the pointer by
        `mouse` pixels, and run exactly one frame of 50 ms; the engine's state in that frame."""
        if self.proc is None:
            raise EngineCrashed("the engine is closed")
        self._input(set(keys), set(buttons), mouse)
        seen = self._states_seen
        prev_frame = self.state.frame if self.state is not None else None
        if self.cfg.lockstep:
            if self.time_ns == 0:
                self.time_ns = time.monotonic_ns()  # any start; the shim only uses the differences
            self.time_ns += DT_NS
            try:
                os.write(self.wake_fd, struct.pack("<q", self.time_ns))
            except OSError as err:
                self._check_alive("waking up")
                raise EngineCrashed(f"cannot wake minetest: {err}") from None
            self._wait_parked(self.cfg.step_timeout_s)
            if check and self._states_seen != seen + 1:
                raise EngineCrashed(f"lock-step broken: {self._states_seen - seen} state lines in frame {self.frames}")
            if check and self.state.frame != prev_frame + 1:
                raise EngineCrashed(f"lock-step broken: the engine counted frame {self.state.frame} after {prev_frame}")
            if check and abs(self.state.dtime - DT_NS / 1e9) > 1e-4:
                raise EngineCrashed(f"lock-step broken: dtime {self.state.dtime} s in frame {self.frames}, not 0.05")
        else:
            self._wait_state(self.cfg.step_timeout_s)
        return self.state

    def _input(self, keys: set[str], buttons: set[int], mouse: tuple[int, int]) -> None:
        from Xlib import XK, X
        from Xlib.ext import xtest

        d = self.display
        for name in sorted(self.held.keys - keys):
            xtest.fake_input(d, X.KeyRelease, d.keysym_to_keycode(XK.string_to_keysym(name)))
        for name in sorted(keys - self.held.keys):
            xtest.fake_input(d, X.KeyPress, d.keysym_to_keycode(XK.string_to_keysym(name)))
        for b in sorted(self.held.buttons - buttons):
            xtest.fake_input(d, X.ButtonRelease, b)
        for b in sorted(buttons - self.held.buttons):
            xtest.fake_input(d, X.ButtonPress, b)
        dx, dy = mouse
        if dx or dy:
            xtest.fake_input(d, X.MotionNotify, detail=True, x=int(dx), y=int(dy))
        self.held = Held(keys, buttons)
        d.sync()  # the X server has the input before the engine's next frame reads it

    def pointer_in_window(self) -> tuple[int, int]:
        """Where the pointer is, in window pixels (the cursor while a formspec is open)."""
        p = self.window.query_pointer()
        return p.win_x, p.win_y

    def warp_pointer(self, x: int, y: int) -> None:
        self.window.warp_pointer(int(x), int(y))
        self.display.sync()

    def grab(self) -> np.ndarray:
        """The window's pixels now: (H, W, 3) uint8 RGB, the frame the last step rendered."""
        from Xlib import X

        raw = self.window.get_image(0, 0, self.cfg.width, self.cfg.height, X.ZPixmap, 0xFFFFFFFF).data
        bgrx = np.frombuffer(raw, np.uint8).reshape(self.cfg.height, self.cfg.width, 4)  # (H, W, 4) B, G, R, X
        return bgrx[:, :, 2::-1].copy()

    # -- commands to the server mod

    _seq = 0

    def reset_pose(self, x: float, z: float, yaw_rad: float, pitch_rad: float, time_of_day: float) -> np.ndarray:
        """Teleport to a standing spot near (x, z) (wlsrv: emerge, kit, look, time); steps frames
        until the client shows the new position and time of day; the spot (3,). The map generation it waits for
        runs in real time, so the limit is real time (start_timeout_s), and frames are stepped
        with short pauses that leave the CPU to the engine's map threads."""
        self._seq += 1
        seq = self._seq
        atomic_write_text(self.dir / "world" / "wl_command",
                          f"{seq} reset {x:.3f} {z:.3f} {math.degrees(yaw_rad):.6f} {math.degrees(pitch_rad):.6f} {time_of_day:.5f}\n")
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while time.monotonic() < deadline:
            self.step()
            if seq in self.reset_acks:
                spot = self.reset_acks[seq]
                # the client learns the time of day from its own packet, which can arrive some
                # frames after the position on a busy machine: wait for both
                off = abs((self.state.time_of_day - time_of_day + 0.5) % 1.0 - 0.5)
                if np.abs(self.state.position[[0, 2]] - spot[[0, 2]]).max() < 0.5 and off < 1e-3:
                    return spot
            else:
                time.sleep(0.005)
        raise EngineCrashed(f"the reset to ({x:.0f}, {z:.0f}) did not finish within {self.cfg.start_timeout_s:.0f} s"
                            f"{self._tail()}")
