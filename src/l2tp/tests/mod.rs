//! LNS against LAC in memory with a fake clock; captured xl2tpd messages against the
//! LNS; hostile input.

mod harness;
mod setup;
