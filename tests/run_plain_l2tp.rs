//! `sekisho run` end to end over plain L2TP (`require_ipsec = false`), driven by the
//! project's own client machines (the sans-IO LAC and PPP client) over a real UDP
//! socket in a network namespace: tunnel, session, LCP, MS-CHAPv2, IPCP, a ping to the
//! gateway's inner address through the tunnel (answered by the kernel behind the TUN
//! device), then SIGTERM: the gateway tears the session down politely and writes the
//! accounting stop line.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sekisho::aaa::Password;
use sekisho::l2tp::{self, Lac, LacConfig};
use sekisho::ppp::{self, Link};

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

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run");
    assert!(st.success(), "{args:?} failed");
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 20 + 8 + 32];
    sekisho::esp::encap::write_ipv4_header(&mut p[..20], 60, seq, 1, src, dst);
    p[20] = 8;
    p[24..26].copy_from_slice(&0x5e5eu16.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    let sum = !sekisho::wire::checksum::fold(sekisho::wire::checksum::sum(&p[20..]));
    p[22..24].copy_from_slice(&sum.to_be_bytes());
    p
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
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let gw = SocketAddrV4::new(GW, 1701);
        let t0 = Instant::now();
        let mut lac = Lac::new(
            t0,
            LacConfig {
                tunnel: l2tp::TunnelConfig::default(),
                peer: l2tp::PeerKey::plain(gw),
            },
        );
        let mut session: Option<u16> = None;
        let mut link: Option<Link> = None;
        let mut up: Option<ppp::LinkUp> = None;
        let mut pong = false;
        let mut buf = [0u8; 2048];
        let mut opened = false;
        let mut torn_down = None;
        while t0.elapsed() < Duration::from_secs(25) {
            let now = Instant::now();
            if lac.is_established() && !opened {
                session = lac.open_session(now);
                opened = true;
            }
            if lac.next_timeout().is_some_and(|t| t <= now) {
                lac.handle_timeout(now);
            }
            if let Some(l) = &mut link
                && l.next_timeout().is_some_and(|t| t <= now)
            {
                l.handle_timeout(now);
            }
            while let Some(ev) = lac.poll_event() {
                match ev {
                    l2tp::Event::Transmit { bytes, .. } => {
                        sock.send_to(&bytes, gw).unwrap();
                    }
                    l2tp::Event::SessionUp(_) => {
                        let mut l = Link::client(
                            ppp::ClientConfig::new(
                                "vpnuser",
                                Password::new(b"vpnpass123".to_vec()),
                            ),
                            now,
                        );
                        l.handle_timeout(now);
                        link = Some(l);
                    }
                    l2tp::Event::SessionDown { cause, .. }
                    | l2tp::Event::TunnelDown { cause, .. } => {
                        torn_down.get_or_insert(cause);
                    }
                    _ => {}
                }
            }
            if let (Some(l), Some(sid)) = (&mut link, session) {
                let peer_sid = lac.peer_session_id(sid).unwrap_or(0);
                while let Some(ev) = l.poll_event() {
                    match ev {
                        ppp::Event::Send(frame) => {
                            let mut p = vec![0x00, 0x02];
                            p.extend_from_slice(&lac.peer_tunnel_id().to_be_bytes());
                            p.extend_from_slice(&peer_sid.to_be_bytes());
                            p.extend_from_slice(&frame);
                            sock.send_to(&p, gw).unwrap();
                        }
                        ppp::Event::Up(u) => {
                            // Ping the gateway's inner address through the tunnel.
                            let mut p = vec![0x00, 0x02];
                            p.extend_from_slice(&lac.peer_tunnel_id().to_be_bytes());
                            p.extend_from_slice(&peer_sid.to_be_bytes());
                            p.extend_from_slice(&[0xff, 0x03, 0x00, 0x21]);
                            // On the client side, local_address is ours and peer_address the gateway's.
                            p.extend_from_slice(&icmp_echo(u.local_address, u.peer_address, 1));
                            sock.send_to(&p, gw).unwrap();
                            up = Some(u);
                        }
                        ppp::Event::Down(r) => {
                            torn_down.get_or_insert(r.to_string());
                        }
                        _ => {}
                    }
                }
            }
            if pong && up.is_some() && torn_down.is_none() && t0.elapsed() > Duration::from_secs(1)
            {
                // Ask the gateway to stop: it must tear the session down itself.
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                pong = false;
                up = up.map(|mut u| {
                    u.mru = 0; // marks "stop requested"
                    u
                });
            }
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let msg = &buf[..n];
            let now = Instant::now();
            if msg.first().is_some_and(|b| b & 0x80 != 0) {
                lac.input(now, msg);
            } else if let Some(l) = &mut link {
                // Data: 6-octet header (no length, no sequence) then PPP.
                let ppp = &msg[6..];
                if ppp.len() > 4 + 20 && ppp[..4] == [0xff, 0x03, 0x00, 0x21] {
                    let ip = &ppp[4..];
                    if ip[9] == 1 && ip[20] == 0 {
                        pong = true;
                    }
                } else {
                    l.input(now, ppp);
                }
            }
            if torn_down.is_some() && up.as_ref().is_some_and(|u| u.mru == 0) {
                break;
            }
        }
        (up, torn_down)
    })
    .join()
    .unwrap();

    let (up, torn_down) = result;
    let up = up.expect("PPP came up through sekisho run");
    assert!(
        (u32::from(Ipv4Addr::new(10, 99, 0, 10))..=u32::from(Ipv4Addr::new(10, 99, 0, 250)))
            .contains(&u32::from(up.local_address)),
        "pool address: {}",
        up.local_address
    );
    assert_eq!(up.peer_address, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(
        up.mru, 0,
        "the ping through the tunnel was answered (then SIGTERM was sent)"
    );
    let cause = torn_down.expect("the gateway tore the session down on SIGTERM");
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
