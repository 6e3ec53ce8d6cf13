use super::*;
use crate::wire::test_util::hex;
use std::time::Instant;

// RFC 4231 §4.3 (test case 2) and FIPS 180-2 "abc".
#[test]
fn hash_and_prf_known_answers() {
    assert_eq!(
        HashAlg::Sha1.hash(&[b"a", b"bc"]),
        hex("a9993e364706816aba3e25717850c26c9cd0d89d")
    );
    assert_eq!(
        HashAlg::Sha256.prf(b"Jefe", &[b"what do ya want ", b"for nothing?"])[..],
        hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    assert_eq!(
        HashAlg::Sha384.prf(b"Jefe", &[b"what do ya want for nothing?"])[..],
        hex(concat!(
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e",
            "8e2240ca5e69e2c78b3239ecfab21649"
        ))
    );
    assert_eq!(
        HashAlg::Sha512.prf(b"Jefe", &[b"what do ya want for nothing?"])[..],
        hex(concat!(
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554",
            "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        ))
    );
    for alg in [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ] {
        assert_eq!(alg.hash(&[]).len(), alg.len());
        assert_eq!(alg.prf(b"k", &[]).len(), alg.len());
        assert_eq!(HashAlg::from_p1(alg.p1_id()), Some(alg));
    }
    assert_eq!(HashAlg::from_p1(1), None, "MD5 is not offered");
}

#[test]
fn cipher_attributes() {
    assert_eq!(
        IkeCipher::from_p1(7, Some(128)),
        Some(IkeCipher::AesCbc { key_len: 16 })
    );
    assert_eq!(
        IkeCipher::from_p1(7, None),
        Some(IkeCipher::AesCbc { key_len: 16 })
    );
    assert_eq!(
        IkeCipher::from_p1(7, Some(192)),
        Some(IkeCipher::AesCbc { key_len: 24 })
    );
    assert_eq!(
        IkeCipher::from_p1(7, Some(256)),
        Some(IkeCipher::AesCbc { key_len: 32 })
    );
    assert_eq!(IkeCipher::from_p1(7, Some(64)), None);
    assert_eq!(IkeCipher::from_p1(5, None), Some(IkeCipher::TripleDesCbc));
    assert_eq!(IkeCipher::from_p1(5, Some(128)), None);
    assert_eq!(IkeCipher::from_p1(1, None), None, "DES is not offered");
    let aes = IkeCipher::AesCbc { key_len: 32 };
    assert_eq!(
        (aes.p1_id(), aes.key_bits(), aes.key_len(), aes.block_len()),
        (7, Some(256), 32, 16)
    );
    assert_eq!(aes.name(), "AES_CBC_256");
    let tdes = IkeCipher::TripleDesCbc;
    assert_eq!(
        (
            tdes.p1_id(),
            tdes.key_bits(),
            tdes.key_len(),
            tdes.block_len()
        ),
        (5, None, 24, 8)
    );
    assert_eq!(tdes.name(), "3DES_CBC");
}

/// Encrypts `plain` and checks the ciphertext, then decrypts it back.
fn cbc_known_answer(cipher: IkeCipher, key: &str, iv: &str, plain: &[u8], cipher_hex: &str) {
    let mut buf = plain.to_vec();
    cipher.encrypt(&hex(key), &hex(iv), &mut buf).unwrap();
    assert_eq!(buf, hex(cipher_hex), "{}", cipher.name());
    cipher.decrypt(&hex(key), &hex(iv), &mut buf).unwrap();
    assert_eq!(buf, plain);
}

// AES: NIST SP 800-38A F.2.1 and F.2.5 (first two blocks). AES-192 and 3DES: Python
// `cryptography` 48 at development time (see each comment).
#[test]
fn cbc_known_answers() {
    let nist_plain = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
    cbc_known_answer(
        IkeCipher::AesCbc { key_len: 16 },
        "2b7e151628aed2a6abf7158809cf4f3c",
        "000102030405060708090a0b0c0d0e0f",
        &nist_plain,
        "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2",
    );
    cbc_known_answer(
        IkeCipher::AesCbc { key_len: 32 },
        "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        "000102030405060708090a0b0c0d0e0f",
        &nist_plain,
        "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d",
    );
    // Cipher(algorithms.AES(bytes(range(24))), modes.CBC(bytes(range(16))))
    cbc_known_answer(
        IkeCipher::AesCbc { key_len: 24 },
        "000102030405060708090a0b0c0d0e0f1011121314151617",
        "000102030405060708090a0b0c0d0e0f",
        b"AES-192-CBC known answer test..!",
        "48a8d234a30ced5fa51597a93d5b73763e9cf2ea077c1508b3e327677ed769e7",
    );
    // Cipher(TripleDES(bytes(range(1, 25))), modes.CBC(bytes.fromhex("0011223344556677")))
    cbc_known_answer(
        IkeCipher::TripleDesCbc,
        "0102030405060708090a0b0c0d0e0f101112131415161718",
        "0011223344556677",
        b"IKEv1 3DES-CBC known answer test",
        "433bf8c50c0cca8b5973b48d521b1a6c6d5da45c7ed4e44723a4c2df8ffff3cf",
    );
}

#[test]
fn cbc_rejects_bad_lengths() {
    let aes = IkeCipher::AesCbc { key_len: 16 };
    let (key, iv) = ([0u8; 16], [0u8; 16]);
    let mut buf = [0u8; 17];
    assert!(matches!(
        aes.encrypt(&key, &iv, &mut buf),
        Err(CryptoError::NotBlockAligned {
            len: 17,
            block_len: 16
        })
    ));
    assert!(matches!(
        aes.decrypt(&key, &iv, &mut buf[..15]),
        Err(CryptoError::NotBlockAligned { .. })
    ));
    assert!(matches!(
        aes.decrypt(&key[..15], &iv, &mut buf[..16]),
        Err(CryptoError::BadKeyLength { .. })
    ));
    assert!(matches!(
        aes.decrypt(&key, &iv[..8], &mut buf[..16]),
        Err(CryptoError::BadIvLength { .. })
    ));
    assert!(aes.encrypt(&key, &iv, &mut []).is_ok(), "zero blocks");
    let tdes = IkeCipher::TripleDesCbc;
    assert!(matches!(
        tdes.encrypt(&[0; 24], &[0; 16], &mut buf[..8]),
        Err(CryptoError::BadIvLength { .. })
    ));
}

#[test]
fn dh_groups() {
    for id in [2, 14, 19, 20, 31] {
        let group = DhGroup::from_id(id).unwrap();
        assert_eq!(group.id(), id);
    }
    assert_eq!(DhGroup::from_id(1), None);
    assert_eq!(DhGroup::from_id(5), None);
    assert_eq!(DhGroup::Curve25519.name(), "CURVE_25519");
}

const ALL_GROUPS: [DhGroup; 5] = [
    DhGroup::Modp1024,
    DhGroup::Modp2048,
    DhGroup::Ecp256,
    DhGroup::Ecp384,
    DhGroup::Curve25519,
];

#[test]
fn dh_self_agreement() {
    for group in ALL_GROUPS {
        let a = group.generate().unwrap();
        let b = group.generate().unwrap();
        assert_eq!(a.group(), group);
        assert_eq!(a.public().len(), group.public_len(), "{}", group.name());
        assert_ne!(a.public(), b.public());
        let (a_public, b_public) = (a.public().to_vec(), b.public().to_vec());
        let ab = a.agree(&b_public).unwrap();
        let ba = b.agree(&a_public).unwrap();
        assert_eq!(ab, ba, "{}", group.name());
        let shared_len = match group {
            DhGroup::Ecp256 => 32,
            DhGroup::Ecp384 => 48,
            other => other.public_len(),
        };
        assert_eq!(ab.len(), shared_len);
    }
}

#[test]
fn dh_secret_debug_shows_no_secret() {
    let secret = DhGroup::Modp1024.generate().unwrap();
    assert_eq!(format!("{secret:?}"), "DhSecret { group: Modp1024, .. }");
}

/// A MODP secret with a fixed exponent.
fn modp_secret(group: DhGroup, x: &str) -> DhSecret {
    let x = U256::from_be_hex(x);
    DhSecret {
        group,
        public: modp_public_for_test(group, &x),
        private: Private::Modp(Zeroizing::new(x)),
    }
}

const X: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

// python3: pow(2, x, p) and pow(g^xr, x, p), with p computed from RFC 3526's formula
// 2^2048 - 2^1984 - 1 + 2^64 * ([2^1918 pi] + 124476) (pi by Machin's formula) and
// g^xr the responder's KE of ikev1-psk-transport-cbc-sha1-modp2048 (frame 4).
#[test]
fn modp2048_known_answer() {
    let secret = modp_secret(DhGroup::Modp2048, X);
    assert_eq!(
        secret.public(),
        hex(concat!(
            "9aa2ccc78ebf1d4f5ed49a6ce1ae1c3eaa887748a91feb60f3e3e30d110822b2",
            "eb42992a61ee6badc53bca99d24d9382b3028512be33923d3cf5b7b8ba2c923d",
            "cef12b0ab1c2f0fd0d98dc18f7d0f2afc89ee1c9c211c1cd026cf5bd5ef40321",
            "7e77b0aca662afcc271bb0106c2522414cd52cd578cb6e1f27b9c8cdf9b682c2",
            "1e4759ab4973655595f4fb8653b664af0be3fd2d6e9cee42ba2d920a6c49d922",
            "68813eb37b6f12a6a1b12144da4c185e4009989027add1381d23ebbde27a34e0",
            "6cda11954da0c28e261785d9b39ef8d1f25ad2a672b3ee5c300fd2778f5ae1f8",
            "8f348f937cc9159adf19f4eb7a79eedc62b5965ed1c68dfb716c447a152b1d7a",
        ))
    );
    let gxr = crate::wire::isakmp::test_util::keys_value(
        crate::wire::isakmp::test_util::GOLDEN[1].keys,
        "g^xr",
    );
    assert_eq!(
        secret.agree(&gxr).unwrap()[..],
        hex(concat!(
            "5fac0d8167fe8d182e187f031e1a4f8db43ee0c7b9dffb4034cb8e380674a810",
            "e7ecfafd0f98a839fac5f8c0aad512555b2cfdde9f1a2f5e53cf1bdc001a0ae9",
            "bbce21acaa7a2ad8efab7d74faa5eded8af4c839e44184f80eaf92ecb39bf6d7",
            "3f48a23c0cd372fb046252d5d63c6f11031344a8e996d5c7660799d76878e132",
            "d1a02e0da714cc29e40606000420a271f78d370d4ff4636c2430c360e230f89f",
            "93ef971caa5b57f0e501d91755010d48993cb029ada4d6df3c5cfd3e1fd98ea7",
            "c98b90ef5e182b0662a4349bb12044fcc675875f5787aa88b93da5553bc0af36",
            "6c6a2d8eb5fe6636c3b8e85bfbf6d35c1cb88b6657070d5b5dd0cf2ad6d51940",
        ))
    );
}

// python3: pow(2, x, p1024) for an x chosen so the result has a leading zero octet
// (RFC 2409 §6.2 prime from its formula with [2^894 pi] + 129093).
#[test]
fn modp1024_known_answer_left_padded() {
    let secret = modp_secret(
        DhGroup::Modp1024,
        "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0fff439",
    );
    assert_eq!(
        secret.public(),
        hex(concat!(
            "006a96b52935ed6585b0e19bb39ef48a77bfff2925b9835a8fde21f3446c125d",
            "c20c7c92c9faa208bfb2db3488cb85076b79abb6fe40b5b40207e03b8d275fba",
            "50ba5a29c0474e062fdad770be68a3f1300d532a796123615afb3e06bce126c6",
            "b2bf100d1ff91076673a006799ffe7cff4377fc4e34024fb5f702f36539e6627",
        ))
    );
    // Agreeing with the peer value 2 gives 2^x again (the public value above).
    let mut two = [0u8; 128];
    two[127] = 2;
    let again = modp_secret(
        DhGroup::Modp1024,
        "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0fff439",
    );
    let public = again.public().to_vec();
    assert_eq!(again.agree(&two).unwrap()[..], public[..]);
}

#[test]
fn modp_rejects_out_of_range_peers() {
    let p = MODP2048_P.as_ref().to_be_bytes();
    let p_minus_1 = MODP2048_P.as_ref().wrapping_sub(&U2048::ONE).to_be_bytes();
    let mut one = [0u8; 256];
    one[255] = 1;
    for bad in [
        &[0u8; 256][..],
        &one,
        &p_minus_1,
        &p,
        &[0xff; 256],
        &[2u8; 255],
        &[2u8; 257],
    ] {
        let secret = DhGroup::Modp2048.generate().unwrap();
        assert!(matches!(
            secret.agree(bad),
            Err(CryptoError::InvalidPublicValue { .. })
        ));
    }
    let p1024 = MODP1024_P.as_ref().to_be_bytes();
    let secret = DhGroup::Modp1024.generate().unwrap();
    assert!(secret.agree(&p1024).is_err());
}

#[test]
fn ecdh_rejects_invalid_peers() {
    // (0, 0) and (1, 1) are not on either curve; wrong lengths are refused first.
    for group in [DhGroup::Ecp256, DhGroup::Ecp384] {
        let len = group.public_len();
        let mut one_one = vec![0u8; len];
        one_one[len / 2 - 1] = 1;
        one_one[len - 1] = 1;
        for bad in [
            vec![0u8; len],
            one_one,
            vec![4u8; len - 1],
            vec![4u8; len + 1],
        ] {
            let secret = group.generate().unwrap();
            let result = secret.agree(&bad);
            assert!(
                matches!(result, Err(CryptoError::InvalidPublicValue { .. })),
                "{}",
                group.name()
            );
        }
    }
    // X25519: u = 0 and u = 1 are of small order (the shared secret would be zero).
    for u in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        let secret = DhGroup::Curve25519.generate().unwrap();
        assert!(matches!(
            secret.agree(&u),
            Err(CryptoError::InvalidPublicValue { .. })
        ));
    }
    let secret = DhGroup::Curve25519.generate().unwrap();
    assert!(secret.agree(&[9; 31]).is_err());
}

/// One generate plus one agree per iteration, as a responder does per Main Mode.
fn time_group(group: DhGroup, iterations: u32) -> f64 {
    let peer = group.generate().unwrap().public().to_vec();
    let start = Instant::now();
    for _ in 0..iterations {
        let secret = group.generate().unwrap();
        std::hint::black_box(secret.agree(&peer).unwrap());
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

// cargo test --release --lib dh_timing -- --ignored --nocapture
#[test]
#[ignore = "timing; run in release"]
fn dh_timing() {
    for (group, iterations) in [
        (DhGroup::Modp1024, 200),
        (DhGroup::Modp2048, 100),
        (DhGroup::Ecp256, 1000),
        (DhGroup::Ecp384, 500),
        (DhGroup::Curve25519, 1000),
    ] {
        let micros = time_group(group, iterations);
        println!("{:<12} generate+agree {micros:>9.1} µs", group.name());
    }
}
