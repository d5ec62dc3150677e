"""The HTTP API: `/v1` over the SDK, Server-Sent Events from one shared transition source,
`/healthz` and `/readyz`. Errors are problem documents (`karma.api.problems`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.middleware.trustedhost import TrustedHostMiddleware
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.converter import decode_typed_search_attributes
from temporalio.service import RPCError, RPCStatusCode

from bridge.dlq import DeadLetter, read_dead_letters, replay
from bridge.ledger import LedgerEvent
from karma import search_attributes
from karma.api.analytics_routes import LedgerQuery, install_analytics_routes
from karma.api.auth import (
    ANONYMOUS,
    COOKIE,
    Caller,
    Guard,
    caller_of,
    idempotency_key_of,
    requires,
    unauthorized,
)
from karma.api.codec_server import install_codec_routes
from karma.api.entropy_routes import install_entropy_routes
from karma.api.graph_routes import install_graph_routes
from karma.api.hub import Subscription, TransitionHub
from karma.api.keys import Scope
from karma.api.limits import BodyLimit, PageHeaders
from karma.api.pipeline_routes import install_pipeline_routes
from karma.api.problems import Problem, install, problems
from karma.breakers import BREAKERS
from karma.client import ActionHandle, KarmaClient
from karma.envelope import MAX_ID_CHARS, MAX_NAME_CHARS, Transition
from karma.errors import (
    ActionEndedError,
    ActionNotFoundError,
    ActionUnreadableError,
    DecisionRefusedError,
    FieldError,
    UnknownActionError,
)
from karma.ids import WORKFLOW_ID_PREFIX, action_id_from_workflow_id
from karma.lifecycle import ActionState
from karma.meta import ActionMeta
from karma.params import params_json_schema
from karma.refs import offer_choices
from karma.settings import Settings
from karma.status import ActionStatus
from karma.telemetry import continued_from

Check = Callable[[], Awaitable[str]]  # what it reached; raises when it cannot
LedgerRead = Callable[[str], Awaitable[Sequence[LedgerEvent]]]
HistoryRead = Callable[[str], Awaitable[Sequence[Transition]]]
KEEP_READ_S = 1.0
SEND_TIMEOUT_S = 30.0  # a subscriber that reads nothing for this long is dropped
PAGE_SIZE = 50
CONSOLE = pathlib.Path(__file__).parent / "console"  # the web console's files (no CDN)
READY_TIMEOUT_S = 3.0
SESSION_S = 12 * 3600  # the console's login lasts a working day


@dataclass
class ApiServices:
    """What the routes use; `ledger` only in a process that can read the ledger."""

    client: KarmaClient
    settings: Settings
    hub: TransitionHub
    checks: dict[str, Check] = field(default_factory=dict)
    ledger: LedgerRead | None = None
    history: HistoryRead | None = None  # transitions from the ledger (fills event streams)
    analytics: LedgerQuery[Any] | None = None  # queries of the ledger (stats, errors)
    web_ui: str = ""  # the Temporal Web UI's base URL, for links
    # The supplied resources of the worker in this process (`karma dev`), if one runs here.
    resources: Callable[[], list[dict[str, Any]]] | None = None


class ActionRequestBody(BaseModel):
    type: str = Field(max_length=MAX_NAME_CHARS, description="a registered action type")
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str = Field(
        default="",
        max_length=MAX_ID_CHARS,
        description="the same key again answers with the existing action (also the "
        "`Idempotency-Key` header)",
    )
    entity_id: str = Field(default="", max_length=MAX_ID_CHARS)
    correlation_id: str = Field(default="", max_length=MAX_ID_CHARS)
    tenant: str = Field(default="", max_length=MAX_ID_CHARS)
    priority: str = Field(default="normal", max_length=MAX_NAME_CHARS)
    tags: dict[str, str] = Field(default_factory=dict)


class ActionCreated(BaseModel):
    action_id: str
    workflow_id: str
    created: bool = Field(description="false: the idempotency key named an existing action")
    links: dict[str, str]


class DecisionBody(BaseModel):
    decision: str = Field(max_length=MAX_NAME_CHARS, description="`approve` or `reject`")
    by: str = Field(
        max_length=MAX_NAME_CHARS,
        description="who decides (recorded with the id of the key that was used)",
    )
    reason: str = Field(default="", max_length=4096, description="required to reject")


class ActionSummary(BaseModel):
    action_id: str
    action_type: str
    state: str
    tenant: str
    entity_id: str
    correlation_id: str
    started_at: str | None
    closed_at: str | None


class ActionPage(BaseModel):
    actions: list[ActionSummary]
    next_page_token: str | None = Field(description="pass as `page_token` for the next page")


class DeadLetterView(BaseModel):
    position: str = Field(description="PARTITION:OFFSET on the DLQ topic (for replay)")
    ts: str
    stage: str
    reason: str
    topic: str
    partition: int
    offset: int
    origin: str
    key: str | None
    value: str | None
    encoding: Literal["utf-8", "base64"] = Field(description="of `key` and `value`")
    truncated_from: int | None

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterView:
        raw = [letter.key, letter.value]
        try:
            texts = [b.decode("utf-8") if b is not None else None for b in raw]
            encoding: Literal["utf-8", "base64"] = "utf-8"
        except UnicodeDecodeError:
            texts = [base64.b64encode(b).decode() if b is not None else None for b in raw]
            encoding = "base64"
        return cls(
            position=letter.position,
            ts=letter.ts,
            stage=letter.stage,
            reason=letter.reason,
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
            origin=letter.origin,
            key=texts[0],
            value=texts[1],
            encoding=encoding,
            truncated_from=letter.truncated_from,
        )


class ReplayBody(BaseModel):
    positions: list[Annotated[str, Field(max_length=40)]] = Field(
        min_length=1, max_length=10_000, description="PARTITION:OFFSET of each letter"
    )


class ApiInfo(BaseModel):
    temporal_ui: str | None = Field(description="the Temporal Web UI's base URL, if known")
    namespace: str
    auth: bool = Field(description="requests need an API key")


class SessionBody(BaseModel):
    key: str = Field(max_length=200, description="an API key")


class SessionView(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    tenant: str

    @classmethod
    def of(cls, caller: Caller) -> SessionView:
        return cls(
            key_id=caller.key_id,
            name=caller.name,
            scopes=[s.value for s in caller.scopes],
            tenant=caller.tenant,
        )


class ActionType(BaseModel):
    type: str
    name: str
    description: str
    version: str
    mode: str
    category: str
    params_schema: dict[str, Any]
    outputs_schema: dict[str, Any]


def create_app(services: ApiServices) -> FastAPI:
    app = FastAPI(
        title="Karma",
        version="1",
        description="Durable, observable operational actions on Temporal.",
    )
    install(app)
    api = services.settings.api
    hosts = [*api.allowed_hosts, *([api.host] if api.host not in ("0.0.0.0", "::", "") else [])]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    # Large enough for any request an action can take, small enough to refuse before parsing.
    app.add_middleware(BodyLimit, max_bytes=4 * services.settings.limits.max_payload_bytes)
    app.add_middleware(PageHeaders, prefix="/console")
    client = services.client
    reads = SharedReads()
    guard = Guard(services.settings)
    # Route parameters (keyword-only, so they may come first): the caller, with the scope.
    reader = Depends(requires(guard, Scope.READ))
    requester = Depends(requires(guard, Scope.REQUEST))
    decider = Depends(requires(guard, Scope.DECIDE))
    admin = Depends(requires(guard, Scope.ADMIN))
    anyone = Depends(requires(guard, None))

    async def confine(caller: Caller, action_id: str) -> None:
        """404 (as for an unknown id) when the caller's tenant may not see the action. Its
        tenant comes from Temporal's visibility, which needs no worker (a stuck action's
        tenant is known too); from its status when Temporal no longer holds it."""
        if not caller.tenant:
            return
        tenant: str | None = None
        if services.settings.temporal.search_attributes:
            workflow = client.temporal.get_workflow_handle(f"{WORKFLOW_ID_PREFIX}{action_id}")
            try:
                described = await workflow.describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            else:
                tenant = described.typed_search_attributes.get(search_attributes.TENANT) or ""
        if tenant is None:
            tenant = (await client.handle(action_id).status()).tenant
        if tenant != caller.tenant:
            raise ActionNotFoundError(action_id)

    async def visible(caller: Caller, action_id: str) -> tuple[ActionHandle, ActionStatus]:
        """The action's handle and status, if the caller may see it (else 404)."""
        await confine(caller, action_id)
        handle = client.handle(action_id)
        return handle, await handle.status()

    def links(action_id: str) -> dict[str, str]:
        out = {
            "self": f"/v1/actions/{action_id}",
            "transitions": f"/v1/actions/{action_id}/transitions",
        }
        if services.web_ui:
            namespace = services.settings.temporal.namespace
            out["temporal_ui"] = (
                f"{services.web_ui}/namespaces/{namespace}/workflows/{WORKFLOW_ID_PREFIX}{action_id}"
            )
        return out

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/console/")

    app.mount("/console", StaticFiles(directory=CONSOLE, html=True), name="console")
    install_codec_routes(app, services.settings, guard)
    install_analytics_routes(app, services.analytics, reader)
    install_entropy_routes(app, services.analytics, reader, services.settings.entropy)
    install_pipeline_routes(app, client, reader, requester)
    install_graph_routes(app, services.analytics, reader, requester)

    @app.get("/v1/resources", tags=["health"], responses=problems())
    async def resources(*, caller: Caller = reader) -> dict[str, Any]:
        """The supplied resources of the worker this process runs (healthy, unhealthy,
        not created, closed; last check and error) and its circuit breakers; `worker`
        false (and no resources) when this process runs none."""
        found = services.resources() if services.resources is not None else []
        return {
            "worker": services.resources is not None,
            "resources": found,
            "breakers": BREAKERS.snapshot(),
        }

    @app.get("/v1/info", response_model=ApiInfo, tags=["health"])
    async def info() -> ApiInfo:
        """What a client (the console) needs to know about this deployment."""
        return ApiInfo(
            temporal_ui=services.web_ui or None,
            namespace=services.settings.temporal.namespace,
            auth=services.settings.api.auth,
        )

    @app.post(
        "/v1/session",
        response_model=SessionView,
        tags=["session"],
        responses=problems(400, 401, 422, auth=False),
    )
    async def login(body: SessionBody, request: Request, response: Response) -> SessionView:
        """The console's login: a valid key opens a session (an HttpOnly, SameSite=Strict
        cookie holding a signed session, never the key) for SESSION_S."""
        if not guard.enabled:
            return SessionView.of(ANONYMOUS)
        key = guard.store.verify(body.key)
        if key is None:
            raise unauthorized("the API key is not valid (unknown, malformed or revoked)")
        response.set_cookie(
            COOKIE,
            guard.sessions.issue(key, SESSION_S),
            max_age=SESSION_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return SessionView.of(caller_of(key) or ANONYMOUS)

    @app.get("/v1/session", response_model=SessionView, tags=["session"], responses=problems())
    async def session(*, caller: Caller = anyone) -> SessionView:
        """Who the key (or the console's cookie) is."""
        return SessionView.of(caller)

    @app.delete("/v1/session", status_code=204, tags=["session"])
    async def logout(request: Request) -> Response:
        """Ends the console's session (here and now, not only in the browser)."""
        session = request.cookies.get(COOKIE)
        if session:
            guard.sessions.end(session)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"description": "not ready: the failing checks say why"}},
    )
    async def readyz() -> JSONResponse:
        """Temporal, Kafka and ClickHouse reachable from here, each named."""

        async def run(check: Check) -> dict[str, Any]:
            try:
                return {"ok": True, "detail": await asyncio.wait_for(check(), READY_TIMEOUT_S)}
            except Exception as exc:  # noqa: BLE001 - any failure of a check is its answer
                return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:500]}

        names = list(services.checks)
        results = await asyncio.gather(*(run(services.checks[n]) for n in names))
        answer = dict(zip(names, results, strict=True))
        ready = all(r["ok"] for r in results)
        return JSONResponse({"ready": ready, "checks": answer}, status_code=200 if ready else 503)

    @app.post(
        "/v1/actions",
        status_code=202,
        response_model=ActionCreated,
        tags=["actions"],
        responses={
            200: {"model": ActionCreated, "description": "the existing action"},
            **problems(400, 401, 403, 422, 429, 503),
        },
    )
    async def request_action(
        *,
        caller: Caller = requester,
        body: ActionRequestBody,
        request: Request,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=MAX_ID_CHARS)] = None,
    ) -> ActionCreated:
        """Request an action: 202 with its id, or 200 with the existing action when the
        idempotency key names one (it never runs twice)."""
        key = idempotency_key_of(body.idempotency_key, idempotency_key)
        tenant = caller.tenant_for(body.tenant)
        with continued_from(request.headers):  # the caller's traceparent, if any
            handle = await client.request(
                body.type,
                body.params,
                idempotency_key=key,
                entity_id=body.entity_id,
                correlation_id=body.correlation_id,
                tenant=tenant,
                priority=body.priority,
                tags=body.tags,
            )
        if not handle.created:
            response.status_code = 200
        response.headers["Location"] = f"/v1/actions/{handle.action_id}"
        return ActionCreated(
            action_id=handle.action_id,
            workflow_id=handle.workflow_id,
            created=handle.created,
            links=links(handle.action_id),
        )

    @app.get(
        "/v1/actions",
        response_model=ActionPage,
        tags=["actions"],
        responses=problems(400, 422, 503),
    )
    async def list_actions(
        *,
        caller: Caller = reader,
        type: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
        state: ActionState | None = None,
        tenant: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        entity: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        correlation: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        started_after: Annotated[str | None, _INSTANT] = None,
        started_before: Annotated[str | None, _INSTANT] = None,
        page_size: Annotated[int, Query(ge=1, le=1000)] = PAGE_SIZE,
        page_token: Annotated[str | None, Query(max_length=4096)] = None,
    ) -> ActionPage:
        """Actions, newest first, through Temporal's visibility (search attributes); a
        tenant's key sees its tenant's only."""
        if caller.tenant:
            if tenant is not None and tenant != caller.tenant:
                return ActionPage(actions=[], next_page_token=None)
            tenant = caller.tenant
        filters = {
            search_attributes.ACTION_TYPE.name: type,
            search_attributes.STATE.name: state.value if state else None,
            search_attributes.TENANT.name: tenant,
            search_attributes.ENTITY_ID.name: entity,
            search_attributes.CORRELATION_ID.name: correlation,
        }
        used = {k: v for k, v in filters.items() if v is not None}
        if used and not services.settings.temporal.search_attributes:
            raise Problem(400, "filters need search attributes (KARMA_TEMPORAL__SEARCH_ATTRIBUTES)")
        clauses = [f"WorkflowType = {_quoted('ActionWorkflow')}"]
        clauses += [f"{k} = {_quoted(v)}" for k, v in used.items()]
        for name, when, op in (
            ("started_after", started_after, ">="),
            ("started_before", started_before, "<"),
        ):
            if when is not None:
                instant = _instant(name, when)
                clauses.append(f"StartTime {op} {_quoted(instant.isoformat())}")
        query = " AND ".join(clauses)
        token = _page_token(page_token)
        request = ListWorkflowExecutionsRequest(
            namespace=client.temporal.namespace,
            page_size=page_size,
            next_page_token=token or b"",
            query=query,
        )
        try:
            # Not retried: a token Temporal does not know is refused at once, not in minutes.
            answer = await client.temporal.workflow_service.list_workflow_executions(
                request, retry=False, timeout=timedelta(seconds=10)
            )
        except RPCError as exc:
            busy = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
            if token is not None and exc.status not in busy:
                reason = f"Temporal refused it: {exc.message}"
                raise Problem(422, reason, [FieldError(field="page_token", reason=reason)]) from exc
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise Problem(400, f"Temporal refused the listing: {exc.message}") from exc
            raise
        next_token = answer.next_page_token
        return ActionPage(
            actions=[
                _summary(info)
                for info in answer.executions
                if info.execution.workflow_id.startswith(WORKFLOW_ID_PREFIX)
            ],
            next_page_token=base64.urlsafe_b64encode(next_token).decode() if next_token else None,
        )

    @app.get(
        "/v1/actions/{action_id}",
        response_model=ActionStatus,
        tags=["actions"],
        responses=problems(404, 409, 422, 503),
    )
    async def get_action(
        *, caller: Caller = reader, action_id: Annotated[str, _ACTION_ID]
    ) -> ActionStatus:
        """State, attempt, outputs, error and transitions (from the ledger once Temporal no
        longer holds the action)."""
        return (await visible(caller, action_id))[1]

    @app.get(
        "/v1/actions/{action_id}/transitions",
        tags=["actions"],
        response_model=list[Transition],
        responses={200: {"content": {"text/event-stream": {}}}, **problems(404, 409, 422, 503)},
    )
    async def transitions(
        *,
        caller: Caller = reader,
        request: Request,
        action_id: Annotated[str, _ACTION_ID],
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> Any:
        """The action's transitions. With `Accept: text/event-stream`: one event per
        transition (`id` = seq), live until the terminal one; a reconnect with
        `Last-Event-ID` resumes after it, with no gap and no repeat."""
        handle, status = await visible(caller, action_id)  # 404 before any stream starts
        if "text/event-stream" not in request.headers.get("accept", ""):
            return status.transitions
        after = _last_seq(last_event_id)
        newest = max((t.seq for t in status.transitions), default=0)
        if after > newest:
            reason = f"no event {after} yet (the newest is {newest})"
            raise Problem(422, reason, [FieldError(field="Last-Event-ID", reason=reason)])
        if status.state.is_terminal and after >= newest:
            return Response(status_code=204)  # ended: nothing follows (EventSource stops)
        try:
            await services.hub.ready(timeout=10)
        except TimeoutError as exc:
            raise Problem(503, "no live transitions: Kafka does not answer") from exc

        async def events() -> AsyncIterator[ServerSentEvent]:
            # Subscribed before the status is read: nothing recorded in between is missed.
            async with services.hub.subscribe(action_id) as sub:
                status = await handle.status()
                stream = _stream(
                    handle,
                    status,
                    sub,
                    after,
                    reads=reads,
                    history=services.history,
                    resync_s=services.settings.api.heartbeat_s,
                )
                try:
                    async for transition in stream:
                        yield ServerSentEvent(
                            data=transition.model_dump_json(),
                            id=str(transition.seq),
                            event=transition.event_type.value,
                        )
                except StreamEnded as exc:
                    yield ServerSentEvent(data=json.dumps({"detail": str(exc)}), event="error")

        return EventSourceResponse(
            events(), ping=services.settings.api.heartbeat_s, send_timeout=SEND_TIMEOUT_S
        )

    @app.post(
        "/v1/actions/{action_id}/cancel",
        status_code=202,
        tags=["actions"],
        responses=problems(400, 404, 409, 422, 503),
    )
    async def cancel(
        *, caller: Caller = requester, action_id: Annotated[str, _ACTION_ID]
    ) -> dict[str, str]:
        """Ask the action to cancel (a transactional one compensates first); 409 once it
        has ended. A stuck action (no worker answers) can be cancelled too."""
        handle = client.handle(action_id)
        await confine(caller, action_id)
        try:
            closed = await handle.workflow_closed()
        except ActionNotFoundError:
            status = await handle.status()  # gone from Temporal: the ledger may know (or 404)
            raise Problem(409, f"action {action_id} has ended ({status.state.value})") from None
        if closed:
            raise Problem(409, f"action {action_id} has ended")
        try:
            status = await handle.status()
        except ActionUnreadableError:
            pass  # no worker answers: Temporal takes the cancellation all the same
        else:
            if status.state.is_terminal:  # ended; its workflow is finishing
                raise Problem(409, f"action {action_id} has ended ({status.state.value})")
        await handle.cancel()
        return {"action_id": action_id, "status": "cancel requested"}

    @app.post(
        "/v1/actions/{action_id}/callbacks",
        status_code=202,
        tags=["actions"],
        responses=problems(400, 404, 409, 422, 503),
    )
    async def callback(
        *, caller: Caller = requester, action_id: Annotated[str, _ACTION_ID], event: dict[str, Any]
    ) -> dict[str, Any]:
        """Deliver an external event to the action (as `karma signal` does)."""
        if event.get("action_id", action_id) != action_id:
            reason = "differs from the action in the path"
            raise Problem(422, reason, [FieldError(field="action_id", reason=reason)])
        await confine(caller, action_id)
        try:
            delivered = await client.handle(action_id).callback({**event, "action_id": action_id})
        except ActionEndedError as exc:
            raise Problem(409, str(exc)) from exc
        return delivered.model_dump(mode="json")

    @app.post(
        "/v1/actions/{action_id}/decision",
        tags=["actions"],
        responses=problems(400, 404, 409, 422, 503),
    )
    async def decide(
        *, caller: Caller = decider, action_id: Annotated[str, _ACTION_ID], body: DecisionBody
    ) -> Any:
        """Approve or reject an interactive action waiting for a decision: 409 when it is
        not waiting, 422 when the decision is malformed (the workflow's own reasons)."""
        handle = client.handle(action_id)

        async def refuse_unless_waiting() -> None:
            status = (await visible(caller, action_id))[1]
            if (
                status.state is not ActionState.WAITING
                or status.decision_request is None
                or status.decision is not None  # decided; DECIDED not recorded yet
            ):
                raise Problem(409, f"action {action_id} is not waiting for a decision "
                              f"({status.state.value})")  # fmt: skip

        await refuse_unless_waiting()
        try:
            decided = await handle.decide(
                body.decision, by=_decider(body.by, caller), reason=body.reason
            )
        except DecisionRefusedError as exc:
            await refuse_unless_waiting()  # it stopped waiting meanwhile: 409
            raise Problem(422, str(exc)) from exc
        return decided.model_dump(mode="json")

    @app.get(
        "/v1/action-types",
        response_model=list[ActionType],
        tags=["registry"],
        responses=problems(),
    )
    async def action_types(*, caller: Caller = reader) -> list[ActionType]:
        """Every registered action type with the JSON Schema of its params and outputs."""
        return [_action_type(r.meta) for r in client.registry]

    @app.get(
        "/v1/action-types/{action_type}",
        response_model=ActionType,
        tags=["registry"],
        responses=problems(404, 422),
    )
    async def action_type(
        *, caller: Caller = reader, action_type: Annotated[str, _NAME]
    ) -> ActionType:
        if action_type not in client.registry:
            raise Problem(404, str(UnknownActionError(action_type, client.registry.types)))
        described = _action_type(client.registry.meta(action_type))
        # The objects each reference parameter may name, where its resolver can list them.
        described.params_schema = await offer_choices(
            described.params_schema, services.settings.services
        )
        return described

    @app.get(
        "/v1/dlq", response_model=list[DeadLetterView], tags=["dlq"], responses=problems(422, 503)
    )
    async def dead_letters(
        *,
        caller: Caller = reader,
        topic: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[DeadLetterView]:
        """The newest dead letters (of one source topic), oldest first: why each was set
        aside and its original bytes."""
        letters = await read_dead_letters(services.settings.kafka)
        if topic is not None:
            letters = [letter for letter in letters if letter.topic == topic]
        if caller.tenant:
            letters = [letter for letter in letters if _letter_tenant(letter) == caller.tenant]
        letters.sort(key=lambda letter: letter.ts)  # newest last, across partitions
        return [DeadLetterView.of(letter) for letter in letters[-limit:]]

    @app.post(
        "/v1/dlq/replay",
        response_model=list[DeadLetterView],
        tags=["dlq"],
        responses=problems(400, 422, 503),
    )
    async def replay_dead_letters(
        *, caller: Caller = admin, body: ReplayBody
    ) -> list[DeadLetterView]:
        """Publish the chosen letters' original bytes to their topics again (a request
        replayed twice still starts one action). Needs an admin key of every tenant."""
        if caller.tenant:
            raise Problem(403, "replay needs an admin key not bound to a tenant")
        replayed = await replay(services.settings.kafka, body.positions)
        return [DeadLetterView.of(letter) for letter in replayed]

    @app.get(
        "/v1/ledger/actions/{action_id}",
        response_model=list[LedgerEvent],
        tags=["ledger"],
        responses=problems(404, 409, 422, 503),
    )
    async def ledger_action(
        *, caller: Caller = reader, action_id: Annotated[str, _ACTION_ID]
    ) -> Sequence[LedgerEvent]:
        """The ledger's rows of the action (ClickHouse), as `karma ledger --json` prints
        them; served by a process that can read the ledger."""
        if services.ledger is None:
            raise Problem(503, "this process does not read the ledger (ask the one that owns it)")
        await confine(caller, action_id)
        events = await services.ledger(action_id)
        if not events:
            raise Problem(404, f"the ledger holds no transitions of {action_id!r}")
        return events

    return app


_INSTANT = Query(
    max_length=64,
    description="ISO 8601 with a timezone, e.g. 2026-11-25T10:00:00Z",
    json_schema_extra={"format": "date-time"},
)


def _instant(field: str, text: str) -> datetime:
    """An ISO 8601 time with a timezone, in UTC; a 422 problem naming `field` otherwise."""
    try:
        when = datetime.fromisoformat(text)
        if when.tzinfo is not None:
            return when.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time; or past year 1 or 9999 in UTC
        pass
    reason = "must be an ISO 8601 time with a timezone (e.g. 2026-11-25T10:00:00Z)"
    raise Problem(422, reason, [FieldError(field=field, reason=reason)])


def _decider(by: str, caller: Caller) -> str:
    """Who decided, as the ledger keeps it: the name given, and the key that was used (a
    key cannot decide as someone else unseen)."""
    if not caller.key_id or not by.strip():
        return by
    suffix = f" (key {caller.key_id})"
    return by.strip()[: MAX_NAME_CHARS - len(suffix)] + suffix


def _letter_tenant(letter: DeadLetter) -> str:
    """The tenant a dead letter names (`tenant` or `tags.tenant` of a JSON object), or ""
    when it names none or cannot be read: such letters only keys of every tenant see."""
    try:
        document = json.loads(letter.value or b"")
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read
        return ""
    if not isinstance(document, dict):
        return ""
    tags = document.get("tags")
    tenant = document.get("tenant") or (tags.get("tenant") if isinstance(tags, dict) else "")
    return tenant if isinstance(tenant, str) else ""


_ACTION_ID = Path(min_length=1, max_length=MAX_ID_CHARS)
_NAME = Path(min_length=1, max_length=MAX_NAME_CHARS)


@dataclass
class _Read:
    started: float
    task: asyncio.Future[tuple[ActionStatus, bool]]


class SharedReads:
    """One status read per action at a time, shared by every stream of it: 500 streams of
    one action that need its status cost one query, not 500."""

    def __init__(self) -> None:
        self._reads: dict[str, _Read] = {}

    async def status(self, handle: ActionHandle, *, not_before: float) -> tuple[ActionStatus, bool]:
        """(status, whether the workflow has closed) read after `not_before` (loop time)."""
        loop = asyncio.get_running_loop()
        read = self._reads.get(handle.action_id)
        if (
            read is None
            or read.started < not_before
            or (read.task.done() and read.task.exception() is not None)
        ):
            read = _Read(loop.time(), asyncio.ensure_future(self._read(handle)))
            self._reads[handle.action_id] = read
            read.task.add_done_callback(lambda _: self._forget(handle.action_id, read))
        return await asyncio.shield(read.task)

    def _forget(self, action_id: str, read: _Read) -> None:
        """Kept a moment after it is done (streams woken together share it), then dropped."""

        def drop() -> None:
            if self._reads.get(action_id) is read:
                del self._reads[action_id]

        asyncio.get_running_loop().call_later(KEEP_READ_S, drop)

    @staticmethod
    async def _read(handle: ActionHandle) -> tuple[ActionStatus, bool]:
        status = await handle.status()
        closed = False if status.state.is_terminal else await handle.workflow_closed()
        return status, closed


class StreamEnded(Exception):
    """The stream cannot go on (the workflow closed without a terminal transition)."""


def _ends(transition: Transition) -> bool:
    state = transition.event_type.state
    return state is not None and state.is_terminal


async def _stream(
    handle: ActionHandle,
    status: ActionStatus,
    sub: Subscription,
    after: int,
    *,
    reads: SharedReads,
    history: HistoryRead | None,
    resync_s: float,
) -> AsyncIterator[Transition]:
    """What the action recorded after `after`, then live from the hub, in seq order. The
    status (one read per action, shared by its streams) fills what the hub does not deliver
    in order (a gap, a subscriber that fell behind, `resync_s` of quiet); the ledger fills
    what the status no longer holds (a stateful action's earlier runs).

    Raises:
        StreamEnded: the workflow closed without recording a terminal transition.
    """
    loop = asyncio.get_running_loop()
    last = after
    while True:
        pending = [t for t in status.transitions if t.seq > last]
        if pending and pending[0].seq > last + 1 and history is not None:
            first = pending[0].seq
            older = [t for t in await history(handle.action_id) if last < t.seq < first]
            pending = sorted(older, key=lambda t: t.seq) + pending
        for transition in pending:
            last = transition.seq
            yield transition
            if _ends(transition):
                return
        if status.state.is_terminal:
            return  # ended, and nothing after `last`
        while True:  # live: in order from the hub until something is missing or quiet
            try:
                live = await asyncio.wait_for(sub.queue.get(), resync_s)
            except TimeoutError:
                not_before = loop.time() - resync_s  # a read since the quiet began will do
                break
            if live is None or sub.ending:
                return  # the process is stopping: the client resumes with Last-Event-ID
            transition = live
            if sub.overflowed or transition.seq > last + 1:
                not_before = loop.time()  # recorded before it reached us: read from now
                break
            if transition.seq <= last:
                continue  # seen already (from the status)
            last = transition.seq
            yield transition
            if _ends(transition):
                return
        sub.overflowed = False
        status, closed = await _resync(reads, handle, not_before)
        if (
            closed
            and not status.state.is_terminal
            and not any(t.seq > last for t in status.transitions)
        ):
            raise StreamEnded(
                f"the workflow of {handle.action_id} closed without a terminal transition "
                f"(last: {status.state.value})"
            )


RESYNC_ATTEMPTS = 8  # about a minute of backoff before a stream gives up on Temporal
RESYNC_FIRST_DELAY_S = 0.5


async def _resync(
    reads: SharedReads, handle: ActionHandle, not_before: float
) -> tuple[ActionStatus, bool]:
    """The status a stream resumes from. A query Temporal could not answer in time (a
    busy worker) is asked again with backoff rather than ending every stream at once;
    the stream's heartbeats keep its connection meanwhile."""
    delay = RESYNC_FIRST_DELAY_S
    for attempt in range(RESYNC_ATTEMPTS):
        try:
            return await reads.status(handle, not_before=not_before)
        except RPCError:
            if attempt == RESYNC_ATTEMPTS - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
            not_before = asyncio.get_running_loop().time()
    raise AssertionError("unreachable")


def _quoted(value: str) -> str:
    """A string literal of Temporal's visibility query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _page_token(token: str | None) -> bytes | None:
    if not token:
        return None
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        reason = "not a page token this API gave out"
        raise Problem(422, reason, [FieldError(field="page_token", reason=reason)]) from exc


def _last_seq(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit()):
        reason = "must be the id (seq) of an event this stream sent"
        raise Problem(422, reason, [FieldError(field="Last-Event-ID", reason=reason)])
    return int(value)


def _summary(info: WorkflowExecutionInfo) -> ActionSummary:
    attributes = decode_typed_search_attributes(info.search_attributes)

    def get(key: Any) -> str:
        return str(attributes.get(key) or "")

    def when(stamp: Timestamp, present: bool) -> str | None:
        return stamp.ToDatetime().replace(tzinfo=UTC).isoformat() if present else None

    return ActionSummary(
        action_id=action_id_from_workflow_id(info.execution.workflow_id),
        action_type=get(search_attributes.ACTION_TYPE),
        state=get(search_attributes.STATE) or WorkflowExecutionStatus(info.status).name,
        tenant=get(search_attributes.TENANT),
        entity_id=get(search_attributes.ENTITY_ID),
        correlation_id=get(search_attributes.CORRELATION_ID),
        started_at=when(info.start_time, info.HasField("start_time")),
        closed_at=when(info.close_time, info.HasField("close_time")),
    )


def _action_type(meta: ActionMeta) -> ActionType:
    outputs = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            o.name: {"description": o.description, "x-karma-type": o.type.value}
            for o in meta.outputs
        },
    }
    return ActionType(
        type=meta.type,
        name=meta.name,
        description=meta.description,
        version=meta.version,
        mode=meta.mode.value,
        category=meta.category,
        params_schema=params_json_schema(meta),
        outputs_schema=outputs,
    )
