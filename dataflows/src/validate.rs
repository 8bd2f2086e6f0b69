//! The input rules: turns parsed events into dataflow updates, or into dead letters with a reason.
//!
//! ```text
//!  parsed line ──► Validator::accept ──► Accepted::{Fill, Bust, Market, Instrument, Order}
//!                        │
//!                        └──► Rejection (unknown symbol, qty ≤ 0, off-tick, lot, unknown/duplicate exec id)
//! ```
//!
//! The validator is deterministic state kept beside the dataflow input: the instrument table, and
//! every accepted fill by exec id (a bust must retract exactly the record that was inserted). It
//! runs where the input is read, so a rejected line never enters the dataflow; the caller sends the
//! rejection to the dead-letter output with the raw line and its source position.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::model::{
    Bust, Close, ExecId, Fill, Instrument, MarketEvent, Order, Quote, StatusSubject, Symbol, TradingStatus, Ts,
};
use crate::sharded::ShardedMap;
use crate::ticks::SpreadTables;

/// A parsed input event, before the rules that need state.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// An execution (`stamp_duty_exempt` is filled in from the instrument).
    Fill(Fill),
    /// A cancelled execution.
    Bust(Bust),
    /// A quote or trade print.
    Quote(Quote),
    /// A closing price.
    Close(Close),
    /// Reference data.
    Instrument(Instrument),
    /// An order event.
    Order(Order),
    /// A security halted or resumed, a market's session changed.
    Status(TradingStatus),
}

impl Input {
    /// Its event time (`None` for reference data, which has none).
    pub fn ts(&self) -> Option<Ts> {
        match self {
            Input::Fill(f) => Some(f.ts),
            Input::Bust(b) => Some(b.ts),
            Input::Order(o) => Some(o.ts),
            Input::Quote(q) => Some(q.ts),
            Input::Close(c) => Some(c.ts),
            Input::Status(s) => Some(s.ts),
            Input::Instrument(_) => None,
        }
    }
}

/// An accepted input, ready for the dataflow.
#[derive(Clone, Debug, PartialEq)]
pub enum Accepted {
    /// Insert this fill (shared with the validator's record of it).
    Fill(Arc<Fill>),
    /// Retract this fill (a bust of it: the fill as accepted).
    Bust(Arc<Fill>),
    /// Market data for the marks.
    Market(MarketEvent),
    /// New or changed reference data (`Listed` is also sent for a new symbol).
    Instrument {
        /// The record it replaces, to retract.
        previous: Option<Instrument>,
        /// The new record.
        current: Instrument,
    },
    /// An order event.
    Order(Order),
    /// A trading status.
    Status(TradingStatus),
}

