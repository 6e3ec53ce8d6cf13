//! The accounting log: one JSON line per session start and stop — user, outer address
//! and port, assigned address, start time, duration, bytes and packets both ways and
//! the disconnect cause in words — to a file (appended) or stdout.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::dataplane::session::SessionCounters;

/// One line of the log.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Record {
    /// "start" or "stop".
    pub event: &'static str,
    /// The authenticated user.
    pub user: String,
    /// The client's outer address.
    pub outer_address: Ipv4Addr,
    /// The client's outer UDP port.
    pub outer_port: u16,
    /// The inner address assigned by IPCP.
    pub assigned_address: Ipv4Addr,
    /// Session start, seconds since the Unix epoch.
    pub start_time: f64,
    /// Seconds the session lasted (stop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Octets client → inside (stop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Octets inside → client (stop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Packets client → inside (stop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_in: Option<u64>,
    /// Packets inside → client (stop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_out: Option<u64>,
    /// Why the session ended, in words (stop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Record {
    /// A session came up.
    pub fn start(user: &str, outer: SocketAddrV4, addr: Ipv4Addr, at: SystemTime) -> Record {
        Record {
            event: "start",
            user: user.into(),
            outer_address: *outer.ip(),
            outer_port: outer.port(),
            assigned_address: addr,
            start_time: epoch(at),
            duration_s: None,
            bytes_in: None,
            bytes_out: None,
            packets_in: None,
            packets_out: None,
            cause: None,
        }
    }

    /// A session ended.
    pub fn stop(
        user: &str,
        outer: SocketAddrV4,
        addr: Ipv4Addr,
        started: SystemTime,
        duration: Duration,
        c: SessionCounters,
        cause: &str,
    ) -> Record {
        Record {
            event: "stop",
            duration_s: Some(duration.as_secs_f64()),
            bytes_in: Some(c.in_bytes),
            bytes_out: Some(c.out_bytes),
            packets_in: Some(c.in_packets),
            packets_out: Some(c.out_packets),
            cause: Some(cause.into()),
            ..Record::start(user, outer, addr, started)
        }
    }
}

/// Where records go.
pub enum Accounting {
    /// Nowhere.
    Off,
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(File),
}

impl Accounting {
    /// Opens the configured destination: `None` off, "-" stdout, else a file.
    pub fn open(path: Option<&Path>) -> std::io::Result<Accounting> {
        match path {
            None => Ok(Accounting::Off),
            Some(p) if p.as_os_str() == "-" => Ok(Accounting::Stdout),
            Some(p) => Ok(Accounting::File(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
        }
    }

    /// Writes one record as a line; failures are logged, never fatal.
    pub fn write(&mut self, r: &Record) {
        let Ok(mut line) = serde_json::to_string(r) else {
            return;
        };
        line.push('\n');
        let res = match self {
            Accounting::Off => Ok(()),
            Accounting::Stdout => std::io::stdout().write_all(line.as_bytes()),
            Accounting::File(f) => f.write_all(line.as_bytes()),
        };
        if let Err(e) = res {
            tracing::warn!("accounting write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_every_field() {
        let outer = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 4500);
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = SessionCounters {
            in_packets: 3,
            in_bytes: 300,
            out_packets: 4,
            out_bytes: 400,
        };
        let stop = Record::stop(
            "alice",
            outer,
            Ipv4Addr::new(10, 99, 0, 10),
            t,
            Duration::from_secs(61),
            c,
            "peer terminated",
        );
        let v: serde_json::Value = serde_json::to_value(&stop).unwrap();
        for k in [
            "event",
            "user",
            "outer_address",
            "outer_port",
            "assigned_address",
            "start_time",
            "duration_s",
            "bytes_in",
            "bytes_out",
            "packets_in",
            "packets_out",
            "cause",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["cause"], "peer terminated");
        assert_eq!(v["outer_port"], 4500);
        let start = serde_json::to_value(Record::start(
            "alice",
            outer,
            Ipv4Addr::new(10, 99, 0, 10),
            t,
        ))
        .unwrap();
        assert!(start.get("cause").is_none());
        let dir = std::env::temp_dir().join(format!("sekisho-acct-{}", std::process::id()));
        let mut a = Accounting::open(Some(&dir)).unwrap();
        a.write(&stop);
        a.write(&stop);
        let text = std::fs::read_to_string(&dir).unwrap();
        assert_eq!(text.lines().count(), 2);
        let _ = std::fs::remove_file(&dir);
    }
}
