//! Property: for random fill/bust/quote streams, arriving in random order and random epochs, the
//! incremental outputs equal a from-scratch batch recomputation.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::input::Input;
use harbour_dataflows::fees::CostSchedules;
use harbour_dataflows::graph::{harbour, GraphConfig, Inputs};
use harbour_dataflows::marks::MarkPolicy;
use harbour_dataflows::model::{Cleared, Close, Fill, MarketEvent, PositionKey, Quote, Side, Symbol};
use harbour_dataflows::reference::{recompute, Reference};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// One arrival: a fill, a bust of the n-th fill generated so far, or a market event.
#[derive(Clone, Debug)]
enum Ev {
    Fill(Fill),
    Bust(usize),
    Market(MarketEvent),
}

const T0: i64 = 1_767_312_000_000_000_000; // 2026-01-02T00:00:00Z

fn arb_fill(i: usize) -> impl Strategy<Value = Fill> {
    (0..2usize, 0..2usize, 0..3u32, any::<bool>(), 1..6i64, 3800..3900i64, 0..600i64, proptest::option::of(0..50i64))
        .prop_map(move |(a, s, sym, buy, lots, px, t, comm)| Fill {
            ts: T0 + t * 1_000_000_000,
            exec_id: format!("E{i}").into(),
            order_id: format!("O{i}").into(),
            key: PositionKey {
                account: ["ACC1", "ACC2"][a].into(),
                strategy: ["alpha", "beta"][s].into(),
                symbol: Symbol([700, 5, 2800][sym as usize]),
            },
            side: if buy { Side::Buy } else { Side::Sell },
            qty: lots * 100,
            price: Decimal::new(px * 2, 1), // 760.0 .. 780.0 in 0.2 steps
            commission: comm.map(|c| Decimal::new(c, 1)),
            stamp_duty_exempt: sym == 2,
            odd_lot: false,
            source_seq: i as u64,
        })
}

fn arb_market() -> impl Strategy<Value = MarketEvent> {
    (0..3u32, 0..600i64, 3800..3900i64, 0..6u8).prop_map(|(sym, t, px, kind)| {
        let symbol = Symbol([700, 5, 2800][sym as usize]);
        let ts = T0 + t * 1_000_000_000;
        let p = Decimal::new(px * 2, 1);
        let none = Cleared::default();
        let quote = |bid, ask, last, cleared| MarketEvent::Quote(Quote { symbol, ts, bid, ask, last, cleared, seq: 0 });
        match kind {
            0 => quote(None, None, Some(p), none),
            1 => quote(Some(p), Some(p + Decimal::new(4, 1)), None, none),
            2 => MarketEvent::Close(Close { symbol, ts, price: p, seq: 0 }),
            // The only trade cancelled; the bid side emptied while the ask moved.
            3 => quote(None, None, None, Cleared { last: true, ..none }),
            4 => quote(None, Some(p), None, Cleared { bid: true, ..none }),
            _ => MarketEvent::Listed(symbol),
        }
    })
}

fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
    proptest::collection::vec((0..10u8, any::<prop::sample::Index>(), arb_market()), 1..120)
        .prop_flat_map(|kinds| {
            let fills: Vec<_> = (0..kinds.len()).map(arb_fill).collect();
            (Just(kinds), fills)
        })
        .prop_map(|(kinds, fills)| {
            let mut out = Vec::new();
            let mut made = 0usize;
            for ((k, idx, m), f) in kinds.into_iter().zip(fills) {
                match k {
                    0..=5 => {
                        out.push(Ev::Fill(f));
                        made += 1;
                    }
                    6 if made > 0 => out.push(Ev::Bust(idx.index(made))),
                    _ => out.push(Ev::Market(m)),
                }
            }
            out
        })
}

type Captured<D> = Rc<RefCell<Vec<(D, isize)>>>;

fn capture<D: Clone + Ord + 'static>(c: differential_dataflow::VecCollection<'_, u64, D, isize>) -> Captured<D> {
    let store: Captured<D> = Rc::new(RefCell::new(Vec::new()));
    let s = store.clone();
    c.inspect(move |(d, _t, r)| s.borrow_mut().push((d.clone(), *r)));
    store
}

fn settle<D: Ord + Clone>(mut v: Vec<(D, isize)>) -> Vec<D> {
    consolidate(&mut v);
    assert!(v.iter().all(|(_, r)| *r == 1), "every output row has multiplicity one");
    v.into_iter().map(|(d, _)| d).collect()
}