/// Why an input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The line is not valid JSON or does not match the input contract.
    #[error("does not parse: {0}")]
    Parse(String),
    /// No instrument reference data for the symbol (send the instrument first).
    #[error("unknown symbol {0}")]
    UnknownSymbol(Symbol),
    /// Quantity zero or negative.
    #[error("quantity {0} is not positive")]
    NonPositiveQty(i64),
    /// A price that is zero or negative.
    #[error("price {0} is not positive")]
    NonPositivePrice(Decimal),
    /// Price not on the spread-table grid for its band.
    #[error("price {price} is off the tick grid (tick {tick:?} on {date})")]
    OffTick {
        /// The price given.
        price: Decimal,
        /// The tick of its band, if the price is inside the table.
        tick: Option<Decimal>,
        /// Trade date (HKT) whose table applied.
        date: NaiveDate,
    },
    /// Quantity not a whole number of board lots and not flagged odd-lot.
    #[error("quantity {qty} is not a multiple of the board lot {lot} (flag odd_lot for odd-lot trades)")]
    NotBoardLot {
        /// Quantity given.
        qty: i64,
        /// The instrument's board lot.
        lot: i64,
    },
    /// A fill flagged odd-lot for a board lot or more: odd lots trade below the board lot only
    /// (HKEX's odd-lot market; a larger fill is a board-lot trade, or a mistyped flag).
    #[error("odd-lot quantity {qty} is not below the board lot {lot}")]
    OddLotTooLarge {
        /// Quantity given.
        qty: i64,
        /// The instrument's board lot.
        lot: i64,
    },
    /// A fill of an instrument that trades in another currency than the Hong Kong dollar (an RMB
    /// or US dollar counter): its fees and P&L would be summed into HK$ figures unconverted.
    #[error("instrument trades in {0}: only HKD instruments are valued (no FX conversion)")]
    UnsupportedCurrency(String),
    /// A fill whose exec id was already accepted.
    #[error("duplicate exec_id {0}")]
    DuplicateExecId(ExecId),
    /// A bust naming an exec id never seen.
    #[error("bust of unknown exec_id {0}")]
    UnknownExecId(ExecId),
    /// A bust of a fill that was already busted.
    #[error("exec_id {0} is already busted")]
    AlreadyBusted(ExecId),
    /// Lot size zero or negative in reference data.
    #[error("lot size {0} is not positive")]
    BadLotSize(i64),
    /// A fill's own commission below zero or not in whole cents.
    #[error("commission {0} is negative or not in whole cents")]
    BadCommission(Decimal),
    /// An event time outside [`TS_MIN`]..[`TS_MAX`] (no trade date, no spread table or cost
    /// schedule can apply to it).
    #[error("ts {0} ns is outside 1970-01-01..2100-01-01")]
    TsOutOfRange(Ts),
    /// A quantity, price or commission past what any trade carries ([`MAX_QTY`],
    /// [`MAX_PRICE`], [`MAX_COMMISSION`]): refused rather than let the sums that hold it
    /// overflow.
    #[error("{what} {value} is larger than {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The value given.
        value: Decimal,
        /// The largest accepted.
        max: Decimal,
    },
    /// A fill traded before every cost schedule: its costs cannot be computed.
    #[error("no cost schedule covers trade date {date} (the first starts {first}; configure [[costs]])")]
    NoCostSchedule {
        /// The fill's trade date (HKT).
        date: NaiveDate,
        /// The first day the schedules cover.
        first: NaiveDate,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PositionKey, Side};
    use rust_decimal_macros::dec;

    /// 00700 with board lot `lot`.
    fn tencent(lot: i64) -> Instrument {
        Instrument {
            symbol: Symbol(700),
            name: "TENCENT".into(),
            lot_size: lot,
            currency: "HKD".into(),
            sector: None,
            stamp_duty: true,
            spread_table: None,
        }
    }

    /// A buy of `qty` 00700 at 385.2.
    fn fill(exec: &str, ts: Ts, qty: i64, commission: Option<Decimal>) -> Input {
        Input::Fill(Fill {
            ts,
            exec_id: exec.into(),
            order_id: "O".into(),
            key: PositionKey { account: "A".into(), strategy: "S".into(), symbol: Symbol(700) },
            side: Side::Buy,
            qty,
            price: dec!(385.2),
            commission,
            stamp_duty_exempt: false,
            odd_lot: false,
            source_seq: 0,
        })
    }

    #[test]
    fn trade_date_is_the_hkt_calendar_day() {
        // 2026-03-01T16:00:00Z is 2026-03-02T00:00 in Hong Kong; a nanosecond earlier is still the 1st.
        let midnight_hkt = 1_772_380_800_000_000_000;
        assert_eq!(trade_date(midnight_hkt), NaiveDate::from_ymd_opt(2026, 3, 2).unwrap());
        assert_eq!(trade_date(midnight_hkt - 1), NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        assert_eq!(trade_date(-1), NaiveDate::from_ymd_opt(1970, 1, 1).unwrap());
    }

    #[test]
    fn own_commissions_in_whole_cents_and_fills_before_every_cost_schedule_are_refused() {
        use crate::fees::CostSchedules;
        let mut v = Validator::new(SpreadTables::default()).with_costs_from(CostSchedules::default().earliest());
        v.accept(Input::Instrument(tencent(100))).unwrap();
        let day = 1_772_415_000_000_000_000; // 2026-03-02 09:30 HKT
        let fill = |exec: &str, ts: i64, commission: Option<Decimal>| fill(exec, ts, 100, commission);
        assert!(v.accept(fill("E1", day, Some(dec!(12.50)))).is_ok());
        let code = |r: Result<Vec<Accepted>, Rejection>| r.unwrap_err().code();
        assert_eq!(code(v.accept(fill("E2", day, Some(dec!(-50))))), "bad_commission");
        assert_eq!(code(v.accept(fill("E3", day, Some(dec!(0.000000005))))), "bad_commission");
        assert!(v.accept(fill("E4", day, Some(dec!(0)))).is_ok());
        // 2021-07-31 09:30 HKT: before the first schedule (1 Aug 2021); the next day is covered.
        let july = 1_627_695_000_000_000_000;
        assert_eq!(trade_date(july), NaiveDate::from_ymd_opt(2021, 7, 31).unwrap());
        assert_eq!(code(v.accept(fill("E5", july, None))), "no_cost_schedule");
        assert!(v.accept(fill("E6", july + 86_400_000_000_000, None)).is_ok());
    }

    /// Odd lots are below the board lot; anything else is whole board lots.
    #[test]
    fn odd_lots_are_below_the_board_lot_and_other_fills_whole_lots() {
        let mut v = Validator::new(SpreadTables::default());
        v.accept(Input::Instrument(tencent(100))).unwrap();
        let day = 1_772_415_000_000_000_000; // 2026-03-02 09:30 HKT
        let odd = |exec: &str, qty: i64| match fill(exec, day, qty, None) {
            Input::Fill(f) => Input::Fill(Fill { odd_lot: true, ..f }),
            other => other,
        };
        let code = |r: Result<Vec<Accepted>, Rejection>| r.unwrap_err().code();
        assert!(v.accept(odd("E1", 99)).is_ok());
        assert!(v.accept(odd("E2", 1)).is_ok());
        assert_eq!(code(v.accept(odd("E3", 100))), "odd_lot_too_large");
        assert_eq!(code(v.accept(odd("E4", 150))), "odd_lot_too_large");
        assert_eq!(code(v.accept(fill("E5", day, 150, None))), "not_board_lot");
        assert!(v.accept(fill("E6", day, 200, None)).is_ok());
    }

    /// Fills of an RMB or US dollar counter are refused: their money would be summed into HK$
    /// figures as it is. Its reference data and orders are taken.
    #[test]
    fn fills_of_instruments_in_another_currency_are_refused() {
        let mut v = Validator::new(SpreadTables::default());
        let rmb = Instrument { symbol: Symbol(80700), currency: "CNY".into(), ..tencent(100) };
        assert!(v.accept(Input::Instrument(rmb)).is_ok());
        let day = 1_772_415_000_000_000_000; // 2026-03-02 09:30 HKT
        let on = |symbol: u32, exec: &str| match fill(exec, day, 100, None) {
            Input::Fill(mut f) => {
                f.key.symbol = Symbol(symbol);
                Input::Fill(f)
            }
            other => other,
        };
        let refused = v.accept(on(80700, "E1")).unwrap_err();
        assert_eq!(refused.code(), "unsupported_currency");
        assert!(refused.to_string().contains("CNY"), "{refused}");
        v.accept(Input::Instrument(tencent(100))).unwrap();
        assert!(v.accept(on(700, "E2")).is_ok());
        // The code is read as a code: " hkd" is HKD.
        let spaced = Instrument { symbol: Symbol(5), currency: " hkd".into(), ..tencent(100) };
        v.accept(Input::Instrument(spaced)).unwrap();
        assert!(v.accept(on(5, "E3")).is_ok());
        // The exec id of the refused fill was not taken.
        assert!(v.accept(on(700, "E1")).is_ok());
    }

    /// Values no trade carries are refused before any sum could overflow on them (each of these
    /// lines panicked the dataflow, or wrapped the trade date past every price check).
    #[test]
    fn values_past_any_trade_and_times_outside_the_window_are_refused() {
        use crate::model::{Cleared, Close, Quote};
        let mut v = Validator::new(SpreadTables::default());
        let inst = tencent;
        v.accept(Input::Instrument(inst(100))).unwrap();
        let day = 1_772_415_000_000_000_000; // 2026-03-02 09:30 HKT
        let code = |r: Result<Vec<Accepted>, Rejection>| r.unwrap_err().code();
        assert!(v.accept(fill("E1", day, MAX_QTY, Some(MAX_COMMISSION))).is_ok());
        assert_eq!(code(v.accept(fill("E2", day, MAX_QTY + 100, None))), "too_large");
        assert_eq!(code(v.accept(fill("E3", day, 100, Some(dec!(79228162514264337593543950335))))), "too_large");
        assert_eq!(code(v.accept(Input::Instrument(inst(MAX_QTY + 1)))), "bad_lot_size");
        // ts + 8 h wrapped past i64::MAX: a trade date in 1677, no spread table, any price passed.
        let late = 9_223_372_000_000_000_000;
        let quote = |ts, last| {
            Input::Quote(Quote {
                symbol: Symbol(700),
                ts,
                bid: None,
                ask: None,
                last: Some(last),
                cleared: Cleared::default(),
                seq: 0,
            })
        };
        assert_eq!(code(v.accept(quote(late, dec!(79228162514264337593543950335)))), "ts_out_of_range");
        assert_eq!(code(v.accept(quote(TS_MIN - 1, dec!(385.2)))), "ts_out_of_range");
        assert_eq!(code(v.accept(fill("E4", TS_MAX, 100, None))), "ts_out_of_range");
        assert!(v.accept(quote(TS_MIN, dec!(385.2))).is_ok());
        let close = |price| Input::Close(Close { symbol: Symbol(700), ts: day, price, seq: 0 });
        assert_eq!(code(v.accept(close(dec!(200000)))), "too_large");
        assert_eq!(trade_date(i64::MAX), trade_date(i64::MAX - 8 * 3_600_000_000_000), "no wrap");
    }
}

