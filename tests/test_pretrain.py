"""The world model: its invariants, a micro train-rollout-eval through the CLI, exact resume, bad input.

Data is the real VoxelWorld at 64x64 played by the scripted mixture player, written with the
real DatasetWriter; the model is the real `tiny` preset trained for a handful of steps.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from worldloom.actions import BUTTONS as ACTION_BUTTONS
from worldloom.errors import UserError
from worldloom.pipeline.cli import main as cli
from worldloom.pretrain import evaluate as ev
from worldloom.pretrain.camera import (
    FOV_CANDIDATES_DEG,
    coarse_to_fine,
    fit_fov_deg,
    fit_hud_mask,
    rotate_frames,
)
from worldloom.pretrain.flow import (
    FlowConfig,
    SampleConfig,
    flow_loss,
    next_frame,
    rollout,
    sample_noise_levels,
)
from worldloom.pretrain.model import (
    ACTION_DIM,
    PRESETS,
    WorldModel,
    WorldModelConfig,
    camera_from_actions,
    encode_actions,
)
from worldloom.pretrain.train import TrainConfig, main
from worldloom.training import TrainingDiverged

MICRO = {"batch_size": 2, "log_every": 1, "warmup_steps": 2}


def play(seed: int, steps: int, size: int = 64):
    import worldloom.envs as envs
    from worldloom import actions

    env, player = envs.make_env("voxel", height=size, width=size), envs.make_player("mixture", seed=seed)
    obs, info = env.reset(seed=seed)
    frames, acts = [obs], []
    for _ in range(steps - 1):
        a = player.act(obs, info)
        acts.append(a)
        obs, _, _, _, info = env.step(a)
        frames.append(obs)
    acts.append(actions.noop())
    buttons, camera = actions.to_arrays(acts)
    return np.stack(frames), buttons, camera


def write(root: Path, seeds, steps: int, size: int = 64, label_source: str = "env", fps: int = 20) -> str:
    from worldloom.datasets import DatasetWriter

    with DatasetWriter(root, height=size, width=size, fps=fps) as w:
        for seed in seeds:
            frames, buttons, camera = play(seed, steps, size)
            if label_source == "none":
                w.add_episode(f"ep-{seed}", frames, label_source="none", env="voxel", seed=seed)
            else:
                w.add_episode(f"ep-{seed}", frames, buttons=buttons, camera=camera, env="voxel", seed=seed, player="mixture")
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("voxel")
    return {"train": write(base / "train", (0, 1, 2), 40), "heldout": write(base / "heldout", (90,), 32),
            "unlabeled": write(base / "unlabeled", (3,), 40, label_source="none"), "base": base}


@pytest.mark.parametrize("skip", [{"turned_input": False}, {"camera_fov_deg": 70.0, "turned_input": False},
                                  {"camera_fov_deg": 70.0}, {"camera_fov_deg": 70.0, "sprint_fov_deg": 77.0},
                                  {"camera_fov_deg": 70.0, "world_yaw": True}])
def test_cached_context_equals_full_causal_forward(skip):
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=6, **skip))
    for p in model.parameters():  # leave the adaLN-zero start, where every block is the identity
        p.data += 0.05 * torch.randn_like(p)
    x, t = torch.randn(2, 6, 3, 32, 32), torch.rand(2, 6)
    buttons = torch.rand(2, 6, 20) > 0.5
    for name, column in (("forward", 1), ("back", 0), ("sneak", 0)):
        buttons[..., ACTION_BUTTONS.index(name)] = bool(column)
    buttons[..., ACTION_BUTTONS.index("sprint")] = torch.tensor([[0, 1, 1, 1, 0, 1], [1, 0, 1, 0, 1, 0]]).bool()
    a, m = encode_actions(buttons, 8 * torch.randn(2, 6, 2)), torch.tensor([[1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1]]).bool()
    pitch = torch.tensor([[30.0, 45.0, float("nan"), -20.0, 60.0, 10.0], [0.0, 5.0, 80.0, 85.0, -60.0, 40.0]])
    full = model(x, t, a, m, view_pitch=pitch)
    _, kv = model(x[:, :4], t[:, :4], a[:, :4], m[:, :4], return_kv=True, view_pitch=pitch[:, :4])
    tail = model(x[:, 4:], t[:, 4:], a[:, 4:], m[:, 4:], past_kv=kv, start=4, prev=x[:, 3], prev_t=t[:, 3],
                 prev_action=(a[:, 3], m[:, 3]), view_pitch=pitch[:, 4:])
    torch.testing.assert_close(tail, full[:, 4:], atol=1e-5, rtol=1e-4)
    level = model(x, t, a, m)  # no pitch: the view's own vertical, as before
    assert torch.equal(model(x, t, a, m, view_pitch=torch.zeros(2, 6)), level)  # pitch 0: the same axis
    assert torch.allclose(full, level) != bool(skip.get("world_yaw"))  # only a world_yaw model turns with it
    x2 = x.clone()
    x2[:, 5] += 1.0  # a later frame never changes an earlier one
    torch.testing.assert_close(model(x2, t, a, m, view_pitch=pitch)[:, :5], full[:, :5])
    assert not torch.allclose(model(x2, t, a, m, view_pitch=pitch)[:, 5], full[:, 5])


def test_camera_turn_moves_the_view_and_fov_is_recovered():
    frames = torch.rand(2, 3, 3, 64, 64)
    assert torch.equal(rotate_frames(frames, torch.zeros(2, 3, 2), 70.0), frames)
    assert torch.equal(rotate_frames(frames, torch.full((2, 3, 2), 0.2), 70.0), frames)  # under half a pixel: a copy
    cross = torch.zeros(3, 64, 64)
    cross[:, :, 40] = cross[:, 40, :] = 1.0  # a line 8 px right of the centre, and one 8 px below
    right = rotate_frames(cross, torch.tensor([0.0, 10.0]), 70.0)  # 10 degrees right: 32 tan(10) / tan(35) = 8 px
    assert right[0, 28:36].sum(0).argmax() == 32  # the vertical line comes to the centre
    down = rotate_frames(cross, torch.tensor([10.0, 0.0]), 70.0)  # looking down brings what was below up
    assert down[0, :, 28:36].sum(1).argmax() == 32
    g = torch.Generator().manual_seed(0)
    prev = torch.rand(64, 3, 8, 8, generator=g).repeat_interleave(8, -1).repeat_interleave(8, -2)  # blocky texture
    camera = 12 * torch.rand(64, 2, generator=g) - 6
    assert fit_fov_deg(prev, rotate_frames(prev, camera, 60.0), camera) == 60.0
    assert fit_fov_deg(prev, prev, camera) == 0.0  # nothing turns: no warp
    features = encode_actions(torch.zeros(64, 20), camera)
    torch.testing.assert_close(camera_from_actions(features, torch.ones(64, dtype=torch.bool)), camera)


def test_actions_change_predictions_and_null_action_is_distinct():
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=4))
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    x, t = torch.randn(1, 4, 3, 32, 32), torch.rand(1, 4)
    buttons, camera = torch.zeros(1, 4, 20), torch.zeros(1, 4, 2)
    a0 = encode_actions(buttons, camera)
    camera[..., 1] = 5.0
    a1 = encode_actions(buttons, camera)
    on = torch.ones(1, 4, dtype=torch.bool)
    assert not torch.allclose(model(x, t, a0, on), model(x, t, a1, on))
    assert not torch.allclose(model(x, t, a0, on), model(x, t, a0, ~on))
    assert encode_actions(torch.zeros(20), torch.tensor([100.0, -0.0])).tolist()[-4:] == [1.0, 0.0, 9.0, 0.0]


@pytest.mark.parametrize("variant", [{}, {"prediction": "v", "turned_input": False}], ids=["x_skip", "v"])
def test_flow_loss_trains_and_rollout_shapes(variant):
    """The default x_skip output and the named variant `--model.prediction v` (plain velocity)."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=4, **variant)
    model = WorldModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.rand(4, 4, 1, 1, 1).expand(4, 4, 3, 32, 32) * 2 - 1  # flat frames: easy to fit
    a, h = torch.zeros(4, 4, ACTION_DIM), torch.ones(4, 4, dtype=torch.bool)
    losses = []
    for step in range(30):
        loss = flow_loss(model, x, a, h, FlowConfig(), generator=torch.Generator().manual_seed(step))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    out = rollout(model, x[:, :3], torch.zeros(4, 7, ACTION_DIM), torch.ones(4, 7, dtype=torch.bool), 5, SampleConfig(num_steps=2, guidance=2.0))
    assert out.shape == (4, 5, 3, 32, 32) and out.abs().max() <= 1.0
    # generated frames fed back noisier: the first frame (real context only) is unchanged, later ones differ
    acts, has = torch.randn(4, 7, ACTION_DIM), torch.ones(4, 7, dtype=torch.bool)
    clean, noisy = (rollout(model, x[:, :3], acts, has, 3, SampleConfig(num_steps=1, context_noise=0.0, generated_noise=g),
                            torch.Generator().manual_seed(0)) for g in (0.0, 0.3))
    assert torch.equal(clean[:, 0], noisy[:, 0]) and not torch.allclose(clean[:, 1:], noisy[:, 1:])
    with pytest.raises(ValueError, match="generated_noise"):
        SampleConfig(generated_noise=1.0)


