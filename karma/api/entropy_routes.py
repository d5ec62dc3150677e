"""`/v1/entropy/deviations` and `/v1/entropy/baselines`: what the entropy scan learned and
found, served by a process that can read the ledger. Observations belong to no tenant, so
a tenant-bound key is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query

from bridge.analytics import QUERY_SETTINGS
from bridge.entropy import Scanner
from bridge.ledger import Ledger
from karma.api.analytics_routes import LedgerQuery, answer_from
from karma.api.auth import Caller
from karma.api.problems import Problem, problems
from karma.envelope import MAX_ID_CHARS
from karma.errors import ValidationError
from karma.settings import EntropySettings
from karma.since import parse_since

MAX_ROWS = 10_000


def install_entropy_routes(
    app: FastAPI, read: LedgerQuery[Any] | None, reader: Any, settings: EntropySettings
) -> None:
    def untenanted(caller: Caller) -> None:
        if caller.tenant:
            raise Problem(403, "observations belong to no tenant: use a key without one")

    @app.get("/v1/entropy/deviations", tags=["entropy"], responses=problems(403, 422, 503))
    async def deviations(
        *,
        caller: Caller = reader,
        since: Annotated[
            str | None, Query(max_length=64, description="ISO 8601 or an age (24h, 7d)")
        ] = None,
        entity: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 50,
    ) -> list[dict[str, Any]]:
        """Deviations the scans found, the most surprising (in bits) first."""
        untenanted(caller)
        try:
            after = parse_since(since, field="since")
        except ValidationError as invalid:
            raise Problem(422, "invalid query", invalid.errors) from invalid

        def query(ledger: Ledger) -> list[dict[str, Any]]:
            scanner = Scanner(ledger, settings, query_settings=QUERY_SETTINGS)
            scanner.check_ready()
            return scanner.deviations(after, limit=limit, entity_id=entity or "")

        rows: list[dict[str, Any]] = await answer_from(read, query)
        return rows

    @app.get("/v1/entropy/baselines", tags=["entropy"], responses=problems(403, 422, 503))
    async def baselines(
        *,
        caller: Caller = reader,
        entity: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 200,
    ) -> list[dict[str, Any]]:
        """The latest baseline of each (entity, step): latency median, MAD and quantiles,
        bucket counts, next steps, entropies in bits, the training window."""
        untenanted(caller)

        def query(ledger: Ledger) -> list[dict[str, Any]]:
            scanner = Scanner(ledger, settings, query_settings=QUERY_SETTINGS)
            scanner.check_ready()
            found = scanner.baselines(datetime.now(UTC), entity or "")
            return [b.as_json() for b in found[:limit]]

        rows: list[dict[str, Any]] = await answer_from(read, query)
        return rows
