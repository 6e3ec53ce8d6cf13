//! The whole data path of one worker, per packet: outer IPv4 / UDP 4500 / ESP / UDP 1701
//! / L2TP / PPP / inner IPv4 and back, through [`Shard::decap_batch`] and
//! [`Shard::encap_batch`], with simulated clients installed the way the control thread
//! installs them (NAT-T, transport mode, replay window 1024, aws-lc-rs).
//!
//! Groups `esp/{transform}` (aes128-gcm at 64 / 1400 / IMIX octets, aes256-sha1 at
//! 1400), ids `{op}/{size}/{n}sess/b{batch}`, `n` sessions sending round-robin through
//! the batch (1 session: one crypto call per batch; 1000: one per packet):
//! - `decap`: client packets → inner IPv4 packets (SA lookup, replay check, open,
//!   replay update, trailer, L2TP, PPP, anti-spoofing).
//! - `encap`: inner IPv4 packets from inside → ESP packets to the clients (session by
//!   inner address, PPP / L2TP / UDP / ESP / UDP / IPv4 headers, seal).
//! - `decap+encap`: what `sekisho bench` calls the chain: each client packet is
//!   decapsulated and its inner packet (addressed to another client, or back to the
//!   only one) encapsulated again in the same frame.
//!
//! Group `esp/lookup`: decap of 64-octet aes128-gcm packets, batch 32, from `a` active
//! sessions out of `n` installed (`{a}of{n}`): what 100 000 installed SAs and sessions
//! cost the SPI table and the session map. The bare `SpiTable::get` and the replay
//! check are in `benches/replay.rs`.
//!
//! Throughput is in packets (elements); time is per batch. Only the batch calls are
//! timed (`iter_custom`): restoring the frames before each batch (a copy from a pool of
//! pristine frames, which also leaves them warm in cache, as packets fresh from the NIC
//! would be in the last-level cache at best) and resetting replay windows are not.
//!
//! Replay: the replay check comes before the ICV, so re-decapsulating a sequence number
//! would measure a drop and no crypto. Each bench therefore seals a pool of distinct
//! packets up front and walks through it; when the pool is used up, the active
//! sessions' inbound SAs are replaced by fresh ones with the same keys and SPI (clean
//! windows), outside the timed section. Every bench asserts that a full pass over its
//! pool forwards every packet before measuring, and that nothing was dropped while
//! measuring.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sekisho::crypto::{Backend, Transform};
use sekisho::dataplane::peer::{
    FRAME_HEADROOM, PeerParams, SimPeer, frame_len, new_shard, write_inner_udp,
};
use sekisho::dataplane::{Pkt, Shard, Verdict};

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// IMIX: 7 × 64, 4 × 576, 1 × 1400 octets (inner IPv4 packets), interleaved.
const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1400, 64, 576, 64, 64, 576];
const BATCHES: [usize; 2] = [32, 256];
/// Largest inner packet of any bench.
const MAX_INNER: usize = 1400;

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

    /// Inner packet octets of the `k`-th packet of a pool.
    fn inner(self, k: usize) -> usize {
        match self {
            Size::Fixed(n) => n,
            Size::Imix => IMIX[k % IMIX.len()],
        }
    }
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
}

/// Session `i`: its own outer address and NAT port, inner address and L2TP ids.
fn params(i: u32, t: Transform) -> PeerParams {
    let ids = |base: u16| (base + (i >> 15) as u16, 1 + (i & 0x7fff) as u16);
    PeerParams {
        transform: t,
        natt: true,
        gateway: GW,
        client: Ipv4Addr::from(0x6440_0000 + i),
        client_port: 1024 + (i % 60_000) as u16,
        inner: Ipv4Addr::from(0x0a80_0000 + i),
        gw_ids: ids(1),
        client_ids: ids(0x4000),
        backend: Backend::AwsLc,
    }
}

/// The key seed of session `i` (keys repeat every 256 sessions, SPIs do not).
fn seed(i: u32) -> u8 {
    i as u8
}

