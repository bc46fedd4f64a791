#!/usr/bin/env python3
"""k8s-wiring.py -- check that rendered manifests point at things that exist.

    k8s-wiring.py --dockerfile compose/Dockerfile --gateway-routes gateway/gw_http.c --namespace NS MANIFEST.yaml

Schema validation proves every field is well formed; this proves the references between the
documents and to the code are right:
  - every tcp://HOST:PORT in a container's environment is either a wildcard bind on one of the
    container's own ports, a Service of this release (<svc>.<namespace>.svc.<domain>) on one of
    its ports, or one pod of a StatefulSet through its headless Service
    (<pod>.<svc>.<namespace>.svc.<domain>, ordinal below what the HPA or replicas allow);
    only a leaf's CENTER_ENDPOINT may point outside the release (the center's link Service, in
    another namespace or cluster);
  - CACHE_DNS (NAME:PORT) names a headless Service of this release on one of its ports that
    publishes only ready pods (its name must resolve to the pods themselves, and only to those
    that serve);
  - every Service selects a workload (or one pod of a StatefulSet by its pod-name label), and its
    targetPorts are named ports of that workload;
  - probes: an httpGet path is one of the gateway's routes (its route table in gw_http.c) on a
    named container port; an exec probe runs a binary the image ships (the Dockerfile's
    PRESENCE_BINS) and probes one of the container's own ports;
  - secretKeyRef names a rendered Secret and one of its keys;
  - HPAs, PDBs and ServiceMonitors target workloads and Services that exist (and ports they have).
Prints each problem; exit status 1 if there is any.
"""
import argparse
import re
import sys

import yaml

WORKLOADS = ("Deployment", "StatefulSet")


