//! ISAKMP messages for IKEv1 (RFC 2408 §3, the IPsec DOI of RFC 2407, NAT-T of RFC 3947).
//!
//! ```text
//! |                     Initiator Cookie (8)                      |
//! |                     Responder Cookie (8)                      |
//! | Next Payload  | MjVer | MnVer | Exchange Type |     Flags     |
//! |                          Message ID                           |
//! |                            Length                             |
//! ```
//!
//! The header (§3.1) is followed by a chain of payloads, each starting with the
//! 4-octet generic payload header (§3.2): Next Payload, RESERVED, Payload Length
//! (which counts the generic header). [`payloads`] walks a chain, [`ChainBuilder`]
//! writes one with the Next Payload fields fixed up, [`build_message`] puts a header in
//! front. Encryption (the E flag, RFC 2409 App. B) lives in `ike::v1::keys`.
//!
//! The payload bodies this gateway reads and writes are parsed into owned reprs, each
//! with `parse(body)` and `emit() -> Vec<u8>` over the body *without* the generic
//! header (the form IKEv1 hashes them in, e.g. `SAi_b`, `IDii_b`):
//! [`SaPayload`] with its [`Proposal`]s, [`Transform`]s and [`Attribute`]s (RFC 2408
//! §3.4–3.6, RFC 2407 §4.6.1), [`Identification`] (RFC 2407 §4.6.2), [`Notification`]
//! (§3.14) and [`Delete`] (§3.15). KE, NONCE, HASH, VID and NAT-D bodies are opaque
//! octets and need no type.
//!
//! Nothing here panics on bytes from the wire: every length is checked and a failure is
//! a [`Malformed`] naming the part that failed.

use core::fmt;

use super::{Error, Field, read_u16, read_u32, write_u16, write_u32};

mod sa;
pub use sa::{
    AttrValue, Attribute, DOI_IPSEC, Proposal, SIT_IDENTITY_ONLY, SaPayload, TRANSFORM_KEY_IKE,
    Transform, p1, p1attr, p2, p2attr, protocol,
};
mod payloads;
pub use payloads::{Delete, Identification, NatTVariant, Notification, id_type, is_nat_t, vendor};

/// Length of the ISAKMP header.
pub const HEADER_LEN: usize = 28;
/// Length of the generic payload header (§3.2).
pub const PAYLOAD_HEADER_LEN: usize = 4;
/// Major version 1, minor version 0 (§3.1): the version octet of every IKEv1 message.
pub const VERSION: u8 = 0x10;

/// Payload types (RFC 2408 §3.1; NAT-D and NAT-OA: RFC 3947 §3.2, §5.2; their draft
/// numbers: draft-ietf-ipsec-nat-t-ike-02/03).
pub mod payload {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 1;
    pub const PROPOSAL: u8 = 2;
    pub const TRANSFORM: u8 = 3;
    pub const KE: u8 = 4;
    pub const ID: u8 = 5;
    pub const CERT: u8 = 6;
    pub const CERTREQ: u8 = 7;
    pub const HASH: u8 = 8;
    pub const SIG: u8 = 9;
    pub const NONCE: u8 = 10;
    pub const N: u8 = 11;
    pub const D: u8 = 12;
    pub const VID: u8 = 13;
    pub const NAT_D: u8 = 20;
    pub const NAT_OA: u8 = 21;
    pub const NAT_D_DRAFT: u8 = 130;
    pub const NAT_OA_DRAFT: u8 = 131;
}

/// Exchange types (RFC 2408 §3.1; Quick Mode: RFC 2409 §5.5).
pub mod exchange {
    /// Identity Protection, i.e. Main Mode.
    pub const MAIN: u8 = 2;
    pub const AGGRESSIVE: u8 = 4;
    pub const INFORMATIONAL: u8 = 5;
    pub const QUICK: u8 = 32;
}

/// Header flags (RFC 2408 §3.1).
pub mod flags {
    /// E: the payloads after the header are encrypted.
    pub const ENCRYPTION: u8 = 1;
    /// C: commit bit.
    pub const COMMIT: u8 = 2;
    /// A: authentication only.
    pub const AUTH_ONLY: u8 = 4;
}

