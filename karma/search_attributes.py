"""Custom search attributes that make actions filterable in the Temporal Web UI.

The embedded stack registers them at start; on a cluster `karma setup` creates them.
"""

from __future__ import annotations

from typing import Final

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from karma.lifecycle import ActionState
from karma.request import ActionRequest

ACTION_TYPE: Final = SearchAttributeKey.for_keyword("KarmaActionType")
STATE: Final = SearchAttributeKey.for_keyword("KarmaState")
TENANT: Final = SearchAttributeKey.for_keyword("KarmaTenant")
ENTITY_ID: Final = SearchAttributeKey.for_keyword("KarmaEntityId")
CORRELATION_ID: Final = SearchAttributeKey.for_keyword("KarmaCorrelationId")
# Set when an event-driven action starts waiting: callbacks that only know the external
# system's id find their action through it.
EXTERNAL_ID: Final = SearchAttributeKey.for_keyword("KarmaExternalId")

ALL: Final = (ACTION_TYPE, STATE, TENANT, ENTITY_ID, CORRELATION_ID, EXTERNAL_ID)


def initial(request: ActionRequest) -> TypedSearchAttributes:
    """The attributes an ActionWorkflow starts with."""
    pairs = [
        SearchAttributePair(ACTION_TYPE, request.action_type),
        SearchAttributePair(STATE, ActionState.REQUESTED.value),
    ]
    for key, value in (
        (TENANT, request.tenant),
        (ENTITY_ID, request.entity_id),
        (CORRELATION_ID, request.correlation_id),
    ):
        if value:
            pairs.append(SearchAttributePair(key, value))
    return TypedSearchAttributes(pairs)


async def register(client: Client) -> list[str]:
    """Create the search attributes the namespace lacks; return the names created."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = [key.name for key in ALL if key.name not in existing.custom_attributes]
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes=dict.fromkeys(
                    missing, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                ),
            )
        )
    return missing


def quote(value: str) -> str:
    """A string literal for a visibility query."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
