//! The socket backend on loopback, unprivileged: every role bound to an ephemeral port
//! of 127.0.0.1, a plain UDP socket as the peer, and the real pipeline in between.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use super::frame::{FRAME_SIZE, FramePool, HEADROOM};
use super::headers::synthesize_udp;
use super::socket::{OutsideConfig, OutsideSockets, Role, SocketError};
use super::stats::IoDrop;
use crate::crypto::{Backend, Transform};
use crate::dataplane::chain::{Pkt, Verdict};
use crate::dataplane::peer::{PeerParams, SimPeer, new_shard, write_inner_udp};
use crate::esp::decap::{Classified, classify};
use crate::esp::encap::write_ipv4_header;
use crate::wire::checksum;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn open() -> OutsideSockets {
    OutsideSockets::open(&OutsideConfig::ephemeral(LO)).expect("bind loopback")
}

fn peer() -> (UdpSocket, SocketAddrV4) {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let a = match s.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        a => panic!("{a}"),
    };
    (s, a)
}

/// Receives until `want` packets are in `pkts[..]` or two seconds pass.
fn recv_n(sock: &mut OutsideSockets, pkts: &mut [Pkt<Box<[u8]>>], want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    while n < want && Instant::now() < deadline {
        sock.wait(Duration::from_millis(50)).unwrap();
        n += sock.recv_batch(&mut pkts[n..]).unwrap();
    }
    n
}

fn outer_packet(
    pool: &mut FramePool,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Pkt<Box<[u8]>> {
    let mut p = pool.pkt().unwrap();
    p.buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
    let r = synthesize_udp(&mut p.buf, HEADROOM..HEADROOM + payload.len(), src, dst).unwrap();
    p.reset(r.start, r.end);
    p.verdict = Verdict::Forward;
    p
}

#[test]
fn received_datagrams_arrive_as_outer_ipv4_packets() {
    let mut sock = open();
    let (client, caddr) = peer();
    let ike = sock.local_addr(Role::Ike).unwrap();
    let natt = sock.local_addr(Role::NatT).unwrap();
    let l2tp = sock.local_addr(Role::L2tp).unwrap();
    assert!(ike.port() != 0 && natt.port() != 0 && l2tp.port() != 0);
    client.send_to(b"ike-message-of-some-length", ike).unwrap();
    client.send_to(&[0xff], natt).unwrap();
    // An IKE header (28 octets) behind the non-ESP marker.
    client
        .send_to(b"\0\0\0\0ike-on-4500-with-a-28-octet-header", natt)
        .unwrap();
    client.send_to(&[0xc8, 0x02, 0, 20], l2tp).unwrap();

    let mut pool = FramePool::new(8);
    let mut pkts = pool.batch(8);
    assert_eq!(recv_n(&mut sock, &mut pkts, 4), 4);
    let mut seen = Vec::new();
    for p in &pkts[..4] {
        assert_eq!(p.verdict, Verdict::Pending);
        assert_eq!(p.outer_src, LO);
        assert_eq!(p.outer_sport, caddr.port());
        let ip = &p.buf[p.start..p.end];
        assert_eq!(checksum::fold(checksum::sum(&ip[..20])), 0xffff);
        assert_eq!(&ip[12..16], &LO.octets(), "source");
        assert_eq!(&ip[16..20], &LO.octets(), "destination from IP_PKTINFO");
        assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), caddr.port());
        assert_eq!(p.start + 28, HEADROOM, "payload stays at the headroom");
        let dport = u16::from_be_bytes([ip[22], ip[23]]);
        let c = classify(&p.buf, p.start..p.end).unwrap();
        match (&c, dport) {
            (Classified::Ike { msg, .. }, 500) => {
                assert_eq!(&p.buf[msg.clone()], b"ike-message-of-some-length")
            }
            (Classified::Ike { msg, .. }, 4500) => {
                assert_eq!(&p.buf[msg.clone()], b"ike-on-4500-with-a-28-octet-header")
            }
            (Classified::NatKeepalive, 4500) => {}
            (Classified::Other { protocol: 17, .. }, 1701) => {}
            other => panic!("{other:?}"),
        }
        seen.push(dport);
    }
    seen.sort();
    assert_eq!(seen, [500, 1701, 4500, 4500]);
    assert_eq!(sock.stats().rx_packets, 4);
    assert_eq!(sock.stats().total_drops(), 0);
}

