"""The graph's operations as the CLI runs them: build (and store), plan, deploy, history.
The ledger is read and written directly when this process can open it, otherwise through
the API of the process that holds it (an embedded ledger belongs to one process)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from karma.errors import FieldError, LedgerUnavailableError, ValidationError
from karma.graph.model import Graph, load_graph
from karma.graph.plan import ChangePlan, GraphVersion, build, plan_change
from karma.graph.store import FileParameterStore, ParameterStore, SsmParameterStore, Values
from karma.settings import Settings


class GraphLedger(Protocol):
    def save(self, version: GraphVersion) -> None: ...

    def version(self, env: str, version: str = "") -> GraphVersion | None: ...

    def deployments(
        self, component: str = "", env: str = "", *, limit: int = 50
    ) -> list[dict[str, Any]]: ...

    def last_deployed(self, component: str, env: str) -> dict[str, Any] | None: ...


class ApiGraphLedger:
    """The same, through `/v1/graph/*` of the process holding the ledger."""

    def __init__(self, settings: Settings) -> None:
        from karma.api.keys import client_key

        key = client_key(settings)
        self._http = httpx.Client(
            base_url=settings.api.url(),
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=30,
        )

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code == 422:
            errors = response.json().get("errors") or []
            raise ValidationError([FieldError.model_validate(e) for e in errors])
        response.raise_for_status()
        return response.json() if response.status_code != 204 else None

    def save(self, version: GraphVersion) -> None:
        self._answer(self._http.post("/v1/graph/versions", json=version.model_dump(mode="json")))

    def version(self, env: str, version: str = "") -> GraphVersion | None:
        response = self._http.get("/v1/graph/versions", params={"env": env, "version": version})
        if response.status_code == 404:
            return None
        return GraphVersion.model_validate(self._answer(response))

    def deployments(
        self, component: str = "", env: str = "", *, limit: int = 50
    ) -> list[dict[str, Any]]:
        params = {"component": component, "env": env, "limit": str(limit)}
        rows: list[dict[str, Any]] = self._answer(
            self._http.get("/v1/graph/deployments", params=params)
        )
        return rows

    def last_deployed(self, component: str, env: str) -> dict[str, Any] | None:
        from bridge.graph_store import last_deployed

        return last_deployed(self.deployments(component, env, limit=1000))

    def close(self) -> None:
        self._http.close()


@contextlib.contextmanager
def graph_ledger(settings: Settings) -> Iterator[GraphLedger]:
    """The ledger's graph tables, directly or through the API.

    Raises:
        karma.errors.LedgerUnavailableError: neither can be reached.
    """
    from bridge.graph_store import GraphStore
    from bridge.ledger import Ledger
    from karma.cli.ledger_commands import api_answers

    try:
        ledger = Ledger.open_existing(settings.clickhouse_dsn, settings.clickhouse.database)
    except LedgerUnavailableError as unavailable:
        if not api_answers(settings):
            raise
        remote = ApiGraphLedger(settings)
        try:
            yield remote
        except httpx.HTTPError as exc:
            raise LedgerUnavailableError(
                f"{unavailable}; the API at {settings.api.url()} could not answer: {exc}"
            ) from exc
        finally:
            remote.close()
        return
    try:
        store = GraphStore(ledger)
        store.check_ready()
        yield store
    finally:
        ledger.close()


def parameter_store(settings: Settings, directory: Path) -> ParameterStore:
    graph = settings.graph
    if graph.store == "ssm":
        return SsmParameterStore(graph.ssm_prefix)
    return FileParameterStore(directory)


def built(
    settings: Settings, directory: Path, env: str, registry: Any
) -> tuple[Graph, GraphVersion, Values]:
    """The graph of `directory` built for `env` (checked), and its runtime values."""
    from karma.secrets import SecretSealer

    graph = load_graph(directory)
    store = parameter_store(settings, directory)
    values = store.values(env)  # read once: what is fingerprinted is what is deployed
    digest = SecretSealer.from_settings(settings).digest
    return graph, build(graph, env, store, registry, values=values, digest=digest), values


def change_plan(
    settings: Settings,
    directory: Path,
    component: str,
    env: str,
    registry: Any,
    ledger: GraphLedger | None = None,
) -> tuple[ChangePlan, dict[str, Any], GraphVersion]:
    """What deploying `component` to `env` changes, against the ledger's last deploy
    (`ledger`, or the one `graph_ledger` finds)."""
    graph, version, values = built(settings, directory, env, registry)
    deployed: dict[str, Any] | None = None
    before: GraphVersion | None = None
    note = "against the ledger's last deploy (its deploy step succeeded, not undone)"

    def read(ledger: GraphLedger) -> None:
        nonlocal deployed, before
        if component in graph.components:
            deployed = ledger.last_deployed(component, env)
        if deployed and deployed.get("graph_version"):
            before = ledger.version(env, deployed["graph_version"])

    try:
        if ledger is not None:
            read(ledger)
        else:
            with graph_ledger(settings) as found:
                read(found)
    except LedgerUnavailableError as exc:
        note = f"the ledger could not be read, so as if never deployed ({exc})"
    planned, params = plan_change(graph, version, component, values, deployed, before)
    planned.compared = note
    return planned, params, version


def deploy_tags(planned: ChangePlan, version: GraphVersion) -> dict[str, str]:
    node = version.node(planned.component)
    assert node is not None
    return {
        "graph_env": planned.env,
        "graph_root": planned.component,
        "graph_version": version.version,
        "graph_config_hash": node.config_hash,
        "graph_runtime_hash": node.runtime_hash,
    }
