//! Checkpoint restore: an engine restored from a snapshot taken mid-run, fed the rest of the
//! input, ends with exactly the tables of an uninterrupted run.

mod common;

use std::sync::Arc;

use common::{assert_same_risk, engine_config, risk_config};
use harbour::engine::{Engine, EngineSnapshot, OutputState};
use harbour::metrics::{Health, Metrics};
use harbour_sources::file::SourceLine;
use harbour_sources::generate::{generate, GenerateConfig};

fn line(i: usize, raw: &str) -> SourceLine {
    SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.to_string() }
}

fn feed_all<'a>(engine: &mut Engine<'_>, lines: impl Iterator<Item = (usize, &'a String)>, epoch: usize) {
    let mut n = 0;
    for (i, l) in lines {
        engine.feed(line(i, l));
        n += 1;
        if n % epoch == 0 {
            engine.seal();
        }
    }
    engine.seal();
}

/// Compares every table's rows (not versions) with typed equality (decimals compare by value:
/// a sum restored in another order may carry another scale, as `0` vs `0.00`).
fn same(a: &OutputState, b: &OutputState, what: &str) {
    fn table<T: PartialEq + std::fmt::Debug>(name: &str, x: Vec<&T>, y: Vec<&T>, what: &str) {
        if let Some((p, q)) = x.iter().zip(&y).find(|(p, q)| p != q) {
            panic!("{what}: {name} differ first at\n  got      {p:?}\n  expected {q:?}");
        }
        assert_eq!(x.len(), y.len(), "{what}: {name} row counts");
    }
    table("positions", a.positions.rows().collect(), b.positions.rows().collect(), what);
    table("fills", a.fills.rows().collect(), b.fills.rows().collect(), what);
    table("rollups", a.rollups.rows().collect(), b.rollups.rows().collect(), what);
    table("minutes", a.minutes.rows().collect(), b.minutes.rows().collect(), what);
    table("orders", a.orders.rows().collect(), b.orders.rows().collect(), what);
    table("marks", a.marks.rows().collect(), b.marks.rows().collect(), what);
    table("instruments", a.instruments.rows().collect(), b.instruments.rows().collect(), what);
    table("dead letters", a.dead_letters.iter().collect(), b.dead_letters.iter().collect(), what);
    table("volatility", a.vol.rows().collect(), b.vol.rows().collect(), what);
    common::assert_same_risk(a, b, false, what);
}

#[test]
fn restored_engine_continues_to_the_same_tables() {
    let lines =
        generate(&GenerateConfig { fills: 3_000, quotes: 6_000, seed: 11, ..GenerateConfig::default() }).unwrap();
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let cfg = engine_config(500);

    let mut whole = Engine::new(&cfg, &metrics, health.clone());
    feed_all(&mut whole, lines.iter().enumerate(), 500);
    let (expected, _) = whole.finish();
    assert!(expected.positions.len() > 10 && !expected.dead_letters.is_empty());

    for cut in [1, lines.len() / 3, lines.len() * 2 / 3, lines.len() - 1] {
        let mut first = Engine::new(&cfg, &metrics, health.clone());
        feed_all(&mut first, lines.iter().enumerate().take(cut), 500);
        let snap = first.snapshot();
        assert_eq!(snap.lines, cut as u64);
        // Through the checkpoint encoding (MessagePack) and back.
        let bytes = rmp_serde::to_vec(&snap).unwrap();
        let snap: EngineSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(snap, first.snapshot());

        let mut second = Engine::new(&cfg, &metrics, health.clone());
        second.restore(snap);
        same(second.state(), first.state(), &format!("restored tables equal the tables at the snapshot (cut {cut})"));
        // Rows rebuilt by the restore carry the versions they had (not the snapshot's position).
        let (a, b) = (second.state(), first.state());
        assert_eq!(a.positions.versioned(), b.positions.versioned(), "cut {cut}: position versions");
        assert_eq!(a.fills.versioned(), b.fills.versioned(), "cut {cut}: fill versions");
        assert_eq!(a.orders.versioned(), b.orders.versioned(), "cut {cut}: order versions");
        assert_eq!(a.marks.versioned(), b.marks.versioned(), "cut {cut}: mark versions");
        assert_eq!(a.instruments.versioned(), b.instruments.versioned(), "cut {cut}: instrument versions");
        assert_eq!(
            a.rollups.versioned().iter().map(|v| (v.row.0.clone(), v.version)).collect::<Vec<_>>(),
            b.rollups.versioned().iter().map(|v| (v.row.0.clone(), v.version)).collect::<Vec<_>>(),
            "cut {cut}: roll-up versions"
        );
        assert_eq!(
            a.minutes.versioned().iter().map(|v| (v.row.0.clone(), v.version)).collect::<Vec<_>>(),
            b.minutes.versioned().iter().map(|v| (v.row.0.clone(), v.version)).collect::<Vec<_>>(),
            "cut {cut}: minute versions"
        );
        assert!(cut == 1 || a.positions.versioned().iter().any(|v| v.version < cut as u64));
        feed_all(&mut second, lines.iter().enumerate().skip(cut), 500);
        let (got, stats) = second.finish();
        assert_eq!(stats.lines, lines.len() as u64);
        same(&got, &expected, &format!("cut {cut}"));
    }
}

