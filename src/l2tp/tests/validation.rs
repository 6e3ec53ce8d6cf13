//! Messages a well-behaved LAC never sends: §4.1/§4.2 unknown AVPs, missing AVPs,
//! wrong versions, wrong ids, wrong states.

use super::harness::{client_key, kind};
use super::raw::*;
use crate::l2tp::build::Builder;
use crate::l2tp::{Event, cdn, error, stopccn};
use crate::wire::l2tp::avp::Avp;
use crate::wire::l2tp::{MessageType, Packet, avp_type};

fn tunnel_down(raw: &Raw) -> Option<String> {
    raw.events.iter().find_map(|e| match e {
        Event::TunnelDown { cause, .. } => Some(cause.clone()),
        _ => None,
    })
}

/// Appends a raw AVP (any vendor, type, flags) to a builder's message.
fn with_avp(builder: Builder, mandatory: bool, vendor_id: u16, attribute_type: u16) -> Vec<u8> {
    let mut bytes = builder.finish(0, 0).unwrap();
    let avp = Avp {
        mandatory,
        hidden: false,
        vendor_id,
        attribute_type,
        value: b"xyz",
    };
    let start = bytes.len();
    bytes.resize(start + avp.buffer_len(), 0);
    avp.emit(&mut bytes[start..]).unwrap();
    let len = u16::try_from(bytes.len()).unwrap();
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    bytes
}

/// Sends prepared bytes with the next Ns/Nr and the LNS tunnel/`session` ids.
fn send_bytes(raw: &mut Raw, mut bytes: Vec<u8>, session: u16) -> Vec<Vec<u8>> {
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    packet.set_tunnel_id(raw.lns_tunnel);
    packet.set_session_id(session);
    let sequence = crate::wire::l2tp::Sequence {
        ns: raw.ns,
        nr: raw.nr,
    };
    packet.set_sequence(sequence).unwrap();
    raw.ns += 1;
    raw.input(&bytes)
}

#[test]
fn unknown_mandatory_avp_in_sccrq_stops_with_result_2_error_8() {
    let mut raw = Raw::new();
    let out = send_bytes(&mut raw, with_avp(sccrq(), true, 0, 99), 0);
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    assert!(Raw::find(&out, MessageType::Sccrp).is_none());
    let (result, error, message) = result_of(&stop);
    assert_eq!(
        (result, error),
        (stopccn::GENERAL_ERROR, Some(error::UNKNOWN_MANDATORY_AVP))
    );
    assert_eq!(message, "unknown mandatory AVP (vendor 0, type 99)");
    assert_eq!(
        Packet::new_checked(&stop[..]).unwrap().tunnel_id(),
        RAW_TUNNEL
    );
    assert_eq!(seq_of(&stop), (0, 1), "acknowledges the SCCRQ");
    assert!(
        tunnel_down(&raw)
            .unwrap()
            .contains("error 8 (unknown mandatory AVP)")
    );
    // A vendor AVP with M set is just as unknown.
    let mut raw = Raw::new();
    let out = send_bytes(&mut raw, with_avp(sccrq(), true, 311, 1), 0);
    assert_eq!(
        result_of(&Raw::find(&out, MessageType::StopCcn).unwrap()).1,
        Some(8)
    );
}

fn seq_of(bytes: &[u8]) -> (u16, u16) {
    super::harness::seq(bytes)
}

#[test]
fn unknown_mandatory_avp_in_a_hello_stops_the_tunnel() {
    let mut raw = Raw::new();
    raw.establish();
    let out = send_bytes(
        &mut raw,
        with_avp(Builder::new(MessageType::Hello), true, 0, 77),
        0,
    );
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    assert_eq!(result_of(&stop).1, Some(error::UNKNOWN_MANDATORY_AVP));
    // A plain HELLO is just acknowledged.
    let mut raw = Raw::new();
    raw.establish();
    let out = raw.send(Builder::new(MessageType::Hello), 0);
    assert_eq!(out.len(), 1);
    assert_eq!(kind(&out[0]), None, "a ZLB");
    assert_eq!(raw.lns.stats().unexpected, 0);
}

