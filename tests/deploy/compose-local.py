#!/usr/bin/env python3
"""compose-local.py -- run compose/docker-compose.yml on this machine, without Docker, and smoke-test it.

    compose-local.py --bin build/bin [--compose compose/docker-compose.yml] [--also OVERRIDE.yml]...
                     [--profile NAME]... [--keep]

What it does, so that the compose file cannot drift from what works:
  1. makes the file's secrets with compose/gen-secrets.sh (CurveZMQ keys from presence-keygen, a
     JWT_SECRET) in a temporary directory, and takes the normalised file from `docker-compose
     config` (interpolation, anchors and merges resolved exactly as Compose does);
  2. maps the containers onto loopback: every (service, port in its `expose`) gets a free port
     (a run of consecutive exposed ports keeps its order, so CENTER_PORT's P+1 stays P+1), and in
     every environment value and command or healthcheck argument, tcp:// and http:// endpoints
     whose host is a service name, or a local or wildcard address (0.0.0.0, *, 127.0.0.1,
     localhost, [::], [::1]), become 127.0.0.1:<mapped P>; *_PORT variables are
     mapped the same way; named-volume mount points become directories under the temporary
     directory, /run/secrets/<name> the secret's file. Anything left pointing at a service name,
     a port that is not exposed, or a container path is an error: the file must follow these
     conventions. Two loopback overrides are added (SERVICE_ADDR, CENTER_BIND_ADDR = 127.0.0.1)
     so nothing listens beyond this machine;
  3. starts each service's `command` (argv[0] must be a binary the Dockerfile ships; it is taken
     from --bin) with exactly its `environment`, in depends_on order, and after each one runs the
     service's own healthcheck command (presence-probe, told the role with PRESENCE_ROLE since it
     is not PID 1 here) until it passes, as `condition: service_healthy` makes Compose do;
  4. smoke test across the regions: health routes, a JWT-authenticated write at the center seen
     at the center and then at both leaves, a write at a leaf seen at the center and the other
     leaf, an unauthenticated write refused;
  5. stops every process it started, by pid (SIGTERM, then SIGKILL after a grace period).

Services with `profiles` run only when one of their profiles is given with --profile, as Compose
does. With --profile webhooks, a webhook receiver is started here first; WEBHOOK_URLS is
http://webhook-receiver:8000/hook when the file is normalised, and that address is mapped to the
receiver; the smoke test then also requires the writes' events at the receiver, each batch signed
(X-Presence-Signature) with the secret gen-secrets.sh made.

Prints one line per check and ends with "compose-local: N passed, N failed".
"""
import argparse
import hashlib
import hmac
import http.server as http_server
import json
import os
import re
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

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Fail(Exception):
    pass


def dockerfile_bins(path):
    with open(path, encoding="utf-8") as f:
        m = re.search(r'^ARG PRESENCE_BINS="([^"]*)"', f.read(), re.M)
    if not m:
        raise Fail("%s: no ARG PRESENCE_BINS line" % path)
    return m.group(1).split()


# ---- port allocation ---------------------------------------------------------------------------

