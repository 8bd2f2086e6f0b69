//! The ClickHouse sink on a real ClickHouse server (the one `deploy/clickhouse.sh` starts; the
//! README's test command exports `HARBOUR_CLICKHOUSE_URL`). Each test uses its own database.

mod common;

use std::sync::Arc;

use common::{engine_config, money, PrivateServer};
use harbour::engine::{Engine, OutputState};
use harbour::metrics::{Health, Metrics};
use harbour_sinks::clickhouse::{ClickHouseConfig, ClickHouseSink};
use harbour_sinks::tables::Changes;
use harbour_sources::file::SourceLine;
use harbour_sources::generate::{generate, GenerateConfig};

fn sink(name: &str) -> ClickHouseSink {
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").expect(
        "these tests need ClickHouse: run `bash deploy/test.sh` (it starts one), \
         or `eval \"$(deploy/clickhouse.sh start)\"` first",
    );
    let config = ClickHouseConfig {
        url,
        database: format!("harbour_test_{name}_{}", std::process::id()),
        ..ClickHouseConfig::default()
    };
    ClickHouseSink::connect(&config).unwrap()
}

/// What ClickHouse must show under FINAL: counts and exact sums of the engine's tables.
fn expected(s: &OutputState) -> String {
    let fills: Vec<_> = s.fills.rows().collect();
    let positions: Vec<_> = s.positions.rows().collect();
    let minutes = |account: bool| {
        let rows: Vec<_> = s
            .minutes
            .rows()
            .filter(|((g, _), _)| matches!(g, harbour_dataflows::rollups::Group::Account(_)) == account)
            .collect();
        format!("{}\t{}", rows.len(), money(rows.iter().map(|(_, t)| t.net)))
    };
    let risk: Vec<_> = s.risk.rows().collect();
    format!(
        "{}\t{}\t{}\t{}\n{}\t{}\t{}\t{}\t{}\n{}\n{}\n{}\n{}\n{}\n{}\t{}\t{}\t{}\n{}\n",
        fills.len(),
        fills.iter().map(|f| f.fill.qty).sum::<i64>(),
        money(fills.iter().map(|f| f.step.realized)),
        money(fills.iter().map(|f| f.fee)),
        positions.len(),
        positions.iter().map(|p| p.qty).sum::<i64>(),
        money(positions.iter().map(|p| p.realized)),
        money(positions.iter().map(|p| p.fees)),
        money(positions.iter().map(|p| p.total)),
        s.dead_letters.len(),
        minutes(true),
        minutes(false),
        s.orders.len(),
        s.instruments.len(),
        risk.len(),
        money(risk.iter().map(|r| r.gross)),
        money(risk.iter().map(|r| r.var_99)),
        money(risk.iter().map(|r| r.max_drawdown)),
        s.alerts.len(),
    )
}

fn shown(sink: &mut ClickHouseSink) -> String {
    let fills = sink
        .query_text("SELECT count(), sum(qty), sum(realized), sum(fees_total) FROM fills FINAL WHERE deleted = 0")
        .unwrap();
    let positions = sink
        .query_text(
            "SELECT count(), sum(qty), sum(realized), sum(fees), sum(total) FROM positions FINAL WHERE deleted = 0",
        )
        .unwrap();
    let dead = sink.query_text("SELECT count() FROM dead_letters FINAL").unwrap();
    let account = sink.query_text("SELECT count(), sum(net) FROM account_pnl_minute FINAL WHERE deleted = 0").unwrap();
    let strategy =
        sink.query_text("SELECT count(), sum(net) FROM strategy_pnl_minute FINAL WHERE deleted = 0").unwrap();
    let orders = sink.query_text("SELECT count() FROM orders FINAL WHERE deleted = 0").unwrap();
    let instruments = sink.query_text("SELECT count() FROM instruments FINAL WHERE deleted = 0").unwrap();
    let risk = sink
        .query_text("SELECT count(), sum(gross), sum(var_99), sum(max_drawdown) FROM risk FINAL WHERE deleted = 0")
        .unwrap();
    let alerts = sink.query_text("SELECT count() FROM alerts FINAL").unwrap();
    format!("{fills}{positions}{dead}{account}{strategy}{orders}{instruments}{risk}{alerts}")
}

