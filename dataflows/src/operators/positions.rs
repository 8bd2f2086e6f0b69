//! The position operator: average-cost positions valued at their marks, exact under busts and late
//! fills, and re-marked without an arrangement.
//!
//! ```text
//!  fills (Arc<Fill>, ±1) ─exchange by key──────┐                          ┌──► PositionRow changes
//!                                              ├─► [ books by symbol, marks ] ├──► FillPnl changes
//!  marks (Symbol, Mark) ──broadcast───────────┘                          ├──► (Group, Δ Totals)
//!                                                                         └──► ((Group, minute), Δ FlowTotals)
//! ```
//!
//! Each worker holds the books of its keys (see [`super::book`]), grouped by symbol, and every
//! symbol's mark (marks are few and broadcast). At each completed time it applies the time's mark
//! changes and fill changes, then re-values the keys whose book changed and every key of a symbol
//! whose mark changed, emitting a retraction of the row it showed and the new row. The row shown
//! is not stored: it is a function of the book's state and the symbol's mark, so the retraction is
//! the row valued before the time's changes at the mark before them ([`Book::row`]; the book keeps
//! its average open price, so valuing a position divides nothing). A fill costs a hash lookup and an O(1) book append; a mark
//! change costs two rows per position in the symbol. No arrangement holds the positions, so the
//! work per fill does not grow with their number; what does is the memory it touches (a key's
//! table slot and its book's last entry, out of cache at a million positions), so a time's keys
//! are looked up in chunks first, letting the processor overlap those misses.
//!
//! The third and fourth outputs are each epoch's change of the account and strategy roll-ups and
//! of the per-minute fill flows, summed in the operator (one record per touched group and epoch),
//! so a re-mark of many positions, or a busy epoch of fills, costs the `count_total` behind them a
//! handful of updates rather than two per row.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use rustc_hash::{FxHashMap, FxHashSet};
use smol_str::SmolStr;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::broadcast::Broadcast;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use super::book::{Book, FillPnl};
use super::pending::Pending;
use crate::fees::CostSchedules;
use crate::marks::{Mark, MarkSource};
use crate::model::Ts;
use crate::model::{Fill, PositionKey, Symbol};
use crate::pnl::PositionRow;
use crate::rollups::{flow_of, minute_of, totals_of, Group};
use crate::sums::{FlowTotals, Totals};
use differential_dataflow::difference::{Abelian, IsZero, Semigroup};

/// A held input record: a fill change or a mark change.
enum In {
    Fill(Arc<Fill>),
    Mark(Symbol, Mark),
}

/// Keys looked up together before their changes are applied (see the operator's loop): enough
/// misses in flight to overlap, few enough pages that the chunk's stay in the TLB.
const WARM_CHUNK: usize = 64;

type Out<T, D> = OutputBuilder<T, CapacityContainerBuilder<Vec<(D, T, isize)>>>;

fn key_hash(key: &PositionKey) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    h.finish()
}

fn no_mark() -> Mark {
    Mark { price: None, source: MarkSource::None, ts: 0 }
}