def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def alloc_run(n, taken):
    """n consecutive free loopback ports, none in `taken`."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        ports = list(range(base, base + n))
        if ports[-1] < 65535 and not taken.intersection(ports) and all(_bindable(p) for p in ports):
            taken.update(ports)
            return base
    raise Fail("no run of %d free loopback ports" % n)


def map_ports(services):
    taken, mapping = set(), {}
    for name in sorted(services):
        exposed = sorted({int(str(p).split("/")[0]) for p in services[name].get("expose", [])})
        runs = []
        for p in exposed:
            if runs and runs[-1][-1] == p - 1:
                runs[-1].append(p)
            else:
                runs.append([p])
        for run in runs:
            base = alloc_run(len(run), taken)
            for i, p in enumerate(run):
                mapping[(name, p)] = base + i
    return mapping


# ---- rewriting -----------------------------------------------------------------------------------

class Mapper:
    def __init__(self, services, secrets, ports, tmp, external=None):
        self.services = services
        self.ports = ports
        self.external = external or {}  # (host, port) outside the file -> local port
        self.secret_files = {k: v.get("file") for k, v in (secrets or {}).items()}
        self.tmp = tmp

    def port(self, svc, p, what):
        try:
            return self.ports[(svc, int(p))]
        except KeyError:
            raise Fail("%s uses port %s of %s, which %s does not list in expose" % (what, p, svc, svc))

    def paths(self, svc):
        """Container path -> local path, for this service's volumes and secrets."""
        out = {}
        for v in self.services[svc].get("volumes", []) or []:
            if isinstance(v, dict):
                src, dst, typ = v.get("source"), v.get("target"), v.get("type", "volume")
            else:
                parts = str(v).split(":")
                src, dst, typ = parts[0], parts[1] if len(parts) > 1 else parts[0], "volume"
            if typ == "volume" and src:
                local = os.path.join(self.tmp, "volumes", "%s-%s" % (svc, src))
            elif typ == "bind":
                local = src
            else:
                raise Fail("%s: volume %r is neither a named volume nor a bind mount" % (svc, v))
            os.makedirs(local, exist_ok=True)
            out[dst] = local
        for s in self.services[svc].get("secrets", []) or []:
            src = s["source"] if isinstance(s, dict) else s
            dst = (s.get("target") if isinstance(s, dict) else None) or src
            if not dst.startswith("/"):
                dst = "/run/secrets/" + dst
            f = self.secret_files.get(src)
            if not f:
                raise Fail("%s: secret %s has no file" % (svc, src))
            out[dst] = f
        return out

    def value(self, svc, key, val, what):
        val = str(val)
        if key and key.endswith("_PORT") and re.fullmatch(r"\d+", val):
            return str(self.port(svc, val, "%s %s" % (what, key)))

        def endpoint(m):
            scheme, host, p = m.group(1), m.group(2), m.group(3)
            if (host, int(p)) in self.external:
                return "%s://127.0.0.1:%d" % (scheme, self.external[(host, int(p))])
            if host in self.services:
                target = host
            elif host in ("0.0.0.0", "*", "127.0.0.1", "localhost", "[::]", "[::1]"):
                target = svc
            else:
                raise Fail("%s of %s: %s://%s:%s is neither a service nor a local address" % (key or what, svc, scheme, host, p))
            return "%s://127.0.0.1:%d" % (scheme, self.port(target, p, "%s of %s" % (key or what, svc)))

        val = re.sub(r"\b(tcp|http)://([A-Za-z0-9._*-]+|\[[0-9a-fA-F:]*\]):(\d+)", endpoint, val)
        for dst, local in sorted(self.paths(svc).items(), key=lambda kv: -len(kv[0])):
            if val == dst or val.startswith(dst + "/"):
                val = local + val[len(dst):]
        for other in self.services:
            if re.search(r"(?<![\w.-])%s(?![\w.-])" % re.escape(other), val) and key not in ("CACHE_ID", "NODE_ID"):
                raise Fail("%s of %s still names service %s after mapping: %s" % (key or what, svc, other, val))
        if re.match(r"^(/var/lib/presence|/run/secrets)(/|$)", val):
            raise Fail("%s of %s is a container path with no volume or secret behind it: %s" % (key or what, svc, val))
        return val


# ---- processes -----------------------------------------------------------------------------------

class Runner:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []  # (name, Popen, log path)

    def start(self, name, argv, env):
        log = os.path.join(self.tmp, "logs", name + ".log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        f = open(log, "wb")
        p = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=self.tmp, start_new_session=True)
        f.close()
        self.procs.append((name, p, log))
        return p

    def tail(self, name, n=15):
        for nm, _, log in self.procs:
            if nm == name:
                with open(log, "rb") as f:
                    return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        return ""

    def stop_all(self, grace=10.0):
        for name, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    print("  %s (pid %d) ignored SIGTERM for %.0f s: SIGKILL" % (name, p.pid, grace))
                    p.kill()
                    p.wait()
        bad = [(n, p.returncode) for n, p, _ in self.procs if p.returncode not in (0, -signal.SIGTERM)]
        return bad


