"""The decoders behind `worldloom.datasets.video`, PyAV (FFmpeg), OpenCV and, for an animated picture FFmpeg
cannot decode (an animated WebP), Pillow, and what they need:
the stream to read, each frame's time, the picture as a player shows it, the container's promise.

    from worldloom.datasets.video_backends import SOURCES
    frames = SOURCES["pyav"](path, threads, report)   # (time in s or None, (H, W, 3) uint8 RGB, stated duration in s or None)

Each backend is a generator that fills the `DecodeReport` as it reads and raises `_NoFrame` when it
opens nothing or decodes no frame (the reader then tries the next one). PyAV reads the stream
ffmpeg reads by default (`video_stream`), times frames by ffmpeg's best-effort timestamp
(`_BestEffortClock`), applies the display matrix and the sample aspect ratio, and counts damaged
packets and FFmpeg's error lines; OpenCV, the fallback, is refused a file whose first video stream
is not that one. `worldloom.datasets.video`'s docstring states the rules; `VideoReader` there
tries the backends in order.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .video_report import DecodeReport

NO_VIDEO_ONLY_PICTURE = "no video stream (only an attached picture)"
# Decoders to use instead of FFmpeg's default for a codec, e.g. {"av1": "libaom-av1"}: empty, FFmpeg's choice
# (tests name the native "av1" decoder, which needs hardware acceleration, as a PyAV without dav1d has it).
DECODERS: dict[str, str] = {}
# Decoder names -> the codec they decode (the report names the codec, not the library).
CODEC_OF_DECODER = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx": "vp8", "libvpx-vp9": "vp9", "libopenh264": "h264"}


class _NoFrame(Exception):
    """A backend that opened nothing or decoded no frame (the reader tries the next one)."""


class _Unsupported(Exception):
    """A backend whose decoder cannot go on past the frames it gave (not damage: a feature it lacks); the reader
    hands the rest of the file to the next backend."""


# ---- backends: each yields (time in seconds or None, RGB frame, its stated duration in seconds or None),
# filling the report ------------------------------------------------------------------------------

def _pyav_frames(path: Path, threads: int, report: DecodeReport) -> Iterator[tuple[float | None, np.ndarray, float | None]]:
    import av
    from av.video.reformatter import VideoReformatter

    av.logging.set_level(av.logging.PANIC)  # damaged packets are counted in the report, not printed
    errors_before = av.logging.get_last_error()[0]  # FFmpeg's error lines so far, counted even when not printed
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise _NoFrame(f"cannot open it ({_ffmpeg_reason(err)})") from None
    watch = _LineWatch(report, errors_before)
    with container, _counting_errors(report, watch):
        stream = video_stream(container)
        if stream is None:
            raise _NoFrame(NO_VIDEO_ONLY_PICTURE if container.streams.video else "no video stream")
        report.video_stream, report.num_video_streams = stream.index, len(container.streams.video)
        report.container = container.format.name
        codec_context = _decoder(stream)
        if codec_context is None:
            raise _NoFrame("no decoder for its video codec")
        report.codec = CODEC_OF_DECODER.get(codec_context.codec.name, codec_context.codec.name)
        report.header_fps = _rate(stream.guessed_rate) or _rate(stream.average_rate)
        report.listed_frames = int(stream.frames) or None
        report.promised_s = _promised_duration(container, stream)
        if report.container == "avi" and report.listed_frames and stream.time_base:
            # An AVI's header counts its chunks when the file is finished (strh dwLength), each one tick of its time
            # base (dwScale/dwRate); FFmpeg's duration of a cut one is estimated from the bytes that are left, so
            # that alone would promise what is there. Ticks, not frames: a variable rate's AVI has empty chunks
            # (a 1 ms clock: 2500 chunks for 2.5 s), which over the guessed frame rate promised 62.5 s.
            report.promised_s = max(report.promised_s or 0.0, float(report.listed_frames * stream.time_base))
        sar = _sample_aspect(stream.sample_aspect_ratio or codec_context.sample_aspect_ratio, report)
        codec_context.thread_count = threads  # slice threads (PyAV's default): frame threads dropped frames
        # around a damaged packet here (9 instead of 11 of a cut file) and add latency
        reformatter = VideoReformatter()  # reused: 2x faster than a new conversion per frame
        size: tuple[int, int] | None = None
        last_end: list = [0, None]  # the byte after the last packet demuxed (its pos + size), for `_cut_tail`; its dts
        clock = _BestEffortClock(prefer_dts=report.container == "avi")
        last_end.append(None)  # (bytes, number) of a packet the file's end cut, where one was read short
        packets, num_frames, ending = _noting_end(container.demux(stream), last_end, os.path.getsize(path)), 0, False
        stopped: _Unsupported | None = None  # where the decoder cannot go on: raised once the frames held are given
        while not ending:
            failed = False
            try:
                with _ffmpeg_lines() as lines:  # this packet's lines: a feature the decoder lacks is said in one
                    frames = codec_context.decode(next(packets))
            except StopIteration:
                frames, ending = _flush(codec_context), True  # the frames still in the decoder if the demuxer stopped early
                report.cut_bytes, report.cut_unit = _cut_tail(path, report.container, last_end[0], last_end[2])
                if report.container == "avi" and report.listed_frames and last_end[1] is not None and \
                        (report.listed_frames - last_end[1] - 1) * stream.time_base <= AVI_SLACK_FRAMES / (report.header_fps or 1.0):
                    # every chunk the header counts was read (a packet's dts is its chunk's number): the promise is
                    # met, though the decoded time is shorter by the B-frame delay that shifted the chunks on (a
                    # whole variable-rate AVI with B-frames was 'truncated': 2.65 s of chunks for 2.5 s of video)
                    report.promised_s = None
            except (av.error.NotImplementedError, av.error.PatchWelcomeError) as err:
                # ENOSYS or FFmpeg's "not yet implemented" (PATCHWELCOME): the decoder cannot do it here, the bytes
                # may be fine; past the first frame too (a 16-bit APNG blends its second frame over the first: until
                # 2026-12-07 each later packet was counted damaged and skipped, a 20-frame clip stored as 1 step)
                report.unsupported = f"{codec_context.codec.name}: {err.strerror}"
                watch.lacking = True  # the lines it logged are this feature's, not damage
                if not num_frames:
                    raise _NoFrame(f"its {report.codec} decoder ({report.unsupported}) cannot decode it here "
                                   "(a decoder that needs hardware acceleration, or a feature this FFmpeg lacks)") from None
                stopped = _Unsupported(f"its {report.codec} decoder ({report.unsupported}) cannot decode it past "
                                       f"frame {num_frames} (a feature this FFmpeg lacks)")
                frames, ending = [], True
            except (av.error.FFmpegError, OSError):
                report.decode_errors += 1  # a packet that did not decode: skipped (damage, or a feature it lacks)
                frames, failed = [], True
            watch.packet(lines, failed, bool(frames))
            if failed:
                continue
            num_frames += len(frames)
            for frame, t in clock.timed(frames, flush=ending):
                size = size or (frame.width, frame.height)  # a stream that changes size keeps its first size
                resize = {} if (frame.width, frame.height) == size else {"width": size[0], "height": size[1]}
                if resize:  # said in the report's warnings and recorded in the episode (a new-user trial, session 57)
                    report.resized_frames += 1
                    if (seen := f"{frame.width}x{frame.height}") not in report.other_sizes:
                        report.other_sizes.append(seen)
                rgb = _square_pixels(reformatter.reformat(frame, format="rgb24", **resize).to_ndarray(), sar)
                yield t, _upright(rgb, frame), _duration_s(frame)
        if stopped is not None:
            raise stopped


def _noting_end(packets: Iterator, last_end: list, file_size: int) -> Iterator:
    """`packets` as they come, `last_end[0]` set to the byte after each one with a position (pos + size),
    `last_end[1]` to its dts (an AVI's chunk number), where it has one, and `last_end[2]` to (its bytes, its number
    in decode order) where the file's end cut it: libavformat flags a packet it read short corrupt (an .flv, .avi or
    .mov cut inside a frame), which then ends at the file's last byte."""
    number = 0
    for packet in packets:
        number += bool(packet.size)
        if packet.pos is not None and packet.pos >= 0 and packet.size:
            last_end[0] = packet.pos + packet.size
            # (the position is the container's unit's: an .flv tag's header, 16 bytes before the packet's data)
            cut = packet.is_corrupt and file_size - PACKET_HEADER_MAX_BYTES <= last_end[0] <= file_size
            last_end[2] = (packet.size, number) if cut else None
        if packet.size and packet.dts is not None:
            last_end[1] = packet.dts
        yield packet


