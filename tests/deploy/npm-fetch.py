#!/usr/bin/env python3
"""npm-fetch.py -- install npm packages without npm (make deploy-check's tools).

Debian's `npm` package drags in a few hundred node-* packages (minutes of apt-get on a fresh
machine); the tools here need only tarballs from the registry, verified against pinned hashes:

  npm-fetch.py lock LOCKFILE DEST        every package of a package-lock.json (v3) into
                                         DEST/node_modules/<name>, each checked against its
                                         lock-file integrity (sha512)
  npm-fetch.py one NAME VERSION SHA512 OUT.tgz
                                         one package tarball, checked against SHA512 (base64)

The registry is $NPM_REGISTRY (default https://registry.npmjs.org). HTTPS through the system's
CA store (Debian: ca-certificates).
"""
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.request

REGISTRY = os.environ.get("NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")


def tarball_url(name, version):
    base = name.split("/")[-1]
    return "%s/%s/-/%s-%s.tgz" % (REGISTRY, name, base, version)


def fetch(name, version, integrity):
    algo, _, want = integrity.partition("-")
    if algo != "sha512" or not want:
        raise SystemExit("npm-fetch: %s@%s: unsupported integrity %r" % (name, version, integrity))
    url = tarball_url(name, version)
    last = None
    for attempt in range(4):
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
            break
        except OSError as e:  # network hiccup: retry with a short backoff
            last = e
            time.sleep(1 + 2 * attempt)
    else:
        raise SystemExit("npm-fetch: %s: %s" % (url, last))
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != want:
        raise SystemExit("npm-fetch: %s@%s: sha512 mismatch (got %s)" % (name, version, got))
    return data


def extract(data, dest):
    """Unpack an npm tarball (members under one top directory, usually package/) into dest."""
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        for m in t.getmembers():
            parts = m.name.split("/", 1)
            if len(parts) < 2 or not parts[1] or m.issym() or m.islnk() or ".." in parts[1].split("/"):
                continue
            if not (m.isfile() or m.isdir()):
                continue
            path = os.path.join(tmp, parts[1])
            if m.isdir():
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with t.extractfile(m) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(path, 0o755 if m.mode & 0o111 else 0o644)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.rename(tmp, dest)


def main(argv):
    if len(argv) == 4 and argv[1] == "lock":
        lock = json.load(open(argv[2]))
        dest = argv[3]
        n = 0
        for path, meta in sorted(lock.get("packages", {}).items()):
            if not path.startswith("node_modules/"):
                continue
            name = path[len("node_modules/"):]
            if "/node_modules/" in name:  # nested copies: not used by these tools
                raise SystemExit("npm-fetch: nested package %s not supported" % path)
            extract(fetch(name, meta["version"], meta["integrity"]), os.path.join(dest, path))
            n += 1
        print("npm-fetch: %d packages into %s" % (n, dest))
        return 0
    if len(argv) == 6 and argv[1] == "one":
        data = fetch(argv[2], argv[3], "sha512-" + argv[4])
        with open(argv[5] + ".tmp", "wb") as f:
            f.write(data)
        os.rename(argv[5] + ".tmp", argv[5])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