#[test]
fn a_replayed_day_in_clickhouse_equals_the_engine_tables_and_writing_twice_changes_nothing() {
    let gen = GenerateConfig { fills: 3_000, quotes: 6_000, seed: 21, ..GenerateConfig::default() };
    let lines = generate(&gen).unwrap();
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut cfg = engine_config(500);
    cfg.graph.risk = common::risk_config(&gen);
    let mut engine = Engine::new(&cfg, &metrics, health);
    engine.track_changes();
    let mut ch = sink("day");
    let mut sent: Vec<(u64, Changes)> = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % 500 == 0 || i + 1 == lines.len() {
            let epoch = engine.seal();
            // Flush every other epoch: a flush carries the changes of several epochs.
            if sent.len().is_multiple_of(2) || i + 1 == lines.len() {
                let changes = engine.take_changes();
                ch.write(epoch, &changes).unwrap();
                sent.push((epoch, changes));
            } else {
                sent.push((epoch, Changes::default()));
            }
        }
    }
    let (state, _) = engine.finish();
    assert!(state.fills.len() > 2_000 && !state.dead_letters.is_empty());
    let busted = ch.query_text("SELECT count() FROM fills FINAL WHERE deleted = 1").unwrap();
    assert_ne!(busted.trim(), "0", "busts are visible as deleted fills");
    let want = expected(&state);
    assert_eq!(shown(&mut ch), want);
    let last = sent.last().unwrap().0;
    assert_eq!(ch.query_text("SELECT max(epoch) FROM sink_progress FINAL").unwrap().trim(), last.to_string());

    // A replay after a crash writes the same epochs again: nothing changes under FINAL.
    for (epoch, changes) in &sent {
        ch.write(*epoch, changes).unwrap();
    }
    assert_eq!(shown(&mut ch), want);
    // position_history holds one row per position version.
    let versions: usize = sent.iter().map(|(_, c)| c.positions.len()).sum();
    let history = ch.query_text("SELECT count() FROM position_history FINAL").unwrap();
    assert_eq!(history.trim(), versions.to_string());
    let order_versions: usize = sent.iter().map(|(_, c)| c.orders.len()).sum();
    assert_eq!(ch.query_text("SELECT count() FROM order_history FINAL").unwrap().trim(), order_versions.to_string());
    // The event log holds every message once, refused ones with their reason.
    let events = ch.query_text("SELECT count(), countIf(accepted = 0) FROM events FINAL").unwrap();
    assert_eq!(events, format!("{}\t{}\n", lines.len(), state.dead_letters.len()));
    // Every example query of docs/clickhouse.md runs and returns rows.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/clickhouse.md")).unwrap();
    let queries: Vec<&str> = doc.split("```sql").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert!(queries.len() >= 5);
    for q in queries {
        let out = ch.query_text(q.trim()).unwrap_or_else(|e| panic!("docs/clickhouse.md query failed: {e}\n{q}"));
        assert!(!out.trim().is_empty(), "no rows from\n{q}");
    }
    // Every panel of the desk dashboard (deploy/grafana) runs, as Grafana would send it, and
    // shows rows.
    let panels = common::grafana_clickhouse_sql("harbour-desk.json", |q| {
        ch.query_text(q).unwrap_or_else(|e| panic!("dashboard variable query failed: {e}\n{q}"))
    });
    assert!(panels.len() >= 10);
    for (title, q) in panels {
        let out = ch.query_text(&q).unwrap_or_else(|e| panic!("dashboard panel {title:?} failed: {e}\n{q}"));
        assert!(!out.trim().is_empty(), "no rows for dashboard panel {title:?}\n{q}");
    }
    // Migrations are recorded once and re-applying them is harmless.
    let again = sink("day");
    drop(again);
    assert_eq!(ch.query_text("SELECT count() FROM harbour_migrations FINAL").unwrap().trim(), "6");
    // Alerts: the same rows as the engine's, keyed by their deterministic id.
    let ids = ch.query_text("SELECT alert_id FROM alerts FINAL ORDER BY alert_id").unwrap();
    let mut want_ids: Vec<String> = state.alerts.rows().map(|a| a.id()).collect();
    want_ids.sort();
    assert!(!want_ids.is_empty());
    assert_eq!(ids, want_ids.iter().map(|i| format!("{i}\n")).collect::<String>());
}

#[test]
fn clickhouse_down_mid_run_the_sink_waits_and_the_tables_end_complete() {
    let server = PrivateServer::start("outage");
    let config = ClickHouseConfig {
        url: server.url.clone(),
        database: "harbour_outage".into(),
        max_backoff_ms: 300,
        ..ClickHouseConfig::default()
    };
    // The test harness's HARBOUR_CLICKHOUSE_URL must not redirect this sink.
    let mut ch = ClickHouseSink::connect(&config).unwrap();
    let lines =
        generate(&GenerateConfig { fills: 1_500, quotes: 3_000, seed: 4, ..GenerateConfig::default() }).unwrap();
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&engine_config(500), &metrics, health);
    engine.track_changes();
    let half = lines.len() / 2;
    let mut restarted = None;
    for (i, raw) in lines.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % 400 == 0 || i + 1 == lines.len() {
            let epoch = engine.seal();
            if restarted.is_none() && i >= half {
                server.kill();
                let started = std::time::Instant::now();
                // Up again in a second and a half; meanwhile the write below keeps retrying.
                let s = std::thread::spawn({
                    let state = server.state.clone();
                    let url = server.url.clone();
                    move || {
                        std::thread::sleep(std::time::Duration::from_millis(1500));
                        PrivateServer { state, url }.restart_detached()
                    }
                });
                ch.write(epoch, &engine.take_changes()).unwrap();
                s.join().unwrap();
                restarted = Some(started.elapsed());
            } else {
                ch.write(epoch, &engine.take_changes()).unwrap();
            }
        }
    }
    let waited = restarted.expect("the server was killed mid-run");
    assert!(waited.as_millis() >= 1_400, "the write waited for the server ({waited:?})");
    assert!(ch.retries() > 0, "the outage was retried");
    let (state, _) = engine.finish();
    assert_eq!(shown(&mut ch), expected(&state), "complete tables after the outage");
}

