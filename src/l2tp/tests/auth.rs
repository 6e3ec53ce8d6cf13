//! Tunnel authentication (§5.1.1) and hidden AVPs (§4.3) end to end.

use std::time::Duration;

use super::harness::*;
use super::raw::*;
use crate::l2tp::build::Builder;
use crate::l2tp::{
    Lns, LnsConfig, Secret, SeededEntropy, TunnelConfig, challenge_response, stopccn,
};
use crate::wire::l2tp::{MessageType, Packet, avp_type};

fn with_secret(secret: &str, hidden_avps: bool) -> TunnelConfig {
    TunnelConfig {
        secret: Some(Secret::new(secret)),
        hidden_avps,
        ..lac_config()
    }
}

fn lns_with_secret(secret: &str, hidden_avps: bool) -> LnsConfig {
    LnsConfig {
        tunnel: TunnelConfig {
            secret: Some(Secret::new(secret)),
            hidden_avps,
            ..TunnelConfig::default()
        },
        ..LnsConfig::default()
    }
}

fn has_avp(bytes: &[u8], attribute_type: u16) -> bool {
    let packet = Packet::new_checked(bytes).unwrap();
    packet
        .avps()
        .any(|a| a.unwrap().attribute_type == attribute_type)
}

#[test]
fn shared_secret_both_ways() {
    let mut net = Net::new(lns_with_secret("tunnel-secret", false));
    net.add_client(with_secret("tunnel-secret", false));
    assert!(net.run_until(Duration::from_secs(2), |n| {
        n.lns_count(|e| matches!(e, crate::l2tp::Event::TunnelUp { .. })) == 1
    }));
    let sccrq = &net.sent_of(Dir::ToLns, MessageType::Sccrq)[0];
    let sccrp = &net.sent_of(Dir::ToLac, MessageType::Sccrp)[0];
    let scccn = &net.sent_of(Dir::ToLns, MessageType::Scccn)[0];
    assert!(has_avp(sccrq, avp_type::CHALLENGE));
    assert!(has_avp(sccrp, avp_type::CHALLENGE_RESPONSE) && has_avp(sccrp, avp_type::CHALLENGE));
    assert!(has_avp(scccn, avp_type::CHALLENGE_RESPONSE));
    // The response is CHAP-MD5 over type 2, the secret and the LAC's challenge.
    let challenge = avp_value(sccrq, avp_type::CHALLENGE).unwrap();
    let expected = challenge_response(2, b"tunnel-secret", &challenge);
    assert_eq!(
        avp_value(sccrp, avp_type::CHALLENGE_RESPONSE).unwrap(),
        expected
    );
    let now = net.now;
    net.clients[0].lac.open_session(now).unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| n.lns_count(is_session_up) == 1));
    assert_eq!(net.lns.stats().auth_failures, 0);
}

#[test]
fn lac_refuses_an_lns_with_another_secret() {
    let mut net = Net::new(lns_with_secret("right", false));
    net.add_client(with_secret("wrong", false));
    assert!(net.run_until(Duration::from_secs(2), |n| n.lns_count(is_tunnel_down) == 1));
    let lac_cause = tunnel_down_cause(&net.clients[0].events).unwrap();
    assert_eq!(
        lac_cause,
        "StopCCN sent: result 4 (requester is not authorized): tunnel authentication failed: wrong or missing Challenge Response"
    );
    let lns_cause = tunnel_down_cause(&net.lns_events).unwrap();
    assert!(
        lns_cause.starts_with("peer StopCCN: result 4"),
        "{lns_cause}"
    );
    assert_eq!(net.clients[0].lac.stats().auth_failures, 1);
    assert_eq!(net.lns_count(is_session_up), 0);
}

