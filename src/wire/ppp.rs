//! PPP frames as carried in L2TP (RFC 1661 §2, RFC 1662 §3.1, RFC 2661 §5.2) and
//! PPP control packets: LCP, IPCP, CHAP, PAP (RFC 1661 §5–6, RFC 1332, RFC 1994,
//! RFC 1334).
//!
//! In L2TP there is no HDLC flag, FCS or byte stuffing, but the Address/Control octets
//! `FF 03` may still be present — or be elided when Address-and-Control-Field
//! Compression was negotiated (ACFC, RFC 1661 §6.6) — and the Protocol field may be
//! one octet when Protocol-Field-Compression was negotiated (PFC, §6.5). A protocol
//! number has an odd low octet and an even high octet (§2), so an odd first octet is
//! a compressed protocol. [`Frame::new_checked`] works out both and remembers the
//! protocol and payload offset.
//!
//! Control packets are Code, Identifier, Length, Data (§5); the Data of
//! Configure-Request/Ack/Nak/Reject is a list of options, each Type, Length, Data
//! (§6), read by [`OptionIter`].

use super::{Error, Result};

/// The All-Stations address octet (RFC 1662 §3.1).
pub const ADDRESS: u8 = 0xff;
/// The Unnumbered Information control octet (RFC 1662 §3.1).
pub const CONTROL: u8 = 0x03;

/// A PPP protocol number (IANA "PPP DLL Protocol Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(pub u16);

impl Protocol {
    /// Internet Protocol version 4.
    pub const IPV4: Protocol = Protocol(0x0021);
    /// Internet Protocol version 6.
    pub const IPV6: Protocol = Protocol(0x0057);
    /// IP Control Protocol (RFC 1332).
    pub const IPCP: Protocol = Protocol(0x8021);
    /// IPv6 Control Protocol (RFC 5072).
    pub const IPV6CP: Protocol = Protocol(0x8057);
    /// Compression Control Protocol (RFC 1962).
    pub const CCP: Protocol = Protocol(0x80fd);
    /// Link Control Protocol (RFC 1661).
    pub const LCP: Protocol = Protocol(0xc021);
    /// Password Authentication Protocol (RFC 1334).
    pub const PAP: Protocol = Protocol(0xc023);
    /// Challenge Handshake Authentication Protocol (RFC 1994).
    pub const CHAP: Protocol = Protocol(0xc223);
}

/// A PPP frame inside an L2TP data message: optional Address/Control, Protocol, payload.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    protocol: Protocol,
    address_control: bool,
    protocol_len: usize,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Works out ACFC and PFC and checks the protocol number.
    ///
    /// Errors: [`Error::Truncated`] if the Protocol field is cut off,
    /// [`Error::Malformed`] for a two-octet protocol with an even low octet.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let data = buffer.as_ref();
        let address_control = data.starts_with(&[ADDRESS, CONTROL]);
        let start = if address_control { 2 } else { 0 };
        let (protocol, protocol_len) = match data[start..] {
            [single, ..] if single & 1 == 1 => (u16::from(single), 1),
            [high, low, ..] if low & 1 == 1 => (u16::from_be_bytes([high, low]), 2),
            [_, _, ..] => return Err(Error::Malformed),
            _ => return Err(Error::Truncated),
        };
        Ok(Frame {
            buffer,
            protocol: Protocol(protocol),
            address_control,
            protocol_len,
        })
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Whether the `FF 03` Address/Control octets are present (no ACFC).
    pub fn has_address_control(&self) -> bool {
        self.address_control
    }

    /// Whether the Protocol field is one octet (PFC).
    pub fn is_protocol_compressed(&self) -> bool {
        self.protocol_len == 1
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Offset of the payload: length of Address/Control and Protocol.
    pub fn payload_offset(&self) -> usize {
        if self.address_control {
            2 + self.protocol_len
        } else {
            self.protocol_len
        }
    }

    /// The payload (information field).
    pub fn payload(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), self.payload_offset(), usize::MAX)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.payload_offset();
        super::clamped_mut(self.buffer.as_mut(), start, usize::MAX)
    }
}

