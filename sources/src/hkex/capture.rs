//! Recorded feed: Harbour's own framed capture format, and pcap (UDP over Ethernet/IPv4).
//!
//! Harbour capture (`.omdc`): the magic `HBROMDC1`, then one record per datagram:
//! `recv_time u64 · channel u16 · line u8 (0 A, 1 B) · flags u8 · len u32 · datagram[len]`,
//! little-endian. `harbour hkex record` writes it; `harbour hkex replay` reads it.
//!
//! pcap (classic libpcap, micro- or nanosecond, either byte order; link type Ethernet): each UDP
//! datagram becomes a record whose channel is looked up from its destination port (the
//! caller's map), line A unless the port is listed as a B line.

use std::io::{self, BufReader, BufWriter, Read, Write};

/// Magic at the start of a Harbour capture.
pub const MAGIC: &[u8; 8] = b"HBROMDC1";

/// One captured datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Receive time, nanoseconds since the Unix epoch.
    pub recv_time: u64,
    /// Channel id.
    pub channel: u16,
    /// Line: 0 = A, 1 = B.
    pub line: u8,
    /// The datagram (one OMD-C packet).
    pub data: Vec<u8>,
}

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading failed.
    #[error("reading the capture: {0}")]
    Io(#[from] io::Error),
    /// Not a capture this reader knows.
    #[error("not a Harbour capture or pcap file (magic {0:02x?})")]
    Magic(Vec<u8>),
    /// The file ends inside a record.
    #[error("capture truncated inside the record at byte {offset}")]
    Truncated {
        /// Byte offset of the record.
        offset: u64,
    },
    /// A pcap link type other than Ethernet.
    #[error("pcap link type {0} is not Ethernet (1)")]
    LinkType(u32),
    /// A record header gives a length no datagram has (a damaged file): refused before
    /// allocating it.
    #[error("capture record at byte {offset} claims {len} bytes (at most {MAX_RECORD})")]
    RecordLength {
        /// Byte offset of the record.
        offset: u64,
        /// The length its header gives.
        len: usize,
    },
}

/// Longest record read: a UDP datagram's payload, or a captured frame, is at most 65,535 bytes
/// (a larger length in a record header means the file is damaged).
pub const MAX_RECORD: usize = 65_535 + 256;

/// Writes a Harbour capture.
pub struct CaptureWriter<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture (writes the magic).
    pub fn new(out: W) -> io::Result<CaptureWriter<W>> {
        let mut out = BufWriter::new(out);
        out.write_all(MAGIC)?;
        Ok(CaptureWriter { out })
    }

    /// Appends a record.
    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        self.out.write_all(&r.recv_time.to_le_bytes())?;
        self.out.write_all(&r.channel.to_le_bytes())?;
        self.out.write_all(&[r.line, 0])?;
        self.out.write_all(&(r.data.len() as u32).to_le_bytes())?;
        self.out.write_all(&r.data)
    }

    /// Flushes and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

enum Kind {
    Harbour,
    Pcap { swapped: bool, nanos: bool },
}

/// Reads a Harbour capture or a pcap file, record by record.
pub struct CaptureReader<R: Read> {
    input: BufReader<R>,
    kind: Kind,
    offset: u64,
    channel_of_port: Box<dyn Fn(u16) -> Option<(u16, u8)>>,
}

fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 if got == 0 => return Ok(false),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(true)
}

