#!/bin/sh
# gen-secrets.sh -- make the secrets docker-compose.yml needs (run once, from anywhere):
#
#   $PRESENCE_SECRETS_DIR (default compose/secrets):
#       center.pub, center.secret       the center store-node's CurveZMQ key pair
#       leaf-a.pub/.secret, leaf-b.*    each leaf relay's key pair
#       allowed-clients                 the relays' public keys, one a line (the center's ZAP list)
#       webhook-secrets                 the notifier's webhook signing secret (profile "webhooks")
#       grafana-admin-password          Grafana's admin password (profile "monitoring")
#   $PRESENCE_ENV_FILE (default compose/.env): JWT_SECRET=<64 hex digits>, read by compose
#
# Existing files are kept, so re-running is safe. Keys come from presence-keygen: the one in
# build/bin when the tree is built, else the image's (docker run presence:latest presence-keygen),
# or the command given as arguments.
#
# Compose (outside swarm) bind-mounts secret files as they are, so the container user (uid 10001)
# must be able to read them: as root they are chowned to 10001 and made 0400; otherwise they are
# made 0644 inside a 0700 directory (only Docker, as root, gets through the directory).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${PRESENCE_SECRETS_DIR:-$here/secrets}
envfile=${PRESENCE_ENV_FILE:-$here/.env}
if [ $# -gt 0 ]; then
    keygen="$*"
elif [ -x "$here/../build/bin/presence-keygen" ]; then
    keygen="$here/../build/bin/presence-keygen"
else
    keygen="docker run --rm ${PRESENCE_IMAGE:-presence:latest} presence-keygen"
fi
mkdir -p "$dir"
chmod 0700 "$dir"

protect() {
    if [ "$(id -u)" = 0 ]; then
        chown 10001:10001 "$1" && chmod 0400 "$1"
    else
        chmod 0644 "$1"
    fi
}

pair() {
    [ -s "$dir/$1.pub" ] && [ -s "$dir/$1.secret" ] && return 0
    out=$($keygen)
    pub=$(printf '%s\n' "$out" | sed -n 's/^CURVE_PUBLIC_KEY=//p')
    sec=$(printf '%s\n' "$out" | sed -n 's/^CURVE_SECRET_KEY=//p')
    if [ ${#pub} -ne 40 ] || [ ${#sec} -ne 40 ]; then
        echo "gen-secrets: '$keygen' did not print a CurveZMQ key pair" >&2
        exit 1
    fi
    (umask 077 && printf '%s\n' "$sec" >"$dir/$1.secret")
    printf '%s\n' "$pub" >"$dir/$1.pub"
    protect "$dir/$1.secret"
    protect "$dir/$1.pub"
    echo "gen-secrets: wrote $dir/$1.pub and $dir/$1.secret"
}

pair center
pair leaf-a
pair leaf-b
if [ ! -s "$dir/allowed-clients" ]; then
    cat "$dir/leaf-a.pub" "$dir/leaf-b.pub" >"$dir/allowed-clients"
    protect "$dir/allowed-clients"
    echo "gen-secrets: wrote $dir/allowed-clients"
fi
if [ ! -s "$dir/webhook-secrets" ]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/webhook-secrets" && echo >>"$dir/webhook-secrets")
    protect "$dir/webhook-secrets"
    echo "gen-secrets: wrote $dir/webhook-secrets (webhook signing secret: your backend verifies X-Presence-Signature with it)"
fi
if [ ! -s "$dir/grafana-admin-password" ]; then
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$dir/grafana-admin-password" && echo >>"$dir/grafana-admin-password")
    protect "$dir/grafana-admin-password"
    echo "gen-secrets: wrote $dir/grafana-admin-password (Grafana's admin password, profile \"monitoring\")"
fi
if ! grep -q '^JWT_SECRET=' "$envfile" 2>/dev/null; then
    secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    (umask 077 && printf 'JWT_SECRET=%s\n' "$secret" >>"$envfile")
    echo "gen-secrets: wrote JWT_SECRET to $envfile"
fi
