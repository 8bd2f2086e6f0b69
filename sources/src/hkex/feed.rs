//! Feed handling: sequence numbers, A/B line arbitration, gaps, and the market state kept from
//! the messages (instruments, books, trades, prices, trading status), turned into the same
//! contract inputs as JSON market data.
//!
//! - [`Sequencer`]: one per channel. Lines A and B carry the same sequence numbers (packed
//!   differently); per message, the first arrival is applied and the other is a duplicate.
//!   A message past the next expected number opens a gap: it is kept until the gap is filled
//!   (retransmission) or given up ([`Sequencer::skip_gap`], then recovery is the refresh
//!   service's). Sequence Reset (100) restarts the numbering; each line is followed across it:
//!   a line that has not yet delivered the reset still sends the old numbering (its messages
//!   are duplicates), a line past a reset not yet applied sends the new one (its messages wait
//!   for the reset).
//! - [`MarketState`]: what the messages say, per security; at the end of each packet it emits
//!   one quote per security whose best bid/offer changed (so a delete-then-add inside a packet
//!   never shows a transient best price), a `last` quote per trade, a close per closing price
//!   and an instrument per Security Definition.

use std::collections::BTreeMap;

use harbour_dataflows::model::{Cleared, Close, Instrument, Quote, StatusSubject, Symbol, TradingStatus, Ts};
use harbour_dataflows::validate::Input;
use rustc_hash::FxHashMap;

use super::book::{AggregatedBook, BookError, FullBook, Top};
use super::wire::{ascii, decode_message, DecodeError, Message, Packet, Price};

/// Counters of one feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Packets received (both lines, heartbeats included).
    pub packets: u64,
    /// Messages applied (each sequence number once).
    pub messages: u64,
    /// Messages dropped as already applied (the other line, or a retransmission overlap).
    pub duplicates: u64,
    /// Gaps opened.
    pub gaps: u64,
    /// Messages given up as lost (gaps skipped).
    pub lost: u64,
    /// Messages of types Harbour does not read.
    pub unknown: u64,
    /// Packets or messages that did not decode.
    pub decode_errors: u64,
    /// Book messages that did not apply (unknown order, level outside the book).
    pub book_errors: u64,
    /// Sequence resets.
    pub resets: u64,
    /// Of them, new numberings that came without their Sequence Reset (numbers gone back in a
    /// packet sent after every other): taken as one.
    pub implicit_resets: u64,
    /// Packets naming sequence numbers more than [`MAX_JUMP`] ahead, held until another packet
    /// confirmed the jump (a corrupted or forged one never is).
    pub suspect_jumps: u64,
    /// Channels recovered from the refresh service.
    pub refreshes: u64,
    /// Trades that do not set the last price (odd lot, off-exchange, overseas, late: [`sets_last`]).
    pub other_trades: u64,
}

/// A range of missing sequence numbers, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// First missing.
    pub from: u32,
    /// Last missing.
    pub to: u32,
}

/// Sequence tracking of one channel.
#[derive(Debug, Default)]
pub struct Sequencer {
    next: Option<u32>,
    /// While a refresh runs, every real-time message is kept, none applied.
    holding: bool,
    /// Messages past a gap, by sequence number (owned copies of their bytes).
    pending: BTreeMap<u32, Vec<u8>>,
    /// Sequence Resets applied: the numbering's generation.
    generation: u32,
    /// Per feed line (0 = A, 1 = B): the Sequence Resets it delivered. Behind `generation`, the
    /// line still sends the old numbering; one ahead, it sends the numbering of a reset not yet
    /// applied (it came behind a gap).
    lines: BTreeMap<u8, u32>,
    /// Messages of a line one reset ahead, by sequence number in the new numbering: they join
    /// `pending` when the reset is applied.
    ahead: BTreeMap<u32, Vec<u8>>,
    /// Messages (and heartbeat markers, empty) far ahead of the next expected ([`MAX_JUMP`]), by
    /// sequence number, with the packet that brought them: held apart, opening no gap, until a
    /// packet of its own confirms the jump. One corrupted or forged datagram naming a number far
    /// ahead would otherwise open a gap no service can fill, and skipping it would drop every
    /// real message after it as a duplicate.
    suspect: BTreeMap<u32, (u64, Vec<u8>)>,
    /// Packets offered (tells a suspect's confirmation from its own packet).
    packets: u64,
    /// The highest sequence number received in the numbering applied.
    highest: Option<u32>,
    /// The latest packet send time offered, and what it was when the last reset was applied: a
    /// line still behind that reset whose packet was sent after it has moved on without its copy
    /// of the reset reaching us (both lines are stamped alike; the old numbering was sent before).
    last_sent: u64,
    reset_sent: u64,
}

impl Sequencer {
    /// Whether `seq` (a message, or with empty `bytes` a heartbeat's marker) is far ahead of
    /// `next` and held as a suspect (true), or goes on (false: near, or the jump confirmed by
    /// another packet, whose suspects then join the pending messages).
    fn held_as_suspect(&mut self, seq: u32, next: u32, bytes: &[u8], stats: &mut FeedStats) -> bool {
        if seq.wrapping_sub(next) <= MAX_JUMP
            || self.pending.range(seq.saturating_sub(MAX_JUMP)..=seq.saturating_add(MAX_JUMP)).next().is_some()
        {
            // Near, or near messages already waiting (the jump was confirmed).
            return false;
        }
        let packet = self.packets;
        let near = |s: u32| seq.wrapping_sub(s) <= MAX_JUMP || s.wrapping_sub(seq) <= MAX_JUMP;
        if self.suspect.iter().any(|(s, (p, _))| *p != packet && near(*s)) {
            // A second packet out there: a real jump (both lines lost that much, or one line
            // carries on past it).
            let confirmed: Vec<u32> = self.suspect.keys().copied().filter(|s| near(*s)).collect();
            for s in confirmed {
                if let Some((_, b)) = self.suspect.remove(&s) {
                    self.pending.entry(s).or_insert(b);
                }
            }
            return false;
        }
        if !self.suspect.iter().any(|(_, (p, _))| *p == packet) {
            stats.suspect_jumps += 1;
        }
        if self.suspect.len() >= MAX_SUSPECTS {
            self.suspect.pop_first();
        }
        self.suspect.insert(seq, (packet, bytes.to_vec()));
        true
    }

    /// The next sequence number expected (`None` before the first message).
    pub fn next(&self) -> Option<u32> {
        self.next
    }

    /// The latest send time seen when the last Sequence Reset was applied (0 without one): a
    /// snapshot of the current numbering begins after it.
    pub fn reset_time(&self) -> u64 {
        if self.generation == 0 {
            0
        } else {
            self.reset_sent
        }
    }

    /// Starts expecting `seq` (after a refresh, or to begin mid-stream).
    pub fn expect(&mut self, seq: u32) {
        self.next = Some(seq);
        self.pending.retain(|s, _| *s >= seq);
    }

    /// The first open gap, if any.
    pub fn gap(&self) -> Option<Gap> {
        let next = self.next?;
        self.pending
            .keys()
            .next()
            .filter(|first| **first != next)
            .map(|first| Gap { from: next, to: first.wrapping_sub(1) })
    }

