//! Differential tests: aws-lc-rs against the RustCrypto oracle, and the multi-buffer
//! batch path against one-packet-at-a-time, on random transforms, keys, sizes and
//! sequence numbers. Identical bytes are required.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::*;

/// Builds an ESP region for `payload` with valid RFC 4303 padding.
fn region(t: Transform, rng: &mut StdRng, spi: u32, seq: u64) -> Vec<u8> {
    let payload_len = rng.random_range(0..1600);
    let ct_len = t.padded_len(payload_len);
    let mut v = vec![0u8; 8 + t.iv_len() + ct_len + t.icv_len()];
    v[..4].copy_from_slice(&spi.to_be_bytes());
    v[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
    let p = 8 + t.iv_len();
    rng.fill_bytes(&mut v[p..p + payload_len]);
    let pad = ct_len - payload_len - 2;
    for i in 0..pad {
        v[p + payload_len + i] = (i + 1) as u8;
    }
    v[p + ct_len - 2] = pad as u8;
    v[p + ct_len - 1] = 17;
    v
}

#[test]
fn backends_agree_byte_for_byte() {
    let mut rng = StdRng::seed_from_u64(0x5e415);
    for round in 0..400 {
        let t = Transform::ALL[round % Transform::ALL.len()];
        let esn = round % 3 == 0;
        let mut keymat = vec![0u8; t.keymat_len()];
        rng.fill_bytes(&mut keymat);
        let seed: [u8; 16] = rng.random();
        let aws = EspCipher::new(t, &keymat, esn, Backend::AwsLc, seed).unwrap();
        let rc = EspCipher::new(t, &keymat, esn, Backend::RustCrypto, seed).unwrap();
        let seq: u64 = if esn {
            rng.random()
        } else {
            u64::from(rng.random::<u32>())
        };
        let plain = region(t, &mut rng, 0x1000 + round as u32, seq);

        let mut a = plain.clone();
        let mut r = plain.clone();
        aws.seal(&mut a, seq).unwrap();
        rc.seal(&mut r, seq).unwrap();
        assert_eq!(a, r, "{t} esn={esn} len={}", plain.len());

        // Each opens the other's packet back to the plaintext.
        rc.open(&mut a, seq).unwrap();
        aws.open(&mut r, seq).unwrap();
        let body = 8 + t.iv_len()..plain.len() - t.icv_len();
        assert_eq!(a[body.clone()], plain[body.clone()]);
        assert_eq!(r[body.clone()], plain[body]);
    }
}

#[test]
fn batch_equals_single_for_every_schedule() {
    let mut rng = StdRng::seed_from_u64(77);
    for t in Transform::ALL {
        for &backend in Backend::all() {
            for n in [1usize, 2, 7, 8, 9, 33, 256] {
                let mut keymat = vec![0u8; t.keymat_len()];
                rng.fill_bytes(&mut keymat);
                let c = EspCipher::new(t, &keymat, false, backend, rng.random()).unwrap();
                let plains: Vec<Vec<u8>> = (0..n)
                    .map(|i| region(t, &mut rng, 0x4242, i as u64 + 1))
                    .collect();
                let mut single = plains.clone();
                for (i, p) in single.iter_mut().enumerate() {
                    c.seal(p, i as u64 + 1).unwrap();
                }
                for schedule in [CbcSchedule::MultiBuffer, CbcSchedule::Serial] {
                    let mut bufs = plains.clone();
                    let mut batch: Vec<EspBuf> = bufs
                        .iter_mut()
                        .enumerate()
                        .map(|(i, b)| EspBuf::new(b, i as u64 + 1))
                        .collect();
                    c.seal_batch_with(&mut batch, schedule);
                    assert!(batch.iter().all(|p| p.status.is_ok()));
                    c.open_batch(&mut batch);
                    assert!(batch.iter().all(|p| p.status.is_ok()));
                    drop(batch);
                    for (b, p) in bufs.iter().zip(&plains) {
                        let body = 8 + t.iv_len()..p.len() - t.icv_len();
                        assert_eq!(b[body.clone()], p[body]);
                    }
                    let mut again = plains.clone();
                    let mut batch: Vec<EspBuf> = again
                        .iter_mut()
                        .enumerate()
                        .map(|(i, b)| EspBuf::new(b, i as u64 + 1))
                        .collect();
                    c.seal_batch_with(&mut batch, schedule);
                    drop(batch);
                    assert_eq!(again, single, "{t} {backend:?} n={n} {schedule:?}");
                }
            }
        }
    }
}

#[test]
fn batch_marks_only_the_bad_packets() {
    for t in Transform::ALL {
        let c =
            EspCipher::new(t, &vec![3; t.keymat_len()], false, Backend::AwsLc, [1; 16]).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut good1 = region(t, &mut rng, 0x300, 1);
        let mut short = vec![0u8; 5];
        let mut good2 = region(t, &mut rng, 0x300, 3);
        let mut batch = vec![
            EspBuf::new(&mut good1, 1),
            EspBuf::new(&mut short, 2),
            EspBuf::new(&mut good2, 3),
        ];
        c.seal_batch(&mut batch);
        assert_eq!(batch[0].status, Ok(()));
        assert_eq!(batch[1].status, Err(CryptoError::Length));
        assert_eq!(batch[2].status, Ok(()));
        // Tamper with the third one: only it fails to open.
        let last = batch[2].esp.len() - 1;
        batch[2].esp[last] ^= 1;
        batch[1].status = Ok(());
        c.open_batch(&mut batch);
        assert_eq!(batch[0].status, Ok(()));
        assert_eq!(batch[1].status, Err(CryptoError::Length));
        assert_eq!(batch[2].status, Err(CryptoError::Icv));
    }
}
