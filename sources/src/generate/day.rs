//! The day itself: a stream of contract lines in arrival order.
//!
//! ```text
//!  instruments ─► session slots (sorted, U-shaped over 09:30–16:00) ─► expiries ─► closes 16:08–16:10
//!                    │ fill slot: order NEW ─ fill ─ order PARTIALLY_FILLED/FILLED
//!                    │ quote slot: bid/ask and/or last
//!                    └ late fills and busts wait in a heap until the clock passes their arrival
//! ```
//!
//! Independent random streams (ChaCha8, one seed, one stream each) drive the schedule, the market,
//! the trading, lateness, busts and faults, so turning one knob leaves the other parts unchanged.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use harbour_dataflows::model::{Bust, Close, Fill, Order, OrderStatus, PositionKey, Quote, Side, Symbol};
use harbour_dataflows::ticks::SpreadTables;
use harbour_dataflows::validate::Input;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use smol_str::SmolStr;

use super::clock::{Clock, CLOSE_FROM_MS, CLOSE_WINDOW_MS, SESSION_MS};
use super::config::{GenerateConfig, GenerateError};
use super::faults::{Faults, Market};
use super::stats::DayStats;
use super::universe::{universe, Listing};
use super::walk::{Grid, Walk};
use crate::contract::to_line;

/// Session time at which open orders expire (15:59:59.999); busts are issued no later.
const END_MS: u64 = SESSION_MS - 1;
/// Slots end a second before the close, leaving room for busts after the last fill.
const LAST_SLOT_MS: u64 = SESSION_MS - 1_000;
/// Chance that a fill is an odd-lot trade (its own one-fill order).
const ODD_LOT: f64 = 0.01;
/// Chance that an open order is cancelled when its book trades again.
const CANCEL: f64 = 0.05;
/// Chance that a new order is a market order.
const MARKET_ORDER: f64 = 0.08;
/// Chance that a fill carries the broker's commission.
const COMMISSION: f64 = 0.25;

const STRATEGIES: [&str; 10] = [
    "market-making",
    "stat-arb",
    "momentum",
    "index-arb",
    "event-driven",
    "pairs",
    "mean-reversion",
    "block-trading",
    "delta-hedge",
    "vwap-exec",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fill,
    Bust,
    Quote,
    Order,
}

/// A line that arrives later than it was made (late fill, bust).
struct Pending {
    arrival: u64,
    seq: u64,
    kind: Kind,
    line: String,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.arrival, self.seq).cmp(&(other.arrival, other.seq))
    }
}

struct OpenOrder {
    id: SmolStr,
    side: Side,
    qty: i64,
    filled: i64,
    /// Limit in grid units; `None` for a market order.
    limit: Option<i64>,
}

/// One account/strategy/symbol: its position and working order.
#[derive(Default)]
struct Book {
    position: i64,
    open: Option<OpenOrder>,
}

enum Phase {
    Instruments,
    Session,
    EndOfSession,
    Closes,
    Done,
}

struct Rngs {
    market: ChaCha8Rng,
    trading: ChaCha8Rng,
    late: ChaCha8Rng,
    bust: ChaCha8Rng,
}

fn stream(seed: u64, n: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(n);
    rng
}

/// A session time drawn from a U-shaped intraday profile: busiest at the open and the close.
fn slot_time(rng: &mut ChaCha8Rng) -> u64 {
    loop {
        let x: f64 = rng.random();
        let d = 2.0 * x - 1.0;
        if rng.random::<f64>() * 3.0 < 1.0 + 2.0 * d * d {
            return (x * LAST_SLOT_MS as f64) as u64;
        }
    }
}

/// Buy or sell, leaning against the position so that it goes through zero now and then.
fn side(position: i64, lot: i64, rng: &mut ChaCha8Rng) -> Side {
    let lean = (position as f64 / (40 * lot) as f64).clamp(-1.0, 1.0);
    if rng.random_bool(0.5 - 0.2 * lean) {
        Side::Buy
    } else {
        Side::Sell
    }
}

