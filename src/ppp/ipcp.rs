//! IPCP (RFC 1332) with the name-server options of RFC 1877.
//!
//! Server: requests its own `local_address`; a peer asking for any IP-Address other
//! than the one assigned to it (0.0.0.0 included, as Windows and pppd send) is Nak-ed
//! with the assigned one — and asked to add the option if it left it out; primary and
//! secondary DNS/NBNS are Nak-ed with the configured values and Rejected when none is
//! configured; IP-Compression-Protocol (Van Jacobson) and anything else is Rejected.
//!
//! Client: requests 0.0.0.0 (and DNS when configured) and takes the values of the
//! server's Naks; acks the server's own non-zero address.

use std::net::Ipv4Addr;

use super::fsm::{Judgement, Negotiate, Verdict, put_option};
use crate::wire::ppp::{OptionIter, ipcp_option};

/// Why IPCP gave up: the server refused to give us an address.
pub const NO_ADDRESS: &str = "peer refused to assign an address";

/// Which side of IPCP we are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpcpRole {
    /// The gateway.
    Server {
        /// Our own inner address.
        local: Ipv4Addr,
        /// The address assigned to the peer.
        assigned: Ipv4Addr,
        /// Primary and secondary DNS servers to hand out.
        dns: [Option<Ipv4Addr>; 2],
        /// Primary and secondary NBNS (WINS) servers to hand out.
        nbns: [Option<Ipv4Addr>; 2],
    },
    /// A client.
    Client {
        /// Ask for DNS servers.
        request_dns: bool,
    },
}

/// The IPCP option logic.
#[derive(Clone, Debug)]
pub struct IpcpOptions {
    role: IpcpRole,
    address: Ipv4Addr,
    request_address: bool,
    dns: [Option<Ipv4Addr>; 2],
    peer_address: Option<Ipv4Addr>,
}

const DNS_TYPES: [u8; 2] = [ipcp_option::PRIMARY_DNS, ipcp_option::SECONDARY_DNS];
const NBNS_TYPES: [u8; 2] = [ipcp_option::PRIMARY_NBNS, ipcp_option::SECONDARY_NBNS];

fn address(value: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))
}

impl IpcpOptions {
    /// Option logic for `role`.
    pub fn new(role: IpcpRole) -> IpcpOptions {
        let mut options = IpcpOptions {
            role,
            address: Ipv4Addr::UNSPECIFIED,
            request_address: true,
            dns: [None; 2],
            peer_address: None,
        };
        options.reset();
        options
    }

    /// Our address: the server's `local`, or the one the client was given.
    pub fn local_address(&self) -> Ipv4Addr {
        self.address
    }

