"""Atomic writes on local disk: a file is written under a temporary name, then renamed into place.

    from worldloom.io import atomic_path, atomic_write_json
    atomic_write_json(run / "state.json", {"step": 100})
    with atomic_path(run / "curves.png") as tmp:      # the temporary name keeps the suffix,
        fig.savefig(tmp)                              # so matplotlib and OpenCV pick the format

A reader sees the old file or the new one, never half of one; a crash or an exception leaves
the old file and no temporary behind (the temporary is hidden, `.NAME.tmp-PID-TOKEN.SUFFIX`,
so listings and globs skip it). Only a kill no handler sees (SIGKILL, power loss) leaves one;
between the two renames that replace a directory it leaves none at NAME, which `restore_dir` repairs
(worldloom.checkpoint calls it where it looks for a run's checkpoint/). Object stores are written whole by pyarrow and need none of
this (`worldloom.datasets.storage`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "check_local", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "finite_json", "json_text",
           "temporary_name",
           "temporaries", "restore_dir",
           "write_video", "VideoWriter", "gif_bytes_per_frame", "write_image", "check_image_out", "check_video_out", "check_not_in_dataset",
           "VIDEO_WRITE_SUFFIXES"]

VIDEO_WRITE_SUFFIXES = (".mp4", ".gif")


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden sibling of `path` unique to this process and call, with the same suffix."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def final_name(path: str) -> str:
    """The path a temporary_name stands for (`d/.w.tmp-12-0a1b2c3d.png` -> `d/w.png`); any other path as it is."""
    import re

    head, name = os.path.split(path)
    found = re.fullmatch(r"\.(.+)\.tmp-\d+-[0-9a-f]{8}(\.[^.]*)?", name)
    return os.path.join(head, found.group(1) + (found.group(2) or "")) if found else path


def temporaries(path: str | os.PathLike) -> list[Path]:
    """The hidden siblings of `path` named by temporary_name (a writer's, or one a kill left behind)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.tmp-\d+-[0-9a-f]{{8}}{re.escape(path.suffix)}")
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    except OSError:  # no such folder, or not readable: nothing of ours there
        return []


def restore_dir(path: str | os.PathLike, rank: Callable[[Path], Any]) -> Path | None:
    """Put a directory back at `path` when a kill (SIGKILL, power loss) between _swap_dirs' two renames
    left it missing, with the old and the new copy under temporary names: of the temporaries that are
    directories, the one `rank` ranks highest (None: incomplete, never chosen) is renamed to `path`
    and the others deleted. Returns the name it had; None (nothing touched) when `path` exists or no
    copy is complete (a writer may still be filling its temporary)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        return None
    ranked = [(key, p) for p in temporaries(path) if p.is_dir() and not p.is_symlink() and (key := rank(p)) is not None]
    if not ranked:
        return None
    best = max(ranked, key=lambda kp: kp[0])[1]
    try:
        os.replace(best, path)
    except OSError:  # another process put one back first
        return None
    for leftover in temporaries(path):
        _remove(leftover)
    return best


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to `path`, on an exception delete it.

    Works for a file or a directory written at the temporary path. A directory replaces an
    existing directory at `path` (the old one is renamed aside, then deleted). The folder `path` goes
    in is made where missing, so a result is not lost at its last step for want of it (the commands
    check `--out` before their work: `check_parents`).
    """
    path = Path(path)
    tmp = temporary_name(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            _swap_dirs(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _swap_dirs(new: Path, path: Path) -> None:
    """Put the directory `new` at `path` and delete the old one there. A directory cannot be renamed
    over another, so it takes two renames; between them `path` would name nothing, and a second
    Ctrl-C there lost the last good checkpoint (a resume started from step 0). SIGINT and SIGTERM
    wait until both are done, and an error in the second puts the old directory back. SIGKILL cannot
    wait: after one there, `restore_dir` puts the newer whole copy back."""
    old = temporary_name(path)
    swapped = False
    try:
        with _signals_held():
            os.replace(path, old)
            try:
                os.replace(new, path)
            except BaseException:
                os.replace(old, path)
                raise
            swapped = True
    finally:
        if swapped:  # also when a held signal is delivered on the way out: the new one is in place
            _remove(old)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM taken inside the block reach their handlers when it ends (main thread only,
    where Python runs every signal handler: masking the thread would not do, since the kernel hands a
    signal to any thread of the process that does not block it, and torch starts several)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken: list[int] = []
    signums = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: taken.append(signum)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in taken:
            signal.raise_signal(signum)


def _remove(path: Path) -> None:
    """Delete a temporary file or folder; a clean-up that cannot (a read-only disk, where it was never made)
    leaves the error that called it to be the one raised."""
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(value: Any) -> Any:
    """`value` as strict JSON holds it: every NaN or infinity as None (Python's json writes `NaN`, which jq,
    JavaScript's JSON.parse and pyarrow's JSON reader refuse), numpy scalars and arrays as Python's, tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":  # np.float32(nan), arrays
        return finite_json(value.tolist())
    return value


def json_text(data: Any, indent: int | None = 2, **kwargs: Any) -> str:
    """`data` as strict JSON text (finite_json; non-JSON values, e.g. paths, as strings): what every report,
    manifest and config the project writes is made with, so any JSON reader reads it."""
    return json.dumps(finite_json(data), indent=indent, default=str, allow_nan=False, **kwargs)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write `data` as strict JSON (json_text: a NaN or an infinity as null) to `path` atomically."""
    atomic_write_text(path, json_text(data, indent))


def write_image(path: str | os.PathLike, image) -> Path:
    """An RGB uint8 image (H, W, 3) to PNG (or any type Pillow knows by the suffix), atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:  # (which makes the folder)
        Image.fromarray(image).save(tmp)
    return path


def image_write_suffixes() -> list[str]:
    """The file name extensions Pillow can write (sorted, with the dot)."""
    from PIL import Image

    Image.init()
    return sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE)


def check_parents(path: str | os.PathLike, flag: str = "--out", advice: str = "") -> None:
    """UserError (one line naming `flag`) when a folder above `path` is a file: its folder could never be
    made, and writing would end in a traceback after the work (`--out notes.txt/sheet.png`); or when it is
    an object-store URI (what calls this writes local files). `advice`
    ends the line (default: choose another `flag`)."""
    from worldloom.errors import UserError

    check_local(path, flag)
    blocker = next((q for q in Path(path).absolute().parents if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{flag} {path}: {blocker} is a file, so no folder can be made there; {advice or f'choose another {flag}'}")


def check_local(path: str | os.PathLike, flag: str = "--out", what: str = "this") -> None:
    """UserError (one line naming `flag` and `what` is written there) when `path` is an object-store URI where a
    local file or folder is written: pathlib reads `s3://b/x.mp4` as the local `s3:/b/x.mp4`, and the output
    landed in a folder named `s3:` (a new-user trial, session 58). Call it on the path as given, before `Path()`."""
    from worldloom.errors import UserError
    from worldloom.paths import redact_text

    if "://" in os.fspath(path):
        raise UserError(f"{flag} {redact_text(os.fspath(path))} is an object-store URI: {what} is written to a local "
                        "file or folder (datasets may live in an object store: --data and a dataset's --out take "
                        "URIs); give a local path")


def check_image_out(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` as a Path, checked before anything is computed: UserError (one line naming `flag`) for
    a folder, or for a name whose extension Pillow cannot write (it lists the ones it can)."""
    from worldloom.errors import UserError

    check_local(path, flag)
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give an image file name, e.g. {path / 'sheet.png'}")
    suffixes = image_write_suffixes()
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: cannot write an image with the extension {path.suffix or '(none)'!r}; "
                        f"use .png or another Pillow can write: {' '.join(suffixes)}")
    check_parents(path, flag)
    check_not_in_dataset(path, flag)
    return path


def check_video_out(path: str | os.PathLike, name: str, flag: str = "--out") -> Path:
    """Where a video goes, checked before anything is computed: `path` itself when it ends in a
    suffix of VIDEO_WRITE_SUFFIXES, `path/NAME.mp4` when it is an existing folder (`name` without
    '/'); else a UserError (one line naming `flag` and the suffixes it takes)."""
    from worldloom.errors import UserError

    check_local(path, flag)
    path = Path(path)
    if path.is_dir():
        check_not_in_dataset(path / f"{name.replace('/', '_')}.mp4", flag)
        return path / f"{name.replace('/', '_')}.mp4"
    if path.suffix.lower() not in VIDEO_WRITE_SUFFIXES:
        raise UserError(f"{flag} {path}: give a video file name ending in {' or '.join(VIDEO_WRITE_SUFFIXES)}, "
                        f"or an existing folder (the video is then {name.replace('/', '_')}.mp4 in it)")
    check_parents(path, flag)
    check_not_in_dataset(path, flag)
    return path


def check_not_in_dataset(path: Path, flag: str = "--out") -> None:
    """UserError (one line naming `flag`) for a file to be written into a WorldLoom dataset's folder: a dataset
    holds only its own files (a writer's sweep deletes what frames/ does not list), so the file would be lost
    or mixed into the data."""
    from worldloom.errors import UserError
    from worldloom.folders import dataset_holding

    if (dataset := dataset_holding(path.parent)) is not None:
        raise UserError(f"{flag} {path} lies inside the WorldLoom dataset {dataset}; write it to a folder outside it")


def write_video(path: str | os.PathLike, frames, fps: float, *, crf: int = 18, pix_fmt: str = "yuv420p") -> Path:
    """RGB uint8 frames (T, H, W, 3) to .mp4 (H.264 through PyAV, which every browser plays; odd
    sizes are cropped by one pixel, as 4:2:0 needs) or .gif (Pillow), atomically: `VideoWriter`
    given every frame (`frames` may be any iterable, a generator too).

    `pix_fmt="yuv444p"` keeps pixel-art colours exact but some players refuse it. Raises ValueError
    for another suffix or no frames.
    """
    with VideoWriter(path, fps, crf=crf, pix_fmt=pix_fmt) as video:
        for frame in frames:
            video.write(frame)
    return Path(path)


class EncoderOptionError(ValueError):
    """An option given to a PyAV encoder that the encoder did not take (misspelt, or another encoder's)."""


def open_encoder(ctx, options: dict[str, str]) -> None:
    """Open PyAV's codec context `ctx` (a `CodecContext.create(..., "w")`, or an output stream's `codec_context`:
    the container then finds it open and writes its header from it) with the encoder `options`, and raise
    EncoderOptionError naming each option the encoder left unused.

    libavcodec takes the options it knows and hands the rest back; PyAV leaves those in `ctx.options`
    after opening and encodes without them, saying nothing. Until 2026-12-08 nothing looked: libx264's
    "no B-frames" asked as 'bframes' (its name is 'bf') was ignored, and every H.264 chunk had B-frames.
    A bad value of a known option is libav's own error at the open (`ArgumentError`, e.g. "invalid preset").
    """
    ctx.options = dict(options)
    ctx.open()
    unused = dict(ctx.options)
    if unused:
        names = ", ".join(f"{name!r}" for name in unused)
        raise EncoderOptionError(f"encoder {ctx.codec.name} does not take the option(s) {names} (of {dict(options)}); "
                                 f"`ffmpeg -h encoder={ctx.codec.name}` lists the ones it has")


class VideoWriter:
    """A video written frame by frame, atomically (the file appears at `path` on `close`, complete):

        with VideoWriter("ep.mp4", fps=20) as video:   # .mp4 or .gif
            for frame in frames:                       # RGB uint8 (H, W, 3), every one the same size
                video.write(frame)

    An .mp4 encodes each frame as it comes (PyAV's H.264), so what it holds does not grow with the
    video's length: a few frames in the encoder's lookahead. A .gif cannot: Pillow's GIF writer writes
    a file only once it has every frame (a run of identical frames becomes one frame with their delays
    added up, and the last frame's delay comes from the video's length: `gif_timing`), so each frame is
    held until `close`, as a palette image (1 byte a pixel, a third of RGB; what Pillow makes of it
    anyway, so the file is the same), and a frame the GIF leaves out (above 50 fps) not at all;
    `gif_bytes_per_frame` is that cost. An exception inside the `with` (or `abort`) leaves no file and
    no temporary. ValueError for another suffix, for no frames, or for a frame of another size.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, crf: int = 18, pix_fmt: str = "yuv420p") -> None:
        self.path, self.fps, self.crf, self.pix_fmt = Path(path), fps, crf, pix_fmt
        self.suffix = self.path.suffix.lower()
        if self.suffix not in VIDEO_WRITE_SUFFIXES:
            raise ValueError(f"{self.path}: unknown video type {self.suffix!r}; use {' or '.join(VIDEO_WRITE_SUFFIXES)}")
        self.tmp = temporary_name(self.path)
        self.num_frames = 0
        self._shape: tuple[int, ...] | None = None
        self._container = self._stream = None  # .mp4: opened at the first frame (its size)
        self._held: list = []  # .gif: the palette images of the frames it shows
        self._last_start_cs: int | None = None

    def write(self, frame) -> None:
        """Add one RGB uint8 frame (H, W, 3)."""
        import numpy as np

        frame = np.asarray(frame)
        if self._shape is None:
            self._shape = frame.shape
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif frame.shape != self._shape:
            raise ValueError(f"{self.path}: frame {self.num_frames} is {frame.shape}, the first was {self._shape}")
        if self.suffix == ".gif":
            self._hold(frame)
        else:
            self._encode(frame)
        self.num_frames += 1

    def _hold(self, frame) -> None:
        from PIL import Image

        start = _gif_start_cs(self.num_frames, self.fps)
        if self._last_start_cs is not None and start - self._last_start_cs < GIF_MIN_DELAY_CS:
            return  # on screen for under 2 cs: the GIF leaves it out (gif_timing)
        self._last_start_cs = start
        # what Pillow's GIF writer turns an RGB frame into (GifImagePlugin._normalize_mode), done now to hold a third
        self._held.append(Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE))

    def _encode(self, frame) -> None:
        import av
        import numpy as np

        if self._container is None:
            from fractions import Fraction

            h, w = frame.shape[:2]
            self._container = av.open(str(self.tmp), mode="w", format="mp4")
            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.height, self._stream.width, self._stream.pix_fmt = h - h % 2, w - w % 2, self.pix_fmt
            open_encoder(self._stream.codec_context, {"crf": str(self.crf)})
        h, w = self._stream.height, self._stream.width
        image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
        self._container.mux(self._stream.encode(image))

    def close(self) -> Path:
        """Finish the file and put it at `path`; returns `path`. ValueError (and no file) when no frame was written."""
        if not self.num_frames:
            self.abort()
            raise ValueError(f"{self.path}: no frames to write")
        try:
            if self.suffix == ".gif":
                shown, delays_ms = gif_timing(self.num_frames, self.fps)
                assert len(shown) == len(self._held), (len(shown), len(self._held))
                first, rest = self._held[0], self._held[1:]
                self._held = []  # Pillow holds its own copy of each frame while it writes; ours go as it takes them
                first.save(self.tmp, format="GIF", save_all=True, append_images=_drained(rest), duration=delays_ms, loop=0)
            else:
                self._container.mux(self._stream.encode())
                self._container.close()
                self._container = None
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop without a file: the temporary (and whatever it holds) is deleted."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self._held = []
        _remove(self.tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def _drained(images: list):
    """`images` one at a time, each let go of here as it is handed on."""
    from collections import deque

    queue = deque(images)
    images.clear()
    while queue:
        yield queue.popleft()


def gif_bytes_per_frame(height: int, width: int) -> int:
    """Bytes a .gif's `VideoWriter` holds for each frame until it is closed (its palette image), about."""
    return height * width + 8192  # the pixels, and the image's palette and object (measured: 77.6 kB a 256x284 frame)


def _gif_start_cs(k: int, fps: float) -> int:
    """Where frame `k` starts in a GIF at `fps`, whole centiseconds (`gif_timing`)."""
    return math.floor(100 * k / fps + 1e-9)


# A GIF states each frame's delay in whole centiseconds, and browsers play a delay under 2 cs as 10 cs
# (WebKit's and Firefox's "too fast" rule); so a GIF's frames last 2 cs at least: 50 frames a second.
GIF_MIN_DELAY_CS = 2


def gif_timing(num_frames: int, fps: float) -> tuple[list[int], list[int]]:
    """(the frames a GIF shows, each one's delay in ms, whole centiseconds): frame k starts at
    floor(100 k / fps) cs, the last ends at ceil(100 n / fps) cs, so every step k / fps shows frame k and the
    clip lasts its n / fps seconds; one delay of round(100 / fps) cs drifted (30 fps played at 33.3).
    Above 50 fps, frames that would last under 2 cs are left out (the frame on screen at each kept start)."""
    starts = [_gif_start_cs(k, fps) for k in range(num_frames)]
    end = math.ceil(100 * num_frames / fps - 1e-9)
    shown: list[int] = []
    for k, start in enumerate(starts):
        if shown and start - starts[shown[-1]] < GIF_MIN_DELAY_CS:
            continue
        shown.append(k)
    stops = [starts[k] for k in shown[1:]] + [max(end, starts[shown[-1]] + GIF_MIN_DELAY_CS)]
    return shown, [10 * (stop - starts[k]) for k, stop in zip(shown, stops, strict=True)]
