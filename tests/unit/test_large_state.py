"""Packing a stateful action's state: small states untouched, large ones compressed and
given back exactly, too large ones refused by name, and a damaged or inflating pack refused."""

from __future__ import annotations

import base64
import os
import zlib

import pytest

from karma.errors import ErrorType, PayloadTooLargeError, PermanentError
from karma.large_state import PACKED, is_packed, pack, unpack

SMALL, LIMIT = 1024, 8192


def test_a_small_state_is_kept_as_it_is() -> None:
    state = {"n": 3, "names": ["a", "b"]}
    assert pack(state, compress_past=SMALL, limit=LIMIT) is state
    assert not is_packed(state) and unpack(state) is state


def test_a_large_state_is_packed_and_given_back_exactly() -> None:
    state = {"rows": [{"id": i, "host": f"db-{i % 7}", "ok": i % 3 == 0} for i in range(400)]}
    packed = pack(state, compress_past=SMALL, limit=LIMIT)
    assert is_packed(packed) and set(packed) == {PACKED, "bytes", "data"}
    assert len(packed["data"]) < packed["bytes"] // 3
    assert unpack(packed) == state


def test_a_state_too_large_even_packed_is_refused_with_its_sizes() -> None:
    state = {"noise": os.urandom(8000).hex()}  # random: compresses to about half
    with pytest.raises(PayloadTooLargeError) as caught:
        pack(state, compress_past=SMALL, limit=LIMIT)
    assert caught.value.error_type is ErrorType.PAYLOAD_TOO_LARGE
    message = str(caught.value)
    assert "16,012 bytes of JSON" in message and "over the limit of 8,192" in message
    assert "KARMA_LIMITS__MAX_STATE_BYTES" in message
    # Below the compression threshold the limit still holds.
    with pytest.raises(PayloadTooLargeError):
        pack({"x": "y" * 9000}, compress_past=100_000, limit=LIMIT)


@pytest.mark.parametrize(
    "data",
    [
        "not base64!",
        base64.b64encode(b"not zlib").decode(),
        base64.b64encode(zlib.compress(b"[1, 2]")).decode(),  # not an object
        base64.b64encode(zlib.compress(b"{broken")).decode(),
    ],
)
def test_a_damaged_pack_is_a_permanent_error(data: str) -> None:
    with pytest.raises(PermanentError, match="packed state"):
        unpack({PACKED: "zlib", "bytes": 1, "data": data})


def test_a_pack_that_inflates_past_the_limit_is_not_opened_whole() -> None:
    bomb = base64.b64encode(zlib.compress(b'{"a": "' + b"0" * 5_000_000 + b'"}', 9)).decode()
    with pytest.raises(PermanentError, match="opens to more than 1,000 bytes"):
        unpack({PACKED: "zlib", "bytes": 1, "data": bomb}, limit=1000)