class Receiver:
    """A webhook receiver: answers 200 to every POST and keeps (signature header, body)."""

    def __init__(self):
        self.got = []
        lock = self.lock = threading.Lock()
        got = self.got

        class Handler(http_server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with lock:
                    got.append((self.headers.get("X-Presence-Signature", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self):
        with self.lock:
            batches = list(self.got)
        return batches

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def topo(services):
    order, seen = [], set()

    def visit(n, stack):
        if n in seen:
            return
        if n in stack:
            raise Fail("depends_on cycle through %s" % n)
        deps = services[n].get("depends_on") or {}
        for d in (deps if isinstance(deps, (list, dict)) else []):
            if d not in services:
                raise Fail("%s depends on unknown service %s" % (n, d))
            visit(d, stack | {n})
        seen.add(n)
        order.append(n)

    for n in sorted(services):
        visit(n, set())
    return order


def http(method, url, body=None, token=None, timeout=5.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def poll(fn, deadline_s):
    """Call fn() until it returns a true value or the deadline passes; returns the last value."""
    end = time.monotonic() + deadline_s
    while True:
        v = fn()
        if v or time.monotonic() >= end:
            return v
        time.sleep(0.05)  # polling interval between checks of a condition with a deadline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory with the built binaries")
    ap.add_argument("--compose", default=os.path.join(ROOT, "compose", "docker-compose.yml"))
    ap.add_argument("--also", action="append", default=[],
                    help="an override file applied on top (docker-compose -f COMPOSE -f ALSO ...)")
    ap.add_argument("--docker-compose", default="docker-compose")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--profile", action="append", default=[], help="also run the services of this profile")
    a = ap.parse_args()
    bindir = os.path.abspath(a.bin)
    results = []

    def check(name, ok, detail=""):
        results.append(bool(ok))
        print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""))
        return ok

    tmp = tempfile.mkdtemp(prefix="presence-compose-")
    runner = Runner(tmp)
    receiver = Receiver() if "webhooks" in a.profile else None
    try:
        shipped = dockerfile_bins(os.path.join(os.path.dirname(a.compose), "Dockerfile"))
        # 1. secrets and the normalised file
        secrets_dir, env_file = os.path.join(tmp, "secrets"), os.path.join(tmp, "env")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PRESENCE_SECRETS_DIR": secrets_dir,
               "PRESENCE_ENV_FILE": env_file}
        external = {}
        if receiver:
            env["WEBHOOK_URLS"] = "http://webhook-receiver:8000/hook"
            env["GATEWAY_NOTIFIER_ENDPOINT"] = "tcp://notifier:7020"  # the notifier's numbers on /metrics
            external[("webhook-receiver", 8000)] = receiver.port
        gen = subprocess.run([os.path.join(os.path.dirname(a.compose), "gen-secrets.sh"),
                              os.path.join(bindir, "presence-keygen")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not check("gen-secrets.sh", gen.returncode == 0, gen.stdout.strip().splitlines()[-1] if gen.stdout else ""):
            raise Fail(gen.stdout)
        with open(env_file, encoding="utf-8") as f:
            jwt = re.search(r"^JWT_SECRET=(.+)$", f.read(), re.M).group(1)
        files = [x for f in [a.compose] + a.also for x in ("-f", f)]
        profiles = [x for p in a.profile for x in ("--profile", p)]
        cfg = subprocess.run([a.docker_compose] + files + ["--env-file", env_file] + profiles + ["config"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not check("docker-compose config", cfg.returncode == 0, cfg.stderr.strip()[-300:]):
            raise Fail("docker-compose config failed")
        conf = yaml.safe_load(cfg.stdout)
        # As Compose: a service with profiles runs only when one of them is asked for.
        services = {n: v for n, v in conf["services"].items()
                    if not v.get("profiles") or set(v["profiles"]) & set(a.profile)}
        skipped = sorted(set(conf["services"]) - set(services))
        if skipped:
            print("     not started (profiles not asked for): %s" % ", ".join(skipped))

        # 2. mapping
        ports = map_ports(services)
        mapper = Mapper(services, conf.get("secrets"), ports, tmp, external)
        plan = {}
        for name, svc in services.items():
            cmd = svc.get("command")
            if isinstance(cmd, str):
                cmd = cmd.split()
            if not cmd or svc.get("entrypoint"):
                raise Fail("%s: needs an exec-form command and no entrypoint" % name)
            if cmd[0] not in shipped:
                raise Fail("%s: command %s is not a binary the Dockerfile ships (%s)" % (name, cmd[0], " ".join(shipped)))
            senv = {k: mapper.value(name, k, v, "environment") for k, v in (svc.get("environment") or {}).items()}
            senv.update({"SERVICE_ADDR": "127.0.0.1", "CENTER_BIND_ADDR": "127.0.0.1"})
            argv = [os.path.join(bindir, cmd[0])] + [mapper.value(name, None, x, "command") for x in cmd[1:]]
            hc = (svc.get("healthcheck") or {}).get("test")
            if not hc or hc[0] not in ("CMD", "CMD-SHELL") or hc == ["NONE"]:
                raise Fail("%s: needs a healthcheck (CMD form)" % name)
            if hc[0] == "CMD":
                if hc[1] not in shipped:
                    raise Fail("%s: healthcheck runs %s, which the image does not ship" % (name, hc[1]))
                probe = [os.path.join(bindir, hc[1])] + [mapper.value(name, None, x, "healthcheck") for x in hc[2:]]
            else:
                probe = ["/bin/sh", "-c", mapper.value(name, None, hc[1], "healthcheck")]
            plan[name] = (argv, senv, probe, cmd[0])
        check("mapping", True, "%d services, %d ports (%s)" % (
            len(services), len(ports), ", ".join("%s:%d->%d" % (s, p, m) for (s, p), m in sorted(ports.items()))))

        # 3. start in depends_on order, each healthy before its dependents
        for name in topo(services):
            argv, senv, probe, role = plan[name]
            p = runner.start(name, argv, senv)
            penv = dict(senv, PRESENCE_ROLE=role)
            t0 = time.monotonic()
            last = [None]

            def healthy():
                if p.poll() is not None:
                    return "exited"
                r = subprocess.run(probe, env=penv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                last[0] = r.stdout.strip()
                return r.returncode == 0

            ok = poll(healthy, 30.0)
            ok = ok is True
            check("%s healthy" % name, ok, "pid %d, %.1f s" % (p.pid, time.monotonic() - t0) if ok else
                  "%s; probe said: %s\n%s" % ("process exited %s" % p.returncode if p.poll() is not None else "timeout",
                                              last[0], runner.tail(name)))
            if not ok:
                raise Fail("%s never became healthy" % name)

        # 4. smoke test
        def url(svc, path):
            return "http://127.0.0.1:%d%s" % (ports[(svc, 8080)], path)

        gateways = sorted(n for n in services if plan[n][3] == "gateway")
        center = [g for g in gateways if services[g]["environment"].get("NODE_TYPE") == "center"]
        leaves = [g for g in gateways if services[g]["environment"].get("NODE_TYPE") == "leaf"]
        check("regions", len(center) == 1 and len(leaves) >= 2, "center %s, leaves %s" % (center, leaves))
        for g in gateways:
            for path in ("/health/liveness", "/health/readiness", "/health/store", "/health/cache"):
                st, body = http("GET", url(g, path))
                check("%s GET %s" % (g, path), st == 200, "%d %s" % (st, body[:120]))

        def token(sub):
            r = subprocess.run([os.path.join(bindir, "presence-token"), sub],
                               env={"JWT_SECRET": jwt, "PATH": env["PATH"]},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise Fail("presence-token: %s" % r.stderr)
            return r.stdout.strip().splitlines()[-1]

        c = center[0]
        msg = "compose smoke %d" % os.getpid()
        st, body = http("PUT", url(c, "/api/v2/presence/alice"),
                        {"status": "busy", "message": msg, "ttl": 600}, token("alice"))
        check("PUT alice at %s" % c, st == 200 and '"busy"' in body, "%d %s" % (st, body[:160]))
        st, body = http("GET", url(c, "/api/v2/presence/alice"))
        check("GET alice at %s" % c, st == 200 and msg in body, "%d %s" % (st, body[:160]))
        for g in leaves:
            def seen(g=g):
                st, body = http("GET", url(g, "/api/v2/presence/alice"))
                return st == 200 and msg in body
            check("alice reaches %s" % g, poll(seen, 10.0))
        w = leaves[0]
        st, body = http("PUT", url(w, "/api/v2/presence/bob"),
                        {"status": "away", "message": msg, "ttl": 600}, token("bob"))
        check("PUT bob at %s (forwarded to the center)" % w, st == 200 and '"away"' in body, "%d %s" % (st, body[:160]))
        for g in [c] + leaves[1:]:
            def seen_bob(g=g):
                st, body = http("GET", url(g, "/api/v2/presence/bob"))
                return st == 200 and '"away"' in body
            check("bob reaches %s" % g, poll(seen_bob, 10.0))
        st, body = http("PUT", url(c, "/api/v2/presence/carol"), {"status": "online"})
        check("PUT without a token refused", st == 401, "%d %s" % (st, body[:120]))
        notifiers = [n for n in services if plan[n][3] == "notifier"]
        if receiver:
            check("notifier in the webhooks profile", len(notifiers) == 1, ", ".join(notifiers))
            with open(os.path.join(secrets_dir, "webhook-secrets"), "rb") as f:
                wsecret = f.read().strip()

            def webhook_events():
                out = {}
                for sig, body in receiver.events():
                    m = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", sig)
                    want = hmac.new(wsecret, (m.group(1) + ".").encode() + body, hashlib.sha256).hexdigest() if m else ""
                    for ev in json.loads(body):
                        out[(ev["user_id"], ev["type"])] = (ev, bool(m) and hmac.compare_digest(want, m.group(2)))
                return out

            def has_events():
                got = webhook_events()
                return ("alice", "online") in got and ("bob", "online") in got

            poll(has_events, 15.0)
            got = webhook_events()
            for user, status in (("alice", "busy"), ("bob", "away")):
                ev, signed = got.get((user, "online"), (None, False))
                check("webhook: %s online (%s) at the receiver, signed" % (user, status),
                      ev is not None and signed and ev["record"]["status"] == status and ev["previous_status"] == "offline",
                      json.dumps(ev)[:200] if ev else "not received; got %s" % sorted(got))
        st, body = http("GET", url(c, "/metrics"))
        check("GET /metrics at %s" % c, st == 200 and "store_" in body, "%d" % st)
        if receiver:
            def notifier_on_metrics():
                st2, body2 = http("GET", url(c, "/metrics"))
                return st2 == 200 and "\nnotifier_up 1\n" in body2 and "\nnotifier_live 1\n" in body2
            check("the notifier's numbers on %s's /metrics (GATEWAY_NOTIFIER_ENDPOINT)" % c, poll(notifier_on_metrics, 10.0))

        # every process must still be running
        for name, p, _ in runner.procs:
            check("%s still running" % name, p.poll() is None, "" if p.poll() is None else runner.tail(name))
    except Fail as e:
        check("compose-local", False, str(e))
    except Exception as e:  # a bug here must still end with a summary and stop the processes
        check("compose-local", False, "%s: %s" % (type(e).__name__, e))
    finally:
        bad = runner.stop_all()
        if receiver:
            receiver.stop()
        check("clean stop (SIGTERM, exit 0)", not bad, ", ".join("%s=%s" % b for b in bad))
        if a.keep or not all(results):
            print("logs kept in %s/logs" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(results)
    print("compose-local: %d passed, %d failed" % (passed, len(results) - passed))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
