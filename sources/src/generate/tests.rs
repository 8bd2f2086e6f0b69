//! Tests of the generator: determinism, the input rules' verdict on every line, session hours, counts.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{NaiveDate, NaiveTime};
use harbour_dataflows::model::{OrderStatus, Ts};
use harbour_dataflows::ticks::{SpreadTable, SpreadTables};
use harbour_dataflows::validate::{hkt, Accepted, Input, Validator};

use super::*;
use crate::contract::parse_line;

fn small() -> GenerateConfig {
    GenerateConfig {
        fills: 3_000,
        quotes: 6_000,
        invalid_ratio: 0.02,
        bust_ratio: 0.02,
        late_ratio: 0.03,
        ..GenerateConfig::default()
    }
}

/// What the input rules make of a day.
#[derive(Default)]
struct Verdict {
    rejected: BTreeMap<&'static str, usize>,
    accepted: Vec<String>,
    fills: usize,
    busts: usize,
    quotes: usize,
    closes: usize,
    orders: usize,
    instruments: usize,
}

fn judge(cfg: &GenerateConfig, lines: &[String]) -> Verdict {
    judge_on(cfg, SpreadTables::default(), lines)
}

/// What the input rules checking against `spreads` make of a day.
fn judge_on(cfg: &GenerateConfig, spreads: SpreadTables, lines: &[String]) -> Verdict {
    let table = spreads.on(cfg.date).unwrap().clone();
    let mut validator = Validator::new(spreads);
    let mut lots = HashMap::new();
    let mut v = Verdict::default();
    for (n, line) in lines.iter().enumerate() {
        let input = match parse_line(line, n as u64 + 1) {
            Ok(input) => input,
            Err(e) => {
                *v.rejected.entry(e.code()).or_default() += 1;
                continue;
            }
        };
        match validator.accept(input) {
            Err(e) => *v.rejected.entry(e.code()).or_default() += 1,
            Ok(accepted) => {
                v.accepted.push(line.clone());
                for a in accepted {
                    match a {
                        Accepted::Fill(f) => {
                            assert!(table.on_grid(f.price), "{line}");
                            let lot: i64 = lots[&f.key.symbol];
                            assert!(f.qty % lot == 0 || (f.odd_lot && f.qty < lot), "{line}");
                            v.fills += 1;
                        }
                        Accepted::Bust(_) => v.busts += 1,
                        Accepted::Market(harbour_dataflows::model::MarketEvent::Quote(q)) => {
                            if let (Some(b), Some(a)) = (q.bid, q.ask) {
                                assert!(a > b && table.on_grid(a) && table.on_grid(b), "{line}");
                            }
                            v.quotes += 1;
                        }
                        Accepted::Market(harbour_dataflows::model::MarketEvent::Close(_)) => v.closes += 1,
                        Accepted::Market(_) => {}
                        Accepted::Instrument { current: i, .. } => {
                            lots.insert(i.symbol, i.lot_size);
                            v.instruments += 1;
                        }
                        Accepted::Order(_) => v.orders += 1,
                        Accepted::Status(_) => panic!("the sample day has no trading status lines: {line}"),
                    }
                }
            }
        }
    }
    v
}

#[test]
fn same_config_same_bytes_other_seed_other_day() {
    let cfg = small();
    let a = generate(&cfg).unwrap();
    assert_eq!(a, generate(&cfg).unwrap());
    let b = generate(&GenerateConfig { seed: 8, ..cfg }).unwrap();
    assert_ne!(a, b);
}

