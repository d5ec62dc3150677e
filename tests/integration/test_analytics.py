"""Analytics with known answers: a ledger generated so that every count, rate, percentile,
retry figure, fingerprint group and trigger time is known in advance, written through the
real path (Kafka, the bridge's sinks, ClickHouse's views) twice over, then read back
through `bridge.analytics` and the HTTP API."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from bridge.analytics import Analytics, Filters
from bridge.emit import TransitionPublisher
from bridge.ledger_schema import KafkaPosition, ledger_row
from bridge.sink import ledger_lag_settled
from karma.api.keys import Scope
from karma.envelope import EventSource, Transition
from karma.lifecycle import EventType
from karma.report import render_html
from tests.support.api import admin_key, bearer, new_key
from tests.support.browser import Browser, browser_binaries
from tests.support.kafka import produce_each
from workers.embedded import EmbeddedKarma

E = EventType


@dataclass
class Generated:
    """The ledger to write and what every figure over it must be."""

    types: tuple[str, str]
    tenants: tuple[str, str]
    transitions: list[Transition] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    resolve_ms: dict[str, list[int]] = field(default_factory=dict)
    correlations: list[str] = field(default_factory=list)


def percentiles(values: list[int]) -> tuple[float, float, float]:
    """p50, p90, p99 by linear interpolation between closest ranks (R7)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 3), round(cuts[89], 3), round(cuts[98], 3)


def generate() -> Generated:
    u = uuid.uuid4().hex[:8]
    g = Generated(types=(f"ka.a.{u}", f"ka.b.{u}"), tenants=(f"t1-{u}", f"t2-{u}"))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def action(
        index: int,
        action_type: str,
        tenant: str,
        middle: list[tuple[EventType, dict[str, Any]]],
        end: tuple[EventType, dict[str, Any]],
        *,
        at: datetime,
        accept_ms: int,
        start_ms: int,
        resolve_ms: int,
        entity: str = "",
        correlation: str = "",
    ) -> None:
        action_id = f"act_ka{u}{action_type.split('.')[1]}{index:03d}"
        steps = [
            (E.REQUESTED, {}, 0),
            (E.ACCEPTED, {}, accept_ms),
            (E.STARTED, {"attempt": 1}, start_ms),
        ]
        for n, (event_type, attrs) in enumerate(middle):
            steps.append((event_type, attrs, start_ms + 1 + n))
        steps.append((end[0], {**end[1], "duration_ms": resolve_ms}, resolve_ms))
        for seq, (event_type, attrs, ms) in enumerate(steps, start=1):
            g.transitions.append(
                Transition(
                    ts=at + timedelta(milliseconds=ms),
                    event_type=event_type,
                    action_id=action_id,
                    seq=seq,
                    entity_id=entity,
                    correlation_id=correlation,
                    source=EventSource(),
                    tags={"action": action_type, "tenant": tenant},
                    attrs=attrs,
                )
            )
        g.resolve_ms.setdefault(action_type, []).append(resolve_ms)

    def error(kind: str, message: str) -> dict[str, Any]:
        return {"error": {"type": kind, "message": message}}

    retrying = (E.RETRYING, {"attempt": 1, **error("transient", "busy")})
    a, b = g.types
    for i in range(10):
        end: tuple[EventType, dict[str, Any]] = (E.SUCCEEDED, {})
        middle: list[tuple[EventType, dict[str, Any]]] = []
        if i == 0:
            middle = [retrying]
        if i == 7:
            middle = [retrying, retrying]
            end = (E.FAILED, error("transient", "timeout after 3000 ms calling 'svc-1'"))
        if i == 8:
            middle = [retrying, retrying]
            end = (E.FAILED, error("transient", "timeout after 4500 ms calling 'svc-22'"))
        if i == 9:
            end = (E.TIMED_OUT, error("timed_out", "no callback for job job-12345 within 60s"))
        action(
            i,
            a,
            g.tenants[0],
            middle,
            end,
            at=t0 + timedelta(seconds=10 * i),
            accept_ms=10 * (i + 1),
            start_ms=100 + 10 * i,
            resolve_ms=1000 * (i + 1),
            entity=f"e-{u}-{i % 3}",
        )
    compensation = [
        (E.COMPENSATING, {}),
        (E.STEP_COMPENSATED, {"step": "reserve"}),
        (E.STEP_COMPENSATED, {"step": "configure"}),
        (E.COMPENSATED, {}),
    ]
    b_ends: list[tuple[list[tuple[EventType, dict[str, Any]]], tuple[EventType, dict[str, Any]]]]
    b_ends = [
        ([], (E.SUCCEEDED, {})),
        ([], (E.SUCCEEDED, {})),
        ([], (E.CANCELLED, error("cancelled", "cancelled on request"))),
        ([], (E.SKIPPED, {"reason": "already there"})),
        (
            compensation,
            (
                E.FAILED,
                error(
                    "permanent",
                    "step activate failed: HTTP 503 from "
                    "http://inv.example/api/v1/items/98765?token=abc",
                ),
            ),
        ),
    ]
    for j, (middle, end) in enumerate(b_ends):
        correlation = f"corr-{u}-{j}"
        at = t0 + timedelta(minutes=5, seconds=10 * j)
        if j < 3:  # the first three were triggered by an observation 2 s before
            g.correlations.append(correlation)
            g.observations.append(
                {
                    "ts": (at - timedelta(seconds=2)).isoformat(),
                    "event_type": "disk.full",
                    "entity_id": f"host-{u}",
                    "correlation_id": correlation,
                    "attrs": {"step": "detect", "status": "alert"},
                }
            )
        action(
            j,
            b,
            g.tenants[1],
            middle,
            end,
            at=at,
            accept_ms=5,
            start_ms=50,
            resolve_ms=[200, 400, 800, 1600, 45_000][j],  # 45 s: nothing caps at 30 s
            correlation=correlation,
        )
    return g


