"""Dreaming: play a player inside a trained world model and score what it imagines.

    worldloom agent eval --policy runs/bc-env --task worldloom/Explore-v0 --in-world-model runs/wm \
        --data data/truth-explore --episodes 8

Each episode starts in the real task env (its world seed as in closed-loop evaluation): the
player plays the first `num_frames - 1` steps there, which become the world model's context.
From the last real frame the episode forks. In the imagined branch the world model generates
each next frame from the player's action (`worldloom.pretrain.flow.next_frame`, a sliding
window of the model's context) and a policy chooses its next action from the generated frame:
a policy dreams in closed loop. The random and scripted players cannot see a generated world
(scripted ones read the engine's state), so their imagined branch replays the actions they take
in the real branch: the world model renders their play. In the real branch the env goes on for
the same `horizon` steps, for the real score at the same horizon.

The imagined score is the task scorer's reading of the dreamt frames (`scorer_head`). For Explore, whose metric is
the distance from spawn, an odometer (agent/odometry.py): the distance from the dream's first frame to its last,
its moves read from pairs of frames 4 steps apart and chained. For the collect tasks (CollectLogs, MineStone) a mining
classifier (agent/mining.py): the share of the dreamt frames in which it sees the player mining the task's blocks
(attack held with the crosshair on one, as the engine recorded it in the scorer's data; since 2026-12-07: a critic
ranked CollectLogs' real frames at 0.79, the classifier at 0.86-0.93). For FindWater a critic: a value head (the
policy's frame encoder on one frame, an MLP) trained by regression on real play of the task, recorded with its
engine rewards (`--data`: datasets captured in the task's world, e.g. the study's truth-<task> and labeled-<task>),
to predict the discounted return to come from each frame (gamma 0.97: about 33 steps, 1.6 s of play, a third
of a default dream), its mean over the generated frames: how near to the task's rewards the dreamt play keeps the player,
Dreamer's critic read as a ranking. (Until 2026-12-05 a reward head on frame pairs summed the rewards of the
generated transitions: on the agent study it ranked the players at Spearman 0.25 against their closed-loop
returns, mean over the tasks, where the critic ranked them at 0.50, 0.44-0.77 by its training seed; docs/agent.md;
a reward event is rare and a dream of 48 steps holds almost none, and FindWater's one reward ends its episode, so
no recorded transition showed it. Until 2026-12-06 the critic scored Explore too: from one frame it cannot tell a
player that walks from one that stands, and on real frames it ranked the tiny8 study's players at 0.12.) Reward
events are rare, so a quarter of each critic's training batch is drawn from the frames whose return to come is
at least half the largest: the critic's mean ranks players but is not a calibrated return. Beside it, each row
gives the same scorer on the real branch's frames (`critic_real`, named when the critic was the only scorer):
the imagined score a perfect world model would give, which tells the scorer's errors from the world model's.
Every scorer is an ensemble of `--scorer-members` (5) fitted from consecutive seeds, read as their mean: one critic's
ranking of the same dreams moved with its seed from Spearman 0.00 to 0.86, and a five-member ensemble's still moves
by 0.2 from one set of seeds to the next (session 52). Every scorer also learns from the world model's re-dreams of
its data's play (`dream_windows`, `--scorer-dreams` windows, half of each batch), the engine's truth as targets: a
dream walks as a faint shift of a softened picture, which an odometer of real frames only read as standing still
(the tiny8 players' dreams ranked at -0.29; with re-dreams 0.74-0.86), and a critic of real frames read the blurred
dreams of the players that move as worse than the sharp one of the player that stands still (FindWater's
ranking 0.50-0.91 over seed sets; with re-dreams 0.86-1.00; until 2026-12-06 critics learned from real frames only,
on session 49's evidence of 16 dreams a player, which session 51 showed too few to read the figure; docs/agent.md).

Dreams can be sampled with classifier-free guidance on actions (`--sample-guidance`, 1 by default: none). Without
it the tiny world model hedges a walk into a copy of the last frame (issue 18's log, section 37): the policies that
walk 6-7 blocks in 48 steps in the env walk about 1 in their dreams, by the odometer. Guidance makes them walk, but
at 1.5 and more the dream saturates into stripes within 8-16 steps (each frame's guided difference sharpened again
by the next), so the scores of such dreams are no evidence (docs/agent.md, "Dreaming's scorers, and guidance
measured").

The scorer is saved (kind "task_scorer") in WM_RUN/scorer-<Task> (or --scorer) with the datasets' content, and
reused; asked again with --data, it is reused only for the same datasets, content and --scorer-steps (else one
line: another --scorer). A scorer folder holding another head than the task's (a reward head from before the
critic, a critic for Explore from before the odometer) is refused with one line: pass --scorer NEW_FOLDER.

`rank_agreement` gives Spearman's rank correlation between players' imagined and real scores.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from worldloom import checkpoint as ckpt
from worldloom.actions import FPS
from worldloom.config import doc, to_json_dict
from worldloom.datasets.storage import content_ids
from worldloom.datasets.writer import refuse_nonfinite
from worldloom.errors import UserError
from worldloom.io import atomic_write_json, write_video
from worldloom.training import check_finite

from .model import FrameEncoder, PolicyConfig
from .players import is_reference, make_controller, spec_name

SCORER_KIND = "task_scorer"
EVENT_SHARE = 0.25  # of each scorer batch drawn from frames whose return to come is at least half the largest
HEAD = "value"  # what a scorer run holds: the critic (runs from before 2026-12-05 held a reward head)
ODOMETRY = "odometry"  # a distance task's scorer (agent/odometry.py)
MINING = "mining"  # a collect task's scorer (agent/mining.py)
SCORER_NAMES = {HEAD: "critic", ODOMETRY: "odometer", MINING: "mining classifier"}  # eval.json's scorer_head, in words
ODOMETER_STEPS = 4  # an odometer trains this many steps per --scorer-steps: a pair's motion is finer to learn


class StaleScorer(UserError):
    """A scorer folder trained otherwise than asked (another head, datasets, steps, members or dreams); `why` says
    how. A user passes --scorer NEW_FOLDER; the agent study trains its own again (pipeline/agent_study.py)."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def scorer_head(task) -> str:
    """What scores a task's dreams: the odometer for a distance metric (Explore), the mining classifier for a collect
    metric (CollectLogs, MineStone), else the critic (FindWater)."""
    if task.metric == "distance":
        return ODOMETRY
    return MINING if task.metric == "collect" else HEAD


