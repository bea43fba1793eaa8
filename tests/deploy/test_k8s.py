"""deploy/k8s passes the Kubernetes schemas (kubernetes-validate) and checkov, offline, and holds
what the README promises of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
CHECKOV = Path(__file__).resolve().parents[2] / ".venv-checkov" / "bin" / "checkov"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)


def documents(name: str = "hydrarec") -> dict[str, dict]:
    """The manifests' objects called `name`, by kind."""
    every = [d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]
    return {d["kind"]: d for d in every if d["metadata"]["name"] == name}


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    assert kustomization["images"][0]["name"] == "hydrarec-service"


def test_every_manifest_passes_the_kubernetes_schemas(tmp_path: Path) -> None:
    checked = run(VALIDATE, "--strict", *MANIFESTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    objects = sum(1 for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d)
    assert checked.stdout.count("passed for resource") == objects
    broken = tmp_path / "deployment.yaml"  # the validator can fail: a field of the wrong type
    broken.write_text((K8S / "deployment.yaml").read_text().replace("replicas: 2", "replicas: two"))
    refused = run(VALIDATE, "--strict", broken)
    assert refused.returncode != 0


def test_checkov_finds_nothing_but_the_one_finding_explained(tmp_path: Path) -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: `make test` installs it (its own venv)")
    scanned = run(
        CHECKOV, "-d", K8S, "--framework", "kubernetes", "--compact", "--quiet", "--skip-download"
    )
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    assert "Failed checks: 0" in scanned.stdout
    annotations = documents()["Deployment"]["metadata"]["annotations"]
    skips = {k: v for k, v in annotations.items() if k.startswith("checkov.io/skip")}
    assert skips == {"checkov.io/skip1": skips["checkov.io/skip1"]}
    assert skips["checkov.io/skip1"].startswith("CKV_K8S_43=")  # image by tag: a reason given
    redis_skips = documents("redis")["StatefulSet"]["metadata"]["annotations"]
    assert set(redis_skips) == {"checkov.io/skip1"}
    assert redis_skips["checkov.io/skip1"].startswith("CKV_K8S_43=")
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    deployment = copy / "deployment.yaml"
    deployment.write_text(
        deployment.read_text().replace(
            "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"
        )
    )
    flagged = run(
        CHECKOV, "-d", copy, "--framework", "kubernetes", "--compact", "--quiet", "--skip-download"
    )
    assert flagged.returncode != 0  # checkov can fail: a writable root filesystem
    assert "CKV_K8S_22" in flagged.stdout


def test_the_deployment_probes_limits_and_runs_as_the_readme_says() -> None:
    found = documents()
    pod = found["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # warm-up time
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
    workers = next(e for e in container["env"] if e["name"] == "HYDRAREC_WORKERS")
    assert workers["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    strategy = found["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0  # a rollout never drops below the ready replicas
    labels = pod["metadata"]["labels"]
    for kind in ("Service", "NetworkPolicy"):
        selector = found[kind]["spec"].get("selector") or found[kind]["spec"]["podSelector"]
        assert (selector.get("matchLabels") or selector).items() <= labels.items(), kind
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2


def test_the_event_store_is_one_persistent_redis_that_only_the_service_reaches() -> None:
    redis, service = documents("redis"), documents()
    pod = redis["StatefulSet"]["spec"]["template"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"  # a 200 from /events is on disk
    claim = redis["StatefulSet"]["spec"]["volumeClaimTemplates"][0]
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in mounts
    assert args[args.index("--dir") + 1] == "/data"
    env = service["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    url = next(e["value"] for e in env if e["name"] == "HYDRAREC_STORE_URL")
    port = redis["Service"]["spec"]["ports"][0]["port"]
    assert url == f"redis://{redis['Service']['metadata']['name']}:{port}/0"
    labels = pod["metadata"]["labels"]
    assert redis["Service"]["spec"]["selector"].items() <= labels.items()
    ingress = redis["NetworkPolicy"]["spec"]["ingress"][0]["from"][0]["podSelector"]
    service_labels = service["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert ingress["matchLabels"].items() <= service_labels.items()  # only the service's pods
    egress = service["NetworkPolicy"]["spec"]["egress"]
    assert any(
        rule["to"][0].get("podSelector", {}).get("matchLabels", {}).items() <= labels.items()
        and rule["ports"][0]["port"] == port
        for rule in egress
    )
