//! Interop with host strongSwan 5.9.8 as the IKEv1 initiator against `sekisho run`:
//! charon-systemd with kernel-libipsec (userspace ESP, so TUNNEL mode only and always
//! UDP-encapsulated: `encap = yes`) in netns C (10.78.0.1), the gateway in netns G
//! (10.78.0.254), one veth between them. Main Mode PSK, Quick Mode tunnel mode host to
//! host: local_ts = 10.78.0.1/32[udp/1701], remote_ts = 10.78.0.254/32[udp/1701]
//! (libipsec's route to the peer itself: `allow_peer_ts` + the fwmark pair so charon's
//! own IKE packets bypass table 220).
//!
//! Asserted: `swanctl --initiate` succeeds, `--list-sas` shows the IKE SA ESTABLISHED
//! (with the negotiated algorithms) and the CHILD SA INSTALLED TUNNEL-in-UDP; then the
//! project's own L2TP + PPP client (tests/common/l2tp_client.rs) runs through the SA —
//! the gateway has `require_ipsec = true` — up to IPCP and a ping to the gateway's inner
//! address; the CHILD SA counted packets both ways; the accounting start line.
//!
//! Cases: strongSwan's default IKEv1 proposal (AES_CBC_128/HMAC_SHA2_256_128/
//! PRF_HMAC_SHA2_256/CURVE_25519 plus its degenerate DH-only second transform; ESP
//! AES_GCM_16_128 first) and `aes256-sha2_256-modp2048` / `aes256gcm16`.
//!
//! Needs root and charon-systemd, swanctl, the kernel-libipsec plugin (apt:
//! charon-systemd strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins
//! libstrongswan-standard-plugins). Each case ~3 s.

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{self, Gateway, tail};
use common::l2tp_client::{self, AfterPong};
use common::netns::{self, Netns, enter};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const GW: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 254);
const CHARON: &str = "/usr/sbin/charon-systemd";
const LIBIPSEC: &str = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";

/// charon-systemd in the client namespace with a strongswan.conf of its own.
struct Charon {
    child: Option<Child>,
    dir: PathBuf,
    ns: String,
}