async def write_twice(karma: EmbeddedKarma, g: Generated) -> None:
    """Every transition and observation delivered twice (the second time shuffled)."""
    publisher = TransitionPublisher(karma.settings.kafka)
    await publisher.start()
    try:
        for transitions in (g.transitions, random.sample(g.transitions, len(g.transitions))):
            by_action: dict[str, list[Transition]] = {}
            for t in transitions:
                by_action.setdefault(t.action_id, []).append(t)
            for events in by_action.values():
                assert await publisher.publish(events, timeout=30) > 0
    finally:
        await publisher.stop()
    topic = karma.settings.kafka.topics.observations
    values = [json.dumps(o).encode() for o in g.observations]
    await produce_each(karma.settings.kafka, [(topic, v) for v in values + values])
    action_ids = sorted({t.action_id for t in g.transitions})
    host = g.observations[0]["entity_id"]
    async with asyncio.timeout(60):
        while True:
            stored = await asyncio.to_thread(karma.ledger.count_events, action_ids)
            seen = await asyncio.to_thread(karma.ledger.observations, entity_id=host)
            if stored >= len(g.transitions) and len(seen) >= len(g.observations):
                break
            await asyncio.sleep(0.2)
    # The sink has read every copy: the second delivery added nothing.
    assert await ledger_lag_settled(karma.settings)
    assert await asyncio.to_thread(karma.ledger.count_events, action_ids) == len(g.transitions)


@pytest.fixture(scope="module")
async def written(karma: EmbeddedKarma) -> Generated:
    g = generate()
    await write_twice(karma, g)
    return g


