"""The transcode job, ``transcode_video(ctx, video_id)``, as the arq worker (worker.py) runs it.

One run: ask the catalog for the video (it must be ``processing``), probe the source, choose the
ladder, run one ffmpeg process for every rendition (progress reported to the catalog), grab a
thumbnail, measure the segments and write the master playlist, upload everything concurrently,
validate the stored playlists, and report ``ready`` — or ``failed`` with a reason.

What happens when things go wrong:

- bad input (not a video, empty, truncated, no video stream, undecodable): the video is reported
  ``failed`` with a readable reason and the job returns normally, so arq does not retry it;
- transient trouble (storage or catalog unreachable or 5xx, ffmpeg killed or out of time, disk
  full): ``arq.Retry`` with exponential back-off, at most ``max_tries`` tries; the last try reports
  ``failed`` instead of retrying again (when the catalog answers);
- the video is deleted meanwhile (404 from the catalog): the job stops and removes what it wrote;
- a worker stopped with SIGTERM: arq cancels the job (ffmpeg is killed, the temporary folder
  removed) and puts it back in the queue for another worker;
- a worker killed with SIGKILL: ffmpeg dies with it (``setpriv --pdeathsig``); the job's arq
  in-progress key, which this job keeps alive as a lease of ``lease_s``, lapses, and another worker
  takes the job from the queue (arq re-runs a queued job whose in-progress key is gone). Left-over
  temporary folders are swept when a worker starts.

Every run is safe to repeat: output keys are deterministic and overwritten, keys a run did not
write are removed, the catalog's result call is idempotent, and a video already ``ready`` (or
otherwise no longer ``processing``) ends the job at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import m3u8
import structlog
from arq import Retry
from arq.constants import in_progress_key_prefix

from common import media, tracing
from common.storage import LocalStorage, Storage, StorageError, StorageUnavailable
from transcoder import metrics
from transcoder.catalog import CatalogClient
from transcoder.errors import BadInput, NoLongerProcessing, TransientError, VideoGone
from transcoder.ffmpeg import (
    MASTER_NAME,
    PLAYLIST_NAME,
    FfmpegResult,
    FfmpegTimeout,
    ffmpeg_executable,
    ladder_command,
    run_ffmpeg,
    source_argument,
    thumbnail_command,
)
from transcoder.hls import (
    InvalidPlaylist,
    VariantStats,
    content_type,
    master_playlist,
    measure_variant,
    validate_media_playlist,
)
from transcoder.ladder import MAX_FPS, Rendition, choose_ladder
from transcoder.settings import TranscoderSettings

log = structlog.get_logger("transcoder")

# Rendition playlists must play the source's duration within this many seconds.
DURATION_TOLERANCE_S = 1.0
THUMBNAIL_POSITION = 0.1
THUMBNAIL_TIMEOUT_S = 120.0
GAVE_UP_REASON = (
    "The video could not be processed because of repeated temporary problems on our side. "
    "Please upload it again later."
)
DAMAGED_REASON = "The video could not be decoded; the file may be damaged or use an unsupported format."
# ffmpeg/ffprobe messages that blame the machine, the network or the store, never the input.
_TRANSIENT_MARKERS = (
    "no space left on device",
    "input/output error",
    "cannot allocate memory",
    "resource temporarily unavailable",
    "server returned",
    "connection refused",
    "connection reset",
    "connection timed out",
    "timed out",
    "network is unreachable",
)
_JOB_DIR = re.compile(r"^job-(\d+)-")


def video_prefix(video_id: uuid.UUID) -> str:
    return f"videos/{video_id}/"


def thumbnail_key(video_id: uuid.UUID) -> str:
    return f"thumbnails/{video_id}.jpg"


# --- the job -----------------------------------------------------------------------------------


async def transcode_video(
    ctx: dict[str, Any], video_id: str, traceparent: str | None = None
) -> dict[str, Any]:
    """Transcode one uploaded video into the HLS ladder and tell the catalog the outcome.

    ``traceparent`` is the enqueuing request's span (common.tracing): the job is a child span of
    it, so its log lines and its calls back to the catalog carry the upload's trace id."""
    settings: TranscoderSettings = ctx["settings"]
    job_try = int(ctx.get("job_try") or 1)
    span = tracing.enter(tracing.continue_trace(traceparent))
    try:
        return await _traced_job(ctx, video_id, settings, job_try)
    finally:
        tracing.leave(span)


