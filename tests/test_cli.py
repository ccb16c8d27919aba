"""One CLI grammar (`worldloom <stage> <verb>`, one vocabulary of flags) and pipeline presets
whose stage configs agree with each other."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from worldloom import actions
from worldloom.pipeline.cli import DEPRECATED_FLAGS, VOCABULARY, build_parser, main, upgrade_argv
from worldloom.pipeline.job import PRESETS, PipelineConfig, _paths, stage_configs

# Words the vocabulary replaced: a visible flag may not use them (hidden deprecated aliases may).
SYNONYMS = {"--workers", "--gpu", "--input-dir", "--output", "--output-dir", "--dataset", "--datasets",
            "--num-gpus", "--iters", "--iterations", "--epochs", "--ckpt-every", "--height", "--width", "--size",
            "--train-steps", "--total-steps", "--cpu", "--cuda"}


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, action) for every option of every leaf command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))
        elif action.option_strings:
            yield path, action


def test_every_command_is_stage_then_verb():
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for stage, parser in top.choices.items():
        verbs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        assert verbs, f"`worldloom {stage}` has no verbs"
        assert all(re.fullmatch(r"[a-z]+", v) for v in verbs[0].choices), (stage, list(verbs[0].choices))


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the top command and every stage and verb under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_commands_help_prints(capsys):
    """`--help` of every command exits 0 with its text: argparse %-formats help strings, and a doc
    saying "5%" made `worldloom pipeline run --help` a TypeError traceback."""
    commands = list(_commands(build_parser()))
    assert len(commands) > 30
    for path, _ in commands:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: worldloom") and "Traceback" not in out, path


def test_flags_use_one_vocabulary():
    seen: dict[str, set] = {}
    for path, action in _walk(build_parser()):
        hidden = action.help == argparse.SUPPRESS
        for flag in action.option_strings:
            if flag in ("-h", "--help") or not flag.startswith("--"):
                continue
            assert re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*(\.[a-z0-9]+(-[a-z0-9]+)*)?", flag), (path, flag)
            if flag in SYNONYMS or flag in DEPRECATED_FLAGS:
                assert hidden, f"`worldloom {' '.join(path)}` shows {flag}: the vocabulary word is " \
                               f"{DEPRECATED_FLAGS.get(flag, 'in pipeline/cli.py VOCABULARY')}"
            if flag in VOCABULARY and not hidden:
                kind = getattr(action.type, "__name__", None) if action.type is not None else "str"
                seen.setdefault(flag, set()).add((action.nargs, kind))
    # a vocabulary word is parsed the same way everywhere (e.g. --data always takes one or more paths)
    assert seen["--num-workers"] == {(None, "int")}, seen["--num-workers"]
    assert seen["--max-steps"] == {(None, "int")}, seen["--max-steps"]
    assert seen["--device"] == {(None, "str")}, seen["--device"]
    assert seen["--out"] == {(None, "str")}, seen["--out"]
    steps_commands = {path for path, a in _walk(build_parser()) if "--steps" in a.option_strings and a.help != argparse.SUPPRESS}
    assert steps_commands <= {("capture", "run"), ("envs", "play"), ("envs", "players")}, steps_commands  # env steps only


def test_old_spellings_work_for_a_release_with_one_line(capsys, tmp_path):
    assert upgrade_argv(["rollout", "--model", "m"]) == ["pretrain", "rollout", "--model", "m"]
    assert upgrade_argv(["capture", "--episodes", "2"]) == ["capture", "run", "--episodes", "2"]
    assert upgrade_argv(["pipeline", "--preset", "tiny"]) == ["pipeline", "run", "--preset", "tiny"]
    assert upgrade_argv(["pretrain", "--data", "d"]) == ["pretrain", "train", "--data", "d"]
    assert upgrade_argv(["pretrain", "eval", "--model", "m"]) == ["pretrain", "eval", "--model", "m"]
    err = capsys.readouterr().err
    assert err.count("deprecated") == 4 and "use `worldloom pretrain rollout`" in err
    # through main: the old spelling parses (and then fails on the missing run, as one line)
    assert main(["pipeline", "--preset", "huge", "--workers", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--workers is deprecated" in err and "preset must be one of" in err


def test_a_stage_that_fails_to_import_fails_loudly(monkeypatch):
    import worldloom.pipeline.cli as cli

    monkeypatch.setattr(cli, "STAGES", cli.STAGES + (("broken", "worldloom.no_such_stage", "x"),))
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_stage_configs_that_agree(preset, tmp_path):
    cfg = PipelineConfig(out=str(tmp_path), preset=preset, num_workers=2)
    configs = stage_configs(cfg, _paths(tmp_path))
    sizes = cfg.resolved_sizes
    res = sizes.resolution
    for capture in configs["capture"].values():
        assert capture.resolution == res and capture.steps == sizes.steps and capture.num_workers == 2
    for name, idm in configs["idm"].items():
        m = idm.model_config
        assert (m.height, m.width) == (res, res), (preset, name)
        assert sizes.steps >= m.num_frames + 2 * m.context, (preset, name, "an episode holds one IDM window")
    wm = configs["pretrain"].model_config
    assert wm.image_size == res and wm.image_size % wm.patch_size == 0
    assert sizes.steps >= wm.num_frames - 1 + configs["pretrain_eval"].horizon  # context + horizon fit an episode
    # engine truth: as many context frames as the world model reads, at its resolution, scored by the eval
    for engine in configs["engine"].values():
        assert engine.context == wm.num_frames - 1 and engine.resolution == res, (preset, engine)
    ev = configs["pretrain_eval"]
    assert (ev.counterfactual is not None) == (sizes.engine_states > 0) and not ev.revisit_whole_path
    assert (ev.revisit is not None) == (sizes.revisit_states > 0)
    import torch

    from worldloom.idm.model import IDM
    from worldloom.pretrain.model import ACTION_DIM

    # the action encodings both models read come from the one action space module
    with torch.device("meta"):  # shapes only: the large presets cost nothing to build here
        idm = IDM(configs["idm"]["idm"].model_config)
    camera_head = idm.camera_reader.head if idm.camera_reader is not None else idm.head  # (the trunk's: buttons only)
    assert idm.head.out_features == actions.NUM_BUTTONS + (0 if idm.camera_reader is not None else 2 * actions.NUM_CAMERA_BINS)
    assert camera_head.out_features in (2 * actions.NUM_CAMERA_BINS, actions.NUM_BUTTONS + 2 * actions.NUM_CAMERA_BINS)
    assert ACTION_DIM == actions.WORLD_MODEL_ACTION_DIM
    assert configs["label"].model == configs["idm"]["idm"].out


def test_cluster_settings_reach_every_stage(tmp_path):
    cfg = PipelineConfig(out=str(tmp_path), preset="large", address="10.0.0.1:6379", device="cuda", num_workers=64)
    configs = stage_configs(cfg, _paths(tmp_path))
    assert all(c.address == cfg.address and c.num_workers == 64 for c in configs["capture"].values())
    assert configs["label"].address == cfg.address and configs["label"].num_workers == 64
    wm = configs["pretrain"]
    assert (wm.address, wm.device, wm.num_workers) == (cfg.address, "cuda", 0)  # 0: one Ray Train worker per GPU
    assert all(c.device == "cuda" for c in configs["idm"].values())


def test_a_cut_down_preset_is_the_same_code_path(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["pipeline", "run", "--preset", "small", "--sizes.steps", "72", "--out", str(tmp_path)])
    from worldloom.config import dataclass_from_args

    cfg = dataclass_from_args(PipelineConfig, args)
    assert cfg.resolved_sizes.steps == 72 and cfg.resolved_sizes.idm_preset == "small"  # the rest is small's
    assert cfg.resolved_sizes.labeled_episodes == PRESETS["small"].labeled_episodes


def test_readme_preset_table_matches_presets():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|", readme, flags=re.M))
    assert set(rows) == set(PRESETS), rows
    for name, preset in PRESETS.items():
        text = rows[name]
        assert f"{preset.resolution}x{preset.resolution}" in text, (name, text)
        assert f"{preset.steps:,} steps" in text or f"{preset.steps} steps" in text, (name, text)


def test_ctrl_c_in_a_resumable_command_says_how_to_resume(monkeypatch, capsys, tmp_path):
    # Ctrl-C is raised from inside the capture driver (a user's key press cannot be sent here
    # without a terminal); everything around it, parser and handler, is the real one.
    import worldloom.capture.driver as driver

    def pressed(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "capture", pressed)
    assert main(["capture", "run", "--out", str(tmp_path / "d")]) == 130
    assert capsys.readouterr().err.strip() == "worldloom capture: interrupted; re-run the same command to resume"
    import worldloom.datasets.summary as summary

    monkeypatch.setattr(summary, "summarize", pressed)
    assert main(["dataset", "inspect", str(tmp_path / "d")]) == 130
    assert capsys.readouterr().err.strip() == "worldloom dataset: interrupted"


# Numeric flags refused while the flags are parsed (the config's __post_init__), in one line naming the
# flag, the value and the range, with nothing written: not accepted by one check and refused by another later.
RANGE_CASES = [
    (["idm", "label", "--model", "m", "--data", "d", "--fps", "0"], "--fps must be a number in 1..240 (steps per second), got 0.0"),
    (["idm", "label", "--model", "m", "--data", "d", "--fps", "-5"], "--fps must be a number in 1..240"),
    (["idm", "label", "--model", "m", "--data", "d", "--fps", "1e9"], "--fps must be a number in 1..240"),
    (["idm", "label", "--model", "m", "--data", "d", "--num-workers", "-1"],
     "--num-workers must be a whole number in 0..4096 (1: this process; 0: one per CPU of the cluster), got -1"),
    (["dataset", "ingest", "--data", "d", "--fps", "0"], "--fps must be a number in 1..240 (steps per second), got 0.0"),
    (["dataset", "ingest", "--data", "d", "--resolution", "8x8"], "--resolution must be a whole number in 16..4096"),
    (["capture", "run", "--resolution", "32"],
     "--resolution must be a whole number in 64..360 (pixels, for env 'voxel'), got 32"),
    (["capture", "run", "--env", "minetest", "--resolution", "600"], "--resolution must be a whole number in 64..512"),
    (["capture", "run", "--num-workers", "-1"],
     "--num-workers must be a whole number in 0..4096 (0: one per CPU of the cluster), got -1"),
    (["capture", "branches", "--resolution", "0"], "--resolution must be a whole number in 64..360"),
    (["pipeline", "run", "--sizes.steps", "3"],
     "--sizes.steps must be a whole number in 18..1000000 (steps per episode; at least the world model's 2 context "
     "frames and the eval horizon of 16), got 3"),
    (["pipeline", "run", "--preset", "micro", "--sizes.idm-preset", "tiny", "--sizes.steps", "12"],
     "--sizes.steps must be a whole number in 16..1000000 (steps per episode; at least the IDM's window of 16 frames"),
    (["pipeline", "run", "--sizes.resolution", "32"], "--sizes.resolution must be a whole number in 64..360"),
    (["pipeline", "run", "--preset", "micro", "--sizes.steps", "10", "--sizes.labeled-episodes", "2"],
     "--sizes.wm-batch-size must be a whole number in 1..10 (clips per step; at most the 2 x 5 frame pairs of the "
     "labeled episodes the camera field of view is fitted on), got 16"),
    (["pipeline", "run", "--sizes.eval-clips", "0"], "--sizes.eval-clips must be a whole number in 1..1000000 (clips), got 0"),
    (["agent", "study", "--sizes.steps", "0"],
     "--sizes.steps must be a whole number in 16..1000000 (steps per episode; at least the IDM's window of 16 frames "
     "(tiny)), got 0"),
    (["agent", "study", "--sizes.bc-max-steps", "0"], "--sizes.bc-max-steps must be a whole number in 1..100000000"),
    (["agent", "study", "--sizes.videos", "-1"], "--sizes.videos must be a whole number in 0..1000"),
    # a config's own check names the flag typed, not the dataclass field (nested ones too)
    (["idm", "train", "--data", "d", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["idm", "train", "--data", "d", "--model.width", "0"], "--model.width must be >= 1, got 0"),
    # refused while parsing, not by torch once the run's config.json is written (a traceback)
    (["pretrain", "train", "--data", "d", "--threads", "-1"], "--threads must be >= 0, got -1"),
    (["pretrain", "train", "--data", "d", "--loader-workers", "-1"], "--loader-workers must be >= 0, got -1"),
    (["pretrain", "train", "--data", "d", "--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0"),
    (["pretrain", "train", "--data", "d", "--ae-steps", "-1"], "--ae-steps must be >= 0, got -1"),
    (["idm", "train", "--data", "d", "--weight-decay", "-0.5"], "--weight-decay must be >= 0, got -0.5"),
    (["agent", "train", "--data", "d", "--camera-weight", "-1"], "--camera-weight must be >= 0, got -1.0"),
]


@pytest.mark.parametrize("argv,message", RANGE_CASES, ids=[" ".join(c[0][:2] + c[0][-2:]) for c in RANGE_CASES])
def test_a_numeric_flag_out_of_range_is_refused_while_parsing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"worldloom {argv[0]}: error: {message}"), err
    assert not out.exists()


def test_num_workers_0_is_one_per_cpu_of_the_cluster_in_every_command_of_ray_actors():
    from worldloom.agent.evaluate import EvalConfig as AgentEvalConfig
    from worldloom.capture import CaptureConfig
    from worldloom.datasets.ingest import IngestConfig
    from worldloom.idm.label import LabelConfig
    from worldloom.pipeline.agent_study import StudyConfig

    configs = [CaptureConfig(out="o", num_workers=0), IngestConfig(data=("d",), out="o", num_workers=0),
               LabelConfig(model="m", data="d", out="o", num_workers=0), PipelineConfig(out="o", num_workers=0),
               StudyConfig(out="o", num_workers=0), AgentEvalConfig(policy="p", task="explore", num_workers=0)]
    for cfg in configs:
        help_text = next(f.metadata["help"] for f in cfg.__dataclass_fields__.values() if f.name == "num_workers")
        assert "0: one per CPU of the cluster" in help_text, (type(cfg), help_text)


def test_env_resolution_ranges_are_the_envs_own():
    from worldloom.envs import ENV_NAMES, RESOLUTIONS
    from worldloom.envs.minetest_env import MinetestConfig
    from worldloom.envs.voxel import VoxelConfig

    assert set(RESOLUTIONS) == set(ENV_NAMES)
    for config, (low, high) in ((VoxelConfig, RESOLUTIONS["voxel"]), (MinetestConfig, RESOLUTIONS["minetest"])):
        config(height=low, width=low), config(height=high, width=high)  # accepted at both ends
        for bad in (low - 1, high + 1):
            with pytest.raises(ValueError):
                config(height=bad, width=bad)


@pytest.mark.parametrize("side", ["low", "high"])
def test_crafter_renders_at_both_ends_of_its_resolution_range(side):
    """Crafter draws its 9x9 view at size // 9 pixels a tile and its inventory digits at 0.6 of that, so at 16
    and 17 pixels a digit was 0 pixels: `capture run --env crafter --resolution 16` passed the flags' check
    (16..1024) and failed in Crafter with 'height and width must be > 0'. Both ends of the range render."""
    from worldloom.envs import RESOLUTIONS, check_resolution, make_env

    low, high = RESOLUTIONS["crafter"]
    size = low if side == "low" else high
    env = make_env("crafter", height=size, width=size)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (size, size, 3) and env.step(env.action_space.sample())[0].shape == (size, size, 3)
    bad = low - 1 if side == "low" else high + 1
    with pytest.raises(ValueError, match=f"{low}..{high}"):
        check_resolution("crafter", bad)
    with pytest.raises(ValueError, match=f"{low}..{high}"):
        make_env("crafter", height=bad, width=bad)


def test_an_unknown_flag_is_refused_by_its_subcommand_with_the_nearest_spelling(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["idm", "train", "--data", "d", "--out", "o", "--batchsize", "3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: worldloom idm train ")
    assert err.strip().splitlines()[-1] == (
        "worldloom idm train: error: unrecognized argument --batchsize; did you mean --batch-size?")
    with pytest.raises(SystemExit):
        main(["dataset", "inspect", "d", "--zzz"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "worldloom dataset inspect: error: unrecognized argument --zzz; see the usage above")


def test_ctrl_c_while_the_stage_loads_is_one_line_and_130(monkeypatch, capsys):
    import importlib
    import os
    import signal

    import worldloom.pipeline.cli as cli

    real_import = importlib.import_module

    def ctrl_c_while_importing(name, *args):  # a real SIGINT, as the terminal sends it, mid-import
        os.kill(os.getpid(), signal.SIGINT)
        return real_import(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", ctrl_c_while_importing)
    assert main(["dataset", "inspect", "d"]) == 130
    assert capsys.readouterr().err.strip() == "worldloom dataset: interrupted"


def test_every_number_flag_refuses_nan_and_inf_while_parsing():
    """`--lr nan` passed every `lr <= 0` check after it (a comparison with NaN is false) and reached the
    optimizer as a traceback; every float flag of every command now refuses NaN and infinities itself."""
    checked = []
    for path, action in _walk(build_parser()):
        try:
            is_float = isinstance(action.type("0.5"), float)
        except Exception:  # noqa: BLE001 - not a number flag (str, int, JSON, ...)
            continue
        if not is_float:
            continue
        for bad in ("nan", "inf", "-inf", "NaN"):
            with pytest.raises(argparse.ArgumentTypeError, match="finite"):
                action.type(bad)
        checked.append((*path, action.option_strings[0]))
    assert ("idm", "train", "--lr") in checked and ("pretrain", "train", "--lr") in checked
    assert ("agent", "train", "--lr") in checked and ("dataset", "captions", "--clip-seconds") in checked


@pytest.mark.parametrize("argv, unloaded", [(["--help"], ("torch", "numba", "ray")), ([], ("torch", "numba", "ray")),
                                             (["dataset", "--help"], ("torch", "ray"))])
def test_help_and_a_torch_free_stage_load_no_torch(argv, unloaded):
    """`worldloom --help` imported every stage (torch, numba: 5 s before the list of stages showed);
    it loads none of them now, and the dataset stage no torch."""
    script = ("import sys; from worldloom.pipeline.cli import main\n"
              f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
              f"print(sorted(m for m in {unloaded!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: worldloom" in proc.stdout, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


URI_OUT = "s3://KEY:SECRET@bucket/x?endpoint_override=127.0.0.1:9&scheme=http"


@pytest.mark.parametrize("argv", [
    ["idm", "train", "--data", "{data}", "--preset", "micro", "--max-steps", "1", "--out", URI_OUT],
    ["pretrain", "train", "--data", "{data}", "--max-steps", "1", "--out", URI_OUT],
    ["agent", "train", "--data", "{data}", "--preset", "micro", "--max-steps", "1", "--out", URI_OUT],
    ["agent", "eval", "--policy", "random", "--task", "explore", "--episodes", "1", "--out", URI_OUT],
    ["pipeline", "run", "--preset", "micro", "--out", URI_OUT],
    ["agent", "study", "--preset", "micro", "--out", URI_OUT],
    ["capture", "branches", "--episodes", "1", "--out", URI_OUT + ".safetensors"],
    ["pretrain", "retrieval", "--model", "m", "--data", "{data}", "--heldout", "{data}", "--out", URI_OUT],
    ["envs", "show", "--env", "voxel", "--seeds", "0-1", "--out", URI_OUT + ".png"],
    ["dataset", "captions", "{data}", "--out", URI_OUT + ".jsonl"],
])
def test_a_uri_where_a_local_file_or_run_is_written_is_one_line_before_the_work(argv, small_dataset, tmp_path,
                                                                              monkeypatch, capsys):
    """Runs, reports, pictures and videos are local files; datasets may live in an object store. Until session 58
    pathlib read `--out s3://b/run` as the local folder `s3:/b/run`: the run went there (exit 0), nothing reached
    the bucket, and `capture branches` printed the URI's secret."""
    monkeypatch.chdir(tmp_path)
    assert main([a.replace("{data}", str(small_dataset)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is an object-store URI" in err and "s3://***@bucket/x" in err, err
    assert "SECRET" not in err and not (tmp_path / "s3:").exists()


@pytest.mark.parametrize("argv, kind", [
    (["idm", "train", "--data", "{data}", "--preset", "micro", "--max-steps", "1"], "idm"),
    (["pretrain", "train", "--data", "{data}", "--max-steps", "1"], "world_model"),
    (["agent", "train", "--data", "{data}", "--preset", "micro", "--max-steps", "1"], "policy"),
    (["pipeline", "run", "--preset", "micro"], "pipeline"),
    (["agent", "study", "--preset", "micro"], "study"),
])
def test_a_run_another_command_is_writing_is_refused_in_one_line(argv, kind, small_dataset, tmp_path, capsys):
    """Two `idm train --out runs/idm` side by side both ran until session 58, each replacing the other's checkpoints
    and metrics (a new-user trial). The run folder is held while a command writes it (`run_lock`, here held by the
    test as the other command); the lock and a folder it made empty are gone once it ends."""
    from worldloom.folders import run_lock

    out = tmp_path / "run"
    with run_lock(out, kind, "test"):
        assert main([*(a.replace("{data}", str(small_dataset)) for a in argv), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"--out {out}: another {' '.join(argv[:2])} (or another command) is writing" in err
        assert err.endswith("there now; wait for it to end or stop it first"), err
    assert not out.exists()


def test_progress_in_a_log_file_is_lines_not_a_redraw_a_step(tmp_path):
    """`worldloom ... 2> log`: a bar's redraws are lines (no \\r), the first and the last of each bar and
    one every 30 s between (LogLines), not one a step: a 12-step training run writes 2 bar lines."""
    from conftest import pixel_frames, random_actions

    from worldloom.datasets import DatasetWriter

    with DatasetWriter(tmp_path / "ds", 32, 32, fps=20) as w:
        for i in range(3):
            buttons, camera = random_actions(40, seed=i)
            w.add_episode(f"ep-{i}", pixel_frames(40, 32, 32, seed=i), buttons=buttons, camera=camera)
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        rc = subprocess.run([str(Path(sys.executable).with_name("worldloom")), "idm", "train", "--data", str(tmp_path / "ds"),
                             "--preset", "micro", "--model.height", "32", "--model.width", "32", "--max-steps", "12",
                             "--threads", "1", "--out", str(tmp_path / "run")], stderr=err, stdout=subprocess.DEVNULL,
                            timeout=300).returncode
    text = log.read_text()
    assert rc == 0, text
    assert "\r" not in text, repr(text[-500:])
    bars = [line for line in text.splitlines() if re.match(r"idm train:\s+\d+%\|", line)]
    assert len(bars) == 2 and "0/12" in bars[0] and "12/12" in bars[-1], text
    assert all(line == line.rstrip() for line in text.splitlines()), "a redraw's blanking spaces were kept"


@pytest.mark.ray
def test_a_ray_workers_bar_in_a_log_file_is_its_first_and_last_lines(tmp_path):
    """Ray passes each of a worker's redraws to the driver as a line: a study's training bars in a log file were
    5,125 lines (a session-60 tiny8 run). A worker of ray_session's cluster redraws every 30 s there, so a
    2-second bar is its first and last lines; TQDM_MININTERVAL is not left in the driver's environment."""
    script = (
        "import os, sys, time, ray\n"
        "from worldloom.cluster import ray_session\n"
        "def work():\n"
        "    from tqdm import tqdm\n"
        "    for _ in tqdm(range(40), desc='worker bar'):\n"
        "        time.sleep(0.05)\n"
        "with ray_session(num_cpus=1):\n"
        "    ray.get(ray.remote(num_cpus=1)(work).remote())\n"
        "    time.sleep(1.5)  # the log monitor's last lines\n"
        "    print('driver env', os.environ.get('TQDM_MININTERVAL'))\n")
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        out = subprocess.run([sys.executable, "-c", script], stderr=err, stdout=subprocess.PIPE, text=True, timeout=300)
    text = log.read_text()
    assert out.returncode == 0, text[-2000:]
    bars = [line for line in text.splitlines() if "worker bar:" in line]
    assert len(bars) == 2 and "0/40" in bars[0] and "40/40" in bars[-1], text[-2000:]
    assert "driver env None" in out.stdout, out.stdout


def test_a_bar_whose_last_redraw_was_written_on_the_clock_is_not_written_again_when_it_closes():
    """A study's log (2> log) showed the scripted expert's Explore evaluation bar twice. Two ways: the bar's last
    update came 30 s after the last line written on the clock, so LogLines wrote that redraw as a line, and the
    bar's close, which redraws the same state and ends it with a newline, wrote it again; or the bar began 30 s after
    the last line on the clock (the bars closed since did not count), so its first redraw was written, then its
    last line a second later."""
    import io
    import time

    from tqdm import tqdm

    from worldloom.progress import LogLines

    out = io.StringIO()
    stream = LogLines(out, every_s=0.3)
    with tqdm(total=2, desc="agent eval", unit="episode", file=stream, mininterval=0) as bar:
        time.sleep(0.35)
        bar.update(2)  # on the clock: written
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "0/2" in lines[0] and "2/2" in lines[1], lines
    # a bar of a second that begins 30 s after the last line on the clock, but just after another bar closed: its
    # last line alone (its first was written too, the clock counting from the line on the clock alone)
    now = [0.0]
    out = io.StringIO()
    stream = LogLines(out, every_s=30, clock=lambda: now[0])
    for t, text in [(0, "\ra 0/1 [00:00]"), (1, "\ra 1/1 [00:01]"), (1, "\n"), (29, "\rb 0/1 [00:00]"),
                    (29.5, "\rb 1/1 [00:00]"), (29.5, "\n"), (31, "\rc 0/2 [00:00]"), (31.2, "\rc 1/2 [00:00]"),
                    (31.5, "\rc 2/2 [00:00]"), (31.5, "\n")]:
        now[0] = t
        stream.write(text)
    assert out.getvalue() == "a 0/1 [00:00]\na 1/1 [00:01]\nb 1/1 [00:00]\nc 2/2 [00:00]\n"
    # a close that says more than the line on the clock (another count) is still written, and a next bar's lines too
    out = io.StringIO()
    stream = LogLines(out, every_s=30, clock=lambda: now[0])
    for t, text in [(0, "\rbar 0/4 [00:00]"), (31, "\rbar 3/4 [00:31]"), (32, "\rbar 4/4 [00:32]"), (32, "\n"),
                    (70, "\rnext 1/1 [00:00]"), (70, "\rnext 1/1 [00:00]"), (70, "\n")]:
        now[0] = t
        stream.write(text)
    assert out.getvalue() == "bar 0/4 [00:00]\nbar 3/4 [00:31]\nbar 4/4 [00:32]\nnext 1/1 [00:00]\n"


def test_log_lines_keep_messages_and_drop_cleared_redraws():
    import io

    from worldloom.progress import LogLines

    now = [0.0]
    out = io.StringIO()
    stream = LogLines(out, every_s=30, clock=lambda: now[0])
    for t, text in [(0, "\rbar 0/4"), (1, "\rbar 1/4   "), (31, "\rbar 2/4   "), (32, "\r      \r"), (32, "a message\n"),
                    (33, "\rbar 3/4"), (40, "\rbar 4/4"), (40, "\n"), (41, "\n"), (41, "in "), (41, "parts\n"),
                    (50, "\rcleared 1"), (51, "\r          \r"), (52, "worldloom x: error: ...\n")]:
        now[0] = t
        stream.write(text)
    assert out.getvalue() == "bar 0/4\nbar 2/4\na message\nbar 4/4\n\nin parts\nworldloom x: error: ...\n"
    assert stream.isatty() is False
