"""A consumer group that hands each message to a handler and commits only what was handled.

Messages with the same order key (callbacks about one action, requests for one action id)
are handled one after the other, in offset order; everything else runs concurrently, up to
`max_in_flight` messages. So one slow message (a callback whose action cannot be found yet)
holds back only the messages about the same thing, never the partition.

A handler either succeeds, rejects the message (`Unusable` or `ValidationError`: it goes to
the DLQ with the reason and the original bytes) or fails for a reason that may pass
(Temporal or Kafka unreachable): then the same message is tried again until it works or the
consumer stops. The committed offset of a partition is the first one not handled yet, so a
crash re-reads rather than loses (and re-reads only what may not have been handled).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from temporalio.service import RPCError, RPCStatusCode

from bridge.consumer_loop import ConsumerLoop
from bridge.dlq import DeadLetter, DeadLetterPublisher
from bridge.inbound import Inbound
from bridge.retrying import Stopped, until_stopped
from karma.errors import ValidationError
from karma.settings import KafkaSettings

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0

Handler = Callable[[Inbound], Awaitable[None]]
OrderKey = Callable[[Inbound], str]

# Temporal answers these while it is unavailable or overloaded: try the message again.
PASSING_RPC_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
    }
)
# UNKNOWN may be a network hiccup or a refusal that will never change: retried a few times.
UNKNOWN_ATTEMPTS = 5


class Unusable(Exception):
    """The message cannot be used as it is; it goes to the DLQ with this reason."""


class _Passing(Exception):
    """A failure that may pass: handle the same message again later."""


def by_partition(message: Inbound) -> str:
    """The default order: a whole partition, one message after the other."""
    return f"{message.topic}:{message.partition}"


class _Watermarks:
    """Per partition: the offsets in hand and the next offset to fetch, so the offset to
    commit is the first one not handled yet."""

    def __init__(self) -> None:
        self._in_hand: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def take(self, tp: TopicPartition, offset: int) -> None:
        self._in_hand.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        self._in_hand.get(tp, set()).discard(offset)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Another member owns these now: what this one still handles is not committed."""
        for tp in partitions:
            self._in_hand.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def to_commit(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Partitions (of those assigned) whose committable offset moved since the last
        commit."""
        out = {}
        for tp, following in self._next.items():
            if tp not in assigned:
                continue
            in_hand = self._in_hand.get(tp)
            offset = min(in_hand) if in_hand else following
            if offset > self._committed.get(tp, -1):
                out[tp] = offset
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)


class _Revoked(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move to another member: commit what is done, forget the rest."""

    def __init__(self, consumer: IngressConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._consumer._commit()
        self._consumer._marks.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class IngressConsumer(ConsumerLoop):
    """Consumes one topic in one consumer group through `handler`."""

    def __init__(
        self,
        *,
        name: str,
        topic: str,
        group: str,
        kafka: KafkaSettings,
        dlq: DeadLetterPublisher,
        handler: Handler,
        max_records: int,
        order_key: OrderKey = by_partition,
        max_in_flight: int = 1000,
    ) -> None:
        super().__init__(name, [topic], group=group, kafka=kafka)
        self._handler = handler
        self._order_key = order_key
        self._dlq = dlq
        self._max_records = max_records
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tails: dict[str, asyncio.Task[None]] = {}  # the last message of each key
        self._in_flight: set[asyncio.Task[None]] = set()
        self._marks = _Watermarks()
        self.handled = 0
        self.dead_lettered = 0
        self._unknown: dict[tuple[str, int, int], int] = {}

    def _listener(self) -> Any:
        return _Revoked(self)

    async def _settle(self, task: asyncio.Task[None]) -> None:
        """Stop fetching, let the messages in hand finish for a moment, then abandon the
        rest uncommitted (they are handled again on the next start, which starts and
        signals tolerate)."""
        await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=STOP_GRACE_SECONDS)
        for running in list(self._in_flight):
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        with contextlib.suppress(KafkaError, OSError):
            await self._commit()

    @property
    def handler(self) -> Handler:
        return self._handler

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def _step(self) -> None:
        fetched = await self.kafka.getmany(timeout_ms=500, max_records=self._max_records)
        for tp, records in fetched.items():
            for record in records:
                await self._slots.acquire()
                self._dispatch(tp, record)
        await self._commit()

    def _dispatch(self, tp: TopicPartition, record: Any) -> None:
        """Handle `record` after the previous message with the same order key."""
        message = Inbound.from_record(record)
        try:
            key = self._order_key(message)
        except Exception:  # noqa: BLE001 - unusable: the handler dead-letters it
            key = f"{tp.topic}:{tp.partition}:{record.offset}"
        self._marks.take(tp, record.offset)
        task = asyncio.create_task(self._after(self._tails.get(key), tp, record, message))
        self._tails[key] = task
        self._in_flight.add(task)
        task.add_done_callback(functools.partial(self._finished, key, tp, record.offset))

    def _finished(
        self, key: str, tp: TopicPartition, offset: int, task: asyncio.Task[None]
    ) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if self._tails.get(key) is task:
            del self._tails[key]
        if task.cancelled():
            return  # stopped: handled again after the restart
        if task.exception() is None:
            self._marks.done(tp, offset)
        else:  # cannot happen by design (_handle retries what is not handled): say so
            log.error(
                "%s: offset %d of %s is held back: %r",
                self.name,
                offset,
                tp,
                task.exception(),
            )

    async def _after(
        self,
        previous: asyncio.Task[None] | None,
        tp: TopicPartition,
        record: Any,
        message: Inbound,
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
            if not previous.done() or previous.cancelled() or previous.exception() is not None:
                raise asyncio.CancelledError  # keep the order: nothing overtakes it
        outcome = await until_stopped(
            f"{self.name}: handle {tp.topic}@{tp.partition}:{record.offset}",
            functools.partial(self._handle, record, message),
            self._stopping,
            (_Passing, KafkaError, OSError),
        )
        if isinstance(outcome, Stopped):
            raise asyncio.CancelledError

    async def _commit(self) -> None:
        offsets = self._marks.to_commit(self.kafka.assignment())
        if await self.commit(offsets):
            self._marks.committed(offsets)

    async def _handle(self, record: Any, message: Inbound) -> None:
        try:
            await self._handler(message)
        except (Unusable, ValidationError) as exc:
            await self._dead_letter(record, str(exc))
        except RPCError as exc:
            position = (record.topic, record.partition, record.offset)
            if exc.status is RPCStatusCode.UNKNOWN:
                self._unknown[position] = self._unknown.get(position, 0) + 1
            if exc.status in PASSING_RPC_STATUSES or (
                exc.status is RPCStatusCode.UNKNOWN and self._unknown[position] < UNKNOWN_ATTEMPTS
            ):
                raise _Passing(f"Temporal: {exc}") from exc
            self._unknown.pop(position, None)
            await self._dead_letter(record, f"Temporal refused it: {exc}")
        except (_Passing, KafkaError, OSError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # A defect, not a passing condition: set the message aside rather than block
            # the partition forever; the DLQ keeps its bytes for a replay after the fix.
            log.exception("%s: unexpected error handling offset %d", self.name, record.offset)
            await self._dead_letter(record, f"unexpected error: {exc!r}")
        else:
            self._unknown.pop((record.topic, record.partition, record.offset), None)
            self.handled += 1

    async def _dead_letter(self, record: Any, reason: str) -> None:
        """Set the message aside; if even that fails, it is tried again later (never
        skipped: its offset stays uncommitted until it is in the DLQ)."""
        try:
            letter = DeadLetter.from_record(record, reason=reason, stage=self.name)
            log.warning("dead letter from %s@%d: %s", letter.topic, letter.offset, reason[:500])
            await self._dlq.send(letter)
        except (KafkaError, OSError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("%s: cannot dead-letter offset %d", self.name, record.offset)
            raise _Passing(f"dead-lettering failed: {exc!r}") from exc
        self.dead_lettered += 1
