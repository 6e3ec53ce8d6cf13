//! Known-answer tests: published vectors (GCM spec, RFC 3602, RFC 2202/2404,
//! RFC 4231/4868) and every ESP packet of the golden captures, which real strongSwan
//! peers (Linux XFRM) produced and tshark and Python decrypted independently.
//!
//! The captures' independent decode, for reference:
//! `tshark -r tests/data/ikev1-natt.pcap -o esp.enable_encryption_decode:TRUE
//!  -o esp.enable_authentication_check:TRUE -o 'uat:esp_sa:"IPv4","10.99.0.1","10.99.0.2",
//!  "0xcda2a172","AES-GCM with 16 octet ICV [RFC4106]","0xa4de7bf6303447b84a62f6b7c1f6121423740646","NULL",""'
//!  -o 'uat:esp_sa:"IPv4","10.99.0.2","10.99.0.1","0xc61a28e0","AES-GCM with 16 octet ICV [RFC4106]",
//!  "0x3303733dbb3edc72a9c8d5f7246d205b7f98f1fa","NULL",""'` (see tests/data/*.KEYS.md for
//! the other sets); `tests/data/*.decrypted.txt` holds the plaintexts we compare with.

use super::cbc::CbcHmac;
use super::gcm::Gcm;
use super::*;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Records of a classic little-endian pcap file.
fn pcap_frames(b: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    let mut off = 24;
    while off + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        out.push(&b[off + 16..off + 16 + caplen]);
        off += 16 + caplen;
    }
    out
}

/// The ESP region of an Ethernet/IPv4 frame: raw ESP or ESP-in-UDP/4500.
fn esp_region(frame: &[u8]) -> Option<&[u8]> {
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let ip = &ip[..total];
    match ip[9] {
        50 => Some(&ip[ihl..]),
        17 => {
            let udp = &ip[ihl..];
            let dport = u16::from_be_bytes([udp[2], udp[3]]);
            let payload = &udp[8..];
            (dport == 4500 && payload.len() > 8 && payload[..4] != [0; 4]).then_some(payload)
        }
        _ => None,
    }
}

struct Decrypted {
    frame: usize,
    spi: u32,
    seq: u32,
    iv: Vec<u8>,
    plaintext: Vec<u8>,
}

/// Rows `frame | ESP | SPI x seq n IV x | ICV OK, … | plaintext` of decrypted.txt.
fn decrypted(txt: &str) -> Vec<Decrypted> {
    txt.lines()
        .filter(|l| l.contains("| ESP |"))
        .map(|l| {
            let cols: Vec<&str> = l.split(" | ").collect();
            let ids: Vec<&str> = cols[2].split_whitespace().collect();
            assert!(cols[3].starts_with("ICV OK"), "{l}");
            Decrypted {
                frame: cols[0].trim().parse().unwrap(),
                spi: u32::from_str_radix(ids[1], 16).unwrap(),
                seq: ids[3].parse().unwrap(),
                iv: hex(ids[5]),
                plaintext: hex(cols[4]),
            }
        })
        .collect()
}

struct CaptureSa {
    spi: u32,
    transform: Transform,
    keymat: &'static str,
}

/// Opens every ESP packet of a capture, compares with the independent plaintext,
/// re-seals it with the peer's IV (must give the captured bytes) and checks that a
/// flipped bit fails the ICV.
fn check_capture(pcap: &[u8], txt: &str, sas: &[CaptureSa], backend: Backend) -> usize {
    let frames = pcap_frames(pcap);
    let rows = decrypted(txt);
    let mut checked = 0;
    for row in &rows {
        let sa = sas.iter().find(|s| s.spi == row.spi).expect("SA for SPI");
        let cipher =
            EspCipher::new(sa.transform, &hex(sa.keymat), false, backend, [9; 16]).unwrap();
        let wire = esp_region(frames[row.frame - 1]).expect("ESP frame");
        assert_eq!(u32::from_be_bytes(wire[..4].try_into().unwrap()), row.spi);
        assert_eq!(u32::from_be_bytes(wire[4..8].try_into().unwrap()), row.seq);
        let t = sa.transform;
        let ct = 8 + t.iv_len()..wire.len() - t.icv_len();

        let mut buf = wire.to_vec();
        cipher.open(&mut buf, u64::from(row.seq)).unwrap();
        assert_eq!(&buf[ct.clone()], &row.plaintext[..], "frame {}", row.frame);
        assert_eq!(&buf[8..8 + t.iv_len()], &row.iv[..]);

        // Re-seal with the peer's IV: identical bytes on the wire.
        let seq = u64::from(row.seq);
        let r = match &cipher.imp {
            Imp::Gcm(g) => g.seal_with_iv(
                &mut buf,
                ct.clone(),
                row.iv[..].try_into().unwrap(),
                seq,
                false,
            ),
            Imp::Cbc(c) => c.seal_with_iv(
                &mut buf,
                ct.clone(),
                row.iv[..].try_into().unwrap(),
                seq,
                false,
            ),
        };
        r.unwrap();
        assert_eq!(buf, wire, "frame {} re-sealed", row.frame);

        // Any flipped bit is caught.
        for pos in [0, 5, 8, ct.start + 1, wire.len() - 1] {
            let mut bad = wire.to_vec();
            bad[pos] ^= 0x40;
            assert_eq!(
                cipher.open(&mut bad, seq),
                Err(CryptoError::Icv),
                "pos {pos}"
            );
        }
        // The wrong sequence high bits (ESN) are caught too.
        let esn = EspCipher::new(sa.transform, &hex(sa.keymat), true, backend, [9; 16]).unwrap();
        let mut bad = wire.to_vec();
        assert_eq!(esn.open(&mut bad, seq | 1 << 32), Err(CryptoError::Icv));
        checked += 1;
    }
    checked
}

