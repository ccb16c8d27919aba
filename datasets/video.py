"""Read video files as RGB frames on a step clock: the one video reader of every stage.

    from worldloom.datasets.video import VideoReader, read_video
    with VideoReader("clip.mp4", fps=20) as reader:           # opens it and decodes its first frame
        for start, frames in reader.chunks(chunk_steps=2400):  # (n, H, W, 3) uint8 RGB, n <= chunk_steps
            ...
    reader.report      # DecodeReport: backend, container, codec, timestamps, frames decoded vs promised
    frames, report = read_video("clip.mp4", fps=20)            # every step at once (tests, benchmarks)
    VideoReader("rec.mp4", timing="frames")                    # one step per decoded frame (recordings
                                                               # whose actions are logged per frame)

Time comes from presentation timestamps (`RESAMPLING`). Frame i is on screen from
t_i = (pts_i - pts_0) * time_base seconds until the next frame; libavformat has already applied
the container's edit list, the B-frame reordering and the start offset. The pts is ffmpeg's best-effort
one (`_BestEffortClock`): a file whose pts go backwards in display order (an .avi of B-frames, whose pts are
packet numbers in decode order) is timed by its dts, as ffmpeg and OpenCV time it. Step k shows the frame on
screen at k / fps seconds, the last one with t_i <= k / fps (what `ffmpeg -vf fps=F:round=down`
gives), and steps end as ffmpeg's fps filter ends them: the last step is the last whose whole interval
fits before the end of the last frame (its start plus its duration where the container states one, a
last frame held for a second included, else the interval before it). So variable frame rates, jittered timestamps, a missing or wrong header
rate and a non-zero start all give, at each step, the frame a viewer saw then; frames are never
blended, and are upright and as wide as a player shows them (a display matrix, a phone video's rotation or a
mirror, is applied as ffmpeg's autorotate does; non-square pixels, a sample aspect ratio such as anamorphic
DV's or HDV's, are widened or narrowed to square ones, ffmpeg's `scale=iw*sar:ih`, before the turn). A frame with no timestamp, or one not after the
previous frame's, is placed one header-rate interval after the previous frame: a video with no usable timestamps is timed by its
header rate, and the report's warnings say so. With `timing="frames"` every decoded frame is one
step, in decode order, whatever its timestamp: what a recording with one logged action per frame
needs (VPT's jsonl lines, MineRL's npz rows), and what VPT's own loader does (cv2 reads frame by
frame).

Backends: PyAV (its FFmpeg decodes AV1 with dav1d, VP9, HEVC, ...) first, then OpenCV when PyAV
cannot open the file or decodes no frame of it (OpenCV gives each frame's time in ms). An image
file (a PNG or JPEG named .mp4) is a `VideoError` naming it, not a one-frame video. When no
backend decodes a frame, `VideoError` names the cause: no such file, an empty file, no video
stream (an audio-only file), a codec no installed decoder reads (with the container, the codec
and what to install; a decoder that answers "not implemented", ENOSYS, counts as none: FFmpeg's native
av1 decoder, all a PyAV built without dav1d has, needs hardware acceleration), not a video file, or "corrupt" when a decoder exists and the bytes do not
decode (or the container's own structure is broken).

Streams: the video stream read is the one ffmpeg reads by default (`video_stream`): never an attached
picture (the cover art of an .m4a, a downloaded video's thumbnail; a stream listing one frame beside
others counts as one), then one flagged default, then the most pixels. A file with only an attached
picture has "no video stream (only an attached picture)". OpenCV reads the first video stream, whatever
it is: it is not used on a file whose first is not the one to read, and where a file holds several the
report's warnings say so.

Truncation: a file whose decoded frames cover less time than its container promises (the video
stream's duration, its DURATION tag, or the file's duration) by more than two frame intervals is
reported as truncated (`DecodeReport.truncated`; PyAV only, OpenCV states no reliable promise),
with the frames its container lists (or its duration implies) against the frames decoded. A
container that lists more frames than decode while the time is covered (an edit list that trims
the start) is not truncated.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from worldloom.actions import FPS

# A folder's video files, by suffix: phones' and cameras' own (.3gp, AVCHD's .mts/.m2ts, .mxf, .dv),
# raw streams (.h264, timed by the header rate) and the common ones. Its other files and hidden ones
# (macOS's `._clip.mp4` beside a copied clip is no video) are left out, and counted (`video_files`).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".gif",
                  ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".vob", ".dv", ".asf", ".f4v", ".y4m",
                  ".h264", ".264", ".h265", ".265", ".hevc")
BACKENDS = ("pyav", "opencv")
NO_VIDEO_ONLY_PICTURE = "no video stream (only an attached picture)"
RESAMPLING = ("presentation timestamps: step k shows the last frame with time <= k / fps "
              "(ffmpeg -vf fps, round down); frames without a usable timestamp are placed at the header rate")
PER_FRAME = "one step per decoded frame, in decode order (timestamps only time the report)"
TIMINGS = ("timestamps", "frames")
DEFAULT_FPS = float(FPS)  # when a video gives no rate at all and none is asked: the game's
# `--fps` of `dataset ingest` and `idm label`: a step rate to resample footage to (the game's is 20;
# 240 is the fastest common camera rate).
FPS_RANGE = (1, 240)
TIME_EPS_S = 1e-6  # timestamps within a microsecond of a step's time count as on screen at it
# Decoders to use instead of FFmpeg's default for a codec, e.g. {"av1": "libaom-av1"}: empty, FFmpeg's choice
# (tests name the native "av1" decoder, which needs hardware acceleration, as a PyAV without dav1d has it).
DECODERS: dict[str, str] = {}
# Decoder names -> the codec they decode (the report names the codec, not the library).
CODEC_OF_DECODER = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx": "vp8", "libvpx-vp9": "vp9", "libopenh264": "h264"}
# First bytes of container formats: a file that starts like one and does not open is corrupt.
CONTAINER_MAGIC = ((4, b"ftyp", "MP4/MOV"), (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"), (0, b"RIFF", "AVI"),
                   (0, b"GIF8", "GIF"), (0, b"\x00\x00\x01\xba", "MPEG-PS"), (0, b"FLV", "FLV"),
                   (0, b"\x30\x26\xb2\x75", "ASF/WMV"))


def files_under(folder: Path) -> list[Path]:
    """Every file under `folder`, sorted, through symlinked folders too (recordings are often gathered as
    links to other disks; `Path.rglob` silently skips them), each real folder read once, never a link
    back to a folder that holds it (a loop)."""
    files, seen = [], set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []  # reached again through another link
            continue
        seen.add(real)
        inside = [os.path.realpath(os.path.join(top, d)) for d in dirs]
        dirs[:] = sorted(d for d, target in zip(dirs, inside, strict=True)
                         if not (real == target or real.startswith(target.rstrip(os.sep) + os.sep)))
        files.extend(Path(top, name) for name in names if os.path.isfile(os.path.join(top, name)))
    return sorted(files)


def video_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(the video files under `folder`, by suffix; its other files, left out), each sorted."""
    files = files_under(folder)
    hidden = {p for p in files if any(part.startswith(".") for part in p.relative_to(folder).parts)}
    videos = [p for p in files if p not in hidden and p.suffix.lower() in VIDEO_SUFFIXES]
    return videos, [p for p in files if p not in videos]


