"""Reading JSON that comes from outside: the limits are checked before anything is parsed.

Every reason names the problem in words an operator can act on, because it becomes the
reason of a dead letter or the message of a CLI error. Nothing here raises anything but
`ValidationError`, whatever the bytes are: a decoder built on it cannot be stopped by one
message (a poison pill).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from karma.errors import FieldError, ValidationError
from karma.settings import LimitsSettings

# A JSON string (escapes included) or one bracket: enough to measure nesting exactly
# without parsing, at the speed of the regex engine. An unterminated string runs to the
# end of the input (the optional closing quote), so no input makes the scan backtrack.
_TOKEN = re.compile(rb'"(?:[^"\\]+|\\.)*"?|[\[\]{}]', re.DOTALL)
_CONSTANT = re.compile(rb'"(?:[^"\\]+|\\.)*"?|(-?Infinity|NaN)', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_UTF_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _refuse(reason: str, field: str = "(value)") -> ValidationError:
    return ValidationError([FieldError(field=field, reason=reason)])


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise ValueError(f"{literal[:40]} is too large for a 64-bit float")
    return number


def nesting_depth(raw: bytes, stop_above: int) -> int:
    """How deeply `raw` nests arrays and objects; counting stops past `stop_above`."""
    if raw.count(b"[") + raw.count(b"{") <= stop_above:
        return 0  # cannot be deeper than the limit: skip the scan (the common case)
    depth = deepest = 0
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def loads(raw: bytes | None, limits: LimitsSettings | None = None) -> Any:
    """Parse one message body as strict JSON within `limits`.

    Raises:
        karma.errors.ValidationError: for anything but a JSON document within the limits,
            with the reason on the field `(value)`.
    """
    limits = limits or LimitsSettings()
    if raw is None:
        raise _refuse("message has no value")
    if len(raw) > limits.max_message_bytes:
        raise _refuse(
            f"message is {len(raw):,} bytes, over the limit of {limits.max_message_bytes:,} "
            "(KARMA_LIMITS__MAX_MESSAGE_BYTES)"
        )
    text = _text(raw, limits)
    depth = nesting_depth(raw, limits.max_json_depth)
    if depth > limits.max_json_depth:
        raise _refuse(
            f"JSON nested more than {limits.max_json_depth} levels deep "
            "(KARMA_LIMITS__MAX_JSON_DEPTH)"
        )
    try:
        data = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise _refuse(f"not JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        # NaN/Infinity, integers beyond Python's digit limit, nesting the scan missed.
        raise _refuse(f"not JSON: {exc}{_where_constant(raw)}") from exc
    if _SURROGATE_ESCAPE.search(raw):
        _check_encodable(data)
    return data


def loads_object(raw: bytes | None, limits: LimitsSettings | None = None) -> dict[str, Any]:
    """`loads`, and the document must be a JSON object."""
    data = loads(raw, limits)
    if not isinstance(data, dict):
        raise _refuse(f"expected a JSON object, got {_json_kind(data)}")
    return data


def _where_constant(raw: bytes) -> str:
    """Where the first NaN or Infinity outside a string is, if there is one."""
    for match in _CONSTANT.finditer(raw):
        if match.group(1):
            before = raw[: match.start(1)]
            line = before.count(b"\n") + 1
            column = match.start(1) - (before.rfind(b"\n") + 1) + 1
            return f" (line {line} column {column})"
    return ""


def _text(raw: bytes, limits: LimitsSettings) -> str:
    if limits.utf8_only:
        if raw.startswith(_UTF_BOMS):
            raise _refuse("not UTF-8 JSON: the message starts with a byte order mark")
        if b"\x00" in raw:
            raise _refuse("not UTF-8 JSON: it holds NUL bytes (UTF-16 or UTF-32?)")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(f"not UTF-8: {exc}") from exc
    try:
        return raw.decode(json.detect_encoding(raw))
    except (UnicodeDecodeError, LookupError) as exc:
        raise _refuse(f"not JSON text: {exc}") from exc


def _check_encodable(data: Any) -> None:
    """A `\\ud800` escape without its pair parses to a string no UTF-8 encoder takes."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _refuse("not JSON Karma can use: a \\u escape names a lone UTF-16 surrogate") from exc


def _json_kind(data: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(data, int | float) and not isinstance(data, bool):
        return "a number"
    return kinds.get(type(data), type(data).__name__)
