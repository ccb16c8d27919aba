"""`worldloom pretrain`: train the world model, or `worldloom pretrain eval`: score it.

    worldloom pretrain --data data/env --preset tiny --out runs/wm [--minutes 20] [--workers 2] [--gpu]
    worldloom pretrain train --data data/env data/idm --weights 1 3 --out runs/wm      # same, explicit
    worldloom pretrain eval --model runs/wm --data data/heldout [--idm runs/idm-b]
"""

from __future__ import annotations

import argparse

from worldloom.config import add_dataclass_args, dataclass_from_args
from worldloom.errors import UserError

from .evaluate import EvalConfig
from .train import TrainConfig


def register(subparsers, name: str = "pretrain", help_text: str = "") -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(p, TrainConfig)
    for action in p._actions:  # checked in the handler, so that `pretrain eval ...` parses without them
        action.required = False
    sub = p.add_subparsers(dest="pretrain_command", metavar="{train,eval}")
    t = sub.add_parser("train", help="train (the default when no word is given)")
    add_dataclass_args(t, TrainConfig)
    e = sub.add_parser("eval", help="next-frame and rollout PSNR/SSIM, ΔPSNR, IDM controllability, frames/s")
    add_dataclass_args(e, EvalConfig)
    p.set_defaults(handler=handle)
    return p


def handle(args: argparse.Namespace) -> int:
    if getattr(args, "pretrain_command", None) == "eval":
        from .evaluate import evaluate, to_markdown

        report = evaluate(dataclass_from_args(EvalConfig, args))
        print(to_markdown(report))
        return 0
    missing = [f"--{n}" for n in ("data", "out") if getattr(args, n, None) is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} required: worldloom pretrain --data DIR [DIR ...] --out RUN")
    from .train import main

    run = main(dataclass_from_args(TrainConfig, args))
    print(f"pretrain: done; checkpoint in {run / 'checkpoint'}; curves in {run / 'curves.png'}")
    return 0
