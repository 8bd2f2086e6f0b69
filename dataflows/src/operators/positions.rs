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

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use super::pending::Pending;
use crate::fees::FeeBreakdown;
use crate::model::{Fill, PositionKey, PositionState, PositionStep};
use crate::pnl::EnrichedFill;

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

/// Either output of the operator, split by [`positions`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Out {
    Pos(PositionKey, PositionState),
    Fill(FillPnl),
}

struct Entry {
    fill: EnrichedFill,
    step: PositionStep,
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
    fn find(&self, f: &Fill) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| order_key(&e.fill.fill).cmp(&order_key(f)))
    }

    /// Applies one time's changes; pushes output updates (+1 new, −1 old) to `out`.
    fn apply(
        &mut self,
        key: &PositionKey,
        changes: Vec<(EnrichedFill, isize)>,
        out: &mut Vec<(Out, isize)>,
    ) {
        // Earliest index touched, in the current book.
        let mut lo = self.entries.len();
        for (f, _) in &changes {
            let i = match self.find(&f.fill) {
                Ok(i) | Err(i) => i,
            };
            lo = lo.min(i);
        }
        let had_fills = !self.entries.is_empty();
        let old_tail: Vec<FillPnl> = self.entries[lo..].iter().map(to_row).collect();
        let old_state = self.current.clone();

        for (f, r) in changes {
            if r > 0 {
                for _ in 0..r {
                    let i = match self.find(&f.fill) {
                        Ok(i) | Err(i) => i,
                    };
                    self.entries.insert(
                        i,
                        Entry {
                            fill: f.clone(),
                            step: PositionStep::default(),
                        },
                    );
                }
            } else {
                for _ in 0..(-r) {
                    if let Ok(i) = self.find(&f.fill) {
                        self.entries.remove(i);
                    }
                }
            }
        }

        // Restart the fold from the last snapshot at or before `lo`.
        let cp = (lo / CHECKPOINT_EVERY).min(self.checkpoints.len().saturating_sub(1));
        self.checkpoints.truncate(cp + 1);
        let mut state = self.checkpoints.get(cp).cloned().unwrap_or_default();
        if self.checkpoints.is_empty() {
            self.checkpoints.push(PositionState::default());
        }
        let start = cp * CHECKPOINT_EVERY;
        for i in start..self.entries.len() {
            if i % CHECKPOINT_EVERY == 0 && i / CHECKPOINT_EVERY >= self.checkpoints.len() {
                self.checkpoints.push(state.clone());
            }
            let e = &mut self.entries[i];
            let f = &e.fill.fill;
            e.step = state.apply(f.signed_qty(), f.price, e.fill.fees.total, f.ts);
        }
        self.current = state;

        // Emit the enriched-fill rows that changed (both tails are in book order).
        let new_tail: Vec<FillPnl> = self.entries[lo.min(self.entries.len())..]
            .iter()
            .map(to_row)
            .collect();
        let (mut a, mut b) = (
            old_tail.into_iter().peekable(),
            new_tail.into_iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x == y => {
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if order_key(&x.fill) <= order_key(&y.fill) => {
                    out.push((Out::Fill(a.next().expect("peeked")), -1))
                }
                (Some(_), Some(_)) | (None, Some(_)) => {
                    out.push((Out::Fill(b.next().expect("peeked")), 1))
                }
                (Some(_), None) => out.push((Out::Fill(a.next().expect("peeked")), -1)),
                (None, None) => break,
            }
        }

        let changed = old_state != self.current;
        if had_fills && (self.entries.is_empty() || changed) {
            out.push((Out::Pos(key.clone(), old_state), -1));
        }
        if !self.entries.is_empty() && (!had_fills || changed) {
            out.push((Out::Pos(key.clone(), self.current.clone()), 1));
        }
    }
}

fn to_row(e: &Entry) -> FillPnl {
    FillPnl {
        fill: e.fill.fill.clone(),
        fees: e.fill.fees.clone(),
        step: e.step.clone(),
    }
}

fn key_hash(key: &PositionKey) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// Positions per (account, strategy, symbol), and every fill with the realized P&L it produced.
///
/// Input updates must be inserts (+1) of fills and, for busts, retractions (−1) of the same record.
/// Outputs change only at times where the input changed; a key whose fills are all busted disappears.
#[allow(clippy::type_complexity)]
pub fn positions<'s, T>(
    fills: VecCollection<'s, T, EnrichedFill, isize>,
) -> (
    VecCollection<'s, T, (PositionKey, PositionState), isize>,
    VecCollection<'s, T, FillPnl, isize>,
)
where
    T: Timestamp + TotalOrder,
{
    let out = fills
        .inner
        .unary_frontier(
            Exchange::new(|(f, _t, _r): &(EnrichedFill, T, isize)| key_hash(&f.fill.key)),
            "Positions",
            |_cap, _info| {
                let mut pending: Pending<T, EnrichedFill> = Pending::new();
                let mut books: FxHashMap<PositionKey, Book> = FxHashMap::default();
                let mut updates: Vec<(Out, isize)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| pending.stash(cap, data));
                    while let Some((time, mut changes)) = pending.next_complete(frontier) {
                        consolidate(&mut changes);
                        changes.sort_by(|(a, _), (b, _)| a.fill.key.cmp(&b.fill.key));
                        let cap = pending.cap_for(&time);
                        let mut session = output.session(&cap);
                        let mut iter = changes.into_iter().peekable();
                        while let Some((first, r)) = iter.next() {
                            let key = first.fill.key.clone();
                            let mut group = vec![(first, r)];
                            while iter.peek().is_some_and(|(f, _)| f.fill.key == key) {
                                group.push(iter.next().expect("peeked"));
                            }
                            let book = books.entry(key.clone()).or_default();
                            book.apply(&key, group, &mut updates);
                            if book.entries.is_empty() {
                                books.remove(&key);
                            }
                            for (o, r) in updates.drain(..) {
                                session.give((o, time.clone(), r));
                            }
                        }
                    }
                    pending.downgrade();
                }
            },
        )
        .as_collection();
    let positions = out.clone().flat_map(|o| match o {
        Out::Pos(k, s) => Some((k, s)),
        Out::Fill(_) => None,
    });
    let fill_rows = out.flat_map(|o| match o {
        Out::Fill(f) => Some(f),
        Out::Pos(..) => None,
    });
    (positions, fill_rows)
}
