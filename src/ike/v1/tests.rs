//! The responder against the project's initiator, in memory, with a fake clock: full
//! setups (with and without NAT, several clients behind one NAT), refusals, the
//! retransmission cache, rekeys of both phases, deletes and DPD.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::crypto::Transform as EspTransform;

use super::crypto::{DhGroup, HashAlg, IkeCipher};
use super::initiator::{Client, ClientConfig, Outgoing};
use super::proposal::Phase1Choice;
use super::responder::{Action, Datagram, Install, Responder, ResponderConfig, SpiSource};

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const PSK: &[u8] = b"a-long-enough-test-psk-0123";

struct Counter(u32);

impl SpiSource for Counter {
    fn allocate(&mut self, _worker: u16) -> Option<u32> {
        self.0 += 1;
        Some(self.0)
    }
    fn release(&mut self, _spi: u32) {}
}

fn responder() -> Responder {
    let mut cfg = ResponderConfig::new(GW, Some(Zeroizing::new(PSK.to_vec())));
    cfg.dpd_interval = Some(Duration::from_secs(10));
    Responder::new(cfg, Box::new(Counter(0x1000)))
}

fn choice(group: DhGroup) -> Phase1Choice {
    Phase1Choice {
        cipher: IkeCipher::AesCbc { key_len: 16 },
        hash: HashAlg::Sha256,
        group,
        lifetime: Duration::from_secs(3600),
    }
}

fn client(local: SocketAddrV4, spi: u32) -> (Client, Outgoing) {
    Client::start(
        ClientConfig {
            local,
            gateway: SocketAddrV4::new(GW, 500),
            psk: PSK.to_vec(),
            ike: vec![choice(DhGroup::Curve25519)],
            esp: vec![EspTransform::Aes128Gcm, EspTransform::Aes256CbcSha1],
            esp_lifetime: Duration::from_secs(3600),
            initial_contact: true,
            natt_port: 4500,
        },
        spi,
    )
    .expect("start")
}

/// Moves datagrams between one client and the responder until neither has anything
/// to say. `seen_as` maps the client's endpoint to what the responder sees (NAT).
struct Net {
    r: Responder,
    now: Instant,
    installs: Vec<Install>,
    actions: Vec<Action>,
    /// 'S' for each Send, 'I' for each Install, in the order the responder gave them.
    order: String,
}

impl Net {
    fn new() -> Net {
        Net {
            r: responder(),
            now: Instant::now(),
            installs: Vec::new(),
            actions: Vec::new(),
            order: String::new(),
        }
    }

    /// Delivers `out` to the responder as coming from `nat(out.from)`, and returns
    /// the responder's answers for this client.
    fn deliver(
        &mut self,
        out: &Outgoing,
        nat: impl Fn(SocketAddrV4) -> SocketAddrV4,
    ) -> Vec<Vec<u8>> {
        self.r.input(
            self.now,
            Datagram {
                worker: 0,
                peer: nat(out.from),
                local: out.to,
                data: &out.data,
            },
        );
        self.drain()
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        while let Some(a) = self.r.poll_action() {
            match a {
                Action::Send { data, .. } => {
                    self.order.push('S');
                    replies.push(data)
                }
                Action::Install(i) => {
                    self.order.push('I');
                    self.installs.push(*i)
                }
                other => self.actions.push(other),
            }
        }
        replies
    }

    fn run(
        &mut self,
        c: &mut Client,
        first: Outgoing,
        nat: impl Fn(SocketAddrV4) -> SocketAddrV4 + Copy,
    ) {
        let mut pending = vec![first];
        while let Some(out) = pending.pop() {
            for reply in self.deliver(&out, nat) {
                if let Some(next) = c.input(&reply).expect("client input") {
                    pending.push(next);
                }
            }
        }
    }
}

fn no_nat(a: SocketAddrV4) -> SocketAddrV4 {
    a
}

