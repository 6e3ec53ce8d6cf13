//! `sekisho run` and `sekisho check-config`: the configuration turned into a data plane,
//! a control thread and their machines; signals for shutdown (SIGTERM, SIGINT) and
//! reload (SIGHUP).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::aaa::Password;
use crate::aaa::pool::Pool;
use crate::aaa::users::LocalUsers;
use crate::config::{AuthMethod, Config};
use crate::control::accounting::Accounting;
use crate::control::{Control, ControlConfig, Tick};
use crate::dataplane::io::tun::TunConfig;
use crate::dataplane::runtime::{self, PlaneConfig, tunnel_bits};
use crate::ike::v1::proposal::Algorithms;
use crate::ike::v1::responder::{PeerPsk, Responder, ResponderConfig};
use crate::l2tp::{self, Lns, LnsConfig};
use crate::ppp;
use zeroize::Zeroizing;

/// Everything `check-config` verifies beyond the file's own validation: the pool
/// parses, users are valid, the local address is outside the pool.
pub fn check(cfg: &Config) -> Result<(Pool, LocalUsers), String> {
    let pool = Pool::parse(&cfg.pool.range).map_err(|e| format!("pool.range: {e}"))?;
    if pool.contains(cfg.ppp.local_address) {
        return Err(format!(
            "ppp.local_address: {} lies inside pool.range {}",
            cfg.ppp.local_address, cfg.pool.range
        ));
    }
    let users = users_of(cfg)?;
    ppp_config(cfg).check().map_err(|e| e.to_string())?;
    let mut pool = pool;
    // Static user addresses are never handed to anyone else.
    for a in users.static_addresses() {
        pool.reserve(a);
    }
    Ok((pool, users))
}

fn users_of(cfg: &Config) -> Result<LocalUsers, String> {
    let mut users = LocalUsers::new();
    for (i, u) in cfg.users.iter().enumerate() {
        users
            .add(
                &u.name,
                Password::new(u.password.expose().as_bytes().to_vec()),
                u.address,
            )
            .map_err(|e| format!("user[{i}]: {e}"))?;
    }
    Ok(users)
}

