//! HKEX OMD-C end to end: a generated day's market data encoded as OMD-C packets (lines A and B,
//! four channels), replayed through the decoder, the feed handler and the pipeline beside the
//! day's fills and orders, gives the tables of the JSON replay of the same day. Also through
//! pcap, through UDP (`record`), and with damaged packets (dead letters, the rest unchanged).

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{assert_same_tables, engine_config, Compare};
use harbour::engine::{self, OutputState};
use harbour::hkex::{self as hk, UdpSource};
use harbour::metrics::{Health, Metrics};
use harbour_sources::file::SourceLine;
use harbour_sources::generate::{generate, GenerateConfig};
use harbour_sources::hkex::capture::{CaptureReader, CaptureWriter};
use harbour_sources::hkex::day::DayEncoding;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("harbour-hkex-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn day(fills: usize, seed: u64) -> Vec<String> {
    generate(&GenerateConfig { fills, quotes: fills * 3, seed, ..GenerateConfig::default() }).unwrap()
}

fn json_replay(lines: &[String]) -> OutputState {
    let source = lines
        .iter()
        .enumerate()
        .map(|(i, raw)| Ok(SourceLine { source: "day.jsonl".into(), position: i as u64 + 1, raw: raw.clone() }));
    engine::run(source, &engine_config(500), &Metrics::default(), &Arc::new(Health::default())).unwrap().0
}

fn feed_replay(capture: &Path, other: &Path) -> hk::FeedRun {
    feed_replay_with(capture, other, None)
}

fn feed_replay_with(capture: &Path, other: &Path, retrans: Option<&hk::Retransmission>) -> hk::FeedRun {
    hk::replay(
        capture,
        &[other.to_owned()],
        retrans,
        None,
        &engine_config(500),
        &Metrics::default(),
        &Arc::new(Health::default()),
    )
    .unwrap()
}

/// The day with trading status lines: the main market's session opening and closing, one security
/// halted and resumed (each placed among the day's lines by its time).
fn with_status(mut lines: Vec<String>) -> Vec<String> {
    let status = [
        r#"{"type":"status","market":"MAIN","status":"open","session":3,"ts":"2026-01-02T09:30:00+08:00"}"#,
        r#"{"type":"status","symbol":"00700","status":"halted","ts":"2026-01-02T10:15:00+08:00"}"#,
        r#"{"type":"status","symbol":"00700","status":"trading","ts":"2026-01-02T10:45:00+08:00"}"#,
        r#"{"type":"status","symbol":"00005","status":"halted","ts":"2026-01-02T14:00:00+08:00"}"#,
        r#"{"type":"status","symbol":"00388","status":"halted","ts":"2026-01-02T09:00:00+08:00"}"#,
        r#"{"type":"status","market":"MAIN","status":"closed","session":103,"ts":"2026-01-02T16:10:00+08:00"}"#,
        // SubID 0 is the day close, not "no session".
        r#"{"type":"status","market":"GEM","status":"day_closed","session":0,"ts":"2026-01-02T16:20:00+08:00"}"#,
    ];
    let date = GenerateConfig::default().date.format("%Y-%m-%d").to_string();
    for raw in status {
        let raw = raw.replace("2026-01-02", &date);
        let t = ts_of(&raw).unwrap();
        let at = lines.iter().position(|l| ts_of(l).is_some_and(|u| u > t)).unwrap_or(lines.len());
        lines.insert(at, raw);
    }
    lines
}

/// The lines `hk::encode` left beside a capture (fills, orders: not market data), as source "other".
fn other_lines(path: &Path) -> Vec<SourceLine> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| SourceLine { source: "other".into(), position: i as u64 + 1, raw: l.to_owned() })
        .collect()
}

fn ts_of(raw: &str) -> Option<i64> {
    harbour_sources::contract::parse_line(raw, 0).ok()?.ts()
}