def left_out_words(folder: Path, left_out: list[Path]) -> str:
    """'left out 3 files of videos/ that are not videos by their suffix (.json 2, .webp 1; hidden 1); ...'."""
    counts: dict[str, int] = {}
    for p in left_out:
        key = "hidden" if any(part.startswith(".") for part in p.relative_to(folder).parts) else p.suffix or "no suffix"
        counts[key] = counts.get(key, 0) + 1
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    return (f"left out {len(left_out)} file(s) of {folder} not named as videos ({kinds}); "
            "pass one as the input to read it anyway")


class VideoError(ValueError):
    """A video file that cannot be read: the message names the file and the cause."""


class _NoFrame(Exception):
    """A backend that opened nothing or decoded no frame (the reader tries the next one)."""


@dataclass
class DecodeReport:
    """What decoding one file found; filled while it is read (final once the last step is read)."""

    path: str
    backend: str = ""  # "pyav" | "opencv": the backend that decoded the frames
    container: str = ""  # FFmpeg's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str = ""  # e.g. "h264", "av1"
    width: int = 0
    height: int = 0
    header_fps: float | None = None  # the rate the header states (r_frame_rate); used only for untimed frames
    listed_frames: int | None = None  # frames the container lists (an mp4 sample table), None when it lists none
    promised_s: float | None = None  # the time the container promises, None when it states none
    decoded_frames: int = 0
    decoded_s: float = 0.0  # time the decoded frames cover, from the first frame's start to the last's end
    num_untimed: int = 0  # frames placed at the header rate (no timestamp, or not after the previous frame's)
    decode_errors: int = 0  # packets that did not decode (skipped)
    unsupported: str = ""  # the decoder's "not implemented" (ENOSYS): it cannot decode this stream here, e.g.
    # FFmpeg's native av1 decoder, which needs hardware acceleration; not damage
    ffmpeg_errors: int = 0  # error messages FFmpeg logged while reading it: damaged or cut-short data
    ffmpeg_last_error: str = ""  # the last of them, e.g. "matroska,webm: File ended prematurely"
    num_steps: int = 0
    sample_aspect_ratio: str = ""  # the pixels' shape where not square ("4:3": widened to square pixels), else ""
    video_stream: int | None = None  # the container's index of the stream read (None: OpenCV's, unknown)
    num_video_streams: int | None = None  # video streams in the file, attached pictures included (None: unknown)
    tried: list[str] = field(default_factory=list)  # backends tried before `backend`, and why they gave nothing

    @property
    def timestamps(self) -> str:
        """'pts', 'header rate' (none usable) or 'pts, N frames at the header rate'."""
        if self.decoded_frames > 1 and self.num_untimed >= self.decoded_frames - 1:
            return "header rate"
        return "pts" if not self.num_untimed else f"pts, {self.num_untimed} frames at the header rate"

    @property
    def truncated(self) -> bool:
        """The decoded frames cover less time than the container promises (by more than 2 frame intervals)."""
        if self.promised_s is None or not self.decoded_frames:
            return False
        return self.decoded_s + 2 * self.decoded_s / self.decoded_frames + 1e-3 < self.promised_s

    @property
    def expected_frames(self) -> int | None:
        """The frames the container lists, or that its promised time holds at the decoded rate."""
        if self.listed_frames:
            return self.listed_frames
        if self.promised_s is None or not self.decoded_s:
            return None
        return round(self.promised_s * self.decoded_frames / self.decoded_s)

    def truncation(self) -> str:
        """'decoded 9 of the 40 frames its container lists (0.45 of 2.00 s)'; '' when not truncated."""
        if not self.truncated:
            return ""
        how = "lists" if self.listed_frames else "implies"
        return (f"decoded {self.decoded_frames} of the {self.expected_frames} frames its container {how} "
                f"({self.decoded_s:.2f} of {self.promised_s:.2f} s)")

    def warnings(self) -> list[str]:
        """One line per thing a user should know about this decode (empty when all went as stated)."""
        out = []
        if self.truncated:
            out.append(f"truncated: {self.truncation()}")
        if self.timestamps == "header rate":
            out.append(f"no usable timestamps: frames timed by the header rate ({self.header_fps or 'none'} fps)")
        elif self.num_untimed:
            out.append(f"{self.num_untimed} of {self.decoded_frames} frames had no usable timestamp "
                       f"(missing, or not after the previous frame's): placed at the header rate")
        if self.backend == "opencv" and (self.num_video_streams or 0) > 1:
            out.append(f"{self.num_video_streams} video streams: OpenCV, which read it, cannot choose one and read the "
                       f"first (#{self.video_stream}, the one ffmpeg picks too); the others were left out")
        if self.sample_aspect_ratio.startswith("ignored"):
            out.append(f"sample aspect ratio {self.sample_aspect_ratio}: frames kept at their stored size")
        if self.decode_errors:
            out.append(f"{self.decode_errors} packets did not decode and were skipped")
        if self.ffmpeg_errors and not self.truncated:
            out.append(f"damaged or cut short: FFmpeg reported {self.ffmpeg_errors} error(s) reading it (last: "
                       f"{self.ffmpeg_last_error}); frames may be missing or broken (re-download or re-export it)")
        return out

    def to_json(self) -> dict:
        return {**asdict(self), "timestamps": self.timestamps, "truncated": self.truncated,
                "expected_frames": self.expected_frames}