type Parts = (
    Vec<(harbour_dataflows::pnl::PositionRow, isize)>,
    Vec<(harbour_dataflows::operators::FillPnl, isize)>,
    Vec<((harbour_dataflows::rollups::Group, harbour_dataflows::sums::Totals), isize)>,
    Vec<(((harbour_dataflows::rollups::Group, i64), harbour_dataflows::sums::FlowTotals), isize)>,
    Vec<((Symbol, harbour_dataflows::marks::Mark), isize)>,
);

/// Runs the events through the dataflow, advancing the epoch at the given cut points.
fn run_incremental(events: &[Ev], cuts: &[usize]) -> Reference {
    run_on_workers(events, cuts, 1)
}

/// As [`run_incremental`] on `workers` timely workers: worker 0 reads the input, the positions
/// and marks operators exchange and broadcast across all of them.
fn run_on_workers(events: &[Ev], cuts: &[usize], workers: usize) -> Reference {
    let events = events.to_vec();
    let cuts = cuts.to_vec();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let config = GraphConfig {
            schedules: Arc::new(CostSchedules::default()),
            marks: MarkPolicy::default(),
            ..GraphConfig::default()
        };
        let reader = worker.index() == 0;
        let (mut fills_in, mut market_in, probe, caps) = worker.dataflow::<u64, _, _>(|scope| {
            let (fills_in, fills) = scope.new_collection::<std::sync::Arc<Fill>, isize>();
            let (market_in, market) = scope.new_collection::<MarketEvent, isize>();
            let (_o, orders) = scope.new_collection();
            let (_i, instruments) = scope.new_collection();
            let (_l, limits) = scope.new_collection();
            let (_s, seeds) = scope.new_collection();
            let (_t, status) = scope.new_collection();
            let out = harbour(Inputs { fills, market, orders, instruments, status, limits, seeds }, &config);
            // Probe every output: a worker's results are read once all of them are complete.
            let (probe, positions) = out.positions.probe();
            let fills = out.fills.probe_with(&probe);
            let rollups = out.rollups.probe_with(&probe);
            let minutes = out.minutes.probe_with(&probe);
            let marks = out.marks.probe_with(&probe);
            let caps = (capture(positions), capture(fills), capture(rollups), capture(minutes), capture(marks));
            (fills_in, market_in, probe, caps)
        });
        // Every symbol is listed first, as reference data would do.
        if reader {
            for s in [700, 5, 2800] {
                market_in.insert(MarketEvent::Listed(Symbol(s)));
            }
        }
        let mut made: Vec<Option<Fill>> = Vec::new();
        let mut epoch = 1u64;
        for (i, ev) in events.iter().enumerate() {
            if cuts.contains(&i) {
                fills_in.advance_to(epoch);
                market_in.advance_to(epoch);
                fills_in.flush();
                market_in.flush();
                epoch += 1;
                worker.step_while(|| probe.less_than(fills_in.time()));
            }
            match ev {
                Ev::Fill(f) => {
                    if reader {
                        fills_in.insert(std::sync::Arc::new(f.clone()));
                    }
                    made.push(Some(f.clone()));
                }
                Ev::Bust(n) => {
                    if let Some(f) = made[*n].take() {
                        if reader {
                            fills_in.remove(std::sync::Arc::new(f));
                        }
                    }
                }
                Ev::Market(m) => {
                    if reader {
                        market_in.insert(m.clone())
                    }
                }
            }
        }
        fills_in.advance_to(epoch);
        market_in.advance_to(epoch);
        fills_in.flush();
        market_in.flush();
        worker.step_while(|| probe.less_than(fills_in.time()));
        let parts: Parts = (
            caps.0.borrow().clone(),
            caps.1.borrow().clone(),
            caps.2.borrow().clone(),
            caps.3.borrow().clone(),
            caps.4.borrow().clone(),
        );
        parts
    })
    .expect("timely runs");
    let mut all: Parts = Default::default();
    for part in guards.join() {
        let p = part.expect("worker finished");
        all.0.extend(p.0);
        all.1.extend(p.1);
        all.2.extend(p.2);
        all.3.extend(p.3);
        all.4.extend(p.4);
    }
    Reference {
        positions: settle(all.0),
        fills: settle(all.1),
        rollups: settle(all.2),
        minutes: settle(all.3),
        marks: settle(all.4),
    }
}

