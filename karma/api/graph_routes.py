"""`/v1/graph/*`: the component graph's versions and deployments, served by the process
that holds the ledger (what `karma graph`, `karma plan` and `karma deploy` use when they
cannot open it). The graph belongs to no tenant: a tenant-bound key is refused."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query

from bridge.graph_store import GraphStore
from bridge.ledger import Ledger
from karma.api.analytics_routes import LedgerQuery, answer_from
from karma.api.auth import Caller
from karma.api.problems import Problem, problems
from karma.graph.plan import GraphVersion
from karma.graph.store import ENV

_ENV = Query(pattern=ENV.pattern, description="an environment (dev, prod)")
_NAME = Query(max_length=64, pattern=r"^([a-z][a-z0-9_-]{0,62})?$")


def install_graph_routes(
    app: FastAPI, read: LedgerQuery[Any] | None, reader: Any, requester: Any
) -> None:
    def untenanted(caller: Caller) -> None:
        if caller.tenant:
            raise Problem(403, "the component graph belongs to no tenant: use a key without one")

    async def on_store(run: Any) -> Any:
        def query(ledger: Ledger) -> Any:
            store = GraphStore(ledger)
            store.check_ready()
            return run(store)

        return await answer_from(read, query)

    @app.post(
        "/v1/graph/versions",
        status_code=201,
        tags=["graph"],
        responses=problems(400, 403, 422, 503),
    )
    async def save_version(*, caller: Caller = requester, body: GraphVersion) -> dict[str, str]:
        """Store a graph version (as `karma graph build` made it)."""
        untenanted(caller)
        await on_store(lambda store: store.save(body))
        return {"env": body.env, "version": body.version}

    @app.get(
        "/v1/graph/versions",
        response_model=GraphVersion,
        tags=["graph"],
        responses=problems(403, 404, 422, 503),
    )
    async def get_version(
        *,
        caller: Caller = reader,
        env: Annotated[str, _ENV],
        version: Annotated[str, Query(max_length=64, pattern=r"^[0-9a-f]*$")] = "",
    ) -> GraphVersion:
        """A stored version of the graph, or the latest built for the environment."""
        untenanted(caller)
        found: GraphVersion | None = await on_store(lambda store: store.version(env, version))
        if found is None:
            raise Problem(404, f"no graph version {version or '(latest)'} for {env}")
        return found

    @app.get("/v1/graph/deployments", tags=["graph"], responses=problems(403, 422, 503))
    async def deployments(
        *,
        caller: Caller = reader,
        component: Annotated[str, _NAME] = "",
        env: Annotated[str, Query(max_length=64, pattern=r"^([a-z][a-z0-9_-]{0,62})?$")] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        """Deploy pipelines, newest first: component, env, graph version, config and
        runtime hashes, final state, and the components each reloaded."""
        untenanted(caller)
        rows: list[dict[str, Any]] = await on_store(
            lambda store: store.deployments(component, env, limit=limit)
        )
        return rows