def test_dead_zone_signal_input_and_the_tiny_objective():
    """The tiny preset's pieces (issue 18): a correction under the dead zone leaves the previous frame exact;
    with signal_input a pure-noise frame's noise never reaches the output; log-MSE and self forcing train."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=3, signal_input=True, dead_zone=1.0)
    model = WorldModel(cfg)
    x, a, m = torch.rand(2, 3, 3, 32, 32) * 2 - 1, torch.zeros(2, 3, ACTION_DIM), torch.ones(2, 3, dtype=torch.bool)
    t = torch.tensor([[0.0, 0.0, 1.0]] * 2)
    with torch.no_grad():
        model.final.bias.fill_(0.9 / 127.5)  # a correction of 0.9 levels everywhere: under the zone
        x0 = x - model(x, t, a, m) * t[..., None, None, None]  # x_t - t v at t = 1: the predicted clean frame
    torch.testing.assert_close(x0[:, 2], x[:, 1])  # the previous frame, exactly
    # Sampling drops corrections under max(SampleConfig.dead_zone, the trained zone): 2 levels pass the
    # trained zone of 1 but not a sampling zone of 6; a sampling zone of 0 keeps the trained one.
    with torch.no_grad():
        model.final.bias.fill_(2.0 / 127.5)
    ctx, ctx_a, ctx_m = x[:, :2], a[:, :2], m[:, :2]
    zoned, trained = (next_frame(model, ctx, ctx_a, ctx_m, a[:, 2], m[:, 2], SampleConfig(num_steps=1, context_noise=0.0,
                                 dead_zone=zone), torch.Generator().manual_seed(0)) for zone in (6.0, 0.0))
    torch.testing.assert_close(zoned, x[:, 1])
    assert (trained - x[:, 1]).abs().max() > 1.0 / 127.5
    with torch.no_grad():
        model.final.bias.fill_(3.0 / 127.5)  # 3 levels: 2 pass
        for p in model.parameters():
            p.data += 0.05 * torch.randn_like(p)
        other = x.clone()
        other[:, 2] = torch.randn(2, 3, 32, 32)  # another draw of the pure noise
        v1, v2 = model(x, t, a, m), model(other, t, a, m)
    torch.testing.assert_close(x[:, 2] - v1[:, 2], other[:, 2] - v2[:, 2])  # the noise does not reach x0
    with pytest.raises(ValueError, match="dead_zone"):
        WorldModelConfig(prediction="v", turned_input=False, dead_zone=1.0)
    flat = torch.linspace(-0.8, 0.8, 3)[None, :, None, None, None].expand(4, 3, 3, 32, 32)  # brightening frames

    def one_step_error(net):  # the next frame from pure noise, as one-step sampling makes it
        with torch.no_grad():
            xt = torch.cat([flat[:, :2], torch.randn(4, 1, 3, 32, 32)], 1)
            return (xt[:, 2] - net(xt, t[:1].expand(4, 3), a[:1].expand(4, 3, -1), m[:1].expand(4, 3))[:, 2] - flat[:, 2]).pow(2).mean()

    for flow in (FlowConfig(p_sampling_pattern=1.0, p_pure_noise=1.0, log_mse=True, own_previous=0.5), FlowConfig(log_mse=True)):
        torch.manual_seed(0)
        net = WorldModel(cfg)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
        before = one_step_error(net)
        for step in range(30):
            loss = flow_loss(net, flat, torch.zeros(4, 3, ACTION_DIM), torch.ones(4, 3, dtype=torch.bool), flow,
                             generator=torch.Generator().manual_seed(step))
            assert torch.isfinite(loss)
            loss.backward()
            opt.step()
            opt.zero_grad()
        assert one_step_error(net) < 0.5 * before, flow
    # the objective is the preset's unless a flag names a field
    tiny = TrainConfig(data=("x",), out="y").flow
    assert (tiny.p_sampling_pattern, tiny.p_pure_noise, tiny.log_mse) == (1.0, 1.0, True)
    small = TrainConfig(data=("x",), out="y", preset="small", p_pure_noise=0.25).flow
    assert (small.p_sampling_pattern, small.p_pure_noise, small.log_mse) == (0.75, 0.25, False)


def test_sprinting_zooms_the_view_as_the_engine_renders_it_and_its_field_of_view_is_recovered():
    """VoxelWorld renders a sprint at 1.1 times its field of view; the warp zooms between the two views, and
    fit_sprint_fov_deg finds 77 degrees from frames of the same states rendered both ways."""
    import worldloom.envs as envs
    from worldloom import actions
    from worldloom.pretrain.camera import fit_sprint_fov_deg
    from worldloom.pretrain.model import view_fov_deg

    walking, sprinting = [], []
    for seed in range(10):  # the same state seen at the walking and at the sprinting field of view
        for fov, out in ((70.0, walking), (77.0, sprinting)):
            env = envs.make_env("voxel", height=64, width=64, fov_deg=fov)
            obs, _ = env.reset(seed=seed)
            out.append(torch.from_numpy(env.step(actions.noop())[0]).permute(2, 0, 1).float() / 127.5 - 1)
            env.close()
    walk, sprint = torch.stack(walking), torch.stack(sprinting)  # (10, 3, 64, 64)
    still = torch.zeros(10, 2)
    zoomed = rotate_frames(sprint, still, 70.0, (torch.full((10,), 77.0), torch.full((10,), 70.0)))  # sprint stops
    scene = slice(0, 48)  # above the hotbar and the hand, which the HUD mask keeps in place
    copy_err = (sprint - walk)[..., scene, :].pow(2).mean().item()
    zoom_err = (zoomed - walk)[..., scene, :].pow(2).mean().item()
    assert zoom_err < copy_err / 3, (zoom_err, copy_err)  # 0.019 against 0.081 when written
    assert torch.equal(rotate_frames(sprint, still, 70.0, (torch.full((10,), 77.0),) * 2), sprint)  # no change: a copy
    on, off = torch.ones(20, dtype=torch.bool), torch.zeros(20, dtype=torch.bool)
    prev, nxt = torch.cat([sprint, walk]), torch.cat([walk, sprint])
    assert abs(fit_sprint_fov_deg(prev, nxt, torch.zeros(20, 2), torch.cat([on[:10], off[:10]]),
                                  torch.cat([off[:10], on[:10]]), 70.0) - 77.0) <= 0.71  # the candidates are 1% apart
    assert fit_sprint_fov_deg(walk, walk, still, on[:10], off[:10], 70.0) == 0.0  # nothing zooms: no sprint view
    assert fit_sprint_fov_deg(sprint, walk, still, on[:10], off[:10], 0.0) == 0.0  # no warp at all

    # which frames zoom: sprint held forward (not back, not sneaking), starting or stopping; an unknown action none
    buttons = torch.zeros(1, 5, 20, dtype=torch.bool)
    buttons[..., ACTION_BUTTONS.index("forward")] = True
    buttons[0, :, ACTION_BUTTONS.index("sprint")] = torch.tensor([1, 1, 0, 1, 1]).bool()
    buttons[0, 4, ACTION_BUTTONS.index("sneak")] = True  # sneaking cancels the sprint
    a = encode_actions(buttons, torch.zeros(1, 5, 2))
    cfg = WorldModelConfig(camera_fov_deg=70.0, sprint_fov_deg=77.0)
    before, after = view_fov_deg(a, torch.ones(1, 5, dtype=torch.bool), cfg, (a[:, 2], torch.ones(1, dtype=torch.bool)))
    assert after.tolist() == [[77.0, 77.0, 70.0, 77.0, 70.0]] and before.tolist() == [[70.0, 77.0, 77.0, 70.0, 77.0]]
    before, after = view_fov_deg(a, torch.tensor([[True, True, False, True, True]]), cfg)
    assert (before == after).tolist() == [[True, True, True, True, False]]  # frame 0 (no action before) and the unknown
    assert view_fov_deg(a, torch.ones(1, 5, dtype=torch.bool), WorldModelConfig(camera_fov_deg=70.0)) is None


def test_given_the_pitch_the_yaw_turns_about_the_worlds_vertical_as_the_engine_does():
    """Looking down 40 degrees, a yaw of 8 swings VoxelWorld's picture about the point below the player;
    the grid that knows the pitch predicts the engine's next frame where a turn about the view's own axis
    does not (seen scene pixels, 8-bit levels squared: about 250 against 500-900 when written)."""
    import worldloom.envs as envs
    from worldloom import actions
    from worldloom.pretrain.camera import rotation_grid

    def look(pitch: float, yaw: float) -> dict:
        return {**actions.noop(), "camera": np.array([pitch, yaw], np.float32)}

    camera = torch.tensor([[0.0, 8.0]])
    for seed in range(3):
        env = envs.make_env("voxel", height=64, width=64)
        env.reset(seed=seed)
        before = torch.from_numpy(env.step(look(40.0, 0.0))[0]).permute(2, 0, 1)[None].float()
        after = torch.from_numpy(env.step(look(0.0, 8.0))[0]).permute(2, 0, 1)[None].float()
        env.close()
        errors = []
        for pitch in (None, torch.tensor([40.0])):
            grid = rotation_grid(camera, 70.0, 64, 64, pitch_deg=pitch)
            seen = (grid.abs() <= 1).all(-1)[0]
            seen[48:] = False  # the hotbar and the hand do not turn
            warped = F.grid_sample(before, grid, mode="bilinear", padding_mode="border", align_corners=False)
            errors.append((warped - after).pow(2).mean(1)[0][seen].mean().item())
        assert errors[1] < 0.6 * errors[0], (seed, errors)
    level = torch.tensor([[5.0, 12.0], [-3.0, -7.0]])  # at pitch 0 both axes are the same: the same grid
    torch.testing.assert_close(rotation_grid(level, 70.0, 32, 32, pitch_deg=torch.zeros(2)), rotation_grid(level, 70.0, 32, 32))


def test_a_rollout_tracks_the_pitch_through_its_actions():
    """The context's pitch as given, then each step's camera pitch added, clamped at +-90 as the engine clamps
    it, still while the inventory is open or the action unknown; unknown stays unknown."""
    from worldloom.pretrain.flow import track_pitch

    buttons = torch.zeros(2, 6, 20, dtype=torch.bool)
    camera = torch.tensor([[10.0, 5.0]] * 6).expand(2, 6, 2).clone()
    camera[0, 3, 0], camera[0, 4, 0] = -30.0, 60.0  # an unknown action, then past the bottom: clamped
    buttons[1, 3, ACTION_BUTTONS.index("inventory")] = True  # the inventory opens at step 3: the view stops
    has = torch.ones(2, 6, dtype=torch.bool)
    has[0, 3] = False  # an unknown action: no change
    out = track_pitch(torch.tensor([[0.0, 20.0], [float("nan"), -5.0]]), encode_actions(buttons, camera), has)
    assert out.shape == (2, 7)  # action t moves frame t to t + 1; the first generated frame follows action 1
    assert out[0].tolist() == [0.0, 20.0, 30.0, 40.0, 40.0, 90.0, 90.0]
    assert torch.isnan(out[1, 0]) and out[1, 1:].tolist() == [-5.0, 5.0, 15.0, 15.0, 15.0, 15.0]


def test_training_clips_carry_each_frames_pitch_from_the_dataset(tmp_path):
    """Datasets with the engine's state (capture writes it) record state_pitch; a clip's "pitch" is that column,
    and NaN where a dataset has none."""
    import worldloom.envs as envs
    from worldloom import actions
    from worldloom.datasets import ClipDataset, DatasetWriter

    env, player = envs.make_env("voxel", height=64, width=64), envs.make_player("mixture", seed=4)
    obs, info = env.reset(seed=4)
    frames, acts, pitch = [obs], [], [info["pitch"]]
    for _ in range(15):
        acts.append(player.act(obs, info))
        obs, _, _, _, info = env.step(acts[-1])
        frames.append(obs)
        pitch.append(info["pitch"])
    acts.append(actions.noop())
    buttons, camera = actions.to_arrays(acts)
    pitch = np.array(pitch, np.float32)
    assert np.abs(pitch).max() > 0  # the player looked up or down
    with DatasetWriter(tmp_path / "stated", height=64, width=64, fps=20) as w:
        w.add_episode("ep-4", np.stack(frames), buttons=buttons, camera=camera, env="voxel", seed=4,
                      state={"state_pitch": pitch})
        w.add_episode("ep-5", np.stack(frames), buttons=buttons, camera=camera, env="voxel", seed=5)  # no state
    clips = ClipDataset([str(tmp_path / "stated")], clip_len=8)
    items = {(it["episode_id"], it["start"]): it for it in (clips[i] for i in range(len(clips)))}
    assert np.array_equal(items["ep-4", 0]["pitch"].numpy(), pitch[:8])
    assert np.array_equal(items["ep-4", 8]["pitch"].numpy(), pitch[8:])
    assert torch.isnan(items["ep-5", 0]["pitch"]).all()


@pytest.mark.parametrize("valley", [20, 22, 58, 70, 72, 128, 130])
def test_the_coarse_to_fine_search_finds_the_whole_grids_minimum_in_fewer_calls(valley):
    def curve(fov):  # one valley, with bumps off the coarse grid away from it
        return abs(fov - valley) ** 1.5 + (3.0 if fov % 10 and abs(fov - valley) > 6 else 0.0)

    calls = []
    errs = coarse_to_fine(lambda fov: calls.append(fov) or curve(fov), FOV_CANDIDATES_DEG)
    assert min(errs, key=errs.get) == valley == min(FOV_CANDIDATES_DEG, key=curve)
    assert len(calls) <= 21 < len(FOV_CANDIDATES_DEG) and len(set(calls)) == len(calls)  # each asked once


def test_camera_fov_is_fitted_on_the_games_own_actions(data, tmp_path):
    """Pseudo-labels (label_source idm) are noisy where the fit needs them exact: only env episodes count."""
    from worldloom.datasets import DatasetWriter
    from worldloom.pretrain.train import fit_camera

    frames, buttons, camera = play(7, 40)
    with DatasetWriter(tmp_path / "idm", height=64, width=64, fps=20) as w:  # a bad IDM: every turn a third too small
        w.add_episode("ep-7", frames, buttons=buttons, camera=camera * 0.66, label_source="idm", label_model="idm@1")
    alone = fit_camera(TrainConfig(data=(data["train"],), out="-"))
    assert fit_camera(TrainConfig(data=(str(tmp_path / "idm"), data["train"]), out="-")) == alone
    assert abs(fit_camera(TrainConfig(data=(str(tmp_path / "idm"),), out="-")) - 70.0) > abs(alone - 70.0)  # no env: all


def test_the_hud_mask_is_what_stays_put_under_turns_and_is_never_turned():
    import worldloom.envs as envs
    from worldloom import actions

    env = envs.make_env("voxel", height=64, width=64)
    prev, nxt, cams = [], [], []
    for seed in range(6):  # turns over six worlds: the scene moves, the HUD does not
        obs, _ = env.reset(seed=seed)
        for i in range(8):
            a = actions.noop()
            a["camera"] = np.array([3.0 * (-1) ** seed, 15.0 * (-1) ** i], dtype=np.float32)
            new, *_ = env.step(a)
            prev.append(obs), nxt.append(new), cams.append(a["camera"])
            obs = new
    model_units = lambda frames: torch.as_tensor(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    hud = fit_hud_mask(model_units(prev), model_units(nxt), torch.as_tensor(np.stack(cams)), 70.0)  # (64, 64)
    assert hud[60].sum() >= 45  # the hotbar's row
    assert hud[:28].mean() < 0.02 and 200 < hud.sum() < 800  # the sky and the scene are not HUD
    # A model with the mask never turns those pixels; the rest is turned (at init: half turned)
    model = WorldModel(dataclasses.replace(PRESETS["tiny"], camera_fov_deg=70.0, hud_mask=True)).eval()
    model.hud.copy_(hud)
    x = model_units(prev[:2])[None]  # (1, 2, 3, 64, 64)
    action = torch.zeros(1, 2, ACTION_DIM)
    turn = encode_actions(torch.zeros(1, 20), torch.tensor([[0.0, 20.0]]))
    out = next_frame(model, x, action, torch.zeros(1, 2, dtype=torch.bool), turn, torch.ones(1, dtype=torch.bool),
                     SampleConfig(num_steps=1, context_noise=0.0))[0]  # (3, 64, 64)
    kept = hud.bool()
    assert torch.allclose(out[:, kept], x[0, -1][:, kept], atol=1e-6)  # (one Euler step: x - (x - x0))
    assert (out[:, ~kept] - x[0, -1][:, ~kept]).abs().mean() > 0.05
    # With hud_fill a turn brings no copy of the HUD into the scene: a grey scene under a magenta HUD
    # stays grey outside the mask (without the fill the warp samples magenta into it)
    marked = torch.zeros_like(x)
    marked[..., kept] = torch.tensor([1.0, -1.0, 1.0])[:, None]
    filled = WorldModel(dataclasses.replace(PRESETS["tiny"], camera_fov_deg=70.0)).eval()
    assert filled.cfg.hud_mask and filled.cfg.hud_fill  # the tiny preset's
    unfilled = WorldModel(dataclasses.replace(PRESETS["tiny"], camera_fov_deg=70.0, hud_fill=False)).eval()
    for m in (filled, unfilled):
        m.hud.copy_(hud)
    turn = encode_actions(torch.zeros(1, 20), torch.tensor([[15.0, 20.0]]))  # look down: the hotbar's rows move up
    for m, ghosts in ((unfilled, True), (filled, False)):
        base = next_frame(m, marked, action, torch.zeros(1, 2, dtype=torch.bool), turn, torch.ones(1, dtype=torch.bool),
                          SampleConfig(num_steps=1, context_noise=0.0))[0]  # at init: the base the network corrects
        assert torch.allclose(base[:, kept], marked[0, -1][:, kept], atol=1e-6)  # the HUD itself stays
        assert (base[:, ~kept].abs().amax() > 0.3) == ghosts


def test_movement_keys_move_the_base_by_the_flow_and_releasing_them_moves_nothing():
    from worldloom.pretrain.model import movement

    # forward + sprint is 1.3 steps, sneaking back 0.3, a diagonal 0.71 on each axis; a dropped action none
    names = {"forward": 0, "sprint": 0, "back": 1, "sneak": 1, "left": 2}
    buttons = torch.zeros(4, 20)
    for name, row in names.items():
        buttons[row, ACTION_BUTTONS.index(name)] = 1
    buttons[2, ACTION_BUTTONS.index("forward")] = 1
    feats = encode_actions(buttons, torch.zeros(4, 2))
    m = movement(feats, torch.tensor([True, True, True, False]))
    assert torch.allclose(m, torch.tensor([[1.3, 0.0], [-0.3, 0.0], [0.7071, -0.7071], [0.0, 0.0]]), atol=1e-4)
    # A model whose flow for a step forward is one pixel to the right everywhere (its output bias):
    # with forward held the base (what the network corrects) is the previous frame moved a pixel,
    # the HUD left in place; with no key held it is the previous frame, bit for bit.
    cfg = dataclasses.replace(PRESETS["tiny"], camera_fov_deg=70.0, move_flow=2.0)
    model = WorldModel(cfg).eval()
    p = cfg.patch_size
    fwd_dx = cfg.channels + 1  # correction, turn gate, then (dx, dy) per unit forward, (dx, dy) per unit right
    with torch.no_grad():
        model.final.bias[fwd_dx * p * p:(fwd_dx + 1) * p * p] = float(np.arctanh(0.5))  # tanh * 2 px = 1 px
        model.hud[56:] = 1.0  # the bottom rows stand for the HUD
    x = torch.linspace(-1, 1, 64).expand(1, 2, 3, 64, 64).clone()  # a ramp left to right
    still = encode_actions(torch.zeros(1, 20), torch.zeros(1, 2))
    walk = encode_actions(F.one_hot(torch.tensor([ACTION_BUTTONS.index("forward")]), 20), torch.zeros(1, 2))
    ctx = (x, torch.zeros(1, 2, ACTION_DIM), torch.zeros(1, 2, dtype=torch.bool))
    sample = SampleConfig(num_steps=1, context_noise=0.0, dead_zone=0.0, memory=0)
    base_still = next_frame(model, *ctx, still, torch.ones(1, dtype=torch.bool), sample)[0]
    base_walk = next_frame(model, *ctx, walk, torch.ones(1, dtype=torch.bool), sample)[0]
    assert torch.allclose(base_still, x[0, -1], atol=1e-6)  # (one Euler step: x - (x - x0))
    assert torch.allclose(base_walk[:, :56, :63], x[0, -1][:, :56, 1:], atol=1e-5)  # content from a pixel right
    assert torch.allclose(base_walk[:, :56, 63], x[0, -1][:, :56, 63])  # the border repeats
    assert torch.allclose(base_walk[:, 56:], x[0, -1][:, 56:], atol=1e-6)  # the HUD stays


@pytest.mark.parametrize("move", ["turn", "walk"])
def test_the_canvas_samples_the_real_frame_once_however_many_warps_a_rollout_chains(move):
    # A model that is its warps alone (no correction; the gate fully turned; a step forward moves the picture
    # half a pixel to the left) rolled out 16 steps on a blocky texture: with the canvas each frame is the
    # real frame warped once by the sum of the moves (turns about one axis compose; so do even flows);
    # resampled step by step, each fraction of a pixel blurs it again.
    cfg = dataclasses.replace(PRESETS["tiny"], camera_fov_deg=70.0, move_flow=2.0)
    model = WorldModel(cfg).eval()
    p, C = cfg.patch_size, cfg.channels
    with torch.no_grad():
        model.final.bias[C * p * p:(C + 1) * p * p] = 20.0  # the turn gate: sigmoid(20), turned
        model.final.bias[(C + 1) * p * p:(C + 2) * p * p] = float(np.arctanh(0.25))  # forward: dx 0.5 px
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    real = F.interpolate(blocks, size=(64, 64), mode="nearest")  # (1, 3, 64, 64), 8-pixel blocks
    context = real[:, None].expand(1, 2, 3, 64, 64)
    steps = 16
    if move == "turn":  # 1.3 degrees of yaw a step: about 1.04 pixels at 64 px and 70 degrees
        act = encode_actions(torch.zeros(1, 20), torch.tensor([[0.0, 1.3]]))
        once = rotate_frames(real, torch.tensor([[0.0, 1.3 * steps]]), 70.0)[0]
        cols = slice(0, 40)  # what stays in view
    else:
        act = encode_actions(F.one_hot(torch.tensor([ACTION_BUTTONS.index("forward")]), 20).float(), torch.zeros(1, 2))
        once = torch.cat([real[0, :, :, 8:], real[0, :, :, -1:].expand(3, 64, 8)], dim=-1)  # 8 pixels left
        cols = slice(0, 48)
    actions = act[:, None].expand(1, 2 + steps - 1, ACTION_DIM)
    has = torch.ones(1, 2 + steps - 1, dtype=torch.bool)
    err = {}
    for canvas in (True, False):
        sample = SampleConfig(num_steps=1, context_noise=0.0, dead_zone=0.0, memory=0, canvas=canvas)
        last = rollout(model, context, actions, has, steps, sample)[0, -1]  # (3, 64, 64)
        err[canvas] = (last - once)[..., cols].abs().mean().item()
    assert err[True] < 0.01  # one resample: the texture as the summed move shows it
    assert err[False] > 5 * err[True]  # sixteen: blurred


def test_noise_levels_follow_the_sampling_pattern():
    g = torch.Generator().manual_seed(0)
    t, w = sample_noise_levels(4000, 5, FlowConfig(p_sampling_pattern=0.75, p_pure_noise=0.5), generator=g)
    scored_context = (w[:, :-1] > 0).all(dim=1)  # diffusion-forcing windows score every frame
    assert scored_context.float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert (t[~scored_context, :-1] <= 0.1).all()  # sampling pattern: a lightly noised context
    pure = t[~scored_context, -1] == 1.0
    assert pure.float().mean().item() == pytest.approx(0.5, abs=0.04)
    assert (t[scored_context, -1] < 1.0).all()
    t0, _ = sample_noise_levels(500, 5, FlowConfig(p_pure_noise=0.0), generator=g)
    assert (t0 < 1.0).all()
    with pytest.raises(ValueError, match="p_pure_noise"):
        TrainConfig(data=("x",), out="y", p_pure_noise=1.5)


def test_image_metrics():
    a = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    noisy = (a.float() + 40 * torch.randn(a.shape)).clamp(0, 255).to(torch.uint8)
    assert torch.allclose(ev.ssim(a, a), torch.ones(2))
    assert (ev.ssim(a, noisy) < 0.9).all() and (ev.psnr(a, noisy) < 25).all() and (ev.psnr(a, a) == 60).all()


def test_micro_train_rollout_eval_through_the_cli(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("worldloom.progress.SHOW_AFTER_S", 0.0)  # every stage on the bar, however quick
    run = tmp_path / "wm"
    assert cli(["pretrain", "train", "--data", data["train"], data["unlabeled"], "--weights", "3", "1", "--out", str(run),
                "--max-steps", "3", "--batch-size", "2", "--checkpoint-every", "2"]) == 0
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and (run / "curves.png").exists()
    fov = json.loads((run / "config.json").read_text())["model"]["camera_fov_deg"]
    assert 62 <= fov <= 78  # fitted to VoxelWorld's turns (it renders at 70 degrees)
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header + the step-3 row (log_every 10)
    video = tmp_path / "r.gif"
    assert cli(["pretrain", "rollout", "--model", str(run), "--data", data["heldout"], "--episode", "ep-90", "--horizon", "3",
                "--out", str(video), "--sample.num-steps", "1", "--scale", "1"]) == 0
    from PIL import Image

    with Image.open(video) as im:
        assert im.n_frames == PRESETS["tiny"].num_frames - 1 + 3 and im.size == (2 * 64 + 2, 64 + 2)
    folder = tmp_path / "videos"
    folder.mkdir()  # an existing folder: the video is EPISODE.mp4 in it, as `dataset export` writes
    assert cli(["pretrain", "rollout", "--model", str(run), "--data", data["heldout"], "--episode", "ep-90", "--horizon", "2",
                "--out", str(folder), "--scale", "1"]) == 0
    assert (folder / "ep-90.mp4").stat().st_size > 0
    capsys.readouterr()
    assert cli(["pretrain", "rollout", "--model", str(run), "--data", data["heldout"], "--episode", "ep-90",
                "--out", str(tmp_path / "r.avi")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and ".mp4" in err and "Traceback" not in err
    # a micro IDM as the controllability judge (MineWorld's protocol): scored on real and generated frames
    judge = tmp_path / "judge"
    assert cli(["idm", "train", "--data", data["train"], "--preset", "micro", "--out", str(judge), "--max-steps", "2",
                "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "2", "--checkpoint-every", "2", "--val-windows", "2"]) == 0
    capsys.readouterr()
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data["heldout"], "--num-clips", "2", "--idm", str(judge),
                "--horizon", "2", "--next-frame-positions", "1", "--sample.num-steps", "1", "--stability-horizon", "4",
                "--out", str(tmp_path / "ev")]) == 0
    # progress from the start: a bar over the stages naming the one running, a bar over the generated frames
    # (2 clips x (1 + 4 + 2)), then where the files went
    err = capsys.readouterr().err
    stages = [", loading the world model]", ", reading clips]", ", generating]", ", IDM controllability]",
              ", writing the report]", "pretrain eval: eval.json, eval.md, eval.png and strip.png in"]
    assert all(stage in err for stage in stages) and sorted(stages, key=err.index) == stages, err
    assert err.count("pretrain eval: eval.json") == 1, err  # said once
    assert "5/5 [" in err and "14/14 [" in err, err
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    control = report["controllability"]
    for side in ("real", "generated"):
        assert 0 <= control[side]["button_accuracy_mean"] <= 1 and 0 <= control[side]["camera_bin_accuracy"] <= 1
        assert set(control[side]["button_f1"]) <= set(ACTION_BUTTONS) and control[side]["button_f1"]
    assert control["ratio"]["camera_bin_accuracy"] == pytest.approx(
        control["generated"]["camera_bin_accuracy"] / control["real"]["camera_bin_accuracy"])
    assert "Per-button F1 of the IDM" in (tmp_path / "ev" / "eval.md").read_text()
    assert report["num_clips"] == 2 and len(report["rollout"]["psnr"]) == 2
    assert 0 < report["next_frame"]["copy_last_psnr"] <= 60 and np.isfinite(report["delta_psnr"]["mean"])
    assert report["frames_per_s"] > 0 and (tmp_path / "ev" / "eval.png").exists()
    assert "next-frame PSNR" in (tmp_path / "ev" / "eval.md").read_text()
    st = report["stability"]  # the true-action rollout runs on to the stability horizon
    assert st["horizon"] == 4 and len(st["hist_distance"]) == len(st["edge_ratio"]) == len(st["psnr"]) == 4
    assert st["psnr"][:2] == pytest.approx(report["rollout"]["psnr"]) and 0 <= st["steady_horizon"] <= 4
    with Image.open(tmp_path / "ev" / "strip.png") as im:  # last real frame + horizons 1 and 4, two rows per clip
        assert im.size == (2 * (3 * 66 - 2), 2 * (2 * (2 * 64 + 2) + 6))


def test_a_full_disk_ends_training_in_one_line_leaving_nothing_half_written(data, full_disk, capsys):
    """A checkpoint write that meets a full disk (a real 300 KiB tmpfs; safetensors says so in Rust's
    words, Ray Train passes a worker's error on as text) ends the command in one line, exit 1, not a
    traceback; nothing half-written stays. Any other error is still a bug's traceback."""
    from worldloom.pipeline.cli import error_line

    small = full_disk("300k")
    argv = ["pretrain", "train", "--data", data["train"], "--out", str(small / "wm"), "--max-steps", "2",
            "--batch-size", "2", "--threads", "1"]
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "worldloom pretrain: error: no space left on the device; free some space, then re-run the same command to resume"
    assert sorted(p.name for p in (small / "wm").iterdir()) == ["config.json"]  # no temporary checkpoint left
    worker = RuntimeError("TrainingFailedError: worker 0: OSError: [Errno 28] No space left on device")  # Ray's text
    assert error_line(["pretrain", "train"], worker)[1] == 1
    wrapped = RuntimeError("saving")
    wrapped.__cause__ = OSError(28, "No space left on device", "run/ckpt.tmp")
    assert error_line(["dataset", "export"], wrapped) == (
        "worldloom dataset: error: no space left on the device writing run/ckpt.tmp; free some space, then run the command again", 1)
    assert error_line(["pretrain", "train"], RuntimeError("shape mismatch")) is None


def test_stability_score_sees_collapse_and_blur():
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(3, 8, 8, 3, generator=g) * 255).to(torch.uint8).repeat_interleave(8, 1).repeat_interleave(8, 2)  # blocky
    assert torch.allclose(ev.histogram_distance(real, real), torch.zeros(3))
    flat = torch.zeros_like(real)
    flat[..., 1] = 255  # a rollout collapsed into flat saturated green
    assert (ev.histogram_distance(flat, real) > 0.9).all() and (ev.edge_energy(flat) == 0).all()
    blurred = F.avg_pool2d(real.permute(0, 3, 1, 2).float(), 5, 1, 2, count_include_pad=False).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert (ev.edge_energy(blurred) < 0.6 * ev.edge_energy(real)).all()
    target = real[None].expand(2, 3, -1, -1, -1)  # 2 clips, horizons 1-3: the real frames stay the same
    scores = ev.stability_scores(target.clone(), target, real[:2])
    assert scores["hist_distance"] == pytest.approx([0, 0, 0]) and scores["edge_ratio"] == pytest.approx([1, 1, 1])
    collapsed = target.clone()
    collapsed[:, 1:] = flat[0]  # the rollout collapses from horizon 2
    scores = ev.stability_scores(collapsed, target, real[:2])
    assert scores["hist_distance"][0] == pytest.approx(0) and min(scores["hist_distance"][1:]) > 0.9
    assert scores["edge_ratio"][2] == 0 and len(scores["copy_last_hist_distance"]) == 3
    assert ev.steady_horizon([20.0, 19.0, 17.5, 16.9, 18.0]) == 3 and ev.steady_horizon([]) == 0


