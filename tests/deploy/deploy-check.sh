#!/usr/bin/env bash
# deploy-check.sh -- what can be proven about compose/ and helm/ on a machine with no Docker engine
# and no cluster. Run by `make deploy-check` (tests/deploy/module.mk), which installs the tools and
# sets BIN (built binaries), HELM, K8S_TOOLS (npm validator packages), PYTHON and TOOLS_OK.
#
# Checks, each counted:
#   tools                    the tools installed (make deploy-tools)
#   image-libs               every shared library the shipped binaries load (NEEDED) comes from a
#                            package the runtime stage installs (image-libs.py)
#   image-bins               every binary the Dockerfile ships (PRESENCE_BINS) is built by make
#   probe-auto-role          presence-probe with no arguments, as the image's HEALTHCHECK runs it,
#                            finds PID 1 (a store-node, in a PID namespace) and asks it on the
#                            endpoint derived from the store's own environment (root + unshare only)
#   cache-dns-discovery      cache-dns.sh: the Helm cache tier's discovery (CACHE_DNS) tried for real:
#                            scale-up, scale-down and no pod at all, with writes kept (root only)
#   cache-dns-slots          cache-slots.sh: a gateway whose CACHE_ENDPOINTS names a host that does
#                            not resolve yet serves, and uses it once it resolves (root only)
#   compose-config           docker-compose config accepts compose/docker-compose.yml
#   compose-requires-jwt     ... and refuses it, naming JWT_SECRET, when JWT_SECRET is unset
#   compose-local            compose-local.py: the file's services (with the "webhooks" profile's
#                            notifier) run here and pass a smoke test
#   compose-*-replicated     the same with docker-compose.replicated.yml on top (three center stores)
#   helm-lint-{center,leaf}  helm lint --strict with each region's values file
#   helm-template-{center,leaf}
#   k8s-schema-{center,leaf} the rendered manifests (center with the ServiceMonitor and the
#                            notifier on) against the Kubernetes API types (k8s-typecheck.py)
#   k8s-schema-bites         the validator rejects broken copies of those manifests
#   k8s-wiring-{center,leaf} endpoints, probes and ports point at things that exist (k8s-wiring.py)
#   helm-requires-*          rendering fails, with a message naming the value, when a required
#                            secret or the leaf's center endpoint is missing
#   helm-cache-slots         ... and when the cache tier could exceed the gateway's 16 endpoints
#   helm-requires-webhook-*  ... and when the notifier is on without targets or signing secrets
#   helm-store-replicas      ... and when the store's members are not 1, 3 or 5
# Ends with "deploy-check: N passed, N failed, N skipped"; exit status 1 if anything failed. A check
# that cannot run here (not root, no unshare) is reported "skip NAME (why)" and counted as skipped.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
: "${BIN:=$ROOT/build/bin}" "${HELM:=$ROOT/build/tools/bin/helm}" "${K8S_TOOLS:=$ROOT/build/tools/npm}"
: "${PYTHON:=/usr/bin/python3}" "${TOOLS_OK:=1}"
CHART=$ROOT/helm/presence
pass=0
fail=0
skipped=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/deploy-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

ok() {
    echo "ok   $1${2:+: $2}"
    pass=$((pass + 1))
}
skip() {
    echo "skip $1 ($2)"
    skipped=$((skipped + 1))
}
bad() {
    echo "FAIL $1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | tail -n 40 | sed 's/^/     /'; fi
    fail=$((fail + 1))
}
# run NAME CMD...: one check that passes when CMD exits 0 (its output shown on failure).
run() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$out"; fi
}
# refuses NAME PATTERN CMD...: passes when CMD fails and its output matches PATTERN.
refuses() {
    local name=$1 pat=$2 out
    shift 2
    if out=$("$@" 2>&1); then
        bad "$name" "accepted, but should have been refused"
    elif grep -qE -- "$pat" <<<"$out"; then
        ok "$name" "$(grep -oE -- "$pat[^\"'}]{0,60}" <<<"$out" | head -n 1)"
    else
        bad "$name" "refused without naming /$pat/: $out"
    fi
}

dockerfile=$ROOT/compose/Dockerfile
bins=$(sed -n 's/^ARG PRESENCE_BINS="\(.*\)"$/\1/p' "$dockerfile")

echo "=== deploy-check"
if [ "$TOOLS_OK" = 1 ] && [ -x "$HELM" ] && [ -d "$K8S_TOOLS/node_modules" ] && command -v docker-compose >/dev/null; then
    ok tools "$("$HELM" version --template '{{.Version}}'), $(docker-compose version --short 2>/dev/null), node $(node --version)"
else
    bad tools "make deploy-tools failed (see above); checks needing the missing tools fail too"
fi

# ---- the image ------------------------------------------------------------------------------
if out=$("$PYTHON" tests/deploy/image-libs.py --dockerfile "$dockerfile" --bin "$BIN" 2>&1); then
    ok image-libs "$(tail -n 1 <<<"$out")"
else
    bad image-libs "$out"
