#!/usr/bin/env python3
"""hostile_probe.py -- the adversarial probe of issue 20, as a script (RELIABILITY.md, "Hostile clients").

    tests/hardening/hostile_probe.py [BIN_DIR] [probe...]

Starts a center node (presenced, loopback, a free port) per probe from BIN_DIR (default build/bin),
attacks it, prints one line of numbers per probe, and stops the node by pid. Run it against an
older build to see the "before" column. Probes:

  sse_gone       200 watch streams whose client closes: ms until sse_clients is back to 0
  sse_one_ip     one client address opens 400 watch streams: how many get in
  slow_heads     300 connections each send 100 KB of an unfinished request head and stall:
                 gateway RSS growth, and ms until the gateway has closed them all
  body_no_token  a PUT announcing a 200 KB body without a token, body never sent: the answer and
                 how long it took
  xff_spoof      RATE_LIMIT_READS=1 burst 2, 50 reads whose first X-Forwarded-For hop changes
                 each time (TRUST_PROXY=true): how many were limited (429)
  emfile         the gateway left 8 spare fds, 40 clients connecting: gateway CPU ms over 3 s
  center_plain   store-node with CENTER_PORT and no CurveZMQ keys: started, or its exit status

Loopback only; every process is stopped by pid.
"""
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

SECRET = "probe-secret-0123456789abcdef0123456789"


def start_node(bindir, extra):
    d = tempfile.mkdtemp(prefix="hp-")
    env = dict(os.environ, DATA_DIR=d, SERVICE_PORT="0", SERVICE_ADDR="127.0.0.1", JWT_SECRET=SECRET,
               LOG_LEVEL="warn", **extra)
    out = open(os.path.join(d, "out"), "w+")
    err = open(os.path.join(d, "err"), "w")
    p = subprocess.Popen([os.path.join(bindir, "presenced")], env=env, stdout=out, stderr=err)
    port = None
    for _ in range(300):
        out.seek(0)
        for line in out.read().splitlines():
            if line.startswith("ready http="):
                port = int(line.split()[1].split(":")[1])
        if port:
            break
        time.sleep(0.05)
    if not port:
        stop(p)
        raise RuntimeError("node not ready: " + open(os.path.join(d, "err")).read()[-500:])
    gw = None
    for _ in range(100):
        kids = subprocess.run(["pgrep", "-P", str(p.pid), "-f", "bin/gateway"], capture_output=True, text=True)
        if kids.stdout.strip():
            gw = int(kids.stdout.split()[0])
            break
        time.sleep(0.05)
    return p, port, gw, d


