"""Engine-truth controllability: a world model's rollouts scored against its own engine's, from saved states.

    worldloom capture branches --episodes 16 --context 5 --horizon 8 --resolution 64 --out data/branches.safetensors
    worldloom pretrain eval --model runs/wm --data data/heldout --counterfactual data/branches.safetensors

    from worldloom.datasets.branches import load_branches
    from worldloom.pretrain.counterfactual import counterfactual_scores
    scores = counterfactual_scores(model, codec, load_branches("data/branches.safetensors"))

An inverse dynamics model reading generated frames (MineWorld, GameWorld; `evaluate.controllability`)
is a proxy for whether a world model obeys its actions. VoxelWorld saves and restores its whole
state, so the truth is at hand: from one saved state, K action sequences (the scripted player's
own next actions, a turn, a walk, standing still) are played in the engine (`capture branches`,
capture/branches.py, written as data: datasets/branches.py) and, from the same context frames,
in the model (here).

The engine-truth controllability at horizon h is the fraction of (state, ordered pair of
sequences A != B) for which the model's frame h under A is closer (mean squared error) to the
engine's frame h under A than to the engine's frame h under B. Pairs whose engine frames are
equal at h (a walk into a wall and standing still) say nothing and are left out; an exact tie
counts one half. Copying the last context frame scores 0.5 by construction (of a pair and its
reverse exactly one wins); the engine itself scores 1. Beside the model, in the same run: the
model given another branch's actions (a derangement), copy-last, the engine, and the engine's
frames with what the last context frame did not show filled from what it did
(`seen_only_frames`): what a model exact on all its context saw scores when it continues that
into the rest, without making any of it up. By horizon 8 a turn of 6 degrees a step has brought
about 60% of a 70-degree view into sight that the last context frame did not hold (issue 18's
log, section 25). Each score comes with a 95% bootstrap interval over the saved states: over 8
states a model's 0.67 at horizon 8 spans 0.56-0.78, over 48 states the same weights' 0.70 spans
0.65-0.74 (issue 18's log, section 33), so `tiny` pipelines save 32.
"""

from __future__ import annotations

import numpy as np
import torch

from worldloom.datasets.branches import Branches
from worldloom.errors import UserError

BOOTSTRAP_RESAMPLES = 1000  # draws of the saved states for each score's 95% interval


def resize(frames: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (..., H, W, 3) frames at the model's size (area), as the model sees and makes them."""
    from .data import frames_to_model, model_to_frames

    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames.reshape(1, -1, *frames.shape[-3:])))
    return model_to_frames(frames_to_model(x, image_size))[0].numpy().reshape(*lead, image_size, image_size, 3)


