//! NAT-Traversal negotiation and detection (RFC 3947, and the drafts older clients
//! speak): which vendor ID the peer sent, the NAT-D payloads we send, and whether
//! either side sits behind a NAT (then both float to UDP 4500 and ESP goes in UDP).

use std::net::SocketAddrV4;

use crate::wire::isakmp::{self, payload, vendor};

use super::crypto::HashAlg;
use super::keys::natd_hash;

/// Which NAT-T dialect the peer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatT {
    /// RFC 3947: NAT-D is payload 20, NAT-OA 21, encapsulation modes 3/4.
    Rfc,
    /// draft-ietf-ipsec-nat-t-ike-02/03: NAT-D is 130, NAT-OA 131, modes 61443/61444.
    Draft,
}

impl NatT {
    /// Picks the best dialect among the peer's vendor IDs (RFC over drafts).
    pub fn from_vids<'a>(vids: impl Iterator<Item = &'a [u8]>) -> Option<NatT> {
        let mut best = None;
        for v in vids {
            match isakmp::is_nat_t(v) {
                Some(isakmp::NatTVariant::Rfc) => return Some(NatT::Rfc),
                Some(_) => best = Some(NatT::Draft),
                None => {}
            }
        }
        best
    }

    /// The vendor ID we answer with.
    pub fn vid(self) -> &'static [u8] {
        match self {
            NatT::Rfc => &vendor::NAT_T_RFC3947,
            NatT::Draft => &vendor::NAT_T_DRAFT_02_N,
        }
    }

    /// NAT-D payload type.
    pub fn natd_type(self) -> u8 {
        match self {
            NatT::Rfc => payload::NAT_D,
            NatT::Draft => payload::NAT_D_DRAFT,
        }
    }

    /// NAT-OA payload type.
    pub fn natoa_type(self) -> u8 {
        match self {
            NatT::Rfc => payload::NAT_OA,
            NatT::Draft => payload::NAT_OA_DRAFT,
        }
    }
}

/// What NAT-D told us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatStatus {
    /// The peer's address/port as we see them differ from what it hashed.
    pub peer_behind_nat: bool,
    /// Our address/port as the peer sees them differ from ours.
    pub local_behind_nat: bool,
}

impl NatStatus {
    /// Either side is behind a NAT: float to 4500 and encapsulate ESP in UDP.
    pub fn any(self) -> bool {
        self.peer_behind_nat || self.local_behind_nat
    }
}

/// The two NAT-D payload bodies a message carries: first the hash of the receiver's
/// address and port, then the sender's (RFC 3947 §3.2).
pub fn natd_payloads(
    hash: HashAlg,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    receiver: SocketAddrV4,
    sender: SocketAddrV4,
) -> [Vec<u8>; 2] {
    [
        natd_hash(hash, cky_i, cky_r, *receiver.ip(), receiver.port()),
        natd_hash(hash, cky_i, cky_r, *sender.ip(), sender.port()),
    ]
}

/// Compares the NAT-D payloads a message brought (`received`: the first is the hash of
/// our address as the sender saw it, the others the sender's candidates) with the
/// addresses on the wire.
pub fn detect(
    hash: HashAlg,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    received: &[&[u8]],
    us: SocketAddrV4,
    peer: SocketAddrV4,
) -> NatStatus {
    let Some((first, rest)) = received.split_first() else {
        return NatStatus::default();
    };
    let ours = natd_hash(hash, cky_i, cky_r, *us.ip(), us.port());
    let theirs = natd_hash(hash, cky_i, cky_r, *peer.ip(), peer.port());
    NatStatus {
        local_behind_nat: *first != ours.as_slice(),
        peer_behind_nat: !rest.contains(&theirs.as_slice()),
    }
}

/// The NAT-OA body for an IPv4 address (RFC 3947 §5.2: ID type, 3 reserved, address).
pub fn natoa_body(addr: std::net::Ipv4Addr) -> Vec<u8> {
    let mut b = vec![isakmp::id_type::IPV4_ADDR, 0, 0, 0];
    b.extend_from_slice(&addr.octets());
    b
}

/// Parses a NAT-OA body.
pub fn parse_natoa(body: &[u8]) -> Option<std::net::Ipv4Addr> {
    (body.len() == 8 && body[0] == isakmp::id_type::IPV4_ADDR)
        .then(|| std::net::Ipv4Addr::new(body[4], body[5], body[6], body[7]))
}