    /// The peer's address: the one assigned to it (server), or the server's own
    /// (client; unspecified if it did not tell).
    pub fn peer_address(&self) -> Ipv4Addr {
        match &self.role {
            IpcpRole::Server { assigned, .. } => *assigned,
            IpcpRole::Client { .. } => self.peer_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// The DNS servers: handed out (server) or received (client).
    pub fn dns(&self) -> Vec<Ipv4Addr> {
        let list = match &self.role {
            IpcpRole::Server { dns, .. } => dns,
            IpcpRole::Client { .. } => &self.dns,
        };
        list.iter()
            .flatten()
            .copied()
            .filter(|a| !a.is_unspecified())
            .collect()
    }

    fn judge_server(&mut self, options: &[u8], nak_to_reject: bool) -> Verdict {
        let IpcpRole::Server {
            assigned,
            dns,
            nbns,
            ..
        } = &self.role
        else {
            return Verdict::Ack;
        };
        let mut j = Judgement::new(nak_to_reject);
        let mut saw_address = false;
        for option in OptionIter::new(options).flatten() {
            let t = option.option_type;
            let value = address(option.value);
            let configured = if let Some(i) = DNS_TYPES.iter().position(|&d| d == t) {
                Some(dns[i])
            } else {
                NBNS_TYPES.iter().position(|&n| n == t).map(|i| nbns[i])
            };
            match (t, value, configured) {
                (ipcp_option::IP_ADDRESS, Some(requested), _) => {
                    saw_address = true;
                    if requested != *assigned {
                        j.nak(&option, &assigned.octets());
                    }
                }
                (_, Some(requested), Some(Some(server))) => {
                    if requested != server {
                        j.nak(&option, &server.octets());
                    }
                }
                _ => j.reject(&option),
            }
        }
        if !saw_address {
            j.nak_missing(ipcp_option::IP_ADDRESS, &assigned.octets());
        }
        j.verdict()
    }

    fn judge_client(&mut self, options: &[u8], nak_to_reject: bool) -> Verdict {
        let mut j = Judgement::new(nak_to_reject);
        let mut peer = None;
        for option in OptionIter::new(options).flatten() {
            match (option.option_type, address(option.value)) {
                (ipcp_option::IP_ADDRESS, Some(a)) if !a.is_unspecified() => peer = Some(a),
                _ => j.reject(&option),
            }
        }
        if j.is_ack() {
            self.peer_address = peer;
        }
        j.verdict()
    }
}

impl Negotiate for IpcpOptions {
    fn reset(&mut self) {
        self.request_address = true;
        self.peer_address = None;
        match &self.role {
            IpcpRole::Server { local, .. } => self.address = *local,
            IpcpRole::Client { request_dns } => {
                self.address = Ipv4Addr::UNSPECIFIED;
                let ask = request_dns.then_some(Ipv4Addr::UNSPECIFIED);
                self.dns = [ask, ask];
            }
        }
    }

    fn request(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.request_address {
            put_option(&mut out, ipcp_option::IP_ADDRESS, &self.address.octets());
        }
        for (t, value) in DNS_TYPES.iter().zip(self.dns) {
            if let Some(value) = value {
                put_option(&mut out, *t, &value.octets());
            }
        }
        out
    }

    fn judge(&mut self, options: &[u8], nak_to_reject: bool) -> Verdict {
        match self.role {
            IpcpRole::Server { .. } => self.judge_server(options, nak_to_reject),
            IpcpRole::Client { .. } => self.judge_client(options, nak_to_reject),
        }
    }

    fn naked(&mut self, options: &[u8]) -> Result<(), &'static str> {
        if matches!(self.role, IpcpRole::Server { .. }) {
            // Our own address is not negotiable; the request goes out unchanged and
            // the automaton gives up if the peer insists.
            return Ok(());
        }
        for option in OptionIter::new(options).flatten() {
            let Some(value) = address(option.value) else {
                continue;
            };
            match option.option_type {
                ipcp_option::IP_ADDRESS if !value.is_unspecified() => self.address = value,
                t => {
                    if let Some(i) = DNS_TYPES.iter().position(|&d| d == t) {
                        self.dns[i] = Some(value);
                    }
                }
            }
        }
        Ok(())
    }

    fn rejected(&mut self, options: &[u8]) -> Result<(), &'static str> {
        for option in OptionIter::new(options).flatten() {
            match option.option_type {
                ipcp_option::IP_ADDRESS => {
                    if matches!(self.role, IpcpRole::Client { .. }) && self.address.is_unspecified()
                    {
                        return Err(NO_ADDRESS);
                    }
                    self.request_address = false;
                }
                t => {
                    if let Some(i) = DNS_TYPES.iter().position(|&d| d == t) {
                        self.dns[i] = None;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppp::tests::{CBC, NATT, capture_ppp};
    use crate::wire::ppp::{Frame, Packet, Protocol, code};

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    fn server(dns: [Option<Ipv4Addr>; 2]) -> IpcpOptions {
        IpcpOptions::new(IpcpRole::Server {
            local: ip(10, 97, 0, 1),
            assigned: ip(10, 97, 0, 10),
            dns,
            nbns: [None; 2],
        })
    }

    fn opts(list: &[(u8, [u8; 4])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, v) in list {
            put_option(&mut out, *t, v);
        }
        out
    }

    /// (code, identifier, options) of a captured IPCP frame.
    fn ipcp(decrypted: &str, number: usize) -> (u8, u8, Vec<u8>) {
        let frame = capture_ppp(decrypted, number);
        let frame = Frame::new_checked(&frame[..]).unwrap();
        assert_eq!(frame.protocol(), Protocol::IPCP);
        let pkt = Packet::new_checked(frame.payload()).unwrap();
        (pkt.code(), pkt.identifier(), pkt.data().to_vec())
    }

    // ikev1-natt: frame 26 the LNS requests 10.97.0.1; frame 27 the client requests
    // 0.0.0.0; frame 28 the LNS Naks it with 10.97.0.10; frame 30 the client asks for
    // 10.97.0.10 and frame 31 is its Ack.
    #[test]
    fn capture_address_exchange() {
        let mut s = server([None; 2]);
        let (c, _, ours) = ipcp(NATT, 26);
        assert_eq!(c, code::CONFIGURE_REQUEST);
        assert_eq!(s.request(), ours);
        let (_, _, zero) = ipcp(NATT, 27);
        let (c, _, nak) = ipcp(NATT, 28);
        assert_eq!(c, code::CONFIGURE_NAK);
        assert_eq!(s.judge(&zero, false), Verdict::Nak(nak.clone()));
        let (_, _, again) = ipcp(NATT, 30);
        assert_eq!(s.judge(&again, false), Verdict::Ack);
        // The client side takes the Nak and acks the server's request.
        let mut client = IpcpOptions::new(IpcpRole::Client { request_dns: false });
        assert_eq!(client.request(), zero);
        assert_eq!(client.judge(&ours, false), Verdict::Ack);
        client.naked(&nak).unwrap();
        assert_eq!(client.request(), again);
        assert_eq!(client.local_address(), ip(10, 97, 0, 10));
        assert_eq!(client.peer_address(), ip(10, 97, 0, 1));
        // The CBC capture has the same exchange in another order.
        let (_, _, cbc_zero) = ipcp(CBC, 26);
        let (_, _, cbc_nak) = ipcp(CBC, 29);
        assert_eq!(s.judge(&cbc_zero, false), Verdict::Nak(cbc_nak));
    }

    #[test]
    fn dns_is_nakked_with_config_or_rejected_without() {
        let dns = [Some(ip(10, 99, 0, 1)), Some(ip(10, 99, 0, 2))];
        let mut s = server(dns);
        let ask = opts(&[
            (ipcp_option::IP_ADDRESS, [10, 97, 0, 10]),
            (ipcp_option::PRIMARY_DNS, [0; 4]),
            (ipcp_option::SECONDARY_DNS, [0; 4]),
        ]);
        assert_eq!(
            s.judge(&ask, false),
            Verdict::Nak(opts(&[
                (ipcp_option::PRIMARY_DNS, [10, 99, 0, 1]),
                (ipcp_option::SECONDARY_DNS, [10, 99, 0, 2]),
            ]))
        );
        let mut without = server([None; 2]);
        assert_eq!(
            without.judge(&ask, false),
            Verdict::Reject(opts(&[
                (ipcp_option::PRIMARY_DNS, [0; 4]),
                (ipcp_option::SECONDARY_DNS, [0; 4]),
            ]))
        );
        let nbns = opts(&[
            (ipcp_option::IP_ADDRESS, [10, 97, 0, 10]),
            (ipcp_option::PRIMARY_NBNS, [0; 4]),
        ]);
        assert!(matches!(s.judge(&nbns, false), Verdict::Reject(_)));
        // A client asking DNS gets the values, and sees them afterwards.
        let mut client = IpcpOptions::new(IpcpRole::Client { request_dns: true });
        assert_eq!(
            client.request(),
            opts(&[
                (ipcp_option::IP_ADDRESS, [0; 4]),
                (ipcp_option::PRIMARY_DNS, [0; 4]),
                (ipcp_option::SECONDARY_DNS, [0; 4]),
            ])
        );
        client
            .naked(&opts(&[(ipcp_option::PRIMARY_DNS, [10, 99, 0, 1])]))
            .unwrap();
        client
            .rejected(&opts(&[(ipcp_option::SECONDARY_DNS, [0; 4])]))
            .unwrap();
        assert_eq!(client.dns(), [ip(10, 99, 0, 1)]);
    }

    #[test]
    fn compression_and_unknown_options_are_rejected() {
        let mut s = server([None; 2]);
        let mut vj = Vec::new();
        put_option(
            &mut vj,
            ipcp_option::IP_COMPRESSION_PROTOCOL,
            &[0x00, 0x2d, 0x0f, 0x01],
        );
        put_option(&mut vj, 1, &[0; 8]);
        let mut request = vj.clone();
        put_option(&mut request, ipcp_option::IP_ADDRESS, &[10, 97, 0, 10]);
        assert_eq!(s.judge(&request, false), Verdict::Reject(vj));
    }

    #[test]
    fn missing_address_is_asked_for_until_max_failure() {
        let mut s = server([None; 2]);
        assert_eq!(
            s.judge(&[], false),
            Verdict::Nak(opts(&[(ipcp_option::IP_ADDRESS, [10, 97, 0, 10])]))
        );
        assert_eq!(s.judge(&[], true), Verdict::Ack);
    }

    #[test]
    fn client_fails_when_refused_an_address() {
        let mut client = IpcpOptions::new(IpcpRole::Client { request_dns: false });
        assert_eq!(
            client.rejected(&opts(&[(ipcp_option::IP_ADDRESS, [0; 4])])),
            Err(NO_ADDRESS)
        );
        assert!(matches!(
            client.judge(&opts(&[(ipcp_option::IP_ADDRESS, [0; 4])]), false),
            Verdict::Reject(_)
        ));
    }
}
