//! `sekisho-perf sink`: counts what arrives on the inside link over AF_XDP (one socket
//! per queue, steered by sekisho's own inside program with the capture network as its
//! "pool") and turns probe timestamps into a one-way latency histogram.
//!
//! Two kinds of packets count:
//! - inner IPv4/UDP packets with the generator's payload (behind the gateway): probes
//!   carry their send time in clear;
//! - outer ESP-in-UDP packets (behind the no-crypto forwarder): the position of a
//!   packet follows from its SPI and sequence number, so the sink knows which ones
//!   are probes and opens just those with the session's key from the session table
//!   (`--keys`) to read the send time. Bulk packets are only counted.
//!
//! Rates are over the sink's active window (first to last packet), so the time the
//! generator spends sealing before it sends does not dilute them.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use hdrhistogram::Histogram;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::json;

use sekisho::crypto::{Backend, EspCipher, Transform};
use sekisho::dataplane::xdp::loader::{Side, SteerConfig, Steering};
use sekisho::dataplane::xdp::xsk::XdpFrame;
use sekisho::esp::decap::{self, Classified};
use sekisho::wire::{l2tp, ppp};

use crate::common::*;

/// Options of `sink`.
pub struct Args {
    pub ifname: String,
    pub seconds: f64,
    pub queues: u32,
    pub capture: String,
    pub keys: Option<String>,
    pub idle_exit: f64,
    pub cpu: Option<usize>,
    pub probe_every: u64,
    pub ready: Option<String>,
    pub sizes: XskSizes,
    pub batch: usize,
}

#[derive(Default)]
struct Counts {
    inner: u64,
    inner_bytes: u64,
    esp: u64,
    esp_bytes: u64,
    other: u64,
    probes_inner: u64,
    probes_esp: u64,
    probe_open_failed: u64,
    clock_backwards: u64,
}

struct Probes {
    t: Transform,
    n: u64,
    every: u64,
    by_spi: HashMap<u32, (u64, EspCipher)>,
}

/// Opens a client → gateway packet at `buf[ip]` and returns the inner IPv4 packet.
fn open_inner(
    t: Transform,
    c: &EspCipher,
    buf: &mut [u8],
    ip: Range<usize>,
) -> Option<Range<usize>> {
    let Classified::Esp(o) = decap::classify(buf, ip).ok()? else {
        return None;
    };
    c.open(&mut buf[o.esp.clone()], u64::from(o.seq_lo)).ok()?;
    let inner = decap::strip_trailer(buf, o.esp, t).ok()?;
    let u = buf.get(inner.payload.clone())?;
    let ulen = usize::from(u16::from_be_bytes([*u.get(4)?, *u.get(5)?]));
    let l2 = inner.payload.start + 8..inner.payload.start + ulen;
    let pkt = l2tp::Packet::new_checked(buf.get(l2.clone())?).ok()?;
    let ppp_r = l2.start + pkt.header_len()..l2.end;
    let f = ppp::Frame::new_checked(buf.get(ppp_r.clone())?).ok()?;
    (f.protocol() == ppp::Protocol::IPV4).then(|| ppp_r.start + f.payload_offset()..ppp_r.end)
}

/// The payload of an inner IPv4/UDP packet at `b`.
fn inner_payload(b: &[u8]) -> Option<(u32, u64, u64)> {
    let hl = usize::from(b.first()? & 0x0f) * 4;
    if *b.get(9)? != 17 {
        return None;
    }
    payload::read(b.get(hl + 8..)?)
}

/// Classifies and counts one frame; returns a probe's send timestamp.
fn handle(f: &mut [u8], c: &mut Counts, probes: &Option<Probes>) -> Option<u64> {
    if f.len() < 14 + 28 || f[12..14] != [0x08, 0x00] {
        c.other += 1;
        return None;
    }
    let ip = 14;
    let hl = usize::from(f[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[ip + 2], f[ip + 3]]));
    if f[ip] >> 4 != 4 || hl < 20 || total < hl + 8 || ip + total > f.len() || f[ip + 9] != 17 {
        c.other += 1;
        return None;
    }
    if let Some((flags, _, ts)) = inner_payload(&f[ip..ip + total]) {
        c.inner += 1;
        c.inner_bytes += total as u64;
        if flags & payload::PROBE != 0 {
            c.probes_inner += 1;
            return Some(ts);
        }
        return None;
    }
    let udp = ip + hl;
    let dport = u16::from_be_bytes([f[udp + 2], f[udp + 3]]);
    let esp = udp + 8;
    if dport != 4500 || total < hl + 16 || f[esp..esp + 4] == [0; 4] {
        c.other += 1;
        return None;
    }
    c.esp += 1;
    c.esp_bytes += total as u64;
    let p = probes.as_ref()?;
    let spi = u32::from_be_bytes([f[esp], f[esp + 1], f[esp + 2], f[esp + 3]]);
    let seq = u32::from_be_bytes([f[esp + 4], f[esp + 5], f[esp + 6], f[esp + 7]]);
    let (s, cipher) = p.by_spi.get(&spi)?;
    let i = (u64::from(seq).checked_sub(1)?) * p.n + s;
    if !is_probe(i, p.every) {
        return None;
    }
    match open_inner(p.t, cipher, f, ip..ip + total).and_then(|r| inner_payload(&f[r])) {
        Some((flags, pos, ts)) if flags & payload::PROBE != 0 && pos == i => {
            c.probes_esp += 1;
            Some(ts)
        }
        _ => {
            c.probe_open_failed += 1;
            None
        }
    }
}

