"""Recordings in the published layouts, small: VPT (`<version>/<name>.mp4` + `.jsonl`) and MineRL v0
(`<env>/<trajectory>/recording.mp4` + `rendered.npz` + `metadata.json`). Frame i shows its index
(tests/videos.py `painted`, read back with `frame_index`), so a test sees which frame a step got.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from videos import painted

from worldloom.io import write_video


def frames_of(num: int, size: int = 64, first: int = 0) -> np.ndarray:
    """(num, size, size, 3): frame i's top-left 16x16 block is grey 10 + 6 (i % 40), the block right of
    it grey 10 + 6 (i // 40): `frame_number` reads i back."""
    frames = np.stack([painted((first + i) % 40, size) for i in range(num)])
    for k in range(num):
        frames[k, :16, 16:32] = 10 + 6 * ((first + k) // 40)
    return frames


def frame_number(frames: np.ndarray) -> list[int]:
    """The number `frames_of` painted into each frame (N, H, W, 3)."""
    def grey(block):
        return np.rint((block.reshape(len(frames), -1).mean(1) - 10) / 6).astype(int)
    return (grey(frames[:, :16, :16]) + 40 * grey(frames[:, :16, 16:32])).tolist()


def vpt_line(t: int, keys=(), buttons=(), new_buttons=(), dx=0.0, dy=0.0, hotbar=0, gui=False, x=640.0, y=360.0) -> dict:
    """One jsonl line in the published format (README, "Data format")."""
    return {"mouse": {"x": x, "y": y, "dx": dx, "dy": dy, "scaledX": x - 640, "scaledY": y - 360, "dwheel": 0.0,
                      "buttons": list(buttons), "newButtons": list(new_buttons)},
            "keyboard": {"keys": [f"key.keyboard.{k}" for k in keys], "newKeys": [], "chars": ""},
            "isGuiOpen": gui, "isGuiInventory": gui, "hotbar": hotbar, "yaw": 10.0 + t, "pitch": -5.0,
            "xpos": 100.5 + 0.1 * t, "ypos": 64.0, "zpos": -20.25, "tick": t, "milli": 1649575088006 + 50 * t,
            "inventory": [{"type": "oak_log", "quantity": 2 + t // 10}], "serverTick": 6000 + t, "stats": {}}


def vpt_lines(num: int, seed: int = 0) -> list[dict]:
    """A plausible segment: walking, turning, attacking, a scroll, the inventory open for a while."""
    rng = np.random.default_rng(seed)
    lines = []
    for t in range(num):
        keys = ["w"] if rng.random() < 0.6 else []
        if rng.random() < 0.2:
            keys.append("space")
        buttons = [0] if rng.random() < 0.3 else []
        gui = num // 2 <= t < num // 2 + 4
        lines.append(vpt_line(t, keys=keys, buttons=buttons, new_buttons=buttons, dx=float(rng.integers(-20, 21)),
                              dy=float(rng.integers(-8, 9)), hotbar=int(t >= num // 3), gui=gui))
    return lines


def write_vpt(folder: Path, name: str, num_frames: int, num_lines: int | None = None, size: int = 64,
              lines: list[dict] | None = None, seed: int = 0) -> tuple[Path, Path]:
    """`folder/name.mp4` (num_frames frames, size x size) and `folder/name.jsonl` (num_lines lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = lines if lines is not None else vpt_lines(num_lines or num_frames, seed)
    video = write_video(folder / f"{name}.mp4", frames_of(num_frames, size), fps=20, pix_fmt="yuv444p", crf=10)
    jsonl = folder / f"{name}.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return video, jsonl


def write_minerl(folder: Path, num_actions: int, lead_frames: int = 3, size: int = 64, seed: int = 0,
                 drop: tuple[str, ...] = (), metadata: bool = True) -> Path:
    """A MineRL v0 trajectory folder: `lead_frames` frames of the world loading, then num_actions + 1
    states; the npz has num_actions actions and rewards and num_actions + 1 inventory observations."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = lead_frames + num_actions + 1
    write_video(folder / "recording.mp4", frames_of(total, size), fps=20, pix_fmt="yuv444p", crf=10)
    arrays = {f"action${b}": (rng.random(num_actions) < 0.3).astype(np.int64)
              for b in ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")}
    arrays["action$camera"] = rng.normal(0, 4, (num_actions, 2)).astype(np.float32)
    arrays["action$place"] = np.where(rng.random(num_actions) < 0.1, "dirt", "none")
    arrays["action$craft"] = np.where(np.arange(num_actions) == 2, "planks", "none")
    arrays["reward"] = (rng.random(num_actions) < 0.05).astype(np.float32)
    arrays["observation$inventory$log"] = np.arange(num_actions + 1, dtype=np.int64) // 5
    arrays["observation$inventory$dirt"] = np.full(num_actions + 1, 3, np.int64)
    arrays["observation$equipped_items.mainhand.type"] = np.array(["none"] * (num_actions + 1))
    arrays["observation$compassAngle"] = np.zeros(num_actions + 1, np.float32)
    np.savez(folder / "rendered.npz", **{k: v for k, v in arrays.items() if k not in drop})
    if metadata:
        (folder / "metadata.json").write_text(json.dumps({"stream_name": folder.name, "true_video_frame_count": total,
                                                          "duration_steps": num_actions, "success": True}))
    return folder