/// A volatility row shows the time of the mark in force: after a quote empties the last price
/// (the mark falls back to an older source, or to none), a restored engine shows the same row as
/// the engine that saw the earlier marks.
#[test]
fn volatility_rows_survive_a_restore_after_the_mark_falls_back() {
    let lines: Vec<String> = [
        r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:30:00+08:00","bid":"385.000","ask":"385.400"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:31:00+08:00","last":"385.200"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:32:00+08:00","last":null}"#,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let cfg = engine_config(1);
    let mut first = Engine::new(&cfg, &metrics, health.clone());
    feed_all(&mut first, lines.iter().enumerate(), 1);
    let vol: Vec<_> = first.state().vol.rows().cloned().collect();
    assert_eq!(vol.len(), 1);
    let mid_ts = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:30:00+08:00").unwrap().timestamp_nanos_opt();
    assert_eq!(Some(vol[0].ts), mid_ts, "the mid is the mark again, at its own time");
    let restarted = Metrics::default();
    let mut second = Engine::new(&cfg, &restarted, health);
    second.restore(first.snapshot());
    same(second.state(), first.state(), "restored after the last price was emptied");
    // Rebuilding the dataflow is not an epoch of input (it counted as one until 2026-11-28).
    assert!(restarted.render().contains("harbour_pipeline_epochs_total 0\n"), "{}", restarted.render());
}

/// With history and limits that the day crosses: an engine restored at an epoch boundary continues
/// with the same risk rows (drawdowns included) and the same alerts, none fired twice.
#[test]
fn restored_engine_fires_the_same_alerts_once() {
    let gen = GenerateConfig { fills: 3_000, quotes: 6_000, seed: 11, ..GenerateConfig::default() };
    let lines = generate(&gen).unwrap();
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut cfg = engine_config(500);
    cfg.graph.risk = risk_config(&gen);

    let mut whole = Engine::new(&cfg, &metrics, health.clone());
    feed_all(&mut whole, lines.iter().enumerate(), 500);
    let (expected, _) = whole.finish();
    let alerts: Vec<_> = expected.alerts.rows().cloned().collect();
    let breaches = alerts.iter().filter(|a| a.kind == harbour_dataflows::risk::book::AlertKind::Breach).count();
    assert!(breaches >= 5 && breaches < alerts.len(), "the day breaches and clears limits: {alerts:#?}");
    assert!(expected
        .risk
        .rows()
        .any(|r| r.var_99 > rust_decimal::Decimal::ZERO && r.hist_var_99 > rust_decimal::Decimal::ZERO));

    for cut in [500, lines.len() / 1000 * 500, (lines.len() * 2 / 3) / 500 * 500] {
        let mut first = Engine::new(&cfg, &metrics, health.clone());
        feed_all(&mut first, lines.iter().enumerate().take(cut), 500);
        let snap = first.snapshot();
        let bytes = rmp_serde::to_vec(&snap).unwrap();
        let snap: EngineSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        let mut second = Engine::new(&cfg, &metrics, health.clone());
        second.restore(snap);
        assert_same_risk(second.state(), first.state(), true, &format!("restored at {cut}"));
        feed_all(&mut second, lines.iter().enumerate().skip(cut), 500);
        let (got, _) = second.finish();
        assert_same_risk(&got, &expected, true, &format!("cut {cut}"));
        let got_alerts: Vec<_> = got.alerts.versioned();
        assert_eq!(got_alerts, expected.alerts.versioned(), "cut {cut}: the same alerts, at the same versions");
    }
}

/// A fresh folder `name-<pid>` holding a limits file far from the generated day's figures, and
/// the day's risk settings with those limits, the file watched at every seal.
fn watched_limits(
    name: &str,
    gen: &GenerateConfig,
) -> (std::path::PathBuf, std::path::PathBuf, harbour::engine::EngineConfig) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limits.toml");
    std::fs::write(&file, "[account_default]\ngross = { soft = \"1000000000\" }\n").unwrap();
    let mut cfg = engine_config(500);
    cfg.graph.risk = risk_config(gen);
    cfg.graph.risk.limits = harbour::risk::read_limits(&file).unwrap();
    cfg.limits_watch = Some((file.clone(), std::time::Duration::ZERO));
    (dir, file, cfg)
}

