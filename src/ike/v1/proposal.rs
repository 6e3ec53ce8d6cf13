//! Proposal selection for Main Mode (RFC 2409 §5, App. A attributes) and Quick Mode
//! (RFC 2407 §4.5 attributes), and the SA payloads we send back or offer.
//!
//! The responder walks the initiator's transforms in order and takes the first it
//! supports: that is what Windows, macOS/iOS, Android and strongSwan expect. A
//! transform that names no cipher (strongSwan's degenerate second transform, which
//! carries only a DH group) is skipped, not refused. When nothing fits, the caller
//! answers NO-PROPOSAL-CHOSEN and logs one line naming what was offered
//! ([`describe_offer`]).

use std::fmt::Write as _;
use std::time::Duration;

use crate::crypto::Transform as EspTransform;
use crate::esp::sa::Mode;
use crate::wire::isakmp::{
    AttrValue, Attribute, Proposal, SaPayload, Transform, p1, p1attr, p2, p2attr,
};

use super::crypto::{DhGroup, HashAlg, IkeCipher};

/// ISAKMP protocol ids (RFC 2407 §4.4.1).
pub const PROTO_ISAKMP: u8 = 1;
/// IPSEC_ESP.
pub const PROTO_ESP: u8 = 3;
/// Transform id KEY_IKE (RFC 2407 §4.4.2).
pub const KEY_IKE: u8 = 1;
/// DOI IPSEC.
pub const DOI_IPSEC: u32 = 1;
/// SIT_IDENTITY_ONLY.
pub const SIT_IDENTITY_ONLY: u32 = 1;
/// XAUTHInitPreShared (draft-ietf-ipsec-isakmp-xauth): recognised only to name it.
const AUTH_XAUTH_PSK: u64 = 65001;

/// What the operator allows.
#[derive(Clone, Debug)]
pub struct Algorithms {
    /// Phase 1 3DES (off by default).
    pub allow_3des: bool,
    /// DH group 2, MODP-1024 (off by default).
    pub allow_modp1024: bool,
    /// Phase 1 lifetime bounds (seconds).
    pub ike_lifetime: (Duration, Duration),
    /// Phase 2 lifetime bounds (seconds).
    pub esp_lifetime: (Duration, Duration),
}

impl Default for Algorithms {
    fn default() -> Self {
        Algorithms {
            allow_3des: false,
            allow_modp1024: false,
            ike_lifetime: (Duration::from_secs(300), Duration::from_secs(86_400)),
            esp_lifetime: (Duration::from_secs(300), Duration::from_secs(28_800)),
        }
    }
}

impl Algorithms {
    fn group_ok(&self, g: DhGroup) -> bool {
        g != DhGroup::Modp1024 || self.allow_modp1024
    }
}

/// The Phase 1 transform both sides use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase1Choice {
    /// Encryption of IKE messages.
    pub cipher: IkeCipher,
    /// Hash and HMAC PRF.
    pub hash: HashAlg,
    /// DH group.
    pub group: DhGroup,
    /// Lifetime we enforce (the initiator's, clamped to our bounds).
    pub lifetime: Duration,
}

/// What the responder answers in MM2.
#[derive(Clone, Debug)]
pub struct Phase1Selected {
    /// The transform.
    pub choice: Phase1Choice,
    /// The SA payload body we send (one proposal, the chosen transform as offered).
    pub reply: Vec<u8>,
}

/// Life type/duration pairs of a transform (both phases use the same layout with
/// different attribute numbers).
fn lifetimes(
    attrs: &[Attribute],
    life_type: u16,
    life_duration: u16,
) -> (Option<u64>, Option<u64>) {
    let (mut secs, mut kb) = (None, None);
    let mut current = None;
    for a in attrs {
        if a.kind == life_type {
            current = a.as_u64();
        } else if a.kind == life_duration {
            match current {
                Some(1) => secs = a.as_u64(),
                Some(2) => kb = a.as_u64(),
                _ => {}
            }
        }
    }
    (secs, kb)
}

fn attr(attrs: &[Attribute], kind: u16) -> Option<u64> {
    attrs
        .iter()
        .find(|a| a.kind == kind)
        .and_then(|a| a.as_u64())
}

fn clamp(v: Option<u64>, (lo, hi): (Duration, Duration), default: Duration) -> Duration {
    match v {
        Some(s) => Duration::from_secs(s).clamp(lo, hi),
        None => default.clamp(lo, hi),
    }
}

