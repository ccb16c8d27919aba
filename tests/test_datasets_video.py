"""`worldloom.datasets.video` on real files written with PyAV: time from timestamps, backends, causes, truncation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from videos import (
    MS,
    frame_index,
    on_screen,
    painted,
    truncate,
    write_apng16,
    write_audio_only,
    write_audio_with_cover,
    write_h264_mixed_depth,
    write_h264_stream,
    write_video,
    write_with_cover,
)

from worldloom.datasets.video import VideoError, VideoReader, read_video
from worldloom.io import open_encoder
from worldloom.pipeline.cli import main

VFR = [int(t) for t in np.cumsum([0] + [100] * 20 + [25] * 19)]  # 10 fps, then 40 fps (field case 01)
JITTER = [int(t) for t in np.cumsum([0] + list(np.random.default_rng(1).integers(30, 71, 39)))]  # 50 ms +- 20
CFR = list(range(0, 40 * 50, 50))

# name: (write_video arguments, presentation times of the frames a player shows, index of the first one)
TIMELINES = {
    "vfr": ({"pts_ms": VFR}, VFR, 0),
    "jittered": ({"pts_ms": JITTER}, JITTER, 0),
    "b-frames": ({"pts_ms": CFR, "bframes": 3}, CFR, 0),
    "vfr b-frames": ({"pts_ms": VFR, "bframes": 2}, VFR, 0),
    "wrong header rate (mkv says 24 fps)": ({"pts_ms": [2 * t for t in CFR], "container_format": "matroska"},
                                            [2 * t for t in CFR], 0),
    "start at 1 s": ({"pts_ms": [1000 + t for t in CFR]}, [1000 + t for t in CFR], 0),
    "start at 0.5 s, b-frames, mkv": ({"pts_ms": [500 + t for t in CFR], "bframes": 3, "container_format": "matroska"},
                                      [500 + t for t in CFR], 0),
    "edit list trims 2 frames": ({"pts_ms": [t - 100 for t in CFR]}, CFR[2:], 2),
    "30 fps": ({"num_frames": 40, "rate": 30}, [round(i * 1000 / 30) for i in range(40)], 0),
}


@pytest.fixture(scope="module")
def timelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("timelines")
    paths = {}
    for k, (name, (kwargs, _, _)) in enumerate(TIMELINES.items()):
        suffix = ".mkv" if kwargs.get("container_format") == "matroska" else ".mp4"
        paths[name] = write_video(root / f"v{k}{suffix}", **kwargs)
    return paths


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
@pytest.mark.parametrize("name", sorted(TIMELINES))
def test_step_k_shows_the_frame_on_screen_at_k_over_fps(timelines, name, backend):
    _, shown_ms, first = TIMELINES[name]
    for fps in (20, 7):
        frames, report = read_video(timelines[name], fps=fps, backends=(backend,))
        assert frame_index(frames) == [first + i for i in on_screen(shown_ms, fps)], (name, backend, fps)
        assert report.backend == backend and report.timestamps == "pts" and not report.warnings()


def test_an_avi_with_b_frames_is_timed_by_its_best_effort_timestamps(tmp_path):
    """An .avi stores no pts: the demuxer numbers packets in decode order, so with B-frames the frames (in
    display order) came with pts 1, 3, 2, 5, 4, ...; read as their times, PyAV's steps showed frame 0 twice and
    dropped others (121 steps of 120 frames, "77 frames had no usable timestamp"). ffmpeg and OpenCV time them
    by the best-effort timestamp (the dts once pts go backwards): every frame once, in order, no warning."""
    out = av.open(str(tmp_path / "b.avi"), "w")
    stream = out.add_stream("libx264", rate=20)
    stream.width = stream.height = 64
    stream.pix_fmt = "yuv420p"
    open_encoder(stream.codec_context, {"crf": "10", "bf": "3"})
    for i in range(40):
        for packet in stream.encode(av.VideoFrame.from_ndarray(painted(i), format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    for backend in ("opencv", "pyav"):
        frames, report = read_video(tmp_path / "b.avi", fps=20, backends=(backend,))
        assert frame_index(frames) == list(range(40)), backend
    assert not report.warnings() and report.timestamps == "pts"  # OpenCV's last 2 frames come untimed, placed


def test_the_rule_by_hand_on_field_case_01():
    """10 fps for 2 s then 40 fps: at 20 steps/s each early frame twice, then every other frame."""
    assert on_screen(VFR, 20) == [k // 2 for k in range(40)] + [20 + 2 * j for j in range(10)]


def test_a_gif_is_timed_by_its_frame_delays(tmp_path):
    delays_ms = [100] * 10 + [50] * 10  # GIF delays are whole centiseconds
    images = [Image.fromarray(painted(i)) for i in range(20)]
    images[0].save(tmp_path / "vfr.gif", save_all=True, append_images=images[1:], duration=delays_ms, loop=0)
    frames, report = read_video(tmp_path / "vfr.gif", fps=20)
    assert frame_index(frames) == on_screen([int(t) for t in np.cumsum([0] + delays_ms[:-1])], 20)
    assert report.timestamps == "pts"


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_frames_are_upright_as_a_player_shows_them(tmp_path, degrees, mirror):
    """A phone video stores its picture sideways with a display matrix: every backend gives the turned
    (and mirrored) picture, at its displayed size; OpenCV turns but does not mirror, so PyAV's is checked."""
    picture = np.zeros((64, 96, 3), np.uint8)
    picture[:16, :16], picture[-8:, -24:] = 200, 100  # a bright top-left corner, a grey bottom-right strip
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv444p"
        stream.set_display_rotation(degrees, hflip=mirror)  # counter-clockwise, then mirrored left-right
        open_encoder(stream.codec_context, {"qp": "0"})
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")), *stream.encode()]:
            out.mux(packet)
    shown = np.rot90(picture, degrees // 90)
    shown = shown[:, ::-1] if mirror else shown
    backends = ("pyav",) if mirror else ("pyav", "opencv")
    for backend in backends:
        frames, report = read_video(path, fps=20, backends=(backend,))
        assert (report.width, report.height) == (shown.shape[1], shown.shape[0]), backend
        assert np.abs(frames[0].astype(int) - shown).max() <= 8, (backend, degrees, mirror)


@pytest.mark.parametrize("suffix, sar, degrees", [(".mp4", (4, 3), 0), (".mkv", (4, 3), 0), (".mov", (2, 3), 0),
                                                   (".mp4", (4, 3), 90)])
def test_non_square_pixels_are_shown_as_wide_as_a_player_shows_them(tmp_path, suffix, sar, degrees):
    """Anamorphic footage (DV, HDV, some phones and screen recorders) stores 96x64 pixels that a player
    shows 128 wide (sample aspect ratio 4:3): both backends gave the stored 96x64, squashed; now the
    width times the ratio (ffmpeg's scale=iw*sar:ih), before a display matrix's turn."""
    picture = np.zeros((64, 96, 3), np.uint8)
    picture[:, ::8] = 200  # vertical stripes every 8 pixels, a grey block at the top left
    picture[:16, :24] = 100
    path = tmp_path / f"anamorphic{suffix}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv444p"
        stream.codec_context.sample_aspect_ratio = Fraction(*sar)
        if degrees:
            stream.set_display_rotation(degrees)
        open_encoder(stream.codec_context, {"qp": "0"})
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")), *stream.encode()]:
            out.mux(packet)
    width = round(96 * sar[0] / sar[1])
    shown = cv2.resize(picture, (width, 64), interpolation=cv2.INTER_LINEAR if width > 96 else cv2.INTER_AREA)
    shown = np.rot90(shown, degrees // 90)
    for backend in ("pyav", "opencv"):
        frames, report = read_video(path, fps=20, backends=(backend,))
        assert frames.shape[1:3] == shown.shape[:2] and (report.width, report.height) == (shown.shape[1], shown.shape[0])
        assert np.abs(frames[0].astype(int) - shown).max() <= 8, backend
        assert report.sample_aspect_ratio == f"{sar[0]}:{sar[1]}" and report.warnings() == []


def test_no_timestamps_fall_back_to_the_header_rate_with_a_warning(tmp_path):
    stream = write_h264_stream(tmp_path / "raw.h264", 30, rate=20)  # Annex B: frames carry no timestamps
    frames, report = read_video(stream, fps=20)
    assert frame_index(frames) == list(range(30)) and report.timestamps == "header rate"
    assert any("no usable timestamps" in w and "20" in w for w in report.warnings())
    frames, _ = read_video(stream, fps=10)
    assert frame_index(frames) == list(range(0, 30, 2))
    frames, _ = read_video(stream)  # no fps asked: the header rate
    assert len(frames) == 30


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_recordings_joined_into_one_file_keep_each_parts_timing(tmp_path, backend):
    """Two MPEG-TS recordings joined with `cat` (a DVR's or camera's segments): the second's timestamps start
    again at 0. Each part keeps its own timing, the second joined one frame after the first, as ffmpeg
    joins an MPEG-TS discontinuity; until session 58 every frame after the reset was "untimed" and timed by
    its index at the header rate (the second part's variable rate lost)."""
    first = write_video(tmp_path / "a.ts", pts_ms=CFR, container_format="mpegts")
    second = write_video(tmp_path / "b.ts", pts_ms=VFR, container_format="mpegts")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(Path(first).read_bytes() + Path(second).read_bytes())
    frames, report = read_video(joined, fps=20, backends=(backend,))
    assert frame_index(frames) == list(range(40)) + on_screen(VFR, 20), backend
    assert report.timestamps == "pts, reset 1 time" and report.num_untimed == 0
    assert any("start again 1 time(s)" in w for w in report.warnings())


def test_a_repeated_timestamp_shows_the_later_frame_and_moves_no_other(tmp_path):
    """A stalled capture clock gives frames 9-11 one time: the later is on screen (ffmpeg's fps filter), and
    the frames after keep their own times (until session 58 they were pushed later, two of them dropped)."""
    times = CFR[:10] + [450, 450] + [500 + 50 * j for j in range(28)]
    path = write_video(tmp_path / "dup.mkv", pts_ms=times, codec="ffv1", container_format="matroska")
    frames, report = read_video(path, fps=20)
    assert frame_index(frames) == on_screen(times, 20) and frame_index(frames)[9:12] == [11, 12, 13]
    assert report.num_same_time == 2 and report.num_untimed == 0 and report.timestamps == "pts"


def test_the_clock_judges_a_time_that_goes_back_by_the_frame_after_it():
    """`_timed` on its own (a muxer will not write a time that goes back in most containers): one misstamped
    frame sits between its neighbours and moves nothing after it; a reset joins the rest on."""
    from worldloom.datasets.video_report import DecodeReport
    from worldloom.datasets.video_timing import _timed

    def clock(times):
        report = DecodeReport("x", header_fps=20.0)
        return [t for t, _, _ in _timed(((t, None, None) for t in times), report, 20.0)], report

    placed, report = clock([0.0, 0.05, 0.10, 0.02, 0.20, 0.25])  # frame 3 misstamped (its slot was 0.15)
    assert placed == pytest.approx([0, 0.05, 0.10, 0.15, 0.20, 0.25]) and report.num_untimed == 1 and not report.num_resets
    placed, report = clock([5.0, 5.05, 5.10, 0.0, 0.10, 0.30])  # a reset: the rest keeps its spacing
    assert placed == pytest.approx([0, 0.05, 0.10, 0.15, 0.25, 0.45]) and report.num_resets == 1 and not report.num_untimed
    placed, report = clock([0.0, 0.05, None, 0.10, 0.08])  # untimed, then one back at the end: after the last
    assert placed == pytest.approx([0, 0.05, 0.10, 0.10, 0.15]) and report.num_untimed == 2


def test_a_cameras_mjpeg_with_exif_in_every_frame_is_read(tmp_path):
    """A dashcam's MJPEG .avi whose JPEGs carry EXIF: FFmpeg hands each frame side data of a type PyAV 18
    cannot name, and reading it raised ValueError ("31 is not a valid Type"), which ended `idm label` and
    `dataset ingest` (a new-user trial, session 58). Its frames are read, upright by the stream's turn."""
    import io

    rng = np.random.default_rng(1)
    out = av.open(str(tmp_path / "cam.avi"), "w")
    stream = out.add_stream("mjpeg", rate=20)
    stream.width = stream.height = 64
    stream.pix_fmt = "yuvj420p"
    for i in range(12):
        exif, jpeg = Image.Exif(), io.BytesIO()
        exif[0x010F] = "CamMaker"
        picture = rng.integers(0, 255, (64, 64, 3), np.uint8)
        picture[:16, :16] = 10 + 6 * i
        Image.fromarray(picture).save(jpeg, format="JPEG", exif=exif, quality=95)
        packet = av.Packet(jpeg.getvalue())
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 20)
        out.mux(packet)
    out.close()
    frames, report = read_video(tmp_path / "cam.avi", fps=20)
    assert frame_index(frames) == list(range(12)) and report.backend == "pyav" and not report.tried


def arithmetic_mjpeg(path, arithmetic, damaged=lambda i: False) -> str:
    """An MJPEG .avi of 12 frames, those `arithmetic(i)` marked arithmetic-coded: a baseline JPEG whose start-of-frame
    marker says SOF9 (extended sequential, arithmetic coding), where FFmpeg's mjpeg decoder stops, as it does on a
    camera's or `cjpeg -arithmetic`'s JPEG (it reads no further than the marker); those `damaged(i)` with their
    Huffman table overwritten (FFmpeg: "huffman table decode error")."""
    import io

    rng = np.random.default_rng(2)
    out = av.open(str(path), "w")
    stream = out.add_stream("mjpeg", rate=20)
    stream.width = stream.height = 64
    stream.pix_fmt = "yuvj420p"
    for i in range(12):
        jpeg = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(jpeg, format="JPEG", quality=95)
        data = jpeg.getvalue()
        if damaged(i):
            table = data.index(b"\xff\xc4") + 4
            data = data[:table] + b"\xff" * 30 + data[table + 30:]
        if arithmetic(i):
            sof = data.index(b"\xff\xc0")
            data = data[:sof] + b"\xff\xc9" + data[sof + 2:]
        packet = av.Packet(data)
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 20)
        out.mux(packet)
    out.close()
    return str(path)


