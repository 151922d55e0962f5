"""The status page in a real browser: headless Chromium driven by Selenium through Debian's
chromedriver (no browser download, no Node.js: the two system packages are all it needs).

It logs in with the token, sees the jobs and their strips, follows a run link, triggers a
run and sees it live, and shows a job's hostile output as text: no script of it runs.
A second test opens a page over a seeded history (flaky, failing, paused, live jobs) and
checks what it shows of each; with BEACONLITE_SCREENSHOT=PATH it also saves that page as the
picture the README shows (docs/status-page.png).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import time

import pytest
from conftest import wait_for
from test_daemon import cli
from test_web import TOKEN, Web, free_port, web, web_defaults  # noqa: F401 - the fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM or not DRIVER:
        pytest.skip("no Chromium and chromedriver on this machine (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--window-size=1100,900"):  # fmt: skip
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    # The token on every request the page makes, as a logged-in browser sends it.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}})
    yield driver
    driver.quit()


def test_the_status_page_in_a_browser(web, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    d, w = web
    assert cli("-c", d.config, "trigger", "hostile", "--wait").returncode == 1
    wait_for(lambda: len(d.runs("tick")) >= 4, 8, what="a few runs")
    browser.get(w.base + "/")
    jobs = {e.get_attribute("data-job") for e in browser.find_elements(By.CSS_SELECTOR, "[data-job]")}
    assert jobs == {"tick", "hostile", "slow"}
    strip = browser.find_elements(By.CSS_SELECTOR, '[data-job="tick"] a[data-status]')
    assert len(strip) >= 4 and {e.get_attribute("data-status") for e in strip} <= {"success", "running"}
    assert browser.find_element(By.CSS_SELECTOR, '[data-job="hostile"] a[data-status="error"]')
    assert browser.execute_script("return getComputedStyle(document.body).fontFamily")  # the stylesheet

    # follow a run link
    link = strip[-1]
    href = link.get_attribute("href")
    link.click()
    wait_for(lambda: browser.current_url == href, 5, what="the run page")
    assert "run #" in browser.find_element(By.TAG_NAME, "h1").text

    # hostile output is text: no script of it ran
    hostile = next(r.id for r in d.runs("hostile"))
    browser.get(f"{w.base}/runs/{hostile}")
    output = browser.find_element(By.TAG_NAME, "pre").text
    assert "<script>window.pwned=1</script>" in output and "<img src=x onerror=window.pwned=2>" in output
    assert browser.execute_script("return window.pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "pre img, pre script")

    # trigger a run with the page's button: it shows up live
    browser.get(w.base + "/")
    browser.find_element(By.CSS_SELECTOR, '[data-job="slow"] button').click()
    (slow,) = wait_for(
        lambda: [r for r in d.runs("slow") if r.status == "running"], 5, what="the triggered run"
    )
    browser.get(w.base + "/")
    # Its row among the live runs (a run of "tick", every second, may be live beside it).
    live = browser.find_elements(
        By.CSS_SELECTOR, f'section.live form[action="/api/runs/{slow.id}/cancel"] button'
    )
    assert len(live) == 1
    live[0].click()  # and cancel it from the page
    wait_for(lambda: [r for r in d.runs("slow") if r.status == "cancelled"], 5, what="the cancel")


HISTORY_JOBS = """
[[jobs]]
name = "orders-integrity"
schedule = "*/15 * * * *"
run = "beaconlite.builtin:noop"
[[jobs]]
name = "invoices-api"
schedule = "every 5m"
run = "beaconlite.builtin:noop"
[[jobs]]
name = "payments-reconcile"
schedule = "0 * * * *"
run = "beaconlite.builtin:noop"
[[jobs]]
name = "nightly-backup"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
command = ["true"]
[[jobs]]
name = "disk-usage"
schedule = "*/5 * * * *"
command = ["true"]
[[jobs]]
name = "exports"
run = "jobs:wait_for_file"
params = {path = "%s"}
"""


def seed_history(database, now: float) -> dict[str, list[str]]:
    """Forty finished runs per scheduled job, ending just before now: job -> statuses,
    oldest first. Each job has its own character (flaky, slow to recover, steady)."""
    rng = random.Random(7)
    character = {
        "orders-integrity": lambda i: rng.choices(["success", "warning", "error"], [12, 3, 2])[0],
        "invoices-api": lambda i: "timeout" if i % 13 == 5 else "success",
        "payments-reconcile": lambda i: "error" if 22 <= i < 29 else "success",
        "nightly-backup": lambda i: "success",
        "disk-usage": lambda i: "skipped" if i in (30, 31) else "success",
    }
    seeded = {}
    conn = sqlite3.connect(database)
    for job, status_of in character.items():
        seeded[job] = [status_of(i) for i in range(40)]
        for i, status in enumerate(seeded[job]):
            slot = now - (40 - i) * 300
            took = None if status == "skipped" else round(rng.uniform(0.2, 4.0), 3)
            started = None if status == "skipped" else slot + 0.01
            conn.execute(
                "INSERT INTO run (job, status, trigger, attempt, scheduled_at, started_at, finished_at, "
                "deadline_at, duration_s, error) VALUES (?, ?, 'schedule', 1, ?, ?, ?, ?, ?, ?)",
                (job, status, slot, started, slot + (took or 0.01), slot + 1800, took,
                 None if status == "success" else f"{status}: see the run"),
            )  # fmt: skip
    conn.commit()
    conn.close()
    return seeded


def test_a_seeded_history_at_a_glance(daemon, browser, tmp_path):
    """Strips of the last 30 runs, oldest left, coloured by status, duration on hover; a
    paused job marked; a live run with its cancel button; the page refreshing while a run is
    live; readable on a phone's width."""
    from selenium.webdriver.common.by import By

    from beaconlite import store

    port = free_port()
    d = daemon(HISTORY_JOBS % (tmp_path / "go"), start=False, defaults=web_defaults(port))
    store.open_writer(d.database)
    store.close()
    seeded = seed_history(d.database, time.time() - 60)
    assert cli("-c", d.config, "pause", "disk-usage").returncode == 0
    d.start()
    w = Web(port)
    wait_for(lambda: d.count("web.start"), 5, what="the endpoint")
    assert cli("-c", d.config, "trigger", "exports").returncode == 0
    try:
        browser.get(w.base + "/")
        # Read every strip in one call: the page refreshes itself while a run is live, and
        # an element found before a refresh is stale after it.
        strips = browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('[data-job]')].map(j => [j.dataset.job, "
            "[...j.querySelectorAll('.strip a[data-status]')].map(a => [a.getAttribute('href'), "
            "a.dataset.status, a.title])]))"
        )
        for job in seeded:  # the daemon may have run a due slot of a job since
            strip = strips[job]
            latest = d.runs(job)[-30:]  # oldest left, newest right
            assert [int(href.rsplit("/", 1)[1]) for href, _, _ in strip] == [r.id for r in latest], job
            assert [status for _, status, _ in strip] == [r.status for r in latest], job
        for href, status, title in strips["orders-integrity"]:
            hover = re.match(r"#(\d+) (\w+) · ([\d.]+m?s) · ", title)
            assert hover, title  # id, status and duration on hover
            assert hover[1] == href.rsplit("/", 1)[1]
            assert hover[2] == status
        assert browser.find_element(By.CSS_SELECTOR, '[data-job="disk-usage"] .badge-paused')
        assert browser.find_element(By.CSS_SELECTOR, '[data-job="exports"] .badge-live')
        assert len(browser.find_elements(By.CSS_SELECTOR, "section.live button.cancel")) == 1
        refresh = browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert refresh and refresh[0].get_attribute("content").isdigit()
        if os.environ.get("BEACONLITE_SCREENSHOT"):
            browser.set_window_size(1000, 1200)
            browser.save_screenshot(os.environ["BEACONLITE_SCREENSHOT"])
        browser.set_window_size(390, 844)  # a phone
        wide = browser.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            "window.innerWidth).map(e => e.tagName + '.' + e.className)"
        )
        assert not wide and browser.execute_script(
            "return document.documentElement.scrollWidth <= innerWidth"
        )
    finally:
        (tmp_path / "go").touch()