async def _traced_job(
    ctx: dict[str, Any], video_id: str, settings: TranscoderSettings, job_try: int
) -> dict[str, Any]:
    with structlog.contextvars.bound_contextvars(
        job_id=ctx.get("job_id", video_id), video_id=video_id, job_try=job_try
    ):
        try:
            vid = uuid.UUID(video_id)
        except ValueError:
            log.error("transcode_invalid_video_id")
            return {"status": "invalid_video_id"}
        async with _lease(ctx, settings.lease_s):
            return await metrics.observe_job(_run(ctx, vid, settings=settings, job_try=job_try))


async def _run(
    ctx: dict[str, Any], vid: uuid.UUID, *, settings: TranscoderSettings, job_try: int
) -> dict[str, Any]:
    storage: Storage = ctx["storage"]
    catalog: CatalogClient = ctx["catalog"]
    try:
        return await _transcode(vid, settings=settings, storage=storage, catalog=catalog)
    except VideoGone:
        log.info("transcode_video_gone")
        await _delete_outputs(storage, vid)
        return {"status": "gone"}
    except NoLongerProcessing as exc:
        log.info("transcode_skipped", video_status=exc.status)
        return {"status": "skipped", "video_status": exc.status}
    except BadInput as exc:
        log.warning("transcode_bad_input", reason=exc.reason, detail=exc.detail)
        return await _report_failed(
            vid, exc.reason, settings=settings, storage=storage, catalog=catalog, job_try=job_try
        )
    except Exception as exc:
        # Transient by classification (TransientError, StorageUnavailable, ProbeUnavailable,
        # FfmpegTimeout) or unexpected: either way another try may succeed; the traceback of an
        # unexpected one is logged.
        expected = isinstance(
            exc, TransientError | StorageUnavailable | media.ProbeUnavailable | FfmpegTimeout
        )
        log.warning(
            "transcode_transient_error", error=f"{exc.__class__.__name__}: {exc}", exc_info=not expected
        )
        if job_try >= settings.max_tries:
            return await _report_failed(
                vid, GAVE_UP_REASON, settings=settings, storage=storage, catalog=catalog, job_try=job_try
            )
        raise Retry(defer=_backoff(settings, job_try)) from exc


def _backoff(settings: TranscoderSettings, job_try: int) -> float:
    return float(min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (job_try - 1)))


async def _report_failed(
    vid: uuid.UUID,
    reason: str,
    *,
    settings: TranscoderSettings,
    storage: Storage,
    catalog: CatalogClient,
    job_try: int,
) -> dict[str, Any]:
    """Remove partial outputs and report ``failed``; only a catalog outage makes this retry."""
    await _delete_outputs(storage, vid)
    try:
        await catalog.report_result(vid, {"status": "failed", "failure_reason": reason})
    except VideoGone:
        return {"status": "gone"}
    except NoLongerProcessing as exc:
        log.info("transcode_skipped", video_status=exc.status)
        return {"status": "skipped", "video_status": exc.status}
    except TransientError as exc:
        log.warning("transcode_failure_report_failed", error=str(exc))
        raise Retry(defer=_backoff(settings, job_try)) from exc
    log.info("transcode_failed", reason=reason)
    return {"status": "failed", "reason": reason}


async def _transcode(
    vid: uuid.UUID, *, settings: TranscoderSettings, storage: Storage, catalog: CatalogClient
) -> dict[str, Any]:
    video = await catalog.video(vid)
    if video.status != "processing":
        # Already ready (a repeated run) or failed, or not uploaded yet: nothing to do.
        raise NoLongerProcessing(video.status)
    if not video.source_key:
        raise BadInput("The uploaded file is missing.")
    ffmpeg = ffmpeg_executable()
    if ffmpeg is None:
        raise TransientError("ffmpeg is not installed on this worker")
    source = await _source_location(storage, video.source_key, settings=settings)
    probe = await _probe(source)
    duration = float(probe.duration_s or 0)
    ladder = choose_ladder(probe, audio_bitrate=settings.audio_bitrate)
    log.info(
        "transcode_started",
        duration_s=duration,
        width=probe.display_width,
        height=probe.display_height,
        fps=probe.fps,
        has_audio=probe.has_audio,
        renditions=[r.name for r in ladder],
    )
    async with _job_dir(settings, vid) as work:
        out_dir = work / "hls"
        for rendition in ladder:
            (out_dir / rendition.name).mkdir(parents=True)
        started = time.monotonic()
        await _encode(
            ffmpeg, source, ladder, out_dir, probe=probe, settings=settings, catalog=catalog, vid=vid
        )
        encode_s = time.monotonic() - started
        thumbnail = await _thumbnail(
            ffmpeg, source, work / "thumbnail.jpg", duration=duration, settings=settings
        )
        variants = _measure(ladder, out_dir, duration=duration)
        (out_dir / MASTER_NAME).write_text(master_playlist(variants, playlist_name=PLAYLIST_NAME))
        written = await _upload(
            storage, vid, out_dir, ladder, thumbnail, concurrency=settings.upload_concurrency
        )
    await _remove_stale_outputs(storage, vid, keep=written)
    await _validate_stored(storage, vid, ladder, duration=duration)
    played_s = round(max(stats.duration_s for _, stats in variants), 3)
    result = {
        "status": "ready",
        "duration_s": played_s,
        "renditions": [
            {"name": r.name, "width": r.width, "height": r.height, "bandwidth": stats.peak_bps}
            for r, stats in variants
        ],
        "thumbnail_key": thumbnail_key(vid) if thumbnail is not None else None,
    }
    await catalog.report_result(vid, result)
    realtime = duration / encode_s if encode_s > 0 else None
    metrics.observe_realtime_factor(duration, encode_s)
    log.info(
        "transcode_ready",
        duration_s=played_s,
        encode_s=round(encode_s, 3),
        realtime_factor=round(realtime, 3) if realtime else None,
        renditions=[r.name for r in ladder],
    )
    return {
        "status": "ready",
        "duration_s": played_s,
        "renditions": [r.name for r in ladder],
        "encode_s": round(encode_s, 3),
    }


