//! `harbour-bench`: throughput and memory of Harbour's dataflows, one timely worker, release build.
//!
//! ```text
//! cargo run --release -p harbour-benches -- all          # the README's table
//! cargo run --release -p harbour-benches -- fills 1000 2000000
//! cargo run --release -p harbour-benches -- quotes 100000 3000000
//! cargo run --release -p harbour-benches -- scale 1000000 1000000
//! cargo run --release -p harbour-benches -- deep-key 100000
//! cargo run --release -p harbour-benches -- late 100000
//! cargo run --release -p harbour-benches -- memory 1000000
//! cargo run --release -p harbour-benches -- hkex 2000000    # OMD-C decode and book building
//! cargo run --release -p harbour-benches -- freshness 50000 12   # Kafka -> ClickHouse/Redis latency
//! cargo run --release -p harbour-benches -- freshness 50000 12 redis   # the same, Redis the only sink
//! ```
//!
//! To profile the measured part of the dataflow benchmarks only (not their set-up):
//!
//! ```text
//! mkfifo /tmp/ctl
//! HARBOUR_PERF_CTL=/tmp/ctl perf record --delay=-1 --control=fifo:/tmp/ctl -- target/release/harbour-bench scale 1000000
//! ```
//!
//! Inputs are built in memory before the clock starts (parsing JSON is the sources' cost, measured
//! separately by `parse`). Each epoch feeds a batch, seals it and steps the worker until every
//! output (positions valued at marks, enriched fills, roll-ups, minute flows) is complete for it.

mod freshness;
mod hkex;
mod risk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::input::{Input, InputSession};
use harbour_dataflows::fees::CostSchedules;
use harbour_dataflows::graph::{harbour, GraphConfig, Inputs};
use harbour_dataflows::marks::MarkPolicy;
use harbour_dataflows::model::{Fill, Instrument, MarketEvent, Order, PositionKey, Quote, Side, Symbol};
use rust_decimal::Decimal;
use timely::dataflow::ProbeHandle;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: i64 = 1_772_415_000_000_000_000; // 2026-03-02T09:30:00+08:00
const SYMBOLS: u32 = 500;
const BATCH: usize = 10_000;

struct Harness {
    worker: timely::worker::Worker,
    fills: InputSession<u64, std::sync::Arc<Fill>, isize>,
    market: InputSession<u64, MarketEvent, isize>,
    _orders: InputSession<u64, Order, isize>,
    _instruments: InputSession<u64, Instrument, isize>,
    probe: ProbeHandle<u64>,
    epoch: u64,
    batch: usize,
}

