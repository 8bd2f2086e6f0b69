//! End-to-end freshness: fills produced to Kafka at a steady rate, stamped with the wall clock,
//! consumed by the real run loop (`harbour::kafka::run`) into ClickHouse and Redis; each sink's
//! write is timed, and every fill it carried counts `acknowledged − fill ts` (fill in → row
//! visible in ClickHouse, position hash updated in Redis). Needs HARBOUR_KAFKA_BOOTSTRAP,
//! HARBOUR_CLICKHOUSE_URL and HARBOUR_REDIS_URL. With `HARBOUR_BENCH_TAIL` set, every write
//! whose oldest fill is older than 50 ms is printed (when, its epoch, its fills, their ages): a
//! stall upstream shows as a run of one-fill epochs and then a large one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harbour::engine::OutputState;
use harbour::kafka::{self, ClickHouseEpochSink, EpochSink, KafkaRun, RedisEpochSink};
use harbour_sinks::clickhouse::{ClickHouseConfig, ClickHouseSink};
use harbour_sinks::redis::{RedisConfig, RedisSink};
use harbour_sinks::tables::Changes;
use harbour_sources::contract::{parse_line, to_line};
use harbour_sources::generate::{generate, GenerateConfig};
use harbour_sources::kafka::{create_topics, publish_lines};

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Wraps a sink: after each acknowledged write, the age of every fill it carried.
struct Timed {
    inner: Box<dyn EpochSink + Send>,
    ages: Arc<Mutex<Vec<i64>>>,
    writes: Arc<Mutex<Vec<i64>>>,
    measuring: Arc<AtomicBool>,
    /// `HARBOUR_BENCH_TAIL` is set: print the writes holding a fill older than 50 ms.
    tail: bool,
}

