//! An IKEv1 initiator for one L2TP/IPsec client: Main Mode with a pre-shared key, then
//! one Quick Mode for ESP transport mode to UDP 1701, as Windows and the Linux stack
//! do it. Sans-IO: datagrams in, datagrams out. The simulated client fleet (`demo`,
//! perf/) and the in-memory tests drive the responder with it; it also answers DPD.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::crypto::Transform as EspTransform;
use crate::esp::sa::Mode;
use crate::wire::isakmp::{HEADER_LEN, Header, Identification, exchange, flags, id_type};

use super::informational::{self, Info};
use super::main_mode::{self, Mm1Sent, Mm3Sent, Mm5Sent, Phase1Done};
use super::message::Chain;
use super::proposal::{Algorithms, EncapMode, Phase1Choice};
use super::quick_mode::{self, ChildSa, Qm1Offer, Qm1Sent};

/// What the client offers.
pub struct ClientConfig {
    /// Our endpoint (port 500).
    pub local: SocketAddrV4,
    /// The gateway's endpoint (port 500).
    pub gateway: SocketAddrV4,
    /// The shared key.
    pub psk: Vec<u8>,
    /// Phase 1 transforms in order.
    pub ike: Vec<Phase1Choice>,
    /// ESP transforms in order.
    pub esp: Vec<EspTransform>,
    /// Phase 2 lifetime asked for.
    pub esp_lifetime: Duration,
    /// Send INITIAL-CONTACT.
    pub initial_contact: bool,
    /// NAT-T port to float to.
    pub natt_port: u16,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Source.
    pub from: SocketAddrV4,
    /// Destination.
    pub to: SocketAddrV4,
    /// The ISAKMP message (add the non-ESP marker on 4500).
    pub data: Vec<u8>,
}

