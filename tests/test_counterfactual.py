"""Engine-truth controllability: branches played from saved VoxelWorld states, their file (round
trip, damaged or foreign files refused in one line), the score's construction (the engine scores
1, copy-last 0.5, swapped branches 0), and micro evals of small world models beside their baselines.

    pytest tests/test_counterfactual.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worldloom.capture.branches import BRANCHES, engine_cases, play_from, to_branches
from worldloom.datasets.branches import load_branches, save_branches
from worldloom.envs import make_env
from worldloom.errors import UserError
from worldloom.pretrain.autoencoder import PixelCodec
from worldloom.pretrain.counterfactual import (
    controllability,
    counterfactual_scores,
    model_branches,
    seen_only_frames,
)
from worldloom.pretrain.model import WorldModel, WorldModelConfig

CONTEXT, HORIZON = 3, 4


@pytest.fixture(scope="module")
def env():
    return make_env("voxel", height=64, width=64, world_size=(32, 32, 32))


@pytest.fixture(scope="module")
def cases(env):
    return engine_cases(env, "mixture", seeds=[1, 2], context=CONTEXT, horizon=HORIZON, warmup=10)


def test_branches_are_played_from_the_saved_state(env, cases):
    assert len(cases) == 2
    for case in cases:
        assert case.context_frames.shape == (CONTEXT, 64, 64, 3) and len(case.context_actions) == CONTEXT - 1
        assert list(case.branches) == list(BRANCHES) and case.frames.shape == (len(BRANCHES), HORIZON, 64, 64, 3)
        # the player's branch, recorded while it played on, is what restoring the state and replaying gives
        assert np.array_equal(play_from(env, case.state, case.branches["player"]), case.frames[0])
        obs, info = env.set_state(case.state)
        assert np.array_equal(obs, case.context_frames[-1])
        assert len(case.context_pitch) == CONTEXT and case.context_pitch[-1] == info["pitch"]  # the view's, per frame
        # a turn, a walk and standing still show different things after HORIZON steps
        last = case.frames[1:, -1].reshape(len(BRANCHES) - 1, -1)
        assert all(not np.array_equal(last[i], last[j]) for i in range(3) for j in range(i + 1, 3))


def test_the_score_by_construction(cases):
    engine = np.stack([c.frames for c in cases])  # (S, K, H, 64, 64, 3)
    assert controllability(engine, engine)["by_horizon"] == [1.0] * HORIZON
    copy_last = np.broadcast_to(np.stack([c.context_frames[-1] for c in cases])[:, None, None], engine.shape)
    assert controllability(np.ascontiguousarray(copy_last), engine)["by_horizon"] == [0.5] * HORIZON
    swapped = engine[:, [1, 0]]  # two branches, each generated as the other
    assert controllability(swapped, engine[:, :2])["by_horizon"] == [0.0] * HORIZON
    # pairs whose engine frames are equal say nothing
    same = np.repeat(engine[:, :1], 2, axis=1)
    assert controllability(same, same) == {"by_horizon": [None] * HORIZON, "pairs": [0] * HORIZON, "ci95": [None] * HORIZON}
    # the 95% interval: a bootstrap over the states, exact where every state scores the same
    assert controllability(engine, engine)["ci95"] == [[1.0, 1.0]] * HORIZON
    assert controllability(np.ascontiguousarray(copy_last), engine)["ci95"] == [[0.5, 0.5]] * HORIZON
    mixed = engine[:, :2].copy()
    mixed[0] = mixed[0, [1, 0]]  # state 0 generated swapped (scores 0), state 1 as the engine (1)
    two = controllability(mixed, engine[:, :2])
    eight = controllability(np.concatenate([mixed] * 4), np.concatenate([engine[:, :2]] * 4))
    for h in range(HORIZON):
        assert two["ci95"][h][0] <= two["by_horizon"][h] <= two["ci95"][h][1]
        assert two["ci95"][h] == [0.0, 1.0]  # two states that disagree: anything between
        assert 0.0 < eight["ci95"][h][0] < eight["by_horizon"][h] < eight["ci95"][h][1] < 1.0  # more states, narrower
    with pytest.raises(ValueError, match="must both be"):
        controllability(engine[:, :, :2], engine)


@pytest.fixture(scope="module")
def branches(cases, tmp_path_factory):
    """The cases written to a branches file and read back."""
    path = tmp_path_factory.mktemp("branches") / "b.safetensors"
    save_branches(path, to_branches(cases, {"env": "voxel"}))
    return load_branches(path)


def test_the_branches_file_round_trips_and_refuses_bad_files(cases, branches, tmp_path):
    assert branches.names == list(BRANCHES) and branches.info["seeds"] == [1, 2]
    assert np.array_equal(branches.frames, np.stack([c.frames for c in cases]))
    assert np.array_equal(branches.context_frames, np.stack([c.context_frames for c in cases]))
    assert branches.branch_buttons.shape == (2, len(BRANCHES), HORIZON, 20) and branches.context_camera.shape == (2, CONTEXT - 1, 2)
    turn = BRANCHES.index("turn")
    assert (branches.branch_camera[:, turn, :, 1] > 0).all() and branches.branch_buttons[:, BRANCHES.index("walk"), :, 2].all()
    assert np.array_equal(branches.context_pitch, np.array([c.context_pitch for c in cases], np.float32))  # JSON round trip
    old = to_branches(cases, {"env": "voxel"})
    old.info.pop("context_pitch")  # a file written before the pitch was kept: none, so no world-vertical turn
    assert old.context_pitch is None
    good = tmp_path / "good.safetensors"
    save_branches(good, branches)
    data = good.read_bytes()
    for name, blob, message in (("cut", data[: len(data) // 2], "damaged"), ("text", b"hello world, not a file", "not a WorldLoom"),
                                ("none", None, "cannot read it")):
        bad = tmp_path / name
        if blob is not None:
            bad.write_bytes(blob)
        with pytest.raises(UserError, match=message) as err:
            load_branches(bad)
        assert "\n" not in str(err.value)


def test_the_seen_only_reference_fills_what_no_context_frame_saw_from_what_one_did(cases):
    engine = np.stack([c.frames for c in cases])  # (S, K, H, 64, 64, 3)
    context = np.stack([c.context_frames[-1] for c in cases])
    camera = np.zeros((*engine.shape[:3], 2), np.float32)
    assert np.array_equal(seen_only_frames(engine, camera, 70.0, context), engine)  # nothing turned: nothing unseen
    assert np.array_equal(seen_only_frames(engine, camera + 6.0, 0.0, context), engine)  # no camera model: as it is
    around = camera.copy()
    around[:, 0, -1, 1] = 180.0  # turned away: nothing seen, the context's mean colour, not the engine's
    behind = seen_only_frames(engine, around, 70.0, context)[:, 0, -1]
    assert (behind == context.reshape(len(cases), -1, 3).mean(1).round().astype(np.uint8)[:, None, None]).all()
    camera[:, 1, :, 1] = 6.0  # branch 1 turns right 6 degrees a step: new view comes in on the right
    ref = seen_only_frames(engine, camera, 70.0, context)
    assert np.array_equal(ref[:, [0, 2, 3]], engine[:, [0, 2, 3]])
    from worldloom.pretrain.camera import rotation_grid

    unseen = (rotation_grid(torch.tensor([[0.0, 24.0]]), 70.0, 64, 64).abs() > 1).any(-1)[0].numpy()  # after 4 steps
    assert unseen[:, 41:].all() and not unseen[:, :24].any()  # the right third (and corners: perspective)
    for s in range(len(cases)):
        last, truth = ref[s, 1, -1], engine[s, 1, -1]
        assert np.array_equal(last[~unseen], truth[~unseen])  # what was seen is the engine's
        seen_colours = {tuple(c) for c in truth[~unseen]}
        assert all(tuple(c) in seen_colours for c in last[unseen])  # the rest only repeats it
    assert not np.array_equal(ref[:, 1, -1], engine[:, 1, -1])
    ref_scores = controllability(ref, engine)["by_horizon"]
    assert ref_scores[0] == 1.0 and all(0.5 <= v <= 1.0 for v in ref_scores)
    # as the engine turns and zooms: looking down 60 degrees a yaw swings the view about the point below,
    # so what turns into view is not the right third; a sprint that stops narrows the view (a zoom in:
    # everything was seen), one that starts widens it (the border was not)
    level = seen_only_frames(engine, camera, 70.0, context)
    down = seen_only_frames(engine, camera, 70.0, context, np.full(len(cases), 60.0))
    assert not np.array_equal(level[:, 1, -1], down[:, 1, -1]) and np.array_equal(down[:, [0, 2, 3]], engine[:, [0, 2, 3]])
    still = np.zeros_like(camera)
    fov_from, fov_to = np.full(len(cases), 77.0), np.full(engine.shape[:3], 70.0)
    assert np.array_equal(seen_only_frames(engine, still, 70.0, context, None, (fov_from, fov_to)), engine)
    widened = seen_only_frames(engine, still, 70.0, context, None, (fov_to[:, 0, 0], np.full(engine.shape[:3], 77.0)))
    assert not np.array_equal(widened, engine) and np.array_equal(widened[..., 20:44, 20:44, :], engine[..., 20:44, 20:44, :])


def test_micro_counterfactual_eval_of_a_world_model(branches):
    import torch

    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=CONTEXT + 1)).eval()
    codec = PixelCodec()
    frames = model_branches(model, codec, branches, 0, seed=3)
    assert frames.shape == (len(BRANCHES), HORIZON, 32, 32, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, model_branches(model, codec, branches, 0, seed=3))  # seeded: the same frames
    scores = counterfactual_scores(model, codec, branches)
    assert scores["states"] == 2 and scores["branches"] == list(BRANCHES) and scores["horizon"] == HORIZON
    assert scores["engine"]["controllability"] == [1.0] * HORIZON and scores["engine"]["psnr"] == [60.0] * HORIZON
    assert scores["copy_last"]["controllability"] == [0.5] * HORIZON
    assert "seen_only" not in scores  # a model with no camera warp: no field of view to say what was seen
    for name in ("model", "shuffled_actions"):
        assert all(0.0 <= v <= 1.0 for v in scores[name]["controllability"])
        assert all(5.0 < v < 60.0 for v in scores[name]["psnr"])
    assert all(p > 0 for p in scores["pairs"])
    longer = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=CONTEXT + 3))
    with pytest.raises(UserError, match="needs 5"):
        model_branches(longer, codec, branches, 0)


def test_a_branchs_model_rollout_does_not_depend_on_the_other_branches_of_the_file(branches):
    """The branches of a state were rolled out as one batch whose noise one generator drew (K rows at each frame):
    a branch's frames, and so its scores, changed with how many branches the file holds beside it. Each slot now
    has its own generator, seeded by (seed, slot): the first two branches roll out the same alone as beside two
    more, and a slot keeps its noise under another branch's actions (`order`: the shuffled-actions run)."""
    import dataclasses

    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=CONTEXT + 1)).eval()
    for p in model.parameters():  # leave the adaLN-zero start, where every block is the identity
        p.data += 0.2 * torch.randn_like(p)
    fields = ("branch_buttons", "branch_camera", "frames")
    two = dataclasses.replace(branches, **{f: getattr(branches, f)[:, :2] for f in fields},
                              info={**branches.info, "names": branches.names[:2]})
    all_of_them = model_branches(model, PixelCodec(), branches, 0, seed=3).astype(int)
    alone = model_branches(model, PixelCodec(), two, 0, seed=3)
    assert np.abs(alone - all_of_them[:2]).max() <= 1  # float rounding of another batch shape at most
    swapped = model_branches(model, PixelCodec(), branches, 0, seed=3, order=[1, 0, 2, 3])
    assert np.abs(swapped[2:] - all_of_them[2:]).max() <= 1


