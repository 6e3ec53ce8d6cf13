//! UDP datagrams (RFC 768), with the IPv4 pseudo-header checksum.
//!
//! The view checks that the Length field covers at least the 8-byte header and no more
//! than the buffer; `payload()` ends at Length. For IPv4 a transmitted checksum of zero
//! means "no checksum" (RFC 768; RFC 1122 §4.1.3.4), and a computed zero is sent as
//! `0xffff`. L2TP over UDP inside ESP and ESP-in-UDP (RFC 3948 §2.1) both commonly carry
//! a zero checksum.

use super::{Error, Result, checksum};
use crate::wire::ipv4::Protocol;
use std::net::Ipv4Addr;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use crate::wire::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// A read/write view of a UDP datagram.
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

    /// Wraps `buffer` after checking `HEADER_LEN <= Length <= buffer length`.
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

    /// Source port.
    pub fn src_port(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The Length field: header plus payload, in octets.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Checksum as on the wire (zero: none).
    pub fn checksum(&self) -> u16 {
        super::read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload: from the header to Length.
    pub fn payload(&self) -> &[u8] {
        super::clamped(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// Checksum computed over the pseudo-header, header and payload, with the checksum
    /// field counted as zero. This is the value `fill_checksum` writes (before the
    /// zero-to-`0xffff` substitution).
    fn compute_checksum(&self, src_addr: Ipv4Addr, dst_addr: Ipv4Addr) -> u16 {
        let datagram = super::clamped(self.buffer.as_ref(), 0, usize::from(self.len()));
        let pseudo = checksum::pseudo_header_v4(src_addr, dst_addr, Protocol::UDP.0, self.len());
        let with_field = checksum::combine(pseudo, checksum::sum(datagram));
        // Remove the checksum field's own contribution.
        let field = u32::from(!self.checksum());
        !checksum::fold(with_field + field)
    }

    /// Whether the checksum verifies over the IPv4 pseudo-header; a zero checksum
    /// ("none", RFC 768) verifies.
    pub fn verify_checksum(&self, src_addr: Ipv4Addr, dst_addr: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let datagram = super::clamped(self.buffer.as_ref(), 0, usize::from(self.len()));
        let pseudo = checksum::pseudo_header_v4(src_addr, dst_addr, Protocol::UDP.0, self.len());
        checksum::fold(checksum::combine(pseudo, checksum::sum(datagram))) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::DST_PORT], port);
    }

    /// Sets the Length field.
    pub fn set_len(&mut self, length: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::LENGTH], length);
    }

    /// Sets the checksum field as given (zero: none).
    pub fn set_checksum(&mut self, checksum: u16) {
        super::write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], checksum);
    }

    /// Computes the checksum over the IPv4 pseudo-header and writes it; a computed
    /// zero is written as `0xffff` (RFC 768).
    pub fn fill_checksum(&mut self, src_addr: Ipv4Addr, dst_addr: Ipv4Addr) {
        let sum = match self.compute_checksum(src_addr, dst_addr) {
            0 => 0xffff,
            sum => sum,
        };
        self.set_checksum(sum);
    }

    /// The payload, writable (ends at Length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        super::clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }
}

/// The meaning of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length (Length minus the header).
    pub payload_len: usize,
}

