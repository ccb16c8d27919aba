"""Engine-exact captions: a sentence per clip, made by rules from the `state_*` and action columns.

    worldloom dataset captions data/run1 --out data/run1-captions.jsonl [--clip-seconds 2]

    from worldloom.datasets.captions import caption_episode, read_caption, row_captions
    captions = caption_episode(Dataset("data/run1"), "ep-000000")   # [Caption(start, stop, text, facts)]
    read_caption(captions[0].text)                                  # the facts the text names, back
    row_captions(columns, "ep-000000", fps=20)                     # the `caption` column: one per row

Capture stores each row's clip caption in the dataset's `caption` column (format version 3,
docs/dataset-format.md); `stored_captions` reads it back as clips.

Every caption is made from what the engine knew (docs/dataset-format.md), never from pixels:
what the player does (stands still, walks, sprints, swims; looks or turns around), where (the
biome), when (dawn, day, dusk, night from the time of day), what it holds, what it looks at at
the clip's end, and what it collected or placed (inventory changes), e.g. "sprints through a
snowy tundra at dusk, holding a pickaxe, then collects log; looking at stone". Each fact has a
few phrasings; which one a clip gets is a hash of (episode, start), so captions are
deterministic and varied. Every phrasing names one value only, so `read_caption` recovers the
facts from the text (the tests check it against the state). A fact the dataset does not know
(a null column) is left out of the sentence.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from worldloom.errors import UserError
from worldloom.io import check_local, check_parents, json_text

from .reader import Dataset
from .schema import CAPTION_COLUMN

STATE_NEEDED = ("state_x", "state_z", "state_yaw", "state_in_water", "state_held_item", "state_target_block",
                "state_biome", "state_time_of_day", "state_inventory")
ACTION_NEEDED = ("action_forward", "action_back", "action_left", "action_right", "action_sprint")

# Rules, in blocks per second and degrees per clip (VoxelWorld walks at 4.3 b/s, sprints at 5.6).
STILL_SPEED = 0.6  # under this the player stands still
SPRINT_SPEED = 4.6  # over this, with sprint held, it sprints
TURN_AROUND_DEG = 270.0  # total yaw swept in the clip
LOOK_AROUND_DEG = 90.0

# Each fact value -> its phrasings. No phrasing is part of another value's phrasing (read_caption).
ACTIVITY = {
    "still": ("stands still", "waits", "stays put"),
    "walk": ("walks", "strolls", "moves along"),
    "sprint": ("sprints", "runs", "dashes"),
    "swim": ("swims", "paddles"),
}
TURN = {
    "turn_around": ("turns all the way around", "spins around"),
    "look_around": ("looks around", "glances about"),
}
BIOME = {
    "plains": ("in the plains", "on open grassland"),
    "forest": ("in a forest", "among the trees"),
    "desert": ("in the desert", "on the sand dunes"),
    "snow": ("in a snowy tundra", "on the snowfields"),
    "water": ("on open water", "out on the lake"),
}
TIME = {
    "dawn": ("at dawn", "at sunrise"),
    "day": ("in daylight", "by day"),
    "dusk": ("at dusk", "at sunset"),
    "night": ("at night", "in the dark"),
}
HELD = ("holding {}", "with {} in hand")
EMPTY_HANDED = ("empty-handed", "with bare hands")
COLLECT = ("then collects {}", "then gathers {}")
PLACE = ("then places {}", "then puts down {}")
TARGET = ("looking at {}", "facing {}")


EMPTY_ITEMS = ("air", "none")  # an empty hand: VoxelWorld's and Minecraft's air, MineRL's mainhand `none`
UNNAMED_ITEMS = ("other",)  # MineRL's mainhand `other`: an item it does not name (left out, as unknown)


def time_name(fraction: float) -> str:
    """dawn, day, dusk or night of a time of day (fraction of the day since sunrise, 0.5 sunset)."""
    f = fraction % 1.0
    if f < 0.05 or f >= 0.95:
        return "dawn"
    if f < 0.45:
        return "day"
    if f < 0.55:
        return "dusk"
    return "night"


def item_name(item: str) -> str:
    """An engine's item id as words: `default:iron_lump` -> `iron lump`."""
    return item.rsplit(":", 1)[-1].replace("_", " ")