    /// Messages waiting behind a gap.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Offers a packet's messages; every message that is next in sequence (and those waiting
    /// behind it) goes to `apply` in order. A heartbeat naming a number past what arrived opens a
    /// gap. Returns a gap this packet opened. `line` is the feed line it came on (0 = A, 1 = B),
    /// followed across Sequence Resets; `None` for a packet in the current numbering whatever
    /// its line (a retransmission, a single-line feed).
    pub fn offer(
        &mut self,
        packet: &Packet<'_>,
        line: Option<u8>,
        stats: &mut FeedStats,
        apply: &mut impl FnMut(u32, Result<Message<'_>, DecodeError>),
    ) -> Option<Gap> {
        let had_gap = self.gap();
        let (generation, sent) = (self.generation, packet.header.send_time);
        // Sent after everything seen so far (both lines stamp a packet alike: a copy never is).
        let newest = self.last_sent > 0 && sent > self.last_sent;
        self.last_sent = self.last_sent.max(sent);
        // The line's numbering, moved on by each reset it delivers (written back at the end).
        let mut line_at = None;
        if let Some(l) = line {
            // A line first seen now: in the numbering of its send time.
            let first = if generation > 0 && sent <= self.reset_sent { generation - 1 } else { generation };
            let at = self.lines.entry(l).or_insert(first);
            if *at < generation && sent > self.reset_sent {
                *at = generation;
            }
            if packet.is_heartbeat() && *at != generation {
                // A heartbeat in another numbering than the one applied says nothing of it.
                return None;
            }
            line_at = Some(*at);
        }
        self.packets = self.packets.wrapping_add(1);
        if let Some(next) = self.next {
            if !self.suspect.is_empty() {
                // Suspects the stream has reached are moot.
                self.suspect.retain(|s, _| seq_after(*s, next));
            }
        }
        if packet.is_heartbeat() {
            let last = packet.header.seq_num;
            if let Some(next) = self.next {
                if seq_after(last, next.wrapping_sub(1))
                    && !self.pending.contains_key(&last)
                    && !self.held_as_suspect(last.wrapping_add(1), next, &[], stats)
                {
                    // Messages up to `last` were sent and not seen: wait for them (a marker entry
                    // keeps the gap open until they arrive or it is skipped).
                    self.pending.entry(last.wrapping_add(1)).or_default();
                }
            }
            return self.new_gap(had_gap, stats);
        }
        if let (true, false, Some(highest)) = (newest, self.holding, self.highest) {
            let first = packet.header.seq_num;
            // (Behind the highest number received, not merely behind the next expected: a
            // refresh moves the next expected past what has arrived.)
            if seq_after(highest, first) && line_at.is_none_or(|a| a == self.generation) {
                // Numbers gone back in a packet sent after every other, in the numbering applied:
                // a new numbering whose Sequence Reset never arrived (lost on every line). Taken
                // as that reset: the channel's caches cleared and a refresh asked for, instead of
                // every new message counted a duplicate for the rest of the day.
                stats.implicit_resets += 1;
                self.apply_one(first, Ok(Message::SequenceReset { new_seq_no: first }), stats, apply);
                if let Some(a) = line_at.as_mut() {
                    *a = self.generation;
                }
            }
        }
        // The packet's highest number in the numbering applied (a reset message aside).
        let mut packet_high: Option<u32> = None;
        for (seq, m) in packet.messages() {
            let at = line_at.unwrap_or(self.generation);
            if at == self.generation && !matches!(m, Ok(Message::SequenceReset { .. })) {
                packet_high = Some(seq);
            }
            if let (Some(l), Ok(Message::SequenceReset { .. })) = (line_at.as_mut(), &m) {
                // From the message after it, this line sends the reset's numbering.
                *l += 1;
            }
            if at < self.generation {
                // The old numbering (the reset came first on the other line): already applied,
                // or given up by the reset.
                stats.duplicates += 1;
                continue;
            }
            if at > self.generation {
                // Past a reset not yet applied: kept for after it (two resets ahead: given up,
                // the other line or a refresh brings it).
                if at == self.generation + 1 {
                    self.ahead.insert(seq, m_offset(packet, seq).to_vec());
                } else {
                    stats.lost += 1;
                }
                continue;
            }
            let next = *self.next.get_or_insert(seq);
            if self.holding && !seq_after(next, seq) {
                if self.pending.get(&seq).is_some_and(|b| !b.is_empty()) {
                    stats.duplicates += 1;
                } else {
                    self.pending.insert(seq, m_offset(packet, seq).to_vec());
                }
            } else if seq == next {
                self.pending.remove(&seq); // a heartbeat's marker, or an early copy
                self.next = Some(next.wrapping_add(1));
                stats.messages += 1;
                self.apply_one(seq, m, stats, apply);
                self.drain(stats, apply);
            } else if seq_after(seq, next) {
                if self.pending.contains_key(&seq) && !self.pending[&seq].is_empty() {
                    stats.duplicates += 1;
                } else if self.held_as_suspect(seq, next, m_offset(packet, seq), stats) {
                    continue;
                } else {
                    let start = m_offset(packet, seq);
                    self.pending.insert(seq, start.to_vec());
                }
            } else {
                stats.duplicates += 1;
            }
        }
        if let (true, Some(last)) = (self.generation == generation, packet_high) {
            // (Not from a packet that applied a reset: its numbers span two numberings.)
            if self.highest.is_none_or(|h| seq_after(last, h)) {
                self.highest = Some(last);
            }
        }
        if let (Some(l), Some(at)) = (line, line_at) {
            self.lines.insert(l, at);
        }
        if self.generation != generation {
            self.reset_sent = self.last_sent;
        }
        self.new_gap(had_gap, stats)
    }

    fn new_gap(&self, had: Option<Gap>, stats: &mut FeedStats) -> Option<Gap> {
        let now = self.gap();
        match (had, now) {
            (None, Some(g)) => {
                stats.gaps += 1;
                Some(g)
            }
            _ => None,
        }
    }

    fn apply_one(
        &mut self,
        seq: u32,
        m: Result<Message<'_>, DecodeError>,
        stats: &mut FeedStats,
        apply: &mut impl FnMut(u32, Result<Message<'_>, DecodeError>),
    ) {
        if let Ok(Message::SequenceReset { new_seq_no }) = m {
            stats.resets += 1;
            self.generation += 1;
            self.highest = None;
            self.next = Some(new_seq_no);
            // What waited in the old numbering is superseded; what a line already sent in the
            // new one waits in it.
            self.pending = std::mem::take(&mut self.ahead);
            self.pending.retain(|s, _| !seq_after(new_seq_no, *s));
        }
        apply(seq, m);
    }

    fn drain(&mut self, stats: &mut FeedStats, apply: &mut impl FnMut(u32, Result<Message<'_>, DecodeError>)) {
        while let Some(next) = self.next {
            let Some(bytes) = self.pending.remove(&next) else { break };
            if bytes.is_empty() {
                // A heartbeat's marker: the gap it named is closed.
                continue;
            }
            self.next = Some(next.wrapping_add(1));
            stats.messages += 1;
            let m = decode_message(&bytes, 0);
            self.apply_one(next, m, stats, apply);
        }
    }

    /// Keeps every real-time message from now on, applying none (a refresh is running).
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Ends a refresh that brought the state to `last_seq`: kept messages up to it are dropped,
    /// the rest applied in order.
    pub fn resume_after(
        &mut self,
        last_seq: u32,
        stats: &mut FeedStats,
        apply: &mut impl FnMut(u32, Result<Message<'_>, DecodeError>),
    ) {
        self.holding = false;
        let next = last_seq.wrapping_add(1);
        self.next = Some(next);
        self.pending.retain(|s, _| !seq_after(next, *s));
        self.drain(stats, apply);
    }

    /// Gives up the first gap: its messages are counted lost and those waiting behind it are
    /// applied. (The caller then recovers state from the refresh service.)
    pub fn skip_gap(
        &mut self,
        stats: &mut FeedStats,
        apply: &mut impl FnMut(u32, Result<Message<'_>, DecodeError>),
    ) -> Option<Gap> {
        let g = self.gap()?;
        stats.lost += u64::from(g.to.wrapping_sub(g.from)) + 1;
        self.next = Some(g.to.wrapping_add(1));
        self.drain(stats, apply);
        Some(g)
    }
}

/// Numbers further ahead of the next expected than this (the retransmission service's window)
/// are held as suspects until another packet confirms them ([`Sequencer`]).
pub const MAX_JUMP: u32 = 50_000;

/// Suspect messages held at most (the oldest go first).
const MAX_SUSPECTS: usize = 4_096;

/// `a` comes after `b` in sequence (wrapping).
fn seq_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// The bytes of the message with sequence number `seq` in a checked packet.
fn m_offset<'a>(packet: &Packet<'a>, seq: u32) -> &'a [u8] {
    let bytes = packet.bytes();
    let mut offset = super::wire::PACKET_HEADER;
    let mut s = packet.header.seq_num;
    loop {
        let size = usize::from(u16::from_le_bytes([bytes[offset], bytes[offset + 1]]));
        if s == seq {
            return &bytes[offset..offset + size];
        }
        offset += size;
        s = s.wrapping_add(1);
    }
}

/// Trades kept per security for Trade Cancel (memory stays bounded over a day; a cancel of an
/// older trade no longer moves the last price).
pub const TRADES_KEPT: usize = 256;

/// The trade id of a last price taken from a refresh snapshot's Statistics.
const SNAPSHOT_TRADE: u32 = u32::MAX;

/// One trade, kept so a Trade Cancel can retract it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TradeRecord {
    id: u32,
    price: Price,
    time: u64,
    cancelled: bool,
}

/// Trading status of a security.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Suspension {
    /// Trading (or no status seen).
    #[default]
    Trading,
    /// Halted (SuspensionIndicator 2).
    Halted,
}

/// What the feed says of one security.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Lot size, currency and the rest, once the Security Definition arrived.
    pub instrument: Option<Instrument>,
    /// SpreadTableCode.
    pub spread_table: String,
    /// Previous closing price.
    pub previous_close: Option<Price>,
    /// Full order book (FullTick).
    pub full: FullBook,
    /// Aggregated book (Standard/Premium).
    pub aggregated: AggregatedBook,
    /// Which book the feed maintains (the one last updated).
    pub uses_full_book: bool,
    /// The latest trades (at most [`TRADES_KEPT`]), for cancels.
    trades: std::collections::VecDeque<TradeRecord>,
    /// Nominal price.
    pub nominal: Option<Price>,
    /// Closing price.
    pub close: Option<Price>,
    /// Halted or trading (`None` until a Security Status arrived).
    pub suspension: Option<Suspension>,
    /// Channel its messages come on.
    pub channel: u16,
    /// The Security Definition as received (for snapshots).
    definition: Vec<u8>,
    top: Top,
    touched: bool,
}