# ---- backends: each yields (time in seconds or None, RGB frame, its stated duration in seconds or None),
# filling the report ------------------------------------------------------------------------------

def _pyav_frames(path: Path, threads: int, report: DecodeReport) -> Iterator[tuple[float | None, np.ndarray]]:
    import av
    from av.video.reformatter import VideoReformatter

    av.logging.set_level(av.logging.PANIC)  # damaged packets are counted in the report, not printed
    errors_before = av.logging.get_last_error()[0]  # FFmpeg's error lines so far, counted even when not printed
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise _NoFrame(f"cannot open it ({_ffmpeg_reason(err)})") from None
    with container, _counting_errors(report, errors_before):
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
        sar = _sample_aspect(stream.sample_aspect_ratio or codec_context.sample_aspect_ratio, report)
        codec_context.thread_count = threads  # slice threads (PyAV's default): frame threads dropped frames
        # around a damaged packet here (9 instead of 11 of a cut file) and add latency
        reformatter = VideoReformatter()  # reused: 2x faster than a new conversion per frame
        size: tuple[int, int] | None = None
        packets, num_frames, clock, ending = container.demux(stream), 0, _BestEffortClock(), False
        while not ending:
            try:
                frames = codec_context.decode(next(packets))
            except StopIteration:
                frames, ending = _flush(codec_context), True  # the frames still in the decoder if the demuxer stopped early
            except av.error.NotImplementedError as err:  # ENOSYS: the decoder cannot do it here; the bytes may be fine
                report.unsupported = f"{codec_context.codec.name}: {err.strerror}"
                if not num_frames:
                    raise _NoFrame(f"its {report.codec} decoder ({report.unsupported}) cannot decode it here "
                                   "(a decoder that needs hardware acceleration, or a feature this FFmpeg lacks)") from None
                report.decode_errors += 1
                continue
            except (av.error.FFmpegError, OSError):
                report.decode_errors += 1  # a damaged packet: skip it (a truncated file ends soon after)
                continue
            num_frames += len(frames)
            for frame, t in clock.timed(frames, flush=ending):
                size = size or (frame.width, frame.height)  # a stream that changes size keeps its first size
                resize = {} if (frame.width, frame.height) == size else {"width": size[0], "height": size[1]}
                rgb = _square_pixels(reformatter.reformat(frame, format="rgb24", **resize).to_ndarray(), sar)
                yield t, _upright(rgb, frame), _duration_s(frame)


