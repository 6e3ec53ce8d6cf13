//! A worker: one pinned thread that owns a [`Shard`] and the I/O of its queue. Between
//! batches it applies the control thread's commands; per batch it receives outer
//! packets, decapsulates them, delivers inner packets inside (or hairpins them to
//! another client), passes control packets up, and encapsulates what comes from the
//! inside. The I/O backends (AF_XDP, sockets, TUN) sit behind [`Outside`] and
//! [`Inside`]; the pipeline does not know which one it runs on.

use std::net::Ipv4Addr;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::esp::encap::{self, OuterParams};
use crate::esp::sa::{Mode, Sa};
use crate::wire::udp_encap;

use super::chain::{ControlKind, Pkt, Shard, Verdict, tunnel_addrs_for, tunnel_ipv4_out};
use super::handoff::{Handoff, HandoffDir, HandoffPorts, inner_owner, outer_owner};
pub use super::ports::{FrameSource, Inside, Outside, SendResult};
use super::session::{OutboundId, Session, SessionError};
use super::stats::DropReason;
pub use super::stats::SharedStats;

/// How the control thread names a peer's transport: outer address and UDP port as
/// seen on the wire (several clients behind one NAT differ by port) and our inbound
/// SPI (0 for plain L2TP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Outer address.
    pub addr: Ipv4Addr,
    /// Outer UDP source port (the L2TP port for plain L2TP, the NAT-T port for ESP in
    /// UDP, 0 for raw ESP).
    pub port: u16,
    /// Our inbound SPI that carried the packet, 0 without IPsec.
    pub spi: u32,
}

/// A packet for the control thread.
#[derive(Debug)]
pub struct ControlMsg {
    /// What it is.
    pub kind: ControlKind,
    /// The worker that received it.
    pub worker: u16,
    /// Where it came from.
    pub peer: PeerKey,
    /// Our address the packet was sent to (the outer destination).
    pub local: Ipv4Addr,
    /// Our UDP port the outer packet was sent to: 500 or 4500 for IKE (reply from the
    /// same port: [`WorkerCmd::SendIke`]); for L2TP, 4500 under NAT-T, 0 under raw ESP,
    /// 1701 for plain L2TP.
    pub local_port: u16,
    /// Our (tunnel id, session id) for PPP control frames.
    pub session: Option<(u16, u16)>,
    /// The IKE message, L2TP control packet (header included) or PPP frame.
    pub data: Vec<u8>,
}

/// Commands from the control thread, applied between batches, in the order they were
/// sent (one FIFO queue per worker: a removal queued before an install that reuses the
/// slot is always applied first).
pub enum WorkerCmd {
    /// Installs an inbound/outbound SA pair. The inbound SA carries its SPI, allocated
    /// by the control thread from this worker's
    /// [`SpiAllocator`](crate::esp::shard::SpiAllocator) (the SPI encodes the worker).
    /// No reply: a refused pair (SPI of another worker, slot occupied, stale SPI) is
    /// logged and counted in [`Stats::cmd_errors`](super::stats::Stats::cmd_errors).
    InstallSaPair {
        /// Inbound SA, under our SPI.
        inbound: Box<Sa>,
        /// Outbound SA (the peer's SPI).
        outbound: Box<Sa>,
    },
    /// Removes an SA pair by inbound SPI. Sessions that kept it as their previous SA
    /// (after [`WorkerCmd::RebindSessions`]) stop accepting it; sessions still bound to
    /// it lose their outbound SA. Release the SPI to the allocator after queueing this.
    RemoveSaPair {
        /// Our SPI.
        inbound_spi: u32,
    },
    /// Phase 2 rekey, after the new pair is installed: every session bound to
    /// `old_inbound_spi` is bound to `new_inbound_spi` and sends on the new pair's
    /// outbound SA at once, and still accepts packets on the old SA until
    /// `RemoveSaPair { old }`. Refused (logged, counted) if the new pair is not
    /// installed.
    RebindSessions {
        /// Our SPI of the SA being replaced.
        old_inbound_spi: u32,
        /// Our SPI of the new SA.
        new_inbound_spi: u32,
    },
    /// A Phase 2 rekey is being negotiated: sessions bound to `old_inbound_spi` also
    /// accept packets on `new_inbound_spi` (installed already) before the exchange is
    /// confirmed and [`WorkerCmd::RebindSessions`] switches their outbound SA.
    AcceptSpi {
        /// Our SPI of the SA being replaced.
        old_inbound_spi: u32,
        /// Our SPI of the new SA.
        new_inbound_spi: u32,
    },
    /// Sends one IKE message as a UDP datagram `local:local_port → peer:peer_port`,
    /// behind the 4-octet non-ESP marker (RFC 3948 §2.2) when `local_port` is 4500.
    SendIke {
        /// The peer's address.
        peer: Ipv4Addr,
        /// The peer's UDP port (as seen on the wire, after NAT).
        peer_port: u16,
        /// Our address (source).
        local: Ipv4Addr,
        /// Our port: 500 or 4500 (the one the peer's message came to).
        local_port: u16,
        /// The bare IKE message (no marker).
        data: Vec<u8>,
    },
    /// Reports the verified inbound packets of each listed inbound SA so far (for DPD
    /// on demand: no change since the last query means the peer was idle). SPIs not
    /// installed on this worker are left out of the reply. Costs the worker one table
    /// lookup per SPI between two batches (tens of nanoseconds each): ask each worker
    /// once per DPD round for all its SPIs rather than once per SA, and do not wait for
    /// the answer in the control loop (poll the receiver).
    QuerySaActivity {
        /// Our inbound SPIs.
        spis: Vec<u32>,
        /// Gets `(spi, inbound packets so far)`.
        reply: Sender<Vec<(u32, u64)>>,
    },
    /// Installs a session (after ICCN). Its outbound SA is found from `inbound_spi`.
    InstallSession(Box<Session>),
    /// IPCP is up: the session's inner address.
    SetSessionAddress {
        /// Our tunnel id.
        tunnel: u16,
        /// Our session id.
        session: u16,
        /// The client's inner address.
        addr: Ipv4Addr,
    },
    /// Removes a session; its final counters go to `reply`.
    RemoveSession {
        /// Our tunnel id.
        tunnel: u16,
        /// Our session id.
        session: u16,
        /// Gets the session's counters (None if it was not installed).
        reply: Option<Sender<Option<crate::dataplane::session::SessionCounters>>>,
    },
    /// Sends an L2TP packet (control message, or data carrying a PPP control frame) to
    /// a peer over UDP 1701, under the outbound SA paired with inbound SPI `peer.spi`
    /// when it is not 0 (after a rekey, the new or, until it is removed, the old SPI),
    /// in an inner IPv4 header if that SA is tunnel mode.
    SendL2tp {
        /// Destination.
        peer: PeerKey,
        /// Our outer address (source).
        local: Ipv4Addr,
        /// The L2TP packet, header included.
        packet: Vec<u8>,
    },
    /// Leaves the loop.
    Stop,
}