fn batch(events: &[Ev]) -> Reference {
    let mut fills: Vec<Option<Fill>> = Vec::new();
    let mut market: Vec<MarketEvent> = [700, 5, 2800].iter().map(|s| MarketEvent::Listed(Symbol(*s))).collect();
    for ev in events {
        match ev {
            Ev::Fill(f) => fills.push(Some(f.clone())),
            Ev::Bust(n) => fills[*n] = None,
            Ev::Market(m) => market.push(m.clone()),
        }
    }
    let live: Vec<Fill> = fills.into_iter().flatten().collect();
    recompute(&live, &market, &CostSchedules::default(), &MarkPolicy::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn incremental_equals_batch(events in arb_events(), cut_seed in proptest::collection::vec(0..200usize, 0..12)) {
        let cuts: Vec<usize> = cut_seed.into_iter().filter(|c| *c < events.len()).collect();
        let inc = run_incremental(&events, &cuts);
        let reference = batch(&events);
        prop_assert_eq!(&inc.fills, &reference.fills);
        prop_assert_eq!(&inc.positions, &reference.positions);
        prop_assert_eq!(&inc.marks, &reference.marks);
        prop_assert_eq!(&inc.rollups, &reference.rollups);
        prop_assert_eq!(&inc.minutes, &reference.minutes);
    }

    /// The same on three workers: positions exchanged by key, marks broadcast.
    #[test]
    fn three_workers_equal_batch(events in arb_events(), cut_seed in proptest::collection::vec(0..200usize, 0..12)) {
        let cuts: Vec<usize> = cut_seed.into_iter().filter(|c| *c < events.len()).collect();
        prop_assert_eq!(run_on_workers(&events, &cuts, 3), batch(&events));
    }
}

/// A fill far earlier than the ones already applied (a late fill) and a bust in the middle of a
/// long book both give the recomputed result.
#[test]
fn late_fill_and_bust_deep_in_a_long_book() {
    let mut events: Vec<Ev> = (0..300).map(|i| Ev::Fill(long_book_fill(i))).collect();
    events.push(Ev::Market(MarketEvent::Quote(Quote {
        symbol: Symbol(700),
        ts: T0,
        bid: None,
        ask: None,
        last: Some(Decimal::new(770, 0)),
        cleared: Default::default(),
        seq: 0,
    })));
    let mut late = match &events[0] {
        Ev::Fill(f) => f.clone(),
        _ => unreachable!(),
    };
    late.exec_id = "LATE".into();
    late.ts = T0;
    late.side = Side::Sell;
    late.qty = 700;
    events.push(Ev::Fill(late));
    events.push(Ev::Bust(150));
    let cuts: Vec<usize> = (0..events.len()).step_by(37).collect();
    let inc = run_incremental(&events, &cuts);
    assert_eq!(inc, batch(&events));
    assert_eq!(inc.fills.len(), 300);
}

fn long_book_fill(i: usize) -> Fill {
    Fill {
        ts: T0 + (i as i64 + 10) * 1_000_000_000,
        exec_id: format!("E{i:04}").into(),
        order_id: "O".into(),
        key: PositionKey { account: "A".into(), strategy: "S".into(), symbol: Symbol(700) },
        side: if i % 3 == 2 { Side::Sell } else { Side::Buy },
        qty: 100 * (1 + (i as i64 % 4)),
        price: Decimal::new(7600 + 2 * (i as i64 % 50), 1),
        commission: None,
        stamp_duty_exempt: false,
        odd_lot: false,
        source_seq: i as u64,
    }
}

/// Regression: busting the fill at a snapshot boundary (the 129th, index 128) and then appending
/// past the next boundary keeps the fold's snapshots in place.
#[test]
fn bust_at_a_snapshot_boundary_then_append() {
    let mut events: Vec<Ev> = (0..129).map(|i| Ev::Fill(long_book_fill(i))).collect();
    events.push(Ev::Bust(128));
    events.extend((129..260).map(|i| Ev::Fill(long_book_fill(i))));
    // restarts the fold from the snapshot before entry 192, which the appends above laid down
    events.push(Ev::Bust(200));
    events.extend((260..300).map(|i| Ev::Fill(long_book_fill(i))));
    // epochs: the first 129 fills, the bust, then appends in small epochs
    let cuts: Vec<usize> = [129, 130].into_iter().chain((140..events.len()).step_by(9)).collect();
    let inc = run_incremental(&events, &cuts);
    assert_eq!(inc, batch(&events));
    assert_eq!(inc.fills.len(), 298);
}
