"""The metrics of the running platform, as Prometheus sees them: `streamify up` as a real process
tree (one transcoder worker), a real Prometheus server (Debian's binary) scraping it every second
with the shipped config and alert rules, and real traffic through the gateway.

The module's stack serves every test: a creator uploads a paid video (25 cents a unit, 2 s units),
the transcoder makes it ready, a viewer's card is declined once, a broke viewer is refused, a viewer
tops up and watches with ffmpeg as the HLS player while heartbeats run, then ends the session.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tusclient import client as tus

from common.db import drop_database
from streamify.embedded import free_port, free_port_range
from streamify.stack import SERVICES, database_url
from tests.conftest import PG_BASE
from tests.e2e.test_payperminute import PRICE, HeartbeatLoop, _become_creator, _money_call, _sign_in
from tests.e2e.test_pipeline import _play
from tests.e2e.test_stack import RUN, Stack, _stack_env
from tests.media import make_video
from tests.observability.conftest import prometheus_tool
from tests.observability.promql import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_SERIES,
    RULES,
    dashboard_queries,
    exported_names,
    metric_names,
    rule_queries,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed"),
]

LOCAL_GATEWAY_PORT = 8080  # the port deploy/prometheus/prometheus.yml is written for
# The stack's ports: gateway P, services P+1..P+5, transcoder-1's metrics P+10 (P+11 is the shipped
# config's second worker, which this stack does not run).
PORTS_NEEDED = 12
UNIT_S = 2
TOPUP = 40 * PRICE  # plenty: the only wallet decline is the broke viewer's
READY_TIMEOUT_S = 120.0
TUS_CHUNK = 32 * 1024
# The event-bus metrics the brief reserves for the bus helpers: accepted by name while their code
# defines them (the consumer runs in analytics and may export nothing until it starts).
BUS_METRICS = {
    "streamify_events_published_total": "common/outbox.py",
    "streamify_outbox_pending": "common/outbox.py",
    "streamify_events_consumed_total": "common/consumer.py",
    "streamify_events_consumer_lag_events": "common/consumer.py",
    "streamify_events_consumer_lag_seconds": "common/consumer.py",
    "streamify_events_dead_letters_total": "common/consumer.py",
    "streamify_events_dlq_length": "common/consumer.py",
}
ROOT = Path(__file__).resolve().parents[2]


class Prometheus:
    """A Prometheus server of the test's own: the shipped config, re-pointed at the test stack."""

    def __init__(self, binary: str, work: Path, stack_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"].update(
            {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        )
        config["rule_files"] = [str(RULES)]
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = [self._moved(target, stack_port) for target in static["targets"]]
        work.mkdir(parents=True, exist_ok=True)
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (work / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (work / "prometheus.log").read_text()
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("Prometheus did not get ready")

    @staticmethod
    def _moved(target: str, stack_port: int) -> str:
        host, _, port = target.rpartition(":")
        return f"{host}:{int(port) - LOCAL_GATEWAY_PORT + stack_port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/query", params={"query": promql})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of an aggregating query (None while it has no result)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(self, promql: str, expected: float, timeout_s: float = 20) -> float | None:
        deadline = time.monotonic() + timeout_s
        while (value := self.value(promql)) != expected and time.monotonic() < deadline:
            time.sleep(0.25)
        return value

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@dataclass
class ObservedStack:
    stack: Stack
    prometheus: Prometheus
    # job name -> /metrics URL of every process
    endpoints: dict[str, str]
    charged_cents: int = 0
    units_charged: int = 0
    live_sessions_seen: float | None = None
    source_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _wait_ready(creator: Any, video_id: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        video = creator.call("GET", f"/videos/{video_id}").json()
        assert video["status"] != "failed", video
        if video["status"] == "ready":
            return
        time.sleep(0.25)
    pytest.fail(f"video {video_id} not ready after {READY_TIMEOUT_S} s")


def _drive_paid_playback(observed: ObservedStack, source: Path) -> None:
    stack, prometheus = observed.stack, observed.prometheus
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        creator = _sign_in(http, "obs-creator")
        _become_creator(http, creator)
        created = creator.call(
            "POST", "/videos", json={"title": "Observed", "price_per_minute": PRICE, "visibility": "public"}
        )
        assert created.status_code == 201, created.text
        video_id = created.json()["id"]
        with source.open("rb") as body:
            put = creator.call(
                "PUT", f"/videos/{video_id}/source", content=body, headers={"Content-Type": "video/mp4"}
            )
        assert put.status_code in (200, 202), put.text
        _wait_ready(creator, video_id)

        # A second (free) video through the resumable upload, in several PATCHes.
        free = creator.call("POST", "/videos", json={"title": "Observed, tus", "visibility": "public"})
        assert free.status_code == 201, free.text
        uploads = tus.TusClient(f"{stack.url}/api/v1/uploads")
        uploads.set_headers({"Authorization": f"Bearer {creator.token}"})
        uploader = uploads.uploader(
            file_path=str(source), chunk_size=TUS_CHUNK, metadata={"video_id": free.json()["id"]}
        )
        uploader.upload()
        assert uploader.offset == source.stat().st_size > 2 * TUS_CHUNK
        _wait_ready(creator, free.json()["id"])

        broke = _sign_in(http, "obs-broke")
        refused = broke.call("POST", "/playback/sessions", json={"video_id": video_id})
        assert refused.status_code == 402, refused.text

        viewer = _sign_in(http, "obs-viewer")
        declined = _money_call(
            viewer,
            "POST",
            "/wallet/topups",
            key=uuid.uuid4().hex,
            json={"amount": TOPUP, "payment_method": "test_card_declined"},
        )
        assert declined.status_code == 402, declined.text
        topup = _money_call(
            viewer,
            "POST",
            "/wallet/topups",
            key=uuid.uuid4().hex,
            json={"amount": TOPUP, "payment_method": "test_card"},
        )
        assert topup.status_code == 201, topup.text

        started = viewer.call("POST", "/playback/sessions", json={"video_id": video_id})
        assert started.status_code == 201, started.text
        session = started.json()
        loop = HeartbeatLoop(viewer, session["session_id"])
        loop.start()
        try:
            # Prometheus sees the live session while it plays.
            observed.live_sessions_seen = prometheus.wait_for_value(
                "max(streamify_playback_active_sessions)", 1
            )
            code, _, stderr = _play(f"{stack.url}{session['master_url']}")
            assert code == 0, stderr
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(
                r.get("billed_minutes", 0) >= 3 for r in loop.replies
            ):
                time.sleep(0.1)
        finally:
            loop.stop_event.set()
            loop.join(timeout=10)
        ended = viewer.call("POST", f"/playback/sessions/{session['session_id']}/end")
        assert ended.status_code == 200, ended.text
        final = ended.json()
        assert final["billed_minutes"] >= 3, (final, loop.replies[-3:], loop.errors[-3:])
        observed.units_charged = final["billed_minutes"]
        observed.charged_cents = final["charged_total"]
        assert observed.charged_cents == observed.units_charged * PRICE


@pytest.fixture(scope="module")
async def observed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ObservedStack]:
    prometheus_binary = prometheus_tool("prometheus")
    work = tmp_path_factory.mktemp("observed")
    source = make_video(work / "clip.mp4", size="320x240", seconds=4, rate=24)
    prefix = f"streamify_obs_{RUN}_{uuid.uuid4().hex[:6]}"
    env = {
        **_stack_env(prefix),
        "STREAMIFY_TRANSCODERS": "1",
        "BILLING_UNIT_SECONDS": str(UNIT_S),
        "HEARTBEAT_INTERVAL_SECONDS": "1",
    }
    port = free_port_range(PORTS_NEEDED)
    stack = Stack(work / "data", port, env)
    prometheus: Prometheus | None = None
    try:
        stack.start()
        prometheus = Prometheus(prometheus_binary, work / "prometheus", port)
        endpoints = {"gateway": f"{stack.url}/metrics", "transcoder": f"http://127.0.0.1:{port + 10}/metrics"}
        for index, service in enumerate(SERVICES, start=1):
            endpoints[service] = f"http://127.0.0.1:{port + index}/metrics"
        observed = ObservedStack(
            stack=stack, prometheus=prometheus, endpoints=endpoints, source_bytes=source.stat().st_size
        )
        _drive_paid_playback(observed, source)
        yield observed
    finally:
        if prometheus is not None:
            prometheus.stop()
        stack.kill()
        for service in SERVICES:
            await drop_database(database_url(PG_BASE, f"{prefix}_{service}"))


def _scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code)
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return response.text