/// Notify message types: errors of RFC 2408 §3.14.1, status of RFC 2407 §4.6.3 and
/// DPD of RFC 3706 §5.
pub mod notify {
    pub const INVALID_PAYLOAD_TYPE: u16 = 1;
    pub const DOI_NOT_SUPPORTED: u16 = 2;
    pub const SITUATION_NOT_SUPPORTED: u16 = 3;
    pub const INVALID_COOKIE: u16 = 4;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_MINOR_VERSION: u16 = 6;
    pub const INVALID_EXCHANGE_TYPE: u16 = 7;
    pub const INVALID_FLAGS: u16 = 8;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const INVALID_PROTOCOL_ID: u16 = 10;
    pub const INVALID_SPI: u16 = 11;
    pub const INVALID_TRANSFORM_ID: u16 = 12;
    pub const ATTRIBUTES_NOT_SUPPORTED: u16 = 13;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const BAD_PROPOSAL_SYNTAX: u16 = 15;
    pub const PAYLOAD_MALFORMED: u16 = 16;
    pub const INVALID_KEY_INFORMATION: u16 = 17;
    pub const INVALID_ID_INFORMATION: u16 = 18;
    pub const INVALID_HASH_INFORMATION: u16 = 23;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const INVALID_SIGNATURE: u16 = 25;
    pub const UNSUPPORTED_EXCHANGE_TYPE: u16 = 29;
    pub const RESPONDER_LIFETIME: u16 = 24576;
    pub const REPLAY_STATUS: u16 = 24577;
    pub const INITIAL_CONTACT: u16 = 24578;
    pub const R_U_THERE: u16 = 36136;
    pub const R_U_THERE_ACK: u16 = 36137;
}

/// Why bytes are not a well-formed ISAKMP message or payload: which part (`what`) and
/// the wire error (`why`). A responder answers most of these with PAYLOAD-MALFORMED;
/// `why` = [`Error::BadVersion`] is INVALID-MAJOR-VERSION.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Malformed {
    /// The part that failed, e.g. `"header"`, `"payload chain"`, `"transform"`.
    pub what: &'static str,
    /// What was wrong with it.
    pub why: Error,
}

impl Malformed {
    pub(crate) const fn new(what: &'static str, why: Error) -> Malformed {
        Malformed { what, why }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed ISAKMP {}: {}", self.what, self.why)
    }
}

impl std::error::Error for Malformed {}

impl From<Malformed> for Error {
    fn from(malformed: Malformed) -> Error {
        malformed.why
    }
}

mod field {
    use crate::wire::Field;
    pub const INITIATOR_COOKIE: Field = 0..8;
    pub const RESPONDER_COOKIE: Field = 8..16;
    pub const NEXT_PAYLOAD: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MESSAGE_ID: Field = 20..24;
    pub const LENGTH: Field = 24..28;
}

/// A read/write view of an ISAKMP message: header and payload chain.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without any check; for emitting. Accessors panic if it is
    /// shorter than [`HEADER_LEN`].
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking that it holds the header, that the major version
    /// is 1 ([`Error::BadVersion`]), and that the Length field covers the header and
    /// fits the buffer ([`Error::BadLength`], [`Error::Truncated`]). Octets past Length
    /// are ignored by [`Packet::body`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Malformed::new("header", Error::Truncated));
        }
        if bytes[field::VERSION] >> 4 != 1 {
            return Err(Malformed::new("header", Error::BadVersion));
        }
        let length = usize::try_from(read_u32(&bytes[field::LENGTH])).unwrap_or(usize::MAX);
        if length < HEADER_LEN {
            return Err(Malformed::new("header", Error::BadLength));
        }
        if length > bytes.len() {
            return Err(Malformed::new("header", Error::Truncated));
        }
        Ok(Packet { buffer })
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn cookie(&self, range: Field) -> [u8; 8] {
        let mut cookie = [0; 8];
        cookie.copy_from_slice(&self.buffer.as_ref()[range]);
        cookie
    }

    /// Initiator Cookie (CKY-I).
    pub fn initiator_cookie(&self) -> [u8; 8] {
        self.cookie(field::INITIATOR_COOKIE)
    }

    /// Responder Cookie (CKY-R), zero in the first message of an exchange.
    pub fn responder_cookie(&self) -> [u8; 8] {
        self.cookie(field::RESPONDER_COOKIE)
    }

    /// Type of the first payload.
    pub fn next_payload(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_PAYLOAD]
    }

    /// Major and minor version octet (0x10).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// Exchange type (see [`exchange`]).
    pub fn exchange(&self) -> u8 {
        self.buffer.as_ref()[field::EXCHANGE]
    }

    /// Flags (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Message ID: 0 in Main Mode, random per Quick Mode / informational exchange.
    pub fn message_id(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MESSAGE_ID])
    }

    /// Length of the whole message, header included.
    pub fn length(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The payload chain (ciphertext when the E flag is set): from the end of the
    /// header to Length, clamped to the buffer.
    pub fn body(&self) -> &[u8] {
        let end = usize::try_from(self.length()).unwrap_or(usize::MAX);
        super::clamped(self.buffer.as_ref(), HEADER_LEN, end)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the Next Payload field of the header.
    pub fn set_next_payload(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_PAYLOAD] = value;
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the Length field.
    pub fn set_length(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::LENGTH], value);
    }
}

