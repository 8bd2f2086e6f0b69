//! The whole Harbour dataflow, from validated inputs to every output collection.
//!
//! ```text
//!  fills ──► positions (fees on entry; valued at marks) ──┬─► position rows ──► roll-ups
//!                   ▲                                    └─► fill rows (realized per fill) ─► minute flows
//!  market ─► marks ─┘
//!                   │                                    └─► risk (per account, strategy, desk) ─► risk rows, alerts
//!  limits, seeds ───┴────────────────────────────────────────┘
//!  orders ─► latest state per order id
//!  status ─► latest trading status per security and market
//!  instruments ─► (passed through)
//! ```
//!
//! Pure: no I/O. The caller feeds the inputs (differential `InputSession`s) and attaches sinks to
//! the outputs; every output update carries the timely time it changed at, which sinks use as the
//! row version.

use std::sync::Arc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::fees::CostSchedules;
use crate::marks::{Mark, MarkFold, MarkPolicy};
use crate::model::{Fill, Instrument, MarketEvent, Order, OrderId, StatusSubject, Symbol, TradingStatus, Ts};
use crate::operators::{latest_fold, positions, risk, FillPnl};
use crate::orders::{OrderFold, StatusFold};
use crate::pnl::PositionRow;
use crate::risk::book::{AlertRow, Limits, RiskConfig, RiskRow, RiskSeed, VolRow};
use crate::rollups::{minute_flows, rollups, Group};
use crate::sums::{FlowTotals, Totals};

/// Settings of the dataflow.
#[derive(Clone, Debug, Default)]
pub struct GraphConfig {
    /// Cost schedules for fees.
    pub schedules: Arc<CostSchedules>,
    /// Mark policy.
    pub marks: MarkPolicy,
    /// Risk settings (history, capital, limits at start).
    pub risk: RiskConfig,
}

/// The input collections.
pub struct Inputs<'s, T: Timestamp> {
    /// Fills (+1) and busts (−1 of the same fill).
    pub fills: VecCollection<'s, T, Arc<Fill>, isize>,
    /// Market data, insert-only.
    pub market: VecCollection<'s, T, MarketEvent, isize>,
    /// Orders, insert-only.
    pub orders: VecCollection<'s, T, Order, isize>,
    /// Instruments (a change retracts the previous record).
    pub instruments: VecCollection<'s, T, Instrument, isize>,
    /// Trading statuses of securities and markets, insert-only.
    pub status: VecCollection<'s, T, TradingStatus, isize>,
    /// Risk limits: a record replaces the limits from its time on.
    pub limits: VecCollection<'s, T, Limits, isize>,
    /// Risk path state (drawdown peaks, breaches) carried over a restart.
    pub seeds: VecCollection<'s, T, RiskSeed, isize>,
}

/// The output collections.
pub struct Outputs<'s, T: Timestamp> {
    /// Positions valued at their marks.
    pub positions: VecCollection<'s, T, PositionRow, isize>,
    /// Enriched fills with fees and realized P&L.
    pub fills: VecCollection<'s, T, FillPnl, isize>,
    /// Account and strategy roll-ups.
    pub rollups: VecCollection<'s, T, (Group, Totals), isize>,
    /// Fill flow by account/strategy and minute.
    pub minutes: VecCollection<'s, T, ((Group, Ts), FlowTotals), isize>,
    /// Marks per symbol.
    pub marks: VecCollection<'s, T, (Symbol, Mark), isize>,
    /// Latest state per order.
    pub orders: VecCollection<'s, T, (OrderId, Order), isize>,
    /// Instruments.
    pub instruments: VecCollection<'s, T, Instrument, isize>,
    /// Latest trading status per security and market.
    pub status: VecCollection<'s, T, (StatusSubject, TradingStatus), isize>,
    /// Risk metrics per account, strategy and the desk.
    pub risk: VecCollection<'s, T, RiskRow, isize>,
    /// Limit alerts (insert-only).
    pub alerts: VecCollection<'s, T, AlertRow, isize>,
    /// EWMA volatility per symbol.
    pub vol: VecCollection<'s, T, VolRow, isize>,
}

/// Builds the dataflow.
pub fn harbour<'s, T: Timestamp + TotalOrder + Lattice + std::hash::Hash>(
    inputs: Inputs<'s, T>,
    config: &GraphConfig,
) -> Outputs<'s, T> {
    let marks = latest_fold(inputs.market.map(|e| (e.symbol(), e)), MarkFold(config.marks.clone()));
    let (rows, fills, deltas, flows) = positions(inputs.fills, marks.clone(), config.schedules.clone());
    let (risk, alerts, vol) =
        risk(rows.clone(), marks.clone(), inputs.instruments.clone(), inputs.limits, inputs.seeds, config.risk.clone());
    let rollups = rollups(deltas);
    let minutes = minute_flows(flows);
    let orders = latest_fold(inputs.orders.map(|o| (o.order_id.clone(), o)), OrderFold);
    let status = latest_fold(inputs.status.map(|s| (s.subject.clone(), s)), StatusFold);
    Outputs {
        positions: rows,
        fills,
        rollups,
        minutes,
        marks,
        orders,
        instruments: inputs.instruments,
        status,
        risk,
        alerts,
        vol,
    }
}