def test_an_arithmetic_coded_mjpeg_is_a_feature_ffmpeg_lacks_not_corrupt(tmp_path):
    """FFmpeg's mjpeg decoder logs "unsupported coding type (c9)" for an arithmetic-coded JPEG and returns "invalid
    data": the reader said 'corrupt: ... 12 damaged packets; re-download or re-export it'. It names the feature
    FFmpeg lacks, in one line; where only some frames use it, the warning says so, not 'damaged'."""
    path = arithmetic_mjpeg(tmp_path / "arith.avi", lambda i: True)
    with pytest.raises(VideoError) as caught:
        read_video(path, fps=20)
    message = str(caught.value)
    assert message.startswith(f"{path}: its mjpeg video (avi) uses a feature FFmpeg's mjpeg decoder lacks (FFmpeg: "
                              "mjpeg: unsupported coding type (c9): JPEG arithmetic coding; "), message
    assert "corrupt" not in message and "damaged" not in message and "\n" not in message, message
    frames, report = read_video(arithmetic_mjpeg(tmp_path / "some.avi", lambda i: i % 2), fps=20)
    assert report.ffmpeg_unsupported == "mjpeg: unsupported coding type (c9)" and report.decode_errors == 6
    assert report.warnings() == ["6 packets did not decode and were skipped (FFmpeg: mjpeg: unsupported coding type "
                                 "(c9): JPEG arithmetic coding: not damage)"], report.warnings()


