"""The `worldloom` command: `worldloom <stage> <verb>`, one vocabulary of flags.

    worldloom --help
    worldloom envs show --env voxel --seeds 0-7 --out grid.png
    worldloom capture run --env voxel --episodes 8 --steps 200 --out data/labeled
    worldloom dataset inspect data/labeled
    worldloom idm train --data data/labeled --preset tiny --out runs/idm
    worldloom pretrain train --data data/labeled --preset tiny --out runs/wm
    worldloom pipeline run --preset tiny --out runs/demo

Each stage module exposes `register(subparsers, name, help)`; its handlers return an exit code.
A `UserError` (bad input) prints as one line on stderr with exit code 2, never a traceback.
Spellings of WorldLoom 0.1 (`worldloom capture --...`, `worldloom pretrain --...`,
`worldloom rollout`, `worldloom pipeline --...`, `--workers`, `--gpu`, `--steps` for optimizer
steps) still work in this release and print one deprecation line each.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from worldloom.errors import UserError
from worldloom.paths import redact_text

# (subcommand, module with register(subparsers, name, help), one-line help)
STAGES = (
    ("envs", "worldloom.envs.cli", "look at worlds: contact sheets and recorded plays"),
    ("capture", "worldloom.capture.cli", "play envs with Ray actors and record datasets"),
    ("dataset", "worldloom.datasets.cli", "inspect, validate, export, merge and split datasets"),
    ("idm", "worldloom.idm.cli", "inverse dynamics model: train, eval, label, scaling"),
    ("pretrain", "worldloom.pretrain.cli", "the video world model: train, eval, rollout"),
    ("agent", "worldloom.pipeline.agent_study", "agents: behaviour cloning, closed-loop evaluation, dreaming, the VPT study"),
    ("pipeline", "worldloom.pipeline.job", "the whole loop: capture, IDM, label, pretrain, report"),
)

# The flags every stage spells the same way, and what each means (tests/test_cli.py holds them).
VOCABULARY = {
    "--data": "datasets (or footage) a command reads",
    "--out": "what a command writes: a dataset, a run directory, a file",
    "--num-workers": "Ray actors or Ray Train workers",
    "--max-steps": "optimizer steps of a training run",
    "--steps": "env steps per episode (capture)",
    "--device": "where a model runs: auto, cpu, cuda, cuda:N",
    "--resolution": "frame height and width in pixels",
    "--minutes": "a training run's time budget",
    "--seed": "the seed of everything random in a command",
    "--model": "a trained run directory to read (eval, label, rollout); in training, --model.* sets the model's shape",
    "--preset": "a named set of sizes",
}
# Old spelling -> the vocabulary word (accepted for one release, hidden from --help).
DEPRECATED_FLAGS = {"--workers": "--num-workers", "--gpu": "--device cuda", "--ckpt-every": "--checkpoint-every"}
# Commands that pick up where they stopped when run again with the same arguments: Ctrl-C says so.
RESUMABLE = {("capture", "run"), ("dataset", "ingest"), ("idm", "train"), ("idm", "label"), ("pretrain", "train"),
             ("agent", "train"), ("pipeline", "run")}
# A stage given flags without a verb (WorldLoom 0.1's grammar) -> the verb it meant.
DEFAULT_VERBS = {"capture": "run", "pipeline": "run", "pretrain": "train"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, that stage's flags in full and the others by name (a command
    imports just its own stage: `worldloom dataset inspect` never loads torch)."""
    parser = argparse.ArgumentParser(prog="worldloom", description="Game rendering into training data for world models.")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, module_name, help_text in STAGES:
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        importlib.import_module(module_name).register(sub, name, help_text)  # a broken stage fails loudly
    return parser


def upgrade_argv(argv: list[str]) -> list[str]:
    """WorldLoom 0.1's spellings in the new grammar, with one deprecation line on stderr."""
    if argv[:1] == ["rollout"]:
        print("worldloom: `worldloom rollout` is deprecated and goes in the next release; use "
              "`worldloom pretrain rollout`", file=sys.stderr)
        return ["pretrain", "rollout", *argv[1:]]
    if len(argv) >= 2 and argv[0] in DEFAULT_VERBS and argv[1].startswith("--") and argv[1] != "--help":
        verb = DEFAULT_VERBS[argv[0]]
        print(f"worldloom: `worldloom {argv[0]} --...` is deprecated and goes in the next release; use "
              f"`worldloom {argv[0]} {verb} --...`", file=sys.stderr)
        return [argv[0], verb, *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = upgrade_argv(list(sys.argv[1:] if argv is None else argv))
    stage = argv[0] if argv and argv[0] in {name for name, _, _ in STAGES} else None
    parser = build_parser(only=stage)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.stage is None else 2
    try:
        return int(args.handler(args) or 0)
    except UserError as err:
        print(f"worldloom {args.stage}: error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # a trainer's says what it saved (worldloom.training.CtrlC)
        words = redact_text(str(err))
        early = words.startswith("before")  # CtrlC.BEFORE_FIRST_STEP: a trainer has nothing to resume from
        saved = f" {words}" if early else f"; {words}" if words else ""
        resumable = tuple(argv[:2]) in RESUMABLE and not (early and argv[1:2] == ["train"])
        resume = "; re-run the same command to resume" if resumable else ""
        print(f"worldloom {args.stage}: interrupted{saved}{resume}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `worldloom dataset inspect ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
