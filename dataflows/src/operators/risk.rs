//! The risk operator: runs a [`RiskBook`] over position, mark and instrument changes.
//!
//! ```text
//!  position rows (±1) ──┐
//!  marks (±1) ──────────┤                      ┌──► RiskRow changes (per account, strategy, desk)
//!  instruments (±1) ────┼─exchange to worker 0─► [ RiskBook ] ─┤
//!  limits (+1) ─────────┤                      ├──► AlertRow inserts
//!                       │                      └──► VolRow changes (per symbol, on its marks)
//!  seeds (+1) ──────────┘
//! ```
//!
//! Desk-wide metrics need every position, so one worker holds the book (the others pass their
//! records to it). At each completed time it applies the time's seeds (path state carried over a
//! restart), then the newest limits, then the changes, in one [`RiskBook::apply_parts`] (whose
//! parts, one per shard of the book, it hands on as they are); the cost is
//! proportional to the (group, symbol) pairs the time touched (see [`crate::risk::book`]).

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use super::pending::Pending;
use crate::marks::Mark;
use crate::model::{Instrument, Symbol};
use crate::pnl::PositionRow;
use crate::risk::book::{AlertRow, Limits, RiskBook, RiskConfig, RiskInput, RiskRow, RiskSeed, VolRow};

enum In {
    Position(PositionRow),
    Mark(Symbol, Mark),
    Instrument(Instrument),
    Limits(Limits),
    Seed(RiskSeed),
}

type Out<T, D> = OutputBuilder<T, CapacityContainerBuilder<Vec<(D, T, isize)>>>;

/// Risk rows and alerts from positions, marks and instruments. `limits` replaces the book's limits
/// from its time on (the latest of a time wins); `seeds` restore path state after a restart.
#[allow(clippy::type_complexity)]
pub fn risk<'s, T>(
    positions: VecCollection<'s, T, PositionRow, isize>,
    marks: VecCollection<'s, T, (Symbol, Mark), isize>,
    instruments: VecCollection<'s, T, Instrument, isize>,
    limits: VecCollection<'s, T, Limits, isize>,
    seeds: VecCollection<'s, T, RiskSeed, isize>,
    config: RiskConfig,
) -> (VecCollection<'s, T, RiskRow, isize>, VecCollection<'s, T, AlertRow, isize>, VecCollection<'s, T, VolRow, isize>)
where
    T: Timestamp + TotalOrder,
{
    let mut builder = OperatorBuilder::new("Risk".to_owned(), positions.inner.scope());
    let mut pos_in = builder.new_input(positions.inner, Exchange::new(|_: &(PositionRow, T, isize)| 0));
    let mut mark_in = builder.new_input(marks.inner, Exchange::new(|_: &((Symbol, Mark), T, isize)| 0));
    let mut inst_in = builder.new_input(instruments.inner, Exchange::new(|_: &(Instrument, T, isize)| 0));
    let mut limit_in = builder.new_input(limits.inner, Exchange::new(|_: &(Limits, T, isize)| 0));
    let mut seed_in = builder.new_input(seeds.inner, Exchange::new(|_: &(RiskSeed, T, isize)| 0));
    let (row_out, row_stream) = builder.new_output();
    let (alert_out, alert_stream) = builder.new_output();
    let (vol_out, vol_stream) = builder.new_output();
    let mut row_out: Out<T, RiskRow> = OutputBuilder::from(row_out);
    let mut alert_out: Out<T, AlertRow> = OutputBuilder::from(alert_out);
    let mut vol_out: Out<T, VolRow> = OutputBuilder::from(vol_out);

    builder.build(move |_caps| {
        let mut pending: Pending<T, In> = Pending::new(3);
        let mut book = RiskBook::new(config);
        move |frontiers| {
            pos_in.for_each(|cap, data| pending.stash_with(cap, data, In::Position));
            mark_in.for_each(|cap, data| pending.stash_with(cap, data, |(s, m)| In::Mark(s, m)));
            inst_in.for_each(|cap, data| pending.stash_with(cap, data, In::Instrument));
            limit_in.for_each(|cap, data| pending.stash_with(cap, data, In::Limits));
            seed_in.for_each(|cap, data| pending.stash_with(cap, data, In::Seed));
            let mut rows = row_out.activate();
            let mut alerts = alert_out.activate();
            let mut vols = vol_out.activate();
            while let Some((time, mut changes)) = pending.next_complete(frontiers) {
                let mut input = RiskInput::default();
                // (After a mark in a widely held symbol, most of a time's changes are position rows.)
                input.positions.reserve(changes.len());
                for (item, r) in changes.drain(..) {
                    match item {
                        In::Position(p) => input.positions.push((p, r)),
                        // Marks and instruments retract their previous record: only the new one counts.
                        In::Mark(s, m) if r > 0 => input.marks.push((s, m.price, m.ts)),
                        In::Instrument(i) if r > 0 => input.instruments.push(i),
                        In::Limits(l) if r > 0 => book.set_limits(l),
                        In::Seed(s) if r > 0 => input.seeds.push(s),
                        _ => {}
                    }
                }
                pending.recycle(changes);
                // One part per shard of the book (rows are not gathered into one list first).
                for out in book.apply_parts(input) {
                    let row_cap = pending.cap_for(&time, 0);
                    let mut session = rows.session(&row_cap);
                    for r in out.retract {
                        session.give((r, time.clone(), -1));
                    }
                    for r in out.insert {
                        session.give((r, time.clone(), 1));
                    }
                    drop(session);
                    if !out.vols.is_empty() {
                        let vol_cap = pending.cap_for(&time, 2);
                        let mut session = vols.session(&vol_cap);
                        for (v, r) in out.vols {
                            session.give((v, time.clone(), r));
                        }
                    }
                    if !out.alerts.is_empty() {
                        let alert_cap = pending.cap_for(&time, 1);
                        let mut session = alerts.session(&alert_cap);
                        for a in out.alerts {
                            session.give((a, time.clone(), 1));
                        }
                    }
                }
            }
            pending.downgrade();
        }
    });
    (row_stream.as_collection(), alert_stream.as_collection(), vol_stream.as_collection())
}