PACKET_HEADER_MAX_BYTES = 64  # a container's header before a packet's data (FLV: 11 + 5, AVI: 8, MP4: none)
AVI_SLACK_FRAMES = 2  # frame intervals (of the header rate) an AVI's last packet may end before its header's chunk
# count and be whole (trailing empty chunks), as `DecodeReport.truncated` allows two


# Containers of fixed-size units with no index and no stated length. Cut at a byte inside a unit (a broken download
# or copy), FFmpeg drops the part left without an error line (a .ts cut past 59% of its bytes: none), so what decoded
# was taken as a whole short clip; the file's size says it was cut (a new-user trial, 2026-12-07; field case 05's kind).
TS_PACKET_SIZES = ((188, 0), (192, 4), (204, 0))  # MPEG-TS, M2TS (a 4-byte timecode first), TS with Reed-Solomon bytes
YUV4MPEG_FRAME_MAGIC = b"FRAME"


def _cut_tail(path: Path, container: str, last_end: int, short_packet: tuple[int, int] | None = None) -> tuple[int, str]:
    """(bytes at the end of the file past its last whole unit, the unit in words), or (0, "") when it ends on a
    unit's end or its container has no fixed units. MPEG-TS: the packet size its sync bytes (0x47) give, the size
    a whole number of them; YUV4MPEG2: the bytes after the last whole frame the demuxer read (`last_end`, its
    pos + size), where a frame is cut (its header or part of its picture left); a GIF: the image its blocks' sizes
    run past the end in; else the video packet the demuxer read short at the file's end (`short_packet`: its bytes
    and its number), in any container (an .flv cut in its first frame was 'corrupt: 1 damaged packets')."""
    size = os.path.getsize(path)
    if container == "gif":
        cut = gif_cut(path)
        return (size - cut[0], f"GIF block ({cut[1]})") if cut else (0, "")
    if container == "mpegts":
        with open(path, "rb") as f:
            head = f.read(3 * 204 + 4)
        for unit, sync_at in TS_PACKET_SIZES:
            if len(head) >= 2 * unit + sync_at + 1 and all(head[sync_at + k * unit] == 0x47 for k in range(3)
                                                            if sync_at + k * unit < len(head)):
                return size % unit, f"{unit}-byte MPEG-TS packet"
        return 0, ""
    if container == "yuv4mpegpipe" and 0 < last_end < size:
        return size - last_end, "YUV4MPEG2 frame"
    if short_packet:
        return short_packet[0], f"video packet (frame {short_packet[1]} in decode order)"
    return 0, ""


