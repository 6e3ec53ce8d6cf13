//! Writing control messages: a [`Builder`] appends AVPs after the Message Type AVP
//! with the wire layer's [`Avp::emit`], hides the sensitive ones (§4.3) behind a
//! Random Vector AVP when the tunnel has a secret and hiding is on, and prefixes the
//! control header ([`Repr::control`]). Ns and Nr are filled in by the reliable layer
//! at each (re)transmission.

use crate::wire::l2tp::avp::AVP_MAX_LEN;
use crate::wire::l2tp::{Avp, CONTROL_HEADER_LEN, MessageType, Packet, Repr, Sequence, avp_type};

use super::config::Secret;
use super::hidden;
use super::result::ResultCode;

/// AVPs we hide when hiding is on: ids and call details, not the ones the RFC says
/// must stay visible (Message Type, Random Vector, Result Code, Host Name, Protocol
/// Version, Receive Window Size).
fn sensitive(attribute_type: u16) -> bool {
    matches!(
        attribute_type,
        avp_type::ASSIGNED_TUNNEL_ID
            | avp_type::ASSIGNED_SESSION_ID
            | avp_type::CALL_SERIAL_NUMBER
            | avp_type::CALLED_NUMBER
            | avp_type::CALLING_NUMBER
    )
}

/// Secret and Random Vector for the hidden AVPs of one message.
struct Hiding {
    secret: Secret,
    random_vector: [u8; 16],
    announced: bool,
}

/// One outgoing control message under construction.
pub(crate) struct Builder {
    buf: Vec<u8>,
    hiding: Option<Hiding>,
}

impl Builder {
    /// A message of type `message_type`, nothing hidden.
    pub(crate) fn new(message_type: MessageType) -> Builder {
        let mut builder = Builder {
            buf: vec![0; CONTROL_HEADER_LEN],
            hiding: None,
        };
        builder.u16(true, avp_type::MESSAGE_TYPE, message_type as u16);
        builder
    }

    /// Hide sensitive AVPs with `secret`, announcing `random_vector` before the first.
    pub(crate) fn hiding(mut self, secret: &Secret, random_vector: [u8; 16]) -> Builder {
        self.hiding = Some(Hiding {
            secret: secret.clone(),
            random_vector,
            announced: false,
        });
        self
    }

    fn push(&mut self, avp: &Avp<'_>) {
        let start = self.buf.len();
        self.buf.resize(start + avp.buffer_len(), 0);
        if avp.emit(&mut self.buf[start..]).is_err() {
            self.buf.truncate(start);
        }
    }

    /// Appends an AVP, hidden if it is sensitive and hiding is on. Values too long
    /// for an AVP are truncated.
    pub(crate) fn bytes(&mut self, mandatory: bool, attribute_type: u16, value: &[u8]) {
        let value = &value[..value.len().min(AVP_MAX_LEN - 6 - 2)];
        let hide = sensitive(attribute_type);
        let Some(hiding) = self.hiding.as_mut().filter(|_| hide) else {
            self.push(&Avp::ietf(mandatory, attribute_type, value));
            return;
        };
        let announce = !hiding.announced;
        hiding.announced = true;
        let random_vector = hiding.random_vector;
        let hidden = hidden::hide(
            attribute_type,
            hiding.secret.expose(),
            &random_vector,
            value,
            &[],
        );
        if announce {
            self.push(&Avp::ietf(true, avp_type::RANDOM_VECTOR, &random_vector));
        }
        self.push(&Avp {
            mandatory,
            hidden: true,
            vendor_id: 0,
            attribute_type,
            value: &hidden,
        });
    }

    /// Appends an AVP with a 16-bit value.
    pub(crate) fn u16(&mut self, mandatory: bool, attribute_type: u16, value: u16) {
        self.bytes(mandatory, attribute_type, &value.to_be_bytes());
    }

    /// Appends an AVP with a 32-bit value.
    pub(crate) fn u32(&mut self, mandatory: bool, attribute_type: u16, value: u32) {
        self.bytes(mandatory, attribute_type, &value.to_be_bytes());
    }

    /// Appends a Result Code AVP (mandatory).
    pub(crate) fn result_code(&mut self, result: &ResultCode) {
        self.bytes(true, avp_type::RESULT_CODE, &result.encode());
    }

