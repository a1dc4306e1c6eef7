"""ffmpeg for the transcoder: the one-pass ladder command, the thumbnail command, and a runner.

The ladder is one ffmpeg process: the source is decoded once, ``split`` into one branch per
rendition, each scaled and encoded with libx264 (plus AAC when the source has audio), and the HLS
muxer writes every rendition's playlist and segments (``-var_stream_map``). Keyframes are forced
at the same instants in every rendition (every ``keyframe_seconds`` of media time, scene-cut
keyframes off), so segments of all renditions start at the same times and a player can switch
between them at any segment boundary. See :func:`ladder_command` for the exact shape.

The source is untrusted: ffmpeg may only open it with the protocols its scheme needs and only
through the container demuxers ``common.media`` accepts, so a disguised playlist cannot make it
read other files or URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.media import DEFAULT_FORMATS
from transcoder.ladder import Rendition

PLAYLIST_NAME = "index.m3u8"
SEGMENT_PATTERN = "seg_%05d.ts"
MASTER_NAME = "master.m3u8"
_LOCAL_PROTOCOLS = "file"
_URL_PROTOCOLS = "http,https,tcp,tls,crypto"
STDERR_TAIL_LINES = 30

ProgressCallback = Callable[[float], Awaitable[None]]


def ffmpeg_executable() -> str | None:
    """ffmpeg from PATH, else the one bundled in the imageio-ffmpeg wheel when installed."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:
        return None


def source_argument(source: str | os.PathLike[str]) -> str:
    """A URL as is; a local path as ``file:<absolute path>`` (so ``-x.mp4`` is not an option)."""
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        return text
    return "file:" + str(Path(text).resolve())


def input_args(source: str | os.PathLike[str]) -> list[str]:
    argument = source_argument(source)
    protocols = _LOCAL_PROTOCOLS if argument.startswith("file:") else _URL_PROTOCOLS
    return [
        "-protocol_whitelist",
        protocols,
        "-format_whitelist",
        ",".join(sorted(DEFAULT_FORMATS)),
        "-i",
        argument,
    ]


def _bits(value: int) -> str:
    return str(int(value))


def ladder_command(
    ffmpeg: str,
    source: str | os.PathLike[str],
    renditions: Sequence[Rendition],
    out_dir: Path,
    *,
    preset: str,
    segment_seconds: int,
    keyframe_seconds: int,
    force_fps: bool,
    stats_period_s: float = 0.5,
) -> list[str]:
    """One ffmpeg process writing every rendition under ``out_dir/<name>/``.

    Shape (two renditions, with audio)::

        ffmpeg -hide_banner -nostdin -y -v error -protocol_whitelist file -format_whitelist ... -i SRC
          -filter_complex "[0:v:0]null,split=2[s0][s1];[s0]scale=640:360,setsar=1[v0];
                           [s1]scale=854:480,setsar=1[v1]"
          -map [v0] -map 0:a:0 -map [v1] -map 0:a:0
          -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p
          -b:v:0 800000 -maxrate:v:0 856000 -bufsize:v:0 1200000 -level:v:0 3.0 ...
          -g 60 -keyint_min 60 -sc_threshold 0 -force_key_frames expr:gte(t,n_forced*2)
          -c:a aac -b:a 128000 -ac 2 -ar 48000
          -f hls -hls_time 6 -hls_playlist_type vod -hls_flags independent_segments
          -hls_segment_type mpegts -hls_segment_filename OUT/%v/seg_%05d.ts
          -var_stream_map "v:0,a:0,name:360p v:1,a:1,name:480p"
          -progress pipe:1 -nostats OUT/%v/index.m3u8

    The master playlist is written by the caller (ffmpeg's lacks AVERAGE-BANDWIDTH and FRAME-RATE).
    """
    if not renditions:
        raise ValueError("a ladder needs at least one rendition")
    fps = renditions[0].fps
    has_audio = renditions[0].has_audio
    count = len(renditions)
    head = f"[0:v:0]fps={fps:g}" if force_fps else "[0:v:0]null"
    if count == 1:
        graph = [f"{head},scale={renditions[0].width}:{renditions[0].height},setsar=1[v0]"]
    else:
        branches = "".join(f"[s{i}]" for i in range(count))
        graph = [f"{head},split={count}{branches}"]
        graph += [f"[s{i}]scale={r.width}:{r.height},setsar=1[v{i}]" for i, r in enumerate(renditions)]
    args = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-v", "error", *input_args(source)]
    args += ["-filter_complex", ";".join(graph)]
    for index in range(count):
        args += ["-map", f"[v{index}]"]
        if has_audio:
            args += ["-map", "0:a:0"]
    gop = max(1, round(keyframe_seconds * fps))
    args += ["-c:v", "libx264", "-preset", preset, "-profile:v", "high", "-pix_fmt", "yuv420p"]
    for index, rendition in enumerate(renditions):
        args += [
            f"-b:v:{index}",
            _bits(rendition.video_bitrate),
            f"-maxrate:v:{index}",
            _bits(rendition.maxrate),
            f"-bufsize:v:{index}",
            _bits(rendition.bufsize),
            f"-level:v:{index}",
            rendition.level,
        ]
    # Keyframes at the same media times in every rendition: forced by time (robust to variable
    # frame rates), the GOP length as a backstop, and no extra keyframes at scene cuts.
    args += [
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{keyframe_seconds})",
    ]
    if has_audio:
        args += ["-c:a", "aac", "-b:a", _bits(renditions[0].audio_bitrate), "-ac", "2", "-ar", "48000"]
    stream_map = " ".join(
        f"v:{i},a:{i},name:{r.name}" if has_audio else f"v:{i},name:{r.name}"
        for i, r in enumerate(renditions)
    )
    args += [
        "-max_muxing_queue_size",
        "4096",
        "-f",
        "hls",
        "-hls_time",
        str(segment_seconds),
        "-hls_playlist_type",
        "vod",
        "-hls_flags",
        "independent_segments",
        "-hls_segment_type",
        "mpegts",
        "-hls_segment_filename",
        str(out_dir / "%v" / SEGMENT_PATTERN),
        "-var_stream_map",
        stream_map,
        "-progress",
        "pipe:1",
        "-stats_period",
        f"{stats_period_s:g}",
        "-nostats",
        str(out_dir / "%v" / PLAYLIST_NAME),
    ]
    return args