def test_resume_is_exact(data, tmp_path, capsys):
    cfg = TrainConfig(data=(data["train"],), out=str(tmp_path / "straight"), max_steps=4, checkpoint_every=10, **MICRO)
    main(cfg)
    resumed = TrainConfig(data=(data["train"],), out=str(tmp_path / "resumed"), max_steps=4, checkpoint_every=10, stop_after=2, **MICRO)
    main(resumed)
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 2
    capsys.readouterr()
    main(resumed)  # runs on from step 2 to 4
    assert f"pretrain train: resuming from step 2 of 4 ({tmp_path / 'resumed' / 'checkpoint'})" in capsys.readouterr().err
    for name in ("model", "ema", "optimizer"):
        a = load_file(tmp_path / "straight" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "resumed" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"


def test_a_stopped_and_resumed_run_logs_the_rows_of_one_uninterrupted_run(data, tmp_path):
    """A run stopped (--stop-after, Ctrl-C) at a step that is no multiple of --log-every wrote a metrics.csv row at
    that step, which the resume kept: steps 3, 5, 6, 7 where one run logs 3, 6, 7 (`idm train` and `agent train`
    log none there). The resumed metrics.csv is the uninterrupted run's, row for row, and curves.png is drawn from
    those rows."""
    import csv

    from worldloom.training import MetricsLog

    flags = {**MICRO, "log_every": 3, "max_steps": 7, "checkpoint_every": 10}
    main(TrainConfig(data=(data["train"],), out=str(tmp_path / "straight"), **flags))
    for stop_after in (2, 3, 0):  # stopped at steps 2 and 5, then on to the end
        main(TrainConfig(data=(data["train"],), out=str(tmp_path / "resumed"), stop_after=stop_after, **flags))

    def rows(run):
        with open(tmp_path / run / "metrics.csv") as f:
            return list(csv.DictReader(f))

    straight, resumed = rows("straight"), rows("resumed")
    assert [r["step"] for r in straight] == ["3", "6", "7"] and [r["step"] for r in resumed] == ["3", "6", "7"], resumed
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]  # the same steps, the same losses
    curve = MetricsLog(tmp_path / "resumed", list(resumed[0]), resume_step=7).series("loss")  # what curves.png plots
    assert curve == ([3, 6, 7], [float(r["loss"]) for r in straight])
    assert (tmp_path / "resumed" / "curves.png").stat().st_size > 0


