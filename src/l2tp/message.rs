//! Reading control messages: the AVPs of one message gathered into [`Avps`], hidden
//! ones unhidden (§4.3), and checked against §4.1 (unknown AVPs with the M bit),
//! §4.4 (value lengths) and §6 (the AVPs each message type requires).
//!
//! The rule for AVPs we cannot use: if the M bit is set, the message is in error
//! ([`Problem`], answered by StopCCN or CDN); if it is clear, the AVP is ignored.

use std::borrow::Cow;

use crate::wire;
use crate::wire::l2tp::{AvpIter, MessageType, Packet, avp_type};

use super::hidden;
use super::result::{ResultCode, error, stopccn};

/// The message type, or the raw value of one this module does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Known(MessageType),
    /// §4.4.1: an unknown type with the M bit set clears the tunnel; without it the
    /// message is ignored.
    Unknown {
        value: u16,
        mandatory: bool,
    },
}

impl Kind {
    /// Whether the message concerns one call (answered with CDN) rather than the
    /// control connection (answered with StopCCN).
    pub(crate) fn is_session_level(self) -> bool {
        use MessageType::*;
        matches!(
            self,
            Kind::Known(Ocrq | Ocrp | Occn | Icrq | Icrp | Iccn | Cdn | Wen | Sli)
        )
    }
}

/// Why a message cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// An AVP we do not know, with the M bit set (§4.2 / §4.1).
    UnknownMandatory { vendor_id: u16, attribute_type: u16 },
    /// A known mandatory AVP whose value we cannot use.
    BadAvp {
        attribute_type: u16,
        error: u16,
        why: &'static str,
    },
    /// A required AVP is absent.
    Missing(u16),
    /// Protocol Version other than 1.0 (§4.4.3).
    ProtocolVersion([u8; 2]),
}

impl Problem {
    /// The Result Code to send with the StopCCN or CDN this problem causes.
    pub(crate) fn result_code(&self) -> ResultCode {
        match self {
            Problem::UnknownMandatory {
                vendor_id,
                attribute_type,
            } => ResultCode::general_error(
                error::UNKNOWN_MANDATORY_AVP,
                format!("unknown mandatory AVP (vendor {vendor_id}, type {attribute_type})"),
            ),
            Problem::BadAvp {
                attribute_type,
                error,
                why,
            } => ResultCode::general_error(
                *error,
                format!("{} AVP: {why}", avp_name(*attribute_type)),
            ),
            Problem::Missing(attribute_type) => ResultCode::general_error(
                error::BAD_VALUE,
                format!("missing mandatory AVP {}", avp_name(*attribute_type)),
            ),
            Problem::ProtocolVersion([version, revision]) => ResultCode::new(
                stopccn::BAD_PROTOCOL_VERSION,
                Some(0x0100), // §4.4.2: the error code carries the highest version we speak
                format!("protocol version {version}.{revision} not supported; 1.0 is"),
            ),
        }
    }
}

/// The AVPs of one message that the machines use. Absent AVPs are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Avps {
    /// Bit `t` set: an AVP of vendor 0 and type `t` was present and usable.
    present: u64,
    pub result_code: Option<ResultCode>,
    pub protocol_version: Option<[u8; 2]>,
    pub framing_capabilities: Option<u32>,
    pub host_name: Option<Vec<u8>>,
    pub assigned_tunnel_id: Option<u16>,
    pub receive_window_size: Option<u16>,
    pub challenge: Option<Vec<u8>>,
    pub challenge_response: Option<Vec<u8>>,
    pub assigned_session_id: Option<u16>,
    pub call_serial_number: Option<u32>,
    pub framing_type: Option<u32>,
    pub tx_connect_speed: Option<u32>,
    pub called_number: Option<Vec<u8>>,
    pub calling_number: Option<Vec<u8>>,
    pub call_errors: Option<[u32; 6]>,
    pub accm: Option<(u32, u32)>,
    pub sequencing_required: bool,
}

impl Avps {
    /// Whether an AVP of `attribute_type` was present and usable.
    pub(crate) fn has(&self, attribute_type: u16) -> bool {
        attribute_type < 64 && self.present & (1 << attribute_type) != 0
    }
}

/// One control message, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub kind: Kind,
    pub avps: Avps,
    /// The first problem found, if any.
    pub problem: Option<Problem>,
}

