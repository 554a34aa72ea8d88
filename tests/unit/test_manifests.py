"""Offline checks of deploy/: the Kubernetes manifests against the API schemas and our security
rules, the Compose file and the Dockerfile. No cluster, no kubectl, no Docker, no network."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
SECRET_EXAMPLE = OVERLAY / "secret.example.yaml"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
# The oldest Kubernetes minor release the manifests must be valid for.
KUBERNETES_VERSION = "1.31"
SECRET_NAMES = {
    "OPENAI_API_KEY",
    "POSTGRESQL_PASSWORD",
    "REDIS_PASSWORD",
    "ADMIN_PASS",
    "SETTINGS_ENCRYPTION_KEY",
}
KEYMGMT, PROXY = "gateway-keymgmt", "gateway-proxy"

Doc = dict[str, Any]


# A tiny `kubectl kustomize`: just the features these kustomizations use, and it refuses others.


def load_documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomize(directory: Path) -> list[Doc]:
    spec = load_documents(directory / "kustomization.yaml")[0]
    unsupported = set(spec) - {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
    assert not unsupported, f"teach kustomize() {unsupported} before using it"
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        docs += kustomize(path) if path.is_dir() else load_documents(path)
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, "only strategic-merge patches named by their file"
        _apply_patch(docs, load_documents(directory / patch["path"])[0])
    for image in spec.get("images", []):
        _set_image(docs, image)
    for doc in docs:
        if "namespace" in spec:
            doc["metadata"]["namespace"] = spec["namespace"]
    return docs


def _merge(target: Doc, patch: Doc) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            assert not isinstance(value, list), "kustomize merges lists by key: not modelled"
            target[key] = copy.deepcopy(value)


def _apply_patch(docs: list[Doc], patch: Doc) -> None:
    (target,) = (doc for doc in docs if _identity(doc) == _identity(patch))
    _merge(target, patch)


def _set_image(docs: list[Doc], image: dict[str, str]) -> None:
    assert set(image) <= {"name", "newName", "newTag"}
    name = image["name"]
    for container in (c for doc in docs for c in _containers(doc)):
        if re.fullmatch(rf"{re.escape(name)}([:@].*)?", container["image"]):
            container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def _identity(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _pod(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]


def _containers(doc: Doc) -> list[Doc]:
    if doc["kind"] != "Deployment":
        return []
    return [*_pod(doc).get("initContainers", []), *_pod(doc)["containers"]]


@cache
def _rendered() -> tuple[Doc, ...]:
    return tuple(kustomize(OVERLAY))


@pytest.fixture
def rendered() -> list[Doc]:
    return copy.deepcopy(list(_rendered()))


@pytest.fixture
def objects(rendered: list[Doc]) -> dict[tuple[str, str], Doc]:
    return {_identity(doc): doc for doc in rendered}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _pod_labels(objects: dict[tuple[str, str], Doc], name: str) -> dict[str, str]:
    return objects["Deployment", name]["spec"]["template"]["metadata"]["labels"]


class RecordingEnv(dict[str, str]):
    """An environment that remembers which variables Settings.from_env read."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def _settings_read(values: dict[str, str]) -> set[str]:
    env = RecordingEnv(values)
    Settings.from_env(env)  # raises on a malformed value
    return env.read


# Kubernetes


def test_every_manifest_matches_the_kubernetes_schema(rendered: list[Doc]) -> None:
    documents = [*rendered, *kustomize(BASE), *load_documents(SECRET_EXAMPLE)]
    errors = []
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            errors.append(f"{'/'.join(_identity(doc))}: {path}: {error.message}")
    assert not errors
    assert {kind for kind, _ in map(_identity, rendered)} == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
    }


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
def test_tiny_kustomize_renders_like_kubectl(rendered: list[Doc]) -> None:
    output = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    expected = sorted(yaml.safe_load_all(output), key=_identity)
    assert sorted(rendered, key=_identity) == expected


def test_base_is_namespace_agnostic_and_the_overlay_sets_one(rendered: list[Doc]) -> None:
    assert all("namespace" not in doc["metadata"] for doc in kustomize(BASE))
    assert {doc["metadata"]["namespace"] for doc in rendered} == {"ai-gateway"}
    images = {c["image"] for doc in rendered for c in _containers(doc)}
    assert images == {
        "registry.example.com/ai-gateway/keymgmt:0.1.0",
        "registry.example.com/ai-gateway/proxy:0.1.0",
    }


