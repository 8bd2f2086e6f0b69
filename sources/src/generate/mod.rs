//! The deterministic sample-day generator: a seeded, realistic HKEX trading day as contract lines.
//!
//! A day is: instrument reference lines first (real large caps, then synthetic codes), then the
//! session's events in arrival order — quotes, order events and fills on a random walk that stays on
//! the trade date's spread-table grid, 09:30–12:00 and 13:00–16:00 HKT — with some fills arriving
//! late, some busted later, and a known number of intentionally invalid lines mixed in; then the
//! closing prices at 16:08–16:10.
//!
//! ```no_run
//! use harbour_sources::generate::{generate_with_stats, GenerateConfig};
//!
//! let (lines, stats) = generate_with_stats(&GenerateConfig::default()).unwrap();
//! assert_eq!(lines.len(), stats.lines);
//! ```
//!
//! The same config always gives byte-identical output (ChaCha8 streams, integer prices, no
//! platform maths). For days too large to hold, iterate a [`Day`] instead. Prices follow the
//! spread tables given (`generate_on`; `generate` uses the built-in ones): the pipeline passes the
//! tables its input rules check against. The close history ([`history`]) is the exception to "no
//! platform maths": its Gaussian draws and compounding use `ln`, `cos` and `exp`, so it is the same
//! for a seed on one platform, and may differ in the last digit between C libraries.

mod clock;
mod config;
mod day;
mod faults;
mod history;
mod stats;
mod universe;
mod walk;

#[cfg(test)]
mod tests;

pub use config::{GenerateConfig, GenerateError, MAX_SYMBOLS};
pub use day::Day;
pub use history::history;

use harbour_dataflows::ticks::SpreadTables;
pub use stats::{DayStats, InvalidCounts, InvalidKind};

/// The generated day as contract lines, in arrival order, on the built-in spread tables.
pub fn generate(cfg: &GenerateConfig) -> Result<Vec<String>, GenerateError> {
    generate_on(cfg, &SpreadTables::default())
}

/// The generated day as contract lines, prices on the grid of `spreads` (the tables the
/// pipeline's input rules check against).
pub fn generate_on(cfg: &GenerateConfig, spreads: &SpreadTables) -> Result<Vec<String>, GenerateError> {
    Ok(generate_with_stats_on(cfg, spreads)?.0)
}

/// The generated day as contract lines, in arrival order, with its counts.
pub fn generate_with_stats(cfg: &GenerateConfig) -> Result<(Vec<String>, DayStats), GenerateError> {
    generate_with_stats_on(cfg, &SpreadTables::default())
}

/// `generate_with_stats` on the spread tables `spreads`.
pub fn generate_with_stats_on(
    cfg: &GenerateConfig,
    spreads: &SpreadTables,
) -> Result<(Vec<String>, DayStats), GenerateError> {
    let mut day = Day::with_spreads(cfg, spreads)?;
    let lines: Vec<String> = day.by_ref().collect();
    Ok((lines, day.stats().clone()))
}