@dataclass(frozen=True)
class Caption:
    """Steps `[start, stop)` of an episode described by `text`; `facts` are what the text names."""

    episode_id: str
    start: int
    stop: int
    text: str
    facts: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"episode_id": self.episode_id, "start": self.start, "stop": self.stop, "caption": self.text,
                "facts": self.facts}


def _majority(values: list) -> object | None:
    known = [v for v in values if v is not None]
    return Counter(known).most_common(1)[0][0] if known else None


def _inventory(entries: list | None) -> dict[str, int] | None:
    return None if entries is None else {e["item"]: int(e["count"]) for e in entries}


def clip_facts(columns: dict[str, list], start: int, stop: int, fps: float) -> dict:
    """The facts of rows `[start, stop)` of an episode's columns (lists; the row at `stop`, if
    there, is the state after the clip's last action). Keys of unknown facts are left out."""
    rows = slice(start, stop)
    facts: dict = {}
    x, z = columns["state_x"][rows], columns["state_z"][rows]
    seconds = max(stop - start - 1, 1) / fps
    water = _majority(columns["state_in_water"][rows])
    if all(v is not None for v in x + z):
        path = float(np.hypot(np.diff(x), np.diff(z)).sum())  # blocks walked in the clip
        speed = path / seconds
        sprinting = _majority(columns["action_sprint"][rows])
        if speed < STILL_SPEED:
            facts["activity"] = "still"
        elif water:
            facts["activity"] = "swim"
        elif speed > SPRINT_SPEED and sprinting:
            facts["activity"] = "sprint"
        else:
            facts["activity"] = "walk"
    yaw = columns["state_yaw"][rows]
    if all(v is not None for v in yaw) and len(yaw) > 1:
        swept = float(np.abs((np.diff(yaw) + 180.0) % 360.0 - 180.0).sum())  # degrees, wrapped steps
        if swept >= TURN_AROUND_DEG:
            facts["turn"] = "turn_around"
        elif swept >= LOOK_AROUND_DEG:
            facts["turn"] = "look_around"
    biome = _majority(columns["state_biome"][rows])
    if biome in BIOME:
        facts["biome"] = biome
    tod = _majority([None if v is None else time_name(v) for v in columns["state_time_of_day"][rows]])
    if tod is not None:
        facts["time"] = tod
    held = _majority(columns["state_held_item"][rows])
    if held in EMPTY_ITEMS:
        facts["held"] = "air"
    elif held is not None and held not in UNNAMED_ITEMS:
        facts["held"] = item_name(held)
    # Inventory changes: the first frame against the one after the clip's last action.
    end = min(stop, len(columns["state_inventory"]) - 1)
    before, after = _inventory(columns["state_inventory"][start]), _inventory(columns["state_inventory"][end])
    if before is not None and after is not None:
        items = sorted(set(before) | set(after))
        gained = [item_name(i) for i in items if after.get(i, 0) > before.get(i, 0)]
        spent = [item_name(i) for i in items if after.get(i, 0) < before.get(i, 0)]
        if gained:
            facts["collected"] = gained
        if spent:
            facts["placed"] = spent
    target = columns["state_target_block"][stop - 1]
    if target:
        facts["target"] = item_name(target)
    return facts


def _pick(options: tuple[str, ...], key: str, slot: str) -> str:
    """One of `options`, the same for the same (clip key, slot) in every run and process."""
    return options[zlib.crc32(f"{key}/{slot}".encode()) % len(options)]


# Items counted one by one get an article ("holding a stone pickaxe"); blocks read as mass nouns ("holding dirt").
COUNTABLE = ("pickaxe", "axe", "shovel", "sword", "hoe", "torch", "bucket", "sapling", "table", "furnace", "bow")


def _article(name: str) -> str:
    if not name.endswith(COUNTABLE):
        return name
    return ("an " if name[0] in "aeiou" else "a ") + name


