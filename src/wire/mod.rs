//! Zero-copy packet views and reprs (smoltcp model).
//!
//! Each protocol lives in one file and offers:
//!
//! * a view such as `Packet<T: AsRef<[u8]>>` that wraps a buffer without copying. Its
//!   `new_checked` validates every length once, so the accessors of a checked view never
//!   panic, whatever bytes came off the wire;
//! * setters on `Packet<T: AsRef<[u8]> + AsMut<[u8]>>` for in-place rewriting;
//! * where it makes sense, a `Repr` (the parsed meaning) with `parse`, `buffer_len` and
//!   `emit`.
//!
//! `new_unchecked` exists for emitting into a fresh buffer, as in smoltcp: a view made
//! that way may panic in its accessors if the buffer is shorter than the header, so
//! bytes that come from a peer always go through `new_checked`. Every `Repr::emit`
//! checks the buffer length itself and returns [`Error::Truncated`] instead of
//! panicking.
//!
//! The stack as it appears on the wire for an L2TP/IPsec client:
//! [`ethernet`] / [`ipv4`] / ([`udp`] 4500 + [`udp_encap`]) / [`esp`] /
//! [`udp`] 1701 / [`l2tp`] / [`ppp`] / [`ipv4`]. [`checksum`] and [`pcap`] are helpers.

use core::fmt;
use core::ops::{Range, RangeFrom};

pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod ipv4;
pub mod isakmp;
pub mod l2tp;
pub mod pcap;
pub mod ppp;
pub mod udp;
pub mod udp_encap;

/// A byte range of a fixed-position header field.
pub(crate) type Field = Range<usize>;
/// The bytes from a fixed offset to the end of the buffer.
pub(crate) type Rest = RangeFrom<usize>;

/// Why bytes could not be taken as (or written into) a protocol unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before the header or the length the header announces.
    Truncated,
    /// A length field is impossible (smaller than the header it counts, or too large).
    BadLength,
    /// The version field names a version this module does not speak.
    BadVersion,
    /// A checksum does not verify.
    BadChecksum,
    /// ESP self-describing padding is not 1, 2, 3, … (RFC 4303 §2.4).
    BadPadding,
    /// A field holds a value the RFC forbids (e.g. an L2TP control message without
    /// the L and S bits, a PPP protocol number with an even low octet).
    Malformed,
    /// Well-formed, but outside what this module handles (e.g. IPv4 fragments in a
    /// `Repr`, a pcap link type or magic we do not read).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::Truncated => "truncated",
            Error::BadLength => "bad length field",
            Error::BadVersion => "unsupported version",
            Error::BadChecksum => "bad checksum",
            Error::BadPadding => "bad padding",
            Error::Malformed => "malformed field",
            Error::Unsupported => "unsupported",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Error {}

/// Result of parsing or emitting wire data.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian `u16` from the first two bytes of `bytes`.
#[inline]
pub(crate) fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// Reads a big-endian `u32` from the first four bytes of `bytes`.
#[inline]
pub(crate) fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Writes `value` big-endian into the first two bytes of `bytes`.
#[inline]
pub(crate) fn write_u16(bytes: &mut [u8], value: u16) {
    bytes[..2].copy_from_slice(&value.to_be_bytes());
}

/// Writes `value` big-endian into the first four bytes of `bytes`.
#[inline]
pub(crate) fn write_u32(bytes: &mut [u8], value: u32) {
    bytes[..4].copy_from_slice(&value.to_be_bytes());
}

/// `&data[start..end]`, clamped so it never panics (empty when the range is inverted).
///
/// Used for variable-length parts whose bounds come from fields a setter could change
/// after `new_checked`.
#[inline]
pub(crate) fn clamped(data: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(data.len());
    let start = start.min(end);
    &data[start..end]
}

/// Mutable form of [`clamped`].
#[inline]
pub(crate) fn clamped_mut(data: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let end = end.min(data.len());
    let start = start.min(end);
    &mut data[start..end]
}

/// Helpers shared by the unit tests of every wire module.
#[cfg(test)]
pub(crate) mod test_util {
    use super::pcap;

    /// The four golden captures (tests/data), Ethernet link type.
    pub const NATT: &[u8] = include_bytes!("../../tests/data/ikev1-natt.pcap");
    pub const CBC: &[u8] =
        include_bytes!("../../tests/data/ikev1-psk-transport-cbc-sha1-modp2048.pcap");
    pub const GCM: &[u8] = include_bytes!("../../tests/data/ikev1-psk-transport-gcm.pcap");
    pub const IKEV2: &[u8] = include_bytes!("../../tests/data/ikev2-psk-tunnel-gcm.pcap");

