"""Score a trained world model on held-out episodes, beside baselines.

    worldloom pretrain eval --model runs/wm --data data/heldout [--idm runs/idm-b] [--out DIR] [--sample.num-steps 4]
    worldloom pretrain eval --model runs/wm --data data/heldout --counterfactual data/branches.safetensors
    worldloom pretrain eval --model runs/wm --data data/heldout --revisit data/revisits.safetensors

    from worldloom.pretrain.evaluate import EvalConfig, evaluate
    report = evaluate(EvalConfig(model="runs/wm", data=("data/heldout",)))

What it measures (DESIGN section 8), on clips of context + horizon frames from labeled episodes:
- next-frame PSNR / SSIM with real context (teacher forcing), beside copy-last-frame;
- rollout PSNR / SSIM by horizon 1..H with real actions, beside repeating the last real frame;
- ΔPSNR: the same rollout with actions shuffled across clips (Genie's ΔtPSNR);
- IDM controllability (MineWorld's protocol): an IDM that did not label the training data
  predicts the commanded actions from generated frames and from real frames (button F1,
  camera R²); their ratio is the score;
- engine-truth controllability (with --counterfactual FILE, `counterfactual.py`): from saved
  VoxelWorld states, K action sequences played in the engine (`worldloom capture branches`) and
  in the model; how often the model under A is closer to the engine under A than under B, beside
  shuffled actions and copy-last (counterfactual.png: engine and model under two of them from one state);
- revisit consistency (with --revisit FILE, `revisit.py`): paths that return to where they started
  (`worldloom capture revisits`), PSNR at the return against the farthest point, beside the model
  cut to 4 frames of memory, copy-last and the engine (revisit.png: the frames);
- generated frames per second (batched rollout, this machine).
Writes eval.json, eval.md and eval.png into --out (default RUN/eval).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from worldloom.config import doc, to_json_dict
from worldloom.datasets.storage import resize_words
from worldloom.errors import UserError
from worldloom.folders import check_out
from worldloom.io import atomic_path, atomic_write_text, json_text, write_image
from worldloom.paths import redact_json
from worldloom.progress import Stages

from .checkpoint import check_step_rate, load_world_model
from .data import frames_to_model, model_to_frames
from .flow import SampleConfig, clip_generators, next_frame, rollout
from .model import encode_actions, shift_actions


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    model: str = doc("world model run directory")
    data: tuple[str, ...] = doc("held-out labeled dataset directories")
    idm: str | None = doc("IDM run for controllability (not the one that labeled the training data), or "
                          "vpt:PATH/4x_idm.weights: OpenAI's IDM, the published judge", None)
    out: str | None = doc("output directory (default: MODEL/eval)", None)
    horizon: int = doc("rollout frames after the context", 16)
    num_clips: int = doc("clips scored (evenly spread over the episodes)", 32)
    batch_size: int = doc("clips generated at once", 16)
    sample: SampleConfig = doc("how frames are sampled", SampleConfig(num_steps=1, context_noise=0.0))
    next_frame_positions: int = doc("teacher-forced next-frame predictions per clip", 4)
    stability_horizon: int = doc("frames the true-action rollout runs for the stability score (colour histogram and "
                                 "edges against the real frames, per horizon); cut to what the episodes hold", 64)
    seed: int = doc("sampling seed", 0)
    counterfactual: str | None = doc("engine branches file (`worldloom capture branches`): score engine-truth "
                                     "controllability against it (docs/pretrain.md)", None)
    revisit: str | None = doc("engine revisit paths file (`worldloom capture revisits`): score the model where a path "
                              "returns to where it started against where it is farthest (docs/pretrain.md)", None)
    revisit_whole_path: bool = doc("--revisit also plays the model seeing the whole path (window = context + path; "
                                   "about path / 2 times the model's cost)", True)

    def __post_init__(self):
        if not self.data:
            raise ValueError("no dataset given: pass --data DIR")
        for name in ("horizon", "num_clips", "batch_size", "next_frame_positions", "stability_horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.next_frame_positions > self.horizon:
            raise ValueError(f"--horizon {self.horizon} is shorter than the {self.next_frame_positions} next-frame "
                             f"positions scored per clip: pass --horizon {self.next_frame_positions} or more, or "
                             f"--next-frame-positions {self.horizon}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB of uint8-range frames (…, H, W, 3) -> (…); capped at 60 dB."""
    mse = (a.float() - b.float()).pow(2).mean(dim=(-3, -2, -1))
    return (10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).clamp(max=60.0)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-frame SSIM (Wang et al. 2004: Gaussian 11x11, sigma 1.5, channel mean). (…, H, W, 3) uint8 -> (…)."""
    lead = a.shape[:-3]
    x = a.reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
    y = b.reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    g = torch.exp(-((torch.arange(window) - window // 2) ** 2) / (2 * sigma**2))
    g = (g / g.sum())[None, :]
    kernel = (g.T @ g)[None, None].repeat(3, 1, 1, 1)  # (3, 1, k, k)

    def blur(z):
        return F.conv2d(z, kernel, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(lead)


HIST_BINS = 4  # per channel: a 4x4x4 joint RGB histogram (64 colours)


def colour_histogram(frames: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """Joint RGB histogram of each frame, normalised. uint8 (…, H, W, 3) -> (…, bins**3), sums to 1."""
    q = (frames.long() * bins) // 256  # (…, H, W, 3) in [0, bins)
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]  # (…, H, W)
    flat = code.reshape(-1, code.shape[-2] * code.shape[-1])
    hist = torch.zeros(flat.shape[0], bins**3).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    return (hist / flat.shape[1]).reshape(*frames.shape[:-3], bins**3)


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance between the colour histograms of paired frames, in [0, 1]. (…, H, W, 3) x2 -> (…).

    0: the same colours in the same proportions; 1: no colour in common. A rollout that collapses
    into flat saturated colours scores near 1 against the real frames.
    """
    return 0.5 * (colour_histogram(a) - colour_histogram(b)).abs().sum(-1)


