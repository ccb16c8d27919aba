"""Trust boundaries (issue 21): what a dataset or run from someone else can make WorldLoom do.

- Paths read from files (dataset.json shards, episodes.parquet `shard`, an IDM run's state.json,
  the pipeline's pipeline.json) stay inside their root: `..`, absolute, drive, URL-encoded and
  symlinked escapes are a one-line error before a byte outside is read (a sentinel file's atime).
- Hostile but well-formed files: a seeded fuzz of dataset.json and episodes.parquet (each case a
  one-line error, exit 2, no traceback) and of a run's JSON (each case refused so, or a value
  nothing loads: the loaded model unchanged); FUZZ_CASES cases in all, each time-bounded.
- Credentials in a URI never reach a file, a log or the terminal (a capture to a local S3 server).
- A local Ray session listens on loopback only (every socket of every Ray process).

Real components throughout: real datasets, real micro IDM and tiny world-model runs trained for
two steps, the real CLI (in-process through `worldloom.pipeline.cli.main`, a few in a subprocess),
a real Ray cluster, moto's S3 server.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest.mock
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import pixel_frames, random_actions

from worldloom.datasets import Dataset, DatasetWriter
from worldloom.errors import UserError
from worldloom.pipeline import cli

SENTINEL_ATIME = 1_000_000.0  # older than the mtime, so any read moves it (relatime mounts too)


_parser = functools.cache(cli.build_parser)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `worldloom ARGV` run in this process by `cli.main`. The
    parser is built once and reused (building it is 0.1 s, most of a refused case's time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            unittest.mock.patch.object(cli, "build_parser", _parser):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


# tqdm's bar ("idm label:  33%|###3      | 1/3 [00:00<00:00,  6.37item/s]"), redrawn on stderr
PROGRESS_BAR = re.compile(r"[\w ]*:\s*\d+%\|[^|]*\|[^\[\r\n]*\[[^\]\r\n]*\]")


def message_lines(err: str) -> list[str]:
    """stderr's lines, progress-bar redraws removed."""
    return [seg for seg in re.split(r"[\r\n]", PROGRESS_BAR.sub("", err)) if seg.strip()]


def assert_one_line_error(rc: int, err: str, *words: str) -> str:
    lines = message_lines(err)
    assert rc == 2, f"exit {rc}, stderr:\n{err[-3000:]}"
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    line = lines[0]
    assert line.startswith("worldloom ") and ": error: " in line, line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


def make_sentinel(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (SENTINEL_ATIME, time.time()))
    return path


def assert_not_read(sentinel: Path) -> None:
    assert os.stat(sentinel).st_atime == SENTINEL_ATIME, f"{sentinel} was read"


def write_dataset(root: Path, lengths=(9, 8, 10), size: int = 16, prefix: str = "ep") -> Path:
    """Episodes of `lengths` steps (the last unlabeled), size x size raw frames, one shard each
    (shards close at 8 frames): every reader of the first episode opens the first shard."""
    with DatasetWriter(root, size, size, fps=20, rows_per_group=4, shard_max_frames=8, writer_id=f"w{prefix}") as w:
        for i, n in enumerate(lengths):
            if i == len(lengths) - 1:
                w.add_episode(f"{prefix}-{i}", pixel_frames(n, size, size, seed=i), label_source="none", split="val")
            else:
                buttons, camera = random_actions(n, seed=i)
                w.add_episode(f"{prefix}-{i}", pixel_frames(n, size, size, seed=i), buttons=buttons, camera=camera,
                              env="synthetic", seed=i, player="random")
    return root


