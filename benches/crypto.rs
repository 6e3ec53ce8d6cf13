//! Cost of the ESP transforms alone: ESP regions laid out as the data path hands them
//! to the cipher (SPI | seq | IV | payload | padding | pad length | next header | ICV),
//! with no header processing around them.
//!
//! - One group per transform (all six), e.g. `aes128-gcm/seal/1400/b32`: `seal` and
//!   `open` of a batch on the default aws-lc-rs backend, for payloads of 64, 128, 512
//!   and 1400 octets and an IMIX (64/576/1400 octets 7:4:1, cycled through the batch),
//!   in batches of 1, 32 and 256 packets. Throughput is the payload octets of a batch
//!   (headers, IV, padding and ICV not counted); time is per batch.
//! - `compare_1400_b32`: aes128-gcm and aes128-sha1 at 1400 octets, batch 32, on every
//!   backend compiled in (aws-lc-rs, RustCrypto), and for CBC the multi-buffer schedule
//!   (`seal`, the default) against one packet after the other (`seal-serial`).
//!
//! Sequence numbers (and so GCM nonces) repeat from one iteration to the next: that is
//! the same work as fresh ones and does not matter for a benchmark.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use sekisho::crypto::{Backend, CbcSchedule, ESP_HEADER_LEN, EspBuf, EspCipher, Transform};

/// IMIX: 7 × 64, 4 × 576, 1 × 1400 octets, interleaved.
const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1400, 64, 576, 64, 64, 576];
const BATCHES: [usize; 3] = [1, 32, 256];
const SIZES: [Size; 5] = [
    Size::Fixed(64),
    Size::Fixed(128),
    Size::Fixed(512),
    Size::Fixed(1400),
    Size::Imix,
];
const SPI: u32 = 0xc0de_0001;

#[derive(Clone, Copy)]
enum Size {
    Fixed(usize),
    Imix,
}

impl Size {
    fn label(self) -> String {
        match self {
            Size::Fixed(n) => n.to_string(),
            Size::Imix => "imix".to_string(),
        }
    }

    /// Payload octets of the `k`-th packet of a run.
    fn payload(self, k: usize) -> usize {
        match self {
            Size::Fixed(n) => n,
            Size::Imix => IMIX[k % IMIX.len()],
        }
    }

    /// Batches of `batch` packets that hold a whole number of IMIX cycles, so that the
    /// mix over the ring is exactly 7:4:1 (batch 1: 12 batches, 32 and 256: 3).
    fn ring(self, batch: usize) -> usize {
        match self {
            Size::Fixed(_) => 1,
            Size::Imix => IMIX.len() / gcd(batch, IMIX.len()),
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(300));
}

fn keymat(t: Transform) -> Vec<u8> {
    (0..t.keymat_len())
        .map(|i| (i as u8).wrapping_mul(29) ^ 0xa5)
        .collect()
}

fn cipher(t: Transform, backend: Backend) -> EspCipher {
    EspCipher::new(t, &keymat(t), false, backend, [0x3c; 16]).expect("keymat fits the transform")
}

/// A plaintext ESP region: header, room for the IV, `payload` octets, RFC 4303 padding,
/// pad length, next header (UDP) and room for the ICV.
fn esp_region(t: Transform, payload: usize, seq: u64) -> Vec<u8> {
    let ct = t.padded_len(payload);
    let mut v = vec![0u8; t.overhead() + ct];
    v[..4].copy_from_slice(&SPI.to_be_bytes());
    v[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
    let p = ESP_HEADER_LEN + t.iv_len();
    let pad = ct - payload - 2;
    let (data, trailer) = v[p..p + ct].split_at_mut(payload);
    for (i, b) in data.iter_mut().enumerate() {
        *b = i as u8;
    }
    for (i, b) in trailer[..pad].iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    trailer[pad] = pad as u8;
    trailer[pad + 1] = 17;
    v
}

/// The plaintext regions of a ring of batches, and the payload octets of one batch
/// (exact: the ring holds whole IMIX cycles).
fn ring(t: Transform, size: Size, batch: usize) -> (Vec<Vec<Vec<u8>>>, u64) {
    let n = size.ring(batch);
    let mut payload = 0;
    let bufs = (0..n)
        .map(|j| {
            (0..batch)
                .map(|i| {
                    let k = j * batch + i;
                    payload += size.payload(k);
                    esp_region(t, size.payload(k), k as u64 + 1)
                })
                .collect()
        })
        .collect();
    (bufs, (payload / n) as u64)
}

fn wrap(store: &mut [Vec<Vec<u8>>]) -> Vec<Vec<EspBuf<'_>>> {
    store
        .iter_mut()
        .map(|batch| {
            batch
                .iter_mut()
                .map(|esp| {
                    let seq = u64::from(u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]));
                    EspBuf::new(esp, seq)
                })
                .collect()
        })
        .collect()
}

