//! Garbage never panics a link, whatever phase it is in, and never takes a healthy
//! link down unless it is a well-formed request to do so.

use std::time::Duration;

use proptest::prelude::*;

use super::sim::{ALL, Sim};
use crate::ppp::fsm::packet;
use crate::ppp::{AuthMethod, Link, SeededEntropy, frame};
use crate::wire::ppp::{Protocol, code};

/// A link pair driven to a phase: 0 fresh, 1 authenticating (backend slow), 2 up.
fn sim_at(phase: u8, method: AuthMethod) -> Sim {
    let mut sim = Sim::pair(method);
    match phase {
        0 => {}
        1 => {
            sim.auth_delay = Duration::from_secs(20);
            sim.run_until(Duration::from_secs(5), |s| {
                s.pairs[0].server.phase() == crate::ppp::Phase::Authenticate
            });
        }
        _ => {
            assert!(sim.run_until_up());
        }
    }
    sim
}

/// Frames a fuzzer should try: any protocol the link knows, random bodies.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    let protocol = prop_oneof![
        Just(Protocol::LCP),
        Just(Protocol::PAP),
        Just(Protocol::CHAP),
        Just(Protocol::IPCP),
        Just(Protocol::CCP),
        Just(Protocol::IPV6CP),
        Just(Protocol::IPV4),
        any::<u16>().prop_map(|p| Protocol(p | 1)),
    ];
    let body = prop_oneof![
        // Random bytes.
        proptest::collection::vec(any::<u8>(), 0..80),
        // A well-formed header with random code and data (options often truncated).
        (
            1u8..=12,
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..60)
        )
            .prop_map(|(c, id, data)| packet(c, id, &data)),
        // A header whose Length lies.
        (
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(c, id, len, data)| {
                let mut p = vec![c, id];
                p.extend(len.to_be_bytes());
                p.extend(data);
                p
            }),
    ];
    (protocol, body).prop_map(|(p, b)| frame(p, &b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic(phase in 0u8..3, m in 0usize..3,
                                junk in proptest::collection::vec(
                                    proptest::collection::vec(any::<u8>(), 0..64), 1..20)) {
        let mut sim = sim_at(phase, ALL[m]);
        let now = sim.now;
        for j in &junk {
            sim.pairs[0].server.input(now, j);
            sim.pairs[0].client.input(now, j);
        }
        sim.run_quiet(Duration::from_secs(30));
    }

    #[test]
    fn structured_garbage_never_panics(phase in 0u8..3, m in 0usize..3,
                                       frames in proptest::collection::vec(framed(), 1..30)) {
        let mut sim = sim_at(phase, ALL[m]);
        let now = sim.now;
        for f in &frames {
            sim.pairs[0].server.input(now, f);
            sim.pairs[0].client.input(now, f);
            sim.drain();
        }
        sim.run_quiet(Duration::from_secs(60));
        // Whatever happened, a link that went down said why and gave its address back.
        let pair = &sim.pairs[0];
        if pair.server_down().is_some() {
            prop_assert_eq!(sim.pool.in_use(), 0);
        }
    }

    #[test]
    fn truncated_real_frames_never_panic(seed in any::<u64>(), cut in 0usize..40) {
        // Every frame of a real exchange, cut short, fed to a fresh server.
        let t = std::time::Instant::now();
        let mut link = Link::server_with_entropy(
            super::sim::server_config(&ALL), t, Box::new(SeededEntropy::new(seed)));
        for n in [19, 22, 24, 27, 29, 30, 32, 38] {
            let f = super::capture_ppp(super::NATT, n);
            link.input(t, &f[..f.len().min(cut)]);
        }
        while link.poll_event().is_some() {}
    }
}

#[test]
fn unknown_protocols_are_rejected_once_up_and_the_link_stays_up() {
    let mut sim = sim_at(2, AuthMethod::MsChapV2);
    let now = sim.now;
    // CCP and IPv6CP, as Windows sends them.
    sim.pairs[0].server.input(
        now,
        &frame(Protocol::CCP, &packet(code::CONFIGURE_REQUEST, 1, &[])),
    );
    sim.pairs[0].server.input(
        now,
        &frame(Protocol::IPV6CP, &packet(code::CONFIGURE_REQUEST, 1, &[])),
    );
    assert_eq!(sim.pairs[0].server.stats().protocol_rejected, 2);
    sim.run_quiet(Duration::from_secs(10));
    assert!(sim.pairs[0].server.is_up() && sim.pairs[0].client.is_up());
    // An unknown LCP code is Code-Rejected, and the link stays up.
    let now = sim.now;
    sim.pairs[0]
        .server
        .input(now, &frame(Protocol::LCP, &packet(0x42, 7, b"?")));
    sim.run_quiet(Duration::from_secs(10));
    assert!(sim.pairs[0].server.is_up() && sim.pairs[0].client.is_up());
}
