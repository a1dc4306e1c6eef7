"""W3C trace context: one trace id from the request that started something, through service calls
and into the jobs it enqueued, on every log line of the way."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest
import structlog
from arq.jobs import Job
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from common import tracing
from common.internal import ServiceClient
from common.logging import RequestIdMiddleware
from services.catalog.tasks import arq_pool, enqueue_transcode
from transcoder.tasks import transcode_video

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class TestParsing:
    def test_a_valid_header_gives_its_trace_parent_and_flags(self):
        assert tracing.parse_traceparent(VALID) == (
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "01",
        )

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is invalid
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has no more fields
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        ],
    )
    def test_an_invalid_header_is_refused(self, header: str):
        assert tracing.parse_traceparent(header) is None

    def test_a_future_version_with_more_fields_is_understood(self):
        header = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next"
        assert tracing.parse_traceparent(header) == (
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "01",
        )

    def test_continuing_keeps_the_trace_and_makes_a_new_span_below_the_callers(self):
        span = tracing.continue_trace(VALID, "vendor=abc")
        assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert span.parent_id == "00f067aa0ba902b7" and span.span_id != span.parent_id
        assert span.headers() == {"traceparent": span.traceparent, "tracestate": "vendor=abc"}
        assert tracing.parse_traceparent(span.traceparent) == (span.trace_id, span.span_id, "01")

    def test_without_a_valid_header_a_new_trace_starts(self):
        first, second = tracing.continue_trace("nonsense"), tracing.continue_trace(None)
        assert first.trace_id != second.trace_id and first.parent_id is None
        assert tracing.parse_traceparent(first.traceparent) is not None


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers the headers it got, and logs one line (inside the request's context)."""
    structlog.get_logger("echo").info("echo")
    body = httpx.Response(200, json={k.decode(): v.decode() for k, v in scope["headers"]}).content
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def all_levels() -> Iterator[None]:
    """Info lines too (other tests configure logging at WARNING, which filters before capture)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**saved)


class TestServiceCalls:
    async def test_a_request_span_is_on_its_log_lines_and_the_parent_of_its_service_calls(self, all_levels):
        seen: dict[str, str] = {}

        async def service(scope: Scope, receive: Receive, send: Send) -> None:
            # Inside a service's request: call a peer through the ServiceClient.
            client = ServiceClient(
                "http://peer",
                service="catalog",
                secret="s" * 40,
                transport=httpx.ASGITransport(app=RequestIdMiddleware(_echo)),
            )
            response = await client.get("/anything")
            seen.update(response.json())
            await client.aclose()
            await _echo(scope, receive, send)

        app = RequestIdMiddleware(service)
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://svc"
            ) as client:
                response = await client.get("/", headers={"traceparent": VALID, "x-request-id": "req-1"})
        assert response.status_code == 200
        # The peer got the same trace, with the service's span as parent (not the caller's).
        trace_id, parent, _ = tracing.parse_traceparent(seen["traceparent"]) or ("", "", "")
        assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and parent != "00f067aa0ba902b7"
        lines = [line for line in logs if line["event"] == "echo"]
        assert len(lines) == 2, logs
        assert {line.get("trace_id") for line in lines} == {trace_id}, lines
        assert lines[-1]["span_id"] == parent  # the service's own line: the peer's parent span
        assert lines[0]["span_id"] != parent  # the peer's line: its own span
        assert all(line["request_id"] for line in lines)


class TestJobs:
    async def test_a_job_carries_the_trace_of_the_request_that_enqueued_it(self, redis):
        queue = f"test:tracing:{uuid.uuid4().hex}"
        pool = arq_pool(redis, queue_name=queue)
        span = tracing.continue_trace(VALID)
        token = tracing.enter(span)
        try:
            job = await enqueue_transcode(pool, uuid.uuid4(), queue_name=queue)
        finally:
            tracing.leave(token)
        assert job is not None
        info = await Job(job.job_id, redis, _queue_name=queue).info()
        assert info is not None
        traceparent = info.kwargs["traceparent"]
        assert tracing.parse_traceparent(traceparent)[0] == span.trace_id  # type: ignore[index]

        # The worker runs the job with that header: its log lines carry the job id and the trace id.
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            result = await transcode_video({"settings": None, "job_id": "job-7"}, "not-a-uuid", traceparent)
        assert result == {"status": "invalid_video_id"}
        line = next(line for line in logs if line["event"] == "transcode_invalid_video_id")
        assert (line["job_id"], line["trace_id"]) == ("job-7", span.trace_id)
        assert tracing.current_span() is None  # nothing leaks into the next job