impl Rejection {
    /// A short stable code for metrics labels and dead-letter tables.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Parse(_) => "parse",
            Rejection::UnknownSymbol(_) => "unknown_symbol",
            Rejection::NonPositiveQty(_) => "qty_not_positive",
            Rejection::NonPositivePrice(_) => "price_not_positive",
            Rejection::OffTick { .. } => "off_tick",
            Rejection::NotBoardLot { .. } => "not_board_lot",
            Rejection::OddLotTooLarge { .. } => "odd_lot_too_large",
            Rejection::UnsupportedCurrency(_) => "unsupported_currency",
            Rejection::DuplicateExecId(_) => "duplicate_exec_id",
            Rejection::UnknownExecId(_) => "unknown_exec_id",
            Rejection::AlreadyBusted(_) => "already_busted",
            Rejection::BadLotSize(_) => "bad_lot_size",
            Rejection::BadCommission(_) => "bad_commission",
            Rejection::TsOutOfRange(_) => "ts_out_of_range",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::NoCostSchedule { .. } => "no_cost_schedule",
        }
    }
}

/// A refused input with everything needed to find and fix it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it came from (file name, `stdin`, or a Kafka topic).
    pub source: SmolStr,
    /// Position within the source: line number (1-based) or offset.
    pub position: u64,
    /// The raw line as received (the pipeline keeps a long one clipped: its engine's
    /// `DEAD_LETTER_RAW_BYTES`).
    pub raw: String,
    /// Stable reason code (see [`Rejection::code`]).
    pub code: SmolStr,
    /// Human-readable reason.
    pub reason: String,
    /// The HKT trade date it is filed under: its own event time's when it parsed with one, else
    /// the input's around it (the pipeline's engine says how). 1970-01-01 in checkpoints written
    /// before it was kept.
    #[serde(default)]
    pub trade_date: NaiveDate,
}