fn assert_ok(batches: &[Vec<EspBuf<'_>>], what: &str) {
    for b in batches {
        for p in b {
            assert_eq!(p.status, Ok(()), "{what}");
        }
    }
}

/// Seals the same buffers again and again: each pass overwrites IV, ciphertext and ICV
/// of the same lengths, which is the same work as sealing fresh plaintext.
fn bench_seal(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    cipher: &EspCipher,
    size: Size,
    batch: usize,
    schedule: CbcSchedule,
) {
    let (mut store, bytes) = ring(cipher.transform(), size, batch);
    let mut batches = wrap(&mut store);
    for b in &mut batches {
        cipher.seal_batch_with(b, schedule);
    }
    assert_ok(&batches, id);
    g.throughput(Throughput::Bytes(bytes));
    let n = batches.len();
    let mut i = 0;
    g.bench_function(id, |b| {
        b.iter(|| {
            let batch = &mut batches[i];
            i = (i + 1) % n;
            cipher.seal_batch_with(black_box(batch), schedule);
        })
    });
}

/// Opens sealed copies. `open` decrypts in place, so every iteration first copies the
/// sealed regions back into the working buffers: the time includes that memcpy (one
/// pass over the batch, small next to the AES and GHASH/HMAC passes) and nothing is
/// subtracted.
fn bench_open(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    cipher: &EspCipher,
    size: Size,
    batch: usize,
) {
    let t = cipher.transform();
    let (mut store, bytes) = ring(t, size, batch);
    let plain = store.clone();
    let mut batches = wrap(&mut store);
    for b in &mut batches {
        cipher.seal_batch(b);
    }
    assert_ok(&batches, id);
    let sealed: Vec<Vec<Vec<u8>>> = batches
        .iter()
        .map(|b| b.iter().map(|p| p.esp.to_vec()).collect())
        .collect();
    for b in &mut batches {
        cipher.open_batch(b);
    }
    assert_ok(&batches, id);
    // The plaintext is back (header, payload and trailer; IV and ICV stay as sealed).
    let body = ESP_HEADER_LEN + t.iv_len();
    for (b, p) in batches.iter().flatten().zip(plain.iter().flatten()) {
        let end = p.len() - t.icv_len();
        assert_eq!(
            b.esp[body..end],
            p[body..end],
            "{id}: open restores the plaintext"
        );
    }
    g.throughput(Throughput::Bytes(bytes));
    let n = batches.len();
    let mut i = 0;
    g.bench_function(id, |b| {
        b.iter(|| {
            let (batch, src) = (&mut batches[i], &sealed[i]);
            i = (i + 1) % n;
            for (p, s) in batch.iter_mut().zip(src) {
                p.esp.copy_from_slice(s);
            }
            cipher.open_batch(black_box(batch));
        })
    });
}

fn transforms(c: &mut Criterion) {
    for t in Transform::ALL {
        let cipher = cipher(t, Backend::AwsLc);
        let mut g = c.benchmark_group(t.name());
        configure(&mut g);
        for size in SIZES {
            for batch in BATCHES {
                let id = format!("seal/{}/b{batch}", size.label());
                bench_seal(&mut g, &id, &cipher, size, batch, CbcSchedule::MultiBuffer);
                let id = format!("open/{}/b{batch}", size.label());
                bench_open(&mut g, &id, &cipher, size, batch);
            }
        }
        g.finish();
    }
}

fn compare(c: &mut Criterion) {
    let mut g = c.benchmark_group("compare_1400_b32");
    configure(&mut g);
    let (size, batch) = (Size::Fixed(1400), 32);
    for t in [Transform::Aes128Gcm, Transform::Aes128CbcSha1] {
        for &backend in Backend::all() {
            let cipher = cipher(t, backend);
            let id = format!("{t}/seal/{}", backend.name());
            bench_seal(&mut g, &id, &cipher, size, batch, CbcSchedule::MultiBuffer);
            if !t.is_aead() {
                let id = format!("{t}/seal-serial/{}", backend.name());
                bench_seal(&mut g, &id, &cipher, size, batch, CbcSchedule::Serial);
            }
            let id = format!("{t}/open/{}", backend.name());
            bench_open(&mut g, &id, &cipher, size, batch);
        }
    }
    g.finish();
}

criterion_group!(benches, transforms, compare);
criterion_main!(benches);
