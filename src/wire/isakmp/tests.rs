//! ISAKMP against the three IKEv1 golden captures (tests/data/ikev1-*): every message
//! header, the cleartext Main Mode payloads, and the decrypted payloads of
//! decrypted.txt; plus malformed-input and random-input checks.

use super::test_util::{GOLDEN, decrypted, ike_frames, ike_message, keys_value};
use super::*;
use crate::wire::test_util::hex;
use proptest::prelude::*;

/// Payload chain of a cleartext message, as (type, body).
fn chain(message: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let (header, body) = parse_message(message).unwrap();
    payloads(header.next_payload, body)
        .map(|item| item.map(|(ty, body)| (ty, body.to_vec())).unwrap())
        .collect()
}

/// A row of a KEYS.md frame map: frame, exchange, MID, flags, ISAKMP length.
type FrameRow = (usize, u8, u32, u8, u32);

// KEYS.md "Frame map (IKE)" of each capture.
#[test]
fn real_headers_of_every_ike_message() {
    let expected: [(&str, [FrameRow; 11]); 3] = [
        (
            "ikev1-psk-transport-gcm",
            [
                (1, 2, 0, 0, 204),
                (2, 2, 0, 0, 160),
                (3, 2, 0, 0, 172),
                (4, 2, 0, 0, 172),
                (5, 2, 0, 1, 108),
                (6, 2, 0, 1, 92),
                (7, 32, 0x24c9_0782, 1, 188),
                (8, 32, 0x24c9_0782, 1, 188),
                (9, 32, 0x24c9_0782, 1, 76),
                (44, 5, 0x5bd8_4e3e, 1, 92),
                (45, 5, 0xc7b5_63e3, 1, 108),
            ],
        ),
        (
            "ikev1-psk-transport-cbc-sha1-modp2048",
            [
                (1, 2, 0, 0, 180),
                (2, 2, 0, 0, 160),
                (3, 2, 0, 0, 372),
                (4, 2, 0, 0, 372),
                (5, 2, 0, 1, 108),
                (6, 2, 0, 1, 76),
                (7, 32, 0x5db8_a546, 1, 172),
                (8, 32, 0x5db8_a546, 1, 172),
                (9, 32, 0x5db8_a546, 1, 60),
                (44, 5, 0xb8de_9642, 1, 76),
                (45, 5, 0x4808_dcaa, 1, 92),
            ],
        ),
        (
            "ikev1-natt",
            [
                (1, 2, 0, 0, 204),
                (2, 2, 0, 0, 160),
                (3, 2, 0, 0, 172),
                (4, 2, 0, 0, 172),
                (5, 2, 0, 1, 108),
                (6, 2, 0, 1, 92),
                (7, 32, 0xd0fa_3b71, 1, 204),
                (8, 32, 0xd0fa_3b71, 1, 204),
                (9, 32, 0xd0fa_3b71, 1, 76),
                (44, 5, 0x5922_fbea, 1, 92),
                (45, 5, 0xb92f_03e6, 1, 108),
            ],
        ),
    ];
    for (name, rows) in expected {
        let golden = GOLDEN.iter().find(|g| g.name == name).unwrap();
        assert_eq!(
            ike_frames(golden),
            rows.iter().map(|row| row.0).collect::<Vec<_>>()
        );
        let cky_i = keys_value(golden.keys, "CKY-I");
        let cky_r = keys_value(golden.keys, "CKY-R");
        for (frame, exchange, message_id, flags, length) in rows {
            let message = ike_message(golden, frame);
            let header = Header::parse(message).unwrap();
            assert_eq!(header.initiator_cookie[..], cky_i[..], "{name} {frame}");
            let expected_r = if frame == 1 {
                vec![0; 8]
            } else {
                cky_r.clone()
            };
            assert_eq!(header.responder_cookie[..], expected_r[..]);
            assert_eq!(header.version, VERSION);
            assert_eq!(
                (header.exchange, header.message_id, header.flags),
                (exchange, message_id, flags)
            );
            assert_eq!(header.length, length);
            assert_eq!(message.len(), length as usize);
            assert_eq!(header.to_bytes()[..], message[..HEADER_LEN]);
            let packet = Packet::new_checked(message).unwrap();
            assert_eq!(packet.body().len(), message.len() - HEADER_LEN);
        }
    }
}

