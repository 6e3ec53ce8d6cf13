//! The data plane end to end, in network namespaces of our own, for both backends
//! (AF_XDP and sockets):
//!
//! ```text
//!  client ns (10.77.0.2)  ──veth, 2 queues──  gateway ns (10.77.0.254, TUN 10.99.0.1/24)
//!                                                 └──veth──  inside ns (10.88.0.2)
//! ```
//!
//! A test client sends ESP-in-UDP/4500 carrying L2TP/PPP/IPv4 with known keys; the
//! gateway's workers (SA and session installed through the worker command path the
//! control thread uses) decapsulate and deliver to the inside host through the TUN
//! device; the inside host answers and the gateway encapsulates back. tshark, capturing
//! on the client's link, decrypts what the gateway emitted and verifies every ICV.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossbeam_channel::bounded;
use sekisho::config::IoMode;
use sekisho::crypto::{Backend, Transform};
use sekisho::dataplane::chain::ControlKind;
use sekisho::dataplane::io::tun::TunConfig;
use sekisho::dataplane::peer::{
    FRAME_HEADROOM, GatewaySide, PeerParams, SimPeer, client_spi, frame_len, keymat,
};
use sekisho::dataplane::runtime::{self, ChosenIo, PlaneConfig};
use sekisho::dataplane::worker::WorkerCmd;
use sekisho::esp::encap::write_ipv4_header;

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
/// The client's inner address; with two workers the session lives on worker 1, so
/// its inner address is odd (the control thread allocates `addr % workers == worker`).
fn inner(workers: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 10 + (workers as u8 - 1))
}

