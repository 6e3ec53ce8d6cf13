//! Loss, duplication and reordering between server and client links, and a line
//! looped back onto itself.

use std::time::Duration;

use super::sim::{ALL, Dir, Fault, Sim, client_config, server_config};
use crate::ppp::{DownReason, Event, Link, SeededEntropy};

fn assert_up_with_addresses(sim: &Sim, what: &str) {
    let pair = &sim.pairs[0];
    assert!(
        pair.both_up(),
        "{what}: server {:?} client {:?}",
        pair.server_seen,
        pair.client_seen
    );
    let (s, c) = (pair.server_up().unwrap(), pair.client_up().unwrap());
    assert_eq!(s.peer_address, c.local_address, "{what}");
    assert_eq!(s.local_address, c.peer_address, "{what}");
    assert!(
        pair.server_down().is_none() && pair.client_down().is_none(),
        "{what}"
    );
    assert_eq!(sim.pool.in_use(), 1, "{what}");
}

/// Every n-th frame of each direction lost, n from 3 (n = 2 is not survivable: each
/// side sends Configure-Request, Configure-Ack, Configure-Request, … so dropping every
/// other frame drops every Ack, whatever the timers do).
#[test]
fn every_nth_frame_lost_each_way_is_recovered_by_retransmission() {
    for method in ALL {
        for n in 3..=7 {
            for offset in 0..n {
                let mut sim = Sim::new();
                sim.fault = Box::new(move |_, _, i, _| {
                    if i % n == offset {
                        Fault::Drop
                    } else {
                        Fault::Deliver
                    }
                });
                sim.connect(
                    server_config(&[method]),
                    client_config("alice", "alicepass", &[method]),
                );
                sim.run_until_up();
                assert_up_with_addresses(&sim, &format!("{method} drop {offset} mod {n}"));
            }
        }
    }
}

#[test]
fn every_frame_duplicated_changes_nothing() {
    for method in ALL {
        let mut sim = Sim::new();
        sim.fault = Box::new(|_, _, _, _| Fault::Duplicate);
        sim.connect(
            server_config(&[method]),
            client_config("alice", "alicepass", &[method]),
        );
        assert!(sim.run_until_up(), "{method}");
        assert_up_with_addresses(&sim, &format!("{method} duplicated"));
        // Stays up through keepalives: duplicates do not renegotiate.
        sim.advance(Duration::from_secs(120));
        assert!(sim.pairs[0].server.is_up() && sim.pairs[0].client.is_up());
    }
}

#[test]
fn reordered_frames_still_converge() {
    for method in ALL {
        for k in 2..=4 {
            let mut sim = Sim::new();
            // Every k-th frame arrives after the next few.
            sim.fault = Box::new(move |_, _, i, _| {
                if i % k == 0 {
                    Fault::Delay(Duration::from_millis(25))
                } else {
                    Fault::Deliver
                }
            });
            sim.connect(
                server_config(&[method]),
                client_config("alice", "alicepass", &[method]),
            );
            sim.run_until_up();
            assert_up_with_addresses(&sim, &format!("{method} reorder every {k}"));
        }
    }
}

#[test]
fn random_loss_duplication_and_delay_converge_or_fail_cleanly() {
    let mut up = 0;
    for seed in 0..60 {
        let mut rng = SeededEntropy::new(seed);
        let mut sim = Sim::new();
        sim.fault = Box::new(move |_, _, _, _| match rng.next_u64() % 10 {
            0 | 1 => Fault::Drop,
            2 => Fault::Duplicate,
            3 => Fault::Delay(Duration::from_millis(rng.next_u64() % 200)),
            _ => Fault::Deliver,
        });
        let method = ALL[seed as usize % 3];
        sim.connect(
            server_config(&ALL),
            client_config("alice", "alicepass", &[method]),
        );
        sim.run_until(Duration::from_secs(300), |s| {
            let p = &s.pairs[0];
            p.both_up() || (p.server_down().is_some() && p.client_down().is_some())
        });
        let pair = &sim.pairs[0];
        if pair.both_up() {
            up += 1;
            assert_up_with_addresses(&sim, &format!("seed {seed}"));
        } else {
            // A failure must be a clean one: a cause, and the address back.
            sim.run_quiet(Duration::from_secs(600));
            assert!(pair_down_cleanly(&sim), "seed {seed}");
        }
    }
    assert!(up >= 57, "only {up} of 60 came up with 20% loss");
}

fn pair_down_cleanly(sim: &Sim) -> bool {
    let p = &sim.pairs[0];
    p.server_down().is_some() && sim.pool.in_use() == 0
}

#[test]
fn a_dead_peer_times_out_lcp() {
    let mut sim = Sim::new();
    sim.fault = Box::new(|_, dir, _, _| match dir {
        Dir::ToServer => Fault::Drop,
        Dir::ToClient => Fault::Deliver,
    });
    sim.connect(
        server_config(&ALL),
        client_config("alice", "alicepass", &ALL),
    );
    sim.run_quiet(Duration::from_secs(120));
    let pair = &sim.pairs[0];
    assert_eq!(
        pair.server_down(),
        Some(&DownReason::NegotiationTimeout("LCP"))
    );
    assert_eq!(
        pair.server_down().unwrap().to_string(),
        "LCP negotiation timeout"
    );
}

#[test]
fn looped_back_line_is_detected() {
    let start = std::time::Instant::now();
    let mut link =
        Link::server_with_entropy(server_config(&ALL), start, Box::new(SeededEntropy::new(4)));
    let mut now = start;
    let mut down = None;
    for _ in 0..1000 {
        let mut frames = Vec::new();
        while let Some(event) = link.poll_event() {
            match event {
                Event::Send(f) => frames.push(f),
                Event::Down(why) => down = Some(why),
                _ => {}
            }
        }
        if frames.is_empty() {
            match link.next_timeout() {
                Some(t) => {
                    now = t;
                    link.handle_timeout(now);
                }
                None => break,
            }
        }
        for f in frames {
            link.input(now, &f);
        }
    }
    assert_eq!(down, Some(DownReason::Loopback));
    assert!(
        now - start < Duration::from_secs(10),
        "detected without waiting"
    );
}
