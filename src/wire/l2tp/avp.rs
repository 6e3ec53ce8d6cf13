//! L2TPv2 control-message AVPs (RFC 2661 §4.1) and message types (§3.2, §4.4).
//!
//! ```text
//! |M|H| rsvd  |      Length       |           Vendor ID           |
//! |         Attribute Type        |        Attribute Value...
//! ```
//!
//! The Length field (10 bits) counts the whole AVP and is at least 6. Hidden values
//! (H bit, §4.3) are returned as sent; unhiding needs the tunnel secret and the Random
//! Vector AVP, which is the control connection's business.

use crate::wire::{Error, Result};

/// Control message types: the value of the Message Type AVP (§3.2, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageType {
    /// Start-Control-Connection-Request.
    Sccrq = 1,
    /// Start-Control-Connection-Reply.
    Sccrp = 2,
    /// Start-Control-Connection-Connected.
    Scccn = 3,
    /// Stop-Control-Connection-Notification.
    StopCcn = 4,
    /// Hello (keepalive).
    Hello = 6,
    /// Outgoing-Call-Request.
    Ocrq = 7,
    /// Outgoing-Call-Reply.
    Ocrp = 8,
    /// Outgoing-Call-Connected.
    Occn = 9,
    /// Incoming-Call-Request.
    Icrq = 10,
    /// Incoming-Call-Reply.
    Icrp = 11,
    /// Incoming-Call-Connected.
    Iccn = 12,
    /// Call-Disconnect-Notify.
    Cdn = 14,
    /// WAN-Error-Notify.
    Wen = 15,
    /// Set-Link-Info.
    Sli = 16,
}

impl TryFrom<u16> for MessageType {
    type Error = Error;

    /// Unknown (or reserved: 0, 5, 13) values give [`Error::Unsupported`].
    fn try_from(value: u16) -> Result<MessageType> {
        use MessageType::*;
        Ok(match value {
            1 => Sccrq,
            2 => Sccrp,
            3 => Scccn,
            4 => StopCcn,
            6 => Hello,
            7 => Ocrq,
            8 => Ocrp,
            9 => Occn,
            10 => Icrq,
            11 => Icrp,
            12 => Iccn,
            14 => Cdn,
            15 => Wen,
            16 => Sli,
            _ => return Err(Error::Unsupported),
        })
    }
}