@dataclass(frozen=True)
class ScorerConfig:
    """The critic: a frame encoder on one frame, an MLP to the discounted return to come."""

    height: int = doc("frame height", 64)
    width: int = doc("frame width", 64)
    steps: int = doc("training steps", 600)
    batch_size: int = doc("frames per step", 64)
    lr: float = doc("learning rate", 2e-3)
    gamma: float = doc("discount per step of the return to come (0.97: about 33 steps, 1.6 s at 20 steps/s)", 0.97)
    seed: int = doc("seed", 0)

    @property
    def encoder(self) -> PolicyConfig:
        return PolicyConfig(height=self.height, width=self.width, memory=2, stem_channels=8, stack_channels=(8, 16, 16),
                            frame_dim=64, hidden=64, num_layers=1, num_heads=1)


class ValueHead(nn.Module):
    """Frames (N, H, W, 3) uint8 -> (N,) the discounted return to come from each, in the task's reward units."""

    reading = "mean"  # how `score` reduces a film's frames: "mean", or "max" (its best frame; `agent eval --critic-reading`)

    def __init__(self, cfg: ScorerConfig):
        super().__init__()
        self.encoder = FrameEncoder(cfg.encoder)
        d = cfg.encoder.hidden
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.register_buffer("scale", torch.ones(()))  # the targets' root mean square: trained on target / scale

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoder(frames))[:, 0] * self.scale

    @torch.no_grad()
    def score(self, films: np.ndarray) -> np.ndarray:
        """films (B, T + 1, H, W, 3) uint8 -> (B,) the return to come over each film's frames after its first: their
        mean, or their largest where `reading` is "max"."""
        B, n = films.shape[:2]
        if n < 2:
            return np.zeros(B)
        values = self(torch.from_numpy(np.ascontiguousarray(films[:, 1:]).reshape(-1, *films.shape[2:])))
        values = values.double().numpy().reshape(B, n - 1)
        return values.max(1) if self.reading == "max" else values.mean(1)


class ScorerEnsemble(nn.Module):
    """K task scorers of one head (critics or odometers) fitted on the same data from seeds seed, seed + 1, ...;
    its reading of a film is their mean. One critic's ranking of the players moves with its seed by as much as the
    world model does (CollectLogs' dreams of the tiny8 study's players: Spearman 0.00 to 0.86 over five critic
    seeds; docs/agent.md, "Dreaming's scorers: an ensemble, and an odometer that has seen dreams")."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The members' mean output on the same inputs (a critic's frames, an odometer's pair)."""
        return torch.stack([m(*inputs) for m in self.members]).mean(0)

    @torch.no_grad()
    def score(self, films: np.ndarray) -> np.ndarray:
        """films (B, T + 1, H, W, 3) uint8 -> (B,) the members' mean score (an odometer's: the mean of each
        member's chained distance)."""
        return self.member_scores(films).mean(0)

    @torch.no_grad()
    def member_scores(self, films: np.ndarray) -> np.ndarray:
        """films (B, T + 1, H, W, 3) uint8 -> (K, B) each member's score: where they disagree, the film is unlike
        what they learned from (imagination training's pessimism, agent/imagine.py)."""
        return np.stack([m.score(films) for m in self.members])


def scorer_members(doc_: dict) -> int | None:
    """How many scorers a scorer run holds (`ScorerEnsemble`), None for a run from before ensembles (one scorer,
    its weights unprefixed); ValueError for a count that is not a whole number of at least 1."""
    members = doc_.get("members")
    if members is not None and (not isinstance(members, int) or isinstance(members, bool) or members < 1):
        raise ValueError(f"members must be a whole number of at least 1, got {members!r}")
    return members


def returns_to_come(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """(N,) rewards, reward[t] for the step after frame t -> (N,) sum over k >= t of gamma^(k - t) reward[k]."""
    out = np.zeros(len(rewards), np.float32)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + gamma * g
        out[t] = g
    return out


def load_transitions(paths: tuple[str, ...], height: int, width: int, task_id: str
                     ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[np.ndarray, np.ndarray] | None]]:
    """Frames (N, H, W, 3), rewards (N,) and the recorded actions ((N, 20) buttons, (N, 2) camera degrees; None
    unless the env recorded them: what `dream_windows` re-dreams) of every episode with recorded rewards; reward[t]
    is the step's after frame t, the last one included (FindWater's one reward ends its episode: it has no frame
    after it)."""
    frames, rewards, actions = [], [], []
    datasets = check_scorer_datasets(paths, height, width, task_id)
    check_rewards(paths, datasets)
    for ds in datasets:
        for ep in ds.episode_ids:
            clip = ds.frames(ep)
            n = len(clip.frames)
            r = np.zeros(n, np.float32)
            refuse_nonfinite(ds, ep, ds.read_table(ep, columns=["reward"]), "a reward")  # NaN, inf: not unknown
            recorded = np.nan_to_num(np.asarray(clip.rewards, np.float32))[:n]  # null (unknown): 0
            r[:len(recorded)] = recorded
            if n:
                frames.append(np.asarray(clip.frames, np.uint8))
                rewards.append(r)
                actions.append((clip.buttons, clip.camera) if clip.label_source == "env" and clip.buttons is not None
                               else None)
    if not frames:
        raise UserError(f"no episode with frames in {', '.join(paths)} to train the task scorer on")
    return frames, rewards, actions


def check_rewards(paths: tuple[str, ...], datasets: list) -> None:
    """UserError (one line) when no episode of the datasets records its rewards (every `reward` null: footage
    captured with --strip-actions, whose rewards went to its truth dataset): a critic would learn 0 everywhere."""
    for ds in datasets:
        for ep in ds.episode_ids:
            if ds.read_table(ep, columns=["reward"]).column("reward").null_count < ds.episode(ep).num_steps:
                return
    raise UserError(f"no episode in {', '.join(paths)} records its rewards (footage captured with --strip-actions "
                    "keeps them in its truth dataset): the critic learns the task's rewards; pass that dataset, or "
                    "another captured in the task's world")


def check_scorer_datasets(paths: tuple[str, ...], height: int, width: int, task_id: str) -> list:
    """The datasets a task scorer would train on, opened; UserError (one line) for one of another frame size or
    step rate than the player's, or with episodes recorded in another env than the task's (before anything is said
    or trained)."""
    from worldloom.idm.data import note_incomplete, open_dataset

    datasets = []
    for path in paths:
        ds = open_dataset(path)
        if ds.spec.height != height or ds.spec.width != width:
            raise UserError(f"{path} holds {ds.spec.width}x{ds.spec.height} frames but the policy and world model take "
                            f"{width}x{height}: record the scorer's data at {height}")
        if float(ds.spec.fps) != FPS:  # a reward per step of the game: a 10 fps step holds two
            raise UserError(f"{path} holds {ds.spec.fps:g} steps per second; the task scorer learns the reward of one "
                            f"step of the game's {FPS}: record the scorer's data in the task env (at {FPS})")
        check_scorer_env(path, ds, task_id)
        datasets.append(ds)
    note_incomplete(datasets, "agent dream")
    return datasets