impl Charon {
    fn start(ns: &Netns, dir: &Path) -> Charon {
        let d = dir.display();
        let conf = format!(
            r#"# per-instance strongswan.conf (STRONGSWAN_CONF); nothing from /etc
charon {{
  load_modular = no
  load = random nonce aes sha1 sha2 md5 hmac gcm openssl pem pkcs1 x509 revocation curve25519 gmp kdf kernel-libipsec kernel-netlink socket-default vici updown
  install_routes = yes
  plugins {{
    vici {{ socket = unix://{d}/charon.vici }}
    # the remote TS is the IKE peer itself: charon marks its own packets, table 220 skips them
    kernel-libipsec {{ allow_peer_ts = yes }}
    kernel-netlink {{ fwmark = !0x42 }}
    socket-default {{ fwmark = 0x42 }}
  }}
  filelog {{
    main {{
      path = {d}/charon.log
      time_format = %T
      default = 1
      ike = 2
      cfg = 2
      knl = 2
      enc = 1
      chd = 4
      flush_line = yes
      append = no
    }}
  }}
  journal {{ default = -1 }}
  syslog {{ daemon {{ default = -1 }} }}
}}
swanctl {{
  socket = unix://{d}/charon.vici
}}
"#
        );
        fs::write(dir.join("strongswan.conf"), conf).expect("strongswan.conf");
        let child = ns
            .cmd(CHARON)
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("charon.stdout")).expect("charon.stdout"))
            .stderr(fs::File::create(dir.join("charon.stderr")).expect("charon.stderr"))
            .spawn()
            .expect("start charon-systemd");
        let c = Charon {
            child: Some(child),
            dir: dir.to_path_buf(),
            ns: ns.name.clone(),
        };
        let t = Instant::now();
        while !dir.join("charon.vici").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "charon's vici socket did not appear\n{}\n{}",
                tail(&dir.join("charon.log"), 20),
                tail(&dir.join("charon.stderr"), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn swanctl(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "swanctl"])
            .args(args)
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .output()
            .expect("run swanctl")
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Our child's pid (not reaped yet): SIGTERM lets charon send its DELETEs.
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The processes one case started, stopped in this order on drop (charon first: its
/// DELETEs reach the gateway); the namespaces, declared before, go after.
struct World {
    charon: Option<Charon>,
    gateway: Option<Gateway>,
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// The packet counts of the CHILD SA's `in` and `out` lines in `swanctl --list-sas`.
fn child_packets(list: &str) -> (u64, u64) {
    let mut r = (0, 0);
    for l in list.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let packets = w
            .iter()
            .position(|x| x.starts_with("packets"))
            .and_then(|i| w.get(i - 1))
            .and_then(|n| n.parse::<u64>().ok());
        match (w.first(), packets) {
            (Some(&"in"), Some(n)) => r.0 = n,
            (Some(&"out"), Some(n)) => r.1 = n,
            _ => {}
        }
    }
    r
}

fn usable(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        common::skip(test, "needs root (network namespaces, TUN)");
        return false;
    }
    for (tool, pkg) in [
        (CHARON, "charon-systemd"),
        ("/usr/sbin/swanctl", "strongswan-swanctl"),
        (LIBIPSEC, "libcharon-extra-plugins"),
        (
            "/usr/lib/ipsec/plugins/libstrongswan-gcm.so",
            "libstrongswan-standard-plugins",
        ),
    ] {
        if !Path::new(tool).exists() {
            common::skip(test, &format!("no {tool} (apt-get install {pkg})"));
            return false;
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        common::skip(test, "no /dev/net/tun");
        return false;
    }
    let bin = env!("CARGO_BIN_EXE_sekisho");
    if !gateway::has_run(bin) {
        eprintln!("SKIP {test}: this sekisho has no `run` subcommand yet");
        return false;
    }
    gateway::has_ike(test)
}

/// One interop case: `ike`/`esp` proposals (None: strongSwan's defaults); `expect_ike`
/// and `expect_esp` must appear in `--list-sas`.
fn interop(test: &str, tag: &str, ike: Option<&str>, esp: Option<&str>, expect: &[&str]) {
    if !usable(test) {
        return;
    }
    let t0 = Instant::now();
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("sekisho-sw-{pid}-{tag}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("test dir");
    let g = Netns::new(&format!("skswg{pid}{tag}"));
    let c = Netns::new(&format!("skswc{pid}{tag}"));
    netns::veth(&g, "skw0", "10.78.0.254/24", &c, "skw1", "10.78.0.1/24");
    let mut w = World {
        charon: None,
        gateway: None,
    };
    let toml = format!(
        r#"[gateway]
listen = "10.78.0.254"
interface = "skw0"
io = "socket"
tun_name = "skwt0"
{}[l2tp]
require_ipsec = true
hello_interval = 30
[ppp]
auth = ["mschapv2", "chap", "pap"]
local_address = "10.99.0.1"
dns = ["10.99.0.1"]
[pool]
range = "10.99.0.10-10.99.0.250"
[[user]]
name = "vpnuser"
password = "vpnpass123"
"#,
        gateway::ipsec_sections(5)
    );
    w.gateway = Some(Gateway::start(&g, &dir, &toml, "10.99.0.1"));
    let charon = Charon::start(&c, &dir);

    let mut conn = format!(
        "connections {{\n  gw {{\n    version = 1\n    local_addrs = {CLIENT}\n    remote_addrs = {GW}\n    encap = yes\n"
    );
    if let Some(p) = ike {
        conn += &format!("    proposals = {p}\n");
    }
    conn += "    local { auth = psk }\n    remote { auth = psk }\n    children {\n      gw {\n        mode = tunnel\n";
    conn += &format!(
        "        local_ts = {CLIENT}/32[udp/1701]\n        remote_ts = {GW}/32[udp/1701]\n"
    );
    if let Some(p) = esp {
        conn += &format!("        esp_proposals = {p}\n");
    }
    conn += &format!(
        "        start_action = none\n      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-1 {{ secret = \"{}\" }}\n}}\n",
        gateway::PSK
    );
    let swanctl_conf = dir.join("swanctl.conf");
    fs::write(&swanctl_conf, &conn).expect("swanctl.conf");
    let load = charon.swanctl(&["--load-all", "--file", &swanctl_conf.to_string_lossy()]);
    assert!(
        load.status.success() && text(&load).contains("loaded connection 'gw'"),
        "swanctl --load-all:\n{}",
        text(&load)
    );
    w.charon = Some(charon);
    let charon = w.charon.as_ref().expect("charon");
    let log = dir.join("charon.log");
    let gw_log = |w: &World| {
        w.gateway
            .as_ref()
            .map(|g| g.log_tail(40))
            .unwrap_or_default()
    };

    let t_ike = Instant::now();
    let init = charon.swanctl(&["--initiate", "--child", "gw", "--timeout", "30"]);
    let ike_secs = t_ike.elapsed().as_secs_f64();
    fs::write(dir.join("initiate.txt"), text(&init)).ok();
    assert!(
        init.status.success(),
        "{test}: swanctl --initiate failed ({:?}):\n{}\n{}\n{}",
        init.status,
        text(&init),
        tail(&log, 60),
        gw_log(&w)
    );
    let list = text(&charon.swanctl(&["--list-sas"]));
    eprintln!("{test}: SAs up in {ike_secs:.2} s:\n{list}");
    assert!(
        list.contains("ESTABLISHED, IKEv1"),
        "{test}: no ESTABLISHED IKEv1 SA:\n{list}"
    );
    assert!(
        list.contains("INSTALLED, TUNNEL-in-UDP"),
        "{test}: no INSTALLED TUNNEL-in-UDP CHILD SA:\n{list}"
    );
    for e in expect {
        assert!(list.contains(e), "{test}: {e} not negotiated:\n{list}");
    }

    // L2TP + PPP through the SA (the gateway refuses L2TP outside IPsec).
    let cns = c.name.clone();
    let outcome = std::thread::spawn(move || {
        enter(&cns);
        let sock = UdpSocket::bind(SocketAddrV4::new(CLIENT, 1701)).expect("bind 1701");
        l2tp_client::run(
            &sock,
            SocketAddrV4::new(GW, 1701),
            "vpnuser",
            "vpnpass123",
            Duration::from_secs(30),
            || AfterPong::Stop,
        )
    })
    .join()
    .expect("client thread");
    let list_after = text(&charon.swanctl(&["--list-sas"]));
    let Some(up) = &outcome.up else {
        panic!(
            "{test}: PPP did not come up through the IPsec SA: {outcome:?}\n{list_after}\n{}\n{}",
            tail(&log, 40),
            gw_log(&w)
        );
    };
    assert!(
        (u32::from(Ipv4Addr::new(10, 99, 0, 10))..=u32::from(Ipv4Addr::new(10, 99, 0, 250)))
            .contains(&u32::from(up.local_address)),
        "{test}: pool address: {}",
        up.local_address
    );
    assert_eq!(up.peer_address, Ipv4Addr::new(10, 99, 0, 1));
    assert!(
        outcome.pong,
        "{test}: no echo reply from 10.99.0.1 through the session: {outcome:?}\n{}",
        gw_log(&w)
    );
    let (pin, pout) = child_packets(&list_after);
    assert!(
        pin > 0 && pout > 0,
        "{test}: the CHILD SA carried no packets (in {pin}, out {pout}):\n{list_after}"
    );
    let acct_path = w.gateway.as_ref().expect("gateway").accounting.clone();
    let acct = gateway::accounting(&acct_path);
    assert!(
        acct.iter().any(|r| r["event"] == "start"
            && r["user"] == "vpnuser"
            && r["outer_address"] == CLIENT.to_string()),
        "{test}: no accounting start line for vpnuser from {CLIENT}: {acct:?}"
    );
    assert!(
        w.gateway.as_mut().expect("gateway").alive(),
        "{test}: the gateway exited\n{}",
        gw_log(&w)
    );
    eprintln!(
        "{test}: ok: IKE+CHILD SA {ike_secs:.2} s, PPP up after {:?}, pong after {:?}, ESP in {pin} out {pout} packets; {:.1} s in all",
        outcome.up_after,
        outcome.pong_after,
        t0.elapsed().as_secs_f64(),
    );
    drop(w);
    drop((c, g));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn strongswan_ikev1_default_proposals_tunnel_natt() {
    interop(
        "strongswan_ikev1_default_proposals_tunnel_natt",
        "d",
        None,
        None,
        &["AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519"],
    );
}

#[test]
fn strongswan_ikev1_aes256_modp2048_esp_gcm256() {
    interop(
        "strongswan_ikev1_aes256_modp2048_esp_gcm256",
        "m",
        Some("aes256-sha2_256-modp2048"),
        Some("aes256gcm16"),
        &[
            "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
            "ESP:AES_GCM_16-256",
        ],
    );
}
