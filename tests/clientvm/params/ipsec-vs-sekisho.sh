# Client guest against `sekisho run` in the host netns (10.77.0.254): strongSwan IKEv1 PSK
# transport mode for udp/1701 with its default proposals (guest/conf/client/ipsec.conf),
# then xl2tpd + pppd; ping and one short iperf3 to 10.99.0.1 through ppp0.
SERVER_IP=10.77.0.254
SKIP_IPSEC=0
PPP_TARGET=10.99.0.1
WAIT_READY=1
UP_TIMEOUT=30
IPERF_RUNS=1
IPERF_TIME=3
