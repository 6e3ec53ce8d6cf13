//! IKEv1 handshakes per control-core second, and memory per established SA.
//!
//! The gateway's responder and the project's initiator run complete Main Mode + Quick
//! Mode exchanges in memory, one after another, while the responder keeps every SA it
//! established (so the rate is measured from the first thousand to ten thousand held).
//! Only the time spent inside the responder is counted as the gateway's: the clients'
//! DH work is theirs. Memory is the heap the responder holds per established ISAKMP
//! SA + ESP pair (resident memory growth over 10 000 SAs), plus the data plane's two `Sa` per pair.
//!
//! `cargo bench --bench ike_setup` (about 30 s). Not a criterion bench: it reports a
//! rate per thousand SAs held and bytes, not a time per iteration.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use sekisho::crypto::Transform;
use sekisho::ike::v1::crypto::{DhGroup, HashAlg, IkeCipher};
use sekisho::ike::v1::initiator::{Client, ClientConfig};
use sekisho::ike::v1::proposal::Phase1Choice;
use sekisho::ike::v1::responder::{Action, Datagram, Responder, ResponderConfig, SpiSource};
use zeroize::Zeroizing;

/// Resident set size of this process in bytes (/proc/self/statm, pages of 4 KiB).
fn rss() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

struct Counter(u32);

impl SpiSource for Counter {
    fn allocate(&mut self, _w: u16) -> Option<u32> {
        self.0 += 1;
        Some(self.0)
    }
    fn release(&mut self, _spi: u32) {}
}

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const PSK: &[u8] = b"benchmark-psk-0123456789";

/// CPU time of this thread (immune to other processes on a shared machine).
fn cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// One complete MM + QM; returns the CPU time spent in the responder.
fn handshake(r: &mut Responder, k: u32, group: DhGroup, now: Instant) -> Duration {
    let local = SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + k), 500);
    let (mut c, first) = Client::start(
        ClientConfig {
            local,
            gateway: SocketAddrV4::new(GW, 500),
            psk: PSK.to_vec(),
            ike: vec![Phase1Choice {
                cipher: IkeCipher::AesCbc { key_len: 16 },
                hash: HashAlg::Sha256,
                group,
                lifetime: Duration::from_secs(28_800),
            }],
            esp: vec![Transform::Aes128Gcm],
            esp_lifetime: Duration::from_secs(3600),
            initial_contact: true,
            natt_port: 4500,
        },
        k,
    )
    .expect("client");
    let mut spent = Duration::ZERO;
    let mut pending = vec![first];
    while let Some(out) = pending.pop() {
        let t = cpu();
        r.input(
            now,
            Datagram {
                worker: 0,
                peer: out.from,
                local: out.to,
                data: &out.data,
            },
        );
        let mut replies = Vec::new();
        while let Some(a) = r.poll_action() {
            if let Action::Send { data, .. } = a {
                replies.push(data);
            }
        }
        spent += cpu().saturating_sub(t);
        for reply in replies {
            if let Some(next) = c.input(&reply).expect("client input") {
                pending.push(next);
            }
        }
    }
    assert!(c.is_up(), "handshake {k} failed");
    spent
}

fn main() {
    let now = Instant::now();
    println!("IKEv1 Main Mode + Quick Mode, responder CPU time only (one core), SAs kept:");
    println!("| group | SAs held | responder µs/setup | setups/s per core |");
    println!("|---|---|---|---|");
    for group in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Modp2048] {
        let mut cfg = ResponderConfig::new(GW, Some(Zeroizing::new(PSK.to_vec())));
        cfg.dh_per_second = u32::MAX;
        let mut r = Responder::new(cfg, Box::new(Counter(0x100)));
        let total = if group == DhGroup::Modp2048 {
            3000
        } else {
            10_000
        };
        let mut k = 0u32;
        for mark in [1000u32, 2000, 5000, 10_000]
            .into_iter()
            .filter(|m| *m <= total)
        {
            let mut spent = Duration::ZERO;
            let start = k;
            while k < mark {
                spent += handshake(&mut r, k, group, now);
                k += 1;
            }
            let n = f64::from(mark - start);
            let us = spent.as_secs_f64() * 1e6 / n;
            println!("| {} | {mark} | {us:.0} | {:.0} |", group.name(), 1e6 / us);
        }
    }

    // Memory: responder state per established ISAKMP SA + ESP pair.
    let mut cfg = ResponderConfig::new(GW, Some(Zeroizing::new(PSK.to_vec())));
    cfg.dh_per_second = u32::MAX;
    let mut r = Responder::new(cfg, Box::new(Counter(0x100)));
    let n = 10_000u32;
    for k in 0..200 {
        handshake(&mut r, k, DhGroup::Curve25519, now);
    }
    let before = rss();
    for k in 200..200 + n {
        handshake(&mut r, k, DhGroup::Curve25519, now);
    }
    let after = rss();
    let per = (after - before) as f64 / f64::from(n);
    println!();
    println!(
        "responder memory (RSS growth) per established ISAKMP SA + ESP pair: {per:.0} B ({} SAs)",
        r.ike_sas()
    );
    println!(
        "data-plane SA pair: 2 × {} B (Sa) + table slots",
        std::mem::size_of::<sekisho::esp::sa::Sa>()
    );
}