/// The meaning of an ISAKMP header (RFC 2408 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub initiator_cookie: [u8; 8],
    pub responder_cookie: [u8; 8],
    pub next_payload: u8,
    /// 0x10 ([`VERSION`]).
    pub version: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    pub length: u32,
}

impl Header {
    /// Parses the header at the start of `buf`, with the checks of
    /// [`Packet::new_checked`] (so `length` is at least [`HEADER_LEN`] and at most
    /// `buf.len()`).
    pub fn parse(buf: &[u8]) -> Result<Header, Malformed> {
        let packet = Packet::new_checked(buf)?;
        Ok(Header {
            initiator_cookie: packet.initiator_cookie(),
            responder_cookie: packet.responder_cookie(),
            next_payload: packet.next_payload(),
            version: packet.version(),
            exchange: packet.exchange(),
            flags: packet.flags(),
            message_id: packet.message_id(),
            length: packet.length(),
        })
    }

    /// Writes the header as it is (no field is filled in).
    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[field::INITIATOR_COOKIE].copy_from_slice(&self.initiator_cookie);
        out[field::RESPONDER_COOKIE].copy_from_slice(&self.responder_cookie);
        out[field::NEXT_PAYLOAD] = self.next_payload;
        out[field::VERSION] = self.version;
        out[field::EXCHANGE] = self.exchange;
        out[field::FLAGS] = self.flags;
        write_u32(&mut out[field::MESSAGE_ID], self.message_id);
        write_u32(&mut out[field::LENGTH], self.length);
    }

    /// The header as 28 octets.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        self.emit(&mut out);
        out
    }
}

/// Splits a whole message into its header and its payload chain (the octets from the
/// header to Length; ciphertext when the E flag is set).
pub fn parse_message(buf: &[u8]) -> Result<(Header, &[u8]), Malformed> {
    let header = Header::parse(buf)?;
    let end = usize::try_from(header.length).unwrap_or(usize::MAX);
    Ok((header, super::clamped(buf, HEADER_LEN, end)))
}

/// Iterator over a payload chain; see [`payloads`].
#[derive(Debug, Clone)]
pub struct Payloads<'a> {
    next: u8,
    rest: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Payloads<'a> {
    /// Octets of the chain consumed so far (generic headers included): once the
    /// iterator has returned `None` without an error, the length of the chain without
    /// the trailing padding.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for Payloads<'a> {
    type Item = Result<(u8, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next == payload::NONE {
            return None;
        }
        let fail = |this: &mut Self, why| {
            this.failed = true;
            Some(Err(Malformed::new("payload chain", why)))
        };
        if self.rest.len() < PAYLOAD_HEADER_LEN {
            return fail(self, Error::Truncated);
        }
        let length = usize::from(read_u16(&self.rest[2..4]));
        if length < PAYLOAD_HEADER_LEN {
            return fail(self, Error::BadLength);
        }
        if length > self.rest.len() {
            return fail(self, Error::Truncated);
        }
        let ty = self.next;
        let body = &self.rest[PAYLOAD_HEADER_LEN..length];
        self.next = self.rest[0];
        self.rest = &self.rest[length..];
        self.offset += length;
        Some(Ok((ty, body)))
    }
}