class _BestEffortClock:
    """Each decoded frame's time in seconds as ffmpeg's best-effort timestamp gives it (libavcodec's
    guess_correct_pts: the frame's pts, or its packet's dts once pts have gone backwards more often than
    dts), which ffmpeg's CLI and OpenCV use. A PyAV frame's pts is the raw one: an .avi (no pts of its own:
    the demuxer numbers packets in decode order) of H.264 or MPEG-4 with B-frames gives frames in display
    order whose pts run 1, 3, 2, 5, 4, ..., while their dts count 2, 3, 4, ...; read as pts, frames were
    shown twice and others dropped. The first `LOOKAHEAD` frames are held until the choice is known, so the
    video's start is timed as its rest (ffmpeg times the frames before the first backward pts by their pts)."""

    LOOKAHEAD = 16  # frames: more than any B-frame pyramid's reordering

    def __init__(self) -> None:
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
        by_dts = self.faulty_pts > self.faulty_dts or pts is None
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
def _counting_errors(report: DecodeReport, errors_before: int) -> Iterator[None]:
    """Fill the report's count of FFmpeg's error lines once reading stops. A file cut short where its
    container states no length (a crashed recorder's mkv, a cut .ts or .gif, a fragmented mp4) decodes
    what it holds without an exception; only FFmpeg's log says so ("File ended prematurely",
    "LZW decode failed", a broken last macroblock). Whole files log none."""
    import av

    try:
        yield
    finally:
        count, last = av.logging.get_last_error()
        report.ffmpeg_errors = count - errors_before
        if report.ffmpeg_errors and last:
            report.ffmpeg_last_error = f"{last[1]}: {last[2].strip()}"


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

    matrix = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
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
    """OpenCV's and its bundled FFmpeg's own log lines off (errors kept): what went wrong with a file is
    the report's one line naming it, not "moov atom not found" and a cap.cpp warning before it.
    OpenCV reads OPENCV_FFMPEG_LOGLEVEL once, when it first uses FFmpeg in a process (a VideoCapture or
    a VideoWriter, the user's own before this reader), and sets AV_LOG_ERROR when it is unset: so the
    level of its FFmpeg (its wheel bundles its own libavutil, beside PyAV's) is also set directly.
    A user who sets OPENCV_FFMPEG_LOGLEVEL or OPENCV_LOG_LEVEL keeps theirs."""
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
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


