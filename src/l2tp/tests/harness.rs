//! An in-memory network between one LNS and some LACs, with a fake clock and
//! programmable faults: loss, duplication, delay (reordering). No sockets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::l2tp::{Event, Lac, LacConfig, Lns, LnsConfig, PeerKey, SeededEntropy, TunnelConfig};
use crate::wire::l2tp::{MessageType, Packet};

/// Which way a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    ToLns,
    ToLac,
}

/// What the network does with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Deliver,
    Drop,
    Duplicate,
    Delay(Duration),
}

/// The message type of an L2TP control message (`None` for a ZLB or garbage).
pub fn kind(bytes: &[u8]) -> Option<MessageType> {
    Packet::new_checked(bytes).ok()?.message_type().ok()?
}

/// Ns and Nr of a control message.
pub fn seq(bytes: &[u8]) -> (u16, u16) {
    let p = Packet::new_checked(bytes).unwrap();
    (p.ns().unwrap(), p.nr().unwrap())
}

/// The transport the LNS sees for client `i`.
pub fn client_key(i: usize) -> PeerKey {
    let port = 10_000 + u16::try_from(i).unwrap();
    PeerKey {
        addr: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), port),
        spi: 0xc000_0000 | u32::try_from(i).unwrap(),
    }
}

/// The LNS's transport as the clients see it.
pub fn lns_key() -> PeerKey {
    PeerKey::plain(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 1701))
}

pub struct Client {
    pub lac: Lac,
    pub key: PeerKey,
    pub events: Vec<Event>,
}

/// (arrival, order sent, direction, client, bytes).
type InFlight = (Instant, u64, Dir, usize, Vec<u8>);

type FaultFn = Box<dyn FnMut(Dir, u64, &[u8]) -> Fault>;

pub struct Net {
    pub base: Instant,
    pub now: Instant,
    pub lns: Lns,
    pub lns_events: Vec<Event>,
    pub clients: Vec<Client>,
    pub latency: Duration,
    pub fault: FaultFn,
    /// Worker the LNS is told to use for new tunnels.
    pub worker: u16,
    /// Packets sent each way so far.
    pub sent: [u64; 2],
    /// Every packet sent, for inspection: (direction, client, bytes).
    pub log: Vec<(Dir, usize, Vec<u8>)>,
    wire: BinaryHeap<Reverse<InFlight>>,
    order: u64,
}

pub fn lns_config() -> LnsConfig {
    LnsConfig::default()
}

pub fn lac_config() -> TunnelConfig {
    TunnelConfig {
        host_name: "test-lac".into(),
        ..TunnelConfig::default()
    }
}

impl Net {
    pub fn new(lns: LnsConfig) -> Net {
        let base = Instant::now();
        Net {
            base,
            now: base,
            lns: Lns::with_entropy(lns, Box::new(SeededEntropy::new(1))),
            lns_events: Vec::new(),
            clients: Vec::new(),
            latency: Duration::from_millis(10),
            fault: Box::new(|_, _, _| Fault::Deliver),
            worker: 0,
            sent: [0, 0],
            log: Vec::new(),
            wire: BinaryHeap::new(),
            order: 0,
        }
    }

