//! ESP packets (RFC 4303 §2): the cleartext header and the decrypted trailer.
//!
//! On the wire an ESP packet is SPI (§2.1), Sequence Number (§2.2), then the encrypted
//! payload with its IV, and the ICV; which parts are IV and ICV depends on the SA's
//! transform, so the view stops at "everything after the 8-byte header". After
//! decryption the plaintext ends with Padding, Pad Length and Next Header (§2.4–2.6);
//! [`parse_trailer`] reads and checks those, [`emit_trailer`] writes them.

use super::{Error, Result};
use crate::wire::ipv4::Protocol;

/// Length of the cleartext ESP header: SPI and Sequence Number.
pub const HEADER_LEN: usize = 8;
/// Length of the fixed trailer: Pad Length and Next Header.
pub const TRAILER_LEN: usize = 2;

mod field {
    use crate::wire::{Field, Rest};
    pub const SPI: Field = 0..4;
    pub const SEQUENCE_NUMBER: Field = 4..8;
    pub const PAYLOAD: Rest = 8..;
}

/// A read/write view of an ESP packet's cleartext header.
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

    /// Wraps `buffer` after checking it holds the 8-byte header.
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

    /// Security Parameters Index (§2.1).
    pub fn spi(&self) -> u32 {
        super::read_u32(&self.buffer.as_ref()[field::SPI])
    }

    /// Sequence Number, the low 32 bits with ESN (§2.2).
    pub fn sequence_number(&self) -> u32 {
        super::read_u32(&self.buffer.as_ref()[field::SEQUENCE_NUMBER])
    }

    /// Everything after the header: IV, ciphertext and ICV.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        super::write_u32(&mut self.buffer.as_mut()[field::SPI], spi);
    }

    /// Sets the Sequence Number.
    pub fn set_sequence_number(&mut self, sequence_number: u32) {
        super::write_u32(
            &mut self.buffer.as_mut()[field::SEQUENCE_NUMBER],
            sequence_number,
        );
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The meaning of an ESP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Security Parameters Index.
    pub spi: u32,
    /// Sequence Number (low 32 bits).
    pub sequence_number: u32,
}

impl Repr {
    /// Parses a checked header. SPI 0 is reserved for local use and "MUST NOT be sent
    /// on the wire" (§2.1), so it gives [`Error::Malformed`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        let spi = packet.spi();
        if spi == 0 {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            spi,
            sequence_number: packet.sequence_number(),
        })
    }

    /// Header length: [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes SPI and Sequence Number.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        packet.set_spi(self.spi);
        packet.set_sequence_number(self.sequence_number);
        Ok(())
    }
}

/// The decrypted ESP trailer (§2.4–2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Number of padding octets before the Pad Length octet.
    pub pad_len: u8,
    /// Protocol of the payload (e.g. UDP in transport mode, IPv4 in tunnel mode).
    pub next_header: Protocol,
}

impl Trailer {
    /// Length of the payload in a plaintext of `plaintext_len` octets ending in this
    /// trailer (saturating: zero if the trailer claims more than there is).
    pub fn payload_len(&self, plaintext_len: usize) -> usize {
        plaintext_len.saturating_sub(TRAILER_LEN + usize::from(self.pad_len))
    }
}

/// Reads the trailer at the end of a decrypted plaintext and checks the padding.
///
/// Errors: [`Error::Truncated`] if there are fewer than two octets,
/// [`Error::BadLength`] if Pad Length exceeds what precedes it, and
/// [`Error::BadPadding`] if the padding is not 1, 2, 3, … — the default padding
/// content a receiver "MUST" check when no other has been negotiated (§2.4).
pub fn parse_trailer(plaintext: &[u8]) -> Result<Trailer> {
    let [.., pad_len, next_header] = *plaintext else {
        return Err(Error::Truncated);
    };
    let pad_start = plaintext
        .len()
        .checked_sub(TRAILER_LEN + usize::from(pad_len))
        .ok_or(Error::BadLength)?;
    let padding = &plaintext[pad_start..plaintext.len() - TRAILER_LEN];
    let monotonic = padding
        .iter()
        .zip(1u8..)
        .all(|(&byte, expected)| byte == expected);
    if !monotonic {
        return Err(Error::BadPadding);
    }
    Ok(Trailer {
        pad_len,
        next_header: Protocol(next_header),
    })
}

