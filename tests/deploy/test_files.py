"""The deployment files pass their own tools: hadolint, docker-compose, promtool, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import nginx
from harness.processes import DOCKER, binary
from service.config import ENV_PREFIX, Settings
from tests.system.test_prometheus import DASHBOARD

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = run(str(hadolint), str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_image_is_slim_non_root_and_checks_readiness() -> None:
    text = (DOCKER / "service.Dockerfile").read_text()
    assert '".[serve]"' in text
    assert "torch" not in text.replace("no torch", "")
    assert "USER 10001" in text
    assert "HEALTHCHECK" in text
    assert "/readyz" in text


def test_compose_file_is_valid_and_needs_the_grafana_password() -> None:
    compose = binary("docker-compose")
    env = os.environ | {"GRAFANA_ADMIN_PASSWORD": "test"}
    result = run(compose, "-f", str(DOCKER / "compose.yml"), "config", env=env)
    assert result.returncode == 0, result.stderr
    assert "profiles:\n    - train" in result.stdout
    without = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    refused = run(compose, "-f", str(DOCKER / "compose.yml"), "config", env=without)
    assert refused.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in refused.stderr


def test_the_nginx_config_renders_from_its_template_and_passes_nginx_t(tmp_path: Path) -> None:
    site = tmp_path / "hydrarec.conf"
    values = {
        "NGINX_PORT": "127.0.0.1:8080",
        "NGINX_RESOLVER": "127.0.0.1",
        "HYDRAREC_UPSTREAM": nginx.upstream([8001, 8002]),
        "NGINX_MAX_BODY_BYTES": "1048576",
    }
    site.write_text(nginx.render(values))
    checked = nginx.check(nginx.main_config(tmp_path, site), tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(nginx.render(values | {"NGINX_MAX_BODY_BYTES": "lots"}))
    refused = nginx.check(nginx.main_config(tmp_path, broken), tmp_path)
    assert refused.returncode != 0  # nginx -t can fail: it reads what the template renders
    assert "client_max_body_size" in refused.stderr


def test_compose_runs_replicas_behind_nginx_rendered_from_the_same_template() -> None:
    result = run(
        binary("docker-compose"),
        "-f",
        str(DOCKER / "compose.yml"),
        "config",
        env=os.environ | {"GRAFANA_ADMIN_PASSWORD": "test", "HYDRAREC_MAX_BODY_BYTES": "4096"},
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["service"]["deploy"]["replicas"] == 2
    assert "ports" not in services["service"]  # clients reach the replicas through nginx only
    proxy = services["nginx"]
    assert set(proxy["environment"]) == set(nginx.VARIABLES)
    assert proxy["environment"]["NGINX_MAX_BODY_BYTES"] == "4096"  # the service's own limit
    assert "resolve" in proxy["environment"]["HYDRAREC_UPSTREAM"]  # replicas re-resolved
    assert any(
        v.endswith("/nginx/hydrarec.conf.template:/etc/nginx/templates/default.conf.template:ro")
        for v in proxy["volumes"]
    )
    assert proxy["depends_on"]["service"]["condition"] == "service_healthy"
    assert proxy["ports"] == [{"published": 8000, "target": 8080}]  # HYDRAREC_PORT -> nginx
    assert "server service:8000 resolve" in nginx.render(proxy["environment"])


def test_prometheus_config_and_rules_pass_promtool() -> None:
    promtool = binary("promtool")
    config = run(promtool, "check", "config", str(DOCKER / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = run(promtool, "check", "rules", str(DOCKER / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr


IMAGE_SETTINGS = {"host", "port", "model_dir"}  # fixed by the image: 0.0.0.0:8000, /models


def test_every_setting_reaches_the_service_container() -> None:
    compose = binary("docker-compose")
    shell = {"GRAFANA_ADMIN_PASSWORD": "test", "HYDRAREC_MODEL_VERSION": "3"}
    result = run(compose, "-f", str(DOCKER / "compose.yml"), "config", env=os.environ | shell)
    assert result.returncode == 0, result.stderr
    environment = yaml.safe_load(result.stdout)["services"]["service"]["environment"]
    expected = {f"{ENV_PREFIX}{n.upper()}" for n in Settings.model_fields} - {
        f"{ENV_PREFIX}{n.upper()}" for n in IMAGE_SETTINGS
    }
    assert expected <= set(environment), expected - set(environment)
    assert environment["HYDRAREC_MODEL_VERSION"] == "3"  # from the shell
    assert environment["HYDRAREC_API_KEY"] is None  # unset in the shell: unset in the container


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((DOCKER / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    cases = [
        case
        for test in yaml.safe_load((DOCKER / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts == fired, alerts ^ fired
    assert alerts == quiet, alerts ^ quiet
    result = run(binary("promtool"), "test", "rules", str(DOCKER / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_parses_and_is_provisioned() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("traffic", "errors", "latency", "stage", "candidates", "prediction", "unknown"):
        assert topic in titles, topic
    provider = (DOCKER / "grafana" / "provisioning" / "dashboards" / "hydrarec.yml").read_text()
    assert "/var/lib/grafana/dashboards" in provider
