"""Custom search attributes that make actions filterable in the Temporal Web UI.

The embedded stack registers them at start; a production cluster needs them created once
(`temporal operator search-attribute create`, see docker-compose.yml).
"""

from __future__ import annotations

from typing import Final

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from karma.lifecycle import ActionState
from karma.request import ActionRequest

ACTION_TYPE: Final = SearchAttributeKey.for_keyword("KarmaActionType")
STATE: Final = SearchAttributeKey.for_keyword("KarmaState")
TENANT: Final = SearchAttributeKey.for_keyword("KarmaTenant")
ENTITY_ID: Final = SearchAttributeKey.for_keyword("KarmaEntityId")
CORRELATION_ID: Final = SearchAttributeKey.for_keyword("KarmaCorrelationId")

ALL: Final = (ACTION_TYPE, STATE, TENANT, ENTITY_ID, CORRELATION_ID)


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
