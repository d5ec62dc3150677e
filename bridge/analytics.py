"""What the ledger answers: outcome rates, time to acknowledge and to resolve, retries,
failing entities, the error taxonomy, and what happened under one correlation id.

Every figure is read from `ended_actions` (one row per ended action, kept by ClickHouse as
transitions arrive) and `observations`; nothing re-scans the raw transitions. Percentiles
are exact (`quantilesExactInclusive`: linear interpolation between the closest ranks, as
`statistics.quantiles(method="inclusive")`), never `quantileTiming`, which caps at 30 s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from bridge.ledger import Ledger
from karma import names
from karma.errors import FieldError, ValidationError

By = Literal["day", "type", "tenant"]
GROUPINGS: Final[dict[str, str]] = {
    "day": "toDate(ended_at)",
    "type": "action_type",
    "tenant": "tenant",
}
OUTCOMES: Final = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "SKIPPED", "COMPENSATED")
QUANTILES: Final = (0.5, 0.9, 0.99)
MAX_LIMIT: Final = 1000
TIMELINE_LIMIT: Final = 10_000  # rows of each kind in one correlation's timeline
QUERY_SETTINGS: Final = {"max_execution_time": 30}
ANALYTICS_MIGRATION: Final = 4  # the ledger's views the queries read


@dataclass(frozen=True)
class Filters:
    """Which ended actions count: ended in [since, until), of a type, of a tenant."""

    since: datetime | None = None
    until: datetime | None = None
    action_type: str = ""
    tenant: str = ""

    def where(self, time_column: str = "ended_at") -> tuple[str, dict[str, Any]]:
        clauses: list[str] = ["1"]
        parameters: dict[str, Any] = {}
        if self.since is not None:
            clauses.append(f"{time_column} >= toDateTime64(%(since)s, 3, 'UTC')")
            parameters["since"] = _utc_text(self.since)
        if self.until is not None:
            clauses.append(f"{time_column} < toDateTime64(%(until)s, 3, 'UTC')")
            parameters["until"] = _utc_text(self.until)
        if self.action_type:
            clauses.append("action_type = %(action_type)s")
            parameters["action_type"] = self.action_type
        if self.tenant:
            clauses.append("tenant = %(tenant)s")
            parameters["tenant"] = self.tenant
        return " AND ".join(clauses), parameters

    def as_json(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "type": self.action_type or None,
            "tenant": self.tenant or None,
        }


def _utc_text(ts: datetime) -> str:
    """A time as ClickHouse reads it in UTC, to the millisecond (naive: taken as UTC)."""
    utc = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%d %H:%M:%S}.{utc.microsecond // 1000:03d}"


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Timing:
    """Milliseconds: how many actions had the figure, the mean and the percentiles."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "p50": self.p50, "p90": self.p90,
                "p99": self.p99}  # fmt: skip


@dataclass(frozen=True)
class GroupStats:
    """One group of ended actions (a day, a type or a tenant; all of them when ungrouped)."""

    group: str
    total: int
    outcomes: dict[str, int]
    time_to_accept: Timing
    time_to_start: Timing
    time_to_resolve: Timing
    trigger_to_request: Timing
    trigger_to_resolve: Timing
    retries: int

    def rate(self, outcome: str) -> float:
        return self.outcomes.get(outcome, 0) / self.total if self.total else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "total": self.total,
            "outcomes": self.outcomes,
            "rates": {o: round(self.rate(o), 6) for o in OUTCOMES},
            "time_to_accept_ms": self.time_to_accept.as_json(),
            "time_to_start_ms": self.time_to_start.as_json(),
            "time_to_resolve_ms": self.time_to_resolve.as_json(),
            "trigger_to_request_ms": self.trigger_to_request.as_json(),
            "trigger_to_resolve_ms": self.trigger_to_resolve.as_json(),
            "retries": self.retries,
        }


@dataclass(frozen=True)
class ErrorGroup:
    error_type: str
    fingerprint: str
    version: int
    count: int
    first_seen: datetime
    last_seen: datetime
    examples: list[str]
    action_types: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "error_type": self.error_type,
            "fingerprint": self.fingerprint,
            "fingerprint_version": self.version,
            "count": self.count,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "example_action_ids": self.examples,
            "action_types": self.action_types,
        }


