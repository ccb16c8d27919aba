"""VPT contractor recordings (an mp4 and a jsonl per segment) -> WorldLoom actions, state and frames.

    worldloom dataset ingest --format vpt --data recordings/ --out data/vpt [--resolution 128]

    from worldloom.datasets import vpt
    lines = vpt.read_jsonl("rec.jsonl")              # one dict per video frame (UserError names a bad line)
    lines, notes = vpt.parse_jsonl("rec.jsonl")      # and the blank lines and cut-off last line passed over
    steps = vpt.convert(lines, recorder_version="6.8")
    steps.buttons, steps.camera, steps.extra_buttons, steps.null_action, steps.state
    vpt.draw_cursors(frames, steps, first_step=0)    # the GUI cursor the recorder did not capture

The facts come from openai/Video-Pre-Training (`run_inverse_dynamics_model.py`:
`json_action_to_env_action`; `data_loader.py`: the per-segment clean-up; `agent.py`); the code is
ours. Per jsonl line (= per video frame, 20 Hz):
- keyboard keys -> the 20 buttons (`KEY_BUTTONS`), ESC and swapHands kept as extra buttons
  (recorded, not predicted); keys VPT does not map (F3, chat, ...) are ignored and counted;
- mouse buttons 0/1/2 -> attack / use / pickItem (the last an extra button);
- mouse dx/dy in pixels x 360/2400 degrees -> camera [pitch, yaw] = [dy, dx] x 0.15; while a GUI
  is open, times the recorder version's scaler (`GUI_SCALERS`, 1 for other versions);
- an attack held from the first line (`newButtons == [0]` there) is removed until the player
  presses attack again (the recorder started with it stuck);
- a change of the `hotbar` field (the scroll wheel, which the recorder did not log as a key) is a
  press of `hotbar.<slot + 1>`;
- the GUI cursor is drawn on frames where `isGuiOpen`, at the mouse position scaled from the
  recorder's 720-pixel-high window to the frame;
- a step with no input at all is kept and marked (`null_action`); VPT's training skips them.

Where VPT's released code is wrong this module does it right; each divergence is listed in
docs/ingest.md and pinned by the golden test (tests/fixtures/vpt/).
"""

from __future__ import annotations

import collections
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from worldloom.actions import BUTTONS, CAMERA_LIMIT, NUM_BUTTONS
from worldloom.errors import UserError

from .schema import EXTRA_BUTTONS

# run_inverse_dynamics_model.py, KEYBOARD_BUTTON_MAPPING
KEY_BUTTONS = {
    "key.keyboard.escape": "ESC", "key.keyboard.s": "back", "key.keyboard.q": "drop", "key.keyboard.w": "forward",
    **{f"key.keyboard.{i}": f"hotbar.{i}" for i in range(1, 10)},
    "key.keyboard.e": "inventory", "key.keyboard.space": "jump", "key.keyboard.a": "left", "key.keyboard.d": "right",
    "key.keyboard.left.shift": "sneak", "key.keyboard.left.control": "sprint", "key.keyboard.f": "swapHands",
}
MOUSE_BUTTONS = {0: "attack", 1: "use", 2: "pickItem"}
DEGREES_PER_PIXEL = 360.0 / 2400.0  # CAMERA_SCALER: MineRL's mouse sensitivity
# data_loader.py, MINEREC_VERSION_SPECIFIC_SCALERS: mouse deltas while a GUI is open were recorded
# at another scale by these recorder versions ("if data version is not present, assume it is 1").
GUI_SCALERS = {"5.7": 0.5, "5.8": 0.5, "6.7": 2.0, "6.8": 2.0, "6.9": 2.0}
RECORDED_HEIGHT_PX = 720  # MINEREC_ORIGINAL_HEIGHT_PX: the recorder's window; mouse x, y are in its pixels
CURSOR_FILE = Path(__file__).with_name("vpt_cursor.npz")  # VPT's cursors/mouse_cursor_white_16x16.png (MIT)
REQUIRED = (("mouse", "dx"), ("mouse", "dy"), ("mouse", "buttons"), ("keyboard", "keys"))

_INDEX = {name: i for i, name in enumerate(BUTTONS)}
_EXTRA_INDEX = {name: i for i, name in enumerate(EXTRA_BUTTONS)}


