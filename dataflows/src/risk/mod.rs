//! Risk metrics (../shared/HKEX.md §5), as pure functions and small state machines: the building
//! blocks the risk dataflow applies per account, strategy and desk.
//!
//! - [`exposure`]: gross, net, long and short market value, leverage against NAV (exact decimals).
//! - [`concentration`]: largest single-name weight, weight by sector, Herfindahl index.
//! - [`vol`]: reference EWMA volatility and covariance (RiskMetrics, λ = 0.94 by default) from log
//!   returns; the engine ([`book`]) uses simple returns (docs/risk.md).
//! - [`var`]: parametric VaR (any confidence, any horizon) with its per-position components,
//!   historical VaR and expected shortfall.
//! - [`drawdown`]: running peak of total P&L, drawdown and the day's maximum drawdown.
//! - [`book`]: all of the above per account, strategy and desk, kept incrementally from position
//!   and mark changes, with limit alerts (what the risk operator runs).
//! - [`limits`]: soft and hard limits with hysteresis; one event when a breach starts, one when
//!   it clears.
//!
//! Money stays exact ([`Decimal`]); statistical estimates (volatility, VaR) are `f64`, reported
//! rounded to the cent by the caller.

pub mod book;
pub mod concentration;
pub mod drawdown;
pub mod exposure;
pub mod limits;
pub mod var;
pub mod vol;

pub use rust_decimal::Decimal;
