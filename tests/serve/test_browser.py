"""The browser demo end to end: the real server (uvicorn on 127.0.0.1) and headless Chromium driven by Selenium,
its fake microphone playing a real RAVDESS clip: start → live emotion bars and partial updates; stop → done; a file
upload → the timeline drawn and summarised; an API key typed into the page for a secured server.

Needs ``chromium`` + ``chromedriver`` (``scripts/install_browser.sh``) and the ``selenium`` package: missing, the
tests fail under CI and skip elsewhere (as the shared-data fixtures do)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from ser.serve.app import create_app
from ser.serve.settings import Settings
from tests.serve.test_stream import CLIP, LABELS, _export, running_server

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

TIMEOUT_S = 45.0


def _missing(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    """``(chromium, chromedriver)`` executables (``SER_CHROMIUM`` / ``SER_CHROMEDRIVER`` override)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install selenium)")
    chrome = os.environ.get("SER_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    driver = os.environ.get("SER_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chrome or not driver:
        _missing("chromium / chromedriver not found (scripts/install_browser.sh installs them)")
    return chrome, driver


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("browser") / "m", "1")


@pytest.fixture(scope="module")
def clip_wav(ravdess_dir, tmp_path_factory) -> Path:
    """The RAVDESS clip as a 16-bit PCM WAV (what Chromium's fake audio capture plays), twice in a row."""
    y, sr = sf.read(ravdess_dir / "Actor_01" / CLIP, dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "angry.wav"
    sf.write(path, np.concatenate([y, y]), sr, subtype="PCM_16")
    return path


@pytest.fixture
def make_browser(browser_paths, clip_wav) -> Iterator[Callable[[], Any]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def _make() -> Any:
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser_paths[0]
        for arg in (
            "--headless=new",
            "--no-sandbox",  # containers run as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1200,1000",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={clip_wav}",
            "--autoplay-policy=no-user-gesture-required",
        ):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        d = webdriver.Chrome(options=opts, service=Service(browser_paths[1]))
        d.set_page_load_timeout(30)
        drivers.append(d)
        return d

    yield _make
    for d in drivers:
        d.quit()


def wait_for(driver, condition: Callable[[Any], Any], what: str, timeout_s: float = TIMEOUT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition)
    except Exception:
        status = driver.execute_script("return document.getElementById('status').textContent")
        log = driver.execute_script("return document.getElementById('log').textContent")
        console = [e["message"] for e in driver.get_log("browser")]
        raise AssertionError(
            f"timed out waiting for {what}; status {status!r}, log {log!r}, console {console}"
        ) from None


def data(driver, element_id: str, key: str) -> str:
    return driver.execute_script(f"return document.getElementById({element_id!r}).dataset[{key!r}]")


def bar_values(driver) -> dict[str, float]:
    values = driver.execute_script(
        "return Array.from(document.querySelectorAll('#bars .bar')).map(b => [b.dataset.label, b.dataset.value])"
    )
    return {label: float(v) for label, v in values}


def painted_pixels(driver, canvas_id: str) -> int:
    """Non-transparent pixels of a canvas."""
    return driver.execute_script(
        """const c = document.getElementById(arguments[0]);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;""",
        canvas_id,
    )


def severe_console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_microphone_stream_and_file_timeline(make_browser, holder, clip_wav):
    from selenium.webdriver.common.by import By

    app = create_app(Settings(model_dir=holder.model_dir), holder=holder)
    with running_server(app) as addr:
        d = make_browser()
        d.get(f"http://{addr}/")
        assert "ser" in d.title
        wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == len(LABELS), "the bars")
        assert [b.get_attribute("data-label") for b in d.find_elements(By.CSS_SELECTOR, "#bars .bar")] == LABELS
        assert data(d, "model-info", "version") == "1"
        assert set(bar_values(d).values()) == {0.0}

        # live: the fake microphone plays the clip; partials arrive every 0.5 s, voiced ones move the bars
        d.find_element(By.ID, "start").click()
        wait_for(d, lambda d: data(d, "status", "state") == "listening", "the ready message")
        wait_for(d, lambda d: int(data(d, "partial-count", "voiced")) >= 1, "a voiced partial")
        seen = {tuple(bar_values(d).values())}
        first = int(data(d, "partial-count", "count"))
        wait_for(d, lambda d: int(data(d, "partial-count", "voiced")) >= 4, "four voiced partials")
        assert int(data(d, "partial-count", "count")) > first
        for _ in range(40):
            seen.add(tuple(bar_values(d).values()))
            if len(seen) >= 2:
                break
            time.sleep(0.25)
        assert len(seen) >= 2, "the bars never changed"
        values = bar_values(d)
        assert sum(values.values()) == pytest.approx(1.0, abs=0.01) and max(values.values()) > 0
        top = d.find_elements(By.CSS_SELECTOR, "#bars .bar.top")
        assert len(top) == 1 and float(top[0].get_attribute("data-value")) == max(values.values())
        assert painted_pixels(d, "live-timeline") > 100
        wait_for(d, lambda d: int(data(d, "finals", "count")) >= 1, "an utterance final", timeout_s=60)

        d.find_element(By.ID, "stop").click()
        wait_for(d, lambda d: data(d, "status", "state") == "done", "done after stop")
        assert "utterance" in d.find_element(By.ID, "status").text

        # a recording: POST /v1/timeline, drawn on the canvas and summarised
        assert painted_pixels(d, "file-timeline") == 0
        d.find_element(By.ID, "file-input").send_keys(str(clip_wav))
        d.find_element(By.ID, "upload").click()
        wait_for(d, lambda d: data(d, "summary", "ready") == "true", "the timeline summary")
        assert int(data(d, "summary", "segments")) >= 2  # the clip twice: two utterances
        assert data(d, "summary", "dominant") in LABELS
        assert "dominant:" in d.find_element(By.ID, "summary").text
        assert painted_pixels(d, "file-timeline") > 1000
        assert severe_console_errors(d) == []
        if shot := os.environ.get("SER_BROWSER_SCREENSHOT"):  # to look at the page: SER_BROWSER_SCREENSHOT=page.png
            d.save_screenshot(shot)


def test_secured_server_needs_the_key_in_the_page(make_browser, holder, clip_wav):
    """The page is open but shows nothing without the key (model information needs it too); typed in, the key goes
    as X-API-Key on fetch and as the WebSocket's key subprotocol, never in a URL."""
    from selenium.webdriver.common.by import By

    app = create_app(Settings(model_dir=holder.model_dir, api_keys=["s3cret"]), holder=holder)
    with running_server(app) as addr:
        d = make_browser()
        d.get(f"http://{addr}/")
        wait_for(d, lambda d: "API key" in d.find_element(By.ID, "model-info").text, "the request for a key")
        assert d.find_elements(By.CSS_SELECTOR, "#bars .bar") == []

        d.find_element(By.ID, "start").click()  # no key: the server refuses the stream
        wait_for(d, lambda d: data(d, "status", "state") == "error", "the refusal")
        assert "unauthorized" in d.find_element(By.ID, "status").text
        d.find_element(By.ID, "file-input").send_keys(str(clip_wav))
        d.find_element(By.ID, "upload").click()
        wait_for(d, lambda d: data(d, "summary", "ready") == "error", "the refused upload")
        assert "unauthorized" in d.find_element(By.ID, "summary").text

        d.find_element(By.ID, "api-key").send_keys("s3cret")
        wait_for(d, lambda d: d.find_element(By.ID, "start").is_enabled(), "start enabled again")
        d.find_element(By.ID, "start").click()  # also blurs the key field: the model information loads with it
        wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == len(LABELS), "the bars")
        wait_for(d, lambda d: int(data(d, "partial-count", "voiced")) >= 1, "a voiced partial with the key")
        d.find_element(By.ID, "stop").click()
        wait_for(d, lambda d: data(d, "status", "state") == "done", "done after stop")
        d.find_element(By.ID, "upload").click()
        wait_for(d, lambda d: data(d, "summary", "ready") == "true", "the timeline with the key")
        assert data(d, "model-info", "version") == "1"
        urls = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and not [u for u in urls if "s3cret" in u or "api_key" in u], urls
        errors = [e for e in severe_console_errors(d) if "status of 401" not in e]  # the keyless tries: expected
        assert errors == [], errors  # the Content-Security-Policy blocks nothing the page needs