def caption_text(facts: dict, key: str) -> str:
    """The sentence of `facts` (clip_facts), phrasings chosen by `key` (e.g. "ep-000/40"); "" for no facts."""
    if not facts:
        return ""
    parts = []
    if "activity" in facts:
        parts.append(_pick(ACTIVITY[facts["activity"]], key, "activity"))
    if "turn" in facts:
        turn = _pick(TURN[facts["turn"]], key, "turn")
        parts.append(f"and {turn}" if parts else turn)
    if not parts and ("biome" in facts or "time" in facts):
        parts.append("is")
    if "biome" in facts:
        parts.append(_pick(BIOME[facts["biome"]], key, "biome"))
    if "time" in facts:
        parts.append(_pick(TIME[facts["time"]], key, "time"))
    clauses = []  # (separator, clause); the first one's separator is dropped when nothing precedes it
    if "held" in facts:
        held = facts["held"]
        clauses.append((", ", _pick(EMPTY_HANDED, key, "held") if held == "air" else
                        _pick(HELD, key, "held").format(_article(held))))
    if facts.get("collected"):
        clauses.append((", ", _pick(COLLECT, key, "collected").format(" and ".join(facts["collected"]))))
    if facts.get("placed"):
        clauses.append((", ", _pick(PLACE, key, "placed").format(" and ".join(facts["placed"]))))
    if "target" in facts:
        clauses.append(("; ", _pick(TARGET, key, "target").format(facts["target"])))
    text = " ".join(parts)
    for sep, clause in clauses:
        text += (sep if text else "") + clause
    return text


def _find(table: dict[str, tuple[str, ...]], text: str) -> str | None:
    found = [value for value, phrases in table.items() if any(re.search(rf"(^|\W){re.escape(p)}(\W|$)", text)
                                                               for p in phrases)]
    if len(found) > 1:
        raise ValueError(f"caption {text!r} names more than one of {sorted(found)}")
    return found[0] if found else None


def read_caption(text: str) -> dict:
    """The facts a caption names (the inverse of caption_text on activity, turn, biome, time, held,
    target; collected and placed items as lists)."""
    facts: dict = {}
    for name, table in (("activity", ACTIVITY), ("turn", TURN), ("biome", BIOME), ("time", TIME)):
        value = _find(table, text)
        if value is not None:
            facts[name] = value
    if any(p in text for p in EMPTY_HANDED):
        facts["held"] = "air"
    held = re.search(r"(?:holding |with (?!bare hands))(?:an? )?(.+?)(?: in hand)?(?:,|;|$)", text)
    if held:
        facts["held"] = held.group(1)
    for name, phrases in (("collected", COLLECT), ("placed", PLACE)):
        for phrase in phrases:
            found = re.search(re.escape(phrase.format("")) + r"(.+?)(?:,|;|$)", text)
            if found:
                facts[name] = found.group(1).split(" and ")
    for phrase in TARGET:
        found = re.search(re.escape(phrase.format("")) + r"(.+)$", text)
        if found:
            facts["target"] = found.group(1)
    return facts


def episode_columns(ds: Dataset, episode_id: str) -> dict[str, list]:
    """The columns captions read, as Python lists (nulls as None; actions null when unlabeled)."""
    table = ds.read_table(episode_id, columns=list(STATE_NEEDED + ACTION_NEEDED))
    return table.to_pydict()


