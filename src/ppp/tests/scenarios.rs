//! Server and client links against each other on a clean network.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::sim::{ALL, DNS, Dir, Fault, LOCAL, Seen, Sim, client_config, server_config};
use crate::aaa::users::REJECT_REASON;
use crate::ppp::{AuthMethod, DownReason, Phase};

const FIRST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);

#[test]
fn each_method_brings_both_sides_up_with_the_right_addresses() {
    for method in ALL {
        let mut sim = Sim::pair(method);
        assert!(
            sim.run_until_up(),
            "{method}: {:?}",
            sim.pairs[0].server_seen
        );
        let pair = &sim.pairs[0];
        let server = pair.server_up().unwrap();
        assert_eq!(server.peer_address, FIRST, "{method}");
        assert_eq!(server.local_address, LOCAL);
        assert_eq!(server.dns, [DNS]);
        assert_eq!(server.user.as_deref(), Some("alice"));
        assert_eq!(server.auth, Some(method));
        assert_eq!(server.mru, 1400);
        let client = pair.client_up().unwrap();
        assert_eq!(client.local_address, FIRST, "{method}");
        assert_eq!(client.peer_address, LOCAL);
        assert_eq!(client.dns, [DNS]);
        assert_eq!(client.auth, Some(method));
        assert!(pair.server.is_up() && pair.client.is_up());
        assert_eq!(pair.server.phase(), Phase::Network);
        assert_eq!(sim.pool.in_use(), 1);
        // On a clean network this takes a handful of round trips, no retransmission.
        assert!(sim.now - sim.start < Duration::from_secs(1), "{method}");
    }
}

#[test]
fn server_falls_back_to_what_the_client_supports() {
    for (client, expect) in [
        (vec![AuthMethod::Pap], AuthMethod::Pap),
        (vec![AuthMethod::Chap], AuthMethod::Chap),
        (vec![AuthMethod::Pap, AuthMethod::Chap], AuthMethod::Pap),
    ] {
        let mut sim = Sim::new();
        sim.connect(
            server_config(&ALL),
            client_config("alice", "alicepass", &client),
        );
        assert!(sim.run_until_up(), "{client:?}");
        assert_eq!(sim.pairs[0].server_up().unwrap().auth, Some(expect));
    }
}

#[test]
fn no_common_method_takes_both_sides_down() {
    let mut sim = Sim::new();
    sim.connect(
        server_config(&[AuthMethod::MsChapV2]),
        client_config("alice", "alicepass", &[AuthMethod::Pap]),
    );
    sim.run_quiet(Duration::from_secs(60));
    let pair = &sim.pairs[0];
    assert_eq!(pair.server_down(), Some(&DownReason::NoCommonAuth));
    assert_eq!(
        pair.client_down(),
        Some(&DownReason::PeerTerminated(
            "no common authentication method".into()
        ))
    );
    assert!(pair.both_finished());
}

#[test]
fn static_user_address_is_handed_out() {
    let mut sim = Sim::new();
    sim.connect(server_config(&ALL), client_config("bob", "bobpass", &ALL));
    assert!(sim.run_until_up());
    let up = sim.pairs[0].client_up().unwrap();
    assert_eq!(up.local_address, Ipv4Addr::new(10, 99, 0, 200));
}

#[test]
fn wrong_password_fails_with_a_cause_on_both_sides() {
    for method in ALL {
        let mut sim = Sim::new();
        sim.connect(
            server_config(&[method]),
            client_config("alice", "wrong", &[method]),
        );
        sim.run_quiet(Duration::from_secs(60));
        let pair = &sim.pairs[0];
        assert_eq!(
            pair.server_down(),
            Some(&DownReason::AuthFailed(REJECT_REASON.into())),
            "{method}"
        );
        let client = pair.client_down().unwrap().to_string();
        assert!(
            client.starts_with("authentication failed (") && client.contains("failed"),
            "{method}: {client}"
        );
        assert!(pair.both_finished());
        assert!(pair.server_up().is_none() && pair.client_up().is_none());
        assert_eq!(sim.pool.in_use(), 0, "nothing held after a reject");
    }
    // The MS-CHAPv2 Failure is what Windows expects.
    let mut sim = Sim::new();
    let failures = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = failures.clone();
    sim.fault = Box::new(move |_, dir, _, frame: &[u8]| {
        if dir == Dir::ToClient && frame[2..5] == [0xc2, 0x23, 4] {
            seen.borrow_mut().push(frame[8..].to_vec());
        }
        Fault::Deliver
    });
    sim.connect(
        server_config(&[AuthMethod::MsChapV2]),
        client_config("alice", "wrong", &ALL),
    );
    sim.run_quiet(Duration::from_secs(60));
    let text = String::from_utf8(failures.borrow()[0].clone()).unwrap();
    assert!(text.starts_with("E=691 R=0 C="), "{text}");
}

