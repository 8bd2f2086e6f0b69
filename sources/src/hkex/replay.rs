//! Replay of recorded OMD-C (a capture) merged by event time with JSON-lines input (fills,
//! orders, busts): what `harbour hkex replay` feeds the engine. Market data becomes contract
//! lines (the same inputs as JSON market data); packets and messages that do not decode become
//! rejects with their place in the capture.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use harbour_dataflows::model::Ts;
use harbour_dataflows::validate::Input;
use smol_str::SmolStr;

use std::collections::BTreeMap;

use super::capture::{CaptureError, Record};
use super::feed::{FeedHandler, FeedReject, Gap};
use crate::contract::{parse_line, to_line};
use crate::file::SourceLine;

/// How far (in packet send time) the replay reads ahead to put feed items in event-time order.
pub const REORDER_NS: i64 = 1_000_000_000;

/// How long (in send time) a gap may stay open before it is recovered: the other line usually
/// fills it first.
pub const GAP_WAIT_NS: u64 = 10_000_000;

/// Recovers a gap: the packets holding `gap`'s messages of `channel` (the retransmission
/// service), or why not.
pub type Recovery = Box<dyn FnMut(u16, Gap) -> Result<Vec<Vec<u8>>, String>>;

/// Recovers a channel from the refresh service: the refresh channel's packets, read until a whole
/// snapshot went by, or why not.
pub type Refresh = Box<dyn FnMut(u16, RefreshNeed) -> Result<Vec<Vec<u8>>, String>>;

/// Why a channel needs a refresh snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshNeed {
    /// Messages neither line nor the retransmission service gave: a snapshot that reaches
    /// `gap.to`, begun after `after` (ns: the channel's last Sequence Reset, 0 without one; a
    /// snapshot of the old numbering would name sequence numbers of another day's part).
    Gap {
        /// The missing messages.
        gap: Gap,
        /// Send time the snapshot must begin after.
        after: u64,
    },
    /// A Sequence Reset applied by a packet sent at `after` (ns): a snapshot taken after it, in
    /// the new numbering.
    Reset {
        /// Send time of the packet that applied the reset.
        after: u64,
    },
}

/// Index of a buffered item (the heap orders keys only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Slot(usize);

/// One thing for the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedItem {
    /// A contract line (from the feed, or passed through from JSON input).
    Line(SourceLine),
    /// Feed input that could not be used: a dead letter with its reason.
    Reject {
        /// `capture#chN/A`.
        source: SmolStr,
        /// Record number in the capture (1-based).
        position: u64,
        /// The datagram, hex.
        raw: String,
        /// Reason code.
        code: &'static str,
        /// Reason.
        reason: String,
    },
}

/// Event time of a JSON line (`None`: no time, or it does not parse; it goes out at once).
fn line_ts(raw: &str) -> Option<Ts> {
    parse_line(raw, 0).ok()?.ts()
}

fn input_ts(i: &Input, send_time: u64) -> Ts {
    match i {
        Input::Quote(q) => q.ts,
        Input::Close(c) => c.ts,
        _ => i64::try_from(send_time).unwrap_or(i64::MAX),
    }
}

/// The merge: capture records through a [`FeedHandler`], and JSON lines, in event-time order
/// (JSON lines first on equal times; lines without a time as soon as they are reached). Feed
/// items are put in event-time order within a read-ahead of [`REORDER_NS`] of send time.
pub struct HkexReplay<R, L: Iterator<Item = SourceLine>> {
    records: R,
    lines: std::iter::Peekable<L>,
    name: SmolStr,
    /// The feed handler (its state and counters stay readable).
    pub handler: FeedHandler,
    /// Decoded feed items by (event time, arrival): datagrams of different channels (or a
    /// recording's threads) need not arrive in event-time order.
    feed: BinaryHeap<Reverse<(Ts, u64, Slot)>>,
    slots: Vec<Option<FeedItem>>,
    free: Vec<usize>,
    arrival: u64,
    /// Newest send time decoded (the exchange's clock, as event times are).
    received: u64,
    record_no: u64,
    records_done: bool,
    error: Option<CaptureError>,
    inputs: Vec<Input>,
    rejects: Vec<FeedReject>,
    recovery: Option<Recovery>,
    refresh: Option<Refresh>,
    reorder_ns: i64,
    /// `name#chN/L` per channel and line, the feed lines' source.
    sources: BTreeMap<(u16, u8), SmolStr>,
    /// Channels with an open gap, and the send time it was seen at.
    open_gaps: BTreeMap<u16, u64>,
    /// Gaps recovered through [`Recovery`].
    pub recovered: u64,
    /// Channels recovered through [`Refresh`].
    pub refreshed: u64,
}

