//! Shared by the integration tests: how a test that needs a system tool, root or a
//! network namespace skips — or fails, when CI sets SEKISHO_REQUIRE_SYSTEM_TESTS=1.

#![allow(dead_code)] // each test binary uses a subset

pub mod gateway;
pub mod l2tp_client;
pub mod netns;

use std::process::Command;

/// True when the system tests must run (a skip is then a failure).
pub fn required() -> bool {
    std::env::var("SEKISHO_REQUIRE_SYSTEM_TESTS").is_ok_and(|v| v == "1")
}

/// Returns true if `tool` runs (`tool --version` or `-v`); otherwise prints why the test
/// is skipped, or panics when system tests are required.
pub fn have_tool(test: &str, tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(
            test,
            &format!("{tool} is not installed (apt-get install {tool})"),
        );
    }
    ok
}

/// Prints a skip reason; panics instead when system tests are required.
pub fn skip(test: &str, why: &str) {
    assert!(
        !required(),
        "{test}: {why}, and SEKISHO_REQUIRE_SYSTEM_TESTS=1 turns this skip into a failure"
    );
    eprintln!("SKIP {test}: {why}");
}
