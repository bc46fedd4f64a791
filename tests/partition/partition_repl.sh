#!/usr/bin/env bash
# partition_repl.sh BIN -- a real network partition inside a replicated center (STORE_REPLICAS=3).
#
# Three network namespaces of our own, one per store-node member (10.213.8.1-3), each with a veth
# into a bridge in a fourth namespace of ours; the members' raft traffic is TCP over that bridge.
# Their command sockets are ipc:// paths in a temp dir: Unix sockets, reachable from the root
# namespace, so `replpoke` (tests/tools) asks any one member -- the cut-off one included -- what it
# answers while its raft link is cut. Then the leader's bridge port is taken down (packets vanish,
# no connection is reset, as in a real partition) and brought back. Checks:
#   1. the three elect one leader that the others name; a write through it is acknowledged; a
#      follower refuses a write, naming the leader;
#   2. cut off: the old leader acknowledges nothing from the cut on (a write sent at the cut is not
#      OK), says it no longer leads within 3 x STORE_ELECTION_MS + 1 s, and a write sent to it after
#      that deadline is not OK; the other two elect a leader of a higher term, whose writes are
#      acknowledged; in rounds of two writes sent at once, one to each, never both are OK;
#   3. healed: the old leader rejoins as a follower of the new term (which keeps its leader: pre-vote)
#      and catches up: its committed sequence, record count, applied index and epoch equal the
#      leader's (the write made during the partition included; followers refuse reads, so STATS);
#   4. nothing acknowledged is lost: every write answered OK is on the final leader with its version
#      and message; nothing the cut-off leader was sent is there (its uncommitted log entry was
#      replaced); every version acknowledged after the cut is above every one before it.
# Needs root and `ip netns` (iproute2); otherwise it says why and counts itself skipped.
# Ends with "test-partition-repl: N passed, N failed, N skipped".
set -u
BIN=$1
. "$(dirname "$0")/../lib.sh"
pass=0
fail=0
skipped=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
summary() { echo "test-partition-repl: $pass passed, $fail failed, $skipped skipped"; }

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
    echo "skip test-partition-repl (needs root and ip from iproute2)"
    skipped=1
    summary
    exit 0
fi
if [ ! -x "$BIN/replpoke" ] || [ ! -x "$BIN/store-node" ]; then
    bad "$BIN/store-node and $BIN/replpoke must be built (make all)"
    summary
    exit 1
fi
tag=$$
nsb=rb$tag
ns=("" r1$tag r2$tag r3$tag) # member i's namespace; its veth m<i>$tag there, b<i>$tag on the bridge
if ! ip netns add "$nsb" 2>/dev/null; then
    echo "skip test-partition-repl (cannot create a network namespace here)"
    skipped=1
    summary
    exit 0
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/partrepl.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    for i in 1 2 3; do ip netns del "${ns[$i]}" 2>/dev/null; done
    ip netns del "$nsb" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
tails() {
    for i in 1 2 3; do
        echo "--- member $i (${ns[$i]}, 10.213.8.$i): last log lines"
        tail -n 15 "$dir/m$i/err"
    done
}
fatal() { bad "$*"; tails; summary; exit 1; }

# The bridge and the three members' links, all inside namespaces of ours (the host's untouched).
ip -n "$nsb" link set lo up && ip -n "$nsb" link add br0 type bridge && ip -n "$nsb" link set br0 up ||
    fatal "bridge namespace"
for i in 1 2 3; do
    ip netns add "${ns[$i]}" &&
        ip -n "${ns[$i]}" link add "m$i$tag" type veth peer name "b$i$tag" netns "$nsb" &&
        ip -n "$nsb" link set "b$i$tag" master br0 && ip -n "$nsb" link set "b$i$tag" up &&
        ip -n "${ns[$i]}" addr add "10.213.8.$i/24" dev "m$i$tag" &&
        ip -n "${ns[$i]}" link set lo up && ip -n "${ns[$i]}" link set "m$i$tag" up || fatal "member $i's namespace network"
done