/// Runs the sink until `--seconds`, `--idle-exit` after traffic stopped, or a signal.
pub fn run(a: Args, signals: &Signals) -> Res<()> {
    let (net, len) = parse_net(&a.capture)?;
    let probes = match &a.keys {
        Some(path) => {
            let k = KeysFile::load(path)?;
            let t = Transform::from_name(&k.transform)
                .ok_or(format!("unknown transform {}", k.transform))?;
            let mut by_spi = HashMap::new();
            for (s, e) in k.sessions.iter().enumerate() {
                let c =
                    EspCipher::new(t, &unhex(&e.keymat_in)?, false, Backend::default(), [0; 16])
                        .map_err(|err| format!("session {s} key: {err:?}"))?;
                by_spi.insert(e.spi_in, (s as u64, c));
            }
            Some(Probes {
                t,
                n: k.sessions.len() as u64,
                every: a.probe_every,
                by_spi,
            })
        }
        None => None,
    };
    let cfg = SteerConfig {
        ike_port: 500,
        natt_port: 4500,
        l2tp_port: 1701,
        pool: Some((net, len)),
    };
    let mut steer =
        Steering::attach(&a.ifname, Side::Inside, &cfg).ctx(&format!("XDP on {}", a.ifname))?;
    let mut socks = Vec::new();
    for q in 0..a.queues {
        let (x, _) = open_xsk(&a.ifname, q, a.sizes)?;
        steer.register(q, &x).ctx("register sink socket")?;
        socks.push(x);
    }
    if let Some(c) = a.cpu {
        pin(c)?;
    }
    mark_ready(&a.ready)?;
    eprintln!(
        "sink: {} queue(s) on {}, capturing {}",
        a.queues, a.ifname, a.capture
    );

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).ctx("histogram")?;
    let mut c = Counts::default();
    let mut rx: Vec<(XdpFrame, usize, usize)> = Vec::with_capacity(a.batch);
    let started = Instant::now();
    let (mut first, mut last) = (0u64, 0u64);
    let mut last_packet = Instant::now();
    let mut stopped_by = "seconds";
    let mut busy = BusyClock::start();
    let mut last_tick = Instant::now();
    loop {
        if last_tick.elapsed().as_millis() >= 20 {
            busy.tick();
            last_tick = Instant::now();
        }
        let mut got = 0;
        for x in socks.iter_mut() {
            rx.clear();
            let n = x.rx_batch(&mut rx, a.batch);
            if n == 0 {
                continue;
            }
            got += n;
            let now = now_ns();
            if first == 0 {
                first = now;
            }
            last = now;
            for (mut f, s, e) in rx.drain(..) {
                if let Some(ts) = handle(&mut f.as_mut()[s..e], &mut c, &probes) {
                    if ts > now {
                        c.clock_backwards += 1;
                    } else {
                        let _ = hist.record((now - ts).max(1));
                    }
                }
                x.recycle(f);
            }
        }
        busy.saw(got);
        if got > 0 {
            last_packet = Instant::now();
            continue;
        }
        if started.elapsed().as_secs_f64() >= a.seconds {
            break;
        }
        if a.idle_exit > 0.0 && first != 0 && last_packet.elapsed().as_secs_f64() >= a.idle_exit {
            stopped_by = "idle";
            break;
        }
        if signals.pending() {
            stopped_by = "signal";
            break;
        }
        let mut pf: Vec<PollFd> = socks
            .iter()
            .map(|x| PollFd::new(std::os::fd::AsFd::as_fd(x), PollFlags::POLLIN))
            .collect();
        let _ = poll(&mut pf, PollTimeout::from(10u16));
    }
    busy.tick();
    let mut kern = KernelXsk::default();
    for x in &socks {
        kern.add(&KernelXsk::of(x));
    }
    let (redirected, passed, malformed) = steer.counters();
    let window = (last.saturating_sub(first)) as f64 / 1e9;
    let packets = c.inner + c.esp;
    let bytes = c.inner_bytes + c.esp_bytes;
    let rate = |x: f64| if window > 0.0 { x / window } else { 0.0 };
    let q = |p: f64| hist.value_at_quantile(p);
    let out = json!({
        "mode": "sink",
        "stopped_by": stopped_by,
        "packets": packets,
        "bytes": bytes,
        "inner_packets": c.inner,
        "esp_packets": c.esp,
        "other_packets": c.other,
        "window_s": window,
        "busy_cpu_s": busy.busy_ns as f64 / 1e9,
        "first_ns": first,
        "last_ns": last,
        "mpps": rate(packets as f64) / 1e6,
        "gbps": rate(bytes as f64 * 8.0) / 1e9,
        "latency_ns": {
            "count": hist.len(),
            "min": hist.min(),
            "p50": q(0.5),
            "p90": q(0.9),
            "p99": q(0.99),
            "p999": q(0.999),
            "max": hist.max(),
            "mean": hist.mean(),
        },
        "probes_inner": c.probes_inner,
        "probes_esp": c.probes_esp,
        "probe_open_failed": c.probe_open_failed,
        "clock_backwards": c.clock_backwards,
        "xsk_kernel": kern,
        // Redirected to our sockets but neither dropped by the kernel nor read.
        "left_in_rx_ring": redirected as i64
            - (kern.rx_ring_full + kern.rx_dropped + kern.rx_invalid_descs) as i64
            - (packets + c.other) as i64,
        "steer": {"redirected": redirected, "passed": passed, "malformed": malformed},
    });
    println!("{out}");
    Ok(())
}