/// A worker shard with `installed` sessions and the clients of some of them.
struct Gateway {
    shard: Shard,
    /// The kept clients with their key seeds, in round-robin order.
    clients: Vec<(u8, SimPeer)>,
    /// How many of `clients` send traffic.
    active: usize,
}

impl Gateway {
    /// Installs sessions `0..installed` and keeps the clients of `keep` (in that order).
    fn new(t: Transform, installed: u32, keep: &[u32]) -> Gateway {
        let mut shard = new_shard(installed as usize);
        let mut slots: Vec<Option<(u8, SimPeer)>> = keep.iter().map(|_| None).collect();
        let mut position = std::collections::HashMap::new();
        for (p, &i) in keep.iter().enumerate() {
            position.insert(i, p);
        }
        for i in 0..installed {
            let peer =
                SimPeer::establish(&mut shard, params(i, t), seed(i)).expect("session installs");
            if let Some(&p) = position.get(&i) {
                slots[p] = Some((seed(i), peer));
            }
        }
        let clients: Vec<(u8, SimPeer)> = slots
            .into_iter()
            .map(|c| c.expect("kept clients are installed"))
            .collect();
        Gateway {
            shard,
            active: clients.len(),
            clients,
        }
    }

    fn active(&mut self) -> &mut [(u8, SimPeer)] {
        &mut self.clients[..self.active]
    }

    /// Clean replay windows for the active sessions: the same session established on a
    /// scratch shard yields an inbound SA with the same keys (a function of the seed),
    /// which replaces the used one under the same SPI.
    fn reset_windows(&mut self) {
        let mut scratch = new_shard(self.active);
        for (seed, c) in &self.clients[..self.active] {
            let fresh = SimPeer::establish(&mut scratch, c.params.clone(), *seed)
                .expect("scratch session installs");
            let sa = scratch
                .inbound
                .remove(fresh.out_sa.spi())
                .expect("scratch inbound SA");
            let spi = c.out_sa.spi();
            let slot = self
                .shard
                .inbound
                .get_mut(spi)
                .expect("inbound SA installed");
            *slot = sa.with_spi(spi);
        }
    }

    /// Packets in a pool: a multiple of 12 (whole IMIX cycles) and of every batch, and
    /// at least 18 packets per session with 1000 sessions.
    fn pool_len(&self) -> usize {
        if self.active > 1 { 18_432 } else { 9_216 }
    }

    /// Client → gateway frames, round-robin over the active clients; client `c` sends
    /// to `dst(c)`.
    fn client_pool(&mut self, size: Size, dst: impl Fn(usize) -> Ipv4Addr) -> Pool {
        let n = self.pool_len();
        let a = self.active;
        let mut pool = Pool::default();
        for k in 0..n {
            let c = k % a;
            let peer = &mut self.active()[c].1;
            let len = size.inner(k);
            let mut f = vec![0u8; frame_len(len)];
            let r = peer.inner_packet(&mut f, dst(c), len);
            let outer = peer.seal(&mut f, r).expect("client seals");
            pool.frames.push(f);
            pool.ranges.push(outer);
            pool.inner.push(len);
        }
        pool
    }

    /// Inside → client inner packets, round-robin over the active clients.
    fn inside_pool(&self, size: Size) -> Pool {
        let n = self.pool_len();
        let mut pool = Pool::default();
        for k in 0..n {
            let (_, peer) = &self.clients[k % self.active];
            let len = size.inner(k);
            let mut f = vec![0u8; len];
            let r = write_inner_udp(&mut f, 0, INSIDE, peer.params.inner, len);
            pool.frames.push(f);
            pool.ranges.push(r);
            pool.inner.push(len);
        }
        pool
    }
}

/// Pristine frames (or inner packets) and where their packet lies.
#[derive(Default)]
struct Pool {
    frames: Vec<Vec<u8>>,
    ranges: Vec<Range<usize>>,
    inner: Vec<usize>,
}

impl Pool {
    fn len(&self) -> usize {
        self.frames.len()
    }

    /// Restores `work` to frames `at..` of the pool, as received.
    fn load_frames(&self, work: &mut [Pkt<Vec<u8>>], at: usize) {
        let src = self.frames[at..].iter().zip(&self.ranges[at..]);
        for (p, (f, r)) in work.iter_mut().zip(src) {
            p.buf[..f.len()].copy_from_slice(f);
            p.reset(r.start, r.end);
        }
    }