ET=500                   # STORE_ELECTION_MS
CUT_MS=$((3 * ET + 1000)) # the old leader no longer leads this long after the cut
RAFT_PORT=7200            # each namespace is new and empty: fixed ports are free by construction
replicas=10.213.8.1:$RAFT_PORT,10.213.8.2:$RAFT_PORT,10.213.8.3:$RAFT_PORT
for i in 1 2 3; do
    mkdir -p "$dir/m$i/data"
    ip netns exec "${ns[$i]}" env DATA_DIR="$dir/m$i/data" LOG_LEVEL=info STORE_REPLICAS=$replicas STORE_REPLICA_ID=$i \
        STORE_ELECTION_MS=$ET STORE_CMD_ENDPOINT="ipc://$dir/m$i/cmd.sock" STORE_PUB_ENDPOINT="ipc://$dir/m$i/pub.sock" \
        "$BIN/store-node" >"$dir/m$i/out" 2>"$dir/m$i/err" &
    pids+=($!)
done

now_ms() { date +%s%3N; }
poke() { local i=$1; shift; "$BIN/replpoke" "ipc://$dir/m$i/cmd.sock" "$@"; }
# mstat I: member I's STATS into st[name] (leading, term, leader, committed, records, applied, epoch).
declare -A st
mstat() {
    local out k v
    st=()
    out=$(poke "$1" stats 500) || return 1
    while read -r k v; do st[$k]=$v; done <<<"$out"
}
# The one member that leads, named by the other two in the same term, not member $1 (0: any).
# Sets leader and term.
leader=0 term=0
one_leader() {
    local i l=0 t=0 n=0
    declare -A lead=() trm=() named=()
    for i in 1 2 3; do
        [ "$i" = "$1" ] && continue
        mstat "$i" || return 1
        lead[$i]=${st[leading]} trm[$i]=${st[term]} named[$i]=${st[leader]}
        if [ "${st[leading]}" = 1 ]; then l=$i t=${st[term]} n=$((n + 1)); fi
    done
    [ $n = 1 ] || return 1
    for i in 1 2 3; do
        [ "$i" = "$1" ] && continue
        [ "${trm[$i]}" = "$t" ] && [ "${named[$i]}" = "$l" ] || return 1
    done
    leader=$l term=$t
}
# Acknowledged writes: "uid message version" lines.
acked=()
# put I UID MSG TIMEOUT_MS: member I's answer in $ans; acknowledged ones are recorded.
put() {
    ans=$(poke "$1" put "$2" "$3" "$4")
    case $ans in OK*) acked+=("$2 $3 ${ans#OK version }") ;; esac
}

# ---- 1. three members, one leader ----------------------------------------------------------------
if ! until_ok 30 one_leader 0; then
    for i in 1 2 3; do echo "member $i: $(poke $i stats 500 | tr '\n' ' ')"; done
    fatal "three members (10.213.8.1-3, each in its own network namespace) elect one leader within 30 s"
fi
L=$leader T0=$term
ok "three members in their own network namespaces elected member $L (term $T0); the others name it"
put "$L" ann before 5000
if [[ $ans == "OK version "* ]]; then
    ok "a write through the leader (member $L) is acknowledged: $ans"
else
    bad "a write through the leader (member $L) answered: $ans"
fi
F=$((L % 3 + 1)) # a follower
put "$F" ann via-follower 5000
if [ "$ans" = "ENOTLEADER leader $L" ]; then
    ok "a write sent to a follower (member $F) is refused: $ans"
else
    bad "a write sent to a follower (member $F) answered '$ans' (expected ENOTLEADER leader $L)"
