//! Counters of the socket and TUN backends: packets and octets moved, and one counter
//! per reason a packet was dropped at the I/O edge (before or after the pipeline, which
//! counts its own drops in [`crate::dataplane::Stats`]).

/// Why the I/O layer dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoDrop {
    /// Received: the datagram did not fit the frame and the kernel truncated it.
    Truncated,
    /// Outbound: truncated or inconsistent IPv4 or UDP header.
    Malformed,
    /// Not an IPv4 packet (outbound, or read from / written to the TUN device).
    NotIpv4,
    /// Outbound: an IPv4 fragment (the pipeline never emits one).
    Fragment,
    /// Outbound: IPv4 protocol neither UDP nor ESP.
    Protocol,
    /// Outbound UDP: no socket for this source port.
    NoSocket,
    /// Outbound ESP (protocol 50) while no raw socket is open.
    NoRawSocket,
    /// Outbound: the source address is not the one the socket is bound to.
    SourceMismatch,
    /// The socket or device buffer was full (EAGAIN).
    WouldBlock,
    /// The kernel had no buffer memory (ENOBUFS).
    NoBuffers,
    /// Any other send or write error (EMSGSIZE, EHOSTUNREACH, EPERM from a firewall…).
    SendError,
    /// TUN read: the packet filled the whole buffer, so it may have been cut.
    TooLong,
}

impl IoDrop {
    /// Every reason, in counter order.
    pub const ALL: [IoDrop; 12] = [
        IoDrop::Truncated,
        IoDrop::Malformed,
        IoDrop::NotIpv4,
        IoDrop::Fragment,
        IoDrop::Protocol,
        IoDrop::NoSocket,
        IoDrop::NoRawSocket,
        IoDrop::SourceMismatch,
        IoDrop::WouldBlock,
        IoDrop::NoBuffers,
        IoDrop::SendError,
        IoDrop::TooLong,
    ];

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            IoDrop::Truncated => "truncated",
            IoDrop::Malformed => "malformed",
            IoDrop::NotIpv4 => "not_ipv4",
            IoDrop::Fragment => "fragment",
            IoDrop::Protocol => "protocol",
            IoDrop::NoSocket => "no_socket",
            IoDrop::NoRawSocket => "no_raw_socket",
            IoDrop::SourceMismatch => "source_mismatch",
            IoDrop::WouldBlock => "would_block",
            IoDrop::NoBuffers => "no_buffers",
            IoDrop::SendError => "send_error",
            IoDrop::TooLong => "too_long",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The drop reason of a send error.
    pub fn of_errno(e: rustix::io::Errno) -> IoDrop {
        if e == rustix::io::Errno::AGAIN {
            IoDrop::WouldBlock
        } else if e == rustix::io::Errno::NOBUFS {
            IoDrop::NoBuffers
        } else {
            IoDrop::SendError
        }
    }
}

/// Packets and octets in each direction, and drops by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Packets handed to the pipeline (received) or read from the TUN device.
    pub rx_packets: u64,
    /// Their octets as the kernel delivered them (UDP payload, raw IPv4, inner IPv4).
    pub rx_bytes: u64,
    /// Packets the kernel accepted for sending.
    pub tx_packets: u64,
    /// Their octets as handed to the kernel.
    pub tx_bytes: u64,
    /// Receive or read calls that failed with something other than EAGAIN.
    pub rx_errors: u64,
    drops: [u64; IoDrop::ALL.len()],
}

/// What one `send_batch` call did.
pub type SendStats = IoStats;

impl IoStats {
    /// Counts one packet dropped for `r`.
    pub fn drop(&mut self, r: IoDrop) {
        self.drops[r.index()] += 1;
    }

    /// Counts `n` packets dropped for `r`.
    pub fn drop_n(&mut self, r: IoDrop, n: u64) {
        self.drops[r.index()] += n;
    }

    /// Packets dropped for `r`.
    pub fn drops(&self, r: IoDrop) -> u64 {
        self.drops[r.index()]
    }

    /// Packets dropped for any reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &IoStats) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.rx_errors += other.rx_errors;
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
    }

    /// The nonzero drop counters, for logs.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (IoDrop, u64)> + '_ {
        IoDrop::ALL
            .iter()
            .map(|&r| (r, self.drops(r)))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let mut s = IoStats::default();
        for (i, r) in IoDrop::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            s.drop_n(*r, i as u64 + 1);
        }
        for (i, r) in IoDrop::ALL.iter().enumerate() {
            assert_eq!(s.drops(*r), i as u64 + 1, "{}", r.name());
        }
        let mut t = IoStats::default();
        t.merge(&s);
        t.merge(&s);
        assert_eq!(t.total_drops(), 2 * s.total_drops());
        assert_eq!(t.nonzero_drops().count(), IoDrop::ALL.len());
    }

    #[test]
    fn errno_classes() {
        use rustix::io::Errno;
        assert_eq!(IoDrop::of_errno(Errno::AGAIN), IoDrop::WouldBlock);
        assert_eq!(IoDrop::of_errno(Errno::NOBUFS), IoDrop::NoBuffers);
        assert_eq!(IoDrop::of_errno(Errno::HOSTUNREACH), IoDrop::SendError);
    }
}
