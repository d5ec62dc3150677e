"""Identifiers: action ids, Temporal workflow ids and event ids.

An action id is derived from the idempotency key when one is given, so the same request
twice names the same workflow and Temporal rejects the second start.
"""

from __future__ import annotations

import hashlib
import uuid

ACTION_ID_PREFIX = "act_"
WORKFLOW_ID_PREFIX = "action-"
PIPELINE_ID_PREFIX = "pl_"
PIPELINE_WORKFLOW_ID_PREFIX = "pipeline-"


def new_action_id() -> str:
    """A fresh, random action id for requests without an idempotency key."""
    return f"{ACTION_ID_PREFIX}{uuid.uuid4().hex}"


def action_id_for_key(idempotency_key: str, tenant: str = "") -> str:
    """The action id every request with this idempotency key maps to: a tenant's keys are
    its own (two tenants using the same key request two actions)."""
    if not idempotency_key:
        raise ValueError("idempotency_key must not be empty")
    scoped = f"{tenant}\x00{idempotency_key}" if tenant else idempotency_key
    digest = hashlib.sha256(scoped.encode("utf-8")).hexdigest()
    return f"{ACTION_ID_PREFIX}{digest[:32]}"


def new_pipeline_id() -> str:
    return f"{PIPELINE_ID_PREFIX}{uuid.uuid4().hex}"


def pipeline_id_for_key(idempotency_key: str, tenant: str = "") -> str:
    """As `action_id_for_key`, for a pipeline run."""
    return PIPELINE_ID_PREFIX + action_id_for_key(idempotency_key, tenant).removeprefix(
        ACTION_ID_PREFIX
    )


def pipeline_workflow_id(pipeline_id: str) -> str:
    return f"{PIPELINE_WORKFLOW_ID_PREFIX}{pipeline_id}"


def workflow_id_for(action_id: str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{action_id}"


def action_id_from_workflow_id(workflow_id: str) -> str:
    if not workflow_id.startswith(WORKFLOW_ID_PREFIX):
        raise ValueError(f"{workflow_id!r} is not a Karma action workflow id")
    return workflow_id.removeprefix(WORKFLOW_ID_PREFIX)


def event_id_for(action_id: str, seq: int) -> str:
    """`action_id:seq`, the deduplication key of a transition everywhere downstream."""
    return f"{action_id}:{seq}"