// tshark -O isakmp, frame 1: SA (IKE, 2 transforms in ikev1-psk-transport-gcm and
// ikev1-natt: AES-CBC-128/SHA2-256/group 31/PSK/15840 s, then a transform carrying
// only group 31 — strongSwan's encoding of its second DH group proposal), VIDs XAUTH,
// DPD, FRAGMENTATION (+80000000), RFC 3947, draft-02\n.
#[test]
fn real_mm1_sa_and_vendor_ids() {
    for golden in &GOLDEN {
        let payloads = chain(ike_message(golden, 1));
        let types: Vec<u8> = payloads.iter().map(|(ty, _)| *ty).collect();
        assert_eq!(types, [1, 13, 13, 13, 13, 13], "{}", golden.name);
        let sa_body = &payloads[0].1;
        assert_eq!(sa_body, &keys_value(golden.keys, "SAi_b"));
        let sa = SaPayload::parse(sa_body).unwrap();
        assert_eq!(&sa.emit(), sa_body, "SA round trip");
        assert_eq!((sa.doi, sa.situation), (DOI_IPSEC, SIT_IDENTITY_ONLY));
        assert_eq!(sa.proposals.len(), 1);
        let proposal = &sa.proposals[0];
        assert_eq!((proposal.number, proposal.protocol), (1, protocol::ISAKMP));
        assert!(proposal.spi.is_empty());
        let first = &proposal.transforms[0];
        assert_eq!((first.number, first.id), (1, TRANSFORM_KEY_IKE));
        assert_eq!(first.attr_u64(p1attr::ENCRYPTION), Some(7));
        assert_eq!(first.attr_u64(p1attr::AUTH_METHOD), Some(1));
        assert_eq!(first.attr_u64(p1attr::LIFE_TYPE), Some(1));
        assert_eq!(first.attr_u64(p1attr::LIFE_DURATION), Some(15840));
        if golden.name == "ikev1-psk-transport-cbc-sha1-modp2048" {
            assert_eq!(proposal.transforms.len(), 1);
            assert_eq!(first.attr_u64(p1attr::KEY_LENGTH), Some(256));
            assert_eq!(first.attr_u64(p1attr::HASH), Some(2));
            assert_eq!(first.attr_u64(p1attr::GROUP), Some(14));
        } else {
            assert_eq!(first.attr_u64(p1attr::KEY_LENGTH), Some(128));
            assert_eq!(first.attr_u64(p1attr::HASH), Some(4));
            assert_eq!(first.attr_u64(p1attr::GROUP), Some(31));
            let second = &proposal.transforms[1];
            assert_eq!((second.number, second.id), (2, TRANSFORM_KEY_IKE));
            assert_eq!(second.attr(p1attr::ENCRYPTION), None);
            assert_eq!(second.attr(p1attr::HASH), None);
            assert_eq!(second.attr_u64(p1attr::GROUP), Some(31));
            assert_eq!(second.attributes.len(), 4);
        }
        let vids: Vec<&[u8]> = payloads[1..].iter().map(|(_, b)| &b[..]).collect();
        assert_eq!(vids[0], vendor::XAUTH);
        assert_eq!(vids[1], vendor::DPD);
        assert_eq!(&vids[2][..16], vendor::FRAGMENTATION);
        assert_eq!(vids[3], vendor::NAT_T_RFC3947);
        assert_eq!(vids[4], vendor::NAT_T_DRAFT_02_N);
        let nat_t: Vec<_> = vids.iter().map(|vid| is_nat_t(vid)).collect();
        assert_eq!(
            nat_t,
            [
                None,
                None,
                None,
                Some(NatTVariant::Rfc),
                Some(NatTVariant::Draft)
            ]
        );
    }
}

