"""The scorer of a collect task's dreams (CollectLogs, MineStone): a classifier of the player mining the task's blocks.

A collect task's reward is an item gained by mining a block (a log from a log, cobblestone from stone; the task's
`goal_blocks`), and mining takes the player to the block and then several steps of held attack with the crosshair
on it. The engine records both in every row of a captured dataset (`action_attack`, `state_target_block`;
docs/dataset-format.md), so a classifier can learn, from one frame, whether the player is mining a goal block there:
its crosshair on the block, its hand swinging. A dream reads as the classifier's mean probability over the generated
frames: the share of the dream spent mining what the task rewards.

Why not the critic (agent/dream.py `ValueHead`, the discounted return to come): a critic learns the value of a frame
under the play it was trained on, so a player standing still at a tree, where the data's players were about to
chop, reads as near a reward; on the tiny study's eight players the critic's mean ranked CollectLogs' real frames
at Spearman 0.79 against the closed-loop returns, and its dreams at 0.64-0.83 by its training seeds. This
classifier, trained on the same datasets and re-dreams, ranks the real frames at 0.86-0.93 and the dreams at 0.905
for each of three seeds; on MineStone 0.95-0.98 and 0.95-1.00 (the critic's dreams 0.88-0.905). docs/agent.md,
"A mining classifier for the collect tasks (session 54)".

Like the other scorers it is an ensemble (`ScorerEnsemble`, `--scorer-members`) and learns from the world model's
re-dreams of its data's play (`dream_windows`, half of each batch), each generated frame with the engine's label of
the real frame it stands for.
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
from worldloom.errors import UserError
from worldloom.training import check_finite

from .model import FrameEncoder, PolicyConfig
from .odometry import DREAM_SHARE, DreamWindow

HEAD = "mining"
COLUMNS = ("action_attack", "state_target_block", "state_x")


@dataclass(frozen=True)
class MiningConfig:
    """The mining classifier: a frame encoder on one frame (the critic's), an MLP to one logit."""

    height: int = doc("frame height", 64)
    width: int = doc("frame width", 64)
    steps: int = doc("training steps", 600)
    batch_size: int = doc("frames per step", 64)
    lr: float = doc("learning rate", 2e-3)
    seed: int = doc("seed", 0)

    @property
    def encoder(self) -> PolicyConfig:
        return PolicyConfig(height=self.height, width=self.width, memory=2, stem_channels=8, stack_channels=(8, 16, 16),
                            frame_dim=64, hidden=64, num_layers=1, num_heads=1)


class MiningHead(nn.Module):
    """Frames (N, H, W, 3) uint8 -> (N,) the probability that the player is mining one of the task's blocks in each."""

    def __init__(self, cfg: MiningConfig):
        super().__init__()
        self.encoder = FrameEncoder(cfg.encoder)
        d = cfg.encoder.hidden
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoder(frames))[:, 0]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(frames))

    @torch.no_grad()
    def score(self, films: np.ndarray) -> np.ndarray:
        """films (B, T + 1, H, W, 3) uint8 -> (B,) the mean probability of mining over each film's frames after its
        first (the share of the film spent mining, 0 to 1)."""
        B, n = films.shape[:2]
        if n < 2:
            return np.zeros(B)
        p = self(torch.from_numpy(np.ascontiguousarray(films[:, 1:]).reshape(-1, *films.shape[2:])))
        return p.double().numpy().reshape(B, n - 1).mean(1)


def mining_targets(attack: np.ndarray, target_block: list, blocks: set[str]) -> np.ndarray:
    """(N,) 1.0 where attack is held with the crosshair on one of `blocks` (block names), else 0.0."""
    on = np.array([b in blocks for b in target_block], bool)
    return (np.asarray(attack, bool) & on).astype(np.float32)


def goal_block_names(task) -> set[str]:
    from worldloom.envs.blocks import BLOCKS

    return {BLOCKS[i].name for i in task.goal_blocks}


def load_mining(paths: tuple[str, ...], datasets: list, task
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[np.ndarray, np.ndarray] | None]]:
    """Frames (T, H, W, 3), targets (T,) and recorded actions ((T, 20) buttons, (T, 2) camera degrees) of every episode
    whose true actions and engine state were recorded (label_source "env", dataset format 2 or later); UserError
    naming the datasets when none was (pseudo-labels guess the attack; Crafter and ingested video have no state)."""
    blocks = goal_block_names(task)
    frames, targets, actions = [], [], []
    for ds in datasets:
        if ds.version < 2:
            continue
        for ep in ds.episode_ids:
            clip = ds.frames(ep)
            if clip.label_source != "env" or clip.buttons is None or not len(clip.frames):
                continue
            table = ds.read_table(ep, columns=list(COLUMNS))
            if table.column("state_x").null_count == len(table):  # no engine state recorded (null: nothing aimed at)
                continue
            attack = table.column("action_attack").to_numpy(zero_copy_only=False)
            n = min(len(clip.frames), len(attack))
            frames.append(np.asarray(clip.frames, np.uint8)[:n])
            targets.append(mining_targets(attack[:n], table.column("state_target_block").to_pylist()[:n], blocks))
            actions.append((clip.buttons, clip.camera))
    if not frames:
        raise UserError(f"no episode in {', '.join(paths)} records its true actions and the engine's state "
                        "(action_attack, state_target_block): the mining classifier learns from them; pass data "
                        "captured in the task's world with `worldloom capture run` (footage captured with "
                        "--strip-actions keeps them in its truth dataset)")
    return frames, targets, actions


