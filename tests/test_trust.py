"""Trust boundaries (issue 21): what a dataset or run from someone else can make WorldLoom do.

- Paths read from files (dataset.json shards, episodes.parquet `shard`, an IDM run's state.json,
  the pipeline's pipeline.json) stay inside their root: `..`, absolute, drive, URL-encoded and
  symlinked escapes are a one-line error before a byte outside is read (a sentinel file's atime).
- Hostile but well-formed files: a seeded fuzz of dataset.json, episodes.parquet and a run's JSON
  (FUZZ_CASES cases, time-bounded), each a one-line error with exit 2 and no traceback.
- Credentials in a URI never reach a file, a log or the terminal (a capture to a local S3 server).
- A local Ray session listens on loopback only (every socket of every Ray process).

Real components throughout: real datasets, real micro IDM and tiny world-model runs trained for
two steps, the real CLI (in-process through `worldloom.pipeline.cli.main`, a few in a subprocess),
a real Ray cluster, moto's S3 server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import pixel_frames, random_actions

from worldloom.datasets import Dataset, DatasetWriter
from worldloom.errors import UserError
from worldloom.pipeline.cli import main as cli_main

SENTINEL_ATIME = 1_000_000.0  # older than the mtime, so any read moves it (relatime mounts too)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main([str(a) for a in argv])
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


def atime_is_kept(tmp: Path) -> bool:
    """True where reading a file moves its atime (not a noatime mount): the sentinel check means something."""
    probe = make_sentinel(tmp / "atime-probe", b"x")
    probe.read_bytes()
    return os.stat(probe).st_atime != SENTINEL_ATIME


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
    rc, _, err = run_cli(["idm", "train", "--data", big, "--out", idm, "--preset", "micro", "--steps", "2",
                          "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "2", "--ckpt-every", "2",
                          "--val-windows", "2"])
    assert rc == 0, err[-2000:]
    wm = tmp / "wm"
    rc, _, err = run_cli(["pretrain", "--data", big, "--out", wm, "--max-steps", "2", "--batch-size", "2",
                          "--checkpoint-every", "2", "--warmup-steps", "1", "--camera-fov-deg", "70"])
    assert rc == 0, err[-2000:]
    return {"tmp": tmp, "ds": ds, "other": other, "big": big, "idm": idm, "wm": wm, "atime": atime_is_kept(tmp)}


# ---- 1. paths read from files stay inside their root ------------------------------------------

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
        "idm train": ["idm", "train", "--data", ds, "--out", out / "idm-run", "--preset", "micro", "--steps", "1"],
        "idm eval": ["idm", "eval", "--model", base["idm"], "--data", ds, "--out", out / "idm-eval"],
        "idm label": ["idm", "label", "--model", base["idm"], "--input", ds, "--out", out / "pseudo", "--all-episodes"],
        "pretrain": ["pretrain", "--data", ds, "--out", out / "wm-run", "--max-steps", "1", "--camera-fov-deg", "70"],
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


@pytest.mark.parametrize("kind", ["dot-dot", "absolute", "windows-drive", "url-encoded-dots", "symlink"])
def test_an_idm_run_naming_weights_outside_is_refused(base, tmp_path, kind):
    run = copy_idm_run(base, tmp_path / "run")
    state = json.loads((run / "state.json").read_text())
    sentinel = make_sentinel(tmp_path / "victim" / "model.safetensors", (run / state["model_file"]).read_bytes())
    if kind == "symlink":
        (run / state["model_file"]).unlink()
        (run / state["model_file"]).symlink_to(sentinel)
    else:
        state["model_file"] = {"dot-dot": "../victim/model.safetensors", "absolute": str(sentinel),
                               "windows-drive": "C:\\victim\\model.safetensors",
                               "url-encoded-dots": "%2e%2e/victim/model.safetensors"}[kind]
        (run / "state.json").write_text(json.dumps(state))
    for argv in (["idm", "eval", "--model", run, "--data", base["big"], "--out", tmp_path / "ev"],
                 ["idm", "label", "--model", run, "--input", base["big"], "--out", tmp_path / "pseudo"]):
        rc, _, err = run_cli(argv)
        assert_one_line_error(rc, err, "state.json", "model_file")
        assert_not_read(sentinel)
    from worldloom.idm import load_idm

    with pytest.raises(UserError, match="model_file"):
        load_idm(run)


def test_idm_resume_never_reads_or_deletes_a_file_outside_the_run(base, tmp_path):
    run = copy_idm_run(base, tmp_path / "run")
    victim = make_sentinel(tmp_path / "victim.safetensors", b"not yours")
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "optim_file": "../victim.safetensors"}))
    rc, _, err = run_cli(["idm", "train", "--data", base["big"], "--out", run, "--preset", "micro", "--steps", "4",
                          "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "2", "--ckpt-every", "2",
                          "--val-windows", "2"])
    assert_one_line_error(rc, err, "state.json", "optim_file", "'..'")
    assert victim.read_bytes() == b"not yours"
    os.utime(victim, (SENTINEL_ATIME, time.time()))


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
    rc, _, err = run_cli(["pipeline", "--out", run, "--preset", "micro"])
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
