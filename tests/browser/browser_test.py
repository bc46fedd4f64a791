#!/usr/bin/env python3
"""browser_test.py -- make test-browser: the live page in headless Chromium against the real stack.

Starts build/bin/presenced as `make run` does (SERVICE_PORT=0, a temp DATA_DIR, no JWT_SECRET: the
launcher generates the development secret, so the page offers "try as"), and drives two browsers
with separate profiles:

  page        GET / is the page with its security headers; it loads with no console error (a CSP
              violation would be one); the "try as" box is offered on this development node
  alice       signs in through "try as" (POST /api/v2/dev/token), bob with a pasted token (from
              presence-token, as `make token` prints it)
  roster      each sees the other online with one device; alice's "Your devices" lists her one
              device; bob's busy status and message reach alice; bob invisible is offline to
              alice, and back to busy when he turns it off (DELETE .../preferred)
  offline     bob's browser closes; alice sees him offline (over WebSocket: not before the grace)

Transport: the page uses the WebSocket endpoint (GET /api/v2/presence/connect) when the gateway
serves it -- found by asking the live gateway (a handshake), never assumed. Until it does, the
page runs on its SSE + REST fallback, and the checks that need the WebSocket say "skip" with the
reason. Screenshots of each step go to $OUT (default build/browser/); the README's picture
(docs/ui-screenshot.png) is readme-alice-sees-bob-busy.png, copied by hand after a run.

  --serve-ui   serve the installed UI files (build/share/presence/ui) from a loopback server of
               this script and point the page at the gateway (?api=; CORS): for working on the
               page against a gateway that does not serve it. Not part of make test.

Chromium: Debian's /usr/bin/chromium driven by /usr/bin/chromedriver through python3-selenium,
started with --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
--disable-background-networking --disable-component-update --disable-sync and a fresh
--user-data-dir. Ends with "test-browser: N passed, N failed, N skipped".
"""
import argparse
import functools
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("PRESENCE_BIN", os.path.join(ROOT, "build", "bin"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "build", "browser"))
UI_DIR = os.environ.get("UI_DIR", os.path.join(ROOT, "build", "share", "presence", "ui"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")

passed = failed = skipped = 0


def result(ok, name, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s" % name)
    else:
        failed += 1
        print("FAIL %s%s" % (name, (": " + detail) if detail else ""))


def finish(rc=None):
    print("test-browser: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(rc if rc is not None else (1 if failed else 0))


def skip_all(why):
    global skipped
    skipped += 1
    print("skip test-browser (%s)" % why)
    finish(0)


def wait_for(cond, seconds, what):
    end = time.monotonic() + seconds
    last = None
    while time.monotonic() < end:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the page may be mid-render: retry until the deadline
            last = e
        time.sleep(0.05)
    raise TimeoutError("timed out after %ss waiting for %s%s" % (seconds, what, (" (%s)" % last) if last else ""))


def request(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Stack:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="presence-browser-")
        # As `make run`: no JWT_SECRET, so the launcher generates the development secret (and the
        # gateway offers POST /api/v2/dev/token for the page's "try as" box).
        env = {"PATH": os.environ.get("PATH", ""), "SERVICE_PORT": "0", "SERVICE_ADDR": "127.0.0.1",
               "DATA_DIR": self.dir, "CACHE_NODES": "1", "LOG_LEVEL": "warn"}
        self.out = open(os.path.join(self.dir, "stdout"), "w+")
        self.err = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen([os.path.join(BIN, "presenced")], env=env, stdout=self.out, stderr=self.err)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("presenced exited %s before ready" % self.proc.returncode)
            self.out.seek(0)
            return re.search(r"^ready http=([0-9.]+):(\d+) ", self.out.read(), re.M)
        m = wait_for(ready, 30, "the ready line of presenced")
        self.port = int(m.group(2))
        self.url = "http://127.0.0.1:%d" % self.port

    def token(self, sub):
        """A token as `make token SUB=sub` prints it (the development secret in DATA_DIR)."""
        return subprocess.check_output([os.path.join(BIN, "presence-token"), sub],
                                       env={"PATH": os.environ.get("PATH", ""), "DATA_DIR": self.dir}).decode().strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def ws_handshake_status(port, path):
    """Status line of a WebSocket handshake, and the body (to tell a missing route)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        key = secrets.token_bytes(16).hex()[:22] + "=="
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
        buf = b""
        end = time.monotonic() + 5
        while b"\r\n\r\n" not in buf and time.monotonic() < end:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.1 (\d{3})", head)
        cl = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
        while cl and len(body) < int(cl.group(1)) and time.monotonic() < end:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
        return (int(m.group(1)) if m else 0), body.decode("utf-8", "replace")
    finally:
        s.close()


def page_problem(stack):
    """None when GET / is the page with its headers, else what is wrong (a failure: this branch's
    gateway serves the page)."""
    st, hdr, body = request("GET", stack.url + "/")
    ctype = hdr.get("Content-Type") or ""
    csp = hdr.get("Content-Security-Policy") or ""
    if st != 200 or not ctype.startswith("text/html"):
        return "GET / answered %d %s" % (st, ctype)
    if "script-src 'self'" not in csp or "frame-ancestors 'none'" not in csp:
        return "GET / has no page CSP (Content-Security-Policy: %r)" % csp
    if not hdr.get("ETag") or hdr.get("Cache-Control") != "no-cache":
        return "GET / has ETag %r, Cache-Control %r" % (hdr.get("ETag"), hdr.get("Cache-Control"))
    return None


def ws_missing(stack):
    """None when the gateway serves the WebSocket endpoint, else why not. "Does not" is only what a
    gateway without the route answers: 404, or the 400 of `connect` taken as a user id; any other
    answer counts as served (a broken endpoint must fail the checks, not skip them)."""
    st, body = ws_handshake_status(stack.port, "/api/v2/presence/connect?access_token=" + stack.token("probe"))
    if st == 404 or (st == 400 and '"error":"invalid user_id' in body):
        return "the gateway has no /api/v2/presence/connect yet (a WebSocket handshake answered %d)" % st
    return None


class UiServer:
    """--serve-ui only: the installed UI files on a loopback port of our own."""

    def __init__(self):
        handler = functools.partial(Quiet, directory=os.path.dirname(UI_DIR))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


class Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", "": "application/octet-stream"}

    def log_message(self, *a):
        pass


def browser(profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--user-data-dir=" + profile_dir, "--window-size=420,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def console_errors(drv, no_ws):
    """The page's console errors (CSP violations, script errors, failed loads), except the
    favicon's 404 (the page has none; the browser asks anyway) and, while the gateway has no
    WebSocket endpoint (no_ws), the refused handshakes that send the page to its fallback."""
    out = []
    for e in drv.get_log("browser"):
        m = e.get("message", "")
        if e.get("level") != "SEVERE" or "favicon.ico" in m:
            continue
        if no_ws and re.search(r"WebSocket connection to '\S*/api/v2/presence/connect\?\S*' failed: "
                               r"Error during WebSocket handshake: Unexpected response code: 400", m):
            continue
        out.append(re.sub(r"access_token=[^&' ]*", "access_token=...", m))
    return out


def roster_status(drv, user):
    from selenium.webdriver.common.by import By
    items = drv.find_elements(By.CSS_SELECTOR, 'li[data-user="%s"]' % user)
    return items[0].get_attribute("data-status") if items else None


def main():
    global skipped
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve-ui", action="store_true", help="serve the page ourselves and accept the SSE fallback")
    args = ap.parse_args()
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            skip_all("%s is missing (Debian package %s: make browser-deps)" % (path, pkg))
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip_all("python3-selenium is not installed (make browser-deps)")
    if not os.path.isfile(os.path.join(UI_DIR, "index.html")):
        skip_all("%s has no index.html: run make (ui/module.mk installs the page)" % UI_DIR)
    os.makedirs(OUT, exist_ok=True)
    stack = Stack()
    ui = None
    drivers = []
    tmp = tempfile.mkdtemp(prefix="presence-chromium-")
    try:
        no_ws = ws_missing(stack)
        if args.serve_ui:
            ui = UiServer()
            page = "http://127.0.0.1:%d/ui/index.html?api=%s" % (ui.port, stack.url)
            print("serving the page from %s" % UI_DIR)
        else:
            why = page_problem(stack)
            result(why is None, "the gateway serves the page (GET /: HTML, CSP, ETag, no-cache)", why or "")
            page = stack.url + "/"
        if no_ws:
            print("the page runs on its SSE + REST fallback: %s" % no_ws)
        run(stack, page, tmp, drivers, no_ws, dev_box=not args.serve_ui)
    except Exception as e:  # a crash of the test itself is a failure, with its reason
        result(False, "browser run", "%s: %s" % (type(e).__name__, e))
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:
                pass
        if ui:
            ui.stop()
        rc = stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if rc != 0:
            result(False, "presenced exits cleanly", "exit status %s" % rc)
    finish()


def skip(name, why):
    global skipped
    skipped += 1
    print("skip test-browser: %s (%s)" % (name, why))


def run(stack, page, tmp, drivers, no_ws, dev_box):
    from selenium.webdriver.common.by import By

    def live(drv, user):
        wait_for(lambda: drv.find_element(By.ID, "conn").get_attribute("data-state") in ("open", "fallback"), 20,
                 "%s's page to be live" % user)

    def watch(drv, users):
        drv.find_element(By.ID, "watch-users").send_keys(users)
        drv.find_element(By.ID, "watch-btn").click()

    def status_of(drv, user):
        return lambda: roster_status(drv, user)

    def check_wait(name, cond, want, seconds, drv, shot_name=None):
        try:
            wait_for(lambda: cond() == want, seconds, name)
            result(True, name)
            return True
        except TimeoutError as e:
            result(False, name, "%s (last: %r)" % (e, cond()))
            return False
        finally:
            if shot_name:
                shot(drv, shot_name)

    shot = lambda drv, name: drv.save_screenshot(os.path.join(OUT, name + ".png"))
    alice = browser(os.path.join(tmp, "alice"))
    drivers.append(alice)
    bob = browser(os.path.join(tmp, "bob"))
    drivers.append(bob)

    # -- the page itself, and alice through "try as" (a development node) --
    alice.get(page)
    wait_for(lambda: alice.find_element(By.ID, "token").is_displayed(), 15, "the sign-in form")
    if dev_box:
        try:
            wait_for(lambda: alice.find_element(By.ID, "try-form").is_displayed(), 10, "the try-as box")
            result(True, "a development node offers \"try as\"")
        except TimeoutError as e:
            result(False, "a development node offers \"try as\"", str(e))
        shot(alice, "0-sign-in")
        alice.find_element(By.ID, "device").send_keys("laptop")
        alice.find_element(By.ID, "try-sub").send_keys("alice")
        alice.find_element(By.ID, "try-btn").click()
    else:
        alice.find_element(By.ID, "token").send_keys(stack.token("alice"))
        alice.find_element(By.ID, "device").send_keys("laptop")
        alice.find_element(By.ID, "signin-btn").click()
    live(alice, "alice")
    result(alice.find_element(By.ID, "me-name").text == "alice", "alice is signed in",
           "the page says %r" % alice.find_element(By.ID, "me-name").text)
    watch(alice, "bob")

    # -- bob with a pasted token, as `make token SUB=bob` prints it --
    bob.get(page)
    wait_for(lambda: bob.find_element(By.ID, "token").is_displayed(), 15, "the sign-in form")
    bob.find_element(By.ID, "token").send_keys(stack.token("bob"))
    bob.find_element(By.ID, "device").send_keys("phone")
    bob.find_element(By.ID, "signin-btn").click()
    live(bob, "bob")
    watch(bob, "alice")

    conn = alice.find_element(By.ID, "conn").text
    if no_ws:
        result("SSE fallback" in conn, "without the WebSocket endpoint the page runs on SSE + REST",
               "connection says %r" % conn)
        skip("the page connects over WebSocket", no_ws)
    else:
        result("WebSocket" in conn, "the page connects over WebSocket", "connection says %r" % conn)

    # -- the roster --
    ok_a = check_wait("alice sees bob online", status_of(alice, "bob"), "online", 15, alice)
    check_wait("bob sees alice online", status_of(bob, "alice"), "online", 15, bob)
    shot(alice, "1-alice-sees-bob-online")
    shot(bob, "1-bob-sees-alice-online")
    if ok_a:
        meta = alice.find_element(By.CSS_SELECTOR, 'li[data-user="bob"] .meta').text
        result(meta == "online · 1 device", "the roster tells status and device count", "got %r" % meta)
    try:
        items = wait_for(lambda: alice.find_elements(By.CSS_SELECTOR, "#sessions li[data-session]"), 10,
                         "alice's devices")
        text = items[0].text
        result(len(items) == 1 and "laptop" in text and "this device" in text,
               "\"Your devices\" lists alice's one device", "got %r" % [i.text for i in items])
    except TimeoutError as e:
        result(False, "\"Your devices\" lists alice's one device", str(e))
    errs = console_errors(alice, no_ws) + console_errors(bob, no_ws)
    result(not errs, "the pages log no console error (CSP included)", "; ".join(errs)[:2000])

    # -- busy with a message --
    bob.find_element(By.CSS_SELECTOR, 'input[name=status][value=busy]').click()
    bob.find_element(By.ID, "message").send_keys("In a meeting")
    bob.find_element(By.ID, "save-status").click()
    if check_wait("alice sees bob busy", status_of(alice, "bob"), "busy", 15, alice):
        try:
            msg = wait_for(lambda: alice.find_element(By.CSS_SELECTOR, 'li[data-user="bob"] .msg').text, 5,
                           "bob's message")
            result(msg == "In a meeting", "alice sees bob's message", "message %r" % msg)
        except TimeoutError as e:
            result(False, "alice sees bob's message", str(e))
    shot(alice, "2-alice-sees-bob-busy")
    alice.set_window_size(1000, 760)  # the two-column layout, for the README (docs/ui-screenshot.png)
    shot(alice, "readme-alice-sees-bob-busy")
    alice.set_window_size(420, 900)

    # -- invisible, and back --
    bob.find_element(By.ID, "invisible").click()
    check_wait("bob invisible: alice sees him offline", status_of(alice, "bob"), "offline", 15, alice)
    summary = lambda: bob.find_element(By.ID, "me-summary").text
    try:
        wait_for(lambda: summary().startswith("You are invisible"), 10, "bob's own view")
        result(True, "bob's page says he is invisible")
    except TimeoutError:
        result(False, "bob's page says he is invisible", "got %r" % summary())
    bob.find_element(By.ID, "invisible").click()
    check_wait("bob visible again: alice sees him busy", status_of(alice, "bob"), "busy", 15, alice)

    # -- bob leaves --
    closed_at = time.monotonic()
    bob.close()  # the window first (the page's pagehide runs), then the browser
    bob.quit()
    drivers.remove(bob)
    try:
        # The grace (PRESENCE_GRACE_MS, 5 s) for a WebSocket; the fallback's REST session ends at
        # once on pagehide, or after its ttl (60 s) at the latest.
        wait_for(lambda: roster_status(alice, "bob") == "offline", 75, "alice to see bob offline")
        took = time.monotonic() - closed_at
        result(True, "alice sees bob offline after his browser closed (%.1f s)" % took)
        if no_ws:
            skip("bob goes offline only after the grace", no_ws)
        else:
            result(took >= 4.5, "bob goes offline only after the grace", "offline after %.1f s" % took)
    except TimeoutError as e:
        result(False, "alice sees bob offline after his browser closed", str(e))
    shot(alice, "3-alice-sees-bob-offline")
    meta = alice.find_element(By.CSS_SELECTOR, 'li[data-user="bob"] .meta').text
    result(meta.startswith("offline · last seen "), "offline shows when last seen", "got %r" % meta)


if __name__ == "__main__":
    main()
