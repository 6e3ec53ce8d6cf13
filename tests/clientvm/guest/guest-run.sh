#!/bin/sh
# Runs inside the guest (from the read-only 9p share /share), started by /sbin/cvinit.
#   client: xl2tpd LAC + pppd (MS-CHAPv2) -> ppp0 up, ping and iperf3 through it, clean
#           disconnect. With SKIP_IPSEC=1 (plain L2TP, e.g. against `sekisho run` with
#           require_ipsec = false) no IPsec at all: xl2tpd talks straight to SERVER_IP:1701.
#           Otherwise strongSwan IKEv1 PSK transport mode (udp/1701) first.
#   server: a stand-in LNS (xl2tpd + pppd, same pool and local address as sekisho-plain.toml)
#           for checking the harness itself (run-client.sh MODE=pair).
# Results go to /out (9p, this guest's directory in the host's run folder); result.txt
# sums them up as key=value lines.
# Parameters (defaults below) come from /out/params.sh, written by the host.
set -u
ROLE=${1:-client}
C=/share/conf
SERVER_IP=10.77.0.1          # the LNS / gateway on the bridge
CLIENT_IP=10.77.0.2
SKIP_IPSEC=0                 # 1: plain L2TP, no strongSwan
L2TP_PORT=1701               # the LAC's UDP source port (xl2tpd [global] port)
PPP_TARGET=                  # address pinged / iperf3'd through ppp0; empty: the PPP peer address
IPERF_RUNS=1
IPERF_TIME=5
WAIT_READY=0                 # 1: wait for the host's /out/gateway-ready before connecting
READY_TIMEOUT=120
UP_TIMEOUT=60                # IPsec up
PPP_TIMEOUT=60               # "c cvvpn" -> ppp0 has an address
PLAIN_IPERF=0                # 1: iperf3 on the plain link to SERVER_IP first (baseline)
CLIENT_IKE=                  # ike= / esp= for the client's ipsec.conf conn (empty: defaults)
CLIENT_ESP=
CLIENT_CONN_OPTS=            # more ipsec.conf conn lines, space-separated (e.g. lifetime=45s)
PING_COUNT=5                 # the ping through ppp0
PING_INTERVAL=0.5
HOLD_SECS=0                  # stay connected this long after ping/iperf3 (e.g. to be killed)
[ -f /out/params.sh ] && . /out/params.sh
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk "BEGIN{printf \"%.1f\", $(now)-$1}"; }
log() { echo "[$(now)] $*"; }
result() { echo "$1=$2" >> /out/result.txt; log "result $1=$2"; }
: > /out/result.txt

log "guest-run role=$ROLE kernel=$(uname -r) skip_ipsec=$SKIP_IPSEC server=$SERVER_IP"
MODS="virtio_net l2tp_ppp ppp_generic"
[ "$SKIP_IPSEC" = 1 ] || MODS="$MODS esp4 xfrm_user af_key"
for m in $MODS; do
  modprobe $m && echo "  modprobe $m: ok" || echo "  modprobe $m: FAILED"
done
lsmod > /out/lsmod.txt
ls -l /dev/ppp && log "/dev/ppp present" || log "/dev/ppp MISSING"

case $ROLE in server) MYIP=$SERVER_IP;; client) MYIP=$CLIENT_IP;; *) MYIP=10.77.0.9;; esac
ip link set eth0 up
ip addr add $MYIP/24 dev eth0
ip -br addr

mkdir -p /etc/xl2tpd /etc/ppp /var/run/xl2tpd /run/xl2tpd
sed -e "s/10\.77\.0\.1\b/$SERVER_IP/g" -e "s/^port = 1701$/port = $L2TP_PORT/" \
  $C/$ROLE/xl2tpd.conf > /etc/xl2tpd/xl2tpd.conf
cp /etc/xl2tpd/xl2tpd.conf /out/xl2tpd.conf.used
cp $C/$ROLE/options.xl2tpd /etc/ppp/options.xl2tpd
cp $C/chap-secrets /etc/ppp/chap-secrets; chmod 600 /etc/ppp/chap-secrets

