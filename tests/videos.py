"""Small synthetic video files for tests, written with PyAV: frame i shows its index.

Frame i is a moving texture with its top-left 16x16 block painted grey 10 + 6 i, so the index
of the frame a reader returns is read back from its pixels (`frame_index`), whatever the
codec did to the texture.
"""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from worldloom.io import open_encoder

MS = Fraction(1, 1000)


def painted(i: int, size: int = 64) -> np.ndarray:
    """Frame i: (size, size, 3) uint8 texture shifted 2i pixels, index painted top-left."""
    tex = np.random.default_rng(0).integers(0, 256, (size, size + 128, 3), dtype=np.uint8)
    frame = np.ascontiguousarray(np.roll(tex, -2 * i, 1)[:, :size])
    frame[:16, :16] = 10 + 6 * i
    return frame


def frame_index(frames: np.ndarray) -> list[int]:
    """The painted index of each frame (N, H, W, 3)."""
    return np.rint((frames[:, :16, :16].reshape(len(frames), -1).mean(1) - 10) / 6).astype(int).tolist()


def write_video(path, pts_ms: list[int] | None = None, num_frames: int | None = None, rate: int = 20,
                codec: str = "libx264", container_format: str | None = None, bframes: int = 0,
                container_options: dict | None = None, last_ms: int | None = None) -> str:
    """Frames 0, 1, ... at presentation times `pts_ms` (ms), or `num_frames` at a constant `rate`. With
    `pts_ms` each frame's stated duration is the time to the next one, the last's `last_ms` (default: the
    interval before it), as a recorder states them."""
    out = av.open(str(path), "w", format=container_format, options=container_options or {})
    stream = out.add_stream(codec, rate=None if pts_ms is not None else rate)
    if pts_ms is not None:
        stream.codec_context.time_base = stream.time_base = MS
    stream.width = stream.height = 64
    if codec == "libx264":
        stream.pix_fmt = "yuv444p"
        open_encoder(stream.codec_context, {"crf": "10", "bf": str(bframes)})
    else:
        stream.pix_fmt = "yuv420p"
    times = pts_ms if pts_ms is not None else [None] * num_frames
    durations = {}
    if pts_ms is not None:
        gaps = [b - a for a, b in zip(pts_ms, pts_ms[1:], strict=False)]
        durations = dict(zip(pts_ms, [*gaps, last_ms or gaps[-1]], strict=True))

    def mux(packets) -> None:
        for packet in packets:
            if packet.pts in durations:
                packet.duration = durations[packet.pts]
            out.mux(packet)

    for i, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(painted(i), format="rgb24")
        if t is not None:
            frame.pts, frame.time_base = t, MS
        mux(stream.encode(frame))
    mux(stream.encode())
    out.close()
    return str(path)


def _annex_b(num_frames: int, rate: int, pix_fmt: str, options: dict | None = None) -> bytes:
    """`num_frames` painted 64x64 frames as libx264's raw Annex B bytes, timed 1 / rate apart."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width = ctx.height = 64
    ctx.pix_fmt, ctx.time_base, ctx.framerate = pix_fmt, Fraction(1, rate), Fraction(rate, 1)
    open_encoder(ctx, options or {})
    data = b""
    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(painted(i), format="rgb24")
        frame.pts = i
        data += b"".join(bytes(p) for p in ctx.encode(frame))
    return data + b"".join(bytes(p) for p in ctx.encode(None))


def write_h264_stream(path, num_frames: int, rate: int = 20) -> str:
    """A raw H.264 Annex B stream (.h264): frames with no timestamps, the rate only in the header."""
    data = _annex_b(num_frames, rate, "yuv444p", {"crf": "10", "bf": "0"})
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _unescape(nal: bytes) -> bytes:
    """An H.264 NAL unit's payload without its emulation prevention bytes (00 00 03 -> 00 00)."""
    out, zeros = bytearray(), 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _chroma_depth_8(sps: bytes) -> bytes:
    """A High 10 SPS NAL unit (header byte first) with bit_depth_chroma_minus8 set to 0: luma 10 bits, chroma 8."""
    bits = "".join(f"{b:08b}" for b in _unescape(sps[1:]))
    at = 24  # profile_idc, constraint flags, level_idc

    def ue() -> int:  # an Exp-Golomb code at `at`
        nonlocal at
        zeros = bits.index("1", at) - at
        value = int(bits[at + zeros:at + 2 * zeros + 1], 2) - 1
        at += 2 * zeros + 1
        return value

    ue()  # seq_parameter_set_id
    if ue() == 3:  # chroma_format_idc 4:4:4 has separate_colour_plane_flag
        at += 1
    ue()  # bit_depth_luma_minus8
    start = at
    ue()  # bit_depth_chroma_minus8, replaced by 0 ("1")
    bits = (bits[:start] + "1" + bits[at:]).rstrip("0")  # its rbsp_stop_one_bit kept last, then byte-aligned
    bits += "0" * (-len(bits) % 8)
    return sps[:1] + _escape(bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)))