GIF_TRAILER, GIF_EXTENSION, GIF_IMAGE = 0x3B, 0x21, 0x2C


def gif_cut(path: Path) -> tuple[int, str] | None:
    """(the byte where the block the file's end cuts starts, the block in words: "its header", "frame 2's image",
    "frame 3's extension") where a GIF's
    blocks (extensions and images, each a chain of sub-blocks of stated sizes) run past the file's end before its
    trailer; None where it is whole (or ends right after a whole block), or not a GIF this walk reads. A GIF states
    no length or frame count: FFmpeg reads a cut one as a shorter animation, or, cut in its first image, as damage."""
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 13:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:3] != b"GIF":
                return None
            size, at, frame = len(data), 13, 1
            if data[10] & 0x80:  # a global colour table
                at += 3 << ((data[10] & 7) + 1)
            if at > size:
                return 0, "its header"
            while at < size:
                start, kind = at, data[at]
                if kind == GIF_TRAILER:
                    return None
                if kind == GIF_EXTENSION:
                    at += 2
                elif kind == GIF_IMAGE:
                    if at + 10 > size:
                        return start, f"frame {frame}'s image"
                    local_table = 3 << ((data[at + 9] & 7) + 1) if data[at + 9] & 0x80 else 0
                    at += 10 + local_table + 1  # the descriptor, its colour table, the LZW code size
                else:
                    return None  # not a block: garbage after the last one, or no GIF this reads
                while at < size and data[at]:  # sub-blocks, each its length then its bytes, up to a 0
                    at += 1 + data[at]
                if at >= size:
                    return start, f"frame {frame}'s {'image' if kind == GIF_IMAGE else 'extension'}"
                at += 1
                frame += kind == GIF_IMAGE
    return None