#[test]
fn lns_checks_the_scccn_response() {
    let lns = || {
        Lns::with_entropy(
            lns_with_secret("s3cret", false),
            Box::new(SeededEntropy::new(3)),
        )
    };
    for answer in [
        None,
        Some([0u8; 16].to_vec()),
        Some(b"right length, wrong".to_vec()),
    ] {
        let mut raw = Raw::with(lns());
        let out = raw.send(sccrq(), 0);
        let sccrp = Raw::find(&out, MessageType::Sccrp).unwrap();
        assert!(avp_value(&sccrp, avp_type::CHALLENGE).is_some());
        assert!(
            avp_value(&sccrp, avp_type::CHALLENGE_RESPONSE).is_none(),
            "we sent no challenge"
        );
        raw.lns_tunnel = avp_u16(&sccrp, avp_type::ASSIGNED_TUNNEL_ID).unwrap();
        let mut scccn = Builder::new(MessageType::Scccn);
        if let Some(answer) = &answer {
            scccn.bytes(
                true,
                avp_type::CHALLENGE_RESPONSE,
                &answer[..answer.len().min(16)],
            );
        }
        let out = raw.send(scccn, 0);
        let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
        assert_eq!(result_of(&stop).0, stopccn::NOT_AUTHORIZED, "{answer:?}");
        assert_eq!(raw.lns.stats().auth_failures, 1);
    }
    // The right answer: MD5(3 | secret | challenge).
    let mut raw = Raw::with(lns());
    let out = raw.send(sccrq(), 0);
    let sccrp = Raw::find(&out, MessageType::Sccrp).unwrap();
    raw.lns_tunnel = avp_u16(&sccrp, avp_type::ASSIGNED_TUNNEL_ID).unwrap();
    let challenge = avp_value(&sccrp, avp_type::CHALLENGE).unwrap();
    let mut scccn = Builder::new(MessageType::Scccn);
    scccn.bytes(
        true,
        avp_type::CHALLENGE_RESPONSE,
        &challenge_response(3, b"s3cret", &challenge),
    );
    let out = raw.send(scccn, 0);
    assert!(Raw::find(&out, MessageType::StopCcn).is_none());
    assert!(
        raw.events
            .iter()
            .any(|e| matches!(e, crate::l2tp::Event::TunnelUp { .. }))
    );
}

#[test]
fn lns_without_a_secret_refuses_a_challenge() {
    let mut net = Net::new(lns_config());
    net.add_client(with_secret("only-the-lac-has-one", false));
    assert!(
        net.run_until(Duration::from_secs(2), |n| n.lac_count(0, is_tunnel_down)
            == 1)
    );
    let stop = &net.sent_of(Dir::ToLac, MessageType::StopCcn)[0];
    assert_eq!(
        result_of(stop),
        (
            stopccn::NOT_AUTHORIZED,
            Some(0), // a message forces the error code field
            "tunnel authentication requested but no secret is configured".into()
        )
    );
}

#[test]
fn hidden_avps_end_to_end() {
    let mut net = Net::new(lns_with_secret("hide-me", true));
    net.add_client(with_secret("hide-me", true));
    assert!(net.run_until(Duration::from_secs(2), |n| {
        n.clients[0].lac.is_established()
    }));
    let now = net.now;
    let lac_session = net.clients[0].lac.open_session(now).unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| n.lns_count(is_session_up) == 1));
    for (dir, of) in [
        (Dir::ToLns, MessageType::Sccrq),
        (Dir::ToLac, MessageType::Sccrp),
        (Dir::ToLns, MessageType::Icrq),
        (Dir::ToLac, MessageType::Icrp),
    ] {
        let bytes = &net.sent_of(dir, of)[0];
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let avps: Vec<_> = packet.avps().map(Result::unwrap).collect();
        let id_type = match of {
            MessageType::Sccrq | MessageType::Sccrp => avp_type::ASSIGNED_TUNNEL_ID,
            _ => avp_type::ASSIGNED_SESSION_ID,
        };
        let at = avps
            .iter()
            .position(|a| a.attribute_type == id_type)
            .unwrap();
        let id = &avps[at];
        assert!(id.hidden, "{of:?}: the id is hidden");
        let rv = avps
            .iter()
            .position(|a| a.attribute_type == avp_type::RANDOM_VECTOR);
        assert!(
            rv.is_some_and(|rv| rv < at),
            "{of:?}: a Random Vector comes first"
        );
        assert_eq!(id.value.len(), 4, "2-octet length + 2-octet id");
    }
    let Some(crate::l2tp::Event::SessionUp(info)) =
        net.lns_events.iter().find(|e| is_session_up(e))
    else {
        unreachable!()
    };
    assert_eq!(info.peer_session_id, lac_session, "unhidden correctly");
    assert_eq!(info.peer_tunnel_id, net.clients[0].lac.local_tunnel_id());
}

#[test]
fn hidden_avp_without_a_secret_is_an_error() {
    let mut raw = Raw::new(); // an LNS without a secret
    let mut b = sccrq_without(&[]).hiding(&Secret::new("lac-only"), [9; 16]);
    b.u16(true, avp_type::ASSIGNED_TUNNEL_ID, RAW_TUNNEL);
    let out = raw.send(b, 0);
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    let (result, error, message) = result_of(&stop);
    assert_eq!((result, error), (2, Some(crate::l2tp::error::BAD_VALUE)));
    assert!(
        message.starts_with("Assigned Tunnel ID AVP: cannot unhide"),
        "{message}"
    );
    assert_eq!(
        Packet::new_checked(&stop[..]).unwrap().tunnel_id(),
        0,
        "the peer's id is hidden from us"
    );
}
