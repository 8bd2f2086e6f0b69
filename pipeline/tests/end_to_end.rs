//! End to end: a generated day through the engine equals a batch recomputation; the binary's
//! `run` and `replay` write the same Parquet tables, which read back consistently.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow_array::{Array, Decimal128Array, Int64Array, RecordBatch, StringArray};
use common::engine_config;
use harbour::engine::{self, OutputState, RunStats};
use harbour::metrics::{Health, Metrics};
use harbour_dataflows::rollups::Group;
use harbour_dataflows::ticks::SpreadTables;
use harbour_dataflows::validate::Validator;
use harbour_sources::contract::parse_line;
use harbour_sources::file::SourceLine;
use harbour_sources::generate::{generate, GenerateConfig};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rust_decimal::Decimal;

fn day(fills: usize) -> Vec<String> {
    generate(&GenerateConfig { fills, quotes: fills * 3, ..GenerateConfig::default() }).expect("generate")
}

fn run(lines: &[String], epoch_events: usize) -> (OutputState, RunStats) {
    let source = lines
        .iter()
        .enumerate()
        .map(|(i, raw)| Ok(SourceLine { source: "day.jsonl".into(), position: i as u64 + 1, raw: raw.clone() }));
    engine::run(source, &engine_config(epoch_events), &Metrics::default(), &Arc::new(Health::default())).expect("run")
}

#[test]
fn generated_day_equals_batch_recomputation() {
    let lines = day(4000);
    let (state, stats) = run(&lines, 700);

    // The batch side: the same rules, then a from-scratch fold.
    let source_lines = || {
        lines.iter().enumerate().map(|(i, raw)| SourceLine {
            source: "day.jsonl".into(),
            position: i as u64 + 1,
            raw: raw.clone(),
        })
    };
    let reference = harbour::verify::reference(source_lines(), &engine_config(700));
    let mut validator = Validator::new(SpreadTables::default());
    let rejected = source_lines()
        .filter(|l| parse_line(&l.raw, l.position).and_then(|e| validator.accept(e)).is_err())
        .count() as u64;
    let verified = harbour::verify::compare_with(&state, &reference);
    assert!(verified.mismatches.is_empty(), "{:?}", verified.mismatches);
    assert!(verified.rows > 4000);

    assert_eq!(stats.dead_letters, rejected);
    assert!(rejected > 0, "the sample day mixes in invalid lines");
    assert_eq!(state.dead_letters.len() as u64, stats.dead_letters);
    assert!(state.dead_letters.iter().all(|d| d.position >= 1 && !d.reason.is_empty()));
    let rows: Vec<_> = state.positions.rows().cloned().collect();
    assert!(rows.len() > 10);
    assert_eq!(rows, reference.positions);
    assert_eq!(state.fills.rows().cloned().collect::<Vec<_>>(), reference.fills);
    assert_eq!(state.rollups.rows().cloned().collect::<Vec<_>>(), reference.rollups);
    assert_eq!(state.minutes.rows().cloned().collect::<Vec<_>>(), reference.minutes);
    assert_eq!(state.marks.rows().cloned().collect::<Vec<_>>(), reference.marks);
    assert!(!state.orders.is_empty() && state.instruments.len() >= 8);

    // Account totals add up to the desk, and realized over fills equals realized over positions.
    let desk_realized: Decimal = rows.iter().map(|r| r.realized).sum();
    let acct_realized: Decimal =
        state.rollups.rows().filter(|(g, _)| matches!(g, Group::Account(_))).map(|(_, t)| t.realized).sum();
    assert_eq!(desk_realized, acct_realized);
}

#[test]
fn epoch_size_changes_versions_not_results() {
    let lines = day(1500);
    let (a, _) = run(&lines, 1);
    let (b, sb) = run(&lines, 100_000);
    assert_eq!(sb.epochs, 1);
    assert_eq!(a.positions.rows().collect::<Vec<_>>(), b.positions.rows().collect::<Vec<_>>());
    assert_eq!(a.fills.rows().collect::<Vec<_>>(), b.fills.rows().collect::<Vec<_>>());
    assert_eq!(a.rollups.rows().collect::<Vec<_>>(), b.rollups.rows().collect::<Vec<_>>());
    // Versions grow with the input: with one line per epoch they are line counts.
    let max_version = a.positions.versioned().iter().map(|v| v.version).max().unwrap();
    assert!(max_version > 1 && max_version <= lines.len() as u64);
}

