//! ike-scan (NTA Monitor's IKEv1 prober, an implementation we did not write) against
//! `sekisho run`: one Main Mode first message per probe, with chosen transforms
//! (`--trans=enc[/bits],hash,auth,group`), from netns S (10.78.1.1) to the gateway in netns
//! G (10.78.1.254).
//!
//! Accepted — "Main Mode Handshake returned" with the SA we offered: AES-128/256 ×
//! SHA1/SHA2-256 × groups 14 (modp2048), 19 (ecp256), 31 (curve25519), PSK; and a
//! multi-transform proposal whose only acceptable transform is the last. Refused with
//! "Notify message 14 (NO-PROPOSAL-CHOSEN)": DES, MD5, groups 1 and 2, 3DES (allow_3des =
//! false, allow_modp1024 = false), and ike-scan's default probe (DES/3DES × MD5/SHA1 ×
//! groups 1/2). With allow_3des = allow_modp1024 = true the default probe gets 3DES/SHA1/
//! group 2.
//!
//! Output format as ike-scan 1.9.5 prints it (checked against strongSwan 5.9.8 as the
//! responder): `<ip>\tMain Mode Handshake returned HDR=(…) SA=(Enc=AES KeyLength=128
//! Hash=SHA1 Group=14:modp2048 Auth=PSK LifeType=Seconds LifeDuration=28800) VID=…`,
//! `Group=31` has no name; a refusal is `<ip>\tNotify message 14 (NO-PROPOSAL-CHOSEN)
//! HDR=(…)`. Needs root and ike-scan (apt-get install ike-scan). ~2 s per gateway when all
//! probes are answered; 2.4 s more for each unanswered probe.

mod common;

use std::path::Path;
use std::process::Command;

use common::gateway::{self, Gateway};
use common::netns::{self, Netns};

const GW: &str = "10.78.1.254";

#[derive(Debug)]
enum Expect {
    /// Main Mode answered with an SA containing all of these `key=value` items.
    Accept(Vec<&'static str>),
    /// NO-PROPOSAL-CHOSEN.
    Refuse,
}

fn usable(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces, TUN)");
        return false;
    }
    let ok = Command::new("ike-scan")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("ike-scan"));
    if !ok {
        common::skip(test, "ike-scan is not installed (apt-get install ike-scan)");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        common::skip(test, "no /dev/net/tun");
        return false;
    }
    if !gateway::has_run(env!("CARGO_BIN_EXE_sekisho")) {
        eprintln!("SKIP {test}: this sekisho has no `run` subcommand yet");
        return false;
    }
    gateway::has_ike(test)
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The SA=(…) items of a handshake answer.
fn sa_items(out: &str) -> Option<Vec<String>> {
    let at = out.find("SA=(")?;
    let rest = &out[at + 4..];
    let end = rest.find(')')?;
    Some(rest[..end].split_whitespace().map(str::to_string).collect())
}

