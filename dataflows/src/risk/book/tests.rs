use super::*;
use crate::marks::MarkSource;
use crate::model::PositionKey;
use crate::risk::var::{historical, parametric};
use crate::risk::vol::{ewma_covariance, LAMBDA};
use proptest::prelude::*;
use rust_decimal_macros::dec;

fn pos(account: &str, strategy: &str, symbol: u32, qty: i64, mark: Decimal, total: Decimal, ts: Ts) -> PositionRow {
    PositionRow {
        key: PositionKey { account: account.into(), strategy: strategy.into(), symbol: Symbol(symbol) },
        qty,
        avg_price: None,
        cost: Decimal::ZERO,
        realized: Decimal::ZERO,
        fees: Decimal::ZERO,
        unrealized: total,
        market_value: Decimal::from(qty) * mark,
        total,
        mark: Some(mark),
        mark_source: MarkSource::Last,
        fills: 1,
        bought: qty.max(0),
        sold: (-qty).max(0),
        last_fill_ts: ts,
    }
}

fn instrument(symbol: u32, lot: i64, sector: &str) -> Instrument {
    Instrument {
        symbol: Symbol(symbol),
        name: format!("S{symbol}"),
        lot_size: lot,
        currency: "HKD".into(),
        sector: Some(sector.into()),
        stamp_duty: true,
        spread_table: None,
    }
}

/// Three symbols over four past days: 700 (IT), 5 and 388 (Financials).
fn history() -> History {
    let closes =
        [(700, [380.0, 385.0, 379.0, 390.0]), (5, [68.0, 67.5, 68.2, 68.0]), (388, [300.0, 303.0, 298.0, 301.0])];
    History::from_closes(closes.iter().flat_map(|(s, cs)| cs.iter().enumerate().map(move |(d, c)| (d, Symbol(*s), *c))))
}

fn book(limits: Limits) -> RiskBook {
    RiskBook::new(RiskConfig {
        history: Arc::new(history()),
        nav: [(SmolStr::new("A"), dec!(2000000))].into_iter().collect(),
        desk_nav: Some(dec!(5000000)),
        limits,
        contributor_scopes: vec!["desk", "strategy", "account"],
        contributors: 10,
        ..RiskConfig::default()
    })
}

fn f(x: Decimal) -> f64 {
    x.to_f64().unwrap()
}

fn close_to(got: Decimal, want: f64) {
    assert!((f(got) - want).abs() <= 0.006, "{got} vs {want}");
}

#[test]
fn three_positions_by_hand() {
    let mut b = book(Limits::default());
    let out = b.apply(RiskInput {
        instruments: vec![
            instrument(700, 100, "IT"),
            instrument(5, 400, "Financials"),
            instrument(388, 100, "Financials"),
        ],
        positions: vec![
            (pos("A", "s1", 700, 1000, dec!(400), dec!(12000), 10), 1),
            (pos("A", "s1", 5, -4000, dec!(68.15), dec!(-600), 11), 1),
            (pos("A", "s2", 388, 500, dec!(301), dec!(-150.5), 12), 1),
        ],
        marks: vec![
            (Symbol(700), Some(dec!(400)), 20),
            (Symbol(5), Some(dec!(68.15)), 21),
            (Symbol(388), Some(dec!(301)), 5),
        ],
        seeds: vec![],
    });
    assert!(out.retract.is_empty() && out.alerts.is_empty());
    let a = b.row(&Group::Account("A".into())).unwrap().clone();
    // MV: 400,000; −272,600; 150,500.
    assert_eq!((a.long_mv, a.short_mv, a.gross, a.net), (dec!(550500), dec!(-272600), dec!(823100), dec!(277900)));
    assert_eq!(a.leverage, Some(dec!(0.41155))); // 823,100 / 2,000,000
    assert_eq!(a.largest, Some((Symbol(700), dec!(0.485968)))); // 400,000 / 823,100
                                                                // HHI: (400000² + 272600² + 150500²) / 823100².
    assert_eq!(a.hhi, dec!(0.379282));
    assert_eq!(a.sectors.to_vec(), [(Some("Financials".into()), dec!(0.514032)), (Some("IT".into()), dec!(0.485968))]);
    assert_eq!(a.max_lots, Some((Symbol(5), dec!(10)))); // 1,000/100 and 4,000/400: a tie, to the smaller code
    assert_eq!(a.names, 3);
    assert_eq!(a.total_pnl, dec!(11249.5));
    assert_eq!(a.ts, 21);
    // Parametric VaR: the EWMA covariance of the three past returns plus today's (close → mark).
    let h = history();
    let syms = [700u32, 5, 388];
    let w = [400000.0, -272600.0, 150500.0];
    let marks = [400.0, 68.15, 301.0];
    let mut rows: Vec<Vec<f64>> =
        (0..3).map(|k| syms.iter().map(|s| h.returns(Symbol(*s)).unwrap()[k]).collect()).collect();
    rows.push(syms.iter().zip(marks).map(|(s, m)| m / h.prev_close(Symbol(*s)).unwrap() - 1.0).collect());
    let cov = ewma_covariance(&rows, LAMBDA);
    let p99 = parametric(&w, &cov, 0.99, 1.0);
    close_to(a.var_99, p99.var);
    close_to(a.var_95, parametric(&w, &cov, 0.95, 1.0).var);
    close_to(a.var_99_horizon, parametric(&w, &cov, 0.99, 10.0).var);
    // Components: sum to the VaR, each as the formula gives.
    let sum: Decimal = a.contributors.iter().map(|c| c.1).sum();
    close_to(sum, p99.var);
    for (s, c) in &a.contributors {
        let i = syms.iter().position(|x| Symbol(*x) == *s).unwrap();
        close_to(*c, p99.components[i]);
    }
    // Historical over the three past days.
    let hist = historical(&w, &rows[..3], 0.99).unwrap();
    close_to(a.hist_var_99, hist.var);
    close_to(a.es_99, hist.expected_shortfall);
    let hist95 = historical(&w, &rows[..3], 0.95).unwrap();
    close_to(a.hist_var_95, hist95.var);
    // Strategy s2 holds 388 alone: HHI 1, weight 1.
    let s2 = b.row(&Group::Strategy("s2".into())).unwrap();
    assert_eq!((s2.hhi, s2.largest), (Decimal::ONE, Some((Symbol(388), Decimal::ONE))));
    assert_eq!(b.row(&Group::Desk).unwrap().gross, dec!(823100));
}

