"""The action ledger in ClickHouse: writing transitions and reading them back.

Blocking: clickhouse-connect's client is synchronous (and chdb's is in-process), so async
code calls these methods off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from bridge.ledger_schema import (
    INSERT_COLUMNS,
    LATEST,
    MIGRATIONS,
    OBSERVATION_INSERT_COLUMNS,
    TABLE_MIGRATIONS,
    bookkeeping_statements,
)
from karma import names
from karma.envelope import EventSource, Transition
from karma.errors import LedgerUnavailableError
from karma.lifecycle import TERMINAL_STATES, EventType

T = TypeVar("T")


@dataclass(frozen=True)
class LedgerEvent:
    """A transition as read back from ClickHouse."""

    action_id: str
    seq: int
    ts: datetime
    event_type: str
    state: str
    action_type: str
    attempt: int
    error_type: str
    error_message: str
    attrs: dict[str, Any]
    duration_ms: int = 0
    trace_id: str = ""  # the action's OpenTelemetry trace ("" untraced)

    def as_json(self) -> dict[str, Any]:
        """As `karma ledger --json` prints it and the API serves it."""
        return {**self.__dict__, "ts": self.ts.isoformat()}


CHDB_SCHEME = "chdb://"


def embedded_path(dsn: str) -> Path | None:
    """The data path of an embedded (chdb) DSN on disk; None for servers and memory."""
    if not dsn.startswith(CHDB_SCHEME):
        return None
    rest = dsn.removeprefix(CHDB_SCHEME)
    return Path(rest.split("?")[0]) if rest.startswith("/") else None


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Keep what native code writes to file descriptor 2 off the terminal (Python's own
    `sys.stderr` is untouched)."""
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _ledger_event(row: dict[str, Any]) -> LedgerEvent:
    ts = row["ts"]
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts  # the column is UTC
    return LedgerEvent(**{**row, "ts": ts, "attrs": json.loads(row["attrs"])})


def _action_event(row: dict[str, Any]) -> Transition:
    ts = row["ts"]
    return Transition(
        ts=ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts,
        event_type=row["event_type"],
        action_id=row["action_id"],
        seq=row["seq"],
        entity_id=row["entity_id"],
        correlation_id=row["correlation_id"],
        idempotency_key=row["idempotency_key"],
        tags=dict(row["tags"]),
        attrs=json.loads(row["attrs"]),
        source=EventSource(system=row["source_system"]),
    )


