"""The agent study's report: every player on every task with 95% intervals, the goals, a CI plot.

    from worldloom.pipeline.agent_report import write_study_report
    write_study_report(cfg, paths, runner.records)      # OUT/report.html, report.md, report.json

Written with the pipeline's `Report` (one self-contained HTML page, a Markdown twin, the JSON
every number comes from).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from worldloom.config import to_json_dict
from worldloom.io import atomic_path

from .agent_study import POLICIES, SEEDED, arm_of, seed_offset
from .report import Report
from .stages import StageRecord

GOAL_RATIO = 0.9  # BC on IDM labels reaches 90% of BC on true labels (issue 15)


def _interval(d: dict) -> str:
    return f"{d['mean']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"


def _evals(records: dict[str, StageRecord]) -> dict[tuple[str, str], dict]:
    rec = records.get("eval")
    return {} if rec is None else {tuple(k.split("|")): v for k, v in rec.figures.items()}


def pool_seeds(evals: dict[tuple[str, str], dict]) -> dict[tuple[str, str], dict]:
    """`evals` with a row (bc-env, task) for each policy cloned on several seeds (its runs bc-env-s0,
    bc-env-s1, ...): the mean over the seeds, and the interval of a hierarchical bootstrap over seeds,
    then episodes (agent/evaluate.py hierarchical_bootstrap_ci); for the success rate the wider of that
    and Wilson's interval over all the seeds' episodes, which keeps its width where every episode
    failed (or succeeded) and a bootstrap collapses to a point. Episodes, steps and CPU-seconds are the
    seeds' sums; `policy_ids` lists them. Each seed keeps its own row."""
    from worldloom.agent.evaluate import hierarchical_bootstrap_ci, wilson_ci

    out = dict(evals)
    for arm in SEEDED:
        for task in sorted({t for p, t in evals if arm_of(p) == arm and p != arm}):
            runs = _seed_runs(evals, arm, task)
            success, returns = (arm_scores(evals, arm, task, m) for m in ("success_rate", "return"))  # (seeds, episodes)
            if success is None or returns is None:
                continue
            mean, low, high = hierarchical_bootstrap_ci(success)
            _, w_low, w_high = wilson_ci(success.reshape(-1))
            first = evals[(runs[0], task)]
            out[(arm, task)] = {
                **{k: first[k] for k in ("task", "conditioning", "videos") if k in first}, "player": arm,
                "seeds": len(runs), "policy_ids": [evals[(r, task)].get("policy_id") for r in runs],
                **{k: sum(evals[(r, task)].get(k, 0) for r in runs) for k in ("episodes", "steps", "cpu_s")},
                "behaviour": _mean_of([evals[(r, task)].get("behaviour") for r in runs]),
                "success_rate": {"mean": mean, "low": min(low, w_low), "high": max(high, w_high)},
                "return": dict(zip(("mean", "low", "high"), hierarchical_bootstrap_ci(returns), strict=True))}
    return out


def _mean_of(behaviours: list[dict | None]) -> dict | None:
    """The seeds' mean of each `behaviour` figure (agent/evaluate.py mean_behaviour); None unless every seed has them."""
    from worldloom.agent.evaluate import mean_behaviour

    return mean_behaviour([{"behaviour": b} for b in behaviours]) if all(behaviours) else None


def above(a: dict, b: dict) -> bool | None:
    """Whether interval `a` lies wholly above `b`; None (undetermined) where either is a point: a
    bootstrap over episodes that all scored the same sees no spread, which is not an interval."""
    if a["low"] == a["high"] or b["low"] == b["high"]:
        return None
    return a["low"] > b["high"]


def _seed_runs(evals: dict[tuple[str, str], dict], arm: str, task: str) -> list[str]:
    """The runs of `arm` cloned on several seeds (bc-env-s0, bc-env-s1, ...) evaluated on `task`, in order."""
    return sorted(p for p, t in evals if t == task and arm_of(p) == arm and p != arm)


def arm_scores(evals: dict[tuple[str, str], dict], arm: str, task: str, metric: str) -> np.ndarray | None:
    """Per-episode scores (runs, episodes) of `arm` (bc-env, bc-idm) on `task`: one row per seed
    (bc-env-s0, bc-env-s1, ...), or the one run's own; None where an evaluation lacks them (older
    records) or the seeds played different numbers of episodes."""
    key = "success" if metric == "success_rate" else "return"
    runs = _seed_runs(evals, arm, task) or [arm]
    scores = [evals.get((r, task), {}).get("per_episode") for r in runs]
    if any(s is None for s in scores) or len({len(s[key]) for s in scores}) != 1:
        return None
    return np.array([s[key] for s in scores], np.float64)


