//! The control thread: the only place that mutates protocol state. It owns the L2TP
//! LNS, one PPP link per session, the authentication backend, the address pool and
//! the accounting log; it learns of control packets through the workers' up-channel
//! and acts on the data plane only through the workers' command queues.
//!
//! The machines are sans-IO; this module is the glue: packets in, events out, timers
//! from a heap of deadlines so that ten thousand idle sessions cost nothing but their
//! keepalives.

pub mod accounting;
pub mod ike;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::aaa::pool::Pool;
use crate::aaa::users::LocalUsers;
use crate::aaa::{AuthBackend, AuthResult, RequestId};
use crate::dataplane::chain::ControlKind;
use crate::dataplane::handoff::inner_owner;
use crate::dataplane::session::Session;
use crate::dataplane::worker::{ControlMsg, PeerKey as DpPeer, WorkerCmd};
use crate::l2tp::{self, Lns};
use crate::ppp::{self, Link};

use accounting::{Accounting, Record};

/// What the control thread needs besides the machines' own configuration.
pub struct ControlConfig {
    /// Our outer address.
    pub local: Ipv4Addr,
    /// PPP server settings (copied per link).
    pub ppp: ppp::config::ServerConfig,
    /// Refuse L2TP without IPsec.
    pub require_ipsec: bool,
    /// Number of workers (address ownership).
    pub workers: usize,
}

/// What the daemon tells the control loop between rounds.
pub enum Tick {
    /// Carry on.
    Go,
    /// Tear down and return.
    Stop,
    /// New local users (SIGHUP); established sessions are kept.
    ReloadUsers(LocalUsers),
    /// New users, keys and pool (SIGHUP); established sessions and SAs are kept.
    Reload(Box<Reload>),
}

/// What SIGHUP reloads.
pub struct Reload {
    /// Local users.
    pub users: LocalUsers,
    /// IKE keys and algorithm settings.
    pub ike: Option<crate::ike::v1::responder::ResponderConfig>,
    /// The address pool (addresses in use stay assigned).
    pub pool: Option<Pool>,
}

/// One L2TP session with its PPP link.
struct Call {
    link: Link,
    peer: l2tp::PeerKey,
    worker: u16,
    peer_ids: (u16, u16),
    addr: Option<Ipv4Addr>,
    user: Option<String>,
    up_since: Option<(Instant, SystemTime)>,
    auth: Option<RequestId>,
    down: Option<String>,
}

/// Counters of the control thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Sessions whose PPP link came up.
    pub sessions_up: u64,
    /// Sessions that went down.
    pub sessions_down: u64,
    /// Control messages dropped (unknown session, IKE before the IKE responder, …).
    pub dropped: u64,
}

/// The control thread's state.
pub struct Control {
    cfg: ControlConfig,
    lns: Lns,
    calls: HashMap<(u16, u16), Call>,
    users: LocalUsers,
    pool: Pool,
    accounting: Accounting,
    workers: Vec<Sender<WorkerCmd>>,
    peer_worker: HashMap<l2tp::PeerKey, u16>,
    timers: BinaryHeap<Reverse<(Instant, (u16, u16))>>,
    next_request: u64,
    pending_auth: HashMap<RequestId, (u16, u16)>,
    ike: Option<crate::ike::v1::Responder>,
    sa_settings: ike::SaSettings,
    sa_packets: HashMap<u32, u64>,
    /// A pair being negotiated as the rekey of another: L2TP arriving on it belongs to
    /// the tunnels of the old one until the rekey completes.
    spi_alias: HashMap<u32, u32>,
    next_activity_poll: Option<Instant>,
    activity_every: Duration,
    /// Counters.
    pub stats: ControlStats,
}

impl Control {
    /// Builds the control state.
    pub fn new(
        cfg: ControlConfig,
        lns: Lns,
        users: LocalUsers,
        pool: Pool,
        accounting: Accounting,
        workers: Vec<Sender<WorkerCmd>>,
    ) -> Control {
        Control {
            cfg,
            lns,
            calls: HashMap::new(),
            users,
            pool,
            accounting,
            workers,
            peer_worker: HashMap::new(),
            timers: BinaryHeap::new(),
            next_request: 1,
            pending_auth: HashMap::new(),
            ike: None,
            sa_settings: ike::SaSettings {
                replay_window: 1024,
                backend: crate::crypto::Backend::default(),
            },
            sa_packets: HashMap::new(),
            spi_alias: HashMap::new(),
            next_activity_poll: None,
            activity_every: Duration::from_secs(10),
            stats: ControlStats::default(),
        }
    }

