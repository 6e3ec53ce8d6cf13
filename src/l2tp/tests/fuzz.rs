//! Garbage, truncated and mutated control messages never panic either machine.

use proptest::prelude::*;

use super::raw::*;
use crate::l2tp::message;
use crate::l2tp::{Lac, LacConfig, SeededEntropy, TunnelConfig};
use crate::wire::l2tp::{MessageType, Packet};
use crate::wire::test_util::natt_l2tp;

use super::harness::{client_key, lns_key};

/// Captured xl2tpd LAC messages to mutate: SCCRQ (ikev1-natt frame 10), ICCN (17),
/// StopCCN (42), plus an ICRQ of ours.
fn seeds() -> Vec<Vec<u8>> {
    let mut icrq = icrq(RAW_SESSION, 1).finish(0, 0).unwrap();
    Packet::new_unchecked(&mut icrq[..])
        .set_sequence(crate::wire::l2tp::Sequence { ns: 2, nr: 1 })
        .unwrap();
    vec![natt_l2tp(10), natt_l2tp(17), natt_l2tp(42), icrq]
}

fn established() -> Raw {
    let mut raw = Raw::new();
    raw.establish();
    raw
}

proptest! {
    #[test]
    fn arbitrary_bytes_into_the_lns(data in proptest::collection::vec(any::<u8>(), 0..200), to_tunnel in any::<bool>()) {
        let mut raw = established();
        let mut data = data;
        if data.len() >= 12 {
            data[0] = 0xc8; // T, L, S: a control header, to get past the first check
            data[1] = 0x02;
            let len = u16::try_from(data.len()).unwrap().to_be_bytes();
            data[2..4].copy_from_slice(&len);
            if to_tunnel {
                data[4..6].copy_from_slice(&raw.lns_tunnel.to_be_bytes());
                data[8..10].copy_from_slice(&raw.ns.to_be_bytes());
            }
        }
        raw.input(&data);
        raw.now += std::time::Duration::from_secs(100);
        raw.lns.handle_timeout(raw.now);
        raw.drain();
        let stats = raw.lns.stats();
        prop_assert!(stats.tunnels <= 1);
    }

    #[test]
    fn mutated_captures_into_the_lns(seed in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut raw = Raw::new();
        let mut bytes = seeds()[seed].clone();
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] ^= value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        raw.input(&bytes);
        // Also against an established tunnel.
        let mut raw = established();
        if bytes.len() >= 8 {
            Packet::new_unchecked(&mut bytes[..]).set_tunnel_id(raw.lns_tunnel);
        }
        raw.input(&bytes);
        raw.drain();
    }

    #[test]
    fn arbitrary_bytes_into_the_lac(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        let now = std::time::Instant::now();
        let config = LacConfig { tunnel: TunnelConfig::default(), peer: lns_key() };
        let mut lac = Lac::with_entropy(now, config, Box::new(SeededEntropy::new(1)));
        let mut data = data;
        if data.len() >= 12 {
            data[0] = 0xc8;
            data[1] = 0x02;
            let len = u16::try_from(data.len()).unwrap().to_be_bytes();
            data[2..4].copy_from_slice(&len);
            data[4..6].copy_from_slice(&lac.local_tunnel_id().to_be_bytes());
            data[8..12].copy_from_slice(&[0, 0, 0, 1]);
        }
        lac.input(now, &data);
        lac.handle_timeout(now + std::time::Duration::from_secs(40));
        while lac.poll_event().is_some() {}
    }

    #[test]
    fn arbitrary_avps_parse_with_a_secret(avps in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = crate::l2tp::build::Builder::new(MessageType::Hello).finish(1, 0).unwrap();
        bytes.extend_from_slice(&avps);
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        bytes[2..4].copy_from_slice(&len);
        if let Ok(packet) = Packet::new_checked(&bytes[..]) {
            let _ = message::parse(&packet, Some(b"secret"));
            let _ = message::parse(&packet, None);
        }
    }
}

#[test]
fn truncated_captured_messages_at_every_length() {
    for seed in seeds() {
        for len in 0..seed.len() {
            let mut raw = Raw::new();
            raw.key = client_key(0);
            raw.input(&seed[..len]);
            assert_eq!(
                raw.lns.stats().tunnels,
                0,
                "a truncated SCCRQ creates nothing"
            );
        }
    }
}
