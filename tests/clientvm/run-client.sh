#!/bin/bash
# Boots the client VM (xl2tpd + pppd, Debian's kernel L2TP/PPP; qemu, TCG) on a bridge in a
# network namespace of its own and collects what it did. Root only.
#
#   netns $NS (default cvh): bridge cvbr0 = 10.77.0.254/24 (where a host-side gateway listens),
#   taps cvtap0 (stand-in LNS guest, 10.77.0.1) and cvtap1 (client guest, 10.77.0.2).
#   Nothing leaves the namespace: it has no other interface.
#
# Usage: run-client.sh [RUNDIR]      (default /var/tmp/sekisho-clientvm/runs/<date>)
# env:
#   MODE=client       the client guest only, against GATEWAY_CMD (default)
#       pair          plus a stand-in LNS guest (xl2tpd + pppd) on 10.77.0.1: checks the harness
#   GATEWAY_CMD       started with bash -c in $NS, cwd RUNDIR, output in RUNDIR/gateway.log;
#                     SIGTERM when the client is done (SIGKILL 10 s later)
#   READY_ADDR        an address that appears in $NS when the gateway is up (its TUN address,
#                     e.g. 10.99.0.1); then IPERF_SERVER starts and the guest is told to connect
#   IPERF_SERVER      if set: `iperf3 -s -B $IPERF_SERVER` in $NS once READY_ADDR is there
#   CLIENT_PARAMS     file of VAR=value lines the client guest sources (see guest/guest-run.sh);
#                     SERVER_PARAMS likewise for the stand-in LNS guest
#   CAPTURE=1         dumpcap on cvbr0 -> RUNDIR/l2tp.pcapng, when dumpcap exists; CAPTURE_FILTER
#                     (default: udp port 1701 frames of at most 300 bytes: all control messages
#                     and PPP negotiation, small data packets, not iperf3's full-size frames)
#   IMG               image directory (default: build-image.sh's, built or taken from its cache)
#   TIMEOUT=480       seconds the client guest may run before it is killed
#   CLIENT_RUNS=2     after the client guest ended, boot it once more (results in RUNDIR/client2,
#                     parameters CLIENT2_PARAMS, default CLIENT_PARAMS) against the same
#                     gateway, as soon as RUNDIR/boot-client2 exists (the caller creates it;
#                     at most CLIENT2_WAIT=120 s)
#   NS=cvh  ACCEL=tcg  MEM=512  CPU=max
# Exit status 0 when the client guest's test script ran to its end with status 0.
# Results: RUNDIR/host.log, gateway.log, gateway-exit.txt, iperf3-server.log, l2tp.pcapng,
#   client/{console.log,result.txt,pppd.log,xl2tpd.log,ip-addr.txt,ping-ppp.txt,iperf3-tunnel-1.txt,…}
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "run-client.sh: needs root" >&2; exit 2; }
RUN=${1:-/var/tmp/sekisho-clientvm/runs/$(date +%Y%m%d-%H%M%S)}
MODE=${MODE:-client}
NS=${NS:-cvh}
ACCEL=${ACCEL:-tcg}
MEM=${MEM:-512}
CPU=${CPU:-max}
TIMEOUT=${TIMEOUT:-480}
READY_TIMEOUT=${READY_TIMEOUT:-60}
CAPTURE=${CAPTURE:-1}
# control messages and PPP negotiation, not the bulk of iperf3's full-size data frames
CAPTURE_FILTER=${CAPTURE_FILTER:-udp port 1701 and len <= 300}
SHARE=$HERE/guest
mkdir -p "$RUN/client"
RUN=$(cd "$RUN" && pwd)
t0=$(date +%s.%N)
el() { awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$t0}"; }
log() { echo "[host +$(el)s] $*" | tee -a "$RUN/host.log" >&2; }

if [ -z "${IMG:-}" ]; then
  IMG=$(bash "$HERE/build-image.sh" 2> >(tee -a "$RUN/host.log" >&2) | tail -1)
fi
for f in vmlinuz initrd.img rootfs.raw; do
  [ -f "$IMG/$f" ] || { log "no $IMG/$f"; exit 2; }
done
log "image $IMG, mode $MODE, netns $NS"

