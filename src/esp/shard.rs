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
//!
//! Who chooses the SPI: the control thread, with one [`SpiAllocator`] per worker
//! ([`SpiAllocators`]), before any SA exists (IKEv1 puts it in Quick Mode message 2 and
//! derives KEYMAT from it); the worker then stores the finished SA with
//! [`SpiTable::insert_at`], with no reply to wait for. [`SpiTable::insert_with`] does
//! both in one table, for tests and tools.

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

    /// Index of the SPI's slot in a worker's slab (slots below `first_slot` wrap to a
    /// huge index and miss like any other).
    fn index_of(&self, spi: u32) -> usize {
        self.slot_of(spi).wrapping_sub(self.first_slot()) as usize
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
/// `AllocSlot::next` of a slot whose SPI is handed out.
const ALLOCATED: u32 = u32::MAX - 1;

/// A worker id, SPI or slot that the table or allocator cannot hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum InsertError {
    /// The SPI names another worker.
    #[error("SPI {0:#010x} belongs to another worker")]
    WrongWorker(u32),
    /// The SPI's slot is below the first usable one (0 and 1..=255 live there).
    #[error("SPI {0:#010x} is in a reserved slot")]
    Reserved(u32),
    /// An SA already lives in the slot.
    #[error("SPI {0:#010x}: its slot is occupied")]
    Occupied(u32),
    /// The SPI is the one just removed from the slot (a stale install).
    #[error("SPI {0:#010x} was just removed from its slot")]
    Stale(u32),
}

#[derive(Clone, Copy, Debug)]
struct AllocSlot {
    /// Generation of the slot's current (allocated) or next (free) SPI.
    generation: u32,
    /// [`ALLOCATED`], or the free-list link ([`NONE`] at the tail).
    next: u32,
}

/// Hands out one worker's inbound SPIs, in the [`SpiLayout`] the worker's
/// [`SpiTable`] reads: worker id, slot and generation. Lives apart from the table so
/// that the control thread can choose the SPI (IKEv1 KEYMAT depends on it, and it goes
/// in Quick Mode message 2 before any SA exists) and send the finished SA to the worker
/// with no reply to wait for ([`SpiTable::insert_at`]).
///
/// Freed slots go on a FIFO free list and are reused oldest first, and each reuse
/// bumps the slot's generation, so a deleted SA's SPI misses for as long as possible.
///
/// Reuse is safe with the worker's command queue: the control thread sends
/// `RemoveSaPair { old }`, then [`SpiAllocator::release`]s `old`; a later
/// [`SpiAllocator::allocate`] may return the same slot with the next generation, and
/// its `InstallSaPair` is queued behind the removal. Commands on one worker's queue are
/// applied in order, so the worker has always freed the slot before it is asked to
/// fill it again. Release an SPI only after its removal is queued (or if it was never
/// sent to the worker).
#[derive(Clone)]
pub struct SpiAllocator {
    layout: SpiLayout,
    worker: u16,
    /// Entry `i` is slot `i + layout.first_slot()`.
    slots: Vec<AllocSlot>,
    free_head: u32,
    free_tail: u32,
    len: usize,
}

impl SpiAllocator {
    /// An allocator of `worker`'s SPIs.
    pub fn new(worker: u16, layout: SpiLayout) -> Result<Self, WorkerIdError> {
        check_worker(worker, layout)?;
        Ok(SpiAllocator {
            layout,
            worker,
            slots: Vec::new(),
            free_head: NONE,
            free_tail: NONE,
            len: 0,
        })
    }

    /// The worker whose SPIs this allocator hands out.
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// The SPI layout.
    pub fn layout(&self) -> SpiLayout {
        self.layout
    }

    /// SPIs handed out and not released.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no SPI is handed out.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What [`SpiAllocator::allocate`] would return, without taking it.
    fn peek(&self) -> Result<u32, TableFull> {
        let (index, generation) = match self.slots.get(self.free_head as usize) {
            Some(s) if s.next != ALLOCATED => (self.free_head as usize, s.generation),
            // NONE, or (never) a corrupted link: a fresh slot.
            _ if self.slots.len() < self.layout.max_entries() => (self.slots.len(), 0),
            _ => return Err(TableFull),
        };
        let slot = index as u32 + self.layout.first_slot();
        Ok(self.layout.spi(self.worker, slot, generation))
    }

