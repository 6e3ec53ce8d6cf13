//! The pool of inner IPv4 addresses handed to PPP peers (IPCP IP-Address).
//!
//! A pool is a range `a.b.c.d-e.f.g.h` (both ends included) or a CIDR `a.b.c.d/n`
//! (network and broadcast addresses left out for prefixes up to /30). Addresses that
//! belong to users with a static address are reserved: [`Pool::allocate`] never hands
//! them out, [`Pool::allocate_specific`] does. An address is never held twice; a
//! released address goes to the back of the line (allocation moves round the range),
//! so a departing client's address is not reused at once while stale routes and ARP
//! entries still point at it.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::Attributes;

/// The largest pool (a /12): the in-use map takes one bit per address.
pub const MAX_POOL_SIZE: u32 = 1 << 20;

/// Why a pool could not be built, or an address not be taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The text is neither `a.b.c.d-e.f.g.h` nor `a.b.c.d/n`.
    #[error("pool {text:?}: expected a range \"a.b.c.d-e.f.g.h\" or a CIDR \"a.b.c.d/n\"")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// One side is not an IPv4 address.
    #[error("pool {text:?}: {part:?} is not an IPv4 address")]
    BadAddress {
        /// The text given.
        text: String,
        /// The offending part.
        part: String,
    },
    /// The prefix length is not 0..=32.
    #[error("pool {text:?}: prefix length {part:?} is not a number from 0 to 32")]
    BadPrefix {
        /// The text given.
        text: String,
        /// The offending part.
        part: String,
    },
    /// The range ends before it starts.
    #[error("pool range {start}-{end}: start is after end")]
    Reversed {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
    },
    /// More addresses than [`MAX_POOL_SIZE`].
    #[error("pool {start}-{end}: {size} addresses, more than the {max} supported")]
    TooLarge {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
        /// Addresses in the range.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// Every address is held or reserved.
    #[error("address pool exhausted")]
    Exhausted,
    /// The address is held already.
    #[error("address {0} is already in use")]
    InUse(Ipv4Addr),
    /// The address cannot be given to a peer (0.0.0.0, broadcast, multicast, loopback).
    #[error("address {0} cannot be assigned to a peer")]
    Unusable(Ipv4Addr),
}

/// An IPv4 address pool. See the module docs.
#[derive(Clone, Debug)]
pub struct Pool {
    start: u32,
    size: u32,
    in_use: Vec<u64>,
    reserved: Vec<u64>,
    /// Held addresses outside the range (static user addresses elsewhere).
    outside: HashSet<Ipv4Addr>,
    cursor: u32,
    held: usize,
    reserved_count: usize,
}

fn bit(map: &[u64], index: u32) -> bool {
    map.get((index / 64) as usize)
        .is_some_and(|word| word & (1 << (index % 64)) != 0)
}

fn set_bit(map: &mut [u64], index: u32, value: bool) {
    if let Some(word) = map.get_mut((index / 64) as usize) {
        if value {
            *word |= 1 << (index % 64);
        } else {
            *word &= !(1 << (index % 64));
        }
    }
}