GPID=""
ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$NS"; }
stop_pid() { # pid grace_seconds: SIGTERM, then SIGKILL after the grace
  local p=$1 n=0
  kill -0 "$p" 2>/dev/null || return 0
  kill "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null && [ $n -lt $(( $2 * 10 )) ]; do sleep 0.1; n=$((n+1)); done
  kill -0 "$p" 2>/dev/null && { kill -9 "$p" 2>/dev/null || true; }
  return 0
}
stop_gateway() {
  [ -n "$GPID" ] || return 0
  if kill -0 "$GPID" 2>/dev/null; then
    log "stopping gateway pid $GPID (SIGTERM)"
    stop_pid "$GPID" 10
  fi
  local rc=0; wait "$GPID" 2>/dev/null || rc=$?
  echo "$rc" > "$RUN/gateway-exit.txt"
  log "gateway exit status $rc"
  GPID=""
}
teardown() {
  set +e
  for f in "$RUN"/server/qemu.pid "$RUN"/client/qemu.pid "$RUN"/client2/qemu.pid; do
    [ -s "$f" ] && stop_pid "$(cat "$f")" 3
  done
  stop_gateway
  # Whatever else still runs in our namespace was started by this script (iperf3, dumpcap).
  if ns_exists; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do stop_pid "$p" 3; done
    ip netns del "$NS"
  fi
  wait 2>/dev/null
}
trap teardown EXIT
trap 'log "signal: tearing down"; exit 143' TERM INT HUP

if ns_exists; then
  log "netns $NS exists: a run still going, or one killed before its teardown"
  exit 2
fi
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add cvbr0 type bridge
ip -n "$NS" addr add 10.77.0.254/24 dev cvbr0
ip -n "$NS" link set cvbr0 up
for t in cvtap0 cvtap1; do
  ip -n "$NS" tuntap add dev $t mode tap
  ip -n "$NS" link set $t master cvbr0 up
done
log "netns $NS: cvbr0 10.77.0.254/24 + cvtap0/cvtap1"

if [ "$CAPTURE" = 1 ] && command -v dumpcap >/dev/null; then
  ip netns exec "$NS" dumpcap -q -i cvbr0 -f "$CAPTURE_FILTER" -w "$RUN/l2tp.pcapng" > "$RUN/dumpcap.log" 2>&1 &
fi

if [ -n "${GATEWAY_CMD:-}" ]; then
  (cd "$RUN" && exec ip netns exec "$NS" bash -c "$GATEWAY_CMD") > "$RUN/gateway.log" 2>&1 &
  GPID=$!
  log "gateway pid $GPID: $GATEWAY_CMD"
fi

boot() { # role tap mac [results dir name, default: role]
  local role=$1 tap=$2 mac=$3 out=${4:-$1}
  ip netns exec "$NS" /usr/bin/time -v -o "$RUN/$out/qemu-time.txt" \
    qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -m "$MEM" -smp 1 \
    -display none -no-reboot -nodefaults -pidfile "$RUN/$out/qemu.pid" \
    -serial file:"$RUN/$out/serial.log" \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
    -append "root=/dev/vda ro console=ttyS0 quiet loglevel=4 panic=-1 init=/sbin/cvinit cv.role=$role" \
    -drive file="$IMG/rootfs.raw",if=virtio,format=raw,snapshot=on \
    -netdev tap,id=n0,ifname="$tap",script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac="$mac" \
    -device virtio-rng-pci \
    -fsdev local,id=fs0,path="$SHARE",security_model=none,readonly=on \
    -device virtio-9p-pci,fsdev=fs0,mount_tag=cvshare \
    -fsdev local,id=fs1,path="$RUN/$out",security_model=none \
    -device virtio-9p-pci,fsdev=fs1,mount_tag=cvout \
    > "$RUN/$out/qemu.stderr" 2>&1 &
  echo $!
}
SPID=""
if [ "$MODE" = pair ]; then
  mkdir -p "$RUN/server"
  : > "$RUN/server/params.sh"
  [ -n "${SERVER_PARAMS:-}" ] && cp "$SERVER_PARAMS" "$RUN/server/params.sh"
  SPID=$(boot server cvtap0 52:54:00:77:00:01)
fi
: > "$RUN/client/params.sh"
[ -n "${CLIENT_PARAMS:-}" ] && cp "$CLIENT_PARAMS" "$RUN/client/params.sh"
CPID=$(boot client cvtap1 52:54:00:77:00:02)
log "booted: client pid $CPID${SPID:+, stand-in LNS pid $SPID} (accel=$ACCEL mem=${MEM}M)"

