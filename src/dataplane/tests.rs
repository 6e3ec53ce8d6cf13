//! The full chain, both directions, with simulated clients set up through the same
//! install path the control thread uses.

use std::net::Ipv4Addr;

use super::chain::{ControlKind, Pkt, Verdict};
use super::peer::{FRAME_HEADROOM, PeerParams, SimPeer, frame_len, new_shard, write_inner_udp};
use super::stats::DropReason;
use crate::crypto::{Backend, Transform};

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn params(i: u16, t: Transform, natt: bool) -> PeerParams {
    PeerParams {
        transform: t,
        natt,
        gateway: GW,
        // Clients 0 and 1 sit behind the same NAT address with different ports.
        client: Ipv4Addr::new(203, 0, 113, if i < 2 { 1 } else { i as u8 }),
        client_port: 40000 + i,
        inner: Ipv4Addr::from(0x0a63_000a + u32::from(i)),
        gw_ids: (100 + i, 200 + i),
        client_ids: (300 + i, 400 + i),
        backend: Backend::AwsLc,
    }
}

#[test]
fn both_directions_every_transform_and_encap() {
    for t in Transform::ALL {
        for natt in [true, false] {
            let mut shard = new_shard(16);
            let mut peers: Vec<SimPeer> = (0..3)
                .map(|i| SimPeer::establish(&mut shard, params(i, t, natt), i as u8 + 1).unwrap())
                .collect();
            // Client → gateway: a batch mixing the three clients and sizes.
            let sizes = [28usize, 64, 100, 1400, 576, 29];
            let mut batch: Vec<Pkt<Vec<u8>>> = Vec::new();
            for (k, &size) in sizes.iter().enumerate() {
                let peer = &mut peers[k % 3];
                let mut f = vec![0u8; frame_len(size)];
                let r = peer.inner_packet(&mut f, INSIDE, size);
                let outer = peer.seal(&mut f, r).unwrap();
                batch.push(Pkt::new(f, outer.start, outer.end));
            }
            shard.decap_batch(&mut batch);
            for (k, p) in batch.iter().enumerate() {
                assert_eq!(p.verdict, Verdict::Forward, "{t} natt={natt} #{k}");
                let ip = &p.buf[p.start..p.end];
                assert_eq!(ip.len(), sizes[k].max(28));
                assert_eq!(&ip[12..16], &peers[k % 3].params.inner.octets());
                assert_eq!(&ip[16..20], &INSIDE.octets());
            }
            assert_eq!(shard.stats.decap_out, sizes.len() as u64);
            assert_eq!(shard.stats.total_drops(), 0);

            // Inside → clients: encap, then each client opens its own.
            let mut batch: Vec<Pkt<Vec<u8>>> = Vec::new();
            for (k, &size) in sizes.iter().enumerate() {
                let mut f = vec![0u8; frame_len(size)];
                let r = write_inner_udp(
                    &mut f,
                    FRAME_HEADROOM,
                    INSIDE,
                    peers[k % 3].params.inner,
                    size,
                );
                batch.push(Pkt::new(f, r.start, r.end));
            }
            shard.encap_batch(&mut batch);
            for (k, p) in batch.iter_mut().enumerate() {
                assert_eq!(p.verdict, Verdict::Forward, "{t} natt={natt} encap #{k}");
                let (s, e) = (p.start, p.end);
                let inner = peers[k % 3].open(&mut p.buf, s..e).expect("client opens");
                assert_eq!(inner.len(), sizes[k].max(28));
                assert_eq!(
                    &p.buf[inner.start + 16..inner.start + 20],
                    &peers[k % 3].params.inner.octets()
                );
            }
            assert_eq!(shard.stats.encap_out, sizes.len() as u64);
            assert_eq!(shard.stats.total_drops(), 0);
        }
    }
}

fn one(peer: &mut SimPeer, size: usize) -> Pkt<Vec<u8>> {
    let mut f = vec![0u8; frame_len(size)];
    let r = peer.inner_packet(&mut f, INSIDE, size);
    let o = peer.seal(&mut f, r).unwrap();
    Pkt::new(f, o.start, o.end)
}

