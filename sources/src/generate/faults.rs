//! Intentionally invalid lines, mixed into the day at `invalid_ratio`; each kind is one the input
//! rules reject for its own reason (see [`InvalidKind::rejection_code`]).
//!
//! Faults draw from their own random stream and their own id space (`XF…`, `XU…`), so the valid
//! lines of a day are the same whatever `invalid_ratio` is.

use std::collections::VecDeque;

use harbour_dataflows::model::{Bust, Fill, PositionKey, Quote, Side, Symbol, Ts};
use harbour_dataflows::validate::Input;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use smol_str::SmolStr;

use super::stats::InvalidKind;
use super::universe::Listing;
use super::walk::{Grid, Walk};
use crate::contract::{format_ts, to_line};

/// A security code that is never listed.
pub(crate) const UNKNOWN_SYMBOL: Symbol = Symbol(99_999);

/// How many earlier fill lines to keep for duplicates.
const RECENT: usize = 64;

/// The state of the market an invalid line is made from.
pub(crate) struct Market<'a> {
    pub grid: &'a Grid,
    pub listings: &'a [Listing],
    pub walks: &'a [Walk],
    pub accounts: &'a [SmolStr],
    pub strategies: &'a [SmolStr],
    /// Event time for the line.
    pub ts: Ts,
}

/// Makes the invalid lines.
pub(crate) struct Faults {
    rng: ChaCha8Rng,
    ratio: f64,
    seq: u64,
    recent: VecDeque<String>,
}

impl Faults {
    pub fn new(rng: ChaCha8Rng, ratio: f64) -> Faults {
        Faults { rng, ratio, seq: 0, recent: VecDeque::with_capacity(RECENT) }
    }

    /// Remembers a valid fill line that has been sent, for a later duplicate.
    pub fn sent_fill(&mut self, line: &str) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(line.to_owned());
    }

    /// Whether another invalid line follows the valid line just sent. Drawing until `false` gives a
    /// geometric number of invalid lines per valid one, so `ratio` of all lines are invalid.
    pub fn another(&mut self) -> bool {
        self.ratio > 0.0 && self.rng.random_bool(self.ratio)
    }

    /// A valid-looking fill at the current price of a random symbol, with that symbol's board lot
    /// and its price in grid units.
    fn fill(&mut self, m: &Market) -> (Fill, i64, i64) {
        self.seq += 1;
        let sym = self.rng.random_range(0..m.listings.len());
        let lot = m.listings[sym].instrument.lot_size;
        let price = m.walks[sym].price;
        let fill = Fill {
            ts: m.ts,
            exec_id: format!("XF{}", self.seq).into(),
            order_id: format!("OF{}", self.seq).into(),
            key: PositionKey {
                account: m.accounts[self.rng.random_range(0..m.accounts.len())].clone(),
                strategy: m.strategies[self.rng.random_range(0..m.strategies.len())].clone(),
                symbol: m.listings[sym].instrument.symbol,
            },
            side: if self.rng.random_bool(0.5) { Side::Buy } else { Side::Sell },
            qty: lot * self.rng.random_range(1..=10),
            price: m.grid.decimal(price),
            commission: None,
            stamp_duty_exempt: false,
            odd_lot: false,
            source_seq: 0,
        };
        (fill, lot, price)
    }

    /// One invalid line and its kind.
    pub fn line(&mut self, m: &Market) -> (InvalidKind, String) {
        let mut kind = InvalidKind::ALL[self.rng.random_range(0..InvalidKind::ALL.len())];
        if kind == InvalidKind::DuplicateExecId && self.recent.is_empty() {
            kind = InvalidKind::Malformed;
        }
        let line = match kind {
            InvalidKind::Malformed => self.malformed(m),
            InvalidKind::UnknownSymbol => {
                let (mut f, _, _) = self.fill(m);
                if self.rng.random_bool(0.5) {
                    f.key.symbol = UNKNOWN_SYMBOL;
                    to_line(&Input::Fill(f))
                } else {
                    to_line(&Input::Quote(Quote {
                        symbol: UNKNOWN_SYMBOL,
                        ts: m.ts,
                        bid: None,
                        ask: None,
                        last: Some(f.price),
                        cleared: Default::default(),
                        seq: 0,
                    }))
                }
            }
            InvalidKind::OffTick => {
                let (mut f, _, price) = self.fill(m);
                f.price = self.off_tick(m.grid, price);
                to_line(&Input::Fill(f))
            }
            InvalidKind::NotBoardLot => {
                let (mut f, lot, _) = self.fill(m);
                debug_assert!(lot > 1, "board lots of the universe are at least 100");
                f.qty += self.rng.random_range(1..lot.max(2));
                to_line(&Input::Fill(f))
            }
            InvalidKind::UnknownExecId => {
                self.seq += 1;
                to_line(&Input::Bust(Bust { exec_id: format!("XU{}", self.seq).into(), ts: m.ts }))
            }
            InvalidKind::DuplicateExecId => self.recent[self.rng.random_range(0..self.recent.len())].clone(),
            InvalidKind::ZeroQty => {
                let (mut f, _, _) = self.fill(m);
                f.qty = 0;
                to_line(&Input::Fill(f))
            }
        };
        (kind, line)
    }

    /// A price between two ticks, as a slip of one decimal place would give (518.7 where the tick
    /// is 0.5, 60.251 where it is 0.01); half a grid unit above when the tick is one unit.
    fn off_tick(&mut self, grid: &Grid, price: i64) -> Decimal {
        let tick = grid.tick(price);
        if tick > 1 {
            let mut step = 1;
            while step * 10 < tick {
                step *= 10;
            }
            let off = price + step * self.rng.random_range(1..=(tick - 1) / step);
            if !grid.on_grid(off) {
                return grid.decimal(off);
            }
        }
        grid.decimal(price) + grid.unit_decimal() / Decimal::TWO
    }

    fn malformed(&mut self, m: &Market) -> String {
        let (f, _, _) = self.fill(m);
        match self.rng.random_range(0..4) {
            0 | 1 => {
                // Cut off in transit: never a complete object.
                let mut line = to_line(&Input::Fill(f));
                let cut = self.rng.random_range(1..line.len());
                line.truncate(cut);
                line
            }
            2 => format!(r#"{{"type":"bust","exec_id":"{}","ts":"{}",}}"#, f.exec_id, format_ts(f.ts)),
            _ => format!(
                "fill,{},{},{},{},{},{},{},{},{}",
                f.exec_id,
                f.order_id,
                f.key.account,
                f.key.strategy,
                f.key.symbol,
                f.side.as_str(),
                f.qty,
                f.price,
                format_ts(f.ts)
            ),
        }
    }
}
