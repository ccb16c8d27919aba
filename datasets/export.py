"""Look at a dataset: an episode or clip as mp4/gif with the action drawn on it, a contact sheet.

    worldloom dataset export data/run1 --episode ep-000 --out ep.mp4          # or .gif, or a folder: ep-000.mp4 in it
    worldloom dataset export data/run1 --episode ep-000 --start 40 --stop 80 --out clip.gif
    worldloom dataset export data/run1 --episode ep-000 --captions --out ep.mp4  # engine-exact captions above
    worldloom dataset export data/run1 --out sheet.png                         # contact sheet

The overlay shows the pressed buttons under the frame and an arrow for the camera move of the
step (right = yaw right, down = pitch down; `action[t]` is applied after `frame[t]`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from worldloom.errors import UserError
from worldloom.io import check_not_in_dataset, check_video_out, gif_timing, write_image, write_video
from worldloom.progress import counted

from . import schema
from .reader import Clip, Dataset

SHORT_NAMES = {"attack": "ATK", "back": "S", "forward": "W", "jump": "JMP", "left": "A", "right": "D", "sneak": "SNK",
               "sprint": "SPR", "use": "USE", "drop": "Q", "inventory": "INV", **{f"hotbar.{i}": str(i) for i in range(1, 10)}}
BAR_PX = 28
# Without --scale: a video's frames get a longer side of this many pixels (a 64x64 frame x8, pixel
# art kept sharp; 1080p footage downscaled, not x4 to 7680x4320), a contact sheet's tiles this many.
CLIP_LONG_SIDE_PX = 512
SHEET_LONG_SIDE_PX = 128
# The largest output frame (a video's frame, a contact sheet), pixels a side: --scale 1000 on 64x64
# frames would be 64000x64000 px, 12 GB a frame.
MAX_OUTPUT_PX = 4096


def auto_scale(height: int, width: int, long_side_px: int) -> float:
    """The default --scale: the largest whole upscale whose longer side fits in `long_side_px`
    (nearest neighbour: pixel art stays sharp), or for a larger frame the downscale to it."""
    longer = max(height, width)
    return float(max(1, long_side_px // longer)) if longer <= long_side_px else long_side_px / longer


def scale_frame(frame: np.ndarray, scale: float) -> np.ndarray:
    """`(H, W, 3)` -> `(round(H * scale), round(W * scale), 3)`: nearest neighbour up, area average down."""
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)


def check_scale(scale: int | None) -> None:
    """UserError unless `scale` is None (automatic) or a whole number >= 1."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise UserError(f"--scale must be a whole number >= 1 (pixels per stored pixel), got {scale!r}; leave it out "
                        f"to fit the frame's longer side to {CLIP_LONG_SIDE_PX} px")