impl<R: Read> CaptureReader<R> {
    /// Opens a capture; for pcap, `channel_of_port` maps a UDP destination port to (channel,
    /// line) and datagrams to other ports are skipped.
    pub fn new(input: R, channel_of_port: impl Fn(u16) -> Option<(u16, u8)> + 'static) -> Result<Self, CaptureError> {
        let mut input = BufReader::with_capacity(1 << 20, input);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic[..4])?;
        let kind = match u32::from_le_bytes(magic[..4].try_into().expect("4")) {
            0xa1b2_c3d4 => Kind::Pcap { swapped: false, nanos: false },
            0xa1b2_3c4d => Kind::Pcap { swapped: false, nanos: true },
            0xd4c3_b2a1 => Kind::Pcap { swapped: true, nanos: false },
            0x4d3c_b2a1 => Kind::Pcap { swapped: true, nanos: true },
            _ => {
                input.read_exact(&mut magic[4..])?;
                if &magic != MAGIC {
                    return Err(CaptureError::Magic(magic.to_vec()));
                }
                Kind::Harbour
            }
        };
        let mut offset = 8;
        if let Kind::Pcap { swapped, .. } = kind {
            let mut rest = [0u8; 20];
            input.read_exact(&mut rest)?;
            let link = u32_of(&rest[16..20], swapped);
            if link != 1 {
                return Err(CaptureError::LinkType(link));
            }
            offset = 24;
        }
        Ok(CaptureReader { input, kind, offset, channel_of_port: Box::new(channel_of_port) })
    }

    /// The next record, `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Record>, CaptureError> {
        loop {
            let at = self.offset;
            let truncated = |e: io::Error| match e.kind() {
                io::ErrorKind::UnexpectedEof => CaptureError::Truncated { offset: at },
                _ => CaptureError::Io(e),
            };
            match self.kind {
                Kind::Harbour => {
                    let mut h = [0u8; 16];
                    if !read_exact_or_eof(&mut self.input, &mut h).map_err(truncated)? {
                        return Ok(None);
                    }
                    let len = u32::from_le_bytes(h[12..16].try_into().expect("4")) as usize;
                    if len > MAX_RECORD {
                        return Err(CaptureError::RecordLength { offset: at, len });
                    }
                    let mut data = vec![0; len];
                    self.input.read_exact(&mut data).map_err(truncated)?;
                    self.offset += 16 + len as u64;
                    return Ok(Some(Record {
                        recv_time: u64::from_le_bytes(h[0..8].try_into().expect("8")),
                        channel: u16::from_le_bytes([h[8], h[9]]),
                        line: h[10],
                        data,
                    }));
                }
                Kind::Pcap { swapped, nanos } => {
                    let mut h = [0u8; 16];
                    if !read_exact_or_eof(&mut self.input, &mut h).map_err(truncated)? {
                        return Ok(None);
                    }
                    let secs = u64::from(u32_of(&h[0..4], swapped));
                    let frac = u64::from(u32_of(&h[4..8], swapped));
                    let len = u32_of(&h[8..12], swapped) as usize;
                    if len > MAX_RECORD {
                        return Err(CaptureError::RecordLength { offset: at, len });
                    }
                    let mut frame = vec![0; len];
                    self.input.read_exact(&mut frame).map_err(truncated)?;
                    self.offset += 16 + len as u64;
                    let Some((port, payload)) = udp_payload(&frame) else { continue };
                    let Some((channel, line)) = (self.channel_of_port)(port) else { continue };
                    let recv_time = secs * 1_000_000_000 + if nanos { frac } else { frac * 1_000 };
                    return Ok(Some(Record { recv_time, channel, line, data: payload.to_vec() }));
                }
            }
        }
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Record, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