@dataclass(frozen=True)
class Stats:
    filters: Filters
    by: str | None
    groups: list[GroupStats]
    retries_per_action: dict[int, int] = field(default_factory=dict)
    failing_entities: list[tuple[str, int, int]] = field(default_factory=list)
    per_hour: list[tuple[datetime, str, int]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "filters": self.filters.as_json(),
            "by": self.by,
            "groups": [g.as_json() for g in self.groups],
            "retries_per_action": {str(k): v for k, v in self.retries_per_action.items()},
            "top_failing_entities": [
                {"entity_id": e, "failed": f, "total": t} for e, f, t in self.failing_entities
            ],
            "per_hour": [
                {"hour": _iso(h), "outcome": o, "actions": n} for h, o, n in self.per_hour
            ],
        }


def _timing(count: int, mean: float | None, quantiles: list[float] | None) -> Timing:
    if not count or quantiles is None:
        return Timing(0, None, None, None, None)
    p50, p90, p99 = (round(float(q), 3) for q in quantiles)
    return Timing(int(count), round(float(mean or 0), 3), p50, p90, p99)


def _timing_columns(name: str, expression: str) -> str:
    levels = ", ".join(str(q) for q in QUANTILES)
    return (
        f"countIf(isNotNull({expression})) AS {name}_count, "
        f"avgOrNull({expression}) AS {name}_mean, "
        f"quantilesExactInclusive({levels})({expression}) AS {name}_q"
    )


TIMINGS: Final = (
    ("time_to_accept", "time_to_accept_ms"),
    ("time_to_start", "time_to_start_ms"),
    ("time_to_resolve", "time_to_resolve_ms"),
    ("trigger_to_request", "dateDiff('millisecond', triggered_at, requested_at)"),
    ("trigger_to_resolve", "dateDiff('millisecond', triggered_at, ended_at)"),
)


def check_by(by: str | None) -> str | None:
    if by is not None and by not in GROUPINGS:
        reason = f"must be one of {', '.join(GROUPINGS)}, got {by[:40]!r}"
        raise ValidationError([FieldError(field="by", reason=reason)])
    return by


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        reason = f"must be from 1 to {MAX_LIMIT}, got {limit}"
        raise ValidationError([FieldError(field="limit", reason=reason)])
    return limit