def test_docs_page_with_a_key(make_browser, holder):
    """/docs: Swagger UI from this server (no CDN) under its Content-Security-Policy; on a keyed server it asks for
    the key, then shows every operation and runs one with the key."""
    from selenium.webdriver.common.by import By

    app = create_app(Settings(model_dir=holder.model_dir, api_keys=["s3cret"]), holder=holder)
    with running_server(app) as addr:
        d = make_browser()
        d.get(f"http://{addr}/docs")
        wait_for(d, lambda d: d.find_element(By.ID, "key-form").is_displayed(), "the key form")
        d.find_element(By.ID, "api-key").send_keys("s3cret")
        d.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 8, "the operations")
        assert not d.find_element(By.ID, "key-form").is_displayed()
        # "Try it out" on GET /v1/model: the request carries the key (200, not 401)
        op = d.find_element(By.ID, "operations-model-model_info_v1_model_get")
        op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait_for(d, lambda d: op.find_elements(By.CSS_SELECTOR, ".try-out__btn"), "try it out").pop().click()
        wait_for(d, lambda d: op.find_elements(By.CSS_SELECTOR, ".btn.execute"), "execute").pop().click()
        status = ".live-responses-table .response .response-col_status"
        wait_for(d, lambda d: "200" in " ".join(e.text for e in op.find_elements(By.CSS_SELECTOR, status)), "200")
        urls = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(f"http://{addr}/") for u in urls), urls  # nothing from another origin
        errors = [e for e in severe_console_errors(d) if "status of 401" not in e]  # the keyless try: expected
        assert errors == [], errors  # nothing blocked by the Content-Security-Policy
