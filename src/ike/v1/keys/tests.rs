//! Key derivation and message encryption replayed over the three IKEv1 golden captures:
//! from the captured octets, the PSK and g^xy (the DH private values are gone, so g^xy
//! comes from KEYS.md), every key, IV, hash and plaintext must come out as strongSwan
//! logged it and as the kernel installed it.

use super::*;
use crate::ike::v1::crypto::DhGroup;
use crate::wire::isakmp::test_util::{GOLDEN, Golden, decrypted, ike_message, keys_value};
use crate::wire::isakmp::{SaPayload, chain_len, p1attr, payload, payloads, protocol};
use crate::wire::test_util::hex;

/// The first payload of type `ty` in a chain.
fn find(first: u8, chain: &[u8], ty: u8) -> Vec<u8> {
    payloads(first, chain)
        .map(Result::unwrap)
        .find(|(found, _)| *found == ty)
        .map(|(_, body)| body.to_vec())
        .unwrap_or_else(|| panic!("no payload {ty}"))
}

/// The first payload of type `ty` in a cleartext message.
fn find_clear(message: &[u8], ty: u8) -> Vec<u8> {
    let (header, body) = isakmp::parse_message(message).unwrap();
    find(header.next_payload, body, ty)
}

/// Everything phase 1 of a capture gives, taken from the packets.
struct Exchange {
    hash: HashAlg,
    cipher: IkeCipher,
    cky_i: [u8; 8],
    cky_r: [u8; 8],
    sai_b: Vec<u8>,
    gxi: Vec<u8>,
    gxr: Vec<u8>,
    keys: Phase1Keys,
}

fn phase1(golden: &Golden) -> Exchange {
    let mm2 = ike_message(golden, 2);
    let chosen = SaPayload::parse(&find_clear(mm2, payload::SA)).unwrap();
    let transform = &chosen.proposals[0].transforms[0];
    let hash = HashAlg::from_p1(transform.attr_u64(p1attr::HASH).unwrap() as u16).unwrap();
    let key_bits = transform
        .attr_u64(p1attr::KEY_LENGTH)
        .map(|bits| bits as u16);
    let enc = transform.attr_u64(p1attr::ENCRYPTION).unwrap() as u16;
    let cipher = IkeCipher::from_p1(enc, key_bits).unwrap();
    let header = Header::parse(mm2).unwrap();
    let (cky_i, cky_r) = (header.initiator_cookie, header.responder_cookie);
    let mm3 = ike_message(golden, 3);
    let mm4 = ike_message(golden, 4);
    let gxi = find_clear(mm3, payload::KE);
    let gxr = find_clear(mm4, payload::KE);
    let ni = find_clear(mm3, payload::NONCE);
    let nr = find_clear(mm4, payload::NONCE);
    let psk = keys_value(golden.keys, "PSK");
    let gxy = keys_value(golden.keys, "g^xy");
    let keys = Phase1Keys::derive_psk(hash, cipher, &psk, &ni, &nr, &gxy, &cky_i, &cky_r);
    Exchange {
        hash,
        cipher,
        cky_i,
        cky_r,
        sai_b: find_clear(ike_message(golden, 1), payload::SA),
        gxi,
        gxr,
        keys,
    }
}

/// Decrypts frame `number` with `iv`, checks IV and plaintext against decrypted.txt,
/// and returns the plaintext, the first payload type and the next IV.
fn decrypt_frame(
    golden: &Golden,
    exchange: &Exchange,
    number: usize,
    iv: &[u8],
) -> (Vec<u8>, u8, Vec<u8>) {
    let (expected_iv, expected_plain) = decrypted(golden, number);
    assert_eq!(iv, expected_iv, "{} frame {number} IV", golden.name);
    let message = ike_message(golden, number);
    let (header, plain, next_iv) =
        decrypt_message(exchange.cipher, &exchange.keys.ka, iv, message).unwrap();
    assert_eq!(
        plain[..],
        expected_plain[..],
        "{} frame {number}",
        golden.name
    );
    assert_eq!(header.flags & flags::ENCRYPTION, flags::ENCRYPTION);
    (plain.to_vec(), header.next_payload, next_iv)
}