#[test]
fn full_setup_without_nat_installs_matching_keys() {
    let mut net = Net::new();
    let (mut c, mm1) = client(
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500),
        0xc000_0001,
    );
    net.run(&mut c, mm1, no_nat);
    assert!(c.is_up());
    assert_eq!(net.r.ike_sas(), 1);
    assert_eq!(net.installs.len(), 1);
    let i = &net.installs[0];
    let ours = c.child().expect("client child");
    assert_eq!(i.child.outbound_spi, 0xc000_0001);
    assert_eq!(ours.outbound_spi, i.child.inbound_spi);
    assert_eq!(*i.child.inbound_keymat, *ours.outbound_keymat);
    assert_eq!(*i.child.outbound_keymat, *ours.inbound_keymat);
    assert_eq!(i.child.transform, EspTransform::Aes128Gcm);
    assert!(!i.child.udp);
    assert!(matches!(
        net.actions.as_slice(),
        [Action::Activate { replaces: None, .. }]
    ));
    // MM2, MM4, MM6, then the pair goes to the worker before QM2 does: the client
    // sends ESP right after QM3, and the worker must know the SPI by then.
    assert_eq!(net.order, "SSSIS");
}

#[test]
fn every_group_sets_up() {
    for g in [
        DhGroup::Modp2048,
        DhGroup::Ecp256,
        DhGroup::Ecp384,
        DhGroup::Curve25519,
    ] {
        let mut net = Net::new();
        let (mut c, mm1) = Client::start(
            ClientConfig {
                local: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500),
                gateway: SocketAddrV4::new(GW, 500),
                psk: PSK.to_vec(),
                ike: vec![Phase1Choice {
                    cipher: IkeCipher::AesCbc { key_len: 32 },
                    hash: HashAlg::Sha1,
                    group: g,
                    lifetime: Duration::from_secs(28_800),
                }],
                esp: vec![EspTransform::Aes256CbcSha1],
                esp_lifetime: Duration::from_secs(3600),
                initial_contact: false,
                natt_port: 4500,
            },
            7,
        )
        .expect("start");
        net.run(&mut c, mm1, no_nat);
        assert!(c.is_up(), "{g:?}");
        assert_eq!(net.installs[0].child.transform, EspTransform::Aes256CbcSha1);
    }
}

#[test]
fn nat_floats_to_4500_and_encapsulates() {
    let mut net = Net::new();
    let private = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 500);
    let nat = |a: SocketAddrV4| {
        SocketAddrV4::new(
            Ipv4Addr::new(198, 51, 100, 7),
            if a.port() == 500 { 40_000 } else { 40_001 },
        )
    };
    let (mut c, mm1) = client(private, 9);
    net.run(&mut c, mm1, nat);
    assert!(c.is_up());
    assert_eq!(c.local().port(), 4500);
    let i = &net.installs[0];
    assert!(i.child.udp);
    assert_eq!(
        i.peer,
        SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40_001)
    );
    assert_eq!(i.local.port(), 4500);
    assert_eq!(i.child.peer_original, Some(*private.ip()));
}

#[test]
fn forced_encapsulation_without_nat_floats_and_encapsulates() {
    // strongSwan's `encap = yes`: no NAT on the path, ESP in UDP all the same.
    let mut net = Net::new();
    let local = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 20_000);
    let (mut c, mm1) = client(local, 11);
    c.force_encap();
    net.run(&mut c, mm1, no_nat);
    assert!(c.is_up());
    assert_eq!(c.gateway().port(), 4500);
    assert!(c.child().expect("client child").udp);
    let i = &net.installs[0];
    assert!(i.child.udp, "the gateway sees the client behind a NAT");
    assert_eq!(i.local.port(), 4500);
    assert_eq!(i.peer, SocketAddrV4::new(*local.ip(), 4500));
}

#[test]
fn two_clients_behind_one_nat() {
    let mut net = Net::new();
    let private = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 10), 500);
    for (k, base) in [(1u32, 40_000u16), (2, 50_000)] {
        let nat = move |a: SocketAddrV4| {
            SocketAddrV4::new(
                Ipv4Addr::new(198, 51, 100, 7),
                if a.port() == 500 { base } else { base + 1 },
            )
        };
        let (mut c, mm1) = client(private, k);
        net.run(&mut c, mm1, nat);
        assert!(c.is_up());
    }
    assert_eq!(
        net.r.ike_sas(),
        2,
        "INITIAL-CONTACT from the second must not kill the first"
    );
    assert_eq!(net.installs.len(), 2);
    assert_ne!(
        net.installs[0].child.inbound_spi,
        net.installs[1].child.inbound_spi
    );
    assert_ne!(net.installs[0].peer, net.installs[1].peer);
    assert!(
        !net.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. }))
    );
}

