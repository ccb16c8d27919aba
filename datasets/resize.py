"""Resize RGB frames to a dataset's size: OpenCV's INTER_AREA weights down, in one numba pass.

    from worldloom.datasets.resize import resize, area_taps
    small = resize(frame, (128, 128))   # (360, 640, 3) uint8 -> (128, 128, 3): INTER_AREA
    big = resize(frame, (720, 1280))    # growing: cv2 INTER_LINEAR
    starts, weights = area_taps(640, 128)  # INTER_AREA's taps along one axis: (128,), (128, 5)

Shrinking averages each output pixel's footprint in the source, with the weights OpenCV's
INTER_AREA uses (`computeResizeAreaTab` in opencv `modules/imgproc/src/resize.cpp`: a source
pixel counts by the fraction of it the footprint covers). The kernel sums down first (up to
ceil(scale) + 1 source rows per output row, vectorised over the whole row), then across, in
float32, and rounds half to even as `cv2.resize` does. It equals `cv2.resize(..., INTER_AREA)`
within one level: only the order of the float sums differs, so a value within about 1e-4 of a
half rounds the other way (tests/test_ingest.py counts them on a decoded frame). At 640x360 ->
128x128 it costs about 0.15 ms a frame on one core, against 0.8 ms for cv2's one pass and 0.6 ms
for the two float passes ingest used before (`docs/ingest.md`, "Figures"). Whole-number factors
in both directions (64 -> 32) go to cv2 itself: its integer path rounds halves up at 2x2, which
a float kernel would not reproduce, so there the frames equal cv2's exactly (at 2x2 it is also
faster than this kernel; at 5x5 about 2.5x slower, a case ingest rarely meets).
"""

from __future__ import annotations

import functools
import math

import cv2
import numba
import numpy as np


@functools.lru_cache(maxsize=64)
def area_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """INTER_AREA along one axis of `src` pixels shrunk to `dst` (dst <= src): (dst,) int64 first source
    pixel of each output pixel and (dst, K) float32 weights of source pixels first.. first + K - 1
    (zero where a footprint spans fewer than K pixels); each row sums to 1. Read-only, cached."""
    if not 0 < dst <= src:
        raise ValueError(f"area_taps: shrinking needs 0 < dst <= src, got src={src} dst={dst}")
    scale = 1.0 / (dst / src)  # as cv2.resize computes it (1 / inv_scale), so the taps land where cv2's do
    taps = []
    for d in range(dst):
        lo = d * scale
        hi = lo + scale
        cell = min(scale, src - lo)
        first, last = math.ceil(lo), min(math.floor(hi), src - 1)
        first = min(first, last)
        row = [(first - 1, (first - lo) / cell)] if first - lo > 1e-3 else []
        row += [(s, 1.0 / cell) for s in range(first, last)]
        if hi - last > 1e-3:
            row.append((last, min(hi - last, 1.0, cell) / cell))
        taps.append(row)
    width = max(len(row) for row in taps)
    starts = np.array([row[0][0] for row in taps], np.int64)
    weights = np.zeros((dst, width), np.float32)
    for d, row in enumerate(taps):
        weights[d, :len(row)] = [w for _, w in row]
    starts.flags.writeable = weights.flags.writeable = False
    return starts, weights


@numba.njit(cache=True, nogil=True, fastmath={'contract'})  # fused multiply-adds: 10% faster
def _area_rgb(src, y_starts, y_weights, x_starts, x_weights, out):  # pragma: no cover - compiled
    """out (h, w, 3) uint8 <- src (H, W, 3) uint8, C-contiguous: down (each output row a weighted sum of
    source rows), then across. Indices are unsigned: numba then skips its negative-index fix-up,
    which costs a third of the pass across."""
    height, wc = src.shape[0], src.shape[1] * 3
    flat = src.reshape(height, wc)
    ky, kx = np.uint64(y_weights.shape[1]), np.uint64(x_weights.shape[1])
    row = np.zeros(wc + 3 * x_weights.shape[1], np.float32)  # zero tail: the pass across reads up to K - 1 past
    three = np.uint64(3)
    for i in range(out.shape[0]):
        y0 = np.uint64(y_starts[i])
        first, w0 = flat[y0], y_weights[i, 0]
        for j in range(wc):
            row[j] = w0 * np.float32(first[j])
        for k in range(np.uint64(1), ky):
            wk = y_weights[i, k]
            if wk != 0.0:
                line = flat[y0 + k]
                for j in range(wc):
                    row[j] += wk * np.float32(line[j])
        for jo in range(out.shape[1]):
            base, weights = np.uint64(x_starts[jo]) * three, x_weights[jo]
            r = g = b = np.float32(0.0)
            for k in range(kx):
                wk, p = weights[k], base + k * three
                r += wk * row[p]
                g += wk * row[p + np.uint64(1)]
                b += wk * row[p + np.uint64(2)]
            out[i, jo, 0] = np.uint8(min(max(np.rint(r), 0.0), 255.0))
            out[i, jo, 1] = np.uint8(min(max(np.rint(g), 0.0), 255.0))
            out[i, jo, 2] = np.uint8(min(max(np.rint(b), 0.0), 255.0))
    return out


def area_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 for size (h, w) <= (H, W): INTER_AREA (cv2's weights, within one level).

    Raises ValueError for a size larger than the frame in either direction or a frame that is not RGB uint8."""
    height, width = size
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"area_resize: an (H, W, 3) uint8 frame expected, got {frame.shape} {frame.dtype}")
    y_starts, y_weights = area_taps(frame.shape[0], height)
    x_starts, x_weights = area_taps(frame.shape[1], width)
    out = np.empty((height, width, 3), np.uint8)
    return _area_rgb(np.ascontiguousarray(frame), y_starts, y_weights, x_starts, x_weights, out)


def resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) for size (h, w): INTER_AREA when shrinking (or keeping) both sides
    (this module's kernel, or cv2 at whole-number factors), INTER_LINEAR (cv2) when growing either;
    the frame itself when size is None or its own."""
    if size is None or frame.shape[:2] == size:
        return frame
    height, width = size
    if height > frame.shape[0] or width > frame.shape[1]:
        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    whole = frame.shape[0] % height == 0 and frame.shape[1] % width == 0  # cv2's exact integer path
    if whole or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return area_resize(frame, size)
