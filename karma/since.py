"""A point in time given on the command line or in a query: an ISO 8601 time with a
timezone, or an age (`90s`, `30m`, `2h`, `7d`) counted back from now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from karma.errors import FieldError, ValidationError

_AGO = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(
    text: str | None, now: datetime | None = None, *, field: str = "--since"
) -> datetime | None:
    """`2026-11-25T10:00:00Z` (a timezone is required) or an age: `90s`, `30m`, `2h`, `7d`.

    Raises:
        karma.errors.ValidationError: neither, naming `field`.
    """
    if text is None:
        return None
    ago = _AGO.match(text.strip())
    try:
        if ago:
            delta = timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
            return (now or datetime.now(UTC)) - delta
        since = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if since.tzinfo is not None:
            return since.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time; or before year 1
        pass
    reason = (
        f"expected a time with a timezone (2026-11-25T10:00:00Z) or an age (2h), got {text[:60]!r}"
    )
    raise ValidationError([FieldError(field=field, reason=reason)])