/// Why a Phase 1 transform is not taken.
fn phase1_transform(t: &Transform, algs: &Algorithms) -> Option<Phase1Choice> {
    let a = &t.attributes;
    let enc = u16::try_from(attr(a, p1attr::ENCRYPTION)?).ok()?;
    let bits = attr(a, p1attr::KEY_LENGTH).and_then(|b| u16::try_from(b).ok());
    let cipher = IkeCipher::from_p1(enc, bits)?;
    if cipher == IkeCipher::TripleDesCbc && !algs.allow_3des {
        return None;
    }
    let hash = HashAlg::from_p1(u16::try_from(attr(a, p1attr::HASH)?).ok()?)?;
    if attr(a, p1attr::AUTH_METHOD)? != u64::from(p1::AUTH_PSK) {
        return None;
    }
    let group = DhGroup::from_id(u16::try_from(attr(a, p1attr::GROUP)?).ok()?)?;
    if !algs.group_ok(group) {
        return None;
    }
    // A prf attribute (class 13) would name a non-HMAC PRF: nobody sends it; refuse.
    if attr(a, 13).is_some() {
        return None;
    }
    let (secs, _) = lifetimes(a, p1attr::LIFE_TYPE, p1attr::LIFE_DURATION);
    let lifetime = clamp(secs, algs.ike_lifetime, Duration::from_secs(28_800));
    Some(Phase1Choice {
        cipher,
        hash,
        group,
        lifetime,
    })
}

/// Picks the first acceptable ISAKMP transform of MM1's SA payload.
pub fn select_phase1(sa: &SaPayload, algs: &Algorithms) -> Option<Phase1Selected> {
    if sa.doi != DOI_IPSEC {
        return None;
    }
    for p in &sa.proposals {
        if p.protocol != PROTO_ISAKMP {
            continue;
        }
        for t in &p.transforms {
            if t.id != KEY_IKE {
                continue;
            }
            if let Some(choice) = phase1_transform(t, algs) {
                let reply = SaPayload {
                    doi: sa.doi,
                    situation: sa.situation,
                    proposals: vec![Proposal {
                        number: p.number,
                        protocol: p.protocol,
                        spi: p.spi.clone(),
                        transforms: vec![t.clone()],
                    }],
                };
                return Some(Phase1Selected {
                    choice,
                    reply: reply.emit(),
                });
            }
        }
    }
    None
}

/// Checks that the responder's MM2 SA names exactly one transform we offered.
pub fn accept_phase1_reply(sa: &SaPayload, algs: &Algorithms) -> Option<Phase1Choice> {
    let p = sa.proposals.first()?;
    let t = p.transforms.first()?;
    (p.protocol == PROTO_ISAKMP && t.id == KEY_IKE)
        .then(|| phase1_transform(t, algs))
        .flatten()
}

fn basic(kind: u16, v: u16) -> Attribute {
    Attribute {
        kind,
        value: AttrValue::Basic(v),
    }
}

fn life_value(secs: u64) -> AttrValue {
    match u16::try_from(secs) {
        Ok(v) => AttrValue::Basic(v),
        Err(_) => AttrValue::Variable(
            u32::try_from(secs)
                .unwrap_or(u32::MAX)
                .to_be_bytes()
                .to_vec(),
        ),
    }
}

/// The SA payload body an initiator offers in MM1: one proposal, one transform per
/// choice, in order.
pub fn offer_phase1(choices: &[Phase1Choice]) -> Vec<u8> {
    let transforms = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut attributes = vec![basic(p1attr::ENCRYPTION, c.cipher.p1_id())];
            if let Some(bits) = c.cipher.key_bits() {
                attributes.push(basic(p1attr::KEY_LENGTH, bits));
            }
            attributes.extend([
                basic(p1attr::HASH, c.hash.p1_id()),
                basic(p1attr::AUTH_METHOD, p1::AUTH_PSK),
                basic(p1attr::GROUP, c.group.id()),
                basic(p1attr::LIFE_TYPE, p1::LIFE_SECONDS),
                Attribute {
                    kind: p1attr::LIFE_DURATION,
                    value: life_value(c.lifetime.as_secs()),
                },
            ]);
            Transform {
                number: u8::try_from(i + 1).unwrap_or(u8::MAX),
                id: KEY_IKE,
                attributes,
            }
        })
        .collect();
    SaPayload {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol: PROTO_ISAKMP,
            spi: Vec::new(),
            transforms,
        }],
    }
    .emit()
}

