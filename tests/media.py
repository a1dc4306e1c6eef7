"""Real media files for tests, generated with ffmpeg (``testsrc2`` picture, a sine tone).

Each generator writes into a folder the caller owns (a session-scoped tmp dir) and returns the
path; call them from session fixtures so each file is made once per run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError("ffmpeg is needed to generate test media (apt-get install ffmpeg)")
    return found


def make_video(
    path: Path,
    *,
    size: str = "320x240",
    seconds: float = 3,
    rate: int = 25,
    audio: bool = True,
    bitrate: str | None = None,
    noise: bool = False,
) -> Path:
    """An H.264 (+ AAC) MP4. ``bitrate`` with ``noise`` makes multi-MiB files fast: noise does not
    compress, so the encoder really spends the bits (e.g. ``20M`` for 3 s is about 8 MiB)."""
    args = [ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440"]
    args += ["-t", str(seconds)]
    if noise:
        args += ["-vf", "noise=alls=60:allf=t"]
    args += ["-c:v", "libx264", "-preset", "ultrafast" if bitrate else "veryfast", "-pix_fmt", "yuv420p"]
    if bitrate:
        args += ["-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate]
    if audio:
        args += ["-c:a", "aac"]
    subprocess.run([*args, os.fspath(path)], check=True, timeout=120)
    return path


def make_text_file(path: Path, text: str = "this is not a video\n" * 50) -> Path:
    """Plain text, whatever its name says (e.g. ``notes.mp4``)."""
    path.write_text(text, encoding="utf-8")
    return path


def make_audio(path: Path, *, seconds: float = 1) -> Path:
    """AAC audio only (in an MP4 container when ``path`` ends in .m4a/.mp4): no video stream."""
    args = [ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds)]
    subprocess.run([*args, "-c:a", "aac", os.fspath(path)], check=True, timeout=60)
    return path