struct Topology {
    ns: [String; 3],
    capture: Option<Child>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(c) = &mut self.capture {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.ns {
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

fn topology(tag: &str) -> Topology {
    let id = std::process::id();
    let ns = [
        format!("skc{tag}{id}"),
        format!("skg{tag}{id}"),
        format!("ski{tag}{id}"),
    ];
    let t = Topology {
        ns: ns.clone(),
        capture: None,
    };
    let [c, g, i] = &ns;
    for n in &ns {
        sh(&["ip", "netns", "add", n]);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    sh(&[
        "ip",
        "-n",
        g,
        "link",
        "add",
        "sko0",
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "skc0",
        "netns",
        c,
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
    ]);
    sh(&[
        "ip", "-n", g, "link", "add", "ski0", "type", "veth", "peer", "name", "skh0", "netns", i,
    ]);
    sh(&[
        "ip",
        "-n",
        g,
        "addr",
        "add",
        "10.77.0.254/24",
        "dev",
        "sko0",
    ]);
    sh(&["ip", "-n", c, "addr", "add", "10.77.0.2/24", "dev", "skc0"]);
    sh(&["ip", "-n", g, "addr", "add", "10.88.0.1/24", "dev", "ski0"]);
    sh(&["ip", "-n", i, "addr", "add", "10.88.0.2/24", "dev", "skh0"]);
    for (n, d) in [(g, "sko0"), (c, "skc0"), (g, "ski0"), (i, "skh0")] {
        sh(&["ip", "-n", n, "link", "set", d, "up"]);
    }
    sh(&[
        "ip",
        "-n",
        i,
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "10.88.0.1",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        g,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    // IPv4-only world: no IPv6 router solicitations into the TUN device as it comes up
    // (the gateway would count them as not_ipv4 drops).
    sh(&[
        "ip",
        "netns",
        "exec",
        g,
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    t
}

fn params(workers: usize) -> PeerParams {
    PeerParams {
        transform: Transform::Aes128Gcm,
        natt: true,
        gateway: GW,
        client: CLIENT,
        client_port: 4500,
        inner: inner(workers),
        gw_ids: (0x0101, 0x0202),
        client_ids: (0x0303, 0x0404),
        backend: Backend::AwsLc,
    }
}

fn run_backend(io: IoMode, tag: &str, workers: usize) {
    run_mode(io, tag, workers, false)
}

fn run_mode(io: IoMode, tag: &str, workers: usize, router: bool) {
    let mut topo = topology(tag);
    let [c, g, i] = topo.ns.clone();
    let seed = 42u8;
    let have_tshark = Command::new("tshark").arg("-v").output().is_ok();
    let pcap = std::env::temp_dir().join(format!("sekisho-dp-{tag}-{}.pcap", std::process::id()));
    if have_tshark {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &c,
                "tshark",
                "-q",
                "-i",
                "skc0",
                "-f",
                "udp port 4500",
                "-w",
            ])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tshark capture");
        topo.capture = Some(child);
        // Capturing has begun once the file carries its header.
        let t0 = std::time::Instant::now();
        while std::fs::metadata(&pcap).map_or(true, |m| m.len() < 24)
            && t0.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Gateway: the data plane, with the SA pair and session installed by command.
    let (plane_tx, plane_rx) = bounded(1);
    let (done_tx, done_rx) = bounded::<()>(1);
    let gw_ns = g.clone();
    let gw = std::thread::spawn(move || {
        enter(&gw_ns);
        let cfg = PlaneConfig {
            listen: GW,
            interface: Some("sko0".into()),
            io,
            workers,
            ports: (500, 4500, 1701),
            tun: TunConfig {
                name: "sktun0".into(),
                mtu: 1400,
                addr: Ipv4Addr::new(10, 99, 0, 1),
                prefix: 24,
                queues: workers,
            },
            router: router.then(|| ("ski0".to_string(), Ipv4Addr::new(10, 99, 0, 0), 24)),
            require_ipsec: true,
            mss_clamp: Some(1360),
            raw_esp: false,
        };
        if router {
            // Router mode sends to the inside next hop by its MAC from the kernel's
            // neighbour table: resolve it once, as any router would have.
            let _ = Command::new("ping")
                .args(["-c", "1", "-W", "2", "10.88.0.2"])
                .output();
        }
        let plane = runtime::start(&cfg).expect("data plane");
        let side = GatewaySide::new(&params(workers), seed).unwrap();
        // The control thread allocates the SPI on the owning worker; no reply.
        let mut spis = plane.spi_allocators().unwrap();
        let spi = spis.allocate(workers as u16 - 1).unwrap();
        plane.cmds[workers - 1]
            .send(WorkerCmd::InstallSaPair {
                inbound: Box::new(side.inbound.with_spi(spi)),
                outbound: Box::new(side.outbound),
            })
            .unwrap();
        let mut session = side.session;
        session.inbound_spi = Some(spi);
        plane.cmds[workers - 1]
            .send(WorkerCmd::InstallSession(Box::new(session)))
            .unwrap();
        plane_tx.send((spi, plane.io.clone())).unwrap();
        // Answer IKE as the control thread will: through the worker that received it,
        // from the address and port it came to (the message reversed, to tell it apart).
        let mut ike = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while done_rx.try_recv() == Err(crossbeam_channel::TryRecvError::Empty)
            && std::time::Instant::now() < deadline
        {
            let Ok(m) = plane.up.recv_timeout(Duration::from_millis(20)) else {
                continue;
            };
            if m.kind != ControlKind::Ike {
                continue;
            }
            ike.push((m.local, m.local_port, m.peer.port));
            plane.cmds[usize::from(m.worker)]
                .send(WorkerCmd::SendIke {
                    peer: m.peer.addr,
                    peer_port: m.peer.port,
                    local: m.local,
                    local_port: m.local_port,
                    data: m.data.iter().rev().copied().collect(),
                })
                .unwrap();
        }
        (plane.shutdown(), ike)
    });
    let (gw_spi, chosen) = plane_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("gateway up");
    match (io, &chosen) {
        (IoMode::Xdp, ChosenIo::Xdp { .. }) | (IoMode::Socket, ChosenIo::Socket { .. }) => {}
        other => panic!("backend: {other:?}"),
    }

    // Inside host: echoes UDP on port 9 back to the sender (plain kernel sockets).
    let in_ns = i.clone();
    let (bound_tx, bound_rx) = bounded(1);
    let inside = std::thread::spawn(move || {
        enter(&in_ns);
        let s = UdpSocket::bind(SocketAddrV4::new(INSIDE, 9)).unwrap();
        bound_tx.send(()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while got < 5 {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                break;
            };
            assert_eq!(from.ip(), std::net::IpAddr::V4(inner(workers)));
            s.send_to(&buf[..n], from).unwrap();
            got += 1;
        }
        got
    });

    bound_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("inside host ready");
    // Client: sends 5 packets of different sizes through ESP and checks the echoes.
    let cl_ns = c.clone();
    let client = std::thread::spawn(move || {
        enter(&cl_ns);
        let mut peer = SimPeer::client(params(workers), gw_spi, seed).unwrap();
        let s = UdpSocket::bind(SocketAddrV4::new(CLIENT, 4500)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        // IKE first, on 500 and on 4500 behind the non-ESP marker: the gateway answers
        // each from the port it came to.
        let ike500 = UdpSocket::bind(SocketAddrV4::new(CLIENT, 500)).unwrap();
        ike500
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let msg: Vec<u8> = (1..=48u8).collect();
        let back: Vec<u8> = msg.iter().rev().copied().collect();
        let mut buf = [0u8; 256];
        ike500.send_to(&msg, SocketAddrV4::new(GW, 500)).unwrap();
        let (n, from) = ike500.recv_from(&mut buf).expect("IKE answer on 500");
        assert_eq!(
            (&buf[..n], from),
            (&back[..], SocketAddrV4::new(GW, 500).into())
        );
        let mut marked = vec![0u8; 4];
        marked.extend_from_slice(&msg);
        s.send_to(&marked, SocketAddrV4::new(GW, 4500)).unwrap();
        let (n, from) = s.recv_from(&mut buf).expect("IKE answer on 4500");
        assert_eq!(from, SocketAddrV4::new(GW, 4500).into());
        assert_eq!(
            (&buf[..4], &buf[4..n]),
            (&[0u8; 4][..], &back[..]),
            "non-ESP marker"
        );
        let mut ok = 0;
        for (k, size) in [64usize, 200, 576, 1000, 1300].into_iter().enumerate() {
            let mut f = vec![0u8; frame_len(1400)];
            let r = peer.inner_packet(&mut f, INSIDE, size);
            f[r.start + 28] = k as u8; // tag the payload
            let o = peer.seal(&mut f, r).unwrap();
            // The UDP payload (ESP) of the outer packet the client built.
            s.send_to(&f[o.start + 28..o.end], SocketAddrV4::new(GW, 4500))
                .unwrap();
            let mut buf = vec![0u8; 2048];
            let Ok((n, from)) = s.recv_from(&mut buf[FRAME_HEADROOM..]) else {
                eprintln!("client: no echo for packet {k} ({size} B)");
                continue;
            };
            assert_eq!(
                from,
                std::net::SocketAddr::from(SocketAddrV4::new(GW, 4500))
            );
            // Put the outer IPv4/UDP headers back in front, as the NAT-T socket ate them.
            let start = FRAME_HEADROOM - 28;
            write_ipv4_header(
                &mut buf[start..start + 20],
                (n + 28) as u16,
                1,
                17,
                GW,
                CLIENT,
            );
            buf[start + 20..start + 22].copy_from_slice(&4500u16.to_be_bytes());
            buf[start + 22..start + 24].copy_from_slice(&4500u16.to_be_bytes());
            buf[start + 24..start + 26].copy_from_slice(&((n + 8) as u16).to_be_bytes());
            let opened = peer
                .open(&mut buf, start..FRAME_HEADROOM + n)
                .expect("client opens the reply");
            let ip = &buf[opened];
            assert_eq!(&ip[12..16], &INSIDE.octets());
            assert_eq!(&ip[16..20], &inner(workers).octets());
            assert_eq!(ip.len(), size.max(28), "inner {:02x?}", ip);
            assert_eq!(ip[28], k as u8);
            ok += 1;
        }
        // The gateway's own inner address answers ping (the kernel behind the TUN
        // device, or the worker itself in router mode).
        let mut f = vec![0u8; frame_len(1400)];
        let at = FRAME_HEADROOM;
        write_ipv4_header(
            &mut f[at..at + 20],
            36,
            9,
            1,
            inner(workers),
            Ipv4Addr::new(10, 99, 0, 1),
        );
        f[at + 20] = 8;
        f[at + 24..at + 28].copy_from_slice(&[0x12, 0x34, 0, 1]);
        let c = !sekisho::wire::checksum::fold(sekisho::wire::checksum::sum(&f[at + 20..at + 36]));
        f[at + 22..at + 24].copy_from_slice(&c.to_be_bytes());
        let o = peer.seal(&mut f, at..at + 36).unwrap();
        s.send_to(&f[o.start + 28..o.end], SocketAddrV4::new(GW, 4500))
            .unwrap();
        let mut buf = vec![0u8; 2048];
        if let Ok((n, _)) = s.recv_from(&mut buf[FRAME_HEADROOM..]) {
            let start = FRAME_HEADROOM - 28;
            write_ipv4_header(
                &mut buf[start..start + 20],
                (n + 28) as u16,
                1,
                17,
                GW,
                CLIENT,
            );
            buf[start + 20..start + 24].copy_from_slice(&[0x11, 0x94, 0x11, 0x94]);
            buf[start + 24..start + 26].copy_from_slice(&((n + 8) as u16).to_be_bytes());
            let r = peer
                .open(&mut buf, start..FRAME_HEADROOM + n)
                .expect("ping reply opens");
            let ip = &buf[r];
            assert_eq!((ip[9], ip[20]), (1, 0), "ICMP echo reply from the gateway");
            assert_eq!(&ip[12..16], &[10, 99, 0, 1]);
            ok += 1;
        } else {
            eprintln!("client: no ping reply from 10.99.0.1");
        }
        ok
    });
    let ok = client.join().unwrap();
    let echoed = inside.join().unwrap();
    let _ = done_tx.send(());
    let (totals, mut ike) = gw.join().unwrap();
    ike.sort();
    assert_eq!(
        ike,
        [(GW, 500, 500), (GW, 4500, 4500)],
        "IKE reached the control channel with our address and port ({io:?})"
    );
    assert_eq!(
        echoed, 5,
        "inside host got every packet ({io:?}); gateway: {totals:?}"
    );
    assert_eq!(
        ok, 6,
        "client got every echo and the ping reply ({io:?}); gateway: {totals:?}"
    );
    eprintln!(
        "{io:?} × {workers}: handed off {} / taken {}",
        totals.handoff_out, totals.handoff_in
    );
    assert_eq!(totals.handoff_out, totals.handoff_in);
    assert_eq!(totals.decap_out, 6);
    assert_eq!(totals.encap_out, 6);
    assert_eq!(
        totals.total_drops(),
        0,
        "{:?}",
        totals.nonzero_drops().collect::<Vec<_>>()
    );

    if let Some(mut cap) = topo.capture.take() {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-INT", &cap.id().to_string()])
            .status();
        let _ = cap.wait();
        check_with_tshark(&pcap, gw_spi, seed);
        let _ = std::fs::remove_file(&pcap);
    } else {
        common::skip("dataplane tshark check", "tshark is not installed");
    }
}

fn check_with_tshark(pcap: &std::path::Path, gw_spi: u32, seed: u8) {
    let t = Transform::Aes128Gcm;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let sa = |src: Ipv4Addr, dst: Ipv4Addr, spi: u32, km: &[u8]| {
        format!(
            "uat:esp_sa:\"IPv4\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
            hex(km)
        )
    };
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            "esp.enable_authentication_check:TRUE",
        ])
        .arg("-o")
        .arg(sa(CLIENT, GW, gw_spi, &keymat(t, seed)))
        .arg("-o")
        .arg(sa(GW, CLIENT, client_spi(seed), &keymat(t, seed ^ 0x5a)))
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "ip.src",
            "-e",
            "esp.icv_good",
            "-e",
            "l2tp.tunnel",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    let from_gw: Vec<&str> = text
        .lines()
        // ESP only (the IKE answer on 4500 has no ESP fields).
        .filter(|l| {
            l.starts_with("10.77.0.254") && l.split('|').nth(1).is_some_and(|f| !f.is_empty())
        })
        .collect();
    assert_eq!(
        from_gw.len(),
        6,
        "tshark saw the gateway's 6 ESP packets:\n{text}"
    );
    for l in from_gw {
        let f: Vec<&str> = l.split('|').collect();
        assert!(
            matches!(f[1], "1" | "True"),
            "ICV not valid per tshark: {l}"
        );
        assert_eq!(f[2], "771", "L2TP tunnel id (0x0303) decoded inside: {l}");
    }
}

fn system_ok(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces, TUN, XDP)");
        return false;
    }
    true
}

#[test]
fn gateway_round_trip_over_af_xdp() {
    if system_ok("gateway_round_trip_over_af_xdp") {
        run_backend(IoMode::Xdp, "x", 1);
    }
}

#[test]
fn gateway_round_trip_over_sockets() {
    if system_ok("gateway_round_trip_over_sockets") {
        run_backend(IoMode::Socket, "s", 1);
    }
}

/// Two workers: the session lives on worker 0; whatever queue or socket a packet
/// lands on, the SPI (outside) and the inner address (inside) hand it to its owner.
#[test]
fn two_workers_hand_off_to_the_owner() {
    if system_ok("two_workers_hand_off_to_the_owner") {
        run_backend(IoMode::Xdp, "xx", 2);
        run_backend(IoMode::Socket, "ss", 2);
    }
}

/// Router mode: AF_XDP on the inside interface too, next hop from the neighbour table,
/// and the worker itself answering ping on the gateway's inner address.
#[test]
fn gateway_round_trip_in_router_mode() {
    if system_ok("gateway_round_trip_in_router_mode") {
        run_mode(IoMode::Xdp, "r", 1, true);
    }
}
