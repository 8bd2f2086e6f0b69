//! The retransmission service (TCP): a client that recovers a gap, and a server holding a
//! channel's recent messages (for tests and local replays; the exchange runs the real one).
//!
//! The session (../shared/HKEX.md §1): the same 16-byte packet header as multicast, over TCP.
//! The client logs on (101, username) within 5 s and gets a Logon Response (102, status 0);
//! it asks for a range (201: channel, begin, end) and gets a Retransmission Response (202,
//! status 0 accepted) followed by the messages with their original sequence numbers. The
//! server keeps the last 50,000 messages per channel, serves at most 10,000 per request and
//! 1,000 requests a day; it sends heartbeats (a header with no messages) that the client
//! echoes within 5 s, or it closes the session.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::encode::{encode_message, write_header, PacketWriter};
use super::wire::{Message, Packet, PacketHeader, PACKET_HEADER};

/// Messages the server keeps per channel.
pub const KEPT: usize = 50_000;
/// Messages per request at most.
pub const MAX_RANGE: u32 = 10_000;
/// Requests per day at most.
pub const MAX_REQUESTS: u32 = 1_000;

/// RetransStatus values.
pub mod status {
    /// Accepted.
    pub const ACCEPTED: u8 = 0;
    /// Unknown or unauthorised channel.
    pub const UNKNOWN_CHANNEL: u8 = 1;
    /// Messages not available.
    pub const NOT_AVAILABLE: u8 = 2;
    /// Range larger than allowed.
    pub const RANGE_TOO_LARGE: u8 = 100;
    /// Daily request limit reached.
    pub const TOO_MANY_REQUESTS: u8 = 101;
}

/// Errors of a retransmission session.
#[derive(Debug, thiserror::Error)]
pub enum RetransError {
    /// The connection.
    #[error("retransmission service: {0}")]
    Io(#[from] io::Error),
    /// The logon was refused.
    #[error("retransmission logon refused (SessionStatus {0})")]
    Logon(u8),
    /// The request was refused.
    #[error("retransmission of {begin}-{end} on channel {channel} refused (RetransStatus {status})")]
    Refused {
        /// Channel.
        channel: u16,
        /// First asked.
        begin: u32,
        /// Last asked.
        end: u32,
        /// RetransStatus.
        status: u8,
    },
    /// The server sent something that does not decode or does not belong.
    #[error("retransmission service sent {0}")]
    Protocol(String),
}

fn read_packet(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut header = [0u8; PACKET_HEADER];
    stream.read_exact(&mut header)?;
    let size = usize::from(u16::from_le_bytes([header[0], header[1]]));
    if size < PACKET_HEADER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("PktSize {size}")));
    }
    let mut p = header.to_vec();
    p.resize(size, 0);
    stream.read_exact(&mut p[PACKET_HEADER..])?;
    Ok(p)
}

fn one_message_packet(m: &Message<'_>, seq: u32) -> Vec<u8> {
    let mut w = PacketWriter::new(seq);
    w.push(m, now_ns());
    w.finish().remove(0)
}

