"""Debian's chromium, headless, driven through Selenium for the console's tests.

Nothing is downloaded: the browser and its driver are the system's (`shutil.which`), given
to Selenium by path so Selenium Manager never runs (and `SE_OFFLINE` is set while the browser
starts, should anything call it). Every call blocks: the tests run them off the event loop
that serves the API (`asyncio.to_thread`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

T = TypeVar("T")
WAIT_S = 30.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Chromium's own calls home (updates, sync, metrics) are switched off: the only requests
# left are the page's, which the tests check stay on the API's origin.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--window-size=1280,1000",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
)


def browser_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) from PATH, or None when either is missing."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def selector(name: str, **data: str) -> str:
    """A CSS selector of `data-testid=name` with `data-*` values (`data_seq` → data-seq)."""
    attributes = "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in data.items())
    return f'[data-testid="{name}"]{attributes}'


class Browser:
    """One headless chromium with the waits and checks the console's tests use."""

    def __init__(self, chromium: str, chromedriver: str, base_url: str) -> None:
        options = Options()
        options.binary_location = chromium
        for argument in CHROMIUM_ARGS:
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        previous = os.environ.get("SE_OFFLINE")
        os.environ["SE_OFFLINE"] = "true"
        try:
            self.driver = webdriver.Chrome(
                service=Service(executable_path=chromedriver), options=options
            )
        finally:
            if previous is None:
                del os.environ["SE_OFFLINE"]
            else:
                os.environ["SE_OFFLINE"] = previous
        self.base_url = base_url.rstrip("/")

    def quit(self) -> None:
        self.driver.quit()

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base_url}{path}")

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def find(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def find_all(self, selector: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def until(self, condition: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
        """`condition()` once it is truthy; elements replaced meanwhile count as not yet."""
        wait = WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        return wait.until(lambda _: condition() or False, message=f"waited {timeout} s for {what}")

    def shown(self, selector: str, timeout: float = WAIT_S) -> WebElement:
        """The element once it is displayed."""

        def displayed() -> WebElement | None:
            element = self.find(selector)
            return element if element.is_displayed() else None

        return self.until(displayed, f"{selector} to show", timeout)

    def text_of(self, selector: str) -> str:
        return str(self.find(selector).text)

    def has_text(self, selector: str, text: str, timeout: float = WAIT_S) -> WebElement:
        """The element once its text is `text`."""

        def matches() -> WebElement | None:
            element = self.find(selector)
            return element if element.text == text else None

        return self.until(matches, f"{selector} to read {text!r}", timeout)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the window at `path` (checked to be one)."""
        assert self.driver.save_screenshot(str(path)), f"no screenshot at {path}"
        data = path.read_bytes()
        assert len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC), f"{path} is no PNG"
        return path

    def script_errors(self) -> list[str]:
        """The page's errors since the last call: scripts, CSP, anything but answers
        with an error status (a 401 before login is how the console learns it must ask)."""
        entries = self._log("browser")
        return [
            str(e["message"])
            for e in entries
            if e["level"] == "SEVERE" and e.get("source") != "network"
        ]

    def _log(self, kind: str) -> list[dict[str, Any]]:
        """Chromium's log entries of `kind` since the last read (reading empties it)."""
        entries = self.driver.get_log(kind)  # type: ignore[no-untyped-call]  # untyped in Selenium
        return list(entries)

    def requested_urls(self) -> list[str]:
        """Every URL the page asked for since the last call (from chromium's network log)."""
        urls = []
        for entry in self._log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(str(message["params"]["request"]["url"]))
        return urls

    def elsewhere(self) -> list[str]:
        """The URLs requested since the last call that left the API's origin (`data:`
        URLs stay in the page: chromium draws its own form controls' icons with them)."""
        home = urlsplit(self.base_url)
        return [
            url
            for url in self.requested_urls()
            if (urlsplit(url).scheme, urlsplit(url).netloc) != (home.scheme, home.netloc)
            and urlsplit(url).scheme != "data"
        ]
