//! `sekisho bench`: what an operator runs on a new box, like `openssl speed`.
//!
//! For each transform and packet size it measures, in one run on one core:
//! - **raw**: the two AEAD calls a packet costs through the gateway (one open on the
//!   way in, one seal on the way out) on ESP regions of exactly the size the chain
//!   produces, in batches of [`BATCH`];
//! - **chain**: the whole data path for the same packets, decap (IPv4 / UDP 4500 /
//!   ESP / UDP 1701 / L2TP / PPP / IPv4) plus encap (the reverse), in batches;
//!
//! and reports ns per packet, Gbps of inner packets per core and raw/chain as the
//! share of the crypto ceiling the chain reaches.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::crypto::{Backend, CbcSchedule, EspBuf, EspCipher, Transform};
use crate::dataplane::chain::{Pkt, Shard, Verdict};
use crate::dataplane::peer::{
    FRAME_HEADROOM, PeerParams, SimPeer, frame_len, new_shard, write_inner_udp,
};

/// Packets per batch call.
pub const BATCH: usize = 32;

/// Inner packet sizes reported; 0 stands for IMIX.
pub const SIZES: [usize; 5] = [64, 128, 512, 1400, 0];

/// IMIX 7:4:1 of 64, 576 and 1400 octets, in the order the batches cycle through.
pub const IMIX: [usize; 12] = [64, 576, 64, 1400, 64, 576, 64, 64, 576, 64, 576, 64];

/// A packet size: octets, or the IMIX mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Size {
    /// Every packet this many octets.
    Bytes(usize),
    /// IMIX 7:4:1 (serialized as "imix").
    Imix(&'static str),
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Bytes(n) => write!(f, "{n}"),
            Size::Imix(s) => f.write_str(s),
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Transform name, e.g. "aes128-gcm".
    pub transform: &'static str,
    /// Inner IPv4 packet size in octets, or "imix".
    pub size: Size,
    /// Mean inner packet size in octets.
    pub mean_bytes: f64,
    /// ns per packet for open + seal.
    pub raw_ns: f64,
    /// ns per packet for decap + encap.
    pub chain_ns: f64,
    /// ns per packet, decap alone.
    pub decap_ns: f64,
    /// ns per packet, encap alone.
    pub encap_ns: f64,
    /// Gbps of inner packets per core at the raw cost.
    pub raw_gbps: f64,
    /// Gbps of inner packets per core through the chain.
    pub chain_gbps: f64,
    /// raw_ns / chain_ns: the share of the crypto ceiling the chain reaches.
    pub ratio: f64,
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time spent per measurement (each is repeated [`Options::rounds`] times, best kept).
    pub per_measurement: Duration,
    /// Repetitions per measurement.
    pub rounds: usize,
    /// Transforms to run.
    pub transforms: Vec<Transform>,
    /// Sizes to run (0 = IMIX).
    pub sizes: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            per_measurement: Duration::from_millis(40),
            rounds: 5,
            transforms: Transform::ALL.to_vec(),
            sizes: SIZES.to_vec(),
        }
    }
}

fn sizes_for(size: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            if size == 0 {
                IMIX[i % IMIX.len()]
            } else {
                size
            }
        })
        .collect()
}

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn peer_params(t: Transform) -> PeerParams {
    PeerParams {
        transform: t,
        natt: true,
        gateway: GW,
        client: Ipv4Addr::new(203, 0, 113, 9),
        client_port: 4500,
        inner: Ipv4Addr::new(10, 99, 0, 10),
        gw_ids: (11, 22),
        client_ids: (33, 44),
        backend: Backend::AwsLc,
    }
}

/// A fresh gateway shard with one session and the client that talks to it.
fn world(t: Transform) -> (Shard, SimPeer) {
    let mut shard = new_shard(4);
    let peer = SimPeer::establish(&mut shard, peer_params(t), 7).expect("bench session");
    (shard, peer)
}

/// Sealed client frames for `sizes`, ready for decap.
fn sealed_frames(peer: &mut SimPeer, sizes: &[usize]) -> Vec<Pkt<Vec<u8>>> {
    sizes
        .iter()
        .map(|&s| {
            let mut f = vec![0u8; frame_len(1400)];
            let r = peer.inner_packet(&mut f, INSIDE, s);
            let o = peer.seal(&mut f, r).expect("seal");
            Pkt::new(f, o.start, o.end)
        })
        .collect()
}