#[test]
fn every_drop_is_counted_under_its_reason() {
    let mut shard = new_shard(16);
    let mut a = SimPeer::establish(&mut shard, params(0, Transform::Aes128Gcm, true), 1).unwrap();
    let mut b = SimPeer::establish(&mut shard, params(1, Transform::Aes128Gcm, true), 2).unwrap();

    let good = one(&mut a, 100);
    let replayed = Pkt::new(good.buf.clone(), good.start, good.end);
    let mut tampered = one(&mut a, 100);
    let last = tampered.end - 1;
    tampered.buf[last] ^= 1;
    let mut unknown_spi = one(&mut b, 100);
    // SPI is the first word after outer IPv4 + UDP.
    let spi_at = unknown_spi.start + 28;
    unknown_spi.buf[spi_at + 3] ^= 0xff;
    let mut wrong_port = one(&mut b, 100);
    let sport_at = wrong_port.start + 20;
    wrong_port.buf[sport_at..sport_at + 2].copy_from_slice(&1u16.to_be_bytes());
    let mut bad_csum = one(&mut a, 64);
    let c_at = bad_csum.start + 10;
    bad_csum.buf[c_at] ^= 1;
    let truncated = Pkt::new(vec![0x45u8, 0, 0, 20], 0, 4);

    // Client B spoofs A's inner address through its own (valid) SA.
    let mut spoof = vec![0u8; frame_len(100)];
    let r = write_inner_udp(&mut spoof, FRAME_HEADROOM, a.params.inner, INSIDE, 100);
    let o = b.seal(&mut spoof, r).unwrap();
    let spoofed = Pkt::new(spoof, o.start, o.end);

    let mut batch = vec![
        good,
        replayed,
        tampered,
        unknown_spi,
        wrong_port,
        bad_csum,
        truncated,
        spoofed,
    ];
    shard.decap_batch(&mut batch);
    let verdicts: Vec<Verdict> = batch.iter().map(|p| p.verdict).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Forward,
            Verdict::Drop(DropReason::Replay),
            Verdict::Drop(DropReason::Icv),
            Verdict::Drop(DropReason::UnknownSpi),
            Verdict::Drop(DropReason::SaAddressMismatch),
            Verdict::Drop(DropReason::BadChecksum),
            Verdict::Drop(DropReason::Malformed),
            Verdict::Drop(DropReason::SpoofedSource),
        ]
    );
    assert_eq!(shard.stats.total_drops(), 7);
    for r in [
        DropReason::Replay,
        DropReason::Icv,
        DropReason::UnknownSpi,
        DropReason::SaAddressMismatch,
        DropReason::BadChecksum,
        DropReason::Malformed,
        DropReason::SpoofedSource,
    ] {
        assert_eq!(shard.stats.drops_for(r), 1, "{r}");
    }

    // Encap side: no session for the destination, malformed inner packet.
    let mut f = vec![0u8; frame_len(64)];
    let r = write_inner_udp(
        &mut f,
        FRAME_HEADROOM,
        INSIDE,
        Ipv4Addr::new(1, 2, 3, 4),
        64,
    );
    let mut batch = vec![
        Pkt::new(f, r.start, r.end),
        Pkt::new(vec![0u8; 200], 100, 110),
    ];
    shard.encap_batch(&mut batch);
    assert_eq!(batch[0].verdict, Verdict::Drop(DropReason::NoSession));
    assert_eq!(batch[1].verdict, Verdict::Drop(DropReason::InnerMalformed));
    assert_eq!(shard.stats.total_drops(), 9);
}

