#!/usr/bin/env python3
"""k8s-typecheck.py -- validate Kubernetes manifests offline against the API's own types.

    k8s-typecheck.py --tools DIR MANIFEST.yaml...     exit 0 when every document is valid
    k8s-typecheck.py --tools DIR --self-test MANIFEST.yaml
                                      prove the check bites: each of a set of broken copies of the
                                      manifests' documents must be rejected, the originals accepted

The types are those generated from the Kubernetes OpenAPI document (npm kubernetes-types, API
1.30) and, for the Prometheus Operator's ServiceMonitor, from its CRD schema
(@kubernetes-models/prometheus-operator). Every document becomes a typed constant in one
TypeScript file, and the TypeScript compiler (npm typescript, run by node, offline) checks it:
an unknown or misplaced field (object-literal excess-property checks work like
additionalProperties: false, at every depth), a wrong type, a missing required field or a wrong
apiVersion/kind literal is an error. Fields with a null value are dropped first, as the API
server does. A document whose apiVersion/kind has no type is an error, so nothing passes
unchecked. Errors are reported per document with the JSON path of the offending line.
"""
import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

K8S_TYPES = "kubernetes-types"
CRD_TYPES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        ("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor", "IServiceMonitor"),
}
IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def type_for(tools, api_version, kind):
    """(module, exported type name) for a document, or raise ValueError."""
    if (api_version, kind) in CRD_TYPES:
        return CRD_TYPES[(api_version, kind)]
    if not isinstance(api_version, str) or not isinstance(kind, str) or not IDENT.match(kind or "-"):
        raise ValueError("no apiVersion/kind")
    group, _, version = api_version.rpartition("/")
    group = group.split(".")[0] if group else "core"
    if not re.match(r"^[a-z0-9]+$", group) or not re.match(r"^v[0-9a-z]+$", version):
        raise ValueError("unknown apiVersion %s" % api_version)
    dts = os.path.join(tools, "node_modules", K8S_TYPES, group, version + ".d.ts")
    try:
        with open(dts, encoding="utf-8") as f:
            src = f.read()
    except OSError:
        raise ValueError("no type for apiVersion %s (looked for %s)" % (api_version, dts))
    if not re.search(r"export interface %s \{" % re.escape(kind), src):
        raise ValueError("no type for kind %s in apiVersion %s" % (kind, api_version))
    return ("%s/%s/%s" % (K8S_TYPES, group, version), kind)