#[test]
fn wrong_psk_fails_without_install() {
    let mut net = Net::new();
    let (mut c, mm1) = Client::start(
        ClientConfig {
            local: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500),
            gateway: SocketAddrV4::new(GW, 500),
            psk: b"not-the-key".to_vec(),
            ike: vec![choice(DhGroup::Curve25519)],
            esp: vec![EspTransform::Aes128Gcm],
            esp_lifetime: Duration::from_secs(3600),
            initial_contact: true,
            natt_port: 4500,
        },
        1,
    )
    .expect("start");
    let mut out = mm1;
    for _ in 0..2 {
        let r = net.deliver(&out, no_nat);
        out = c.input(&r[0]).expect("input").expect("next");
    }
    assert!(net.deliver(&out, no_nat).is_empty());
    assert_eq!(net.r.stats.auth_failed, 1);
    assert_eq!(net.r.half_open(), 0);
    assert!(net.installs.is_empty());
}

#[test]
fn weak_proposal_gets_no_proposal_chosen() {
    let mut net = Net::new();
    let (_c, mm1) = Client::start(
        ClientConfig {
            local: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500),
            gateway: SocketAddrV4::new(GW, 500),
            psk: PSK.to_vec(),
            ike: vec![Phase1Choice {
                cipher: IkeCipher::TripleDesCbc,
                hash: HashAlg::Sha1,
                group: DhGroup::Modp1024,
                lifetime: Duration::from_secs(3600),
            }],
            esp: vec![EspTransform::Aes128Gcm],
            esp_lifetime: Duration::from_secs(3600),
            initial_contact: true,
            natt_port: 4500,
        },
        1,
    )
    .expect("start");
    let r = net.deliver(&mm1, no_nat);
    assert_eq!(r.len(), 1);
    let h = crate::wire::isakmp::Header::parse(&r[0]).expect("header");
    assert_eq!(h.exchange, crate::wire::isakmp::exchange::INFORMATIONAL);
    assert_eq!(net.r.stats.no_proposal, 1);
    assert_eq!(net.r.half_open(), 0);
}

#[test]
fn duplicate_requests_get_the_same_answer() {
    let mut net = Net::new();
    let (mut c, mm1) = client(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500), 1);
    let a = net.deliver(&mm1, no_nat);
    let b = net.deliver(&mm1, no_nat);
    assert_eq!(a, b);
    assert_eq!(net.r.stats.retransmits, 1);
    assert_eq!(net.r.half_open(), 1);
    let mm3 = c.input(&a[0]).expect("mm2").expect("mm3");
    let a = net.deliver(&mm3, no_nat);
    let b = net.deliver(&mm3, no_nat);
    assert_eq!(a, b, "MM4 resent, no second DH");
}

#[test]
fn phase2_rekey_keeps_the_old_pair_until_deleted() {
    let mut net = Net::new();
    let (mut c, mm1) = client(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500), 0x100);
    net.run(&mut c, mm1, no_nat);
    let old = net.installs[0].child.inbound_spi;
    let qm1 = c.rekey(0x200).expect("rekey");
    net.run(&mut c, qm1, no_nat);
    assert_eq!(net.installs.len(), 2);
    let new = net.installs[1].child.inbound_spi;
    assert!(net.actions.iter().any(|a| matches!(a, Action::Activate { inbound_spi, replaces: Some(o), .. } if *inbound_spi == new && *o == old)));
    assert_eq!(net.r.children(), 2, "old pair kept");
    let del = c.delete_child(0x100).expect("delete");
    net.deliver(&del, no_nat);
    assert!(net.actions.iter().any(|a| matches!(a, Action::Remove { inbound_spi, successor: Some(s), .. } if *inbound_spi == old && *s == new)));
    assert_eq!(net.r.children(), 1);
}

