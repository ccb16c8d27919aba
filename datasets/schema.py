"""Format-level constants of a WorldLoom dataset (format version 3): columns, labels, file names.

The action columns are derived from the action space in `worldloom.actions` (VPT's
`Buttons.ALL` order, camera `[pitch, yaw]` in degrees per step): one typed column per button,
two camera columns. Version 2 adds the three MineRL keys that are recorded but not predicted
(ESC, swapHands, pickItem), VPT's null-action mark and typed engine-state columns (`state_*`),
all null where unknown. Version 3 adds the engine-exact `caption` of the clip each row belongs
to (datasets/captions.py). Versions 1 and 2 are still read: `frame_schema(1)`, `frame_schema(2)`.
"""

import pyarrow as pa

from worldloom.actions import (
    ACTION_ALIGNMENT,
    BUTTONS,
    CAMERA_AXES,
    CAMERA_LIMIT,
    CAMERA_UNITS,
    IGNORED_KEYS,
    NUM_BUTTONS,
)

__all__ = ["ACTION_ALIGNMENT", "BUTTONS", "CAMERA_AXES", "CAMERA_UNITS", "NUM_BUTTONS", "CAMERA_LIMIT",
           "FORMAT_VERSION", "LABEL_SOURCES", "BUTTON_COLUMNS", "CAMERA_COLUMNS", "ACTION_COLUMNS",
           "FRAME_SCHEMA", "FRAME_SCHEMA_V1", "EPISODE_SCHEMA", "READABLE_VERSIONS", "EXTRA_BUTTONS",
           "EXTRA_BUTTON_COLUMNS", "NULL_ACTION_COLUMN", "STATE_FIELDS", "STATE_COLUMNS", "INVENTORY_TYPE",
           "frame_schema", "V2_COLUMNS", "V3_COLUMNS", "CAPTION_COLUMN", "FRAME_SCHEMA_V2", "COLUMNS_ADDED"]

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # a reader of version 3 reads versions 1 and 2 (the columns they lack read as nulls)

LABEL_SOURCES: tuple[str, ...] = ("env", "idm", "none")

# ---- Parquet schemas (format version 1, the base of version 2) ----------------------------------------------------
# Actions are flat typed columns, one per button plus two camera columns, so that SQL engines,
# pandas, Polars and HF `datasets` read them as plain columns with no nesting or dots to quote.

BUTTON_COLUMNS: tuple[str, ...] = tuple("action_" + b.replace(".", "_") for b in BUTTONS)
CAMERA_COLUMNS: tuple[str, ...] = tuple(f"action_camera_{axis}" for axis in CAMERA_AXES)
ACTION_COLUMNS: tuple[str, ...] = BUTTON_COLUMNS + CAMERA_COLUMNS

