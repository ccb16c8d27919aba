"""The odometer: how far a dream walks, read from its frames (dreaming's scorer for distance tasks).

    from worldloom.agent.odometry import OdometerConfig, train_odometer
    train_odometer(OdometerConfig(), task, paths, datasets, out, kind, members=5,
                   dream=dream_windows(wm, codec, sample, 128, 48, seed))   # agent/dream.py
    walked = odometer.score(films)   # films (B, T + 1, H, W, 3) uint8 -> (B,) blocks from each film's first frame

A task whose metric is the distance from spawn (Explore) gives no critic a handle: from one frame the
return to come of the footage player that walks away from the spawn is the same whether the player
being scored walks or stands (measured on the tiny8 study's players and real frames: the critic ranked
them at Spearman 0.12 against their closed-loop returns, and scored the player that stands still the
highest of all; docs/agent.md, "Dreaming's scorers, and guidance measured"). The odometer reads the motion
instead: a small CNN on two frames `stride` steps apart (both, and their difference, as 9 channels)
predicts how far the player moved between them in its own frame (forward and sideways, in blocks,
along and across the first frame's heading) and how far it turned (yaw, degrees), regressed on the
engine's state columns of real play (`state_x`, `state_z`, `state_yaw`; docs/dataset-format.md), with
a tenth of each batch a frame paired with itself (nothing moved). Over a film the pairs are chained:
the headings summed, the moves turned into one frame and added; the score is the straight-line
distance from the film's first frame to its last, in blocks: what Explore's reward adds up over a
dream that starts at the spawn. `stride` 4: one step moves a 64x64 picture by under a pixel (issue
18's log, section 37), four by 2-4 pixels; single-step pairs learned only the mean move (the player
standing still read as walking 7.6 blocks in 48 steps; the 4-step odometer 0.55).

Dreams are not real frames: the world model draws a walk as a faint shift of a softened picture, which an
odometer of real frames only read as standing still (the tiny8 study's players' dreams ranked at Spearman -0.29
against their closed-loop returns). So half of each batch can come from the world model's re-dreams of the same
recorded play under its own actions (`dream`), the engine's moves over the same steps as targets: 0.74-0.86 over
three seeds (docs/agent.md, "Dreaming's scorers: an ensemble, and an odometer that has seen dreams"). A run holds
`members` odometers from consecutive seeds, read as their mean (agent/dream.py `ScorerEnsemble`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from worldloom import checkpoint as ckpt
from worldloom.config import doc, to_json_dict
from worldloom.datasets.storage import content_ids
from worldloom.datasets.writer import refuse_nonfinite
from worldloom.errors import UserError
from worldloom.training import check_finite

STATE_COLUMNS = ("state_x", "state_z", "state_yaw")
STILL_SHARE = 0.1  # of each batch: a frame paired with itself, target 0
TARGET_SCALE = (1.0, 1.0, 2.0)  # forward and side blocks, yaw / 10 degrees: the loss's units


@dataclass(frozen=True)
class OdometerConfig:
    """The odometer's size and training (module docstring)."""

    height: int = doc("frame height", 64)
    width: int = doc("frame width", 64)
    stride: int = doc("steps between the two frames of a pair (4: 2-4 pixels of motion at 64x64)", 4)
    steps: int = doc("training steps", 2400)
    batch_size: int = doc("pairs per step", 64)
    lr: float = doc("peak learning rate (one cycle)", 2e-3)
    seed: int = doc("seed", 0)

    def __post_init__(self) -> None:
        for name in ("height", "width", "stride", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {getattr(self, name)!r}")


class Odometer(nn.Module):
    """Pairs of frames (N, H, W, 3) uint8, `stride` steps apart -> (N, 3): forward and sideways blocks moved
    in the first frame's heading, and yaw turned / 10 degrees."""

    def __init__(self, cfg: OdometerConfig):
        super().__init__()
        self.cfg = cfg
        widths = (9, 32, 64, 64, 64)
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 128), nn.GELU(), nn.Linear(128, 3))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        a = first.float() * (2 / 255) - 1
        b = second.float() * (2 / 255) - 1
        x = torch.cat([a, b, 4 * (b - a)], -1).permute(0, 3, 1, 2)  # (N, 9, H, W)
        for conv in self.convs:
            x = F.gelu(conv(x))
        return self.head(F.adaptive_avg_pool2d(x, 4))

    @torch.no_grad()
    def score(self, films: np.ndarray) -> np.ndarray:
        """films (B, T + 1, H, W, 3) uint8 -> (B,) the straight-line distance in blocks from each film's first
        frame to its last, the pairs' moves chained. A film of fewer than `stride` steps scores 0; a last
        stretch shorter than `stride` counts as that share of the pair that ends at the last frame."""
        B, n = films.shape[:2]
        s = self.cfg.stride
        if n <= s:
            return np.zeros(B)
        starts = list(range(0, n - s, s))
        weights = [1.0] * len(starts)
        if (rest := (n - 1) % s) != 0:
            starts.append(n - 1 - s)
            weights.append(rest / s)
        starts_t = torch.as_tensor(starts)
        first = torch.from_numpy(films[:, starts_t].reshape(-1, *films.shape[2:]))
        second = torch.from_numpy(films[:, starts_t + s].reshape(-1, *films.shape[2:]))
        out = self(first, second).double().numpy().reshape(B, len(starts), 3) * np.asarray(weights)[None, :, None]
        return chain(out[..., 0], out[..., 1], out[..., 2] * 10.0)