/// ESP encapsulation as negotiated (RFC 3947 §5.1 and the draft values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncapMode {
    /// Transport or tunnel, raw ESP.
    Plain(Mode),
    /// Transport or tunnel in UDP; `draft` when the initiator used the draft values
    /// (we answer in kind).
    Udp {
        /// Transport or tunnel.
        mode: Mode,
        /// 61443/61444 instead of 3/4.
        draft: bool,
    },
}

impl EncapMode {
    fn from_attr(v: u64) -> Option<EncapMode> {
        Some(match v {
            1 => EncapMode::Plain(Mode::Tunnel),
            2 => EncapMode::Plain(Mode::Transport),
            3 => EncapMode::Udp {
                mode: Mode::Tunnel,
                draft: false,
            },
            4 => EncapMode::Udp {
                mode: Mode::Transport,
                draft: false,
            },
            61443 => EncapMode::Udp {
                mode: Mode::Tunnel,
                draft: true,
            },
            61444 => EncapMode::Udp {
                mode: Mode::Transport,
                draft: true,
            },
            _ => return None,
        })
    }

    /// The attribute value.
    pub fn attr(self) -> u16 {
        match self {
            EncapMode::Plain(Mode::Tunnel) => p2::MODE_TUNNEL,
            EncapMode::Plain(Mode::Transport) => p2::MODE_TRANSPORT,
            EncapMode::Udp {
                mode: Mode::Tunnel,
                draft: false,
            } => p2::MODE_UDP_TUNNEL_RFC,
            EncapMode::Udp {
                mode: Mode::Transport,
                draft: false,
            } => p2::MODE_UDP_TRANSPORT_RFC,
            EncapMode::Udp {
                mode: Mode::Tunnel,
                draft: true,
            } => p2::MODE_UDP_TUNNEL_DRAFT,
            EncapMode::Udp {
                mode: Mode::Transport,
                draft: true,
            } => p2::MODE_UDP_TRANSPORT_DRAFT,
        }
    }

    /// Transport or tunnel.
    pub fn mode(self) -> Mode {
        match self {
            EncapMode::Plain(m) | EncapMode::Udp { mode: m, .. } => m,
        }
    }

    /// ESP in UDP.
    pub fn udp(self) -> bool {
        matches!(self, EncapMode::Udp { .. })
    }
}

/// The Phase 2 (ESP) transform both sides use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase2Choice {
    /// ESP transform.
    pub transform: EspTransform,
    /// Mode and encapsulation.
    pub encap: EncapMode,
    /// PFS group, when the proposal names one.
    pub pfs: Option<DhGroup>,
    /// Time lifetime we enforce.
    pub lifetime: Duration,
    /// Volume lifetime in kilobytes, when the initiator set one.
    pub lifetime_kb: Option<u64>,
    /// The initiator asked for a longer lifetime than we allow: send
    /// RESPONDER-LIFETIME with ours.
    pub shortened: bool,
    /// The peer's SPI of this proposal.
    pub peer_spi: u32,
}

fn esp_transform(t: &Transform) -> Option<EspTransform> {
    let a = &t.attributes;
    let bits = attr(a, p2attr::KEY_LENGTH);
    let auth = attr(a, p2attr::AUTH_ALGORITHM);
    match (t.id, bits, auth) {
        (p2::ESP_AES_GCM_16, Some(128), None) => Some(EspTransform::Aes128Gcm),
        (p2::ESP_AES_GCM_16, Some(256), None) => Some(EspTransform::Aes256Gcm),
        (p2::ESP_AES_CBC, Some(128), Some(a)) if a == u64::from(p2::AUTH_HMAC_SHA1) => {
            Some(EspTransform::Aes128CbcSha1)
        }
        (p2::ESP_AES_CBC, Some(256), Some(a)) if a == u64::from(p2::AUTH_HMAC_SHA1) => {
            Some(EspTransform::Aes256CbcSha1)
        }
        (p2::ESP_AES_CBC, Some(128), Some(a)) if a == u64::from(p2::AUTH_HMAC_SHA2_256) => {
            Some(EspTransform::Aes128CbcSha256)
        }
        (p2::ESP_AES_CBC, Some(256), Some(a)) if a == u64::from(p2::AUTH_HMAC_SHA2_256) => {
            Some(EspTransform::Aes256CbcSha256)
        }
        _ => None,
    }
}