def containers(w):
    return w["spec"]["template"]["spec"].get("containers", [])


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--gateway-routes", required=True)
    ap.add_argument("--namespace", required=True, help="the namespace the manifests were rendered for")
    ap.add_argument("manifest")
    a = ap.parse_args()
    with open(a.dockerfile, encoding="utf-8") as f:
        shipped = re.search(r'^ARG PRESENCE_BINS="([^"]*)"', f.read(), re.M).group(1).split()
    with open(a.gateway_routes, encoding="utf-8") as f:
        # the route table's rows: {"/path", GW_R_...} (before issue 13) or {"/path", READS|M(...), ...}
        routes = set(re.findall(r'\{"(/[^"]*)", (?:GW_R_[A-Z_]+\}|READS\b|M\()', f.read()))
    if not routes:
        print("no routes found in %s" % a.gateway_routes)
        return 1
    with open(a.manifest, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    services = by_kind.get("Service", {})
    secrets = by_kind.get("Secret", {})
    workloads = {(k, n): d for k in WORKLOADS for n, d in by_kind.get(k, {}).items()}
    hpa_max = {(h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]): h["spec"]["maxReplicas"]
               for h in by_kind.get("HorizontalPodAutoscaler", {}).values()}

    POD_NAME = "statefulset.kubernetes.io/pod-name"

    def selected(selector):
        # A Service may select one pod of a StatefulSet by the label the controller gives it
        # (<name>-<ordinal>, below its replicas): the rest must match the pod template.
        selector = dict(selector or {})
        pod = selector.pop(POD_NAME, None)
        out = []
        for (kind, name), w in workloads.items():
            if pod is not None:
                m = re.match(r"^(.*)-(\d+)$", pod)
                if kind != "StatefulSet" or not m or m.group(1) != name or int(m.group(2)) >= w["spec"].get("replicas", 1):
                    continue
                if not selector:
                    out.append(w)
                    continue
            if matches(selector, w["spec"]["template"]["metadata"].get("labels", {})):
                out.append(w)
        return out

    def port_names(ws):
        return {p.get("name") for w in ws for c in containers(w) for p in c.get("ports", [])}

    def check_tcp(where, own_ports, host, port):
        if host in ("0.0.0.0", "*"):
            if port not in own_ports:
                problems.append("%s binds port %d, which the container does not declare" % (where, port))
            return
        labels = host.split(".")
        if "svc" not in labels:
            if where.endswith(" env CENTER_ENDPOINT"):
                return  # the leaf's link to the center crosses regions: any address
            problems.append("%s: %s is not a cluster Service name" % (where, host))
            return
        i = labels.index("svc")
        if i < 2:
            problems.append("%s: %s has no namespace" % (where, host))
            return
        svc_name = labels[i - 2]
        if svc_name not in services:
            # Outside this release (a leaf's centerEndpoint names the center's Service): allowed
            # only when it is in another namespace than the Services of this release.
            if labels[i - 1] != ns:
                return
            problems.append("%s: Service %s is not rendered" % (where, svc_name))
            return
        if labels[i - 1] != ns:
            problems.append("%s: %s is in namespace %s, the release in %s" % (where, host, labels[i - 1], ns))
        svc = services[svc_name]
        if port not in [p["port"] for p in svc["spec"]["ports"]]:
            problems.append("%s: Service %s has no port %d" % (where, svc_name, port))
        if i == 3:  # <pod>.<svc>.<ns>.svc...: a StatefulSet pod through its headless Service
            pod = labels[0]
            if svc["spec"].get("clusterIP") != "None":
                problems.append("%s: %s addresses a pod through Service %s, which is not headless" % (where, host, svc_name))
            owner = [s for s in by_kind.get("StatefulSet", {}).values() if s["spec"].get("serviceName") == svc_name]
            m = re.match(r"^(.*)-(\d+)$", pod)
            if not owner or not m or m.group(1) != owner[0]["metadata"]["name"]:
                problems.append("%s: %s is not a pod of a StatefulSet governed by %s" % (where, pod, svc_name))
            else:
                name = owner[0]["metadata"]["name"]
                limit = hpa_max.get(("StatefulSet", name), owner[0]["spec"].get("replicas", 1))
                if int(m.group(2)) >= limit:
                    problems.append("%s: %s is beyond the %d pods StatefulSet %s can have" % (where, pod, limit, name))
        elif i != 2:
            problems.append("%s: cannot read %s" % (where, host))

    ns = a.namespace
    for (kind, name), w in workloads.items():
        for c in containers(w):
            where = "%s/%s container %s" % (kind, name, c["name"])
            own = {p["containerPort"] for p in c.get("ports", [])}
            named = {p.get("name") for p in c.get("ports", [])}
            for e in c.get("env", []):
                v = e.get("value")
                if v is None:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        sec = secrets.get(ref["name"])
                        if not sec:
                            problems.append("%s env %s: Secret %s is not rendered" % (where, e["name"], ref["name"]))
                        elif ref["key"] not in (sec.get("data") or {}):
                            problems.append("%s env %s: Secret %s has no key %s" % (where, e["name"], ref["name"], ref["key"]))
                    continue
                for host, port in re.findall(r"tcp://([^:/,]+):(\d+)", str(v)):
                    check_tcp("%s env %s" % (where, e["name"]), own, host, int(port))
                if e["name"] == "CACHE_DNS":
                    m = re.match(r"^([^:/,]+):(\d+)$", str(v))
                    if not m:
                        problems.append("%s env CACHE_DNS: %r is not NAME:PORT" % (where, v))
                        continue
                    check_tcp("%s env CACHE_DNS" % where, own, m.group(1), int(m.group(2)))
                    svc = services.get(m.group(1).split(".")[0])
                    if svc is not None and svc["spec"].get("clusterIP") != "None":
                        problems.append("%s env CACHE_DNS: Service %s is not headless (its name would resolve to one "
                                        "virtual IP, not to the cache pods)" % (where, svc["metadata"]["name"]))
                    if svc is not None and svc["spec"].get("publishNotReadyAddresses"):
                        problems.append("%s env CACHE_DNS: Service %s publishes pods that are not ready"
                                        % (where, svc["metadata"]["name"]))
            for kind_probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                pr = c.get(kind_probe)
                if not pr:
                    continue
                pw = "%s %s" % (where, kind_probe)
                if "httpGet" in pr:
                    if pr["httpGet"].get("path") not in routes:
                        problems.append("%s: path %s is not a gateway route (%s)" % (pw, pr["httpGet"].get("path"), " ".join(sorted(routes))))
                    p = pr["httpGet"].get("port")
                    if (isinstance(p, int) and p not in own) or (isinstance(p, str) and p not in named):
                        problems.append("%s: port %s is not a container port" % (pw, p))
                elif "exec" in pr:
                    cmd = pr["exec"]["command"]
                    if cmd[0] not in shipped:
                        problems.append("%s runs %s, which the image does not ship" % (pw, cmd[0]))
                    for host, port in re.findall(r"tcp://([^:/]+):(\d+)", " ".join(cmd)):
                        if host != "127.0.0.1" or int(port) not in own:
                            problems.append("%s probes %s:%s, not one of its own ports" % (pw, host, port))
                elif "tcpSocket" not in pr and "grpc" not in pr:
                    problems.append("%s: no handler" % pw)
    for name, s in services.items():
        ws = selected(s["spec"].get("selector"))
        if not ws:
            problems.append("Service %s selects no workload" % name)
            continue
        for p in s["spec"]["ports"]:
            t = p.get("targetPort", p["port"])
            if isinstance(t, str) and t not in port_names(ws):
                problems.append("Service %s port %s: targetPort %s is not a named port of its pods" % (name, p.get("name"), t))
    for h in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = h["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in workloads:
            problems.append("HPA %s targets %s/%s, which is not rendered" % (h["metadata"]["name"], ref["kind"], ref["name"]))
        elif "replicas" in workloads[(ref["kind"], ref["name"])]["spec"]:
            problems.append("HPA %s: %s/%s also sets replicas (each upgrade would undo the HPA)" % (h["metadata"]["name"], ref["kind"], ref["name"]))
    for p in by_kind.get("PodDisruptionBudget", {}).values():
        if not selected(p["spec"]["selector"].get("matchLabels")):
            problems.append("PDB %s selects no workload" % p["metadata"]["name"])
    for m in by_kind.get("ServiceMonitor", {}).values():
        svcs = [s for s in services.values() if matches(m["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
        if not svcs:
            problems.append("ServiceMonitor %s selects no Service" % m["metadata"]["name"])
        for ep in m["spec"].get("endpoints", []):
            if not any(ep.get("port") in [p.get("name") for p in s["spec"]["ports"]] for s in svcs):
                problems.append("ServiceMonitor %s: no selected Service has a port named %s" % (m["metadata"]["name"], ep.get("port")))
            if ep.get("path") not in routes:
                problems.append("ServiceMonitor %s: path %s is not a gateway route" % (m["metadata"]["name"], ep.get("path")))
    for p in problems:
        print(p)
    print("%d documents, %d problems" % (len(docs), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