/// Iterates the generic payload chain (RFC 2408 §3.2) that starts with a payload of
/// type `first`: yields (payload type, body), where body excludes the 4-octet generic
/// header. Stops after the payload whose Next Payload is NONE; octets after it (the
/// padding of a decrypted message) are allowed. A Payload Length below 4 or past the
/// end of `bytes` yields one error and ends the iteration.
pub fn payloads(first: u8, bytes: &[u8]) -> Payloads<'_> {
    Payloads {
        next: first,
        rest: bytes,
        offset: 0,
        failed: false,
    }
}

/// Length of the payload chain at the start of `bytes`, without any padding after it:
/// what IKEv1 hashes when it says "the entire message" (e.g. Quick Mode HASH(1),
/// RFC 2409 §5.5).
pub fn chain_len(first: u8, bytes: &[u8]) -> Result<usize, Malformed> {
    let mut iter = payloads(first, bytes);
    for item in iter.by_ref() {
        item?;
    }
    Ok(iter.offset())
}

/// Largest body a payload can carry: Payload Length is 16 bits and counts the header.
pub const MAX_PAYLOAD_BODY: usize = u16::MAX as usize - PAYLOAD_HEADER_LEN;

/// Builds a payload chain: [`ChainBuilder::push`] appends a payload and sets the Next
/// Payload field of the one before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainBuilder {
    bytes: Vec<u8>,
    first: u8,
    last: Option<usize>,
}

impl ChainBuilder {
    /// An empty chain (first type NONE).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a payload of type `ty` with `body` (without the generic header).
    ///
    /// # Panics
    /// If `body` is longer than [`MAX_PAYLOAD_BODY`], which no IKEv1 payload this
    /// gateway builds comes near (a whole UDP datagram is smaller); see
    /// [`ChainBuilder::try_push`].
    pub fn push(&mut self, ty: u8, body: &[u8]) -> &mut Self {
        assert!(
            body.len() <= MAX_PAYLOAD_BODY,
            "ISAKMP payload body too long"
        );
        self.append(ty, body);
        self
    }

    /// [`ChainBuilder::push`], or [`Error::BadLength`] if `body` is longer than
    /// [`MAX_PAYLOAD_BODY`].
    pub fn try_push(&mut self, ty: u8, body: &[u8]) -> Result<&mut Self, Malformed> {
        if body.len() > MAX_PAYLOAD_BODY {
            return Err(Malformed::new("payload", Error::BadLength));
        }
        self.append(ty, body);
        Ok(self)
    }

    fn append(&mut self, ty: u8, body: &[u8]) {
        match self.last {
            Some(last) => self.bytes[last] = ty,
            None => self.first = ty,
        }
        self.last = Some(self.bytes.len());
        let length = (body.len() + PAYLOAD_HEADER_LEN) as u16;
        self.bytes.extend_from_slice(&[payload::NONE, 0]);
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(body);
    }

    /// Type of the first payload (NONE for an empty chain): the header's Next Payload.
    pub fn first(&self) -> u8 {
        self.first
    }