def test_a_resume_with_other_training_flags_is_refused_and_keeps_the_config(data, tmp_path, capsys, monkeypatch):
    """`idm train` and `agent train` refused a resume with another --lr; `pretrain train` took it and
    config.json then recorded the new rate, though the steps saved were taken with the old one."""
    run = tmp_path / "wm"
    flags = ["pretrain", "train", "--data", data["train"], "--max-steps", "4", "--batch-size", "2",
             "--warmup-steps", "2", "--threads", "1"]  # no --camera-fov-deg: fitted, kept in config.json
    assert cli([*flags, "--out", str(run), "--stop-after", "2"]) == 0
    saved = (run / "config.json").read_text()
    assert json.loads(saved)["train"]["camera_fov_deg"] is not None
    capsys.readouterr()
    assert cli([*flags, "--out", str(run), "--lr", "0.05", "--minutes", "5"]) == 2  # --minutes: how long, may change
    assert capsys.readouterr().err.strip().splitlines() == [
        f"worldloom pretrain: error: {run} holds a run with a different config (lr): use a new --out, or the same "
        "flags to resume it"]
    assert (run / "config.json").read_text() == saved
    moved = run.rename(tmp_path / "moved")  # a run moved (or copied) before its resume: --out may change
    monkeypatch.chdir(Path(data["train"]).parent)  # and its data named relatively: the same folder, another spelling
    relative = [Path(data["train"]).name if f == data["train"] else f for f in flags]
    assert cli([*relative, "--out", str(moved)]) == 0  # the same flags: it goes on
    assert f"pretrain train: resuming from step 2 of 4 ({moved / 'checkpoint'})" in capsys.readouterr().err
    assert json.loads((moved / "checkpoint" / "state.json").read_text())["step"] == 4