def chain(forward: np.ndarray, side: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(B, K) moves in blocks along and across each pair's starting heading, and the yaw (degrees) each pair turned
    -> (B,) the distance from the start after all K: each pair's heading is the sum of the turns before it."""
    heading = np.radians(np.concatenate([np.zeros_like(yaw[:, :1]), np.cumsum(yaw[:, :-1], 1)], 1))
    dx = forward * np.sin(heading) + side * np.cos(heading)  # VoxelWorld's axes: forward is (sin yaw, cos yaw)
    dz = forward * np.cos(heading) - side * np.sin(heading)
    return np.hypot(dx.sum(1), dz.sum(1))


def pair_targets(x: np.ndarray, z: np.ndarray, yaw: np.ndarray, stride: int) -> np.ndarray:
    """An episode's positions (T,) in blocks and yaw (T,) in degrees -> (T - stride, 3): from step t to t + stride,
    the move along and across the heading at t (blocks) and the turn (wrapped to [-180, 180), / 10)."""
    dx, dz = x[stride:] - x[:-stride], z[stride:] - z[:-stride]
    heading = np.radians(yaw[:-stride])
    turn = (yaw[stride:] - yaw[:-stride] + 180.0) % 360.0 - 180.0
    return np.stack([dx * np.sin(heading) + dz * np.cos(heading), dx * np.cos(heading) - dz * np.sin(heading),
                     turn / 10.0], 1).astype(np.float32)


def load_pairs(paths: tuple[str, ...], datasets: list, stride: int
               ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[np.ndarray, np.ndarray] | None]]:
    """Frames (T, H, W, 3), pair targets (T - stride, 3) and the recorded actions ((T, 20) buttons, (T, 2) camera
    degrees; None unless the env recorded them) of every episode with the engine's position recorded; UserError
    naming the datasets when none has (footage without state columns: Crafter's, ingested video)."""
    frames, targets, actions = [], [], []
    for ds in datasets:
        if ds.version < 2:
            continue
        for ep in ds.episode_ids:
            table = ds.read_table(ep, columns=list(STATE_COLUMNS))
            refuse_nonfinite(ds, ep, table, "a position")  # NaN, inf: not unknown (null)
            x, z, yaw = (table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in STATE_COLUMNS)
            if len(x) <= stride or not np.isfinite(np.stack([x, z, yaw])).all():  # a null: position not recorded
                continue
            clip = ds.frames(ep)
            frames.append(np.asarray(clip.frames, np.uint8))
            targets.append(pair_targets(x, z, yaw, stride))
            actions.append((clip.buttons, clip.camera) if clip.label_source == "env" and clip.buttons is not None else None)
    if not frames:
        raise UserError(f"no episode in {', '.join(paths)} records the player's position (state_x, state_z, state_yaw) "
                        f"over more than {stride} steps: the odometer learns from them; pass data captured in the "
                        "task's world (footage captured with --strip-actions keeps them in its truth dataset)")
    return frames, targets, actions


# A dream window: (episode index, the step t0 of its last real frame, film (K + 1, H, W, 3) uint8 whose frame k is
# the world model's picture of step t0 + k under the episode's recorded actions; frame 0 is the real one).
DreamWindow = tuple[int, int, np.ndarray]
DREAM_SHARE = 0.5  # of each batch: pairs from the world model's rollouts of the same play, when there are some


