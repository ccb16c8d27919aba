"""Players: every button and every camera bin shows up; scripted players hold keys and move smoothly."""

import numpy as np
import pytest

from worldloom import actions
from worldloom.envs import PLAYER_NAMES, make_env, make_player
from worldloom.envs.players import action_histogram, report

STEPS = 2000


@pytest.fixture(scope="module")
def env():
    return make_env("voxel", height=64, width=64, world_size=(48, 40, 48), max_steps=700)


def play(env, name, steps, seed=0):
    player = make_player(name, seed=seed)
    obs, info = env.reset(seed=seed)
    acts = []
    for _ in range(steps):
        a = player.act(obs, info)
        actions.validate(a)
        acts.append(a)
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            obs, info = env.reset()
            player.reset()
    return actions.to_arrays(acts)


@pytest.mark.parametrize("name", PLAYER_NAMES)
def test_every_button_and_camera_bin_occurs(env, name):
    buttons, camera = play(env, name, STEPS)
    never = [b for b, n in zip(actions.BUTTONS, buttons.sum(0), strict=False) if n == 0]
    assert never == [], f"{name} never pressed {never}"
    bins = actions.quantize_camera(camera)
    for axis in range(2):
        missing = sorted(set(range(11)) - set(bins[:, axis].tolist()))
        assert missing == [], f"{name} camera axis {axis} never used bins {missing}"


@pytest.mark.parametrize("name, held_keys", [
    ("explorer", ("forward",)), ("miner", ("attack",)), ("builder", ("forward",)), ("mixture", ("forward", "attack")),
])
def test_scripted_players_are_human_like(env, name, held_keys):
    buttons, camera = play(env, name, 600, seed=1)
    # Keys are held: the mean run of each player's main key lasts several steps.
    for key in held_keys:
        col = buttons[:, actions.BUTTONS.index(key)].astype(int)
        presses = int((np.diff(col) == 1).sum()) + col[0]
        assert presses > 0 and col.sum() / presses > 3, key
    # The camera moves smoothly: consecutive moves are correlated (white noise would give ~0).
    yaw = camera[:, 1]
    moving = np.abs(yaw) > 0.3
    assert moving.mean() > 0.05
    corr = np.corrcoef(yaw[:-1], yaw[1:])[0, 1]
    assert corr > 0.5


def test_players_are_deterministic_in_their_seed(env):
    a = play(env, "mixture", 200, seed=4)
    b = play(env, "mixture", 200, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_the_contractor_plays_the_task_in_bouts_where_the_mixture_never_seeks_it():
    """The contractor (the study's labeled play) spends bouts on the task at hand as the expert
    does, so its play shows what the expert's footage shows (trees close up, logs breaking)."""
    import gymnasium as gym

    from worldloom.envs import register_envs

    register_envs()
    logs = {}
    for name in ("contractor", "mixture"):
        logs[name] = 0.0
        for seed in range(3):
            task = gym.make("worldloom/CollectLogs-v0", height=64, width=64)
            player = make_player(name, seed=seed)
            obs, info = task.reset(seed=seed)
            for _ in range(400):
                obs, reward, terminated, truncated, info = task.step(player.act(obs, info))
                logs[name] += reward
                if terminated or truncated:
                    break
            task.close()
    assert logs["contractor"] >= 3 and logs["mixture"] == 0, logs


def test_report_prints_a_histogram_per_player(env):
    h = action_histogram("random", env, 100)
    assert set(h["buttons"]) == set(actions.BUTTONS) and h["camera_bins"].shape == (2, 11)
    assert h["camera_bins"].sum() == 200
    text = report(("random",), steps=50)
    assert "random" in text and "hotbar.9=" in text and "yaw bins" in text


def test_unknown_player_lists_known_ones():
    with pytest.raises(ValueError, match="explorer"):
        make_player("speedrunner")


def test_held_buttons_show_in_the_next_frame(env):
    """Attack, use, sneak and the hotbar keys change the very next frame when a scripted player presses them."""
    from worldloom.envs.players import visible_presses

    counts = visible_presses("mixture", env, 300, seed=2)
    for button in ("attack", "sneak", *(b for b in actions.BUTTONS if b.startswith("hotbar") and counts[b][1])):
        seen, presses = counts[button]
        assert presses > 0 and seen / presses > 0.9, (button, seen, presses)