#[test]
fn real_phase1_keys() {
    for golden in &GOLDEN {
        let exchange = phase1(golden);
        let keys = &exchange.keys;
        assert_eq!(
            keys.skeyid[..],
            keys_value(golden.keys, "SKEYID"),
            "{}",
            golden.name
        );
        assert_eq!(keys.skeyid_d[..], keys_value(golden.keys, "SKEYID_d"));
        assert_eq!(keys.skeyid_a[..], keys_value(golden.keys, "SKEYID_a"));
        assert_eq!(keys.skeyid_e[..], keys_value(golden.keys, "SKEYID_e"));
        assert_eq!(keys.ka[..], keys_value(golden.keys, "Ka"));
        assert_eq!(keys.ka.len(), exchange.cipher.key_len());
        let iv = initial_iv(exchange.hash, exchange.cipher, &exchange.gxi, &exchange.gxr);
        assert_eq!(iv, keys_value(golden.keys, "initial IV"));
        let debug = format!("{keys:?}");
        assert!(
            debug.starts_with("Phase1Keys { prf: ") && debug.ends_with(", .. }"),
            "{debug}"
        );
    }
    // Ka expansion (App. B) happens only where SKEYID_e is short: SHA-1 with AES-256.
    let cbc = phase1(&GOLDEN[1]);
    assert_eq!(
        (cbc.hash, cbc.cipher),
        (HashAlg::Sha1, IkeCipher::AesCbc { key_len: 32 })
    );
    assert_ne!(cbc.keys.ka[..20], cbc.keys.skeyid_e[..]);
}

#[test]
fn real_main_mode_5_and_6() {
    for golden in &GOLDEN {
        let exchange = phase1(golden);
        let keys = &exchange.keys;
        let iv = initial_iv(exchange.hash, exchange.cipher, &exchange.gxi, &exchange.gxr);
        let (mm5, first5, iv) = decrypt_frame(golden, &exchange, 5, &iv);
        let (mm6, first6, iv) = decrypt_frame(golden, &exchange, 6, &iv);
        assert_eq!(iv, keys_value(golden.keys, "last MM6 cipher block"));

        let idii_b = find(first5, &mm5, payload::ID);
        let hash_i = keys.hash_i(
            &exchange.gxi,
            &exchange.gxr,
            &exchange.cky_i,
            &exchange.cky_r,
            &exchange.sai_b,
            &idii_b,
        );
        assert_eq!(hash_i[..], find(first5, &mm5, payload::HASH));
        assert_eq!(hash_i[..], keys_value(golden.keys, "HASH_I"));
        let idir_b = find(first6, &mm6, payload::ID);
        let hash_r = keys.hash_r(
            &exchange.gxr,
            &exchange.gxi,
            &exchange.cky_r,
            &exchange.cky_i,
            &exchange.sai_b,
            &idir_b,
        );
        assert_eq!(hash_r[..], find(first6, &mm6, payload::HASH));
        assert_eq!(hash_r[..], keys_value(golden.keys, "HASH_R"));
    }
}

// strongSwan pads with zeros (1..=block octets): rebuilding MM5 from its payloads and
// encrypting with the same IV gives back the captured message, octet for octet.
#[test]
fn real_mm5_reencrypts_to_the_capture() {
    for golden in &GOLDEN {
        let exchange = phase1(golden);
        let iv = initial_iv(exchange.hash, exchange.cipher, &exchange.gxi, &exchange.gxr);
        let captured = ike_message(golden, 5);
        let (_, plain) = decrypted(golden, 5);
        let header = Header::parse(captured).unwrap();
        let mut chain = ChainBuilder::new();
        for item in payloads(header.next_payload, &plain) {
            let (ty, body) = item.unwrap();
            chain.push(ty, body);
        }
        let blank = Header {
            next_payload: 0,
            flags: 0,
            length: 0,
            ..header
        };
        let (message, last_block) =
            encrypt_message(exchange.cipher, &exchange.keys.ka, &iv, blank, &chain).unwrap();
        assert_eq!(message, captured, "{}", golden.name);
        assert_eq!(last_block, decrypted(golden, 6).0, "the next IV");
    }
}