def goal_checks(evals: dict[tuple[str, str], dict], tasks: tuple[str, ...]) -> list[dict]:
    """Per task and metric: BC-idm / BC-env with its 95% interval (a hierarchical bootstrap over each
    arm's seeds, then episodes: agent/evaluate.py hierarchical_ratio_ci; null without per-episode
    scores), and whether each BC's interval lies above random's (None where one of them is a point:
    `above`)."""
    from worldloom.agent.evaluate import hierarchical_ratio_ci

    rows = []
    for task in tasks:
        for metric in ("success_rate", "return"):
            env, idm, rnd = (evals.get((player, task), {}).get(metric) for player in ("bc-env", "bc-idm", "random"))
            if env is None or idm is None or rnd is None:
                continue
            # undefined (None, JSON null) when BC on true labels never scores: no goal to reach then
            ratio = idm["mean"] / env["mean"] if env["mean"] > 0 else None
            scores = arm_scores(evals, "bc-idm", task, metric), arm_scores(evals, "bc-env", task, metric)
            interval = hierarchical_ratio_ci(*scores) if ratio is not None and all(x is not None for x in scores) else None
            rows.append({"task": task, "metric": metric, "bc_env": env["mean"], "bc_idm": idm["mean"],
                         "random": rnd["mean"], "idm_over_env": ratio,
                         "ratio_low": None if interval is None else interval[1],
                         "ratio_high": None if interval is None else interval[2],
                         "ratio_met": ratio is not None and ratio >= GOAL_RATIO,
                         "env_above_random": above(env, rnd), "idm_above_random": above(idm, rnd)})
    return rows


