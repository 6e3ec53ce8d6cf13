//! ESP encap/decap tests: round trips over every transform, mode and encapsulation,
//! and the real ESP packets of the golden captures taken apart to the PPP frame.

use std::net::Ipv4Addr;
use std::time::Instant;

use super::decap::{self, Classified, DecapError};
use super::encap::{self, EncapError, OuterParams};
use super::sa::{Direction, Encap, Lifetime, Mode, Sa, SaConfig};
use crate::crypto::{Backend, EspCipher, Transform};
use crate::wire::{l2tp, pcap, ppp};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn sa(t: Transform, encap: Encap, mode: Mode, dir: Direction) -> Sa {
    let cfg = SaConfig {
        spi: 0x0102_0304,
        direction: dir,
        transform: t,
        esn: false,
        mode,
        encap,
        local: Ipv4Addr::new(192, 0, 2, 1),
        remote: Ipv4Addr::new(198, 51, 100, 7),
        replay_window: 64,
        lifetime: Lifetime::default(),
        backend: Backend::AwsLc,
    };
    Sa::new(&cfg, &vec![0x42; t.keymat_len()], [7; 16], Instant::now()).unwrap()
}

#[test]
fn encap_then_decap_round_trips() {
    for t in Transform::ALL {
        for encap_kind in [
            Encap::None,
            Encap::Udp {
                local_port: 31000,
                remote_port: 4500,
            },
        ] {
            for (mode, nh) in [(Mode::Transport, 17u8), (Mode::Tunnel, 4u8)] {
                for len in [1usize, 20, 63, 64, 1400] {
                    let mut out = sa(t, encap_kind, mode, Direction::Outbound);
                    let head = encap::headroom(t, encap_kind);
                    let mut buf = vec![0u8; head + len + encap::tailroom(t)];
                    for (i, b) in buf[head..head + len].iter_mut().enumerate() {
                        *b = i as u8 ^ 0xa5;
                    }
                    let seq = out.take_seq().unwrap();
                    let e = encap::encap(
                        &mut buf,
                        head..head + len,
                        &OuterParams::of(&out),
                        seq,
                        nh,
                        7,
                    )
                    .unwrap();
                    assert_eq!(e.packet.start, 0);
                    assert!(decap::ipv4_header_ok(&buf[..20]));
                    out.cipher().seal(&mut buf[e.esp.clone()], seq).unwrap();

                    let Classified::Esp(o) = decap::classify(&buf, e.packet.clone()).unwrap()
                    else {
                        panic!("not ESP")
                    };
                    assert_eq!(o.spi, 0x0102_0304);
                    assert_eq!(o.seq_lo, 1);
                    assert_eq!(o.src, Ipv4Addr::new(192, 0, 2, 1));
                    match encap_kind {
                        Encap::None => assert_eq!(o.udp, None),
                        Encap::Udp { .. } => assert_eq!(o.udp, Some((31000, 4500))),
                    }
                    let inb = sa(t, encap_kind, mode, Direction::Inbound);
                    let s = inb.check_replay(o.seq_lo).unwrap();
                    inb.cipher().open(&mut buf[o.esp.clone()], s).unwrap();
                    let inner = decap::strip_trailer(&buf, o.esp, t).unwrap();
                    assert_eq!(inner.next_header, nh);
                    assert_eq!(inner.payload, head..head + len, "{t} {encap_kind:?} {len}");
                    assert!(
                        buf[inner.payload]
                            .iter()
                            .enumerate()
                            .all(|(i, &b)| b == i as u8 ^ 0xa5)
                    );
                }
            }
        }
    }
}

#[test]
fn encap_needs_room() {
    let t = Transform::Aes128Gcm;
    let out = sa(t, Encap::None, Mode::Transport, Direction::Outbound);
    let p = OuterParams::of(&out);
    let mut buf = vec![0u8; 100];
    assert_eq!(
        encap::encap(&mut buf, 10..50, &p, 1, 17, 0),
        Err(EncapError::Headroom)
    );
    assert_eq!(
        encap::encap(&mut buf, 60..99, &p, 1, 17, 0),
        Err(EncapError::Tailroom)
    );
}