/// The SPI of the ESP proposal in a Quick Mode plaintext.
fn qm_spi(first: u8, plain: &[u8]) -> u32 {
    let sa = SaPayload::parse(&find(first, plain, payload::SA)).unwrap();
    let spi = &sa.proposals[0].spi;
    u32::from_be_bytes([spi[0], spi[1], spi[2], spi[3]])
}

/// The ESP key material the kernel got for one direction (KEYS.md "ESP SAs", from
/// `ip xfrm state`): SPI and enc key | salt | auth key.
fn xfrm_keymat(golden: &Golden, direction: &str) -> (u32, Vec<u8>) {
    let line = golden
        .keys
        .lines()
        .find(|line| line.starts_with(&format!("| {direction} ")))
        .unwrap();
    let cells: Vec<&str> = line
        .split('|')
        .map(|cell| cell.trim().trim_matches('`'))
        .collect();
    let spi = u32::from_str_radix(cells[2].trim_start_matches("0x"), 16).unwrap();
    let mut keymat = hex(cells[5]);
    for extra in [cells[6], cells[8]] {
        if extra != "-" {
            keymat.extend_from_slice(&hex(extra));
        }
    }
    (spi, keymat)
}

#[test]
fn real_quick_mode() {
    for golden in &GOLDEN {
        let exchange = phase1(golden);
        let keys = &exchange.keys;
        let last_mm6 = keys_value(golden.keys, "last MM6 cipher block");
        let mid = Header::parse(ike_message(golden, 7)).unwrap().message_id;
        assert_eq!(mid.to_be_bytes()[..], keys_value(golden.keys, "M-ID"));
        let iv = phase2_iv(exchange.hash, exchange.cipher, &last_mm6, mid);
        assert_eq!(iv, keys_value(golden.keys, "QM IV"));
        let (qm1, first1, iv) = decrypt_frame(golden, &exchange, 7, &iv);
        let (qm2, first2, iv) = decrypt_frame(golden, &exchange, 8, &iv);
        let (qm3, first3, _) = decrypt_frame(golden, &exchange, 9, &iv);
        assert!(first1 == payload::HASH && first2 == payload::HASH && first3 == payload::HASH);

        // HASH(1) = prf(SKEYID_a, M-ID | everything after the HASH payload).
        let hash_len = exchange.hash.len();
        let after_hash = |plain: &[u8]| {
            let end = chain_len(payload::HASH, plain).unwrap();
            plain[4 + hash_len..end].to_vec()
        };
        let ni = find(first1, &qm1, payload::NONCE);
        let nr = find(first2, &qm2, payload::NONCE);
        assert_eq!(ni, keys_value(golden.keys, "Ni2_b"));
        assert_eq!(nr, keys_value(golden.keys, "Nr2_b"));
        let hash1 = keys.hash_a(mid, &[&after_hash(&qm1)]);
        assert_eq!(hash1[..], find(first1, &qm1, payload::HASH));
        assert_eq!(hash1[..], keys_value(golden.keys, "Hash(1)"));
        let hash2 = keys.hash_a(mid, &[&ni, &after_hash(&qm2)]);
        assert_eq!(hash2[..], find(first2, &qm2, payload::HASH));
        assert_eq!(hash2[..], keys_value(golden.keys, "Hash(2)"));
        let hash3 = keys.qm_hash3(mid, &ni, &nr);
        assert_eq!(hash3[..], find(first3, &qm3, payload::HASH));
        assert_eq!(hash3[..], keys_value(golden.keys, "Hash(3)"));

        // KEYMAT per direction uses the receiving end's SPI: I->R the responder's
        // (QM2), R->I the initiator's (QM1).
        let spi_i = qm_spi(first1, &qm1);
        let spi_r = qm_spi(first2, &qm2);
        for (direction, spi, label) in [
            ("I->R", spi_r, "KEYMAT I->R"),
            ("R->I", spi_i, "KEYMAT R->I"),
        ] {
            let (xfrm_spi, xfrm_keys) = xfrm_keymat(golden, direction);
            assert_eq!(spi, xfrm_spi);
            let keymat = keys.keymat(None, protocol::ESP, spi, &ni, &nr, xfrm_keys.len());
            assert_eq!(keymat[..], xfrm_keys[..], "{} {direction}", golden.name);
            assert_eq!(keymat[..], keys_value(golden.keys, label));
        }
    }
}

