//! A contract day (JSON lines) as the exchange would send its market data: instruments as
//! Security Definitions, bid/ask as Aggregate Order Book Updates at level 1, last prices as
//! Trades, closes as Closing Prices; spread over channels by security code, on lines A and B
//! packed differently. Fills, busts and orders are not market data: they are returned as lines.
//!
//! Used by the end-to-end test (OMD-C replay gives the JSON replay's positions and P&L), by
//! `harbour hkex encode`, and by the benchmarks.

use harbour_dataflows::model::StatusSubject;
use harbour_dataflows::validate::Input;
use rustc_hash::FxHashMap;

use super::capture::Record;
use super::encode::{PacketWriter, SecurityDefinitionSpec};
use super::wire::{action, BookEntries, BookEntry, BookSide, Message, Price};
use crate::contract::parse_line;

/// Settings of the encoding.
#[derive(Clone, Debug)]
pub struct DayEncoding {
    /// Channels the securities are spread over (channel = 1 + code % channels).
    pub channels: u16,
    /// Also send every packet on line B, packed differently and a little later.
    pub line_b: bool,
}

impl Default for DayEncoding {
    fn default() -> Self {
        DayEncoding { channels: 4, line_b: true }
    }
}

/// A day split into its feed and its other lines.
#[derive(Debug, Default)]
pub struct EncodedDay {
    /// Datagrams in receive-time order.
    pub records: Vec<Record>,
    /// Lines that are not market data (fills, busts, orders) and market lines that do not parse.
    pub other_lines: Vec<String>,
    /// Market-data lines encoded.
    pub encoded: usize,
}

#[derive(Default)]
struct Side {
    price: Option<Price>,
    quantity: u64,
}

#[derive(Default)]
struct Sec {
    lot: u64,
    bid: Side,
    ask: Side,
    trades: u32,
}

/// Book entries moving one side's level 1 to `price` with a quantity that differs from the
/// previous one (so every quote shows as a change of the best level).
fn level1(side: &mut Side, which: BookSide, price: Price, lot: u64, n: u64, out: &mut Vec<BookEntry>) {
    let mut quantity = lot * (1 + n % 37);
    if quantity == side.quantity {
        quantity += lot;
    }
    let entry = |act, price, quantity| BookEntry {
        quantity,
        price,
        orders: 1 + (n % 5) as u32,
        side: which,
        level: 1,
        action: act,
    };
    match side.price {
        Some(p) if p == price => out.push(entry(action::CHANGE, price, quantity)),
        Some(p) => {
            out.push(entry(action::DELETE, p, 0));
            out.push(entry(action::NEW, price, quantity));
        }
        None => out.push(entry(action::NEW, price, quantity)),
    }
    side.price = Some(price);
    side.quantity = quantity;
}

/// Empties a level-1 side (a quote's `"bid": null`): its level deleted.
fn clear1(side: &mut Side, which: BookSide, out: &mut Vec<BookEntry>) {
    if let Some(p) = side.price.take() {
        out.push(BookEntry { quantity: 0, price: p, orders: 0, side: which, level: 1, action: action::DELETE });
        side.quantity = 0;
    }
}

