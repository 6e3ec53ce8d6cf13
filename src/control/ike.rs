//! The IKEv1 responder glued to the data plane: its datagrams go out through the
//! workers, its SA pairs are installed, rebound at rekey and removed through the
//! workers' command queues, and when an SA pair dies without a successor the L2TP
//! tunnels that ran over it are closed (their sessions, addresses and accounting
//! follow through the L2TP events).

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::dataplane::worker::{ControlMsg, WorkerCmd};
use crate::esp::sa::{Direction, Encap, Lifetime, Limits, Sa, SaConfig, TunnelAddrs};
use crate::esp::shard::SpiAllocators;
use crate::ike::v1::responder::{Action, Datagram, Install, SpiSource};
use crate::l2tp;

use super::Control;

/// Our SPIs come from the data plane's allocators (the SPI encodes the worker).
pub struct PlaneSpis(pub SpiAllocators);

impl SpiSource for PlaneSpis {
    fn allocate(&mut self, worker: u16) -> Option<u32> {
        self.0.allocate(worker).ok()
    }
    fn release(&mut self, spi: u32) {
        self.0.release(spi);
    }
}

/// How the data plane's SAs are built from negotiated pairs.
#[derive(Clone, Copy, Debug)]
pub struct SaSettings {
    /// Anti-replay window.
    pub replay_window: u32,
    /// Crypto backend.
    pub backend: crate::crypto::Backend,
}

fn iv_seed() -> [u8; 16] {
    let mut s = [0u8; 16];
    // A failing system RNG leaves zeros; the seed only diversifies GCM IV counters.
    let _ = SystemRandom::new().fill(&mut s);
    s
}

/// Builds the inbound and outbound data-plane SAs of a negotiated pair.
pub fn build_pair(i: &Install, s: SaSettings, now: Instant) -> Result<(Sa, Sa), String> {
    let c = &i.child;
    let encap = if c.udp {
        Encap::Udp {
            local_port: if i.local.port() == 500 {
                4500
            } else {
                i.local.port()
            },
            remote_port: if i.peer.port() == 500 {
                4500
            } else {
                i.peer.port()
            },
        }
    } else {
        Encap::None
    };
    // Time limits are the control thread's (rekey, delete, expiry); the data plane
    // enforces the volume limit.
    let lifetime = Lifetime {
        soft: Limits::default(),
        hard: Limits {
            bytes: c.lifetime_kb.map(|kb| kb.saturating_mul(1024)),
            packets: None,
            time: None,
        },
    };
    let cfg = |spi, direction| SaConfig {
        spi,
        direction,
        transform: c.transform,
        esn: false,
        mode: c.mode,
        encap,
        local: *i.local.ip(),
        remote: *i.peer.ip(),
        replay_window: s.replay_window,
        lifetime,
        backend: s.backend,
    };
    let inbound = Sa::new(
        &cfg(c.inbound_spi, Direction::Inbound),
        &c.inbound_keymat,
        iv_seed(),
        now,
    )
    .map_err(|e| format!("inbound SA: {e:?}"))?;
    let outbound = Sa::new(
        &cfg(c.outbound_spi, Direction::Outbound),
        &c.outbound_keymat,
        iv_seed(),
        now,
    )
    .map_err(|e| format!("outbound SA: {e:?}"))?;
    // Tunnel mode: the inner addresses from the Quick Mode IDs (a host-to-host
    // tunnel; the data plane also learns them from verified packets).
    let inbound = match (c.mode, c.peer_inner()) {
        (crate::esp::sa::Mode::Tunnel, Some(peer)) => inbound.with_tunnel_addrs(TunnelAddrs {
            local: c.local_inner().unwrap_or(*i.local.ip()),
            peer,
        }),
        _ => inbound,
    };
    Ok((inbound, outbound))
}

impl Control {
    /// Hands an IKE datagram to the responder.
    pub(super) fn on_ike(&mut self, now: Instant, msg: &ControlMsg) {
        let Some(ike) = self.ike.as_mut() else {
            self.stats.dropped += 1;
            return;
        };
        ike.input(
            now,
            Datagram {
                worker: msg.worker,
                peer: SocketAddrV4::new(msg.peer.addr, msg.peer.port),
                local: SocketAddrV4::new(msg.local, msg.local_port),
                data: &msg.data,
            },
        );
        self.drain_ike(now);
    }

    /// Runs the responder's timers and, every few seconds, tells it which SAs carried
    /// traffic (DPD only asks peers that were silent).
    pub(super) fn ike_timers(&mut self, now: Instant) {
        if self.ike.is_none() {
            return;
        }
        if self.next_activity_poll.is_none_or(|t| t <= now) {
            self.poll_activity(now);
            self.next_activity_poll = Some(now + self.activity_every);
        }
        if let Some(ike) = self.ike.as_mut()
            && ike.next_timeout().is_some_and(|t| t <= now)
        {
            ike.handle_timeout(now);
        }
        self.drain_ike(now);
    }

