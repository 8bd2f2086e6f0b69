//! Hong Kong trading costs per fill, from dated, configurable cost schedules.
//!
//! Rates and rounding follow ../shared/HKEX.md §3: stamp duty rounded up to the next whole dollar
//! (skipped for exempt instruments), SFC and AFRC levies and the HKEX trading fee to the nearest
//! cent, the CCASS settlement fee to the nearest cent within an optional minimum and maximum, and
//! the broker commission at a rate with a minimum, unless the fill carries its own commission.
//! Every breakdown names the schedule it used.

use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::model::Fill;

/// One dated set of rates; applies to trade dates from `effective_from` until the next schedule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSchedule {
    /// Name shown on every fee breakdown computed with this schedule.
    pub name: SmolStr,
    /// First trade date (HKT) the schedule applies to.
    pub effective_from: NaiveDate,
    /// Stamp duty rate on consideration (0.001 = 0.1%); rounded up to the whole dollar.
    pub stamp_duty_rate: Decimal,
    /// SFC transaction levy rate; rounded to the cent.
    pub sfc_levy_rate: Decimal,
    /// AFRC transaction levy rate; rounded to the cent.
    pub afrc_levy_rate: Decimal,
    /// HKEX trading fee rate; rounded to the cent.
    pub trading_fee_rate: Decimal,
    /// CCASS settlement fee rate; rounded to the cent.
    pub settlement_fee_rate: Decimal,
    /// Minimum settlement fee per fill, if any.
    #[serde(default)]
    pub settlement_fee_min: Option<Decimal>,
    /// Maximum settlement fee per fill, if any.
    #[serde(default)]
    pub settlement_fee_max: Option<Decimal>,
    /// Broker commission rate on consideration; rounded to the cent.
    pub commission_rate: Decimal,
    /// Minimum broker commission per fill.
    #[serde(default)]
    pub commission_min: Decimal,
}

/// The costs of one fill, item by item.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeeBreakdown {
    /// Stamp duty.
    pub stamp_duty: Decimal,
    /// SFC transaction levy.
    pub sfc_levy: Decimal,
    /// AFRC transaction levy.
    pub afrc_levy: Decimal,
    /// HKEX trading fee.
    pub trading_fee: Decimal,
    /// CCASS settlement fee.
    pub settlement_fee: Decimal,
    /// Broker commission.
    pub commission: Decimal,
    /// Sum of the above.
    pub total: Decimal,
    /// Name of the schedule used.
    pub schedule: SmolStr,
}

/// Dated cost schedules; the newest not after the trade date applies. Each is shared: a fill's
/// row holds the one it was charged under ([`crate::operators::FillPnl`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CostSchedules(pub Vec<Arc<CostSchedule>>);

impl Default for CostSchedules {
    /// Hong Kong's costs since stamp duty went to 0.13% (1 Aug 2021): ../shared/HKEX.md §3, with
    /// the HKEX trading fee at 0.005% until its rise to 0.00565% on 1 Jan 2023 (HKEX news
    /// release of 1 Nov 2022) and no AFRC levy before 1 Jan 2022. Fills before the first
    /// schedule are refused (`no_cost_schedule`) rather than charged nothing.
    fn default() -> Self {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("valid date");
        let aug_2021 = CostSchedule {
            name: "HK-2021-08-01".into(),
            effective_from: d(2021, 8, 1),
            stamp_duty_rate: Decimal::new(13, 4),
            sfc_levy_rate: Decimal::new(27, 6),
            afrc_levy_rate: Decimal::ZERO,
            trading_fee_rate: Decimal::new(5, 5),
            settlement_fee_rate: Decimal::new(2, 5),
            settlement_fee_min: Some(Decimal::new(2, 0)),
            settlement_fee_max: Some(Decimal::new(100, 0)),
            commission_rate: Decimal::new(3, 4),
            commission_min: Decimal::new(3, 0),
        };
        // The AFRC transaction levy, 0.00015%, from 1 Jan 2022.
        let jan_2022 = CostSchedule {
            name: "HK-2022-01-01".into(),
            effective_from: d(2022, 1, 1),
            afrc_levy_rate: Decimal::new(15, 7),
            ..aug_2021.clone()
        };
        // The HKEX trading fee, 0.00565%, from 1 Jan 2023.
        let jan_2023 = CostSchedule {
            name: "HK-2023-01-01".into(),
            effective_from: d(2023, 1, 1),
            trading_fee_rate: Decimal::new(565, 7),
            ..jan_2022.clone()
        };
        // Stamp duty back to 0.1% from 17 Nov 2023.
        let nov_2023 = CostSchedule {
            name: "HK-2023-11-17".into(),
            effective_from: d(2023, 11, 17),
            stamp_duty_rate: Decimal::new(1, 3),
            ..jan_2023.clone()
        };
        // Settlement fee 0.0042% (0.000042) without minimum or maximum from 30 Jun 2025 (HKEX
        // announced the new structure on 21 Feb 2025; it took effect on Monday 30 Jun 2025).
        let jun_2025 = CostSchedule {
            name: "HK-2025-06-30".into(),
            effective_from: d(2025, 6, 30),
            settlement_fee_rate: Decimal::new(42, 6),
            settlement_fee_min: None,
            settlement_fee_max: None,
            ..nov_2023.clone()
        };
        CostSchedules([aug_2021, jan_2022, jan_2023, nov_2023, jun_2025].map(Arc::new).into())
    }
}