fn heartbeat(seq: u32) -> Vec<u8> {
    let mut b = vec![0u8; PACKET_HEADER];
    write_header(&mut b, &PacketHeader { size: PACKET_HEADER as u16, msg_count: 0, seq_num: seq, send_time: now_ns() });
    b
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A logged-on retransmission session.
pub struct RetransClient {
    stream: TcpStream,
    /// Requests made in this session.
    pub requests: u32,
    /// Heartbeats echoed.
    pub heartbeats: u32,
}

impl RetransClient {
    /// Connects and logs on (the service wants the logon within 5 s).
    pub fn connect(addr: SocketAddr, username: &str, timeout: Duration) -> Result<RetransClient, RetransError> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(&one_message_packet(&Message::Logon { username: username.as_bytes() }, 1))?;
        let mut c = RetransClient { stream, requests: 0, heartbeats: 0 };
        loop {
            let p = c.next_packet()?;
            let pk = Packet::parse(&p).map_err(|e| RetransError::Protocol(e.to_string()))?;
            if let Some((_, Ok(Message::LogonResponse { session_status }))) = pk.messages().next() {
                if session_status != 0 {
                    return Err(RetransError::Logon(session_status));
                }
                return Ok(c);
            }
        }
    }

    /// The next packet that is not a heartbeat (heartbeats are echoed).
    fn next_packet(&mut self) -> Result<Vec<u8>, RetransError> {
        loop {
            let p = read_packet(&mut self.stream)?;
            if p[2] == 0 {
                self.stream.write_all(&p)?;
                self.heartbeats += 1;
                continue;
            }
            return Ok(p);
        }
    }

    /// The messages `begin..=end` of `channel`, as packets (asked for in ranges of at most
    /// [`MAX_RANGE`]).
    pub fn request(&mut self, channel: u16, begin: u32, end: u32) -> Result<Vec<Vec<u8>>, RetransError> {
        let mut packets = Vec::new();
        let mut from = begin;
        loop {
            let to = end.min(from.saturating_add(MAX_RANGE - 1));
            self.request_range(channel, from, to, &mut packets)?;
            if to >= end {
                return Ok(packets);
            }
            from = to + 1;
        }
    }

    fn request_range(
        &mut self,
        channel: u16,
        begin: u32,
        end: u32,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), RetransError> {
        self.requests += 1;
        let req = Message::RetransmissionRequest { channel_id: channel, begin, end };
        self.stream.write_all(&one_message_packet(&req, 1))?;
        let p = self.next_packet()?;
        let pk = Packet::parse(&p).map_err(|e| RetransError::Protocol(e.to_string()))?;
        match pk.messages().next() {
            Some((_, Ok(Message::RetransmissionResponse { status: 0, .. }))) => {}
            Some((_, Ok(Message::RetransmissionResponse { status, .. }))) => {
                return Err(RetransError::Refused { channel, begin, end, status })
            }
            other => return Err(RetransError::Protocol(format!("{other:?} instead of a retransmission response"))),
        }
        let mut next = begin;
        while next <= end {
            let p = self.next_packet()?;
            let pk = Packet::parse(&p).map_err(|e| RetransError::Protocol(e.to_string()))?;
            if pk.header.seq_num != next {
                return Err(RetransError::Protocol(format!("packet from {} while {next} was due", pk.header.seq_num)));
            }
            next = pk.last_seq().wrapping_add(1);
            out.push(p);
        }
        Ok(())
    }
}

/// What a test server was asked and sent.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Logons accepted.
    pub logons: u32,
    /// Requests received.
    pub requests: u32,
    /// Messages sent.
    pub messages: u64,
    /// Heartbeats echoed by clients.
    pub echoes: u32,
}

struct Store {
    /// Per channel: the newest messages (seq, bytes), oldest first.
    channels: BTreeMap<u16, VecDeque<(u32, Vec<u8>)>>,
    stats: ServerStats,
}

/// A retransmission server on a loopback port (tests, local replays).
pub struct RetransServer {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    requests_today: Arc<AtomicU32>,
}

