"""`karma report --html FILE`: one self-contained HTML page of charts over the ledger's
analytics (plotly, its JavaScript inlined once: the page needs no network).

Built from the same JSON documents `karma stats --json` prints (`stats` by type, and the
error groups), so it can be made from the ledger or from the API alike.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

OUTCOME_COLOURS = {
    "SUCCEEDED": "#2e7d32",
    "FAILED": "#c62828",
    "TIMED_OUT": "#ef6c00",
    "CANCELLED": "#f9a825",
    "SKIPPED": "#00838f",
    "COMPENSATED": "#6a1b9a",
}
LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "height": 380,
    "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
    "legend": {"orientation": "h", "y": -0.2},
}


def _per_hour(stats: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for outcome, colour in OUTCOME_COLOURS.items():
        rows = [r for r in stats["per_hour"] if r["outcome"] == outcome]
        if rows:
            fig.add_bar(
                name=outcome.lower().replace("_", " "),
                x=[r["hour"] for r in rows],
                y=[r["actions"] for r in rows],
                marker_color=colour,
            )
    fig.update_layout(
        title="Actions per hour by outcome", barmode="stack", yaxis_title="actions", **LAYOUT
    )
    return fig


def _resolve_percentiles(stats: dict[str, Any]) -> go.Figure:
    groups = [g for g in stats["groups"] if g["time_to_resolve_ms"]["count"]]
    fig = go.Figure()
    for q, colour in (("p50", "#90caf9"), ("p90", "#1e88e5"), ("p99", "#0d47a1")):
        fig.add_bar(
            name=q,
            x=[g["group"] for g in groups],
            y=[g["time_to_resolve_ms"][q] / 1000 for g in groups],
            marker_color=colour,
        )
    fig.update_layout(
        title="Time to resolve (requested → ended) per type",
        barmode="group",
        yaxis_title="seconds (log)",
        yaxis_type="log",
        **LAYOUT,
    )
    return fig


def _errors(errors: list[dict[str, Any]]) -> go.Figure:
    top = list(reversed(errors[:15]))
    labels = [_plain(f"{e['error_type']}: {_short(e['fingerprint'], 70)}") for e in top]
    fig = go.Figure(
        go.Bar(
            x=[e["count"] for e in top],
            y=labels,
            orientation="h",
            marker_color="#c62828",
            hovertext=[
                _plain(f"{e['count']} since {e['first_seen']}, last {e['last_seen']}")
                + "<br>"
                + _plain(f"e.g. {', '.join(e['example_action_ids'])}")
                for e in top
            ],
        )
    )
    layout = {**LAYOUT, "height": max(300, 60 + 28 * len(top)), "margin": {"l": 420}}
    fig.update_layout(title="Error groups (type x fingerprint)", xaxis_title="actions", **layout)
    return fig


def _retries(stats: dict[str, Any]) -> go.Figure:
    spread = stats["retries_per_action"]
    fig = go.Figure(go.Bar(x=list(spread), y=list(spread.values()), marker_color="#5e35b1"))
    fig.update_layout(
        title="Retries per action",
        xaxis_title="retries",
        yaxis_title="actions",
        xaxis_type="category",
        **LAYOUT,
    )
    return fig


def _types(stats: dict[str, Any]) -> go.Figure:
    groups = [g for g in stats["groups"] if g["total"]]
    slowest = sorted(groups, key=lambda g: g["time_to_resolve_ms"]["p90"] or 0, reverse=True)[:10]
    failing = sorted(groups, key=lambda g: _failure_rate(g), reverse=True)[:10]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("slowest: p90 to resolve", "most failing: % failed")
    )
    fig.add_bar(
        name="p90 to resolve (s)",
        x=[g["group"] for g in slowest],
        y=[(g["time_to_resolve_ms"]["p90"] or 0) / 1000 for g in slowest],
        marker_color="#1e88e5",
        row=1,
        col=1,
    )
    fig.add_bar(
        name="failure rate (%)",
        x=[g["group"] for g in failing],
        y=[100 * _failure_rate(g) for g in failing],
        marker_color="#c62828",
        row=1,
        col=2,
    )
    fig.update_layout(title="Slowest and most failing types", **LAYOUT)
    fig.update_yaxes(title_text="seconds", row=1, col=1)
    fig.update_yaxes(title_text="% failed", row=1, col=2)
    return fig


def _failure_rate(group: dict[str, Any]) -> float:
    rates = group["rates"]
    return float(rates["FAILED"] + rates["TIMED_OUT"] + rates["COMPENSATED"])


def _plain(text: str) -> str:
    """Text plotly shows as is: its labels take a few HTML tags, and fingerprints hold
    placeholders such as <n>."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(stats: dict[str, Any]) -> str:
    total = sum(g["total"] for g in stats["groups"])
    counts: dict[str, int] = {}
    for g in stats["groups"]:
        for outcome, n in g["outcomes"].items():
            counts[outcome] = counts.get(outcome, 0) + n
    cells = "".join(
        f"<td><b>{n}</b><br>{html.escape(o.lower().replace('_', ' '))}</td>"
        for o, n in counts.items()
    )
    return f"<table class=summary><tr><td><b>{total}</b><br>ended actions</td>{cells}</tr></table>"


def render_html(answer: dict[str, Any], *, generated: datetime | None = None) -> str:
    """The report page for `answer` ({"stats": by type, "errors": [...]})."""
    stats, errors = answer["stats"], answer["errors"]
    figures: list[tuple[str, go.Figure]] = [
        ("per-hour", _per_hour(stats)),
        ("resolve", _resolve_percentiles(stats)),
        ("types", _types(stats)),
        ("retries", _retries(stats)),
    ]
    if errors:
        figures.append(("errors", _errors(errors)))
    charts = "\n".join(
        f'<section class="chart">{fig.to_html(full_html=False, include_plotlyjs=False, div_id=name)}</section>'  # noqa: E501
        for name, fig in figures
    )
    filters = ", ".join(f"{k} {v}" for k, v in stats["filters"].items() if v) or "everything"
    when = (generated or datetime.now(UTC)).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Karma report</title>
<script>{get_plotlyjs()}</script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #212121; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }}
.meta {{ color: #616161; margin-bottom: 16px; }}
.summary td {{ padding: 6px 18px 6px 0; text-align: left; }}
.chart {{ margin: 12px 0; border-top: 1px solid #e0e0e0; }}
</style></head>
<body>
<h1>Karma report</h1>
<div class="meta">Generated {html.escape(when)} from the ledger; filters: {html.escape(filters)}.
{len(figures)} charts.</div>
{_summary(stats)}
{charts}
</body></html>
"""