#[test]
fn phase1_rekey_adopts_children() {
    let mut net = Net::new();
    let local = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500);
    let (mut c, mm1) = client(local, 0x100);
    net.run(&mut c, mm1, no_nat);
    // A second Main Mode from the same peer without INITIAL-CONTACT, then the old
    // ISAKMP SA deleted: the ESP pair stays.
    let (mut c2, mm1) = Client::start(
        ClientConfig {
            local,
            gateway: SocketAddrV4::new(GW, 500),
            psk: PSK.to_vec(),
            ike: vec![choice(DhGroup::Curve25519)],
            esp: vec![EspTransform::Aes128Gcm],
            esp_lifetime: Duration::from_secs(3600),
            initial_contact: false,
            natt_port: 4500,
        },
        0x300,
    )
    .expect("start");
    net.run(&mut c2, mm1, no_nat);
    assert_eq!(net.r.ike_sas(), 2);
    let outs = c.disconnect();
    // Only the ISAKMP delete (the second message): the ESP SA is not deleted.
    net.deliver(&outs[1], no_nat);
    assert_eq!(net.r.ike_sas(), 1);
    assert_eq!(net.r.children(), 2);
    assert!(
        !net.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. }))
    );
}

#[test]
fn dpd_declares_a_silent_peer_dead() {
    let mut net = Net::new();
    let (mut c, mm1) = client(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500), 0x100);
    net.run(&mut c, mm1, no_nat);
    let spi = net.installs[0].child.inbound_spi;
    // Answering peer: R-U-THERE is acknowledged and nothing is removed.
    let start = net.now;
    net.now = start + Duration::from_secs(11);
    net.r.handle_timeout(net.now);
    let asks = net.drain();
    assert_eq!(asks.len(), 1, "R-U-THERE after one idle interval");
    let ack = c.input(&asks[0]).expect("dpd").expect("ack");
    net.deliver(&ack, no_nat);
    net.now = start + Duration::from_secs(25);
    net.r.handle_timeout(net.now);
    net.drain();
    assert!(
        !net.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. }))
    );
    // Silent peer: dead within three intervals.
    let mut t = net.now;
    while t < start + Duration::from_secs(60) {
        t += Duration::from_secs(1);
        net.now = t;
        net.r.handle_timeout(t);
        net.drain();
    }
    assert!(net.actions.iter().any(
        |a| matches!(a, Action::Remove { inbound_spi, successor: None, .. } if *inbound_spi == spi)
    ));
    assert_eq!(net.r.ike_sas(), 0);
    assert_eq!(net.r.stats.dpd_dead, 1);
}

#[test]
fn half_open_cap_per_source() {
    let mut net = Net::new();
    for i in 0..100u32 {
        let (_c, mm1) = client(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 9), 500), i);
        net.deliver(&mm1, no_nat);
    }
    assert_eq!(net.r.half_open(), 64);
    assert_eq!(net.r.stats.half_open_refused, 36);
    // Another source still gets through.
    let (_c, mm1) = client(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 10), 500), 1);
    assert_eq!(net.deliver(&mm1, no_nat).len(), 1);
    // Half-open exchanges expire.
    net.now += Duration::from_secs(31);
    net.r.handle_timeout(net.now);
    assert_eq!(net.r.half_open(), 0);
}

#[test]
fn garbage_never_panics() {
    let mut r = responder();
    let now = Instant::now();
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500);
    let local = SocketAddrV4::new(GW, 500);
    let mut seed = 0x1234_5678u32;
    for len in 0..600usize {
        let mut buf = vec![0u8; len];
        for b in buf.iter_mut() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (seed >> 24) as u8;
        }
        if len >= 28 {
            buf[17] = 0x10;
            buf[18] = [2u8, 5, 32][len % 3];
        }
        r.input(
            now,
            Datagram {
                worker: 0,
                peer,
                local,
                data: &buf,
            },
        );
    }
    assert_eq!(r.ike_sas(), 0);
}