    /// Frame `number` (1-based, as tshark counts) of a capture, read with our pcap reader.
    pub fn frame(capture: &'static [u8], number: usize) -> &'static [u8] {
        let reader = pcap::Reader::new(capture).expect("pcap header");
        let record = reader.records().nth(number - 1).expect("frame number");
        record.expect("record").data
    }

    /// Decodes a hex string (as in decrypted.txt) into bytes.
    pub fn hex(text: &str) -> Vec<u8> {
        assert!(text.len().is_multiple_of(2), "odd hex length");
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
            .collect()
    }
    /// ESP plaintexts of ikev1-natt (decrypted.txt: `UDP | L2TP | PPP … | padding |
    /// pad length | next header`), by frame number.
    pub const NATT_PLAINTEXT: &[(usize, &str)] = &[
        (
            10,
            concat!(
                "06a506a5006f0000c8020067000000000000000080080000000000018008000000020100800a",
                "0000000300000003800a00000004000000000008000000060690800c00000007286e6f6e6529",
                "00130000000878656c6572616e63652e636f6d8008000000097ad080080000000a0004010203",
                "0311",
            ),
        ),
        (13, "06a506a500140000c802000c7ad000000001000201020211"),
        (
            17,
            concat!(
                "06a506a5003a0000c8020032131e366800030002800800000000000c800a0000001800000000",
                "800a0000001300000001000a00000026000000000011",
            ),
        ),
        (
            19,
            concat!(
                "06a506a5002600000002131e3668ff03c02101010014010405780206000000000506211e825e",
                "0011",
            ),
        ),
        (
            20,
            concat!(
                "06a506a5002b000000027ad0cbaaff03c02101010019010405780206000000000305c2238105",
                "06a72d38770102030311",
            ),
        ),
        (
            23,
            concat!(
                "06a506a5002c000000027ad0cbaaff03c2230157001a108ba5021fd4b0413bbdfc5f5078a5ae",
                "fe6c3274706401020211",
            ),
        ),
        (
            24,
            concat!(
                "06a506a5004d00000002131e3668ff03c2230257003b317d1f07b96a8afefca6c0a674dfa122",
                "a30000000000000000a557788e6371cdb4b106443e72fc85de82226cd33012fde700616c6963",
                "65010111",
            ),
        ),
        (
            26,
            "06a506a5001c000000027ad0cbaaff0380210101000a03060a61000101020211",
        ),
        (
            28,
            "06a506a5001c000000027ad0cbaaff0380210301000a03060a61000a01020211",
        ),
        (
            32,
            concat!(
                "06a506a5006600000002131e3668ff03002145000054936040004001927c0a61000a0a610001",
                "0800bf4201ec00019a2b036b00000000da66000000000000101112131415161718191a1b1c1d",
                "1e1f202122232425262728292a2b2c2d2e2f30313233343536370011",
            ),
        ),
        (
            38,
            "06a506a5002200000002131e3668ff03c021050200105573657220726571756573740011",
        ),
        (
            42,
            concat!(
                "06a506a500360000c802002e131e00000005000280080000000000048008000000097ad08012",
                "0000000100010000476f6f64627965210011",
            ),
        ),
    ];

    /// The UDP payload (an L2TP message) inside ikev1-natt frame `number`: the ESP
    /// plaintext minus its trailer and the 8-byte UDP header.
    pub fn natt_l2tp(number: usize) -> Vec<u8> {
        let (_, text) = NATT_PLAINTEXT
            .iter()
            .find(|(n, _)| *n == number)
            .expect("frame in NATT_PLAINTEXT");
        let plaintext = hex(text);
        let (payload, _) = super::esp::split_plaintext(&plaintext).expect("trailer");
        let udp = super::udp::Packet::new_checked(payload).expect("udp");
        udp.payload().to_vec()
    }
}

/// Every frame of every golden capture taken apart layer by layer.
#[cfg(test)]
mod chain_tests {
    use super::test_util::{CBC, GCM, IKEV2, NATT};
    use super::udp_encap::{self, Encap4500};
    use super::{esp, ethernet, ipv4, pcap, udp};

    #[derive(Debug, Default, PartialEq)]
    struct Counts {
        ike: usize,
        esp: usize,
    }

    fn count(capture: &[u8]) -> Counts {
        let mut counts = Counts::default();
        for record in pcap::Reader::new(capture).unwrap().records() {
            let eth = ethernet::Packet::new_checked(record.unwrap().data).unwrap();
            assert_eq!(eth.ethertype(), ethernet::EtherType::IPV4);
            let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
            ipv4::Repr::parse(&ip).unwrap();
            match ip.protocol() {
                ipv4::Protocol::ESP => {
                    esp::Repr::parse(&esp::Packet::new_checked(ip.payload()).unwrap()).unwrap();
                    counts.esp += 1;
                }
                ipv4::Protocol::UDP => {
                    let udp = udp::Packet::new_checked(ip.payload()).unwrap();
                    let kind = match udp.dst_port() {
                        udp_encap::NAT_T_PORT => udp_encap::classify(udp.payload()),
                        _ => udp_encap::classify_500(udp.payload()),
                    };
                    match kind.unwrap() {
                        Encap4500::Esp => counts.esp += 1,
                        Encap4500::Ike { .. } => counts.ike += 1,
                        Encap4500::NatKeepalive => {}
                    }
                }
                other => panic!("unexpected protocol {other:?}"),
            }
        }
        counts
    }

    // tshark -r tests/data/<capture>.pcap -Y esp | wc -l   and   -Y isakmp | wc -l
    //   ikev1-natt 34 ESP (KEYS.md: 16 + 18), 11 ISAKMP; cbc and gcm 34 ESP, 11 ISAKMP;
    //   ikev2 tunnel 40 ESP, 6 ISAKMP
    #[test]
    fn golden_captures_decode_to_the_last_frame() {
        assert_eq!(count(NATT), Counts { ike: 11, esp: 34 });
        assert_eq!(count(CBC), Counts { ike: 11, esp: 34 });
        assert_eq!(count(GCM), Counts { ike: 11, esp: 34 });
        assert_eq!(count(IKEV2), Counts { ike: 6, esp: 40 });
    }
}