def _deployments(rendered: list[Doc]) -> Iterator[Doc]:
    return (doc for doc in rendered if doc["kind"] == "Deployment")


def test_pods_are_locked_down(rendered: list[Doc]) -> None:
    for deployment in _deployments(rendered):
        pod = _pod(deployment)
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            # A writable /tmp despite the read-only root filesystem.
            tmp = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and set(tmp) <= empty_dirs
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}
            assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_probes_survive_a_postgres_outage(objects: dict[tuple[str, str], Doc]) -> None:
    (keymgmt,) = _pod(objects["Deployment", KEYMGMT])["containers"]
    assert keymgmt["readinessProbe"]["httpGet"]["path"] == "/api/health"
    # keymgmt's health answers 503 without Postgres: as liveness it would restart-loop.
    assert "tcpSocket" in keymgmt["livenessProbe"]
    (proxy,) = _pod(objects["Deployment", PROXY])["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert proxy[probe]["httpGet"]["path"] == "/api/health"


def test_replicas_scaling_and_graceful_shutdown(objects: dict[tuple[str, str], Doc]) -> None:
    assert objects["Deployment", KEYMGMT]["spec"]["replicas"] == 1
    proxy = objects["Deployment", PROXY]
    assert proxy["spec"]["replicas"] == 3
    assert _pod(proxy)["terminationGracePeriodSeconds"] == 660
    hpa = objects["HorizontalPodAutoscaler", PROXY]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": PROXY}
    assert hpa["minReplicas"] == 3 < hpa["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    pdb = objects["PodDisruptionBudget", PROXY]["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 1
    assert _selects(pdb["selector"]["matchLabels"], _pod_labels(objects, PROXY))


def test_services_select_their_pods(objects: dict[tuple[str, str], Doc]) -> None:
    for name in (KEYMGMT, PROXY):
        service = objects["Service", name]["spec"]
        assert service["type"] == "ClusterIP"
        assert _selects(service["selector"], _pod_labels(objects, name))
        other = PROXY if name == KEYMGMT else KEYMGMT
        assert not _selects(service["selector"], _pod_labels(objects, other))
        (container,) = _pod(objects["Deployment", name])["containers"]
        port_names = {port["name"] for port in container["ports"]}
        assert {port["targetPort"] for port in service["ports"]} <= port_names


def test_network_policy_admits_only_proxy_and_admins_to_keymgmt(
    objects: dict[tuple[str, str], Doc],
) -> None:
    (policy,) = (doc["spec"] for (kind, _), doc in objects.items() if kind == "NetworkPolicy")
    selector = policy["podSelector"]["matchLabels"]
    assert _selects(selector, _pod_labels(objects, KEYMGMT))
    assert not _selects(selector, _pod_labels(objects, PROXY))
    assert policy["policyTypes"] == ["Ingress"]
    peers = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert all(rule["from"] for rule in policy["ingress"]), "an empty `from` admits everyone"
    pod_peers = [peer["podSelector"]["matchLabels"] for peer in peers if "podSelector" in peer]
    assert any(_selects(labels, _pod_labels(objects, PROXY)) for labels in pod_peers)
    assert {"gateway.example/admin": "true"} in pod_peers


def test_settings_come_from_the_configmap_and_secrets(
    objects: dict[tuple[str, str], Doc],
) -> None:
    config = objects["ConfigMap", "gateway-config"]["data"]
    assert not set(config) & SECRET_NAMES
    (secret,) = load_documents(SECRET_EXAMPLE)
    assert set(secret["stringData"]) == SECRET_NAMES
    # Every name is one the services read, and every value parses.
    assert set(config) | SECRET_NAMES <= _settings_read({**config, **secret["stringData"]})
    for deployment in (objects["Deployment", KEYMGMT], objects["Deployment", PROXY]):
        (container,) = _pod(deployment)["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "gateway-config"}}]
        for variable in container["env"]:
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] == variable["name"] in secret["stringData"]
    proxy_env = {v["name"] for v in _pod(objects["Deployment", PROXY])["containers"][0]["env"]}
    assert "OPENAI_API_KEY" in proxy_env


def test_both_services_take_the_encryption_key_from_the_secret(
    objects: dict[tuple[str, str], Doc],
) -> None:
    """keymgmt seals provider secrets and the proxy opens them: one key, from the one Secret."""
    for name in (KEYMGMT, PROXY):
        (container,) = _pod(objects["Deployment", name])["containers"]
        (variable,) = (v for v in container["env"] if v["name"] == "SETTINGS_ENCRYPTION_KEY")
        assert variable["valueFrom"]["secretKeyRef"]["name"] == "gateway-secrets"
    config = objects["ConfigMap", "gateway-config"]["data"]
    assert "SETTINGS_ENCRYPTION_KEY" not in config


def test_the_change_feed_is_told_where_to_listen(objects: dict[tuple[str, str], Doc]) -> None:
    """Behind a transaction-pooling PgBouncer LISTEN receives nothing: base and overlay both say
    where the proxy listens, so that whoever points POSTGRESQL_HOSTS at a pooler sees it."""
    (base_config,) = (doc for doc in kustomize(BASE) if doc["kind"] == "ConfigMap")
    config = objects["ConfigMap", "gateway-config"]["data"]
    for data in (base_config["data"], config):
        listening = Settings.from_env(data).postgres.for_listening()
        assert listening.hosts == (data["POSTGRESQL_LISTEN_HOSTS"],)


def test_example_secret_is_a_marked_placeholder_kept_out_of_the_overlay() -> None:
    (secret,) = load_documents(SECRET_EXAMPLE)
    assert all(value.startswith("REPLACE-ME") for value in secret["stringData"].values())
    assert "PLACEHOLDER" in SECRET_EXAMPLE.read_text()
    overlay = load_documents(OVERLAY / "kustomization.yaml")[0]
    assert SECRET_EXAMPLE.name not in overlay["resources"]


# Compose and Docker


def _healthcheck_code(argv: list[str]) -> str:
    assert argv[-3:-1] == ["python", "-c"]
    return argv[-1]


def _interpolate(value: object) -> str:
    """What Compose makes of ${NAME:-default} with NAME unset in the host environment."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def test_compose_file() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "keymgmt", "proxy"}
    assert all(service["healthcheck"]["test"] for service in services.values())
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    for name in ("keymgmt", "proxy"):
        service = services[name]
        build = service["build"]
        assert build["target"] == name
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        compile(_healthcheck_code(service["healthcheck"]["test"]), name, "exec")
        for dependency in ("postgres", "redis"):
            assert service["depends_on"][dependency] == {"condition": "service_healthy"}
        environment = {key: _interpolate(value) for key, value in service["environment"].items()}
        assert set(environment) <= _settings_read(environment)
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert services["proxy"]["environment"]["OPENAI_API_KEY"].startswith("${OPENAI_API_KEY")
    for name in ("keymgmt", "proxy"):
        key = services[name]["environment"]["SETTINGS_ENCRYPTION_KEY"]
        assert key.startswith("${SETTINGS_ENCRYPTION_KEY")


def _stages(dockerfile: str) -> dict[str, str]:
    parts = re.split(r"^FROM .* AS (\w+)$", dockerfile, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_dockerfile_targets() -> None:
    stages = _stages(DOCKERFILE.read_text())
    assert set(stages) == {"builder", "runtime", "keymgmt", "proxy"}
    assert re.search(r"^RUN pip install \.$", stages["builder"], flags=re.MULTILINE)
    assert "seed_encodings()" in stages["builder"]
    assert "TIKTOKEN_CACHE_DIR=/opt/tiktoken" in stages["runtime"]
    assert "USER 10001:10001" in stages["runtime"]
    for target, port in (("keymgmt", 8001), ("proxy", 8002)):
        stage = stages[target]
        assert f"EXPOSE {port}" in stage
        assert f'CMD ["python", "-m", "{target}"]' in stage
        healthcheck = re.search(r"HEALTHCHECK .*?CMD (\[.*?\])$", stage, flags=re.M | re.S)
        assert healthcheck
        code = _healthcheck_code(json.loads(healthcheck.group(1)))
        assert "/api/health" in code
        compile(code, target, "exec")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".local", "**/__pycache__"} <= set(ignored)