    /// A fresh SPI of this worker: never 0 or 1..=255, never one that is handed out.
    pub fn allocate(&mut self) -> Result<u32, TableFull> {
        let spi = self.peek()?;
        let index = self.index_of(spi);
        match self.slots.get_mut(index) {
            Some(s) => {
                let next = s.next;
                s.next = ALLOCATED;
                self.free_head = next;
                if next == NONE {
                    self.free_tail = NONE;
                }
            }
            None => self.slots.push(AllocSlot {
                generation: 0,
                next: ALLOCATED,
            }),
        }
        self.len += 1;
        Ok(spi)
    }

    /// Gives `spi` back: its slot's next SPI carries the next generation. Returns
    /// false (and changes nothing) if `spi` is not handed out by this allocator: another
    /// worker's, stale, released twice or garbage.
    pub fn release(&mut self, spi: u32) -> bool {
        if self.layout.worker_of(spi) != self.worker {
            return false;
        }
        let index = self.index_of(spi);
        let mask = self.layout.generation_mask();
        match self.slots.get_mut(index) {
            Some(s) if s.next == ALLOCATED && s.generation == spi & mask => {
                s.generation = s.generation.wrapping_add(1) & mask;
                s.next = NONE;
            }
            _ => return false,
        }
        let index = index as u32;
        match self.slots.get_mut(self.free_tail as usize) {
            Some(tail) if tail.next != ALLOCATED => tail.next = index,
            _ => self.free_head = index,
        }
        self.free_tail = index;
        self.len -= 1;
        true
    }

    /// Whether `spi` is handed out (allocated and not released).
    pub fn is_allocated(&self, spi: u32) -> bool {
        self.layout.worker_of(spi) == self.worker
            && self.slots.get(self.index_of(spi)).is_some_and(|s| {
                s.next == ALLOCATED && s.generation == spi & self.layout.generation_mask()
            })
    }

    fn index_of(&self, spi: u32) -> usize {
        self.layout.index_of(spi)
    }
}

impl fmt::Debug for SpiAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiAllocator")
            .field("worker", &self.worker)
            .field("layout", &self.layout)
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// One [`SpiAllocator`] per worker, for the control thread: it allocates an inbound
/// SPI on the worker that will own the SA, and releases it after `RemoveSaPair` is
/// queued (the worker is read from the SPI).
#[derive(Clone, Debug)]
pub struct SpiAllocators {
    layout: SpiLayout,
    workers: Vec<SpiAllocator>,
}

impl SpiAllocators {
    /// Allocators for workers `0..workers` in `layout` (the one the data plane's
    /// tables use: [`crate::dataplane::runtime::spi_layout`]).
    pub fn new(layout: SpiLayout, workers: u16) -> Result<Self, WorkerIdError> {
        let workers = (0..workers)
            .map(|w| SpiAllocator::new(w, layout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SpiAllocators { layout, workers })
    }

    /// The layout.
    pub fn layout(&self) -> SpiLayout {
        self.layout
    }

    /// A fresh SPI owned by `worker`. [`TableFull`] also for a worker this set does
    /// not have.
    pub fn allocate(&mut self, worker: u16) -> Result<u32, TableFull> {
        self.workers
            .get_mut(usize::from(worker))
            .ok_or(TableFull)?
            .allocate()
    }

    /// Gives `spi` back to its worker's allocator; false if it was not handed out.
    pub fn release(&mut self, spi: u32) -> bool {
        let w = self.layout.worker_of(spi);
        self.workers
            .get_mut(usize::from(w))
            .is_some_and(|a| a.release(spi))
    }

    /// The worker that owns `spi`.
    pub fn worker_of(&self, spi: u32) -> u16 {
        self.layout.worker_of(spi)
    }

    /// One worker's allocator.
    pub fn worker(&self, worker: u16) -> Option<&SpiAllocator> {
        self.workers.get(usize::from(worker))
    }
}

fn check_worker(worker: u16, layout: SpiLayout) -> Result<(), WorkerIdError> {
    if u32::from(worker) >= layout.workers() {
        return Err(WorkerIdError {
            worker,
            bits: layout.worker_bits(),
        });
    }
    Ok(())
}

enum Entry<T> {
    Occupied {
        spi: u32,
        value: T,
    },
    /// `last` is the SPI that lived here last (0: none), refused by `insert_at`.
    Vacant {
        last: u32,
    },
}

/// One worker's inbound SAs (or anything else keyed by our SPIs), a slab indexed by the
/// slot bits of the SPI.
///
/// Two ways to fill it; use one per table:
/// - [`SpiTable::insert_at`] stores under an SPI chosen elsewhere (the control
///   thread's [`SpiAllocator`]); the gateway's workers do this.
/// - [`SpiTable::insert_with`] allocates the SPI itself from an allocator of its own
///   (tests, benches, the load generator). [`SpiTable::remove`] gives SPIs back to it.
///
/// Mixing them is safe (nothing panics, no live entry is overwritten) but slots taken
/// by `insert_at` are lost to `insert_with`'s allocator.
pub struct SpiTable<T> {
    layout: SpiLayout,
    worker: u16,
    /// Entry `i` is slot `i + layout.first_slot()`.
    entries: Vec<Entry<T>>,
    len: usize,
    own: SpiAllocator,
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
        let own = SpiAllocator::new(worker, layout)?;
        Ok(SpiTable {
            layout,
            worker,
            entries: Vec::with_capacity(capacity_hint.min(layout.max_entries())),
            len: 0,
            own,
        })
    }

