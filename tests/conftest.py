"""Shared test fixtures: small synthetic pixel-art frames and a tiny written dataset."""

from __future__ import annotations

import os

# Before torch loads anywhere in the test process: see worldloom/__init__.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pixel_frames(num: int, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """`(num, H, W, 3)` uint8 frames that look like pixel art: 8x8 tiles from a small palette,
    scrolling one pixel per frame, with the frame index drawn in the top row (so every frame
    differs and an off-by-one read shows)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    tiles = rng.integers(0, len(palette), (height // 8 + 2, width // 8 + 2))
    world = palette[tiles].repeat(8, 0).repeat(8, 1)  # (H+16, W+16, 3)
    frames = np.empty((num, height, width, 3), np.uint8)
    for t in range(num):
        dx = t % 8
        frames[t] = world[:height, dx : dx + width]
        frames[t, 0, :16] = np.unpackbits(np.array([t >> 8, t & 255], np.uint8))[:, None] * 255
    return frames


def random_actions(num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(buttons (T, 20) bool, camera (T, 2) float32 degrees)."""
    rng = np.random.default_rng(seed)
    return rng.random((num, 20)) < 0.2, rng.normal(0, 3, (num, 2)).astype(np.float32)


@pytest.fixture
def make_frames():
    return pixel_frames


@pytest.fixture
def small_dataset(tmp_path):
    """A dataset of 4 episodes (lengths 40, 33, 20, 50; the last unlabeled), two shards."""
    from worldloom.datasets import DatasetWriter

    root = tmp_path / "ds"
    lengths = (40, 33, 20, 50)
    with DatasetWriter(root, 32, 32, fps=20, rows_per_group=16, shard_max_frames=60, config={"test": True}) as w:
        for i, n in enumerate(lengths):
            if i == 3:
                w.add_episode(f"ep-{i}", pixel_frames(n, 32, 32, seed=i), label_source="none", split="val")
            else:
                buttons, camera = random_actions(n, seed=i)
                w.add_episode(f"ep-{i}", pixel_frames(n, 32, 32, seed=i), buttons=buttons, camera=camera,
                              rewards=np.arange(n, dtype=np.float32), env="synthetic", seed=i, player="random")
    return root
