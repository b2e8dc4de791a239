"""`python -m tinysaga.infra.k8s_init SERVICE`: the init container of a pod on Kubernetes.

It applies the service's migrations to its database (plain SQL, each once, under an advisory lock:
several pods starting together are safe, ADR 3), then waits until the saga topics exist. On the
cluster the topics come from `KafkaTopic` resources (replication factor 3, `min.insync.replicas`
2); a service that found them missing would create them itself with the local stack's replication
factor 1. The relay's pod only waits for the topics."""

from __future__ import annotations

import asyncio
import logging
import sys

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from tinysaga.platform.logging import setup_logging
from tinysaga.platform.migrations import apply_migrations
from tinysaga.platform.secrets import SERVICES_WITH_DB, database_dsn
from tinysaga.platform.settings import Settings, get_settings

log = logging.getLogger("tinysaga.k8s_init")
RETRY_SECONDS = 2.0


# What a database that is not there yet answers: not reachable, starting, or (the operator creates
# the roles and databases after the cluster is up) no such role, password or database yet. A
# migration that fails for any other reason fails the init container, and the pod says why.
NOT_READY_YET = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)


async def migrate(settings: Settings, service: str) -> None:
    while True:
        try:
            applied = await apply_migrations(database_dsn(settings, service), service)
            log.info("migrations applied", extra={"service": service, "applied": applied})
            return
        except NOT_READY_YET as e:
            log.warning("database not ready yet: %s: %s", type(e).__name__, e)
            await asyncio.sleep(RETRY_SECONDS)


async def topics_missing(settings: Settings) -> set[str]:
    wanted = {settings.topic, settings.user_topic, settings.dead_letter_topic, settings.commands_topic}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        return wanted - set(await admin.list_topics())
    finally:
        await admin.close()


async def wait_for_topics(settings: Settings) -> None:
    while True:
        try:
            missing = await topics_missing(settings)
            if not missing:
                return
            log.info("waiting for topics %s", sorted(missing))
        except Exception as e:  # the broker is not reachable yet
            log.warning("kafka not reachable yet: %s", e)
        await asyncio.sleep(RETRY_SECONDS)


async def run(service: str) -> None:
    settings = get_settings()
    if service in SERVICES_WITH_DB:
        await migrate(settings, service)
    await wait_for_topics(settings)


def main(argv: list[str]) -> int:
    known = (*SERVICES_WITH_DB, "relay")
    if len(argv) != 1 or argv[0] not in known:
        print(f"usage: python -m tinysaga.infra.k8s_init {{{','.join(known)}}}", file=sys.stderr)
        return 2
    setup_logging(f"init-{argv[0]}", get_settings().log_level)
    asyncio.run(run(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
