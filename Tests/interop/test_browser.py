"""The dashboard in a real browser (issue #8): headless Chromium from Debian's packages, driven
by Selenium through Debian's chromedriver (never a downloaded driver). It creates a job from
the page, watches its progress bar move to 100 %, cancels another, opens the job view, and
saves a screenshot that must not be blank. Each live-update path is tried: the WebSocket,
Server-Sent Events, and the polling fallback."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest

import reel_interop as ri
import reel_web as web

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("REEL_SCREENSHOT_DIR", ri.REPO_ROOT / ".data" / "screenshots"))


@pytest.fixture(scope="module")
def srv(_session_factory):
    """One worker and 250 ms steps: a job takes a few seconds, and a second one waits."""
    return _session_factory("browser", http=True, workers=1, sim_stage_ms=250)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: run ./scripts/install-deps", pytrace=False)
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: run ./scripts/install-deps (apt: chromium chromium-driver)", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach for the network
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions", "--mute-audio"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(fn, timeout=30.0, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # stale elements while the list re-renders
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")


def row(driver, job_id):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, f'tr.job[data-job-id="{job_id}"]')


def click_row(driver, job_id, css=None, what="a click on the row"):
    """Clicks a job's row (or an element in it), looking it up again if the list re-rendered
    between the lookup and the click."""
    from selenium.webdriver.common.by import By

    def attempt():
        el = row(driver, job_id)
        (el.find_element(By.CSS_SELECTOR, css) if css else el).click()
        return True
    wait_for(attempt, what=what)


def bar_progress(driver, job_id) -> int:
    return int(driver.execute_script(
        "const r = document.querySelector(`tr.job[data-job-id=\"${arguments[0]}\"] .bar`);"
        "return r ? r.getAttribute('data-progress') : -1;", job_id))


def row_status(driver, job_id) -> str:
    return driver.execute_script(
        "const r = document.querySelector(`tr.job[data-job-id=\"${arguments[0]}\"]`); return r ? r.dataset.status : '';",
        job_id)


def watch_bar(driver, job_id, timeout=60.0) -> list[int]:
    """Samples the job's bar until it shows 100 %; returns the distinct values seen, in order."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            p = bar_progress(driver, job_id)
        except Exception:
            p = -1
        if p >= 0 and (not seen or seen[-1] != p):
            seen.append(p)
        if p == 100:
            return seen
        time.sleep(0.03)
    raise AssertionError(f"bar of {job_id} never reached 100: {seen}")


def assert_not_blank(png: bytes, path: Path):
    from PIL import Image
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size[0] >= 800 and img.size[1] >= 600, img.size
    colors = img.getcolors(maxcolors=1 << 20)
    distinct = len(colors) if colors else 1 << 20
    assert distinct > 50, f"{path}: only {distinct} distinct colours: blank page?"
    # Not one colour covering nearly everything.
    top = max(c for c, _ in colors) if colors else 0
    assert top < 0.97 * img.size[0] * img.size[1], f"{path}: one colour covers the page"


def test_dashboard_creates_watches_cancels_and_shows_a_job(browser, srv):
    from selenium.webdriver.common.by import By
    driver = browser
    user = ri.unique("browser")
    driver.get(srv.http_url + "/")
    wait_for(lambda: driver.execute_script("return document.body.dataset.live") == "ws", what="WebSocket connected")
    assert "Reel" in driver.title

    # Create two jobs from the form; the second waits behind the first (one worker).
    form = driver.find_element(By.ID, "create-form")
    uid = form.find_element(By.NAME, "userId")
    uid.clear()
    uid.send_keys(user)

    def create(text):
        form.find_element(By.NAME, "inputText").send_keys(text)
        form.find_element(By.ID, "create-button").click()
        return wait_for(lambda: driver.execute_script(
            "const r = [...document.querySelectorAll('tr.job')].find(r => r.querySelector('.text').textContent === arguments[0]);"
            "return r && r.dataset.jobId;", text), what=f"the row of {text!r}")

    job_id = create("A lighthouse keeper finds a message in a bottle")
    other = create("A second scene, to cancel")

    # Cancel the second one from its row.
    click_row(driver, other, "button.cancel", what="a click on the cancel button")
    wait_for(lambda: row_status(driver, other) == "cancelled", what="cancelled badge")
    assert web.call(srv.http_url, "GET", f"/v1/jobs/{other}").json["status"] == "JOB_STATUS_CANCELLED"

    # The first job's bar moves, live, to 100 %.
    seen = watch_bar(driver, job_id)
    assert seen == sorted(seen), f"the bar only moves forward: {seen}"
    assert any(0 < p < 100 for p in seen), f"the bar showed progress on the way: {seen}"
    wait_for(lambda: row_status(driver, job_id) == "final_ready", what="final_ready badge")
    label = row(driver, job_id).find_element(By.CSS_SELECTOR, ".bar-label").text
    assert "100%" in label and "completed" in label, label

    # The job view: timeline, media, no error.
    click_row(driver, job_id)
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#timeline li")) >= 5, what="timeline")
    items = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#timeline li")]
    assert items[0].startswith("#1") and "final ready" in items[-1], items
    assert driver.find_elements(By.CSS_SELECTOR, "#detail video.final-video"), "the final video is in the page"
    assert driver.find_elements(By.CSS_SELECTOR, "#detail img.thumb"), "the thumbnail is in the page"
    assert not driver.find_elements(By.CSS_SELECTOR, "#detail-error")

    driver.find_element(By.ID, "detail-close").click()

    # The status filter shows only cancelled jobs.
    driver.find_element(By.CSS_SELECTOR, '#filters .chip[data-status="cancelled"]').click()
    wait_for(lambda: driver.execute_script(
        "const s = [...document.querySelectorAll('tr.job')].map(r => r.dataset.status);"
        "return s.length > 0 && s.every(x => x === 'cancelled');"), what="cancelled-only list")
    driver.find_element(By.CSS_SELECTOR, '#filters .chip[data-status="all"]').click()
    wait_for(lambda: row(driver, job_id), what="all jobs again")
    click_row(driver, job_id)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#timeline li"), what="timeline again")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "dashboard.png"
    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    assert_not_blank(png, path)
    logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
    severe = [l for l in logs if l.get("level") == "SEVERE" and "/v1/media" not in l.get("message", "")]
    assert not severe, f"no script errors in the page: {severe}"