def test_a_feature_ffmpeg_lacks_is_named_though_other_errors_follow_and_damage_stays_damage(tmp_path):
    """An H.264 stream of 10-bit luma and 8-bit chroma (valid; FFmpeg's decoder lacks it) makes FFmpeg warn
    "Different chroma and luma bit depth is not implemented", then log errors ("sps_id 0 out of range", "non-existing
    PPS 0 referenced" at every slice): only the last error line was kept, so the file was 'corrupt: ... 12 damaged
    packets; re-download or re-export it'. It is named by the feature FFmpeg lacks. A packet that fails with an error
    of its own (a Huffman table overwritten) stays damage, beside frames that use a lacked feature or alone."""
    path = write_h264_mixed_depth(tmp_path / "depths.h264")
    with pytest.raises(VideoError) as caught:
        read_video(path, fps=20)
    message = str(caught.value)
    assert message.startswith(f"{path}: its h264 video (h264) uses a feature FFmpeg's h264 decoder lacks (FFmpeg: h264: "
                              "Different chroma and luma bit depth is not implemented; "), message
    assert "corrupt" not in message and "damaged" not in message and "\n" not in message, message
    # 2 frames use the lacked feature, 1 is damaged: said apart
    frames, report = read_video(arithmetic_mjpeg(tmp_path / "both.avi", lambda i: i in (2, 3), lambda i: i == 7), fps=20)
    assert report.decode_errors == 3 and report.unsupported_packets == 2, report.to_json()
    assert report.warnings() == [
        "2 packets did not decode and were skipped (FFmpeg: mjpeg: unsupported coding type (c9): JPEG arithmetic "
        "coding: not damage)", "1 other packets did not decode and were skipped",
        "damaged or cut short: FFmpeg reported 1 error(s) reading it (last: mjpeg: huffman table decode error); "
        "frames may be missing or broken (re-download or re-export it)"], report.warnings()
    # nothing decodes: half the frames damaged after half that use the lacked feature is corrupt
    path = arithmetic_mjpeg(tmp_path / "broken.avi", lambda i: i < 6, lambda i: i >= 6)
    with pytest.raises(VideoError, match=r"corrupt: its mjpeg video \(avi\) does not decode \(6 damaged packets; 6 more "
                       r"use a feature it lacks: FFmpeg: mjpeg: unsupported coding type \(c9\)"):
        read_video(path, fps=20)


def test_an_animated_webp_is_read_by_its_frame_delays_and_a_multipage_tiff_is_an_image(tmp_path):
    """FFmpeg's webp decoder reads still pictures only: PyAV called an animated WebP corrupt, OpenCV read its
    first frame and the file was refused as "a WEBP image" (a new-user trial, session 58). Pillow reads it, each
    frame at the delay the file states. A multi-page TIFF states no delays: pages, refused as an image."""
    delays = [100] * 5 + [50] * 5
    pictures = [Image.fromarray(painted(i)) for i in range(10)]
    pictures[0].save(tmp_path / "clip.webp", save_all=True, append_images=pictures[1:], duration=delays, lossless=True)
    frames, report = read_video(tmp_path / "clip.webp", fps=20)
    times = [int(t) for t in np.cumsum([0, *delays[:-1]])]
    assert frame_index(frames) == on_screen(times, 20, last_ms=50) and report.backend == "pillow"
    assert report.tried[-1] == "opencv: read one still picture of an animated WEBP" and not report.warnings()
    pictures[0].save(tmp_path / "pages.avi", format="TIFF", save_all=True, append_images=pictures[1:4])
    with pytest.raises(VideoError, match=r"pages.avi: a TIFF image, not a video"):
        read_video(tmp_path / "pages.avi", fps=20)
    pictures[0].save(tmp_path / "still.webp", lossless=True)  # in a folder: the moving picture is a video, not the still
    from worldloom.datasets.video import video_files

    assert video_files(tmp_path) == ([tmp_path / "clip.webp", tmp_path / "pages.avi"], [tmp_path / "still.webp"])