def write_h264_mixed_depth(path, num_frames: int = 12) -> str:
    """A raw H.264 stream (.h264) of 10-bit luma and 8-bit chroma: valid H.264 (High 4:4:4 allows any depths 8..14
    for each), which FFmpeg's decoder lacks: it logs "Different chroma and luma bit depth is not implemented" (a
    warning), refuses the SPS, then each slice fails on "non-existing PPS 0 referenced". x264 writes High 10 (both
    10-bit); its SPS's chroma depth is set to 8 here."""
    data = _annex_b(num_frames, 20, "yuv420p10le")
    nals = [nal.rstrip(b"\x00") for nal in data.split(b"\x00\x00\x01") if nal.rstrip(b"\x00")]
    with open(path, "wb") as f:
        f.write(b"".join(b"\x00\x00\x00\x01" + (_chroma_depth_8(n) if n[0] & 0x1F == 7 else n) for n in nals))
    return str(path)


def _mux_silence(out, stream) -> None:
    """Eight frames of mono silence (1024 samples at 16 kHz each) encoded into `stream` and muxed, flushed."""
    for i in range(8):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, i * 1024
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def write_audio_only(path) -> str:
    """An .m4a file with one AAC stream and no video."""
    out = av.open(str(path), "w")
    stream = out.add_stream("aac", rate=16000)
    _mux_silence(out, stream)
    out.close()
    return str(path)



COVER_GREY = 250  # the picture of `write_with_cover`: 32x32, all this grey (no frame index paints it)


def _cover_stream(out, attached: bool = True):
    stream = out.add_stream("mjpeg", rate=1)
    stream.width = stream.height = 32
    stream.pix_fmt = "yuvj420p"
    if attached:
        stream.disposition = av.stream.Disposition.attached_pic
    return stream


def _mux_cover(out, stream) -> None:
    picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), COVER_GREY, np.uint8), format="rgb24")
    for packet in [*stream.encode(picture.reformat(format="yuvj420p")), *stream.encode()]:
        out.mux(packet)