class _BestEffortClock:
    """Each decoded frame's time in seconds as ffmpeg's best-effort timestamp gives it (libavcodec's
    guess_correct_pts: the frame's pts, or its packet's dts once pts have gone backwards more often than
    dts), which ffmpeg's CLI and OpenCV use. A PyAV frame's pts is the raw one: an .avi (no pts of its own:
    the demuxer numbers packets in decode order) of H.264 or MPEG-4 with B-frames gives frames in display
    order whose pts run 1, 3, 2, 5, 4, ..., while their dts count 2, 3, 4, ...; read as pts, frames were
    shown twice and others dropped. The first `LOOKAHEAD` frames are held until the choice is known, so the
    video's start is timed as its rest (ffmpeg times the frames before the first backward pts by their pts)."""

    LOOKAHEAD = 16  # frames: more than any B-frame pyramid's reordering

    def __init__(self, prefer_dts: bool = False) -> None:
        # `prefer_dts`: an AVI, whose dts are its chunk numbers (the time: an empty chunk where no frame is) and whose
        # pts libavformat guesses for a codec that may reorder (H.264: each frame given the next one's dts). Without
        # B-frames its dts are the frames' times; by the guessed pts each frame of a variable-rate AVI came one
        # frame late (frame 19 of field case 01's clip shown 2 steps late, 48 steps of 50). Timed by dts until its
        # dts go back more often than its pts (a new-user trial, 2026-12-07; field case 01's kind).
        self.prefer_dts = prefer_dts
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None
        self.held: list | None = []  # the first frames, until the choice is known; then None
        self.timed_dts: int | None = None  # the last dts a frame was timed by, and the step between the last two
        self.dts_step: int | None = None

    def _count(self, pts: int | None, dts: int | None) -> None:
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts

    def _time(self, frame) -> float | None:
        pts, dts = frame.pts, frame.dts
        by_dts = pts is None or (self.faulty_pts >= self.faulty_dts if self.prefer_dts else self.faulty_pts > self.faulty_dts)
        if by_dts and dts is None and self.dts_step:
            dts = self.timed_dts + self.dts_step  # the frames flushed from the decoder at the end carry no dts
        if by_dts and dts is not None:
            if self.timed_dts is not None and dts > self.timed_dts:
                self.dts_step = dts - self.timed_dts
            self.timed_dts, chosen = dts, dts
        else:
            chosen = pts
        return None if chosen is None or frame.time_base is None else float(chosen * frame.time_base)

    def timed(self, frames, flush: bool = False) -> Iterator[tuple]:
        """(frame, its time in seconds or None) for `frames`, the first ones held back; `flush`: the last call."""
        out = []
        for frame in frames:
            self._count(frame.pts, frame.dts)
            if self.held is None:
                out.append((frame, self._time(frame)))
            else:
                self.held.append(frame)
        if self.held is not None and (flush or len(self.held) >= self.LOOKAHEAD):
            out = [(frame, self._time(frame)) for frame in self.held] + out
            self.held = None
        return iter(out)


@contextlib.contextmanager
def _counting_errors(report: DecodeReport, watch: _LineWatch) -> Iterator[None]:
    """Fill the report's count of FFmpeg's error lines once reading stops. A file cut short where its
    container states no length (a crashed recorder's mkv, a cut .ts or .gif, a fragmented mp4) decodes
    what it holds without an exception; only FFmpeg's log says so ("File ended prematurely",
    "LZW decode failed", a broken last macroblock). Whole files log none."""
    import av

    try:
        yield
    finally:
        count, last = av.logging.get_last_error()
        report.ffmpeg_errors = count - watch.errors_before
        if count > watch.errors_noted and last:  # a line after the last packet's (the demuxer's, at the end)
            report.ffmpeg_last_error = _line_words(last[1], last[2])


UNSUPPORTED_WORDS = ("unsupported", "not supported", "not implemented")  # in FFmpeg's log: a feature it lacks
# libavutil's avpriv_report_missing_feature / avpriv_request_sample: "<feature>" then this, two lines
MISSING_FEATURE = "is not implemented. update your ffmpeg"


@contextlib.contextmanager
def _ffmpeg_lines() -> Iterator[list]:
    """FFmpeg's log lines, (level, name, text), of warnings and errors logged while the block runs (by any thread:
    a slice thread's too), printed nowhere; PyAV's level and its skipping of repeated lines as they were after.
    PyAV keeps only the last error line, and no warning: a feature a decoder lacks is often a warning
    ("Different chroma and luma bit depth is not implemented") before the errors it leads to."""
    import av

    level, repeated = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_skip_repeated(False)  # a repeat is tallied when the next line comes: maybe outside the block
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture(local=False) as lines:
            yield lines
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(repeated)


def lacked_feature(lines: list) -> str:
    """The first of FFmpeg's `lines` (level, name, text) that says a feature is unsupported or not implemented, as
    'name: text' ("mjpeg: unsupported coding type (c9)", "h264: Different chroma and luma bit depth is not
    implemented": libavutil's missing-feature report, the feature on the line before), else ''."""
    for i, (_, name, text) in enumerate(lines):
        lower = text.strip().lower()
        if lower.startswith(MISSING_FEATURE) and i:
            return _line_words(name, f"{lines[i - 1][2].strip()} is not implemented")
        if any(word in lower for word in UNSUPPORTED_WORDS):
            return _line_words(name, text)
    return ""