def ci_plot(evals: dict[tuple[str, str], dict], players: list[str], tasks: tuple[str, ...], out_png: Path) -> Path:
    """Success rate and mean return of every player on every task with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(tasks), figsize=(3.2 * len(tasks), 5.4), squeeze=False)
    for j, task in enumerate(tasks):
        for i, metric in enumerate(("success_rate", "return")):
            ax = axes[i][j]
            for k, player in enumerate(players):
                d = evals.get((player, task), {}).get(metric)
                if d is None:
                    continue
                ax.errorbar([k], [d["mean"]], yerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o", capsize=4)
            ax.set_xticks(range(len(players)), players, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{task}: {'success' if i == 0 else 'return'}", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out_png


def _players(evals: dict[tuple[str, str], dict]) -> list[str]:
    """Rows in order: each policy, its seeds after it, then the references."""
    order = ["bc-env", "bc-idm", "bc-noop", "random", "scripted:mixture", "scripted:expert"]
    seen = {p for p, _ in evals}
    rank = {p: k for k, p in enumerate(order)}
    return sorted(seen, key=lambda p: (rank.get(arm_of(p), len(order)), arm_of(p), p != arm_of(p), p))


def _cost(records: dict[str, StageRecord]) -> tuple[list[list[Any]], float]:
    rows = [[name, round(r.wall_s, 1), round(r.core_s, 1)] for name, r in records.items()]
    total = sum(r.core_s for r in records.values())
    return rows + [["total", round(sum(r.wall_s for r in records.values()), 1), round(total, 1)]], total


def write_study_report(cfg, paths: dict[str, Any], records: dict[str, StageRecord],
                       dropped: dict[str, list[str]] | None = None) -> Path:
    """report.html / report.md / report.json in the study's run directory; `dropped`: the folders the run
    directory holds of tasks this run does not study (agent_study.dropped_task_folders), named in its first section."""
    from .agent_study import dropped_words

    tasks = cfg.task_names
    runs = _evals(records)
    evals = pool_seeds(runs)
    players = _players(evals)
    seeds = max((e.get("seeds", 1) for e in evals.values()), default=1)
    report = Report(f"WorldLoom agent study: preset {cfg.preset}")
    report.data.update({"config": to_json_dict(cfg), "sizes": to_json_dict(cfg.resolved_sizes)})
    if dropped:
        report.data["not_in_this_run"] = dropped
        report.section("Tasks of an earlier run", f"This report shows {', '.join(tasks)} alone; {dropped_words(dropped)}.")
    report.data["eval"] = {f"{p}|{t}": {k: x for k, x in v.items() if k != "per_episode"} for (p, t), v in evals.items()}
    told = sorted({e.get("conditioning") for (p, _), e in evals.items() if arm_of(p) in POLICIES} - {None})
    pooled = (f" bc-env and bc-idm were each cloned on {seeds} seeds: their row is the mean over the seeds with "
              f"a hierarchical bootstrap interval (seeds, then episodes; for success the wider of that and Wilson's "
              f"over all their episodes), and rows -s0 .. -s{seeds - 1} are each seed's own." if seeds > 1 else "")
    how = {"task": "each plays with the embedding of the task it plays (task-conditioned BC, docs/agent.md)",
           "unconditioned": "one policy for every task, not told the task", "none": "a task it was not trained on "
           "plays with the no-task embedding"}
    for metric, title in (("success_rate", "Success rate"), ("return", "Mean return")):
        s = report.section(f"{title} with 95% intervals",
                           "Each cell: mean [low, high] over the episodes (one world seed each, the same seeds for "
                           "every player). bc-env, bc-idm and bc-noop were cloned from the same footage with the "
                           "true actions, the IDM's pseudo-labels and no-op labels"
                           + (f"; {'; '.join(how[t] for t in told)}." if told else ".") + pooled)
        rows = [[p] + [_interval(evals[(p, t)][metric]) if (p, t) in evals else "" for t in tasks] for p in players]
        keys = [[""] + [f"eval.{p}|{t}.{metric}.mean" if (p, t) in evals else "" for t in tasks] for p in players]
        s.table(["player", *tasks], rows, keys)
    goals = goal_checks(evals, tasks)
    report.data["goals"] = goals
    s = report.section("Goals", f"BC on IDM pseudo-labels at least {GOAL_RATIO:.0%} of BC on true labels on every "
                                "task metric, and both above random with 95% intervals that do not overlap "
                                "(success: Wilson's interval; return: percentile bootstrap; n/a where a return "
                                "interval is a point because every episode scored the same)."
                                + (f" bc-env and bc-idm: over their {seeds} seeds (above)." if seeds > 1 else "")
                                + " The ratio's interval resamples each arm's seeds, then their episodes: where it "
                                  f"spans {GOAL_RATIO:.0%}, this many seeds do not settle the verdict (one seed moved "
                                  "MineStone's return by 2 blocks on the same labels; docs/agent.md).")
    s.table(["task", "metric", "bc-env", "bc-idm", "random", "bc-idm / bc-env", "its 95% interval", ">= 90%",
             "env > random", "idm > random"],
            [[g["task"], g["metric"], round(g["bc_env"], 3), round(g["bc_idm"], 3), round(g["random"], 3),
              "n/a" if g["idm_over_env"] is None else round(g["idm_over_env"], 3),
              "n/a" if g["ratio_low"] is None else f"[{g['ratio_low']:.2f}, {g['ratio_high']:.2f}]", g["ratio_met"],
              *("n/a" if g[k] is None else g[k] for k in ("env_above_random", "idm_above_random"))] for g in goals])
    if evals:
        s.image(ci_plot(evals, players, tasks, paths["figures"] / "ci.png"), "success and return, 95% intervals")
    _behaviour_section(report, evals, players, tasks)
    if cfg.world_model:  # a dream stage recorded by an earlier run with --world-model is not this study's
        _dream_section(report, records)
    s = report.section("Training", "Behaviour cloning (and the IDM that made the pseudo-labels): loss and validation "
                                   "scores of the most likely action.")
    for name, run in paths["policies"].items():
        s.image(Path(run) / "curves.png", name)
    s.image(Path(paths["idm"]) / "curves.png", "IDM")
    if "label" in records:
        report.data["label"] = records["label"].figures
    s = report.section("Videos", "The action drawn under each frame: bc-env and bc-idm (their first seed) on the first "
                                 "task here; below, where the first episode of each player on each task is.")
    videos = [(p, t, v) for (p, t), e in runs.items() for v in e.get("videos", [])[:1]]
    for p, t, v in videos:
        if arm_of(p) in SEEDED and seed_offset(p) == 0 and t == tasks[0]:
            s.video(v, f"{p} on {t}")
    s.code("\n".join(f"{p:<18} {t:<14} {os.path.relpath(v, cfg.out)}" for p, t, v in videos) or "(none)")
    rows, total = _cost(records)
    report.data["cost"] = {"core_s": round(total, 1), "load_average": os.getloadavg()}
    s = report.section("Cost", f"Wall time and CPU-seconds (this process and every process below it, Ray actors "
                               f"included) per stage; load average when the report was written: "
                               f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores.")
    s.table(["stage", "wall s", "CPU s"], rows)
    report.section("Config").code(json.dumps({"study": report.data["config"], "sizes": report.data["sizes"]}, indent=2))
    return report.write(Path(cfg.out).resolve())


def _behaviour_section(report: Report, evals: dict[tuple[str, str], dict], players: list[str],
                       tasks: tuple[str, ...]) -> None:
    """What each player did, from the engine's state: why a policy scores what it does (a cloned policy that
    looks down less than its peer has stone in reach less often). Absent for evaluations made before 2026-12-05."""
    from worldloom.agent.evaluate import BEHAVIOUR, LOOKING_DOWN_DEG

    if not any(e.get("behaviour") for e in evals.values()):
        return

    def cell(p: str, t: str) -> str:
        b = evals.get((p, t), {}).get("behaviour")
        if not b:
            return ""
        aim = "" if b.get("aim") is None else f" · aim {b['aim']:.2f}"
        return f"down {b['looking_down']:.2f}{aim} · {b['pitch_mean']:.0f}° · {b['walked']:.0f} m"

    s = report.section("Behaviour", f"Per player and task, the episodes' mean of: the share of steps looking down "
                                    f"more than {LOOKING_DOWN_DEG:.0f} degrees (down), the share with one of the "
                                    f"task's goal blocks in the crosshair within reach (aim; none on Explore), the mean "
                                    f"pitch (positive looks down) and the blocks walked; from the engine's state after "
                                    f"every step, not from the frames (eval.json's rows: "
                                    f"{', '.join(BEHAVIOUR)}). Pooled rows: the mean over the seeds.")
    s.table(["player", *tasks], [[p] + [cell(p, t) for t in tasks] for p in players])


def dream_agreement(records: dict[str, StageRecord]) -> dict[str, dict]:
    """The dreams' rank agreement (agent/dream.py rank_agreement) with the closed-loop returns of this run's eval
    stage, made here, not by the dream stage: the dreams stay done when only the evaluations change (another
    --sizes.eval-episodes), and their agreement is then with the new evaluations, not the ones before."""
    from worldloom.agent.dream import rank_agreement

    closed_loop = records.get("eval")
    return rank_agreement(records["dream"].figures["players"], closed_loop.figures if closed_loop else None)


def _dream_section(report: Report, records: dict[str, StageRecord]) -> None:
    rec = records.get("dream")
    if rec is None:
        return
    agreement = dream_agreement(records)
    report.data["dream"] = {**rec.figures, "agreement": agreement}
    s = report.section("Dreaming: imagined against real scores",
                       "Each player played inside the world model from a context of real frames. The imagined score "
                       "is the task's scorer "
                       "(agent/dream.py): for Explore, whose metric is a distance, an odometer (agent/odometry.py: the "
                       "distance from the dream's first frame to its last, the moves read from pairs of frames 4 steps "
                       "apart); for CollectLogs and MineStone a mining classifier (agent/mining.py: the probability that the "
                       "player is mining the task's blocks in a frame, learned from the engine's state, averaged over "
                       "the generated frames); for FindWater a critic (a value head trained on real play of the task to "
                       "predict the discounted return to come from a frame) averaged over the generated frames. Spearman's rank "
                       "correlation of imagined scores over the players against their real return at the dream's horizon "
                       "and against their closed-loop return (the tables above; in brackets the middle 95% of the figure "
                       "over redraws of each player's dreamt episodes: how far new dreams could move it, below the "
                       "figure where it is at its ceiling), per task and the mean over the tasks; "
                       "the last two columns rank by the same scorer on the real branch's frames (what a perfect world "
                       "model would give) and by the real return at the dream's horizon (what a perfect world model and "
                       "a perfect scorer would give at this horizon). The closed-loop figure by dreams a player is the "
                       "mean over disjoint sets of that many dreams: one that still rises from a quarter of the dreams "
                       "to all of them is held down by the dreams' noise, and more dreams (`--sizes.dream-episodes`) "
                       "would raise it.")

    def rho(a: dict, name: str) -> float | str:
        v = a.get(name)
        return round(v, 3) if v is not None and v == v else "n/a"

    def rho_ci(a: dict) -> float | str:  # with the middle 95% of its redraws over the dreamt episodes
        ci = a.get("spearman_closed_loop_spread95")
        return f"{rho(a, 'spearman_closed_loop')} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else rho(a, "spearman_closed_loop")

    def by_dreams(a: dict) -> str:  # the closed-loop figure with all, half and a quarter of the dreams
        counts = a.get("spearman_closed_loop_by_dreams") or {}
        return " / ".join(f"{v:.2f} ({n})" if v == v else f"n/a ({n})" for n, v in counts.items()) or "n/a"

    s.table(["task", "players", "Spearman, real at the horizon", "Spearman, closed-loop return [95% of redraws]",
             "closed-loop, by dreams a player (all / half / quarter)", "scorer on real frames, closed-loop",
             "real at the horizon, closed-loop"],
            [[t, a["num_players"], rho(a, "spearman"), rho_ci(a), by_dreams(a), rho(a, "critic_closed_loop"),
              rho(a, "horizon_closed_loop")] for t, a in agreement.items()])

    players = rec.figures["players"]
    s.table(["player", "task", "imagined", "scorer on real frames", "real (same horizon)"],
            [[key.split("|")[0], v["task"], _interval(v["imagined"]),
              _interval(v["critic_real"]) if "critic_real" in v else "n/a", _interval(v["real"])]  # the main tables' names
             for key, v in players.items()])
