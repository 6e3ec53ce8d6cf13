//! L2TPv2 headers (RFC 2661 §3.1) and control-message AVPs (§4.1, §4.4).
//!
//! ```text
//! |T|L|x|x|S|x|O|P|x|x|x|x|  Ver  |          Length (opt)         |
//! |           Tunnel ID           |           Session ID          |
//! |             Ns (opt)          |             Nr (opt)          |
//! |      Offset Size (opt)        |    Offset pad... (opt)
//! ```
//!
//! `new_checked` enforces Ver = 2 (Ver 1 is L2F and Ver 3 is L2TPv3: both
//! [`Error::BadVersion`]); for control messages (T = 1) that L and S are set and O and
//! P are clear, as §3.1 says they MUST be ([`Error::Malformed`]); and that the Length
//! field, when present, covers the header and fits the buffer. Reserved `x` bits are
//! ignored on receipt (§3.1). A control message with no AVPs is a ZLB acknowledgement
//! (§5.8). In control messages the payload is a list of AVPs; the first is always the
//! Message Type (§4.4.1).

use super::{Error, Result};

pub mod avp;
pub use avp::{Avp, AvpIter, AvpWriter, MessageType, avp_type};

/// Length of the smallest header: flags/version, Tunnel ID, Session ID.
pub const MIN_HEADER_LEN: usize = 6;
/// Length of a control message header: flags, Length, IDs, Ns, Nr.
pub const CONTROL_HEADER_LEN: usize = 12;
/// The only version this module speaks.
pub const VERSION: u8 = 2;

mod field {
    use crate::wire::Field;
    pub const FLAGS: Field = 0..2;
}

const FLAG_T: u16 = 0x8000;
const FLAG_L: u16 = 0x4000;
const FLAG_S: u16 = 0x0800;
const FLAG_O: u16 = 0x0200;
const FLAG_P: u16 = 0x0100;
const VERSION_MASK: u16 = 0x000f;

/// Ns and Nr (§3.1; in data messages Nr is reserved and ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequence {
    /// Sequence number of this message.
    pub ns: u16,
    /// Next sequence number expected from the peer.
    pub nr: u16,
}