def test_an_animated_webp_no_backend_here_reads_is_not_called_corrupt(tmp_path):
    """Where Pillow does not read an animated WebP (a Pillow built without WebP; here, the backends without it),
    FFmpeg's webp decoder, which reads still pictures only, fails on its packet: the file was called "corrupt:
    ... 1 damaged packets; re-download or re-export it" (a new-user trial, session 59; field case 04's kind). It is
    one line naming the animation and what to install; a cut one that a Pillow reading WebP fails on is damage."""
    pictures = [Image.fromarray(painted(i)) for i in range(10)]
    pictures[0].save(tmp_path / "clip.webp", save_all=True, append_images=pictures[1:], duration=50, lossless=True)
    with pytest.raises(VideoError) as err:
        read_video(tmp_path / "clip.webp", fps=20, backends=("pyav", "opencv"))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'clip.webp'}: an animated WebP, which FFmpeg's webp decoder cannot read")
    assert "install a Pillow that reads WebP" in message and "corrupt" not in message and "damaged" not in message
    data = (tmp_path / "clip.webp").read_bytes()
    (tmp_path / "cut.webp").write_bytes(data[:40])  # its header and nothing more
    with pytest.raises(VideoError, match="cut.webp: corrupt"):
        read_video(tmp_path / "cut.webp", fps=20)


def av1_encoder() -> str:
    for name in ("libsvtav1", "libaom-av1"):
        if name in av.codecs_available:
            return name
    pytest.skip("this PyAV build has no AV1 encoder to make the input")  # PyAV's PyPI wheels have libsvtav1


def opencv_decodes(path) -> bool:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def test_a_backend_that_decodes_nothing_hands_over_to_the_other(tmp_path, monkeypatch):
    """OpenCV 4.x's FFmpeg opens AV1 and decodes no frame; PyAV (dav1d) does: never "corrupt"."""
    path = write_video(tmp_path / "av1.mp4", num_frames=24, codec=av1_encoder())
    frames, report = read_video(path)
    assert len(frames) == 24 and report.backend == "pyav" and report.codec == "av1"
    if opencv_decodes(path):
        # OpenCV 5.1's wheels (2026-12) decode AV1, so the case cannot run here with the real library: this
        # stands in for OpenCV 4.x's, which opens the file and decodes nothing (the one mock in this file)
        real = cv2.VideoCapture

        class OpenCV4MeetsAV1:
            def __init__(self, *args):
                self.cap = real(*args)

            def __getattr__(self, name):
                return getattr(self.cap, name)

            def read(self):
                return False, None

        monkeypatch.setattr(cv2, "VideoCapture", OpenCV4MeetsAV1)
    frames, report = read_video(path, backends=("opencv", "pyav"))
    assert len(frames) == 24 and report.backend == "pyav" and report.tried == ["opencv: decoded no frame"]
    with pytest.raises(VideoError) as err:
        read_video(path, backends=("opencv",))
    message = str(err.value)
    assert "av1" in message and "mp4" in message and "install" in message and "corrupt" not in message


@pytest.mark.parametrize("container, tag, unknown", [("mp4", b"avc1", b"evc1"), ("avi", b"FMP4", b"ZQX9"),
                                                     ("matroska", b"V_MPEG4/ISO/ASP", b"V_MPEG4/ISO/ZZZ")])
def test_a_codec_no_decoder_here_knows_is_one_line_naming_the_file_and_what_to_do(tmp_path, container, tag, unknown):
    """A file whose codec tag FFmpeg maps to no decoder (MPEG-5 EVC's evc1, an unknown FourCC, an unknown
    Matroska CodecID): PyAV gives the stream no codec context, and reading its size raised AttributeError
    (a new-user trial, session 32). It is one line that names the file, says no decoder here reads it, and
    says how to re-encode it; never "corrupt"."""
    codec = "libx264" if container == "mp4" else "mpeg4"
    whole = write_video(tmp_path / f"whole.{container[:3]}", num_frames=20, codec=codec,
                        container_format=container)
    data = Path(whole).read_bytes()
    assert tag in data, "the container's codec tag the test renames"
    odd = tmp_path / f"odd.{container[:3]}"
    odd.write_bytes(data.replace(tag, unknown))
    with pytest.raises(VideoError) as err:
        read_video(odd)
    message = str(err.value)
    assert message.startswith(f"{odd}: ") and "no decoder" in message and "re-encode" in message, message
    assert "corrupt" not in message and "Error" not in message and "\n" not in message, message


def test_a_decoder_that_cannot_decode_here_is_not_called_corrupt(tmp_path, monkeypatch):
    """A PyAV built on an FFmpeg without dav1d (a distro's or conda's) has only FFmpeg's native av1 decoder,
    which needs hardware acceleration: every packet fails with ENOSYS. That is a missing decoder, said
    as one with what to install, never "corrupt: N damaged packets"; OpenCV, where it decodes, takes over."""
    from worldloom.datasets import video

    path = write_video(tmp_path / "av1.mkv", num_frames=24, codec=av1_encoder(), container_format="matroska")
    monkeypatch.setitem(video.DECODERS, "av1", "av1")  # the native decoder, as such a PyAV picks it
    with pytest.raises(VideoError) as err:
        read_video(path, backends=("pyav",))
    message = str(err.value)
    assert "corrupt" not in message and "damaged" not in message, message
    assert "av1" in message and "install a software decoder for av1" in message and "Function not implemented" in message
    if opencv_decodes(path):
        frames, report = read_video(path)
        assert len(frames) == 24 and report.backend == "opencv" and "cannot decode it here" in report.tried[0]


