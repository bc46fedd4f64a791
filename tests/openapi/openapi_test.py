#!/usr/bin/env python3
"""openapi_test.py -- make test-openapi: docs/openapi.yaml is linted, and matches the gateway.

1. lint: Redocly CLI (the npm package pinned in tests/openapi/npm/package-lock.json, installed
   without npm by tests/deploy/npm-fetch.py) with tests/openapi/redocly.yaml; the document must
   lint clean.
2. the linter bites: a copy of the document with a dangling $ref must fail the lint (a linter that
   passes everything would make step 1 worthless).
3. routes: every (method, path) the gateway's route table (gateway/gw_routes.c) serves is in the
   document and vice versa. gateway_routes() is the one function that knows where the table is
   (adapt it when the table moves); it must see a row added to a copy of the table. Routes of
   REALTIME.md that the gateway does not serve yet (PENDING) are reported "skip" while absent from
   its table, and checked like every other once present.
4. /ui/{file} names exactly the files of ui/MANIFEST.

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

# Routes the document describes that the gateway is still being given (REALTIME.md's sessions
# routes and the WebSocket endpoint, being built on other branches).
PENDING = {
    ("GET", "/api/v2/presence/{}/sessions"),
    ("DELETE", "/api/v2/presence/{}/sessions/{}"),
    ("DELETE", "/api/v2/presence/{}/preferred"),
    ("GET", "/api/v2/presence/connect"),
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


def expand_optional(pattern):
    """"/a/{id}/s[/{sid}]" -> ["/a/{id}/s", "/a/{id}/s/{sid}"] (gw_path.h: a trailing [...] is optional)."""
    m = re.match(r"^(.*)\[(.*)\]$", pattern)
    return [m.group(1), m.group(1) + m.group(2)] if m else [pattern]


def gateway_routes(root=ROOT):
    """The (METHOD, path) pairs the gateway serves, read from its route table (gateway/gw_routes.c).

    Each row of s_routes[] is {"<path pattern>", <methods>, <guard rule>, <handler>, "<label>"};
    the methods are M(X) terms and the file's own #define shorthands of them (READS), which is what
    the code enforces (405 otherwise). OPTIONS (the CORS preflight, answered on every path) is not
    listed. A pattern's optional [/...] tail is two paths. Returns {("GET", "/api/v2/presence/{}"),
    ...} with parameters written {}. When the table moves, adapt this function only.
    """
    src = open(os.path.join(root, "gateway", "gw_routes.c")).read()
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)  # the header's table is prose: only the code counts
    macros = {}
    for name, body in re.findall(r"^#define\s+([A-Z_]+)\s+\((.*)\)\s*$", src, re.M):
        macros[name] = body

    def methods(expr, depth=0):
        if depth > 5:
            raise SystemExit("gateway_routes: recursive method macro in %r" % expr)
        tok = r"M\(\s*(?:GW_M_)?([A-Z]+)\s*\)|\b([A-Z_][A-Z0-9_]*)\b"
        if re.sub(tok, "", expr).strip(" |()\t\n"):
            raise SystemExit("gateway_routes: cannot read the methods %r of gw_routes.c" % expr)
        out = set()
        for method, macro in re.findall(tok, expr):
            if method:
                out.add(method)
            elif macro in macros:
                out |= methods(macros[macro], depth + 1)
            else:
                raise SystemExit("gateway_routes: unknown methods macro %s in gw_routes.c" % macro)
        return out

    table = src[src.index("s_routes[] = {"):]
    table = table[:table.index("\n};")]
    routes = set()
    rows = re.findall(r'\{\s*"(/[^"]*)",\s*([^,{]+),', table)
    if not rows:
        raise SystemExit("gateway_routes: no rows found in s_routes[] of gateway/gw_routes.c")
    for path, expr in rows:
        for m in methods(expr):
            for p in expand_optional(path):
                routes.add((m, norm(p)))
    return routes


def check_route_reader():
    """gateway_routes() must see a row added to the table (a reader that finds nothing new would
    make the both-ways check below worthless)."""
    src = open(os.path.join(ROOT, "gateway", "gw_routes.c")).read()
    row = '    {"/api/v2/probe/{id}[/{sid}]", M(DELETE) | READS, {0}, gw_health_live, "probe"},\n'
    at = src.index("s_routes[] = {")
    at = src.index("\n};", at) + 1
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "gateway"))
        with open(os.path.join(tmp, "gateway", "gw_routes.c"), "w") as f:
            f.write(src[:at] + row + src[at:])
        got = gateway_routes(tmp) - gateway_routes()
    want = {(m, p) for m in ("GET", "HEAD", "DELETE") for p in ("/api/v2/probe/{}", "/api/v2/probe/{}/{}")}
    ok(got == want, "gateway_routes() reads a row added to gw_routes.c", "read %s" % sorted(got))


def check_ui_names(doc):
    """/ui/{file} names exactly the files ui/MANIFEST installs (the only names the gateway serves)."""
    names = []
    for line in open(os.path.join(ROOT, "ui", "MANIFEST")):
        if line.strip() and not line.lstrip().startswith("#"):
            names.append(line.split()[0])
    params = doc["paths"]["/ui/{file}"].get("parameters", [])
    enum = next((p["schema"].get("enum", []) for p in params if p.get("name") == "file"), [])
    ok(sorted(enum) == sorted(names), "/ui/{file} lists exactly the names of ui/MANIFEST",
       "document %s, MANIFEST %s" % (sorted(enum), sorted(names)))


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

    check_route_reader()
    check_ui_names(doc)
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
