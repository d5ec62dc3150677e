"""EntropyScanWorkflow: one entropy scan, started by a Temporal Schedule (or by
`karma entropy scan`).

Process: one activity, `scan_entropy`, scans every whole window since the last one
scanned, in the process that reads the ledger; it stores each window's deviations,
publishes them to `entropy.deviation` and only then records the window as scanned, so a
scan that crashed is resumed by its retry or by the next scan, and rescanning a window
writes the same deviation ids again. No signals, updates or compensation.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.workflow_io import EntropyScanInput, EntropyScanOutput

SCAN_TIMEOUT = timedelta(hours=2)  # a backfill of many windows; it heartbeats
# Only infrastructure fails a scan (ClickHouse or Kafka away): retried until they are back.
SCAN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
)


@workflow.defn(name=names.ENTROPY_SCAN_WORKFLOW)
class EntropyScanWorkflow:
    @workflow.run
    async def run(self, inp: EntropyScanInput) -> EntropyScanOutput:
        out: EntropyScanOutput = await workflow.execute_activity(
            names.SCAN_ENTROPY,
            inp,
            result_type=EntropyScanOutput,
            start_to_close_timeout=SCAN_TIMEOUT,
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=SCAN_RETRY,
        )
        return out
