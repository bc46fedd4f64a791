#!/usr/bin/env python3
"""readme_test.py -- the README's own commands, run as a new user would run them.

The blocks are read from README.md itself (never a second copy): the "Two commands" block, the
ready line it shows, the "Try it" block and the `make token ... SCOPE=presence:admin` line. Then,
on the built tree in the checkout:

  1. `make run` in the background (its own SERVICE_PORT and DATA_DIR; everything else as a user
     gets it), waiting for the ready line, which must have the README's shape and name the
     address actually bound (127.0.0.1 for `make run`);
  2. every line of "Try it" in one bash, as written (only localhost:8080 becomes the test's
     port); each curl's status code and the fields it returns are checked against EXPECT below,
     keyed by the command's exact text: a README line without an expectation fails the step
     ("update tests/readme/readme_test.py"), and so does an expectation the README lost;
  3. the admin token line: the token writes another user's record; the live page: the URL
     "The live page" names is served (HTML), and "try as" works on this node (a token from
     POST /api/v2/dev/token writes its user's record);
  4. a second `make run` on the same port, then on the same DATA_DIR: exit status 2 at once,
     naming the port or the directory;
  5. Ctrl-C (SIGINT to the process group, as a terminal sends it): every process stops cleanly;
     then `make run` again on the same DATA_DIR (the record is still there) and SIGTERM to the
     launcher: `make run` exits 0;
  6. the README's configuration table and docs/CONFIG.md name only real variables (each one
     is listed by some binary's --help), and CONFIG.md names every variable the binaries read.

Prints "ok"/"FAIL" per check and "test-readme: N passed, N failed, N skipped".
"""
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "build", "bin")

passed = failed = skipped = 0


def ok(what):
    global passed
    passed += 1
    print("ok   " + what, flush=True)


def bad(what):
    global failed
    failed += 1
    print("FAIL " + what, flush=True)


def check(cond, what):
    (ok if cond else bad)(what)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- reading the README ---------------------------------------------------------------------

def sections(text):
    """{heading: body} for the ## and ### headings."""
    out, cur, buf = {}, None, []
    for line in text.split("\n"):
        m = re.match(r"^#{2,3} (.*)$", line)
        if m:
            if cur is not None:
                out[cur] = "\n".join(buf)
            cur, buf = m.group(1).strip(), []
        else:
            buf.append(line)
    if cur is not None:
        out[cur] = "\n".join(buf)
    return out


def code_blocks(body, lang=None):
    blocks = re.findall(r"```([a-z]*)\n(.*?)```", body, re.S)
    return [b for (l, b) in blocks if lang is None or l == lang]


def commands(block):
    """The block's commands: comments dropped, continuation lines joined."""
    cmds, cur = [], ""
    for line in block.split("\n"):
        if cur:
            cur += " " + line.strip()
        else:
            cur = line.strip()
        if cur.endswith("\\"):
            cur = cur[:-1].rstrip()
            continue
        code = re.sub(r"\s+#.*$", "", cur).strip() if not cur.startswith("#") else ""
        if code:
            cmds.append(re.sub(r"\s+", " ", code))
        cur = ""
    return cmds


# ---- expectations, keyed by the README's exact command text ----------------------------------
# Each: (expected HTTP status, checks on the JSON body). None = not a curl (checked by `after`);
# ("ws", checks on the JSON lines it printed) for the WebSocket client.

def rec(body, uid):
    return body["data"][uid]