#[test]
fn unknown_user_is_rejected_like_a_wrong_password() {
    let mut sim = Sim::new();
    sim.connect(
        server_config(&ALL),
        client_config("mallory", "alicepass", &ALL),
    );
    sim.run_quiet(Duration::from_secs(60));
    assert_eq!(
        sim.pairs[0].server_down(),
        Some(&DownReason::AuthFailed(REJECT_REASON.into()))
    );
}

#[test]
fn client_terminate_reaches_the_server_with_its_text() {
    let mut sim = Sim::pair(AuthMethod::MsChapV2);
    assert!(sim.run_until_up());
    let now = sim.now;
    sim.pairs[0].client.close(now, "User request");
    sim.run_quiet(Duration::from_secs(60));
    let pair = &sim.pairs[0];
    assert_eq!(
        pair.client_down(),
        Some(&DownReason::Closed("User request".into()))
    );
    assert_eq!(
        pair.server_down(),
        Some(&DownReason::PeerTerminated("User request".into()))
    );
    assert_eq!(
        pair.server_down().unwrap().to_string(),
        "peer terminated (User request)"
    );
    assert!(pair.both_finished());
    assert_eq!(sim.pool.in_use(), 0, "address released on Down");
    // The server finishes one Restart period after acking (zrc, RFC 1661 §4.4).
    let finished = pair
        .server_seen
        .iter()
        .find(|(_, s)| *s == Seen::Finished)
        .unwrap()
        .0;
    let down = pair
        .server_seen
        .iter()
        .find(|(_, s)| matches!(s, Seen::Down(_)))
        .unwrap()
        .0;
    assert_eq!(finished - down, Duration::from_secs(3));
}

#[test]
fn admin_close_terminates_the_client() {
    let mut sim = Sim::pair(AuthMethod::Chap);
    assert!(sim.run_until_up());
    let now = sim.now;
    sim.pairs[0].server.close(now, "admin close");
    sim.run_quiet(Duration::from_secs(60));
    let pair = &sim.pairs[0];
    assert_eq!(pair.server_down().unwrap().to_string(), "admin close");
    assert_eq!(
        pair.client_down(),
        Some(&DownReason::PeerTerminated("admin close".into()))
    );
    assert!(pair.both_finished());
    assert!(pair.server.next_timeout().is_none());
}

#[test]
fn echo_keepalives_hold_the_link_and_silence_takes_it_down() {
    let mut sim = Sim::pair(AuthMethod::Pap);
    assert!(sim.run_until_up());
    // Ten minutes of keepalives both ways: still up.
    sim.advance(Duration::from_secs(600));
    assert!(sim.pairs[0].server.is_up() && sim.pairs[0].client.is_up());
    // The client vanishes: nothing reaches the server any more.
    sim.fault = Box::new(|_, dir, _, _| match dir {
        Dir::ToServer => Fault::Drop,
        Dir::ToClient => Fault::Deliver,
    });
    let cut = sim.now;
    sim.run_until(Duration::from_secs(1200), |s| {
        s.pairs[0].server_down().is_some()
    });
    assert_eq!(sim.pairs[0].server_down(), Some(&DownReason::EchoTimeout));
    let (at, _) = sim.pairs[0]
        .server_seen
        .iter()
        .find(|(_, s)| matches!(s, Seen::Down(_)))
        .unwrap();
    let after = sim.start + *at - cut;
    // 4 unanswered requests 30 s apart, declared at the 5th tick.
    assert!(
        after > Duration::from_secs(120) && after <= Duration::from_secs(150),
        "{after:?}"
    );
    sim.run_quiet(Duration::from_secs(1300));
    assert!(
        sim.pairs[0]
            .server_seen
            .iter()
            .any(|(_, s)| *s == Seen::Finished)
    );
    assert_eq!(sim.pool.in_use(), 0);
}

