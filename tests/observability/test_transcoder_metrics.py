"""Transcode job outcomes as the worker counts them (the ready path is exercised end to end in
test_stack_metrics.py): bad input counts as failed, transient trouble as retry, each run timed;
and a metrics port already taken does not keep a worker from transcoding."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from arq import Retry
from prometheus_client import REGISTRY

from streamify.embedded import free_port
from tests.transcoder.conftest import CatalogServer, Clips
from transcoder import metrics


def runs(outcome: str) -> float:
    return REGISTRY.get_sample_value("streamify_transcode_jobs_total", {"outcome": outcome}) or 0.0


def timed(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("streamify_transcode_job_duration_seconds_count", {"outcome": outcome})
        or 0.0
    )


class TestJobOutcomes:
    async def test_bad_input_counts_as_a_failed_run(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        failed, failed_timed, ready = runs("failed"), timed("failed"), runs("ready")
        video_id, _ = await local_catalog.processing_video(clips.not_video)
        result = await local_catalog.run_job(video_id, local_catalog.transcoder_settings(work_dir=work_dir))
        assert result["status"] == "failed"
        assert runs("failed") == failed + 1
        assert timed("failed") == failed_timed + 1
        assert runs("ready") == ready
        assert REGISTRY.get_sample_value("streamify_transcode_jobs_in_progress") == 0

    async def test_transient_trouble_counts_as_a_retry(
        self, local_catalog: CatalogServer, clips: Clips, work_dir: Path
    ):
        retried = runs("retry")
        video_id, _ = await local_catalog.processing_video(clips.landscape)
        settings = local_catalog.transcoder_settings(
            work_dir=work_dir, catalog_url=f"http://127.0.0.1:{free_port()}"
        )
        with pytest.raises(Retry):
            await local_catalog.run_job(video_id, settings, job_try=1)
        assert runs("retry") == retried + 1
        assert REGISTRY.get_sample_value("streamify_transcode_jobs_in_progress") == 0


class TestMetricsServer:
    def test_a_metrics_port_in_use_is_logged_not_fatal(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            metrics.serve("127.0.0.1", taken.getsockname()[1])  # no exception: the worker carries on