#[test]
fn an_omdc_day_gives_the_positions_and_pnl_of_the_json_day() {
    let lines = with_status(day(3_000, 21));
    let dir = temp("equal");
    for capture in [dir.join("day.omdc"), dir.join("day.pcap")] {
        let other = dir.join("other.jsonl");
        let e = hk::encode(&lines, &capture, &other, &DayEncoding::default()).unwrap();
        assert!(e.market_lines > 9_000 && e.records > e.market_lines, "{} {}", e.market_lines, e.records);
        let run = feed_replay(&capture, &other);
        let want = json_replay(&lines);
        assert!(want.positions.len() > 50 && want.marks.len() == 10);
        // Trading status from messages 20 and 21: the latest per market and security.
        let status: Vec<(String, String)> =
            run.state.status.rows().map(|(k, s)| (k.name(), s.status.to_string())).collect();
        assert_eq!(
            status,
            vec![
                ("00005".into(), "halted".into()),
                ("00388".into(), "halted".into()),
                ("00700".into(), "trading".into()),
                ("GEM".into(), "day_closed".into()),
                ("MAIN".into(), "closed".into())
            ]
        );
        assert_same_tables(&run.state, &want, Compare::OmdC);
        // Every message once: line B's copies were all duplicates; nothing lost or refused.
        let f = &run.feed;
        assert_eq!(f.messages, f.duplicates, "{capture:?}: {f:?}");
        assert_eq!((f.gaps, f.lost, f.decode_errors, f.book_errors), (0, 0, 0, 0), "{capture:?}: {f:?}");
        assert_eq!(f.packets, e.records as u64);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn damaged_packets_are_dead_letters_and_line_b_keeps_the_day_whole() {
    let lines = day(800, 22);
    let dir = temp("damaged");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding::default()).unwrap();
    // Damage every 50th datagram of line A (its PktSize), so it does not decode.
    let damaged = dir.join("damaged.omdc");
    let broken = common::damage_line_a(&capture, &damaged, 50);
    assert!(broken > 10);
    let run = feed_replay(&damaged, &other);
    let want = json_replay(&lines);
    let omd: Vec<_> = run.state.dead_letters.iter().filter(|d| d.code == "omdc_decode").collect();
    assert_eq!(omd.len(), broken, "each damaged datagram is one dead letter");
    assert!(
        omd.iter()
            .all(|d| d.source.contains("#ch") && d.source.ends_with("/A") && d.position > 0 && !d.reason.is_empty()),
        "{omd:?}"
    );
    assert_eq!(run.feed.decode_errors, broken as u64);
    // Line B carried every message the damaged packets held: the tables are whole.
    assert_eq!((run.feed.gaps, run.feed.lost), (0, 0));
    assert_eq!(run.state.positions.rows().collect::<Vec<_>>(), want.positions.rows().collect::<Vec<_>>());
    assert_eq!(run.state.marks.rows().collect::<Vec<_>>(), want.marks.rows().collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn datagrams_recorded_from_udp_replay_like_the_capture_they_came_from() {
    let lines = day(300, 23);
    let dir = temp("record");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    // One channel on lines A and B (two sockets): the test sends a whole day in a fraction of a
    // second, so datagrams of different channels could be recorded hours of event time apart;
    // a live feed paces them, and the replay re-orders within a read-ahead of a second.
    hk::encode(&lines, &capture, &other, &DayEncoding { channels: 1, line_b: true }).unwrap();
    let records: Vec<_> =
        CaptureReader::new(std::fs::File::open(&capture).unwrap(), |_| None).unwrap().map(Result::unwrap).collect();
    // One port per channel and line (unicast on loopback; multicast needs a route the test
    // machine may not have).
    let ports: Vec<u16> =
        (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let port = |channel: u16, line: u8| ports[usize::from((channel - 1) * 2 + u16::from(line))];
    let sources: Vec<UdpSource> = [(1, 0), (1, 1)]
        .into_iter()
        .map(|(channel, line)| UdpSource { channel, line, group: None, port: port(channel, line) })
        .collect();
    let recorded = dir.join("recorded.omdc");
    let n = records.len() as u64;
    let (rec_out, srcs) = (recorded.clone(), sources.clone());
    let recorder = std::thread::spawn(move || {
        hk::record(
            &srcs,
            Ipv4Addr::UNSPECIFIED,
            &rec_out,
            &AtomicBool::new(false),
            Some(n),
            Some(Duration::from_secs(60)),
        )
    });
    // Sent once the recorder's sockets are bound (listed in /proc/net/udp; a fixed head start
    // lost the first datagrams on a busy machine).
    let bound = |port: u16| {
        let suffix = format!(":{port:04X}");
        std::fs::read_to_string("/proc/net/udp")
            .map(|t| t.lines().skip(1).any(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(&suffix))))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ports.iter().all(|p| bound(*p)) {
        assert!(std::time::Instant::now() < deadline, "the recorder bound its ports");
        std::thread::sleep(Duration::from_millis(10));
    }
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, r) in records.iter().enumerate() {
        tx.send_to(&r.data, ("127.0.0.1", port(r.channel, r.line))).unwrap();
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(2)); // stay within the socket buffers
        }
    }
    let written = recorder.join().unwrap().unwrap();
    assert_eq!(written, n, "every datagram recorded");
    let run = feed_replay(&recorded, &other);
    let want = json_replay(&lines);
    for (a, b) in run.state.positions.rows().zip(want.positions.rows()) {
        assert_eq!(a, b);
    }
    assert_eq!(run.state.positions.len(), want.positions.len());
    assert_eq!(run.state.marks.rows().collect::<Vec<_>>(), want.marks.rows().collect::<Vec<_>>());
    assert_eq!(run.feed.messages, run.feed.duplicates);
    let _ = std::fs::remove_dir_all(dir);
}

/// The aggregated books of every security, best levels first.
fn books(h: &harbour_sources::hkex::feed::FeedHandler) -> Vec<(u32, String)> {
    use harbour_sources::hkex::wire::BookSide;
    let mut v: Vec<(u32, String)> = h
        .state
        .securities()
        .map(|(code, s)| {
            (*code, format!("{:?} | {:?}", s.aggregated.levels(BookSide::Bid), s.aggregated.levels(BookSide::Offer)))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn gaps_on_both_lines_are_recovered_from_the_retransmission_service_and_the_books_end_identical() {
    use harbour_sources::hkex::retrans::RetransServer;
    use harbour_sources::hkex::wire::Packet;
    let lines = day(1_500, 24);
    let dir = temp("gaps");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding { channels: 2, line_b: true }).unwrap();
    let records: Vec<_> =
        CaptureReader::new(std::fs::File::open(&capture).unwrap(), |_| None).unwrap().map(Result::unwrap).collect();
    // The service holds every message the exchange sent.
    let server = RetransServer::start(Duration::from_millis(200)).unwrap();
    for r in records.iter().filter(|r| r.line == 0) {
        server.record(r.channel, &r.data);
    }
    // Lose, on both lines, every packet holding a message whose number is 40..=45 mod 400.
    let lost = |r: &harbour_sources::hkex::capture::Record| {
        let p = Packet::parse(&r.data).unwrap();
        (p.header.seq_num..=p.last_seq()).any(|s| (40..=45).contains(&(s % 400)))
    };
    let holed = dir.join("holed.omdc");
    let mut w = CaptureWriter::new(std::fs::File::create(&holed).unwrap()).unwrap();
    let mut dropped = 0;
    for r in &records {
        if lost(r) {
            dropped += 1;
        } else {
            w.write(r).unwrap();
        }
    }
    w.finish().unwrap();
    assert!(dropped > 20, "{dropped}");

    let clean = feed_replay(&capture, &other);
    let retrans = hk::Retransmission { addr: server.addr(), username: "HARBOUR".into() };
    let run = feed_replay_with(&holed, &other, Some(&retrans));
    assert!(run.feed.gaps > 5, "{:?}", run.feed);
    assert_eq!(run.feed.lost, 0);
    assert_eq!(run.recovered, run.feed.gaps);
    assert!(server.stats().requests as u64 >= run.feed.gaps);
    assert_eq!(run.feed.messages, clean.feed.messages, "every message applied once");
    assert_eq!(books(&run.handler), books(&clean.handler), "books identical to the gap-free run");
    assert_same_tables(&run.state, &json_replay(&lines), Compare::OmdC);

    // Without the service the gaps are given up and counted; the replay still ends.
    let blind = feed_replay(&holed, &other);
    assert!(blind.feed.lost > 0);
    assert_eq!(blind.recovered, 0);
    assert!(blind.feed.messages < clean.feed.messages);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gaps_the_retransmission_service_cannot_fill_are_recovered_from_a_refresh_snapshot() {
    use harbour_sources::hkex::feed::{refresh_packets, FeedHandler};
    use harbour_sources::hkex::replay::{HkexReplay, RefreshNeed};
    use harbour_sources::hkex::wire::Packet;
    let lines = day(1_500, 25);
    let dir = temp("refresh");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding { channels: 2, line_b: true }).unwrap();
    let records: Vec<_> =
        CaptureReader::new(std::fs::File::open(&capture).unwrap(), |_| None).unwrap().map(Result::unwrap).collect();
    let lost = |r: &harbour_sources::hkex::capture::Record| {
        let p = Packet::parse(&r.data).unwrap();
        (p.header.seq_num..=p.last_seq()).any(|s| (100..=104).contains(&(s % 1_000)))
    };
    let holed: Vec<_> = records.iter().filter(|r| !lost(r)).cloned().collect();
    assert!(holed.len() < records.len());
    // The refresh channel, simulated from the clean feed: the channel's state once every
    // message through the gap was sent.
    let line_a: Vec<_> = records.iter().filter(|r| r.line == 0).cloned().collect();
    let refresh = move |channel: u16, need: RefreshNeed| {
        let RefreshNeed::Gap { gap, .. } = need else { return Err("no reset in this day".to_string()) };
        let mut h = FeedHandler::default();
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        let mut last = 0;
        for r in line_a.iter().filter(|r| r.channel == channel) {
            h.on_datagram(channel, &r.data, &mut out, &mut rejects);
            last = Packet::parse(&r.data).unwrap().last_seq();
            if last >= gap.to {
                break;
            }
        }
        // The refresh channel cycles: a client joining mid-cycle discards up to the first Refresh
        // Complete, then takes the next whole snapshot.
        let snapshot = h.state.snapshot(channel);
        let mut packets = refresh_packets(&snapshot[snapshot.len() / 2..], last, 1);
        packets.extend(refresh_packets(&snapshot, last, 1));
        Ok(packets)
    };
    let other_lines = other_lines(&other);
    let mut replay =
        HkexReplay::new("holed", holed.into_iter().map(Ok), other_lines.into_iter()).with_refresh(Box::new(refresh));
    let (state, _) =
        engine::run_feed(&mut replay, &engine_config(500), &Metrics::default(), &Arc::new(Health::default()));
    let f = &replay.handler.state.stats;
    assert!(f.gaps >= 2, "{f:?}");
    assert_eq!(replay.refreshed, f.gaps, "every gap recovered by a refresh");
    assert_eq!(f.refreshes, f.gaps);
    assert_eq!(f.lost, 0);
    let clean = feed_replay(&capture, &other);
    assert_eq!(books(&replay.handler), books(&clean.handler), "books identical to the gap-free run");
    let want = json_replay(&lines);
    // A snapshot restores state, not history: the day's positions and marks are whole.
    assert_eq!(state.positions.rows().collect::<Vec<_>>(), want.positions.rows().collect::<Vec<_>>());
    assert_eq!(state.marks.rows().collect::<Vec<_>>(), want.marks.rows().collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(dir);
}

/// A Sequence Reset in the middle of a channel's day, line B's copy of it late: each line is
/// followed across it (line B's late copies of the old numbering are duplicates) and the channel's
/// books, cleared by the reset, come back from a refresh snapshot taken after it (HKEX: "resync
/// from the refresh service"); the day ends with the books and positions of the same day without
/// the reset.
#[test]
fn a_sequence_reset_is_followed_on_both_lines_and_the_channel_resynced_from_the_refresh_service() {
    use harbour_sources::hkex::capture::Record;
    use harbour_sources::hkex::encode::PacketWriter;
    use harbour_sources::hkex::feed::{refresh_packets_at, FeedHandler};
    use harbour_sources::hkex::replay::{HkexReplay, RefreshNeed};
    use harbour_sources::hkex::wire::{Message, Packet};
    let lines = day(1_500, 26);
    let dir = temp("reset");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding { channels: 2, line_b: true }).unwrap();
    let records: Vec<Record> =
        CaptureReader::new(std::fs::File::open(&capture).unwrap(), |_| None).unwrap().map(Result::unwrap).collect();
    let seq = |r: &Record| Packet::parse(&r.data).unwrap().header.seq_num;
    let sent = |r: &Record| Packet::parse(&r.data).unwrap().header.send_time;
    let ch = records[records.len() / 2].channel;
    // The reset goes before the line-A packet of `ch` in the middle of its day (line B cuts its
    // packets there too: it cuts at every change of time).
    let on_a: Vec<&Record> = records.iter().filter(|r| r.channel == ch && r.line == 0).collect();
    let first_new = on_a[on_a.len() / 2];
    let (cut, reset_time) = (seq(first_new), sent(first_new));
    assert!(records.iter().any(|r| r.channel == ch && r.line == 1 && seq(r) == cut));
    let reset = |line: u8| {
        let mut w = PacketWriter::new(cut);
        w.push(&Message::SequenceReset { new_seq_no: 1 }, reset_time);
        Record { recv_time: 0, channel: ch, line, data: w.finish().remove(0) }
    };
    // Renumbered from the cut. Line B, in its own order, lags: its packets from 40 messages
    // before the cut, its reset and its first new packets arrive after line A's fifth new packet.
    let (mut out, mut late_b) = (Vec::new(), Vec::new());
    let (mut new_on_a, mut b_reset) = (0, false);
    for r in &records {
        let mut r = r.clone();
        let renumber = r.channel == ch && seq(&r) >= cut;
        if renumber {
            if r.line == 0 && new_on_a == 0 {
                out.push(reset(0));
            }
            if r.line == 1 && !b_reset {
                late_b.push(reset(1));
                b_reset = true;
            }
            let renumbered = seq(&r) - cut + 1;
            r.data[4..8].copy_from_slice(&renumbered.to_le_bytes());
        }
        let lagging = r.channel == ch && r.line == 1 && new_on_a < 5 && (renumber || seq(&r) + 40 >= cut);
        if lagging {
            late_b.push(r);
            continue;
        }
        let on_a = renumber && r.line == 0;
        out.push(r);
        if on_a {
            new_on_a += 1;
            if new_on_a == 5 {
                out.append(&mut late_b);
            }
        }
    }
    assert!(new_on_a > 5 && b_reset && late_b.is_empty());

    // The refresh service: the channel's state at the reset (the exchange's books outlive it), in
    // the new numbering's first snapshot (LastSeqNum 0: nothing sent in it yet).
    let before: Vec<Record> =
        records.iter().filter(|r| r.channel == ch && r.line == 0 && seq(r) < cut).cloned().collect();
    let mut asked = Vec::new();
    let refresh = move |channel: u16, need: RefreshNeed| {
        asked.push((channel, need));
        let RefreshNeed::Reset { after } = need else { return Err("no gaps in this day".to_string()) };
        assert_eq!((channel, after), (ch, reset_time), "{asked:?}");
        let mut h = FeedHandler::default();
        for r in &before {
            h.on_datagram(channel, &r.data, &mut Vec::new(), &mut Vec::new());
        }
        let snapshot = h.state.snapshot(channel);
        let mut packets = refresh_packets_at(&[], 0, 1, after + 1);
        packets.extend(refresh_packets_at(&snapshot, 0, 1, after + 1));
        Ok(packets)
    };
    let other_lines = other_lines(&other);
    let mut replay =
        HkexReplay::new("reset", out.into_iter().map(Ok), other_lines.into_iter()).with_refresh(Box::new(refresh));
    let (state, stats) =
        engine::run_feed(&mut replay, &engine_config(500), &Metrics::default(), &Arc::new(Health::default()));
    let f = &replay.handler.state.stats;
    assert_eq!((f.resets, f.refreshes, f.gaps, f.lost, f.book_errors), (1, 1, 0, 0, 0), "{f:?}");
    let clean = feed_replay(&capture, &other);
    assert_eq!(stats.dead_letters, clean.stats.dead_letters, "only the day's own bad lines");
    assert_eq!(books(&replay.handler), books(&clean.handler), "books identical to the day without the reset");
    let want = json_replay(&lines);
    assert_eq!(state.positions.rows().collect::<Vec<_>>(), want.positions.rows().collect::<Vec<_>>());
    assert_eq!(state.marks.rows().collect::<Vec<_>>(), want.marks.rows().collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(dir);
}

/// A gap after a mid-day Sequence Reset is refreshed from a snapshot of the new numbering: a
/// recorded morning snapshot names higher sequence numbers (of the old numbering) and would
/// otherwise be taken, and every new message below its LastSeqNum dropped as a duplicate.
#[test]
fn a_gap_after_a_reset_is_refreshed_from_a_snapshot_of_the_new_numbering() {
    use harbour_sources::hkex::capture::Record;
    use harbour_sources::hkex::feed::{refresh_packets_at, Gap};
    use harbour_sources::hkex::replay::RefreshNeed;
    use harbour_sources::hkex::wire::{Message, Packet};
    let dir = temp("refresh-after-reset");
    let path = dir.join("refresh.omdc");
    let mut w = CaptureWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    // Snapshots of channel 1: the morning's (LastSeqNum 12,000), then after the reset at 200 ns
    // one at 50 and one at 400 (each preceded by the end of the one before).
    for (last, at) in [(12_000u32, 100u64), (50, 300), (400, 500)] {
        for data in refresh_packets_at(&[], last, 1, at) {
            w.write(&Record { recv_time: at, channel: 1, line: 0, data }).unwrap();
        }
    }
    w.finish().unwrap();
    let mut hook = harbour::hkex::refresh_from_capture(&path).unwrap();
    let last_of = |packets: &[Vec<u8>]| {
        packets.iter().rev().find_map(|p| {
            Packet::parse(p).unwrap().messages().find_map(|(_, m)| match m {
                Ok(Message::RefreshComplete { last_seq_num }) => Some(last_seq_num),
                _ => None,
            })
        })
    };
    let gap = Gap { from: 300, to: 310 };
    let after_reset = hook(1, RefreshNeed::Gap { gap, after: 200 }).unwrap();
    assert_eq!(last_of(&after_reset), Some(400), "the first snapshot begun after the reset that reaches 310");
    let no_reset = hook(1, RefreshNeed::Gap { gap, after: 0 }).unwrap();
    assert_eq!(last_of(&no_reset), Some(12_000), "without a reset, the first that reaches it");
    assert!(hook(1, RefreshNeed::Gap { gap: Gap { from: 500, to: 510 }, after: 200 }).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

/// `harbour hkex replay --refresh`: a recorded refresh service (a snapshot of each channel every
/// few packets) recovers the gaps of a capture that lost packets on both lines, with no
/// retransmission service: the books end as in the gap-free run.
#[test]
fn a_recorded_refresh_service_recovers_the_gaps_of_a_replay() {
    use harbour_sources::hkex::capture::Record;
    use harbour_sources::hkex::feed::{refresh_packets_at, FeedHandler};
    use harbour_sources::hkex::wire::Packet;
    let lines = with_status(day(1_500, 26));
    let dir = temp("refresh-capture");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding { channels: 2, line_b: true }).unwrap();
    let records: Vec<Record> =
        CaptureReader::new(std::fs::File::open(&capture).unwrap(), |_| None).unwrap().map(Result::unwrap).collect();
    let lost = |r: &Record| {
        let p = Packet::parse(&r.data).unwrap();
        (p.header.seq_num..=p.last_seq()).any(|s| (200..=203).contains(&(s % 700)))
    };
    let write = |path: &Path, rs: &mut dyn Iterator<Item = &Record>| {
        let mut w = CaptureWriter::new(std::fs::File::create(path).unwrap()).unwrap();
        for r in rs {
            w.write(r).unwrap();
        }
        w.finish().unwrap();
    };
    let holed = dir.join("holed.omdc");
    write(&holed, &mut records.iter().filter(|r| !lost(r)));
    // The refresh service, recorded: every 25 packets of a channel, a snapshot of it.
    let mut h = FeedHandler::default();
    let (mut out, mut rejects) = (Vec::new(), Vec::new());
    let mut seen: std::collections::BTreeMap<u16, usize> = Default::default();
    let mut refresh: Vec<Record> = Vec::new();
    for r in records.iter().filter(|r| r.line == 0) {
        h.on_datagram(r.channel, &r.data, &mut out, &mut rejects);
        let n = seen.entry(r.channel).or_default();
        *n += 1;
        if n.is_multiple_of(25) {
            let last = Packet::parse(&r.data).unwrap().last_seq();
            let snapshot = h.state.snapshot(r.channel);
            for data in refresh_packets_at(&snapshot, last, 1, r.recv_time) {
                // Recorded on both lines: the replay must use one.
                refresh.push(Record { recv_time: r.recv_time, channel: r.channel, line: 0, data: data.clone() });
                refresh.push(Record { recv_time: r.recv_time, channel: r.channel, line: 1, data });
            }
        }
    }
    let refresh_path = dir.join("refresh.omdc");
    write(&refresh_path, &mut refresh.iter());

    let run = hk::replay(
        &holed,
        std::slice::from_ref(&other),
        None,
        Some(&refresh_path),
        &engine_config(500),
        &Metrics::default(),
        &Arc::new(Health::default()),
    )
    .unwrap();
    let f = &run.feed;
    assert!(f.gaps >= 2, "{f:?}");
    assert_eq!((f.refreshes, f.lost), (f.gaps, 0), "every gap recovered from the recorded refresh: {f:?}");
    let clean = feed_replay(&capture, &other);
    assert_eq!(books(&run.handler), books(&clean.handler), "books identical to the gap-free run");
    let want = json_replay(&lines);
    assert_eq!(run.state.marks.rows().collect::<Vec<_>>(), want.marks.rows().collect::<Vec<_>>());
    // Trading status: the latest of each security and market, as in the JSON day (a status lost
    // in a gap comes back with the snapshot).
    let status = |s: &OutputState| s.status.rows().map(|(k, v)| (k.name(), v.status.clone())).collect::<Vec<_>>();
    assert_eq!(status(&run.state), status(&want));
    let _ = std::fs::remove_dir_all(dir);
}

/// Quotes that empty a side or the last price, encoded to OMD-C and replayed, mark as the JSON
/// day does: an emptied side is a level deleted on the wire; an emptied last stays a JSON line.
#[test]
fn encoded_quotes_that_empty_a_field_mark_as_the_json_day() {
    let lines: Vec<String> = [
        r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:30:00+08:00","bid":"385.000","ask":"385.400"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:30:01+08:00","last":"385.200"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:30:02+08:00","last":null,"bid":null}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:30:03+08:00","ask":"385.600"}"#,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let dir = temp("cleared");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding { channels: 1, line_b: false }).unwrap();
    let run = feed_replay(&capture, &other);
    let want = json_replay(&lines);
    let marks = |s: &OutputState| s.marks.rows().map(|(sym, m)| (*sym, m.price, m.source)).collect::<Vec<_>>();
    assert_eq!(marks(&run.state), marks(&want));
    // No bid and no last: no mid, no last price; the mark is none (no close either).
    assert_eq!(marks(&want)[0].1, None, "{:?}", marks(&want));
    let _ = std::fs::remove_dir_all(dir);
}

/// The JSON lines beside a capture are read as `harbour replay` reads its files: a line that is
/// not UTF-8 is a dead letter with its position, and the rest of the day goes on (the replay
/// stopped with "stream did not contain valid UTF-8" until 2026-11-28).
#[test]
fn a_line_beside_the_capture_that_is_not_utf8_is_a_dead_letter() {
    let lines = day(300, 23);
    let dir = temp("utf8");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding::default()).unwrap();
    let clean = feed_replay(&capture, &other);
    let mut bytes = std::fs::read(&other).unwrap();
    let count = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    bytes.extend_from_slice(b"{\"type\":\"fill\",\"strategy\":\"caf\xe9\"}\n");
    std::fs::write(&other, bytes).unwrap();
    let run = feed_replay(&capture, &other);
    assert_eq!(run.state.dead_letters.len(), clean.state.dead_letters.len() + 1);
    let added: Vec<_> = run.state.dead_letters.iter().filter(|d| d.code == "not_utf8").collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!((added[0].source.as_str(), added[0].position), ("other.jsonl", count + 1), "{added:?}");
    assert_eq!(run.state.positions.len(), clean.state.positions.len());
    let _ = std::fs::remove_dir_all(dir);
}
