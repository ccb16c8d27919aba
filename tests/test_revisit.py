"""Revisit consistency: paths that return to where they started, played from saved VoxelWorld states
(the engine's return frame is its first visit, exactly, in a world without animals), their file,
and a micro revisit eval of a small world model beside copy-last and the engine.

    pytest tests/test_revisit.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from worldloom.capture.branches import to_branches
from worldloom.capture.revisits import RevisitsConfig, path_actions, revisit_case, revisit_info
from worldloom.datasets.branches import load_branches, save_branches
from worldloom.envs import make_env
from worldloom.errors import UserError
from worldloom.pretrain.autoencoder import PixelCodec
from worldloom.pretrain.model import WorldModel, WorldModelConfig
from worldloom.pretrain.revisit import (
    check_revisits,
    revisit_markdown,
    revisit_scores,
    revisit_strip,
)

CONTEXT = 5
PATHS = ("walk1", "look1", "turn360")


def test_paths_come_back_in_vpt_camera_units():
    turn, far = path_actions("turn360")  # 10 degrees a step: VPT's largest camera move
    assert len(turn) == 36 and far == 18 and all(a["camera"][1] == 10.0 for a in turn)
    walk, far = path_actions("walk4")
    assert far == 4 and [a["forward"] for a in walk] == [1] * 4 + [0] * 4 and [a["back"] for a in walk] == [0] * 4 + [1] * 4
    look, far = path_actions("look3", turn_deg=5.0)
    assert far == 3 and [float(a["camera"][1]) for a in look] == [5.0] * 3 + [-5.0] * 3
    assert revisit_info(PATHS, 10.0)["paths"] == {"walk1": {"far": 1, "return": 2}, "look1": {"far": 1, "return": 2},
                                                  "turn360": {"far": 18, "return": 36}}
    for bad, message in (({"turn_deg": 20.0}, "turn_deg"), ({"turn_deg": 7.0}, "divide 360"),
                         ({"paths": ("walk1", "jump3")}, "paths jump3: not a path"),
                         ({"paths": ("walk1",)}, "paths walk1: a revisit file"),
                         ({"paths": ("walk1", "walk1")}, "paths has walk1 more than once")):
        with pytest.raises(ValueError, match=message):
            RevisitsConfig(out="x", **bad)


def test_a_single_path_is_refused_saying_why_in_one_line(tmp_path, capsys):
    """`capture revisits --paths walk1` was 'paths must be 2 or more different names like turn360, walk4, look9',
    with no reason; the same line was given for a misspelt name and for a name given twice."""
    from worldloom.pipeline.cli import main as cli

    out = tmp_path / "r.safetensors"
    assert cli(["capture", "revisits", "--paths", "walk1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists(), err
    assert ("--paths walk1: a revisit file holds 2 paths or more from each state (it is written in the branches "
            "format, which holds 2 branches or more a state); add another, e.g. --paths walk1 look1") in err, err
    assert cli(["capture", "revisits", "--paths", "look1", "look1", "--out", str(out)]) == 2
    assert "--paths has look1 more than once; give each path once" in capsys.readouterr().err


@pytest.fixture(scope="module")
def revisits(tmp_path_factory):
    """Two states of a small world without animals whose paths all return, written and read back."""
    env = make_env("voxel", height=64, width=64, world_size=(32, 32, 32), num_animals=0)
    cases = [c for seed in range(1, 12) if (c := revisit_case(env, "mixture", seed, CONTEXT, PATHS, warmup=10)) is not None]
    assert len(cases) >= 2, "most small worlds have a state from which a turn and one step out and back return"
    path = tmp_path_factory.mktemp("revisits") / "r.safetensors"
    save_branches(path, to_branches(cases[:2], {"env": "voxel", **revisit_info(PATHS, 10.0)}))
    return cases[:2], load_branches(path)


def test_the_engine_shows_the_first_visit_again_on_return(revisits):
    cases, branches = revisits
    assert branches.frames.shape == (2, len(PATHS), 36, 64, 64, 3) and branches.names == list(PATHS)
    for case in cases:
        first = case.context_frames[-1]
        for k, name in enumerate(PATHS):
            seq, far = path_actions(name)
            assert np.array_equal(case.frames[k, len(seq) - 1], first), name  # exact: no animals, same pose
            if name != "walk1":  # a turn shows something else at its farthest point (a step forward may not)
                assert not np.array_equal(case.frames[k, far - 1], first), name
            assert np.array_equal(case.frames[k, -1], first)  # standing still after the return
    assert check_revisits(branches, "r")["turn360"] == {"far": 18, "return": 36}
    plain = to_branches(cases, {"env": "voxel"})  # a branches file without path steps
    with pytest.raises(UserError, match="not a revisit file"):
        check_revisits(plain, "plain.safetensors")


def test_micro_revisit_eval_of_a_world_model(revisits, tmp_path):
    import torch

    cases, _ = revisits
    branches = to_branches(cases[:1], {"env": "voxel", **revisit_info(PATHS, 10.0)})  # one state: the suite's time
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=32, depth=1, num_heads=2, num_frames=CONTEXT + 1)).eval()
    r = revisit_scores(model, PixelCodec(), branches)
    assert r["windows"] == {"model": 5, "model_cut": 4, "model_long": 5 + 36} and r["states"] == 1
    for name in PATHS:
        # the engine is exact against itself and at its return against the first visit
        assert r["engine"][name]["psnr_return"] == 60.0 and r["engine"][name]["psnr_return_vs_first_visit"] == 60.0
        # copy-last is the first visit: exact at the return, not at a turn's farthest point
        assert r["copy_last"][name]["psnr_return"] == 60.0 and r["copy_last"][name]["steady_horizon"] >= 1
        for runner in ("model", "model_cut", "model_long"):
            s = r[runner][name]
            assert 5.0 < s["psnr_far"] < 60.0 and 5.0 < s["psnr_return"] <= 60.0 and 0.0 < s["ssim_return"] <= 1.0
            assert s["gain_db"] == pytest.approx(s["psnr_return"] - s["psnr_far"])
            assert 1 <= s["steady_horizon"] <= len(s["psnr_by_step"]) == r["paths"][name]["return"]
    assert r["copy_last"]["turn360"]["psnr_far"] < 30.0 and r["copy_last"]["look1"]["psnr_far"] < 30.0
    assert set(r["goal_met"]) == set(PATHS)
    table = "\n".join(revisit_markdown(r))
    assert "| turn360 | 18 / 36 | no, no, yes |" in table and "| walk1 | 1 / 2 | yes, yes, yes |" in table
    short = revisit_scores(model, PixelCodec(), branches, whole_path=False)  # the model's runs, without the costly one
    assert "model_long" not in short and "model_long" not in short["windows"]
    assert short["model"]["turn360"] == r["model"]["turn360"]  # seeded: the same frames
    assert "| turn360 | 18 / 36 | no, no |" in "\n".join(revisit_markdown(short))
    revisit_strip(r, tmp_path / "revisit.png")
    from PIL import Image

    assert Image.open(tmp_path / "revisit.png").size[0] == 2 * (3 * 32 + 2 * 2)


def test_pose_memory_brings_the_first_visit_back_and_the_cut_peer_does_not(revisits):
    """A rollout with pose memory (pretrain/memory.py) recalls the first visit when a 360-degree turn
    comes back to it; the peer cut to 4 frames recalls nothing past them; memory 0 is the rollout without it."""
    import dataclasses

    import torch

    from worldloom.pretrain.flow import SampleConfig

    cases, _ = revisits
    branches = to_branches(cases[:1], {"env": "voxel", **revisit_info(PATHS, 10.0)})
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=32, depth=1, num_heads=2, num_frames=CONTEXT + 1,
                                        camera_fov_deg=70.0)).eval()
    # the canvas off: an untrained gate (0.5 everywhere) leaves the canvas's sharp layer unturned, the first
    # visit itself, which would come back at the return with or without memory (pretrain/canvas.py)
    plain = SampleConfig(num_steps=1, context_noise=0.0, memory=0, canvas=False)
    off = revisit_scores(model, PixelCodec(), branches, plain, whole_path=False)
    on = revisit_scores(model, PixelCodec(), branches, dataclasses.replace(plain, memory=64), whole_path=False)
    turn_on, turn_off = on["model"]["turn360"], off["model"]["turn360"]
    assert turn_on["psnr_return"] > turn_off["psnr_return"] + 3.0, (turn_on, turn_off)
    # the cut peer recalls only the last 4 frames: the turn's start is 36 steps back
    assert on["model_cut"]["turn360"]["psnr_return"] < turn_on["psnr_return"] - 3.0
    assert turn_on["psnr_return_vs_first_visit"] > turn_off["psnr_return_vs_first_visit"] + 3.0
    assert turn_on["psnr_far"] == pytest.approx(turn_off["psnr_far"], abs=1.0)  # at 180 degrees nothing is in memory
    # with the canvas (the default sampler) the recall is still the base: a model whose gate turns (its output
    # bias) brings the first visit back with memory; without it the canvas's coordinates have turned out of view
    p, C = model.cfg.patch_size, model.cfg.channels
    with torch.no_grad():
        model.final.bias[C * p * p:(C + 1) * p * p] = 20.0
    canvas = {m: revisit_scores(model, PixelCodec(), branches, dataclasses.replace(plain, memory=m, canvas=True),
                                whole_path=False)["model"]["turn360"] for m in (0, 64)}
    assert canvas[64]["psnr_return"] > canvas[0]["psnr_return"] + 3.0, canvas
