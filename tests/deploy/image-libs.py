#!/usr/bin/env python3
"""image-libs.py -- does the Dockerfile's runtime stage install every library the binaries load?

    image-libs.py --dockerfile compose/Dockerfile --bin build/bin

For each binary in the Dockerfile's PRESENCE_BINS, the NEEDED entries of its dynamic section
(objdump -p) are mapped to the Debian package that owns the library on this (Debian 12) build
machine (dpkg -S). Each such package must be installed in the runtime image: named in
RUNTIME_PACKAGES, pulled in by one of them (Depends/Pre-Depends, recursively, as recorded in
dpkg's status database), or part of debian:12-slim itself (priority "required", and what those
depend on). Offline: reads only the local dpkg database.
"""
import argparse
import os
import re
import subprocess
import sys

STATUS = "/var/lib/dpkg/status"


def dpkg_db():
    pkgs, cur = {}, {}
    with open(STATUS, encoding="utf-8", errors="replace") as f:
        for line in f.read().split("\n") + [""]:
            if not line:
                if cur.get("Package") and "installed" in cur.get("Status", "") and "not-installed" not in cur.get("Status", ""):
                    pkgs[cur["Package"]] = cur
                cur, last = {}, None
            elif line[0] in " \t":
                continue
            elif ":" in line:
                k, v = line.split(":", 1)
                cur[k] = v.strip()
    provides = {}
    for name, p in pkgs.items():
        for alt in re.split(r"\s*,\s*", p.get("Provides", "")):
            if alt:
                provides.setdefault(re.split(r"[\s(:]", alt)[0], []).append(name)
    return pkgs, provides


def closure(roots, pkgs, provides):
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        p = pkgs.get(n)
        if not p:
            continue
        deps = ", ".join(x for x in (p.get("Pre-Depends", ""), p.get("Depends", "")) if x)
        for clause in re.split(r"\s*,\s*", deps):
            for alt in re.split(r"\s*\|\s*", clause):
                name = re.split(r"[\s(:]", alt.strip())[0] if alt.strip() else ""
                cands = ([name] if name in pkgs else []) + provides.get(name, [])
                if cands:
                    todo.extend(cands)
                    break  # one installed alternative satisfies the clause
    return seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    with open(a.dockerfile, encoding="utf-8") as f:
        text = f.read()
    bins = re.search(r'^ARG PRESENCE_BINS="([^"]*)"', text, re.M)
    runtime = re.search(r'^ARG RUNTIME_PACKAGES="([^"]*)"', text, re.M)
    if not bins or not runtime:
        print("%s: no ARG PRESENCE_BINS / ARG RUNTIME_PACKAGES line" % a.dockerfile)
        return 1
    bins, runtime = bins.group(1).split(), runtime.group(1).split()
    pkgs, provides = dpkg_db()
    problems = [("RUNTIME_PACKAGES names %s, which is not a Debian 12 package installed here" % p)
                for p in runtime if p not in pkgs]
    base = {n for n, p in pkgs.items() if p.get("Priority") == "required" or p.get("Essential") == "yes"}
    have = closure(set(runtime) | base, pkgs, provides)
    libs = {}
    for b in bins:
        path = os.path.join(a.bin, b)
        if not os.access(path, os.X_OK):
            problems.append("%s is not built" % path)
            continue
        out = subprocess.run(["objdump", "-p", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for lib in re.findall(r"^\s*NEEDED\s+(\S+)", out.stdout, re.M):
            libs.setdefault(lib, []).append(b)
    for lib, users in sorted(libs.items()):
        out = subprocess.run(["dpkg", "-S", "*/" + lib], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        owners = sorted({l.split(":")[0] for l in out.stdout.splitlines() if not l.startswith("diversion")})
        if not owners:
            problems.append("%s (needed by %s) belongs to no Debian package" % (lib, ", ".join(users)))
        elif not any(o in have for o in owners):
            problems.append("%s (needed by %s) comes from %s, which the runtime image would not have: add it to RUNTIME_PACKAGES"
                            % (lib, ", ".join(users), " or ".join(owners)))
        else:
            print("%-28s %-20s %s" % (lib, next(o for o in owners if o in have), ", ".join(users)))
    for p in problems:
        print("PROBLEM: " + p)
    print("%d libraries, %d problems" % (len(libs), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