// Frames 44 and 45: informational exchanges with HASH(1) and a Delete (ESP SA, then
// the ISAKMP SA), each with its own M-ID and IV.
#[test]
fn real_informational_deletes() {
    for golden in &GOLDEN {
        let exchange = phase1(golden);
        let last_mm6 = keys_value(golden.keys, "last MM6 cipher block");
        for number in [44, 45] {
            let mid = Header::parse(ike_message(golden, number))
                .unwrap()
                .message_id;
            let iv = phase2_iv(exchange.hash, exchange.cipher, &last_mm6, mid);
            let (plain, first, _) = decrypt_frame(golden, &exchange, number, &iv);
            let end = chain_len(first, &plain).unwrap();
            let after_hash = &plain[4 + exchange.hash.len()..end];
            let hash = exchange.keys.hash_a(mid, &[after_hash]);
            assert_eq!(hash[..], find(first, &plain, payload::HASH), "{number}");
        }
    }
}

// RFC 3947 §3.2 NAT-D = HASH(CKY-I | CKY-R | IP | Port); in ikev1-natt the second
// NAT-D of each message is random (strongSwan's `encap = yes` fakes a NAT).
#[test]
fn real_nat_d() {
    let initiator = (std::net::Ipv4Addr::new(10, 99, 0, 1), 500);
    let responder = (std::net::Ipv4Addr::new(10, 99, 0, 2), 500);
    for golden in &GOLDEN {
        let exchange = phase1(golden);
        let natd =
            |(addr, port)| natd_hash(exchange.hash, &exchange.cky_i, &exchange.cky_r, addr, port);
        assert_eq!(
            natd(responder),
            keys_value(golden.keys, "NAT-D #1 in MM3"),
            "{}",
            golden.name
        );
        assert_eq!(natd(initiator), keys_value(golden.keys, "NAT-D #1 in MM4"));
        if golden.name == "ikev1-natt" {
            assert_ne!(natd(initiator), keys_value(golden.keys, "NAT-D #2 in MM3"));
        } else {
            assert_eq!(natd(initiator), keys_value(golden.keys, "NAT-D #2 in MM3"));
            assert_eq!(natd(responder), keys_value(golden.keys, "NAT-D #2 in MM4"));
        }
    }
}

// The capture's DH group is what the negotiated transform names.
#[test]
fn real_ke_lengths_match_the_group() {
    for golden in &GOLDEN {
        let exchange = phase1(golden);
        let chosen = SaPayload::parse(&find_clear(ike_message(golden, 2), payload::SA)).unwrap();
        let group_id = chosen.proposals[0].transforms[0]
            .attr_u64(p1attr::GROUP)
            .unwrap();
        let group = DhGroup::from_id(group_id as u16).unwrap();
        assert_eq!(exchange.gxi.len(), group.public_len());
        assert_eq!(exchange.gxr.len(), group.public_len());
    }
}