fi
for u in bob cid dee; do put "$L" $u before 5000; done
[ ${#acked[@]} = 4 ] || bad "writes through the leader before the cut: ${#acked[@]} of 4 acknowledged"
before=${#acked[@]}

# ---- 2. the leader cut off -----------------------------------------------------------------------
t_cut=$(now_ms)
ip -n "$nsb" link set "b$L$tag" down || fatal "taking member $L's bridge port down"
# A write sent at the cut: it can reach the old leader's log but never a majority.
poke "$L" put eve at-cut $((CUT_MS + 1000)) >"$dir/at-cut" &
cut_writer=$!
not_leading() { mstat "$L" && [ "${st[leading]}" = 0 ]; }
if until_ok $(((CUT_MS + 999) / 1000 + 1)) not_leading && t_down=$(now_ms) && [ $((t_down - t_cut)) -le $CUT_MS ]; then
    ok "cut off: the old leader (member $L) says it no longer leads $((t_down - t_cut)) ms after the cut (bound $CUT_MS ms = 3 x STORE_ELECTION_MS + 1 s)"
else
    bad "cut off: the old leader (member $L) still leads $(($(now_ms) - t_cut)) ms after the cut (bound $CUT_MS ms): $(poke $L stats 500 | tr '\n' ' ')"
fi
if until_ok 15 one_leader "$L" && [ "$term" -gt "$T0" ]; then
    N=$leader T1=$term
    ok "cut off: the other two elected member $N in term $T1 (> $T0) $(($(now_ms) - t_cut)) ms after the cut"
else
    for i in 1 2 3; do echo "member $i: $(poke $i stats 500 | tr '\n' ' ')"; done
    fatal "cut off: the two connected members elect no leader of a higher term within 15 s"
fi
wait $cut_writer
r=$(cat "$dir/at-cut")
if [ -n "$r" ] && [[ $r != OK* ]]; then
    ok "cut off: the write sent to the old leader at the cut is not acknowledged: $r"
else
    bad "cut off: the write sent to the old leader at the cut answered '$r'"
    [[ $r == OK* ]] && acked+=("eve at-cut ${r#OK version }")
fi
until_ok 5 eval '[ $(now_ms) -ge $((t_cut + CUT_MS)) ]' # the deadline itself (a clock, not a sync)
put "$L" eve after-deadline 2000
if [ -n "$ans" ] && [[ $ans != OK* ]]; then
    ok "cut off: a write sent to the old leader after the deadline is not acknowledged: $ans"
else
    bad "cut off: a write sent to the old leader after the deadline answered '$ans'"
fi
put "$N" ann during 5000
if [[ $ans == "OK version "* ]]; then
    ok "cut off: a write through the new leader (member $N) is acknowledged: $ans"
else
    bad "cut off: a write through the new leader (member $N) answered: $ans"
fi
# Rounds of two writes sent at once, one to each member that led: never both acknowledged (the new
# leader gets 3 s, room for a loaded machine; the old one 1 s).
both=0 new_ok=0 old_ok=0 rounds=5 seen=()
for k in $(seq 1 $rounds); do
    poke "$L" put "old$k" round-$k 1000 >"$dir/old$k" &
    p1=$!
    poke "$N" put "new$k" round-$k 3000 >"$dir/new$k" &
    p2=$!
    wait $p1 $p2
    a=$(cat "$dir/old$k") b=$(cat "$dir/new$k")
    seen+=("[$L: $a | $N: $b]")
    [[ $a == OK* ]] && old_ok=$((old_ok + 1)) && acked+=("old$k round-$k ${a#OK version }")
    [[ $b == OK* ]] && new_ok=$((new_ok + 1)) && acked+=("new$k round-$k ${b#OK version }")
    [[ $a == OK* && $b == OK* ]] && both=$((both + 1))
done
if [ $both = 0 ] && [ $old_ok = 0 ] && [ $new_ok = $rounds ]; then
    ok "cut off: $rounds rounds of simultaneous writes to both: the new leader acknowledged $new_ok, the old one none (${seen[0]})"
else
    bad "cut off: simultaneous writes: both acknowledged in $both rounds, old leader $old_ok, new leader $new_ok of $rounds: ${seen[*]}"
fi

# ---- 3. healed -----------------------------------------------------------------------------------
t_heal=$(now_ms)
ip -n "$nsb" link set "b$L$tag" up || fatal "bringing member $L's bridge port up"
declare -A ls
caught_up() {
    mstat "$N" || return 1
    for k in leading term committed records applied epoch; do ls[$k]=${st[$k]}; done
    mstat "$L" || return 1
    [ "${ls[leading]}" = 1 ] && [ "${st[leading]}" = 0 ] && [ "${st[leader]}" = "$N" ] && [ "${st[term]}" = "${ls[term]}" ] &&
        [ "${st[committed]}" = "${ls[committed]}" ] && [ "${st[records]}" = "${ls[records]}" ] &&
        [ "${st[applied]}" = "${ls[applied]}" ] && [ "${st[epoch]}" = "${ls[epoch]}" ]
}
if until_ok 20 caught_up; then
    ok "healed: member $L rejoined as a follower of member $N (term ${ls[term]}) and caught up in $(($(now_ms) - t_heal)) ms: committed sequence ${st[committed]}, ${st[records]} records, applied index ${st[applied]}, epoch as the leader's"
else
    bad "healed: member $L did not catch up within 20 s: member $L {$(poke $L stats 500 | tr '\n' ' ')} leader $N {$(poke $N stats 500 | tr '\n' ' ')}"
fi
if [ "${ls[term]:-}" = "$T1" ] && one_leader 0 && [ "$leader" = "$N" ] && [ "$term" = "$T1" ]; then
    ok "healed: member $N keeps the leadership in term $T1 (the rejoining member deposed no one)"
else
    bad "healed: leadership after the heal: member $leader term $term (expected member $N, term $T1)"
fi
put "$L" fay after-heal 5000
if [ "$ans" = "ENOTLEADER leader $N" ]; then
    ok "healed: the old leader refuses writes, naming the new one: $ans"
else
    bad "healed: a write to the old leader answered '$ans' (expected ENOTLEADER leader $N)"
fi

# ---- 4. nothing acknowledged lost ----------------------------------------------------------------
# A uid written twice keeps its last acknowledged write (ann: before, then during).
declare -A last
for a in "${acked[@]}"; do set -- $a; last[$1]="$2 $3"; done
lost=() maxb=0 minp=
for k in "${!acked[@]}"; do
    set -- ${acked[$k]}
    if [ $k -lt $before ]; then [ "$3" -gt $maxb ] && maxb=$3; else [ -z "$minp" ] || [ "$3" -lt "$minp" ] && minp=$3; fi
done
for u in "${!last[@]}"; do
    set -- ${last[$u]}
    r=$(poke "$N" get "$u" 5000)
    [ "$r" = "OK version $2 message $1" ] || lost+=("$u: acknowledged version $2 '$1', leader has '$r'")
done
if [ ${#acked[@]} -ge $((before + 1 + rounds)) ] && [ ${#lost[@]} = 0 ]; then
    ok "nothing lost: all ${#last[@]} acknowledged records are on the final leader (member $N) with their version and message"
else
    bad "acknowledged writes ${#acked[@]}, not on the final leader as acknowledged: ${lost[*]:-none}"
fi
# What the old leader was sent while cut off and did not acknowledge never appears: a write it took
# into its log at the cut was never committed, and the new term's log replaced it.
ghosts=()
for u in eve $(seq -f old%g 1 $rounds); do
    [ -n "${last[$u]:-}" ] && continue
    r=$(poke "$N" get "$u" 5000)
    [ "$r" = NOTFOUND ] || ghosts+=("$u: $r")
done
if [ ${#ghosts[@]} = 0 ]; then
    ok "nothing unacknowledged applied: the writes the cut-off leader was sent (eve, old1-$rounds) are NOTFOUND on the final leader"
else
    bad "writes the cut-off leader did not acknowledge are on the final leader: ${ghosts[*]}"
fi
if [ -n "$minp" ] && [ "$minp" -gt $maxb ]; then
    ok "versions: every version acknowledged after the cut (from $minp) is above every one before it (up to $maxb)"
else
    bad "versions: acknowledged before the cut up to $maxb, after it from ${minp:-none}"
fi
[ $fail = 0 ] || tails
summary
[ $fail = 0 ]