/// Runs the probes against a gateway with `ipsec` as its [ipsec] section; returns the
/// mismatches (probe, expectation, ike-scan's output).
fn scan(test: &str, tag: &str, ipsec: &str, probes: &[(Vec<String>, Expect)]) -> Vec<String> {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("sekisho-ikescan-{pid}-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let g = Netns::new(&format!("skisg{pid}{tag}"));
    let s = Netns::new(&format!("skiss{pid}{tag}"));
    netns::veth(&g, "ski0", "10.78.1.254/24", &s, "ski1", "10.78.1.1/24");
    let toml = format!(
        r#"[gateway]
listen = "{GW}"
interface = "ski0"
io = "socket"
tun_name = "skit0"
{ipsec}[l2tp]
require_ipsec = true
[ppp]
local_address = "10.99.0.1"
[pool]
range = "10.99.0.10-10.99.0.250"
[[user]]
name = "vpnuser"
password = "vpnpass123"
"#
    );
    let mut gw = Gateway::start(&g, &dir, &toml, "10.99.0.1");
    let mut bad = Vec::new();
    for (args, expect) in probes {
        let o = s
            .cmd("ike-scan")
            .args(["--retry=2", "--timeout=500"])
            .args(args.iter())
            .arg(GW)
            .output()
            .expect("run ike-scan");
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let answer: Vec<&str> = out.lines().filter(|l| l.starts_with(GW)).collect();
        let line = answer.join(" | ");
        let ok = match expect {
            Expect::Accept(items) => {
                line.contains("Main Mode Handshake returned")
                    && sa_items(&line).is_some_and(|sa| {
                        items
                            .iter()
                            .all(|i| sa.iter().any(|x| x == i || x.starts_with(&format!("{i}:"))))
                    })
            }
            Expect::Refuse => line.contains("Notify message 14 (NO-PROPOSAL-CHOSEN)"),
        };
        eprintln!(
            "{test}: {} {args:?}: {}",
            if ok { "ok  " } else { "FAIL" },
            if line.is_empty() {
                "(no answer)"
            } else {
                &line
            }
        );
        if !ok {
            bad.push(format!(
                "ike-scan {}: expected {expect:?}, got: {}",
                args.join(" "),
                if line.is_empty() { "no answer" } else { &line }
            ));
        }
    }
    if !gw.alive() {
        bad.push("the gateway exited during the scan".into());
    }
    if !bad.is_empty() {
        bad.push(gw.log_tail(40));
    } else {
        drop(gw);
        let _ = std::fs::remove_dir_all(&dir);
    }
    bad
}

#[test]
fn ike_scan_proposal_matrix() {
    let test = "ike_scan_proposal_matrix";
    if !usable(test) {
        return;
    }
    let t0 = std::time::Instant::now();
    let mut probes: Vec<(Vec<String>, Expect)> = Vec::new();
    for (bits, kl) in [("128", "KeyLength=128"), ("256", "KeyLength=256")] {
        for (hash, hname) in [("2", "Hash=SHA1"), ("4", "Hash=SHA2-256")] {
            for (group, gname) in [("14", "Group=14"), ("19", "Group=19"), ("31", "Group=31")] {
                probes.push((
                    args(&[&format!("--trans=7/{bits},{hash},1,{group}")]),
                    Expect::Accept(vec!["Enc=AES", kl, hname, gname, "Auth=PSK"]),
                ));
            }
        }
    }
    probes.extend([
        (args(&["--trans=1,2,1,14"]), Expect::Refuse), // DES
        (args(&["--trans=7/128,1,1,14"]), Expect::Refuse), // MD5
        (args(&["--trans=7/128,2,1,1"]), Expect::Refuse), // group 1 (modp768)
        (args(&["--trans=7/128,2,1,2"]), Expect::Refuse), // group 2 (modp1024)
        (args(&["--trans=5,2,1,14"]), Expect::Refuse), // 3DES, allow_3des = false
        (args(&[]), Expect::Refuse),                   // ike-scan's default 8 transforms
        (
            // several transforms; only the last is acceptable
            args(&[
                "--trans=1,1,1,1",
                "--trans=5,2,1,2",
                "--trans=7/128,1,1,14",
                "--trans=7/256,4,1,14",
            ]),
            Expect::Accept(vec![
                "Enc=AES",
                "KeyLength=256",
                "Hash=SHA2-256",
                "Group=14",
            ]),
        ),
    ]);
    let bad = scan(test, "m", &gateway::ipsec_sections(5), &probes);
    assert!(
        bad.is_empty(),
        "{test}: {} probe(s) not answered as expected:\n{}",
        bad.len() - 1,
        bad.join("\n")
    );
    eprintln!(
        "{test}: ok: {} probes in {:.1?}",
        probes.len(),
        t0.elapsed()
    );
}

#[test]
fn ike_scan_default_probe_with_legacy_allowed() {
    let test = "ike_scan_default_probe_with_legacy_allowed";
    if !usable(test) {
        return;
    }
    let ipsec = gateway::ipsec_sections(5)
        .replace("allow_3des = false", "allow_3des = true")
        .replace("allow_modp1024 = false", "allow_modp1024 = true");
    let probes = vec![
        // DES and group 1 stay refused; 3DES + SHA1 + group 2 is what remains
        (
            args(&[]),
            Expect::Accept(vec!["Enc=3DES", "Hash=SHA1", "Group=2", "Auth=PSK"]),
        ),
        (
            args(&["--trans=5,2,1,2"]),
            Expect::Accept(vec!["Enc=3DES", "Hash=SHA1", "Group=2"]),
        ),
        (args(&["--trans=1,2,1,2"]), Expect::Refuse), // DES stays refused
        (args(&["--trans=5,2,1,1"]), Expect::Refuse), // group 1 stays refused
    ];
    let bad = scan(test, "l", &ipsec, &probes);
    assert!(
        bad.is_empty(),
        "{test}: {} probe(s) not answered as expected:\n{}",
        bad.len() - 1,
        bad.join("\n")
    );
}
