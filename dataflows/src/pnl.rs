//! P&L: fees on every fill, and positions valued at their marks.
//!
//! ```text
//!  fills ─► positions (fees per fill on entry; valued at the symbol's mark) ─► PositionRow
//! ```
//!
//! Money in output rows is rounded to [`MONEY_DP`] decimal places (the fold itself keeps full
//! precision), so sums over rows are exact and equal however they are grouped.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::fees::{CostSchedule, CostSchedules, FeeBreakdown};
use crate::marks::{Mark, MarkSource};
use crate::model::{Fill, PositionKey, PositionState, Ts};
use crate::validate::trade_date;

/// Decimal places kept for money in output rows.
pub const MONEY_DP: u32 = 8;

/// The cost schedule in force on a fill's trade date (none when no schedule is).
fn in_force<'s>(fill: &Fill, schedules: &'s CostSchedules) -> Option<&'s Arc<CostSchedule>> {
    schedules.on(trade_date(fill.ts))
}

/// The cost schedule in force on a fill's trade date, shared (none when no schedule is).
pub fn schedule_of(fill: &Fill, schedules: &CostSchedules) -> Option<Arc<CostSchedule>> {
    in_force(fill, schedules).cloned()
}

/// A fill's costs under `schedule`; without one, nothing, under the schedule name "none".
pub fn fees_under(fill: &Fill, schedule: Option<&CostSchedule>) -> FeeBreakdown {
    match schedule {
        Some(s) => s.fees(fill),
        None => FeeBreakdown { schedule: "none".into(), ..Default::default() },
    }
}

/// The schedule a fill is charged under (see [`schedule_of`]) and its total cost.
pub fn charge(fill: &Fill, schedules: &CostSchedules) -> (Option<Arc<CostSchedule>>, Decimal) {
    let schedule = schedule_of(fill, schedules);
    let fee = fees_under(fill, schedule.as_deref()).total;
    (schedule, fee)
}

/// A fill's costs under the schedule in force on its trade date (none when no schedule is).
pub fn fees_of(fill: &Fill, schedules: &CostSchedules) -> FeeBreakdown {
    fees_under(fill, in_force(fill, schedules).map(|s| &**s))
}

/// One position valued at its mark: the `positions` table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PositionRow {
    /// Account, strategy, symbol.
    pub key: PositionKey,
    /// Signed quantity.
    pub qty: i64,
    /// Average open price (none when flat).
    pub avg_price: Option<Decimal>,
    /// Signed cost basis of the open quantity.
    pub cost: Decimal,
    /// Realized P&L before costs.
    pub realized: Decimal,
    /// Every cost charged.
    pub fees: Decimal,
    /// Unrealized P&L at the mark (zero without a mark).
    pub unrealized: Decimal,
    /// Signed market value at the mark (the cost basis without a mark).
    pub market_value: Decimal,
    /// realized − fees + unrealized.
    pub total: Decimal,
    /// The mark used.
    pub mark: Option<Decimal>,
    /// Where the mark came from.
    pub mark_source: MarkSource,
    /// Fills applied.
    pub fills: u32,
    /// Shares bought.
    pub bought: i64,
    /// Shares sold.
    pub sold: i64,
    /// Event time of the latest fill.
    pub last_fill_ts: Ts,
}

fn money(x: Decimal) -> Decimal {
    x.round_dp(MONEY_DP)
}

impl PositionRow {
    /// Values `state` at `mark`.
    pub fn new(key: PositionKey, state: &PositionState, mark: &Mark) -> PositionRow {
        PositionRow::valued(key, state, state.avg_price().map(money), mark)
    }

    /// [`PositionRow::new`] with the average open price already worked out (`state.avg_price()`
    /// to [`MONEY_DP`] places): the position operator keeps it per book, divided once a time
    /// rather than at every valuation.
    pub fn valued(key: PositionKey, state: &PositionState, avg_price: Option<Decimal>, mark: &Mark) -> PositionRow {
        let (unrealized, market_value) = match mark.price {
            Some(m) => (state.unrealized(m), Decimal::from(state.qty) * m),
            None => (Decimal::ZERO, state.cost),
        };
        let realized = money(state.realized);
        let fees = money(state.fees);
        let unrealized = money(unrealized);
        PositionRow {
            key,
            qty: state.qty,
            avg_price,
            cost: money(state.cost),
            realized,
            fees,
            unrealized,
            market_value: money(market_value),
            total: realized - fees + unrealized,
            mark: mark.price,
            mark_source: mark.source,
            fills: state.fills,
            bought: state.bought,
            sold: state.sold,
            last_fill_ts: state.last_fill_ts,
        }
    }
}
