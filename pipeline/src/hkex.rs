//! `harbour hkex …`: encode a day as an OMD-C capture, replay a capture (with JSON fills and
//! orders) through the engine, record datagrams from UDP (multicast or unicast) to a capture.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use harbour_sources::file::SourceLine;
use harbour_sources::hkex::capture::{CaptureReader, CaptureWriter, PcapWriter, Record};
use harbour_sources::hkex::day::{encode_day, DayEncoding};
use harbour_sources::hkex::feed::{FeedHandler, FeedStats};
use harbour_sources::hkex::replay::HkexReplay;
use harbour_sources::hkex::retrans::RetransClient;

use crate::engine::{self, EngineConfig, OutputState, RunStats};
use crate::metrics::{Health, Metrics};

/// Errors of the `hkex` commands.
#[derive(Debug, thiserror::Error)]
pub enum HkexError {
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The capture.
    #[error("{path}: {source}")]
    Capture {
        /// Which file.
        path: PathBuf,
        /// The cause.
        source: harbour_sources::hkex::capture::CaptureError,
    },
    /// The JSON lines given beside the capture.
    #[error(transparent)]
    Input(harbour_sources::file::ReplayError),
    /// A `--source` that does not parse.
    #[error("--source {0:?}: expected CHANNEL:LINE:GROUP:PORT (LINE A or B; GROUP empty for unicast), e.g. 1:A:239.1.1.1:51001")]
    Source(String),
    /// Kafka.
    #[error("{0}")]
    Kafka(String),
    /// A socket.
    #[error("udp {addr}: {source}")]
    Socket {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HkexError + '_ {
    move |source| HkexError::Io { path: path.to_owned(), source }
}

/// What `encode` wrote.
pub struct Encoded {
    /// Datagrams.
    pub records: usize,
    /// Market lines encoded.
    pub market_lines: usize,
    /// Other lines written beside.
    pub other_lines: usize,
}

/// Writes the market data of `lines` as a capture (Harbour's format, or pcap when the file name
/// ends in `.pcap`; pcap ports are 51000 + channel, line B on 52000 + channel) and the other lines
/// as JSON lines.
pub fn encode(lines: &[String], capture: &Path, other: &Path, cfg: &DayEncoding) -> Result<Encoded, HkexError> {
    let day = encode_day(lines, cfg);
    let file = File::create(capture).map_err(io(capture))?;
    if capture.extension().is_some_and(|e| e == "pcap") {
        let mut w = PcapWriter::new(file).map_err(io(capture))?;
        for r in &day.records {
            let port = if r.line == 0 { 51_000 } else { 52_000 } + r.channel;
            w.write(r.recv_time, [239, 1, 1, r.channel as u8], port, &r.data).map_err(io(capture))?;
        }
        w.finish().map_err(io(capture))?;
    } else {
        let mut w = CaptureWriter::new(file).map_err(io(capture))?;
        for r in &day.records {
            w.write(r).map_err(io(capture))?;
        }
        w.finish().map_err(io(capture))?;
    }
    std::fs::write(other, day.other_lines.iter().map(|l| format!("{l}\n")).collect::<String>()).map_err(io(other))?;
    Ok(Encoded { records: day.records.len(), market_lines: day.encoded, other_lines: day.other_lines.len() })
}

/// The pcap port map `encode` uses: 51000 + channel for line A, 52000 + channel for line B.
pub fn default_port_map(port: u16) -> Option<(u16, u8)> {
    match port {
        51_000..=51_999 => Some((port - 51_000, 0)),
        52_000..=52_999 => Some((port - 52_000, 1)),
        _ => None,
    }
}

/// What a replay did.
pub struct FeedRun {
    /// Output tables.
    pub state: OutputState,
    /// Engine counts.
    pub stats: RunStats,
    /// Feed counters.
    pub feed: FeedStats,
    /// The feed handler at the end (books, prices, status).
    pub handler: FeedHandler,
    /// Gaps recovered from the retransmission service.
    pub recovered: u64,
}

/// The retransmission service to recover gaps from.
#[derive(Clone, Debug)]
pub struct Retransmission {
    /// Its address.
    pub addr: SocketAddr,
    /// Logon username.
    pub username: String,
}

impl Retransmission {
    /// Gap recovery through this service: one session, opened at the first gap and kept (a new
    /// one after a failure).
    pub fn recovery(&self) -> harbour_sources::hkex::replay::Recovery {
        let r = self.clone();
        let mut session: Option<RetransClient> = None;
        Box::new(move |channel, gap| {
            if session.is_none() {
                let c =
                    RetransClient::connect(r.addr, &r.username, Duration::from_secs(5)).map_err(|e| e.to_string())?;
                session = Some(c);
            }
            let got = session.as_mut().expect("session").request(channel, gap.from, gap.to);
            if got.is_err() {
                session = None;
            }
            tracing::info!(channel, from = gap.from, to = gap.to, ok = got.is_ok(), "gap: retransmission requested");
            got.map_err(|e| e.to_string())
        })
    }
}

/// Replays `capture` merged by event time with the JSON lines of `files`; gaps both lines
/// missed are recovered from `retrans` (or given up, counted as lost, without it).
pub fn replay(
    capture: &Path,
    files: &[PathBuf],
    retrans: Option<&Retransmission>,
    refresh: Option<&Path>,
    config: &EngineConfig,
    metrics: &Metrics,
    health: &Arc<Health>,
) -> Result<FeedRun, HkexError> {
    let f = File::open(capture).map_err(io(capture))?;
    let reader = CaptureReader::new(f, default_port_map)
        .map_err(|source| HkexError::Capture { path: capture.to_owned(), source })?;
    // Read as `harbour replay` reads its files: a line that is not UTF-8 becomes a dead letter
    // (it stopped the replay until 2026-11-28), an overlong one is cut (it was read whole).
    let lines: Vec<SourceLine> =
        harbour_sources::file::Replay::new(files).collect::<Result<_, _>>().map_err(HkexError::Input)?;
    let name = capture.file_name().map_or("capture".into(), |n| n.to_string_lossy().into_owned());
    let mut merged = HkexReplay::new(&name, reader, lines.into_iter());
    if let Some(r) = retrans {
        merged = merged.with_recovery(r.recovery());
    }
    if let Some(path) = refresh {
        merged = merged.with_refresh(refresh_from_capture(path)?);
    }
    let (state, stats) = engine::run_feed(&mut merged, config, metrics, health);
    metrics.omdc_feed(&merged.handler.state.stats, merged.recovered);
    if let Some(source) = merged.take_error() {
        return Err(HkexError::Capture { path: capture.to_owned(), source });
    }
    let handler = std::mem::take(&mut merged.handler);
    Ok(FeedRun { state, stats, feed: handler.state.stats.clone(), handler, recovered: merged.recovered })
}

/// Recovery from a recorded refresh service: a capture of the refresh channels (each record's
/// channel the real-time channel it refreshes), in time order. It hands the feed handler that
/// channel's refresh packets from the end of one snapshot (a Refresh Complete) through the end of
/// the next one wanted: for a gap up to sequence number `to`, the first snapshot whose LastSeqNum
/// reaches `to`; after a Sequence Reset sent at `after`, the first snapshot begun at or after it
/// (one begun before would mix the old books in). The handler discards up to the first Refresh
/// Complete and applies the whole snapshot after it. A snapshot at the start of the capture is
/// preceded by a bare Refresh Complete.
pub fn refresh_from_capture(path: &Path) -> Result<harbour_sources::hkex::replay::Refresh, HkexError> {
    use harbour_sources::hkex::replay::RefreshNeed;
    use harbour_sources::hkex::wire::{Message, Packet};
    let f = File::open(path).map_err(io(path))?;
    let reader = CaptureReader::new(f, default_port_map)
        .map_err(|source| HkexError::Capture { path: path.to_owned(), source })?;
    // Per channel: its packets, each with its send time and the LastSeqNum of a Refresh Complete
    // it carries.
    type Packets = Vec<(Vec<u8>, u64, Option<u32>)>;
    let mut channels: std::collections::BTreeMap<u16, Packets> = Default::default();
    let mut lines: std::collections::BTreeMap<u16, u8> = Default::default();
    for r in reader {
        let r = r.map_err(|source| HkexError::Capture { path: path.to_owned(), source })?;
        let packet = Packet::parse(&r.data).ok();
        let complete = packet.as_ref().and_then(|p| {
            p.messages().find_map(|(_, m)| match m {
                Ok(Message::RefreshComplete { last_seq_num }) => Some(last_seq_num),
                _ => None,
            })
        });
        let sent = packet.map_or(0, |p| p.header.send_time);
        // One line per channel (a capture of both would give every snapshot twice): the first seen.
        let line = *lines.entry(r.channel).or_insert(r.line);
        if r.line == line {
            channels.entry(r.channel).or_default().push((r.data, sent, complete));
        }
    }
    let name = path.display().to_string();
    Ok(Box::new(move |channel: u16, need: RefreshNeed| {
        let packets = channels.get(&channel).ok_or_else(|| format!("{name}: no refresh for channel {channel}"))?;
        let completes =
            |from: usize| packets.iter().enumerate().skip(from).filter(|(_, p)| p.2.is_some()).map(|(i, _)| i);
        let (start, end) = match need {
            RefreshNeed::Gap { gap, after } => {
                // A snapshot begun after the channel's last reset (its LastSeqNum is in the
                // current numbering), the first that reaches the gap's end.
                let from = if after == 0 {
                    0
                } else {
                    completes(0)
                        .find(|i| packets[*i].1 >= after)
                        .ok_or_else(|| format!("{name}: no snapshot of channel {channel} after its reset"))?
                        + 1
                };
                let end = completes(from)
                    .find(|i| packets[*i].2.is_some_and(|last| last >= gap.to))
                    .ok_or_else(|| format!("{name}: no snapshot of channel {channel} reaches sequence {}", gap.to))?;
                (packets[..end].iter().rposition(|p| p.2.is_some()), end)
            }
            RefreshNeed::Reset { after } => {
                let start = completes(0)
                    .find(|i| packets[*i].1 >= after)
                    .ok_or_else(|| format!("{name}: no snapshot of channel {channel} after its reset"))?;
                let end = completes(start + 1)
                    .next()
                    .ok_or_else(|| format!("{name}: no whole snapshot of channel {channel} after its reset"))?;
                (Some(start), end)
            }
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        if start.is_none() {
            out.extend(harbour_sources::hkex::feed::refresh_packets(&[], 0, 1));
        }
        out.extend(packets[start.unwrap_or(0)..=end].iter().map(|(d, _, _)| d.clone()));
        Ok(out)
    }))
}

/// One UDP source to record: a channel's line, on a multicast group (or unicast) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSource {
    /// Channel id.
    pub channel: u16,
    /// 0 = A, 1 = B.
    pub line: u8,
    /// Multicast group; `None` for unicast.
    pub group: Option<Ipv4Addr>,
    /// UDP port.
    pub port: u16,
}

impl std::str::FromStr for UdpSource {
    type Err = HkexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || HkexError::Source(s.to_owned());
        let parts: Vec<&str> = s.split(':').collect();
        let [channel, line, group, port] = parts[..] else { return Err(bad()) };
        Ok(UdpSource {
            channel: channel.parse().map_err(|_| bad())?,
            line: match line {
                "A" | "a" => 0,
                "B" | "b" => 1,
                _ => return Err(bad()),
            },
            group: if group.is_empty() { None } else { Some(group.parse().map_err(|_| bad())?) },
            port: port.parse().map_err(|_| bad())?,
        })
    }
}