/// The meaning of a PPP frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr {
    /// Emit `FF 03` (false when ACFC is in force).
    pub address_control: bool,
    /// Emit a one-octet Protocol (PFC); only for protocols below `0x100`.
    pub compress_protocol: bool,
    /// Protocol of the payload.
    pub protocol: Protocol,
}

impl FrameRepr {
    /// The uncompressed header RFC 2661 peers send by default: `FF 03` + 2 octets.
    pub fn new(protocol: Protocol) -> FrameRepr {
        FrameRepr {
            address_control: true,
            compress_protocol: false,
            protocol,
        }
    }

    /// Reads a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> FrameRepr {
        FrameRepr {
            address_control: frame.has_address_control(),
            compress_protocol: frame.is_protocol_compressed(),
            protocol: frame.protocol(),
        }
    }

    /// Header length: 1 to 4 octets.
    pub fn header_len(&self) -> usize {
        let address_control = if self.address_control { 2 } else { 0 };
        let protocol = if self.compress_protocol { 1 } else { 2 };
        address_control + protocol
    }

    /// Writes the header at the start of `out`, returning its length.
    ///
    /// Errors: [`Error::Malformed`] for PFC with a protocol of `0x100` or more, or a
    /// protocol number that breaks §2 (even low octet or odd high octet);
    /// [`Error::Truncated`] if `out` is short.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize> {
        let [high, low] = self.protocol.0.to_be_bytes();
        if low & 1 == 0 || high & 1 == 1 || (self.compress_protocol && high != 0) {
            return Err(Error::Malformed);
        }
        let len = self.header_len();
        let out = out.get_mut(..len).ok_or(Error::Truncated)?;
        let protocol = if self.address_control {
            out[..2].copy_from_slice(&[ADDRESS, CONTROL]);
            &mut out[2..]
        } else {
            out
        };
        match protocol {
            [only] => *only = low,
            [h, l] => (*h, *l) = (high, low),
            _ => return Err(Error::Truncated),
        }
        Ok(len)
    }
}

/// Codes of LCP, IPCP and the other option-negotiating protocols (RFC 1661 §5).
pub mod code {
    /// Configure-Request.
    pub const CONFIGURE_REQUEST: u8 = 1;
    /// Configure-Ack.
    pub const CONFIGURE_ACK: u8 = 2;
    /// Configure-Nak.
    pub const CONFIGURE_NAK: u8 = 3;
    /// Configure-Reject.
    pub const CONFIGURE_REJECT: u8 = 4;
    /// Terminate-Request.
    pub const TERMINATE_REQUEST: u8 = 5;
    /// Terminate-Ack.
    pub const TERMINATE_ACK: u8 = 6;
    /// Code-Reject.
    pub const CODE_REJECT: u8 = 7;
    /// Protocol-Reject (LCP only).
    pub const PROTOCOL_REJECT: u8 = 8;
    /// Echo-Request (LCP only).
    pub const ECHO_REQUEST: u8 = 9;
    /// Echo-Reply (LCP only).
    pub const ECHO_REPLY: u8 = 10;
    /// Discard-Request (LCP only).
    pub const DISCARD_REQUEST: u8 = 11;
}

/// CHAP codes (RFC 1994 §4).
pub mod chap_code {
    /// Challenge.
    pub const CHALLENGE: u8 = 1;
    /// Response.
    pub const RESPONSE: u8 = 2;
    /// Success.
    pub const SUCCESS: u8 = 3;
    /// Failure.
    pub const FAILURE: u8 = 4;
}

/// PAP codes (RFC 1334 §2.2).
pub mod pap_code {
    /// Authenticate-Request.
    pub const AUTHENTICATE_REQUEST: u8 = 1;
    /// Authenticate-Ack.
    pub const AUTHENTICATE_ACK: u8 = 2;
    /// Authenticate-Nak.
    pub const AUTHENTICATE_NAK: u8 = 3;
}

