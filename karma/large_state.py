"""Large state of stateful actions: packed (zlib, base64) past a threshold, refused past a
hard limit.

A stateful action's state travels through its workflow's history twice per iteration (the
iteration's result, the next one's input) and once more in each continue-as-new. Past
`KARMA_LIMITS__STATE_COMPRESS_BYTES` of JSON, the worker packs it into a small dict the
workflow keeps as it is (`{"$karma_state": "zlib", ...}`) and unpacks it before the
executor sees it; the workflow continues as new sooner while it holds a packed state. Past
`KARMA_LIMITS__MAX_STATE_BYTES` packed, the iteration fails as `payload_too_large`, naming
the sizes, instead of leaving a workflow Temporal cannot record.

Pure: the workflow imports `is_packed`.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json

from karma.errors import PayloadTooLargeError, PermanentError

PACKED = "$karma_state"
CODEC = "zlib"
LIMIT_SETTING = "KARMA_LIMITS__MAX_STATE_BYTES"
# How many iterations a workflow run holds while its state is packed (instead of the
# executor's iterations_per_run): fewer copies of a large state in one history.
PACKED_ITERATIONS_PER_RUN = 10
MAX_OPENED_BYTES = 64 * 1024 * 1024  # the most a packed state may hold uncompressed


def is_packed(state: Mapping[str, Any] | None) -> bool:
    return state is not None and state.get(PACKED) == CODEC and isinstance(state.get("data"), str)


def pack(state: dict[str, Any], *, compress_past: int, limit: int) -> dict[str, Any]:
    """The state as the workflow will keep it: as it is when small, packed when larger
    than `compress_past` bytes of JSON.

    Raises:
        karma.errors.PayloadTooLargeError: even packed, it is larger than `limit` bytes.
    """
    # As the data converter would write it (datetimes, UUIDs...; NaN as null).
    raw = to_json(state)
    if len(raw) > MAX_OPENED_BYTES:
        raise PayloadTooLargeError(_too_large(len(raw), len(raw), MAX_OPENED_BYTES))
    if len(raw) <= compress_past:
        if len(raw) > limit:
            raise PayloadTooLargeError(_too_large(len(raw), len(raw), limit))
        return state
    data = base64.b64encode(zlib.compress(raw, 6)).decode()
    if len(data) > limit:
        raise PayloadTooLargeError(_too_large(len(raw), len(data), limit))
    return {PACKED: CODEC, "bytes": len(raw), "data": data}


def unpack(state: dict[str, Any], *, limit: int = MAX_OPENED_BYTES) -> dict[str, Any]:
    """The state the executor wrote, from what the workflow kept.

    Raises:
        karma.errors.PermanentError: a packed state that does not open (or opens to more
            than `limit` bytes: the most any worker packs is far less).
    """
    if not is_packed(state):
        return state
    try:
        opener = zlib.decompressobj()
        raw = opener.decompress(base64.b64decode(state["data"], validate=True), limit + 1)
        if len(raw) > limit or opener.unconsumed_tail:
            raise PermanentError(f"the packed state opens to more than {limit:,} bytes")
        opened = json.loads(raw)
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise PermanentError(f"the packed state cannot be opened: {exc}") from exc
    if not isinstance(opened, dict):
        raise PermanentError("the packed state is not an object")
    return opened


def _too_large(size: int, packed: int, limit: int) -> str:
    return (
        f"the state is {size:,} bytes of JSON ({packed:,} compressed), "
        f"over the limit of {limit:,} ({LIMIT_SETTING}); keep large data outside the state "
        "and hold a reference to it (claim check)"
    )
