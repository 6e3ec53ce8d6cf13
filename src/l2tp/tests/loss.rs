//! Reliable delivery under loss, reordering and duplication; keepalive; dead peers.

use std::time::Duration;

use super::harness::*;
use crate::l2tp::Event;
use crate::wire::l2tp::MessageType;

/// Sessions per client and clients for the lossy runs.
const CLIENTS: usize = 3;
const SESSIONS: usize = 40;

fn open_all(net: &mut Net) {
    for _ in 0..CLIENTS {
        net.add_client(lac_config());
    }
    for i in 0..CLIENTS {
        for _ in 0..SESSIONS {
            let now = net.now;
            net.clients[i].lac.open_session(now).unwrap();
        }
    }
}

fn all_up(net: &Net) -> bool {
    net.lns_count(is_session_up) == CLIENTS * SESSIONS
        && (0..CLIENTS).all(|i| net.lac_count(i, is_session_up) == SESSIONS)
}

fn assert_clean(net: &Net) {
    assert_eq!(net.lns_count(is_tunnel_down), 0, "{:?}", net.lns_events);
    assert_eq!(net.lns_count(is_session_down), 0);
    for i in 0..CLIENTS {
        assert_eq!(net.lac_count(i, is_tunnel_down), 0);
    }
}

#[test]
fn every_nth_message_lost_both_ways() {
    for nth in [3u64, 5, 7] {
        let mut net = Net::new(lns_config());
        net.fault = Box::new(move |_, n, _| {
            if n % nth == nth - 1 {
                Fault::Drop
            } else {
                Fault::Deliver
            }
        });
        open_all(&mut net);
        assert!(
            net.run_until(Duration::from_secs(600), all_up),
            "every {nth}th lost: {} up",
            net.lns_count(is_session_up)
        );
        assert_clean(&net);
        assert!(net.lns.stats().retransmits > 0);
        assert!(net.clients.iter().all(|c| c.lac.stats().retransmits > 0));
    }
}

#[test]
fn reordering_within_the_window() {
    let mut net = Net::new(lns_config());
    // Every 4th message each way arrives 50 ms late, behind the ones sent after it.
    net.fault = Box::new(|_, n, _| {
        if n % 4 == 1 {
            Fault::Delay(Duration::from_millis(50))
        } else {
            Fault::Deliver
        }
    });
    open_all(&mut net);
    assert!(net.run_until(Duration::from_secs(120), all_up));
    assert_clean(&net);
    let reordered = net.lns.stats().reordered
        + net
            .clients
            .iter()
            .map(|c| c.lac.stats().reordered)
            .sum::<u64>();
    assert!(reordered > 0, "the test must exercise the reorder buffer");
}

#[test]
fn duplicates_are_dropped_and_reacked() {
    let mut net = Net::new(lns_config());
    net.fault = Box::new(|_, n, _| {
        if n % 3 == 0 {
            Fault::Duplicate
        } else {
            Fault::Deliver
        }
    });
    open_all(&mut net);
    assert!(net.run_until(Duration::from_secs(60), all_up));
    net.run_for(Duration::from_secs(5));
    assert_clean(&net);
    let stats = net.lns.stats();
    assert!(stats.duplicates > 0);
    // Every call once: no duplicate SessionUp, no session created twice.
    assert_eq!(net.lns_count(is_session_up), CLIENTS * SESSIONS);
    assert_eq!(stats.sessions, CLIENTS * SESSIONS);
    assert!(stats.zlbs_sent >= stats.duplicates.min(1));
}

