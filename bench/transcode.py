"""The transcoder's ladder: one ffmpeg pass vs one pass per rendition, and the pipeline's overhead.

For a generated clip (default 60 s 1080p30, testsrc2 + a sine tone; cached under bench/results/,
which git ignores), in one run on the same machine:

(a) ``single_pass``: the ladder exactly as the transcoder runs it, the command built by the
    project's own ``transcoder.ffmpeg.ladder_command`` (split + ``var_stream_map``);
(b) ``per_rendition``: the seeds' design, one ffmpeg run per rendition one after another, each
    built by the same ``ladder_command`` with that single rendition (same encoder settings);
(c) ``pipeline``: upload-complete -> ``ready`` through the real job function
    (``transcoder.tasks.transcode_video``, with the worker's start-up/shut-down) against the real
    catalog app served by uvicorn on a free port (PostgreSQL database ``streamify_bench_catalog``,
    created, migrated and dropped here; Redis database 13; local storage in a temp dir), minus
    the ffmpeg time, as a percentage of the ffmpeg time. The ffmpeg time is the job's own encode
    (same ladder, same run); the overhead against (a)'s standalone run is reported too.

Prints one JSON document (also written to bench/results/transcode.json). Takes about 2-3 minutes
of both cores for the full clip; ``--seconds 10`` for a quick run.

    .venv/bin/python bench/transcode.py [--seconds 60] [--height 1080] [--fps 30] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import media  # noqa: E402
from transcoder.ffmpeg import ffmpeg_executable, ladder_command  # noqa: E402
from transcoder.ladder import MAX_FPS, Rendition, choose_ladder  # noqa: E402
from transcoder.settings import TranscoderSettings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PG_BASE = os.environ.get("STREAMIFY_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("STREAMIFY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
BENCH_DB = "streamify_bench_catalog"


def generate_clip(ffmpeg: str, *, seconds: int, height: int, fps: int) -> Path:
    """testsrc2 + 440 Hz sine, H.264/AAC MP4; made once per shape and kept under bench/results/."""
    width = round(height * 16 / 9 / 2) * 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"source-{seconds}s-{width}x{height}-{fps}fps.mp4"
    if path.exists() and path.stat().st_size > 0:
        return path
    partial = path.with_suffix(".partial.mp4")
    args = [ffmpeg, "-v", "error", "-y", "-f", "lavfi"]
    args += ["-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]
    args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    # A high-quality source, encoded fast: the benchmark is about the ladder, not this step.
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(fps * 2),
    ]
    args += ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(partial)]
    subprocess.run(args, check=True, timeout=600)
    partial.rename(path)
    return path


def _timed(args: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def _command(
    ffmpeg: str,
    source: Path,
    renditions: list[Rendition],
    out_dir: Path,
    *,
    settings: TranscoderSettings,
    probe: media.ProbeResult,
) -> list[str]:
    """The transcoder's own command for ``renditions`` (as ``transcoder.tasks._encode`` builds it)."""
    for rendition in renditions:
        (out_dir / rendition.name).mkdir(parents=True, exist_ok=True)
    return ladder_command(
        ffmpeg,
        source,
        renditions,
        out_dir,
        preset=settings.x264_preset,
        segment_seconds=settings.segment_seconds,
        keyframe_seconds=settings.keyframe_seconds,
        force_fps=probe.fps is None or probe.fps > MAX_FPS,
    )


def _rate(duration: float, wall: float) -> dict[str, float]:
    return {"wall_s": round(wall, 2), "realtime_factor": round(duration / wall, 3)}


