"""The server for real: a headless Chromium driving the page, and ``stylequery serve`` as a
subprocess started, queried and stopped with SIGINT.

Chromium and chromedriver come from Debian (``apt-get install chromium chromium-driver``); the
browser test is skipped, saying so, only when they are absent. Set ``STYLEQUERY_SCREENSHOT``
to a path to keep the page's screenshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

from stylequery.serve.app import create_app

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path, tiny_index: Path) -> tuple[Path, Path]:
    return tiny_checkpoint, tiny_index


@pytest.fixture(scope="module")
def server(model: tuple[Path, Path]) -> Iterator[str]:
    """The app served by uvicorn in a thread on a free port; yields its URL."""
    from stylequery.inference import QueryEngine
    from stylequery.runtime import resolve_device

    engine = QueryEngine(*model, resolve_device("cpu"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(engine), log_level="warning")
    uvi = uvicorn.Server(config)
    thread = threading.Thread(target=uvi.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not uvi.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    uvi.should_exit = True
    thread.join(WAIT_S)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_page_upload_change_refine_and_back(
    server: str, browser: object, model: tuple[Path, Path], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    driver: WebDriver = browser  # type: ignore[assignment]
    wait = WebDriverWait(driver, WAIT_S)
    css = driver.find_element
    all_css = driver.find_elements
    driver.get(server)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    words = urllib.request.urlopen(f"{server}/api/vocab").read().decode()
    assert "items" in css(By.ID, "status").text

    # Upload a photo: it becomes the source, the first step of the trail.
    photo = tmp_path / "photo.png"
    Image.new("RGB", (120, 160), (30, 30, 30)).save(photo)
    css(By.ID, "file-input").send_keys(str(photo))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#trail li")) == 1)
    assert css(By.ID, "source-img").is_displayed()

    # A change with autocomplete: a click on a suggestion, then the keyboard.
    first, second = _two_words(words)
    _pick_suggestion(driver, wait, ".change .from", first[:2], first)
    to = css(By.CSS_SELECTOR, ".change .to")
    to.send_keys(second[:3])
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".change .to + .suggestions li"))
    to.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
    assert to.get_attribute("value") == second
    css(By.ID, "search").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 12)
    first_ids = [r.get_attribute("data-id") for r in all_css(By.CSS_SELECTOR, "#results .result")]
    assert f"{first} → {second}" in css(By.CSS_SELECTOR, "#trail li.current").text

    # Click a result: it becomes the new source; refine it with a word of its caption.
    chosen = all_css(By.CSS_SELECTOR, "#results .result")[2]
    chosen_id = chosen.get_attribute("data-id")
    chosen.click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#trail li")) == 2)
    caption = css(By.ID, "source-caption").text
    assert caption and not all_css(By.CSS_SELECTOR, "#results .result")
    css(By.CSS_SELECTOR, ".change .from").click()  # focus: the source's own words are offered
    offered = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".from + .suggestions li"))
    assert offered[0].text in caption.split()
    offered[0].click()
    css(By.CSS_SELECTOR, ".change .to").send_keys(second)
    css(By.ID, "search").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result"))
    refined = [r.get_attribute("data-id") for r in all_css(By.CSS_SELECTOR, "#results .result")]
    assert chosen_id not in refined  # the source is left out of its own results
    _screenshot_is_not_blank(driver, tmp_path / "serve.png")

    # Back to the first step through the trail: its source, change and results return.
    all_css(By.CSS_SELECTOR, "#trail li")[0].click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".change .from").get_attribute("value"))
    assert css(By.CSS_SELECTOR, ".change .from").get_attribute("value") == first
    ids = [r.get_attribute("data-id") for r in all_css(By.CSS_SELECTOR, "#results .result")]
    assert ids == first_ids

    # A file that is not an image: a readable message on the page, no stack trace.
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    css(By.ID, "file-input").send_keys(str(text_file))
    css(By.CSS_SELECTOR, ".change .from").send_keys(first)
    css(By.CSS_SELECTOR, ".change .to").send_keys(second)
    css(By.ID, "search").click()
    error = wait.until(lambda d: d.find_element(By.ID, "error").text)
    assert "not an image" in error and "Traceback" not in error


def _two_words(vocab_json: str) -> tuple[str, str]:
    import json

    words = [w for w in json.loads(vocab_json)["words"] if len(w) >= 4 and w.isalpha()]
    return words[0], words[-1]


def _pick_suggestion(driver: object, wait: object, selector: str, typed: str, word: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, selector)  # type: ignore[attr-defined]
    field.send_keys(typed)
    items = wait.until(  # type: ignore[attr-defined]
        lambda d: d.find_elements(By.CSS_SELECTOR, f"{selector} + .suggestions li")
    )
    next(li for li in items if li.text == word).click()
    assert field.get_attribute("value") == word


def _screenshot_is_not_blank(driver: object, path: Path) -> None:
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 500 and pixels.std() > 20, "the screenshot is blank"
    assert len(np.unique(pixels)) > 50
    if out := os.environ.get("STYLEQUERY_SCREENSHOT"):
        shutil.copyfile(path, out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_starts_answers_and_stops_on_sigint(model: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, index = model
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [sys.executable, "-m", "stylequery", "serve", "--checkpoint", str(checkpoint)]
    command += ["--index", str(index), "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        health = _wait_for(f"{url}/api/health", proc)
        assert '"status":"ok"' in health
        form = urllib.parse.urlencode({"id": 0, "text": "make it red", "k": 3}).encode()
        answer = urllib.request.urlopen(f"{url}/api/query", data=form, timeout=WAIT_S).read()
        assert answer.count(b'"rank"') == 3
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more ...
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with socket.socket() as sock:  # ... and a new server can bind the port (as uvicorn does)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def _wait_for(url: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {proc.communicate()[1]}")
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"no answer from {url} within 120 s")
