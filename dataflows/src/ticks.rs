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
    /// SpreadTableCodes the table is for (HKEX Security Definition); empty: every instrument
    /// whose code no table names (and instruments without a code).
    #[serde(default)]
    pub codes: Vec<String>,
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
            SpreadTable {
                effective_from: NaiveDate::from_ymd_opt(2000, 1, 1).expect("date"),
                bands: before,
                codes: vec![],
            },
            SpreadTable {
                effective_from: NaiveDate::from_ymd_opt(2025, 8, 4).expect("date"),
                bands: since_2025,
                codes: vec![],
            },
        ])
    }
}

impl SpreadTables {
    /// The table in force on `date`.
    pub fn on(&self, date: NaiveDate) -> Option<&SpreadTable> {
        self.for_code(date, None)
    }

    /// The table in force on `date` for instruments with SpreadTableCode `code`: the newest of
    /// those naming the code, else the newest of the generic ones (no codes).
    pub fn for_code(&self, date: NaiveDate, code: Option<&str>) -> Option<&SpreadTable> {
        let in_force = || self.0.iter().filter(move |t| t.effective_from <= date);
        code.and_then(|c| in_force().filter(|t| t.codes.iter().any(|x| x == c)).max_by_key(|t| t.effective_from))
            .or_else(|| in_force().filter(|t| t.codes.is_empty()).max_by_key(|t| t.effective_from))
    }
}

/// Decimal places of the units [`SpreadTable::on_grid`] works in when it can (ticks are at
/// least 0.001).
const UNIT_DP: u32 = 4;

/// `d` in whole 10^-[`UNIT_DP`] units, when it has at most that many places and fits.
fn units(d: Decimal) -> Option<i64> {
    let scale = d.scale();
    if scale > UNIT_DP {
        return None;
    }
    let m = i64::try_from(d.mantissa()).ok()?;
    m.checked_mul(10i64.pow(UNIT_DP - scale))
}

/// The lowest price the spread table has (its first band starts at HK$0.01): 0.005 is on the
/// 0.001 grid but not a price the exchange takes.
pub const MIN_PRICE: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

impl SpreadTable {
    /// The tick for `price`, `None` when the price is outside the table (below [`MIN_PRICE`] or
    /// above the top band).
    pub fn tick(&self, price: Decimal) -> Option<Decimal> {
        if price < MIN_PRICE {
            return None;
        }
        self.bands.iter().find(|b| price <= b.up_to).map(|b| b.tick)
    }

    /// True when `price` lies on the tick grid of its band.
    ///
    /// Checked in whole ten-thousandths when the price and the bands are (every fill's price is
    /// checked: integer compares and one remainder, where decimals rescale at each band); the
    /// decimal check otherwise.
    pub fn on_grid(&self, price: Decimal) -> bool {
        self.on_grid_in_units(price).unwrap_or_else(|| self.on_grid_decimal(price))
    }

    fn on_grid_decimal(&self, price: Decimal) -> bool {
        match self.tick(price) {
            Some(tick) => (price % tick).is_zero(),
            None => false,
        }
    }

