//! Prices on the spread-table grid, as integers, and the per-symbol random walk through the session.
//!
//! A [`Grid`] is the trade date's spread table in integer units (0.001 HK$ for the HKEX tables), so a
//! step of one tick is an integer addition and every price it yields is on the grid by construction.
//! The walk uses only integer and IEEE-exact floating-point operations (no `ln`, `exp`, `cos`), so a
//! seed gives the same day on every platform.

use harbour_dataflows::ticks::SpreadTable;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use super::clock::SESSION_MS;
use super::universe::Listing;

/// A spread table in integer price units of `10^-scale` HK$.
pub(crate) struct Grid {
    scale: u32,
    /// The lowest price, in units (HK$0.01, [`harbour_dataflows::ticks::MIN_PRICE`]).
    min: i64,
    /// (inclusive upper bound, tick), ascending, both in units.
    bands: Vec<(i64, i64)>,
}

fn units(d: Decimal, scale: u32) -> i64 {
    let mut d = d;
    d.rescale(scale);
    i64::try_from(d.mantissa()).expect("spread table values fit in i64 units")
}

impl Grid {
    /// The integer form of `table`.
    pub fn new(table: &SpreadTable) -> Grid {
        let scale = table
            .bands
            .iter()
            .flat_map(|b| [b.up_to.normalize().scale(), b.tick.normalize().scale()])
            .max()
            .unwrap_or(0);
        let min = units(harbour_dataflows::ticks::MIN_PRICE, scale);
        Grid { scale, min, bands: table.bands.iter().map(|b| (units(b.up_to, scale), units(b.tick, scale))).collect() }
    }

    /// The tick at `p` (the top band's tick above the table, which the walk never reaches).
    pub fn tick(&self, p: i64) -> i64 {
        self.bands.iter().find(|b| p <= b.0).or(self.bands.last()).map_or(1, |b| b.1)
    }

    /// True when `p` is on the grid.
    pub fn on_grid(&self, p: i64) -> bool {
        p >= self.min && p % self.tick(p) == 0
    }

    /// `p` rounded down to the grid.
    pub fn floor(&self, p: i64) -> i64 {
        p - p % self.tick(p)
    }

    /// One tick up from an on-grid `p`, onto the next band's grid when crossing a band boundary.
    pub fn up(&self, p: i64) -> i64 {
        let q = p + self.tick(p);
        let t = self.tick(q);
        if q % t == 0 {
            return q;
        }
        // Into a coarser band: its first price. Band bounds are multiples of the next band's tick
        // in the HKEX tables; the loop only matters for a table where they are not.
        let mut q = q - q % t + t;
        while !self.on_grid(q) {
            q += 1;
        }
        q
    }

    /// One tick down from an on-grid `p`; stays at `p` rather than go below the lowest price.
    pub fn down(&self, p: i64) -> i64 {
        let q = p - self.tick(p);
        if q < self.min {
            p
        } else {
            self.floor(q)
        }
    }

    /// `n` ticks up (`n > 0`) or down (`n < 0`).
    pub fn steps(&self, mut p: i64, n: i64) -> i64 {
        for _ in 0..n.unsigned_abs() {
            p = if n > 0 { self.up(p) } else { self.down(p) };
        }
        p
    }

    /// Thousandths of a HK$ in grid units, rounded down.
    pub fn thousandths(&self, x: i64) -> i64 {
        units(Decimal::new(x, 3).trunc_with_scale(self.scale), self.scale)
    }

    /// The price as a decimal without trailing zeros.
    pub fn decimal(&self, p: i64) -> Decimal {
        Decimal::new(p, self.scale).normalize()
    }

    /// One grid unit as a decimal (0.001 HK$ for the HKEX tables), finer than any tick.
    pub fn unit_decimal(&self) -> Decimal {
        Decimal::new(1, self.scale)
    }
}

