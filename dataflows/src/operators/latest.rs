//! A keyed fold over insert-only updates, applied in time order: the "latest state" operator.
//!
//! ```text
//!  (K, V) +1 ──exchange by K──► [ state S per key ] ──► (K, O) changes
//! ```
//!
//! Used for marks (latest bid/ask/last/close per symbol) and order states (latest event per order).
//! Each update costs one fold step, whatever the key's history. Retractions are not supported:
//! the inputs it serves are append-only logs.

use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::{ExchangeData, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use super::pending::Pending;
use crate::sharded::ShardedMap;

/// How a key's state absorbs an update and what it shows.
pub trait LatestFold: Clone + 'static {
    /// The key.
    type Key: ExchangeData + Hash + Eq;
    /// An input value.
    type Value: ExchangeData;
    /// The per-key state.
    type State: Default + 'static;
    /// The row shown for a key.
    type Output: ExchangeData + PartialEq;
    /// Folds one value into the state. Must be insensitive to the order of updates within one time
    /// (for example "keep the latest by event time, ties broken by value").
    fn fold(&self, state: &mut Self::State, value: Self::Value);
    /// The row for the state, if any.
    fn show(&self, key: &Self::Key, state: &Self::State) -> Option<Self::Output>;
}

/// Applies `fold` per key in time order; emits `(key, output)` changes.
pub fn latest_fold<'s, T, F>(
    input: VecCollection<'s, T, (F::Key, F::Value), isize>,
    fold: F,
) -> VecCollection<'s, T, (F::Key, F::Output), isize>
where
    T: Timestamp + TotalOrder,
    F: LatestFold,
{
    input
        .inner
        .unary_frontier(
            Exchange::new(|((k, _v), _t, _r): &((F::Key, F::Value), T, isize)| {
                let mut h = rustc_hash::FxHasher::default();
                k.hash(&mut h);
                h.finish()
            }),
            "LatestFold",
            move |_cap, _info| {
                let mut pending: Pending<T, (F::Key, F::Value)> = Pending::new(1);
                let mut states: ShardedMap<F::Key, F::State> = ShardedMap::default();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| pending.stash(cap, data));
                    while let Some((time, changes)) = pending.next_complete(std::slice::from_ref(frontier)) {
                        // Old outputs of every touched key, before this time's updates.
                        let mut before: FxHashMap<F::Key, Option<F::Output>> = FxHashMap::default();
                        for ((k, v), r) in changes {
                            if r <= 0 {
                                continue;
                            }
                            let state = states.entry(k.clone()).or_default();
                            before.entry(k.clone()).or_insert_with(|| fold.show(&k, state));
                            for _ in 0..r {
                                fold.fold(state, v.clone());
                            }
                        }
                        let cap = pending.cap_for(&time, 0);
                        let mut session = output.session(&cap);
                        for (k, old) in before {
                            let new = fold.show(&k, states.get(&k).expect("a touched key has a state"));
                            if old != new {
                                if let Some(o) = old {
                                    session.give(((k.clone(), o), time.clone(), -1));
                                }
                                if let Some(n) = new {
                                    session.give(((k, n), time.clone(), 1));
                                }
                            }
                        }
                    }
                    pending.downgrade();
                }
            },
        )
        .as_collection()
}
