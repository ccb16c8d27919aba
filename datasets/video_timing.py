"""Decoded frames on a step clock: the time half of `worldloom.datasets.video`, whose docstring states
the rules (`RESAMPLING`).

    timed = _timed(frames, report, fallback_fps=20.0)   # (s since the first frame, frame, stated duration)
    steps = _steps(timed, 20.0, report)                 # step k's frame: the last with time <= k / fps
    steps = _each_frame(timed, 20.0, report)            # or one step per decoded frame (timing="frames")

Frames without a usable timestamp are placed at the header rate, a reset clock is joined on (`_timed`); the steps end where
ffmpeg's fps filter ends them (`_end_s`). Each fills the report's counts as it goes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .video_report import DecodeReport

TIME_EPS_S = 1e-6  # timestamps within a microsecond of a step's time count as on screen at it


def _timed(frames: Iterator[tuple[float | None, np.ndarray, float | None]], report: DecodeReport,
           fallback_fps: float) -> Iterator[tuple[float, np.ndarray, float | None]]:
    """(time since the first frame in seconds, frame, its stated duration). A frame keeps its own time:
    one equal to the frame before's replaces that one on screen (`_steps` shows the later, as ffmpeg's fps
    filter does; `num_same_time`); one with no timestamp is placed one header interval after the frame
    before (`num_untimed`). A time earlier than the last one read is judged by the frame after it: where
    that one goes on from the earlier times, the frame was misstamped and is placed between its neighbours
    (`num_untimed`); where it goes on from the earlier frame's, the clock was reset (recordings joined,
    `cat a.ts b.ts`; a counter that wrapped) and what follows keeps its own spacing, its first frame one
    interval after the frame before (`num_resets`), as ffmpeg's MPEG-TS demuxer joins a discontinuity.
    Until 2026-12-07 every frame after a reset was counted untimed and placed at the header rate, and
    the frames after a repeated timestamp were pushed later (a new-user trial, session 58)."""
    interval = 1.0 / (report.header_fps or fallback_fps)
    offset: float | None = None  # a frame's time: its own t + offset (the first frame's is 0, a reset moves it)
    last = last_real = 0.0  # the time given the frame before; the latest time placed by a frame's own stamp
    gap = interval  # the frame before's duration, where it states one: the step from it to a reset's first frame
    held: tuple[float, np.ndarray, float | None] | None = None  # a frame whose time went back, until the next one

    def place(now: float, frame: np.ndarray, duration_s: float | None):
        nonlocal last, gap
        report.decoded_frames += 1
        last, gap = now, duration_s or interval
        return now, frame, duration_s

    for t, frame, duration_s in frames:
        if held is not None:
            back_t, back_frame, back_duration = held
            held = None
            if t is not None and t + offset > last_real + TIME_EPS_S:  # the frame after goes on from before: misstamped
                report.num_untimed += 1
                yield place(min(last + interval, (last + t + offset) / 2), back_frame, back_duration)
            else:  # the clock was reset: the held frame starts a new spacing
                report.num_resets += 1
                offset = last + gap - back_t
                last_real = last + gap
                yield place(last_real, back_frame, back_duration)
        if offset is None:
            offset = -(t if t is not None else 0.0)
            yield place(0.0, frame, duration_s)
        elif t is None:
            report.num_untimed += 1
            yield place(last + interval, frame, duration_s)
        elif t + offset < last_real - TIME_EPS_S:
            held = (t, frame, duration_s)
        else:
            if abs(t + offset - last_real) <= TIME_EPS_S:
                report.num_same_time += 1
            last_real = max(last_real, t + offset)
            yield place(max(t + offset, last), frame, duration_s)  # after untimed frames placed ahead: at the last
    if held is not None:  # the last frame went back: nothing after it to say why
        report.num_untimed += 1
        yield place(last + interval, held[1], held[2])


def _end_s(last_t: float, duration_s: float | None, interval: float | None, report: DecodeReport, fps: float) -> float:
    """When the last frame leaves the screen: its start plus its own duration where the container states
    one (a recorder that holds the last frame for a second says so), else the interval before it, else
    one header-rate interval. ffmpeg's fps filter ends the stream at the same time, but not past the time
    the container promises (`promised_s`) where the last frame starts before it: a decoder that reorders
    B-frames hands the last frame the duration of another packet, so three frames 30 s apart in an H.264
    mp4 that promises 60.05 s were held 30 s past its end (1,800 steps at 20 fps for 1,201; a new-user
    trial, session 57), and the gap before the last frame is no better a guess."""
    end = last_t + (duration_s or interval or 1.0 / (report.header_fps or fps))
    promised = report.promised_s
    return promised if promised is not None and last_t < promised < end else end


GAP_INTERVALS = 1.5  # a frame this many step intervals after the one before: the recording lost frame times there


def _each_frame(timed: Iterator[tuple[float, np.ndarray, float | None]], fps: float,
                report: DecodeReport) -> Iterator[np.ndarray]:
    """Every decoded frame as one step; the time they cover is measured as `_steps` measures it. A frame more
    than GAP_INTERVALS steps of `fps` (the rate the recording logged its actions at) after the frame before
    is counted as a gap (`num_gaps`, `missing_frames`, `first_gap_s`): the frames of the times between
    are not in the file (dropped by the recorder, or packets that did not decode), so from there on frame i
    shows a later time than the recording's line i. Until 2026-12-07 nothing said so (a new-user trial)."""
    prev_t, interval, duration_s = None, None, None
    for t, frame, stated_s in timed:
        if prev_t is not None:
            interval = t - prev_t
            if interval * fps > GAP_INTERVALS + TIME_EPS_S:
                report.num_gaps += 1
                report.missing_frames += max(1, round(interval * fps) - 1)
                if report.first_gap_s is None:
                    report.first_gap_s = prev_t
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