def test_a_run_killed_between_the_renames_that_replace_its_checkpoint_resumes_from_it(data, tmp_path, capsys):
    """SIGKILL between the two renames that replace checkpoint/ (worldloom.io._swap_dirs) left no checkpoint/,
    only the old and the new copy under hidden temporary names: the resume started again from step 0."""
    import shutil

    from worldloom.io import temporary_name

    run = tmp_path / "wm"
    cfg = TrainConfig(data=(data["train"],), out=str(run), max_steps=4, stop_after=1, camera_fov_deg=0.0, threads=1,
                      **MICRO)
    main(cfg)  # step 1
    final = run / "checkpoint"
    shutil.copytree(final, temporary_name(final))  # the swap's first rename: the old checkpoint aside
    main(cfg)  # step 2, written under a temporary name, then killed before its rename to checkpoint/:
    new = final.rename(temporary_name(final))
    assert not final.exists() and len(list(run.glob(".checkpoint.tmp-*"))) == 2
    capsys.readouterr()
    main(dataclasses.replace(cfg, stop_after=0))
    err = capsys.readouterr().err
    assert (f"{run}: checkpoint/ was missing (a run killed while replacing it); put back the whole copy of step 2 it "
            f"left as {new.name}, and removed the other leftovers") in err
    assert f"pretrain train: resuming from step 2 of 4 ({final})" in err  # not from step 0
    assert json.loads((final / "state.json").read_text())["step"] == 4
    assert not list(run.glob(".checkpoint.tmp-*"))


def test_a_short_budgeted_run_finishes_its_warmup():
    from worldloom.pretrain.train import lr_for
    from worldloom.training import TimeBudget

    # The micro pipeline's case: --minutes leaves room for 17 steps, the configured warmup is 50.
    cfg = TrainConfig(data=("a",), out="x", minutes=0.2, warmup_steps=50, lr=5e-4)

    def schedule(budget, start=0, stop=17):
        lrs = []
        for step in range(start, stop):
            lrs.append(lr_for(step, cfg, budget))
            if step + 1 - start == budget.plan_after:  # when TimeBudget.update fits the plan
                budget.planned_steps = 17  # what the fit said on the slow machine of the report
        return lrs

    lrs = schedule(TimeBudget(cfg.minutes, None))
    assert max(lrs) == pytest.approx(5e-4)  # the peak is reached (it stayed at 1.7e-4 with a 50-step warmup)
    assert lrs[-1] < max(lrs)  # and the cosine decays after it
    resumed = TimeBudget(cfg.minutes, None, planned_steps=17)  # a resume at step 12, from the saved state
    assert [lr_for(step, cfg, resumed) for step in range(12, 17)] == lrs[12:]
    unbudgeted = TrainConfig(data=("a",), out="x", max_steps=17, warmup_steps=50)
    assert lr_for(16, unbudgeted, TimeBudget(0.0, 17)) < unbudgeted.lr / 2  # --max-steps keeps the warmup it was given


