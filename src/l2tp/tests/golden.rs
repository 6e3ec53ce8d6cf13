//! The real xl2tpd LAC's messages from the golden captures (tests/data/*.decrypted.txt:
//! ESP plaintexts, `UDP | L2TP` in transport mode, `IPv4 | UDP | L2TP` in tunnel mode)
//! fed to our LNS, which must answer as the captured xl2tpd LNS did.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::harness::{kind, seq};
use crate::l2tp::{Event, Lns, LnsConfig, PeerKey, SeededEntropy};
use crate::wire::l2tp::{MessageType, Packet};
use crate::wire::test_util::hex;
use crate::wire::{esp, ipv4, udp};

const CAPTURES: [(&str, &str); 4] = [
    (
        "ikev1-natt",
        include_str!("../../../tests/data/ikev1-natt.decrypted.txt"),
    ),
    (
        "ikev1-cbc",
        include_str!("../../../tests/data/ikev1-psk-transport-cbc-sha1-modp2048.decrypted.txt"),
    ),
    (
        "ikev1-gcm",
        include_str!("../../../tests/data/ikev1-psk-transport-gcm.decrypted.txt"),
    ),
    (
        "ikev2-tunnel",
        include_str!("../../../tests/data/ikev2-psk-tunnel-gcm.decrypted.txt"),
    ),
];

/// (frame, SPI, L2TP control message) of every ESP packet carrying one.
fn control_messages(text: &str) -> Vec<(usize, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split(" | ").collect();
        if cols.len() != 5 || cols[1] != "ESP" {
            continue;
        }
        let frame = cols[0].trim().parse().unwrap();
        let spi_text = cols[2].split_whitespace().nth(1).unwrap();
        let spi = u32::from_str_radix(spi_text, 16).unwrap();
        let plaintext = hex(cols[4].trim());
        let (payload, trailer) = esp::split_plaintext(&plaintext).unwrap();
        let datagram = if trailer.next_header == ipv4::Protocol::IPV4 {
            let inner = ipv4::Packet::new_checked(payload).unwrap();
            if inner.protocol() != ipv4::Protocol::UDP {
                continue; // tunnel mode also carries the pings
            }
            inner.payload().to_vec()
        } else {
            assert_eq!(trailer.next_header, ipv4::Protocol::UDP);
            payload.to_vec()
        };
        let udp = udp::Packet::new_checked(&datagram[..]).unwrap();
        assert_eq!(udp.dst_port(), 1701);
        let l2tp = udp.payload().to_vec();
        if Packet::new_checked(&l2tp[..]).unwrap().is_control() {
            out.push((frame, spi, l2tp));
        }
    }
    out
}

/// (type, Ns, Nr) of the non-ZLB messages in `messages`.
fn summary(messages: &[Vec<u8>]) -> Vec<(MessageType, u16, u16)> {
    messages
        .iter()
        .filter_map(|m| kind(m).map(|k| (k, seq(m).0, seq(m).1)))
        .collect()
}