/// A read/write view of an L2TPv2 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without any check; for emitting. Accessors panic if it is
    /// shorter than the header its flags announce.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking version, control-message flags and lengths.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Packet { buffer };
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::FLAGS.end {
            return Err(Error::Truncated);
        }
        if self.version() != VERSION {
            return Err(Error::BadVersion);
        }
        let flags = self.flags();
        let control_ok = flags & (FLAG_L | FLAG_S | FLAG_O | FLAG_P) == FLAG_L | FLAG_S;
        if self.is_control() && !control_ok {
            return Err(Error::Malformed);
        }
        if len < self.fixed_header_len() || self.header_len() > len {
            return Err(Error::Truncated);
        }
        if let Some(length) = self.length() {
            if usize::from(length) < self.header_len() {
                return Err(Error::BadLength);
            }
            if usize::from(length) > len {
                return Err(Error::Truncated);
            }
        }
        Ok(())
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn flags(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::FLAGS])
    }

    fn u16_at(&self, at: usize) -> u16 {
        super::read_u16(&self.buffer.as_ref()[at..at + 2])
    }

    /// The Ver field (2 for a checked packet).
    pub fn version(&self) -> u8 {
        (self.flags() & VERSION_MASK) as u8
    }

    /// T bit: a control message (else a data message).
    pub fn is_control(&self) -> bool {
        self.flags() & FLAG_T != 0
    }

    /// L bit: the Length field is present.
    pub fn has_length(&self) -> bool {
        self.flags() & FLAG_L != 0
    }

    /// S bit: Ns and Nr are present.
    pub fn has_sequence(&self) -> bool {
        self.flags() & FLAG_S != 0
    }

    /// O bit: Offset Size (and offset padding) is present.
    pub fn has_offset(&self) -> bool {
        self.flags() & FLAG_O != 0
    }

    /// P bit: the data message asks for preferential queuing.
    pub fn priority(&self) -> bool {
        self.flags() & FLAG_P != 0
    }

    fn tunnel_id_at(&self) -> usize {
        if self.has_length() { 4 } else { 2 }
    }

    fn sequence_at(&self) -> usize {
        self.tunnel_id_at() + 4
    }

    fn offset_size_at(&self) -> usize {
        self.sequence_at() + if self.has_sequence() { 4 } else { 0 }
    }

    /// Header length without the offset padding.
    fn fixed_header_len(&self) -> usize {
        self.offset_size_at() + if self.has_offset() { 2 } else { 0 }
    }

    /// The Length field: total length of the message, if present.
    pub fn length(&self) -> Option<u16> {
        self.has_length().then(|| self.u16_at(2))
    }

    /// Tunnel ID (the receiver's identifier of the control connection).
    pub fn tunnel_id(&self) -> u16 {
        self.u16_at(self.tunnel_id_at())
    }

    /// Session ID (the receiver's identifier of the session; 0 for the tunnel).
    pub fn session_id(&self) -> u16 {
        self.u16_at(self.tunnel_id_at() + 2)
    }

    /// Ns, if present.
    pub fn ns(&self) -> Option<u16> {
        self.has_sequence().then(|| self.u16_at(self.sequence_at()))
    }

    /// Nr, if present.
    pub fn nr(&self) -> Option<u16> {
        self.has_sequence()
            .then(|| self.u16_at(self.sequence_at() + 2))
    }

    /// Offset Size, if present: octets of padding after the field.
    pub fn offset_size(&self) -> Option<u16> {
        self.has_offset()
            .then(|| self.u16_at(self.offset_size_at()))
    }

    /// Header length, offset padding included.
    pub fn header_len(&self) -> usize {
        self.fixed_header_len() + usize::from(self.offset_size().unwrap_or(0))
    }

    /// End of the message: the Length field if present, else the buffer's end.
    fn end(&self) -> usize {
        match self.length() {
            Some(length) => usize::from(length),
            None => self.buffer.as_ref().len(),
        }
    }

    /// The payload: AVPs for a control message, a PPP frame for a data message.
    pub fn payload(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), self.header_len(), self.end())
    }

    /// Whether this is a ZLB: a control message without AVPs (§5.8).
    pub fn is_zlb(&self) -> bool {
        self.is_control() && self.payload().is_empty()
    }

    /// The AVPs of a control message (empty for data messages).
    pub fn avps(&self) -> AvpIter<'_> {
        let payload = if self.is_control() {
            self.payload()
        } else {
            &[]
        };
        AvpIter::new(payload)
    }

    /// The message type: `None` for a ZLB or a data message.
    ///
    /// Errors: [`Error::Malformed`] if the first AVP is not a visible, vendor-0 Message
    /// Type AVP with a 2-octet value (§4.4.1), [`Error::Unsupported`] for an unknown
    /// type (the raw value is `avps().next()`), or the first AVP's own error.
    pub fn message_type(&self) -> Result<Option<MessageType>> {
        let Some(first) = self.avps().next() else {
            return Ok(None);
        };
        let avp = first?;
        let is_type = avp.vendor_id == 0 && avp.attribute_type == avp_type::MESSAGE_TYPE;
        match avp.value_u16() {
            Some(value) if is_type && !avp.hidden => MessageType::try_from(value).map(Some),
            _ => Err(Error::Malformed),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16_at(&mut self, at: usize, value: u16) {
        super::write_u16(&mut self.buffer.as_mut()[at..at + 2], value);
    }

    /// Sets the Tunnel ID.
    pub fn set_tunnel_id(&mut self, tunnel_id: u16) {
        let at = self.tunnel_id_at();
        self.set_u16_at(at, tunnel_id);
    }

    /// Sets the Session ID.
    pub fn set_session_id(&mut self, session_id: u16) {
        let at = self.tunnel_id_at() + 2;
        self.set_u16_at(at, session_id);
    }

    /// Sets Ns and Nr; [`Error::Malformed`] if the header has no sequence fields.
    pub fn set_sequence(&mut self, sequence: Sequence) -> Result<()> {
        if !self.has_sequence() {
            return Err(Error::Malformed);
        }
        let at = self.sequence_at();
        self.set_u16_at(at, sequence.ns);
        self.set_u16_at(at + 2, sequence.nr);
        Ok(())
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.end());
        super::clamped_mut(self.buffer.as_mut(), start, end)
    }
}