def train_mining(cfg: MiningConfig, task, paths: tuple[str, ...], datasets: list, out: Path, kind: str,
                 members: int = 1, dream=None, record: dict | None = None) -> Path:
    """Fit `members` MiningHeads (seeds cfg.seed, cfg.seed + 1, ...) and save them as one run directory of `kind`
    (head "mining"; their mean is its reading: `ScorerEnsemble`). dream: None, or a function (frames, actions) ->
    [DreamWindow] (agent/dream.py `dream_windows`): then DREAM_SHARE of each batch are the world model's re-dreamt
    frames of the same play, each with the label of the real frame it stands for. record: more for its config."""
    from .dream import ScorerEnsemble

    frames, targets, actions = load_mining(paths, datasets, task)
    windows = dream(frames, actions) if dream is not None else []
    fitted = [_fit_mining_head(dataclasses.replace(cfg, seed=cfg.seed + k), frames, targets, windows)
              for k in range(members)]
    flat = np.concatenate(targets)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.write_run_config(out, kind, {"scorer": to_json_dict(cfg), "head": HEAD, "task": task.env_id,
                                      "goal_blocks": sorted(goal_block_names(task)), "data": list(paths),
                                      ckpt.DATA_CONTENT: content_ids(paths), "frames": int(len(flat)),
                                      "mining_frames": int(flat.sum()), "members": members,
                                      "dream_windows": len(windows), **(record or {})})
    ckpt.save_checkpoint(out, kind, {"model": ScorerEnsemble(fitted).state_dict()}, {"step": cfg.steps})
    return out


def _fit_mining_head(cfg: MiningConfig, frames: list[np.ndarray], targets: list[np.ndarray],
                     windows: list[DreamWindow]) -> MiningHead:
    """One classifier (binary cross-entropy); a batch is DREAM_SHARE re-dreamt frames (when there are some), the rest
    real frames drawn uniformly."""
    index = np.array([(e, t) for e, f in enumerate(frames) for t in range(len(f))])  # (N, 2)
    dreamt = np.array([(w, k) for w, (_, _, film) in enumerate(windows) for k in range(1, len(film))],
                      np.int64).reshape(-1, 2)  # a window's frame 0 is real
    torch.manual_seed(cfg.seed)
    model = MiningHead(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng([cfg.seed, 0xC40])
    n_dream = int(round(cfg.batch_size * DREAM_SHARE)) if len(dreamt) else 0
    for step in tqdm(range(cfg.steps), desc="agent dream: mining classifier", unit="step", leave=False,
                     dynamic_ncols=True):
        pick = index[rng.integers(0, len(index), cfg.batch_size - n_dream)]
        x = [frames[e][t] for e, t in pick]
        y = [targets[e][t] for e, t in pick]
        for w, k in dreamt[rng.integers(0, len(dreamt), n_dream)] if n_dream else ():
            e, t0, film = windows[w]
            x.append(film[k])
            y.append(targets[e][t0 + k])
        loss = F.binary_cross_entropy_with_logits(model.logits(torch.from_numpy(np.stack(x))),
                                                  torch.from_numpy(np.asarray(y, np.float32)))
        check_finite(loss.item(), None, step + 1, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def load_mining_head(run_dir: Path, doc_: dict, kind: str):
    """The mining classifiers saved in `run_dir` (config `doc_`) as a ScorerEnsemble, with the checks a downloaded run
    gets (`worldloom.checkpoint.load_model`); UserError (one line) for a config it cannot be built from."""
    from .dream import ScorerEnsemble, scorer_members

    try:
        cfg, members = MiningConfig(**doc_["scorer"]), scorer_members(doc_)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{Path(run_dir) / ckpt.CONFIG_FILE}: not a mining classifier's config ({err}); train it again "
                        "with --scorer NEW_FOLDER") from None
    return ckpt.load_model(run_dir, kind, lambda: ScorerEnsemble([MiningHead(cfg) for _ in range(members or 1)])).eval(), \
        (cfg.height, cfg.width)