/// The limits file is re-read while the engine runs: limits tightened mid-day start breaches from
/// the next epoch on; a bad file is refused and the limits in force stay.
#[test]
fn limits_reloaded_mid_run_apply_from_the_next_epoch() {
    let gen = GenerateConfig { fills: 3_000, quotes: 6_000, seed: 12, ..GenerateConfig::default() };
    let lines = generate(&gen).unwrap();
    let (dir, file, cfg) = watched_limits("harbour-limits-reload", &gen);
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&cfg, &metrics, health);
    let half = lines.len() / 2;
    feed_all(&mut engine, lines.iter().enumerate().take(half), 500);
    assert!(engine.state().alerts.is_empty(), "nothing near a limit of 1e9");
    let reloaded_at = engine.stats().lines;
    // A bad file: refused (at the second look that finds it, the empty seal that ends
    // `feed_all`: a change must hold still between two looks), counted, nothing changes.
    std::fs::write(&file, "[account_default]\ngross = { soft = \"oops\" }\n").unwrap();
    feed_all(&mut engine, lines.iter().enumerate().skip(half).take(500), 500);
    assert!(engine.state().alerts.is_empty());
    assert!(metrics.render().contains("harbour_risk_limit_reload_errors_total 1"), "{}", metrics.render());
    // Tightened: every account is over 1,000 HKD gross.
    std::fs::write(&file, "[account_default]\ngross = { soft = \"1000\", hard = \"2000\" }\n").unwrap();
    feed_all(&mut engine, lines.iter().enumerate().skip(half + 500), 500);
    let (state, _) = engine.finish();
    let alerts: Vec<_> = state.alerts.versioned();
    let accounts =
        state.risk.rows().filter(|r| matches!(r.group, harbour_dataflows::rollups::Group::Account(_))).count();
    assert_eq!(alerts.len(), 2 * accounts, "a soft and a hard breach per account, once: {alerts:#?}");
    assert!(alerts.iter().all(|a| a.version > reloaded_at + 500), "only after the reload");
    assert!(metrics.render().contains("harbour_risk_limit_reloads_total 1"));
    // The desk's figures are exported for dashboards.
    let text = metrics.render();
    let desk = state.risk.rows().find(|r| r.group == harbour_dataflows::rollups::Group::Desk).unwrap();
    let shown: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("harbour_risk_desk{figure=\"var_99\"} "))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert!((shown - rust_decimal::prelude::ToPrimitive::to_f64(&desk.var_99).unwrap()).abs() < 0.01);
    assert!(desk.var_99 > rust_decimal::Decimal::ZERO);
    let _ = std::fs::remove_dir_all(dir);
}

