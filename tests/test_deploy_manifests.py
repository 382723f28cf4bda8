"""The Kubernetes manifests in deploy/kubernetes: schema-valid, and wired the way the code
expects (ports, targets, probes, configuration variables, Secrets).

Validation is offline: kubernetes-validate bundles the Kubernetes JSON schemas and reads
them from its package data, checked here against :data:`KUBERNETES_VERSION` in strict
mode (unknown fields are errors). kustomization.yaml files are not Kubernetes objects;
their references are checked instead. The grpc-tls component's patches are partial
objects: they are checked by name and content, the rendered output of ``kubectl
kustomize`` (when kubectl is installed) is validated with and without the component, and
the component's probe script is run against a TLS storage server.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

from lucid_sessions.cluster.config import COMPONENTS, DEFAULT_PORTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
TLS_COMPONENT = DEPLOY / "components" / "grpc-tls"
EXAMPLE = "secrets.example.yaml"
SOURCE = ROOT / "src" / "lucid_sessions"
KUBERNETES_VERSION = "1.31.0"
"""The oldest Kubernetes the manifests are checked against (gRPC probes are GA since 1.27,
PodDisruptionBudget policy/v1 since 1.21, HPA autoscaling/v2 since 1.23)."""
NAMESPACE = "lucid-sessions"
INTERNAL = tuple(c for c in COMPONENTS if c != "api")


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc]


def _base_files() -> list[Path]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [DEPLOY / name for name in kustomization["resources"]]


def _base_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in _base_files():
        for doc in _documents(path):
            yield path, doc


OBJECTS = list(_base_objects())


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in OBJECTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def _source_text() -> str:
    return "\n".join(p.read_text() for p in SOURCE.rglob("*.py"))


def _read_by_code(variable: str, source: str) -> bool:
    """Whether the source names ``variable`` in full, or as ``LUCID_{COMPONENT}_...``
    built from a component name (``f"LUCID_{component.upper()}_PORT"``)."""
    if re.search(rf"\b{re.escape(variable)}\b", source):
        return True
    for component in COMPONENTS:
        prefix = f"LUCID_{component.upper()}_"
        if variable.startswith(prefix):
            suffix = variable[len(prefix) :]
            if re.search(rf"LUCID_\{{component\.upper\(\)\}}_{re.escape(suffix)}\b", source):
                return True
    return False


# schema validation


def test_every_file_in_the_directory_is_listed_or_an_example() -> None:
    listed = {p.name for p in _base_files()}
    present = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert present - listed == {"secrets.example.yaml"}
    assert listed <= present


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        *OBJECTS,
        *((DEPLOY / "secrets.example.yaml", d) for d in _documents(DEPLOY / EXAMPLE)),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_schema_valid(path: Path, doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")


def test_validator_rejects_a_broken_manifest() -> None:
    """The check above has teeth: an unknown field and a wrong type are caught offline."""
    deployment = _find("Deployment", "lucid-processor")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    _container(broken)["readinessProbe"]["grpcc"] = {"port": 8085}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_everything_is_in_the_namespace() -> None:
    for path, doc in OBJECTS:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name} {doc['kind']}"
    assert yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["namespace"] == NAMESPACE


# the five components


@pytest.mark.parametrize("component", COMPONENTS)
def test_deployment_runs_its_component_on_its_port(component: str) -> None:
    deployment = _find("Deployment", f"lucid-{component}")
    container = _container(deployment)
    assert container["command"] == ["lucid-sessions", "serve", "--target", component]
    ports = container["ports"]
    assert [p["containerPort"] for p in ports] == [DEFAULT_PORTS[component]]
    port_name = ports[0]["name"]

    service = _find("Service", f"lucid-{component}")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == DEFAULT_PORTS[component]
    assert service_port["targetPort"] in (port_name, DEFAULT_PORTS[component])


@pytest.mark.parametrize("component", COMPONENTS)
def test_deployment_has_probes_on_its_health_endpoint(component: str) -> None:
    container = _container(_find("Deployment", f"lucid-{component}"))
    port = DEFAULT_PORTS[component]
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind)
        assert probe is not None, f"{component} has no {kind}"
        if component == "api":
            get = probe["httpGet"]
            assert get["path"] == "/api/v1/health"
            assert names.get(get["port"], get["port"]) == port
            assert get.get("scheme", "HTTP") == "HTTP"
        else:
            assert probe["grpc"]["port"] == port, f"{component} {kind}"
            assert probe["grpc"].get("service", "") == ""  # the server's overall status
        assert probe.get("timeoutSeconds", 1) >= 3 or kind == "startupProbe"


@pytest.mark.parametrize("component", COMPONENTS)
def test_deployment_requests_and_limits_resources(component: str) -> None:
    resources = _container(_find("Deployment", f"lucid-{component}"))["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"{component} {section}"


@pytest.mark.parametrize("component", COMPONENTS)
def test_deployment_runs_unprivileged(component: str) -> None:
    deployment = _find("Deployment", f"lucid-{component}")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    context = _container(deployment)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_deployment_mounts_the_data_dir_and_the_master_key(component: str) -> None:
    """Every process opens the data directory (keys, marker) and the master key."""
    config = _find("ConfigMap", "lucid-config")["data"]
    deployment = _find("Deployment", f"lucid-{component}")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(deployment)["volumeMounts"]}

    data_dir = Path(config["LUCID_DATA_DIR"])
    (data_mount,) = (m for m in mounts if data_dir.is_relative_to(m) and m != "/tmp")
    claim = volumes[mounts[data_mount]]["persistentVolumeClaim"]["claimName"]
    assert _find("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]

    key_file = Path(config["LUCID_MASTER_KEY_FILE"])
    secret = volumes[mounts[str(key_file.parent)]]["secret"]
    assert secret["secretName"] == "lucid-master-key"
    assert secret["defaultMode"] == 0o400
    assert secret["items"] == [{"key": key_file.name, "path": key_file.name}]
    assert "/tmp" in mounts  # read-only root file system, writable /tmp


@pytest.mark.parametrize("component", COMPONENTS)
def test_deployment_gets_the_configuration_and_the_backends(component: str) -> None:
    container = _container(_find("Deployment", f"lucid-{component}"))
    assert {"configMapRef": {"name": "lucid-config"}} in container["envFrom"]
    env = {e["name"]: e for e in container["env"]}
    for variable, key in (("LUCID_MONGODB_URI", "mongodb-uri"), ("LUCID_REDIS_URL", "redis-url")):
        reference = env[variable]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "lucid-backends", "key": key}, variable
    for entry in container["env"]:
        assert "value" not in entry or not entry["name"].startswith("LUCID_"), (
            f"{component} sets {entry['name']} inline: configuration belongs in lucid-config"
        )


def test_scaling() -> None:
    assert _find("Deployment", "lucid-processor")["spec"]["replicas"] >= 2
    assert _find("Deployment", "lucid-api")["spec"]["replicas"] >= 2
    for single in ("storage", "pipeline", "recorder"):  # state in the process or SQLite
        deployment = _find("Deployment", f"lucid-{single}")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"

    hpa = _find("HorizontalPodAutoscaler", "lucid-processor")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "lucid-processor",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"

    pdb = _find("PodDisruptionBudget", "lucid-processor")
    processor = _find("Deployment", "lucid-processor")
    assert pdb["spec"]["selector"]["matchLabels"] == processor["spec"]["selector"]["matchLabels"]


# configuration


def test_configmap_addresses_and_ports_match_the_services() -> None:
    config = _find("ConfigMap", "lucid-config")["data"]
    assert all(isinstance(v, str) for v in config.values())  # a ConfigMap holds strings
    for component in COMPONENTS:
        assert config[f"LUCID_{component.upper()}_PORT"] == str(DEFAULT_PORTS[component])
    for component in INTERNAL:
        assert config[f"LUCID_{component.upper()}_ADDRESS"] == (
            f"lucid-{component}:{DEFAULT_PORTS[component]}"
        )
    assert config["LUCID_API_HOST"] == "0.0.0.0"
    assert config["LUCID_GRPC_HOST"] == "0.0.0.0"
    assert "LUCID_TARGETS" not in config  # each Deployment passes --target


def test_configmap_loads_with_the_real_configuration_code(tmp_path: Path) -> None:
    """The ConfigMap's values pass the code's own validation (ranges, host:port...)."""
    from lucid_sessions.cluster.config import load_config

    env = dict(_find("ConfigMap", "lucid-config")["data"])
    env["LUCID_DATA_DIR"] = str(tmp_path)
    secrets = {d["metadata"]["name"]: d for d in _documents(DEPLOY / "secrets.example.yaml")}
    backends = secrets["lucid-backends"]["stringData"]
    env["LUCID_MONGODB_URI"] = backends["mongodb-uri"]
    env["LUCID_REDIS_URL"] = backends["redis-url"]
    for component in COMPONENTS:
        config = load_config(env=env, targets=component)
        assert config.local == {component}
        assert config.ports == DEFAULT_PORTS
        for other in INTERNAL:
            assert config.address(other) == f"lucid-{other}:{DEFAULT_PORTS[other]}"
    assert config.security.redis_prefix == "lucid:"
    assert config.security.redis_url == backends["redis-url"]
    assert config.mongodb_uri == backends["mongodb-uri"]
    assert config.mongodb_database == "lucid_sessions"


def _manifest_variables() -> dict[str, str]:
    """Every LUCID_* variable the manifests give a process, and where it is set."""
    found: dict[str, str] = {}
    for name in _find("ConfigMap", "lucid-config")["data"]:
        found[name] = "ConfigMap lucid-config"
    for name in _documents(TLS_COMPONENT / "config.yaml")[0]["data"]:
        found[name] = "components/grpc-tls/config.yaml"
    for component in COMPONENTS:
        for entry in _container(_find("Deployment", f"lucid-{component}"))["env"]:
            if entry["name"].startswith("LUCID_"):
                found[entry["name"]] = f"Deployment lucid-{component}"
    return found


def test_every_variable_is_one_the_code_reads() -> None:
    """The manifests cannot drift from the code: each LUCID_* name they set is read by
    src/lucid_sessions (searched at test time)."""
    source = _source_text()
    unknown = {
        name: where
        for name, where in _manifest_variables().items()
        if not _read_by_code(name, source)
    }
    assert not unknown, f"set by the manifests but read nowhere in the code: {unknown}"


def test_the_drift_check_would_catch_a_typo() -> None:
    source = _source_text()
    assert _read_by_code("LUCID_STORAGE_ADDRESS", source)
    assert _read_by_code("LUCID_PROCESSOR_THREADS", source)
    assert not _read_by_code("LUCID_STORAGE_ADRESS", source)
    assert not _read_by_code("LUCID_REDIS_URI", source)


# MongoDB, Redis, Secrets


def test_mongodb_and_redis() -> None:
    mongo = _find("StatefulSet", "lucid-mongodb")
    (container,) = mongo["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("mongo:7")
    assert container["ports"][0]["containerPort"] == 27017
    assert mongo["spec"]["volumeClaimTemplates"]
    service = _find("Service", mongo["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"

    redis = _find("StatefulSet", "lucid-redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("redis:")
    assert container["ports"][0]["containerPort"] == 6379
    assert _find("Service", "lucid-redis")["spec"]["ports"][0]["port"] == 6379
    for backend in (mongo, redis):
        (container,) = backend["spec"]["template"]["spec"]["containers"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "readinessProbe" in container and "livenessProbe" in container


def test_example_backend_urls_point_at_the_services() -> None:
    secrets = {d["metadata"]["name"]: d for d in _documents(DEPLOY / "secrets.example.yaml")}
    backends = secrets["lucid-backends"]["stringData"]
    assert backends["mongodb-uri"].startswith("mongodb://")
    assert "@lucid-mongodb-0.lucid-mongodb:27017/" in backends["mongodb-uri"]
    assert re.fullmatch(r"redis://:[^@]+@lucid-redis:6379/0", backends["redis-url"])


def test_secrets_are_referenced_never_included() -> None:
    assert not [d for _, d in OBJECTS if d["kind"] == "Secret"]
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for key in ("secretGenerator", "configMapGenerator"):
        assert key not in kustomization
    assert "secrets.example.yaml" not in kustomization["resources"]
    # Every Secret the manifests use is described in the example, and every value there
    # is a marked placeholder (or a user name).
    examples = {d["metadata"]["name"]: d for d in _documents(DEPLOY / "secrets.example.yaml")}
    used = _secret_references([d for _, d in OBJECTS])
    used |= _secret_references(yaml.safe_load((TLS_COMPONENT / "kustomization.yaml").read_text()))
    assert {"lucid-master-key", "lucid-backends", "lucid-grpc-tls"} <= used
    assert used <= set(examples), used - set(examples)
    for name, secret in examples.items():
        assert secret["kind"] == "Secret"
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value or key.endswith("username"), f"{name} {key}"


def _secret_references(node: Any) -> set[str]:
    """Names of the Secrets a manifest tree refers to (env, envFrom, volumes)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretKeyRef", "secretRef") and isinstance(value, dict):
                found.add(value["name"])
            elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                found.add(value["secretName"])
            else:
                found |= _secret_references(value)
    elif isinstance(node, list):
        for item in node:
            found |= _secret_references(item)
    elif isinstance(node, str) and node.lstrip().startswith("- op:"):
        found |= _secret_references(yaml.safe_load(node))  # an inline JSON patch
    return found


