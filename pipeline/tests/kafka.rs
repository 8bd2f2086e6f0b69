//! Kafka end to end on a real Apache Kafka broker (the one `deploy/kafka.sh` starts; the README's
//! test command exports `HARBOUR_KAFKA_BOOTSTRAP`). Every test uses its own topics and group.
//!
//! - The Kafka path gives the tables of a file replay of the same day, commits every partition to
//!   its end, and sends every poison message to the dead-letter topic with its headers.
//! - Crash: the binary is killed with SIGKILL at random moments at least ten times while it works,
//!   restarted each time; the final Parquet tables equal those of an uninterrupted file replay and
//!   the committed offsets are at the end of every partition.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use common::{assert_same_tables, engine_config, money, Compare};
use harbour::engine::{self, OutputState};
use harbour::kafka::{self, EpochSink, KafkaRun, ParquetEpochSink};
use harbour::metrics::{Health, Metrics};
use harbour_sinks::clickhouse::{ClickHouseConfig, ClickHouseSink};
use harbour_sinks::parquet::ParquetSink;
use harbour_sources::file::SourceLine;
use harbour_sources::generate::{generate, GenerateConfig};
use harbour_sources::kafka::{create_topics, publish_lines, InputConsumer, KafkaConfig, Offsets, Topics};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::Message;

fn bootstrap() -> String {
    std::env::var("HARBOUR_KAFKA_BOOTSTRAP").expect(
        "these tests need a Kafka broker: run `bash deploy/test.sh` (it starts one), \
         or `eval \"$(deploy/kafka.sh start)\"` first",
    )
}

