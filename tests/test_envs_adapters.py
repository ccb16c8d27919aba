"""Crafter and MineRL adapters behind our action contract, and the `worldloom envs` CLI."""

import importlib.util

import gymnasium
import numpy as np
import pytest

from worldloom import actions
from worldloom.envs import make_env, make_player
from worldloom.envs.crafter_env import CRAFTER_ACTIONS, select_slot, to_crafter
from worldloom.envs.minerl_env import MineRLNotInstalled, from_minerl, pov_to_obs, to_minerl
from worldloom.errors import UserError
from worldloom.pipeline.cli import main


def press(**keys):
    a = actions.noop()
    for k, v in keys.items():
        a[k.replace("_", ".") if k.startswith("hotbar") else k] = v
    return a


@pytest.mark.parametrize("action, slot, expected", [
    (press(), 0, "noop"),
    (press(attack=1, forward=1), 0, "do"),
    (press(use=1), 0, "place_stone"),
    (press(use=1), 1, "place_table"),
    (press(use=1), 4, "make_wood_pickaxe"),
    (press(use=1), 8, "make_stone_sword"),
    (press(use=1, sneak=1), 8, "make_iron_sword"),
    (press(forward=1), 0, "move_up"),
    (press(back=1), 0, "move_down"),
    (press(left=1), 0, "move_left"),
    (press(right=1), 0, "move_right"),
    (press(sneak=1), 0, "sleep"),
    (press(jump=1, sprint=1), 0, "noop"),
])
def test_crafter_mapping(action, slot, expected):
    assert CRAFTER_ACTIONS[to_crafter(action, slot)] == expected


def test_crafter_mapping_reaches_all_17_actions():
    reached = set()
    for slot in range(9):
        for keys in ({}, {"attack": 1}, {"use": 1}, {"use": 1, "sneak": 1}, {"forward": 1}, {"back": 1},
                     {"left": 1}, {"right": 1}, {"sneak": 1}):
            reached.add(to_crafter(press(**keys), slot))
    assert reached == set(range(17))
    assert select_slot(press(hotbar_3=1), 0) == 2 and select_slot(press(), 5) == 5


def test_crafter_env_speaks_gymnasium():
    env = gymnasium.make("worldloom/Crafter-v0", height=64, width=64, max_steps=20)
    obs, info = env.reset(seed=1)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and "inventory" in info
    obs2, _ = env.reset(seed=1)[0], None
    np.testing.assert_array_equal(obs, obs2)  # the world at reset is a function of the seed
    player = make_player("random", seed=0)
    truncated = False
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(player.act(obs, info))
        if terminated:
            break
    assert truncated or terminated
    with pytest.raises(ValueError, match="camera"):
        env.reset(seed=0)
        bad = actions.noop()
        bad["camera"] = np.array([np.inf, 0.0])
        env.step(bad)


def test_minerl_mapping_round_trip():
    a = press(forward=1, jump=1, hotbar_4=1)
    a["camera"] = np.array([1.5, -3.0], dtype=np.float32)
    m = to_minerl(a)
    assert m["ESC"] == 0 and m["swapHands"] == 0 and m["pickItem"] == 0 and m["hotbar.4"] == 1
    assert len(m) == 24  # 23 keys + camera, as MineRL 1.0
    back = from_minerl({**m, "ESC": 1})
    assert all(back[k] == a[k] for k in actions.BUTTONS)
    np.testing.assert_array_equal(back["camera"], a["camera"])
    pov = np.zeros((360, 640, 3), dtype=np.uint8)
    pov[:, 320:] = 200
    obs = pov_to_obs(pov, 128, 128)
    assert obs.shape == (128, 128, 3) and obs[:, :60].max() == 0 and obs[:, 70:].min() == 200


@pytest.mark.skipif(importlib.util.find_spec("minerl") is not None, reason="minerl is installed here")
def test_minerl_missing_says_how_to_install():
    with pytest.raises(MineRLNotInstalled, match=r"pip install worldloom\[minerl\].*Java 8"):
        make_env("minerl")
    assert issubclass(MineRLNotInstalled, UserError) and issubclass(MineRLNotInstalled, ImportError)


def test_cli_show_and_play(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["envs", "show", "--env", "voxel", "--seeds", "0-1", "--warmup", "3", "--resolution", "64",
                 "--out", str(grid)]) == 0
    import cv2

    image = cv2.imread(str(grid))
    assert image.shape == (64, 128, 3)
    video = tmp_path / "play.mp4"
    assert main(["envs", "play", "--env", "voxel", "--player", "mixture", "--steps", "10", "--resolution", "64",
                 "--out", str(video)]) == 0
    import av

    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 11
    assert main(["envs", "show", "--env", "nope", "--seeds", "0", "--out", str(grid)]) == 2
    assert "known: voxel, crafter, minerl" in capsys.readouterr().err
    assert main(["envs", "show", "--seeds", "x-y", "--out", str(grid)]) == 2


