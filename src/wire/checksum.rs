//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the ones'-complement of the ones'-complement sum of the data taken
//! as big-endian 16-bit words (an odd final byte is padded with zero, RFC 1071 §4.1).
//!
//! [`sum`] returns a 16-bit partial sum (not complemented) that can be [`combine`]d
//! with the sums of other even-length pieces (a pseudo-header, a header, a payload)
//! and then [`fold`]ed; `!fold(..)` is the value that goes on the wire. [`update`] and
//! [`update_u32`] adjust a checksum already on the wire when one field changes
//! (RFC 1624 eqn. 3), as NAT or TCP MSS clamping does.

use std::net::Ipv4Addr;

/// Ones'-complement sum of `data` as big-endian 16-bit words, folded to 16 bits
/// (the result is at most `0xffff`; it is *not* complemented).
///
/// An odd final byte counts as the high byte of a word whose low byte is zero, so
/// sums of pieces may only be [`combine`]d when every piece but the last has even
/// length. Processes 8 bytes at a time with end-around carry in a `u64`
/// (RFC 1071 §2(B): the sum is independent of word size up to the final fold).
pub fn sum(data: &[u8]) -> u32 {
    let (words, rest) = data.as_chunks::<8>();
    let mut acc: u64 = 0;
    for word in words {
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(*word));
        acc = s + u64::from(carry);
    }
    let (pairs, odd) = rest.as_chunks::<2>();
    for pair in pairs {
        acc = add64(acc, u64::from(u16::from_be_bytes(*pair)));
    }
    if let Some(&last) = odd.first() {
        acc = add64(acc, u64::from(last) << 8);
    }
    u32::from(fold64(acc))
}

/// Adds with end-around carry.
#[inline]
fn add64(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Folds a 64-bit ones'-complement sum to 16 bits.
#[inline]
fn fold64(acc: u64) -> u16 {
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    fold(acc as u32)
}

/// Folds the carries of a 32-bit partial sum into 16 bits (RFC 1071 §4.1).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Ones'-complement addition of two partial sums, folded to 16 bits.
#[inline]
pub fn combine(a: u32, b: u32) -> u32 {
    u32::from(fold(fold(a) as u32 + fold(b) as u32))
}

/// The Internet checksum of `data`: `!fold(sum(data))`, the value that goes on the wire.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the IPv4 pseudo-header used by UDP and TCP (RFC 768, RFC 793 §3.1):
/// source address, destination address, zero, protocol, upper-layer length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let mut header = [0u8; 12];
    header[0..4].copy_from_slice(&src.octets());
    header[4..8].copy_from_slice(&dst.octets());
    header[9] = protocol;
    header[10..12].copy_from_slice(&length.to_be_bytes());
    sum(&header)
}

/// Incrementally updates `checksum` (as on the wire) when one 16-bit word changes from
/// `old` to `new`: `HC' = ~(~HC + ~m + m')` (RFC 1624 eqn. 3).
///
/// Unlike eqn. 2 this never yields `0x0000` from a non-zero sum of data (RFC 1624 §3).
#[inline]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(sum)
}

/// [`update`] for a 32-bit field, e.g. an IPv4 address rewritten by NAT.
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let high = update(checksum, (old >> 16) as u16, (new >> 16) as u16);
    update(high, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 §3 reference: 16 bits at a time, end-around carry at the end.
    fn naive(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for chunk in data.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 numerical example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    // tshark -r tests/data/ikev1-natt.pcap -V -o ip.check_checksum:TRUE -Y frame.number==1
    //   Header Checksum: 0x2fd4 [correct]; UDP: Checksum: 0x15ae incorrect, should be 0xda81
    #[test]
    fn real_ipv4_header_checksums_to_zero() {
        let frame = crate::wire::test_util::frame(crate::wire::test_util::NATT, 1);
        let header = &frame[14..34];
        assert_eq!(&header[10..12], &[0x2f, 0xd4]);
        assert_eq!(checksum(header), 0);
        assert_eq!(fold(sum(header)), 0xffff);
    }

    #[test]
    fn empty_and_single_byte() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn all_ones_stays_nonzero_sum() {
        // 0xffff + 0xffff... folds to 0xffff, never to 0.
        assert_eq!(fold(sum(&[0xff; 64])), 0xffff);
        assert_eq!(fold(sum(&[0xff; 63])), 0xff00);
    }

    #[test]
    fn update_matches_rfc1624_example() {
        // RFC 1624 §4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest! {
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(fold(sum(&data)), naive(&data));
        }

        #[test]
        fn combine_matches_concatenation(
            a in proptest::collection::vec(any::<u8>(), 0..40).prop_map(|mut v| { v.truncate(v.len() & !1); v }),
            b in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let joined: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(fold(combine(sum(&a), sum(&b))), fold(sum(&joined)));
        }

        #[test]
        fn update_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 4..64),
            at in 0usize..30,
            new in any::<u16>(),
        ) {
            let at = (at * 2) % (data.len() & !1);
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            // Both are valid encodings of the same ones'-complement value (0 and 0xffff
            // are the two zeros), so compare them folded the same way.
            let updated = update(before, old, new);
            prop_assert!(updated == after || (updated == 0xffff && after == 0) || (updated == 0 && after == 0xffff));
        }

        #[test]
        fn update_u32_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 8..32), new in any::<u32>()) {
            let before = checksum(&data);
            let old = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            data[0..4].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            let updated = update_u32(before, old, new);
            prop_assert!(updated == after || (updated == 0xffff && after == 0) || (updated == 0 && after == 0xffff));
        }
    }
}