#[test]
fn retransmission_exhaustion_tears_the_tunnel_down() {
    let mut net = established(lns_config(), 1, 2);
    // From now on nothing reaches the LNS.
    net.fault = Box::new(|dir, _, _| match dir {
        Dir::ToLns => Fault::Drop,
        Dir::ToLac => Fault::Deliver,
    });
    let start = net.now;
    let now = net.now;
    let lac_session = net.clients[0].lac.open_session(now).unwrap();
    assert!(
        net.run_until(Duration::from_secs(120), |n| n.lac_count(0, is_tunnel_down)
            == 1)
    );
    // 1 + 2 + 4 + 8 + 8 + 8 seconds of retransmissions, then the LAC gives up.
    let took = net.now - start;
    assert!(
        took >= Duration::from_secs(31) && took < Duration::from_secs(32),
        "{took:?}"
    );
    let cause = tunnel_down_cause(&net.clients[0].events).unwrap();
    assert!(
        cause.contains("no acknowledgement after 5 retransmissions"),
        "{cause}"
    );
    assert_eq!(
        net.lac_count(0, is_session_down),
        2,
        "the two sessions that were up"
    );
    assert!(net.clients[0].lac.is_finished());
    assert_eq!(net.clients[0].lac.stats().retransmit_exhausted, 1);
    assert_eq!(net.clients[0].lac.peer_session_id(lac_session), None);
    assert_eq!(net.sent_of(Dir::ToLns, MessageType::Icrq).len(), 2 + 6);

    // The LNS, hearing nothing, sends HELLO after 60 s; unanswered, it gives up too.
    assert!(
        net.run_until(Duration::from_secs(200), |n| n.lns_count(is_tunnel_down)
            == 1)
    );
    let cause = tunnel_down_cause(&net.lns_events).unwrap();
    assert!(cause.starts_with("peer not responding"), "{cause}");
    assert_eq!(net.lns_count(is_session_down), 2);
    assert_eq!(net.lns.stats().tunnels, 0);
    assert_eq!(net.lns.next_timeout(), None, "nothing left to wake for");
}

#[test]
fn hello_keeps_an_idle_tunnel_up() {
    let mut net = established(lns_config(), 1, 1);
    net.run_for(Duration::from_secs(3600));
    assert_eq!(net.lns_count(is_tunnel_down), 0);
    assert_eq!(net.lac_count(0, is_tunnel_down), 0);
    let hellos = net.sent_of(Dir::ToLac, MessageType::Hello).len()
        + net.sent_of(Dir::ToLns, MessageType::Hello).len();
    // One HELLO a minute keeps both sides content (whoever's timer fires first).
    assert!((50..=130).contains(&hellos), "{hellos} HELLOs in an hour");
    assert_eq!(net.lns.stats().retransmits, 0);
    // Nothing else was sent but HELLOs and their ZLBs.
    let late = net.log.iter().filter(|(_, _, b)| {
        let k = kind(b);
        k.is_some() && k != Some(MessageType::Hello)
    });
    assert_eq!(
        late.count(),
        6,
        "setup messages only: SCCRQ SCCRP SCCCN ICRQ ICRP ICCN"
    );
}

#[test]
fn hello_failure_tears_an_idle_tunnel_down() {
    let mut net = established(lns_config(), 1, 1);
    let quiet_from = net.now;
    net.fault = Box::new(|_, _, _| Fault::Drop); // the path dies
    assert!(
        net.run_until(Duration::from_secs(300), |n| n.lns_count(is_tunnel_down)
            == 1)
    );
    // Silence noticed after 60 s, then 31 s of unanswered HELLO.
    let took = net.now - quiet_from;
    assert!(
        took > Duration::from_secs(90) && took < Duration::from_secs(93),
        "{took:?}"
    );
    assert!(
        tunnel_down_cause(&net.lns_events)
            .unwrap()
            .starts_with("peer not responding")
    );
    let Some(Event::SessionDown { cause, .. }) = net.lns_events.iter().find(|e| is_session_down(e))
    else {
        panic!("no SessionDown");
    };
    assert!(
        cause.starts_with("tunnel down: peer not responding"),
        "{cause}"
    );
    assert_eq!(net.lns.stats().retransmit_exhausted, 1);
}

#[test]
fn timers_touch_only_due_tunnels() {
    let mut net = established(lns_config(), 20, 5);
    net.run_for(Duration::from_secs(5));
    // 20 idle tunnels: the next wake-up is the earliest HELLO, ~a minute away.
    let next = net.lns.next_timeout().unwrap();
    assert!(next - net.now > Duration::from_secs(50));
    let sent = net.log.len();
    net.lns.handle_timeout(net.now); // nothing due: nothing happens
    net.flush();
    assert_eq!(net.log.len(), sent);
    assert!(net.lns.poll_event().is_none());
}