def _line_words(name: str, text: str) -> str:
    """'mjpeg: unsupported coding type (c9)': FFmpeg's line with its context's name once."""
    text = text.strip()
    return text if not name or text.startswith(f"{name}:") else f"{name}: {text}"


class _LineWatch:
    """Sorts FFmpeg's error lines and the packets that do not decode into damage and what a feature the decoder
    lacks leads to: a packet whose lines say the decoder lacks a feature, and, until a frame decodes again, each
    later one that fails with no error line but those that packet logged (its parameter set refused, later slices
    fail on "non-existing PPS 0 referenced", as the first did), are that feature's, not damage; a failure with a
    line of its own ("huffman table decode error") is damage. Fills the report's `ffmpeg_unsupported`,
    `unsupported_packets`, `unsupported_errors` and the last line of damage (`ffmpeg_last_error`). Fixes: an h264
    stream of 10-bit luma and 8-bit chroma (valid H.264, which FFmpeg's decoder lacks) was 'corrupt: ... 12 damaged
    packets; re-download': its feature's line is a warning, and the error lines after it hid it."""

    def __init__(self, report: DecodeReport, errors_before: int) -> None:
        self.report, self.errors_before, self.errors_noted = report, errors_before, errors_before
        self.lacking = False  # a feature was said lacking and no frame decoded since
        self.consequences: set[str] = set()  # the error lines of the packets that said so

    def packet(self, lines: list, failed: bool, decoded: bool) -> None:
        """Note one packet's `lines` (from `_ffmpeg_lines`), whether it `failed` to decode, whether frames came."""
        import av

        count, last = av.logging.get_last_error()
        errors, self.errors_noted = count - self.errors_noted, count
        feature = lacked_feature(lines)
        error_lines = {text.strip() for level, _, text in lines if level <= av.logging.ERROR}
        if feature:
            self.report.ffmpeg_unsupported = self.report.ffmpeg_unsupported or feature
            self.lacking, self.consequences = True, self.consequences | error_lines
        if self.lacking and (feature or error_lines <= self.consequences):
            self.report.unsupported_packets += failed
            self.report.unsupported_errors += errors
        elif errors and last:
            self.report.ffmpeg_last_error = _line_words(last[1], last[2])
        if decoded and not feature:
            self.lacking, self.consequences = False, set()


def _sample_aspect(sar, report: DecodeReport):
    """The stream's sample aspect ratio (a pixel's width over its height) as a Fraction when its pixels are not
    square and it is plausible (1/8..8), else None; the report says which. The container's value first (an mp4
    'pasp' box), then the codec's, as ffmpeg's av_guess_sample_aspect_ratio reads them."""
    from fractions import Fraction

    if sar is None or not sar.numerator or not sar.denominator or sar == 1:
        return None
    sar = Fraction(sar.numerator, sar.denominator)
    if not Fraction(1, 8) <= sar <= 8:
        report.sample_aspect_ratio = f"ignored ({sar.numerator}:{sar.denominator}, not a pixel shape any camera makes)"
        return None
    report.sample_aspect_ratio = f"{sar.numerator}:{sar.denominator}"
    return sar


def _square_pixels(rgb: np.ndarray, sar) -> np.ndarray:
    """A frame of non-square pixels (anamorphic footage: DV, HDV, some phones and screen recorders) at the
    size a player shows it: the width times the sample aspect ratio, the height kept (ffmpeg's
    `scale=iw*sar:ih`); INTER_AREA when narrowing, INTER_LINEAR when widening, as every resize here."""
    if sar is None:
        return rgb
    h, w = rgb.shape[:2]
    width = max(1, round(w * sar))
    return cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA if width < w else cv2.INTER_LINEAR)


def _upright(rgb: np.ndarray, frame) -> np.ndarray:
    """The frame as a player shows it: its display matrix applied (a phone held upright or sideways, a
    mirrored front camera), as ffmpeg's autorotate does. PyAV decodes the stored picture; OpenCV turns
    it by the matrix's angle only (mirrors not), and `frame.rotation` reads a mirror as a half turn."""
    import av

    try:
        matrix = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    except ValueError:  # side data of a type this PyAV cannot name (a camera's MJPEG with EXIF in every frame: "31
        # is not a valid Type"; a new-user trial, session 58): none of it readable, but the turn still is (mirrors not)
        return np.ascontiguousarray(np.rot90(rgb, round(frame.rotation / 90) % 4))
    if matrix is None:
        return rgb
    # FFmpeg's 3x3 [a b u; c d v; x y w] (libavutil/display.h): display (x', y') = (a x + c y, b x + d y)
    # + offset, for x along a row and y down; an axis-aligned turn or mirror has a, b, c, d in {-1, 0, 1}.
    a, b, _, c, d = np.frombuffer(bytes(matrix), np.int32)[:5].tolist()
    if abs(b) + abs(c) > abs(a) + abs(d):  # a quarter turn: x' from y and y' from x
        rgb, rows, cols = rgb.transpose(1, 0, 2), b, c
    else:
        rows, cols = d, a
    return np.ascontiguousarray(rgb[::-1 if rows < 0 else 1, ::-1 if cols < 0 else 1])


