"""Sizes that would stop a workflow are refused at the door, naming what is large."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from karma.envelope import Envelope
from karma.errors import ErrorType, PayloadTooLargeError, ValidationError
from karma.payload_size import check_event, check_request, check_result
from karma.request import ActionRequest
from karma.workflow_io import ExecuteOutput

LIMIT = 10_000


def test_a_request_within_the_limit_passes_and_one_over_names_its_largest_params() -> None:
    small = ActionRequest.new("log", {"message": "x" * 100})
    check_request(small, small.params, LIMIT)
    big = ActionRequest.new("log", {"message": "x" * 20_000, "note": "y" * 9000, "n": 1})
    with pytest.raises(ValidationError) as caught:
        check_request(big, big.params, LIMIT)
    fields = [e.field for e in caught.value.errors]
    assert fields == ["params.message", "params.note", "params.n"]
    reason = caught.value.errors[0].reason
    assert reason.startswith("20,002 bytes; the request is ")
    assert "over the limit of 10,000 (KARMA_LIMITS__MAX_PAYLOAD_BYTES)" in reason
    assert "by reference (claim check)" in reason


def test_an_event_over_the_limit_names_its_largest_attrs() -> None:
    event = Envelope(ts=datetime.now(UTC), event_type="done", attrs={"log": "z" * 20_000})
    with pytest.raises(ValidationError, match=r"\(event\): the event is .* largest: attrs.log"):
        check_event(event, LIMIT)


def test_a_result_over_the_limit_is_a_payload_too_large_error() -> None:
    output = ExecuteOutput(outputs={"report": "r" * 20_000, "ok": True})
    with pytest.raises(PayloadTooLargeError) as caught:
        check_result(output, output.outputs, LIMIT, "the attempt's result")
    assert caught.value.error_type is ErrorType.PAYLOAD_TOO_LARGE
    assert "the attempt's result is 20,1" in str(caught.value)
    assert "largest outputs: report (20,002 bytes)" in str(caught.value)
    check_result(ExecuteOutput(outputs={"ok": True}), {"ok": True}, LIMIT, "x")