fn replay(name: &str, text: &str) {
    let messages = control_messages(text);
    let client_spi = messages
        .iter()
        .find(|(_, _, m)| kind(m) == Some(MessageType::Sccrq))
        .map(|(_, spi, _)| *spi)
        .unwrap();
    let peer = PeerKey {
        addr: SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), 4500),
        spi: client_spi,
    };
    let mut lns = Lns::with_entropy(LnsConfig::default(), Box::new(SeededEntropy::new(5)));
    let mut now = Instant::now();
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let (mut our_tunnel, mut our_session) = (0u16, 0u16);
    let mut lac_session = 0u16;
    for (frame, _, message) in messages.iter().filter(|(_, spi, _)| *spi == client_spi) {
        let mut bytes = message.clone();
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        // The captured LNS chose other ids than ours.
        if packet.tunnel_id() != 0 {
            packet.set_tunnel_id(our_tunnel);
        }
        if packet.session_id() != 0 {
            packet.set_session_id(our_session);
        }
        lns.input(now, peer, &bytes, 0);
        now += Duration::from_millis(300);
        lns.handle_timeout(now);
        let mut answer = Vec::new();
        while let Some(event) = lns.poll_event() {
            match event {
                Event::Transmit { peer: to, bytes } => {
                    assert_eq!(to, peer);
                    answer.push(bytes);
                }
                other => events.push(other),
            }
        }
        let first = answer.first().cloned().unwrap_or_default();
        match kind(message) {
            Some(MessageType::Sccrq) => {
                assert_eq!(
                    kind(&first),
                    Some(MessageType::Sccrp),
                    "{name} frame {frame}"
                );
                let sccrp = Packet::new_checked(&first[..]).unwrap();
                let assigned =
                    super::raw::avp_u16(message, crate::wire::l2tp::avp_type::ASSIGNED_TUNNEL_ID);
                assert_eq!(Some(sccrp.tunnel_id()), assigned);
                our_tunnel =
                    super::raw::avp_u16(&first, crate::wire::l2tp::avp_type::ASSIGNED_TUNNEL_ID)
                        .unwrap();
            }
            Some(MessageType::Scccn) => {
                assert!(
                    events.iter().any(|e| matches!(e, Event::TunnelUp { .. })),
                    "{name}"
                );
            }
            Some(MessageType::Icrq) => {
                assert_eq!(
                    kind(&first),
                    Some(MessageType::Icrp),
                    "{name} frame {frame}"
                );
                lac_session =
                    super::raw::avp_u16(message, crate::wire::l2tp::avp_type::ASSIGNED_SESSION_ID)
                        .unwrap();
                assert_eq!(
                    Packet::new_checked(&first[..]).unwrap().session_id(),
                    lac_session
                );
                our_session =
                    super::raw::avp_u16(&first, crate::wire::l2tp::avp_type::ASSIGNED_SESSION_ID)
                        .unwrap();
            }
            Some(MessageType::Iccn) => {
                let up = events.iter().find_map(|e| match e {
                    Event::SessionUp(info) => Some(info.clone()),
                    _ => None,
                });
                let up = up.unwrap_or_else(|| panic!("{name}: no SessionUp after ICCN"));
                assert_eq!(
                    (up.local_tunnel_id, up.local_session_id),
                    (our_tunnel, our_session)
                );
                assert_eq!(up.peer_session_id, lac_session);
                assert_eq!(up.peer, peer);
            }
            Some(MessageType::Cdn) => {
                let cause = events.iter().find_map(|e| match e {
                    Event::SessionDown { cause, .. } => Some(cause.clone()),
                    _ => None,
                });
                assert!(cause.unwrap().starts_with("peer CDN: result"), "{name}");
            }
            Some(MessageType::StopCcn) => {
                let cause = events.iter().find_map(|e| match e {
                    Event::TunnelDown { cause, .. } => Some(cause.clone()),
                    _ => None,
                });
                assert!(
                    cause.unwrap().starts_with("peer StopCCN: result 1"),
                    "{name}"
                );
            }
            _ => {}
        }
        sent.extend(answer);
    }
    let stats = lns.stats();
    assert_eq!(stats.tunnels_established, 1, "{name}");
    assert_eq!(stats.sessions_established, 1, "{name}");
    assert_eq!(
        stats.malformed + stats.invalid + stats.unexpected + stats.bad_nr,
        0,
        "{name}: {stats:?}"
    );
    // Our answers carry the same sequence numbers as the captured xl2tpd LNS's.
    let theirs: Vec<Vec<u8>> = messages
        .iter()
        .filter(|(_, spi, _)| *spi != client_spi)
        .map(|(_, _, m)| m.clone())
        .collect();
    assert_eq!(summary(&sent), summary(&theirs), "{name}");
}

#[test]
fn captured_xl2tpd_lac_is_accepted() {
    for (name, text) in CAPTURES {
        replay(name, text);
    }
}

// ikev1-natt frame 10 (xl2tpd's SCCRQ), header and AVPs as tshark shows them.
#[test]
fn captured_sccrq_reads_as_tshark_says() {
    let messages = control_messages(CAPTURES[0].1);
    let (frame, spi, sccrq) = &messages[0];
    assert_eq!((*frame, *spi), (10, 0xcda2_a172));
    let packet = Packet::new_checked(&sccrq[..]).unwrap();
    let message = crate::l2tp::message::parse(&packet, None).unwrap();
    assert_eq!(message.problem, None);
    assert_eq!(message.avps.host_name.as_deref(), Some(&b"(none)"[..]));
    assert_eq!(message.avps.assigned_tunnel_id, Some(31440));
    assert_eq!(message.avps.receive_window_size, Some(4));
    assert_eq!(message.avps.protocol_version, Some([1, 0]));
    assert_eq!(message.avps.framing_capabilities, Some(3));
}

