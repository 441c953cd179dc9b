"""Swagger UI at /docs/ in a real headless Chromium, driven by Selenium through Debian's
chromedriver: the way a person first tries the API.

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian packages chromium, chromium-driver);
CHROMIUM / CHROMEDRIVER override the paths. No browser or driver is ever downloaded (Selenium
Manager is kept offline). Screenshot: tests/artifacts/swagger-ui.png (ARTIFACTS overrides the
folder).
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch anything

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
TIMEOUT = 30


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing (apt-get install chromium chromium-driver)", pytrace=False)
    profile = tempfile.mkdtemp(prefix="e2e-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what):
    try:
        return WebDriverWait(driver, TIMEOUT).until(condition)
    except Exception as error:  # noqa: BLE001 - say what did not show up, with a screenshot
        _screenshot(driver, "swagger-ui-failure.png")
        raise AssertionError(f"Swagger UI: {what} did not appear within {TIMEOUT}s") from error


def _screenshot(driver, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def _operation(driver, method, path):
    selector = f'.opblock.opblock-{method.lower()} .opblock-summary-path[data-path="{path}"]'
    summary_path = _wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, selector)),
                         f"operation {method} {path}")
    return summary_path.find_element(By.XPATH, "ancestor::div[contains(@class,'opblock ')][1]")


def test_swagger_ui_try_it_out(browser, base_url, api_key):
    driver = browser
    driver.get(f"{base_url}/docs/")

    # The operation list renders from ../openapi.json.
    _wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title")), "the title")
    title = driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert "syno-chat-gateway" in title, title
    block = _operation(driver, "GET", "/api/v1/channels")
    paths = {e.get_attribute("data-path") for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/v1/channels", "/api/v1/channels/{channel_id}/posts"} <= paths, paths

    # Authorize with the key.
    driver.find_element(By.CSS_SELECTOR, ".auth-wrapper .btn.authorize").click()
    key_input = _wait(driver, EC.visibility_of_element_located(
        (By.CSS_SELECTOR, ".modal-ux .auth-container input")), "the Authorize dialog's key field")
    key_input.send_keys(api_key)
    driver.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper .btn.modal-btn.auth.authorize").click()
    _wait(driver, EC.presence_of_element_located(
        (By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper .btn-done, .modal-ux .auth-btn-wrapper .logout")),
        "the authorized state")
    driver.find_element(By.CSS_SELECTOR, ".modal-ux .btn-done, .modal-ux .close-modal").click()
    _wait(driver, EC.invisibility_of_element_located((By.CSS_SELECTOR, ".modal-ux")), "the dialog closing")

    # Expand GET /api/v1/channels, Try it out, Execute.
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    try_out = _wait(driver, lambda d: block.find_element(By.CSS_SELECTOR, ".try-out__btn"), "Try it out")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", try_out)
    try_out.click()
    execute = _wait(driver, lambda d: block.find_element(By.CSS_SELECTOR, ".btn.execute"), "Execute")
    execute.click()

    status = _wait(driver, lambda d: block.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"), "the live response")
    body = _wait(driver, lambda d: block.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response-col_description pre"), "the response body")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                          block.find_element(By.CSS_SELECTOR, ".opblock-summary"))
    _screenshot(driver, "swagger-ui.png")

    assert status.text.strip().startswith("200"), status.text
    assert '"items"' in body.text and '"general"' in body.text and '"channel_id"' in body.text, body.text
    curl = block.find_element(By.CSS_SELECTOR, ".curl-command").text
    assert "Authorization: Bearer" in curl and f"{base_url}/api/v1/channels" in curl, curl
    assert api_key in curl

    # Everything the page loaded came from the gateway itself (vendored assets, no internet).
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat([location.href])")
    foreign = [u for u in loaded if not (u.startswith(base_url + "/") or u.startswith("data:"))]
    assert not foreign, f"the page loaded resources from elsewhere: {foreign}"
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, f"browser console errors: {errors}"
