"""Frame codecs: how one `(H, W, 3)` uint8 frame becomes the bytes of the `frame` column.

    python benchmarks/bench_datasets.py      # size, PSNR and speed of each codec on Crafter frames

- `raw`:  the pixels as they are (H*W*3 bytes, row-major RGB); Parquet compresses the column
          with zstd. Lossless, the fastest to write and read (decoding is a zero-copy view of
          the decompressed column). The default: see docs/dataset-format.md for the numbers.
- `png`:  one PNG per frame (OpenCV). Lossless, about the size of `raw`+zstd, slower.
- `jpeg`: one JPEG per frame at quality 95 with 4:4:4 chroma (4:2:0 caps pixel art at ~28 dB
          PSNR whatever the quality; 4:4:4 q95 reaches ~38 dB). Compact, lossy.

A frame in `png`/`jpeg` is a standard image file: any viewer opens the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Codec:
    """How the frame column is encoded and how Parquet compresses it."""

    name: str
    lossless: bool
    parquet_compression: str  # for the frame column; already-compressed images are stored as is


CODECS: dict[str, Codec] = {
    "raw": Codec("raw", lossless=True, parquet_compression="zstd"),
    "png": Codec("png", lossless=True, parquet_compression="none"),
    "jpeg": Codec("jpeg", lossless=False, parquet_compression="none"),
}
DEFAULT_CODEC = "raw"
JPEG_QUALITY = 95


def get_codec(name: str) -> Codec:
    """The codec called `name`, or a ValueError listing the known ones."""
    if name not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {name!r}")
    return CODECS[name]


def encode_frames(codec: str, frames: np.ndarray) -> pa.BinaryArray:
    """`(T, H, W, 3)` uint8 -> a binary array of T encoded frames."""
    frames = np.ascontiguousarray(frames)
    num_frames = frames.shape[0]
    if codec == "raw":
        # Build the Arrow array straight from the pixel buffer: no per-frame Python objects.
        frame_size = int(np.prod(frames.shape[1:]))
        offsets = np.arange(num_frames + 1, dtype=np.int32) * frame_size
        return pa.BinaryArray.from_buffers(
            pa.binary(), num_frames, [None, pa.py_buffer(offsets), pa.py_buffer(frames)]
        )
    get_codec(codec)
    if codec == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
        ext = ".png"
    else:
        params = [
            cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ]
        ext = ".jpg"
    encoded = []
    for frame in frames:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {frame.shape} frame as {codec}")
        encoded.append(buf.tobytes())
    return pa.array(encoded, type=pa.binary())


class FrameDecodeError(ValueError):
    """A frame's bytes do not decode to the dataset's declared `(H, W, 3)`; `.index` says which."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def _raw_view(chunk: pa.BinaryArray, height: int, width: int) -> np.ndarray:
    frame_size = height * width * 3
    _, offsets_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
    sizes = np.diff(offsets)
    bad = np.flatnonzero(sizes != frame_size)
    if bad.size:
        i = int(bad[0])
        raise FrameDecodeError(i, f"frame has {sizes[i]} bytes, expected {frame_size} ({height}x{width}x3)")
    if len(chunk) == 0:
        return np.zeros((0, height, width, 3), np.uint8)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(len(chunk), height, width, 3)


def decode_frames(codec: str, column: pa.Array | pa.ChunkedArray, height: int, width: int) -> np.ndarray:
    """A binary column of encoded frames -> `(N, H, W, 3)` uint8 (writable, owned)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if codec == "raw":
        parts, seen = [], 0
        for chunk in chunks:
            try:
                parts.append(_raw_view(chunk, height, width))
            except FrameDecodeError as err:
                raise FrameDecodeError(seen + err.index, str(err)) from None
            seen += len(chunk)
        if not parts:
            return np.zeros((0, height, width, 3), np.uint8)
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
    get_codec(codec)
    out = np.empty((len(column), height, width, 3), np.uint8)
    i = 0
    for chunk in chunks:
        for value in chunk:
            out[i] = decode_one(codec, value.as_py(), height, width, index=i)
            i += 1
    return out


def decode_one(codec: str, data: bytes | None, height: int, width: int, index: int = 0) -> np.ndarray:
    """One encoded frame -> `(H, W, 3)` uint8, or FrameDecodeError."""
    if data is None:
        raise FrameDecodeError(index, "frame is null")
    if codec == "raw":
        if len(data) != height * width * 3:
            raise FrameDecodeError(index, f"frame has {len(data)} bytes, expected {height * width * 3} ({height}x{width}x3)")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameDecodeError(index, f"frame bytes are not a valid {codec} image")
    if image.shape != (height, width, 3):
        raise FrameDecodeError(index, f"frame decodes to {image.shape[1]}x{image.shape[0]}, expected {width}x{height}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
