//! IPv4 headers (RFC 791 §3.1).
//!
//! The view checks version 4, an IHL of at least 5 words that fits the buffer, and a
//! total length between the header length and the buffer length (RFC 1122 §3.2.1.1–2
//! asks a host to discard anything else). Options are skipped by IHL and not parsed.
//! The header checksum is RFC 791's Internet checksum over the header
//! ([`super::checksum`]). `payload()` ends at the total length, so link-layer padding
//! never leaks into upper layers.

use super::{Error, Result, checksum};
use std::net::Ipv4Addr;

/// Length of a header without options (IHL = 5).
pub const HEADER_LEN: usize = 20;
/// Largest header: IHL = 15 words.
pub const MAX_HEADER_LEN: usize = 60;

mod field {
    use crate::wire::Field;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// "Don't Fragment" flag bit of the flags/fragment-offset word.
const FLAG_DF: u16 = 0x4000;
/// "More Fragments" flag bit.
const FLAG_MF: u16 = 0x2000;
/// Fragment offset mask, in units of 8 octets.
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The IP protocol number of the payload (IANA "Assigned Internet Protocol Numbers");
/// also the ESP Next Header value (RFC 4303 §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    /// Internet Control Message Protocol.
    pub const ICMP: Protocol = Protocol(1);
    /// IPv4 encapsulated in IPv4 (ESP tunnel mode next header).
    pub const IPV4: Protocol = Protocol(4);
    /// Transmission Control Protocol.
    pub const TCP: Protocol = Protocol(6);
    /// User Datagram Protocol.
    pub const UDP: Protocol = Protocol(17);
    /// Encapsulating Security Payload.
    pub const ESP: Protocol = Protocol(50);
    /// No Next Header: an ESP dummy packet (RFC 4303 §2.6).
    pub const NO_NEXT_HEADER: Protocol = Protocol(59);
}

/// A read/write view of an IPv4 packet.
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

    /// Wraps `buffer` after checking version, IHL and total length.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Packet { buffer };
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadLength);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in octets (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Type of Service octet (DSCP and ECN, RFC 2474 / RFC 3168).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Total length of the datagram, header included.
    pub fn total_len(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_offset(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in octets (the field counts units of 8 octets).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to Live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> Protocol {
        Protocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum as on the wire.
    pub fn checksum(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The whole header, options included.
    pub fn header(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), 0, self.header_len())
    }

    /// The options: bytes between the fixed header and IHL × 4.
    pub fn options(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), HEADER_LEN, self.header_len())
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// The payload: from the end of the header to the total length.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len());
        super::clamped(self.buffer.as_ref(), self.header_len(), end)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in octets (a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, header_len: usize) {
        let ihl = (header_len / 4).min(15) as u8;
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    /// Sets the Type of Service octet.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, total_len: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::LENGTH], total_len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::IDENT], ident);
    }

    /// Sets DF, MF and the fragment offset (in octets; the low 3 bits are dropped).
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut word = (offset >> 3) & FRAG_OFFSET_MASK;
        if dont_frag {
            word |= FLAG_DF;
        }
        if more_frags {
            word |= FLAG_MF;
        }
        super::write_u16(&mut self.buffer.as_mut()[field::FLG_OFF], word);
    }

    /// Sets the Time to Live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the checksum field as given.
    pub fn set_checksum(&mut self, checksum: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], checksum);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum and writes it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.header());
        self.set_checksum(sum);
    }

    /// The payload, writable (ends at the total length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = usize::from(self.total_len());
        super::clamped_mut(self.buffer.as_mut(), start, end)
    }
}

