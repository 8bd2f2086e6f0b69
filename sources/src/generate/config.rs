//! The generator's knobs (`[generate]` in the TOML config) and the checks that make them usable.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// Most symbols a day can have: 10 real large caps, then synthetic codes from 10001 upwards.
pub const MAX_SYMBOLS: usize = 9_000;

/// Sizes and seed of a generated day. Every field has a default, so `[generate]` may be empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// Seed of the random streams; the same config always gives byte-identical output.
    pub seed: u64,
    /// Trade date (HKT); its spread table sets the tick grid. A weekday is not enforced.
    pub date: NaiveDate,
    /// Valid fills to generate (invalid fill-shaped lines come on top).
    pub fills: usize,
    /// Quotes to generate over the session.
    pub quotes: usize,
    /// Accounts, named `ACC-001`, `ACC-002`, ...
    pub accounts: usize,
    /// Strategies per account, from a fixed list of plausible names (extended as `strategy-NN`).
    pub strategies: usize,
    /// Instruments: the first ones are real large caps, the rest synthetic codes from 10001 (at most 9000).
    pub symbols: usize,
    /// Fraction of fills later retracted by a bust, in [0, 1).
    pub bust_ratio: f64,
    /// Fraction of event lines that are intentionally invalid (each one is rejected), in [0, 1).
    pub invalid_ratio: f64,
    /// Fraction of fills that arrive seconds to minutes after their timestamp, in [0, 1).
    pub late_ratio: f64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            seed: 7,
            date: NaiveDate::from_ymd_opt(2026, 3, 2).expect("valid date"),
            fills: 20_000,
            quotes: 100_000,
            accounts: 4,
            strategies: 3,
            symbols: 10,
            bust_ratio: 0.005,
            invalid_ratio: 0.002,
            late_ratio: 0.01,
        }
    }
}

/// Why a config cannot generate a day; names the offending `[generate]` field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GenerateError {
    /// `symbols` is zero or above [`MAX_SYMBOLS`].
    #[error("generate.symbols must be between 1 and {max}, got {got}")]
    Symbols {
        /// The value given.
        got: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// `accounts` is zero.
    #[error("generate.accounts must be at least 1")]
    NoAccounts,
    /// `strategies` is zero.
    #[error("generate.strategies must be at least 1")]
    NoStrategies,
    /// A ratio is not a number in [0, 1).
    #[error("generate.{field} must be in [0, 1), got {value}")]
    Ratio {
        /// Field name (`bust_ratio`, `invalid_ratio` or `late_ratio`).
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// No spread table covers the date (the built-in ones start on 2000-01-01), or it is after
    /// 2200, beyond nanosecond timestamps.
    #[error("generate.date {0} has no spread table or is after 2200")]
    Date(NaiveDate),
}

impl GenerateConfig {
    /// Checks that the config can generate a day (whether its date has a spread table is checked
    /// where the tables are known: `Day::with_spreads`).
    pub fn validate(&self) -> Result<(), GenerateError> {
        if self.symbols == 0 || self.symbols > MAX_SYMBOLS {
            return Err(GenerateError::Symbols { got: self.symbols, max: MAX_SYMBOLS });
        }
        if self.accounts == 0 {
            return Err(GenerateError::NoAccounts);
        }
        if self.strategies == 0 {
            return Err(GenerateError::NoStrategies);
        }
        for (field, value) in
            [("bust_ratio", self.bust_ratio), ("invalid_ratio", self.invalid_ratio), ("late_ratio", self.late_ratio)]
        {
            if !(0.0..1.0).contains(&value) {
                return Err(GenerateError::Ratio { field, value });
            }
        }
        // Whether the date has a spread table is checked against the tables in force
        // (`Day::with_spreads`).
        if self.date.year() > 2200 {
            return Err(GenerateError::Date(self.date));
        }
        Ok(())
    }
}
