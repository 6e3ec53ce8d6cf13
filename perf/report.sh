#!/usr/bin/env bash
# sekisho load report: the whole matrix on this machine, in one run, written to
# perf/results/<date>-report.md with two SVG plots beside it. Reports only — it never
# asserts a rate (the machines are shared and noisy).
#
#   perf/report.sh [--seconds S] [--sizes "64 imix 1400"] [--sessions "1 1000 10000"]
#                  [--io "xdp socket" (or xdp+router)] [--handshake N] [--groups "x25519 modp2048"]
#                  [--no-peers] [--quick] [--no-build] [--keep]
#
# 1. the machine: CPU model, cores, memory, kernel, rustc;
# 2. the raw crypto ceiling of one core: `sekisho bench --json` (aes128-gcm, aes256-sha1);
# 3. the full stack: `sekisho demo --json` for every size × sessions × io (the demo
#    builds its own namespaces, runs `sekisho run` in one, brings up N simulated
#    L2TP/IPsec clients and pushes traffic both ways for S seconds);
# 4. handshakes: `sekisho-perf handshake --clients N --group G` for each group: complete
#    sessions per control-core second, step by step, and RSS per session;
# 5. peers side by side at 1400 B in the same three-namespace topology: sekisho's demo
#    with one client (xdp+router, xdp, socket) and perf/peers.sh (boringtun, strongSwan's
#    userspace ESP with kernel-libipsec);
# 6. `sekisho-perf matrix` turns the work directory into the Markdown and the plots.
#
# --quick: 2 s per traffic run, 2 000-client handshakes, sessions "1 1000".
# Needs root (namespaces, XDP), iproute2, clang (XDP program); perf/peers.sh installs
# what the peers need. CARGO_TARGET_DIR is honoured. About 15 minutes in full here.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=5
SIZES="64 imix 1400"
SESSIONS="1 1000 10000"
IOS="xdp socket"
HANDSHAKE=10000
GROUPS_="x25519 modp2048"
PEERS=1
BUILD=1
KEEP=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECS=$2; shift ;;
        --sizes) SIZES=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --io) IOS=$2; shift ;;
        --handshake) HANDSHAKE=$2; shift ;;
        --groups) GROUPS_=$2; shift ;;
        --no-peers) PEERS=0 ;;
        --quick) SECS=2; HANDSHAKE=2000; SESSIONS="1 1000" ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "report.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" != 0 ]; then
    echo "report.sh: needs root (network namespaces, XDP, AF_XDP)" >&2
    exit 1
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
if [ $BUILD = 1 ]; then
    command -v clang >/dev/null || { echo "report.sh: needs clang (apt-get install clang)" >&2; exit 1; }
    echo "== building sekisho, sekisho-perf" >&2
    CARGO_TARGET_DIR=$TARGET cargo build --release --bin sekisho --bin sekisho-perf >&2
fi
for b in sekisho sekisho-perf; do
    [ -x "$BIN/$b" ] || { echo "report.sh: $BIN/$b missing (build it or drop --no-build)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/sekisho-report.XXXXXX)
cleanup() {
    local rc=$?
    if [ $KEEP = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
DATE=$(date -u +%Y-%m-%dT%H%M%SZ)

# 1. The machine.
{
    echo "date        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "cpu         $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "cores       $(nproc) online ($(grep -c ^processor /proc/cpuinfo) listed)"
    echo "memory      $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel      $(uname -r)"
    echo "rustc       $(rustc -V 2>/dev/null || echo '?')"
    echo "sekisho     $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "load        $(cut -d' ' -f1-3 /proc/loadavg) at start (shared VM: other tenants' work is not visible here)"
} > "$WORK/machine.txt"
cat "$WORK/machine.txt" >&2

# 2. The ceiling.
echo "== sekisho bench" >&2
"$BIN/sekisho" bench --json --transform aes128-gcm,aes256-sha1 > "$WORK/bench.json"

# demo_row FILE CLIENTS SIZE IO: one demo run, its JSON (or a failure line) appended.
# IO is xdp, socket, or xdp+router (router mode: the inside veth through AF_XDP too).
demo_row() {
    local file=$1 clients=$2 size=$3 io=$4 out err
    local flags=(--io "${io%+router}")
    [ "$io" = xdp+router ] && flags+=(--inside xdp)
    echo "== demo: $clients client(s), $size B, io $io, ${SECS}s" >&2
    out=$(mktemp "$WORK/demo.XXXXXX")
    err=$out.err
    if "$BIN/sekisho" demo --clients "$clients" --size "$size" "${flags[@]}" \
        --seconds "$SECS" --json > "$out" 2> "$err" && [ -s "$out" ]; then
        tr -d '\n' < "$out" >> "$file"
        echo >> "$file"
        tail -c 300 "$err" | tr '\r' '\n' | tail -2 >&2
    else
        local why
        why=$(tail -c 400 "$err" | tr '\r\n' '  ' | tr -c 'A-Za-z0-9 :=,._()/+-' ' ' | sed 's/  */ /g')
        printf '{"failed":true,"clients":%s,"size":"%s","io":"%s","error":"%s"}\n' \
            "$clients" "$size" "$io" "$why" >> "$file"
        echo "   failed: $why" >&2
    fi
}

# 3. The matrix.
for io in $IOS; do
    for n in $SESSIONS; do
        for size in $SIZES; do
            demo_row "$WORK/matrix.jsonl" "$n" "$size" "$io"
        done
    done
done

# 4. Handshakes.
for g in $GROUPS_; do
    echo "== handshake: $HANDSHAKE clients, $g" >&2
    if "$BIN/sekisho-perf" handshake --clients "$HANDSHAKE" --group "$g" \
        --sekisho "$BIN/sekisho" > "$WORK/hs.json" 2> "$WORK/hs.err"; then
        cat "$WORK/hs.json" >> "$WORK/handshake.jsonl"
    else
        echo "   failed:" >&2
        tail -5 "$WORK/hs.err" >&2
    fi
done

# 5. Peers at 1400 B, sekisho first (one client: one tunnel, like the peers' runs).
if [ $PEERS = 1 ]; then
    for io in xdp+router $IOS; do
        demo_row "$WORK/sekisho-peer.jsonl" 1 1400 "$io"
    done
    echo "== peers (perf/peers.sh)" >&2
    PEER_SECS=${SECS%.*}
    [ "$PEER_SECS" -ge 3 ] 2>/dev/null || PEER_SECS=3
    if ! bash "$ROOT/perf/peers.sh" --seconds "$PEER_SECS" --json-out "$WORK/peers.jsonl" \
        > /dev/null 2> "$WORK/peers.err"; then
        echo "   perf/peers.sh failed (its rows say why where it could tell):" >&2
    fi
    tail -5 "$WORK/peers.err" >&2
fi

# 6. The report.
mkdir -p "$ROOT/perf/results"
OUT=$ROOT/perf/results/$DATE-report.md
"$BIN/sekisho-perf" matrix --dir "$WORK" --out "$OUT" --date "$DATE" \
    --command "perf/report.sh${ARGS[*]:+ ${ARGS[*]}}"
echo "report: $OUT" >&2