impl Security {
    /// Best bid and offer of the book the feed maintains.
    pub fn top(&self) -> Top {
        if self.uses_full_book {
            self.full.top()
        } else {
            self.aggregated.top()
        }
    }

    /// Last trade not cancelled.
    pub fn last_trade(&self) -> Option<Price> {
        self.trades.iter().rev().find(|t| !t.cancelled).map(|t| t.price)
    }
}

/// Whether a trade of this TrdType (../shared/HKEX.md §1) is a board trade that sets the last
/// price: automatch (0), automatch internalized (100) and auction (103). Late (4), off-exchange
/// (22, 101), odd-lot (102) and overseas (104) trades are not.
pub fn sets_last(trade_type: i16) -> bool {
    matches!(trade_type, 0 | 100 | 103)
}

/// Trading session of a market (message 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// TradingSessionSubID.
    pub sub_id: u8,
    /// TradingSesStatus.
    pub status: u8,
    /// StartDateTime.
    pub start: u64,
}

/// The market state kept from the messages, and the inputs it gives the pipeline.
#[derive(Debug, Default)]
pub struct MarketState {
    securities: FxHashMap<u32, Security>,
    sessions: BTreeMap<String, Session>,
    touched: Vec<u32>,
    send_time: u64,
    channel: u16,
    /// Channels reset since [`FeedHandler::take_resets`] last looked, with the reset's send time.
    resets: Vec<(u16, u64)>,
    /// Messages that decoded but could not be used (a book message naming an order or level the
    /// book does not have, an unknown suspension indicator, a negative closing price), with a
    /// reason code: dead letters ([`FeedHandler::take_problems`]).
    problems: Vec<(&'static str, String)>,
    /// Counters.
    pub stats: FeedStats,
}

fn ts(ns: u64) -> Ts {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

impl MarketState {
    /// One security's state.
    pub fn security(&self, code: u32) -> Option<&Security> {
        self.securities.get(&code)
    }

    /// Securities seen.
    pub fn securities(&self) -> impl Iterator<Item = (&u32, &Security)> {
        self.securities.iter()
    }

    /// Trading session per market code.
    pub fn sessions(&self) -> &BTreeMap<String, Session> {
        &self.sessions
    }

    /// The security a book message is for, marked as touched in this packet.
    fn book(&mut self, code: u32, full: bool) -> &mut Security {
        let s = self.securities.entry(code).or_default();
        s.uses_full_book = full;
        s.channel = self.channel;
        if !s.touched {
            s.touched = true;
            self.touched.push(code);
        }
        s
    }

    fn count(&mut self, code: u32, r: Result<(), BookError>) {
        if let Err(e) = r {
            self.stats.book_errors += 1;
            self.problems.push(("omdc_book", format!("security {code}: {e}")));
        }
    }

    /// A refresh snapshot's Statistics: its LastPrice (0: none) is the security's last price as
    /// of the snapshot. Trades the feed lost, or dropped with the messages the snapshot covers,
    /// would otherwise leave an older last price as the mark until the next board trade.
    fn snapshot_last(&mut self, code: u32, last: Price, out: &mut Vec<Input>) {
        if last.0 <= 0 {
            return;
        }
        let send_time = self.send_time;
        let s = self.securities.entry(code).or_default();
        if s.last_trade() == Some(last) {
            return;
        }
        if s.trades.len() == TRADES_KEPT {
            s.trades.pop_front();
        }
        // Not a trade the feed sent: no id a Trade Cancel would name.
        s.trades.push_back(TradeRecord { id: SNAPSHOT_TRADE, price: last, time: send_time, cancelled: false });
        out.push(Input::Quote(Quote {
            symbol: Symbol(code),
            ts: ts(send_time),
            bid: None,
            ask: None,
            last: Some(last.to_decimal()),
            cleared: Cleared::default(),
            seq: 0,
        }));
    }

    /// Starts a packet sent at `send_time` on `channel`.
    pub fn begin_packet(&mut self, send_time: u64, channel: u16) {
        self.send_time = send_time;
        self.channel = channel;
    }

    /// Empties the books of every security of `channel` (before a refresh snapshot).
    pub fn clear_channel(&mut self, channel: u16) {
        for (code, s) in self.securities.iter_mut().filter(|(_, s)| s.channel == channel) {
            s.full.clear();
            s.aggregated = AggregatedBook::default();
            if !s.touched {
                s.touched = true;
                self.touched.push(*code);
            }
        }
    }

    /// The state of `channel`'s securities as refresh messages: definitions, books (53 New
    /// entries per level, or 30 Add Order per resting order), nominal and closing prices.
    pub fn snapshot(&self, channel: u16) -> Vec<Vec<u8>> {
        use super::encode::encode_message;
        use super::wire::{action, BookEntries, BookEntry, BookSide};
        let mut codes: Vec<u32> =
            self.securities.iter().filter(|(_, s)| s.channel == channel).map(|(c, _)| *c).collect();
        codes.sort_unstable();
        let mut out = Vec::new();
        let mut put = |m: &Message<'_>| {
            let mut b = Vec::new();
            encode_message(m, &mut b);
            out.push(b);
        };
        for code in codes {
            let s = &self.securities[&code];
            if !s.definition.is_empty() {
                if let Ok(m) = decode_message(&s.definition, 0) {
                    put(&m);
                }
            }
            if s.uses_full_book {
                for (id, o) in s.full.orders() {
                    put(&Message::AddOrder {
                        security_code: code,
                        order_id: id,
                        price: Price(o.0),
                        quantity: o.1,
                        side: if o.2 { BookSide::Bid } else { BookSide::Offer },
                        order_type: b'2',
                        position: 0,
                    });
                }
            } else {
                let mut entries = Vec::new();
                for side in [BookSide::Bid, BookSide::Offer] {
                    for (i, l) in s.aggregated.levels(side).iter().enumerate() {
                        entries.push(BookEntry {
                            quantity: l.quantity,
                            price: l.price,
                            orders: l.orders,
                            side,
                            level: i as u8 + 1,
                            action: action::NEW,
                        });
                    }
                }
                if !entries.is_empty() {
                    let bytes = BookEntries::encode(&entries);
                    let entries = BookEntries::from_bytes(&bytes).expect("at most 20 entries");
                    put(&Message::AggregateOrderBookUpdate { security_code: code, entries });
                }
            }
            if let Some(state) = s.suspension {
                let suspension = if state == Suspension::Halted { 2 } else { 3 };
                put(&Message::SecurityStatus { security_code: code, suspension });
            }
            if let Some(price) = s.nominal {
                put(&Message::NominalPrice { security_code: code, price });
            }
            if let Some(price) = s.close {
                put(&Message::ClosingPrice { security_code: code, price, trades: 0 });
            }
            if let Some(last) = s.last_trade() {
                // The refresh service's Statistics: its LastPrice is what a refreshed feed marks.
                put(&Message::Statistics {
                    security_code: code,
                    shares_traded: 0,
                    turnover: None,
                    high: Price(0),
                    low: Price(0),
                    last,
                    vwap: Price(0),
                    short_sell_shares: 0,
                    short_sell_turnover: None,
                });
            }
        }
        // Market sessions are market-wide: every channel's snapshot carries them.
        for (market, s) in &self.sessions {
            let code = super::encode::market_code(market);
            put(&Message::TradingSessionStatus {
                market_code: &code,
                sub_id: s.sub_id,
                status: s.status,
                control_flag: 0,
                start: s.start,
                end: 0,
            });
        }
        out
    }

    /// Applies one message; inputs that do not wait for the packet's end go to `out`.
    pub fn apply(&mut self, m: &Message<'_>, out: &mut Vec<Input>) {
        match *m {
            Message::SecurityDefinition(d) => {
                let code = d.security_code();
                let i = Instrument {
                    symbol: Symbol(code),
                    name: ascii(d.short_name()).to_owned(),
                    lot_size: i64::from(d.lot_size()),
                    currency: ascii(d.currency_code()).to_owned(),
                    sector: None,
                    stamp_duty: d.stamp_duty(),
                    spread_table: Some(ascii(d.spread_table_code()).trim().into())
                        .filter(|c: &smol_str::SmolStr| !c.is_empty()),
                };
                let s = self.securities.entry(code).or_default();
                s.channel = self.channel;
                s.definition = d.bytes().to_vec();
                s.spread_table = ascii(d.spread_table_code()).to_owned();
                s.previous_close = Some(d.previous_closing_price()).filter(|p| p.0 > 0);
                s.instrument = Some(i.clone());
                out.push(Input::Instrument(i));
            }
            Message::TradingSessionStatus { market_code, sub_id, status, start, .. } => {
                let market = ascii(market_code).trim().to_owned();
                let held = self.sessions.insert(market.clone(), Session { sub_id, status, start });
                // A repeat (a refresh re-sends the state) is not a change.
                if held.is_none_or(|h| (h.sub_id, h.status) != (sub_id, status)) {
                    out.push(Input::Status(TradingStatus {
                        ts: ts(self.send_time),
                        subject: StatusSubject::Market(market.into()),
                        status: super::day::market_status_name(status).into(),
                        session: Some(sub_id),
                    }));
                }
            }
            Message::SecurityStatus { security_code, suspension } if !matches!(suspension, 2 | 3) => {
                // HKEX.md §1: 2 halt, 3 resume; another value says nothing known: counted and a
                // dead letter, the security's status kept.
                self.stats.unknown += 1;
                self.problems.push((
                    "omdc_status",
                    format!("security {security_code}: SuspensionIndicator {suspension} is neither 2 nor 3"),
                ));
            }
            Message::SecurityStatus { security_code, suspension } => {
                let state = match suspension {
                    2 => Suspension::Halted,
                    _ => Suspension::Trading,
                };
                let held = self.securities.entry(security_code).or_default().suspension.replace(state);
                // A repeat (a refresh re-sends the state) is not a change.
                if held != Some(state) {
                    out.push(Input::Status(TradingStatus {
                        ts: ts(self.send_time),
                        subject: StatusSubject::Security(Symbol(security_code)),
                        status: if state == Suspension::Halted { "halted" } else { "trading" }.into(),
                        session: None,
                    }));
                }
            }
            Message::AddOrder { security_code, order_id, price, quantity, side, .. } => {
                let s = self.book(security_code, true);
                let r = s.full.add(order_id, side, price, quantity);
                self.count(security_code, r);
            }
            Message::ModifyOrder { security_code, order_id, quantity, .. } => {
                let s = self.book(security_code, true);
                let r = s.full.modify(order_id, quantity);
                self.count(security_code, r);
            }
            Message::DeleteOrder { security_code, order_id, .. } => {
                let s = self.book(security_code, true);
                let r = s.full.delete(order_id);
                self.count(security_code, r);
            }
            Message::AggregateOrderBookUpdate { security_code, entries } => {
                let s = self.book(security_code, false);
                let mut r = Ok(());
                for e in entries.iter() {
                    if let Err(e) = s.aggregated.apply(&e) {
                        r = Err(e);
                    }
                }
                self.count(security_code, r);
            }
            Message::Trade { trade_type, .. } if !sets_last(trade_type) => {
                // Odd lots, off-exchange, overseas and late trades do not make the board's
                // last price (the default mark): counted, not quoted.
                self.stats.other_trades += 1;
            }
            Message::Trade { security_code, trade_id, price, trade_time, .. } => {
                let s = self.securities.entry(security_code).or_default();
                if s.trades.len() == TRADES_KEPT {
                    s.trades.pop_front();
                }
                s.trades.push_back(TradeRecord { id: trade_id, price, time: trade_time, cancelled: false });
                out.push(Input::Quote(Quote {
                    symbol: Symbol(security_code),
                    ts: ts(trade_time),
                    bid: None,
                    ask: None,
                    last: Some(price.to_decimal()),
                    cleared: Cleared::default(),
                    seq: 0,
                }));
            }
            Message::TradeCancel { security_code, trade_id } => {
                let s = self.securities.entry(security_code).or_default();
                let before = s.last_trade();
                if let Some(t) = s.trades.iter_mut().rev().find(|t| t.id == trade_id && !t.cancelled) {
                    t.cancelled = true;
                }
                let after = s.last_trade();
                // The last price reverts to the trade before the cancelled one, as of the cancel,
                // or is emptied when the cancelled trade was the only one kept.
                if before.is_some() && after != before {
                    out.push(Input::Quote(Quote {
                        symbol: Symbol(security_code),
                        ts: ts(self.send_time),
                        bid: None,
                        ask: None,
                        last: after.map(Price::to_decimal),
                        cleared: Cleared { last: after.is_none(), ..Cleared::default() },
                        seq: 0,
                    }));
                }
            }
            Message::TradeTicker { security_code, ticker_id, price, trade_time, cancel, trade_type, .. } => {
                // The Standard feed's trades: same handling as Trade/Trade Cancel by ticker id.
                if cancel {
                    self.apply(&Message::TradeCancel { security_code, trade_id: ticker_id }, out);
                } else {
                    let m = Message::Trade {
                        security_code,
                        trade_id: ticker_id,
                        price,
                        quantity: 0,
                        trade_type,
                        trade_time,
                    };
                    self.apply(&m, out);
                }
            }
            Message::NominalPrice { security_code, price } => {
                self.securities.entry(security_code).or_default().nominal = Some(price);
            }
            Message::ClosingPrice { security_code, price, .. } => {
                if price.0 < 0 {
                    // (0 is "no closing price".)
                    self.problems.push(("omdc_price", format!("security {security_code}: closing price {}", price.0)));
                }
                if price.0 > 0 {
                    self.securities.entry(security_code).or_default().close = Some(price);
                    out.push(Input::Close(Close {
                        symbol: Symbol(security_code),
                        ts: ts(self.send_time),
                        price: price.to_decimal(),
                        seq: 0,
                    }));
                }
            }
            Message::SequenceReset { .. } => {
                // The channel's caches are cleared (not other channels'), and its securities
                // quoted again as they now stand; the refresh service rebuilds the books
                // (the caller learns of the reset through `FeedHandler::take_resets`).
                self.clear_channel(self.channel);
                self.resets.push((self.channel, self.send_time));
            }
            Message::Unknown { .. } => self.stats.unknown += 1,
            Message::Statistics { .. }
            | Message::Logon { .. }
            | Message::LogonResponse { .. }
            | Message::RetransmissionRequest { .. }
            | Message::RetransmissionResponse { .. }
            | Message::RefreshComplete { .. } => {}
        }
    }

    /// Ends the packet: a quote for each security whose best bid or offer price changed, with
    /// both sides as they now stand (a side that emptied is sent as emptied).
    pub fn end_packet(&mut self, out: &mut Vec<Input>) {
        self.touched.sort_unstable();
        for code in self.touched.drain(..) {
            let s = self.securities.get_mut(&code).expect("touched security");
            s.touched = false;
            let top = s.top();
            let price = |t: &Top| (t.bid.map(|l| l.price), t.ask.map(|l| l.price));
            let (now, was) = (price(&top), price(&s.top));
            if now != was {
                out.push(Input::Quote(Quote {
                    symbol: Symbol(code),
                    ts: ts(self.send_time),
                    bid: now.0.map(Price::to_decimal),
                    ask: now.1.map(Price::to_decimal),
                    last: None,
                    cleared: Cleared {
                        bid: now.0.is_none() && was.0.is_some(),
                        ask: now.1.is_none() && was.1.is_some(),
                        last: false,
                    },
                    seq: 0,
                }));
            }
            s.top = top;
        }
    }
}

/// A channel's sequencer and the market state together: packets in, contract inputs out.
#[derive(Debug, Default)]
pub struct FeedHandler {
    /// Per channel.
    pub sequencers: BTreeMap<u16, Sequencer>,
    /// What the messages say.
    pub state: MarketState,
    /// Refreshes running, per channel: `None` until the first Refresh Complete, then the
    /// snapshot's messages.
    refresh: BTreeMap<u16, Option<Vec<Vec<u8>>>>,
}

/// Packs refresh messages into packets, each snapshot followed by Refresh Complete (for tests and
/// the local services; the exchange sends the real refresh channel).
pub fn refresh_packets(snapshot: &[Vec<u8>], last_seq: u32, first_seq: u32) -> Vec<Vec<u8>> {
    refresh_packets_at(snapshot, last_seq, first_seq, 0)
}

/// As [`refresh_packets`], sent at `send_time` (what a status re-sent by a refresh is stamped with).
pub fn refresh_packets_at(snapshot: &[Vec<u8>], last_seq: u32, first_seq: u32, send_time: u64) -> Vec<Vec<u8>> {
    let mut w = super::encode::PacketWriter::new(first_seq);
    for m in snapshot {
        if let Ok(m) = decode_message(m, 0) {
            w.push(&m, send_time);
        }
    }
    w.push(&Message::RefreshComplete { last_seq_num: last_seq }, send_time);
    w.finish()
}

/// A packet or message that could not be used, with where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedReject {
    /// Channel.
    pub channel: u16,
    /// Sequence number of the message (of the packet, for a packet error).
    pub seq: Option<u32>,
    /// The error.
    pub error: DecodeError,
}

