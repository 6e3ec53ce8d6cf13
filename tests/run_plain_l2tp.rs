//! `sekisho run` end to end over plain L2TP (`require_ipsec = false`), driven by the
//! project's own client machines (the sans-IO LAC and PPP client) over a real UDP
//! socket in a network namespace: tunnel, session, LCP, MS-CHAPv2, IPCP, a ping to the
//! gateway's inner address through the tunnel (answered by the kernel behind the TUN
//! device), then SIGTERM: the gateway tears the session down politely and writes the
//! accounting stop line.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command};
use std::time::Duration;

use common::l2tp_client::{self, AfterPong};
use common::netns::{enter, sh};

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

struct World {
    ns: [String; 2],
    gateway: Option<Child>,
    dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(g) = &mut self.gateway {
            let _ = g.kill();
            let _ = g.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn own_client_over_plain_l2tp_against_sekisho_run() {
    let test = "own_client_over_plain_l2tp_against_sekisho_run";
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces, TUN)");
        return;
    }
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("sekisho-run-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = World {
        ns: [format!("skrg{id}"), format!("skrc{id}")],
        gateway: None,
        dir: dir.clone(),
    };
    let [g, c] = w.ns.clone();
    for n in [&g, &c] {
        sh(&["ip", "netns", "add", n]);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    sh(&[
        "ip", "-n", &g, "link", "add", "skr0", "type", "veth", "peer", "name", "skr1", "netns", &c,
    ]);
    sh(&[
        "ip",
        "-n",
        &g,
        "addr",
        "add",
        "10.77.0.254/24",
        "dev",
        "skr0",
    ]);
    sh(&["ip", "-n", &c, "addr", "add", "10.77.0.2/24", "dev", "skr1"]);
    sh(&["ip", "-n", &g, "link", "set", "skr0", "up"]);
    sh(&["ip", "-n", &c, "link", "set", "skr1", "up"]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &g,
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);

    let acct = dir.join("accounting.jsonl");
    let cfg = dir.join("sekisho.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
listen = "10.77.0.254"
interface = "skr0"
io = "socket"
tun_name = "skrt0"
[l2tp]
require_ipsec = false
hello_interval = 30
[ppp]
auth = ["mschapv2", "chap", "pap"]
local_address = "10.99.0.1"
dns = ["10.99.0.1"]
[pool]
range = "10.99.0.10-10.99.0.250"
[[user]]
name = "vpnuser"
password = "vpnpass123"
[accounting]
file = "{}"
"#,
            acct.display()
        ),
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &g])
        .arg(env!("CARGO_BIN_EXE_sekisho"))
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .spawn()
        .expect("start sekisho run");
    let pid = child.id();
    w.gateway = Some(child);
    std::thread::sleep(Duration::from_millis(800));

    let cns = c.clone();
    let result = std::thread::spawn(move || {
        enter(&cns);
        let sock = UdpSocket::bind(SocketAddrV4::new(CLIENT, 1701)).unwrap();
        l2tp_client::run(
            &sock,
            SocketAddrV4::new(GW, 1701),
            "vpnuser",
            "vpnpass123",
            Duration::from_secs(25),
            || {
                // Ask the gateway to stop: it must tear the session down itself.
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                AfterPong::WaitTeardown
            },
        )
    })
    .join()
    .unwrap();

    let up = result.up.expect("PPP came up through sekisho run");
    assert!(
        (u32::from(Ipv4Addr::new(10, 99, 0, 10))..=u32::from(Ipv4Addr::new(10, 99, 0, 250)))
            .contains(&u32::from(up.local_address)),
        "pool address: {}",
        up.local_address
    );
    assert_eq!(up.peer_address, Ipv4Addr::new(10, 99, 0, 1));
    assert!(
        result.pong,
        "the ping through the tunnel was answered (then SIGTERM was sent)"
    );
    let cause = result
        .torn_down
        .expect("the gateway tore the session down on SIGTERM");
    eprintln!("teardown seen by the client: {cause}");
    let mut g = w.gateway.take().unwrap();
    let status = g.wait().unwrap();
    assert!(
        status.success(),
        "sekisho run exits cleanly on SIGTERM: {status:?}"
    );
    let lines = std::fs::read_to_string(&acct).unwrap();
    let recs: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2, "{lines}");
    assert_eq!(recs[0]["event"], "start");
    assert_eq!(recs[0]["user"], "vpnuser");
    assert_eq!(recs[1]["event"], "stop");
    assert!(recs[1]["packets_in"].as_u64().unwrap() >= 1, "{lines}");
    assert!(recs[1]["packets_out"].as_u64().unwrap() >= 1, "{lines}");
    assert!(
        recs[1]["cause"].as_str().unwrap().contains("shut"),
        "{lines}"
    );
}
