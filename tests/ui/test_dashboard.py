#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium driven through
WebDriver (Debian's chromium + chromium-driver, PyPI selenium), against a
running router. Started by tests/it/dashboard.rs, which runs the real
binary with real receivers and passes, in the environment:

  SY_BASE        http://127.0.0.1:PORT of the router
  SY_TOKEN       token of account `acct` (endpoints alpha and beta)
  SY_ADMIN       the admin token
  SY_OTHER_EVENT an event of account `other`
  SY_RECEIVER    a receiver URL answering 200 (for the endpoint created here)
  SY_SHOTS       folder for the screenshots (PNG)

Receivers answer 500 (body with markup) to the first delivery of an event
whose payload says "please-fail", 200 otherwise. Each step asserts what a
user would see; any failure exits non-zero with the step's name.
"""

import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = os.environ["SY_BASE"].rstrip("/")
TOKEN = os.environ["SY_TOKEN"]
ADMIN = os.environ["SY_ADMIN"]
OTHER_EVENT = os.environ["SY_OTHER_EVENT"]
RECEIVER = os.environ["SY_RECEIVER"]
SHOTS = os.environ.get("SY_SHOTS", "target/ui-screenshots")

DESKTOP = (1280, 1000)
MOBILE = (390, 844)

XSS = '<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">'


def utc_now():
    """Now, as an RFC 3339 UTC time with milliseconds."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post_event(event_type, payload, token=TOKEN, account="acct"):
    req = urllib.request.Request(
        f"{BASE}/v1/accounts/{account}/events",
        data=json.dumps({"event": event_type, "payload": payload}).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 202, r.status
        return json.load(r)["data"]["id"]


def raw_post(path, fields, cookie):
    """A form post outside the browser (as a forged cross-site form would be)."""
    req = urllib.request.Request(
        BASE + path,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "cookie": cookie},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def make_driver():
    opts = webdriver.ChromeOptions()
    for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(path):
            opts.binary_location = path
            break
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--force-device-scale-factor=1", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        opts.add_argument(a)
    driver_path = next((p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
                        if os.path.exists(p)), None)
    service = Service(executable_path=driver_path) if driver_path else Service()
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(30)
    return d


class Dash:
    def __init__(self):
        self.d = make_driver()
        # A condition that reads an element the page just replaced (a form's
        # answer, a re-rendered list) is looked at again, not a failure.
        self.wait = WebDriverWait(
            self.d, 15, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )
        os.makedirs(SHOTS, exist_ok=True)
        self.step = "start"

    def go(self, path):
        self.d.get(BASE + path)

    def h1(self):
        """The page's heading, or "" while a navigation replaces the page
        (the element can go stale between finding and reading it)."""
        try:
            return self.d.find_element(By.TAG_NAME, "h1").text
        except WebDriverException:
            return ""

    def text(self):
        end = time.time() + 10
        while True:
            try:
                return self.d.find_element(By.TAG_NAME, "body").text
            except WebDriverException:
                if time.time() > end:
                    raise
                time.sleep(0.2)

    def until_text(self, needle, timeout=15, reload=True):
        """Waits until the page shows `needle`, reloading between looks."""
        end = time.time() + timeout
        while True:
            try:
                if needle in self.text():
                    return
            except WebDriverException:
                pass  # the page is being replaced (after a click): look again
            if time.time() > end:
                raise AssertionError(f"{needle!r} never appeared on {self.d.current_url}:\n{self.text()[:3000]}")
            time.sleep(0.3)
            if reload:
                self.d.refresh()

    def shot(self, name):
        """Screenshots at desktop and narrow widths (full page height)."""
        for label, (w, h) in (("desktop", DESKTOP), ("mobile", MOBILE)):
            self.d.set_window_size(w, h)
            height = self.d.execute_script("return document.documentElement.scrollHeight")
            self.d.set_window_size(w, min(max(h, height + 140), 4000))
            self.d.save_screenshot(os.path.join(SHOTS, f"{name}-{label}.png"))
        self.d.set_window_size(*DESKTOP)

    def check_labels(self):
        """Every visible form field has a label (or an aria-label)."""
        for el in self.d.find_elements(By.CSS_SELECTOR, "input, select, textarea"):
            if el.get_attribute("type") == "hidden":
                continue
            eid = el.get_attribute("id")
            labelled = bool(el.get_attribute("aria-label")) or (
                eid and self.d.find_elements(By.CSS_SELECTOR, f'label[for="{eid}"]'))
            assert labelled, f"unlabelled field {el.get_attribute('name')!r} on {self.d.current_url}"

    def csp_ok(self):
        """No inline script ran and the page's script came from /ui/static."""
        srcs = [s.get_attribute("src") for s in self.d.find_elements(By.TAG_NAME, "script")]
        assert all(s and "/ui/static/" in s for s in srcs), srcs

    def cookie_header(self):
        return "; ".join(f"{c['name']}={c['value']}" for c in self.d.get_cookies())

    def csrf(self):
        return self.d.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")


def main():
    t = Dash()
    d = t.d
    try:
        run(t, d)
    except Exception:
        print(f"FAILED at step: {t.step}; url {d.current_url}", file=sys.stderr)
        try:
            d.save_screenshot(os.path.join(SHOTS, "failure.png"))
            print(t.text()[:4000], file=sys.stderr)
        except Exception:
            pass
        raise
    finally:
        d.quit()
    print("dashboard browser test: all steps passed")


def run(t, d):
    # --- sign in with the account token, by keyboard ------------------------
    t.step = "sign-in page"
    t.go("/ui/a/acct/events")
    assert "/ui/login" in d.current_url, d.current_url
    t.check_labels()
    t.shot("sign-in")
    t.step = "wrong token refused"
    field = d.switch_to.active_element
    assert field.get_attribute("id") == "token", "the token field has the focus"
    field.send_keys("not-a-token" + Keys.ENTER)
    t.until_text("neither an account", reload=False)
    t.step = "sign in with the account token"
    d.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
    t.wait.until(EC.url_contains("/ui/a/acct"))
    cookie = next(c for c in d.get_cookies() if c["name"] == "switchyard_session")
    assert cookie["httpOnly"], cookie
    assert cookie.get("sameSite") == "Strict", cookie
    assert cookie.get("expiry"), "the session cookie expires"
    assert "Overview" in t.h1()
    assert "beta" in t.text() and "alpha" in t.text()

    # --- post an event; list; detail with both endpoints' attempts ---------
    t.step = "event in the list"
    ev = post_event("license.created", {"data": {"id": "lic-1", "type": "licenses"}})
    t.go("/ui/a/acct/events")
    t.until_text(ev)
    t.check_labels()
    t.step = "open the event"
    d.find_element(By.LINK_TEXT, ev).click()
    t.wait.until(EC.url_contains(f"/events/{ev}"))
    t.until_text("HTTP 200")
    sections = d.find_elements(By.CSS_SELECTOR, "section.delivery")
    names = sorted(s.find_element(By.TAG_NAME, "h2").text.split()[1] for s in sections)
    assert names == ["alpha", "beta"], names
    t.wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "tr.attempt")) >= 2)
    for s in d.find_elements(By.CSS_SELECTOR, "section.delivery"):
        assert "HTTP 200" in s.text and "delivered" in s.text, s.text
    assert "lic-1" in d.find_element(By.ID, "payload").text
    # A time between this event and the next ones (the time-range filters).
    time.sleep(0.05)
    mid = utc_now()
    time.sleep(0.05)

    # --- a failing receiver: the failed attempt with its excerpt; Retry ----
    t.step = "failed attempt with the response excerpt"
    failing = post_event("license.suspended", {"data": {"id": "lic-2"}, "note": "please-fail"})
    t.go(f"/ui/a/acct/events/{failing}")
    t.until_text("HTTP 500")
    t.until_text("receiver says no", reload=False)
    # The receiver's markup is shown as text, not rendered.
    assert "<img src=x onerror=alert(1)>" in t.text()
    assert not d.find_elements(By.CSS_SELECTOR, "pre.excerpt img")
    t.shot("event-detail")
    t.step = "retry"
    alpha = next(s for s in d.find_elements(By.CSS_SELECTOR, "section.delivery")
                 if s.find_element(By.TAG_NAME, "h2").text.split()[1] == "alpha")
    assert "failing" in alpha.text, alpha.text
    alpha.find_element(By.XPATH, ".//button[contains(., 'Retry to alpha')]").click()
    t.until_text("Re-queued for alpha", reload=False)

    def alpha_rows():
        sec = next(s for s in d.find_elements(By.CSS_SELECTOR, "section.delivery")
                   if s.find_element(By.TAG_NAME, "h2").text.split()[1] == "alpha")
        return [r.text for r in sec.find_elements(By.CSS_SELECTOR, "tr.attempt")]

    end = time.time() + 15
    while not (len(alpha_rows()) >= 2 and "HTTP 200" in alpha_rows()[-1]):
        assert time.time() < end, f"no successful retry attempt: {alpha_rows()}"
        time.sleep(0.3)
        d.refresh()
    assert "HTTP 500" in alpha_rows()[0], alpha_rows()

    # --- script-bearing payload renders as text ------------------------------
    t.step = "escaping"
    xss = post_event("user.created", {"data": {"id": XSS, "name": XSS}})
    t.go(f"/ui/a/acct/events/{xss}")
    t.until_text("user.created", reload=False)
    payload = d.find_element(By.ID, "payload")
    assert "<script>window.__xss=1</script>" in payload.text, payload.text
    assert not payload.find_elements(By.TAG_NAME, "img")
    assert not payload.find_elements(By.TAG_NAME, "script")
    assert d.execute_script("return window.__xss") is None
    try:
        d.switch_to.alert
        raise AssertionError("an alert opened")
    except NoAlertPresentException:
        pass
    t.go("/ui/a/acct/events?q=" + urllib.parse.quote(XSS) + "&type=" + urllib.parse.quote(XSS))
    assert d.execute_script("return window.__xss") is None
    assert not d.find_elements(By.CSS_SELECTOR, "main img")
    t.csp_ok()

    # --- filters, search, paging ---------------------------------------------
    t.step = "filters"
    t.go("/ui/a/acct/events")
    d.find_element(By.ID, "f-type").send_keys("license.*")
    Select(d.find_element(By.ID, "f-endpoint")).select_by_visible_text("alpha")
    d.find_element(By.ID, "f-type").send_keys(Keys.ENTER)
    t.wait.until(EC.url_contains("type=license"))
    body = t.text()
    assert ev in body and failing in body and xss not in body, body
    t.shot("events")
    t.step = "time range: since"
    t.go("/ui/a/acct/events")
    d.find_element(By.ID, "f-since").send_keys(mid + Keys.ENTER)
    t.wait.until(EC.url_contains("since="))
    body = t.text()
    assert failing in body and xss in body and ev not in body, body
    t.step = "time range: until"
    t.go("/ui/a/acct/events")
    d.find_element(By.ID, "f-until").send_keys(mid + Keys.ENTER)
    t.wait.until(EC.url_contains("until="))
    body = t.text()
    assert ev in body and failing not in body and xss not in body, body
    t.step = "time range: since and until"
    t.go("/ui/a/acct/events")
    d.find_element(By.ID, "f-since").send_keys(mid)
    d.find_element(By.ID, "f-until").send_keys(utc_now() + Keys.ENTER)
    t.wait.until(EC.url_contains("until="))
    body = t.text()
    assert failing in body and ev not in body, body
    t.go("/ui/a/acct/events?q=" + ev)
    t.wait.until(EC.url_contains(f"/events/{ev}"))

    # --- isolation: another account's event is not found ----------------------
    t.step = "isolation"
    t.go(f"/ui/a/acct/events/{OTHER_EVENT}")
    assert t.h1() == "Not found", t.h1()
    t.go(f"/ui/a/other/events/{OTHER_EVENT}")
    assert t.h1() == "Not found", t.h1()
    assert OTHER_EVENT not in t.text()
    t.go("/ui/a/other/endpoints")
    assert t.h1() == "Not found", t.h1()
    t.go("/ui/plugins")
    assert t.h1() == "Not found", t.h1()

    # --- CSRF: a form without (or with a wrong) token is refused --------------
    t.step = "csrf"
    t.go("/ui/a/acct/endpoints")
    cookies = t.cookie_header()
    status, page = raw_post("/ui/a/acct/endpoints", {"url": RECEIVER, "id": "forged"}, cookies)
    assert status == 403, (status, page[:300])
    status, _ = raw_post("/ui/a/acct/endpoints", {"url": RECEIVER, "id": "forged", "csrf": "0" * 64}, cookies)
    assert status == 403, status
    status, _ = raw_post(f"/ui/a/acct/events/{failing}/retry", {}, cookies)
    assert status == 403, status
    # Another account in the form's URL with a valid token: not found.
    status, _ = raw_post("/ui/a/other/endpoints", {"url": RECEIVER, "id": "x", "csrf": t.csrf()}, cookies)
    assert status == 404, status
    t.go("/ui/a/acct/endpoints")
    assert "forged" not in t.text()

    # --- create an endpoint (secret once), rotate, send a test event ----------
    t.step = "create endpoint"
    t.check_labels()
    d.find_element(By.ID, "ep-id").send_keys("gamma")
    d.find_element(By.ID, "ep-url").send_keys(RECEIVER)
    subs = d.find_element(By.ID, "ep-subs")
    subs.clear()
    subs.send_keys("license.*, user.created")
    d.find_element(By.XPATH, "//button[.='Create endpoint']").click()
    t.wait.until(lambda _: "Endpoint gamma" in t.h1())
    secret = d.find_element(By.ID, "secret").get_attribute("value")
    assert secret.startswith("whsec_"), secret
    t.shot("endpoint-created")
    d.refresh()
    assert not d.find_elements(By.ID, "secret"), "the secret is shown only once"
    assert secret not in d.page_source
    t.step = "bad plugin config shown inline"
    plugins = d.find_element(By.ID, "ed-plugins")
    plugins.clear()
    plugins.send_keys('[{"name": "event-filter", "config": {"conditions": [{"pointer": "nope", "equals": 1}]}}]')
    d.find_element(By.XPATH, "//button[.='Save']").click()
    t.wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".error"))
    err = d.find_element(By.CSS_SELECTOR, ".error").text
    assert "nope" in err, err
    # Not saved.
    t.go("/ui/a/acct/endpoints/gamma")
    assert "event-filter" not in d.find_element(By.ID, "ed-plugins").get_attribute("value")
    t.step = "rotate"
    d.find_element(By.XPATH, "//button[.='Rotate secret']").click()
    t.wait.until(lambda _: d.find_elements(By.ID, "secret"))
    rotated = d.find_element(By.ID, "secret").get_attribute("value")
    assert rotated.startswith("whsec_") and rotated != secret
    assert "previous secret keeps signing" in t.text()
    t.step = "ping"
    d.find_element(By.XPATH, "//button[.='Send test event']").click()
    t.wait.until(lambda _: d.find_elements(By.ID, "ping-result"))
    assert "delivered: HTTP 200" in d.find_element(By.ID, "ping-result").text, d.find_element(By.ID, "ping-result").text
    t.check_labels()
    t.shot("endpoint")
    t.step = "disable and enable"
    d.find_element(By.XPATH, "//button[.='Disable']").click()
    t.until_text("Endpoint disabled", reload=False)
    d.find_element(By.XPATH, "//button[.='Enable']").click()
    t.until_text("Endpoint enabled", reload=False)
    t.go("/ui/a/acct/endpoints")
    assert "gamma" in t.text()
    t.shot("endpoints")

    # --- recover: a delivery that failed for good, re-queued ------------------
    t.step = "recover: the failed delivery"
    since = utc_now()
    gone = post_event("user.deleted", {"data": {"id": "u-gone"}})
    t.go(f"/ui/a/acct/events/{gone}")

    def delta():
        sec = next(s for s in d.find_elements(By.CSS_SELECTOR, "section.delivery")
                   if s.find_element(By.TAG_NAME, "h2").text.split()[1] == "delta")
        return sec.text, [r.text for r in sec.find_elements(By.CSS_SELECTOR, "tr.attempt")]

    end = time.time() + 15
    while not (len(delta()[1]) == 2 and "failed" in delta()[0]):
        assert time.time() < end, f"the delivery did not fail for good: {delta()}"
        time.sleep(0.3)
        d.refresh()
    assert all("HTTP 500" in r for r in delta()[1]), delta()
    t.step = "recover from the endpoint page"
    t.go("/ui/a/acct/endpoints/delta")
    d.find_element(By.ID, "since").send_keys(since)
    d.find_element(By.XPATH, "//button[.='Recover']").click()
    t.until_text("Recovered: 1 deliveries re-queued", reload=False)
    t.step = "recover: delivered"
    t.go(f"/ui/a/acct/events/{gone}")
    end = time.time() + 15
    while not (len(delta()[1]) == 3 and "HTTP 200" in delta()[1][-1]):
        assert time.time() < end, f"no successful attempt after recover: {delta()}"
        time.sleep(0.3)
        d.refresh()
    assert "delivered" in delta()[0], delta()

    # --- overview: figures and chart ------------------------------------------
    t.step = "overview"
    t.go("/ui/a/acct")
    row = d.find_element(By.XPATH, "//table[contains(@class,'overview')]//tr[td/a[.='alpha']]")
    assert "%" in row.text and "ms" in row.text, row.text
    assert d.find_elements(By.CSS_SELECTOR, "svg.chart rect"), "the chart has bars"
    t.shot("overview")

    # --- live tail ------------------------------------------------------------
    t.step = "live tail"
    t.go("/ui/a/acct/tail")
    t.wait.until(lambda _: "Live" in d.find_element(By.ID, "tail-status").text)
    live = post_event("license.renewed", {"data": {"id": "lic-live"}})
    t.wait.until(lambda _: live in d.find_element(By.ID, "tail").text)
    rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#tail tbody tr")]
    assert any("alpha" in r and "delivered" in r for r in rows), rows
    t.check_labels()
    t.shot("tail")

    # --- keyboard: skip link and navigation reachable by Tab ------------------
    t.step = "keyboard"
    t.go("/ui/a/acct/events")
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = d.switch_to.active_element
    assert focused.text == "Skip to content" or focused.get_attribute("class") == "skip", focused.get_attribute("outerHTML")
    seen = []
    for _ in range(8):
        d.switch_to.active_element.send_keys(Keys.TAB)
        seen.append(d.switch_to.active_element.text)
    assert "Endpoints" in seen, seen
    # Enter on the focused "Endpoints" link navigates.
    d.get(BASE + "/ui/a/acct/events")
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    while d.switch_to.active_element.text != "Endpoints":
        d.switch_to.active_element.send_keys(Keys.TAB)
    d.switch_to.active_element.send_keys(Keys.ENTER)
    t.wait.until(EC.url_contains("/endpoints"))

    # --- sign out ---------------------------------------------------------------
    t.step = "sign out"
    d.find_element(By.XPATH, "//button[.='Sign out']").click()
    t.wait.until(EC.url_contains("/ui/login"))
    t.go("/ui/a/acct")
    assert "/ui/login" in d.current_url
    status, _ = raw_post("/ui/a/acct/endpoints", {"url": RECEIVER}, cookies)
    assert status == 403, status

    # --- admin: every account, switcher, plugins page ---------------------------
    t.step = "admin"
    d.find_element(By.ID, "token").send_keys(ADMIN + Keys.ENTER)
    t.wait.until(EC.url_contains("/ui/a/"))
    Select(d.find_element(By.ID, "account-switch")).select_by_visible_text("other")
    d.find_element(By.XPATH, "//form[@class='switch']//button").click()
    t.wait.until(EC.url_contains("/ui/a/other"))
    t.go(f"/ui/a/other/events/{OTHER_EVENT}")
    assert OTHER_EVENT in t.text()
    t.go("/ui/plugins")
    assert t.h1() == "Plugins"
    assert "event-filter" in t.text()
    t.shot("plugins")


if __name__ == "__main__":
    main()