def stop(p):
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def metric(port, name):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        for line in data.decode(errors="replace").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ms(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def watch(port, users="ann,bob"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET /api/v2/presence/watch?users=%s HTTP/1.1\r\nHost: p\r\n\r\n" % users).encode())
    head = b""
    deadline = time.time() + 5
    while b"\r\n\r\n" not in head and time.time() < deadline:
        b = s.recv(4096)
        if not b:
            break
        head += b
    return s, head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.1 ") else "none"


def probe_sse_gone(bindir):
    p, port, gw, d = start_node(bindir, {"SSE_MAX_PER_IP": "1000"})
    try:
        socks = [watch(port)[0] for _ in range(200)]
        while metric(port, "sse_clients") != 200:
            time.sleep(0.05)
        t0 = time.time()
        for s in socks:
            s.close()
        while metric(port, "sse_clients") not in (0, 0.0) and time.time() - t0 < 40:
            time.sleep(0.05)
        return "200 streams closed by their clients: sse_clients back to 0 after %d ms" % ((time.time() - t0) * 1000)
    finally:
        stop(p)


def probe_sse_one_ip(bindir):
    p, port, gw, d = start_node(bindir, {})
    try:
        got, codes = [], {}
        for _ in range(400):
            s, code = watch(port, "ann")
            codes[code] = codes.get(code, 0) + 1
            got.append(s)
        for s in got:
            s.close()
        return "400 watch streams from one address: " + ", ".join("%d x %s" % (n, c) for c, n in sorted(codes.items()))
    finally:
        stop(p)


def probe_slow_heads(bindir):
    p, port, gw, d = start_node(bindir, {})
    try:
        r0 = rss_kb(gw)
        head = b"GET /health HTTP/1.1\r\nHost: p\r\nX-Pad: " + b"a" * 100000
        socks = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            try:
                s.send(head)
            except OSError:
                pass
            socks.append(s)
        time.sleep(1)
        r1 = rss_kb(gw)
        t0 = time.time()
        open_ = list(socks)
        while open_ and time.time() - t0 < 30:
            still = []
            for s in open_:
                try:
                    b = s.recv(4096)
                    if b:
                        still.append(s)  # an answer (431/408); the close follows
                except BlockingIOError:
                    still.append(s)
                except OSError:
                    pass
            open_ = still
            time.sleep(0.05)
        for s in socks:
            s.close()
        return "300 x 100 KB unfinished heads: gateway RSS +%d MB after 1 s; all closed by the gateway after %.1f s" % (
            (r1 - r0) // 1024, time.time() - t0 + 1)
    finally:
        stop(p)


def probe_body_no_token(bindir):
    p, port, gw, d = start_node(bindir, {})
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        t0 = time.time()
        s.sendall(b"PUT /api/v2/presence/alice HTTP/1.1\r\nHost: p\r\nContent-Length: 200000\r\n\r\n")
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                b = s.recv(4096)
                if not b:
                    break
                data += b
        except OSError:
            pass
        ms = (time.time() - t0) * 1000
        s.close()
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed without an answer"
        return "PUT announcing 200 KB, no token, body never sent: %s after %d ms" % (status, ms)
    finally:
        stop(p)


def probe_xff_spoof(bindir):
    p, port, gw, d = start_node(bindir, {"RATE_LIMIT_READS": "1", "RATE_LIMIT_READ_BURST": "2", "TRUST_PROXY": "true"})
    try:
        limited = 0
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(("GET /api/v2/presence/x HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
                       "X-Forwarded-For: 10.9.%d.%d, 198.51.100.7\r\n\r\n" % (i // 250, i % 250)).encode())
            data = s.recv(4096)
            s.close()
            limited += data.startswith(b"HTTP/1.1 429")
        return "50 reads from one client rotating its first X-Forwarded-For hop: %d limited (429)" % limited
    finally:
        stop(p)


def probe_emfile(bindir):
    p, port, gw, d = start_node(bindir, {"MAX_CONNECTIONS": "100000"})
    try:
        nfd = len(os.listdir("/proc/%d/fd" % gw))
        subprocess.run(["prlimit", "--pid", str(gw), "--nofile=%d:" % (nfd + 8)], check=True)
        socks = []
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: p\r\n\r\n")
            socks.append(s)
        c0 = cpu_ms(gw)
        time.sleep(3)
        c1 = cpu_ms(gw)
        for s in socks:
            s.close()
        return "out of fds with 40 clients waiting: gateway CPU %d ms in 3 s" % (c1 - c0)
    finally:
        stop(p)


def probe_center_plain(bindir):
    d = tempfile.mkdtemp(prefix="hp-")
    os.makedirs(os.path.join(d, "run"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, DATA_DIR=d, CENTER_PORT=str(port), LOG_LEVEL="notice")
    p = subprocess.Popen([os.path.join(bindir, "store-node")], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=2)
        return "store-node with CENTER_PORT and no keys: exit %d: %s" % (p.returncode, err.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        p.terminate()
        out, err = p.communicate()
        bind = [line for line in err.splitlines() if "center=" in line]
        return "store-node with CENTER_PORT and no keys: started (%s)" % (
            bind[0].split("center=")[1].split()[0] if bind else "?")


PROBES = {
    "sse_gone": probe_sse_gone, "sse_one_ip": probe_sse_one_ip, "slow_heads": probe_slow_heads,
    "body_no_token": probe_body_no_token, "xff_spoof": probe_xff_spoof, "emfile": probe_emfile,
    "center_plain": probe_center_plain,
}


def main():
    args = sys.argv[1:]
    bindir = os.path.abspath(args.pop(0)) if args and os.path.isdir(args[0]) else os.path.abspath("build/bin")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for name in args or list(PROBES):
        try:
            print("%-14s %s" % (name, PROBES[name](bindir)), flush=True)
        except Exception as e:  # a probe that cannot run says so; it is never a pass
            print("%-14s skipped: %s" % (name, e), flush=True)


if __name__ == "__main__":
    main()