# --- steps -------------------------------------------------------------------------------------


async def _source_location(storage: Storage, key: str, *, settings: TranscoderSettings) -> str:
    """A path (local store) or presigned GET URL (S3) ffmpeg reads the source from."""
    if isinstance(storage, LocalStorage):
        path = storage.local_path(key)
        size = await asyncio.to_thread(_file_size, path)
        if size is None:
            raise BadInput("The uploaded file is missing.", detail=key)
        if size == 0:
            raise BadInput("The uploaded file is empty.")
        return str(path)
    info = await storage.head(key)
    if info is None:
        raise BadInput("The uploaded file is missing.", detail=key)
    if info.size == 0:
        raise BadInput("The uploaded file is empty.")
    url = await storage.presign_get(key, settings.source_url_ttl_s)
    if url is None:
        raise TransientError("the store cannot hand out a URL for the source")
    return url


def _file_size(path: Path) -> int | None:
    """The size of a regular file, None when there is none."""
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _blames_machine(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _TRANSIENT_MARKERS)


async def _probe(source: str) -> media.ProbeResult:
    try:
        probe = await media.probe(source)
    except media.ProbeError as exc:
        if _blames_machine(exc.detail):
            raise TransientError(f"ffprobe could not read the source: {_redact(exc.detail, source)}") from exc
        raise BadInput(exc.reason, detail=_redact(exc.detail, source)) from exc
    if not probe.has_video:
        raise BadInput("The file has no video stream.", detail=probe.format_name)
    if not probe.is_playable_video:
        raise BadInput("The video has no duration or picture size we can read.", detail=probe.format_name)
    return probe


def _redact(text: str, source: str) -> str:
    """ffmpeg's messages name the input; a presigned URL must not reach logs or reasons."""
    return text.replace(source_argument(source), "<source>").replace(source, "<source>")


class ProgressReporter:
    """Turns ffmpeg's media time into 0..99 % and tells the catalog, at most every ``interval_s``
    and only when the number went up (100 is never sent: ``ready`` ends processing)."""

    def __init__(
        self, catalog: CatalogClient, vid: uuid.UUID, *, duration_s: float, interval_s: float
    ) -> None:
        self._catalog = catalog
        self._vid = vid
        self._duration_s = duration_s
        self._interval_s = interval_s
        self._last_value = 0
        self._last_sent = -math.inf

    async def __call__(self, done_s: float) -> None:
        value = min(99, int(100 * done_s / self._duration_s)) if self._duration_s > 0 else 0
        now = time.monotonic()
        if value <= self._last_value or now - self._last_sent < self._interval_s:
            return
        await self._catalog.report_progress(self._vid, value)
        self._last_value, self._last_sent = value, now


