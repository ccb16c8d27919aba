"""`worldloom pretrain train|eval|rollout`: train the world model, score it, roll it out.

    worldloom pretrain train --data data/env --preset tiny --out runs/wm [--minutes 20] [--num-workers 2] [--device cuda]
    worldloom pretrain train --data data/env data/idm --weights 1 3 --out runs/wm
    worldloom pretrain eval --model runs/wm --data data/heldout [--idm runs/idm-b] [--sample.num-steps 1]
    worldloom pretrain rollout --model runs/wm --data data/heldout --episode ep-000 --horizon 64 --out rollout.mp4
    worldloom pretrain rollout --model runs/wm-text --prompt "walking in the desert at night" --out prompt.gif
    worldloom pretrain retrieval --model runs/wm-text --data data/env --heldout data/heldout
"""

from __future__ import annotations

import argparse
import sys

from worldloom.config import add_dataclass_args, dataclass_from_args, deprecated_flag

from .evaluate import EvalConfig
from .retrieval import RetrievalConfig
from .rollout import RolloutConfig
from .train import TrainConfig


def register(subparsers, name: str = "pretrain", help_text: str = "") -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    t = sub.add_parser("train", help="train (or resume) the world model")
    add_dataclass_args(t, TrainConfig, deprecated={"--workers": "num_workers"})
    deprecated_flag(t, "--gpu", "device", value="cuda")
    t.set_defaults(handler=run_train)
    e = sub.add_parser("eval", help="next-frame and rollout PSNR/SSIM, ΔPSNR, IDM controllability, frames/s")
    add_dataclass_args(e, EvalConfig)
    e.set_defaults(handler=run_eval)
    r = sub.add_parser("rollout", help="play a trained model on an episode's actions, beside the truth, into a video")
    add_dataclass_args(r, RolloutConfig)
    r.set_defaults(handler=run_rollout)
    q = sub.add_parser("retrieval", help="text models: do prompt-only rollouts show the biome and time of day they name?")
    add_dataclass_args(q, RetrievalConfig)
    q.set_defaults(handler=run_retrieval)
    p.set_defaults(handler=lambda args: p.print_help() or 2)
    return p


def run_train(args: argparse.Namespace) -> int:
    from .train import main

    run = main(dataclass_from_args(TrainConfig, args))
    print(f"pretrain: done; checkpoint in {run / 'checkpoint'}; curves in {run / 'curves.png'}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, to_markdown

    report = evaluate(dataclass_from_args(EvalConfig, args))
    print(to_markdown(report))
    made = ["eval.json", "eval.md", "eval.png", "strip.png", *(f"{k}.png" for k in ("counterfactual", "revisit")
                                                              if report.get(k))]
    print(f"pretrain eval: {', '.join(made[:-1])} and {made[-1]} in {report['out']}", file=sys.stderr)
    return 0


def run_rollout(args: argparse.Namespace) -> int:
    from .rollout import rollout_episode

    result = rollout_episode(dataclass_from_args(RolloutConfig, args))
    print(f"rollout: {result['horizon']} frames after {result['context']} real ones at {result['frames_per_s']:.1f} "
          f"frames/s -> {result['out']}")
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    from .retrieval import retrieval, to_markdown

    print(to_markdown(retrieval(dataclass_from_args(RetrievalConfig, args))))
    return 0
