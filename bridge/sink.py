"""The ledger sink: a Kafka consumer group writing transitions into ClickHouse in batches.

Offsets are committed only after ClickHouse accepted the batch (and the dead letters of the
batch were acknowledged), so a crash at any point re-reads rather than loses; the ledger
skips event ids it already holds, so re-reading never duplicates.

No message can stop the sink: one that cannot be decoded, or that ClickHouse cannot store
(found by inserting halves of the batch until the row is alone), goes to the DLQ with the
reason and its original bytes. Only infrastructure failures (Kafka or ClickHouse
unreachable) are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import DatabaseError, DataError
from temporalio.service import RPCError

from bridge.consumer_loop import ConsumerLoop, group_caught_up
from bridge.decode import decode_transition
from bridge.dlq import LEDGER_STAGE as STAGE
from bridge.dlq import OBSERVATIONS_STAGE, DeadLetter, DeadLetterPublisher
from bridge.inbound import marked_as_transition
from bridge.ledger import Ledger
from bridge.ledger_schema import INSERT_COLUMNS, KafkaPosition, ledger_row, observation_row
from bridge.predictions import Predictor
from bridge.producer import LazyProducer
from bridge.retrying import Stopped, until_stopped
from bridge.rule_engine import RuleEngine
from karma import metrics
from karma.client import KarmaClient
from karma.envelope import Envelope
from karma.errors import ValidationError
from karma.lifecycle import TERMINAL_STATES, EventType
from karma.observations import decode_observation
from karma.rules import RuleSet
from karma.settings import Settings
from karma.telemetry import spans_in_traces

log = logging.getLogger(__name__)
TRACE_COLUMN = INSERT_COLUMNS.index("trace_id")
TYPE_COLUMN, EVENT_COLUMN, STATE_COLUMN = (
    INSERT_COLUMNS.index(name) for name in ("action_type", "event_type", "state")
)
STARTED, TERMINAL = EventType.STARTED.value, {s.value for s in TERMINAL_STATES}


def count_stored(rows: list[list[Any]]) -> None:
    """The metrics of transitions the ledger took (each once)."""
    for row in rows:
        metrics.TRANSITIONS_STORED.labels(row[EVENT_COLUMN]).inc()
        if row[EVENT_COLUMN] == STARTED:
            metrics.ACTIONS_STARTED.labels(row[TYPE_COLUMN]).inc()
        elif row[STATE_COLUMN] in TERMINAL:
            metrics.ACTIONS_ENDED.labels(row[TYPE_COLUMN], row[STATE_COLUMN]).inc()


T = TypeVar("T")
# A poll that long with nothing new means the topic is quiet: the batch is written.
QUIET_SECONDS = 0.05
Progress = Callable[[str], None]
# Unreachable or failing servers: the same batch is tried again. Errors the server (or
# chdb's engine) reports count as such too: every row was checked against the column
# types first (`ledger_row`), so what the server refuses is not one row's fault.
RETRYABLE = (OSError, KafkaError, DatabaseError)
# ClickHouse takes rows of at most 100 partitions (months) in one insert: the batch is split.
TOO_MANY_PARTITIONS = "Too many partitions for single INSERT block"
# Raised while the client serialises a row: that row can never be stored.
ROW_ERRORS = (DataError, UnicodeError, ValueError, struct.error)


@dataclass
class _Refused:
    """ClickHouse's client could not serialise one of the rows."""

    error: Exception


