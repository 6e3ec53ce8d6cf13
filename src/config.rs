//! The configuration file (TOML, ../shared/DESIGN.md §6). Every key has a default
//! except the ones a gateway cannot guess (`gateway.listen`, `ipsec.psk` when IPsec is
//! required, `pool.range`, `ppp.local_address`); every error names the key.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[gateway]`.
    pub gateway: Gateway,
    /// `[ipsec]`.
    #[serde(default)]
    pub ipsec: Ipsec,
    /// `[l2tp]`.
    #[serde(default)]
    pub l2tp: L2tp,
    /// `[ppp]`.
    pub ppp: Ppp,
    /// `[pool]`.
    pub pool: Pool,
    /// `[[user]]`, local users.
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    /// `[accounting]`.
    #[serde(default)]
    pub accounting: Accounting,
}

/// How packets enter and leave.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// XDP when it can attach, sockets otherwise.
    #[default]
    Auto,
    /// AF_XDP only (fails when it cannot attach).
    Xdp,
    /// UDP and raw sockets.
    Socket,
}

/// `[gateway]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Outside IPv4 address the gateway answers on.
    pub listen: Ipv4Addr,
    /// Outside interface (AF_XDP attaches here when io allows).
    #[serde(default)]
    pub interface: Option<String>,
    /// auto | xdp | socket.
    #[serde(default)]
    pub io: IoMode,
    /// Pinned worker cores.
    #[serde(default = "one")]
    pub workers: usize,
    /// "tun" (default) or an interface name (router mode).
    #[serde(default = "tun")]
    pub inside: String,
    /// Name of the TUN device.
    #[serde(default = "tun_name")]
    pub tun_name: String,
    /// UDP port for IKE.
    #[serde(default = "p500")]
    pub ike_port: u16,
    /// UDP port for NAT-T.
    #[serde(default = "p4500")]
    pub natt_port: u16,
    /// UDP port for L2TP.
    #[serde(default = "p1701")]
    pub l2tp_port: u16,
}

/// `[ipsec]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipsec {
    /// Pre-shared key for L2TP/IPsec clients (≥ 20 characters or a warning).
    #[serde(default)]
    pub psk: Option<Secret>,
    /// Per-peer keys, by outer address or by the ID the client sends.
    #[serde(default, rename = "peer")]
    pub peers: Vec<IpsecPeer>,
    /// ESP anti-replay window (64..=4096, multiple of 64).
    #[serde(default = "replay_window")]
    pub replay_window: u32,
    /// Accept 3DES for IKE (weak; off by default).
    #[serde(default)]
    pub allow_3des: bool,
    /// Accept DH group 2, MODP-1024 (weak; off by default).
    #[serde(default)]
    pub allow_modp1024: bool,
    /// Shortest IKE (Phase 1) lifetime accepted, seconds.
    #[serde(default = "lifetime_min")]
    pub ike_lifetime_min: u64,
    /// Longest IKE lifetime accepted, seconds.
    #[serde(default = "ike_lifetime_max")]
    pub ike_lifetime_max: u64,
    /// Shortest ESP (Phase 2) lifetime accepted, seconds.
    #[serde(default = "lifetime_min")]
    pub esp_lifetime_min: u64,
    /// Longest ESP lifetime accepted (longer requests get RESPONDER-LIFETIME), seconds.
    #[serde(default = "esp_lifetime_max")]
    pub esp_lifetime_max: u64,
    /// DPD (RFC 3706): a peer silent this long is asked; dead after two more
    /// intervals without an answer. 0 disables.
    #[serde(default = "dpd_interval")]
    pub dpd_interval: u64,
    /// Unauthenticated IKE exchanges in total.
    #[serde(default = "max_half_open")]
    pub max_half_open: usize,
    /// Unauthenticated IKE exchanges per source address.
    #[serde(default = "max_half_open_per_peer")]
    pub max_half_open_per_peer: usize,
    /// Diffie-Hellman computations per second for new exchanges (established users
    /// are never starved by a flood of first messages).
    #[serde(default = "dh_per_second")]
    pub dh_per_second: u32,
}

/// `[[ipsec.peer]]`: a key for one peer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecPeer {
    /// The peer's outer address.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// The identity the peer sends (an IPv4 address or a name).
    #[serde(default)]
    pub id: Option<String>,
    /// The key.
    pub psk: Secret,
}

impl IpsecPeer {
    /// The ID payload data this entry matches: 4 octets for an address, else the name.
    pub fn id_data(&self) -> Option<Vec<u8>> {
        self.id.as_ref().map(|i| match i.parse::<Ipv4Addr>() {
            Ok(a) => a.octets().to_vec(),
            Err(_) => i.as_bytes().to_vec(),
        })
    }
}