// Frame 2: the responder's SA with the one chosen transform, VIDs XAUTH, DPD,
// FRAGMENTATION, RFC 3947 (it answers with the best NAT-T variant only).
#[test]
fn real_mm2_chosen_transform() {
    for golden in &GOLDEN {
        let payloads = chain(ike_message(golden, 2));
        let types: Vec<u8> = payloads.iter().map(|(ty, _)| *ty).collect();
        assert_eq!(types, [1, 13, 13, 13, 13]);
        let sa = SaPayload::parse(&payloads[0].1).unwrap();
        assert_eq!(sa.emit(), payloads[0].1);
        assert_eq!(sa.proposals[0].transforms.len(), 1);
        let offered = SaPayload::parse(&keys_value(golden.keys, "SAi_b")).unwrap();
        assert_eq!(
            sa.proposals[0].transforms[0],
            offered.proposals[0].transforms[0]
        );
        assert_eq!(is_nat_t(&payloads[4].1), Some(NatTVariant::Rfc));
    }
}

// Frames 3 and 4: KE, NONCE, NAT-D, NAT-D with the values of KEYS.md; rebuilt with
// ChainBuilder and build_message they give back the captured octets.
#[test]
fn real_mm3_mm4_key_exchange_and_nat_d() {
    for golden in &GOLDEN {
        for (frame, ke, nonce, natd) in
            [(3, "g^xi", "Ni_b", "in MM3"), (4, "g^xr", "Nr_b", "in MM4")]
        {
            let message = ike_message(golden, frame);
            let payloads = chain(message);
            let types: Vec<u8> = payloads.iter().map(|(ty, _)| *ty).collect();
            assert_eq!(
                types,
                [payload::KE, payload::NONCE, payload::NAT_D, payload::NAT_D]
            );
            assert_eq!(payloads[0].1, keys_value(golden.keys, ke));
            assert_eq!(payloads[1].1, keys_value(golden.keys, nonce));
            assert_eq!(
                payloads[2].1,
                keys_value(golden.keys, &format!("NAT-D #1 {natd}"))
            );
            assert_eq!(
                payloads[3].1,
                keys_value(golden.keys, &format!("NAT-D #2 {natd}"))
            );

            let mut builder = ChainBuilder::new();
            for (ty, body) in &payloads {
                builder.push(*ty, body);
            }
            let mut header = Header::parse(message).unwrap();
            header.next_payload = 0;
            header.length = 0;
            assert_eq!(build_message(header, &builder), message);
        }
    }
}

