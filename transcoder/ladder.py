"""The HLS ladder: which renditions a source gets, at which size, bit rate and H.264 level.

Rungs are named by their short side (360p, 480p, 720p, 1080p), so a portrait 1080x1920 source
gets 360x640, 480x854, 720x1280 and 1080x1920. A rung is used only when the source's short side
reaches it (no upscaling); a source below 360p gets one rendition at its own size. Sizes are even
(4:2:0 chroma needs it) and never exceed the source's. Everything here is pure and deterministic,
so a job that runs twice asks ffmpeg for the same outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.media import ProbeResult


@dataclass(frozen=True, slots=True)
class Rung:
    short_side: int
    # Target average video bit rate (bits/s) at up to 30 frames per second.
    video_bitrate: int


LADDER: tuple[Rung, ...] = (
    Rung(360, 800_000),
    Rung(480, 1_400_000),
    Rung(720, 2_800_000),
    Rung(1080, 5_000_000),
)
# Capped VBR: peaks may reach maxrate, smoothed over a buffer of bufsize.
MAXRATE_FACTOR = 1.07
BUFSIZE_FACTOR = 1.5
# Above 30 fps every rung gets this much more.
HIGH_FPS_FACTOR = 1.5
MAX_FPS = 60.0
# Assumed (and forced with an fps filter) when ffprobe cannot tell the frame rate.
DEFAULT_FPS = 30.0
MIN_VIDEO_BITRATE = 200_000
DEFAULT_AUDIO_BITRATE = 128_000
# H.264 High profile (profile_idc 100, no constraint flags), as RFC 6381 spells it in CODECS.
H264_HIGH = "6400"
AAC_LC = "mp4a.40.2"

# H.264 Table A-1 from level 3 up: (level, max macroblocks/s, max frame size in macroblocks,
# max video bit rate in kbit/s for Baseline/Main; High may use 1.25 times that).
_LEVELS: tuple[tuple[str, int, int, int], ...] = (
    ("3.0", 40_500, 1_620, 10_000),
    ("3.1", 108_000, 3_600, 14_000),
    ("3.2", 216_000, 5_120, 20_000),
    ("4.0", 245_760, 8_192, 20_000),
    ("4.1", 245_760, 8_192, 50_000),
    ("4.2", 522_240, 8_704, 50_000),
    ("5.0", 589_824, 22_080, 135_000),
    ("5.1", 983_040, 36_864, 240_000),
    ("5.2", 2_073_600, 36_864, 240_000),
    ("6.0", 4_177_920, 139_264, 240_000),
    ("6.1", 8_355_840, 139_264, 480_000),
    ("6.2", 16_711_680, 139_264, 800_000),
)
HIGH_PROFILE_BITRATE_FACTOR = 1.25


@dataclass(frozen=True, slots=True)
class Rendition:
    """One rung as it will be encoded."""

    name: str
    width: int
    height: int
    fps: float
    video_bitrate: int
    maxrate: int
    bufsize: int
    # 0 when the source has no audio (the rendition then has no audio track).
    audio_bitrate: int
    # H.264 level signalled in the stream (and in CODECS), e.g. "3.1".
    level: str

    @property
    def bandwidth(self) -> int:
        """The nominal peak bits/s of the muxed stream (video maxrate plus audio)."""
        return self.maxrate + self.audio_bitrate

    @property
    def has_audio(self) -> bool:
        return self.audio_bitrate > 0

    @property
    def codecs(self) -> str:
        """The RFC 6381 codec list for the master playlist's CODECS attribute."""
        major, minor = self.level.split(".")
        video = f"avc1.{H264_HIGH}{int(major) * 10 + int(minor):02x}"
        return f"{video},{AAC_LC}" if self.has_audio else video


