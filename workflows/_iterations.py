"""Stateful actions: iterations with durable state, continuing as new to bound the history."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow

from workflows._core import ActionCore, Ending

with workflow.unsafe.imports_passed_through():
    from karma.events import TransitionAttrs
    from karma.lifecycle import EventType
    from karma.request import Resume
    from karma.workflow_io import (
        ExecutionPlan,
        Phase,
    )


class Iterations(ActionCore):
    """Iterate until Break; continue as new every `iterations_per_run` iterations."""

    async def _iterate(self, params: dict[str, Any], plan: ExecutionPlan) -> Ending:
        """Iterate until Break, recording progress; continue as new every
        `iterations_per_run` iterations with the state, seq and outputs carried over."""
        resume = self._request.resume
        state = resume.data if resume else None
        version = resume.data_version if resume else 0
        iterations = resume.iterations if resume else 0
        outputs = dict(resume.outputs) if resume else {}
        for _ in range(plan.iterations_per_run):
            result = await self._attempts(
                params, plan, phase=Phase.ITERATE, state=state, state_version=version
            )
            if isinstance(result, Ending):
                result.outputs = outputs
                return result
            iterations += 1
            if self._cancel_requested() and not (result.iteration and result.iteration.done):
                # It came while the iteration finished anyway: no further iteration.
                outputs.update(result.outputs)
                return self._cancelled(outputs)
            outputs.update(result.outputs)
            self._outputs = dict(outputs)
            iteration = result.iteration
            if iteration is None or iteration.done:
                return Ending(EventType.SUCCEEDED, outputs=outputs)
            state, version = iteration.state, iteration.state_version
            self._record(
                EventType.PROGRESS,
                TransitionAttrs(
                    percent=iteration.progress,
                    message=iteration.message or f"iteration {iterations}",
                    iteration=iterations,
                ),
            )
            if iteration.delay > timedelta(0):
                await asyncio.gather(self._outbox.flush(), workflow.sleep(iteration.delay))
        # Bound the history: the next run starts from here with nothing to replay.
        await self._outbox.flush()
        started_at = resume.started_at if resume else workflow.info().workflow_start_time
        workflow.continue_as_new(
            self._request.model_copy(
                update={
                    "resume": Resume(
                        last_seq=self._log.last_seq,
                        state=self._log.state,
                        started_at=started_at,
                        attempt=self._attempt,
                        iterations=iterations,
                        data=state or {},
                        data_version=version,
                        outputs=outputs,
                        recent=self._log.since(resume.last_seq if resume else 0),
                    )
                }
            ),
            search_attributes=workflow.info().typed_search_attributes,
        )
