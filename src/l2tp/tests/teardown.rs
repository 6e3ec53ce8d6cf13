//! StopCCN and CDN both ways, lingering, peer restart, rekey, shutdown.

use std::time::Duration;

use super::harness::*;
use crate::l2tp::{Event, Lac, LacConfig, ResultCode, SeededEntropy, cdn, stopccn};
use crate::wire::l2tp::MessageType;

#[test]
fn lns_stops_the_tunnel() {
    let mut net = established(lns_config(), 1, 3);
    let tunnel = net.clients[0].lac.peer_tunnel_id();
    // The LAC's first acknowledgement of the StopCCN is lost: the LNS retransmits
    // and the lingering LAC acknowledges again.
    let sent_before = net.sent[Dir::ToLns as usize];
    net.fault = Box::new(move |dir, n, _| match dir {
        Dir::ToLns if n == sent_before => Fault::Drop,
        _ => Fault::Deliver,
    });
    let now = net.now;
    let result = ResultCode::new(stopccn::GENERAL_REQUEST, None, "admin says bye");
    assert!(net.lns.close_tunnel(now, tunnel, result.clone()));
    assert!(
        !net.lns.close_tunnel(now, tunnel, result),
        "already closing"
    );
    net.flush();
    assert_eq!(net.lns_count(is_session_down), 3);
    let cause = tunnel_down_cause(&net.lns_events).unwrap();
    assert_eq!(
        cause,
        "StopCCN sent: result 1 (general request to clear control connection): admin says bye"
    );
    assert!(net.run_until(Duration::from_secs(10), |n| n.lns.stats().tunnels == 0));
    assert_eq!(
        net.sent_of(Dir::ToLac, MessageType::StopCcn).len(),
        2,
        "one retransmission"
    );
    assert_eq!(net.lns.stats().retransmit_exhausted, 0);
    let cause = tunnel_down_cause(&net.clients[0].events).unwrap();
    assert!(cause.starts_with("peer StopCCN: result 1"), "{cause}");
    assert_eq!(net.lac_count(0, is_session_down), 3);
    assert!(net.clients[0].lac.is_closed());
    assert!(!net.clients[0].lac.is_finished(), "lingers to re-ack");
    net.run_for(Duration::from_secs(32));
    assert!(net.clients[0].lac.is_finished());
    assert_eq!(net.lns.next_timeout(), None);
}

#[test]
fn lac_stops_the_tunnel_and_the_lns_lingers() {
    let mut net = established(lns_config(), 1, 2);
    // The LNS's first ZLB for the StopCCN is lost.
    let sent_before = net.sent[Dir::ToLac as usize];
    net.fault = Box::new(move |dir, n, _| match dir {
        Dir::ToLac if n == sent_before => Fault::Drop,
        _ => Fault::Deliver,
    });
    let now = net.now;
    net.clients[0].lac.close(
        now,
        ResultCode::new(stopccn::GENERAL_REQUEST, Some(0), "Goodbye!"),
    );
    assert!(net.run_until(Duration::from_secs(1), |n| n.lns_count(is_tunnel_down) == 1));
    assert_eq!(
        tunnel_down_cause(&net.lns_events).unwrap(),
        "peer StopCCN: result 1 (general request to clear control connection): Goodbye!"
    );
    let cause = session_down_cause(&net.lns_events).unwrap();
    assert!(cause.starts_with("tunnel down: peer StopCCN"), "{cause}");
    assert_eq!(net.lns_count(is_session_down), 2);
    // The LAC retransmits, the LNS (lingering) re-acks, the LAC is done.
    assert!(net.run_until(Duration::from_secs(5), |n| n.clients[0].lac.is_finished()));
    assert_eq!(net.sent_of(Dir::ToLns, MessageType::StopCcn).len(), 2);
    assert!(net.lns.stats().duplicates >= 1);
    assert_eq!(net.lns.stats().tunnels, 1, "still lingering");
    net.run_for(Duration::from_secs(31));
    assert_eq!(net.lns.stats().tunnels, 0);
    assert_eq!(net.lns_count(is_tunnel_down), 1, "reported once");
}