EXPECT = {
    "TOKEN=$(make -s token SUB=alice)": None,
    "curl -s -X PUT http://localhost:8080/api/v2/presence/alice -H \"Authorization: Bearer $TOKEN\" "
    "-d '{\"status\":\"busy\",\"message\":\"In a meeting\",\"ttl\":3600}'":
        (200, lambda b, st: [
            (b["success"] is True, "success"),
            (rec(b, "alice")["status"] == "busy", "status busy"),
            (rec(b, "alice")["message"] == "In a meeting", "message"),
            (rec(b, "alice")["ttl"] == 3600, "ttl 3600"),
            (rec(b, "alice")["node_id"] == "node-1", "node_id node-1"),
            (isinstance(rec(b, "alice")["version"], int) and rec(b, "alice")["version"] >= 1, "a version"),
            (st.setdefault("put", rec(b, "alice")) is not None, "kept"),
        ]),
    "curl -s http://localhost:8080/api/v2/presence/alice":
        (200, lambda b, st: [
            (rec(b, "alice") == st["put"], "the record exactly as the PUT stored it"),
        ]),
    "curl -s -X POST http://localhost:8080/api/v2/presence/alice/heartbeat -H \"Authorization: Bearer $TOKEN\"":
        (200, lambda b, st: [
            (rec(b, "alice")["status"] == "busy", "status kept"),
            (rec(b, "alice")["message"] == "In a meeting", "message kept"),
            (rec(b, "alice")["last_seen"] >= st["put"]["last_seen"], "last_seen refreshed"),
            (rec(b, "alice")["expires_at"] >= st["put"]["expires_at"], "expires_at refreshed"),
        ]),
    "curl -s \"http://localhost:8080/api/v2/presence?users=alice,bob\"":
        (200, lambda b, st: [
            (b["success"] is True, "success"),
            (list(b["data"].keys()) == ["alice"], "found ids only (alice, not bob)"),
            (rec(b, "alice")["status"] == "busy", "alice busy"),
        ]),
    # devices (REALTIME.md): a session under the preferred status, the list, the preferred status ended
    "curl -s -X PUT http://localhost:8080/api/v2/presence/alice -H \"Authorization: Bearer $TOKEN\" "
    "-d '{\"status\":\"online\",\"session\":\"phone\",\"device\":\"phone\"}'":
        (200, lambda b, st: [
            (rec(b, "alice")["status"] == "busy", "the preferred busy still wins"),
            (rec(b, "alice")["sessions"] == 1, "one session"),
            (rec(b, "alice")["source"] == "preferred", "source preferred"),
            (rec(b, "alice")["message"] == "In a meeting", "message kept (the body had none)"),
        ]),
    "curl -s http://localhost:8080/api/v2/presence/alice/sessions -H \"Authorization: Bearer $TOKEN\"":
        (200, lambda b, st: [
            (len(b["data"]["alice"]) == 1, "one live session"),
            (b["data"]["alice"][0]["session_id"] == "phone", "session_id phone"),
            (b["data"]["alice"][0]["device"] == "phone", "device phone"),
            (b["data"]["alice"][0]["status"] == "online", "its own status online"),
        ]),
    "curl -s -X DELETE http://localhost:8080/api/v2/presence/alice/preferred -H \"Authorization: Bearer $TOKEN\"":
        (200, lambda b, st: [
            (rec(b, "alice")["status"] == "online", "the session decides: online"),
            (rec(b, "alice")["source"] == "session", "source session"),
            ("preferred_until" not in rec(b, "alice"), "no preferred_until"),
        ]),
    # a WebSocket (REALTIME.md): not a curl -- ("ws", checks on the JSON lines the client printed)
    "build/bin/presence-ws -n 2 \"ws://localhost:8080/api/v2/presence/connect?access_token=$TOKEN&device=laptop\" "
    "'{\"type\":\"watch\",\"users\":[\"alice\"]}'":
        ("ws", lambda lines, st: [
            (len(lines) == 2, "two messages printed (%d)" % len(lines)),
            (lines[0]["type"] == "welcome", "the welcome first"),
            (lines[0]["user_id"] == "alice", "welcome user_id alice"),
            (len(lines[0]["session_id"]) == 20, "a server-assigned session_id"),
            (lines[0]["record"]["status"] == "online", "online"),
            (lines[0]["record"]["sessions"] == 2, "two sessions: the phone and the laptop"),
            (lines[0]["grace_ms"] == 5000 and lines[0]["ping_interval_ms"] == 25000, "grace_ms, ping_interval_ms"),
            (lines[1]["type"] == "presence", "then a presence event"),
            (lines[1]["record"]["user_id"] == "alice", "alice's current record"),
            (lines[1]["record"]["sessions"] == 2, "with both sessions (alice sees her own view)"),
        ]),
}


def run_try_it(cmds, port, env, workdir):
    """Run the commands in one bash as written; curl is wrapped to record each status code."""
    outdir = os.path.join(workdir, "try")
    os.makedirs(outdir, exist_ok=True)
    script = ["set -u", "n=0",
              "curl() { n=$((n+1)); command curl -o \"$OUT/$n.body\" -w '%{http_code}' \"$@\" > \"$OUT/$n.code\"; "
              "local rc=$?; cat \"$OUT/$n.body\"; echo; return $rc; }"]
    for c in cmds:
        script.append(c.replace("localhost:8080", "localhost:%d" % port))
        script.append("echo \"@@done $?\"")
    script.append("echo \"@@token $TOKEN\"")
    e = dict(env, OUT=outdir)
    p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=120)
    return p.stdout, p.stderr, outdir


