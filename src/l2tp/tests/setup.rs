//! Control connection and call setup, at scale.

use std::collections::HashSet;
use std::time::Duration;

use super::harness::*;
use crate::l2tp::{Event, LnsConfig, worker_of};
use crate::wire::l2tp::{MessageType, Packet, avp_type};

#[test]
fn tunnel_and_session_come_up() {
    let mut net = Net::new(lns_config());
    net.add_client(lac_config());
    assert!(net.run_until(Duration::from_secs(2), |n| {
        n.clients[0].lac.is_established()
    }));
    // SCCRQ → SCCRP → SCCCN, and the LNS says who it is.
    let sccrp = &net.sent_of(Dir::ToLac, MessageType::Sccrp)[0];
    let packet = Packet::new_checked(&sccrp[..]).unwrap();
    assert_eq!(packet.tunnel_id(), net.clients[0].lac.local_tunnel_id());
    assert_eq!(seq(sccrp), (0, 1));
    let types: Vec<u16> = packet.avps().map(|a| a.unwrap().attribute_type).collect();
    for required in [
        avp_type::PROTOCOL_VERSION,
        avp_type::HOST_NAME,
        avp_type::FRAMING_CAPABILITIES,
        avp_type::ASSIGNED_TUNNEL_ID,
        avp_type::RECEIVE_WINDOW_SIZE,
    ] {
        assert!(types.contains(&required), "SCCRP lacks AVP {required}");
    }
    assert_eq!(net.sent_of(Dir::ToLns, MessageType::Scccn).len(), 1);
    net.run_for(Duration::from_secs(1));
    let lns_tunnel = net.clients[0].lac.peer_tunnel_id();
    assert!(net.lns_events.contains(&Event::TunnelUp {
        peer: client_key(0),
        worker: 0,
        local_tunnel_id: lns_tunnel,
        peer_tunnel_id: net.clients[0].lac.local_tunnel_id(),
        host_name: "test-lac".into(),
    }));

    let now = net.now;
    let lac_session = net.clients[0].lac.open_session(now).unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| n.lns_count(is_session_up) == 1));
    let Some(Event::SessionUp(info)) = net.lns_events.iter().find(|e| is_session_up(e)) else {
        unreachable!()
    };
    assert_eq!(info.peer, client_key(0));
    assert_eq!(info.local_tunnel_id, lns_tunnel);
    assert_eq!(info.peer_tunnel_id, net.clients[0].lac.local_tunnel_id());
    assert_eq!(info.peer_session_id, lac_session);
    assert_eq!(
        net.clients[0].lac.peer_session_id(lac_session),
        Some(info.local_session_id)
    );
    assert_eq!(info.call_serial_number, 1);
    assert_eq!(info.framing_type, 1);
    assert_eq!(net.lac_count(0, is_session_up), 1);
    // Idle afterwards: only the HELLO timer is left, a minute away.
    net.run_for(Duration::from_secs(1));
    let next = net.lns.next_timeout().unwrap();
    assert!(
        next - net.now > Duration::from_secs(55),
        "{:?}",
        next - net.now
    );
    let stats = net.lns.stats();
    assert_eq!((stats.tunnels, stats.sessions), (1, 1));
    assert_eq!(
        (stats.tunnels_established, stats.sessions_established),
        (1, 1)
    );
    assert_eq!(stats.malformed + stats.invalid + stats.unexpected, 0);
}

#[test]
fn thousand_sessions_over_four_tunnels() {
    let net = established(lns_config(), 4, 250);
    let mut ids = HashSet::new();
    for event in &net.lns_events {
        if let Event::SessionUp(info) = event {
            assert!(ids.insert((info.local_tunnel_id, info.local_session_id)));
            assert_ne!(info.local_session_id, 0);
        }
    }
    assert_eq!(ids.len(), 1000);
    for i in 0..4 {
        assert_eq!(net.lac_count(i, is_session_up), 250);
    }
    let stats = net.lns.stats();
    assert_eq!((stats.tunnels, stats.sessions), (4, 1000));
    assert_eq!(stats.retransmits, 0, "no loss, no retransmission");
    assert!(
        net.elapsed() < Duration::from_secs(30),
        "{:?}",
        net.elapsed()
    );
}

#[test]
fn ids_name_the_worker_that_received_the_sccrq() {
    let mut net = Net::new(LnsConfig {
        worker_bits: 2,
        ..LnsConfig::default()
    });
    for worker in [3u16, 1, 2] {
        net.worker = worker;
        let i = net.add_client(lac_config());
        net.run_until(Duration::from_secs(2), |n| {
            n.clients[i].lac.is_established()
        });
        let now = net.now;
        net.clients[i].lac.open_session(now).unwrap();
        net.run_until(Duration::from_secs(2), |n| {
            n.lns_count(is_session_up) == i + 1
        });
    }
    let ups: Vec<_> = net
        .lns_events
        .iter()
        .filter_map(|e| match e {
            Event::SessionUp(info) => Some(info.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 3);
    for (info, worker) in ups.iter().zip([3u16, 1, 2]) {
        assert_eq!(info.worker, worker);
        assert_eq!(worker_of(info.local_tunnel_id, 2), worker);
        assert_eq!(worker_of(info.local_session_id, 2), worker);
    }
}

#[test]
fn ten_thousand_sessions_idle_on_hello_timers_only() {
    let mut net = established(lns_config(), 40, 250);
    let stats = net.lns.stats();
    assert_eq!((stats.tunnels, stats.sessions), (40, 10_000));
    net.run_for(Duration::from_secs(5));
    let before = net.log.len();
    net.run_for(Duration::from_secs(600));
    // Ten idle minutes: one HELLO per tunnel per minute (from whichever side's
    // timer fires first) and its ZLB; nothing per session.
    let idle = net.log.len() - before;
    assert!(
        (40 * 10 * 2..=40 * 11 * 2).contains(&idle),
        "{idle} messages"
    );
    assert!(
        net.log[before..]
            .iter()
            .all(|(_, _, b)| { matches!(kind(b), None | Some(MessageType::Hello)) })
    );
    assert_eq!(net.lns_count(is_session_down), 0);
}
