//! Abelian sums of decimals, used as differential diffs so roll-ups are `count_total`s.
//!
//! A roll-up explodes each row into its contribution and lets differential add them up: the
//! cheapest shape for anything that is a sum (see ../shared/CALIBRATION.md). Contributions are
//! rounded to [`crate::pnl::MONEY_DP`] places upstream, so these sums are exact.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A zero without a sign: negating a zero (or adding a negative zero to one) gives `-0` in
/// rust_decimal, which a text sink would show as "-0".
#[inline]
fn positive_zero(d: &mut Decimal) {
    if d.is_zero() && d.is_sign_negative() {
        d.set_sign_positive(true);
    }
}

macro_rules! sums {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name {
            $($(#[$fm])* pub $f: Decimal,)*
        }
        impl IsZero for $name {
            fn is_zero(&self) -> bool { true $(&& self.$f.is_zero())* }
        }
        impl Semigroup for $name {
            fn plus_equals(&mut self, rhs: &Self) { $(self.$f += rhs.$f; positive_zero(&mut self.$f);)* }
        }
        impl Monoid for $name {
            fn zero() -> Self { Self::default() }
        }
        impl Abelian for $name {
            fn negate(&mut self) { $(self.$f = -self.$f; positive_zero(&mut self.$f);)* }
        }
        impl Multiply<isize> for $name {
            type Output = $name;
            fn multiply(self, rhs: &isize) -> $name {
                if *rhs == 1 {
                    return self;
                }
                let k = Decimal::from(*rhs);
                $name { $($f: self.$f * k,)* }
            }
        }
    };
}

sums!(
    /// Totals over positions: a roll-up per account or per strategy.
    Totals {
        /// Number of position rows (including flat ones with realized P&L).
        positions,
        /// Σ market value of long positions.
        long_mv,
        /// Σ market value of short positions (negative).
        short_mv,
        /// Gross exposure Σ|MV|.
        gross,
        /// Net exposure ΣMV.
        net,
        /// Realized P&L before costs.
        realized,
        /// Unrealized P&L.
        unrealized,
        /// Costs.
        fees,
        /// realized − fees + unrealized.
        total,
    }
);

sums!(
    /// Totals over the fills of one minute: P&L by minute.
    FlowTotals {
        /// Number of fills.
        fills,
        /// Shares bought.
        bought,
        /// Shares sold.
        sold,
        /// Buy consideration.
        buy_notional,
        /// Sell consideration.
        sell_notional,
        /// Realized P&L (before costs) produced by the minute's fills.
        realized,
        /// Costs of the minute's fills.
        fees,
        /// realized − fees.
        net,
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn sums_never_hold_a_negative_zero() {
        let mut t = Totals::default();
        t.negate();
        assert!(!t.short_mv.is_sign_negative(), "negated zero");
        let mut z = Totals::default();
        z.plus_equals(&t);
        assert!(!z.short_mv.is_sign_negative(), "zero plus a negated zero");
        let mut a = Totals { net: dec!(5.25), ..Totals::default() };
        let mut b = a.clone();
        b.negate();
        a.plus_equals(&b);
        assert!(a.is_zero() && !a.net.is_sign_negative() && a.net.to_string() == "0.00", "{}", a.net);
    }
}