/// Encodes the market data of `lines`.
pub fn encode_day(lines: &[String], cfg: &DayEncoding) -> EncodedDay {
    let channels = cfg.channels.max(1);
    let mut writers: FxHashMap<u16, (PacketWriter, PacketWriter)> = FxHashMap::default();
    let mut secs: FxHashMap<u32, Sec> = FxHashMap::default();
    let mut day = EncodedDay::default();
    // (send time, channel, message bytes) in input order; packets are cut per channel.
    let mut first_ts = None;
    let mut last_t = 0i64;
    let mut events: Vec<(u64, u16, Vec<u8>)> = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Ok(input) = parse_line(line, n as u64 + 1) else {
            day.other_lines.push(line.clone());
            continue;
        };
        // Orders and busts do not move the clock here: they stay JSON lines.
        let ts = match &input {
            Input::Order(_) | Input::Bust(_) => None,
            i => i.ts(),
        };
        if first_ts.is_none() {
            first_ts = ts;
        }
        if let Some(t) = ts {
            last_t = t;
        }
        let mut push = |code: u32, t: i64, m: &Message<'_>| {
            let mut bytes = Vec::new();
            super::encode::encode_message(m, &mut bytes);
            events.push((u64::try_from(t).unwrap_or(0), 1 + (code % u32::from(channels)) as u16, bytes));
        };
        match input {
            Input::Instrument(i) => {
                let spec = SecurityDefinitionSpec {
                    security_code: i.symbol.0,
                    market_code: "MAIN".into(),
                    instrument_type: "EQTY".into(),
                    // Blank when the line names none: the feed then gives no code either.
                    spread_table_code: i.spread_table.as_deref().unwrap_or("  ").into(),
                    short_name: i.name.clone(),
                    currency: i.currency.clone(),
                    lot_size: u32::try_from(i.lot_size).unwrap_or(0),
                    stamp_duty: i.stamp_duty,
                    ..SecurityDefinitionSpec::default()
                };
                let bytes = spec.encode();
                secs.entry(i.symbol.0).or_default().lot = i.lot_size.max(1) as u64;
                // Definitions before the day's first event go out first (time 0: placed at the
                // start); later ones at the time reached.
                events.push((u64::try_from(last_t).unwrap_or(0), 1 + (i.symbol.0 % u32::from(channels)) as u16, bytes));
                day.encoded += 1;
            }
            Input::Quote(q) => {
                let s = secs.entry(q.symbol.0).or_default();
                let lot = s.lot.max(1);
                let mut entries = Vec::new();
                let (bid, ask) = (q.bid.and_then(Price::from_decimal), q.ask.and_then(Price::from_decimal));
                let last = q.last.and_then(Price::from_decimal);
                if q.bid.is_some() != bid.is_some()
                    || q.ask.is_some() != ask.is_some()
                    || q.last.is_some() != last.is_some()
                {
                    // A price the wire cannot carry: the line stays JSON (and meets the same rules).
                    day.other_lines.push(line.clone());
                    continue;
                }
                if q.cleared.last {
                    // No last price any more: the wire says it only by cancelling every trade
                    // kept, so that part stays a JSON line (the sides go on the wire).
                    let ts = crate::contract::format_ts(q.ts);
                    day.other_lines
                        .push(format!(r#"{{"type":"quote","symbol":"{}","ts":"{ts}","last":null}}"#, q.symbol));
                }
                match bid {
                    Some(p) => level1(&mut s.bid, BookSide::Bid, p, lot, n as u64, &mut entries),
                    None if q.cleared.bid => clear1(&mut s.bid, BookSide::Bid, &mut entries),
                    None => {}
                }
                match ask {
                    Some(p) => level1(&mut s.ask, BookSide::Offer, p, lot, n as u64 + 1, &mut entries),
                    None if q.cleared.ask => clear1(&mut s.ask, BookSide::Offer, &mut entries),
                    None => {}
                }
                let trade = last.map(|price| {
                    s.trades += 1;
                    Message::Trade {
                        security_code: q.symbol.0,
                        trade_id: s.trades,
                        price,
                        quantity: lot as u32,
                        trade_type: 0,
                        trade_time: u64::try_from(q.ts).unwrap_or(0),
                    }
                });
                if !entries.is_empty() {
                    let bytes = BookEntries::encode(&entries);
                    let m = Message::AggregateOrderBookUpdate {
                        security_code: q.symbol.0,
                        entries: BookEntries::from_bytes(&bytes).expect("whole entries"),
                    };
                    push(q.symbol.0, q.ts, &m);
                }
                if let Some(t) = trade {
                    push(q.symbol.0, q.ts, &t);
                }
                day.encoded += 1;
            }
            Input::Close(c) => match Price::from_decimal(c.price) {
                Some(price) => {
                    push(c.symbol.0, c.ts, &Message::ClosingPrice { security_code: c.symbol.0, price, trades: 0 });
                    day.encoded += 1;
                }
                None => day.other_lines.push(line.clone()),
            },
            Input::Status(st) => match &st.subject {
                StatusSubject::Security(sym) => {
                    let suspension = if st.status == "halted" { 2 } else { 3 };
                    push(sym.0, st.ts, &Message::SecurityStatus { security_code: sym.0, suspension });
                    day.encoded += 1;
                }
                StatusSubject::Market(m) => {
                    let code = super::encode::market_code(m);
                    let status = market_status_code(&st.status);
                    let m = Message::TradingSessionStatus {
                        market_code: &code,
                        sub_id: st.session.unwrap_or_else(|| default_session(&st.status)),
                        status,
                        control_flag: 0,
                        start: u64::try_from(st.ts).unwrap_or(0),
                        end: 0,
                    };
                    // Market-wide: on the channel of security 0 (the first channel).
                    push(0, st.ts, &m);
                    day.encoded += 1;
                }
            },
            Input::Fill(_) | Input::Bust(_) | Input::Order(_) => day.other_lines.push(line.clone()),
        }
    }
    // Definitions at the first event's time less a second; packets cut by time per channel.
    let start = first_ts.map_or(0, |t| u64::try_from(t).unwrap_or(0).saturating_sub(1_000_000_000));
    let mut out: Vec<(u64, u16, u8, Vec<u8>)> = Vec::new();
    for (t, channel, bytes) in &events {
        let t = if *t == 0 { start } else { *t };
        let (a, b) = writers.entry(*channel).or_insert_with(|| (PacketWriter::new(1), PacketWriter::new(1)));
        let m = super::wire::decode_message(bytes, 0).expect("encoded message decodes");
        a.push(&m, t);
        if cfg.line_b {
            // Line B: the same messages, cut after every third message of a time.
            if b.next_seq() % 3 == 0 {
                b.cut();
            }
            b.push(&m, t);
        }
        for p in a.take() {
            out.push((send_time(&p), *channel, 0, p));
        }
        for p in b.take() {
            out.push((send_time(&p) + 50_000, *channel, 1, p));
        }
    }
    let mut channels: Vec<u16> = writers.keys().copied().collect();
    channels.sort_unstable();
    for channel in channels {
        let (a, b) = writers.remove(&channel).expect("writer");
        for p in a.finish() {
            out.push((send_time(&p), channel, 0, p));
        }
        if cfg.line_b {
            for p in b.finish() {
                out.push((send_time(&p) + 50_000, channel, 1, p));
            }
        }
    }
    out.sort_by_key(|(t, channel, line, p)| {
        (*t, *line, *channel, u32::from_le_bytes(p[4..8].try_into().expect("seq")))
    });
    day.records =
        out.into_iter().map(|(recv_time, channel, line, data)| Record { recv_time, channel, line, data }).collect();
    day
}