/// Receiver threads, one per source, sending every datagram (with its receive time) to the
/// returned channel until `done` is set.
fn udp_receivers(
    sources: &[UdpSource],
    interface: Ipv4Addr,
    done: &Arc<AtomicBool>,
) -> Result<(mpsc::Receiver<Record>, Vec<std::thread::JoinHandle<()>>), HkexError> {
    let (tx, rx) = mpsc::sync_channel::<Record>(65_536);
    let mut threads = Vec::new();
    for s in sources {
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, s.port);
        let sock = UdpSocket::bind(addr).map_err(|source| HkexError::Socket { addr: addr.to_string(), source })?;
        if let Some(g) = s.group {
            sock.join_multicast_v4(&g, &interface)
                .map_err(|source| HkexError::Socket { addr: format!("{g}:{}", s.port), source })?;
        }
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|source| HkexError::Socket { addr: addr.to_string(), source })?;
        let (tx, done, s) = (tx.clone(), done.clone(), s.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !done.load(Ordering::Relaxed) {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let recv_time = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos() as u64);
                        let r = Record { recv_time, channel: s.channel, line: s.line, data: buf[..n].to_vec() };
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(e) => {
                        tracing::warn!(port = s.port, error = %e, "udp receive failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }));
    }
    Ok((rx, threads))
}

/// Records datagrams from `sources` to `out` until `stop`, `max_packets` or `max_time`.
/// `interface` is the local address joining multicast groups. Returns the datagrams written.
pub fn record(
    sources: &[UdpSource],
    interface: Ipv4Addr,
    out: &Path,
    stop: &AtomicBool,
    max_packets: Option<u64>,
    max_time: Option<Duration>,
) -> Result<u64, HkexError> {
    let done = Arc::new(AtomicBool::new(false));
    let (rx, threads) = udp_receivers(sources, interface, &done)?;
    let file = File::create(out).map_err(io(out))?;
    let mut w = CaptureWriter::new(file).map_err(io(out))?;
    let started = Instant::now();
    let mut written = 0u64;
    loop {
        if stop.load(Ordering::Relaxed)
            || max_packets.is_some_and(|m| written >= m)
            || max_time.is_some_and(|t| started.elapsed() >= t)
        {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => {
                w.write(&r).map_err(io(out))?;
                written += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    done.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    w.finish().map_err(io(out))?;
    Ok(written)
}

/// Where `publish` reads datagrams from.
pub enum FeedSource {
    /// A capture (Harbour's format or pcap), as fast as it reads.
    Capture(PathBuf),
    /// Live UDP, until stopped.
    Udp {
        /// Channel lines.
        sources: Vec<UdpSource>,
        /// Local interface joining multicast groups.
        interface: Ipv4Addr,
    },
}

/// What `publish` sent.
pub struct Published {
    /// Messages per topic.
    pub messages: std::collections::HashMap<String, u64>,
    /// Undecodable datagrams sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Feed counters.
    pub feed: FeedStats,
    /// Gaps recovered from the retransmission service.
    pub recovered: u64,
}

/// The OMD-C bridge: decodes the feed (arbitrating lines, recovering gaps) and publishes its
/// instruments, quotes and closes to the Kafka market and instruments topics as contract lines,
/// so the Kafka pipeline, with its durable offsets, reads the exchange's own feed. Undecodable
/// datagrams go to the dead-letter topic (source `omdc:<name>#chN/L`, offset = datagram number).
pub fn publish(
    source: &FeedSource,
    kafka: &harbour_sources::kafka::KafkaConfig,
    retrans: Option<&Retransmission>,
    stop: &AtomicBool,
    metrics: &crate::metrics::Metrics,
) -> Result<Published, HkexError> {
    use harbour_sources::hkex::replay::FeedItem;
    use harbour_sources::kafka::{publish_lines, DeadLetterProducer, Partition, Poison};
    let kafka_err = |e: harbour_sources::kafka::KafkaError| HkexError::Kafka(e.to_string());
    let done = Arc::new(AtomicBool::new(false));
    let (records, name, threads): (Box<dyn Iterator<Item = _>>, String, Vec<std::thread::JoinHandle<()>>) = match source
    {
        FeedSource::Capture(path) => {
            let f = File::open(path).map_err(io(path))?;
            let reader = CaptureReader::new(f, default_port_map)
                .map_err(|source| HkexError::Capture { path: path.clone(), source })?;
            let name = path.file_name().map_or("capture".into(), |n| n.to_string_lossy().into_owned());
            // Stopped as the UDP feed is: by a signal, or by a dead letter that could not be sent
            // (until 2026-11-28 a capture was published to its end either way).
            (Box::new(reader.take_while(|_| !stop.load(Ordering::Relaxed))), name, Vec::new())
        }
        FeedSource::Udp { sources, interface } => {
            let (rx, threads) = udp_receivers(sources, *interface, &done)?;
            let it = std::iter::from_fn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(r) => return Some(Ok(r)),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                }
            });
            (Box::new(it), "udp".to_owned(), threads)
        }
    };
    let live = matches!(source, FeedSource::Udp { .. });
    let mut merged = HkexReplay::new(&name, records, std::iter::empty());
    if live {
        merged = merged.with_reorder(0);
    }
    if let Some(r) = retrans {
        merged = merged.with_recovery(r.recovery());
    }
    // Sent at once, outside transactions (the feed has no epochs: at least once, keyed by source
    // position), so that it neither fences nor holds back the pipeline's transactional producer.
    let mut dlq = DeadLetterProducer::plain(kafka).map_err(kafka_err)?;
    let mut dead = 0u64;
    let mut dlq_error = None;
    // The feed's counters go to the metrics as it runs (every 1,000 items: a live feed's gaps
    // and losses are seen while they happen, not in the exit summary only).
    let mut items = 0u64;
    let feed = std::iter::from_fn(|| {
        let item = merged.next();
        items += 1;
        if item.is_none() || items.is_multiple_of(1_000) {
            metrics.omdc_feed(&merged.handler.state.stats, merged.recovered);
        }
        item
    });
    let lines = feed.filter_map(|item| match item {
        FeedItem::Line(l) => Some(l.raw),
        FeedItem::Reject { source, position, raw, code, reason } => {
            let partition = Partition { topic: format!("omdc:{source}").into(), partition: 0 };
            let poison = Poison {
                partition: &partition,
                offset: position as i64,
                code,
                reason: &reason,
                payload: raw.as_bytes(),
                trade_date: None,
            };
            // Counted as the pipeline counts its dead letters (`harbour_source_dead_letters_total`
            // by reason; sent ones in `harbour_kafka_dead_letters_sent_total`).
            metrics.dead_letter(code);
            match dlq.send(&poison, None) {
                Ok(()) => {
                    metrics.kafka_dead_letters_sent.inc();
                }
                Err(e) => {
                    // The feed stops at the first that cannot be sent (the error is returned).
                    tracing::error!(error = %e, "a dead letter could not be sent: stopping the feed");
                    stop.store(true, Ordering::Relaxed);
                    dlq_error.get_or_insert(e);
                }
            }
            dead += 1;
            None
        }
    });
    let messages = publish_lines(kafka, lines).map_err(kafka_err)?;
    done.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let Some(e) = dlq_error {
        return Err(kafka_err(e));
    }
    dlq.flush().map_err(kafka_err)?;
    if let Some(e) = merged.take_error() {
        let path = match source {
            FeedSource::Capture(p) => p.clone(),
            FeedSource::Udp { .. } => PathBuf::from("udp"),
        };
        return Err(HkexError::Capture { path, source: e });
    }
    Ok(Published {
        messages,
        dead_letters: dead,
        feed: merged.handler.state.stats.clone(),
        recovered: merged.recovered,
    })
}