def test_a_decoder_that_cannot_go_on_hands_the_rest_to_the_next_backend(tmp_path):
    """A 16-bit APNG whose frames blend over the canvas: FFmpeg's apng decoder reads the first and answers "not yet
    implemented" for the rest. Each later packet was counted as damaged and skipped: 20 frames stored as one step,
    "19 packets did not decode" and "damaged or cut short" (a new-user trial, session 59; field case 04's kind).
    The rest comes from the next backend that reads it (Pillow), on the same clock; with none left, one line says
    the decoder lacks a feature, never damage."""
    path = write_apng16(tmp_path / "clip.png", num_frames=20)
    frames, report = read_video(path, fps=20)
    assert frame_index(frames) == list(range(20)) and report.backend == "pillow" and not report.warnings()
    assert report.tried == ["pyav: its apng decoder (apng: Not yet implemented in FFmpeg, patches welcome) cannot "
                            "decode it past frame 1 (a feature this FFmpeg lacks); pillow read frames 2 on"]
    with pytest.raises(VideoError) as err:
        read_video(path, fps=20, backends=("pyav",))
    message = str(err.value)
    assert message.startswith(f"{path}: pyav: its apng decoder") and "may well be whole" in message, message
    assert "corrupt" not in message and "damaged" not in message and "\n" not in message, message


@pytest.mark.parametrize("suffix,kind", [(".png", "PNG"), (".jpg", "JPEG")])
def test_an_image_named_as_a_video_is_said_to_be_an_image(tmp_path, suffix, kind):
    """A PNG or JPEG renamed .mp4 (a thumbnail saved under the video's name) was read as a one-frame video:
    `idm label` said '1 step(s) at 20 fps: ... a clip needs 2 steps', `dataset ingest --format video` stored a
    1-step episode. The cause is that it is an image: the message says so, for OpenCV as well."""
    cv2.imwrite(str(tmp_path / f"still{suffix}"), painted(0))
    path = tmp_path / "clip.mp4"
    shutil.copy(tmp_path / f"still{suffix}", path)
    for backends in (("pyav", "opencv"), ("opencv",)):
        with pytest.raises(VideoError, match=rf"^{path}: a {kind} image, not a video \(FFmpeg reads one still picture"):
            VideoReader(path, backends=backends)
    assert len(read_video(write_video(tmp_path / "two.mp4", num_frames=2))[0]) == 2  # a 2-frame video is one


def test_files_no_backend_decodes_name_their_cause(tmp_path, capfd):
    whole = write_video(tmp_path / "whole.mp4", num_frames=40)  # moov at the end: a cut file has none
    cases = {
        "audio.m4a": (write_audio_only(tmp_path / "audio.m4a"), "no video stream"),
        "notes.mp4": (tmp_path / "notes.mp4", "not a video file"),
        "garbage.mp4": (tmp_path / "garbage.mp4", "corrupt"),
        "cut.mp4": (truncate(whole, tmp_path / "cut.mp4"), "truncated MP4/MOV file: it ends at byte"),
        "empty.mp4": (tmp_path / "empty.mp4", "empty"),
        "missing.mp4": (tmp_path / "missing.mp4", "no such file"),
    }
    (tmp_path / "notes.mp4").write_text("not a video, whatever its name says")
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name, (path, cause) in cases.items():
        with pytest.raises(VideoError) as err:
            VideoReader(path)
        assert name in str(err.value) and cause in str(err.value), str(err.value)
    assert "corrupt" not in str(pytest.raises(VideoError, VideoReader, cases["audio.m4a"][0]).value)
    native = capfd.readouterr().err  # the one line above is the whole story: no FFmpeg or OpenCV log line beside it
    assert "moov atom" not in native and "WARN" not in native and "Invalid data" not in native, native




def _cut_inside(data: bytes, marker: bytes, fraction: float, length: int) -> bytes:
    """`data` cut `fraction` of `length` bytes past where `marker` starts."""
    at = data.index(marker)
    return data[:at + max(1, int(fraction * length))]