/// A limits reload is part of the input's history: a restart from a checkpoint taken before it
/// runs the re-formed epochs under the limits of the checkpoint, applies the reload at the epoch
/// logged with it (the file holds the new limits by then), and ends with the alerts of the run
/// that never stopped, at the same versions.
#[test]
fn a_limits_reload_is_replayed_at_its_epoch_after_a_restart() {
    use harbour_dataflows::risk::book::Limits;
    let gen = GenerateConfig { fills: 3_000, quotes: 6_000, seed: 12, ..GenerateConfig::default() };
    let lines = generate(&gen).unwrap();
    let dir = std::env::temp_dir().join(format!("harbour-limits-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limits.toml");
    let (loose, tight) = (
        "[account_default]\ngross = { soft = \"1000000000\" }\n",
        "[account_default]\ngross = { soft = \"1000\", hard = \"2000\" }\n",
    );
    let config = || {
        let mut cfg = engine_config(500);
        cfg.graph.risk = risk_config(&gen);
        cfg.graph.risk.limits = harbour::risk::read_limits(&file).unwrap();
        cfg.limits_watch = Some((file.clone(), std::time::Duration::ZERO));
        cfg
    };
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let chunks: Vec<Vec<(usize, &String)>> =
        lines.iter().enumerate().collect::<Vec<_>>().chunks(500).map(|c| c.to_vec()).collect();
    let (checkpoint_at, reload_at, restart_at) = (3, 6, 8);
    assert!(chunks.len() > restart_at + 2);

    // The run that never stops, with the log a Kafka run keeps: each epoch's new limits.
    std::fs::write(&file, loose).unwrap();
    let mut whole = Engine::new(&config(), &metrics, health.clone());
    let mut log: Vec<Option<Limits>> = Vec::new();
    let mut snap = None;
    for (k, chunk) in chunks.iter().enumerate() {
        for (i, l) in chunk {
            whole.feed(line(*i, l));
        }
        if k == reload_at {
            std::fs::write(&file, tight).unwrap();
        }
        whole.seal();
        log.push(whole.take_reloaded());
        if k == checkpoint_at {
            snap = Some(whole.snapshot());
        }
    }
    // Applied at the second look that finds the change (it must hold still between two looks).
    assert!(log[reload_at + 1].is_some() && log.iter().filter(|l| l.is_some()).count() == 1, "one reload, logged");
    let (expected, _) = whole.finish();
    assert!(!expected.alerts.is_empty());

    // Restarted after the reload, from the checkpoint before it: the file holds the new limits.
    let mut restarted = Engine::new(&config(), &metrics, health);
    restarted.restore(snap.unwrap());
    for (k, chunk) in chunks.iter().enumerate().skip(checkpoint_at + 1) {
        for (i, l) in chunk {
            restarted.feed(line(*i, l));
        }
        if k <= restart_at {
            restarted.seal_as_logged(log[k].clone());
        } else {
            restarted.seal();
        }
    }
    let (got, _) = restarted.finish();
    assert_eq!(got.alerts.versioned(), expected.alerts.versioned(), "the same alerts at the same versions");
    assert_same_risk(&got, &expected, true, "after the restart");
    let _ = std::fs::remove_dir_all(dir);
}

/// A copy of the tables taken mid-run and kept up to date from the changes of every later epoch
/// (what the Parquet sink of a Kafka run does on its thread) ends equal to the engine's tables,
/// versions included, busted fills removed.
#[test]
fn a_copy_kept_from_the_changes_ends_equal_to_the_tables() {
    use harbour::state;
    let lines =
        generate(&GenerateConfig { fills: 3_000, quotes: 6_000, seed: 19, ..GenerateConfig::default() }).unwrap();
    let metrics = Metrics::default();
    let mut engine = Engine::new(&engine_config(500), &metrics, Arc::new(Health::default()));
    engine.track_changes();
    let cut = lines.len() / 3;
    let mut copy: Option<OutputState> = None;
    let mut deletions = 0;
    for (i, raw) in lines.iter().enumerate() {
        engine.feed(line(i, raw));
        if (i + 1) % 500 == 0 || i + 1 == lines.len() {
            engine.seal();
            let changes = engine.take_changes();
            match copy.as_mut() {
                None if i >= cut => copy = Some(state::copy(engine.state())),
                None => {}
                Some(c) => {
                    deletions += changes.fills.iter().filter(|c| c.deleted).count();
                    state::apply_changes(c, changes);
                }
            }
        }
    }
    assert!(deletions > 0, "busts after the cut remove fills");
    let copy = copy.expect("a copy was taken");
    assert!(state::snapshot(&copy) == state::snapshot(engine.state()), "the copy ends equal to the tables");
    assert_eq!(copy.dead_letters.len(), engine.state().dead_letters.len());
}

/// A row removed while changes were tracked (a busted fill, the position it alone made) is kept
/// as a deletion at the version that removed it, through a checkpoint: a sink that lost its data
/// and is given the restored tables again gets the deletions too (without them, a row removed in
/// the epochs the store lost stayed in it, live, for good). A key written again is no deletion.
#[test]
fn removed_rows_survive_a_checkpoint_as_deletions() {
    use harbour::state::full_changes;
    let fill = |id: &str, account: &str, ts: &str| {
        format!(
            r#"{{"type":"fill","exec_id":"{id}","order_id":"O-{id}","account":"{account}","strategy":"s1","symbol":"00700","side":"BUY","qty":"100","price":"385.200","ts":"{ts}"}}"#
        )
    };
    let lines: Vec<String> = vec![
        r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#
            .to_string(),
        fill("E1", "A", "2026-03-02T09:30:00+08:00"),
        fill("E2", "B", "2026-03-02T09:31:00+08:00"),
        fill("E3", "C", "2026-03-02T09:32:00+08:00"),
        r#"{"type":"bust","exec_id":"E1","ts":"2026-03-02T09:40:00+08:00"}"#.to_string(),
        r#"{"type":"bust","exec_id":"E3","ts":"2026-03-02T09:41:00+08:00"}"#.to_string(),
        fill("E4", "C", "2026-03-02T09:42:00+08:00"),
    ];
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let cfg = engine_config(1);
    let mut first = Engine::new(&cfg, &metrics, health.clone());
    first.track_changes();
    feed_all(&mut first, lines.iter().enumerate(), 1);
    let text = serde_json::to_string(&first.snapshot()).unwrap();
    let mut second = Engine::new(&cfg, &metrics, health);
    second.restore(serde_json::from_str(&text).unwrap());
    let restored_at = 100;
    let all = full_changes(second.state(), restored_at);
    let deleted_fills: Vec<(&str, u64)> =
        all.fills.iter().filter(|c| c.deleted).map(|c| (c.row.fill.exec_id.as_str(), c.version)).collect();
    // E1 busted by line 5 (the epoch at its position, 1-based: 5), E3 by line 6; E4 lives.
    assert_eq!(deleted_fills.len(), 2, "{deleted_fills:?}");
    assert!(deleted_fills.contains(&("E1", 5)) && deleted_fills.contains(&("E3", 6)), "{deleted_fills:?}");
    let deleted_positions: Vec<&str> =
        all.positions.iter().filter(|c| c.deleted).map(|c| c.row.key.account.as_str()).collect();
    assert_eq!(deleted_positions, vec!["A"], "C holds E4 again: no deletion");
    assert!(all.positions.iter().any(|c| !c.deleted && c.row.key.account == "C"));
    assert!(
        all.fills.iter().all(|c| c.version <= restored_at) && all.positions.iter().all(|c| c.version <= restored_at)
    );
}

/// Risk rows depend on settings the checkpoint does not keep (here an account's NAV, changed across
/// the restart) and on float sums in the restore's order: the restored engine sends every risk
/// and volatility row again, at the restore's version, once it tracks changes, so the stores get
/// the new leverage (before, the rebuilt rows took back their old versions unsent, and the stores
/// kept the old leverage for as long as the account did not change).
#[test]
fn a_restore_sends_its_rebuilt_risk_rows_again() {
    let gen = GenerateConfig { fills: 2_000, quotes: 4_000, seed: 19, ..GenerateConfig::default() };
    let lines = generate(&gen).unwrap();
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut cfg = engine_config(500);
    cfg.graph.risk = risk_config(&gen);
    let mut first = Engine::new(&cfg, &metrics, health.clone());
    feed_all(&mut first, lines.iter().enumerate().take(3_000), 500);
    let snap = first.snapshot();
    let account = first
        .state()
        .risk
        .rows()
        .find_map(|r| match &r.group {
            harbour_dataflows::rollups::Group::Account(a) => Some(a.clone()),
            _ => None,
        })
        .expect("an account's risk row");
    let group = harbour_dataflows::rollups::Group::Account(account.clone());
    let mut changed = cfg.clone();
    changed.graph.risk.nav.insert(account.clone(), rust_decimal::Decimal::from(1_000_000));
    let mut second = Engine::new(&changed, &metrics, health);
    second.restore(snap);
    second.track_changes();
    let changes = second.take_changes();
    assert_eq!(changes.risk.len(), second.state().risk.len(), "every risk row again");
    assert_eq!(changes.vol.len(), second.state().vol.len(), "every volatility row again");
    let restored_at = 3_000;
    assert!(changes.risk.iter().all(|c| c.version == restored_at));
    assert!(changes.vol.iter().all(|c| c.version == restored_at));
    let row = changes.risk.iter().find(|c| c.row.group == group).unwrap();
    assert_eq!(row.row.nav, Some(rust_decimal::Decimal::from(1_000_000)));
    let before = first.state().risk.rows().find(|r| r.group == group).unwrap();
    assert_ne!(row.row.leverage, before.leverage, "the new NAV's leverage reaches the sinks");
    // Nothing else is sent again.
    assert!(changes.positions.is_empty() && changes.fills.is_empty());
}

/// Limits changed while no line comes are sealed in an epoch without lines, one past the last
/// epoch; a restore from a snapshot taken after it goes on past that time (until 2026-11-28 an
/// epoch could not be sealed without lines, and a restore went back to the line count: the next
/// epoch would have taken the time the reload's rows and alerts already had, and a sink fencing
/// by version would have refused its rows).
#[test]
fn an_epoch_without_lines_keeps_its_time_across_a_restore() {
    let gen = GenerateConfig { fills: 1_000, quotes: 2_000, seed: 5, ..GenerateConfig::default() };
    let lines = generate(&gen).unwrap();
    let (dir, file, cfg) = watched_limits("harbour-empty-epoch", &gen);
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&cfg, &metrics, health.clone());
    let first = 1_000;
    for (i, l) in lines.iter().enumerate().take(first) {
        engine.feed(line(i, l));
    }
    let last = engine.seal();
    assert!(!engine.limits_pending(), "the file as it was");
    std::fs::write(&file, "[account_default]\ngross = { soft = \"1000\" }\n").unwrap();
    // A change applies once two looks in a row see it.
    assert!(!engine.limits_pending());
    assert!(engine.limits_pending());
    let reload = engine.seal();
    assert_eq!((last, reload, engine.stats().lines), (1, first as u64 + 1, first as u64));
    let alerts = engine.state().alerts.versioned();
    assert!(!alerts.is_empty() && alerts.iter().all(|a| a.version == reload), "{alerts:?}");
    assert!(!engine.limits_pending(), "applied");
    let snap: EngineSnapshot = engine.snapshot();
    let mut restored = Engine::new(&cfg, &metrics, health.clone());
    restored.restore(snap);
    assert_eq!(restored.state().alerts.versioned(), alerts);
    // The restore's epoch shares the reload's time: its alerts, which the sinks have, are not
    // sent again as if the restore had fired them.
    restored.track_changes();
    let again = restored.take_changes();
    assert!(again.alerts.is_empty(), "{:?}", again.alerts);
    restored.feed(line(first, &lines[first]));
    let next = restored.seal();
    assert_eq!(next, reload + 1, "past the reload's epoch");
    // The same as without the restore.
    engine.feed(line(first, &lines[first]));
    assert_eq!(engine.seal(), next);
    // A log whose first epoch is a limits change without lines, re-formed by a process that
    // read those limits at start: the epoch is one all the same.
    let tight = harbour::risk::read_limits(&file).unwrap();
    let mut cfg = cfg.clone();
    cfg.graph.risk.limits = tight.clone();
    cfg.limits_watch = None;
    let mut replaying = Engine::new(&cfg, &metrics, health);
    assert_eq!(replaying.seal_as_logged(Some(tight)), 1);
    replaying.feed(line(0, &lines[0]));
    assert_eq!(replaying.seal_as_logged(None), 2, "the next epoch is past it");
    let _ = std::fs::remove_dir_all(dir);
}