// decrypted.txt: MM5 = ID, HASH, N(INITIAL-CONTACT, SPI = CKY-I | CKY-R); MM6 = ID,
// HASH; QM1/QM2 = HASH, SA (ESP, one transform), NONCE, ID, ID (+ NAT-OA, NAT-OA in
// ikev1-natt); QM3 = HASH; informational = HASH, D.
#[test]
fn real_decrypted_payloads() {
    for golden in &GOLDEN {
        let natt = golden.name == "ikev1-natt";
        let cookies = [
            keys_value(golden.keys, "CKY-I"),
            keys_value(golden.keys, "CKY-R"),
        ]
        .concat();
        for frame in [5, 6, 7, 8, 9, 44, 45] {
            let header = Header::parse(ike_message(golden, frame)).unwrap();
            let (_, plain) = decrypted(golden, frame);
            let items: Vec<(u8, &[u8])> = payloads(header.next_payload, &plain)
                .collect::<Result<_, _>>()
                .unwrap();
            let len = chain_len(header.next_payload, &plain).unwrap();
            assert!(plain[len..].iter().all(|&b| b == 0), "zero padding");
            assert!(plain.len() - len >= 1 && plain.len() - len <= 16);
            let types: Vec<u8> = items.iter().map(|(ty, _)| *ty).collect();
            match frame {
                5 => assert_eq!(types, [payload::ID, payload::HASH, payload::N]),
                6 => assert_eq!(types, [payload::ID, payload::HASH]),
                7 | 8 if natt => assert_eq!(types, [8, 1, 10, 5, 5, 21, 21]),
                7 | 8 => assert_eq!(types, [8, 1, 10, 5, 5]),
                9 => assert_eq!(types, [payload::HASH]),
                _ => assert_eq!(types, [payload::HASH, payload::D]),
            }
            for (ty, body) in items {
                match ty {
                    payload::ID => {
                        let id = Identification::parse(body).unwrap();
                        assert_eq!(id.emit(), body);
                        assert_eq!(id.id_type, id_type::IPV4_ADDR);
                        let host = if frame == 6 { 2 } else { 1 };
                        if frame <= 6 {
                            assert_eq!((id.protocol, id.port), (0, 0));
                            assert_eq!(id.data, [10, 99, 0, host]);
                        } else {
                            assert_eq!((id.protocol, id.port), (17, 1701));
                        }
                    }
                    payload::N => {
                        let n = Notification::parse(body).unwrap();
                        assert_eq!(n.emit(), body);
                        assert_eq!((n.doi, n.protocol), (DOI_IPSEC, protocol::ISAKMP));
                        assert_eq!(n.message_type, notify::INITIAL_CONTACT);
                        assert_eq!(n.spi, cookies);
                        assert!(n.data.is_empty());
                    }
                    payload::SA => {
                        let sa = SaPayload::parse(body).unwrap();
                        assert_eq!(sa.emit(), body);
                        let proposal = &sa.proposals[0];
                        assert_eq!(proposal.protocol, protocol::ESP);
                        let spi = if frame == 7 { "SPI_i" } else { "SPI_r" };
                        assert_eq!(proposal.spi, keys_value(golden.keys, spi));
                        let transform = &proposal.transforms[0];
                        let mode = transform.attr_u64(p2attr::ENCAPSULATION_MODE);
                        if natt {
                            assert_eq!(mode, Some(p2::MODE_UDP_TRANSPORT_RFC.into()));
                        } else {
                            assert_eq!(mode, Some(p2::MODE_TRANSPORT.into()));
                        }
                        assert_eq!(transform.attr_u64(p2attr::LIFE_DURATION), Some(3960));
                        if golden.name.contains("cbc") {
                            assert_eq!(transform.id, p2::ESP_AES_CBC);
                            assert_eq!(transform.attr_u64(p2attr::KEY_LENGTH), Some(256));
                            let auth = transform.attr_u64(p2attr::AUTH_ALGORITHM);
                            assert_eq!(auth, Some(p2::AUTH_HMAC_SHA1.into()));
                        } else {
                            assert_eq!(transform.id, p2::ESP_AES_GCM_16);
                            assert_eq!(transform.attr_u64(p2attr::KEY_LENGTH), Some(128));
                        }
                    }
                    payload::NONCE => {
                        let nonce = if frame == 7 { "Ni2_b" } else { "Nr2_b" };
                        assert_eq!(body, keys_value(golden.keys, nonce));
                    }
                    payload::D => {
                        let delete = Delete::parse(body).unwrap();
                        assert_eq!(delete.emit(), body);
                        if frame == 44 {
                            assert_eq!((delete.protocol, delete.spi_size), (protocol::ESP, 4));
                            assert_eq!(delete.spis, [keys_value(golden.keys, "SPI_i")]);
                        } else {
                            assert_eq!((delete.protocol, delete.spi_size), (protocol::ISAKMP, 16));
                            assert_eq!(delete.spis, std::slice::from_ref(&cookies));
                        }
                    }
                    payload::NAT_OA => assert_eq!(body.len(), 8),
                    payload::HASH => {}
                    other => panic!("unexpected payload {other}"),
                }
            }
        }
    }
}