/// Worker settings.
pub struct WorkerConfig {
    /// Worker index (encoded in its SPIs and L2TP ids).
    pub id: u16,
    /// Packets per batch.
    pub batch: usize,
    /// How long to sleep in poll when there is nothing to do.
    pub idle_wait: Duration,
    /// Number of workers (for ownership).
    pub workers: usize,
    /// Top bits of our L2TP tunnel ids that name the owning worker (0: no handoff of
    /// plain L2TP data).
    pub tunnel_bits: u8,
    /// Answer ICMP echo to this inner address in the worker (router mode, where no
    /// kernel device holds the gateway's inner address). `None` with a TUN device,
    /// whose kernel side answers.
    pub answer_ping_on: Option<Ipv4Addr>,
}

/// Turns an IPv4 ICMP echo request into its reply in place (addresses swapped, type 0,
/// checksum updated). False if the packet is not a well-formed echo request.
pub fn echo_reply_in_place(ip: &mut [u8]) -> bool {
    use crate::wire::checksum;
    if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 1 {
        return false;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    if hl < 20 || ip.len() < hl + 8 || ip[hl] != 8 || ip[hl + 1] != 0 {
        return false;
    }
    let mut src = [0u8; 4];
    src.copy_from_slice(&ip[12..16]);
    ip.copy_within(16..20, 12);
    ip[16..20].copy_from_slice(&src);
    ip[8] = 64;
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = !checksum::fold(checksum::sum(&ip[..hl]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[hl] = 0;
    let old = u16::from_be_bytes([ip[hl + 2], ip[hl + 3]]);
    let new = checksum::update(old, 0x0800, 0x0000);
    ip[hl + 2..hl + 4].copy_from_slice(&new.to_be_bytes());
    true
}

/// One worker's state.
pub struct Worker<O: Outside, I: Inside<O::Frame>> {
    cfg: WorkerConfig,
    shard: Shard,
    outside: O,
    inside: I,
    cmds: Receiver<WorkerCmd>,
    up: Sender<ControlMsg>,
    stats: Arc<SharedStats>,
    stop: Arc<AtomicBool>,
    sa_pairs: std::collections::HashMap<u32, OutboundId>,
    l2tp_ident: u16,
    /// Scratch for `hand_off`, kept so the data path does not allocate per batch.
    keep: Vec<Pkt<O::Frame>>,
    handoff: Option<HandoffPorts>,
}

impl<O: Outside, I: Inside<O::Frame>> Worker<O, I> {
    /// A worker over its shard and I/O.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: WorkerConfig,
        shard: Shard,
        outside: O,
        inside: I,
        cmds: Receiver<WorkerCmd>,
        up: Sender<ControlMsg>,
        stats: Arc<SharedStats>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Worker {
            cfg,
            shard,
            outside,
            inside,
            cmds,
            up,
            stats,
            stop,
            sa_pairs: Default::default(),
            l2tp_ident: 1,
            keep: Vec::new(),
            handoff: None,
        }
    }

    /// Connects the worker to the handoff rings (more than one worker).
    pub fn with_handoff(mut self, ports: HandoffPorts) -> Self {
        self.handoff = Some(ports);
        self
    }

    /// Sends packets this worker does not own to their owner; keeps the rest.
    fn hand_off(&mut self, pkts: &mut Vec<Pkt<O::Frame>>, dir: HandoffDir) {
        let Some(h) = &self.handoff else { return };
        let layout = self.shard.inbound.layout();
        let me = self.cfg.id;
        let mut keep = std::mem::take(&mut self.keep);
        for p in pkts.drain(..) {
            let b = &p.buf.as_ref()[p.start..p.end];
            let owner = match dir {
                HandoffDir::Decap => outer_owner(b, &layout, self.cfg.tunnel_bits),
                HandoffDir::Encap => dst_of(&p).map(|d| inner_owner(d, self.cfg.workers)),
            };
            match owner {
                Some(o) if o != me && usize::from(o) < h.to.len() => {
                    let msg = Handoff {
                        dir,
                        data: b.to_vec(),
                    };
                    if h.to[usize::from(o)].try_send(msg).is_err() {
                        self.shard.stats.drop(DropReason::HandoffFull);
                    } else {
                        self.shard.stats.handoff_out += 1;
                    }
                    self.outside.recycle(p.buf);
                }
                _ => keep.push(p),
            }
        }
        // `pkts` gets the kept packets; the emptied vector becomes the next scratch.
        std::mem::swap(pkts, &mut keep);
        self.keep = keep;
    }

    /// Takes packets handed to this worker into fresh frames.
    fn take_handoffs(
        &mut self,
        rx: &mut Vec<Pkt<O::Frame>>,
        from_inside: &mut Vec<Pkt<O::Frame>>,
    ) -> usize {
        let Some(h) = &self.handoff else { return 0 };
        let mut n = 0;
        while n < self.cfg.batch {
            let Ok(m) = h.from.try_recv() else { break };
            let Some(mut f) = self.outside.alloc() else {
                self.shard.stats.drop(DropReason::HandoffFull);
                continue;
            };
            let head = self.outside.headroom();
            let buf = f.as_mut();
            if head + m.data.len() + 64 > buf.len() {
                self.outside.recycle(f);
                self.shard.stats.drop(DropReason::TooLong);
                continue;
            }
            buf[head..head + m.data.len()].copy_from_slice(&m.data);
            let p = Pkt::new(f, head, head + m.data.len());
            self.shard.stats.handoff_in += 1;
            match m.dir {
                HandoffDir::Decap => rx.push(p),
                HandoffDir::Encap => from_inside.push(p),
            }
            n += 1;
        }
        n
    }

    /// Runs until `Stop` or the stop flag.
    pub fn run(&mut self) {
        let mut rx: Vec<Pkt<O::Frame>> = Vec::with_capacity(self.cfg.batch);
        let mut to_inside: Vec<Pkt<O::Frame>> = Vec::with_capacity(self.cfg.batch);
        let mut to_outside: Vec<Pkt<O::Frame>> = Vec::with_capacity(self.cfg.batch);
        let mut from_inside: Vec<Pkt<O::Frame>> = Vec::with_capacity(self.cfg.batch);
        let mut hairpin: Vec<Pkt<O::Frame>> = Vec::new();
        let mut last_publish = Instant::now();
        let mut idle_rounds = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            if !self.apply_commands(&mut to_outside) {
                // Stop: what the control thread queued before it (CDN, StopCCN, PPP
                // Terminate) still leaves.
                if !to_outside.is_empty() {
                    self.outside.send(&mut to_outside);
                }
                break;
            }
            let mut work = 0;

            // Outside → decap → inside / hairpin / control.
            let mut n = self.outside.recv(&mut rx, self.cfg.batch);
            if n > 0 {
                self.hand_off(&mut rx, HandoffDir::Decap);
            }
            n += self.take_handoffs(&mut rx, &mut from_inside);
            work += n;
            if !rx.is_empty() {
                self.shard.decap_batch(&mut rx);
                for p in rx.drain(..) {
                    match p.verdict {
                        Verdict::Forward => {
                            let dst = dst_of(&p);
                            if dst.is_some() && dst == self.cfg.answer_ping_on {
                                // Router mode: the gateway's own inner address.
                                let mut p = p;
                                let (s0, e0) = (p.start, p.end);
                                if echo_reply_in_place(&mut p.buf.as_mut()[s0..e0]) {
                                    p.reset(s0, e0);
                                    hairpin.push(p);
                                } else {
                                    self.shard.stats.drop(DropReason::LocalUnsupported);
                                    self.outside.recycle(p.buf);
                                }
                            } else if dst
                                .is_some_and(|d| self.shard.sessions.find_by_inner(d).is_some())
                            {
                                let mut p = p;
                                p.reset(p.start, p.end);
                                hairpin.push(p);
                            } else {
                                to_inside.push(p);
                            }
                        }
                        Verdict::ToControl(kind) => {
                            self.pass_up(kind, &p);
                            self.outside.recycle(p.buf);
                        }
                        _ => self.outside.recycle(p.buf),
                    }
                }
                if !to_inside.is_empty() {
                    let written = self.inside.send(&to_inside);
                    for _ in written..to_inside.len() {
                        self.shard.stats.drop(DropReason::TxFull);
                    }
                    for p in to_inside.drain(..) {
                        self.outside.recycle(p.buf);
                    }
                }
                if !hairpin.is_empty() {
                    self.shard.encap_batch(&mut hairpin);
                    to_outside.append(&mut hairpin);
                }
            }

            // Inside → encap → outside.
            let m = self
                .inside
                .recv(&mut self.outside, &mut from_inside, self.cfg.batch);
            if m > 0 {
                self.hand_off(&mut from_inside, HandoffDir::Encap);
            }
            work += m;
            if !from_inside.is_empty() {
                self.shard.encap_batch(&mut from_inside);
                to_outside.append(&mut from_inside);
            }
            if !to_outside.is_empty() {
                let r = self.outside.send(&mut to_outside);
                self.shard.stats.drops[DropReason::TxFull as usize] += r.tx_full;
                self.shard.stats.drops[DropReason::NoNeighbour as usize] += r.no_neighbour;
            }

            self.outside.take_drops(&mut self.shard.stats);
            self.inside.take_drops(&mut self.shard.stats);
            if work == 0 {
                idle_rounds = idle_rounds.saturating_add(1);
                self.idle_wait(idle_rounds);
            } else {
                idle_rounds = 0;
            }
            if last_publish.elapsed() >= Duration::from_millis(5) || work == 0 {
                self.stats.publish(&self.shard.stats);
                last_publish = Instant::now();
            }
        }
        self.stats.publish(&self.shard.stats);
    }

    /// Sleeps in poll on the backends' descriptors. Commands and handoffs have no
    /// descriptor, so the nap starts at `idle_wait` and grows to 4× when the worker
    /// has been idle a while (packets still wake it at once).
    fn idle_wait(&mut self, idle_rounds: u32) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let factor = if idle_rounds > 100 { 4 } else { 1 };
        let ms = (self.cfg.idle_wait.as_millis() * factor).min(1000) as u16;
        let mut fds: Vec<PollFd> = self
            .outside
            .fds()
            .into_iter()
            .chain(self.inside.fds())
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        if !self.cmds.is_empty() || self.handoff.as_ref().is_some_and(|h| !h.from.is_empty()) {
            return;
        }
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    fn pass_up(&mut self, kind: ControlKind, p: &Pkt<O::Frame>) {
        let session = p
            .session
            .and_then(|i| self.shard.sessions.get(i))
            .map(|s| (s.local_tunnel_id, s.local_session_id));
        let msg = ControlMsg {
            kind,
            worker: self.cfg.id,
            peer: PeerKey {
                addr: p.outer_src,
                port: p.outer_sport,
                spi: p.spi,
            },
            local: p.outer_dst,
            local_port: p.outer_dport,
            session,
            data: p.buf.as_ref()[p.start..p.end].to_vec(),
        };
        match self.up.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shard.stats.drop(DropReason::ControlBusy);
            }
        }
    }

    /// Applies queued commands; false on Stop.
    fn apply_commands(&mut self, to_outside: &mut Vec<Pkt<O::Frame>>) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                WorkerCmd::Stop => return false,
                WorkerCmd::InstallSaPair { inbound, outbound } => {
                    let spi = inbound.spi();
                    match self.shard.inbound.insert_at(spi, *inbound) {
                        Ok(()) => {
                            let oid = self.shard.outbound.insert(*outbound);
                            self.sa_pairs.insert(spi, oid);
                        }
                        Err(e) => {
                            self.shard.stats.cmd_errors += 1;
                            tracing::warn!(worker = self.cfg.id, "SA pair not installed: {e}");
                        }
                    }
                }
                WorkerCmd::RemoveSaPair { inbound_spi } => {
                    self.shard.inbound.remove(inbound_spi);
                    if let Some(oid) = self.sa_pairs.remove(&inbound_spi) {
                        self.shard.outbound.remove(oid);
                    }
                    self.shard.sessions.forget_spi(inbound_spi);
                }
                WorkerCmd::RebindSessions {
                    old_inbound_spi,
                    new_inbound_spi,
                } => match self.sa_pairs.get(&new_inbound_spi).copied() {
                    Some(oid) => {
                        // Tunnel mode: the new SA starts from what the old one learned
                        // (or was given), for traffic sent before the peer uses it.
                        let learned = self
                            .shard
                            .inbound
                            .get(old_inbound_spi)
                            .and_then(Sa::tunnel_addrs);
                        if let Some(sa) = self.shard.inbound.get_mut(new_inbound_spi)
                            && sa.tunnel_addrs().is_none()
                            && let Some(a) = learned
                        {
                            sa.learn_tunnel_addrs(a);
                        }
                        let n =
                            self.shard
                                .sessions
                                .rebind(old_inbound_spi, new_inbound_spi, Some(oid));
                        tracing::debug!(
                            worker = self.cfg.id,
                            old = format_args!("{old_inbound_spi:#010x}"),
                            new = format_args!("{new_inbound_spi:#010x}"),
                            sessions = n,
                            "sessions rebound"
                        );
                    }
                    None => {
                        self.shard.stats.cmd_errors += 1;
                        tracing::warn!(
                            worker = self.cfg.id,
                            new = format_args!("{new_inbound_spi:#010x}"),
                            "sessions not rebound: no SA pair under the new SPI"
                        );
                    }
                },
                WorkerCmd::AcceptSpi {
                    old_inbound_spi,
                    new_inbound_spi,
                } => {
                    let n = self
                        .shard
                        .sessions
                        .accept_also(old_inbound_spi, new_inbound_spi);
                    tracing::debug!(
                        worker = self.cfg.id,
                        old = format_args!("{old_inbound_spi:#010x}"),
                        new = format_args!("{new_inbound_spi:#010x}"),
                        sessions = n,
                        "sessions accept the rekeyed SA"
                    );
                }
                WorkerCmd::SendIke {
                    peer,
                    peer_port,
                    local,
                    local_port,
                    data,
                } => {
                    let marker: &[u8] = if local_port == udp_encap::NAT_T_PORT {
                        &[0; udp_encap::NON_ESP_MARKER_LEN]
                    } else {
                        &[]
                    };
                    let p = self
                        .udp_datagram(local_port, peer_port, [marker, &data])
                        .and_then(|p| self.plain_ipv4(p, local, peer));
                    if let Some(p) = p {
                        to_outside.push(p);
                    }
                }
                WorkerCmd::QuerySaActivity { spis, reply } => {
                    let counts = spis
                        .iter()
                        .filter_map(|&spi| {
                            let sa = self.shard.inbound.get(spi)?;
                            Some((spi, sa.counters().packets))
                        })
                        .collect();
                    let _ = reply.send(counts);
                }
                WorkerCmd::InstallSession(s) => {
                    let mut s = *s;
                    s.outbound = s
                        .inbound_spi
                        .and_then(|spi| self.sa_pairs.get(&spi).copied());
                    if let Err(e) = self.shard.sessions.insert(s) {
                        tracing::warn!(worker = self.cfg.id, "session not installed: {e:?}");
                    }
                }
                WorkerCmd::SetSessionAddress {
                    tunnel,
                    session,
                    addr,
                } => {
                    let r = match self.shard.sessions.find_by_ids(tunnel, session) {
                        Some(i) => self.shard.sessions.set_inner(i, addr),
                        None => Err(SessionError::Unknown),
                    };
                    if let Err(e) = r {
                        tracing::warn!(worker = self.cfg.id, tunnel, session, %addr, "address not set: {e:?}");
                    }
                }
                WorkerCmd::RemoveSession {
                    tunnel,
                    session,
                    reply,
                } => {
                    let s = self.shard.sessions.remove(tunnel, session);
                    if let Some(r) = reply {
                        let _ = r.send(s.map(|s| s.counters));
                    }
                }
                WorkerCmd::SendL2tp {
                    peer,
                    local,
                    packet,
                } => {
                    if let Some(p) = self.build_l2tp(peer, local, &packet) {
                        to_outside.push(p);
                    }
                }
            }
        }
        true
    }

    /// A fresh frame holding a UDP datagram `sport → dport` (checksum 0, which IPv4
    /// allows) whose payload is `parts` one after the other, at the backend's headroom.
    /// `None`, counted, when no frame is free or it would not fit.
    fn udp_datagram(&mut self, sport: u16, dport: u16, parts: [&[u8]; 2]) -> Option<Pkt<O::Frame>> {
        let Some(mut f) = self.outside.alloc() else {
            self.shard.stats.drop(DropReason::TxFull);
            return None;
        };
        let head = self.outside.headroom();
        let buf = f.as_mut();
        let udp_len = 8 + parts[0].len() + parts[1].len();
        let Ok(udp_len16) = u16::try_from(udp_len) else {
            self.outside.recycle(f);
            self.shard.stats.drop(DropReason::TooLong);
            return None;
        };
        // Room for ESP's trailer (or nothing, for plain UDP) behind the datagram.
        if head + udp_len + 64 > buf.len() {
            self.outside.recycle(f);
            self.shard.stats.drop(DropReason::TooLong);
            return None;
        }
        let u = &mut buf[head..head + udp_len];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&udp_len16.to_be_bytes());
        u[6..8].copy_from_slice(&[0, 0]);
        let (a, b) = u[8..].split_at_mut(parts[0].len());
        a.copy_from_slice(parts[0]);
        b.copy_from_slice(parts[1]);
        self.l2tp_ident = self.l2tp_ident.wrapping_add(1);
        Some(Pkt::new(f, head, head + udp_len))
    }

    /// Puts an outer IPv4 header `local → peer` in front of the UDP datagram of `p` and
    /// marks it ready to leave.
    fn plain_ipv4(
        &mut self,
        mut p: Pkt<O::Frame>,
        local: Ipv4Addr,
        peer: Ipv4Addr,
    ) -> Option<Pkt<O::Frame>> {
        let Some(start) = p.start.checked_sub(encap::IPV4_HEADER_LEN) else {
            self.shard.stats.drop(DropReason::NoRoom);
            self.outside.recycle(p.buf);
            return None;
        };
        let total = (p.end - start) as u16;
        encap::write_ipv4_header(
            &mut p.buf.as_mut()[start..p.start],
            total,
            self.l2tp_ident,
            17,
            local,
            peer,
        );
        p.start = start;
        p.verdict = Verdict::Forward;
        Some(p)
    }

    /// Wraps an L2TP packet from the control thread in UDP 1701 → peer, then ESP under
    /// the peer's SA (tunnel mode: with an inner IPv4 header) or plain outer IPv4, in a
    /// fresh frame.
    fn build_l2tp(
        &mut self,
        peer: PeerKey,
        local: Ipv4Addr,
        packet: &[u8],
    ) -> Option<Pkt<O::Frame>> {
        let dport = if peer.spi == 0 { peer.port } else { 1701 };
        let p = self.udp_datagram(udp_encap::L2TP_PORT, dport, [&[], packet])?;
        if peer.spi == 0 {
            return self.plain_ipv4(p, local, peer.addr);
        }
        let ident = self.l2tp_ident;
        let Some(sa) = self
            .sa_pairs
            .get(&peer.spi)
            .copied()
            .and_then(|oid| self.shard.outbound.get_mut(oid))
        else {
            self.shard.stats.drop(DropReason::NoOutboundSa);
            self.outside.recycle(p.buf);
            return None;
        };
        let Ok(seq) = sa.take_seq() else {
            self.shard.stats.drop(DropReason::SeqExhausted);
            self.outside.recycle(p.buf);
            return None;
        };
        let mut p = p;
        let (payload, next_header) = match sa.mode() {
            Mode::Transport => (p.start..p.end, 17),
            Mode::Tunnel => {
                let addrs = tunnel_addrs_for(&self.shard.inbound, [Some(peer.spi), None], sa);
                let (s0, e0) = (p.start, p.end);
                match tunnel_ipv4_out(p.buf.as_mut(), s0..e0, addrs, ident) {
                    Ok(r) => (r, 4),
                    Err(r) => {
                        self.shard.stats.drop(r);
                        self.outside.recycle(p.buf);
                        return None;
                    }
                }
            }
        };
        let params = OuterParams::of(sa);
        match encap::encap(p.buf.as_mut(), payload, &params, seq, next_header, ident) {
            Ok(e) => {
                if sa
                    .cipher()
                    .seal(&mut p.buf.as_mut()[e.esp.clone()], seq)
                    .is_err()
                {
                    self.shard.stats.drop(DropReason::Malformed);
                    self.outside.recycle(p.buf);
                    return None;
                }
                sa.count(e.esp.len());
                p.start = e.packet.start;
                p.end = e.packet.end;
                p.verdict = Verdict::Forward;
                Some(p)
            }
            Err(_) => {
                self.shard.stats.drop(DropReason::NoRoom);
                self.outside.recycle(p.buf);
                None
            }
        }
    }
}

