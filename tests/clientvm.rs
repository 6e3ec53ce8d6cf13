//! The real Linux L2TP client against `sekisho run`: Debian's xl2tpd + pppd (MS-CHAPv2,
//! kernel L2TP and PPP) in a qemu guest (TCG), over plain UDP 1701
//! (`[l2tp] require_ipsec = false`, the guest's IPsec step skipped).
//!
//! The harness is tests/clientvm/ (README.md there): `build-image.sh` makes the guest image
//! once per machine (cached in /var/tmp/sekisho-clientvm/cache), `run-client.sh` creates a
//! network namespace of its own with bridge cvbr0 = 10.77.0.254, starts `sekisho run -c
//! tests/clientvm/sekisho-plain.toml` there (TUN 10.99.0.1/24), then `iperf3 -s -B
//! 10.99.0.1`, boots the client guest on the bridge and collects what it did into a run
//! folder under /var/tmp/sekisho-clientvm/runs/. Nothing leaves the namespace.
//!
//! Asserted from the run folder: ppp0 up with an address from the pool (10.99.0.10–250),
//! ping to 10.99.0.1 through ppp0 without loss, an iperf3 receiver line, the gateway still
//! running when the client was done, and the accounting file with a start line for
//! vpnuser (and a stop line when the guest disconnected cleanly).
//!
//! Needs root, qemu-system-x86_64, iproute2, iperf3 and (for the first image build)
//! debootstrap and the Debian mirror: tests/clientvm/host-setup.sh installs them, and this
//! test runs it itself when SEKISHO_REQUIRE_SYSTEM_TESTS=1 or SEKISHO_CLIENTVM_SETUP=1.
//! Otherwise it skips with the reason. About 1 minute with a cached image, 3–4 minutes
//! when the image is built.

mod common;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TEST: &str = "real_linux_client_over_plain_l2tp";
/// The harness's own directory on the host.
const STATE_DIR: &str = "/var/tmp/sekisho-clientvm";
/// Image build (debootstrap + kernel, ~2.5 min here) when not cached.
const IMAGE_TIMEOUT: Duration = Duration::from_secs(900);
/// One whole client run: boot ~15 s, session ~30 s; the guest itself is killed at 420 s.
/// SEKISHO_CLIENTVM_RUN_TIMEOUT (seconds) overrides it.
const RUN_TIMEOUT: Duration = Duration::from_secs(540);
const GUEST_TIMEOUT_SECS: u32 = 420;

fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clientvm")
}

/// `cmd --version` (or `-V`) runs.
fn runs(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The host tools the harness uses; the missing ones.
fn missing_tools() -> Vec<&'static str> {
    let mut m = Vec::new();
    if !runs("qemu-system-x86_64", "--version") {
        m.push("qemu-system-x86_64");
    }
    if !runs("ip", "-V") {
        m.push("ip");
    }
    if !runs("iperf3", "--version") {
        m.push("iperf3");
    }
    if !Path::new("/usr/bin/time").exists() {
        m.push("/usr/bin/time");
    }
    if !runs("debootstrap", "--version") {
        m.push("debootstrap");
    }
    m
}

/// A child in a process group of its own (with everything it starts), killed with the
/// group on drop; and the harness's network namespace, emptied and deleted on drop — on
/// every exit path, a failed assertion included.
struct Harness {
    child: Option<Child>,
    netns: String,
}

impl Harness {
    fn new(netns: String) -> Harness {
        Harness { child: None, netns }
    }

    /// Runs `cmd` (made a process-group leader) to its end or until `limit`; at the limit
    /// it gets SIGTERM (the harness tears down on it), then its group SIGKILL.
    fn run(&mut self, mut cmd: Command, limit: Duration) -> Result<(), String> {
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let c = self.child.as_mut().expect("child");
            match c.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return if status.success() {
                        Ok(())
                    } else {
                        Err(format!("exited with {status}"))
                    };
                }
                Ok(None) if started.elapsed() > limit => {
                    self.stop();
                    return Err(format!("still running after {limit:?}: stopped"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(250)),
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }

    /// SIGTERM to the child, up to 30 s for its teardown, then SIGKILL to its group.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // The pid and process group of a child we spawned and have not reaped yet, so
        // neither can have been reused.
        let pid = Pid::from_raw(c.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The group is the one the child leads (process_group(0)).
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = c.wait();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
        // The namespace is ours (a name with our pid): whatever still runs in it we started.
        let listed = Command::new("ip").args(["netns", "list"]).output();
        let exists = listed.is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(self.netns.as_str()))
        });
        if !exists {
            return;
        }
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
        {
            for p in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(pid) = p.parse::<i32>() {
                    // A pid listed in our own namespace just now.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// The last `n` lines of a file, for failure messages.
fn tail(p: &Path, n: usize) -> String {
    let s = read(p);
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- {} (last {n} lines)\n{}",
        p.display(),
        lines[from..].join("\n")
    )
}

/// The IPv4 address of ppp0 in `ip -s addr` output.
fn ppp0_address(ip_addr: &str) -> Option<Ipv4Addr> {
    let mut in_ppp0 = false;
    for line in ip_addr.lines() {
        if !line.starts_with(' ') {
            in_ppp0 = line.split(':').nth(1).map(str::trim) == Some("ppp0");
        } else if in_ppp0 {
            let mut w = line.split_whitespace();
            if w.next() == Some("inet") {
                let a = w.next()?;
                return a.split('/').next()?.parse().ok();
            }
        }
    }
    None
}

/// "start" or "stop" for an accounting line: the value of its event field, whatever the
/// gateway names it.
fn accounting_event(v: &serde_json::Value) -> Option<String> {
    let o = v.as_object()?;
    for k in [
        "event",
        "type",
        "kind",
        "status",
        "record",
        "acct_status_type",
    ] {
        if let Some(s) = o.get(k).and_then(|x| x.as_str()) {
            return Some(s.to_ascii_lowercase());
        }
    }
    o.values()
        .filter_map(|x| x.as_str())
        .map(str::to_ascii_lowercase)
        .find(|s| s == "start" || s == "stop")
}

fn key_values(result_txt: &str) -> Vec<(String, String)> {
    result_txt
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `sekisho run` exists in this build (the subcommand is being written alongside).
fn sekisho_has_run(bin: &str) -> bool {
    match Command::new(bin).args(["run", "--help"]).output() {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr).to_string()
                + &String::from_utf8_lossy(&o.stdout);
            !text.contains("unrecognized subcommand")
        }
        Err(_) => false,
    }
}

