//! The position operator: average-cost positions that stay exact under busts and late fills.
//!
//! ```text
//!  fills (EnrichedFill, ±1) ──exchange by PositionKey──► [ per-key fill book ] ──► Pos(key, state)
//!                                                                          └──► Fill(FillPnl)
//! ```
//!
//! Each key keeps its fills sorted by `(ts, exec_id)`, the realized P&L each fill produced, the
//! running state after the last fill, and a snapshot of the state every [`CHECKPOINT_EVERY`] fills.
//! At each completed time the operator applies that time's inserts and retractions (busts), finds
//! the earliest fill touched, restarts the fold from the snapshot before it and replays the tail.
//!
//! Cost: a fill that arrives in time order (the normal case) lands at the end of its book and
//! costs O(1) amortized — independent of the number of fills the key already holds. A late fill or
//! a bust at depth `d` from the end costs O(d + CHECKPOINT_EVERY). Output per change: the position
//! row (retract old, insert new) and the enriched-fill rows whose realized P&L changed.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use super::pending::Pending;
use crate::fees::{CostSchedules, FeeBreakdown};
use crate::model::{Fill, PositionKey, PositionState, PositionStep, Side};
use crate::pnl::{enrich, EnrichedFill};
use rust_decimal::Decimal;

/// Snapshot interval of the fold state within a key's book.
pub const CHECKPOINT_EVERY: usize = 64;

/// An enriched fill with the realized P&L it produced and the position after it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FillPnl {
    /// The fill.
    pub fill: Fill,
    /// Its costs.
    pub fees: FeeBreakdown,
    /// What it did to the position (realized P&L before costs, quantity after).
    pub step: PositionStep,
}

/// One fill in a book, stored inline without the key its book already has (no allocation per
/// fill; the fee breakdown is a pure function of the fill, so only its total is kept).
struct Entry {
    ts: i64,
    exec_id: smol_str::SmolStr,
    order_id: smol_str::SmolStr,
    signed_qty: i64,
    price: Decimal,
    commission: Option<Decimal>,
    stamp_duty_exempt: bool,
    odd_lot: bool,
    source_seq: u64,
    fee: Decimal,
    step: PositionStep,
}

impl Entry {
    fn new(f: Fill, fee: Decimal) -> Entry {
        Entry {
            ts: f.ts,
            signed_qty: f.signed_qty(),
            exec_id: f.exec_id,
            order_id: f.order_id,
            price: f.price,
            commission: f.commission,
            stamp_duty_exempt: f.stamp_duty_exempt,
            odd_lot: f.odd_lot,
            source_seq: f.source_seq,
            fee,
            step: PositionStep::default(),
        }
    }

    fn fill(&self, key: &PositionKey) -> Fill {
        Fill {
            ts: self.ts,
            exec_id: self.exec_id.clone(),
            order_id: self.order_id.clone(),
            key: key.clone(),
            side: if self.signed_qty > 0 { Side::Buy } else { Side::Sell },
            qty: self.signed_qty.abs(),
            price: self.price,
            commission: self.commission,
            stamp_duty_exempt: self.stamp_duty_exempt,
            odd_lot: self.odd_lot,
            source_seq: self.source_seq,
        }
    }

    /// The output row, fees recomputed (they are deterministic in the fill).
    fn row(&self, key: &PositionKey, schedules: &CostSchedules) -> FillPnl {
        let e = enrich(self.fill(key), schedules);
        FillPnl { fill: e.fill, fees: e.fees, step: self.step.clone() }
    }
}

#[derive(Default)]
struct Book {
    entries: Vec<Entry>,
    /// `checkpoints[j]` is the state before entry `j * CHECKPOINT_EVERY`.
    checkpoints: Vec<PositionState>,
    current: PositionState,
}

fn order_key(f: &Fill) -> (i64, &str) {
    (f.ts, f.exec_id.as_str())
}

impl Book {
    /// Index of `f` (Ok) or where it would go (Err). Appends, the common case, are O(1).
    fn find(&self, f: &Fill) -> Result<usize, usize> {
        let key = order_key(f);
        match self.entries.last() {
            None => return Err(0),
            Some(last) if (last.ts, last.exec_id.as_str()) < key => return Err(self.entries.len()),
            _ => {}
        }
        self.entries.binary_search_by(|e| (e.ts, e.exec_id.as_str()).cmp(&key))
    }