/// Inner frames towards the client, ready for encap.
fn inner_frames(peer: &SimPeer, sizes: &[usize]) -> Vec<Pkt<Vec<u8>>> {
    sizes
        .iter()
        .map(|&s| {
            let mut f = vec![0u8; frame_len(1400)];
            let r = write_inner_udp(&mut f, FRAME_HEADROOM, INSIDE, peer.params.inner, s);
            Pkt::new(f, r.start, r.end)
        })
        .collect()
}

/// ns per packet of decap, over fresh (never replayed) packets.
fn measure_decap(t: Transform, sizes: &[usize], budget: Duration) -> f64 {
    let mut spent = Duration::ZERO;
    let mut packets = 0u64;
    while spent < budget {
        let (mut shard, mut peer) = world(t);
        let mut pool = sealed_frames(&mut peer, sizes);
        let t0 = Instant::now();
        for chunk in pool.chunks_mut(BATCH) {
            shard.decap_batch(chunk);
        }
        spent += t0.elapsed();
        packets += pool.len() as u64;
        assert!(
            pool.iter().all(|p| p.verdict == Verdict::Forward),
            "bench decap dropped packets: {:?}",
            shard.stats.nonzero_drops().collect::<Vec<_>>()
        );
    }
    spent.as_nanos() as f64 / packets as f64
}

/// ns per packet of encap.
fn measure_encap(t: Transform, sizes: &[usize], budget: Duration) -> f64 {
    let (mut shard, peer) = world(t);
    let pristine = inner_frames(&peer, sizes);
    let mut pool = inner_frames(&peer, sizes);
    let mut spent = Duration::ZERO;
    let mut packets = 0u64;
    while spent < budget {
        // Sealing encrypted the inner packets in place: restore them (untimed).
        for (p, q) in pool.iter_mut().zip(&pristine) {
            p.buf[q.start..q.end].copy_from_slice(&q.buf[q.start..q.end]);
            p.reset(q.start, q.end);
        }
        let t0 = Instant::now();
        for chunk in pool.chunks_mut(BATCH) {
            shard.encap_batch(chunk);
        }
        spent += t0.elapsed();
        packets += pool.len() as u64;
        assert!(
            pool.iter().all(|p| p.verdict == Verdict::Forward),
            "bench encap dropped"
        );
    }
    spent.as_nanos() as f64 / packets as f64
}

/// ns per packet of seal + open on ESP regions of the chain's sizes.
fn measure_raw(
    t: Transform,
    sizes: &[usize],
    budget: Duration,
    schedule: CbcSchedule,
) -> (f64, f64) {
    let keymat = vec![0x5a; t.keymat_len()];
    let c = EspCipher::new(t, &keymat, false, Backend::AwsLc, [3; 16]).expect("bench key");
    // The ESP payload the chain seals: inner + PPP (4) + L2TP (6) + UDP (8), placed in
    // frames of the chain's size and offset, so both work on the same memory footprint.
    let at = FRAME_HEADROOM - 40;
    let mut frames: Vec<(Vec<u8>, usize)> = sizes
        .iter()
        .map(|&s| {
            let ct = t.padded_len(s + 18);
            let len = 8 + t.iv_len() + ct + t.icv_len();
            let mut v = vec![0u8; frame_len(1400)];
            v[at..at + 4].copy_from_slice(&0x1000u32.to_be_bytes());
            (v, len)
        })
        .collect();
    let (mut seal_t, mut open_t) = (Duration::ZERO, Duration::ZERO);
    let mut packets = 0u64;
    let mut seq = 1u64;
    while seal_t + open_t < budget {
        // Like the chain: the whole pool through one direction, then the other.
        let first = seq;
        for chunk in frames.chunks_mut(BATCH) {
            let mut batch: Vec<EspBuf> = chunk
                .iter_mut()
                .map(|(b, len)| {
                    seq += 1;
                    EspBuf::new(&mut b[at..at + *len], seq)
                })
                .collect();
            let t0 = Instant::now();
            c.seal_batch_with(&mut batch, schedule);
            seal_t += t0.elapsed();
            black_box(&batch);
        }
        let mut s2 = first;
        for chunk in frames.chunks_mut(BATCH) {
            let mut batch: Vec<EspBuf> = chunk
                .iter_mut()
                .map(|(b, len)| {
                    s2 += 1;
                    EspBuf::new(&mut b[at..at + *len], s2)
                })
                .collect();
            let t0 = Instant::now();
            c.open_batch(&mut batch);
            open_t += t0.elapsed();
            assert!(batch.iter().all(|b| b.status.is_ok()), "bench open failed");
            packets += batch.len() as u64;
        }
    }
    (
        seal_t.as_nanos() as f64 / packets as f64,
        open_t.as_nanos() as f64 / packets as f64,
    )
}