/// The generated day, line by line in arrival order. Deterministic: the same config gives the same
/// lines. [`Day::stats`] is complete once the iterator is exhausted.
pub struct Day {
    grid: Grid,
    clock: Clock,
    listings: Vec<Listing>,
    walks: Vec<Walk>,
    /// Cumulative activity weights of the listings, for picking a symbol.
    weights: Vec<u64>,
    accounts: Vec<SmolStr>,
    strategies: Vec<SmolStr>,
    /// Session times of the slots, ascending, and whether each is a fill (else a quote).
    times: Vec<u64>,
    is_fill: Vec<bool>,
    cursor: usize,
    books: BTreeMap<(usize, usize, usize), Book>,
    pending: BinaryHeap<Reverse<Pending>>,
    out: VecDeque<String>,
    phase: Phase,
    next_exec: u64,
    next_order: u64,
    next_pending: u64,
    /// Session time of the slot being generated (the time of invalid lines).
    now: u64,
    rng: Rngs,
    faults: Faults,
    late_ratio: f64,
    bust_ratio: f64,
    stats: DayStats,
}

impl Day {
    /// Prepares the day for `cfg` on the built-in spread tables (the schedule is drawn here; lines
    /// are made as they are read).
    pub fn new(cfg: &GenerateConfig) -> Result<Day, GenerateError> {
        Day::with_spreads(cfg, &SpreadTables::default())
    }

    /// Every symbol's opening price (yesterday's close), sector and daily volatility (a fraction).
    pub fn opening(&self) -> Vec<(Symbol, f64, String, f64)> {
        self.listings
            .iter()
            .zip(&self.walks)
            .map(|(l, w)| {
                let price = self.grid.decimal(w.price).to_f64().unwrap_or(0.0);
                (
                    l.instrument.symbol,
                    price,
                    l.instrument.sector.clone().unwrap_or_default(),
                    f64::from(l.vol_bp) / 10_000.0,
                )
            })
            .collect()
    }

    /// Prepares the day for `cfg` with prices on the grid of `spreads` (when the pipeline is
    /// configured with its own spread tables).
    pub fn with_spreads(cfg: &GenerateConfig, spreads: &SpreadTables) -> Result<Day, GenerateError> {
        cfg.validate()?;
        let table = spreads.on(cfg.date).ok_or(GenerateError::Date(cfg.date))?;
        let grid = Grid::new(table);
        let mut reference = stream(cfg.seed, 0);
        let mut market = stream(cfg.seed, 1);
        let listings = universe(cfg.symbols, &grid, &mut reference);
        let walks = listings.iter().map(|l| Walk::new(l, &grid, &mut market)).collect();
        let weights = (0..listings.len() as u64)
            .scan(0, |sum, i| {
                *sum += 1_000_000 / (i + 2);
                Some(*sum)
            })
            .collect();
        let mut times: Vec<u64> = (0..cfg.fills + cfg.quotes).map(|_| slot_time(&mut reference)).collect();
        times.sort_unstable();
        let mut is_fill = vec![true; cfg.fills];
        is_fill.resize(cfg.fills + cfg.quotes, false);
        is_fill.shuffle(&mut reference);
        Ok(Day {
            grid,
            clock: Clock::new(cfg.date),
            listings,
            walks,
            weights,
            accounts: (1..=cfg.accounts).map(|i| format!("ACC-{i:03}").into()).collect(),
            strategies: (0..cfg.strategies)
                .map(|i| match STRATEGIES.get(i) {
                    Some(s) => SmolStr::new_static(s),
                    None => format!("strategy-{:02}", i + 1).into(),
                })
                .collect(),
            times,
            is_fill,
            cursor: 0,
            books: BTreeMap::new(),
            pending: BinaryHeap::new(),
            out: VecDeque::new(),
            phase: Phase::Instruments,
            next_exec: 0,
            next_order: 0,
            next_pending: 0,
            now: 0,
            rng: Rngs { market, trading: stream(cfg.seed, 2), late: stream(cfg.seed, 3), bust: stream(cfg.seed, 4) },
            faults: Faults::new(stream(cfg.seed, 5), cfg.invalid_ratio),
            late_ratio: cfg.late_ratio,
            bust_ratio: cfg.bust_ratio,
            stats: DayStats::default(),
        })
    }