/// Removes all but the `keep` newest run folders of this test (named test-<secs>-<pid>).
fn prune_runs(keep: usize) {
    let Ok(dir) = fs::read_dir(format!("{STATE_DIR}/runs")) else {
        return;
    };
    let mut runs: Vec<(u64, PathBuf)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let secs = name
                .strip_prefix("test-")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            Some((secs, e.path()))
        })
        .collect();
    runs.sort();
    let old = runs.len().saturating_sub(keep);
    for (_, p) in &runs[..old] {
        let _ = fs::remove_dir_all(p);
    }
}

#[test]
fn real_linux_client_over_plain_l2tp() {
    if !nix::unistd::geteuid().is_root() {
        common::skip(
            TEST,
            "needs root (network namespace, TUN, tap devices, qemu)",
        );
        return;
    }
    let bin = env!("CARGO_BIN_EXE_sekisho");
    if !sekisho_has_run(bin) {
        // Not a missing system tool: the subcommand itself is not in this build yet. This
        // skip does not fail under SEKISHO_REQUIRE_SYSTEM_TESTS, so the test goes live as
        // soon as `sekisho run` lands.
        eprintln!("SKIP {TEST}: this sekisho has no `run` subcommand yet");
        return;
    }
    let here = harness_dir();
    let mut missing = missing_tools();
    let setup_allowed =
        common::required() || std::env::var("SEKISHO_CLIENTVM_SETUP").is_ok_and(|v| v == "1");
    if !missing.is_empty() && setup_allowed {
        let t = Instant::now();
        let ok = Command::new("bash")
            .arg(here.join("host-setup.sh"))
            .status()
            .is_ok_and(|s| s.success());
        eprintln!("{TEST}: host-setup.sh ok={ok} in {:.0?}", t.elapsed());
        missing = missing_tools();
    }
    if !missing.is_empty() {
        common::skip(
            TEST,
            &format!(
                "missing {} (run tests/clientvm/host-setup.sh, or set SEKISHO_CLIENTVM_SETUP=1)",
                missing.join(", ")
            ),
        );
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        common::skip(TEST, "no /dev/net/tun");
        return;
    }

    // The run folder and the gateway's configuration with the accounting file in it.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let pid = std::process::id();
    prune_runs(10);
    let run = PathBuf::from(format!("{STATE_DIR}/runs/test-{stamp}-{pid}"));
    fs::create_dir_all(&run).expect("run folder");
    let accounting = run.join("accounting.jsonl");
    let toml = read(&here.join("sekisho-plain.toml"));
    let toml: String = toml
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("file =") {
                format!("file = \"{}\"", accounting.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    if let Err(e) = sekisho::config::Config::parse(&toml) {
        panic!("tests/clientvm/sekisho-plain.toml does not parse: {e:?}");
    }
    let config = run.join("sekisho.toml");
    fs::write(&config, &toml).expect("write config");
    eprintln!("{TEST}: run folder {}", run.display());

    let netns = format!("skcv{pid}");
    let mut h = Harness::new(netns.clone());

    // 1. The image: from the cache, or built (~2.5 min, once per machine).
    let t_image = Instant::now();
    let image_log = run.join("build-image.log");
    let mut cmd = Command::new("bash");
    cmd.arg(here.join("build-image.sh"))
        .stdout(fs::File::create(run.join("image-dir.txt")).expect("image-dir.txt"))
        .stderr(fs::File::create(&image_log).expect("build-image.log"));
    if let Err(e) = h.run(cmd, IMAGE_TIMEOUT) {
        panic!("build-image.sh: {e}\n{}", tail(&image_log, 30));
    }
    let image = read(&run.join("image-dir.txt"))
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let image_secs = t_image.elapsed().as_secs_f64();

    // 2. Gateway + iperf3 server in the namespace, the client guest, teardown.
    let t_run = Instant::now();
    let harness_log = run.join("harness.log");
    let rust_log = std::env::var("SEKISHO_CLIENTVM_RUST_LOG").unwrap_or_else(|_| "info".into());
    let gateway_cmd = format!(
        "NO_COLOR=1 RUST_LOG='{rust_log}' exec '{bin}' run -c '{}'",
        config.display()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(here.join("run-client.sh"))
        .arg(&run)
        .env("IMG", &image)
        .env("NS", &netns)
        .env("MODE", "client")
        .env("GATEWAY_CMD", &gateway_cmd)
        .env("READY_ADDR", "10.99.0.1")
        .env("IPERF_SERVER", "10.99.0.1")
        .env("CLIENT_PARAMS", here.join("params/plain-vs-sekisho.sh"))
        .env("TIMEOUT", GUEST_TIMEOUT_SECS.to_string())
        .stdout(fs::File::create(&harness_log).expect("harness.log"))
        .stderr(fs::File::create(run.join("harness.stderr")).expect("harness.stderr"));
    let limit = std::env::var("SEKISHO_CLIENTVM_RUN_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(RUN_TIMEOUT, Duration::from_secs);
    let outcome = h.run(cmd, limit);
    drop(h); // namespace gone, qemu and the gateway stopped, before the assertions
    let run_secs = t_run.elapsed().as_secs_f64();

    let client = run.join("client");
    let context = || {
        [
            tail(&run.join("harness.stderr"), 25),
            tail(&run.join("gateway.log"), 40),
            tail(&client.join("console.log"), 40),
            tail(&client.join("pppd.log"), 40),
            tail(&client.join("xl2tpd.log"), 25),
        ]
        .join("\n")
    };
    let results = key_values(&read(&client.join("result.txt")));
    let get = |k: &str| {
        results
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    eprintln!(
        "{TEST}: image {image_secs:.0} s, harness {run_secs:.0} s; guest results: {results:?}"
    );

    // ppp0 up with a pool address
    let addr = ppp0_address(&read(&client.join("ip-addr.txt")));
    let Some(addr) = addr else {
        panic!(
            "ppp0 has no IPv4 address (harness: {outcome:?})\n{}",
            context()
        );
    };
    let pool = Ipv4Addr::new(10, 99, 0, 10)..=Ipv4Addr::new(10, 99, 0, 250);
    assert!(
        pool.contains(&addr),
        "ppp0 address {addr} is not from the pool 10.99.0.10-10.99.0.250"
    );
    // ping through ppp0
    let ping = read(&client.join("ping-ppp.txt"));
    assert!(
        ping.contains(" 0% packet loss") && ping.contains("from 10.99.0.1"),
        "ping 10.99.0.1 through ppp0:\n{ping}\n{}",
        context()
    );
    // iperf3 through ppp0
    let iperf = read(&client.join("iperf3-tunnel-1.txt"));
    assert!(
        iperf.lines().any(|l| l.contains("receiver")),
        "iperf3 through ppp0 has no receiver line:\n{iperf}\n{}",
        context()
    );
    // the gateway survived the session
    assert_eq!(
        read(&run.join("gateway-at-client-end.txt")).trim(),
        "alive",
        "the gateway was not running when the client was done\n{}",
        context()
    );
    // accounting: a start line for vpnuser with the address it got; a stop line after a
    // clean disconnect (pppd gone, xl2tpd exited: its StopCCN went out)
    let acct = read(&accounting);
    let lines: Vec<serde_json::Value> = acct
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("accounting line {l:?}: {e}")))
        .collect();
    let events: Vec<Option<String>> = lines.iter().map(accounting_event).collect();
    eprintln!("{TEST}: accounting:\n{acct}");
    let start = lines
        .iter()
        .zip(&events)
        .find(|(_, e)| e.as_deref() == Some("start"))
        .map(|(l, _)| l.to_string());
    let Some(start) = start else {
        panic!(
            "no accounting start line in {}:\n{acct}\n{}",
            accounting.display(),
            context()
        );
    };
    assert!(
        start.contains("vpnuser") && start.contains(&addr.to_string()),
        "accounting start line lacks the user or the address {addr}: {start}"
    );
    let clean = !get("ppp0_gone").is_empty()
        && get("ppp0_gone") != "no"
        && !get("xl2tpd_exit").is_empty()
        && get("xl2tpd_exit") != "no";
    if clean {
        assert!(
            events.iter().any(|e| e.as_deref() == Some("stop")),
            "the client disconnected cleanly but there is no accounting stop line:\n{acct}"
        );
    } else {
        eprintln!("{TEST}: the guest did not disconnect cleanly; stop line not required");
    }
    assert!(outcome.is_ok(), "run-client.sh: {outcome:?}\n{}", context());
    eprintln!(
        "{TEST}: ok: ppp0 {addr}, ping 0% loss, iperf3 {} Mbit/s, up in {} s; run folder {}",
        get("iperf3_1_receiver_mbps"),
        get("ppp_up_seconds"),
        run.display()
    );
}