    /// Places inner packets `at..` of the pool behind the headroom of `work`'s frames.
    fn load_inner(&self, work: &mut [Pkt<Vec<u8>>], at: usize) {
        for (p, f) in work.iter_mut().zip(&self.frames[at..]) {
            let end = FRAME_HEADROOM + f.len();
            p.buf[FRAME_HEADROOM..end].copy_from_slice(f);
            p.reset(FRAME_HEADROOM, end);
        }
    }
}

fn work_batch(batch: usize) -> Vec<Pkt<Vec<u8>>> {
    (0..batch)
        .map(|_| Pkt::new(vec![0u8; frame_len(MAX_INNER)], 0, 0))
        .collect()
}

fn dropped(work: &[Pkt<Vec<u8>>]) -> u64 {
    work.iter()
        .filter(|p| p.verdict != Verdict::Forward)
        .count() as u64
}

fn assert_forwarded(work: &[Pkt<Vec<u8>>], id: &str, what: &str) {
    for (k, p) in work.iter().enumerate() {
        assert_eq!(p.verdict, Verdict::Forward, "{id}: {what} #{k}");
    }
}

/// Decapsulation of client packets.
fn bench_decap(g: &mut BenchmarkGroup<'_, WallTime>, id: &str, gw: &mut Gateway, size: Size) {
    let batch = batch_of(id);
    let pool = gw.client_pool(size, |_| INSIDE);
    let mut work = work_batch(batch);
    // A full pass must forward every packet, with the inner packet intact.
    gw.reset_windows();
    for at in (0..pool.len()).step_by(batch) {
        pool.load_frames(&mut work, at);
        gw.shard.decap_batch(&mut work);
        assert_forwarded(&work, id, "decap");
        for (p, &len) in work.iter().zip(&pool.inner[at..]) {
            assert_eq!(p.end - p.start, len, "{id}: inner packet length");
        }
    }
    gw.reset_windows();
    let (mut at, mut bad) = (0, 0);
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                if at == pool.len() {
                    gw.reset_windows();
                    at = 0;
                }
                pool.load_frames(&mut work, at);
                at += batch;
                let t0 = Instant::now();
                gw.shard.decap_batch(&mut work);
                t += t0.elapsed();
                bad += dropped(&work);
            }
            t
        })
    });
    assert_eq!(bad, 0, "{id}: packets dropped while measuring");
}

/// Encapsulation of inner packets towards the clients (no replay state on this side:
/// the outbound sequence numbers just grow).
fn bench_encap(g: &mut BenchmarkGroup<'_, WallTime>, id: &str, gw: &mut Gateway, size: Size) {
    let batch = batch_of(id);
    let pool = gw.inside_pool(size);
    let mut work = work_batch(batch);
    for at in (0..pool.len()).step_by(batch) {
        pool.load_inner(&mut work, at);
        gw.shard.encap_batch(&mut work);
        assert_forwarded(&work, id, "encap");
        if at == 0 {
            // The clients open what the gateway sealed and find the inner packet.
            let a = gw.active;
            for (k, p) in work.iter_mut().enumerate() {
                let (s, e) = (p.start, p.end);
                let inner = gw.active()[k % a].1.open(&mut p.buf, s..e);
                assert_eq!(inner.map(|r| r.len()), Some(pool.inner[k]), "{id}: open");
            }
        }
    }
    let (mut at, mut bad) = (0, 0);
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                if at == pool.len() {
                    at = 0;
                }
                pool.load_inner(&mut work, at);
                at += batch;
                let t0 = Instant::now();
                gw.shard.encap_batch(&mut work);
                t += t0.elapsed();
                bad += dropped(&work);
            }
            t
        })
    });
    assert_eq!(bad, 0, "{id}: packets dropped while measuring");
}

/// Decapsulation, then encapsulation of the inner packet in the same frame (client to
/// client through the gateway).
fn chain(shard: &mut Shard, work: &mut [Pkt<Vec<u8>>]) {
    shard.decap_batch(work);
    for p in work.iter_mut() {
        let (s, e) = (p.start, p.end);
        p.reset(s, e);
    }
    shard.encap_batch(work);
}

