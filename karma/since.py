"""A point in time given on the command line or in a query: an ISO 8601 time with a
timezone, or an age (`90s`, `30m`, `2h`, `7d`) counted back from now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from karma.envelope import EARLIEST_YEAR, LATEST_YEAR
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
    since: datetime | None = None
    try:
        if ago:
            delta = timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
            since = (now or datetime.now(UTC)) - delta
        else:
            parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            since = parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):  # not a time; or before year 1
        since = None
    if since is not None:
        if EARLIEST_YEAR <= since.year <= LATEST_YEAR:
            return since
        reason = f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}, got {text[:60]!r}"
        raise ValidationError([FieldError(field=field, reason=reason)])
    reason = (
        f"expected a time with a timezone (2026-11-25T10:00:00Z) or an age (2h), got {text[:60]!r}"
    )
    raise ValidationError([FieldError(field=field, reason=reason)])
