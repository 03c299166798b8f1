"""The agent's page in a real headless Chromium (Debian's chromium and chromedriver), against
the real web service on loopback with the fake hub playing Asterisk's part.

The web service runs on an event loop in a thread of its own: Selenium's calls block.
Screenshots at 1366x768 are kept in ``<evidence>/../ivr-artifacts/`` (printed).
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from ivr.config import Settings
from ivr.desk.accounts import Accounts
from ivr.desk.web import running_desk_web
from tests.fake_desk import (CARD, FakeDesk, board_callbacks, unverified_call, verified_call,
                             waiting_entries)

PASSWORD = "browser-pass-1"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ["IVR_TEST_EVIDENCE"]).parent / "ivr-artifacts"
HOSTILE_LINE = '<img src=x onerror="document.title=\'pwned\'">Nomor <b>tebal</b>'


class ServedDesk:
    """The desk's web service with a FakeDesk, on its own loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.fake: FakeDesk | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                        name="desk-web", daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.fake = FakeDesk()
        accounts = Accounts.demo(PASSWORD)
        settings = Settings.from_env({}, desk_keepalive_seconds=1.0)
        async with running_desk_web(self.fake, accounts, settings, host="127.0.0.1",
                                    port=0) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def start(self) -> "ServedDesk":
        self._thread.start()
        assert self._ready.wait(20), "the desk's web service did not start"
        return self

    def do(self, method: str, *args):
        """Calls a FakeDesk driver method on the service's loop and returns its result."""
        async def call():
            return getattr(self.fake, method)(*args)
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(20)
        if not self._thread.is_alive():
            self.loop.close()