impl FeedHandler {
    /// One datagram of `channel` in its current numbering (a retransmission, a single-line
    /// feed); inputs to `out`, undecodable parts to `rejects`. Returns a gap the packet opened.
    pub fn on_datagram(
        &mut self,
        channel: u16,
        bytes: &[u8],
        out: &mut Vec<Input>,
        rejects: &mut Vec<FeedReject>,
    ) -> Option<Gap> {
        self.on_line_datagram(channel, None, bytes, out, rejects)
    }

    /// One datagram of `channel` from feed line `line` (0 = A, 1 = B; `None` as in
    /// [`FeedHandler::on_datagram`]): each line is followed across Sequence Resets.
    pub fn on_line_datagram(
        &mut self,
        channel: u16,
        line: Option<u8>,
        bytes: &[u8],
        out: &mut Vec<Input>,
        rejects: &mut Vec<FeedReject>,
    ) -> Option<Gap> {
        let state = &mut self.state;
        state.stats.packets += 1;
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(error) => {
                state.stats.decode_errors += 1;
                rejects.push(FeedReject { channel, seq: None, error });
                return None;
            }
        };
        state.begin_packet(packet.header.send_time, channel);
        let seq = self.sequencers.entry(channel).or_default();
        let gap =
            sequenced(state, seq, channel, out, rejects, |seq, stats, apply| seq.offer(&packet, line, stats, apply));
        state.end_packet(out);
        gap
    }

    /// Starts recovering `channel` from the refresh service: real-time messages are kept, not
    /// applied, until a whole snapshot arrived ([`FeedHandler::on_refresh_datagram`]).
    pub fn begin_refresh(&mut self, channel: u16) {
        self.sequencers.entry(channel).or_default().hold();
        self.refresh.insert(channel, None);
    }

    /// Abandons a refresh of `channel` (the kept messages wait behind their gap again).
    pub fn cancel_refresh(&mut self, channel: u16, out: &mut Vec<Input>, rejects: &mut Vec<FeedReject>) {
        if self.refresh.remove(&channel).is_none() {
            return;
        }
        let state = &mut self.state;
        if let Some(seq) = self.sequencers.get_mut(&channel) {
            seq.holding = false;
            sequenced(state, seq, channel, out, rejects, |seq, stats, apply| seq.drain(stats, apply));
        }
        state.end_packet(out);
    }

    /// The channels reset since the last call, each with the send time of the packet that
    /// applied its reset: each needs a refresh snapshot taken after it (HKEX: "resync from the
    /// refresh service").
    pub fn take_resets(&mut self) -> Vec<(u16, u64)> {
        std::mem::take(&mut self.state.resets)
    }

    /// Messages that decoded but could not be used since the last call: (reason code, reason).
    pub fn take_problems(&mut self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut self.state.problems)
    }

    /// Whether a refresh of `channel` is running.
    pub fn refreshing(&self, channel: u16) -> bool {
        self.refresh.contains_key(&channel)
    }

    /// A datagram of `channel`'s refresh service. Messages before the first Refresh Complete are
    /// discarded (a snapshot already under way); those up to the next one are the snapshot: the
    /// channel's books are cleared, the snapshot applied, kept real-time messages up to its
    /// LastSeqNum dropped and the rest applied. Returns that LastSeqNum once done.
    pub fn on_refresh_datagram(
        &mut self,
        channel: u16,
        bytes: &[u8],
        out: &mut Vec<Input>,
        rejects: &mut Vec<FeedReject>,
    ) -> Option<u32> {
        let collected = self.refresh.get_mut(&channel)?;
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(error) => {
                self.state.stats.decode_errors += 1;
                rejects.push(FeedReject { channel, seq: None, error });
                return None;
            }
        };
        let mut done = None;
        for (seq, m) in packet.messages() {
            let m = match m {
                Ok(m) => m,
                Err(error) => {
                    // Refused like a real-time message; a snapshot that lacks it would leave a
                    // book short: the next whole snapshot is taken instead.
                    self.state.stats.decode_errors += 1;
                    rejects.push(FeedReject { channel, seq: Some(seq), error });
                    if collected.is_some() {
                        *collected = None;
                    }
                    continue;
                }
            };
            match (m, collected.as_mut()) {
                (Message::RefreshComplete { .. }, None) => *collected = Some(Vec::new()),
                (_, None) => {}
                (Message::SequenceReset { .. }, Some(_)) => {
                    // The refresh service restarted mid-snapshot (a failover): what was collected
                    // is incomplete; the next Refresh Complete starts a whole snapshot. Never a
                    // reset of the real-time channel.
                    *collected = None;
                }
                (Message::RefreshComplete { last_seq_num }, Some(_)) => {
                    done = Some(last_seq_num);
                    break;
                }
                (m, Some(v)) => {
                    let mut b = Vec::new();
                    super::encode::encode_message(&m, &mut b);
                    v.push(b);
                }
            }
        }
        let last = done?;
        let snapshot = self.refresh.remove(&channel).flatten().unwrap_or_default();
        let state = &mut self.state;
        state.begin_packet(packet.header.send_time, channel);
        state.clear_channel(channel);
        for b in &snapshot {
            match decode_message(b, 0) {
                Ok(Message::Statistics { security_code, last, .. }) => state.snapshot_last(security_code, last, out),
                Ok(m) => state.apply(&m, out),
                Err(_) => {}
            }
        }
        state.end_packet(out);
        state.stats.refreshes += 1;
        let seq = self.sequencers.entry(channel).or_default();
        sequenced(state, seq, channel, out, rejects, |seq, stats, apply| seq.resume_after(last, stats, apply));
        state.end_packet(out);
        Some(last)
    }

    /// Gives up the first gap of `channel` (see [`Sequencer::skip_gap`]).
    pub fn skip_gap(&mut self, channel: u16, out: &mut Vec<Input>, rejects: &mut Vec<FeedReject>) -> Option<Gap> {
        let state = &mut self.state;
        let seq = self.sequencers.get_mut(&channel)?;
        let g = sequenced(state, seq, channel, out, rejects, |seq, stats, apply| seq.skip_gap(stats, apply));
        state.end_packet(out);
        g
    }
}

