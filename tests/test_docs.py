"""Docs that describe the code: every `worldloom ...` command in README.md and docs/*.md parses
with today's grammar, every relative link resolves, no doc points outside the repository, and the
README's walkthrough runs top to bottom on a fresh checkout (at a smaller size)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WORLDLOOM = str(Path(sys.executable).parent / "worldloom")


def commands(text: str) -> list[str]:
    """`worldloom ...` command lines of a markdown text's code blocks and inline code, with
    backslash continuations joined and comments dropped."""
    found = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("worldloom "):
                found.append(line)
    for inline in re.findall(r"`(worldloom [^`]+)`", text):
        found.append(" ".join(inline.split()))  # inline code may wrap over lines
    return found


def _lenient_parser():
    """Today's parser with no option required: prose names commands without all their flags."""
    from worldloom.pipeline.cli import build_parser

    parser = build_parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings:
                action.required = False
    return parser


def _parses(line: str, parser) -> str | None:
    """None if the line parses with today's parser; else why not."""
    if "..." in line or "<" in line or " / " in line:
        return None  # a pattern (`worldloom <stage> <verb>`, `--...`, `show / play`), not a command
    argv = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))[1:]
    try:
        parser.parse_args(argv)
    except SystemExit as exit_:
        return None if exit_.code == 0 else "does not parse"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_in_the_docs_parses(doc, capsys):
    bad, parser = [], _lenient_parser()
    for line in commands(doc.read_text()):
        if _parses(line, parser):
            bad.append(line)
        if "deprecated" in capsys.readouterr().err:
            bad.append(f"{line}  (an old spelling)")
    assert not bad, f"{doc.name}: commands that do not parse with today's CLI:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve_and_nothing_points_outside_the_repo(doc):
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.name}: link to {target} does not resolve"
        assert ROOT in path.parents or path == ROOT, f"{doc.name}: link to {target} leaves the repository"
    for outside in ("/tmp/", "/work/", "../shared", "scratch/"):
        assert outside not in text, f"{doc.name} mentions {outside!r}: docs name no file outside the repository"


# The README walkthrough at test size: the same commands in the same order, sizes cut down.
SMALLER = [(r"--episodes \d+", "--episodes 2"), (r"--steps 400", "--steps 48"), (r"--seeds 0-7", "--seeds 0-1"),
           (r"--minutes \d+", "--max-steps 2 --batch-size 2"), (r"--horizon 32", "--horizon 3"), (r"--num-workers 2", "--num-workers 1")]
EXTRA = {"idm train": ["--preset", "micro", "--warmup-steps", "1", "--val-windows", "2"],
         "pretrain train": ["--warmup-steps", "1"],
         "pretrain eval": ["--horizon", "2", "--num-clips", "2", "--next-frame-positions", "1", "--stability-horizon", "4"]}


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The command line"):text.index("## Presets of the main job")]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [line.split(" #")[0].strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    return [line for line in lines if line]


@pytest.fixture
def ray_head():
    """A Ray head on this machine (`ray start --head`, 2 CPUs) for the walkthrough's commands to join
    through RAY_ADDRESS, Ray's convention, as a user with a cluster up would: one start-up instead of
    one per command (each local start costs 15-20 s here; the commands' own local starts are tested
    in test_capture and test_trust). Yields (address, the driver environment); torn down after."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_capture import kill_tree_matching
    from test_capture_cluster import _free_port, _ray_start

    ray_tmp, port = tempfile.mkdtemp(prefix="wlw", dir="/tmp"), _free_port()  # short: Ray's socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # Ray 2.60's `ray start` turns token auth on
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        _ray_start(["--head", f"--port={port}", f"--temp-dir={ray_tmp}", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"], ray_tmp)
        yield f"127.0.0.1:{port}", {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old
        kill_tree_matching(ray_tmp)
        kill_tree_matching(f":{port}")
        shutil.rmtree(ray_tmp, ignore_errors=True)


def drivers_seen(address: str, env: dict) -> int:
    """How many drivers (jobs) the cluster at `address` has had, asked from a process of its own."""
    script = f"import ray; ray.init(address={address!r}); from ray._private import state; print(len(state.jobs()))"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.strip().splitlines()[-1]) - 1  # less the asking one


@pytest.mark.timeout(900)
def test_readme_walkthrough_runs_top_to_bottom(tmp_path, ray_head):
    lines = walkthrough()
    assert lines[0] == "source .venv/bin/activate", "the walkthrough starts by activating the environment"
    address, ray_env = ray_head
    env = {**ray_env, "PATH": f"{Path(WORLDLOOM).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in lines[1:]:
        for pattern, repl in SMALLER:
            line = re.sub(pattern, repl, line)
        argv = shlex.split(line)
        assert argv[0] == "worldloom", line
        extra = next((v for k, v in EXTRA.items() if " ".join(argv[1:3]) == k), [])
        if "--preset" in extra and "--preset" in argv:
            i = argv.index("--preset")
            del argv[i:i + 2]
        proc = subprocess.run([WORLDLOOM, *argv[1:], *extra], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "runs/walk/rollout.mp4").stat().st_size > 0
    assert (tmp_path / "runs/walk/episode.mp4").stat().st_size > 0
    # The three recordings joined the cluster named by RAY_ADDRESS instead of starting their own.
    assert drivers_seen(address, ray_env) >= sum(line.startswith("worldloom capture run") for line in lines)