/// The sink keeps every day's official closes in `daily_closes`; the risk history read back from
/// there (the days before a date) is the history of those closes.
#[test]
fn daily_closes_written_by_the_sink_are_the_risk_history() {
    use chrono::NaiveDate;
    use harbour_dataflows::model::Symbol;
    use harbour_dataflows::risk::book::History;
    let mut ch = sink("closes");
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut closes: Vec<(NaiveDate, Symbol, f64)> = Vec::new();
    let dates = ["2026-11-23", "2026-11-24", "2026-11-25"].map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap());
    for (i, date) in dates.iter().enumerate() {
        let gen =
            GenerateConfig { fills: 300, quotes: 900, seed: 40 + i as u64, date: *date, ..GenerateConfig::default() };
        let lines = generate(&gen).unwrap();
        let mut engine = Engine::new(&engine_config(500), &metrics, health.clone());
        engine.track_changes();
        for (n, raw) in lines.iter().enumerate() {
            engine.feed(SourceLine { source: "day".into(), position: n as u64 + 1, raw: raw.clone() });
            let v: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
            if v["type"] == "close" {
                if let (Some(s), Some(p)) = (v["symbol"].as_str().and_then(Symbol::parse), v["price"].as_str()) {
                    closes.retain(|c| !(c.0 == *date && c.1 == s));
                    closes.push((*date, s, p.parse::<f64>().unwrap()));
                }
            }
        }
        let epoch = engine.seal();
        ch.write(epoch, &engine.take_changes()).unwrap();
    }
    assert!(closes.len() >= 20, "the sample days end with closing prices");
    let as_of = NaiveDate::parse_from_str("2026-11-26", "%Y-%m-%d").unwrap();
    let got = harbour::risk::clickhouse_history(&mut ch, "daily_closes", as_of, 250).unwrap();
    assert_eq!(got.days(), 2);
    assert_eq!(got, History::from_closes(closes.iter().cloned()));
    // Only the days before `as_of`, and at most `days` of them.
    let before = harbour::risk::clickhouse_history(&mut ch, "daily_closes", dates[2], 250).unwrap();
    assert_eq!(before, History::from_closes(closes.iter().filter(|c| c.0 < dates[2]).cloned()));
    let last_two = harbour::risk::clickhouse_history(&mut ch, "daily_closes", as_of, 2).unwrap();
    assert_eq!(last_two, History::from_closes(closes.iter().filter(|c| c.0 > dates[0]).cloned()));
}

/// Row count, sums of Int64 columns and sums of Decimal128(38, 8) columns of a Parquet table.
fn parquet_sums(dir: &std::path::Path, table: &str, ints: &[&str], decs: &[&str]) -> String {
    use arrow_array::{Array, Decimal128Array, Int64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(dir.join(format!("{table}.parquet"))).unwrap();
    let (mut rows, mut i, mut d) = (0usize, vec![0i64; ints.len()], vec![0i128; decs.len()]);
    for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
        let batch = batch.unwrap();
        rows += batch.num_rows();
        for (k, c) in ints.iter().enumerate() {
            let a = batch.column_by_name(c).unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
            i[k] += a.iter().flatten().sum::<i64>();
        }
        for (k, c) in decs.iter().enumerate() {
            let a = batch.column_by_name(c).unwrap().as_any().downcast_ref::<Decimal128Array>().unwrap();
            assert_eq!(a.scale(), 8);
            d[k] += a.iter().flatten().sum::<i128>();
        }
    }
    let mut fields = vec![rows.to_string()];
    fields.extend(i.iter().map(i64::to_string));
    fields.extend(d.iter().map(|v| rust_decimal::Decimal::from_i128_with_scale(*v, 8).normalize().to_string()));
    fields.join("\t")
}

/// The same sums from ClickHouse under FINAL, decimals normalized.
fn clickhouse_sums(ch: &mut ClickHouseSink, sql: &str) -> String {
    let out = ch.query_text(sql).unwrap();
    out.trim()
        .split('\t')
        .map(|f| f.parse::<rust_decimal::Decimal>().map_or(f.to_owned(), |d| d.normalize().to_string()))
        .collect::<Vec<_>>()
        .join("\t")
}