/// Hong Kong time, for trade dates.
pub fn hkt() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// Earliest event time accepted: 1970-01-01T00:00:00Z (the feed handler stamps what it has no
/// time for, e.g. a locally built refresh snapshot, with 0: older than anything, harmless).
pub const TS_MIN: Ts = 0;
/// Event times accepted are before 2100-01-01T00:00:00Z.
pub const TS_MAX: Ts = 4_102_444_800_000_000_000;
/// Largest quantity of one fill or order, in shares (HKEX's largest issuers have ~20 billion
/// shares): with it and [`MAX_PRICE`], a fill's notional stays under 10^15 and the sums of a day
/// far from the limits of `Decimal` and `i64`.
pub const MAX_QTY: i64 = 10_000_000_000;
/// Largest price (the spread table ends below HK$10,000).
pub const MAX_PRICE: Decimal = Decimal::from_parts(100_000, 0, 0, false, 0);
/// Largest commission a fill may carry (HK$1 billion).
pub const MAX_COMMISSION: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

fn too_large(what: &'static str, value: Decimal, max: Decimal) -> Result<(), Rejection> {
    if value > max {
        Err(Rejection::TooLarge { what, value, max })
    } else {
        Ok(())
    }
}

/// The HKT trade date of an event time.
pub fn trade_date(ts: Ts) -> NaiveDate {
    const NANOS_PER_DAY: i64 = 86_400_000_000_000;
    const HKT_OFFSET: i64 = 8 * 3_600_000_000_000;
    const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;
    let days = ts.saturating_add(HKT_OFFSET).div_euclid(NANOS_PER_DAY) + UNIX_EPOCH_DAYS_FROM_CE;
    i32::try_from(days)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or_else(|| DateTime::from_timestamp_nanos(ts).with_timezone(&hkt()).date_naive())
}