async def _encode(
    ffmpeg: str,
    source: str,
    ladder: list[Rendition],
    out_dir: Path,
    *,
    probe: media.ProbeResult,
    settings: TranscoderSettings,
    catalog: CatalogClient,
    vid: uuid.UUID,
) -> None:
    duration = float(probe.duration_s or 0)
    args = ladder_command(
        ffmpeg,
        source,
        ladder,
        out_dir,
        preset=settings.x264_preset,
        segment_seconds=settings.segment_seconds,
        keyframe_seconds=settings.keyframe_seconds,
        force_fps=probe.fps is None or probe.fps > MAX_FPS,
        # ffmpeg reports twice a second by default; more often only when reports may go out faster.
        stats_period_s=max(0.1, min(0.5, settings.progress_interval_s)),
    )
    # Proportional to the duration, and well inside arq's job timeout: this job's own handling of
    # the timeout (retry, or report failed on the last try) must run before arq cancels it.
    timeout_s = min(
        settings.ffmpeg_timeout_base_s + settings.ffmpeg_timeout_per_second * duration,
        settings.job_timeout_s * 0.9,
    )
    reporter = ProgressReporter(catalog, vid, duration_s=duration, interval_s=settings.progress_interval_s)
    result = await run_ffmpeg(args, timeout_s=timeout_s, on_progress=reporter)
    _check_ffmpeg(result, source, what="transcode")


def _check_ffmpeg(result: FfmpegResult, source: str, *, what: str) -> None:
    if result.ok:
        return
    detail = _redact(" | ".join(result.stderr_tail[-5:]), source)
    if result.returncode < 0:
        raise TransientError(f"ffmpeg ({what}) was killed by signal {-result.returncode}")
    if _blames_machine(detail):
        raise TransientError(f"ffmpeg ({what}) failed: {detail}")
    raise BadInput(DAMAGED_REASON, detail=f"ffmpeg exited {result.returncode}: {detail}")


async def _thumbnail(
    ffmpeg: str, source: str, path: Path, *, duration: float, settings: TranscoderSettings
) -> Path | None:
    """A JPEG at a tenth of the duration; a video without one is still worth publishing."""
    args = thumbnail_command(
        ffmpeg, source, path, at_s=duration * THUMBNAIL_POSITION, width=settings.thumbnail_width
    )
    try:
        result = await run_ffmpeg(args, timeout_s=THUMBNAIL_TIMEOUT_S)
    except FfmpegTimeout:
        log.warning("thumbnail_timed_out")
        return None
    if not result.ok or not await asyncio.to_thread(_file_size, path):
        log.warning("thumbnail_failed", detail=_redact(" | ".join(result.stderr_tail[-3:]), source))
        return None
    return path


def _measure(
    ladder: list[Rendition], out_dir: Path, *, duration: float
) -> list[tuple[Rendition, VariantStats]]:
    """Each rendition's real duration and bit rates; a short one means the source is damaged."""
    variants = []
    for rendition in ladder:
        try:
            stats = measure_variant(out_dir / rendition.name / PLAYLIST_NAME)
        except (InvalidPlaylist, OSError) as exc:
            raise BadInput(DAMAGED_REASON, detail=f"{rendition.name}: {exc}") from exc
        if abs(stats.duration_s - duration) > DURATION_TOLERANCE_S:
            raise BadInput(
                f"The video seems to be truncated or damaged: only {stats.duration_s:.1f} s of its "
                f"{duration:.1f} s could be read.",
                detail=rendition.name,
            )
        variants.append((rendition, stats))
    return variants