#[test]
fn gateway_starts_the_phase2_rekey_and_switches_after_qm3() {
    let mut net = Net::new();
    let (mut c, mm1) = client(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500), 0x100);
    net.run(&mut c, mm1, no_nat);
    let old = net.installs[0].child.inbound_spi;
    // At 90 % of the hour the gateway sends QM1; the client answers.
    let t = net.now + Duration::from_secs(3240);
    // Keep DPD quiet: the peer is alive.
    net.r.child_activity(old, t - Duration::from_secs(1));
    net.now = t;
    net.r.handle_timeout(t);
    // The ISAKMP SA is due at the same moment: keep only the Quick Mode.
    let qm1: Vec<Vec<u8>> = net
        .drain()
        .into_iter()
        .filter(|m| m.get(18) == Some(&crate::wire::isakmp::exchange::QUICK))
        .collect();
    assert_eq!(qm1.len(), 1, "our QM1");
    let qm2 = c.input(&qm1[0]).expect("client").expect("qm2");
    let before = net.order.len();
    let qm3 = net.deliver(&qm2, no_nat);
    assert_eq!(qm3.len(), 1, "our QM3");
    assert_eq!(
        &net.order[before..],
        "IS",
        "the new pair is installed before QM3 goes"
    );
    assert_eq!(net.installs.len(), 2);
    let new = net.installs[1].child.inbound_spi;
    assert_eq!(
        net.installs[1].rekeys,
        Some(old),
        "the peer's packets on the new pair are accepted at once"
    );
    assert!(c.input(&qm3[0]).expect("qm3").is_none());
    let ours = c.child().expect("client child");
    assert_eq!(*ours.outbound_keymat, *net.installs[1].child.inbound_keymat);
    // Not switched yet; a second later it is.
    assert!(
        !net.actions
            .iter()
            .any(|a| matches!(a, Action::Activate { inbound_spi, .. } if *inbound_spi == new))
    );
    net.now = t + Duration::from_secs(2);
    net.r.handle_timeout(net.now);
    net.drain();
    assert!(net.actions.iter().any(|a| matches!(a, Action::Activate { inbound_spi, replaces: Some(o), .. } if *inbound_spi == new && *o == old)));
    assert_eq!(
        net.r.children(),
        2,
        "old pair kept until deleted or expired"
    );
}

#[test]
fn gateway_reauthenticates_phase1_and_keeps_the_pairs() {
    // The client side of the new Main Mode is played by a second responder with the
    // same key (an IKEv1 peer answers a Main Mode whichever side first connected).
    let mut net = Net::new();
    let local = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 500);
    let (mut c, mm1) = client(local, 0x100);
    net.run(&mut c, mm1, no_nat);
    let spi = net.installs[0].child.inbound_spi;
    let mut peer = Responder::new(
        ResponderConfig::new(*local.ip(), Some(Zeroizing::new(PSK.to_vec()))),
        Box::new(Counter(0x9000)),
    );
    // 90 % of the hour later (the peer kept talking, so DPD stays quiet).
    let t = net.now + Duration::from_secs(3240);
    net.r.child_activity(spi, t - Duration::from_secs(1));
    net.now = t;
    net.r.handle_timeout(t);
    // The ESP pair is due at the same moment: keep only the Main Mode.
    let mut to_peer: Vec<Vec<u8>> = net
        .drain()
        .into_iter()
        .filter(|m| m.get(18) == Some(&crate::wire::isakmp::exchange::MAIN))
        .collect();
    assert_eq!(to_peer.len(), 1, "our MM1");
    for _ in 0..6 {
        let mut to_gw = Vec::new();
        for m in to_peer.drain(..) {
            peer.input(
                t,
                Datagram {
                    worker: 0,
                    peer: SocketAddrV4::new(GW, 500),
                    local,
                    data: &m,
                },
            );
            while let Some(a) = peer.poll_action() {
                if let Action::Send { data, .. } = a {
                    to_gw.push(data);
                }
            }
        }
        for m in to_gw {
            net.r.input(
                t,
                Datagram {
                    worker: 0,
                    peer: local,
                    local: SocketAddrV4::new(GW, 500),
                    data: &m,
                },
            );
            to_peer.extend(net.drain());
        }
    }
    assert_eq!(peer.ike_sas(), 1, "the peer has the new SA");
    assert_eq!(
        net.r.ike_sas(),
        1,
        "the old SA is gone, the new one is ours"
    );
    assert_eq!(net.r.children(), 1, "the ESP pair stays");
    assert!(
        !net.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. }))
    );
    assert_eq!(net.r.stats.ike_established, 2);
}