async def test_every_figure_is_the_known_answer_also_when_delivered_twice(
    karma: EmbeddedKarma, written: Generated, report: Callable[[str], None]
) -> None:
    g = written
    analytics = Analytics(karma.ledger)
    a, b = g.types

    stats = await asyncio.to_thread(analytics.stats, Filters(action_type=a), "type")
    [group] = stats.groups
    assert (group.group, group.total) == (a, 10)
    assert group.outcomes == {
        "SUCCEEDED": 7,
        "FAILED": 2,
        "TIMED_OUT": 1,
        "CANCELLED": 0,
        "SKIPPED": 0,
        "COMPENSATED": 0,
    }
    assert group.rate("SUCCEEDED") == 0.7
    p50, p90, p99 = percentiles(g.resolve_ms[a])
    assert (p50, p90, p99) == (5500.0, 9100.0, 9910.0)  # the definition, checked by hand
    resolve = group.time_to_resolve
    assert (resolve.count, resolve.mean) == (10, 5500.0)
    assert (resolve.p50, resolve.p90, resolve.p99) == (p50, p90, p99)
    accept = group.time_to_accept
    assert (accept.count, accept.mean) == (10, 55.0)
    assert (accept.p50, accept.p90, accept.p99) == percentiles([10 * (i + 1) for i in range(10)])
    start = group.time_to_start
    assert (start.p50, start.p99) == (145.0, 189.1)
    assert group.retries == 5 and group.trigger_to_request.count == 0
    assert stats.retries_per_action == {0: 7, 1: 1, 2: 2}
    u = a.rsplit(".", 1)[1]
    assert stats.failing_entities == [(f"e-{u}-0", 1, 4), (f"e-{u}-1", 1, 3), (f"e-{u}-2", 1, 3)]

    # B: the other outcomes, a 45 s resolution, and the triggers.
    stats_b = await asyncio.to_thread(analytics.stats, Filters(tenant=g.tenants[1]), "tenant")
    [group_b] = stats_b.groups
    assert group_b.outcomes == {
        "SUCCEEDED": 2,
        "FAILED": 0,
        "TIMED_OUT": 0,
        "CANCELLED": 1,
        "SKIPPED": 1,
        "COMPENSATED": 1,
    }
    assert group_b.time_to_resolve.p99 == percentiles(g.resolve_ms[b])[2]
    assert group_b.time_to_resolve.p99 is not None and group_b.time_to_resolve.p99 > 30_000
    triggered = group_b.trigger_to_request
    assert (triggered.count, triggered.p50) == (3, 2000.0)
    assert group_b.trigger_to_resolve.p50 == 2000.0 + 400
    by_day = await asyncio.to_thread(analytics.stats, Filters(action_type=a), "day")
    assert sum(day.total for day in by_day.groups) == 10

    errors = await asyncio.to_thread(analytics.errors, Filters(action_type=a))
    assert [(e.error_type, e.fingerprint, e.count, e.version) for e in errors] == [
        ("transient", "timeout after <n> ms calling '<str>'", 2, 1),
        ("timed_out", "no callback for job <id> within <n>s", 1, 1),
    ]
    assert errors[0].examples == sorted(
        {t.action_id for t in g.transitions if t.event_type is E.FAILED and t.tags["action"] == a}
    )
    [compensated] = await asyncio.to_thread(analytics.errors, Filters(action_type=b))
    assert compensated.fingerprint == (
        "step activate failed: HTTP <n> from http://inv.example/api/v1/items/<n>?<query>"
    )

    # Duplicates that slip past the sink (two sinks in a rebalance), in blocks that split
    # actions, change nothing: every aggregate of the view is a min, a max or a set.
    rows = [ledger_row(t, KafkaPosition("dup", 0, n)) for n, t in enumerate(g.transitions)]
    for block in (rows[::2], rows[1::2], rows):
        await asyncio.to_thread(karma.ledger.insert_unchecked, block)
    again = await asyncio.to_thread(analytics.stats, Filters(action_type=a), "type")
    assert again.groups == stats.groups and again.retries_per_action == stats.retries_per_action
    again_b = await asyncio.to_thread(analytics.stats, Filters(tenant=g.tenants[1]), "tenant")
    assert again_b.groups == stats_b.groups

    timeline = await asyncio.to_thread(analytics.correlation, g.correlations[0])
    assert [r["kind"] for r in timeline] == ["observation"] + ["transition"] * 4
    assert [r["event_type"] for r in timeline[1:]] == [
        "action.requested",
        "action.accepted",
        "action.started",
        "action.succeeded",
    ]
    report(
        f"known answers: {len(g.transitions)} transitions and {len(g.observations)} "
        "observations delivered twice; outcomes, exact p50/p90/p99 (one of 45 s), retries, "
        "failing entities, 3 fingerprint groups and trigger times all as generated"
    )

    # The same through the API, confined to a tenant for a tenant's key.
    assert karma.api is not None
    async with httpx.AsyncClient(
        base_url=karma.api.url, timeout=30, headers=bearer(admin_key(karma))
    ) as api:
        answer = await api.get("/v1/stats", params={"type": a, "by": "type"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["groups"][0]["time_to_resolve_ms"]["p90"] == p90
        assert body["retries_per_action"] == {"0": 7, "1": 1, "2": 2}
        errors_json = (await api.get("/v1/errors", params={"type": a})).json()
        assert [e["count"] for e in errors_json] == [2, 1]
        timeline_json = (await api.get(f"/v1/correlations/{g.correlations[0]}")).json()
        assert len(timeline_json) == 5
        missing = await api.get(f"/v1/correlations/none-{uuid.uuid4().hex}")
        assert missing.status_code == 404
        bad = await api.get("/v1/stats", params={"since": "yesterday", "by": "week"})
        assert bad.status_code == 422
        assert {e["field"] for e in bad.json()["errors"]} == {"since"}
        bad_by = await api.get("/v1/stats", params={"by": "week"})
        assert (bad_by.status_code, bad_by.json()["errors"][0]["field"]) == (422, "by")
    tenant_key = new_key(karma, Scope.READ, tenant=g.tenants[0])
    async with httpx.AsyncClient(
        base_url=karma.api.url, timeout=30, headers=bearer(tenant_key)
    ) as api:
        own = (await api.get("/v1/stats")).json()
        assert [g_["total"] for g_ in own["groups"]] == [10]
        other = await api.get("/v1/stats", params={"tenant": g.tenants[1]})
        assert other.status_code == 403
        hidden = await api.get(f"/v1/correlations/{g.correlations[0]}")
        assert hidden.status_code == 404  # another tenant's actions; observations not shown


# Templates whose variable parts are drawn at random: each must fall into one group.
TEMPLATES: list[tuple[str, Callable[[random.Random], str]]] = [
    (
        "timeout after <n> ms calling '<str>'",
        lambda r: (
            f"timeout after {r.randint(0, 10**9)} ms calling '{r.choice(['a', 'svc-7', ''])}'"
        ),
    ),
    (
        "job <id> (<uuid>) lost at <ip>:<n>",
        lambda r: (
            f"job job-{r.randint(100, 10**6)} ({uuid.UUID(int=r.getrandbits(128))}) lost "
            f"at {r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(0, 255)}"
            f":{r.randint(1, 65535)}"
        ),
    ),
    (
        "GET https://api.example.com/v1/items/<n>?<query> answered <n>",
        lambda r: (
            f"GET https://api.example.com/v1/items/{r.randint(0, 10**6)}"
            f"?page={r.randint(1, 9)}&q={r.choice(['x', 'y%20z'])} answered {r.choice([500, 503])}"
        ),
    ),
    (
        'digest <hex> != <hex> for "<str>"',
        lambda r: (
            f"digest {r.getrandbits(128):032x} != 0x{r.getrandbits(32):x} for "
            f'"{r.choice(["a b", "", "x"])}"'
        ),
    ),
    (
        "no callback for <id> within <n>s; retry <n> of <n>",
        lambda r: (
            f"no callback for act_{r.getrandbits(64):016x} within {r.randint(1, 99)}s; "
            f"retry {r.randint(1, 9)} of {r.randint(1, 9)}"
        ),
    ),
]


async def test_messages_that_differ_only_in_variable_parts_share_a_fingerprint(
    karma: EmbeddedKarma,
) -> None:
    from karma.fingerprint import sql_expression

    r = random.Random(12)
    cases = [(i, make(r)) for i, (_, make) in enumerate(TEMPLATES) for _ in range(40)]
    rows = await asyncio.to_thread(
        karma.ledger.rows,
        f"SELECT t.1 AS template, {sql_expression('t.2', 1)} AS fp "
        "FROM (SELECT arrayJoin(%(cases)s) AS t)",
        {"cases": cases},
    )
    groups: dict[int, set[str]] = {}
    for template, fp in rows:
        groups.setdefault(int(template), set()).add(fp)
    assert groups == {i: {expected} for i, (expected, _) in enumerate(TEMPLATES)}
    # Words that are not ids stay; apostrophes within words open no quote; times are one
    # placeholder (not one group per hour); text cut at the limit stays whole characters.
    examples = {
        "v2 utf8 sha256 over HTTP/1.1 failed: Why? see docs": (
            "v2 utf8 sha256 over HTTP/<n> failed: Why? see docs"
        ),
        "Can't connect to 10.0.0.1: don't retry": "Can't connect to <ip>: don't retry",
        "deadline 2026-11-25T10:00:00.250Z passed (job-42, order-7f3a)": (
            "deadline <ts> passed (<id>, <id>)"
        ),
        "é" * 1500: "é" * 1000,
    }
    for message, expected in examples.items():
        [(kept,)] = await asyncio.to_thread(
            karma.ledger.rows, f"SELECT {sql_expression('%(m)s', 1)}", {"m": message}
        )
        assert kept == expected, message[:80]


BINARIES = browser_binaries()


@pytest.mark.skipif(BINARIES is None, reason="no chromium and chromedriver on PATH")
async def test_the_html_report_draws_every_chart_offline(
    karma: EmbeddedKarma, written: Generated, tmp_path: Path, report: Callable[[str], None]
) -> None:
    assert BINARIES is not None
    analytics = Analytics(karma.ledger)
    mine = Filters(tenant=written.tenants[1])  # not what other tests wrote
    answer = {
        "stats": (await asyncio.to_thread(analytics.stats, mine, "type")).as_json(),
        "errors": [g.as_json() for g in await asyncio.to_thread(analytics.errors, mine)],
    }
    page = tmp_path / "report.html"
    page.write_text(render_html(answer), encoding="utf-8")
    browser = await asyncio.to_thread(Browser, *BINARIES, "file://")
    try:
        charts = await asyncio.to_thread(_drawn_charts, browser, page)
    finally:
        await asyncio.to_thread(browser.quit)
    assert set(charts) == {"per-hour", "resolve", "types", "retries", "errors"}
    assert all(bars > 0 for bars, _ in charts.values()), charts
    assert "<n>" in charts["errors"][1]  # placeholders shown as text, not taken for tags
    report(
        f"HTML report ({page.stat().st_size // 1024} KiB, no network): "
        + ", ".join(f"{name} {bars} bars" for name, (bars, _) in charts.items())
    )


def _drawn_charts(browser: Browser, page: Path) -> dict[str, tuple[int, str]]:
    """Each chart's id: how many bars chromium drew in it, and its text."""
    browser.open(str(page))
    sections = browser.until(lambda: browser.find_all("section.chart") or None, "the charts")

    def drawn() -> dict[str, tuple[int, str]] | None:
        found = {}
        for section in browser.find_all("section.chart"):
            chart = section.find_element(By.CSS_SELECTOR, ".plotly-graph-div")
            bars = section.find_elements(By.CSS_SELECTOR, ".main-svg .trace.bars .point path")
            if not bars:
                return None
            found[str(chart.get_attribute("id"))] = (len(bars), section.text)
        return found if len(found) == len(sections) else None

    charts = browser.until(drawn, "every chart drawn")
    assert browser.script_errors() == []
    assert [u for u in browser.requested_urls() if not u.startswith("file://")] == []
    return charts