#[test]
fn the_input_rules_reject_exactly_the_invalid_lines() {
    for cfg in [
        GenerateConfig::default(),
        GenerateConfig { invalid_ratio: 0.3, symbols: 40, accounts: 7, strategies: 12, ..small() },
    ] {
        let (lines, stats) = generate_with_stats(&cfg).unwrap();
        let v = judge(&cfg, &lines);
        let expected: BTreeMap<&str, usize> =
            stats.invalid_by_kind.iter().map(|(k, n)| (k.rejection_code(), n)).filter(|&(_, n)| n > 0).collect();
        assert_eq!(v.rejected, expected);
        assert_eq!(stats.invalid, stats.invalid_by_kind.total());
        assert!(InvalidKind::ALL.iter().all(|&k| stats.invalid_by_kind.get(k) > 0));
        // The counts agree with what was accepted.
        assert_eq!(lines.len(), stats.lines);
        assert_eq!(v.accepted.len() + stats.invalid, stats.lines);
        assert_eq!(
            (v.fills, v.busts, v.quotes, v.closes, v.orders, v.instruments),
            (stats.fills, stats.busts, stats.quotes, stats.closes, stats.orders, stats.instruments)
        );
    }
}

/// The day follows the spread tables the pipeline is configured with, not the built-in ones: on
/// tables of coarser ticks (every tick five times the built-in one) the rules again reject exactly
/// the invalid lines, where the day on the built-in tables has fills off that grid.
#[test]
fn prices_follow_configured_spread_tables() {
    let mut coarse = SpreadTables::default();
    for t in &mut coarse.0 {
        for b in &mut t.bands {
            b.tick *= rust_decimal::Decimal::from(5);
        }
    }
    let cfg = small();
    let (lines, stats) = generate_with_stats_on(&cfg, &coarse).unwrap();
    let v = judge_on(&cfg, coarse.clone(), &lines);
    let expected: BTreeMap<&str, usize> =
        stats.invalid_by_kind.iter().map(|(k, n)| (k.rejection_code(), n)).filter(|&(_, n)| n > 0).collect();
    assert_eq!(v.rejected, expected);
    assert_eq!(v.fills, stats.fills);
    let builtin = judge_on(&cfg, coarse.clone(), &generate(&cfg).unwrap());
    assert!(
        builtin.rejected["off_tick"] > expected.get("off_tick").copied().unwrap_or(0) + 100,
        "{:?}",
        builtin.rejected
    );
    // A date the configured tables do not cover is refused, naming it.
    let late = SpreadTables(
        coarse.0.iter().map(|t| SpreadTable { effective_from: cfg.date.succ_opt().unwrap(), ..t.clone() }).collect(),
    );
    assert!(matches!(generate_on(&cfg, &late), Err(GenerateError::Date(d)) if d == cfg.date));
}

#[test]
fn counts_follow_the_config() {
    let cfg = GenerateConfig::default();
    let (_, s) = generate_with_stats(&cfg).unwrap();
    assert_eq!(s.fills, cfg.fills);
    assert_eq!(s.quotes, cfg.quotes);
    assert_eq!((s.instruments, s.closes), (cfg.symbols, cfg.symbols));
    assert!(s.orders > s.fills && s.orders < 3 * s.fills, "{s:?}");
    let near = |got: usize, want: f64| (got as f64 - want).abs() < 4.0 * want.sqrt() + 3.0;
    assert!(near(s.busts, cfg.bust_ratio * cfg.fills as f64), "{s:?}");
    assert!(near(s.late, cfg.late_ratio * cfg.fills as f64), "{s:?}");
    assert!(near(s.invalid, cfg.invalid_ratio * s.lines as f64), "{s:?}");
}

#[test]
fn invalid_lines_do_not_change_the_valid_ones() {
    let cfg = small();
    let clean = generate_with_stats(&GenerateConfig { invalid_ratio: 0.0, ..cfg.clone() }).unwrap();
    assert_eq!(clean.1.invalid, 0);
    let dirty = generate(&cfg).unwrap();
    assert_eq!(judge(&cfg, &dirty).accepted, clean.0);
}

fn hkt_time(ts: Ts) -> NaiveTime {
    chrono::DateTime::from_timestamp_nanos(ts).with_timezone(&hkt()).time()
}