/// Positions valued at their marks, and every fill with its fees and the realized P&L it produced.
/// Fees are computed once, when a fill enters its book, under `schedules`.
///
/// `fills` must hold inserts (+1) and, for busts, retractions (−1) of the same record; `marks` is
/// the marks collection (one row per symbol). A position whose symbol has no mark yet is shown with
/// no price. A key whose fills are all busted disappears.
#[allow(clippy::type_complexity)]
pub fn positions<'s, T>(
    fills: VecCollection<'s, T, Arc<Fill>, isize>,
    marks: VecCollection<'s, T, (Symbol, Mark), isize>,
    schedules: Arc<CostSchedules>,
) -> (
    VecCollection<'s, T, PositionRow, isize>,
    VecCollection<'s, T, FillPnl, isize>,
    VecCollection<'s, T, Group, Totals>,
    VecCollection<'s, T, (Group, Ts), FlowTotals>,
)
where
    T: Timestamp + TotalOrder,
{
    let mut builder = OperatorBuilder::new("Positions".to_owned(), fills.inner.scope());
    let mut fills_in =
        builder.new_input(fills.inner, Exchange::new(|(f, _t, _r): &(Arc<Fill>, T, isize)| key_hash(&f.key)));
    let mut marks_in = builder.new_input(marks.inner.broadcast(), Pipeline);
    let (row_out, row_stream) = builder.new_output();
    let (fill_out, fill_stream) = builder.new_output();
    let (sum_out, sum_stream) = builder.new_output();
    let (flow_out, flow_stream) = builder.new_output();
    let mut row_out: Out<T, PositionRow> = OutputBuilder::from(row_out);
    let mut fill_out: Out<T, FillPnl> = OutputBuilder::from(fill_out);
    let mut sum_out: OutputBuilder<T, CapacityContainerBuilder<Vec<(Group, T, Totals)>>> = OutputBuilder::from(sum_out);
    let mut flow_out: OutputBuilder<T, CapacityContainerBuilder<Vec<((Group, Ts), T, FlowTotals)>>> =
        OutputBuilder::from(flow_out);

    builder.build(move |_initial_caps| {
        let mut pending: Pending<T, In> = Pending::new(4);
        let mut flows: FxHashMap<(Group, Ts), FlowTotals> = FxHashMap::default();
        let mut sums: FxHashMap<Group, Totals> = FxHashMap::default();
        // Books by symbol, then by (account, strategy): a mark change visits one inner map.
        // The row a book shows is a function of its state and its symbol's mark, so it is not kept:
        // the retraction is recomputed from the state and mark before the time (half the memory
        // per position, and the rows of a million positions no longer crowd the cache).
        let mut books: FxHashMap<Symbol, FxHashMap<(SmolStr, SmolStr), Book>> = FxHashMap::default();
        let mut marks: FxHashMap<Symbol, Mark> = FxHashMap::default();
        let mut groups: FxHashMap<PositionKey, Vec<(Arc<Fill>, isize)>> = FxHashMap::default();
        // Symbols re-marked this time, with the mark their rows showed before it.
        let mut touched_symbols: FxHashMap<Symbol, Mark> = FxHashMap::default();
        // Keys of re-marked symbols already re-valued with their fills this time, by symbol (the
        // re-marking pass below asks with its table's own keys, without building one).
        let mut revalued: FxHashMap<Symbol, FxHashSet<(SmolStr, SmolStr)>> = FxHashMap::default();
        let mut batch: Vec<(PositionKey, Vec<(Arc<Fill>, isize)>)> = Vec::new();
        let mut key_flows: Vec<(Ts, FlowTotals)> = Vec::new();
        move |frontiers| {
            fills_in.for_each(|cap, data| pending.stash_with(cap, data, In::Fill));
            marks_in.for_each(|cap, data| pending.stash_with(cap, data, |(s, m)| In::Mark(s, m)));
            let mut row_session = row_out.activate();
            let mut fill_session = fill_out.activate();
            let mut sum_session = sum_out.activate();
            let mut flow_session = flow_out.activate();
            while let Some((time, mut changes)) = pending.next_complete(frontiers) {
                for (item, r) in changes.drain(..) {
                    match item {
                        In::Fill(f) => groups.entry(f.key.clone()).or_default().push((f, r)),
                        In::Mark(s, m) => {
                            // The marks collection retracts the old row and inserts the new one.
                            if r > 0 || marks.get(&s) == Some(&m) {
                                touched_symbols
                                    .entry(s)
                                    .or_insert_with(|| marks.get(&s).cloned().unwrap_or_else(no_mark));
                                if r > 0 {
                                    marks.insert(s, m);
                                } else {
                                    marks.remove(&s);
                                }
                            }
                        }
                    }
                }
                pending.recycle(changes);
                let (row_cap, fill_cap) = (pending.cap_for(&time, 0), pending.cap_for(&time, 1));
                let mut rows = row_session.session(&row_cap);
                let mut fils = fill_session.session(&fill_cap);

                {
                    // Emits the change from the row shown before the time to the row shown now,
                    // and adds it to the row's account and strategy (the difference worked out
                    // once, then added to each); false when the book shows none (it is empty).
                    let mut show = |old: Option<PositionRow>, new: Option<PositionRow>| -> bool {
                        if new == old {
                            return new.is_some();
                        }
                        let Some(row) = new.as_ref().or(old.as_ref()) else { return false };
                        let mut delta = new.as_ref().map(totals_of).unwrap_or_default();
                        if let Some(old) = &old {
                            let mut t = totals_of(old);
                            t.negate();
                            delta.plus_equals(&t);
                        }
                        sums.entry(Group::Account(row.key.account.clone())).or_default().plus_equals(&delta);
                        sums.entry(Group::Strategy(row.key.strategy.clone())).or_default().plus_equals(&delta);
                        if let Some(old) = old {
                            rows.give((old, time.clone(), -1));
                        }
                        let Some(new) = new else { return false };
                        rows.give((new, time.clone(), 1));
                        true
                    };
                    // Keys are visited in chunks, and each chunk's books are first looked up back to
                    // back without changing any: the lookups do not depend on each other, so the
                    // processor overlaps their cache (and TLB) misses, where one key at a time it
                    // waited on each in turn (at a million positions, a fill's three misses — the
                    // table's control bytes, its bucket, the book's last entry — were most of its
                    // cost); the chunk's pass then finds them cached.
                    batch.extend(groups.drain());
                    for chunk in batch.chunks_mut(WARM_CHUNK) {
                        let found: Vec<&Book> = chunk
                            .iter()
                            .filter_map(|(key, _)| {
                                books.get(&key.symbol)?.get(&(key.account.clone(), key.strategy.clone()))
                            })
                            .collect();
                        let warm = found.iter().filter_map(|b| b.last_ts()).fold(0, |w, ts| w ^ ts);
                        std::hint::black_box(warm);
                        drop(found);
                        for (key, group) in chunk.iter_mut() {
                            let mut group = std::mem::take(group);
                            // Inserts before retractions, so a fill inserted and busted in one epoch nets out.
                            group.sort_by_key(|(_, r)| std::cmp::Reverse(*r));
                            let by_key = books.entry(key.symbol).or_default();
                            let ident = (key.account.clone(), key.strategy.clone());
                            let book = by_key.entry(ident.clone()).or_default();
                            // Valued while its book is hot: before the time (at the mark before it)
                            // and after (at the mark now).
                            let mark = marks.get(&key.symbol).cloned().unwrap_or_else(no_mark);
                            let old = match touched_symbols.get(&key.symbol) {
                                Some(old_mark) => {
                                    revalued.entry(key.symbol).or_default().insert(ident.clone());
                                    book.row(key, old_mark)
                                }
                                None => book.row(key, &mark),
                            };
                            // This key's flow per minute first (a few minutes an epoch), then the groups.
                            book.apply(group, &schedules, &mut |d: FillPnl, r: isize| {
                                let mut t = flow_of(&d);
                                if r < 0 {
                                    t.negate();
                                }
                                let m = minute_of(d.fill.ts);
                                match key_flows.iter_mut().find(|(km, _)| *km == m) {
                                    Some((_, acc)) => acc.plus_equals(&t),
                                    None => key_flows.push((m, t)),
                                }
                                fils.give((d, time.clone(), r));
                            });
                            for (m, t) in key_flows.drain(..) {
                                flows.entry((Group::Account(key.account.clone()), m)).or_default().plus_equals(&t);
                                flows.entry((Group::Strategy(key.strategy.clone()), m)).or_default().plus_equals(&t);
                            }
                            if !show(old, book.row(key, &mark)) {
                                by_key.remove(&ident);
                            }
                        }
                    }
                    batch.clear();

                    for (symbol, old_mark) in touched_symbols.drain() {
                        let mark = marks.get(&symbol).cloned().unwrap_or_else(no_mark);
                        let done = revalued.get(&symbol);
                        if let Some(by_key) = books.get_mut(&symbol) {
                            by_key.retain(|ident, book| {
                                if done.is_some_and(|d| d.contains(ident)) {
                                    return true;
                                }
                                let (account, strategy) = ident;
                                let key = PositionKey { account: account.clone(), strategy: strategy.clone(), symbol };
                                show(book.row(&key, &old_mark), book.row(&key, &mark))
                            });
                        }
                    }
                    revalued.clear();
                }
                let sum_cap = pending.cap_for(&time, 2);
                let mut deltas = sum_session.session(&sum_cap);
                for (group, t) in sums.drain() {
                    if !t.is_zero() {
                        deltas.give((group, time.clone(), t));
                    }
                }
                let flow_cap = pending.cap_for(&time, 3);
                let mut flow_deltas = flow_session.session(&flow_cap);
                for (key, t) in flows.drain() {
                    if !t.is_zero() {
                        flow_deltas.give((key, time.clone(), t));
                    }
                }
            }
            pending.downgrade();
        }
    });
    (row_stream.as_collection(), fill_stream.as_collection(), sum_stream.as_collection(), flow_stream.as_collection())
}