    /// The worker whose SPIs this table holds.
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// The SPI layout.
    pub fn layout(&self) -> SpiLayout {
        self.layout
    }

    /// Stores `value` under `spi`, an SPI of this worker allocated elsewhere (the
    /// control thread's [`SpiAllocator`]). Refuses another worker's SPI, a reserved
    /// slot, an occupied slot, and the SPI that was last removed from the slot (a
    /// stale install: the allocator moved the generation on when it was released).
    ///
    /// Grows the slab up to the slot (on the command path, never per packet).
    pub fn insert_at(&mut self, spi: u32, value: T) -> Result<(), InsertError> {
        if self.layout.worker_of(spi) != self.worker {
            return Err(InsertError::WrongWorker(spi));
        }
        let index = self.index_of(spi);
        if index >= self.layout.max_entries() {
            return Err(InsertError::Reserved(spi));
        }
        if index >= self.entries.len() {
            self.entries
                .resize_with(index + 1, || Entry::Vacant { last: 0 });
        }
        let Some(entry) = self.entries.get_mut(index) else {
            return Err(InsertError::Reserved(spi));
        };
        match entry {
            Entry::Occupied { .. } => return Err(InsertError::Occupied(spi)),
            Entry::Vacant { last } if *last == spi => return Err(InsertError::Stale(spi)),
            Entry::Vacant { .. } => *entry = Entry::Occupied { spi, value },
        }
        self.len += 1;
        Ok(())
    }

    /// Allocates a fresh SPI owned by this worker (from the table's own allocator) and
    /// stores `value` under it.
    ///
    /// `f` receives the SPI (an SA wants to know its own); if `f` panics the table is
    /// left as it was.
    pub fn insert_with(&mut self, f: impl FnOnce(u32) -> T) -> Result<u32, TableFull> {
        // A slot filled by insert_at (mixed use) is skipped: kept allocated, so the own
        // allocator never offers it again.
        let spi = loop {
            let spi = self.own.peek()?;
            match self.entries.get(self.index_of(spi)) {
                Some(Entry::Occupied { .. }) => {
                    self.own.allocate()?;
                }
                _ => break spi,
            }
        };
        let value = f(spi);
        let taken = self.own.allocate()?;
        debug_assert_eq!(taken, spi);
        match self.insert_at(spi, value) {
            Ok(()) => Ok(spi),
            // Not reachable: the slot was checked free and the allocator's generation
            // moved past the last tenant. Reported as full rather than panicking.
            Err(_) => Err(TableFull),
        }
    }

    fn index_of(&self, spi: u32) -> usize {
        self.layout.index_of(spi)
    }

    /// The value stored under `spi`, if `spi` is live in this table.
    #[inline]
    pub fn get(&self, spi: u32) -> Option<&T> {
        match self.entries.get(self.index_of(spi)) {
            Some(Entry::Occupied { spi: s, value }) if *s == spi => Some(value),
            _ => None,
        }
    }

    /// Mutable access to the value stored under `spi`.
    #[inline]
    pub fn get_mut(&mut self, spi: u32) -> Option<&mut T> {
        let index = self.index_of(spi);
        match self.entries.get_mut(index) {
            Some(Entry::Occupied { spi: s, value }) if *s == spi => Some(value),
            _ => None,
        }
    }

