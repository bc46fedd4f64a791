#!/usr/bin/env python3
"""monitoring-check.py -- `make monitoring-check` (a step of `make test`): the metrics, the alert
rules and the Grafana dashboard, checked with Prometheus's own tools and a real Prometheus.

    BIN=build/bin tests/monitoring/monitoring-check.py

Checks, each counted:
  promtool-config      promtool check config compose/prometheus/prometheus.yml
  promtool-rules       promtool check rules compose/prometheus/alerts.yml
  promtool-test-rules  promtool test rules tests/monitoring/alerts_test.yml (alerts fire as meant)
  compose-monitoring   docker-compose --profile monitoring config: prometheus and grafana services,
                       every file they mount exists, Grafana's datasource uid is the dashboard's
  dashboard-json       the dashboard's structure (unique panel ids, targets, datasource, grid)
  live-node            a center node (presenced) with the notifier and a webhook receiver, traffic
  promtool-metrics     promtool check metrics on the live gateway's /metrics: no error, no lint
  metrics-documented   every family on the live /metrics is in a table of docs/METRICS.md
  prometheus-scrape    a real Prometheus (this machine's) scrapes the gateway every second
  dashboard-queries    every query of the dashboard (its variables substituted) evaluates without
                       error and returns data (except those that need a leaf region or 5xx answers)
  dashboard-variable   the dashboard's region variable finds the scraped region
  rules-loaded         alerts.yml loads into that Prometheus and every rule evaluates with health ok
  names-exist          every series name the dashboard and the rules use is on the live /metrics
                       (relay_* excepted: a leaf's)
A check that cannot run here (promtool, prometheus or docker-compose missing) prints
"skip NAME (skipped: ... missing)" and is counted as skipped, never as passed. Processes started
here are stopped by pid. Ends with "monitoring-check: N passed, N failed, N skipped".
"""
import http.server
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
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("BIN", os.path.join(ROOT, "build", "bin"))
COMPOSE = os.path.join(ROOT, "compose")
DASHBOARD = os.path.join(COMPOSE, "grafana", "dashboards", "presence.json")
ALERTS = os.path.join(COMPOSE, "prometheus", "alerts.yml")
SECRET = "monitoring-check-secret-0123456789abcdef"
passed = failed = skipped = 0


def ok(name, detail=""):
    global passed
    passed += 1
    print("ok   %s%s" % (name, ": " + detail if detail else ""))


def bad(name, detail=""):
    global failed
    failed += 1
    print("FAIL %s" % name)
    for line in str(detail).strip().splitlines()[-30:]:
        print("     " + line)


def skip(name, why):
    global skipped
    skipped += 1
    print("skip %s (skipped: %s)" % (name, why))


def check(name, cond, detail=""):
    (ok if cond else bad)(name, detail)
    return cond