#[test]
fn bad_padding_and_dummy_are_refused() {
    let t = Transform::Aes128Gcm;
    // Plaintext region: payload "ab", pad 1 2 → change the pad bytes.
    let mut esp = vec![0u8; 8 + 8 + 8 + 16];
    let ct = 16..24;
    esp[ct.start..ct.end].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 2, 17]);
    assert_eq!(
        decap::strip_trailer(&esp, 0..esp.len(), t).unwrap().payload,
        16..20
    );
    esp[20] = 9;
    assert_eq!(
        decap::strip_trailer(&esp, 0..esp.len(), t),
        Err(DecapError::BadPadding)
    );
    esp[20] = 1;
    esp[22] = 200;
    assert_eq!(
        decap::strip_trailer(&esp, 0..esp.len(), t),
        Err(DecapError::BadPadding)
    );
    esp[22] = 2;
    esp[23] = 59;
    assert_eq!(
        decap::strip_trailer(&esp, 0..esp.len(), t),
        Err(DecapError::Dummy)
    );
    assert_eq!(
        decap::strip_trailer(&esp[..10], 0..10, t),
        Err(DecapError::Malformed)
    );
}

#[test]
fn classify_refuses_garbage_without_panicking() {
    let mut rng = 0x1234_5678u32;
    for len in 0..200 {
        let buf: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng as u8
            })
            .collect();
        let _ = decap::classify(&buf, 0..buf.len());
        let _ = decap::classify(&buf, 0..buf.len() + 5);
        let _ = decap::strip_trailer(&buf, 0..buf.len(), Transform::Aes256CbcSha1);
    }
}

/// The golden NAT-T capture taken apart with our own decap path: every ESP frame of
/// the L2TP/PPP session opens, its trailer is valid, the UDP inside goes to 1701 and
/// the L2TP/PPP headers parse. Independent decode for comparison:
/// `tshark -r tests/data/ikev1-natt.pcap -o esp.enable_encryption_decode:TRUE
///  -o 'uat:esp_sa:"IPv4","10.99.0.1","10.99.0.2","0xcda2a172","AES-GCM with 16 octet ICV [RFC4106]","0xa4de7bf6303447b84a62f6b7c1f6121423740646","NULL",""'
///  -o 'uat:esp_sa:"IPv4","10.99.0.2","10.99.0.1","0xc61a28e0","AES-GCM with 16 octet ICV [RFC4106]","0x3303733dbb3edc72a9c8d5f7246d205b7f98f1fa","NULL",""'`
/// which lists frames 10–43 as L2TP (SCCRQ … StopCCN), LCP, CHAP, IPCP and 6 ICMP.
#[test]
fn golden_natt_capture_decaps_to_l2tp_and_ppp() {
    let keys = [
        (0xcda2a172u32, "a4de7bf6303447b84a62f6b7c1f6121423740646"),
        (0xc61a28e0u32, "3303733dbb3edc72a9c8d5f7246d205b7f98f1fa"),
    ];
    let reader = pcap::Reader::new(include_bytes!("../../tests/data/ikev1-natt.pcap")).unwrap();
    let (mut esp_frames, mut control, mut ipv4, mut ppp_ctl, mut ike) = (0, 0, 0, 0, 0);
    for rec in reader.records() {
        let mut frame = rec.unwrap().data.to_vec();
        let len = frame.len();
        match decap::classify(&frame, 14..len).unwrap() {
            Classified::Esp(o) => {
                esp_frames += 1;
                assert_eq!(o.udp, Some((4500, 4500)));
                let key = keys.iter().find(|k| k.0 == o.spi).unwrap();
                let c = EspCipher::new(
                    Transform::Aes128Gcm,
                    &hex(key.1),
                    false,
                    Backend::AwsLc,
                    [0; 16],
                )
                .unwrap();
                c.open(&mut frame[o.esp.clone()], u64::from(o.seq_lo))
                    .unwrap();
                let inner = decap::strip_trailer(&frame, o.esp, Transform::Aes128Gcm).unwrap();
                assert_eq!(inner.next_header, 17);
                let udp = &frame[inner.payload.clone()];
                assert_eq!(&udp[0..4], &[0x06, 0xa5, 0x06, 0xa5], "1701 → 1701");
                let l2 = l2tp::Packet::new_checked(&udp[8..]).unwrap();
                if l2.is_control() {
                    control += 1;
                } else {
                    let f = ppp::Frame::new_checked(l2.payload()).unwrap();
                    if f.protocol() == ppp::Protocol::IPV4 {
                        ipv4 += 1;
                    } else {
                        ppp_ctl += 1;
                    }
                }
            }
            Classified::Ike { .. } => ike += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // tshark: 34 ESP frames: 18 L2TP control (incl. 5 ZLB… see KEYS.md), 6 ICMP, 10 PPP control.
    assert_eq!(esp_frames, 34);
    assert_eq!(ike, 11);
    assert_eq!(ipv4, 6);
    assert_eq!(control + ppp_ctl, 28);
}
