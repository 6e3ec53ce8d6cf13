#!/usr/bin/env bash
# sekisho data-path measurement: gen → gateway → sink in three network namespaces of
# our own, next to the no-crypto forwarder on the same veths, for 64 B, IMIX and
# 1400 B, and the gateway with 10 000 sessions against 1. Prints a Markdown table and
# writes it to perf/results/<date>.md. Reports only: it never asserts a rate.
#
#   perf/run.sh [--quick] [--seconds S] [--sizes "64 imix 1400"] [--batch N]
#               [--lat-rate PPS] [--repeat N] [--no-build] [--keep]
#
# Per size: (a) gateway, 1 session, generator flat out; (b) the no-crypto forwarder
# on the same veths, same packets; (c) gateway, 10 000 sessions; (d, e) gateway and
# forwarder at --lat-rate (default 20 000 pps) for latency below saturation.
# --repeat N runs the whole set N times, interleaved; the ratios are then medians.
# --batch is the worker's (and forwarder's) batch size, 32 by default: AF_XDP copy
# mode transmits at most 32 frames per wakeup, and sekisho's Xsk::tx_batch wakes the
# kernel once per call, so a batch of 64 overflows the tx ring (see perf/README.md).
#
# Needs root (namespaces, XDP, AF_XDP), iproute2 and clang (the XDP program is built
# by build.rs). CARGO_TARGET_DIR is honoured. Namespaces are deleted at the end, also
# on failure or Ctrl-C; only processes started here are stopped, by PID.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_CASE=5
SIZES="64 imix 1400"
QUICK=0
BUILD=1
KEEP=0
MANY=10000
BATCH=32
LAT_RATE=20000
REPEAT=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; SECONDS_PER_CASE=2 ;;
        --seconds) SECONDS_PER_CASE=$2; shift ;;
        --sizes) SIZES=$2; shift ;;
        --batch) BATCH=$2; shift ;;
        --lat-rate) LAT_RATE=$2; shift ;;
        --repeat) REPEAT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
CMDLINE="perf/run.sh"
if [ $QUICK = 1 ]; then CMDLINE="$CMDLINE --quick"; fi
if [ $QUICK = 0 ] && [ "$SECONDS_PER_CASE" != 5 ]; then CMDLINE="$CMDLINE --seconds $SECONDS_PER_CASE"; fi
if [ "$SIZES" != "64 imix 1400" ]; then CMDLINE="$CMDLINE --sizes \"$SIZES\""; fi
if [ "$BATCH" != 32 ]; then CMDLINE="$CMDLINE --batch $BATCH"; fi
if [ "$LAT_RATE" != 20000 ]; then CMDLINE="$CMDLINE --lat-rate $LAT_RATE"; fi
if [ "$REPEAT" != 1 ]; then CMDLINE="$CMDLINE --repeat $REPEAT"; fi

if [ "$(id -u)" != 0 ]; then
    echo "run.sh: needs root (network namespaces, XDP, AF_XDP)" >&2
    exit 1
fi
command -v ip >/dev/null || { echo "run.sh: needs iproute2" >&2; exit 1; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/sekisho-perf
if [ $BUILD = 1 ]; then
    command -v clang >/dev/null || { echo "run.sh: needs clang for the XDP program (apt-get install clang)" >&2; exit 1; }
    echo "== building sekisho-perf" >&2
    CARGO_TARGET_DIR=$TARGET cargo build --release --bin sekisho-perf >&2
fi
[ -x "$BIN" ] || { echo "run.sh: $BIN missing (build it or drop --no-build)" >&2; exit 1; }

ID=$$
GEN=skp-gen-$ID
GW=skp-gw-$ID
SINK=skp-sink-$ID
WORK=$(mktemp -d /tmp/sekisho-perf.XXXXXX)
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    for n in "$GEN" "$GW" "$SINK"; do
        ip netns del "$n" 2>/dev/null || true
    done
    if [ $KEEP = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Topology: gen:pg0 198.18.0.2 ⇄ gw:po0 198.18.0.1 | gw:pi0 198.18.1.1 ⇄ sink:ps0 198.18.1.2
# One queue per worker (1 worker). MTU 1500 on every end (≤ 3506 for the
# non-frags XDP program); clients' inner pool 198.19.0.0/16. All in RFC 2544's
# benchmarking range, inside our namespaces only.
Q=1
for n in "$GEN" "$GW" "$SINK"; do
    ip netns add "$n"
    ip -n "$n" link set lo up
done
ip -n "$GEN" link add pg0 numrxqueues $Q numtxqueues $Q type veth \
    peer name po0 netns "$GW" numrxqueues $Q numtxqueues $Q
ip -n "$GW" link add pi0 numrxqueues $Q numtxqueues $Q type veth \
    peer name ps0 netns "$SINK" numrxqueues $Q numtxqueues $Q
ip -n "$GEN" addr add 198.18.0.2/24 dev pg0
ip -n "$GW" addr add 198.18.0.1/24 dev po0
ip -n "$GW" addr add 198.18.1.1/24 dev pi0
ip -n "$SINK" addr add 198.18.1.2/24 dev ps0
for x in "$GEN pg0" "$GW po0" "$GW pi0" "$SINK ps0"; do
    set -- $x
    ip -n "$1" link set "$2" mtu 1500 up
done
mac() { ip -n "$1" -j link show "$2" | sed -n 's/.*"address":"\([0-9a-f:]*\)".*/\1/p'; }
MAC_PG=$(mac "$GEN" pg0); MAC_PO=$(mac "$GW" po0)
MAC_PI=$(mac "$GW" pi0); MAC_PS=$(mac "$SINK" ps0)
ip -n "$GEN" neigh replace 198.18.0.1 lladdr "$MAC_PO" dev pg0 nud permanent
ip -n "$GW" neigh replace 198.18.0.2 lladdr "$MAC_PG" dev po0 nud permanent
ip -n "$GW" neigh replace 198.18.1.2 lladdr "$MAC_PS" dev pi0 nud permanent
ip -n "$SINK" neigh replace 198.18.1.1 lladdr "$MAC_PI" dev ps0 nud permanent

wait_file() { # file pid what log
    local i
    for i in $(seq 1 300); do
        [ -s "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { echo "run.sh: $3 exited early:" >&2; cat "$4" >&2 2>/dev/null || true; return 1; }
        sleep 0.1
    done
    echo "run.sh: $3 not ready after 30 s" >&2
    return 1
}

veth_dump() { # tag
    for n in gen gw sink; do
        local ns
        case $n in gen) ns=$GEN ;; gw) ns=$GW ;; sink) ns=$SINK ;; esac
        ip -n "$ns" -s -j link show > "$DIR/veth-$n-$1.json"
    done
}