#[test]
fn control_traffic_goes_up_and_keepalives_are_consumed() {
    let mut shard = new_shard(4);
    let _a = SimPeer::establish(&mut shard, params(0, Transform::Aes128Gcm, true), 1).unwrap();
    // Real frames of the golden capture: MM5 on 4500 (IKE after the non-ESP marker)
    // and MM1 on 500.
    let reader =
        crate::wire::pcap::Reader::new(include_bytes!("../../tests/data/ikev1-natt.pcap")).unwrap();
    let frames: Vec<Vec<u8>> = reader.records().map(|r| r.unwrap().data.to_vec()).collect();
    let mut batch: Vec<Pkt<Vec<u8>>> = [0usize, 4]
        .iter()
        .map(|&i| {
            let f = frames[i].clone();
            let n = f.len();
            Pkt::new(f, 14, n)
        })
        .collect();
    // A NAT keepalive: IPv4 / UDP 4500 / 0xFF.
    let mut ka = vec![0u8; 29];
    crate::esp::encap::write_ipv4_header(
        &mut ka[..20],
        29,
        1,
        17,
        Ipv4Addr::new(203, 0, 113, 1),
        GW,
    );
    ka[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ka[22..24].copy_from_slice(&4500u16.to_be_bytes());
    ka[24..26].copy_from_slice(&9u16.to_be_bytes());
    ka[28] = 0xff;
    batch.push(Pkt::new(ka, 0, 29));
    shard.decap_batch(&mut batch);
    assert_eq!(batch[0].verdict, Verdict::ToControl(ControlKind::Ike));
    assert_eq!(batch[1].verdict, Verdict::ToControl(ControlKind::Ike));
    // The IKE message starts with the initiator cookie (after the marker on 4500).
    assert_eq!(
        &batch[1].buf[batch[1].start..batch[1].start + 8],
        &[0x3c, 0xaf, 0xe7, 0xcd, 0x72, 0x62, 0x26, 0x4c]
    );
    assert_eq!(batch[2].verdict, Verdict::Consumed);
    assert_eq!(shard.stats.nat_keepalives, 1);
    assert_eq!(shard.stats.to_control, 2);
}

#[test]
fn plain_l2tp_is_refused_when_ipsec_is_required() {
    let mut shard = new_shard(4);
    // Decrypted L2TP of the capture re-sent as plain UDP 1701.
    let mut f = vec![0u8; 60];
    crate::esp::encap::write_ipv4_header(
        &mut f[..20],
        48,
        1,
        17,
        Ipv4Addr::new(203, 0, 113, 1),
        GW,
    );
    f[20..22].copy_from_slice(&1701u16.to_be_bytes());
    f[22..24].copy_from_slice(&1701u16.to_be_bytes());
    f[24..26].copy_from_slice(&28u16.to_be_bytes());
    // L2TP ZLB control header: T L S, version 2, length 12, tunnel 100, session 0.
    f[28..40].copy_from_slice(&[0xc8, 0x02, 0, 12, 0, 100, 0, 0, 0, 1, 0, 1]);
    let mut batch = vec![Pkt::new(f.clone(), 0, 48)];
    shard.decap_batch(&mut batch);
    assert_eq!(
        batch[0].verdict,
        Verdict::Drop(DropReason::PlainL2tpRefused)
    );
    shard.require_ipsec = false;
    let mut batch = vec![Pkt::new(f, 0, 48)];
    shard.decap_batch(&mut batch);
    assert_eq!(
        batch[0].verdict,
        Verdict::ToControl(ControlKind::L2tpControl)
    );
    assert_eq!(batch[0].end - batch[0].start, 20);
}

#[test]
fn garbage_never_panics_and_is_always_counted() {
    let mut shard = new_shard(4);
    let mut a =
        SimPeer::establish(&mut shard, params(0, Transform::Aes256CbcSha256, true), 1).unwrap();
    let template = one(&mut a, 200);
    let mut rng = 0x9e37_79b9u32;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let mut total = 0u64;
    for _ in 0..2000 {
        let mut p = Pkt::new(template.buf.clone(), template.start, template.end);
        // Flip a few bytes anywhere, sometimes cut the packet short.
        for _ in 0..(next() % 4 + 1) {
            let at = template.start + (next() as usize % (template.end - template.start));
            p.buf[at] ^= (next() % 255 + 1) as u8;
        }
        if next() % 3 == 0 {
            p.end = p.start + next() as usize % (template.end - template.start);
        }
        let mut batch = vec![p];
        shard.decap_batch(&mut batch);
        total += 1;
        assert!(!matches!(batch[0].verdict, Verdict::Pending));
    }
    let s = &shard.stats;
    assert_eq!(s.decap_in, total);
    assert_eq!(
        s.decap_out + s.to_control + s.nat_keepalives + s.total_drops(),
        total
    );
}

#[test]
fn syns_are_clamped_in_both_directions() {
    let mut shard = new_shard(4);
    shard.mss_clamp = Some(1360);
    let mut a = SimPeer::establish(&mut shard, params(0, Transform::Aes128Gcm, true), 1).unwrap();
    let syn = |src: Ipv4Addr, dst: Ipv4Addr, f: &mut Vec<u8>| {
        let at = FRAME_HEADROOM;
        crate::esp::encap::write_ipv4_header(&mut f[at..at + 20], 44, 1, 6, src, dst);
        let t = &mut f[at + 20..at + 44];
        t[12] = 6 << 4;
        t[13] = 0x02;
        t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        at..at + 44
    };
    let mss_of = |b: &[u8], ip: usize| u16::from_be_bytes([b[ip + 42], b[ip + 43]]);
    // Client → inside.
    let mut f = vec![0u8; frame_len(44)];
    let r = syn(a.params.inner, INSIDE, &mut f);
    let o = a.seal(&mut f, r).unwrap();
    let mut batch = vec![Pkt::new(f, o.start, o.end)];
    shard.decap_batch(&mut batch);
    assert_eq!(batch[0].verdict, Verdict::Forward);
    assert_eq!(mss_of(&batch[0].buf, batch[0].start), 1360);
    // Inside → client.
    let mut f = vec![0u8; frame_len(44)];
    let r = syn(INSIDE, a.params.inner, &mut f);
    let mut batch = vec![Pkt::new(f, r.start, r.end)];
    shard.encap_batch(&mut batch);
    let (s, e) = (batch[0].start, batch[0].end);
    let inner = a.open(&mut batch[0].buf, s..e).unwrap();
    assert_eq!(mss_of(&batch[0].buf, inner.start), 1360);
}

/// strongSwan with kernel-libipsec only does tunnel mode: host-to-host SAs whose inner
/// packets are IPv4/UDP to 1701 from the client's own address (behind its NAT, not
/// the outer one). They take the L2TP/PPP path; the way back gets an inner header to
/// the address the inbound SA learned.
#[test]
fn tunnel_mode_sas_carry_l2tp_both_ways() {
    let client_inner = Ipv4Addr::new(192, 168, 1, 23);
    for t in Transform::ALL {
        for natt in [true, false] {
            let mut shard = new_shard(8);
            let mut tun =
                SimPeer::establish_tunnel(&mut shard, params(0, t, natt), 1, client_inner).unwrap();
            let mut transport = SimPeer::establish(&mut shard, params(2, t, natt), 3).unwrap();
            let mut batch = vec![
                one(&mut tun, 100),
                one(&mut transport, 200),
                one(&mut tun, 1400),
            ];
            shard.decap_batch(&mut batch);
            for (k, p) in batch.iter().enumerate() {
                assert_eq!(p.verdict, Verdict::Forward, "{t} natt={natt} #{k}");
                let ip = &p.buf[p.start..p.end];
                let src = if k == 1 {
                    transport.params.inner
                } else {
                    tun.params.inner
                };
                assert_eq!(
                    &ip[12..16],
                    &src.octets(),
                    "the PPP address, not the tunnel's"
                );
            }
            let sa = shard.inbound.get(batch[0].spi).unwrap();
            assert_eq!(
                sa.tunnel_addrs(),
                Some(crate::esp::sa::TunnelAddrs {
                    local: GW,
                    peer: client_inner
                })
            );
            assert_eq!(
                shard
                    .sessions
                    .get(batch[0].session.unwrap())
                    .unwrap()
                    .counters
                    .in_packets,
                2
            );

            // Inside → both clients: tunnel mode to the learned inner address.
            let mut batch: Vec<Pkt<Vec<u8>>> = [&tun, &transport, &tun]
                .iter()
                .map(|peer| {
                    let mut f = vec![0u8; frame_len(500)];
                    let r = write_inner_udp(&mut f, FRAME_HEADROOM, INSIDE, peer.params.inner, 500);
                    Pkt::new(f, r.start, r.end)
                })
                .collect();
            shard.encap_batch(&mut batch);
            for (k, p) in batch.iter_mut().enumerate() {
                assert_eq!(p.verdict, Verdict::Forward, "{t} natt={natt} encap #{k}");
                let peer = if k == 1 { &mut transport } else { &mut tun };
                let (s, e) = (p.start, p.end);
                let inner = peer.open(&mut p.buf, s..e).expect("client opens");
                assert_eq!(inner.len(), 500);
            }
            assert_eq!(shard.stats.total_drops(), 0, "{:?}", shard.stats);
        }
    }
}

/// Before the peer has sent anything, the tunnel addresses come from the inbound SA's
/// configuration (the Quick Mode identities); without it, from the outer addresses.
#[test]
fn tunnel_mode_addresses_configured_or_outer() {
    use crate::dataplane::peer::GatewaySide;
    use crate::esp::sa::{Mode, TunnelAddrs};
    let t = Transform::Aes128Gcm;
    let client_inner = Ipv4Addr::new(192, 168, 7, 7);
    for configured in [true, false] {
        let mut shard = new_shard(4);
        let p = params(3, t, true);
        let gw = GatewaySide::with_mode(&p, 9, Mode::Tunnel).unwrap();
        let mut inbound = gw.inbound;
        if configured {
            inbound = inbound.with_tunnel_addrs(TunnelAddrs {
                local: GW,
                peer: client_inner,
            });
        }
        let spi = shard
            .inbound
            .insert_with(|spi| inbound.with_spi(spi))
            .unwrap();
        let oid = shard.outbound.insert(gw.outbound);
        let mut s = gw.session;
        s.inbound_spi = Some(spi);
        s.outbound = Some(oid);
        shard.sessions.insert(s).unwrap();
        let expect = if configured { client_inner } else { p.client };
        let mut client = SimPeer::tunnel_client(p.clone(), spi, 9, expect).unwrap();
        let mut f = vec![0u8; frame_len(64)];
        let r = write_inner_udp(&mut f, FRAME_HEADROOM, INSIDE, p.inner, 64);
        let mut batch = vec![Pkt::new(f, r.start, r.end)];
        shard.encap_batch(&mut batch);
        assert_eq!(batch[0].verdict, Verdict::Forward);
        let (s0, e0) = (batch[0].start, batch[0].end);
        assert!(
            client.open(&mut batch[0].buf, s0..e0).is_some(),
            "configured={configured}"
        );
    }
}

/// The chain records where a packet was sent: our address and port (IKE on 500 and
/// 4500, ESP, plain L2TP), for the control thread's replies.
#[test]
fn outer_destination_is_recorded() {
    let mut shard = new_shard(4);
    shard.require_ipsec = false;
    let mut a = SimPeer::establish(&mut shard, params(0, Transform::Aes128Gcm, true), 1).unwrap();
    let reader =
        crate::wire::pcap::Reader::new(include_bytes!("../../tests/data/ikev1-natt.pcap")).unwrap();
    let frames: Vec<Vec<u8>> = reader.records().map(|r| r.unwrap().data.to_vec()).collect();
    let mut batch: Vec<Pkt<Vec<u8>>> = [0usize, 4]
        .iter()
        .map(|&i| {
            let f = frames[i].clone();
            let n = f.len();
            Pkt::new(f, 14, n)
        })
        .collect();
    batch.push(one(&mut a, 64));
    let mut plain = vec![0u8; 60];
    crate::esp::encap::write_ipv4_header(
        &mut plain[..20],
        40,
        1,
        17,
        Ipv4Addr::new(203, 0, 113, 9),
        GW,
    );
    plain[20..22].copy_from_slice(&1701u16.to_be_bytes());
    plain[22..24].copy_from_slice(&1701u16.to_be_bytes());
    plain[24..26].copy_from_slice(&20u16.to_be_bytes());
    plain[28..40].copy_from_slice(&[0xc8, 0x02, 0, 12, 0, 100, 0, 0, 0, 1, 0, 1]);
    batch.push(Pkt::new(plain, 0, 40));
    shard.decap_batch(&mut batch);
    let ports: Vec<(Verdict, u16)> = batch.iter().map(|p| (p.verdict, p.outer_dport)).collect();
    assert_eq!(
        ports,
        vec![
            (Verdict::ToControl(ControlKind::Ike), 500),
            (Verdict::ToControl(ControlKind::Ike), 4500),
            (Verdict::Forward, 4500),
            (Verdict::ToControl(ControlKind::L2tpControl), 1701),
        ]
    );
    // The capture's destination is the responder; ours is GW.
    let f0 = &frames[0];
    assert_eq!(
        batch[0].outer_dst.octets(),
        <[u8; 4]>::try_from(&f0[14 + 16..14 + 20]).unwrap()
    );
    assert_eq!(batch[2].outer_dst, GW);
    assert_eq!(batch[3].outer_dst, GW);
}
