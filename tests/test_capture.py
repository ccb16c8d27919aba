"""Capture: specs, the Recorder without Ray, bad input, and real Ray jobs on one local cluster
(resumed, repaired, stripped of actions, crafter, S3).

    pytest tests/test_capture.py -q

A killed driver or actor and a full disk are in test_capture_faults.py (a file of its own, so
that `pytest -n --dist loadfile` runs the two side by side).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray  # also puts its own psutil (ray/thirdparty_files) on sys.path for the helpers below

from worldloom.capture import CaptureConfig, Recorder, capture, expand_specs, play_episode
from worldloom.capture.driver import target_roots
from worldloom.config import dataclass_from_args
from worldloom.datasets import Dataset, DatasetWriter, commit_shards, committed_episode_ids
from worldloom.datasets.validate import validate
from worldloom.envs import make_env, make_player
from worldloom.errors import UserError
from worldloom.pipeline.cli import main as cli_main

RES = 64  # the voxel world's smallest frame

# ---- helpers ----------------------------------------------------------------------------------


def assert_exactly_once(root: str | Path, cfg: CaptureConfig) -> None:
    """Every episode of `cfg` is in the dataset once, each with steps 0..n-1 once; it validates."""
    ds = Dataset(str(root))
    ids = ds.episodes.column("episode_id").to_pylist()
    assert sorted(ids) == sorted(s.episode_id for s in expand_specs(cfg))
    if "://" not in str(root):
        seen = collections.Counter()
        for rel in (s["path"] for s in ds.manifest["shards"]):
            table = pq.read_table(Path(root) / rel, columns=["episode_id", "step"])
            seen.update(zip(table.column("episode_id").to_pylist(), table.column("step").to_pylist(), strict=True))
        assert max(seen.values()) == 1, "an (episode, step) is there twice"
        for row in ds.episodes.to_pylist():
            assert {s for (e, s) in seen if e == row["episode_id"]} == set(range(row["num_steps"]))
    assert [str(p) for p in validate(str(root))] == []


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def kill_tree_matching(marker: str) -> None:
    """SIGKILL the processes (and their children) whose command line or environment mentions
    `marker`: only the Ray processes this test started under its own temp dir."""
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid == os.getpid():
            continue
        if any(marker in a for a in (p.info["cmdline"] or [])) or marker.encode() in _raw_environ(p.pid):
            procs.append(p)
            procs.extend(p.children(recursive=True))
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def _raw_environ(pid: int) -> bytes:
    # Read raw: Ray's process titles overwrite the environ area that psutil parses.
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


# ---- no Ray -----------------------------------------------------------------------------------


def test_specs_are_deterministic_and_distinct():
    cfg = CaptureConfig(out="x", episodes=5, steps=10, resolution=RES, seed=3)
    specs = expand_specs(cfg)
    assert specs == expand_specs(CaptureConfig(out="elsewhere", episodes=5, steps=10, resolution=RES, seed=3, num_workers=7))
    assert len({s.episode_id for s in specs}) == len({s.seed for s in specs}) == 5
    other = expand_specs(CaptureConfig(out="x", episodes=5, steps=10, resolution=RES, seed=4))
    assert not {s.seed for s in specs} & {s.seed for s in other}
    assert not {s.episode_id for s in specs} & {s.episode_id for s in other}


@pytest.mark.parametrize("field, value, words", [
    ("env", "doom", ["voxel", "crafter"]),
    ("player", "pro", ["random", "mixture"]),
    ("episodes", 0, ["episodes"]),
    ("steps", -5, ["steps"]),
    ("resolution", 4, ["resolution"]),
    ("resolution", 100_000, ["resolution"]),
    ("num_workers", -1, ["--num-workers", "0..4096", "0: one per CPU of the cluster"]),  # 0 is one per CPU
    ("episodes_per_shard", 0, ["--episodes-per-shard"]),
    ("steps", 100_000, ["steps", "resolution", "GiB"]),
    ("codec", "gif", ["raw", "png", "jpeg"]),  # 100k frames of 128x128 held in memory
])
def test_config_rejects_nonsense(field, value, words):
    with pytest.raises(ValueError) as err:
        CaptureConfig(out="x", **{field: value})
    assert all(w in str(err.value) for w in words + [repr(value)])


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert cli_main(["capture", "run", "--env", "doom", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "doom" in err and "voxel" in err and err.count("\n") == 1
    assert cli_main(["capture", "run", "--resolution", "0", "--out", str(tmp_path / "d")]) == 2
    assert cli_main(["capture", "run", "--out", str(tmp_path / "d"), "--strip-actions", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()


def test_recorder_without_ray_writes_what_play_episode_plays(tmp_path):
    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=2, steps=12, resolution=RES)
    specs = expand_specs(cfg)
    rec = Recorder({"env": cfg.out}, "voxel", RES, RES)
    out = rec.record([(s, ("env",)) for s in specs])
    assert out["frames"] == 24 and len(out["shards"]["env"]) == 1  # one shard per task
    assert committed_episode_ids(cfg.out) == set()  # nothing enters the dataset before a commit
    commit_shards(cfg.out, out["shards"]["env"])
    again = play_episode(make_env("voxel", height=RES, width=RES), make_player("mixture", seed=specs[1].seed), specs[1])
    clip = Dataset(cfg.out).frames(specs[1].episode_id)
    np.testing.assert_array_equal(clip.frames, again.frames)
    np.testing.assert_array_equal(clip.buttons, again.buttons)
    assert clip.truncated[-1] and not clip.truncated[:-1].any()  # the job's step limit


def test_antialias_reaches_the_env_and_the_dataset(tmp_path):
    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=1, steps=6, resolution=RES, antialias=True)
    assert dataclass_from_args(CaptureConfig, _parse(["capture", "run", "--out", cfg.out, "--antialias"])).antialias
    spec = expand_specs(cfg)[0]
    rec = Recorder({"env": cfg.out}, "voxel", RES, RES, env_options=cfg.env_options)
    commit_shards(cfg.out, rec.record([(spec, ("env",))])["shards"]["env"])
    ds = Dataset(cfg.out)
    assert json.loads(ds.episodes.column("env_config")[0].as_py()) == {"height": RES, "width": RES, "antialias": True}
    env = make_env("voxel", height=RES, width=RES, antialias=True)
    np.testing.assert_array_equal(ds.frames(spec.episode_id).frames,
                                  play_episode(env, make_player("mixture", seed=spec.seed), spec).frames)
    with pytest.raises(ValueError, match="antialias"):
        CaptureConfig(out=cfg.out, env="crafter", antialias=True)
    # A dataset captured before the option existed is resumed by a job that leaves it off.
    from worldloom.capture.config import config_mismatch, dataset_config

    plain = CaptureConfig(out=cfg.out, episodes=1, steps=6, resolution=RES)
    old = dataset_config(plain, "env")
    del old["capture"]["antialias"]
    assert config_mismatch(plain, "env", old) is None
    assert "antialias" in config_mismatch(cfg, "env", old)


def _make_dataset(cfg: CaptureConfig, count: int) -> None:
    """Commit the first `count` episodes of `cfg` without Ray, as an interrupted job would have."""
    from worldloom.capture.driver import prepare_target

    prepare_target(cfg, "env", target_roots(cfg)["env"])
    rec = Recorder(target_roots(cfg), cfg.env, cfg.resolution, cfg.resolution, writer_prefix="old")
    commit_shards(cfg.out, rec.record([(s, ("env",)) for s in expand_specs(cfg)[:count]])["shards"]["env"])


@pytest.mark.parametrize("change, words", [
    ({"steps": 9}, ["steps", "8", "9"]),
    ({"resolution": 80}, ["resolution"]),
    ({"player": "random"}, ["player"]),
    ({"codec": "png"}, ["codec"]),
    ({"antialias": True}, ["antialias"]),
    ({"strip_actions": "truth"}, ["label_source"]),
])
def test_output_holding_a_different_dataset_is_refused_untouched(tmp_path, change, words):
    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=2, steps=8, resolution=RES, progress=False)
    _make_dataset(cfg, 1)
    before = tree_digest(tmp_path / "d")
    if "strip_actions" in change:
        change = {"strip_actions": str(tmp_path / "truth")}
    with pytest.raises(UserError) as err:
        capture(CaptureConfig(**{**cfg.__dict__, **change}))
    assert "different dataset" in str(err.value) and all(w in str(err.value) for w in words)
    assert tree_digest(tmp_path / "d") == before


def test_output_not_made_by_capture_or_not_empty_is_refused(tmp_path):
    other = tmp_path / "other"
    with DatasetWriter(other, RES, RES, fps=20) as w:
        w.add_episode("ep", np.zeros((3, RES, RES, 3), np.uint8))
    before = tree_digest(other)
    with pytest.raises(UserError, match="different dataset"):
        capture(CaptureConfig(out=str(other), episodes=1, steps=4, resolution=RES))
    assert tree_digest(other) == before
    manifest = json.loads((other / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps({**manifest, "format_version": 99}))
    before = tree_digest(other)
    with pytest.raises(UserError, match="format_version"):  # another format
        capture(CaptureConfig(out=str(other), episodes=1, steps=4, resolution=RES))
    assert tree_digest(other) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        capture(CaptureConfig(out=str(tmp_path / "notes"), episodes=1, steps=4, resolution=RES))
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_a_size_the_env_does_not_support_is_refused_before_writing(tmp_path):
    # the voxel world renders 64..360 rows: refused by the config (while the flags are parsed), in its own range
    with pytest.raises(ValueError, match=r"--resolution must be a whole number in 64..360 \(pixels, for env 'voxel'\), got 32"):
        capture(CaptureConfig(out=str(tmp_path / "d"), episodes=1, steps=4, resolution=32))
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("out, truth", [("f", "f/truth"), ("t/footage", "t"), ("a/", "./a")])
def test_footage_and_truth_one_inside_the_other_are_refused_before_writing(tmp_path, monkeypatch, capsys, out, truth):
    """`--out f --strip-actions f/truth` made the footage dataset f, then refused the truth as inside it, and
    left f behind (empty, holding the next run to these flags); `--out t/footage --strip-actions t` left
    t/footage, then called t not empty (until 2026-12-08). Now one line while the flags are parsed."""
    monkeypatch.chdir(tmp_path)
    args = ["capture", "run", "--episodes", "1", "--steps", "4", "--resolution", str(RES), "--out", out,
            "--strip-actions", truth]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "--strip-actions" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_second_job_on_the_same_output_is_refused(tmp_path):
    import fcntl

    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=1, steps=4, resolution=RES, progress=False)
    _make_dataset(cfg, 0)
    from worldloom.datasets.jobs import JOB_LOCK_NAME

    with open(tmp_path / "d" / JOB_LOCK_NAME, "w") as held:  # as a running job holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another job .* is writing here; wait for it to end or stop it before "
                                            "this capture run"):
            capture(cfg)


def test_an_address_where_no_cluster_listens_fails_fast(tmp_path, monkeypatch):
    start = time.monotonic()
    with pytest.raises(UserError, match="no Ray cluster answers"):
        capture(CaptureConfig(out=str(tmp_path / "d"), episodes=1, steps=4, resolution=RES, address="127.0.0.1:1"))
    assert time.monotonic() - start < 30
    # Ray is joined before the dataset is created: no empty dataset is left whose config (steps 4)
    # would refuse the next run of other flags on the same --out (a new-user trial).
    assert not (tmp_path / "d").exists()
    # Ray's own convention: without --address, RAY_ADDRESS names the cluster to join (and the message says so).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(UserError, match="RAY_ADDRESS 127.0.0.1:1: no Ray cluster answers .* unset RAY_ADDRESS"):
        capture(CaptureConfig(out=str(tmp_path / "d"), episodes=1, steps=4, resolution=RES))


def test_unwritable_output_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"file/d: .*file is a file, so no folder can be made there"):
        capture(CaptureConfig(out=str(tmp_path / "file" / "d"), episodes=1, steps=4, resolution=RES))


def _parse(argv: list[str]):
    from worldloom.pipeline.cli import build_parser

    return build_parser().parse_args(argv)


# ---- one local Ray cluster for the rest ------------------------------------------------------


@contextlib.contextmanager
def local_ray():
    """A local Ray cluster of 2 CPUs on loopback; afterwards its processes and temp dir are gone."""
    ray_tmp = tempfile.mkdtemp(prefix="wlr", dir="/tmp")  # short: Ray's socket paths have a limit
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=ray_tmp,
             logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
        kill_tree_matching(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray() as cluster:
        yield cluster


def test_rerun_completes_only_what_is_missing(tmp_path, ray_cluster):
    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=5, steps=20, resolution=RES, num_workers=2, progress=False)
    _make_dataset(cfg, 2)
    old = {p: d for p, d in tree_digest(tmp_path / "d").items() if "part-old" in p}
    result = capture(cfg)
    assert (result.num_skipped, result.num_recorded, result.num_frames) == (2, 3, 60)
    assert {p: d for p, d in tree_digest(tmp_path / "d").items() if "part-old" in p} == old  # untouched
    assert_exactly_once(cfg.out, cfg)
    assert cli_main(["dataset", "validate", cfg.out]) == 0  # the command users run
    again = capture(cfg)
    assert (again.num_skipped, again.num_recorded) == (5, 0)


def test_damaged_shard_refused_then_repaired_and_recaptured(tmp_path, ray_cluster, capsys):
    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=4, steps=12, resolution=RES, num_workers=2,
                        episodes_per_shard=2, progress=False)
    capture(cfg)
    manifest = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert len(manifest["shards"]) == 2
    rel = manifest["shards"][0]["path"]
    # One table for both columns: Dataset.episodes lists episodes in id order, episodes.parquet in commit order.
    index = Dataset(cfg.out).episodes
    lost = set(index.filter(index.column("shard").to_numpy() == rel).column("episode_id").to_pylist())
    assert len(lost) == 2
    # zeroed at its own size (what a crash can leave on a local disk): refused as well, nothing written
    other = tmp_path / "d" / manifest["shards"][1]["path"]
    kept = other.read_bytes()
    other.write_bytes(bytes(len(kept)))
    with pytest.raises(UserError, match="not a Parquet file.*zeroed.*worldloom dataset repair"):
        capture(cfg)
    other.write_bytes(kept)
    os.truncate(tmp_path / "d" / rel, 5000)  # as `truncate -s` does
    with pytest.raises(UserError, match=f"size is 5000 bytes.*worldloom dataset repair {cfg.out}"):
        capture(cfg)
    capsys.readouterr()
    assert cli_main(["dataset", "validate", cfg.out]) == 1
    assert "worldloom dataset repair" in capsys.readouterr().err
    assert cli_main(["dataset", "repair", cfg.out]) == 0
    printed = capsys.readouterr().out
    assert all(eid in printed for eid in lost) and "damaged/" in printed
    assert (tmp_path / "d" / "damaged" / os.path.basename(rel)).stat().st_size == 5000  # set aside, not deleted
    assert committed_episode_ids(cfg.out) == {s.episode_id for s in expand_specs(cfg)} - lost
    assert validate(cfg.out) == []
    again = capture(cfg)
    assert (again.num_skipped, again.num_recorded) == (2, 2)
    assert_exactly_once(cfg.out, cfg)
    assert validate(cfg.out) == []
    # A shard deleted outright: the same way out.
    os.remove(tmp_path / "d" / json.loads((tmp_path / "d" / "dataset.json").read_text())["shards"][0]["path"])
    with pytest.raises(UserError, match="missing.*worldloom dataset repair"):
        capture(cfg)
    assert cli_main(["dataset", "repair", cfg.out]) == 0
    assert capture(cfg).num_recorded == 2
    assert_exactly_once(cfg.out, cfg)
    assert cli_main(["dataset", "repair", cfg.out]) == 0 and "nothing to repair" in capsys.readouterr().out
    # A shard an interrupted run wrote but did not commit: validate says the same command removes it, and it does.
    stray = tmp_path / "d" / "frames" / "part-interrupted-00000.parquet"
    shutil.copyfile(tmp_path / "d" / json.loads((tmp_path / "d" / "dataset.json").read_text())["shards"][0]["path"], stray)
    capsys.readouterr()
    assert cli_main(["dataset", "validate", cfg.out]) == 1
    assert "re-run the same command: it resumes, records those episodes and removes such files" in capsys.readouterr().err
    assert capture(cfg).num_orphans_removed == 1 and not stray.exists()
    assert validate(cfg.out) == []


def test_strip_actions_writes_footage_and_truth(tmp_path, ray_cluster):
    cfg = CaptureConfig(out=str(tmp_path / "footage"), strip_actions=str(tmp_path / "truth"), episodes=3, steps=16,
                        resolution=RES, num_workers=2, progress=False)
    capture(cfg)
    footage, truth = Dataset(cfg.out), Dataset(cfg.strip_actions)
    assert set(footage.episodes.column("label_source").to_pylist()) == {"none"}
    assert set(truth.episodes.column("label_source").to_pylist()) == {"env"}
    for spec in expand_specs(cfg):
        seen, labeled = footage.frames(spec.episode_id), truth.frames(spec.episode_id)
        assert seen.buttons is None and seen.camera is None and seen.label_source == "none"
        assert labeled.buttons.shape == (16, 20) and labeled.label_source == "env"
        np.testing.assert_array_equal(seen.frames, labeled.frames)
    assert_exactly_once(cfg.out, cfg)
    assert_exactly_once(cfg.strip_actions, cfg)
    assert capture(cfg).num_recorded == 0


def test_a_moved_footage_and_truth_pair_is_finished_by_the_command_inspect_prints(tmp_path, ray_cluster, monkeypatch,
                                                                                 capsys):
    """`dataset inspect` of an unfinished --strip-actions job prints the command that finishes it; the other
    dataset of the pair was named as the job had it (`--out footage`, relative to where it ran), so once the
    pair was moved (or inspect ran elsewhere) the command wrote the footage to a new, wrong folder (until
    2026-12-08). Now it names where the other dataset is: as stored, or beside this one."""
    import shlex

    made = tmp_path / "made"
    made.mkdir()
    monkeypatch.chdir(made)
    cfg = CaptureConfig(out="footage", strip_actions="truth", episodes=2, steps=8, resolution=RES, num_workers=1,
                        progress=False)
    capture(cfg)
    moved = tmp_path / "elsewhere" / "pair"
    moved.parent.mkdir()
    shutil.move(str(made), str(moved))
    for name in ("footage", "truth"):  # the job asked for 3 episodes: 2 committed, as a killed job leaves it
        manifest = json.loads((moved / name / "dataset.json").read_text())
        manifest["config"]["capture"]["episodes"] = 3
        (moved / name / "dataset.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    for name in ("truth", "footage"):
        assert cli_main(["dataset", "inspect", str(moved / name)]) == 1
        finish = capsys.readouterr().out.split("to finish it run: ")[1].splitlines()[0]
        args = shlex.split(finish)[1:]
        assert args[args.index("--out") + 1] == str(moved / "footage"), finish
        assert args[args.index("--strip-actions") + 1] == str(moved / "truth"), finish
    assert cli_main(args) == 0
    assert not (tmp_path / "footage").exists() and not (tmp_path / "truth").exists()
    for name in ("footage", "truth"):
        assert len(Dataset(moved / name)) == 3 and validate(moved / name) == []


def test_crafter_goes_through_the_same_path(tmp_path, ray_cluster):
    cfg = CaptureConfig(out=str(tmp_path / "d"), env="crafter", player="random", episodes=3, steps=25, resolution=RES,
                        num_workers=2, episodes_per_shard=2, progress=False)
    capture(cfg)
    assert_exactly_once(cfg.out, cfg)
    assert len(Dataset(cfg.out).manifest["shards"]) == 2  # episodes_per_shard=2: a shard of 2, one of 1
    assert set(Dataset(cfg.out).episodes.column("env").to_pylist()) == {"crafter"}


def test_writes_to_s3_on_a_local_server(tmp_path, ray_cluster, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="worldloom-test")
        uri = f"s3://worldloom-test/runs/d?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        cfg = CaptureConfig(out=uri, episodes=3, steps=10, resolution=RES, num_workers=2, progress=False)
        assert capture(cfg).num_recorded == 3
        assert_exactly_once(uri, cfg)
        assert Dataset(uri).frames(expand_specs(cfg)[0].episode_id).frames.shape == (10, RES, RES, 3)
        assert capture(cfg).num_recorded == 0
    finally:
        server.stop()


def test_capture_into_a_run_folder_is_one_line_and_nothing_is_written(tmp_path, capsys):
    from worldloom.checkpoint import write_run_config
    from worldloom.pipeline.cli import main

    run = tmp_path / "idm"
    run.mkdir()
    write_run_config(run, "idm", {})
    before = tree_digest(run)
    assert main(["capture", "run", "--env", "voxel", "--episodes", "1", "--steps", "8", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f'worldloom capture: error: --out {run} holds an IDM run (config.json with "kind": "idm"), not a '
                   "WorldLoom dataset; give a new --out (or the folder of a WorldLoom dataset to resume it)"), err
    assert tree_digest(run) == before
