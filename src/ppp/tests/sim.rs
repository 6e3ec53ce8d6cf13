//! A fake network and clock for driving server and client links against each other,
//! with the control thread's glue around the server side: the local user backend
//! (answers after `auth_delay`), the address pool, and the Down/release bookkeeping.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::aaa::{AuthBackend, AuthResult, LocalUsers, Password, Pool, RequestId};
use crate::ppp::{
    AuthMethod, ClientConfig, DownReason, Event, Link, LinkUp, SeededEntropy, ServerConfig,
};

/// Which way a frame travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Dir {
    ToServer,
    ToClient,
}

/// What the network does to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Deliver,
    Drop,
    Duplicate,
    /// Deliver late (after frames sent later: reordering).
    Delay(Duration),
}

/// A decision per frame: (pair, direction, number of the frame among those of this
/// pair and direction, frame) → fault.
pub(crate) type FaultFn = Box<dyn FnMut(usize, Dir, usize, &[u8]) -> Fault>;

/// What one side reported, with the time since the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Up(LinkUp),
    Down(DownReason),
    Finished,
}

pub(crate) struct Pair {
    pub server: Link,
    pub client: Link,
    pub server_seen: Vec<(Duration, Seen)>,
    pub client_seen: Vec<(Duration, Seen)>,
    /// Addresses this pair's server link holds in the pool.
    held: Vec<Ipv4Addr>,
}

impl Pair {
    pub fn server_up(&self) -> Option<&LinkUp> {
        self.server_seen.iter().find_map(|(_, s)| match s {
            Seen::Up(up) => Some(up),
            _ => None,
        })
    }

    pub fn client_up(&self) -> Option<&LinkUp> {
        self.client_seen.iter().find_map(|(_, s)| match s {
            Seen::Up(up) => Some(up),
            _ => None,
        })
    }

    pub fn server_down(&self) -> Option<&DownReason> {
        self.server_seen.iter().find_map(|(_, s)| match s {
            Seen::Down(why) => Some(why),
            _ => None,
        })
    }

    pub fn client_down(&self) -> Option<&DownReason> {
        self.client_seen.iter().find_map(|(_, s)| match s {
            Seen::Down(why) => Some(why),
            _ => None,
        })
    }

    pub fn both_up(&self) -> bool {
        self.server_up().is_some() && self.client_up().is_some()
    }

    pub fn both_finished(&self) -> bool {
        let done = |seen: &[(Duration, Seen)]| seen.iter().any(|(_, s)| *s == Seen::Finished);
        done(&self.server_seen) && done(&self.client_seen)
    }
}

struct InFlight {
    at: Instant,
    seq: usize,
    pair: usize,
    dir: Dir,
    frame: Vec<u8>,
}

pub(crate) struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub pairs: Vec<Pair>,
    pub users: LocalUsers,
    pub pool: Pool,
    pub latency: Duration,
    pub auth_delay: Duration,
    pub fault: FaultFn,
    /// Applied to every backend answer before the pool sees it.
    pub tweak: Box<dyn FnMut(&mut AuthResult)>,
    wire: Vec<InFlight>,
    answers: Vec<(Instant, usize, AuthResult)>,
    frames: usize,
    sent: std::collections::HashMap<(usize, Dir), usize>,
    requests: u64,
}

pub(crate) const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub(crate) const DNS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 53);

pub(crate) fn server_config(auth: &[AuthMethod]) -> ServerConfig {
    let mut cfg = ServerConfig::new(LOCAL);
    cfg.auth = auth.to_vec();
    cfg.dns = vec![DNS];
    cfg.name = "sekisho".into();
    cfg
}

pub(crate) fn client_config(user: &str, password: &str, auth: &[AuthMethod]) -> ClientConfig {
    let mut cfg = ClientConfig::new(user, Password::from(password));
    cfg.auth = auth.to_vec();
    cfg
}

