"""The composition every service process shares: a pooled database, its consumer loops and
background tasks started in the app's lifespan, readiness from its real dependencies, its tracing
when it is on (ADR 42), and the uvicorn entrypoint bound to loopback."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import aiohttp
import asyncpg
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from fastapi import FastAPI
from uvicorn.importer import import_from_string

from tinysaga.contracts import saga
from tinysaga.contracts.events import Event, as_cause
from tinysaga.platform import metrics, tracing, web
from tinysaga.platform.consumer import ConsumerLoop, Handler, HandlerContext, Prepare
from tinysaga.platform.db import create_pool
from tinysaga.platform.logging import setup_logging
from tinysaga.platform.publisher import Publisher, make_producer
from tinysaga.platform.secrets import SERVICES_WITH_DB, database_dsn, internal_secret
from tinysaga.platform.settings import Settings, get_settings
from tinysaga.platform.uow import publish_after_commit

log = logging.getLogger("tinysaga.service")

SCRAPE_TIMEOUT = 2.0  # seconds for each figure a scrape of /metrics reads from the database


class TopicsNotCreated(RuntimeError):
    """The controller refused to create a topic, e.g. INVALID_REPLICATION_FACTOR while fewer nodes
    of a cluster have registered than the replication factor asks for."""


def refused_topics(response: Any) -> dict[str, str]:
    """The topics a CreateTopics response refused, with why; one that already exists is not
    refused (another service created it first). aiokafka returns these errors, it does not raise
    them."""
    refused = {}
    for topic, code, *message in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            name = for_code(code).__name__
            refused[topic] = f"{name}: {message[0]}" if message and message[0] else name
    return refused


async def ensure_topics(settings: Settings) -> None:
    """Create the topics if they are missing (idempotent; several services may race to do it).
    Raises until every topic exists, so a caller retrying it starts its consumers only then."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                t,
                settings.topic_partitions,
                settings.replication_factor,
                topic_configs={"min.insync.replicas": str(settings.min_insync_replicas)},
            )
            for t in (settings.topic, settings.user_topic, settings.dead_letter_topic, settings.commands_topic)
            if t not in existing
        ]
        if wanted:
            try:
                refused = refused_topics(await admin.create_topics(wanted))
            except TopicAlreadyExistsError:
                refused = {}
            if refused:
                raise TopicsNotCreated(f"topics not created: {refused}")
    finally:
        await admin.close()