/// LCP configuration option types (RFC 1661 §6, RFC 1570).
pub mod lcp_option {
    /// Maximum-Receive-Unit.
    pub const MRU: u8 = 1;
    /// Async-Control-Character-Map (RFC 1662 §7.1).
    pub const ACCM: u8 = 2;
    /// Authentication-Protocol.
    pub const AUTH_PROTOCOL: u8 = 3;
    /// Quality-Protocol.
    pub const QUALITY_PROTOCOL: u8 = 4;
    /// Magic-Number.
    pub const MAGIC_NUMBER: u8 = 5;
    /// Protocol-Field-Compression.
    pub const PFC: u8 = 7;
    /// Address-and-Control-Field-Compression.
    pub const ACFC: u8 = 8;
    /// CHAP algorithm octet after 0xc223: MD5 (RFC 1994 §3).
    pub const CHAP_MD5: u8 = 5;
    /// CHAP algorithm octet after 0xc223: MS-CHAPv2 (RFC 2759 §2).
    pub const CHAP_MSCHAPV2: u8 = 0x81;
}

/// IPCP configuration option types (RFC 1332 §3, RFC 1877).
pub mod ipcp_option {
    /// IP-Compression-Protocol.
    pub const IP_COMPRESSION_PROTOCOL: u8 = 2;
    /// IP-Address.
    pub const IP_ADDRESS: u8 = 3;
    /// Primary DNS server address (RFC 1877).
    pub const PRIMARY_DNS: u8 = 129;
    /// Primary NBNS server address (RFC 1877).
    pub const PRIMARY_NBNS: u8 = 130;
    /// Secondary DNS server address (RFC 1877).
    pub const SECONDARY_DNS: u8 = 131;
    /// Secondary NBNS server address (RFC 1877).
    pub const SECONDARY_NBNS: u8 = 132;
}

/// Length of a control packet header: Code, Identifier, Length.
pub const HEADER_LEN: usize = 4;

mod field {
    use crate::wire::Field;
    pub const CODE: usize = 0;
    pub const IDENTIFIER: usize = 1;
    pub const LENGTH: Field = 2..4;
}

/// A read/write view of an LCP/IPCP/CHAP/PAP packet (the payload of a [`Frame`]).
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

    /// Wraps `buffer` after checking `HEADER_LEN <= Length <= buffer length`
    /// (octets past Length are padding and are ignored, RFC 1661 §5).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let packet = Packet { buffer };
        let length = usize::from(packet.len());
        if length < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if length > len {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Identifier (matches requests and replies).
    pub fn identifier(&self) -> u8 {
        self.buffer.as_ref()[field::IDENTIFIER]
    }

    /// The Length field: header plus data.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The data after the header, up to Length.
    pub fn data(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// The options of a Configure-Request/Ack/Nak/Reject.
    pub fn options(&self) -> OptionIter<'_> {
        OptionIter::new(self.data())
    }

    /// CHAP Challenge/Response data (RFC 1994 §4.1): Value-Size, Value, Name.
    pub fn chap_value_and_name(&self) -> Result<(&[u8], &[u8])> {
        let (&size, rest) = self.data().split_first().ok_or(Error::Truncated)?;
        rest.split_at_checked(usize::from(size))
            .ok_or(Error::BadLength)
    }

    /// PAP Authenticate-Request data (RFC 1334 §2.2.1): Peer-ID and Password.
    pub fn pap_peer_id_and_password(&self) -> Result<(&[u8], &[u8])> {
        let (&id_len, rest) = self.data().split_first().ok_or(Error::Truncated)?;
        let (peer_id, rest) = rest
            .split_at_checked(usize::from(id_len))
            .ok_or(Error::BadLength)?;
        let (&pw_len, rest) = rest.split_first().ok_or(Error::Truncated)?;
        let password = rest.get(..usize::from(pw_len)).ok_or(Error::BadLength)?;
        Ok((peer_id, password))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the Code.
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the Identifier.
    pub fn set_identifier(&mut self, identifier: u8) {
        self.buffer.as_mut()[field::IDENTIFIER] = identifier;
    }

    /// Sets the Length field.
    pub fn set_len(&mut self, length: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::LENGTH], length);
    }

    /// The data, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        super::clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }
}