pub(crate) const ALL: [AuthMethod; 3] = [AuthMethod::MsChapV2, AuthMethod::Chap, AuthMethod::Pap];

impl Sim {
    /// A network with users alice/alicepass and bob/bobpass (static 10.99.0.200) and
    /// the pool 10.99.0.10-10.99.0.250.
    pub fn new() -> Sim {
        let mut users = LocalUsers::new();
        users
            .add("alice", Password::from("alicepass"), None)
            .unwrap();
        let bob = Ipv4Addr::new(10, 99, 0, 200);
        users
            .add("bob", Password::from("bobpass"), Some(bob))
            .unwrap();
        let mut pool = Pool::parse("10.99.0.10-10.99.0.250").unwrap();
        pool.reserve(bob);
        let start = Instant::now();
        Sim {
            start,
            now: start,
            pairs: Vec::new(),
            users,
            pool,
            latency: Duration::from_millis(10),
            auth_delay: Duration::ZERO,
            fault: Box::new(|_, _, _, _| Fault::Deliver),
            tweak: Box::new(|_| {}),
            wire: Vec::new(),
            answers: Vec::new(),
            frames: 0,
            sent: std::collections::HashMap::new(),
            requests: 0,
        }
    }

    /// Adds a server/client pair starting now; returns its index.
    pub fn connect(&mut self, server: ServerConfig, client: ClientConfig) -> usize {
        let seed = self.pairs.len() as u64 * 2 + 1;
        let pair = Pair {
            server: Link::server_with_entropy(server, self.now, Box::new(SeededEntropy::new(seed))),
            client: Link::client_with_entropy(
                client,
                self.now,
                Box::new(SeededEntropy::new(seed + 1)),
            ),
            server_seen: Vec::new(),
            client_seen: Vec::new(),
            held: Vec::new(),
        };
        self.pairs.push(pair);
        self.drain();
        self.pairs.len() - 1
    }