@pytest.mark.parametrize("kind", ["mp4 moov", "mkv head", "live mkv head", "webm head", "avi head"])
def test_files_cut_in_their_header_are_called_truncated(tmp_path, kind):
    """A file cut inside its header (an mp4's moov at the front, a Matroska file's tracks or first cluster, an AVI's
    hdrl: a download stopped early) was called what the cut left of it: 'no video stream (the mp4/mov file holds data
    (?))', 'an mp4/mov file whose video codec this FFmpeg has no decoder for' (install a decoder!), 'the h264 video
    stream ... holds no frames (zero-length video)' (a new-user trial, 2026-12-07; field cases 04 and 05's kinds).
    The container's own sizes (a top-level box, the Segment, the RIFF chunk) run past the file's end: it is cut."""
    suffix, fmt, marker = {"mp4 moov": (".mp4", "mp4", b"moov"), "mkv head": (".mkv", "matroska", b"\x16\x54\xae\x6b"),
                           "live mkv head": (".mkv", "matroska", b"\x16\x54\xae\x6b"),
                           "webm head": (".webm", "webm", b"\x16\x54\xae\x6b"), "avi head": (".avi", "avi", b"hdrl")}[kind]
    options = {"movflags": "faststart"} if fmt == "mp4" else {"live": "1"} if kind.startswith("live") else {}
    codec = "libvpx-vp9" if fmt == "webm" else "libx264"  # a live mkv (a recorder's, as a crash leaves it): no sizes
    whole = write_video(tmp_path / f"whole{suffix}", num_frames=40, codec=codec, container_format=fmt,
                        container_options=options)
    data = open(whole, "rb").read()
    assert len(read_video(whole, fps=20)[0]) == 40
    for fraction in (0.1, 0.3, 0.5, 0.8, 3, 6):  # inside the header, then a little past its start (its first frame)
        path = tmp_path / f"cut{fraction}{suffix}"
        path.write_bytes(_cut_inside(data, marker, fraction, 400))
        with pytest.raises(VideoError) as err:
            VideoReader(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and "truncated" in message and "\n" not in message, message
        cause = message.split(" (")[0]  # what the backends found is said after it, in brackets
        assert not any(wrong in cause for wrong in ("no decoder", "zero-length", "no video stream", "not a video")), message


def _first_packet_span(path) -> tuple[int, int]:
    """(position, bytes) of the first video packet a file holds."""
    with av.open(str(path)) as container:
        packet = next(p for p in container.demux(video=0) if p.size)
        return packet.pos, packet.size


FIRST_FRAME_CUTS = {"flv": (".flv", "flv", "libx264", {}), "mp4 after moov": (".mp4", "mp4", "libx264", {"movflags": "faststart"}),
                    "mov": (".mov", "mov", "libx264", {}), "mkv": (".mkv", "matroska", "libx264", {}),
                    "webm": (".webm", "webm", "libvpx-vp9", {}), "avi": (".avi", "avi", "libx264", {}),
                    "ts": (".ts", "mpegts", "libx264", {}), "y4m": (".y4m", "", "", {}), "gif": (".gif", "", "", {})}


@pytest.mark.parametrize("kind", sorted(FIRST_FRAME_CUTS))
def test_files_cut_inside_their_first_frame_are_called_truncated(tmp_path, kind, capsys):
    """An .flv cut inside its first frame (a download stopped early) was 'corrupt: its h264 video (flv) does not
    decode (1 damaged packets ...)', a .y4m 'holds no frames (zero-length video)', a .gif cut in its colour table
    'corrupt': the advice (re-download) was right, the word wrong. Each container cut inside its first frame is
    called truncated or cut short, in one line where nothing decodes, in a warning where a broken first frame does."""
    suffix, fmt, codec, options = FIRST_FRAME_CUTS[kind]
    if kind in ("y4m", "gif"):
        whole = (write_y4m if kind == "y4m" else write_gif)(tmp_path / f"whole{suffix}", 40)
    else:
        whole = write_video(tmp_path / f"whole{suffix}", num_frames=40, codec=codec, container_format=fmt,
                            container_options=options)
    assert len(read_video(whole, fps=20)[0]) == 40
    data, (at, size) = open(whole, "rb").read(), _first_packet_span(whole)
    for fraction in (0.02, 0.1, 0.5, 0.9):
        path = tmp_path / f"cut{fraction}{suffix}"
        path.write_bytes(data[:at + max(1, int(fraction * size))])
        try:
            frames, report = read_video(path, fps=20)
        except VideoError as err:
            message = str(err)
            assert message.startswith(f"{path}: truncated ") and "\n" not in message, message
            assert "re-download" in message and not any(w in message for w in ("corrupt", "zero-length", "damaged packets"))
            continue
        assert len(frames) <= 2 and any(w.startswith(("truncated", "cut short")) for w in report.warnings()), report.warnings()
    if kind == "flv":  # as `dataset ingest` says it, the file skipped
        (tmp_path / "in").mkdir()
        shutil.copy(tmp_path / "cut0.5.flv", tmp_path / "in" / "cut.flv")
        write_video(tmp_path / "in" / "whole.mp4", num_frames=12)
        code = main(["dataset", "ingest", "--data", str(tmp_path / "in"), "--format", "video", "--out", str(tmp_path / "ds")])
        said = capsys.readouterr()
        assert code == 1 and f"{tmp_path / 'in' / 'cut.flv'}: truncated flv file: it ends " in said.err, said
        assert "corrupt" not in said.err + said.out, said


COVER_LAYOUTS = {"mp4 cover after": (".mp4", 1), "mp4 cover first": (".mp4", 0), "mkv still first": (".mkv", 0)}


@pytest.mark.parametrize("layout", sorted(COVER_LAYOUTS))
def test_the_video_is_read_not_its_thumbnail_whichever_stream_comes_first(tmp_path, layout):
    suffix, still_index = COVER_LAYOUTS[layout]
    path = write_with_cover(tmp_path / f"clip{suffix}", layout)
    frames, report = read_video(path, fps=20)
    assert frame_index(frames) == list(range(12)) and report.codec == "h264" and not report.warnings()
    assert report.video_stream == 1 - still_index and report.num_video_streams == 2
    # OpenCV reads the first video stream: the picture where it comes first (refused), else the video, said
    if still_index == 0:
        with pytest.raises(VideoError, match=r"reads only the first of the 2 video streams \(#0, 32x32 mjpeg"):
            read_video(path, fps=20, backends=("opencv",))
    else:
        frames, report = read_video(path, fps=20, backends=("opencv",))
        assert frame_index(frames) == list(range(12))
        assert any("2 video streams: OpenCV" in w and "(#0" in w for w in report.warnings()), report.warnings()


def test_an_audio_file_with_cover_art_has_no_video_stream(tmp_path):
    path = write_audio_with_cover(tmp_path / "song.m4a")
    for backends in (("pyav", "opencv"), ("opencv",)):  # OpenCV alone would decode the picture as 1 step
        with pytest.raises(VideoError) as err:
            VideoReader(path, backends=backends)
        message = str(err.value)
        assert message.startswith(f"{path}: no video stream (only an attached picture)"), message
        assert "attached picture" in message.split("holds")[1] and "\n" not in message

def test_the_reader_is_quiet_after_opencv_used_ffmpeg_in_the_process(tmp_path):
    """OpenCV sets its FFmpeg's log level once, when it first uses FFmpeg (a VideoWriter here, as a user's
    code or another test does): the reader quiets it all the same, and still counts FFmpeg's errors."""
    cut = truncate(write_video(tmp_path / "whole.mp4", num_frames=40), tmp_path / "cut.mp4")
    cut_ts = truncate(write_video(tmp_path / "whole.ts", num_frames=40, container_format="mpegts"),
                      tmp_path / "cut.ts")
    script = f"""
import os, cv2
os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)
writer = cv2.VideoWriter({str(tmp_path / "cv2.mp4")!r}, cv2.VideoWriter_fourcc(*"mp4v"), 20, (64, 64))
writer.release()
from worldloom.datasets.video import VideoError, VideoReader, read_video
from worldloom.pipeline.cli import main
try:
    VideoReader({cut!r})
except VideoError as err:
    print("error:", err)
print("ffmpeg_errors:", read_video({cut_ts!r})[1].ffmpeg_errors)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "error:" in done.stdout and "cut.mp4: truncated MP4/MOV file" in done.stdout, done
    assert int(done.stdout.split("ffmpeg_errors:")[1]) > 0, done.stdout
    assert "moov atom" not in done.stderr and "Invalid data" not in done.stderr, done.stderr

def write_gif(path, num_frames: int) -> str:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("gif", rate=20)
        stream.width = stream.height = 64
        stream.pix_fmt = "rgb8"
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(painted(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


@pytest.mark.parametrize("kind", ["mpegts", "gif", "live mkv"])
def test_files_cut_short_that_state_no_length_are_not_taken_as_whole(tmp_path, kind):
    """A .ts, a .gif or a recorder's live mkv (as a crash leaves it) states no length to miss: cut, it
    decodes what it holds without an exception. FFmpeg's error lines say so: a warning."""
    if kind == "gif":
        whole = write_gif(tmp_path / "whole.gif", 40)
    else:
        fmt, options, suffix = {"mpegts": ("mpegts", {}, ".ts"), "live mkv": ("matroska", {"live": "1"}, ".mkv")}[kind]
        whole = write_video(tmp_path / f"whole{suffix}", num_frames=40, container_format=fmt, container_options=options)
    frames, report = read_video(whole, fps=20)
    assert len(frames) == 40 and not report.warnings() and not report.ffmpeg_errors
    cut = truncate(whole, tmp_path / f"cut{Path(whole).suffix}")
    frames, report = read_video(cut, fps=20)
    assert len(frames) < 30 and not report.truncated  # nothing promised, so nothing measurably missing
    assert report.ffmpeg_errors and any("damaged or cut short" in w for w in report.warnings()), report


def write_y4m(path, num_frames: int) -> str:
    """`num_frames` uncompressed yuv420p frames (painted 0, 1, ...) in a YUV4MPEG2 file: no index, no length."""
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=20)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(painted(i), format="rgb24")))
        out.mux(stream.encode())
    return str(path)


