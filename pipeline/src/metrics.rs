//! Prometheus metrics and the `/metrics` + `/health` HTTP endpoints.
//!
//! Metric names follow `harbour_<area>_<thing>_<unit>`. The server runs on its own thread with a
//! small tokio runtime, so the timely worker never waits on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of per-type counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Event type (`fill`, `bust`, `quote`, ...).
    pub r#type: String,
}

/// Label of dead-letter counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Rejection code.
    pub reason: String,
}

/// Label of per-partition gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Label of an OMD-C feed counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CounterLabel {
    /// `packets`, `messages`, `duplicates`, `gaps`, `lost`, `recovered`, `refreshes`, … (see
    /// [`Metrics::omdc_feed`]).
    pub counter: &'static str,
}

/// Label of a desk risk figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct FigureLabel {
    /// `gross`, `net`, `var_99`, `hist_var_99`, `es_99`, `drawdown`.
    pub figure: &'static str,
}

/// Label of the build information.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// The binary's version.
    pub version: &'static str,
}

/// The content type of [`Metrics::render`]'s text (prometheus-client writes OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label of per-sink metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// The sink's name (`clickhouse`, `redis`, `parquet`, `kafka-alerts`).
    pub sink: &'static str,
}

/// The handles of one sink's metrics (shared with the registry), for the thread that writes it.
#[derive(Clone, Debug)]
pub struct SinkMetrics {
    /// Newest epoch the sink holds.
    pub durable_epoch: Gauge,
    /// Changed rows written (a replayed row counts again; Parquet: the rows of each rewrite).
    pub rows: Counter,
    /// Seconds per write, retries included.
    pub write_seconds: Histogram,
    /// Changed rows waiting for the sink while it writes the previous batch.
    pub pending_rows: Gauge,
}

impl SinkMetrics {
    /// Records a write of `rows` changed rows through `epoch` that took `took`.
    pub fn written(&self, epoch: u64, rows: u64, took: std::time::Duration) {
        if epoch as i64 > self.durable_epoch.get() {
            self.durable_epoch.set(epoch as i64);
        }
        self.rows.inc_by(rows);
        self.write_seconds.observe(took.as_secs_f64());
    }
}

/// Retries of the sinks' stores, read from the sinks' own counters at each scrape (a write that
/// retries an unreachable store shows them while it waits).
#[derive(Debug, Default)]
struct SinkRetries(std::sync::Mutex<Vec<(&'static str, Arc<AtomicU64>)>>);

impl Collector for SinkRetries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sinks = self.0.lock().expect("sink retries").clone();
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "harbour_sink_retries",
            "Failed attempts to write a sink's store (retried with backoff)",
            None,
            counter.metric_type(),
        )?;
        for (sink, n) in sinks {
            ConstCounter::new(n.load(Ordering::Relaxed)).encode(family.encode_family(&SinkLabel { sink })?)?;
        }
        Ok(())
    }
}

/// Handles on [`Metrics::events_in`]'s counters, looked up once per event type: the family's own
/// lookup builds the label and hashes it under a lock, which a million events a second notice.
#[derive(Debug)]
pub struct EventCounters {
    family: Family<TypeLabel, Counter>,
    handles: Vec<(&'static str, Counter)>,
}

impl EventCounters {
    /// Handles on `metrics`' event counters (taken as each type is first seen).
    pub fn new(metrics: &Metrics) -> EventCounters {
        EventCounters { family: metrics.events_in.clone(), handles: Vec::new() }
    }