/// The Quick Mode proposal we take, and the SA payload body we answer with.
#[derive(Clone, Debug)]
pub struct Phase2Selected {
    /// The transform.
    pub choice: Phase2Choice,
    /// The reply SA body with `our_spi` in the proposal.
    pub reply: Vec<u8>,
}

/// Picks the first acceptable ESP proposal of QM1. Proposals that bundle several
/// protocols (same proposal number, e.g. AH+ESP) are skipped.
pub fn select_phase2(sa: &SaPayload, algs: &Algorithms, our_spi: u32) -> Option<Phase2Selected> {
    if sa.doi != DOI_IPSEC {
        return None;
    }
    for (i, p) in sa.proposals.iter().enumerate() {
        let bundled = sa
            .proposals
            .iter()
            .enumerate()
            .any(|(j, q)| j != i && q.number == p.number);
        if bundled || p.protocol != PROTO_ESP || p.spi.len() != 4 {
            continue;
        }
        let peer_spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
        for t in &p.transforms {
            let Some(transform) = esp_transform(t) else {
                continue;
            };
            let a = &t.attributes;
            let Some(encap) = attr(a, p2attr::ENCAPSULATION_MODE).and_then(EncapMode::from_attr)
            else {
                continue;
            };
            let pfs = match attr(a, p2attr::GROUP) {
                None => None,
                Some(g) => match u16::try_from(g).ok().and_then(DhGroup::from_id) {
                    Some(g) if algs.group_ok(g) => Some(g),
                    _ => continue,
                },
            };
            let (secs, kb) = lifetimes(a, p2attr::LIFE_TYPE, p2attr::LIFE_DURATION);
            let lifetime = clamp(secs, algs.esp_lifetime, Duration::from_secs(3600));
            let shortened = secs.is_none_or(|s| Duration::from_secs(s) > lifetime);
            let reply = SaPayload {
                doi: sa.doi,
                situation: sa.situation,
                proposals: vec![Proposal {
                    number: p.number,
                    protocol: PROTO_ESP,
                    spi: our_spi.to_be_bytes().to_vec(),
                    transforms: vec![t.clone()],
                }],
            };
            return Some(Phase2Selected {
                choice: Phase2Choice {
                    transform,
                    encap,
                    pfs,
                    lifetime,
                    lifetime_kb: kb,
                    shortened,
                    peer_spi,
                },
                reply: reply.emit(),
            });
        }
    }
    None
}

/// The ESP transform's attributes in Quick Mode.
fn esp_attrs(t: EspTransform) -> (u8, u16, Option<u16>) {
    match t {
        EspTransform::Aes128Gcm => (p2::ESP_AES_GCM_16, 128, None),
        EspTransform::Aes256Gcm => (p2::ESP_AES_GCM_16, 256, None),
        EspTransform::Aes128CbcSha1 => (p2::ESP_AES_CBC, 128, Some(p2::AUTH_HMAC_SHA1)),
        EspTransform::Aes256CbcSha1 => (p2::ESP_AES_CBC, 256, Some(p2::AUTH_HMAC_SHA1)),
        EspTransform::Aes128CbcSha256 => (p2::ESP_AES_CBC, 128, Some(p2::AUTH_HMAC_SHA2_256)),
        EspTransform::Aes256CbcSha256 => (p2::ESP_AES_CBC, 256, Some(p2::AUTH_HMAC_SHA2_256)),
    }
}