    /// One pair with the default configs for `method` on both sides.
    pub fn pair(method: AuthMethod) -> Sim {
        let mut sim = Sim::new();
        sim.connect(
            server_config(&[method]),
            client_config("alice", "alicepass", &[method]),
        );
        sim
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn send(&mut self, pair: usize, dir: Dir, frame: Vec<u8>) {
        let n = self.frames;
        self.frames += 1;
        let count = self.sent.entry((pair, dir)).or_default();
        let index = *count;
        *count += 1;
        let at = self.now + self.latency;
        match (self.fault)(pair, dir, index, &frame) {
            Fault::Deliver => self.wire.push(InFlight {
                at,
                seq: n,
                pair,
                dir,
                frame,
            }),
            Fault::Drop => {}
            Fault::Duplicate => {
                let copy = frame.clone();
                self.wire.push(InFlight {
                    at,
                    seq: n,
                    pair,
                    dir,
                    frame,
                });
                self.wire.push(InFlight {
                    at,
                    seq: n,
                    pair,
                    dir,
                    frame: copy,
                });
            }
            Fault::Delay(d) => self.wire.push(InFlight {
                at: at + d,
                seq: n,
                pair,
                dir,
                frame,
            }),
        }
    }

    /// Takes every pending event of every link and acts on it.
    pub fn drain(&mut self) {
        for i in 0..self.pairs.len() {
            while let Some(event) = self.pairs[i].server.poll_event() {
                let at = self.elapsed();
                match event {
                    Event::Send(frame) => self.send(i, Dir::ToClient, frame),
                    Event::Authenticate(request) => {
                        self.requests += 1;
                        self.users.submit(RequestId(self.requests), request);
                        while let Some((_, answer)) = self.users.poll() {
                            self.answers.push((self.now + self.auth_delay, i, answer));
                        }
                    }
                    Event::Up(up) => self.pairs[i].server_seen.push((at, Seen::Up(up))),
                    Event::Down(why) => {
                        let pair = &mut self.pairs[i];
                        pair.server_seen.push((at, Seen::Down(why)));
                        for addr in pair.held.drain(..) {
                            self.pool.release(addr);
                        }
                    }
                    Event::Finished => self.pairs[i].server_seen.push((at, Seen::Finished)),
                }
            }
            while let Some(event) = self.pairs[i].client.poll_event() {
                let at = self.elapsed();
                let seen = &mut self.pairs[i].client_seen;
                match event {
                    Event::Send(frame) => self.send(i, Dir::ToServer, frame),
                    Event::Authenticate(_) => panic!("a client never asks the backend"),
                    Event::Up(up) => seen.push((at, Seen::Up(up))),
                    Event::Down(why) => seen.push((at, Seen::Down(why))),
                    Event::Finished => seen.push((at, Seen::Finished)),
                }
            }
        }
    }

    /// The control thread's glue: pool address for an Accept, then the link.
    fn answer(&mut self, pair: usize, mut result: AuthResult) {
        (self.tweak)(&mut result);
        if let AuthResult::Accept { attributes } = &mut result {
            match self.pool.assign(attributes) {
                Ok(addr) => self.pairs[pair].held.push(addr),
                Err(e) => result = AuthResult::reject(e.to_string()),
            }
        }
        let granted = match &result {
            AuthResult::Accept { attributes } => attributes.framed_address,
            AuthResult::Reject { .. } => None,
        };
        let link = &mut self.pairs[pair];
        if !link.server.auth_result(self.now, result)
            && let Some(addr) = granted
        {
            link.held.retain(|a| *a != addr);
            self.pool.release(addr);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let frames = self.wire.iter().map(|f| f.at);
        let answers = self.answers.iter().map(|a| a.0);
        let timers = self
            .pairs
            .iter()
            .flat_map(|p| [p.server.next_timeout(), p.client.next_timeout()])
            .flatten();
        frames.chain(answers).chain(timers).min()
    }

    /// Advances to the next thing due and does it. False when nothing is left.
    pub fn step(&mut self) -> bool {
        self.drain();
        let Some(next) = self.next_due() else {
            return false;
        };
        self.now = self.now.max(next);
        // Frames due, in the order they were sent.
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.wire.len() {
            if self.wire[i].at <= now {
                due.push(self.wire.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|f| (f.at, f.seq));
        for f in due {
            let pair = &mut self.pairs[f.pair];
            match f.dir {
                Dir::ToServer => pair.server.input(now, &f.frame),
                Dir::ToClient => pair.client.input(now, &f.frame),
            }
            self.drain();
        }
        let answers: Vec<_> = {
            let (due, later): (Vec<_>, Vec<_>) = self.answers.drain(..).partition(|a| a.0 <= now);
            self.answers = later;
            due
        };
        for (_, pair, result) in answers {
            self.answer(pair, result);
            self.drain();
        }
        for pair in &mut self.pairs {
            if pair.server.next_timeout().is_some_and(|t| t <= now) {
                pair.server.handle_timeout(now);
            }
            if pair.client.next_timeout().is_some_and(|t| t <= now) {
                pair.client.handle_timeout(now);
            }
        }
        self.drain();
        true
    }

    /// Steps until `done` holds or `limit` of fake time passed; returns `done`.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> bool {
        while !done(self) {
            if self.elapsed() > limit || !self.step() {
                return done(self);
            }
        }
        true
    }

    /// Runs until pair 0 is up on both sides (within two minutes of fake time).
    pub fn run_until_up(&mut self) -> bool {
        self.run_until(Duration::from_secs(120), |s| s.pairs[0].both_up())
    }

    /// Runs until nothing is left to do (or `limit`).
    pub fn run_quiet(&mut self, limit: Duration) {
        self.run_until(limit, |_| false);
    }

    /// Moves the clock on by `d`, doing whatever falls due.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while self.next_due().is_some_and(|t| t <= until) {
            self.step();
        }
        self.now = until;
        self.drain();
    }
}