def test_metrics_show_every_log_every_steps_before_the_first_checkpoint(data, tmp_path, monkeypatch):
    import worldloom.pretrain.train as train

    calls, real_loss = [], train.flow_loss

    def crashes_at_step_4(*args, **kwargs):  # a run that dies (a fault injected) before its first checkpoint
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("crashed")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train, "flow_loss", crashes_at_step_4)
    run = tmp_path / "wm"
    with pytest.raises(RuntimeError, match="crashed"):
        main(TrainConfig(data=(data["train"],), out=str(run), max_steps=10, checkpoint_every=100,
                         camera_fov_deg=0.0, **MICRO))
    assert not (run / "checkpoint").exists()
    assert [r["step"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2", "3"]  # log_every 1
    assert (run / "curves.png").stat().st_size > 1000


def test_ctrl_c_before_the_first_checkpoint_saves_the_step_it_fell_in(data, tmp_path, monkeypatch, capsys):
    import os
    import signal

    import worldloom.pretrain.train as train
    from worldloom.pipeline.cli import main as cli

    calls, real_loss = [], train.flow_loss

    def ctrl_c_in_step_2(*args, **kwargs):  # a real SIGINT to this process, as the terminal sends on Ctrl-C
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train, "flow_loss", ctrl_c_in_step_2)
    run = tmp_path / "wm"
    assert cli(["pretrain", "train", "--data", data["train"], "--out", str(run), "--max-steps", "10", "--batch-size", "2",
                "--warmup-steps", "2", "--checkpoint-every", "100", "--camera-fov-deg", "0"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"worldloom pretrain: interrupted; checkpoint saved at step 2 ({run / 'checkpoint'}); re-run the same command "
        "to resume")
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2
    # no row at the step Ctrl-C stopped (--log-every 10), as idm and agent train: the resume would keep it, a row
    # an uninterrupted run has not (test_a_stopped_and_resumed_run_logs_the_rows_of_one_uninterrupted_run)
    assert [r["step"] for r in csv.DictReader((run / "metrics.csv").open())] == []


def test_sigterm_before_the_first_step_stops_at_once_with_nothing_saved(data, tmp_path, monkeypatch, capsys):
    import os
    import signal

    import worldloom.pretrain.train as train
    from worldloom.pipeline.cli import main as cli

    real_codec, handler = train.prepare_codec, signal.getsignal(signal.SIGTERM)  # (Ray's, if a test started it)

    def sigterm_while_preparing(*args, **kwargs):  # `timeout`/`kill` while the model is built: no step yet
        os.kill(os.getpid(), signal.SIGTERM)
        return real_codec(*args, **kwargs)

    monkeypatch.setattr(train, "prepare_codec", sigterm_while_preparing)
    monkeypatch.setattr(train, "flow_loss", lambda *a, **k: pytest.fail("a step ran after SIGTERM"))
    run = tmp_path / "wm"
    assert cli(["pretrain", "train", "--data", data["train"], "--out", str(run), "--max-steps", "10", "--batch-size", "2",
                "--warmup-steps", "2", "--camera-fov-deg", "0"]) == 143  # 128 + SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "worldloom pretrain: interrupted before the first training step; no checkpoint saved")
    assert not (run / "checkpoint").exists() and signal.getsignal(signal.SIGTERM) == handler  # given back


def test_nan_loss_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    from worldloom.pretrain import train

    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=10, stop_after=1, **MICRO))
    before = load_file(run / "checkpoint" / "model.safetensors")
    real = train.flow_loss  # the resume, with the same flags (another lr is refused), then meets a NaN loss
    monkeypatch.setattr(train, "flow_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"at step \d+: training stopped; the last good checkpoint is .*checkpoint \(step 1\)"):
        main(TrainConfig(data=(data["train"],), out=str(run), max_steps=10, **MICRO))
    after = load_file(run / "checkpoint" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_input(data, tmp_path):
    from worldloom.datasets import DatasetWriter

    with DatasetWriter(tmp_path / "empty", height=64, width=64, fps=20):
        pass
    small = write(tmp_path / "small", (5,), 12, size=96)
    slow = write(tmp_path / "slow", (6,), 12, fps=10)
    cases = {
        "no episode": TrainConfig(data=(str(tmp_path / "empty"),), out=str(tmp_path / "a")),
        "disagree": TrainConfig(data=(data["train"], small), out=str(tmp_path / "b")),
        "10 fps": TrainConfig(data=(data["train"], slow), out=str(tmp_path / "c")),
        "GiB": TrainConfig(data=(data["train"],), out=str(tmp_path / "d"), preset="small", batch_size=100_000),
    }
    for message, cfg in cases.items():
        with pytest.raises(UserError, match=message):
            main(cfg)
    assert not (tmp_path / "d" / "checkpoint").exists()
    with pytest.raises(ValueError, match="weights"):
        TrainConfig(data=("a", "b"), out="x", weights=(1.0,))
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(data=("a",), out="x", preset="huge")
    # the flag that is wrong, alone (they were refused together: "need minutes >= 0, lr in ..., got -1.0, 0.0005, ...")
    for field, value, words in (("minutes", -1.0, "minutes must be >= 0 (0: no time limit), got -1.0"),
                                ("grad_clip", 0.0, "grad_clip must be > 0, got 0.0")):
        with pytest.raises(ValueError) as refused:
            TrainConfig(data=("a",), out="x", **{field: value})
        assert str(refused.value) == words
    with pytest.raises(ValueError, match="camera_fov_deg"):
        TrainConfig(data=("a",), out="x", camera_fov_deg=-1.0)
    old = tmp_path / "old-run"  # a run written by WorldLoom 0.1: no format_version
    (old / "checkpoint").mkdir(parents=True)
    (old / "checkpoint" / "state.json").write_text("{}")
    (old / "config.json").write_text(json.dumps({"model": {"skip_warp": False}}))
    with pytest.raises(UserError, match="config.json: no format_version"):
        ev.evaluate(ev.EvalConfig(model=str(old), data=(data["heldout"],)))
    assert cli(["pretrain", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 2
    # Footage without actions: refused before anything is written, with the way out.
    with pytest.raises(UserError, match="no episode carries actions.*worldloom idm label.*--no-use-actions"):
        main(TrainConfig(data=(data["unlabeled"],), out=str(tmp_path / "f")))
    assert not (tmp_path / "f").exists()
    main(TrainConfig(data=(data["unlabeled"],), out=str(tmp_path / "g"), use_actions=False, max_steps=1, **MICRO))  # the way out
    assert cli(["pretrain", "rollout", "--model", str(tmp_path / "nope"), "--data", data["heldout"], "--episode", "x",
                "--out", "r.avi"]) == 2


def test_eval_and_rollout_on_data_at_another_step_rate_are_one_line(data, tmp_path, capsys):
    """A world model learned 20 steps per second; footage labeled at --fps 10 was scored and rolled out
    step for step (each 1/10 s step taken as a 1/20 s one), exit 0. Now one line names both rates."""
    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=1, **MICRO))
    slow = write(tmp_path / "slow", (7,), 16, fps=10)
    for argv in (["pretrain", "eval", "--model", str(run), "--data", slow, "--num-clips", "1", "--horizon", "2",
                  "--next-frame-positions", "1", "--out", str(tmp_path / "ev")],
                 ["pretrain", "rollout", "--model", str(run), "--data", slow, "--episode", "ep-7", "--horizon", "2",
                  "--out", str(tmp_path / "r.mp4")]):
        capsys.readouterr()
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert f"{slow} holds 10 steps per second, but world model {run} learned 20" in err and "--fps 20" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "ev").exists() and not (tmp_path / "r.mp4").exists()
    # the controllability IDM reads the same clips step for step: one that learned 10 steps per second is refused
    from worldloom.idm.checkpoint import save_idm
    from worldloom.idm.model import IDM
    from worldloom.idm.model import PRESETS as IDM_PRESETS

    judge = save_idm(tmp_path / "judge", IDM(IDM_PRESETS["micro"]))
    doc = json.loads((judge / "config.json").read_text())
    (judge / "config.json").write_text(json.dumps({**doc, "data": {"fps": 10.0}}))
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data["train"], "--num-clips", "1", "--horizon", "2",
                "--next-frame-positions", "1", "--idm", str(judge), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert f"{data['train']} holds 20 steps per second, but IDM {judge} learned 10" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "ev").exists()