/// Runs `f` on a channel's sequencer, with an `apply` that feeds the market state (a message that
/// does not decode becomes a reject); the sequencer's counters join the state's.
fn sequenced<R>(
    state: &mut MarketState,
    seq: &mut Sequencer,
    channel: u16,
    out: &mut Vec<Input>,
    rejects: &mut Vec<FeedReject>,
    f: impl FnOnce(&mut Sequencer, &mut FeedStats, &mut &mut dyn FnMut(u32, Result<Message<'_>, DecodeError>)) -> R,
) -> R {
    let mut stats = std::mem::take(&mut state.stats);
    let mut apply = |s: u32, m: Result<Message<'_>, DecodeError>| match m {
        Ok(m) => state.apply(&m, out),
        Err(error) => {
            state.stats.decode_errors += 1;
            rejects.push(FeedReject { channel, seq: Some(s), error });
        }
    };
    let r = f(seq, &mut stats, &mut (&mut apply as &mut dyn FnMut(u32, Result<Message<'_>, DecodeError>)));
    merge(&mut state.stats, stats);
    r
}

fn merge(into: &mut FeedStats, from: FeedStats) {
    into.packets += from.packets;
    into.messages += from.messages;
    into.duplicates += from.duplicates;
    into.gaps += from.gaps;
    into.lost += from.lost;
    into.unknown += from.unknown;
    into.decode_errors += from.decode_errors;
    into.book_errors += from.book_errors;
    into.resets += from.resets;
    into.implicit_resets += from.implicit_resets;
    into.suspect_jumps += from.suspect_jumps;
    into.refreshes += from.refreshes;
}

#[cfg(test)]
mod tests {
    use super::super::encode::{PacketWriter, SecurityDefinitionSpec};
    use super::super::wire::{action, BookEntries, BookEntry, BookSide};
    use super::*;
    use rust_decimal_macros::dec;

    fn nominal(code: u32, p: i32) -> Message<'static> {
        Message::NominalPrice { security_code: code, price: Price(p) }
    }

    /// Packets of nominal-price messages with sequence numbers `first..`, `per` to a packet.
    fn packets(first: u32, n: u32, per: usize) -> Vec<Vec<u8>> {
        let mut w = PacketWriter::new(first);
        for i in 0..n {
            if (i as usize).is_multiple_of(per) {
                w.cut();
            }
            w.push(&nominal(1, (first + i) as i32), 0);
        }
        w.finish()
    }

    fn run(seq: &mut Sequencer, stats: &mut FeedStats, packets: &[Vec<u8>]) -> (Vec<u32>, Vec<Gap>) {
        let mut applied = Vec::new();
        let mut gaps = Vec::new();
        for p in packets {
            let p = Packet::parse(p).unwrap();
            if let Some(g) = seq.offer(&p, None, stats, &mut |s, m| {
                assert_eq!(m.unwrap(), nominal(1, s as i32), "message {s} is its own");
                applied.push(s);
            }) {
                gaps.push(g);
            }
        }
        (applied, gaps)
    }

    #[test]
    fn lines_a_and_b_packed_differently_apply_each_message_once_first_arrival_wins() {
        let a = packets(100, 30, 4);
        let b = packets(100, 30, 7);
        // Interleave: B is ahead for a while, then A.
        let mut arrivals = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j < b.len() && (j <= i || i >= a.len()) {
                arrivals.push(b[j].clone());
                j += 1;
            } else {
                arrivals.push(a[i].clone());
                i += 1;
            }
        }
        let (mut seq, mut stats) = (Sequencer::default(), FeedStats::default());
        let (applied, gaps) = run(&mut seq, &mut stats, &arrivals);
        assert_eq!(applied, (100..130).collect::<Vec<_>>());
        assert!(gaps.is_empty());
        assert_eq!(stats.messages, 30);
        assert_eq!(stats.duplicates, 30);
    }

    #[test]
    fn a_gap_waits_for_retransmission_then_applies_in_order() {
        let all = packets(1, 20, 5); // 1-5, 6-10, 11-15, 16-20
        let (mut seq, mut stats) = (Sequencer::default(), FeedStats::default());
        let (applied, gaps) = run(&mut seq, &mut stats, &[all[0].clone(), all[2].clone(), all[3].clone()]);
        assert_eq!(applied, (1..=5).collect::<Vec<_>>());
        assert_eq!(gaps, vec![Gap { from: 6, to: 10 }]);
        assert_eq!(seq.pending(), 10);
        assert_eq!(stats.gaps, 1);
        // The retransmission (packed differently, overlapping what arrived) fills it.
        let retrans = packets(6, 8, 3); // 6..13
        let (applied, gaps) = run(&mut seq, &mut stats, &retrans);
        assert_eq!(applied, (6..=20).collect::<Vec<_>>());
        assert!(gaps.is_empty());
        assert_eq!(seq.gap(), None);
        assert_eq!(stats.duplicates, 3); // 11, 12, 13 arrived twice
    }

    #[test]
    fn a_heartbeat_past_what_arrived_opens_a_gap_and_skipping_counts_the_loss() {
        let all = packets(1, 10, 5);
        let (mut seq, mut stats) = (Sequencer::default(), FeedStats::default());
        run(&mut seq, &mut stats, &all[..1]);
        let mut w = PacketWriter::new(11);
        w.heartbeat(0); // names 10 as the last sent
        let (applied, gaps) = run(&mut seq, &mut stats, &w.finish());
        assert!(applied.is_empty());
        assert_eq!(gaps, vec![Gap { from: 6, to: 10 }]);
        let mut applied = Vec::new();
        assert_eq!(seq.skip_gap(&mut stats, &mut |s, _| applied.push(s)), Some(Gap { from: 6, to: 10 }));
        assert!(applied.is_empty());
        assert_eq!(stats.lost, 5);
        assert_eq!(seq.next(), Some(11));
        assert_eq!(seq.gap(), None);
        // Messages after it apply normally; the late originals are duplicates.
        let (applied, _) = run(&mut seq, &mut stats, &packets(11, 3, 5));
        assert_eq!(applied, vec![11, 12, 13]);
        run(&mut seq, &mut stats, &all[1..]);
        assert_eq!(stats.duplicates, 5);
    }

    #[test]
    fn a_heartbeat_filled_by_its_messages_closes_the_gap() {
        let all = packets(1, 10, 5);
        let (mut seq, mut stats) = (Sequencer::default(), FeedStats::default());
        run(&mut seq, &mut stats, &all[..1]);
        let mut w = PacketWriter::new(11);
        w.heartbeat(0);
        run(&mut seq, &mut stats, &w.finish());
        let (applied, _) = run(&mut seq, &mut stats, &all[1..]);
        assert_eq!(applied, (6..=10).collect::<Vec<_>>());
        assert_eq!(seq.gap(), None);
        let (applied, gaps) = run(&mut seq, &mut stats, &packets(11, 2, 5));
        assert_eq!(applied, vec![11, 12]);
        assert!(gaps.is_empty());
    }

    #[test]
    fn only_suspension_indicators_2_and_3_change_a_security_status() {
        let mut h = FeedHandler::default();
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        let mut w = PacketWriter::new(1);
        for (i, suspension) in [2u8, 7, 3].into_iter().enumerate() {
            w.push(&Message::SecurityStatus { security_code: 700, suspension }, 10 + i as u64);
            w.cut();
        }
        for p in w.finish() {
            h.on_datagram(1, &p, &mut out, &mut rejects);
        }
        let statuses: Vec<(String, i64)> = out
            .iter()
            .filter_map(|i| match i {
                Input::Status(s) => Some((s.status.to_string(), s.ts)),
                _ => None,
            })
            .collect();
        // Halted at 10; 7 (at 11) is neither halt nor resume; trading again at 12.
        assert_eq!(statuses, vec![("halted".to_string(), 10), ("trading".to_string(), 12)]);
        assert_eq!(h.state.stats.unknown, 1);
    }

    /// Channel 1's packets on one line: old numbering 1..=10 (nominal 1001..), a Sequence Reset
    /// at 11, then the new numbering 1..=`new` (nominal 2001..); one packet per 5 messages.
    fn reset_line(new: u32) -> Vec<Vec<u8>> {
        let mut w = PacketWriter::new(1);
        for i in 1..=10u32 {
            w.push(&nominal(1, 1000 + i as i32), 100 + u64::from((i - 1) / 5));
        }
        w.push(&Message::SequenceReset { new_seq_no: 1 }, 200);
        let mut out = w.finish();
        let mut w = PacketWriter::new(1);
        for j in 1..=new {
            w.push(&nominal(1, 2000 + j as i32), 300 + u64::from((j - 1) / 5));
        }
        out.extend(w.finish());
        out // [old 1-5, old 6-10, reset, new 1-5, new 6-..]
    }

    fn nominal_of(h: &FeedHandler) -> Option<Price> {
        h.state.security(1).and_then(|s| s.nominal)
    }

    #[test]
    fn each_line_is_followed_across_a_sequence_reset() {
        let (a, b) = (reset_line(5), reset_line(8));
        let feed = |h: &mut FeedHandler, line: u8, p: &[u8]| {
            let mut out = Vec::new();
            h.on_line_datagram(1, Some(line), p, &mut out, &mut Vec::new())
        };

        // Line A delivers the reset and the new numbering; line B's copies come late: its old
        // numbering (6-10 look ahead of the new 6) and its reset are duplicates.
        let mut h = FeedHandler::default();
        for p in &a {
            assert_eq!(feed(&mut h, 0, p), None);
        }
        for p in &b[..4] {
            assert_eq!(feed(&mut h, 1, p), None, "no false gap");
        }
        assert_eq!(nominal_of(&h), Some(Price(2005)));
        assert_eq!(feed(&mut h, 1, &b[4]), None);
        assert_eq!(nominal_of(&h), Some(Price(2008)), "line B's new numbering applies past line A's");
        let st = &h.state.stats;
        assert_eq!((st.messages, st.duplicates, st.gaps, st.lost, st.resets), (19, 16, 0, 0, 1));

        // Line A loses the packet before its reset: the reset waits behind a gap, A's new numbering
        // waits for the reset; line B fills the gap and everything applies once, in order.
        let mut h = FeedHandler::default();
        assert_eq!(feed(&mut h, 0, &a[0]), None);
        assert_eq!(feed(&mut h, 0, &a[2]), Some(Gap { from: 6, to: 10 }));
        assert_eq!(feed(&mut h, 0, &a[3]), None);
        assert_eq!(nominal_of(&h), Some(Price(1005)));
        for p in &b {
            feed(&mut h, 1, p);
        }
        assert_eq!(nominal_of(&h), Some(Price(2008)));
        assert_eq!(h.sequencers[&1].gap(), None);
        let st = &h.state.stats;
        assert_eq!((st.messages, st.lost, st.resets), (19, 0, 1));

        // Line B's copy of the reset is lost: its packets sent after the reset are the new
        // numbering all the same.
        let mut h = FeedHandler::default();
        for p in &a {
            feed(&mut h, 0, p);
        }
        for (i, p) in b.iter().enumerate() {
            if i != 2 {
                feed(&mut h, 1, p);
            }
        }
        assert_eq!(nominal_of(&h), Some(Price(2008)));
        assert_eq!((h.state.stats.messages, h.state.stats.lost), (19, 0));
    }

    #[test]
    fn a_single_packet_far_ahead_is_held_until_another_confirms_the_jump() {
        let (mut seq, mut stats) = (Sequencer::default(), FeedStats::default());
        let (applied, _) = run(&mut seq, &mut stats, &packets(1, 5, 5));
        assert_eq!(applied, (1..=5).collect::<Vec<_>>());
        // One corrupted (or forged) packet naming 1,000,005: no gap, nothing given up.
        let (applied, gaps) = run(&mut seq, &mut stats, &packets(1_000_005, 1, 1));
        assert!(applied.is_empty() && gaps.is_empty() && seq.gap().is_none());
        assert_eq!(stats.suspect_jumps, 1);
        let (applied, _) = run(&mut seq, &mut stats, &packets(6, 5, 5));
        assert_eq!(applied, (6..=10).collect::<Vec<_>>(), "the real stream reads on");
        // A real jump: held at its first packet, confirmed by the next; the gap opens then (the
        // suspect of 1,000,005 stays apart).
        let (_, gaps) = run(&mut seq, &mut stats, &packets(200_000, 2, 2));
        assert!(gaps.is_empty() && seq.gap().is_none());
        let (_, gaps) = run(&mut seq, &mut stats, &packets(200_002, 2, 2));
        assert_eq!(gaps, vec![Gap { from: 11, to: 199_999 }]);
        assert_eq!(seq.pending(), 4);
    }

    #[test]
    fn a_new_numbering_whose_reset_was_lost_on_every_line_is_taken_as_a_reset() {
        let (a, b) = (reset_line(8), reset_line(8));
        let feed = |h: &mut FeedHandler, line: u8, p: &[u8]| {
            let mut out = Vec::new();
            h.on_line_datagram(1, Some(line), p, &mut out, &mut Vec::new())
        };
        // Both lines, the reset packet (index 2) lost on each; either line may come first.
        for a_first in [true, false] {
            let mut h = FeedHandler::default();
            for i in [0, 1, 3, 4] {
                let (x, y) = if a_first { ((0, &a[i]), (1, &b[i])) } else { ((1, &b[i]), (0, &a[i])) };
                assert_eq!(feed(&mut h, x.0, x.1), None, "no gap");
                assert_eq!(feed(&mut h, y.0, y.1), None, "no gap");
            }
            assert_eq!(nominal_of(&h), Some(Price(2008)), "the new numbering applies");
            let st = &h.state.stats;
            assert_eq!((st.messages, st.duplicates, st.resets, st.implicit_resets), (18, 18, 1, 1));
            assert_eq!(h.take_resets().len(), 1, "a refresh is asked for");
        }
        // Late copies of old numbers (sent before) stay duplicates: no reset.
        let mut h = FeedHandler::default();
        for p in [&a[0], &a[1], &b[0], &b[1]] {
            feed(&mut h, 0, p);
        }
        assert_eq!((h.state.stats.resets, h.state.stats.duplicates), (0, 10));
    }

    #[test]
    fn sequence_reset_restarts_the_numbering_and_clears_books() {
        let mut h = FeedHandler::default();
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        let mut w = PacketWriter::new(500);
        let entries = BookEntries::encode(&[BookEntry {
            quantity: 100,
            price: Price(10_000),
            orders: 1,
            side: BookSide::Bid,
            level: 1,
            action: action::NEW,
        }]);
        w.push(
            &Message::AggregateOrderBookUpdate {
                security_code: 5,
                entries: BookEntries::from_bytes(&entries).unwrap(),
            },
            1,
        );
        w.cut();
        w.push(&Message::SequenceReset { new_seq_no: 1 }, 2);
        // Security 700 is on channel 1: its book stays through channel 7's reset.
        let mut other = PacketWriter::new(1);
        other.push(
            &Message::AggregateOrderBookUpdate {
                security_code: 700,
                entries: BookEntries::from_bytes(&entries).unwrap(),
            },
            1,
        );
        h.on_datagram(1, &other.finish()[0], &mut out, &mut rejects);
        let top_700 = h.state.security(700).unwrap().top();
        assert_ne!(top_700, Top::default());
        for p in w.finish() {
            h.on_datagram(7, &p, &mut out, &mut rejects);
        }
        assert_eq!(h.sequencers[&7].next(), Some(1));
        assert_eq!(h.state.security(5).unwrap().top(), Top::default());
        assert_eq!(h.state.security(700).unwrap().top(), top_700, "another channel's book is kept");
        let mut w = PacketWriter::new(1);
        w.push(&nominal(5, 9), 3);
        h.on_datagram(7, &w.finish()[0], &mut out, &mut rejects);
        assert_eq!(h.state.security(5).unwrap().nominal, Some(Price(9)));
        assert_eq!(h.state.stats.resets, 1);
        assert!(rejects.is_empty());
    }

    #[test]
    fn quotes_come_once_per_packet_from_the_final_best_prices() {
        let mut h = FeedHandler::default();
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        let def = SecurityDefinitionSpec {
            security_code: 700,
            short_name: "TENCENT".into(),
            currency: "HKD".into(),
            lot_size: 100,
            stamp_duty: true,
            ..SecurityDefinitionSpec::default()
        }
        .encode();
        let mut w = PacketWriter::new(1);
        w.push(&decode_message(&def, 0).unwrap(), 10);
        let add = |id, side, p| Message::AddOrder {
            security_code: 700,
            order_id: id,
            price: Price(p),
            quantity: 100,
            side,
            order_type: b'2',
            position: 0,
        };
        w.push(&add(1, BookSide::Bid, 385_000), 20);
        w.push(&add(2, BookSide::Offer, 385_400), 20);
        // Next packet: the best offer leaves and a better one arrives; a transient best of
        // nothing (or a worse offer) must not show.
        w.push(&add(3, BookSide::Offer, 386_000), 30);
        w.push(&Message::DeleteOrder { security_code: 700, order_id: 2, side: BookSide::Offer }, 30);
        w.push(&add(4, BookSide::Offer, 385_200), 30);
        // A trade, then its cancel: last reverts.
        w.push(
            &Message::Trade {
                security_code: 700,
                trade_id: 1,
                price: Price(385_200),
                quantity: 100,
                trade_type: 0,
                trade_time: 40,
            },
            40,
        );
        w.push(
            &Message::Trade {
                security_code: 700,
                trade_id: 2,
                price: Price(385_400),
                quantity: 100,
                trade_type: 0,
                trade_time: 41,
            },
            41,
        );
        // An odd-lot trade (TrdType 102) at another price does not move the last price.
        w.push(
            &Message::Trade {
                security_code: 700,
                trade_id: 3,
                price: Price(380_000),
                quantity: 20,
                trade_type: 102,
                trade_time: 42,
            },
            42,
        );
        w.push(&Message::TradeCancel { security_code: 700, trade_id: 2 }, 50);
        w.push(&Message::ClosingPrice { security_code: 700, price: Price(385_200), trades: 1 }, 60);
        // The only board trade left is cancelled: no last price any more; then the bid side empties.
        w.push(&Message::TradeCancel { security_code: 700, trade_id: 1 }, 70);
        w.push(&Message::DeleteOrder { security_code: 700, order_id: 1, side: BookSide::Bid }, 80);
        for p in w.finish() {
            h.on_datagram(1, &p, &mut out, &mut rejects);
        }
        let none = Cleared::default();
        let q =
            |ts, bid, ask, last| Input::Quote(Quote { symbol: Symbol(700), ts, bid, ask, last, cleared: none, seq: 0 });
        assert_eq!(
            out,
            vec![
                Input::Instrument(Instrument {
                    symbol: Symbol(700),
                    name: "TENCENT".into(),
                    lot_size: 100,
                    currency: "HKD".into(),
                    sector: None,
                    stamp_duty: true,
                    spread_table: None, // the definition carries no SpreadTableCode
                }),
                q(20, Some(dec!(385.000)), Some(dec!(385.400)), None),
                q(30, Some(dec!(385.000)), Some(dec!(385.200)), None),
                q(40, None, None, Some(dec!(385.200))),
                q(41, None, None, Some(dec!(385.400))),
                q(50, None, None, Some(dec!(385.200))),
                Input::Close(Close { symbol: Symbol(700), ts: 60, price: dec!(385.200), seq: 0 }),
                Input::Quote(Quote {
                    symbol: Symbol(700),
                    ts: 70,
                    bid: None,
                    ask: None,
                    last: None,
                    cleared: Cleared { last: true, ..none },
                    seq: 0,
                }),
                Input::Quote(Quote {
                    symbol: Symbol(700),
                    ts: 80,
                    bid: None,
                    ask: Some(dec!(385.200)),
                    last: None,
                    cleared: Cleared { bid: true, ..none },
                    seq: 0,
                }),
            ]
        );
        assert!(rejects.is_empty());
        assert_eq!(h.state.security(700).unwrap().last_trade(), None);
    }

    #[test]
    fn bad_packets_and_messages_are_rejected_with_their_place_and_counted() {
        let mut h = FeedHandler::default();
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        h.on_datagram(3, &[1, 2, 3], &mut out, &mut rejects);
        let mut p = PacketWriter::new(9);
        p.push(&Message::Unknown { msg_type: 30, bytes: &[8, 0, 30, 0, 1, 2, 3, 4] }, 0); // too short for 30
        p.push(&Message::DeleteOrder { security_code: 1, order_id: 77, side: BookSide::Bid }, 0); // unknown order
        p.push(&Message::Unknown { msg_type: 54, bytes: &[6, 0, 54, 0, 1, 2] }, 0);
        h.on_datagram(3, &p.finish()[0], &mut out, &mut rejects);
        assert_eq!(rejects.len(), 2);
        assert_eq!(rejects[0].seq, None);
        assert_eq!(rejects[1].seq, Some(9));
        assert_eq!(h.state.stats.decode_errors, 2);
        assert_eq!(h.state.stats.book_errors, 1);
        assert_eq!(h.state.stats.unknown, 1);
        assert_eq!(h.state.stats.messages, 3);
        assert_eq!(h.state.stats.packets, 2);
        // The message that decoded but named an order the book does not have is a dead letter too.
        let problems = h.take_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "omdc_book");
        assert!(problems[0].1.contains("order 77 is not in the book"), "{problems:?}");
        assert!(h.take_problems().is_empty());
    }

    /// The last price (the default mark) comes back with a refresh: a board trade lost on both
    /// lines is in the snapshot's Statistics, and the refreshed feed quotes it.
    #[test]
    fn a_refresh_brings_back_the_last_price_of_a_lost_trade() {
        let trade = |id: u32, price: i32| Message::Trade {
            security_code: 700,
            trade_id: id,
            price: Price(price),
            quantity: 100,
            trade_type: 0,
            trade_time: u64::from(id) * 10,
        };
        let def =
            SecurityDefinitionSpec { security_code: 700, lot_size: 100, ..SecurityDefinitionSpec::default() }.encode();
        let def = decode_message(&def, 0).unwrap();
        let mut w = PacketWriter::new(1);
        for (i, m) in
            [def, trade(1, 10_000), trade(2, 11_000), nominal(700, 11_000), nominal(700, 11_010)].iter().enumerate()
        {
            w.cut();
            w.push(m, i as u64 * 10);
        }
        let packets = w.finish(); // one message each, seq 1..=5 (the definition first)
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        let mut clean = FeedHandler::default();
        for p in &packets[..4] {
            clean.on_datagram(1, p, &mut out, &mut rejects);
        }
        let snapshot = clean.state.snapshot(1);
        assert_eq!(clean.state.security(700).unwrap().last_trade(), Some(Price(11_000)));
        // Message 3 (the trade at 11.000) lost on every line; 4 and 5 arrived.
        let mut h = FeedHandler::default();
        for p in [&packets[0], &packets[1], &packets[3], &packets[4]] {
            h.on_datagram(1, p, &mut out, &mut rejects);
        }
        assert_eq!(h.state.security(700).unwrap().last_trade(), Some(Price(10_000)));
        out.clear();
        h.begin_refresh(1);
        let mut done = None;
        // (A client joining the refresh channel discards up to its first Refresh Complete.)
        let whole = |snapshot: &[Vec<u8>], last: u32| {
            let mut p = refresh_packets(&[], last, 1);
            p.extend(refresh_packets(snapshot, last, 1));
            p
        };
        for p in &whole(&snapshot, 4) {
            done = done.or(h.on_refresh_datagram(1, p, &mut out, &mut rejects));
        }
        assert_eq!(done, Some(4));
        assert_eq!(h.state.security(700).unwrap().last_trade(), Some(Price(11_000)));
        let lasts: Vec<_> = out
            .iter()
            .filter_map(|i| match i {
                Input::Quote(q) if q.symbol == Symbol(700) => q.last,
                _ => None,
            })
            .collect();
        assert_eq!(lasts, vec![dec!(11.000)], "the refreshed last price is quoted once");
        // A snapshot whose last price is the one held quotes nothing again.
        out.clear();
        h.begin_refresh(1);
        for p in &whole(&h.state.snapshot(1), 5) {
            h.on_refresh_datagram(1, p, &mut out, &mut rejects);
        }
        assert!(!out.iter().any(|i| matches!(i, Input::Quote(q) if q.last.is_some())), "{out:?}");
        // A refresh service that fails over mid-snapshot (a Sequence Reset on the refresh
        // channel): the part before it is dropped, the next whole snapshot applied, the
        // real-time channel not reset.
        let mut broken = refresh_packets(&[], 4, 1);
        let mut w = PacketWriter::new(1);
        for b in &snapshot[..snapshot.len() / 2] {
            w.push(&decode_message(b, 0).unwrap(), 0);
        }
        w.push(&Message::SequenceReset { new_seq_no: 1 }, 0);
        broken.extend(w.finish());
        broken.extend(refresh_packets(&[], 4, 1));
        broken.extend(refresh_packets(&snapshot, 4, 1));
        let mut again = FeedHandler::default();
        for p in [&packets[0], &packets[1], &packets[3], &packets[4]] {
            again.on_datagram(1, p, &mut out, &mut rejects);
        }
        again.begin_refresh(1);
        let mut done = None;
        for p in &broken {
            done = done.or(again.on_refresh_datagram(1, p, &mut out, &mut rejects));
        }
        assert_eq!(done, Some(4));
        assert_eq!(again.state.stats.resets, 0);
        assert!(again.take_resets().is_empty());
        assert_eq!(again.state.security(700).unwrap().last_trade(), Some(Price(11_000)));
        // A message of a snapshot that does not decode: refused (a reject), and that snapshot is
        // not applied short of it; the next whole one is.
        let mut damaged = refresh_packets(&[], 4, 1);
        let mut w = PacketWriter::new(1);
        w.push(&Message::Unknown { msg_type: 30, bytes: &[8, 0, 30, 0, 1, 2, 3, 4] }, 0); // too short for 30
        for b in &snapshot {
            w.push(&decode_message(b, 0).unwrap(), 0);
        }
        w.push(&Message::RefreshComplete { last_seq_num: 4 }, 0);
        damaged.extend(w.finish());
        damaged.extend(refresh_packets(&snapshot, 4, 1));
        let mut third = FeedHandler::default();
        for p in [&packets[0], &packets[1], &packets[3], &packets[4]] {
            third.on_datagram(1, p, &mut out, &mut rejects);
        }
        rejects.clear();
        third.begin_refresh(1);
        let mut done = Vec::new();
        for p in &damaged {
            done.extend(third.on_refresh_datagram(1, p, &mut out, &mut rejects));
        }
        assert_eq!(done, vec![4], "one snapshot applied");
        assert_eq!((rejects.len(), third.state.stats.decode_errors), (1, 1), "{rejects:?}");
        assert_eq!(third.state.security(700).unwrap().last_trade(), Some(Price(11_000)));
    }

    #[test]
    fn a_refresh_snapshot_rebuilds_the_books_and_kept_messages_after_it_apply() {
        use super::super::wire::BookEntries;
        // A flow of aggregated-book updates on channel 3: security 5's bid ladder.
        let update = |level: u8, act: u8, price: i32, qty: u64| {
            BookEntries::encode(&[BookEntry {
                quantity: qty,
                price: Price(price),
                orders: 1,
                side: BookSide::Bid,
                level,
                action: act,
            }])
        };
        let steps: Vec<Vec<u8>> = (0..30)
            .map(|i: i32| match i % 3 {
                0 => update(1, action::NEW, 10_000 + i * 10, 100),
                1 => update(1, action::CHANGE, 10_000 + (i - 1) * 10, 200 + i as u64),
                _ => update(2, action::DELETE, 0, 0),
            })
            .collect();
        let mut w = PacketWriter::new(1);
        for (i, e) in steps.iter().enumerate() {
            w.cut();
            let m =
                Message::AggregateOrderBookUpdate { security_code: 5, entries: BookEntries::from_bytes(e).unwrap() };
            w.push(&m, i as u64);
        }
        let packets = w.finish(); // one message each, seq 1..=30
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        // The clean run, and its snapshot after message 20.
        let mut clean = FeedHandler::default();
        for p in &packets[..20] {
            clean.on_datagram(3, p, &mut out, &mut rejects);
        }
        let snapshot = clean.state.snapshot(3);
        for p in &packets[20..] {
            clean.on_datagram(3, p, &mut out, &mut rejects);
        }
        // A run that lost 9..=14 on every line.
        let mut h = FeedHandler::default();
        for p in packets[..8].iter().chain(&packets[14..]) {
            h.on_datagram(3, p, &mut out, &mut rejects);
        }
        assert_eq!(h.sequencers[&3].gap(), Some(Gap { from: 9, to: 14 }));
        h.begin_refresh(3);
        assert!(h.refreshing(3));
        // The refresh channel: the tail of an earlier snapshot (discarded), then a whole one.
        let mut refresh = refresh_packets(&snapshot[..1], 3, 1);
        refresh.extend(refresh_packets(&snapshot, 20, 100));
        let mut done = None;
        for p in &refresh {
            if let Some(l) = h.on_refresh_datagram(3, p, &mut out, &mut rejects) {
                done = Some(l);
            }
        }
        assert_eq!(done, Some(20));
        assert!(!h.refreshing(3));
        assert_eq!(h.sequencers[&3].gap(), None);
        assert_eq!(h.sequencers[&3].next(), Some(31));
        let bids = |h: &FeedHandler| h.state.security(5).unwrap().aggregated.levels(BookSide::Bid).to_vec();
        assert_eq!(bids(&h), bids(&clean));
        assert_eq!(h.state.stats.refreshes, 1);
        assert!(rejects.is_empty());
        // Real-time messages keep coming while a refresh runs: kept, applied after it.
        let mut w = PacketWriter::new(31);
        let m = Message::AggregateOrderBookUpdate {
            security_code: 5,
            entries: BookEntries::from_bytes(&steps[0]).unwrap(),
        };
        w.push(&m, 99);
        let more = w.finish();
        h.begin_refresh(3);
        h.on_datagram(3, &more[0], &mut out, &mut rejects);
        assert_eq!(bids(&h), bids(&clean), "held during the refresh");
        let snap = h.state.snapshot(3);
        for p in refresh_packets(&snap, 0, 1).iter().chain(&refresh_packets(&snap, 30, 5)) {
            h.on_refresh_datagram(3, p, &mut out, &mut rejects);
        }
        clean.on_datagram(3, &more[0], &mut out, &mut rejects);
        assert_eq!(bids(&h), bids(&clean), "applied after it");
    }
}