def _decoder(stream):
    """The stream's decoder: FFmpeg's default for its codec, or the one `DECODERS` names for it."""
    import av

    default = stream.codec_context
    name = default and DECODERS.get(CODEC_OF_DECODER.get(default.codec.name, default.codec.name))
    if not name:
        return default
    chosen = av.CodecContext.create(name, "r")
    chosen.extradata = default.extradata
    return chosen


def _flush(codec_context) -> list:
    """Frames a decoder still holds (none once it was flushed: the demuxer's last packet does that)."""
    import av

    try:
        return codec_context.decode(None)
    except (av.error.FFmpegError, OSError):
        return []


AV_LOG_QUIET = -8  # libavutil/log.h


def _quiet_opencv() -> None:
    """OpenCV's and its bundled FFmpeg's own log lines off: what went wrong with a file is the report's one
    line naming it, not "moov atom not found", a cap.cpp warning or "Could not find decoder" before it.
    OpenCV reads OPENCV_FFMPEG_LOGLEVEL once, when it first uses FFmpeg in a process (a VideoCapture or
    a VideoWriter, the user's own before this reader), and sets AV_LOG_ERROR when it is unset: so the
    level of its FFmpeg (its wheel bundles its own libavutil, beside PyAV's) is also set directly.
    A user who sets OPENCV_FFMPEG_LOGLEVEL or OPENCV_LOG_LEVEL keeps theirs."""
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(AV_LOG_QUIET)) == str(AV_LOG_QUIET):
        _set_opencv_ffmpeg_level(AV_LOG_QUIET)


def _set_opencv_ffmpeg_level(level: int) -> None:
    """av_log_set_level in the FFmpeg OpenCV's binary links (found from its own library); none: nothing to set."""
    import ctypes

    binary = next((p for p in Path(cv2.__file__).parent.glob("cv2*") if p.suffix in (".so", ".pyd")), None)
    try:
        ctypes.CDLL(str(binary)).av_log_set_level(level)  # already loaded: dlopen returns the same handle
    except (OSError, AttributeError):
        pass  # no binary found, or OpenCV built without FFmpeg (or loading it as a plugin): nothing logs


def _opencv_frames(path: Path, threads: int, report: DecodeReport) -> Iterator[tuple[float | None, np.ndarray, float | None]]:
    _quiet_opencv()
    _check_opencv_stream(path, report)
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        raise _NoFrame("cannot open it")
    try:
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").strip("\x00 ")
        report.codec = report.codec or fourcc.lower()
        report.container = report.container or path.suffix.lstrip(".").lower()
        report.header_fps = _rate(cap.get(cv2.CAP_PROP_FPS))
        sar = _sample_aspect(_opencv_sar(cap), report)
        # OpenCV has turned a quarter-turned picture already: its stored rows are now columns
        turned = int(cap.get(cv2.CAP_PROP_ORIENTATION_AUTO)) and int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 180 == 90
        first, zeros = True, []  # frames at 0 ms after the first, until a later time says they were real
        while True:  # (a stream that changes size comes out at its first size: OpenCV scales it: _other_sizes says so)
            ok, frame = cap.read()
            if not ok or frame is None:
                # 0 ms at the end: OpenCV's word for no timestamp (the frames a B-frame decoder hands out when
                # the file ends), not a clock gone back to the start
                yield from ((None, z, None) for z in zeros)
                _other_sizes(path, report)
                return
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            rgb = _square_pixels(rgb.transpose(1, 0, 2), sar).transpose(1, 0, 2) if turned else _square_pixels(rgb, sar)
            ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if ms <= 0 and not first:
                zeros.append(np.ascontiguousarray(rgb))
                continue
            yield from ((0.0, z, None) for z in zeros)  # a clock that did start again at 0 (recordings joined)
            zeros = []
            yield ms / 1000.0, np.ascontiguousarray(rgb), None
            first = False
    finally:
        cap.release()