    /// Counts of the lines produced so far (all of them once the iterator is exhausted).
    pub fn stats(&self) -> &DayStats {
        &self.stats
    }

    /// Sends a line that is not an event (instrument, close).
    fn plain(&mut self, line: String) {
        self.stats.lines += 1;
        self.out.push_back(line);
    }

    /// Sends an event line now, followed by any invalid lines the fault stream asks for.
    fn emit(&mut self, kind: Kind, line: String) {
        match kind {
            Kind::Fill => {
                self.stats.fills += 1;
                self.faults.sent_fill(&line);
            }
            Kind::Bust => self.stats.busts += 1,
            Kind::Quote => self.stats.quotes += 1,
            Kind::Order => self.stats.orders += 1,
        }
        self.stats.lines += 1;
        self.out.push_back(line);
        while self.faults.another() {
            let market = Market {
                grid: &self.grid,
                listings: &self.listings,
                walks: &self.walks,
                accounts: &self.accounts,
                strategies: &self.strategies,
                ts: self.clock.at(self.now),
            };
            let (kind, line) = self.faults.line(&market);
            self.stats.invalid += 1;
            self.stats.invalid_by_kind.add(kind);
            self.stats.lines += 1;
            self.out.push_back(line);
        }
    }

    /// Holds a line back until session time `arrival`.
    fn defer(&mut self, arrival: u64, kind: Kind, line: String) {
        self.next_pending += 1;
        self.pending.push(Reverse(Pending { arrival, seq: self.next_pending, kind, line }));
    }

    /// Sends the held-back lines due by `until`.
    fn release(&mut self, until: u64) {
        while self.pending.peek().is_some_and(|p| p.0.arrival <= until) {
            let Reverse(p) = self.pending.pop().expect("peeked");
            self.emit(p.kind, p.line);
        }
    }

    fn pick_symbol(weights: &[u64], rng: &mut ChaCha8Rng) -> usize {
        let total = *weights.last().expect("at least one symbol");
        let r = rng.random_range(0..total);
        weights.partition_point(|&c| c <= r)
    }

    fn order_line(&self, order: &OpenOrder, key: &PositionKey, status: OrderStatus, ms: u64) -> String {
        to_line(&Input::Order(Order {
            ts: self.clock.at(ms),
            order_id: order.id.clone(),
            key: key.clone(),
            side: order.side,
            qty: order.qty,
            price: order.limit.map(|p| self.grid.decimal(p)),
            order_type: if order.limit.is_some() { "LIMIT" } else { "MARKET" }.into(),
            status,
            source_seq: 0,
        }))
    }

    /// Sends a fill, on time or late, and schedules its bust if it gets one.
    fn send_fill(&mut self, t: u64, fill: Fill) {
        let exec_id = fill.exec_id.clone();
        let line = to_line(&Input::Fill(fill));
        let arrival = if self.rng.late.random_bool(self.late_ratio) {
            self.stats.late += 1;
            let u: f64 = self.rng.late.random();
            t + 2_000 + (u * u * 298_000.0) as u64
        } else {
            t
        };
        if arrival == t {
            self.emit(Kind::Fill, line);
        } else {
            self.defer(arrival, Kind::Fill, line);
        }
        if self.rng.bust.random_bool(self.bust_ratio) {
            let u: f64 = self.rng.bust.random();
            let at = (t + 5_000 + (u * u * 595_000.0) as u64).min(END_MS);
            let line = to_line(&Input::Bust(Bust { exec_id, ts: self.clock.at(at) }));
            self.defer(at.max(arrival + 1), Kind::Bust, line);
        }
    }