@dataclass
class Steps:
    """One segment's lines, converted; every array has one row per jsonl line."""

    buttons: np.ndarray  # (T, 20) bool, BUTTONS order
    extra_buttons: np.ndarray  # (T, 3) bool: ESC, swapHands, pickItem
    camera: np.ndarray  # (T, 2) float32 degrees [pitch, yaw]
    null_action: np.ndarray  # (T,) bool: no key, no mouse button, no hotbar change, no mouse move
    gui_open: np.ndarray  # (T,) bool
    mouse_xy: np.ndarray  # (T, 2) float64: the cursor in the recorder's 720-pixel-high window
    state: dict[str, list]  # state_* column -> T values (None where a line lacks the field)
    counts: dict = field(default_factory=dict)  # what the conversion changed or ignored, for the report

    @property
    def num_steps(self) -> int:
        return len(self.buttons)

    def part(self, start: int, stop: int) -> dict:
        """Steps [start, stop) as the action and state fields of a DatasetWriter part."""
        return {"buttons": self.buttons[start:stop], "camera": self.camera[start:stop],
                "extra_buttons": self.extra_buttons[start:stop], "null_action": self.null_action[start:stop],
                "state": {k: v[start:stop] for k, v in self.state.items()}}


def read_jsonl(path: str | Path) -> list[dict]:
    """The action lines of a VPT jsonl file; UserError naming the file and line of a malformed one."""
    return parse_jsonl(path)[0]


def parse_jsonl(path: str | Path) -> tuple[list[dict], dict]:
    """(the action lines of a VPT jsonl file, what was passed over: `blank_lines`, `partial_last_line`).
    Accepted as text editors and interrupted recorders leave them: a UTF-8 BOM, CRLF endings, blank
    lines (not frames: they shift nothing), and a last line cut off before its newline (the recorder
    stopped mid-write; the frames after the last whole line are dropped anyway). Any other malformed
    line is a UserError naming the file and line."""
    path = Path(path)
    lines: list[dict] = []
    notes = {"blank_lines": 0, "partial_last_line": False}
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")  # -sig: a BOM is not part of line 1
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err}); is it a VPT .jsonl file?") from None
    raw = text.split("\n")  # never str.splitlines: U+2028 and friends may sit inside a JSON string
    last = max((i for i, line in enumerate(raw) if line.strip()), default=-1)
    for number, line in enumerate(raw, 1):
        if not line.strip():
            notes["blank_lines"] += number <= last + 1  # the newlines that end the file are not worth a note
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            if number == last + 1 and not text.endswith(("\n", "\r")) and lines:
                notes["partial_last_line"] = True
                break
            raise UserError(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                            "every line must be one action object (re-download the file)") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} line {number}: a JSON object expected, got {type(data).__name__}; every line must "
                            "be one action object (re-download the file)")
        for group, key in REQUIRED:
            if not isinstance(data.get(group), dict) or key not in data[group]:
                raise UserError(f"{path} line {number}: field {group}.{key} is missing; is this a VPT action file?")
        problem = _bad_field(data)
        if problem:
            raise UserError(f"{path} line {number}: {problem}; is this a VPT action file? (the recorder writes "
                            'e.g. "keyboard": {"keys": ["key.keyboard.w"]}, "mouse": {"buttons": [0]})')
        lines.append(data)
    if not lines:
        raise UserError(f"{path}: holds no action lines (empty or blank); re-download it, or remove the pair")
    return lines, notes


# The fields `convert` reads, with the types VPT's recorder writes (null is read as absent everywhere).
FIELD_TYPES = (("mouse", "buttons", "a list of mouse button numbers", int), ("mouse", "newButtons",
               "a list of mouse button numbers", int), ("keyboard", "keys", "a list of key names", str))


def _bad_field(line: dict) -> str | None:
    """What is wrong with a line's field types, in words, or None: a field of another type would be misread
    silently (a string of keys read letter by letter, "false" read as true) or end in a bare TypeError."""
    for group, key, words, kind in FIELD_TYPES:
        value = line[group].get(key)
        if value is not None and not (isinstance(value, list) and all(
                isinstance(v, kind) and not isinstance(v, bool) for v in value)):
            return f"field {group}.{key} is {json.dumps(value)[:60]}, {words} expected"
    for key in ("dx", "dy", "x", "y"):  # pixels; null is absent (no move), NaN or text is no move a recorder wrote
        value = line["mouse"].get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not _finite(value)):
            return f"field mouse.{key} is {json.dumps(value)[:60]}, a finite number of pixels expected"
    for group, fields in (("", line), ("mouse.", line["mouse"]), ("keyboard.", line["keyboard"])):
        for key in fields:  # a field read under another spelling would read as absent, without a word
            known = READ_FIELDS_LOWER.get(group + key.lower())
            if known is not None and known != group + key:
                return f"field {group}{key} is spelled {known} by VPT's recorder (names are case-sensitive)"
    for key, words in (("isGuiOpen", "true or false"), ("hotbar", "a slot number 0..8")):
        value = line.get(key)
        wrong = (not isinstance(value, bool) if key == "isGuiOpen"
                 else isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 8)
        if value is not None and wrong:
            return f"field {key} is {json.dumps(value)[:60]}, {words} expected"
    return None