def write_with_cover(path, layout: str, num_frames: int = 12) -> str:
    """Frames 0, 1, ... at 20 fps beside a 32x32 still, as downloads and cameras add thumbnails:
    "mp4 cover after": an attached picture (mp4 `covr`) listed after the video, as FFmpeg writes it;
    "mp4 cover first": the same with its moov's udta moved before the trak (as some taggers write it), so
    the picture is stream #0; "mkv still first": a one-frame mjpeg track before the video (no flag)."""
    fmt = "matroska" if layout == "mkv still first" else "mp4"
    out = av.open(str(path), "w", format=fmt)
    still = _cover_stream(out, attached=fmt == "mp4") if layout != "mp4 cover after" else None
    video = out.add_stream("libx264", rate=20)
    video.width = video.height = 64
    video.pix_fmt = "yuv444p"
    open_encoder(video.codec_context, {"crf": "10", "bf": "0"})
    still = still or _cover_stream(out)
    _mux_cover(out, still)
    for i in range(num_frames):
        for packet in video.encode(av.VideoFrame.from_ndarray(painted(i), format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    out.close()
    if layout == "mp4 cover first":
        _move_udta_first(path)
    return str(path)


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of the ISO BMFF boxes in data[start:end]."""
    out = []
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        out.append((kind, start, start + size))
        start += size
    return out


def _move_udta_first(path) -> None:
    """Move moov's udta (its tags and cover art) before its tracks: sizes and sample offsets unchanged."""
    data = open(path, "rb").read()
    _, start, end = next(b for b in _boxes(data, 0, len(data)) if b[0] == b"moov")
    children = _boxes(data, start + 8, end)
    ordered = sorted(children, key=lambda b: b[0] != b"udta")
    moov = data[start:start + 8] + b"".join(data[a:b] for _, a, b in ordered)
    with open(path, "wb") as f:
        f.write(data[:start] + moov + data[end:])


def write_audio_with_cover(path) -> str:
    """An .m4a file: one AAC stream and cover art (an attached picture), no video."""
    out = av.open(str(path), "w", format="mp4")  # the ipod muxer (.m4a) takes no picture through PyAV
    audio = out.add_stream("aac", rate=16000)
    _mux_cover(out, _cover_stream(out))
    _mux_silence(out, audio)
    out.close()
    return str(path)

def truncate(src, dst, fraction: float = 0.6) -> str:
    """Copy the first `fraction` of a file's bytes (what a broken download leaves)."""
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[:int(len(data) * fraction)])
    return str(dst)


def on_screen(pts_ms: list[int], fps: float, last_ms: int | None = None) -> list[int]:
    """The reference rule: step k shows the last frame with time <= k / fps (times from the first
    frame); the last step is the last whose whole interval ends by the last frame's end (its start plus
    its stated duration `last_ms`, default the interval before it), as ffmpeg's fps filter ends."""
    t = [(p - pts_ms[0]) / 1000 for p in pts_ms]
    end = t[-1] + (last_ms / 1000 if last_ms else t[-1] - t[-2])
    steps, k = [], 0
    while (k + 1) / fps <= end + 1e-9 or k == 0:
        steps.append(max(i for i, ti in enumerate(t) if ti <= k / fps + 1e-9))
        k += 1
    return steps


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_apng16(path, num_frames: int, delay_ms: int = 50) -> str:
    """An animated PNG of 16-bit RGBA frames (frame i painted as `painted(i)`), each after the first blended OVER
    the canvas, as an APNG assembler writes them: every browser and Pillow play it, FFmpeg's apng decoder blends
    only 8-bit RGBA and grey-alpha ("not yet implemented" for the rest)."""
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 16, 6, 0, 0, 0)),
           _png_chunk(b"acTL", struct.pack(">II", num_frames, 0))]
    seq = 0
    for i in range(num_frames):
        rgba = np.full((64, 64, 4), 65535, np.uint16)
        rgba[..., :3] = painted(i).astype(np.uint16) * 257
        rows = rgba.astype(">u2").reshape(64, -1).tobytes()
        data = zlib.compress(b"".join(b"\x00" + rows[r * 512:(r + 1) * 512] for r in range(64)))  # filter 0, 512 B a row
        out.append(_png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, 64, 64, 0, 0, delay_ms, 1000, 0, 1 if i else 0)))
        seq += 1
        if i == 0:
            out.append(_png_chunk(b"IDAT", data))
        else:
            out.append(_png_chunk(b"fdAT", struct.pack(">I", seq) + data))
            seq += 1
    out.append(_png_chunk(b"IEND", b""))
    Path(path).write_bytes(b"".join(out))
    return str(path)
