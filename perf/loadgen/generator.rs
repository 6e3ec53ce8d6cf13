//! `sekisho-perf gen`: plays the clients of the session table. Every packet is what a
//! real client sends — inner IPv4/UDP in PPP in L2TP in UDP 1701 in ESP in UDP 4500 —
//! sealed by [`SimPeer`] with the session's keys and strictly increasing sequence
//! numbers, so the gateway's anti-replay accepts every one.
//!
//! The schedule is a sequence of positions `i = 0, 1, 2, …`: position `i` belongs to
//! session `i mod N` and carries that session's sequence number `i / N + 1`, so the
//! sessions take turns (with 10 000 sessions, consecutive packets never share an SA)
//! and each session's numbers only grow. The bulk of the positions is sealed before
//! the run, in parallel with rayon, into a pool sized for the run (`--rate` ×
//! `--seconds`, or for `max` up to `--max-pps` × `--seconds`, capped by `--pool-mb`);
//! the generator stops early if the pool runs out (it says so). Sequence numbers are
//! never reused, so the pool is never cycled.
//!
//! Latency: every `--probe-every`-th position is a probe. A probe is not pre-sealed:
//! the sender builds it when its turn comes, writes CLOCK_MONOTONIC into the inner
//! payload and seals it on the spot with the session's next sequence number. Probes
//! therefore ride in the same stream, the same sessions and the same queues as the
//! bulk, and their one-way latency (sink clock − this clock) covers the generator's tx
//! ring, both links, the gateway and the sink's rx ring. The bulk carries timestamp 0.
//!
//! Frames leave through AF_XDP TX on the queue of the worker that owns the session
//! (the queue the gateway's steering maps to that worker).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::json;

use sekisho::crypto::{Backend, Transform};
use sekisho::dataplane::peer::{FRAME_HEADROOM, PeerParams, SimPeer, new_shard, write_inner_udp};
use sekisho::dataplane::xdp::port::{interface_mac, kernel_neighbours};
use sekisho::dataplane::xdp::xsk::{XdpFrame, Xsk};
use sekisho::esp::sa::{Direction, Encap, Lifetime, Mode, Sa, SaConfig};

use crate::common::*;

/// Options of `gen`.
pub struct Args {
    pub ifname: String,
    pub keys: String,
    pub size: String,
    pub rate: Option<f64>,
    pub seconds: f64,
    pub inner_dst: Ipv4Addr,
    pub dst_mac: Option<[u8; 6]>,
    pub probe_every: u64,
    pub pool_mb: usize,
    pub max_pps: f64,
    pub cpu: Option<usize>,
    pub batch: usize,
    pub sizes: XskSizes,
}

const ETH: usize = 14;

/// What the generator knows of one client.
struct Client {
    e: SessionEntry,
    k_in: Vec<u8>,
}

/// A client for session `c`, its outbound SA keyed with the session's KEYMAT under
/// the SPI the gateway allocated, next sequence number 1.
fn client_peer(c: &Client, t: Transform, gateway: Ipv4Addr, gw_port: u16) -> Res<SimPeer> {
    let e = &c.e;
    let params = PeerParams {
        transform: t,
        natt: true,
        gateway,
        client: e.client_addr,
        client_port: e.client_port,
        inner: e.inner_addr,
        gw_ids: (e.gw_tunnel, e.gw_session),
        client_ids: (e.client_tunnel, e.client_session),
        backend: Backend::default(),
    };
    // establish() keys a local mirror of the gateway; only the client half is used.
    let mut mirror = new_shard(1);
    let mut peer = SimPeer::establish(&mut mirror, params, e.index as u8)
        .map_err(|err| format!("session {}: {err:?}", e.index))?;
    let mut iv = SplitMix(e.keymat_seed ^ 0x1f);
    peer.out_sa = Sa::new(
        &SaConfig {
            spi: e.spi_in,
            direction: Direction::Outbound,
            transform: t,
            esn: false,
            mode: Mode::Transport,
            encap: Encap::Udp {
                local_port: e.client_port,
                remote_port: gw_port,
            },
            local: e.client_addr,
            remote: gateway,
            replay_window: 1024,
            lifetime: Lifetime::default(),
            backend: Backend::default(),
        },
        &c.k_in,
        iv.bytes(16).try_into().unwrap_or([3; 16]),
        Instant::now(),
    )
    .map_err(|err| format!("session {} SA: {err:?}", e.index))?;
    Ok(peer)
}