/// Checks the structure of a control message before the reliable layer takes it: every
/// AVP's length is sane and the first is a visible vendor-0 Message Type AVP.
/// `Ok(None)` for a ZLB. Errors mean the bytes are garbage and are dropped unacked.
pub(crate) fn preflight(packet: &Packet<&[u8]>) -> wire::Result<Option<Kind>> {
    let mut avps = packet.avps();
    let Some(first) = avps.next() else {
        return Ok(None);
    };
    let first = first?;
    let value = match first.value_u16() {
        Some(v) if first.vendor_id == 0 && !first.hidden => v,
        _ => return Err(wire::Error::Malformed),
    };
    if first.attribute_type != avp_type::MESSAGE_TYPE {
        return Err(wire::Error::Malformed);
    }
    for avp in avps {
        avp?;
    }
    Ok(Some(match MessageType::try_from(value) {
        Ok(known) => Kind::Known(known),
        Err(_) => Kind::Unknown {
            value,
            mandatory: first.mandatory,
        },
    }))
}

/// (min length, max length, may be hidden) of a vendor-0 AVP value; `None` for types
/// RFC 2661 does not define.
fn spec(attribute_type: u16) -> Option<(usize, usize, bool)> {
    const ANY: usize = 1023;
    Some(match attribute_type {
        0 | 2 => (2, 2, false), // Message Type, Protocol Version
        1 => (2, ANY, false),   // Result Code
        3 | 4 => (4, 4, true),  // Framing / Bearer Capabilities
        5 => (8, 8, false),     // Tie Breaker
        6 => (2, 2, true),      // Firmware Revision
        7 => (1, ANY, false),   // Host Name
        8 => (0, ANY, true),    // Vendor Name
        9 | 14 => (2, 2, true), // Assigned Tunnel / Session ID
        10 => (2, 2, false),    // Receive Window Size
        11 => (1, ANY, true),   // Challenge
        12 => (3, ANY, false),  // Q.931 Cause Code
        13 => (16, 16, true),   // Challenge Response
        15..=19 | 24 | 25 | 38 => (4, 4, true),
        21..=23 | 26..=28 | 30 | 31 | 33 | 37 => (0, ANY, true),
        29 | 32 => (2, 2, true), // Proxy Authen Type / ID
        34 => (26, 26, true),    // Call Errors
        35 => (10, 10, true),    // ACCM
        36 => (1, ANY, false),   // Random Vector
        39 => (0, 0, false),     // Sequencing Required
        _ => return None,
    })
}

/// Name of a vendor-0 AVP, for messages.
pub(crate) fn avp_name(attribute_type: u16) -> &'static str {
    match attribute_type {
        avp_type::RESULT_CODE => "Result Code",
        avp_type::PROTOCOL_VERSION => "Protocol Version",
        avp_type::FRAMING_CAPABILITIES => "Framing Capabilities",
        avp_type::HOST_NAME => "Host Name",
        avp_type::ASSIGNED_TUNNEL_ID => "Assigned Tunnel ID",
        avp_type::RECEIVE_WINDOW_SIZE => "Receive Window Size",
        avp_type::CHALLENGE => "Challenge",
        avp_type::CHALLENGE_RESPONSE => "Challenge Response",
        avp_type::ASSIGNED_SESSION_ID => "Assigned Session ID",
        avp_type::CALL_SERIAL_NUMBER => "Call Serial Number",
        avp_type::FRAMING_TYPE => "Framing Type",
        avp_type::TX_CONNECT_SPEED => "(Tx) Connect Speed",
        avp_type::CALL_ERRORS => "Call Errors",
        avp_type::ACCM => "ACCM",
        avp_type::RANDOM_VECTOR => "Random Vector",
        _ => "an",
    }
}

/// AVPs each message type must carry (§6). StopCCN and CDN are honoured even when
/// incomplete: the peer is leaving either way.
fn required(kind: Kind) -> &'static [u16] {
    use MessageType::*;
    match kind {
        Kind::Known(Sccrq | Sccrp) => &[
            avp_type::PROTOCOL_VERSION,
            avp_type::HOST_NAME,
            avp_type::FRAMING_CAPABILITIES,
            avp_type::ASSIGNED_TUNNEL_ID,
        ],
        Kind::Known(Icrq) => &[avp_type::ASSIGNED_SESSION_ID, avp_type::CALL_SERIAL_NUMBER],
        Kind::Known(Icrp | Ocrq) => &[avp_type::ASSIGNED_SESSION_ID],
        Kind::Known(Iccn) => &[avp_type::TX_CONNECT_SPEED, avp_type::FRAMING_TYPE],
        Kind::Known(Wen) => &[avp_type::CALL_ERRORS],
        Kind::Known(Sli) => &[avp_type::ACCM],
        _ => &[],
    }
}

