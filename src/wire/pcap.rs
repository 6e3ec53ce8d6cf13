//! Classic libpcap capture files (format 2.4), read from and written to memory.
//!
//! The format is described in draft-ietf-opsawg-pcap (§4 file header, §5 packet
//! record). Files may be written in either byte order, with microsecond
//! (`0xa1b2c3d4`) or nanosecond (`0xa1b23c4d`) timestamps; [`Reader`] takes all four.
//! [`Writer`] produces little-endian, microsecond, Ethernet-linktype files that tshark
//! and tcpdump read, so tests can hand what sekisho emits to an independent decoder.

use super::{Error, Result};
use core::time::Duration;

/// File header length (draft-ietf-opsawg-pcap §4).
pub const FILE_HEADER_LEN: usize = 24;
/// Packet record header length (draft-ietf-opsawg-pcap §5).
pub const RECORD_HEADER_LEN: usize = 16;
/// Magic number of a microsecond-resolution file.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Magic number of a nanosecond-resolution file.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Snapshot length written by [`Writer`].
pub const WRITER_SNAPLEN: u32 = 262_144;

mod field {
    use crate::wire::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION_MAJOR: Field = 4..6;
    pub const VERSION_MINOR: Field = 6..8;
    pub const SNAPLEN: Field = 16..20;
    pub const LINKTYPE: Field = 20..24;

    pub const TS_SEC: Field = 0..4;
    pub const TS_FRAC: Field = 4..8;
    pub const INCL_LEN: Field = 8..12;
    pub const ORIG_LEN: Field = 12..16;
}

/// Byte order of a capture file, as its magic number tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Written by a little-endian host.
    Little,
    /// Written by a big-endian host.
    Big,
}

impl ByteOrder {
    fn u16(self, bytes: &[u8]) -> u16 {
        let b = [bytes[0], bytes[1]];
        match self {
            ByteOrder::Little => u16::from_le_bytes(b),
            ByteOrder::Big => u16::from_be_bytes(b),
        }
    }

    fn u32(self, bytes: &[u8]) -> u32 {
        let b = [bytes[0], bytes[1], bytes[2], bytes[3]];
        match self {
            ByteOrder::Little => u32::from_le_bytes(b),
            ByteOrder::Big => u32::from_be_bytes(b),
        }
    }
}

/// A capture file held in memory.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    data: &'a [u8],
    order: ByteOrder,
    nanos: bool,
}

impl<'a> Reader<'a> {
    /// Checks the file header: a known magic in either byte order, version 2.4.
    pub fn new(data: &'a [u8]) -> Result<Self> {
        if data.len() < FILE_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let magic = &data[field::MAGIC];
        let (order, nanos) = match ByteOrder::Little.u32(magic) {
            MAGIC_MICROS => (ByteOrder::Little, false),
            MAGIC_NANOS => (ByteOrder::Little, true),
            _ => match ByteOrder::Big.u32(magic) {
                MAGIC_MICROS => (ByteOrder::Big, false),
                MAGIC_NANOS => (ByteOrder::Big, true),
                _ => return Err(Error::Unsupported),
            },
        };
        let reader = Reader { data, order, nanos };
        let major = order.u16(&data[field::VERSION_MAJOR]);
        let minor = order.u16(&data[field::VERSION_MINOR]);
        if (major, minor) != (2, 4) {
            return Err(Error::BadVersion);
        }
        Ok(reader)
    }

    /// The byte order the file was written in.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// Whether timestamps carry nanoseconds (else microseconds).
    pub fn is_nanosecond(&self) -> bool {
        self.nanos
    }

    /// The snapshot length of the capture.
    pub fn snaplen(&self) -> u32 {
        self.order.u32(&self.data[field::SNAPLEN])
    }

    /// The link type (1 = Ethernet).
    pub fn linktype(&self) -> u32 {
        self.order.u32(&self.data[field::LINKTYPE])
    }

    /// The packet records, in file order.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.data.get(FILE_HEADER_LEN..).unwrap_or(&[]),
            order: self.order,
            nanos: self.nanos,
        }
    }
}

