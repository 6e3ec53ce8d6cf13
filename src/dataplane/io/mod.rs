//! Fallback I/O (DESIGN §2): the outside interface over ordinary UDP and raw sockets
//! ([`socket`]) and the inside path over a TUN device ([`tun`]), with owned frames
//! ([`frame`]) shaped like UMEM frames. The pipeline in [`crate::dataplane::chain`]
//! gets the same outer IPv4 packets from here as from AF_XDP, and does not know which
//! backend it runs on.
//!
//! No `unsafe` here: sockets and options go through rustix and nix, TUN set-up through
//! tun-rs.

#![forbid(unsafe_code)]

pub mod frame;
pub mod headers;
pub mod socket;
pub mod stats;
mod sys;
pub mod tun;

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

pub use frame::{FRAME_SIZE, FramePool, HEADROOM, TAILROOM};
pub use socket::{OutsideConfig, OutsideSockets, Role, SocketError};
pub use stats::{IoDrop, IoStats, SendStats};
pub use tun::{TunConfig, TunError, TunQueue};

/// Waits until one of `fds` is readable or `timeout` passes; returns whether one is.
/// An interrupted wait (EINTR) returns `Ok(false)`, like a timeout.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut pfds, t) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