#[test]
fn unknown_optional_avps_are_ignored() {
    let mut raw = Raw::new();
    let bytes = with_avp(sccrq(), false, 0, 99);
    let out = send_bytes(&mut raw, bytes, 0);
    let sccrp = Raw::find(&out, MessageType::Sccrp).expect("SCCRP");
    raw.lns_tunnel = avp_u16(&sccrp, avp_type::ASSIGNED_TUNNEL_ID).unwrap();
    let out = send_bytes(
        &mut raw,
        with_avp(Builder::new(MessageType::Scccn), false, 9, 9),
        0,
    );
    assert!(out.iter().all(|b| kind(b).is_none()), "only a ZLB");
    assert!(
        raw.events
            .iter()
            .any(|e| matches!(e, Event::TunnelUp { .. }))
    );
    assert_eq!(raw.lns.stats().invalid, 0);
}

#[test]
fn unknown_mandatory_avp_in_a_call_message_clears_the_call_only() {
    let mut raw = Raw::new();
    raw.establish();
    let out = send_bytes(&mut raw, with_avp(icrq(RAW_SESSION, 7), true, 0, 120), 0);
    let cdn_msg = Raw::find(&out, MessageType::Cdn).expect("CDN");
    assert!(Raw::find(&out, MessageType::Icrp).is_none());
    assert_eq!(
        Packet::new_checked(&cdn_msg[..]).unwrap().session_id(),
        RAW_SESSION
    );
    let (result, error, _) = result_of(&cdn_msg);
    assert_eq!(
        (result, error),
        (cdn::GENERAL_ERROR, Some(error::UNKNOWN_MANDATORY_AVP))
    );
    assert_eq!(raw.lns.stats().sessions, 0);
    // The tunnel is fine: the next call works, an unknown mandatory AVP in its
    // ICCN clears it.
    let lns_session = raw.icrq(RAW_SESSION + 1).unwrap();
    let out = send_bytes(&mut raw, with_avp(iccn(), true, 0, 121), lns_session);
    let cdn_msg = Raw::find(&out, MessageType::Cdn).expect("CDN for the ICCN");
    assert_eq!(result_of(&cdn_msg).1, Some(error::UNKNOWN_MANDATORY_AVP));
    assert_eq!(
        avp_u16(&cdn_msg, avp_type::ASSIGNED_SESSION_ID),
        Some(lns_session)
    );
    assert!(!raw.events.iter().any(|e| matches!(e, Event::SessionUp(_))));
    assert!(tunnel_down(&raw).is_none());
}

#[test]
fn missing_required_avps() {
    for (omit, name) in [
        (avp_type::HOST_NAME, "Host Name"),
        (avp_type::PROTOCOL_VERSION, "Protocol Version"),
        (avp_type::FRAMING_CAPABILITIES, "Framing Capabilities"),
    ] {
        let mut raw = Raw::new();
        let mut b = sccrq_without(&[omit]);
        b.u16(true, avp_type::ASSIGNED_TUNNEL_ID, RAW_TUNNEL);
        let out = raw.send(b, 0);
        let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
        assert_eq!(
            result_of(&stop),
            (
                2,
                Some(error::BAD_VALUE),
                format!("missing mandatory AVP {name}")
            )
        );
    }
    // Without an Assigned Tunnel ID the StopCCN can only go to tunnel 0.
    let mut raw = Raw::new();
    let out = raw.send(sccrq_without(&[]), 0);
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    assert_eq!(Packet::new_checked(&stop[..]).unwrap().tunnel_id(), 0);
    assert!(result_of(&stop).2.contains("Assigned Tunnel ID"));

    // ICRQ without Call Serial Number, then without Assigned Session ID.
    let mut raw = Raw::new();
    raw.establish();
    let mut b = Builder::new(MessageType::Icrq);
    b.u16(true, avp_type::ASSIGNED_SESSION_ID, RAW_SESSION);
    let out = raw.send(b, 0);
    let cdn_msg = Raw::find(&out, MessageType::Cdn).expect("CDN");
    assert_eq!(
        result_of(&cdn_msg).2,
        "missing mandatory AVP Call Serial Number"
    );
    assert_eq!(
        Packet::new_checked(&cdn_msg[..]).unwrap().session_id(),
        RAW_SESSION
    );
    let mut b = Builder::new(MessageType::Icrq);
    b.u32(true, avp_type::CALL_SERIAL_NUMBER, 5);
    let out = raw.send(b, 0);
    let cdn_msg = Raw::find(&out, MessageType::Cdn).expect("CDN");
    assert_eq!(
        result_of(&cdn_msg).2,
        "missing mandatory AVP Assigned Session ID"
    );
    // ICCN without Framing Type: the half-made call is cleared.
    let lns_session = raw.icrq(RAW_SESSION).unwrap();
    let mut b = Builder::new(MessageType::Iccn);
    b.u32(true, avp_type::TX_CONNECT_SPEED, 1);
    let out = raw.send(b, lns_session);
    let cdn_msg = Raw::find(&out, MessageType::Cdn).expect("CDN");
    assert_eq!(result_of(&cdn_msg).2, "missing mandatory AVP Framing Type");
    assert_eq!(raw.lns.stats().sessions, 0);
    assert!(tunnel_down(&raw).is_none());
}