@pytest.mark.parametrize("mode", ["sse", "poll"])
def test_dashboard_fallbacks_still_show_progress(browser, srv, mode):
    driver = browser
    driver.get(srv.http_url + f"/?live={mode}")
    wait_for(lambda: driver.execute_script("return document.body.dataset.live") == mode, what=f"{mode} mode")
    job = web.create_job(srv.http_url, ri.unique(f"browser-{mode}"))
    wait_for(lambda: row(driver, job["id"]), timeout=15, what="the job's row")
    seen = watch_bar(driver, job["id"])
    assert seen[-1] == 100 and seen == sorted(seen), seen
    wait_for(lambda: row_status(driver, job["id"]) == "final_ready", what="final_ready badge")
    png = driver.get_screenshot_as_png()
    path = SCREENSHOTS / f"dashboard-{mode}.png"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    assert_not_blank(png, path)


def test_dashboard_with_auth_takes_the_key_from_the_address(browser, _session_factory):
    """As ./scripts/demo runs it: --auth, and the tenant key in the address's fragment."""
    import test_auth
    s = _session_factory("browser-auth", http=True, workers=1, sim_stage_ms=150,
                         extra_args=("--auth", "--admin-key", test_auth.ADMIN))
    key = test_auth.new_key(s, "demo")["secret"]
    driver = browser
    driver.get(s.http_url + "/")
    driver.execute_script("localStorage.clear()")
    driver.get(s.http_url + "/")
    wait_for(lambda: driver.execute_script("return !document.getElementById('banner').hidden"), what="the key banner")
    assert "API key" in driver.find_element("id", "banner").text
    wait_for(lambda: driver.execute_script("return document.body.dataset.live") == "off", what="live updates off")

    driver.get(s.http_url + f"/#key={key}")
    wait_for(lambda: driver.execute_script("return document.body.dataset.live") == "ws", what="WebSocket with the key")
    assert "#key" not in driver.current_url, "the key leaves the address bar"
    job = web.create_job(s.http_url, ri.unique("browser-auth"), key=key)
    wait_for(lambda: row(driver, job["id"]), timeout=15, what="the tenant's job")
    seen = watch_bar(driver, job["id"])
    assert seen[-1] == 100 and seen == sorted(seen), seen
    driver.execute_script("localStorage.clear()")


def test_dashboard_shows_each_providers_state(browser, reeld_factory, fake_kling, tmp_path):
    """The header's provider badges (GET /v1/providers): Kling up, then parked once its
    resource pack runs out (a job's submission is refused with 1102), then up again."""
    srv = ri.kling_reeld(reeld_factory, "browser-providers", fake_kling.url, tmp_path / "art", probe_ms=1000)
    browser.get(srv.http_url + "/")
    badge = lambda: browser.execute_script(  # noqa: E731
        "const b = document.querySelector('#providers .provider[data-provider=\"kling\"]');"
        "return b && !b.closest('[hidden]') ? b.className + '|' + b.textContent : '';")
    wait_for(lambda: "up" in badge(), what="a kling badge that says up")
    fake_kling.control(account="depleted", queued_ms=50, processing_ms=200)
    srv.stub.CreateJob(ri.create_request(ri.unique("badge")), timeout=ri.DEFAULT_TIMEOUT)
    wait_for(lambda: "parked" in badge(), timeout=30, what="the kling badge to say parked")
    assert "provider parked" in badge(), badge()
    fake_kling.control(account="ok")
    wait_for(lambda: badge().startswith("provider up"), timeout=30, what="the kling badge to say up again")