/// xl2tpd 1.3.18 as LNS (loopback, `challenge = yes`, `hidden bit = yes`, secret
/// "golden-tunnel-secret") answered an SCCRQ with Challenge 20 21 .. 2f with this
/// SCCRP: a visible Random Vector, the Challenge Response, its own Challenge.
const XL2TPD_SCCRP: &str = concat!(
    "c80200a5123400000000000180080000000000028016000000248b92e5a9a3f0e6f7ce4288c316dc3b7a",
    "8008000000020100800a0000000300000003800a00000004000000000008000000060690800800000007",
    "766d00130000000878656c6572616e63652e636f6d8008000000094ee180080000000a00048016000000",
    "0d959aacf949261d59c92a98cc5f9ef9cb80160000000b46219b04a33d571f4b6072516d2c004b",
);

/// The ICRQ xl2tpd then accepted (its ICRP went to session 0x5678): Assigned
/// Session ID and Call Serial Number hidden with Random Vector 11 .. 11.
const XL2TPD_ACCEPTED_ICRQ: &str = concat!(
    "c80200404ee1000000020001800800000000000a80160000002411111111111111111111111111111111",
    "c00a0000000e5728d514c00c0000000fe48c62dd00ea",
);

#[test]
fn xl2tpd_tunnel_authentication_and_hidden_avps() {
    use super::raw::{Raw, avp_u16, sccrq};
    use crate::l2tp::build::Builder;
    use crate::l2tp::{Secret, TunnelConfig, challenge_response};
    use crate::wire::l2tp::avp_type;

    let secret = b"golden-tunnel-secret";
    // xl2tpd's SCCRP reads as a valid SCCRP answering our challenge.
    let sccrp = hex(XL2TPD_SCCRP);
    let packet = Packet::new_checked(&sccrp[..]).unwrap();
    let message = crate::l2tp::message::parse(&packet, Some(secret)).unwrap();
    assert_eq!(message.problem, None);
    let challenge: Vec<u8> = (0x20u8..0x30).collect();
    assert_eq!(
        message.avps.challenge_response.as_deref(),
        Some(&challenge_response(2, secret, &challenge)[..])
    );

    // Our LNS with the same secret unhides the ICRQ xl2tpd accepted.
    let config = LnsConfig {
        tunnel: TunnelConfig {
            secret: Some(Secret::new(&secret[..])),
            ..TunnelConfig::default()
        },
        ..LnsConfig::default()
    };
    let mut raw = Raw::with(Lns::with_entropy(config, Box::new(SeededEntropy::new(8))));
    let out = raw.send(sccrq(), 0);
    let sccrp = Raw::find(&out, MessageType::Sccrp).unwrap();
    raw.lns_tunnel = avp_u16(&sccrp, avp_type::ASSIGNED_TUNNEL_ID).unwrap();
    let theirs = super::raw::avp_value(&sccrp, avp_type::CHALLENGE).unwrap();
    let mut scccn = Builder::new(MessageType::Scccn);
    scccn.bytes(
        true,
        avp_type::CHALLENGE_RESPONSE,
        &challenge_response(3, secret, &theirs),
    );
    raw.send(scccn, 0);
    let mut icrq = hex(XL2TPD_ACCEPTED_ICRQ);
    let mut packet = Packet::new_unchecked(&mut icrq[..]);
    packet.set_tunnel_id(raw.lns_tunnel);
    let sequence = crate::wire::l2tp::Sequence {
        ns: raw.ns,
        nr: raw.nr,
    };
    packet.set_sequence(sequence).unwrap();
    let out = raw.input(&icrq);
    let icrp = Raw::find(&out, MessageType::Icrp).expect("ICRP");
    assert_eq!(Packet::new_checked(&icrp[..]).unwrap().session_id(), 0x5678);
}
