"""The activities that roll a transactional action back: compensate one step, and report
what could not be undone."""

from __future__ import annotations

import asyncio
import json

from temporalio import activity

from activities._attempt import (
    AttemptClock,
    application_error,
    heartbeat_forever,
    logger_for,
)
from bridge.dlq import DeadLetter, DeadLetterPublisher
from karma import names
from karma.credentials import CredentialManager
from karma.errors import PermanentError
from karma.registry import ActionRegistry
from karma.saga import CompensationContext, TransactionalActionExecutor
from karma.secrets import SecretSealer
from karma.workflow_io import CompensateInput, CompensationDone, ExecuteHeartbeat, UndoneReport

STAGE = "compensation"


class CompensationActivities:
    def __init__(
        self,
        registry: ActionRegistry,
        sealer: SecretSealer,
        dlq: DeadLetterPublisher,
        credentials: CredentialManager | None = None,
    ) -> None:
        self._registry = registry
        self._sealer = sealer
        self._credentials = credentials
        self._dlq = dlq

    @activity.defn(name=names.COMPENSATE_STEP)
    async def compensate_step(self, inp: CompensateInput) -> CompensationDone:
        """Undo one step; Temporal retries it under the action's compensation policy."""
        clock = AttemptClock()
        heartbeat = asyncio.ensure_future(heartbeat_forever(ExecuteHeartbeat()))
        try:
            executor = self._transactional(inp.request.action_type)
            ctx = CompensationContext(
                action_id=inp.request.action_id,
                action_type=inp.request.action_type,
                params=self._sealer.unseal(inp.params),
                step=inp.step,
                compensation=inp.compensation,
                attempt=activity.info().attempt,
                cause=inp.cause,
                logger=logger_for(inp.request),
                credentials=self._credentials,
            )
            await executor.compensate(ctx)
        except Exception as exc:
            raise application_error(exc, clock) from exc
        finally:
            heartbeat.cancel()
        return CompensationDone(finished_at=clock.now())

    def _transactional(self, action_type: str) -> TransactionalActionExecutor:
        executor = self._registry.executor(action_type)
        if not isinstance(executor, TransactionalActionExecutor):
            raise PermanentError(f"{action_type} has no compensations")
        return executor

    @activity.defn(name=names.REPORT_UNDONE)
    async def report_undone(self, report: UndoneReport) -> None:
        """Put what a failed rollback left behind on the DLQ, for a person to finish."""
        await self._dlq.send(
            DeadLetter(
                reason=report.reason,
                stage=STAGE,
                topic="",
                partition=-1,
                offset=-1,
                origin=f"action:{report.action_id}",
                key=report.action_id.encode(),
                value=json.dumps(report.model_dump(mode="json")).encode(),
            )
        )