def _opencv_frames(path: Path, threads: int, report: DecodeReport) -> Iterator[tuple[float | None, np.ndarray]]:
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
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            rgb = _square_pixels(rgb.transpose(1, 0, 2), sar).transpose(1, 0, 2) if turned else _square_pixels(rgb, sar)
            yield cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, np.ascontiguousarray(rgb), None
    finally:
        cap.release()


def _opencv_sar(cap):
    """OpenCV's sample aspect ratio of the stream (a Fraction), None when it states none."""
    from fractions import Fraction

    num, den = int(cap.get(cv2.CAP_PROP_SAR_NUM) or 0), int(cap.get(cv2.CAP_PROP_SAR_DEN) or 0)
    return Fraction(num, den) if num > 0 and den > 0 else None


SOURCES = {"pyav": _pyav_frames, "opencv": _opencv_frames}


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
                                      (s.width or 0) * (s.height or 0)))


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

    name = stream.codec_context.name if stream.codec_context else "unknown codec"
    still = " attached picture" if stream.disposition & av.stream.Disposition.attached_pic else ""
    return f"{stream.width}x{stream.height} {name}{still}"


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


# ---- time: timestamps -> step clock ----------------------------------------------------------

def _timed(frames: Iterator[tuple[float | None, np.ndarray, float | None]], report: DecodeReport,
           fallback_fps: float) -> Iterator[tuple[float, np.ndarray, float | None]]:
    """(time since the first frame in seconds, frame, its stated duration): missing or non-increasing
    times at the header rate."""
    interval = 1.0 / (report.header_fps or fallback_fps)
    origin, last = None, 0.0
    for t, frame, duration_s in frames:
        if origin is None:
            origin, now = (t if t is not None else 0.0), 0.0
        elif t is None or t - origin <= last:
            now = last + interval
            report.num_untimed += 1
        else:
            now = t - origin
        report.decoded_frames += 1
        last = now
        yield now, frame, duration_s


def _end_s(last_t: float, duration_s: float | None, interval: float | None, report: DecodeReport, fps: float) -> float:
    """When the last frame leaves the screen: its start plus its own duration where the container states
    one (a recorder that holds the last frame for a second says so), else the interval before it, else
    one header-rate interval. ffmpeg's fps filter ends the stream at the same time."""
    return last_t + (duration_s or interval or 1.0 / (report.header_fps or fps))


def _each_frame(timed: Iterator[tuple[float, np.ndarray, float | None]], fps: float,
                report: DecodeReport) -> Iterator[np.ndarray]:
    """Every decoded frame as one step; the time they cover is measured as `_steps` measures it."""
    prev_t, interval, duration_s = None, None, None
    for t, frame, stated_s in timed:
        if prev_t is not None:
            interval = t - prev_t
        prev_t, duration_s = t, stated_s
        report.num_steps += 1
        yield frame
    if prev_t is not None:
        report.decoded_s = _end_s(prev_t, duration_s, interval, report, fps)


