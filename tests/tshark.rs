//! What sekisho puts on the wire, checked by an independent decoder: tshark decrypts
//! our ESP with the session keys, verifies every ICV, and decodes the L2TP, PPP and
//! inner IPv4 inside — for every transform, raw ESP and UDP/4500, both directions.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use sekisho::crypto::Backend;
use sekisho::crypto::Transform;
use sekisho::dataplane::chain::{Pkt, Verdict};
use sekisho::dataplane::peer::{
    FRAME_HEADROOM, PeerParams, SimPeer, frame_len, keymat, new_shard, write_inner_udp,
};
use sekisho::wire::pcap;

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn tshark_alg(t: Transform) -> (&'static str, &'static str) {
    match t {
        Transform::Aes128Gcm | Transform::Aes256Gcm => {
            ("AES-GCM with 16 octet ICV [RFC4106]", "NULL")
        }
        Transform::Aes128CbcSha1 | Transform::Aes256CbcSha1 => {
            ("AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]")
        }
        Transform::Aes128CbcSha256 | Transform::Aes256CbcSha256 => {
            ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]")
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A tshark `esp_sa` record for one direction.
fn esp_sa(t: Transform, src: Ipv4Addr, dst: Ipv4Addr, spi: u32, km: &[u8]) -> String {
    let (enc, auth) = tshark_alg(t);
    let split = t.enc_key_len() + t.salt_len();
    let auth_key = if km.len() > split {
        format!("0x{}", hex(&km[split..]))
    } else {
        String::new()
    };
    format!(
        "uat:esp_sa:\"IPv4\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{enc}\",\"0x{}\",\"{auth}\",\"{auth_key}\"",
        hex(&km[..split])
    )
}

fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

#[test]
fn tshark_decrypts_and_verifies_what_we_emit() {
    if !common::have_tool("tshark_decrypts_and_verifies_what_we_emit", "tshark") {
        return;
    }
    let cases = [
        (Transform::Aes128Gcm, true),
        (Transform::Aes256Gcm, false),
        (Transform::Aes128CbcSha1, true),
        (Transform::Aes256CbcSha1, false),
        (Transform::Aes128CbcSha256, true),
        (Transform::Aes256CbcSha256, false),
    ];
    let mut shard = new_shard(16);
    let mut peers = Vec::new();
    let mut uat = Vec::new();
    for (i, &(t, natt)) in cases.iter().enumerate() {
        let i16 = i as u16;
        let p = PeerParams {
            transform: t,
            natt,
            gateway: GW,
            client: Ipv4Addr::new(203, 0, 113, 10 + i as u8),
            client_port: 4500,
            inner: Ipv4Addr::new(10, 99, 0, 10 + i as u8),
            gw_ids: (100 + i16, 200 + i16),
            client_ids: (300 + i16, 400 + i16),
            backend: Backend::AwsLc,
        };
        let seed = 11 + i as u8;
        let peer = SimPeer::establish(&mut shard, p.clone(), seed).unwrap();
        uat.push(esp_sa(t, p.client, GW, peer.out_sa.spi(), &keymat(t, seed)));
        uat.push(esp_sa(
            t,
            GW,
            p.client,
            peer.in_sa.spi(),
            &keymat(t, seed ^ 0x5a),
        ));
        peers.push(peer);
    }

    let mut w = pcap::Writer::new();
    let mut ts = Duration::from_secs(1_700_000_000);
    let mut expected = 0;
    for (k, peer) in peers.iter_mut().enumerate() {
        for size in [64usize, 333, 1400] {
            // Client → gateway, and the gateway must accept it.
            let mut f = vec![0u8; frame_len(size)];
            let r = peer.inner_packet(&mut f, INSIDE, size);
            let o = peer.seal(&mut f, r).unwrap();
            w.write(ts, &ethernet(&f[o.clone()])).unwrap();
            let mut b = vec![Pkt::new(f, o.start, o.end)];
            shard.decap_batch(&mut b);
            assert_eq!(b[0].verdict, Verdict::Forward, "case {k}");
            // Gateway → client.
            let mut f = vec![0u8; frame_len(size)];
            let r = write_inner_udp(&mut f, FRAME_HEADROOM, INSIDE, peer.params.inner, size);
            let mut b = vec![Pkt::new(f, r.start, r.end)];
            shard.encap_batch(&mut b);
            assert_eq!(b[0].verdict, Verdict::Forward);
            w.write(ts, &ethernet(&b[0].buf[b[0].start..b[0].end]))
                .unwrap();
            ts += Duration::from_millis(1);
            expected += 2;
        }
    }
    let dir = std::env::temp_dir().join(format!("sekisho-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap_path = dir.join("ours.pcap");
    std::fs::write(&pcap_path, w.into_inner()).unwrap();

    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(&pcap_path);
    cmd.args([
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]);
    for u in &uat {
        cmd.arg("-o").arg(u);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "esp.spi",
        "-e",
        "esp.icv_good",
        "-e",
        "esp.icv_bad",
        "-e",
        "l2tp.tunnel",
        "-e",
        "l2tp.session",
        "-e",
        "ppp.protocol",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "udp.dstport",
    ]);
    // The command, for reproducing by hand:
    eprintln!("{cmd:?}");
    let out = cmd.output().expect("run tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected, "{text}");
    for (n, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.split('|').collect();
        let good = matches!(f[1], "1" | "True" | "true");
        assert!(
            good && f[2] != "1",
            "frame {}: ICV not verified by tshark: {line}",
            n + 1
        );
        let k = n / 6;
        let to_gw = n % 2 == 0;
        let (t, s) = if to_gw {
            (100 + k, 200 + k)
        } else {
            (300 + k, 400 + k)
        };
        assert_eq!(
            f[3],
            t.to_string(),
            "frame {}: L2TP tunnel id: {line}",
            n + 1
        );
        assert_eq!(
            f[4],
            s.to_string(),
            "frame {}: L2TP session id: {line}",
            n + 1
        );
        assert_eq!(f[5], "0x0021", "frame {}: PPP carries IPv4: {line}", n + 1);
        let inner = format!("10.99.0.{}", 10 + k);
        assert!(
            f[6].contains(&inner) || f[7].contains(&inner),
            "frame {}: inner address: {line}",
            n + 1
        );
        assert!(
            f[8].split(',').any(|p| p == "9"),
            "frame {}: inner UDP port 9: {line}",
            n + 1
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