class Analytics:
    """Read-only queries over one ledger (blocking: run them in a thread)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        db = ledger.database
        self._ended = f"{db}.{names.VIEW_ENDED_ACTIONS}"
        self._observations = f"{db}.{names.TABLE_OBSERVATIONS}"
        self._events = f"{db}.{names.TABLE_ACTION_EVENTS}"

    def _ended_with_triggers(self, where: str) -> str:
        """The ended actions that pass `where`, each with the time of the first observation
        that shares its correlation id (its trigger), if any."""
        return f"""
            SELECT e.*,
                   if(t.triggered_at <= e.requested_at, t.triggered_at, NULL) AS triggered_at
            FROM (SELECT * FROM {self._ended} WHERE {where}) AS e
            LEFT JOIN (
                SELECT correlation_id, toNullable(min(ts)) AS triggered_at
                FROM {self._observations}
                WHERE correlation_id IN (
                    SELECT correlation_id FROM {self._ended}
                    WHERE {where} AND correlation_id != ''
                )
                GROUP BY correlation_id
            ) AS t ON e.correlation_id = t.correlation_id AND e.correlation_id != ''
            SETTINGS join_use_nulls = 1
        """

    def stats(self, filters: Filters, by: str | None = None, *, top: int = 10) -> Stats:
        """Outcome rates, timings and retries per group, the retries distribution and the
        entities that fail most."""
        check_by(by)
        check_limit(top)
        where, parameters = filters.where()
        group = GROUPINGS[by] if by else "''"
        outcome_columns = ", ".join(f"countIf(outcome = '{o}') AS n_{o}" for o in OUTCOMES)
        timing_columns = ", ".join(_timing_columns(n, e) for n, e in TIMINGS)
        rows = self._query(
            f"""
            SELECT toString({group}) AS grp, count() AS total, {outcome_columns},
                   {timing_columns}, sum(retries) AS retries
            FROM ({self._ended_with_triggers(where)})
            GROUP BY grp ORDER BY grp
            """,
            parameters,
        )
        groups = []
        for row in rows:
            outcomes = {o: int(row[f"n_{o}"]) for o in OUTCOMES}
            timings = {
                n: _timing(row[f"{n}_count"], row[f"{n}_mean"], row[f"{n}_q"]) for n, _ in TIMINGS
            }
            groups.append(
                GroupStats(
                    group=row["grp"],
                    total=int(row["total"]),
                    outcomes=outcomes,
                    retries=int(row["retries"]),
                    **timings,
                )
            )
        distribution = {
            int(r["retries"]): int(r["actions"])
            for r in self._query(
                f"SELECT retries, count() AS actions FROM {self._ended} WHERE {where} "
                "GROUP BY retries ORDER BY retries",
                parameters,
            )
        }
        failing = [
            (r["entity_id"], int(r["failed"]), int(r["total"]))
            for r in self._query(
                f"""
                SELECT entity_id, countIf(state IN ('FAILED', 'TIMED_OUT')) AS failed,
                       count() AS total
                FROM {self._ended} WHERE {where} AND entity_id != ''
                GROUP BY entity_id HAVING failed > 0
                ORDER BY failed DESC, entity_id LIMIT {int(top)}
                """,
                parameters,
            )
        ]
        per_hour = [
            (r["hour"], r["outcome"], int(r["n"]))
            for r in self._query(
                f"SELECT toStartOfHour(ended_at) AS hour, outcome, count() AS n "
                f"FROM {self._ended} WHERE {where} GROUP BY hour, outcome ORDER BY hour, outcome",
                parameters,
            )
        ]
        return Stats(filters, by, groups, distribution, failing, per_hour)

    def errors(self, filters: Filters, *, limit: int = 50, examples: int = 3) -> list[ErrorGroup]:
        """The error taxonomy: ended actions with an error, by type and fingerprint."""
        check_limit(limit)
        where, parameters = filters.where()
        rows = self._query(
            f"""
            SELECT error_type, error_fingerprint, fingerprint_version, count() AS n,
                   min(ended_at) AS first_seen, max(ended_at) AS last_seen,
                   arraySlice(arraySort(groupArray(action_id)), 1, {int(examples)}) AS examples,
                   arraySort(groupUniqArray(action_type)) AS types
            FROM {self._ended}
            WHERE {where} AND error_type != '' AND state != 'CANCELLED'
            GROUP BY error_type, error_fingerprint, fingerprint_version
            ORDER BY n DESC, error_type, error_fingerprint LIMIT {int(limit)}
            """,
            parameters,
        )
        return [
            ErrorGroup(
                error_type=r["error_type"],
                fingerprint=r["error_fingerprint"],
                version=int(r["fingerprint_version"]),
                count=int(r["n"]),
                first_seen=r["first_seen"],
                last_seen=r["last_seen"],
                examples=list(r["examples"]),
                action_types=list(r["types"]),
            )
            for r in rows
        ]

    def correlation(self, correlation_id: str, *, tenant: str = "") -> list[dict[str, Any]]:
        """The observations and the transitions under one correlation id, in time order
        (a tenant-bound reader sees only that tenant's actions, and no observations: they
        carry no tenant)."""
        parameters = {"cid": correlation_id, "tenant": tenant}
        rows: list[dict[str, Any]] = []
        if not tenant:
            for r in self._query(
                f"""
                SELECT ts, event_id, event_type, entity_id, step, status, duration_ms, attrs
                FROM {self._observations} FINAL
                WHERE correlation_id = %(cid)s ORDER BY ts, event_id LIMIT {TIMELINE_LIMIT}
                """,
                parameters,
            ):
                rows.append(
                    {
                        "kind": "observation",
                        "ts": _iso(r["ts"]),
                        "event_id": r["event_id"],
                        "event_type": r["event_type"],
                        "entity_id": r["entity_id"],
                        "step": r["step"],
                        "status": r["status"],
                        "duration_ms": r["duration_ms"],
                        "attrs": json.loads(r["attrs"]),
                    }
                )
        tenant_clause = "AND tenant = %(tenant)s" if tenant else ""
        for r in self._query(
            f"""
            SELECT ts, event_id, action_id, seq, event_type, state, action_type, entity_id
            FROM {self._events} FINAL
            WHERE correlation_id = %(cid)s {tenant_clause}
            ORDER BY ts, action_id, seq LIMIT {TIMELINE_LIMIT}
            """,
            parameters,
        ):
            rows.append(
                {
                    "kind": "transition",
                    "ts": _iso(r["ts"]),
                    "event_id": r["event_id"],
                    "action_id": r["action_id"],
                    "seq": int(r["seq"]),
                    "event_type": r["event_type"],
                    "state": r["state"],
                    "action_type": r["action_type"],
                    "entity_id": r["entity_id"],
                }
            )
        rows.sort(key=lambda row: (row["ts"], row["kind"] == "transition"))
        return rows

    def check_ready(self) -> None:
        """Raise unless the ledger has the views the queries read.

        Raises:
            karma.errors.LedgerUnavailableError: a ledger not migrated that far yet.
        """
        self._ledger.require_migration(ANALYTICS_MIGRATION, "reading its analytics")

    def _query(self, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        return self._ledger.named_rows(sql, parameters, settings=QUERY_SETTINGS)