#[test]
fn protocol_version_must_be_1_0() {
    let mut raw = Raw::new();
    let mut b = Builder::new(MessageType::Sccrq);
    b.bytes(true, avp_type::PROTOCOL_VERSION, &[2, 0]);
    b.u32(true, avp_type::FRAMING_CAPABILITIES, 3);
    b.bytes(true, avp_type::HOST_NAME, b"v2");
    b.u16(true, avp_type::ASSIGNED_TUNNEL_ID, RAW_TUNNEL);
    let out = raw.send(b, 0);
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    let (result, error, _) = result_of(&stop);
    assert_eq!(
        (result, error),
        (stopccn::BAD_PROTOCOL_VERSION, Some(0x0100))
    );
}

#[test]
fn unknown_message_types() {
    // Without the M bit: acknowledged and ignored.
    let mut raw = Raw::new();
    raw.establish();
    let mut b = Builder::new(MessageType::Hello);
    let _ = &mut b;
    let mut bytes = b.finish(raw.lns_tunnel, 0).unwrap();
    bytes[12..14].copy_from_slice(&[0x00, 0x08]); // Message Type AVP, M clear
    bytes[18..20].copy_from_slice(&[0x00, 0x63]); // type 99
    let out = send_bytes(&mut raw, bytes.clone(), 0);
    assert!(out.iter().all(|b| kind(b).is_none()));
    assert_eq!(out.len(), 1, "a ZLB");
    assert!(tunnel_down(&raw).is_none());
    // With the M bit: the tunnel is cleared.
    bytes[12] = 0x80;
    let out = send_bytes(&mut raw, bytes, 0);
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    assert_eq!(result_of(&stop).2, "unknown message type 99 with the M bit");
}

#[test]
fn wrong_tunnel_wrong_peer_unknown_session() {
    let mut raw = Raw::new();
    raw.establish();
    let lns_tunnel = raw.lns_tunnel;
    // A tunnel id we never assigned.
    raw.lns_tunnel = lns_tunnel ^ 0x5555;
    assert!(raw.send(Builder::new(MessageType::Hello), 0).is_empty());
    assert_eq!(raw.lns.stats().unknown_tunnel, 1);
    raw.ns -= 1;
    // The right tunnel from another transport.
    raw.lns_tunnel = lns_tunnel;
    raw.key = client_key(1);
    assert!(raw.send(Builder::new(MessageType::Hello), 0).is_empty());
    assert_eq!(raw.lns.stats().wrong_peer, 1);
    raw.ns -= 1;
    raw.key = client_key(0);
    // ICCN and CDN for a session that does not exist: ignored (but acknowledged).
    let out = raw.send(iccn(), 0x4242);
    assert!(out.iter().all(|b| kind(b).is_none()));
    let mut b = Builder::new(MessageType::Cdn);
    b.u16(true, avp_type::ASSIGNED_SESSION_ID, 77);
    raw.send(b, 0x4243);
    assert_eq!(raw.lns.stats().unknown_session, 2);
    // Non-SCCRQ for tunnel 0 and data messages are dropped.
    raw.lns_tunnel = 0;
    raw.send(Builder::new(MessageType::Hello), 0);
    assert_eq!(raw.lns.stats().unknown_tunnel, 2);
    raw.input(&[0x00, 0x02, 0x12, 0x34, 0x56, 0x78, 0xff, 0x03]);
    assert_eq!(raw.lns.stats().malformed, 1);
    assert!(tunnel_down(&raw).is_none());
}