# The gateway is ready when READY_ADDR is in the namespace (host-side gateway) or when the
# stand-in LNS guest says so; then iperf3 -s, then the client guest may connect.
ready=0 boot_logged=0 ready_deadline=$(( $(date +%s) + READY_TIMEOUT ))
deadline=$(( $(date +%s) + TIMEOUT ))
while kill -0 "$CPID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
  if [ $ready = 0 ]; then
    if [ "$MODE" = pair ]; then
      grep -q 'server ready' "$RUN/server/console.log" 2>/dev/null && ready=1
    elif [ -n "${READY_ADDR:-}" ]; then
      ip -n "$NS" -4 -o addr show | grep -qF "inet $READY_ADDR/" && ready=1
    else
      ready=1
    fi
    if [ $ready = 1 ]; then
      log "gateway ready"
      if [ -n "${IPERF_SERVER:-}" ]; then
        ip netns exec "$NS" iperf3 -s -B "$IPERF_SERVER" > "$RUN/iperf3-server.log" 2>&1 &
        sleep 0.3
      fi
      touch "$RUN/client/gateway-ready"
    elif [ -n "$GPID" ] && ! kill -0 "$GPID" 2>/dev/null; then
      log "gateway exited before it was ready"; ready=2
    elif [ "$(date +%s)" -ge "$ready_deadline" ]; then
      log "gateway not ready after ${READY_TIMEOUT}s"; ready=2
    fi
    if [ $ready = 2 ]; then
      log "not booting the session: stopping the client guest"
      stop_pid "$(cat "$RUN/client/qemu.pid" 2>/dev/null || echo "$CPID")" 3
      break
    fi
  fi
  if [ $boot_logged = 0 ] && [ -e "$RUN/client/boot-ready.txt" ]; then
    log "client guest: $(cat "$RUN/client/boot-ready.txt")"; boot_logged=1
  fi
  sleep 0.5
done
if kill -0 "$CPID" 2>/dev/null; then
  log "client guest still running after ${TIMEOUT}s: killing it"
  stop_pid "$(cat "$RUN/client/qemu.pid")" 3
fi
wait "$CPID" 2>/dev/null || true
log "client guest finished: $(cat "$RUN/client/guest-exit.txt" 2>/dev/null || echo 'no exit status')"
if [ "${CLIENT_RUNS:-1}" -ge 2 ] && [ "$ready" = 1 ]; then
  n=0; while [ ! -e "$RUN/boot-client2" ] && [ $n -lt $(( ${CLIENT2_WAIT:-120} * 2 )) ]; do sleep 0.5; n=$((n+1)); done
  if [ -e "$RUN/boot-client2" ]; then
    mkdir -p "$RUN/client2"
    cp "${CLIENT2_PARAMS:-${CLIENT_PARAMS:-/dev/null}}" "$RUN/client2/params.sh"
    touch "$RUN/client2/gateway-ready"
    C2PID=$(boot client cvtap1 52:54:00:77:00:02 client2)
    log "booted the second client: pid $C2PID"
    while kill -0 "$C2PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
    if kill -0 "$C2PID" 2>/dev/null; then
      log "second client guest still running at the deadline: killing it"
      stop_pid "$(cat "$RUN/client2/qemu.pid")" 3
    fi
    wait "$C2PID" 2>/dev/null || true
    log "second client guest finished: $(cat "$RUN/client2/guest-exit.txt" 2>/dev/null || echo 'no exit status')"
  else
    log "no $RUN/boot-client2 after ${CLIENT2_WAIT:-120}s: no second client"
  fi
fi
if [ -n "$SPID" ]; then
  touch "$RUN/server/stop"
  n=0; while kill -0 "$SPID" 2>/dev/null && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done
  stop_pid "$(cat "$RUN/server/qemu.pid" 2>/dev/null || echo "$SPID")" 3
  log "stand-in LNS finished"
fi
if [ -n "$GPID" ]; then
  if kill -0 "$GPID" 2>/dev/null; then echo alive > "$RUN/gateway-at-client-end.txt"
  else echo exited > "$RUN/gateway-at-client-end.txt"; fi
  sleep "${GW_SETTLE:-1}"
  stop_gateway
fi
teardown
trap - EXIT
for r in client client2 server; do
  [ -f "$RUN/$r/qemu-time.txt" ] || continue
  grep -E 'Maximum resident|Elapsed' "$RUN/$r/qemu-time.txt" | sed "s/^\s*/[$r qemu] /" | tee -a "$RUN/host.log" >&2
done
log "results in $RUN"
grep -q 'exit=0' "$RUN/client/guest-exit.txt" 2>/dev/null
