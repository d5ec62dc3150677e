"""RuleTriggerWorkflow: a rule's schedule trigger firing, started by the Temporal Schedule
`karma-rule-<rule>`.

Process: one activity, `fire_rule`, lets the rule engine decide on the firing (the same
guards as for events: deduplication per dedup window, rate limits, cooldown, actions in
flight, approval, dry-run) and records the decision. No signals, updates or compensation.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.workflow_io import RuleFiring, RuleFiringOutput

FIRE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1)
)


@workflow.defn(name=names.RULE_TRIGGER_WORKFLOW)
class RuleTriggerWorkflow:
    @workflow.run
    async def run(self, inp: RuleFiring) -> RuleFiringOutput:
        # The firing's time is this run's (the same on replay): the key of its action.
        firing = inp.model_copy(update={"at": inp.at or workflow.now()})
        out: RuleFiringOutput = await workflow.execute_activity(
            names.FIRE_RULE,
            firing,
            result_type=RuleFiringOutput,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=FIRE_RETRY,
        )
        return out