    /// Adds the IKEv1 responder. `activity_every` is how often the workers are asked
    /// which SAs carried traffic (a third of the DPD interval).
    pub fn with_ike(
        mut self,
        responder: crate::ike::v1::Responder,
        sa_settings: ike::SaSettings,
        activity_every: Duration,
    ) -> Control {
        self.ike = Some(responder);
        self.sa_settings = sa_settings;
        self.activity_every = activity_every.max(Duration::from_millis(500));
        self
    }

    /// The IKE responder's counters.
    pub fn ike_stats(&self) -> Option<crate::ike::v1::responder::IkeStats> {
        self.ike.as_ref().map(|i| i.stats.clone())
    }

    /// Sessions currently known (up or negotiating).
    pub fn sessions(&self) -> usize {
        self.calls.len()
    }

    /// Replaces the local users (SIGHUP); established sessions are kept.
    pub fn reload_users(&mut self, users: LocalUsers) {
        self.users = users;
    }

    /// Applies a SIGHUP reload: new logins, IKE exchanges and address grants use the
    /// new settings; nothing established is dropped.
    pub fn reload(&mut self, r: Reload) {
        self.users = r.users;
        if let (Some(ike), Some(cfg)) = (self.ike.as_mut(), r.ike) {
            ike.reconfigure(cfg);
        }
        if let Some(mut pool) = r.pool {
            for c in self.calls.values() {
                if let Some(a) = c.addr {
                    pool.reserve(a);
                }
            }
            self.pool = pool;
        }
    }