#[test]
fn capture_ikev1_natt_aes128_gcm() {
    let sas = [
        CaptureSa {
            spi: 0xcda2a172,
            transform: Transform::Aes128Gcm,
            keymat: "a4de7bf6303447b84a62f6b7c1f6121423740646",
        },
        CaptureSa {
            spi: 0xc61a28e0,
            transform: Transform::Aes128Gcm,
            keymat: "3303733dbb3edc72a9c8d5f7246d205b7f98f1fa",
        },
    ];
    for &b in Backend::all() {
        let n = check_capture(
            include_bytes!("../../tests/data/ikev1-natt.pcap"),
            include_str!("../../tests/data/ikev1-natt.decrypted.txt"),
            &sas,
            b,
        );
        assert_eq!(n, 34, "KEYS.md: 16 + 18 ESP frames");
    }
}

#[test]
fn capture_ikev1_transport_aes128_gcm() {
    let sas = [
        CaptureSa {
            spi: 0xc241bd35,
            transform: Transform::Aes128Gcm,
            keymat: "90de426bd96768f3d987c90d88fe2241cea5c9ff",
        },
        CaptureSa {
            spi: 0xcb66227a,
            transform: Transform::Aes128Gcm,
            keymat: "bb94a4b7a4f5189079c18ddccbd2c027282323ba",
        },
    ];
    for &b in Backend::all() {
        let n = check_capture(
            include_bytes!("../../tests/data/ikev1-psk-transport-gcm.pcap"),
            include_str!("../../tests/data/ikev1-psk-transport-gcm.decrypted.txt"),
            &sas,
            b,
        );
        assert_eq!(n, 34);
    }
}

#[test]
fn capture_ikev1_transport_aes256_cbc_sha1() {
    let sas = [
        CaptureSa {
            spi: 0xcd666de9,
            transform: Transform::Aes256CbcSha1,
            keymat: "55b91cbe30932a7046bcd1ed2da1f7356638d095cbeb308fc3d03e9be5f347a4\
                     9d589c39f0da8155f2660e5a8872838becd3915c",
        },
        CaptureSa {
            spi: 0xc43a180b,
            transform: Transform::Aes256CbcSha1,
            keymat: "89748f5bcde3f79eaf2fa0f578838e71ec0186e39b47630b12e76e10de2a316f\
                     96708f0f57c2e17cf3e5fcefcc3e2d3723e630d8",
        },
    ];
    for &b in Backend::all() {
        let n = check_capture(
            include_bytes!("../../tests/data/ikev1-psk-transport-cbc-sha1-modp2048.pcap"),
            include_str!("../../tests/data/ikev1-psk-transport-cbc-sha1-modp2048.decrypted.txt"),
            &sas,
            b,
        );
        assert_eq!(n, 34);
    }
}

