"""Pose memory (pretrain/memory.py): camera poses from actions, and real VoxelWorld frames recalled into
the view of a later frame by the rotation between them.

    pytest tests/test_memory.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldloom import actions as act
from worldloom.envs import make_env
from worldloom.pretrain.flow import SampleConfig
from worldloom.pretrain.memory import (
    AIRBORNE_STEPS,
    PoseMemory,
    camera_to_world,
    track_poses,
    view_grid,
)
from worldloom.pretrain.model import encode_actions

B = act.BUTTONS.index


def features(steps: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Action dicts -> world-model features (1, T, 24) and has_action (1, T)."""
    buttons, camera = act.to_arrays(steps)
    f = encode_actions(torch.from_numpy(buttons.astype(np.float32)), torch.from_numpy(camera.astype(np.float32)))
    return f[None], torch.ones(1, len(steps), dtype=torch.bool)


def step(**keys) -> dict:
    a = act.noop()
    a["camera"] = np.array(keys.pop("camera", (0.0, 0.0)), np.float32)
    a.update({k.replace("_", "."): 1 for k in keys})
    return a


def test_poses_follow_turns_walks_the_inventory_jumps_and_clicks():
    steps = ([step(camera=(0, 10))] * 9  # a quarter turn right: yaw 90
             + [step(forward=1)] * 2  # two steps along the new heading (+x)
             + [step(inventory=1), step(camera=(5, 30)), step(inventory=1)]  # the mouse moves the cursor, not the view
             + [step(back=1)] * 2  # and back to where the walk started
             + [step(camera=(-120, 0))]  # pitch stops at -90
             + [step(jump=1)] + [step()] * AIRBORNE_STEPS + [step(attack=1), step()])
    p = track_poses(*features(steps))
    yaw, pitch, pos = p["yaw"][0].numpy(), p["pitch"][0].numpy(), p["position"][0].numpy()
    assert yaw[9] == pytest.approx(90.0) and yaw[-1] == pytest.approx(90.0)  # the turn in the inventory did not count
    assert pos[11] == pytest.approx([2.0, 0.0], abs=1e-5) and pos[16] == pytest.approx([0.0, 0.0], abs=1e-5)
    assert pitch[17] == -90.0
    assert not p["recallable"][0, 12] and p["recallable"][0, 15]  # the inventory frame, then closed
    jump = 18  # the frame after the jump press
    assert not p["recallable"][0, jump: jump + AIRBORNE_STEPS].any() and p["recallable"][0, jump + AIRBORNE_STEPS]
    assert p["epoch"][0, jump + AIRBORNE_STEPS] == 0 and p["epoch"][0, -1] == 1  # the attack press may have changed the world


def test_poses_start_from_the_views_absolute_pitch_where_it_is_known():
    """A rollout whose context records its pitch (state_pitch) starts its poses there, so pitch clamps where the
    game's does and a turn swings about the world's vertical; unknown (NaN) starts level, as before."""
    steps = [step(camera=(30, 0)), step(camera=(30, 0))]
    p = track_poses(*features(steps), start_pitch=torch.tensor([45.0]))
    assert p["pitch"][0].tolist() == [45.0, 75.0, 90.0]
    assert track_poses(*features(steps), start_pitch=torch.tensor([float("nan")]))["pitch"][0].tolist() == [0.0, 30.0, 60.0]


def test_the_same_pose_is_the_identity_and_a_turn_uncovers_one_side():
    rot = camera_to_world(torch.tensor([30.0]), torch.tensor([10.0]))
    grid, covered = view_grid(rot, rot, 70.0, 8, 8)
    centres = (torch.arange(8) + 0.5) / 8 * 2 - 1
    assert torch.allclose(grid[0, 0, :, 0], centres, atol=1e-5) and torch.allclose(grid[0, :, 0, 1], centres, atol=1e-5)
    assert covered.all()
    right = camera_to_world(torch.tensor([40.0]), torch.tensor([10.0]))  # 10 degrees further right
    _, covered = view_grid(rot, right, 70.0, 64, 64)
    assert covered[0, :, :32].all() and not covered[0, :, -1].any()  # the right edge was out of the old view


def test_a_real_frame_recalled_into_a_turned_view_matches_the_engine():
    """VoxelWorld (no animals) turns 10 degrees right and 4 down; the first frame, turned into the
    second frame's view, matches the engine's second frame where it covers it, far better than the
    first frame as it was."""
    env = make_env("voxel", height=64, width=64, world_size=(32, 32, 32), num_animals=0)
    first, _ = env.reset(seed=3)
    turn = step(camera=(4.0, 10.0))
    second, *_ = env.step(turn)
    env.close()
    poses = track_poses(*features([turn]))
    to_model = lambda f: torch.from_numpy(f).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
    frames = [to_model(first), to_model(second)]
    memory = PoseMemory(poses, real=1, max_age=8, fov_deg=70.0)
    seen, take = memory.recall(frames, 1)
    assert seen is not None and 0.75 < take.float().mean() < 0.95  # most of the view was in the first frame
    scene = take[0].clone()
    scene[48:] = False  # the hotbar and held item stay put on the screen: not the scene
    truth = frames[1][0][:, scene]
    db = lambda x: 10 * torch.log10(4.0 / (x - truth).pow(2).mean())  # noqa: E731  (model units span 2)
    gain = db(seen[0][:, scene]) - db(frames[0][0][:, scene])
    assert gain.item() > 6.0, gain
    assert PoseMemory(poses, real=1, max_age=0, fov_deg=70.0).recall(frames, 1) == (None, None)  # memory off


def test_memory_must_be_a_number_of_steps():
    with pytest.raises(ValueError, match="memory must be >= 0"):
        SampleConfig(memory=-1)


def test_a_rollout_whose_view_does_not_turn_with_the_mouse_recalls_nothing():
    """The inventory may be open before a rollout begins (the actions cannot say): the mouse moves a cursor,
    not the view. The first generated frame that should have turned 1.5 pixels tells: drawn as it was, the
    rollout's memory goes off; drawn turned, it stays on."""
    torch.manual_seed(0)
    real = torch.rand(1, 3, 64, 64) * 2 - 1
    turns = [step(camera=(0.0, 1.0))] * 5  # a degree a step: 1.5 pixels after two steps at 70 degrees
    poses = track_poses(*features(turns))
    for drawn_turned in (False, True):
        memory = PoseMemory(poses, real=1, max_age=16, fov_deg=70.0)
        frames = [real]
        for k in range(1, 5):
            rot = memory.rot[:, k]
            grid, _ = view_grid(memory.rot[:, 0], rot, 70.0, 64, 64)
            turned = torch.nn.functional.grid_sample(real, grid, padding_mode="border", align_corners=False)
            frames.append(turned if drawn_turned else real.clone())
            memory.observe(frames, k)
        seen, _ = memory.recall(frames, 5)
        assert (seen is not None) == drawn_turned