#[test]
fn ocrq_is_refused_and_wen_sli_are_recorded() {
    let mut raw = Raw::new();
    raw.establish();
    let mut b = Builder::new(MessageType::Ocrq);
    b.u16(true, avp_type::ASSIGNED_SESSION_ID, 0x0c0c);
    b.u32(true, avp_type::CALL_SERIAL_NUMBER, 1);
    let out = raw.send(b, 0);
    let cdn_msg = Raw::find(&out, MessageType::Cdn).expect("CDN");
    assert_eq!(result_of(&cdn_msg).0, cdn::PERMANENT_LACK);
    assert_eq!(
        Packet::new_checked(&cdn_msg[..]).unwrap().session_id(),
        0x0c0c
    );

    let lns_session = raw.icrq(RAW_SESSION).unwrap();
    raw.send(iccn(), lns_session);
    let mut sli = Builder::new(MessageType::Sli);
    sli.bytes(
        true,
        avp_type::ACCM,
        &[0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
    );
    raw.send(sli, lns_session);
    let mut wen = Builder::new(MessageType::Wen);
    let mut errors = vec![0, 0];
    for n in 1u32..=6 {
        errors.extend_from_slice(&n.to_be_bytes());
    }
    wen.bytes(true, avp_type::CALL_ERRORS, &errors);
    raw.send(wen, lns_session);
    let infos: Vec<_> = raw
        .events
        .iter()
        .filter(|e| matches!(e, Event::LinkInfo { .. } | Event::WanError { .. }))
        .cloned()
        .collect();
    assert_eq!(infos.len(), 2);
    assert!(matches!(
        infos[0],
        Event::LinkInfo {
            send_accm: 0,
            receive_accm: 0xffff_ffff,
            ..
        }
    ));
    assert!(matches!(
        infos[1],
        Event::WanError {
            errors: [1, 2, 3, 4, 5, 6],
            ..
        }
    ));
    let stats = raw.lns.stats();
    assert_eq!(
        (stats.sli_received, stats.wen_received, stats.sessions),
        (1, 1, 1)
    );
}

#[test]
fn call_before_scccn_is_a_state_machine_error() {
    let mut raw = Raw::new();
    let out = raw.send(sccrq(), 0);
    raw.lns_tunnel = avp_u16(
        &Raw::find(&out, MessageType::Sccrp).unwrap(),
        avp_type::ASSIGNED_TUNNEL_ID,
    )
    .unwrap();
    let out = raw.send(icrq(RAW_SESSION, 1), 0);
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    assert_eq!(result_of(&stop).0, stopccn::FSM_ERROR);
}

#[test]
fn setup_that_never_completes_times_out() {
    let mut raw = Raw::new();
    let out = raw.send(sccrq(), 0);
    assert!(Raw::find(&out, MessageType::Sccrp).is_some());
    // The peer acknowledges the SCCRP but never sends SCCCN.
    let mut zlb = crate::l2tp::build::zlb(0, crate::wire::l2tp::Sequence { ns: 1, nr: 1 });
    let lns_tunnel = avp_u16(
        &Raw::find(&out, MessageType::Sccrp).unwrap(),
        avp_type::ASSIGNED_TUNNEL_ID,
    )
    .unwrap();
    Packet::new_unchecked(&mut zlb[..]).set_tunnel_id(lns_tunnel);
    raw.input(&zlb);
    let deadline = raw.lns.next_timeout().unwrap();
    assert_eq!(deadline - raw.now, std::time::Duration::from_secs(62));
    raw.now = deadline;
    raw.lns.handle_timeout(raw.now);
    let out = raw.drain();
    let stop = Raw::find(&out, MessageType::StopCcn).expect("StopCCN");
    assert_eq!(result_of(&stop).2, "control connection setup timed out");
}