/// Attribute types of IETF (vendor 0) AVPs (§4.4).
pub mod avp_type {
    /// Message Type (§4.4.1).
    pub const MESSAGE_TYPE: u16 = 0;
    /// Result Code (§4.4.2).
    pub const RESULT_CODE: u16 = 1;
    /// Protocol Version (§4.4.3).
    pub const PROTOCOL_VERSION: u16 = 2;
    /// Framing Capabilities (§4.4.3).
    pub const FRAMING_CAPABILITIES: u16 = 3;
    /// Bearer Capabilities (§4.4.3).
    pub const BEARER_CAPABILITIES: u16 = 4;
    /// Tie Breaker (§4.4.3).
    pub const TIE_BREAKER: u16 = 5;
    /// Firmware Revision (§4.4.3).
    pub const FIRMWARE_REVISION: u16 = 6;
    /// Host Name (§4.4.3).
    pub const HOST_NAME: u16 = 7;
    /// Vendor Name (§4.4.3).
    pub const VENDOR_NAME: u16 = 8;
    /// Assigned Tunnel ID (§4.4.3).
    pub const ASSIGNED_TUNNEL_ID: u16 = 9;
    /// Receive Window Size (§4.4.3).
    pub const RECEIVE_WINDOW_SIZE: u16 = 10;
    /// Challenge (§4.4.3).
    pub const CHALLENGE: u16 = 11;
    /// Q.931 Cause Code (§4.4.10).
    pub const Q931_CAUSE_CODE: u16 = 12;
    /// Challenge Response (§4.4.3).
    pub const CHALLENGE_RESPONSE: u16 = 13;
    /// Assigned Session ID (§4.4.4).
    pub const ASSIGNED_SESSION_ID: u16 = 14;
    /// Call Serial Number (§4.4.4).
    pub const CALL_SERIAL_NUMBER: u16 = 15;
    /// Minimum BPS (§4.4.5).
    pub const MINIMUM_BPS: u16 = 16;
    /// Maximum BPS (§4.4.5).
    pub const MAXIMUM_BPS: u16 = 17;
    /// Bearer Type (§4.4.5).
    pub const BEARER_TYPE: u16 = 18;
    /// Framing Type (§4.4.5).
    pub const FRAMING_TYPE: u16 = 19;
    /// Called Number (§4.4.5).
    pub const CALLED_NUMBER: u16 = 21;
    /// Calling Number (§4.4.5).
    pub const CALLING_NUMBER: u16 = 22;
    /// Sub-Address (§4.4.5).
    pub const SUB_ADDRESS: u16 = 23;
    /// (Tx) Connect Speed (§4.4.6).
    pub const TX_CONNECT_SPEED: u16 = 24;
    /// Physical Channel ID (§4.4.5).
    pub const PHYSICAL_CHANNEL_ID: u16 = 25;
    /// Initial Received LCP CONFREQ (§4.4.7).
    pub const INITIAL_RECEIVED_LCP_CONFREQ: u16 = 26;
    /// Last Sent LCP CONFREQ (§4.4.7).
    pub const LAST_SENT_LCP_CONFREQ: u16 = 27;
    /// Last Received LCP CONFREQ (§4.4.7).
    pub const LAST_RECEIVED_LCP_CONFREQ: u16 = 28;
    /// Proxy Authen Type (§4.4.7).
    pub const PROXY_AUTHEN_TYPE: u16 = 29;
    /// Proxy Authen Name (§4.4.7).
    pub const PROXY_AUTHEN_NAME: u16 = 30;
    /// Proxy Authen Challenge (§4.4.7).
    pub const PROXY_AUTHEN_CHALLENGE: u16 = 31;
    /// Proxy Authen ID (§4.4.7).
    pub const PROXY_AUTHEN_ID: u16 = 32;
    /// Proxy Authen Response (§4.4.7).
    pub const PROXY_AUTHEN_RESPONSE: u16 = 33;
    /// Call Errors (§4.4.9).
    pub const CALL_ERRORS: u16 = 34;
    /// ACCM (§4.4.9).
    pub const ACCM: u16 = 35;
    /// Random Vector (§4.4.8).
    pub const RANDOM_VECTOR: u16 = 36;
    /// Private Group ID (§4.4.5).
    pub const PRIVATE_GROUP_ID: u16 = 37;
    /// Rx Connect Speed (§4.4.6).
    pub const RX_CONNECT_SPEED: u16 = 38;
    /// Sequencing Required (§4.4.6).
    pub const SEQUENCING_REQUIRED: u16 = 39;
}

/// Length of the AVP header: flags/length, Vendor ID, Attribute Type (§4.1).
pub const AVP_HEADER_LEN: usize = 6;
/// Largest AVP: the Length field has 10 bits.
pub const AVP_MAX_LEN: usize = 0x03ff;

const AVP_FLAG_M: u16 = 0x8000;
const AVP_FLAG_H: u16 = 0x4000;
const AVP_LENGTH_MASK: u16 = 0x03ff;

/// One attribute-value pair (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avp<'a> {
    /// M bit: the receiver must understand this AVP or tear down (§4.1).
    pub mandatory: bool,
    /// H bit: the value is hidden with the tunnel secret (§4.3); kept as sent.
    pub hidden: bool,
    /// Vendor ID (0 for IETF attributes).
    pub vendor_id: u16,
    /// Attribute type (see [`avp_type`] for vendor 0).
    pub attribute_type: u16,
    /// Attribute value.
    pub value: &'a [u8],
}