def train_odometer(cfg: OdometerConfig, task_id: str, paths: tuple[str, ...], datasets: list, out: Path,
                   kind: str, members: int = 1, dream=None, record: dict | None = None) -> Path:
    """Fit `members` Odometers (seeds cfg.seed, cfg.seed + 1, ...) on the datasets' frame pairs and save them as one
    run directory of `kind` (head "odometry"; their mean is its reading: `ScorerEnsemble`).

    dream: None, or a function (frames, actions) -> [DreamWindow] (agent/dream.py `dream_windows`): the world model's
    rollouts of the same recorded play under its own actions. Then DREAM_SHARE of each batch are pairs from those
    films with the real engine's moves as targets, so the odometer reads motion as the world model draws it (a dream
    walks as a faint shift of a softened picture, which an odometer of real frames only reads as standing still).
    record: more to write in its config (the world model the dreams came from)."""
    from .dream import ScorerEnsemble

    frames, targets, actions = load_pairs(paths, datasets, cfg.stride)
    windows = dream(frames, actions) if dream is not None else []
    fitted = [_fit_odometer(dataclasses.replace(cfg, seed=cfg.seed + k), frames, targets, windows) for k in range(members)]
    out.mkdir(parents=True, exist_ok=True)
    ckpt.write_run_config(out, kind, {"odometer": to_json_dict(cfg), "head": "odometry", "task": task_id,
                                      "data": list(paths), ckpt.DATA_CONTENT: content_ids(paths),
                                      "pairs": int(sum(len(y) for y in targets)), "members": members,
                                      "dream_windows": len(windows), **(record or {})})
    ckpt.save_checkpoint(out, kind, {"model": ScorerEnsemble(fitted).state_dict()}, {"step": cfg.steps})
    return out


def _fit_odometer(cfg: OdometerConfig, frames: list[np.ndarray], targets: list[np.ndarray],
                  windows: list[DreamWindow]) -> Odometer:
    s = cfg.stride
    index = np.array([(e, t) for e, y in enumerate(targets) for t in range(len(y))])  # (N, 2)
    dreamt = np.array([(w, k) for w, (_, _, film) in enumerate(windows) for k in range(len(film) - s)],
                      np.int64).reshape(-1, 2)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 0x0D0])
    model = Odometer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(cfg.steps, 1), pct_start=0.1)
    scale = torch.tensor(TARGET_SCALE)
    n_dream = int(round(cfg.batch_size * DREAM_SHARE)) if len(dreamt) else 0
    for step in tqdm(range(cfg.steps), desc="agent dream: odometer", unit="step", leave=False, dynamic_ncols=True):
        pick = index[rng.integers(0, len(index), cfg.batch_size - n_dream)]
        first = [frames[e][t] for e, t in pick]
        second = [frames[e][t + s] for e, t in pick]
        target = [targets[e][t] for e, t in pick]
        for w, k in dreamt[rng.integers(0, len(dreamt), n_dream)] if n_dream else ():
            e, t0, film = windows[w]
            first.append(film[k])
            second.append(film[k + s])
            target.append(targets[e][t0 + k])
        first_t, second_t, target_t = (torch.from_numpy(np.stack(v)) for v in (first, second, target))
        still = torch.from_numpy(rng.random(cfg.batch_size) < STILL_SHARE)
        second_t = torch.where(still[:, None, None, None], first_t, second_t)
        target_t = torch.where(still[:, None], torch.zeros_like(target_t), target_t)
        loss = F.smooth_l1_loss(model(first_t, second_t) / scale, target_t / scale, beta=0.1)
        check_finite(loss.item(), None, step + 1, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def load_odometer(run_dir: Path, doc_: dict, kind: str):
    """The odometer saved in `run_dir` (its config `doc_`): an Odometer, or a ScorerEnsemble of `members` of them;
    with the checks a downloaded run gets (`worldloom.checkpoint.load_model`); UserError (one line) for a config it
    cannot be built from."""
    from .dream import ScorerEnsemble, scorer_members

    try:
        cfg = OdometerConfig(**doc_["odometer"])
        members = scorer_members(doc_)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{Path(run_dir) / ckpt.CONFIG_FILE}: not an odometer's config ({err}); train it again with "
                        "--scorer NEW_FOLDER") from None
    if members is None:  # a run from before ensembles: one odometer, its weights unprefixed
        return ckpt.load_model(run_dir, kind, lambda: Odometer(cfg)).eval()
    return ckpt.load_model(run_dir, kind, lambda: ScorerEnsemble([Odometer(cfg) for _ in range(members)])).eval()