/// Why the client gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Main Mode failed.
    #[error("main mode: {0}")]
    MainMode(#[from] main_mode::MmError),
    /// Quick Mode failed.
    #[error("quick mode: {0}")]
    QuickMode(#[from] quick_mode::QmError),
    /// A message that fits no state.
    #[error("unexpected message")]
    Unexpected,
}

enum State {
    Mm1(Mm1Sent),
    Mm3(Box<Mm3Sent>),
    Mm5(Box<Mm5Sent>),
    Qm1(Box<Phase1Done>, Box<Qm1Sent>),
    Up(Box<Phase1Done>),
    Failed,
}

/// One client.
pub struct Client {
    cfg: ClientConfig,
    state: State,
    local: SocketAddrV4,
    gateway: SocketAddrV4,
    child: Option<ChildSa>,
    our_spi: u32,
    /// A Quick Mode the gateway started (its rekey), waiting for QM3.
    answering: Option<(u32, quick_mode::Qm2Sent, ChildSa)>,
}

fn transport_ids(local: SocketAddrV4, gateway: SocketAddrV4) -> (Identification, Identification) {
    let id = |a: SocketAddrV4| Identification {
        id_type: id_type::IPV4_ADDR,
        protocol: 17,
        port: 1701,
        data: a.ip().octets().to_vec(),
    };
    (id(local), id(gateway))
}

impl Client {
    /// Starts Main Mode; `our_spi` is the inbound SPI the client will use for its SA.
    pub fn start(cfg: ClientConfig, our_spi: u32) -> Result<(Client, Outgoing), ClientError> {
        let (s, mm1) = main_mode::start(&cfg.ike)?;
        let out = Outgoing {
            from: cfg.local,
            to: cfg.gateway,
            data: mm1,
        };
        Ok((
            Client {
                local: cfg.local,
                gateway: cfg.gateway,
                cfg,
                state: State::Mm1(s),
                child: None,
                our_spi,
                answering: None,
            },
            out,
        ))
    }

    /// The negotiated SA pair once Quick Mode is done.
    pub fn child(&self) -> Option<&ChildSa> {
        self.child.as_ref()
    }

    /// Takes the negotiated SA pair (to install it).
    pub fn take_child(&mut self) -> Option<ChildSa> {
        self.child.take()
    }

    /// Phase 1 and Quick Mode done.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// Our endpoint now (port 4500 after the NAT-T float).
    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// The gateway's endpoint now.
    pub fn gateway(&self) -> SocketAddrV4 {
        self.gateway
    }

    fn out(&self, data: Vec<u8>) -> Outgoing {
        Outgoing {
            from: self.local,
            to: self.gateway,
            data,
        }
    }

    /// Handles one datagram from the gateway; returns what to send.
    pub fn input(&mut self, data: &[u8]) -> Result<Option<Outgoing>, ClientError> {
        let h = Header::parse(data).map_err(|_| ClientError::Unexpected)?;
        let plain = || {
            Chain::parse(h.next_payload, &data[HEADER_LEN..]).map_err(|_| ClientError::Unexpected)
        };
        let algs = Algorithms {
            allow_3des: true,
            allow_modp1024: true,
            ike_lifetime: (Duration::from_secs(1), Duration::from_secs(u32::MAX.into())),
            esp_lifetime: (Duration::from_secs(1), Duration::from_secs(u32::MAX.into())),
        };
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Mm1(s) if h.exchange == exchange::MAIN => {
                let (next, mm3) = s.on_mm2(&h, &plain()?, &algs, self.local, self.gateway)?;
                self.state = State::Mm3(Box::new(next));
                Ok(Some(self.out(mm3)))
            }
            State::Mm3(s) if h.exchange == exchange::MAIN => {
                let (next, mm5) = s.on_mm4(
                    &plain()?,
                    &self.cfg.psk,
                    self.local,
                    self.gateway,
                    self.cfg.initial_contact,
                )?;
                if next.nat().any() {
                    self.local.set_port(self.cfg.natt_port);
                    self.gateway.set_port(self.cfg.natt_port);
                }
                self.state = State::Mm5(Box::new(next));
                Ok(Some(self.out(mm5)))
            }
            State::Mm5(s) if h.exchange == exchange::MAIN => {
                let p1 = s.on_mm6(data)?;
                let udp = p1.nat.any();
                let encap = match (udp, p1.natt) {
                    (true, Some(super::natd::NatT::Draft)) => EncapMode::Udp {
                        mode: Mode::Transport,
                        draft: true,
                    },
                    (true, _) => EncapMode::Udp {
                        mode: Mode::Transport,
                        draft: false,
                    },
                    (false, _) => EncapMode::Plain(Mode::Transport),
                };
                let offer = Qm1Offer {
                    transforms: self.cfg.esp.clone(),
                    encap,
                    pfs: None,
                    lifetime: self.cfg.esp_lifetime,
                    ids: Some(transport_ids(self.cfg.local, self.cfg.gateway)),
                    natoa: udp.then(|| (*self.cfg.local.ip(), *self.cfg.gateway.ip())),
                };
                let (qm, qm1) = quick_mode::initiate(&p1, offer, self.our_spi)?;
                self.state = State::Qm1(Box::new(p1), Box::new(qm));
                Ok(Some(self.out(qm1)))
            }
            State::Qm1(p1, qm)
                if h.exchange == exchange::QUICK && h.message_id == qm.message_id =>
            {
                let (child, qm3) = qm.on_qm2(&p1, data, &algs)?;
                self.child = Some(child);
                self.state = State::Up(p1);
                Ok(Some(self.out(qm3)))
            }
            State::Up(p1)
                if h.exchange == exchange::INFORMATIONAL && h.flags & flags::ENCRYPTION != 0 =>
            {
                let items = informational::open(&p1, data, h.message_id);
                let mut reply = None;
                if let Ok(items) = items {
                    for i in items {
                        if let Info::RUThere(seq) = i {
                            reply = Some(informational::dpd(&p1, true, seq)?);
                        }
                    }
                }
                self.state = State::Up(p1);
                Ok(reply.map(|r| self.out(r)))
            }
            State::Up(p1) if h.exchange == exchange::QUICK && h.flags & flags::ENCRYPTION != 0 => {
                let reply = self.answer_quick_mode(&p1, &h, data, &algs);
                self.state = State::Up(p1);
                reply
            }
            s @ State::Up(_) => {
                self.state = s;
                Ok(None)
            }
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The gateway rekeys: QM1 gets QM2 (under a new inbound SPI of ours), QM3 makes
    /// the new pair current.
    fn answer_quick_mode(
        &mut self,
        p1: &Phase1Done,
        h: &Header,
        data: &[u8],
        algs: &Algorithms,
    ) -> Result<Option<Outgoing>, ClientError> {
        if let Some((mid, wait, _)) = &self.answering
            && *mid == h.message_id
        {
            wait.on_qm3(p1, data)?;
            if let Some((_, _, child)) = self.answering.take() {
                self.our_spi = child.inbound_spi;
                self.child = Some(child);
            }
            return Ok(None);
        }
        let spi = self.our_spi.wrapping_add(1).max(256);
        let (wait, child, qm2) = quick_mode::on_qm1(p1, data, h.message_id, algs, spi)?;
        self.answering = Some((h.message_id, wait, child));
        Ok(Some(self.out(qm2)))
    }

    /// Starts a Quick Mode rekey of the SA pair (same selectors) with a new inbound
    /// SPI; the answer completes it in [`Client::input`].
    pub fn rekey(&mut self, our_spi: u32) -> Result<Outgoing, ClientError> {
        let State::Up(p1) = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(ClientError::Unexpected);
        };
        let udp = p1.nat.any();
        let offer = Qm1Offer {
            transforms: self.cfg.esp.clone(),
            encap: if udp {
                EncapMode::Udp {
                    mode: Mode::Transport,
                    draft: false,
                }
            } else {
                EncapMode::Plain(Mode::Transport)
            },
            pfs: None,
            lifetime: self.cfg.esp_lifetime,
            ids: Some(transport_ids(self.cfg.local, self.cfg.gateway)),
            natoa: udp.then(|| (*self.cfg.local.ip(), *self.cfg.gateway.ip())),
        };
        let r = quick_mode::initiate(&p1, offer, our_spi);
        match r {
            Ok((qm, qm1)) => {
                self.our_spi = our_spi;
                self.state = State::Qm1(p1, Box::new(qm));
                Ok(self.out(qm1))
            }
            Err(e) => {
                self.state = State::Up(p1);
                Err(e.into())
            }
        }
    }

    /// Deletes one of our inbound ESP SAs at the gateway (after a rekey).
    pub fn delete_child(&self, our_spi: u32) -> Option<Outgoing> {
        let State::Up(p1) = &self.state else {
            return None;
        };
        informational::delete_esp(p1, &[our_spi])
            .ok()
            .map(|m| self.out(m))
    }

    /// Deletes the ESP SA and the ISAKMP SA (what a client sends on disconnect).
    pub fn disconnect(&self) -> Vec<Outgoing> {
        let State::Up(p1) = &self.state else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Ok(m) = informational::delete_esp(p1, &[self.our_spi]) {
            out.push(self.out(m));
        }
        if let Ok(m) = informational::delete_ike(p1) {
            out.push(self.out(m));
        }
        out
    }
}
