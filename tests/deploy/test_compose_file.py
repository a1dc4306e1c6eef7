"""compose.yaml is a valid Compose file once .env is filled in, refuses to start without its
secrets, and keeps what the platform needs: healthchecks and start order, one database and role
per service, a scalable transcoder, Prometheus and Grafana provisioned; the Dockerfile builds
non-root images with ffmpeg only where it is used."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from tests.deploy.test_k8s import known_env_names

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "catalog", "streaming", "billing", "analytics")
_VARIABLE = re.compile(r"\$\$|\$\{([A-Z_][A-Z0-9_]*)(?:(:\?|:-)([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution, applied (as Compose does) to the parsed file's strings."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator == ":?":
            raise MissingVariable(name)
        return argument or ""

    return _VARIABLE.sub(substitute, node)


def example_env() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    keys = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    return {key: f"test-{key.lower()}-value" for key in keys}


def resolved(env: dict[str, str]) -> dict[str, Any]:
    data = interpolate(yaml.safe_load((ROOT / "compose.yaml").read_text()), env)
    return {key: value for key, value in data.items() if not key.startswith("x-")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved(example_env())


class TestValidity:
    def test_the_filled_in_file_is_a_valid_compose_file(self, compose):
        parsed = PyCompose.from_yaml(yaml.safe_dump(compose))
        assert set(parsed.service_names()) >= {*SERVICES, "gateway", "transcoder", "prometheus", "grafana"}

    def test_the_validator_refuses_what_compose_would_refuse(self, compose):
        broken = {
            **compose,
            "services": {**compose["services"], "gateway": {**compose["services"]["gateway"]}},
        }
        broken["services"]["gateway"]["depends_on"] = {"auth": {"condition": "when_ready"}}
        with pytest.raises(ValueError, match="condition"):
            PyCompose.from_yaml(yaml.safe_dump(broken))

    @pytest.mark.parametrize("secret", sorted(example_env()))
    def test_no_secret_has_a_default(self, secret):
        env = example_env()
        del env[secret]
        with pytest.raises(MissingVariable):
            resolved(env)


class TestEssentials:
    def test_every_long_running_service_has_a_healthcheck_and_waits_for_what_it_needs(self, compose):
        services = compose["services"]
        one_shot = {"migrate", "minio-init"}
        for name, service in services.items():
            if name not in one_shot:
                assert "healthcheck" in service, name
        for name in (*SERVICES, "transcoder"):
            needs = services[name]["depends_on"]
            assert needs["migrate"]["condition"] == "service_completed_successfully"
            assert needs["redis"]["condition"] == "service_healthy"
        gateway_needs = {n: c["condition"] for n, c in services["gateway"]["depends_on"].items()}
        assert gateway_needs == dict.fromkeys(SERVICES, "service_healthy")
        assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    def test_the_transcoder_scales(self, compose):
        transcoder = compose["services"]["transcoder"]
        assert "container_name" not in transcoder and "ports" not in transcoder
        assert "ffmpeg" in (ROOT / "Dockerfile").read_text()
        assert transcoder["build"]["target"] == "transcoder"

    def test_each_service_uses_its_own_role_on_its_own_database(self, compose):
        services = compose["services"]
        for service in SERVICES:
            url = services[service]["environment"][f"{service.upper()}_DATABASE_URL"]
            assert re.match(
                rf"postgresql\+asyncpg://streamify_{service}:[^@]+@postgres:5432/streamify_{service}$", url
            )
        init = (ROOT / "deploy" / "compose" / "postgres-init.sh").read_text()
        assert "REVOKE CONNECT" in init and "FROM PUBLIC" in init
        assert all(service in init for service in SERVICES)

    def test_configuration_names_are_ones_the_code_reads(self, compose):
        known = known_env_names()
        for name in (*SERVICES, "gateway", "transcoder"):
            assert set(compose["services"][name]["environment"]) - known == set(), name

    def test_prometheus_and_grafana_are_provisioned_from_the_repository(self, compose):
        mounts = " ".join(
            compose["services"]["prometheus"]["volumes"] + compose["services"]["grafana"]["volumes"]
        )
        for path in (
            "deploy/prometheus/alerts.yml",
            "deploy/grafana/provisioning",
            "deploy/grafana/dashboards",
        ):
            assert path in mounts and (ROOT / path).exists()
        scrape = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
        jobs = {job["job_name"] for job in scrape["scrape_configs"]}
        assert jobs == {*SERVICES, "gateway", "transcoder"}


class TestDockerfile:
    def test_images_are_multi_stage_non_root_with_ffmpeg_only_for_media(self):
        text = (ROOT / "Dockerfile").read_text()
        stages = re.findall(r"^FROM \S+ AS (\S+)", text, re.MULTILINE)
        assert stages == ["web", "build", "runtime", "transcoder", "service"]
        users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
        assert users and users[-1] != "root" and all(u.split(":")[0] == "10001" for u in users if u != "root")
        before, transcoder = text.split(" AS transcoder", 1)
        transcoder = transcoder.split("\nFROM", 1)[0]
        assert "apt-get install --yes --no-install-recommends ffmpeg" in transcoder
        assert "apt-get" not in before  # the service image carries no ffmpeg
        ignored = (ROOT / ".dockerignore").read_text().split()
        assert {".git", ".venv", ".env", "tests"} <= set(ignored)

    def test_the_gateway_image_serves_the_spa_built_from_the_lockfile(self, compose):
        text = (ROOT / "Dockerfile").read_text()
        stages = {
            name: (base, body)
            for base, name, body in re.findall(
                r"^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)", text, re.MULTILINE | re.DOTALL
            )
        }
        base, web = stages["web"]
        assert base.startswith("node:") and base.endswith("-slim")
        steps = [line for line in web.splitlines() if line and not line.startswith("#")]
        order = [
            "COPY web/package.json web/package-lock.json ./",  # the lockfile alone: a layer source edits keep
            "RUN npm ci --no-audit --no-fund",
            "COPY web/ ./",
            "RUN npm run build",
        ]
        assert [step for step in steps if step in order] == order
        # npm ci refuses a lockfile that disagrees with package.json.
        package = json.loads((ROOT / "web" / "package.json").read_text())
        locked = json.loads((ROOT / "web" / "package-lock.json").read_text())["packages"][""]
        for kind in ("dependencies", "devDependencies"):
            assert locked.get(kind) == package.get(kind), kind
        # Only the image that runs the gateway carries the build, and points the gateway at it.
        assert compose["services"]["gateway"]["build"]["target"] == "service"
        _, service = stages["service"]
        copied = re.search(r"^COPY --from=web /web/dist (\S+)$", service, re.MULTILINE)
        assert copied is not None and re.search(
            rf"^ENV .*GATEWAY_STATIC_DIR={copied.group(1)}\b", service, re.M
        )
        for name, (_, body) in stages.items():
            if name != "service":
                assert "--from=web" not in body and "GATEWAY_STATIC_DIR" not in body, name
        ignored = (ROOT / ".dockerignore").read_text().split()
        assert {"web/node_modules", "web/dist"} <= set(ignored) and "web" not in ignored

    def test_the_image_installs_the_locked_runtime_dependencies_without_the_dev_tools(self, tmp_path):
        # The Dockerfile's resolution step, run here: the image gets the lock's versions, minus the extras.
        step = re.search(r"uv pip compile (.+?) -o runtime.txt", (ROOT / "Dockerfile").read_text())
        assert step is not None
        uv = Path(sys.executable).with_name("uv")
        out = subprocess.run(
            [str(uv), "pip", "compile", *step.group(1).split(), "-o", str(tmp_path / "runtime.txt")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr
        pins = dict(
            re.findall(r"^([a-z0-9._-]+)==(\S+)", (tmp_path / "runtime.txt").read_text(), re.MULTILINE)
        )
        locked = dict(
            re.findall(r"^([a-z0-9._-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
        )
        assert {"fastapi", "uvicorn", "asyncpg", "redis", "arq", "prometheus-client"} <= set(pins)
        assert all(locked.get(name) == version for name, version in pins.items())
        assert not {"pytest", "hypothesis", "ruff", "mypy", "moto"} & set(pins)