#[test]
fn harbour_replay_into_clickhouse_equals_the_parquet_tables_of_the_same_run() {
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").expect("these tests need ClickHouse: run `bash deploy/test.sh`");
    let dir = std::env::temp_dir().join(format!("harbour-ch-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lines =
        generate(&GenerateConfig { fills: 3_000, quotes: 6_000, seed: 5, ..GenerateConfig::default() }).unwrap();
    let day = dir.join("day.jsonl");
    std::fs::write(&day, lines.join("\n") + "\n").unwrap();
    let database = format!("harbour_test_replay_{}", std::process::id());
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_harbour"))
        .env("HARBOUR_CLICKHOUSE_URL", &url)
        .env("HARBOUR__CLICKHOUSE__DATABASE", &database)
        .env("HARBOUR__CLICKHOUSE__FLUSH_MS", "0") // a write after every epoch: many inserts
        .env("HARBOUR__PIPELINE__EPOCH_EVENTS", "700")
        .env("HARBOUR__METRICS__LISTEN", "")
        .args(["replay", "--clickhouse", "--out"])
        .arg(dir.join("out"))
        .arg(&day)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{said}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(said.contains(&format!("written to database `{database}`")), "{said}");
    let out = dir.join("out");
    let mut ch =
        ClickHouseSink::connect(&ClickHouseConfig { url, database: database.clone(), ..ClickHouseConfig::default() })
            .unwrap();
    for (table, ints, decs, sql) in [
        (
            "fills",
            &["qty"][..],
            &["realized", "fees_total", "stamp_duty", "commission"][..],
            "SELECT count(), sum(qty), sum(realized), sum(fees_total), sum(stamp_duty), sum(commission) \
             FROM fills FINAL WHERE deleted = 0",
        ),
        (
            "positions",
            &["qty"][..],
            &["realized", "fees", "unrealized", "total"][..],
            "SELECT count(), sum(qty), sum(realized), sum(fees), sum(unrealized), sum(total) \
             FROM positions FINAL WHERE deleted = 0",
        ),
        (
            "account_pnl_minute",
            &["fills"][..],
            &["realized", "fees", "net"][..],
            "SELECT count(), sum(fills), sum(realized), sum(fees), sum(net) FROM account_pnl_minute FINAL WHERE deleted = 0",
        ),
        ("dead_letters", &[][..], &[][..], "SELECT count() FROM dead_letters FINAL"),
    ] {
        let want = parquet_sums(&out, table, ints, decs);
        assert!(!want.starts_with("0\t") && want != "0", "{table}: no rows in Parquet");
        assert_eq!(clickhouse_sums(&mut ch, sql), want, "{table}: ClickHouse against Parquet");
    }
    // Every input line is in the event log once, and the sink's progress is the last epoch.
    assert_eq!(ch.query_text("SELECT count() FROM events FINAL").unwrap().trim(), lines.len().to_string());
    let last_epoch = (lines.len() - 1) / 700 * 700 + 1; // an epoch's version is its first line
    assert_eq!(ch.query_text("SELECT max(epoch) FROM sink_progress FINAL").unwrap().trim(), last_epoch.to_string());
    let _ = ch.query_text(&format!("DROP DATABASE IF EXISTS {database}"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A position row of a generated day (`fills` fills, seed `seed`): a template for tests that
/// write made-up positions.
fn position_of_a_day(fills: usize, seed: u64) -> harbour_dataflows::pnl::PositionRow {
    let gen = GenerateConfig { fills, quotes: fills, seed, ..GenerateConfig::default() };
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&engine_config(500), &metrics, health);
    for (i, raw) in generate(&gen).unwrap().iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
    }
    engine.seal();
    let row = engine.state().positions.rows().next().unwrap().clone();
    row // (the engine borrows the state until it is dropped)
}

/// A flush whose positions carry last fills on 150 trade dates (a book of positions held for
/// months, re-valued at the open): its insert is cut into blocks of at most 100 dates (current
/// releases refuse more in one block) and every row lands.
#[test]
fn a_flush_over_more_than_100_trade_dates_lands_whole() {
    use harbour_dataflows::pnl::PositionRow;
    use harbour_sinks::tables::Change;
    let template = position_of_a_day(300, 23);
    const DAY: i64 = 86_400_000_000_000;
    let positions: Vec<Change<PositionRow>> = (0..150i64)
        .map(|d| {
            let mut row = template.clone();
            row.key.account = format!("HELD-{d:03}").into();
            row.last_fill_ts = template.last_fill_ts - d * DAY;
            Change { row, version: 7, deleted: false }
        })
        .collect();
    let mut ch = sink("dates");
    ch.write(7, &Changes { positions, ..Changes::default() }).unwrap();
    let shown = ch
        .query_text("SELECT count(), uniqExact(trade_date) FROM positions FINAL WHERE account LIKE 'HELD-%'")
        .unwrap();
    assert_eq!(shown, "150\t150\n");
}

/// A database whose `sink_progress` is past every epoch the state folder sealed holds another
/// run's rows: the run refuses to start, naming what to change, rather than insert rows whose
/// versions lose to them under `FINAL`.
#[test]
fn a_database_ahead_of_the_state_folder_is_refused() {
    use harbour::engine::OutputState;
    use harbour::kafka::{ClickHouseEpochSink, EpochSink};
    let mut ch = sink("ahead");
    ch.write(5_000, &Changes::default()).unwrap();
    let mut sink = ClickHouseEpochSink(ch, None);
    let err = sink.resume(&OutputState::default(), 0, 0, 40).unwrap_err();
    assert!(err.contains("holds epoch 5000") && err.contains("another run"), "{err}");
    assert!(err.contains("clickhouse.database"), "{err}");
    assert_eq!(sink.resume(&OutputState::default(), 0, 4_990, 5_000), Ok(4_990));
}

/// A position whose trade date moves (a bust of its latest fill takes it back to an older date;
/// a new day's fill forward) is replaced, not doubled: after merges, and under FINAL with a date
/// filter. And a database whose latest-state tables were created partitioned by trade date
/// (before 2026-11-27) is moved to the new layout at start, rows kept.
#[test]
fn a_row_whose_trade_date_moves_replaces_the_older_one() {
    use harbour_sinks::tables::Change;
    const DAY: i64 = 86_400_000_000_000;
    let mut template = position_of_a_day(200, 29);
    template.key.account = "MOVED".into();
    let at = |version: u64, days_back: i64| {
        let mut row = template.clone();
        row.last_fill_ts = template.last_fill_ts - days_back * DAY;
        Changes { positions: vec![Change { row, version, deleted: false }], ..Changes::default() }
    };
    let check = |ch: &mut ClickHouseSink| {
        // The newer version, dated a day earlier, then the date of the older one.
        let newer = "SELECT count(), any(version) FROM positions FINAL WHERE account = 'MOVED'";
        assert_eq!(ch.query_text(newer).unwrap(), "1\t20\n");
        let older_date =
            ch.query_text("SELECT toString(max(trade_date)) FROM position_history WHERE account = 'MOVED'").unwrap();
        let filtered = format!(
            "SELECT count() FROM positions FINAL WHERE account = 'MOVED' AND trade_date = '{}'",
            older_date.trim()
        );
        assert_eq!(ch.query_text(&filtered).unwrap(), "0\n", "the older row is not shown for its date");
        ch.execute("OPTIMIZE TABLE positions FINAL").unwrap();
        assert_eq!(ch.query_text("SELECT count() FROM positions WHERE account = 'MOVED'").unwrap(), "1\n");
    };
    let mut ch = sink("moved");
    ch.write(10, &at(10, 0)).unwrap();
    ch.write(20, &at(20, 1)).unwrap();
    check(&mut ch);

    // The layout before 2026-11-27: positions partitioned by trade date, holding both rows.
    let mut old = sink("relayout");
    let ddl = old.query_text("SHOW CREATE TABLE positions FORMAT TabSeparatedRaw").unwrap();
    assert!(!ddl.contains("PARTITION BY"), "{ddl}");
    let partitioned = ddl.replace(" ORDER BY (account", " PARTITION BY trade_date ORDER BY (account");
    assert_ne!(partitioned, ddl);
    let make_old_layout = |old: &mut ClickHouseSink| {
        old.execute("DROP TABLE positions").unwrap();
        old.execute(partitioned.trim()).unwrap();
        old.write(10, &at(10, 0)).unwrap();
        old.write(20, &at(20, 1)).unwrap();
        old.execute("OPTIMIZE TABLE positions FINAL").unwrap();
        assert_eq!(
            old.query_text("SELECT count() FROM positions WHERE account = 'MOVED'").unwrap(),
            "2\n",
            "partitioned, the moved row stays beside the older one"
        );
    };
    make_old_layout(&mut old);
    let database = old.query_text("SELECT currentDatabase()").unwrap();
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").unwrap();
    let config = ClickHouseConfig { url, database: database.trim().to_string(), ..ClickHouseConfig::default() };
    let moved_and_whole = || {
        let mut moved = ClickHouseSink::connect(&config).unwrap();
        let key = moved
            .query_text(
                "SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = 'positions'",
            )
            .unwrap();
        assert_eq!(key.trim(), "", "moved to the unpartitioned layout");
        check(&mut moved);
        let left = moved
            .query_text(
                "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'positions\\_\\_%'",
            )
            .unwrap();
        assert_eq!(left, "0\n");
        moved
    };
    let mut moved = moved_and_whole();

    // A start that stopped inside the swap, after the first of its two renames (18.16 makes one
    // RENAME of two tables in two steps): the next start puts the old table back and moves it
    // again. (It dropped the old table, leaving the empty one its migration had just created.)
    make_old_layout(&mut moved);
    let statements = harbour_sinks::clickhouse::schema::move_statements("positions");
    moved.execute(&statements[0]).unwrap();
    moved.execute(&statements[1]).unwrap();
    assert!(statements[2].starts_with("RENAME TABLE positions TO positions__partitioned, "), "{}", statements[2]);
    moved.execute("RENAME TABLE positions TO positions__partitioned").unwrap();
    let mut moved = moved_and_whole();

    // What a release before 2026-11-28 left of that: the old table dropped, the rows in the copy
    // alone, an empty `positions` from its migration. The next start puts the copy in place.
    make_old_layout(&mut moved);
    moved.execute(&statements[0]).unwrap();
    moved.execute(&statements[1]).unwrap();
    moved.execute("DROP TABLE positions").unwrap();
    moved.execute(&ddl).unwrap();
    moved_and_whole();
}

/// A database whose event log and dead letters were made without a trade date (before
/// 2026-11-29) has them moved at start to tables partitioned by it, rows kept, each dated by its
/// message's `ts` in Hong Kong time (else 1970-01-01); rows written since land under their own
/// dates, and writing them again doubles nothing.
#[test]
fn an_event_log_made_without_trade_dates_is_moved_to_dated_partitions() {
    use harbour_dataflows::validate::DeadLetter;
    use harbour_sinks::tables::SourceEvent;
    let mut old = sink("undated");
    let database = old.query_text("SELECT currentDatabase()").unwrap();
    let fill = r#"{"type":"fill","exec_id":"E1","ts":"2026-03-02T01:30:00+08:00"}"#;
    let quote = r#"{"type":"quote", "symbol": "00700", "ts" : "2026-03-01T20:30:00Z"}"#;
    old.execute("DROP TABLE events").unwrap();
    old.execute(
        "CREATE TABLE events (source String, position UInt64, type String, accepted UInt8, reason_code String, \
         raw String, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY (source, position)",
    )
    .unwrap();
    old.execute(&format!(
        "INSERT INTO events VALUES ('f/0', 1, 'fill', 1, '', '{fill}', 3), ('f/0', 2, '', 0, 'parse', 'not json', 3), \
         ('m/0', 1, 'quote', 1, '', '{quote}', 3)"
    ))
    .unwrap();
    // A log over more dates than one INSERT may touch on current releases: moved by chunks.
    let spread: Vec<String> = (0..150)
        .map(|i| {
            let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + chrono::Days::new(i);
            format!("('s/0', {i}, 'fill', 1, '', '{{\"ts\":\"{day}T10:00:00+08:00\"}}', 3)")
        })
        .collect();
    old.execute(&format!("INSERT INTO events VALUES {}", spread.join(", "))).unwrap();
    old.execute("DROP TABLE dead_letters").unwrap();
    old.execute(
        "CREATE TABLE dead_letters (source String, position UInt64, code String, reason String, raw String, \
         version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY (source, position)",
    )
    .unwrap();
    old.execute(&format!(
        "INSERT INTO dead_letters VALUES ('f/0', 2, 'parse', 'bad', 'not json', 3), ('m/0', 1, 'x', 'y', '{quote}', 3)"
    ))
    .unwrap();

    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").unwrap();
    let config = ClickHouseConfig { url, database: database.trim().to_string(), ..ClickHouseConfig::default() };
    let mut moved = ClickHouseSink::connect(&config).unwrap();
    let days = |d: &str| {
        let date: chrono::NaiveDate = d.parse().unwrap();
        (date - chrono::NaiveDate::default()).num_days()
    };
    let (mar2, mar3) = (days("2026-03-02"), days("2026-03-03"));
    let dated = |ch: &mut ClickHouseSink, table: &str| {
        ch.query_text(&format!(
            "SELECT source, position, toUInt16(trade_date) FROM {table} FINAL ORDER BY source, position"
        ))
        .unwrap()
    };
    let spread_dates =
        "SELECT count(), uniqExact(trade_date), toString(min(trade_date)) FROM events WHERE source = 's/0'";
    assert_eq!(moved.query_text(spread_dates).unwrap(), "150\t150\t2025-01-01\n");
    let dated_events = format!("f/0\t1\t{mar2}\nf/0\t2\t0\nm/0\t1\t{mar2}\n");
    let shown = dated(&mut moved, "events");
    assert!(shown.starts_with(&dated_events), "{shown}");
    assert_eq!(dated(&mut moved, "dead_letters"), format!("f/0\t2\t0\nm/0\t1\t{mar2}\n"));
    for table in ["events", "dead_letters"] {
        let key = moved
            .query_text(&format!(
                "SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = '{table}'"
            ))
            .unwrap();
        assert_eq!(key.trim(), "trade_date", "{table}");
    }
    let left = moved
        .query_text("SELECT count() FROM system.tables WHERE database = currentDatabase() AND position(name, '__') > 0")
        .unwrap();
    assert_eq!(left, "0\n");

    // Rows written now carry the engine's dates; the same epoch written again doubles nothing.
    let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 3).unwrap();
    let changes = Changes {
        events: vec![SourceEvent {
            source: "f/0".into(),
            position: 7,
            trade_date: day,
            kind: "",
            code: "parse".into(),
            raw: "nope".into(),
            version: 9,
        }],
        dead_letters: vec![DeadLetter {
            source: "f/0".into(),
            position: 7,
            raw: "nope".into(),
            code: "parse".into(),
            reason: "bad".into(),
            trade_date: day,
        }],
        ..Changes::default()
    };
    moved.write(9, &changes).unwrap();
    moved.write(9, &changes).unwrap();
    for table in ["events", "dead_letters"] {
        let q =
            format!("SELECT toUInt16(trade_date), count() FROM {table} FINAL WHERE source = 'f/0' AND position = 7 GROUP BY trade_date");
        assert_eq!(moved.query_text(&q).unwrap(), format!("{mar3}\t1\n"), "{table}");
    }
}

/// A flush larger than `clickhouse.max_insert_rows` goes in as several inserts (counted as the
/// parts they make, merges stopped), every row landing once.
#[test]
fn a_large_flush_goes_in_inserts_of_at_most_max_insert_rows() {
    use harbour_dataflows::pnl::PositionRow;
    use harbour_sinks::tables::Change;
    let template = position_of_a_day(100, 31);
    let positions: Vec<Change<PositionRow>> = (0..2_500)
        .map(|i| {
            let mut row = template.clone();
            row.key.account = format!("BULK-{i:05}").into();
            Change { row, version: 3, deleted: false }
        })
        .collect();
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").unwrap();
    let config = ClickHouseConfig {
        url,
        database: format!("harbour_test_bulk_{}", std::process::id()),
        max_insert_rows: 1_000,
        ..ClickHouseConfig::default()
    };
    let mut ch = ClickHouseSink::connect(&config).unwrap();
    ch.execute("SYSTEM STOP MERGES positions").unwrap();
    ch.write(3, &Changes { positions, ..Changes::default() }).unwrap();
    let parts = ch
        .query_text(
            "SELECT count(), sum(rows) FROM system.parts WHERE database = currentDatabase() AND table = 'positions' AND active",
        )
        .unwrap();
    assert_eq!(parts, "3\t2500\n", "1,000 + 1,000 + 500 rows");
    assert_eq!(ch.query_text("SELECT count() FROM positions FINAL WHERE account LIKE 'BULK-%'").unwrap(), "2500\n");
    ch.execute("SYSTEM START MERGES positions").unwrap();
}

/// `n` positions `<prefix>-000000`… (quantities varied), to write at `version`.
fn many_positions(prefix: &str, n: usize, version: u64) -> Changes {
    use harbour_sinks::tables::Change;
    let template = position_of_a_day(100, 37);
    let positions = (0..n)
        .map(|i| {
            let mut row = template.clone();
            row.key.account = format!("{prefix}-{i:06}").into();
            row.qty = 100 * (i as i64 % 997 + 1);
            Change { row, version, deleted: false }
        })
        .collect();
    Changes { positions, ..Changes::default() }
}

/// Connects with `config` and writes `changes` at `epoch` on a thread: it must be done within
/// `wait_s` (a write that retried one INSERT as it was never was), after at least one failed
/// attempt. Returns the sink.
fn written_after_failures(config: &ClickHouseConfig, epoch: u64, changes: Changes, wait_s: u64) -> ClickHouseSink {
    let mut ch = ClickHouseSink::connect(config).unwrap();
    let failures = ch.retry_counter();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = ch.write(epoch, &changes);
        let _ = tx.send(r.map(|_| ch));
    });
    let ch = rx
        .recv_timeout(std::time::Duration::from_secs(wait_s))
        .expect("the INSERT is still being retried as it is")
        .unwrap();
    assert!(failures.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the whole INSERT never failed");
    ch
}

/// An INSERT refused for memory (code 241: here the query limit `max_memory_usage`, set through
/// `[clickhouse.settings]`) is sent again in halves until the parts fit: the same INSERT retried
/// was refused for ever.
#[test]
fn an_insert_refused_for_memory_goes_in_halves() {
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").unwrap();
    let config = ClickHouseConfig {
        url,
        database: format!("harbour_test_memory_{}", std::process::id()),
        settings: [("max_memory_usage".to_string(), "90000000".to_string())].into(),
        ..ClickHouseConfig::default()
    };
    let mut ch = written_after_failures(&config, 4, many_positions("MEM", 400_000, 4), 180);
    assert_eq!(ch.query_text("SELECT count() FROM positions FINAL WHERE account LIKE 'MEM-%'").unwrap(), "400000\n");
}

/// A table under one of Harbour's names with other columns (made by hand, by another tool) is
/// refused at start, naming what differs: `CREATE TABLE IF NOT EXISTS` left it as it was, and
/// the sink wrote RowBinary rows into it (refused for a missing column, or read as another type
/// of the same width).
#[test]
fn a_table_with_other_columns_under_a_harbour_name_is_refused_at_start() {
    let mut ch = sink("shape");
    ch.execute("DROP TABLE fills").unwrap();
    ch.execute(
        "CREATE TABLE fills (trade_date Date, exec_id String, qty String, version UInt64, note String) \
         ENGINE = ReplacingMergeTree(version) ORDER BY exec_id",
    )
    .unwrap();
    let database = ch.query_text("SELECT currentDatabase()").unwrap().trim().to_string();
    let config = ClickHouseConfig {
        url: std::env::var("HARBOUR_CLICKHOUSE_URL").unwrap(),
        database,
        ..ClickHouseConfig::default()
    };
    let error = ClickHouseSink::connect(&config).err().expect("a fills table of other columns accepted").to_string();
    assert!(error.contains("fills.qty is String, Harbour writes Int64"), "{error}");
    assert!(error.contains("fills.price is missing (Harbour writes Decimal(38, 8))"), "{error}");
    assert!(!error.contains("note") && !error.contains("positions."), "{error}");
    // The tables as the migrations make them pass (the first connection above did).
    ch.execute("DROP TABLE fills").unwrap();
    assert!(ClickHouseSink::connect(&config).is_ok());
}

/// A process killed when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to `url`, which must fail at once with an error naming `cause`: a TLS handshake
/// refused is the configuration to fix, not an outage to wait out (it was retried for ever, logged
/// as "client error (Connect)" only).
///
/// A TLS hello sent to ClickHouse's plain HTTP port is sometimes left unanswered (the server
/// waits for the rest of a request it cannot parse): that attempt is abandoned at `timeout_ms`
/// and retried, so the timeout here is short (at the default minute, two such attempts in a row
/// outlasted the two minutes allowed).
fn refused_at_connect(url: &str, cause: &str) {
    let config = ClickHouseConfig {
        url: url.to_string(),
        max_backoff_ms: 100,
        timeout_ms: 2_000,
        ..ClickHouseConfig::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(ClickHouseSink::connect(&config).err().map(|e| e.to_string())));
    let error = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("still retrying a refused TLS handshake after two minutes")
        .expect("connected through a refused TLS handshake");
    assert!(error.contains(cause), "{error}");
    assert!(error.contains("creating the database"), "{error}");
}

#[test]
fn an_untrusted_certificate_or_https_to_a_plain_port_is_refused_not_retried() {
    // `https://` for the plain HTTP port of the real server.
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").expect("these tests need ClickHouse: run `bash deploy/test.sh`");
    refused_at_connect(&url.replacen("http://", "https://", 1), "wrong version number");

    // A TLS server with a self-signed certificate (openssl s_server).
    let dir = std::env::temp_dir().join(format!("harbour-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (deploy/deps.sh installs it)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = Child(
        std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 30, "openssl s_server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // (OpenSSL 3 adds "(self-signed certificate)", 1.1 "(self signed certificate)".)
    refused_at_connect(&format!("https://127.0.0.1:{port}"), "certificate verify failed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A TCP proxy to `upstream` that never passes on a request larger than `limit` bytes (counted
/// from the last byte the server sent back on that connection): the server never sees it whole,
/// so it never answers, as a server too slow for that insert. Smaller requests pass untouched.
fn stalling_proxy(upstream: std::net::SocketAddr, limit: usize) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(upstream) else { continue };
            let sent = Arc::new(AtomicUsize::new(0));
            let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = sent.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    // Past the limit the request is swallowed: read and dropped until the client
                    // gives up and closes.
                    if up.fetch_add(n, Ordering::SeqCst) + n <= limit && to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown(Shutdown::Both);
            });
            let (mut from_server, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf) {
                    sent.store(0, Ordering::SeqCst);
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

/// An INSERT that does not finish within `clickhouse.timeout_ms` (here one the server never sees
/// whole, behind a proxy) is sent again in halves until the parts get through: the same INSERT
/// retried timed out for ever, and the pipeline stood still behind it.
#[test]
fn an_insert_that_times_out_goes_in_halves() {
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").unwrap();
    let upstream = url.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    let config = ClickHouseConfig {
        url: format!("http://127.0.0.1:{}", stalling_proxy(upstream, 96 * 1024)),
        database: format!("harbour_test_slow_{}", std::process::id()),
        timeout_ms: 500,
        max_backoff_ms: 100,
        ..ClickHouseConfig::default()
    };
    let mut ch = written_after_failures(&config, 5, many_positions("SLOW", 16_000, 5), 120);
    assert_eq!(ch.query_text("SELECT count() FROM positions FINAL WHERE account LIKE 'SLOW-%'").unwrap(), "16000\n");
    assert_eq!(
        ch.query_text("SELECT count() FROM position_history FINAL WHERE account LIKE 'SLOW-%'").unwrap(),
        "16000\n"
    );
}
