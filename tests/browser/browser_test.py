#!/usr/bin/env python3
"""browser_test.py -- make test-browser: the live page in headless Chromium against the real stack.

Starts build/bin/presenced (SERVICE_PORT=0, a temp DATA_DIR, its own JWT_SECRET), signs in two
users (tokens from presence-token) in two browsers with separate profiles, and checks that each
sees the other come online, that a status set on one page shows as busy on the other, and that
after one browser is closed and the grace has passed the other sees it offline. Screenshots of
each step go to $OUT (default build/browser/).

The page needs the gateway to serve it (GET / and /ui/..., UI_ENABLED) and the WebSocket endpoint
(GET /api/v2/presence/connect): until both exist the test prints "skip test-browser (why)" --
found by asking the gateway, never assumed. For working on the page before that:
  --serve-ui   serve the installed UI files (build/share/presence/ui) from a loopback server of
               this script and point the page at the gateway (?api=; CORS), and accept the SSE
               fallback. Not part of make test.

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
        self.secret = secrets.token_hex(24)
        env = {"PATH": os.environ.get("PATH", ""), "SERVICE_PORT": "0", "SERVICE_ADDR": "127.0.0.1",
               "DATA_DIR": self.dir, "JWT_SECRET": self.secret, "CACHE_NODES": "1", "LOG_LEVEL": "warn"}
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
        return subprocess.check_output([os.path.join(BIN, "presence-token"), sub],
                                       env={"PATH": os.environ.get("PATH", ""), "JWT_SECRET": self.secret,
                                            "DATA_DIR": self.dir}).decode().strip()

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


def probe(stack):
    """None when the gateway serves the page and the WebSocket endpoint, else why not."""
    why = []
    st, hdr, body = request("GET", stack.url + "/")
    if st == 404 or "text/html" not in (hdr.get("Content-Type") or ""):
        why.append("the gateway does not serve the page yet (GET / answered %d %s)" % (st, hdr.get("Content-Type")))
    st, body = ws_handshake_status(stack.port, "/api/v2/presence/connect?access_token=" + stack.token("probe"))
    if st == 404 or (st == 400 and '"error":"invalid user_id' in body):
        why.append("the gateway has no /api/v2/presence/connect yet (a WebSocket handshake answered %d)" % st)
    return "; ".join(why) or None


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
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


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
        why = probe(stack)
        if why and not args.serve_ui:
            skip_all(why)
        if args.serve_ui:
            ui = UiServer()
            page = "http://127.0.0.1:%d/ui/index.html?api=%s" % (ui.port, stack.url)
            print("serving the page from %s (gateway: %s)" % (UI_DIR, why or "complete"))
        else:
            page = stack.url + "/"
        run(stack, page, tmp, drivers, expect_ws=not args.serve_ui)
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


def run(stack, page, tmp, drivers, expect_ws):
    from selenium.webdriver.common.by import By

    def sign_in(drv, user, device, watch):
        drv.get(page)
        wait_for(lambda: drv.find_element(By.ID, "token").is_displayed(), 15, "the sign-in form")
        drv.find_element(By.ID, "token").send_keys(stack.token(user))
        drv.find_element(By.ID, "device").send_keys(device)
        drv.find_element(By.ID, "signin-btn").click()
        wait_for(lambda: drv.find_element(By.ID, "conn").get_attribute("data-state") in ("open", "fallback"), 20,
                 "%s's page to be live" % user)
        drv.find_element(By.ID, "watch-users").send_keys(watch)
        drv.find_element(By.ID, "watch-btn").click()

    shot = lambda drv, name: drv.save_screenshot(os.path.join(OUT, name + ".png"))
    alice = browser(os.path.join(tmp, "alice"))
    drivers.append(alice)
    bob = browser(os.path.join(tmp, "bob"))
    drivers.append(bob)

    sign_in(alice, "alice", "laptop", "bob")
    sign_in(bob, "bob", "phone", "alice")
    conn = alice.find_element(By.ID, "conn").text
    if expect_ws:
        result("WebSocket" in conn, "the page connects over WebSocket", "connection says %r" % conn)

    try:
        wait_for(lambda: roster_status(alice, "bob") == "online", 15, "alice to see bob online")
        wait_for(lambda: roster_status(bob, "alice") == "online", 15, "bob to see alice online")
        result(True, "each sees the other online")
    except TimeoutError as e:
        result(False, "each sees the other online", str(e))
    shot(alice, "1-alice-sees-bob-online")
    shot(bob, "1-bob-sees-alice-online")
    meta = alice.find_element(By.CSS_SELECTOR, 'li[data-user="bob"] .meta').text
    result(meta == "online · 1 device", "the roster tells status and device count", "got %r" % meta)

    bob.find_element(By.CSS_SELECTOR, 'input[name=status][value=busy]').click()
    bob.find_element(By.ID, "message").send_keys("In a meeting")
    bob.find_element(By.ID, "save-status").click()
    try:
        wait_for(lambda: roster_status(alice, "bob") == "busy", 15, "alice to see bob busy")
        msg = wait_for(lambda: alice.find_element(By.CSS_SELECTOR, 'li[data-user="bob"] .msg').text, 5, "bob's message")
        result(msg == "In a meeting", "alice sees bob busy with his message", "message %r" % msg)
    except TimeoutError as e:
        result(False, "alice sees bob busy with his message", str(e))
    shot(alice, "2-alice-sees-bob-busy")

    closed_at = time.monotonic()
    bob.close()  # the window first (the page's pagehide runs), then the browser
    bob.quit()
    drivers.remove(bob)
    try:
        # The grace (PRESENCE_GRACE_MS, 5 s) for a WebSocket; the fallback's REST session ends at
        # once on pagehide or after its ttl (60 s) at the latest.
        wait_for(lambda: roster_status(alice, "bob") == "offline", 75, "alice to see bob offline")
        took = time.monotonic() - closed_at
        result(True, "alice sees bob offline after his browser closed (%.1f s)" % took)
        if expect_ws:
            result(took >= 4.5, "not before the grace", "offline after %.1f s" % took)
    except TimeoutError as e:
        result(False, "alice sees bob offline after his browser closed", str(e))
    shot(alice, "3-alice-sees-bob-offline")
    meta = alice.find_element(By.CSS_SELECTOR, 'li[data-user="bob"] .meta').text
    result(meta.startswith("offline · last seen "), "offline shows when last seen", "got %r" % meta)


if __name__ == "__main__":
    main()