FRAME_SCHEMA_V1 = pa.schema(
    [
        pa.field("episode_id", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("frame", pa.binary(), nullable=False),
        *(pa.field(c, pa.bool_()) for c in BUTTON_COLUMNS),
        *(pa.field(c, pa.float32()) for c in CAMERA_COLUMNS),
        pa.field("reward", pa.float32()),
        pa.field("terminated", pa.bool_()),
        pa.field("truncated", pa.bool_()),
        pa.field("label_source", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("label_model", pa.string()),
        pa.field("label_confidence", pa.float32()),
    ]
)

# ---- Added in format version 2 -----------------------------------------------------------------
# MineRL keys that are recorded but not predicted (VPT keeps them out of its action space): kept
# so nothing a recording holds is lost. Null where the source did not record them.
EXTRA_BUTTONS: tuple[str, ...] = IGNORED_KEYS  # ("ESC", "swapHands", "pickItem")
EXTRA_BUTTON_COLUMNS: tuple[str, ...] = ("action_esc", "action_swap_hands", "action_pick_item")
# True where the step's recorded input was nothing at all (VPT's training drops such steps; a
# dataset keeps them and marks them). Null where not computed (capture).
NULL_ACTION_COLUMN = "null_action"
INVENTORY_TYPE = pa.list_(pa.struct([pa.field("item", pa.string()), pa.field("count", pa.int32())]))
# Engine state at the step's frame, null where the source does not know it. Units: blocks,
# degrees, hit points (20 = full); time of day as the fraction of the day-night cycle since
# sunrise (Minecraft's dayTime / 24000). The same columns for VPT recordings and VoxelWorld.
STATE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("state_x", pa.float64()), ("state_y", pa.float64()), ("state_z", pa.float64()),
    ("state_yaw", pa.float32()), ("state_pitch", pa.float32()),
    ("state_on_ground", pa.bool_()), ("state_in_water", pa.bool_()), ("state_gui_open", pa.bool_()),
    ("state_hotbar_slot", pa.int8()),  # 0..8: hotbar.N selects slot N - 1
    ("state_held_item", pa.string()),
    ("state_target_block", pa.string()), ("state_target_distance", pa.float32()),
    ("state_biome", pa.string()), ("state_time_of_day", pa.float32()), ("state_health", pa.float32()),
    ("state_inventory", INVENTORY_TYPE),  # [{item, count}], one entry per item, counts summed over slots
    ("state_tick", pa.int64()),  # the game tick the recorder wrote (VPT's `tick`)
)
STATE_COLUMNS: tuple[str, ...] = tuple(name for name, _ in STATE_FIELDS)
V2_COLUMNS: tuple[str, ...] = EXTRA_BUTTON_COLUMNS + (NULL_ACTION_COLUMN,) + STATE_COLUMNS

FRAME_SCHEMA_V2 = pa.schema(
    [
        *FRAME_SCHEMA_V1,
        *(pa.field(c, pa.bool_()) for c in EXTRA_BUTTON_COLUMNS),
        pa.field(NULL_ACTION_COLUMN, pa.bool_()),
        *(pa.field(name, type_) for name, type_ in STATE_FIELDS),
    ]
)

# ---- Added in format version 3 -----------------------------------------------------------------
# The engine-exact caption (datasets/captions.py) of the clip the row belongs to: the same text on
# every row of a clip (2 s by default), dictionary-encoded, so a clip's caption costs a few bytes
# and any Parquet reader gets it with `SELECT DISTINCT episode_id, caption`. Null where unknown.
CAPTION_COLUMN = "caption"
V3_COLUMNS: tuple[str, ...] = (CAPTION_COLUMN,)
COLUMNS_ADDED: dict[int, tuple[str, ...]] = {2: V2_COLUMNS, 3: V3_COLUMNS}  # version -> the columns it added

FRAME_SCHEMA = pa.schema([*FRAME_SCHEMA_V2, pa.field(CAPTION_COLUMN, pa.string())])


def frame_schema(version: int) -> pa.Schema:
    """The frame rows' schema of a format version this WorldLoom reads."""
    schemas = {1: FRAME_SCHEMA_V1, 2: FRAME_SCHEMA_V2, 3: FRAME_SCHEMA}
    if version not in schemas:
        raise ValueError(f"format version must be one of {READABLE_VERSIONS}, got {version!r}")
    return schemas[version]


EPISODE_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("env", pa.string()),
        pa.field("env_config", pa.string()),  # JSON text: readable everywhere, any shape
        pa.field("seed", pa.int64()),
        pa.field("player", pa.string()),
        pa.field("num_steps", pa.int32(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # path relative to the dataset root
        pa.field("row_start", pa.int64(), nullable=False),  # first row of the episode in its shard
        pa.field("label_source", pa.string(), nullable=False),
        pa.field("label_model", pa.string()),
        pa.field("split", pa.string()),
    ]
)

MANIFEST_NAME = "dataset.json"
EPISODES_NAME = "episodes.parquet"
FRAMES_DIR = "frames"
LOCK_NAME = ".dataset.lock"