def test_network_policy_admits_only_the_api_from_outside() -> None:
    policies = [d for _, d in OBJECTS if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and "ingress" not in deny[0]["spec"]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:  # open to any source: only the API port
                assert policy["spec"]["podSelector"]["matchLabels"] == {
                    "app.kubernetes.io/name": "lucid-api"
                }
                assert [p["port"] for p in rule["ports"]] == [DEFAULT_PORTS["api"]]


# the grpc-tls component


def test_grpc_tls_component() -> None:
    kustomization = yaml.safe_load((TLS_COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    for patch in kustomization["patches"]:
        if "path" in patch:
            assert (TLS_COMPONENT / patch["path"]).exists()
    (generator,) = kustomization["configMapGenerator"]
    script = generator["files"][0]
    assert (TLS_COMPONENT / script).exists()
    assert f"/etc/lucid-sessions/probe/{script}" in (TLS_COMPONENT / "probes.yaml").read_text()

    config = _documents(TLS_COMPONENT / "config.yaml")[0]["data"]
    secret_mount = "/etc/lucid-sessions/grpc-tls/"
    assert config["LUCID_GRPC_TLS_CERT"] == secret_mount + "tls.crt"
    assert config["LUCID_GRPC_TLS_KEY"] == secret_mount + "tls.key"
    assert config["LUCID_GRPC_TLS_CA"] == secret_mount + "ca.crt"

    patched = {d["metadata"]["name"]: d for d in _documents(TLS_COMPONENT / "probes.yaml")}
    assert set(patched) == {f"lucid-{c}" for c in INTERNAL}
    for component in INTERNAL:
        container = _container(patched[f"lucid-{component}"])
        assert container["name"] == _container(_find("Deployment", f"lucid-{component}"))["name"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            assert probe["grpc"] is None  # removes the plaintext probe
            command = probe["exec"]["command"]
            assert command[-2:] == [f"lucid-{component}", str(DEFAULT_PORTS[component])]


@pytest.mark.slow
def test_grpc_tls_probe_script(tmp_path: Path) -> None:
    """The component's probe script answers 0 for a TLS storage server and 1 when the
    server's name does not match (the kubelet's gRPC probe cannot speak TLS)."""
    import os
    import socket
    import time

    from tests.tls_fixtures import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "LUCID_DATA_DIR": str(tmp_path / "data"),
        "LUCID_STORAGE_PORT": str(port),
        "LUCID_GRPC_TLS_CERT": str(tls.server_cert),
        "LUCID_GRPC_TLS_KEY": str(tls.server_key),
        "LUCID_GRPC_TLS_CA": str(tls.ca),
        "LUCID_GRPC_REQUIRE_CLIENT_CERT": "true",
    }
    script = str(TLS_COMPONENT / "health_probe.py")
    server = subprocess.Popen(
        [sys.executable, "-m", "lucid_sessions", "serve", "--target", "storage"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def probe(name: str, **extra: str) -> int:
            run = subprocess.run(
                [sys.executable, script, name, str(port)],
                env={**env, **extra},
                capture_output=True,
                timeout=30,
            )
            return run.returncode

        deadline = time.monotonic() + 30
        while probe("storage", LUCID_GRPC_TLS_SERVER_NAME="localhost") != 0:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the storage server never answered SERVING"
            time.sleep(0.3)
        assert probe("lucid-storage") == 1  # the test certificate names localhost only
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("with_tls", [False, True], ids=["base", "grpc-tls"])
def test_kustomize_build_is_valid(tmp_path: Path, with_tls: bool) -> None:
    """The rendered output (kustomize in kubectl, when installed) validates too,
    including the grpc-tls component's patched probes and volumes."""
    import shutil

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (kustomize is built into it)")
    copy = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    if with_tls:
        kustomization = copy / "kustomization.yaml"
        kustomization.write_text(kustomization.read_text() + "components: [components/grpc-tls]\n")
    run = subprocess.run(
        [kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    rendered = [d for d in yaml.safe_load_all(run.stdout) if d]
    assert not [d for d in rendered if d["kind"] == "Secret"]
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    for component in INTERNAL:
        probe = _container(deployments[f"lucid-{component}"])["readinessProbe"]
        assert ("exec" in probe) == with_tls and ("grpc" in probe) != with_tls