/// Moves a peer's outbound sequence counter to `next`.
fn advance(peer: &mut SimPeer, next: u64) -> Res<()> {
    while peer.out_sa.next_seq().is_some_and(|n| n < next) {
        peer.out_sa.take_seq().map_err(|e| format!("{e:?}"))?;
    }
    match peer.out_sa.next_seq() {
        Some(n) if n == next => Ok(()),
        n => Err(format!("sequence number {n:?} is past {next}")),
    }
}

/// Builds the Ethernet frame of position `i` in `scratch` and returns its range.
#[allow(clippy::too_many_arguments)]
fn build(
    peer: &mut SimPeer,
    scratch: &mut [u8],
    eth: &[u8; ETH],
    inner: Ipv4Addr,
    dst: Ipv4Addr,
    size: usize,
    flags: u32,
    i: u64,
    ts: u64,
) -> Res<std::ops::Range<usize>> {
    let r = write_inner_udp(scratch, FRAME_HEADROOM, inner, dst, size);
    payload::write(&mut scratch[r.start + payload::AT..], flags, i, ts);
    let o = peer.seal(scratch, r).ok_or("seal failed")?;
    let s = o.start - ETH;
    scratch[s..o.start].copy_from_slice(eth);
    Ok(s..o.end)
}

/// Pre-sealed frames of a run of one session's positions.
struct Chunk {
    data: Vec<u8>,
    offs: Vec<usize>,
}

/// Every pre-sealed frame: session `s`, per-session index `j`.
struct Pool {
    chunk_len: u64,
    per_session_chunks: usize,
    chunks: Vec<Chunk>,
}

impl Pool {
    fn get(&self, s: usize, j: u64) -> &[u8] {
        let c = &self.chunks[s * self.per_session_chunks + (j / self.chunk_len) as usize];
        let l = (j % self.chunk_len) as usize;
        &c.data[c.offs[l]..c.offs[l + 1]]
    }

    fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.data.len()).sum()
    }
}

/// Outer frame length for an inner packet (Ethernet, IPv4, UDP 4500, ESP, UDP 1701,
/// L2TP, PPP), for sizing the pool.
fn frame_len(t: Transform, inner: usize) -> usize {
    let udp = inner + 8 + 6 + 4;
    ETH + 20 + 8 + t.overhead() + t.padded_len(udp)
}

/// One socket per queue, with the sessions whose packets it carries.
struct QueueTx {
    xsk: Xsk,
    sessions: Vec<usize>,
    cursor: u64,
    total: u64,
}