class Ledger:
    """Reads and writes the ledger tables through one clickhouse-connect client."""

    def __init__(self, client: Client, database: str = names.LEDGER_DATABASE) -> None:
        self._client = client
        self.database = database
        self._events = f"{database}.{names.TABLE_ACTION_EVENTS}"
        self._current = f"{database}.{names.TABLE_ACTION_STATE_CURRENT}"
        self._migrations = f"{database}.{TABLE_MIGRATIONS}"
        self._observations = f"{database}.{names.TABLE_OBSERVATIONS}"

    @classmethod
    def open(cls, dsn: str, database: str = names.LEDGER_DATABASE) -> Ledger:
        """Connect (`chdb:///path` is the embedded engine; one process owns a path)."""
        return cls(clickhouse_connect.get_client(dsn=dsn), database)

    @classmethod
    def open_existing(cls, dsn: str, database: str = names.LEDGER_DATABASE) -> Ledger:
        """Connect to a ledger that must exist already, for reading it.

        Raises:
            karma.errors.LedgerUnavailableError: in one line an operator can act on: there
                is no ledger there, another process holds it, or the server is unreachable.
        """
        path = embedded_path(dsn)
        if path is not None and not path.exists():
            raise LedgerUnavailableError(
                f"no ledger at {path}: it is created by `karma dev` (or `karma demo --keep`); "
                "run Karma from its data dir or set KARMA_DATA_DIR or KARMA_CLICKHOUSE__DSN"
            )
        try:
            with quiet_stderr():  # chdb prints its own error there before raising
                ledger = cls.open(dsn, database)
        except Exception as exc:
            if path is not None:
                raise LedgerUnavailableError(
                    f"the ledger at {path} is held by another process (a running `karma dev`?): "
                    "embedded ClickHouse lets one process open it; stop that process first, "
                    "or use a ClickHouse server (KARMA_CLICKHOUSE__DSN)"
                ) from exc
            raise LedgerUnavailableError(f"cannot reach the ledger's ClickHouse: {exc}") from exc
        if not ledger.exists():
            ledger.close()
            raise LedgerUnavailableError(
                f"the ledger has no {database!r} database yet (`karma setup` creates it)"
            )
        return ledger

    def exists(self) -> bool:
        result = self._client.query(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(table)s",
            parameters={"db": self.database, "table": names.TABLE_ACTION_EVENTS},
        )
        return bool(result.result_rows[0][0])

    def close(self) -> None:
        self._client.close()

    def migrate(self, upto: int = LATEST) -> list[int]:
        """Apply the migrations up to `upto` this ledger has not had yet, in order; return
        their versions (creating the database and the ledger on a new one)."""
        for statement in bookkeeping_statements(self.database):
            self._client.command(statement)
        applied = set(self.migrations())
        done = []
        for migration in MIGRATIONS:
            if migration.version in applied or migration.version > upto:
                continue
            for statement in migration.statements(self.database):
                self._client.command(statement)
            self._client.insert(
                self._migrations,
                [[migration.version, migration.description]],
                column_names=["version", "description"],
            )
            done.append(migration.version)
        return done

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """A read-only query's rows (analytics, the benchmark)."""
        return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]

    def named_rows(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """A read-only query's rows, each by column name (analytics)."""
        result = self._client.query(sql, parameters=parameters, settings=settings)
        return list(result.named_results())

    def insert_rows(self, table: str, rows: Sequence[list[Any]], columns: list[str]) -> None:
        """Insert rows into a table of this ledger's database (the entropy layer's)."""
        self._client.insert(f"{self.database}.{table}", list(rows), column_names=columns)

    def require_migration(self, version: int, what: str) -> None:
        """Raise unless this ledger has had migration `version` (what `what` reads).

        Raises:
            karma.errors.LedgerUnavailableError: a ledger not migrated that far yet.
        """
        applied = self.migrations()
        if version not in applied:
            raise LedgerUnavailableError(
                f"the ledger is at migration {max(applied, default=0)}; {what} needs "
                f"migration {version} (run `karma setup`, or start the bridge)"
            )

    def migrations(self) -> list[int]:
        """The versions of the migrations this ledger has had."""
        result = self._client.query(f"SELECT version FROM {self._migrations} FINAL ORDER BY 1")
        return [int(row[0]) for row in result.result_rows]

    def known_event_ids(self, action_ids: Sequence[str]) -> set[str]:
        known: set[str] = set()
        for chunk in _chunks(sorted(set(action_ids))):
            result = self._client.query(
                f"SELECT event_id FROM {self._events} WHERE action_id IN %(ids)s",
                parameters={"ids": chunk},
            )
            known.update(row[0] for row in result.result_rows)
        return known

    def write(self, rows: Sequence[list[Any]]) -> int:
        """Insert the rows whose event id is not in the ledger yet; return how many."""
        return len(self.write_new(rows))

    def write_new(self, rows: Sequence[list[Any]]) -> list[list[Any]]:
        """Insert the rows whose event id is not in the ledger yet; return them."""
        fresh: dict[str, list[Any]] = {}
        for row in rows:
            fresh.setdefault(row[0], row)
        known = self.known_event_ids([row[1] for row in fresh.values()])
        new_rows = [row for event_id, row in fresh.items() if event_id not in known]
        if new_rows:
            self._client.insert(self._events, new_rows, column_names=INSERT_COLUMNS)
        return new_rows

    def insert_unchecked(self, rows: Sequence[list[Any]]) -> None:
        """Insert rows without looking for those stored already, as two sinks racing in a
        rebalance would (tests of what the views make of duplicates)."""
        self._client.insert(self._events, list(rows), column_names=INSERT_COLUMNS)

    def write_observations(self, rows: Sequence[list[Any]]) -> int:
        """Insert the observations whose event id is not stored yet; return how many."""
        fresh: dict[str, list[Any]] = {}
        for row in rows:
            fresh.setdefault(row[0], row)
        known: set[str] = set()
        for chunk in _chunks(sorted(fresh)):
            result = self._client.query(
                f"SELECT event_id FROM {self._observations} WHERE event_id IN %(ids)s",
                parameters={"ids": chunk},
            )
            known.update(row[0] for row in result.result_rows)
        new_rows = [row for event_id, row in fresh.items() if event_id not in known]
        if new_rows:
            self._client.insert(
                self._observations, new_rows, column_names=OBSERVATION_INSERT_COLUMNS
            )
        return len(new_rows)

    def observations(
        self, *, correlation_id: str | None = None, entity_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Observations in time order (of one run, or of one entity, or all)."""
        where, parameters = [], {}
        if correlation_id is not None:
            where.append("correlation_id = %(correlation)s")
            parameters["correlation"] = correlation_id
        if entity_id is not None:
            where.append("entity_id = %(entity)s")
            parameters["entity"] = entity_id
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        result = self._client.query(
            f"SELECT * EXCEPT (ingested_at) FROM {self._observations} FINAL {clause} "
            "ORDER BY ts, event_id",
            parameters=parameters,
        )
        return [dict(row) for row in result.named_results()]

    def transitions(self, action_ids: Sequence[str] | None = None) -> list[LedgerEvent]:
        """Transitions in (action, seq) order, for the given actions or all of them."""
        selected = "action_id, seq, ts, event_type, state, action_type, attempt, error_type, "
        selected += "error_message, attrs, duration_ms, trace_id"
        if action_ids is None:
            result = self._client.query(
                f"SELECT {selected} FROM {self._events} FINAL ORDER BY action_id, seq"
            )
            return [_ledger_event(row) for row in result.named_results()]
        events: list[LedgerEvent] = []
        for chunk in _chunks(sorted(set(action_ids))):  # sorted chunks: still in order
            result = self._client.query(
                f"SELECT {selected} FROM {self._events} FINAL WHERE action_id IN %(ids)s "
                "ORDER BY action_id, seq",
                parameters={"ids": chunk},
            )
            events += [_ledger_event(row) for row in result.named_results()]
        return events

    def count_events(self, action_ids: Sequence[str]) -> int:
        """Rows as stored (no FINAL): a duplicate would count twice."""
        count = 0
        for chunk in _chunks(sorted(set(action_ids))):
            result = self._client.query(
                f"SELECT count() FROM {self._events} WHERE action_id IN %(ids)s",
                parameters={"ids": chunk},
            )
            count += int(result.result_rows[0][0])
        return count

    def current_states(self, action_ids: Sequence[str]) -> dict[str, str]:
        states: dict[str, str] = {}
        for chunk in _chunks(sorted(set(action_ids))):
            result = self._client.query(
                f"SELECT action_id, state FROM {self._current} FINAL WHERE action_id IN %(ids)s",
                parameters={"ids": chunk},
            )
            states.update({row[0]: row[1] for row in result.result_rows})
        return states

    def seqs(self, action_ids: Sequence[str]) -> dict[str, set[int]]:
        """The seqs the ledger holds for each of the actions (absent: none)."""
        out: dict[str, set[int]] = {}
        for chunk in _chunks(sorted(set(action_ids))):
            result = self._client.query(
                f"SELECT action_id, groupUniqArray(seq) FROM {self._events} "
                "WHERE action_id IN %(ids)s GROUP BY action_id",
                parameters={"ids": chunk},
            )
            out.update({row[0]: set(row[1]) for row in result.result_rows})
        return out

    def complete(self, action_ids: Sequence[str]) -> set[str]:
        """The actions whose transitions are all in the ledger: seqs 1..n, n terminal."""
        done: set[str] = set()
        terminal = [state.value for state in TERMINAL_STATES]
        for chunk in _chunks(sorted(set(action_ids))):
            result = self._client.query(
                f"""SELECT action_id FROM {self._events}
                    WHERE action_id IN %(ids)s GROUP BY action_id
                    HAVING uniqExact(seq) = max(seq)
                       AND argMax(state, seq) IN %(terminal)s""",
                parameters={"ids": chunk, "terminal": terminal},
            )
            done.update(row[0] for row in result.result_rows)
        return done

    def last_ingested_at(self) -> datetime | None:
        """When the newest row reached the ledger; None for an empty ledger."""
        result = self._client.query(f"SELECT count(), max(ingested_at) FROM {self._events}")
        count, newest = result.result_rows[0]
        return newest.replace(tzinfo=UTC) if count else None

    def action_events(self, action_id: str) -> list[Transition]:
        """One action's transitions rebuilt as envelopes, in seq order."""
        result = self._client.query(
            f"""SELECT action_id, ts, event_type, seq, entity_id, correlation_id,
                       idempotency_key, tags, attrs, source_system
                FROM {self._events} FINAL WHERE action_id = %(id)s ORDER BY seq""",
            parameters={"id": action_id},
        )
        return [_action_event(row) for row in result.named_results()]

    def cached_result(
        self, action_type: str, cache_key: str, since: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        """The latest success of `action_type` recorded with `cache_key` at or after `since`:
        (its action id, its outputs), or None."""
        result = self._client.query(
            f"""SELECT action_id, attrs FROM {self._events}
                WHERE action_type = %(type)s AND event_type = %(succeeded)s
                  AND ts >= toDateTime64(%(since)s, 3, 'UTC')
                  AND JSONExtractString(attrs, 'cache_key') = %(key)s
                ORDER BY ts DESC LIMIT 1""",
            parameters={
                "type": action_type,
                "succeeded": EventType.SUCCEEDED.value,
                "since": since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
                "key": cache_key,
            },
        )
        for action_id, attrs in result.result_rows:
            outputs = json.loads(attrs).get("outputs") or {}
            return str(action_id), outputs if isinstance(outputs, dict) else {}
        return None


# Ids are inlined into the query text, which ClickHouse caps (`max_query_size`, 256 KiB by
# default): a chunk stays well under it whatever the ids' lengths (up to 512 characters).
MAX_CHUNK_CHARS = 64 * 1024


def _chunks(ids: list[str], size: int = 1000) -> Iterator[list[str]]:
    """`ids` in lists of at most `size` ids and about MAX_CHUNK_CHARS characters (quoted,
    escaped: up to twice their length)."""
    chunk: list[str] = []
    chars = 0
    for one in ids:
        cost = 2 * len(one) + 4
        if chunk and (len(chunk) == size or chars + cost > MAX_CHUNK_CHARS):
            yield chunk
            chunk, chars = [], 0
        chunk.append(one)
        chars += cost
    if chunk:
        yield chunk


class PastActions:
    """Answers "has this action run before?" from the ledger, for as long as the ledger
    keeps it (Temporal forgets a closed workflow after its retention). Blocking reads run
    in a thread; the connection opens on first use."""

    def __init__(self, dsn: str, database: str = names.LEDGER_DATABASE) -> None:
        self._dsn = dsn
        self._database = database
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()

    async def __call__(self, action_id: str) -> list[Transition]:
        """The action's transitions in the ledger, in seq order ([] if it has none)."""
        return await asyncio.to_thread(self._read, action_id)

    def _read(self, action_id: str) -> list[Transition]:
        with self._lock:
            return self._open().action_events(action_id)

    async def rows(self, action_id: str) -> list[LedgerEvent]:
        """The action's rows as stored (`karma ledger`), in seq order."""

        def read() -> list[LedgerEvent]:
            with self._lock:
                return self._open().transitions([action_id])

        return await asyncio.to_thread(read)

    async def cached(
        self, action_type: str, cache_key: str, since: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        """The result cache's entry (`Ledger.cached_result`). A read still running counts as
        busy (a miss), not as one more thread waiting for it."""

        def read() -> tuple[str, dict[str, Any]] | None:
            if not self._lock.acquire(timeout=1.0):
                raise TimeoutError("the ledger is busy answering another read")
            try:
                return self._open().cached_result(action_type, cache_key, since)
            finally:
                self._lock.release()

        return await asyncio.to_thread(read)

    def sibling(self) -> PastActions:
        """Another reader of the same ledger, with its own connection and lock (slow
        analytics never hold up the idempotency lookups and the readiness check)."""
        return PastActions(self._dsn, self._database)

    async def read(self, query: Callable[[Ledger], T]) -> T:
        """`query(ledger)`'s answer, computed in a thread (analytics)."""

        def run() -> T:
            with self._lock:
                return query(self._open())

        return await asyncio.to_thread(run)

    def ping(self) -> None:
        """Raise unless the ledger answers a query (blocking); a read still running counts
        as busy, not as a second thread waiting for it."""
        if not self._lock.acquire(timeout=1.0):
            raise TimeoutError("the ledger is busy answering another read")
        try:
            self._open().rows("SELECT 1")
        finally:
            self._lock.release()

    def _open(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.open(self._dsn, self._database)
        return self._ledger

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    @classmethod
    def reachable(cls, dsn: str, database: str, *, owns_embedded: bool) -> PastActions | None:
        """A reader, if this process may read the ledger: a ClickHouse server, or embedded
        ClickHouse that this very process owns (chdb allows one process per path)."""
        if dsn.startswith(CHDB_SCHEME) and not owns_embedded:
            return None
        return cls(dsn, database)