fi
missing_bins=""
for b in $bins; do [ -x "$BIN/$b" ] || missing_bins="$missing_bins $b"; done
if [ -n "$bins" ] && [ -z "$missing_bins" ]; then ok image-bins "$bins"; else bad image-bins "not built:$missing_bins"; fi

# The image's HEALTHCHECK is `presence-probe` with no argument: it must find PID 1 and its endpoint.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare --pid --fork --mount-proc true 2>/dev/null; then
    port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$tmp/probe"
    env -i PATH=/usr/bin:/bin DATA_DIR="$tmp/probe" STORE_CMD_ENDPOINT="tcp://*:$port" \
        STORE_PUB_ENDPOINT="ipc://$tmp/probe/pub.sock" SYNC_MODE=none \
        unshare --pid --fork --mount-proc sh -c '
            probe=$1 store=$2 out=$3
            (
                for i in $(seq 200); do [ "$(cat /proc/1/comm)" = store-node ] && break; sleep 0.05; done
                "$probe" -v -t 5000 >"$out" 2>&1
                echo "exit $?" >>"$out"
                kill -TERM 1
            ) &
            exec "$store"' sh "$BIN/presence-probe" "$BIN/store-node" "$tmp/probe/out" >"$tmp/probe/store.log" 2>&1
    if grep -q "^ok tcp://127.0.0.1:$port PONG" "$tmp/probe/out" 2>/dev/null && grep -qx 'exit 0' "$tmp/probe/out"; then
        ok probe-auto-role "$(head -n 1 "$tmp/probe/out")"
    else
        bad probe-auto-role "$(cat "$tmp/probe/out" "$tmp/probe/store.log" 2>&1)"
    fi
else
    skip probe-auto-role "needs root and unshare --pid"
fi

# The Helm cache tier (a Deployment behind a headless Service) rests on the gateway following the
# Service's DNS name as pods come and go; CACHE_ENDPOINTS (compose) on it treating a name that does
# not resolve as a down node and picking it up once it resolves.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare --mount true 2>/dev/null; then
    if out=$(PYTHON=$PYTHON tests/deploy/cache-dns.sh "$BIN" 2>&1); then
        ok cache-dns-discovery "$(grep -c '^ok' <<<"$out") steps"
    else
        bad cache-dns-discovery "$out"
    fi
    if out=$(PYTHON=$PYTHON tests/deploy/cache-slots.sh "$BIN" 2>&1); then
        ok cache-dns-slots "$(grep -c '^ok' <<<"$out") steps"
    else
        bad cache-dns-slots "$out"
    fi
else
    skip cache-dns-discovery "needs root and unshare --mount"
    skip cache-dns-slots "needs root and unshare --mount"
fi

# ---- compose --------------------------------------------------------------------------------
compose=$ROOT/compose/docker-compose.yml
printf 'JWT_SECRET=%s\n' 0123456789abcdef0123456789abcdef >"$tmp/compose.env"
: >"$tmp/empty.env"
run compose-config env -i PATH="$PATH" PRESENCE_SECRETS_DIR="$tmp/secrets" \
    docker-compose -f "$compose" --env-file "$tmp/compose.env" config -q
refuses compose-requires-jwt 'JWT_SECRET is required' env -i PATH="$PATH" \
    docker-compose -f "$compose" --env-file "$tmp/empty.env" config -q
if out=$("$PYTHON" tests/deploy/compose-local.py --bin "$BIN" --compose "$compose" --profile webhooks 2>&1); then
    ok compose-local "$(tail -n 1 <<<"$out" | sed 's/^compose-local: //')"
else
    bad compose-local "$out"
fi
replicated=$ROOT/compose/docker-compose.replicated.yml
run compose-config-replicated env -i PATH="$PATH" PRESENCE_SECRETS_DIR="$tmp/secrets" \
    docker-compose -f "$compose" -f "$replicated" --env-file "$tmp/compose.env" config -q
if out=$("$PYTHON" tests/deploy/compose-local.py --bin "$BIN" --compose "$compose" --also "$replicated" 2>&1); then
    ok compose-local-replicated "$(tail -n 1 <<<"$out" | sed 's/^compose-local: //')"
else
    bad compose-local-replicated "$out"
fi

# ---- helm -----------------------------------------------------------------------------------
# Secrets for the renders: real keys from presence-keygen, written as a values file (Z85 keys hold
# characters --set would parse).
"$BIN/presence-keygen" "$tmp/center" && "$BIN/presence-keygen" "$tmp/leaf" && "$BIN/presence-keygen" "$tmp/leaf2"
"$PYTHON" - "$tmp" <<'EOF'
import sys, yaml
t = sys.argv[1]
key = lambda p: open(p).read().strip()
jwt = "0123456789abcdef0123456789abcdef-deploy-check"
yaml.safe_dump({"secrets": {"jwtSecret": jwt, "webhookSecrets": "whsec-0123456789abcdef\nwhsec-fedcba9876543210\n",
    "curve": {
    "serverSecretKey": key(t + "/center.secret"),
    "allowedClients": key(t + "/leaf.pub") + "\n" + key(t + "/leaf2.pub") + "\n"}}},
    open(t + "/secrets-center.yaml", "w"))