#[test]
fn message_encryption_round_trip_and_errors() {
    for cipher in [IkeCipher::AesCbc { key_len: 16 }, IkeCipher::TripleDesCbc] {
        let ka = vec![7u8; cipher.key_len()];
        let iv = vec![1u8; cipher.block_len()];
        let header = Header {
            initiator_cookie: [1; 8],
            responder_cookie: [2; 8],
            next_payload: 0,
            version: isakmp::VERSION,
            exchange: isakmp::exchange::QUICK,
            flags: 0,
            message_id: 0x1234_5678,
            length: 0,
        };
        for body_len in [0, 1, 7, 8, 15, 16, 17] {
            let mut chain = ChainBuilder::new();
            chain.push(payload::HASH, &vec![0xab; body_len]);
            let (message, last) = encrypt_message(cipher, &ka, &iv, header, &chain).unwrap();
            let padded = message.len() - HEADER_LEN;
            assert!(
                padded > chain.bytes().len() && padded <= chain.bytes().len() + cipher.block_len()
            );
            assert_eq!(last[..], message[message.len() - cipher.block_len()..]);
            let (parsed, plain, next) = decrypt_message(cipher, &ka, &iv, &message).unwrap();
            assert_eq!(parsed.flags, flags::ENCRYPTION);
            assert_eq!(
                (parsed.next_payload, parsed.length as usize),
                (payload::HASH, message.len())
            );
            assert_eq!(plain[..chain.bytes().len()], chain.bytes()[..]);
            assert!(plain[chain.bytes().len()..].iter().all(|&b| b == 0));
            assert_eq!(next, last);
        }
        // Body not whole blocks, empty, header errors, wrong IV length.
        let mut chain = ChainBuilder::new();
        chain.push(payload::HASH, &[1; 20]);
        let (message, _) = encrypt_message(cipher, &ka, &iv, header, &chain).unwrap();
        let mut short = message[..message.len() - 1].to_vec();
        let short_len = short.len() as u32;
        short[24..28].copy_from_slice(&short_len.to_be_bytes());
        assert!(matches!(
            decrypt_message(cipher, &ka, &iv, &short),
            Err(CryptoError::NotBlockAligned { .. })
        ));
        let mut empty = message[..HEADER_LEN].to_vec();
        empty[24..28].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
        assert!(matches!(
            decrypt_message(cipher, &ka, &iv, &empty),
            Err(CryptoError::NotBlockAligned { len: 0, .. })
        ));
        assert!(matches!(
            decrypt_message(cipher, &ka, &iv, &message[..20]),
            Err(CryptoError::Malformed(_))
        ));
        assert!(decrypt_message(cipher, &ka, &iv[1..], &message).is_err());
        assert!(encrypt_message(cipher, &ka[1..], &iv, header, &chain).is_err());
    }
}

#[test]
fn keymat_expansion_and_pfs() {
    let exchange = phase1(&GOLDEN[0]);
    let keys = &exchange.keys;
    let (ni, nr) = (hex("01"), hex("02"));
    let long = keys.keymat(None, protocol::ESP, 0x1122_3344, &ni, &nr, 100);
    let short = keys.keymat(None, protocol::ESP, 0x1122_3344, &ni, &nr, 20);
    assert_eq!(long[..20], short[..]);
    // K2 = prf(SKEYID_d, K1 | protocol | SPI | Ni_b | Nr_b).
    let seed = hex("031122334401" /* protocol, SPI, Ni */);
    let k1 = keys.prf.prf(&keys.skeyid_d, &[&seed, &nr]);
    let k2 = keys.prf.prf(&keys.skeyid_d, &[&k1, &seed, &nr]);
    assert_eq!(long[..32], k1[..]);
    assert_eq!(long[32..64], k2[..]);
    // With PFS, g(qm)^xy comes first in every block.
    let gxy = [9u8; 32];
    let pfs = keys.keymat(Some(&gxy), protocol::ESP, 0x1122_3344, &ni, &nr, 40);
    let k1 = keys.prf.prf(&keys.skeyid_d, &[&gxy, &seed, &nr]);
    let k2 = keys.prf.prf(&keys.skeyid_d, &[&k1, &gxy, &seed, &nr]);
    assert_eq!(pfs[..32], k1[..]);
    assert_eq!(pfs[32..], k2[..8]);
}
