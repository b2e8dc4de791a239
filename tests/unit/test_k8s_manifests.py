"""deploy/k8s, checked without a cluster: each overlay builds with the pinned kustomize, every object
passes Kubernetes' schemas (kubernetes-validate, strict), and the local topology (its processes,
ports, settings, secrets, topics, databases, broker and PostgreSQL settings) is all in the
manifests, so that the two cannot drift apart. The operators' custom resources are checked against
their CRDs in test_k8s_crds.py."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from tests.unit.k8s_support import (
    K8S,
    OVERLAYS,
    REPO,
    built,
    containers,
    env_of,
    local_defaults,
    objects,
    one,
    pod_spec,
    secrets_referenced,
)
from tinysaga.infra import k8s, k8s_tools
from tinysaga.infra.topology import processes
from tinysaga.platform.secrets import SERVICES_WITH_DB

CORE_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1")
OPERATOR_GROUPS = ("kafka.strimzi.io/", "postgresql.cnpg.io/")
HTTP_SERVICES = ("auth", "order", "payment", "wallet", "inventory", "notification", "web")


# ---- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_passes_the_kubernetes_schema_strictly(overlay: str) -> None:
    docs = built(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Namespace"} <= kinds
    for d in docs:
        if d["apiVersion"].startswith(OPERATOR_GROUPS):
            continue
        assert d["apiVersion"] in CORE_GROUPS, f"unexpected API {d['apiVersion']} for {d['kind']}"
        kubernetes_validate.validate(d, k8s_tools.KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_deployment() -> None:
    deployment = one("small", "Deployment", "order")
    pod_spec(deployment)["containers"][0]["livenessProbe"]["httpGet"]["port"] = ["http"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, k8s_tools.KUBERNETES_VERSION, strict=True)
    deployment = one("small", "Deployment", "order")
    pod_spec(deployment)["containers"][0]["readinesProbe"] = {}  # a misspelt field: strict refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, k8s_tools.KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_in_the_namespace_and_labelled(overlay: str) -> None:
    for d in built(overlay):
        if d["kind"] == "Namespace":
            assert d["metadata"]["name"] == k8s.NAMESPACE
            continue
        assert d["metadata"].get("namespace") == k8s.NAMESPACE, d["metadata"]["name"]
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tinysaga"


# ---- the local topology's processes -------------------------------------------------------------


def test_every_process_of_the_local_topology_runs_on_the_cluster() -> None:
    s = local_defaults()
    for overlay in OVERLAYS:
        deployments = {d["metadata"]["name"]: d for d in objects(overlay, "Deployment")}
        expected = {"gateway", "relay", *HTTP_SERVICES}
        assert set(deployments) == expected, overlay
        for proc in processes(s):
            service = re.sub(r"-\d+$", "", proc.name)
            if proc.name == "kafka":
                assert one(overlay, "Kafka", "tinysaga")
                continue
            if proc.name == "smtp-sink":  # next to Notification, in its pod
                (sink,) = [c for c in containers(deployments["notification"]) if c["name"] == "smtp-sink"]
                assert sink["command"] == ["python", *proc.argv[1:]]
                assert [p["containerPort"] for p in sink["ports"]] == [proc.port]
                continue
            main = containers(deployments[service])[0]
            if proc.name == "relay":
                assert main["command"] == ["python", *proc.argv[1:]]
                continue
            if proc.name == "gateway":
                assert main["command"][:3] == ["haproxy", "-db", "-f"]
                assert [p["containerPort"] for p in main["ports"]] == [s.gateway_port]
                continue
            # the same module; every replica of a service listens on its first replica's port
            assert main["command"] == ["python", *proc.argv[1:-1], str(s.port_of(service))], proc.name
            if proc.port:
                assert [p["containerPort"] for p in main["ports"]] == [s.port_of(service)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_probed_on_their_health_routes(overlay: str) -> None:
    for name in HTTP_SERVICES:
        main = containers(one(overlay, "Deployment", name))[0]
        assert main["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
        assert main["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert main["ports"][0]["name"] == "http"
    gateway = containers(one(overlay, "Deployment", "gateway"))[0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health"


def test_small_runs_one_replica_and_ha_several_apart() -> None:
    s = local_defaults()
    for d in objects("small", "Deployment"):
        assert d["spec"]["replicas"] == 1, d["metadata"]["name"]
    for d in objects("ha", "Deployment"):
        name = d["metadata"]["name"]
        assert d["spec"]["replicas"] >= max(2, s.replicas(name)), name
        (term,) = pod_spec(d)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
    assert one("ha", "Cluster", "tinysaga-pg")["spec"]["instances"] == 3
    assert one("ha", "Cluster", "tinysaga-pg")["spec"]["postgresql"]["synchronous"]["number"] >= 1
    assert one("small", "Cluster", "tinysaga-pg")["spec"]["instances"] >= 2
    for overlay in OVERLAYS:
        assert one(overlay, "KafkaNodePool", "dual-role")["spec"]["replicas"] == 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_and_spreads(overlay: str) -> None:
    budgets = objects(overlay, "PodDisruptionBudget")
    for d in objects(overlay, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, d["metadata"]["name"]
        # one replica may always be drained (a budget of minAvailable 1 on one replica blocks a node drain)
        assert matching[0]["spec"] == {"maxUnavailable": 1, "selector": d["spec"]["selector"]}
        keys = {c["topologyKey"] for c in pod_spec(d)["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def _peak_rss_mb() -> dict[str, int]:
    text = (REPO / "bench" / "results" / "report.md").read_text()
    table = text.split("## Peak RSS per process (MB)")[1].split("\n## ")[0]
    rows = re.findall(r"^\| ([a-z0-9-]+) \| (\d+) \|$", table, re.M)
    peaks: dict[str, int] = {}
    for name, mb in rows:
        service = re.sub(r"-\d+$", "", name)
        peaks[service] = max(peaks.get(service, 0), int(mb))
    return peaks


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_requests_and_limits_come_from_the_benchmarks_rss(overlay: str) -> None:
    peaks = _peak_rss_mb()
    assert {"auth", "order", "relay", "smtp-sink", "gateway"} <= set(peaks)
    seen = set()
    for d in objects(overlay, "Deployment"):
        for c in containers(d):
            name = c["name"]
            mb = peaks[name] * 1e6 / 2**20  # the report's MB are 10^6 bytes
            request, limit = _mib(c["resources"]["requests"]["memory"]), _mib(c["resources"]["limits"]["memory"])
            assert request >= mb * 1.2, f"{name}: request {request} MiB under its peak RSS {mb:.0f} MiB + 20 %"
            assert limit >= mb * 2, f"{name}: limit {limit} MiB under twice its peak RSS"
            assert c["resources"]["requests"]["cpu"]
            seen.add(name)
    assert seen >= {"gateway", "relay", "smtp-sink", *HTTP_SERVICES}
    pool = one(overlay, "KafkaNodePool", "dual-role")["spec"]
    assert _mib(pool["resources"]["requests"]["memory"]) >= peaks["kafka"] * 1e6 / 2**20 * 1.2


# ---- settings -----------------------------------------------------------------------------------

# Settings that are not in the pods' environment, and why.
NOT_IN_THE_PODS = {
    "cache": "downloads of the local stack (Kafka jars, tools)",
    "kafka_port": "the local broker's; on the cluster TINYSAGA_KAFKA_BOOTSTRAP_SERVERS",
    "kafka_controller_port": "the local broker's; Strimzi runs the controllers",
    "kafka_version": "the Kafka resource's spec.kafka.version (checked below)",
    "kafka_heap_mb": "the node pool's jvmOptions (checked below)",
    "admin_password": "from the Secret tinysaga-admin, in Auth's pod only (checked below)",
    "demo_email": "the local `up` seeds a demo account; a cluster has none",
    "demo_password": "the local `up` seeds a demo account; a cluster has none",
    "smtp_host": "tinysaga-smtp, Notification's pod only",
    "smtp_port": "tinysaga-smtp, Notification's pod only",
    "smtp_sender": "tinysaga-smtp, Notification's pod only",
    "kafka_nodes": "the local broker count; Strimzi's KafkaNodePool has three (checked below)",
    "wallet_url": "a local chaos stack's way to Wallet through its fault proxy",
    "fault_proxy": "a local chaos stack only (Toxiproxy between the services and their dependencies)",
    "toxiproxy_version": "a local chaos stack only",
    "otlp_endpoint": "unset, as locally: tracing is off until an operator names a collector (ADR 42)",
    **{
        f"{svc}_events": "unset, as locally: the names the saga definition routes to the service"
        for svc in ("order", "payment", "inventory", "notification", "wallet_user")
    },
}
# Settings whose value on the cluster is not the local default, and why.
CHANGED_ON_THE_CLUSTER = {
    "profile": "production: no default admin password",
    "home": "the pods' state dir, where the Secrets are mounted",
    "bind_host": "a pod listens on its own address",
    "pg_host": "CloudNativePG's read-write Service",
    "pg_port": "PostgreSQL's own port in CloudNativePG",
    "kafka_bootstrap_servers": "Strimzi's bootstrap Service",
    "service_url_template": "one Service per service",
}


def _env_name(field: str) -> str:
    return f"TINYSAGA_{field.upper()}"


def test_every_setting_reaches_the_pods_with_the_local_value_unless_it_must_differ() -> None:
    s = local_defaults()
    fields = set(type(s).model_fields)
    assert set(NOT_IN_THE_PODS) <= fields and set(CHANGED_ON_THE_CLUSTER) <= fields
    settings = one("small", "ConfigMap", "tinysaga-settings")["data"]
    unknown = {k for k in settings if k.removeprefix("TINYSAGA_").lower() not in fields}
    assert not unknown, f"ConfigMap keys that are no setting (a typo is silently ignored): {unknown}"
    missing = {f for f in fields - set(NOT_IN_THE_PODS) if _env_name(f) not in settings}
    assert not missing, f"settings neither in tinysaga-settings nor explained in NOT_IN_THE_PODS: {sorted(missing)}"
    for f in fields - set(NOT_IN_THE_PODS) - set(CHANGED_ON_THE_CLUSTER):
        local = getattr(s, f)
        value = type(local)(settings[_env_name(f)]) if local is not None else settings[_env_name(f)]
        assert value == local, f"{_env_name(f)} is {settings[_env_name(f)]!r} on the cluster, {local!r} locally"
    smtp = one("small", "ConfigMap", "tinysaga-smtp")["data"]
    assert int(smtp["TINYSAGA_SMTP_PORT"]) == s.effective_smtp_port and smtp["TINYSAGA_SMTP_SENDER"] == s.smtp_sender


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_reads_the_settings_and_only_notification_the_smtp_ones(overlay: str) -> None:
    for d in objects(overlay, "Deployment"):
        for c in containers(d, init=True):
            if c["command"][0] == "haproxy":
                continue
            env = env_of(overlay, c)
            assert env["TINYSAGA_PROFILE"] == "production", c["name"]
            assert ("TINYSAGA_SMTP_HOST" in env) == (d["metadata"]["name"] == "notification" and c["name"] != "init")
            assert ("TINYSAGA_ADMIN_PASSWORD" in env) == (c["name"] == "auth")
    (auth,) = containers(one(overlay, "Deployment", "auth"))
    assert env_of(overlay, auth)["TINYSAGA_ADMIN_PASSWORD"] == "secret:tinysaga-admin/password"


def test_the_local_service_urls_and_addresses_are_replaced_on_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in one("small", "ConfigMap", "tinysaga-settings")["data"].items():
        monkeypatch.setenv(key, value)
    s = type(local_defaults())()
    assert s.service_url("wallet") == f"http://wallet:{s.port_of('wallet')}"
    assert s.service_url("order", 2) == f"http://order:{s.port_of('order')}"  # one Service for all replicas
    assert s.kafka_bootstrap == "tinysaga-kafka-bootstrap:9092"
    names = {d["metadata"]["name"] for d in objects("small", "Service")}
    for callee in {c for callees in k8s.INTERNAL_CALLS.values() for c in callees}:
        assert callee in names, f"no Service {callee} for the calls to it"
    assert f"{s.pg_host}" == "tinysaga-pg-rw" and s.pg_port == 5432


# ---- Kafka --------------------------------------------------------------------------------------


def _properties(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#") and "=" in line
    )


# Broker settings Strimzi owns (it refuses them in spec.kafka.config).
STRIMZI_OWNS = {
    "process.roles",
    "node.id",
    "controller.quorum.voters",
    "listeners",
    "advertised.listeners",
    "controller.listener.names",
    "inter.broker.listener.name",
    "listener.security.protocol.map",
    "log.dirs",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_is_the_local_broker_on_three_kraft_nodes(overlay: str) -> None:
    s = local_defaults()
    kafka = one(overlay, "Kafka", "tinysaga")["spec"]["kafka"]
    assert kafka["version"] == s.kafka_version
    assert s.kafka_version in k8s_tools.STRIMZI_KAFKA_VERSIONS, "the pinned Strimzi cannot run the local Kafka"
    pool = one(overlay, "KafkaNodePool", "dual-role")["spec"]
    assert sorted(pool["roles"]) == ["broker", "controller"] and pool["replicas"] == 3
    assert pool["jvmOptions"] == {"-Xms": f"{s.kafka_heap_mb}m", "-Xmx": f"{s.kafka_heap_mb}m"}
    local = _properties((REPO / "deploy" / "kafka" / "server.properties.tmpl").read_text())
    config = {k: str(v).lower() for k, v in kafka["config"].items()}
    for key, value in local.items():
        if key in STRIMZI_OWNS:
            assert key not in config
            continue
        # the local template fills these in for one or three nodes; the cluster has three
        if key.endswith("replication.factor") or value == "${replication}":
            value = "3"
        elif key.endswith("min.isr") or value == "${min_isr}":
            value = "2"
        elif value == "${partitions}":
            value = str(s.topic_partitions)
        assert config.get(key) == value, f"{key}: {config.get(key)!r} on the cluster, {value!r} locally"
    assert config["min.insync.replicas"] == "2" and config["auto.create.topics.enable"] == "false"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_saga_topics_are_kafka_topics_with_three_replicas(overlay: str) -> None:
    s = local_defaults()
    topics = {t["spec"]["topicName"]: t for t in objects(overlay, "KafkaTopic")}
    assert set(topics) == {s.topic, s.user_topic, s.dead_letter_topic, s.commands_topic}
    for t in topics.values():
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == "tinysaga"
        assert t["spec"]["partitions"] == s.topic_partitions
        assert t["spec"]["replicas"] == 3
        assert t["spec"]["config"]["min.insync.replicas"] == 2


def test_a_kafka_listener_without_authentication_is_open_only_to_the_kafka_clients() -> None:
    (listener,) = one("small", "Kafka", "tinysaga")["spec"]["kafka"]["listeners"]
    assert "authentication" not in listener  # so no KafkaUser (ADR 22)
    assert listener["networkPolicyPeers"] == [{"podSelector": {"matchLabels": {"tinysaga.io/kafka-client": "true"}}}]
    clients = {
        d["metadata"]["name"]
        for d in objects("small", "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("tinysaga.io/kafka-client") == "true"
    }
    assert clients == {"relay", *SERVICES_WITH_DB}
    assert not objects("small", "KafkaUser")
    # the services' addresses of Kafka and PostgreSQL are the Services the operators make
    settings = one("small", "ConfigMap", "tinysaga-settings")["data"]
    assert settings["TINYSAGA_KAFKA_BOOTSTRAP_SERVERS"] == f"tinysaga-kafka-bootstrap:{listener['port']}"
    assert settings["TINYSAGA_PG_HOST"] == f"{one('small', 'Cluster', 'tinysaga-pg')['metadata']['name']}-rw"


# ---- PostgreSQL ---------------------------------------------------------------------------------

# postgresql.conf settings CloudNativePG sets itself (it refuses them in parameters).
CNPG_OWNS = {"listen_addresses", "wal_level", "log_line_prefix"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_has_a_database_and_a_role_per_service_with_the_local_settings(overlay: str) -> None:
    cluster = one(overlay, "Cluster", "tinysaga-pg")["spec"]
    assert cluster["imageName"].rsplit(":", 1)[1].startswith("15.")  # the local stack's PostgreSQL 15
    roles = {r["name"]: r for r in cluster["managed"]["roles"]}
    databases = {d["spec"]["name"]: d["spec"] for d in objects(overlay, "Database")}
    assert set(roles) == set(databases) == {f"tinysaga_{s}" for s in SERVICES_WITH_DB}
    for svc in SERVICES_WITH_DB:
        role = roles[f"tinysaga_{svc}"]
        assert role["login"] and role["ensure"] == "present" and not role.get("superuser")
        assert role["passwordSecret"]["name"] == f"tinysaga-db-{svc}"
        assert databases[f"tinysaga_{svc}"]["owner"] == f"tinysaga_{svc}"
        assert databases[f"tinysaga_{svc}"]["cluster"]["name"] == "tinysaga-pg"
        assert f"host tinysaga_{svc} tinysaga_{svc} all scram-sha-256" in cluster["postgresql"]["pg_hba"]
    assert cluster["postgresql"]["pg_hba"][-1] == "host all all all reject"
    local = {}
    for line in (REPO / "deploy" / "postgres" / "postgresql.conf").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = (p.strip() for p in line.split("=", 1))
            local[key] = value.strip("'")
    params = cluster["postgresql"]["parameters"]
    for key, value in local.items():
        if key in CNPG_OWNS:
            assert key not in params
        else:
            assert params.get(key) == value, f"{key}: {params.get(key)!r} on the cluster, {value!r} locally"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pods_pools_fit_in_the_clusters_connections(overlay: str) -> None:
    import inspect

    from tinysaga.platform.service import create_service_app

    pool = inspect.signature(create_service_app).parameters["pool_size"].default
    wanted = 0
    for d in objects(overlay, "Deployment"):
        name = d["metadata"]["name"]
        if name in SERVICES_WITH_DB:
            wanted += d["spec"]["replicas"] * pool
        elif name == "relay":  # one connection per database
            wanted += d["spec"]["replicas"] * len(SERVICES_WITH_DB)
    limit = int(one(overlay, "Cluster", "tinysaga-pg")["spec"]["postgresql"]["parameters"]["max_connections"])
    assert wanted <= limit * 0.8, f"{wanted} pooled connections for max_connections {limit} (ADR 20)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_in_the_init_container_of_each_service_with_a_database(overlay: str) -> None:
    for d in objects(overlay, "Deployment"):
        name = d["metadata"]["name"]
        inits = pod_spec(d).get("initContainers", [])
        if name in SERVICES_WITH_DB or name == "relay":
            (init,) = inits
            assert init["command"] == ["python", "-m", "tinysaga.infra.k8s_init", name]
            assert init["volumeMounts"] == [
                m for m in containers(d)[0]["volumeMounts"] if m["name"] in ("secrets", "tmp")
            ]
        else:
            assert not inits, name


# ---- Secrets ------------------------------------------------------------------------------------


def _mounted_files(deployment: dict) -> set[str]:
    files = set()
    for v in pod_spec(deployment)["volumes"]:
        for src in v.get("projected", {}).get("sources", []):
            files |= {f"{src['secret']['name']}:{i['path']}" for i in src["secret"]["items"]}
    return files


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pod_gets_only_the_secrets_it_needs(overlay: str) -> None:
    assert not objects(overlay, "Secret"), "Secrets are created on the cluster, never kept in the repository"
    for d in objects(overlay, "Deployment"):
        name = d["metadata"]["name"]
        files = _mounted_files(d)
        if name == "gateway":
            assert files == {"tinysaga-jwt:jwt_public.pem"}
            continue
        want = {"tinysaga-internal:internal_secret"}
        if name in SERVICES_WITH_DB:
            want.add(f"tinysaga-db-{name}:db/{name}/password")
        if name == "relay":  # it publishes every database's outbox
            want |= {f"tinysaga-db-{s}:db/{s}/password" for s in SERVICES_WITH_DB}
        if name == "auth":  # it signs the tokens
            want.add("tinysaga-jwt:jwt_private.pem")
        assert files == want, name
        for c in containers(d, init=True):
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            if c["name"] == "smtp-sink":  # it needs none
                assert k8s.SECRETS_DIR not in mounts
                continue
            assert mounts[k8s.SECRETS_DIR]["readOnly"] is True
            assert env_of(overlay, c)["TINYSAGA_HOME"] + "/secrets" == k8s.SECRETS_DIR


def test_every_secret_of_the_local_stack_has_its_kubernetes_secret(tmp_path: Path) -> None:
    """`tiny-saga up` makes the secrets in the state dir (ensure_secrets); each one is a key of a
    Secret that some pod mounts, at the same path under its secrets dir."""
    import json

    from tinysaga.platform.secrets import ensure_secrets

    ensure_secrets(local_defaults().model_copy(update={"home": tmp_path}))
    local = {p.name for p in (tmp_path / "secrets").iterdir()}
    assert local == {"jwt_private.pem", "jwt_public.pem", "internal_secret", "db.json"}, "a new local secret?"
    mounted = set().union(*(_mounted_files(d) for d in objects("ha", "Deployment")))
    paths = {m.split(":", 1)[1] for m in mounted}
    assert {"jwt_private.pem", "jwt_public.pem", "internal_secret"} <= paths
    roles = json.loads((tmp_path / "secrets" / "db.json").read_text())
    # the superuser is the local initdb's; CloudNativePG keeps its own (and superuser access is off)
    assert set(roles) - {"superuser"} == set(SERVICES_WITH_DB)
    assert one("ha", "Cluster", "tinysaga-pg")["spec"]["enableSuperuserAccess"] is False
    for svc in set(roles) - {"superuser"}:
        assert f"db/{svc}/password" in paths


def test_the_readme_says_how_to_create_every_secret_the_pods_use() -> None:
    readme = (REPO / "README.md").read_text().split("## Running on Kubernetes")[1].split("\n## ")[0]
    names = set().union(*(secrets_referenced(d) for d in objects("ha", "Deployment")))
    names |= {r["passwordSecret"]["name"] for r in one("ha", "Cluster", "tinysaga-pg")["spec"]["managed"]["roles"]}
    assert len(names) == 3 + len(SERVICES_WITH_DB)
    for name in sorted(names):
        if name.startswith("tinysaga-db-"):
            assert "tinysaga-db-$s" in readme, "the README creates the database Secrets in a loop"
        else:
            assert name in readme, name


def test_no_secret_material_is_committed_under_deploy_k8s() -> None:
    for path in K8S.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "PRIVATE KEY" not in text, path
            assert not re.search(r"^\s*(password|internal_secret)\s*:\s*\S", text, re.M), path
            assert "kind: Secret\n" not in text, path


# ---- network policies ---------------------------------------------------------------------------


def _allowed_from(overlay: str, deployment: dict, port: int) -> set[str] | None:
    """The pods (by app name) that may connect to this port; None: anyone."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    peers: set[str] = set()
    for p in objects(overlay, "NetworkPolicy"):
        if not p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items():
            continue
        for rule in p["spec"].get("ingress", []):
            if not any(x["port"] == port for x in rule.get("ports", [])):
                continue
            if "from" not in rule:
                return None
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, "services are reached from pods of this namespace only"
                peers.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    return peers