def edge_energy(frames: torch.Tensor) -> torch.Tensor:
    """Root mean square of the differences between neighbouring pixels (both axes, all channels), in levels.
    (…, H, W, 3) -> (…). Blocky textures and sharp edges score high, a blurred or flat frame low (a blur
    spreads a step over several pixels: the same total change, a smaller sum of squares).
    """
    x = frames.float()
    dy = (x[..., 1:, :, :] - x[..., :-1, :, :]).pow(2).mean((-3, -2, -1))
    dx = (x[..., :, 1:, :] - x[..., :, :-1, :]).pow(2).mean((-3, -2, -1))
    return (0.5 * (dy + dx)).sqrt()


def stability_scores(generated: torch.Tensor, target: torch.Tensor, last: torch.Tensor) -> dict:
    """Per horizon: colour-histogram distance to the real frames and edge energy relative to them, beside copy-last.

    generated, target (N, H, S, S, 3) uint8: the rollout and the real frames at horizons 1..H; last (N, S, S, 3):
    the last real context frame (what copy-last repeats). Lists of length H, means over the N clips.
    """
    copy = last[:, None].expand_as(target)
    real_edges = edge_energy(target).mean(0).clamp_min(1e-6)  # (H,)
    return {"hist_distance": histogram_distance(generated, target).mean(0).tolist(),
            "copy_last_hist_distance": histogram_distance(copy, target).mean(0).tolist(),
            "edge_ratio": (edge_energy(generated).mean(0) / real_edges).tolist(),
            "copy_last_edge_ratio": (edge_energy(copy).mean(0) / real_edges).tolist()}


def steady_horizon(psnr_by_horizon: list[float], drop_db: float = 3.0) -> int:
    """The last horizon up to which every PSNR stays within `drop_db` of the horizon-1 PSNR (0 for an empty list)."""
    h = 0
    for value in psnr_by_horizon:
        if value < psnr_by_horizon[0] - drop_db:
            break
        h += 1
    return h


def check_not_empty(paths) -> None:
    """UserError (one line, naming the dataset) for a --data dataset that holds no episodes (a split that drew
    none): it was scored beside the others without a word, or alone told it held footage to label."""
    from worldloom.datasets import Dataset

    for path in paths:
        if Dataset(str(path)).episodes.num_rows == 0:
            raise UserError(f"{path} holds no episodes: record some with `worldloom capture run --out {path}`, or leave "
                            "it out of --data")


def longest_labeled(paths) -> int:
    """Steps of the longest labeled (env or idm) episode in the datasets (0: none)."""
    from worldloom.datasets import Dataset

    longest = 0
    for path in paths:
        table = Dataset(str(path)).episodes
        for n, source in zip(table.column("num_steps").to_pylist(), table.column("label_source").to_pylist(), strict=True):
            if source in ("env", "idm"):
                longest = max(longest, int(n))
    return longest