@pytest.mark.parametrize("kind", ["mpegts", "m2ts", "y4m"])
def test_files_cut_mid_packet_say_so_wherever_the_cut_falls(tmp_path, kind):
    """A .ts (188-byte packets), an .m2ts (192) or a .y4m (one fixed-size frame after another) cut at a byte
    that FFmpeg passes over without an error line (a .ts cut past 59% of its bytes: the part of a frame
    left is dropped without a word) was labeled as a whole short clip, exit 0, no warning (a new-user trial,
    2026-12-07; field case 05's kind). The file's size, not a whole number of its units, says it was cut."""
    if kind == "y4m":
        whole = write_y4m(tmp_path / "whole.y4m", 40)
    else:
        options = {"mpegts_m2ts_mode": "1"} if kind == "m2ts" else {}
        whole = write_video(tmp_path / f"whole.{kind[:4]}", num_frames=40, container_format="mpegts",
                            container_options=options)
    frames, report = read_video(whole, fps=20)
    assert len(frames) == 40 and not report.warnings(), report.warnings()
    for fraction in (0.59, 0.65, 0.71, 0.83):
        cut = truncate(whole, tmp_path / f"cut{fraction}{Path(whole).suffix}", fraction)
        frames, report = read_video(cut, fps=20)
        assert len(frames) < 40 and frame_index(frames[:-1]) == list(range(len(frames) - 1))  # the last may be broken
        assert any("cut short" in w for w in report.warnings()), (fraction, report.warnings())


def test_truncated_files_are_reported_and_whole_ones_are_not(tmp_path):
    whole_mp4 = write_video(tmp_path / "whole.mp4", num_frames=40, container_options={"movflags": "faststart"})
    whole_mkv = write_video(tmp_path / "whole.mkv", pts_ms=CFR, container_format="matroska")
    for whole, how in ((whole_mp4, "lists"), (whole_mkv, "implies")):
        cut = truncate(whole, tmp_path / f"cut{whole[-4:]}")
        frames, report = read_video(cut, fps=20)
        assert report.truncated and report.expected_frames == 40 and report.decoded_frames < 20
        assert f"decoded {report.decoded_frames} of the 40 frames its container {how}" in report.truncation()
        assert frame_index(frames) == list(range(len(frames)))  # what decodes is kept in order
        assert any(w.startswith("truncated") for w in report.warnings())
        _, report = read_video(whole, fps=20)
        assert not report.truncated and report.decoded_frames == 40 and not report.warnings()
    trimmed = write_video(tmp_path / "trimmed.mp4", pts_ms=[t - 100 for t in CFR])  # 40 listed, 38 shown
    _, report = read_video(trimmed, fps=20)
    assert report.listed_frames == 40 and report.decoded_frames == 38 and not report.truncated
    cut = truncate(whole_mp4, tmp_path / "cut-opencv.mp4")
    shutil.copy(cut, tmp_path / "copy.mp4")
    assert read_video(tmp_path / "copy.mp4", backends=("pyav",))[1].truncated