fn send_time(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[8..16].try_into().expect("packet header"))
}

/// TradingSesStatus of a market status name (HKEX.md: 0 unknown, 10 halted, 20 pre-open, 30 open,
/// 40 pre-close, 50 closed, 100 day closed).
pub fn market_status_code(status: &str) -> u8 {
    match status {
        "halted" => 10,
        "pre_open" => 20,
        "open" => 30,
        "pre_close" => 40,
        "closed" => 50,
        "day_closed" => 100,
        _ => 0,
    }
}

/// The TradingSessionSubID sent for a market status line that names no session (OMD-C always
/// carries one): the phase HKEX.md lists for that status (0 is "day close", a session like the
/// others, so it cannot stand for "none").
pub fn default_session(status: &str) -> u8 {
    match status {
        "halted" => 102,    // exchange intervention
        "pre_open" => 1,    // pre-opening
        "open" => 3,        // continuous trading
        "pre_close" => 105, // closing auction
        "closed" => 103,    // close
        "day_closed" => 0,  // day close
        _ => 100,           // not yet open
    }
}

/// The market status name of a TradingSesStatus code.
pub fn market_status_name(code: u8) -> &'static str {
    match code {
        10 => "halted",
        20 => "pre_open",
        30 => "open",
        40 => "pre_close",
        50 => "closed",
        100 => "day_closed",
        _ => "unknown",
    }
}