if [ "$SKIP_IPSEC" != 1 ]; then
  cp $C/strongswan-cv.conf /etc/strongswan.d/zz-cv.conf
  cp $C/ipsec.secrets /etc/ipsec.secrets; chmod 600 /etc/ipsec.secrets
  sed "s/10\.77\.0\.1\b/$SERVER_IP/g" $C/$ROLE/ipsec.conf > /etc/ipsec.conf
  [ -n "${CLIENT_IKE:-}" ] && [ "$ROLE" = client ] && echo "    ike=$CLIENT_IKE" >> /etc/ipsec.conf
  [ -n "${CLIENT_ESP:-}" ] && [ "$ROLE" = client ] && echo "    esp=$CLIENT_ESP" >> /etc/ipsec.conf
  if [ "$ROLE" = client ]; then for o in $CLIENT_CONN_OPTS; do echo "    $o" >> /etc/ipsec.conf; done; fi
  cp /etc/ipsec.conf /out/ipsec.conf.used
  t=$(now)
  ipsec start > /out/ipsec-start.txt 2>&1
  # charon is ready when starter has loaded the conn into it (`ipsec status` alone answers
  # before charon's pid file exists, and `ipsec up` then fails with rc 7)
  i=0; until ipsec statusall 2>/dev/null | grep -q '^ *L2TP-PSK:' || [ $i -ge 60 ]; do sleep 0.5; i=$((i+1)); done
  log "charon started, conn loaded ($(since $t)s)"
else
  log "SKIP_IPSEC=1: no strongSwan; plain L2TP to $SERVER_IP:1701"
fi

dump_state() {
  log "---- state dump"
  ip -s addr > /out/ip-addr.txt 2>&1
  ip route > /out/ip-route.txt 2>&1
  ip -s link > /out/ip-link.txt 2>&1
  { ip l2tp show tunnel; ip l2tp show session; } > /out/l2tp-kernel.txt 2>&1
  cp /etc/ppp/resolv.conf /out/ppp-resolv.conf 2>/dev/null
  if [ "$SKIP_IPSEC" != 1 ]; then
    ipsec statusall > /out/ipsec-statusall.txt 2>&1
    ip -s xfrm state > /out/xfrm-state.txt 2>&1
    ip xfrm policy > /out/xfrm-policy.txt 2>&1
  fi
  free -m > /out/free.txt
}

log "starting xl2tpd -D (LAC source port $L2TP_PORT)"
xl2tpd -D -c /etc/xl2tpd/xl2tpd.conf -p /run/xl2tpd.pid -C /var/run/xl2tpd/l2tp-control > /out/xl2tpd.log 2>&1 &
XPID=$!

if [ "$ROLE" = server ]; then
  iperf3 -s -D --logfile /out/iperf3-server.log
  log "server ready; waiting for the host to create /out/stop"
  i=0; while [ ! -e /out/stop ] && [ $i -lt 1800 ]; do sleep 1; i=$((i+1)); done
  dump_state
  [ "$SKIP_IPSEC" = 1 ] || ipsec stop
  kill $XPID 2>/dev/null
  log "server done"
  exit 0
fi