    /// Runs until `tick` says stop, then tears every session down politely.
    pub fn run(&mut self, up: &Receiver<ControlMsg>, mut tick: impl FnMut() -> Tick) {
        loop {
            match tick() {
                Tick::Go => {}
                Tick::Stop => break,
                Tick::ReloadUsers(u) => self.reload_users(u),
                Tick::Reload(r) => self.reload(*r),
            }
            let now = Instant::now();
            let wait = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(200));
            match up.recv_timeout(wait) {
                Ok(msg) => {
                    self.on_packet(Instant::now(), msg);
                    // Drain what else is queued without sleeping.
                    while let Ok(m) = up.try_recv() {
                        self.on_packet(Instant::now(), m);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.on_timers(Instant::now());
        }
        self.shutdown(Instant::now(), up);
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.lns.next_timeout(),
            self.timers.peek().map(|Reverse((t, _))| *t),
            self.ike.as_ref().and_then(|i| i.next_timeout()),
            self.ike.as_ref().and(self.next_activity_poll),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one packet from a worker.
    pub fn on_packet(&mut self, now: Instant, msg: ControlMsg) {
        let peer = l2tp::PeerKey {
            addr: SocketAddrV4::new(msg.peer.addr, msg.peer.port),
            spi: self
                .spi_alias
                .get(&msg.peer.spi)
                .copied()
                .unwrap_or(msg.peer.spi),
        };
        match msg.kind {
            ControlKind::L2tpControl => {
                if self.cfg.require_ipsec && peer.spi == 0 {
                    self.stats.dropped += 1;
                    return;
                }
                self.peer_worker.insert(peer, msg.worker);
                self.lns.input(now, peer, &msg.data, msg.worker);
            }
            ControlKind::PppControl => {
                let Some(ids) = msg.session else {
                    self.stats.dropped += 1;
                    return;
                };
                match self.calls.get_mut(&ids) {
                    Some(c) => c.link.input(now, &msg.data),
                    None => {
                        self.stats.dropped += 1;
                        return;
                    }
                }
                self.drain_link(now, ids);
            }
            ControlKind::Ike => {
                self.on_ike(now, &msg);
                return;
            }
        }
        self.drain_lns(now);
    }

    /// Runs due timers.
    pub fn on_timers(&mut self, now: Instant) {
        self.ike_timers(now);
        if self.lns.next_timeout().is_some_and(|t| t <= now) {
            self.lns.handle_timeout(now);
            self.drain_lns(now);
        }
        while let Some(Reverse((t, ids))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.calls.get_mut(&ids) else {
                continue;
            };
            // Stale heap entries (the link re-armed earlier or later) are skipped.
            if c.link.next_timeout().is_some_and(|due| due <= now) {
                c.link.handle_timeout(now);
                self.drain_link(now, ids);
            } else if let Some(due) = c.link.next_timeout() {
                self.timers.push(Reverse((due, ids)));
            }
        }
        self.drain_lns(now);
    }

    fn worker_for(&self, peer: &l2tp::PeerKey) -> u16 {
        self.peer_worker.get(peer).copied().unwrap_or(0)
    }

    fn send_l2tp(&self, peer: l2tp::PeerKey, worker: u16, packet: Vec<u8>) {
        let dp = DpPeer {
            addr: *peer.addr.ip(),
            port: peer.addr.port(),
            spi: peer.spi,
        };
        if let Some(w) = self.workers.get(usize::from(worker)) {
            let _ = w.send(WorkerCmd::SendL2tp {
                peer: dp,
                local: self.cfg.local,
                packet,
            });
        }
    }

    fn drain_lns(&mut self, now: Instant) {
        while let Some(ev) = self.lns.poll_event() {
            match ev {
                l2tp::Event::Transmit { peer, bytes } => {
                    let w = self.worker_for(&peer);
                    self.send_l2tp(peer, w, bytes);
                }
                l2tp::Event::SessionUp(info) => self.session_up(now, info),
                l2tp::Event::SessionDown { session, cause } => {
                    let ids = (session.local_tunnel_id, session.local_session_id);
                    if let Some(mut c) = self.calls.remove(&ids) {
                        c.link.lower_down(now);
                        let cause = c.down.clone().unwrap_or(cause);
                        self.finish(ids, c, &cause);
                    }
                }
                l2tp::Event::TunnelDown { peer, .. } => {
                    self.peer_worker.remove(&peer);
                }
                l2tp::Event::TunnelUp { .. }
                | l2tp::Event::LinkInfo { .. }
                | l2tp::Event::WanError { .. } => {}
            }
        }
    }

    fn session_up(&mut self, now: Instant, info: l2tp::SessionInfo) {
        let ids = (info.local_tunnel_id, info.local_session_id);
        let worker = info.worker;
        // The data plane learns of the session now, without an address: PPP control
        // frames flow up; IPv4 waits until IPCP assigns the address.
        let plain = (info.peer.spi == 0).then(|| crate::dataplane::session::PlainPeer {
            local: self.cfg.local,
            peer: *info.peer.addr.ip(),
            port: info.peer.addr.port(),
        });
        let session = Session {
            local_tunnel_id: info.local_tunnel_id,
            local_session_id: info.local_session_id,
            peer_tunnel_id: info.peer_tunnel_id,
            peer_session_id: info.peer_session_id,
            peer_port: if info.peer.spi == 0 {
                info.peer.addr.port()
            } else {
                1701
            },
            inbound_spi: (info.peer.spi != 0).then_some(info.peer.spi),
            prev_inbound_spi: None,
            outbound: None,
            inner_addr: None,
            acfc: false,
            pfc: false,
            plain,
            counters: Default::default(),
        };
        if let Some(w) = self.workers.get(usize::from(worker)) {
            let _ = w.send(WorkerCmd::InstallSession(Box::new(session)));
        }
        let mut link = Link::server(self.cfg.ppp.clone(), now);
        link.handle_timeout(now);
        self.calls.insert(
            ids,
            Call {
                link,
                peer: info.peer,
                worker,
                peer_ids: (info.peer_tunnel_id, info.peer_session_id),
                addr: None,
                user: None,
                up_since: None,
                auth: None,
                down: None,
            },
        );
        self.drain_link(now, ids);
    }

    /// Acts on a link's events: frames to send, authentication, up, down.
    fn drain_link(&mut self, now: Instant, ids: (u16, u16)) {
        loop {
            let Some(c) = self.calls.get_mut(&ids) else {
                return;
            };
            let Some(ev) = c.link.poll_event() else {
                if let Some(due) = c.link.next_timeout() {
                    self.timers.push(Reverse((due, ids)));
                }
                return;
            };
            match ev {
                ppp::Event::Send(frame) => {
                    let (peer, worker, (pt, ps)) = (c.peer, c.worker, c.peer_ids);
                    let mut pkt = Vec::with_capacity(6 + frame.len());
                    pkt.extend_from_slice(&[0x00, 0x02]);
                    pkt.extend_from_slice(&pt.to_be_bytes());
                    pkt.extend_from_slice(&ps.to_be_bytes());
                    pkt.extend_from_slice(&frame);
                    self.send_l2tp(peer, worker, pkt);
                }
                ppp::Event::Authenticate(req) => {
                    let id = RequestId(self.next_request);
                    self.next_request += 1;
                    c.auth = Some(id);
                    c.user = Some(req.user.clone());
                    self.pending_auth.insert(id, ids);
                    self.users.submit(id, req);
                    self.collect_auth(now);
                }
                ppp::Event::Up(up) => {
                    c.addr = Some(up.peer_address);
                    c.up_since = Some((now, SystemTime::now()));
                    if up.user.is_some() {
                        c.user = up.user.clone();
                    }
                    let worker = c.worker;
                    let rec = Record::start(
                        c.user.as_deref().unwrap_or(""),
                        c.peer.addr,
                        up.peer_address,
                        SystemTime::now(),
                    );
                    if let Some(w) = self.workers.get(usize::from(worker)) {
                        let _ = w.send(WorkerCmd::SetSessionAddress {
                            tunnel: ids.0,
                            session: ids.1,
                            addr: up.peer_address,
                        });
                    }
                    self.stats.sessions_up += 1;
                    self.accounting.write(&rec);
                    tracing::info!(user = rec.user, addr = %up.peer_address, "session up");
                }
                ppp::Event::Down(reason) => {
                    // The link may still send Terminate frames: keep driving it until
                    // Finished, then disconnect the L2TP session.
                    c.down.get_or_insert(reason.to_string());
                }
                ppp::Event::Finished => {
                    let cause = c.down.clone().unwrap_or_else(|| "link finished".into());
                    self.lns.close_session(
                        now,
                        ids.0,
                        ids.1,
                        l2tp::ResultCode::new(l2tp::cdn::ADMINISTRATIVE, None, cause.clone()),
                    );
                    if let Some(c) = self.calls.remove(&ids) {
                        self.finish(ids, c, &cause);
                    }
                    return;
                }
            }
        }
    }

    /// Hands answered authentications to their links, with a pool address.
    fn collect_auth(&mut self, now: Instant) {
        while let Some((id, mut result)) = self.users.poll() {
            let Some(ids) = self.pending_auth.remove(&id) else {
                continue;
            };
            let Some(c) = self.calls.get_mut(&ids) else {
                continue;
            };
            if c.auth != Some(id) {
                continue;
            }
            let mut granted = None;
            if let AuthResult::Accept { attributes } = &mut result {
                match assign_for_worker(&mut self.pool, attributes, c.worker, self.cfg.workers) {
                    Ok(a) => granted = Some(a),
                    Err(e) => result = AuthResult::reject(format!("no address: {e}")),
                }
            }
            if c.link.auth_result(now, result) {
                if granted.is_some() {
                    c.addr = granted;
                }
            } else if let Some(a) = granted {
                // A stale or late answer: the address goes back.
                self.pool.release(a);
            }
            self.drain_link(now, ids);
        }
    }

    fn finish(&mut self, ids: (u16, u16), c: Call, cause: &str) {
        // The worker hands back the session's counters for the accounting record.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut counters = Default::default();
        if let Some(w) = self.workers.get(usize::from(c.worker))
            && w.send(WorkerCmd::RemoveSession {
                tunnel: ids.0,
                session: ids.1,
                reply: Some(tx),
            })
            .is_ok()
        {
            counters = rx
                .recv_timeout(Duration::from_millis(200))
                .ok()
                .flatten()
                .unwrap_or_default();
        }
        if let Some(a) = c.addr {
            self.pool.release(a);
        }
        if let (Some((since, wall)), Some(addr)) = (c.up_since, c.addr) {
            self.stats.sessions_down += 1;
            let rec = Record::stop(
                c.user.as_deref().unwrap_or(""),
                c.peer.addr,
                addr,
                wall,
                since.elapsed(),
                counters,
                cause,
            );
            self.accounting.write(&rec);
            tracing::info!(user = rec.user, %addr, cause, "session down");
        }
    }

    /// Politely ends everything: CDN and StopCCN to every peer, then waits briefly for
    /// the messages to leave (they go out through the workers).
    pub fn shutdown(&mut self, now: Instant, up: &Receiver<ControlMsg>) {
        let ids: Vec<(u16, u16)> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.calls.get_mut(&id) {
                c.link.close(now, "gateway shutting down");
            }
            self.drain_link(now, id);
        }
        self.lns.shutdown(now);
        self.drain_lns(now);
        let until = now + Duration::from_millis(300);
        while Instant::now() < until {
            if let Ok(m) = up.recv_timeout(Duration::from_millis(50)) {
                self.on_packet(Instant::now(), m);
            }
        }
        let rest: Vec<(u16, u16)> = self.calls.keys().copied().collect();
        for id in rest {
            if let Some(c) = self.calls.remove(&id) {
                self.finish(id, c, "gateway shutdown");
            }
        }
        // Last, the IKE deletes (after CDN/StopCCN left under the SAs).
        if let Some(ike) = self.ike.as_mut() {
            ike.shutdown();
        }
        self.drain_ike(Instant::now());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Assigns an address the worker owns (`inner_owner(addr) == worker`), so traffic from
/// the inside reaches the worker that holds the session; a static address is taken
/// as it is.
fn assign_for_worker(
    pool: &mut Pool,
    attributes: &mut crate::aaa::Attributes,
    worker: u16,
    workers: usize,
) -> Result<Ipv4Addr, crate::aaa::pool::PoolError> {
    if workers <= 1 || attributes.framed_address.is_some() {
        return pool.assign(attributes);
    }
    let mut skipped = Vec::new();
    let found = loop {
        match pool.allocate() {
            Some(a) if inner_owner(a, workers) == worker => break Some(a),
            Some(a) => skipped.push(a),
            None => break None,
        }
    };
    for a in skipped {
        pool.release(a);
    }
    let a = found.ok_or(crate::aaa::pool::PoolError::Exhausted)?;
    attributes.framed_address = Some(a);
    Ok(a)
}
