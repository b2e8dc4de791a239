"""Every TINYSAGA_* setting, typed, with its default. The README's settings table mirrors this class."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]

# Internal ports are offsets from TINYSAGA_SERVICE_PORT_BASE.
SERVICE_PORT_OFFSETS = {
    "auth": 1,
    "order": 11,  # order-1 = base+11, order-2 = base+12, ...
    "payment": 21,
    "wallet": 31,
    "inventory": 41,
    "notification": 51,
    "web": 61,
    "smtp": 25,
    "gateway-stats": 80,
    "toxiproxy": 90,  # the fault proxies of a chaos stack: its API, then one proxy per upstream
    "proxy-postgres": 91,
    "proxy-wallet": 92,
    "proxy-kafka": 93,  # kafka node i = base+93+(i-1)
}
# kafka node i listens on kafka_port + 10*(i-1), its controller on kafka_controller_port + 10*(i-1)
KAFKA_NODE_PORT_STEP = 10


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TINYSAGA_", extra="ignore")

    profile: str = Field("local", description="local or production; production refuses default secrets")
    home: Path = Field(REPO_ROOT / ".tinysaga", description="state dir: data, logs, secrets, run files")
    cache: Path = Field(REPO_ROOT / ".tinysaga" / "cache", description="download cache (Kafka jars)")

    gateway_port: int = 8080
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    pg_port: int = 5544
    service_port_base: int = 8100
    # Off one machine (deploy/k8s): where the services listen and find each other, the database and
    # Kafka. The defaults are the local stack's loopback addresses.
    bind_host: str = "127.0.0.1"
    pg_host: str = "127.0.0.1"
    # default: every local node; a chaos stack sets it to its proxies, a cluster to Strimzi's Service
    kafka_bootstrap_servers: str | None = None
    service_url_template: str | None = None  # e.g. "http://{service}:{port}": one name for all replicas

    order_replicas: int = 2
    inventory_replicas: int = 2

    kafka_nodes: int = Field(1, description="1, or 3 for a KRaft cluster of three nodes (replication 3, min ISR 2)")
    wallet_url: str | None = None  # how Payment reaches Wallet, when not straight (a chaos stack)
    fault_proxy: bool = False  # a chaos stack: services reach Postgres, Kafka and Wallet through Toxiproxy
    toxiproxy_version: str = "2.12.0"
    kafka_version: str = "4.1.1"
    kafka_heap_mb: int = 384
    topic: str = "order-topic"
    user_topic: str = "user-topic"
    dead_letter_topic: str = "order-topic.DLT"
    commands_topic: str = "saga-commands"  # orchestration mode only
    topic_partitions: int = 6
    saga_mode: str = Field("choreography", description="choreography (the seed's design) or orchestration")

    currency: str = "USD"
    jwt_issuer: str = "tinysaga"
    token_ttl_seconds: int = 3600
    admin_email: str = "admin@tinysaga.local"
    admin_password: str | None = None  # defaults to tinysaga-admin in the local profile
    demo_email: str = "demo@tinysaga.local"
    demo_password: str = "tinysaga-demo"

    rate_user_per_10s: int = 100
    rate_ip_per_10s: int = 2000
    rate_auth_per_min: int = 60
    max_body_bytes: int = 65536

    # Saga behaviour
    saga_timeout_seconds: float = 60.0
    sweeper_interval_seconds: float = 5.0
    wallet_attempts: int = 5
    wallet_attempt_timeout_seconds: float = 2.0
    wallet_deadline_seconds: float = 10.0
    wallet_backoff_base_seconds: float = 0.1
    consumer_max_attempts: int = 3
    # The most sagas in flight (orders accepted and not yet settled, over every Order replica)
    # before a new order is answered 503 with Retry-After (ADR 50); 0 turns the bound off.
    max_sagas_in_flight: int = 200
    # Once at least max_saga_seconds_from sagas are in flight, a new order is also answered 503 when
    # they say it would take longer than this to settle (twice their median age, ADR 52); 0 turns
    # this off.
    max_saga_seconds: float = 0.5
    max_saga_seconds_from: int = 20
    overloaded_retry_after_seconds: int = 1

    # The event names a service handles are those the saga definition (contracts/saga.py) routes
    # to it; a comma-separated list here narrows them (set outside the code, as the seed asks). A name
    # the definition does not route to the service stops it at start-up with a clear error.
    order_events: str | None = None
    payment_events: str | None = None
    inventory_events: str | None = None
    notification_events: str | None = None
    wallet_user_events: str | None = None

    # Notifications
    smtp_host: str = "127.0.0.1"
    smtp_port: int | None = None  # default: the local SMTP sink on service_port_base + 25
    smtp_sender: str = "shop@tinysaga.local"
    sms_provider: str = "record"

    log_level: str = "INFO"
    # Tracing (ADR 42): off unless set; the OTLP/HTTP endpoint of a collector, e.g. http://127.0.0.1:4318
    otlp_endpoint: str | None = None
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="the share of orders traced, when on")

    @field_validator("saga_mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        if v not in ("choreography", "orchestration"):
            raise ValueError("TINYSAGA_SAGA_MODE must be choreography or orchestration")
        return v

    @field_validator("kafka_nodes")
    @classmethod
    def _one_or_three(cls, v: int) -> int:
        if v not in (1, 3):
            raise ValueError("TINYSAGA_KAFKA_NODES must be 1 or 3")
        return v

    # ---- derived -------------------------------------------------------------------------
    def port_of(self, service: str, replica: int = 1) -> int:
        return self.service_port_base + SERVICE_PORT_OFFSETS[service] + (replica - 1)

    def replicas(self, service: str) -> int:
        return {"order": self.order_replicas, "inventory": self.inventory_replicas}.get(service, 1)

    def service_url(self, service: str, replica: int = 1) -> str:
        if service == "wallet" and self.wallet_url:
            return self.wallet_url
        if self.service_url_template:
            return self.service_url_template.format(service=service, port=self.port_of(service))
        return f"http://127.0.0.1:{self.port_of(service, replica)}"

    def kafka_node_port(self, node: int) -> int:
        return self.kafka_port + KAFKA_NODE_PORT_STEP * (node - 1)

    def kafka_node_controller_port(self, node: int) -> int:
        return self.kafka_controller_port + KAFKA_NODE_PORT_STEP * (node - 1)

    @property
    def kafka_bootstrap(self) -> str:
        """Every node, so that a client starts (and finds its way back) whichever node is down."""
        return self.kafka_bootstrap_servers or self.kafka_bootstrap_direct

    @property
    def kafka_bootstrap_direct(self) -> str:
        """Straight to the nodes, never through a fault proxy (the operator's tools: audit, chaos)."""
        return ",".join(f"127.0.0.1:{self.kafka_node_port(i)}" for i in range(1, self.kafka_nodes + 1))

    @property
    def replication_factor(self) -> int:
        return 3 if self.kafka_nodes == 3 else 1

    @property
    def min_insync_replicas(self) -> int:
        """A write is acknowledged (acks=all) once this many replicas have it: with 3 nodes, one may be
        down and the saga goes on, and no acknowledged event lives on one node only."""
        return 2 if self.kafka_nodes == 3 else 1

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def effective_admin_password(self) -> str:
        if self.admin_password:
            return self.admin_password
        if self.profile == "production":
            raise RuntimeError("TINYSAGA_ADMIN_PASSWORD must be set in the production profile")
        return "tinysaga-admin"

    @property
    def effective_smtp_port(self) -> int:
        return self.smtp_port or self.port_of("smtp")

    def handled_events(self, participant: str, topic: str) -> frozenset[str] | None:
        """The names a setting narrows a service's handled events to on a topic (None: no setting)."""
        raw = {
            ("order", "order-topic"): self.order_events,
            ("payment", "order-topic"): self.payment_events,
            ("inventory", "order-topic"): self.inventory_events,
            ("notification", "order-topic"): self.notification_events,
            ("wallet", "user-topic"): self.wallet_user_events,
        }.get((participant, topic))
        return None if raw is None else split_names(raw)


def split_names(names: str) -> frozenset[str]:
    return frozenset(n.strip() for n in names.split(",") if n.strip())


@lru_cache
def get_settings() -> Settings:
    return Settings()
