//! Cost of the IKEv1 crypto a responder spends per handshake.
//!
//! - `dh/<group>`: one `generate` plus one `agree` (a responder's MM4 and its g^xy),
//!   for every group it offers. MODP-2048 dominates a Main Mode; the target of ≥ 1000
//!   handshakes/s per core needs it well under a millisecond.
//! - `phase1/derive_psk`: SKEYID, SKEYID_d/a/e and Ka (SHA-256, AES-128).
//! - `phase1/encrypt_message`: an MM6-sized message (ID + HASH) encrypted.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sekisho::ike::v1::crypto::{DhGroup, HashAlg, IkeCipher};
use sekisho::ike::v1::keys::{Phase1Keys, encrypt_message};
use sekisho::wire::isakmp::{ChainBuilder, Header, VERSION, exchange, payload};

fn dh(c: &mut Criterion) {
    let mut group = c.benchmark_group("dh");
    group.measurement_time(Duration::from_secs(3));
    for dh in [
        DhGroup::Modp1024,
        DhGroup::Modp2048,
        DhGroup::Ecp256,
        DhGroup::Ecp384,
        DhGroup::Curve25519,
    ] {
        let peer = dh.generate().unwrap().public().to_vec();
        group.bench_function(dh.name(), |b| {
            b.iter(|| {
                let secret = dh.generate().unwrap();
                black_box(secret.agree(black_box(&peer)).unwrap())
            })
        });
    }
    group.finish();
}

fn phase1(c: &mut Criterion) {
    let mut group = c.benchmark_group("phase1");
    let cipher = IkeCipher::AesCbc { key_len: 16 };
    let (ni, nr, gxy) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let (cky_i, cky_r) = ([4u8; 8], [5u8; 8]);
    group.bench_function("derive_psk", |b| {
        b.iter(|| {
            black_box(Phase1Keys::derive_psk(
                HashAlg::Sha256,
                cipher,
                b"golden-test-psk-0123",
                &ni,
                &nr,
                &gxy,
                &cky_i,
                &cky_r,
            ))
        })
    });
    let header = Header {
        initiator_cookie: cky_i,
        responder_cookie: cky_r,
        next_payload: 0,
        version: VERSION,
        exchange: exchange::MAIN,
        flags: 0,
        message_id: 0,
        length: 0,
    };
    let mut chain = ChainBuilder::new();
    chain.push(payload::ID, &[1, 0, 0, 0, 10, 99, 0, 2]);
    chain.push(payload::HASH, &[6; 32]);
    let (ka, iv) = ([7u8; 16], [8u8; 16]);
    group.bench_function("encrypt_message", |b| {
        b.iter(|| black_box(encrypt_message(cipher, &ka, &iv, header, &chain).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, dh, phase1);
criterion_main!(benches);
