#!/usr/bin/env bash
# Control-plane scale: N L2TP + PPP (MS-CHAPv2) sessions held against `sekisho run`
# (plain L2TP, sockets) in network namespaces of our own; reports the setup rate seen by
# the clients and the gateway's CPU use while the sessions sit idle (LCP echo every 30 s
# and HELLO every 60 s are all that happens). Report only — never asserts a rate.
# Usage: perf/hold.sh [SESSIONS] [IDLE_SECONDS]     (root; builds with cargo first)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
IDLE=${2:-60}
cargo build --release --bin sekisho --bin sekisho-perf >&2
BIN=target/release
G=skhg$$; C=skhc$$; DIR=$(mktemp -d)
GW_PID=""
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
    ip netns del $G 2>/dev/null || true; ip netns del $C 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
ip netns add $G; ip netns add $C
ip -n $G link set lo up; ip -n $C link set lo up
ip -n $G link add skh0 type veth peer name skh1 netns $C
ip -n $G addr add 10.77.0.254/24 dev skh0; ip -n $C addr add 10.77.0.2/24 dev skh1
ip -n $G link set skh0 up; ip -n $C link set skh1 up
ip netns exec $G sysctl -qw net.ipv6.conf.default.disable_ipv6=1
cat > "$DIR/gw.toml" <<TOML
[gateway]
listen = "10.77.0.254"
io = "socket"
tun_name = "skht0"
[l2tp]
require_ipsec = false
[ppp]
local_address = "10.96.0.1"
[pool]
range = "10.97.0.0/16"
[[user]]
name = "vpnuser"
password = "vpnpass123"
TOML
RUST_LOG=warn ip netns exec $G $BIN/sekisho run -c "$DIR/gw.toml" &
GW_PID=$!
sleep 1
ticks() { awk '{print $14+$15}' /proc/$GW_PID/stat; }
# The control thread is the process's main thread (TID = PID); workers are sekisho-w*.
cticks() { awk '{print $14+$15}' /proc/$GW_PID/task/$GW_PID/stat; }
HZ=$(getconf CLK_TCK)
ip netns exec $C $BIN/sekisho-perf hold --gateway 10.77.0.254 --local 10.77.0.2 \
    --sessions "$N" --hold-seconds $((IDLE + 5)) > "$DIR/hold.json" &
HOLD=$!
# Wait for all sessions, then measure the gateway's CPU over IDLE seconds.
until [ -s "$DIR/hold.json" ] || ! kill -0 $HOLD 2>/dev/null; do sleep 1; done
cat "$DIR/hold.json"
sleep 2
t0=$(ticks); c0=$(cticks); s0=$(date +%s.%N)
sleep "$IDLE"
t1=$(ticks); c1=$(cticks); s1=$(date +%s.%N)
RSS=$(awk '/VmRSS/{print $2}' /proc/$GW_PID/status)
wait $HOLD || true
awk -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" -v n="$N" -v rss="$RSS" 'BEGIN{
  cpu=(t1-t0)/hz; ccpu=(c1-c0)/hz; wall=s1-s0;
  printf "{\"sessions\":%d,\"idle_seconds\":%.1f,\"gateway_cpu_percent\":%.2f,\"control_thread_cpu_percent\":%.2f,\"gateway_rss_kb\":%d,\"rss_per_session_bytes\":%.0f}\n", n, wall, 100*cpu/wall, 100*ccpu/wall, rss, rss*1024/n }'
