//! `harbour`: the real-time position, P&L and risk pipeline for Hong Kong equities.
//!
//! Commands: `run` (a generated sample day end to end; the default), `replay` (recorded JSON
//! lines), `generate` (write a sample day), `kafka run` / `kafka produce` (the Kafka path),
//! `hkex encode` / `hkex replay` / `hkex record` (OMD-C captures). See
//! README.md.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use harbour_dataflows::graph::GraphConfig;
use harbour_sinks::parquet::ParquetSink;
use harbour_sources::file::{Replay, SourceLine};
use harbour_sources::generate::generate_on;

use harbour::config::{self, Config};
use harbour::engine::{self, EngineConfig};
use harbour::kafka::{self, ClickHouseEpochSink, EpochSink, KafkaRun, ParquetEpochSink, RedisEpochSink};
use harbour::metrics::{self, Health, Metrics};
use harbour::{state, summary};
use harbour_sinks::clickhouse::ClickHouseSink;
use harbour_sinks::redis::RedisSink;

/// mimalloc: the pipeline allocates per fill (rows, books); it measured ~14% faster than the
/// system allocator on the fills benchmark. Built with `no_thp`: with transparent huge pages,
/// fresh arena memory was zeroed 2 MB at a time on first touch (a quarter of the CPU in the
/// freshness run, and stalls of tens of ms); without, fills were ~25% faster and the live
/// feed's p99 three times lower. (`no_thp` stops mimalloc asking for huge pages; on hosts with
/// THP `always` rather than `madvise`, also set `MIMALLOC_ALLOW_THP=0`.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "harbour", version, about = "Real-time positions, P&L and risk for Hong Kong equities")]
struct Cli {
    /// TOML config file (see deploy/harbour.toml); HARBOUR__SECTION__KEY variables override it.
    #[arg(long, global = true, env = "HARBOUR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the sample day and run it end to end (the default command).
    Run {
        /// Output folder (default: pipeline.out_dir, `harbour-out`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Fills in the generated day (default: generate.fills).
        #[arg(long)]
        fills: Option<usize>,
        /// Seed of the generated day (default: generate.seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Also write every table to ClickHouse (`[clickhouse]` settings; `clickhouse.url` or
        /// HARBOUR_CLICKHOUSE_URL must be set).
        #[arg(long)]
        clickhouse: bool,
    },
    /// Replay recorded JSON-lines files (`-` reads standard input).
    Replay {
        /// Input files, in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output folder (default: pipeline.out_dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Recompute positions, fills, roll-ups, per-minute P&L and marks from scratch afterwards
        /// (a batch fold, no dataflow) and fail if they differ (not for stdin; risk, orders and
        /// reference tables are not recomputed).
        #[arg(long)]
        verify: bool,
        /// Also write every table to ClickHouse (`[clickhouse]` settings; `clickhouse.url` or
        /// HARBOUR_CLICKHOUSE_URL must be set): a recorded day for the analysts. Use a database of
        /// its own (`clickhouse.database`): a replay's versions count the file's lines, not the
        /// Kafka run's messages.
        #[arg(long)]
        clickhouse: bool,
    },
    /// The Kafka path: consume the input topics, or publish a day to them.
    Kafka {
        #[command(subcommand)]
        command: KafkaCommand,
    },
    /// HKEX OMD-C: encode a day as a capture, replay a capture, record one from UDP.
    Hkex {
        #[command(subcommand)]
        command: HkexCommand,
    },
    /// Write a generated sample day as JSON lines.
    Generate {
        /// Output file (`-` for standard output).
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// Fills.
        #[arg(long)]
        fills: Option<usize>,
        /// Quotes.
        #[arg(long)]
        quotes: Option<usize>,
        /// Accounts.
        #[arg(long)]
        accounts: Option<usize>,
        /// Symbols.
        #[arg(long)]
        symbols: Option<usize>,
        /// Seed.
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Subcommand)]
enum HkexCommand {
    /// Encode the market data of JSON-lines files (or a generated day) as OMD-C packets on lines A
    /// and B: a capture (`.pcap` for pcap, otherwise Harbour's format) and the other lines beside.
    Encode {
        /// JSON-lines files; none encodes a generated day (generate.* settings).
        files: Vec<PathBuf>,
        /// Capture to write.
        #[arg(long)]
        capture: PathBuf,
        /// JSON lines that are not market data (fills, orders, busts), to replay beside it.
        #[arg(long)]
        lines: PathBuf,
        /// Channels to spread securities over, 1 to 999 (a pcap puts line A of channel c on port
        /// 51000 + c and line B on 52000 + c: a thousandth channel's line A would read back as line B).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=999))]
        channels: u16,
        /// Fills in the generated day.
        #[arg(long)]
        fills: Option<usize>,
        /// Seed of the generated day.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Replay a capture (Harbour's format or pcap) merged by event time with JSON-lines files.
    Replay {
        /// The capture.
        capture: PathBuf,
        /// JSON-lines files (fills, orders, busts).
        files: Vec<PathBuf>,
        /// Output folder (default: pipeline.out_dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Retransmission service (HOST:PORT) that fills gaps both lines missed.
        #[arg(long)]
        retrans: Option<std::net::SocketAddr>,
        /// Username for the retransmission logon.
        #[arg(long, default_value = "HARBOUR")]
        retrans_user: String,
        /// A capture of the refresh service (snapshots by channel, each ending in Refresh
        /// Complete): gaps the retransmission service cannot fill are recovered from it.
        #[arg(long)]
        refresh: Option<PathBuf>,
    },
    /// Bridge the feed to Kafka: decode a capture or live UDP (arbitrating lines A/B, recovering
    /// gaps) and publish instruments, quotes and closes to the instruments and market topics.
    Publish {
        /// A capture to publish (Harbour's format or pcap).
        #[arg(long, conflicts_with = "sources")]
        capture: Option<PathBuf>,
        /// CHANNEL:LINE:GROUP:PORT, repeated: live UDP until SIGINT/SIGTERM.
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Local interface address that joins the multicast groups.
        #[arg(long, default_value = "0.0.0.0")]
        interface: std::net::Ipv4Addr,
        /// Retransmission service (HOST:PORT) that fills gaps both lines missed.
        #[arg(long)]
        retrans: Option<std::net::SocketAddr>,
        /// Username for the retransmission logon.
        #[arg(long, default_value = "HARBOUR")]
        retrans_user: String,
    },
    /// Record datagrams from UDP to a capture until SIGINT/SIGTERM (or a limit).
    Record {
        /// CHANNEL:LINE:GROUP:PORT, repeated (LINE A or B; GROUP empty for unicast).
        #[arg(long = "source", required = true)]
        sources: Vec<String>,
        /// Local interface address that joins the multicast groups.
        #[arg(long, default_value = "0.0.0.0")]
        interface: std::net::Ipv4Addr,
        /// Capture to write.
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many datagrams.
        #[arg(long)]
        packets: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Consume the input topics into every sink, committing offsets once the sinks hold the data.
    /// Restarts resume from the checkpoint in pipeline.state_dir. Stops on SIGINT/SIGTERM.
    Run {
        /// Output folder (default: pipeline.out_dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Checkpoint folder (default: pipeline.state_dir).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Exit once every partition reached the end it had at start.
        #[arg(long)]
        until_end: bool,
    },
    /// Create the input, dead-letter and alerts topics that are missing (kafka.partitions each;
    /// existing ones are left as they are). `kafka run` creates only what it writes.
    Topics,
    /// Publish JSON-lines files (or a generated sample day) to the input topics, creating them when
    /// missing.
    Produce {
        /// Files to publish; none publishes a generated day (generate.* settings).
        files: Vec<PathBuf>,
        /// Fills in the generated day.
        #[arg(long)]
        fills: Option<usize>,
        /// Seed of the generated day.
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config = config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run { out: None, fills: None, seed: None, clickhouse: false }) {
        Command::Run { out, fills, seed, clickhouse } => {
            if let Some(f) = fills {
                config.generate.fills = f;
            }
            if let Some(s) = seed {
                config.generate.seed = s;
            }
            config.validate()?;
            let out = out.unwrap_or_else(|| config.pipeline.out_dir.clone());
            let lines = generate_on(&config.generate, &config.spread_tables()).context("generating the sample day")?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let input_path = out.join("input.jsonl");
            let mut f = std::io::BufWriter::new(std::fs::File::create(&input_path)?);
            for l in &lines {
                writeln!(f, "{l}")?;
            }
            f.flush()?;
            tracing::info!(lines = lines.len(), path = %input_path.display(), "generated sample day");
            if config.risk.history.is_none() && config.risk.history_days > 1 {
                let rows = harbour_sources::generate::history(
                    &config.generate,
                    &config.spread_tables(),
                    config.risk.history_days,
                )?;
                let path = out.join("history.csv");
                harbour::risk::write_history(&path, &rows).with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(days = config.risk.history_days, path = %path.display(), "generated close history");
                config.risk.history = Some(path);
            }
            if config.risk.limits_file.is_none() {
                // The sample day runs with the sample limits, so its alerts show.
                let path = out.join("limits.toml");
                std::fs::write(&path, include_str!("../../deploy/limits.toml"))
                    .with_context(|| format!("writing {}", path.display()))?;
                config.risk.limits_file = Some(path);
            }
            let source = lines
                .into_iter()
                .enumerate()
                .map(|(i, raw)| Ok(SourceLine { source: "input.jsonl".into(), position: i as u64 + 1, raw }));
            execute(&config, &engine_config(&config, None)?, source, out, clickhouse).map(|_| ())
        }
        Command::Replay { files, out, verify, clickhouse } => {
            if verify && files.iter().any(|f| f == std::path::Path::new("-")) {
                anyhow::bail!("--verify reads the input twice: give files, not `-`");
            }
            let out = out.unwrap_or_else(|| config.pipeline.out_dir.clone());
            // Built once: the risk history may come from ClickHouse.
            let engine = engine_config(&config, None)?;
            let state = execute(&config, &engine, Replay::new(&files), out, clickhouse)?;
            if verify {
                let lines = Replay::new(&files).collect::<Result<Vec<_>, _>>()?;
                let reference = harbour::verify::reference(lines.into_iter(), &engine);
                let report = harbour::verify::compare_with(&state, &reference);
                if !report.mismatches.is_empty() {
                    anyhow::bail!(
                        "verify: the incremental outputs differ from a recomputation:\n{}",
                        report.mismatches.join("\n")
                    );
                }
                println!("verify: {} rows equal a from-scratch recomputation", report.rows);
            }
            Ok(())
        }
        Command::Kafka { command: KafkaCommand::Topics } => {
            config.validate()?;
            harbour_sources::kafka::create_topics(&config.kafka)?;
            let t = &config.kafka.topics;
            println!(
                "kafka topics present: {} (each created with {} partitions when missing)",
                [&t.instruments, &t.fills, &t.orders, &t.market, &t.dead_letters, &t.alerts]
                    .map(String::as_str)
                    .join(", "),
                config.kafka.partitions
            );
            Ok(())
        }
        Command::Kafka { command: KafkaCommand::Produce { files, fills, seed } } => {
            config.generate.fills = fills.unwrap_or(config.generate.fills);
            config.generate.seed = seed.unwrap_or(config.generate.seed);
            config.validate()?;
            let lines: Vec<String> = if files.is_empty() {
                generate_on(&config.generate, &config.spread_tables())?
            } else {
                Replay::new(&files).map(|l| l.map(|l| l.raw)).collect::<Result<_, _>>()?
            };
            harbour_sources::kafka::create_topics(&config.kafka)?;
            let started = Instant::now();
            let counts = harbour_sources::kafka::publish_lines(&config.kafka, lines.iter().map(String::as_str))?;
            let mut counts: Vec<_> = counts.into_iter().collect();
            counts.sort();
            for (topic, n) in &counts {
                println!("{topic}: {n} messages");
            }
            println!("published {} lines in {:.2}s", lines.len(), started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Kafka { command: KafkaCommand::Run { out, state, until_end } } => {
            let (metrics, health) = serve_metrics(&config);
            let stop = Arc::new(AtomicBool::new(false));
            let run = KafkaRun {
                epoch_events: config.pipeline.epoch_events,
                epoch_max: Duration::from_millis(config.pipeline.epoch_max_ms),
                flush_every: Duration::from_millis(config.pipeline.flush_ms),
                checkpoint_every: Duration::from_millis(config.pipeline.checkpoint_ms),
                stop_at_end: until_end,
                state_dir: state.unwrap_or_else(|| config.pipeline.state_dir.clone()),
                out_dir: out.unwrap_or_else(|| config.pipeline.out_dir.clone()),
            };
            let parquet =
                ParquetEpochSink::new(ParquetSink::new(&run.out_dir)).every(match config.pipeline.parquet_ms {
                    0 => Duration::MAX,
                    ms => Duration::from_millis(ms),
                });
            let written = parquet.written();
            let mut sinks: Vec<Box<dyn EpochSink + Send>> = vec![Box::new(parquet)];
            if !config.clickhouse.url.is_empty() {
                sinks.push(Box::new(ClickHouseEpochSink(
                    ClickHouseSink::connect(&config.clickhouse)?,
                    Some(Duration::from_millis(config.clickhouse.flush_ms)),
                )));
            }
            if !config.redis.url.is_empty() {
                sinks.push(Box::new(RedisEpochSink(
                    RedisSink::connect(&config.redis)?,
                    Some(Duration::from_millis(config.redis.flush_ms)),
                )));
            }
            // Risk alerts also go to their topic (created when missing, with the dead-letter
            // topic; the input topics must exist: a missing one stops the run, naming it).
            harbour_sources::kafka::create_output_topics(&config.kafka)?;
            sinks.push(Box::new(harbour::kafka::alerts::AlertsEpochSink::new(&config.kafka)));
            let engine = engine_config(&config, Some(&run.state_dir))?;
            // Only now: until here a SIGTERM or Ctrl-C ends the process as usual, where the
            // connections above wait for an unreachable ClickHouse or Redis for as long as it
            // takes and would never see a stop flag (nothing is written before the run).
            stop_on_signal(stop.clone());
            let started = Instant::now();
            let outcome = match kafka::run(&config.kafka, &run, &engine, &metrics, &health, sinks, &stop) {
                Err(kafka::KafkaRunError::StoppedInStandby) => {
                    println!("kafka: stopped while standing by for the lease; nothing read, nothing written");
                    return Ok(());
                }
                r => r?,
            };
            // (The Parquet sink wrote the final tables at the end of the run.)
            let written = std::mem::take(&mut *written.lock().expect("parquet written"));
            print!("{}", summary::render(&outcome.state, &outcome.stats, &written, started.elapsed()));
            println!(
                "kafka: restored from epoch {}, re-formed {} logged epochs, committed {} partitions",
                outcome.restored_from,
                outcome.replayed,
                outcome.committed.len()
            );
            Ok(())
        }
        Command::Hkex { command } => hkex_command(command, &mut config),
        Command::Generate { out, fills, quotes, accounts, symbols, seed } => {
            let g = &mut config.generate;
            g.fills = fills.unwrap_or(g.fills);
            g.quotes = quotes.unwrap_or(g.quotes);
            g.accounts = accounts.unwrap_or(g.accounts);
            g.symbols = symbols.unwrap_or(g.symbols);
            g.seed = seed.unwrap_or(g.seed);
            config.validate()?;
            let lines = generate_on(&config.generate, &config.spread_tables())?;
            let mut w: Box<dyn Write> = if out == std::path::Path::new("-") {
                Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
            } else {
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?,
                ))
            };
            for l in &lines {
                writeln!(w, "{l}")?;
            }
            w.flush()?;
            Ok(())
        }
    }
}

/// The engine's settings. `state_dir`: a Kafka run's state folder, which pins the trade date the
/// risk history is read up to (see [`pinned_as_of`]).
fn engine_config(config: &Config, state_dir: Option<&std::path::Path>) -> anyhow::Result<EngineConfig> {
    let history = match config.risk.load_history()? {
        Some(h) => {
            tracing::info!(days = h.days(), symbols = h.symbols().count(), "risk history loaded from file");
            h
        }
        None if !config.clickhouse.url.is_empty() => {
            let today =
                || harbour_dataflows::validate::trade_date(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
            let as_of = match (config.risk.as_of, state_dir) {
                (Some(d), _) => d,
                (None, Some(dir)) => pinned_as_of(dir, today())?,
                (None, None) => today(),
            };
            let mut ch = ClickHouseSink::connect(&config.clickhouse)?;
            let h = harbour::risk::clickhouse_history(
                &mut ch,
                &config.risk.history_table,
                as_of,
                config.risk.history_days,
            )?;
            tracing::info!(days = h.days(), symbols = h.symbols().count(), table = %config.risk.history_table, %as_of, "risk history loaded from ClickHouse");
            h
        }
        None => Default::default(),
    };
    if history.is_empty() {
        // Without previous closes there are neither past returns nor a return today.
        tracing::warn!(
            "no risk history (risk.history, or ClickHouse's risk.history_table): VaR, expected shortfall and volatility stay 0"
        );
    }
    Ok(EngineConfig {
        epoch_events: config.pipeline.epoch_events,
        graph: GraphConfig {
            schedules: Arc::new(config.cost_schedules()),
            marks: config.marks.policy.clone(),
            risk: config.risk.config(history)?,
        },
        spreads: config.spread_tables(),
        limits_watch: config.risk.limits_file.clone().map(|p| (p, Duration::from_millis(config.risk.reload_ms))),
    })
}

/// The trade date a Kafka run's risk history is read up to, without `risk.as_of`: the date kept
/// in `<state_dir>/risk_as_of`, else `today`, kept there for the restarts of this state folder.
/// (A restart after midnight would otherwise read a history that holds the day's own close, and
/// its restored VaR would not be the one shown before.)
fn pinned_as_of(dir: &std::path::Path, today: chrono::NaiveDate) -> anyhow::Result<chrono::NaiveDate> {
    let path = dir.join("risk_as_of");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{}: expected a date (YYYY-MM-DD); set risk.as_of or remove it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            harbour::checkpoint::write_atomic(dir, "risk_as_of", format!("{today}\n").as_bytes())?;
            Ok(today)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Sets `stop` on SIGINT or SIGTERM (the run then seals, flushes, commits and checkpoints).
fn stop_on_signal(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
}

fn serve_metrics(config: &Config) -> (Arc<Metrics>, Arc<Health>) {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    if let Some(addr) = config.metrics_addr() {
        match metrics::serve(addr, metrics.clone(), health.clone()) {
            Ok(bound) => tracing::info!(%bound, "serving /metrics and /health"),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "metrics server not started (metrics.listen)")
            }
        }
    }
    (metrics, health)
}

fn hkex_command(command: HkexCommand, config: &mut Config) -> anyhow::Result<()> {
    match command {
        HkexCommand::Encode { files, capture, lines, channels, fills, seed } => {
            let day: Vec<String> = if files.is_empty() {
                config.generate.fills = fills.unwrap_or(config.generate.fills);
                config.generate.seed = seed.unwrap_or(config.generate.seed);
                generate_on(&config.generate, &config.spread_tables())?
            } else {
                Replay::new(&files).map(|l| l.map(|l| l.raw)).collect::<Result<_, _>>()?
            };
            let cfg = harbour_sources::hkex::day::DayEncoding { channels, line_b: true };
            let e = harbour::hkex::encode(&day, &capture, &lines, &cfg)?;
            println!(
                "hkex: {} market lines as {} datagrams (lines A and B) in {}; {} other lines in {}",
                e.market_lines,
                e.records,
                capture.display(),
                e.other_lines,
                lines.display()
            );
            Ok(())
        }
        HkexCommand::Replay { capture, files, out, retrans, retrans_user, refresh } => {
            let out = out.unwrap_or_else(|| config.pipeline.out_dir.clone());
            let (metrics, health) = serve_metrics(config);
            let started = Instant::now();
            let retrans = retrans.map(|addr| harbour::hkex::Retransmission { addr, username: retrans_user });
            let run = harbour::hkex::replay(
                &capture,
                &files,
                retrans.as_ref(),
                refresh.as_deref(),
                &engine_config(config, None)?,
                &metrics,
                &health,
            )?;
            let elapsed = started.elapsed();
            let written = ParquetSink::new(&out).write(&state::snapshot_refs(&run.state))?;
            print!("{}", summary::render(&run.state, &run.stats, &written, elapsed));
            let f = &run.feed;
            println!(
                "hkex: {} packets, {} messages applied, {} duplicates (A/B), {} gaps ({} recovered, {} messages lost), {} unknown, {} undecodable, {} book errors",
                f.packets, f.messages, f.duplicates, f.gaps, run.recovered, f.lost, f.unknown, f.decode_errors, f.book_errors
            );
            Ok(())
        }
        HkexCommand::Publish { capture, sources, interface, retrans, retrans_user } => {
            let source = match capture {
                Some(path) => harbour::hkex::FeedSource::Capture(path),
                None if !sources.is_empty() => harbour::hkex::FeedSource::Udp {
                    sources: sources.iter().map(|s| s.parse()).collect::<Result<Vec<_>, _>>()?,
                    interface,
                },
                None => anyhow::bail!("hkex publish: give --capture FILE or at least one --source"),
            };
            let stop = Arc::new(AtomicBool::new(false));
            stop_on_signal(stop.clone());
            let retrans = retrans.map(|addr| harbour::hkex::Retransmission { addr, username: retrans_user });
            harbour_sources::kafka::create_topics(&config.kafka)?;
            let (metrics, _health) = serve_metrics(config);
            let p = harbour::hkex::publish(&source, &config.kafka, retrans.as_ref(), &stop, &metrics)?;
            let mut topics: Vec<_> = p.messages.iter().collect();
            topics.sort();
            let f = &p.feed;
            println!(
                "hkex: published {topics:?}; {} dead letters; {} packets, {} messages, {} duplicates (A/B), {} gaps ({} recovered, {} messages lost)",
                p.dead_letters, f.packets, f.messages, f.duplicates, f.gaps, p.recovered, f.lost
            );
            Ok(())
        }
        HkexCommand::Record { sources, interface, out, packets, seconds } => {
            let sources = sources.iter().map(|s| s.parse()).collect::<Result<Vec<harbour::hkex::UdpSource>, _>>()?;
            let stop = Arc::new(AtomicBool::new(false));
            stop_on_signal(stop.clone());
            let n = harbour::hkex::record(&sources, interface, &out, &stop, packets, seconds.map(Duration::from_secs))?;
            println!("hkex: recorded {n} datagrams to {}", out.display());
            Ok(())
        }
    }
}

fn execute(
    config: &Config,
    engine: &EngineConfig,
    source: impl Iterator<Item = Result<SourceLine, harbour_sources::file::ReplayError>>,
    out: PathBuf,
    clickhouse: bool,
) -> anyhow::Result<engine::OutputState> {
    let (metrics, health) = serve_metrics(config);
    let started = Instant::now();
    let mut to_clickhouse = None;
    let (state, stats) = if clickhouse {
        if config.clickhouse.url.is_empty() {
            anyhow::bail!("config key `clickhouse.url`: --clickhouse needs it (or HARBOUR_CLICKHOUSE_URL)");
        }
        let mut sink = ClickHouseSink::connect(&config.clickhouse)?;
        let m = metrics.sink("clickhouse", Some(sink.retry_counter()));
        let (mut rows, mut through) = (0u64, 0u64);
        let every = Duration::from_millis(config.clickhouse.flush_ms);
        let run = engine::run_into(source, engine, &metrics, &health, every, |epoch, changes| {
            let wrote = Instant::now();
            let n = changes.len() as u64;
            sink.write(epoch, &changes).map_err(|e| format!("clickhouse: {e}"))?;
            m.written(epoch, n, wrote.elapsed());
            (rows, through) = (rows + n, epoch);
            Ok(())
        })?;
        to_clickhouse = Some((rows, through));
        run
    } else {
        engine::run(source, engine, &metrics, &health)?
    };
    let elapsed = started.elapsed();
    let written = ParquetSink::new(&out).write(&state::snapshot_refs(&state))?;
    print!("{}", summary::render(&state, &stats, &written, elapsed));
    if let Some((rows, epoch)) = to_clickhouse {
        println!(
            "clickhouse: {rows} changed rows written to database `{}` through epoch {epoch}",
            config.clickhouse.database
        );
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_folder_keeps_the_trade_date_of_its_risk_history() {
        let dir = std::env::temp_dir().join(format!("harbour-as-of-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        assert_eq!(pinned_as_of(&dir, day(25)).unwrap(), day(25), "a new folder takes today");
        assert_eq!(pinned_as_of(&dir, day(26)).unwrap(), day(25), "a restart after midnight keeps it");
        std::fs::write(dir.join("risk_as_of"), "yesterday").unwrap();
        let e = format!("{:#}", pinned_as_of(&dir, day(26)).unwrap_err());
        assert!(e.contains("risk_as_of") && e.contains("risk.as_of"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