impl<R, L> HkexReplay<R, L>
where
    R: Iterator<Item = Result<Record, CaptureError>>,
    L: Iterator<Item = SourceLine>,
{
    /// Replays `records` (named `name` in dead letters) merged with `lines`.
    pub fn new(name: &str, records: R, lines: L) -> Self {
        HkexReplay {
            records,
            lines: lines.peekable(),
            name: name.into(),
            handler: FeedHandler::default(),
            feed: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            arrival: 0,
            received: 0,
            record_no: 0,
            records_done: false,
            error: None,
            inputs: Vec::new(),
            rejects: Vec::new(),
            recovery: None,
            refresh: None,
            reorder_ns: REORDER_NS,
            sources: BTreeMap::new(),
            open_gaps: BTreeMap::new(),
            recovered: 0,
            refreshed: 0,
        }
    }

    /// Recovers gaps through `recovery` (without it, a gap still open after [`GAP_WAIT_NS`] is
    /// given up: its messages are counted lost and the channel reads on).
    pub fn with_recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Sets the read-ahead (send time) used to order feed inputs; 0 passes every input on as soon
    /// as its datagram is decoded (a live feed).
    pub fn with_reorder(mut self, ns: i64) -> Self {
        self.reorder_ns = ns;
        self
    }

    /// Recovers gaps the retransmission service cannot fill from the refresh service.
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = Some(refresh);
        self
    }

    /// A refresh of `channel`: true once a snapshot was applied.
    fn try_refresh(&mut self, channel: u16, need: RefreshNeed) -> bool {
        let Some(hook) = self.refresh.as_mut() else { return false };
        let packets = match hook(channel, need) {
            Ok(p) => p,
            Err(reason) => {
                tracing::warn!(channel, %reason, "refresh failed");
                return false;
            }
        };
        self.handler.begin_refresh(channel);
        for p in packets {
            let done = self.handler.on_refresh_datagram(channel, &p, &mut self.inputs, &mut self.rejects);
            let send_time = p.get(8..16).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8")));
            self.take_outputs(channel, 0, send_time, &p);
            if let Some(last) = done {
                tracing::info!(channel, last, "channel recovered from the refresh service");
                self.refreshed += 1;
                return true;
            }
        }
        self.handler.cancel_refresh(channel, &mut self.inputs, &mut self.rejects);
        self.take_outputs(channel, 0, 0, &[]);
        false
    }

    /// Recovers (or gives up) the gaps open since before `now` (all of them at the end).
    fn close_gaps(&mut self, now: Option<u64>) {
        let due: Vec<u16> = self
            .open_gaps
            .iter()
            .filter(|(_, t)| now.is_none_or(|n| n >= t.saturating_add(GAP_WAIT_NS)))
            .map(|(c, _)| *c)
            .collect();
        for channel in due {
            self.open_gaps.remove(&channel);
            let mut attempts = 0;
            while let Some(gap) = self.handler.sequencers.get(&channel).and_then(|s| s.gap()) {
                attempts += 1;
                let got = match (&mut self.recovery, attempts <= 3) {
                    (Some(r), true) => r(channel, gap),
                    (Some(_), false) => Err("the gap stayed open after 3 recoveries".into()),
                    (None, _) => Err("no retransmission service".into()),
                };
                match got {
                    Ok(packets) => {
                        for p in packets {
                            self.handler.on_datagram(channel, &p, &mut self.inputs, &mut self.rejects);
                            let send_time = p.get(8..16).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8")));
                            self.take_outputs(channel, 0, send_time, &p);
                        }
                        self.recovered += 1;
                    }
                    Err(_) if self.try_refresh(channel, RefreshNeed::Gap { gap, after: self.reset_time(channel) }) => {}
                    Err(reason) => {
                        tracing::warn!(channel, from = gap.from, to = gap.to, %reason, "gap given up: messages lost");
                        self.handler.skip_gap(channel, &mut self.inputs, &mut self.rejects);
                        self.take_outputs(channel, 0, 0, &[]);
                    }
                }
            }
        }
    }

    /// When `channel` last applied a Sequence Reset (0: never).
    fn reset_time(&self, channel: u16) -> u64 {
        self.handler.sequencers.get(&channel).map_or(0, |s| s.reset_time())
    }

    /// Moves the handler's inputs and rejects of one datagram into the merge heap.
    fn take_outputs(&mut self, channel: u16, line: u8, send_time: u64, data: &[u8]) {
        let name = &self.name;
        let source = self
            .sources
            .entry((channel, line))
            .or_insert_with(|| format!("{name}#ch{channel}/{}", if line == 0 { 'A' } else { 'B' }).into())
            .clone();
        let inputs: Vec<Input> = self.inputs.drain(..).collect();
        for i in inputs {
            let ts = input_ts(&i, send_time);
            let line = SourceLine { source: source.clone(), position: self.record_no, raw: to_line(&i) };
            self.push(ts, FeedItem::Line(line));
        }
        // Messages that did not decode, then those that decoded but could not be used: dead
        // letters with the datagram (in hex, formatted once).
        let decode = self.rejects.drain(..).map(|reject| {
            let reason = match reject.seq {
                Some(seq) => format!("message {seq}: {}", reject.error),
                None => reject.error.to_string(),
            };
            ("omdc_decode", reason)
        });
        let problems: Vec<(&'static str, String)> = decode.chain(self.handler.take_problems()).collect();
        if problems.is_empty() {
            return;
        }
        let raw: String = data.iter().map(|b| format!("{b:02x}")).collect();
        for (code, reason) in problems {
            let item =
                FeedItem::Reject { source: source.clone(), position: self.record_no, raw: raw.clone(), code, reason };
            self.push(i64::try_from(send_time).unwrap_or(i64::MAX), item);
        }
    }

    /// Reading the capture failed (the replay ended there).
    pub fn take_error(&mut self) -> Option<CaptureError> {
        self.error.take()
    }

    fn push(&mut self, ts: Ts, item: FeedItem) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(item);
                i
            }
            None => {
                self.slots.push(Some(item));
                self.slots.len() - 1
            }
        };
        self.arrival += 1;
        self.feed.push(Reverse((ts, self.arrival, Slot(slot))));
    }

    fn pop(&mut self) -> Option<FeedItem> {
        let Reverse((_, _, Slot(i))) = self.feed.pop()?;
        self.free.push(i);
        self.slots[i].take()
    }

    /// Decodes records until the earliest item decoded is older than the newest packet's send
    /// time less [`REORDER_NS`] (or the capture ends).
    fn fill(&mut self) {
        loop {
            if self.records_done {
                return;
            }
            if let Some(Reverse((front, _, _))) = self.feed.peek() {
                if i64::try_from(self.received).unwrap_or(i64::MAX) >= front.saturating_add(self.reorder_ns) {
                    return;
                }
            }
            let r = match self.records.next() {
                None => {
                    self.records_done = true;
                    self.close_gaps(None);
                    return;
                }
                Some(Err(e)) => {
                    self.error = Some(e);
                    self.records_done = true;
                    return;
                }
                Some(Ok(r)) => r,
            };
            self.record_no += 1;
            let send_time =
                r.data.get(8..16).map_or(r.recv_time, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            self.received = self.received.max(send_time);
            if self
                .handler
                .on_line_datagram(r.channel, Some(r.line), &r.data, &mut self.inputs, &mut self.rejects)
                .is_some()
            {
                // A new gap waits its own time for the other line (an entry left by a gap the
                // other line closed would give it up early).
                self.open_gaps.insert(r.channel, send_time);
            } else if self.handler.sequencers.get(&r.channel).is_none_or(|s| s.gap().is_none()) {
                self.open_gaps.remove(&r.channel);
            }
            self.take_outputs(r.channel, r.line, send_time, &r.data);
            for (channel, after) in self.handler.take_resets() {
                // The reset cleared the channel's books: rebuilt from a snapshot taken after it.
                if self.refresh.is_some() && !self.try_refresh(channel, RefreshNeed::Reset { after }) {
                    tracing::warn!(channel, "no refresh after a sequence reset: books rebuilt from new messages only");
                }
            }
            if !self.open_gaps.is_empty() {
                self.close_gaps(Some(self.received));
            }
        }
    }
}