def _calls_in_code() -> dict[str, set[str]]:
    """Which service calls which, from the services' code: `get_from_any(rt, "x"`, `_get(rt, "x"`,
    `service_url("x")`, Order's `order_timed_out` question, the saga map's `RecordsClient` (every
    other participant of the saga) and the Operations page's `operations.collect` (every service)."""
    from tinysaga.contracts import saga
    from tinysaga.platform import operations

    calls: dict[str, set[str]] = {}
    src = REPO / "src" / "tinysaga"
    for svc in HTTP_SERVICES:
        for path in (src / svc).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if fn in ("get_from_any", "_get", "service_url") and args:
                    calls.setdefault(svc, set()).add(args[0])
                if fn == "order_timed_out":
                    calls.setdefault(svc, set()).add("order")
                if fn == "RecordsClient":
                    calls.setdefault(svc, set()).update(set(saga.participants()) - {svc})
                if fn == "collect" and getattr(getattr(node.func, "value", None), "id", "") == "operations":
                    calls.setdefault(svc, set()).update(set(operations.SERVICES) - {svc})
    return calls


def test_the_declared_internal_calls_are_the_ones_in_the_code() -> None:
    assert _calls_in_code() == {k: set(v) for k, v in k8s.INTERNAL_CALLS.items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_and_internal_ports_only_from_their_callers(overlay: str) -> None:
    s = local_defaults()
    default = one(overlay, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert default == {"podSelector": {}, "policyTypes": ["Ingress"]}
    exposed = [x for x in objects(overlay, "Service") if x["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert [x["metadata"]["name"] for x in exposed] == ["gateway"]
    assert not objects(overlay, "Ingress")
    assert _allowed_from(overlay, one(overlay, "Deployment", "gateway"), s.gateway_port) is None
    callers: dict[str, set[str]] = {}
    for caller, callees in k8s.INTERNAL_CALLS.items():
        for callee in callees:
            callers.setdefault(callee, set()).add(caller)
    for name in HTTP_SERVICES:
        want = callers.get(name, set()) | ({"gateway"} if name != "payment" else set())
        assert _allowed_from(overlay, one(overlay, "Deployment", name), s.port_of(name)) == want, name
    assert _allowed_from(overlay, one(overlay, "Deployment", "notification"), s.port_of("smtp")) == set()
    db = one(overlay, "NetworkPolicy", "postgres-ingress")["spec"]
    assert db["podSelector"]["matchLabels"] == {"cnpg.io/cluster": "tinysaga-pg"}
    for rule in db["ingress"]:  # the services reach PostgreSQL, not the instance manager
        labels = [peer.get("podSelector", {}).get("matchLabels") for peer in rule["from"]]
        if {"tinysaga.io/db-client": "true"} in labels:
            assert [x["port"] for x in rule["ports"]] == [5432]
    clients = {
        d["metadata"]["name"]
        for d in objects(overlay, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("tinysaga.io/db-client") == "true"
    }
    assert clients == {"relay", *SERVICES_WITH_DB}


# ---- the gateway --------------------------------------------------------------------------------


def test_the_committed_gateway_config_is_the_templates_output() -> None:
    rendered = k8s.render_gateway(local_defaults())
    assert k8s.GATEWAY_CONFIG.read_text() == rendered, "run: python -m tinysaga.infra.k8s gateway"
    (cm,) = [c for c in objects("small", "ConfigMap") if c["metadata"]["name"].startswith("tinysaga-gateway-")]
    assert cm["data"]["haproxy.cfg"] == rendered
    deployment = one("small", "Deployment", "gateway")
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]  # a new config rolls the gateway
    assert containers(deployment)[0]["command"] == ["haproxy", "-db", "-f", "/etc/haproxy/haproxy.cfg"]


def test_the_gateway_config_holds_no_secret_and_reaches_every_backend_by_dns() -> None:
    s = local_defaults()
    text = k8s.GATEWAY_CONFIG.read_text()
    assert f"bind 0.0.0.0:{s.gateway_port}" in text
    assert text.count(f'X-Internal-Secret "${{{k8s.INTERNAL_SECRET_ENV}}}"') == 1 + 6
    (gateway,) = containers(one("small", "Deployment", "gateway"))
    assert env_of("small", gateway)[k8s.INTERNAL_SECRET_ENV] == "secret:tinysaga-internal/internal_secret"
    assert f'jwt_verify("RS256","{k8s.SECRETS_DIR}/jwt_public.pem")' in text
    services = {x["metadata"]["name"]: x["spec"] for x in objects("small", "Service")}
    for name in ("auth", "order", "wallet", "inventory", "notification", "web"):
        port = s.port_of(name)
        fqdn = f"{name}-pods.{k8s.NAMESPACE}.svc.{k8s.CLUSTER_DOMAIN}:{port}"
        assert f"server-template {name}- {k8s.GATEWAY_SERVER_SLOTS} {fqdn} check" in text
        headless = services[f"{name}-pods"]
        assert headless["clusterIP"] == "None" and headless["ports"][0]["port"] == port
        assert headless["selector"] == {"app.kubernetes.io/name": name}
    for d in objects("ha", "Deployment"):
        assert d["spec"]["replicas"] <= k8s.GATEWAY_SERVER_SLOTS


def test_haproxy_accepts_the_cluster_config_only_with_the_secret_in_its_environment(tmp_path: Path) -> None:
    import os
    import subprocess

    from tinysaga.infra.gateway import haproxy_binary

    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(k8s.GATEWAY_CONFIG.read_text())
    env = {k: v for k, v in os.environ.items() if k != k8s.INTERNAL_SECRET_ENV}
    ok = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(cfg)],
        env={**env, k8s.INTERNAL_SECRET_ENV: "unit-secret"},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "set-header" in missing.stdout + missing.stderr


# ---- the image ----------------------------------------------------------------------------------


def test_every_container_runs_the_one_image_pinned_and_not_as_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=(\S+)$", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert base.split(":")[1].startswith(".".join(map(str, sys.version_info[:2])))
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${BASE}", "${BASE}"]
    uid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M).group(1)
    assert int(uid) != 0
    for overlay in OVERLAYS:
        for d in objects(overlay, "Deployment"):
            ctx = pod_spec(d)["securityContext"]
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == int(uid)
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}  # the `restricted` pod security profile
            for c in containers(d, init=True):
                assert re.fullmatch(r"[a-z0-9./-]+/tinysaga:\d+\.\d+\.\d+", c["image"]), c["image"]
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert pod_spec(d)["automountServiceAccountToken"] is False


def test_the_image_installs_what_the_processes_import_at_the_locks_versions() -> None:
    from importlib.metadata import packages_distributions, requires

    from packaging.requirements import Requirement

    lock = {
        Requirement(line).name.lower().replace("_", "-")
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    wanted = [
        Requirement(line)
        for line in (K8S / "requirements-image.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    closure: set[str] = set()
    todo = [(r.name, set(r.extras)) for r in wanted]
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        assert key in lock, f"{name} is not pinned in requirements.lock"
        if key in closure and not extras:
            continue
        closure.add(key)
        for spec in requires(name) or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((dep.name, set(dep.extras)))
    assert {"uvloop", "httptools"} <= closure  # uvicorn runs with loop="uvloop", http="httptools"
    distributions = packages_distributions()
    src = REPO / "src" / "tinysaga"
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        if rel == "cli.py" or (rel.startswith("infra/") and rel != "infra/k8s_init.py"):
            continue  # the local stack's tooling, not in the image
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"tinysaga"}:
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
                assert dists & closure, f"{rel} imports {top}, which the image does not install"


def test_the_gateway_generator_writes_and_checks_the_committed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s, "get_settings", local_defaults)
    assert k8s.main(["gateway", "--check"]) == 0
    out = tmp_path / "haproxy.cfg"
    assert k8s.main(["gateway", "--out", str(out)]) == 0
    assert out.read_text() == k8s.GATEWAY_CONFIG.read_text()
    monkeypatch.setattr(k8s, "get_settings", lambda: local_defaults().model_copy(update={"rate_user_per_10s": 7}))
    assert k8s.main(["gateway", "--check"]) == 1  # a changed setting is a changed config
