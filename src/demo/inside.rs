//! The inside host of `sekisho demo`, behind the gateway: a discard service that
//! counts what the clients send (upstream), an echo service for their latency probes,
//! and a sender that pushes traffic to every client's inner address (downstream) with
//! `sendmmsg`, 32 datagrams a call.

use std::io::{ErrorKind, IoSlice};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

use super::fleet::{DISCARD_PORT, ECHO_PORT};
use super::world::{Layout, enter};
use super::{Phase, Shared, Size};

/// Datagrams per `sendmmsg`.
const BATCH: usize = 32;

fn bind(a: SocketAddrV4) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind(a).map_err(|e| format!("inside host: bind {a}: {e}"))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// The discard and echo services, until the phase is `Stop`. Sends `()` on `ready`
/// once bound.
pub fn serve(layout: Layout, sh: Arc<Shared>, ready: std::sync::mpsc::Sender<Result<(), String>>) {
    let r = (|| {
        enter(layout.inside_ns())?;
        let discard = bind(SocketAddrV4::new(layout.inside, DISCARD_PORT))?;
        let echo = bind(SocketAddrV4::new(layout.inside, ECHO_PORT))?;
        Ok((discard, echo))
    })();
    let (discard, echo) = match r {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut buf = vec![0u8; 2048];
    while sh.phase() != Phase::Stop {
        let mut fds = [
            PollFd::new(discard.as_fd(), PollFlags::POLLIN),
            PollFd::new(echo.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::from(20u8)).unwrap_or(0) == 0 {
            continue;
        }
        for _ in 0..256 {
            match echo.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = echo.send_to(&buf[..n], from);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        for _ in 0..1024 {
            match discard.recv(&mut buf) {
                Ok(n) => {
                    sh.up_pkts.fetch_add(1, Ordering::Relaxed);
                    // Inner IPv4 packet = datagram + UDP and IPv4 headers.
                    sh.up_bytes.fetch_add(n as u64 + 28, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

/// Sends to every client's inner address, round robin, while the phase is `Traffic`.
pub fn send(layout: Layout, sh: Arc<Shared>, size: Size) -> Result<(), String> {
    enter(layout.inside_ns())?;
    let sock = bind(SocketAddrV4::new(layout.inside, 0))?;
    let payload = vec![0x5au8; 1500];
    let mut sizes = size.iter();
    while matches!(sh.phase(), Phase::Setup | Phase::Idle) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let targets: Vec<SocketAddrAny> = sh
        .inner
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|a| SocketAddrAny::from(SocketAddrV4::new(*a, DISCARD_PORT)))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let mut next = 0usize;
    let mut window = super::Window::new(super::IN_FLIGHT);
    while sh.phase() == Phase::Traffic {
        let room = window.room(
            sh.down_sent.load(Ordering::Relaxed),
            sh.down_pkts.load(Ordering::Relaxed),
            std::time::Instant::now(),
        );
        if room < BATCH as u64 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let lens: Vec<usize> = (0..BATCH)
            .map(|_| sizes.next_size().saturating_sub(28))
            .collect();
        let iovs: Vec<[IoSlice<'_>; 1]> = lens
            .iter()
            .map(|&l| [IoSlice::new(&payload[..l])])
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
            (0..BATCH).map(|_| SendAncillaryBuffer::default()).collect();
        let mut msgs: Vec<MMsgHdr<'_>> = iovs
            .iter()
            .zip(controls.iter_mut())
            .enumerate()
            .map(|(i, (iov, c))| {
                MMsgHdr::new_with_addr(&targets[(next + i) % targets.len()], iov, c)
            })
            .collect();
        match rustix::net::sendmmsg(&sock, &mut msgs, SendFlags::empty()) {
            Ok(n) => {
                next = (next + n) % targets.len();
                sh.down_sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    Ok(())
}