impl Default for Ipsec {
    fn default() -> Self {
        Ipsec {
            psk: None,
            peers: Vec::new(),
            replay_window: replay_window(),
            allow_3des: false,
            allow_modp1024: false,
            ike_lifetime_min: lifetime_min(),
            ike_lifetime_max: ike_lifetime_max(),
            esp_lifetime_min: lifetime_min(),
            esp_lifetime_max: esp_lifetime_max(),
            dpd_interval: dpd_interval(),
            max_half_open: max_half_open(),
            max_half_open_per_peer: max_half_open_per_peer(),
            dh_per_second: dh_per_second(),
        }
    }
}

impl fmt::Debug for Ipsec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipsec")
            .field("psk", &self.psk.as_ref().map(|_| "<secret>"))
            .field("peers", &self.peers.len())
            .field("replay_window", &self.replay_window)
            .field("allow_3des", &self.allow_3des)
            .field("allow_modp1024", &self.allow_modp1024)
            .field(
                "ike_lifetime",
                &(self.ike_lifetime_min, self.ike_lifetime_max),
            )
            .field(
                "esp_lifetime",
                &(self.esp_lifetime_min, self.esp_lifetime_max),
            )
            .field("dpd_interval", &self.dpd_interval)
            .finish()
    }
}

/// `[l2tp]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2tp {
    /// Refuse L2TP that did not arrive under IPsec.
    #[serde(default = "yes")]
    pub require_ipsec: bool,
    /// HELLO interval in seconds.
    #[serde(default = "hello")]
    pub hello_interval: u64,
    /// Tunnel authentication secret (optional).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Host Name AVP we send.
    #[serde(default = "host_name")]
    pub host_name: String,
}

impl Default for L2tp {
    fn default() -> Self {
        L2tp {
            require_ipsec: true,
            hello_interval: hello(),
            secret: None,
            host_name: host_name(),
        }
    }
}

impl fmt::Debug for L2tp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L2tp")
            .field("require_ipsec", &self.require_ipsec)
            .field("hello_interval", &self.hello_interval)
            .field("secret", &self.secret.as_ref().map(|_| "<secret>"))
            .field("host_name", &self.host_name)
            .finish()
    }
}

/// PPP authentication methods, offered in the configured order.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// MS-CHAPv2 (RFC 2759).
    Mschapv2,
    /// CHAP-MD5 (RFC 1994).
    Chap,
    /// PAP (RFC 1334).
    Pap,
}

/// `[ppp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ppp {
    /// Authentication methods in order of preference.
    #[serde(default = "auth")]
    pub auth: Vec<AuthMethod>,
    /// The gateway's own inner address; answers ping.
    pub local_address: Ipv4Addr,
    /// DNS servers given by IPCP (RFC 1877).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// MTU of the PPP links (and the TUN device).
    #[serde(default = "mtu")]
    pub mtu: u16,
    /// LCP echo interval in seconds (0 disables).
    #[serde(default = "echo")]
    pub echo_interval: u64,
    /// Unanswered echoes before the link is declared down.
    #[serde(default = "three")]
    pub echo_failures: u32,
}

/// `[pool]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// "a.b.c.d-e.f.g.h" or a CIDR.
    pub range: String,
}

/// `[[user]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password (used for PAP, CHAP and MS-CHAPv2).
    pub password: Secret,
    /// A static inner address for this user.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<secret>")
            .field("address", &self.address)
            .finish()
    }
}

/// `[accounting]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Accounting {
    /// File for one JSON line per session start and stop; "-" for stdout; none: off.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// A secret string: zeroized on drop, never printed.
#[derive(Deserialize, Clone)]
#[serde(transparent)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

