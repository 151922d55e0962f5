"""The status page in a real browser: headless Chromium driven by Selenium through Debian's
chromedriver (no browser download, no Node.js: the two system packages are all it needs).

It logs in with the token, sees the jobs and their strips, follows a run link, triggers a
run and sees it live, and shows a job's hostile output as text: no script of it runs.
With BEACONLITE_SCREENSHOT=PATH it also saves the picture the README shows.
"""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import wait_for
from test_daemon import cli
from test_web import TOKEN, web  # noqa: F401 - the fixture

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
                 "--disable-sync", "--window-size=1100,900", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
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
    if os.environ.get("BEACONLITE_SCREENSHOT"):
        browser.save_screenshot(os.environ["BEACONLITE_SCREENSHOT"])

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
    wait_for(lambda: [r for r in d.runs("slow") if r.status == "running"], 5, what="the triggered run")
    browser.get(w.base + "/")
    live = browser.find_elements(By.CSS_SELECTOR, "section.live button.cancel")
    assert len(live) == 1
    live[0].click()  # and cancel it from the page
    wait_for(lambda: [r for r in d.runs("slow") if r.status == "cancelled"], 5, what="the cancel")
