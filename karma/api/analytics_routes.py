"""`/v1/stats`, `/v1/errors` and `/v1/correlations/{id}`: the ledger's analytics, served
by a process that can read the ledger (in the embedded stack, `karma dev`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Path, Query

from bridge.analytics import MAX_LIMIT, Analytics, Filters, check_by
from bridge.ledger import Ledger
from karma.api.auth import Caller
from karma.api.problems import Problem, problems
from karma.envelope import MAX_ID_CHARS, MAX_NAME_CHARS
from karma.errors import LedgerUnavailableError, ValidationError
from karma.since import parse_since

T = TypeVar("T")
log = logging.getLogger(__name__)
LedgerQuery = Callable[[Callable[[Ledger], T]], Awaitable[T]]

_TIME = Query(
    max_length=64,
    description="ISO 8601 with a timezone (2026-11-25T10:00:00Z) or an age back from now "
    "(90s, 30m, 24h, 7d)",
)


async def answer_from(read: LedgerQuery[Any] | None, run: Callable[[Ledger], T]) -> T:
    """`run`'s answer on the ledger, or the problem that stopped it (503)."""
    if read is None:
        raise Problem(503, "this process does not read the ledger (ask the one that owns it)")
    try:
        answer: T = await read(run)
    except LedgerUnavailableError as unavailable:
        raise Problem(503, str(unavailable)) from unavailable
    except ClickHouseError as failed:
        log.warning("a ledger query failed: %s", failed)
        raise Problem(503, "the ledger could not answer (see the API's log)") from failed
    return answer


def install_analytics_routes(app: FastAPI, read: LedgerQuery[Any] | None, reader: Any) -> None:
    async def ask(query: Callable[[Analytics], T]) -> T:
        def run(ledger: Ledger) -> T:
            analytics = Analytics(ledger)
            analytics.check_ready()
            return query(analytics)

        return await answer_from(read, run)

    def filters(
        caller: Caller, since: str | None, until: str | None, type: str | None, tenant: str | None
    ) -> Filters:
        if caller.tenant:
            if tenant and tenant != caller.tenant:
                raise Problem(403, f"the key is bound to tenant {caller.tenant!r}")
            tenant = caller.tenant
        try:
            return Filters(
                since=parse_since(since, field="since"),
                until=parse_since(until, field="until"),
                action_type=type or "",
                tenant=tenant or "",
            )
        except ValidationError as invalid:
            raise Problem(422, "invalid query", invalid.errors) from invalid

    @app.get("/v1/stats", tags=["analytics"], responses=problems(403, 422, 503))
    async def stats(
        *,
        caller: Caller = reader,
        since: Annotated[str | None, _TIME] = None,
        until: Annotated[str | None, _TIME] = None,
        type: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
        tenant: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        by: Annotated[str | None, Query(description="day, type or tenant")] = None,
        top: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10,
    ) -> dict[str, Any]:
        """Ended actions: outcome counts and rates, time to accept, start and resolve (and
        from the triggering observation), retries; per group when `by` is given; the
        retries distribution and the entities failing most. `karma stats --json` prints
        the same."""
        chosen = filters(caller, since, until, type, tenant)
        try:
            check_by(by)
        except ValidationError as invalid:
            raise Problem(422, "invalid query", invalid.errors) from invalid
        answer: dict[str, Any] = await ask(lambda a: a.stats(chosen, by, top=top).as_json())
        return answer

    @app.get("/v1/errors", tags=["analytics"], responses=problems(403, 422, 503))
    async def errors(
        *,
        caller: Caller = reader,
        since: Annotated[str | None, _TIME] = None,
        until: Annotated[str | None, _TIME] = None,
        type: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
        tenant: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> list[dict[str, Any]]:
        """The error taxonomy: failed actions by error type and fingerprint (the message
        with its variable parts replaced), with first and last seen, count, examples."""
        chosen = filters(caller, since, until, type, tenant)
        answer: list[dict[str, Any]] = await ask(
            lambda a: [g.as_json() for g in a.errors(chosen, limit=limit)]
        )
        return answer

    @app.get(
        "/v1/correlations/{correlation_id}", tags=["analytics"], responses=problems(404, 422, 503)
    )
    async def correlation(
        *,
        caller: Caller = reader,
        correlation_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)],
    ) -> list[dict[str, Any]]:
        """The observations and the actions' transitions that share the correlation id, in
        time order (a tenant's key sees its own actions only, and no observations)."""
        rows: list[dict[str, Any]] = await ask(
            lambda a: a.correlation(correlation_id, tenant=caller.tenant)
        )
        if not rows:
            raise Problem(404, f"nothing in the ledger has correlation id {correlation_id!r}")
        return rows