def eval_clips(paths, clip_len: int, num_clips: int) -> dict:
    """Up to num_clips labeled clips, evenly spread and deterministic (overlapping where the episodes hold
    fewer whole ones). -> collated dict: frames, buttons, camera and pitch (NaN where not recorded)."""
    from worldloom.datasets import ClipDataset

    ds = ClipDataset(list(paths), clip_len=clip_len, label_sources=["env", "idm"])
    if len(ds) == 0:
        where, longest = ", ".join(map(str, paths)), longest_labeled(paths)
        if not longest:  # footage without actions: what to run, not a length, is the fix
            raise UserError(f"{where}: no labeled episode to score (label_source none: the world model is scored on "
                            "the actions it follows); label it with `worldloom idm label --data DATASET --model IDM_RUN "
                            "--out DIR` and evaluate on DIR")
        raise UserError(f"{where}: no labeled episode with {clip_len} steps (context + horizon) to score (the longest "
                        f"holds {longest}): pass a shorter --horizon, or data with longer episodes")
    if len(ds) < num_clips:
        ds = ClipDataset(list(paths), clip_len=clip_len, stride=max(1, clip_len // 4), label_sources=["env", "idm"])
    idx = np.unique(np.linspace(0, len(ds) - 1, min(num_clips, len(ds))).round().astype(int))
    items = [ds[int(i)] for i in idx]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in ("frames", "buttons", "camera", "pitch")}


def teacher_forced(model, x, action, has, context: int, positions: int, sample: SampleConfig, gen,
                   pitch=None) -> torch.Tensor:
    """Next frame at context..context+positions-1, each from the real frames before it (pitch (B, T): each
    frame's view pitch, NaN where unknown). -> (B, P, C, H, W)."""
    out = []
    for p in range(context, context + positions):
        lo = p - context
        a_ctx, m_ctx = shift_actions(action[:, lo:p], has[:, lo:p])
        out.append(next_frame(model, x[:, lo:p], a_ctx, m_ctx, action[:, p - 1], has[:, p - 1], sample, gen,
                              context_pitch=None if pitch is None else pitch[:, lo:p]))
    return torch.stack(out, dim=1)


def generate(model, codec, clips: dict, cfg: EvalConfig, image_size: int, long_horizon: int | None = None) -> dict:
    """Teacher-forced next frames, rollouts with true and shuffled actions (uint8), and timing.

    The true-action rollout runs to `long_horizon` (default cfg.horizon) frames for the stability
    score; "true" keeps its first cfg.horizon frames and "long" all of them.
    """
    context = model.cfg.num_frames - 1
    long_horizon = max(cfg.horizon, long_horizon or cfg.horizon)
    sample = cfg.sample
    gens = clip_generators(cfg.seed, len(clips["frames"]))  # a clip's noise whatever its batch
    order = torch.randperm(len(clips["frames"]), generator=torch.Generator().manual_seed(cfg.seed + 1))
    perm = torch.empty_like(order)
    perm[order] = torch.roll(order, 1)  # a derangement (for 2+ clips): no clip keeps its own actions
    out = {"next": [], "long": [], "shuffled": []}
    gen_time, gen_frames = 0.0, 0
    pixels = frames_to_model(clips["frames"], image_size)  # (N, T, 3, S, S)
    x_all = torch.cat([codec.encode(pixels[i:i + cfg.batch_size]) for i in range(0, len(pixels), cfg.batch_size)])
    a_all = encode_actions(clips["buttons"], clips["camera"])  # (N, T, 24)
    # Progress in generated frames: per clip the teacher-forced ones, the long rollout, the shuffled one.
    bar = tqdm(total=len(x_all) * (cfg.next_frame_positions + long_horizon + cfg.horizon), desc="pretrain eval",
               unit="frame", dynamic_ncols=True)
    with bar:
        for lo in range(0, len(x_all), cfg.batch_size):
            sl = slice(lo, lo + cfg.batch_size)
            x, a, gen = x_all[sl], a_all[sl], gens[sl]
            pitch = clips["pitch"][sl].float() if "pitch" in clips else None
            start = None if pitch is None else pitch[:, :context]
            has = torch.ones(a.shape[:2], dtype=torch.bool)
            # each generation starts from the clip's own noise: drawn in turn from one generator, a rollout's noise
            # changed with how much the ones before it drew (--next-frame-positions, --stability-horizon), and the
            # shuffled rollout draws the true one's, frame for frame, so true against shuffled differs by the actions
            states = [g.get_state() for g in gen]
            out["next"].append(teacher_forced(model, x, a, has, context, cfg.next_frame_positions, sample, gen, pitch))
            bar.update(len(x) * cfg.next_frame_positions)
            t0 = time.perf_counter()
            out["long"].append(rollout(model, x[:, :context], a[:, :context + long_horizon - 1], has[:, :context + long_horizon - 1],
                                       long_horizon, sample, _from_states(states), context_pitch=start))
            gen_time += time.perf_counter() - t0
            gen_frames += x.shape[0] * long_horizon
            bar.update(len(x) * long_horizon)
            a_shuf = a.clone()
            a_shuf[:, context - 1:] = a_all[perm[sl]][:, context - 1:]  # context keeps its own past actions
            out["shuffled"].append(rollout(model, x[:, :context], a_shuf[:, :context + cfg.horizon - 1],
                                           has[:, :context + cfg.horizon - 1], cfg.horizon, sample, _from_states(states),
                                           context_pitch=start))
            bar.update(len(x) * cfg.horizon)
    result = {k: model_to_frames(codec.decode(torch.cat(v))) for k, v in out.items()}
    result["true"] = result["long"][:, :cfg.horizon]
    result["frames_per_s"] = gen_frames / gen_time
    result["truth"] = model_to_frames(pixels)  # (N, T, S, S, 3) at the model's size
    return result


def _from_states(states: list) -> list[torch.Generator]:
    """New generators at the given states (`torch.Generator.get_state`): a clip's noise drawn again from its start."""
    return [torch.Generator().set_state(state) for state in states]


def image_scores(gen: dict, context: int, horizon: int, positions: int) -> dict:
    """PSNR / SSIM tables from generated and true uint8 frames."""
    truth = gen["truth"]
    target = truth[:, context:context + horizon]  # (N, H, S, S, 3)
    nf_target = truth[:, context:context + positions]
    nf_copy = truth[:, context - 1:context - 1 + positions]
    last = truth[:, context - 1:context].expand_as(target)
    by_h = lambda f, a: f(a, target).mean(0).tolist()  # noqa: E731
    p_true, p_shuf = by_h(psnr, gen["true"]), by_h(psnr, gen["shuffled"])
    return {
        "next_frame": {"psnr": psnr(gen["next"], nf_target).mean().item(), "ssim": ssim(gen["next"], nf_target).mean().item(),
                       "copy_last_psnr": psnr(nf_copy, nf_target).mean().item(), "copy_last_ssim": ssim(nf_copy, nf_target).mean().item()},
        "rollout": {"psnr": p_true, "ssim": by_h(ssim, gen["true"]), "shuffled_psnr": p_shuf,
                    "copy_last_psnr": by_h(psnr, last), "copy_last_ssim": by_h(ssim, last)},
        "delta_psnr": {"by_horizon": [t - s for t, s in zip(p_true, p_shuf, strict=True)], "mean": float(np.mean(p_true) - np.mean(p_shuf))},
    }


def stability(gen: dict, context: int, horizon: int) -> dict:
    """The long rollout against the real frames and copy-last: PSNR, colour-histogram distance and edge ratio per
    horizon, and the horizons up to which PSNR stays within 3 dB of its horizon-1 value."""
    truth = gen["truth"]
    target = truth[:, context:context + horizon]  # (N, L, S, S, 3)
    last = truth[:, context - 1]
    p_model = psnr(gen["long"], target).mean(0).tolist()
    p_copy = psnr(last[:, None].expand_as(target), target).mean(0).tolist()
    return {"horizon": horizon, "psnr": p_model, "copy_last_psnr": p_copy, **stability_scores(gen["long"], target, last),
            "steady_horizon": steady_horizon(p_model), "copy_last_steady_horizon": steady_horizon(p_copy)}


STRIP_HORIZONS = (1, 4, 16, 64)


def frame_strip(gen: dict, context: int, path: Path, clips: int = 4, scale: int = 2) -> list[int]:
    """strip.png: for a few clips, the real frames (top) and the model's (bottom) at horizons 1, 4, 16, 64 of the
    true-action rollout, after the last real context frame. Returns the horizons shown."""

    horizons = [h for h in STRIP_HORIZONS if h <= gen["long"].shape[1]]
    truth, fake = gen["truth"], gen["long"]
    n = min(clips, len(fake))
    S, gap = truth.shape[2], 2
    cols = 1 + len(horizons)
    img = np.full((n * (2 * S + gap) + (n - 1) * 3 * gap, cols * (S + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        top = i * (2 * S + 4 * gap)
        for j, frame_pair in enumerate([(truth[i, context - 1], truth[i, context - 1])]
                                       + [(truth[i, context + h - 1], fake[i, h - 1]) for h in horizons]):
            left = j * (S + gap)
            img[top:top + S, left:left + S] = frame_pair[0].numpy()
            img[top + S + gap:top + 2 * S + gap, left:left + S] = frame_pair[1].numpy()
    img = img.repeat(scale, 0).repeat(scale, 1)
    write_image(path, img)
    return horizons


CONTROL_KEYS = ("button_macro_f1", "button_accuracy_mean", "camera_r2_pitch", "camera_r2_yaw", "camera_bin_accuracy")


def controllability(idm_run: str, gen: dict, clips: dict, context: int, horizon: int) -> dict:
    """An IDM's action scores on generated vs real frames for the commanded actions."""
    try:
        from worldloom.idm import load_idm, predict
    except ImportError:
        from worldloom.idm.checkpoint import load_idm
        from worldloom.idm.infer import predict
    from worldloom.idm.metrics import score

    idm, _ = load_idm(idm_run)
    steps = slice(context - 1, context + horizon - 1)  # transitions into the generated frames
    true_buttons = clips["buttons"][:, steps].numpy().reshape(-1, clips["buttons"].shape[-1]) > 0.5
    true_camera = clips["camera"][:, steps].numpy().reshape(-1, 2)
    real = gen["truth"][:, :context + horizon].numpy()
    fake = np.concatenate([real[:, :context], gen["true"].numpy()], axis=1)
    out = {}
    for name, frames in (("real", real), ("generated", fake)):
        pred = predict(idm, frames)
        s = score(pred["buttons"][:, steps].reshape(-1, true_buttons.shape[1]), pred["camera_bins"][:, steps].reshape(-1, 2),
                  true_buttons, true_camera, pred["camera_deg"][:, steps].reshape(-1, 2))
        out[name] = {k: s[k] for k in CONTROL_KEYS}
        out[name]["button_f1"] = {b: v["f1"] for b, v in s["per_button"].items() if v["occurs"]}
        out[name]["undefined"] = {k: why for k, why in s["undefined"].items() if k in CONTROL_KEYS}  # null: why
    ratio = lambda k: _ratio(out["generated"][k], out["real"][k])  # noqa: E731
    out["ratio"] = {k: ratio(k) for k in CONTROL_KEYS}
    return out


def _ratio(a: float, b: float) -> float | None:
    return None if not (math.isfinite(a) and math.isfinite(b)) or b == 0 else a / b


def evaluate(cfg: EvalConfig) -> dict:
    """Generate, score, and write eval.json / eval.md / eval.png; returns the report dict. Its
    stages show as a bar from the first second (worldloom.progress), the frames generated as another."""
    names = ["loading the world model", "reading clips", "generating", *(["IDM controllability"] if cfg.idm else []),
             *(["engine branches"] if cfg.counterfactual else []), *(["revisit paths"] if cfg.revisit else []),
             "writing the report"]
    with Stages("pretrain eval", names) as stages:
        return _evaluate(cfg, stages)


def _evaluate(cfg: EvalConfig, stages: Stages) -> dict:
    torch.manual_seed(cfg.seed)
    stages.start("loading the world model")
    if cfg.out:  # a file, a dataset or a run: refused before the work, not after it
        check_out(cfg.out, "eval")
    check_step_rate(cfg.model, cfg.data)
    check_not_empty(cfg.data)
    if cfg.idm:  # the controllability IDM reads the same clips' steps: at the rate it learned, too
        from worldloom.idm.checkpoint import check_step_rate as check_idm_step_rate

        check_idm_step_rate(cfg.idm, cfg.data)
    model, run_doc, codec = load_world_model(cfg.model)
    out = Path(cfg.out) if cfg.out else Path(cfg.model) / "eval"
    check_out(out, "eval")
    before = earlier_eval(out)  # another command's report is refused now, before the work
    context = model.cfg.num_frames - 1
    branches = None
    if cfg.counterfactual:  # read and checked before anything is generated
        from worldloom.datasets.branches import load_branches

        from .counterfactual import check_engine_file

        branches = load_branches(cfg.counterfactual)
        if branches.info.get("kind") == "revisit":  # the same file format, another experiment
            raise UserError(f"--counterfactual {cfg.counterfactual}: a revisit file (`capture revisits`), not branches: "
                            "pass it as --revisit, or make branches with `worldloom capture branches`")
        if note := check_engine_file(branches, model, "--counterfactual", cfg.counterfactual, cfg.model, "capture branches"):
            tqdm.write(f"pretrain eval: {note}", file=sys.stderr)
    revisits = None
    if cfg.revisit:
        from worldloom.datasets.branches import load_branches

        from .counterfactual import check_engine_file
        from .revisit import check_revisits

        revisits = load_branches(cfg.revisit, make="capture revisits")
        check_revisits(revisits, cfg.revisit)
        if note := check_engine_file(revisits, model, "--revisit", cfg.revisit, cfg.model, "capture revisits"):
            tqdm.write(f"pretrain eval: {note}", file=sys.stderr)
    longest = longest_labeled(cfg.data)
    long_horizon = max(cfg.horizon, min(cfg.stability_horizon, longest - context))
    stages.start("reading clips")
    clips = eval_clips(cfg.data, context + long_horizon, cfg.num_clips)
    if long_horizon < cfg.stability_horizon:  # said before the work, not only as stability.horizon in eval.json
        tqdm.write(f"pretrain eval: the longest labeled episode holds {longest} steps: the stability rollout runs "
                   f"{long_horizon} of the --stability-horizon {cfg.stability_horizon} frames after {context} context "
                   "frames", file=sys.stderr)
    if len(clips["frames"]) < cfg.num_clips:
        tqdm.write(f"pretrain eval: the data holds {len(clips['frames'])} distinct clip(s) of {context + long_horizon} "
                   f"steps ({context} of context and {long_horizon} generated: the longer of --horizon {cfg.horizon} and "
                   f"--stability-horizon {cfg.stability_horizon}, as the episodes allow): {len(clips['frames'])} of the "
                   f"--num-clips {cfg.num_clips} are scored; a shorter --stability-horizon cuts more clips",
                   file=sys.stderr)
    size, clip_hw = model.cfg.image_size, tuple(clips["frames"].shape[2:4])  # (B, T, H, W, 3)
    if clip_hw != (size, size):  # frames_to_model resizes them; scores are at the model's size
        tqdm.write(f"pretrain eval: {resize_words(clip_hw, (size, size))} for the model's input (area)", file=sys.stderr)
    stages.start("generating")
    gen = generate(model, codec, clips, cfg, model.cfg.image_size, long_horizon)
    report = {"config": redact_json(to_json_dict(cfg)),
              "model": str(cfg.model), "data": redact_json(list(cfg.data)), "num_clips": int(len(clips["frames"])), "context": context,
              "horizon": cfg.horizon, "sample": dataclasses.asdict(cfg.sample),
              "label_sources_trained": run_doc.get("data", {}).get("label_sources"),
              "use_actions": run_doc["train"].get("use_actions", True),
              **image_scores(gen, context, cfg.horizon, cfg.next_frame_positions),
              "stability": stability(gen, context, long_horizon),
              "frames_per_s": gen["frames_per_s"], "threads": torch.get_num_threads()}
    if cfg.idm:
        stages.start("IDM controllability")
        report["controllability"] = controllability(cfg.idm, gen, clips, context, cfg.horizon)
    if branches is not None:
        from .counterfactual import evaluate_counterfactual

        stages.start("engine branches")
        t0 = time.perf_counter()
        report["counterfactual"] = evaluate_counterfactual(model, codec, cfg.counterfactual, branches, cfg.sample, cfg.seed)
        report["counterfactual"]["wall_s"] = time.perf_counter() - t0
        counterfactual_frames = {**report["counterfactual"], "frames": report["counterfactual"].pop("frames")}
    revisit_frames = None
    if revisits is not None:
        from .revisit import evaluate_revisit

        stages.start("revisit paths")
        t0 = time.perf_counter()
        report["revisit"] = evaluate_revisit(model, codec, cfg.revisit, revisits, cfg.sample, cfg.seed,
                                              cfg.revisit_whole_path)
        report["revisit"]["wall_s"] = time.perf_counter() - t0
        revisit_frames = {**report["revisit"], "frames": report["revisit"].pop("frames")}
    stages.start("writing the report")
    out.mkdir(parents=True, exist_ok=True)
    if branches is not None:
        from .counterfactual import counterfactual_grid

        a, b = counterfactual_grid(counterfactual_frames, out / "counterfactual.png")
        report["counterfactual"]["grid"] = {"a": a, "b": b}
    if revisit_frames is not None:
        from .revisit import revisit_strip

        revisit_strip(revisit_frames, out / "revisit.png")
    report["strip_horizons"] = frame_strip(gen, context, out / "strip.png")  # the horizons strip.png shows
    atomic_write_text(out / "eval.json", json_text(report, indent=1))
    atomic_write_text(out / "eval.md", to_markdown(report))
    plot(report, out / "eval.png")
    if before is not None:
        replaced(out, before, report)
    report["out"] = str(out)  # where the CLI says the files are, once, after the table
    return report


ASKED_FIGURES = {"counterfactual": "counterfactual.png", "revisit": "revisit.png"}  # written only when asked for


def earlier_eval(out: Path) -> dict | None:
    """OUT/eval.json of an earlier `pretrain eval` (None where there is none, or none readable: it is written
    anew); UserError (one line, before the work) where it is another command's evaluation report (`agent eval`'s,
    `idm eval`'s: the folder kind is the same), which this one would otherwise overwrite."""
    try:
        before = json.loads((out / "eval.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(before, dict):
        return None
    if not ("next_frame" in before and "rollout" in before):
        raise UserError(f"--out {out} holds another command's evaluation report (eval.json, e.g. `agent eval`'s or "
                        "`idm eval`'s), not a world model's: give a new --out, or remove that folder first")
    return before


def replaced(out: Path, before: dict, report: dict) -> None:
    """Once the new report is written: remove the figures of the earlier one that this one did not make
    (counterfactual.png beside an eval.json without a counterfactual), and say in one line when it was made with
    other settings (a new-user trial, session 57: an eval into the pipeline's MODEL/eval replaced its report
    without a word and left the old pictures beside the new numbers)."""
    for key, name in ASKED_FIGURES.items():
        if key not in report and (out / name).is_file():
            (out / name).unlink()
    theirs, mine = before.get("config"), json.loads(json_text(report["config"]))
    if not isinstance(theirs, dict):
        changed = ["settings"]  # a report from before eval.json recorded them
    else:
        changed = [f"--{k.replace('_', '-')}" for k in mine if k != "out" and mine[k] != theirs.get(k)]
    if changed:
        print(f"pretrain eval: note: replaced the earlier evaluation in {out} (made with other {', '.join(changed)})",
              file=sys.stderr)


def to_markdown(r: dict) -> str:
    nf, ro, d = r["next_frame"], r["rollout"], r["delta_psnr"]
    lines = [f"# World model eval: {r['model']}", "",
             f"{r['num_clips']} held-out clips, {r['context']} context frames, {r['sample']['num_steps']} Euler steps/frame, guidance {r['sample']['guidance']}.", "",
             "| metric | model | copy-last-frame |", "|---|---|---|",
             f"| next-frame PSNR (dB) | {nf['psnr']:.2f} | {nf['copy_last_psnr']:.2f} |",
             f"| next-frame SSIM | {nf['ssim']:.3f} | {nf['copy_last_ssim']:.3f} |",
             f"| rollout PSNR, mean h=1..{r['horizon']} | {np.mean(ro['psnr']):.2f} | {np.mean(ro['copy_last_psnr']):.2f} |",
             f"| rollout SSIM, mean h=1..{r['horizon']} | {np.mean(ro['ssim']):.3f} | {np.mean(ro['copy_last_ssim']):.3f} |",
             f"| ΔPSNR true - shuffled actions (dB) | {d['mean']:.2f} | 0 |",
             f"| generated frames/s ({r['threads']} CPU threads) | {r['frames_per_s']:.1f} | |", ""]
    if "controllability" in r:
        c = r["controllability"]
        lines += ["| IDM on | button macro F1 | button acc | camera R² pitch | camera R² yaw |", "|---|---|---|---|---|"]
        for k in ("real", "generated", "ratio"):
            v = c[k]
            lines.append(f"| {k} | " + " | ".join("n/a" if v[m] is None or not math.isfinite(v[m]) else f"{v[m]:.3f}"
                                                   for m in ("button_macro_f1", "button_accuracy_mean", "camera_r2_pitch", "camera_r2_yaw")) + " |")
        f1_real, f1_gen = c["real"].get("button_f1", {}), c["generated"].get("button_f1", {})
        if f1_real:
            fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            lines += ["", "Per-button F1 of the IDM (real / generated): "
                      + ", ".join(f"{b} {fmt(v)} / {fmt(f1_gen.get(b))}" for b, v in f1_real.items())]
        lines.append("")
    if "stability" in r:
        st = r["stability"]
        shown = [h for h in (1, 2, 4, 8, 16, 32, 48, 64) if h <= st["horizon"]]
        lines += [f"Stability over {st['horizon']} frames (true actions): PSNR stays within 3 dB of its horizon-1 value up to "
                  f"horizon {st['steady_horizon']} (copy-last {st['copy_last_steady_horizon']}). Colour: total variation "
                  "distance between 4x4x4 RGB histograms of generated and real frames (0 same colours, 1 none shared); "
                  "edges: edge energy relative to the real frames (1 as sharp, 0 flat).", "",
                  "| horizon | " + " | ".join(map(str, shown)) + " |", "|---|" + "---|" * len(shown)]
        for label, key, fmt in (("PSNR", "psnr", ".1f"), ("PSNR copy-last", "copy_last_psnr", ".1f"),
                                ("colour distance", "hist_distance", ".3f"), ("colour distance copy-last", "copy_last_hist_distance", ".3f"),
                                ("edge ratio", "edge_ratio", ".2f"), ("edge ratio copy-last", "copy_last_edge_ratio", ".2f")):
            lines.append(f"| {label} | " + " | ".join(format(st[key][h - 1], fmt) for h in shown) + " |")
        lines.append("")
    if "counterfactual" in r:
        from .counterfactual import counterfactual_markdown

        lines += counterfactual_markdown(r["counterfactual"])
    if "revisit" in r:
        from .revisit import revisit_markdown

        lines += revisit_markdown(r["revisit"])
    lines += ["Rollout PSNR (dB) by horizon: true actions, shuffled actions, copy-last (eval.png plots them with SSIM).",
              "",
              "| horizon | " + " | ".join(str(h + 1) for h in range(r["horizon"])) + " |",
              "|---|" + "---|" * r["horizon"],
              "| PSNR | " + " | ".join(f"{v:.1f}" for v in ro["psnr"]) + " |",
              "| PSNR shuffled | " + " | ".join(f"{v:.1f}" for v in ro["shuffled_psnr"]) + " |",
              "| PSNR copy-last | " + " | ".join(f"{v:.1f}" for v in ro["copy_last_psnr"]) + " |", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = np.arange(1, r["horizon"] + 1)
    ro = r["rollout"]
    st = r.get("stability")
    fig, axes = plt.subplots(1, 3 if st else 2, figsize=(15 if st else 10, 3.5))
    for key, label in (("psnr", "true actions"), ("shuffled_psnr", "shuffled actions"), ("copy_last_psnr", "copy last frame")):
        axes[0].plot(h, ro[key], marker="o", ms=3, label=label)
    axes[1].plot(h, ro["ssim"], marker="o", ms=3, label="true actions")
    axes[1].plot(h, ro["copy_last_ssim"], marker="o", ms=3, label="copy last frame")
    names = ["PSNR (dB)", "SSIM"]
    if st:
        hl = np.arange(1, st["horizon"] + 1)
        axes[2].plot(hl, st["hist_distance"], label="colour distance, model")
        axes[2].plot(hl, st["copy_last_hist_distance"], label="colour distance, copy last")
        axes[2].plot(hl, st["edge_ratio"], ls="--", label="edge ratio, model")
        axes[2].set_ylim(0, max(1.05, max(st["edge_ratio"]) + 0.05))
        names.append("stability (vs real frames)")
    for ax, name in zip(axes, names, strict=True):
        ax.set_xlabel("horizon (frames)")
        ax.set_title(f"rollout {name}")
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
