//! Harbour's domain model and incremental dataflows: positions, fees, P&L and roll-ups.
//!
//! This crate does no I/O. Sources turn input lines into [`validate::Input`]s, the
//! [`validate::Validator`] applies the input rules, and [`graph::harbour`] builds the timely +
//! differential dataflow whose outputs the sinks write. See ARCHITECTURE.md for the whole flow.
//!
//! - [`model`]: identifiers, events and the average-cost fold.
//! - [`ticks`], [`fees`]: the spread table and Hong Kong trading costs, as dated data.
//! - [`operators`]: the custom operators (positions; latest state per key).
//! - [`marks`], [`pnl`], [`rollups`], [`orders`]: the dataflow stages (orders also holds the
//!   latest trading status per security and market).
//! - [`reference`]: a from-scratch batch recomputation, the yardstick for the incremental outputs.
//! - [`sharded`]: a hash map split by hash, for the maps that hold every fill of a day.
//! - [`risk`]: exposure, concentration, EWMA volatility, VaR, drawdown and limit alerts, kept per
//!   account, strategy and desk by the risk operator.

pub mod fees;
pub mod graph;
pub mod marks;
pub mod model;
pub mod operators;
pub mod orders;
pub mod pnl;
pub mod reference;
pub mod risk;
pub mod rollups;
pub mod sharded;
pub mod sums;
pub mod ticks;
pub mod validate;
