//! Roll-ups: per account and per strategy totals over positions, and P&L by minute from fills.
//!
//! ```text
//!  positions operator ─► (group, ΔTotals) per epoch ─► count_total ─► (account | strategy, Totals)
//!  positions operator ─► ((group, minute), ΔFlowTotals) per epoch ─► count_total ─► ((account | strategy, minute), FlowTotals)
//! ```

use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::model::{Ts, NANOS_PER_MINUTE};
use crate::operators::FillPnl;
use crate::pnl::{PositionRow, MONEY_DP};
use crate::sums::{FlowTotals, Totals};

/// What a roll-up groups by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Group {
    /// One account, all strategies.
    Account(SmolStr),
    /// One strategy, all accounts.
    Strategy(SmolStr),
    /// Every position (risk metrics only: the roll-ups have no desk row).
    Desk,
}

impl Group {
    /// `account`, `strategy` or `desk`.
    pub fn kind(&self) -> &'static str {
        match self {
            Group::Account(_) => "account",
            Group::Strategy(_) => "strategy",
            Group::Desk => "desk",
        }
    }

    /// The account or strategy name (empty for the desk).
    pub fn name(&self) -> &str {
        match self {
            Group::Account(s) | Group::Strategy(s) => s,
            Group::Desk => "",
        }
    }
}

/// A position's contribution to its roll-ups.
pub fn totals_of(row: &PositionRow) -> Totals {
    let mv = row.market_value;
    Totals {
        positions: Decimal::ONE,
        long_mv: mv.max(Decimal::ZERO),
        short_mv: mv.min(Decimal::ZERO),
        gross: mv.abs(),
        net: mv,
        realized: row.realized,
        unrealized: row.unrealized,
        fees: row.fees,
        total: row.total,
    }
}

/// A fill's contribution to its minute.
pub fn flow_of(row: &FillPnl) -> FlowTotals {
    let f = &row.fill;
    let qty = Decimal::from(f.qty);
    let notional = f.consideration();
    let buy = f.signed_qty() > 0;
    let realized = row.step.realized.round_dp(MONEY_DP);
    FlowTotals {
        fills: Decimal::ONE,
        bought: if buy { qty } else { Decimal::ZERO },
        sold: if buy { Decimal::ZERO } else { qty },
        buy_notional: if buy { notional } else { Decimal::ZERO },
        sell_notional: if buy { Decimal::ZERO } else { notional },
        realized,
        fees: row.fee,
        net: realized - row.fee,
    }
}

/// Start of the minute containing `ts`.
pub fn minute_of(ts: Ts) -> Ts {
    ts.div_euclid(NANOS_PER_MINUTE) * NANOS_PER_MINUTE
}

/// Totals per account and per strategy, from the roll-up changes the positions operator emits.
pub fn rollups<'s, T: Timestamp + TotalOrder + differential_dataflow::lattice::Lattice + std::hash::Hash>(
    deltas: VecCollection<'s, T, Group, Totals>,
) -> VecCollection<'s, T, (Group, Totals), isize> {
    deltas.count_total()
}

/// Fill flow per account and per strategy per minute, from the per-epoch changes the positions
/// operator emits.
pub fn minute_flows<'s, T: Timestamp + TotalOrder + differential_dataflow::lattice::Lattice + std::hash::Hash>(
    deltas: VecCollection<'s, T, (Group, Ts), FlowTotals>,
) -> VecCollection<'s, T, ((Group, Ts), FlowTotals), isize> {
    deltas.count_total()
}
