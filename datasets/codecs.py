"""Frame codecs: how one `(H, W, 3)` uint8 frame becomes the bytes of the `frame` column.

    python benchmarks/bench_datasets.py      # size, PSNR and speed of each codec on Crafter frames

- `raw`:  the pixels as they are (H*W*3 bytes, row-major RGB); Parquet compresses the column
          with zstd. Lossless, the fastest to write and read (decoding is a zero-copy view of
          the decompressed column). The default: see docs/dataset-format.md for the numbers.
- `png`:  one PNG per frame (OpenCV). Lossless, about the size of `raw`+zstd, slower.
- `jpeg`: one JPEG per frame at quality 95 with 4:4:4 chroma (4:2:0 caps pixel art at ~28 dB
          PSNR whatever the quality; 4:4:4 q95 reaches ~38 dB). Lossy; not compact on game frames.
- `h264`: chunks of 32 steps of an episode as one H.264 stream (libx264 through PyAV, 4:4:4,
          crf 18, no B-frames), stored in the `frame` cell of the chunk's first step; the other
          steps of the chunk hold empty bytes. Compact, lossy; reading a step decodes its chunk.

A frame in `png`/`jpeg` is a standard image file, and an `h264` chunk a raw Annex B stream
(`ffplay -f h264 chunk.h264` plays it): any tool opens the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np
import pyarrow as pa

from worldloom.io import open_encoder


@dataclass(frozen=True)
class Codec:
    """How the frame column is encoded and how Parquet compresses it."""

    name: str
    lossless: bool
    parquet_compression: str  # for the frame column; already-compressed images are stored as is
    chunk_frames: int = 1  # steps encoded together; chunks start at steps 0, C, 2C, ... of an episode


CODECS: dict[str, Codec] = {
    "raw": Codec("raw", lossless=True, parquet_compression="zstd"),
    "png": Codec("png", lossless=True, parquet_compression="none"),
    "jpeg": Codec("jpeg", lossless=False, parquet_compression="none"),
    "h264": Codec("h264", lossless=False, parquet_compression="none", chunk_frames=32),
}
DEFAULT_CODEC = "raw"
JPEG_QUALITY = 95
H264_OPTIONS = {"crf": "18", "preset": "veryfast", "bf": "0"}  # 4:4:4 crf 18: ~34+ dB on pixel art


def get_codec(name: str) -> Codec:
    """The codec called `name`, or a ValueError listing the known ones."""
    if name not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(sorted(CODECS))}, got {name!r}")
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
    if codec == "h264":
        cells: list[bytes] = []
        for first in range(0, num_frames, CODECS["h264"].chunk_frames):
            chunk = frames[first : first + CODECS["h264"].chunk_frames]
            cells += [encode_h264(chunk)] + [b""] * (len(chunk) - 1)
        return pa.array(cells, type=pa.binary())
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


def encode_h264(frames: np.ndarray) -> bytes:
    """`(T, H, W, 3)` uint8 -> one H.264 Annex B stream (first frame a keyframe)."""
    import av

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
    ctx.time_base, ctx.framerate = Fraction(1, 20), Fraction(20, 1)
    ctx.thread_count = 1  # parallelism comes from processes (DataLoader workers, Ray actors)
    open_encoder(ctx, H264_OPTIONS)  # an option libx264 does not know is an error, not silently dropped
    packets = []
    for i, frame in enumerate(frames):
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv444p")
        video_frame.pts = i
        packets += ctx.encode(video_frame)
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def decode_h264(data: bytes) -> np.ndarray:
    """One H.264 chunk -> `(T, H, W, 3)` uint8."""
    import av

    ctx = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1
    frames = []
    for packet in ctx.parse(data) + ctx.parse(None):
        frames += ctx.decode(packet)
    frames += ctx.decode(None)
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    # swscale's yuv444p -> bgr24 path is ~2.5x faster than -> rgb24 here; flip the channels after.
    return np.ascontiguousarray(np.stack([f.to_ndarray(format="bgr24") for f in frames])[..., ::-1])


class FrameDecodeError(ValueError):
    """A frame's bytes do not decode to the dataset's declared `(H, W, 3)`; `.index` says which."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def _raw_view(chunk: pa.BinaryArray, height: int, width: int) -> np.ndarray:
    frame_size = height * width * 3
    if not (pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type)):
        chunk = chunk.cast(pa.large_binary())  # binary_view has no offsets buffer
    # large_binary (Polars writes frames so; ray.data and pyarrow read them back so) has 64-bit offsets
    _, offsets_buf, data_buf = chunk.buffers()
    offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[chunk.offset : chunk.offset + len(chunk) + 1]
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
    if codec == "h264":
        return _decode_chunks(column.to_pylist(), height, width)
    out = np.empty((len(column), height, width, 3), np.uint8)
    i = 0
    for chunk in chunks:
        for value in chunk:
            out[i] = decode_one(codec, value.as_py(), height, width, index=i)
            i += 1
    return out


def _decode_chunks(cells: list[bytes | None], height: int, width: int) -> np.ndarray:
    """Cells of chunked frames (a stream, then empty cells) -> one frame per cell."""
    out = np.empty((len(cells), height, width, 3), np.uint8)
    starts = [i for i, c in enumerate(cells) if c]
    if cells and (not starts or starts[0] != 0):
        raise FrameDecodeError(0, "rows do not start at a chunk: the first frame cell is empty")
    for k, first in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else len(cells)
        try:
            chunk = decode_h264(cells[first])
        except Exception as err:  # PyAV raises several error types for damaged streams
            raise FrameDecodeError(first, f"H.264 chunk does not decode ({err})") from None
        if chunk.shape != (stop - first, height, width, 3):
            raise FrameDecodeError(first, f"H.264 chunk decodes to {tuple(chunk.shape)}, expected {(stop - first, height, width, 3)}")
        out[first:stop] = chunk
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
