"""`scan_entropy`: the entropy scan's one activity, run by a worker of the process that
reads the ledger (the bridge's, or `karma dev`'s).

Window after window: deviations are stored, then published to `entropy.deviation` (key:
the entity id, acknowledged by every replica), then the rules decide on them, then the
window is recorded as scanned. A crash in between scans the window again: the same
deviation ids (the same rows and messages again, byte for byte, unless late observations
changed what the window holds), and the rules deduplicate what they already did. A
retried attempt resumes after the last batch of windows its heartbeat recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import DatabaseError, ProgrammingError
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from bridge.entropy import Deviation, Scanner
from bridge.producer import LazyProducer
from bridge.rule_engine import RuleEngine
from karma import names
from karma.errors import LedgerUnavailableError
from karma.rules import scheduled_event
from karma.settings import KafkaSettings
from karma.workflow_io import EntropyScanInput, EntropyScanOutput, RuleFiring, RuleFiringOutput

TOP = 20  # deviations (and rule decisions) returned, the most surprising first
CHUNK_WINDOWS = 12  # found in one pass between heartbeats


class EntropyActivities:
    def __init__(
        self,
        scanner: Callable[[], Scanner],
        kafka: KafkaSettings,
        rules: Callable[[], RuleEngine | None] = lambda: None,
    ) -> None:
        self._scanner = scanner
        self._rules = rules
        self._one_scan = asyncio.Lock()  # scans share a ledger connection, and their work
        self._topic = kafka.topics.deviations
        self._producer = LazyProducer(kafka)  # acks="all", as every producer of ours

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, deviations: list[Deviation]) -> int:
        producer = await self._producer.get()
        sent = [
            await producer.send(
                self._topic,
                key=d.entity_id.encode(),
                value=d.envelope().model_dump_json().encode(),
            )
            for d in deviations
        ]
        await asyncio.gather(*sent)
        return len(sent)

    @activity.defn(name=names.SCAN_ENTROPY)
    async def scan_entropy(self, inp: EntropyScanInput) -> EntropyScanOutput:
        """Only infrastructure failures (ClickHouse, Kafka, the network) are retried; any
        other error fails the scan at once, with its reason."""
        try:
            async with self._one_scan:
                return await self._scan(inp)
        except ProgrammingError as exc:  # a query ClickHouse cannot run: no retry will
            raise ApplicationError(f"the scan failed: {exc}", non_retryable=True) from exc
        except (OSError, TimeoutError, KafkaError, DatabaseError, LedgerUnavailableError, RPCError):
            raise  # infrastructure (ClickHouse, Kafka, Temporal): retried
        except Exception as exc:
            raise ApplicationError(
                f"the scan failed: {exc!r}", type=type(exc).__name__, non_retryable=True
            ) from exc

    @activity.defn(name=names.FIRE_RULE)
    async def fire_rule(self, inp: RuleFiring) -> RuleFiringOutput:
        """A schedule trigger's firing, decided like any event (deduplicated by its time)."""
        engine = self._rules()
        if engine is None or inp.at is None:
            raise ApplicationError("no rules are loaded here", non_retryable=True)
        if inp.rule not in {r.name for r in engine.rules.scheduled}:
            raise ApplicationError(f"no schedule rule named {inp.rule!r}", non_retryable=True)
        decided = await engine.handle([scheduled_event(inp.rule, inp.at)])
        return RuleFiringOutput(decision=decided[0].as_json() if decided else {})

    async def _scan(self, inp: EntropyScanInput) -> EntropyScanOutput:
        scanner = self._scanner()
        out = EntropyScanOutput()
        found: list[Deviation] = []
        now = datetime.now(UTC)
        if inp.since is not None:
            windows = scanner.windows_between(inp.since, min(inp.until or now, now))
            limit = scanner.settings.max_backfill_windows
            if len(windows) > limit:
                raise ApplicationError(
                    f"a backfill of {len(windows)} windows: at most {limit} in one scan "
                    "(KARMA_ENTROPY__MAX_BACKFILL_WINDOWS); scan a shorter --since..--until",
                    type="ValidationError",
                    non_retryable=True,
                )
        else:
            windows = await asyncio.to_thread(scanner.pending_windows, now)
        # A retried attempt goes on after the last window the previous one finished.
        done = activity.info().heartbeat_details
        if done and done[0] and not inp.dry_run:
            finished = datetime.fromisoformat(str(done[0]))
            windows = [w for w in windows if w[0] >= finished]
        for first in range(0, len(windows), CHUNK_WINDOWS):
            chunk = windows[first : first + CHUNK_WINDOWS]
            for start, end, deviations, seen, learned in await asyncio.to_thread(
                scanner.detect_many, chunk
            ):
                if not inp.dry_run:
                    await asyncio.to_thread(scanner.store, deviations)
                    out.published += await self.publish(deviations)
                    if (engine := self._rules()) is not None:
                        decided = await engine.handle([d.envelope() for d in deviations])
                        out.decisions += [d.as_json() for d in decided][: TOP - len(out.decisions)]
                    await asyncio.to_thread(scanner.mark_scanned, start, end, deviations, seen)
                    activity.heartbeat(end.isoformat())
                out.windows.append((start, end))
                out.observations += seen
                out.baselines_learned += learned
                found.extend(deviations)
            activity.heartbeat("" if inp.dry_run else chunk[-1][1].isoformat())
        found.sort(key=lambda d: -d.surprise_bits)
        out.deviations = len(found)
        out.top = [d.as_json() for d in found[:TOP]]
        return out
