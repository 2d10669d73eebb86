"""The admin console driven in a real headless Chromium (Debian's chromium + chromium-driver,
through Selenium; no downloaded browser), against the whole stack behind the real Envoy: log
in with the token the edge printed, see the credential table, create a key, call the API with
it, revoke it, see it refused, see the usage chart and the request log. A screenshot of each
page goes to tests/artifacts/."""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests import harness
from tests.admin_stack import AdminStack, start_admin_stack

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = harness.ROOT / "tests" / "artifacts"
# Generous: the machine is shared and Chromium starts slowly under load. Never a timed assertion:
# each wait ends as soon as its condition holds.
WAIT = 90


@pytest.fixture(scope="module")
def stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminStack]:
    s = start_admin_stack(simulator, tmp_path_factory.mktemp("admin-browser"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: run tests/system_deps.sh (Debian's chromium and chromium-driver)")
    # Selenium Manager must never download a browser or driver: both are given explicitly.
    monkeypatch.setenv("SE_OFFLINE", "true")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "driver.log")),
                              options=opts)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def until(driver: WebDriver, condition, what: str):
    # The page re-renders its tables after each change: an element found just before that is
    # stale, so the condition is simply asked again.
    return WebDriverWait(driver, WAIT, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException, NoSuchElementException,
                                             IndexError, AttributeError)).until(lambda d: condition(d), message=what)


def click(driver: WebDriver, find, what: str) -> None:
    """Click what `find` returns, finding it again if a re-render replaced it meanwhile."""
    until(driver, lambda d: find(d).click() is None, what)


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"admin-{name}.png"))


def chat(stack: AdminStack, key: str) -> httpx.Response:
    return httpx.post(f"{stack.public}/v1/chat/completions", timeout=60, trust_env=False,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})


def cell(row, index: int) -> str:
    return row.find_elements(By.TAG_NAME, "td")[index].text


def key_row(driver: WebDriver, name: str):
    rows = driver.find_elements(By.CSS_SELECTOR, f"#key-table tbody tr[data-name='{name}']")
    return rows[0] if rows else None


