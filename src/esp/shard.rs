//! SA shard table: one worker's inbound SAs, found by SPI in O(1) (RFC 4303 §2.1).
//!
//! The receiver chooses the SPI of every inbound SA, so the gateway makes the SPI say
//! where the SA lives instead of hashing it. From the most significant bit down:
//!
//! ```text
//!  31                                                             0
//! +----------------+-----------------------------+----------------+
//! | worker id      | slot index                  | generation     |
//! | worker_bits    | SpiLayout::SLOT_BITS (20)   | the rest (>=2) |
//! +----------------+-----------------------------+----------------+
//! ```
//!
//! The worker id steers a packet to the thread that owns the SA (the handoff in the data
//! plane reads [`SpiLayout::worker_of`]); the slot indexes that worker's [`SpiTable`];
//! the generation is bumped whenever a slot is freed, so an SPI of a deleted SA misses
//! instead of finding the slot's next tenant. A lookup is one `Vec` index and one full
//! 32-bit compare, which also rejects another worker's SPI.
//!
//! SPIs 1..=255 are reserved by IANA and 0 means "no SA" (RFC 4303 §2.1): the lowest
//! slot numbers, whose SPIs could fall under 256 for worker 0, are never handed out.

use std::fmt;
use std::mem;

use thiserror::Error;

/// How an SPI splits into worker id, slot index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpiLayout {
    worker_bits: u8,
}

/// A worker-id width that leaves fewer than [`SpiLayout::MIN_GENERATION_BITS`] bits of
/// generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("SPI layout: {0} worker-id bits is more than the 10 that leave room for a generation")]
pub struct LayoutError(pub u8);

/// A worker id that does not fit the layout's worker-id bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("worker id {worker} does not fit in {bits} SPI bits")]
pub struct WorkerIdError {
    pub worker: u16,
    pub bits: u8,
}

/// Every slot of the table holds an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("SPI table full")]
pub struct TableFull;

impl SpiLayout {
    /// Bits of slot index: up to 2^20 (about a million) SAs per worker.
    pub const SLOT_BITS: u32 = 20;
    /// Fewest generation bits a layout may leave.
    pub const MIN_GENERATION_BITS: u32 = 2;
    /// Most worker-id bits: 32 - 20 - 2, so 1024 workers.
    pub const MAX_WORKER_BITS: u8 = (32 - Self::SLOT_BITS - Self::MIN_GENERATION_BITS) as u8;
    /// 64 workers, 20 slot bits, 64 generations per slot.
    pub const DEFAULT: SpiLayout = SpiLayout { worker_bits: 6 };

    /// A layout with `worker_bits` bits of worker id (0 for a single worker).
    pub const fn new(worker_bits: u8) -> Result<Self, LayoutError> {
        if worker_bits > Self::MAX_WORKER_BITS {
            return Err(LayoutError(worker_bits));
        }
        Ok(SpiLayout { worker_bits })
    }

    /// Bits of worker id.
    pub const fn worker_bits(&self) -> u8 {
        self.worker_bits
    }

    /// Bits of generation: a slot's SPI repeats after 2^this reuses.
    pub const fn generation_bits(&self) -> u32 {
        32 - Self::SLOT_BITS - self.worker_bits as u32
    }

    /// How many worker ids the layout can name (`0..workers()`).
    pub const fn workers(&self) -> u32 {
        1 << self.worker_bits
    }

    /// Most SAs one worker's table can hold.
    pub const fn max_entries(&self) -> usize {
        ((1 << Self::SLOT_BITS) - self.first_slot()) as usize
    }

    /// The worker that owns `spi`: where the data plane hands a packet for it.
    pub fn worker_of(&self, spi: u32) -> u16 {
        // Shifting by 32 (no worker bits) yields None: everything is worker 0.
        spi.checked_shr(32 - u32::from(self.worker_bits))
            .map_or(0, |w| w as u16)
    }

    fn slot_of(&self, spi: u32) -> u32 {
        (spi >> self.generation_bits()) & ((1 << Self::SLOT_BITS) - 1)
    }

    fn generation_mask(&self) -> u32 {
        (1 << self.generation_bits()) - 1
    }

    /// Lowest slot whose SPIs are all >= 256, even for worker 0 (ceil(256 / 2^gen)).
    const fn first_slot(&self) -> u32 {
        let generation_bits = self.generation_bits();
        (256 + (1 << generation_bits) - 1) >> generation_bits
    }

