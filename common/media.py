"""What a media file holds, asked of ffprobe: streams, size, duration, frame rate, rotation.

    result = await probe("/data/source.mp4")          # a local file
    result = await probe(presigned_url)                # or an http(s) URL ffprobe can read
    if not result.has_video: ...

Nothing here trusts a file name or a Content-Type: the bytes decide. ffprobe runs as an asyncio
subprocess with a time limit and, by default, may only open the one input with the protocols its
scheme needs and only through ordinary container demuxers, so an uploaded playlist (HLS, concat)
cannot make it read other files or URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

# Demuxers for the containers cameras, phones and editors write. Anything else (playlists, concat
# lists, image sequences, raw pipes) is refused as "not a media file". Each name matches any of
# the aliases ffprobe reports, e.g. "mov" matches "mov,mp4,m4a,3gp,3g2,mj2".
DEFAULT_FORMATS: frozenset[str] = frozenset(
    {
        "mov",  # mp4, m4v, mov, 3gp
        "matroska",  # mkv, webm
        "avi",
        "flv",
        "mpegts",
        "mpeg",  # MPEG program stream (.mpg, .vob)
        "asf",  # wmv
        "ogg",
        "mxf",
        "ivf",
        "h264",
        "hevc",
        "m4v",  # raw MPEG-4 part 2
    }
)
DEFAULT_TIMEOUT_S = 60.0
_LOCAL_PROTOCOLS = "file"
_URL_PROTOCOLS = "http,https,tcp,tls,crypto"


class ProbeError(Exception):
    """ffprobe could not read the input as media: not a media file, truncated, or a refused format.

    This is a property of the input, so retrying does not help. ``reason`` is a short sentence fit
    for a user; ``detail`` keeps ffprobe's own words for the logs.
    """

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason} ({detail})")
        self.reason = reason
        self.detail = detail


class ProbeUnavailable(Exception):
    """ffprobe is missing, timed out or could not start: a problem of this machine, worth retrying."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The facts about one media file that callers decide on.

    ``width``/``height`` are the stored (coded) picture size of the first video stream;
    ``rotation`` is the display rotation from its display matrix (or legacy ``rotate`` tag),
    normalised to 0, 90, 180 or 270 — at 90 and 270 a player shows the picture with width and
    height swapped (see :attr:`display_width`). ``fps`` is the average frame rate, ``None`` when
    unknown. Cover art (an attached picture, as in an MP3) does not count as a video stream.
    """

    duration_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    rotation: int
    has_audio: bool
    has_video: bool
    format_name: str
    video_codec: str | None = None
    audio_codec: str | None = None
    size_bytes: int | None = None
    bit_rate: int | None = None

    @property
    def display_width(self) -> int | None:
        return self.height if self.rotation in (90, 270) else self.width

    @property
    def display_height(self) -> int | None:
        return self.width if self.rotation in (90, 270) else self.height

    @property
    def is_playable_video(self) -> bool:
        """A video stream with a picture size and a positive duration: worth transcoding."""
        return bool(self.has_video and self.width and self.height and self.duration_s and self.duration_s > 0)


def ffprobe_path() -> str | None:
    """ffprobe from ``FFPROBE`` (a path), else PATH, else next to the ffmpeg on PATH; ``None`` if none."""
    configured = os.environ.get("FFPROBE")
    if configured:
        return configured if Path(configured).is_file() else shutil.which(configured)
    found = shutil.which("ffprobe")
    if found:
        return found
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        sibling = Path(ffmpeg).with_name("ffprobe" + Path(ffmpeg).suffix)
        if sibling.is_file():
            return str(sibling)
    return None


async def probe(
    source: str | os.PathLike[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    formats: Collection[str] | None = DEFAULT_FORMATS,
) -> ProbeResult:
    """Probe ``source`` (a local path or an http(s) URL) with ffprobe.

    Raises :class:`ProbeError` when the input is not media ffprobe can read (including an empty
    file or a format outside ``formats``; pass ``None`` to allow every demuxer) and
    :class:`ProbeUnavailable` when ffprobe is missing, fails to start or exceeds ``timeout_s``.
    """
    executable = ffprobe_path()
    if executable is None:
        raise ProbeUnavailable("ffprobe was not found (install ffmpeg or set FFPROBE)")
    target = os.fspath(source)
    is_url = target.startswith(("http://", "https://"))
    if not is_url:
        target = await asyncio.to_thread(_local_target, Path(target))
    args = [
        executable,
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        _URL_PROTOCOLS if is_url else _LOCAL_PROTOCOLS,
    ]
    if formats is not None:
        args += ["-format_whitelist", ",".join(sorted(formats))]
    args += ["-print_format", "json", "-show_format", "-show_streams", target]
    stdout, stderr, returncode = await _run(args, timeout_s=timeout_s)
    if returncode != 0:
        raise ProbeError("The file is not a media file we can read.", detail=_last_line(stderr))
    try:
        report = json.loads(stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise ProbeError("The file is not a media file we can read.", detail=str(exc)) from exc
    if not isinstance(report, dict) or not isinstance(report.get("format"), dict):
        raise ProbeError("The file is not a media file we can read.", detail=_last_line(stderr))
    return parse_report(report)


def _local_target(path: Path) -> str:
    if not path.is_file():
        raise ProbeError("The file is missing.", detail=str(path))
    if path.stat().st_size == 0:
        raise ProbeError("The file is empty.")
    # As a URL: ffprobe would read a "-"-prefixed name as an option and "x:" as a protocol.
    return "file:" + str(path.resolve())


def parse_report(report: Mapping[str, Any]) -> ProbeResult:
    """A :class:`ProbeResult` from ffprobe's ``-show_format -show_streams`` JSON."""
    fmt: Mapping[str, Any] = report.get("format") or {}
    streams = [stream for stream in report.get("streams") or [] if isinstance(stream, Mapping)]
    videos = [
        stream
        for stream in streams
        if stream.get("codec_type") == "video" and not (stream.get("disposition") or {}).get("attached_pic")
    ]
    audios = [stream for stream in streams if stream.get("codec_type") == "audio"]
    video = videos[0] if videos else None
    audio = audios[0] if audios else None
    duration = _positive_float(fmt.get("duration"))
    if duration is None and video is not None:
        duration = _positive_float(video.get("duration"))
    return ProbeResult(
        duration_s=duration,
        width=_positive_int(video.get("width")) if video else None,
        height=_positive_int(video.get("height")) if video else None,
        fps=_frame_rate(video) if video else None,
        rotation=_rotation(video) if video else 0,
        has_audio=audio is not None,
        has_video=video is not None,
        format_name=str(fmt.get("format_name") or ""),
        video_codec=str(video["codec_name"]) if video and video.get("codec_name") else None,
        audio_codec=str(audio["codec_name"]) if audio and audio.get("codec_name") else None,
        size_bytes=_positive_int(fmt.get("size")),
        bit_rate=_positive_int(fmt.get("bit_rate")),
    )