#[test]
fn events_keep_to_the_session_and_arrive_in_rough_time_order() {
    let cfg = small();
    let (lines, stats) = generate_with_stats(&cfg).unwrap();
    let hm = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
    let in_session = |t: NaiveTime| (hm(9, 30) <= t && t < hm(12, 0)) || (hm(13, 0) <= t && t < hm(16, 0));
    let mut seen_event = false;
    let mut seen_close = false;
    let mut latest = Ts::MIN;
    let mut displaced = 0;
    let mut fill_ts = HashMap::new();
    let (mut odd, mut commissions, mut markets) = (0, 0, 0);
    let mut statuses = HashSet::new();
    for line in &lines {
        let Ok(input) = parse_line(line, 0) else {
            continue;
        };
        let ts = match &input {
            Input::Status(_) => panic!("the sample day has no trading status lines"),
            Input::Instrument(_) => {
                assert!(!seen_event, "instruments come first");
                continue;
            }
            Input::Close(c) => {
                seen_close = true;
                let t = hkt_time(c.ts);
                assert!(hm(16, 8) <= t && t < hm(16, 10), "{line}");
                continue;
            }
            Input::Fill(f) => {
                if f.ts < latest {
                    displaced += 1;
                }
                fill_ts.entry(f.exec_id.clone()).or_insert(f.ts);
                odd += usize::from(f.odd_lot);
                commissions += usize::from(f.commission.is_some());
                f.ts
            }
            Input::Bust(b) => {
                if let Some(&t) = fill_ts.get(&b.exec_id) {
                    assert!(b.ts > t, "bust after its fill: {line}");
                }
                b.ts
            }
            Input::Quote(q) => q.ts,
            Input::Order(o) => {
                statuses.insert(o.status);
                markets += usize::from(o.price.is_none());
                o.ts
            }
        };
        assert!(!seen_close, "closes come last: {line}");
        seen_event = true;
        latest = latest.max(ts);
        let day = chrono::DateTime::from_timestamp_nanos(ts).with_timezone(&hkt());
        assert_eq!(day.date_naive(), cfg.date);
        assert!(in_session(day.time()), "{line}");
    }
    // Late fills (and a few duplicates among the invalid lines) are out of order; little else.
    assert!(displaced >= stats.late / 2, "{displaced} {stats:?}");
    assert!(displaced <= stats.late + stats.invalid, "{displaced} {stats:?}");
    assert!(odd > 0 && commissions > stats.fills / 10 && markets > 0);
    for s in [
        OrderStatus::New,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
    ] {
        assert!(statuses.contains(&s), "{s:?}");
    }
}

#[test]
fn positions_go_through_zero() {
    let cfg = small();
    let lines = generate(&cfg).unwrap();
    let mut positions: HashMap<_, i64> = HashMap::new();
    let mut crossings = 0;
    for line in &lines {
        if let Ok(Input::Fill(f)) = parse_line(line, 0) {
            let p = positions.entry(f.key.clone()).or_default();
            let before = *p;
            *p += f.signed_qty();
            if before != 0 && (*p == 0 || (before > 0) != (*p > 0)) {
                crossings += 1;
            }
        }
    }
    assert!(crossings > 20, "{crossings}");
}