impl Repr {
    /// Parses a checked datagram, verifying a non-zero checksum over the pseudo-header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        src_addr: Ipv4Addr,
        dst_addr: Ipv4Addr,
    ) -> Result<Repr> {
        if !packet.verify_checksum(src_addr, dst_addr) {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    /// Header length plus payload length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header with a zero ("none") checksum. Write the payload, then call
    /// [`Packet::fill_checksum`] if a checksum is wanted.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let length = u16::try_from(self.buffer_len()).map_err(|_| Error::BadLength)?;
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(Error::Truncated);
        }
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(length);
        packet.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4;
    use crate::wire::test_util::{NATT, frame, hex};
    use proptest::prelude::*;

    fn udp(number: usize) -> (Ipv4Addr, Ipv4Addr, &'static [u8]) {
        let ip = ipv4::Packet::new_checked(&frame(NATT, number)[14..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        (src, dst, &frame(NATT, number)[34..])
    }

    // tshark -r tests/data/ikev1-natt.pcap -V -o udp.check_checksum:TRUE -Y frame.number==1
    //   Src Port: 500, Dst Port: 500, Length: 212,
    //   Checksum: 0x15ae incorrect, should be 0xda81 (maybe caused by "UDP checksum offload"?)
    // The capture was taken on a veth, so the kernel left CHECKSUM_PARTIAL's seed (the folded
    // pseudo-header sum) in the field. Filling it yields exactly tshark's 0xda81.
    #[test]
    fn real_udp_500_checksum() {
        let (src, dst, bytes) = udp(1);
        let packet = Packet::new_checked(bytes).unwrap();
        assert_eq!(packet.src_port(), 500);
        assert_eq!(packet.dst_port(), 500);
        assert_eq!(packet.len(), 212);
        assert_eq!(packet.checksum(), 0x15ae);
        assert!(!packet.verify_checksum(src, dst));
        let seed = checksum::pseudo_header_v4(src, dst, 17, 212);
        assert_eq!(checksum::fold(seed), 0x15ae);

        let mut fixed = bytes.to_vec();
        let mut packet = Packet::new_checked(&mut fixed[..]).unwrap();
        packet.fill_checksum(src, dst);
        assert_eq!(packet.checksum(), 0xda81);
        assert!(packet.verify_checksum(src, dst));
        assert_eq!(
            Repr::parse(&Packet::new_checked(&fixed[..]).unwrap(), src, dst),
            Ok(Repr {
                src_port: 500,
                dst_port: 500,
                payload_len: 204
            })
        );
    }

    // tshark -r tests/data/ikev1-natt.pcap -T fields -o udp.check_checksum:TRUE
    //   -e frame.number -e udp.checksum -e udp.checksum_calculated -Y 'frame.number<=9'
    //   1 0x15ae 0xda81, 2 0x1582 0xf17d, 3 0x158e 0x46fd, 4 0x158e 0x5fee, 5 0x1552 0x234d,
    //   6 0x1542 0xf047, 7 0x15b2 0xffca, 8 0x15b2 0x8b85, 9 0x1532 0x6795
    #[test]
    fn real_checksums_match_tshark() {
        let want = [
            0xda81, 0xf17d, 0x46fd, 0x5fee, 0x234d, 0xf047, 0xffca, 0x8b85, 0x6795,
        ];
        for (i, &sum) in want.iter().enumerate() {
            let (src, dst, bytes) = udp(i + 1);
            let mut fixed = bytes.to_vec();
            let mut packet = Packet::new_checked(&mut fixed[..]).unwrap();
            packet.fill_checksum(src, dst);
            assert_eq!(packet.checksum(), sum, "frame {}", i + 1);
        }
    }

    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==10
    //   outer UDP 4500 -> 4500, Length 156, Checksum 0x0000 [zero-value ignored];
    //   inner (decrypted) UDP 1701 -> 1701, Length 111, Checksum 0x0000.
    #[test]
    fn real_zero_checksums_and_round_trip() {
        let (src, dst, bytes) = udp(10);
        let packet = Packet::new_checked(bytes).unwrap();
        assert_eq!(
            (packet.src_port(), packet.dst_port(), packet.len()),
            (4500, 4500, 156)
        );
        assert!(packet.verify_checksum(src, dst));
        let repr = Repr::parse(&packet, src, dst).unwrap();
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
        out[HEADER_LEN..].copy_from_slice(packet.payload());
        assert_eq!(out, bytes);

        let inner = hex("06a506a5006f0000c802006700000000");
        let inner = Packet::new_unchecked(&inner[..]);
        assert_eq!(
            (
                inner.src_port(),
                inner.dst_port(),
                inner.len(),
                inner.checksum()
            ),
            (1701, 1701, 111, 0)
        );
    }

    #[test]
    fn truncated_and_bad_lengths() {
        let (_, _, bytes) = udp(1);
        for len in 0..bytes.len() {
            assert_eq!(
                Packet::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut short = bytes.to_vec();
        short[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&short[..]).unwrap_err(),
            Error::BadLength
        );
        let mut big = Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 4,
        };
        assert_eq!(
            big.emit(&mut Packet::new_unchecked(&mut [0u8; 11][..])),
            Err(Error::Truncated)
        );
        big.payload_len = 70_000;
        assert_eq!(
            big.emit(&mut Packet::new_unchecked(&mut [0u8; 11][..])),
            Err(Error::BadLength)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40), a in any::<u32>(), b in any::<u32>()) {
            let (src, dst) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            if let Ok(packet) = Packet::new_checked(&data[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.len(), packet.checksum(), packet.payload());
                let _ = packet.verify_checksum(src, dst);
                let _ = Repr::parse(&packet, src, dst);
            }
        }

        #[test]
        fn filled_checksum_verifies(payload in proptest::collection::vec(any::<u8>(), 0..40), a in any::<u32>(), b in any::<u32>()) {
            let (src, dst) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            let repr = Repr { src_port: 1701, dst_port: 1701, payload_len: payload.len() };
            let mut buf = vec![0u8; repr.buffer_len()];
            let mut packet = Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut packet).unwrap();
            packet.payload_mut().copy_from_slice(&payload);
            packet.fill_checksum(src, dst);
            prop_assert_ne!(packet.checksum(), 0);
            prop_assert!(packet.verify_checksum(src, dst));
        }
    }
}
