//! `sekisho run` as a system-test peer: started in a network namespace with a config file
//! and its log in a directory of the test's, stopped (SIGTERM, then SIGKILL, by its pid)
//! on drop; its accounting file read back as JSON lines.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::netns::Netns;

/// The PSK of the client VM guest (tests/clientvm/guest/conf/ipsec.secrets), used by
/// every IPsec system test.
pub const PSK: &str = "cv-test-psk-123";

/// The `[ipsec]` section the IKE tests give the gateway (psk, lifetimes, DPD, legacy
/// algorithms refused), and `[l2tp] require_ipsec = true`.
pub fn ipsec_sections(dpd_interval: u32) -> String {
    format!(
        "[ipsec]\npsk = \"{PSK}\"\nike_lifetime_min = 10\nesp_lifetime_min = 10\n\
         dpd_interval = {dpd_interval}\nallow_3des = false\nallow_modp1024 = false\n"
    )
}

/// `sekisho run` exists in this build.
pub fn has_run(bin: &str) -> bool {
    match Command::new(bin).args(["run", "--help"]).output() {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr).to_string()
                + &String::from_utf8_lossy(&o.stdout);
            !text.contains("unrecognized subcommand")
        }
        Err(_) => false,
    }
}

/// This build's configuration knows the IKE responder's keys (`[ipsec]
/// ike_lifetime_min`, `dpd_interval`, …). When it does not, the responder has not landed:
/// prints why the test skips and returns false. Like a missing `run` subcommand, this is
/// not a missing system tool, so it does not fail under SEKISHO_REQUIRE_SYSTEM_TESTS.
pub fn has_ike(test: &str) -> bool {
    let probe = format!(
        "[gateway]\nlisten = \"10.0.0.1\"\n{}[l2tp]\nrequire_ipsec = true\n\
         [ppp]\nlocal_address = \"10.99.0.1\"\n[pool]\nrange = \"10.99.0.10-10.99.0.20\"\n",
        ipsec_sections(5)
    );
    match sekisho::config::Config::parse(&probe) {
        Ok(_) => true,
        Err(e) => {
            let e = format!("{e}");
            if e.contains("unknown field") || e.contains("ike_lifetime_min") {
                eprintln!(
                    "SKIP {test}: this sekisho's [ipsec] has no IKE responder keys yet ({e})"
                );
                false
            } else {
                panic!("{test}: the IKE probe configuration does not parse: {e}\n{probe}");
            }
        }
    }
}

/// Accounting lines (JSON objects) of `path`; empty when the file is not there yet.
pub fn accounting(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("accounting line {l:?}: {e}")))
        .collect()
}

/// The last `n` lines of a file, headed by its name, for failure messages.
pub fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- {} (last {n} lines)\n{}",
        p.display(),
        lines[from..].join("\n")
    )
}

/// A running `sekisho run`.
pub struct Gateway {
    child: Option<Child>,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub accounting: PathBuf,
}

impl Gateway {
    /// Writes `toml` + `[accounting] file = dir/accounting.jsonl` to dir/sekisho.toml and
    /// starts `sekisho run` in `ns` (RUST_LOG from SEKISHO_TEST_RUST_LOG, default info;
    /// output in dir/gateway.log); waits until `ready_addr` (its TUN address) is in the
    /// namespace. Panics with the log when it does not get there.
    pub fn start(ns: &Netns, dir: &Path, toml: &str, ready_addr: &str) -> Gateway {
        fs::create_dir_all(dir).expect("gateway dir");
        let accounting = dir.join("accounting.jsonl");
        let text = format!(
            "{toml}\n[accounting]\nfile = \"{}\"\n",
            accounting.display()
        );
        if let Err(e) = sekisho::config::Config::parse(&text) {
            panic!("gateway config does not parse: {e}\n{text}");
        }
        let cfg = dir.join("sekisho.toml");
        fs::write(&cfg, &text).expect("write config");
        let log = dir.join("gateway.log");
        let rust_log = std::env::var("SEKISHO_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        let child = ns
            .cmd(env!("CARGO_BIN_EXE_sekisho"))
            .arg("run")
            .arg("-c")
            .arg(&cfg)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(fs::File::create(dir.join("gateway.stdout")).expect("stdout file"))
            .stderr(fs::File::create(&log).expect("log file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start sekisho run");
        let mut g = Gateway {
            child: Some(child),
            dir: dir.to_path_buf(),
            log,
            accounting,
        };
        let t = Instant::now();
        loop {
            let o = Command::new("ip")
                .args(["-n", &ns.name, "-4", "-o", "addr", "show"])
                .output()
                .expect("ip addr");
            if String::from_utf8_lossy(&o.stdout).contains(&format!("inet {ready_addr}/")) {
                break;
            }
            if !g.alive() || t.elapsed() > Duration::from_secs(15) {
                panic!(
                    "sekisho run did not come up ({ready_addr} not in {}):\n{}",
                    ns.name,
                    tail(&g.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The sockets are bound right after the TUN device is configured.
        std::thread::sleep(Duration::from_millis(300));
        g
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, up to 5 s for a clean exit, then SIGKILL. The exit status, if it had one.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // `ip netns exec` execs the gateway: the pid is the gateway's, ours, not reaped.
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