def _steps(timed: Iterator[tuple[float, np.ndarray, float | None]], fps: float,
           report: DecodeReport) -> Iterator[np.ndarray]:
    """Step k's frame: the last one whose time is <= k / fps. Steps end with the last frame: the last
    step is the last whose whole interval fits before that frame's end (`_end_s`), as ffmpeg's fps filter
    rounds the end down to its clock; a video shorter than one step has one."""
    k, prev, prev_t, interval, duration_s = 0, None, 0.0, None, None
    waiting: list[np.ndarray] = []  # steps whose frame is known, not yet whether the video lasts their interval
    for t, frame, stated_s in timed:
        if prev is not None:
            interval = t - prev_t
            while (k + len(waiting)) / fps + TIME_EPS_S < t:  # the step's time comes before this frame appears
                waiting.append(prev)
            while waiting and (k + 1) / fps <= t + TIME_EPS_S:  # the video lasts the step's whole interval
                yield waiting.pop(0)
                k += 1
                report.num_steps = k
        prev, prev_t, duration_s = frame, t, stated_s
    if prev is None:
        return
    end = report.decoded_s = _end_s(prev_t, duration_s, interval, report, fps)
    while (k + 1) / fps <= end + TIME_EPS_S or k == 0:
        yield waiting.pop(0) if waiting else prev
        k += 1
        report.num_steps = k


def _duration_s(frame) -> float | None:
    """The frame's duration as its container states it (mp4's sample, Matroska's block), None if none."""
    duration, time_base = getattr(frame, "duration", None), frame.time_base
    return float(duration * time_base) if duration and time_base else None


# ---- the reader ------------------------------------------------------------------------------

