"""The `worldloom` command: one subcommand per stage.

    worldloom --help
    worldloom dataset inspect DIR
    worldloom envs show --env voxel --seeds 0-7 --out grid.png
    worldloom capture --env voxel --player mixture --episodes 8 --steps 200 --out data/
    worldloom idm train --data data/ --preset tiny --out runs/idm
    worldloom pretrain --data data/ --preset tiny --out runs/wm
    worldloom pipeline --preset tiny --out runs/demo

Each stage module exposes `register(subparsers)`; its handler returns an exit code. A
`UserError` (bad input) prints as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from worldloom.errors import UserError
from worldloom.paths import redact_text

# (subcommand, module with register(subparsers), one-line help). Stages register as they land.
STAGES = (
    ("dataset", "worldloom.datasets.cli", "inspect, validate, export, merge and split datasets"),
    ("envs", "worldloom.envs.cli", "look at worlds: contact sheets and recorded plays"),
    ("capture", "worldloom.capture.cli", "play envs with Ray actors and record datasets"),
    ("idm", "worldloom.idm.cli", "inverse dynamics model: train, eval, label"),
    ("pretrain", "worldloom.pretrain.cli", "train and evaluate the video world model"),
    ("rollout", "worldloom.pretrain.rollout_cli", "roll the world model out beside the truth"),
    ("pipeline", "worldloom.pipeline.job", "the whole loop: capture, IDM, label, pretrain, report"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldloom", description="Game rendering into training data for world models.")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, module_name, help_text in STAGES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and err.name.startswith("worldloom"):
                continue  # that stage has not landed yet
            raise
        module.register(sub, name, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.stage is None else 2
    try:
        return int(args.handler(args) or 0)
    except UserError as err:
        print(f"worldloom {args.stage}: error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"worldloom {args.stage}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
