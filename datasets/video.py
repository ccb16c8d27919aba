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
packet numbers in decode order) is timed by its dts, as ffmpeg and OpenCV time it; so is an .avi whose pts do not go
back more often than its dts (no B-frames): its dts are its chunk numbers, the time (empty chunks where a variable
rate has no frame), where libavformat's guessed pts give an H.264 frame the next one's dts. Step k shows the frame on
screen at k / fps seconds, the last one with t_i <= k / fps (what `ffmpeg -vf fps=F:round=down`
gives), and steps end as ffmpeg's fps filter ends them: the last step is the last whose whole interval
fits before the end of the last frame (its start plus its duration where the container states one, a
last frame held for a second included, else the interval before it; never past the end the container promises,
where the last frame starts before it: a B-frame decoder can hand the last frame another packet's duration). So variable frame rates, jittered timestamps, a missing or wrong header
rate and a non-zero start all give, at each step, the frame a viewer saw then; frames are never
blended, and are upright and as wide as a player shows them (a display matrix, a phone video's rotation or a
mirror, is applied as ffmpeg's autorotate does; non-square pixels, a sample aspect ratio such as anamorphic
DV's or HDV's, are widened or narrowed to square ones, ffmpeg's `scale=iw*sar:ih`, before the turn). A frame with no timestamp is placed one header-rate interval after the
previous frame: a video with no usable timestamps is timed by its header rate. A frame whose timestamp equals
the previous one's replaces it on screen (the later is shown, as ffmpeg's fps filter shows it); timestamps that
go back are a reset where the frames after go on from the new time (recordings joined, `cat a.ts b.ts`: each part
keeps its own timing, joined one frame after the part before) and one misstamped frame, placed between its
neighbours, where they go on from the old. The report's warnings say each. With `timing="frames"` every decoded frame is one
step, in decode order, whatever its timestamp: what a recording with one logged action per frame
needs (VPT's jsonl lines, MineRL's npz rows), and what VPT's own loader does (cv2 reads frame by
frame).