def _other_sizes(path: Path, report: DecodeReport) -> None:
    """Fill the report's `other_sizes` and `resized_frames` for a file OpenCV read: OpenCV scales every frame to the
    first one's size and cannot say so (PyAV's path counts them itself). PyAV decodes its key frames (a new size
    starts at one) and each packet counts at the size of the key frame before it; a key frame whose header states
    the size of one decoded already (`_stated_size`: a JPEG's start of frame) is not decoded again: an MJPEG, all
    key frames, was decoded whole a second time after OpenCV's decode. Nothing where PyAV cannot open it."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = video_stream(container)
            if stream is None:
                return
            size = first = None
            decoded_at: dict[bytes, str | None] = {}  # a header's stated size -> the size its frame decoded at
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.size:
                    stated = _stated_size(stream.codec_context.name, bytes(packet))
                    if stated is None or stated not in decoded_at:
                        try:
                            decoded = stream.codec_context.decode(packet)
                        except (av.error.FFmpegError, OSError, ValueError):
                            decoded = []
                        found = next((f"{f.width}x{f.height}" for f in decoded), None)
                        if stated is not None and found is not None:
                            decoded_at[stated] = found
                        size = found or size
                    else:
                        size = decoded_at[stated]
                first = first or size
                if packet.size and size != first:
                    report.resized_frames += 1
                    if size not in report.other_sizes:
                        report.other_sizes.append(size)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return


# JPEG start-of-frame markers (ITU T.81 B.1.1.3: SOF0-SOF15 but DHT C4, JPG C8, DAC CC), whose segment states the size
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _stated_size(codec: str, data: bytes) -> bytes | None:
    """The bytes of a packet's header that state its picture's size, read without decoding it: an MJPEG's first
    JPEG start-of-frame segment (precision, height, width, components; a field of an interlaced frame states its
    own height, so these bytes are a key to a decoded size, not the size); None for another codec or where none
    is found."""
    if codec != "mjpeg" or not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        if data[at + 1] == 0xFF:  # a fill byte before a marker
            at += 1
            continue
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker in JPEG_SOF_MARKERS:
            return data[at + 4:at + 10]
        if marker == 0xDA or length < 2:  # the scan starts: no start of frame before it
            return None
        at += 2 + length
    return None


def _opencv_sar(cap):
    """OpenCV's sample aspect ratio of the stream (a Fraction), None when it states none."""
    from fractions import Fraction

    num, den = int(cap.get(cv2.CAP_PROP_SAR_NUM) or 0), int(cap.get(cv2.CAP_PROP_SAR_DEN) or 0)
    return Fraction(num, den) if num > 0 and den > 0 else None


ANIMATED_PICTURES = ("WEBP", "GIF", "PNG")  # Pillow's formats whose frames state their delays (PNG: APNG)


def _pillow_frames(path: Path, threads: int, report: DecodeReport) -> Iterator[tuple[float | None, np.ndarray, float | None]]:
    """An animated picture Pillow reads and this FFmpeg does not: an animated WebP (FFmpeg's webp decoder reads
    still pictures only; PyAV called one corrupt and OpenCV read its first frame, a new-user trial, session 58).
    Each frame's time from the delays the file states (ms), its last frame held its own delay. Transparent
    pixels are shown on black, as FFmpeg shows an animated GIF's."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        picture = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise _NoFrame("not a picture it reads") from err
    with picture:
        if not getattr(picture, "is_animated", False) or picture.format not in ANIMATED_PICTURES:
            raise _NoFrame("not an animated picture")  # (a multi-page TIFF states no frame times: pages, not a video)
        report.container = report.codec = (picture.format or "").lower()
        report.listed_frames = picture.n_frames
        t, promised = 0.0, 0.0
        for frame in ImageSequence.Iterator(picture):
            rgba = np.asarray(frame.convert("RGBA"))  # loads the frame, which sets its delay in `info`
            duration_s = max(float(frame.info.get("duration") or 0), 0.0) / 1000 or None
            alpha = rgba[..., 3:].astype(np.uint16)
            yield t, np.ascontiguousarray((rgba[..., :3] * alpha // 255).astype(np.uint8)), duration_s
            t += duration_s or 0.0
            promised = t
        report.promised_s = promised or None


def animated_picture(path: Path) -> str | None:
    """Pillow's name for the format of `path` when it is an animated picture ("WEBP"), else None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            animated = getattr(picture, "is_animated", False) and picture.format in ANIMATED_PICTURES
            return picture.format if animated else None
    except (UnidentifiedImageError, OSError, ValueError):
        return None


