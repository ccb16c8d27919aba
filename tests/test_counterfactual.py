"""Engine-truth controllability: branches played from saved VoxelWorld states, the score's
construction (the engine scores 1, copy-last 0.5, swapped branches 0), and a micro eval of a
small untrained world model beside its baselines.

    pytest tests/test_counterfactual.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from worldloom.envs import make_env
from worldloom.errors import UserError
from worldloom.pretrain.autoencoder import PixelCodec
from worldloom.pretrain.counterfactual import (
    BRANCHES,
    controllability,
    counterfactual_scores,
    engine_cases,
    model_branches,
    play_from,
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
        obs, _ = env.set_state(case.state)
        assert np.array_equal(obs, case.context_frames[-1])
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
    assert controllability(same, same) == {"by_horizon": [None] * HORIZON, "pairs": [0] * HORIZON}
    with pytest.raises(ValueError, match="must both be"):
        controllability(engine[:, :, :2], engine)


def test_micro_counterfactual_eval_of_a_world_model(cases):
    import torch

    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=CONTEXT + 1)).eval()
    codec = PixelCodec()
    frames = model_branches(model, codec, cases[0], seed=3)
    assert frames.shape == (len(BRANCHES), HORIZON, 32, 32, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, model_branches(model, codec, cases[0], seed=3))  # seeded: the same frames
    scores = counterfactual_scores(model, codec, cases)
    assert scores["states"] == 2 and scores["branches"] == list(BRANCHES) and scores["horizon"] == HORIZON
    assert scores["engine"]["controllability"] == [1.0] * HORIZON and scores["engine"]["psnr"] == [60.0] * HORIZON
    assert scores["copy_last"]["controllability"] == [0.5] * HORIZON
    for name in ("model", "shuffled_actions"):
        assert all(0.0 <= v <= 1.0 for v in scores[name]["controllability"])
        assert all(5.0 < v < 60.0 for v in scores[name]["psnr"])
    assert all(p > 0 for p in scores["pairs"])
    longer = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=CONTEXT + 3))
    with pytest.raises(UserError, match="needs 5"):
        model_branches(longer, codec, cases[0])


def test_an_env_without_saved_states_is_refused():
    with pytest.raises(UserError, match="cannot save and restore"):
        engine_cases(make_env("crafter", height=64, width=64), "mixture", seeds=[0], context=2, horizon=2)


def test_pretrain_eval_counterfactual_through_the_cli(tmp_path):
    """A small world model trained 1 step on VoxelWorld clips, scored with --counterfactual 3."""
    import json

    from worldloom.capture import Recorder
    from worldloom.capture.config import EpisodeSpec
    from worldloom.datasets import commit_shards
    from worldloom.pipeline.cli import main as cli

    data = str(tmp_path / "data")
    rec = Recorder({"env": data}, env="voxel", height=64, width=64)
    specs = [EpisodeSpec(f"ep-{i}", i, "voxel", seed=i, player="mixture", steps=24, height=64, width=64) for i in range(2)]
    commit_shards(data, rec.record([(s, ("env",)) for s in specs])["shards"]["env"])
    run = tmp_path / "wm"
    assert cli(["pretrain", "train", "--data", data, "--out", str(run), "--max-steps", "1", "--batch-size", "2",
                "--model.image-size", "32", "--model.width", "32", "--model.depth", "1", "--model.num-heads", "2",
                "--model.num-frames", "3", "--camera-fov-deg", "70", "--threads", "1"]) == 0
    out = tmp_path / "ev"
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--num-clips", "2", "--horizon", "3",
                "--next-frame-positions", "1", "--sample.num-steps", "1", "--counterfactual", "3", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())["counterfactual"]
    assert report["states"] == 2 and report["branches"] == ["player", "turn", "walk"] and report["horizon"] == 3
    assert report["copy_last"]["controllability"] == [0.5] * 3 and report["engine"]["controllability"] == [1.0] * 3
    assert all(0.0 <= v <= 1.0 for v in report["model"]["controllability"])
    assert "Engine-truth controllability: 2 saved VoxelWorld states" in (out / "eval.md").read_text()
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data, "--counterfactual", "5"]) == 2


def test_the_counterfactual_eval_needs_voxelworld_data(tmp_path):
    from worldloom.datasets import DatasetWriter
    from worldloom.pretrain.counterfactual import evaluate_counterfactual
    from worldloom.pretrain.evaluate import EvalConfig

    with DatasetWriter(tmp_path / "d", height=64, width=64) as w:
        w.add_episode("ep", np.zeros((2, 64, 64, 3), np.uint8), label_source="none", env="crafter")
    model = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=3))
    with pytest.raises(UserError, match="plays VoxelWorld states"):
        evaluate_counterfactual(model, PixelCodec(), EvalConfig(model="m", data=(str(tmp_path / "d"),), counterfactual=2))
