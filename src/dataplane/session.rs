//! What a worker knows of each L2TP session: the ids both sides use, the SAs that
//! carry it and the inner address assigned to the client. Looked up by our
//! (tunnel id, session id) on the way in and by inner address on the way out.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

/// A multiplicative hasher for the u32 keys of the session maps (ids and addresses
/// are chosen by the gateway, not by an attacker, so SipHash buys nothing here).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 29;
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Index of an outbound SA in a worker's [`OutboundTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutboundId(pub u32);

/// One L2TP session (one PPP link) as the data path needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Tunnel id we assigned (peers put it in packets to us).
    pub local_tunnel_id: u16,
    /// Session id we assigned.
    pub local_session_id: u16,
    /// The peer's tunnel id (we put it in packets to the peer).
    pub peer_tunnel_id: u16,
    /// The peer's session id.
    pub peer_session_id: u16,
    /// The peer's L2TP UDP port (inside ESP; normally 1701).
    pub peer_port: u16,
    /// The inbound SA (our SPI) that must carry this session, or `None` for plain
    /// L2TP on trusted networks (`require_ipsec = false`).
    pub inbound_spi: Option<u32>,
    /// After a Phase 2 rekey ([`SessionTable::rebind`]): the inbound SA the session was
    /// bound to before, still accepted until its pair is removed, so packets in flight
    /// on the old SA are not lost. `None` otherwise (and when installing).
    pub prev_inbound_spi: Option<u32>,
    /// The outbound SA, or `None` for plain L2TP.
    pub outbound: Option<OutboundId>,
    /// The client's address inside the tunnel, once IPCP has assigned it. Until then
    /// the session carries only PPP control frames (LCP, authentication, IPCP).
    pub inner_addr: Option<Ipv4Addr>,
    /// Send PPP frames without address/control (the peer accepted ACFC).
    pub acfc: bool,
    /// Send one-octet protocol fields (the peer accepted PFC).
    pub pfc: bool,
    /// Outer addressing of plain L2TP (no IPsec), for the encap side.
    pub plain: Option<PlainPeer>,
    /// Traffic of the session's inner packets (for accounting).
    pub counters: SessionCounters,
}

/// Inner packets and octets of a session, both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Client → inside: packets.
    pub in_packets: u64,
    /// Client → inside: octets of inner IPv4.
    pub in_bytes: u64,
    /// Inside → client: packets.
    pub out_packets: u64,
    /// Inside → client: octets of inner IPv4.
    pub out_bytes: u64,
}

/// Outer addresses and port of a plain (no IPsec) L2TP session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainPeer {
    /// Our outer address.
    pub local: Ipv4Addr,
    /// The peer's outer address.
    pub peer: Ipv4Addr,
    /// The peer's outer UDP port.
    pub port: u16,
}

impl Session {
    /// Whether a packet that came out of inbound SA `spi` may carry this session: its
    /// SA, or the one before a rekey until that one is removed. Two compares, the
    /// second only on a miss.
    #[inline]
    pub fn accepts_spi(&self, spi: u32) -> bool {
        self.inbound_spi == Some(spi) || self.prev_inbound_spi == Some(spi)
    }
}

/// Sessions of one worker.
#[derive(Debug, Default)]
pub struct SessionTable {
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    by_ids: IdMap<u32>,
    by_inner: IdMap<u32>,
    /// Sessions that accept each inbound SPI (current or previous): rekeys and SA
    /// removals find their sessions here, never on the packet path. Usually one
    /// session per SA.
    by_spi: IdMap<Vec<u32>>,
}

/// Why a session could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// (tunnel id, session id) already installed.
    DuplicateIds,
    /// The inner address is held by another session.
    DuplicateAddress,
    /// No such session.
    Unknown,
}

fn ids_key(tunnel: u16, session: u16) -> u32 {
    u32::from(tunnel) << 16 | u32::from(session)
}

impl SessionTable {
    /// An empty table.
    pub fn new() -> SessionTable {
        SessionTable::default()
    }

    /// Installs a session; returns its index.
    pub fn insert(&mut self, s: Session) -> Result<u32, SessionError> {
        let ids = ids_key(s.local_tunnel_id, s.local_session_id);
        let inner = s.inner_addr.map(u32::from);
        if self.by_ids.contains_key(&ids) {
            return Err(SessionError::DuplicateIds);
        }
        if inner.is_some_and(|a| self.by_inner.contains_key(&a)) {
            return Err(SessionError::DuplicateAddress);
        }
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(s);
                i
            }
            None => {
                self.slots.push(Some(s));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_ids.insert(ids, idx);
        if let Some(a) = inner {
            self.by_inner.insert(a, idx);
        }
        if let Some(s) = self.get(idx) {
            let spis = [s.inbound_spi, s.prev_inbound_spi];
            for spi in spis.into_iter().flatten() {
                self.index_spi(spi, idx);
            }
        }
        Ok(idx)
    }