#[test]
fn many_datagrams_take_several_syscalls_and_keep_their_order() {
    let mut sock = open();
    let (client, _) = peer();
    let natt = sock.local_addr(Role::NatT).unwrap();
    for i in 0..150u16 {
        client.send_to(&i.to_be_bytes(), natt).unwrap();
    }
    let mut pool = FramePool::new(200);
    let mut pkts = pool.batch(200);
    assert_eq!(recv_n(&mut sock, &mut pkts, 150), 150);
    for (i, p) in pkts[..150].iter().enumerate() {
        assert_eq!(p.end - p.start, 30);
        assert_eq!(&p.buf[HEADROOM..HEADROOM + 2], &(i as u16).to_be_bytes());
    }
}

#[test]
fn a_datagram_too_long_for_the_frame_is_counted_and_the_next_one_delivered() {
    let mut sock = open();
    let (client, _) = peer();
    let natt = sock.local_addr(Role::NatT).unwrap();
    client.send_to(&[7u8; 3000], natt).unwrap();
    client.send_to(&[1, 2, 3, 4, 5], natt).unwrap();
    client.send_to(&[9u8; FRAME_SIZE - HEADROOM], natt).unwrap();
    let mut pool = FramePool::new(4);
    let mut pkts = pool.batch(4);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    while sock.stats().rx_packets + sock.stats().total_drops() < 3 && Instant::now() < deadline {
        sock.wait(Duration::from_millis(50)).unwrap();
        n += sock.recv_batch(&mut pkts[n..]).unwrap();
    }
    assert_eq!(n, 2);
    assert_eq!(&pkts[0].buf[HEADROOM..HEADROOM + 5], &[1, 2, 3, 4, 5]);
    assert_eq!(
        pkts[1].end, FRAME_SIZE,
        "a datagram filling the frame exactly fits"
    );
    assert_eq!(sock.stats().drops(IoDrop::Truncated), 1);
}