impl RetransServer {
    /// Listens on a spare loopback port; heartbeats every `heartbeat` (30 s at the exchange).
    pub fn start(heartbeat: Duration) -> io::Result<RetransServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Mutex::new(Store { channels: BTreeMap::new(), stats: ServerStats::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let requests_today = Arc::new(AtomicU32::new(0));
        let (s, st, rq) = (store.clone(), stop.clone(), requests_today.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, st, rq) = (s.clone(), st.clone(), rq.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, &s, &st, &rq, heartbeat);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(RetransServer { addr, store, stop, requests_today })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keeps the messages of a packet sent on `channel` (the newest [`KEPT`] per channel stay).
    pub fn record(&self, channel: u16, packet: &[u8]) {
        let Ok(pk) = Packet::parse(packet) else { return };
        let mut store = self.store.lock().expect("store");
        let q = store.channels.entry(channel).or_default();
        for (seq, m) in pk.messages() {
            let Ok(m) = m else { continue };
            if q.back().is_some_and(|(last, _)| seq <= *last) {
                continue; // line B's copy
            }
            let mut bytes = Vec::new();
            encode_message(&m, &mut bytes);
            q.push_back((seq, bytes));
            if q.len() > KEPT {
                q.pop_front();
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        let s = self.store.lock().expect("store");
        ServerStats { ..s.stats }
    }

    /// Sets the requests already made today (to test the daily limit).
    pub fn set_requests_today(&self, n: u32) {
        self.requests_today.store(n, Ordering::Relaxed);
    }
}

impl Drop for RetransServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    store: &Mutex<Store>,
    stop: &AtomicBool,
    requests_today: &AtomicU32,
    heartbeat_every: Duration,
) -> Result<(), RetransError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(20)))?;
    let started = Instant::now();
    let mut logged_on = false;
    let mut last_heartbeat = Instant::now();
    let mut awaiting_echo: Option<Instant> = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        if !logged_on && started.elapsed() > Duration::from_secs(5) {
            return Ok(()); // no logon within 5 s
        }
        if awaiting_echo.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            return Ok(()); // heartbeat not echoed
        }
        if logged_on && last_heartbeat.elapsed() >= heartbeat_every {
            stream.write_all(&heartbeat(0))?;
            last_heartbeat = Instant::now();
            awaiting_echo.get_or_insert_with(Instant::now);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e.into()),
        }
        while let Ok((pk, rest)) = Packet::parse_prefix(&buf) {
            let consumed = buf.len() - rest.len();
            if pk.is_heartbeat() {
                awaiting_echo = None;
                store.lock().expect("store").stats.echoes += 1;
            }
            let messages: Vec<Message<'_>> = pk.messages().filter_map(|(_, m)| m.ok()).collect();
            let mut replies: Vec<Vec<u8>> = Vec::new();
            for m in messages {
                match m {
                    Message::Logon { username } => {
                        let ok = !super::wire::ascii(username).is_empty();
                        let session_status = if ok { 0 } else { 5 };
                        replies.push(one_message_packet(&Message::LogonResponse { session_status }, 1));
                        if ok {
                            logged_on = true;
                            store.lock().expect("store").stats.logons += 1;
                        }
                    }
                    Message::RetransmissionRequest { channel_id, begin, end } if logged_on => {
                        let mut s = store.lock().expect("store");
                        s.stats.requests += 1;
                        let done_today = requests_today.fetch_add(1, Ordering::Relaxed);
                        let q = s.channels.get(&channel_id);
                        let status = match q {
                            _ if done_today >= MAX_REQUESTS => status::TOO_MANY_REQUESTS,
                            None => status::UNKNOWN_CHANNEL,
                            _ if end < begin || end - begin >= MAX_RANGE => status::RANGE_TOO_LARGE,
                            Some(q)
                                if q.front().is_none_or(|(first, _)| begin < *first)
                                    || q.back().is_none_or(|(last, _)| end > *last) =>
                            {
                                status::NOT_AVAILABLE
                            }
                            Some(_) => status::ACCEPTED,
                        };
                        let response = Message::RetransmissionResponse { channel_id, status, begin, end };
                        replies.push(one_message_packet(&response, 1));
                        if status == status::ACCEPTED {
                            let q = &s.channels[&channel_id];
                            let first = q.front().map_or(0, |(f, _)| *f);
                            let from = (begin - first) as usize;
                            let mut w = PacketWriter::new(begin);
                            for (_, bytes) in q.range(from..=from + (end - begin) as usize) {
                                let m = super::wire::decode_message(bytes, 0)
                                    .map_err(|e| RetransError::Protocol(e.to_string()))?;
                                w.push(&m, 0);
                            }
                            let packets = w.finish();
                            s.stats.messages += u64::from(end - begin + 1);
                            replies.extend(packets);
                        }
                    }
                    _ => {}
                }
            }
            buf.drain(..consumed);
            for r in replies {
                stream.write_all(&r)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::wire::Price;
    use super::*;

    fn server_with(channel: u16, first: u32, n: u32) -> RetransServer {
        let s = RetransServer::start(Duration::from_millis(50)).unwrap();
        let mut w = PacketWriter::new(first);
        for i in 0..n {
            w.push(&Message::NominalPrice { security_code: 1, price: Price(i as i32) }, u64::from(i / 10));
        }
        for p in w.finish() {
            s.record(channel, &p);
            s.record(channel, &p); // line B's copy is kept once
        }
        s
    }

    fn seqs(packets: &[Vec<u8>]) -> Vec<u32> {
        packets.iter().flat_map(|p| Packet::parse(p).unwrap().messages().map(|(s, _)| s).collect::<Vec<_>>()).collect()
    }

    #[test]
    fn a_range_comes_back_with_its_sequence_numbers_and_large_ranges_are_split() {
        let s = server_with(7, 100, 25_000);
        let mut c = RetransClient::connect(s.addr(), "HARBOUR", Duration::from_secs(5)).unwrap();
        let got = c.request(7, 150, 160).unwrap();
        assert_eq!(seqs(&got), (150..=160).collect::<Vec<_>>());
        for (seq, m) in got.iter().flat_map(|p| Packet::parse(p).unwrap().messages().collect::<Vec<_>>()) {
            assert_eq!(m.unwrap(), Message::NominalPrice { security_code: 1, price: Price((seq - 100) as i32) });
        }
        // 22,000 messages: three requests of at most 10,000.
        let got = c.request(7, 1_000, 22_999).unwrap();
        assert_eq!(seqs(&got), (1_000..=22_999).collect::<Vec<_>>());
        assert_eq!(c.requests, 4);
        assert_eq!(s.stats().requests, 4);
    }

    #[test]
    fn refusals_carry_the_documented_status() {
        let s = server_with(7, 1, 60_000);
        let mut c = RetransClient::connect(s.addr(), "HARBOUR", Duration::from_secs(5)).unwrap();
        let status = |r: Result<Vec<Vec<u8>>, RetransError>| match r {
            Err(RetransError::Refused { status, .. }) => status,
            other => panic!("{:?}", other.map(|p| p.len())),
        };
        assert_eq!(status(c.request(9, 1, 2)), status::UNKNOWN_CHANNEL);
        // Only the newest 50,000 are kept: 1..=10,000 are gone.
        assert_eq!(status(c.request(7, 5, 6)), status::NOT_AVAILABLE);
        assert_eq!(status(c.request(7, 59_999, 60_001)), status::NOT_AVAILABLE);
        let mut raw = RetransClient::connect(s.addr(), "HARBOUR", Duration::from_secs(5)).unwrap();
        let mut out = Vec::new();
        let r = raw.request_range(7, 20_000, 30_000, &mut out);
        assert!(matches!(r, Err(RetransError::Refused { status: status::RANGE_TOO_LARGE, .. })), "{r:?}");
        s.set_requests_today(MAX_REQUESTS);
        assert_eq!(status(c.request(7, 20_000, 20_001)), status::TOO_MANY_REQUESTS);
        let refused = RetransClient::connect(s.addr(), "", Duration::from_secs(5));
        assert!(matches!(refused, Err(RetransError::Logon(5))));
    }

    #[test]
    fn heartbeats_are_echoed_and_the_session_stays_up() {
        let s = server_with(7, 1, 100);
        let mut c = RetransClient::connect(s.addr(), "HARBOUR", Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // The heartbeats sent meanwhile are read (and echoed) before the response.
        let got = c.request(7, 10, 20).unwrap();
        assert_eq!(seqs(&got), (10..=20).collect::<Vec<_>>());
        assert!(c.heartbeats >= 3, "{}", c.heartbeats);
        std::thread::sleep(Duration::from_millis(100));
        assert!(s.stats().echoes >= 3);
    }
}
