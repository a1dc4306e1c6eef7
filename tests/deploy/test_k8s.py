"""deploy/k8s renders with kustomize, validates against the Kubernetes schemas (offline), and keeps
what operators rely on: probes, resources, non-root read-only pods, disruption budgets,
autoscaling, network policies, migrations, monitoring."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from common.settings import SHARED_FIELDS
from common.storage.settings import StorageSettings
from gateway.settings import GatewaySettings
from services.analytics.settings import AnalyticsSettings
from services.auth.settings import AuthSettings
from services.billing.settings import BillingSettings
from services.catalog.settings import CatalogSettings
from services.streaming.settings import StreamingSettings
from transcoder.settings import TranscoderSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
SERVICES = ("auth", "catalog", "streaming", "billing", "analytics")
COMPONENTS = ("gateway", *SERVICES, "transcoder")
KUBERNETES_VERSION = "1.31.0"
# Custom resources of operators the manifests use (KEDA, Prometheus Operator): not in the core
# schemas, checked by hand below.
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
# Names read by something other than our settings classes.
FOREIGN_ENV = {"PYTHONUNBUFFERED", "FORWARDED_ALLOW_IPS", "TMPDIR"}


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if os.environ.get("CI") == "true":
        pytest.fail("neither kustomize nor kubectl is installed")
    pytest.skip("neither kustomize nor kubectl is installed")


def render(target: Path) -> list[dict[str, Any]]:
    out = subprocess.run([*kustomize_command(), str(target)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def known_env_names() -> set[str]:
    names = {field.upper() for field in SHARED_FIELDS} | {f.upper() for f in StorageSettings.model_fields}
    classes: list[type[BaseSettings]] = [
        AuthSettings,
        CatalogSettings,
        StreamingSettings,
        BillingSettings,
        AnalyticsSettings,
        GatewaySettings,
        TranscoderSettings,
    ]
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            names.add(f"{prefix}{name}".upper())
            alias = field.validation_alias
            for choice in getattr(alias, "choices", ()):
                if isinstance(choice, str):
                    names.add(choice.upper())
    return names | FOREIGN_ENV


class TestRendering:
    def test_every_resource_validates_against_the_kubernetes_schemas(self, overlay):
        _, docs = overlay
        for doc in docs:
            if doc["kind"] in CUSTOM_KINDS:
                continue
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)

    def test_custom_resources_have_what_their_operators_need(self, overlay):
        _, docs = overlay
        scaled = of_kind(docs, "ScaledObject")["transcoder"]
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled["spec"]["scaleTargetRef"]["name"] == "transcoder"
        assert "streamify_queue_jobs" in scaled["spec"]["triggers"][0]["metadata"]["query"]
        monitors = of_kind(docs, "ServiceMonitor")
        assert set(monitors) == set(COMPONENTS)
        services = of_kind(docs, "Service")
        for name, monitor in monitors.items():
            port = monitor["spec"]["endpoints"][0]["port"]
            assert port in {p["name"] for p in services[name]["spec"]["ports"]}
        rules = of_kind(docs, "PrometheusRule")["streamify"]
        alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
        assert rules["spec"]["groups"] == alerts["groups"], "regenerate base/prometheus-rules.yaml"

    def test_dashboards_ship_as_a_configmap(self, overlay):
        _, docs = overlay
        dashboards = of_kind(docs, "ConfigMap")["streamify-grafana-dashboards"]
        assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
        files = {p.name for p in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")}
        assert set(dashboards["data"]) == files


class TestOperatorEssentials:
    def test_every_component_runs_non_root_read_only_with_probes_and_resources(self, overlay):
        _, docs = overlay
        deployments = of_kind(docs, "Deployment")
        for name in COMPONENTS:
            pod = deployments[name]["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
            assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == name
            assert pod["terminationGracePeriodSeconds"] >= 30
            (container,) = pod["containers"]
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, (name, probe)
            assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
            if name != "transcoder":
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    def test_disruption_budgets_autoscalers_and_migrations(self, overlay):
        _, docs = overlay
        assert set(of_kind(docs, "PodDisruptionBudget")) == set(COMPONENTS)
        autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
        assert set(autoscalers) == {"gateway", *SERVICES}
        assert all(h["spec"]["maxReplicas"] > h["spec"]["minReplicas"] for h in autoscalers.values())
        jobs = of_kind(docs, "Job")
        for service in SERVICES:
            job = jobs[f"{service}-migrate"]["spec"]["template"]["spec"]["containers"][0]
            assert f"services.{service}" in " ".join(job["args"])
            assert [e["name"] for e in job["env"]] == [f"{service.upper()}_DATABASE_URL"]

    def test_only_the_gateway_takes_traffic_from_outside_the_namespace(self, overlay):
        _, docs = overlay
        policies = of_kind(docs, "NetworkPolicy")
        deny = policies["default-deny"]["spec"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        for name, policy in policies.items():
            for rule in policy["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    namespace = (
                        peer.get("namespaceSelector", {})
                        .get("matchLabels", {})
                        .get("kubernetes.io/metadata.name")
                    )
                    if namespace == "ingress-nginx":
                        assert name == "gateway"
                    elif namespace is not None:
                        assert namespace == "monitoring"  # scrapes only
        ingress = next(iter(of_kind(docs, "Ingress").values()))
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == "gateway"

    def test_each_service_reaches_only_the_peers_it_calls(self, overlay):
        _, docs = overlay
        policies = of_kind(docs, "NetworkPolicy")

        def peers(name: str) -> set[str]:
            return {
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                for rule in policies[name]["spec"]["egress"]
                for peer in rule.get("to", [])
                if "podSelector" in peer
            }

        assert peers("streaming") == {"auth", "catalog", "billing"}
        assert peers("billing") == peers("analytics") == peers("catalog") == {"auth"}
        assert peers("transcoder") == {"catalog"}
        assert peers("auth") == set()

    def test_configuration_names_are_ones_the_code_reads(self, overlay):
        _, docs = overlay
        known = known_env_names()
        config = of_kind(docs, "ConfigMap")["streamify-config"]
        used = set(config["data"])
        for deployment in of_kind(docs, "Deployment").values():
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                used |= {
                    e["name"]
                    for e in container.get("env", [])
                    if deployment["metadata"]["name"] in COMPONENTS
                }
        assert used - known == set()


class TestOverlays:
    def test_prod_uses_external_services_and_brings_no_secret(self):
        docs = render(K8S / "overlays" / "prod")
        assert "Secret" not in {doc["kind"] for doc in docs}
        config = of_kind(docs, "ConfigMap")["streamify-config"]["data"]
        assert config["ENVIRONMENT"] == "production"
        assert "svc" not in config["REDIS_URL"] and config["REDIS_URL"] != "redis://redis:6379/0"
        assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} == {"streamify"}
        assert all(
            d["spec"]["replicas"] >= 2 for n, d in of_kind(docs, "Deployment").items() if n != "transcoder"
        )

    def test_dev_runs_its_own_dependencies_with_development_secrets(self):
        docs = render(K8S / "overlays" / "dev")
        secret = of_kind(docs, "Secret")["streamify-secrets"]
        assert set(secret["data"]) >= {f"{s.upper()}_DATABASE_URL" for s in SERVICES}
        assert of_kind(docs, "ConfigMap")["streamify-config"]["data"]["ENVIRONMENT"] == "development"
        assert {"postgres", "redis", "minio"} <= set(of_kind(docs, "Deployment"))