#[test]
fn frames_without_headroom_are_refused() {
    let mut sock = open();
    let mut pkts = vec![Pkt::new(vec![0u8; HEADROOM], 0, 0)];
    let e = sock.recv_batch(&mut pkts).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn wait_times_out_then_sees_a_datagram() {
    let sock = open();
    let t = Instant::now();
    assert!(!sock.wait(Duration::from_millis(30)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(25));
    let (client, _) = peer();
    client
        .send_to(b"x", sock.local_addr(Role::L2tp).unwrap())
        .unwrap();
    assert!(sock.wait(Duration::from_secs(2)).unwrap());
    assert_eq!(sock.raw_fds().len(), 3);
}

#[test]
fn forwarded_packets_leave_from_the_socket_of_their_source_port() {
    let mut sock = open();
    let (client, caddr) = peer();
    let natt = sock.local_addr(Role::NatT).unwrap();
    let l2tp = sock.local_addr(Role::L2tp).unwrap();
    let mut pool = FramePool::new(16);
    let mut batch = vec![
        // By the role's well-known port, as the pipeline writes it.
        outer_packet(&mut pool, SocketAddrV4::new(LO, 4500), caddr, b"by-role"),
        // By the port the socket is really bound to.
        outer_packet(&mut pool, natt, caddr, b"by-bound-port"),
        outer_packet(&mut pool, SocketAddrV4::new(LO, 1701), caddr, b"l2tp"),
    ];
    // Not forwarded: ignored, not counted.
    let mut p = outer_packet(&mut pool, natt, caddr, b"to-control");
    p.verdict = Verdict::ToControl(crate::dataplane::ControlKind::Ike);
    batch.push(p);
    let st = sock.send_batch(&batch);
    assert_eq!((st.tx_packets, st.total_drops()), (3, 0));
    assert_eq!(st.tx_bytes, (7 + 13 + 4) as u64);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let (n, from) = client.recv_from(&mut buf).unwrap();
        got.push((buf[..n].to_vec(), from));
    }
    assert_eq!(got[0], (b"by-role".to_vec(), natt.into()));
    assert_eq!(got[1], (b"by-bound-port".to_vec(), natt.into()));
    assert_eq!(got[2], (b"l2tp".to_vec(), l2tp.into()));
    assert_eq!(sock.stats().tx_packets, 3);
}

#[test]
fn what_cannot_be_sent_is_counted_by_reason() {
    let mut sock = OutsideSockets::open(&OutsideConfig {
        ike: None,
        l2tp: None,
        ..OutsideConfig::ephemeral(LO)
    })
    .unwrap();
    assert!(sock.local_addr(Role::Ike).is_none());
    let (_client, caddr) = peer();
    let mut pool = FramePool::new(16);
    let from = |port| SocketAddrV4::new(LO, port);
    let edit = |p: &mut Pkt<Box<[u8]>>, at: usize, v: u8| {
        let s = p.start;
        p.buf[s + at] = v;
        // Keep the header checksum right so only the edited field matters.
        p.buf[s + 10..s + 12].copy_from_slice(&[0, 0]);
        let c = !checksum::fold(checksum::sum(&p.buf[s..s + 20]));
        p.buf[s + 10..s + 12].copy_from_slice(&c.to_be_bytes());
    };
    let mut batch = Vec::new();
    let mut p = outer_packet(&mut pool, from(4500), caddr, b"v6");
    edit(&mut p, 0, 0x60);
    batch.push(p);
    let mut p = outer_packet(&mut pool, from(4500), caddr, b"tcp");
    edit(&mut p, 9, 6);
    batch.push(p);
    let mut p = outer_packet(&mut pool, from(4500), caddr, b"esp");
    edit(&mut p, 9, 50);
    batch.push(p);
    let mut p = outer_packet(&mut pool, from(4500), caddr, b"fragment");
    edit(&mut p, 6, 0x20);
    batch.push(p);
    batch.push(outer_packet(&mut pool, from(500), caddr, b"no-ike-socket"));
    batch.push(outer_packet(
        &mut pool,
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 4500),
        caddr,
        b"other-source",
    ));
    let mut p = outer_packet(&mut pool, from(4500), caddr, b"cut");
    p.end = p.start + 10;
    batch.push(p);
    let mut p = outer_packet(&mut pool, from(4500), caddr, b"beyond-frame");
    p.end = FRAME_SIZE + 1;
    batch.push(p);
    let st = sock.send_batch(&batch);
    assert_eq!(st.tx_packets, 0);
    for (r, n) in [
        (IoDrop::NotIpv4, 1),
        (IoDrop::Protocol, 1),
        (IoDrop::NoRawSocket, 1),
        (IoDrop::Fragment, 1),
        (IoDrop::NoSocket, 1),
        (IoDrop::SourceMismatch, 1),
        (IoDrop::Malformed, 2),
    ] {
        assert_eq!(st.drops(r), n, "{}", r.name());
    }
    assert_eq!(st.total_drops(), batch.len() as u64);
    assert_eq!(sock.stats().total_drops(), batch.len() as u64);
}

#[test]
fn raw_esp_opens_or_says_it_needs_cap_net_raw() {
    let mut sock = open();
    match sock.open_raw_esp() {
        Ok(()) => assert!(sock.has_raw_esp()),
        Err(e @ SocketError::RawNotPermitted { .. }) => {
            assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
            assert!(!sock.has_raw_esp());
        }
        Err(e) => panic!("{e}"),
    }
    // The UDP sockets work either way.
    let (client, _) = peer();
    client
        .send_to(b"still-here", sock.local_addr(Role::Ike).unwrap())
        .unwrap();
    let mut pool = FramePool::new(4);
    let mut pkts = pool.batch(4);
    assert_eq!(recv_n(&mut sock, &mut pkts, 1), 1);
}