    /// [`SpreadTable::on_grid`] in whole [`UNIT_DP`]-place units; `None` when a number involved
    /// has more places (or does not fit).
    fn on_grid_in_units(&self, price: Decimal) -> Option<bool> {
        let p = units(price)?;
        if p < units(MIN_PRICE)? {
            return Some(false);
        }
        for b in &self.bands {
            if p <= units(b.up_to)? {
                let tick = units(b.tick)?;
                return Some(tick > 0 && p % tick == 0);
            }
        }
        Some(false)
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

    proptest::proptest! {
        /// The check in units agrees with the decimal one, for prices of any places and size
        /// (the units path declines what it cannot take).
        #[test]
        fn the_check_in_units_agrees_with_decimals(m in 0i64..20_000_000_000, scale in 0u32..8, late in proptest::bool::ANY) {
            let table = if late { on(2025, 8, 4) } else { on(2025, 8, 1) };
            let price = Decimal::new(m, scale);
            proptest::prop_assert_eq!(table.on_grid(price), table.on_grid_decimal(price), "{}", price);
        }
    }

    #[test]
    fn prices_with_many_places_and_negative_ones_are_checked_as_decimals() {
        let t = on(2025, 8, 4);
        assert!(t.on_grid(Decimal::new(3852000000, 7)), "385.2000000");
        assert!(!t.on_grid(Decimal::new(3852000001, 7)));
        assert!(!t.on_grid(dec!(-385.2)));
        assert!(!t.on_grid(dec!(0.005)), "under the lowest price");
        assert!(t.on_grid(dec!(0.01)) && t.on_grid(dec!(9995)) && !t.on_grid(dec!(10000)));
    }

    fn on(y: i32, m: u32, d: u32) -> SpreadTable {
        SpreadTables::default().on(NaiveDate::from_ymd_opt(y, m, d).unwrap()).unwrap().clone()
    }

    #[test]
    fn bands_since_august_2025() {
        let t = on(2026, 1, 2);
        assert_eq!(MIN_PRICE, dec!(0.01));
        assert_eq!(t.tick(dec!(0.01)), Some(dec!(0.001)));
        assert!(t.tick(dec!(0.005)).is_none() && !t.on_grid(dec!(0.005)), "below the table's first band");
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

    /// A table named for a SpreadTableCode serves instruments with that code; the others keep the
    /// generic table of their date.
    #[test]
    fn tables_by_spread_table_code() {
        let mut tables = SpreadTables::default();
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        // Code "03" keeps the pre-August-2025 ticks.
        tables.0.push(SpreadTable { effective_from: d(2000, 1, 1), codes: vec!["03".into()], ..on(2025, 8, 1) });
        let day = d(2026, 1, 2);
        assert_eq!(tables.for_code(day, Some("03")).unwrap().tick(dec!(15)), Some(dec!(0.02)));
        assert_eq!(tables.for_code(day, Some("01")).unwrap().tick(dec!(15)), Some(dec!(0.01)));
        assert_eq!(tables.for_code(day, None).unwrap().tick(dec!(15)), Some(dec!(0.01)));
        assert_eq!(tables.on(day), tables.for_code(day, None));

        // Through the input rules: 15.01 is on the grid for code 01, off it for code 03.
        use crate::model::{Fill, Instrument, PositionKey, Side, Symbol};
        use crate::validate::{Input, Rejection, Validator};
        let mut v = Validator::new(tables);
        let inst = |s: u32, code: &str| Instrument {
            symbol: Symbol(s),
            name: "X".into(),
            lot_size: 100,
            currency: "HKD".into(),
            sector: None,
            stamp_duty: true,
            spread_table: Some(code.into()),
        };
        v.accept(Input::Instrument(inst(1, "01"))).unwrap();
        v.accept(Input::Instrument(inst(3, "03"))).unwrap();
        let ts = 1_767_317_400_000_000_000; // 2026-01-02 09:30 HKT
        let fill = |s: u32, exec: &str| {
            Input::Fill(Fill {
                ts,
                exec_id: exec.into(),
                order_id: "O".into(),
                key: PositionKey { account: "A".into(), strategy: "S".into(), symbol: Symbol(s) },
                side: Side::Buy,
                qty: 100,
                price: dec!(15.01),
                commission: None,
                stamp_duty_exempt: false,
                odd_lot: false,
                source_seq: 0,
            })
        };
        assert!(v.accept(fill(1, "E1")).is_ok());
        assert!(matches!(v.accept(fill(3, "E3")), Err(Rejection::OffTick { .. })));
        // A quote is held to the same grid, each of its prices; an emptied field has none to check.
        use crate::model::{Cleared, Quote};
        let quote = |s: u32, bid, ask, last| {
            Input::Quote(Quote {
                symbol: Symbol(s),
                ts,
                bid,
                ask,
                last,
                cleared: Cleared { last: true, ..Cleared::default() },
                seq: 0,
            })
        };
        assert!(v.accept(quote(1, Some(dec!(15.01)), Some(dec!(15.02)), None)).is_ok());
        assert!(v.accept(quote(3, Some(dec!(15.00)), Some(dec!(15.04)), None)).is_ok());
        for (bid, ask) in [(Some(dec!(15.01)), None), (None, Some(dec!(15.01))), (Some(dec!(15.00)), Some(dec!(15.03)))]
        {
            assert!(matches!(v.accept(quote(3, bid, ask, None)), Err(Rejection::OffTick { .. })), "{bid:?} {ask:?}");
        }
        assert!(matches!(v.accept(quote(1, None, None, Some(dec!(-1)))), Err(Rejection::NonPositivePrice(_))));
    }
}
