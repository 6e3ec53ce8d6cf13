//! Network namespaces for the system tests: created with a unique name, and on drop
//! every process still in them (ours: the namespace is) killed and the namespace deleted.

use std::os::fd::AsFd;
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Runs a command; panics when it fails.
pub fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed");
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// A network namespace that is deleted (with whatever still runs in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns add` (a stale one of the same name — ours, from a killed run — is
    /// removed first) and lo up.
    pub fn new(name: &str) -> Netns {
        if std::path::Path::new(&format!("/var/run/netns/{name}")).exists() {
            drop(Netns {
                name: name.to_string(),
            });
        }
        sh(&["ip", "netns", "add", name]);
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        Netns {
            name: name.to_string(),
        }
    }

    /// `ip netns exec <ns> …` as a Command.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

/// Two namespaces joined by a veth pair: `a_if` with `a_addr` (CIDR) in `a`, `b_if` with
/// `b_addr` in `b`.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    sh(&[
        "ip", "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    sh(&["ip", "-n", &a.name, "addr", "add", a_addr, "dev", a_if]);
    sh(&["ip", "-n", &b.name, "addr", "add", b_addr, "dev", b_if]);
    sh(&["ip", "-n", &a.name, "link", "set", a_if, "up"]);
    sh(&["ip", "-n", &b.name, "link", "set", b_if, "up"]);
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            let pids: Vec<i32> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            for &p in &pids {
                // A pid in our own namespace: something this test started.
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            if !pids.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
