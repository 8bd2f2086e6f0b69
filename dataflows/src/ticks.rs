//! The HKEX spread table (Part A), kept as dated data, and the tick-grid check.
//!
//! Source: ../shared/HKEX.md §2. From 4 Aug 2025 the >10–20 band ticks in 0.01 and >20–50 in 0.02;
//! before, 0.02 and 0.05. A table applies from its effective date until the next one.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One band: prices up to and including `up_to` (and above the previous band) tick in `tick`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadBand {
    /// Upper bound of the band, inclusive.
    pub up_to: Decimal,
    /// Tick size within the band.
    pub tick: Decimal,
}

/// A spread table in force from `effective_from`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadTable {
    /// First trade date (HKT) the table applies to.
    pub effective_from: NaiveDate,
    /// Bands in ascending order of `up_to`.
    pub bands: Vec<SpreadBand>,
}

/// Dated spread tables; the newest whose date is not after the trade date applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpreadTables(pub Vec<SpreadTable>);

fn bands(rows: &[(i64, u32, i64, u32)]) -> Vec<SpreadBand> {
    rows.iter().map(|&(u, us, t, ts)| SpreadBand { up_to: Decimal::new(u, us), tick: Decimal::new(t, ts) }).collect()
}

impl Default for SpreadTables {
    fn default() -> Self {
        let before = bands(&[
            (25, 2, 1, 3),
            (50, 2, 5, 3),
            (10, 0, 1, 2),
            (20, 0, 2, 2),
            (50, 0, 5, 2),
            (100, 0, 5, 2),
            (200, 0, 10, 2),
            (500, 0, 20, 2),
            (1000, 0, 50, 2),
            (2000, 0, 1, 0),
            (5000, 0, 2, 0),
            (9995, 0, 5, 0),
        ]);
        let since_2025 = bands(&[
            (25, 2, 1, 3),
            (50, 2, 5, 3),
            (10, 0, 1, 2),
            (20, 0, 1, 2),
            (50, 0, 2, 2),
            (100, 0, 5, 2),
            (200, 0, 10, 2),
            (500, 0, 20, 2),
            (1000, 0, 50, 2),
            (2000, 0, 1, 0),
            (5000, 0, 2, 0),
            (9995, 0, 5, 0),
        ]);
        SpreadTables(vec![
            SpreadTable { effective_from: NaiveDate::from_ymd_opt(2000, 1, 1).expect("date"), bands: before },
            SpreadTable { effective_from: NaiveDate::from_ymd_opt(2025, 8, 4).expect("date"), bands: since_2025 },
        ])
    }
}

impl SpreadTables {
    /// The table in force on `date`.
    pub fn on(&self, date: NaiveDate) -> Option<&SpreadTable> {
        self.0.iter().filter(|t| t.effective_from <= date).max_by_key(|t| t.effective_from)
    }
}

impl SpreadTable {
    /// The tick for `price`, `None` when the price is outside the table (≤ 0 or above the top band).
    pub fn tick(&self, price: Decimal) -> Option<Decimal> {
        if price <= Decimal::ZERO {
            return None;
        }
        self.bands.iter().find(|b| price <= b.up_to).map(|b| b.tick)
    }

    /// True when `price` lies on the tick grid of its band.
    pub fn on_grid(&self, price: Decimal) -> bool {
        match self.tick(price) {
            Some(tick) => (price % tick).is_zero(),
            None => false,
        }
    }

    /// Rounds `price` down to the grid (for generators and tests).
    pub fn floor_to_grid(&self, price: Decimal) -> Option<Decimal> {
        let tick = self.tick(price)?;
        Some(price - price % tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn on(y: i32, m: u32, d: u32) -> SpreadTable {
        SpreadTables::default().on(NaiveDate::from_ymd_opt(y, m, d).unwrap()).unwrap().clone()
    }

    #[test]
    fn bands_since_august_2025() {
        let t = on(2026, 1, 2);
        assert_eq!(t.tick(dec!(0.25)), Some(dec!(0.001)));
        assert_eq!(t.tick(dec!(0.251)), Some(dec!(0.005)));
        assert_eq!(t.tick(dec!(15)), Some(dec!(0.01)));
        assert_eq!(t.tick(dec!(20)), Some(dec!(0.01)));
        assert_eq!(t.tick(dec!(20.02)), Some(dec!(0.02)));
        assert_eq!(t.tick(dec!(385.2)), Some(dec!(0.2)));
        assert_eq!(t.tick(dec!(9995)), Some(dec!(5)));
        assert_eq!(t.tick(dec!(10000)), None);
        assert!(t.on_grid(dec!(385.200)));
        assert!(!t.on_grid(dec!(385.300)));
        assert!(t.on_grid(dec!(20.02)) && !t.on_grid(dec!(20.01)) && t.on_grid(dec!(19.99)));
    }

    #[test]
    fn bands_before_august_2025() {
        let t = on(2025, 8, 1);
        assert_eq!(t.tick(dec!(15)), Some(dec!(0.02)));
        assert_eq!(t.tick(dec!(30)), Some(dec!(0.05)));
        assert!(!t.on_grid(dec!(15.01)));
    }
}