async def pipeline_run(source: Path, settings_overrides: dict[str, Any]) -> dict[str, Any]:
    """Upload-complete -> ready through ``transcode_video`` against the real catalog app."""
    # The catalog's and transcoder's settings read the shared names from the environment.
    os.environ.setdefault("ENVIRONMENT", "test")
    os.environ.setdefault("INTERNAL_SECRET", "bench-" + uuid.uuid4().hex)
    os.environ["REDIS_URL"] = REDIS_URL
    # Only the JSON report on stdout: the services' and httpx's info lines are noise here.
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from common.db import drop_database, ensure_database
    from common.migrations import upgrade
    from common.storage import StorageSettings
    from services.catalog.app import create_app
    from services.catalog.settings import CatalogSettings
    from streamify.embedded import free_port
    from streamify.stack import database_url
    from tests.identities import TokenMinter
    from tests.transcoder.conftest import CatalogServer, _serve

    db_url = database_url(PG_BASE, BENCH_DB)
    await drop_database(db_url)
    await ensure_database(db_url)
    await asyncio.to_thread(upgrade, "services.catalog", db_url)
    with tempfile.TemporaryDirectory(prefix="bench-transcode-") as tmp:
        storage = StorageSettings(storage_backend="local", storage_local_dir=Path(tmp) / "storage")
        settings = CatalogSettings(database_url=db_url, redis_url=REDIS_URL, storage=storage)
        minter = TokenMinter()
        app = create_app(settings, jwks_loader=minter.loader)
        port = free_port()
        served = await _serve(app, port)
        server = CatalogServer(
            app=app,
            url=f"http://127.0.0.1:{port}",
            storage_settings=storage,
            minter=minter,
            internal_secret=settings.internal_secret,
        )
        try:
            # Stores the source where an upload puts it and marks the video uploaded (processing).
            video_id, owner = await server.processing_video(source)
            upload_complete = time.monotonic()
            job_settings = TranscoderSettings(
                catalog_url=server.url,
                storage=storage,
                internal_secret=settings.internal_secret,
                work_dir=Path(tmp) / "work",
                **settings_overrides,
            )
            result = await server.run_job(video_id, job_settings)
            video = await server.video(video_id, owner)
            while video["status"] == "processing":
                await asyncio.sleep(0.05)
                video = await server.video(video_id, owner)
            ready = time.monotonic()
        finally:
            await server.client.aclose()
            served.server.should_exit = True
            await served.task
            await drop_database(db_url)
    if video["status"] != "ready":
        raise RuntimeError(f"the pipeline ended {video['status']}: {video.get('failure_reason')}")
    return {
        "upload_complete_to_ready_s": round(ready - upload_complete, 2),
        "job_encode_s": float(result["encode_s"]),
        "renditions": result["renditions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="clip length (default 60)")
    parser.add_argument("--height", type=int, default=1080, help="clip height, 16:9 (default 1080)")
    parser.add_argument("--fps", type=int, default=30, help="clip frame rate (default 30)")
    parser.add_argument("--skip-pipeline", action="store_true", help="only (a) and (b)")
    options = parser.parse_args()

    ffmpeg = ffmpeg_executable()
    if ffmpeg is None:
        sys.exit("ffmpeg is not installed")
    source = generate_clip(ffmpeg, seconds=options.seconds, height=options.height, fps=options.fps)
    probe = asyncio.run(media.probe(source))
    duration = float(probe.duration_s or options.seconds)
    # The worker's defaults (preset, segment and keyframe lengths, audio bit rate).
    settings = TranscoderSettings()
    ladder = choose_ladder(probe, audio_bitrate=settings.audio_bitrate)

    with tempfile.TemporaryDirectory(prefix="bench-transcode-") as tmp:
        work = Path(tmp)
        single_args = _command(ffmpeg, source, ladder, work / "single", settings=settings, probe=probe)
        single_s = _timed(single_args)
        per_rendition: dict[str, float] = {}
        for rendition in ladder:
            args = _command(
                ffmpeg, source, [rendition], work / "each" / rendition.name, settings=settings, probe=probe
            )
            per_rendition[rendition.name] = round(_timed(args), 2)
        shutil.rmtree(work, ignore_errors=True)
    separate_s = sum(per_rendition.values())

    report: dict[str, Any] = {
        "source": {
            "seconds": round(duration, 3),
            "size": f"{probe.display_width}x{probe.display_height}",
            "fps": probe.fps,
            "audio": probe.has_audio,
            "file": str(source.relative_to(ROOT)),
        },
        "ladder": [
            f"{r.name} {r.width}x{r.height} {r.video_bitrate // 1000}k level {r.level}" for r in ladder
        ],
        "preset": settings.x264_preset,
        "single_pass": _rate(duration, single_s),
        "per_rendition": {**_rate(duration, separate_s), "runs_s": per_rendition},
        "speedup_single_vs_per_rendition": round(separate_s / single_s, 3),
        "single_pass_command": " ".join(single_args),
    }
    if not options.skip_pipeline:
        pipeline = asyncio.run(pipeline_run(source, {}))
        total = pipeline["upload_complete_to_ready_s"]
        encode = pipeline["job_encode_s"]
        pipeline["overhead_s"] = round(total - encode, 2)
        pipeline["overhead_pct_of_job_ffmpeg"] = round(100 * (total - encode) / encode, 1)
        pipeline["overhead_pct_of_standalone_single_pass"] = round(100 * (total - single_s) / single_s, 1)
        report["pipeline"] = pipeline
    report["machine"] = {
        "cpus": os.cpu_count(),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "ffmpeg": subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0],
    }
    text = json.dumps(report, indent=2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transcode.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