def _tiny_world_model(tmp_path, steps: int) -> tuple[str, Path]:
    """Two VoxelWorld episodes of `steps` steps recorded into tmp_path/data, and a 32x32 world model (reading 2
    context frames) trained 1 step on them through the CLI into tmp_path/wm: (the data's path, the run)."""
    from worldloom.capture import Recorder
    from worldloom.capture.config import EpisodeSpec
    from worldloom.datasets import commit_shards
    from worldloom.pipeline.cli import main as cli

    data = str(tmp_path / "data")
    rec = Recorder({"env": data}, env="voxel", height=64, width=64)
    specs = [EpisodeSpec(f"ep-{i}", i, "voxel", seed=i, player="mixture", steps=steps, height=64, width=64) for i in range(2)]
    commit_shards(data, rec.record([(s, ("env",)) for s in specs])["shards"]["env"])
    run = tmp_path / "wm"
    assert cli(["pretrain", "train", "--data", data, "--out", str(run), "--max-steps", "1", "--batch-size", "2",
                "--model.image-size", "32", "--model.width", "32", "--model.depth", "1", "--model.num-heads", "2",
                "--model.num-frames", "3", "--camera-fov-deg", "70", "--threads", "1"]) == 0
    return data, run


def test_capture_branches_then_pretrain_eval_counterfactual_through_the_cli(tmp_path, capsys):
    """`capture branches` writes the engine's truth; a small world model trained 1 step on
    VoxelWorld clips is scored against it by `pretrain eval --counterfactual`."""
    import json

    from worldloom.pipeline.cli import main as cli

    data, run = _tiny_world_model(tmp_path, steps=24)
    states = tmp_path / "branches.safetensors"
    assert cli(["capture", "branches", "--episodes", "2", "--context", "2", "--horizon", "3", "--branches", "player", "turn",
                "walk", "--warmup", "5", "--resolution", "64", "--out", str(states)]) == 0
    assert "2 saved states x 3 branches (player, turn, walk) x 3 steps, 2 context frames" in capsys.readouterr().out
    paths = tmp_path / "revisits.safetensors"
    assert cli(["capture", "revisits", "--episodes", "1", "--context", "2", "--paths", "walk1", "look2", "--warmup", "5",
                "--resolution", "64", "--out", str(paths)]) == 0
    assert "1 saved states" in capsys.readouterr().out and load_branches(paths).info["paths"]["look2"] == {"far": 2, "return": 4}
    out = tmp_path / "ev"
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--num-clips", "2", "--horizon", "2",
                "--next-frame-positions", "1", "--sample.num-steps", "1", "--counterfactual", str(states),
                "--revisit", str(paths), "--out", str(out)]) == 0
    assert (f"pretrain eval: eval.json, eval.md, eval.png, strip.png, counterfactual.png and revisit.png in {out}"
            in capsys.readouterr().err)  # every picture it wrote named
    report = json.loads((out / "eval.json").read_text())["counterfactual"]
    assert report["states"] == 2 and report["branches"] == ["player", "turn", "walk"] and report["horizon"] == 3
    assert report["copy_last"]["controllability"] == [0.5] * 3 and report["engine"]["controllability"] == [1.0] * 3
    assert all(0.0 <= v <= 1.0 for v in report["model"]["controllability"])
    assert "Engine-truth controllability: 2 saved VoxelWorld states" in (out / "eval.md").read_text()
    # the picture: engine and model under the two branches the engine tells apart most, from one state
    assert set(report["grid"].values()) <= {"player", "turn", "walk"} and report["grid"]["a"] != report["grid"]["b"]
    assert "frames" not in report and (out / "counterfactual.png").exists()
    revisit = json.loads((out / "eval.json").read_text())["revisit"]  # tests/test_revisit.py checks the scores
    assert revisit["windows"] == {"model": 2, "model_cut": 2, "model_long": 6} and "frames" not in revisit
    assert revisit["engine"]["look2"]["psnr_return"] == 60.0 and (out / "revisit.png").exists()
    # pose memory (on by default, 64 steps; the cut peer 4) recalls the first visit at the return, 4 steps on
    assert revisit["memory"] == {"model": 64, "model_cut": 4}
    assert "| look2 | 2 / 4 | yes, yes, yes |" in (out / "eval.md").read_text()
    capsys.readouterr()
    # bad input: one line each, exit 2
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--counterfactual", str(tmp_path / "nope")]) == 2
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--revisit", str(states)]) == 2
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--counterfactual", str(paths)]) == 2
    assert cli(["capture", "branches", "--branches", "turn", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert cli(["capture", "branches", "--env", "crafter", "--out", str(tmp_path / "x.safetensors")]) == 2
    # the error lines; a progress bar drawn before an error (a slow load on a busy machine) is not one
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error:" in line]
    assert len(err) == 5 and "cannot read it" in err[0] and "not a revisit file" in err[1]
    assert err[2].endswith(f"--counterfactual {paths}: a revisit file (`capture revisits`), not branches: pass it as "
                           "--revisit, or make branches with `worldloom capture branches`"), err[2]  # scored as branches
    assert "branches must be" in err[3] and "cannot save and restore" in err[4]
    # --out checked before the work: a dataset folder was recorded into and ended in IsADirectoryError's traceback;
    # another file (or a .npz name) was overwritten; the same kind of file is replaced, and said
    for out, words in ((data, f"--out {data}: capture revisits writes one safetensors file; give a name ending in "
                              ".safetensors"),
                       (tmp_path / "dir.safetensors", f"--out {tmp_path / 'dir.safetensors'} is a folder"),
                       (run / "checkpoint" / "model.safetensors", "is a file, not a WorldLoom branches file")):
        if str(out).endswith("dir.safetensors"):
            Path(out).mkdir()
        before = Path(out).stat().st_mtime_ns
        assert cli(["capture", "revisits", "--episodes", "1", "--context", "2", "--paths", "walk1", "look2",
                    "--warmup", "5", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "Traceback" not in err and err.count("\n") == 0, err
        assert Path(out).stat().st_mtime_ns == before
    assert cli(["capture", "revisits", "--episodes", "1", "--context", "2", "--paths", "walk1", "look2", "--warmup", "5",
                "--resolution", "64", "--out", str(paths)]) == 0
    assert f"capture revisits: replacing {paths}, the branches file made earlier there" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    # a new-user trial (session 57): an --out in a folder not made yet ended in FileNotFoundError's traceback once the
    # states were recorded (the docs' `--out data/branches.safetensors` in a fresh clone), and a misspelt --player in
    # ValueError's; now the folder is made, a path under a file and the player are refused before the work
    nested = tmp_path / "not" / "yet" / "b.safetensors"
    assert cli(["capture", "branches", "--episodes", "1", "--context", "2", "--horizon", "2", "--warmup", "2",
                "--out", str(nested)]) == 0 and load_branches(nested).frames.shape[:3] == (1, 4, 2)
    for make in ("branches", "revisits"):
        for flags, words in ((["--out", str(Path(data) / "dataset.json" / "b.safetensors")], "is a file, so no folder can be made"),
                             (["--player", "nobody", "--out", str(tmp_path / "p.safetensors")],
                              "--player must be one of random, explorer, miner")):
            capsys.readouterr()
            assert cli(["capture", make, "--episodes", "1", *flags]) == 2
            err = capsys.readouterr().err.strip()
            assert words in err and "Traceback" not in err and err.count("\n") == 0, err
    assert not (tmp_path / "p.safetensors").exists()
    # `pretrain eval` again into the same folder without the engine's files: the pictures of the earlier report
    # that this one did not make are removed, and the replacement is said (it was silent, and a pipeline's report
    # showed the other run's pictures beside its own numbers)
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--num-clips", "2", "--horizon", "3",
                "--next-frame-positions", "1", "--sample.num-steps", "1", "--out", str(tmp_path / "ev")]) == 0
    err, out = capsys.readouterr().err, tmp_path / "ev"
    assert f"pretrain eval: note: replaced the earlier evaluation in {out} (made with other --horizon, --counterfactual, " \
           "--revisit)" in err, err
    assert not (out / "counterfactual.png").exists() and not (out / "revisit.png").exists() and (out / "strip.png").exists()
    assert json.loads((out / "eval.json").read_text())["config"]["horizon"] == 3
    # another command's evaluation report in --out is refused before the work, not overwritten
    (tmp_path / "agent-eval").mkdir()
    (tmp_path / "agent-eval" / "eval.json").write_text(json.dumps({"player": "random", "task": "worldloom/Explore-v0"}))
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--out", str(tmp_path / "agent-eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds another command's evaluation report" in err and "give a new --out" in err, err
    assert json.loads((tmp_path / "agent-eval" / "eval.json").read_text())["player"] == "random"


def test_branches_of_antialiased_footage_are_played_antialiased(tmp_path):
    """A world model that learned from antialiased footage (`capture run --antialias`) is judged on
    frames rendered the same way: `capture branches --antialias` plays the states in that env."""
    from worldloom.capture.branches import BranchesConfig, record_branches

    kw = dict(episodes=1, context=1, horizon=1, branches=("turn", "still"), warmup=2, seed=3)
    plain = record_branches(BranchesConfig(out=str(tmp_path / "plain.safetensors"), **kw))
    smooth = record_branches(BranchesConfig(out=str(tmp_path / "aa.safetensors"), antialias=True, **kw))
    assert smooth.info["antialias"] and not plain.info["antialias"]
    assert not np.array_equal(smooth.frames, plain.frames)
    from worldloom.capture.branches import SEED_BASE

    aa_env = make_env("voxel", height=64, width=64, antialias=True)  # the same states in an antialiased env
    (case,) = engine_cases(aa_env, "mixture", [SEED_BASE + 3], context=1, horizon=1, warmup=2, branches=("turn", "still"))
    assert np.array_equal(smooth.frames[0], case.frames) and np.array_equal(smooth.context_frames[0], case.context_frames)
    with pytest.raises(ValueError, match="voxel env only"):
        BranchesConfig(out="x.safetensors", env="crafter", antialias=True)


def test_engine_files_that_do_not_fit_the_model_are_refused_before_the_work(tmp_path, capsys):
    """A new-user trial (2026-12-07): a branches or revisit file with fewer context frames than the world model
    reads was refused only after the whole eval had generated its clips, in a line naming neither the flag nor the
    file; a missing or foreign --revisit file was told to make it with `capture branches`; a file rendered at
    another size than the model's was resized without a word. Now each is said up front, naming the flag, the file
    and the command that makes the right one."""
    from worldloom.pipeline.cli import main as cli

    data, run = _tiny_world_model(tmp_path, steps=12)
    short = {"branches": tmp_path / "short-branches.safetensors", "revisits": tmp_path / "short-revisits.safetensors"}
    assert cli(["capture", "branches", "--episodes", "1", "--context", "1", "--horizon", "2", "--branches", "turn", "still",
                "--warmup", "2", "--out", str(short["branches"])]) == 0
    assert cli(["capture", "revisits", "--episodes", "1", "--context", "1", "--paths", "walk1", "look1", "--warmup", "2",
                "--out", str(short["revisits"])]) == 0
    eval_flags = ["pretrain", "eval", "--model", str(run), "--data", data, "--num-clips", "1", "--horizon", "2",
                  "--next-frame-positions", "1", "--out", str(tmp_path / "ev")]
    for flag, make in (("--counterfactual", "branches"), ("--revisit", "revisits")):
        capsys.readouterr()
        assert cli([*eval_flags, flag, str(short[make])]) == 2
        err = capsys.readouterr().err
        line = err.strip().splitlines()[-1]
        assert (f"{flag} {short[make]}: 1 context frame a state; the model {run} reads 2: make it again with "
                f"`worldloom capture {make} --context 2`") in line, line
        assert "frame/s" not in err and "Traceback" not in err, err  # refused before any frame was generated
        assert not (tmp_path / "ev").exists()
    # a missing or foreign revisit file: the command that makes one is `capture revisits`
    for bad in (tmp_path / "nope.safetensors", run / "config.json"):
        capsys.readouterr()
        assert cli([*eval_flags, "--revisit", str(bad)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert "`worldloom capture revisits`" in line and "capture branches" not in line, line
    # a file rendered at 64x64 scored by a 32x32 model: resized as the clips are, and said
    branches = tmp_path / "branches.safetensors"
    assert cli(["capture", "branches", "--episodes", "1", "--context", "2", "--horizon", "2", "--branches", "turn",
                "still", "--warmup", "2", "--out", str(branches)]) == 0
    capsys.readouterr()
    assert cli([*eval_flags, "--counterfactual", str(branches)]) == 0
    assert (f"pretrain eval: --counterfactual {branches}: frames 64x64 -> 32x32 for the model's input (area)"
            in capsys.readouterr().err)