def check_scorer_env(path: str, ds, task_id: str) -> None:
    """UserError (one line) when an episode of `ds` was recorded in another env than the task's: its rewards are
    that env's (VoxelWorld's are all 0), so a scorer fitted on them scores every dream 0 whatever is played."""
    from worldloom.envs import ENVS

    envs = ds.episodes.column("env").to_pylist() if "env" in ds.episodes.column_names else []
    other = sorted({env for env in envs if env is not None and ENVS.get(env, (env,))[0] != task_id})  # None: unrecorded
    if other:
        short = next(name for name, (env_id, _) in ENVS.items() if env_id == task_id)
        raise UserError(f"{path} holds episodes recorded in {', '.join(other)}, not in {task_id}'s world: the task "
                        f"scorer learns that task's play; record its data with `worldloom capture run --env {short}`")


def train_scorer(cfg: ScorerConfig, task_id: str, data: tuple[str, ...], out: Path, members: int = 1,
                 dream=None, record: dict | None = None) -> Path:
    """Fit `members` ValueHeads (seeds cfg.seed, cfg.seed + 1, ...) on the datasets' frames and save them as one run
    directory (a ScorerEnsemble: their mean is its reading).

    dream: None, or a function (frames, actions) -> [DreamWindow] (`dream_windows`): the world model's re-dreams of
    the same recorded play under its own actions. Then DREAM_SHARE of each batch are their generated frames, each
    with the return to come of the real frame it stands for, so the critic reads a dream's softened, drifting picture
    as the world model draws it (a critic of real frames read the players that move as worse than the one that stands
    still, whose dream stays sharp; docs/agent.md). record: more to write in its config (the world model the dreams
    came from)."""
    frames, rewards, actions = load_transitions(data, cfg.height, cfg.width, task_id)
    targets = [returns_to_come(r, cfg.gamma) for r in rewards]
    windows = dream(frames, actions) if dream is not None else []
    fitted = [_fit_value_head(dataclasses.replace(cfg, seed=cfg.seed + k), frames, targets, windows)
              for k in range(members)]
    flat = np.concatenate(targets)
    near = int((flat >= 0.5 * flat.max()).sum()) if flat.max() > 0 else 0
    out.mkdir(parents=True, exist_ok=True)
    ckpt.write_run_config(out, SCORER_KIND, {"scorer": to_json_dict(cfg), "head": HEAD, "task": task_id,
                                            "data": list(data), ckpt.DATA_CONTENT: content_ids(data),
                                            "frames": int(len(flat)), "near_reward_frames": near, "members": members,
                                            "dream_windows": len(windows), **(record or {})})
    ckpt.save_checkpoint(out, SCORER_KIND, {"model": ScorerEnsemble(fitted).state_dict()}, {"step": cfg.steps})
    return out