fn one() -> usize {
    1
}
fn tun() -> String {
    "tun".into()
}
fn tun_name() -> String {
    "sekisho0".into()
}
fn p500() -> u16 {
    500
}
fn p4500() -> u16 {
    4500
}
fn p1701() -> u16 {
    1701
}
fn replay_window() -> u32 {
    1024
}
fn lifetime_min() -> u64 {
    300
}
fn ike_lifetime_max() -> u64 {
    86_400
}
fn esp_lifetime_max() -> u64 {
    28_800
}
fn dpd_interval() -> u64 {
    30
}
fn max_half_open() -> usize {
    10_000
}
fn max_half_open_per_peer() -> usize {
    64
}
fn dh_per_second() -> u32 {
    20_000
}
fn yes() -> bool {
    true
}
fn hello() -> u64 {
    60
}
fn host_name() -> String {
    "sekisho".into()
}
fn auth() -> Vec<AuthMethod> {
    vec![AuthMethod::Mschapv2, AuthMethod::Chap, AuthMethod::Pap]
}
fn mtu() -> u16 {
    1400
}
fn echo() -> u64 {
    30
}
fn three() -> u32 {
    3
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, e.g. "pool.range".
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Non-fatal findings of [`Config::validate`].
pub type Warnings = Vec<String>;

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<(Config, Warnings), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<(Config, Warnings), ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| {
            // toml names the key and line; keep its message, it says both.
            let msg = e.message().to_string();
            let key = e
                .span()
                .map(|s| {
                    format!(
                        "line {}",
                        text[..s.start.min(text.len())].lines().count().max(1)
                    )
                })
                .unwrap_or_default();
            err(&key, msg)
        })?;
        let w = c.validate()?;
        Ok((c, w))
    }

    /// Checks values that TOML types cannot express.
    pub fn validate(&self) -> Result<Warnings, ConfigError> {
        let mut warnings = Vec::new();
        let g = &self.gateway;
        if g.workers == 0 || g.workers > 64 {
            return Err(err(
                "gateway.workers",
                format!("{} is not in 1..=64", g.workers),
            ));
        }
        if g.inside.is_empty() {
            return Err(err(
                "gateway.inside",
                "must be \"tun\" or an interface name",
            ));
        }
        if g.tun_name.is_empty() || g.tun_name.len() > 15 {
            return Err(err("gateway.tun_name", "must be 1 to 15 characters"));
        }
        if g.io == IoMode::Xdp && g.interface.is_none() {
            return Err(err(
                "gateway.interface",
                "io = \"xdp\" needs the outside interface",
            ));
        }
        if !(64..=4096).contains(&self.ipsec.replay_window)
            || !self.ipsec.replay_window.is_multiple_of(64)
        {
            return Err(err(
                "ipsec.replay_window",
                format!(
                    "{} is not a multiple of 64 in 64..=4096",
                    self.ipsec.replay_window
                ),
            ));
        }
        match &self.ipsec.psk {
            None if self.l2tp.require_ipsec => {
                return Err(err(
                    "ipsec.psk",
                    "missing (required while l2tp.require_ipsec = true)",
                ));
            }
            Some(p) if p.expose().is_empty() => return Err(err("ipsec.psk", "is empty")),
            Some(p) if p.expose().chars().count() < 20 => {
                warnings.push("ipsec.psk: shorter than 20 characters; use a long random key".into())
            }
            _ => {}
        }
        let ip = &self.ipsec;
        if ip.ike_lifetime_min == 0 || ip.ike_lifetime_min > ip.ike_lifetime_max {
            return Err(err(
                "ipsec.ike_lifetime_min",
                format!(
                    "{} must be in 1..=ike_lifetime_max ({})",
                    ip.ike_lifetime_min, ip.ike_lifetime_max
                ),
            ));
        }
        if ip.esp_lifetime_min == 0 || ip.esp_lifetime_min > ip.esp_lifetime_max {
            return Err(err(
                "ipsec.esp_lifetime_min",
                format!(
                    "{} must be in 1..=esp_lifetime_max ({})",
                    ip.esp_lifetime_min, ip.esp_lifetime_max
                ),
            ));
        }
        if ip.max_half_open == 0 || ip.max_half_open_per_peer == 0 {
            return Err(err(
                "ipsec.max_half_open",
                "must be at least 1 (also max_half_open_per_peer)",
            ));
        }
        if ip.dh_per_second == 0 {
            return Err(err("ipsec.dh_per_second", "must be at least 1"));
        }
        for (i, p) in ip.peers.iter().enumerate() {
            if p.address.is_none() && p.id.is_none() {
                return Err(err(&format!("ipsec.peer[{i}]"), "needs address or id"));
            }
            if p.psk.expose().is_empty() {
                return Err(err(&format!("ipsec.peer[{i}].psk"), "is empty"));
            }
        }
        if ip.allow_3des {
            warnings.push("ipsec.allow_3des: 3DES is weak; enable only for old clients".into());
        }
        if ip.allow_modp1024 {
            warnings.push(
                "ipsec.allow_modp1024: MODP-1024 is weak; enable only for old clients".into(),
            );
        }
        if self.l2tp.hello_interval == 0 {
            return Err(err("l2tp.hello_interval", "must be at least 1 second"));
        }
        if self.ppp.auth.is_empty() {
            return Err(err("ppp.auth", "needs at least one of mschapv2, chap, pap"));
        }
        for (i, a) in self.ppp.auth.iter().enumerate() {
            if self.ppp.auth[..i].contains(a) {
                return Err(err("ppp.auth", format!("{a:?} listed twice")));
            }
        }
        if !(576..=1500).contains(&self.ppp.mtu) {
            return Err(err(
                "ppp.mtu",
                format!("{} is not in 576..=1500", self.ppp.mtu),
            ));
        }
        if self.ppp.local_address.is_unspecified() {
            return Err(err("ppp.local_address", "must be a real address"));
        }
        if self.pool.range.trim().is_empty() {
            return Err(err("pool.range", "is empty"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("user[{i}]");
            if u.name.is_empty() {
                return Err(err(&format!("{key}.name"), "is empty"));
            }
            if !names.insert(u.name.as_str()) {
                return Err(err(
                    &format!("{key}.name"),
                    format!("{:?} is defined twice", u.name),
                ));
            }
            if u.password.expose().is_empty() {
                return Err(err(&format!("{key}.password"), "is empty"));
            }
        }
        if self.users.is_empty() {
            warnings.push("no [[user]] defined: nobody can log in".into());
        }
        Ok(warnings)
    }

    /// LCP echo interval, if enabled.
    pub fn echo_interval(&self) -> Option<Duration> {
        (self.ppp.echo_interval > 0).then(|| Duration::from_secs(self.ppp.echo_interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
listen = "10.77.0.254"
interface = "cvbr0"
io = "auto"
workers = 1
inside = "tun"

[ipsec]
psk = "a-long-enough-pre-shared-key"

[l2tp]
require_ipsec = true

[ppp]
auth = ["mschapv2", "chap", "pap"]
local_address = "10.99.0.1"
dns = ["10.99.0.1"]
mtu = 1400

[pool]
range = "10.99.0.10-10.99.0.250"

[[user]]
name = "vpnuser"
password = "vpnpass123"
"#;

    #[test]
    fn the_design_example_parses_with_defaults() {
        let (c, w) = Config::parse(GOOD).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.gateway.listen, Ipv4Addr::new(10, 77, 0, 254));
        assert_eq!(c.gateway.io, IoMode::Auto);
        assert_eq!(c.gateway.natt_port, 4500);
        assert_eq!(c.ipsec.replay_window, 1024);
        assert_eq!(c.l2tp.hello_interval, 60);
        assert_eq!(
            c.ppp.auth,
            vec![AuthMethod::Mschapv2, AuthMethod::Chap, AuthMethod::Pap]
        );
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].password.expose(), "vpnpass123");
        // Secrets never show in Debug output.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("vpnpass123") && !dbg.contains("a-long-enough"),
            "{dbg}"
        );
    }

    fn with(line_from: &str, line_to: &str) -> Result<(Config, Warnings), ConfigError> {
        Config::parse(&GOOD.replace(line_from, line_to))
    }

    #[test]
    fn errors_name_the_key() {
        let e = with("workers = 1", "workers = 0").unwrap_err();
        assert_eq!(e.key, "gateway.workers");
        let e = with("mtu = 1400", "mtu = 9000").unwrap_err();
        assert_eq!(e.key, "ppp.mtu");
        let e = with("psk = \"a-long-enough-pre-shared-key\"", "").unwrap_err();
        assert_eq!(e.key, "ipsec.psk");
        let e = with(
            "auth = [\"mschapv2\", \"chap\", \"pap\"]",
            "auth = [\"pap\", \"pap\"]",
        )
        .unwrap_err();
        assert_eq!(e.key, "ppp.auth");
        let e = with("name = \"vpnuser\"", "name = \"\"").unwrap_err();
        assert_eq!(e.key, "user[0].name");
        // Unknown keys and bad values: toml's message names the key, with the line.
        let e = with("mtu = 1400", "mtu = 1400\nmtuu = 3").unwrap_err();
        assert!(e.to_string().contains("mtuu"), "{e}");
        let e = with("io = \"auto\"", "io = \"fast\"").unwrap_err();
        assert!(e.to_string().contains("line"), "{e}");
        let e = with("listen = \"10.77.0.254\"", "listen = \"10.77.0\"").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
    }

    #[test]
    fn a_minimal_file_takes_every_default() {
        let text = "[gateway]\nlisten = \"10.0.0.1\"\n[l2tp]\nrequire_ipsec = false\n\
                    [ppp]\nlocal_address = \"10.99.0.1\"\n[pool]\nrange = \"10.99.0.0/24\"\n";
        let (c, _) = Config::parse(text).unwrap();
        assert_eq!(c.ipsec.replay_window, 1024);
        assert_eq!(c.ppp.mtu, 1400);
        assert_eq!(c.gateway.workers, 1);
    }

    #[test]
    fn short_psk_is_a_warning_and_plain_l2tp_needs_no_psk() {
        let (_, w) = with("a-long-enough-pre-shared-key", "short").unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("ipsec.psk"));
        let text = GOOD
            .replace("psk = \"a-long-enough-pre-shared-key\"", "")
            .replace("require_ipsec = true", "require_ipsec = false");
        assert!(Config::parse(&text).is_ok());
    }
}
