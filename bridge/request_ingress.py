"""Starting actions from requests on `actions.requested`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bridge.inbound import Inbound, decode_request
from karma import metrics
from karma.client import KarmaClient
from karma.settings import LimitsSettings
from karma.telemetry import continued_from

log = logging.getLogger(__name__)


class RequestIngress:
    """Starts one ActionWorkflow per request. The workflow id derives from the idempotency
    key, so a request read twice is one action; Karma's own mirrored transitions on the
    same topic are recognised and skipped, so nothing loops."""

    def __init__(self, client: KarmaClient, limits: LimitsSettings | None = None) -> None:
        self._client = client
        self._limits = limits or LimitsSettings()
        self.started = 0
        self.duplicates = 0

    def order_key(self, message: Inbound) -> str:
        """Requests for the same action are handled in order (the first one starts it)."""
        if message.is_transition:
            return f"{message.topic}:{message.partition}:{message.offset}"
        request = decode_request(message, datetime.now(UTC), self._limits)
        if request is None:  # a mirrored transition: nothing to do, no order to keep
            return f"{message.topic}:{message.partition}:{message.offset}"
        return request.action_id

    async def __call__(self, message: Inbound) -> None:
        # Decoded again rather than kept from `order_key`: a request that waited behind
        # another for the same action may have expired meanwhile (its ttl is checked now).
        request = decode_request(message, datetime.now(UTC), self._limits)
        if request is None:
            return
        # Bad types, parameters and sizes raise ValidationError: the message is dead-lettered.
        carrier = {k: v.decode("latin-1") for k, v in message.headers.items()}
        with continued_from(carrier):  # a producer's traceparent header
            handle = await self._client.submit(request)
        metrics.INGRESS.labels("started" if handle.created else "duplicate").inc()
        if handle.created:
            self.started += 1
            log.info(
                "started %s (%s) from %s", request.action_id, request.action_type, message.origin
            )
        else:
            self.duplicates += 1
            log.info("%s already exists; %s is a duplicate", request.action_id, message.origin)