    /// Applies one time's changes; pushes output updates (+1 new, −1 old) to `out`.
    fn apply(&mut self, key: &PositionKey, changes: Vec<(Fill, isize)>, schedules: &CostSchedules, out: &mut Outputs) {
        // Earliest index touched, in the current book.
        let mut lo = self.entries.len();
        for (f, _) in &changes {
            let i = match self.find(f) {
                Ok(i) | Err(i) => i,
            };
            lo = lo.min(i);
        }
        let old_len = self.entries.len();
        let had_fills = old_len > 0;
        let old_state = self.current.clone();
        // Steps of the entries that may change, to emit only the rows that did.
        let old_steps: FxHashMap<smol_str::SmolStr, PositionStep> =
            self.entries[lo..].iter().map(|e| (e.exec_id.clone(), e.step.clone())).collect();
        let mut fresh: Vec<EnrichedFill> = Vec::new();

        for (f, r) in changes {
            if r > 0 {
                let i = match self.find(&f) {
                    Ok(i) | Err(i) => i,
                };
                let enriched = enrich(f, schedules);
                let fee = enriched.fees.total;
                let entries: Vec<Entry> = (0..r).map(|_| Entry::new(enriched.fill.clone(), fee)).collect();
                self.entries.splice(i..i, entries);
                fresh.push(enriched);
            } else {
                for _ in 0..(-r) {
                    if let Ok(i) = self.find(&f) {
                        let gone = self.entries.remove(i);
                        // Retract its row unless it was inserted in this same epoch (never shown).
                        if old_steps.contains_key(&gone.exec_id) {
                            out.fills.push((gone.row(key, schedules), -1));
                        }
                    }
                }
            }
        }

        // Appends continue from the current state; anything else restarts the fold from the last
        // snapshot at or before `lo`.
        let (mut state, start) = if lo == old_len {
            (std::mem::take(&mut self.current), lo)
        } else {
            let cp = (lo / CHECKPOINT_EVERY).min(self.checkpoints.len().saturating_sub(1));
            self.checkpoints.truncate(cp + 1);
            (self.checkpoints.get(cp).cloned().unwrap_or_default(), cp * CHECKPOINT_EVERY)
        };
        if self.checkpoints.is_empty() {
            self.checkpoints.push(PositionState::default());
        }
        for i in start..self.entries.len() {
            if i % CHECKPOINT_EVERY == 0 && i / CHECKPOINT_EVERY >= self.checkpoints.len() {
                self.checkpoints.push(state.clone());
            }
            let e = &mut self.entries[i];
            e.step = state.apply(e.signed_qty, e.price, e.fee, e.ts);
        }
        self.current = state;

        // Emit the enriched-fill rows that changed: retract the old row, insert the new one.
        for e in &self.entries[lo.min(self.entries.len())..] {
            match old_steps.get(&e.exec_id) {
                Some(old) if *old == e.step => {}
                Some(old) => {
                    let mut row = e.row(key, schedules);
                    out.fills.push((row.clone(), 1));
                    row.step = old.clone();
                    out.fills.push((row, -1));
                }
                None => {
                    let pos = fresh.iter().position(|x| x.fill.exec_id == e.exec_id);
                    let row = match pos {
                        Some(p) => {
                            let x = fresh.swap_remove(p);
                            FillPnl { fill: x.fill, fees: x.fees, step: e.step.clone() }
                        }
                        None => e.row(key, schedules),
                    };
                    out.fills.push((row, 1));
                }
            }
        }

        let changed = old_state != self.current;
        if had_fills && (self.entries.is_empty() || changed) {
            out.positions.push(((key.clone(), old_state), -1));
        }
        if !self.entries.is_empty() && (!had_fills || changed) {
            out.positions.push(((key.clone(), self.current.clone()), 1));
        }
    }
}

fn key_hash(key: &PositionKey) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// Updates produced for one key at one time.
#[derive(Default)]
struct Outputs {
    positions: Vec<((PositionKey, PositionState), isize)>,
    fills: Vec<(FillPnl, isize)>,
}

type Out<T, D> = OutputBuilder<T, CapacityContainerBuilder<Vec<(D, T, isize)>>>;

/// Positions per (account, strategy, symbol), and every fill with its fees and the realized P&L it
/// produced. Fees are computed once, when a fill enters its book, under `schedules`.
///
/// Input updates must be inserts (+1) of fills and, for busts, retractions (−1) of the same record.
/// Outputs change only at times where the input changed; a key whose fills are all busted disappears.
#[allow(clippy::type_complexity)]
pub fn positions<'s, T>(
    fills: VecCollection<'s, T, Fill, isize>,
    schedules: Arc<CostSchedules>,
) -> (VecCollection<'s, T, (PositionKey, PositionState), isize>, VecCollection<'s, T, FillPnl, isize>)
where
    T: Timestamp + TotalOrder,
{
    let mut builder = OperatorBuilder::new("Positions".to_owned(), fills.inner.scope());
    let mut input = builder.new_input(fills.inner, Exchange::new(|(f, _t, _r): &(Fill, T, isize)| key_hash(&f.key)));
    let (pos_out, pos_stream) = builder.new_output();
    let (fill_out, fill_stream) = builder.new_output();
    let mut pos_out: Out<T, (PositionKey, PositionState)> = OutputBuilder::from(pos_out);
    let mut fill_out: Out<T, FillPnl> = OutputBuilder::from(fill_out);

    builder.build(move |_initial_caps| {
        let mut pending: Pending<T, Fill> = Pending::new(2);
        let mut books: FxHashMap<PositionKey, Book> = FxHashMap::default();
        let mut groups: FxHashMap<PositionKey, Vec<(Fill, isize)>> = FxHashMap::default();
        let mut out = Outputs::default();
        move |frontiers| {
            input.for_each(|cap, data| pending.stash(cap, data));
            let mut pos_session = pos_out.activate();
            let mut fill_session = fill_out.activate();
            while let Some((time, changes)) = pending.next_complete(&frontiers[0]) {
                for (f, r) in changes {
                    groups.entry(f.key.clone()).or_default().push((f, r));
                }
                let (pos_cap, fill_cap) = (pending.cap_for(&time, 0), pending.cap_for(&time, 1));
                let mut pos = pos_session.session(&pos_cap);
                let mut fil = fill_session.session(&fill_cap);
                for (key, mut group) in groups.drain() {
                    // Inserts before retractions, so a fill inserted and busted in one epoch nets out.
                    group.sort_by_key(|(_, r)| std::cmp::Reverse(*r));
                    let book = books.entry(key.clone()).or_default();
                    book.apply(&key, group, &schedules, &mut out);
                    if book.entries.is_empty() {
                        books.remove(&key);
                    }
                    for (d, r) in out.positions.drain(..) {
                        pos.give((d, time.clone(), r));
                    }
                    for (d, r) in out.fills.drain(..) {
                        fil.give((d, time.clone(), r));
                    }
                }
            }
            pending.downgrade();
        }
    });
    (pos_stream.as_collection(), fill_stream.as_collection())
}
