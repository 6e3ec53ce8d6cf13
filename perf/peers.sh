#!/usr/bin/env bash
# Userspace throughput per CPU core of two third-party VPN data planes, for comparison
# with sekisho's: boringtun (userspace WireGuard) and strongSwan's charon with the
# kernel-libipsec plugin (userspace ESP, IKEv2 PSK, tunnel mode, ESP aes128gcm16 in
# UDP 4500). Each runs in the three-namespace veth topology of `sekisho demo`:
#
#   client ns                gateway ns                          inside ns
#   veth 10.77.0.2/24 ── veth 10.77.0.254/24    (tunnel iface)   veth 10.88.0.2/24
#                             veth 10.88.0.1/24 ──────────────────┘
#
# The client's tunnel address is 10.99.0.2 (gateway side 10.99.0.1 for WireGuard);
# the client routes 10.88.0.0/24 into the tunnel, the inside ns routes 10.99.0.0/24
# back via 10.88.0.1, the gateway ns forwards (ip_forward=1). MTU 1500 on the veths.
#
# Per peer: the gateway-side process runs pinned to CPU 1; everything else (this
# script, the client-side tunnel process, both iperf3 ends) on CPU 0. iperf3 UDP
# --bidir from the client ns (bound to 10.99.0.2) to 10.88.0.2, -l 1372 so that the
# inner IPv4 packets are 1400 bytes, at --rate per direction (default 3G: more than
# either path carries here). up = client → inside, down = inside → client.
#
# The window: it opens 0.3 s after the first 500 test packets reach the gateway and
# lasts S − 0.6 s, inside iperf3's sending period. Over it are read the gateway
# process's CPU time (sum of /proc/PID/task/*/schedstat field 1 over all threads, ns),
# the gateway namespace's veth packet counters (/proc/PID/net/dev) and CPU 1's
# /proc/stat line. A data plane with deep queues (libipsec's are unbounded) keeps
# working after the senders stop, so the CPU is not read around the whole iperf3 run.
#
# Prints one JSON object per peer on stdout (progress on stderr):
#   peer, size (inner IPv4 bytes), seconds, rate (offered per direction);
#   from iperf3's receivers (sum_received, sum_received_bidir_reverse; UDP payload
#   bits as iperf3 counts them; null when iperf3 gave no end-of-test figures):
#     rx_gbps_up, rx_gbps_down, rx_gbps (their sum), lost_percent_up/_down;
#   gw_cpu_cores: the gateway process's CPU seconds / window seconds;
#   gbps_per_core = rx_gbps / gw_cpu_cores;
#   window_seconds;
#   from the gateway's own veth counters over the window, counted as 1400-byte inner
#   IPv4 packets (sekisho's perf/run.sh convention): gw_gbps_up (sent to the inside
#   ns: decrypted), gw_gbps_down (sent to the client: encrypted), gw_gbps (sum),
#   gw_gbps_per_core = gw_gbps / gw_cpu_cores, gw_offered_gbps_up/_down (what reached
#   the gateway from the client / the inside ns);
#   cpu1_busy: CPU 1's non-idle share over the window (includes softirq work not
#     charged to the gateway process, and anything else that ran there);
#   version.
# rx_* are what iperf3 received, so they are bounded by CPU 0 as well (client tunnel
# process + both iperf3 ends); gw_* is what the gateway itself put out.
# It reports, never asserts: the machine is shared and noisy.
#
#   perf/peers.sh [--seconds S] [--rate R] [--only boringtun|strongswan]
#                 [--json-out FILE] [--keep]
#
#   --seconds S      iperf3 duration per peer (integer, default 10)
#   --rate R         iperf3 -b per direction (default 3G)
#   --only P         run one peer only
#   --json-out FILE  also append the JSON objects to FILE, one per line
#   --keep           keep the work directory (logs, configs, iperf3 JSON)
# Environment: BORINGTUN (path of boringtun-cli), PEERS_DIR (cargo install root),
# SW_CRYPTO (strongSwan crypto plugins loaded first, so they provide AES-GCM;
# default "aesni openssl", stock strongSwan precedence; the pure-C aes+gcm plugins
# alone are ~10× slower).
#
# Needs root (namespaces, TUN), 2 CPUs, iproute2, taskset, iperf3, jq, ping, and per
# peer:
#  - boringtun: boringtun-cli from $BORINGTUN, /work/peers/bin/boringtun-cli, PATH,
#    $PEERS_DIR/bin, or else `cargo install boringtun-cli --locked --root
#    ${PEERS_DIR:-/var/tmp/sekisho-peers}` (needs cargo); `wg` (wireguard-tools).
#    One boringtun-cli per side (--threads 1); interfaces skpg<pid> / skpc<pid>
#    (their UAPI sockets in /var/run/wireguard are not per namespace).
#  - strongSwan: charon-systemd, swanctl and the kernel-libipsec plugin (apt:
#    charon-systemd strongswan-swanctl libcharon-extra-plugins
#    libstrongswan-extra-plugins libstrongswan-standard-plugins). One charon per
#    side with its own strongswan.conf (STRONGSWAN_CONF) and vici socket in the work
#    directory; IKEv2 PSK, aes128-sha256-x25519, tunnel 10.99.0.2/32 <-> 10.88.0.0/24,
#    ESP aes128gcm16, UDP-encapsulated (libipsec's TUN ipsec0, MTU 1400).
# Missing apt packages are installed with apt-get (--no-install-recommends);
# strongSwan's systemd units are masked (and stopped) if present and not masked, so
# that no host charon runs. Namespaces skpp-{cli,gw,in}-<pid> are deleted at the end,
# also on failure or Ctrl-C; only the processes started here are stopped, by PID.
set -euo pipefail