#[test]
fn capture_ikev2_tunnel_aes256_gcm() {
    let sas = [
        CaptureSa {
            spi: 0xc825860f,
            transform: Transform::Aes256Gcm,
            keymat: "81899610db5a57e44843a4b86ff6bb8e3872c2980b8be48afa0ded3b9dca1a9db93609e0",
        },
        CaptureSa {
            spi: 0xce4618cf,
            transform: Transform::Aes256Gcm,
            keymat: "a60d2500dc79285bffdb3bc0f6884c6016d656b8fc9f56979cedec43bbfa21befcd83f3c",
        },
    ];
    for &b in Backend::all() {
        let n = check_capture(
            include_bytes!("../../tests/data/ikev2-psk-tunnel-gcm.pcap"),
            include_str!("../../tests/data/ikev2-psk-tunnel-gcm.decrypted.txt"),
            &sas,
            b,
        );
        assert_eq!(n, 40, "KEYS.md: 19 + 21 ESP frames");
    }
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 4 (AES-128)
/// and 16 (AES-256): 60-octet plaintext, 20-octet AAD, 96-bit IV.
#[test]
fn gcm_spec_test_cases_4_and_16() {
    let iv = hex("cafebabefacedbaddecaf888");
    let p = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let cases = [
        (
            "feffe9928665731c6d6a8f9467308308",
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
             21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            "5bc94fbc3221a5db94fae95ae7121a47",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for &b in Backend::all() {
        for (key, c, tag) in cases {
            let g = Gcm::new(&hex(key), &iv[..4], b).unwrap();
            let nonce: [u8; 12] = iv[..].try_into().unwrap();
            let mut body = p.clone();
            let mut icv = [0u8; 16];
            g.seal_raw(&nonce, &aad, &mut body, &mut icv).unwrap();
            assert_eq!(body, hex(c), "{b:?}");
            assert_eq!(icv.to_vec(), hex(tag));
            body.extend_from_slice(&icv);
            g.open_raw(&nonce, &aad, &mut body).unwrap();
            assert_eq!(&body[..p.len()], &p[..]);
        }
    }
}

/// RFC 3602 §4 cases 1–4 through the backends' serial CBC and the multi-buffer path.
#[test]
fn rfc3602_cbc_cases() {
    let cases = [
        (
            "06a9214036b8a15b512e03d534120006",
            "3dafba429d9eb430b422da802c9fac41",
            "53696e676c6520626c6f636b206d7367",
            "e353779c1079aeb82708942dbe77181a",
        ),
        (
            "c286696d887c9aa0611bbb3e2025a45a",
            "562e17996d093d28ddb3ba695a2e6f58",
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
        ),
        (
            "6c3ea0477630ce21a2ce334aa746c2cd",
            "c782dc4c098c66cbd9cd27d825682c81",
            "5468697320697320612034382d62797465206d657373616765202865786163746c7920332041455320626c6f636b7329",
            "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5021c19216bad525c8579695d83ba2684",
        ),
        (
            "56e47a38c5598974bc46903dba290349",
            "8ce82eefbea0da3c44699ed7db51b7d9",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\
             c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
            "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e\
             35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55",
        ),
    ];
    for &b in Backend::all() {
        for (key, iv, p, c) in cases {
            let iv: [u8; 16] = hex(iv).try_into().unwrap();
            let cbc =
                CbcHmac::new(Transform::Aes128CbcSha1, &hex(key), &[0; 20], b, [0; 16]).unwrap();
            let mut buf = hex(p);
            cbc.encrypt_serial(&mut buf, iv).unwrap();
            assert_eq!(buf, hex(c), "{b:?} serial");
            cbc.decrypt(&mut buf, iv).unwrap();
            assert_eq!(buf, hex(p));
        }
    }
    for (key, iv, p, c) in cases {
        let bc = multibuf::BlockCipher::new(&hex(key)).unwrap();
        let mut buf = hex(p);
        multibuf::cbc_encrypt_one(&bc, &mut buf, hex(iv).try_into().unwrap());
        assert_eq!(buf, hex(c), "multi-buffer");
    }
}

/// RFC 2202 (HMAC-SHA1, truncated to 96 bits per RFC 2404) and RFC 4231 (HMAC-SHA-256,
/// truncated to 128 bits per RFC 4868) test cases 1 and 2.
#[test]
fn hmac_truncated_cases() {
    let cases = [
        (
            Transform::Aes128CbcSha1,
            "0b".repeat(20),
            b"Hi There".to_vec(),
            "b617318655057264e28bc0b6",
        ),
        (
            Transform::Aes128CbcSha1,
            hex_str("Jefe"),
            b"what do ya want for nothing?".to_vec(),
            "effcdf6ae5eb2fa2d27416d5",
        ),
        (
            Transform::Aes128CbcSha256,
            "0b".repeat(20),
            b"Hi There".to_vec(),
            "b0344c61d8db38535ca8afceaf0bf12b",
        ),
        (
            Transform::Aes128CbcSha256,
            hex_str("Jefe"),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c7",
        ),
    ];
    for &b in Backend::all() {
        for (t, key, data, want) in &cases {
            let cbc = CbcHmac::new(*t, &[0; 16], &hex(key), b, [0; 16]).unwrap();
            let mut out = [0u8; 32];
            cbc.mac(data, 0, false, &mut out);
            assert_eq!(out[..t.icv_len()].to_vec(), hex(want), "{b:?} {t}");
        }
    }
}

fn hex_str(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn shape_errors() {
    for t in Transform::ALL {
        let c =
            EspCipher::new(t, &vec![1; t.keymat_len()], false, Backend::AwsLc, [0; 16]).unwrap();
        // Too short for header + IV + one block + ICV.
        let mut short = vec![0u8; t.overhead()];
        assert_eq!(c.seal(&mut short, 1), Err(CryptoError::Length));
        assert_eq!(c.open(&mut short, 1), Err(CryptoError::Length));
        let mut tiny = vec![0u8; 3];
        assert_eq!(c.open(&mut tiny, 1), Err(CryptoError::Length));
        // Not block aligned.
        let mut odd = vec![0u8; t.overhead() + t.block_len() + 1];
        assert_eq!(c.seal(&mut odd, 1), Err(CryptoError::Length));
        assert!(matches!(
            EspCipher::new(t, &[0; 3], false, Backend::AwsLc, [0; 16]),
            Err(CryptoError::KeyLength { .. })
        ));
    }
}