#[test]
fn max_lots_ties_go_to_the_smaller_code() {
    let mut b = book(Limits::default());
    b.apply(RiskInput {
        instruments: vec![instrument(700, 100, "IT"), instrument(5, 400, "Financials")],
        positions: vec![
            (pos("A", "s1", 700, 1000, dec!(400), dec!(0), 1), 1),
            (pos("A", "s1", 5, -4000, dec!(68), dec!(0), 1), 1),
        ],
        ..Default::default()
    });
    assert_eq!(b.row(&Group::Desk).unwrap().max_lots, Some((Symbol(5), dec!(10))));
}

fn limit(soft: Decimal, hard: Decimal) -> Limit {
    Limit { soft, hard, hysteresis: dec!(0.05) }
}

/// One position in 700 re-marked along `prices`: each step retracts the previous row.
fn remarks(prices: &[Decimal]) -> Vec<RiskInput> {
    let mut prev: Option<PositionRow> = None;
    prices
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let row = pos("A", "s1", 700, 1000, *p, (*p - dec!(390)) * dec!(1000), i as Ts);
            let mut positions = vec![(row.clone(), 1)];
            if let Some(old) = prev.replace(row) {
                positions.push((old, -1));
            }
            RiskInput {
                positions,
                marks: vec![(Symbol(700), Some(*p), i as Ts)],
                instruments: if i == 0 { vec![instrument(700, 100, "IT")] } else { vec![] },
                seeds: vec![],
            }
        })
        .collect()
}