    /// The chain so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The chain.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A whole plaintext message: `header` with Next Payload and Length filled in by this
/// function, then the chain.
pub fn build_message(header: Header, chain: &ChainBuilder) -> Vec<u8> {
    let mut header = header;
    header.next_payload = chain.first();
    header.length = u32::try_from(HEADER_LEN + chain.bytes().len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + chain.bytes().len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(chain.bytes());
    out
}

/// Appends a big-endian 16-bit length. Lengths above 65535 cannot be encoded and are
/// capped; nothing parsed from a datagram (or built by this gateway) comes near that.
pub(crate) fn put_u16(out: &mut Vec<u8>, value: usize) {
    let mut bytes = [0; 2];
    write_u16(&mut bytes, u16::try_from(value).unwrap_or(u16::MAX));
    out.extend_from_slice(&bytes);
}

/// The three IKEv1 golden captures of tests/data and readers for their KEYS.md and
/// decrypted.txt, shared by the ISAKMP and IKEv1 key tests.
#[cfg(test)]
pub(crate) mod test_util {
    use crate::wire::test_util::{CBC, GCM, NATT, hex};
    use crate::wire::{ethernet, ipv4, pcap, udp, udp_encap};

    /// A golden capture with its key material.
    pub struct Golden {
        pub name: &'static str,
        pub pcap: &'static [u8],
        /// KEYS.md.
        pub keys: &'static str,
        /// decrypted.txt.
        pub decrypted: &'static str,
    }

    pub const GOLDEN: [Golden; 3] = [
        Golden {
            name: "ikev1-psk-transport-gcm",
            pcap: GCM,
            keys: include_str!("../../tests/data/ikev1-psk-transport-gcm.KEYS.md"),
            decrypted: include_str!("../../tests/data/ikev1-psk-transport-gcm.decrypted.txt"),
        },
        Golden {
            name: "ikev1-psk-transport-cbc-sha1-modp2048",
            pcap: CBC,
            keys: include_str!("../../tests/data/ikev1-psk-transport-cbc-sha1-modp2048.KEYS.md"),
            decrypted: include_str!(
                "../../tests/data/ikev1-psk-transport-cbc-sha1-modp2048.decrypted.txt"
            ),
        },
        Golden {
            name: "ikev1-natt",
            pcap: NATT,
            keys: include_str!("../../tests/data/ikev1-natt.KEYS.md"),
            decrypted: include_str!("../../tests/data/ikev1-natt.decrypted.txt"),
        },
    ];

    /// The ISAKMP message in a frame: UDP 500, or UDP 4500 after the non-ESP marker
    /// (RFC 3948 §2.2); `None` for ESP and keepalives.
    fn isakmp_of(frame: &[u8]) -> Option<&[u8]> {
        let eth = ethernet::Packet::new_checked(frame).ok()?;
        let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
        if ip.protocol() != ipv4::Protocol::UDP {
            return None;
        }
        let udp = udp::Packet::new_checked(ip.payload()).ok()?;
        // Ethernet 14 + IPv4 header + UDP 8.
        let start = 14 + ip.header_len() + 8;
        let payload = &frame[start..start + udp.payload().len()];
        let port = udp.dst_port();
        match port {
            500 => Some(payload),
            udp_encap::NAT_T_PORT => payload.strip_prefix(&[0u8; 4][..]),
            _ => None,
        }
    }

    /// Frame numbers (1-based) of the ISAKMP messages of a capture.
    pub fn ike_frames(golden: &Golden) -> Vec<usize> {
        pcap::Reader::new(golden.pcap)
            .unwrap()
            .records()
            .enumerate()
            .filter(|(_, record)| isakmp_of(record.as_ref().unwrap().data).is_some())
            .map(|(i, _)| i + 1)
            .collect()
    }

    /// The ISAKMP message of frame `number`.
    pub fn ike_message(golden: &Golden, number: usize) -> &'static [u8] {
        let record = pcap::Reader::new(golden.pcap)
            .unwrap()
            .records()
            .nth(number - 1)
            .unwrap()
            .unwrap();
        isakmp_of(record.data).expect("an ISAKMP frame")
    }

    /// The first hex value (in backquotes) of the KEYS.md table row whose first cell is
    /// `label`, or starts with `label` and then " (" or " =".
    pub fn keys_value(keys: &str, label: &str) -> Vec<u8> {
        for line in keys.lines() {
            let mut cells = line.split('|').skip(1);
            let Some(first) = cells.next().map(str::trim) else {
                continue;
            };
            let matches = first == label
                || first.starts_with(&format!("{label} ("))
                || first.starts_with(&format!("{label} ="));
            if matches {
                let rest: String = cells.collect::<Vec<_>>().join("|");
                let value = rest.split('`').nth(1).expect("a `value`");
                return hex(value);
            }
        }
        panic!("no KEYS.md row {label}");
    }

    /// The IV and the plaintext (padding included) that decrypted.txt gives for the
    /// encrypted ISAKMP message of frame `number`.
    pub fn decrypted(golden: &Golden, number: usize) -> (Vec<u8>, Vec<u8>) {
        let prefix = format!("{number} | ISAKMP");
        let line = golden
            .decrypted
            .lines()
            .find(|line| line.starts_with(&prefix))
            .expect("a decrypted.txt line");
        let cells: Vec<&str> = line.split(" | ").collect();
        let iv = cells[2].rsplit(' ').next().unwrap();
        (hex(iv), hex(cells[4].trim()))
    }
}

#[cfg(test)]
mod tests;
