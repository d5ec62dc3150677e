"""Bytes from outside: only a JSON document within the limits gets through, and nothing but
a ValidationError with a reason ever comes out, whatever the bytes."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from karma import untrusted_json
from karma.errors import ValidationError
from karma.settings import LimitsSettings

LIMITS = LimitsSettings(max_message_bytes=100_000, max_json_depth=16)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "message has no value"),
        (b"x" * 100_001, "100,001 bytes, over the limit of 100,000"),
        (b"[" * 17 + b"]" * 17, "nested more than 16 levels"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested more than 16 levels"),
        (b'{"a": NaN}', "NaN is not valid JSON (line 1 column 7)"),
        (b'{"ttl_sec": Infinity}', "Infinity is not valid JSON (line 1 column 13)"),
        (b'{"t": 1e999}', "1e999 is too large for a 64-bit float"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not JSON: Exceeds the limit (4300 digits)"),
        ('{"a": 1}'.encode("utf-16"), "byte order mark"),
        ('{"a": 1}'.encode("utf-16-le"), "NUL bytes (UTF-16 or UTF-32?)"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'{"a": "\xff"}', "not UTF-8: 'utf-8' codec can't decode byte 0xff"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"a": "\x01"}', "Invalid control character"),
        (b'{"a": ', "not JSON: Expecting value"),
        (b"", "not JSON: Expecting value"),
    ],
)
def test_what_is_refused_and_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        untrusted_json.loads(raw, LIMITS)
    assert caught.value.errors[0].field == "(value)"
    assert reason in caught.value.errors[0].reason


@pytest.mark.parametrize(
    ("raw", "kind"),
    [(b"[1]", "an array"), (b'"s"', "a string"), (b"1.5", "a number"), (b"null", "null")],
)
def test_only_objects_are_envelopes(raw: bytes, kind: str) -> None:
    with pytest.raises(ValidationError, match=f"expected a JSON object, got {kind}"):
        untrusted_json.loads_object(raw, LIMITS)


def test_what_is_fine_goes_through() -> None:
    doc = {"a": [[[[1, 2.5, 'x\\y"z', {"b": None, "emoji": "\U0001f600"}]]]], "brackets": "[[[["}
    assert untrusted_json.loads(json.dumps(doc).encode(), LIMITS) == doc
    assert untrusted_json.loads(json.dumps(doc, ensure_ascii=False).encode(), LIMITS) == doc
    deep_in_strings = json.dumps({"s": "[" * 1000}).encode()  # brackets in strings do not nest
    assert untrusted_json.loads(deep_in_strings, LIMITS) == {"s": "[" * 1000}


def test_utf16_is_accepted_only_when_asked_for() -> None:
    raw = '{"a": 1}'.encode("utf-16-le")
    assert untrusted_json.loads(raw, LIMITS.model_copy(update={"utf8_only": False})) == {"a": 1}


def test_no_input_makes_the_nesting_scan_slow() -> None:
    """Unterminated strings full of escaped quotes once made a regex scan quadratic."""
    hostile = [
        b'"' + b'\\"' * 50_000 + b"\\" + b"[" * 20,
        b"[" * 20 + b'"' * 100_000,
        b"[" * 20 + b'"\\' * 50_000,
    ]
    for raw in hostile:
        started = time.perf_counter()
        with pytest.raises(ValidationError):
            untrusted_json.loads(raw, LIMITS)
        assert time.perf_counter() - started < 1.0, raw[:40]


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_either_parse_or_are_refused_with_a_reason(raw: bytes) -> None:
    try:
        value = untrusted_json.loads(raw, LIMITS)
    except ValidationError as exc:
        assert exc.errors and exc.errors[0].reason
    else:  # what gets through can be encoded again (no lone surrogates, no NaN)
        json.dumps(value, allow_nan=False).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=2000), st.sampled_from([b"[", b"{"]))
def test_mutilated_documents_never_escape_as_other_errors(
    value: object, cut: int, opener: bytes
) -> None:
    raw = json.dumps(value).encode()
    for candidate in (raw[:cut], opener * cut + raw, raw + b"}" * cut):
        with contextlib.suppress(ValidationError):
            untrusted_json.loads(candidate, LIMITS)
