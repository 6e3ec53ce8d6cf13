//! Anti-replay window (RFC 4303 §3.4.3, Appendix A).
