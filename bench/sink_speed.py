"""The ledger sink alone, from a topic filled beforehand: transitions written per second
by one process (decode, check, insert into ClickHouse, commit)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.measure import until
from bench.stack import BenchStack
from bridge.decode import decode_transition
from bridge.dlq import DeadLetterPublisher
from bridge.ledger import Ledger
from bridge.ledger_schema import KafkaPosition, ledger_row
from bridge.sink import LedgerSink
from bridge.topics import ensure_topics
from karma import names
from karma.envelope import EventSource, Transition
from karma.kafka_config import client_kwargs, producer_kwargs
from karma.lifecycle import EventType
from karma.settings import BridgeSettings, KafkaTopics, Settings

DECODE, ROW = "decode (untrusted JSON, Transition model)", "ledger row (column checks)"
STEPS = (EventType.REQUESTED, EventType.ACCEPTED, EventType.STARTED, EventType.SUCCEEDED)


def transitions(count: int) -> list[Transition]:
    """`count` transitions of `count // 4` actions, as Karma publishes them."""
    now = datetime.now(UTC)
    out = []
    for i in range(count // len(STEPS)):
        action_id = f"act_bench{i:09d}"
        for seq, event_type in enumerate(STEPS, start=1):
            attrs = {"attempt": 1} if seq > 2 else {"command": "bench.noop", "args": {}}
            out.append(
                Transition(
                    ts=now, event_type=event_type, action_id=action_id, seq=seq,
                    source=EventSource(), tags={"action": "bench.noop", "priority": "normal"},
                    attrs=attrs,
                )
            )  # fmt: skip
    return out


@dataclass
class SinkSpeed:
    written: int
    batch_rows: int
    seconds: float  # from joining the group to the last row written
    stages: dict[str, float]  # microseconds per transition, each stage alone

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    @property
    def python_bound(self) -> float:
        """Transitions per second if the sink did nothing but its Python stages."""
        return 1e6 / (self.stages[DECODE] + self.stages[ROW])


async def sink_throughput(stack: BenchStack, *, count: int) -> SinkSpeed:
    """The sink's rate over a filled topic, then each of its stages timed alone on the same
    messages: what bounds the rate."""
    tag = uuid.uuid4().hex[:8]
    base = stack.settings
    topics = KafkaTopics(
        requested=f"bench.{tag}.requested",
        progress=f"bench.{tag}.progress",
        result=f"bench.{tag}.result",
        dlq=base.kafka.topics.dlq,
        callbacks=f"bench.{tag}.callbacks",
    )
    kafka = base.kafka.model_copy(update={"topics": topics})
    settings = base.model_copy(
        update={
            "kafka": kafka,
            "clickhouse": base.clickhouse.model_copy(update={"database": f"bench_{tag}"}),
            # The sink's defaults (batch size and age), only its own group.
            "bridge": BridgeSettings(consumer_group=f"bench-{tag}"),
        }
    )
    await ensure_topics(kafka)
    events = transitions(count)
    producer = AIOKafkaProducer(
        **{**producer_kwargs(kafka), "max_batch_size": 1_048_576, "linger_ms": 20}
    )
    await producer.start()
    try:
        header = [(names.TRANSITION_HEADER, b"1")]
        sends = [
            await producer.send(
                topics.result if e.event_type is EventType.SUCCEEDED else topics.progress,
                key=e.action_id.encode(), value=e.model_dump_json().encode(), headers=header,
            )
            for e in events
        ]  # fmt: skip
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    dlq = DeadLetterPublisher(kafka)
    sink = LedgerSink(settings, dlq)
    await sink.start()
    try:
        await until("the sink to join its group", lambda: bool(sink.kafka.assignment()))
        first = time.perf_counter()
        await until(
            f"the sink to write {len(events):,} transitions",
            lambda: sink.rows_written + sink.dead_lettered >= len(events),
        )
        seconds = time.perf_counter() - first
        if sink.dead_lettered:
            raise RuntimeError(f"the sink dead-lettered {sink.dead_lettered} transitions")
    finally:
        await sink.stop()
        await dlq.stop()
    stages = await _stages(settings, [topics.progress, topics.result], len(events))
    return SinkSpeed(len(events), settings.bridge.batch_max_rows, seconds, stages)


async def _stages(settings: Settings, topics: list[str], count: int) -> dict[str, float]:
    """Microseconds per transition of each stage of the sink, run alone on the messages:
    decoding and rows in CPU time of the thread that runs them, the fetch and the write
    (ClickHouse's engine has threads of its own) in wall-clock time."""
    size = settings.bridge.batch_max_rows
    consumer = AIOKafkaConsumer(
        *topics, group_id=None, auto_offset_reset="earliest", **client_kwargs(settings.kafka)
    )
    await consumer.start()
    records: list[Any] = []
    began = time.perf_counter()
    try:
        while len(records) < count:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=size)
            for partition_records in fetched.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    consumed = time.perf_counter() - began

    def decode_rows_write() -> dict[str, float]:
        """In batches of the sink's size, as the sink does them."""
        spent = [0.0, 0.0, 0.0]
        ledger = Ledger.open(settings.clickhouse_dsn, settings.clickhouse.database + "_stages")
        try:
            ledger.migrate()
            for first in range(0, len(records), size):
                batch = records[first : first + size]
                began = time.thread_time()
                decoded = [decode_transition(r.value) for r in batch]
                decoded_at = time.thread_time()
                rows = [
                    ledger_row(e, KafkaPosition(r.topic, r.partition, r.offset))
                    for e, r in zip(decoded, batch, strict=True)
                ]
                rows_at = time.thread_time()
                write_began = time.perf_counter()
                ledger.write(rows)
                spent[0] += decoded_at - began
                spent[1] += rows_at - decoded_at
                spent[2] += time.perf_counter() - write_began
        finally:
            ledger.close()
        decode, row, write = (seconds * 1e6 / len(records) for seconds in spent)
        return {
            DECODE: decode,
            ROW: row,
            "ClickHouse write (dedup query, insert; wall-clock)": write,
        }

    fetch = {"Kafka fetch (wall-clock)": consumed * 1e6 / len(records)}
    return fetch | await asyncio.to_thread(decode_rows_write)
