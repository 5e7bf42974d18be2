"""End to end: the Django example served by gunicorn (examples/django/serve.sh)
on 127.0.0.1, driven by headless Chromium through Selenium. Uploads a bundled
sample, waits for the Grad-CAM overlay and checks what the page shows; saves a
screenshot to build/django-e2e.png."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD = os.environ.get("DERMAL_BUILD_DIR", os.path.join(ROOT, "build"))
LIBRARY = os.path.join(BUILD, "capi", "libdermal_c.so")
SAMPLE = os.path.join(ROOT, "examples", "data", "samples", "melanoma_1.jpg")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

# Missing prerequisites fail the run (never skip): tools/setup.sh provides them all.
for needed, remedy in [(LIBRARY, "build first: bash tools/setup.sh --build"),
                       (SAMPLE, "the bundled samples are missing from examples/data"),
                       (CHROMIUM, "install chromium: bash tools/setup.sh"),
                       (CHROMEDRIVER, "install chromium-driver: bash tools/setup.sh")]:
    if not os.path.exists(needed):
        pytest.fail(f"{needed} is missing; {remedy}", pytrace=False)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """gunicorn started by serve.sh on a free loopback port; yields its base URL once /health says loaded."""
    port = free_port()
    env = dict(os.environ, DERMAL_BUILD_DIR=BUILD, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_THREADS="2",
               DERMAL_PRELOAD="1", DERMAL_EXPLAIN="1")
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(["bash", os.path.join(ROOT, "examples", "django", "serve.sh")],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "gunicorn exited:\n" + _read(log)
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if json.load(response)["model_loaded"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not become healthy:\n" + _read(log)
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _read(log):
    """The log's last 4000 characters, read with pread: a seek would move where gunicorn writes."""
    return os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0).decode(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="dermal-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def visible(driver, element_id):
    return driver.find_element(By.ID, element_id).is_displayed()


def test_upload_shows_labels_overlay_and_notice(server, browser):
    browser.get(server + "/")
    notice = browser.find_element(By.ID, "notice")
    assert notice.is_displayed() and "not a diagnosis" in notice.text.lower()
    browser.find_element(By.ID, "image").send_keys(SAMPLE)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 60).until(lambda d: visible(d, "result") or visible(d, "error"))
    assert not visible(browser, "error"), browser.find_element(By.ID, "error").text
    # both pictures decoded and drawn
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return ['original', 'overlay'].every(function (id) {"
        " var i = document.getElementById(id); return i.complete && i.naturalWidth > 0; })"))
    overlay = browser.find_element(By.ID, "overlay")
    assert overlay.is_displayed() and overlay.get_attribute("src").startswith("data:image/jpeg;base64,")
    items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#labels li")]
    assert len(items) == 3
    assert {item.split(":")[0] for item in items} == {"melanoma", "nevus", "vascular"}
    assert all(item.endswith("%") for item in items)
    assert "Grad-CAM for" in browser.find_element(By.ID, "overlay-caption").text
    assert browser.find_element(By.ID, "notice").is_displayed()
    os.makedirs(BUILD, exist_ok=True)
    assert browser.save_screenshot(os.path.join(BUILD, "django-e2e.png"))


def test_a_file_that_is_not_an_image_shows_the_servers_message(server, browser, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    browser.get(server + "/")
    browser.find_element(By.ID, "image").send_keys(str(text))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda d: visible(d, "error"))
    message = browser.find_element(By.ID, "error").text
    assert "not an image" in message and "JPEG, PNG, BMP" in message
    assert not visible(browser, "result")