#[test]
fn cdn_both_ways() {
    let mut net = established(lns_config(), 1, 3);
    let ups: Vec<_> = net
        .lns_events
        .iter()
        .filter_map(|e| match e {
            Event::SessionUp(info) => Some(info.clone()),
            _ => None,
        })
        .collect();
    let now = net.now;
    // LNS clears the first call (say PPP authentication failed).
    let first = &ups[0];
    let result = ResultCode::new(cdn::ADMINISTRATIVE, None, "authentication failed");
    assert!(net.lns.close_session(
        now,
        first.local_tunnel_id,
        first.local_session_id,
        result.clone()
    ));
    assert!(
        !net.lns
            .close_session(now, first.local_tunnel_id, first.local_session_id, result)
    );
    // LAC clears the second.
    let second = &ups[1];
    let result = ResultCode::new(cdn::LOST_CARRIER, None, "user hung up");
    assert!(
        net.clients[0]
            .lac
            .close_session(now, second.peer_session_id, result)
    );
    net.run_for(Duration::from_secs(2));
    let downs: Vec<_> = net
        .lns_events
        .iter()
        .filter_map(|e| match e {
            Event::SessionDown { session, cause } => {
                Some((session.local_session_id, cause.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        downs,
        [
            (
                first.local_session_id,
                "CDN sent: result 3 (administrative reasons): authentication failed".to_string()
            ),
            (
                second.local_session_id,
                "peer CDN: result 1 (loss of carrier): user hung up".to_string()
            ),
        ]
    );
    let lac_causes: Vec<String> = net.clients[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SessionDown { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        lac_causes,
        [
            "CDN sent: result 1 (loss of carrier): user hung up",
            "peer CDN: result 3 (administrative reasons): authentication failed"
        ]
    );
    assert_eq!(net.lns.stats().sessions, 1);
    assert_eq!(net.lns_count(is_tunnel_down), 0);
}

#[test]
fn peer_restart_replaces_the_old_tunnel() {
    let mut net = established(lns_config(), 1, 5);
    let old_tunnel = net.clients[0].lac.peer_tunnel_id();
    // The client restarts: same transport, new LAC state, new SCCRQ.
    let config = LacConfig {
        tunnel: lac_config(),
        peer: lns_key(),
    };
    let now = net.now;
    net.clients[0].lac = Lac::with_entropy(now, config, Box::new(SeededEntropy::new(4242)));
    net.clients[0].events.clear();
    assert_ne!(net.clients[0].lac.local_tunnel_id(), 0);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.clients[0].lac.is_established()
    }));
    let cause = tunnel_down_cause(&net.lns_events).unwrap();
    assert_eq!(cause, "peer restarted: new SCCRQ from the same transport");
    assert_eq!(net.lns_count(is_session_down), 5);
    assert_ne!(net.clients[0].lac.peer_tunnel_id(), old_tunnel);
    assert_eq!(net.lns.stats().tunnels, 1);
    let now = net.now;
    net.clients[0].lac.open_session(now).unwrap();
    assert!(net.run_until(Duration::from_secs(5), |n| n.lns_count(is_session_up) == 6));
    assert_eq!(net.lns.stats().sessions, 1);
    assert!(net.lns.close_tunnel(
        net.now,
        net.clients[0].lac.peer_tunnel_id(),
        ResultCode::new(1, None, "")
    ));
    assert!(
        !net.lns
            .close_tunnel(net.now, old_tunnel, ResultCode::new(1, None, "")),
        "old state is gone"
    );
}

#[test]
fn rekeyed_transport_keeps_the_tunnel() {
    let mut net = established(lns_config(), 1, 1);
    let old = net.clients[0].key;
    let mut new = old;
    new.spi = 0xdead_beef;
    net.clients[0].key = new;
    // Before the control thread tells the LNS, the new transport is refused.
    let now = net.now;
    net.clients[0].lac.open_session(now).unwrap();
    net.run_for(Duration::from_millis(100));
    assert!(net.lns.stats().wrong_peer > 0);
    assert_eq!(net.lns.rekey_peer(old, new), 1);
    assert_eq!(
        net.lns.peer_of(net.clients[0].lac.peer_tunnel_id()),
        Some(new)
    );
    assert!(net.run_until(Duration::from_secs(10), |n| n.lns_count(is_session_up) == 2));
    assert_eq!(net.lns_count(is_tunnel_down), 0);
}

#[test]
fn close_peer_and_shutdown() {
    let mut net = established(lns_config(), 3, 2);
    let now = net.now;
    let dead_ike = ResultCode::new(stopccn::GENERAL_REQUEST, None, "IKE SA deleted");
    assert_eq!(net.lns.close_peer(now, client_key(1), dead_ike), 1);
    net.lns.shutdown(now);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.lns_count(is_tunnel_down), 3);
    assert_eq!(net.lns_count(is_session_down), 6);
    assert_eq!(net.lns.stats().tunnels, 0);
    let cause = tunnel_down_cause(&net.clients[0].events).unwrap();
    assert!(
        cause.contains("result 6 (requester is being shut down)"),
        "{cause}"
    );
    let cause = tunnel_down_cause(&net.clients[1].events).unwrap();
    assert!(cause.ends_with("IKE SA deleted"), "{cause}");
}

#[test]
fn lac_clears_calls_before_and_during_setup() {
    let mut net = Net::new(lns_config());
    net.add_client(lac_config());
    let now = net.now;
    // Before the tunnel is up: the call is only pending, nothing goes on the wire.
    let pending = net.clients[0].lac.open_session(now).unwrap();
    assert!(net.clients[0].lac.close_session(
        now,
        pending,
        ResultCode::new(cdn::ADMINISTRATIVE, None, "")
    ));
    assert!(net.run_until(Duration::from_secs(2), |n| {
        n.clients[0].lac.is_established()
    }));
    // ICRQ sent, no ICRP yet: the CDN names the call by our Assigned Session ID.
    net.latency = Duration::from_millis(100);
    let now = net.now;
    let early = net.clients[0].lac.open_session(now).unwrap();
    net.run_for(Duration::from_millis(50));
    let now = net.now;
    assert!(net.clients[0].lac.close_session(
        now,
        early,
        ResultCode::new(cdn::LOST_CARRIER, None, "")
    ));
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.sent_of(Dir::ToLns, MessageType::Icrq).len(), 1);
    assert_eq!(net.sent_of(Dir::ToLns, MessageType::Cdn).len(), 1);
    assert_eq!(net.lns.stats().sessions, 0);
    assert_eq!(net.lns.stats().unknown_session, 0);
    assert_eq!(net.lns_count(is_session_up), 0);
}