# ---- make run ---------------------------------------------------------------------------------

class Run:
    """`make run` in its own session (a terminal's process group)."""

    def __init__(self, env):
        self.p = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        self.out = b""

    def read_until(self, pattern, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.out)
            if m:
                return m
            r, _, _ = select.select([self.p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    break
                self.out += chunk
            elif self.p.poll() is not None:
                break
        return re.search(pattern, self.out)

    def wait(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and self.p.poll() is None:
            r, _, _ = select.select([self.p.stdout], [], [], 0.2)
            if r:
                self.out += os.read(self.p.stdout.fileno(), 65536)
        if self.p.poll() is None:
            return None
        rest = self.p.stdout.read()
        if rest:
            self.out += rest
        return self.p.returncode

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def text(self):
        return self.out.decode(errors="replace")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours is gone for the purpose of the test
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def child_pids(log):
    return [int(x) for x in re.findall(r"\(pid (\d+)\)", log)]


def main():
    readme = open(os.path.join(ROOT, "README.md")).read()
    secs = sections(readme)

    # -- the README's blocks --
    two = secs.get("Two commands", "")
    blocks = code_blocks(two, "sh")
    cmds2 = commands(blocks[0]) if blocks else []
    check(cmds2 == ["make run", "make test"], "README 'Two commands' block is `make run` and `make test` (got %r)" % cmds2)
    ready_blocks = [b for b in code_blocks(two) if b.startswith("ready ")]
    check(len(ready_blocks) == 1, "README shows the ready line")
    ready_shape = ready_blocks[0].strip() if ready_blocks else ""
    try_blocks = code_blocks(secs.get("Try it", ""), "sh")
    check(len(try_blocks) >= 1, "README 'Try it' has sh blocks")
    try_cmds = [c for b in try_blocks for c in commands(b)]  # run in order, in one shell
    for c in try_cmds:
        check(c in EXPECT, "README 'Try it' command has an expectation here: %s" % c)
    for c in EXPECT:
        check(c in try_cmds, "expectation still in the README: %s" % c)
    m = re.search(r"`(make token SUB=\w+ SCOPE=presence:admin)`", secs.get("Try it", ""))
    check(m is not None, "README names the admin token command")
    admin_cmd = m.group(1) if m else "make token SUB=ops SCOPE=presence:admin"

    work = tempfile.mkdtemp(prefix="readme.")
    data = os.path.join(work, "data")
    port = free_port()
    env = dict(os.environ, SERVICE_PORT=str(port), DATA_DIR=data)
    for k in ("JWT_SECRET", "SERVICE_ADDR", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(k, None)
    run = Run(env)
    try:
        # -- 1. make run and its ready line --
        m = run.read_until(rb"\nready [^\n]*\n", 90)
        if not check(m is not None, "make run prints its ready line"):
            print(run.text()[-3000:])
            return
        line = m.group(0).decode().strip()
        shape = re.sub(r"[-/\w.]+$", "", re.sub(r"8080", str(port), ready_shape))
        check(line.startswith(shape.split(" data_dir=")[0]),
              "ready line has the README's shape: %r vs %r" % (line, ready_shape))
        check("http=127.0.0.1:%d " % port in line, "ready line names the bound address 127.0.0.1:%d: %r" % (port, line))
        check(line.endswith("data_dir=" + data), "ready line names DATA_DIR: %r" % line)
        listening = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], capture_output=True, text=True).stdout
        check("127.0.0.1:%d" % port in listening and "0.0.0.0:%d" % port not in listening,
              "make run listens on loopback only: %r" % listening.strip())
        hint = re.search(r"get a token with: (make token SUB=alice[^\n]*)", run.text())
        check(hint is not None and ("DATA_DIR=" + data) in hint.group(1),
              "the token hint names the non-default DATA_DIR: %r" % (hint.group(1) if hint else None))

        # -- 2. Try it, as written --
        out, err, outdir = run_try_it(try_cmds, port, env, work)
        dones = re.findall(r"@@done (\d+)", out)
        check(len(dones) == len(try_cmds) and all(d == "0" for d in dones),
              "every 'Try it' command exits 0 (%s) %s" % (dones, err[-500:]))
        tok = re.search(r"@@token (\S+)", out)
        token = tok.group(1) if tok else ""
        check(re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token) is not None, "make -s token prints one JWT")
        state, n = {}, 0
        outputs = re.split(r"^@@done \d+\n", out, flags=re.M)  # outputs[i]: what command i printed
        for i, c in enumerate(try_cmds):
            exp = EXPECT.get(c)
            if exp is None:
                continue
            if exp[0] == "ws":
                try:
                    lines = [json.loads(x) for x in outputs[i].strip().split("\n") if x.strip()]
                    for cond, what in exp[1](lines, state):
                        check(cond, "%s: %s" % (c[:50], what))
                except (ValueError, KeyError, IndexError, TypeError) as e:
                    bad("%s: unexpected output (%s): %s" % (c[:50], e, outputs[i][:300] if i < len(outputs) else ""))
                continue
            n += 1
            try:
                code = int(open(os.path.join(outdir, "%d.code" % n)).read() or 0)
                body = json.loads(open(os.path.join(outdir, "%d.body" % n)).read())
            except (OSError, ValueError) as e:
                bad("%s: no JSON answer (%s)" % (c, e))
                continue
            check(code == exp[0], "%s -> %d (want %d)" % (c[:60], code, exp[0]))
            try:
                for cond, what in exp[1](body, state):
                    check(cond, "%s: %s" % (c[:50], what))
            except (KeyError, TypeError) as e:
                bad("%s: missing field %s in %s" % (c[:50], e, json.dumps(body)[:300]))

        # -- 3. the admin token --
        p = subprocess.run(admin_cmd.split(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        admin = p.stdout.strip().split("\n")[-1] if p.stdout.strip() else ""
        check(p.returncode == 0 and re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", admin) is not None,
              "%s prints a token" % admin_cmd)
        w = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                            "http://localhost:%d/api/v2/presence/bob" % port, "-H", "Authorization: Bearer " + admin,
                            "-d", '{"status":"away"}'], capture_output=True, text=True, timeout=30)
        check(w.stdout == "200", "the admin token writes another user (bob): %s" % w.stdout)
        w = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                            "http://localhost:%d/api/v2/presence/bob" % port, "-H", "Authorization: Bearer " + token,
                            "-d", '{"status":"away"}'], capture_output=True, text=True, timeout=30)
        check(w.stdout == "403", "alice's token may not write bob: %s" % w.stdout)

        # -- 3b. the live page and its "try as" --
        page = re.search(r"(http://localhost:8080/)[:\s]", secs.get("The live page", ""))
        if check(page is not None, "README 'The live page' names http://localhost:8080/"):
            url = page.group(1).replace("8080", str(port))
            g = subprocess.run(["curl", "-s", "-D", "-", url], capture_output=True, text=True, timeout=30)
            check(g.stdout.startswith("HTTP/1.1 200") and "content-type: text/html" in g.stdout.lower()
                  and "<title>Presence</title>" in g.stdout, "make run serves the page at %s" % url)
            g = subprocess.run(["curl", "-s", url + "api/v2/dev/token"], capture_output=True, text=True, timeout=30)
            check(g.stdout == '{"success":true,"available":true}', "make run offers \"try as\": %s" % g.stdout)
            g = subprocess.run(["curl", "-s", "-X", "POST", url + "api/v2/dev/token", "-d", '{"sub":"carol"}'],
                               capture_output=True, text=True, timeout=30)
            try:
                carol = json.loads(g.stdout)["token"]
            except (ValueError, KeyError):
                carol = ""
            w = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                                url + "api/v2/presence/carol", "-H", "Authorization: Bearer " + carol,
                                "-d", '{"status":"online"}'], capture_output=True, text=True, timeout=30)
            check(w.stdout == "200", "a \"try as\" token writes its user: %s %s" % (w.stdout, g.stdout[:200]))

        # -- 4. no silent second node --
        for what, e2, want in (("port", dict(env, DATA_DIR=os.path.join(work, "other")), "SERVICE_PORT"),
                               ("DATA_DIR", dict(env, SERVICE_PORT=str(free_port())), "DATA_DIR")):
            t0 = time.time()
            p = subprocess.run(["make", "run"], cwd=ROOT, env=e2, capture_output=True, text=True, timeout=60)
            msg = (p.stdout + p.stderr)
            check(p.returncode == 2 and want in msg and time.time() - t0 < 10,
                  "a second make run on the same %s exits 2 at once naming it (rc %d, %.1f s): %s" %
                  (what, p.returncode, time.time() - t0, msg.strip().split("\n")[-2:]))

        # -- 5. Ctrl-C, then a restart on the same data and SIGTERM --
        pids = child_pids(run.text())
        launcher = int(open(os.path.join(data, ".lock")).read().strip() or 0)
        os.killpg(run.p.pid, signal.SIGINT)
        rc = run.wait(30)
        check(rc is not None, "Ctrl-C stops make run within 30 s")
        log = run.text()
        check(re.search(r"N launcher %d stopped" % launcher, log) is not None and "SIGKILL" not in log,
              "Ctrl-C: the launcher stopped every child cleanly")
        check(pids and not any(alive(x) for x in pids + [launcher]), "Ctrl-C: no process left (%s)" % pids)

        run = Run(env)
        m = run.read_until(rb"\nready [^\n]*\n", 90)
        check(m is not None, "make run starts again on the same DATA_DIR")
        g = subprocess.run(["curl", "-s", "http://localhost:%d/api/v2/presence/alice" % port], capture_output=True,
                           text=True, timeout=30)
        try:
            again = json.loads(g.stdout)["data"]["alice"]
            check(again["version"] > state.get("put", {}).get("version", 1) and again["status"] == "online"
                  and again.get("sessions") == 1 and again.get("message") == "In a meeting",
                  "the data in DATA_DIR (the record, its session) is kept for the next start")
        except (ValueError, KeyError):
            bad("GET alice after the restart: %s" % g.stdout[:200])
        launcher = int(open(os.path.join(data, ".lock")).read().strip() or 0)
        os.kill(launcher, signal.SIGTERM)
        rc = run.wait(30)
        check(rc == 0, "SIGTERM to the launcher: make run exits 0 (got %s)" % rc)
    finally:
        run.kill()

    # -- 6. variables named in the docs are real, and every real one is documented --
    known = set()
    for b in sorted(os.listdir(BIN)):
        p = subprocess.run([os.path.join(BIN, b), "--help"], capture_output=True, text=True, timeout=10)
        check(p.returncode == 0 and p.stdout.startswith("usage: " + b), "%s --help prints its usage, exit 0" % b)
        env_part = p.stdout.split("\nEnvironment (", 1)[1] if "\nEnvironment (" in p.stdout else ""
        known |= set(re.findall(r"^  ([A-Z][A-Z0-9_]+) ", env_part, re.M))
    p = subprocess.run([os.path.join(BIN, "presence-token"), "--help"], capture_output=True, text=True)
    check(re.search(r"[\w-]+\.[\w-]+\.[\w-]{20,}", p.stdout) is None, "presence-token --help mints no token")
    ours = re.compile(r"`((?:PRESENCE|RATE_LIMIT|CORS|CACHE|GATEWAY|STORE|SYNC|WS|JWT|SSE|RELAY|CENTER|CURVE|WEBHOOK|"
                      r"SERVICE|NODE|DATA|LOG|AUTH|MAX|REQUEST|RETENTION|TOUCH|TRUST|HTTP|SHUTDOWN|STOP|PROBE|TOKEN|"
                      r"ACCESS|METRICS|NOTIFIER|UI|NEAR)"
                      r"_?[A-Z0-9_]*)`")
    table = secs.get("Configuration", "")
    named = {v for v in ours.findall(table) if not v.endswith("_")}
    check(len(named) >= 10, "README's configuration table names variables (%d)" % len(named))
    check(named <= known, "README's configuration table names only real variables (not: %s)" % sorted(named - known))
    config = open(os.path.join(ROOT, "docs", "CONFIG.md")).read()
    cnamed = {v for v in ours.findall(config) if not v.endswith("_")}
    check(cnamed <= known, "docs/CONFIG.md names only real variables (not: %s)" % sorted(cnamed - known))
    check(known <= cnamed, "docs/CONFIG.md documents every variable (missing: %s)" % sorted(known - cnamed))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash of the test is a failure, never a silent pass
        bad("readme test crashed: %r" % (e,))
    print("test-readme: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed else 0)
