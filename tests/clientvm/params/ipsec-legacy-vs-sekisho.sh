# As ipsec-vs-sekisho.sh, with the explicit Windows-like proposals NetworkManager-l2tp's
# "legacy proposals" setting produces: IKE AES-256/SHA-1/MODP-2048, ESP AES-256-CBC/HMAC-SHA-1-96.
SERVER_IP=10.77.0.254
SKIP_IPSEC=0
PPP_TARGET=10.99.0.1
WAIT_READY=1
UP_TIMEOUT=30
IPERF_RUNS=1
IPERF_TIME=3
CLIENT_IKE=aes256-sha1-modp2048
CLIENT_ESP=aes256-sha1
