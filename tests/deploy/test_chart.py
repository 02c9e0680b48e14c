"""The Helm chart, checked with a real helm and the Kubernetes API schemas (tools/chart_test.sh).

The script installs a pinned helm (from the Go module proxy) and kubernetes-validate, lints the
chart, renders it for every values file in charts/memos/ci and validates each manifest against
the Kubernetes schemas, and checks that invalid values are refused. These tests run it once and
then read what it rendered: structure the schemas cannot express (hardening, probes, which
objects exist for which values, env names equal to the settings the services read).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "memos"
HELM = REPO / ".tools" / "bin" / "helm"
GO = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
VALUES = ["values", *sorted(p.stem for p in (CHART / "ci").glob("*.yaml"))]
KUBE_VERSIONS = ["1.29.0", "1.37.0"]
SERVICES = ["gateway", "ingest", "textmem", "actmem", "scheduler"]

# The script installs helm with `go install`; without go (and no helm built before) it cannot run.
pytestmark = [
    pytest.mark.skipif(GO is None and not HELM.exists(), reason="go is not installed: helm cannot be built"),
    # The first run builds helm from source (minutes on a busy machine); later runs take seconds.
    pytest.mark.timeout(1800),
]


@pytest.fixture(scope="module")
def chart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("chart")
    env = {**os.environ, "CHART_TEST_OUT": str(out)}
    if GO:
        env["GO"] = GO
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "chart_test.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    return proc, out


@pytest.fixture(scope="module")
def rendered(chart_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, list[dict[str, Any]]]:
    proc, out = chart_run
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    docs = {}
    for name in VALUES:
        docs[name] = [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d]
    return docs


def _objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _component(obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def _deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_component(d): d for d in _objects(docs, "Deployment")}


def _helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), "template", "memos", str(CHART), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_chart_test_script_passes(chart_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = chart_run
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "chart-test: passed" in proc.stdout


def test_lint_strict_passes_for_every_values_file(chart_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = chart_run
    assert proc.stdout.count("1 chart(s) linted, 0 chart(s) failed") == len(VALUES), proc.stdout


@pytest.mark.parametrize("values", VALUES)
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_values_file_renders_and_validates(
    chart_run: tuple[subprocess.CompletedProcess[str], Path], values: str, kube: str
) -> None:
    proc, _ = chart_run
    assert re.search(rf"^ok  {re.escape(values)}: \d+ objects valid for Kubernetes {kube}$", proc.stdout, re.M), (
        proc.stdout[-4000:]
    )


# helm flags, then texts the error must contain: the field's path and what is wrong with it.
BAD_VALUES = {
    "replicas-not-integer": (["--set-string", "gateway.replicas=two"], ["/gateway/replicas", "want integer"]),
    "unknown-key": (["--set", "gateway.replicaz=2"], ["/gateway", "'replicaz' not allowed"]),
    "unknown-top-level-key": (["--set", "gatway.enabled=true"], ["'gatway' not allowed"]),
    "bad-pull-policy": (["--set", "gateway.image.pullPolicy=Sometimes"], ["/gateway/image/pullPolicy", "one of"]),
    "bad-backend": (["--set", "actmem.backend=onnx"], ["/actmem/backend", "one of"]),
    "unknown-vllm-key": (["--set", "actmem.vllm.modle=x"], ["/actmem/vllm", "'modle' not allowed"]),
    "bad-engine-uri": (["--set", "engines.neo4j.uri=http://neo4j:7474"], ["/engines/neo4j/uri"]),
    "bad-env-name": (["--set", "gateway.env.BAD-NAME=1"], ["/gateway/env"]),
    "metrics-port-too-low": (["--set", "metrics.port=80"], ["/metrics/port"]),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_invalid_values_fail_on_the_schema_naming_the_field(rendered: dict[str, Any], case: str) -> None:
    flags, wanted = BAD_VALUES[case]
    proc = _helm_template(*flags)
    assert proc.returncode != 0, f"helm accepted {flags}"
    assert "don't meet the specifications of the schema" in proc.stderr, proc.stderr
    for text in wanted:
        assert text in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        (["--set", "textmem.replicas=2"], "textmem.replicas > 1 needs engines.milvus.enabled"),
        (["--set", "scheduler.replicas=2"], "scheduler.replicas > 1 needs engines.redis.enabled"),
        (["--set", "actmem.enabled=true"], "actmem.enabled needs actmem.model.path"),
        (["--set", "textmem.enabled=false"], "gateway.enabled needs textmem.enabled"),
        (["--set", "memory.windowOverlap=4"], "memory.windowOverlap must be smaller"),
        (["--set", "metrics.port=50051"], "metrics.port 50051 is gateway.port too"),
        (["--set", "tls.enabled=true"], "tls.enabled needs tls.secretName"),
        (["--set", "gateway.jwt.jwksUrl=https://idp.example.com/certs"], "gateway.jwt needs issuer and audience"),
        (
            ["--set", "tls.enabled=true,tls.secretName=t,tls.healthPort=50052"],
            "tls.healthPort 50052 is textmem.port too",
        ),
        (["--set", "tls.enabled=true,tls.secretName=t,tls.healthPort=9464"], "tls.healthPort 9464 is metrics.port too"),
    ],
)
def test_impossible_combinations_fail_with_a_reason(rendered: dict[str, Any], flags: list[str], wanted: str) -> None:
    # Rules across blocks that the schema cannot express are the chart's own `fail` checks.
    proc = _helm_template(*flags)
    assert proc.returncode != 0 and wanted in proc.stderr, proc.stderr


def test_gateway_textmem_only_renders_nothing_else(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gateway-textmem-only"]
    components = {_component(d) for d in docs} - {None}
    assert components == {"gateway", "textmem"}, components
    for d in docs:
        for other in ("actmem", "ingest", "scheduler"):
            assert other not in d["metadata"]["name"], d["metadata"]["name"]
    gateway_env = {e["name"] for e in _deployments(docs)["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MEMOS_TEXTMEM_ADDR" in gateway_env
    assert not gateway_env & {"MEMOS_INGEST_ADDR", "MEMOS_SCHEDULER_ADDR"}
    assert _objects(docs, "PersistentVolumeClaim"), "textmem.persistence.enabled renders a claim"


@pytest.mark.parametrize("values", VALUES)
def test_every_deployment_is_non_root_read_only_with_grpc_probes(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    deployments = _objects(rendered[values], "Deployment")
    assert deployments
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        name = dep["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"], name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["runAsNonRoot"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", (name, c["name"])
            assert {"mountPath": "/tmp", "name": "tmp"} in c["volumeMounts"], (name, c["name"])
        main = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert main["ports"][0]["name"] == "grpc", name
        # A TLS listener has a plaintext health-only port beside it: the kubelet's gRPC probes
        # speak neither TLS nor client certificates.
        port = ports.get("health", ports["grpc"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert main[probe]["grpc"] == {"port": port}, (name, probe)


@pytest.mark.parametrize("values", VALUES)
def test_only_the_gateway_is_reachable_from_outside_the_release(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    docs = rendered[values]
    policies = {_component(p): p for p in _objects(docs, "NetworkPolicy")}
    assert set(policies) == set(_deployments(docs)), "one NetworkPolicy per service"
    release_peer = {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "memos", "app.kubernetes.io/instance": "memos"}}
    }
    for component, policy in policies.items():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        given = yaml.safe_load((CHART / "ci" / f"{values}.yaml").read_text()) if values != "values" else {}
        scrapers = ((given or {}).get("metrics") or {}).get("from", [])
        rule, *rest = spec["ingress"]
        # A second rule only when scrapers are named, and it opens the metrics port alone.
        if scrapers:
            assert rest == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": scrapers}], (component, rest)
        else:
            assert rest == [], (component, rest)
        assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
        if component == "gateway":
            continue
        # Release pods first; anything after comes from that service's allowFrom.
        assert rule["from"][0] == release_peer, (component, rule)
        extra = ((given or {}).get(component) or {}).get("allowFrom", [])
        assert rule["from"][1:] == extra, (component, rule)


@pytest.mark.parametrize("values", VALUES)
def test_every_service_serves_metrics_unless_turned_off(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    docs = rendered[values]
    given = yaml.safe_load((CHART / "ci" / f"{values}.yaml").read_text()) if values != "values" else {}
    enabled = ((given or {}).get("metrics") or {}).get("enabled", True)
    services = {_component(s): s for s in _objects(docs, "Service")}
    for component, dep in _deployments(docs).items():
        pod = dep["spec"]["template"]
        main = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in main["env"]}
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        service_ports = {p["name"]: p for p in services[component]["spec"]["ports"]}
        annotations = pod["metadata"].get("annotations") or {}
        if enabled:
            assert env["MEMOS_METRICS_ADDR"] == "0.0.0.0:9464", component
            assert ports["metrics"] == 9464, component
            assert service_ports["metrics"]["targetPort"] == "metrics", component
            assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9464"
        else:
            assert "MEMOS_METRICS_ADDR" not in env and "metrics" not in ports and "metrics" not in service_ports
            assert "prometheus.io/scrape" not in annotations


def test_pdbs_and_hpas_exist_only_for_stateless_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def kinds(values: str, kind: str) -> set[str | None]:
        return {_component(o) for o in _objects(rendered[values], kind)}

    # Embedded stores: textmem and the scheduler keep files in their pod.
    assert kinds("minimal", "PodDisruptionBudget") == {"gateway", "ingest"}
    assert kinds("minimal", "HorizontalPodAutoscaler") == {"gateway", "ingest"}
    # Milvus + Neo4j + Redis external: textmem and the scheduler become interchangeable replicas.
    assert kinds("external-engines", "PodDisruptionBudget") == {"gateway", "ingest", "textmem", "scheduler"}
    assert kinds("external-engines", "HorizontalPodAutoscaler") == {"gateway", "ingest", "textmem", "scheduler"}
    # actmem holds caches in its pod: never autoscaled.
    assert "actmem" not in kinds("gpu", "HorizontalPodAutoscaler") | kinds("gpu", "PodDisruptionBudget")
    for values in VALUES:
        hpa_targets = {
            o["spec"]["scaleTargetRef"]["name"] for o in _objects(rendered[values], "HorizontalPodAutoscaler")
        }
        for dep in _objects(rendered[values], "Deployment"):
            # helm upgrades must not fight the HPA over the replica count.
            assert ("replicas" in dep["spec"]) != (dep["metadata"]["name"] in hpa_targets), dep["metadata"]["name"]


def test_actmem_pod_has_gpus_and_a_vllm_container_on_localhost(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = _deployments(rendered["gpu"])["actmem"]["spec"]["template"]["spec"]
    actmem, vllm = pod["containers"]
    assert (actmem["name"], vllm["name"]) == ("actmem", "vllm")
    assert actmem["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in actmem["env"]}
    assert env["MEMOS_VLLM_URL"] == "http://127.0.0.1:8000/v1"
    assert env["MEMOS_DEVICE"] == "cuda"
    assert env["MEMOS_MODEL_PATH"] == "/models/qwen3-0.6b"
    args = vllm["args"]
    assert args[args.index("--host") + 1] == "127.0.0.1", "vLLM must not listen beyond the pod"
    assert "--enable-prefix-caching" in args
    assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]
    # Without the sidecar the actmem pod is a single container.
    assert "actmem" not in _deployments(rendered["minimal"])
    # The gateway knows actmem when there is one (erasure deletes KV caches), and only then.
    gateway_env = {
        e["name"]: e.get("value")
        for e in _deployments(rendered["gpu"])["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert gateway_env["MEMOS_ACTMEM_ADDR"].endswith(":50055") or "actmem" in gateway_env["MEMOS_ACTMEM_ADDR"]
    minimal_env = {
        e["name"]
        for e in _deployments(rendered["minimal"])["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "MEMOS_ACTMEM_ADDR" not in minimal_env


def _settings_classes() -> dict[str, type]:
    from services.actmem.settings import ActMemSettings
    from services.gateway.settings import GatewaySettings
    from services.ingest.settings import IngestSettings
    from services.scheduler.settings import SchedulerSettings
    from services.textmem.settings import TextMemSettings

    return {
        "gateway": GatewaySettings,
        "ingest": IngestSettings,
        "textmem": TextMemSettings,
        "actmem": ActMemSettings,
        "scheduler": SchedulerSettings,
    }


@pytest.mark.parametrize("values", VALUES)
def test_env_names_are_the_settings_each_service_reads(
    rendered: dict[str, list[dict[str, Any]]], values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes = _settings_classes()
    for component, dep in _deployments(rendered[values]).items():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), f"{component}: duplicate env {names}"
        fields = {f"MEMOS_{f.upper()}" for f in classes[component].model_fields}
        unknown = {n for n in names if n.startswith("MEMOS_")} - fields
        assert not unknown, f"{component} sets {sorted(unknown)}, which {classes[component].__name__} does not read"
        # And the values parse: the service would start with this environment.
        for key in list(os.environ):
            if key.startswith("MEMOS_"):
                monkeypatch.delenv(key)
        for e in container["env"]:
            if e["name"].startswith("MEMOS_"):
                monkeypatch.setenv(e["name"], e.get("value", "from-a-secret"))
        classes[component]()


def test_service_ports_match_the_settings_defaults(rendered: dict[str, list[dict[str, Any]]]) -> None:
    # A service started without the chart (make run, the images' defaults) listens where the chart expects it.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component, cls in _settings_classes().items():
        default_port = int(cls.model_fields["listen_addr"].default.rsplit(":", 1)[1])
        assert values[component]["port"] == default_port, component
        dockerfile = (REPO / "docker" / f"{component}.Dockerfile").read_text()
        assert f"EXPOSE {default_port}" in dockerfile, component
        uid = re.search(r"^USER (\d+)", dockerfile, re.M)
        assert uid and int(uid.group(1)) == values["podSecurityContext"]["runAsUser"], component


def test_engine_credentials_come_from_secrets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["external-engines"]
    [secret] = _objects(docs, "Secret")
    # Given as values: in the chart's Secret. Given as existingSecret: not copied into it.
    assert set(secret["data"]) == {"milvus-token", "llm-api-key", "embedding-api-key"}
    refs = {}
    for dep in _objects(docs, "Deployment"):
        for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
            if "secretKeyRef" in e.get("valueFrom", {}):
                refs[e["name"]] = (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            else:
                assert not re.search(r"sk-|Milvus", str(e.get("value", ""))), f"a credential in plain env: {e}"
    assert refs == {
        "MEMOS_MILVUS_TOKEN": ("memos-engines", "milvus-token"),
        "MEMOS_NEO4J_PASSWORD": ("neo4j-auth", "password"),
        "MEMOS_REDIS_URL": ("redis-url", "url"),
        "MEMOS_LLM_API_KEY": ("memos-engines", "llm-api-key"),
        "MEMOS_CHAT_LLM_API_KEY": ("memos-engines", "llm-api-key"),
        "MEMOS_EMBEDDING_API_KEY": ("memos-engines", "embedding-api-key"),
        "MEMOS_SERVICE_TOKEN": ("memos-service-token", "token"),
    }
    # Embedded defaults: no Secret at all.
    assert not _objects(rendered["minimal"], "Secret")


def test_otlp_endpoint_reaches_every_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for component, dep in _deployments(rendered["external-engines"]).items():
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4317", component
    for dep in _objects(rendered["minimal"], "Deployment"):
        names = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in names


def test_api_keys_secret_is_mounted_and_named_to_the_gateway(rendered: dict[str, list[dict[str, Any]]]) -> None:
    gateway = _deployments(rendered["external-engines"])["gateway"]
    pod = gateway["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MEMOS_API_KEYS_FILE"] == "/etc/memos/api-keys/keys.json"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    assert mount["readOnly"] and "subPath" not in mount  # updates of the Secret must reach the file
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "memos-api-keys"
    # Without the value there is no key file.
    assert "MEMOS_API_KEYS_FILE" not in str(_deployments(rendered["minimal"])["gateway"])


def test_service_token_reaches_every_service_from_its_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployments = _deployments(rendered["external-engines"])
    assert set(deployments) >= {"gateway", "textmem", "ingest", "scheduler"}
    for name, deployment in deployments.items():
        (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
        (token,) = [e for e in container["env"] if e["name"] == "MEMOS_SERVICE_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"] == {"name": "memos-service-token", "key": "token"}, name
    assert "MEMOS_SERVICE_TOKEN" not in str(rendered["minimal"])


def test_mtls_mounts_the_release_certificate_and_moves_probes_to_the_health_port(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["mtls"]
    services = {_component(s): s for s in _objects(docs, "Service")}
    for name, deployment in _deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == name]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MEMOS_TLS_CERT_FILE"] == "/etc/memos/tls/tls.crt", name
        assert env["MEMOS_TLS_KEY_FILE"] == "/etc/memos/tls/tls.key", name
        assert env["MEMOS_TLS_CA_FILE"] == "/etc/memos/tls/ca.crt", name
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        assert mount["readOnly"] and "subPath" not in mount, name  # renewals must reach the files
        (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == "memos-tls", name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # The health port is for the kubelet only: not in the Service.
        assert "health" not in {p["name"] for p in services[name]["spec"]["ports"]}, name
        if name == "gateway":
            # Its public port stays plaintext (GatewaySettings.tls_serve defaults to false), so
            # the probes stay on it.
            assert "MEMOS_HEALTH_LISTEN_ADDR" not in env and "health" not in ports
            assert "MEMOS_TLS_SERVE" not in env
            assert container["readinessProbe"]["grpc"] == {"port": 50051}
        else:
            assert env["MEMOS_HEALTH_LISTEN_ADDR"] == "0.0.0.0:50060", name
            assert ports["health"] == 50060, name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[probe]["grpc"] == {"port": 50060}, (name, probe)
    # The gateway's OIDC settings: the provider's keys from its jwks_uri and from a ConfigMap.
    gateway = _deployments(docs)["gateway"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in gateway["containers"][0]["env"]}
    assert env["MEMOS_JWT_ISSUER"] == "https://login.example.com/realms/memos"
    assert env["MEMOS_JWT_AUDIENCE"] == "memos-api"
    assert env["MEMOS_JWT_JWKS_URL"].startswith("https://login.example.com/")
    assert env["MEMOS_JWT_JWKS_FILE"] == "/etc/memos/jwks/jwks.json"
    (jwks,) = [v for v in gateway["volumes"] if v["name"] == "jwks"]
    assert jwks["configMap"]["name"] == "memos-jwks"
    # Off by default: no certificate anywhere.
    assert "MEMOS_TLS_" not in str(rendered["minimal"]) and "MEMOS_HEALTH_LISTEN_ADDR" not in str(rendered["minimal"])
