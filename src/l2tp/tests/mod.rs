//! LNS against LAC in memory with a fake clock; captured xl2tpd messages against the
//! LNS; hostile input.

mod auth;
mod fuzz;
mod golden;
mod harness;
mod loss;
mod raw;
mod setup;
mod teardown;
mod validation;