def thumbnail_command(
    ffmpeg: str, source: str | os.PathLike[str], out_path: Path, *, at_s: float, width: int
) -> list[str]:
    """One JPEG frame at ``at_s`` seconds, at most ``width`` wide (never upscaled).

    ``-ss`` before ``-i`` seeks in the demuxer (to the keyframe before, then decodes forward):
    a tenth of a second instead of decoding everything up to ``at_s``.
    """
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-y",
        "-v",
        "error",
        "-ss",
        f"{max(0.0, at_s):.3f}",
        *input_args(source),
        "-frames:v",
        "1",
        "-vf",
        f"scale='min({width},iw)':-2",
        "-q:v",
        "3",
        "-f",
        "image2",
        str(out_path),
    ]


@dataclass(frozen=True, slots=True)
class FfmpegResult:
    returncode: int
    stderr_tail: list[str]

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class FfmpegTimeout(Exception):
    pass


def _dies_with_parent(args: list[str]) -> list[str]:
    """Make the child die when this worker dies, even by SIGKILL (Linux ``setpriv --pdeathsig``).

    Without it a SIGKILLed worker leaves ffmpeg running (it ignores the broken progress pipe),
    burning the cores the job's next worker needs.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *args] if setpriv else args


async def run_ffmpeg(
    args: list[str], *, timeout_s: float, on_progress: ProgressCallback | None = None
) -> FfmpegResult:
    """Run ffmpeg, feed ``on_progress`` the media seconds done (from ``-progress pipe:1``).

    The process is killed when this coroutine is cancelled, times out (:class:`FfmpegTimeout`)
    or ``on_progress`` raises; it never outlives the call.
    """
    process = await asyncio.create_subprocess_exec(
        *_dies_with_parent(args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                tail.append(line[:500])

    async def read_progress() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            key, _, value = raw.decode("ascii", "replace").strip().partition("=")
            if key == "out_time_us" and on_progress is not None and value.lstrip("-").isdigit():
                await on_progress(max(0, int(value)) / 1_000_000)

    stderr_reader = asyncio.create_task(read_stderr())
    try:
        async with asyncio.timeout(timeout_s):
            await read_progress()
            returncode = await process.wait()
            await stderr_reader
    except TimeoutError as exc:
        raise FfmpegTimeout(f"ffmpeg took longer than {timeout_s:.0f} s") from exc
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if not stderr_reader.done():
            stderr_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stderr_reader
    return FfmpegResult(returncode=returncode, stderr_tail=list(tail))
