//! Limits and their alerts: a breach emits one event when it starts and one when it clears.
//!
//! A limit has a soft and a hard level. Crossing a level starts a breach of that severity; it
//! clears only once the value falls below the level less the hysteresis (a fraction of the level),
//! so a value hovering at the line does not flap. The state is a function of the values seen in
//! order, so a restart that replays the same values emits the same alerts.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How bad a breach is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Past the soft level.
    Soft,
    /// Past the hard level.
    Hard,
}

impl Severity {
    /// Lower-case name for outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Soft => "soft",
            Severity::Hard => "hard",
        }
    }
}

/// A limit on a metric (exposure, VaR, drawdown, position size...): values above a level breach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Limit {
    /// Soft level.
    pub soft: Decimal,
    /// Hard level (≥ soft).
    pub hard: Decimal,
    /// Fraction of a level the value must fall below it to clear (e.g. 0.05).
    pub hysteresis: Decimal,
}

/// A change of a limit's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// A breach of this severity started (or worsened from soft to hard) at this value.
    Breach(Severity, Decimal),
    /// The breach of this severity cleared (or eased from hard to soft) at this value.
    Clear(Severity, Decimal),
}

/// The state of one limit for one subject (account, strategy, desk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitState {
    /// The breach in force.
    pub breached: Option<Severity>,
}

impl LimitState {
    /// The alerts the new `value` causes (none while it stays on the same side).
    pub fn observe(&mut self, limit: &Limit, value: Decimal) -> Vec<Alert> {
        let clear_below = |level: Decimal| level - level.abs() * limit.hysteresis;
        let mut out = Vec::new();
        let next = match self.breached {
            _ if value > limit.hard => Some(Severity::Hard),
            Some(Severity::Hard) if value >= clear_below(limit.hard) => Some(Severity::Hard),
            _ if value > limit.soft => Some(Severity::Soft),
            Some(_) if value >= clear_below(limit.soft) => Some(Severity::Soft),
            _ => None,
        };
        match (self.breached, next) {
            (a, b) if a == b => {}
            (None, Some(Severity::Soft)) => out.push(Alert::Breach(Severity::Soft, value)),
            // Past the hard level is past the soft one too: both start (and later both clear).
            (None, Some(Severity::Hard)) => {
                out.push(Alert::Breach(Severity::Soft, value));
                out.push(Alert::Breach(Severity::Hard, value));
            }
            (Some(Severity::Soft), Some(Severity::Hard)) => out.push(Alert::Breach(Severity::Hard, value)),
            (Some(Severity::Hard), Some(Severity::Soft)) => out.push(Alert::Clear(Severity::Hard, value)),
            (Some(s), None) => {
                if s == Severity::Hard {
                    out.push(Alert::Clear(Severity::Hard, value));
                }
                out.push(Alert::Clear(Severity::Soft, value));
            }
            _ => {}
        }
        self.breached = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn limit() -> Limit {
        Limit { soft: dec!(1000), hard: dec!(2000), hysteresis: dec!(0.05) }
    }

    #[test]
    fn one_alert_when_a_breach_starts_one_when_it_clears() {
        let mut s = LimitState::default();
        let values = [dec!(900), dec!(1001), dec!(1500), dec!(990), dec!(960), dec!(949), dec!(940)];
        let alerts: Vec<Vec<Alert>> = values.iter().map(|v| s.observe(&limit(), *v)).collect();
        assert_eq!(
            alerts,
            vec![
                vec![],
                vec![Alert::Breach(Severity::Soft, dec!(1001))],
                vec![],
                vec![], // below the level, not below it less 5%: still breached
                vec![],
                vec![Alert::Clear(Severity::Soft, dec!(949))],
                vec![],
            ]
        );
    }

    #[test]
    fn soft_to_hard_and_back_and_a_jump_from_hard_to_clear() {
        let mut s = LimitState::default();
        assert_eq!(
            s.observe(&limit(), dec!(2500)),
            vec![Alert::Breach(Severity::Soft, dec!(2500)), Alert::Breach(Severity::Hard, dec!(2500))]
        );
        assert_eq!(s.observe(&limit(), dec!(1950)), vec![]);
        assert_eq!(s.observe(&limit(), dec!(1800)), vec![Alert::Clear(Severity::Hard, dec!(1800))]);
        assert_eq!(s.breached, Some(Severity::Soft));
        assert_eq!(s.observe(&limit(), dec!(2100)), vec![Alert::Breach(Severity::Hard, dec!(2100))]);
        assert_eq!(
            s.observe(&limit(), dec!(10)),
            vec![Alert::Clear(Severity::Hard, dec!(10)), Alert::Clear(Severity::Soft, dec!(10))]
        );
    }

    #[test]
    fn replaying_the_same_values_gives_the_same_alerts() {
        let values: Vec<Decimal> = (0..200).map(|i| Decimal::from((i * 37 % 61) * 50)).collect();
        let run = |vs: &[Decimal]| {
            let mut s = LimitState::default();
            vs.iter().flat_map(|v| s.observe(&limit(), *v)).collect::<Vec<_>>()
        };
        let once = run(&values);
        assert_eq!(once, run(&values));
        // Per severity, starts and clears alternate, beginning with a start: never a duplicate.
        for sev in [Severity::Soft, Severity::Hard] {
            let seq: Vec<bool> = once
                .iter()
                .filter_map(|a| match a {
                    Alert::Breach(s, _) if *s == sev => Some(true),
                    Alert::Clear(s, _) if *s == sev => Some(false),
                    _ => None,
                })
                .collect();
            assert!(seq.first() != Some(&false) && seq.windows(2).all(|w| w[0] != w[1]), "{sev:?}: {seq:?}");
        }
        assert!(!once.is_empty());
    }
}
