//! `sekisho demo` end to end: as root in network namespaces (20 clients, each through
//! IKEv1 Main + Quick Mode, L2TP and PPP MS-CHAPv2, then traffic both ways), and
//! without root on loopback in a user namespace (run as `nobody` when the test is
//! root). Asserts what a user reads in the JSON, never a rate beyond "traffic flowed".

mod common;

use std::process::Command;

fn demo(args: &[&str], as_nobody: bool) -> serde_json::Value {
    let exe = env!("CARGO_BIN_EXE_sekisho");
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let out = cmd
        .arg("demo")
        .args(args)
        .arg("--json")
        .output()
        .expect("run sekisho demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sekisho demo failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("JSON: {e}: {stdout}"))
}

fn check(v: &serde_json::Value, clients: u64) {
    assert_eq!(v["sessions_up"], clients, "{v}");
    assert_eq!(v["sessions_failed"], 0, "{v}");
    assert!(v["gbps"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["up_gbps"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["down_gbps"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["setup_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["probes_back"].as_u64().unwrap() > 0, "{v}");
    for k in ["mpps", "p50_us", "p99_us", "io"] {
        assert!(!v[k].is_null(), "{k} missing: {v}");
    }
}

#[test]
fn demo_twenty_clients_in_network_namespaces() {
    let test = "demo_twenty_clients_in_network_namespaces";
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces, AF_XDP)");
        return;
    }
    let v = demo(&["--clients", "20", "--seconds", "3"], false);
    check(&v, 20);
    assert_eq!(v["world"], "netns", "{v}");
    eprintln!("{v}");
}

#[test]
fn demo_router_mode_with_the_inside_through_af_xdp() {
    let test = "demo_router_mode_with_the_inside_through_af_xdp";
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces, AF_XDP)");
        return;
    }
    let v = demo(
        &[
            "--clients",
            "5",
            "--seconds",
            "2",
            "--io",
            "xdp",
            "--inside",
            "xdp",
        ],
        false,
    );
    check(&v, 5);
    assert_eq!(v["inside"], "xdp", "{v}");
    assert!(v["io"].as_str().unwrap().starts_with("xdp"), "{v}");
}

#[test]
fn demo_without_root_on_loopback() {
    let test = "demo_without_root_on_loopback";
    let root = nix::unistd::geteuid().is_root();
    if root && Command::new("setpriv").arg("--version").output().is_err() {
        common::skip(test, "needs setpriv (util-linux) to drop root");
        return;
    }
    // An unprivileged user namespace is what the no-root path needs.
    let unshare = ["unshare", "--user", "--map-root-user", "--net", "true"];
    let probe = if root {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(unshare)
            .output()
    } else {
        Command::new(unshare[0]).args(&unshare[1..]).output()
    };
    if !probe.is_ok_and(|o| o.status.success()) {
        common::skip(test, "unprivileged user namespaces are disabled here");
        return;
    }
    let v = demo(
        &["--clients", "5", "--seconds", "1", "--io", "socket"],
        root,
    );
    check(&v, 5);
    assert_eq!(v["world"], "loopback", "{v}");
    assert_eq!(v["io"], "socket", "{v}");
}

/// perf's handshake mode: the demo world without traffic, with the DH group chosen
/// (MODP-2048 here, the socket backend), and the gateway's bill — control-thread CPU
/// per step of sessions and RSS per session — in its JSON.
#[test]
fn perf_handshake_mode_reports_the_gateway_cost() {
    let test = "perf_handshake_mode_reports_the_gateway_cost";
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces)");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho-perf"))
        .args(["handshake", "--clients", "40", "--group", "modp2048"])
        .args(["--io", "socket", "--window", "16"])
        .arg("--sekisho")
        .arg(env!("CARGO_BIN_EXE_sekisho"))
        .output()
        .expect("run sekisho-perf handshake");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "handshake failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("JSON: {e}: {stdout}"));
    assert_eq!(v["sessions_up"], 40, "{v}");
    assert_eq!(v["sessions_failed"], 0, "{v}");
    assert_eq!(v["group"], "Modp2048", "{v}");
    assert_eq!(v["io"], "socket", "{v}");
    assert!(v["control_cpu_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["per_control_core_s"].as_f64().unwrap() > 0.0, "{v}");
    let steps = v["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "{v}");
    let sum: u64 = steps.iter().map(|s| s["sessions"].as_u64().unwrap()).sum();
    assert_eq!(sum, 40, "every session is in one step: {v}");
}
