"""Temporal's remote codec protocol (`POST /codec/decode`, `/codec/encode`), so the Web UI
and `temporal` CLI show what encrypted payloads say. Bodies are `{"payloads": [...]}` in
protobuf JSON (bytes as base64), as the Web UI sends them.

Who may call: a key with the `read` scope not bound to a tenant (payloads are any
tenant's), sent as a header or as the console's session cookie (a Web UI configured to
include credentials sends it; reading the answer cross-origin needs the origin in
`KARMA_CODEC__UI_ORIGINS`). With `KARMA_CODEC__UI_WITHOUT_KEY`, those origins need no key
(the dev server's Web UI sends none): honoured only while the API listens on loopback,
because an `Origin` header is easily forged by a client that is not a browser.
"""

from __future__ import annotations

import logging
from typing import Any

from cryptography.exceptions import InvalidTag
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from karma.api.auth import Guard
from karma.api.keys import Scope
from karma.api.problems import Problem
from karma.codec import EncryptionCodec, UnknownKeyError
from karma.settings import Settings

ALLOWED_HEADERS = "content-type, x-namespace, authorization, x-api-key"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
log = logging.getLogger(__name__)


def install_codec_routes(app: FastAPI, settings: Settings, guard: Guard) -> None:
    codec = EncryptionCodec.from_settings(settings.codec)
    origins = frozenset(o.rstrip("/") for o in settings.codec.ui_origins)
    keyless = settings.codec.ui_without_key and settings.api.host in LOOPBACK
    if settings.codec.ui_without_key and not keyless:
        log.warning(
            "KARMA_CODEC__UI_WITHOUT_KEY ignored: the API listens on %s, not loopback",
            settings.api.host,
        )

    def cors(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin", "")
        if origin not in origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }

    async def payloads_of(request: Request) -> Payloads:
        if not (keyless and request.headers.get("origin", "") in origins):
            # A cross-site page cannot read the answer (CORS), so the cookie alone will do.
            caller = await guard.authenticate_request(request, Scope.READ, cookie_changes=True)
            if caller.tenant:
                raise Problem(403, "payloads are any tenant's: decoding needs a key of all")
        body = await request.body()
        try:
            return json_format.Parse(body or b"{}", Payloads())
        except json_format.ParseError as exc:
            raise Problem(422, f"not a Payloads document: {exc}"[:500]) from exc

    def answer(request: Request, payloads: list[Any], skipped: int = 0) -> JSONResponse:
        document = json_format.MessageToDict(Payloads(payloads=payloads))
        headers = cors(request)
        if skipped:
            headers["X-Karma-Undecoded"] = str(skipped)
        return JSONResponse({"payloads": document.get("payloads", [])}, headers=headers)

    @app.options("/codec/{operation}", include_in_schema=False)
    async def preflight(request: Request, operation: str) -> Response:
        return Response(status_code=204, headers=cors(request))

    @app.post("/codec/decode", tags=["codec"], include_in_schema=False)
    async def decode(request: Request) -> JSONResponse:
        """Decrypt what this deployment's keys encrypted; other payloads come back as they
        are (`X-Karma-Undecoded` counts those that could not be decrypted)."""
        payloads = await payloads_of(request)
        if codec is None:
            return answer(request, list(payloads.payloads))
        out, skipped = [], 0
        for payload in payloads.payloads:
            try:
                out.append(codec.decrypt(payload))
            except (UnknownKeyError, InvalidTag, ValueError):
                out.append(payload)
                skipped += 1
        return answer(request, out, skipped)

    @app.post("/codec/encode", tags=["codec"], include_in_schema=False)
    async def encode(request: Request) -> JSONResponse:
        """Encrypt with the primary key (as clients and workers do)."""
        payloads = await payloads_of(request)
        if codec is None:
            return answer(request, list(payloads.payloads))
        return answer(request, [codec.encrypt(p) for p in payloads.payloads])