def drop_nulls(v):
    if isinstance(v, dict):
        return {k: drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [drop_nulls(x) for x in v]
    return v


def emit(value, path, lines, paths, indent):
    """Append a TypeScript literal for value; paths[i] is the JSON path line i belongs to."""
    pad = "  " * indent
    if isinstance(value, dict) and value:
        lines[-1] += "{"
        items = list(value.items())
        for i, (k, x) in enumerate(items):
            lines.append("%s  %s: " % (pad, json.dumps(str(k))))
            paths.append(path + "/" + str(k))
            emit(x, path + "/" + str(k), lines, paths, indent + 1)
            if i + 1 < len(items):
                lines[-1] += ","
        lines.append(pad + "}")
        paths.append(path)
    elif isinstance(value, list) and value:
        lines[-1] += "["
        for i, x in enumerate(value):
            lines.append(pad + "  ")
            paths.append("%s/%d" % (path, i))
            emit(x, "%s/%d" % (path, i), lines, paths, indent + 1)
            if i + 1 < len(value):
                lines[-1] += ","
        lines.append(pad + "]")
        paths.append(path)
    else:
        lines[-1] += json.dumps(value if not isinstance(value, (dict, list)) else value)


def describe(doc):
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return "%s/%s" % (doc.get("kind", "?") if isinstance(doc, dict) else "?", name or "?")


def check(tools, docs):
    """docs: list of (label, document). Returns {index: [error, ...]} (empty dict = all valid)."""
    errors = {}
    lines, paths, owner = [], [], []
    imports = {}
    for i, (label, doc) in enumerate(docs):
        if not isinstance(doc, dict):
            errors.setdefault(i, []).append("not a mapping")
            continue
        try:
            module, tname = type_for(tools, doc.get("apiVersion"), doc.get("kind"))
        except ValueError as e:
            errors.setdefault(i, []).append(str(e))
            continue
        alias = imports.setdefault((module, tname), "T%d" % len(imports))
        lines.append("// document %d: %s" % (i, label))
        paths.append("")
        owner.append(i)
        start = len(lines)
        lines.append("export const doc%d: %s = " % (i, alias))
        paths.append("")
        emit(drop_nulls(doc), "", lines, paths, 0)
        lines[-1] += ";"
        owner.extend([i] * (len(lines) - start))
    header = ["import type { %s as %s } from %s;" % (t, a, json.dumps(m)) for (m, t), a in imports.items()]
    with tempfile.TemporaryDirectory(prefix="k8s-typecheck-") as tmp:
        src = os.path.join(tmp, "manifests.ts")
        with open(src, "w", encoding="utf-8") as f:
            f.write("\n".join(header + lines) + "\n")
        # The modules are resolved from the tools directory: point the compiler there.
        cfg = {
            "compilerOptions": {
                "strict": True, "noEmit": True, "skipLibCheck": True, "target": "es2020",
                "module": "nodenext", "moduleResolution": "nodenext", "types": [],
                "baseUrl": os.path.join(tools, "node_modules"),
                "typeRoots": [], "paths": {"*": [os.path.join(tools, "node_modules", "*")]},
            },
            "files": [src],
        }
        with open(os.path.join(tmp, "tsconfig.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f)
        tsc = os.path.join(tools, "node_modules", "typescript", "bin", "tsc")
        p = subprocess.run(["node", tsc, "-p", os.path.join(tmp, "tsconfig.json"), "--pretty", "false"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = p.stdout
    nhead = len(header)
    pat = re.compile(r"^(?P<file>.*?)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.*)$")
    current = None
    for raw in out.splitlines():
        m = pat.match(raw)
        if m and m.group("file").endswith("manifests.ts"):
            ln = int(m.group("line")) - 1 - nhead
            if 0 <= ln < len(owner):
                current = owner[ln]
                errors.setdefault(current, []).append("%s: %s" % (paths[ln] or "/", m.group("msg")))
                continue
        if m or (raw.strip() and current is None):
            errors.setdefault(-1, []).append(raw)  # an error outside our file: the setup is broken
            current = None
        elif raw.startswith("  ") and current is not None:
            errors[current][-1] += " " + raw.strip()
    if p.returncode != 0 and not errors:
        errors[-1] = ["tsc exited %d without errors we understood:" % p.returncode, out[-2000:]]
    return errors


def load(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        sources = re.findall(r"^# Source: (.*)$", text, re.M)
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            docs.append(("%s (%s)" % (describe(doc), os.path.basename(path)), doc))
    # Helm's "# Source:" comments name the template of each document, in order.
    if sources and len(sources) == len(docs):
        docs = [("%s (%s)" % (describe(d), s), d) for (_, d), s in zip(docs, sources)]
    return docs


def report(docs, errors):
    bad = 0
    for i, (label, _) in enumerate(docs):
        if i in errors:
            bad += 1
            print("FAIL %s" % label)
            for e in errors[i]:
                print("     %s" % e)
        else:
            print("ok   %s" % label)
    for e in errors.get(-1, []):
        print("ERROR %s" % e)
    return bad + (1 if -1 in errors else 0)


def first(docs, kind, where=lambda d: True):
    for _, d in docs:
        if d.get("kind") == kind and where(d):
            return copy.deepcopy(d)
    raise SystemExit("self-test: the manifests have no %s to break" % kind)


def mutations(docs):
    """Broken copies of real documents, each with one mistake a real chart could make."""
    out = []
    d = first(docs, "StatefulSet")
    d["spec"]["template"]["spec"]["securityContext"]["readOnlyRootFilesystem"] = True
    out.append(("container-only securityContext field at pod level", d))
    d = first(docs, "StatefulSet")
    d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["fsGroup"] = 10001
    out.append(("pod-only securityContext field in a container", d))
    d = first(docs, "Deployment")
    d["spec"]["replica"] = 2
    out.append(("misspelled field (spec.replica)", d))
    d = first(docs, "Deployment")
    d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    out.append(("string where an integer belongs (containerPort)", d))
    d = first(docs, "Deployment")
    del d["spec"]["template"]["spec"]["containers"][0]["name"]
    out.append(("missing required field (container name)", d))
    d = first(docs, "Deployment", lambda d: "httpGet" in d["spec"]["template"]["spec"]["containers"][0].get("readinessProbe", {}))
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    out.append(("misspelled field deep inside a probe", d))
    d = first(docs, "HorizontalPodAutoscaler")
    d["spec"]["targetCPUUtilizationPercentage"] = 70
    out.append(("autoscaling/v1 field in an autoscaling/v2 HPA", d))
    d = first(docs, "PodDisruptionBudget")
    d["apiVersion"] = "policy/v1beta2"
    out.append(("apiVersion that does not exist", d))
    d = first(docs, "Service")
    d["kind"] = "Servce"
    out.append(("kind that does not exist", d))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tools", required=True, help="directory holding node_modules with the types and typescript")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("manifests", nargs="+")
    a = ap.parse_args()
    docs = load(a.manifests)
    if not docs:
        print("no documents in %s" % " ".join(a.manifests))
        return 1
    if not a.self_test:
        return 1 if report(docs, check(a.tools, docs)) else 0
    broken = mutations(docs)
    errors = check(a.tools, list(docs) + broken)
    bad = 0
    for i, (label, _) in enumerate(docs):
        if i in errors:
            bad += 1
            print("FAIL the original %s was rejected: %s" % (label, "; ".join(errors[i])))
    for j, (label, _) in enumerate(broken):
        errs = errors.get(len(docs) + j)
        if errs:
            print("ok   rejected: %s -- %s" % (label, errs[0]))
        else:
            bad += 1
            print("FAIL accepted: %s" % label)
    for e in errors.get(-1, []):
        bad += 1
        print("ERROR %s" % e)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
