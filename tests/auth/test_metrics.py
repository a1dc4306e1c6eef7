"""RED metrics are labelled by route template, so a dashboard groups every channel page as one route."""

from __future__ import annotations

import re
import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.auth.conftest import client_for


def samples(text: str, name: str) -> list[dict[str, str]]:
    return [
        {**sample.labels, "value": str(sample.value)}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


class TestRouteTemplates:
    async def test_requests_are_counted_under_their_template_with_status(self, auth_app):
        async with client_for(auth_app) as client:
            for _ in range(3):
                missing = await client.get(f"/channels/{uuid.uuid4()}")
                assert missing.status_code == 404
            await client.get("/healthz")
            text = (await client.get("/metrics")).text

        counted = samples(text, "http_requests_total")
        not_found = [
            s
            for s in counted
            if s["route"] == "/channels/{channel_id}" and s["method"] == "GET" and s["status"] == "404"
        ]
        assert not_found and float(not_found[0]["value"]) >= 3
        assert not re.search(r'route="/channels/[0-9a-f-]{36}"', text), "raw ids must never become labels"
        assert not [s for s in counted if s["route"] in {"/healthz", "/metrics"}]
        durations = samples(text, "http_request_duration_seconds_count")
        assert any(s["route"] == "/channels/{channel_id}" for s in durations)