RUN_SECONDS=10
RATE=3G
ONLY=""
JSON_OUT=""
KEEP=0
SIZE=1400
LEN=$((SIZE - 20 - 8))
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) RUN_SECONDS=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --json-out) JSON_OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "peers.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$ONLY" in
    ""|boringtun|strongswan) ;;
    *) echo "peers.sh: --only boringtun|strongswan" >&2; exit 2 ;;
esac
case "$RUN_SECONDS" in
    ''|*[!0-9]*|0) echo "peers.sh: --seconds wants a positive integer" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
    echo "peers.sh: needs root (network namespaces, TUN)" >&2
    exit 1
fi

log() { echo "peers.sh: $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then log "needs CPUs 0 and 1 (gateway on 1, the rest on 0)"; exit 1; fi
# This script and what it starts run on CPU 0; only the gateway-side process is
# started on CPU 1.
taskset -pc 0 $$ >/dev/null

ID=$$
CLI=skpp-cli-$ID
GW=skpp-gw-$ID
IN=skpp-in-$ID
# WireGuard interface names: boringtun's UAPI socket /var/run/wireguard/<name>.sock is
# not per namespace, so the names are unique per run.
WG_GW=skpg$ID
WG_CLI=skpc$ID
WORK=$(mktemp -d /tmp/sekisho-peers.XXXXXX)
PIDS=()
PSK=sekisho-peers-psk-$ID

stop_pid() { # pid: TERM, up to 3 s, then KILL; only our own children
    local p=$1 i new=()
    for i in "${PIDS[@]}"; do [ "$i" = "$p" ] || new+=("$i"); done
    PIDS=("${new[@]}")
    kill -TERM "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    for i in $(seq 1 30); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

# shellcheck disable=SC2317  # called from traps
teardown() { # the processes and namespaces of one peer's run
    local p n
    # Reverse order: the client side and iperf3 first, the gateway last.
    while [ ${#PIDS[@]} -gt 0 ]; do
        p=${PIDS[${#PIDS[@]} - 1]}
        stop_pid "$p"
    done
    for n in "$CLI" "$GW" "$IN"; do
        if [ -e "/var/run/netns/$n" ]; then ip netns del "$n" 2>/dev/null || true; fi
    done
    rm -f "/var/run/wireguard/$WG_GW.sock" "/var/run/wireguard/$WG_CLI.sock"
}

# Each peer runs in a subshell of its own (run_peer) whose EXIT trap tears its run
# down; the main shell forwards INT/TERM to it and cleans up what is left.
PEER_SHELL=""
# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PEER_SHELL" ]; then
        kill -TERM "$PEER_SHELL" 2>/dev/null || true
        wait "$PEER_SHELL" 2>/dev/null || true
    fi
    teardown
    case $rc in 130|143) log "interrupted; stopped what it started, namespaces deleted" ;; esac
    if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

APT_UPDATED=0
apt_install() { # packages…
    command -v apt-get >/dev/null || { log "cannot install $* (no apt-get)"; return 1; }
    log "installing $* (apt-get)"
    if [ $APT_UPDATED = 0 ]; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >&2
}

need_cmd() { # command package
    command -v "$1" >/dev/null || apt_install "$2"
    command -v "$1" >/dev/null || { log "needs $1 (apt: $2)"; exit 1; }
}

need_cmd ip iproute2
need_cmd taskset util-linux
need_cmd iperf3 iperf3
need_cmd jq jq
need_cmd ping iputils-ping
need_cmd ss iproute2
need_cmd sysctl procps
[ -e /dev/net/tun ] || { log "needs /dev/net/tun"; exit 1; }

# ---------------------------------------------------------------- topology
topology() {
    local n
    for n in "$CLI" "$GW" "$IN"; do
        ip netns add "$n"
        ip -n "$n" link set lo up
    done
    ip -n "$CLI" link add skpc0 type veth peer name skpg0 netns "$GW"
    ip -n "$GW" link add skpi0 type veth peer name skpi1 netns "$IN"
    ip -n "$CLI" addr add 10.77.0.2/24 dev skpc0
    ip -n "$GW" addr add 10.77.0.254/24 dev skpg0
    ip -n "$GW" addr add 10.88.0.1/24 dev skpi0
    ip -n "$IN" addr add 10.88.0.2/24 dev skpi1
    ip -n "$CLI" link set skpc0 mtu 1500 up
    ip -n "$GW" link set skpg0 mtu 1500 up
    ip -n "$GW" link set skpi0 mtu 1500 up
    ip -n "$IN" link set skpi1 mtu 1500 up
    ip -n "$IN" route add 10.99.0.0/24 via 10.88.0.1
    ip netns exec "$GW" sysctl -qw net.ipv4.ip_forward=1
    for n in "$CLI" "$GW" "$IN"; do
        ip netns exec "$n" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    done
}

wait_for() { # test-command… ; up to 10 s
    local i
    for i in $(seq 1 100); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

wait_sock() { # socket pid: until the socket exists, while pid lives; up to 10 s
    local i
    for i in $(seq 1 100); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { log "pid $2 exited"; return 1; }
        sleep 0.1
    done
    return 1
}

nap() { # seconds: a sleep during which a TERM is handled at once
    local p
    sleep "$1" &
    p=$!; PIDS+=("$p")
    wait "$p" || true
    stop_pid "$p"
}

tunnel_ping() { # the inside host through the tunnel, a few tries
    local i
    for i in 1 2 3 4 5; do
        ip netns exec "$CLI" ping -c 1 -W 1 -I 10.99.0.2 10.88.0.2 >/dev/null 2>&1 && return 0
    done
    return 1
}

# ---------------------------------------------------------------- measurement
now_us() { local t=${EPOCHREALTIME//[.,]/}; echo "$t"; }

gw_cpu_ns() { # pid → CPU time of all its threads in ns (schedstat field 1)
    local f s=0 v
    for f in /proc/"$1"/task/*/schedstat; do
        read -r v _ < "$f" 2>/dev/null || continue
        s=$((s + v))
    done
    echo "$s"
}

gw_threads() { # pid → "tid ns comm" per thread
    local f t v c
    for f in /proc/"$1"/task/*; do
        t=${f##*/}
        read -r v _ < "$f/schedstat" 2>/dev/null || continue
        read -r c < "$f/comm" 2>/dev/null || c='?'
        echo "$t $v $c"
    done
}

# snap PID → "t_us cpu_ns cpu1_busy cpu1_total out_rx out_tx in_rx in_tx": time, the
# gateway's CPU, CPU 1's jiffies (/proc/stat) and the packet counters of the gateway's
# outside (skpg0) and inside (skpi0) veths, read in its namespace via /proc/PID/net/dev.
snap() {
    local t c
    t=$(now_us); c=$(gw_cpu_ns "$1")
    echo "$t $c $(awk '$1 == "cpu1" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat)" \
        "$(awk '{ sub(/:/, " ") } $1 == "skpg0" { o = $3 " " $11 } $1 == "skpi0" { i = $3 " " $11 }
                END { print o, i }' "/proc/$1/net/dev")"
}

# measure PEER VERSION GW_PID: iperf3 through the tunnel; prints the JSON line.
measure() {
    local peer=$1 version=$2 gw_pid=$3
    local out=$WORK/$peer-iperf3.json srv cli base A B t_start waited=0 ok=1 line
    local -a s0 s1 x
    [ -d "/proc/$gw_pid" ] || { log "$peer: gateway process $gw_pid is gone"; return 1; }
    ip netns exec "$IN" taskset -c 0 iperf3 -s -1 -B 10.88.0.2 -p 5201 \
        > "$WORK/$peer-iperf3-server.log" 2>&1 &
    srv=$!; PIDS+=("$srv")
    wait_for ip netns exec "$IN" sh -c 'ss -Hltn "sport = :5201" | grep -q .' \
        || { log "$peer: iperf3 server did not listen"; return 1; }
    local tasks=(/proc/"$gw_pid"/task/*)
    log "$peer: iperf3 -u --bidir -l $LEN -b $RATE -t $RUN_SECONDS (gateway: pid $gw_pid" \
        "$(cat "/proc/$gw_pid/comm"), ${#tasks[@]} threads, CPUs $(taskset -pc "$gw_pid" | sed 's/.*: //'))"
    read -ra x <<< "$(snap "$gw_pid")"
    base=$((x[4] + x[6]))
    # In the background: a TERM is handled at once, and a stuck run can be stopped.
    ip netns exec "$CLI" taskset -c 0 iperf3 -c 10.88.0.2 -p 5201 -B 10.99.0.2 -u --bidir \
        -l "$LEN" -b "$RATE" -t "$RUN_SECONDS" -J > "$out" 2> "$WORK/$peer-iperf3.err" &
    cli=$!; PIDS+=("$cli")
    # The window: from 0.3 s after the first 500 packets reach the gateway, for
    # S - 0.6 s (within iperf3's sending period).
    while :; do
        read -ra x <<< "$(snap "$gw_pid")"
        [ $((x[4] + x[6] - base)) -ge 500 ] && break
        kill -0 "$cli" 2>/dev/null || { log "$peer: iperf3 exited before traffic flowed";
                                         cat "$WORK/$peer-iperf3.err" >&2; return 1; }
        waited=$((waited + 1))
        [ $waited -lt 200 ] || { log "$peer: no traffic reached the gateway in 10 s"; return 1; }
        sleep 0.05
    done
    t_start=$(now_us)
    sleep 0.3
    gw_threads "$gw_pid" > "$WORK/$peer-threads-a.txt"
    read -ra s0 <<< "$(snap "$gw_pid")"
    nap "$(awk -v s="$RUN_SECONDS" 'BEGIN { w = s - 0.6; if (w < 0.4) w = 0.4; print w }')"
    read -ra s1 <<< "$(snap "$gw_pid")"
    gw_threads "$gw_pid" > "$WORK/$peer-threads-b.txt"
    # Where the gateway's CPU went in the window, busiest threads first.
    awk 'NR == FNR { a[$1] = $2; next } { d = $2 - a[$1]; if (d > 0) printf "%s/%s %.2fs\n", $3, $1, d / 1e9 }' \
        "$WORK/$peer-threads-a.txt" "$WORK/$peer-threads-b.txt" | sort -k2 -rn -t' ' | head -n 4 \
        | tr '\n' ' ' | sed "s/^/peers.sh: $peer: gateway threads in the window: /; s/ *$/\n/" >&2
    # iperf3 ends S seconds after it started, then exchanges results over the tunnel;
    # a data plane with deep queues can delay that a lot: give up after 20 s more.
    A=$((t_start + (RUN_SECONDS + 20) * 1000000))
    while kill -0 "$cli" 2>/dev/null && [ "$(now_us)" -lt "$A" ]; do sleep 0.2; done
    if kill -0 "$cli" 2>/dev/null; then
        log "$peer: iperf3 still running $((RUN_SECONDS + 20)) s after the start (its end-of-test" \
            "exchange is queued in the tunnel): stopped; no iperf3 receiver figures"
        kill -INT "$cli" 2>/dev/null || true
        sleep 2
        ok=0
    fi
    if [ $ok = 1 ]; then wait "$cli" || ok=0; fi
    stop_pid "$cli"
    stop_pid "$srv"
    if [ $ok = 0 ] || ! jq -e '.end.sum_received.bits_per_second' "$out" >/dev/null 2>&1; then
        [ $ok = 0 ] || { log "$peer: iperf3 gave no receiver figures:"; cat "$WORK/$peer-iperf3.err" >&2;
                         jq -r '.error // empty' "$out" >&2 2>/dev/null || true; }
        echo '{}' > "$out.none"; out=$out.none
    fi
    B=$(printf '[%s],[%s]' "$(IFS=,; echo "${s0[*]}")" "$(IFS=,; echo "${s1[*]}")")
    line=$(jq -c --arg peer "$peer" --arg version "$version" --arg rate "$RATE" \
        --argjson size "$SIZE" --argjson secs "$RUN_SECONDS" --argjson s "[$B]" '
        def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
        ($s[0]) as $a | ($s[1]) as $b
        | (($b[0] - $a[0]) / 1e6) as $w
        | (($b[1] - $a[1]) / 1e9 / $w) as $cores
        | def gbps(i): ($b[i] - $a[i]) * $size * 8 / $w / 1e9;
        (.end.sum_received // null) as $up | (.end.sum_received_bidir_reverse // null) as $down
        | (if $up and $down then ($up.bits_per_second + $down.bits_per_second) / 1e9 else null end) as $rx
        | (gbps(7) + gbps(5)) as $gw
        | {peer: $peer, size: $size, seconds: $secs, rate: $rate,
           rx_gbps_up: (if $up then $up.bits_per_second / 1e9 else null end | r(4)),
           rx_gbps_down: (if $down then $down.bits_per_second / 1e9 else null end | r(4)),
           rx_gbps: ($rx | r(4)),
           gw_cpu_cores: ($cores | r(3)),
           gbps_per_core: (if $rx and $cores > 0 then $rx / $cores else null end | r(4)),
           lost_percent_up: ($up.lost_percent | r(2)),
           lost_percent_down: ($down.lost_percent | r(2)),
           window_seconds: ($w | r(3)),
           gw_gbps_up: (gbps(7) | r(4)),
           gw_gbps_down: (gbps(5) | r(4)),
           gw_gbps: ($gw | r(4)),
           gw_gbps_per_core: (if $cores > 0 then $gw / $cores else null end | r(4)),
           gw_offered_gbps_up: (gbps(4) | r(4)),
           gw_offered_gbps_down: (gbps(6) | r(4)),
           cpu1_busy: (if $b[3] > $a[3] then ($b[2] - $a[2]) / ($b[3] - $a[3]) else null end | r(3)),
           version: $version}' "$out")
    echo "$line"
    [ -z "$JSON_OUT" ] || echo "$line" >> "$JSON_OUT"
}

# ---------------------------------------------------------------- boringtun
find_boringtun() {
    local b
    for b in "${BORINGTUN:-}" /work/peers/bin/boringtun-cli "$(command -v boringtun-cli || true)" \
             "${PEERS_DIR:-/var/tmp/sekisho-peers}/bin/boringtun-cli"; do
        if [ -n "$b" ] && [ -x "$b" ]; then echo "$b"; return 0; fi
    done
    return 1
}

run_boringtun() {
    local bt version gw_pid cli_pid d=$WORK/boringtun
    mkdir -p "$d"
    if ! bt=$(find_boringtun); then
        command -v cargo >/dev/null || { log "boringtun: no boringtun-cli and no cargo to build it"; return 1; }
        log "boringtun: cargo install boringtun-cli --locked --root ${PEERS_DIR:-/var/tmp/sekisho-peers} (minutes)"
        cargo install boringtun-cli --locked --root "${PEERS_DIR:-/var/tmp/sekisho-peers}" >&2
        bt=$(find_boringtun) || { log "boringtun: still no boringtun-cli"; return 1; }
    fi
    need_cmd wg wireguard-tools
    version="boringtun-cli $("$bt" --version 2>&1 | head -n 1 | awk '{print $NF}')"
    log "boringtun: $bt ($version)"

    topology
    (umask 077; wg genkey > "$d/gw.key"; wg genkey > "$d/cli.key")
    wg pubkey < "$d/gw.key" > "$d/gw.pub"
    wg pubkey < "$d/cli.key" > "$d/cli.pub"

    # The gateway on CPU 1, the client on CPU 0; one worker thread each.
    WG_SUDO=1 ip netns exec "$GW" taskset -c 1 "$bt" --foreground --threads 1 \
        --disable-drop-privileges --log "$d/gw.log" "$WG_GW" > "$d/gw.out" 2>&1 &
    gw_pid=$!; PIDS+=("$gw_pid")
    WG_SUDO=1 ip netns exec "$CLI" taskset -c 0 "$bt" --foreground --threads 1 \
        --disable-drop-privileges --log "$d/cli.log" "$WG_CLI" > "$d/cli.out" 2>&1 &
    cli_pid=$!; PIDS+=("$cli_pid")
    if ! wait_sock "/var/run/wireguard/$WG_GW.sock" "$gw_pid" \
        || ! wait_sock "/var/run/wireguard/$WG_CLI.sock" "$cli_pid"; then
        log "boringtun: no UAPI socket"; cat "$d/gw.out" "$d/cli.out" >&2; return 1
    fi

    ip netns exec "$GW" wg set "$WG_GW" private-key "$d/gw.key" listen-port 51820 \
        peer "$(cat "$d/cli.pub")" allowed-ips 10.99.0.2/32
    ip -n "$GW" addr add 10.99.0.1/24 dev "$WG_GW"
    ip -n "$GW" link set "$WG_GW" mtu 1420 up
    ip netns exec "$CLI" wg set "$WG_CLI" private-key "$d/cli.key" listen-port 51820 \
        peer "$(cat "$d/gw.pub")" endpoint 10.77.0.254:51820 allowed-ips 10.99.0.0/24,10.88.0.0/24
    ip -n "$CLI" addr add 10.99.0.2/24 dev "$WG_CLI"
    ip -n "$CLI" link set "$WG_CLI" mtu 1420 up
    ip -n "$CLI" route add 10.88.0.0/24 dev "$WG_CLI" src 10.99.0.2

    tunnel_ping || { log "boringtun: no ping through the tunnel";
                     ip netns exec "$GW" wg show >&2 || true; cat "$d/gw.out" "$d/cli.out" >&2; return 1; }
    log "boringtun: tunnel up"
    measure boringtun "$version" "$gw_pid"
    ip netns exec "$GW" wg show "$WG_GW" transfer > "$d/gw-transfer.txt" 2>&1 || true
}

# ---------------------------------------------------------------- strongSwan
CHARON=/usr/sbin/charon-systemd
SW_CRYPTO=${SW_CRYPTO:-aesni openssl}
LIBIPSEC=/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so

strongswan_ready() {
    local missing=()
    [ -x "$CHARON" ] || missing+=(charon-systemd)
    command -v swanctl >/dev/null || missing+=(strongswan-swanctl)
    [ -e "$LIBIPSEC" ] || missing+=(libcharon-extra-plugins)
    [ -e /usr/lib/ipsec/plugins/libstrongswan-gcm.so ] || missing+=(libstrongswan-standard-plugins)
    [ -e /usr/lib/ipsec/plugins/libstrongswan-curve25519.so ] || missing+=(libstrongswan-extra-plugins)
    local u units=(strongswan.service strongswan-starter.service strongswan-swanctl.service)
    if [ ${#missing[@]} -gt 0 ]; then
        # Masked before they exist, so the packages' postinst starts no host charon.
        if command -v systemctl >/dev/null; then systemctl mask "${units[@]}" >&2 || true; fi
        apt_install charon-systemd strongswan-swanctl libcharon-extra-plugins \
            libstrongswan-extra-plugins libstrongswan-standard-plugins
    fi
    # No host charon: mask (and stop) the units if they exist and are not masked.
    if command -v systemctl >/dev/null; then
        for u in "${units[@]}"; do
            if systemctl list-unit-files "$u" 2>/dev/null | grep -q "^$u" \
                && [ "$(systemctl is-enabled "$u" 2>/dev/null || true)" != masked ]; then
                log "masking $u"
                systemctl mask --now "$u" >&2 2>/dev/null || systemctl mask "$u" >&2 || true
            fi
        done
    fi
    [ -x "$CHARON" ] && [ -e "$LIBIPSEC" ] && command -v swanctl >/dev/null
}

charon_conf() { # dir
    cat > "$1/strongswan.conf" <<EOF
# per-instance strongswan.conf (STRONGSWAN_CONF); nothing from /etc
charon {
  load_modular = no
  load = random nonce $SW_CRYPTO aes sha1 sha2 hmac gcm pem pkcs1 x509 curve25519 gmp kdf kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  plugins {
    vici { socket = unix://$1/charon.vici }
  }
  filelog {
    main {
      path = $1/charon.log
      time_format = %T
      default = 1
      ike = 1
      knl = 1
      flush_line = yes
      append = no
    }
  }
  journal { default = -1 }
  syslog { daemon { default = -1 } }
}
swanctl {
  socket = unix://$1/charon.vici
}
EOF
}

swanctl_conf() { # dir local remote local_ts remote_ts ike_proposal
    cat > "$1/swanctl.conf" <<EOF
connections {
  perf {
    version = 2
    local_addrs = $2
    remote_addrs = $3
    encap = yes
    proposals = $6
    local { auth = psk }
    remote { auth = psk }
    children {
      perf {
        mode = tunnel
        local_ts = $4
        remote_ts = $5
        esp_proposals = aes128gcm16
        start_action = none
      }
    }
  }
}
secrets {
  ike-1 { secret = "$PSK" }
}
EOF
}

sw() { # ns dir swanctl-args…
    local ns=$1 dir=$2
    shift 2
    STRONGSWAN_CONF=$dir/strongswan.conf ip netns exec "$ns" swanctl "$@"
}

run_strongswan() {
    local version gw_pid cli_pid g=$WORK/sw-gw c=$WORK/sw-cli ike=aes128-sha256-x25519 list
    strongswan_ready || { log "strongswan: charon-systemd, swanctl or kernel-libipsec missing"; return 1; }
    version="strongSwan $(dpkg-query -W -f='${Version}' charon-systemd 2>/dev/null || echo '?') charon-systemd kernel-libipsec"
    [ -e /usr/lib/ipsec/plugins/libstrongswan-curve25519.so ] || ike=aes128-sha256-modp2048
    log "strongswan: $version, IKE $ike, ESP aes128gcm16"
    mkdir -p "$g" "$c"
    charon_conf "$g"; charon_conf "$c"
    swanctl_conf "$g" 10.77.0.254 10.77.0.2 10.88.0.0/24 10.99.0.2/32 "$ike"
    swanctl_conf "$c" 10.77.0.2 10.77.0.254 10.99.0.2/32 10.88.0.0/24 "$ike"

    topology
    # The client's inner address; libipsec's route to 10.88.0.0/24 (table 220) takes
    # it as source.
    ip -n "$CLI" addr add 10.99.0.2/32 dev lo

    STRONGSWAN_CONF=$g/strongswan.conf ip netns exec "$GW" taskset -c 1 "$CHARON" \
        < /dev/null > "$g/charon.out" 2>&1 &
    gw_pid=$!; PIDS+=("$gw_pid")
    STRONGSWAN_CONF=$c/strongswan.conf ip netns exec "$CLI" taskset -c 0 "$CHARON" \
        < /dev/null > "$c/charon.out" 2>&1 &
    cli_pid=$!; PIDS+=("$cli_pid")
    if ! wait_sock "$g/charon.vici" "$gw_pid" || ! wait_sock "$c/charon.vici" "$cli_pid"; then
        log "strongswan: no vici socket"
        tail -n 20 "$g/charon.out" "$g/charon.log" "$c/charon.log" >&2 || true
        return 1
    fi
    sw "$GW" "$g" --load-all --file "$g/swanctl.conf" > "$g/load.txt" 2>&1 \
        || { cat "$g/load.txt" >&2; return 1; }
    sw "$CLI" "$c" --load-all --file "$c/swanctl.conf" > "$c/load.txt" 2>&1 \
        || { cat "$c/load.txt" >&2; return 1; }
    sw "$CLI" "$c" --initiate --child perf --timeout 30 > "$c/initiate.txt" 2>&1 \
        || { log "strongswan: initiate failed"; tail -n 30 "$c/initiate.txt" "$c/charon.log" "$g/charon.log" >&2; return 1; }
    log "strongswan: AES-GCM from $(sw "$GW" "$g" --list-algs | grep -o 'AES_GCM_16\[[a-z0-9-]*\]' | tr '\n' ' ')"
    list=$(sw "$CLI" "$c" --list-sas 2>&1)
    echo "$list" > "$c/sas.txt"
    echo "$list" | grep -q "INSTALLED, TUNNEL-in-UDP" \
        || { log "strongswan: no INSTALLED TUNNEL-in-UDP CHILD SA"; echo "$list" >&2; return 1; }
    echo "$list" | grep -E "ESTABLISHED|AES_|ESP" | sed 's/^/    /' >&2 || true
    tunnel_ping || { log "strongswan: no ping through the tunnel";
                     tail -n 30 "$c/charon.log" "$g/charon.log" >&2; return 1; }
    log "strongswan: tunnel up ($(ip -n "$GW" -o link show ipsec0 | grep -o "mtu [0-9]*") on ipsec0)"
    measure strongswan-libipsec "$version" "$gw_pid"
    sw "$GW" "$g" --list-sas > "$g/sas-after.txt" 2>&1 || true
}

# run_peer boringtun|strongswan: in a subshell with errexit in force (it would be off in a
# function called from an `||` list) whose EXIT trap stops its processes and deletes
# its namespaces; in the background so that the main shell's INT/TERM trap runs at once.
run_peer() {
    local r
    set +e
    (
        set -e
        trap teardown EXIT
        trap 'exit 143' TERM
        case $1 in
            boringtun) run_boringtun ;;
            strongswan) run_strongswan ;;
        esac
    ) &
    PEER_SHELL=$!
    wait "$PEER_SHELL"
    r=$?
    PEER_SHELL=""
    set -e
    return $r
}

rc=0
if [ "$ONLY" = "" ] || [ "$ONLY" = boringtun ]; then
    run_peer boringtun || { log "boringtun: FAILED (see above)"; rc=1; }
fi
if [ "$ONLY" = "" ] || [ "$ONLY" = strongswan ]; then
    run_peer strongswan || { log "strongswan: FAILED (see above)"; rc=1; }
fi
exit $rc