    /// Adds a client that starts its control connection now; returns its index.
    pub fn add_client(&mut self, tunnel: TunnelConfig) -> usize {
        let i = self.clients.len();
        let config = LacConfig {
            tunnel,
            peer: lns_key(),
        };
        let seed = 100 + i as u64;
        let lac = Lac::with_entropy(self.now, config, Box::new(SeededEntropy::new(seed)));
        self.clients.push(Client {
            lac,
            key: client_key(i),
            events: Vec::new(),
        });
        self.flush();
        i
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    fn put(&mut self, dir: Dir, client: usize, bytes: Vec<u8>) {
        let n = self.sent[dir as usize];
        self.sent[dir as usize] += 1;
        self.log.push((dir, client, bytes.clone()));
        let at = self.now + self.latency;
        match (self.fault)(dir, n, &bytes) {
            Fault::Deliver => self.enqueue(at, dir, client, bytes),
            Fault::Drop => {}
            Fault::Duplicate => {
                self.enqueue(at, dir, client, bytes.clone());
                self.enqueue(at + self.latency, dir, client, bytes);
            }
            Fault::Delay(extra) => self.enqueue(at + extra, dir, client, bytes),
        }
    }

    fn enqueue(&mut self, at: Instant, dir: Dir, client: usize, bytes: Vec<u8>) {
        self.order += 1;
        self.wire
            .push(Reverse((at, self.order, dir, client, bytes)));
    }

    /// Moves every event of every machine onto the wire or into the event logs.
    pub fn flush(&mut self) {
        while let Some(event) = self.lns.poll_event() {
            match event {
                Event::Transmit { peer, bytes } => {
                    let client = self.clients.iter().position(|c| c.key == peer);
                    if let Some(client) = client {
                        self.put(Dir::ToLac, client, bytes);
                    }
                }
                other => self.lns_events.push(other),
            }
        }
        for i in 0..self.clients.len() {
            while let Some(event) = self.clients[i].lac.poll_event() {
                match event {
                    Event::Transmit { peer, bytes } => {
                        assert_eq!(peer, lns_key());
                        self.put(Dir::ToLns, i, bytes);
                    }
                    other => self.clients[i].events.push(other),
                }
            }
        }
    }

    /// Advances to the next thing that happens, but not past `end` (then the clock
    /// stops at `end`); `false` if nothing more happens by then.
    pub fn step_before(&mut self, end: Option<Instant>) -> bool {
        self.flush();
        let next = [
            self.wire.peek().map(|Reverse((at, ..))| *at),
            self.lns.next_timeout(),
        ]
        .into_iter()
        .chain(self.clients.iter().map(|c| c.lac.next_timeout()))
        .flatten()
        .min();
        let Some(next) = next else {
            return false;
        };
        if let Some(end) = end.filter(|&end| next > end) {
            self.now = self.now.max(end);
            return false;
        }
        self.now = self.now.max(next);
        while self
            .wire
            .peek()
            .is_some_and(|Reverse((at, ..))| *at <= self.now)
        {
            let Some(Reverse((_, _, dir, client, bytes))) = self.wire.pop() else {
                break;
            };
            match dir {
                Dir::ToLns => {
                    let key = self.clients[client].key;
                    self.lns.input(self.now, key, &bytes, self.worker);
                }
                Dir::ToLac => self.clients[client].lac.input(self.now, &bytes),
            }
        }
        self.lns.handle_timeout(self.now);
        for client in &mut self.clients {
            client.lac.handle_timeout(self.now);
        }
        self.flush();
        true
    }

    /// Runs until `done` holds or `limit` of fake time passed; returns `done`.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        while !done(self) {
            if self.now >= end || !self.step_before(Some(end)) {
                return done(self);
            }
        }
        true
    }

    /// Runs for `span` of fake time.
    pub fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end && self.step_before(Some(end)) {}
        self.now = self.now.max(end);
    }

    /// Counts the LNS events matching `f`.
    pub fn lns_count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.lns_events.iter().filter(|e| f(e)).count()
    }

    /// Counts client `i`'s events matching `f`.
    pub fn lac_count(&self, i: usize, f: impl Fn(&Event) -> bool) -> usize {
        self.clients[i].events.iter().filter(|e| f(e)).count()
    }

    /// Messages of `kind` sent in direction `dir`.
    pub fn sent_of(&self, dir: Dir, kind_of: MessageType) -> Vec<Vec<u8>> {
        self.log
            .iter()
            .filter(|(d, _, b)| *d == dir && kind(b) == Some(kind_of))
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

pub fn is_session_up(e: &Event) -> bool {
    matches!(e, Event::SessionUp(_))
}

pub fn is_session_down(e: &Event) -> bool {
    matches!(e, Event::SessionDown { .. })
}

pub fn is_tunnel_down(e: &Event) -> bool {
    matches!(e, Event::TunnelDown { .. })
}

/// The cause of the first TunnelDown in `events`.
pub fn tunnel_down_cause(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::TunnelDown { cause, .. } => Some(cause.clone()),
        _ => None,
    })
}

/// The cause of the first SessionDown in `events`.
pub fn session_down_cause(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::SessionDown { cause, .. } => Some(cause.clone()),
        _ => None,
    })
}

/// A network with `clients` LACs, each with an established tunnel and `sessions`
/// sessions up.
pub fn established(lns: LnsConfig, clients: usize, sessions: usize) -> Net {
    let mut net = Net::new(lns);
    for _ in 0..clients {
        net.add_client(lac_config());
    }
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.clients.iter().all(|c| c.lac.is_established())
    }));
    for i in 0..clients {
        for _ in 0..sessions {
            let now = net.now;
            net.clients[i].lac.open_session(now).unwrap();
        }
    }
    let want = clients * sessions;
    assert!(
        net.run_until(Duration::from_secs(60), |n| n.lns_count(is_session_up)
            == want)
    );
    net
}
