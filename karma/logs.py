"""Logging set-up for Karma's processes: text, or JSON lines (`KARMA_LOG_FORMAT=json`)
that carry the action id, the trace id and the span id, for log pipelines to join on."""

from __future__ import annotations

import logging
from typing import Any

CHATTY_LIBRARIES = ("aiokafka", "httpx", "temporalio", "kafka")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _Context(logging.Filter):
    """Adds `action_id` (from Temporal's workflow or activity context, which its loggers
    put in the record), `trace_id` and `span_id` (the current span) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from karma.ids import WORKFLOW_ID_PREFIX
        from karma.telemetry import current_ids

        info: dict[str, Any] = {}
        for name in ("temporal_activity", "temporal_workflow"):
            value = getattr(record, name, None)
            if isinstance(value, dict):
                info = value
                break
        workflow_id = str(info.get("workflow_id", ""))
        if not workflow_id:
            from temporalio import activity

            if activity.in_activity():
                workflow_id = activity.info().workflow_id or ""
        action_id = getattr(record, "action_id", "") or (
            workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
            if workflow_id.startswith(WORKFLOW_ID_PREFIX)
            else ""
        )
        record.action_id = action_id or ""
        record.trace_id, record.span_id = current_ids()
        return True


def configure_logging(level: str, log_format: str = "text") -> None:
    """Karma's own loggers at `level`; libraries only from WARNING unless debugging."""
    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(action_id)s %(trace_id)s "
                "%(span_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
                reserved_attrs=[
                    *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
                    "message",
                    "asctime",
                    "temporal_activity",
                    "temporal_workflow",
                ],
            )
        )
        handler.addFilter(_Context())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    library_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(library_level, logging.getLevelNamesMapping()[level]))