#[test]
fn the_universe_starts_with_real_large_caps() {
    let lines = generate(&GenerateConfig { symbols: 3, fills: 10, quotes: 10, ..GenerateConfig::default() }).unwrap();
    let instruments: Vec<_> = lines
        .iter()
        .filter_map(|l| match parse_line(l, 0) {
            Ok(Input::Instrument(i)) => Some((i.symbol.to_string(), i.lot_size, i.stamp_duty)),
            _ => None,
        })
        .collect();
    assert_eq!(instruments, [("00700".into(), 100, true), ("00005".into(), 400, true), ("09988".into(), 100, true)]);

    let cfg = GenerateConfig { symbols: 200, fills: 2_000, quotes: 2_000, ..GenerateConfig::default() };
    let lines = generate(&cfg).unwrap();
    let mut codes = HashSet::new();
    let mut cheapest = rust_decimal::Decimal::MAX;
    for line in &lines {
        match parse_line(line, 0) {
            Ok(Input::Instrument(i)) => {
                assert!(codes.insert(i.symbol) && i.symbol.0 != 99_999);
                assert!([100, 200, 400, 500, 1000, 2000].contains(&i.lot_size));
                assert_eq!(i.currency, "HKD");
            }
            Ok(Input::Close(c)) => cheapest = cheapest.min(c.price),
            _ => {}
        }
    }
    assert_eq!(codes.len(), 200);
    assert!(cheapest < rust_decimal::Decimal::new(25, 2), "a penny stock");
    let v = judge(&cfg, &lines);
    assert_eq!(v.closes, 200);
}

#[test]
fn the_spread_table_of_the_date_applies() {
    // Before 4 Aug 2025 the 20–50 band ticked in 0.05: Tracker Fund prices follow it.
    let cfg = GenerateConfig { date: NaiveDate::from_ymd_opt(2025, 3, 3).unwrap(), ..small() };
    let (lines, stats) = generate_with_stats(&cfg).unwrap();
    let v = judge(&cfg, &lines);
    assert_eq!(v.rejected.values().sum::<usize>(), stats.invalid);
}

#[test]
fn configs_are_checked() {
    let ok = GenerateConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let cases = [
        (GenerateConfig { symbols: 0, ..ok.clone() }, "symbols"),
        (GenerateConfig { symbols: MAX_SYMBOLS + 1, ..ok.clone() }, "symbols"),
        (GenerateConfig { accounts: 0, ..ok.clone() }, "accounts"),
        (GenerateConfig { strategies: 0, ..ok.clone() }, "strategies"),
        (GenerateConfig { bust_ratio: 1.0, ..ok.clone() }, "bust_ratio"),
        (GenerateConfig { invalid_ratio: f64::NAN, ..ok.clone() }, "invalid_ratio"),
        (GenerateConfig { late_ratio: -0.1, ..ok.clone() }, "late_ratio"),
        (GenerateConfig { date: NaiveDate::from_ymd_opt(1999, 12, 31).unwrap(), ..ok.clone() }, "date"),
    ];
    for (cfg, field) in cases {
        let err = generate(&cfg).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    // Nothing but the two fixed lines per symbol when there is nothing to trade.
    let (lines, stats) = generate_with_stats(&GenerateConfig { fills: 0, quotes: 0, ..ok }).unwrap();
    assert_eq!((lines.len(), stats.invalid), (20, 0));
}

#[test]
fn config_reads_with_defaults_and_refuses_unknown_fields() {
    let cfg: GenerateConfig = serde_json::from_str(r#"{"seed": 11, "date": "2026-03-03", "fills": 5}"#).unwrap();
    assert_eq!(
        cfg,
        GenerateConfig {
            seed: 11,
            date: NaiveDate::from_ymd_opt(2026, 3, 3).unwrap(),
            fills: 5,
            ..GenerateConfig::default()
        }
    );
    let err = serde_json::from_str::<GenerateConfig>(r#"{"fils": 5}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
#[ignore = "large: run with --release --ignored to time a million fills"]
fn a_million_fills_stream() {
    let cfg = GenerateConfig { fills: 1_000_000, ..GenerateConfig::default() };
    let started = std::time::Instant::now();
    let mut day = Day::new(&cfg).unwrap();
    let bytes: usize = day.by_ref().map(|l| l.len() + 1).sum();
    let stats = day.stats();
    eprintln!("{:?} for {bytes} bytes: {stats:?}", started.elapsed());
    assert_eq!(stats.fills, cfg.fills);
}
