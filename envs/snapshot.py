"""VoxelWorld's saved states: the bytes of `VoxelWorldEnv.get_state()` and their checks.

    blob = env.get_state()           # world, player, animals, dropped items, rng, time
    env.set_state(blob)              # in this env or another one, in any process
    python -c "from worldloom.envs.snapshot import describe; print(describe(open('s.bin','rb').read()))"

A state is `MAGIC` followed by a zlib stream of a safetensors file: the arrays (blocks, biome,
column tops, the animals' and items' rows) as tensors, everything else as one JSON document in
the safetensors metadata (Python's JSON writes floats with repr, so they come back bit for bit).
No pickle: a state read from anywhere is parsed, never executed. A blob that is not a state, is
truncated or damaged, or was saved by another format version raises `StateError`, a one-line
message naming what is wrong.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import numpy as np

from worldloom.errors import UserError

MAGIC = b"WLVOXST\x00"  # 8 bytes: "WorldLoom VoxelWorld state"
STATE_VERSION = 1
MAX_STATE_BYTES = 512 * 1024**2  # decompressed; the largest world (512 x 256 x 512) is 64 MiB of blocks
ARRAY_DTYPES = {"uint8": np.uint8, "int32": np.int32, "float64": np.float64}


class StateError(UserError, ValueError):
    """A state blob that cannot be restored: not a VoxelWorld state, damaged, or from another version."""


def pack(arrays: dict[str, np.ndarray], doc: dict) -> bytes:
    """Arrays and a JSON document -> state bytes (MAGIC + zlib(safetensors))."""
    from safetensors.numpy import save

    body = save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                metadata={"worldloom_state": json.dumps(doc, allow_nan=False, separators=(",", ":"))})
    return MAGIC + zlib.compress(body, 1)  # level 1: a 64x48x64 world in ~1 ms, ~15x smaller


def unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """State bytes -> (arrays, document); StateError for anything that is not a whole state."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise StateError(f"a VoxelWorld state is bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        raise StateError(f"not a VoxelWorld state: it starts with {blob[:8]!r}, not {MAGIC!r}")
    inflate = zlib.decompressobj()
    try:
        body = inflate.decompress(blob[len(MAGIC):], MAX_STATE_BYTES)
    except zlib.error as err:
        raise StateError(f"damaged VoxelWorld state ({err})") from None
    if inflate.unconsumed_tail:
        raise StateError(f"VoxelWorld state larger than {MAX_STATE_BYTES >> 20} MiB once decompressed: refused")
    if not inflate.eof:
        raise StateError(f"truncated VoxelWorld state ({len(blob)} bytes): the compressed stream ends early")
    try:
        arrays = load(body)
        meta = _safetensors_metadata(body)
        doc = json.loads(meta["worldloom_state"])
    except (SafetensorError, KeyError, ValueError, TypeError) as err:
        raise StateError(f"damaged VoxelWorld state ({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict):
        raise StateError("damaged VoxelWorld state: its document is not a JSON object")
    if doc.get("format") != "worldloom-voxel-state" or doc.get("version") != STATE_VERSION:
        raise StateError(f"VoxelWorld state of format {doc.get('format')!r} version {doc.get('version')!r}; "
                         f"this WorldLoom restores 'worldloom-voxel-state' version {STATE_VERSION}")
    return arrays, doc


def _safetensors_metadata(body: bytes) -> dict:
    """The `__metadata__` of a safetensors file (its 8-byte length, then a JSON header)."""
    if len(body) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(body[:8], "little")
    if size > len(body) - 8:
        raise ValueError("header runs past the end")
    return json.loads(body[8:8 + size]).get("__metadata__") or {}


def array(arrays: dict[str, np.ndarray], name: str, dtype: str, ndim: int, shape: tuple | None = None) -> np.ndarray:
    """A named array of the state, checked for dtype, rank, shape and finite values (a copy the env may write)."""
    if name not in arrays:
        raise StateError(f"damaged VoxelWorld state: no array {name!r}")
    a = arrays[name]
    if a.dtype != ARRAY_DTYPES[dtype] or a.ndim != ndim or (shape is not None and tuple(a.shape) != tuple(shape)):
        want = f"{dtype} {tuple(shape)}" if shape is not None else f"{dtype} of rank {ndim}"
        raise StateError(f"damaged VoxelWorld state: {name} is {a.dtype} {tuple(a.shape)}, expected {want}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise StateError(f"damaged VoxelWorld state: {name} holds NaN or infinite values")
    return np.array(a)


def field(doc: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    """A named JSON value of the state, of the given type (a finite number where it is a float)."""
    if name not in doc:
        raise StateError(f"damaged VoxelWorld state: no field {name!r}")
    value = doc[name]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise StateError(f"damaged VoxelWorld state: {name} is {value!r}, expected {kind}")
    if not isinstance(value, kind):
        raise StateError(f"damaged VoxelWorld state: {name} is {type(value).__name__}, expected {kind}")
    if isinstance(value, float) and not math.isfinite(value):
        raise StateError(f"damaged VoxelWorld state: {name} is {value}")
    return value


# ---- plain Python values (a player's attributes) <-> JSON, with their types kept --------------------------------


def to_json_value(value: Any) -> Any:
    """An attribute value as JSON: arrays and tuples tagged so that `from_json_value` restores their type."""
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"tuple": [to_json_value(v) for v in value]}
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} in a VoxelWorld state")


def from_json_value(value: Any, like: Any, name: str) -> Any:
    """JSON back to the type of `like` (the same attribute of a fresh object); StateError when it does not fit."""
    def bad(why: str) -> StateError:
        return StateError(f"damaged VoxelWorld state: player.{name} {why}")

    if isinstance(like, np.ndarray):
        if not isinstance(value, dict) or "ndarray" not in value or value.get("dtype") != str(like.dtype):
            raise bad(f"is not a {like.dtype} array")
        try:
            out = np.array(value["ndarray"], dtype=like.dtype)
        except (TypeError, ValueError):
            raise bad("holds values that are not numbers") from None
        if out.shape != like.shape or (out.dtype.kind == "f" and not np.isfinite(out).all()):
            raise bad(f"has shape {out.shape} or non-finite values, expected {like.shape}")
        return out
    if isinstance(value, dict) and "tuple" in value and set(value) == {"tuple"}:
        if like is not None and not isinstance(like, tuple):
            raise bad(f"is a tuple where a {type(like).__name__} belongs")
        return tuple(_scalar(v, bad) for v in value["tuple"])
    if like is None or isinstance(like, tuple):  # optional tuples (what is mined, the target) may be None
        if value is not None:
            raise bad(f"is {type(value).__name__}, expected a tuple or null")
        return None
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise bad(f"is {value!r}, expected true or false")
        return value
    if isinstance(like, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"is {value!r}, expected a finite number")
        return float(value) if isinstance(like, float) else _int_only(value, bad)
    if isinstance(like, str):
        if not isinstance(value, str):
            raise bad(f"is {type(value).__name__}, expected text")
        return value
    if isinstance(like, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("is not a list of names")
        return list(value)
    if isinstance(like, dict):
        if not isinstance(value, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            raise bad("is not a map of names to counts")
        return {str(k): int(v) for k, v in value.items()}
    raise bad(f"has a type ({type(like).__name__}) a state cannot restore")


def _scalar(value: Any, bad) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    raise bad(f"holds {value!r}")


def _int_only(value: float, bad) -> int:
    if isinstance(value, int) or float(value).is_integer():
        return int(value)
    raise bad(f"is {value!r}, expected an integer")


def describe(blob: bytes) -> dict:
    """A small summary of a state (seed, step, player position, sizes): for people looking at a file."""
    arrays, doc = unpack(blob)
    position = doc.get("player", {}).get("position")
    return {"seed": doc.get("seed"), "step": doc.get("step"), "world_size": list(arrays["blocks"].shape),
            "position": position.get("ndarray") if isinstance(position, dict) else None,
            "num_animals": int(arrays["animals"].shape[0]) if "animals" in arrays else None, "bytes": len(blob)}


# ---- the env's whole state ---------------------------------------------------------------------------------------

# VoxelConfig fields that decide how a state evolves: a state restores only into an env that
# agrees on them. The others (frame size, field of view, fog) only change how it is drawn.
DYNAMICS_FIELDS = ("world_size", "day_night", "day_length", "task")


def save(env) -> bytes:
    """A VoxelWorldEnv's state after its last reset or step, as bytes (see the module docstring)."""
    if env.world is None:
        raise RuntimeError("call reset() before get_state()")
    world, player = env.world, env.player
    arrays = {**world.state_arrays(), "animals": env.animals.state, "items": env.items.state}
    doc = {
        "format": "worldloom-voxel-state", "version": STATE_VERSION,
        "config": {name: to_json_value(getattr(env.cfg, name)) for name in DYNAMICS_FIELDS},
        "seed": env.seed_value, "step": env.step_count, "max_top": int(world.max_top),
        "world_seed": int(world.seed), "animal_seed": int(env.animals.seed),
        "rng": env.np_random.bit_generator.state, "player": player.state_dict(),
    }
    return pack(arrays, doc)


def restore(env, blob: bytes) -> None:
    """Put the state `save` wrote into `env` (a VoxelWorldEnv); StateError, and `env` untouched, if it cannot."""
    from worldloom.envs.blocks import ANIMALS, NUM_BLOCKS
    from worldloom.envs.objects import Animals, Items, Player
    from worldloom.envs.world import World, coarse_tops
    from worldloom.envs.worldgen import BIOMES

    arrays, doc = unpack(blob)
    ours = {name: to_json_value(getattr(env.cfg, name)) for name in DYNAMICS_FIELDS}
    theirs = field(doc, "config", dict)
    for name in DYNAMICS_FIELDS:
        if theirs.get(name) != ours[name]:
            raise StateError(f"VoxelWorld state saved with {name}={theirs.get(name)!r}, this env has {ours[name]!r}; "
                             f"make the env with the same {name}")
    sx, sy, sz = env.cfg.world_size
    blocks = array(arrays, "blocks", "uint8", 3, (sx, sy, sz))
    if blocks.size and int(blocks.max()) >= NUM_BLOCKS:
        raise StateError(f"damaged VoxelWorld state: block id {int(blocks.max())} (there are {NUM_BLOCKS} blocks)")
    biome = array(arrays, "biome", "uint8", 2, (sx, sz))
    if biome.size and int(biome.max()) >= len(BIOMES):
        raise StateError(f"damaged VoxelWorld state: biome id {int(biome.max())} (there are {len(BIOMES)} biomes)")
    tops = array(arrays, "tops", "int32", 2, (sx, sz))
    coarse = array(arrays, "coarse", "int32", 2, coarse_tops(tops).shape)
    if tops.min() < 0 or tops.max() > sy or coarse.min() < 0 or coarse.max() > sy:
        raise StateError(f"damaged VoxelWorld state: column tops outside 0..{sy}")
    max_top = field(doc, "max_top", int)
    animals = array(arrays, "animals", "float64", 2)
    if animals.shape[1:] != (8,) or not np.isin(animals[:, 4], np.arange(len(ANIMALS))).all():
        raise StateError(f"damaged VoxelWorld state: animals are {animals.shape}, or of an unknown kind")
    items = array(arrays, "items", "float64", 2)
    if items.shape[1:] != (10,):
        raise StateError(f"damaged VoxelWorld state: items are {items.shape}, expected (N, 10)")
    player = Player.from_state_dict(field(doc, "player", dict))
    seed, step = field(doc, "seed", int), field(doc, "step", int)
    rng = field(doc, "rng", dict)
    generator = np.random.Generator(np.random.PCG64())
    try:
        generator.bit_generator.state = rng
    except (TypeError, ValueError, KeyError) as err:
        raise StateError(f"damaged VoxelWorld state: rng ({err})") from None
    # Everything checked: only now is the env changed.
    env.world = World.from_state(blocks, biome, tops, coarse, field(doc, "world_seed", int), max(max_top, 0))
    env.player, env.items = player, Items()
    env.items.state = items
    env.animals = Animals.from_state(field(doc, "animal_seed", int), animals)
    env.seed_value, env.step_count = seed, step
    env._np_random = generator