fn bench_chain(g: &mut BenchmarkGroup<'_, WallTime>, id: &str, gw: &mut Gateway, size: Size) {
    let batch = batch_of(id);
    let a = gw.active;
    // Client c sends to the next client's inner address (the only one to itself).
    let inner: Vec<Ipv4Addr> = gw.active().iter().map(|(_, c)| c.params.inner).collect();
    let pool = gw.client_pool(size, |c| inner[(c + 1) % a]);
    let mut work = work_batch(batch);
    gw.reset_windows();
    for at in (0..pool.len()).step_by(batch) {
        pool.load_frames(&mut work, at);
        chain(&mut gw.shard, &mut work);
        assert_forwarded(&work, id, "decap+encap");
        if at == 0 {
            for (k, p) in work.iter_mut().enumerate() {
                let (s, e) = (p.start, p.end);
                let inner = gw.active()[(k + 1) % a].1.open(&mut p.buf, s..e);
                assert_eq!(inner.map(|r| r.len()), Some(pool.inner[k]), "{id}: open");
            }
        }
    }
    gw.reset_windows();
    let (mut at, mut bad) = (0, 0);
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                if at == pool.len() {
                    gw.reset_windows();
                    at = 0;
                }
                pool.load_frames(&mut work, at);
                at += batch;
                let t0 = Instant::now();
                chain(&mut gw.shard, &mut work);
                t += t0.elapsed();
                bad += dropped(&work);
            }
            t
        })
    });
    assert_eq!(bad, 0, "{id}: packets dropped while measuring");
}

/// The batch size is the last part of every id (`…/b32`).
fn batch_of(id: &str) -> usize {
    id.rsplit_once("/b")
        .and_then(|(_, b)| b.parse().ok())
        .expect("id ends in /b{batch}")
}

fn chains(c: &mut Criterion) {
    let gcm_sizes = [Size::Fixed(64), Size::Fixed(1400), Size::Imix];
    let cbc_sizes = [Size::Fixed(1400)];
    for (t, sizes) in [
        (Transform::Aes128Gcm, &gcm_sizes[..]),
        (Transform::Aes256CbcSha1, &cbc_sizes[..]),
    ] {
        let mut g = c.benchmark_group(format!("esp/{t}"));
        configure(&mut g);
        for sessions in [1u32, 1000] {
            let all: Vec<u32> = (0..sessions).collect();
            let mut gw = Gateway::new(t, sessions, &all);
            for &size in sizes {
                for batch in BATCHES {
                    let id = |op: &str| format!("{op}/{}/{sessions}sess/b{batch}", size.label());
                    bench_decap(&mut g, &id("decap"), &mut gw, size);
                    bench_encap(&mut g, &id("encap"), &mut gw, size);
                    bench_chain(&mut g, &id("decap+encap"), &mut gw, size);
                }
            }
        }
        g.finish();
    }
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("esp/lookup");
    configure(&mut g);
    let t = Transform::Aes128Gcm;
    let size = Size::Fixed(64);
    let mut gw = Gateway::new(t, 1, &[0]);
    bench_decap(&mut g, "1of1/b32", &mut gw, size);
    let all: Vec<u32> = (0..1000).collect();
    let mut gw = Gateway::new(t, 1000, &all);
    bench_decap(&mut g, "1000of1000/b32", &mut gw, size);
    // 1000 sessions spread at random over the table, in random order.
    const INSTALLED: u32 = 100_000;
    let mut rng = StdRng::seed_from_u64(4301);
    let spread: Vec<u32> = rand::seq::index::sample(&mut rng, INSTALLED as usize, 1000)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let mut gw = Gateway::new(t, INSTALLED, &spread);
    gw.active = 1;
    bench_decap(&mut g, "1of100000/b32", &mut gw, size);
    gw.active = spread.len();
    bench_decap(&mut g, "1000of100000/b32", &mut gw, size);
    g.finish();
}

criterion_group!(benches, chains, lookup);
criterion_main!(benches);
