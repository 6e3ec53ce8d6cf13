# The stand-in LNS guest (MODE=pair), plain L2TP.
SKIP_IPSEC=1