    /// Counts an accepted event of type `kind`.
    pub fn inc(&mut self, kind: &'static str) {
        let i = self.handles.iter().position(|(k, _)| *k == kind).unwrap_or_else(|| {
            let c = self.family.get_or_create_owned(&TypeLabel { r#type: kind.to_owned() });
            self.handles.push((kind, c));
            self.handles.len() - 1
        });
        self.handles[i].1.inc();
    }
}

/// Every metric of a running pipeline.
pub struct Metrics {
    registry: Registry,
    /// Accepted input events, by type.
    pub events_in: Family<TypeLabel, Counter>,
    /// Dead letters, by reason code.
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// Live position rows.
    pub positions: Gauge,
    /// Epochs completed.
    pub epochs: Counter,
    /// Seconds from sealing the latest epoch to its outputs being complete (processing lag).
    pub epoch_lag_seconds: Gauge<f64, AtomicU64>,
    /// Latest completed epoch (the version of the newest rows).
    pub epoch: Gauge,
    /// Newest epoch every sink holds.
    pub durable_epoch: Gauge,
    /// Messages behind the high watermark, per partition.
    pub kafka_lag: Family<PartitionLabel, Gauge>,
    /// Committed offset (next to read), per partition.
    pub kafka_committed_offset: Family<PartitionLabel, Gauge>,
    /// Poison messages written to the dead-letter topic.
    pub kafka_dead_letters_sent: Counter,
    /// Epochs re-formed from the epoch log after a restart.
    pub kafka_replayed_epochs: Counter,
    /// 1 while this process is active (without `kafka.lease`: always), 0 while it stands by.
    pub kafka_lease_held: Gauge,
    /// Size of the newest checkpoint.
    pub checkpoint_bytes: Gauge,
    /// Seconds the run loop spent taking the newest checkpoint's engine snapshot (the loop's
    /// whole part of a checkpoint: the store's thread writes it).
    pub checkpoint_snapshot_seconds: Gauge<f64, AtomicU64>,
    /// Seconds the store's thread took to sort, serialize and write the newest checkpoint.
    pub checkpoint_write_seconds: Gauge<f64, AtomicU64>,
    /// Risk limit alerts fired (breaches and clears).
    pub risk_alerts: Counter,
    /// Accepted fills timestamped while their security was halted (crate::halts).
    pub fills_during_halt: Counter,
    /// The desk's risk figures (HKD): gross, net, var_99, hist_var_99, es_99, drawdown, by `figure`.
    pub desk_risk: Family<FigureLabel, Gauge<f64, AtomicU64>>,
    /// Risk limits files re-read and applied.
    pub limit_reloads: Counter,
    /// Risk limits files refused (the limits in force stayed).
    pub limit_reload_errors: Counter,
    /// The OMD-C feed handler's counters (`harbour hkex publish` and `replay`), by `counter`.
    pub omdc_feed: Family<CounterLabel, Counter>,
    /// Newest epoch each sink holds, by `sink`.
    pub sink_durable_epoch: Family<SinkLabel, Gauge>,
    /// Changed rows written, by `sink`.
    pub sink_rows: Family<SinkLabel, Counter>,
    /// Seconds per sink write (retries included), by `sink`.
    pub sink_write_seconds: Family<SinkLabel, Histogram>,
    /// Changed rows waiting for a sink, by `sink`.
    pub sink_pending_rows: Family<SinkLabel, Gauge>,
    sink_retries: Arc<SinkRetries>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let events_in = Family::<TypeLabel, Counter>::default();
        let dead_letters = Family::<ReasonLabel, Counter>::default();
        let positions = Gauge::default();
        let epochs = Counter::default();
        let epoch_lag_seconds = Gauge::<f64, AtomicU64>::default();
        let epoch = Gauge::default();
        registry.register("harbour_source_events", "Accepted input events by type", events_in.clone());
        registry.register("harbour_source_dead_letters", "Rejected input lines by reason", dead_letters.clone());
        registry.register("harbour_dataflow_positions", "Live position rows", positions.clone());
        registry.register("harbour_pipeline_epochs", "Epochs completed", epochs.clone());
        registry.register(
            "harbour_pipeline_epoch_lag_seconds",
            "Seconds from sealing the latest epoch to its outputs being complete",
            epoch_lag_seconds.clone(),
        );
        registry.register("harbour_pipeline_epoch", "Latest completed epoch", epoch.clone());
        let durable_epoch = Gauge::default();
        registry.register("harbour_pipeline_durable_epoch", "Newest epoch every sink holds", durable_epoch.clone());
        let kafka_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register("harbour_kafka_consumer_lag", "Messages behind the high watermark", kafka_lag.clone());
        let kafka_committed_offset = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "harbour_kafka_committed_offset",
            "Committed offset (next to read) per partition",
            kafka_committed_offset.clone(),
        );
        let kafka_dead_letters_sent = Counter::default();
        registry.register(
            "harbour_kafka_dead_letters_sent",
            "Poison messages written to the dead-letter topic",
            kafka_dead_letters_sent.clone(),
        );
        let kafka_replayed_epochs = Counter::default();
        registry.register(
            "harbour_kafka_replayed_epochs",
            "Epochs re-formed from the epoch log after a restart",
            kafka_replayed_epochs.clone(),
        );
        let kafka_lease_held = Gauge::default();
        registry.register(
            "harbour_kafka_lease_held",
            "1 while this process is active (holds the lease, or runs without one), 0 while it stands by",
            kafka_lease_held.clone(),
        );
        let checkpoint_bytes = Gauge::default();
        registry.register("harbour_checkpoint_bytes", "Size of the newest checkpoint", checkpoint_bytes.clone());
        let checkpoint_snapshot_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "harbour_checkpoint_snapshot_seconds",
            "Time the run loop spent taking the newest checkpoint's snapshot",
            checkpoint_snapshot_seconds.clone(),
        );
        let checkpoint_write_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "harbour_checkpoint_write_seconds",
            "Time the checkpoint store's thread took to write the newest checkpoint",
            checkpoint_write_seconds.clone(),
        );
        let desk_risk = Family::<FigureLabel, Gauge<f64, AtomicU64>>::default();
        registry.register("harbour_risk_desk", "The desk's risk figures in HKD, by figure", desk_risk.clone());
        let risk_alerts = Counter::default();
        registry.register("harbour_risk_alerts", "Risk limit alerts fired (breaches and clears)", risk_alerts.clone());
        let fills_during_halt = Counter::default();
        registry.register(
            "harbour_source_fills_during_halt",
            "Accepted fills timestamped while their security was halted",
            fills_during_halt.clone(),
        );
        let limit_reloads = Counter::default();
        registry.register("harbour_risk_limit_reloads", "Risk limits files re-read and applied", limit_reloads.clone());
        let limit_reload_errors = Counter::default();
        registry.register(
            "harbour_risk_limit_reload_errors",
            "Risk limits files refused (the limits in force stayed)",
            limit_reload_errors.clone(),
        );
        // A gauge, not an OpenMetrics info: Prometheus's classic text parser refuses `info`.
        let build = Family::<VersionLabel, Gauge>::default();
        build.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("harbour_build_info", "1, labelled with the binary's version", build);
        let omdc_feed = Family::<CounterLabel, Counter>::default();
        registry.register(
            "harbour_omdc_feed",
            "The OMD-C feed handler's counts (packets, messages, A/B duplicates, gaps, messages lost, ...), by counter",
            omdc_feed.clone(),
        );
        let sink_durable_epoch = Family::<SinkLabel, Gauge>::default();
        registry.register("harbour_sink_durable_epoch", "Newest epoch the sink holds", sink_durable_epoch.clone());
        let sink_rows = Family::<SinkLabel, Counter>::default();
        registry.register("harbour_sink_rows_written", "Changed rows written to the sink", sink_rows.clone());
        // 1 ms to ~33 s.
        let sink_write_seconds = Family::<SinkLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "harbour_sink_write_seconds",
            "Seconds per write to the sink, retries included",
            sink_write_seconds.clone(),
        );
        let sink_pending_rows = Family::<SinkLabel, Gauge>::default();
        registry.register(
            "harbour_sink_pending_rows",
            "Changed rows waiting for the sink while it writes (past 2,000,000 consumption waits)",
            sink_pending_rows.clone(),
        );
        let sink_retries = Arc::new(SinkRetries::default());
        registry.register_collector(Box::new(sink_retries.clone()));
        Metrics {
            registry,
            events_in,
            dead_letters,
            positions,
            epochs,
            epoch_lag_seconds,
            epoch,
            durable_epoch,
            kafka_lag,
            kafka_committed_offset,
            kafka_dead_letters_sent,
            kafka_replayed_epochs,
            kafka_lease_held,
            checkpoint_bytes,
            checkpoint_snapshot_seconds,
            checkpoint_write_seconds,
            risk_alerts,
            fills_during_halt,
            desk_risk,
            limit_reloads,
            limit_reload_errors,
            omdc_feed,
            sink_durable_epoch,
            sink_rows,
            sink_write_seconds,
            sink_pending_rows,
            sink_retries,
        }
    }
}

