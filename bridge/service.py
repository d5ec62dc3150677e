"""The bridge process: Kafka topics, the ClickHouse ledger sink and the ingress consumers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bridge.callback_ingress import CallbackIngress
from bridge.dlq import DeadLetterPublisher
from bridge.ingress_consumer import IngressConsumer
from bridge.ledger import PastActions
from bridge.request_ingress import RequestIngress
from bridge.sink import LedgerSink, ObservationSink
from bridge.topics import ensure_topics
from karma.client import KarmaClient
from karma.component import Component
from karma.first_to_stop import first_to_stop
from karma.rules import check_actions, load_rules
from karma.settings import Settings

Progress = Callable[[str], None]

log = logging.getLogger(__name__)


class Bridge(Component):
    """Creates missing topics and the ledger schema, then runs the ledger sink, the
    observation sink (`events.normalized` into `observations`) and, unless
    `KARMA_INGRESS__ENABLED=false`, the ingress: requests on `actions.requested` start
    actions, callbacks on `actions.events` are delivered to the actions waiting for them.

    With embedded chdb the bridge must live in the process that owns the data path.
    """

    def __init__(self, settings: Settings, *, client: KarmaClient | None = None) -> None:
        self._settings = settings
        self._client = client
        self._dlq = DeadLetterPublisher(settings.kafka, settings.limits)
        self._sink: LedgerSink | None = None
        self._observations: ObservationSink | None = None
        self._past: PastActions | None = None  # when the bridge makes its own client
        self.requests: IngressConsumer | None = None
        self.callbacks: IngressConsumer | None = None

    async def _start(self) -> None:
        settings = self._settings
        await ensure_topics(settings.kafka)
        self._sink = LedgerSink(settings, self._dlq)
        await self._sink.start()
        rules = load_rules(settings.entropy.rules_file) if settings.entropy.rules_file else None
        if self._client is None and (settings.ingress.enabled or rules is not None):
            self._past = PastActions(settings.clickhouse_dsn, settings.clickhouse.database)
            self._client = await KarmaClient.connect(settings, past=self._past)
        if rules is not None and self._client is not None:
            check_actions(rules, self._client.registry)
        self._observations = ObservationSink(settings, self._dlq, rules=rules, client=self._client)
        await self._observations.start()
        if settings.ingress.enabled:
            client = self._client
            assert client is not None
            self.requests = self._consumer(
                "ingress.requests",
                settings.kafka.topics.requested,
                settings.ingress.requests_group,
                RequestIngress(client, settings.limits),
            )
            await self.requests.start()
            self.callbacks = self._consumer(
                "ingress.callbacks",
                settings.kafka.topics.callbacks,
                settings.ingress.callbacks_group,
                CallbackIngress(
                    client,
                    resolve_timeout=settings.ingress.resolve_timeout_s,
                    search_attributes=settings.temporal.search_attributes,
                    limits=settings.limits,
                ),
            )
            await self.callbacks.start()
        log.info(
            "bridge running: ledger %s, ingress %s",
            settings.clickhouse.database,
            "on" if settings.ingress.enabled else "off",
        )

    def _consumer(
        self, name: str, topic: str, group: str, handler: RequestIngress | CallbackIngress
    ) -> IngressConsumer:
        return IngressConsumer(
            name=name,
            topic=topic,
            group=group,
            kafka=self._settings.kafka,
            dlq=self._dlq,
            handler=handler,
            order_key=handler.order_key,
            max_records=self._settings.ingress.max_records,
            max_in_flight=self._settings.ingress.max_in_flight,
        )

    async def stop_intake(self) -> None:
        """Stop starting actions and delivering callbacks (the ledger sink goes on)."""
        for consumer in (self.callbacks, self.requests):
            if consumer is not None:
                await consumer.stop()
        self.callbacks = self.requests = None

    async def catch_up(self, timeout: float, progress: Progress = lambda message: None) -> bool:
        """Return once the ledger holds what is on the transition and observation topics
        now (both sinks at once, within `timeout`)."""
        sinks = [k for k in (self._sink, self._observations) if k is not None]
        caught_up = await asyncio.gather(*(k.catch_up(timeout, progress) for k in sinks))
        return bool(sinks) and all(caught_up)

    async def drain(self, progress: Progress = lambda message: None) -> bool:
        """Stop taking new work, write what is on the topics to the ledger (at most
        `KARMA_BRIDGE__DRAIN_TIMEOUT_S`), then stop; False if the time ran out."""
        await self.stop_intake()
        timeout = self._settings.bridge.drain_timeout_s
        sinks = [k for k in (self._sink, self._observations) if k is not None]
        drained = all(await asyncio.gather(*(k.drain(timeout, progress) for k in sinks)))
        self._sink = self._observations = None
        await self.stop()
        return drained

    async def _stop(self) -> None:
        try:
            await self.stop_intake()
            try:
                if self._sink is not None:
                    await self._sink.stop()
            finally:
                if self._observations is not None:
                    await self._observations.stop()
            self._sink = self._observations = None
        finally:
            await self._dlq.stop()
            if self._past is not None:
                self._past.close()

    async def wait(self) -> None:
        """Return when one of the bridge's consumers stops by itself."""
        parts = [
            p
            for p in (self._sink, self._observations, self.requests, self.callbacks)
            if p is not None
        ]
        await first_to_stop(*(p.wait() for p in parts))