SOURCES = {"pyav": _pyav_frames, "opencv": _opencv_frames, "pillow": _pillow_frames}


def listed_shown_frames(path: str | Path, report: DecodeReport) -> int | None:
    """The frames the container lists (`report.listed_frames`) less those its edit list hides: packets
    before the start an mp4/mov edit list sets, which libavformat marks discard and no player shows (a
    file cut with `ffmpeg -ss ... -c copy` keeps them). Read by demuxing, no decoding; None where the
    container lists none. A recording aligned by its frame count needs this count, the one that decodes."""
    if not report.listed_frames:
        return None
    if report.backend != "pyav" or report.video_stream is None:
        return report.listed_frames
    import av

    hidden = 0
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(container.streams[report.video_stream]):
                hidden += bool(packet.size and packet.is_discard)
    except (av.error.FFmpegError, OSError):  # a cut file demuxes what is there: the hidden ones come first
        pass
    return max(report.listed_frames - hidden, 0) or None


def _rate(value) -> float | None:
    try:
        rate = float(value) if value is not None else 0.0
    except (TypeError, ZeroDivisionError):
        return None
    return rate if 0 < rate < 10_000 else None


def video_stream(container):
    """The video stream ffmpeg reads by default (fftools' map_auto_video): never an attached picture (cover
    art, a thumbnail), nor a stream listing one frame beside others; then one flagged default, then the most
    pixels; the first of equals. None when the file holds no video stream but attached pictures."""
    import av

    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        return None
    return max(moving, key=lambda s: (s.frames != 1, bool(s.disposition & av.stream.Disposition.default),
                                      _pixels(s)))


def _pixels(stream) -> int:
    """Width x height of a video stream; 0 where FFmpeg has no decoder for its codec (PyAV then gives
    the stream no codec context, and its width and height raise AttributeError)."""
    if stream.codec_context is None:
        return 0
    return (stream.width or 0) * (stream.height or 0)


def _check_opencv_stream(path: Path, report: DecodeReport) -> None:
    """OpenCV reads the first video stream, whatever it is: refuse a file where that is not the video
    (as PyAV, which opens more than it decodes, lists its streams), and count its video streams."""
    import av

    try:
        with av.open(str(path)) as container:  # indices and words taken while it is open (streams die with it)
            chosen = video_stream(container)
            chosen = None if chosen is None else (chosen.index, _stream_words(chosen))
            streams = [(s.index, _stream_words(s)) for s in container.streams.video]
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return  # PyAV cannot list its streams: OpenCV reads what it finds
    if streams and chosen is None:
        raise _NoFrame(NO_VIDEO_ONLY_PICTURE)
    if chosen is not None and chosen != streams[0]:
        raise _NoFrame(f"it reads only the first of the {len(streams)} video streams (#{streams[0][0]}, "
                       f"{streams[0][1]}), not the video (#{chosen[0]}, {chosen[1]})")
    report.video_stream = streams[0][0] if streams else None
    report.num_video_streams = len(streams)


def _stream_words(stream) -> str:
    """'64x64 h264', '32x32 mjpeg attached picture'."""
    import av

    still = " attached picture" if stream.disposition & av.stream.Disposition.attached_pic else ""
    if stream.codec_context is None:  # no decoder for its codec here: no size either
        return f"a codec this FFmpeg cannot decode{still}"
    return f"{stream.width}x{stream.height} {stream.codec_context.name}{still}"


def _promised_duration(container, stream) -> float | None:
    """Seconds of video the container promises: the stream's duration, its DURATION tag, or the file's."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", stream.metadata.get("DURATION", "").strip())
    if tag:
        stated = int(tag[1]) * 3600 + int(tag[2]) * 60 + float(tag[3])
    elif container.duration and len(container.streams) == 1:
        stated = container.duration / 1e6
    else:
        return None
    start = (float(stream.start_time * stream.time_base) if stream.start_time is not None
             else (container.start_time or 0) / 1e6)
    # Matroska states its end time, MP4 its length: with a late start, take the shorter reading.
    return min(stated, stated - start) if start > 0 else stated


def _container_name(fmt: str) -> str:
    """FFmpeg's "mov,mp4,m4a,3gp,3g2,mj2" -> "mp4/mov" for messages."""
    first = fmt.split(",")[0]
    return {"mov": "mp4/mov", "matroska": "matroska/webm"}.get(first, first)


def _ffmpeg_reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)


def _duration_s(frame) -> float | None:
    """The frame's duration as its container states it (mp4's sample, Matroska's block), None if none."""
    duration, time_base = getattr(frame, "duration", None), frame.time_base
    return float(duration * time_base) if duration and time_base else None