fn usable(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

impl Pool {
    /// A pool of the addresses `start..=end`.
    pub fn new(start: Ipv4Addr, end: Ipv4Addr) -> Result<Pool, PoolError> {
        let (first, last) = (u32::from(start), u32::from(end));
        if first > last {
            return Err(PoolError::Reversed { start, end });
        }
        let size = u64::from(last - first) + 1;
        if size > u64::from(MAX_POOL_SIZE) {
            return Err(PoolError::TooLarge {
                start,
                end,
                size,
                max: MAX_POOL_SIZE,
            });
        }
        let size = size as u32;
        let words = size.div_ceil(64) as usize;
        let mut pool = Pool {
            start: first,
            size,
            in_use: vec![0; words],
            reserved: vec![0; words],
            outside: HashSet::new(),
            cursor: 0,
            held: 0,
            reserved_count: 0,
        };
        // Never hand out what cannot be a host address.
        for index in 0..size {
            if !usable(Ipv4Addr::from(first + index)) {
                pool.reserve(Ipv4Addr::from(first + index));
            }
        }
        Ok(pool)
    }

    /// Parses `a.b.c.d-e.f.g.h` or `a.b.c.d/n` (spaces around the parts allowed).
    pub fn parse(text: &str) -> Result<Pool, PoolError> {
        let address = |part: &str| {
            Ipv4Addr::from_str(part.trim()).map_err(|_| PoolError::BadAddress {
                text: text.to_string(),
                part: part.trim().to_string(),
            })
        };
        if let Some((start, end)) = text.split_once('-') {
            return Pool::new(address(start)?, address(end)?);
        }
        if let Some((base, prefix)) = text.split_once('/') {
            let base = address(base)?;
            let prefix: u32 = match prefix.trim().parse() {
                Ok(n) if n <= 32 => n,
                _ => {
                    return Err(PoolError::BadPrefix {
                        text: text.to_string(),
                        part: prefix.trim().to_string(),
                    });
                }
            };
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            let network = u32::from(base) & mask;
            let broadcast = network | !mask;
            let (first, last) = if prefix <= 30 {
                (network + 1, broadcast - 1)
            } else {
                (network, broadcast)
            };
            return Pool::new(Ipv4Addr::from(first), Ipv4Addr::from(last));
        }
        Err(PoolError::Syntax {
            text: text.to_string(),
        })
    }

    fn index(&self, addr: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(addr).checked_sub(self.start)?;
        (offset < self.size).then_some(offset)
    }

    /// Whether `addr` lies in the pool's range.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.index(addr).is_some()
    }

    /// Addresses in the range.
    pub fn capacity(&self) -> usize {
        self.size as usize
    }

    /// Addresses held (including held static addresses outside the range).
    pub fn in_use(&self) -> usize {
        self.held + self.outside.len()
    }

    /// Addresses [`Pool::allocate`] could still hand out.
    pub fn available(&self) -> usize {
        let in_range_held_unreserved = (0..self.in_use.len())
            .map(|w| (self.in_use[w] & !self.reserved[w]).count_ones() as usize)
            .sum::<usize>();
        self.capacity() - self.reserved_count - in_range_held_unreserved
    }

    /// Keeps `addr` out of dynamic allocation (a user's static address). Addresses
    /// outside the range need no reservation. Returns whether it was newly reserved.
    pub fn reserve(&mut self, addr: Ipv4Addr) -> bool {
        match self.index(addr) {
            Some(index) if !bit(&self.reserved, index) => {
                set_bit(&mut self.reserved, index, true);
                self.reserved_count += 1;
                true
            }
            _ => false,
        }
    }

    /// The next free, unreserved address, moving round the range.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let mut index = self.cursor % self.size.max(1);
        for _ in 0..self.size {
            let word = (index / 64) as usize;
            let taken = self.in_use[word] | self.reserved[word];
            if taken == u64::MAX && index.is_multiple_of(64) && index + 64 <= self.size {
                index = (index + 64) % self.size;
                continue;
            }
            if !bit(&self.in_use, index) && !bit(&self.reserved, index) {
                set_bit(&mut self.in_use, index, true);
                self.held += 1;
                self.cursor = (index + 1) % self.size;
                return Some(Ipv4Addr::from(self.start + index));
            }
            index = (index + 1) % self.size;
        }
        None
    }

    /// Takes a given address (a static user address or a RADIUS Framed-IP-Address),
    /// reserved or not, inside the range or not.
    pub fn allocate_specific(&mut self, addr: Ipv4Addr) -> Result<(), PoolError> {
        if !usable(addr) {
            return Err(PoolError::Unusable(addr));
        }
        match self.index(addr) {
            Some(index) if bit(&self.in_use, index) => Err(PoolError::InUse(addr)),
            Some(index) => {
                set_bit(&mut self.in_use, index, true);
                self.held += 1;
                Ok(())
            }
            None if self.outside.insert(addr) => Ok(()),
            None => Err(PoolError::InUse(addr)),
        }
    }

    /// Gives an address back; returns whether it was held.
    pub fn release(&mut self, addr: Ipv4Addr) -> bool {
        match self.index(addr) {
            Some(index) if bit(&self.in_use, index) => {
                set_bit(&mut self.in_use, index, false);
                self.held -= 1;
                true
            }
            Some(_) => false,
            None => self.outside.remove(&addr),
        }
    }

    /// Whether `addr` is held.
    pub fn is_held(&self, addr: Ipv4Addr) -> bool {
        match self.index(addr) {
            Some(index) => bit(&self.in_use, index),
            None => self.outside.contains(&addr),
        }
    }

    /// Settles the address of an accepted user: takes `attributes.framed_address` if
    /// the backend named one, else allocates one and writes it there. Call this
    /// between [`crate::aaa::AuthBackend::poll`] and the link's auth_result;
    /// on error, hand the link a Reject instead, with the error as the reason.
    pub fn assign(&mut self, attributes: &mut Attributes) -> Result<Ipv4Addr, PoolError> {
        match attributes.framed_address {
            Some(addr) => self.allocate_specific(addr).map(|()| addr),
            None => {
                let addr = self.allocate().ok_or(PoolError::Exhausted)?;
                attributes.framed_address = Some(addr);
                Ok(addr)
            }
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.start + (self.size - 1);
        write!(f, "{}-{}", Ipv4Addr::from(self.start), Ipv4Addr::from(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn range_allocates_each_address_once_then_exhausts() {
        let mut pool = Pool::parse("10.99.0.10-10.99.0.13").unwrap();
        assert_eq!(pool.capacity(), 4);
        let got: Vec<_> = (0..4).map(|_| pool.allocate().unwrap()).collect();
        assert_eq!(
            got,
            [
                ip("10.99.0.10"),
                ip("10.99.0.11"),
                ip("10.99.0.12"),
                ip("10.99.0.13")
            ]
        );
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.in_use(), 4);
        assert_eq!(
            pool.assign(&mut Attributes::default()),
            Err(PoolError::Exhausted)
        );
        assert!(pool.release(ip("10.99.0.11")));
        assert!(!pool.release(ip("10.99.0.11")), "released twice");
        assert_eq!(pool.allocate(), Some(ip("10.99.0.11")));
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn released_address_goes_to_the_back_of_the_line() {
        let mut pool = Pool::parse("10.0.0.1-10.0.0.3").unwrap();
        let a = pool.allocate().unwrap();
        pool.release(a);
        assert_eq!(pool.allocate(), Some(ip("10.0.0.2")));
        assert_eq!(pool.allocate(), Some(ip("10.0.0.3")));
        assert_eq!(pool.allocate(), Some(a));
    }

    #[test]
    fn cidr_leaves_out_network_and_broadcast() {
        let mut pool = Pool::parse("192.168.7.0/29").unwrap();
        assert_eq!(pool.to_string(), "192.168.7.1-192.168.7.6");
        assert_eq!(pool.capacity(), 6);
        assert_eq!(pool.allocate(), Some(ip("192.168.7.1")));
        let mut pool = Pool::parse("192.168.7.5/32").unwrap();
        assert_eq!(pool.allocate(), Some(ip("192.168.7.5")));
        assert_eq!(pool.allocate(), None);
        assert_eq!(
            Pool::parse("10.1.2.3/31").unwrap().to_string(),
            "10.1.2.2-10.1.2.3"
        );
    }

    #[test]
    fn reserved_statics_are_only_given_on_request() {
        let mut pool = Pool::parse("10.0.0.1-10.0.0.3").unwrap();
        assert!(pool.reserve(ip("10.0.0.2")));
        assert!(!pool.reserve(ip("10.0.0.2")));
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.allocate(), Some(ip("10.0.0.1")));
        assert_eq!(pool.allocate(), Some(ip("10.0.0.3")));
        assert_eq!(pool.allocate(), None);
        pool.allocate_specific(ip("10.0.0.2")).unwrap();
        assert_eq!(
            pool.allocate_specific(ip("10.0.0.2")),
            Err(PoolError::InUse(ip("10.0.0.2")))
        );
        assert_eq!(pool.in_use(), 3);
        assert!(pool.release(ip("10.0.0.2")));
        assert_eq!(pool.allocate(), None, "a released static stays reserved");
    }

    #[test]
    fn statics_outside_the_range_are_held_once() {
        let mut pool = Pool::parse("10.0.0.1-10.0.0.3").unwrap();
        let mut attrs = Attributes {
            framed_address: Some(ip("172.16.0.9")),
            ..Attributes::default()
        };
        assert_eq!(pool.assign(&mut attrs), Ok(ip("172.16.0.9")));
        assert_eq!(
            pool.assign(&mut attrs),
            Err(PoolError::InUse(ip("172.16.0.9")))
        );
        assert!(pool.is_held(ip("172.16.0.9")));
        assert_eq!(pool.in_use(), 1);
        assert!(pool.release(ip("172.16.0.9")));
        assert_eq!(pool.in_use(), 0);
        assert_eq!(
            pool.allocate_specific(ip("0.0.0.0")),
            Err(PoolError::Unusable(ip("0.0.0.0")))
        );
    }

    #[test]
    fn assign_fills_in_a_pool_address() {
        let mut pool = Pool::parse("10.0.0.5-10.0.0.5").unwrap();
        let mut attrs = Attributes::default();
        assert_eq!(pool.assign(&mut attrs), Ok(ip("10.0.0.5")));
        assert_eq!(attrs.framed_address, Some(ip("10.0.0.5")));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let err = |text: &str| Pool::parse(text).unwrap_err().to_string();
        assert_eq!(
            err("10.0.0.9-10.0.0.1"),
            "pool range 10.0.0.9-10.0.0.1: start is after end"
        );
        assert!(err("10.0.0.1-banana").contains("\"banana\" is not an IPv4 address"));
        assert!(err("10.0.0.0/33").contains("prefix length \"33\""));
        assert!(err("10.0.0.1").contains("expected a range"));
        assert!(err("0.0.0.0/0").contains("more than the"));
    }

    #[test]
    fn large_pool_scans_full_words_quickly() {
        let mut pool = Pool::parse("10.0.0.0/16").unwrap();
        for _ in 0..65534 {
            assert!(pool.allocate().is_some());
        }
        assert_eq!(pool.allocate(), None);
        assert!(pool.release(ip("10.0.200.7")));
        assert_eq!(pool.allocate(), Some(ip("10.0.200.7")));
    }

    #[test]
    fn unusable_addresses_in_a_range_are_never_allocated() {
        let mut pool = Pool::parse("255.255.255.254-255.255.255.255").unwrap();
        assert_eq!(pool.allocate(), Some(ip("255.255.255.254")));
        assert_eq!(pool.allocate(), None);
    }
}