fn kafka_config(name: &str) -> KafkaConfig {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let p = format!("test.{name}.{}.{nanos}", std::process::id());
    KafkaConfig {
        bootstrap: bootstrap(),
        group_id: format!("{p}.group"),
        topics: Topics {
            fills: format!("{p}.fills"),
            orders: format!("{p}.orders"),
            market: format!("{p}.market"),
            instruments: format!("{p}.instruments"),
            dead_letters: format!("{p}.dead-letters"),
            alerts: format!("{p}.alerts"),
        },
        partitions: 3,
        ..KafkaConfig::default()
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("harbour-kafka-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn file_replay(lines: &[String]) -> OutputState {
    file_replay_with(lines, engine_config(10_000))
}

fn file_replay_with(lines: &[String], config: harbour::engine::EngineConfig) -> OutputState {
    let source = lines
        .iter()
        .enumerate()
        .map(|(i, raw)| Ok(SourceLine { source: "day.jsonl".into(), position: i as u64 + 1, raw: raw.clone() }));
    engine::run(source, &config, &Metrics::default(), &Arc::new(Health::default())).unwrap().0
}

/// Epochs of at most 1,000 messages or 50 ms, sinks written every 100 ms, a checkpoint every
/// 500 ms, to the end of the topics; state and Parquet under `dir`.
fn quick_run(dir: &Path) -> KafkaRun {
    KafkaRun {
        epoch_events: 1_000,
        epoch_max: Duration::from_millis(50),
        flush_every: Duration::from_millis(100),
        checkpoint_every: Duration::from_millis(500),
        stop_at_end: true,
        state_dir: dir.join("state"),
        out_dir: dir.join("out"),
    }
}

/// A Kafka run into the Parquet sink alone, epochs of 1,000 lines, not stopped.
fn run_to_parquet(cfg: &KafkaConfig, run: &KafkaRun) -> Result<kafka::KafkaOutcome, kafka::KafkaRunError> {
    let sinks: Vec<Box<dyn EpochSink + Send>> = vec![Box::new(ParquetEpochSink::new(ParquetSink::new(&run.out_dir)))];
    kafka::run(
        cfg,
        run,
        &engine_config(1_000),
        &Metrics::default(),
        &Arc::new(Health::default()),
        sinks,
        &AtomicBool::new(false),
    )
}

fn ends(consumer: &InputConsumer) -> Offsets {
    consumer.watermarks().unwrap().into_iter().filter(|(_, (lo, hi))| hi > lo).map(|(p, (_, hi))| (p, hi)).collect()
}

#[test]
fn kafka_run_equals_file_replay_and_poison_reaches_the_dead_letter_topic() {
    let cfg = kafka_config("equal");
    let gen = GenerateConfig { fills: 4_000, quotes: 8_000, seed: 5, ..GenerateConfig::default() };
    let mut lines = generate(&gen).unwrap();
    // A poison message longer than a dead letter keeps (40 KB): clipped in the tables, whole on
    // the dead-letter topic.
    let long = format!("{{\"type\":\"fill\",\"note\":\"{}\"", "x".repeat(40_000));
    lines.insert(lines.len() / 2, long.clone());
    let mut engine_cfg = engine_config(1_000);
    engine_cfg.graph.risk = common::risk_config(&gen);
    create_topics(&cfg).unwrap();
    let counts = publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    assert_eq!(counts.values().sum::<u64>(), lines.len() as u64);

    let dir = temp("equal");
    let run = quick_run(&dir);
    let sinks: Vec<Box<dyn EpochSink + Send>> = vec![
        Box::new(ParquetEpochSink::new(ParquetSink::new(&run.out_dir))),
        Box::new(harbour::kafka::alerts::AlertsEpochSink::new(&cfg)),
    ];
    let metrics = Metrics::default();
    let out =
        kafka::run(&cfg, &run, &engine_cfg, &metrics, &Arc::new(Health::default()), sinks, &AtomicBool::new(false))
            .unwrap();
    // A clean stop leaves a checkpoint of everything read, which every sink holds.
    let store = harbour::checkpoint::CheckpointStore::reader(&run.state_dir);
    let checkpoint = store.load().unwrap().expect("a checkpoint after a clean stop");
    assert_eq!(checkpoint.engine.lines, lines.len() as u64);
    assert_eq!(store.committed().unwrap(), checkpoint.epoch);
    assert!(store.epochs_after(checkpoint.epoch).unwrap().is_empty());
    let text = metrics.render();
    assert!(text.contains("harbour_kafka_consumer_lag{"), "{text}");
    // The checkpoint's two parts: the loop's snapshot and the store thread's write.
    let gauge = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
    assert!(gauge("harbour_checkpoint_write_seconds").is_some_and(|s| s > 0.0), "{text}");
    assert!(gauge("harbour_checkpoint_snapshot_seconds").is_some_and(|s| s > 0.0), "{text}");
    let mut replay_cfg = engine_config(10_000);
    replay_cfg.graph.risk = common::risk_config(&gen);
    let expected = file_replay_with(&lines, replay_cfg);
    assert!(expected.positions.len() > 50 && expected.dead_letters.len() > 20);
    assert_same_tables(&out.state, &expected, Compare::Exact);
    assert_eq!(out.stats.lines, lines.len() as u64);

    // Every partition with messages is committed to its end, for the group and in metrics.
    let consumer = InputConsumer::open(&cfg, &cfg.topics.inputs(), &Offsets::new()).unwrap();
    let end = ends(&consumer);
    assert_eq!(consumer.committed().unwrap(), end);
    assert_eq!(out.committed, end);
    let text = metrics.render();
    assert!(text.contains("harbour_kafka_committed_offset{"), "{text}");

    // The dead-letter topic holds each poison message once, with its reason and source position.
    let dlq: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{}.dlq-reader", cfg.group_id))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&cfg.topics.dead_letters]).unwrap();
    let mut seen: Vec<(String, String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < expected.dead_letters.len() && Instant::now() < deadline {
        let Some(m) = dlq.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let h = m.headers().expect("dead letters carry headers");
        let header = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap_or_else(|| panic!("header {k} missing"))
        };
        let (topic, partition, offset) =
            (header("harbour.source.topic"), header("harbour.source.partition"), header("harbour.source.offset"));
        assert!(cfg.topics.inputs().contains(&topic.as_str()), "{topic}");
        assert!(!header("harbour.reason").is_empty());
        // Filed under the date of its row in the tables.
        let row = out
            .state
            .dead_letters
            .iter()
            .find(|d| d.source == format!("{topic}/{partition}") && d.position.to_string() == offset);
        assert_eq!(header("harbour.trade_date"), row.expect("its dead_letters row").trade_date.to_string());
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        assert_eq!(key, format!("{topic}/{partition}/{offset}"));
        seen.push((header("harbour.reason_code"), String::from_utf8_lossy(m.payload().unwrap()).into_owned(), key));
    }
    let mut got: Vec<(String, String)> = seen.iter().map(|(c, p, _)| (c.clone(), p.clone())).collect();
    let clipped = expected.dead_letters.iter().filter(|d| d.raw.len() > 16_000).collect::<Vec<_>>();
    assert_eq!(clipped.len(), 1);
    let note = format!("[clipped: {} bytes in all]", long.len());
    assert!(clipped[0].raw.len() < 17_000 && clipped[0].raw.ends_with(&note), "{}", &clipped[0].raw[16_000..]);
    let mut want: Vec<(String, String)> = expected
        .dead_letters
        .iter()
        .map(|d| (d.code.to_string(), if d.raw.len() > 16_000 { long.clone() } else { d.raw.clone() }))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each poison message once, with its reason code and payload");
    let codes: BTreeSet<&str> = want.iter().map(|(c, _)| c.as_str()).collect();
    for c in ["parse", "unknown_symbol", "qty_not_positive", "off_tick", "not_board_lot", "duplicate_exec_id"] {
        assert!(codes.contains(c), "the sample day has a {c} poison message");
    }

    // The alerts topic holds every alert of the run once, keyed by its id, with its version.
    let want: BTreeSet<(String, u64)> = out.state.alerts.versioned().iter().map(|v| (v.row.id(), v.version)).collect();
    assert!(want.len() >= 5, "the day crosses its limits: {want:?}");
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{}.alerts-reader", cfg.group_id))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&cfg.topics.alerts]).unwrap();
    let mut got: Vec<(String, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < want.len() && Instant::now() < deadline {
        let Some(m) = reader.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(body["id"].as_str(), Some(key.as_str()));
        assert!(body["value"].as_str().unwrap().parse::<rust_decimal::Decimal>().is_ok());
        got.push((key, body["version"].as_u64().unwrap()));
    }
    assert_eq!(got.len(), want.len(), "no alert sent twice");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    let _ = std::fs::remove_dir_all(dir);
}

/// A sink that fails once it is asked to write past `fail_after`: the run stops with an error and
/// no final checkpoint, as after a crash, leaving every sealed epoch in the epoch log.
struct FailingSink {
    fail_after: u64,
}

impl EpochSink for FailingSink {
    fn name(&self) -> &'static str {
        "failing"
    }

    fn write_through(
        &mut self,
        epoch: u64,
        _s: &OutputState,
        _c: &harbour_sinks::tables::Changes,
    ) -> Result<(), String> {
        if epoch > self.fail_after {
            Err(format!("refusing epoch {epoch}"))
        } else {
            Ok(())
        }
    }

    fn wants_changes(&self) -> bool {
        false
    }
}

/// Raises `stop` once it is asked to write epoch `at` or later (a stop at a chosen moment).
struct StopAt {
    stop: Arc<AtomicBool>,
    at: u64,
}

impl EpochSink for StopAt {
    fn name(&self) -> &'static str {
        "stop-at"
    }

    fn write_through(
        &mut self,
        epoch: u64,
        _s: &OutputState,
        _c: &harbour_sinks::tables::Changes,
    ) -> Result<(), String> {
        if epoch >= self.at {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush_every(&self) -> Option<Duration> {
        Some(Duration::ZERO)
    }

    fn wants_changes(&self) -> bool {
        false
    }
}

/// Regression (a CI run hung here): a restart re-forms many small logged epochs spread over every
/// partition. Messages held back for a later epoch must be released as soon as any epoch seals,
/// whichever partition sealed it, and all of them once the log is re-formed; otherwise their
/// partitions stay paused and the run never reaches the end.
#[test]
fn a_long_epoch_log_over_many_partitions_re_forms_and_reads_on_to_the_end() {
    let cfg = kafka_config("relog");
    let lines =
        generate(&GenerateConfig { fills: 3_000, quotes: 9_000, seed: 11, ..GenerateConfig::default() }).unwrap();
    create_topics(&cfg).unwrap();
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let dir = temp("relog");
    let run = KafkaRun {
        epoch_events: 20,
        epoch_max: Duration::from_millis(200),
        flush_every: Duration::from_millis(200),
        checkpoint_every: Duration::from_secs(3_600),
        stop_at_end: true,
        state_dir: dir.join("state"),
        out_dir: dir.join("out"),
    };
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let config = engine_config(1_000);
    // First run: stops with a sink error two thirds in, after many sealed epochs.
    let fail_after = (lines.len() as u64) * 2 / 3;
    let failing: Vec<Box<dyn EpochSink + Send>> = vec![Box::new(FailingSink { fail_after })];
    let err = kafka::run(&cfg, &run, &config, &metrics, &health, failing, &AtomicBool::new(false))
        .err()
        .expect("the failing sink stops the first run");
    assert!(err.to_string().contains("refusing epoch"), "{err}");
    let store = harbour::checkpoint::CheckpointStore::reader(&run.state_dir);
    assert!(store.load().unwrap().is_none(), "no checkpoint was due");
    let logged = store.epochs_after(0).unwrap().len();
    assert!(logged > 20, "the log holds many epochs ({logged})");

    // Runs stopped (SIGTERM's path) while they re-form the log, right after an epoch seals (a sink
    // raises the stop flag), the first at the first logged epoch (whose seal comes with records of
    // later epochs already read), the next a third in: the records of the next epoch fed or read
    // so far must not reach a checkpoint, or the next run could not re-form that epoch.
    let log = store.epochs_after(0).unwrap();
    for at in [log[0].epoch, log[logged / 3].epoch] {
        let stop = Arc::new(AtomicBool::new(false));
        let log_lines: std::collections::HashMap<u64, u64> = log.iter().map(|r| (r.epoch, r.lines)).collect();
        let (cfg2, mut run2, stop2) = (cfg.clone(), run.clone(), stop.clone());
        // A checkpoint at every flush, so that one is written while the log re-forms.
        run2.checkpoint_every = Duration::ZERO;
        let t = std::thread::spawn(move || {
            let sinks: Vec<Box<dyn EpochSink + Send>> = vec![Box::new(StopAt { stop: stop2.clone(), at })];
            kafka::run(
                &cfg2,
                &run2,
                &engine_config(1_000),
                &Metrics::default(),
                &Arc::new(Health::default()),
                sinks,
                &stop2,
            )
            .map(|o| o.replayed)
            .map_err(|e| e.to_string())
        });
        let replayed = t.join().unwrap().expect("a stopped run ends cleanly");
        assert!(replayed < logged, "stopped while re-forming ({replayed} of {logged})");
        // The checkpoint it left is of a whole logged epoch (its line count is that epoch's) and
        // continues where that epoch ended (not where the gate had read ahead to).
        let c = store.load().unwrap().expect("a checkpoint at every flush");
        assert_eq!(Some(&c.engine.lines), log_lines.get(&c.epoch), "checkpoint at epoch {}", c.epoch);
        let ends = log.iter().find(|r| r.epoch == c.epoch).map(|r| r.ends.to_offsets());
        assert_eq!(Some(c.offsets.to_offsets()), ends, "checkpoint at epoch {} continues where it ended", c.epoch);
    }
    // Second run, on a thread so a hang fails the test instead of stalling the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    let (cfg2, run2) = (cfg.clone(), run.clone());
    std::thread::spawn(move || {
        let out = run_to_parquet(&cfg2, &run2);
        let _ = tx.send(out.map(|o| (o.state, o.stats.lines, o.replayed)).map_err(|e| e.to_string()));
    });
    let (state, read, replayed) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the restarted run reaches the end within two minutes")
        .unwrap();
    assert!(replayed > 0, "the rest of the log re-formed");
    assert_eq!(read, lines.len() as u64);
    assert_same_tables(&state, &file_replay(&lines), Compare::Exact);
    let _ = std::fs::remove_dir_all(dir);
}

/// A spawned `harbour`, killed (SIGKILL) and reaped when dropped: a test that fails while it runs
/// leaves no pipeline behind, polling the broker.
struct Running(Child);

impl Running {
    fn spawn(c: &mut Command) -> Running {
        Running(c.spawn().unwrap())
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child`; past `limit` it is killed and the test fails (a hang must not stall CI).
fn wait_at_most(mut child: Running, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_table(dir: &Path, table: &str) -> Vec<String> {
    let file = File::open(dir.join(format!("{table}.parquet"))).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let skip = ["version", "source_seq", "source", "position"];
    let mut rows = Vec::new();
    for b in reader {
        let b: RecordBatch = b.unwrap();
        let schema = b.schema();
        // Timestamps as their integer nanoseconds (named time zones need chrono-tz to print).
        let arrays: Vec<(String, ArrayRef)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !skip.contains(&f.name().as_str()))
            .map(|(i, f)| {
                let a = b.column(i).clone();
                let a = match f.data_type() {
                    DataType::Timestamp(..) => arrow_cast::cast(&a, &DataType::Int64).unwrap(),
                    _ => a,
                };
                (f.name().clone(), a)
            })
            .collect();
        let cols: Vec<(String, ArrayFormatter)> = arrays
            .iter()
            .map(|(n, a)| (n.clone(), ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default()).unwrap()))
            .collect();
        for r in 0..b.num_rows() {
            rows.push(cols.iter().map(|(n, c)| format!("{n}={}", c.value(r))).collect::<Vec<_>>().join(" "));
        }
    }
    rows.sort();
    rows
}

/// The Parquet tables in `got` equal those in `want` (versions and source positions aside). Risk
/// rows and alerts are left out: drawdown peaks are taken at each epoch's end, and a Kafka run
/// cuts its epochs elsewhere than a file replay.
fn same_parquet_tables(got: &Path, want: &Path, when: &str) {
    for table in [
        "positions",
        "fills",
        "account_rollups",
        "strategy_rollups",
        "account_pnl_minute",
        "strategy_pnl_minute",
        "orders",
        "marks",
        "instruments",
        "trading_status",
        "volatility",
        "dead_letters",
    ] {
        let (got, want) = (read_table(got, table), read_table(want, table));
        if let Some((a, b)) = got.iter().zip(&want).find(|(a, b)| a != b) {
            panic!("{when}, table {table} differs first at\n  kafka  {a}\n  replay {b}");
        }
        assert_eq!(got.len(), want.len(), "{when}, table {table}: row count");
    }
}

/// A generated day (`fills` fills, three quotes per fill) written to `day.jsonl` in a new folder,
/// and the topics created (publishing is the caller's): the lines, the folder and the file.
fn day_on_disk(cfg: &KafkaConfig, name: &str, fills: usize, seed: u64) -> (Vec<String>, PathBuf, PathBuf) {
    let lines = generate(&GenerateConfig { fills, quotes: 3 * fills, seed, ..GenerateConfig::default() }).unwrap();
    let dir = temp(name);
    let day = dir.join("day.jsonl");
    std::fs::write(&day, lines.join("\n") + "\n").unwrap();
    create_topics(cfg).unwrap();
    (lines, dir, day)
}

/// `harbour replay` of `day` into `dir/reference`: the tables a Kafka run must end with.
fn replay_reference(cfg: &KafkaConfig, day: &Path, dir: &Path) -> PathBuf {
    let reference = dir.join("reference");
    let status = harbour(cfg).arg("replay").arg(day).arg("--out").arg(&reference).status().unwrap();
    assert!(status.success());
    reference
}

/// A run writing Parquet only (the test environment's ClickHouse and Redis left out).
fn parquet_only(c: &mut Command) -> &mut Command {
    c.env_remove("HARBOUR_CLICKHOUSE_URL").env_remove("HARBOUR_REDIS_URL")
}

fn harbour(cfg: &KafkaConfig) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harbour"));
    let t = &cfg.topics;
    c.env("HARBOUR__METRICS__LISTEN", "")
        .env("RUST_LOG", "warn")
        .env("HARBOUR_KAFKA_BOOTSTRAP", &cfg.bootstrap)
        .env("HARBOUR__KAFKA__GROUP_ID", &cfg.group_id)
        .env("HARBOUR__KAFKA__TOPICS__FILLS", &t.fills)
        .env("HARBOUR__KAFKA__TOPICS__ORDERS", &t.orders)
        .env("HARBOUR__KAFKA__TOPICS__MARKET", &t.market)
        .env("HARBOUR__KAFKA__TOPICS__INSTRUMENTS", &t.instruments)
        .env("HARBOUR__KAFKA__TOPICS__DEAD_LETTERS", &t.dead_letters)
        .env("HARBOUR__KAFKA__TOPICS__ALERTS", &t.alerts);
    c
}

/// Every committed message of `topic` (`read_committed`, from the beginning of each partition):
/// (key, `harbour.version` header).
fn committed_messages(cfg: &KafkaConfig, topic: &str) -> Vec<(String, u64)> {
    committed_with(cfg, topic, "harbour.version")
}

/// Every committed message of `topic`: (key, numeric `header`).
fn committed_with(cfg: &KafkaConfig, topic: &str, header: &str) -> Vec<(String, u64)> {
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{}.reader", cfg.group_id))
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let md = reader.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    let mut assign = rdkafka::TopicPartitionList::new();
    for p in 0..n {
        assign.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    reader.assign(&assign).unwrap();
    let (mut open, mut got) = (n, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while open > 0 {
        assert!(Instant::now() < deadline, "reading {topic} took over a minute");
        match reader.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => panic!("{e}"),
            Some(Ok(m)) => {
                let version = m
                    .headers()
                    .and_then(|h| h.iter().find(|x| x.key == header))
                    .and_then(|x| std::str::from_utf8(x.value.unwrap()).ok()?.parse().ok())
                    .unwrap();
                got.push((String::from_utf8(m.key().unwrap().to_vec()).unwrap(), version));
            }
        }
    }
    got
}

/// `got` and `want` hold the same items, each as often (order aside).
fn same_multiset<T: Ord + std::fmt::Debug>(mut got: Vec<T>, mut want: Vec<T>, what: &str) {
    got.sort();
    want.sort();
    assert_eq!(got, want, "{what}");
}

/// (alert_id, version) of every row of the alerts table in `dir/alerts.parquet`.
fn parquet_alerts(dir: &Path) -> Vec<(String, u64)> {
    let file = File::open(dir.join("alerts.parquet")).unwrap();
    let mut out = Vec::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
        let b = b.unwrap();
        let ids = b.column_by_name("alert_id").unwrap().as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
        let versions =
            b.column_by_name("version").unwrap().as_any().downcast_ref::<arrow_array::UInt64Array>().unwrap();
        for r in 0..b.num_rows() {
            out.push((ids.value(r).to_string(), versions.value(r)));
        }
    }
    out
}

/// The test Redis, database 2 (emptied first), keys without expiry (the test may outlast a TTL).
fn redis_env(c: &mut Command) -> &mut Command {
    let url = std::env::var("HARBOUR_REDIS_URL").expect(
        "the crash test writes Redis too: run `bash deploy/test.sh` (it starts one), \
         or `eval \"$(deploy/redis.sh start)\"` first",
    );
    c.env("HARBOUR_REDIS_URL", format!("{}/2", url.trim_end_matches('/')))
        .env("HARBOUR__REDIS__POSITION_TTL_MS", "0")
        .env("HARBOUR__REDIS__PORTFOLIO_TTL_MS", "0")
        .env("HARBOUR__REDIS__PRICE_TTL_MS", "0")
}

fn clickhouse_url() -> String {
    std::env::var("HARBOUR_CLICKHOUSE_URL").expect(
        "the crash test writes ClickHouse too: run `bash deploy/test.sh` (it starts one), \
         or `eval \"$(deploy/clickhouse.sh start)\"` first",
    )
}

#[test]
fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let cfg = kafka_config("crash");
    let (lines, dir, day) = day_on_disk(&cfg, "crash", 30_000, 9);
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();

    let database = format!("harbour_crash_{}", std::process::id());
    // The sample limits, which the day crosses: alerts fire through the kills.
    let limits = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/limits.toml");
    let redis_url = format!("{}/2", std::env::var("HARBOUR_REDIS_URL").unwrap_or_default().trim_end_matches('/'));
    {
        let mut r = redis::Client::open(redis_url.as_str()).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("FLUSHDB").query(&mut r).unwrap();
    }
    let start = |c: &mut Command| -> Running {
        Running::spawn(
            redis_env(c)
                .env("HARBOUR_CLICKHOUSE_URL", clickhouse_url())
                .env("HARBOUR__CLICKHOUSE__DATABASE", &database)
                .args(["kafka", "run", "--until-end", "--out"])
                .arg(dir.join("out"))
                .arg("--state")
                .arg(dir.join("state"))
                .env("HARBOUR__PIPELINE__EPOCH_EVENTS", "2000")
                .env("HARBOUR__PIPELINE__EPOCH_MAX_MS", "20")
                .env("HARBOUR__PIPELINE__FLUSH_MS", "40")
                .env("HARBOUR__PIPELINE__CHECKPOINT_MS", "250")
                .env("HARBOUR__RISK__LIMITS_FILE", limits)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut kills = 0;
    let mut finished_early = 0;
    let (mut low, mut high) = (150u64, 700u64);
    while kills < 12 {
        let mut child = start(&mut harbour(&cfg));
        std::thread::sleep(Duration::from_millis(rng.random_range(low..high)));
        if child.try_wait().unwrap().is_some() {
            // It finished before the kill: the work left was shorter than the delay.
            finished_early += 1;
            assert!(finished_early < 20, "runs keep finishing before the kill");
            (low, high) = ((low / 2).max(20), (high / 2).max(60));
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    // The kills interrupted real work: the sinks did not yet hold the whole day.
    let committed: u64 = std::fs::read_to_string(dir.join("state/committed")).map_or(0, |s| s.trim().parse().unwrap());
    assert!(committed < lines.len() as u64, "work was left when the last kill landed (committed epoch {committed})");
    let last = Running::spawn(
        redis_env(&mut harbour(&cfg))
            .env("HARBOUR_CLICKHOUSE_URL", clickhouse_url())
            .env("HARBOUR__CLICKHOUSE__DATABASE", &database)
            .env("HARBOUR__RISK__LIMITS_FILE", limits)
            .args(["kafka", "run", "--until-end", "--out"])
            .arg(dir.join("out"))
            .arg("--state")
            .arg(dir.join("state")),
    );
    let status = wait_at_most(last, Duration::from_secs(300), "the final run after the kills");
    assert!(status.success(), "the final run completes");

    let reference = replay_reference(&cfg, &day, &dir);
    same_parquet_tables(&dir.join("out"), &reference, &format!("after {kills} kills"));
    let consumer = InputConsumer::open(&cfg, &cfg.topics.inputs(), &Offsets::new()).unwrap();
    assert_eq!(consumer.committed().unwrap(), ends(&consumer), "committed offsets are at the end");

    // ClickHouse, written through the same kills: under FINAL, nothing lost and nothing doubled.
    let expected = file_replay(&lines);
    let mut ch = ClickHouseSink::connect(&ClickHouseConfig {
        url: clickhouse_url(),
        database: database.clone(),
        ..ClickHouseConfig::default()
    })
    .unwrap();
    let fills = ch.query_text("SELECT count(), sum(qty), sum(fees_total) FROM fills FINAL WHERE deleted = 0").unwrap();
    let want_fills = format!(
        "{}\t{}\t{}\n",
        expected.fills.len(),
        expected.fills.rows().map(|f| f.fill.qty).sum::<i64>(),
        money(expected.fills.rows().map(|f| f.fee))
    );
    assert_eq!(fills, want_fills, "clickhouse fills after {kills} kills");
    let positions =
        ch.query_text("SELECT count(), sum(qty), sum(total) FROM positions FINAL WHERE deleted = 0").unwrap();
    let want_positions = format!(
        "{}\t{}\t{}\n",
        expected.positions.len(),
        expected.positions.rows().map(|p| p.qty).sum::<i64>(),
        money(expected.positions.rows().map(|p| p.total))
    );
    assert_eq!(positions, want_positions, "clickhouse positions after {kills} kills");
    let events = ch.query_text("SELECT count() FROM events FINAL").unwrap();
    assert_eq!(events.trim(), lines.len().to_string(), "every message once in the event log");

    // Redis, fenced through the same kills: every live position's hash holds the final row.
    let mut r = redis::Client::open(redis_url.as_str()).unwrap().get_connection().unwrap();
    for p in expected.positions.rows() {
        let h: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(harbour_sinks::redis::position_key(p)).query(&mut r).unwrap();
        for (f, want) in harbour_sinks::redis::fields_of_position(p) {
            let got = h
                .get(f)
                .unwrap_or_else(|| panic!("{} lacks {f} after {kills} kills", harbour_sinks::redis::position_key(p)));
            if let (Ok(a), Ok(b)) = (got.parse::<rust_decimal::Decimal>(), want.parse::<rust_decimal::Decimal>()) {
                assert_eq!(a, b, "{} {f} after {kills} kills", harbour_sinks::redis::position_key(p));
            } else {
                assert_eq!(got, &want, "{} {f} after {kills} kills", harbour_sinks::redis::position_key(p));
            }
        }
    }
    // The alerts topic, written in transactions through the same kills: every alert of the run
    // once (re-formed epochs' alerts were sent again before 2026-11-28).
    let fired = parquet_alerts(&dir.join("out"));
    assert!(fired.len() >= 10, "the day crosses its limits: {fired:?}");
    same_multiset(
        committed_messages(&cfg, &cfg.topics.alerts),
        fired,
        &format!("each alert once on the alerts topic after {kills} kills"),
    );
    let keys: Vec<String> = redis::cmd("KEYS").arg("harbour:position:*").query(&mut r).unwrap();
    let live = keys
        .iter()
        .filter(|k| {
            redis::cmd("HGET").arg(k.as_str()).arg("deleted").query::<Option<String>>(&mut r).unwrap().is_none()
        })
        .count();
    assert_eq!(live, expected.positions.len(), "no extra live positions in Redis");
    eprintln!("crash test: {kills} SIGKILLs, {finished_early} runs that finished before their kill");
    let _ = std::fs::remove_dir_all(dir);
}

/// Active and standby: two processes in one lease group, sharing one state folder. The standby
/// waits while the active one works (its joining does not move the lease), takes the lease when
/// the active one is killed mid-work, restores the shared checkpoint and ends with the tables of an
/// uninterrupted replay, the group's offsets committed to the end.
#[test]
fn a_standby_takes_over_when_the_active_process_is_killed() {
    let cfg = kafka_config("standby");
    let (lines, dir, day) = day_on_disk(&cfg, "standby", 10_000, 21);
    let (first, second) = lines.split_at(lines.len() / 2);
    publish_lines(&cfg, first.iter().map(String::as_str)).unwrap();
    let member = |name: &str, until_end: bool| -> Running {
        let mut c = harbour(&cfg);
        // Parquet alone (the crash test covers ClickHouse and Redis through restarts).
        parquet_only(&mut c)
            .env("RUST_LOG", "info")
            .env("HARBOUR__KAFKA__LEASE__ENABLED", "true")
            .env("HARBOUR__KAFKA__LEASE__TOPIC", format!("{}.lease", cfg.group_id))
            .env("HARBOUR__KAFKA__LEASE__SESSION_TIMEOUT_MS", "6000")
            .env("HARBOUR__PIPELINE__EPOCH_EVENTS", "2000")
            .env("HARBOUR__PIPELINE__CHECKPOINT_MS", "200")
            // Alerts fire all day: a joining member must not fence the active one's producer.
            .env("HARBOUR__RISK__LIMITS_FILE", concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/limits.toml"))
            .args(["kafka", "run"]);
        if until_end {
            c.arg("--until-end");
        }
        Running::spawn(
            c.arg("--out")
                .arg(dir.join(name))
                .arg("--state")
                .arg(dir.join("state"))
                .stdout(File::create(dir.join(format!("{name}.out"))).unwrap())
                .stderr(File::create(dir.join(format!("{name}.log"))).unwrap()),
        )
    };
    let log = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let consumer = InputConsumer::open(&cfg, &cfg.topics.inputs(), &Offsets::new()).unwrap();
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut active = member("active", false);
    wait_for("the active process to commit the first half", &|| consumer.committed().unwrap() == ends(&consumer));
    assert!(log("active").contains("lease acquired"), "the first member holds the lease:\n{}", log("active"));
    let standby = member("standby", true);
    wait_for("the standby to join", &|| log("standby").contains("joined the lease group"));
    // Long enough for the group to rebalance over the new member (the broker's initial delay is 0).
    std::thread::sleep(Duration::from_secs(3));
    assert!(active.try_wait().unwrap().is_none(), "the active process runs on:\n{}", log("active"));
    assert!(!log("active").contains("lease lost"), "a joining standby does not move the lease");
    // A third member, stopped (SIGTERM) while it stands by, ends cleanly having written nothing.
    let third = member("third", true);
    wait_for("the third member to join", &|| log("third").contains("standing by"));
    assert!(Command::new("kill").arg("-TERM").arg(third.id().to_string()).status().unwrap().success());
    assert!(wait_at_most(third, Duration::from_secs(30), "the third member").success(), "{}", log("third"));
    let said = std::fs::read_to_string(dir.join("third.out")).unwrap();
    assert!(said.contains("stopped while standing by"), "{said}\n{}", log("third"));
    assert!(!dir.join("third").exists(), "a stopped standby wrote no tables");
    publish_lines(&cfg, second.iter().map(String::as_str)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(active.try_wait().unwrap().is_none(), "the active process works on:\n{}", log("active"));
    assert!(!log("standby").contains("lease acquired"), "the standby stood by:\n{}", log("standby"));
    assert!(!dir.join("standby").exists(), "the standby wrote nothing while it stood by");
    active.kill().unwrap(); // SIGKILL
    active.wait().unwrap();
    let killed = Instant::now();
    let status = wait_at_most(standby, Duration::from_secs(180), "the standby after the kill");
    assert!(status.success(), "the standby completes:\n{}", log("standby"));
    let standby_log = log("standby");
    assert!(standby_log.contains("lease acquired"), "{standby_log}");
    assert!(standby_log.contains("restoring from checkpoint"), "it took over the shared checkpoint:\n{standby_log}");
    eprintln!("standby: took over and caught up {:.1} s after the kill", killed.elapsed().as_secs_f64());

    let reference = replay_reference(&cfg, &day, &dir);
    same_parquet_tables(&dir.join("standby"), &reference, "after the takeover");
    assert_eq!(consumer.committed().unwrap(), ends(&consumer), "committed offsets are at the end");
    // Each alert once on the topic, whoever sent it.
    let fired = parquet_alerts(&dir.join("standby"));
    assert!(!fired.is_empty());
    same_multiset(
        committed_messages(&cfg, &cfg.topics.alerts),
        fired,
        "each alert once on the alerts topic after the takeover",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The Parquet tables, rewritten whole from the state, have a cadence of their own and hold
/// nothing back: offsets are committed and checkpoints written while no Parquet file exists yet
/// (`pipeline.parquet_ms = 0`: only on stop), and the stop writes the tables of the whole day.
#[test]
fn parquet_rewrites_hold_back_no_commit_and_are_written_on_stop() {
    let cfg = kafka_config("parquet-cadence");
    let (lines, dir, day) = day_on_disk(&cfg, "parquet-cadence", 3_000, 23);
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let out = dir.join("out");
    let log = dir.join("run.log");
    let run = Running::spawn(
        parquet_only(&mut harbour(&cfg))
            .env("HARBOUR__PIPELINE__EPOCH_EVENTS", "1000")
            .env("HARBOUR__PIPELINE__CHECKPOINT_MS", "200")
            .env("HARBOUR__PIPELINE__PARQUET_MS", "0")
            .env("RUST_LOG", "info")
            .args(["kafka", "run", "--out"])
            .arg(&out)
            .arg("--state")
            .arg(dir.join("state"))
            .stdout(File::create(dir.join("run.out")).unwrap())
            .stderr(File::create(&log).unwrap()),
    );
    let consumer = InputConsumer::open(&cfg, &cfg.topics.inputs(), &Offsets::new()).unwrap();
    let store = harbour::checkpoint::CheckpointStore::reader(dir.join("state"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while consumer.committed().unwrap() != ends(&consumer)
        || store.load().unwrap().is_none_or(|c| c.engine.lines != lines.len() as u64)
    {
        assert!(
            Instant::now() < deadline,
            "timed out: committed {:?} of {:?}, checkpoint at line {:?} of {}\n{}",
            consumer.committed().unwrap(),
            ends(&consumer),
            store.load().unwrap().map(|c| c.engine.lines),
            lines.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!out.join("positions.parquet").exists(), "no Parquet rewrite before the stop");
    assert!(Command::new("kill").arg("-TERM").arg(run.id().to_string()).status().unwrap().success());
    assert!(wait_at_most(run, Duration::from_secs(60), "the run after SIGTERM").success());
    let said = std::fs::read_to_string(dir.join("run.out")).unwrap();
    assert!(said.contains("positions ("), "the summary lists the tables written:\n{said}");
    let reference = replay_reference(&cfg, &day, &dir);
    same_parquet_tables(&out, &reference, "after the stop");
    let _ = std::fs::remove_dir_all(dir);
}

/// With a cadence set, the Parquet tables catch up while the input is idle: once the run has
/// read everything, the files come to equal a replay of the day before any stop.
#[test]
fn parquet_tables_catch_up_while_the_input_is_idle() {
    let cfg = kafka_config("parquet-idle");
    let (lines, dir, day) = day_on_disk(&cfg, "parquet-idle", 3_000, 29);
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let reference = replay_reference(&cfg, &day, &dir);
    let out = dir.join("out");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let run = Running::spawn(
        parquet_only(&mut harbour(&cfg))
            .env("HARBOUR__METRICS__LISTEN", format!("127.0.0.1:{port}"))
            .env("HARBOUR__PIPELINE__EPOCH_EVENTS", "1000")
            .env("HARBOUR__PIPELINE__PARQUET_MS", "1500")
            .args(["kafka", "run", "--out"])
            .arg(&out)
            .arg("--state")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let tables = ["positions", "fills", "orders", "account_rollups", "dead_letters"];
    let same = || {
        tables.iter().all(|t| out.join(format!("{t}.parquet")).exists())
            && tables.iter().all(|t| read_table(&out, t) == read_table(&reference, t))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !same() {
        assert!(Instant::now() < deadline, "the Parquet tables did not catch up while the input was idle");
        std::thread::sleep(Duration::from_millis(200));
    }
    same_parquet_tables(&out, &reference, "while idle");
    // The binary's /metrics: the Parquet sink's progress is that of its last rewrite of the files.
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let sample = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(sample("harbour_kafka_lease_held"), 1, "the only process is the active one");
    assert_eq!(
        sample("harbour_sink_durable_epoch{sink=\"parquet\"}"),
        sample("harbour_pipeline_epoch"),
        "the files hold the last epoch"
    );
    assert!(
        sample("harbour_sink_rows_written_total{sink=\"parquet\"}") >= read_table(&reference, "fills").len() as u64
    );
    drop(run);
    let _ = std::fs::remove_dir_all(dir);
}

/// HKEX OMD-C bridged to Kafka: the day's market data published from an OMD-C capture (lines A
/// and B) by `hkex::publish`, its fills and orders as JSON; the Kafka run gives the tables of the
/// JSON replay (instrument sectors aside: OMD-C has none).
#[test]
fn an_omdc_feed_bridged_to_kafka_gives_the_tables_of_the_json_day() {
    use harbour::hkex::{self as hk, FeedSource};
    use harbour_sources::hkex::day::DayEncoding;
    let cfg = kafka_config("omdc");
    let lines =
        generate(&GenerateConfig { fills: 2_000, quotes: 6_000, seed: 31, ..GenerateConfig::default() }).unwrap();
    let dir = temp("omdc");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding::default()).unwrap();
    create_topics(&cfg).unwrap();
    let other_lines = std::fs::read_to_string(&other).unwrap();
    publish_lines(&cfg, other_lines.lines()).unwrap();
    let published =
        hk::publish(&FeedSource::Capture(capture.clone()), &cfg, None, &AtomicBool::new(false), &Metrics::default())
            .unwrap();
    assert_eq!(published.dead_letters, 0);
    assert_eq!(published.feed.messages, published.feed.duplicates, "line B's copies all dropped");
    assert!(published.messages[&cfg.topics.market] > 5_000, "{:?}", published.messages);
    assert_eq!(published.messages[&cfg.topics.instruments], 10);

    let run = KafkaRun { checkpoint_every: Duration::from_secs(60), ..quick_run(&dir) };
    let out = run_to_parquet(&cfg, &run).unwrap();
    assert_same_tables(&out.state, &file_replay(&lines), Compare::OmdC);
    let _ = std::fs::remove_dir_all(dir);
}

/// ClickHouse down during a Kafka run: the loop reads on (ClickHouse is written on its own
/// thread) but commits nothing past what ClickHouse holds; once it is back, the run catches up and
/// the tables end complete.
#[test]
fn clickhouse_down_during_a_kafka_run_holds_commits_back_until_it_is_back() {
    use common::PrivateServer;
    use harbour::kafka::ClickHouseEpochSink;
    let server = PrivateServer::start("kafka-outage");
    let cfg = kafka_config("chdown");
    let lines =
        generate(&GenerateConfig { fills: 2_000, quotes: 4_000, seed: 12, ..GenerateConfig::default() }).unwrap();
    let (first, second) = lines.split_at(lines.len() / 2);
    create_topics(&cfg).unwrap();
    publish_lines(&cfg, first.iter().map(String::as_str)).unwrap();
    let dir = temp("chdown");
    let run = KafkaRun {
        epoch_events: 300,
        epoch_max: Duration::from_millis(20),
        flush_every: Duration::from_millis(50),
        checkpoint_every: Duration::from_secs(3_600),
        stop_at_end: false,
        state_dir: dir.join("state"),
        out_dir: dir.join("out"),
    };
    let database = format!("harbour_kafka_outage_{}", std::process::id());
    let ch_cfg = ClickHouseConfig {
        url: server.url.clone(),
        database: database.clone(),
        max_backoff_ms: 200,
        ..ClickHouseConfig::default()
    };
    let sink = ClickHouseSink::connect(&ch_cfg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    let handle = {
        let (cfg, run, stop, health, metrics) =
            (cfg.clone(), run.clone(), stop.clone(), health.clone(), metrics.clone());
        std::thread::spawn(move || {
            let sinks: Vec<Box<dyn EpochSink + Send>> =
                vec![Box::new(ClickHouseEpochSink(sink, Some(Duration::from_millis(50))))];
            kafka::run(&cfg, &run, &engine_config(300), &metrics, &health, sinks, &stop)
                .map(|o| o.state)
                .map_err(|e| e.to_string())
        })
    };
    let store = harbour::checkpoint::CheckpointStore::reader(&run.state_dir);
    let lines_read = || health.lines.load(std::sync::atomic::Ordering::Relaxed);
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let consumer = InputConsumer::open(&cfg, &cfg.topics.inputs(), &Offsets::new()).unwrap();
    let at_end = || consumer.committed().unwrap() == ends(&consumer);
    // The first half read and committed.
    wait_for("the first half committed", &|| lines_read() >= first.len() as u64 && at_end());
    server.kill();
    let held = store.committed().unwrap();
    // A trickle (one message at a time, each followed by a pause: idle input): once an epoch has
    // waited for the sink 2 s, epochs are stretched to a second, not sealed at each pause (the
    // epoch log, a line per epoch, would grow by a line per message until ClickHouse is back).
    // The first message starts the wait (the idle spell before it does not count).
    publish_lines(&cfg, [second[0].as_str()]).unwrap();
    wait_for("the first message read", &|| lines_read() > first.len() as u64);
    std::thread::sleep(Duration::from_millis(2_500));
    let trickle = 40;
    let trickled = Instant::now();
    for line in &second[1..trickle] {
        publish_lines(&cfg, [line.as_str()]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("the trickle read", &|| lines_read() >= (first.len() + trickle) as u64);
    let trickle_epochs = store.epochs_after(held).unwrap().len();
    let seconds = trickled.elapsed().as_secs() as usize;
    assert!(
        trickle_epochs <= seconds + 4,
        "{trickle_epochs} epochs for {trickle} messages over {seconds} s while the sink was down"
    );
    publish_lines(&cfg, second[trickle..].iter().map(String::as_str)).unwrap();
    // The loop reads the second half while ClickHouse is down ...
    wait_for("the second half read", &|| lines_read() >= lines.len() as u64);
    std::thread::sleep(Duration::from_millis(500));
    // ... and commits none of it.
    assert_eq!(store.committed().unwrap(), held, "nothing committed while ClickHouse is down");
    assert!(!at_end(), "the group's offsets are not at the end");
    // The operator sees it: the write retrying (counted while it waits), the sink's epoch held.
    let sample = |name: &str| -> u64 {
        let text = metrics.render();
        let line = text
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    wait_for("retries in the metrics", &|| sample("harbour_sink_retries_total{sink=\"clickhouse\"}") > 0);
    assert_eq!(sample("harbour_sink_durable_epoch{sink=\"clickhouse\"}"), held);
    assert_eq!(sample("harbour_pipeline_durable_epoch"), held);
    server.restart();
    wait_for("everything committed", &at_end);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let state = handle.join().unwrap().unwrap();
    assert_eq!(consumer.committed().unwrap(), ends(&consumer), "committed to the end once it is back");
    let mut ch = ClickHouseSink::connect(&ch_cfg).unwrap();
    let fills = ch.query_text("SELECT count(), sum(qty) FROM fills FINAL WHERE deleted = 0").unwrap();
    let want = format!("{}\t{}\n", state.fills.len(), state.fills.rows().map(|f| f.fill.qty).sum::<i64>());
    assert_eq!(fills, want, "every fill in ClickHouse once");
    let progress = ch.query_text("SELECT max(epoch) FROM sink_progress").unwrap();
    assert_eq!(
        progress.trim().parse::<u64>().unwrap(),
        store.committed().unwrap(),
        "committed = what ClickHouse holds"
    );
    assert_eq!(sample("harbour_sink_durable_epoch{sink=\"clickhouse\"}"), store.committed().unwrap());
    assert!(sample("harbour_sink_rows_written_total{sink=\"clickhouse\"}") >= state.fills.len() as u64);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// A run to the end of what was published, in small epochs flushed often (no checkpoint on the
/// way: the final one).
fn day_run(dir: &Path) -> KafkaRun {
    KafkaRun {
        epoch_events: 300,
        epoch_max: Duration::from_millis(20),
        flush_every: Duration::from_millis(50),
        checkpoint_every: Duration::from_secs(3_600),
        stop_at_end: true,
        state_dir: dir.join("state"),
        out_dir: dir.join("out"),
    }
}

/// `kafka::run` with `sinks` and fresh metrics, to its end.
fn run_with_sinks(cfg: &KafkaConfig, run: &KafkaRun, sinks: Vec<Box<dyn EpochSink + Send>>) -> kafka::KafkaOutcome {
    try_run(cfg, run, &engine_config(300), sinks).unwrap()
}

/// `kafka::run` with `config`, `sinks` and fresh metrics, not stopped.
fn try_run(
    cfg: &KafkaConfig,
    run: &KafkaRun,
    config: &engine::EngineConfig,
    sinks: Vec<Box<dyn EpochSink + Send>>,
) -> Result<kafka::KafkaOutcome, kafka::KafkaRunError> {
    kafka::run(cfg, run, config, &Metrics::default(), &Arc::new(Health::default()), sinks, &AtomicBool::new(false))
}

/// A generated day of 2,000 fills (`seed`) published to topics of its own (`name`), with its
/// generator settings, a folder and a run (`day_run`) for it.
fn published_day(name: &str, seed: u64) -> (KafkaConfig, GenerateConfig, PathBuf, KafkaRun) {
    let cfg = kafka_config(name);
    let gen = GenerateConfig { fills: 2_000, quotes: 4_000, seed, ..GenerateConfig::default() };
    let lines = generate(&gen).unwrap();
    create_topics(&cfg).unwrap();
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let dir = temp(name);
    let run = day_run(&dir);
    (cfg, gen, dir, run)
}

/// Redis that lost what it had acknowledged (restarted without its data, or the last second of
/// its append-only file after a power loss) is written again from the restored tables on the
/// next start, instead of waiting for each key to change again.
#[test]
fn a_redis_that_lost_acknowledged_data_is_written_again_on_restart() {
    use harbour::kafka::RedisEpochSink;
    use harbour_sinks::redis::{RedisConfig, RedisSink};
    let url = std::env::var("HARBOUR_REDIS_URL").expect("this test needs Redis: run `bash deploy/test.sh`");
    let url = format!("{}/12", url.trim_end_matches('/')); // a database of its own
    let redis = || RedisSink::connect(&RedisConfig { url: url.clone(), ..RedisConfig::default() }).unwrap();
    let flush = |s: &mut RedisSink| {
        let mut c = s.connection().unwrap();
        let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    };
    let positions = |s: &mut RedisSink| -> usize {
        let mut c = s.connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("harbour:position:*").query(&mut c).unwrap();
        keys.len()
    };
    let cfg = kafka_config("redis-lost");
    let lines =
        generate(&GenerateConfig { fills: 1_500, quotes: 3_000, seed: 17, ..GenerateConfig::default() }).unwrap();
    create_topics(&cfg).unwrap();
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let dir = temp("redis-lost");
    let run = day_run(&dir);
    let run_with = |sink: RedisSink| run_with_sinks(&cfg, &run, vec![Box::new(RedisEpochSink(sink, None))]);
    let mut first = redis();
    flush(&mut first);
    let day = run_with(first);
    let live = day.state.positions.len();
    assert!(live > 10);
    let mut check = redis();
    assert_eq!(positions(&mut check), live, "the first run wrote every position");
    let last = check.epoch().unwrap();
    // Redis comes back empty; the pipeline restarts from its final checkpoint with nothing new to read.
    flush(&mut check);
    let again = run_with(redis());
    assert_eq!(again.restored_from, last, "restored from the end of the day");
    assert_eq!(positions(&mut check), live, "every position is in Redis again");
    assert_eq!(check.epoch().unwrap(), last);
    let p = day.state.positions.rows().next().unwrap().clone();
    let mut c = check.connection().unwrap();
    let qty: String = redis::cmd("HGET")
        .arg(format!("harbour:position:{}:{}:{}", p.key.account, p.key.strategy, p.key.symbol))
        .arg("qty")
        .query(&mut c)
        .unwrap();
    assert_eq!(qty, p.qty.to_string());
    // A third start with Redis intact writes nothing again.
    let third = run_with(redis());
    assert_eq!(third.restored_from, last);
    flush(&mut check);
    let _ = std::fs::remove_dir_all(dir);
}

/// ClickHouse that lost what it had acknowledged (an insert is acknowledged before its part is
/// synced to disk; a server restored from an older backup, or replaced) is written again from the
/// restored tables on the next start: its `sink_progress` is read back and compared with what the
/// pipeline committed.
#[test]
fn a_clickhouse_that_lost_acknowledged_data_is_written_again_on_restart() {
    use harbour::kafka::ClickHouseEpochSink;
    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").expect("this test needs ClickHouse: run `bash deploy/test.sh`");
    let ch_cfg = ClickHouseConfig {
        url,
        database: format!("harbour_kafka_lost_{}", std::process::id()),
        ..ClickHouseConfig::default()
    };
    let cfg = kafka_config("ch-lost");
    let lines =
        generate(&GenerateConfig { fills: 1_500, quotes: 3_000, seed: 19, ..GenerateConfig::default() }).unwrap();
    create_topics(&cfg).unwrap();
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let dir = temp("ch-lost");
    let run = day_run(&dir);
    let run_once = || {
        let sink = ClickHouseSink::connect(&ch_cfg).unwrap();
        run_with_sinks(&cfg, &run, vec![Box::new(ClickHouseEpochSink(sink, None))])
    };
    let mut ch = ClickHouseSink::connect(&ch_cfg).unwrap();
    let counts = |ch: &mut ClickHouseSink| {
        ch.query_text(
            "SELECT (SELECT count() FROM positions FINAL WHERE deleted = 0), \
             (SELECT count() FROM fills FINAL WHERE deleted = 0), (SELECT max(epoch) FROM sink_progress)",
        )
        .unwrap()
    };
    let day = run_once();
    let store = harbour::checkpoint::CheckpointStore::reader(&run.state_dir);
    let last = store.committed().unwrap();
    let want = format!("{}\t{}\t{last}\n", day.state.positions.len(), day.state.fills.len());
    assert!(day.state.positions.len() > 10);
    assert_eq!(counts(&mut ch), want, "the first run wrote every position and fill");
    // ClickHouse loses its data; the pipeline restarts from its final checkpoint with nothing new to read.
    for table in ["positions", "fills", "sink_progress"] {
        ch.query_text(&format!("TRUNCATE TABLE {table}")).unwrap();
    }
    let again = run_once();
    assert_eq!(again.restored_from, last, "restored from the end of the day");
    assert_eq!(counts(&mut ch), want, "every position and fill is in ClickHouse again");
    // A third start with ClickHouse intact starts as usual.
    assert_eq!(run_once().restored_from, last);
    assert_eq!(counts(&mut ch), want);
    ch.query_text(&format!("DROP DATABASE IF EXISTS {}", ch_cfg.database)).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A partition whose messages were deleted before they were read (retention) stops the run with
/// the partition and offsets named, instead of skipping silently to the oldest message held (the
/// consumer's `auto.offset.reset` was `earliest`); a start inside what the partition holds, or at
/// its beginning, reads as before.
#[test]
fn offsets_deleted_before_they_were_read_stop_the_consumer_naming_them() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let mut cfg = kafka_config("gone");
    cfg.partitions = 1;
    create_topics(&cfg).unwrap();
    let fill = |n: usize| {
        format!(
            r#"{{"type":"fill","exec_id":"E{n}","order_id":"O","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"100","price":"385.2","ts":"2026-03-02T09:30:00+08:00"}}"#
        )
    };
    publish_lines(&cfg, (0..10).map(fill)).unwrap();
    let admin: AdminClient<DefaultClientContext> = cfg.client().unwrap().create().unwrap();
    let mut upto = rdkafka::TopicPartitionList::new();
    upto.add_partition_offset(&cfg.topics.fills, 0, rdkafka::Offset::Offset(6)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(admin.delete_records(&upto, &AdminOptions::new())).unwrap();
    let fills = harbour_sources::kafka::Partition { topic: cfg.topics.fills.as_str().into(), partition: 0 };
    // Reads until an error, a record, or 20 s.
    let first = |start: Offsets| {
        let consumer = InputConsumer::open(&cfg, &[&cfg.topics.fills], &start).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Ok(Some(r)) => return Ok(r.offset),
                Ok(None) if Instant::now() < deadline => continue,
                Ok(None) => panic!("nothing read in 20 s"),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let err = first([(fills.clone(), 2)].into_iter().collect()).expect_err("offset 2 is gone");
    assert!(err.contains(&format!("{}/0 at offset 2 (it holds 6..10)", cfg.topics.fills)), "{err}");
    assert_eq!(first([(fills.clone(), 7)].into_iter().collect()), Ok(7));
    assert_eq!(first(Offsets::new()), Ok(6), "a fresh start reads from the oldest message held");
}

/// A poison message larger than a producer's default maximum (the broker takes up to 1,048,588
/// bytes; librdkafka produces up to 1,000,000) reaches the dead-letter topic cut to its first
/// 512 KiB, with headers that say so; before, the send failed and stopped the run at that message
/// after every restart.
#[test]
fn an_oversized_poison_message_reaches_the_dead_letter_topic_cut() {
    use harbour_sources::kafka::{DeadLetterProducer, Partition, Poison, MAX_DEAD_LETTER_PAYLOAD};
    let cfg = kafka_config("oversized");
    create_topics(&cfg).unwrap();
    let payload: Vec<u8> = (0..1_200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let source = Partition { topic: cfg.topics.fills.as_str().into(), partition: 0 };
    let reason = "x".repeat(5_000);
    let mut dlq = DeadLetterProducer::new(&cfg, "dead-letters");
    let poison =
        Poison { partition: &source, offset: 7, code: "parse", reason: &reason, payload: &payload, trade_date: None };
    dlq.send(&poison, Some(3)).unwrap();
    dlq.flush().unwrap();
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{}.dlq-reader", cfg.group_id))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&cfg.topics.dead_letters]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        assert!(Instant::now() < deadline, "no dead letter in 30 s");
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            break m.unwrap().detach();
        }
    };
    let header = |k: &str| {
        m.headers().and_then(|h| {
            h.iter().find(|x| x.key == k).and_then(|x| x.value).map(|v| String::from_utf8(v.to_vec()).unwrap())
        })
    };
    assert_eq!(m.payload().unwrap(), &payload[..MAX_DEAD_LETTER_PAYLOAD]);
    assert_eq!(header("harbour.truncated").as_deref(), Some("true"));
    assert_eq!(header("harbour.payload_bytes").as_deref(), Some("1200000"));
    assert_eq!(header("harbour.source.offset").as_deref(), Some("7"));
    assert_eq!(header("harbour.reason").map(|r| r.len()), Some(1_024));
    assert_eq!(header("harbour.epoch").as_deref(), Some("3"));
    assert_eq!(header("harbour.trade_date"), None, "not filed under a date");
    assert_eq!(dlq.held_through(0, 10).unwrap(), 3);
}

/// Topics written by a transactional producer (Kafka Connect, Flink's exactly-once sinks): every
/// partition ends in a transaction marker, one offset past its last message, and an aborted
/// transaction's messages sit between committed ones. The run still bootstraps, reads to the end
/// and stops there, with the tables of the committed lines alone.
#[test]
fn topics_of_a_transactional_producer_are_read_to_their_end() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let cfg = kafka_config("txn");
    let lines =
        generate(&GenerateConfig { fills: 1_500, quotes: 3_000, seed: 13, ..GenerateConfig::default() }).unwrap();
    create_topics(&cfg).unwrap();
    let producer: BaseProducer =
        cfg.client().unwrap().set("transactional.id", format!("{}.txn", cfg.group_id)).create().unwrap();
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    let t = &cfg.topics;
    let mut fill_accounts = std::collections::HashMap::new();
    let route = |line: &str, fill_accounts: &mut std::collections::HashMap<String, String>| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
        match field("type").as_str() {
            "instrument" => (t.instruments.clone(), field("symbol")),
            "fill" => {
                fill_accounts.insert(field("exec_id"), field("account"));
                (t.fills.clone(), field("account"))
            }
            "bust" => (t.fills.clone(), fill_accounts.get(&field("exec_id")).cloned().unwrap_or_default()),
            "order" => (t.orders.clone(), field("account")),
            "quote" | "close" => (t.market.clone(), field("symbol")),
            _ => (t.fills.clone(), line.chars().take(16).collect()),
        }
    };
    for (i, chunk) in lines.chunks(700).enumerate() {
        producer.begin_transaction().unwrap();
        for line in chunk {
            let (topic, key) = route(line, &mut fill_accounts);
            producer.send(BaseRecord::to(&topic).key(key.as_bytes()).payload(line.as_bytes())).unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.commit_transaction(timeout).unwrap();
        if i == 2 {
            // An aborted transaction on every input topic: none of it is read.
            producer.begin_transaction().unwrap();
            for topic in [&t.instruments, &t.fills, &t.market, &t.orders] {
                for n in 0..6 {
                    let junk = format!(r#"{{"type":"fill","exec_id":"ABORTED{n}"}}"#);
                    producer
                        .send(BaseRecord::to(topic).key(n.to_string().as_bytes()).payload(junk.as_bytes()))
                        .unwrap();
                }
            }
            producer.flush(timeout).unwrap();
            producer.abort_transaction(timeout).unwrap();
        }
    }
    let dir = temp("txn");
    let run = quick_run(&dir);
    let (tx, rx) = std::sync::mpsc::channel();
    let (cfg2, run2) = (cfg.clone(), run.clone());
    std::thread::spawn(move || {
        let out = run_to_parquet(&cfg2, &run2);
        let _ = tx.send(out.map(|o| (o.state, o.stats.lines)).map_err(|e| e.to_string()));
    });
    let (state, read) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run bootstraps and reaches the end of transactional topics within two minutes")
        .unwrap();
    assert_eq!(read, lines.len() as u64, "the committed lines, none of the aborted");
    assert_same_tables(&state, &file_replay(&lines), Compare::Exact);
    // The group's offsets are past the trailing markers: lag tools read 0 (they read 1 per
    // partition, the marker, until 2026-11-28).
    let group = InputConsumer::open(&cfg, &cfg.topics.inputs(), &Offsets::new()).unwrap();
    assert_eq!(group.committed().unwrap(), ends(&group), "committed offsets at the high watermarks");
    drop(group);

    // Retention deletes everything (each partition then starts at its end, one past the marker
    // the checkpoint's offsets point at): the restart starts past the markers it had read past,
    // instead of stopping as if unread messages were gone.
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let reader = InputConsumer::open(&cfg, &cfg.topics.inputs(), &Offsets::new()).unwrap();
    let mut upto = rdkafka::TopicPartitionList::new();
    for (p, (_, high)) in reader.watermarks().unwrap() {
        upto.add_partition_offset(&p.topic, p.partition, rdkafka::Offset::Offset(high)).unwrap();
    }
    drop(reader);
    let admin: AdminClient<DefaultClientContext> = cfg.client().unwrap().create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(admin.delete_records(&upto, &AdminOptions::new())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (cfg2, run2) = (cfg.clone(), run.clone());
    std::thread::spawn(move || {
        let _ = tx.send(run_to_parquet(&cfg2, &run2).map(|o| o.state).map_err(|e| e.to_string()));
    });
    let again = rx.recv_timeout(Duration::from_secs(60)).expect("the restart ends within a minute");
    assert_same_tables(&again.expect("a restart after retention"), &state, Compare::Exact);
    let _ = std::fs::remove_dir_all(dir);
}

/// `harbour kafka run` against input topics that do not exist stops at once, naming the first
/// missing one, and creates none of them (until 2026-11-27 it created every topic at start, so a
/// misspelt input topic was created empty and read as an idle one).
#[test]
fn a_missing_input_topic_stops_the_run_and_is_not_created() {
    let cfg = kafka_config("missing");
    let dir = temp("missing");
    let run = Running::spawn(
        parquet_only(&mut harbour(&cfg))
            .args(["kafka", "run", "--until-end", "--out"])
            .arg(dir.join("out"))
            .arg("--state")
            .arg(dir.join("state"))
            .stderr(Stdio::piped()),
    );
    let mut run = run;
    let stderr = run.stderr.take().unwrap();
    let status = wait_at_most(run, Duration::from_secs(60), "a run without its input topics");
    assert!(!status.success());
    let err = std::io::read_to_string(stderr).unwrap();
    assert!(err.contains(&format!("kafka topic `{}` does not exist", cfg.topics.instruments)), "{err}");
    let reader: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let metadata = reader.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    for topic in cfg.topics.inputs() {
        assert!(!metadata.topics().iter().any(|t| t.name() == topic && !t.partitions().is_empty()), "{topic} created");
    }
    // `harbour kafka topics` creates them; the run then reads the (empty) topics to their end.
    let out = harbour(&cfg).args(["kafka", "topics"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut run = Running::spawn(
        parquet_only(&mut harbour(&cfg))
            .args(["kafka", "run", "--until-end", "--out"])
            .arg(dir.join("out"))
            .arg("--state")
            .arg(dir.join("state"))
            .stderr(Stdio::piped()),
    );
    let stderr = run.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // (180 s: on a fresh broker the first transactional producer waits for the broker to create
    // its transaction log, which took over a minute in a clean-clone CI run.)
    let status = wait_at_most(run, Duration::from_secs(180), "a run on empty topics");
    assert!(status.success(), "{status}: {}", log.join().unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

/// A lease session timeout the broker refuses (below its `group.min.session.timeout.ms`, 6 s by
/// default) stops the process, naming the key, instead of leaving it standing by for ever.
#[test]
fn a_lease_session_timeout_the_broker_refuses_is_an_error() {
    let mut cfg = kafka_config("lease-timeout");
    cfg.lease.enabled = true;
    cfg.lease.topic = format!("{}.lease", cfg.group_id);
    cfg.lease.session_timeout_ms = 2_000;
    let mut lease = harbour_sources::kafka::Lease::join(&cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match lease.poll(Duration::from_millis(200)) {
            Err(e) => break e.to_string(),
            Ok(held) => assert!(!held, "a refused member holds no lease"),
        }
        assert!(Instant::now() < deadline, "still standing by after 30 s");
    };
    assert!(err.contains("kafka.lease.session_timeout_ms"), "{err}");
}

/// Partitions added to an input topic while the run reads are found (the watermark thread looks
/// at the topics' metadata every 2 s) and read from their beginning, with no restart; before,
/// their messages were never read until a restart, and their lag never reported.
#[test]
fn partitions_added_while_running_are_read_from_their_beginning() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let cfg = kafka_config("grow");
    let lines = generate(&GenerateConfig { fills: 800, quotes: 800, seed: 17, ..GenerateConfig::default() }).unwrap();
    create_topics(&cfg).unwrap();
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let dir = temp("grow");
    let run = KafkaRun { checkpoint_every: Duration::from_millis(200), stop_at_end: false, ..quick_run(&dir) };
    let stop = Arc::new(AtomicBool::new(false));
    let (cfg2, run2, stop2) = (cfg.clone(), run.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let sinks: Vec<Box<dyn EpochSink + Send>> =
            vec![Box::new(ParquetEpochSink::new(ParquetSink::new(&run2.out_dir)))];
        kafka::run(
            &cfg2,
            &run2,
            &engine_config(1_000),
            &Metrics::default(),
            &Arc::new(Health::default()),
            sinks,
            &stop2,
        )
        .map(|o| o.state)
        .map_err(|e| e.to_string())
    });
    let store = harbour::checkpoint::CheckpointStore::reader(&run.state_dir);
    let read = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.load().ok().flatten().is_none_or(|c| c.engine.lines < n as u64) {
            assert!(Instant::now() < deadline, "{what} not read within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    read(lines.len(), "the day");
    let admin: AdminClient<DefaultClientContext> = cfg.client().unwrap().create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let grown = rt.block_on(admin.create_partitions(&[NewPartitions::new(&cfg.topics.fills, 5)], &AdminOptions::new()));
    assert!(grown.unwrap().iter().all(Result::is_ok));
    let producer: BaseProducer = cfg.client().unwrap().create().unwrap();
    for partition in [3, 4] {
        let fill = format!(
            r#"{{"type":"fill","exec_id":"GROW{partition}","order_id":"OG","account":"AG","strategy":"S","symbol":"00700","side":"BUY","qty":"100","price":"385.2","ts":"{}T10:00:00+08:00"}}"#,
            GenerateConfig::default().date
        );
        producer
            .send(BaseRecord::to(&cfg.topics.fills).partition(partition).key("AG").payload(fill.as_bytes()))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    read(lines.len() + 2, "the fills of the added partitions");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let state = t.join().unwrap().expect("a clean stop");
    let grown: Vec<String> =
        state.fills.rows().filter(|f| f.fill.exec_id.starts_with("GROW")).map(|f| f.fill.exec_id.to_string()).collect();
    assert_eq!(grown, ["GROW3", "GROW4"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// The OMD-C bridge counts its dead letters as the pipeline does: a capture with every 40th
/// datagram of line A damaged publishes each as a dead letter, counted by reason in
/// `harbour_source_dead_letters_total` and sent in `harbour_kafka_dead_letters_sent_total` (the
/// bridge exported no metrics before, and counted them only in its exit summary); the feed
/// handler's counters (packets, A/B duplicates, gaps, losses) are exported as they change.
#[test]
fn the_omdc_bridge_counts_its_dead_letters() {
    use harbour::hkex::{self as hk, FeedSource};
    use harbour_sources::hkex::day::DayEncoding;
    let cfg = kafka_config("omdc-dead");
    let lines = generate(&GenerateConfig { fills: 300, quotes: 900, seed: 37, ..GenerateConfig::default() }).unwrap();
    let dir = temp("omdc-dead");
    let (capture, other) = (dir.join("day.omdc"), dir.join("other.jsonl"));
    hk::encode(&lines, &capture, &other, &DayEncoding::default()).unwrap();
    let damaged = dir.join("damaged.omdc");
    let broken = common::damage_line_a(&capture, &damaged, 40) as u64;
    assert!(broken > 3);
    create_topics(&cfg).unwrap();
    let metrics = Metrics::default();
    let published = hk::publish(&FeedSource::Capture(damaged), &cfg, None, &AtomicBool::new(false), &metrics).unwrap();
    assert_eq!(published.dead_letters, broken);
    let text = metrics.render();
    let value = |line_start: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
    };
    assert_eq!(value("harbour_source_dead_letters_total{reason=\"omdc_decode\"}"), broken, "{text}");
    assert_eq!(value("harbour_kafka_dead_letters_sent_total "), broken, "{text}");
    // The feed handler's counters are metrics too (they were only in the exit summary).
    let f = &published.feed;
    assert!(f.packets > 100 && f.duplicates > 0 && f.decode_errors > 0, "{f:?}");
    for (counter, want) in [
        ("packets", f.packets),
        ("messages", f.messages),
        ("duplicates", f.duplicates),
        ("decode_errors", f.decode_errors),
        ("gaps", f.gaps),
        ("lost", f.lost),
    ] {
        assert_eq!(value(&format!("harbour_omdc_feed_total{{counter=\"{counter}\"}}")), want, "{counter}: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Limits changed while no message comes take effect at once, in an epoch without messages (until
/// 2026-11-28 they waited for the next message: a limit lowered at the lunch break alerted at
/// 13:00); the epoch is logged, so a restart that re-forms the log re-forms it at the same time
/// with the same alert, and the next epoch's time is past it.
#[test]
fn limits_changed_while_the_input_is_idle_apply_at_once_and_re_form_on_restart() {
    use harbour_dataflows::risk::book::{AlertKind, Metric};
    use harbour_dataflows::rollups::Group;
    use std::sync::atomic::Ordering;
    let cfg = kafka_config("limits-idle");
    let (lines, dir, _) = day_on_disk(&cfg, "limits-idle", 400, 31);
    publish_lines(&cfg, lines.iter().map(String::as_str)).unwrap();
    let limits = dir.join("limits.toml");
    std::fs::write(&limits, "[desk]\ngross = { soft = \"1000000000000000\" }\n").unwrap();
    let mut config = engine_config(300);
    config.limits_watch = Some((limits.clone(), Duration::from_millis(50)));
    let run = KafkaRun { stop_at_end: false, ..day_run(&dir) };
    let start = |run: KafkaRun, stop: Arc<AtomicBool>, health: Arc<Health>| {
        let (cfg, config) = (cfg.clone(), config.clone());
        std::thread::spawn(move || {
            let sinks: Vec<Box<dyn EpochSink + Send>> =
                vec![Box::new(ParquetEpochSink::new(ParquetSink::new(&run.out_dir)))];
            kafka::run(&cfg, &run, &config, &Metrics::default(), &health, sinks, &stop).unwrap()
        })
    };
    let (stop, health) = (Arc::new(AtomicBool::new(false)), Arc::new(Health::default()));
    let running = start(run.clone(), stop.clone(), health.clone());
    // Caught up and idle: every line read, no epoch sealed for a second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let idle_at = loop {
        assert!(Instant::now() < deadline, "the run did not read the day");
        let e = health.epoch.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        if health.lines.load(Ordering::Relaxed) == lines.len() as u64 && health.epoch.load(Ordering::Relaxed) == e {
            break e;
        }
    };
    assert!(idle_at > 0);
    // The desk's gross limit lowered below its gross, with nothing published.
    std::fs::write(&limits, "[desk]\ngross = { soft = \"1\" }\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health.epoch.load(Ordering::Relaxed) == idle_at {
        assert!(Instant::now() < deadline, "the new limits waited for input");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reload = health.epoch.load(Ordering::Relaxed);
    assert_eq!(
        (reload, health.lines.load(Ordering::Relaxed)),
        (lines.len() as u64 + 1, lines.len() as u64),
        "an epoch past the last line, without lines of its own (the last epoch was {idle_at})"
    );
    // (The epoch is logged once the engine has sealed it.)
    let log = loop {
        let log = std::fs::read_to_string(dir.join("state").join("epochs.log")).unwrap();
        if log.contains(&format!("{{\"epoch\":{reload},")) {
            break log;
        }
        assert!(Instant::now() < deadline, "the reload's epoch was not logged:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    let first = running.join().unwrap();
    let breach: Vec<_> = first
        .state
        .alerts
        .versioned()
        .into_iter()
        .filter(|a| a.row.group == Group::Desk && a.row.metric == Metric::Gross && a.row.kind == AlertKind::Breach)
        .collect();
    assert_eq!(breach.len(), 1, "{breach:?}");
    assert_eq!(breach[0].version, reload, "the breach alerted in the epoch of the reload");
    // A restart that re-forms every logged epoch (no checkpoint) re-forms the reload's epoch too.
    for f in std::fs::read_dir(dir.join("state")).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("checkpoint")) {
            std::fs::remove_file(f).unwrap();
        }
    }
    std::fs::write(dir.join("state").join("epochs.log"), &log).unwrap();
    let again = kafka::run(
        &cfg,
        &KafkaRun { stop_at_end: true, ..run.clone() },
        &config,
        &Metrics::default(),
        &Arc::new(Health::default()),
        vec![Box::new(ParquetEpochSink::new(ParquetSink::new(&run.out_dir)))],
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(again.restored_from, 0);
    assert!(again.replayed >= 2, "{} epochs re-formed", again.replayed);
    assert_eq!(again.state.alerts.versioned(), first.state.alerts.versioned(), "the same alerts at the same versions");
    // A restart from that run's final checkpoint, with one more message: its epoch is past the
    // reload's (a restore that went back to the line count would reuse the reload's time).
    let quote = lines.iter().rev().find(|l| l.contains("\"type\":\"quote\"")).unwrap();
    publish_lines(&cfg, [quote.as_str()]).unwrap();
    let health = Arc::new(Health::default());
    let third = kafka::run(
        &cfg,
        &KafkaRun { stop_at_end: true, ..run.clone() },
        &config,
        &Metrics::default(),
        &health,
        vec![Box::new(ParquetEpochSink::new(ParquetSink::new(&run.out_dir)))],
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(third.restored_from >= reload, "restored from {}", third.restored_from);
    assert_eq!(third.stats.lines, lines.len() as u64 + 1, "the new message read");
    let newest = health.epoch.load(Ordering::Relaxed);
    assert_eq!(newest, reload + 1, "the new message's epoch is past the reload's");
    let _ = std::fs::remove_dir_all(dir);
}

/// The alerts topic is written in transactions: a batch cut short (its producer gone before the
/// commit) is never seen by `read_committed` consumers and is aborted when the next producer with
/// the id starts; the next sink reads the newest version the topic holds, which the run then
/// hands it nothing up to (a replay does not send an alert twice).
#[test]
fn alerts_are_written_in_transactions_and_a_restart_knows_how_far_they_got() {
    use harbour::kafka::alerts::AlertsEpochSink;
    use harbour_dataflows::risk::book::{AlertKind, AlertRow, Metric};
    use harbour_dataflows::risk::limits::Severity;
    use harbour_dataflows::rollups::Group;
    use harbour_sinks::tables::{Change, Changes};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let cfg = kafka_config("alerts-txn");
    create_topics(&cfg).unwrap();
    let alert = |account: &str, version: u64| Change {
        row: AlertRow {
            group: Group::Account(account.into()),
            metric: Metric::Gross,
            severity: Severity::Soft,
            seq: 1,
            kind: AlertKind::Breach,
            value: rust_decimal::Decimal::from(2_000),
            level: rust_decimal::Decimal::from(1_000),
            ts: 1,
            drivers: vec![],
        },
        version,
        deleted: false,
    };
    let state = OutputState::default();
    let mut sink = AlertsEpochSink::new(&cfg);
    assert_eq!(sink.resume(&state, 0, 0, 0).unwrap(), 0, "an empty topic holds nothing");
    let batch = |alerts: Vec<Change<AlertRow>>| Changes { alerts, ..Changes::default() };
    sink.write_through(5, &state, &batch(vec![alert("A", 5), alert("B", 5)])).unwrap();
    sink.write_through(9, &state, &batch(vec![alert("C", 9)])).unwrap();
    sink.write_through(10, &state, &batch(vec![])).unwrap();
    drop(sink);
    // A process killed in the middle of a batch: sent, never committed.
    let cut: BaseProducer = cfg
        .client()
        .unwrap()
        .set("transactional.id", format!("{}.alerts", cfg.group_id))
        .set("transaction.timeout.ms", "600000")
        .create()
        .unwrap();
    cut.init_transactions(Duration::from_secs(30)).unwrap();
    cut.begin_transaction().unwrap();
    for p in 0..cfg.partitions {
        let record = BaseRecord::to(&cfg.topics.alerts).key("D").payload("{}").partition(p).headers(
            rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header { key: "harbour.version", value: Some("12") }),
        );
        cut.send(record).map_err(|(e, _)| e).unwrap();
    }
    cut.flush(Duration::from_secs(30)).unwrap();
    std::mem::forget(cut); // (no abort, no commit: as after SIGKILL)
                           // The next process: its producer aborts the open batch; the topic holds through version 9.
    let mut next = AlertsEpochSink::new(&cfg);
    assert_eq!(next.resume(&state, 0, 0, 20).unwrap(), 9, "held through the newest committed version");
    assert_eq!(next.resume(&state, 0, 11, 20).unwrap(), 11, "what every sink holds stays held");
    assert_eq!(next.resume(&state, 0, 3, 7).unwrap(), 3, "versions past this state folder's are another run's");
    let mut got = committed_messages(&cfg, &cfg.topics.alerts);
    got.sort();
    let want: Vec<(String, u64)> =
        [("A", 5), ("B", 5), ("C", 9)].iter().map(|(a, v)| (format!("account:{a}:gross:soft:1:breach"), *v)).collect();
    assert_eq!(got, want, "the cut batch is not seen");
    // The producer still writes after the abort.
    next.write_through(13, &state, &batch(vec![alert("E", 13)])).unwrap();
    assert_eq!(committed_messages(&cfg, &cfg.topics.alerts).len(), 4);
    drop(next);
    // Each state folder reads its own progress (its run identity on every message): another
    // run's versions, below this one's newest epoch, are not taken as sent by it.
    let mut a = AlertsEpochSink::new(&cfg);
    a.set_run("run-a");
    assert_eq!(a.resume(&state, 0, 0, 100).unwrap(), 0, "no message of run-a yet");
    a.write_through(40, &state, &batch(vec![alert("F", 40)])).unwrap();
    drop(a);
    let mut b = AlertsEpochSink::new(&cfg);
    b.set_run("run-b");
    assert_eq!(b.resume(&state, 0, 2, 100).unwrap(), 2, "run-a's versions are not run-b's progress");
    drop(b);
    let mut a = AlertsEpochSink::new(&cfg);
    a.set_run("run-a");
    assert_eq!(a.resume(&state, 0, 0, 100).unwrap(), 40);
}

/// A sink that acknowledges epochs up to `fail_after` and fails after `delay` on the next: the
/// run goes on meanwhile (the sink has a thread of its own), handing the other sinks later epochs,
/// then stops with an error and no final checkpoint, as after a crash.
struct SlowlyFailingSink {
    fail_after: u64,
    delay: Duration,
}

impl EpochSink for SlowlyFailingSink {
    fn name(&self) -> &'static str {
        "slowly-failing"
    }

    fn write_through(
        &mut self,
        epoch: u64,
        _s: &OutputState,
        _c: &harbour_sinks::tables::Changes,
    ) -> Result<(), String> {
        if epoch > self.fail_after {
            std::thread::sleep(self.delay);
            Err(format!("refusing epoch {epoch}"))
        } else {
            Ok(())
        }
    }

    fn flush_every(&self) -> Option<Duration> {
        Some(Duration::ZERO)
    }

    fn wants_changes(&self) -> bool {
        false
    }

    fn reads_state(&self) -> bool {
        false
    }
}

/// After a crash that left the alerts topic ahead of the epochs every sink holds, the restart
/// re-forms those epochs and sends none of their alerts again: the topic holds each alert of the
/// day once (until 2026-11-28 they were all sent again).
#[test]
fn a_replay_after_a_crash_sends_no_alert_again() {
    use harbour::kafka::alerts::AlertsEpochSink;
    let (cfg, gen, dir, run) = published_day("alerts-replay", 23);
    let mut config = engine_config(300);
    config.graph.risk = common::risk_config(&gen);
    let with = |sinks: Vec<Box<dyn EpochSink + Send>>| try_run(&cfg, &run, &config, sinks);
    // The first run: the alerts topic takes the day while the other sink holds nothing past the
    // bootstrap's epoch.
    let crashed = with(vec![
        Box::new(AlertsEpochSink::new(&cfg)),
        Box::new(SlowlyFailingSink { fail_after: 1, delay: Duration::from_secs(4) }),
    ]);
    assert!(crashed.is_err());
    let before = committed_messages(&cfg, &cfg.topics.alerts);
    assert!(before.len() >= 5, "the first run sent alerts past what every sink held: {before:?}");
    let day = with(vec![Box::new(AlertsEpochSink::new(&cfg))]).unwrap();
    assert_eq!(day.restored_from, 0, "no checkpoint: every logged epoch re-formed");
    let fired: Vec<(String, u64)> = day.state.alerts.versioned().iter().map(|a| (a.row.id(), a.version)).collect();
    same_multiset(committed_messages(&cfg, &cfg.topics.alerts), fired, "each alert of the day once");
    let _ = std::fs::remove_dir_all(dir);
}

/// After a crash that left the dead-letter topic ahead of the epochs every sink holds, the
/// restart re-forms those epochs and sends none of their dead letters again: the topic holds each
/// poison message of the day once (until 2026-11-28 they were all sent again: at least once).
#[test]
fn a_replay_after_a_crash_sends_no_dead_letter_again() {
    let (cfg, _, dir, run) = published_day("dlq-replay", 29);
    let with = |sinks: Vec<Box<dyn EpochSink + Send>>| try_run(&cfg, &run, &engine_config(300), sinks);
    let crashed = with(vec![Box::new(SlowlyFailingSink { fail_after: 1, delay: Duration::from_secs(4) })]);
    assert!(crashed.is_err());
    let before = committed_with(&cfg, &cfg.topics.dead_letters, "harbour.epoch");
    assert!(before.len() >= 5, "the first run sent dead letters past what every sink held: {before:?}");
    let day = with(vec![Box::new(ParquetEpochSink::new(ParquetSink::new(&run.out_dir)))]).unwrap();
    assert_eq!(day.restored_from, 0, "no checkpoint: every logged epoch re-formed");
    let sent: Vec<String> =
        committed_with(&cfg, &cfg.topics.dead_letters, "harbour.epoch").into_iter().map(|(k, _)| k).collect();
    let refused: Vec<String> = day.state.dead_letters.iter().map(|d| format!("{}/{}", d.source, d.position)).collect();
    same_multiset(sent, refused, "each dead letter of the day once");
    let _ = std::fs::remove_dir_all(dir);
}
