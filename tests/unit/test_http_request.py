"""`http_request` against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from karma.actions.http_request import HttpRequestExecutor
from karma.breakers import BREAKERS, BreakerPolicy, BreakerSettings
from karma.errors import PermanentError, TransientError
from karma.executor import ActionContext
from karma.params import validate_params

RESPONSES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/ok": (200, {"Content-Type": "application/json"}, b'{"done": true}'),
    "/created": (201, {}, b"plain text"),
    "/busy": (429, {"Retry-After": "7"}, b""),
    "/busy-date": (429, {}, b""),  # Retry-After set per request below
    "/down": (503, {}, b""),
    "/missing": (404, {}, b""),
}


@pytest.fixture(autouse=True)
def no_breakers() -> Iterator[None]:
    """These tests judge each answer alone: the breakers (tests/unit/test_breakers.py)
    would open after the failures they provoke."""
    BREAKERS.configure(BreakerSettings(default=BreakerPolicy(enabled=False)))
    yield
    BREAKERS.configure(BreakerSettings())


SEEN: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        SEEN.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, headers, payload = RESPONSES[self.path]
        self.send_response(status)
        if self.path == "/busy-date":
            when = datetime.now(UTC) + timedelta(seconds=30)
            self.send_header("Retry-After", format_datetime(when, usegmt=True))
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


async def call(**params: Any) -> Any:
    executor = HttpRequestExecutor()
    valid = validate_params(executor.meta, params)
    ctx = ActionContext(action_id="act_1", action_type="http_request", params=valid, attempt=1)
    return await executor.execute(ctx)


async def test_success_returns_status_and_json_body(base_url: str) -> None:
    result = await call(
        url=f"{base_url}/ok", method="POST", body={"a": 1}, headers={"Authorization": "t"}
    )
    assert result.outputs["status_code"] == 200
    assert result.outputs["body"] == {"done": True}
    sent = SEEN[-1]
    assert json.loads(sent["body"]) == {"a": 1}
    assert sent["headers"]["Authorization"] == "t"


async def test_expected_status_and_text_bodies(base_url: str) -> None:
    result = await call(url=f"{base_url}/created", expected_status=201)
    assert result.outputs["body"] == "plain text"
    with pytest.raises(PermanentError, match="answered 201, expected 200"):
        await call(url=f"{base_url}/created")


async def test_429_is_transient_and_honours_retry_after(base_url: str) -> None:
    with pytest.raises(TransientError) as caught:
        await call(url=f"{base_url}/busy")
    assert caught.value.retry_after == 7
    with pytest.raises(TransientError) as caught:
        await call(url=f"{base_url}/busy-date")
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 30


async def test_5xx_and_connection_errors_are_transient(base_url: str) -> None:
    with pytest.raises(TransientError, match="answered 503"):
        await call(url=f"{base_url}/down")
    with pytest.raises(TransientError, match="ConnectError"):
        await call(url="http://127.0.0.1:1/", timeout_seconds=1)


async def test_other_4xx_and_bad_urls_are_permanent(base_url: str) -> None:
    with pytest.raises(PermanentError, match="answered 404"):
        await call(url=f"{base_url}/missing")
    with pytest.raises(PermanentError, match="url"):
        await call(url="ftp://example.invalid/file")