impl Harness {
    fn new() -> Harness {
        use timely::communication::allocator::thread::Thread;
        let alloc = timely::communication::Allocator::Thread(Thread::default());
        let mut worker = timely::worker::Worker::new(timely::WorkerConfig::default(), alloc, Some(Instant::now()));
        let config = GraphConfig {
            schedules: Arc::new(CostSchedules::default()),
            marks: MarkPolicy::default(),
            ..GraphConfig::default()
        };
        let (fills, market, orders, instruments, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (fi, fills) = scope.new_collection();
            let (mi, market) = scope.new_collection();
            let (oi, orders) = scope.new_collection();
            let (ii, instruments) = scope.new_collection();
            let (_l, limits) = scope.new_collection();
            let (_s, seeds) = scope.new_collection();
            let (_t, status) = scope.new_collection();
            let out = harbour(Inputs { fills, market, orders, instruments, status, limits, seeds }, &config);
            let (probe, _) = out.positions.probe();
            let _ = out.fills.probe_with(&probe);
            let _ = out.rollups.probe_with(&probe);
            let _ = out.minutes.probe_with(&probe);
            (fi, mi, oi, ii, probe)
        });
        let mut h = Harness {
            worker,
            fills,
            market,
            _orders: orders,
            _instruments: instruments,
            probe,
            epoch: 0,
            batch: BATCH,
        };
        for s in 0..SYMBOLS {
            h.market.insert(MarketEvent::Listed(symbol(s)));
            h.market.insert(MarketEvent::Quote(Quote {
                symbol: symbol(s),
                ts: T0,
                bid: None,
                ask: None,
                last: Some(price(s, 0)),
                cleared: Default::default(),
                seq: 0,
            }));
        }
        h.seal();
        h
    }

    fn seal(&mut self) {
        self.epoch += 1;
        self.fills.advance_to(self.epoch);
        self.market.advance_to(self.epoch);
        self.fills.flush();
        self.market.flush();
        let (probe, epoch) = (&self.probe, self.epoch);
        self.worker.step_while(|| probe.less_than(&epoch));
    }

    /// Feeds fills in batches before a measurement (not profiled); returns the elapsed time.
    fn load(&mut self, fills: Vec<Fill>) -> Duration {
        let start = Instant::now();
        let mut fills = fills.into_iter().peekable();
        while fills.peek().is_some() {
            for f in fills.by_ref().take(self.batch) {
                self.fills.insert(std::sync::Arc::new(f));
            }
            self.seal();
        }
        start.elapsed()
    }

    /// Feeds fills in batches, the measured part; returns the elapsed time.
    fn run_fills(&mut self, fills: Vec<Fill>) -> Duration {
        let _profiled = Profiled::start();
        self.load(fills)
    }

    fn run_quotes(&mut self, quotes: Vec<Quote>) -> Duration {
        let _profiled = Profiled::start();
        let start = Instant::now();
        let mut quotes = quotes.into_iter().peekable();
        while quotes.peek().is_some() {
            for q in quotes.by_ref().take(self.batch) {
                self.market.insert(MarketEvent::Quote(q));
            }
            self.seal();
        }
        start.elapsed()
    }
}

/// Profiles the timed part only: with `HARBOUR_PERF_CTL` naming the control FIFO of a
/// `perf record --delay=-1 --control=fifo:<path>` that launched this process, sampling is enabled
/// for the life of the guard (the measured part, not the set-up before it).
struct Profiled(Option<std::fs::File>);

impl Profiled {
    fn start() -> Profiled {
        use std::io::Write;
        let Ok(path) = std::env::var("HARBOUR_PERF_CTL") else { return Profiled(None) };
        let mut ctl =
            std::fs::OpenOptions::new().write(true).open(path).expect("HARBOUR_PERF_CTL: a perf control FIFO");
        ctl.write_all(b"enable\n").expect("perf control FIFO");
        Profiled(Some(ctl))
    }
}

impl Drop for Profiled {
    fn drop(&mut self) {
        use std::io::Write;
        if let Some(ctl) = &mut self.0 {
            let _ = ctl.write_all(b"disable\n");
        }
    }
}

fn symbol(s: u32) -> Symbol {
    Symbol(10_000 + s)
}

/// A price on the grid of the 100–200 band (tick 0.1).
fn price(s: u32, k: u64) -> Decimal {
    Decimal::new(1_000 + (s as i64 * 7 + k as i64 * 13) % 900, 1)
}

/// Fill `i` for position `p` of `positions` (2 000 accounts × 500 symbols at most).
fn fill(i: u64, p: u64, books: &[(smol_str::SmolStr, smol_str::SmolStr)]) -> Fill {
    let s = (p % SYMBOLS as u64) as u32;
    Fill {
        ts: T0 + i as i64 * 1_000_000,
        exec_id: format!("X{i}").into(),
        order_id: format!("O{}", i / 4).into(),
        key: PositionKey {
            account: books[(p / SYMBOLS as u64) as usize].0.clone(),
            strategy: books[(p / SYMBOLS as u64) as usize].1.clone(),
            symbol: symbol(s),
        },
        side: if (i * 7 + p).is_multiple_of(3) { Side::Sell } else { Side::Buy },
        qty: 100 * (1 + (i % 5) as i64),
        price: price(s, i),
        commission: None,
        stamp_duty_exempt: false,
        odd_lot: false,
        source_seq: i,
    }
}

