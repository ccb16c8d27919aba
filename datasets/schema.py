"""Format-level constants of a WorldLoom dataset (format version 1): the action space and labels.

The button list is VPT's `Buttons.ALL` order (openai/Video-Pre-Training `lib/actions.py`); the
camera is `[pitch, yaw]` in degrees per step. Everything that stores or predicts actions uses
these names, in this order.
"""

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