# ---------------- client ----------------
i=0; until [ -e /var/run/xl2tpd/l2tp-control ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done
log "waiting for $SERVER_IP on the link"
i=0; until ping -c1 -W1 $SERVER_IP >/dev/null 2>&1 || [ $i -ge 120 ]; do i=$((i+1)); done
ping -c1 -W1 $SERVER_IP >/dev/null 2>&1 && log "$SERVER_IP reachable" || log "$SERVER_IP NOT reachable"
if [ "$WAIT_READY" = 1 ]; then
  t=$(now)
  i=0; until [ -e /out/gateway-ready ] || [ $i -ge $((READY_TIMEOUT * 2)) ]; do sleep 0.5; i=$((i+1)); done
  [ -e /out/gateway-ready ] && log "host says the gateway is ready (waited $(since $t)s)" \
    || log "no /out/gateway-ready after ${READY_TIMEOUT}s; trying anyway"
fi
if [ "$PLAIN_IPERF" = 1 ]; then
  log "plain-link iperf3 baseline (no tunnel)"
  iperf3 -c $SERVER_IP -t 5 > /out/iperf3-plain.txt 2>&1; tail -3 /out/iperf3-plain.txt
fi

t0=$(now)
if [ "$SKIP_IPSEC" != 1 ]; then
  log "ipsec up L2TP-PSK"
  timeout $UP_TIMEOUT ipsec up L2TP-PSK > /out/ipsec-up.txt 2>&1; rc=$?
  log "ipsec up rc=$rc ($(since $t0)s)"
  result ipsec_up_rc $rc
  if [ $rc -ne 0 ]; then log "IPsec failed; no L2TP"; dump_state; ipsec stop; exit 1; fi
fi
t1=$(now)
log "xl2tpd: connect LAC cvvpn"
echo "c cvvpn" > /var/run/xl2tpd/l2tp-control
i=0; until ip -4 addr show dev ppp0 2>/dev/null | grep -q 'inet ' || [ $i -ge $((PPP_TIMEOUT * 2)) ]; do
  sleep 0.5; i=$((i+1))
done
if ! ip -4 addr show dev ppp0 2>/dev/null | grep -q 'inet '; then
  log "ppp0 did NOT come up within ${PPP_TIMEOUT}s"
  result ppp0 down
  dump_state
  echo "d cvvpn" > /var/run/xl2tpd/l2tp-control; sleep 1; kill $XPID 2>/dev/null
  [ "$SKIP_IPSEC" = 1 ] || ipsec stop
  exit 1
fi
log "ppp0 UP after $(since $t1)s"
ip addr show dev ppp0
ADDR=$(ip -4 addr show dev ppp0 | sed -n 's/.*inet \([0-9.]*\).*/\1/p')
PEER=$(ip -4 addr show dev ppp0 | sed -n 's/.*peer \([0-9.]*\).*/\1/p')
TARGET=${PPP_TARGET:-$PEER}
result ppp0 up
result ppp0_addr "$ADDR"
result ppp0_peer "$PEER"
result ppp_up_seconds "$(since $t1)"
# pppd adds a host route to the peer it was told; make sure TARGET goes through ppp0 too
ip route replace "$TARGET/32" dev ppp0
log "ping $TARGET through ppp0 ($PING_COUNT x ${PING_INTERVAL}s)"
result ping_start_clock "$(date +%T)"   # wall clock, as charon's log prints it
ping -c "$PING_COUNT" -i "$PING_INTERVAL" -W 2 -I ppp0 "$TARGET" > /out/ping-ppp.txt 2>&1; tail -4 /out/ping-ppp.txt
result ping_end_clock "$(date +%T)"
result ping_loss "$(sed -n 's/.* \([0-9.]*%\) packet loss.*/\1/p' /out/ping-ppp.txt)"
n=1
while [ $n -le "$IPERF_RUNS" ]; do
  log "iperf3 run $n through ppp0 ($ADDR -> $TARGET, ${IPERF_TIME}s)"
  timeout $((IPERF_TIME + 30)) iperf3 -c "$TARGET" -B "$ADDR" -t "$IPERF_TIME" > /out/iperf3-tunnel-$n.txt 2>&1
  tail -4 /out/iperf3-tunnel-$n.txt
  result iperf3_${n}_receiver_mbps "$(awk '/receiver/ {print $7}' /out/iperf3-tunnel-$n.txt)"
  n=$((n+1))
done
[ "$SKIP_IPSEC" = 1 ] || ip -s xfrm state | grep -E 'proto|bytes' | head -20
dump_state
if [ "$HOLD_SECS" -gt 0 ]; then log "holding the session for ${HOLD_SECS}s"; sleep "$HOLD_SECS"; fi

# Clean disconnect, as a user would: the call first (CDN; pppd ends), then xl2tpd, which
# sends StopCCN for its tunnel when it gets SIGTERM.
t=$(now)
log "disconnect: d cvvpn"
echo "d cvvpn" > /var/run/xl2tpd/l2tp-control
i=0; while ip link show ppp0 >/dev/null 2>&1 && [ $i -lt 30 ]; do sleep 0.5; i=$((i+1)); done
if ip link show ppp0 >/dev/null 2>&1; then result ppp0_gone no; else result ppp0_gone "$(since $t)s"; fi
sleep 1
kill $XPID 2>/dev/null
i=0; while kill -0 $XPID 2>/dev/null && [ $i -lt 20 ]; do sleep 0.5; i=$((i+1)); done
if kill -0 $XPID 2>/dev/null; then result xl2tpd_exit no; else result xl2tpd_exit "$(since $t)s"; fi
sleep 1   # let the StopCCN (and its ack) cross the wire before power-off
[ "$SKIP_IPSEC" = 1 ] || { ipsec down L2TP-PSK >/dev/null 2>&1; ipsec stop; }
log "client done"