/// A standard-normal-like draw: the sum of four uniforms, centred and scaled (Irwin–Hall).
fn gaussish(rng: &mut ChaCha8Rng) -> f64 {
    let s: f64 = (0..4).map(|_| rng.random::<f64>()).sum();
    (s - 2.0) * 3f64.sqrt()
}

/// One symbol's price through the day: a Brownian motion in ticks, shown rounded to the grid.
///
/// The motion is kept unrounded (`latent`), so a symbol touched every millisecond moves as much
/// over the day as one touched every minute; only the shown price is rounded to whole ticks.
pub(crate) struct Walk {
    /// Current price, on the grid, in units.
    pub price: i64,
    /// Ticks moved since the start, as shown (`latent` rounded).
    shown: i64,
    /// Ticks moved since the start, unrounded.
    latent: f64,
    last_ms: u64,
    /// Variance of the move in ticks² per millisecond of session time.
    var_per_ms: f64,
    /// Bounds beyond which the walk turns back, in units.
    lo: i64,
    hi: i64,
}

impl Walk {
    /// Starts at a price drawn from the listing's range (yesterday's close, say).
    pub fn new(listing: &Listing, grid: &Grid, rng: &mut ChaCha8Rng) -> Walk {
        let start = grid.floor(rng.random_range(listing.lo..=listing.hi)).max(1);
        let ticks_per_day = f64::from(listing.vol_bp) / 10_000.0 * start as f64 / grid.tick(start) as f64;
        Walk {
            price: start,
            shown: 0,
            latent: 0.0,
            last_ms: 0,
            var_per_ms: ticks_per_day * ticks_per_day / SESSION_MS as f64,
            lo: listing.lo * 2 / 3,
            hi: listing.hi * 3 / 2,
        }
    }

    /// Moves the price to session time `now_ms`, by the listing's volatility over the time since
    /// the last move. Far outside the listing's usual range (below two thirds of it or above half
    /// as much again) the move is turned back towards it; within, the walk is free.
    pub fn advance(&mut self, grid: &Grid, now_ms: u64, rng: &mut ChaCha8Rng) {
        let dt = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        if dt == 0 {
            return;
        }
        let mut dx = gaussish(rng) * (self.var_per_ms * dt as f64).sqrt();
        if self.price > self.hi {
            dx = -dx.abs();
        } else if self.price < self.lo {
            dx = dx.abs();
        }
        self.latent += dx;
        let target = self.latent.round() as i64;
        self.price = grid.steps(self.price, (target - self.shown).clamp(-1_000, 1_000));
        self.shown = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use harbour_dataflows::ticks::SpreadTables;

    fn check(date: NaiveDate) {
        let tables = SpreadTables::default();
        let table = tables.on(date).unwrap();
        let grid = Grid::new(table);
        // Walk up through every band from the bottom and back down, checking against the table.
        let mut p = grid.min;
        assert_eq!(grid.decimal(p), Decimal::new(1, 2));
        let mut ups = 0;
        while p < grid.thousandths(1_200_000) {
            let q = grid.up(p);
            assert!(q > p && table.on_grid(grid.decimal(q)), "up from {p} to {q}");
            assert_eq!(table.tick(grid.decimal(p)), Some(grid.decimal(grid.tick(p))));
            p = q;
            ups += 1;
        }
        let mut downs = 0;
        assert_eq!(grid.down(grid.min), grid.min, "never below HK$0.01");
        while p > grid.min {
            let q = grid.down(p);
            assert!(q < p && table.on_grid(grid.decimal(q)), "down from {p} to {q}");
            p = q;
            downs += 1;
        }
        assert_eq!(ups, downs, "the grid is the same going up and down");
        assert_eq!(grid.decimal(385_200), Decimal::new(3852, 1));
    }

    #[test]
    fn grid_steps_match_the_spread_table() {
        check(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap());
        check(NaiveDate::from_ymd_opt(2025, 3, 3).unwrap());
    }
}
