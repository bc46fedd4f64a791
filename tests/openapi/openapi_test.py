#!/usr/bin/env python3
"""openapi_test.py -- make test-openapi: docs/openapi.yaml is linted, and matches the gateway.

1. lint: Redocly CLI (the npm package pinned in tests/openapi/npm/package-lock.json, installed
   without npm by tests/deploy/npm-fetch.py) with tests/openapi/redocly.yaml; the document must
   lint clean.
2. the linter bites: a copy of the document with a dangling $ref must fail the lint (a linter that
   passes everything would make step 1 worthless).
3. routes: every (method, path) the gateway's route table serves is in the document and vice
   versa. gateway_routes() is the one function that knows where the table is (adapt it when the
   table moves). Routes of REALTIME.md and issue 16 that the gateway does not serve yet (PENDING)
   are reported "skip" while absent from its table, and checked like every other once present.

Prints "ok"/"FAIL"/"skip ..." per check and "test-openapi: N passed, N failed, N skipped".
Environment: REDOCLY (the CLI's bin/cli.js; without it the lint checks are skipped and say why),
NODE (default node).
"""
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPEC = os.path.join(ROOT, "docs", "openapi.yaml")
HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("get", "head", "put", "post", "delete", "patch", "options")

# Routes the document describes that the gateway is still being given (REALTIME.md sessions and
# WebSocket routes; the page, the document itself and the dev token of issue 16).
PENDING = {
    ("GET", "/api/v2/presence/{}/sessions"),
    ("DELETE", "/api/v2/presence/{}/sessions/{}"),
    ("GET", "/api/v2/presence/connect"),
    ("GET", "/"),
    ("GET", "/ui/{}"),
    ("GET", "/api/v2/openapi.yaml"),
    ("POST", "/api/v2/dev/token"),
}

passed = failed = skipped = 0


def ok(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok   %s" % name)
    else:
        failed += 1
        print("FAIL %s%s" % (name, (": " + detail) if detail else ""))


def skip(name, why):
    global skipped
    skipped += 1
    print("skip test-openapi: %s (%s)" % (name, why))


def norm(path):
    """/api/v2/presence/{user_id} and /ui/* alike: every parameter becomes {}."""
    path = path.split("?")[0]
    return re.sub(r"\{[^}]*\}|\*", "{}", path)


def gateway_routes(root=ROOT):
    """The (METHOD, path) pairs the gateway serves, from gateway/gw_http.c.

    Today the route table is two pieces of gw_http.c: the header comment maps paths to metric
    labels ("path  methods  auth  label" rows; "a, b" lists two paths, their labels in the same
    order), and the s_routes[] initializer maps each label to its method set (M(GW_M_GET) | ...),
    which is what the code enforces (405 otherwise). OPTIONS (CORS) is accepted everywhere and is
    not listed. When the gateway's documented route table moves (gw_routes.c), adapt this function
    only: it must return {("GET", "/api/v2/presence/{}"), ...} with parameters written {}.
    """
    src = open(os.path.join(root, "gateway", "gw_http.c")).read()
    head = src[src.index("Route table"):src.index("(reads* =")]
    label_paths = {}
    for line in head.splitlines()[1:]:
        line = line.lstrip(" *")
        if not line.startswith("/"):
            continue
        first = re.match(r"/[^\s,]*(?:,\s*/[^\s,]*)*", line).group(0)  # "a, b" lists paths
        paths = [p.strip() for p in re.sub(r"\?\S*", "", first).split(",")]
        labels = [l.strip() for l in re.search(r"[a-z][a-z.]*(?:,\s*[a-z][a-z.]*)*\s*$", line).group(0).split(",")]
        if len(paths) != len(labels):
            raise SystemExit("gateway_routes: cannot pair paths %s with labels %s" % (paths, labels))
        for p, l in zip(paths, labels):
            label_paths[l] = norm(p)
    table = src[src.index("s_routes[GW_R_COUNT] = {"):]
    table = table[:table.index("};")]
    routes = set()
    for label, methods in re.findall(r'\{"([a-z.]+)",\s*((?:M\(GW_M_[A-Z]+\)\s*\|?\s*)+|0)', table):
        if label == "notfound":
            continue
        if label not in label_paths:
            raise SystemExit("gateway_routes: label %s of s_routes[] has no path in the comment" % label)
        for m in re.findall(r"GW_M_([A-Z]+)", methods):
            routes.add((m, label_paths[label]))
    return routes


def spec_routes(doc):
    routes = set()
    for path, item in doc["paths"].items():
        for m in METHODS:
            if m in item:
                routes.add((m.upper(), norm(path)))
    return routes


def lint(redocly, node, spec, name, expect_ok):
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true", NO_COLOR="1")
    p = subprocess.run([node, redocly, "lint", "--config", "redocly.yaml", os.path.relpath(spec, HERE)],
                       cwd=HERE, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    good = p.returncode == 0 and "Your API description is valid" in out
    if expect_ok:
        ok(good, name, "\n" + "\n".join(l for l in out.splitlines() if l.strip() and "║" not in l)[-3000:])
    else:
        ok(not good, name, "the broken copy linted clean:\n" + out[-1500:])


def main():
    doc = yaml.safe_load(open(SPEC))
    redocly = os.environ.get("REDOCLY", "")
    node = os.environ.get("NODE", "node")
    if not redocly or not os.path.isfile(redocly):
        skip("lint docs/openapi.yaml", "Redocly CLI not installed (make openapi-tools: the npm registry is needed once)")
        skip("the linter refuses a broken copy", "Redocly CLI not installed")
    else:
        v = subprocess.run([node, "-e", "const [a,b]=process.versions.node.split('.').map(Number);"
                            "process.exit(a>=22||(a===20&&b>=19)?0:1)"]).returncode
        if v != 0:
            why = "Redocly CLI needs node 20.19+ or 22.12+, this is %s" % subprocess.run(
                [node, "--version"], capture_output=True, text=True).stdout.strip()
            skip("lint docs/openapi.yaml", why)
            skip("the linter refuses a broken copy", why)
        else:
            lint(redocly, node, SPEC, "lint docs/openapi.yaml (Redocly recommended rules)", True)
            text = open(SPEC).read().replace("$ref: '#/components/schemas/Record'\n",
                                             "$ref: '#/components/schemas/NoSuchRecord'\n", 1)
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=HERE, delete=False) as f:
                f.write(text)
            try:
                lint(redocly, node, f.name, "the linter refuses a copy with a dangling $ref", False)
            finally:
                os.unlink(f.name)

    gw = gateway_routes()
    sp = spec_routes(doc)
    for m, p in sorted(gw):
        ok((m, p) in sp, "gateway route %s %s is in docs/openapi.yaml" % (m, p))
    for m, p in sorted(sp - gw):
        if (m, p) in PENDING:
            skip("%s %s is served by the gateway" % (m, p), "not in the gateway's route table yet")
        else:
            ok(False, "docs/openapi.yaml route %s %s is served by the gateway" % (m, p),
               "not in the gateway's route table (gateway_routes())")
    for m, p in sorted(sp & gw):
        ok(True, "docs/openapi.yaml route %s %s is served by the gateway" % (m, p))
    print("test-openapi: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
