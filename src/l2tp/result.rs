//! The Result Code AVP (RFC 2661 §4.4.2): why a tunnel (StopCCN) or a call (CDN) ends.

/// Result codes of StopCCN (§4.4.2).
pub mod stopccn {
    /// General request to clear control connection.
    pub const GENERAL_REQUEST: u16 = 1;
    /// General error; the Error Code says which.
    pub const GENERAL_ERROR: u16 = 2;
    /// Control channel already exists.
    pub const ALREADY_EXISTS: u16 = 3;
    /// Requester is not authorized to establish a control channel.
    pub const NOT_AUTHORIZED: u16 = 4;
    /// The protocol version of the requester is not supported.
    pub const BAD_PROTOCOL_VERSION: u16 = 5;
    /// Requester is being shut down.
    pub const SHUTTING_DOWN: u16 = 6;
    /// Finite state machine error.
    pub const FSM_ERROR: u16 = 7;
}

/// Result codes of CDN (§4.4.2).
pub mod cdn {
    /// Call disconnected due to loss of carrier.
    pub const LOST_CARRIER: u16 = 1;
    /// General error; the Error Code says which.
    pub const GENERAL_ERROR: u16 = 2;
    /// Call disconnected for administrative reasons.
    pub const ADMINISTRATIVE: u16 = 3;
    /// Call failed due to lack of appropriate facilities being available (temporary).
    pub const TEMPORARY_LACK: u16 = 4;
    /// Call failed due to lack of appropriate facilities being available (permanent).
    pub const PERMANENT_LACK: u16 = 5;
    /// Call was not established within time allotted.
    pub const TIMEOUT: u16 = 10;
}

/// General error codes (§4.4.2), carried with result code 2.
pub mod error {
    /// No general error.
    pub const NONE: u16 = 0;
    /// No control connection exists yet for this LAC-LNS pair.
    pub const NO_CONTROL_CONNECTION: u16 = 1;
    /// Length is wrong.
    pub const BAD_LENGTH: u16 = 2;
    /// One of the field values was out of range or reserved field was non-zero.
    pub const BAD_VALUE: u16 = 3;
    /// Insufficient resources to handle this operation now.
    pub const NO_RESOURCES: u16 = 4;
    /// The Session ID is invalid in this context.
    pub const BAD_SESSION_ID: u16 = 5;
    /// A generic vendor-specific error occurred in the LAC.
    pub const VENDOR: u16 = 6;
    /// Try another LNS.
    pub const TRY_ANOTHER: u16 = 7;
    /// Session or tunnel was shut down due to receipt of an unknown AVP with the M
    /// bit set.
    pub const UNKNOWN_MANDATORY_AVP: u16 = 8;
}

/// Longest error message we put on the wire or accept into a cause string.
const MAX_MESSAGE: usize = 200;

/// A Result Code AVP value: result code, optional error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultCode {
    /// The result code ([`stopccn`] or [`cdn`] constants).
    pub result: u16,
    /// The general error code ([`error`] constants), if present.
    pub error: Option<u16>,
    /// A human-readable message (may be empty).
    pub message: String,
}

impl ResultCode {
    /// A result with an error code and a message.
    pub fn new(result: u16, error: Option<u16>, message: impl Into<String>) -> ResultCode {
        ResultCode {
            result,
            error,
            message: message.into(),
        }
    }

    /// Result 2 (general error) with `error` and a message.
    pub fn general_error(error: u16, message: impl Into<String>) -> ResultCode {
        ResultCode::new(stopccn::GENERAL_ERROR, Some(error), message)
    }

    /// Parses the AVP value (at least the 2-octet result code).
    pub fn parse(value: &[u8]) -> Option<ResultCode> {
        let result = u16::from_be_bytes([*value.first()?, *value.get(1)?]);
        let error = match value.get(2..4) {
            Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
            _ => None,
        };
        let text = value.get(4..).unwrap_or(&[]);
        Some(ResultCode {
            result,
            error,
            message: printable(text),
        })
    }

