//! The socket and TUN backends against real kernels: two network namespaces of our own
//! joined by a veth pair, the gateway's sockets (well-known ports 500/4500/1701 and raw
//! ESP) and TUN device in one, a client in the other. Needs root (network namespaces,
//! CAP_NET_RAW, CAP_NET_ADMIN) and iproute2; otherwise it skips with the reason, or
//! fails when SEKISHO_REQUIRE_SYSTEM_TESTS=1.
//!
//! Addresses are documentation ranges (RFC 5737) that exist only inside the two
//! namespaces: the veth is 192.0.2.1 (gateway) – 192.0.2.2 (client), the TUN device
//! 198.51.100.1/24 with the clients' inner addresses 198.51.100.10 and .11.

mod common;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto};

use sekisho::crypto::{Backend, Transform};
use sekisho::dataplane::chain::{Pkt, Verdict};
use sekisho::dataplane::io::headers::synthesize_udp;
use sekisho::dataplane::io::{
    FRAME_SIZE, FramePool, HEADROOM, IoDrop, OutsideConfig, OutsideSockets, TunConfig, TunQueue,
};
use sekisho::dataplane::peer::{PeerParams, SimPeer, new_shard};
use sekisho::esp::decap::{Classified, classify};
use sekisho::esp::encap::write_ipv4_header;
use sekisho::wire::checksum;

const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const TUN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT_PORT: u16 = 40001;

/// Runs `ip args…`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by a veth pair; deleted (with the veth) when dropped, also
/// when the test fails.
struct Netns {
    gw: String,
    client: String,
}

