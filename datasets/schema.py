"""Format-level constants of a WorldLoom dataset (format version 1): columns, labels, file names.

The action columns are derived from the action space in `worldloom.actions` (VPT's
`Buttons.ALL` order, camera `[pitch, yaw]` in degrees per step): one typed column per button,
two camera columns.
"""

import pyarrow as pa

from worldloom.actions import (
    ACTION_ALIGNMENT,
    BUTTONS,
    CAMERA_AXES,
    CAMERA_LIMIT,
    CAMERA_UNITS,
    NUM_BUTTONS,
)

__all__ = ["ACTION_ALIGNMENT", "BUTTONS", "CAMERA_AXES", "CAMERA_UNITS", "NUM_BUTTONS", "CAMERA_LIMIT",
           "FORMAT_VERSION", "LABEL_SOURCES", "BUTTON_COLUMNS", "CAMERA_COLUMNS", "ACTION_COLUMNS",
           "FRAME_SCHEMA", "EPISODE_SCHEMA"]

FORMAT_VERSION = 1

LABEL_SOURCES: tuple[str, ...] = ("env", "idm", "none")

# ---- Parquet schemas (format version 1) ----------------------------------------------------
# Actions are flat typed columns, one per button plus two camera columns, so that SQL engines,
# pandas, Polars and HF `datasets` read them as plain columns with no nesting or dots to quote.

BUTTON_COLUMNS: tuple[str, ...] = tuple("action_" + b.replace(".", "_") for b in BUTTONS)
CAMERA_COLUMNS: tuple[str, ...] = tuple(f"action_camera_{axis}" for axis in CAMERA_AXES)
ACTION_COLUMNS: tuple[str, ...] = BUTTON_COLUMNS + CAMERA_COLUMNS

FRAME_SCHEMA = pa.schema(
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