/// Runs the generator.
pub fn run(a: Args, signals: &Signals) -> Res<()> {
    let keys = KeysFile::load(&a.keys)?;
    let t = Transform::from_name(&keys.transform)
        .ok_or(format!("unknown transform {}", keys.transform))?;
    let mix = SizeMix::parse(&a.size)?;
    let n = keys.sessions.len();
    if n == 0 {
        return Err("the session table is empty".into());
    }
    let src_mac = interface_mac(&a.ifname).ok_or(format!("no MAC for {}", a.ifname))?;
    let dst_mac = match a.dst_mac {
        Some(m) => m,
        None => *kernel_neighbours().get(&keys.gateway).ok_or(format!(
            "no neighbour entry for the gateway {} (add one: ip neigh replace {} lladdr MAC dev {} nud permanent)",
            keys.gateway, keys.gateway, a.ifname
        ))?,
    };
    let mut eth = [0u8; ETH];
    eth[0..6].copy_from_slice(&dst_mac);
    eth[6..12].copy_from_slice(&src_mac);
    eth[12..14].copy_from_slice(&[0x08, 0x00]);
    let clients: Vec<Client> = keys
        .sessions
        .iter()
        .map(|e| {
            Ok(Client {
                e: e.clone(),
                k_in: unhex(&e.keymat_in)?,
            })
        })
        .collect::<Res<_>>()?;

    // Pool size.
    let mean_frame = match mix {
        SizeMix::Fixed(s) => frame_len(t, s) as f64,
        SizeMix::Imix => IMIX.iter().map(|&s| frame_len(t, s)).sum::<usize>() as f64 / 12.0,
    };
    let budget = (a.pool_mb as f64 * 1048576.0 / (mean_frame + 8.0)) as u64;
    let wanted = match a.rate {
        Some(r) => (r * a.seconds * 1.02) as u64 + 1024,
        None => (a.max_pps * a.seconds) as u64,
    };
    let per_session = budget.min(wanted).div_ceil(n as u64).max(1);
    let total = per_session * n as u64;
    let threads = rayon::current_num_threads() as u64;
    let chunk_len = per_session
        .min(4096)
        .max(total.div_ceil(threads * 8))
        .min(per_session);
    let per_session_chunks = per_session.div_ceil(chunk_len) as usize;
    let (gw, gw_port, dst, p) = (keys.gateway, keys.gateway_port, a.inner_dst, a.probe_every);
    eprintln!(
        "gen: sealing {total} packets ({n} session(s) × {per_session}, size {}, ~{:.0} MB) on {threads} thread(s)",
        mix.name(),
        total as f64 * (mean_frame + 8.0) / 1048576.0
    );
    let sealing = Instant::now();
    let tasks: Vec<(usize, usize)> = (0..n)
        .flat_map(|s| (0..per_session_chunks).map(move |c| (s, c)))
        .collect();
    let chunks: Vec<Chunk> = tasks
        .par_iter()
        .map(|&(s, c)| {
            let cl = &clients[s];
            let mut peer = client_peer(cl, t, gw, gw_port)?;
            let j0 = c as u64 * chunk_len;
            let j1 = (j0 + chunk_len).min(per_session);
            advance(&mut peer, j0 + 1)?;
            let est = ((j1 - j0) as f64 * mean_frame) as usize + 4096;
            let mut data = Vec::with_capacity(est);
            let mut offs = Vec::with_capacity((j1 - j0) as usize + 1);
            offs.push(0);
            let mut scratch = vec![0u8; 2048];
            for j in j0..j1 {
                let i = j * n as u64 + s as u64;
                if is_probe(i, p) {
                    // Sealed at send time: its sequence number is left for it.
                    peer.out_sa.take_seq().map_err(|e| format!("{e:?}"))?;
                } else {
                    let r = build(
                        &mut peer,
                        &mut scratch,
                        &eth,
                        cl.e.inner_addr,
                        dst,
                        mix.at(i),
                        0,
                        i,
                        0,
                    )?;
                    data.extend_from_slice(&scratch[r]);
                }
                offs.push(data.len());
            }
            Ok(Chunk { data, offs })
        })
        .collect::<Res<_>>()?;
    let pool = Pool {
        chunk_len,
        per_session_chunks,
        chunks,
    };
    // The probes' own clients, each at sequence number 1; advanced as probes go out.
    let mut probe_peers: Vec<SimPeer> = clients
        .par_iter()
        .map(|c| client_peer(c, t, gw, gw_port))
        .collect::<Res<_>>()?;
    let pre_encrypt_s = sealing.elapsed().as_secs_f64();
    eprintln!(
        "gen: sealed {} MB in {pre_encrypt_s:.2} s",
        pool.bytes() / 1048576
    );

    // One socket per queue that carries sessions.
    let mut by_queue: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (s, c) in clients.iter().enumerate() {
        by_queue.entry(c.e.queue).or_default().push(s);
    }
    let mut queues = Vec::new();
    for (q, sessions) in by_queue {
        let (xsk, zc) = open_xsk(&a.ifname, q, a.sizes)?;
        eprintln!(
            "gen: queue {q}: {} session(s), {}",
            sessions.len(),
            if zc { "zero-copy" } else { "copy mode" }
        );
        let total = per_session * sessions.len() as u64;
        queues.push(QueueTx {
            xsk,
            sessions,
            cursor: 0,
            total,
        });
    }
    if let Some(c) = a.cpu {
        pin(c)?;
    }

    // Send.
    let batch = a.batch.clamp(1, 64);
    let mut out: Vec<(XdpFrame, usize, usize)> = Vec::with_capacity(batch);
    let mut probe_cache: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut scratch = vec![0u8; 2048];
    let (mut sent, mut probes, mut kicks) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.seconds);
    let first_ns = now_ns();
    let cpu0 = thread_cpu_ns();
    let mut stopped_by = "seconds";
    let mut round = 0u64;
    'run: loop {
        round += 1;
        if round.is_multiple_of(64) {
            if Instant::now() >= deadline {
                break;
            }
            if signals.pending() {
                stopped_by = "signal";
                break;
            }
        }
        let mut allowed = batch as u64;
        if let Some(r) = a.rate {
            let due = (r * started.elapsed().as_secs_f64()) as u64;
            if due <= sent {
                // Sleep rather than spin: the sink may share this CPU, and a spinning
                // generator would delay it by a scheduler slice. A late wakeup is made
                // up by a larger batch.
                let ahead = (sent + 1 - due) as f64 / r;
                std::thread::sleep(Duration::from_secs_f64(ahead.clamp(5e-6, 0.01)));
                if Instant::now() >= deadline {
                    break;
                }
                continue;
            }
            allowed = allowed.min(due - sent);
        }
        let mut active = false;
        for q in queues.iter_mut() {
            if q.cursor >= q.total {
                continue;
            }
            active = true;
            let nq = q.sessions.len() as u64;
            let mut k = 0;
            while k < allowed && q.cursor + k < q.total {
                let Some(mut f) = q.xsk.alloc() else { break };
                let idx = q.cursor + k;
                let s = q.sessions[(idx % nq) as usize];
                let j = idx / nq;
                let i = j * n as u64 + s as u64;
                let fb = f.as_mut();
                if is_probe(i, p) {
                    // A probe refused by a full ring is sent again as it was built.
                    let b = match probe_cache.entry(i) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(v) => {
                            let peer = &mut probe_peers[s];
                            advance(peer, j + 1)?;
                            let ts = now_ns();
                            let r = build(
                                peer,
                                &mut scratch,
                                &eth,
                                clients[s].e.inner_addr,
                                dst,
                                mix.at(i),
                                payload::PROBE,
                                i,
                                ts,
                            )?;
                            v.insert(scratch[r].to_vec())
                        }
                    };
                    fb[..b.len()].copy_from_slice(b);
                    out.push((f, 0, b.len()));
                } else {
                    let b = pool.get(s, j);
                    fb[..b.len()].copy_from_slice(b);
                    out.push((f, 0, b.len()));
                }
                k += 1;
            }
            let want = out.len() as u64;
            let ok = if want > 0 {
                q.xsk.tx_batch(out.drain(..)) as u64
            } else {
                0
            };
            for idx in q.cursor..q.cursor + ok {
                let s = q.sessions[(idx % nq) as usize];
                let i = (idx / nq) * n as u64 + s as u64;
                if is_probe(i, p) {
                    probes += 1;
                    probe_cache.remove(&i);
                }
            }
            q.cursor += ok;
            sent += ok;
            if ok < want || want == 0 {
                // Ring full (or no free frame): in copy mode only a syscall makes the
                // kernel transmit, and tx_batch kicks only when it queued something.
                // poll() drives copy-mode tx.
                q.xsk.wait_rx(0);
                kicks += 1;
            }
        }
        if !active {
            stopped_by = "pool exhausted";
            break 'run;
        }
    }
    let last_ns = now_ns();
    let send_cpu_s = thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e9;
    let send_s = started.elapsed().as_secs_f64();
    // Let the kernel finish what is queued, and take the frames back.
    let drain_until = Instant::now() + Duration::from_secs(1);
    let mut unreturned = 0;
    for q in queues.iter_mut() {
        loop {
            q.xsk.wait_rx(0);
            q.xsk.reap_completions();
            if q.xsk.free_frames() >= a.sizes.frames as usize - a.sizes.ring as usize
                || Instant::now() > drain_until
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Frames still in the fill ring belong to the (unused) receive side.
        unreturned += (a.sizes.frames as usize)
            .saturating_sub(a.sizes.ring as usize)
            .saturating_sub(q.xsk.free_frames());
    }
    let mut kern = KernelXsk::default();
    let mut user = UserXsk::default();
    for q in &queues {
        kern.add(&KernelXsk::of(&q.xsk));
        let c = q.xsk.counters;
        user.rx += c.rx;
        user.tx += c.tx;
        user.tx_ring_full += c.tx_ring_full;
        user.wakeups += c.wakeups;
    }
    if stopped_by == "pool exhausted" {
        eprintln!(
            "gen: the pool ran out after {send_s:.2} s (raise --pool-mb or --max-pps for longer runs)"
        );
    }
    let out = json!({
        "mode": "gen",
        "size": mix.name(),
        "transform": t.name(),
        "sessions": n,
        "queues": queues.len(),
        "rate": a.rate,
        "probe_every": p,
        "pool_packets": total,
        "pool_bytes": pool.bytes(),
        "pre_encrypt_s": pre_encrypt_s,
        "send_s": send_s,
        "send_cpu_s": send_cpu_s,
        "sent": sent,
        "probes_sent": probes,
        "offered_mpps": sent as f64 / send_s / 1e6,
        "stopped_by": stopped_by,
        "first_send_ns": first_ns,
        "last_send_ns": last_ns,
        "poll_kicks": kicks,
        "unreturned_frames": unreturned,
        "xsk": user,
        "xsk_kernel": kern,
    });
    println!("{out}");
    Ok(())
}