    fn spi(&self, worker: u16, slot: u32, generation: u32) -> u32 {
        let worker = u32::from(worker)
            .checked_shl(32 - u32::from(self.worker_bits))
            .unwrap_or(0);
        worker | slot << self.generation_bits() | (generation & self.generation_mask())
    }
}

impl Default for SpiLayout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// End of the free list.
const NONE: u32 = u32::MAX;

enum Entry<T> {
    Occupied {
        spi: u32,
        value: T,
    },
    /// `generation` is what the slot's next SPI will carry; `next` links the free list.
    Vacant {
        generation: u32,
        next: u32,
    },
}

/// One worker's inbound SAs (or anything else keyed by our SPIs), a slab indexed by the
/// slot bits of the SPI.
///
/// Freed slots go on a FIFO free list and are reused oldest first, which puts as many
/// other allocations as possible between a slot's successive SPIs.
pub struct SpiTable<T> {
    layout: SpiLayout,
    worker: u16,
    /// Entry `i` is slot `i + layout.first_slot()`.
    entries: Vec<Entry<T>>,
    free_head: u32,
    free_tail: u32,
    len: usize,
}

impl<T> SpiTable<T> {
    /// An empty table for `worker`, with room reserved for `capacity_hint` entries.
    ///
    /// # Panics
    /// If `worker` does not fit in the layout's worker-id bits: a configuration error
    /// found at start-up. [`SpiTable::try_new`] reports it instead.
    pub fn new(worker: u16, layout: SpiLayout, capacity_hint: usize) -> Self {
        match Self::try_new(worker, layout, capacity_hint) {
            Ok(table) => table,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`SpiTable::new`] that returns an error for a worker id the layout cannot hold.
    pub fn try_new(
        worker: u16,
        layout: SpiLayout,
        capacity_hint: usize,
    ) -> Result<Self, WorkerIdError> {
        if u32::from(worker) >= layout.workers() {
            return Err(WorkerIdError {
                worker,
                bits: layout.worker_bits(),
            });
        }
        Ok(SpiTable {
            layout,
            worker,
            entries: Vec::with_capacity(capacity_hint.min(layout.max_entries())),
            free_head: NONE,
            free_tail: NONE,
            len: 0,
        })
    }

    /// The worker whose SPIs this table hands out.
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// The SPI layout.
    pub fn layout(&self) -> SpiLayout {
        self.layout
    }

    /// Allocate a fresh SPI owned by this worker and store `value` under it.
    ///
    /// `f` receives the SPI (an SA wants to know its own); if `f` panics the table is
    /// left as it was.
    pub fn insert_with(&mut self, f: impl FnOnce(u32) -> T) -> Result<u32, TableFull> {
        let (index, generation, reused) = match self.free_slot() {
            Some((index, generation, next)) => (index, generation, Some(next)),
            None if self.entries.len() < self.layout.max_entries() => (self.entries.len(), 0, None),
            None => return Err(TableFull),
        };
        let slot = index as u32 + self.layout.first_slot();
        let spi = self.layout.spi(self.worker, slot, generation);
        let entry = Entry::Occupied { spi, value: f(spi) };
        match reused {
            Some(next) => {
                self.free_head = next;
                if next == NONE {
                    self.free_tail = NONE;
                }
                if let Some(e) = self.entries.get_mut(index) {
                    *e = entry;
                }
            }
            None => self.entries.push(entry),
        }
        self.len += 1;
        Ok(spi)
    }

    /// The head of the free list: index, its next generation and the following link.
    fn free_slot(&self) -> Option<(usize, u32, u32)> {
        let index = self.free_head as usize;
        match self.entries.get(index) {
            Some(Entry::Vacant { generation, next }) => Some((index, *generation, *next)),
            // NONE, or (never) a corrupted link: fall back to a fresh slot.
            _ => None,
        }
    }

    fn index_of(&self, spi: u32) -> usize {
        // A slot below first_slot wraps to a huge index and misses like any other.
        self.layout
            .slot_of(spi)
            .wrapping_sub(self.layout.first_slot()) as usize
    }

    /// The value stored under `spi`, if `spi` is live in this table.
    pub fn get(&self, spi: u32) -> Option<&T> {
        match self.entries.get(self.index_of(spi)) {
            Some(Entry::Occupied { spi: s, value }) if *s == spi => Some(value),
            _ => None,
        }
    }

    /// Mutable access to the value stored under `spi`.
    pub fn get_mut(&mut self, spi: u32) -> Option<&mut T> {
        let index = self.index_of(spi);
        match self.entries.get_mut(index) {
            Some(Entry::Occupied { spi: s, value }) if *s == spi => Some(value),
            _ => None,
        }
    }

    /// Remove and return the value under `spi`; the slot's generation moves on, so
    /// `spi` misses from now on.
    pub fn remove(&mut self, spi: u32) -> Option<T> {
        let index = self.index_of(spi);
        let entry = self.entries.get_mut(index)?;
        if !matches!(entry, Entry::Occupied { spi: s, .. } if *s == spi) {
            return None;
        }
        let generation = (spi & self.layout.generation_mask()).wrapping_add(1);
        let old = mem::replace(
            entry,
            Entry::Vacant {
                generation,
                next: NONE,
            },
        );
        let index = index as u32;
        match self.entries.get_mut(self.free_tail as usize) {
            Some(Entry::Vacant { next, .. }) => *next = index,
            _ => self.free_head = index,
        }
        self.free_tail = index;
        self.len -= 1;
        match old {
            Entry::Occupied { value, .. } => Some(value),
            Entry::Vacant { .. } => None,
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries with their SPIs, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Occupied { spi, value } => Some((*spi, value)),
            Entry::Vacant { .. } => None,
        })
    }
}

