"""Decoded frames on a step clock: the time half of `worldloom.datasets.video`, whose docstring states
the rules (`RESAMPLING`).

    timed = _timed(frames, report, fallback_fps=20.0)   # (s since the first frame, frame, stated duration)
    steps = _steps(timed, 20.0, report)                 # step k's frame: the last with time <= k / fps
    steps = _each_frame(timed, 20.0, report)            # or one step per decoded frame (timing="frames")

Frames without a usable timestamp are placed at the header rate (`_timed`); the steps end where
ffmpeg's fps filter ends them (`_end_s`). Each fills the report's counts as it goes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .video_report import DecodeReport

TIME_EPS_S = 1e-6  # timestamps within a microsecond of a step's time count as on screen at it


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
    one header-rate interval. ffmpeg's fps filter ends the stream at the same time, but not past the time
    the container promises (`promised_s`) where the last frame starts before it: a decoder that reorders
    B-frames hands the last frame the duration of another packet, so three frames 30 s apart in an H.264
    mp4 that promises 60.05 s were held 30 s past its end (1,800 steps at 20 fps for 1,201; a new-user
    trial, session 57), and the gap before the last frame is no better a guess."""
    end = last_t + (duration_s or interval or 1.0 / (report.header_fps or fps))
    promised = report.promised_s
    return promised if promised is not None and last_t < promised < end else end


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