# Every field `convert` and `engine_state` read, by its lower-case spelling: a line that writes one in other
# letters (`IsGuiOpen`) is refused, as it would read as absent (until 2026-12-07 a GUI line lost its 2x scaling).
READ_FIELDS = ("mouse", "keyboard", "isGuiOpen", "hotbar", "inventory", "xpos", "ypos", "zpos", "yaw", "pitch", "tick",
               "mouse.dx", "mouse.dy", "mouse.x", "mouse.y", "mouse.buttons", "mouse.newButtons", "keyboard.keys")
READ_FIELDS_LOWER = {name.lower(): name for name in READ_FIELDS}


def _finite(value: int | float) -> bool:
    """A JSON number that is a finite float (a whole number of 400 digits is not: math.isfinite raises on it)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def recorder_version(path: str | Path) -> str | None:
    """The recorder version of a recording in the published layout `<version>/<name>.jsonl`
    (e.g. "6.8"), or None when its folder is not named like one."""
    return version_name(Path(path).parent.name)


def version_name(name: str) -> str | None:
    """`name` if it is a recorder version as VPT's folders are named (`6.8`, `10.0`), else None."""
    head, dot, tail = name.partition(".")
    return name if dot and head.isdigit() and tail.isdigit() else None


def gui_scaler(version: str | None) -> float:
    return GUI_SCALERS.get(version or "", 1.0)


def convert(lines: list[dict], recorder_version: str | None = None) -> Steps:
    """The WorldLoom actions and state of one segment's jsonl lines (module docstring)."""
    num = len(lines)
    buttons = np.zeros((num, NUM_BUTTONS), bool)
    extra = np.zeros((num, len(EXTRA_BUTTONS)), bool)
    gui = np.zeros(num, bool)
    pointer = np.zeros((num, 4), np.float64)  # mouse dy, dx, x, y; the camera is computed for all lines at once
    counts = {"unknown_keys": collections.Counter(), "stuck_attack_steps": 0, "hotbar_scrolls": 0, "camera_null_steps": 0}
    scaler = gui_scaler(recorder_version)
    attack_stuck = lines[0]["mouse"].get("newButtons") == [0]
    last_hotbar = lines[0].get("hotbar")
    for t, line in enumerate(lines):
        mouse = line["mouse"]
        if t > 0 and attack_stuck and 0 in (mouse.get("newButtons") or []):
            attack_stuck = False  # the player pressed attack: it is real from here on
        pressed = set(mouse["buttons"] or [])
        if attack_stuck and 0 in pressed:
            pressed.discard(0)
            counts["stuck_attack_steps"] += 1
        for key in line["keyboard"]["keys"] or []:
            name = KEY_BUTTONS.get(key)
            if name is None:
                counts["unknown_keys"][key] += 1
            else:
                _press(buttons[t], extra[t], name)
        for code in pressed:
            if code in MOUSE_BUTTONS:
                _press(buttons[t], extra[t], MOUSE_BUTTONS[code])
        hotbar = line.get("hotbar")
        if t > 0 and hotbar != last_hotbar and isinstance(hotbar, int) and 0 <= hotbar <= 8:
            buttons[t, _INDEX[f"hotbar.{hotbar + 1}"]] = True
            counts["hotbar_scrolls"] += 1
        last_hotbar = hotbar
        gui[t] = bool(line.get("isGuiOpen"))
        counts["camera_null_steps"] += mouse["dx"] is None or mouse["dy"] is None  # read as no move, counted
        pointer[t] = (_number(mouse["dy"]), _number(mouse["dx"]), _number(mouse.get("x", 0.0)),
                      _number(mouse.get("y", 0.0)))
    scale = DEGREES_PER_PIXEL * np.where(gui, scaler, 1.0)  # (T,): the GUI scaler while a GUI is open
    counts["gui_scaled_steps"] = int(gui.sum()) if scaler != 1.0 else 0
    move = pointer[:, :2] * scale[:, None]  # (T, 2) [pitch, yaw] degrees, float64
    over = np.abs(move) > CAMERA_LIMIT  # a recorder glitch, not a turn (VPT meant to drop these)
    counts["camera_zeroed_over_180"] = int(over.any(1).sum())
    camera = np.where(over, 0.0, move).astype(np.float32)
    mouse_xy = np.ascontiguousarray(pointer[:, 2:])
    null = ~buttons.any(1) & ~extra.any(1) & ~camera.any(1)
    counts["unknown_keys"] = dict(counts["unknown_keys"])
    counts["null_action_steps"] = int(null.sum())
    return Steps(buttons, extra, camera, null, gui, mouse_xy, engine_state(lines), counts)