    /// The complete message addressed to the peer's `tunnel_id` / `session_id`, with
    /// Ns = Nr = 0 until the reliable layer sends it.
    pub(crate) fn finish(mut self, tunnel_id: u16, session_id: u16) -> Option<Vec<u8>> {
        let avps_len = self.buf.len() - CONTROL_HEADER_LEN;
        let repr = Repr::control(tunnel_id, session_id, Sequence::default(), avps_len);
        repr.emit(&mut Packet::new_unchecked(&mut self.buf[..]))
            .ok()?;
        Some(self.buf)
    }
}

/// A ZLB acknowledgement (§5.8): a control header without AVPs.
pub(crate) fn zlb(tunnel_id: u16, sequence: Sequence) -> Vec<u8> {
    let mut out = vec![0; CONTROL_HEADER_LEN];
    let repr = Repr::control(tunnel_id, 0, sequence, 0);
    match repr.emit(&mut Packet::new_unchecked(&mut out[..])) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2tp::message::{self, Kind, Problem};
    use crate::wire::test_util::natt_l2tp;

    // The captured ZLB (ikev1-natt frame 13): tunnel 31440, Ns 1, Nr 2.
    #[test]
    fn zlb_matches_capture() {
        assert_eq!(zlb(31440, Sequence { ns: 1, nr: 2 }), natt_l2tp(13));
    }

    // Rebuild the captured StopCCN (frame 42) byte for byte (Ns/Nr set as sent).
    #[test]
    fn stopccn_matches_capture() {
        let mut builder = Builder::new(MessageType::StopCcn);
        builder.u16(true, avp_type::ASSIGNED_TUNNEL_ID, 31440);
        builder.result_code(&ResultCode::new(1, Some(0), "Goodbye!"));
        let mut bytes = builder.finish(4894, 0).unwrap();
        Packet::new_unchecked(&mut bytes[..])
            .set_sequence(Sequence { ns: 5, nr: 2 })
            .unwrap();
        assert_eq!(bytes, natt_l2tp(42));
    }

    #[test]
    fn hidden_avps_round_trip_through_the_parser() {
        let secret = Secret::new("tunnel-secret");
        let mut builder = Builder::new(MessageType::Icrq).hiding(&secret, [7; 16]);
        builder.u16(true, avp_type::ASSIGNED_SESSION_ID, 0xbeef);
        builder.u32(true, avp_type::CALL_SERIAL_NUMBER, 42);
        builder.bytes(
            false,
            avp_type::CALLING_NUMBER,
            b"+81-3-0000-0000 a long number",
        );
        builder.u32(true, avp_type::BEARER_TYPE, 0); // not sensitive: stays visible
        let bytes = builder.finish(77, 0).unwrap();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let flags: Vec<(u16, bool)> = packet
            .avps()
            .map(|a| a.map(|a| (a.attribute_type, a.hidden)).unwrap())
            .collect();
        assert_eq!(
            flags,
            [
                (avp_type::MESSAGE_TYPE, false),
                (avp_type::RANDOM_VECTOR, false),
                (avp_type::ASSIGNED_SESSION_ID, true),
                (avp_type::CALL_SERIAL_NUMBER, true),
                (avp_type::CALLING_NUMBER, true),
                (avp_type::BEARER_TYPE, false),
            ]
        );
        let read = message::parse(&packet, Some(b"tunnel-secret")).unwrap();
        assert_eq!(read.kind, Kind::Known(MessageType::Icrq));
        assert_eq!(read.problem, None);
        assert_eq!(read.avps.assigned_session_id, Some(0xbeef));
        assert_eq!(read.avps.call_serial_number, Some(42));
        assert_eq!(
            read.avps.calling_number.as_deref(),
            Some(&b"+81-3-0000-0000 a long number"[..])
        );
        // Without the secret the mandatory hidden AVPs are unusable.
        let blind = message::parse(&packet, None).unwrap();
        assert!(matches!(
            blind.problem,
            Some(Problem::BadAvp {
                attribute_type: 14,
                ..
            })
        ));
        let wrong = message::parse(&packet, Some(b"other")).unwrap();
        assert!(wrong.problem.is_some());
    }

    #[test]
    fn over_long_values_are_truncated_not_fatal() {
        let mut builder = Builder::new(MessageType::Sccrq);
        builder.bytes(true, avp_type::HOST_NAME, &[b'h'; 5000]);
        let bytes = builder.finish(0, 0).unwrap();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let host = packet.avps().nth(1).unwrap().unwrap();
        assert_eq!(host.buffer_len(), AVP_MAX_LEN - 2);
    }
}