fn best(rounds: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..rounds.max(1))
        .map(|_| f())
        .fold(f64::INFINITY, f64::min)
}

/// Runs one (transform, size) cell.
pub fn run_one(t: Transform, size: usize, o: &Options) -> Row {
    let sizes = sizes_for(size, 1024);
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    // Interleave the measurements round by round, so that whatever else the machine
    // is doing weighs on raw and chain alike; keep the best of each.
    let (mut raw_ns, mut decap_ns, mut encap_ns) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..o.rounds.max(1) {
        let (s, op) = measure_raw(t, &sizes, o.per_measurement, CbcSchedule::MultiBuffer);
        raw_ns = raw_ns.min(s + op);
        decap_ns = decap_ns.min(measure_decap(t, &sizes, o.per_measurement));
        encap_ns = encap_ns.min(measure_encap(t, &sizes, o.per_measurement));
    }
    let chain_ns = decap_ns + encap_ns;
    // Both directions move `mean` octets each: 2 × mean per (raw or chain) cost.
    let gbps = |ns: f64| 2.0 * mean * 8.0 / ns;
    Row {
        transform: t.name(),
        size: if size == 0 {
            Size::Imix("imix")
        } else {
            Size::Bytes(size)
        },
        mean_bytes: mean,
        raw_ns,
        chain_ns,
        decap_ns,
        encap_ns,
        raw_gbps: gbps(raw_ns),
        chain_gbps: gbps(chain_ns),
        ratio: raw_ns / chain_ns,
    }
}

/// Multi-buffer against serial CBC sealing, ns per packet, at `size`.
pub fn cbc_schedules(t: Transform, size: usize, o: &Options) -> (f64, f64) {
    let sizes = sizes_for(size, 256);
    let mb = best(o.rounds, || {
        measure_raw(t, &sizes, o.per_measurement, CbcSchedule::MultiBuffer).0
    });
    let serial = best(o.rounds, || {
        measure_raw(t, &sizes, o.per_measurement, CbcSchedule::Serial).0
    });
    (mb, serial)
}

/// Runs the whole table, calling `progress` after each row.
pub fn run(o: &Options, mut progress: impl FnMut(&Row)) -> Vec<Row> {
    let mut rows = Vec::new();
    for &t in &o.transforms {
        for &s in &o.sizes {
            let r = run_one(t, s, o);
            progress(&r);
            rows.push(r);
        }
    }
    rows
}

/// Formats a row for the text table.
pub fn format_row(r: &Row) -> String {
    format!(
        "{:<14} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>6.0}%",
        r.transform,
        r.size.to_string(),
        r.raw_ns,
        r.chain_ns,
        r.decap_ns,
        r.encap_ns,
        r.raw_gbps,
        r.chain_gbps,
        r.ratio * 100.0
    )
}

/// The text table's header.
pub fn header() -> String {
    format!(
        "{:<14} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7}",
        "transform",
        "size",
        "raw ns",
        "chain ns",
        "decap ns",
        "encap ns",
        "raw Gb/s",
        "chain",
        "ratio"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_produces_consistent_rows() {
        let o = Options {
            per_measurement: Duration::from_millis(1),
            rounds: 1,
            transforms: vec![Transform::Aes128Gcm, Transform::Aes256CbcSha1],
            sizes: vec![64, 0],
        };
        let rows = run(&o, |_| {});
        assert_eq!(rows.len(), 4);
        for r in &rows {
            assert!(r.raw_ns > 0.0 && r.chain_ns > 0.0 && r.ratio > 0.0);
            assert!((r.chain_ns - r.decap_ns - r.encap_ns).abs() < 1e-6);
        }
        assert_eq!(rows[1].size, Size::Imix("imix"));
        assert_eq!(
            serde_json::to_value(rows[0].size).unwrap(),
            serde_json::json!(64)
        );
        let json = serde_json::to_value(&rows).unwrap();
        for k in [
            "transform",
            "size",
            "raw_ns",
            "chain_ns",
            "raw_gbps",
            "chain_gbps",
            "ratio",
        ] {
            assert!(json[0].get(k).is_some(), "{k}");
        }
        let (mb, serial) = cbc_schedules(Transform::Aes128CbcSha1, 512, &o);
        assert!(mb > 0.0 && serial > 0.0);
    }
}
