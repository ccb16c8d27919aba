"""The action space: dict <-> arrays <-> model form, VPT's camera bins, and bad input."""

import numpy as np
import pytest

from worldloom import actions
from worldloom.actions import BUTTONS


def test_buttons_are_vpts_list_in_order():
    assert actions.BUTTONS is BUTTONS
    assert actions.BUTTONS[:11] == ("attack", "back", "forward", "jump", "left", "right", "sneak", "sprint",
                                    "use", "drop", "inventory")
    assert actions.BUTTONS[11:] == tuple(f"hotbar.{i}" for i in range(1, 10))


def test_bin_centres_are_vpts():
    centres = actions.dequantize_camera(np.arange(11))
    expected = [-10, -5.809, -3.215, -1.609, -0.615, 0, 0.615, 1.609, 3.215, 5.809, 10]
    np.testing.assert_allclose(centres, expected, atol=1e-3)
    # Each centre quantizes to its own bin; small moves fall in the middle bin.
    np.testing.assert_array_equal(actions.quantize_camera(centres), np.arange(11))
    assert actions.quantize_camera(np.array([0.26, -0.26, 0.3])).tolist() == [5, 5, 6]
    assert actions.quantize_camera(np.array([45.0, -180.0])).tolist() == [10, 0]


def test_quantize_matches_vpt_formula():
    x = np.linspace(-12, 12, 241)
    m, mu = 10.0, 10.0
    xc = np.clip(x, -m, m)
    v = m * np.sign(xc) * np.log(1 + mu * np.abs(xc) / m) / np.log(1 + mu)
    np.testing.assert_array_equal(actions.quantize_camera(x), np.round((v + m) / 2).astype(np.int64))


def test_round_trip_dict_arrays_model():
    rng = np.random.default_rng(0)
    acts = []
    for _ in range(50):
        a = actions.noop()
        for name in BUTTONS:
            a[name] = int(rng.integers(0, 2))
        a["camera"] = rng.uniform(-10, 10, 2).astype(np.float32)
        acts.append(a)
    buttons, camera = actions.to_arrays(acts)
    assert buttons.shape == (50, 20) and buttons.dtype == bool
    assert camera.shape == (50, 2) and camera.dtype == np.float32
    for t, a in enumerate(acts):
        back = actions.from_arrays(buttons[t], camera[t])
        assert all(back[k] == a[k] for k in BUTTONS)
        np.testing.assert_array_equal(back["camera"], a["camera"])
    bins = actions.quantize_camera(camera)
    np.testing.assert_array_equal(actions.quantize_camera(actions.dequantize_camera(bins)), bins)


def test_noop_is_valid_and_all_zero():
    a = actions.noop()
    actions.validate(a)
    buttons, camera = actions.to_arrays([a])
    assert not buttons.any() and not camera.any()


@pytest.mark.parametrize("change, words", [
    (lambda a: a.pop("jump"), ["jump", "missing"]),
    (lambda a: a.pop("camera"), ["camera", "missing"]),
    (lambda a: a.update(jump=2), ["jump", "2"]),
    (lambda a: a.update(attack=-1), ["attack", "-1"]),
    (lambda a: a.update(forward=np.array([1, 0])), ["forward", "shape"]),
    (lambda a: a.update(camera=np.array([0.0, np.nan])), ["camera", "nan"]),
    (lambda a: a.update(camera=np.array([np.inf, 0.0])), ["camera", "inf"]),
    (lambda a: a.update(camera=np.zeros(3)), ["camera", "(3,)"]),
    (lambda a: a.update(camera=np.array([0.0, 200.0])), ["camera", "200"]),
    (lambda a: a.update(flying=1), ["flying"]),
])
def test_validate_names_key_and_value(change, words):
    a = actions.noop()
    change(a)
    with pytest.raises(ValueError) as err:
        actions.validate(a)
    for word in words:
        assert word in str(err.value)


def test_minerl_extra_keys_are_accepted():
    a = actions.noop()
    a.update(ESC=0, swapHands=0, pickItem=0)
    actions.validate(a)


def test_dequantize_rejects_out_of_range_bins():
    with pytest.raises(ValueError, match="0..10"):
        actions.dequantize_camera(np.array([11, 0]))
