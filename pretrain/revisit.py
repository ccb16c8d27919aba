"""Revisit consistency: does a world model show the same place when a path comes back to it?

    worldloom capture revisits --episodes 8 --context 5 --resolution 64 --out data/revisits.safetensors
    worldloom pretrain eval --model runs/wm --data data/heldout --revisit data/revisits.safetensors

    from worldloom.datasets.branches import load_branches
    from worldloom.pretrain.revisit import revisit_scores
    scores = revisit_scores(model, codec, load_branches("data/revisits.safetensors"))

From saved VoxelWorld states the engine plays paths that return to where they started (a 360-degree
turn in place, N steps forward and N back, N steps of turning right and N left; capture/revisits.py,
written in the branches format with each path's farthest and return step). The model plays the same
actions from the same context frames (counterfactual.model_branches). Scored against the engine's
frame at each step, whose return frame is the first visit (the frame at the saved state) up to
animals that moved:

- PSNR / SSIM at the farthest point and at the return, and the gain (return minus farthest). A model
  that remembers what it saw scores higher at the return than at the farthest point (the goal: at
  least 3 dB); one that forgot has to make the place up again and does not.
- the same for the model whose window is cut to its last 4 frames (memory beyond 4 frames removed;
  the same as the model when its context is 4 frames or fewer), and for the model seeing the whole
  path (window = context + path: memory it was not trained with; RoPE over frame index lets it run;
  about path / 2 times the model's cost, `--revisit-whole-path false` leaves it out);
- copy-last (exact at the return by construction, so not the peer for memory, but the floor at the
  farthest point) and the engine (its return frame against the first visit: how exact the truth is);
- the steady horizon along each path: the last step up to which the model's PSNR stays within 3 dB
  of its step-1 PSNR.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from worldloom.datasets.branches import Branches
from worldloom.errors import UserError

from .counterfactual import frame_row
from .flow import SampleConfig, can_recall

CUT_WINDOW = 4  # the memory-less peer sees the last 4 frames (issue 16's goal)
GOAL_DB = 3.0


def check_revisits(branches: Branches, where: str) -> dict:
    """The paths of a revisit file ({name: {"far", "return"}}, in branch order); UserError for a branches
    file that is not one or whose steps do not fit its horizon."""
    paths = branches.info.get("paths")
    if branches.info.get("kind") != "revisit" or not isinstance(paths, dict) or set(paths) != set(branches.names):
        raise UserError(f"{where}: not a revisit file (no path steps recorded); make it with `worldloom capture revisits`")
    horizon = branches.frames.shape[2]
    for name in branches.names:
        far, ret = paths[name].get("far"), paths[name].get("return")
        if not (isinstance(far, int) and isinstance(ret, int) and 1 <= far < ret <= horizon):
            raise UserError(f"{where}: path {name} has far {far!r} and return {ret!r}; needs 1 <= far < return <= {horizon}")
    return {name: dict(paths[name]) for name in branches.names}


def path_scores(frames: np.ndarray, engine: np.ndarray, first: np.ndarray, paths: dict) -> dict:
    """Per path: PSNR / SSIM against the engine at the farthest step and the return, the gain, the return frame
    against the first visit, PSNR by step up to the return and the steady horizon. frames, engine (S, K, T, h, w, 3)
    and first (S, h, w, 3) uint8; means over the S states."""
    from .evaluate import psnr, ssim, steady_horizon

    gen, eng, first = torch.from_numpy(frames), torch.from_numpy(engine), torch.from_numpy(first)
    out = {}
    for k, (name, steps) in enumerate(paths.items()):
        far, ret = steps["far"] - 1, steps["return"] - 1
        by_step = psnr(gen[:, k, :ret + 1], eng[:, k, :ret + 1]).mean(0).tolist()  # (R,)
        out[name] = {"psnr_far": by_step[far], "psnr_return": by_step[ret], "gain_db": by_step[ret] - by_step[far],
                     "ssim_far": ssim(gen[:, k, far], eng[:, k, far]).mean().item(),
                     "ssim_return": ssim(gen[:, k, ret], eng[:, k, ret]).mean().item(),
                     "psnr_return_vs_first_visit": psnr(gen[:, k, ret], first).mean().item(),
                     "ssim_return_vs_first_visit": ssim(gen[:, k, ret], first).mean().item(),
                     "psnr_by_step": by_step, "steady_horizon": steady_horizon(by_step)}
    return out


def revisit_runs(model, codec, branches: Branches, sample=None, seed: int = 0, whole_path: bool = True) -> dict:
    """Frames (S, K, T, s, s, 3) uint8 at the model's size of: the model, the model cut to CUT_WINDOW frames,
    the model seeing the whole path (if `whole_path`: about T / 2 times the model's cost), copy-last and the
    engine; and the windows used."""
    from .counterfactual import model_branches, resize

    sample = sample or SampleConfig(num_steps=1, context_noise=0.0)
    cut_sample = dataclasses.replace(sample, memory=min(sample.memory, CUT_WINDOW))  # no recall past the cut either
    size, context = model.cfg.image_size, model.cfg.num_frames - 1
    engine = resize(branches.frames, size)
    num_states, horizon = engine.shape[0], engine.shape[2]
    windows = {"model": context, "model_cut": min(CUT_WINDOW, context)}
    if whole_path:
        windows["model_long"] = context + horizon

    def play(window: int, how=sample) -> np.ndarray:
        return np.stack([model_branches(model, codec, branches, s, how, seed, window=window) for s in range(num_states)])

    runs = {"model": play(context)}
    memory = {"model": sample.memory, "model_cut": cut_sample.memory} if can_recall(model) else {"model": 0, "model_cut": 0}
    same = windows["model_cut"] == context and cut_sample == sample
    runs["model_cut"] = runs["model"] if same else play(windows["model_cut"], cut_sample)
    if whole_path:
        runs["model_long"] = play(windows["model_long"])
    first = resize(branches.context_frames[:, -1], size)  # (S, s, s, 3): the first visit
    runs["copy_last"] = np.ascontiguousarray(np.broadcast_to(first[:, None, None], engine.shape))
    runs["engine"] = engine
    return {"runs": runs, "first": first, "windows": windows, "memory": memory}


def revisit_scores(model, codec, branches: Branches, sample=None, seed: int = 0, where: str = "revisits",
                   whole_path: bool = True) -> dict:
    """Scores of revisit_runs per runner and path, the windows, the paths and whether the goal (model gain at
    least 3 dB on every path) is met; "frames" holds the runs for the picture (not written to eval.json)."""
    paths = check_revisits(branches, where)
    played = revisit_runs(model, codec, branches, sample, seed, whole_path)
    engine, first = played["runs"]["engine"], played["first"]
    out = {"states": int(engine.shape[0]), "paths": paths, "windows": played["windows"], "memory": played["memory"],
           "goal_db": GOAL_DB, "seeds": branches.info.get("seeds")}
    for name, frames in played["runs"].items():
        out[name] = path_scores(frames, engine, first, paths)
    out["goal_met"] = {p: out["model"][p]["gain_db"] >= GOAL_DB for p in paths}
    out["frames"] = played
    return out


def remembered(steps: dict, window: int, memory: int = 0) -> bool:
    """Whether the first visit is still in a `window`-frame context when the path returns, or within
    the pose memory's `memory` steps (pretrain/memory.py)."""
    return steps["return"] <= max(window, memory)


def cut_is_model(r: dict) -> bool:
    """Whether the peer cut to CUT_WINDOW frames played the model's own runs (same window, same memory)."""
    memory = r.get("memory") or {}
    return r["windows"]["model_cut"] == r["windows"]["model"] and memory.get("model_cut", 0) == memory.get("model", 0)


def memory_note(r: dict) -> str:
    """A sentence on the pose memory the runs recalled with (empty without one)."""
    memory = r.get("memory") or {}
    if not memory.get("model"):
        return ""
    return (f" Pose memory (pretrain/memory.py): the model recalls real frames up to {memory['model']} steps back by "
            f"camera pose, the cut peer up to {memory.get('model_cut', 0)}.")


def revisit_markdown(r: dict) -> list[str]:
    """eval.md's revisit table: per path, PSNR at the farthest point and at the return, by runner."""
    w = r["windows"]
    runners = [k for k in ("model", "model_cut", "model_long") if k in w]
    long = f"long: {w['model_long']} frames (the whole path, beyond its training window)." if "model_long" in w else ""
    lines = [f"Revisit consistency: {r['states']} saved VoxelWorld states; paths that return to where they started, "
             "scored against the engine's frame at each step (PSNR dB at the farthest point / at the return, gain = "
             f"return - farthest; goal: model gain >= {r['goal_db']:g} dB). Model window {w['model']} frames; "
             f"cut: last {w['model_cut']} frames{' (the same as the model)' if cut_is_model(r) else ''}; "
             + long + memory_note(r), "",
             f"| path | steps out / return | remembered ({', '.join(k[6:] or 'model' for k in runners)}) | "
             + " | ".join(k.replace("_", ", ") for k in runners) + " | copy-last | engine return vs first visit | "
             "model steady horizon |", "|---|---|---|" + "---|" * len(runners) + "---|---|---|"]

    def cell(runner: str, path: str) -> str:
        s = r[runner][path]
        return f"{s['psnr_far']:.1f} / {s['psnr_return']:.1f} ({s['gain_db']:+.1f})"

    for path, steps in r["paths"].items():
        mem = ", ".join("yes" if remembered(steps, w[k], (r.get("memory") or {}).get(k, 0)) else "no" for k in runners)
        eng = r["engine"][path]
        lines.append(f"| {path} | {steps['far']} / {steps['return']} | {mem} | "
                     + " | ".join(cell(k, path) for k in runners) + f" | {cell('copy_last', path)} | "
                     f"{eng['psnr_return_vs_first_visit']:.1f} dB, SSIM {eng['ssim_return_vs_first_visit']:.3f} | "
                     f"{r['model'][path]['steady_horizon']} |")
    met = [p for p, ok in r["goal_met"].items() if ok]
    return lines + ["", f"Goal met on: {', '.join(met) if met else 'none'}.", ""]


def revisit_strip(r: dict, path, state: int = 0, scale: int = 2) -> None:
    """revisit.png: per path (a band each), rows engine / model / model cut / model long and columns first
    visit, farthest point, return, for one state."""
    from worldloom.io import write_image

    runs, first = r["frames"]["runs"], r["frames"]["first"]
    names = [k for k in ("engine", "model", "model_cut", "model_long") if k in runs]
    if cut_is_model(r):
        names.remove("model_cut")
    gap = 2
    rows = []
    for k, steps in enumerate(r["paths"].values()):
        for name in names:
            row = frame_row([first[state], runs[name][state, k, steps["far"] - 1],
                             runs[name][state, k, steps["return"] - 1]], gap)
            rows += [row, np.full((gap, row.shape[1], 3), 255, np.uint8)]
        rows.append(np.full((3 * gap, rows[-1].shape[1], 3), 255, np.uint8))
    img = np.concatenate(rows[:-2])
    write_image(path, img.repeat(scale, 0).repeat(scale, 1))


def evaluate_revisit(model, codec, path: str, branches: Branches, sample=None, seed: int = 0, whole_path: bool = True) -> dict:
    """`worldloom pretrain eval --revisit FILE`: revisit_scores on a revisit file already read and checked."""
    return {"file": str(path), **revisit_scores(model, codec, branches, sample, seed, str(path), whole_path)}