impl<'a> Avp<'a> {
    /// A visible vendor-0 AVP.
    pub fn ietf(mandatory: bool, attribute_type: u16, value: &'a [u8]) -> Avp<'a> {
        Avp {
            mandatory,
            hidden: false,
            vendor_id: 0,
            attribute_type,
            value,
        }
    }

    /// The value as a 16-bit integer, if it is exactly two octets.
    pub fn value_u16(&self) -> Option<u16> {
        match *self.value {
            [a, b] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    /// The value as a 32-bit integer, if it is exactly four octets.
    pub fn value_u32(&self) -> Option<u32> {
        match *self.value {
            [a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        }
    }

    /// Encoded length: header plus value.
    pub fn buffer_len(&self) -> usize {
        AVP_HEADER_LEN + self.value.len()
    }

    /// Writes the AVP at the start of `out`, returning its length.
    ///
    /// Errors: [`Error::BadLength`] if it exceeds 1023 octets, [`Error::Truncated`] if
    /// `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let length = u16::try_from(len)
            .ok()
            .filter(|&l| usize::from(l) <= AVP_MAX_LEN)
            .ok_or(Error::BadLength)?;
        let out = out.get_mut(..len).ok_or(Error::Truncated)?;
        let mut word = length;
        if self.mandatory {
            word |= AVP_FLAG_M;
        }
        if self.hidden {
            word |= AVP_FLAG_H;
        }
        crate::wire::write_u16(&mut out[0..2], word);
        crate::wire::write_u16(&mut out[2..4], self.vendor_id);
        crate::wire::write_u16(&mut out[4..6], self.attribute_type);
        out[AVP_HEADER_LEN..].copy_from_slice(self.value);
        Ok(len)
    }
}

/// Iterator over AVPs. An AVP whose length is below 6 ([`Error::BadLength`]) or past
/// the end ([`Error::Truncated`]) yields one error and ends the iteration.
#[derive(Debug, Clone)]
pub struct AvpIter<'a> {
    rest: &'a [u8],
}

impl<'a> AvpIter<'a> {
    /// Iterates over the AVPs in `avps` (a control message payload).
    pub fn new(avps: &'a [u8]) -> AvpIter<'a> {
        AvpIter { rest: avps }
    }

    fn next_avp(&mut self) -> Result<Avp<'a>> {
        let header = self.rest.get(..AVP_HEADER_LEN).ok_or(Error::Truncated)?;
        let word = crate::wire::read_u16(&header[0..2]);
        let len = usize::from(word & AVP_LENGTH_MASK);
        if len < AVP_HEADER_LEN {
            return Err(Error::BadLength);
        }
        let (avp, rest) = self.rest.split_at_checked(len).ok_or(Error::Truncated)?;
        self.rest = rest;
        Ok(Avp {
            mandatory: word & AVP_FLAG_M != 0,
            hidden: word & AVP_FLAG_H != 0,
            vendor_id: crate::wire::read_u16(&header[2..4]),
            attribute_type: crate::wire::read_u16(&header[4..6]),
            value: &avp[AVP_HEADER_LEN..],
        })
    }
}

impl<'a> Iterator for AvpIter<'a> {
    type Item = Result<Avp<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.next_avp();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// Appends AVPs into a caller's buffer (the payload of a control message).
#[derive(Debug)]
pub struct AvpWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> AvpWriter<'a> {
    /// Starts writing at the beginning of `out`.
    pub fn new(out: &'a mut [u8]) -> AvpWriter<'a> {
        AvpWriter { out, len: 0 }
    }

    /// Appends one AVP; on error nothing is written.
    pub fn push(&mut self, avp: &Avp<'_>) -> Result<()> {
        let rest = self.out.get_mut(self.len..).ok_or(Error::Truncated)?;
        self.len += avp.emit(rest)?;
        Ok(())
    }

    /// Appends the Message Type AVP (mandatory, §4.4.1).
    pub fn push_message_type(&mut self, message_type: MessageType) -> Result<()> {
        self.push_u16(true, avp_type::MESSAGE_TYPE, message_type as u16)
    }

    /// Appends a vendor-0 AVP with a 16-bit value.
    pub fn push_u16(&mut self, mandatory: bool, attribute_type: u16, value: u16) -> Result<()> {
        self.push(&Avp::ietf(mandatory, attribute_type, &value.to_be_bytes()))
    }

    /// Appends a vendor-0 AVP with a 32-bit value.
    pub fn push_u32(&mut self, mandatory: bool, attribute_type: u16, value: u32) -> Result<()> {
        self.push(&Avp::ietf(mandatory, attribute_type, &value.to_be_bytes()))
    }

    /// Octets written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written (the payload of a ZLB).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finishes, returning the number of octets written.
    pub fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::l2tp::Packet;
    use crate::wire::test_util::natt_l2tp;
    use proptest::prelude::*;

    fn avps_of(number: usize) -> Vec<u8> {
        let bytes = natt_l2tp(number);
        Packet::new_checked(&bytes[..]).unwrap().payload().to_vec()
    }

    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==10
    //   Control Message AVP      M=1 H=0 Length 8  Vendor 0 Type 0  Message Type: Start_Control_Request (1)
    //   Protocol Version AVP     M=1 Length 8  Type 2  Version: 1 Revision: 0
    //   Framing Capabilities AVP M=1 Length 10 Type 3  Async: True, Sync: True
    //   Bearer Capabilities AVP  M=1 Length 10 Type 4  Analog: False, Digital: False
    //   Firmware Revision AVP    M=0 Length 8  Type 6  1680 (0x0690)
    //   Host Name AVP            M=1 Length 12 Type 7  (none)
    //   Vendor Name AVP          M=0 Length 19 Type 8  xelerance.com
    //   Assigned Tunnel ID AVP   M=1 Length 8  Type 9  31440
    //   Receive Window Size AVP  M=1 Length 8  Type 10 4
    #[test]
    fn real_sccrq_avps() {
        let payload = avps_of(10);
        let avps: Vec<Avp<'_>> = AvpIter::new(&payload).collect::<Result<_>>().unwrap();
        let summary: Vec<(bool, u16, usize)> = avps
            .iter()
            .map(|a| (a.mandatory, a.attribute_type, a.buffer_len()))
            .collect();
        assert_eq!(
            summary,
            [
                (true, avp_type::MESSAGE_TYPE, 8),
                (true, avp_type::PROTOCOL_VERSION, 8),
                (true, avp_type::FRAMING_CAPABILITIES, 10),
                (true, avp_type::BEARER_CAPABILITIES, 10),
                (false, avp_type::FIRMWARE_REVISION, 8),
                (true, avp_type::HOST_NAME, 12),
                (false, avp_type::VENDOR_NAME, 19),
                (true, avp_type::ASSIGNED_TUNNEL_ID, 8),
                (true, avp_type::RECEIVE_WINDOW_SIZE, 8),
            ]
        );
        assert!(avps.iter().all(|a| a.vendor_id == 0 && !a.hidden));
        assert_eq!(avps[0].value_u16(), Some(MessageType::Sccrq as u16));
        assert_eq!(avps[1].value, &[1, 0]);
        assert_eq!(avps[2].value_u32(), Some(0b11));
        assert_eq!(avps[3].value_u32(), Some(0));
        assert_eq!(avps[4].value_u16(), Some(1680));
        assert_eq!(avps[5].value, b"(none)");
        assert_eq!(avps[6].value, b"xelerance.com");
        assert_eq!(avps[7].value_u16(), Some(31440));
        assert_eq!(avps[8].value_u16(), Some(4));
    }

    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==42
    //   Message Type: Stop_Control_Notification (4); Assigned Tunnel ID: 31440;
    //   Result-Error Code AVP Length 18: Result code 1, Error code 0, Error Message: Goodbye!
    #[test]
    fn real_stopccn_result_code() {
        let payload = avps_of(42);
        let avps: Vec<Avp<'_>> = AvpIter::new(&payload).collect::<Result<_>>().unwrap();
        assert_eq!(avps.len(), 3);
        assert_eq!(avps[0].value_u16(), Some(4));
        assert_eq!(avps[1].value_u16(), Some(31440));
        assert_eq!(avps[2].attribute_type, avp_type::RESULT_CODE);
        assert_eq!(avps[2].buffer_len(), 18);
        assert_eq!(&avps[2].value[..4], &[0, 1, 0, 0]);
        assert_eq!(&avps[2].value[4..], b"Goodbye!");
    }

    // tshark -r tests/data/ikev1-natt.pcap <decode.sh options>: frame 17 is ICCN
    // (tunnel id=4894, session id=13928) with Tx Connect Speed, Framing Type, Rx Connect Speed.
    #[test]
    fn real_iccn_avps() {
        let payload = avps_of(17);
        let types: Vec<u16> = AvpIter::new(&payload)
            .map(|a| a.unwrap().attribute_type)
            .collect();
        assert_eq!(
            types,
            [
                avp_type::MESSAGE_TYPE,
                avp_type::TX_CONNECT_SPEED,
                avp_type::FRAMING_TYPE,
                avp_type::RX_CONNECT_SPEED
            ]
        );
        assert_eq!(MessageType::try_from(12), Ok(MessageType::Iccn));
    }

    #[test]
    fn writer_rebuilds_real_sccrq() {
        let payload = avps_of(10);
        let mut out = [0u8; 128];
        let mut writer = AvpWriter::new(&mut out);
        assert!(writer.is_empty());
        writer.push_message_type(MessageType::Sccrq).unwrap();
        writer
            .push(&Avp::ietf(true, avp_type::PROTOCOL_VERSION, &[1, 0]))
            .unwrap();
        writer
            .push_u32(true, avp_type::FRAMING_CAPABILITIES, 3)
            .unwrap();
        writer
            .push_u32(true, avp_type::BEARER_CAPABILITIES, 0)
            .unwrap();
        writer
            .push_u16(false, avp_type::FIRMWARE_REVISION, 0x0690)
            .unwrap();
        writer
            .push(&Avp::ietf(true, avp_type::HOST_NAME, b"(none)"))
            .unwrap();
        writer
            .push(&Avp::ietf(false, avp_type::VENDOR_NAME, b"xelerance.com"))
            .unwrap();
        writer
            .push_u16(true, avp_type::ASSIGNED_TUNNEL_ID, 31440)
            .unwrap();
        writer
            .push_u16(true, avp_type::RECEIVE_WINDOW_SIZE, 4)
            .unwrap();
        let len = writer.finish();
        assert_eq!(&out[..len], &payload[..]);
    }

    #[test]
    fn writer_errors_leave_output_unchanged() {
        let mut out = [0u8; 10];
        let mut writer = AvpWriter::new(&mut out);
        writer.push_u16(true, avp_type::MESSAGE_TYPE, 1).unwrap();
        assert_eq!(
            writer.push_u16(true, avp_type::ASSIGNED_TUNNEL_ID, 1),
            Err(Error::Truncated)
        );
        assert_eq!(writer.len(), 8);
        let big = [0u8; AVP_MAX_LEN];
        let mut out = [0u8; 2048];
        let mut writer = AvpWriter::new(&mut out);
        let too_big = Avp::ietf(false, avp_type::VENDOR_NAME, &big);
        assert_eq!(writer.push(&too_big), Err(Error::BadLength));
        let fits = Avp::ietf(false, avp_type::VENDOR_NAME, &big[..AVP_MAX_LEN - 6]);
        writer.push(&fits).unwrap();
        assert_eq!(writer.len(), AVP_MAX_LEN);
    }

    #[test]
    fn hidden_bit_and_vendor() {
        let value = [0xde, 0xad];
        let avp = Avp {
            mandatory: false,
            hidden: true,
            vendor_id: 311,
            attribute_type: 9,
            value: &value,
        };
        let mut out = [0u8; 8];
        assert_eq!(avp.emit(&mut out), Ok(8));
        assert_eq!(out, [0x40, 0x08, 0x01, 0x37, 0x00, 0x09, 0xde, 0xad]);
        let back: Vec<_> = AvpIter::new(&out).collect();
        assert_eq!(back, [Ok(avp)]);
    }

    #[test]
    fn bad_avp_lengths_end_iteration() {
        let good = avps_of(10);
        // Length 5 (below the header) in the second AVP.
        let mut short = good.clone();
        short[9] = 5;
        let items: Vec<_> = AvpIter::new(&short).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1], Err(Error::BadLength));
        // Length 0 would loop forever if not refused.
        let mut zero = good.clone();
        zero[0..2].copy_from_slice(&[0x80, 0x00]);
        assert_eq!(
            AvpIter::new(&zero).collect::<Vec<_>>(),
            [Err(Error::BadLength)]
        );
        // Past the end, and a dangling partial header.
        let boundaries = [8, 16, 26, 36, 44, 56, 75, 83, 91];
        for len in 1..good.len() {
            let items: Vec<_> = AvpIter::new(&good[..len]).collect();
            let want = if boundaries.contains(&len) {
                items[items.len() - 1].is_ok()
            } else {
                items.last() == Some(&Err(Error::Truncated))
            };
            assert!(want, "len {len}");
        }
    }

    #[test]
    fn message_type_errors() {
        assert_eq!(MessageType::try_from(5), Err(Error::Unsupported));
        assert_eq!(MessageType::try_from(13), Err(Error::Unsupported));
        let mut bytes = natt_l2tp(10);
        bytes[12 + 5] = 2; // first AVP becomes Protocol Version
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.message_type(), Err(Error::Malformed));
        let mut bytes = natt_l2tp(10);
        bytes[12 + 7] = 99; // unknown message type
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.message_type(), Err(Error::Unsupported));
    }

    proptest! {
        #[test]
        fn arbitrary_avps_never_panic_and_terminate(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut count = 0;
            for item in AvpIter::new(&data) {
                if let Ok(avp) = item {
                    let _ = (avp.value_u16(), avp.value_u32(), avp.buffer_len());
                }
                count += 1;
                prop_assert!(count <= data.len() / AVP_HEADER_LEN + 1);
            }
        }

        #[test]
        fn written_avps_read_back(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..8)) {
            let mut out = [0u8; 256];
            let mut writer = AvpWriter::new(&mut out);
            for (i, value) in values.iter().enumerate() {
                writer.push(&Avp::ietf(i % 2 == 0, i as u16, value)).unwrap();
            }
            let len = writer.finish();
            let back: Vec<Avp<'_>> = AvpIter::new(&out[..len]).collect::<Result<_>>().unwrap();
            prop_assert_eq!(back.len(), values.len());
            for (i, avp) in back.iter().enumerate() {
                prop_assert_eq!(avp.value, &values[i][..]);
                prop_assert_eq!(avp.attribute_type, i as u16);
            }
        }
    }
}
