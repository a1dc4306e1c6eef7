"""Catalog's business metrics: uploads. The catalog also exports the depth of the transcode queue
it feeds (``streamify_queue_jobs{queue="streamify:transcoder"}``, common.metrics.watch_queue), like
every transcoder worker does, so a backlog shows (and alerts) even when no worker runs at all.
"""

from __future__ import annotations

from prometheus_client import Counter

UPLOAD_METHODS = ("tus", "put")

UPLOADS_STARTED = Counter(
    "streamify_catalog_uploads_started_total",
    "Source uploads started, by method (tus: resumable; put: one-shot PUT /videos/{id}/source).",
    ["method"],
)
UPLOADS_COMPLETED = Counter(
    "streamify_catalog_uploads_completed_total",
    "Source uploads whose every byte arrived, by method and result (accepted: a video, handed to the "
    "transcoder; rejected: not a video, or empty).",
    ["method", "result"],
)
UPLOAD_BYTES = Counter(
    "streamify_catalog_upload_received_bytes_total",
    "Bytes of source uploads received and stored, by method.",
    ["method"],
)
for _method in UPLOAD_METHODS:
    UPLOADS_STARTED.labels(_method)
    UPLOAD_BYTES.labels(_method)
    for _result in ("accepted", "rejected"):
        UPLOADS_COMPLETED.labels(_method, _result)

# Pre-bound: bytes are counted per chunk on the upload path.
TUS_BYTES = UPLOAD_BYTES.labels("tus")
PUT_BYTES = UPLOAD_BYTES.labels("put")


def count_upload_started(method: str) -> None:
    UPLOADS_STARTED.labels(method).inc()


def count_upload_completed(method: str, *, accepted: bool) -> None:
    UPLOADS_COMPLETED.labels(method, "accepted" if accepted else "rejected").inc()
