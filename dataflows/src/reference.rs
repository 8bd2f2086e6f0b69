//! A straightforward batch recomputation of every output, from the final set of inputs.
//!
//! No dataflow, no incrementality: sort each key's fills by `(ts, exec_id)`, fold, value at the
//! marks, sum. Tests compare the incremental outputs with this; `harbour replay --verify` does too.

use std::collections::BTreeMap;

use crate::fees::CostSchedules;
use crate::marks::{Mark, MarkPolicy, MarkState};
use crate::model::{Fill, MarketEvent, PositionKey, PositionState, Symbol, Ts};
use crate::operators::FillPnl;
use crate::pnl::{charge, PositionRow};
use crate::rollups::{flow_of, minute_of, totals_of, Group};
use crate::sums::{FlowTotals, Totals};
use differential_dataflow::difference::Semigroup;

/// Every output of the dataflow, as sorted collections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reference {
    /// Position rows.
    pub positions: Vec<PositionRow>,
    /// Fill rows.
    pub fills: Vec<FillPnl>,
    /// Roll-ups.
    pub rollups: Vec<(Group, Totals)>,
    /// Minute flows.
    pub minutes: Vec<((Group, Ts), FlowTotals)>,
    /// Marks.
    pub marks: Vec<(Symbol, Mark)>,
}

/// Recomputes everything from the live fills (busted ones removed) and all market events.
pub fn recompute(fills: &[Fill], market: &[MarketEvent], schedules: &CostSchedules, policy: &MarkPolicy) -> Reference {
    let mut marks_state: BTreeMap<Symbol, MarkState> = BTreeMap::new();
    for e in market {
        marks_state.entry(e.symbol()).or_default().update(e);
    }
    let marks: BTreeMap<Symbol, Mark> = marks_state.iter().map(|(s, m)| (*s, m.mark(policy))).collect();

    let mut books: BTreeMap<PositionKey, Vec<&Fill>> = BTreeMap::new();
    for f in fills {
        books.entry(f.key.clone()).or_default().push(f);
    }
    let mut out = Reference { marks: marks.clone().into_iter().collect(), ..Default::default() };
    for (key, mut book) in books {
        book.sort_by(|a, b| (a.ts, &a.exec_id).cmp(&(b.ts, &b.exec_id)));
        let mut state = PositionState::default();
        for f in book {
            let (schedule, fee) = charge(f, schedules);
            let step = state.apply(f.signed_qty(), f.price, fee, f.ts);
            out.fills.push(FillPnl { fill: std::sync::Arc::new(f.clone()), schedule, fee, step });
        }
        let none = Mark { price: None, source: crate::marks::MarkSource::None, ts: 0 };
        out.positions.push(PositionRow::new(key.clone(), &state, marks.get(&key.symbol).unwrap_or(&none)));
    }
    let mut rollups: BTreeMap<Group, Totals> = BTreeMap::new();
    for row in &out.positions {
        let t = totals_of(row);
        rollups.entry(Group::Account(row.key.account.clone())).or_default().plus_equals(&t);
        rollups.entry(Group::Strategy(row.key.strategy.clone())).or_default().plus_equals(&t);
    }
    let mut minutes: BTreeMap<(Group, Ts), FlowTotals> = BTreeMap::new();
    for row in &out.fills {
        let t = flow_of(row);
        let m = minute_of(row.fill.ts);
        minutes.entry((Group::Account(row.fill.key.account.clone()), m)).or_default().plus_equals(&t);
        minutes.entry((Group::Strategy(row.fill.key.strategy.clone()), m)).or_default().plus_equals(&t);
    }
    out.rollups = rollups.into_iter().collect();
    out.minutes = minutes.into_iter().collect();
    out.positions.sort();
    out.fills.sort();
    out
}
