"""Delivering callback events from `actions.events` to the actions that wait for them."""

from __future__ import annotations

import asyncio
import logging
import time

from bridge.inbound import Callback, Inbound, decode_callback
from bridge.ingress_consumer import Unusable
from karma import names, search_attributes
from karma.client import KarmaClient
from karma.errors import ActionEndedError, ActionNotFoundError
from karma.ids import action_id_from_workflow_id
from karma.settings import LimitsSettings

log = logging.getLogger(__name__)

RESOLVE_MAX_DELAY_SECONDS = 2.0
MIN_GRACE_SECONDS = 5.0


class CallbackIngress:
    """Signals each event to its action: directly when the event names the action,
    otherwise through the `KarmaExternalId` search attribute of the running actions.

    Visibility is eventually consistent (and an event may come before its action waits),
    so resolving an external id is retried until `resolve_timeout` seconds after the event
    reached Kafka (its record timestamp, so a restart does not start the wait again); after
    that the event is an orphan and goes to the DLQ. The wait holds back only later events
    about the same action or external id (`order_key`), never the partition.
    """

    def __init__(
        self,
        client: KarmaClient,
        *,
        resolve_timeout: float,
        search_attributes: bool = True,
        limits: LimitsSettings | None = None,
    ) -> None:
        self._client = client
        self._resolve_timeout = resolve_timeout
        self._indexed = search_attributes
        self._limits = limits or LimitsSettings()
        # Decoded once for the order key, used again when handled.
        self._decoded: dict[tuple[str, int, int], Callback] = {}
        self.delivered = 0

    def order_key(self, message: Inbound) -> str:
        """Events about one action (or one external id) are delivered in order."""
        callback = self._decoded[message.position] = decode_callback(message, self._limits)
        if callback.action_id:
            return f"action:{callback.action_id}"
        return f"external:{callback.external_workflow_id}"

    async def __call__(self, message: Inbound) -> None:
        callback = self._decoded.pop(message.position, None) or decode_callback(
            message, self._limits
        )
        action_ids = (
            [callback.action_id]
            if callback.action_id
            else await self._resolve(callback, self._deadline(message))
        )
        delivered = [a for a in action_ids if await self._signal(a, callback)]
        if not delivered:
            raise Unusable(f"the action for {callback.target} has already ended")
        self.delivered += 1
        log.info("event %s delivered to %s", callback.event.event_id, ", ".join(delivered))

    def _deadline(self, message: Inbound) -> float:
        """When to give up resolving, on the event loop's clock: `resolve_timeout` after the
        message reached Kafka (never later than that from now: producers set timestamps),
        but not sooner than a short grace from now (visibility lags a little; a backlog
        read after downtime deserves more than one look)."""
        loop = asyncio.get_running_loop()
        now = time.time()
        arrived = min(message.timestamp_ms / 1000, now) if message.timestamp_ms > 0 else now
        grace = min(self._resolve_timeout, MIN_GRACE_SECONDS)
        return loop.time() + max(arrived + self._resolve_timeout - now, grace)

    async def _signal(self, action_id: str, callback: Callback) -> bool:
        """Deliver the callback as the SDK does (its size checked first); False if the
        action found through its external id has ended since."""
        try:
            await self._client.handle(action_id).callback(callback.event)
        except ActionNotFoundError as exc:
            if callback.action_id:
                raise Unusable(
                    f"the callback names action {action_id!r}, which does not exist"
                ) from exc
            return False
        except ActionEndedError as exc:
            if callback.action_id:
                raise Unusable(f"the callback names action {action_id!r}, which has ended") from exc
            return False
        return True

    async def _resolve(self, callback: Callback, deadline: float) -> list[str]:
        """The running actions waiting on the callback's external id."""
        external = callback.external_workflow_id
        if not self._indexed:
            raise Unusable(
                f"cannot find the action of external id {external!r}: search attributes are "
                "off (KARMA_TEMPORAL__SEARCH_ATTRIBUTES=false); name the action_id instead"
            )
        query = (
            f"{search_attributes.EXTERNAL_ID.name} = {search_attributes.quote(external)} "
            f"AND WorkflowType = '{names.ACTION_WORKFLOW}' AND ExecutionStatus = 'Running'"
        )
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            found = [
                action_id_from_workflow_id(wf.id)
                async for wf in self._client.temporal.list_workflows(query)
            ]
            if found:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unusable(
                    f"orphan event: no running action waits for external id {external!r} "
                    f"(looked for {self._resolve_timeout:g}s after it arrived)"
                )
            log.debug("no action waits for %r yet; looking again in %.1fs", external, delay)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, RESOLVE_MAX_DELAY_SECONDS)