    fn index_spi(&mut self, spi: u32, idx: u32) {
        let v = self.by_spi.entry(spi).or_default();
        if !v.contains(&idx) {
            v.push(idx);
        }
    }

    fn unindex_spi(&mut self, spi: u32, idx: u32) {
        if let Some(v) = self.by_spi.get_mut(&spi) {
            v.retain(|&i| i != idx);
            if v.is_empty() {
                self.by_spi.remove(&spi);
            }
        }
    }

    /// A rekey is under way: sessions bound to inbound SA `old` also accept `new` from
    /// now on (the peer may send on the new SA before our side confirms the exchange),
    /// while they keep sending on the old pair until [`SessionTable::rebind`]. Returns
    /// how many sessions accept it.
    pub fn accept_also(&mut self, old: u32, new: u32) -> usize {
        if old == new {
            return 0;
        }
        let idxs = self.by_spi.get(&old).cloned().unwrap_or_default();
        let mut n = 0;
        for idx in idxs {
            let Some(s) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
                continue;
            };
            if s.inbound_spi != Some(old) {
                continue;
            }
            let dropped = s.prev_inbound_spi.replace(new);
            n += 1;
            if let Some(d) = dropped.filter(|&d| d != old && d != new) {
                self.unindex_spi(d, idx);
            }
            self.index_spi(new, idx);
        }
        n
    }

    /// Phase 2 rekey: every session bound to inbound SA `old` is bound to `new`, still
    /// accepts `old` (as [`Session::prev_inbound_spi`]) until [`SessionTable::forget_spi`]
    /// is called for it, and sends on `outbound` (the new pair's outbound SA) from now
    /// on. A session keeps one previous SA: one rebound twice keeps only the latest
    /// previous. Returns how many sessions moved.
    pub fn rebind(&mut self, old: u32, new: u32, outbound: Option<OutboundId>) -> usize {
        if old == new {
            return 0;
        }
        let idxs = self.by_spi.get(&old).cloned().unwrap_or_default();
        let mut moved = 0;
        for idx in idxs {
            let Some(s) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
                continue;
            };
            if s.inbound_spi != Some(old) {
                continue;
            }
            let dropped = s.prev_inbound_spi.replace(old);
            s.inbound_spi = Some(new);
            s.outbound = outbound;
            moved += 1;
            if let Some(d) = dropped.filter(|&d| d != old && d != new) {
                self.unindex_spi(d, idx);
            }
            self.index_spi(new, idx);
        }
        moved
    }

    /// Inbound SA `spi` (and its pair) is removed: sessions that kept it as their
    /// previous SA stop accepting it; sessions still bound to it lose their outbound SA
    /// (its slot may be reused by another pair), so their traffic drops as
    /// `NoOutboundSa` until they are removed. Returns how many sessions were touched.
    pub fn forget_spi(&mut self, spi: u32) -> usize {
        let Some(idxs) = self.by_spi.remove(&spi) else {
            return 0;
        };
        let mut n = 0;
        for idx in idxs {
            let Some(s) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
                continue;
            };
            if s.prev_inbound_spi == Some(spi) {
                s.prev_inbound_spi = None;
                n += 1;
            }
            if s.inbound_spi == Some(spi) {
                s.outbound = None;
                n += 1;
            }
        }
        n
    }

    /// Indexes of the sessions that accept inbound SPI `spi`.
    pub fn accepting(&self, spi: u32) -> &[u32] {
        self.by_spi.get(&spi).map_or(&[], Vec::as_slice)
    }

    /// Assigns (or changes) the inner address of an installed session: IPCP is up.
    pub fn set_inner(&mut self, idx: u32, addr: Ipv4Addr) -> Result<(), SessionError> {
        let key = u32::from(addr);
        if self.by_inner.get(&key).is_some_and(|&i| i != idx) {
            return Err(SessionError::DuplicateAddress);
        }
        let Some(s) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Err(SessionError::Unknown);
        };
        if let Some(old) = s.inner_addr.replace(addr) {
            self.by_inner.remove(&u32::from(old));
        }
        self.by_inner.insert(key, idx);
        Ok(())
    }

    /// Removes the session with our ids.
    pub fn remove(&mut self, tunnel: u16, session: u16) -> Option<Session> {
        let idx = self.by_ids.remove(&ids_key(tunnel, session))?;
        let s = self.slots.get_mut(idx as usize)?.take()?;
        if let Some(a) = s.inner_addr {
            self.by_inner.remove(&u32::from(a));
        }
        for spi in [s.inbound_spi, s.prev_inbound_spi].into_iter().flatten() {
            self.unindex_spi(spi, idx);
        }
        self.free.push(idx);
        Some(s)
    }

    /// Index of the session with our (tunnel id, session id).
    #[inline]
    pub fn find_by_ids(&self, tunnel: u16, session: u16) -> Option<u32> {
        self.by_ids.get(&ids_key(tunnel, session)).copied()
    }

    /// Index of the session that holds an inner address.
    #[inline]
    pub fn find_by_inner(&self, addr: Ipv4Addr) -> Option<u32> {
        self.by_inner.get(&u32::from(addr)).copied()
    }

    /// The session at an index.
    #[inline]
    pub fn get(&self, idx: u32) -> Option<&Session> {
        self.slots.get(idx as usize)?.as_ref()
    }

    /// The session at an index, mutably.
    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Session> {
        self.slots.get_mut(idx as usize)?.as_mut()
    }

    /// Installed sessions.
    pub fn len(&self) -> usize {
        self.by_ids.len()
    }

    /// No sessions.
    pub fn is_empty(&self) -> bool {
        self.by_ids.is_empty()
    }

    /// Every session.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().flatten()
    }
}

