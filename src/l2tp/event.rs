//! What the machines tell their caller: packets to send and changes of tunnels and
//! sessions.

use std::net::SocketAddrV4;

/// The transport a peer's control messages arrive on. Tunnels are bound to it: a
/// message naming a tunnel but arriving on another transport is ignored.
///
/// `addr` is the peer's outer address and UDP port as the caller sees it (distinct
/// clients behind one NAT differ by port); `spi` is our inbound SPI of the IPsec SA
/// that carried the message, or 0 for plain L2TP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    /// Outer address and port of the peer.
    pub addr: SocketAddrV4,
    /// Inbound SPI of the SA the message came under, 0 for plain L2TP.
    pub spi: u32,
}

impl PeerKey {
    /// A peer reached over plain UDP (no IPsec).
    pub fn plain(addr: SocketAddrV4) -> PeerKey {
        PeerKey { addr, spi: 0 }
    }
}

/// Ids and parameters of a session that just came up (after ICCN: PPP starts now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The transport of the tunnel.
    pub peer: PeerKey,
    /// The worker our ids encode (see [`crate::l2tp::IdAllocator`]).
    pub worker: u16,
    /// Tunnel id we assigned (the peer puts it in messages to us).
    pub local_tunnel_id: u16,
    /// Session id we assigned.
    pub local_session_id: u16,
    /// The peer's tunnel id (we put it in messages to the peer).
    pub peer_tunnel_id: u16,
    /// The peer's session id.
    pub peer_session_id: u16,
    /// Call Serial Number (§4.4.4) of the incoming call.
    pub call_serial_number: u32,
    /// Framing Type (§4.4.5): bit 0 sync, bit 1 async.
    pub framing_type: u32,
    /// (Tx) Connect Speed in bit/s as the LAC reported it.
    pub tx_connect_speed: u32,
    /// Calling Number (§4.4.5), lossy UTF-8, if sent.
    pub calling_number: Option<String>,
    /// Called Number (§4.4.5), lossy UTF-8, if sent.
    pub called_number: Option<String>,
    /// The peer asked for sequenced data messages (§4.4.6).
    pub sequencing_required: bool,
}

/// A tunnel or session, named by our ids, in events about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionRef {
    /// The transport of the tunnel.
    pub peer: PeerKey,
    /// Tunnel id we assigned.
    pub local_tunnel_id: u16,
    /// Session id we assigned.
    pub local_session_id: u16,
    /// The peer's tunnel id.
    pub peer_tunnel_id: u16,
    /// The peer's session id (0 if the peer never told it).
    pub peer_session_id: u16,
}

/// Output of [`crate::l2tp::Lns`] and [`crate::l2tp::Lac`], drained with `poll_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send `bytes` (a complete L2TP control message, header included) to `peer` over
    /// UDP port 1701, under its SA when `peer.spi` is not 0.
    Transmit {
        /// Destination transport.
        peer: PeerKey,
        /// The L2TP message.
        bytes: Vec<u8>,
    },
    /// A control connection is established (SCCCN received, or sent by a LAC).
    TunnelUp {
        /// The transport of the tunnel.
        peer: PeerKey,
        /// The worker our ids encode.
        worker: u16,
        /// Tunnel id we assigned.
        local_tunnel_id: u16,
        /// The peer's tunnel id.
        peer_tunnel_id: u16,
        /// The peer's Host Name AVP, lossy UTF-8.
        host_name: String,
    },
    /// A control connection is gone (StopCCN either way, retransmissions exhausted,
    /// setup timed out, peer restarted). Sessions of the tunnel were reported down
    /// just before. Raised for every tunnel we allocated an id for, up or not.
    TunnelDown {
        /// The transport of the tunnel.
        peer: PeerKey,
        /// Tunnel id we assigned.
        local_tunnel_id: u16,
        /// The peer's tunnel id (0 if it never told it).
        peer_tunnel_id: u16,
        /// Why, in words.
        cause: String,
    },
    /// A session is up (LNS: ICCN received; LAC: ICCN sent). PPP starts now.
    SessionUp(SessionInfo),
    /// A session that was up is gone (CDN either way, or its tunnel went down).
    SessionDown {
        /// Which session.
        session: SessionRef,
        /// Why, in words.
        cause: String,
    },
    /// Set-Link-Info (§6.14): the ACCM the LAC negotiated with the client.
    LinkInfo {
        /// Which session.
        session: SessionRef,
        /// Send ACCM.
        send_accm: u32,
        /// Receive ACCM.
        receive_accm: u32,
    },
    /// WAN-Error-Notify (§6.15): the LAC's error counters for the call.
    WanError {
        /// Which session.
        session: SessionRef,
        /// CRC, framing, hardware overrun, buffer overrun, timeout and alignment
        /// errors, as in the Call Errors AVP (§4.4.9).
        errors: [u32; 6],
    },
}