def check_output_size(scale: int | None, height: int, width: int, rows: int = 1, cols: int = 1, border: int = 0) -> None:
    """UserError unless a `rows` x `cols` grid of `(height, width)` frames at a whole `scale` (with
    `border` px after each tile) fits in MAX_OUTPUT_PX a side; checked before anything is allocated."""
    if scale is None:
        return
    out_h, out_w = rows * (height * scale + border), cols * (width * scale + border)
    if max(out_h, out_w) <= MAX_OUTPUT_PX:
        return
    fits = min((MAX_OUTPUT_PX // rows - border) // height, (MAX_OUTPUT_PX // cols - border) // width)
    made = f"{out_w}x{out_h} px frames" if rows == cols == 1 else f"a {out_w}x{out_h} px contact sheet of {rows}x{cols} tiles"
    hint = f"use --scale {fits} or less" if fits >= 1 else "leave --scale out"
    raise UserError(f"--scale {scale} makes {made} from this dataset's {width}x{height} frames; at most "
                    f"{MAX_OUTPUT_PX} px a side: {hint}")


def draw_action(frame: np.ndarray, buttons: np.ndarray | None, camera: np.ndarray | None, step: int) -> np.ndarray:
    """`(H, W, 3)` upscaled frame -> `(H + BAR_PX, W, 3)` with pressed keys and a camera arrow."""
    h, w = frame.shape[:2]
    out = np.zeros((h + BAR_PX, w, 3), np.uint8)
    out[:h] = frame
    font = cv2.FONT_HERSHEY_SIMPLEX
    if buttons is None:
        text = f"{step} (no action label)"
    else:
        pressed = [SHORT_NAMES[b] for b, on in zip(schema.BUTTONS, buttons, strict=True) if on]
        text = f"{step} " + " ".join(pressed)
    cv2.putText(out, text, (4, h + 19), font, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    if camera is not None and np.any(camera != 0):
        centre = np.array([w - 22, 22])
        pitch, yaw = float(camera[0]), float(camera[1])
        vec = np.array([yaw, pitch]) / 10.0 * 18  # 10 degrees (the mu-law max) -> 18 px
        tip = centre + np.clip(vec, -18, 18)
        cv2.circle(out, tuple(int(v) for v in centre), 20, (0, 0, 0), -1)
        cv2.arrowedLine(out, tuple(int(v) for v in centre), tuple(int(v) for v in tip), (255, 220, 0), 2, tipLength=0.35)
    return out


CAPTION_FONT, CAPTION_SCALE, CAPTION_LINE_PX = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 14


def wrap_text(text: str, width_px: int) -> list[str]:
    """Greedy word wrap of `text` into lines that fit `width_px` in the caption font."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, CAPTION_FONT, CAPTION_SCALE, 1)[0][0] > width_px:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def draw_caption(frame: np.ndarray, lines: list[str], num_lines: int) -> np.ndarray:
    """`(H, W, 3)` frame -> `(num_lines * 14 + 6 + H, W, 3)` with the caption's lines above it."""
    bar = num_lines * CAPTION_LINE_PX + 6
    out = np.zeros((bar + frame.shape[0], frame.shape[1], 3), np.uint8)
    out[bar:] = frame
    for k, line in enumerate(lines):
        cv2.putText(out, line, (4, 3 + (k + 1) * CAPTION_LINE_PX - 3), CAPTION_FONT, CAPTION_SCALE, (255, 255, 160), 1, cv2.LINE_AA)
    return out


def render_clip(clip: Clip, overlay: bool = True, scale: float = 4, captions: list | None = None) -> list[np.ndarray]:
    """The clip's frames, scaled by `scale`, with the action overlay if asked, and the caption of the
    clip each step falls in above it when `captions` (datasets.captions.Caption) are given."""
    frames = []
    by_step, num_lines = {}, 0
    if captions:
        width = round(clip.frames.shape[2] * scale) - 8
        for c in captions:
            lines = wrap_text(c.text, width)
            num_lines = max(num_lines, len(lines))
            by_step.update({s: lines for s in range(c.start, c.stop)})
    for t in range(clip.frames.shape[0]):
        big = scale_frame(clip.frames[t], scale)
        if overlay:
            buttons = None if clip.buttons is None else clip.buttons[t]
            camera = None if clip.camera is None else clip.camera[t]
            big = draw_action(big, buttons, camera, clip.start + t)
        if captions:
            big = draw_caption(big, by_step.get(clip.start + t, []), num_lines)
        frames.append(big)
    return frames


def write_clip(frames: list[np.ndarray], path: str, fps: float) -> None:
    """RGB frames to .mp4 (H.264) or .gif through a temporary name (worldloom.io.write_video)."""
    if "://" in path:
        raise UserError(f"{path}: export writes to local disk; give a local path")
    try:
        write_video(path, frames, fps)
    except ValueError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{path}: cannot write it ({err}); choose another --out") from None


def check_episode(ds: Dataset, episode_id: str) -> None:
    """UserError naming the dataset and a few of its episode ids if `episode_id` is not in it."""
    if not len(ds):
        raise UserError(f"episode {episode_id!r} is not in {ds.location.uri}: the dataset holds no episodes")
    if episode_id not in ds.episode_ids:
        raise UserError(f"episode {episode_id!r} is not in {ds.location.uri} (it has {counted(len(ds), 'episode')}, "
                        f"e.g. {', '.join(ds.episode_ids[:3])}; `worldloom dataset inspect` lists them)")


def export_clip(ds: Dataset, episode_id: str, out: str, start: int = 0, stop: int | None = None,
                overlay: bool = True, scale: int | None = None, captions: bool = False) -> str:
    """Write steps `[start, stop)` of an episode to `out` (.mp4 or .gif; a folder: EPISODE.mp4 in it), with its engine-exact
    captions (its `caption` column, or made from its state columns: datasets/captions.py) above
    the frames if asked; `scale` None: the frame's longer side fitted to CLIP_LONG_SIDE_PX
    (auto_scale). UserError for an unknown episode, an empty step range or scale < 1."""
    check_scale(scale)
    check_output_size(scale, ds.spec.height, ds.spec.width)
    check_episode(ds, episode_id)
    if "://" not in out:
        out = str(check_video_out(out, episode_id))
    n = ds.episode(episode_id).num_steps
    asked, stop = stop, n if stop is None else min(stop, n)
    if not 0 <= start < stop:
        raise UserError(f"episode {episode_id!r} has steps 0..{n - 1}; --start {start}"
                        f"{'' if asked is None else f' --stop {asked}'} selects none")
    if asked is not None and asked > n:  # said before the work: the video is shorter than asked
        print(f"dataset export: episode {episode_id!r} holds {n} steps: steps {start}..{n - 1} exported "
              f"({stop - start} of the {asked - start} that --start {start} --stop {asked} asked)", file=sys.stderr)
    clip_captions = None
    if captions:  # the stored caption column (format version 3); else made now from the state columns
        from .captions import caption_episode, stored_captions

        clip_captions = stored_captions(ds, episode_id) or caption_episode(ds, episode_id)
        if not any(c.text for c in clip_captions):
            raise UserError(f"episode {episode_id!r} has no captions and no engine state to caption (its caption and "
                            "state_* columns are null)")
    factor = scale or auto_scale(ds.spec.height, ds.spec.width, CLIP_LONG_SIDE_PX)
    frames = render_clip(ds.frames(episode_id, start, stop), overlay, factor, clip_captions)
    h, w = frames[0].shape[:2]
    if out.lower().endswith(".mp4") and (h % 2 or w % 2):  # H.264's 4:2:0 takes even sizes (worldloom.io.write_video)
        print(f"dataset export: note: {w}x{h} frames are written {w - w % 2}x{h - h % 2} (an mp4 of H.264 4:2:0 takes "
              "even sizes: the last column or row is cropped); a .gif, or a --scale of 2 or more, keeps every pixel",
              file=sys.stderr)
    if out.lower().endswith(".gif") and len(shown := gif_timing(len(frames), ds.spec.fps)[0]) < len(frames):
        print(f"dataset export: note: a GIF shows 50 frames a second at most (browsers play a shorter delay slower), so "
              f"{len(frames) - len(shown)} of the {len(frames)} steps at {ds.spec.fps:g} fps are left out, the clip "
              "keeping its time; an .mp4 keeps every step", file=sys.stderr)  # (a new-user trial, session 57)
    write_clip(frames, out, ds.spec.fps)
    return out


MAX_SHEET_TILES = 4096  # frames in one contact sheet (64 rows of 64 at most; check_output_size bounds its pixels)


def contact_sheet(ds: Dataset, out: str, episode_id: str | None = None, num: int = 32, cols: int = 8,
                  scale: int | None = None, say_fewer: bool = False) -> str:
    """A PNG grid: `num` frames evenly spaced over one episode, or the middle frames of the first `num`
    episodes (fewer where there are fewer; `say_fewer`: a line on stderr says so, for a --num a user gave);
    `scale` None: each tile's longer side fitted to SHEET_LONG_SIDE_PX (auto_scale)."""
    check_scale(scale)
    check_not_in_dataset(Path(out))
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_SHEET_TILES:
        raise UserError(f"--num {num}: a contact sheet draws 1 to {MAX_SHEET_TILES} frames")
    if episode_id is not None:
        clip = ds.frames(episode_id)
        n = clip.frames.shape[0]
        if say_fewer and n < num:
            print(f"dataset export: episode {episode_id!r} holds {n} steps: the sheet draws all {n}, not --num {num}",
                  file=sys.stderr)
        idx = np.linspace(0, n - 1, min(num, n)).round().astype(int)
        tiles = [clip.frames[i] for i in idx]
    else:
        tiles = []
        if say_fewer and len(ds.episode_ids) < num:
            print(f"dataset export: {ds.location.uri} holds {len(ds.episode_ids)} episode(s): the sheet draws the middle "
                  f"frame of each, not --num {num}", file=sys.stderr)
        for eid in ds.episode_ids[:num]:
            n = ds.episode(eid).num_steps
            tiles.append(ds.frames(eid, n // 2, n // 2 + 1).frames[0])
    if not tiles:
        raise UserError(f"{ds.location.uri}: no frames to draw")
    check_output_size(scale, tiles[0].shape[0], tiles[0].shape[1], (len(tiles) + cols - 1) // cols,
                      min(cols, len(tiles)), border=2)
    scale = scale or auto_scale(tiles[0].shape[0], tiles[0].shape[1], SHEET_LONG_SIDE_PX)
    h, w = scale_frame(tiles[0], scale).shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * (h + 2), min(cols, len(tiles)) * (w + 2), 3), 32, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = scale_frame(tile, scale)
    try:
        write_image(out, sheet)
    except OSError as err:
        raise UserError(f"{out}: cannot write it ({err}); choose another --out") from None
    return out
