"""Take the screenshot of ``docs/images/app.png``: the app on the shipped model, an example edited.

Starts ``coupled-sde app`` on a free localhost port, opens it in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, through selenium), picks the first shipped example, runs the
edit and saves a screenshot of the page::

    python scripts/app_screenshot.py [--out docs/images/app.png] [--model NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "app.png"))
    parser.add_argument("--model", help="the app's --model (default: the shipped model)")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "coupled_sde.cli", "app", "--port", str(port), "--threads", "1", "--quiet"]
    if args.model:
        command += ["--model", args.model]
    server = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}/"
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1300,1150"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the app did not start") from None
                time.sleep(0.5)
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#run-button"))
        examples = driver.find_elements(By.CSS_SELECTOR, "tr.tr-body")  # the shipped examples' table
        if not examples:
            raise SystemExit("no shipped examples on the page")
        examples[0].click()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        time.sleep(2)
        driver.find_element(By.CSS_SELECTOR, "#run-button").click()
        WebDriverWait(driver, 180).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#edit-output img"))
        time.sleep(1.5)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.5)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
