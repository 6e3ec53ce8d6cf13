//! Per-packet cost of the inbound lookups: anti-replay check + accept, and finding an SA
//! by SPI in a worker's table.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sekisho::esp::replay::{DEFAULT_WINDOW, ReplayWindow};
use sekisho::esp::shard::{SpiLayout, SpiTable};

/// Packets per measured iteration.
const BURST: u64 = 1024;

/// Check and accept `seqs` shifted up by `base`, as the data path does after the ICV.
fn receive_burst(w: &mut ReplayWindow, base: u64, offsets: &[u64]) -> u64 {
    let mut accepted = 0;
    for &off in offsets {
        let seq_lo = (base + off) as u32;
        if let Ok(seq) = w.check(black_box(seq_lo))
            && w.accept(seq).is_ok()
        {
            accepted += 1;
        }
    }
    accepted
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(BURST));

    for esn in [false, true] {
        let in_order: Vec<u64> = (1..=BURST).collect();
        let mut w = ReplayWindow::new(DEFAULT_WINDOW, esn).unwrap();
        let mut base = 0u64;
        g.bench_function(if esn { "in_order_esn" } else { "in_order" }, |b| {
            b.iter(|| {
                let n = receive_burst(&mut w, base, &in_order);
                base += BURST;
                if !esn && base > u64::from(u32::MAX - 2 * BURST as u32) {
                    w = ReplayWindow::new(DEFAULT_WINDOW, esn).unwrap();
                    base = 0;
                }
                n
            })
        });
    }

    // Reordering within the window: each run of 256 packets arrives shuffled, so most
    // packets land below the top and hit the bitmap, and the top advances in jumps.
    let mut rng = StdRng::seed_from_u64(4303);
    let mut reordered: Vec<u64> = (1..=BURST).collect();
    for run in reordered.chunks_mut(256) {
        run.shuffle(&mut rng);
    }
    let mut w = ReplayWindow::new(DEFAULT_WINDOW, true).unwrap();
    let mut base = 0u64;
    g.bench_function("reordered_esn", |b| {
        b.iter(|| {
            let n = receive_burst(&mut w, base, &reordered);
            base += BURST;
            n
        })
    });

    // Duplicates: the same burst replayed, every packet refused by the bitmap.
    let mut w = ReplayWindow::new(DEFAULT_WINDOW, true).unwrap();
    let last: Vec<u64> = (1..=DEFAULT_WINDOW as u64).collect();
    receive_burst(&mut w, 0, &last);
    g.bench_function("replayed_esn", |b| {
        b.iter(|| receive_burst(&mut w, 0, &last))
    });
    g.finish();
}

fn spi_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("spi_table");
    g.throughput(Throughput::Elements(BURST));
    let mut rng = StdRng::seed_from_u64(2401);
    for entries in [1usize, 100_000] {
        let mut table = SpiTable::new(3, SpiLayout::DEFAULT, entries);
        let spis: Vec<u32> = (0..entries)
            .map(|i| table.insert_with(|spi| (spi, i as u64)).unwrap())
            .collect();
        // A burst of packets for SAs drawn at random from the table.
        let burst: Vec<u32> = (0..BURST)
            .map(|_| spis[rng.random_range(0..spis.len())])
            .collect();
        g.bench_function(format!("get_{entries}"), |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for &spi in &burst {
                    if let Some((_, v)) = table.get(black_box(spi)) {
                        sum += v;
                    }
                }
                sum
            })
        });
    }
    g.finish();
}

criterion_group!(benches, replay, spi_lookup);
criterion_main!(benches);
