"""A reference external service: takes jobs over HTTP, reports back through Kafka.

It plays the batch scheduler or supplier of the seeds for the demo and the tests:
`POST /jobs` answers at once with a job id, then the service publishes `job.progress`
events and finally `job.completed` or `job.failed` to the callback topic the caller named
(`X-Karma-Callback-Topic`), about the action named by `X-Karma-Action-Id` (or, for an
`anonymous` job, only about its own job id, as systems that know nothing of Karma do).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from karma.component import Component
from karma.envelope import Envelope, EventSource
from karma.errors import field_errors
from karma.executor import ACTION_ID_HEADER, CALLBACK_TOPIC_HEADER
from karma.kafka_config import producer_kwargs
from karma.reference_oauth import TOKEN_LIFETIME_S, TokenIssuer
from karma.settings import KafkaSettings

log = logging.getLogger(__name__)

SYSTEM = "jobs-service"


class JobRequest(BaseModel):
    steps: int = Field(default=3, ge=0, le=1000, description="progress events before the end")
    step_seconds: float = Field(default=0.2, ge=0, le=3600)
    outcome: Literal["succeeded", "failed", "silent"] = Field(
        default="succeeded", description="'silent' never reports an end"
    )
    result: dict[str, Any] = Field(default_factory=dict)
    error: str = "the job failed"
    anonymous: bool = Field(default=False, description="events name only the job id")


class ReferenceService(Component):
    """The service; `start()` returns once it accepts jobs at `url`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        oauth_clients: Mapping[str, str] | None = None,
        token_lifetime_s: float = TOKEN_LIFETIME_S,
    ) -> None:
        self._kafka = kafka
        self._producer = AIOKafkaProducer(**producer_kwargs(kafka))
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: set[concurrent.futures.Future[None]] = set()
        self._serving = False
        # `GET /ping` answers `ping_status` (200; `POST /ping/status {"status": 503}` makes
        # it fail, for circuit breakers) and counts the calls that reached it.
        self.ping_status = 200
        self.pings = 0
        # The inventory behind `/refs/...`: kind -> {canonical id: name}.
        self.inventory: dict[str, dict[str, str]] = {
            "cluster": {"cls-eu-1": "prod-eu", "cls-us-1": "prod-us", "cls-dev-1": "dev"},
            "model": {"mdl-7f3a": "llama-3-8b", "mdl-91c2": "mistral-7b"},
            "endpoint": {"ep-1001": "chat-prod", "ep-1002": "chat-canary"},
        }
        self.health_status = 200  # what GET /health answers
        # `POST /hooks/<name>` keeps each JSON body it gets (a webhook receiver, for notify).
        self.hooks: dict[str, list[Any]] = {}
        # `POST /oauth/token` (client credentials) and `GET /protected` (a bearer token).
        self.oauth = TokenIssuer(oauth_clients, lifetime_s=token_lifetime_s)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._producer.start()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._serving = True
        log.info("reference service at %s", self.url)

    async def _stop(self) -> None:
        if self._serving:  # shutdown() waits for serve_forever to end: only once it runs
            await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*(asyncio.wrap_future(j) for j in self._jobs), return_exceptions=True)
        await self._producer.stop()

    def submit(self, job: JobRequest, action_id: str, topic: str) -> str:
        """Accept a job (from the HTTP thread); its events follow on the service's loop."""
        assert self._loop is not None, "start() first"
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        future = asyncio.run_coroutine_threadsafe(
            self._run(job_id, job, action_id, topic), self._loop
        )
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)
        return job_id

    async def _run(self, job_id: str, job: JobRequest, action_id: str, topic: str) -> None:
        action = "" if job.anonymous else action_id
        for step in range(1, job.steps + 1):
            await asyncio.sleep(job.step_seconds)
            percent = round(100 * step / (job.steps + 1), 1)
            await self._publish(
                topic,
                job_id,
                action,
                "job.progress",
                step,
                percent=percent,
                message=f"step {step} of {job.steps}",
            )
        await asyncio.sleep(job.step_seconds)
        if job.outcome == "succeeded":
            await self._publish(
                topic, job_id, action, "job.completed", job.steps + 1, result=job.result
            )
        elif job.outcome == "failed":
            await self._publish(topic, job_id, action, "job.failed", job.steps + 1, error=job.error)

    async def _publish(
        self, topic: str, job_id: str, action_id: str, event_type: str, n: int, **attrs: Any
    ) -> None:
        event = Envelope(
            event_id=f"{job_id}:{n}",
            ts=datetime.now(UTC),
            event_type=event_type,
            action_id=action_id,
            source=EventSource(system=SYSTEM),
            attrs={"external_workflow_id": job_id, **attrs},
        )
        await self._producer.send_and_wait(
            topic, key=job_id.encode(), value=event.model_dump_json().encode()
        )

    def inventory_answer(self, path: str) -> tuple[int, dict[str, Any]]:
        """`GET /refs/<kind>`: the objects of a kind; `GET /refs/<kind>/<id or name>`: one
        (what Karma's built-in reference resolvers ask)."""
        kind, _, wanted = path.partition("/")
        objects = self.inventory.get(unquote(kind))
        if objects is None:
            return 404, {"error": f"no kind {kind!r}"}
        if not wanted:
            return 200, {"items": [{"id": i, "name": n} for i, n in objects.items()]}
        wanted = unquote(wanted)
        for object_id, name in objects.items():
            if wanted in (object_id, name):
                return 200, {"id": object_id, "name": name}
        return 404, {"error": f"no {kind} {wanted!r}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/health":
                    ok = service.health_status < 300
                    self._reply(service.health_status, {"status": "ok" if ok else "failing"})
                elif self.path == "/protected":
                    self._reply(*service.oauth.protected(self.headers.get("Authorization")))
                elif self.path == "/ping":
                    service.pings += 1
                    self._reply(service.ping_status, {"pings": service.pings})
                elif self.path.startswith("/refs/"):
                    self._reply(*service.inventory_answer(self.path.removeprefix("/refs/")))
                else:
                    self._reply(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                if self.path == "/oauth/token":
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length)
                    self._reply(*service.oauth.token(self.headers.get("Authorization"), body))
                    return
                if self.path == "/ping/status":
                    length = int(self.headers.get("Content-Length") or 0)
                    try:
                        status = int(json.loads(self.rfile.read(length) or b"{}")["status"])
                    except (ValueError, KeyError, TypeError):
                        self._reply(400, {"error": 'send {"status": <100..599>}'})
                        return
                    if not 100 <= status <= 599:
                        self._reply(400, {"error": "a status is 100..599"})
                        return
                    service.ping_status = status
                    self._reply(200, {"status": status})
                    return
                if self.path.startswith("/hooks/"):
                    length = int(self.headers.get("Content-Length") or 0)
                    try:
                        body = json.loads(self.rfile.read(length) or b"null")
                    except ValueError:
                        self._reply(400, {"error": "not JSON"})
                        return
                    service.hooks.setdefault(self.path.removeprefix("/hooks/"), []).append(body)
                    self._reply(200, {"ok": True})
                    return
                if self.path != "/jobs":
                    self._reply(404, {"error": f"no route {self.path}"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    job = JobRequest.model_validate_json(self.rfile.read(length) or b"{}")
                except PydanticValidationError as exc:
                    self._reply(400, {"errors": [str(e) for e in field_errors(exc)]})
                    return
                topic = self.headers.get(CALLBACK_TOPIC_HEADER) or service._kafka.topics.callbacks
                action_id = self.headers.get(ACTION_ID_HEADER) or ""
                self._reply(202, {"job_id": service.submit(job, action_id, topic)})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("jobs-service: " + format, *args)

        return Handler