impl EpochSink for Timed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn write_through(&mut self, epoch: u64, state: &OutputState, changes: &Changes) -> Result<(), String> {
        let started = now_ns();
        self.inner.write_through(epoch, state, changes)?;
        let now = now_ns();
        if self.measuring.load(Ordering::Relaxed) {
            self.writes.lock().expect("writes").push(now - started);
            let fresh: Vec<i64> = changes.fills.iter().filter(|c| !c.deleted).map(|c| now - c.row.fill.ts).collect();
            self.ages.lock().expect("ages").extend_from_slice(&fresh);
            if self.tail {
                let (min, max) = fresh.iter().fold((i64::MAX, 0), |(a, b), &x| (a.min(x), b.max(x)));
                if max > 50_000_000 {
                    eprintln!(
                        "tail at {} ms (wall clock, mod 100 s): epoch {epoch}, {} fills aged {:.1}-{:.1} ms, written in {:.1} ms",
                        now / 1_000_000 % 100_000,
                        changes.fills.len(),
                        min as f64 / 1e6,
                        max as f64 / 1e6,
                        (now - started) as f64 / 1e6
                    );
                }
            }
        }
        Ok(())
    }
    fn flush_every(&self) -> Option<Duration> {
        self.inner.flush_every()
    }
    fn wants_changes(&self) -> bool {
        true
    }
    fn reads_state(&self) -> bool {
        self.inner.reads_state()
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// Which sinks the freshness run writes.
#[derive(Clone, Copy, PartialEq)]
pub enum Sinks {
    /// ClickHouse and Redis (the default).
    Both,
    /// Redis alone: what the live feed gives when ClickHouse's inserts do not share the cores.
    Redis,
    /// ClickHouse alone.
    ClickHouse,
}

impl Sinks {
    /// `redis`, `clickhouse`, anything else: both.
    pub fn parse(s: &str) -> Sinks {
        match s {
            "redis" => Sinks::Redis,
            "clickhouse" => Sinks::ClickHouse,
            _ => Sinks::Both,
        }
    }

    fn clickhouse(self) -> bool {
        self != Sinks::Redis
    }

    fn redis(self) -> bool {
        self != Sinks::ClickHouse
    }
}

/// `harbour-bench freshness [fills_per_second] [seconds] [both|redis|clickhouse]`.
pub fn bench_freshness(rate: u64, seconds: u64, which: Sinks) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("the freshness benchmark needs {k}"));
    // (Only the services of the sinks measured.)
    let needed = |on: bool, k: &str| if on { env(k) } else { Ok(String::new()) };
    let (bootstrap, ch_url, redis_url) = (
        env("HARBOUR_KAFKA_BOOTSTRAP")?,
        needed(which.clickhouse(), "HARBOUR_CLICKHOUSE_URL")?,
        needed(which.redis(), "HARBOUR_REDIS_URL")?,
    );
    let tag = format!("fresh.{}", std::process::id());
    let cfg = crate::kafka_config(&tag, bootstrap);
    let total = (rate * seconds) as usize;
    let day = generate(&GenerateConfig { fills: total, quotes: 0, invalid_ratio: 0.0, ..GenerateConfig::default() })?;
    let instruments: Vec<&str> =
        day.iter().map(String::as_str).filter(|l| l.contains("\"type\":\"instrument\"")).collect();
    let fills: Vec<harbour_dataflows::model::Fill> = day
        .iter()
        .filter(|l| l.contains("\"type\":\"fill\""))
        .filter_map(|l| match parse_line(l, 0) {
            Ok(harbour_dataflows::validate::Input::Fill(f)) => Some(f),
            _ => None,
        })
        .collect();
    create_topics(&cfg)?;
    publish_lines(&cfg, instruments.iter().copied())?;

    let dir = std::env::temp_dir().join(format!("harbour-bench-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let config = harbour::config::load(None)?; // HARBOUR__SECTION__KEY overrides apply
    let database = format!("harbour_fresh_{}", std::process::id());
    let ch_cfg = ClickHouseConfig { url: ch_url, database: database.clone(), ..config.clickhouse.clone() };
    let redis_cfg = RedisConfig { url: format!("{}/4", redis_url.trim_end_matches('/')), ..config.redis.clone() };
    let (ch_ages, redis_ages) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let (ch_writes, redis_writes) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let measuring = Arc::new(AtomicBool::new(false));
    let tail = std::env::var_os("HARBOUR_BENCH_TAIL").is_some();
    let stop = Arc::new(AtomicBool::new(false));
    let run = KafkaRun {
        epoch_events: config.pipeline.epoch_events,
        epoch_max: Duration::from_millis(config.pipeline.epoch_max_ms),
        flush_every: Duration::from_millis(config.pipeline.flush_ms),
        checkpoint_every: Duration::from_millis(config.pipeline.checkpoint_ms),
        stop_at_end: false,
        state_dir: dir.join("state"),
        out_dir: dir.join("out"),
    };
    let pipeline = {
        let (cfg, run, stop) = (cfg.clone(), run.clone(), stop.clone());
        let (ch_ages, redis_ages, measuring) = (ch_ages.clone(), redis_ages.clone(), measuring.clone());
        let (ch_writes, redis_writes) = (ch_writes.clone(), redis_writes.clone());
        let (ch_cfg, redis_cfg) = (ch_cfg.clone(), redis_cfg.clone());
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut sinks: Vec<Box<dyn EpochSink + Send>> = Vec::new();
            if which.clickhouse() {
                let ch = ClickHouseSink::connect(&ch_cfg)?;
                sinks.push(Box::new(Timed {
                    inner: Box::new(ClickHouseEpochSink(ch, Some(Duration::from_millis(ch_cfg.flush_ms)))),
                    ages: ch_ages,
                    writes: ch_writes,
                    measuring: measuring.clone(),
                    tail,
                }));
            }
            if which.redis() {
                let redis = RedisSink::connect(&redis_cfg)?;
                sinks.push(Box::new(Timed {
                    inner: Box::new(RedisEpochSink(redis, Some(Duration::from_millis(redis_cfg.flush_ms)))),
                    ages: redis_ages,
                    writes: redis_writes,
                    measuring,
                    tail,
                }));
            }
            let engine = harbour::engine::EngineConfig::new(config.pipeline.epoch_events);
            let out = kafka::run(
                &cfg,
                &run,
                &engine,
                &harbour::metrics::Metrics::default(),
                &Arc::new(harbour::metrics::Health::default()),
                sinks,
                &stop,
            )?;
            Ok(out.stats.lines)
        })
    };
    std::thread::sleep(Duration::from_secs(3)); // connected, instruments loaded
                                                // Produce at `rate`, each fill stamped with the wall clock as it is sent.
    let warmup = Duration::from_secs(2);
    let started = Instant::now();
    let mut sent = 0usize;
    let mut batch: Vec<(i64, String)> = Vec::new();
    let producer_cfg = cfg.clone();
    let mut stream = fills.into_iter();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(i64, String)>(100_000);
    // How long each fill waited for the producer's thread to take it (the first part of its age).
    let pickup = Arc::new(Mutex::new(Vec::new()));
    let producer = {
        let (pickup, measuring) = (pickup.clone(), measuring.clone());
        std::thread::spawn(move || {
            publish_lines(
                &producer_cfg,
                rx.into_iter().map(|(ts, line)| {
                    if measuring.load(Ordering::Relaxed) {
                        pickup.lock().expect("pickup").push(now_ns() - ts);
                    }
                    line
                }),
            )
        })
    };
    while started.elapsed() < Duration::from_secs(seconds) {
        if started.elapsed() >= warmup {
            measuring.store(true, Ordering::Relaxed);
        }
        let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
        while sent < due {
            let Some(mut f) = stream.next() else { break };
            f.ts = now_ns();
            batch.push((f.ts, to_line(&harbour_dataflows::validate::Input::Fill(f))));
            sent += 1;
        }
        for l in batch.drain(..) {
            tx.send(l)?;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let produced_in = started.elapsed();
    drop(tx);
    producer.join().expect("producer")?;
    std::thread::sleep(Duration::from_secs(3)); // the last flushes
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let read = pipeline.join().expect("pipeline")?;
    println!(
        "freshness {sent} fills produced in {:.1}s ({:.0}/s; the first {}s not measured), {read} messages read",
        produced_in.as_secs_f64(),
        sent as f64 / produced_in.as_secs_f64(),
        warmup.as_secs()
    );
    let mut p = pickup.lock().expect("pickup").clone();
    p.sort_unstable();
    println!(
        "freshness fill stamped -> taken by the producer's thread: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&p, 0.5),
        percentile(&p, 0.99),
        percentile(&p, 1.0)
    );
    for (name, ages, writes, target) in
        [("clickhouse", &ch_ages, &ch_writes, "p99 < 1000 ms"), ("redis", &redis_ages, &redis_writes, "p99 < 20 ms")]
            .into_iter()
            .filter(|(name, ..)| if *name == "redis" { which.redis() } else { which.clickhouse() })
    {
        let mut a = ages.lock().expect("ages").clone();
        a.sort_unstable();
        let mut w = writes.lock().expect("writes").clone();
        w.sort_unstable();
        println!(
            "freshness {name:<10} {} writes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms each",
            w.len(),
            percentile(&w, 0.5),
            percentile(&w, 0.99),
            percentile(&w, 1.0)
        );
        println!(
            "freshness {name:<10} fill in -> acknowledged by the sink, {} fills: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target {target})",
            a.len(),
            percentile(&a, 0.5),
            percentile(&a, 0.99),
            percentile(&a, 1.0)
        );
    }
    if which.clickhouse() {
        let mut ch = ClickHouseSink::connect(&ch_cfg)?;
        ch.query_text(&format!("DROP DATABASE IF EXISTS {database}"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// ClickHouse behind the real run loop, counting the rows it acknowledges, and noting when each
/// write was acknowledged and how many rows it carried.
struct CountingClickHouse(ClickHouseSink, Arc<std::sync::atomic::AtomicU64>, Arc<Mutex<Vec<(Instant, u64)>>>);

impl EpochSink for CountingClickHouse {
    fn name(&self) -> &'static str {
        "clickhouse"
    }
    fn write_through(&mut self, epoch: u64, _s: &OutputState, changes: &Changes) -> Result<(), String> {
        let rows = self.0.write(epoch, changes).map_err(|e| e.to_string())?;
        self.1.fetch_add(rows, Ordering::Relaxed);
        self.2.lock().expect("acks").push((Instant::now(), rows));
        Ok(())
    }
    fn flush_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(250))
    }
    fn reads_state(&self) -> bool {
        false
    }
}

/// `harbour-bench clickhouse-sustained [fills]`: a day of fills produced to Kafka, then consumed
/// from the start by the run loop with ClickHouse as its only sink (on its own thread, every
/// 250 ms); rows ClickHouse acknowledged over the whole run, from the cold start until the run
/// returns (its last checkpoint written), and sustained: those of every write after the first
/// over the time from the first acknowledgement to the last (no start-up, no final checkpoint).
pub fn bench_clickhouse_sustained(fills: u64) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("this benchmark needs {k}"));
    let (bootstrap, ch_url) = (env("HARBOUR_KAFKA_BOOTSTRAP")?, env("HARBOUR_CLICKHOUSE_URL")?);
    let tag = format!("chsus.{}", std::process::id());
    let cfg = crate::kafka_config(&tag, bootstrap);
    let lines = crate::fill_day(fills, &["instrument", "fill"])?;
    create_topics(&cfg)?;
    publish_lines(&cfg, lines.iter().map(String::as_str))?;
    let dir = std::env::temp_dir().join(format!("harbour-bench-{tag}"));
    let database = format!("harbour_sustained_{}", std::process::id());
    let ch_cfg = ClickHouseConfig { url: ch_url, database: database.clone(), ..ClickHouseConfig::default() };
    let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let sinks: Vec<Box<dyn EpochSink + Send>> =
        vec![Box::new(CountingClickHouse(ClickHouseSink::connect(&ch_cfg)?, rows.clone(), acks.clone()))];
    let run = KafkaRun {
        epoch_events: 10_000,
        epoch_max: Duration::from_millis(20),
        flush_every: Duration::from_millis(250),
        checkpoint_every: Duration::from_secs(3_600),
        stop_at_end: true,
        state_dir: dir.join("state"),
        out_dir: dir.join("out"),
    };
    let engine = harbour::engine::EngineConfig::new(10_000);
    let started = Instant::now();
    let out = kafka::run(
        &cfg,
        &run,
        &engine,
        &harbour::metrics::Metrics::default(),
        &Arc::new(harbour::metrics::Health::default()),
        sinks,
        &AtomicBool::new(false),
    )?;
    let took = started.elapsed().as_secs_f64();
    let rows = rows.load(Ordering::Relaxed);
    println!(
        "clickhouse sustained: {rows} rows acknowledged for {} messages in {took:.2}s from cold start = {:.0} rows/s through the whole pipeline",
        out.stats.lines,
        rows as f64 / took
    );
    let acks = acks.lock().expect("acks");
    // (The window ends at the last write that carried rows; none without two writes.)
    let last = acks.iter().rposition(|(_, rows)| *rows > 0).filter(|&i| i > 0);
    if let (Some((first, _)), Some(l)) = (acks.first(), last) {
        let (acks, last) = (&acks[..=l], &acks[l].0);
        let window = last.duration_since(*first).as_secs_f64();
        let after: u64 = acks[1..].iter().map(|(_, r)| r).sum();
        println!(
            "clickhouse sustained: {after} rows in the {} writes after the first, acknowledged over {window:.2}s = {:.0} rows/s sustained (start-up to first acknowledgement {:.2}s, last acknowledgement to the run's end {:.2}s)",
            acks.len() - 1,
            after as f64 / window,
            first.duration_since(started).as_secs_f64(),
            took - last.duration_since(started).as_secs_f64()
        );
    }
    let mut ch = ClickHouseSink::connect(&ch_cfg)?;
    ch.query_text(&format!("DROP DATABASE IF EXISTS {database}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
