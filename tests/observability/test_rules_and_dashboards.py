"""The shipped alert rules, their unit tests, the local Prometheus config and the Grafana files, as
Prometheus's own tool and Grafana's provisioning would read them. (That every metric they name is
really exported is checked against the running stack in test_stack_metrics.py.)"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.observability.promql import (
    PROMETHEUS_CONFIG,
    PROVISIONING,
    RULE_TESTS,
    RULES,
    dashboard_queries,
    dashboards,
    metric_names,
    rule_queries,
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


class TestAlertRules:
    def test_promtool_accepts_the_rules(self, promtool: str):
        checked = run(promtool, "check", "rules", str(RULES))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout

    def test_the_rules_unit_tests_pass(self, promtool: str):
        tested = run(promtool, "test", "rules", str(RULE_TESTS))
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "SUCCESS" in tested.stdout

    def test_the_unit_tests_fail_when_a_rule_changes(self, promtool: str, tmp_path):
        # The tests compare what fires, with which labels and text: a threshold moved by mistake fails.
        changed = RULES.read_text().replace(
            "streamify_billing_ledger_violations) > 0", "streamify_billing_ledger_violations) > 5"
        )
        (tmp_path / "alerts.yml").write_text(changed)
        (tmp_path / "alerts_test.yml").write_text(RULE_TESTS.read_text())
        tested = run(promtool, "test", "rules", str(tmp_path / "alerts_test.yml"))
        assert tested.returncode != 0
        assert "LedgerInvariantViolated" in tested.stdout + tested.stderr

    def test_every_alert_fires_in_a_unit_test(self):
        document = yaml.safe_load(RULE_TESTS.read_text())
        fired = {
            case["alertname"]
            for test in document["tests"]
            for case in test.get("alert_rule_test", [])
            if case.get("exp_alerts")
        }
        assert fired == {rule["alert"] for rule in alert_rules()}

    def test_the_issue_s_alerts_are_there_with_a_severity_and_a_summary(self):
        rules = {rule["alert"]: rule for rule in alert_rules()}
        # error rate, latency, queue backlog, DLQ growth, billing failures, ledger check failures
        for name in (
            "HighErrorRate",
            "HighLatency",
            "TranscodeBacklog",
            "DeadLetterQueueGrowing",
            "BillingErrors",
            "ChargesFailing",
            "LedgerInvariantViolated",
            "LedgerCheckStale",
        ):
            assert name in rules
        for name, rule in rules.items():
            assert rule["labels"]["severity"] in {"page", "ticket"}, name
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], name

    def test_the_local_prometheus_config_is_valid_and_loads_the_rules(self, promtool: str):
        checked = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        assert config["rule_files"] == ["alerts.yml"]
        jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
        assert jobs == {
            "gateway": ["127.0.0.1:8080"],
            "auth": ["127.0.0.1:8081"],
            "catalog": ["127.0.0.1:8082"],
            "streaming": ["127.0.0.1:8083"],
            "billing": ["127.0.0.1:8084"],
            "analytics": ["127.0.0.1:8085"],
            "transcoder": ["127.0.0.1:8090", "127.0.0.1:8091"],
        }


class TestDashboards:
    def test_the_four_dashboards_are_there_with_their_own_uids(self):
        boards = dashboards()
        uids = [board["uid"] for board in boards.values()]
        assert sorted(uids) == [
            "streamify-business",
            "streamify-overview",
            "streamify-service-red",
            "streamify-transcoder",
        ]
        for board in boards.values():
            assert board["panels"], board["uid"]

    def test_every_panel_queries_the_provisioned_datasource(self):
        provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
        (source,) = provisioned["datasources"]
        assert source["type"] == "prometheus"
        for name, board in dashboards().items():
            for panel in board["panels"]:
                if panel["type"] == "row":
                    continue
                assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, (
                    name,
                    panel["title"],
                )
                for target in panel["targets"]:
                    assert target["datasource"]["uid"] == source["uid"], (name, panel["title"])
                    assert target["expr"].strip(), (name, panel["title"])

    def test_the_dashboards_provider_loads_a_folder_of_files(self):
        provider = yaml.safe_load((PROVISIONING / "dashboards" / "streamify.yml").read_text())
        (entry,) = provider["providers"]
        assert entry["type"] == "file" and entry["options"]["path"]

    def test_the_per_service_dashboard_groups_by_route_template(self):
        board = dashboards()["service-red.json"]
        queries = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
        assert any("by (method, route)" in query for query in queries)
        assert all('job="$job"' in query for query in queries if "http_request" in query)


class TestMetricNames:
    """The extractor the stack test relies on finds names and nothing else."""

    def test_names_come_out_of_functions_aggregations_and_binary_operators(self):
        expr = (
            "histogram_quantile(0.95, sum by (job, le) ("
            'rate(http_request_duration_seconds_bucket{route!~"a|b"}[$__rate_interval])))'
            ' / ignoring(le) group_left max(up{job="x"} offset 5m) > bool 0.5'
            " unless on () (streamify_redis_up == 1) or vector(0)"
        )
        assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up", "streamify_redis_up"}
        assert metric_names("label_values(http_requests_total, job)") == {"http_requests_total"}
        assert metric_names("time() - max(some_timestamp_seconds)") == {"some_timestamp_seconds"}

    def test_the_shipped_files_name_many_metrics(self):
        names = set().union(*(metric_names(q) for _, q in dashboard_queries() + rule_queries()))
        assert len(names) > 40
        assert "streamify_billing_charged_cents_total" in names