impl<T> fmt::Debug for SpiTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiTable")
            .field("worker", &self.worker)
            .field("layout", &self.layout)
            .field("len", &self.len)
            .field("slots", &self.entries.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    fn all_layouts() -> impl Iterator<Item = SpiLayout> {
        (0..=SpiLayout::MAX_WORKER_BITS).map(|b| SpiLayout::new(b).unwrap())
    }

    #[test]
    fn layouts() {
        assert_eq!(SpiLayout::MAX_WORKER_BITS, 10);
        for bits in 11..=u8::MAX {
            assert_eq!(SpiLayout::new(bits), Err(LayoutError(bits)));
        }
        let d = SpiLayout::default();
        assert_eq!(d, SpiLayout::DEFAULT);
        assert_eq!(
            (d.worker_bits(), d.generation_bits(), d.workers()),
            (6, 6, 64)
        );
        assert_eq!(d.max_entries(), (1 << 20) - 4);
        let single = SpiLayout::new(0).unwrap();
        assert_eq!(
            (single.generation_bits(), single.max_entries()),
            (12, (1 << 20) - 1)
        );
        let wide = SpiLayout::new(10).unwrap();
        assert_eq!(
            (wide.generation_bits(), wide.max_entries()),
            (2, (1 << 20) - 64)
        );
    }

    #[test]
    fn worker_must_fit_layout() {
        let layout = SpiLayout::new(2).unwrap();
        assert!(SpiTable::<()>::try_new(3, layout, 0).is_ok());
        assert_eq!(
            SpiTable::<()>::try_new(4, layout, 0).unwrap_err(),
            WorkerIdError { worker: 4, bits: 2 }
        );
        assert!(SpiTable::<()>::try_new(1, SpiLayout::new(0).unwrap(), 0).is_err());
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn new_panics_on_worker_out_of_range() {
        SpiTable::<()>::new(64, SpiLayout::DEFAULT, 0);
    }

    #[test]
    fn spi_never_below_256() {
        for layout in all_layouts() {
            let first = layout.first_slot();
            for generation in 0..=layout.generation_mask() {
                assert!(
                    layout.spi(0, first, generation) >= 256,
                    "{layout:?} gen {generation}"
                );
            }
            // The lowest slot is needed: the one below it would go under 256.
            if first > 0 && layout.generation_bits() <= 8 {
                assert!(layout.spi(0, first - 1, 0) < 256, "{layout:?}");
            }
            let mut table = SpiTable::new(0, layout, 0);
            for i in 0..300 {
                let spi = table.insert_with(|_| i).unwrap();
                assert!(spi >= 256, "{layout:?}");
            }
            // Cycle worker 0's lowest slot through every generation.
            let mut table = SpiTable::new(0, layout, 1);
            let mut spi = table.insert_with(|_| ()).unwrap();
            assert_eq!(layout.slot_of(spi), first);
            for _ in 0..=layout.generation_mask() + 1 {
                table.remove(spi).unwrap();
                spi = table.insert_with(|_| ()).unwrap();
                assert!(spi >= 256, "{layout:?}");
            }
        }
    }

    #[test]
    fn garbage_spis_miss() {
        let mut table = SpiTable::new(0, SpiLayout::DEFAULT, 0);
        table.insert_with(|spi| spi).unwrap();
        for spi in (0..=300).chain([u32::MAX, u32::MAX - 1, 1 << 31, 0x00ff_ffff]) {
            if table.get(spi).is_none() {
                assert!(table.get_mut(spi).is_none());
                assert!(table.remove(spi).is_none());
            }
        }
        assert_eq!(table.len(), 1);
        let empty = SpiTable::<u8>::new(0, SpiLayout::DEFAULT, 0);
        assert!(empty.is_empty() && empty.get(0).is_none() && empty.get(256).is_none());
    }

    #[test]
    fn worker_of_round_trip() {
        for layout in all_layouts() {
            let max = (layout.workers() - 1) as u16;
            for worker in [0, 1, max / 2, max] {
                if u32::from(worker) >= layout.workers() {
                    continue;
                }
                let mut table = SpiTable::new(worker, layout, 0);
                for _ in 0..100 {
                    let spi = table.insert_with(|spi| spi).unwrap();
                    assert_eq!(layout.worker_of(spi), worker, "{layout:?}");
                    assert_eq!(table.get(spi), Some(&spi));
                }
            }
        }
    }

    #[test]
    fn hundred_thousand_entries() {
        const N: usize = 100_000;
        let layout = SpiLayout::DEFAULT;
        let mut table = SpiTable::new(37, layout, N);
        let spis: Vec<u32> = (0..N)
            .map(|i| table.insert_with(|spi| (i, spi)).unwrap())
            .collect();
        assert_eq!(table.len(), N);
        assert_eq!(spis.iter().collect::<HashSet<_>>().len(), N);
        for (i, &spi) in spis.iter().enumerate() {
            assert_eq!(table.get(spi), Some(&(i, spi)));
            assert_eq!(layout.worker_of(spi), 37);
            // The same slot and generation under another worker's id misses.
            let foreign = spi ^ (1 << 31);
            assert_eq!(layout.worker_of(foreign), 37 ^ 32);
            assert!(table.get(foreign).is_none());
        }
        // Remove every other entry.
        for (i, &spi) in spis.iter().enumerate().step_by(2) {
            assert_eq!(table.remove(spi), Some((i, spi)));
            assert_eq!(table.remove(spi), None);
        }
        assert_eq!(table.len(), N / 2);
        // Refill: the freed slots are reused, with new SPIs; the stale ones miss.
        let fresh: Vec<u32> = (0..N / 2)
            .map(|i| table.insert_with(|spi| (N + i, spi)).unwrap())
            .collect();
        assert_eq!(table.len(), N);
        assert_eq!(table.entries.len(), N, "no slot beyond the first N");
        for &spi in spis.iter().step_by(2) {
            assert!(table.get(spi).is_none());
            assert!(table.get_mut(spi).is_none());
        }
        for (i, &spi) in fresh.iter().enumerate() {
            assert_eq!(table.get(spi), Some(&(N + i, spi)));
        }
        for (i, &spi) in spis.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(table.get(spi), Some(&(i, spi)));
        }
        assert_eq!(table.iter().count(), N);
        assert!(table.iter().all(|(spi, v)| v.1 == spi));
    }

    #[test]
    fn free_list_is_fifo_and_bumps_generation() {
        let layout = SpiLayout::DEFAULT;
        let mut table = SpiTable::new(1, layout, 0);
        let a = table.insert_with(|_| 'a').unwrap();
        let b = table.insert_with(|_| 'b').unwrap();
        let c = table.insert_with(|_| 'c').unwrap();
        table.remove(b).unwrap();
        table.remove(a).unwrap();
        let d = table.insert_with(|_| 'd').unwrap();
        let e = table.insert_with(|_| 'e').unwrap();
        let f = table.insert_with(|_| 'f').unwrap();
        assert_eq!(layout.slot_of(d), layout.slot_of(b));
        assert_eq!(layout.slot_of(e), layout.slot_of(a));
        assert_eq!(layout.slot_of(f), layout.slot_of(c) + 1);
        assert_ne!(d, b);
        assert_ne!(e, a);
        assert_eq!([table.get(a), table.get(b)], [None, None]);
        assert_eq!(table.get(c), Some(&'c'));
        *table.get_mut(d).unwrap() = 'D';
        assert_eq!(table.get(d), Some(&'D'));
    }

    #[test]
    fn generation_wraps_after_its_bits() {
        let layout = SpiLayout::new(10).unwrap(); // 2 generation bits
        let mut table = SpiTable::new(5, layout, 1);
        let first = table.insert_with(|_| ()).unwrap();
        let mut spi = first;
        let mut seen = vec![first];
        for _ in 0..4 {
            table.remove(spi).unwrap();
            assert!(table.get(spi).is_none());
            spi = table.insert_with(|_| ()).unwrap();
            seen.push(spi);
        }
        assert_eq!(seen.iter().take(4).collect::<HashSet<_>>().len(), 4);
        assert_eq!(
            seen[4], first,
            "a slot's SPI repeats after 2^generation_bits reuses"
        );
    }

    #[test]
    fn full_table() {
        let layout = SpiLayout::DEFAULT;
        let mut table = SpiTable::new(63, layout, layout.max_entries());
        let mut last = 0;
        for _ in 0..layout.max_entries() {
            last = table.insert_with(|_| ()).unwrap();
        }
        assert_eq!(table.insert_with(|_| ()), Err(TableFull));
        assert_eq!(table.len(), layout.max_entries());
        assert_eq!(layout.slot_of(last), (1 << 20) - 1);
        table.remove(last).unwrap();
        let again = table.insert_with(|_| ()).unwrap();
        assert_eq!(layout.slot_of(again), layout.slot_of(last));
        assert_eq!(table.insert_with(|_| ()), Err(TableFull));
    }

    #[test]
    fn panicking_constructor_leaves_table_intact() {
        let mut table = SpiTable::new(0, SpiLayout::DEFAULT, 0);
        let a = table.insert_with(|_| 1).unwrap();
        table.remove(a).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table.insert_with(|_| -> i32 { panic!("SA setup failed") })
        }));
        assert!(r.is_err());
        assert!(table.is_empty());
        let b = table.insert_with(|_| 2).unwrap();
        assert_eq!(layout_slot(b), layout_slot(a));
        assert_eq!(table.get(b), Some(&2));
    }

    fn layout_slot(spi: u32) -> u32 {
        SpiLayout::DEFAULT.slot_of(spi)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        /// Remove an SPI handed out earlier (live or stale).
        Remove(prop::sample::Index),
        Get(prop::sample::Index),
        Mutate(prop::sample::Index, u16),
        /// An arbitrary SPI, mostly not ours.
        Probe(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u16>().prop_map(Op::Insert),
            3 => any::<prop::sample::Index>().prop_map(Op::Remove),
            3 => any::<prop::sample::Index>().prop_map(Op::Get),
            1 => (any::<prop::sample::Index>(), any::<u16>()).prop_map(|(i, v)| Op::Mutate(i, v)),
            1 => any::<u32>().prop_map(Op::Probe),
        ]
    }

    proptest! {
        #[test]
        fn matches_hashmap_model(
            worker_bits in 0..=SpiLayout::MAX_WORKER_BITS,
            worker_seed in any::<u16>(),
            ops in prop::collection::vec(op(), 1..500),
        ) {
            let layout = SpiLayout::new(worker_bits).unwrap();
            let worker = (u32::from(worker_seed) % layout.workers()) as u16;
            let mut table = SpiTable::new(worker, layout, 0);
            let mut model: HashMap<u32, u16> = HashMap::new();
            let mut issued: Vec<u32> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(v) => {
                        let mut seen = None;
                        let spi = table.insert_with(|s| { seen = Some(s); v }).unwrap();
                        prop_assert_eq!(seen, Some(spi));
                        prop_assert!(spi >= 256);
                        prop_assert_eq!(layout.worker_of(spi), worker);
                        prop_assert!(model.insert(spi, v).is_none(), "live SPI reissued");
                        issued.push(spi);
                    }
                    Op::Remove(i) if !issued.is_empty() => {
                        let spi = issued[i.index(issued.len())];
                        prop_assert_eq!(table.remove(spi), model.remove(&spi));
                    }
                    Op::Get(i) if !issued.is_empty() => {
                        let spi = issued[i.index(issued.len())];
                        prop_assert_eq!(table.get(spi), model.get(&spi));
                    }
                    Op::Mutate(i, v) if !issued.is_empty() => {
                        let spi = issued[i.index(issued.len())];
                        if let Some(x) = table.get_mut(spi) {
                            *x = v;
                        }
                        if let Some(x) = model.get_mut(&spi) {
                            *x = v;
                        }
                    }
                    Op::Probe(spi) => {
                        prop_assert_eq!(table.get(spi), model.get(&spi));
                    }
                    _ => {}
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.is_empty(), model.is_empty());
            }
            let listed: HashMap<u32, u16> = table.iter().map(|(s, v)| (s, *v)).collect();
            prop_assert_eq!(listed, model);
        }
    }
}