fn read(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow_select_concat(&batches)
}

fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    assert!(!batches.is_empty());
    if batches.len() == 1 {
        return batches[0].clone();
    }
    let schema = batches[0].schema();
    let cols = (0..schema.fields().len())
        .map(|i| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            arrow_select::concat::concat(&arrays).unwrap()
        })
        .collect();
    RecordBatch::try_new(schema, cols).unwrap()
}

fn dec_sum(b: &RecordBatch, col: &str) -> i128 {
    let a = b.column_by_name(col).unwrap().as_any().downcast_ref::<Decimal128Array>().unwrap();
    a.iter().flatten().sum()
}

fn harbour() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harbour"));
    c.env("HARBOUR__METRICS__LISTEN", "").env("RUST_LOG", "warn");
    c
}

#[test]
fn binary_run_then_replay_write_the_same_tables() {
    let dir = std::env::temp_dir().join(format!("harbour-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (dir.join("run"), dir.join("replay"));
    let out = harbour().args(["run", "--fills", "2000", "--out"]).arg(&a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("P&L by account") && summary.contains("Top positions"), "{summary}");
    // The sample day runs with a generated history and the sample limits: risk and alerts show.
    assert!(summary.contains("Risk (HKD") && summary.contains("Limit alerts:"), "{summary}");
    assert!(a.join("history.csv").exists() && a.join("limits.toml").exists());
    assert!(read(&a.join("alerts.parquet")).num_rows() > 0 && read(&a.join("risk.parquet")).num_rows() > 0);
    let out = harbour().arg("replay").arg(a.join("input.jsonl")).arg("--verify").arg("--out").arg(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rows equal a from-scratch recomputation"));

    for table in
        ["positions", "fills", "account_rollups", "strategy_rollups", "account_pnl_minute", "orders", "dead_letters"]
    {
        let (x, y) = (read(&a.join(format!("{table}.parquet"))), read(&b.join(format!("{table}.parquet"))));
        assert_eq!(x, y, "table {table} differs between run and replay");
    }
    let positions = read(&a.join("positions.parquet"));
    let fills = read(&a.join("fills.parquet"));
    let accounts = read(&a.join("account_rollups.parquet"));
    let minutes = read(&a.join("account_pnl_minute.parquet"));
    let dead = read(&a.join("dead_letters.parquet"));
    assert!(positions.num_rows() > 0 && dead.num_rows() > 0);
    // Sums agree across tables, to the last decimal place kept.
    assert_eq!(dec_sum(&positions, "fees"), dec_sum(&fills, "fees_total"));
    assert_eq!(dec_sum(&positions, "fees"), dec_sum(&accounts, "fees"));
    assert_eq!(dec_sum(&positions, "realized"), dec_sum(&accounts, "realized"));
    assert_eq!(dec_sum(&minutes, "fees"), dec_sum(&fills, "fees_total"));
    let qty = positions.column_by_name("fills").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(qty.iter().flatten().sum::<i64>() as usize, fills.num_rows());
    let codes = dead.column_by_name("code").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    assert!(codes.iter().flatten().any(|c| c == "parse"));

    // Standard input works too.
    let input = std::fs::read(a.join("input.jsonl")).unwrap();
    let mut child = harbour()
        .args(["replay", "-", "--out"])
        .arg(dir.join("stdin"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(read(&dir.join("stdin").join("positions.parquet")), positions);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_names_the_key() {
    let out = harbour().env("HARBOUR__PIPELINE__EPOCH_EVENTS", "0").args(["run", "--fills", "10"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline.epoch_events"));
}

#[test]
fn metrics_and_health_are_served() {
    use std::io::{Read, Write};
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    metrics.event("fill");
    metrics.dead_letter("off_tick");
    let addr = harbour::metrics::serve("127.0.0.1:0".parse().unwrap(), metrics, health).unwrap();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let m = get("/metrics");
    // The format Prometheus is told it is: prometheus-client writes OpenMetrics (`# EOF`).
    assert!(m.to_ascii_lowercase().contains("content-type: application/openmetrics-text; version=1.0.0"), "{m}");
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    assert!(m.contains("harbour_source_events_total{type=\"fill\"} 1"), "{m}");
    assert!(m.contains("harbour_source_dead_letters_total{reason=\"off_tick\"} 1"), "{m}");
    assert!(m.contains("harbour_pipeline_epoch_lag_seconds"), "{m}");
    assert!(get("/health").contains("\"status\":\"ok\""));
}

/// The worked example of ../shared/HKEX.md §4 through the whole pipeline (parse, rules, dataflow,
/// marks), with only the fills' own commissions as costs: to the cent.
#[test]
fn hkex_worked_example_end_to_end() {
    use rust_decimal_macros::dec;
    let zero_costs: harbour_dataflows::fees::CostSchedules = serde_json::from_str(
        r#"[{"name":"commission-only","effective_from":"2000-01-01","stamp_duty_rate":"0","sfc_levy_rate":"0",
            "afrc_levy_rate":"0","trading_fee_rate":"0","settlement_fee_rate":"0","commission_rate":"0"}]"#,
    )
    .unwrap();
    let lines = [
        r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#,
        r#"{"type":"fill","exec_id":"E1","order_id":"O1","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"1000","price":"10","ts":"2026-03-02T09:30:00+08:00","commission":"5"}"#,
        r#"{"type":"fill","exec_id":"E2","order_id":"O2","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"1000","price":"12","ts":"2026-03-02T09:31:00+08:00","commission":"5"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:31:30+08:00","last":"11.5"}"#,
        r#"{"type":"fill","exec_id":"E3","order_id":"O3","account":"A","strategy":"S","symbol":"00700","side":"SELL","qty":"500","price":"13","ts":"2026-03-02T09:32:00+08:00","commission":"5"}"#,
        r#"{"type":"fill","exec_id":"E4","order_id":"O4","account":"A","strategy":"S","symbol":"00700","side":"SELL","qty":"2500","price":"11","ts":"2026-03-02T09:33:00+08:00","commission":"10"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T09:34:00+08:00","last":"10.5"}"#,
    ];
    let mut config = engine_config(1);
    config.graph.schedules = Arc::new(zero_costs);
    let source = lines
        .iter()
        .enumerate()
        .map(|(i, raw)| Ok(SourceLine { source: "example".into(), position: i as u64 + 1, raw: raw.to_string() }));
    let (state, stats) = engine::run(source, &config, &Metrics::default(), &Arc::new(Health::default())).unwrap();
    assert_eq!(stats.dead_letters, 0);
    let rows: Vec<_> = state.positions.rows().collect();
    assert_eq!(rows.len(), 1);
    let p = rows[0];
    assert_eq!((p.qty, p.avg_price), (-1000, Some(dec!(11))));
    assert_eq!(p.realized, dec!(1000));
    assert_eq!(p.fees, dec!(25));
    assert_eq!(p.realized - p.fees, dec!(975)); // nautilus's realized
    assert_eq!(p.unrealized, dec!(500));
    assert_eq!(p.total, dec!(1475));
    assert_eq!(p.market_value, dec!(-10500));
    let realized: Vec<Decimal> = {
        let mut f: Vec<_> = state.fills.rows().collect();
        f.sort_by_key(|r| r.fill.ts);
        f.iter().map(|r| r.step.realized).collect()
    };
    assert_eq!(realized, vec![dec!(0), dec!(0), dec!(1000), dec!(0)]);
    let account = state.rollups.rows().find(|(g, _)| *g == Group::Account("A".into())).unwrap();
    assert_eq!((account.1.gross, account.1.net, account.1.total), (dec!(10500), dec!(-10500), dec!(1475)));
}

/// A line whose bytes are not UTF-8 (here in the account name) is a dead letter `not_utf8`, not a
/// position under a name with U+FFFD in it; the lines around it are read as usual.
#[test]
fn a_line_that_is_not_utf8_is_a_dead_letter() {
    use harbour_sources::file::Replay;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(
        br#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#,
    );
    bytes.push(b'\n');
    let fill = |exec: &str, account: &[u8], symbol: &str, price: &str| {
        let mut l = format!(r#"{{"type":"fill","exec_id":"{exec}","order_id":"O1","account":""#).into_bytes();
        l.extend_from_slice(account);
        l.extend_from_slice(
            format!(r#"","strategy":"S","symbol":"{symbol}","side":"BUY","qty":"400","price":"{price}","ts":"2026-03-02T09:30:00+08:00"}}"#)
                .as_bytes(),
        );
        l.push(b'\n');
        l
    };
    bytes.extend(fill("E1", b"AC\xffC1", "00700", "385.2"));
    bytes.extend(fill("E2", b"ACC1", "00700", "385.2"));
    // An instrument whose name has a bad byte: refused, so its fills are of an unknown symbol.
    bytes.extend_from_slice(
        b"{\"type\":\"instrument\",\"symbol\":\"00005\",\"name\":\"HSBC\xff\",\"lot_size\":400,\"currency\":\"HKD\",\"stamp_duty\":true}\n",
    );
    bytes.extend(fill("E3", b"ACC1", "00005", "60.05"));
    let lines = || Replay::from_reader("bytes.jsonl", std::io::Cursor::new(bytes.clone()));
    let (state, stats) =
        engine::run(lines(), &engine_config(10), &Metrics::default(), &Arc::new(Health::default())).expect("run");
    assert_eq!(stats.dead_letters, 3);
    let codes: Vec<(&str, u64)> = state.dead_letters.iter().map(|d| (d.code.as_str(), d.position)).collect();
    assert_eq!(codes, vec![("not_utf8", 2), ("not_utf8", 4), ("unknown_symbol", 5)]);
    let accounts: Vec<String> = state.positions.rows().map(|p| p.key.account.to_string()).collect();
    assert_eq!(accounts, vec!["ACC1".to_string()]);
    // `--verify` applies the same rule: the recomputation agrees (it took the refused lines in).
    let reference = harbour::verify::reference(lines().map(|l| l.expect("line")), &engine_config(10));
    let verified = harbour::verify::compare_with(&state, &reference);
    assert!(verified.mismatches.is_empty(), "{:?}", verified.mismatches);
}

/// A Parquet write that fails part-way (here: one table's temporary file cannot be created)
/// replaces none of the tables: the previous set stays whole, and no temporary file is left.
#[test]
fn a_failed_parquet_write_leaves_the_previous_tables_whole() {
    use harbour::state::snapshot_refs;
    use harbour_sinks::parquet::ParquetSink;
    let dir = std::env::temp_dir().join(format!("harbour-parquet-set-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (small, _) = run(&day(200), 100);
    let (large, _) = run(&day(600), 100);
    let sink = ParquetSink::new(&dir);
    sink.write(&snapshot_refs(&small)).unwrap();
    let positions = read(&dir.join("positions.parquet")).num_rows();
    assert_eq!(positions, small.positions.len());
    // The orders table cannot be written: its temporary name is taken by a folder.
    std::fs::create_dir(dir.join("orders.parquet.tmp")).unwrap();
    assert!(sink.write(&snapshot_refs(&large)).is_err());
    assert_eq!(read(&dir.join("positions.parquet")).num_rows(), positions, "positions not replaced");
    assert_eq!(read(&dir.join("fills.parquet")).num_rows(), small.fills.len(), "fills not replaced");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && n != "orders.parquet.tmp")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir(dir.join("orders.parquet.tmp")).unwrap();
    sink.write(&snapshot_refs(&large)).unwrap();
    assert_eq!(read(&dir.join("positions.parquet")).num_rows(), large.positions.len());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Two writers on one folder (a replay beside a Kafka run) take turns: every file decodes, and the
/// set in place is one writer's whole (positions and fills of the same run). Without the folder's
/// lock they truncated each other's temporary files (holes of zeros renamed into place) and failed
/// on renames the other had made.
#[test]
fn two_parquet_writers_on_one_folder_take_turns() {
    use harbour::state::snapshot_refs;
    use harbour_sinks::parquet::ParquetSink;
    let dir = std::env::temp_dir().join(format!("harbour-parquet-two-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (small, _) = run(&day(300), 100);
    let (large, _) = run(&day(900), 100);
    std::thread::scope(|scope| {
        for state in [&small, &large] {
            let dir = &dir;
            scope.spawn(move || {
                let sink = ParquetSink::new(dir);
                for _ in 0..8 {
                    sink.write(&snapshot_refs(state)).expect("a write");
                }
            });
        }
    });
    let positions = read(&dir.join("positions.parquet")).num_rows();
    let fills = read(&dir.join("fills.parquet")).num_rows();
    assert!(
        (positions, fills) == (small.positions.len(), small.fills.len())
            || (positions, fills) == (large.positions.len(), large.fills.len()),
        "{positions} positions and {fills} fills are not one writer's set"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// After a restart, the Parquet tables are not rewritten until the restored tables reach the last
/// epoch the previous run logged (its files may hold it): never older tables over newer ones.
#[test]
fn parquet_tables_wait_for_the_last_runs_epoch_after_a_restart() {
    use harbour::kafka::{EpochSink, ParquetEpochSink};
    use harbour_sinks::parquet::ParquetSink;
    use harbour_sinks::tables::Changes;
    let dir = std::env::temp_dir().join(format!("harbour-parquet-hold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut sink = ParquetEpochSink::new(ParquetSink::new(&dir)).every(std::time::Duration::ZERO);
    sink.start_from(&OutputState::default());
    sink.hold_until(50);
    sink.write_changes(10, Changes::default()).unwrap();
    sink.finish().unwrap();
    assert!(!dir.join("positions.parquet").exists(), "nothing written before epoch 50");
    sink.write_changes(50, Changes::default()).unwrap();
    assert!(dir.join("positions.parquet").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// SIGTERM while `kafka run` waits for an unreachable ClickHouse at start (its connection
/// retries for as long as it takes) ends the process: the stop handler, which only the run
/// itself reads, was installed first and swallowed the signal, so it waited for SIGKILL.
#[test]
fn sigterm_while_waiting_for_clickhouse_at_start_ends_the_process() {
    let dir = std::env::temp_dir().join(format!("harbour-term-{}", std::process::id()));
    let mut run = harbour()
        .env_remove("HARBOUR_REDIS_URL")
        .env("HARBOUR_CLICKHOUSE_URL", "http://127.0.0.1:1")
        .env("HARBOUR_KAFKA_BOOTSTRAP", "127.0.0.1:1")
        .args(["kafka", "run", "--state"])
        .arg(dir.join("state"))
        .arg("--out")
        .arg(dir.join("out"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(run.try_wait().unwrap().is_none(), "kafka run ended without ClickHouse instead of waiting for it");
    assert!(Command::new("kill").arg("-TERM").arg(run.id().to_string()).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            run.kill().unwrap();
            run.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.expect("kafka run was still waiting for ClickHouse 15 s after SIGTERM");
    assert!(!status.success(), "{status:?}");
}

/// Trades at one trade time (a sweep through three levels) mark at the last line's price, in
/// any epoch grouping, and `--verify`'s batch recomputation agrees (the largest price won until
/// 2026-11-28: a mark no input had shown).
#[test]
fn quotes_at_one_time_mark_at_the_later_lines_price() {
    let lines: Vec<String> = [
        r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#,
        r#"{"type":"fill","exec_id":"E1","order_id":"O1","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"1000","price":"385.000","ts":"2026-03-02T10:00:00+08:00"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T10:00:01+08:00","last":"385.400"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T10:00:01+08:00","last":"385.200"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T10:00:01+08:00","last":"385.000"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T10:00:02+08:00","bid":"385.000","ask":"385.400"}"#,
        r#"{"type":"quote","symbol":"00700","ts":"2026-03-02T10:00:02+08:00","bid":"385.200","ask":"385.400"}"#,
    ]
    .map(String::from)
    .to_vec();
    for epoch in [1, 100] {
        let (state, _) = run(&lines, epoch);
        let marks: Vec<_> = state.marks.rows().collect();
        assert_eq!(marks.len(), 1);
        assert_eq!(format!("{:?}", marks[0].1.price), "Some(385.000)", "epochs of {epoch}: {marks:?}");
        let position = state.positions.rows().next().expect("a position");
        assert_eq!(position.unrealized, Decimal::ZERO, "valued at 385.000");
        let source = lines.iter().enumerate().map(|(i, raw)| SourceLine {
            source: "day.jsonl".into(),
            position: i as u64 + 1,
            raw: raw.clone(),
        });
        let reference = harbour::verify::reference(source, &engine_config(epoch));
        let verified = harbour::verify::compare_with(&state, &reference);
        assert!(verified.mismatches.is_empty(), "{:?}", verified.mismatches);
    }
}