def run(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def http_req(method, url, body=None, token=None, timeout=5.0):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(fn, seconds, step=0.1):
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            v = fn()
            if v:
                return v
        except Exception:
            pass
        time.sleep(step)  # polling with a deadline: the condition is checked, never assumed
    return None


def stop(proc, grace=10.0):
    """SIGTERM by pid, then SIGKILL after grace; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# ---- static checks -----------------------------------------------------------------------------

def dashboard_targets(d):
    out = []
    for p in d.get("panels", []):
        for t in p.get("targets", []):
            out.append((p.get("title", "?"), t.get("expr", "")))
    return out


def check_dashboard(d, ds_uid):
    problems = []
    ids = [p.get("id") for p in d.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    if not d.get("uid") or not d.get("title"):
        problems.append("no uid or title")
    for p in d.get("panels", []):
        g = p.get("gridPos", {})
        if not all(k in g for k in ("h", "w", "x", "y")) or g["x"] + g["w"] > 24:
            problems.append("panel %s: bad gridPos %s" % (p.get("title"), g))
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            problems.append("panel %s has no query" % p.get("title"))
        for t in [p] + p.get("targets", []):
            if t.get("datasource", {}).get("uid") != ds_uid:
                problems.append("panel %s: datasource is not %s" % (p.get("title"), ds_uid))
        for t in p.get("targets", []):
            if not t.get("expr"):
                problems.append("panel %s: empty query" % p.get("title"))
    return problems


def names_in(expr):
    """Series names an expression reads (identifiers before { or [ or a matcher, minus functions)."""
    funcs = {"sum", "max", "min", "rate", "increase", "histogram_quantile", "by", "on", "without", "changes",
             "count", "avg", "or", "and", "unless", "label_values", "scalar", "abs", "humanizePercentage"}
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{|\[)", expr):
        n = m.group(1)
        if n not in funcs:
            names.add(n)
    # bare names inside parentheses: max(store_queue_items / store_queue_max)
    for m in re.finditer(r"[(/]\s*([a-z_][a-z0-9_]*_(?:total|seconds|bytes|items|max|up|fds|lag_seconds|entries))\s*[)/]",
                         expr):
        names.add(m.group(1))
    return names


def substitute(expr):
    return expr.replace("$__rate_interval", "30s").replace("$__interval", "5s").replace('=~"$region"', '=~".*"')


# ---- the live node -----------------------------------------------------------------------------

class Receiver:
    """A webhook receiver answering 200; counts the events."""

    def __init__(self):
        self.events = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                try:
                    outer.events += len(json.loads(body))
                except ValueError:
                    pass
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def start_node(tmp, receiver):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATA_DIR": os.path.join(tmp, "data"),
           "SERVICE_ADDR": "127.0.0.1", "SERVICE_PORT": "0", "JWT_SECRET": SECRET, "CACHE_NODES": "2",
           "WEBHOOK_URLS": "http://127.0.0.1:%d/hook" % receiver.port, "WEBHOOK_SECRETS": "monitoring-0123456789abcdef",
           "WEBHOOK_DEBOUNCE_MS": "0", "LOG_LEVEL": "warn"}
    out = open(os.path.join(tmp, "presenced.log"), "w")
    p = subprocess.Popen([os.path.join(BIN, "presenced")], env=env, stdout=subprocess.PIPE, stderr=out, text=True)
    port = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        m = re.match(r"ready http=[^ ]*:(\d+) ", line)
        if m:
            port = int(m.group(1))
            break
    return p, port, env


def token(env, sub, scope=""):
    r = run([os.path.join(BIN, "presence-token"), sub] + ([scope] if scope else []), env=env)
    return r.stdout.strip().splitlines()[-1] if r.returncode == 0 else ""


def traffic(port, env, n):
    """Writes (statuses, sessions), reads, a 404 and a 401: every kind of series gets samples."""
    base = "http://127.0.0.1:%d" % port
    for i in range(n):
        uid = "mon%02d" % (i % 8)
        t = token(env, uid)
        http_req("PUT", base + "/api/v2/presence/" + uid, {"status": ["online", "away", "busy"][i % 3]}, t)
        http_req("PUT", base + "/api/v2/presence/" + uid,
                 {"status": "online", "session": "s%d" % (i % 2), "device": "desk", "ttl": 60}, t)
        http_req("GET", base + "/api/v2/presence/" + uid)
        http_req("GET", base + "/api/v2/presence?users=mon00,mon01,nobody")
    http_req("GET", base + "/api/v2/presence/nobody-here")
    http_req("PUT", base + "/api/v2/presence/mon00", {"status": "online"}, "not-a-token")


def main():
    promtool, prometheus, compose = shutil.which("promtool"), shutil.which("prometheus"), shutil.which("docker-compose")
    print("=== monitoring-check")
    # -- static ---------------------------------------------------------------------------------
    if promtool:
        r = run([promtool, "check", "config", os.path.join(COMPOSE, "prometheus", "prometheus.yml")])
        check("promtool-config", r.returncode == 0, "valid, its rule file found" if r.returncode == 0 else r.stdout)
        r = run([promtool, "check", "rules", ALERTS])
        check("promtool-rules", r.returncode == 0, r.stdout.strip().splitlines()[-1] if r.returncode == 0 else r.stdout)
        r = run([promtool, "test", "rules", "alerts_test.yml"], cwd=os.path.dirname(os.path.abspath(__file__)))
        check("promtool-test-rules", r.returncode == 0, "every expected alert fired" if r.returncode == 0 else r.stdout)
    else:
        for n in ("promtool-config", "promtool-rules", "promtool-test-rules"):
            skip(n, "promtool missing (Debian package prometheus)")
    with open(DASHBOARD) as f:
        dash = json.load(f)
    ds = os.path.join(COMPOSE, "grafana", "provisioning", "datasources", "prometheus.yml")
    ds_uid = re.search(r"^\s*uid:\s*(\S+)", open(ds).read(), re.M).group(1)
    problems = check_dashboard(dash, ds_uid)
    check("dashboard-json", not problems, "%d panels, %d queries" % (len(dash["panels"]), len(dashboard_targets(dash)))
          if not problems else "\n".join(problems))
    if compose:
        tmpc = tempfile.mkdtemp(prefix="moncheck-compose-")
        envf = os.path.join(tmpc, "env")
        open(envf, "w").write("JWT_SECRET=0123456789abcdef0123456789abcdef\n")
        r = run([compose, "-f", os.path.join(COMPOSE, "docker-compose.yml"), "--env-file", envf, "--profile", "monitoring",
                 "config"], env={"PATH": os.environ.get("PATH", ""), "PRESENCE_SECRETS_DIR": os.path.join(tmpc, "s")})
        shutil.rmtree(tmpc, ignore_errors=True)
        problems = []
        if r.returncode != 0:
            problems.append(r.stdout)
        else:
            import yaml  # python3-yaml: installed by make deploy-tools; Debian's docker-compose depends on it
            cfg = yaml.safe_load(r.stdout)
            svcs = cfg.get("services", {})
            for s in ("prometheus", "grafana"):
                if s not in svcs:
                    problems.append("no %s service" % s)
                    continue
                if svcs[s].get("profiles") != ["monitoring"]:
                    problems.append("%s is not in the monitoring profile only" % s)
                for v in svcs[s].get("volumes", []):
                    src = v.get("source", "") if isinstance(v, dict) else v.split(":")[0]
                    if src.startswith("/") and not os.path.exists(src):
                        problems.append("%s mounts %s, which does not exist" % (s, src))
            cmd = " ".join(svcs.get("prometheus", {}).get("command", []))
            if "--config.file=/etc/prometheus/prometheus.yml" not in cmd:
                problems.append("prometheus does not read /etc/prometheus/prometheus.yml")
        check("compose-monitoring", not problems, "prometheus and grafana, mounts present" if not problems
              else "\n".join(problems))
    else:
        skip("compose-monitoring", "docker-compose missing")

    # -- live -----------------------------------------------------------------------------------
    tmp = tempfile.mkdtemp(prefix="moncheck-")
    receiver = Receiver()
    node = prom = None
    try:
        node, port, env = start_node(tmp, receiver)
        if not check("live-node", port is not None, "presenced with the notifier on 127.0.0.1:%s" % port):
            bad("live-node-log", open(os.path.join(tmp, "presenced.log")).read()[-3000:])
            return
        traffic(port, env, 24)
        base = "http://127.0.0.1:%d" % port
        # the notifier's numbers (delivered events) reach the gateway's /metrics
        wait_for(lambda: re.search(r"\nnotifier_webhook_delivered_events_total\{target=\"0\"\} [1-9]",
                                   http_get(base + "/metrics")[1]), 15)
        st, text = http_get(base + "/metrics")
        families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            check("promtool-metrics", r.returncode == 0 and not r.stdout.strip(),
                  "%d families, %d lines, no lint" % (len(families), text.count("\n")) if r.returncode == 0 and
                  not r.stdout.strip() else r.stdout)
        else:
            skip("promtool-metrics", "promtool missing (Debian package prometheus)")
        doc = open(os.path.join(ROOT, "docs", "METRICS.md")).read()
        documented = set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \| (?:counter|gauge|histogram) \|", doc, re.M))
        missing = sorted(f for f in families if f not in documented)
        check("metrics-documented", not missing and documented,
              "%d families documented" % len(documented) if not missing else "not in docs/METRICS.md: %s" % missing)
        if not prometheus:
            for n in ("prometheus-scrape", "dashboard-queries", "dashboard-variable", "rules-loaded"):
                skip(n, "prometheus missing (Debian package prometheus)")
        else:
            pport = free_port()
            pdir = os.path.join(tmp, "prom")
            os.makedirs(pdir)
            with open(os.path.join(pdir, "prometheus.yml"), "w") as f:
                f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                        "rule_files: ['%s']\n"
                        "scrape_configs:\n"
                        "  - job_name: presence\n"
                        "    static_configs:\n"
                        "      - targets: ['127.0.0.1:%d']\n"
                        "        labels: {region: center}\n" % (ALERTS, port))
            plog = open(os.path.join(tmp, "prometheus.log"), "w")
            prom = subprocess.Popen([prometheus, "--config.file=" + os.path.join(pdir, "prometheus.yml"),
                                     "--storage.tsdb.path=" + os.path.join(pdir, "data"),
                                     "--web.listen-address=127.0.0.1:%d" % pport], stdout=plog, stderr=plog)
            papi = "http://127.0.0.1:%d" % pport

            def query(q):
                st, body = http_get(papi + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
                return json.loads(body)

            ready = wait_for(lambda: http_get(papi + "/-/ready")[0] == 200, 30)
            # 12 scrapes of the node while traffic goes on: rates over 30s have samples
            t_end = time.monotonic() + 40

            def scraped():
                traffic(port, env, 2)
                r = query('count_over_time(up{job="presence"}[1m])')
                return r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 12 and \
                    time.monotonic() < t_end
            enough = ready and wait_for(scraped, 40, step=0.5)
            upv = query('up{job="presence"}')["data"]["result"] if ready else []
            if not check("prometheus-scrape", enough and upv and upv[0]["value"][1] == "1",
                         "Prometheus %s scraped the gateway (up=1, >= 12 scrapes)" % run([prometheus, "--version"]).stdout.split()[2]
                         if enough else open(os.path.join(tmp, "prometheus.log")).read()[-2000:]):
                return
            empty_ok = re.compile(r'relay_|code=~"5\.\."')
            problems, nonempty = [], 0
            for title, expr in dashboard_targets(dash):
                q = substitute(expr)
                r = query(q)
                if r.get("status") != "success":
                    problems.append("%s: %s: %s" % (title, q, r.get("error")))
                elif not r["data"]["result"] and not empty_ok.search(expr):
                    problems.append("%s: no data: %s" % (title, q))
                else:
                    nonempty += bool(r["data"]["result"])
            check("dashboard-queries", not problems,
                  "%d queries evaluated, %d with data (the rest need a leaf region or 5xx answers)" %
                  (len(dashboard_targets(dash)), nonempty) if not problems else "\n".join(problems))
            var = dash["templating"]["list"][0]
            label = re.search(r"label_values\([^,]+,\s*(\w+)\)", var["query"]["query"]).group(1)
            st, body = http_get(papi + "/api/v1/label/%s/values" % label)
            check("dashboard-variable", "center" in json.loads(body)["data"],
                  "%s values: %s" % (label, json.loads(body)["data"]))

            def rules_evaluated():
                st, body = http_get(papi + "/api/v1/rules")
                groups = json.loads(body)["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None
            rules = wait_for(rules_evaluated, 20, step=0.5) or []
            sick = ["%s: %s %s" % (r["name"], r.get("health"), r.get("lastError", "")) for r in rules if r.get("health") != "ok"]
            check("rules-loaded", rules and not sick, "%d rules evaluated, all healthy" % len(rules) if rules and not sick
                  else "\n".join(sick) or "no rules loaded")
        # every name the dashboard and the rules read is on the live /metrics (relay_*: a leaf's)
        series = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
        used = set()
        for _, expr in dashboard_targets(dash):
            used |= names_in(expr)
        for expr in re.findall(r"expr:\s*\|?\s*\n?\s*(.+?)\n\s+(?:for|labels):", open(ALERTS).read(), re.S):
            used |= names_in(expr)
        unknown = sorted(n for n in used if n not in series and n != "up" and not n.startswith("relay_"))
        check("names-exist", not unknown and used, "%d names used by the dashboard and the rules" % len(used)
              if not unknown else "not on /metrics: %s" % unknown)
    finally:
        if prom:
            stop(prom)
        if node:
            rc = stop(node, 20)
            check("clean-stop", rc == 0, "presenced exit %s" % rc if rc == 0 else open(os.path.join(tmp, "presenced.log")).read()[-2000:])
        receiver.stop()
        if failed == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("logs kept in %s" % tmp)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash is a failure, never a silent pass
        bad("monitoring-check crashed", repr(e))
    print("monitoring-check: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed else 0)