def test_console_in_chromium(stack: AdminStack, browser: WebDriver):
    d = browser
    d.get(f"{stack.public}/admin")
    until(d, lambda d: d.find_element(By.ID, "login-token").is_displayed(), "the login form")
    shot(d, "1-login")

    # A wrong token is refused on the page itself.
    d.find_element(By.ID, "login-token").send_keys("gwadmin-wrong")
    d.find_element(By.ID, "login-button").click()
    until(d, lambda d: "invalid admin token" in d.find_element(By.ID, "login-msg").text, "the refusal")

    field = d.find_element(By.ID, "login-token")
    field.clear()
    field.send_keys(stack.token)
    d.find_element(By.ID, "login-button").click()
    until(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#cred-table tbody tr[data-credential='seat']"),
          "the credential table")
    seat = d.find_element(By.CSS_SELECTOR, "#cred-table tbody tr[data-credential='seat']")
    assert "gemini-cli-oauth" in cell(seat, 1) and cell(seat, 2) in ("READY", "COOLING")
    shot(d, "2-credentials")

    # Create a key with limits.
    name = f"browser-{uuid.uuid4().hex[:6]}"
    d.find_element(By.ID, "tab-keys").click()
    until(d, lambda d: d.find_element(By.ID, "key-name").is_displayed(), "the key form")
    d.find_element(By.ID, "key-name").send_keys(name)
    d.find_element(By.ID, "key-rpm").send_keys("60")
    d.find_element(By.ID, "key-models").send_keys("gemini-2.5-*")
    d.find_element(By.ID, "key-create").click()
    until(d, lambda d: d.find_element(By.ID, "new-key").text.startswith("gcli-"), "the new key")
    key = d.find_element(By.ID, "new-key").text.strip()
    until(d, lambda d: key_row(d, name) is not None, "the key in the table")
    row = key_row(d, name)
    assert cell(row, 3) == "active" and cell(row, 5) == "60" and cell(row, 4) == "gemini-2.5-*"
    shot(d, "3-key-created")

    # The key works through Envoy (what a curl would do).
    for _ in range(3):
        r = chat(stack, key)
        assert r.status_code == 200, r.text

    # Edit its limits: the table and the CLI's store agree.
    click(d, lambda d: key_row(d, name).find_element(By.XPATH, ".//button[text()='Edit']"), "Edit")
    until(d, lambda d: d.find_element(By.ID, "edit-form").is_displayed(), "the edit form")
    rpm = d.find_element(By.ID, "edit-rpm")
    rpm.clear()
    rpm.send_keys("120")
    d.find_element(By.ID, "edit-quota").send_keys("100000")
    d.find_element(By.ID, "edit-save").click()
    until(d, lambda d: cell(key_row(d, name), 5) == "120" and cell(key_row(d, name), 7) == "100000", "the new limits")
    assert chat(stack, key).status_code == 200

    # Revoke it in the console (two clicks), see it refused.
    click(d, lambda d: key_row(d, name).find_element(By.CSS_SELECTOR, "button.revoke"), "Revoke")
    until(d, lambda d: key_row(d, name).find_element(By.CSS_SELECTOR, "button.revoke").text == "Really revoke?",
          "the revoke confirmation")
    click(d, lambda d: key_row(d, name).find_element(By.CSS_SELECTOR, "button.revoke"), "Really revoke?")
    until(d, lambda d: key_row(d, name) is not None and cell(key_row(d, name), 3) == "revoked", "the revoked state")
    shot(d, "4-key-revoked")
    deadline = time.monotonic() + WAIT
    while (r := chat(stack, key)).status_code != 401 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"

    # The usage chart shows today's tokens of that key.
    d.find_element(By.ID, "tab-usage").click()
    until(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#usage-chart rect.bar"), "bars in the usage chart")
    bars = d.find_elements(By.CSS_SELECTOR, "#usage-chart rect.bar")
    assert any(b.get_attribute("data-model") == "gemini-2.5-flash" and int(b.get_attribute("data-value")) > 0
               for b in bars)
    until(d, lambda d: any(name in r.text for r in d.find_elements(By.CSS_SELECTOR, "#usage-table tbody tr")),
          "the key in the usage table")
    shot(d, "5-usage")

    # The request log lists the key's calls.
    d.find_element(By.ID, "tab-requests").click()
    until(d, lambda d: sum(name in r.text for r in d.find_elements(By.CSS_SELECTOR, "#req-table tbody tr")) >= 3,
          "the key's requests in the log")
    shot(d, "6-requests")

    # Paste a credential file: it joins the table under a generated name.
    d.find_element(By.ID, "tab-credentials").click()
    until(d, lambda d: d.find_element(By.ID, "cred-paste").is_displayed(), "the credential form")
    d.find_element(By.ID, "cred-paste").send_keys(json.dumps({
        "access_token": "stale", "refresh_token": f"rt-pasted-{uuid.uuid4().hex}", "token_type": "Bearer",
        "expiry_date": 1000}))
    d.find_element(By.ID, "cred-add").click()
    until(d, lambda d: "added credential uploaded-" in d.find_element(By.ID, "cred-msg").text, "the upload")
    until(d, lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#cred-table tbody tr")
                        if (r.get_attribute("data-credential") or "").startswith("uploaded-")], "the new credential")
    shot(d, "7-credential-added")
    # Garbage is refused on the page, with the API's message.
    d.find_element(By.ID, "cred-paste").send_keys("this is not a credential")
    d.find_element(By.ID, "cred-add").click()
    until(d, lambda d: "not a credential" in d.find_element(By.ID, "cred-msg").text, "the refusal")

    # Switch the credential off and on again from its table.
    d.find_element(By.ID, "tab-credentials").click()
    seat_button = "#cred-table tbody tr[data-credential='seat'] button"
    until(d, lambda d: d.find_element(By.CSS_SELECTOR, seat_button).text == "Disable", "the Disable button")
    click(d, lambda d: d.find_element(By.CSS_SELECTOR, seat_button), "Disable")
    until(d, lambda d: cell(d.find_element(By.CSS_SELECTOR, "#cred-table tbody tr[data-credential='seat']"), 2)
          == "DISABLED", "the credential switched off")
    shot(d, "8-credential-disabled")
    click(d, lambda d: d.find_element(By.CSS_SELECTOR, seat_button), "Enable")
    until(d, lambda d: cell(d.find_element(By.CSS_SELECTOR, "#cred-table tbody tr[data-credential='seat']"), 2)
          == "READY", "the credential back on")
