//! Risk benchmarks: the risk book's refresh after one mark change, for many accounts and symbols,
//! and how often a desk-wide VaR over many symbols is recomputed incrementally.
//!
//! The risk operator applies one [`RiskBook::apply_parts`] per completed time with the time's position
//! row changes; these benches call it directly with the rows a mark change produces (every
//! position in the symbol re-valued: a retraction and an insertion each), so the figures are the
//! risk operator's work, not the positions operator's re-marking before it. Each case first
//! changes the mark of every symbol once (timed apart: the first mark of a symbol computes its
//! covariance column when contributors are on), then measures random mark changes.

use std::sync::Arc;
use std::time::Instant;

use harbour_dataflows::marks::MarkSource;
use harbour_dataflows::model::{Instrument, PositionKey, Symbol};
use harbour_dataflows::pnl::PositionRow;
use harbour_dataflows::risk::book::{History, RiskBook, RiskConfig, RiskInput};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use smol_str::SmolStr;

fn row(account: &SmolStr, strategy: &SmolStr, symbol: u32, qty: i64, price: Decimal) -> PositionRow {
    PositionRow {
        key: PositionKey { account: account.clone(), strategy: strategy.clone(), symbol: Symbol(symbol) },
        qty,
        avg_price: Some(price),
        cost: Decimal::from(qty) * price,
        realized: Decimal::ZERO,
        fees: Decimal::ZERO,
        unrealized: Decimal::ZERO,
        market_value: Decimal::from(qty) * price,
        total: Decimal::ZERO,
        mark: Some(price),
        mark_source: MarkSource::Last,
        fills: 1,
        bought: qty.max(0),
        sold: (-qty).max(0),
        last_fill_ts: 0,
    }
}

fn history(symbols: u32, days: usize, rng: &mut impl Rng) -> History {
    let mut closes = Vec::new();
    for s in 1..=symbols {
        let mut p = 100.0;
        for d in 0..=days {
            closes.push((d, Symbol(s), p));
            p *= (rng.random_range(-0.02..0.02f64)).exp();
        }
    }
    History::from_closes(closes)
}

struct Setup {
    book: RiskBook,
    rows: Vec<Vec<PositionRow>>,
    prices: Vec<Decimal>,
}

/// `accounts` × `symbols` positions (each account holds `per_account` symbols), 10 strategies.
fn setup(accounts: usize, symbols: u32, per_account: usize, days: usize, contributors: bool, threads: usize) -> Setup {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let config = RiskConfig {
        history: Arc::new(history(symbols, days, &mut rng)),
        contributors: if contributors { 5 } else { 0 },
        threads,
        ..RiskConfig::default()
    };
    let mut book = RiskBook::new(config);
    let prices: Vec<Decimal> = (0..=symbols).map(|_| Decimal::new(rng.random_range(1_000..500_000), 3)).collect();
    let strategies: Vec<SmolStr> = (0..10).map(|i| SmolStr::new(format!("strategy-{i}"))).collect();
    let mut rows: Vec<Vec<PositionRow>> = vec![Vec::new(); symbols as usize + 1];
    let mut input = RiskInput {
        instruments: (1..=symbols)
            .map(|s| Instrument {
                symbol: Symbol(s),
                name: format!("S{s}"),
                lot_size: 100,
                currency: "HKD".into(),
                sector: Some(format!("sector-{}", s % 11)),
                stamp_duty: true,
                spread_table: None,
            })
            .collect(),
        ..Default::default()
    };
    for a in 0..accounts {
        let account = SmolStr::new(format!("ACC-{a:04}"));
        let strategy = &strategies[a % strategies.len()];
        let start = rng.random_range(0..symbols);
        for k in 0..per_account as u32 {
            let s = (start + k) % symbols + 1;
            let qty = rng.random_range(-50..50i64) * 100;
            let r = row(&account, strategy, s, qty, prices[s as usize]);
            rows[s as usize].push(r.clone());
            input.positions.push((r, 1));
        }
    }
    book.apply(input);
    Setup { book, rows, prices }
}

/// One mark change of `symbol`: every position in it re-valued.
fn remark(s: &mut Setup, symbol: u32, rng: &mut impl Rng) -> RiskInput {
    let p = &mut s.prices[symbol as usize];
    *p = (*p + Decimal::new(rng.random_range(-50..=50), 3)).max(Decimal::ONE);
    let price = *p;
    let mut positions = Vec::with_capacity(2 * s.rows[symbol as usize].len());
    for r in s.rows[symbol as usize].iter_mut() {
        let new = PositionRow { mark: Some(price), market_value: Decimal::from(r.qty) * price, ..r.clone() };
        positions.push((std::mem::replace(r, new.clone()), -1));
        positions.push((new, 1));
    }
    RiskInput { positions, marks: vec![(Symbol(symbol), Some(price), 0)], ..Default::default() }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn refresh(label: &str, s: &mut Setup, symbols: u32, n: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    // Warm-up: one mark change per symbol, as a day's first mark of each does (with contributors
    // it computes the symbol's column of the covariance, once per process); timed apart, and
    // left out of the steady state measured next.
    let mut first = Vec::with_capacity(symbols as usize);
    for symbol in 1..=symbols {
        let input = remark(s, symbol, &mut rng);
        let t = Instant::now();
        drop(s.book.apply_parts(input));
        first.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "risk      {label}: first mark change of each symbol median {:.3} ms, p99 {:.3} ms",
        percentile(&mut first, 0.5),
        percentile(&mut first, 0.99)
    );
    let mut times = Vec::with_capacity(n);
    let mut rows = 0;
    for _ in 0..n {
        let symbol = rng.random_range(1..=symbols);
        let input = remark(s, symbol, &mut rng);
        let t = Instant::now();
        // What the risk operator calls (the shards' parts are handed on as they are).
        let out = s.book.apply_parts(input);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        rows += out.iter().map(|p| p.insert.len()).sum::<usize>();
    }
    let total: f64 = times.iter().sum();
    println!(
        "risk      {label}: refresh after one mark change median {:.3} ms, p99 {:.3} ms ({:.0} refreshes/s; {} risk rows per refresh)",
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        n as f64 / (total / 1e3),
        rows / n
    );
}

/// Runs the risk benches: each case on one thread and on every core (`risk.threads`).
pub fn bench_risk(accounts: usize, symbols: u32, only_dense: bool) {
    let days = 250;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cases: &[(usize, bool)] = if only_dense {
        &[(symbols as usize, false)]
    } else {
        &[(symbols as usize, false), (symbols as usize, true), (50, false)]
    };
    for &(per, contributors) in cases {
        for threads in if cores > 1 { vec![1, cores] } else { vec![1] } {
            let t = Instant::now();
            let mut s = setup(accounts, symbols, per, days, contributors, threads);
            println!(
                "risk      setup: {accounts} accounts x {per} of {symbols} symbols, {days} days of history{} in {:.1}s",
                if contributors { ", contributors for desk and strategies" } else { "" },
                t.elapsed().as_secs_f64()
            );
            let label = format!(
                "{accounts} accounts x {per} symbols{}, {threads} thread{}",
                if contributors { " + contributors" } else { "" },
                if threads == 1 { "" } else { "s" }
            );
            refresh(&label, &mut s, symbols, if only_dense { 3_000 } else { 300 });
        }
    }
    if only_dense {
        return;
    }
    // The desk alone over every symbol: how often its VaR is recomputed incrementally.
    let mut desk = setup(1, symbols, symbols as usize, days, true, 1);
    refresh(&format!("desk VaR over {symbols} symbols (with contributors)"), &mut desk, symbols, 2_000);
}