/// The (account, strategy) books for `positions` positions over 500 symbols: at most 50 accounts,
/// then more strategies per account (1M positions = 50 accounts × 40 strategies × 500 symbols), so
/// the number of roll-up groups stays desk-sized as positions grow.
fn accounts(positions: u64) -> Vec<(smol_str::SmolStr, smol_str::SmolStr)> {
    (0..positions.div_ceil(SYMBOLS as u64))
        .map(|b| (format!("ACC-{:03}", b % 50).into(), format!("strat-{:03}", b / 50).into()))
        .collect()
}

fn fills_for(positions: u64, n: u64, offset: u64) -> Vec<Fill> {
    let accts = accounts(positions);
    (0..n).map(|i| fill(offset + i, (offset + i) % positions, &accts)).collect()
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Runs `f` `RUNS` times; returns the median duration, printing the spread.
fn median(label: &str, n: u64, unit: &str, mut f: impl FnMut() -> Duration) -> f64 {
    let mut runs: Vec<Duration> = (0..RUNS).map(|_| f()).collect();
    runs.sort();
    let mid = runs[runs.len() / 2].as_secs_f64();
    let (lo, hi) = (runs[0].as_secs_f64(), runs[runs.len() - 1].as_secs_f64());
    println!(
        "{label}  {:>12.0} {unit}/s  {:>7.0} ns/{unit}  (median of {RUNS}; {:.0}–{:.0} {unit}/s)",
        n as f64 / mid,
        mid * 1e9 / n as f64,
        n as f64 / hi,
        n as f64 / lo
    );
    mid * 1e9 / n as f64
}

/// Runs of each measurement; the median is reported (this machine's timings vary by ±15%).
const RUNS: usize = 5;

fn bench_fills(positions: u64, n: u64) -> f64 {
    median(&format!("fills     positions={positions:>9} fills={n:>9}"), n, "fill", || {
        let mut h = Harness::new();
        // Every position exists before the clock starts, so the run measures steady state.
        h.load(fills_for(positions, positions, 0));
        h.run_fills(fills_for(positions, n, positions))
    })
}

fn bench_quotes(positions: u64, n: u64) -> f64 {
    median(&format!("quotes    positions={positions:>9} quotes={n:>8}"), n, "quote", || {
        let mut h = Harness::new();
        h.load(fills_for(positions, positions, 0));
        let quotes: Vec<Quote> = (0..n)
            .map(|i| {
                let s = (i * 7919 % SYMBOLS as u64) as u32;
                Quote {
                    symbol: symbol(s),
                    ts: T0 + 1_000_000_000 + i as i64,
                    bid: None,
                    ask: None,
                    last: Some(price(s, i)),
                    cleared: Default::default(),
                    seq: 0,
                }
            })
            .collect();
        h.run_quotes(quotes)
    })
}

/// Per-fill cost as the number of live positions grows, with the same access pattern: epochs of
/// 1,000 fills, each fill on a different position (a stride through all of them).
fn bench_scale(positions: u64, n: u64) -> f64 {
    median(&format!("scale     positions={positions:>9} fills={n:>9}"), n, "fill", || {
        let mut h = Harness::new();
        h.load(fills_for(positions, positions, 0));
        h.batch = 1_000;
        let accts = accounts(positions);
        let stride = 7_919u64; // prime, so consecutive fills land on unrelated positions
        let fills: Vec<Fill> = (0..n).map(|i| fill(positions + i, (i * stride) % positions, &accts)).collect();
        h.run_fills(fills)
    })
}

/// Per-fill cost of 100,000 fills on one key that already holds `history` fills, against the
/// same 100,000 fills on one key that starts empty.
fn bench_deep_key(history: u64) -> (f64, f64) {
    let n = 100_000u64;
    let book: Vec<(smol_str::SmolStr, smol_str::SmolStr)> = vec![("DEEP".into(), "deep".into())];
    let fresh = median(&format!("deep-key  history={:>9} fills={n:>9}", 0), n, "fill", || {
        let mut h = Harness::new();
        h.run_fills((history..history + n).map(|i| fill(i, 0, &book)).collect())
    });
    let deep = median(&format!("deep-key  history={history:>9} fills={n:>9}"), n, "fill", || {
        let mut h = Harness::new();
        h.load((0..history).map(|i| fill(i, 0, &book)).collect());
        h.run_fills((history..history + n).map(|i| fill(i, 0, &book)).collect())
    });
    println!("          per-fill cost on a key holding {history} fills / on an empty key: {:.2}", deep / fresh);
    (fresh, deep)
}

/// Cost of a late fill (one that lands 100 fills before the end of its key's book) on a key holding
/// `history` fills: the fold replays from the snapshot before it, so the cost depends on the depth,
/// not on the history. One late fill per epoch.
fn bench_late(history: u64) -> f64 {
    let n = 2_000u64;
    let book: Vec<(smol_str::SmolStr, smol_str::SmolStr)> = vec![("LATE".into(), "late".into())];
    median(&format!("late      history={history:>9} fills={n:>9}"), n, "fill", || {
        let mut h = Harness::new();
        h.load((0..history).map(|i| fill(i, 0, &book)).collect());
        h.batch = 1;
        let slot = T0 + (history as i64 - 100) * 1_000_000 + 500_000;
        let late: Vec<Fill> = (0..n)
            .map(|j| {
                let mut f = fill(history + j, 0, &book);
                f.ts = slot;
                f
            })
            .collect();
        h.run_fills(late)
    })
}

fn bench_memory(positions: u64) -> f64 {
    let before = peak_rss_mb();
    let mut h = Harness::new();
    h.load(fills_for(positions, positions, 0));
    let peak = peak_rss_mb();
    let per_million = (peak - before) * 1_000_000.0 / positions as f64;
    println!("memory    positions={positions:>9}: peak RSS {peak:.0} MB ({per_million:.0} MB per million positions, one fill each)");
    per_million
}

fn bench_parse(n: u64) {
    let f = fills_for(1000, n, 0);
    let lines: Vec<String> = f
        .into_iter()
        .map(|f| harbour_sources::contract::to_line(&harbour_dataflows::validate::Input::Fill(f)))
        .collect();
    let start = Instant::now();
    let mut ok = 0;
    for (i, l) in lines.iter().enumerate() {
        if harbour_sources::contract::parse_line(l, i as u64).is_ok() {
            ok += 1;
        }
    }
    let t = start.elapsed();
    assert_eq!(ok, lines.len());
    println!("parse     lines={n:>9}  {:>8.3} s  {:>12.0} fill lines/s", t.as_secs_f64(), n as f64 / t.as_secs_f64());
}

fn bench_fees(n: u64) {
    let fills = fills_for(1000, n, 0);
    let schedules = CostSchedules::default();
    let start = Instant::now();
    let mut total = Decimal::ZERO;
    for f in fills {
        total += harbour_dataflows::pnl::fees_of(&f, &schedules).total;
    }
    let t = start.elapsed();
    println!(
        "fees      fills={n:>9}  {:>8.3} s  {:>7.0} ns/fill (total {total})",
        t.as_secs_f64(),
        t.as_secs_f64() * 1e9 / n as f64
    );
}

/// Kafka to positions on a real broker (`HARBOUR_KAFKA_BOOTSTRAP`): a day of `fills` fill messages
/// (plus its instruments and busts) is produced once; then cold runs from an empty checkpoint
/// folder read it all (parse, rules, positions, fees, P&L, roll-ups; no sink but the checkpoint),
/// and a restart from the checkpoint the last cold run left is timed to caught-up.
/// A generated day of `fills` fills, no quotes and no invalid lines, keeping the lines of `kinds`
/// (contract types) only.
fn fill_day(fills: u64, kinds: &[&str]) -> anyhow::Result<Vec<String>> {
    use harbour_sources::generate::{generate, GenerateConfig};
    let day = generate(&GenerateConfig {
        fills: fills as usize,
        quotes: 0,
        invalid_ratio: 0.0,
        ..GenerateConfig::default()
    })?;
    let tags: Vec<String> = kinds.iter().map(|k| format!("\"type\":\"{k}\"")).collect();
    Ok(day.into_iter().filter(|l| tags.iter().any(|t| l.contains(t.as_str()))).collect())
}

/// Topics and group of their own (named after `tag`), 4 partitions each; librdkafka properties
/// from `HARBOUR_BENCH_KAFKA_PROPERTIES` (`name=value,name=value`), as `kafka.properties` would
/// pass them.
fn kafka_config(tag: &str, bootstrap: String) -> harbour_sources::kafka::KafkaConfig {
    use harbour_sources::kafka::{KafkaConfig, Topics};
    let properties = std::env::var("HARBOUR_BENCH_KAFKA_PROPERTIES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    KafkaConfig {
        properties,
        bootstrap,
        group_id: format!("{tag}.group"),
        topics: Topics {
            fills: format!("{tag}.fills"),
            orders: format!("{tag}.orders"),
            market: format!("{tag}.market"),
            instruments: format!("{tag}.instruments"),
            dead_letters: format!("{tag}.dead-letters"),
            alerts: format!("{tag}.alerts"),
        },
        partitions: 4,
        ..KafkaConfig::default()
    }
}

fn bench_kafka(fills: u64) -> anyhow::Result<()> {
    use harbour::kafka::{self, KafkaRun};
    use harbour_sources::kafka::{create_topics, publish_lines};
    use std::sync::atomic::AtomicBool;

    let bootstrap = std::env::var("HARBOUR_KAFKA_BOOTSTRAP").map_err(|_| {
        anyhow::anyhow!("the kafka benchmark needs HARBOUR_KAFKA_BOOTSTRAP (eval \"$(deploy/kafka.sh start)\")")
    })?;
    let tag = format!("bench.{}.{}", std::process::id(), fills);
    let cfg = crate::kafka_config(&tag, bootstrap);
    let lines = fill_day(fills, &["instrument", "fill", "bust"])?;
    create_topics(&cfg)?;
    let t = Instant::now();
    publish_lines(&cfg, lines.iter().map(String::as_str))?;
    println!("kafka     produced {} messages in {:.2}s", lines.len(), t.elapsed().as_secs_f64());

    let dir = std::env::temp_dir().join(format!("harbour-bench-{tag}"));
    let config = harbour::engine::EngineConfig::new(10_000);
    let run = KafkaRun {
        epoch_events: 10_000,
        epoch_max: Duration::from_millis(100),
        flush_every: Duration::from_secs(1),
        checkpoint_every: Duration::from_secs(3600),
        stop_at_end: true,
        state_dir: dir.join("state"),
        out_dir: dir.join("out"),
    };
    let once = || -> anyhow::Result<kafka::KafkaOutcome> {
        let metrics = harbour::metrics::Metrics::default();
        let health = std::sync::Arc::new(harbour::metrics::Health::default());
        Ok(kafka::run(&cfg, &run, &config, &metrics, &health, Vec::new(), &AtomicBool::new(false))?)
    };
    // HARBOUR_BENCH_RUNS=1: one cold start and no restarts (for profiling the cold start alone).
    let runs: usize = std::env::var("HARBOUR_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut cold = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&dir);
        let out = once()?;
        anyhow::ensure!(out.stats.lines == lines.len() as u64, "read {} of {} messages", out.stats.lines, lines.len());
        cold.push(out.caught_up_after.expect("stop_at_end").as_secs_f64());
    }
    cold.sort_by(f64::total_cmp);
    let n = lines.len() as f64;
    let median = cold[cold.len() / 2];
    println!(
        "kafka     cold start to caught-up: {:.2}s median of {} ({:.2}–{:.2}s) = {:.0} messages/s ({} fills, {} messages)",
        median, runs, cold[0], cold[cold.len() - 1], n / median, fills, lines.len()
    );
    if runs < 3 {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let mut warm = Vec::new();
    for _ in 0..3 {
        let out = once()?;
        warm.push((out.caught_up_after.expect("stop_at_end").as_secs_f64(), out.restored_after.as_secs_f64()));
    }
    warm.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "kafka     restart from the end-of-day checkpoint to caught-up: {:.2}s median of 3 (checkpoint loaded and restored in {:.2}s); peak RSS {:.0} MB",
        warm[1].0, warm[1].1, peak_rss_mb()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Rows per second into ClickHouse (`HARBOUR_CLICKHOUSE_URL`): a generated day runs through the
/// engine in epochs of 10,000 messages; every 10 epochs (as the Kafka loop's time-based flush
/// would, at this rate) the changes (every table, the event log) are written by the sink, which
/// returns once ClickHouse acknowledged them. Reports rows over the time
/// spent in the sink, and over the whole run.
fn bench_clickhouse(fills: u64) -> anyhow::Result<()> {
    use harbour_sinks::clickhouse::{ClickHouseConfig, ClickHouseSink};
    use harbour_sources::file::SourceLine;
    use harbour_sources::generate::{generate, GenerateConfig};

    let url = std::env::var("HARBOUR_CLICKHOUSE_URL").map_err(|_| {
        anyhow::anyhow!(
            "the clickhouse benchmark needs HARBOUR_CLICKHOUSE_URL (eval \"$(deploy/clickhouse.sh start)\")"
        )
    })?;
    let day = generate(&GenerateConfig { fills: fills as usize, quotes: fills as usize, ..GenerateConfig::default() })?;
    let database = format!("harbour_bench_{}", std::process::id());
    let mut sink =
        ClickHouseSink::connect(&ClickHouseConfig { url, database: database.clone(), ..ClickHouseConfig::default() })?;
    let config = harbour::engine::EngineConfig::new(10_000);
    let metrics = harbour::metrics::Metrics::default();
    let mut engine =
        harbour::engine::Engine::new(&config, &metrics, std::sync::Arc::new(harbour::metrics::Health::default()));
    engine.track_changes();
    let (mut rows, mut in_sink) = (0u64, Duration::ZERO);
    let started = Instant::now();
    for (i, raw) in day.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % 10_000 == 0 || i + 1 == day.len() {
            let epoch = engine.seal();
            if (i + 1) % 100_000 != 0 && i + 1 != day.len() {
                continue;
            }
            let changes = engine.take_changes();
            let t = Instant::now();
            rows += sink.write(epoch, &changes)?;
            in_sink += t.elapsed();
        }
    }
    let total = started.elapsed();
    println!(
        "clickhouse {} rows from {} messages ({} fills): {:.0} rows/s while writing ({:.2}s in the sink), {:.0} rows/s over the whole run ({:.2}s)",
        rows,
        day.len(),
        fills,
        rows as f64 / in_sink.as_secs_f64(),
        in_sink.as_secs_f64(),
        rows as f64 / total.as_secs_f64(),
        total.as_secs_f64()
    );
    sink.query_text(&format!("DROP DATABASE IF EXISTS {database}"))?;
    Ok(())
}

/// Key updates per second into Redis (`HARBOUR_REDIS_URL`): a generated day through the engine,
/// the changes of every 100,000 messages written by the sink (fenced EVALSHA per row, one
/// MULTI/EXEC per flush). Reports updates over the time spent in the sink.
fn bench_redis(fills: u64) -> anyhow::Result<()> {
    use harbour_sinks::redis::{RedisConfig, RedisSink};
    use harbour_sources::file::SourceLine;
    use harbour_sources::generate::{generate, GenerateConfig};

    let url = std::env::var("HARBOUR_REDIS_URL").map_err(|_| {
        anyhow::anyhow!("the redis benchmark needs HARBOUR_REDIS_URL (eval \"$(deploy/redis.sh start)\")")
    })?;
    let url = format!("{}/3", url.trim_end_matches('/'));
    // Many accounts and symbols, so that a flush holds many distinct keys (with the default four
    // accounts, conflation leaves a few hundred rows per flush and the per-flush cost dominates).
    let day = generate(&GenerateConfig {
        fills: fills as usize,
        quotes: 3 * fills as usize,
        accounts: 500,
        symbols: 200,
        ..GenerateConfig::default()
    })?;
    let mut sink = RedisSink::connect(&RedisConfig { url, ..RedisConfig::default() })?;
    {
        let mut c = sink.connection()?;
        redis::cmd("FLUSHDB").query::<()>(&mut c)?;
    }
    let config = harbour::engine::EngineConfig::new(10_000);
    let metrics = harbour::metrics::Metrics::default();
    let mut engine =
        harbour::engine::Engine::new(&config, &metrics, std::sync::Arc::new(harbour::metrics::Health::default()));
    engine.track_changes();
    let (mut updates, mut flushes, mut in_sink) = (0u64, 0u64, Duration::ZERO);
    for (i, raw) in day.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % 10_000 == 0 || i + 1 == day.len() {
            let epoch = engine.seal();
            if (i + 1) % 100_000 != 0 && i + 1 != day.len() {
                continue;
            }
            let changes = engine.take_changes();
            let t = Instant::now();
            updates += sink.write(epoch, &changes)?;
            in_sink += t.elapsed();
            flushes += 1;
        }
    }
    println!(
        "redis     {} fenced key updates (+ stream entries) in {} flushes from {} messages: {:.0} updates/s while writing ({:.2}s in the sink)",
        updates,
        flushes,
        day.len(),
        updates as f64 / in_sink.as_secs_f64(),
        in_sink.as_secs_f64()
    );
    Ok(())
}

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // The pipeline's own log, to see where a run's time goes (HARBOUR_BENCH_LOG=info, or any
    // tracing filter); none by default.
    if let Ok(filter) = std::env::var("HARBOUR_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str).unwrap_or("all") {
        "fills" => {
            bench_fills(arg(&args, 1, 1_000), arg(&args, 2, 2_000_000));
        }
        "quotes" => {
            bench_quotes(arg(&args, 1, 1_000), arg(&args, 2, 3_000_000));
        }
        "scale" => {
            bench_scale(arg(&args, 1, 1_000), arg(&args, 2, 1_000_000));
        }
        "late" => {
            bench_late(arg(&args, 1, 100_000));
        }
        "deep-key" => {
            bench_deep_key(arg(&args, 1, 100_000));
        }
        "memory" => {
            bench_memory(arg(&args, 1, 1_000_000));
        }
        "clickhouse-sustained" => freshness::bench_clickhouse_sustained(arg(&args, 1, 500_000))?,
        "freshness" => freshness::bench_freshness(
            arg(&args, 1, 50_000),
            arg(&args, 2, 12),
            args.get(3).map_or(freshness::Sinks::Both, |a| freshness::Sinks::parse(a)),
        )?,
        "hkex" => hkex::bench_hkex(arg(&args, 1, 2_000_000) as usize),
        "risk" => risk::bench_risk(arg(&args, 1, 1_000) as usize, arg(&args, 2, 500) as u32, false),
        "risk-dense" => risk::bench_risk(arg(&args, 1, 1_000) as usize, arg(&args, 2, 500) as u32, true),
        "parse" => bench_parse(arg(&args, 1, 1_000_000)),
        "fees" => bench_fees(arg(&args, 1, 2_000_000)),
        "kafka" => bench_kafka(arg(&args, 1, 1_000_000))?,
        "clickhouse" => bench_clickhouse(arg(&args, 1, 200_000))?,
        "redis" => bench_redis(arg(&args, 1, 200_000))?,
        "all" => {
            bench_fills(1_000, 2_000_000);
            bench_fills(1_000_000, 2_000_000);
            let small = bench_scale(1_000, 1_000_000);
            let large = bench_scale(1_000_000, 1_000_000);
            println!(
                "          per-fill cost at 1M positions / at 1k positions (same access pattern): {:.2}",
                large / small
            );
            bench_quotes(1_000, 3_000_000);
            bench_quotes(100_000, 3_000_000);
            bench_deep_key(100_000);
            let short = bench_late(1_000);
            let long = bench_late(100_000);
            println!(
                "          late-fill cost on a 100,000-fill book / on a 1,000-fill book (same depth): {:.2}",
                long / short
            );
            bench_parse(1_000_000);
            // Peak RSS is per process: measure memory in a fresh one.
            let status = std::process::Command::new(std::env::current_exe()?).args(["memory", "1000000"]).status()?;
            anyhow::ensure!(status.success(), "memory benchmark failed");
        }
        other => {
            anyhow::bail!(
                "unknown benchmark {other:?}: fills, quotes, scale, deep-key, late, memory, fees, parse, kafka, clickhouse, redis or all"
            )
        }
    }
    Ok(())
}