@dataclass
class Runtime:
    """What a service's handlers and routes are given: settings, its pool, its clients. What a
    service adds of its own (its repositories, clients, fan-outs) is a typed object of that service,
    `deps`, built by its bootstrap."""

    name: str
    settings: Settings
    secret: str
    pool: asyncpg.Pool = field(init=False)
    http: aiohttp.ClientSession = field(init=False)  # for the few service-to-service calls
    consumers: list[ConsumerLoop] = field(default_factory=list)
    tasks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # run before each scrape of /metrics: figures read from the database at that moment
    scrape_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    deps: Any = None
    publisher: Publisher | None = None  # sends what this process commits to its outbox (ADR 51)

    def topic_name(self, logical: str) -> str:
        """The Kafka topic a saga topic is, in this deployment's settings."""
        return {
            saga.ORDER_TOPIC: self.settings.topic,
            saga.USER_TOPIC: self.settings.user_topic,
            saga.COMMANDS_TOPIC: self.settings.commands_topic,
        }[logical]

    def consume(
        self,
        handlers: dict[str, Handler],
        *,
        topic: str = saga.ORDER_TOPIC,
        participant: str | None = None,
        group: str | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        """Consume what starts the participant's steps declared on a saga topic, in the service's own
        consumer group, with a handler per step of the saga definition (by step name). The definition
        says which events start each step, and which steps' events may share a poll's transaction;
        the settings may narrow the names handled. A step without a handler, a handler without a
        step, or a setting naming an event the saga does not route here stops the service at
        start-up (`saga.SagaDefinitionError`). `prepare` is called before a batch's transaction with
        its events (see `ConsumerLoop`).

        In orchestration mode the steps that have a command are started by it instead, on the
        commands topic: the handler sees the event that led to the command (`ev.as_cause`), under
        the command's id, and so runs the same code as in choreography."""
        who = participant or self.name
        mode = self.settings.saga_mode
        saga.check_handlers(who, topic, handlers)
        for on in (
            (topic, saga.COMMANDS_TOPIC) if mode == saga.ORCHESTRATION and topic == saga.ORDER_TOPIC else (topic,)
        ):
            steps = {s.name for s in saga.consumed_steps(who, on, mode)}
            if not steps:
                continue
            narrowed = self.settings.handled_events(who, on)
            routes = saga.routes(who, on, narrowed, mode)
            by_name = {name: handlers[step.name] for name, step in routes.items()}
            prep = prepare
            if on == saga.COMMANDS_TOPIC:
                by_name = {name: _on_cause(h) for name, h in by_name.items()}
                prep = None if prepare is None else _prepare_causes(prepare)
            self.consumers.append(
                ConsumerLoop(
                    self.settings,
                    self.name,
                    self.pool,
                    by_name,
                    (self.topic_name(on),),
                    group_id=group,
                    batch=frozenset(name for name, step in routes.items() if step.batch),
                    # only when every step it starts may wait (a consumer of the saga's steps never does)
                    gather=min((step.gather_seconds for step in routes.values()), default=0.0),
                    prepare=prep,
                    reply_topic=self.topic_name(topic),  # a command is answered on the saga's topic
                )
            )

    @property
    def dsn(self) -> str:
        return database_dsn(self.settings, self.name)

    def internal_headers(self) -> dict[str, str]:
        return {"x-internal-secret": self.secret}


def _on_cause(handler: Handler) -> Handler:
    """A step's handler, given a command: it sees the event that led to it."""

    async def on_command(command: Event, ctx: HandlerContext) -> None:
        await handler(as_cause(command), ctx)

    return on_command


def _prepare_causes(prepare: Prepare) -> Prepare:
    async def prepare_commands(commands: list[Event]) -> dict[Any, Any]:
        causes = []
        for c in commands:
            try:
                causes.append(as_cause(c))
            except ValueError:
                pass  # its handler refuses it
        return await prepare(causes)

    return prepare_commands


def runtime(request: Any) -> Runtime:
    """The service's Runtime, from inside a route."""
    return request.app.state.rt


async def _connect_pool(rt: Runtime, max_size: int) -> asyncpg.Pool:
    while True:
        try:
            return await create_pool(rt.settings, rt.name, max_size=max_size)
        except (OSError, asyncpg.PostgresError) as e:
            log.warning("database not reachable yet: %s", e)
            await asyncio.sleep(1.0)


async def _supervised(name: str, fn: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await fn()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed; restarting it", name)
            await asyncio.sleep(1.0)


def create_service_app(
    name: str,
    setup: Callable[[Runtime], Awaitable[None] | None],
    *,
    routers: list[Any],
    settings: Settings | None = None,
    pool_size: int = 10,
    title: str | None = None,
    middleware: Sequence[type] = (),
) -> FastAPI:
    """A service's app: its runtime (started by the app's lifespan, then `setup`), the error
    handlers, the request guard, health and metrics, `routers`; `middleware` (plain ASGI) runs
    after the request guard, ahead of the routing."""
    settings = settings or get_settings()
    setup_logging(name, settings.log_level)
    tracing.setup(name, settings)  # before the HTTP session is made: its calls carry the trace context
    metrics.watch_gc(name)
    rt = Runtime(name=name, settings=settings, secret=internal_secret(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.pool = await _connect_pool(rt, pool_size)
        rt.http = aiohttp.ClientSession(
            headers=rt.internal_headers(),
            timeout=aiohttp.ClientTimeout(total=5),
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30),
        )
        result = setup(rt)
        if result is not None:
            await result
        running = []
        if rt.name in SERVICES_WITH_DB:  # every service with a database has an outbox
            running.append(asyncio.create_task(_start_publisher(rt)))
        if rt.consumers:
            running.append(asyncio.create_task(_start_consumers(rt)))
        running += [asyncio.create_task(_supervised(t.__name__, t)) for t in rt.tasks]
        app.state.rt = rt
        settle_heap()
        try:
            yield
        finally:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await _stop_publisher(rt)
            await rt.http.close()
            await rt.pool.close()

    app = FastAPI(
        title=title or f"Tiny-Saga {name}", lifespan=lifespan, default_response_class=web.JSON, redirect_slashes=False
    )
    app.state.rt = rt
    for m in middleware:  # added first, so inside the request guard
        app.add_middleware(m)
    web.install(app, internal_secret=rt.secret, max_body=settings.max_body_bytes)
    tracing.instrument_app(app)

    async def db_ready() -> bool:
        return bool(await rt.pool.fetchval("SELECT 1"))

    async def kafka_ready() -> bool:  # a service without consumers only needs its database
        return all(c.connected for c in rt.consumers)

    async def before_scrape() -> None:
        hooks = list(rt.scrape_hooks)
        if rt.name in SERVICES_WITH_DB:  # every service with a database has an outbox
            hooks.insert(0, lambda: metrics.sample_outbox(rt.name, rt.pool))
        for hook in hooks:  # a scrape is answered even when the database is not
            try:
                async with asyncio.timeout(SCRAPE_TIMEOUT):
                    await hook()
            except Exception as e:
                log.warning("a metric could not be read: %s", e)

    web.add_health(app, {"database": db_ready, "kafka": kafka_ready}, before_metrics=before_scrape)
    for r in routers:
        app.include_router(r)
    return app


def settle_heap() -> None:
    """What the process built to start (its modules, the app, the pools) lives as long as it does:
    collect what starting left behind, then put the rest out of the cyclic collector's reach
    (`gc.freeze`). A full collection then looks only at what was made since: well under a
    millisecond, instead of some 90,000 objects and 55-61 ms of CPU (70-330 ms of the wall clock on
    a busy machine) during which the service answers nothing (ADR 60)."""
    gc.collect()
    gc.freeze()


async def _start_publisher(rt: Runtime) -> None:
    """Publish after commit once Kafka answers; until then the relay publishes this process's rows."""
    producer = make_producer(rt.settings)
    while True:
        try:
            await producer.start()
            break
        except Exception as e:
            log.warning("kafka not reachable yet, the relay publishes meanwhile: %s", e)
            await asyncio.sleep(1.0)
    rt.publisher = Publisher(producer, rt.pool)
    publish_after_commit(rt.publisher)


async def _stop_publisher(rt: Runtime) -> None:
    publish_after_commit(None)
    if rt.publisher is not None:
        await rt.publisher.close()
        await rt.publisher.producer.stop()
        rt.publisher = None


async def _start_consumers(rt: Runtime) -> None:
    while True:
        try:
            await ensure_topics(rt.settings)
            break
        except Exception as e:
            log.warning("the topics are not ready yet: %s", e)
            await asyncio.sleep(1.0)
    await asyncio.gather(*(_supervised(f"consumer-{rt.name}", c.run) for c in rt.consumers))


class _DateHeader:
    """The Date header every response carries (RFC 9110, 6.6.1), formatted at most once a second.
    uvicorn's own keeps it fresh from its main loop, which must then wake every second even when
    the service is idle; with this, that loop sleeps until it is asked to stop (`_Server`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._second, self._value = -1, b""

    def _date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def dated(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"date", self._date())]}
            await send(message)

        return await self.app(scope, receive, dated)


class _Server(uvicorn.Server):
    """uvicorn's main loop wakes ten times a second, to refresh the Date header and look for a
    shutdown; on an idle service those wake-ups were most of its CPU. Here the Date header is added
    per response (`_DateHeader`, so uvicorn's is off) and the loop sleeps until a signal asks it to
    stop, waking every IDLE_TICK seconds only in case something else set `should_exit`."""

    IDLE_TICK = 30.0
    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while not await self.on_tick(0):  # a tick of 0 sets the default headers (no Date among them)
            try:
                await asyncio.wait_for(self._wake.wait(), self.IDLE_TICK)
            except TimeoutError:
                pass

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)


def serve(factory_path: str, default_service: str) -> None:
    """`python -m tinysaga.<service> --port N`: uvicorn on loopback only (TINYSAGA_BIND_HOST elsewhere),
    with the app made by the service's bootstrap (`create_app()`, so nothing is read or built at import)."""
    settings = get_settings()
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=settings.port_of(default_service))
    args = parser.parse_args()
    factory = import_from_string(factory_path)
    config = uvicorn.Config(
        lambda: _DateHeader(factory()),
        factory=True,
        date_header=False,
        host=settings.bind_host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    _Server(config).run()
