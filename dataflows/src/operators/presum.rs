//! Pre-aggregation: sums the diffs of equal records within each message before they reach an
//! arrangement.
//!
//! ```text
//!  (K, t, R) … ──► [ hash map per message: (K, t) → ΣR ] ──► (K, t, ΣR), zero sums dropped
//! ```
//!
//! A roll-up explodes every fill into a few `(group, minute)` records with a large abelian diff;
//! summing them here (one hash lookup each) lets the `count_total` behind it sort a handful of
//! records per message instead of thousands. Output is the same collection, fewer updates.

use std::hash::Hash;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::VecCollection;
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::progress::Timestamp;

/// Sums equal `(record, time)` updates within each message.
pub fn presum<'s, T, K, R>(c: VecCollection<'s, T, K, R>) -> VecCollection<'s, T, K, R>
where
    T: Timestamp + Hash,
    K: Clone + Eq + Hash + 'static,
    R: Semigroup + 'static,
{
    let mut sums: FxHashMap<(K, T), R> = FxHashMap::default();
    c.inner
        .unary::<CapacityContainerBuilder<Vec<(K, T, R)>>, _, _, _>(Pipeline, "PreSum", move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    for (k, t, r) in data.drain(..) {
                        match sums.entry((k, t)) {
                            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().plus_equals(&r),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(r);
                            }
                        }
                    }
                    let mut session = output.session(&cap);
                    for ((k, t), r) in sums.drain() {
                        if !r.is_zero() {
                            session.give((k, t, r));
                        }
                    }
                });
            }
        })
        .as_collection()
}