@pytest.fixture
def served():
    desk = ServedDesk().start()
    try:
        yield desk
    finally:
        desk.stop()


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1366,768", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    # An explicit chromedriver: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_window_size(1366, 768)
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, seconds: float = 10.0):
    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: condition())


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def shown(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def log_in(driver, served: ServedDesk, password: str = PASSWORD) -> None:
    driver.get(served.url + "/")
    wait_for(driver, lambda: shown(driver, "login-view"))
    assert not shown(driver, "desk-view")
    driver.find_element(By.ID, "login-username").send_keys("agent1")
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()


def test_the_agent_logs_in_gets_a_pop_and_wraps_up(served, browser):
    driver = browser
    log_in(driver, served, password="wrong-password")
    wait_for(driver, lambda: "wrong user name or password" in text(driver, "login-error"))
    assert not shown(driver, "desk-view")

    driver.find_element(By.ID, "login-password").clear()
    driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait_for(driver, lambda: shown(driver, "desk-view") and text(driver, "agent-name") == "Agent 1")
    assert text(driver, "agent-state") == "Offline"
    assert ("logged_in", "agent1") in served.fake.happened

    driver.find_element(By.ID, "btn-ready").click()
    wait_for(driver, lambda: text(driver, "agent-state") == "Ready")
    assert served.do("me", "agent1")["state"] == "ready"
    Select(driver.find_element(By.ID, "pause-reason")).select_by_value("meeting")
    driver.find_element(By.ID, "btn-pause").click()
    wait_for(driver, lambda: text(driver, "agent-state") == "Paused: meeting")
    driver.find_element(By.ID, "btn-ready").click()
    wait_for(driver, lambda: text(driver, "agent-state") == "Ready")

    # the queue board, live
    hostile = verified_call()
    hostile["transcript"] = hostile["transcript"] + [HOSTILE_LINE]
    served.do("add_call", hostile)
    served.do("add_call", unverified_call())
    served.do("set_waiting", waiting_entries())
    rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#queue-table tbody tr")  # noqa: E731
    wait_for(driver, lambda: len(rows()) == 3)
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows()]
    assert cells[0][0] == "1" and cells[0][2] == "caller"
    assert cells[0][3] == "Caller asked for an agent" and cells[0][4] == "yes"
    assert cells[0][5] == "Active (AKTIF)"
    assert cells[1][3] == "Verification failed" and cells[1][4] == "no"
    assert cells[2][2] == "callback"
    first_wait = cells[0][1]
    wait_for(driver, lambda: rows()[0].find_elements(By.TAG_NAME, "td")[1].text != first_wait)
    assert text(driver, "count-ready") == "1"

    # callbacks on the board: in line, to be tried again, and how each ended, attempt by attempt
    assert shown(driver, "callbacks-empty")
    served.do("set_callbacks", board_callbacks())
    callbacks = lambda: driver.find_elements(By.CSS_SELECTOR, "#callbacks-table tbody tr")  # noqa: E731
    wait_for(driver, lambda: len(callbacks()) == 4)
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in callbacks()]
    assert [c[1] for c in cells] == ["0812*****801", "0812*****802", "0812*****803",
                                     "0812*****804"]
    assert cells[0][2] == "waiting in line" and cells[0][3] == "–"
    assert cells[1][2].startswith("next attempt ") and cells[1][3].startswith("1. busy ")
    assert cells[2][2] == "failed"
    attempts = cells[2][3].split("\n")
    assert [a.split(" ")[0] for a in attempts] == ["1.", "2.", "3."]
    assert "busy" in attempts[0] and "no answer" in attempts[1] and "unreachable" in attempts[2]
    assert cells[3][2] == "completed" and cells[3][3].startswith("1. answered ")
    assert text(driver, "callbacks-count").lower() == "(2 open)" and not shown(driver, "callbacks-empty")
    # a queue update without them (unchanged) keeps them on the page
    served.do("set_waiting", waiting_entries()[:2], True)
    wait_for(driver, lambda: len(rows()) == 2)
    assert len(callbacks()) == 4
    served.do("set_waiting", waiting_entries())
    wait_for(driver, lambda: len(rows()) == 3)

    # the pop: a verified caller the IVR transferred on request
    started = time.perf_counter()
    served.do("ring", "agent1", "1764640000.101")
    wait_for(driver, lambda: text(driver, "pop-phase") == "Ringing"
             and text(driver, "pop-reason") == "Caller asked for an agent"
             and CARD in text(driver, "pop-identity"))
    print(f"figure: ring event to the pop on the page in {1000 * (time.perf_counter() - started):.0f} ms")
    assert text(driver, "pop-reason-id") == "Penelepon meminta petugas"
    identity = text(driver, "pop-identity")
    assert "VERIFIED" in identity and "unverified" not in identity
    assert text(driver, "pop-member") == "Active (AKTIF)"
    assert text(driver, "pop-ivr") == "1:14"
    assert text(driver, "pop-queue").endswith("(waiting)")
    transcript = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#pop-transcript li")]
    assert transcript[0].startswith("Selamat datang") and len(transcript) == 5
    assert [k.text for k in driver.find_elements(By.CSS_SELECTOR, "#pop-keys span")] == ["1", "1", "0"]
    history = driver.find_elements(By.CSS_SELECTOR, "#pop-history tbody tr")
    assert len(history) == 1 and "Membership service unavailable" in history[0].text
    # a caller's words are text, never markup
    assert transcript[-1] == HOSTILE_LINE
    assert driver.find_elements(By.CSS_SELECTOR, "#pop-transcript img, #pop-transcript b") == []
    assert driver.title != "pwned"
    assert ("agent1", "1764640000.101") in served.fake.audit

    served.do("connect", "agent1", "1764640000.101")
    wait_for(driver, lambda: text(driver, "pop-phase") == "Connected"
             and text(driver, "agent-state") == "On a call")
    wait_for(driver, lambda: len(rows()) == 2)
    assert "(waiting)" not in text(driver, "pop-queue")
    screenshot(driver, "desk-connected-verified-1366x768.png")
    driver.set_window_size(800, 768)             # a half-screen window beside the softphone
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 800
    screenshot(driver, "desk-connected-verified-800x768.png")
    driver.set_window_size(1366, 768)

    served.do("end", "agent1", "1764640000.101")
    wait_for(driver, lambda: shown(driver, "wrapup-form") and text(driver, "pop-phase") == "Call ended")
    options = [o.get_attribute("value") for o in
               driver.find_elements(By.CSS_SELECTOR, "#wrapup-disposition option")]
    assert options[1:] == served.fake.dispositions
    note = driver.find_element(By.ID, "wrapup-note")
    note.send_keys("Menanyakan tunggakan iuran bulan lalu.")
    assert text(driver, "wrapup-count") == "38 / 1000"
    note.send_keys("x" * 1200)                        # maxlength stops typing at 1000
    assert text(driver, "wrapup-count") == "1000 / 1000"
    note.clear()
    note.send_keys("Menanyakan tunggakan iuran.")
    Select(driver.find_element(By.ID, "wrapup-disposition")).select_by_value("escalated_to_branch")
    screenshot(driver, "desk-wrapup-1366x768.png")
    driver.find_element(By.CSS_SELECTOR, "#wrapup-form button[type=submit]").click()
    wait_for(driver, lambda: text(driver, "wrapup-saved") == "Saved: Escalated to branch office")
    saved = served.fake.wrapups["1764640000.101"]
    assert saved["disposition"] == "escalated_to_branch" and saved["note"] == "Menanyakan tunggakan iuran."
    driver.find_element(By.ID, "wrapup-done").click()
    wait_for(driver, lambda: shown(driver, "pop-idle"))

    # an unverified caller: only the masked identifier, marked unverified
    served.do("ring", "agent1", "1764640000.202")
    wait_for(driver, lambda: text(driver, "pop-phase") == "Ringing"
             and text(driver, "pop-reason") == "Verification failed")
    identity = text(driver, "pop-identity")
    assert "unverified" in identity and "3174********012" in identity and "VERIFIED" not in identity
    assert text(driver, "pop-member") == "not known (unverified)"
    assert CARD not in driver.find_element(By.TAG_NAME, "body").text
    assert shown(driver, "pop-history-none")

    # a callback's turn: the same pop, marked as a callback (kind from the queue board)
    callback = unverified_call("cb-17")
    callback["transfer_reason"] = "locked"
    served.do("add_call", callback)
    served.do("ring", "agent1", "cb-17")
    wait_for(driver, lambda: text(driver, "pop-callid") == "cb-17"
             and text(driver, "pop-reason") == "Locked after failed verifications")
    assert text(driver, "pop-kind").startswith("Callback")

    # the desk loses Asterisk, then gets it back
    assert not shown(driver, "banner-asterisk")
    served.do("set_asterisk", "down")
    wait_for(driver, lambda: shown(driver, "banner-asterisk"))
    assert "lost Asterisk (down)" in text(driver, "banner-asterisk")
    screenshot(driver, "desk-asterisk-down-1366x768.png")
    served.do("set_asterisk", "up")
    wait_for(driver, lambda: not shown(driver, "banner-asterisk"))

    # the page loses the desk itself
    assert not shown(driver, "banner-desk")
    served.stop()
    wait_for(driver, lambda: shown(driver, "banner-desk"))
    assert "Connection to the desk lost" in text(driver, "banner-desk")


def test_logging_out_returns_to_the_login_form(served, browser):
    driver = browser
    log_in(driver, served)
    wait_for(driver, lambda: shown(driver, "desk-view"))
    driver.find_element(By.ID, "btn-logout").click()
    wait_for(driver, lambda: shown(driver, "login-view") and text(driver, "login-error") == "Logged out.")
    assert ("logged_out", "agent1") in served.fake.happened
    driver.get(served.url + "/")                       # a reload does not bring the desk back
    wait_for(driver, lambda: shown(driver, "login-view"))
    assert not shown(driver, "desk-view")
    assert driver.get_cookies() == []