async def _upload(
    storage: Storage,
    vid: uuid.UUID,
    out_dir: Path,
    ladder: list[Rendition],
    thumbnail: Path | None,
    *,
    concurrency: int,
) -> set[str]:
    """Upload everything, at most ``concurrency`` objects at once: segments (and the thumbnail)
    first, then the rendition playlists, the master last, so no playlist ever names a missing file."""
    prefix = video_prefix(vid)
    segments: list[tuple[str, Path]] = []
    playlists: list[tuple[str, Path]] = []
    for rendition in ladder:
        for path in sorted((out_dir / rendition.name).iterdir()):
            target = playlists if path.name == PLAYLIST_NAME else segments
            target.append((f"{prefix}{rendition.name}/{path.name}", path))
    if thumbnail is not None:
        segments.append((thumbnail_key(vid), thumbnail))
    master = [(f"{prefix}{MASTER_NAME}", out_dir / MASTER_NAME)]
    semaphore = asyncio.Semaphore(concurrency)

    async def put(key: str, path: Path) -> None:
        async with semaphore:
            data = await asyncio.to_thread(path.read_bytes)
            await storage.put(key, data, content_type=content_type(path.name))

    written: set[str] = set()
    for batch in (segments, playlists, master):
        outcomes = await asyncio.gather(*(put(key, path) for key, path in batch), return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise failures[0]
        written.update(key for key, _ in batch)
    log.info("transcode_uploaded", objects=len(written))
    return written


async def _remove_stale_outputs(storage: Storage, vid: uuid.UUID, *, keep: set[str]) -> None:
    """Objects an earlier run (with other settings) left under the video's prefix."""
    stale = [info.key async for info in storage.list(video_prefix(vid)) if info.key not in keep]
    for key in stale:
        await storage.delete(key)
    if stale:
        log.info("transcode_stale_outputs_removed", objects=len(stale))


async def _validate_stored(
    storage: Storage, vid: uuid.UUID, ladder: list[Rendition], *, duration: float
) -> None:
    """Read back what viewers will read: every rendition playlist parses, names only stored
    segments and plays the source's duration; the master names every rendition. A problem here
    is the store's (the same files passed locally), so it is retried."""
    prefix = video_prefix(vid)
    stored = [info.key[len(prefix) :] async for info in storage.list(prefix)]
    try:
        for rendition in ladder:
            text = (await storage.get(f"{prefix}{rendition.name}/{PLAYLIST_NAME}")).decode()
            names = _names_under(stored, rendition.name)
            validate_media_playlist(
                text, stored=names, expected_duration_s=duration, tolerance_s=DURATION_TOLERANCE_S
            )
        master = (await storage.get(f"{prefix}{MASTER_NAME}")).decode()
        _check_master(master, ladder)
    except InvalidPlaylist as exc:
        raise TransientError(f"stored playlists are not valid: {exc}") from exc
    except StorageError as exc:
        if isinstance(exc, StorageUnavailable):
            raise
        raise TransientError(f"stored playlists could not be read: {exc}") from exc


def _names_under(keys: Iterable[str], folder: str) -> set[str]:
    return {key[len(folder) + 1 :] for key in keys if key.startswith(f"{folder}/")}


def _check_master(text: str, ladder: list[Rendition]) -> None:
    master = m3u8.loads(text)
    uris = [playlist.uri for playlist in master.playlists]
    expected = [f"{rendition.name}/{PLAYLIST_NAME}" for rendition in ladder]
    if not master.is_variant or uris != expected:
        raise InvalidPlaylist(f"the master names {uris}, expected {expected}")


async def _delete_outputs(storage: Storage, vid: uuid.UUID) -> None:
    """Remove the video's HLS output and thumbnail (best effort: a sweep can repeat it)."""
    try:
        removed = await storage.delete_prefix(video_prefix(vid))
        await storage.delete(thumbnail_key(vid))
    except StorageError as exc:
        log.warning("transcode_outputs_not_removed", error=str(exc))
        return
    if removed:
        log.info("transcode_outputs_removed", objects=removed)


# --- the job's surroundings: lease and temporary folder ------------------------------------------


@contextlib.asynccontextmanager
async def _lease(ctx: dict[str, Any], lease_s: float) -> AsyncIterator[None]:
    """Keep arq's in-progress key for this job alive for ``lease_s`` at a time.

    arq marks a running job with ``arq:in-progress:<job id>`` (lifetime: job_timeout + 10 s) and
    skips queued jobs that have one. Shortening it to a renewed lease means that when this worker
    dies without a word (SIGKILL, power loss) the key lapses within ``lease_s`` and another worker
    runs the job again, instead of after the whole job timeout.
    """
    redis = ctx.get("redis")
    job_id = ctx.get("job_id")
    if redis is None or job_id is None or lease_s <= 0:
        yield
        return
    key = in_progress_key_prefix + str(job_id)

    async def renew() -> None:
        while True:
            try:
                await redis.pexpire(key, int(lease_s * 1000))
            except Exception as exc:  # Redis hiccup: the next renewal may succeed
                log.warning("lease_renewal_failed", error=str(exc))
            await asyncio.sleep(lease_s / 3)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def work_root(settings: TranscoderSettings) -> Path:
    return settings.work_dir or Path(tempfile.gettempdir()) / "streamify-transcoder"


@contextlib.asynccontextmanager
async def _job_dir(settings: TranscoderSettings, vid: uuid.UUID) -> AsyncIterator[Path]:
    """A fresh folder for one run, removed however the run ends (the pid in its name lets a
    later worker sweep it if this process is killed)."""
    root = work_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"job-{os.getpid()}-{vid}-", dir=root))
    try:
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, path, True)


def sweep_work_dirs(settings: TranscoderSettings) -> int:
    """Remove job folders whose worker process is gone; returns how many."""
    root = work_root(settings)
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.iterdir():
        match = _JOB_DIR.match(path.name)
        if not match or not path.is_dir() or _process_alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