def test_eval_refuses_an_out_that_is_a_file_a_dataset_or_a_run_before_the_work(data, tmp_path, capsys):
    """`pretrain eval --out notes.txt` generated and scored every clip, then ended in a FileExistsError
    traceback; `--out` a dataset got eval.json, eval.png and strip.png among its shards, exit 0. Now one line up front."""
    from conftest import assert_out_refused, make_run

    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=1, **MICRO))
    note = tmp_path / "notes.txt"
    note.write_text("not a folder")
    argv = ["pretrain", "eval", "--model", str(run), "--data", data["heldout"], "--num-clips", "1", "--horizon", "2",
            "--next-frame-positions", "1"]
    assert cli([*argv, "--out", str(note)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--out {note} is a file, not a folder; give a new folder for an evaluation report"), err
    assert "Traceback" not in err and note.read_text() == "not a folder"
    assert_out_refused(cli, argv, Path(data["train"]), "holds a WorldLoom dataset", capsys, one_line=True)
    assert_out_refused(cli, argv, make_run(tmp_path / "idm", "idm"), "holds an IDM run", capsys, one_line=True)


def test_eval_and_rollout_of_frames_of_another_size_say_the_resize(data, tmp_path, capsys):
    """A world model of 64x64 frames rolled out a 32x32 episode resized to 64x64, truth and generated, without
    a word (eval said it). Now both say it in one line on stderr."""
    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=1, **MICRO))
    from conftest import pixel_frames, random_actions

    from worldloom.datasets import DatasetWriter

    small = str(tmp_path / "small")
    with DatasetWriter(small, 32, 32, fps=20) as w:
        w.add_episode("ep-7", pixel_frames(16, 32, 32), *random_actions(16))
    capsys.readouterr()
    for argv in (["pretrain", "eval", "--model", str(run), "--data", small, "--num-clips", "1", "--horizon", "2",
                  "--next-frame-positions", "1", "--out", str(tmp_path / "ev")],
                 ["pretrain", "rollout", "--model", str(run), "--data", small, "--episode", "ep-7", "--horizon", "2",
                  "--sample.num-steps", "1", "--out", str(tmp_path / "r.mp4")]):
        assert cli(argv) == 0
        err = capsys.readouterr().err
        assert f"pretrain {argv[1]}: frames 32x32 -> 64x64 for the model's input (area)" in err, err
    assert (tmp_path / "r.mp4").stat().st_size > 0


def test_rollout_of_an_unlabeled_episode_is_only_the_error(data, tmp_path, capsys):
    """`pretrain rollout` of an unlabeled episode past its end first said "N of the --horizon frames are
    generated", then refused the episode as unlabeled. Now the refusal is the only line."""
    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=1, **MICRO))
    capsys.readouterr()
    assert cli(["pretrain", "rollout", "--model", str(run), "--data", data["unlabeled"], "--episode", "ep-3",
                "--horizon", "100", "--out", str(tmp_path / "r.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("worldloom pretrain: error: episode 'ep-3' is unlabeled (label_source none): a rollout needs its "
                   "actions; label it with the IDM first"), err


def test_a_rollout_video_is_not_written_into_a_dataset(data, tmp_path, capsys):
    """`pretrain rollout --out DATASET/r.mp4` (or `--out DATASET`, or its frames/ folder) wrote the video among the
    dataset's own files, exit 0, where `agent eval --out` into a dataset is refused. Now one line, nothing written."""
    from conftest import tree_digest

    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=1, **MICRO))
    capsys.readouterr()
    before = tree_digest(data["train"])
    for out in (f"{data['train']}/r.mp4", data["train"], f"{data['train']}/frames", f"{data['train']}/new/r.gif"):
        assert cli(["pretrain", "rollout", "--model", str(run), "--data", data["train"], "--episode", "ep-0",
                    "--horizon", "1", "--out", out]) == 2
        err = capsys.readouterr().err
        assert f"lies inside the WorldLoom dataset {Path(data['train']).absolute()}; write it to a folder outside it" \
            in err and err.count("\n") == 1, err
    assert tree_digest(data["train"]) == before