#[test]
fn lower_layer_down_finishes_at_once() {
    let mut sim = Sim::pair(AuthMethod::MsChapV2);
    assert!(sim.run_until_up());
    let now = sim.now;
    sim.pairs[0].server.lower_down(now);
    sim.drain();
    let pair = &sim.pairs[0];
    assert_eq!(pair.server_down(), Some(&DownReason::LowerLayerDown));
    assert_eq!(pair.server.phase(), Phase::Dead);
    assert!(pair.server_seen.iter().any(|(_, s)| *s == Seen::Finished));
    assert!(pair.server.next_timeout().is_none());
}

#[test]
fn server_keeps_serving_while_the_backend_thinks() {
    let mut sim = Sim::pair(AuthMethod::MsChapV2);
    sim.auth_delay = Duration::from_secs(8);
    assert!(sim.run_until_up());
    let up_at = sim.pairs[0].server_seen[0].0;
    assert!(up_at >= Duration::from_secs(8), "{up_at:?}");
    // Meanwhile the client repeated its Response (its Restart timer) and the server
    // answered nothing twice: one backend request only.
    assert!(sim.pairs[0].server.stats().malformed == 0);
}

#[test]
fn slow_backend_times_out_the_authentication() {
    let mut sim = Sim::new();
    let mut server = server_config(&[AuthMethod::Chap]);
    server.timing.auth_timeout = Duration::from_secs(20);
    sim.connect(
        server,
        client_config("alice", "alicepass", &[AuthMethod::Chap]),
    );
    sim.auth_delay = Duration::from_secs(45);
    sim.run_quiet(Duration::from_secs(120));
    assert_eq!(sim.pairs[0].server_down(), Some(&DownReason::AuthTimeout));
    assert_eq!(
        sim.pool.in_use(),
        0,
        "the late Accept's address was released"
    );
}

#[test]
fn session_timeout_from_the_backend_closes_the_link() {
    let mut sim = Sim::pair(AuthMethod::Pap);
    sim.tweak = Box::new(|result| {
        if let crate::aaa::AuthResult::Accept { attributes } = result {
            attributes.session_timeout = Some(Duration::from_secs(3600));
        }
    });
    assert!(sim.run_until_up());
    sim.run_until(Duration::from_secs(4000), |s| {
        s.pairs[0].server_down().is_some()
    });
    assert_eq!(
        sim.pairs[0].server_down(),
        Some(&DownReason::SessionTimeout)
    );
}

#[test]
fn pool_exhaustion_rejects_the_extra_client_and_release_makes_room() {
    let mut sim = Sim::new();
    sim.pool = crate::aaa::Pool::parse("10.99.0.10-10.99.0.11").unwrap();
    for _ in 0..3 {
        sim.connect(
            server_config(&ALL),
            client_config("alice", "alicepass", &ALL),
        );
    }
    sim.run_until(Duration::from_secs(60), |s| {
        s.pairs
            .iter()
            .all(|p| p.server_up().is_some() || p.server_down().is_some())
    });
    let ups: Vec<_> = sim
        .pairs
        .iter()
        .filter_map(|p| p.server_up().map(|u| u.peer_address))
        .collect();
    assert_eq!(
        ups,
        [Ipv4Addr::new(10, 99, 0, 10), Ipv4Addr::new(10, 99, 0, 11)]
    );
    assert_eq!(
        sim.pairs[2].server_down(),
        Some(&DownReason::AuthFailed("address pool exhausted".into()))
    );
    assert_eq!(sim.pool.in_use(), 2);
    let now = sim.now;
    sim.pairs[0].client.close(now, "User request");
    sim.run_until(Duration::from_secs(120), |s| s.pool.in_use() == 1);
    let next = sim.connect(
        server_config(&ALL),
        client_config("alice", "alicepass", &ALL),
    );
    sim.run_until(Duration::from_secs(180), |s| s.pairs[next].both_up());
    assert_eq!(
        sim.pairs[next].server_up().unwrap().peer_address,
        Ipv4Addr::new(10, 99, 0, 10)
    );
}

#[test]
fn many_links_share_one_pool_without_duplicates() {
    let mut sim = Sim::new();
    for i in 0..50 {
        let method = ALL[i % 3];
        sim.connect(
            server_config(&ALL),
            client_config("alice", "alicepass", &[method]),
        );
    }
    sim.run_until(Duration::from_secs(60), |s| {
        s.pairs.iter().all(|p| p.both_up())
    });
    let mut addresses: Vec<_> = sim
        .pairs
        .iter()
        .map(|p| p.server_up().expect("up").peer_address)
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 50);
    assert_eq!(sim.pool.in_use(), 50);
}
