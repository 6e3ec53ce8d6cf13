//! AF_XDP end to end on a veth pair in two network namespaces of our own: the steering
//! program sends UDP 4500/1701/500 and ESP to our sockets (both queues), lets ICMP and
//! ARP through to the kernel, and what we transmit reaches the peer. Needs root.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sekisho::dataplane::xdp::loader::{Side, SteerConfig, Steering, ifindex};
use sekisho::dataplane::xdp::xsk::{Xsk, XskConfig};
use sekisho::esp::encap::write_ipv4_header;

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
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

fn root_ok(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces, XDP, AF_XDP)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        common::skip(test, "needs iproute2 (apt-get install iproute2)");
        return false;
    }
    true
}

#[test]
fn steering_and_af_xdp_rx_tx_on_two_queues() {
    if !root_ok("steering_and_af_xdp_rx_tx_on_two_queues") {
        return;
    }
    let id = std::process::id();
    let (na, nb) = (format!("skxa{id}"), format!("skxb{id}"));
    let _guard = Netns {
        names: vec![na.clone(), nb.clone()],
    };
    sh(&["ip", "netns", "add", &na]);
    sh(&["ip", "netns", "add", &nb]);
    sh(&[
        "ip",
        "-n",
        &na,
        "link",
        "add",
        "xa0",
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "xb0",
        "netns",
        &nb,
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
    ]);
    sh(&["ip", "-n", &na, "addr", "add", "192.0.2.1/24", "dev", "xa0"]);
    sh(&["ip", "-n", &nb, "addr", "add", "192.0.2.2/24", "dev", "xb0"]);
    for (n, d) in [(&na, "xa0"), (&nb, "xb0")] {
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", n, "link", "set", d, "up"]);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = {
        let (stop, echoed, na) = (stop.clone(), echoed.clone(), na.clone());
        std::thread::spawn(move || {
            enter(&na);
            let cfg = SteerConfig {
                ike_port: 500,
                natt_port: 4500,
                l2tp_port: 1701,
                pool: None,
            };
            let mut steer = Steering::attach("xa0", Side::Outside, &cfg).expect("attach");
            let ifi = ifindex("xa0").unwrap();
            let mut socks: Vec<Xsk> = (0..2)
                .map(|q| {
                    Xsk::new(&XskConfig {
                        ifindex: ifi,
                        queue: q,
                        frames: 4096,
                        frame_size: 2048,
                        ring_size: 1024,
                        zero_copy: false,
                    })
                    .expect("xsk")
                })
                .collect();
            for (q, s) in socks.iter().enumerate() {
                steer.register(q as u32, s).expect("register");
            }
            ready_tx.send(()).unwrap();
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for s in socks.iter_mut() {
                    batch.clear();
                    s.rx_batch(&mut batch, 64);
                    let out: Vec<_> = batch
                        .drain(..)
                        .map(|(mut f, st, en)| {
                            let b = f.as_mut();
                            echo(&mut b[st..en]);
                            echoed.fetch_add(1, Ordering::Relaxed);
                            (f, st, en)
                        })
                        .collect();
                    s.tx_batch(out);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            steer.counters()
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("worker ready");

    // Plain ICMP still reaches the kernel of the AF_XDP side.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &nb,
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "192.0.2.1",
        ])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "ping through XDP_PASS: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // UDP to 4500 and 1701 from several source ports (spreads over both queues).
    let got = {
        let nb = nb.clone();
        std::thread::spawn(move || {
            enter(&nb);
            let mut ok = 0;
            for (i, port) in [4500u16, 1701, 500].iter().cycle().take(60).enumerate() {
                let s = UdpSocket::bind(SocketAddrV4::new(
                    Ipv4Addr::new(192, 0, 2, 2),
                    20000 + i as u16,
                ))
                .unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let msg = format!("probe {i}");
                s.send_to(
                    msg.as_bytes(),
                    SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), *port),
                )
                .unwrap();
                let mut buf = [0u8; 64];
                if let Ok((n, from)) = s.recv_from(&mut buf)
                    && &buf[..n] == msg.as_bytes()
                    && from.port() == *port
                {
                    ok += 1;
                }
            }
            ok
        })
        .join()
        .unwrap()
    };
    stop.store(true, Ordering::Relaxed);
    let (redirected, passed, _) = worker.join().unwrap();
    assert_eq!(got, 60, "all probes echoed through AF_XDP");
    assert!(echoed.load(Ordering::Relaxed) >= 60);
    assert!(redirected >= 60, "program counted {redirected} redirects");
    assert!(passed >= 2, "ICMP/ARP passed: {passed}");
}

/// Swaps Ethernet, IPv4 and UDP addresses so the frame goes back to its sender.
fn echo(f: &mut [u8]) {
    if f.len() < 42 {
        return;
    }
    for i in 0..6 {
        f.swap(i, 6 + i);
    }
    let ip = &mut f[14..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]);
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let ident = u16::from_be_bytes([ip[4], ip[5]]);
    let proto = ip[9];
    write_ipv4_header(&mut ip[..20], total, ident, proto, dst, src);
    if proto == 17 && hl == 20 {
        let u = &mut ip[20..];
        let (sp, dp) = ([u[0], u[1]], [u[2], u[3]]);
        u[0..2].copy_from_slice(&dp);
        u[2..4].copy_from_slice(&sp);
        u[6..8].copy_from_slice(&[0, 0]); // no checksum (the sender's was partial)
    }
}
