"""VoxelWorld's saved states: restoring continues with the same frames, here and in another
process; the rng and world edits come back; a damaged or foreign blob is one line, env untouched."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest

from worldloom import actions
from worldloom.envs import make_env, make_player
from worldloom.envs.snapshot import MAGIC, StateError, describe, pack, unpack

SMALL = dict(height=64, width=64, world_size=(32, 32, 32))


def play(env, player, obs, info, steps: int):
    """(frames, actions) of `steps` steps of `player`."""
    frames, taken = [], []
    for _ in range(steps):
        action = player.act(obs, info)
        obs, _, _, _, info = env.step(action)
        frames.append(obs)
        taken.append(action)
    return np.stack(frames), taken, obs, info


@pytest.fixture(scope="module")
def saved():
    """An env played 80 steps by the miner (so the world has edits), its state, and 40 more steps."""
    env = make_env("voxel", **SMALL)
    obs, info = env.reset(seed=5)
    player = make_player("mixture", seed=5)
    _, _, obs, info = play(env, player, obs, info, 80)
    blob = env.get_state()
    frames, taken, _, _ = play(env, player, obs, info, 40)
    return {"blob": blob, "frames": frames, "actions": taken, "obs_at_save": obs}


def test_restoring_continues_with_the_same_frames_and_branches(saved):
    env = make_env("voxel", **SMALL)  # never reset: a state is all it needs
    obs, info = env.set_state(saved["blob"])
    assert np.array_equal(obs, saved["obs_at_save"]) and info["step"] == 80
    for t, action in enumerate(saved["actions"]):
        obs, *_ = env.step(action)
        assert np.array_equal(obs, saved["frames"][t]), f"step {t} differs after restoring"
    # branch: restore, play something else, restore again: the first branch comes back exactly
    env.set_state(saved["blob"])
    turn = actions.noop() | {"camera": np.array([0.0, 9.0], np.float32), "forward": 1}
    other = [env.step(turn)[0] for _ in range(5)]
    env.set_state(saved["blob"])
    again = [env.step(a)[0] for a in saved["actions"][:5]]
    assert all(np.array_equal(a, b) for a, b in zip(again, saved["frames"][:5], strict=True))
    assert not np.array_equal(other[-1], again[-1])


RESTORE_SCRIPT = """
import hashlib, sys, numpy as np
from worldloom.envs import make_env
data = np.load(sys.argv[1], allow_pickle=False)
env = make_env("voxel", height=64, width=64, world_size=(32, 32, 32))
env.set_state(data["blob"].tobytes())
h = hashlib.sha256()
for b, c in zip(data["buttons"], data["camera"]):
    obs, *_ = env.step(dict(zip(data["names"], (int(v) for v in b)), camera=c))
    h.update(obs.tobytes())
print(h.hexdigest())
"""


def test_a_state_restores_the_same_frames_in_another_process(saved, tmp_path):
    import hashlib

    buttons, camera = actions.to_arrays(saved["actions"])
    path = tmp_path / "state.npz"
    np.savez(path, blob=np.frombuffer(saved["blob"], np.uint8), buttons=buttons, camera=camera,
             names=np.array(actions.BUTTONS))
    run = subprocess.run([sys.executable, "-c", RESTORE_SCRIPT, str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == hashlib.sha256(saved["frames"].tobytes()).hexdigest()


def test_the_state_holds_world_edits_rng_and_time():
    env = make_env("voxel", **SMALL)
    env.reset(seed=2)
    x, y, z = (int(v) for v in env.player.position)
    env.world.set(x + 1, y + 3, z, 3)  # a stone block in the air: an edit no world generator makes
    for _ in range(7):
        env.step(actions.noop())
    blob = env.get_state()
    other = make_env("voxel", **SMALL)
    other.reset(seed=99)
    _, info = other.set_state(blob)
    assert other.world.get(x + 1, y + 3, z) == 3 and info["step"] == 7 and other.seed_value == 2
    # the env's rng comes back: a reset without a seed draws the same world in both
    a, _ = env.reset()
    b, _ = other.reset()
    assert env.seed_value == other.seed_value and np.array_equal(a, b)
    assert describe(blob)["world_size"] == [32, 32, 32] and describe(blob)["step"] == 7


def _damaged(blob: bytes) -> dict[str, bytes]:
    arrays, doc = unpack(blob)
    body = zlib.decompress(blob[len(MAGIC):])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    return {
        "empty": b"",
        "foreign": b"\x89PNG\r\n\x1a\n" + blob[8:],
        "truncated": blob[: len(blob) // 2],
        "flipped byte": bytes(flipped),
        "not safetensors": MAGIC + zlib.compress(b"{not a header" + body[:40]),
        "future version": pack(arrays, doc | {"version": 99}),
        "block id": pack(arrays | {"blocks": np.full_like(arrays["blocks"], 250)}, doc),
        "shape": pack(arrays | {"blocks": arrays["blocks"][:16]}, doc),
        "nan": pack(arrays | {"animals": arrays["animals"] * np.nan}, doc),
        "player field": pack(arrays, doc | {"player": {**doc["player"], "yaw": "north"}}),
        "player missing": pack(arrays, doc | {"player": {k: v for k, v in doc["player"].items() if k != "air"}}),
        "not bytes": "a string",
    }


def test_a_damaged_or_foreign_state_is_one_line_and_leaves_the_env_untouched(saved):
    env = make_env("voxel", **SMALL)
    obs, _ = env.reset(seed=1)
    before = env.get_state()
    for name, blob in _damaged(saved["blob"]).items():
        with pytest.raises(StateError) as err:
            env.set_state(blob)
        message = str(err.value)
        assert "\n" not in message and "state" in message, (name, message)
        assert env.get_state() == before, f"{name}: the env changed"
    # the same state into an env of another world size: named, one line
    big = make_env("voxel", height=64, width=64, world_size=(48, 32, 48))
    with pytest.raises(StateError, match="world_size"):
        big.set_state(saved["blob"])
    # a state does not depend on the frame size: a larger view of the same world restores
    wide = make_env("voxel", height=96, width=128, world_size=(32, 32, 32))
    wide_obs, info = wide.set_state(saved["blob"])
    assert wide_obs.shape == (96, 128, 3) and info["step"] == 80