/// The meaning of a control packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Code.
    pub code: u8,
    /// Identifier.
    pub identifier: u8,
    /// Length of the data after the header.
    pub data_len: usize,
}

impl Repr {
    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        Ok(Repr {
            code: packet.code(),
            identifier: packet.identifier(),
            data_len: packet.data().len(),
        })
    }

    /// Header plus data.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data_len
    }

    /// Writes the header; the data is left as it is.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let length = u16::try_from(self.buffer_len()).map_err(|_| Error::BadLength)?;
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(Error::Truncated);
        }
        packet.set_code(self.code);
        packet.set_identifier(self.identifier);
        packet.set_len(length);
        Ok(())
    }
}

/// Length of an option's Type and Length octets.
pub const OPTION_HEADER_LEN: usize = 2;

/// One configuration option (RFC 1661 §6): Type, Length, Data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigOption<'a> {
    /// Option type (see [`lcp_option`], [`ipcp_option`]).
    pub option_type: u8,
    /// Option data (Length − 2 octets).
    pub value: &'a [u8],
}

impl<'a> ConfigOption<'a> {
    /// The value as a 16-bit integer, if it is exactly two octets.
    pub fn value_u16(&self) -> Option<u16> {
        match *self.value {
            [a, b] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    /// The value as a 32-bit integer (or IPv4 address), if it is exactly four octets.
    pub fn value_u32(&self) -> Option<u32> {
        match *self.value {
            [a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        }
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        OPTION_HEADER_LEN + self.value.len()
    }

    /// Writes the option at the start of `out`, returning its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let length = u8::try_from(len).map_err(|_| Error::BadLength)?;
        let out = out.get_mut(..len).ok_or(Error::Truncated)?;
        out[0] = self.option_type;
        out[1] = length;
        out[OPTION_HEADER_LEN..].copy_from_slice(self.value);
        Ok(len)
    }
}

/// Iterator over configuration options. An option whose Length is below 2
/// ([`Error::BadLength`]) or past the end ([`Error::Truncated`]) yields one error and
/// ends the iteration.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> OptionIter<'a> {
    /// Iterates over the options in `data`.
    pub fn new(data: &'a [u8]) -> OptionIter<'a> {
        OptionIter { rest: data }
    }

    fn next_option(&mut self) -> Result<ConfigOption<'a>> {
        let [option_type, length, ..] = *self.rest else {
            return Err(Error::Truncated);
        };
        let len = usize::from(length);
        if len < OPTION_HEADER_LEN {
            return Err(Error::BadLength);
        }
        let (option, rest) = self.rest.split_at_checked(len).ok_or(Error::Truncated)?;
        self.rest = rest;
        Ok(ConfigOption {
            option_type,
            value: &option[OPTION_HEADER_LEN..],
        })
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<ConfigOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.next_option();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// Appends configuration options into a caller's buffer (the data of a Configure-*).
#[derive(Debug)]
pub struct OptionWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> OptionWriter<'a> {
    /// Starts writing at the beginning of `out`.
    pub fn new(out: &'a mut [u8]) -> OptionWriter<'a> {
        OptionWriter { out, len: 0 }
    }

    /// Appends one option; on error nothing is written.
    pub fn push(&mut self, option: &ConfigOption<'_>) -> Result<()> {
        let rest = self.out.get_mut(self.len..).ok_or(Error::Truncated)?;
        self.len += option.emit(rest)?;
        Ok(())
    }

    /// Octets written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finishes, returning the number of octets written.
    pub fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests;
