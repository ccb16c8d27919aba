"""VoxelWorld's game rules as data: the block table, the animal table and the 16x16 textures.

    python -c "from worldloom.envs import blocks; print(blocks.BLOCK_NAMES)"

Every rule the world applies to a block (is it solid, how many steps of `attack` break it, what
it drops, can it be placed) is a column of `BLOCKS`, not an `if` in the engine. Textures are
drawn procedurally at import from a fixed seed, so the package ships no image assets and every
process draws the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXTURE_SIZE = 16
TEXTURE_SEED = 20240611  # fixed: textures are part of the world's look, the same in every process


@dataclass(frozen=True)
class Block:
    name: str
    solid: bool  # blocks movement and rays (water and air do not block movement)
    hardness: int  # steps of held `attack` to break it; 0 = cannot be broken
    drop: str  # the item it drops into the inventory ("" = nothing)
    top: tuple[int, int, int]  # base colour of the top face
    side: tuple[int, int, int]  # base colour of the side faces
    pattern: str  # how the texture is drawn: noise, speckle, ore, bark, rings, leaves, brick, grass
    accent: tuple[int, int, int] = (0, 0, 0)  # second colour (ore spots, grass side, bark lines)


# Index = block id in the voxel array. Hardness in steps at 20 steps/s (Minecraft's hand mining
# times, shortened so a player breaks a block in well under 2 s of footage).
BLOCKS: tuple[Block, ...] = (
    Block("air", False, 0, "", (0, 0, 0), (0, 0, 0), "noise"),
    Block("grass", True, 8, "dirt", (96, 160, 56), (134, 96, 67), "grass", (96, 160, 56)),
    Block("dirt", True, 8, "dirt", (134, 96, 67), (134, 96, 67), "noise"),
    Block("stone", True, 24, "cobblestone", (125, 125, 125), (125, 125, 125), "speckle"),
    Block("sand", True, 8, "sand", (219, 207, 163), (219, 207, 163), "noise"),
    Block("water", False, 0, "", (48, 88, 200), (48, 88, 200), "noise"),
    Block("log", True, 16, "log", (160, 130, 80), (102, 81, 50), "bark", (70, 54, 32)),
    Block("leaves", True, 4, "sapling", (58, 120, 40), (58, 120, 40), "leaves", (30, 80, 22)),
    Block("snow", True, 6, "snow", (240, 245, 250), (134, 96, 67), "grass", (240, 245, 250)),
    Block("coal_ore", True, 30, "coal", (125, 125, 125), (125, 125, 125), "ore", (30, 30, 30)),
    Block("iron_ore", True, 36, "iron_ore", (125, 125, 125), (125, 125, 125), "ore", (216, 175, 147)),
    Block("gold_ore", True, 40, "gold_ore", (125, 125, 125), (125, 125, 125), "ore", (250, 220, 60)),
    Block("bedrock", True, 0, "", (60, 60, 60), (60, 60, 60), "speckle"),
    Block("planks", True, 12, "planks", (180, 144, 90), (180, 144, 90), "rings", (140, 110, 66)),
    Block("cobblestone", True, 24, "cobblestone", (110, 110, 110), (110, 110, 110), "brick", (80, 80, 80)),
    Block("cactus", True, 6, "cactus", (70, 140, 60), (60, 125, 50), "bark", (30, 90, 30)),
    Block("ice", True, 10, "", (160, 200, 250), (160, 200, 250), "noise"),
    Block("gravel", True, 10, "gravel", (136, 126, 126), (136, 126, 126), "speckle"),
)
BLOCK_NAMES: tuple[str, ...] = tuple(b.name for b in BLOCKS)
BLOCK_ID: dict[str, int] = {name: i for i, name in enumerate(BLOCK_NAMES)}
NUM_BLOCKS = len(BLOCKS)
AIR, WATER, BEDROCK = BLOCK_ID["air"], BLOCK_ID["water"], BLOCK_ID["bedrock"]

# Items that can be placed with `use`: item name -> block id placed. Other items (coal, sapling)
# are only collected.
PLACEABLE: dict[str, int] = {
    "dirt": BLOCK_ID["dirt"], "sand": BLOCK_ID["sand"], "log": BLOCK_ID["log"],
    "planks": BLOCK_ID["planks"], "cobblestone": BLOCK_ID["cobblestone"], "snow": BLOCK_ID["snow"],
    "gravel": BLOCK_ID["gravel"], "cactus": BLOCK_ID["cactus"], "iron_ore": BLOCK_ID["iron_ore"],
    "gold_ore": BLOCK_ID["gold_ore"],
}
ITEM_NAMES: tuple[str, ...] = (
    "dirt", "cobblestone", "planks", "log", "sand", "snow", "gravel", "cactus", "sapling", "coal",
    "iron_ore", "gold_ore", "meat", "wool", "feather",
)
# Colour of each item's hotbar icon: the side colour of the block it places, else its own.
_ITEM_COLOURS = {"sapling": (58, 120, 40), "coal": (30, 30, 30), "meat": (200, 90, 90),
                 "wool": (235, 235, 235), "feather": (250, 250, 240)}
ITEM_COLOURS = np.array([BLOCKS[PLACEABLE[n]].side if n in PLACEABLE else _ITEM_COLOURS[n]
                         for n in ITEM_NAMES], dtype=np.uint8)  # (num_items, 3)
ITEM_ID: dict[str, int] = {name: i for i, name in enumerate(ITEM_NAMES)}

# What a new player holds: hotbar slots 1-9 (VPT's hotbar.1..9). Gives `use` something to place
# from the first step, so the Builder's footage shows placing at once.
START_HOTBAR: tuple[str, ...] = ("dirt", "cobblestone", "planks", "log", "sand", "", "", "", "")
START_COUNT = 16


@dataclass(frozen=True)
class Animal:
    name: str
    colour: tuple[int, int, int]
    size: tuple[float, float]  # (width, height) in blocks
    health: int  # hits to kill
    drop: str
    speed: float  # blocks per step when walking


ANIMALS: tuple[Animal, ...] = (
    Animal("pig", (240, 160, 160), (0.8, 0.8), 3, "meat", 0.06),
    Animal("sheep", (230, 230, 230), (0.8, 1.1), 3, "wool", 0.05),
    Animal("chicken", (250, 250, 245), (0.45, 0.7), 2, "feather", 0.07),
)
ANIMAL_COLOURS = np.array([a.colour for a in ANIMALS], dtype=np.float32)  # (num_animals, 3)
ANIMAL_SIZES = np.array([a.size for a in ANIMALS], dtype=np.float32)  # (num_animals, 2)


def _draw(block: Block, face: int, rng: np.random.Generator) -> np.ndarray:
    """One 16x16 RGB face (face 0 = top, 1 = side, 2 = bottom) of `block`, as float32."""
    n = TEXTURE_SIZE
    base = np.array(block.top if face == 0 else block.side, dtype=np.float32)
    accent = np.array(block.accent, dtype=np.float32)
    noise = rng.uniform(-1, 1, (n, n, 1)).astype(np.float32)
    img = base + noise * 14
    yy, xx = np.mgrid[0:n, 0:n]
    if block.pattern == "grass" and face == 1:
        # Dirt side with a ragged strip of the top colour, as a Minecraft grass block.
        depth = 3 + rng.integers(0, 3, n)
        img = np.where((yy < depth[None, :].repeat(n, 0))[..., None], accent + noise * 10, img)
    elif block.pattern == "grass" and face == 2:
        img = np.array(block.side, dtype=np.float32) + noise * 14
    elif block.pattern == "speckle":
        img = base + noise * 26
    elif block.pattern == "ore":
        spots = rng.uniform(0, 1, (n, n)) < 0.16
        img = np.where(spots[..., None], accent + noise * 12, base + noise * 22)
    elif block.pattern == "bark" and face == 1:
        lines = (xx % 4 == 0) | (rng.uniform(0, 1, (n, n)) < 0.08)
        img = np.where(lines[..., None], accent + noise * 6, img)
    elif block.pattern == "bark":
        ring = ((np.hypot(yy - 7.5, xx - 7.5).astype(int) % 3) == 0)
        img = np.where(ring[..., None], accent + noise * 6, img)
    elif block.pattern == "rings":
        img = np.where((yy % 4 == 3)[..., None], accent + noise * 6, img)
    elif block.pattern == "leaves":
        holes = rng.uniform(0, 1, (n, n)) < 0.3
        img = np.where(holes[..., None], accent + noise * 8, base + noise * 20)
    elif block.pattern == "brick":
        mortar = (yy % 5 == 4) | ((xx + (yy // 5) * 4) % 8 == 0)
        img = np.where(mortar[..., None], accent + noise * 6, img)
    return img


def make_textures(seed: int = TEXTURE_SEED) -> np.ndarray:
    """All block textures: (num_blocks, 3 faces: top/side/bottom, 16, 16, 3) float32 in 0..255."""
    rng = np.random.default_rng(seed)
    tex = np.zeros((NUM_BLOCKS, 3, TEXTURE_SIZE, TEXTURE_SIZE, 3), dtype=np.float32)
    for i, block in enumerate(BLOCKS):
        for face in range(3):
            tex[i, face] = _draw(block, face, rng)
    return np.clip(tex, 0, 255)


def make_crack_mask(seed: int = TEXTURE_SEED + 1) -> np.ndarray:
    """A 16x16 crack pattern: the stage (1..9) at which each texel darkens while a block is mined."""
    rng = np.random.default_rng(seed)
    mask = np.full((TEXTURE_SIZE, TEXTURE_SIZE), 99, dtype=np.int32)
    # Random walks from the centre; later texels of a walk appear at later stages.
    for _ in range(6):
        y, x = 8, 8
        for k in range(18):
            mask[y, x] = min(mask[y, x], 1 + k // 2)
            y = int(np.clip(y + rng.integers(-1, 2), 0, 15))
            x = int(np.clip(x + rng.integers(-1, 2), 0, 15))
    return mask


TEXTURES = make_textures()
CRACK_MASK = make_crack_mask()
HARDNESS = np.array([b.hardness for b in BLOCKS], dtype=np.int32)
SOLID = np.array([b.solid for b in BLOCKS], dtype=np.bool_)
