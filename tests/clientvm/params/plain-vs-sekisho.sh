# Client guest against `sekisho run` in the host netns (10.77.0.254), plain L2TP (no IPsec).
SERVER_IP=10.77.0.254
SKIP_IPSEC=1
PPP_TARGET=10.99.0.1
WAIT_READY=1
IPERF_RUNS=1
IPERF_TIME=5