def caption_clips(columns: dict[str, list], episode_id: str, fps: float, clip_frames: int | None = None) -> list[Caption]:
    """A caption for each `clip_frames` steps (default: 2 s at `fps`) of an episode's columns
    (STATE_NEEDED and ACTION_NEEDED as lists of T values; a missing key counts as unknown);
    a shorter last clip of at least half that is kept."""
    clip_frames = clip_frames or default_clip_frames(fps)
    num = max((len(v) for v in columns.values()), default=0)
    columns = {name: columns.get(name) or [None] * num for name in STATE_NEEDED + ACTION_NEEDED}
    out = []
    for start in range(0, num, clip_frames):
        stop = min(start + clip_frames, num)
        if stop - start < max(1, clip_frames // 2) and start > 0:
            break
        facts = clip_facts(columns, start, stop, fps)
        out.append(Caption(episode_id, start, stop, caption_text(facts, f"{episode_id}/{start}"), facts))
    return out


def default_clip_frames(fps: float) -> int:
    """Frames of a 2 s clip at `fps` (the clip length of the `caption` column)."""
    return max(1, round(2.0 * float(fps)))


def row_captions(columns: dict[str, list], episode_id: str, fps: float, clip_frames: int | None = None) -> list[str | None]:
    """The `caption` column of an episode: each row gets its clip's caption (None where the clip's
    facts are unknown, and on a last clip too short to keep). Same columns, same captions."""
    num = max((len(v) for v in columns.values()), default=0)
    out: list[str | None] = [None] * num
    for c in caption_clips(columns, episode_id, fps, clip_frames):
        out[c.start : c.stop] = [c.text or None] * (c.stop - c.start)
    return out


def captions_of(state: dict[str, list] | None, buttons, episode_id: str, fps: float) -> list[str | None] | None:
    """The `caption` column of an episode being written (each row its 2 s clip's caption) from its
    `state_*` columns (lists of T values; missing ones unknown) and buttons `(T, 20)` (None: no
    actions, so sprinting is unknown); None when there is no state at all. Used by capture and
    ingest, so a written column equals what `caption_episode` makes from the stored dataset."""
    from worldloom.actions import BUTTONS

    from .schema import STATE_FIELDS

    if not state or not any(any(v is not None for v in values) for values in state.values()):
        return None
    # Caption the values as stored (float32 yaw and time of day): a time of day on a dawn/day boundary
    # rounds to one side, and the captions read back from the dataset must be these.
    float32 = [name for name, type_ in STATE_FIELDS if type_ == pa.float32() and name in state]
    columns = {**state, **{name: pa.array(state[name], pa.float32()).to_pylist() for name in float32}}
    if buttons is not None:
        columns["action_sprint"] = np.asarray(buttons)[:, BUTTONS.index("sprint")].astype(bool).tolist()
    return row_captions(columns, episode_id, fps)


def caption_episode(ds: Dataset, episode_id: str, clip_frames: int | None = None) -> list[Caption]:
    """A caption for each `clip_frames` steps of an episode (default: 2 s at the dataset's fps;
    a shorter last clip of at least half that is kept), made from its state and action columns."""
    return caption_clips(episode_columns(ds, episode_id), episode_id, float(ds.spec.fps), clip_frames)


def stored_captions(ds: Dataset, episode_id: str) -> list[Caption]:
    """The episode's `caption` column as clips: runs of rows with the same caption (empty for a
    dataset before format version 3 or an episode written without captions). `facts` are the
    ones `read_caption` finds in the text."""
    values = ds.read_table(episode_id, columns=[CAPTION_COLUMN]).column(CAPTION_COLUMN).to_pylist()
    out, start = [], 0
    for k in range(1, len(values) + 1):
        if k == len(values) or values[k] != values[start]:
            if values[start]:
                out.append(Caption(episode_id, start, k, values[start], read_caption(values[start])))
            start = k
    return out


def check_jsonl_out(out: str) -> None:
    """UserError (one line) unless `out` names a .jsonl file that can be made: a folder, another suffix
    (`--out data/run1/dataset.json` would replace the dataset's manifest) or a parent that is a file is refused."""
    check_local(out)  # a URI: never `Path()`ed into a local folder named `s3:`
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name ending in .jsonl, e.g. {path.with_name(path.name + '-captions.jsonl')}")
    if path.suffix.lower() != ".jsonl":
        raise UserError(f"--out {out}: give a file name ending in .jsonl (one JSON object per clip)")
    check_parents(path)


def caption_dataset(path: str, out: str, clip_seconds: float = 2.0) -> dict:
    """Captions of every episode of the dataset at `path`, written as JSON lines to `out`
    (one object per clip: episode_id, start, stop, caption, facts). UserError when the dataset
    has no engine state at all (footage, or recordings without state)."""
    from worldloom.io import atomic_write_text

    if not (math.isfinite(clip_seconds) and clip_seconds > 0):
        raise UserError(f"--clip-seconds must be a positive number of seconds, got {clip_seconds}")
    check_jsonl_out(out)
    ds = Dataset(path)
    if not len(ds):
        raise UserError(f"{path}: the dataset holds no episodes; nothing to caption")
    clip_frames = max(1, round(clip_seconds * float(ds.spec.fps)))
    lines, num_known = [], 0
    for episode_id in ds.episode_ids:
        for caption in caption_episode(ds, episode_id, clip_frames):
            lines.append(json_text(caption.to_json(), indent=None))
            num_known += bool(caption.facts)
    if lines and not num_known:
        raise UserError(f"{path}: no engine state in any episode (the state_* columns are null); captions need a "
                        "dataset written by `worldloom capture` with actions (not --strip-actions footage)")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    return {"clips": len(lines), "episodes": len(ds), "clip_frames": clip_frames, "out": out}


__all__ = ["Caption", "caption_clips", "caption_dataset", "caption_episode", "caption_text", "captions_of",
           "clip_facts",
           "default_clip_frames", "read_caption", "row_captions", "stored_captions", "time_name"]
