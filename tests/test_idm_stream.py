"""Chunked inference equals one pass: `StreamPredictor` fed in pieces of any size, tiny random IDMs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldloom.idm import infer
from worldloom.idm.data import padded_frames
from worldloom.idm.model import IDM, IDMConfig

# (window T, steps, batch size, model extras): windows of 4 to 16 frames, sequences shorter than a
# window, ending on and off the stride grid, windows run one by one and in batches.
CASES = [
    (4, 131, 1, {}),
    (6, 47, 1, {"temporal_conv_layers": 1}),
    (8, 61, 2, {"motion_channels": 16}),
    (8, 5, 8, {}),
    (16, 75, 1, {"motion_channels": 16, "temporal_conv_layers": 2}),
]


def tiny_idm(num_frames: int, **extra) -> IDM:
    torch.manual_seed(num_frames)
    cfg = IDMConfig(num_frames=num_frames, stem_channels=4, stack_channels=(4, 8, 8), frame_dim=16, hidden=16,
                    num_layers=1, num_heads=2, **extra)
    return IDM(cfg).eval()


def streamed(model: IDM, frames: np.ndarray, pieces: list[int], batch_size: int,
             hold_steps: int = 1) -> tuple[dict, list[int]]:
    """Predictions of `frames` pushed in pieces of the given sizes (cycled), and the steps each push returned."""
    stream, parts, returned, start = infer.StreamPredictor(model, batch_size, hold_steps), [], [], 0
    for size in pieces * len(frames):
        if start >= len(frames):
            break
        parts.append(stream.push(frames[start:start + size]))
        returned.append(len(parts[-1]["confidence"]))
        start += size
    parts.append(stream.finish())
    return infer.concat_predictions(parts), returned


@pytest.mark.parametrize(("num_frames", "num_steps", "batch_size", "extra"), CASES)
@pytest.mark.parametrize("hold_steps", [1, 7])
def test_any_pieces_give_the_one_pass_labels_to_the_last_bit(num_frames, num_steps, batch_size, extra, hold_steps):
    model = tiny_idm(num_frames, **extra)
    frames = np.random.default_rng(num_steps).integers(0, 256, (num_steps, 64, 64, 3), dtype=np.uint8)
    one_pass = infer.predict_sequence(model, frames, batch_size, hold_steps)
    for pieces in ([1], [3], [7], [num_frames + 1], [2, 9, 5]):
        out, returned = streamed(model, frames, pieces, batch_size, hold_steps)
        for key in ("buttons", "buttons_prob", "camera_bins", "camera_deg", "confidence"):
            assert np.array_equal(out[key], one_pass[key]), (pieces, key)
        if num_steps > 4 * num_frames:  # labels flow out while the video is read, a bounded lag behind
            held = np.cumsum([pieces[i % len(pieces)] for i in range(len(returned))]) - np.cumsum(returned)
            assert held.max() <= 2 * batch_size * num_frames + 2 * num_frames + max(pieces) + hold_steps // 2


@pytest.mark.parametrize("num_steps", [61, 5])
def test_held_keys_are_decided_on_their_average_over_the_steps_around(num_steps):
    """hold_steps=7: each movement key's probability is its mean over steps t-3..t+3 (the first and last steps
    repeated beyond the ends) and the press is that mean > 0.5; every other button and the camera stay per step."""
    model = tiny_idm(8, motion_channels=16)
    with torch.no_grad():  # move the movement keys' probabilities about 0.5, so the average decides differently
        model.head.weight[infer.HELD_INDEX] *= 0.01
        model.head.bias[infer.HELD_INDEX] = 0.0
    frames = np.random.default_rng(3).integers(0, 256, (num_steps, 64, 64, 3), dtype=np.uint8)
    each, held = infer.predict_sequence(model, frames), infer.predict_sequence(model, frames, hold_steps=7)
    raw = each["buttons_prob"][:, infer.HELD_INDEX].astype(np.float64)
    padded = np.concatenate([np.repeat(raw[:1], 3, 0), raw, np.repeat(raw[-1:], 3, 0)])
    mean = np.stack([padded[t:t + 7].mean(0) for t in range(num_steps)])
    np.testing.assert_allclose(held["buttons_prob"][:, infer.HELD_INDEX], mean, atol=1e-6)
    assert np.array_equal(held["buttons"][:, infer.HELD_INDEX], mean > 0.5)
    assert not np.array_equal(held["buttons"][:, infer.HELD_INDEX], each["buttons"][:, infer.HELD_INDEX])
    others = np.setdiff1d(np.arange(20), infer.HELD_INDEX)
    assert np.array_equal(held["buttons_prob"][:, others], each["buttons_prob"][:, others])
    for key in ("camera_bins", "camera_deg"):
        assert np.array_equal(held[key], each[key])
    with pytest.raises(ValueError, match="odd"):
        infer.StreamPredictor(model, hold_steps=4)


def test_the_streamed_windows_are_the_padded_windows_of_training():
    """Every kept step equals running its window whole with black frames beyond the ends, as in training."""
    model = tiny_idm(8, motion_channels=16)
    frames = np.random.default_rng(0).integers(0, 256, (29, 64, 64, 3), dtype=np.uint8)
    out, _ = streamed(model, frames, [5], batch_size=1)
    ctx, T = model.cfg.context, model.cfg.num_frames
    for start, keep_from, keep_to in infer.window_plan(len(frames), T):
        window = torch.from_numpy(padded_frames(frames, start - ctx, start + T + ctx))[None]
        with torch.no_grad():
            probs = torch.sigmoid(model(window)["buttons"])[0].numpy()
        np.testing.assert_allclose(out["buttons_prob"][keep_from:keep_to], probs[keep_from - start:keep_to - start],
                                   atol=1e-5)


def test_push_after_finish_is_an_error():
    stream = infer.StreamPredictor(tiny_idm(4))
    stream.push(np.zeros((3, 64, 64, 3), np.uint8))
    assert len(stream.finish()["confidence"]) == 3
    with pytest.raises(ValueError, match="after finish"):
        stream.push(np.zeros((1, 64, 64, 3), np.uint8))
