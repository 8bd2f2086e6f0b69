//! Abelian sums of decimals, used as differential diffs so roll-ups are `count_total`s.
//!
//! A roll-up explodes each row into its contribution and lets differential add them up: the
//! cheapest shape for anything that is a sum (see ../shared/CALIBRATION.md). Contributions are
//! rounded to [`crate::pnl::MONEY_DP`] places upstream, so these sums are exact.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

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
            fn plus_equals(&mut self, rhs: &Self) { $(self.$f += rhs.$f;)* }
        }
        impl Monoid for $name {
            fn zero() -> Self { Self::default() }
        }
        impl Abelian for $name {
            fn negate(&mut self) { $(self.$f = -self.$f;)* }
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
