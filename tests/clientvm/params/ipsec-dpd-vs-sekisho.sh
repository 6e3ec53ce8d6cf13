# As ipsec-vs-sekisho.sh, no iperf3, then the session is held (the test kills the guest
# hard meanwhile, to see the gateway's DPD end it).
SERVER_IP=10.77.0.254
SKIP_IPSEC=0
PPP_TARGET=10.99.0.1
WAIT_READY=1
UP_TIMEOUT=30
IPERF_RUNS=0
HOLD_SECS=300