def _press(buttons: np.ndarray, extra: np.ndarray, name: str) -> None:
    if name in _INDEX:
        buttons[_INDEX[name]] = True
    else:
        extra[_EXTRA_INDEX[name]] = True


def _number(value) -> float:
    """A checked field's number (`_bad_field`): null -> 0.0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def engine_state(lines: list[dict]) -> dict[str, list]:
    """The `state_*` columns the jsonl carries: position, yaw, pitch, GUI, hotbar slot, inventory, tick."""
    numbers = (int, float)
    slots = _values(lines, "hotbar", (int,))
    return {
        "state_x": _values(lines, "xpos", numbers), "state_y": _values(lines, "ypos", numbers),
        "state_z": _values(lines, "zpos", numbers), "state_yaw": _values(lines, "yaw", numbers),
        "state_pitch": _values(lines, "pitch", numbers), "state_gui_open": _values(lines, "isGuiOpen", (bool,)),
        "state_hotbar_slot": [h if h is not None and 0 <= h <= 8 else None for h in slots],
        "state_inventory": [inventory_counts(line.get("inventory")) for line in lines],
        "state_tick": _values(lines, "tick", (int,)),
    }


def _values(lines: list[dict], key: str, kinds: tuple[type, ...]) -> list:
    """Each line's `key` if it has one of `kinds` (a bool is not a number here), else None."""
    out = []
    for line in lines:
        value = line.get(key)
        ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        out.append(value if ok else None)
    return out


def inventory_counts(inventory) -> list[dict] | None:
    """VPT's inventory (a list of {type, quantity}, one per slot) -> [{item, count}] summed per item."""
    if not isinstance(inventory, list):
        return None
    counts: dict[str, int] = {}
    for slot in inventory:
        if isinstance(slot, dict) and isinstance(slot.get("type"), str) and isinstance(slot.get("quantity"), int):
            counts[slot["type"]] = counts.get(slot["type"], 0) + slot["quantity"]
    return [{"item": item, "count": count} for item, count in sorted(counts.items())]


@lru_cache(maxsize=1)
def cursor_image() -> tuple[np.ndarray, np.ndarray]:
    """VPT's 16x16 cursor: RGB (16, 16, 3) uint8 and alpha (16, 16, 1) float64 in [0, 1]."""
    with np.load(CURSOR_FILE) as data:
        return data["rgb"], data["alpha"][..., None] / 255.0


def draw_cursor(frame: np.ndarray, x: int, y: int) -> None:
    """Composite the cursor onto `frame` (H, W, 3) uint8 in place, top-left corner at pixel (x, y),
    clipped to the frame on every side (VPT's helper breaks on a negative x or y)."""
    rgb, alpha = cursor_image()
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + rgb.shape[1], w), min(y + rgb.shape[0], h)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
    region = frame[y0:y1, x0:x1]
    # float64 blend truncated to uint8, as VPT's composite_images_with_alpha (so frames match it bit for bit)
    frame[y0:y1, x0:x1] = (region * (1 - a) + rgb[y0 - y:y1 - y, x0 - x:x1 - x] * a).astype(np.uint8)


def draw_cursors(frames: np.ndarray, steps: Steps, first_step: int) -> int:
    """Draw the cursor on the frames (n, H, W, 3) of steps [first_step, first_step + n) whose GUI is
    open, in place; returns how many were drawn."""
    scale = frames.shape[1] / RECORDED_HEIGHT_PX
    drawn = 0
    for i in range(len(frames)):
        t = first_step + i
        if t < steps.num_steps and steps.gui_open[t]:
            x, y = steps.mouse_xy[t]
            draw_cursor(frames[i], int(x * scale), int(y * scale))
            drawn += 1
    return drawn
