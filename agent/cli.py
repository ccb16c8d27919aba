"""`worldloom agent train|eval`: behaviour cloning and closed-loop evaluation (`study` is the roof's).

    worldloom agent train --data data/truth --out runs/bc-env --minutes 5
    worldloom agent eval --policy runs/bc-env --task worldloom/CollectLogs-v0 --episodes 32 --num-workers 2
    worldloom agent eval --policy scripted:mixture --task worldloom/Explore-v0 --episodes 32
    worldloom agent eval --policy runs/bc-env --task worldloom/Explore-v0 --in-world-model runs/wm --data data/explore
    worldloom agent imagine --policy runs/bc-env --task worldloom/Explore-v0 --in-world-model runs/wm --data data/explore \
        --out runs/bc-env-imagined
    worldloom agent study --preset tiny --out runs/agent
"""

from __future__ import annotations

import argparse

from worldloom.config import add_dataclass_args, dataclass_from_args


def run_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, main

    run_dir = main(dataclass_from_args(TrainConfig, args))
    print(f"agent train: checkpoint, metrics.csv and curves.png in {run_dir}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import EvalConfig, main

    main(dataclass_from_args(EvalConfig, args))
    return 0


def run_imagine(args: argparse.Namespace) -> int:
    from .imagine import ImagineConfig, run

    return run(dataclass_from_args(ImagineConfig, args))


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add `train`, `eval` and `imagine` to the `worldloom agent` parser's verbs."""
    from .evaluate import EvalConfig
    from .imagine import ImagineConfig
    from .train import TrainConfig

    p = sub.add_parser("train", help="behaviour cloning on labeled or pseudo-labeled datasets (resumes an existing --out)")
    add_dataclass_args(p, TrainConfig)
    p.set_defaults(handler=run_train)
    p = sub.add_parser("eval", help="play a policy, random or scripted:NAME on a task: success and return with 95%% CIs, "
                                    "videos; --in-world-model plays inside a world model")
    add_dataclass_args(p, EvalConfig)
    p.set_defaults(handler=run_eval)
    p = sub.add_parser("imagine", help="imagination training: improve a policy inside a world model by cloning its best "
                                       "dreams, then play it beside the start in the real env")
    add_dataclass_args(p, ImagineConfig)
    p.set_defaults(handler=run_imagine)