stop_pid() { # pid
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local p new=()
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && new+=("$p"); done
    PIDS=("${new[@]:-}")
}

# run_case NAME SIZE MODE SESSIONS RATE [KEYS_FROM]
run_case() {
    local name=$1 size=$2 mode=$3 sessions=$4 rate=$5 keys_from=${6:-}
    DIR=$WORK/$name
    mkdir -p "$DIR"
    echo "== $name: $mode, $sessions session(s), size $size, rate $rate, ${SECONDS_PER_CASE}s" >&2
    local keys=$DIR/keys.json srv
    if [ "$mode" = gateway ]; then
        ip netns exec "$GW" "$BIN" gateway --outside po0 --inside pi0 --sessions "$sessions" \
            --transform aes128-gcm --workers 1 --cpus 1 --batch "$BATCH" --keys "$keys" \
            > "$DIR/server.json" 2> "$DIR/server.log" &
        srv=$!; PIDS+=("$srv")
        wait_file "$keys" "$srv" gateway "$DIR/server.log"
    else
        # The forwarder needs no keys; the generator and the sink reuse the table of
        # the gateway case before it (same packets on the wire).
        cp "$WORK/$keys_from/keys.json" "$keys"
        ip netns exec "$GW" "$BIN" forward --outside po0 --inside pi0 --cpus 1 --batch "$BATCH" \
            --ready "$DIR/server.ready" > "$DIR/server.json" 2> "$DIR/server.log" &
        srv=$!; PIDS+=("$srv")
        wait_file "$DIR/server.ready" "$srv" forwarder "$DIR/server.log"
    fi
    ip netns exec "$SINK" "$BIN" sink --ifname ps0 --queues $Q --keys "$keys" --cpu 0 \
        --seconds $((SECONDS_PER_CASE + 120)) --ready "$DIR/sink.ready" \
        > "$DIR/sink.json" 2> "$DIR/sink.log" &
    local snk=$!; PIDS+=("$snk")
    wait_file "$DIR/sink.ready" "$snk" sink "$DIR/sink.log"
    veth_dump before
    ip netns exec "$GEN" "$BIN" gen --ifname pg0 --keys "$keys" --size "$size" --rate "$rate" \
        --seconds "$SECONDS_PER_CASE" --cpu 0 --pool-mb 3072 --max-pps 600000 \
        > "$DIR/gen.json" 2> "$DIR/gen.log" || { cat "$DIR/gen.log" >&2; return 1; }
    # Let the worker drain its ring, stop it (nothing more reaches the sink), then let
    # the sink read what is queued and stop it. What is still queued when either stops
    # is reported as left_at_stop.
    sleep 1
    stop_pid "$srv"
    sleep 0.3
    stop_pid "$snk"
    veth_dump after
    grep -h -E "^(gen|sink|gateway|forward):|final" "$DIR/gen.log" "$DIR/server.log" "$DIR/sink.log" >&2 || true
}

for rep in $(seq 1 "$REPEAT"); do
    r=""
    [ "$REPEAT" -gt 1 ] && r="-r$rep"
    for size in $SIZES; do
        case $size in
            imix) tag=imix ;;
            *) tag=$(printf '%04d' "$size") ;;
        esac
        run_case "$tag-a-gateway-1$r" "$size" gateway 1 max
        run_case "$tag-b-forward$r" "$size" forward 1 max "$tag-a-gateway-1$r"
        run_case "$tag-c-gateway-$MANY$r" "$size" gateway "$MANY" max
        run_case "$tag-d-gateway-1-lat$r" "$size" gateway 1 "$LAT_RATE"
        run_case "$tag-e-forward-lat$r" "$size" forward 1 "$LAT_RATE" "$tag-d-gateway-1-lat$r"
    done
done

DATE=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$ROOT/perf/results"
OUT=$ROOT/perf/results/$DATE.md
"$BIN" report --dir "$WORK" --out "$OUT" --date "$DATE" --command "$CMDLINE"
echo >&2
echo "written: perf/results/$DATE.md" >&2