#[test]
fn chain_errors_and_padding() {
    // One payload of 4 + 2 octets, then padding.
    let chain = hex("000000060102000000");
    let items: Vec<_> = payloads(payload::VID, &chain).collect();
    assert_eq!(items, [Ok((payload::VID, &[1u8, 2][..]))]);
    assert_eq!(chain_len(payload::VID, &chain), Ok(6));
    // Length below the generic header.
    let bad = hex("0d000003");
    let items: Vec<_> = payloads(payload::VID, &bad).collect();
    assert_eq!(
        items,
        [Err(Malformed::new("payload chain", Error::BadLength))]
    );
    // Length past the end, and a Next Payload that points past the end.
    let past_end = hex("00000009");
    let items: Vec<_> = payloads(payload::VID, &past_end).collect();
    assert_eq!(
        items,
        [Err(Malformed::new("payload chain", Error::Truncated))]
    );
    let dangling = hex("0d000004");
    let items: Vec<_> = payloads(payload::VID, &dangling).collect();
    assert_eq!(items.len(), 2);
    assert!(items[1].is_err());
    // Empty chain with NONE first.
    assert_eq!(payloads(payload::NONE, &[]).count(), 0);
    let builder = ChainBuilder::new();
    assert_eq!((builder.first(), builder.bytes()), (payload::NONE, &[][..]));
    assert!(ChainBuilder::new().try_push(1, &vec![0; 70_000]).is_err());
}

#[test]
fn header_errors() {
    let mut message = ike_message(&GOLDEN[0], 1).to_vec();
    assert_eq!(
        Header::parse(&message[..27]).unwrap_err().why,
        Error::Truncated
    );
    assert_eq!(
        Header::parse(&message[..100]).unwrap_err().why,
        Error::Truncated
    );
    message[17] = 0x20;
    assert_eq!(Header::parse(&message).unwrap_err().why, Error::BadVersion);
    message[17] = 0x10;
    message[24..28].copy_from_slice(&27u32.to_be_bytes());
    assert_eq!(Header::parse(&message).unwrap_err().why, Error::BadLength);
    // Length shorter than the datagram: the body stops at Length.
    message[24..28].copy_from_slice(&40u32.to_be_bytes());
    assert_eq!(parse_message(&message).unwrap().1.len(), 12);
}

#[test]
fn payload_errors() {
    let sa = keys_value(GOLDEN[0].keys, "SAi_b");
    for cut in 0..sa.len() {
        assert!(SaPayload::parse(&sa[..cut]).is_err(), "cut at {cut}");
    }
    let mut other_doi = sa.clone();
    other_doi[3] = 2;
    assert_eq!(
        SaPayload::parse(&other_doi).unwrap_err().why,
        Error::Unsupported
    );
    // A proposal chain whose Next Payload says TRANSFORM.
    let mut wrong = sa.clone();
    wrong[8] = payload::TRANSFORM;
    wrong.extend_from_slice(&hex("00000004"));
    assert!(SaPayload::parse(&wrong).is_err());
    assert!(Identification::parse(&[1, 0, 0]).is_err());
    assert!(Notification::parse(&hex("00000001011000")).is_err());
    assert!(
        Notification::parse(&hex("000000010104600200")).is_err(),
        "SPI past end"
    );
    assert!(
        Delete::parse(&hex("000000010304000200000001")).is_err(),
        "2 SPIs, 1 given"
    );
    let delete = Delete::parse(&hex("00000001030000020000")).unwrap_err();
    assert_eq!(delete.why, Error::BadLength);
    let empty_spis = Delete::parse(&hex("0000000101000002")).unwrap();
    assert_eq!(empty_spis.spis, [Vec::<u8>::new(), Vec::new()]);
}

#[test]
fn attribute_values() {
    let variable = |bytes: &[u8]| Attribute {
        kind: p1attr::LIFE_DURATION,
        value: AttrValue::Variable(bytes.to_vec()),
    };
    assert_eq!(variable(&[0, 1, 0x51, 0x80]).as_u64(), Some(86400));
    assert_eq!(variable(&[1; 8]).as_u64(), Some(0x0101_0101_0101_0101));
    assert_eq!(variable(&[1; 9]).as_u64(), None);
    assert_eq!(Attribute::basic(1, 7).as_u64(), Some(7));
    // A variable attribute round-trips through a transform.
    let transform = Transform {
        number: 1,
        id: TRANSFORM_KEY_IKE,
        attributes: vec![Attribute::basic(1, 7), variable(&[0, 1, 0x51, 0x80])],
    };
    let body = transform.emit();
    assert_eq!(
        body,
        hex("010100008001000700 0c00040001 5180"
            .replace(' ', "")
            .as_str())
    );
    assert_eq!(Transform::parse(&body), Ok(transform));
}