def seen_only_frames(engine: np.ndarray, branch_camera: np.ndarray, fov_deg: float, context: np.ndarray,
                     pitch_deg: np.ndarray | None = None, view_fov: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The engine's frames (S, K, T, h, w, 3) uint8 where the last context frame (S, h, w, 3) saw the
    same view, and the nearest such pixel where it did not (never seen: turned into view by the
    branch's camera actions (S, K, T, 2) degrees, summed from the state; the rotation of the model's
    warp, so what walking brings into view counts as seen). pitch_deg (S,): the last context frame's
    absolute pitch (NaN or None: level), about which the yaw turns the world's vertical as the engine's
    does; view_fov: (the last context frame's field of view (S,), each branch frame's (S, K, T)) in
    degrees where sprinting widens the view (None: fov_deg throughout). A frame nothing of which was
    seen is the context frame's mean colour. fov_deg 0 (no camera model): the engine's frames."""
    import cv2

    from .camera import rotation_grid

    out = engine.copy()
    if fov_deg <= 0:
        return out
    S, K, T, h, w, _ = engine.shape
    turned = np.cumsum(branch_camera.astype(np.float64), axis=2).reshape(-1, 2)  # from the last context frame's view
    n = turned.shape[0]
    pitch = None if pitch_deg is None else torch.from_numpy(
        np.repeat(np.nan_to_num(np.asarray(pitch_deg, np.float64)), K * T)).float()  # (S*K*T,)
    to = since = None
    if view_fov is not None:
        since = torch.from_numpy(np.repeat(np.asarray(view_fov[0], np.float64), K * T)).float()
        to = torch.from_numpy(np.asarray(view_fov[1], np.float64).reshape(n)).float()
    grid = rotation_grid(torch.from_numpy(turned).float(), fov_deg if to is None else to, h, w, since,
                         pitch)  # (S*K*T, h, w, 2): where in that view
    unseen = (grid.abs() > 1).any(-1).numpy().reshape(S, K, T, h, w)
    flat_out = out.reshape(-1, h * w, 3)
    for i, mask in enumerate(unseen.reshape(-1, h, w)):
        if not mask.any():
            continue
        if mask.all():
            flat_out[i] = context[i // (K * T)].reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
            continue
        _, labels = cv2.distanceTransformWithLabels(mask.astype(np.uint8), cv2.DIST_L2, 5,  # each pixel: the
                                                    labelType=cv2.DIST_LABEL_PIXEL)  # label of its nearest seen one
        seen_at = np.flatnonzero(~mask)
        pixel_of = np.zeros(labels.max() + 1, np.int64)
        pixel_of[labels.reshape(-1)[seen_at]] = seen_at
        flat_out[i] = flat_out[i][pixel_of[labels.reshape(-1)]]
    return out


def check_engine_file(branches: Branches, model, flag: str, path: str, run: str, make: str) -> str | None:
    """Before `pretrain eval` generates anything: UserError (one line, naming `flag`, the file, the model run `run`
    and the `worldloom {make}` command that makes a fitting file) where the file holds fewer context frames a state
    than the model reads (num_frames - 1). Returns the words of a note where its frames are of another size than
    the model's (resized to it, area, as the clips are), else None."""
    from worldloom.datasets.storage import resize_words

    context, have = model.cfg.num_frames - 1, branches.context_frames.shape[1]
    if have < context:
        raise UserError(f"{flag} {path}: {have} context frame{'s' if have != 1 else ''} a state; the model {run} reads "
                        f"{context}: make it again with `worldloom {make} --context {context}`")
    size, hw = model.cfg.image_size, tuple(branches.frames.shape[-3:-1])
    return f"{flag} {path}: {resize_words(hw, (size, size))} for the model's input (area)" if hw != (size, size) else None


@torch.no_grad()
def model_branches(model, codec, branches: Branches, state: int, sample=None, seed: int = 0,
                   order: list[int] | None = None, window: int | None = None) -> np.ndarray:
    """The model's rollouts from state `state`'s context under each branch's actions (branch
    `order[k]`'s actions in slot k, if given; seeing `window` frames, default its context; slot k's noise from
    its own generator, seeded by (`seed`, k), whatever the other slots): (K, T, S, S, 3) uint8 at the model's size. UserError if the file's context is shorter than
    the model's (num_frames - 1)."""
    from .data import frames_to_model, model_to_frames
    from .flow import SampleConfig, clip_generators, rollout
    from .model import encode_actions

    sample = sample or SampleConfig(num_steps=1, context_noise=0.0)
    context = model.cfg.num_frames - 1
    have = branches.context_frames.shape[1]
    if have < context:
        raise UserError(f"the branches file has {have} context frames; the model needs {context}: "
                        f"make it with `worldloom capture branches --context {context}` (or `capture revisits`)")
    k, horizon = branches.frames.shape[1:3]
    order = list(range(k)) if order is None else order
    x = frames_to_model(torch.from_numpy(branches.context_frames[state, -context:])[None], model.cfg.image_size)
    past_b = np.repeat(branches.context_buttons[state, have - context:][None], k, axis=0)  # (K, Tc-1, 20)
    past_c = np.repeat(branches.context_camera[state, have - context:][None], k, axis=0)
    buttons = np.concatenate([past_b, branches.branch_buttons[state, order]], axis=1)  # (K, Tc-1+T, 20)
    camera = np.concatenate([past_c, branches.branch_camera[state, order]], axis=1)
    action = encode_actions(torch.from_numpy(buttons.astype(np.float32)), torch.from_numpy(camera))  # (K, Tc-1+T, 24)
    has = torch.ones(action.shape[:2], dtype=torch.bool)
    gen = clip_generators(seed, k)  # slot k's noise whatever the other branches (one generator: K rows per frame)
    latent = codec.encode(x)
    latent = latent.expand(k, *latent.shape[1:])
    pitch = branches.context_pitch  # (S, C) or None: where the context's views looked, up or down
    start = None if pitch is None else torch.from_numpy(pitch[state, -context:])[None].expand(k, -1)
    out = codec.decode(rollout(model, latent, action, has, horizon, sample, gen, window, context_pitch=start))  # (K, T, 3, S, S)
    return model_to_frames(out).numpy()


def controllability(generated: np.ndarray, engine: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Engine-truth controllability by horizon of generated vs engine frames, both (S, K, H, h, w, 3)
    uint8 (state, branch, horizon): {"by_horizon": [H fractions], "pairs": [H counted pairs], "ci95":
    [H [low, high]]: the 2.5 and 97.5 percentiles of the fraction over `resamples` bootstrap draws of
    the states (seeded; a state's pairs are drawn together, as they share its context)}; a horizon
    with no informative pair gives None (its interval too)."""
    if generated.shape != engine.shape or generated.ndim != 6:
        raise ValueError(f"generated {generated.shape} and engine {engine.shape} must both be (S, K, H, h, w, 3)")
    g, e = generated.astype(np.float32), engine.astype(np.float32)
    num_states, num_branches, horizon = g.shape[:3]
    wins, counted = np.zeros((num_states, horizon)), np.zeros((num_states, horizon), int)
    own = ((g - e) ** 2).mean(axis=(3, 4, 5))  # (S, K, H): model under A vs engine under A
    for a in range(num_branches):
        for b in range(num_branches):
            if a == b:
                continue
            other = ((g[:, a] - e[:, b]) ** 2).mean(axis=(2, 3, 4))  # (S, H): model under A vs engine under B
            informative = (e[:, a] != e[:, b]).any(axis=(2, 3, 4))  # (S, H)
            score = (own[:, a] < other) + 0.5 * (own[:, a] == other)
            wins += score * informative
            counted += informative
    draws = np.random.default_rng(0).integers(0, num_states, size=(resamples, num_states))  # (R, S)
    drawn_wins, drawn_counts = wins[draws].sum(axis=1), counted[draws].sum(axis=1)  # (R, H)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = drawn_wins / drawn_counts
    ci = []
    for h in range(horizon):
        ok = drawn_counts[:, h] > 0
        ci.append([float(np.percentile(fractions[ok, h], 2.5)), float(np.percentile(fractions[ok, h], 97.5))]
                  if counted[:, h].sum() else None)
    total_wins, total = wins.sum(axis=0), counted.sum(axis=0)
    return {"by_horizon": [float(w / c) if c else None for w, c in zip(total_wins, total, strict=True)],
            "pairs": total.tolist(), "ci95": ci}


def psnr_by_horizon(generated: np.ndarray, engine: np.ndarray) -> list[float]:
    """Mean PSNR (dB, capped at 60) of (S, K, H, h, w, 3) frames against the engine's, by horizon."""
    mse = ((generated.astype(np.float32) - engine.astype(np.float32)) ** 2).mean(axis=(3, 4, 5))  # (S, K, H)
    return (10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))).clip(max=60.0).mean(axis=(0, 1)).tolist()


def counterfactual_scores(model, codec, branches: Branches, sample=None, seed: int = 0) -> dict:
    """The model, the model given a derangement of the branches' actions, copy-last, the engine and,
    for a model with a camera warp, the engine's frames with what the last context frame did not see
    filled from what it did ("seen_only", `seen_only_frames`), each as {"controllability": by
    horizon, "psnr": by horizon}, against the engine's frames (at the model's size); plus the number
    of states, the branch names and the counted pairs; "frames" holds the last context frames and the
    engine's and model's rollouts for the picture (not JSON)."""
    size = model.cfg.image_size
    engine = resize(branches.frames, size)  # (S, K, T, S, S, 3)
    num_states, k = engine.shape[:2]
    shifted = [(i + 1) % k for i in range(k)]  # slot i generated under branch i+1's actions
    runs = {
        "model": np.stack([model_branches(model, codec, branches, s, sample, seed) for s in range(num_states)]),
        "shuffled_actions": np.stack([model_branches(model, codec, branches, s, sample, seed, shifted)
                                      for s in range(num_states)]),
        "copy_last": np.ascontiguousarray(np.broadcast_to(
            resize(branches.context_frames[:, -1], size)[:, None, None], engine.shape)),
        "engine": engine,
    }
    if model.cfg.camera_fov_deg > 0:
        pitch = branches.context_pitch
        runs["seen_only"] = seen_only_frames(engine, branches.branch_camera, model.cfg.camera_fov_deg,
                                             runs["copy_last"][:, 0, 0], None if pitch is None else pitch[:, -1],
                                             branch_views(branches, model.cfg))
    out = {"states": num_states, "branches": branches.names, "horizon": engine.shape[2]}
    for name, frames in runs.items():
        scores = controllability(frames, engine)
        out[name] = {"controllability": scores["by_horizon"], "ci95": scores["ci95"], "psnr": psnr_by_horizon(frames, engine)}
    out["pairs"] = controllability(engine, engine)["pairs"]
    out["frames"] = {"context": runs["copy_last"][:, 0, 0], "engine": engine, "model": runs["model"]}
    return out


def branch_views(branches: Branches, cfg) -> tuple[np.ndarray, np.ndarray] | None:
    """The field of view of the last context frame (S,) and of each branch frame (S, K, T), in degrees, as the
    model's config says sprinting widens it (`model.sprinting`); None for a model whose view never changes."""
    from worldloom.actions import BUTTONS

    if not getattr(cfg, "sprint_fov_deg", 0.0):
        return None

    def sprinting(buttons: np.ndarray) -> np.ndarray:
        b = buttons.astype(bool)
        held = [b[..., BUTTONS.index(name)] for name in ("sprint", "forward", "back", "sneak")]
        return held[0] & held[1] & ~held[2] & ~held[3]

    last = branches.context_buttons[:, -1] if branches.context_buttons.shape[1] else np.zeros((len(branches.frames), 20))
    fov = lambda sprint: np.where(sprint, cfg.sprint_fov_deg, cfg.camera_fov_deg)  # noqa: E731
    return fov(sprinting(last)), fov(sprinting(branches.branch_buttons))


def contrasting_pair(engine: np.ndarray, state: int = 0) -> tuple[int, int]:
    """The two branches whose engine frames differ most at the last step from state `state`
    (engine: (S, K, T, h, w, 3) uint8): the pair a picture of controllability shows best."""
    last = engine[state, :, -1].astype(np.float32)  # (K, h, w, 3)
    k = last.shape[0]
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    return max(pairs, key=lambda p: float(((last[p[0]] - last[p[1]]) ** 2).mean()))


def counterfactual_grid(r: dict, path, state: int = 0, max_columns: int = 8, scale: int = 2) -> tuple[str, str]:
    """counterfactual.png: from one saved state, rows engine A / model A / engine B / model B and
    columns the frame at the state, then up to `max_columns` horizons; A and B are the branches the
    engine tells apart most (`contrasting_pair`). `r` holds "frames" (counterfactual_scores'); returns (A, B)."""
    from worldloom.io import write_image

    frames, names = r["frames"], r["branches"]
    a, b = contrasting_pair(frames["engine"], state)
    horizon = frames["engine"].shape[2]
    steps = np.unique(np.linspace(0, horizon - 1, min(max_columns, horizon)).round().astype(int))
    gap = 2
    rows = []
    for k in (a, b):
        for who in ("engine", "model"):
            row = frame_row([frames["context"][state], *frames[who][state, k, steps]], gap)
            rows += [row, np.full((gap, row.shape[1], 3), 255, np.uint8)]
        rows.append(np.full((2 * gap, rows[-1].shape[1], 3), 255, np.uint8))
    img = np.concatenate(rows[:-2])
    write_image(path, img.repeat(scale, 0).repeat(scale, 1))
    return names[a], names[b]


def frame_row(cells, gap: int) -> np.ndarray:
    """(S, S, 3) uint8 frames side by side, `gap` white pixels apart -> (S, n * (S + gap) - gap, 3)."""
    s = cells[0].shape[0]
    row = np.full((s, len(cells) * (s + gap) - gap, 3), 255, np.uint8)
    for j, cell in enumerate(cells):
        row[:, j * (s + gap):j * (s + gap) + s] = cell
    return row


def evaluate_counterfactual(model, codec, path: str, branches: Branches | None = None, sample=None, seed: int = 0) -> dict:
    """`worldloom pretrain eval --counterfactual FILE`: counterfactual_scores on a branches file
    (`branches`: the file already read)."""
    from worldloom.datasets.branches import load_branches

    branches = branches if branches is not None else load_branches(path)
    return {"file": str(path), **counterfactual_scores(model, codec, branches, sample, seed)}


def counterfactual_markdown(r: dict) -> list[str]:
    """eval.md's engine-truth table: controllability and PSNR against the engine, by horizon."""
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"Engine-truth controllability: {r['states']} saved VoxelWorld states, branches {', '.join(r['branches'])} "
             "(fraction of ordered branch pairs where the rollout under A is closer to the engine's A than to its B).", "",
             "| horizon | " + " | ".join(str(h + 1) for h in range(r["horizon"])) + " |", "|---|" + "---|" * r["horizon"]]
    names = {"model": "model", "shuffled_actions": "model, shuffled actions", "copy_last": "copy-last", "engine": "engine",
             "seen_only": "engine where the context saw, its nearest seen pixel elsewhere"}
    for key, label in names.items():
        if key not in r:
            continue
        lines.append(f"| controllability, {label} | " + " | ".join(fmt(v) for v in r[key]["controllability"]) + " |")
        if key == "model" and r[key].get("ci95"):  # runs written before the intervals have none
            lines.append("| 95% interval over the states | "
                         + " | ".join("n/a" if c is None else f"{c[0]:.2f}-{c[1]:.2f}" for c in r[key]["ci95"]) + " |")
    for key in ("model", "shuffled_actions", "copy_last"):
        lines.append(f"| PSNR vs engine, {names[key]} | " + " | ".join(f"{v:.1f}" for v in r[key]["psnr"]) + " |")
    return lines + [""]
