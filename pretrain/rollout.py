"""Roll a trained world model out on an episode's actions, beside the real frames, into a video.

    worldloom pretrain rollout --model runs/wm --data data/heldout --episode ep-000 --horizon 64 --out rollout.mp4
    worldloom pretrain rollout --model runs/wm-text --prompt "walking in the desert at night" --out prompt.gif
    worldloom pretrain rollout --model runs/wm-text --prompt "..." --data data/heldout --episode ep-000 --out both.gif

    from worldloom.pretrain.rollout import RolloutConfig, rollout_episode
    path = rollout_episode(RolloutConfig(model="runs/wm", data="data/heldout", episode="ep-000", out="r.gif"))

Context: the episode's first num_frames - 1 frames (from --start). Actions: the episode's own
(its labels, env or idm). Left: the truth; right: the model (a green bar over real context
frames, a red bar over generated ones). mp4 (H.264 via PyAV) or gif, by the extension of --out.

`--prompt` (models trained with `--text`, pretrain/text.py) conditions every generated frame on
the caption. Alone, it generates from blanks (no context frame, null actions: what context
dropout trains); with --data and --episode, after the episode's context under its actions. The
video shows the prompt above the frames.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch

from worldloom.config import check_range, doc
from worldloom.datasets.export import MAX_OUTPUT_PX, check_episode, check_output_size
from worldloom.datasets.storage import resize_words
from worldloom.datasets.video import FPS_RANGE
from worldloom.errors import UserError
from worldloom.io import check_video_out, write_video

from .checkpoint import check_step_rate, load_world_model
from .data import frames_to_model, model_to_frames
from .flow import SampleConfig, prompt_rollout, rollout
from .model import encode_actions
from .text import in_vocab, tokenize, words


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    model: str = doc("world model run directory")
    out: str = doc("output video: .mp4 or .gif; or an existing folder (the video is then EPISODE.mp4, or prompt.mp4, in it)")
    data: str | None = doc("dataset directory holding the episode (optional with --prompt)", None)
    episode: str | None = doc("episode id (optional with --prompt)", None)
    prompt: str | None = doc("a caption to condition on (models trained with --text); alone: generate from it only", None)
    horizon: int = doc("frames to generate", 64)
    start: int = doc("first context step in the episode", 0)
    sample: SampleConfig = doc("how frames are sampled (as `pretrain eval` scores them; the tiny preset trains only the "
                               "one-step level)", SampleConfig(num_steps=1, context_noise=0.0))
    scale: int = doc("pixel upscaling of the video", 4)
    fps: float = doc("video frame rate (0 = the dataset's)", 0.0)
    seed: int = doc("sampling seed", 0)

    def __post_init__(self):
        if (self.data is None or self.episode is None) and (self.prompt is None or (self.data, self.episode) != (None, None)):
            raise ValueError("give --data and --episode (a context from an episode), --prompt, or all three")
        for name, low in (("horizon", 1), ("start", 0), ("scale", 1)):  # one line for the flag that is wrong
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        # a frame past MAX_OUTPUT_PX a side (check_output_size, once the frame size is known) or a rate
        # past the datasets' was a numpy or PyAV traceback after the frames were sampled
        check_range("scale", self.scale, 1, MAX_OUTPUT_PX, "pixels per generated pixel")
        check_range("fps", self.fps, 0, FPS_RANGE[1], "frames per second; 0: the dataset's", integer=False)


def check_rollout_memory(horizon: int, size: int, scale: int, cols: int = 1) -> None:
    """UserError (one line, before any frame is generated) where `horizon` frames of a rollout at `size` pixels, shown
    `cols` side by side at `scale`, would not fit in MEMORY_HEADROOM (80%) of this machine's free memory: every frame is held until the
    video is written (in the model's float32 form and its copies, about 13 bytes a pixel and channel, then upscaled
    twice: the video and its captioned copy). Measured 0.64 GB a 1,000 frames at 64x64, scale 4; this estimate 0.55."""
    from worldloom.training import MEMORY_HEADROOM, available_memory_bytes

    per_frame = size * size * 3 * 13 + (size * scale) ** 2 * 3 * cols * 2
    need, have = horizon * per_frame, available_memory_bytes(gpu=False)
    if need > MEMORY_HEADROOM * have:
        raise UserError(f"--horizon {horizon}: the rollout holds its frames in memory until the video is written, about "
                        f"{need / 2**30:.1f} GiB, but {have / 2**30:.1f} GiB free: give a smaller --horizon (at most "
                        f"{int(MEMORY_HEADROOM * have // per_frame)} here) or --scale")


def side_by_side(truth: np.ndarray, generated: np.ndarray, context: int, scale: int) -> np.ndarray:
    """(T, H, W, 3) truth and model frames -> (T, H*s + bar, 2*W*s + gap, 3) video frames."""
    T, H, W, _ = truth.shape
    up = lambda f: f.repeat(scale, axis=1).repeat(scale, axis=2)  # noqa: E731
    bar, gap = max(2, scale), max(2, scale)
    out = np.full((T, H * scale + bar, 2 * W * scale + gap, 3), 255, np.uint8)
    out[:, bar:, : W * scale] = up(truth)
    out[:, bar:, W * scale + gap:] = up(generated)
    out[:context, :bar, W * scale + gap:] = (40, 180, 60)  # real context
    out[context:, :bar, W * scale + gap:] = (220, 40, 40)  # generated
    return out


def prompt_tokens(model, cfg: RolloutConfig) -> dict:
    """{"text": (1, L) word ids of --prompt} for a text model, {} without a prompt; UserError for a
    prompt to a model without a caption encoder."""
    if cfg.prompt is None:
        return {}
    if model.text_cfg is None:
        raise UserError(f"{cfg.model}: this world model was trained without captions, so --prompt has nothing to "
                        "condition on; train one with `worldloom pretrain train --text ...` or leave out --prompt")
    check_prompt_words(cfg.prompt, model.text_cfg, cfg.model)
    return {"text": tokenize([cfg.prompt], model.text_cfg)}


def check_prompt_words(prompt: str, text_cfg, run: str) -> None:
    """UserError (one line) for a prompt of no word the model knows (each unknown word is one `<unk>` id, so it
    rolled out as if unprompted); a line on stderr names the unknown and the cut words of a prompt it partly knows."""
    said = words(prompt)
    vocab = set(text_cfg.vocab)
    unknown = [w for w in dict.fromkeys(said) if in_vocab(w, vocab) is None]
    if len(unknown) == len(set(said)):
        shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
        listed = " ".join(unknown)
        listed = listed if len(listed) <= 80 else listed[:77] + "..."
        what = (("none of its words is" if listed == shown.strip() else f"none of its words ({listed}) is") if said
                else "it holds no word, and no word is")
        raise UserError(f"--prompt {shown!r}: {what} in {run}'s vocabulary of {len(text_cfg.vocab)} caption words "
                        f"(e.g. {' '.join(text_cfg.vocab[:6])}): describe the scene in the captions' words, or leave "
                        "out --prompt")
    notes = ([f"unknown to {run}, read as <unk>: {' '.join(unknown)}"] if unknown else []) + (
        [f"only its first {text_cfg.max_words} words are read"] if len(said) > text_cfg.max_words else [])
    if notes:
        print(f"pretrain rollout: --prompt: {'; '.join(notes)}", file=sys.stderr)


def with_prompt(frames: np.ndarray, prompt: str) -> np.ndarray:
    """(T, H, W, 3) video frames -> the same with the prompt, word-wrapped, in a bar above them."""
    from worldloom.datasets.export import draw_caption, wrap_text

    lines = wrap_text(prompt, frames.shape[2] - 8)
    return np.stack([draw_caption(f, lines, len(lines)) for f in frames])


def rollout_prompt(cfg: RolloutConfig) -> dict:
    """Generate cfg.horizon frames from the prompt alone and write the video."""
    model, doc_, codec = load_world_model(cfg.model)
    check_output_size(cfg.scale, model.cfg.image_size, model.cfg.image_size)
    text = prompt_tokens(model, cfg)["text"]
    check_rollout_memory(cfg.horizon, model.cfg.image_size, cfg.scale)
    t0 = time.perf_counter()
    frames = codec.decode(prompt_rollout(model, text, cfg.horizon, cfg.sample, torch.Generator().manual_seed(cfg.seed)))
    seconds = time.perf_counter() - t0
    video = model_to_frames(frames[0]).numpy()  # (T, S, S, 3)
    video = video.repeat(cfg.scale, axis=1).repeat(cfg.scale, axis=2)
    write_video(cfg.out, with_prompt(video, cfg.prompt), cfg.fps or doc_.get("data", {}).get("fps", 20.0))
    return {"out": cfg.out, "horizon": cfg.horizon, "context": 0, "frames_per_s": cfg.horizon / seconds}


def rollout_episode(cfg: RolloutConfig) -> dict:
    """Generate cfg.horizon frames after the episode's real context (or from --prompt alone) and write the video."""
    from worldloom.datasets import Dataset

    # the video's path, checked before anything is loaded (a folder: EPISODE.mp4 in it; else a UserError naming --out)
    cfg = dataclasses.replace(cfg, out=str(check_video_out(cfg.out, cfg.episode or "prompt")))
    if cfg.data is None:
        return rollout_prompt(cfg)
    check_step_rate(cfg.model, [cfg.data])
    model, _, codec = load_world_model(cfg.model)
    check_output_size(cfg.scale, model.cfg.image_size, model.cfg.image_size, cols=2)  # truth beside generated
    text = prompt_tokens(model, cfg)
    context = model.cfg.num_frames - 1
    ds = Dataset(cfg.data)
    check_episode(ds, cfg.episode)
    if ds.episode(cfg.episode).label_source == "none":  # before any line about what the rollout will make
        raise UserError(f"episode {cfg.episode!r} is unlabeled (label_source none): a rollout needs its actions; label it with the IDM first")
    num_steps = ds.episode(cfg.episode).num_steps
    horizon = min(cfg.horizon, num_steps - cfg.start - context)
    if horizon < 1:
        raise UserError(f"episode {cfg.episode!r} holds {num_steps} steps: {context} context frames from step {cfg.start} "
                        f"leave none to generate (a rollout needs {context + 1} steps from --start): give a --start "
                        f"of at most {num_steps - context - 1}, or a longer episode" if num_steps > context else
                        f"episode {cfg.episode!r} holds {num_steps} steps, fewer than the model's {context} context "
                        f"frames and one to generate: roll out a longer episode")
    if horizon < cfg.horizon:  # said before the work, not only in the summary after it
        print(f"pretrain rollout: episode {cfg.episode!r} holds {num_steps} steps: after {context} context frames from "
              f"step {cfg.start}, {horizon} of the --horizon {cfg.horizon} frames are generated (the episode's end)",
              file=sys.stderr)
    size = model.cfg.image_size
    check_rollout_memory(context + horizon, size, cfg.scale, cols=2)  # truth beside generated
    if (ds.spec.height, ds.spec.width) != (size, size):  # frames_to_model resizes them: the video is at the model's size
        print(f"pretrain rollout: {resize_words((ds.spec.height, ds.spec.width), (size, size))} for the model's input "
              "(area); the real frames beside the generated ones too", file=sys.stderr)
    clip = ds.frames(cfg.episode, cfg.start, cfg.start + context + horizon)
    if clip.buttons is None:
        raise UserError(f"episode {cfg.episode!r} is unlabeled (label_source none): a rollout needs its actions; label it with the IDM first")
    x = frames_to_model(torch.from_numpy(clip.frames)[None], model.cfg.image_size)  # (1, T, 3, S, S)
    action = encode_actions(torch.from_numpy(clip.buttons)[None], torch.from_numpy(clip.camera)[None])  # (1, T, 24)
    has = torch.ones(action.shape[:2], dtype=torch.bool)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    pitch = None if clip.pitch is None else torch.from_numpy(clip.pitch[:context])[None]  # the view's, where recorded
    frames = rollout(model, codec.encode(x[:, :context]), action[:, :-1], has[:, :-1], horizon,
                     cfg.sample, gen, **text, context_pitch=pitch)
    frames = codec.decode(frames)
    seconds = time.perf_counter() - t0
    truth = model_to_frames(x[0]).numpy()
    generated = np.concatenate([truth[:context], model_to_frames(frames[0]).numpy()])
    video = side_by_side(truth, generated, context, cfg.scale)
    write_video(cfg.out, with_prompt(video, cfg.prompt) if cfg.prompt else video, cfg.fps or ds.spec.fps)
    return {"out": cfg.out, "horizon": horizon, "context": context, "frames_per_s": horizon / seconds}
