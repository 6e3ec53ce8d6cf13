//! Ethernet II frames (IEEE 802.3 clause 3.2.6 "Length/Type"; RFC 894 for IPv4).
//!
//! Destination address, source address, EtherType, payload. The FCS is not part of
//! what AF_XDP, packet sockets or pcap files hand us, so it is not modelled.

use super::{Error, Result};
use core::fmt;

/// Length of the Ethernet II header: two addresses and the EtherType.
pub const HEADER_LEN: usize = 14;

mod field {
    use crate::wire::{Field, Rest};
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Address = Address([0xff; 6]);

    /// Whether the I/G bit marks a group (multicast or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    fn from_bytes(bytes: &[u8]) -> Address {
        let mut octets = [0u8; 6];
        octets.copy_from_slice(&bytes[..6]);
        Address(octets)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The EtherType of the payload (IEEE registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// Address Resolution Protocol.
    pub const ARP: EtherType = EtherType(0x0806);
    /// Internet Protocol version 6.
    pub const IPV6: EtherType = EtherType(0x86dd);
}

/// A read/write view of an Ethernet II frame.
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

    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Address {
        Address::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The source address.
    pub fn src_addr(&self) -> Address {
        Address::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType.
    pub fn ethertype(&self) -> EtherType {
        EtherType(super::read_u16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        super::write_u16(&mut self.buffer.as_mut()[field::ETHERTYPE], ethertype.0);
    }

    /// The bytes after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The meaning of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Address,
    /// Destination address.
    pub dst_addr: Address,
    /// EtherType of the payload.
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            ethertype: packet.ethertype(),
        })
    }

    /// Header length: always [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; the payload is left as it is.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        packet.set_dst_addr(self.dst_addr);
        packet.set_src_addr(self.src_addr);
        packet.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{NATT, frame};
    use proptest::prelude::*;

    // tshark -r tests/data/ikev1-natt.pcap -V -Y frame.number==1
    //   Ethernet II, Src: 1e:be:c5:6c:85:5a, Dst: aa:87:ce:d6:ec:af, Type: IPv4 (0x0800)
    #[test]
    fn real_frame_1() {
        let bytes = frame(NATT, 1);
        let packet = Packet::new_checked(bytes).unwrap();
        assert_eq!(packet.dst_addr().to_string(), "aa:87:ce:d6:ec:af");
        assert_eq!(packet.src_addr().to_string(), "1e:be:c5:6c:85:5a");
        assert_eq!(packet.ethertype(), EtherType::IPV4);
        assert!(!packet.dst_addr().is_multicast());
        assert_eq!(packet.payload().len(), 246 - HEADER_LEN);
    }

    // tshark -r tests/data/ikev1-natt.pcap -V -Y frame.number==2
    //   Ethernet II, Src: aa:87:ce:d6:ec:af, Dst: 1e:be:c5:6c:85:5a
    #[test]
    fn real_frame_round_trip() {
        for number in [1, 2, 10] {
            let bytes = frame(NATT, number);
            let packet = Packet::new_checked(bytes).unwrap();
            let repr = Repr::parse(&packet).unwrap();
            let mut out = bytes.to_vec();
            out[..HEADER_LEN].fill(0);
            repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
            assert_eq!(out, bytes);
        }
        let reply = Repr::parse(&Packet::new_checked(frame(NATT, 2)).unwrap()).unwrap();
        assert_eq!(reply.src_addr.to_string(), "aa:87:ce:d6:ec:af");
    }

    #[test]
    fn truncated_at_every_length() {
        let bytes = frame(NATT, 1);
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(
            Packet::new_checked(&bytes[..HEADER_LEN])
                .unwrap()
                .payload()
                .is_empty()
        );
        let repr = Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap();
        let mut short = [0u8; HEADER_LEN - 1];
        let err = repr.emit(&mut Packet::new_unchecked(&mut short[..]));
        assert_eq!(err, Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = Packet::new_checked(&data[..]) {
                let _ = (packet.dst_addr(), packet.src_addr(), packet.ethertype(), packet.payload());
                let _ = Repr::parse(&packet);
            }
        }
    }
}