impl<R, L> Iterator for HkexReplay<R, L>
where
    R: Iterator<Item = Result<Record, CaptureError>>,
    L: Iterator<Item = SourceLine>,
{
    type Item = FeedItem;

    fn next(&mut self) -> Option<FeedItem> {
        self.fill();
        let feed_ts = self.feed.peek().map(|Reverse((t, _, _))| *t);
        let take_line = match (self.lines.peek(), feed_ts) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(ft)) => line_ts(&l.raw).is_none_or(|lt| lt <= ft),
        };
        if take_line {
            self.lines.next().map(FeedItem::Line)
        } else {
            self.pop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::PacketWriter;
    use super::super::wire::{Message, Price};
    use super::*;

    fn record(channel: u16, first_seq: u32, t: u64, code: u32) -> Record {
        let mut w = PacketWriter::new(first_seq);
        w.push(&Message::ClosingPrice { security_code: code, price: Price(1_000), trades: 1 }, t);
        Record { recv_time: 0, channel, line: 0, data: w.finish().remove(0) }
    }

    fn line(ts_secs: u64, n: u64) -> SourceLine {
        let ts = chrono::DateTime::from_timestamp(ts_secs as i64, 0).unwrap().to_rfc3339();
        SourceLine {
            source: "x".into(),
            position: n,
            raw: format!(r#"{{"type":"bust","exec_id":"E{n}","ts":"{ts}"}}"#),
        }
    }

    fn order(items: Vec<FeedItem>) -> Vec<String> {
        items
            .into_iter()
            .map(|i| match i {
                FeedItem::Line(l) if l.raw.contains("bust") => format!("json{}", l.position),
                FeedItem::Line(l) => l.raw.split("\"symbol\":\"").nth(1).unwrap()[..5].to_string(),
                FeedItem::Reject { .. } => "reject".into(),
            })
            .collect()
    }

    #[test]
    fn feed_items_come_in_event_time_order_within_the_read_ahead_and_json_lines_interleave() {
        let s = 1_000_000_000u64;
        // Channel 2's datagram at t=10 s was recorded after channel 1's at t=10.5 s.
        let records = vec![record(1, 1, 10 * s + s / 2, 1), record(2, 1, 10 * s, 2), record(1, 2, 12 * s, 3)];
        let lines = vec![line(10, 1), line(11, 2), line(13, 3)];
        let replay = HkexReplay::new("cap", records.into_iter().map(Ok), lines.into_iter());
        assert_eq!(order(replay.collect()), vec!["json1", "00002", "00001", "json2", "00003", "json3"]);
    }

    #[test]
    fn a_message_the_book_cannot_take_is_a_dead_letter_with_its_datagram() {
        use super::super::wire::BookSide;
        let mut w = PacketWriter::new(1);
        w.push(&Message::DeleteOrder { security_code: 700, order_id: 77, side: BookSide::Bid }, 1_000);
        let r = Record { recv_time: 0, channel: 4, line: 1, data: w.finish().remove(0) };
        let hex: String = r.data.iter().map(|b| format!("{b:02x}")).collect();
        let items: Vec<FeedItem> = HkexReplay::new("cap", vec![Ok(r)].into_iter(), std::iter::empty()).collect();
        match &items[..] {
            [FeedItem::Reject { source, position, raw, code, reason }] => {
                assert_eq!((source.as_str(), *position, *code), ("cap#ch4/B", 1, "omdc_book"));
                assert_eq!(raw, &hex);
                assert!(reason.contains("security 700") && reason.contains("order 77"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