/// Outbound SAs of one worker, in a slab: their SPIs are the peers' choice and may
/// collide between peers, so they are found through the session, not by SPI.
#[derive(Debug)]
pub struct OutboundTable<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for OutboundTable<T> {
    fn default() -> Self {
        OutboundTable {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> OutboundTable<T> {
    /// Stores an SA.
    pub fn insert(&mut self, sa: T) -> OutboundId {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(sa);
                OutboundId(i)
            }
            None => {
                self.slots.push(Some(sa));
                OutboundId((self.slots.len() - 1) as u32)
            }
        }
    }

    /// Replaces the SA in a slot (rekey: sessions keep their id, traffic moves to the
    /// new SA at once). Returns the old one.
    pub fn replace(&mut self, id: OutboundId, sa: T) -> Option<T> {
        self.slots.get_mut(id.0 as usize)?.replace(sa)
    }

    /// Removes an SA.
    pub fn remove(&mut self, id: OutboundId) -> Option<T> {
        let sa = self.slots.get_mut(id.0 as usize)?.take()?;
        self.free.push(id.0);
        Some(sa)
    }

    /// The SA in a slot.
    #[inline]
    pub fn get(&self, id: OutboundId) -> Option<&T> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    /// The SA in a slot, mutably.
    #[inline]
    pub fn get_mut(&mut self, id: OutboundId) -> Option<&mut T> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
    }