/// The meaning of an L2TPv2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// T bit: control message.
    pub is_control: bool,
    /// L bit: emit the Length field (always for control messages).
    pub has_length: bool,
    /// P bit (data messages only).
    pub priority: bool,
    /// Tunnel ID.
    pub tunnel_id: u16,
    /// Session ID.
    pub session_id: u16,
    /// Ns/Nr, if the S bit is set (always for control messages).
    pub sequence: Option<Sequence>,
    /// Offset Size, if the O bit is set (data messages only); the pad is zeros.
    pub offset_size: Option<u16>,
    /// Length of the AVPs or the PPP frame after the header.
    pub payload_len: usize,
}

impl Repr {
    /// A control message header (T, L, S set) in front of `avps_len` octets of AVPs.
    pub fn control(tunnel_id: u16, session_id: u16, sequence: Sequence, avps_len: usize) -> Repr {
        Repr {
            is_control: true,
            has_length: true,
            priority: false,
            tunnel_id,
            session_id,
            sequence: Some(sequence),
            offset_size: None,
            payload_len: avps_len,
        }
    }

    /// The most compact data message header (6 octets, no L, S or O), as xl2tpd sends.
    pub fn data(tunnel_id: u16, session_id: u16, payload_len: usize) -> Repr {
        Repr {
            is_control: false,
            has_length: false,
            priority: false,
            tunnel_id,
            session_id,
            sequence: None,
            offset_size: None,
            payload_len,
        }
    }

    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        let sequence = match (packet.ns(), packet.nr()) {
            (Some(ns), Some(nr)) => Some(Sequence { ns, nr }),
            _ => None,
        };
        Ok(Repr {
            is_control: packet.is_control(),
            has_length: packet.has_length(),
            priority: packet.priority(),
            tunnel_id: packet.tunnel_id(),
            session_id: packet.session_id(),
            sequence,
            offset_size: packet.offset_size(),
            payload_len: packet.payload().len(),
        })
    }

    /// Header length, offset padding included.
    pub fn header_len(&self) -> usize {
        let mut len = MIN_HEADER_LEN;
        if self.has_length {
            len += 2;
        }
        if self.sequence.is_some() {
            len += 4;
        }
        if let Some(offset_size) = self.offset_size {
            len += 2 + usize::from(offset_size);
        }
        len
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    fn flags(&self) -> u16 {
        let mut flags = u16::from(VERSION);
        for (set, bit) in [
            (self.is_control, FLAG_T),
            (self.has_length, FLAG_L),
            (self.sequence.is_some(), FLAG_S),
            (self.offset_size.is_some(), FLAG_O),
            (self.priority, FLAG_P),
        ] {
            if set {
                flags |= bit;
            }
        }
        flags
    }

    /// Writes the header (and zero offset padding); the payload is left as it is.
    ///
    /// Errors: [`Error::Malformed`] for a control header without Length and sequence
    /// or with an offset or priority; [`Error::BadLength`] if the Length field cannot
    /// hold the total; [`Error::Truncated`] if the buffer is too short.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let control_ok = self.has_length
            && self.sequence.is_some()
            && self.offset_size.is_none()
            && !self.priority;
        if self.is_control && !control_ok {
            return Err(Error::Malformed);
        }
        let total = self.buffer_len();
        let length = match self.has_length {
            true => Some(u16::try_from(total).map_err(|_| Error::BadLength)?),
            false => None,
        };
        if packet.buffer.as_ref().len() < total {
            return Err(Error::Truncated);
        }
        packet.set_u16_at(0, self.flags());
        if let Some(length) = length {
            packet.set_u16_at(2, length);
        }
        packet.set_tunnel_id(self.tunnel_id);
        packet.set_session_id(self.session_id);
        if let Some(sequence) = self.sequence {
            packet.set_sequence(sequence)?;
        }
        if let Some(offset_size) = self.offset_size {
            let at = packet.offset_size_at();
            packet.set_u16_at(at, offset_size);
            let pad = at + 2..at + 2 + usize::from(offset_size);
            packet.buffer.as_mut()[pad].fill(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::natt_l2tp;
    use proptest::prelude::*;

    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==10
    //   Flags: 0xc802, Type: Control Message, Length Bit, Sequence Bit; Version: 2
    //   Length: 103, Tunnel ID: 0, Session ID: 0, Ns: 0, Nr: 0; "SCCRQ (tunnel id=0, session id=0)"
    #[test]
    fn real_sccrq_header() {
        let bytes = natt_l2tp(10);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.is_control());
        assert!(packet.has_length() && packet.has_sequence());
        assert!(!packet.has_offset() && !packet.priority());
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.length(), Some(103));
        assert_eq!((packet.tunnel_id(), packet.session_id()), (0, 0));
        assert_eq!((packet.ns(), packet.nr()), (Some(0), Some(0)));
        assert_eq!(packet.header_len(), CONTROL_HEADER_LEN);
        assert_eq!(packet.payload().len(), 103 - 12);
        assert_eq!(packet.message_type(), Ok(Some(MessageType::Sccrq)));
        assert!(!packet.is_zlb());
    }

    // tshark -r tests/data/ikev1-natt.pcap <decode.sh options>
    //   13 ... L2TP 98 Control Message - ZLB (tunnel id=31440, session id=0)
    //   42 ... StopCCN (tunnel id=4894, session id=0), -V: Length 46, Ns: 5, Nr: 2
    #[test]
    fn real_zlb_and_stopccn() {
        let zlb = natt_l2tp(13);
        let packet = Packet::new_checked(&zlb[..]).unwrap();
        assert!(packet.is_zlb());
        assert_eq!((packet.tunnel_id(), packet.session_id()), (31440, 0));
        assert_eq!((packet.ns(), packet.nr()), (Some(1), Some(2)));
        assert_eq!(packet.message_type(), Ok(None));
        assert_eq!(packet.avps().count(), 0);

        let stop = natt_l2tp(42);
        let packet = Packet::new_checked(&stop[..]).unwrap();
        assert_eq!(packet.length(), Some(46));
        assert_eq!((packet.tunnel_id(), packet.session_id()), (4894, 0));
        assert_eq!((packet.ns(), packet.nr()), (Some(5), Some(2)));
        assert_eq!(packet.message_type(), Ok(Some(MessageType::StopCcn)));
    }

    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y 'frame.number==19'
    //   Flags: 0x0002, Type: Data Message (no L, S, O, P); Tunnel ID: 4894, Session ID: 13928;
    //   then PPP Address 0xff, Control 0x03, Protocol LCP (0xc021).
    // frame 32 (same header): PPP Protocol IPv4 (0x0021), ICMP echo request 10.97.0.10 -> 10.97.0.1
    #[test]
    fn real_data_messages() {
        for (number, protocol) in [(19, [0xc0, 0x21]), (32, [0x00, 0x21])] {
            let bytes = natt_l2tp(number);
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            assert!(!packet.is_control());
            assert_eq!(packet.length(), None);
            assert_eq!(
                (packet.ns(), packet.nr(), packet.offset_size()),
                (None, None, None)
            );
            assert_eq!((packet.tunnel_id(), packet.session_id()), (4894, 13928));
            assert_eq!(packet.header_len(), MIN_HEADER_LEN);
            assert_eq!(
                &packet.payload()[..4],
                &[0xff, 0x03, protocol[0], protocol[1]]
            );
            assert_eq!(packet.avps().count(), 0);
            assert_eq!(packet.message_type(), Ok(None));
        }
    }

    #[test]
    fn real_messages_round_trip() {
        for number in [10, 13, 17, 19, 32, 42] {
            let bytes = natt_l2tp(number);
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            let repr = Repr::parse(&packet).unwrap();
            assert_eq!(repr.buffer_len(), bytes.len());
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
            let start = repr.header_len();
            out[start..].copy_from_slice(packet.payload());
            assert_eq!(out, bytes, "frame {number}");
        }
        let sequence = Sequence { ns: 1, nr: 2 };
        let zlb = Repr::control(31440, 0, sequence, 0);
        let mut out = [0u8; CONTROL_HEADER_LEN];
        zlb.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(&out[..], &natt_l2tp(13)[..]);
        let data = Repr::data(4894, 13928, 0);
        let mut out = [0u8; MIN_HEADER_LEN];
        data.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(&out[..], &natt_l2tp(19)[..MIN_HEADER_LEN]);
    }

    #[test]
    fn data_with_every_optional_field() {
        let repr = Repr {
            is_control: false,
            has_length: true,
            priority: true,
            tunnel_id: 4894,
            session_id: 13928,
            sequence: Some(Sequence { ns: 7, nr: 0 }),
            offset_size: Some(3),
            payload_len: 4,
        };
        assert_eq!(repr.header_len(), 2 + 2 + 4 + 4 + 2 + 3);
        let mut out = vec![0xeeu8; repr.buffer_len() + 5];
        repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
        let packet = Packet::new_checked(&out[..]).unwrap();
        assert_eq!(packet.length(), Some(21));
        assert_eq!(packet.offset_size(), Some(3));
        assert!(packet.priority());
        assert_eq!(packet.payload(), &[0xee; 4]); // ends at Length, not the buffer
        assert_eq!(Repr::parse(&packet), Ok(repr));
    }

    #[test]
    fn version_and_control_flags() {
        let mut v3 = natt_l2tp(10);
        v3[1] = 0x03;
        assert_eq!(Packet::new_checked(&v3[..]).unwrap_err(), Error::BadVersion);
        v3[1] = 0x01; // L2F
        assert_eq!(Packet::new_checked(&v3[..]).unwrap_err(), Error::BadVersion);
        for clear_or_set in [0x4000u16, 0x0800, 0x0200, 0x0100] {
            let mut bad = natt_l2tp(10);
            let flags = u16::from_be_bytes([bad[0], bad[1]]) ^ clear_or_set;
            bad[0..2].copy_from_slice(&flags.to_be_bytes());
            assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        }
        let mut bad = Repr::control(1, 0, Sequence::default(), 0);
        bad.sequence = None;
        let mut out = [0u8; 16];
        assert_eq!(
            bad.emit(&mut Packet::new_unchecked(&mut out[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn bad_length_field() {
        let mut bytes = natt_l2tp(10);
        bytes[2..4].copy_from_slice(&11u16.to_be_bytes()); // shorter than the header
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadLength
        );
        bytes[2..4].copy_from_slice(&104u16.to_be_bytes()); // one past the buffer
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::Truncated
        );
        bytes[2..4].copy_from_slice(&12u16.to_be_bytes()); // a ZLB with trailing bytes
        assert!(Packet::new_checked(&bytes[..]).unwrap().is_zlb());
    }

    #[test]
    fn truncated_at_every_length() {
        for number in [10, 19] {
            let bytes = natt_l2tp(number);
            let whole = if number == 10 {
                bytes.len()
            } else {
                MIN_HEADER_LEN
            };
            for len in 0..whole {
                assert_eq!(
                    Packet::new_checked(&bytes[..len]).unwrap_err(),
                    Error::Truncated
                );
            }
        }
        let repr = Repr::control(1, 2, Sequence::default(), 8);
        let mut short = [0u8; 19];
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
        let huge = Repr::control(1, 2, Sequence::default(), 70_000);
        assert_eq!(
            huge.emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::BadLength)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut data = data;
            if data.len() >= 2 && data[0] & 1 == 0 {
                data[1] = (data[1] & 0xf0) | 2; // reach past the version check half the time
            }
            if let Ok(packet) = Packet::new_checked(&data[..]) {
                let _ = (packet.is_control(), packet.length(), packet.tunnel_id(), packet.session_id());
                let _ = (packet.ns(), packet.nr(), packet.offset_size(), packet.priority());
                let _ = (packet.header_len(), packet.payload(), packet.is_zlb(), packet.message_type());
                prop_assert!(packet.avps().count() <= data.len() / 6 + 1);
                if let Ok(repr) = Repr::parse(&packet) {
                    let mut out = vec![0u8; repr.buffer_len()];
                    prop_assert!(repr.emit(&mut Packet::new_unchecked(&mut out[..])).is_ok());
                }
            }
        }
    }
}
