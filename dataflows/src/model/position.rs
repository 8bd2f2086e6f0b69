//! The average-cost position fold (netting), the single definition every dataflow and test uses.
//!
//! State is kept as signed quantity and signed cost basis (`cost = qty × average open price`), so an
//! opening or adding fill is exact decimal arithmetic; only a partial reduction divides (it removes
//! `cost × q / qty` at the average price, rounded by `rust_decimal` at 28 significant digits).
//! Semantics follow ../shared/HKEX.md §4 (nautilus_trader's netting position):
//!
//! - opening or adding: cost += q × p (the average is the quantity-weighted mean);
//! - reducing: realized += |q| × (p − avg) for a long, (avg − p) for a short; the average is unchanged;
//! - a fill through zero closes the whole position at p and opens the remainder at p;
//! - fees are kept apart from realized P&L: total = realized − fees + unrealized.
//!
//! The fold is order-dependent; [`crate::operators::positions`] applies it in `(ts, exec_id)` order.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ids::Ts;

/// Running state of one position.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PositionState {
    /// Signed shares: positive long, negative short.
    pub qty: i64,
    /// Signed cost basis of the open quantity: `qty × average open price`.
    pub cost: Decimal,
    /// Realized P&L before costs, accumulated over the day.
    pub realized: Decimal,
    /// Every cost charged on the fills (duties, levies, fees, commission).
    pub fees: Decimal,
    /// Number of fills applied.
    pub fills: u32,
    /// Shares bought.
    pub bought: i64,
    /// Shares sold.
    pub sold: i64,
    /// Buy consideration (Σ qty × price of buys).
    pub buy_notional: Decimal,
    /// Sell consideration.
    pub sell_notional: Decimal,
    /// Event time of the latest fill applied.
    pub last_fill_ts: Ts,
}

/// What one fill did to a position.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PositionStep {
    /// Realized P&L (before costs) the fill produced.
    pub realized: Decimal,
    /// Signed position after the fill.
    pub qty_after: i64,
}

impl PositionState {
    /// Applies one fill of `signed_qty` shares (positive buys) at `price` costing `fee`.
    pub fn apply(&mut self, signed_qty: i64, price: Decimal, fee: Decimal, ts: Ts) -> PositionStep {
        let q = signed_qty;
        let qd = Decimal::from(q);
        let mut realized = Decimal::ZERO;
        if self.qty == 0 || (self.qty > 0) == (q > 0) {
            // open or add
            self.cost += qd * price;
            self.qty += q;
        } else if q.abs() < self.qty.abs() {
            // partial reduce: remove cost at the average, the average stays.
            // (Dividing first only when the product is past what a Decimal holds: a position
            // of many very large fills; the error is then far below the rows' 8 places.)
            let held = Decimal::from(self.qty);
            let removed = self.cost.checked_mul(qd).map_or_else(|| self.cost / held * qd, |x| x / held);
            realized = removed - qd * price;
            self.cost += removed;
            self.qty += q;
        } else {
            // close fully, and open the remainder (if any) at the fill price.
            realized = -self.cost + Decimal::from(self.qty) * price;
            self.qty += q;
            self.cost = Decimal::from(self.qty) * price;
        }
        if q > 0 {
            self.bought += q;
            self.buy_notional += qd * price;
        } else {
            self.sold -= q;
            self.sell_notional -= qd * price;
        }
        self.realized += realized;
        self.fees += fee;
        self.fills += 1;
        self.last_fill_ts = self.last_fill_ts.max(ts);
        PositionStep { realized, qty_after: self.qty }
    }

    /// Average open price, `None` when flat.
    pub fn avg_price(&self) -> Option<Decimal> {
        (self.qty != 0).then(|| self.cost / Decimal::from(self.qty))
    }

    /// Unrealized P&L at `mark`: `qty × mark − cost` (zero when flat).
    pub fn unrealized(&self, mark: Decimal) -> Decimal {
        Decimal::from(self.qty) * mark - self.cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    /// The worked example of ../shared/HKEX.md §4, to the cent.
    #[test]
    fn hkex_worked_example() {
        let mut p = PositionState::default();
        p.apply(1000, dec!(10), dec!(5), 1);
        assert_eq!(p.realized, dec!(0));
        p.apply(1000, dec!(12), dec!(5), 2);
        assert_eq!(p.avg_price(), Some(dec!(11)));
        assert_eq!(p.unrealized(dec!(11.5)), dec!(1000));
        let s = p.apply(-500, dec!(13), dec!(5), 3);
        assert_eq!(s.realized, dec!(1000));
        assert_eq!(p.realized - p.fees, dec!(985));
        let s = p.apply(-2500, dec!(11), dec!(10), 4);
        assert_eq!(s.realized, dec!(0));
        assert_eq!(s.qty_after, -1000);
        assert_eq!(p.avg_price(), Some(dec!(11)));
        assert_eq!(p.realized, dec!(1000));
        assert_eq!(p.fees, dec!(25));
        assert_eq!(p.realized - p.fees, dec!(975));
        assert_eq!(p.unrealized(dec!(10.5)), dec!(500));
    }

    #[test]
    fn short_reduce_and_exact_close() {
        let mut p = PositionState::default();
        p.apply(-300, dec!(20), dec!(0), 1);
        let s = p.apply(100, dec!(18.5), dec!(0), 2);
        assert_eq!(s.realized, dec!(150));
        assert_eq!(p.avg_price(), Some(dec!(20)));
        let s = p.apply(200, dec!(21), dec!(0), 3);
        assert_eq!(s.realized, dec!(-200));
        assert_eq!(p.qty, 0);
        assert_eq!(p.cost, dec!(0));
        assert_eq!(p.avg_price(), None);
        assert_eq!(p.unrealized(dec!(99)), dec!(0));
    }

    #[test]
    fn repeating_average_keeps_realized_consistent() {
        // avg = 32/3; selling one at 12 realizes 4/3, rounded at 28 digits.
        let mut p = PositionState::default();
        p.apply(1, dec!(10), dec!(0), 1);
        p.apply(2, dec!(11), dec!(0), 2);
        p.apply(-1, dec!(12), dec!(0), 3);
        p.apply(-2, dec!(12), dec!(0), 4);
        // Flat again: total realized equals the cash result exactly.
        assert_eq!(p.qty, 0);
        assert_eq!(p.realized.round_dp(10), dec!(4));
    }

    /// Reducing a position whose cost times the quantity sold is past what a Decimal holds
    /// (it panicked: "Multiplication overflowed") gives the average-cost result to far below a
    /// cent.
    #[test]
    fn reducing_a_very_large_position_does_not_overflow() {
        let mut p = PositionState::default();
        for _ in 0..200 {
            p.apply(10_000_000_000, dec!(99995), dec!(0), 1);
        }
        let step = p.apply(-1_000_000_000_000, dec!(99999), dec!(0), 2);
        assert_eq!(step.qty_after, 1_000_000_000_000);
        // 10^12 shares sold at 4 above the average.
        assert!((step.realized - dec!(4000000000000)).abs() < dec!(0.00000001), "{}", step.realized);
        assert_eq!(p.avg_price(), Some(dec!(99995)));
    }
}