/// The meaning of an unfragmented IPv4 header (options are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: Protocol,
    /// Payload length (total length minus header length).
    pub payload_len: usize,
    /// Time to Live.
    pub ttl: u8,
    /// Type of Service octet.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Repr {
    /// Parses a checked packet: the checksum must verify and it must not be a fragment
    /// (fragments give [`Error::Unsupported`]; reassembly is not a wire concern).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        if packet.is_fragment() {
            return Err(Error::Unsupported);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Header length: [`HEADER_LEN`] (no options are emitted).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with a valid checksum; the payload is left as it is.
    ///
    /// Fails with [`Error::Truncated`] if the buffer cannot hold the header and
    /// payload, and with [`Error::BadLength`] if they exceed 65535 octets.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let total_len = HEADER_LEN
            .checked_add(self.payload_len)
            .ok_or(Error::BadLength)?;
        let total_len = u16::try_from(total_len).map_err(|_| Error::BadLength)?;
        if packet.buffer.as_ref().len() < usize::from(total_len) {
            return Err(Error::Truncated);
        }
        packet.set_header_len(HEADER_LEN);
        packet.set_tos(self.tos);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_flags_and_frag_offset(self.dont_frag, false, 0);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{CBC, NATT, frame, hex};
    use proptest::prelude::*;

    fn ip(capture: &'static [u8], number: usize) -> &'static [u8] {
        &frame(capture, number)[14..]
    }

    // tshark -r tests/data/ikev1-natt.pcap -V -o ip.check_checksum:TRUE -Y frame.number==1
    //   Version 4, Header Length 20, DSCP/ECN 0x00, Total Length 232, Identification 0xf568,
    //   Flags 0x2 Don't fragment, Fragment Offset 0, TTL 64, Protocol UDP (17),
    //   Header Checksum 0x2fd4 [correct], 10.99.0.1 -> 10.99.0.2
    #[test]
    fn real_udp_500_header() {
        let packet = Packet::new_checked(ip(NATT, 1)).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.tos(), 0);
        assert_eq!(packet.total_len(), 232);
        assert_eq!(packet.ident(), 0xf568);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), Protocol::UDP);
        assert_eq!(packet.checksum(), 0x2fd4);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(packet.payload().len(), 212);
        assert!(packet.options().is_empty());
    }

    // tshark -r tests/data/ikev1-psk-transport-cbc-sha1-modp2048.pcap -T fields
    //   -e frame.number -e ip.proto -e ip.checksum.status -o ip.check_checksum:TRUE
    //   frame 10: ip.proto 50 (ESP), checksum status 1 (good)
    #[test]
    fn real_raw_esp_header() {
        let packet = Packet::new_checked(ip(CBC, 10)).unwrap();
        assert_eq!(packet.protocol(), Protocol::ESP);
        assert!(packet.verify_checksum());
    }

    // Every IPv4 header in the capture verifies (tshark: ip.checksum.status == 1 for all
    // 45 frames with the command above) and round-trips through Repr.
    #[test]
    fn real_headers_round_trip() {
        for number in 1..=45 {
            let bytes = ip(NATT, number);
            let packet = Packet::new_checked(bytes).unwrap();
            let repr = Repr::parse(&packet).unwrap();
            let mut out = bytes.to_vec();
            out[..HEADER_LEN].fill(0);
            repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
            assert_eq!(out, bytes, "frame {number}");
        }
    }

    // ICMP echo request inside PPP inside L2TP inside ESP, ikev1-natt frame 32
    // (decrypted.txt; tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options>
    // -Y frame.number==32): IPv4 10.97.0.10 -> 10.97.0.1, ID 0x9360, DF, TTL 64, ICMP,
    // checksum 0x927c, total length 84.
    #[test]
    fn real_inner_icmp_packet() {
        let bytes = hex(concat!(
            "45000054936040004001927c0a61000a0a6100010800bf4201ec00019a2b036b00000000da66",
            "000000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f",
            "3031323334353637"
        ));
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.total_len(), 84);
        assert_eq!(packet.ident(), 0x9360);
        assert_eq!(packet.protocol(), Protocol::ICMP);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(10, 97, 0, 10));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(10, 97, 0, 1));
        assert!(packet.verify_checksum());
        assert_eq!(checksum::checksum(packet.payload()), 0); // ICMP checksum too
    }

    #[test]
    fn payload_stops_at_total_len() {
        let mut bytes = ip(NATT, 1).to_vec();
        bytes.extend_from_slice(&[0xee; 6]); // link padding
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 212);
    }

    #[test]
    fn truncated_at_every_length() {
        let bytes = ip(NATT, 1);
        for len in 0..bytes.len() {
            assert_eq!(
                Packet::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn bad_version_ihl_and_total_len() {
        let good = ip(NATT, 1);
        let mut v6 = good.to_vec();
        v6[0] = 0x65;
        assert_eq!(Packet::new_checked(&v6[..]).unwrap_err(), Error::BadVersion);
        let mut small_ihl = good.to_vec();
        small_ihl[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&small_ihl[..]).unwrap_err(),
            Error::BadLength
        );
        let mut short_total = good.to_vec();
        short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&short_total[..]).unwrap_err(),
            Error::BadLength
        );
        let mut bad_sum = good.to_vec();
        bad_sum[10] ^= 1;
        let packet = Packet::new_checked(&bad_sum[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::BadChecksum));
    }

    #[test]
    fn options_are_skipped_and_fragments_refused() {
        // Frame 1 with a 4-byte NOP/EOL option block inserted: IHL 6.
        let good = ip(NATT, 1);
        let mut bytes = good[..20].to_vec();
        bytes.extend_from_slice(&[1, 1, 1, 0]);
        bytes.extend_from_slice(&good[20..]);
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_header_len(24);
        packet.set_total_len(236);
        packet.set_flags_and_frag_offset(false, true, 1480);
        packet.fill_checksum();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        assert_eq!(packet.payload(), &good[20..]);
        assert!(packet.more_frags());
        assert_eq!(packet.frag_offset(), 1480);
        assert_eq!(Repr::parse(&packet), Err(Error::Unsupported));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = Packet::new_checked(&data[..]) {
                let _ = (packet.version(), packet.header_len(), packet.tos(), packet.total_len());
                let _ = (packet.ident(), packet.dont_frag(), packet.more_frags(), packet.frag_offset());
                let _ = (packet.ttl(), packet.protocol(), packet.checksum(), packet.src_addr());
                let _ = (packet.dst_addr(), packet.options(), packet.payload(), packet.verify_checksum());
                let _ = Repr::parse(&packet);
            }
        }

        #[test]
        fn setters_keep_payload_panic_free(data in proptest::collection::vec(any::<u8>(), 20..80), len in any::<u16>(), ihl in 0usize..64) {
            let mut data = data;
            data[0] = 0x45;
            data[2..4].copy_from_slice(&20u16.to_be_bytes());
            let mut packet = Packet::new_checked(&mut data[..]).unwrap();
            packet.set_total_len(len);
            packet.set_header_len(ihl);
            let _ = packet.payload_mut();
            let _ = (packet.payload(), packet.options(), packet.verify_checksum());
        }
    }
}