    fn poll_activity(&mut self, now: Instant) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let mut per_worker: Vec<Vec<u32>> = vec![Vec::new(); self.workers.len()];
        for (w, spi) in ike.active_spis() {
            if let Some(v) = per_worker.get_mut(usize::from(w)) {
                v.push(spi);
            }
        }
        for (w, spis) in per_worker.into_iter().enumerate() {
            if spis.is_empty() {
                continue;
            }
            let (tx, rx) = crossbeam_channel::bounded(1);
            if self.workers[w]
                .send(WorkerCmd::QuerySaActivity { spis, reply: tx })
                .is_err()
            {
                continue;
            }
            let Ok(counts) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            for (spi, packets) in counts {
                let last = self.sa_packets.insert(spi, packets);
                if last.is_none_or(|l| l != packets) {
                    ike.child_activity(spi, now);
                }
            }
        }
    }

    /// Acts on the responder's output.
    pub(super) fn drain_ike(&mut self, now: Instant) {
        loop {
            let Some(a) = self.ike.as_mut().and_then(|i| i.poll_action()) else {
                return;
            };
            match a {
                Action::Send {
                    worker,
                    peer,
                    local,
                    data,
                } => {
                    if let Some(w) = self.workers.get(usize::from(worker)) {
                        let _ = w.send(WorkerCmd::SendIke {
                            peer: *peer.ip(),
                            peer_port: peer.port(),
                            local: *local.ip(),
                            local_port: local.port(),
                            data,
                        });
                    }
                }
                Action::Install(i) => match build_pair(&i, self.sa_settings, now) {
                    Ok((inbound, outbound)) => {
                        if let Some(w) = self.workers.get(usize::from(i.worker)) {
                            let _ = w.send(WorkerCmd::InstallSaPair {
                                inbound: Box::new(inbound),
                                outbound: Box::new(outbound),
                            });
                            if let Some(old) = i.rekeys {
                                // The peer may send on the new pair before QM3 reaches
                                // us: its sessions accept it from now on.
                                let _ = w.send(WorkerCmd::AcceptSpi {
                                    old_inbound_spi: old,
                                    new_inbound_spi: i.child.inbound_spi,
                                });
                                self.spi_alias.insert(i.child.inbound_spi, old);
                            }
                        }
                    }
                    Err(e) => tracing::warn!("IPsec SA not installed: {e}"),
                },
                Action::Activate {
                    worker,
                    inbound_spi,
                    replaces,
                } => {
                    tracing::info!(
                        spi_in = format_args!("{inbound_spi:08x}"),
                        rekey_of = replaces.map(|r| format!("{r:08x}")),
                        "IPsec SA established"
                    );
                    self.spi_alias.remove(&inbound_spi);
                    if let Some(old) = replaces {
                        if let Some(w) = self.workers.get(usize::from(worker)) {
                            let _ = w.send(WorkerCmd::RebindSessions {
                                old_inbound_spi: old,
                                new_inbound_spi: inbound_spi,
                            });
                        }
                        self.rebind_l2tp(old, inbound_spi);
                    }
                }
                Action::Remove {
                    worker,
                    inbound_spi,
                    successor,
                    reason,
                } => {
                    if let Some(w) = self.workers.get(usize::from(worker)) {
                        let _ = w.send(WorkerCmd::RemoveSaPair { inbound_spi });
                    }
                    self.sa_packets.remove(&inbound_spi);
                    self.spi_alias.remove(&inbound_spi);
                    match successor {
                        Some(new) => self.rebind_l2tp(inbound_spi, new),
                        None => self.close_l2tp_over(now, inbound_spi, reason),
                    }
                }
            }
        }
    }

    /// The L2TP tunnels and calls over SA pair `old` now run over `new`.
    fn rebind_l2tp(&mut self, old: u32, new: u32) {
        let keys: Vec<l2tp::PeerKey> = self
            .peer_worker
            .keys()
            .filter(|k| k.spi == old)
            .copied()
            .collect();
        for k in keys {
            let nk = l2tp::PeerKey { spi: new, ..k };
            self.lns.rekey_peer(k, nk);
            if let Some(w) = self.peer_worker.remove(&k) {
                self.peer_worker.insert(nk, w);
            }
        }
        for c in self.calls.values_mut() {
            if c.peer.spi == old {
                c.peer.spi = new;
            }
        }
    }

    /// The SA pair is gone for good: its L2TP tunnels end (sessions, addresses and
    /// accounting follow).
    fn close_l2tp_over(&mut self, now: Instant, spi: u32, reason: &str) {
        let keys: Vec<l2tp::PeerKey> = self
            .peer_worker
            .keys()
            .filter(|k| k.spi == spi)
            .copied()
            .collect();
        for k in keys {
            let result = l2tp::ResultCode::new(
                l2tp::stopccn::GENERAL_REQUEST,
                None,
                format!("IPsec SA gone: {reason}"),
            );
            self.lns.close_peer(now, k, result);
            self.peer_worker.remove(&k);
        }
        // Calls whose tunnel did not see a control packet yet (no peer_worker entry).
        let ids: Vec<(u16, u16)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.peer.spi == spi)
            .map(|(i, _)| *i)
            .collect();
        for ids in ids {
            self.lns.close_session(
                now,
                ids.0,
                ids.1,
                l2tp::ResultCode::new(
                    l2tp::cdn::ADMINISTRATIVE,
                    None,
                    format!("IPsec SA gone: {reason}"),
                ),
            );
            if let Some(mut c) = self.calls.remove(&ids) {
                c.link.lower_down(now);
                self.finish(ids, c, &format!("IPsec SA gone: {reason}"));
            }
        }
        self.drain_lns(now);
    }
}