Backends: PyAV (its FFmpeg decodes AV1 with dav1d, VP9, HEVC, ...) first, then OpenCV when PyAV
cannot open the file, decodes no frame of it or fails on it (OpenCV gives each frame's time in ms), then
Pillow for an animated picture FFmpeg reads one still picture of (an animated WebP; its frames' delays). A
backend whose decoder cannot go on past some frame (FFmpeg's "not yet implemented": a 16-bit APNG's blended
frames) is no damage: the next backend that reads the file further gives the rest, on the same clock. Nor is a
packet that fails after FFmpeg said its decoder lacks a feature (a warning such as "Different chroma and luma bit
depth is not implemented", or an error line, then errors it leads to: FFmpeg's lines are read per packet). An image
file (a PNG or JPEG named .mp4) is a `VideoError` naming it, not a one-frame video. When no
backend decodes a frame, `VideoError` names the cause: no such file, an empty file, no video
stream (an audio-only file), a codec no installed decoder reads (with the container, the codec
and what to install; a decoder that answers "not implemented", ENOSYS, counts as none: FFmpeg's native
av1 decoder, all a PyAV built without dav1d has, needs hardware acceleration), not a video file, or "corrupt" when a decoder exists and the bytes do not
decode (or the container's own structure is broken), "truncated" where the container's own sizes (an MP4's
top-level box, a Matroska Segment, an AVI's RIFF chunk, a GIF's blocks, a YUV4MPEG2 frame) run past the file's end,
or the file's end cut the first video packet (libavformat flags a packet it read short: an .flv cut in its first frame).

Streams: the video stream read is the one ffmpeg reads by default (`video_stream`): never an attached
picture (the cover art of an .m4a, a downloaded video's thumbnail; a stream listing one frame beside
others counts as one), then one flagged default, then the most pixels. A file with only an attached
picture has "no video stream (only an attached picture)". OpenCV reads the first video stream, whatever
it is: it is not used on a file whose first is not the one to read, and where a file holds several the
report's warnings say so.

Truncation: a file whose decoded frames cover less time than its container promises (the video
stream's duration, its DURATION tag, or the file's duration) by more than two frame intervals is
reported as truncated (`DecodeReport.truncated`; PyAV only, OpenCV states no reliable promise; an AVI's
promise is its header's chunk count times its time base, met where the demuxer read the last chunk),
with the frames its container lists (or its duration implies) against the frames decoded. A
container that lists more frames than decode while the time is covered (an edit list that trims
the start) is not truncated. A container of fixed-size units that states no length (an MPEG-TS of
188- or 192-byte packets, a YUV4MPEG2 file) whose size ends inside a unit was cut (a broken download
or copy): a warning says so (`DecodeReport.cut_bytes`), as FFmpeg's error lines say it of other files.

Code: this module holds the reader, the diagnosis of a file nothing decodes and the listing of a
folder's videos; `video_backends.py` the two decoders, `video_timing.py` the step clock,
`video_report.py` the `DecodeReport`; their public names are importable from here as well.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from worldloom.actions import FPS

from .video_backends import (
    AV_LOG_QUIET,
    CODEC_OF_DECODER,
    DECODERS,
    NO_VIDEO_ONLY_PICTURE,
    SOURCES,
    _container_name,
    _ffmpeg_reason,
    _NoFrame,
    _Unsupported,
    animated_picture,
    gif_cut,
    video_stream,
)
from .video_report import DecodeReport
from .video_timing import TIME_EPS_S, _each_frame, _steps, _timed

__all__ = [
    "AV_LOG_QUIET", "BACKENDS", "CODEC_OF_DECODER", "CONTAINER_MAGIC", "DECODERS", "DEFAULT_FPS", "FPS_RANGE",
    "NO_VIDEO_ONLY_PICTURE", "PER_FRAME", "PICTURE_SUFFIXES", "RESAMPLING", "SOURCES", "STILL_SUFFIXES", "TIMINGS", "TIME_EPS_S", "VIDEO_SUFFIXES",
    "DecodeReport", "VideoError", "VideoReader", "diagnose", "files_under", "left_out_words", "output_folders", "read_video",
    "video_files", "video_stream",
]

# A folder's video files, by suffix: phones' and cameras' own (.3gp, AVCHD's .mts/.m2ts, .mxf, .dv),
# raw streams (.h264, timed by the header rate) and the common ones. Its other files and hidden ones
# (macOS's `._clip.mp4` beside a copied clip is no video) are left out, and counted (`video_files`).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".gif",
                  ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".vob", ".dv", ".asf", ".f4v", ".y4m",
                  ".h264", ".264", ".h265", ".265", ".hevc")
# Pictures that are videos where they move (an animated WebP, an APNG: read by their frame delays), still ones
# left out of a folder as other files are.
PICTURE_SUFFIXES = (".webp", ".png", ".apng")
# Still pictures: many in a folder are the frames of a recording (an image sequence), which states no times
STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".tga", ".exr", ".dpx", ".ppm", ".pgm")
BACKENDS = ("pyav", "opencv", "pillow")
RESAMPLING = ("presentation timestamps: step k shows the last frame with time <= k / fps "
              "(ffmpeg -vf fps, round down); frames without a usable timestamp are placed at the header rate, a reset clock joined on")
PER_FRAME = "one step per decoded frame, in decode order (timestamps only time the report)"
TIMINGS = ("timestamps", "frames")
DEFAULT_FPS = float(FPS)  # when a video gives no rate at all and none is asked: the game's
# `--fps` of `dataset ingest` and `idm label`: a step rate to resample footage to (the game's is 20;
# 240 is the fastest common camera rate).
FPS_RANGE = (1, 240)
# First bytes of container formats: a file that starts like one and does not open is corrupt.
CONTAINER_MAGIC = ((4, b"ftyp", "MP4/MOV"), (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"), (0, b"RIFF", "AVI"),
                   (0, b"GIF8", "GIF"), (0, b"\x00\x00\x01\xba", "MPEG-PS"), (0, b"FLV", "FLV"),
                   (0, b"\x30\x26\xb2\x75", "ASF/WMV"))


def files_under(folder: Path, broken: list[Path] | None = None, skip: Sequence[str | Path] = ()) -> list[Path]:
    """Every file under `folder`, sorted, through symlinked folders too (recordings are often gathered as
    links to other disks; `Path.rglob` silently skips them), each real folder read once, never a link
    back to a folder that holds it (a loop). Links whose target is gone go to `broken`, where given.
    Nothing under the folders `skip` is listed: a command's own output inside its input folder
    (`dataset ingest --data videos --out videos/ds`), whose files listed "left out" until 2026-12-08."""
    files, seen = [], {os.path.realpath(p) for p in skip}
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
        if broken is not None:
            broken.extend(Path(top, name) for name in names if not os.path.exists(os.path.join(top, name)))
    return sorted(files)


def output_folders(out: str) -> list[str]:
    """The folders a scan of the inputs leaves out: a command's --out where it is a local folder (it may lie inside an input
    folder, `--data videos --out videos/ds`: its own files are not inputs, and were listed "left out" until
    2026-12-08)."""
    return [] if "://" in str(out) else [str(out)]


def video_files(folder: Path, skip: Sequence[str | Path] = ()) -> tuple[list[Path], list[Path]]:
    """(the video files under `folder`, by suffix, and the animated pictures; its other files and its broken links,
    left out), each sorted; nothing under the folders `skip` (files_under)."""
    broken: list[Path] = []
    files = files_under(folder, broken, skip)
    hidden = {p for p in files if any(part.startswith(".") for part in p.relative_to(folder).parts)}
    videos = [p for p in files if p not in hidden and (p.suffix.lower() in VIDEO_SUFFIXES
                                                       or p.suffix.lower() in PICTURE_SUFFIXES and animated_picture(p))]
    return videos, sorted([p for p in files if p not in videos] + broken)


def left_out_words(folder: Path, left_out: list[Path]) -> str:
    """'left out 3 files of videos/ not named as videos (.json 2, hidden 1); pass one as the input to read it
    anyway', still pictures that are frames said apart ('40 still pictures (.png 40): frames, not a video ...'),
    and the links whose target is gone ('and 1 broken link: day2.mp4')."""
    counts: dict[str, int] = {}
    broken = [p for p in left_out if not p.exists()]
    for p in left_out:
        if p in broken:
            continue
        key = "hidden" if any(part.startswith(".") for part in p.relative_to(folder).parts) else p.suffix or "no suffix"
        counts[key] = counts.get(key, 0) + 1
    stills = {k: n for k, n in counts.items() if k.lower() in STILL_SUFFIXES and n >= 2}  # one is a cover, many frames
    others = {k: n for k, n in counts.items() if k not in stills}
    words = []
    if stills:
        suffix = max(stills, key=stills.get)
        words.append(f"{sum(stills.values())} still picture(s) of {folder} ({', '.join(f'{k} {n}' for k, n in sorted(stills.items()))}): "
                     "frames, not a video (nothing in them says when each was shown, and a folder of frames is not read "
                     "as one); join them into a video at their rate first, e.g. `ffmpeg -framerate 20 -pattern_type glob "
                     f"-i {shlex.quote(f'{folder}/*{suffix}')} -c:v ffv1 frames.mkv` (ffmpeg's concat demuxer takes a duration per frame)")
    if others:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(others.items()))
        words.append(f"{sum(others.values())} file(s) of {folder} not named as videos ({kinds}); pass one as the "
                     "input to read it anyway")
    if broken:
        shown = ", ".join(str(p.relative_to(folder)) for p in broken[:3]) + (", ..." if len(broken) > 3 else "")
        words.append(f"{len(broken)} broken link(s) in {folder}, whose target is gone ({shown})")
    return "left out " + "; and ".join(words)


class VideoError(ValueError):
    """A video file that cannot be read: the message names the file and the cause."""


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
            except Exception as err:  # noqa: BLE001 - the library failed on this file (a side data type PyAV cannot
                # name raised ValueError; a new-user trial, session 58): the next backend may read it, and `tried` says why
                frames.close()
                tried.append(f"{name}: {type(err).__name__}: {err}")
                continue
            report.width, report.height = first[1].shape[1], first[1].shape[0]
            still = None if name == "pillow" else _still_image(self.path, report)  # Pillow reads animated ones only
            if still and animated_picture(self.path):  # FFmpeg read one picture of many
                frames.close()
                tried.append(f"{name}: read one still picture of an animated {animated_picture(self.path)}")
                continue
            if still:
                frames.close()
                raise VideoError(f"{self.path}: a {still.removesuffix('_pipe').upper()} image, not a video (FFmpeg "
                                 f"reads one still picture from it, as {still}); pass a video file, or give it its "
                                 "image suffix to leave it out of a folder")
            self.report = report
            self.fps = float(fps) if fps else (report.header_fps or DEFAULT_FPS)
            later = backends[backends.index(name) + 1:]
            frames = _handed_over(self.path, itertools.chain([first], frames), later, threads, report)
            timed = _timed(frames, report, self.fps)
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


# What a backend that takes over a file mid-way brings to the report: how the rest was decoded, and the container's
# promise as it reads it (the time and frames are counted on, by the step clock).
HANDOVER_FIELDS = ("backend", "container", "codec", "listed_frames", "promised_s", "decode_errors", "unsupported",
                   "ffmpeg_errors", "ffmpeg_last_error", "ffmpeg_unsupported", "unsupported_packets", "unsupported_errors")


def _handed_over(path: Path, frames: Iterator[tuple], later: tuple[str, ...], threads: int,
                 report: DecodeReport) -> Iterator[tuple]:
    """The frames of one backend, and where its decoder cannot go on (`_Unsupported`: a feature it lacks, such as
    FFmpeg's apng decoder blending 16-bit frames, not damage) the rest from the next backend that reads the file
    further: its first frames, those given already, passed over, its times moved onto the first backend's clock.
    VideoError naming the cause where none does."""
    num_given, last_t = 0, None  # the frames given, and the last one's time
    try:
        for item in frames:
            num_given, last_t = num_given + 1, item[0]
            yield item
        return
    except _Unsupported as err:
        reason = f"{report.backend}: {err}"
    for name in later:
        other = DecodeReport(str(path), backend=name)
        rest, skipped_t = SOURCES[name](path, threads, other), None
        try:
            for _ in range(num_given):  # the frames given already: the last one's time aligns the two clocks
                skipped_t = next(rest)[0]
            item = next(rest)
        except Exception:  # noqa: BLE001 - it reads no further (_NoFrame, StopIteration, its library's own error)
            rest.close()
            continue
        shift = last_t - skipped_t if last_t is not None and skipped_t is not None else 0.0
        report.tried.append(f"{reason}; {name} read frames {num_given + 1} on")
        with contextlib.closing(rest):
            yield (None if item[0] is None else item[0] + shift, *item[1:])
            yield from ((None if t is None else t + shift, *more) for t, *more in rest)
        for key in HANDOVER_FIELDS:
            setattr(report, key, getattr(other, key))
        return
    tried = f" ({', '.join(later)} tried)" if later else ""
    raise VideoError(f"{path}: {reason}, and no other backend reads it further{tried}; the file may well be whole: "
                     "convert it with a program that plays it whole (to FFV1 or H.264), or install an FFmpeg build "
                     "whose decoder has the feature")


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
    cut = _cut_container(path)
    if cut:  # what a cut leaves can open as a file of no streams, of a "data" stream or of a codec with no name
        return f"{path}: truncated {cut} (a download or copy cut short; {how}); re-download or re-copy it"
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
    if decoder is None and codec == "unknown":  # FFmpeg has no decoder for its codec and PyAV names none
        return (f"{path}: {_a(fmt)} {fmt} file whose video codec this FFmpeg has no decoder for ({how}); re-encode it "
                f"where it plays (e.g. `ffmpeg -i {path.name} -c:v libx264 -crf 18 out.mp4`), or install an FFmpeg "
                "build that decodes it (`pip install --upgrade av` brings PyAV's: AV1 with dav1d, VP9, HEVC)")
    if decoder is None or (pyav is None and "opencv" in reports):
        installed = "PyAV's FFmpeg has none" if decoder is None else f"PyAV has one ({decoder}) but was not tried"
        return (f"{path}: {_a(fmt)} {fmt} file with {codec} video that no tried decoder reads ({how}; {installed}); "
                f"install a decoder for {codec}: `pip install --upgrade av` (PyAV's wheels decode AV1 with dav1d, "
                "VP9, HEVC) or an FFmpeg build that has it")
    if pyav is not None and pyav.unsupported:
        return (f"{path}: {_a(fmt)} {fmt} file with {codec} video that no tried decoder reads ({how}); the file may well be "
                f"whole: install a software decoder for {codec}: `pip install --upgrade av` (PyAV's "
                "wheels decode AV1 with dav1d, VP9, HEVC) or an FFmpeg build that has one")
    if pyav is not None and pyav.cut_bytes:  # the file's end cut the frame FFmpeg read (a broken download or copy)
        return (f"{path}: truncated {fmt} file: it ends {pyav.cut_bytes} bytes into a {pyav.cut_unit}, before any "
                f"frame decoded (a download or copy cut short; {how}); re-download or re-copy it")
    if _animated_webp(path) and not ("pillow" in reports and _pillow_reads_webp()):  # FFmpeg's webp decoder reads
        # still pictures only: its "damage" is the animation (where a Pillow that reads WebP failed too, it is damage)
        return (f"{path}: an animated WebP, which FFmpeg's webp decoder cannot read (still pictures only) and no tried "
                f"backend read ({how}); the file may well be whole: install a Pillow that reads WebP (`pip install "
                "--upgrade pillow`; `python -c \"from PIL import features; print(features.check('webp'))\"` says whether "
                "yours does), or convert it to a video with a program that plays it")
    damaged = pyav.decode_errors - pyav.unsupported_packets if pyav is not None else 0
    if pyav is not None and pyav.unsupported_packets and not damaged:  # "invalid data", for a feature it lacks
        return (f"{path}: its {codec} video ({fmt}) uses a feature FFmpeg's {decoder} decoder lacks "
                f"({pyav.ffmpeg_unsupported_words()}; {how}); the file may well be whole: convert it with a program "
                "that plays it, or export it again without that feature")
    if damaged:
        lacked = (f"; {pyav.unsupported_packets} more use a feature it lacks: {pyav.ffmpeg_unsupported_words()}"
                  if pyav.unsupported_packets else "")
        return (f"{path}: corrupt: its {codec} video ({fmt}) does not decode ({damaged} damaged packets{lacked}; "
                f"{how}); re-download or re-export it")
    if listed == 0:
        return f"{path}: the {codec} video stream of this {fmt} file holds no frames (zero-length video)"
    return f"{path}: no frame of its {codec} video ({fmt}) decoded ({how}); re-download or re-export it"


# MP4/MOV top-level boxes (ISO 14496-12, QuickTime): a walk over boxes of other types is not of an MP4 (or is garbage)
MP4_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof", b"mfra", b"meta",
                 b"pdin", b"styp", b"sidx", b"emsg", b"prft", b"junk"}
MATROSKA_SEGMENT_ID = b"\x18\x53\x80\x67"


def _cut_container(path: Path) -> str | None:
    """'MP4/MOV file: it ends at byte 436 inside its moov box, which runs to byte 1210' where the container's own
    sizes run past the file's end (an MP4's top-level box, a Matroska file's Segment or, where a live recorder left
    its size open, a child of it, an AVI's RIFF chunk), else None
    (whole, a size left open as a live recorder leaves it, or no container this reads). Fixes: a file cut in its
    header was called what the cut left: 'no video stream', 'no decoder for its codec', 'zero-length video'."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
        kind = _container_by_magic(path)
        if head.startswith(YUV4MPEG_MAGIC):
            return _cut_yuv4mpeg(f, size)
        if kind == "GIF":
            cut = gif_cut(path)
            return f"GIF file: it ends at byte {size} inside {cut[1]}{f', from byte {cut[0]}' * bool(cut[0])}" if cut else None
        if kind == "AVI" and head[8:12] == b"AVI ":  # RIFF of form AVI (a WebP is RIFF too)
            end = 8 + int.from_bytes(head[4:8], "little")
            return f"AVI file: it ends at byte {size} inside its RIFF chunk, which runs to byte {end}" if end > size else None
        if kind == "Matroska/WebM":
            at = _ebml_element_end(head, 0)  # the EBML header, then the Segment
            if at is None or head[at:at + 4] != MATROSKA_SEGMENT_ID:
                return None
            f.seek(at)
            segment = f.read(12)
            end = _ebml_element_end(segment, 0, open_size=True)
            if end is not None:
                return (f"Matroska/WebM file: it ends at byte {size} inside its Segment, which runs to byte {at + end}"
                        if at + end > size else None)
            if len(segment) < 5 or len(segment) < _ebml_header_length(segment):
                return f"Matroska/WebM file: it ends at byte {size} inside its Segment's header"
            return _cut_matroska_child(f, at + _ebml_header_length(segment), size)  # a live recorder's open Segment
        at = 0
        while at + 8 <= size:  # an MP4/MOV: top-level boxes, each (32-bit size, type[, 64-bit size])
            f.seek(at)
            box = f.read(16)
            length, kind_of_box = int.from_bytes(box[:4], "big"), box[4:8]
            if kind_of_box not in MP4_TOP_BOXES:
                return None
            if length == 1 and len(box) == 16:
                length = int.from_bytes(box[8:16], "big")
            if length == 0:  # to the end of the file
                return None
            if length < 8:
                return None
            if at + length > size:
                return (f"MP4/MOV file: it ends at byte {size} inside its {kind_of_box.decode()} box, which runs "
                        f"to byte {at + length}")
            at += length
    return None


YUV4MPEG_MAGIC = b"YUV4MPEG2 "
# YUV4MPEG2's colour spaces (its C tag) -> bytes a pixel takes over its planes, at 8 bits (libavformat/yuv4mpegdec.c)
YUV4MPEG_PIXEL_BYTES = {"420": 1.5, "411": 1.5, "422": 2, "444": 3, "444alpha": 4, "mono": 1}


def _cut_yuv4mpeg(f, size: int) -> str | None:
    """'YUV4MPEG2 file: it ends at byte N inside its first frame, which runs to byte M' where the file holds less
    than its header and one frame (the size its W, H and C tags give), else None. FFmpeg's demuxer gives no packet
    for a frame the file's end cuts: such a file read as 'zero-length video'."""
    f.seek(0)
    header = f.read(1024).split(b"\n", 1)[0]
    tags = {word[:1]: word[1:] for word in header.decode("ascii", "replace").split()[1:]}
    try:
        width, height = int(tags.get("W", "")), int(tags.get("H", ""))
    except ValueError:
        return None
    colour = tags.get("C", "420jpeg")
    kind = "444alpha" if colour.startswith("444alpha") else "mono" if colour.startswith("mono") else colour[:3]
    if kind not in YUV4MPEG_PIXEL_BYTES:
        return None
    depth = re.match(r"p?(\d*)", colour.removeprefix(kind))[1]  # "420p10" -> 10, "420jpeg" -> none: 8 bits
    sample_bytes = 2 if depth and int(depth) > 8 else 1
    end = len(header) + 1 + len(b"FRAME\n") + int(width * height * YUV4MPEG_PIXEL_BYTES[kind] * sample_bytes)
    return f"YUV4MPEG2 file: it ends at byte {size} inside its first frame, which runs to byte {end}" if size < end else None


MATROSKA_ELEMENTS = {"114d9b74": "SeekHead", "1549a966": "Info", "1654ae6b": "Tracks", "1f43b675": "Cluster",
                     "1c53bb6b": "Cues", "1254c367": "Tags", "1043a770": "Chapters", "1941a469": "Attachments", "ec": "Void"}
MATROSKA_MAX_CHILDREN = 100_000  # a Segment's children walked at most (Clusters of a long recording)


def _cut_matroska_child(f, at: int, size: int) -> str | None:
    """Where a Segment of open size (a live recorder's: a crash leaves it so) has a child (Tracks, a Cluster, ...)
    that runs past the file's end (`size`): 'Matroska/WebM file: it ends at byte N inside its Cluster, which runs
    to byte M'; None where each fits, or one of open size (nothing more is known). `f` is the open file, `at` the
    Segment's first child. Fixes: a live mkv cut in its first Cluster was a 'zero-length video'."""
    for _ in range(MATROSKA_MAX_CHILDREN):
        if at >= size:
            return None
        f.seek(at)
        head = f.read(12)
        end = _ebml_element_end(head, 0, open_size=True)
        if end is None:
            return None
        if at + end > size:
            name = MATROSKA_ELEMENTS.get(head[:_ebml_header_length(head, id_only=True)].hex(), "element")
            return f"Matroska/WebM file: it ends at byte {size} inside its {name}, which runs to byte {at + end}"
        at += end
    return None


def _ebml_header_length(data: bytes, id_only: bool = False) -> int:
    """The bytes of the ID (and, unless `id_only`, the size) of the EBML element that starts `data`."""
    def vint_length(first: int) -> int:
        return next((n for n in range(1, 9) if first & (0x80 >> (n - 1))), 1)

    id_length = vint_length(data[0])
    return id_length if id_only else id_length + vint_length(data[id_length])


def _ebml_element_end(data: bytes, at: int, open_size: bool = False) -> int | None:
    """The offset where the EBML element at `at` of `data` ends (its ID, size and payload), or None where `data`
    holds too little of it, or its size is the unknown one (all ones: a live recorder's) and `open_size`."""
    def vint_length(first: int) -> int:
        return next((n for n in range(1, 9) if first & (0x80 >> (n - 1))), 0)

    if at >= len(data):
        return None
    id_length = vint_length(data[at])
    if not id_length or at + id_length >= len(data):
        return None
    size_at = at + id_length
    size_length = vint_length(data[size_at])
    if not size_length or size_at + size_length > len(data):
        return None
    value = data[size_at] & (0xFF >> size_length)
    for byte in data[size_at + 1:size_at + size_length]:
        value = value << 8 | byte
    if value == (1 << (7 * size_length)) - 1:  # unknown size
        return None
    return size_at + size_length + value


def _a(container: str) -> str:
    """The article before a container's name as it is read: "an avi", "an mp4/mov", "an flv", "a matroska/webm"."""
    spelled = ("mp", "mpeg", "flv", "mxf", "h26", "nut", "rm")  # names read letter by letter from a vowel sound
    return "an" if container[:1].lower() in "aeiou" or container.lower().startswith(spelled) else "a"


def _animated_webp(path: Path) -> bool:
    """Whether the file is an animated WebP by its bytes, whatever reads it here: RIFF WEBP with an extended header
    (VP8X) whose animation flag (0x02) is set."""
    with open(path, "rb") as f:
        head = f.read(21)
    return len(head) == 21 and head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and bool(head[20] & 0x02)


def _pillow_reads_webp() -> bool:
    from PIL import features

    return bool(features.check("webp"))


def _container_by_magic(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    return next((name for offset, magic, name in CONTAINER_MAGIC if head[offset:offset + len(magic)] == magic), None)