/// Fills timestamped while their security was halted are kept and counted (once each, whenever
/// the fill arrives: after the resumption too); a restored engine knows the halts in force.
#[test]
fn fills_during_a_halt_are_kept_and_counted_across_a_restore() {
    let instrument =
        r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#;
    let status = |status: &str, at: &str| {
        format!(r#"{{"type":"status","symbol":"00700","status":"{status}","ts":"2026-03-02T{at}+08:00"}}"#)
    };
    let fill = |exec: &str, at: &str| {
        format!(
            r#"{{"type":"fill","exec_id":"{exec}","order_id":"O{exec}","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"100","price":"385.200","ts":"2026-03-02T{at}+08:00"}}"#
        )
    };
    let lines = [
        instrument.to_string(),
        fill("E1", "10:00:00"),
        status("halted", "10:15:00"),
        fill("E2", "10:20:00"),
        status("trading", "10:45:00"),
        fill("E3", "10:50:00"),
        // Reported after the resumption, timestamped inside the halt.
        fill("E4", "10:30:00"),
        status("halted", "11:00:00"),
    ];
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&engine_config(100), &metrics, health.clone());
    feed_all(&mut engine, lines.iter().enumerate(), 100);
    assert_eq!(metrics.fills_during_halt.get(), 2, "E2 and E4");
    assert_eq!(engine.state().fills.len(), 4, "every fill kept");

    let snap = engine.snapshot();
    let restored_metrics = Metrics::default();
    let mut restored = Engine::new(&engine_config(100), &restored_metrics, health);
    restored.restore(snap);
    let more = [fill("E5", "11:05:00")];
    feed_all(&mut restored, more.iter().enumerate().map(|(i, l)| (i + lines.len(), l)), 100);
    assert_eq!(restored_metrics.fills_during_halt.get(), 1, "E5: the halt in force at the checkpoint");
    assert_eq!(restored.state().fills.len(), 5);
}