impl CostSchedules {
    /// The first day any schedule covers.
    pub fn earliest(&self) -> Option<NaiveDate> {
        self.0.iter().map(|s| s.effective_from).min()
    }

    /// The schedule in force on `date`, if any.
    pub fn on(&self, date: NaiveDate) -> Option<&Arc<CostSchedule>> {
        self.0.iter().filter(|s| s.effective_from <= date).max_by_key(|s| s.effective_from)
    }
}

fn cents(x: Decimal) -> Decimal {
    x.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// `consideration × rate` rounded to `dp` places (half away from zero, or up when `ceil`), in
/// i128 arithmetic: the same result as `Decimal` multiplication and rounding, several times faster.
/// `None` when a value is too large for the fast path; callers then use `Decimal`.
fn mul_round(consideration: Decimal, rate: Decimal, dp: u32, ceil: bool) -> Option<Decimal> {
    let p = consideration.mantissa().checked_mul(rate.mantissa())?;
    let scale = consideration.scale() + rate.scale();
    if scale <= dp {
        return Some(Decimal::from_i128_with_scale(p, scale));
    }
    let d = 10i128.checked_pow(scale - dp)?;
    // (In 64 bits when both fit, as a fill's almost always do: an i128 division is a library
    // call several times slower, and there are six of them per fill.)
    let (mut q, rem) = match (i64::try_from(p), i64::try_from(d)) {
        (Ok(p), Ok(d)) => (i128::from(p / d), i128::from(p % d)),
        _ => (p / d, p % d),
    };
    if ceil {
        if rem > 0 {
            q += 1;
        }
    } else if rem.abs() >= d - rem.abs() {
        // (Not 2·|rem| ≥ d: with d = 10³⁸, 2·|rem| passes i128's range.)
        q += p.signum();
    }
    Decimal::try_from_i128_with_scale(q, dp).ok()
}

fn at_cents(consideration: Decimal, rate: Decimal) -> Decimal {
    mul_round(consideration, rate, 2, false).unwrap_or_else(|| cents(consideration * rate))
}

impl CostSchedule {
    /// Costs of `fill` under this schedule.
    pub fn fees(&self, fill: &Fill) -> FeeBreakdown {
        let consideration = fill.consideration();
        let stamp_duty = if fill.stamp_duty_exempt {
            Decimal::ZERO
        } else {
            mul_round(consideration, self.stamp_duty_rate, 0, true)
                .unwrap_or_else(|| (consideration * self.stamp_duty_rate).ceil())
        };
        let sfc_levy = at_cents(consideration, self.sfc_levy_rate);
        let afrc_levy = at_cents(consideration, self.afrc_levy_rate);
        let trading_fee = at_cents(consideration, self.trading_fee_rate);
        let mut settlement_fee = at_cents(consideration, self.settlement_fee_rate);
        if let Some(min) = self.settlement_fee_min {
            settlement_fee = settlement_fee.max(min);
        }
        if let Some(max) = self.settlement_fee_max {
            settlement_fee = settlement_fee.min(max);
        }
        let commission = match fill.commission {
            Some(c) => c,
            None => at_cents(consideration, self.commission_rate).max(self.commission_min),
        };
        let total = stamp_duty + sfc_levy + afrc_levy + trading_fee + settlement_fee + commission;
        FeeBreakdown {
            stamp_duty,
            sfc_levy,
            afrc_levy,
            trading_fee,
            settlement_fee,
            commission,
            total,
            schedule: self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PositionKey, Side, Symbol};
    use rust_decimal_macros::dec;

    fn fill(qty: i64, price: Decimal, exempt: bool, commission: Option<Decimal>) -> Fill {
        Fill {
            ts: 0,
            exec_id: "E1".into(),
            order_id: "O1".into(),
            key: PositionKey { account: "A".into(), strategy: "S".into(), symbol: Symbol(700) },
            side: Side::Buy,
            qty,
            price,
            commission,
            stamp_duty_exempt: exempt,
            odd_lot: false,
            source_seq: 0,
        }
    }

    /// Decimal places adding up to 40 (a price written with 22, a rate with 18): the rounding
    /// still goes half up (2·remainder passed i128's range and wrapped: 0.00864 gave 0.00).
    #[test]
    fn rounding_holds_with_many_decimal_places() {
        let c = Decimal::from_str_exact("3.2000000000000000000000").unwrap() * Decimal::from(100);
        let r = Decimal::from_str_exact("0.000027000000000000").unwrap();
        assert_eq!(c.scale() + r.scale(), 40);
        assert_eq!(at_cents(c, r), dec!(0.01));
        assert_eq!(at_cents(-c, r), dec!(-0.01));
        let under = Decimal::from_str_exact("1.6000000000000000000000").unwrap() * Decimal::from(100);
        assert_eq!(at_cents(under, r), dec!(0.00), "0.00432");
    }

    fn schedule(y: i32, m: u32, d: u32) -> CostSchedule {
        CostSchedule::clone(CostSchedules::default().on(NaiveDate::from_ymd_opt(y, m, d).unwrap()).unwrap())
    }

    /// 1000 × 385.20 = 385,200 consideration under the 2026 schedule.
    #[test]
    fn tencent_board_lot_2026() {
        let f = schedule(2026, 3, 2).fees(&fill(1000, dec!(385.200), false, None));
        assert_eq!(f.stamp_duty, dec!(386)); // 385.2 rounded up
        assert_eq!(f.sfc_levy, dec!(10.40)); // 10.4004
        assert_eq!(f.afrc_levy, dec!(0.58)); // 0.5778
        assert_eq!(f.trading_fee, dec!(21.76)); // 21.7638
        assert_eq!(f.settlement_fee, dec!(16.18)); // 0.0042% = 0.000042: 16.1784
        assert_eq!(f.commission, dec!(115.56)); // 115.56
        assert_eq!(f.total, dec!(550.48));
        assert_eq!(f.schedule, "HK-2025-06-30");
    }

    /// The settlement fee changed on Monday 30 Jun 2025: the Friday before still pays 0.002%
    /// within HK$2..HK$100, the day itself 0.0042% without bounds.
    #[test]
    fn settlement_fee_changes_on_30_june_2025() {
        let small = fill(100, dec!(10.00), false, None); // consideration 1,000
        let large = fill(100_000, dec!(100.00), false, None); // consideration 10,000,000
        let before = schedule(2025, 6, 27);
        assert_eq!(before.name, "HK-2023-11-17");
        assert_eq!(schedule(2025, 6, 29).name, "HK-2023-11-17");
        assert_eq!(before.fees(&small).settlement_fee, dec!(2)); // 0.02 raised to the minimum
        assert_eq!(before.fees(&large).settlement_fee, dec!(100)); // 200 capped at the maximum
        let after = schedule(2025, 6, 30);
        assert_eq!(after.name, "HK-2025-06-30");
        assert_eq!(after.fees(&small).settlement_fee, dec!(0.04)); // 0.042
        assert_eq!(after.fees(&large).settlement_fee, dec!(420)); // 420.00, no cap
    }

    #[test]
    fn exempt_instrument_pays_no_stamp_duty_and_fill_commission_overrides() {
        let f = schedule(2026, 3, 2).fees(&fill(500, dec!(25.10), true, Some(dec!(12.50))));
        assert_eq!(f.stamp_duty, dec!(0));
        assert_eq!(f.commission, dec!(12.50));
        assert_eq!(f.sfc_levy, dec!(0.34)); // 12550 × 0.000027 = 0.33885
        assert_eq!(f.afrc_levy, dec!(0.02)); // 0.018825
        assert_eq!(f.trading_fee, dec!(0.71)); // 0.709075
        assert_eq!(f.settlement_fee, dec!(0.53)); // 0.5271
        assert_eq!(f.total, dec!(14.10));
    }

    /// A zero consideration is `Decimal`'s zero (scale 0), whatever the price's scale.
    #[test]
    fn a_zero_consideration_is_decimals_zero() {
        for (qty, price) in [(0, dec!(385.200)), (100, dec!(0.000)), (0, dec!(0))] {
            let (got, want) = (fill(qty, price, false, None).consideration(), price * Decimal::from(qty));
            assert_eq!((got.mantissa(), got.scale()), (want.mantissa(), want.scale()), "{qty} x {price}");
        }
    }

    proptest::proptest! {
        /// A fill's consideration is `Decimal` multiplication's, scale included.
        #[test]
        fn consideration_is_decimal_multiplication(m in -1_000_000_000_000i64..1_000_000_000_000, ps in 0u32..29, qty in 0i64..10_000_000_000) {
            let f = fill(qty, Decimal::new(m, ps), false, None);
            // (A product past `Decimal`'s range panics either way; validated fills are far below.)
            if let Some(want) = f.price.checked_mul(Decimal::from(qty)) {
                let got = f.consideration();
                proptest::prop_assert_eq!((got.mantissa(), got.scale()), (want.mantissa(), want.scale()));
            }
        }

        /// The i128 fast path rounds exactly like `Decimal`.
        #[test]
        fn fast_rounding_matches_decimal(m in 1i64..100_000_000, ps in 0u32..4, qty in 1i64..10_000_000, rate in 1i64..100_000, rs in 3u32..10) {
            let c = Decimal::new(m, ps) * Decimal::from(qty);
            let r = Decimal::new(rate, rs);
            proptest::prop_assert_eq!(mul_round(c, r, 2, false).unwrap(), cents(c * r));
            proptest::prop_assert_eq!(mul_round(c, r, 0, true).unwrap(), (c * r).ceil());
        }
    }

    #[test]
    fn stamp_duty_rounds_up_whole_dollars_and_old_settlement_minimum() {
        // 100 × 10.01 = 1001: duty 1.001 → 2; old settlement 0.02 → min 2; commission min 3.
        let f = schedule(2024, 5, 6).fees(&fill(100, dec!(10.01), false, None));
        assert_eq!(f.stamp_duty, dec!(2));
        assert_eq!(f.settlement_fee, dec!(2));
        assert_eq!(f.commission, dec!(3));
        assert_eq!(f.schedule, "HK-2023-11-17");
        // A whole-dollar duty is not rounded further: 100 × 10 = 1000 → 1.
        let f = schedule(2024, 5, 6).fees(&fill(100, dec!(10), false, None));
        assert_eq!(f.stamp_duty, dec!(1));
    }

    /// The same board lot (1000 × 385.20 = 385,200) on the days each schedule began.
    #[test]
    fn older_schedules_stamp_duty_trading_fee_and_afrc_levy() {
        let lot = fill(1000, dec!(385.200), false, None);
        // 2023-06-01: stamp duty 0.13% → 500.76 rounded up to 501; trading fee 0.00565%.
        let f = schedule(2023, 6, 1).fees(&lot);
        assert_eq!(f.schedule, "HK-2023-01-01");
        assert_eq!(
            (f.stamp_duty, f.sfc_levy, f.afrc_levy, f.trading_fee),
            (dec!(501), dec!(10.40), dec!(0.58), dec!(21.76))
        );
        assert_eq!(f.settlement_fee, dec!(7.70)); // 0.002%: 7.704
        assert_eq!(f.total, dec!(657.00)); // + commission 115.56
                                           // 2022-06-01: the trading fee was 0.005% (19.26).
        let f = schedule(2022, 6, 1).fees(&lot);
        assert_eq!((f.schedule.as_str(), f.trading_fee, f.afrc_levy), ("HK-2022-01-01", dec!(19.26), dec!(0.58)));
        // 2021-09-01: no AFRC levy yet.
        let f = schedule(2021, 9, 1).fees(&lot);
        assert_eq!((f.schedule.as_str(), f.afrc_levy, f.total), ("HK-2021-08-01", dec!(0), dec!(653.92)));
        // Before 1 Aug 2021 there is no schedule (the validator refuses such fills).
        assert!(CostSchedules::default().on(NaiveDate::from_ymd_opt(2021, 7, 31).unwrap()).is_none());
        assert_eq!(CostSchedules::default().earliest(), NaiveDate::from_ymd_opt(2021, 8, 1));
    }
}
