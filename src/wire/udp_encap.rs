//! What a UDP/4500 payload is (RFC 3948 §2 and §4; RFC 3947 for IKEv1 NAT-T).
//!
//! Three things share the NAT-T port:
//!
//! * a NAT-keepalive: one octet `0xFF` (RFC 3948 §2.3), to be dropped;
//! * an IKE message behind the 4-octet non-ESP marker of zeros (§2.2), whose header
//!   starts at offset [`NON_ESP_MARKER_LEN`];
//! * an ESP packet (§2.1): the first four octets are its SPI, which is never zero.

use super::{Error, Result};

/// IKE (ISAKMP) port (RFC 2408 / RFC 7296 §2).
pub const IKE_PORT: u16 = 500;
/// NAT-T port carrying ESP-in-UDP and IKE behind the non-ESP marker (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// L2TP port (RFC 2661 §8.1).
pub const L2TP_PORT: u16 = 1701;

/// Length of the non-ESP marker (RFC 3948 §2.2).
pub const NON_ESP_MARKER_LEN: usize = 4;
/// The NAT-keepalive octet (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: u8 = 0xff;
/// Length of an ISAKMP/IKE header (RFC 2408 §3.1, RFC 7296 §3.1).
pub const IKE_HEADER_LEN: usize = 28;
/// Shortest ESP packet this classifies as ESP: SPI and sequence number.
pub const MIN_ESP_LEN: usize = 8;

/// The kind of a UDP/4500 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap4500 {
    /// A NAT-keepalive (one `0xFF` octet): drop it.
    NatKeepalive,
    /// An IKE message; its header starts at `offset` (after the non-ESP marker).
    Ike {
        /// Offset of the IKE header in the UDP payload (always [`NON_ESP_MARKER_LEN`]).
        offset: usize,
    },
    /// An ESP packet starting at offset 0.
    Esp,
}

/// Classifies a UDP/4500 payload.
///
/// Errors: [`Error::Truncated`] when the payload is too short for what its first
/// octets announce (an IKE header after the marker, or an ESP header), and
/// [`Error::Malformed`] for a lone octet that is not `0xFF`.
pub fn classify(payload: &[u8]) -> Result<Encap4500> {
    match payload {
        [NAT_KEEPALIVE] => Ok(Encap4500::NatKeepalive),
        [_] => Err(Error::Malformed),
        [0, 0, 0, 0, ike @ ..] => {
            if ike.len() < IKE_HEADER_LEN {
                return Err(Error::Truncated);
            }
            Ok(Encap4500::Ike {
                offset: NON_ESP_MARKER_LEN,
            })
        }
        esp if esp.len() >= MIN_ESP_LEN => Ok(Encap4500::Esp),
        _ => Err(Error::Truncated),
    }
}

/// Classifies a UDP/500 payload: always IKE at offset 0 (no marker is used on port
/// 500, RFC 3947 §4), provided it holds an IKE header.
pub fn classify_500(payload: &[u8]) -> Result<Encap4500> {
    if payload.len() < IKE_HEADER_LEN {
        return Err(Error::Truncated);
    }
    Ok(Encap4500::Ike { offset: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{NATT, frame};
    use crate::wire::{esp, ipv4, udp};
    use proptest::prelude::*;

    fn udp_payload(number: usize) -> &'static [u8] {
        let ip = ipv4::Packet::new_checked(&frame(NATT, number)[14..]).unwrap();
        let payload = ip.payload();
        let start = 14 + ip.header_len() + udp::HEADER_LEN;
        &frame(NATT, number)[start..start + payload.len() - udp::HEADER_LEN]
    }

    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==5
    //   UDP 4500 -> 4500, "UDP Encapsulation of IPsec Packets", Non-ESP Marker,
    //   ISAKMP Initiator SPI 3cafe7cd7262264c, Exchange type Identity Protection (2),
    //   Flags 0x01 (encrypted), Length 108 (KEYS.md frame map: "non-ESP marker 00000000")
    #[test]
    fn real_ike_behind_marker() {
        let payload = udp_payload(5);
        assert_eq!(classify(payload), Ok(Encap4500::Ike { offset: 4 }));
        let ike = &payload[NON_ESP_MARKER_LEN..];
        assert_eq!(&ike[..8], &[0x3c, 0xaf, 0xe7, 0xcd, 0x72, 0x62, 0x26, 0x4c]);
        assert_eq!(ike[18], 2); // exchange type
        assert_eq!(ike[19], 1); // flags: encryption
        assert_eq!(
            u32::from_be_bytes([ike[24], ike[25], ike[26], ike[27]]),
            108
        );
        assert_eq!(ike.len(), 108);
    }

    // tshark -r tests/data/ikev1-natt.pcap -T fields -e frame.number -e udp.srcport
    //   -e esp.spi -e esp.sequence: 10 4500 0xcda2a172 1, 11 4500 0xc61a28e0 1
    #[test]
    fn real_esp_in_udp() {
        for (number, spi) in [(10, 0xcda2_a172), (11, 0xc61a_28e0)] {
            let payload = udp_payload(number);
            assert_eq!(classify(payload), Ok(Encap4500::Esp));
            let packet = esp::Packet::new_checked(payload).unwrap();
            assert_eq!((packet.spi(), packet.sequence_number()), (spi, 1));
        }
    }

    // tshark -r tests/data/ikev1-natt.pcap -V -Y frame.number==1: UDP 500, ISAKMP at offset 0
    #[test]
    fn real_ike_on_500() {
        let payload = udp_payload(1);
        assert_eq!(classify_500(payload), Ok(Encap4500::Ike { offset: 0 }));
        assert_eq!(classify_500(&payload[..27]), Err(Error::Truncated));
    }

    #[test]
    fn keepalive_and_short_payloads() {
        assert_eq!(classify(&[0xff]), Ok(Encap4500::NatKeepalive));
        assert_eq!(classify(&[0x00]), Err(Error::Malformed));
        assert_eq!(classify(&[]), Err(Error::Truncated));
        let ike = udp_payload(5);
        for len in 2..NON_ESP_MARKER_LEN + IKE_HEADER_LEN {
            assert_eq!(classify(&ike[..len]), Err(Error::Truncated), "len {len}");
        }
        let esp = udp_payload(10);
        for len in 2..MIN_ESP_LEN {
            assert_eq!(classify(&esp[..len]), Err(Error::Truncated), "len {len}");
        }
        assert_eq!(classify(&esp[..MIN_ESP_LEN]), Ok(Encap4500::Esp));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            match classify(&data) {
                Ok(Encap4500::Ike { offset }) => prop_assert!(offset + IKE_HEADER_LEN <= data.len()),
                Ok(Encap4500::Esp) => prop_assert!(data.len() >= 8 && data[..4] != [0; 4]),
                Ok(Encap4500::NatKeepalive) => prop_assert_eq!(&data[..], &[0xff][..]),
                Err(_) => {}
            }
            let _ = classify_500(&data);
        }
    }
}
