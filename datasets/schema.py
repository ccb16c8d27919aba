"""Format-level constants of a WorldLoom dataset (format version 1): the action space and labels.

The button list is VPT's `Buttons.ALL` order (openai/Video-Pre-Training `lib/actions.py`); the
camera is `[pitch, yaw]` in degrees per step. Everything that stores or predicts actions uses
these names, in this order.
"""

import pyarrow as pa

FORMAT_VERSION = 1

BUTTONS: tuple[str, ...] = (
    "attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop",
    "inventory", *(f"hotbar.{i}" for i in range(1, 10)),
)
NUM_BUTTONS = len(BUTTONS)  # 20
CAMERA_AXES: tuple[str, ...] = ("pitch", "yaw")

LABEL_SOURCES: tuple[str, ...] = ("env", "idm", "none")

# Written into every dataset's manifest: the order of events within a step.
ACTION_ALIGNMENT = "action[t] is applied between frame[t] and frame[t+1]"

# ---- Parquet schemas (format version 1) ----------------------------------------------------
# Actions are flat typed columns, one per button plus two camera columns, so that SQL engines,
# pandas, Polars and HF `datasets` read them as plain columns with no nesting or dots to quote.

BUTTON_COLUMNS: tuple[str, ...] = tuple("action_" + b.replace(".", "_") for b in BUTTONS)
CAMERA_COLUMNS: tuple[str, ...] = tuple(f"action_camera_{axis}" for axis in CAMERA_AXES)
ACTION_COLUMNS: tuple[str, ...] = BUTTON_COLUMNS + CAMERA_COLUMNS
CAMERA_UNITS = "degrees per step"
CAMERA_LIMIT_DEG = 180.0  # MineRL 1.0's camera Box is [-180, 180] per axis

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