fn limits() -> Limits {
    Limits {
        account_default: [
            (Metric::Gross, limit(dec!(400000), dec!(420000))),
            (Metric::Drawdown, limit(dec!(20000), dec!(50000))),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

#[test]
fn a_breach_alerts_once_when_it_starts_and_once_when_it_clears() {
    let prices = [dec!(390), dec!(401), dec!(405), dec!(399), dec!(381), dec!(379), dec!(430), dec!(420), dec!(375)];
    let mut b = book(limits());
    let alerts: Vec<AlertRow> = remarks(&prices).into_iter().flat_map(|i| b.apply(i).alerts).collect();
    let seen: Vec<(Metric, Severity, u32, AlertKind, Decimal)> =
        alerts.iter().map(|a| (a.metric, a.severity, a.seq, a.kind, a.value)).collect();
    use AlertKind::*;
    assert_eq!(
        seen,
        vec![
            (Metric::Gross, Severity::Soft, 1, Breach, dec!(401000)),
            // Peak 15,000 at 405; at 381 the drawdown is 24,000.
            (Metric::Drawdown, Severity::Soft, 1, Breach, dec!(24000)),
            // 381,000 is not below 400,000 less 5%: still breached. 379,000 is.
            (Metric::Gross, Severity::Soft, 1, Clear, dec!(379000)),
            (Metric::Gross, Severity::Soft, 2, Breach, dec!(430000)),
            (Metric::Gross, Severity::Hard, 1, Breach, dec!(430000)),
            // A new peak at 430: no drawdown.
            (Metric::Drawdown, Severity::Soft, 1, Clear, dec!(0)),
            (Metric::Gross, Severity::Hard, 1, Clear, dec!(375000)),
            (Metric::Gross, Severity::Soft, 2, Clear, dec!(375000)),
            // From the peak of 40,000 to −15,000: 55,000, past both levels.
            (Metric::Drawdown, Severity::Soft, 2, Breach, dec!(55000)),
            (Metric::Drawdown, Severity::Hard, 1, Breach, dec!(55000)),
        ]
    );
    assert_eq!(alerts[2].ts, 5);
    assert_eq!(alerts[0].level, dec!(400000));
    assert_eq!(alerts[0].drivers, vec![(Symbol(700), dec!(401000))]);
    let a = b.row(&Group::Account("A".into())).unwrap();
    assert_eq!((a.peak_pnl, a.drawdown, a.max_drawdown), (dec!(40000), dec!(55000), dec!(55000)));
}

/// A restart from the rows and alerts output so far continues with the same alerts and rows.
#[test]
fn alerts_are_not_repeated_after_a_restart_from_seeds() {
    let prices = [dec!(390), dec!(401), dec!(430), dec!(405), dec!(372), dec!(379), dec!(430), dec!(420), dec!(375)];
    let inputs = remarks(&prices);
    let mut whole = book(limits());
    let all: Vec<AlertRow> = inputs.iter().cloned().flat_map(|i| whole.apply(i).alerts).collect();
    assert!(all.len() >= 6, "{all:?}");
    for cut in 1..inputs.len() {
        let mut first = book(limits());
        let mut alerts: Vec<AlertRow> = Vec::new();
        for i in &inputs[..cut] {
            alerts.extend(first.apply(i.clone()).alerts);
        }
        let rows: Vec<RiskRow> = [Group::Desk, Group::Account("A".into()), Group::Strategy("s1".into())]
            .iter()
            .filter_map(|g| first.row(g).cloned())
            .collect();
        // Restore: the seeds and the current positions in one time, then the rest.
        let mut second = book(limits());
        let last = inputs[cut - 1].positions.iter().find(|p| p.1 > 0).unwrap().0.clone();
        let mark = last.mark;
        alerts.extend(
            second
                .apply(RiskInput {
                    positions: vec![(last, 1)],
                    marks: vec![(Symbol(700), mark, (cut - 1) as Ts)],
                    instruments: vec![instrument(700, 100, "IT")],
                    seeds: seeds_of(&rows, &alerts),
                })
                .alerts,
        );
        for i in &inputs[cut..] {
            alerts.extend(second.apply(i.clone()).alerts);
        }
        assert_eq!(alerts, all, "restart after time {cut}");
        assert_eq!(second.row(&Group::Account("A".into())), whole.row(&Group::Account("A".into())));
    }
}

/// A limit removed while Harbour was down: the breach in force clears on the restart, at the
/// level the limit had (not 0).
#[test]
fn a_limit_removed_while_down_clears_at_the_level_it_had() {
    let prices = [dec!(390), dec!(401), dec!(430)];
    let inputs = remarks(&prices);
    let mut first = book(limits());
    let alerts: Vec<AlertRow> = inputs.iter().cloned().flat_map(|i| first.apply(i).alerts).collect();
    let open: Vec<&AlertRow> = alerts.iter().filter(|a| a.kind == AlertKind::Breach).collect();
    assert!(!open.is_empty(), "{alerts:?}");
    let rows: Vec<RiskRow> = [Group::Desk, Group::Account("A".into()), Group::Strategy("s1".into())]
        .iter()
        .filter_map(|g| first.row(g).cloned())
        .collect();
    let mut second = book(Limits::default());
    let last = inputs.last().unwrap().positions.iter().find(|p| p.1 > 0).unwrap().0.clone();
    let mark = last.mark;
    let cleared = second
        .apply(RiskInput {
            positions: vec![(last, 1)],
            marks: vec![(Symbol(700), mark, prices.len() as Ts)],
            instruments: vec![instrument(700, 100, "IT")],
            seeds: seeds_of(&rows, &alerts),
        })
        .alerts;
    let same =
        |a: &AlertRow, b: &AlertRow| (&a.group, a.metric, a.severity, a.seq) == (&b.group, b.metric, b.severity, b.seq);
    let in_force: Vec<&&AlertRow> =
        open.iter().filter(|b| !alerts.iter().any(|a| a.kind == AlertKind::Clear && same(a, b))).collect();
    assert!(!in_force.is_empty(), "a breach in force at the restart: {alerts:?}");
    for b in in_force {
        let c = cleared
            .iter()
            .find(|c| c.kind == AlertKind::Clear && same(c, b))
            .unwrap_or_else(|| panic!("{b:?} cleared: {cleared:?}"));
        assert_eq!(c.level, b.level, "{c:?}");
        assert!(!c.level.is_zero());
    }
}

/// One position change: (account, strategy, symbol, lots, price in 0.1, total).
type Step = (u8, u8, u8, i64, i64, i64);

/// A random stream of times of position changes.
fn arb_steps() -> impl Strategy<Value = Vec<Vec<Step>>> {
    prop::collection::vec(
        prop::collection::vec((0u8..3, 0u8..2, 0u8..4, -30i64..30, 50i64..150, -5000i64..5000), 1..5),
        1..25,
    )
}

/// Keeps every row of a symbol at its latest mark, as the positions operator does: the rows whose
/// mark moved are retracted and re-inserted at time `t`.
fn remark(
    current: &mut BTreeMap<PositionKey, PositionRow>,
    marks: &BTreeMap<Symbol, Decimal>,
    t: Ts,
    input: &mut RiskInput,
) {
    for (k, r) in current.iter_mut() {
        let m = marks[&k.symbol];
        if r.mark != Some(m) {
            let new =
                PositionRow { mark: Some(m), market_value: Decimal::from(r.qty) * m, last_fill_ts: t, ..r.clone() };
            input.positions.push((std::mem::replace(r, new.clone()), -1));
            input.positions.push((new, 1));
        }
    }
}

/// The changes in a fixed order (a book with several shards gives them shard after shard).
fn sorted(mut c: RiskChanges) -> RiskChanges {
    c.retract.sort();
    c.insert.sort();
    c.alerts.sort();
    c.vols.sort();
    c
}

/// The desk and every account and strategy holding a position.
fn groups_of(current: &BTreeMap<PositionKey, PositionRow>) -> BTreeSet<Group> {
    current
        .keys()
        .flat_map(|k| [Group::Desk, Group::Account(k.account.clone()), Group::Strategy(k.strategy.clone())])
        .collect()
}

proptest! {
    /// Feeding changes time by time gives the rows a fresh book computes from the final positions
    /// in one time (drawdown aside: it follows the path).
    #[test]
    fn incremental_equals_recomputation(steps in arb_steps()) {
        let syms = [700u32, 5, 388, 2800];
        let setup = |b: &mut RiskBook| {
            b.apply(RiskInput {
                instruments: vec![instrument(700, 100, "IT"), instrument(5, 400, "Financials"), instrument(388, 100, "Financials"), instrument(2800, 500, "ETF")],
                ..Default::default()
            });
        };
        let mut inc = book(Limits::default());
        setup(&mut inc);
        let mut current: BTreeMap<PositionKey, PositionRow> = BTreeMap::new();
        let mut marks: BTreeMap<Symbol, Decimal> = BTreeMap::new();
        for (t, step) in steps.iter().enumerate() {
            let mut input = RiskInput::default();
            for (a, s, sym, qty, price, total) in step {
                let row = pos(&format!("A{a}"), &format!("S{s}"), syms[*sym as usize], qty * 100, Decimal::new(*price, 1), Decimal::from(*total), t as Ts);
                if let Some(old) = current.insert(row.key.clone(), row.clone()) {
                    input.positions.push((old, -1));
                }
                input.positions.push((row, 1));
                marks.insert(Symbol(syms[*sym as usize]), Decimal::new(*price, 1));
                input.marks.push((Symbol(syms[*sym as usize]), Some(Decimal::new(*price, 1)), t as Ts));
            }
            remark(&mut current, &marks, t as Ts, &mut input);
            inc.apply(input);
        }
        let mut batch = book(Limits::default());
        setup(&mut batch);
        batch.apply(RiskInput {
            positions: current.values().map(|r| (r.clone(), 1)).collect(),
            marks: marks.iter().map(|(s, m)| (*s, Some(*m), 0)).collect(),
            ..Default::default()
        });
        for g in groups_of(&current) {
            let (a, b) = (inc.row(&g).unwrap(), batch.row(&g).unwrap());
            prop_assert_eq!((a.names, a.long_mv, a.short_mv, a.gross, a.net, a.leverage), (b.names, b.long_mv, b.short_mv, b.gross, b.net, b.leverage));
            prop_assert_eq!((&a.largest, a.hhi, &a.sectors, &a.max_lots, a.total_pnl), (&b.largest, b.hhi, &b.sectors, &b.max_lots, b.total_pnl));
            for (x, y) in [(a.var_95, b.var_95), (a.var_99, b.var_99), (a.var_99_horizon, b.var_99_horizon), (a.hist_var_95, b.hist_var_95), (a.hist_var_99, b.hist_var_99), (a.es_99, b.es_99)] {
                prop_assert!((x - y).abs() <= dec!(0.01), "{g:?}: {x} vs {y}");
            }
        }
    }
}

/// A group whose positions all disappear keeps its row (drawdown history) and clears its breaches;
/// a limit removed by a reload clears the breach in force; new limits are judged at once.
#[test]
fn breaches_clear_when_positions_go_and_when_limits_go() {
    let mut b = book(limits());
    b.apply(RiskInput { instruments: vec![instrument(700, 100, "IT")], ..Default::default() });
    let row = pos("A", "s1", 700, 1000, dec!(450), dec!(60000), 1);
    let fired = b.apply(RiskInput { positions: vec![(row.clone(), 1)], ..Default::default() }).alerts;
    assert_eq!(
        fired.iter().map(|a| (a.metric, a.severity, a.kind)).collect::<Vec<_>>(),
        vec![(Metric::Gross, Severity::Soft, AlertKind::Breach), (Metric::Gross, Severity::Hard, AlertKind::Breach),]
    );
    // Every fill busted: the position row is retracted only.
    let out = b.apply(RiskInput { positions: vec![(row, -1)], ..Default::default() });
    let kinds: Vec<_> = out.alerts.iter().map(|a| (a.metric, a.severity, a.kind)).collect();
    assert!(kinds.contains(&(Metric::Gross, Severity::Hard, AlertKind::Clear)), "{kinds:?}");
    assert!(kinds.contains(&(Metric::Gross, Severity::Soft, AlertKind::Clear)), "{kinds:?}");
    let a = b.row(&Group::Account("A".into())).expect("the row stays");
    assert_eq!((a.gross, a.names, a.peak_pnl, a.max_drawdown), (Decimal::ZERO, 0, dec!(60000), dec!(60000)));

    // New limits are judged at the next apply, whatever changes; removing one clears its breach.
    let mut b = book(Limits::default());
    b.apply(RiskInput {
        instruments: vec![instrument(700, 100, "IT")],
        positions: vec![(pos("A", "s1", 700, 1000, dec!(450), dec!(0), 1), 1)],
        ..Default::default()
    });
    b.set_limits(limits());
    let now = b.apply(RiskInput::default()).alerts;
    assert_eq!(now.iter().filter(|a| a.group == Group::Account("A".into())).count(), 2, "{now:?}");
    b.set_limits(Limits::default());
    let cleared = b.apply(RiskInput::default()).alerts;
    assert_eq!(
        cleared.iter().map(|a| (a.severity, a.kind, a.level)).collect::<Vec<_>>(),
        vec![(Severity::Hard, AlertKind::Clear, dec!(420000)), (Severity::Soft, AlertKind::Clear, dec!(400000))]
    );
    assert!(b.apply(RiskInput::default()).alerts.is_empty());

    // A reload that raises the levels past the value clears the breaches at the levels they
    // were at (not the new ones, nor an unset hard level's "no level").
    let mut b = book(limits());
    b.apply(RiskInput {
        instruments: vec![instrument(700, 100, "IT")],
        positions: vec![(pos("A", "s1", 700, 1000, dec!(450), dec!(0), 1), 1)],
        ..Default::default()
    });
    let raised = |soft, hard| Limits {
        account_default: [(Metric::Gross, limit(soft, hard))].into_iter().collect(),
        ..Default::default()
    };
    // The account's alerts of the next apply under `limits`: (severity, kind, level).
    let mut judged = |limits: Limits| -> Vec<(Severity, AlertKind, Decimal)> {
        b.set_limits(limits);
        let alerts = b.apply(RiskInput::default()).alerts;
        alerts.iter().filter(|a| a.group == Group::Account("A".into())).map(|a| (a.severity, a.kind, a.level)).collect()
    };
    assert_eq!(
        judged(raised(dec!(500000), Decimal::MAX)),
        vec![(Severity::Hard, AlertKind::Clear, dec!(420000)), (Severity::Soft, AlertKind::Clear, dec!(400000))]
    );
    // A later breach names the new level.
    assert_eq!(judged(raised(dec!(440000), Decimal::MAX)), vec![(Severity::Soft, AlertKind::Breach, dec!(440000))]);
}

/// A symbol no group holds any more leaves the holdings (they stay bounded by what is held).
#[test]
fn symbols_no_longer_held_leave_the_holdings() {
    let mut b = book(Limits::default());
    let a = pos("A", "s1", 700, 100, dec!(385), dec!(0), 1);
    let c = pos("C", "s2", 700, 200, dec!(385), dec!(0), 1);
    b.apply(RiskInput { positions: vec![(a.clone(), 1), (c.clone(), 1)], ..Default::default() });
    let held = |b: &RiskBook| b.holdings.iter().any(|h| h.contains_key(&Symbol(700)));
    assert!(held(&b));
    b.apply(RiskInput { positions: vec![(a, -1)], ..Default::default() });
    assert!(held(&b), "C still holds it");
    b.apply(RiskInput { positions: vec![(c, -1)], ..Default::default() });
    assert!(!held(&b), "nobody holds it");
    assert_eq!(b.row(&Group::Desk).unwrap().names, 0);
}

/// Amounts beyond what an exact Σ(cents)² holds do not panic: HHI falls back to floats.
#[test]
fn enormous_positions_do_not_overflow() {
    let mut b = book(Limits::default());
    // 2.82e17 HKD: (2.82e19 cents)² is past what an i128 holds.
    let huge = pos("A", "s1", 700, 100_000_000_000_000, dec!(2820), dec!(0), 1);
    let small = pos("A", "s1", 5, 400, dec!(68), dec!(0), 1);
    b.apply(RiskInput { positions: vec![(huge.clone(), 1), (small, 1)], ..Default::default() });
    let lost = |b: &RiskBook| b.groups[b.index[&Group::Desk]].1.sum_sq_lost;
    assert!(lost(&b), "the exact sum overflowed");
    let r = b.row(&Group::Desk).unwrap();
    assert_eq!(r.hhi, Decimal::ONE);
    assert_eq!(r.gross, dec!(282000000000000000) + dec!(27200));
    b.apply(RiskInput { positions: vec![(huge, -1)], ..Default::default() });
    assert!(!lost(&b), "exact again once it fits");
    assert_eq!(b.row(&Group::Desk).unwrap().hhi, Decimal::ONE, "one name left");
}

/// Per-symbol volatility: the EWMA of the history's returns with today's move as the next one,
/// shown on each mark (and only when it changes).
#[test]
fn volatility_per_symbol_from_history_and_mark() {
    use crate::risk::vol::{Ewma, LAMBDA};
    let mut b = book(Limits::default());
    let out = b.apply(RiskInput { marks: vec![(Symbol(700), Some(dec!(400)), 7)], ..Default::default() });
    let h = history();
    let r = h.returns(Symbol(700)).unwrap();
    let today = 400.0 / 390.0 - 1.0;
    let want = Ewma::of(r, LAMBDA).with(today, LAMBDA).sqrt();
    assert_eq!(out.vols.len(), 1);
    let (v, sign) = &out.vols[0];
    assert_eq!((v.symbol, *sign, v.days, v.ts), (Symbol(700), 1, 3, 7));
    assert!((f(v.daily) - want).abs() < 1e-6, "{} vs {want}", v.daily);
    assert!((f(v.annual) - want * 252f64.sqrt()).abs() < 1e-5);
    assert!((f(v.today) - today).abs() < 1e-6);
    // The same mark again changes nothing; a new one retracts the old row.
    let again = b.apply(RiskInput { marks: vec![(Symbol(700), Some(dec!(400)), 7)], ..Default::default() });
    assert!(again.vols.is_empty());
    let moved = b.apply(RiskInput { marks: vec![(Symbol(700), Some(dec!(380)), 8)], ..Default::default() });
    assert_eq!(moved.vols.iter().map(|(_, r)| *r).collect::<Vec<_>>(), vec![-1, 1]);
    // Without history: the market proxy's σ (no previous close: no move today), 0 days of its own.
    let lone = b.apply(RiskInput { marks: vec![(Symbol(9), Some(dec!(10)), 9)], ..Default::default() });
    let market: Vec<f64> =
        (0..3).map(|k| [700u32, 5, 388].iter().map(|s| h.returns(Symbol(*s)).unwrap()[k]).sum::<f64>() / 3.0).collect();
    let want = Ewma::of(&market, LAMBDA).with(0.0, LAMBDA).sqrt();
    assert_eq!(lone.vols[0].0.days, 0);
    assert!(want > 0.001 && (f(lone.vols[0].0.daily) - want).abs() < 1e-6, "{} vs {want}", lone.vols[0].0.daily);
    // With no proxy: nothing.
    let mut none = RiskBook::new(RiskConfig {
        history: Arc::new(history().with_proxy(Proxy::None).unwrap()),
        ..RiskConfig::default()
    });
    let lone = none.apply(RiskInput { marks: vec![(Symbol(9), Some(dec!(10)), 9)], ..Default::default() });
    assert_eq!((lone.vols[0].0.daily, lone.vols[0].0.days), (Decimal::ZERO, 0));
}

/// A position in a symbol the history has no closes of (9988 here) moves with its proxy: by
/// default the market (each past day's mean return), else a chosen symbol, else nothing (it
/// added nothing to VaR before 2026-11-28, whatever its size).
#[test]
fn a_symbol_without_history_moves_with_its_proxy() {
    let h = history();
    let market: Vec<f64> =
        (0..3).map(|k| [700u32, 5, 388].iter().map(|s| h.returns(Symbol(*s)).unwrap()[k]).sum::<f64>() / 3.0).collect();
    let r700 = h.returns(Symbol(700)).unwrap().to_vec();
    let today700 = 400.0 / 390.0 - 1.0;
    let run = |proxy: Proxy| {
        let mut b = RiskBook::new(RiskConfig {
            history: Arc::new(history().with_proxy(proxy).unwrap()),
            contributor_scopes: vec!["desk", "strategy", "account"],
            contributors: 10,
            ..RiskConfig::default()
        });
        b.apply(RiskInput {
            instruments: vec![instrument(700, 100, "IT"), instrument(9988, 100, "IT")],
            positions: vec![
                (pos("A", "s1", 700, 100, dec!(400), dec!(0), 1), 1),
                (pos("A", "s1", 9988, 1000, dec!(80), dec!(0), 2), 1),
            ],
            marks: vec![(Symbol(700), Some(dec!(400)), 3), (Symbol(9988), Some(dec!(80)), 4)],
            seeds: vec![],
        });
        b.row(&Group::Account("A".into())).unwrap().clone()
    };
    // By hand: the two names' return rows (9988: the proxy's, and no move today: no previous close).
    let check = |a: &RiskRow, proxy: &[f64]| {
        let mut rows: Vec<Vec<f64>> = (0..3).map(|k| vec![r700[k], proxy[k]]).collect();
        rows.push(vec![today700, 0.0]);
        let w = [40000.0, 80000.0];
        let cov = ewma_covariance(&rows, LAMBDA);
        let p99 = parametric(&w, &cov, 0.99, 1.0);
        close_to(a.var_99, p99.var);
        close_to(a.var_95, parametric(&w, &cov, 0.95, 1.0).var);
        let hist = historical(&w, &rows[..3], 0.99).unwrap();
        close_to(a.hist_var_99, hist.var);
        close_to(a.es_99, hist.expected_shortfall);
        let by_symbol: BTreeMap<Symbol, Decimal> = a.contributors.iter().cloned().collect();
        close_to(by_symbol[&Symbol(700)], p99.components[0]);
        close_to(by_symbol[&Symbol(9988)], p99.components[1]);
    };
    let market_row = run(Proxy::Market);
    check(&market_row, &market);
    let tracker = run(Proxy::Symbol(Symbol(700)));
    check(&tracker, &r700);
    // No proxy: 700's alone.
    let none = run(Proxy::None);
    let mut rows: Vec<Vec<f64>> = (0..3).map(|k| vec![r700[k]]).collect();
    rows.push(vec![today700]);
    close_to(none.var_99, parametric(&[40000.0], &ewma_covariance(&rows, LAMBDA), 0.99, 1.0).var);
    assert!(market_row.var_99 > none.var_99 + dec!(100), "{} vs {}", market_row.var_99, none.var_99);
    // A proxy symbol needs history of its own (when the history has any).
    assert_eq!(history().with_proxy(Proxy::Symbol(Symbol(9988))).unwrap_err(), Symbol(9988));
    assert!(History::default().with_proxy(Proxy::Symbol(Symbol(9988))).is_ok());
}

/// Spread over threads, a refresh touching hundreds of groups gives exactly the rows and alerts,
/// in the same order, as on one thread: fills, re-marks and a bust across 400 accounts.
#[test]
fn many_groups_on_several_threads_equal_one_thread() {
    let tight = Limits {
        account_default: [(Metric::Gross, limit(dec!(30000), dec!(60000)))].into_iter().collect(),
        ..Limits::default()
    };
    let mut one = book(tight.clone());
    let mut three = RiskBook::new(RiskConfig { threads: 3, ..one.config.clone() });
    let instruments =
        vec![instrument(700, 100, "IT"), instrument(5, 400, "Financials"), instrument(388, 100, "Financials")];
    let mut steps = vec![RiskInput { instruments, ..RiskInput::default() }];
    let mut held: Vec<PositionRow> = Vec::new();
    let fills: Vec<(PositionRow, isize)> = (0..400)
        .flat_map(|a| {
            let account = format!("A{a:03}");
            [(700, 100 * (a % 7) - 300), (5, 400 * (a % 3) + 400), (388, 100 - 100 * (a % 5))]
                .into_iter()
                .filter(|(_, q)| *q != 0)
                .map(move |(s, q)| {
                    (pos(&account, if a % 2 == 0 { "momentum" } else { "carry" }, s, q, dec!(100), dec!(0), 1), 1)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    held.extend(fills.iter().map(|(p, _)| p.clone()));
    steps.push(RiskInput { positions: fills, ..RiskInput::default() });
    for (i, price) in [dec!(101.5), dec!(97.2), dec!(99.9)].into_iter().enumerate() {
        let mut positions = Vec::new();
        for p in held.iter_mut().filter(|p| p.key.symbol == Symbol(700)) {
            let new = PositionRow {
                mark: Some(price),
                market_value: Decimal::from(p.qty) * price,
                total: dec!(-3) * Decimal::from(i as i64),
                ..p.clone()
            };
            positions.push((std::mem::replace(p, new.clone()), -1));
            positions.push((new, 1));
        }
        steps.push(RiskInput {
            positions,
            marks: vec![(Symbol(700), Some(price), 10 + i as Ts)],
            ..RiskInput::default()
        });
    }
    // A bust: the 5s of the first 200 accounts go.
    let gone: Vec<(PositionRow, isize)> = held
        .iter()
        .filter(|p| p.key.symbol == Symbol(5) && p.key.account.as_str() < "A200")
        .map(|p| (p.clone(), -1))
        .collect();
    steps.push(RiskInput { positions: gone, ..RiskInput::default() });
    // A few accounts only (fewer groups than one thread's share): the three shards are run one
    // after the other on the calling thread.
    let few: Vec<(PositionRow, isize)> = held
        .iter()
        .filter(|p| p.key.symbol == Symbol(388) && p.key.account.as_str() >= "A395")
        .flat_map(|p| [(p.clone(), -1), (PositionRow { market_value: p.market_value + dec!(1), ..p.clone() }, 1)])
        .collect();
    assert!(few.len() >= 6, "several accounts in several shards");
    steps.push(RiskInput { positions: few, ..RiskInput::default() });
    let mut alerts = 0;
    for step in steps {
        let (a, b) = (sorted(one.apply(step.clone())), sorted(three.apply(step)));
        assert_eq!(a, b);
        alerts += a.alerts.len();
    }
    assert!(alerts > 0, "the limits fire");
    assert!(one.groups.len() > 400);
}

proptest! {
    /// The tails selected from the candidates equal those selected from every loss, after any
    /// moves within the bound (ties included), over several refreshes: whether the candidates
    /// still hold the tails or are chosen again.
    #[test]
    fn tails_from_the_candidates_equal_tails_from_every_scenario(
        start in prop::collection::vec(-50i32..50, 20..300),
        steps in prop::collection::vec(prop::collection::vec((0usize..300, -1.0f64..1.0), 0..4), 1..8),
        tied in any::<bool>(),
        scale in prop::sample::select(vec![0.01, 1.0, 300.0]),
    ) {
        // Whole values (many ties) or spread ones.
        let mut d: Vec<f64> = start.iter().map(|x| if tied { *x as f64 } else { *x as f64 * 1.37 + 0.001 * *x as f64 * *x as f64 }).collect();
        let mut scratch = Vec::new();
        let full = |d: &[f64]| {
            let mut all: Vec<f64> = d.iter().map(|x| -x).collect();
            select_tails(&mut all, d.len())
        };
        let mut tail = TailCandidates::default();
        prop_assert_eq!(tail.tails(&d, &mut scratch), full(&d));
        prop_assert!(!tail.idx.is_empty());
        for moves in steps {
            // Each move scales one "name" with returns r (|r| ≤ 0.05) by Δw: every dₖ moves by
            // rₖ·Δw, and the bound by max|r|·|Δw|.
            for (seed, dw) in moves {
                let r: Vec<f64> = (0..d.len()).map(|k| (((k * 31 + seed * 17) % 101) as f64 - 50.0) / 1000.0).collect();
                let max_abs = r.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let dw = dw * scale;
                for (x, rk) in d.iter_mut().zip(&r) {
                    *x += rk * dw;
                }
                tail.move_by(max_abs * dw.abs());
            }
            prop_assert_eq!(tail.tails(&d, &mut scratch), full(&d));
        }
    }
}

proptest! {
    /// Moving the scenarios and summing their squares in one pass gives the same bits as moving
    /// them and then summing apart.
    #[test]
    fn moving_the_scenarios_sums_their_squares_as_apart(
        d in prop::collection::vec(-1e7f64..1e7, 0..40),
        seed in 0usize..1000,
        dw in -1e6f64..1e6,
    ) {
        let n = d.len();
        let r: Vec<f64> = (0..n).map(|k| (((k * 31 + seed * 17) % 101) as f64 - 50.0) / 1000.0).collect();
        let a: Vec<f64> = (0..n).map(|k| 0.94f64.powi(k as i32) * 0.06).collect();
        let (mut fused, mut apart) = (d.clone(), d);
        let squares = move_scenarios(&mut fused, &r, dw, &a);
        for (x, rk) in apart.iter_mut().zip(&r) {
            *x += rk * dw;
        }
        prop_assert_eq!(&fused, &apart);
        prop_assert_eq!(squares.map(f64::to_bits), Some(weighted_squares(&a, &apart).to_bits()));
        // Weights of another length: moved all the same, no sum.
        prop_assert_eq!(move_scenarios(&mut fused, &r, dw, &a[..n.saturating_sub(1)]), if n == 0 { Some(0.0) } else { None });
    }
}

/// Small moves keep the candidates (the refresh reads a few dozen scenarios); moves that add up
/// past the gap between the tail and the cut make it look at every scenario again.
#[test]
fn the_tail_candidates_are_kept_until_the_moves_add_up() {
    let mut d: Vec<f64> = (0..250).map(|k| ((k * 37) % 250) as f64 - 125.0).collect();
    let mut scratch = Vec::new();
    let mut tail = TailCandidates::default();
    tail.tails(&d, &mut scratch);
    // k = 13 of 250, 34 candidates: losses 125 down to 92, cut at 92.
    assert_eq!((tail.idx.len(), tail.cut), (34, 92.0));
    assert_eq!(tail.idx[..2], [0, 223], "largest first: d = -125, -124");
    for step in 1..=10 {
        d[step * 7] -= 0.5;
        tail.move_by(0.5);
        let mut all: Vec<f64> = d.iter().map(|x| -x).collect();
        assert_eq!(tail.tails(&d, &mut scratch), select_tails(&mut all, 250));
        assert_eq!((tail.cut, tail.moved), (92.0, 0.5 * step as f64), "kept at step {step}");
    }
    // The 13th largest loss is 113; the cut and the moves pass it.
    d[3] -= 20.0;
    tail.move_by(20.0);
    let mut all: Vec<f64> = d.iter().map(|x| -x).collect();
    assert_eq!(tail.tails(&d, &mut scratch), select_tails(&mut all, 250));
    assert_eq!(tail.moved, 0.0, "chosen again");
}

/// Twelve symbols (more than a group's [`Largest`] list holds), ten of them with sixty past days
/// (the last two take the market proxy: one Gram column for both).
fn wide_history() -> History {
    History::from_closes((0..10u32).flat_map(|s| {
        (0..60usize).map(move |d| {
            let x = ((d as u64 * 7919 + s as u64 * 104729) % 1000) as f64 / 1000.0 - 0.5;
            (d, Symbol(1000 + s), 100.0 * (1.0 + 0.04 * x + 0.001 * d as f64))
        })
    }))
}

/// Every group that shows contributors keeps exactly its names with a non-zero market value, each
/// with uₛ equal (to rounding) to the Σₖ aₖ·r_{k,s}·dₖ it stands for.
fn check_components(b: &RiskBook) -> Result<(), TestCaseError> {
    for (i, (g, st)) in b.groups.iter().enumerate() {
        if !b.config.contributor_scopes.contains(&g.kind()) {
            continue;
        }
        let nonzero: BTreeSet<Symbol> = names_of(&b.holdings[b.shard_of[i] as usize], i as u32, &st.held_symbols)
            .filter(|(_, n)| n.added.w != 0.0)
            .map(|(s, _)| s)
            .collect();
        prop_assert_eq!(st.w.keys().copied().collect::<BTreeSet<_>>(), nonzero, "{:?}", g);
        prop_assert!(!st.u_stale);
        for (s, held) in &st.w {
            let r = b.config.history.returns(*s).unwrap_or(&[]);
            let fresh = weighted_dot(&b.weights, r, &st.d);
            let scale: f64 = b.weights.iter().zip(r).zip(&st.d).map(|((a, x), d)| (a * x * d).abs()).sum();
            prop_assert!((held.u - fresh).abs() <= 1e-9 * (1.0 + scale), "{:?} {:?}: {} vs {}", g, s, held.u, fresh);
        }
    }
    Ok(())
}

fn wide_book(threads: usize) -> RiskBook {
    RiskBook::new(RiskConfig {
        history: Arc::new(wide_history()),
        contributor_scopes: vec!["desk", "strategy", "account"],
        contributors: 20,
        threads,
        ..RiskConfig::default()
    })
}

/// One time: position changes (account, strategy, symbol, lots, price in 0.1) and instrument
/// changes (symbol, lot choice, sector choice).
type WideStep = (Vec<(u8, u8, u8, i64, i64)>, Vec<(u8, u8, u8)>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// With more names than the largest-names list holds, and instruments changing sector and lot
    /// while held: the incremental book (on one shard and on three) gives the rows a fresh book
    /// computes from the final positions and instruments.
    #[test]
    fn wide_incremental_equals_recomputation(
        steps in prop::collection::vec(
            (
                prop::collection::vec((0u8..3, 0u8..2, 0u8..12, prop_oneof![Just(0i64), -30i64..30], 50i64..150), 1..12),
                prop::collection::vec((0u8..12, 0u8..3, 0u8..3), 0..3),
            ),
            1..30,
        )
    ) {
        let steps: Vec<WideStep> = steps;
        let lots = [100i64, 400, 1000];
        let sectors = ["IT", "Financials", "ETF"];
        let mut insts: BTreeMap<u32, (i64, &str)> = (0..12u32).map(|s| (1000 + s, (100, "IT"))).collect();
        let inst = |s: u32, (lot, sector): (i64, &str)| instrument(s, lot, sector);
        let mut one = wide_book(1);
        let mut three = wide_book(3);
        let first = RiskInput { instruments: insts.iter().map(|(s, v)| inst(*s, *v)).collect(), ..Default::default() };
        prop_assert_eq!(sorted(one.apply(first.clone())), sorted(three.apply(first)));
        let mut current: BTreeMap<PositionKey, PositionRow> = BTreeMap::new();
        let mut marks: BTreeMap<Symbol, Decimal> = BTreeMap::new();
        for (t, (changes, inst_changes)) in steps.iter().enumerate() {
            let mut input = RiskInput::default();
            for (s, l, c) in inst_changes {
                let v = (lots[*l as usize], sectors[*c as usize]);
                insts.insert(1000 + *s as u32, v);
                input.instruments.push(inst(1000 + *s as u32, v));
            }
            for (a, st, sym, qty, price) in changes {
                let symbol = 1000 + *sym as u32;
                let row = pos(&format!("A{a}"), &format!("S{st}"), symbol, qty * 100, Decimal::new(*price, 1), Decimal::from(*qty), t as Ts);
                if *qty == 0 {
                    // A bust: the position row goes (the name may go, and come back later).
                    if let Some(old) = current.remove(&row.key) {
                        input.positions.push((old, -1));
                    }
                    continue;
                }
                if let Some(old) = current.insert(row.key.clone(), row.clone()) {
                    input.positions.push((old, -1));
                }
                input.positions.push((row, 1));
                marks.insert(Symbol(symbol), Decimal::new(*price, 1));
                input.marks.push((Symbol(symbol), Some(Decimal::new(*price, 1)), t as Ts));
            }
            remark(&mut current, &marks, t as Ts, &mut input);
            prop_assert_eq!(sorted(one.apply(input.clone())), sorted(three.apply(input)));
            check_components(&one)?;
            check_components(&three)?;
        }
        let mut batch = wide_book(1);
        batch.apply(RiskInput {
            instruments: insts.iter().map(|(s, v)| inst(*s, *v)).collect(),
            positions: current.values().map(|r| (r.clone(), 1)).collect(),
            marks: marks.iter().map(|(s, m)| (*s, Some(*m), 0)).collect(),
            ..Default::default()
        });
        for g in groups_of(&current) {
            let (a, b) = (one.row(&g).unwrap(), batch.row(&g).unwrap());
            prop_assert_eq!((a.names, a.long_mv, a.short_mv, a.gross, a.net), (b.names, b.long_mv, b.short_mv, b.gross, b.net), "{:?}", g);
            prop_assert_eq!((&a.largest, a.hhi, &a.sectors, &a.max_lots), (&b.largest, b.hhi, &b.sectors, &b.max_lots), "{:?}", g);
            for (x, y) in [(a.var_95, b.var_95), (a.var_99, b.var_99), (a.hist_var_95, b.hist_var_95), (a.hist_var_99, b.hist_var_99), (a.es_95, b.es_95), (a.es_99, b.es_99)] {
                prop_assert!((x - y).abs() <= dec!(0.01), "{:?}: {} vs {}", g, x, y);
            }
            prop_assert_eq!(a.contributors.len(), b.contributors.len(), "{:?}", g);
            for ((s, x), (t, y)) in a.contributors.iter().zip(&b.contributors) {
                prop_assert!((x - y).abs() <= dec!(0.01), "{:?}: {:?} {} vs {:?} {}", g, s, x, t, y);
            }
        }
    }
}