def test_eval_on_unlabeled_or_short_data_says_what_to_do(data, tmp_path, capsys):
    """`pretrain eval --data FOOTAGE` (label_source none) said "['FOOTAGE']: no labeled episode with 18 steps", a
    Python list and a length where the fault was the missing labels. Now one line for each case saying what to do."""
    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=1, **MICRO))
    capsys.readouterr()
    for source, words in ((data["unlabeled"], f"{data['unlabeled']}: no labeled episode to score (label_source none"),
                          (data["train"], f"{data['train']}: no labeled episode with 1002 steps (context + horizon) "
                                          "to score (the longest holds 40): pass a shorter --horizon")):
        assert cli(["pretrain", "eval", "--model", str(run), "--data", source, "--horizon", "1000",
                    "--out", str(tmp_path / "ev")]) == 2
        err = capsys.readouterr().err
        assert words in err and "[" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "ev").exists()
    # a dataset without episodes (a split that drew none) was told it held footage without labels, to label with
    # `idm label` (a new-user trial, 2026-12-07); it holds nothing to label
    assert cli(["dataset", "split", data["train"], "--out", str(tmp_path / "sp"), "--fractions", "train=1", "val=0"]) == 0
    empty = str(tmp_path / "sp" / "val")
    capsys.readouterr()
    assert cli(["pretrain", "eval", "--model", str(run), "--data", data["train"], empty, "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert f"{empty} holds no episodes: record some with `worldloom capture run --out {empty}`" in err, err
    assert "label_source none" not in err and err.count("\n") == 1 and not (tmp_path / "ev").exists()


def test_rollout_and_eval_say_up_front_what_a_short_episode_cuts(data, tmp_path, capsys, monkeypatch):
    """`pretrain rollout --horizon 8` on a 5-step episode made 3 frames, said only by the summary after
    the work; `pretrain eval` scored fewer clips than --num-clips and a shorter stability rollout than
    --stability-horizon without a word. Now each is one line before the work; nothing to generate is an error."""
    run = tmp_path / "wm"
    main(TrainConfig(data=(data["train"],), out=str(run), max_steps=1, **MICRO))
    short = write(tmp_path / "short", (7,), 5)
    tiny = write(tmp_path / "tiny", (8,), 2)
    rollout = ["pretrain", "rollout", "--model", str(run), "--data", short, "--episode", "ep-7", "--scale", "1"]
    capsys.readouterr()
    assert cli([*rollout, "--horizon", "8", "--out", str(tmp_path / "r.gif")]) == 0
    out, err = capsys.readouterr()
    assert ("pretrain rollout: episode 'ep-7' holds 5 steps: after 2 context frames from step 0, 3 of the --horizon 8 "
            "frames are generated (the episode's end)") in err, err
    assert "3 frames after 2 real ones" in out + err
    assert cli([*rollout, "--horizon", "3", "--out", str(tmp_path / "r3.gif")]) == 0
    assert "--horizon" not in capsys.readouterr().err  # nothing cut: nothing said
    for argv, words in (([*rollout, "--start", "3"], "episode 'ep-7' holds 5 steps: 2 context frames from step 3 leave "
                                                     "none to generate (a rollout needs 3 steps from --start): give a "
                                                     "--start of at most 2"),
                        (["pretrain", "rollout", "--model", str(run), "--data", tiny, "--episode", "ep-8"],
                         "episode 'ep-8' holds 2 steps, fewer than the model's 2 context frames and one to generate")):
        assert cli([*argv, "--out", str(tmp_path / "none.gif")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "none.gif").exists()
    monkeypatch.setattr("worldloom.progress.SHOW_AFTER_S", 0.0)  # every stage on the bar, however quick
    assert cli(["pretrain", "eval", "--model", str(run), "--data", short, "--num-clips", "4", "--horizon", "2",
                "--stability-horizon", "8", "--next-frame-positions", "1", "--sample.num-steps", "1",
                "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert ("pretrain eval: the longest labeled episode holds 5 steps: the stability rollout runs 3 of the "
            "--stability-horizon 8 frames after 2 context frames") in err, err
    assert "pretrain eval: the data holds 1 distinct clip(s) of 5 steps (2 of context and 3 generated: the longer of " \
           "--horizon 2 and --stability-horizon 8, as the episodes allow): 1 of the --num-clips 4 are scored" in err, err
    assert err.index("--num-clips 4") < err.index(", generating]"), err  # before the work

    def refuse(name):  # NaN and Infinity, which Python's json writes and jq, JavaScript and pyarrow refuse
        raise ValueError(f"{name} is not JSON")

    for path in [*(tmp_path / "ev").glob("*.json"), *run.rglob("*.json")]:
        json.loads(path.read_text(), parse_constant=refuse)


def test_presets_are_valid_and_sized():
    sizes = {name: sum(p.numel() for p in WorldModel(cfg).parameters()) for name, cfg in PRESETS.items() if name != "large"}
    assert 2e6 < sizes["tiny"] < 6e6 < sizes["small"]
    assert PRESETS["large"].latent_channels and 16 <= PRESETS["large"].num_frames <= 32
    with pytest.raises(ValueError, match="patch_size"):
        WorldModelConfig(patch_size=7)


def test_latent_preset_trains_its_autoencoder_then_the_model(data, tmp_path):
    latent = WorldModelConfig(image_size=64, patch_size=2, latent_channels=4, latent_downsample=8, width=32, depth=1, num_heads=2, num_frames=4)
    # `large`'s code path at a size CI can run: its model, cut down through the nested config
    run = main(TrainConfig(data=(data["train"],), out=str(tmp_path / "wm"), preset="large", model=latent, max_steps=2, ae_steps=3, **MICRO))
    assert (run / "autoencoder.safetensors").exists()
    report = ev.evaluate(ev.EvalConfig(model=str(run), data=(data["heldout"],), num_clips=1, horizon=2,
                                       next_frame_positions=1, sample=SampleConfig(num_steps=1), out=str(tmp_path / "ev")))
    assert report["context"] == 3 and 0 < report["next_frame"]["psnr"] <= 60


def test_a_run_stopped_before_its_first_checkpoint_leaves_no_autoencoder_for_another_model(data, tmp_path):
    from worldloom.pretrain.train import prepare_run

    latent = WorldModelConfig(image_size=64, patch_size=2, latent_channels=4, latent_downsample=8, width=32, depth=1,
                              num_heads=2, num_frames=4)
    run, fov = tmp_path / "wm", 70.0  # given: no camera fit
    cfg = TrainConfig(data=(data["train"],), out=str(run), preset="large", model=latent, max_steps=1, camera_fov_deg=fov,
                      **MICRO)
    prepare_run(cfg)  # config.json written; the run then trains its autoencoder and stops before a checkpoint
    ae = run / "autoencoder.safetensors"
    ae.write_bytes(b"an autoencoder of 4 latent channels")
    prepare_run(cfg)  # the same run again: its autoencoder is kept
    assert ae.exists()
    other = dataclasses.replace(cfg, model=dataclasses.replace(latent, latent_channels=2))
    prepare_run(other)  # another model into the folder: that autoencoder would not fit it
    assert not ae.exists() and json.loads((run / "config.json").read_text())["model"]["latent_channels"] == 2


def test_a_run_written_with_the_removed_loss_weight_field_still_loads(tmp_path):
    """`flow.loss_weight` was a switch until 2026-11-30 ("x0", kept as the only loss, or "v");
    runs that stored "x0" load as before, "v" is a one-line error naming the file."""
    from worldloom.config import to_json_dict
    from worldloom.pretrain.checkpoint import check_config
    from worldloom.pretrain.data import SourceSpec
    from worldloom.pretrain.model import WorldModelConfig
    from worldloom.pretrain.train import TrainConfig as WMTrainConfig

    train = WMTrainConfig(data=("data",), out=str(tmp_path), model=WorldModelConfig())
    spec = SourceSpec(height=64, width=64, fps=20.0, num_episodes=1, num_frames=40, label_sources=("env",))
    doc = {"train": to_json_dict(train), "model": to_json_dict(train.model_config), "data": to_json_dict(spec)}
    path = tmp_path / "config.json"
    old = check_config({**doc, "flow": {**to_json_dict(train.flow), "loss_weight": "x0"}}, path)
    assert old["flow"] == train.flow
    with pytest.raises(UserError, match=r"config.json: flow.loss_weight is 'v'.*train the run again"):
        check_config({**doc, "flow": {**to_json_dict(train.flow), "loss_weight": "v"}}, path)
    # Fields added in checkpoint format 2 (model.signal_input, model.dead_zone) default to what the
    # code did before them in a format-1 run; a format-2 run without them is damaged.
    before = {k: v for k, v in doc["model"].items() if k not in ("signal_input", "dead_zone")}
    loaded = check_config({**doc, "format_version": 1, "model": before, "flow": to_json_dict(train.flow)}, path)["model"]
    assert (loaded.signal_input, loaded.dead_zone) == (False, 0.0) and loaded == WorldModelConfig()
    with pytest.raises(UserError, match=r"config.json: model.signal_input is missing"):
        check_config({**doc, "format_version": 2, "model": before, "flow": to_json_dict(train.flow)}, path)
    # format 3 added model.hud_mask: a format-2 run had none
    v2 = {k: v for k, v in doc["model"].items() if k not in ("hud_mask", "hud_fill")}
    assert check_config({**doc, "format_version": 2, "model": v2, "flow": to_json_dict(train.flow)}, path)["model"].hud_mask is False
    # format 4 added model.hud_fill: a format-3 run turned its frames with the HUD in them
    v3 = {**v2, "hud_mask": True}
    assert check_config({**doc, "format_version": 3, "model": v3, "flow": to_json_dict(train.flow)}, path)["model"].hud_fill is False
    # format 6 added model.move_flow: a format-5 run's base did not move with the movement keys
    v5 = {k: v for k, v in doc["model"].items() if k != "move_flow"}
    assert check_config({**doc, "format_version": 5, "model": v5, "flow": to_json_dict(train.flow)}, path)["model"].move_flow == 0


def test_train_into_a_dataset_or_another_run_is_one_line_and_nothing_is_written(data, tmp_path, capsys):
    from conftest import assert_out_refused, make_run

    expected = {data["heldout"]: "holds a WorldLoom dataset (dataset.json), not a world model run; give a new --out",
                make_run(tmp_path / "bc", "policy"): 'holds a policy run (config.json with "kind": "policy"), not a world model run'}
    for out, message in expected.items():
        assert_out_refused(cli, ["pretrain", "train", "--data", data["train"], "--max-steps", "1"], out, message, capsys,
                           one_line=True)


def _perturbed_model_and_clips(scale: float, num_clips: int, num_steps: int) -> tuple:
    """A small world model with its weights moved off the adaLN-zero start (where every block is the identity) by
    `scale` standard normals, and `num_clips` random clips of `num_steps` 32x32 frames with actions."""
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=32, width=48, depth=2, num_heads=2, num_frames=4)).eval()
    for p in model.parameters():
        p.data += scale * torch.randn_like(p)
    g = torch.Generator().manual_seed(1)
    clips = {"frames": torch.randint(0, 256, (num_clips, num_steps, 32, 32, 3), generator=g, dtype=torch.uint8),
             "buttons": torch.rand(num_clips, num_steps, 20, generator=g) > 0.7,
             "camera": 5 * torch.randn(num_clips, num_steps, 2, generator=g)}
    return model, clips


def test_eval_frames_do_not_depend_on_the_batch_size():
    """`pretrain eval --batch-size` only says how many clips go through at once: each clip's teacher-forced
    frames and rollouts (true and shuffled actions) are the same in a batch of 1, 2 or all 4 (one
    generator drew every batch's noise in turn, so clip 2's noise, and its scores, changed with it)."""
    from worldloom.pretrain.autoencoder import PixelCodec

    model, clips = _perturbed_model_and_clips(scale=0.05, num_clips=4, num_steps=6)
    runs = []
    for batch_size in (4, 2, 1):
        cfg = ev.EvalConfig(model="m", data=("d",), horizon=2, num_clips=4, batch_size=batch_size, next_frame_positions=2,
                            stability_horizon=3, sample=SampleConfig(num_steps=2))
        runs.append(ev.generate(model, PixelCodec(), clips, cfg, 32, long_horizon=3))
    for other in runs[1:]:
        for kind in ("next", "long", "shuffled"):
            diff = (runs[0][kind].int() - other[kind].int()).abs()
            assert diff.max() <= 1, (kind, diff.max())  # float rounding of other batch shapes at most


def test_eval_rollouts_do_not_depend_on_the_stability_horizon_or_the_next_frame_positions():
    """Each clip's generator drew the teacher-forced frames' noise (--next-frame-positions of them), then the
    true-action rollout's, run to --stability-horizon, then the shuffled-action rollout's: each one's noise, so its
    frames and scores, changed with how much the ones before it drew (2 or 5 frames, 1 or 2 positions here), as a
    chunked pass differs from one pass. Each now starts from the clip's own noise: the rollouts are the same
    whatever those flags, true against shuffled differs only by the actions (the same actions give the same
    frames), and the first teacher-forced frame is the rollout's first."""
    from worldloom.pretrain.autoencoder import PixelCodec

    model, clips = _perturbed_model_and_clips(scale=0.2, num_clips=3, num_steps=8)
    cfg = ev.EvalConfig(model="m", data=("d",), horizon=2, num_clips=3, next_frame_positions=2, stability_horizon=5,
                        sample=SampleConfig(num_steps=2, dead_zone=0.0))
    short, long = (ev.generate(model, PixelCodec(), clips, cfg, 32, long_horizon=h) for h in (2, 5))
    assert torch.equal(short["true"], long["true"]) and torch.equal(short["shuffled"], long["shuffled"])
    fewer = ev.generate(model, PixelCodec(), clips, dataclasses.replace(cfg, next_frame_positions=1), 32, long_horizon=5)
    assert torch.equal(fewer["long"], long["long"]) and torch.equal(fewer["shuffled"], long["shuffled"])  # nor on these
    assert torch.equal(long["next"][:, 0], long["true"][:, 0])  # the first frame: one context, one action, one noise
    same = {**clips, "buttons": clips["buttons"][:1].expand(3, -1, -1), "camera": clips["camera"][:1].expand(3, -1, -1)}
    alike = ev.generate(model, PixelCodec(), same, cfg, 32, long_horizon=5)  # every clip's actions the same
    assert torch.equal(alike["true"], alike["shuffled"])


def test_an_autoencoder_left_by_a_run_on_other_data_of_the_same_size_is_stale(tmp_path):
    """A run stopped before its first checkpoint leaves its autoencoder; it was reused when the next run's
    model and data counts matched, though --data was captured again under the same name (other shards)."""
    from worldloom.checkpoint import DATA_CONTENT
    from worldloom.pretrain.train import _stale_codec

    doc_ = {"model": {"latent_channels": 4}, "data": {"num_episodes": 3, "num_frames": 120},
            DATA_CONTENT: {"data": "blake2b-64:0000000000000001"}}
    (tmp_path / "config.json").write_text(json.dumps(doc_))
    assert not _stale_codec(tmp_path, doc_)
    assert _stale_codec(tmp_path, {**doc_, DATA_CONTENT: {"data": "blake2b-64:0000000000000002"}})


def test_a_horizon_under_the_next_frame_positions_names_the_flag_given():
    """`pretrain eval --horizon 2` named a flag the user never set (`next_frame_positions (4) must be <=
    horizon (2)`, a new-user trial, session 32): the line names --horizon and both ways out."""
    import worldloom.pretrain.evaluate as ev

    with pytest.raises(ValueError, match=r"^--horizon 2 is shorter than the 4 next-frame positions scored per clip: "
                                         r"pass --horizon 4 or more, or --next-frame-positions 2$"):
        ev.EvalConfig(model="m", data=("d",), horizon=2)
