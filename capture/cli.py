"""`worldloom capture run`: record a dataset with Ray actors.

    worldloom capture run --env voxel --player mixture --episodes 8 --steps 200 --resolution 128 \\
        --num-workers 2 --out data/run1 [--seed 0] [--address HOST:PORT] [--strip-actions data/truth]
    worldloom capture branches --episodes 16 --context 5 --horizon 8 --resolution 64 --out data/branches.safetensors
    worldloom capture revisits --episodes 8 --context 5 --resolution 64 --out data/revisits.safetensors

Running the same command again completes only what is missing.
"""

from __future__ import annotations

import argparse
import sys

from worldloom.config import add_dataclass_args, dataclass_from_args
from worldloom.paths import redact_text, redact_uri
from worldloom.progress import counted

from .config import CaptureConfig


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add `capture run`: one flag per CaptureConfig field."""
    parser = subparsers.add_parser(name, help=help_text, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    run = sub.add_parser("run", help="record episodes (re-running completes only what is missing)",
                         description=__doc__.split("\n\n")[0] + " Re-running the same command on the same "
                         "output completes only what is missing; the config is stored in the dataset.")
    add_dataclass_args(run, CaptureConfig, deprecated={"--workers": "num_workers"})
    run.set_defaults(handler=handle)
    from .branches import BranchesConfig

    branches = sub.add_parser("branches", help="saved VoxelWorld states, each played under several action sequences "
                              "(engine truth for `pretrain eval --counterfactual`)")
    add_dataclass_args(branches, BranchesConfig)
    branches.set_defaults(handler=handle_branches)
    from .revisits import RevisitsConfig

    revisits = sub.add_parser("revisits", help="saved VoxelWorld states, each played under paths that return to where "
                              "they started (engine truth for `pretrain eval --revisit`)")
    add_dataclass_args(revisits, RevisitsConfig)
    revisits.set_defaults(handler=handle_revisits)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def handle(args: argparse.Namespace) -> int:
    from .driver import CaptureFailed, capture

    cfg = dataclass_from_args(CaptureConfig, args)
    try:
        result = capture(cfg)
    except CaptureFailed as err:
        print(f"worldloom capture: {redact_text(str(err))}", file=sys.stderr)
        return 1
    rate = result.num_frames / result.duration_s if result.duration_s else 0.0
    nodes = f" on {len(result.node_ids)} node{'s' * (len(result.node_ids) != 1)}" if result.node_ids else ""
    print(f"{redact_uri(result.path)}: recorded {counted(result.num_recorded, 'episode')} "
          f"({counted(result.num_frames, 'frame')}, "
          f"{rate:.0f} frames/s{nodes}), {result.num_skipped} were already there, "
          f"{result.num_skipped + result.num_recorded}/{result.num_episodes} done")
    if result.truth_path:
        print(f"{redact_uri(result.truth_path)}: the true actions of the same episodes (label_source env)")
    return 0


def handle_branches(args: argparse.Namespace) -> int:
    from .branches import BranchesConfig, record_branches

    cfg = dataclass_from_args(BranchesConfig, args)
    b = record_branches(cfg)
    print(f"{cfg.out}: {b.frames.shape[0]} saved states x {len(b.names)} branches ({', '.join(b.names)}) x "
          f"{b.frames.shape[2]} steps, {b.context_frames.shape[1]} context frames each")
    return 0


def handle_revisits(args: argparse.Namespace) -> int:
    from .revisits import RevisitsConfig, record_revisits

    cfg = dataclass_from_args(RevisitsConfig, args)
    b = record_revisits(cfg)
    steps = ", ".join(f"{name} {p['return']}" for name, p in b.info["paths"].items())
    print(f"{cfg.out}: {b.frames.shape[0]} saved states ({b.info['worlds_tried']} worlds tried) x {len(b.names)} paths "
          f"(steps to return: {steps}), {b.context_frames.shape[1]} context frames each")
    return 0