fn dst_of<B: AsRef<[u8]>>(p: &Pkt<B>) -> Option<Ipv4Addr> {
    let b = p.buf.as_ref().get(p.start + 16..p.start + 20)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::BorrowedFd;

    use crate::crypto::{Backend, Transform};
    use crate::dataplane::peer::{
        FRAME_HEADROOM, GatewaySide, PeerParams, SimPeer, client_spi, frame_len, new_shard,
        write_inner_udp,
    };
    use crate::esp::decap::{Classified, classify};
    use crate::esp::shard::{SpiAllocators, SpiLayout};

    const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
    const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

    /// An outside that records what the worker sends.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<Vec<u8>>,
    }

    impl Outside for Recorder {
        type Frame = Vec<u8>;
        fn recv(&mut self, _: &mut Vec<Pkt<Vec<u8>>>, _: usize) -> usize {
            0
        }
        fn send(&mut self, pkts: &mut Vec<Pkt<Vec<u8>>>) -> SendResult {
            for p in pkts.drain(..) {
                if p.verdict == Verdict::Forward {
                    self.sent.push(p.buf[p.start..p.end].to_vec());
                }
            }
            SendResult::default()
        }
        fn alloc(&mut self) -> Option<Vec<u8>> {
            Some(vec![0; 2048])
        }
        fn recycle(&mut self, _: Vec<u8>) {}
        fn headroom(&self) -> usize {
            256
        }
        fn fds(&self) -> Vec<BorrowedFd<'_>> {
            Vec::new()
        }
    }

    struct NoInside;

    impl Inside<Vec<u8>> for NoInside {
        fn recv(
            &mut self,
            _: &mut dyn FrameSource<Vec<u8>>,
            _: &mut Vec<Pkt<Vec<u8>>>,
            _: usize,
        ) -> usize {
            0
        }
        fn send(&mut self, pkts: &[Pkt<Vec<u8>>]) -> usize {
            pkts.len()
        }
        fn fds(&self) -> Vec<BorrowedFd<'_>> {
            Vec::new()
        }
    }

    struct Rig {
        w: Worker<Recorder, NoInside>,
        cmds: Sender<WorkerCmd>,
        up: Receiver<ControlMsg>,
    }

    impl Rig {
        fn new() -> Rig {
            let (cmds, rx) = crossbeam_channel::unbounded();
            let (up_tx, up) = crossbeam_channel::unbounded();
            let cfg = WorkerConfig {
                id: 0,
                batch: 32,
                idle_wait: Duration::from_millis(1),
                workers: 1,
                tunnel_bits: 0,
                answer_ping_on: None,
            };
            let w = Worker::new(
                cfg,
                new_shard(16),
                Recorder::default(),
                NoInside,
                rx,
                up_tx,
                Arc::new(SharedStats::default()),
                Arc::new(AtomicBool::new(false)),
            );
            Rig { w, cmds, up }
        }

        /// Sends the commands and applies them; returns what they put on the wire.
        fn run(&mut self, cmds: impl IntoIterator<Item = WorkerCmd>) -> Vec<Pkt<Vec<u8>>> {
            for c in cmds {
                self.cmds.send(c).unwrap();
            }
            let mut out = Vec::new();
            assert!(self.w.apply_commands(&mut out));
            out
        }

        fn decap(&mut self, pkts: Vec<Pkt<Vec<u8>>>) -> Vec<Pkt<Vec<u8>>> {
            let mut pkts = pkts;
            self.w.shard.decap_batch(&mut pkts);
            pkts
        }
    }

    fn params() -> PeerParams {
        PeerParams {
            transform: Transform::Aes128Gcm,
            natt: true,
            gateway: GW,
            client: Ipv4Addr::new(203, 0, 113, 1),
            client_port: 40001,
            inner: Ipv4Addr::new(10, 99, 0, 10),
            gw_ids: (100, 200),
            client_ids: (300, 400),
            backend: Backend::AwsLc,
        }
    }

    fn from(peer: &mut SimPeer) -> Pkt<Vec<u8>> {
        let mut f = vec![0u8; frame_len(100)];
        let r = peer.inner_packet(&mut f, INSIDE, 100);
        let o = peer.seal(&mut f, r).unwrap();
        Pkt::new(f, o.start, o.end)
    }

    /// The SPI of an outer NAT-T ESP packet.
    fn esp_spi(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[28], b[29], b[30], b[31]])
    }

    fn install(spis: &mut SpiAllocators, seed: u8) -> (u32, [WorkerCmd; 1], Session) {
        let gw = GatewaySide::new(&params(), seed).unwrap();
        let spi = spis.allocate(0).unwrap();
        let cmd = WorkerCmd::InstallSaPair {
            inbound: Box::new(gw.inbound.with_spi(spi)),
            outbound: Box::new(gw.outbound),
        };
        let mut s = gw.session;
        s.inbound_spi = Some(spi);
        (spi, [cmd], s)
    }

    /// Phase 2 rekey: after RebindSessions both SAs decapsulate, everything outbound
    /// (data and SendL2tp) uses the new pair; once the old pair is removed its packets
    /// drop as unknown SPI.
    #[test]
    fn rekey_rebinds_sessions_without_loss() {
        let mut rig = Rig::new();
        let mut spis = SpiAllocators::new(SpiLayout::DEFAULT, 1).unwrap();
        let (old, cmd, session) = install(&mut spis, 1);
        rig.run(cmd);
        rig.run([WorkerCmd::InstallSession(Box::new(session))]);
        let mut c_old = SimPeer::client(params(), old, 1).unwrap();
        let got = rig.decap(vec![from(&mut c_old)]);
        assert_eq!(got[0].verdict, Verdict::Forward);

        // Quick Mode rekey: the new pair, then the rebind.
        let (new, cmd, _) = install(&mut spis, 2);
        rig.run(cmd);
        rig.run([WorkerCmd::RebindSessions {
            old_inbound_spi: old,
            new_inbound_spi: new,
        }]);
        let mut c_new = SimPeer::client(params(), new, 2).unwrap();
        let got = rig.decap(vec![
            from(&mut c_old),
            from(&mut c_new),
            from(&mut c_old),
            from(&mut c_new),
        ]);
        for (k, p) in got.iter().enumerate() {
            assert_eq!(p.verdict, Verdict::Forward, "#{k}");
        }

        // Outbound: the new pair at once, for data and for the control thread's L2TP.
        let mut f = vec![0u8; frame_len(64)];
        let r = write_inner_udp(&mut f, FRAME_HEADROOM, INSIDE, params().inner, 64);
        let mut batch = vec![Pkt::new(f, r.start, r.end)];
        rig.w.shard.encap_batch(&mut batch);
        let p = &mut batch[0];
        assert_eq!(p.verdict, Verdict::Forward);
        assert_eq!(esp_spi(&p.buf[p.start..p.end]), client_spi(2));
        let (s0, e0) = (p.start, p.end);
        assert!(c_new.open(&mut p.buf, s0..e0).is_some());
        let zlb = [0xc8, 0x02, 0, 12, 0, 100, 0, 0, 0, 1, 0, 1];
        for spi in [new, old] {
            let out = rig.run([WorkerCmd::SendL2tp {
                peer: PeerKey {
                    addr: params().client,
                    port: params().client_port,
                    spi,
                },
                local: GW,
                packet: zlb.to_vec(),
            }]);
            assert_eq!(out.len(), 1);
            let b = &out[0].buf[out[0].start..out[0].end];
            // SendL2tp names the pair by inbound SPI: the old pair until it is removed.
            let want = if spi == new {
                client_spi(2)
            } else {
                client_spi(1)
            };
            assert_eq!(esp_spi(b), want);
        }

        // DPD: activity per inbound SA, unknown SPIs left out.
        let (tx, rx) = crossbeam_channel::bounded(1);
        rig.run([WorkerCmd::QuerySaActivity {
            spis: vec![old, new, 0x1234_5678],
            reply: tx,
        }]);
        assert_eq!(rx.try_recv().unwrap(), vec![(old, 3), (new, 2)]);

        // The old pair goes: its packets drop, counted; the new one carries on.
        rig.run([WorkerCmd::RemoveSaPair { inbound_spi: old }]);
        assert!(spis.release(old));
        let got = rig.decap(vec![from(&mut c_old), from(&mut c_new)]);
        assert_eq!(got[0].verdict, Verdict::Drop(DropReason::UnknownSpi));
        assert_eq!(got[1].verdict, Verdict::Forward);
        assert_eq!(rig.w.shard.stats.drops_for(DropReason::UnknownSpi), 1);
        let idx = rig.w.shard.sessions.find_by_ids(100, 200).unwrap();
        let s = rig.w.shard.sessions.get(idx).unwrap();
        assert_eq!((s.inbound_spi, s.prev_inbound_spi), (Some(new), None));
        assert_eq!(rig.w.shard.stats.cmd_errors, 0);

        // The old slot is reused under a new generation; installing the old SPI again
        // is refused (its slot holds the new tenant) and counted.
        let (again, cmd, _) = install(&mut spis, 3);
        assert_ne!(again, old);
        rig.run(cmd);
        let gw = GatewaySide::new(&params(), 4).unwrap();
        rig.run([WorkerCmd::InstallSaPair {
            inbound: Box::new(gw.inbound.with_spi(old)),
            outbound: Box::new(gw.outbound),
        }]);
        // A rebind to a pair that is not installed is refused, counted.
        rig.run([WorkerCmd::RebindSessions {
            old_inbound_spi: new,
            new_inbound_spi: 0x0400_1234,
        }]);
        assert_eq!(rig.w.shard.stats.cmd_errors, 2);
        let s = rig.w.shard.sessions.get(idx).unwrap();
        assert_eq!(s.inbound_spi, Some(new));
    }

    /// Tunnel mode across a rekey: the new inbound SA starts with the inner addresses
    /// the old one learned, so data and SendL2tp under the new pair reach the client's
    /// own address behind its NAT before it has sent anything on the new SA.
    #[test]
    fn tunnel_mode_rekey_keeps_the_inner_address() {
        use crate::esp::sa::Mode;
        let client_inner = Ipv4Addr::new(192, 168, 0, 33);
        let mut rig = Rig::new();
        let mut spis = SpiAllocators::new(SpiLayout::DEFAULT, 1).unwrap();
        let mut pair = |seed: u8| {
            let gw = GatewaySide::with_mode(&params(), seed, Mode::Tunnel).unwrap();
            let spi = spis.allocate(0).unwrap();
            let cmd = WorkerCmd::InstallSaPair {
                inbound: Box::new(gw.inbound.with_spi(spi)),
                outbound: Box::new(gw.outbound),
            };
            let mut s = gw.session;
            s.inbound_spi = Some(spi);
            (spi, cmd, s)
        };
        let (old, cmd, session) = pair(1);
        let (new, cmd2, _) = pair(2);
        rig.run([cmd, WorkerCmd::InstallSession(Box::new(session))]);
        let mut c_old = SimPeer::tunnel_client(params(), old, 1, client_inner).unwrap();
        assert_eq!(
            rig.decap(vec![from(&mut c_old)])[0].verdict,
            Verdict::Forward
        );
        rig.run([
            cmd2,
            WorkerCmd::RebindSessions {
                old_inbound_spi: old,
                new_inbound_spi: new,
            },
        ]);
        let mut c_new = SimPeer::tunnel_client(params(), new, 2, client_inner).unwrap();

        let mut f = vec![0u8; frame_len(64)];
        let r = write_inner_udp(&mut f, FRAME_HEADROOM, INSIDE, params().inner, 64);
        let mut batch = vec![Pkt::new(f, r.start, r.end)];
        rig.w.shard.encap_batch(&mut batch);
        let (s0, e0) = (batch[0].start, batch[0].end);
        assert!(c_new.open(&mut batch[0].buf, s0..e0).is_some());

        // An L2TP data packet (PPP/IPv4) from the control thread, under the new pair.
        let mut l2 = vec![0x00, 0x02, 0x01, 0x2c, 0x01, 0x90, 0xff, 0x03, 0x00, 0x21];
        let mut ip = vec![0u8; 40];
        write_inner_udp(&mut ip, 0, INSIDE, params().inner, 40);
        l2.extend_from_slice(&ip);
        let mut out = rig.run([WorkerCmd::SendL2tp {
            peer: PeerKey {
                addr: params().client,
                port: params().client_port,
                spi: new,
            },
            local: GW,
            packet: l2,
        }]);
        assert_eq!(out.len(), 1);
        let (s0, e0) = (out[0].start, out[0].end);
        let inner = c_new
            .open(&mut out[0].buf, s0..e0)
            .expect("tunnel mode, client's address");
        assert_eq!(&out[0].buf[inner], &ip[..]);
    }

    /// SendIke: one UDP datagram from our port to the peer's, with the non-ESP marker
    /// on 4500; the chain reads it back as IKE. Control messages carry our address and
    /// port.
    #[test]
    fn ike_goes_out_from_the_port_it_came_to() {
        let mut rig = Rig::new();
        let peer = Ipv4Addr::new(198, 51, 100, 7);
        let msg: Vec<u8> = (0..60u8).collect();
        let out = rig.run([
            WorkerCmd::SendIke {
                peer,
                peer_port: 500,
                local: GW,
                local_port: 500,
                data: msg.clone(),
            },
            WorkerCmd::SendIke {
                peer,
                peer_port: 4500,
                local: GW,
                local_port: 4500,
                data: msg.clone(),
            },
        ]);
        assert_eq!(out.len(), 2);
        for (p, (port, marker)) in out.iter().zip([(500u16, 0usize), (4500, 4)]) {
            assert_eq!(p.verdict, Verdict::Forward);
            let b = &p.buf[p.start..p.end];
            assert_eq!(b.len(), 20 + 8 + marker + msg.len());
            assert!(crate::esp::decap::ipv4_header_ok(&b[..20]));
            assert_eq!(
                (b[9], &b[12..16], &b[16..20]),
                (17, &GW.octets()[..], &peer.octets()[..])
            );
            assert_eq!(u16::from_be_bytes([b[20], b[21]]), port);
            assert_eq!(u16::from_be_bytes([b[22], b[23]]), port);
            assert_eq!(
                usize::from(u16::from_be_bytes([b[24], b[25]])),
                b.len() - 20
            );
            assert!(b[28..28 + marker].iter().all(|&x| x == 0));
            assert_eq!(&b[28 + marker..], &msg[..]);
            match classify(&p.buf, p.start..p.end).unwrap() {
                Classified::Ike { msg: m, dport, .. } => {
                    assert_eq!(dport, port);
                    assert_eq!(&p.buf[m], &msg[..]);
                }
                other => panic!("{other:?}"),
            }
        }
        // Too long for a frame: dropped, counted.
        let out = rig.run([WorkerCmd::SendIke {
            peer,
            peer_port: 500,
            local: GW,
            local_port: 500,
            data: vec![0; 4000],
        }]);
        assert!(out.is_empty());
        assert_eq!(rig.w.shard.stats.drops_for(DropReason::TooLong), 1);

        // Up: IKE from the golden capture keeps our address and port.
        let reader =
            crate::wire::pcap::Reader::new(include_bytes!("../../tests/data/ikev1-natt.pcap"))
                .unwrap();
        let frames: Vec<Vec<u8>> = reader.records().map(|r| r.unwrap().data.to_vec()).collect();
        let pkts: Vec<Pkt<Vec<u8>>> = [0usize, 4]
            .iter()
            .map(|&i| Pkt::new(frames[i].clone(), 14, frames[i].len()))
            .collect();
        let pkts = rig.decap(pkts);
        for p in &pkts {
            let Verdict::ToControl(kind) = p.verdict else {
                panic!("{:?}", p.verdict)
            };
            rig.w.pass_up(kind, p);
        }
        let ports: Vec<(Ipv4Addr, u16)> = rig
            .up
            .try_iter()
            .map(|m| {
                assert_eq!(m.kind, ControlKind::Ike);
                (m.local, m.local_port)
            })
            .collect();
        let dst = Ipv4Addr::new(frames[0][30], frames[0][31], frames[0][32], frames[0][33]);
        assert_eq!(ports, vec![(dst, 500), (dst, 4500)]);
    }

    #[test]
    fn echo_requests_are_answered_in_place() {
        let mut p = vec![0u8; 60];
        crate::esp::encap::write_ipv4_header(
            &mut p[..20],
            60,
            7,
            1,
            Ipv4Addr::new(10, 99, 0, 10),
            Ipv4Addr::new(10, 99, 0, 1),
        );
        p[20] = 8;
        p[24..28].copy_from_slice(&[0, 1, 0, 2]);
        let c = !crate::wire::checksum::fold(crate::wire::checksum::sum(&p[20..]));
        p[22..24].copy_from_slice(&c.to_be_bytes());
        assert!(echo_reply_in_place(&mut p));
        assert_eq!(&p[12..16], &[10, 99, 0, 1]);
        assert_eq!(&p[16..20], &[10, 99, 0, 10]);
        assert_eq!(p[20], 0);
        assert_eq!(
            crate::wire::checksum::fold(crate::wire::checksum::sum(&p[20..])),
            0xffff
        );
        assert_eq!(
            crate::wire::checksum::fold(crate::wire::checksum::sum(&p[..20])),
            0xffff
        );
        assert!(!echo_reply_in_place(&mut p), "a reply is not answered");
        assert!(!echo_reply_in_place(&mut [0u8; 10]));
    }
}