#[test]
fn bind_conflict_is_a_clear_error() {
    let held = UdpSocket::bind((LO, 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let e = OutsideSockets::open(&OutsideConfig {
        ike: Some(port),
        natt: None,
        l2tp: None,
        ..OutsideConfig::ephemeral(LO)
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("IKE (UDP 500)") && msg.contains("bind"),
        "{msg}"
    );
}

/// The whole gateway on loopback: a client's ESP-in-UDP datagram comes in through the
/// NAT-T socket, the pipeline decapsulates it, and the answer goes back out through the
/// same socket and opens at the client.
#[test]
fn pipeline_runs_over_the_socket_backend() {
    let mut sock = open();
    let (client, caddr) = peer();
    let natt = sock.local_addr(Role::NatT).unwrap();
    let mut shard = new_shard(4);
    let inside = Ipv4Addr::new(198, 51, 100, 1);
    let mut sim = SimPeer::establish(
        &mut shard,
        PeerParams {
            transform: Transform::Aes128CbcSha256,
            natt: true,
            gateway: LO,
            client: LO,
            client_port: caddr.port(),
            inner: Ipv4Addr::new(198, 51, 100, 10),
            gw_ids: (10, 20),
            client_ids: (30, 40),
            backend: Backend::AwsLc,
        },
        1,
    )
    .unwrap();

    // Client → gateway.
    let mut f = vec![0u8; FRAME_SIZE];
    let r = sim.inner_packet(&mut f, inside, 200);
    let outer = sim.seal(&mut f, r).unwrap();
    client
        .send_to(&f[outer.start + 28..outer.end], natt)
        .unwrap();
    let mut pool = FramePool::new(8);
    let mut pkts = pool.batch(4);
    assert_eq!(recv_n(&mut sock, &mut pkts, 1), 1);
    let batch = &mut pkts[..1];
    shard.decap_batch(batch);
    assert_eq!(batch[0].verdict, Verdict::Forward, "{:?}", shard.stats);
    let ip = &batch[0].buf[batch[0].start..batch[0].end];
    assert_eq!(ip.len(), 200);
    assert_eq!(&ip[16..20], &inside.octets());

    // Gateway → client.
    let mut p = pool.pkt().unwrap();
    let r = write_inner_udp(&mut p.buf, HEADROOM, inside, sim.params.inner, 300);
    p.reset(r.start, r.end);
    let mut out = vec![p];
    shard.encap_batch(&mut out);
    assert_eq!(out[0].verdict, Verdict::Forward);
    let st = sock.send_batch(&out);
    assert_eq!(st.tx_packets, 1, "{st:?}");
    let mut rbuf = vec![0u8; FRAME_SIZE];
    let (n, from) = client.recv_from(&mut rbuf[HEADROOM..]).unwrap();
    assert_eq!(from, std::net::SocketAddr::V4(natt));
    // Put back the headers the socket took off, as the client's kernel would see them.
    let r = synthesize_udp(
        &mut rbuf,
        HEADROOM..HEADROOM + n,
        SocketAddrV4::new(LO, 4500),
        caddr,
    )
    .unwrap();
    let inner = sim
        .open(&mut rbuf, r)
        .expect("client opens what the gateway sent");
    assert_eq!(inner.len(), 300);
    assert_eq!(&rbuf[inner.start + 12..inner.start + 16], &inside.octets());
}

/// An ESP packet over the raw path as the pipeline would see it (header included).
#[test]
fn raw_esp_outbound_needs_the_raw_socket() {
    let mut sock = open();
    let mut pool = FramePool::new(1);
    let mut p = pool.pkt().unwrap();
    let total = 20 + 16;
    write_ipv4_header(&mut p.buf[HEADROOM - 20..HEADROOM], total, 1, 50, LO, LO);
    p.reset(HEADROOM - 20, HEADROOM - 20 + usize::from(total));
    p.verdict = Verdict::Forward;
    let st = sock.send_batch(std::slice::from_ref(&p));
    assert_eq!(st.drops(IoDrop::NoRawSocket), 1);
}

/// Sockets and TUN queues are opened by one thread and moved to their worker.
#[test]
fn backends_move_to_their_worker_thread() {
    fn send<T: Send>() {}
    send::<OutsideSockets>();
    send::<super::tun::TunQueue>();
    let mut sock = open();
    let natt = sock.local_addr(Role::NatT).unwrap();
    let (client, _) = peer();
    client.send_to(b"moved", natt).unwrap();
    let got = std::thread::spawn(move || {
        let mut pool = FramePool::new(2);
        let mut pkts = pool.batch(2);
        recv_n(&mut sock, &mut pkts, 1)
    })
    .join()
    .unwrap();
    assert_eq!(got, 1);
}

/// IKE through a running worker on the socket backend: a datagram to the IKE socket
/// (500) and one to the NAT-T socket (4500, behind the non-ESP marker) reach the
/// control channel with our address and port; `SendIke` answers leave from the same
/// sockets, the one on 4500 with the marker.
#[test]
fn ike_round_trip_through_a_worker_on_sockets() {
    use std::os::fd::BorrowedFd;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use crate::dataplane::backends::SocketOutside;
    use crate::dataplane::chain::ControlKind;
    use crate::dataplane::ports::{FrameSource, Inside};
    use crate::dataplane::worker::{SharedStats, Worker, WorkerCmd, WorkerConfig};

    struct NoInside;
    impl Inside<Box<[u8]>> for NoInside {
        fn recv(
            &mut self,
            _: &mut dyn FrameSource<Box<[u8]>>,
            _: &mut Vec<Pkt<Box<[u8]>>>,
            _: usize,
        ) -> usize {
            0
        }
        fn send(&mut self, pkts: &[Pkt<Box<[u8]>>]) -> usize {
            pkts.len()
        }
        fn fds(&self) -> Vec<BorrowedFd<'_>> {
            Vec::new()
        }
    }

    let sock = open();
    let ike = sock.local_addr(Role::Ike).unwrap();
    let natt = sock.local_addr(Role::NatT).unwrap();
    let (client, caddr) = peer();
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (up_tx, up_rx) = crossbeam_channel::unbounded();
    let cfg = WorkerConfig {
        id: 0,
        batch: 16,
        idle_wait: Duration::from_millis(1),
        workers: 1,
        tunnel_bits: 0,
        answer_ping_on: None,
    };
    let worker = std::thread::spawn(move || {
        let mut w = Worker::new(
            cfg,
            new_shard(4),
            SocketOutside::new(sock, 64),
            NoInside,
            cmd_rx,
            up_tx,
            Arc::new(SharedStats::default()),
            Arc::new(AtomicBool::new(false)),
        );
        w.run();
    });

    let msg: Vec<u8> = (0..40u8).collect();
    client.send_to(&msg, ike).unwrap();
    let mut marked = vec![0u8; 4];
    marked.extend_from_slice(&msg);
    client.send_to(&marked, natt).unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = up_rx.recv_timeout(Duration::from_secs(2)).expect("IKE up");
        assert_eq!(m.kind, ControlKind::Ike);
        assert_eq!(m.data, msg);
        assert_eq!(
            (m.peer.addr, m.peer.port, m.peer.spi),
            (LO, caddr.port(), 0)
        );
        assert_eq!(m.local, LO);
        got.push(m.local_port);
    }
    got.sort();
    assert_eq!(
        got,
        [500, 4500],
        "the role's port, whatever the socket is bound to"
    );

    for local_port in [500, 4500] {
        cmd_tx
            .send(WorkerCmd::SendIke {
                peer: LO,
                peer_port: caddr.port(),
                local: LO,
                local_port,
                data: msg.clone(),
            })
            .unwrap();
    }
    let mut buf = [0u8; 256];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&msg[..], ike.into()));
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&marked[..], natt.into()));
    cmd_tx.send(WorkerCmd::Stop).unwrap();
    worker.join().unwrap();
}