fn ppp_config(cfg: &Config) -> ppp::ServerConfig {
    let mut p = ppp::ServerConfig::new(cfg.ppp.local_address);
    p.auth = cfg
        .ppp
        .auth
        .iter()
        .map(|a| match a {
            AuthMethod::Mschapv2 => ppp::AuthMethod::MsChapV2,
            AuthMethod::Chap => ppp::AuthMethod::Chap,
            AuthMethod::Pap => ppp::AuthMethod::Pap,
        })
        .collect();
    p.dns = cfg.ppp.dns.clone();
    p.mru = cfg.ppp.mtu;
    p.name = cfg.l2tp.host_name.clone();
    p.timing.echo_interval = cfg.echo_interval();
    p.timing.echo_failures = cfg.ppp.echo_failures;
    p
}

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), String> {
    let (cfg, warnings) = Config::load(path).map_err(|e| e.to_string())?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let (pool, users) = check(&cfg)?;
    let prefix = 24;
    let router = (cfg.gateway.inside != "tun").then(|| {
        let (net, len) = covering_prefix(&pool);
        (cfg.gateway.inside.clone(), net, len)
    });
    let plane_cfg = PlaneConfig {
        listen: cfg.gateway.listen,
        interface: cfg.gateway.interface.clone(),
        io: cfg.gateway.io,
        workers: cfg.gateway.workers,
        ports: (
            cfg.gateway.ike_port,
            cfg.gateway.natt_port,
            cfg.gateway.l2tp_port,
        ),
        tun: TunConfig {
            name: cfg.gateway.tun_name.clone(),
            mtu: cfg.ppp.mtu,
            addr: cfg.ppp.local_address,
            prefix,
            queues: cfg.gateway.workers,
        },
        router,
        require_ipsec: cfg.l2tp.require_ipsec,
        mss_clamp: Some(cfg.ppp.mtu.saturating_sub(40)),
        raw_esp: true,
    };
    let plane = runtime::start(&plane_cfg)?;
    // The pool is routed into the TUN device: the device holds local_address/24; add
    // a route for the whole pool when it lies outside that prefix.
    if cfg.gateway.inside == "tun" {
        route_pool(&cfg.gateway.tun_name, &cfg.pool.range);
    }

    let mut lns_cfg = LnsConfig {
        worker_bits: tunnel_bits(cfg.gateway.workers),
        ..LnsConfig::default()
    };
    lns_cfg.tunnel.host_name = cfg.l2tp.host_name.clone();
    lns_cfg.tunnel.hello_interval = Some(Duration::from_secs(cfg.l2tp.hello_interval));
    lns_cfg.tunnel.secret = cfg
        .l2tp
        .secret
        .as_ref()
        .map(|s| l2tp::Secret::new(s.expose().as_bytes().to_vec()));
    let accounting = Accounting::open(cfg.accounting.file.as_deref())
        .map_err(|e| format!("accounting.file: {e}"))?;
    let mut control = Control::new(
        ControlConfig {
            local: cfg.gateway.listen,
            ppp: ppp_config(&cfg),
            require_ipsec: cfg.l2tp.require_ipsec,
            workers: cfg.gateway.workers,
        },
        Lns::new(lns_cfg),
        users,
        pool,
        accounting,
        plane.cmds.clone(),
    );
    if cfg.ipsec.psk.is_some() || !cfg.ipsec.peers.is_empty() {
        let spis = crate::control::ike::PlaneSpis(
            plane
                .spi_allocators()
                .map_err(|e| format!("gateway.workers: {e:?}"))?,
        );
        let responder = Responder::new(ike_config(&cfg), Box::new(spis));
        let dpd = Duration::from_secs(cfg.ipsec.dpd_interval.max(1));
        control = control.with_ike(
            responder,
            crate::control::ike::SaSettings {
                replay_window: cfg.ipsec.replay_window,
                backend: crate::crypto::Backend::default(),
            },
            dpd / 3,
        );
    }

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone()).map_err(|e| format!("signal: {e}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| format!("signal: {e}"))?;
    tracing::info!(listen = %cfg.gateway.listen, "sekisho running");
    let up = plane.up.clone();
    let reload_path = path.to_path_buf();
    control.run(&up, || {
        if term.load(Ordering::Relaxed) {
            return Tick::Stop;
        }
        if hup.swap(false, Ordering::Relaxed) {
            match Config::load(&reload_path)
                .map_err(|e| e.to_string())
                .and_then(|(c, _)| reload_of(&c))
            {
                // Established sessions are kept; new logins use the new settings.
                Ok(r) => {
                    tracing::info!("SIGHUP: users, keys and pool reloaded");
                    return Tick::Reload(Box::new(r));
                }
                Err(e) => tracing::warn!("SIGHUP: configuration not reloaded: {e}"),
            }
        }
        Tick::Go
    });
    let totals = plane.shutdown();
    tracing::info!(
        sessions_up = control.stats.sessions_up,
        decap = totals.decap_out,
        encap = totals.encap_out,
        drops = totals.total_drops(),
        "sekisho stopped"
    );
    Ok(())
}

/// The IKEv1 responder's settings from `[ipsec]`.
pub fn ike_config(cfg: &Config) -> ResponderConfig {
    let ip = &cfg.ipsec;
    let key = |s: &crate::config::Secret| Zeroizing::new(s.expose().as_bytes().to_vec());
    let mut r = ResponderConfig::new(cfg.gateway.listen, ip.psk.as_ref().map(key));
    r.peers = ip
        .peers
        .iter()
        .map(|p| PeerPsk {
            address: p.address,
            id: p.id_data(),
            psk: key(&p.psk),
        })
        .collect();
    r.algs = Algorithms {
        allow_3des: ip.allow_3des,
        allow_modp1024: ip.allow_modp1024,
        ike_lifetime: (
            Duration::from_secs(ip.ike_lifetime_min),
            Duration::from_secs(ip.ike_lifetime_max),
        ),
        esp_lifetime: (
            Duration::from_secs(ip.esp_lifetime_min),
            Duration::from_secs(ip.esp_lifetime_max),
        ),
    };
    r.dpd_interval = (ip.dpd_interval > 0).then(|| Duration::from_secs(ip.dpd_interval));
    r.max_half_open = ip.max_half_open;
    r.max_half_open_per_peer = ip.max_half_open_per_peer;
    r.dh_per_second = ip.dh_per_second;
    r
}

/// What SIGHUP reloads: users, IKE keys and settings, the pool.
fn reload_of(c: &Config) -> Result<crate::control::Reload, String> {
    Ok(crate::control::Reload {
        users: users_of(c)?,
        ike: Some(ike_config(c)),
        pool: Some(Pool::parse(&c.pool.range).map_err(|e| format!("pool.range: {e}"))?),
    })
}

/// The smallest prefix that holds the whole pool (what router mode steers).
fn covering_prefix(pool: &Pool) -> (std::net::Ipv4Addr, u8) {
    let text = pool.to_string();
    let parse = |s: &str| s.parse::<std::net::Ipv4Addr>().map(u32::from).unwrap_or(0);
    let (a, b) = text
        .split_once('-')
        .map_or((0, 0), |(a, b)| (parse(a), parse(b)));
    let len = (a ^ b).leading_zeros().min(32) as u8;
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    (std::net::Ipv4Addr::from(a & mask), len)
}

/// Routes every /24 the pool touches into the TUN device (the device's own prefix
/// covers the common case of a pool next to `local_address`).
fn route_pool(dev: &str, range: &str) {
    let Ok(p) = Pool::parse(range) else { return };
    let text = p.to_string();
    let Some((a, b)) = text.split_once('-') else {
        return;
    };
    let (Ok(a), Ok(b)) = (
        a.parse::<std::net::Ipv4Addr>(),
        b.parse::<std::net::Ipv4Addr>(),
    ) else {
        return;
    };
    let (first, last) = (u32::from(a) >> 8, u32::from(b) >> 8);
    for net in (first..=last).take(256) {
        let net = std::net::Ipv4Addr::from(net << 8);
        let _ = std::process::Command::new("ip")
            .args(["route", "replace", &format!("{net}/24"), "dev", dev])
            .status();
    }
}