enum FillState {
    /// Shared: the map moves 8 bytes, not a whole fill, when it grows, and a checkpoint takes
    /// the live fills by reference count instead of copying each (a million fills took the run
    /// loop ~1.5 s to copy).
    Live(Arc<Fill>),
    Busted,
}

/// Everything a [`Validator`] remembers, for checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorState {
    /// Known instruments.
    pub instruments: Vec<Instrument>,
    /// Fills not busted (shared with the validator: serialized as the fills themselves).
    pub live: Vec<Arc<Fill>>,
    /// Exec ids of busted fills (a second bust, or a fill re-using the id, is refused).
    pub busted: Vec<ExecId>,
}

impl ValidatorState {
    /// Fills and busted exec ids by exec id (deterministic, whatever the map's order).
    pub fn sort(&mut self) {
        self.live.sort_unstable_by(|a, b| a.exec_id.cmp(&b.exec_id));
        self.busted.sort_unstable();
    }
}

/// Stateful input rules. One per input stream; deterministic for a given input order.
pub struct Validator {
    spreads: SpreadTables,
    /// First trade date the cost schedules cover ([`Validator::with_costs_from`]).
    costs_from: Option<NaiveDate>,
    instruments: FxHashMap<Symbol, Instrument>,
    fills: ShardedMap<ExecId, FillState>,
}

impl Validator {
    /// A validator using the given spread tables.
    pub fn new(spreads: SpreadTables) -> Self {
        Validator { spreads, costs_from: None, instruments: FxHashMap::default(), fills: ShardedMap::default() }
    }

    /// Refuses fills traded before `first` (the first day the cost schedules cover), which would
    /// otherwise be charged nothing.
    pub fn with_costs_from(mut self, first: Option<NaiveDate>) -> Self {
        self.costs_from = first;
        self
    }

    /// The first trade date accepted for fills ([`Validator::with_costs_from`]).
    pub fn costs_from(&self) -> Option<NaiveDate> {
        self.costs_from
    }

    /// A validator that continues from a saved state.
    pub fn restore(spreads: SpreadTables, state: ValidatorState) -> Self {
        let mut v = Validator::new(spreads);
        v.instruments = state.instruments.into_iter().map(|i| (i.symbol, i)).collect();
        v.fills.extend(state.live.into_iter().map(|f| (f.exec_id.clone(), FillState::Live(f))));
        v.fills.extend(state.busted.into_iter().map(|x| (x, FillState::Busted)));
        v
    }

    /// What this validator remembers, fills and exec ids in the map's order
    /// ([`ValidatorState::sort`] orders them).
    pub fn state(&self) -> ValidatorState {
        let mut s =
            ValidatorState { instruments: self.instruments.values().cloned().collect(), ..ValidatorState::default() };
        s.instruments.sort_unstable_by_key(|i| i.symbol);
        s.live.reserve(self.fills.len());
        for (x, f) in self.fills.iter() {
            match f {
                FillState::Live(f) => s.live.push(Arc::clone(f)),
                FillState::Busted => s.busted.push(x.clone()),
            }
        }
        s
    }

    /// Known instruments.
    pub fn instruments(&self) -> impl Iterator<Item = &Instrument> {
        self.instruments.values()
    }

    fn instrument(&self, symbol: Symbol) -> Result<&Instrument, Rejection> {
        self.instruments.get(&symbol).ok_or(Rejection::UnknownSymbol(symbol))
    }

    fn check_price(&self, price: Decimal, ts: Ts, symbol: Symbol) -> Result<(), Rejection> {
        if price <= Decimal::ZERO {
            return Err(Rejection::NonPositivePrice(price));
        }
        too_large("price", price, MAX_PRICE)?;
        let date = trade_date(ts);
        let code = self.instruments.get(&symbol).and_then(|i| i.spread_table.as_deref());
        match self.spreads.for_code(date, code) {
            Some(table) if table.on_grid(price) => Ok(()),
            Some(table) => Err(Rejection::OffTick { price, tick: table.tick(price), date }),
            None => Ok(()),
        }
    }