/// One packet record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Capture time since the Unix epoch.
    pub timestamp: Duration,
    /// Length of the packet on the wire (may exceed `data.len()` if it was cut).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// Iterator over the records of a [`Reader`]; a truncated record yields one
/// `Err(Error::Truncated)` and ends the iteration.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    order: ByteOrder,
    nanos: bool,
}

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Result<Record<'a>> {
        let header = self.rest.get(..RECORD_HEADER_LEN).ok_or(Error::Truncated)?;
        let ts_sec = self.order.u32(&header[field::TS_SEC]);
        let ts_frac = self.order.u32(&header[field::TS_FRAC]);
        let incl_len = self.order.u32(&header[field::INCL_LEN]);
        let orig_len = self.order.u32(&header[field::ORIG_LEN]);
        let end = usize::try_from(incl_len)
            .ok()
            .and_then(|len| len.checked_add(RECORD_HEADER_LEN))
            .ok_or(Error::BadLength)?;
        let data = self
            .rest
            .get(RECORD_HEADER_LEN..end)
            .ok_or(Error::Truncated)?;
        let nanos = if self.nanos {
            ts_frac
        } else {
            ts_frac.saturating_mul(1000)
        };
        if nanos >= 1_000_000_000 {
            return Err(Error::Malformed);
        }
        self.rest = self.rest.get(end..).unwrap_or(&[]);
        Ok(Record {
            timestamp: Duration::new(u64::from(ts_sec), nanos),
            orig_len,
            data,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.next_record();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// Builds a little-endian microsecond capture file with Ethernet link type in memory.
#[derive(Debug, Clone)]
pub struct Writer {
    out: Vec<u8>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// Starts a file: writes the 24-byte file header.
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(FILE_HEADER_LEN);
        out.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        out.extend_from_slice(&WRITER_SNAPLEN.to_le_bytes());
        out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        Writer { out }
    }

    /// Appends one Ethernet frame captured at `timestamp` (since the Unix epoch).
    ///
    /// Fails with [`Error::BadLength`] for frames longer than the snapshot length, and
    /// with [`Error::Unsupported`] for timestamps past what 32-bit seconds hold.
    pub fn write(&mut self, timestamp: Duration, frame: &[u8]) -> Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&len| len <= WRITER_SNAPLEN)
            .ok_or(Error::BadLength)?;
        let secs = u32::try_from(timestamp.as_secs()).map_err(|_| Error::Unsupported)?;
        self.out.extend_from_slice(&secs.to_le_bytes());
        self.out
            .extend_from_slice(&timestamp.subsec_micros().to_le_bytes());
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(frame);
        Ok(())
    }

    /// The file written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    /// Finishes and returns the file bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{CBC, GCM, IKEV2, NATT};
    use proptest::prelude::*;

    // capinfos-like facts from tshark:
    // tshark -r tests/data/ikev1-natt.pcap -T fields -e frame.number -e frame.len -e frame.time_epoch
    //   1  246  1795369875.861725000   ...   45 frames in all
    #[test]
    fn reads_golden_capture() {
        let reader = Reader::new(NATT).unwrap();
        assert_eq!(reader.linktype(), LINKTYPE_ETHERNET);
        assert!(!reader.is_nanosecond());
        let records: Vec<_> = reader.records().collect::<Result<_>>().unwrap();
        assert_eq!(records.len(), 45);
        assert_eq!(records[0].data.len(), 246);
        assert_eq!(records[0].orig_len, 246);
        assert_eq!(
            records[0].timestamp,
            Duration::new(1_795_369_875, 861_725_000)
        );
        // tshark: frame 10 is 190 bytes, frame 13 is 98 bytes.
        assert_eq!(records[9].data.len(), 190);
        assert_eq!(records[12].data.len(), 98);
    }

    // tshark -r tests/data/<capture>.pcap | wc -l  -> 45, 45, 45, 46
    #[test]
    fn all_golden_captures_read_to_the_end() {
        for (capture, frames) in [(NATT, 45), (CBC, 45), (GCM, 45), (IKEV2, 46)] {
            let reader = Reader::new(capture).unwrap();
            let records: Vec<_> = reader.records().collect::<Result<_>>().unwrap();
            assert_eq!(records.len(), frames);
        }
    }

    #[test]
    fn writer_round_trips_through_reader() {
        let reader = Reader::new(NATT).unwrap();
        let mut writer = Writer::new();
        for record in reader.records() {
            let record = record.unwrap();
            writer.write(record.timestamp, record.data).unwrap();
        }
        // Our writer uses the same layout strongSwan's tcpdump did (LE, micro, Ethernet,
        // snaplen 262144), so the whole file comes back byte for byte.
        assert_eq!(writer.as_bytes(), NATT);
    }

    fn to_variant(file: &[u8], big_endian: bool, nanos: bool) -> Vec<u8> {
        let reader = Reader::new(file).unwrap();
        let conv32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let conv16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&conv32(if nanos { MAGIC_NANOS } else { MAGIC_MICROS }));
        out.extend_from_slice(&conv16(2));
        out.extend_from_slice(&conv16(4));
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&conv32(reader.snaplen()));
        out.extend_from_slice(&conv32(reader.linktype()));
        for r in reader.records() {
            let r = r.unwrap();
            out.extend_from_slice(&conv32(r.timestamp.as_secs() as u32));
            let frac = if nanos {
                r.timestamp.subsec_nanos()
            } else {
                r.timestamp.subsec_micros()
            };
            out.extend_from_slice(&conv32(frac));
            out.extend_from_slice(&conv32(r.data.len() as u32));
            out.extend_from_slice(&conv32(r.orig_len));
            out.extend_from_slice(r.data);
        }
        out
    }

    #[test]
    fn reads_all_four_magics() {
        let want: Vec<_> = Reader::new(NATT)
            .unwrap()
            .records()
            .map(|r| r.unwrap())
            .collect();
        for big in [false, true] {
            for nanos in [false, true] {
                let file = to_variant(NATT, big, nanos);
                let reader = Reader::new(&file).unwrap();
                assert_eq!(reader.is_nanosecond(), nanos);
                let order = if big {
                    ByteOrder::Big
                } else {
                    ByteOrder::Little
                };
                assert_eq!(reader.byte_order(), order);
                let got: Vec<_> = reader.records().map(|r| r.unwrap()).collect();
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn truncated_file_header_and_records() {
        for len in 0..FILE_HEADER_LEN {
            assert_eq!(Reader::new(&NATT[..len]).unwrap_err(), Error::Truncated);
        }
        let first_record_end = FILE_HEADER_LEN + RECORD_HEADER_LEN + 246;
        for len in FILE_HEADER_LEN + 1..first_record_end {
            let reader = Reader::new(&NATT[..len]).unwrap();
            let items: Vec<_> = reader.records().collect();
            assert_eq!(items, vec![Err(Error::Truncated)]);
        }
        let reader = Reader::new(&NATT[..first_record_end]).unwrap();
        assert_eq!(reader.records().count(), 1);
    }

    #[test]
    fn bad_magic_and_version() {
        let mut file = NATT.to_vec();
        file[0] = 0;
        assert_eq!(Reader::new(&file).unwrap_err(), Error::Unsupported);
        let mut file = NATT.to_vec();
        file[4] = 3;
        assert_eq!(Reader::new(&file).unwrap_err(), Error::BadVersion);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(reader) = Reader::new(&data) {
                let _ = (reader.snaplen(), reader.linktype(), reader.byte_order());
                // Every record consumes at least 16 bytes, so this terminates.
                for record in reader.records() {
                    let _ = record;
                }
            }
        }

        #[test]
        fn arbitrary_records_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut data = NATT[..FILE_HEADER_LEN].to_vec();
            data.extend_from_slice(&tail);
            let reader = Reader::new(&data).unwrap();
            let mut errors = 0;
            for record in reader.records() {
                if record.is_err() {
                    errors += 1;
                }
            }
            prop_assert!(errors <= 1);
        }
    }
}
