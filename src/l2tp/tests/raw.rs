//! A scripted peer that writes control messages by hand against an [`Lns`], for the
//! cases a well-behaved LAC never produces.

use std::time::{Duration, Instant};

use crate::l2tp::build::Builder;
use crate::l2tp::{Event, Lns, PeerKey, SeededEntropy};
use crate::wire::l2tp::{MessageType, Packet, Sequence, avp_type};

use super::harness::{client_key, kind, lns_config};

/// Our side's tunnel id in the scripted exchanges.
pub const RAW_TUNNEL: u16 = 0x0a0a;
/// Our side's first session id.
pub const RAW_SESSION: u16 = 0x0b0b;

pub struct Raw {
    pub lns: Lns,
    pub now: Instant,
    pub key: PeerKey,
    pub ns: u16,
    pub nr: u16,
    /// The LNS's tunnel id, once it answered.
    pub lns_tunnel: u16,
    /// Non-transmit events of the LNS.
    pub events: Vec<Event>,
}

impl Raw {
    pub fn new() -> Raw {
        Raw::with(Lns::with_entropy(
            lns_config(),
            Box::new(SeededEntropy::new(9)),
        ))
    }

    pub fn with(lns: Lns) -> Raw {
        Raw {
            lns,
            now: Instant::now(),
            key: client_key(0),
            ns: 0,
            nr: 0,
            lns_tunnel: 0,
            events: Vec::new(),
        }
    }

    /// Sends raw bytes as they are; returns what the LNS transmits in answer
    /// (after the delayed-ack time, so ZLBs are included).
    pub fn input(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.lns.input(self.now, self.key, bytes, 0);
        self.drain()
    }

    /// Sends a message built by `builder` to `session` with the next Ns.
    pub fn send(&mut self, builder: Builder, session: u16) -> Vec<Vec<u8>> {
        let mut bytes = builder.finish(self.lns_tunnel, session).unwrap();
        let sequence = Sequence {
            ns: self.ns,
            nr: self.nr,
        };
        Packet::new_unchecked(&mut bytes[..])
            .set_sequence(sequence)
            .unwrap();
        self.ns = self.ns.wrapping_add(1);
        self.input(&bytes)
    }

    /// Collects the LNS's transmissions until nothing more is due soon, acknowledging
    /// in-order messages (advancing our Nr) as a peer would.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let end = self.now + Duration::from_millis(500);
        loop {
            while let Some(event) = self.lns.poll_event() {
                match event {
                    Event::Transmit { peer, bytes } => {
                        assert_eq!(peer, self.key);
                        let packet = Packet::new_checked(&bytes[..]).unwrap();
                        if !packet.is_zlb() && packet.ns() == Some(self.nr) {
                            self.nr = self.nr.wrapping_add(1);
                        }
                        out.push(bytes);
                    }
                    other => self.events.push(other),
                }
            }
            match self.lns.next_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.lns.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        out
    }

    /// The first message of `of` in `out`.
    pub fn find(out: &[Vec<u8>], of: MessageType) -> Option<Vec<u8>> {
        out.iter().find(|b| kind(b) == Some(of)).cloned()
    }

    /// SCCRQ → SCCRP → SCCCN with plain, valid messages.
    pub fn establish(&mut self) {
        let out = self.send(sccrq(), 0);
        let sccrp = Raw::find(&out, MessageType::Sccrp).expect("SCCRP");
        self.lns_tunnel = avp_u16(&sccrp, avp_type::ASSIGNED_TUNNEL_ID).unwrap();
        self.send(Builder::new(MessageType::Scccn), 0);
        assert!(
            self.events
                .iter()
                .any(|e| matches!(e, Event::TunnelUp { .. }))
        );
    }

    /// ICRQ for `session` (ours); returns the LNS's session id from the ICRP.
    pub fn icrq(&mut self, session: u16) -> Option<u16> {
        let out = self.send(icrq(session, 1), 0);
        let icrp = Raw::find(&out, MessageType::Icrp)?;
        avp_u16(&icrp, avp_type::ASSIGNED_SESSION_ID)
    }
}

/// A valid SCCRQ from tunnel [`RAW_TUNNEL`].
pub fn sccrq() -> Builder {
    let mut b = sccrq_without(&[]);
    b.u16(true, avp_type::ASSIGNED_TUNNEL_ID, RAW_TUNNEL);
    b
}

/// An SCCRQ without Assigned Tunnel ID and without the AVP types in `omit`.
pub fn sccrq_without(omit: &[u16]) -> Builder {
    let mut b = Builder::new(MessageType::Sccrq);
    if !omit.contains(&avp_type::PROTOCOL_VERSION) {
        b.bytes(true, avp_type::PROTOCOL_VERSION, &[1, 0]);
    }
    if !omit.contains(&avp_type::FRAMING_CAPABILITIES) {
        b.u32(true, avp_type::FRAMING_CAPABILITIES, 3);
    }
    if !omit.contains(&avp_type::HOST_NAME) {
        b.bytes(true, avp_type::HOST_NAME, b"raw");
    }
    b
}

/// A valid ICRQ for our session `session`.
pub fn icrq(session: u16, serial: u32) -> Builder {
    let mut b = Builder::new(MessageType::Icrq);
    b.u16(true, avp_type::ASSIGNED_SESSION_ID, session);
    b.u32(true, avp_type::CALL_SERIAL_NUMBER, serial);
    b
}

/// A valid ICCN.
pub fn iccn() -> Builder {
    let mut b = Builder::new(MessageType::Iccn);
    b.u32(true, avp_type::TX_CONNECT_SPEED, 1_000_000);
    b.u32(true, avp_type::FRAMING_TYPE, 1);
    b
}

/// The first visible AVP of `attribute_type` in a message, as u16.
pub fn avp_u16(bytes: &[u8], attribute_type: u16) -> Option<u16> {
    avp_value(bytes, attribute_type)
        .and_then(|v| Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)))
}

/// The value of the first visible AVP of `attribute_type` in a message.
pub fn avp_value(bytes: &[u8], attribute_type: u16) -> Option<Vec<u8>> {
    let packet = Packet::new_checked(bytes).ok()?;
    let avp = packet
        .avps()
        .filter_map(Result::ok)
        .find(|a| a.attribute_type == attribute_type && !a.hidden)?;
    Some(avp.value.to_vec())
}

/// (result, error, message) of the Result Code AVP of a message.
pub fn result_of(bytes: &[u8]) -> (u16, Option<u16>, String) {
    let value = avp_value(bytes, avp_type::RESULT_CODE).expect("Result Code AVP");
    let rc = crate::l2tp::ResultCode::parse(&value).unwrap();
    (rc.result, rc.error, rc.message)
}
