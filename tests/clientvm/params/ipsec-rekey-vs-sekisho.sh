# As ipsec-vs-sekisho.sh, with short lifetimes, and a 75 s ping stream (500 x 0.15 s)
# through ppp0 instead of iperf3. strongSwan 5.9 (ipsec.conf): an SA is rekeyed at
# lifetime - margintime - random(0 .. margintime * rekeyfuzz); with rekeyfuzz=0% exactly:
#   CHILD_SA (lifetime=45s): rekeyed at +30 s and +60 s after ipsec up;
#   IKE SA (ikelifetime=60s): IKEv1 "reauthenticating" (a new Main Mode, the CHILD_SAs
#   move over) at +45 s; the old IKE SA deleted at +60 s (its margintime).
# The ping runs from ~+6 s to ~+81 s: two Quick Mode rekeys and one Main Mode rekey inside it.
SERVER_IP=10.77.0.254
SKIP_IPSEC=0
PPP_TARGET=10.99.0.1
WAIT_READY=1
UP_TIMEOUT=30
IPERF_RUNS=0
PING_COUNT=500
PING_INTERVAL=0.15
CLIENT_CONN_OPTS="ikelifetime=60s lifetime=45s margintime=15s rekeyfuzz=0%"
