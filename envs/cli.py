"""`worldloom envs`: look at worlds: contact sheets over seeds, and recorded plays.

    worldloom envs show --env voxel --seeds 0-7 --out grid.png
    worldloom envs play --env voxel --player mixture --steps 200 --out play.mp4
    worldloom envs players --steps 2000          # each player's action histogram

`show` resets the env for each seed, lets a player walk for a few steps, and writes one frame
per seed in a grid labelled with the seed and the biome. `play` records one episode of a
player to mp4 (H.264 through PyAV).
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from worldloom import actions
from worldloom.actions import FPS
from worldloom.config import parse_resolution
from worldloom.envs import ENV_NAMES, PLAYER_NAMES, check_resolution, make_env, make_player
from worldloom.envs.voxel import MAX_SEED
from worldloom.envs.worldgen import BIOMES
from worldloom.errors import UserError
from worldloom.io import check_image_out, check_video_out, write_image, write_video
from worldloom.progress import counted


def parse_seeds(text: str) -> list[int]:
    """'0-7' or '1,5,9' or '3' -> a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError as err:
        raise UserError(f"--seeds must look like 0-7 or 1,5,9, got {text!r}") from err
    if not seeds or len(seeds) > 256:
        raise UserError(f"--seeds must name 1..256 seeds, got {len(seeds)} from {text!r}")
    if min(seeds) < 0 or max(seeds) > MAX_SEED:  # numpy and gymnasium take none below 0; worlds use 31 bits
        raise UserError(f"--seeds are whole numbers in 0..{MAX_SEED}, got {min(seeds) if min(seeds) < 0 else max(seeds)} "
                        f"from {text!r}")
    return seeds


def _make(name: str, height: int, width: int):
    try:
        return make_env(name, height=height, width=width)
    except ValueError as err:
        raise UserError(str(err)) from err


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    out = frame.copy()
    scale = max(frame.shape[1] / 400.0, 0.3)
    cv2.putText(out, text, (3, int(12 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(out, text, (3, int(12 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(env_name: str, seeds: list[int], height: int = 128, width: int = 128, warmup: int = 0,
                  player: str = "explorer", cols: int = 4) -> np.ndarray:
    """One labelled frame per seed after `warmup` steps of `player`, tiled in a grid (RGB uint8)."""
    if warmup < 0:
        raise UserError(f"--warmup must be a whole number of steps >= 0, got {warmup}")
    env = _make(env_name, height, width)
    tiles, ended = [], []
    for k, seed in enumerate(seeds):
        # Voxel worlds: each tile starts in the next biome, so the sheet shows all of them.
        options = {"biome": BIOMES[k % len(BIOMES)]} if env_name == "voxel" else None
        obs, info = env.reset(seed=seed, options=options)
        p = make_player(player, seed=seed)
        for step in range(warmup):
            obs, _, terminated, truncated, info = env.step(p.act(obs, info))
            if terminated or truncated:
                ended.append(f"seed {seed} after {step + 1}")
                break
        if info.get("gui_open"):  # a sheet of worlds, not of inventory screens: close it
            close = actions.noop()
            close["inventory"] = 1
            obs, _, _, _, info = env.step(close)
        tiles.append(_label(obs, f"seed {seed} {info.get('biome', '')}"))
    if ended:  # the tile shows the episode's last frame, not one after --warmup steps
        print(f"envs show: {counted(len(ended), 'episode')} ended before --warmup {warmup} ({', '.join(ended)} steps): "
              "their tiles show the last frame", file=sys.stderr)
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    tiles += [np.zeros_like(tiles[0])] * (rows * cols - len(tiles))
    grid = [np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)]
    return np.concatenate(grid, axis=0)


def record(env_name: str, player: str, steps: int, seed: int, height: int, width: int) -> list[np.ndarray]:
    """Frames of one episode (reset included) of `player`; a reset starts a new episode mid-way."""
    env = _make(env_name, height, width)
    p = make_player(player, seed=seed)
    obs, info = env.reset(seed=seed)
    frames = [obs]
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(p.act(obs, info))
        frames.append(obs)
        if terminated or truncated:
            obs, info = env.reset()
            p.reset()
    return frames


def show(args: argparse.Namespace) -> int:
    check_image_out(args.out)  # before the seconds of rendering
    grid = contact_sheet(args.env, parse_seeds(args.seeds), *_size(args), args.warmup, args.player)
    write_image(args.out, grid)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


def play(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not 0 <= args.seed <= MAX_SEED:  # numpy and gymnasium take no seed below 0; worlds use 31 bits
        raise UserError(f"--seed must be a whole number in 0..{MAX_SEED}, got {args.seed}")
    out = check_video_out(args.out, f"{args.env}-{args.player}-seed{args.seed}")  # before the seconds of play
    frames = record(args.env, args.player, args.steps, args.seed, *_size(args))
    write_video(out, frames, FPS, pix_fmt="yuv444p")  # yuv444p: pixel-art colours kept exact
    print(f"wrote {out} ({counted(len(frames), 'frame')})")
    return 0


def _resolution(text: str) -> tuple[int, int]:
    try:
        return parse_resolution(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _size(args: argparse.Namespace) -> tuple[int, int]:
    """(height, width): --resolution, or the deprecated --height / --width; each in the env's range
    (a UserError naming --resolution, not the env's own words about its `height`)."""
    size = args.resolution
    if args.height is not None or args.width is not None:
        print("worldloom: --height and --width are deprecated and go in the next release; use --resolution "
              "WIDTHxHEIGHT", file=sys.stderr)
        size = args.height or args.resolution[0], args.width or args.resolution[1]
    try:
        for pixels in size:
            check_resolution(args.env, pixels)
    except ValueError as err:
        raise UserError(str(err)) from None
    return size


def players(args: argparse.Namespace) -> int:
    from worldloom.envs.players import report

    print(report(tuple(args.players), args.steps, args.env))
    return 0


def register(subparsers, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    sub = p.add_subparsers(dest="envs_command", metavar="COMMAND", required=True)

    def common(q, size: int) -> None:
        q.add_argument("--env", default="voxel", help=f"env name: {', '.join(ENV_NAMES)}")
        q.add_argument("--resolution", type=_resolution, default=(size, size),
                       help=f"frame size in pixels: N (square) or WIDTHxHEIGHT (default: {size})")
        q.add_argument("--height", type=int, default=None, help=argparse.SUPPRESS)  # 0.1's spelling, deprecated
        q.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)

    q = sub.add_parser("show", help="contact sheet of frames over seeds and biomes")
    common(q, 128)
    q.add_argument("--seeds", default="0-7", help="seeds: 0-7 or 1,5,9")
    q.add_argument("--warmup", type=int, default=0, help="steps a player plays before each frame is taken")
    q.add_argument("--player", default="explorer", choices=PLAYER_NAMES)
    q.add_argument("--out", required=True, help="image file: .png (or another extension Pillow writes)")
    q.set_defaults(handler=show)

    q = sub.add_parser("play", help="record a player's episode to mp4")
    common(q, 128)
    q.add_argument("--player", default="mixture", choices=PLAYER_NAMES)
    q.add_argument("--steps", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", required=True, help="mp4 path")
    q.set_defaults(handler=play)

    q = sub.add_parser("players", help="print each player's action histogram")
    q.add_argument("--env", default="voxel")
    q.add_argument("--steps", type=int, default=2000)
    q.add_argument("--players", nargs="+", default=list(PLAYER_NAMES), choices=PLAYER_NAMES)
    q.set_defaults(handler=players)