    /// A fill slot at session time `t` (the previous slot was at `prev`).
    fn fill_slot(&mut self, t: u64, prev: u64) {
        let rng = &mut self.rng.trading;
        let sym = Self::pick_symbol(&self.weights, rng);
        let acc = rng.random_range(0..self.accounts.len());
        let strat = rng.random_range(0..self.strategies.len());
        let lead = rng.random_range(0..=(t - prev).min(200));
        self.walks[sym].advance(&self.grid, t, &mut self.rng.market);
        let rng = &mut self.rng.trading;
        let walk = self.walks[sym].price;
        let lot = self.listings[sym].instrument.lot_size;
        let key = PositionKey {
            account: self.accounts[acc].clone(),
            strategy: self.strategies[strat].clone(),
            symbol: self.listings[sym].instrument.symbol,
        };
        let mut book = self.books.remove(&(acc, strat, sym)).unwrap_or_default();
        let mut before = Vec::new();
        let odd_lot = lot > 1 && rng.random_bool(ODD_LOT);
        // Odd lots trade on their own market: a separate one-fill order, the working one stays.
        let mut order = if odd_lot { None } else { book.open.take() };
        if order.is_some() && rng.random_bool(CANCEL) {
            let cancelled = order.take().expect("checked");
            before.push(self.order_line(&cancelled, &key, OrderStatus::Cancelled, t - lead));
        }
        let rng = &mut self.rng.trading;
        let mut order = match order {
            Some(o) => o,
            None => {
                let side = side(book.position, lot, rng);
                let qty = if odd_lot {
                    rng.random_range(1..lot)
                } else {
                    let u: f64 = rng.random();
                    lot * (1 + (u * u * u * 20.0) as i64).min(20)
                };
                let limit = if odd_lot || !rng.random_bool(MARKET_ORDER) {
                    let aggression = rng.random_range(0..=2);
                    Some(self.grid.steps(walk, side.sign() * aggression))
                } else {
                    None
                };
                self.next_order += 1;
                let o = OpenOrder { id: format!("O{}", self.next_order).into(), side, qty, filled: 0, limit };
                before.push(self.order_line(&o, &key, OrderStatus::New, t - lead));
                o
            }
        };
        let rng = &mut self.rng.trading;
        let remaining = order.qty - order.filled;
        let qty = if odd_lot || remaining == lot || rng.random_bool(0.55) {
            remaining
        } else {
            lot * rng.random_range(1..=remaining / lot)
        };
        let price = match (order.side, order.limit) {
            (Side::Buy, Some(limit)) => walk.min(limit),
            (Side::Sell, Some(limit)) => walk.max(limit),
            (_, None) => walk,
        };
        let price = self.grid.decimal(price);
        let commission = rng.random_bool(COMMISSION).then(|| {
            let bp = [3, 5, 8][acc % 3];
            (price * Decimal::from(qty) * Decimal::new(bp, 4)).round_dp(2).max(Decimal::ONE)
        });
        order.filled += qty;
        book.position += order.side.sign() * qty;
        self.next_exec += 1;
        let fill = Fill {
            ts: self.clock.at(t),
            exec_id: format!("X{}", self.next_exec).into(),
            order_id: order.id.clone(),
            key: key.clone(),
            side: order.side,
            qty,
            price,
            commission,
            stamp_duty_exempt: false,
            odd_lot,
            source_seq: 0,
        };
        let status = if order.filled == order.qty { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
        let after = self.order_line(&order, &key, status, t);
        if status == OrderStatus::PartiallyFilled {
            book.open = Some(order);
        }
        self.books.insert((acc, strat, sym), book);
        for line in before {
            self.emit(Kind::Order, line);
        }
        self.send_fill(t, fill);
        self.emit(Kind::Order, after);
    }

    /// A quote slot at session time `t`: bid and ask, bid, ask and last, or last alone.
    fn quote_slot(&mut self, t: u64) {
        let rng = &mut self.rng.market;
        let sym = Self::pick_symbol(&self.weights, rng);
        self.walks[sym].advance(&self.grid, t, rng);
        let p = self.walks[sym].price;
        let shape = rng.random_range(0..100);
        let bid = if rng.random_bool(0.5) { p } else { self.grid.down(p) };
        let spread = match rng.random_range(0..20) {
            0 => 3,
            1..=3 => 2,
            _ => 1,
        };
        let ask = self.grid.steps(bid, spread);
        let g = &self.grid;
        let (bid, ask, last) = match shape {
            0..60 => (Some(g.decimal(bid)), Some(g.decimal(ask)), None),
            60..85 => (Some(g.decimal(bid)), Some(g.decimal(ask)), Some(g.decimal(p))),
            _ => (None, None, Some(g.decimal(p))),
        };
        let line = to_line(&Input::Quote(Quote {
            symbol: self.listings[sym].instrument.symbol,
            ts: self.clock.at(t),
            bid,
            ask,
            last,
            cleared: Default::default(),
            seq: 0,
        }));
        self.emit(Kind::Quote, line);
    }

    /// Orders still working at the end of the session expire.
    fn expire(&mut self) {
        let mut lines = Vec::new();
        for (&(acc, strat, sym), book) in &self.books {
            if let Some(order) = &book.open {
                let key = PositionKey {
                    account: self.accounts[acc].clone(),
                    strategy: self.strategies[strat].clone(),
                    symbol: self.listings[sym].instrument.symbol,
                };
                lines.push(self.order_line(order, &key, OrderStatus::Expired, END_MS));
            }
        }
        for line in lines {
            self.emit(Kind::Order, line);
        }
    }

    /// Closing prices from the closing auction, at a random time in 16:08–16:10 per symbol.
    fn closes(&mut self) {
        let mut closes = Vec::with_capacity(self.listings.len());
        for sym in 0..self.listings.len() {
            let ms = CLOSE_FROM_MS + self.rng.market.random_range(0..CLOSE_WINDOW_MS);
            self.walks[sym].advance(&self.grid, ms, &mut self.rng.market);
            closes.push((ms, sym));
        }
        closes.sort_unstable();
        for (ms, sym) in closes {
            let line = to_line(&Input::Close(Close {
                symbol: self.listings[sym].instrument.symbol,
                ts: self.clock.at(ms),
                price: self.grid.decimal(self.walks[sym].price),
                seq: 0,
            }));
            self.stats.closes += 1;
            self.plain(line);
        }
    }

    /// Generates the next few lines; false when the day is over.
    fn step(&mut self) -> bool {
        match self.phase {
            Phase::Instruments => {
                for i in 0..self.listings.len() {
                    let line = to_line(&Input::Instrument(self.listings[i].instrument.clone()));
                    self.stats.instruments += 1;
                    self.plain(line);
                }
                self.phase = Phase::Session;
            }
            Phase::Session => {
                let Some(&t) = self.times.get(self.cursor) else {
                    self.phase = Phase::EndOfSession;
                    return true;
                };
                let prev = self.cursor.checked_sub(1).map_or(0, |i| self.times[i]);
                let fill = self.is_fill[self.cursor];
                self.cursor += 1;
                self.now = t;
                self.release(t);
                if fill {
                    self.fill_slot(t, prev);
                } else {
                    self.quote_slot(t);
                }
            }
            Phase::EndOfSession => {
                self.now = END_MS;
                self.release(END_MS);
                self.expire();
                self.release(u64::MAX);
                self.phase = Phase::Closes;
            }
            Phase::Closes => {
                self.closes();
                self.phase = Phase::Done;
            }
            Phase::Done => return false,
        }
        true
    }
}

impl Iterator for Day {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.out.pop_front() {
                return Some(line);
            }
            if !self.step() {
                return None;
            }
        }
    }
}