class LedgerSink(ConsumerLoop):
    """Consumes the transition topics and writes them to the ledger (`action_events`).
    Subclasses write other topics to other tables the same way (`ObservationSink`)."""

    stage = STAGE  # of its dead letters
    label, unit = "ledger", "transition(s)"  # in progress messages

    def __init__(
        self,
        settings: Settings,
        dlq: DeadLetterPublisher,
        *,
        name: str = "ledger-sink",
        topics: list[str] | None = None,
        group: str | None = None,
    ) -> None:
        kafka_topics = settings.kafka.topics
        super().__init__(
            name,
            topics or [kafka_topics.requested, kafka_topics.progress, kafka_topics.result],
            group=group or settings.bridge.consumer_group,
            kafka=settings.kafka,
        )
        self._settings = settings
        self._ledger: Ledger | None = None
        self._dlq = dlq
        # The ClickHouse client is blocking: one thread makes all of the sink's calls.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._idle = asyncio.Event()  # set by each poll that finds nothing new
        self.batches_written = 0
        self.rows_written = 0
        self.dead_lettered = 0

    async def _start(self) -> None:
        """Open the ledger (bringing its schema up to date), then join the consumer group."""
        clickhouse = self._settings.clickhouse
        self._ledger = await self._in_db(
            Ledger.open, self._settings.clickhouse_dsn, clickhouse.database
        )
        await self._in_db(self._ledger.migrate)
        await super()._start()

    async def _stop(self) -> None:
        try:
            await super()._stop()
        finally:
            if self._ledger is not None:
                await self._in_db(self._ledger.close)
                self._ledger = None
            self._db.shutdown(wait=True)

    async def _observe_lag(self) -> None:
        """The lag gauge, from what the consumer knows already (the high watermarks of its
        last fetches): no request to the broker."""
        behind = 0
        try:
            for tp in self.kafka.assignment():
                high = self.kafka.highwater(tp)
                if high is not None:
                    behind += max(0, high - await self.kafka.position(tp))
        except KafkaError as exc:  # a rebalance meanwhile: the next batch tells
            log.debug("lag not observed: %r", exc)
            return
        metrics.SINK_LAG.labels(self.label).set(behind)

    async def lag(self) -> int | None:
        """Records on the sink's partitions not committed to the ledger yet (as far as the
        broker's end offsets tell: they can trail what is readable); None while the sink
        has no partitions yet (it is joining its group)."""
        assigned = list(self.kafka.assignment()) if self._consumer is not None else []
        if not assigned:
            return None
        ends = await self.kafka.end_offsets(assigned)
        behind = 0
        for tp in assigned:  # asked each time: after a rebalance another member committed
            behind += max(0, ends[tp] - (await self.kafka.committed(tp) or 0))
        return behind

    async def catch_up(self, timeout: float, progress: Progress = lambda message: None) -> bool:
        """Return once what is on the topics now is in the ledger; False if `timeout` ran
        out first.

        Batches are written as soon as a poll finds nothing more, and the sink waits for an
        empty poll after the end offsets are reached (they can trail what is readable).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reported: int | None = -1
        while self._task is not None and not self._task.done():
            self._idle.clear()
            behind = await self._retry_lag()
            try:  # one more empty poll after the end offsets were read
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return False
            if behind == 0:
                return True
            if behind is not None and behind != reported:
                progress(f"{self.label}: {behind} {self.unit} left to write")
                reported = behind
        return False

    async def drain(self, timeout: float, progress: Progress = lambda message: None) -> bool:
        """Write what is on the topics now (`catch_up`), then stop."""
        caught_up = await self.catch_up(timeout, progress)
        progress(
            f"{self.label}: caught up" if caught_up else f"{self.label}: gave up after {timeout:g}s"
        )
        await self.stop()
        return caught_up

    async def _retry_lag(self) -> int | None:
        try:
            return await self.lag()
        except (KafkaError, OSError) as exc:
            log.warning("cannot read end offsets: %r", exc)
            return None

    async def _step(self) -> None:
        batch = await self._next_batch()
        if not batch:
            self._idle.set()
        else:
            await self._write(batch)  # False: stopped before it was stored (re-read later)

    async def _next_batch(self) -> list[Any]:
        """Wait for records, then keep collecting while more keep coming, until the batch is
        full or `batch_max_seconds` old: a quiet topic is written at once (a transition is
        in the ledger within a poll of arriving), a busy one in full batches."""
        bridge = self._settings.bridge
        records: list[Any] = []
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while len(records) < bridge.batch_max_rows and not self._stopping.is_set():
            wait = 0.5 if deadline is None else min(QUIET_SECONDS, deadline - loop.time())
            if wait <= 0:
                break
            fetched = await self.kafka.getmany(
                timeout_ms=int(wait * 1000), max_records=bridge.batch_max_rows - len(records)
            )
            if not fetched:
                break  # nothing more now: write what there is (an empty batch: idle)
            for partition_records in fetched.values():
                records.extend(partition_records)
            if deadline is None:
                deadline = loop.time() + bridge.batch_max_seconds
        return records

    async def _write(self, records: list[Any]) -> bool:
        """Write one batch; False if the sink was stopped before the batch was stored."""
        entries, letters = self._decode(records)
        refused = await self._insert(entries)
        if isinstance(refused, Stopped):
            return False
        for letter in letters + refused:
            log.warning("dead letter from %s@%d: %s", letter.topic, letter.offset, letter.reason)
            sent = await self._retry("publish a dead letter", lambda: self._dlq.send(letter))  # noqa: B023
            if isinstance(sent, Stopped):
                return False
            self.dead_lettered += 1
        await self._commit(records)
        self.batches_written += 1
        metrics.SINK_BATCH.labels(self.label).observe(len(records))
        await self._observe_lag()
        log.info(
            "%s batch committed: %d records, %d dead letters",
            self.label,
            len(records),
            len(letters) + len(refused),
        )
        return True

    def _decode(self, records: list[Any]) -> tuple[list[tuple[Any, list[Any]]], list[DeadLetter]]:
        """Rows for the transitions, dead letters for what cannot be used. On
        `actions.requested` only what carries the transition header is the sink's (the rest
        are requests, the ingress's): told apart without parsing."""
        entries: list[tuple[Any, list[Any]]] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                row = self._row(record)
            except ValidationError as exc:
                letters.append(DeadLetter.from_record(record, reason=str(exc), stage=self.stage))
            except Exception as exc:
                # A defect in decoding: set the message aside rather than stop the ledger.
                log.exception("unexpected error decoding %s@%d", record.topic, record.offset)
                reason = f"unexpected error decoding it: {exc!r}"
                letters.append(DeadLetter.from_record(record, reason=reason, stage=self.stage))
            else:
                if row is not None:
                    entries.append((record, row))
        return entries, letters

    def _row(self, record: Any) -> list[Any] | None:
        """The row of a record; None for a record that is not the sink's.

        Raises:
            karma.errors.ValidationError: a record the sink cannot use.
        """
        requested = self._settings.kafka.topics.requested
        if record.topic == requested and not marked_as_transition(record.headers or ()):
            return None
        event = decode_transition(record.value, self._settings.limits)
        return ledger_row(event, KafkaPosition(record.topic, record.partition, record.offset))

    def _store(self, ledger: Ledger, rows: list[list[Any]]) -> int:
        """Write the rows (skipping those stored already); how many were new. Each traced
        action in the batch gets a span for the insert, in its own trace."""
        traces = (row[TRACE_COLUMN] for row in rows if row[TRACE_COLUMN])
        with spans_in_traces("ledger.insert", traces, **{"db.system": "clickhouse"}):
            stored = ledger.write_new(rows)
        count_stored(stored)
        return len(stored)

    async def _insert(self, entries: list[tuple[Any, list[Any]]]) -> list[DeadLetter] | Stopped:
        """Insert the rows; the dead letters of rows ClickHouse cannot take, each found by
        inserting halves until it is alone."""
        if not entries:
            return []
        assert self._ledger is not None, "start() opens the ledger"
        ledger = self._ledger
        rows = [row for _, row in entries]

        async def attempt() -> int | _Refused:
            try:
                return await self._in_db(self._store, ledger, rows)
            except ROW_ERRORS as exc:
                return _Refused(exc)
            except DatabaseError as exc:
                if TOO_MANY_PARTITIONS in str(exc):  # the batch's times span too many months
                    return _Refused(exc)  # halves go in (a row alone always does)
                raise

        written = await self._retry("write to ClickHouse", attempt)
        if isinstance(written, Stopped):
            return written
        if not isinstance(written, _Refused):
            self.rows_written += written
            return []
        if len(entries) == 1:
            reason = f"ClickHouse cannot store it: {written.error}"
            return [DeadLetter.from_record(entries[0][0], reason=reason, stage=self.stage)]
        middle = len(entries) // 2
        letters: list[DeadLetter] = []
        for half in (entries[:middle], entries[middle:]):
            refused = await self._insert(half)
            if isinstance(refused, Stopped):
                return refused
            letters += refused
        return letters

    async def _commit(self, records: list[Any]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await self.commit(offsets)

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T | Stopped:
        return await until_stopped(what, attempt, self._stopping, RETRYABLE)


OBSERVATION_RULES = frozenset({"observation"})  # the others decide in the scan


class ObservationSink(LedgerSink):
    """Consumes `events.normalized` and writes the observations to `observations`: what
    cannot be used as one goes to the DLQ with the reason; duplicates collapse on event_id.

    Before a batch is stored, its steps' predictions go to `entropy.predicted` and the
    rules on observations decide (when a rules file and a client are given): at least once,
    since the batch is read again after a crash (predictions are the same messages again;
    the rules deduplicate)."""

    stage = OBSERVATIONS_STAGE
    label, unit = "observations", "observation(s)"

    def __init__(
        self,
        settings: Settings,
        dlq: DeadLetterPublisher,
        *,
        rules: RuleSet | None = None,
        client: KarmaClient | None = None,
    ) -> None:
        super().__init__(
            settings,
            dlq,
            name="observation-sink",
            topics=[settings.kafka.topics.observations],
            group=settings.bridge.observations_group,
        )
        self._predictor = Predictor(settings.entropy)
        self._producer = LazyProducer(settings.kafka)
        self._rules = rules if client is not None else None
        self._client = client
        self._engine: RuleEngine | None = None
        self._engine_ledger: Ledger | None = None
        self.predicted = 0

    async def _stop(self) -> None:
        try:
            await super()._stop()
        finally:
            await self._producer.stop()
            if self._engine_ledger is not None:
                self._engine_ledger.close()

    def _row(self, record: Any) -> list[Any] | None:
        event = decode_observation(record.value, self._settings.limits)
        return observation_row(event, KafkaPosition(record.topic, record.partition, record.offset))

    def _store(self, ledger: Ledger, rows: list[list[Any]]) -> int:
        return ledger.write_observations(rows)

    async def _write(self, records: list[Any]) -> bool:
        events = []
        for record in records:
            with contextlib.suppress(Exception):  # the unusable go to the DLQ below
                events.append(decode_observation(record.value, self._settings.limits))
        if events:
            done = await until_stopped(
                "publish predictions and apply rules",
                lambda: self._react(events),
                self._stopping,
                (*RETRYABLE, RPCError),
            )
            if isinstance(done, Stopped):
                return False
        return await super()._write(records)

    async def _react(self, events: list[Envelope]) -> None:
        assert self._ledger is not None, "start() opens the ledger"
        predicted = await self._in_db(self._predictor.predictions, self._ledger, events)
        if predicted:
            producer = await self._producer.get()
            topic = self._settings.kafka.topics.predictions
            sent = [
                await producer.send(
                    topic, key=p.entity_id.encode(), value=p.model_dump_json().encode()
                )
                for p in predicted
            ]
            await asyncio.gather(*sent)
            self.predicted += len(sent)
        if self._rules is not None and self._client is not None:
            if self._engine is None:
                clickhouse = self._settings.clickhouse
                self._engine_ledger = await asyncio.to_thread(
                    Ledger.open, self._settings.clickhouse_dsn, clickhouse.database
                )
                self._engine = RuleEngine(
                    self._rules, self._engine_ledger, self._client, kinds=OBSERVATION_RULES
                )
            await self._engine.handle(events)


async def ledger_lag_settled(settings: Settings, timeout: float = 30.0) -> bool:
    """Wait until the ledger's consumer group (maybe in another process) has caught up
    with the transition topics; False if it did not in time."""
    topics = settings.kafka.topics
    return await group_caught_up(
        settings.kafka,
        settings.bridge.consumer_group,
        [topics.requested, topics.progress, topics.result],
        timeout,
    )
