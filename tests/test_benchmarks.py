"""The learning-curve benchmark's convolutional peer (benchmarks/unet_peer.py): what could break silently.

    python -m pytest -q tests/test_benchmarks.py

The peer answers the DiT's call signature so flow.py trains and samples it unchanged; if its
sampler path (context kept with return_kv, then the new frame with past_kv) drifted from its
training path, `bench_pretrain.py --curve-minutes` would score a model other than the one trained.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from unet_peer import UNetConfig, UNetPeer  # noqa: E402

from worldloom.actions import NUM_BUTTONS  # noqa: E402
from worldloom.pretrain.flow import FlowConfig, SampleConfig, flow_loss, rollout  # noqa: E402
from worldloom.pretrain.model import encode_actions, shift_actions  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is ~10x faster than two on a busy 2-core machine (no OpenMP spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CFG = UNetConfig(image_size=16, channels=(8, 16), cond_dim=16, num_frames=3, camera_fov_deg=70.0)


def inputs(B: int = 4, T: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, T, 3, 16, 16, generator=g) * 2 - 1
    buttons = (torch.rand(B, T, NUM_BUTTONS, generator=g) < 0.2).float()
    action = encode_actions(buttons, 8 * torch.randn(B, T, 2, generator=g))  # turns of a few pixels: the warp runs
    return x, action, torch.ones(B, T, dtype=torch.bool)


def test_peer_sampler_path_is_its_training_path():
    torch.manual_seed(0)
    model = UNetPeer(CFG)
    with torch.no_grad():  # leave the zero init, so the output depends on every input
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, action, has = inputs(T=5)  # 3 frames a window, 5 actions for a rollout of 4 after 2
    x, a, m = x[:, :3], *shift_actions(action[:, :3], has[:, :3])
    m[1, -1] = False  # one frame with the null action
    t = torch.tensor([[0.0, 0.05, 1.0], [0.1, 0.0, 0.5], [0.02, 0.02, 0.9], [0.0, 0.0, 0.2]])
    v = model(x, t, a, m)
    assert v.shape == x.shape and v[:, :-1].abs().max() == 0  # only the last frame is predicted
    _, kv = model(x[:, :-1], t[:, :-1], a[:, :-1], m[:, :-1], return_kv=True)
    v_new = model(x[:, -1:], t[:, -1:], a[:, -1:], m[:, -1:], past_kv=kv, start=2, prev=x[:, -2], prev_t=t[:, -2])
    assert v_new.shape == (4, 1, 3, 16, 16)
    torch.testing.assert_close(v_new[:, 0], v[:, -1], atol=1e-5, rtol=1e-5)
    frames = rollout(model, x[:, :2], action, has, 4, SampleConfig(num_steps=2))
    assert frames.shape == (4, 4, 3, 16, 16) and frames.abs().max() <= 1.0


def test_peer_learns_on_a_tiny_batch():
    torch.manual_seed(0)
    model = UNetPeer(CFG)
    x, action, has = inputs(B=8, seed=1)
    flow = FlowConfig(p_sampling_pattern=1.0, p_pure_noise=1.0, log_mse=True)  # the tiny objective
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = flow_loss(model, x, action, has, flow, generator=torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses  # measured: 0.45 -> 0.28


def test_learning_curve_runs_take_steps_as_pretrain_trains(tmp_path):
    """bench_pretrain.py --curve-minutes trains through pretrain/train.py's own schedule helpers
    (lr_for; ema_decay_at and update_ema from worldloom.training, where pretrain/train.py takes them): a change of their signatures must break here, not in the
    middle of an hour-long benchmark (it did once: lr_for came to take the TimeBudget)."""
    import argparse

    import numpy as np
    from bench_pretrain import CurveRun, curve_models

    from worldloom.datasets import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "d", height=64, width=64, fps=20) as w:  # with the view's pitch, as captures have it
        w.add_episode("ep-0", rng.integers(0, 255, (24, 64, 64, 3), np.uint8),
                      buttons=(rng.random((24, NUM_BUTTONS)) < 0.1), camera=rng.normal(0, 2, (24, 2)).astype(np.float32),
                      label_source="env", state={"state_pitch": rng.uniform(-60, 60, 24).astype(np.float32)})
    args = argparse.Namespace(batch_size=2, seed=0, unet_context=4)
    cfg, models = curve_models(args, [str(tmp_path / "d")])
    assert models["dit"][0].cfg.world_yaw and models["unet"][0].cfg.world_yaw  # the peer warps as the DiT does
    for name, (model, flow) in models.items():
        run = CurveRun(name, model, flow, cfg, [str(tmp_path / "d")], minutes=0.5)
        before = [p.detach().clone() for p in run.model.parameters()]
        seen = []  # train.py gives the model each frame's view pitch where the data has it: so must the curve's step
        run.model.register_forward_pre_hook(lambda mod, a, kw, seen=seen: seen.append(kw.get("view_pitch") is not None), with_kwargs=True)
        run.train_step()
        run.train_step()
        assert run.step == 2 and all(np.isfinite(run.losses)) and run.cpu_s > 0, name
        assert seen and all(seen), name
        assert run.opt.param_groups[0]["lr"] > 0, name
        assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters(), strict=True)), name


def test_learning_curve_scores_both_models_on_clips_with_pitch(tmp_path):
    """The curve's scoring (pretrain/evaluate.py's rollouts) calls each model with the clips' view pitch, as
    `pretrain eval` does: the peer must take it (it once stopped the benchmark after its first point)."""
    import numpy as np
    from bench_pretrain import score_point

    from worldloom.pretrain.model import WorldModel, WorldModelConfig

    rng = np.random.default_rng(1)
    B, T = 2, 8
    clips = {"frames": torch.as_tensor(rng.integers(0, 255, (B, T, 16, 16, 3), np.uint8)),
             "buttons": torch.as_tensor(rng.random((B, T, NUM_BUTTONS)) < 0.1),
             "camera": torch.as_tensor(rng.normal(0, 4, (B, T, 2)).astype(np.float32)),
             "has_action": torch.ones(B, T, dtype=torch.bool),
             "pitch": torch.as_tensor(rng.uniform(-60, 60, (B, T)).astype(np.float32))}
    peer = UNetPeer(dataclasses.replace(CFG, world_yaw=True, sprint_fov_deg=77.0))
    dit = WorldModel(WorldModelConfig(image_size=16, patch_size=4, width=32, depth=1, num_heads=2, num_frames=3,
                                      camera_fov_deg=70.0, world_yaw=True))
    for model in (peer, dit):
        out = score_point(model, clips, [1, 2], 4, B, 0)
        assert np.isfinite(out["next_frame_psnr"]) and set(out["rollout_psnr"]) == {1, 2}, type(model).__name__


def test_peer_turns_about_the_worlds_vertical_where_the_pitch_is_known():
    """world_yaw: a yaw seen from a frame looking down turns the picture differently from one seen level,
    as the DiT's warp does (pretrain/camera.py); without world_yaw the pitch changes nothing."""
    x, action, has = inputs(B=2, T=3, seed=2)
    x, a, m = x, *shift_actions(action, has)
    t = torch.tensor([[0.0, 0.0, 0.7], [0.0, 0.0, 0.7]])
    level, down = torch.zeros(2, 3), torch.full((2, 3), 50.0)
    for world_yaw in (False, True):
        torch.manual_seed(0)
        model = UNetPeer(dataclasses.replace(CFG, world_yaw=world_yaw))
        with torch.no_grad():
            v_level, v_down = model(x, t, a, m, view_pitch=level)[:, -1], model(x, t, a, m, view_pitch=down)[:, -1]
        assert (v_level - v_down).abs().max() > 1e-3 if world_yaw else torch.equal(v_level, v_down), world_yaw
