"""`karma stats` tables and the HTML report, from the JSON the analytics give."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console

from karma.cli.stats_commands import duration, render
from karma.report import render_html


def answer(*, errors: bool = True) -> dict[str, Any]:
    timing = {"count": 4, "mean": 1500.0, "p50": 1200.0, "p90": 2800.0, "p99": 45000.0}
    none = {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None}
    outcomes = {"SUCCEEDED": 3, "FAILED": 1, "TIMED_OUT": 0, "CANCELLED": 0, "SKIPPED": 0,
                "COMPENSATED": 0}  # fmt: skip
    group = {
        "group": "http_request",
        "total": 4,
        "outcomes": outcomes,
        "rates": {k: v / 4 for k, v in outcomes.items()},
        "time_to_accept_ms": timing,
        "time_to_start_ms": timing,
        "time_to_resolve_ms": timing,
        "trigger_to_request_ms": none,
        "trigger_to_resolve_ms": none,
        "retries": 2,
    }
    return {
        "stats": {
            "filters": {
                "since": "2026-11-25T00:00:00.000Z",
                "until": None,
                "type": None,
                "tenant": None,
            },
            "by": "type",
            "groups": [group],
            "retries_per_action": {"0": 3, "2": 1},
            "top_failing_entities": [{"entity_id": "svc:web", "failed": 1, "total": 2}],
            "per_hour": [
                {"hour": "2026-11-25T10:00:00.000Z", "outcome": "SUCCEEDED", "actions": 3},
                {"hour": "2026-11-25T10:00:00.000Z", "outcome": "FAILED", "actions": 1},
            ],
        },
        "errors": [
            {
                "error_type": "permanent",
                "fingerprint": "HTTP <n> from http://x/<n>",
                "fingerprint_version": 1,
                "count": 1,
                "first_seen": "2026-11-25T10:00:01.000Z",
                "last_seen": "2026-11-25T10:00:01.000Z",
                "example_action_ids": ["act_1"],
                "action_types": ["http_request"],
            }
        ]
        if errors
        else [],
    }


def test_durations_read_at_a_glance() -> None:
    assert [duration(v) for v in (None, 850, 1250, 204_000, 7_560_000)] == [
        "-",
        "850 ms",
        "1.25 s",
        "3.4 min",
        "2.1 h",
    ]


def test_the_tables_show_rates_timings_entities_and_error_groups() -> None:
    console = Console(record=True, width=200)
    render(answer(), console)
    text = console.export_text()
    assert "75.0 %" in text  # success rate
    assert "requested → ended" in text and "45.00 s" in text and "2.80 s" in text
    assert "trigger →" not in text  # no figure without actions that had one
    assert "0 retries: 3, 2 retries: 1" in text
    assert "svc:web" in text
    assert "HTTP <n> from http://x/<n>" in text


def test_what_the_ledger_holds_is_shown_as_text_never_as_markup() -> None:
    hostile = answer()
    hostile["errors"][0]["fingerprint"] = "file not found [/tmp/x] and [object Object] [bold]"
    hostile["stats"]["groups"][0]["group"] = "[red]type"
    hostile["stats"]["top_failing_entities"][0]["entity_id"] = "[/]"
    console = Console(record=True, width=250)
    render(hostile, console)
    text = console.export_text()
    for shown in ("file not found [/tmp/x] and [object Object] [bold]", "[red]type", "[/]"):
        assert shown in text


def test_nothing_ended_says_so() -> None:
    console = Console(record=True, width=120)
    empty = answer()
    empty["stats"]["groups"] = []
    render(empty, console)
    assert "No ended actions" in console.export_text()


def test_the_report_is_one_page_that_needs_no_network() -> None:
    page = render_html(answer())
    assert re.findall(r'id="([a-z-]+)" class="plotly-graph-div"', page) == [
        "per-hour",
        "resolve",
        "types",
        "retries",
        "errors",
    ]
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inlined
    assert "cdn.plot.ly" not in page.split("</script>", 1)[1]
    assert "HTTP &amp;lt;n&amp;gt;" not in page  # escaped once, for plotly only
    without_errors = render_html(answer(errors=False))
    assert 'id="errors"' not in without_errors
