"""``coupled-sde app`` in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via selenium.

The app runs as a real ``coupled-sde app`` process on a free localhost port, on a tiny FLUX pipeline
saved to a folder (``--model PATH``, as a user would give a downloaded model). The browser uploads
an image, types the prompts and settings, clicks Edit and waits for the output; the output's PNG,
fetched from the page, must equal ``coupled_sde.editing.edit_image`` for the same seed, pixel for
pixel. A second browser tab's request while the first runs is queued and answered, not lost.

Skipped (with the reason) when gradio, selenium, diffusers or the Chromium binaries are missing;
``.ci/run`` installs them all, so CI runs it.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("gradio", reason='the app needs the optional dependency gradio: pip install "coupled-sde[app]"')
pytest.importorskip("selenium", reason="the browser test needs selenium (the 'test' extra)")
pytest.importorskip("diffusers", reason='the tiny FLUX pipeline needs the diffusers extra: pip install "coupled-sde[diffusers]"')

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from coupled_sde.backends.hf import tiny_flux_pipeline  # noqa: E402
from coupled_sde.editing.api import edit_image, load_backbone  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROMPTS = ("a photo of a cat", "a photo of a dog")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A ``coupled-sde app --model <tiny FLUX folder>`` process; yields (url, that folder loaded as a backbone, start seconds)."""
    folder = tmp_path_factory.mktemp("app")
    model = folder / "tiny-flux"
    tiny_flux_pipeline(seed=0).save_pretrained(model)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    log = open(folder / "app.log", "w")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "coupled_sde.cli", "app", "--model", str(model), "--port", str(port), "--threads", "1"]
    t0 = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"the app did not start:\n{(folder / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
        started = time.perf_counter() - t0
        yield url, load_backbone(model, device="cpu", quiet=True), started  # the same folder, loaded once for the API
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _type(driver, selector: str, text: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(text)
    field.send_keys(Keys.TAB)


def _fill(driver, url: str, image: Path, seed: int, steps: int, start: int) -> None:
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#run-button"))
    driver.find_element(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(str(image))
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))  # uploaded: its preview shows
    _type(driver, "#source-prompt textarea", PROMPTS[0])
    _type(driver, "#target-prompt textarea", PROMPTS[1])
    _type(driver, "#setting-sync-sde-steps input", str(steps))
    _type(driver, "#setting-sync-sde-start input", str(start))
    _type(driver, "#seed input", str(seed))


def _output(driver, timeout: float = 180) -> Image.Image:
    """Wait for the edit to appear on the page and fetch its PNG from the app's server."""
    img = WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#edit-output img"))[0]
    with urllib.request.urlopen(img.get_attribute("src"), timeout=30) as r:
        data = r.read()
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "PNG"  # lossless: what the edit computed, byte for byte
    return picture.convert("RGB")


def _image(path: Path, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    Image.fromarray(torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    return path


def test_browser_edit_equals_the_python_api(served, browser, tmp_path):
    url, model, started = served
    image = _image(tmp_path / "cat.png", 0)
    _fill(browser, url, image, seed=5, steps=3, start=1)
    t0 = time.perf_counter()
    browser.find_element(By.CSS_SELECTOR, "#run-button").click()
    shown = _output(browser)
    seconds = time.perf_counter() - t0
    expected = edit_image(model, image, *PROMPTS, "sync-sde", seed=5, steps=3, start=1)
    assert shown.size == expected.size == (32, 32)
    assert shown.tobytes() == expected.tobytes()
    info = browser.find_element(By.CSS_SELECTOR, "#edit-info").text
    assert "2 model calls" in info and " s." in info and "seed 5" in info
    print(f"app started in {started:.1f} s; edit shown in the browser {seconds:.1f} s after the click")

    other = edit_image(model, image, *PROMPTS, "sync-sde", seed=6, steps=3, start=1)
    assert other.tobytes() != expected.tobytes()  # the comparison can fail: another seed gives another image


def test_a_second_request_while_one_runs_is_queued_not_lost(served, browser, tmp_path):
    url, model, _ = served
    image = _image(tmp_path / "cat.png", 1)
    _fill(browser, url, image, seed=1, steps=300, start=1)  # the long one
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    _fill(browser, url, image, seed=2, steps=3, start=1)
    browser.switch_to.window(first)
    browser.find_element(By.CSS_SELECTOR, "#run-button").click()
    browser.switch_to.window(second)  # while the first one runs
    browser.find_element(By.CSS_SELECTOR, "#run-button").click()
    statuses, deadline = set(), time.monotonic() + 300
    while not browser.find_elements(By.CSS_SELECTOR, "#edit-output img") and time.monotonic() < deadline:
        statuses.add(browser.find_element(By.CSS_SELECTOR, "#edit-output").text.split("|")[0].strip())
        time.sleep(0.2)
    assert any(s.startswith("queue") for s in statuses), statuses  # it waited its turn, with its place shown
    shown_second = _output(browser)
    browser.switch_to.window(first)
    shown_first = _output(browser)
    assert shown_first.tobytes() == edit_image(model, image, *PROMPTS, seed=1, steps=300, start=1).tobytes()
    assert shown_second.tobytes() == edit_image(model, image, *PROMPTS, seed=2, steps=3, start=1).tobytes()
    browser.switch_to.window(second)
    browser.close()
    browser.switch_to.window(first)