/// The SA payload body an initiator offers in QM1: one ESP proposal with `spi`, one
/// transform per ESP transform.
pub fn offer_phase2(
    transforms: &[EspTransform],
    encap: EncapMode,
    pfs: Option<DhGroup>,
    lifetime: Duration,
    spi: u32,
) -> Vec<u8> {
    let transforms = transforms
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let (id, bits, auth) = esp_attrs(t);
            let mut attributes = vec![
                basic(p2attr::LIFE_TYPE, p1::LIFE_SECONDS),
                Attribute {
                    kind: p2attr::LIFE_DURATION,
                    value: life_value(lifetime.as_secs()),
                },
                basic(p2attr::ENCAPSULATION_MODE, encap.attr()),
                basic(p2attr::KEY_LENGTH, bits),
            ];
            if let Some(a) = auth {
                attributes.push(basic(p2attr::AUTH_ALGORITHM, a));
            }
            if let Some(g) = pfs {
                attributes.push(basic(p2attr::GROUP, g.id()));
            }
            Transform {
                number: u8::try_from(i + 1).unwrap_or(u8::MAX),
                id,
                attributes,
            }
        })
        .collect();
    SaPayload {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol: PROTO_ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }],
    }
    .emit()
}

/// Checks the responder's QM2 SA (one proposal, one transform we support).
pub fn accept_phase2_reply(sa: &SaPayload, algs: &Algorithms) -> Option<Phase2Choice> {
    select_phase2(sa, algs, 0).map(|s| s.choice)
}

/// One line naming what the initiator offered, for the NO-PROPOSAL-CHOSEN log.
pub fn describe_offer(sa: &SaPayload) -> String {
    let mut out = String::new();
    for p in &sa.proposals {
        for t in &p.transforms {
            if !out.is_empty() {
                out.push_str(", ");
            }
            if p.protocol == PROTO_ISAKMP {
                describe_p1(&mut out, t);
            } else {
                describe_p2(&mut out, p.protocol, t);
            }
        }
    }
    if out.is_empty() {
        out.push_str("no transforms");
    }
    out
}

fn describe_p1(out: &mut String, t: &Transform) {
    let a = &t.attributes;
    let enc = attr(a, p1attr::ENCRYPTION);
    let bits = attr(a, p1attr::KEY_LENGTH);
    let enc_name = match (enc, bits) {
        (Some(7), Some(b)) => format!("aes{b}"),
        (Some(7), None) => "aes(no key length)".into(),
        (Some(5), _) => "3des".into(),
        (Some(1), _) => "des".into(),
        (Some(e), _) => format!("enc{e}"),
        (None, _) => "no-enc".into(),
    };
    let hash = match attr(a, p1attr::HASH) {
        Some(1) => "md5".into(),
        Some(h) => u16::try_from(h)
            .ok()
            .and_then(HashAlg::from_p1)
            .map_or(format!("hash{h}"), |h| h.name().to_string()),
        None => "no-hash".into(),
    };
    let auth = match attr(a, p1attr::AUTH_METHOD) {
        Some(1) => "psk".to_string(),
        Some(AUTH_XAUTH_PSK) => "xauth-psk".to_string(),
        Some(3) => "rsa-sig".to_string(),
        Some(m) => format!("auth{m}"),
        None => "no-auth".to_string(),
    };
    let group = attr(a, p1attr::GROUP).map_or("no-group".to_string(), |g| format!("group{g}"));
    let _ = write!(out, "{enc_name}-{hash}-{auth}-{group}");
}

fn describe_p2(out: &mut String, protocol: u8, t: &Transform) {
    let a = &t.attributes;
    let proto = match protocol {
        PROTO_ESP => "esp",
        2 => "ah",
        4 => "ipcomp",
        _ => "proto?",
    };
    let enc = match t.id {
        p2::ESP_AES_CBC => "aes",
        p2::ESP_AES_GCM_16 => "aesgcm16",
        p2::ESP_3DES => "3des",
        2 => "des",
        11 => "null",
        _ => "enc?",
    };
    let bits = attr(a, p2attr::KEY_LENGTH).map_or(String::new(), |b| b.to_string());
    let auth = match attr(a, p2attr::AUTH_ALGORITHM) {
        Some(1) => "-md5",
        Some(2) => "-sha1",
        Some(5) => "-sha256",
        Some(6) => "-sha384",
        Some(7) => "-sha512",
        Some(_) => "-auth?",
        None => "",
    };
    let mode = match attr(a, p2attr::ENCAPSULATION_MODE).and_then(EncapMode::from_attr) {
        Some(m) if m.mode() == Mode::Transport => "/transport",
        Some(_) => "/tunnel",
        None => "/mode?",
    };
    let _ = write!(out, "{proto}:{enc}{bits}{auth}{mode}");
    if let Some(g) = attr(a, p2attr::GROUP) {
        let _ = write!(out, "-pfs{g}");
    }
}
