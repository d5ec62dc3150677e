"""The web console in a real browser (Debian's chromium, headless, through Selenium) against
the embedded stack: login, a request from the registry's generated form watched live, an
approval decided on the action's page, the DLQ, the actions list with its filters, and a
console that loads nothing from anywhere but the API's own origin.

One browser serves the module. Selenium blocks, and the API is served by this event loop, so
each scenario's browser steps run in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.conftest import unique
from tests.support.api import admin_key, bearer, until_state
from tests.support.browser import Browser, browser_binaries, selector
from tests.support.kafka import dead_letters_at, produce_each
from workers.embedded import EmbeddedKarma

BINARIES = browser_binaries()
pytestmark = pytest.mark.skipif(BINARIES is None, reason="no chromium and chromedriver on PATH")
ACTION_PAGE = re.compile(r"#/actions/(act_[0-9a-f]+)$")
LOG_EVENTS = ["action.requested", "action.accepted", "action.started", "action.succeeded"]


@dataclass
class Console:
    browser: Browser
    key: str | None  # the key the console logged in with (None: the API has no keys)
    name: str  # who the session is


def _key(karma: EmbeddedKarma) -> str | None:
    return admin_key(karma) if karma.settings.api.auth else None


@pytest.fixture(scope="module")
async def console(
    karma: EmbeddedKarma, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Console]:
    assert karma.api is not None and BINARIES is not None
    browser = await asyncio.to_thread(Browser, *BINARIES, karma.api.url)
    try:
        key = _key(karma)
        shots = tmp_path_factory.mktemp("console-login")
        name = await asyncio.to_thread(_log_in, browser, key, shots)
        yield Console(browser, key, name)
    finally:
        await asyncio.to_thread(browser.quit)


@pytest.fixture
async def api(karma: EmbeddedKarma) -> AsyncIterator[httpx.AsyncClient]:
    assert karma.api is not None
    key = _key(karma)
    headers = bearer(key) if key else {}
    async with httpx.AsyncClient(base_url=karma.api.url, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture
def browser(console: Console) -> Iterator[Browser]:
    """The module's browser; each test leaves it with no script error and no request
    that left the API's origin (chromium's logs since the previous test)."""
    yield console.browser
    assert console.browser.script_errors() == []
    assert console.browser.elsewhere() == []


def _log_in(b: Browser, key: str | None, shots: Path) -> str:
    """Through the login form (a wrong key first), when the API has keys; the session's
    name as the top bar shows it."""
    b.open("/")
    b.until(lambda: urlsplit(b.url).path == "/console/", "/ to lead to the console")
    if key is not None:
        field = b.shown(selector("login-key"))
        b.screenshot(shots / "login.png")
        field.send_keys("not-a-key")
        b.find(selector("login-submit")).click()
        assert "not valid" in b.shown(selector("login-error-problem")).text
        field.clear()
        field.send_keys(key)
        b.find(selector("login-submit")).click()
    b.shown(selector("nav-actions"))
    return b.until(lambda: b.text_of(selector("session-name")), "the session's name")


def _visit(b: Browser, route: str) -> None:
    """Open a console route (read afresh when it is the one shown)."""
    target = f"{b.base_url}/console/#{route}"
    if b.url == target:
        b.driver.refresh()
    else:
        b.driver.get(target)


def _cell(b: Browser, table: str, key: str, value: str) -> None:
    """Wait until a key/value table shows `value` beside `key` (the panels follow the
    timeline: each new transition re-reads the status)."""
    b.has_text(f'{selector(table)} tr[data-key="{key}"] td', value)


def _timeline(b: Browser) -> list[tuple[int, str]]:
    rows = b.find_all(selector("timeline-row"))
    return [
        (int(r.get_attribute("data-seq") or 0), r.get_attribute("data-event") or "") for r in rows
    ]


def _request_log_from_registry(b: Browser, message: str, entity: str, shots: Path) -> str:
    b.find(selector("nav-registry")).click()
    link = b.shown(selector("type-link", type="log"))
    b.screenshot(shots / "registry.png")
    link.click()
    b.shown(selector("request-form"))
    level = Select(b.find(selector("param-level")))
    assert level.first_selected_option.text == "info"  # the schema's default
    assert b.find(selector("param-message")).get_attribute("aria-required") == "true"
    b.find(selector("request-submit")).click()  # the message is required: refused here
    b.has_text(selector("param-message-error"), "required")
    b.screenshot(shots / "registry-log.png")
    b.find(selector("param-message")).send_keys(message)
    b.find(selector("request-entity_id")).send_keys(entity)
    b.find(selector("request-submit")).click()
    found = b.until(lambda: ACTION_PAGE.search(b.url), "the action's page")
    action_id = found.group(1)
    b.has_text(selector("action-id"), action_id)
    b.has_text(selector("action-type"), "log")
    return action_id


def _watch_log_succeed(b: Browser, action_id: str, message: str, web_ui: str, shots: Path) -> None:
    b.has_text(selector("action-state"), "SUCCEEDED")
    b.shown(selector("timeline-row", event="action.succeeded"))
    b.has_text(selector("live-status"), "ended")
    assert _timeline(b) == list(enumerate(LOG_EVENTS, start=1))
    _cell(b, "params-table", "message", message)
    _cell(b, "params-table", "level", "info")
    _cell(b, "outputs-table", "logged", message)
    assert not b.find(selector("cancel-button")).is_displayed()  # it has ended
    assert b.find(selector("temporal-link")).get_attribute("href") == web_ui
    b.screenshot(shots / "action.png")


async def test_a_log_action_requested_from_the_registry_form_succeeds_live(
    console: Console, browser: Browser, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    message, entity = unique("hello from the console"), unique("entity")
    action_id = await asyncio.to_thread(
        _request_log_from_registry, browser, message, entity, tmp_path
    )
    info = (await api.get("/v1/info")).json()
    assert info["temporal_ui"], "the embedded stack has a Temporal Web UI"
    web_ui = f"{info['temporal_ui']}/namespaces/{info['namespace']}/workflows/action-{action_id}"
    await asyncio.to_thread(_watch_log_succeed, browser, action_id, message, web_ui, tmp_path)
    status = await until_state(api, action_id, "SUCCEEDED")
    requested = status["transitions"][0]
    assert requested["attrs"]["args"] == {"message": message, "level": "info"}
    assert requested["entity_id"] == entity


def _request_provision(b: Browser, name: str, shots: Path) -> str:
    """Every kind of field of a generated form, a server's field error shown beside its
    field, then a request that is taken."""
    _visit(b, "/registry/http_request")
    assert b.shown(selector("param-headers")).get_attribute("type") == "password"  # secret
    b.find(selector("param-url")).send_keys("http://127.0.0.1:9/")
    b.find(selector("param-body")).send_keys("{not json")
    b.find(selector("request-submit")).click()
    assert "not valid JSON" in b.shown(selector("param-body-error")).text  # refused here
    _visit(b, "/registry/demo.provision")
    b.shown(selector("request-form"))
    b.find(selector("param-name")).clear()
    b.find(selector("param-name")).send_keys(name)
    b.find(selector("param-features-0")).click()  # tls
    b.find(selector("param-features-2")).click()  # metrics
    b.find(selector("param-already_provisioned")).click()
    step = b.find(selector("param-step_seconds"))
    step.clear()
    step.send_keys("601")  # over its maximum: the server says so
    b.find(selector("request-submit")).click()
    b.has_text(selector("param-step_seconds-error"), "must be <= 600")
    assert "params.step_seconds" in b.text_of(selector("request-problem-problem"))
    assert step.get_attribute("aria-invalid") == "true"
    b.screenshot(shots / "registry-provision-refused.png")
    step.clear()
    step.send_keys("0")
    b.find(selector("request-submit")).click()
    found = b.until(lambda: ACTION_PAGE.search(b.url), "the action's page")
    b.has_text(selector("action-state"), "SKIPPED")  # already provisioned
    b.screenshot(shots / "action-skipped.png")
    return found.group(1)


async def test_the_request_form_converts_values_and_shows_the_servers_field_errors(
    browser: Browser, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    name = unique("svc")
    action_id = await asyncio.to_thread(_request_provision, browser, name, tmp_path)
    status = await until_state(api, action_id, "SKIPPED")
    args = status["transitions"][0]["attrs"]["args"]
    assert {k: args[k] for k in ("name", "features", "step_seconds", "already_provisioned")} == {
        "name": name,
        "features": ["tls", "metrics"],
        "step_seconds": 0,
        "already_provisioned": True,
    }


def _approve(b: Browser, action_id: str, change: str, name: str, by: str, shots: Path) -> None:
    _visit(b, f"/actions/{action_id}")
    b.shown(selector("decision-form"))
    assert change in b.text_of(selector("decision-request-table"))
    b.has_text(selector("action-state"), "WAITING")
    b.has_text(selector("live-status"), "live")  # what follows comes over the event stream
    assert b.find(selector("decision-by")).get_attribute("value") == name
    b.find(selector("decision-reason")).send_keys("looks fine")
    b.screenshot(shots / "action-waiting.png")
    b.find(selector("approve-button")).click()
    decided = b.shown(selector("timeline-row", event="action.decided"))
    succeeded = b.shown(selector("timeline-row", event="action.succeeded"))
    b.has_text(selector("action-state"), "SUCCEEDED")
    assert f"approve by {by} (looks fine)" in decided.text
    assert decided.get_attribute("data-via") == succeeded.get_attribute("data-via") == "stream"
    b.until(lambda: not b.find(selector("decision-form")).is_displayed(), "the form to go")
    _cell(b, "decision", "verdict", "approve")
    _cell(b, "outputs-table", "approved_by", by)
    b.has_text(selector("live-status"), "ended")
    b.screenshot(shots / "action-decided.png")


async def test_an_approval_is_decided_on_the_action_page_and_the_timeline_follows(
    console: Console, browser: Browser, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    change = unique("scale web to 5")
    answer = await api.post(
        "/v1/actions", json={"type": "demo.approval", "params": {"change": change}}
    )
    assert answer.status_code == 202, answer.text
    action_id = answer.json()["action_id"]
    # Recorded with the key the console signed in with: nobody decides unseen as another.
    key_id = console.key.split("_")[1] if console.key else ""
    by = f"{console.name} (key {key_id})" if key_id else console.name
    await asyncio.to_thread(_approve, browser, action_id, change, console.name, by, tmp_path)
    status = await until_state(api, action_id, "SUCCEEDED")
    assert status["decision"]["verdict"] == "approve"
    assert (status["decision"]["by"], status["decision"]["reason"]) == (by, "looks fine")
    assert [t["event_type"] for t in status["transitions"]][-3:] == [
        "action.decided",
        "action.started",
        "action.succeeded",
    ]


def _replay_letter(b: Browser, marker: str, source: str, shots: Path) -> None:
    _visit(b, "/dlq")

    def letter() -> Any:
        for row in b.find_all(selector("dlq-row")):
            if marker in row.find_element(By.CSS_SELECTOR, selector("dlq-value")).text:
                return row
        return None

    row = b.until(letter, f"a letter holding {marker}")
    position = row.get_attribute("data-position")
    assert source in row.text
    assert "not JSON" in row.find_element(By.CSS_SELECTOR, selector("dlq-reason")).text
    times = [t.get_attribute("datetime") or "" for t in b.find_all(f"{selector('dlq-rows')} time")]
    assert times == sorted(times, reverse=True), "newest first"
    b.screenshot(shots / "dlq.png")
    assert not b.find(selector("dlq-replay")).is_enabled()
    row.find_element(By.CSS_SELECTOR, selector("dlq-select")).click()
    b.has_text(selector("dlq-replay"), "Replay 1").click()
    b.has_text(selector("dlq-status"), f"Replayed 1: {position}")
    b.screenshot(shots / "dlq-replayed.png")


async def test_the_dlq_page_shows_a_bad_message_and_replays_it(
    karma: EmbeddedKarma, browser: Browser, tmp_path: Path
) -> None:
    kafka = karma.settings.kafka
    marker = unique("console-dlq")
    [(topic, partition, offset)] = await produce_each(
        kafka, [(kafka.topics.requested, f"this is not JSON {marker}".encode())]
    )
    await dead_letters_at(kafka, [(topic, partition, offset)])
    source = f"{topic} {partition}:{offset}"
    await asyncio.to_thread(_replay_letter, browser, marker, source, tmp_path)


def _find_in_list(b: Browser, action_id: str, entity: str, shots: Path) -> None:
    _visit(b, "/actions")
    row = selector("action-row", action_id=action_id)
    # Temporal's visibility lags a little; the list refreshes itself meanwhile.
    b.has_text(f"{row} {selector('action-row-state')}", "SUCCEEDED")
    b.screenshot(shots / "actions.png")
    b.find(selector("filter-entity")).send_keys(entity)
    Select(b.find(selector("filter-state"))).select_by_value("SUCCEEDED")
    b.find(selector("filter-apply")).click()
    b.until(lambda: "entity=" in b.url and "state=SUCCEEDED" in b.url, "the filters in the URL")
    b.until(
        lambda: (
            [r.get_attribute("data-action-id") for r in b.find_all(selector("action-row"))]
            == [action_id]
        ),
        "the filtered list to hold the one action",
    )
    b.screenshot(shots / "actions-filtered.png")

    # A start-time window (a local time in the form, a UTC instant for the API).
    def listed() -> list[str | None]:
        return [r.get_attribute("data-action-id") for r in b.find_all(selector("action-row"))]

    def shows(year: str, expected: list[str]) -> Callable[[], bool]:
        return lambda: year in b.url and listed() == expected

    for when, expected in (("2099-01-01T00:00:00", []), ("2000-01-01T00:00:00", [action_id])):
        field = b.find(selector("filter-started_after"))
        b.driver.execute_script("arguments[0].value = arguments[1]", field, when)
        b.find(selector("filter-apply")).click()
        b.until(shows(f"started_after={when[:4]}", expected), f"actions started after {when}")
    b.find(f"{row} {selector('action-link')}").click()
    b.until(lambda: b.url.endswith(f"#/actions/{action_id}"), "the action's page")
    b.has_text(selector("action-id"), action_id)
    b.has_text(selector("action-state"), "SUCCEEDED")


async def test_the_actions_list_shows_an_action_and_its_link_opens_it(
    browser: Browser, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    entity = unique("listed")
    answer = await api.post(
        "/v1/actions",
        json={"type": "log", "params": {"message": "list me"}, "entity_id": entity},
    )
    assert answer.status_code == 202, answer.text
    action_id = answer.json()["action_id"]
    await until_state(api, action_id, "SUCCEEDED")
    await asyncio.to_thread(_find_in_list, browser, action_id, entity, tmp_path)


class _Assets(HTMLParser):
    """Every URL an HTML page names in src, href or content attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.csp = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v is not None]
        if (named.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp = named.get("content") or ""


def _walk_pages(b: Browser, shots: Path) -> None:
    for route, ready in [
        ("/actions", selector("actions-table")),
        ("/registry", selector("type-link", type="demo.approval")),
        ("/registry/demo.approval", selector("param-on_timeout")),
        ("/dlq", selector("dlq-table")),
    ]:
        _visit(b, route)
        b.shown(ready)
        b.screenshot(shots / f"{route.strip('/').replace('/', '-')}.png")


async def test_the_console_loads_nothing_from_elsewhere(
    browser: Browser, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    page = await api.get("/console/")
    assert page.status_code == 200
    assets = _Assets()
    assets.feed(page.text)
    assert {"app.js", "style.css"} <= set(assets.urls)
    assert "default-src 'self'" in assets.csp
    # Not to be framed by another site (clickjacking), nor sniffed.
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    # The page and every module it imports, followed from app.js.
    seen: set[str] = set()
    todo = [u for u in assets.urls if not u.startswith("#")]
    while todo:
        url = todo.pop()
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
        if url in seen:
            continue
        seen.add(url)
        answer = await api.get(f"/console/{url}")
        assert answer.status_code == 200, url
        if url.endswith((".js", ".css")):
            assert not re.search(r"https?://", answer.text), f"{url} names another site"
            todo += [m.removeprefix("./") for m in re.findall(r'from "([^"]+)"', answer.text)]
    assert len([u for u in seen if u.endswith(".js")]) > 5, seen
    # In the browser too: `browser` checks that nothing came from another origin.
    await asyncio.to_thread(_walk_pages, browser, tmp_path)


def _log_out_and_in(b: Browser, key: str) -> None:
    b.find(selector("logout")).click()
    b.shown(selector("login-form"))
    assert not b.find("#nav").is_displayed()
    b.driver.get(f"{b.base_url}/console/#/dlq")
    b.driver.refresh()  # read afresh: the cookie is gone, so the console asks again
    b.shown(selector("login-key")).send_keys(key)
    b.find(selector("login-submit")).click()
    b.shown(selector("dlq-table"))  # where it was going


async def test_logging_out_asks_for_the_key_again(console: Console, browser: Browser) -> None:
    if console.key is None:
        pytest.skip("the API has no keys: nothing to log out of")
    await asyncio.to_thread(_log_out_and_in, browser, console.key)


def _request_with_a_reference(b: Browser, shots: Path) -> str:
    """A reference field offers its resolver's choices; a name typed in is resolved."""
    _visit(b, "/registry/test.refs")
    field = b.shown(selector("param-cluster"))
    assert field.get_attribute("list") == "param-cluster-choices"
    options = b.driver.find_elements(By.CSS_SELECTOR, f"{selector('param-cluster-choices')} option")
    assert [(o.get_attribute("value"), o.text or o.get_attribute("textContent")) for o in options][
        :3
    ] == [("cls-eu-1", "prod-eu"), ("cls-us-1", "prod-us"), ("cls-dev-1", "dev")]
    field.send_keys("prod-eu")
    b.screenshot(shots / "registry-reference.png")
    b.find(selector("request-submit")).click()
    found = b.until(lambda: ACTION_PAGE.search(b.url), "the action's page")
    b.has_text(selector("action-state"), "SUCCEEDED")
    _cell(b, "outputs-table", "cluster", "cls-eu-1")
    return found.group(1)


async def test_a_reference_field_offers_choices_and_resolves_a_name(
    console: Console, browser: Browser, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    action_id = await asyncio.to_thread(_request_with_a_reference, browser, tmp_path)
    status = await until_state(api, action_id, "SUCCEEDED")
    assert status["outputs"]["message"] == "scaling nothing on cls-eu-1"
