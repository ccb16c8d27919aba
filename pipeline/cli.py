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
import errno
import importlib
import re
import sys
from collections.abc import Iterator

from worldloom.errors import UserError
from worldloom.interrupts import exit_code, quiet_until_exit, signal_taken, signals_as_interrupts
from worldloom.paths import redact_text

# This module's own imports stay few and small: a Ctrl-C before main() starts (about 0.1 s after
# the command does) is Python's traceback; from main() on it is one line (difflib and
# worldloom.training, 0.1 s more, load where they are used).

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


class Parser(argparse.ArgumentParser):
    """argparse, where the (sub)command given an unknown flag refuses it itself: its own usage, the
    flag, and the nearest valid spelling (every subcommand's parser is of this class: argparse
    makes a subparser of its parent's class)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(unknown_flag_message(extras, self._option_string_actions))
        return namespace, extras


def unknown_flag_message(extras: list[str], actions: dict[str, argparse.Action]) -> str:
    """`unrecognized argument --batchsize; did you mean --batch-size?`: the first unknown flag in
    `extras` and the closest flag in `actions` (hidden, deprecated spellings never suggested)."""
    import difflib

    flag = next((word for word in extras if word.startswith("-")), None)
    if flag is None:
        return f"unrecognized arguments: {' '.join(extras)}"
    shown = [name for name, action in actions.items() if action.help != argparse.SUPPRESS]
    near = difflib.get_close_matches(flag.split("=", 1)[0], shown, n=1, cutoff=0.6)
    return f"unrecognized argument {flag}" + (f"; did you mean {near[0]}?" if near else "; see the usage above")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, that stage's flags in full and the others by name (a command
    imports just its own stage: `worldloom dataset inspect` never loads torch; `only=""`: every
    stage by name, `worldloom --help` in a quarter of a second instead of five)."""
    parser = Parser(prog="worldloom", description="Game rendering into training data for world models.")
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
    """Run one command; `argv` None: this process's own (the `worldloom` script, which exits next)."""
    if argv is None:
        from worldloom.progress import for_log_files

        for_log_files()  # a log file gets a bar's progress as lines, every 30 s
    code = run_command(list(sys.argv[1:] if argv is None else argv))
    if argv is None and code > 128:  # interrupted: nothing may print after the one line
        quiet_until_exit()
    return code


def run_command(argv: list[str]) -> int:
    with signals_as_interrupts():  # from the first line: Ctrl-C while the stage's modules load (seconds for torch) is one line too
        try:
            argv = upgrade_argv(argv)
            stage = argv[0] if argv and argv[0] in {name for name, _, _ in STAGES} else ""
            parser = build_parser(only=stage)  # no stage named (`worldloom --help`): the stages by name, nothing imported
            args = parser.parse_args(argv)
            if not getattr(args, "handler", None):
                parser.print_help()
                return 0 if args.stage is None else 2
            code = int(args.handler(args) or 0)
            if not signal_taken():
                return code
            raise KeyboardInterrupt  # a library dropped the interrupt and went on: the command was still stopped
        except BrokenPipeError:  # `worldloom dataset inspect ... | head`: the reader left, not an error
            sys.stderr.close()
            return 0
        except (Exception, KeyboardInterrupt) as err:
            ended = error_line(argv, err)
            if ended is None:
                raise
            print(ended[0], file=sys.stderr)
            return ended[1]


def error_line(argv: list[str], err: BaseException) -> tuple[str, int] | None:
    """The one line and the exit code for an exception that ended a command, None for a bug (its
    traceback shows): after a signal, whatever a library turned the interrupt into is the
    interruption (worldloom.interrupts); a UserError is bad input, exit code 2; a full disk, 1."""
    if isinstance(err, KeyboardInterrupt):  # a trainer's says what it saved (worldloom.training.CtrlC)
        return interrupted_line(argv, err), exit_code(err)
    if signal_taken():
        return interrupted_line(argv, KeyboardInterrupt()), exit_code(err)
    if isinstance(err, UserError):
        return f"worldloom {argv[0]}: error: {redact_text(str(err))}", 2
    full = full_disk(err)
    if full is not None:  # the machine's state, not a bug: no traceback (under Ray it comes wrapped)
        where = f" writing {full}" if full else ""
        resume = "re-run the same command to resume" if tuple(argv[:2]) in RESUMABLE else "run the command again"
        return f"worldloom {argv[0]}: error: no space left on the device{redact_text(where)}; free some space, then {resume}", 1
    read_only = failed_with(err, (errno.EROFS,))
    if read_only is not None:  # where the user asked it to write: their choice, exit code 2
        from worldloom.io import final_name

        where = f" {final_name(read_only)}" if read_only else ""
        return (f"worldloom {argv[0]}: error: cannot write{redact_text(where)}: the disk is read-only; give an output on "
                "a disk this user can write"), 2
    return None


def error_chain(err: BaseException) -> Iterator[BaseException]:
    """`err` and every error it wraps (its causes and contexts, a Ray task error's `cause`), each once."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]


def failed_with(err: BaseException, errnos: tuple[int, ...]) -> str | None:
    """The file an OSError of one of `errnos` names ("" where unnamed) if `err` is or wraps one (`error_chain`);
    None otherwise."""
    for e in error_chain(err):
        if isinstance(e, OSError) and e.errno in errnos:
            return str(e.filename or "")
    return None


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# the same as text: Python's OSError, or Rust's io::Error (safetensors, pyarrow's Rust readers), as a
# library or Ray passes on a worker's error
DISK_FULL_TEXT = re.compile(rf"\[Errno ({errno.ENOSPC}|{errno.EDQUOT})\]|\(os error ({errno.ENOSPC}|{errno.EDQUOT})\)"
                            r"|No space left on device|Disk quota exceeded")


def full_disk(err: BaseException) -> str | None:
    """The file a full disk (or quota) stopped a write to ("" where unnamed) if that is what `err` is
    or wraps (its causes and contexts, a Ray task error's `cause`, or the text of an error a library
    or Ray re-raised as its own); None otherwise."""
    said = False
    for e in error_chain(err):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return str(e.filename or "")
        said = said or bool(DISK_FULL_TEXT.search(str(e)))
    return "" if said else None


def interrupted_line(argv: list[str], err: KeyboardInterrupt) -> str:
    """`worldloom idm: interrupted; checkpoint saved at step 37 (RUN/checkpoint); re-run the same
    command to resume`: what was saved (a trainer's words) and whether running again resumes."""
    stage = argv[0] if argv and argv[0] in {name for name, _, _ in STAGES} else None
    words = redact_text(str(err))
    early = words.startswith("before")  # CtrlC.BEFORE_FIRST_STEP: a trainer has nothing to resume from
    saved = f" {words}" if early else f"; {words}" if words else ""
    resumable = tuple(argv[:2]) in RESUMABLE and not (early and argv[1:2] == ["train"])
    resume = "; re-run the same command to resume" if resumable else ""
    return f"worldloom{f' {stage}' if stage else ''}: interrupted{saved}{resume}"


if __name__ == "__main__":
    sys.exit(main())