class VideoReader:
    """One video file as frames on a step clock of `fps` steps per second (None: the header rate),
    or, with `timing="frames"`, one step per decoded frame."""

    def __init__(self, path: str | Path, fps: float | None = None, threads: int = 0,
                 backends: tuple[str, ...] = BACKENDS, timing: str = "timestamps") -> None:
        if timing not in TIMINGS:
            raise ValueError(f"timing must be one of {TIMINGS}, got {timing!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: the file is empty (0 bytes)")
        tried: list[str] = []
        reports: dict[str, DecodeReport] = {}
        for name in backends:
            report = reports[name] = DecodeReport(str(self.path), backend=name, tried=list(tried))
            frames = SOURCES[name](self.path, threads, report)
            try:
                first = next(frames)
            except (_NoFrame, StopIteration) as err:
                tried.append(f"{name}: {str(err) or 'decoded no frame'}")
                continue
            report.width, report.height = first[1].shape[1], first[1].shape[0]
            still = _still_image(self.path, report)
            if still:
                frames.close()
                raise VideoError(f"{self.path}: a {still.removesuffix('_pipe').upper()} image, not a video (FFmpeg "
                                 f"reads one still picture from it, as {still}); pass a video file, or give it its "
                                 "image suffix to leave it out of a folder")
            self.report = report
            self.fps = float(fps) if fps else (report.header_fps or DEFAULT_FPS)
            timed = _timed(itertools.chain([first], frames), report, self.fps)
            self._frames = frames
            self._steps = (_steps if timing == "timestamps" else _each_frame)(timed, self.fps, report)
            return
        raise VideoError(diagnose(self.path, tried, reports))

    def steps(self) -> Iterator[np.ndarray]:
        """Each step's frame (H, W, 3) uint8 RGB, in order."""
        return self._steps

    def chunks(self, chunk_steps: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first step, frames (n, H, W, 3) uint8 RGB) of at most `chunk_steps` steps."""
        start = 0
        while chunk := list(itertools.islice(self._steps, chunk_steps)):
            yield start, np.stack(chunk)
            start += len(chunk)

    def close(self) -> None:
        self._steps.close()
        self._frames.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _still_image(path: Path, report: DecodeReport) -> str | None:
    """FFmpeg's format name when the file is one still picture (png_pipe, jpeg_pipe, webp_pipe, ...), whatever its
    suffix says, else None. Moving pictures have their own formats (gif, apng, mjpeg) and are videos."""
    container = report.container
    if report.backend != "pyav":  # OpenCV names no format: ask PyAV's FFmpeg
        import av

        try:
            with av.open(str(path)) as probe:
                container = probe.format.name
        except (av.error.FFmpegError, OSError, UnicodeDecodeError):
            return None
    return container if container.endswith("_pipe") else None


def read_video(path: str | Path, fps: float | None = None, **kwargs) -> tuple[np.ndarray, DecodeReport]:
    """Every step of a video, (N, H, W, 3) uint8 RGB, and its decode report."""
    with VideoReader(path, fps, **kwargs) as reader:
        frames = np.stack(list(reader.steps()))
    return frames, reader.report


# ---- why nothing decoded -----------------------------------------------------------------------

def diagnose(path: Path, tried: list[str], reports: dict[str, DecodeReport]) -> str:
    """The one-line cause of a file no backend decoded, and what to do."""
    how = "; ".join(tried)
    try:
        import av

        with av.open(str(path)) as container:
            fmt = _container_name(container.format.name)
            kinds = [f"{s.type} ({s.codec_context.name if s.codec_context else '?'}"
                     f"{', attached picture' if s.disposition & av.stream.Disposition.attached_pic else ''})"
                     for s in container.streams]
            stream = video_stream(container)
            if stream is None and container.streams.video:
                return (f"{path}: {NO_VIDEO_ONLY_PICTURE}; the {fmt} file holds {', '.join(kinds)}: its picture is "
                        "cover art or a thumbnail, not footage")
            if stream is None:
                return f"{path}: no video stream (the {fmt} file holds {', '.join(kinds) or 'no streams'})"
            decoder = stream.codec_context.codec.name if stream.codec_context else None
            codec = CODEC_OF_DECODER.get(decoder, decoder) or getattr(stream, "codec_tag", "") or "unknown"
            listed = int(stream.frames)
    except Exception as err:  # noqa: BLE001 - any failure to open means FFmpeg knows no container here
        kind = _container_by_magic(path)
        if kind:
            return (f"{path}: corrupt or truncated {kind} file (FFmpeg: {_ffmpeg_reason(err)}; {how}); "
                    "re-download or re-export it")
        return f"{path}: not a video file (FFmpeg and OpenCV recognise no video format in it)"
    pyav = reports.get("pyav")
    if decoder is None or (pyav is None and "opencv" in reports):
        installed = "PyAV's FFmpeg has none" if decoder is None else f"PyAV has one ({decoder}) but was not tried"
        return (f"{path}: a {fmt} file with {codec} video that no tried decoder reads ({how}; {installed}); "
                f"install a decoder for {codec}: `pip install --upgrade av` (PyAV's wheels decode AV1 with dav1d, "
                "VP9, HEVC) or an FFmpeg build that has it")
    if pyav is not None and pyav.unsupported:
        return (f"{path}: a {fmt} file with {codec} video that no tried decoder reads ({how}); the file may well be "
                f"whole: install a software decoder for {codec}: `pip install --upgrade av` (PyAV's "
                "wheels decode AV1 with dav1d, VP9, HEVC) or an FFmpeg build that has one")
    if pyav is not None and pyav.decode_errors:
        return (f"{path}: corrupt: its {codec} video ({fmt}) does not decode ({pyav.decode_errors} damaged packets; "
                f"{how}); re-download or re-export it")
    if listed == 0:
        return f"{path}: the {codec} video stream of this {fmt} file holds no frames (zero-length video)"
    return f"{path}: no frame of its {codec} video ({fmt}) decoded ({how}); re-download or re-export it"


def _container_by_magic(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    return next((name for offset, magic, name in CONTAINER_MAGIC if head[offset:offset + len(magic)] == magic), None)