    /// Remove and return the value under `spi`; `spi` misses from now on. An SPI from
    /// the table's own allocator ([`SpiTable::insert_with`]) goes back to it, with the
    /// slot's generation moved on.
    pub fn remove(&mut self, spi: u32) -> Option<T> {
        let index = self.index_of(spi);
        let entry = self.entries.get_mut(index)?;
        if !matches!(entry, Entry::Occupied { spi: s, .. } if *s == spi) {
            return None;
        }
        let old = mem::replace(entry, Entry::Vacant { last: spi });
        self.len -= 1;
        self.own.release(spi);
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

#[cfg(test)]
mod allocator_tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    #[test]
    fn allocate_release_reuse_fifo_with_next_generation() {
        let layout = SpiLayout::DEFAULT;
        let mut a = SpiAllocator::new(3, layout).unwrap();
        let x = a.allocate().unwrap();
        let y = a.allocate().unwrap();
        let z = a.allocate().unwrap();
        assert_eq!(a.len(), 3);
        for s in [x, y, z] {
            assert_eq!(layout.worker_of(s), 3);
            assert!(a.is_allocated(s));
        }
        assert!(a.release(y));
        assert!(!a.release(y), "released twice");
        assert!(a.release(x));
        assert!(!a.is_allocated(x));
        let y2 = a.allocate().unwrap();
        let x2 = a.allocate().unwrap();
        let w = a.allocate().unwrap();
        assert_eq!(layout.slot_of(y2), layout.slot_of(y), "oldest freed first");
        assert_eq!(layout.slot_of(x2), layout.slot_of(x));
        assert_eq!(layout.slot_of(w), layout.slot_of(z) + 1);
        assert_eq!(
            y2 & layout.generation_mask(),
            (y + 1) & layout.generation_mask()
        );
        assert_ne!(x2, x);
        // Stale, foreign and garbage SPIs change nothing.
        assert!(!a.release(x));
        assert!(!a.release(x2 ^ (1 << 31)));
        for g in [0, 1, 255, u32::MAX] {
            assert!(!a.release(g));
        }
        assert_eq!(a.len(), 4);
        assert!(SpiAllocator::new(64, layout).is_err());
    }

    #[test]
    fn allocator_fills_and_refills_a_worker() {
        let layout = SpiLayout::new(10).unwrap();
        let mut a = SpiAllocator::new(1023, layout).unwrap();
        let mut spis = Vec::new();
        while let Ok(s) = a.allocate() {
            spis.push(s);
        }
        assert_eq!(spis.len(), layout.max_entries());
        assert_eq!(a.allocate(), Err(TableFull));
        assert!(a.release(spis[7]));
        let again = a.allocate().unwrap();
        assert_eq!(layout.slot_of(again), layout.slot_of(spis[7]));
        assert_eq!(a.allocate(), Err(TableFull));
    }

    #[test]
    fn worker_table_takes_what_the_control_thread_allocated() {
        let layout = SpiLayout::DEFAULT;
        let mut alloc = SpiAllocators::new(layout, 4).unwrap();
        let mut tables: Vec<SpiTable<u32>> = (0..4).map(|w| SpiTable::new(w, layout, 0)).collect();
        let spis: Vec<u32> = (0..40u16).map(|i| alloc.allocate(i % 4).unwrap()).collect();
        for &spi in &spis {
            let w = usize::from(alloc.worker_of(spi));
            tables[w].insert_at(spi, spi).unwrap();
            assert_eq!(tables[w].get(spi), Some(&spi));
            assert_eq!(tables[w].insert_at(spi, 0), Err(InsertError::Occupied(spi)));
            let other = (w + 1) % 4;
            assert_eq!(
                tables[other].insert_at(spi, 0),
                Err(InsertError::WrongWorker(spi))
            );
        }
        assert_eq!(alloc.allocate(4), Err(TableFull), "no such worker");
        // Remove old, release, allocate again: the reused slot has a new generation
        // and the worker accepts it once the old SA is gone (FIFO queue order).
        let old = spis[5];
        let w = usize::from(alloc.worker_of(old));
        assert_eq!(tables[w].remove(old), Some(old));
        assert!(alloc.release(old));
        let new = alloc.allocate(w as u16).unwrap();
        assert_eq!(layout.slot_of(new), layout.slot_of(old));
        assert_ne!(new, old);
        assert_eq!(tables[w].insert_at(old, 1), Err(InsertError::Stale(old)));
        tables[w].insert_at(new, 2).unwrap();
        assert!(tables[w].get(old).is_none());
        assert_eq!(tables[w].get(new), Some(&2));
        // Reserved slots (SPIs 0..=255) and slots past the end are refused.
        let mut t0 = SpiTable::<u8>::new(0, layout, 0);
        for spi in [0u32, 1, 255] {
            assert_eq!(t0.insert_at(spi, 0), Err(InsertError::Reserved(spi)));
        }
        assert!(t0.is_empty());
    }

    #[test]
    fn mixed_use_never_overwrites() {
        let layout = SpiLayout::DEFAULT;
        let mut ext = SpiAllocator::new(0, layout).unwrap();
        let mut t = SpiTable::new(0, layout, 0);
        let a = ext.allocate().unwrap();
        t.insert_at(a, 'a').unwrap();
        let b = t.insert_with(|_| 'b').unwrap();
        assert_ne!(layout.slot_of(a), layout.slot_of(b));
        assert_eq!((t.get(a), t.get(b)), (Some(&'a'), Some(&'b')));
        assert_eq!(t.len(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u8),
        /// Install an allocated, not yet installed SPI.
        Install(prop::sample::Index),
        /// Remove (from the table) and release an SPI handed out earlier.
        RemoveRelease(prop::sample::Index),
        /// Release without install (Quick Mode failed before the SA existed).
        ReleaseOnly(prop::sample::Index),
        Probe(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Allocate),
            3 => any::<prop::sample::Index>().prop_map(Op::Install),
            3 => any::<prop::sample::Index>().prop_map(Op::RemoveRelease),
            1 => any::<prop::sample::Index>().prop_map(Op::ReleaseOnly),
            1 => any::<u32>().prop_map(Op::Probe),
        ]
    }

    proptest! {
        #[test]
        fn allocators_and_tables_match_a_model(
            worker_bits in 0..=3u8,
            ops in prop::collection::vec(op(), 1..400),
        ) {
            let layout = SpiLayout::new(worker_bits).unwrap();
            let workers = layout.workers() as u16;
            let mut alloc = SpiAllocators::new(layout, workers).unwrap();
            let mut tables: Vec<SpiTable<u32>> =
                (0..workers).map(|w| SpiTable::new(w, layout, 0)).collect();
            let mut live: HashSet<u32> = HashSet::new();
            let mut installed: HashMap<u32, u32> = HashMap::new();
            let mut issued: Vec<u32> = Vec::new();
            let mut last_removed: HashMap<(u16, u32), u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Allocate(w) => {
                        let w = u16::from(w) % workers;
                        let spi = alloc.allocate(w).unwrap();
                        prop_assert!(spi >= 256);
                        prop_assert_eq!(layout.worker_of(spi), w);
                        prop_assert!(live.insert(spi), "live SPI handed out twice");
                        issued.push(spi);
                    }
                    Op::Install(i) if !issued.is_empty() => {
                        let spi = issued[i.index(issued.len())];
                        let t = &mut tables[usize::from(layout.worker_of(spi))];
                        let slot = layout.slot_of(spi);
                        let occupied = installed.contains_key(&spi);
                        if occupied {
                            prop_assert_eq!(t.insert_at(spi, 0), Err(InsertError::Occupied(spi)));
                        } else if live.contains(&spi) {
                            prop_assert_eq!(t.insert_at(spi, spi ^ 1), Ok(()));
                            installed.insert(spi, spi ^ 1);
                        } else if last_removed.get(&(layout.worker_of(spi), slot)) == Some(&spi) {
                            // The control thread never does this; the table refuses it
                            // (stale, or the slot already holds its next tenant).
                            let r = t.insert_at(spi, 0);
                            prop_assert!(
                                matches!(r, Err(InsertError::Stale(_) | InsertError::Occupied(_))),
                                "{:?}", r
                            );
                        }
                    }
                    Op::RemoveRelease(i) if !issued.is_empty() => {
                        let spi = issued[i.index(issued.len())];
                        let t = &mut tables[usize::from(layout.worker_of(spi))];
                        let was = installed.remove(&spi);
                        if was.is_some() {
                            last_removed.insert((layout.worker_of(spi), layout.slot_of(spi)), spi);
                        }
                        prop_assert_eq!(t.remove(spi), was);
                        prop_assert_eq!(alloc.release(spi), live.remove(&spi));
                    }
                    Op::ReleaseOnly(i) if !issued.is_empty() => {
                        let spi = issued[i.index(issued.len())];
                        if !installed.contains_key(&spi) {
                            prop_assert_eq!(alloc.release(spi), live.remove(&spi));
                        }
                    }
                    Op::Probe(spi) => {
                        let t = &tables[usize::from(layout.worker_of(spi))];
                        prop_assert_eq!(t.get(spi), installed.get(&spi));
                    }
                    _ => {}
                }
                let total: usize = (0..workers)
                    .map(|w| alloc.worker(w).map_or(0, |a| a.len()))
                    .sum();
                prop_assert_eq!(total, live.len());
                let in_tables: usize = tables.iter().map(|t| t.len()).sum();
                prop_assert_eq!(in_tables, installed.len());
            }
        }
    }
}