@pytest.mark.parametrize("codec", ["mpeg4", "ffv1", "huffyuv"])
def test_a_cut_avi_is_truncated_by_its_headers_frame_count(tmp_path, codec):
    """FFmpeg times a cut AVI by the bytes left (1.2 of 2.0 s here), so a 2-second file cut to 60% looked whole
    and was stored in part with exit 0, then counted as done (a new-user trial, session 32): the header's frame
    count (written when the file was finished) is the promise."""
    whole = tmp_path / "whole.avi"
    with av.open(str(whole), "w", format="avi") as out:
        stream = out.add_stream(codec, rate=20)
        stream.width = stream.height = 64
        stream.pix_fmt = "rgb24" if codec == "huffyuv" else "yuv420p"
        for i in range(40):  # 40 frames at 20 fps: 2.0 s
            for packet in stream.encode(av.VideoFrame.from_ndarray(painted(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    _, report = read_video(whole, fps=20)
    assert report.decoded_frames == 40 and not report.truncated and not report.warnings()
    _, report = read_video(truncate(whole, tmp_path / "cut.avi"), fps=20)
    assert report.truncated and report.expected_frames == 40 and report.decoded_frames < 30, report.to_json()
    assert f"of the 40 frames its container lists ({report.decoded_s:.2f} of 2.00 s)" in report.truncation()


@pytest.mark.parametrize("bframes", [0, 2])
def test_a_whole_variable_rate_avi_is_not_truncated(tmp_path, bframes):
    """An AVI states a variable rate by chunks of its time base, empty where no frame is (dropped frames, a finer
    clock): this one's ms clock gives 2500 chunks for 2.5 s of video (2650 with B-frames, whose delay shifts the
    chunks on). The promise was the chunk count over the guessed frame rate (62.5 s) and, with B-frames, the count
    past the delay: whole files were 'truncated' and skipped (a new-user trial, 2026-12-07; field case 05's kind).
    The promise is the chunk count times the time base, met once the demuxer read the last chunk; a cut one is
    still truncated."""
    whole = write_video(tmp_path / "vfr.avi", pts_ms=VFR, container_format="avi", bframes=bframes)
    frames, report = read_video(whole, fps=20)
    assert not report.truncated and report.decoded_frames == 40 and not report.warnings(), report.to_json()
    assert frame_index(frames) == on_screen(VFR, 20)  # by the chunks' times (dts), not libavformat's guessed pts
    data = open(whole, "rb").read()
    (tmp_path / "cut.avi").write_bytes(data[:data.index(b"idx1") // 2])  # half its frames (the index of 2500 is long)
    _, report = read_video(tmp_path / "cut.avi", fps=20)
    assert report.truncated and report.decoded_frames < 30, report.to_json()
    assert f"({report.decoded_s:.2f} of {2.5 + 0.15 * (bframes > 0):.2f} s)" in report.truncation(), report.truncation()


@pytest.mark.parametrize("suffix,fmt", [(".mp4", None), (".mkv", "matroska"), (".webm", "webm")])
def test_a_last_frame_held_longer_lasts_its_stated_duration_and_is_not_truncated(tmp_path, suffix, fmt):
    """A screen recorder holds the last frame (here 1 s after ten 50 ms frames): the container states its
    duration, and the video lasts 1.5 s. Its end is that frame's end, not the interval before it, so it
    gives 30 steps at 20 fps, as ffmpeg's fps filter does, and is whole, not 'truncated'."""
    pts = [50 * i for i in range(11)]
    path = write_video(tmp_path / f"held{suffix}", pts_ms=pts, container_format=fmt, last_ms=1000,
                       codec="libvpx-vp9" if fmt == "webm" else "libx264")
    frames, report = read_video(path, fps=20, backends=("pyav",))
    assert frame_index(frames) == on_screen(pts, 20, last_ms=1000) == list(range(11)) + [10] * 19
    assert not report.truncated and not report.warnings() and report.decoded_s == pytest.approx(1.5)
    frames, _ = read_video(path, fps=7, backends=("pyav",))
    assert frame_index(frames) == on_screen(pts, 7, last_ms=1000)  # 10 steps: the last whole one ends at 1.43 s


@pytest.mark.parametrize("bframes", ["0", "3"])
def test_a_last_frame_ends_where_the_container_says_the_video_ends(tmp_path, bframes):
    """Three frames 30 s apart, H.264 with B-frames (libx264's default), no durations set: the decoder hands
    the last frame the 30 s of another packet, and the video was read as 90 s, 1,800 steps at 20 fps (a
    new-user trial, session 57); the mp4 promises 60.05 s, which ends it (1,201 steps, as without B-frames)."""
    path = tmp_path / f"sparse-bf{bframes}.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=20)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = stream.time_base = MS
        open_encoder(stream.codec_context, {"bf": str(bframes)})
        for i, t in enumerate([0, 30_000, 60_000]):
            frame = av.VideoFrame.from_ndarray(painted(i), format="rgb24")
            frame.pts, frame.time_base = t, MS
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    frames, report = read_video(path, fps=20, backends=("pyav",))
    assert report.promised_s == pytest.approx(60.05) and report.decoded_s == pytest.approx(60.05)
    assert frame_index(frames) == [0] * 600 + [1] * 600 + [2] and not report.truncated


def write_mjpeg_of_two_sizes(path) -> str:
    """Frames 0-19 at 64x64, 20-39 at 96x48, in one MJPEG stream of a Matroska file."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=20)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p"
        stream.codec_context.time_base = Fraction(1, 20)
        wide = av.CodecContext.create("mjpeg", "w")
        wide.width, wide.height, wide.pix_fmt, wide.time_base = 96, 48, "yuvj420p", Fraction(1, 20)
        for i in range(40):
            ctx = stream.codec_context if i < 20 else wide
            picture = painted(i, 96)[:48] if i >= 20 else painted(i)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, Fraction(1, 20)
            for packet in ctx.encode(frame):
                packet.stream, packet.time_base = stream, Fraction(1, 20)
                out.mux(packet)
    return str(path)


def test_opencvs_size_check_does_not_decode_an_mjpeg_a_second_time(tmp_path):
    """Where OpenCV reads a file, its frames' sizes come from PyAV's decode of the key frames: an MJPEG is all key
    frames, so after OpenCV had decoded its 40 frames PyAV decoded all 40 again (43 JPEG decodes in FFmpeg's log:
    3 more are av.open's probes). A JPEG states its size in its start of frame: a frame whose header states a
    size already decoded is not decoded again (here 2, one per size), and the sizes found are the same.
    Counted from FFmpeg's own debug lines (PyAV's libavcodec: OpenCV's bundled FFmpeg logs apart)."""
    path = write_mjpeg_of_two_sizes(tmp_path / "sizes.mkv")
    av.logging.set_level(av.logging.DEBUG)
    try:
        with av.logging.Capture(local=False) as lines:
            frames, report = read_video(path, fps=20, backends=("opencv",))
    finally:
        av.logging.set_level(av.logging.PANIC)
    jpeg_decodes = sum(1 for _, name, text in lines if name == "mjpeg" and text.startswith("marker=d8"))
    assert frames.shape == (40, 64, 64, 3) and report.other_sizes == ["96x48"] and report.resized_frames == 20
    assert 2 <= jpeg_decodes <= 5, jpeg_decodes  # the 2 sizes and av.open's probes of the first frame; was 43


def test_a_stream_whose_size_changes_is_stored_at_its_first_size_and_says_so(tmp_path):
    """Frames 0-19 at 64x64, 20-39 at 96x48 in one MJPEG stream: the second half was stored squashed to 64x64 with
    no word (a new-user trial, session 57). A dataset holds one size, so they are still stored at the first
    frame's; the report's warnings say so, and its counts are recorded (`resized_frames`, `other_sizes`), from
    either backend (OpenCV's path said nothing until 2026-12-07)."""
    path = write_mjpeg_of_two_sizes(tmp_path / "sizes.mkv")
    frames, report = read_video(path, fps=20, backends=("pyav",))
    assert frames.shape == (40, 64, 64, 3) and report.resized_frames == 20 and report.other_sizes == ["96x48"]
    (line,) = [w for w in report.warnings() if "size changes" in w]
    assert "20 of 40 frames are 96x48" in line and "stored at the first frame's 64x64" in line, line
    # OpenCV, which reads it where PyAV fails, scales the later frames itself and said nothing: the same line now.
    frames, report = read_video(path, fps=20, backends=("opencv",))
    assert frames.shape == (40, 64, 64, 3) and report.backend == "opencv" and report.other_sizes == ["96x48"]
    assert [w for w in report.warnings() if "size changes" in w] == [line]
    steady = write_video(tmp_path / "steady.mp4", num_frames=40)  # H.264 of one size: no such line
    assert read_video(steady, fps=20, backends=("opencv",))[1].warnings() == []


def test_steps_end_with_the_last_whole_step_as_ffmpeg_fps_ends(tmp_path):
    """40 frames at 30 fps last 1.333 s: 26 whole steps of 1/20 s, the 27th would outlast the video."""
    path = write_video(tmp_path / "v30.mp4", num_frames=40, rate=30)
    assert len(read_video(path, fps=20)[0]) == 26
    assert len(read_video(path, fps=7)[0]) == 9
