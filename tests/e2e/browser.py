"""Headless Chromium under Selenium for the console's browser tests, and their screenshots.

Chromium starts with every background service off and a fresh profile: the machine may have no
network, and a browser left to phone home slows every page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
WIDE, NARROW = 1280, 390
T = TypeVar("T")


def binaries() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class Browser:
    """One Chromium; every step is synchronous, so tests run it in a thread of their own."""

    def __init__(self, profile: Path, shots: Path) -> None:
        found = binaries()
        if found is None:
            pytest.skip("chromium and chromedriver are not installed (make test installs them)")
        options = webdriver.ChromeOptions()
        options.binary_location = found[0]
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(found[1]))
        self.driver.set_window_size(WIDE, 900)
        self.shots = shots

    def quit(self) -> None:
        self.driver.quit()

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, condition: Callable[[], T | None], timeout: float = 10) -> T:
        wait = WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=[StaleElementReferenceException],
        )
        return wait.until(lambda _: condition())

    def renders(self) -> int:
        """How many pages the console has rendered so far."""
        return int(
            self.script("return Number(document.getElementById('main').dataset.renders || 0)")
        )

    def after(self, action: Callable[[], object]) -> None:
        """Runs action, then waits until the page it leads to has all its data."""
        before = self.renders()
        action()
        self.wait(lambda: self.renders() > before and not self.all("main[aria-busy]"))

    def find(self, css: str, timeout: float = 10) -> WebElement:
        return self.wait(lambda: _first(self.driver.find_elements(By.CSS_SELECTOR, css)), timeout)

    def all(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def wait_text(self, css: str, predicate: Callable[[str], bool], timeout: float = 10) -> str:
        def check() -> str | None:
            nodes = self.driver.find_elements(By.CSS_SELECTOR, css)
            text = nodes[0].text if nodes else None
            return text if text is not None and predicate(text) else None

        return self.wait(check, timeout)

    def button(self, label: str, within: str = "body") -> WebElement:
        def visible() -> WebElement | None:
            for node in self.driver.find_elements(By.CSS_SELECTOR, f"{within} button"):
                if node.text.strip() == label and node.is_displayed() and node.is_enabled():
                    return node
            return None

        return self.wait(visible)

    def fill(self, css: str, value: str) -> None:
        node = self.find(css)
        node.clear()
        node.send_keys(value)

    def press(self, key: str) -> None:
        """A key (a name in selenium's Keys) pressed on whatever has the focus."""
        ActionChains(self.driver).send_keys(getattr(Keys, key)).perform()

    def focused(self) -> WebElement:
        return self.driver.switch_to.active_element

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def errors(self) -> list[str]:
        """Browser log entries at error level since the last call (reading empties the log)."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e["level"] == "SEVERE"]

    def screenshot(self, name: str) -> None:
        """The page at both widths, each as tall as its content, then back to the wide view."""
        for label, width in (("wide", WIDE), ("narrow", NARROW)):
            self._viewport(width, 900)
            height = self.script("return document.documentElement.scrollHeight")
            self._viewport(width, min(max(int(height), 600), 3200))
            shot = self.shots / f"console-{name}-{label}.png"
            self.driver.save_screenshot(str(shot))
            _shrink(shot)
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        time.sleep(0.3)

    def _viewport(self, width: int, height: int) -> None:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        time.sleep(0.4)  # charts redraw on resize


def _shrink(png: Path) -> None:
    """To a 256-colour palette where pngquant is installed: a third of the size, for docs/."""
    if shutil.which("pngquant"):
        command = ["pngquant", "--force", "--skip-if-larger", "--quality", "70-95"]
        subprocess.run([*command, "--output", str(png), str(png)], check=False)


def _first(nodes: list[Any]) -> Any:
    return nodes[0] if nodes else None


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/ when CONSOLE_SCREENSHOTS asks for it (make screenshots), else the test's tmp dir."""
    target = (
        Path(os.environ["CONSOLE_SCREENSHOTS"]) if "CONSOLE_SCREENSHOTS" in os.environ else tmp_path
    )
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "profile", screenshot_dir(tmp_path))
    yield opened
    opened.quit()