impl Metrics {
    /// Counts an accepted event (the engine, counting many, holds an [`EventCounters`]).
    pub fn event(&self, kind: &str) {
        self.events_in.get_or_create(&TypeLabel { r#type: kind.to_owned() }).inc();
    }

    /// Brings the OMD-C counters up to the feed handler's cumulative `stats` (and the gaps
    /// `recovered` from the retransmission service).
    pub fn omdc_feed(&self, stats: &harbour_sources::hkex::feed::FeedStats, recovered: u64) {
        for (counter, total) in [
            ("packets", stats.packets),
            ("messages", stats.messages),
            ("duplicates", stats.duplicates),
            ("gaps", stats.gaps),
            ("lost", stats.lost),
            ("recovered", recovered),
            ("refreshes", stats.refreshes),
            ("unknown", stats.unknown),
            ("decode_errors", stats.decode_errors),
            ("book_errors", stats.book_errors),
            ("resets", stats.resets),
            ("implicit_resets", stats.implicit_resets),
            ("suspect_jumps", stats.suspect_jumps),
            ("other_trades", stats.other_trades),
        ] {
            let c = self.omdc_feed.get_or_create(&CounterLabel { counter });
            c.inc_by(total.saturating_sub(c.get()));
        }
    }

    /// Counts a dead letter.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// Sets a partition's consumer lag.
    pub fn kafka_lag(&self, p: &harbour_sources::kafka::Partition, lag: i64) {
        self.kafka_lag.get_or_create(&PartitionLabel { topic: p.topic.to_string(), partition: p.partition }).set(lag);
    }

    /// Sets partitions' lag from another thread (the watermark watch's).
    pub fn kafka_lag_setter(&self) -> impl Fn(&harbour_sources::kafka::Partition, i64) + Send + 'static {
        let family = self.kafka_lag.clone();
        move |p, lag| {
            family.get_or_create(&PartitionLabel { topic: p.topic.to_string(), partition: p.partition }).set(lag);
        }
    }

    /// Sets a partition's committed offset.
    pub fn kafka_committed(&self, p: &harbour_sources::kafka::Partition, offset: i64) {
        self.kafka_committed_offset
            .get_or_create(&PartitionLabel { topic: p.topic.to_string(), partition: p.partition })
            .set(offset);
    }

    /// The handles of `sink`'s metrics; `retries`, the sink's own count of failed attempts, is
    /// exported as `harbour_sink_retries_total`.
    pub fn sink(&self, sink: &'static str, retries: Option<Arc<AtomicU64>>) -> SinkMetrics {
        let label = SinkLabel { sink };
        if let Some(r) = retries {
            let mut known = self.sink_retries.0.lock().expect("sink retries");
            known.retain(|(s, _)| *s != sink);
            known.push((sink, r));
        }
        SinkMetrics {
            durable_epoch: self.sink_durable_epoch.get_or_create(&label).clone(),
            rows: self.sink_rows.get_or_create(&label).clone(),
            write_seconds: self.sink_write_seconds.get_or_create(&label).clone(),
            pending_rows: self.sink_pending_rows.get_or_create(&label).clone(),
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }
}

/// Liveness state shown by `/health`.
#[derive(Default)]
pub struct Health {
    /// Latest completed epoch.
    pub epoch: AtomicU64,
    /// Input lines read.
    pub lines: AtomicU64,
}

/// Serves `/metrics` and `/health` on `addr` from a background thread. Returns the bound address.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("harbour-http".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        rt.block_on(async move {
            let app = Router::new()
                .route(
                    "/metrics",
                    get(move || async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()) }),
                )
                .route(
                    "/health",
                    get(move || async move {
                        format!(
                            "{{\"status\":\"ok\",\"epoch\":{},\"lines\":{}}}\n",
                            health.epoch.load(Ordering::Relaxed),
                            health.lines.load(Ordering::Relaxed)
                        )
                    }),
                );
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::warn!(error = %e, "metrics server stopped");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "metrics server could not start"),
            }
        });
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_metrics_and_live_retries_are_exported() {
        let m = Metrics::default();
        let retries = Arc::new(AtomicU64::new(0));
        let ch = m.sink("clickhouse", Some(retries.clone()));
        ch.written(42, 1_000, std::time::Duration::from_millis(3));
        ch.pending_rows.set(7);
        retries.fetch_add(3, Ordering::Relaxed); // a write still retrying
        let text = m.render();
        for line in [
            "harbour_sink_retries_total{sink=\"clickhouse\"} 3",
            "harbour_sink_durable_epoch{sink=\"clickhouse\"} 42",
            "harbour_sink_rows_written_total{sink=\"clickhouse\"} 1000",
            "harbour_sink_pending_rows{sink=\"clickhouse\"} 7",
            "harbour_sink_write_seconds_count{sink=\"clickhouse\"} 1",
            "harbour_sink_write_seconds_bucket{le=\"0.004\",sink=\"clickhouse\"} 1",
            "harbour_sink_write_seconds_bucket{le=\"0.002\",sink=\"clickhouse\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(text.contains(&format!("harbour_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
        // A sink registered again (a takeover restarts the run) replaces its counter.
        m.sink("clickhouse", Some(Arc::new(AtomicU64::new(1))));
        assert!(m.render().lines().any(|l| l == "harbour_sink_retries_total{sink=\"clickhouse\"} 1"));
    }

    #[test]
    fn event_counters_count_into_the_exported_family() {
        let m = Metrics::default();
        m.event("fill"); // counted before the engine's handles were taken
        let mut counters = EventCounters::new(&m);
        for kind in ["fill", "bust", "fill", "quote", "fill"] {
            counters.inc(kind);
        }
        let text = m.render();
        for (kind, n) in [("fill", 4), ("bust", 1), ("quote", 1)] {
            let line = format!("harbour_source_events_total{{type=\"{kind}\"}} {n}");
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("type=\"order\""), "no series for a type never seen:\n{text}");
    }
}