def output_fps(source_fps: float | None) -> float:
    """The frame rate the ladder is encoded at: the source's, halved (or more) above 60 fps."""
    if source_fps is None or source_fps <= 0:
        return DEFAULT_FPS
    divisor = math.ceil(source_fps / MAX_FPS)
    return round(source_fps / divisor, 3)


def h264_level(width: int, height: int, fps: float, maxrate: int) -> str:
    """The lowest level (3.0 or above) whose limits admit this picture size, rate and bit rate."""
    mb_width, mb_height = math.ceil(width / 16), math.ceil(height / 16)
    frame_mbs = mb_width * mb_height
    mbs_per_second = frame_mbs * fps
    for level, max_mbps, max_fs, max_br_kbps in _LEVELS:
        # A.3.1: each side is limited too, not only the area (sqrt(8 * MaxFS) macroblocks).
        side_limit = math.sqrt(8 * max_fs)
        if (
            frame_mbs <= max_fs
            and mb_width <= side_limit
            and mb_height <= side_limit
            and mbs_per_second <= max_mbps
            and maxrate <= max_br_kbps * 1000 * HIGH_PROFILE_BITRATE_FACTOR
        ):
            return level
    return _LEVELS[-1][0]


def _even(value: float, *, limit: int) -> int:
    """``value`` rounded to an even number, at most ``limit`` rounded down to even, at least 2."""
    ceiling = max(2, limit - limit % 2)
    return max(2, min(ceiling, round(value / 2) * 2))


def _rendition(
    name: str, short: int, long: int, *, portrait: bool, fps: float, video_bitrate: int, audio_bitrate: int
) -> Rendition:
    width, height = (short, long) if portrait else (long, short)
    maxrate = round(video_bitrate * MAXRATE_FACTOR)
    return Rendition(
        name=name,
        width=width,
        height=height,
        fps=fps,
        video_bitrate=video_bitrate,
        maxrate=maxrate,
        bufsize=round(video_bitrate * BUFSIZE_FACTOR),
        audio_bitrate=audio_bitrate,
        level=h264_level(width, height, fps, maxrate),
    )


def choose_ladder(probe: ProbeResult, *, audio_bitrate: int = DEFAULT_AUDIO_BITRATE) -> list[Rendition]:
    """The renditions for ``probe``'s source, smallest first (bandwidth increasing).

    Sizes follow the picture as displayed (rotation applied), so a phone video recorded in
    portrait stays portrait. Raises ValueError when the probe has no picture size.
    """
    display_width, display_height = probe.display_width, probe.display_height
    if not display_width or not display_height:
        raise ValueError("the source has no picture size")
    portrait = display_height > display_width
    short, long = min(display_width, display_height), max(display_width, display_height)
    fps = output_fps(probe.fps)
    fps_factor = HIGH_FPS_FACTOR if fps > 30.5 else 1.0
    audio = audio_bitrate if probe.has_audio else 0

    rungs = [rung for rung in LADDER if rung.short_side <= short]
    if not rungs:
        # Below the lowest rung: one rendition at the source's own (even) size, its bit rate
        # scaled from the lowest rung by picture area.
        out_short = _even(short, limit=short)
        out_long = _even(out_short * long / short, limit=long)
        lowest = LADDER[0]
        area_share = (out_short * out_long) / (lowest.short_side * lowest.short_side * 16 / 9)
        bitrate = max(MIN_VIDEO_BITRATE, round(lowest.video_bitrate * area_share * fps_factor))
        return [
            _rendition(
                f"{out_short}p",
                out_short,
                out_long,
                portrait=portrait,
                fps=fps,
                video_bitrate=bitrate,
                audio_bitrate=audio,
            )
        ]
    return [
        _rendition(
            f"{rung.short_side}p",
            rung.short_side,
            _even(rung.short_side * long / short, limit=long),
            portrait=portrait,
            fps=fps,
            video_bitrate=round(rung.video_bitrate * fps_factor),
            audio_bitrate=audio,
        )
        for rung in rungs
    ]