class TestExposition:
    def test_every_process_serves_metrics_that_promtool_accepts(self, observed: ObservedStack, promtool: str):
        assert set(observed.endpoints) == {*SERVICES, "gateway", "transcoder"}
        for job, url in observed.endpoints.items():
            text = _scrape(url)
            checked = subprocess.run(
                [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
            )
            # promtool prints one line per lint problem and exits 1 (3 on a parse error).
            assert checked.returncode == 0, (job, checked.stdout, checked.stderr)
            assert checked.stdout.strip() == "" and checked.stderr.strip() == "", (job, checked.stdout)

    def test_every_process_reports_redis_up_and_services_their_database_pool(self, observed: ObservedStack):
        for job, url in observed.endpoints.items():
            samples = _samples(_scrape(url))
            assert samples.get(("streamify_redis_up", ())) == 1.0, job
            if job in SERVICES:
                # The default pool: 10 connections plus 10 overflow.
                assert samples.get(("streamify_db_pool_max_connections", (("pool", "main"),))) == 20.0, job
                assert samples.get(("streamify_db_pool_open_connections", (("pool", "main"),)), 0) >= 1, job
        billing = _samples(_scrape(observed.endpoints["billing"]))
        assert billing.get(("streamify_db_pool_max_connections", (("pool", "ledger"),))) == 16.0

    def test_dashboards_and_alert_rules_use_only_metrics_the_processes_export(self, observed: ObservedStack):
        exported = set(PROMETHEUS_SERIES)
        for url in observed.endpoints.values():
            exported |= exported_names(_scrape(url))
        for name, path in BUS_METRICS.items():
            code = ROOT / path
            if code.exists() and f'"{name.removesuffix("_total")}' in code.read_text():
                exported.add(name)
        missing = {
            (where, name)
            for where, query in dashboard_queries() + rule_queries()
            for name in metric_names(query)
            if name not in exported
        }
        assert not missing, sorted(missing)


class TestPrometheus:
    def test_prometheus_scrapes_every_process_and_reports_the_charged_cents(self, observed: ObservedStack):
        prometheus = observed.prometheus
        assert observed.live_sessions_seen == 1
        up = prometheus.query("up == 1")
        assert {sample["metric"]["job"] for sample in up} == {*SERVICES, "gateway", "transcoder"}

        cents = prometheus.wait_for_value(
            'sum(streamify_billing_charged_cents_total{currency="USD"})', observed.charged_cents
        )
        assert cents == observed.charged_cents == observed.units_charged * PRICE
        assert prometheus.value("sum(streamify_billing_units_charged_total)") == observed.units_charged
        assert (
            prometheus.value("sum(streamify_billing_platform_fee_cents_total)") == observed.units_charged * 5
        )
        assert prometheus.value('sum(streamify_billing_topups_total{outcome="declined"})') == 1
        assert prometheus.value('sum(streamify_billing_topups_total{outcome="succeeded"})') == 1
        assert prometheus.value('sum(streamify_billing_topup_cents_total{currency="USD"})') == TOPUP
        assert prometheus.value("sum(streamify_billing_wallet_declines_total)") == 1
        assert (
            prometheus.value('sum(streamify_playback_charges_total{outcome="charged"})')
            == observed.units_charged
        )
        assert prometheus.value('sum(streamify_playback_sessions_started_total{paid="true"})') == 1
        assert prometheus.value('sum(streamify_playback_sessions_ended_total{reason="ended_by_viewer"})') == 1
        assert prometheus.wait_for_value("max(streamify_playback_active_sessions)", 0) == 0
        heartbeats = prometheus.value('sum(streamify_playback_heartbeats_total{outcome="active"})')
        assert heartbeats is not None and heartbeats >= 3
        # Billing checked its ledger when it started, and found it sound.
        checked_at = prometheus.value("max(streamify_billing_ledger_last_check_timestamp_seconds)")
        assert checked_at is not None and time.time() - 600 < checked_at <= time.time()
        assert prometheus.value("sum(streamify_billing_ledger_violations)") == 0

    def test_the_pipeline_shows_in_the_transcoder_and_upload_metrics(self, observed: ObservedStack):
        prometheus = observed.prometheus
        assert prometheus.value('sum(streamify_transcode_jobs_total{outcome="ready"})') == 2
        assert prometheus.value('sum(streamify_transcode_jobs_total{outcome!="ready"})') == 0
        assert prometheus.value('sum(streamify_transcode_job_duration_seconds_count{outcome="ready"})') == 2
        assert prometheus.value("sum(streamify_transcode_realtime_factor_count)") == 2
        factor = prometheus.value("sum(streamify_transcode_realtime_factor_sum)")
        assert factor is not None and factor > 0
        assert prometheus.value("sum(streamify_transcode_jobs_in_progress)") == 0
        for method in ("put", "tus"):
            started = f'sum(streamify_catalog_uploads_started_total{{method="{method}"}})'
            assert prometheus.value(started) == 1, method
            completed = (
                f'sum(streamify_catalog_uploads_completed_total{{method="{method}", result="accepted"}})'
            )
            assert prometheus.value(completed) == 1, method
            received = f'sum(streamify_catalog_upload_received_bytes_total{{method="{method}"}})'
            assert prometheus.value(received) == observed.source_bytes, method
        # Both the catalog and the worker report the (now empty) queue.
        queue = prometheus.query('streamify_queue_jobs{queue="streamify:transcoder", state="due"}')
        assert {sample["metric"]["job"] for sample in queue} == {"catalog", "transcoder"}
        assert all(float(sample["value"][1]) == 0 for sample in queue)

    def test_every_alert_rule_evaluates_and_none_fires_on_a_healthy_stack(self, observed: ObservedStack):
        prometheus = observed.prometheus
        deadline = time.monotonic() + 10
        while True:
            groups = prometheus.http.get("/api/v1/rules").json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if (
                all(rule.get("lastEvaluation", "").startswith("2") for rule in rules)
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.5)
        assert len(rules) == len(rule_queries())
        assert all(rule["health"] == "ok" for rule in rules), [
            (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"
        ]
        firing = [
            alert["labels"]
            for alert in prometheus.http.get("/api/v1/alerts").json()["data"]["alerts"]
            if alert["state"] == "firing"
        ]
        assert firing == []


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