    /// Applies the rules to one input; on success the caller feeds every returned update in order.
    pub fn accept(&mut self, input: Input) -> Result<Vec<Accepted>, Rejection> {
        if let Some(ts) = input.ts().filter(|ts| !(TS_MIN..TS_MAX).contains(ts)) {
            return Err(Rejection::TsOutOfRange(ts));
        }
        match input {
            Input::Instrument(inst) => {
                if inst.lot_size <= 0 || inst.lot_size > MAX_QTY {
                    return Err(Rejection::BadLotSize(inst.lot_size));
                }
                let previous = self.instruments.insert(inst.symbol, inst.clone());
                let mut out = Vec::with_capacity(2);
                match &previous {
                    None => out.push(Accepted::Market(MarketEvent::Listed(inst.symbol))),
                    Some(p) if *p == inst => return Ok(Vec::new()),
                    Some(_) => {}
                }
                out.push(Accepted::Instrument { previous, current: inst });
                Ok(out)
            }
            Input::Fill(mut fill) => {
                let inst = self.instrument(fill.key.symbol)?;
                if !inst.currency.trim().eq_ignore_ascii_case("HKD") {
                    return Err(Rejection::UnsupportedCurrency(inst.currency.clone()));
                }
                if fill.qty <= 0 {
                    return Err(Rejection::NonPositiveQty(fill.qty));
                }
                too_large("qty", Decimal::from(fill.qty), Decimal::from(MAX_QTY))?;
                if fill.odd_lot && fill.qty >= inst.lot_size {
                    return Err(Rejection::OddLotTooLarge { qty: fill.qty, lot: inst.lot_size });
                }
                if !fill.odd_lot && fill.qty % inst.lot_size != 0 {
                    return Err(Rejection::NotBoardLot { qty: fill.qty, lot: inst.lot_size });
                }
                fill.stamp_duty_exempt = !inst.stamp_duty;
                self.check_price(fill.price, fill.ts, fill.key.symbol)?;
                if let Some(c) = fill.commission {
                    if c < Decimal::ZERO || c.round_dp(2) != c {
                        return Err(Rejection::BadCommission(c));
                    }
                    too_large("commission", c, MAX_COMMISSION)?;
                }
                if let Some(first) = self.costs_from {
                    let date = trade_date(fill.ts);
                    if date < first {
                        return Err(Rejection::NoCostSchedule { date, first });
                    }
                }
                // (One lookup: in a map of every fill of the day, each is a cache miss.)
                match self.fills.entry(fill.exec_id.clone()) {
                    Entry::Occupied(_) => Err(Rejection::DuplicateExecId(fill.exec_id)),
                    Entry::Vacant(v) => {
                        let fill = Arc::new(fill);
                        v.insert(FillState::Live(Arc::clone(&fill)));
                        Ok(vec![Accepted::Fill(fill)])
                    }
                }
            }
            Input::Bust(bust) => match self.fills.get_mut(&bust.exec_id) {
                None => Err(Rejection::UnknownExecId(bust.exec_id)),
                Some(FillState::Busted) => Err(Rejection::AlreadyBusted(bust.exec_id)),
                Some(state) => match std::mem::replace(state, FillState::Busted) {
                    FillState::Live(fill) => Ok(vec![Accepted::Bust(fill)]),
                    FillState::Busted => Err(Rejection::AlreadyBusted(bust.exec_id)),
                },
            },
            Input::Quote(q) => {
                self.instrument(q.symbol)?;
                for p in [q.bid, q.ask, q.last].into_iter().flatten() {
                    self.check_price(p, q.ts, q.symbol)?;
                }
                Ok(vec![Accepted::Market(MarketEvent::Quote(q))])
            }
            Input::Close(c) => {
                self.instrument(c.symbol)?;
                self.check_price(c.price, c.ts, c.symbol)?;
                Ok(vec![Accepted::Market(MarketEvent::Close(c))])
            }
            Input::Order(o) => {
                self.instrument(o.key.symbol)?;
                if o.qty <= 0 {
                    return Err(Rejection::NonPositiveQty(o.qty));
                }
                too_large("qty", Decimal::from(o.qty), Decimal::from(MAX_QTY))?;
                if let Some(p) = o.price {
                    self.check_price(p, o.ts, o.key.symbol)?;
                }
                Ok(vec![Accepted::Order(o)])
            }
            Input::Status(st) => {
                if let StatusSubject::Security(s) = st.subject {
                    self.instrument(s)?;
                }
                Ok(vec![Accepted::Status(st)])
            }
        }
    }
}
