"""One source of live transitions per process, shared by every event stream the API serves.

A single Kafka consumer (no group: each API process sees everything) reads the transition
topics from their end and hands each transition to the subscribers of its action. Records
are keyed by action id, so a record nobody follows is skipped without being parsed; one that
cannot be parsed is skipped too (the ledger sink dead-letters it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from bridge.decode import decode_transition
from bridge.inbound import marked_as_transition
from karma.component import Component
from karma.envelope import Transition
from karma.errors import ValidationError
from karma.kafka_config import client_kwargs
from karma.settings import Settings

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000  # transitions of one action waiting for a slow subscriber


class Subscription:
    """The transitions of one action as the hub sees them. A subscriber that falls more
    than QUEUE_SIZE behind is marked `overflowed` (it reads what it missed elsewhere)."""

    def __init__(self, action_id: str) -> None:
        self.action_id = action_id
        # None: the process is stopping; the stream ends (its client resumes elsewhere).
        self.queue: asyncio.Queue[Transition | None] = asyncio.Queue(QUEUE_SIZE + 1)
        self.overflowed = False
        self.ending = False

    def offer(self, transition: Transition) -> None:
        if self.queue.qsize() >= QUEUE_SIZE:
            self.overflowed = True
        else:
            self.queue.put_nowait(transition)

    def end(self) -> None:
        self.ending = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class TransitionHub(Component):
    """Fans transitions out from one Kafka consumer to any number of subscribers."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._subscribers: dict[str, set[Subscription]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self.delivered = 0
        self._gone = asyncio.Event()  # set when the last subscriber leaves
        self._ending = False  # the process is stopping: new streams end at once

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def _start(self) -> None:
        self._ending = False
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="transition-hub")

    async def ready(self, timeout: float = 30.0) -> None:
        """Return once the hub reads from the end of every transition topic.

        Raises:
            TimeoutError: Kafka did not answer in time.
        """
        assert self._ready is not None, "start() first"
        await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def end_streams(self, timeout: float) -> None:
        """Tell every subscriber to end its stream (the process is stopping) and wait up to
        `timeout` for them to go; their clients resume elsewhere with Last-Event-ID."""
        self._ending = True
        for followers in self._subscribers.values():
            for subscription in followers:
                subscription.end()
        if self._subscribers:
            self._gone.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone.wait(), timeout)

    @contextlib.asynccontextmanager
    async def subscribe(self, action_id: str) -> AsyncIterator[Subscription]:
        """Transitions of `action_id` recorded from now on, until the block ends."""
        await self.ready()
        subscription = Subscription(action_id)
        if self._ending:
            subscription.end()
        self._subscribers.setdefault(action_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            followers = self._subscribers.get(action_id, set())
            followers.discard(subscription)
            if not followers:
                self._subscribers.pop(action_id, None)
            if not self._subscribers:
                self._gone.set()

    async def _run(self) -> None:
        topics = self._settings.kafka.topics
        while True:  # until cancelled: Kafka may be down when the API starts
            try:
                await self._consume([topics.requested, topics.progress, topics.result])
            except (KafkaError, OSError) as exc:
                log.warning("transition hub: Kafka failed (%r); reconnecting in 1s", exc)
                # It reads from the end again: every subscriber re-reads what it missed.
                for followers in self._subscribers.values():
                    for subscription in followers:
                        subscription.overflowed = True
                if self._consumer is not None:
                    with contextlib.suppress(KafkaError, OSError):
                        await self._consumer.stop()
                    self._consumer = None
                await asyncio.sleep(1.0)

    async def _consume(self, topics: list[str]) -> None:
        self._consumer = consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **client_kwargs(self._settings.kafka),
        )
        await consumer.start()
        consumer.subscribe(topics)
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for partition in consumer.assignment():
            await consumer.position(partition)  # the end, fixed before anyone subscribes
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in fetched.values():
                for record in records:
                    self._dispatch(record)

    def _dispatch(self, record: Any) -> None:
        if record.key is None:
            return
        followers = self._subscribers.get(record.key.decode("utf-8", errors="replace"))
        if not followers:
            return
        requested = self._settings.kafka.topics.requested
        if record.topic == requested and not marked_as_transition(record.headers or ()):
            return  # a request, not a transition
        try:
            transition = decode_transition(record.value, self._settings.limits)
        except ValidationError:
            return  # not a transition anyone can use: the sink dead-letters it
        for subscription in list(followers):
            subscription.offer(transition)
            self.delivered += 1
