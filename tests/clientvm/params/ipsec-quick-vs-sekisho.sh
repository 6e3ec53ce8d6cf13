# The DPD test's second client: connect, ping, no iperf3, clean disconnect.
SERVER_IP=10.77.0.254
SKIP_IPSEC=0
PPP_TARGET=10.99.0.1
WAIT_READY=1
UP_TIMEOUT=30
IPERF_RUNS=0
