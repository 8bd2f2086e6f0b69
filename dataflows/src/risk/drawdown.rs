//! Intraday drawdown of total P&L from its running peak (../shared/HKEX.md §5), the day starting
//! at zero P&L.

use rust_decimal::Decimal;

/// Running peak, current drawdown and the day's maximum drawdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drawdown {
    /// Highest total P&L so far, from the day's start at zero (a day that only loses has peak 0).
    pub peak: Option<Decimal>,
    /// peak − current (≥ 0).
    pub current: Decimal,
    /// Largest drawdown so far.
    pub max: Decimal,
}

impl Drawdown {
    /// After a new total P&L.
    pub fn update(&mut self, total: Decimal) {
        let peak = self.peak.unwrap_or(Decimal::ZERO).max(total);
        self.peak = Some(peak);
        self.current = peak - total;
        self.max = self.max.max(self.current);
    }

    /// Over a series of totals.
    pub fn of(totals: impl IntoIterator<Item = Decimal>) -> Drawdown {
        let mut d = Drawdown::default();
        for t in totals {
            d.update(t);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn by_hand() {
        let d = Drawdown::of([dec!(0), dec!(1200.50), dec!(800.25), dec!(1500), dec!(-300), dec!(200)]);
        assert_eq!(d.peak, Some(dec!(1500)));
        assert_eq!(d.current, dec!(1300));
        assert_eq!(d.max, dec!(1800));
        // A day that starts losing: its peak is the start (zero P&L), not the first loss.
        let down = Drawdown::of([dec!(-5), dec!(-10)]);
        assert_eq!((down.peak, down.current, down.max), (Some(dec!(0)), dec!(10), dec!(10)));
    }
}
