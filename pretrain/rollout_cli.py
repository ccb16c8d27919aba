"""`worldloom rollout`: a trained world model played on an episode's actions, beside the truth.

    worldloom rollout --model runs/wm --data data/heldout --episode ep-000 --horizon 64 --out rollout.mp4
"""

from __future__ import annotations

import argparse

from worldloom.config import add_dataclass_args, dataclass_from_args

from .rollout import RolloutConfig


def register(subparsers, name: str = "rollout", help_text: str = "") -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(p, RolloutConfig)
    p.set_defaults(handler=handle)
    return p


def handle(args: argparse.Namespace) -> int:
    from .rollout import rollout_episode

    result = rollout_episode(dataclass_from_args(RolloutConfig, args))
    print(f"rollout: {result['horizon']} frames after {result['context']} real ones at {result['frames_per_s']:.1f} frames/s -> {result['out']}")
    return 0
