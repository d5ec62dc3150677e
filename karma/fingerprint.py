"""Error fingerprints: an error message with its variable parts replaced by placeholders,
so that errors that differ only by an id, a number or a quoted value fall in one group.

ClickHouse computes a fingerprint once, when the row arrives (a column DEFAULT from
`sql_expression`), and keeps it with the version of the rules that made it. Changing the
rules means adding a version: stored rows keep the groups they were given.

The rules are regular expressions in the RE2 dialect ClickHouse uses (no look-around, no
back-references), applied in order; each replaces what it matches with its placeholder.
"""

from __future__ import annotations

from typing import Final

MAX_CHARS: Final = 1000  # of the message that is fingerprinted

# version -> rules, in the order they apply.
RULES: Final[dict[int, tuple[tuple[str, str], ...]]] = {
    1: (
        # Quoted values first: whatever is inside quotes is data (an apostrophe inside a
        # word, as in can't, opens no quote).
        (r"(^|[^A-Za-z0-9])'[^']*'", "\\1'<str>'"),
        (r'"[^"]*"', '"<str>"'),
        # URLs keep their scheme, host and path shape; the query is data.
        (r"\?[^\s=?]+=[^\s]*", "?<query>"),
        (
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?",
            "<ts>",
        ),
        (r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<uuid>"),
        (r"(?i)\b0x[0-9a-f]+\b", "<hex>"),
        (r"(?i)\b[0-9a-f]{16,}\b", "<hex>"),
        (r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", "<ip>"),
        # Ids: a word joined by - or _ with a digit after the joint (act_09c8b4…, job-42,
        # order-7f3a); `v2`, `utf8`, `sha256` and `HTTP/1.1` are no ids.
        (r"\b[A-Za-z][A-Za-z0-9]*[-_][A-Za-z0-9_-]*[0-9][A-Za-z0-9_-]*", "<id>"),
        (r"\b\d+(\.\d+)*", "<n>"),  # 60s: <n>s
        (r"\s+", " "),
    ),
}
CURRENT: Final = max(RULES)


def _literal(text: str) -> str:
    """`text` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_expression(column: str, version: int = CURRENT) -> str:
    """The ClickHouse expression that fingerprints `column` with the rules of `version`
    ('' for an empty message)."""
    expression = f"substringUTF8({column}, 1, {MAX_CHARS})"
    for pattern, placeholder in RULES[version]:
        expression = f"replaceRegexpAll({expression}, {_literal(pattern)}, {_literal(placeholder)})"
    return f"trimBoth({expression})"


def version_expression(column: str, version: int = CURRENT) -> str:
    """The ClickHouse expression of the rules' version a row's fingerprint has (0: no
    message)."""
    return f"if({column} = '', 0, {version})"
