# Client guest against the stand-in LNS guest (MODE=pair) on 10.77.0.1, plain L2TP.
SERVER_IP=10.77.0.1
SKIP_IPSEC=1
PPP_TARGET=10.99.0.1
WAIT_READY=1
IPERF_RUNS=1
IPERF_TIME=5
