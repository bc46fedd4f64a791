# tests/lib.sh -- helpers the shell test scripts source (tests/deploy/cache-*.sh,
# tests/partition/partition.sh).

# until_ok SECONDS CMD...: run CMD (output discarded) until it succeeds, at most SECONDS; polls
# every 50 ms. Returns 1 on timeout.
until_ok() {
    local end=$((SECONDS + $1))
    shift
    while ! "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.05
    done
}

# free_ports N: N distinct free TCP ports on 127.0.0.1, space-separated.
free_ports() {
    "${PYTHON:-python3}" -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# private_etc_hosts SCRIPT ARGS...: call first thing in a script that edits /etc/hosts. The first
# call re-runs SCRIPT ARGS in a private mount namespace (root and unshare) and exits with its
# status; inside, it bind-mounts a copy of /etc/hosts over /etc/hosts and returns, with DIR set to
# a temporary directory (removed afterwards) holding that copy as $DIR/hosts.
private_etc_hosts() {
    if [ -z "${PRIVATE_HOSTS_DIR:-}" ]; then
        local d rc
        d=$(mktemp -d "${TMPDIR:-/tmp}/hosts.XXXXXX")
        cp /etc/hosts "$d/hosts"
        PRIVATE_HOSTS_DIR=$d unshare --mount --propagation private "$@"
        rc=$?
        rm -rf "$d"
        exit $rc
    fi
    DIR=$PRIVATE_HOSTS_DIR
    mount --bind "$DIR/hosts" /etc/hosts || exit 1
}
