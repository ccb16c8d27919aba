"""Imagination training: improve a policy inside a trained world model, then play it in the real env.

    worldloom agent imagine --policy runs/bc-env --task worldloom/Explore-v0 --in-world-model runs/wm \
        --data data/truth-explore data/labeled-explore --out runs/bc-env-imagined

A round dreams `--dreams` episodes of the policy on the task as `agent eval --in-world-model` does
(agent/dream.py: a context of real frames, then the world model draws each next frame from the
action the policy samples on the frame before), scores each dream with the task's scorer (the
ensemble dreaming ranks players with: Explore's odometer, CollectLogs' and MineStone's mining
classifiers, FindWater's critic), and
fine-tunes the policy by behaviour cloning on its own best `--keep` share of the round's dreams:
the frames it saw there and the actions it took after each, from the fork on (the actions taken
on the real context change nothing the dream shows). This is filtered behaviour cloning (the
"%BC" of Chen et al. 2021, "Decision Transformer"; self-imitation, Oh et al. 2018): the policy
moves toward what it already does in the dreams the scorer likes. Dreamer's actor learns from
gradients of values through its latent imagination; this world model samples pixels with a flow
model, which nothing differentiates through cheaply, so the improvement is a selection. No reward
of the real env reaches the training: the scorer reads dreamt frames only.

Dreams come in groups of `--group` from one world and real context, the policy's sampling
seeded apart, and the kept ones are the best of each group: the choice compares what the policy
did in one place, not which worlds are easy to score in. Each world also plays a real branch
from the same context (dreaming's), whose return over the same `--horizon` steps is logged per
round beside the dreams' scores (metrics.csv, curves.png), with the scorer's Spearman against it
over the worlds: how the real policy moves as it learns. It is never used to choose. At the end `--eval-episodes` closed-loop
episodes of the start and the improved policy, on the same world seeds (`agent eval`), give
success and return with 95% intervals and the paired difference of the returns
(OUT/imagine.json, printed).

OUT is a policy run (agent/checkpoint.py: `agent eval --policy OUT` plays it): the start
policy's config with an "imagination" section (this config, the start's checkpoint id, the
world model's and the scorer's), its weights after each round, metrics.csv and curves.png. A
killed run resumes at the round after its last checkpoint; one asked with other settings is
refused with one line.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldloom import checkpoint as ckpt
from worldloom.actions import camera_to_bin_position
from worldloom.config import MAX_SEED, check_range, doc, to_json_dict
from worldloom.errors import UserError
from worldloom.folders import check_out, run_lock
from worldloom.io import atomic_write_json
from worldloom.training import MetricsLog, adamw, check_device_name, check_finite, resolve_device

from .checkpoint import KIND, checkpoint_id, load_policy, read_config
from .players import is_reference

IMAGINE_RANGES = (
    ("rounds", 1, 10_000, "rounds of dreaming then cloning"),
    ("dreams", 2, 100_000, "dreams per round"),
    ("group", 1, 100_000, "dreams per world"),
    ("steps_per_round", 1, 1_000_000, "optimizer steps per round"),
    ("batch_size", 1, 4096, "dreams per step"),
    ("horizon", 1, 100_000, "steps"),
    ("envs_per_batch", 1, 4096, "dreams played side by side"),
    ("eval_episodes", 0, 1_000_000, "episodes; 0: no closed-loop evaluation"),
    ("seed", 0, MAX_SEED, ""),
    ("threads", 0, 1024, "0: torch's default"),
)
FIELDS = ("step", "round", "imagined", "kept_imagined", "threshold", "real", "real_rank", "loss", "elapsed_s")
PANELS = (("dreams: the task scorer", ("imagined", "kept_imagined"), False),
          ("real branch: return over the horizon", ("real",), False),
          ("cloning loss on the kept dreams", ("loss",), False))


@dataclass(frozen=True)
class ImagineConfig:
    """Improve a policy inside a world model (filtered behaviour cloning on its best dreams); stored in OUT's config."""

    policy: str = doc("the policy run to start from (agent train)")
    task: str = doc("task id (worldloom/CollectLogs-v0, worldloom/MineStone-v0, worldloom/Explore-v0, "
                    "worldloom/FindWater-v0) or its short name")
    in_world_model: str = doc("the world-model run to dream in (pretrain train)")
    out: str = doc("run directory of the improved policy (resumed if it exists)")
    data: tuple[str, ...] = doc("datasets recorded on the task, to train the task scorer on when it is missing "
                                "(as agent eval --in-world-model --data)", ())
    scorer: str | None = doc("a task-scorer run (default: WM_RUN/scorer-<Task>, trained on --data if missing)", None)
    scorer_steps: int = doc("training steps of a new task scorer (as agent eval's)", 300)
    scorer_members: int = doc("scorers averaged in a new task scorer (as agent eval's)", 5)
    scorer_dreams: int = doc("re-dreamt windows a new task scorer also learns from (as agent eval's)", 128)
    rounds: int = doc("rounds: each dreams --dreams episodes, then clones the kept ones", 12)
    dreams: int = doc("dreams per round", 128)
    group: int = doc("dreams from each world and context, the player's sampling seeded apart: the dreams the scorer "
                     "rates highest are chosen within each group, so a world that is easy to score in is not what "
                     "gets cloned (1: each dream its own world, chosen among all)", 4)
    keep: float = doc("share of each group's dreams cloned: those the scorer rates highest (at least one)", 0.25)
    pessimism: float = doc("dreams are chosen by the scorers' mean minus this many times their spread (the standard "
                           "deviation over the ensemble's members): a dream its scorers disagree on is unlike the play "
                           "they learned from, and a policy can learn to please one member's error (0: the mean)", 0.0)
    anchor: float = doc("share of each batch drawn from the start policy's own training data (its episodes in the "
                        "task's world where it has any), as it was cloned: real frames beside the dreams, which keep "
                        "the policy near what it learned (InstructGPT's pretraining mix); 0: none", 0.0)
    steps_per_round: int = doc("optimizer steps per round (the default, 4 of 16 dreams: two passes over the 32 kept; 8 at "
                     "--lr 1e-3 lost logs in the engine, docs/agent.md)", 4)
    batch_size: int = doc("dreams per optimizer step", 16)
    lr: float = doc("learning rate (AdamW, constant)", 3e-4)
    weight_decay: float = doc("AdamW weight decay", 0.05)
    horizon: int = doc("dreamt steps after the real context", 48)
    temperature: float = doc("sampling temperature of the policy in its dreams", 1.0)
    sample_steps: int = doc("Euler steps per generated frame", 1)
    sample_guidance: float = doc("classifier-free guidance on actions in the dreams (1: none)", 1.0)
    envs_per_batch: int = doc("dreams played side by side (the world model and the policy batch their frames)", 16)
    eval_episodes: int = doc("closed-loop episodes of the start and the improved policy at the end, on the same "
                             "world seeds (0: none). 64 are too few: one Explore run read +1.9 [-0.5, +4.3] blocks "
                             "on 64 and -2.9 [-4.1, -1.7] on 256 others (docs/agent.md)", 128)
    num_workers: int = doc("Ray actors of the closed-loop evaluation", 2)
    seed: int = doc("seed of the dreams' worlds and sampling, and of the batches", 0)
    device: str = doc("where the policy trains: auto, cpu, cuda or cuda:N (the dreams run on the CPU)", "cpu")
    threads: int = doc("torch CPU threads (0: torch's default)", 0)

    def __post_init__(self) -> None:
        from worldloom.envs.tasks import task_by_name

        try:
            task_by_name(self.task)
        except ValueError as err:
            raise ValueError(str(err)) from None
        for name, low, high, unit in IMAGINE_RANGES:
            check_range(name, getattr(self, name), low, high, unit)
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must lie in (0, 1], got {self.keep}")
        if self.pessimism < 0 or not 0 <= self.anchor < 1:
            raise ValueError(f"pessimism must be >= 0 and anchor lie in [0, 1), got {self.pessimism}, {self.anchor}")
        if self.dreams % self.group:
            raise ValueError(f"dreams must be a multiple of group, got dreams {self.dreams} and group {self.group}")
        if not 0 < self.lr <= 1 or self.weight_decay < 0:
            raise ValueError(f"lr must lie in (0, 1] and weight_decay be >= 0, got {self.lr}, {self.weight_decay}")
        if not 0 <= self.temperature <= 100 or not 0 <= self.sample_guidance <= 100:
            raise ValueError(f"temperature and sample_guidance must lie in [0, 100], got {self.temperature}, "
                             f"{self.sample_guidance}")
        check_device_name(self.device)

    @property
    def task_spec(self):
        from worldloom.envs.tasks import task_by_name

        return task_by_name(self.task)

    @property
    def kept_per_group(self) -> int:
        """Dreams cloned per group (at least one)."""
        return max(1, int(round(self.keep * self.group)))

    @property
    def kept(self) -> int:
        """Dreams cloned per round."""
        return self.kept_per_group * (self.dreams // self.group)

    def dream_config(self, policy: str, seed: int):
        """The EvalConfig that dreams `policy` as this run does (agent/dream.py reads it)."""
        from .evaluate import EvalConfig

        return EvalConfig(policy=policy, task=self.task, episodes=self.dreams, envs_per_worker=self.envs_per_batch,
                          temperature=self.temperature, in_world_model=self.in_world_model, horizon=self.horizon,
                          sample_steps=self.sample_steps, sample_guidance=self.sample_guidance, scorer=self.scorer,
                          data=self.data, scorer_steps=self.scorer_steps, scorer_members=self.scorer_members,
                          scorer_dreams=self.scorer_dreams, seed=seed, videos=0)


def dream_seed(seed: int, round_: int, index: int, what: int = 0x1AA6) -> int:
    """World seed of group `index` of round `round_` (never an evaluation episode's: agent/evaluate.py
    `episode_seed`); with another `what`, the seed of dream `index`'s sampling."""
    return int(np.random.SeedSequence([seed, what, round_, index]).generate_state(1)[0] & MAX_SEED)


def round_work(cfg: ImagineConfig, round_: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Round `round_`'s dreams: [(index, world seed)], `group` consecutive ones on each world, and the seed of each
    one's sampling (apart within a group)."""
    indices = range(round_ * cfg.dreams, (round_ + 1) * cfg.dreams)
    work = [(i, dream_seed(cfg.seed, round_, (i - round_ * cfg.dreams) // cfg.group)) for i in indices]
    return work, [dream_seed(cfg.seed, round_, i, 0x1AA7) for i in indices]


def kept_rows(rows: list[dict], group: int, kept: int, key: str = "imagined") -> list[dict]:
    """Of each `group` consecutive rows (one world's dreams), the `kept` whose `key` is highest (ties: the earlier)."""
    chosen = []
    for lo in range(0, len(rows), group):
        order = sorted(range(lo, min(lo + group, len(rows))), key=lambda i: (-rows[i][key], i))
        chosen += [rows[i] for i in order[:kept]]
    return chosen


def task_rows(pcfg, task: str, batch: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """(batch,) the task embedding's row that the policy plays `task` with in its dreams (agent/players.py
    PolicyController: the task's short name), None for a policy conditioned on no task."""
    from worldloom.envs.tasks import short_name

    if not pcfg.tasks:
        return None
    return torch.full((batch,), pcfg.task_index(short_name(task)), dtype=torch.int64, device=device)


def anchor_episodes(cfg: ImagineConfig, start: dict, pcfg) -> list:
    """The start policy's training episodes (its config's data and labels), those recorded in the task's world
    where there are any; UserError (one line) when they are gone."""
    from worldloom.envs.tasks import short_name
    from worldloom.idm.data import check_frame_size

    from .data import load_bc_episodes

    train = start.get("train", {})
    paths, labels = tuple(train.get("data") or ()), train.get("labels", "dataset")
    missing = [p for p in paths if "://" not in p and not Path(p).exists()]
    if not paths or missing:
        raise UserError(f"--anchor {cfg.anchor} replays {cfg.policy}'s training data, but "
                        f"{' '.join(missing) or 'its config names none'} is not there: restore it, or pass --anchor 0")
    episodes, _ = load_bc_episodes(paths, labels)
    check_frame_size(episodes, pcfg.height, pcfg.width, "anchor")
    own = [ep for ep in episodes if ep.env == short_name(cfg.task)]
    return own or episodes


def choice_scores(scorer, rows: list[dict], pessimism: float) -> list[float]:
    """What chooses the dreams: each row's imagined score, less `pessimism` times the spread of the scorer
    ensemble's members on its dreamt film (a single scorer has none)."""
    if not pessimism or not hasattr(scorer, "member_scores") or len(scorer.members) < 2:
        return [row["imagined"] for row in rows]
    films = np.stack([row["frames"][1] for row in rows])
    members = scorer.member_scores(films)  # (K, B)
    return list(members.mean(0) - pessimism * members.std(0))


def cloning_windows(rows: list[dict], context: int) -> dict[str, np.ndarray]:
    """The kept dreams as behaviour-cloning windows (agent/data.py's batch layout): frames (N, T, S, S, 3) uint8,
    buttons (N, T, 20) float32, camera_pos (N, T, 2) float32, mask (N, T) bool: True from the fork's action on
    (step context - 1; the actions before it only made the real context)."""
    frames = np.stack([r["dream"][0] for r in rows])
    buttons = np.stack([r["dream"][1] for r in rows]).astype(np.float32)
    camera_pos = camera_to_bin_position(np.stack([r["dream"][2] for r in rows])).astype(np.float32)
    mask = np.zeros(frames.shape[:2], bool)
    mask[:, context - 1:] = True
    return {"frames": frames, "buttons": buttons, "camera_pos": camera_pos, "mask": mask}


def check_policy(cfg: ImagineConfig) -> dict:
    """The start policy's config (UserError for a reference player or a folder that is no policy run)."""
    if is_reference(cfg.policy):
        raise UserError(f"--policy {cfg.policy} is a reference player with no weights to improve: pass a policy run "
                        "(worldloom agent train)")
    if not ckpt.has_checkpoint(cfg.policy):
        raise UserError(f"--policy {cfg.policy} holds no policy checkpoint: train one with `worldloom agent train`")
    return read_config(cfg.policy)


def wanted_config(cfg: ImagineConfig, start: dict) -> dict:
    """OUT's config.json: the start policy's, with what made these weights under "imagination"."""
    from worldloom.pretrain.checkpoint import KIND as WM_KIND

    doc_ = {k: v for k, v in start.items() if k not in ("format_version", "kind")}
    doc_["imagination"] = {"config": to_json_dict(cfg), "start": checkpoint_id(cfg.policy),
                           "world_model": ckpt.checkpoint_id(cfg.in_world_model, WM_KIND)}
    return doc_


def check_same_run(cfg: ImagineConfig) -> None:
    """UserError (one line) when OUT holds imagination training asked otherwise (a resume must be asked the same)."""
    have = ckpt.read_run_config(cfg.out, KIND).get("imagination")
    if have is None:
        raise UserError(f"--out {cfg.out} holds a policy trained otherwise (agent train): give a new folder")
    asked = to_json_dict(cfg)
    changed = [k for k, v in asked.items() if have["config"].get(k) != v and k not in ("eval_episodes", "num_workers",
                                                                                       "threads", "device")]
    if changed:
        raise UserError(f"--out {cfg.out} holds imagination training asked with other "
                        f"{', '.join('--' + k.replace('_', '-') for k in changed)}: resume it with the same settings "
                        "or give a new folder")


def main(cfg: ImagineConfig) -> dict:
    """Run (or resume) the rounds, then the closed-loop comparison; -> the summary written to OUT/imagine.json."""
    with run_lock(cfg.out, KIND, "agent imagine"):
        return _main(cfg)


def _main(cfg: ImagineConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = check_policy(cfg)  # (--out was checked by run_lock)
    if cfg.scorer:
        check_out(cfg.scorer, "task_scorer", flag="--scorer")  # a new one is trained into it (agent/dream.py)
    if Path(cfg.out).resolve() == Path(cfg.policy).resolve():
        raise UserError(f"--out {cfg.out} is the start policy itself: give a new folder (the start is evaluated beside it)")
    resumed = ckpt.has_checkpoint(cfg.out)
    if resumed:
        check_same_run(cfg)
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    rounds_done = train_rounds(cfg, start, device, resumed)
    summary = {"policy": cfg.policy, "improved": cfg.out, "task": cfg.task_spec.env_id, "rounds": rounds_done,
               "config": to_json_dict(cfg)}
    earlier = Path(cfg.out) / "imagine.json"
    if cfg.eval_episodes:
        summary["closed_loop"] = compare(cfg)
    elif earlier.is_file() and "closed_loop" in (before := json.loads(earlier.read_text())):
        summary["closed_loop"] = before["closed_loop"]  # of the same weights: asked again without an evaluation
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(Path(cfg.out) / "imagine.json", summary)
    return summary


def train_rounds(cfg: ImagineConfig, start: dict, device: torch.device, resumed: bool) -> int:
    """Dream, choose, clone, checkpoint, for each round not yet done; -> rounds done."""
    from tqdm import tqdm

    from worldloom.pretrain.checkpoint import load_world_model

    from .data import sample_windows
    from .dream import check_dream, dream_batch, dream_guidance, scorer_for, spearman
    from .train import losses

    out = Path(cfg.out)
    state = ckpt.read_state(out, KIND) if resumed else {"step": 0, "round": 0, "elapsed_s": 0.0}
    if state.get("round", 0) >= cfg.rounds:
        print(f"agent imagine: {out} has done its {cfg.rounds} rounds", file=sys.stderr)
        return state["round"]
    current = str(out) if resumed else cfg.policy
    policy, pcfg = load_policy(current, device)
    wm, wm_doc, codec = load_world_model(cfg.in_world_model)
    first = cfg.dream_config(current, cfg.seed)
    check_dream(first, wm.cfg, wm_doc, pcfg.height)
    guidance = dream_guidance(cfg.sample_guidance, wm_doc, cfg.in_world_model)
    scorer, scorer_run = scorer_for(first, pcfg.height, wm, codec, guidance)
    context = wm.cfg.num_frames - 1
    recorded = anchor_episodes(cfg, start, pcfg) if cfg.anchor else []
    if not resumed:
        out.mkdir(parents=True, exist_ok=True)
        doc_ = wanted_config(cfg, start)
        doc_["imagination"]["scorer"] = scorer_run
        ckpt.write_run_config(out, KIND, doc_)
    optimizer = adamw(policy, cfg.lr, cfg.weight_decay)
    if resumed and "param_groups" in state:
        ckpt.load_checkpoint(out, KIND, ("model",), optimizer=optimizer, device=device)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
    task_row = task_rows(pcfg, cfg.task, cfg.batch_size, device)
    log = MetricsLog(out, FIELDS, resume_step=state["round"], panels=PANELS, x_label="round")
    elapsed0, t0 = float(state.get("elapsed_s", 0.0)), time.perf_counter()
    step = state["step"]
    for r in range(state["round"], cfg.rounds):
        dcfg = cfg.dream_config(current, cfg.seed)
        work, sampling = round_work(cfg, r)
        rows = []
        with tqdm(total=len(work) * cfg.horizon, desc=f"agent imagine: round {r + 1}/{cfg.rounds}, dreaming",
                  unit="step", leave=False, dynamic_ncols=True) as bar:
            for lo in range(0, len(work), cfg.envs_per_batch):
                rows += dream_batch(dcfg, work[lo:lo + cfg.envs_per_batch], pcfg.height, wm, codec, scorer, guidance,
                                    bar, played=True, dreamer_seeds=sampling[lo:lo + cfg.envs_per_batch])
        for row, chosen_by in zip(rows, choice_scores(scorer, rows, cfg.pessimism), strict=True):
            row["chosen_by"] = chosen_by
        kept = kept_rows(rows, cfg.group, cfg.kept_per_group, "chosen_by")
        batch = cloning_windows(kept, context)
        n_real = int(round(cfg.anchor * cfg.batch_size))
        policy.train()
        total = 0.0
        for k in tqdm(range(cfg.steps_per_round), desc=f"agent imagine: round {r + 1}/{cfg.rounds}, cloning the kept dreams",
                      unit="step", leave=False, dynamic_ncols=True):
            rng = np.random.default_rng([cfg.seed, r, k])
            pick = rng.integers(0, len(kept), cfg.batch_size - n_real)
            parts = {n: batch[n][pick] for n in ("frames", "buttons", "camera_pos", "mask")}
            if n_real:
                real_batch = sample_windows(recorded, n_real, batch["frames"].shape[1], rng)
                parts = {n: np.concatenate([v, real_batch[n]]) for n, v in parts.items()}
            frames, buttons, camera_pos, mask = (torch.from_numpy(parts[n]).to(device)
                                                 for n in ("frames", "buttons", "camera_pos", "mask"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                b_loss, c_loss = losses(policy(frames, task_row), buttons, camera_pos, mask)
            loss = b_loss + c_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf"))  # the norm, nothing clipped
            # a non-finite loss or gradient stops before the update: the last round's checkpoint stays the policy
            check_finite(loss.item(), float(grad_norm), step + 1, str(out / "checkpoint") if r or resumed else None)
            optimizer.step()
            total += loss.item()
            step += 1
        policy.eval()
        imagined = np.array([row["imagined"] for row in rows])
        real = np.array([row["real"] for row in rows])
        figures = {"round": r + 1, "imagined": float(imagined.mean()),
                   "kept_imagined": float(np.mean([row["imagined"] for row in kept])),
                   "threshold": float(min(row["imagined"] for row in kept)), "real": float(real.mean()),
                   "real_rank": spearman(imagined, real), "loss": total / cfg.steps_per_round}
        elapsed = elapsed0 + time.perf_counter() - t0
        log.row(step=r + 1, **{k: round(v, 4) for k, v in figures.items() if k != "round"}, round=r + 1,
                elapsed_s=round(elapsed, 1))
        ckpt.save_checkpoint(out, KIND, {"model": policy.state_dict()},
                             {"step": step, "round": r + 1, "elapsed_s": round(elapsed, 1)}, optimizer)
        log.write(plot=True)
        current = str(out)
        print(f"agent imagine: round {r + 1}/{cfg.rounds}: dreams scored {figures['imagined']:.3g} "
              f"(the kept {cfg.kept}: {figures['kept_imagined']:.3g}); their real branches {figures['real']:.3g} "
              f"({agreement(figures['real_rank'])}); "
              f"cloning loss {figures['loss']:.3f}", file=sys.stderr)
    return cfg.rounds


def agreement(rank: float) -> str:
    """The round line's words for the scorer's Spearman against the real branches."""
    if np.isnan(rank):
        return "the real branches all scored the same, so the scorer's ranking of them is undefined"
    return f"scorer against real over the worlds, Spearman {rank:.2f}"


def compare(cfg: ImagineConfig) -> dict:
    """Closed-loop episodes of the start and the improved policy on the same world seeds: each one's eval.json
    (OUT/eval-start-<Task>, OUT/eval-<Task>) and the paired difference of their returns with its 95% interval."""
    from .evaluate import EvalConfig, bootstrap_ci, evaluate, release_workers

    name = cfg.task_spec.name
    results = {}
    try:
        for which, policy, out in (("start", cfg.policy, Path(cfg.out) / f"eval-start-{name}"),
                                   ("improved", cfg.out, Path(cfg.out) / f"eval-{name}")):
            ecfg = EvalConfig(policy=policy, task=cfg.task, episodes=cfg.eval_episodes, num_workers=cfg.num_workers,
                              seed=cfg.seed, out=str(out), videos=1)
            results[which] = evaluate(ecfg, keep_workers=True)
    finally:
        release_workers()
    start, improved = (np.array([row["return"] for row in results[w]["rows"]]) for w in ("start", "improved"))
    diff = dict(zip(("mean", "low", "high"), bootstrap_ci(improved - start, cfg.seed), strict=True))
    keys = ("policy_id", "success_rate", "return", "episodes")
    return {"start": {k: results["start"][k] for k in keys}, "improved": {k: results["improved"][k] for k in keys},
            "return_difference": diff}


def format_summary(s: dict) -> str:
    lines = [f"agent imagine: {s['rounds']} rounds on {s['task']}; the improved policy in {s['improved']}"]
    if "closed_loop" in s:
        c = s["closed_loop"]
        for which in ("start", "improved"):
            r, sr = c[which]["return"], c[which]["success_rate"]
            lines.append(f"  {which:8s} {c[which]['policy_id']}: return {r['mean']:.3g} [{r['low']:.3g}, {r['high']:.3g}], "
                         f"success {sr['mean']:.2f} [{sr['low']:.2f}, {sr['high']:.2f}] ({c[which]['episodes']} episodes)")
        d = c["return_difference"]
        lines.append(f"  improved - start, same worlds: {d['mean']:+.3g} [{d['low']:+.3g}, {d['high']:+.3g}]")
    return "\n".join(lines)


def run(cfg: ImagineConfig) -> int:
    print(format_summary(main(cfg)))
    return 0

