//! Tests of the whole PPP stack: the golden captures ([`capture`]), server and client
//! links driven against each other with a fake clock ([`sim`], [`scenarios`],
//! [`faults`]) and garbage input ([`garbage`]).

use std::collections::VecDeque;

use crate::ppp::{Entropy, SeededEntropy};
use crate::wire::test_util::hex;
use crate::wire::{esp, l2tp, udp};

mod capture;
mod faults;
mod garbage;
mod scenarios;
pub(crate) mod sim;

/// The decrypted.txt of the ikev1-natt capture (MS-CHAPv2, alice/alicepass).
pub(crate) const NATT: &str = include_str!("../../../tests/data/ikev1-natt.decrypted.txt");
/// The decrypted.txt of the CBC capture (CHAP-MD5, alice/alicepass).
pub(crate) const CBC: &str =
    include_str!("../../../tests/data/ikev1-psk-transport-cbc-sha1-modp2048.decrypted.txt");

/// The PPP frame (from `FF 03` on) carried by ESP frame `number` of a decrypted.txt:
/// plaintext = UDP | L2TP data message | PPP, then the ESP trailer.
pub(crate) fn capture_ppp(decrypted: &str, number: usize) -> Vec<u8> {
    let prefix = format!("{number} | ESP |");
    let line = decrypted
        .lines()
        .find(|l| l.starts_with(&prefix))
        .expect("frame in decrypted.txt");
    let plaintext = hex(line.rsplit(" | ").next().expect("plaintext column").trim());
    let (payload, _) = esp::split_plaintext(&plaintext).expect("ESP trailer");
    let udp = udp::Packet::new_checked(payload).expect("UDP");
    let l2tp = l2tp::Packet::new_checked(udp.payload()).expect("L2TP");
    assert!(!l2tp.is_control(), "frame {number} is an L2TP data message");
    l2tp.payload().to_vec()
}

/// Entropy that hands out scripted octets first (to replay a capture's challenges),
/// then seeded pseudo-random ones.
pub(crate) struct Scripted {
    queue: VecDeque<u8>,
    rest: SeededEntropy,
}

impl Scripted {
    pub(crate) fn new(script: &[u8]) -> Scripted {
        Scripted {
            queue: script.iter().copied().collect(),
            rest: SeededEntropy::new(99),
        }
    }
}

impl Entropy for Scripted {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            match self.queue.pop_front() {
                Some(v) => *b = v,
                None => self.rest.fill(std::slice::from_mut(b)),
            }
        }
    }
}
