"""What decoding one video file found: `DecodeReport`, filled by the backends (`video_backends.py`) and the
step clock (`video_timing.py`) while `worldloom.datasets.video` reads the file, final once the last step is read.

    from worldloom.datasets.video import read_video
    frames, report = read_video("clip.mp4", fps=20)
    report.backend, report.codec, report.timestamps   # "pyav", "h264", "pts"
    report.truncation()                               # 'decoded 9 of the 40 frames its container lists (0.45 of 2.00 s)'
    report.warnings()                                 # one line per thing a user should know; [] when all went as stated

Truncation is decoded time short of the container's promise by more than two frame intervals
(`worldloom.datasets.video`'s docstring says what counts as the promise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# What an episode's env_config records of its video's decode (`decode`: dataset ingest, idm label)
SUMMARY_KEYS = ("backend", "container", "codec", "timestamps", "decoded_frames", "expected_frames", "truncated",
                "decode_errors", "ffmpeg_errors", "ffmpeg_last_error", "ffmpeg_unsupported", "unsupported_packets",
                "unsupported_errors", "tried", "video_stream", "num_video_streams",
                "cut_bytes", "resized_frames", "other_sizes", "num_gaps", "missing_frames")


# FFmpeg's log words for a feature its decoder lacks (libavcodec/mjpegdec.c names a JPEG's start-of-frame marker)
LACKED_FEATURES = {f"coding type ({code})": "JPEG arithmetic coding" for code in ("c9", "ca", "cb", "cd", "ce", "cf")}


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
    num_untimed: int = 0  # frames placed at the header rate (no timestamp), or between their neighbours (misstamped)
    num_resets: int = 0  # times the timestamps went back and went on from there (recordings joined): joined on
    num_same_time: int = 0  # frames whose timestamp equals the frame before's: each replaces that one on screen
    num_gaps: int = 0  # timing="frames" only: places where the next frame comes over 1.5 step intervals later
    missing_frames: int = 0  # the step intervals those gaps leave without a frame
    first_gap_s: float | None = None  # the time of the frame before the first gap
    decode_errors: int = 0  # packets that did not decode (skipped)
    unsupported: str = ""  # the decoder's "not implemented" (ENOSYS): it cannot decode this stream here, e.g.
    # FFmpeg's native av1 decoder, which needs hardware acceleration; not damage
    ffmpeg_errors: int = 0  # error messages FFmpeg logged while reading it: damaged or cut-short data
    ffmpeg_last_error: str = ""  # the last of them that is damage, e.g. "matroska,webm: File ended prematurely" (the
    # last of all where all are what a lacked feature led to)
    ffmpeg_unsupported: str = ""  # the first of FFmpeg's lines (a warning or an error) that says the decoder lacks a
    # feature, e.g. "mjpeg: unsupported coding type (c9)" (JPEG arithmetic coding: FFmpeg returns "invalid data"
    # for it), "h264: Different chroma and luma bit depth is not implemented" (a warning, then errors)
    unsupported_packets: int = 0  # of `decode_errors`, those that failed from such a line until a frame decoded again:
    # what the lacked feature led to ("non-existing PPS 0 referenced" after its parameter set was refused), not damage
    unsupported_errors: int = 0  # of `ffmpeg_errors`, the lines logged while so
    num_steps: int = 0
    sample_aspect_ratio: str = ""  # the pixels' shape where not square ("4:3": widened to square pixels), else ""
    video_stream: int | None = None  # the container's index of the stream read (None: OpenCV's, unknown)
    num_video_streams: int | None = None  # video streams in the file, attached pictures included (None: unknown)
    tried: list[str] = field(default_factory=list)  # backends tried before `backend`, and why they gave nothing
    cut_bytes: int = 0  # bytes at the file's end past its last whole unit (`cut_unit`): a file cut mid-packet
    cut_unit: str = ""  # e.g. "188-byte MPEG-TS packet"; "" where the file ends on a unit's end or has no such units
    resized_frames: int = 0  # frames of another size than the stream's first (its size changed mid-stream), stored
    # resized to the first's: a dataset holds one size
    other_sizes: list[str] = field(default_factory=list)  # those frames' sizes, "WxH", in the order first seen

    @property
    def timestamps(self) -> str:
        """'pts', 'header rate' (none usable), 'pts, N frames at the header rate' and/or 'pts, reset K times'."""
        if self.decoded_frames > 1 and self.num_untimed >= self.decoded_frames - 1:
            return "header rate"
        notes = [f"{self.num_untimed} frames at the header rate"] if self.num_untimed else []
        if self.num_resets:
            notes.append(f"reset {self.num_resets} time{'s' if self.num_resets > 1 else ''}")
        return ", ".join(["pts", *notes])

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
                       f"(missing, or earlier than both neighbours'): placed at the header rate or between them")
        if self.num_resets:
            out.append(f"its timestamps start again {self.num_resets} time(s) (recordings joined into one file, or a "
                       "clock that wrapped): each part kept its own timing, joined one frame after the part before")
        if self.num_gaps:
            out.append(f"its frames skip time {self.num_gaps} time(s), first after the frame at {self.first_gap_s:.2f} s: "
                       f"about {self.missing_frames} frame(s) of the recording are not in the file (dropped, or not "
                       "decoded); each decoded frame is one step, so from there on a frame pairs with an action "
                       "logged before it (cut the recording there, or re-download it)")
        if self.num_same_time:
            out.append(f"{self.num_same_time} frame(s) have the timestamp of the frame before: the later of each is "
                       "the one shown (as ffmpeg's fps filter shows it)")
        if self.backend == "opencv" and (self.num_video_streams or 0) > 1:
            out.append(f"{self.num_video_streams} video streams: OpenCV, which read it, cannot choose one and read the "
                       f"first (#{self.video_stream}, the one ffmpeg picks too); the others were left out")
        if self.sample_aspect_ratio.startswith("ignored"):
            out.append(f"sample aspect ratio {self.sample_aspect_ratio}: frames kept at their stored size")
        if self.resized_frames:
            out.append(f"its size changes mid-stream: {self.resized_frames} of {self.decoded_frames} frames are "
                       f"{', '.join(self.other_sizes)} where it starts at another size; stored at the first frame's "
                       f"{self.width}x{self.height}, their shape changed (cut the file where its size changes to keep "
                       "each part's)")
        damaged = self.decode_errors - self.unsupported_packets
        if self.unsupported_packets:
            out.append(f"{self.unsupported_packets} packets did not decode and were skipped "
                       f"({self.ffmpeg_unsupported_words()}: not damage)")
        if damaged:
            out.append(f"{damaged} {'other ' * bool(self.unsupported_packets)}packets did not decode and were skipped")
        if self.cut_bytes and not self.truncated:
            out.append(f"cut short: the file ends {self.cut_bytes} bytes into a {self.cut_unit}, the frames after it "
                       f"missing ({self.decoded_frames} decoded, {self.decoded_s:.2f} s); re-download or re-copy it")
        damage_errors = self.ffmpeg_errors - self.unsupported_errors  # the lines a lacked feature led to: said above
        if damage_errors > 0 and not self.truncated:
            out.append(f"damaged or cut short: FFmpeg reported {damage_errors} error(s) reading it (last: "
                       f"{self.ffmpeg_last_error}); frames may be missing or broken (re-download or re-export it)")
        return out

    def ffmpeg_unsupported_words(self) -> str:
        """The feature FFmpeg's decoder lacks, as its log line says it, named where FFmpeg's words are a code."""
        line = self.ffmpeg_unsupported
        feature = next((name for code, name in LACKED_FEATURES.items() if code in line.lower()), None)
        return f"FFmpeg: {line}" + (f": {feature}" if feature else "")

    def to_json(self) -> dict:
        return {**asdict(self), "timestamps": self.timestamps, "truncated": self.truncated,
                "expected_frames": self.expected_frames}
