//! Exposure of a set of positions from their market values.

use rust_decimal::Decimal;

/// Long, short, gross and net market value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Sum of positive market values.
    pub long: Decimal,
    /// Sum of negative market values (≤ 0).
    pub short: Decimal,
    /// Σ|MV|.
    pub gross: Decimal,
    /// ΣMV.
    pub net: Decimal,
}

impl Exposure {
    /// Of these market values.
    pub fn of(market_values: impl IntoIterator<Item = Decimal>) -> Exposure {
        let mut e = Exposure::default();
        for mv in market_values {
            e.add(mv);
        }
        e
    }

    /// Adds one position's market value (a retraction adds its negation... of the old value: use
    /// [`Exposure::remove`]).
    pub fn add(&mut self, mv: Decimal) {
        if mv.is_sign_negative() {
            self.short += mv;
        } else {
            self.long += mv;
        }
        self.gross += mv.abs();
        self.net += mv;
    }

    /// Removes a market value added before (incremental updates: remove the old, add the new).
    pub fn remove(&mut self, mv: Decimal) {
        if mv.is_sign_negative() {
            self.short -= mv;
        } else {
            self.long -= mv;
        }
        self.gross -= mv.abs();
        self.net -= mv;
    }

    /// Gross exposure over NAV (`None` when NAV is not positive).
    pub fn leverage(&self, nav: Decimal) -> Option<Decimal> {
        (nav > Decimal::ZERO).then(|| self.gross / nav)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn three_positions_by_hand() {
        // 00700 long 1,000 @ 385.20, 00005 short 4,000 @ 68.15, 02800 long 5,000 @ 25.16.
        let mvs = [dec!(385200.00), dec!(-272600.00), dec!(125800.00)];
        let e = Exposure::of(mvs);
        assert_eq!(e.long, dec!(511000.00));
        assert_eq!(e.short, dec!(-272600.00));
        assert_eq!(e.gross, dec!(783600.00));
        assert_eq!(e.net, dec!(238400.00));
        assert_eq!(e.leverage(dec!(2000000)), Some(dec!(0.3918)));
        assert_eq!(e.leverage(Decimal::ZERO), None);
        // Incremental: the short is covered to 1,000 shares and re-marked at 68.00.
        let mut inc = e;
        inc.remove(dec!(-272600.00));
        inc.add(dec!(-68000.00));
        assert_eq!(inc, Exposure::of([dec!(385200.00), dec!(-68000.00), dec!(125800.00)]));
    }

    proptest::proptest! {
        /// Updating one position at a time (remove its old value, add the new) always equals the
        /// exposure recomputed from the current values.
        #[test]
        fn incremental_equals_recomputation(ops in proptest::collection::vec((0usize..8, -1_000_000i64..1_000_000), 1..200)) {
            let mut values = [Decimal::ZERO; 8];
            let mut inc = Exposure::default();
            for (i, cents) in ops {
                let new = Decimal::new(cents, 2);
                inc.remove(values[i]);
                inc.add(new);
                values[i] = new;
                proptest::prop_assert_eq!(inc, Exposure::of(values));
            }
        }
    }
}