/// Reads the AVPs of a control message that passed [`preflight`], unhiding with
/// `secret`. `None` for a ZLB or bytes that fail [`preflight`].
pub(crate) fn parse(packet: &Packet<&[u8]>, secret: Option<&[u8]>) -> Option<Message> {
    let kind = preflight(packet).ok()??;
    let mut message = Message {
        kind,
        avps: Avps::default(),
        problem: None,
    };
    let mut random_vector: Option<&[u8]> = None;
    for avp in AvpIter::new(packet.payload()).skip(1) {
        let avp = avp.ok()?;
        let attribute_type = avp.attribute_type;
        let mut fail = |problem: Problem| {
            if avp.mandatory && message.problem.is_none() {
                message.problem = Some(problem);
            }
        };
        let spec = spec(attribute_type).filter(|_| avp.vendor_id == 0);
        let Some((min, max, may_hide)) = spec else {
            fail(Problem::UnknownMandatory {
                vendor_id: avp.vendor_id,
                attribute_type,
            });
            continue;
        };
        let bad = |error, why| Problem::BadAvp {
            attribute_type,
            error,
            why,
        };
        if attribute_type == avp_type::RANDOM_VECTOR && !avp.hidden {
            random_vector = Some(avp.value);
            continue;
        }
        let value: Cow<'_, [u8]> = if !avp.hidden {
            Cow::Borrowed(avp.value)
        } else if !may_hide {
            fail(bad(error::BAD_VALUE, "may not be hidden"));
            continue;
        } else {
            let unhidden = match (secret, random_vector) {
                (Some(secret), Some(rv)) => hidden::unhide(attribute_type, secret, rv, avp.value),
                _ => None,
            };
            match unhidden {
                Some(plain) => Cow::Owned(plain.to_vec()),
                None => {
                    fail(bad(
                        error::BAD_VALUE,
                        "cannot unhide (secret or Random Vector missing or wrong)",
                    ));
                    continue;
                }
            }
        };
        if value.len() < min || value.len() > max {
            fail(bad(error::BAD_LENGTH, "length is wrong"));
            continue;
        }
        store(&mut message.avps, attribute_type, &value);
        if attribute_type < 64 {
            message.avps.present |= 1 << attribute_type;
        }
    }
    if message.problem.is_none() {
        message.problem = validate(&message);
    }
    Some(message)
}

fn validate(message: &Message) -> Option<Problem> {
    if let Some(&missing) = required(message.kind)
        .iter()
        .find(|&&t| !message.avps.has(t))
    {
        return Some(Problem::Missing(missing));
    }
    match message.avps.protocol_version {
        Some(version) if version != [1, 0] => Some(Problem::ProtocolVersion(version)),
        _ => None,
    }
}

fn be_u16(value: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(value.get(..2)?.try_into().ok()?))
}

fn be_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// Keeps the AVPs the machines use; lengths were checked against [`spec`].
fn store(avps: &mut Avps, attribute_type: u16, value: &[u8]) {
    match attribute_type {
        avp_type::RESULT_CODE => avps.result_code = ResultCode::parse(value),
        avp_type::PROTOCOL_VERSION => avps.protocol_version = value.try_into().ok(),
        avp_type::FRAMING_CAPABILITIES => avps.framing_capabilities = be_u32(value),
        avp_type::HOST_NAME => avps.host_name = Some(value.to_vec()),
        avp_type::ASSIGNED_TUNNEL_ID => avps.assigned_tunnel_id = be_u16(value),
        avp_type::RECEIVE_WINDOW_SIZE => avps.receive_window_size = be_u16(value),
        avp_type::CHALLENGE => avps.challenge = Some(value.to_vec()),
        avp_type::CHALLENGE_RESPONSE => avps.challenge_response = Some(value.to_vec()),
        avp_type::ASSIGNED_SESSION_ID => avps.assigned_session_id = be_u16(value),
        avp_type::CALL_SERIAL_NUMBER => avps.call_serial_number = be_u32(value),
        avp_type::FRAMING_TYPE => avps.framing_type = be_u32(value),
        avp_type::TX_CONNECT_SPEED => avps.tx_connect_speed = be_u32(value),
        avp_type::CALLED_NUMBER => avps.called_number = Some(value.to_vec()),
        avp_type::CALLING_NUMBER => avps.calling_number = Some(value.to_vec()),
        avp_type::SEQUENCING_REQUIRED => avps.sequencing_required = true,
        avp_type::ACCM => {
            avps.accm =
                be_u32(value.get(2..).unwrap_or(&[])).zip(be_u32(value.get(6..).unwrap_or(&[])));
        }
        avp_type::CALL_ERRORS => {
            let mut errors = [0u32; 6];
            for (i, slot) in errors.iter_mut().enumerate() {
                *slot = be_u32(value.get(2 + 4 * i..).unwrap_or(&[])).unwrap_or(0);
            }
            avps.call_errors = Some(errors);
        }
        _ => {}
    }
}