def test_cli_show_checks_out_before_rendering(tmp_path, capsys, monkeypatch):
    import worldloom.envs.cli as envs_cli

    monkeypatch.setattr(envs_cli, "contact_sheet", lambda *a, **k: pytest.fail("rendered before --out was checked"))
    for out, words in ((tmp_path, f"--out {tmp_path} is a folder; give an image file name, e.g. {tmp_path / 'sheet.png'}"),
                       (tmp_path / "grid.xyz", "cannot write an image with the extension '.xyz'; use .png or another"),
                       (tmp_path / "grid", "the extension '(none)'")):
        assert main(["envs", "show", "--seeds", "0", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and words in err, err
        assert ".png" in err and (out == tmp_path or ".jpg" in err and ".webp" in err), err
    assert main(["envs", "show", "--seeds", "0", "--resolution", "32", "--out", str(tmp_path / "g.png")]) == 2
    assert capsys.readouterr().err.strip() == (  # the flag typed, not the env's field (height)
        "worldloom envs: error: --resolution must be a whole number in 64..360 (pixels, for env 'voxel'), got 32")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_bad_seeds_warmup_and_out_under_a_file_are_one_line(tmp_path, capsys):
    """`envs show --seeds -3` and `envs play --seed -3` were gymnasium/numpy tracebacks; `--warmup -5` drew
    the sheet as if 0, exit 0; `--out notes.txt/grid.png` (envs show and play, dataset export) rendered, then
    ended in a FileExistsError traceback. Now one line each, before any rendering, nothing written."""
    from conftest import pixel_frames

    from worldloom.datasets import DatasetWriter

    note = tmp_path / "notes.txt"
    note.write_text("mine")
    with DatasetWriter(tmp_path / "ds", 64, 64) as w:
        w.add_episode("ep-0", pixel_frames(4))
    cases = [(["envs", "show", "--seeds", "-3", "--out", str(tmp_path / "g.png")], "--seeds are whole numbers in 0..2147483647, got -3"),
             # a numba TypingError's traceback, or a picture of the world of a smaller seed
             (["envs", "show", "--seeds", "99999999999999999999", "--out", str(tmp_path / "g.png")],
              "--seeds are whole numbers in 0..2147483647, got 99999999999999999999"),
             (["envs", "play", "--seed", str(2**31), "--steps", "2", "--out", str(tmp_path / "p.mp4")],
              "--seed must be a whole number in 0..2147483647, got 2147483648"),
             (["envs", "show", "--seeds", "0,-1", "--out", str(tmp_path / "g.png")], "got -1 from '0,-1'"),
             (["envs", "play", "--seed", "-3", "--steps", "2", "--out", str(tmp_path / "p.mp4")], "--seed must be a whole"),
             (["envs", "show", "--seeds", "0", "--warmup", "-5", "--out", str(tmp_path / "g.png")], "--warmup must be"),
             *[(argv, f"{note} is a file, so no folder can be made there") for argv in (
                 ["envs", "show", "--seeds", "0", "--out", str(note / "g.png")],
                 ["envs", "play", "--steps", "2", "--out", str(note / "p.mp4")],
                 ["dataset", "export", str(tmp_path / "ds"), "--out", str(note / "sheet.png")],
                 ["dataset", "export", str(tmp_path / "ds"), "--episode", "ep-0", "--out", str(note / "ep.mp4")])]]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "notes.txt"] and note.read_text() == "mine"


def test_cli_show_says_a_warmup_past_the_episodes_end(tmp_path, capsys):
    """A --warmup longer than the episode (VoxelWorld ends at 1,000 steps) drew its last frame without a word."""
    assert main(["envs", "show", "--seeds", "0", "--warmup", "1005", "--resolution", "64",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert "envs show: 1 episode ended before --warmup 1005 (seed 0 after 1000 steps): their tiles show the last frame" \
        in capsys.readouterr().err


@pytest.mark.parametrize("name", ["random", "explorer", "miner", "builder", "mixture"])
def test_every_player_plays_crafter(name):
    """Players only read info keys every env has, or fall back: Crafter has no yaw, pitch or z."""
    env = make_env("crafter", height=64, width=64)
    player = make_player(name, seed=0)
    obs, info = env.reset(seed=0)
    for _ in range(60):
        obs, _, terminated, truncated, info = env.step(player.act(obs, info))
        if terminated or truncated:
            obs, info = env.reset()
    assert obs.shape == (64, 64, 3)