yaml.safe_dump({"relay": {"centerEndpoint": "tcp://presence-center-link.presence-center.svc.cluster.local:7100"},
                "secrets": {"jwtSecret": jwt, "curve": {
    "serverPublicKey": key(t + "/center.pub"), "publicKey": key(t + "/leaf.pub"),
    "secretKey": key(t + "/leaf.secret")}}}, open(t + "/secrets-leaf.yaml", "w"))
EOF
for region in center leaf; do
    values=(-f "$CHART/values-$region.yaml" -f "$tmp/secrets-$region.yaml")
    extra=()
    [ $region = center ] && extra=(--set metrics.serviceMonitor.enabled=true --set notifier.enabled=true
        --set notifier.targets[0].url=https://backend.example/hooks/presence --set notifier.targets[0].events=online+offline
        --set notifier.targets[1].url=http://billing.example:8080/presence)
    run helm-lint-$region "$HELM" lint --strict "$CHART" "${values[@]}" "${extra[@]}"
    if out=$("$HELM" template "presence-$region" "$CHART" --namespace "presence-$region" "${values[@]}" "${extra[@]}" 2>&1); then
        printf '%s\n' "$out" >"$tmp/$region.yaml"
        ok helm-template-$region "$(grep -c '^kind:' "$tmp/$region.yaml") documents"
        if out=$("$PYTHON" tests/deploy/k8s-typecheck.py --tools "$K8S_TOOLS" "$tmp/$region.yaml" 2>&1); then
            ok k8s-schema-$region "$(grep -c '^ok ' <<<"$out") documents valid"
        else
            bad k8s-schema-$region "$out"
        fi
        run k8s-wiring-$region "$PYTHON" tests/deploy/k8s-wiring.py --dockerfile "$dockerfile" \
            --gateway-routes gateway/gw_routes.c --namespace "presence-$region" "$tmp/$region.yaml"
    else
        bad helm-template-$region "$out"
        bad k8s-schema-$region "nothing rendered"
        bad k8s-wiring-$region "nothing rendered"
    fi
done
if [ -s "$tmp/center.yaml" ] && out=$("$PYTHON" tests/deploy/k8s-typecheck.py --tools "$K8S_TOOLS" --self-test "$tmp/center.yaml" 2>&1); then
    ok k8s-schema-bites "$(grep -c '^ok   rejected' <<<"$out") broken manifests rejected"
else
    bad k8s-schema-bites "${out:-no center manifests}"
fi

# Required values: an empty one fails the render and says which.
C=(-f "$CHART/values-center.yaml")
L=(-f "$CHART/values-leaf.yaml")
J=(--set-string secrets.jwtSecret=0123456789abcdef0123456789abcdef)
refuses helm-requires-jwt 'secrets\.jwtSecret is required' "$HELM" template x "$CHART" "${C[@]}"
refuses helm-requires-jwt-length 'secrets\.jwtSecret is [0-9]+ bytes' "$HELM" template x "$CHART" "${C[@]}" \
    -f "$tmp/secrets-center.yaml" --set-string secrets.jwtSecret=short
refuses helm-requires-curve-center 'secrets\.curve\.serverSecretKey is required' "$HELM" template x "$CHART" "${C[@]}" "${J[@]}"
refuses helm-requires-center-endpoint 'relay\.centerEndpoint is required' "$HELM" template x "$CHART" "${L[@]}" \
    -f "$tmp/secrets-leaf.yaml" --set relay.centerEndpoint=""
refuses helm-requires-curve-leaf 'secrets\.curve\.[a-zA-Z]+ is required' "$HELM" template x "$CHART" "${L[@]}" "${J[@]}" \
    --set relay.centerEndpoint=tcp://center:7100
W=(--set notifier.enabled=true --set notifier.targets[0].url=https://backend.example/hooks/presence)
refuses helm-requires-webhook-targets 'notifier\.targets is required' "$HELM" template x "$CHART" "${C[@]}" \
    -f "$tmp/secrets-center.yaml" --set notifier.enabled=true
refuses helm-requires-webhook-secret 'secrets\.webhookSecrets is required' "$HELM" template x "$CHART" "${C[@]}" \
    -f "$tmp/secrets-center.yaml" "${W[@]}" --set secrets.webhookSecrets=""
refuses helm-cache-slots 'the gateway takes 1 to 16' "$HELM" template x "$CHART" "${C[@]}" -f "$tmp/secrets-center.yaml" \
    --set cache.autoscaling.maxReplicas=17
refuses helm-store-replicas 'store\.replicas: 1, 3 or 5' "$HELM" template x "$CHART" "${C[@]}" -f "$tmp/secrets-center.yaml" \
    --set store.replicas=2

echo "deploy-check: $pass passed, $fail failed, $skipped skipped"
[ "$fail" -eq 0 ]