    /// Installed SAs.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// None installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(t: u16, s: u16, addr: [u8; 4]) -> Session {
        Session {
            local_tunnel_id: t,
            local_session_id: s,
            peer_tunnel_id: 100,
            peer_session_id: 200,
            peer_port: 1701,
            inbound_spi: Some(0x1000),
            prev_inbound_spi: None,
            outbound: Some(OutboundId(0)),
            inner_addr: Some(Ipv4Addr::from(addr)),
            acfc: false,
            pfc: false,
            plain: None,
            counters: SessionCounters::default(),
        }
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut t = SessionTable::new();
        let a = t.insert(session(1, 2, [10, 0, 0, 10])).unwrap();
        assert_eq!(t.find_by_ids(1, 2), Some(a));
        assert_eq!(t.find_by_inner(Ipv4Addr::new(10, 0, 0, 10)), Some(a));
        assert_eq!(
            t.insert(session(1, 2, [10, 0, 0, 11])),
            Err(SessionError::DuplicateIds)
        );
        assert_eq!(
            t.insert(session(1, 3, [10, 0, 0, 10])),
            Err(SessionError::DuplicateAddress)
        );
        assert!(t.remove(1, 2).is_some());
        assert_eq!(t.find_by_ids(1, 2), None);
        assert_eq!(t.find_by_inner(Ipv4Addr::new(10, 0, 0, 10)), None);
        assert!(t.remove(1, 2).is_none());
        let b = t.insert(session(5, 6, [10, 0, 0, 10])).unwrap();
        assert_eq!(a, b, "slot reused");
        assert_eq!(t.len(), 1);
        // Two-phase: installed at ICCN without an address, given one when IPCP is up.
        let mut pending = session(7, 8, [0, 0, 0, 0]);
        pending.inner_addr = None;
        let c = t.insert(pending).unwrap();
        assert_eq!(
            t.set_inner(c, Ipv4Addr::new(10, 0, 0, 10)),
            Err(SessionError::DuplicateAddress)
        );
        t.set_inner(c, Ipv4Addr::new(10, 0, 0, 12)).unwrap();
        assert_eq!(t.find_by_inner(Ipv4Addr::new(10, 0, 0, 12)), Some(c));
        t.set_inner(c, Ipv4Addr::new(10, 0, 0, 13)).unwrap();
        assert_eq!(t.find_by_inner(Ipv4Addr::new(10, 0, 0, 12)), None);
        assert_eq!(
            t.set_inner(99, Ipv4Addr::new(10, 0, 0, 14)),
            Err(SessionError::Unknown)
        );
    }

    #[test]
    fn holds_a_hundred_thousand() {
        let mut t = SessionTable::new();
        for i in 0..100_000u32 {
            let addr = Ipv4Addr::from(0x0a00_0000 + i);
            t.insert(session((i >> 16) as u16 + 1, i as u16, addr.octets()))
                .unwrap();
        }
        assert_eq!(t.len(), 100_000);
        for i in (0..100_000u32).step_by(997) {
            let idx = t.find_by_inner(Ipv4Addr::from(0x0a00_0000 + i)).unwrap();
            let s = t.get(idx).unwrap();
            assert_eq!(s.local_session_id, i as u16);
        }
    }

    #[test]
    fn rebind_keeps_the_old_spi_until_forgotten() {
        let mut t = SessionTable::new();
        let a = t.insert(session(1, 1, [10, 0, 0, 1])).unwrap();
        let b = t.insert(session(1, 2, [10, 0, 0, 2])).unwrap();
        let mut other = session(2, 1, [10, 0, 0, 3]);
        other.inbound_spi = Some(0x2000);
        let c = t.insert(other).unwrap();
        assert_eq!(t.accepting(0x1000), &[a, b]);
        assert_eq!(t.rebind(0x1000, 0x1001, Some(OutboundId(7))), 2);
        for i in [a, b] {
            let s = t.get(i).unwrap();
            assert!(s.accepts_spi(0x1000) && s.accepts_spi(0x1001));
            assert!(!s.accepts_spi(0x2000));
            assert_eq!(s.outbound, Some(OutboundId(7)));
            assert_eq!(s.inbound_spi, Some(0x1001));
        }
        assert_eq!(t.get(c).unwrap().outbound, Some(OutboundId(0)));
        // Rebinding from the old SPI again moves nobody (they are on the new one).
        assert_eq!(t.rebind(0x1000, 0x1002, None), 0);
        // A second rekey before the first old pair is gone: only the latest is kept.
        assert_eq!(t.rebind(0x1001, 0x1002, Some(OutboundId(8))), 2);
        let s = t.get(a).unwrap();
        assert!(!s.accepts_spi(0x1000) && s.accepts_spi(0x1001) && s.accepts_spi(0x1002));
        assert!(t.accepting(0x1000).is_empty());
        assert_eq!(t.forget_spi(0x1000), 0);
        assert_eq!(t.forget_spi(0x1001), 2);
        let s = t.get(a).unwrap();
        assert_eq!((s.inbound_spi, s.prev_inbound_spi), (Some(0x1002), None));
        // The current SA removed: the session keeps its binding but loses its outbound.
        assert_eq!(t.forget_spi(0x1002), 2);
        assert_eq!(t.get(a).unwrap().outbound, None);
        // Removing a session unindexes it.
        t.remove(2, 1).unwrap();
        assert!(t.accepting(0x2000).is_empty());
    }

    #[test]
    fn accept_also_then_rebind() {
        let mut t = SessionTable::new();
        let idx = t.insert(session(1, 1, [10, 0, 0, 10])).expect("insert");
        assert_eq!(t.accept_also(0x1000, 0x2000), 1);
        let s = t.get(idx).expect("session");
        assert!(s.accepts_spi(0x1000) && s.accepts_spi(0x2000));
        assert_eq!(s.inbound_spi, Some(0x1000), "still sends on the old pair");
        assert_eq!(t.rebind(0x1000, 0x2000, Some(OutboundId(7))), 1);
        let s = t.get(idx).expect("session");
        assert_eq!(s.inbound_spi, Some(0x2000));
        assert!(s.accepts_spi(0x1000));
        assert_eq!(t.accepting(0x2000), &[idx]);
        t.forget_spi(0x1000);
        assert!(!t.get(idx).expect("session").accepts_spi(0x1000));
        // An exchange that never completes: the candidate is forgotten.
        assert_eq!(t.accept_also(0x2000, 0x3000), 1);
        t.forget_spi(0x3000);
        let s = t.get(idx).expect("session");
        assert!(!s.accepts_spi(0x3000) && s.accepts_spi(0x2000));
    }

    #[test]
    fn outbound_slab() {
        let mut o = OutboundTable::default();
        let a = o.insert("a");
        let b = o.insert("b");
        assert_eq!(o.replace(a, "a2"), Some("a"));
        assert_eq!(o.get(a), Some(&"a2"));
        assert_eq!(o.remove(b), Some("b"));
        assert_eq!(o.get(b), None);
        assert_eq!(o.insert("c"), b);
        assert_eq!(o.len(), 2);
    }
}