impl Netns {
    /// Creates `sk-io-<pid>-<tag>-g` and `…-c`, or says why it cannot.
    fn create(tag: &str) -> Result<Netns, String> {
        let pid = std::process::id();
        let ns = Netns {
            gw: format!("sk-io-{pid}-{tag}-g"),
            client: format!("sk-io-{pid}-{tag}-c"),
        };
        ip(&["netns", "add", &ns.gw])?;
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &ns.client])?;
        let (vg, vc) = (format!("skio{pid}{tag}g"), format!("skio{pid}{tag}c"));
        ip(&[
            "link", "add", &vg, "netns", &ns.gw, "type", "veth", "peer", "name", &vc, "netns",
            &ns.client,
        ])?;
        for (n, dev, addr) in [
            (&ns.gw, &vg, "192.0.2.1/24"),
            (&ns.client, &vc, "192.0.2.2/24"),
        ] {
            ip(&["-n", n, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", n, "link", "set", dev, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.gw, &self.client] {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Runs `f` on a thread that has joined network namespace `ns`. Sockets and TUN
/// devices made there stay in that namespace when handed back.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}")).expect("netns file");
            setns(fd, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// Whether this test can run here; prints the skip reason otherwise.
fn can_run(test: &str) -> Option<Netns> {
    if !nix::unistd::geteuid().is_root() {
        common::skip(
            test,
            "needs root for network namespaces, raw and TUN sockets",
        );
        return None;
    }
    let ip_ok = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ip_ok {
        common::skip(test, "ip is not installed (apt-get install iproute2)");
        return None;
    }
    match Netns::create(&test[..2]) {
        Ok(ns) => Some(ns),
        Err(e) => {
            common::skip(test, &format!("cannot create network namespaces: {e}"));
            None
        }
    }
}

fn raw_esp_socket() -> OwnedFd {
    rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(ipproto::ESP),
    )
    .expect("raw ESP socket as root")
}

fn client_udp() -> UdpSocket {
    let s = UdpSocket::bind((CLIENT, CLIENT_PORT)).expect("client bind");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

/// Receives until `want` packets are in `pkts` or three seconds pass.
fn recv_n(sock: &mut OutsideSockets, pkts: &mut [Pkt<Box<[u8]>>], want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while n < want && Instant::now() < deadline {
        sock.wait(Duration::from_millis(50)).unwrap();
        n += sock.recv_batch(&mut pkts[n..]).unwrap();
    }
    n
}

/// Reads from every queue until `want` packets are in `pkts` or three seconds pass.
fn read_n(queues: &mut [TunQueue], pkts: &mut [Pkt<Box<[u8]>>], want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while n < want && Instant::now() < deadline {
        let fds: Vec<_> = queues.iter().map(|q| q.fd()).collect();
        sekisho::dataplane::io::wait_readable(&fds, Duration::from_millis(50)).unwrap();
        for q in queues.iter_mut() {
            n += q.read_batch(&mut pkts[n..]).unwrap();
        }
    }
    n
}

/// An outer IPv4 packet as the pipeline emits it, verdict Forward.
fn forward(pool: &mut FramePool, proto: u8, sport: u16, payload: &[u8]) -> Pkt<Box<[u8]>> {
    let mut p = pool.pkt().unwrap();
    p.buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
    let body = HEADROOM..HEADROOM + payload.len();
    let r = if proto == 17 {
        let s = SocketAddrV4::new(GW, sport);
        let d = SocketAddrV4::new(CLIENT, CLIENT_PORT);
        synthesize_udp(&mut p.buf, body, s, d).unwrap()
    } else {
        let start = HEADROOM - 20;
        let total = (20 + payload.len()) as u16;
        write_ipv4_header(&mut p.buf[start..HEADROOM], total, 7, proto, GW, CLIENT);
        start..body.end
    };
    p.reset(r.start, r.end);
    p.verdict = Verdict::Forward;
    p
}

#[test]
fn sockets_in_a_namespace_synthesize_and_send() {
    let Some(ns) = can_run("sockets_in_a_namespace_synthesize_and_send") else {
        return;
    };
    let mut gw = in_netns(&ns.gw, || {
        let mut s = OutsideSockets::open(&OutsideConfig::standard(Ipv4Addr::UNSPECIFIED))
            .expect("bind 500/4500/1701 in our namespace");
        s.open_raw_esp().expect("raw ESP as root");
        s
    });
    let (client, client_raw) = in_netns(&ns.client, || (client_udp(), raw_esp_socket()));

    // Client → gateway: IKE on 500, IKE behind the marker and a keepalive on 4500,
    // plain L2TP on 1701, and ESP not in UDP.
    let ike = [0x11u8; 28];
    let mut ike_4500 = vec![0u8; 4];
    ike_4500.extend_from_slice(&[0x22; 28]);
    let l2tp = [0xc8, 0x02, 0x00, 0x0c, 0, 1, 0, 0, 0, 0, 0, 0];
    let esp = [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9];
    client.send_to(&ike, (GW, 500)).unwrap();
    client.send_to(&ike_4500, (GW, 4500)).unwrap();
    client.send_to(&[0xff], (GW, 4500)).unwrap();
    client.send_to(&l2tp, (GW, 1701)).unwrap();
    rustix::net::sendto(
        &client_raw,
        &esp,
        rustix::net::SendFlags::empty(),
        &SocketAddrV4::new(GW, 0),
    )
    .unwrap();

    let mut pool = FramePool::new(32);
    let mut pkts = pool.batch(8);
    assert_eq!(recv_n(&mut gw, &mut pkts, 5), 5, "{:?}", gw.stats());
    let mut kinds = Vec::new();
    for p in &pkts[..5] {
        let ip = &p.buf[p.start..p.end];
        assert_eq!(checksum::fold(checksum::sum(&ip[..20])), 0xffff);
        assert_eq!(&ip[12..16], &CLIENT.octets());
        assert_eq!(
            &ip[16..20],
            &GW.octets(),
            "destination learnt through IP_PKTINFO"
        );
        assert_eq!(p.outer_src, CLIENT);
        match classify(&p.buf, p.start..p.end).expect("the pipeline parses it") {
            Classified::Ike {
                dport, msg, sport, ..
            } => {
                assert_eq!(sport, CLIENT_PORT);
                let want: &[u8] = if dport == 500 { &ike } else { &ike_4500[4..] };
                assert_eq!(&p.buf[msg], want);
                kinds.push(format!("ike{dport}"));
            }
            Classified::NatKeepalive => kinds.push("keepalive".into()),
            Classified::Other { protocol: 17, .. } => {
                assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), 1701);
                assert_eq!(&ip[28..], &l2tp);
                kinds.push("l2tp".into());
            }
            Classified::Esp(o) => {
                assert_eq!(o.spi, 0xdead_beef);
                assert_eq!(o.udp, None);
                assert_eq!(p.start, HEADROOM - 20, "raw ESP keeps its own header");
                kinds.push("esp".into());
            }
            other => panic!("{other:?}"),
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["esp", "ike4500", "ike500", "keepalive", "l2tp"]);

    // Gateway → client: each reply from the socket of its source port, ESP raw.
    let mut out = vec![
        forward(&mut pool, 17, 500, b"from-500"),
        forward(&mut pool, 17, 4500, b"from-4500"),
        forward(&mut pool, 17, 1701, b"from-1701"),
        forward(&mut pool, 50, 0, &esp),
        forward(&mut pool, 6, 0, b"tcp is not ours"),
    ];
    let st = gw.send_batch(&out);
    assert_eq!(st.tx_packets, 4, "{st:?}");
    assert_eq!(st.drops(IoDrop::Protocol), 1);
    out.clear();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    for _ in 0..3 {
        let (n, from) = client.recv_from(&mut buf).unwrap();
        got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
    }
    got.sort();
    let want: Vec<(String, SocketAddr)> =
        [(1701, "from-1701"), (4500, "from-4500"), (500, "from-500")]
            .iter()
            .map(|&(port, s)| (s.to_string(), SocketAddr::V4(SocketAddrV4::new(GW, port))))
            .collect();
    assert_eq!(got, want);
    // The raw socket delivers the whole IPv4 packet the kernel built.
    let n = rustix::net::recv(&client_raw, &mut buf, rustix::net::RecvFlags::empty())
        .unwrap()
        .0;
    assert_eq!(&buf[12..16], &GW.octets());
    assert_eq!(buf[9], 50);
    assert_eq!(&buf[20..n], &esp);
}

#[test]
fn gateway_round_trip_over_sockets_pipeline_and_tun() {
    let Some(ns) = can_run("gateway_round_trip_over_sockets_pipeline_and_tun") else {
        return;
    };
    let tun_name = format!("skio{}t", std::process::id());
    let (mut gw, mut queues, inside) = in_netns(&ns.gw, || {
        let mut s = OutsideSockets::open(&OutsideConfig::standard(Ipv4Addr::UNSPECIFIED))
            .expect("bind 500/4500/1701 in our namespace");
        s.open_raw_esp().expect("raw ESP as root");
        let q = TunConfig {
            name: tun_name.clone(),
            mtu: 1400,
            addr: TUN_ADDR,
            prefix: 24,
            queues: 2,
        }
        .open()
        .expect("TUN as root");
        // An application on the inside network, here on the gateway's own inner address.
        let app = UdpSocket::bind((TUN_ADDR, 9)).expect("inside app");
        app.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        (s, q, app)
    });
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[1].name(), tun_name);
    let (client, client_raw) = in_netns(&ns.client, || (client_udp(), raw_esp_socket()));

    let mut shard = new_shard(8);
    let params = |natt: bool, last: u8, seed: u16| PeerParams {
        transform: Transform::Aes128Gcm,
        natt,
        gateway: GW,
        client: CLIENT,
        client_port: CLIENT_PORT,
        inner: Ipv4Addr::new(198, 51, 100, last),
        gw_ids: (100 + seed, 200 + seed),
        client_ids: (300 + seed, 400 + seed),
        backend: Backend::AwsLc,
    };
    let mut natt = SimPeer::establish(&mut shard, params(true, 10, 0), 1).unwrap();
    let mut raw = SimPeer::establish(&mut shard, params(false, 11, 1), 2).unwrap();

    // Clients → inside application, through the outside sockets, decap and the TUN.
    let mut f = vec![0u8; FRAME_SIZE];
    let r = natt.inner_packet(&mut f, TUN_ADDR, 200);
    let o = natt.seal(&mut f, r).unwrap();
    client.send_to(&f[o.start + 28..o.end], (GW, 4500)).unwrap();
    let mut f = vec![0u8; FRAME_SIZE];
    let r = raw.inner_packet(&mut f, TUN_ADDR, 300);
    let o = raw.seal(&mut f, r).unwrap();
    rustix::net::sendto(
        &client_raw,
        &f[o.start + 20..o.end],
        rustix::net::SendFlags::empty(),
        &SocketAddrV4::new(GW, 0),
    )
    .unwrap();

    let mut pool = FramePool::new(64);
    let mut pkts = pool.batch(8);
    assert_eq!(recv_n(&mut gw, &mut pkts, 2), 2, "{:?}", gw.stats());
    shard.decap_batch(&mut pkts[..2]);
    assert!(
        pkts[..2].iter().all(|p| p.verdict == Verdict::Forward),
        "{:?}",
        shard.stats
    );
    // One packet through each queue.
    assert_eq!(queues[0].write_batch(&pkts[..1]), 1);
    assert_eq!(queues[1].write_batch(&pkts[1..2]), 1);
    let mut buf = [0u8; 2048];
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (n, from) = inside.recv_from(&mut buf).expect("inside app receives");
        seen.push((from, n));
    }
    seen.sort();
    let from = |last| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, last), 40000));
    assert_eq!(seen, [(from(10), 200 - 28), (from(11), 300 - 28)]);

    // Inside application → clients, through the TUN, encap and the outside sockets.
    inside.send_to(b"to-natt-client", from(10)).unwrap();
    inside.send_to(b"to-raw-client", from(11)).unwrap();
    for p in pkts.iter_mut() {
        p.reset(HEADROOM, HEADROOM);
    }
    assert_eq!(read_n(&mut queues, &mut pkts, 2), 2);
    let mut out: Vec<_> = pkts.drain(..2).collect();
    shard.encap_batch(&mut out);
    assert!(
        out.iter().all(|p| p.verdict == Verdict::Forward),
        "{:?}",
        shard.stats
    );
    let st = gw.send_batch(&out);
    assert_eq!(st.tx_packets, 2, "{st:?}");

    // NAT-T client: the socket took the headers off; put them back to open it.
    let mut rf = vec![0u8; FRAME_SIZE];
    let (n, src) = client.recv_from(&mut rf[HEADROOM..]).unwrap();
    assert_eq!(src, SocketAddr::V4(SocketAddrV4::new(GW, 4500)));
    let r = synthesize_udp(
        &mut rf,
        HEADROOM..HEADROOM + n,
        SocketAddrV4::new(GW, 4500),
        SocketAddrV4::new(CLIENT, CLIENT_PORT),
    )
    .unwrap();
    let inner = natt.open(&mut rf, r).expect("NAT-T client opens");
    assert_eq!(&rf[inner.end - 14..inner.end], b"to-natt-client");
    // Raw client: its raw socket gets the whole IPv4 packet.
    let mut rf = vec![0u8; FRAME_SIZE];
    let n = rustix::net::recv(&client_raw, &mut rf, rustix::net::RecvFlags::empty())
        .unwrap()
        .0;
    let inner = raw.open(&mut rf, 0..n).expect("raw ESP client opens");
    assert_eq!(&rf[inner.end - 13..inner.end], b"to-raw-client");
    assert_eq!(gw.stats().total_drops(), 0, "{:?}", gw.stats());
}