    /// The AVP value. An error message forces an error code (0 if none was given).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.result.to_be_bytes().to_vec();
        let message = truncate(self.message.as_bytes(), MAX_MESSAGE);
        if self.error.is_some() || !message.is_empty() {
            out.extend_from_slice(&self.error.unwrap_or(error::NONE).to_be_bytes());
            out.extend_from_slice(message);
        }
        out
    }

    /// In words, for a StopCCN (`tunnel`) or a CDN.
    pub fn describe(&self, tunnel: bool) -> String {
        let name = if tunnel {
            stopccn_name(self.result)
        } else {
            cdn_name(self.result)
        };
        let mut text = format!("result {} ({name})", self.result);
        if let Some(code) = self.error.filter(|&e| e != error::NONE) {
            text.push_str(&format!(", error {code} ({})", error_name(code)));
        }
        if !self.message.is_empty() {
            text.push_str(": ");
            text.push_str(&self.message);
        }
        text
    }
}

fn truncate(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// Peer-supplied text made safe for logs: lossy UTF-8, control characters replaced,
/// at most 200 octets considered.
pub(crate) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(truncate(bytes, MAX_MESSAGE))
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn stopccn_name(code: u16) -> &'static str {
    match code {
        stopccn::GENERAL_REQUEST => "general request to clear control connection",
        stopccn::GENERAL_ERROR => "general error",
        stopccn::ALREADY_EXISTS => "control channel already exists",
        stopccn::NOT_AUTHORIZED => "requester is not authorized",
        stopccn::BAD_PROTOCOL_VERSION => "protocol version not supported",
        stopccn::SHUTTING_DOWN => "requester is being shut down",
        stopccn::FSM_ERROR => "finite state machine error",
        _ => "unknown result",
    }
}

fn cdn_name(code: u16) -> &'static str {
    match code {
        cdn::LOST_CARRIER => "loss of carrier",
        cdn::GENERAL_ERROR => "general error",
        cdn::ADMINISTRATIVE => "administrative reasons",
        cdn::TEMPORARY_LACK => "temporary lack of facilities",
        cdn::PERMANENT_LACK => "permanent lack of facilities",
        6 => "invalid destination",
        7 => "no carrier detected",
        8 => "busy signal",
        9 => "no dial tone",
        cdn::TIMEOUT => "call not established in time",
        11 => "no appropriate framing detected",
        _ => "unknown result",
    }
}

fn error_name(code: u16) -> &'static str {
    match code {
        error::NO_CONTROL_CONNECTION => "no control connection",
        error::BAD_LENGTH => "length is wrong",
        error::BAD_VALUE => "field value out of range",
        error::NO_RESOURCES => "insufficient resources",
        error::BAD_SESSION_ID => "invalid session id",
        error::VENDOR => "vendor-specific error",
        error::TRY_ANOTHER => "try another LNS",
        error::UNKNOWN_MANDATORY_AVP => "unknown mandatory AVP",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Result Code of the captured StopCCN (ikev1-natt frame 42): 0001 0000 "Goodbye!"
    #[test]
    fn parses_captured_stopccn_result() {
        let value = b"\x00\x01\x00\x00Goodbye!";
        let rc = ResultCode::parse(value).unwrap();
        assert_eq!(rc, ResultCode::new(1, Some(0), "Goodbye!"));
        assert_eq!(rc.encode(), value);
        assert_eq!(
            rc.describe(true),
            "result 1 (general request to clear control connection): Goodbye!"
        );
    }

    #[test]
    fn short_forms_and_hostile_text() {
        assert_eq!(ResultCode::parse(&[0]), None);
        assert_eq!(
            ResultCode::parse(&[0, 3]),
            Some(ResultCode::new(3, None, ""))
        );
        assert_eq!(ResultCode::new(3, None, "").encode(), [0, 3]);
        assert_eq!(ResultCode::parse(&[0, 2, 0]).unwrap().error, None);
        let rc = ResultCode::parse(b"\x00\x02\x00\x08bad\nline\xff").unwrap();
        assert_eq!(rc.message, "bad?line\u{fffd}");
        assert_eq!(
            rc.describe(false),
            "result 2 (general error), error 8 (unknown mandatory AVP): bad?line\u{fffd}"
        );
        let long = ResultCode::new(1, None, "x".repeat(5000));
        assert_eq!(long.encode().len(), 4 + 200);
    }
}