fn u32_of(b: &[u8], swapped: bool) -> u32 {
    let a: [u8; 4] = b.try_into().expect("4 bytes");
    if swapped {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

/// The UDP destination port and payload of an Ethernet frame (IPv4, optional 802.1Q tag);
/// `None` for anything else or a frame too short for its headers.
pub fn udp_payload(frame: &[u8]) -> Option<(u16, &[u8])> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    at += 2;
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([*frame.get(at + 2)?, *frame.get(at + 3)?]);
        at += 4;
    }
    if ethertype != 0x0800 {
        return None;
    }
    let ip = frame.get(at..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ihl < 20 || *ip.get(9)? != 17 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let udp = ip.get(ihl..total.min(ip.len()))?;
    let port = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    let payload = udp.get(8..len.max(8).min(udp.len()))?;
    Some((port, payload))
}

/// Writes classic pcap (microseconds, Ethernet) of UDP datagrams: for tests and for users who
/// want to look at a generated feed in Wireshark.
pub struct PcapWriter<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(out: W) -> io::Result<PcapWriter<W>> {
        let mut out = BufWriter::new(out);
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65_535u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { out })
    }

    /// One UDP datagram to `group:port` (IPv4 multicast group as 4 bytes).
    pub fn write(&mut self, time_ns: u64, group: [u8; 4], port: u16, payload: &[u8]) -> io::Result<()> {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let frame_len = 14 + ip_len;
        let secs = (time_ns / 1_000_000_000) as u32;
        let micros = ((time_ns % 1_000_000_000) / 1_000) as u32;
        for v in [secs, micros, frame_len as u32, frame_len as u32] {
            self.out.write_all(&v.to_le_bytes())?;
        }
        // Ethernet: multicast MAC of the group, a made-up source, IPv4.
        self.out.write_all(&[0x01, 0x00, 0x5e, group[1] & 0x7f, group[2], group[3]])?;
        self.out.write_all(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00])?;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[8] = 16;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&group);
        let sum = ip.chunks_exact(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        self.out.write_all(&ip)?;
        self.out.write_all(&port.to_be_bytes())?;
        self.out.write_all(&port.to_be_bytes())?;
        self.out.write_all(&(udp_len as u16).to_be_bytes())?;
        self.out.write_all(&[0, 0])?;
        self.out.write_all(payload)
    }

    /// Flushes and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        (0..5u8)
            .map(|i| Record {
                recv_time: 1_764_000_000_000_000_000 + u64::from(i) * 1_000,
                channel: 10 + u16::from(i % 2),
                line: i % 2,
                data: vec![i; 16 + usize::from(i)],
            })
            .collect()
    }

    #[test]
    fn harbour_capture_round_trips_and_truncation_names_the_record() {
        let mut w = CaptureWriter::new(Vec::new()).unwrap();
        for r in records() {
            w.write(&r).unwrap();
        }
        let bytes = w.finish().unwrap();
        let got: Vec<Record> = CaptureReader::new(&bytes[..], |_| None).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, records());
        let cut = &bytes[..bytes.len() - 3];
        let mut r = CaptureReader::new(cut, |_| None).unwrap();
        for _ in 0..4 {
            r.next_record().unwrap().unwrap();
        }
        let last_at = 8 + (0..4).map(|i| 16 + 16 + i as u64).sum::<u64>();
        assert!(matches!(r.next_record(), Err(CaptureError::Truncated { offset }) if offset == last_at));
        assert!(matches!(CaptureReader::new(&b"NOTACAPTURE"[..], |_| None), Err(CaptureError::Magic(_))));
        // A damaged record header claiming 4 GiB is refused before anything is allocated.
        let mut damaged = bytes.clone();
        damaged[8 + 12..8 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = CaptureReader::new(&damaged[..], |_| None).unwrap();
        assert!(
            matches!(r.next_record(), Err(CaptureError::RecordLength { offset: 8, len }) if len == u32::MAX as usize)
        );
    }

    #[test]
    fn pcap_udp_datagrams_map_to_channels_by_port() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for r in records() {
            w.write(r.recv_time, [239, 1, 1, 1], 51_000 + r.channel, &r.data).unwrap();
        }
        w.write(5, [239, 1, 1, 1], 9, b"other port").unwrap();
        let bytes = w.finish().unwrap();
        let map = |port: u16| (51_010..=51_011).contains(&port).then(|| (port - 51_000, (port - 51_010) as u8));
        let got: Vec<Record> = CaptureReader::new(&bytes[..], map).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, records());
    }

    #[test]
    fn frames_that_are_not_ipv4_udp_are_skipped() {
        assert_eq!(udp_payload(&[0; 10]), None);
        let mut arp = vec![0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(udp_payload(&arp), None);
    }
}