async def _run(args: list[str], *, timeout_s: float) -> tuple[bytes, bytes, int]:
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise ProbeUnavailable(f"ffprobe could not start: {exc}") from exc
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise ProbeUnavailable(f"ffprobe took longer than {timeout_s:g} s") from exc
    return stdout, stderr, process.returncode if process.returncode is not None else -1


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number == number and number != float("inf") else None


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _frame_rate(stream: Mapping[str, Any]) -> float | None:
    # avg_frame_rate is what plays; r_frame_rate is the timebase guess, used when avg is 0/0.
    for key in ("avg_frame_rate", "r_frame_rate"):
        raw = stream.get(key)
        if not isinstance(raw, str):
            continue
        try:
            rate = Fraction(raw)
        except (ValueError, ZeroDivisionError):
            continue
        if 0 < rate < 1000:
            return round(float(rate), 3)
    return None


def _rotation(stream: Mapping[str, Any]) -> int:
    degrees: float | None = None
    for side_data in stream.get("side_data_list") or []:
        if isinstance(side_data, Mapping) and "rotation" in side_data:
            with contextlib.suppress(TypeError, ValueError):
                degrees = float(side_data["rotation"])
            break
    if degrees is None:
        tag = (stream.get("tags") or {}).get("rotate")
        with contextlib.suppress(TypeError, ValueError):
            degrees = float(tag) if tag is not None else None
    if degrees is None:
        return 0
    return (round(degrees / 90) * 90) % 360