def _fit_value_head(cfg: ScorerConfig, frames: list[np.ndarray], targets: list[np.ndarray],
                    windows: list | None = None) -> ValueHead:
    """One critic; a batch is DREAM_SHARE re-dreamt frames (when `windows` holds some), then of the real frames
    EVENT_SHARE near a reward and the rest uniform."""
    from .odometry import DREAM_SHARE

    windows = windows or []
    index = np.array([(e, t) for e, f in enumerate(frames) for t in range(len(f))])  # (N, 2)
    dreamt = np.array([(w, k) for w, (_, _, film) in enumerate(windows) for k in range(1, len(film))],
                      np.int64).reshape(-1, 2)  # a window's frame 0 is real
    flat = np.concatenate(targets)
    near = np.flatnonzero(flat >= 0.5 * flat.max()) if flat.max() > 0 else np.zeros(0, np.int64)
    torch.manual_seed(cfg.seed)
    model = ValueHead(cfg)
    scale = float(np.sqrt(np.mean(flat ** 2)))
    model.scale.fill_(scale if scale > 0 else 1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng([cfg.seed, 0x5C0])
    n_dream = int(round(cfg.batch_size * DREAM_SHARE)) if len(dreamt) else 0
    n_near = int(round((cfg.batch_size - n_dream) * EVENT_SHARE)) if near.size else 0
    for step in tqdm(range(cfg.steps), desc="agent dream: critic", unit="step", leave=False, dynamic_ncols=True):
        pick = np.concatenate([rng.integers(0, len(index), cfg.batch_size - n_dream - n_near),
                               rng.choice(near, n_near) if n_near else np.zeros(0, np.int64)])
        x = [frames[e][t] for e, t in index[pick]]
        y = list(flat[pick])
        for w, k in dreamt[rng.integers(0, len(dreamt), n_dream)] if n_dream else ():
            e, t0, film = windows[w]
            x.append(film[k])
            y.append(targets[e][t0 + k])
        target = torch.from_numpy(np.asarray(y, np.float32))
        loss = F.mse_loss(model(torch.from_numpy(np.stack(x))) / model.scale, target / model.scale)
        check_finite(loss.item(), None, step + 1, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def load_scorer(run_dir: Path, task_id: str):
    """The task scorer saved in `run_dir` (a ValueHead or an Odometer: each has `.score(films) -> (B,)`) and its
    frame (height, width); UserError when it scores another task or with another head than the task's."""
    from worldloom.envs.tasks import task_by_name

    from .odometry import load_odometer

    doc_ = ckpt.read_run_config(run_dir, SCORER_KIND)
    if doc_.get("task") != task_id:
        raise UserError(f"{run_dir} scores {doc_.get('task')}, not {task_id}: pass --scorer for this task")
    want, have = scorer_head(task_by_name(task_id)), doc_.get("head")
    if have != want:
        def what(head: str) -> str:
            return f"an {SCORER_NAMES[head]}" if SCORER_NAMES[head][0] in "aeiou" else f"a {SCORER_NAMES[head]}"

        held = what(have) if have in SCORER_NAMES else "a reward head from before 2026-12-05"
        raise StaleScorer(f"{run_dir} holds {held}, but {task_id}'s dreams are scored by {what(want)} now: pass "
                          "--scorer NEW_FOLDER with --data to train one", f"holds {held}, not {what(want)}")
    if have == ODOMETRY:
        model = load_odometer(run_dir, doc_, SCORER_KIND)
        return model, (doc_["odometer"]["height"], doc_["odometer"]["width"])
    if have == MINING:
        from .mining import load_mining_head

        return load_mining_head(run_dir, doc_, SCORER_KIND)
    try:
        cfg, members = ScorerConfig(**doc_["scorer"]), scorer_members(doc_)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{Path(run_dir) / ckpt.CONFIG_FILE}: not a critic's config ({err}); train it again with "
                        "--scorer NEW_FOLDER") from None
    if members is None:  # a run from before ensembles: one critic, its weights unprefixed
        return ckpt.load_model(run_dir, SCORER_KIND, lambda: ValueHead(cfg)).eval(), (cfg.height, cfg.width)
    return (ckpt.load_model(run_dir, SCORER_KIND, lambda: ScorerEnsemble([ValueHead(cfg) for _ in range(members)])).eval(),
            (cfg.height, cfg.width))


def scorer_for(cfg, resolution: int, wm=None, codec=None, guidance: float = 1.0) -> tuple[object, str]:
    """The eval's task scorer: --scorer, else WM_RUN/scorer-<Task>, trained from --data when missing: an ensemble of
    --scorer-members critics of --scorer-steps steps each, or for a distance task of odometers of ODOMETER_STEPS
    times as many (a pair's motion is finer to learn); either also learns from --scorer-dreams windows of the data's
    play re-dreamt by the world model `wm` (`dream_windows`, sampled as the dreams are: `guidance`)."""
    from .odometry import OdometerConfig, train_odometer

    task = cfg.task_spec
    run = Path(cfg.scorer) if cfg.scorer else Path(cfg.in_world_model) / f"scorer-{task.name}"
    head = scorer_head(task)
    trained_now = not ckpt.has_checkpoint(run)
    if trained_now:
        if not cfg.data:
            from worldloom.envs.tasks import short_name

            raise UserError(f"no task scorer in {run}: pass --data with datasets recorded in {task.env_id}'s world "
                            f"(e.g. `worldloom capture run --env {short_name(task.env_id)} --resolution {resolution} "
                            "--out DIR`) to train one, or --scorer RUN")
        datasets = check_scorer_datasets(cfg.data, resolution, resolution, task.env_id)
        if head == HEAD:
            check_rewards(cfg.data, datasets)
        what = SCORER_NAMES[head]
        print(f"agent dream: training the {task.name} {what}{'s' if cfg.scorer_members > 1 else ''} on "
              f"{', '.join(cfg.data)}", file=sys.stderr)
        dream, record = None, {}
        if cfg.scorer_dreams and wm is not None:
            from worldloom.pretrain.flow import SampleConfig

            dream = dream_windows(wm, codec, SampleConfig(num_steps=cfg.sample_steps, guidance=guidance),
                                  cfg.scorer_dreams, cfg.horizon, cfg.seed)
            record = dream_record(cfg, guidance)
        if head == MINING:
            from .mining import MiningConfig, train_mining

            train_mining(MiningConfig(height=resolution, width=resolution, steps=cfg.scorer_steps, seed=cfg.seed),
                         task, cfg.data, datasets, run, SCORER_KIND, members=cfg.scorer_members, dream=dream,
                         record=record)
        elif head == ODOMETRY:
            train_odometer(OdometerConfig(height=resolution, width=resolution, steps=ODOMETER_STEPS * cfg.scorer_steps,
                                          seed=cfg.seed),
                           task.env_id, cfg.data, datasets, run, SCORER_KIND, members=cfg.scorer_members, dream=dream,
                           record=record)
        else:
            train_scorer(ScorerConfig(height=resolution, width=resolution, steps=cfg.scorer_steps, seed=cfg.seed),
                         task.env_id, cfg.data, run, members=cfg.scorer_members, dream=dream, record=record)
    elif cfg.data:
        scored = ckpt.read_run_config(run, SCORER_KIND).get("task")
        if scored != task.env_id:  # before the data: leaving out --data would not make it score this task
            raise UserError(f"{run} scores {scored}, not {task.env_id}: pass --scorer NEW_FOLDER with --data to train "
                            "one for this task")
        check_scorer_data(run, cfg.data, cfg.scorer_steps, cfg.scorer_members, dream_record(cfg, guidance))
    if not trained_now:
        note_scorer_seed(run, cfg.seed)
        if not cfg.data:
            note_unused_scorer_flags(run, cfg)
    model, (height, width) = load_scorer(run, task.env_id)
    reading = getattr(cfg, "critic_reading", "mean")
    for member in model.modules():  # the critics' reading of a dream (an odometer or mining classifier has none)
        if isinstance(member, ValueHead):
            member.reading = reading
    if reading != "mean" and head != HEAD:
        print(f"agent dream: note: --critic-reading {reading} reads a critic; {task.name}'s dreams are scored by "
              f"the {'odometer' if head == ODOMETRY else 'mining classifier'}, as it reads them", file=sys.stderr)
    if (height, width) != (resolution, resolution):
        raise UserError(f"scorer {run} takes {width}x{height} frames, the policy {resolution}x{resolution}: "
                        f"pass --scorer NEW_FOLDER with --data to train one at {resolution}x{resolution}")
    return model, str(run)


def note_scorer_seed(run: Path, seed: int) -> None:
    """A note on stderr when the scorer reused from `run` was trained from another --seed than the dream's: a dream
    seed sets the scorers' seeds only where that run trains them, and a scorer's ranking moves with its seeds."""
    doc_ = ckpt.read_run_config(run, SCORER_KIND)
    trained = (doc_.get("scorer") or doc_.get("odometer") or {}).get("seed")
    if trained is not None and trained != seed:
        print(f"agent dream: note: scorer {run} was trained from --seed {trained}, and is reused as it is for --seed "
              f"{seed} (pass --scorer NEW_FOLDER for scorers of this seed)", file=sys.stderr)


def note_unused_scorer_flags(run: Path, cfg) -> None:
    """A note on stderr when a scorer reused without --data (as it is) was trained otherwise than --scorer-steps,
    --scorer-members and --scorer-dreams say: they shape a new scorer only, and eval.json's config records them."""
    doc_ = ckpt.read_run_config(run, SCORER_KIND)
    trained = {"scorer_steps": scorer_steps_of(doc_), "scorer_members": doc_.get("members") or 1,
               "scorer_dreams": (doc_.get("dreams") or {}).get("windows", 0)}
    differ = [k for k, v in trained.items() if v is not None and getattr(cfg, k, v) != v]
    if differ:
        flag = lambda k, v: f"--{k.replace('_', '-')} {v}"  # noqa: E731
        print(f"agent dream: note: {', '.join(flag(k, getattr(cfg, k)) for k in differ)} train a new task scorer; "
              f"{run}, reused as it is without --data, was trained with {', '.join(flag(k, trained[k]) for k in differ)} "
              "(pass --data and --scorer NEW_FOLDER to train one as asked)", file=sys.stderr)


def dream_record(cfg, guidance: float) -> dict:
    """What a scorer's re-dreamt windows depend on, as its config records it: {"dreams": {...}} (the world model's
    weights, the windows asked, their length and how they were sampled), or {} where it learns from real frames only."""
    if not cfg.scorer_dreams:
        return {}
    from worldloom.pretrain.checkpoint import KIND

    weights = ckpt.checkpoint_id(cfg.in_world_model, KIND).rsplit("-", 1)[-1]  # the weights, wherever the run lies
    return {"dreams": {"world_model": weights, "windows": cfg.scorer_dreams, "horizon": cfg.horizon,
                       "sample_steps": cfg.sample_steps, "guidance": guidance}}


def check_scorer_data(run: Path, data: tuple[str, ...], steps: int, members: int = 1, record: dict | None = None) -> None:
    """UserError (one line) when the scorer at `run` was trained on other datasets, on other content under
    the same names, for another --scorer-steps or --scorer-members than asked, or on other dreams than `record` says
    (another world model's, or other --scorer-dreams): reusing it would score with the old ones."""
    have = ckpt.read_run_config(run, SCORER_KIND)
    trained = have.get("data") or []
    dreams, asked = have.get("dreams") or {}, (record or {}).get("dreams") or {}
    if sorted(ckpt.real_folders(trained)) != sorted(ckpt.real_folders(data)):
        why = f"was trained on {' '.join(trained) or 'unrecorded data'}, not on --data {' '.join(data)}"
    elif changed := ckpt.changed_data(have, content_ids(data)):
        why = f"was trained on {' '.join(changed)} as it was then, and its content has changed since"
    elif (trained_steps := scorer_steps_of(have)) != steps:
        why = f"was trained for --scorer-steps {trained_steps}, not the {steps} asked"
    elif (trained_members := have.get("members") or 1) != members:
        why = f"holds {trained_members} scorer{'s' if trained_members > 1 else ''}, not the --scorer-members {members} asked"
    elif dreams.get("world_model") != asked.get("world_model") and dreams and asked:
        why = "learned from another world model's dreams than this one's"
    elif dreams.get("windows", 0) != asked.get("windows", 0):
        why = f"learned from {dreams.get('windows', 0)} re-dreamt windows, not the --scorer-dreams {asked.get('windows', 0)} asked"
    elif dreams != asked:
        why = "learned from dreams sampled otherwise (horizon, Euler steps or guidance) than these"
    else:
        return
    raise StaleScorer(f"task scorer {run} {why}: pass --scorer NEW_FOLDER to train one as asked, "
                      "or leave out --data to score with this one", why)


def scorer_steps_of(doc_: dict) -> int | None:
    """The --scorer-steps a scorer run was trained with (an odometer trains ODOMETER_STEPS times as many steps)."""
    if "odometer" in doc_:
        return doc_["odometer"].get("steps", 0) // ODOMETER_STEPS
    return doc_.get("scorer", {}).get("steps")


def check_world_model(wm_cfg, wm_run: str, resolution: int, policy: str) -> None:
    """UserError naming both sides when the world model's frames are not the player's. A reference player plays at
    any size the tasks render (VoxelWorld's RESOLUTIONS), so it is told `--resolution N` only where N is one of
    them; a world model at another size can host no dream (until 2026-12-07 it was told `--resolution 32`, which
    the flags then refused)."""
    size = wm_cfg.image_size
    if size != resolution:
        from worldloom.envs import RESOLUTIONS

        from .players import is_reference

        low, high = RESOLUTIONS["voxel"]  # the tasks are VoxelWorld's
        use = (f"use a world model trained at {resolution} (`worldloom pretrain train --model.image-size {resolution}`)")
        if not low <= size <= high:
            raise UserError(f"world model {wm_run} generates {size}x{size} frames but {policy} plays at "
                            f"{resolution}x{resolution}, and the tasks render {low}..{high} pixels a side, so no player "
                            f"can dream at {size}x{size}: {use}")
        other = f"--resolution {size}" if is_reference(policy) else f"a policy trained at {size}"  # plays at any size
        raise UserError(f"world model {wm_run} generates {size}x{size} frames but {policy} plays at "
                        f"{resolution}x{resolution}: {use} or {other}")


def check_dream(cfg, wm_cfg, wm_doc: dict, resolution: int) -> None:
    """The checks a dream makes before any work, from the world model's config alone (the study makes them before
    its first stage): its frame size against the player's, that it learned actions, its step rate against the game's,
    the time limit against the context and --horizon. One-line UserError naming both sides."""
    from worldloom.pretrain.checkpoint import step_rate

    check_world_model(wm_cfg, cfg.in_world_model, resolution, cfg.policy)
    if not wm_doc.get("train", {}).get("use_actions", True):  # it learned the null action only: no action steers it
        raise UserError(f"world model {cfg.in_world_model} was trained without actions (--no-use-actions), so its dreams "
                        f"do not follow what {cfg.policy} does: dream in a world model trained with actions")
    if step_rate(wm_doc) != FPS:  # the task env and the player step at the game's rate
        raise UserError(f"world model {cfg.in_world_model} learned {step_rate(wm_doc):g} steps per second, but a player "
                        f"acts once per step of the game's {FPS}: dream in a world model trained at {FPS} steps per second")
    check_time_limit(cfg, wm_cfg.num_frames - 1)


def check_time_limit(cfg, context: int) -> None:
    """UserError (one line) when the task's time limit ends the real branch before the dream's end: the real env takes
    context - 1 steps then --horizon more, and a real score over fewer steps is no match for the imagined one."""
    limit = cfg.time_limit or cfg.task_spec.max_steps
    need = context - 1 + cfg.horizon
    if need <= limit:
        return
    what = f"--time-limit {limit}" if cfg.time_limit else f"{cfg.task_spec.env_id}'s time limit of {limit} steps"
    fix = f"pass --horizon {limit - context + 1} at most, or --time-limit {need}" if limit >= context else \
        f"pass --time-limit {need}"
    raise UserError(f"--horizon {cfg.horizon} after the world model's {context} context frames takes {need} real steps, "
                    f"but {what} ends each real episode first (its real score would cover fewer steps than the "
                    f"imagined one): {fix}")


class Imagination:
    """B episodes' world-model state: the frames so far in model space and the actions between them."""

    def __init__(self, model, codec, context: torch.Tensor, actions: torch.Tensor, sample):
        self.model, self.codec, self.sample = model, codec, sample
        self.frames = list(codec.encode(context).unbind(1))  # each (B, C, h, w)
        self.actions = list(actions.unbind(1))  # each (B, 24): actions[k] taken after frames[k]
        self.levels = [sample.context_noise] * len(self.frames)

    @torch.no_grad()
    def step(self, action: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Take `action` (B, 24) after the last frame; -> the generated frame (B, 3, S, S) in [-1, 1]."""
        from worldloom.pretrain.flow import next_frame
        from worldloom.pretrain.model import shift_actions

        window = self.model.cfg.num_frames - 1
        lo = max(0, len(self.frames) - window)
        ctx = torch.stack(self.frames[lo:], 1)  # (B, W, C, h, w)
        acts = torch.stack(self.actions[lo:] + [action], 1)  # (B, W, 24): the action after each context frame
        has = torch.ones(acts.shape[:2], dtype=torch.bool)
        a_ctx, m_ctx = shift_actions(acts, has)  # context frame k gets the action that made it
        new = next_frame(self.model, ctx, a_ctx, m_ctx, action, has[:, -1], self.sample, generator,
                         self.levels[lo:]).clamp(-1, 1)
        self.frames.append(new)
        self.actions.append(action)
        self.levels.append(self.sample.generated_noise)
        return self.codec.decode(new[:, None])[:, 0]


def dream_windows(wm, codec, sample, count: int, horizon: int, seed: int, batch: int = 16):
    """A function (frames, actions) -> [odometry.DreamWindow] that re-dreams recorded play: `count` windows, each at
    a random step of a random episode whose actions the env recorded, the world model's `num_frames - 1` real frames
    as context (as a dream starts), then up to `horizon` frames it generates under that episode's own actions,
    sampled with `sample` (the dreams' SampleConfig). frames: [(T, H, W, 3) uint8]; actions: [((T, 20) bool,
    (T, 2) degrees) or None], one per episode; seeded by `seed`. No usable episode: []."""
    from worldloom.pretrain.data import frames_to_model, model_to_frames
    from worldloom.pretrain.flow import clip_generators
    from worldloom.pretrain.model import encode_actions

    context = wm.cfg.num_frames - 1

    def make(frames: list[np.ndarray], actions: list) -> list:
        usable = [e for e, a in enumerate(actions) if a is not None and len(frames[e]) > context]
        if not usable or count < 1:
            return []
        rng = np.random.default_rng([seed, 0xD7E])
        picks = []
        for _ in range(count):
            e = usable[int(rng.integers(len(usable)))]
            steps = min(horizon, len(frames[e]) - context)  # generated frames; the film ends at the episode's end
            picks.append((e, int(rng.integers(context - 1, len(frames[e]) - steps)), steps))
        films: dict[int, np.ndarray] = {}
        order = sorted(range(count), key=lambda i: picks[i][2])  # equal lengths batch together
        groups = [[i for i in order if picks[i][2] == n] for n in sorted({p[2] for p in picks})]
        with tqdm(total=sum(p[2] for p in picks), desc="agent dream: re-dreaming the scorer's play", unit="frame",
                  leave=False, dynamic_ncols=True) as bar:
            for group in groups:
                for lo in range(0, len(group), batch):
                    ids = group[lo:lo + batch]
                    steps = picks[ids[0]][2]

                    def acts(i: int, a: int, b: int) -> torch.Tensor:
                        buttons, camera = actions[picks[i][0]]
                        return encode_actions(torch.from_numpy(np.asarray(buttons[a:b], bool)),
                                              torch.from_numpy(np.asarray(camera[a:b], np.float32)))

                    ctx = np.stack([frames[picks[i][0]][picks[i][1] - context + 1:picks[i][1] + 1] for i in ids])
                    start = torch.stack([acts(i, picks[i][1] - context + 1, picks[i][1]) for i in ids])
                    imagination = Imagination(wm, codec, frames_to_model(torch.from_numpy(ctx), wm.cfg.image_size),
                                              start, sample)
                    gen = clip_generators(seed, ids)
                    film = [ctx[:, -1]]
                    for k in range(steps):
                        step = torch.stack([acts(i, picks[i][1] + k, picks[i][1] + k + 1)[0] for i in ids])
                        film.append(model_to_frames(imagination.step(step, gen)).numpy())
                        bar.update(len(ids))
                    for j, i in enumerate(ids):
                        films[i] = np.stack([f[j] for f in film])
        return [(picks[i][0], picks[i][1], films[i]) for i in range(count)]

    return make


def _to_arrays(actions: list[dict]) -> torch.Tensor:
    from worldloom.actions import to_arrays
    from worldloom.pretrain.model import encode_actions

    buttons, camera = to_arrays(actions)
    return encode_actions(torch.from_numpy(buttons), torch.from_numpy(camera))  # (B, 24)


def dream_batch(cfg, work: list[tuple[int, int]], resolution: int, wm, codec, scorer, guidance: float = 1.0,
                bar=None, played: bool = False, dreamer_seeds: list[int] | None = None) -> list[dict]:
    """Play `work` [(index, seed)] with a real branch and an imagined one, the world model sampled with `guidance` on
    actions (`bar`: a tqdm counting the dreamt steps); -> one row per episode: the task scorer on the dreamt frames
    (`imagined`) and on the real branch's (`critic_real`), the real return at the same horizon. With `played`, each
    row also holds "dream": what the player saw and did in its imagined branch, (frames (C + H, S, S, 3) uint8: the
    C real context frames then the H dreamt ones; buttons (C + H, 20) bool and camera (C + H, 2) degrees: the action
    it took after each frame), the data imagination training learns from (agent/imagine.py). `dreamer_seeds` (one per
    episode; default: its world seed) seed the player's sampling in the imagined branch, so that dreams from one
    world and context can differ in what the player does there."""
    from worldloom.envs.tasks import make_task_env, short_name
    from worldloom.pretrain.data import frames_to_model, model_to_frames
    from worldloom.pretrain.flow import SampleConfig, clip_generators

    B, context, H = len(work), wm.cfg.num_frames - 1, cfg.horizon
    limit = {"max_steps": cfg.time_limit} if cfg.time_limit else {}
    envs = [make_task_env(cfg.task, height=resolution, width=resolution, **limit) for _ in work]
    task = short_name(cfg.task)
    real = make_controller(cfg.policy, B, cfg.temperature, task=task, runtime=cfg.runtime)
    dreamer = None if is_reference(cfg.policy) else make_controller(cfg.policy, B, cfg.temperature, task=task,
                                                                    runtime=cfg.runtime)
    obs = np.zeros((B, resolution, resolution, 3), np.uint8)
    infos: list[dict] = [{} for _ in work]
    done = np.zeros(B, bool)
    for k, (_, seed) in enumerate(work):
        obs[k], infos[k] = envs[k].reset(seed=seed)
        real.begin(k, seed)
        if dreamer is not None:
            dreamer.begin(k, seed if dreamer_seeds is None else dreamer_seeds[k])
    ctx_frames, ctx_actions = [], []

    def step_real(actions: list[dict]) -> None:
        for k in range(B):
            if not done[k]:
                obs[k], _, term, trunc, infos[k] = envs[k].step(actions[k])
                done[k] = term or trunc

    for t in range(context):  # the real context: both controllers see the same frames and draw the same actions
        actions = real.act(obs, infos)
        if dreamer is not None:
            dreamer.act(obs, infos)
        ctx_frames.append(obs.copy())
        ctx_actions.append(actions)
        if t < context - 1:
            step_real(actions)
    start_progress = np.array([info["task"]["progress"] for info in infos])
    x = frames_to_model(torch.from_numpy(np.stack(ctx_frames, 1)), wm.cfg.image_size)  # (B, C, 3, S, S)
    imagination = Imagination(wm, codec, x, torch.stack([_to_arrays(a) for a in ctx_actions[:-1]], 1)
                              if context > 1 else torch.zeros(B, 0, 24), SampleConfig(num_steps=cfg.sample_steps, guidance=guidance))
    gen = clip_generators(cfg.seed, [index for index, _ in work])  # an episode's dream whatever its batch
    action_real = action_img = ctx_actions[-1]
    film_real, film_img = [ctx_frames[-1].copy()], [ctx_frames[-1].copy()]
    steps_real = np.zeros(B, np.int64)  # steps the real branch took after the fork (fewer than H: its episode ended)
    acted = list(ctx_actions)  # the imagined branch's actions, one list of B per frame
    for _ in range(H):
        steps_real += ~done
        step_real(action_real)
        new = model_to_frames(imagination.step(_to_arrays(action_img), gen))  # (B, S, S, 3) uint8
        film_real.append(obs.copy())
        film_img.append(new.numpy())
        action_real = real.act(obs, infos)
        action_img = dreamer.act(new.numpy(), infos) if dreamer is not None else action_real
        acted.append(action_img)
        if bar is not None:
            bar.update(B)
    films_real, films_img = np.stack(film_real, 1), np.stack(film_img, 1)  # (B, H + 1, S, S, 3) each
    imagined, critic_real = scorer.score(films_img), scorer.score(films_real)
    end_progress = np.array([info["task"]["progress"] for info in infos])
    rows = []
    for k, (index, seed) in enumerate(work):
        rows.append({"index": index, "seed": seed, "runtime": real.runtime, "runtime_note": real.runtime_note,
                     "imagined": round(float(imagined[k]), 4),
                     "critic_real": round(float(critic_real[k]), 4),
                     "real": round(float(end_progress[k] - start_progress[k]), 4), "real_steps": int(steps_real[k]),
                     "frames": (films_real[k], films_img[k])})
        if played:
            from worldloom.actions import to_arrays

            seen = np.concatenate([np.stack(ctx_frames[:-1], 1)[k], films_img[k]]) if context > 1 else films_img[k]
            rows[-1]["dream"] = (seen, *to_arrays([a[k] for a in acted]))
    return rows


def dream(cfg) -> dict:
    """Imagined against real scores of one player on one task; writes OUT/eval.json (+ videos)."""
    from worldloom.pretrain.checkpoint import load_world_model
    from worldloom.pretrain.rollout import side_by_side

    from .evaluate import bootstrap_ci, episode_seed, note_runtime, policy_id, resolve_resolution

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    resolution = resolve_resolution(cfg)
    wm, wm_doc, codec = load_world_model(cfg.in_world_model)
    check_dream(cfg, wm.cfg, wm_doc, resolution)
    guidance = dream_guidance(cfg.sample_guidance, wm_doc, cfg.in_world_model)
    scorer, scorer_run = scorer_for(cfg, resolution, wm, codec, guidance)
    work = [(i, episode_seed(cfg.seed, i)) for i in range(cfg.episodes)]
    rows = []
    with tqdm(total=len(work) * cfg.horizon, desc="agent dream", unit="step", leave=False, dynamic_ncols=True) as bar:
        for lo in range(0, len(work), cfg.envs_per_worker):
            rows += dream_batch(cfg, work[lo:lo + cfg.envs_per_worker], resolution, wm, codec, scorer, guidance, bar)
    out = cfg.out_dir
    videos = []
    for row in rows[:cfg.videos]:
        path = out / "videos" / f"{spec_name(cfg.policy)}-{cfg.task_spec.name}-dream{row['index']:04d}.{cfg.video_format}"
        real_frames, imagined = row["frames"]
        write_video(path, side_by_side(real_frames, imagined, 1, 4), 20.0)
        videos.append(str(path))
    runtime = {row.pop("runtime") for row in rows}
    note_runtime({row.pop("runtime_note") for row in rows})
    for row in rows:
        del row["frames"]
    imagined = np.array([r["imagined"] for r in rows])
    real_scores = np.array([r["real"] for r in rows])
    summary = {"policy": cfg.policy, "player": spec_name(cfg.policy), "policy_id": policy_id(cfg.policy),
               "task": cfg.task_spec.env_id, "mode": "dream", "episodes": len(rows),
               "imagined": dict(zip(("mean", "low", "high"), bootstrap_ci(imagined, cfg.seed), strict=True)),
               "real": dict(zip(("mean", "low", "high"), bootstrap_ci(real_scores, cfg.seed), strict=True)),
               "critic_real": dict(zip(("mean", "low", "high"),
                                       bootstrap_ci(np.array([r["critic_real"] for r in rows]), cfg.seed), strict=True)),
               "context": wm.cfg.num_frames - 1, "horizon": cfg.horizon, "world_model": cfg.in_world_model,
               "scorer": scorer_run, "scorer_head": scorer_head(cfg.task_spec), "guidance": guidance,
               "runtime": next(iter(runtime)) if len(runtime) == 1 else None,  # None: a reference
               "videos": videos, "wall_s": round(time.perf_counter() - t0, 2),
               "config": to_json_dict(cfg), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "eval.json", summary)
    summary["out"] = str(out)
    return summary


def dream_guidance(asked: float, wm_doc: dict, wm_run: str) -> float:
    """The guidance on actions a dream samples with: `asked`, or 1 (none, with a note on stderr) for a world model
    trained without action dropout, which has no unconditioned prediction to guide from."""
    if asked == 1.0 or wm_doc.get("train", {}).get("action_dropout", 0.1) > 0:
        return asked
    print(f"agent dream: note: world model {wm_run} was trained with --action-dropout 0, so its dreams sample without "
          f"guidance on actions (not the --sample-guidance {asked:g} asked)", file=sys.stderr)
    return 1.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties; NaN when either side is constant."""
    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for value in np.unique(x):  # ties share their mean rank
            same = x == value
            r[same] = r[same].mean()
        return r

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


RANK_DRAWS = 1000  # bootstrap draws of the rank agreement's interval


def imagined_rows(player: dict) -> list[float] | None:
    """A player's imagined score per dreamt episode: a study figure's `imagined_rows`, an eval.json's rows."""
    if "imagined_rows" in player:
        return player["imagined_rows"]
    rows = player.get("rows")
    return [r["imagined"] for r in rows] if rows else None


def rank_draws(items: list[tuple[str, dict]], target: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """(RANK_DRAWS,) Spearman of the players' mean imagined scores against `target`, each player's dreams drawn again
    with replacement (NaN where a draw ranks every player the same); None without every player's episodes."""
    rows = [imagined_rows(v) for _, v in items]
    if any(not r for r in rows):
        return None
    rng = np.random.default_rng([seed, 0x5EA])
    arrays = [np.asarray(r, np.float64) for r in rows]
    return np.array([spearman(np.array([a[rng.integers(0, len(a), len(a))].mean() for a in arrays]), target)
                     for _ in range(RANK_DRAWS)])


def by_dream_count(items: list[tuple[str, dict]], target: np.ndarray) -> dict[str, float] | None:
    """{n: the mean over the disjoint sets of n dreams a player of their Spearman against `target`} for n = all the
    dreams, a half and a quarter (at least 4 a set; the players' first dreams when their counts differ), NaN-free means;
    None without every player's episodes. A figure that still rises from a quarter of the dreams to all of them is
    held down by the dreams' noise, and more dreams would raise it (session 51: 16, 32 and 64 dreams a player ranked
    the tiny study's eight players at 0.57, 0.63 and 0.65)."""
    rows = [imagined_rows(v) for _, v in items]
    if any(not r for r in rows):
        return None
    total = min(len(r) for r in rows)
    out = {}
    for n in sorted({total, total // 2, total // 4}, reverse=True):
        if n < 4 and n != total:
            continue
        figures = [spearman(np.array([np.mean(r[k * n:(k + 1) * n]) for r in rows]), target) for k in range(total // n)]
        out[str(n)] = _mean_defined(figures)
    return out


def _mean_defined(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is."""
    kept = [v for v in values if v == v]
    return float(np.mean(kept)) if kept else float("nan")


def interval(draws: np.ndarray) -> list[float] | None:
    """The middle 95% of bootstrap draws (NaN draws left out); None when every draw is NaN."""
    kept = draws[np.isfinite(draws)]
    return [float(np.percentile(kept, 2.5)), float(np.percentile(kept, 97.5))] if len(kept) else None


def rank_agreement(players: dict[str, dict], closed_loop: dict[str, dict] | None = None) -> dict[str, dict]:
    """Per task (and "all", the mean over tasks): Spearman of the players' mean imagined score against their mean
    real return at the same horizon (`spearman`) and, when given, in closed-loop evaluation (`spearman_closed_loop`,
    with `spearman_closed_loop_spread95`, where the players' rows are given: the middle 95% of the figure over
    RANK_DRAWS redraws of each player's dreamt episodes with replacement, the closed-loop returns held fixed; a rank
    figure at its ceiling reads lower when redrawn, so the spread can lie below the figure: it says how far a new set
    of dreams could move it, and is not a confidence interval; and `spearman_closed_loop_by_dreams`, the figure with
    all, half and a quarter of each player's dreams, `by_dream_count`); `critic_closed_loop`: the task scorer's
    mean over the real branch's frames against the closed-loop return, the ranking a perfect world model would
    give; `horizon_closed_loop`: the real return at the dream's horizon against the closed-loop return, the ranking
    a perfect world model and a perfect scorer would give at this horizon."""
    by_task: dict[str, list[tuple[str, dict]]] = {}
    for key, v in players.items():
        by_task.setdefault(key.split("|")[1], []).append((key, v))
    names = ("spearman", "spearman_closed_loop", "critic_closed_loop", "horizon_closed_loop")
    out, draws = {}, {}
    for task, items in by_task.items():
        imagined = np.array([v["imagined"]["mean"] for _, v in items])
        row = {"num_players": len(items), "spearman": spearman(imagined, np.array([v["real"]["mean"] for _, v in items]))}
        if closed_loop:
            full = np.array([closed_loop.get(k, {}).get("return", {}).get("mean", np.nan) for k, _ in items])
            row["spearman_closed_loop"] = spearman(imagined, full)
            if (task_draws := rank_draws(items, full)) is not None:
                draws[task] = task_draws
                row["spearman_closed_loop_spread95"] = interval(task_draws)
                row["spearman_closed_loop_by_dreams"] = by_dream_count(items, full)
            row["horizon_closed_loop"] = spearman(np.array([v["real"]["mean"] for _, v in items]), full)
            if all("critic_real" in v for _, v in items):
                row["critic_closed_loop"] = spearman(np.array([v["critic_real"]["mean"] for _, v in items]), full)
        out[task] = row
    for name in names:
        values = [r[name] for r in out.values() if name in r and r[name] == r[name]]
        if name in ("spearman", "spearman_closed_loop") or any(name in r for r in out.values()):
            out.setdefault("all", {"num_players": len(players)})[name] = float(np.mean(values)) if values else float("nan")
    if draws and len(draws) == len(by_task):  # the mean over the tasks' defined figures, draw by draw
        stack = np.stack(list(draws.values()))  # (tasks, RANK_DRAWS)
        defined = np.isfinite(stack)
        count = defined.sum(0)
        mean = np.where(count > 0, np.where(defined, stack, 0.0).sum(0) / np.maximum(count, 1), np.nan)
        out["all"]["spearman_closed_loop_spread95"] = interval(mean)
        counts = [set(r["spearman_closed_loop_by_dreams"]) for r in out.values() if "spearman_closed_loop_by_dreams" in r]
        out["all"]["spearman_closed_loop_by_dreams"] = {
            n: _mean_defined([r["spearman_closed_loop_by_dreams"][n] for t, r in out.items() if t != "all"])
            for n in sorted(set.intersection(*counts), key=int, reverse=True)} if counts else {}
    for row in out.values():  # null in JSON: why, beside it
        row["undefined"] = {k: "undefined: fewer than 2 players, or every player scored the same" for k in
                            names if k in row and row[k] != row[k]}
    return out