def read_manifest(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def write_manifest(root: Path, manifest) -> None:
    (root / "dataset.json").write_text(json.dumps(manifest, indent=1))


def set_shard_path(root: Path, index: int, new: str) -> str:
    """Point shard `index` (manifest and episodes.parquet) at `new`; returns the old path."""
    manifest = read_manifest(root)
    old = manifest["shards"][index]["path"]
    manifest["shards"][index]["path"] = new
    write_manifest(root, manifest)
    table = pq.read_table(root / "episodes.parquet")
    shards = [new if s == old else s for s in table.column("shard").to_pylist()]
    table = table.set_column(table.schema.get_field_index("shard"), "shard", pa.array(shards, pa.string()))
    pq.write_table(table, root / "episodes.parquet")
    return old


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A small dataset, a second one with other episode ids, a micro IDM run and a tiny world
    model run (two training steps each: the weights are real, the quality irrelevant)."""
    tmp = tmp_path_factory.mktemp("trust")
    ds = write_dataset(tmp / "ds")
    other = write_dataset(tmp / "other", prefix="xp")
    big = write_dataset(tmp / "big", lengths=(12, 10, 14), size=64, prefix="bg")
    idm = tmp / "idm"
    rc, _, err = run_cli(["idm", "train", "--data", big, "--out", idm, "--preset", "micro", "--max-steps", "2",
                          "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "2", "--checkpoint-every", "2",
                          "--val-windows", "2"])
    assert rc == 0, err[-2000:]
    wm = tmp / "wm"
    rc, _, err = run_cli(["pretrain", "train", "--data", big, "--out", wm, "--max-steps", "2", "--batch-size", "2",
                          "--checkpoint-every", "2", "--warmup-steps", "1", "--camera-fov-deg", "70"])
    assert rc == 0, err[-2000:]
    return {"tmp": tmp, "ds": ds, "other": other, "big": big, "idm": idm, "wm": wm}


# ---- 1. paths read from files stay inside their root ------------------------------------------


def test_the_sentinel_sees_a_read(tmp_path):
    """The check below means something on this filesystem: a read moves an atime older than the
    mtime (relatime, the Linux default, and strictatime do; a noatime mount would not)."""
    sentinel = make_sentinel(tmp_path / "s", b"x")
    assert_not_read(sentinel)
    sentinel.read_bytes()
    with pytest.raises(AssertionError, match="was read"):
        assert_not_read(sentinel)

HOSTILE_PATHS = {
    "dot-dot": "../victim/secret.parquet",
    "nested-dot-dot": "frames/../../victim/secret.parquet",
    "absolute": None,  # the sentinel's absolute path
    "windows-drive": "C:\\victim\\secret.parquet",
    "drive-forward-slashes": "C:/victim/secret.parquet",
    "url-encoded-dots": "frames/%2e%2e/%2e%2e/victim/secret.parquet",
    "file-url": "file:///victim/secret.parquet",
    "symlink": None,  # frames/<shard> replaced by a symlink to the sentinel
}


def hostile_dataset(base: dict, case: Path, kind: str) -> tuple[Path, Path, list[str]]:
    """A copy of the small dataset whose first shard leads to a sentinel outside it (a byte copy
    of that shard, so a reader that followed the path would succeed)."""
    ds = shutil.copytree(base["ds"], case / "ds")
    shard0 = read_manifest(ds)["shards"][0]["path"]
    sentinel = make_sentinel(case / "victim" / "secret.parquet", (ds / shard0).read_bytes())
    if kind == "symlink":
        (ds / shard0).unlink()
        (ds / shard0).symlink_to(sentinel)
        return ds, sentinel, ["dataset.json", shard0, "outside"]
    rel = str(sentinel) if kind == "absolute" else HOSTILE_PATHS[kind]
    set_shard_path(ds, 0, rel)
    return ds, sentinel, ["dataset.json", "shards[0].path"]


def dataset_commands(base: dict, ds: Path, out: Path) -> dict[str, list]:
    """Every command that reads a dataset, pointed at `ds`."""
    return {
        "dataset inspect": ["dataset", "inspect", ds],
        "dataset export": ["dataset", "export", ds, "--out", out / "sheet.png"],
        "dataset merge": ["dataset", "merge", ds, base["other"], "--out", out / "merged"],
        "dataset split": ["dataset", "split", ds, "--out", out / "splits"],
        "idm train": ["idm", "train", "--data", ds, "--out", out / "idm-run", "--preset", "micro", "--max-steps", "1"],
        "idm eval": ["idm", "eval", "--model", base["idm"], "--data", ds, "--out", out / "idm-eval"],
        "idm label": ["idm", "label", "--model", base["idm"], "--data", ds, "--out", out / "pseudo", "--all-episodes"],
        "pretrain": ["pretrain", "train", "--data", ds, "--out", out / "wm-run", "--max-steps", "1", "--camera-fov-deg", "70"],
        "pretrain eval": ["pretrain", "eval", "--model", base["wm"], "--data", ds, "--out", out / "wm-eval",
                          "--horizon", "1", "--num-clips", "3", "--next-frame-positions", "1"],
    }


def loaders(ds: Path) -> dict:
    """Every in-process reader of a dataset: the reader, the torch loaders, the Ray Data reader."""
    from worldloom.datasets import ClipDataset, ClipStream, to_ray_dataset

    def frames():
        d = Dataset(ds)
        return [d.frames(e) for e in d.episode_ids]

    return {"Dataset.frames": frames, "ClipStream": lambda: list(ClipStream(ds, clip_len=2)),
            "ClipDataset": lambda: ClipDataset(ds, clip_len=2)[0], "to_ray_dataset": lambda: to_ray_dataset(ds)}


@pytest.mark.parametrize("kind", list(HOSTILE_PATHS))
def test_a_shard_path_leading_outside_is_refused_by_every_reader(base, tmp_path, kind):
    ds, sentinel, words = hostile_dataset(base, tmp_path, kind)
    out = tmp_path / "out"
    out.mkdir()
    for name, argv in dataset_commands(base, ds, out).items():
        rc, _, err = run_cli(argv)
        if name == "idm label" and kind == "symlink":  # the manifest is sound: the bad episode is skipped, reported
            skipped = [line for line in message_lines(err) if "skipped" in line]
            assert rc == 1 and "Traceback" not in err and all(w in skipped[0] for w in words), err
        else:
            assert_one_line_error(rc, err, *words)
        assert_not_read(sentinel)
    rc, _, err = run_cli(["dataset", "validate", ds])  # lists problems, exit 1, never reads outside
    assert rc == 1 and "Traceback" not in err and words[-1] in err, err
    for name, load in loaders(ds).items():
        with pytest.raises(UserError, match="dataset.json") as info:
            load()
        assert "\n" not in str(info.value), name
    assert_not_read(sentinel)
    assert not (out / "merged").exists() and not (out / "splits").exists()  # nothing written


def test_a_hostile_shard_in_episodes_parquet_alone_is_refused(base, tmp_path):
    ds = shutil.copytree(base["ds"], tmp_path / "ds")
    table = pq.read_table(ds / "episodes.parquet")
    row = {**table.slice(0, 1).to_pylist()[0], "episode_id": "extra", "shard": "../victim/secret.parquet"}
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist([row], schema=table.schema)]), ds / "episodes.parquet")
    rc, _, err = run_cli(["dataset", "inspect", ds])
    assert_one_line_error(rc, err, "episodes.parquet", "shard", "'../victim/secret.parquet'", "'..'")


def copy_idm_run(base: dict, dst: Path) -> Path:
    """A copy of the micro IDM run that `idm train --out dst` resumes (config.json names its out)."""
    run = shutil.copytree(base["idm"], dst, ignore=shutil.ignore_patterns("eval*"))
    config = json.loads((run / "config.json").read_text())
    config["train"]["out"] = str(run)
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.mark.parametrize("name", ["model.safetensors", "state.json"])
def test_an_idm_run_whose_files_link_outside_is_refused(base, tmp_path, name):
    """A run's file names are fixed (worldloom.checkpoint), so the only way out is a symlink."""
    run = copy_idm_run(base, tmp_path / "run")
    file = run / "checkpoint" / name
    sentinel = make_sentinel(tmp_path / "victim" / name, file.read_bytes())
    file.unlink()
    file.symlink_to(sentinel)
    for argv in (["idm", "eval", "--model", run, "--data", base["big"], "--out", tmp_path / "ev"],
                 ["idm", "label", "--model", run, "--data", base["big"], "--out", tmp_path / "pseudo"]):
        rc, _, err = run_cli(argv)
        assert_one_line_error(rc, err, name, "links outside its run directory")
        assert_not_read(sentinel)
    from worldloom.idm import load_idm

    with pytest.raises(UserError, match="links outside"):
        load_idm(run)


def test_idm_resume_never_reads_or_deletes_a_file_outside_the_run(base, tmp_path):
    run = copy_idm_run(base, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["train"]["max_steps"] = 4  # a run planned for 4 steps and stopped at 2: the resume reads its optimizer
    (run / "config.json").write_text(json.dumps(config))
    victim = make_sentinel(tmp_path / "victim.safetensors", (run / "checkpoint" / "optimizer.safetensors").read_bytes())
    (run / "checkpoint" / "optimizer.safetensors").unlink()
    (run / "checkpoint" / "optimizer.safetensors").symlink_to(victim)
    rc, _, err = run_cli(["idm", "train", "--data", base["big"], "--out", run, "--preset", "micro", "--max-steps", "4",
                          "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "2", "--checkpoint-every", "2",
                          "--val-windows", "2"])
    assert_one_line_error(rc, err, "optimizer.safetensors", "links outside")
    assert_not_read(victim)
    assert victim.exists()


def pipeline_record(outputs: dict) -> dict:
    return {"key": "0" * 16, "outputs": outputs, "figures": {}, "wall_s": 1.0, "core_s": 2.0}


@pytest.mark.parametrize("outputs", [{"labeled": "../victim"}, {"labeled": "/etc"}, {"rollouts": ["figures/a.gif", "../../x.gif"]},
                                     {"labeled": "C:\\data"}, {"labeled": "data/%2e%2e/%2e%2e/x"}, {"labeled": "link"}])
def test_pipeline_resume_refuses_a_record_pointing_outside_the_run(tmp_path, outputs):
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "victim").mkdir()
    (run / "link").symlink_to(tmp_path / "victim")
    (run / "pipeline.json").write_text(json.dumps({"stages": {"capture": pipeline_record(outputs)}}))
    rc, _, err = run_cli(["pipeline", "run", "--out", run, "--preset", "micro"])
    assert_one_line_error(rc, err, "pipeline.json", "stages.capture.outputs")
    assert sorted(p.name for p in run.iterdir()) == ["link", "pipeline.json"]  # no stage ran


def test_pipeline_records_store_relative_paths_and_read_back_inside(tmp_path):
    from worldloom.pipeline.stages import StageRunner

    run = tmp_path / "run"
    run.mkdir()
    runner = StageRunner(run, None, ("a", "b"))
    runner.run("a", "k1", lambda: ({"data": str(run / "data" / "x"), "gifs": [str(run / "f" / "1.gif")]}, {"n": 1}))
    stored = json.loads((run / "pipeline.json").read_text())["stages"]["a"]["outputs"]
    assert stored == {"data": "data/x", "gifs": ["f/1.gif"]}
    moved = tmp_path / "moved"
    shutil.move(run, moved)  # a run directory stays valid where it is copied or moved to
    again = StageRunner(moved, None, ("a", "b"))
    assert again.records["a"].outputs == {"data": str((moved / "data" / "x").resolve()),
                                          "gifs": [str((moved / "f" / "1.gif").resolve())]}


def test_the_pipeline_report_embeds_only_files_inside_its_run(tmp_path):
    from worldloom.pipeline.report import Report

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret bytes")
    run = tmp_path / "run"
    run.mkdir()
    (run / "curves.png").symlink_to(secret)
    report = Report("r", root=run)
    report.section("s").image(run / "curves.png", "a symlink out of the run")
    page = report.write(run).read_text()
    assert "not embedded" in page and "data:image" not in page


# ---- 2. hostile but well-formed files: a seeded fuzz ----------------------------------------------
#
# FUZZ_DATASET_CASES mutations of dataset.json and episodes.parquet, each run through one command
# that reads the dataset (inspect, export, merge or split, in turn; export, which decodes frames,
# for a frame size or codec that does not match the shards), plus `dataset validate`; and
# FUZZ_RUN_CASES mutations of the JSON of an IDM run and of a world-model run (a value anywhere in
# config.json or the state JSON, found by walking the file: no knowledge of the format), each
# through the public loader and, when refused, through `idm eval` / `pretrain eval`. Every
# refusal must be exit 2 with one line on stderr and no traceback; a run mutation the loader
# accepts must load exactly what the unmutated run loads (it changed a value nothing reads, such
# as the optimizer's settings, which eval does not use). Each case is time-bounded.

FUZZ_SEED = 21
FUZZ_DATASET_CASES = 420
FUZZ_RUN_CASES = 120  # half IDM, half world model
FUZZ_CASES = FUZZ_DATASET_CASES + FUZZ_RUN_CASES  # 540 >= 500 (issue 21)
CASE_TIMEOUT_S = 30
NAN, INF = float("nan"), float("inf")
HOSTILE_STRINGS = ["../victim/secret.parquet", "/etc/passwd", "C:\\victim\\x", "C:/victim/x", "frames/%2e%2e/x",
                   "frames/../../x", "file:///etc/passwd", "s3://bucket/x", "frames//x.parquet", "./frames/x.parquet",
                   "frames/x\n.parquet", "\\\\server\\share\\x", "~/x", ""]


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_bound(seconds: int, what: str):
    """Fail the case (never the whole run) if it takes longer than `seconds`: a hang is a failure."""
    def expire(*_):
        raise CaseTimeout(f"{what}: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _bad_int(rng, value):
    """A value no integer count or size accepts."""
    return _pick(rng, [str(value), None, [value], {"n": value}, True, value + 0.5, -int(rng.integers(1, 10**9)),
                       int(10 ** int(rng.integers(12, 40))), NAN, INF, -INF])


def mutate_manifest(rng, m: dict) -> tuple[str, object, bool]:
    """(description, new manifest or raw text, needs frames decoded to show)."""
    m = json.loads(json.dumps(m))
    i = int(rng.integers(len(m["shards"])))
    shard = m["shards"][i]
    choice = int(rng.integers(16))
    if choice == 0:
        text = _pick(rng, ["", "[]", "null", "5", '"x"', "{", "{}", "NaN", '{"format_version": 1}', "\x00\xff"])
        return f"whole file {text!r}", text, False
    if choice == 1:
        field = _pick(rng, ["height", "width"])
        if rng.random() < 0.5:  # a size the frames do not have
            value = _pick(rng, [8, 24, 32, 64, 4096])
            m[field] = value
            return f"{field} {value} (frames are 16)", m, True
        m[field] = _pick(rng, [_bad_int(rng, 16), 0, 7, 4097])
        return f"{field} {m[field]!r}", m, False
    if choice == 2:
        if rng.random() < 0.5:
            m["codec"] = _pick(rng, ["png", "jpeg", "h264"])  # not what the frames are
            return f"codec {m['codec']} (frames are raw)", m, True
        m["codec"] = _pick(rng, ["gif", "", "RAW", 5, None, ["raw"]])
        return f"codec {m['codec']!r}", m, False
    field, values = _pick(rng, [
        ("fps", [0, -20, NAN, INF, 1e9, "20", None, [20], True]),
        ("format_version", [0, 4, "2", 2.0, True, None, -1, 10**20]),
        ("format", ["x", None, 5, ""]),
        ("channels", [4, 1, "3", 3.0, None]),
        ("rows_per_group", [0, -1, 10**7, "256", None, 1.5, True]),
        ("label_sources", ["env", None, ["bogus"], ["env", "env"], [1], {}]),
    ])
    if choice in (3, 4):
        if rng.random() < 0.15:
            del m[field]
            return f"{field} deleted", m, False
        m[field] = _pick(rng, values)
        return f"{field} {m[field]!r}", m, False
    if choice == 5:
        space = m["action_space"]
        key = _pick(rng, sorted(space))
        how = int(rng.integers(4))
        if how == 0:
            del space[key]
        elif how == 1 and isinstance(space[key], list):
            space[key] = space[key][::-1] if key != "buttons" else space[key][:-1]
        elif how == 2:
            space[key] = _pick(rng, [None, "radians", 5, []])
        else:
            m["action_space"] = _pick(rng, [None, {}, [], "vpt"])
        return f"action_space.{key} mutated ({how})", m, False
    if choice in (6, 7):
        field = _pick(rng, ["num_episodes", "num_frames"])
        value = m[field]
        m[field] = _pick(rng, [value + int(rng.integers(1, 100)), value - int(rng.integers(1, value + 1)), _bad_int(rng, value)])
        return f"{field} {m[field]!r}", m, False
    if choice == 8:
        how = int(rng.integers(6))
        if how == 0:
            m["shards"].append(dict(shard))
            return f"shards[{i}] listed twice", m, False
        if how == 1:
            del m["shards"][i]
            return f"shards[{i}] dropped", m, False
        if how == 2:
            del m["shards"]
            return "shards deleted", m, False
        m["shards"] = _pick(rng, [None, {}, "x", [], 5])
        return f"shards {m['shards']!r}", m, False
    if choice in (9, 10):
        others = [s["path"] for j, s in enumerate(m["shards"]) if j != i]
        shard["path"] = _pick(rng, HOSTILE_STRINGS + ["frames/missing.parquet", "frames/sub/x.parquet", "episodes.parquet",
                                                      "dataset.json", 5, None, ["frames/x.parquet"]] + others)
        return f"shards[{i}].path {shard['path']!r}", m, False
    if choice == 11:
        m["shards"][i] = _pick(rng, [None, "x", [1], 5, {}])
        return f"shards[{i}] {m['shards'][i]!r}", m, False
    field = _pick(rng, ["num_rows", "num_episodes", "size_bytes", "checksum", "writer_id"])
    if rng.random() < 0.15:
        del shard[field]
        return f"shards[{i}].{field} deleted", m, False
    value = shard[field]
    if field in ("num_rows", "num_episodes"):
        shard[field] = _pick(rng, [value + int(rng.integers(1, 50)), 0, _bad_int(rng, value)])
    elif field == "size_bytes":
        shard[field] = _pick(rng, [0, -int(rng.integers(1, 10**6)), str(value), None, value + 0.5, True])
    elif field == "checksum":
        shard[field] = _pick(rng, ["", "md5:abc", 5, None, "blake2b-128:" + "z" * 32, "blake2b-128:ABC", [value]])
    else:
        shard[field] = _pick(rng, [5, None, [], {}])
    return f"shards[{i}].{field} {shard[field]!r}", m, False


def _column_of_wrong_type(rng, column: pa.ChunkedArray) -> pa.Array:
    """A column of other values than the documented type's: a layout other tools write for the same values
    (large_string, int64 for int32, integral floats: manifest.same_values) is no wrong type, and reads."""
    n = len(column)
    fractions, flags = pa.array(np.arange(n) + 0.5), pa.array(np.zeros(n, bool))
    if pa.types.is_string(column.type):
        return _pick(rng, [pa.array(np.arange(n, dtype=np.int64)), flags, column.combine_chunks().cast(pa.binary())])
    return _pick(rng, [fractions, flags, column.combine_chunks().cast(pa.string())])


def mutate_episodes(rng, table: pa.Table) -> tuple[str, object]:
    """(description, new table or raw bytes) for episodes.parquet."""
    rows = table.to_pylist()
    r = int(rng.integers(len(rows)))
    choice = int(rng.integers(9))
    if choice == 0:
        name = _pick(rng, table.column_names)
        i = table.schema.get_field_index(name)
        how = int(rng.integers(4))
        if how == 0:
            return f"column {name} dropped", table.remove_column(i)
        if how == 1:
            return f"column {name} renamed", table.rename_columns([c + "_x" if c == name else c for c in table.column_names])
        if how == 2:
            return "extra column", table.append_column("extra", pa.array(np.zeros(len(rows), np.int64)))
        new = _column_of_wrong_type(rng, table.column(name))
        return f"column {name} as {new.type}", table.set_column(i, name, new)
    if choice == 1:
        data = _pick(rng, [b"", b"not parquet", b"PAR1\x00\x00PAR1"])
        return f"whole file {data!r}", data
    if choice == 2:
        how = int(rng.integers(3))
        if how == 0:
            return f"row {r} twice", pa.concat_tables([table, table.slice(r, 1)])
        if how == 1:
            return f"row {r} dropped", pa.concat_tables([table.slice(0, r), table.slice(r + 1)])
        return "no rows", table.slice(0, 0)
    field, values = _pick(rng, [
        ("num_steps", [0, -1, rows[r]["num_steps"] + int(rng.integers(1, 50)), 2**31 - 1, None, rows[r]["num_steps"] - 1]),
        ("row_start", [-1, rows[r]["row_start"] + int(rng.integers(1, 50)), 2**62, None]),
        ("episode_id", [rows[(r + 1) % len(rows)]["episode_id"], None]),
        ("shard", HOSTILE_STRINGS + [rows[(r + 1) % len(rows)]["shard"], None, "frames/missing.parquet"]),
        ("label_source", ["bogus", None, "", "ENV"]),
    ])
    value = _pick(rng, values)
    if field == "shard" and value == rows[r]["shard"]:
        value = "frames/missing.parquet"
    rows[r][field] = value
    nullable = pa.schema([f.with_nullable(True) for f in table.schema])
    return f"row {r} {field} {value!r}", pa.Table.from_pylist(rows, schema=nullable)


def dataset_command(base: dict, ds: Path, out: Path, case: int, frames: bool) -> list:
    kind = "export" if frames else ("inspect", "export", "merge", "split")[case % 4]
    return {"inspect": ["dataset", "inspect", ds, "--json"], "export": ["dataset", "export", ds, "--out", out / "s.png"],
            "merge": ["dataset", "merge", ds, base["other"], "--out", out / "m"],
            "split": ["dataset", "split", ds, "--out", out / "sp"]}[kind]


def test_fuzz_hostile_dataset_files(base, tmp_path):
    rng = np.random.default_rng(FUZZ_SEED)
    manifest = read_manifest(base["ds"])
    table = pq.read_table(base["ds"] / "episodes.parquet")
    for case in range(4):  # every command works on the unmutated dataset
        out = tmp_path / f"ok{case}"
        rc, _, err = run_cli(dataset_command(base, base["ds"], out, case, False))
        assert rc == 0, err
    start, kinds = time.monotonic(), {}
    for case in range(FUZZ_DATASET_CASES):
        root = tmp_path / f"c{case}"
        ds = shutil.copytree(base["ds"], root / "ds")
        frames = False
        if rng.random() < 0.6:
            desc, new, frames = mutate_manifest(rng, manifest)
            text = new if isinstance(new, str) else json.dumps(new, indent=1)
            (ds / "dataset.json").write_text(text)
            where = "dataset.json"
        else:
            desc, new = mutate_episodes(rng, table)
            if isinstance(new, bytes):
                (ds / "episodes.parquet").write_bytes(new)
            else:
                pq.write_table(new, ds / "episodes.parquet")
            where = "episodes.parquet"
        argv = dataset_command(base, ds, root, case, frames)
        what = f"case {case}: {where} {desc} ({' '.join(map(str, argv[:2]))})"
        with time_bound(CASE_TIMEOUT_S, what):
            rc, out, err = run_cli(argv)
            assert rc == 2 and len(message_lines(err)) == 1 and "Traceback" not in err, f"{what}: exit {rc}\n{err[-2000:]}"
            assert message_lines(err)[0].startswith("worldloom dataset: error: "), what
            if case % 3 == 0:  # validate lists what is wrong (exit 1), or refuses the manifest (exit 1 too)
                rc, _, err = run_cli(["dataset", "validate", ds, "--skip-frames"] if not frames else ["dataset", "validate", ds])
                assert rc == 1 and "Traceback" not in err and err.strip(), f"{what}: validate exit {rc}\n{err[-2000:]}"
        kinds[where] = kinds.get(where, 0) + 1
        shutil.rmtree(root)
    elapsed = time.monotonic() - start
    print(f"fuzz: {FUZZ_DATASET_CASES} dataset cases {kinds}, seed {FUZZ_SEED}: all refused with one line, exit 2, "
          f"in {elapsed:.1f} s")


def json_paths(doc, prefix=()) -> list[tuple]:
    """Every value's path in a JSON document (dict keys and list indices), containers included."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(json_paths(value, (*prefix, key)))
    return out


def _bad_value(rng, value):
    """A value of another JSON type than `value`, or an out-of-range or non-finite one of its type."""
    if isinstance(value, bool):
        return _pick(rng, [0, 1, "true", None, [value]])
    if isinstance(value, (int, float)):
        return _pick(rng, [str(value), None, [value], {"v": value}, True, NAN, INF, -INF, -abs(value) - int(rng.integers(1, 10**6)),
                           int(2 ** int(rng.integers(54, 80))), 1e300, float(value) + 0.5 if isinstance(value, int) else 10**18])
    if isinstance(value, str):
        return _pick(rng, HOSTILE_STRINGS + [5, None, [value], {"v": value}, "x" * 10_000, value + "\x00"])
    if isinstance(value, list):
        return _pick(rng, [None, "x", {}, [], value + value, value[:-1], [None] * len(value), 7])
    return _pick(rng, [None, "x", [], {}, 7])  # an object


def mutate_json(rng, doc) -> tuple[str, str]:
    """(description, new file text): one value anywhere replaced or deleted, or the file replaced."""
    if rng.random() < 0.04:
        text = _pick(rng, ["", "[]", "null", "{", "NaN", '"x"'])
        return f"whole file {text!r}", text
    doc = json.loads(json.dumps(doc))
    # a field, then one of its elements: list indices folded, so a 60-element list of parameter
    # indices weighs as much as any other field
    fields: dict[tuple, list[tuple]] = {}
    for p in json_paths(doc):
        fields.setdefault(tuple("[i]" if isinstance(k, int) else k for k in p), []).append(p)
    path = _pick(rng, _pick(rng, sorted(fields.values(), key=lambda ps: [str(k) for k in ps[0]])))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[path[-1]]
        return f"{'.'.join(map(str, path))} deleted", json.dumps(doc)
    parent[path[-1]] = _bad_value(rng, parent[path[-1]])
    return f"{'.'.join(map(str, path))} = {_short_repr(parent[path[-1]])}", json.dumps(doc)


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _weights_digest(model) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def idm_loaded(run: Path):
    from worldloom.idm.checkpoint import checkpoint_id, load_idm

    model, cfg = load_idm(run)
    return cfg, _weights_digest(model), checkpoint_id(run)


def wm_loaded(run: Path):
    """What `pretrain eval` takes from a run: the model, its weights, the codec and the two
    values its report repeats (train.use_actions, data.label_sources). The rest of config.json
    is provenance (the data paths it was trained on, its learning rate) that nothing opens."""
    from worldloom.pretrain.checkpoint import load_world_model

    model, doc, codec = load_world_model(run)
    return (model.cfg, _weights_digest(model), doc["train"].get("use_actions", True), doc["data"]["label_sources"],
            type(codec).__name__)


def test_fuzz_hostile_run_json(base, tmp_path):
    rng = np.random.default_rng(FUZZ_SEED + 1)
    runs = {
        "idm": (copy_idm_run(base, tmp_path / "idm"), ("config.json", "checkpoint/state.json"), idm_loaded,
                lambda run: ["idm", "eval", "--model", run, "--data", base["big"], "--out", tmp_path / "ev"]),
        "world model": (shutil.copytree(base["wm"], tmp_path / "wm"), ("config.json", "checkpoint/state.json"), wm_loaded,
                        lambda run: ["pretrain", "eval", "--model", run, "--data", base["big"], "--out", tmp_path / "ev",
                                     "--horizon", "1", "--num-clips", "1", "--next-frame-positions", "1"]),
    }
    counts = {}
    start = time.monotonic()
    for name, (run, files, load, command) in runs.items():
        expected = load(run)
        originals = {f: (run / f).read_text() for f in files}
        refused = accepted = 0
        for case in range(FUZZ_RUN_CASES // len(runs)):
            file = files[case % len(files)]
            desc, text = mutate_json(rng, json.loads(originals[file]))
            (run / file).write_text(text)
            what = f"{name} case {case}: {file} {desc}"
            try:
                with time_bound(CASE_TIMEOUT_S, what):
                    try:
                        got = load(run)
                    except UserError as err:
                        assert "\n" not in str(err), what
                        rc, _, err_text = run_cli(command(run))
                        assert rc == 2 and len(message_lines(err_text)) == 1 and "Traceback" not in err_text, \
                            f"{what}: exit {rc}\n{err_text[-2000:]}"
                        refused += 1
                    else:  # accepted: the mutated value is one nothing loads; what loads is unchanged
                        assert got == expected, f"{what}: loaded something else without an error"
                        accepted += 1
            finally:
                (run / file).write_text(originals[file])
        counts[name] = {"refused": refused, "accepted unchanged": accepted}
    print(f"fuzz: {FUZZ_RUN_CASES} run cases, seed {FUZZ_SEED + 1}: {counts} in {time.monotonic() - start:.1f} s")


def test_hostile_files_give_one_line_errors_in_a_real_process(base, tmp_path):
    """A few fuzz-like cases through a real `python -m worldloom.pipeline.cli`: nothing escapes as a traceback."""
    ds = shutil.copytree(base["ds"], tmp_path / "ds")
    manifest = read_manifest(ds)
    manifest["fps"] = NAN
    write_manifest(ds, manifest)
    run = copy_idm_run(base, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["model"]["num_layers"] = 10**12
    (run / "config.json").write_text(json.dumps(config))
    for argv, words in ((["dataset", "inspect", ds], ["dataset.json", "fps", "nan"]),
                        (["idm", "eval", "--model", run, "--data", base["big"]], ["config.json", "model.num_layers"])):
        proc = subprocess.run([sys.executable, "-m", "worldloom.pipeline.cli", *map(str, argv)], capture_output=True,
                              text=True, timeout=120)
        assert_one_line_error(proc.returncode, proc.stderr, *words)


# ---- 3. credentials in a URI are never written or shown; 4. a local Ray session on loopback ---------


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray session for the tests below, started by `ray_session` (loopback), its files
    in a temporary directory of its own that the tests search."""
    from worldloom.cluster import ray_session

    ray_tmp = Path(tempfile.mkdtemp(prefix="wlt", dir="/tmp"))  # short: Ray's socket paths have a limit
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    try:
        with ray_session(None, 2):
            yield ray_tmp
    finally:
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.ray
def test_sigterm_in_a_ray_session_stops_as_ctrl_c_does_and_exits_143(ray_local):
    """ray.init's own SIGTERM handler exits with code 15, skipping the CLI's line; ray_session's
    raises the interrupt that unwinds to it (and to ray.shutdown) instead, also out of a ray.get
    (which re-raises it as a bare KeyboardInterrupt)."""
    import threading

    import ray

    from worldloom.interrupts import signals_as_interrupts
    from worldloom.training import exit_code

    nap = ray.remote(lambda seconds: time.sleep(seconds))
    # As the CLI runs every command: the block's unraisablehook sends again an interrupt that lands in a
    # finalizer (a weakref callback of Ray's) and is dropped there. Set here, inside the test, because
    # pytest puts its own hook in place around each test's call (CI on a loaded machine: the signal
    # landed in one, and the hook that caught it was pytest's).
    napping = nap.remote(10)  # submitted first: on a loaded machine submitting can take longer than the timer
    with signals_as_interrupts(), pytest.raises(KeyboardInterrupt) as stopped:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()  # the driver waits in ray.get
        ray.get(napping)
    ray.cancel(napping, force=True)  # its CPU back for the tests after this one
    assert exit_code(stopped.value) == 143 and exit_code(KeyboardInterrupt()) == 130


def test_a_sigterm_while_ray_starts_stops_as_ctrl_c_does():
    """ray.init sets a SIGTERM handler that exits with code 15 while it starts: a pipeline killed as its label stage
    started a cluster ended with code 15 and no line (a new-user trial, session 57). A real SIGTERM under the
    handler Ray sets ends as any SIGTERM does: a KeyboardInterrupt carrying it (exit code 143), the handler from
    before given back."""
    from worldloom.cluster import sigterm_while_starting
    from worldloom.training import exit_code

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as stopped, sigterm_while_starting(before):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # ray/_private/worker.py's
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # (the handler runs at the next bytecode)
    assert exit_code(stopped.value) == 143 and signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(KeyboardInterrupt) as stopped, sigterm_while_starting(before):  # before Ray's is set
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert exit_code(stopped.value) == 143 and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.ray
def test_a_local_ray_session_listens_on_loopback_only(base, ray_local, tmp_path):
    """Every socket of every process of the session (GCS, raylet and object manager, dashboard
    agent, runtime-env agent, metrics, autoscaler monitor, workers and actors) while capture
    actors run. The same check runs around the labeling pool (tests/test_idm_label.py) and Ray
    Train, with its one exception, torch's TCPStore (tests/test_pretrain_ray.py)."""
    from conftest import ListeningSockets

    with ListeningSockets() as sockets:
        # episodes long enough that the recorders live for several of the sampler's 0.2 s looks (at 4 steps one
        # CI run on a loaded machine saw no ray::Recorder socket at all)
        rc, _, err = run_cli(["capture", "run", "--out", tmp_path / "cap", "--episodes", "4", "--steps", "60", "--resolution", "64",
                              "--num-workers", "2", "--no-progress"])
        assert rc == 0, err[-2000:]
    print("listening sockets of the local Ray session:\n" + sockets.table())
    titles = {t for ts in sockets.seen.values() for t in ts}
    for process in ("gcs_server", "raylet", "ray::Recorder", "ray::DashboardAgent", "ray::RuntimeEnvAgent"):
        assert any(t.startswith(process) for t in titles), f"no socket of {process} seen:\n{sockets.table()}"
    assert not sockets.outside_loopback(), "listening beyond loopback:\n" + sockets.table()
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    assert is_token_auth_enabled()  # Ray's own token authentication stays on (Ray 2.60's default for ray.init)


@pytest.mark.ray
def test_credentials_in_a_uri_are_never_written_or_shown(base, ray_local, tmp_path, monkeypatch, capfd):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    key, secret, env_secret = "AKIDWORLDLOOM21", "uriSECRETworldloom21", "envSECRETworldloom21"
    for name, value in {"AWS_ACCESS_KEY_ID": "envkey", "AWS_SECRET_ACCESS_KEY": env_secret,
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
        s3.create_bucket(Bucket="worldloom-creds")
        query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        uri = f"s3://{key}:{secret}@worldloom-creds/runs/d?{query}"
        capture = ["capture", "run", "--out", uri, "--episodes", "2", "--steps", "4", "--resolution", "64", "--num-workers", "2"]
        assert cli.main(capture) == 0
        assert cli.main(["dataset", "inspect", uri]) == 0
        assert cli.main(["dataset", "validate", uri]) == 0
        assert cli.main([*capture[:-4], "--steps", "5", "--num-workers", "2"]) == 2  # another job's output: an error naming it
        # a run trained on it records the URI without its secret (config.json's train.data and data_content, until
        # session 58 in plain text), and the same command asked again resumes it (compared as recorded)
        train = ["pretrain", "train", "--data", uri, "--out", str(tmp_path / "wm"), "--batch-size", "2", "--threads", "1"]
        assert cli.main([*train, "--max-steps", "1"]) == 0
        assert cli.main([*train, "--max-steps", "1"]) == 0
        first = capfd.readouterr()
        assert "already finished" in first.err
        bad = f"s3://worldloom-creds/x?access_key={key}&secret_key={secret}&session_token={secret}&{query}"
        assert cli.main(["dataset", "inspect", bad]) == 2  # pyarrow refuses query credentials: so do we, quietly
        later = capfd.readouterr()
        shown = type(later)(first.out + later.out, first.err + later.err)
        manifest = json.loads(s3.get_object(Bucket="worldloom-creds", Key="runs/d/dataset.json")["Body"].read())
        assert manifest["config"]["capture"]["out"].startswith("s3://***@worldloom-creds/runs/d?")
        stored = {o["Key"]: s3.get_object(Bucket="worldloom-creds", Key=o["Key"])["Body"].read()
                  for o in s3.list_objects_v2(Bucket="worldloom-creds")["Contents"]}
    finally:
        server.stop()
    written = {**{f"s3:{k}": v for k, v in stored.items()},
               **{str(p): p.read_bytes() for root in (tmp_path, ray_local) for p in root.rglob("*") if p.is_file()}}
    assert len(written) > 10 and any("session_" in name for name in written)  # Ray's logs are searched too
    for marker in (key, secret, env_secret):
        assert marker not in shown.out + shown.err, f"{marker} printed"
        leaks = [name for name, data in written.items() if marker.encode() in data]
        assert not leaks, f"{marker} written to {leaks}"
    assert "s3://***@worldloom-creds/runs/d" in shown.out and "***" in shown.err


def test_a_local_ray_that_starts_late_is_retried_then_named_in_one_line(monkeypatch):
    """Ray waits a fixed 30 s for its raylet and raises a bare Exception after that (seen with 4
    suites' Ray sessions starting at once on 2 cores). Ray's own slowness cannot be produced on
    demand, so `ray.init` is replaced here (and only here) by one that fails as Ray does."""
    import ray

    from worldloom.cluster import LOCAL_START_ATTEMPTS, ray_session
    from worldloom.errors import UserError

    calls = []

    def slow_init(**kwargs):
        calls.append(kwargs)
        if len(calls) < fail_times:
            raise Exception("The current node timed out during startup. This could happen because ...")  # noqa: TRY002

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "init", slow_init)
    fail_times = LOCAL_START_ATTEMPTS  # fails all but the last try: the session opens
    with ray_session(None, 2):
        assert len(calls) == LOCAL_START_ATTEMPTS
    calls.clear()
    fail_times = LOCAL_START_ATTEMPTS + 1  # fails every try: one line that says what to do
    with pytest.raises(UserError, match=r"did not start in 2 tries .* --address") as err:
        with ray_session(None, 2):
            pass
    assert "\n" not in str(err.value) and len(calls) == LOCAL_START_ATTEMPTS
    calls.clear()
    fail_times = 10
    with pytest.raises(UserError):  # an address given: Ray is not ours to restart, so no retry
        monkeypatch.setattr("worldloom.cluster.check_reachable", lambda address, named: None)
        monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(ConnectionError("refused")))
        with ray_session("127.0.0.1:1", None):
            pass


def test_object_store_credentials_reach_the_actors_of_every_pool_as_an_argument(monkeypatch, tmp_path):
    """A remote cluster's actors have none of the driver's `AWS_*` variables: `capture run` passed them as an actor
    argument, `idm label` and `dataset ingest` did not (a new-user trial, session 58), so their workers on another
    machine could not open an s3:// dataset. One rule now (`store_credentials`), and each worker class takes them.
    (A second machine cannot be had here: the classes are built as Ray builds them, in this process.)"""
    from worldloom.cluster import store_credentials
    from worldloom.datasets.ingest import IngestConfig
    from worldloom.datasets.ingest_worker import Ingester

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("UNRELATED", "x")
    assert store_credentials(["data/local", str(tmp_path)]) == {}  # nothing remote: nothing travels
    sent = store_credentials(["data/local", "s3://bucket/d?endpoint_override=127.0.0.1:9"])
    assert sent["AWS_SECRET_ACCESS_KEY"] == "s3cret" and "UNRELATED" not in sent
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    Ingester(IngestConfig(data=(str(tmp_path),), out=str(tmp_path / "o")), {}, environ=sent)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "s3cret"