#[test]
fn vendor_ids_are_md5_of_their_names() {
    // python3 -c 'import hashlib; print(hashlib.md5(b"…").hexdigest())'
    assert_eq!(
        vendor::NAT_T_RFC3947[..],
        hex("4a131c81070358455c5728f20e95452f")
    );
    assert_eq!(
        vendor::NAT_T_DRAFT_02[..],
        hex("cd60464335df21f87cfdb2fc68b6a448")
    );
    assert_eq!(
        vendor::NAT_T_DRAFT_02_N[..],
        hex("90cb80913ebb696e086381b5ec427b1f")
    );
    assert_eq!(
        vendor::NAT_T_DRAFT_03[..],
        hex("7d9419a65310ca6f2c179d9215529d56")
    );
    assert_eq!(
        vendor::NAT_T_DRAFT_08[..],
        hex("8f8d83826d246b6fc7a8a6a428c11de8")
    );
    assert_eq!(
        vendor::MS_NT5_ISAKMPOAKLEY[..],
        hex("1e2b516905991c7d7c96fcbfb587e461")
    );
    assert_eq!(
        vendor::XAUTH[..],
        hex("09002689dfd6b71280a224dec33b81e5")[..8]
    );
    for vid in [
        vendor::NAT_T_DRAFT_02,
        vendor::NAT_T_DRAFT_02_N,
        vendor::NAT_T_DRAFT_03,
    ] {
        assert_eq!(is_nat_t(&vid), Some(NatTVariant::Draft));
    }
    assert_eq!(is_nat_t(&vendor::NAT_T_DRAFT_08), None);
    assert_eq!(is_nat_t(&vendor::NAT_T_RFC3947[..15]), None);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..160)) {
        let _ = Header::parse(&data);
        let _ = parse_message(&data);
        for first in [payload::SA, payload::NONE, payload::VID] {
            prop_assert!(payloads(first, &data).count() <= data.len() / 4 + 1);
            let _ = chain_len(first, &data);
        }
        if let Ok(sa) = SaPayload::parse(&data) {
            prop_assert_eq!(SaPayload::parse(&sa.emit()), Ok(sa));
        }
        // Reach past the DOI/situation check.
        let mut sa = hex("0000000100000001");
        sa.extend_from_slice(&data);
        if let Ok(parsed) = SaPayload::parse(&sa) {
            prop_assert_eq!(SaPayload::parse(&parsed.emit()), Ok(parsed));
        }
        let _ = Proposal::parse(&data).map(|p| p.emit());
        let _ = Transform::parse(&data).map(|t| t.emit());
        if let Ok(id) = Identification::parse(&data) {
            prop_assert_eq!(id.emit(), data.clone());
        }
        if let Ok(n) = Notification::parse(&data) {
            prop_assert_eq!(n.emit(), data.clone());
        }
        if let Ok(d) = Delete::parse(&data) {
            prop_assert_eq!(d.emit(), data.clone());
        }
        let _ = is_nat_t(&data);
    }

    #[test]
    fn builder_output_parses_back(bodies in proptest::collection::vec(
        (1u8..=255, proptest::collection::vec(any::<u8>(), 0..40)), 0..6)) {
        let mut builder = ChainBuilder::new();
        for (ty, body) in &bodies {
            builder.push(*ty, body);
        }
        let parsed: Vec<(u8, Vec<u8>)> = payloads(builder.first(), builder.bytes())
            .map(|item| item.map(|(ty, body)| (ty, body.to_vec())).unwrap())
            .collect();
        prop_assert_eq!(&parsed, &bodies);
        prop_assert_eq!(chain_len(builder.first(), builder.bytes()), Ok(builder.bytes().len()));
    }
}