/// The payload of a decrypted plaintext and its trailer.
pub fn split_plaintext(plaintext: &[u8]) -> Result<(&[u8], Trailer)> {
    let trailer = parse_trailer(plaintext)?;
    let payload = &plaintext[..trailer.payload_len(plaintext.len())];
    Ok((payload, trailer))
}

/// Number of padding octets so that `payload_len` plus padding plus the 2-octet trailer
/// is a multiple of `align` (the cipher block size, at least 4: §2.4). `align` of 0 or
/// 1 is taken as 4.
pub fn pad_len_for(payload_len: usize, align: usize) -> usize {
    let align = align.max(4);
    let rem = (payload_len + TRAILER_LEN) % align;
    if rem == 0 { 0 } else { align - rem }
}

/// Writes padding 1, 2, 3, …, Pad Length and Next Header into `out`, which must be
/// exactly the padding plus the 2-octet trailer (so `out.len() - 2` is the pad length).
///
/// Fails with [`Error::Truncated`] if `out` is shorter than 2 octets and with
/// [`Error::BadLength`] if the padding would exceed 255 octets.
pub fn emit_trailer(out: &mut [u8], next_header: Protocol) -> Result<()> {
    let pad_len = out.len().checked_sub(TRAILER_LEN).ok_or(Error::Truncated)?;
    let pad_len = u8::try_from(pad_len).map_err(|_| Error::BadLength)?;
    let (padding, trailer) = out.split_at_mut(usize::from(pad_len));
    for (byte, value) in padding.iter_mut().zip(1u8..) {
        *byte = value;
    }
    trailer[0] = pad_len;
    trailer[1] = next_header.0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{CBC, GCM, NATT, frame, hex};
    use proptest::prelude::*;

    // tshark -r tests/data/ikev1-psk-transport-cbc-sha1-modp2048.pcap -T fields
    //   -e frame.number -e ip.proto -e esp.spi -e esp.sequence
    //   10 50 0xcd666de9 1 / 11 50 0xc43a180b 1 / 12 50 0xcd666de9 2
    // (raw ESP, IP protocol 50; KEYS.md: I->R SPI cd666de9, R->I SPI c43a180b)
    #[test]
    fn real_raw_esp_cbc() {
        for (number, spi, seq) in [
            (10, 0xcd66_6de9, 1),
            (11, 0xc43a_180b, 1),
            (12, 0xcd66_6de9, 2),
        ] {
            let bytes = &frame(CBC, number)[34..];
            let packet = Packet::new_checked(bytes).unwrap();
            assert_eq!(packet.spi(), spi);
            assert_eq!(packet.sequence_number(), seq);
            let repr = Repr::parse(&packet).unwrap();
            let mut out = bytes.to_vec();
            out[..HEADER_LEN].fill(0);
            repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
            assert_eq!(out, bytes);
        }
    }

    // tshark -r tests/data/ikev1-psk-transport-gcm.pcap -T fields -e frame.number -e ip.proto
    //   -e esp.spi -e esp.sequence  ->  10 50 0xc241bd35 1 / 14 50 0xcb66227a 2
    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==10
    //   UDP 4500 -> 4500, ESP SPI: 0xcda2a172, ESP Sequence: 1, ESP IV: 52285cde5872323f
    #[test]
    fn real_raw_esp_gcm_and_esp_in_udp() {
        let gcm = Packet::new_checked(&frame(GCM, 10)[34..]).unwrap();
        assert_eq!((gcm.spi(), gcm.sequence_number()), (0xc241_bd35, 1));
        let gcm = Packet::new_checked(&frame(GCM, 14)[34..]).unwrap();
        assert_eq!((gcm.spi(), gcm.sequence_number()), (0xcb66_227a, 2));

        // Ethernet 14 + IPv4 20 + UDP 8.
        let natt = Packet::new_checked(&frame(NATT, 10)[42..]).unwrap();
        assert_eq!(natt.spi(), 0xcda2_a172);
        assert_eq!(natt.sequence_number(), 1);
        assert_eq!(&natt.payload()[..8], &hex("52285cde5872323f")[..]);
        // 148 UDP payload octets: 8 header + 8 IV + 116 ciphertext + 16 ICV.
        assert_eq!(natt.payload().len(), 148 - 8);
    }

    // decrypted.txt of ikev1-natt, frame 10: "ICV OK, pad 3, next header 17"
    // tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==10
    //   ESP Contained Data (111 bytes), Pad: 010203, ESP Pad Length: 3, Next header: UDP (0x11)
    #[test]
    fn real_trailers() {
        let plaintext = hex(concat!(
            "06a506a5006f0000c8020067000000000000000080080000000000018008000000020100800a",
            "0000000300000003800a00000004000000000008000000060690800c00000007286e6f6e6529",
            "00130000000878656c6572616e63652e636f6d8008000000097ad080080000000a0004",
            "0102030311"
        ));
        let (payload, trailer) = split_plaintext(&plaintext).unwrap();
        assert_eq!(
            trailer,
            Trailer {
                pad_len: 3,
                next_header: Protocol::UDP
            }
        );
        assert_eq!(payload.len(), 111);
        // cbc capture frame 13: "pad 10, next header 17" (16-byte AES blocks).
        let cbc = hex("06a506a500140000c802000cf6f20000000100020102030405060708090a0a11");
        assert_eq!(parse_trailer(&cbc).unwrap().pad_len, 10);
        // ikev2 tunnel capture frame 5: next header 4 (IPv4).
        let tunnel = hex("0102030304");
        assert_eq!(parse_trailer(&tunnel).unwrap().next_header, Protocol::IPV4);
        // Re-emitting the trailer gives the same bytes.
        let mut out = cbc.clone();
        let tail = out.len() - 12;
        out[tail..].fill(0);
        emit_trailer(&mut out[tail..], Protocol::UDP).unwrap();
        assert_eq!(out, cbc);
        assert_eq!(pad_len_for(payload.len(), 4), 3);
        assert_eq!(pad_len_for(20, 16), 10);
        assert_eq!(pad_len_for(14, 16), 0);
    }

    #[test]
    fn trailer_errors_are_distinct() {
        assert_eq!(parse_trailer(&[]), Err(Error::Truncated));
        assert_eq!(parse_trailer(&[17]), Err(Error::Truncated));
        assert_eq!(parse_trailer(&[1, 2, 3, 17]), Err(Error::BadLength));
        assert_eq!(parse_trailer(&[0xaa, 1, 3, 3, 17]), Err(Error::BadPadding));
        assert_eq!(
            parse_trailer(&[0xaa, 0, 17]),
            Ok(Trailer {
                pad_len: 0,
                next_header: Protocol::UDP
            })
        );
        assert_eq!(
            emit_trailer(&mut [0u8; 1], Protocol::UDP),
            Err(Error::Truncated)
        );
        assert_eq!(
            emit_trailer(&mut [0u8; 258], Protocol::UDP),
            Err(Error::BadLength)
        );
    }

    #[test]
    fn truncated_header_and_spi_zero() {
        let bytes = &frame(NATT, 10)[42..];
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&bytes[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let zero = [0u8; 8];
        assert_eq!(
            Repr::parse(&Packet::new_checked(&zero[..]).unwrap()),
            Err(Error::Malformed)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(packet) = Packet::new_checked(&data[..]) {
                let _ = (packet.spi(), packet.sequence_number(), packet.payload());
                let _ = Repr::parse(&packet);
            }
            if let Ok((payload, trailer)) = split_plaintext(&data) {
                prop_assert_eq!(payload.len() + usize::from(trailer.pad_len) + 2, data.len());
            }
        }

        #[test]
        fn emitted_trailer_parses(payload_len in 0usize..100, align in 0usize..33, next in any::<u8>()) {
            let pad = pad_len_for(payload_len, align);
            let mut buf = vec![0xeeu8; payload_len + pad + TRAILER_LEN];
            emit_trailer(&mut buf[payload_len..], Protocol(next)).unwrap();
            let (payload, trailer) = split_plaintext(&buf).unwrap();
            prop_assert_eq!(payload.len(), payload_len);
            prop_assert_eq!(trailer.next_header, Protocol(next));
            prop_assert_eq!(buf.len() % align.max(4), 0);
        }
    }
}
