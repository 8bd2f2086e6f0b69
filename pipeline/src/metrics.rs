//! Prometheus metrics and the `/metrics` + `/health` HTTP endpoints.
//!
//! Metric names follow `harbour_<area>_<thing>_<unit>`. The server runs on its own thread with a
//! small tokio runtime, so the timely worker never waits on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Label of a desk risk figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct FigureLabel {
    /// `gross`, `net`, `var_99`, `hist_var_99`, `es_99`, `drawdown`.
    pub figure: &'static str,
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
    /// 1 while this process holds the lease (active), 0 while it stands by (with `kafka.lease`).
    pub kafka_lease_held: Gauge,
    /// Size of the newest checkpoint.
    pub checkpoint_bytes: Gauge,
    /// Risk limit alerts fired (breaches and clears).
    pub risk_alerts: Counter,
    /// The desk's risk figures (HKD): gross, net, var_99, hist_var_99, es_99, drawdown, by `figure`.
    pub desk_risk: Family<FigureLabel, Gauge<f64, AtomicU64>>,
    /// Risk limits files re-read and applied.
    pub limit_reloads: Counter,
    /// Risk limits files refused (the limits in force stayed).
    pub limit_reload_errors: Counter,
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
            "1 while this process holds the lease and runs, 0 while it stands by",
            kafka_lease_held.clone(),
        );
        let checkpoint_bytes = Gauge::default();
        registry.register("harbour_checkpoint_bytes", "Size of the newest checkpoint", checkpoint_bytes.clone());
        let desk_risk = Family::<FigureLabel, Gauge<f64, AtomicU64>>::default();
        registry.register("harbour_risk_desk", "The desk's risk figures in HKD, by figure", desk_risk.clone());
        let risk_alerts = Counter::default();
        registry.register("harbour_risk_alerts", "Risk limit alerts fired (breaches and clears)", risk_alerts.clone());
        let limit_reloads = Counter::default();
        registry.register("harbour_risk_limit_reloads", "Risk limits files re-read and applied", limit_reloads.clone());
        let limit_reload_errors = Counter::default();
        registry.register(
            "harbour_risk_limit_reload_errors",
            "Risk limits files refused (the limits in force stayed)",
            limit_reload_errors.clone(),
        );
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
            risk_alerts,
            desk_risk,
            limit_reloads,
            limit_reload_errors,
        }
    }
}

impl Metrics {
    /// Counts an accepted event.
    pub fn event(&self, kind: &str) {
        self.events_in.get_or_create(&TypeLabel { r#type: kind.to_owned() }).inc();
    }

    /// Counts a dead letter.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// Sets a partition's consumer lag.
    pub fn kafka_lag(&self, p: &harbour_sources::kafka::Partition, lag: i64) {
        self.kafka_lag.get_or_create(&PartitionLabel { topic: p.topic.to_string(), partition: p.partition }).set(lag);
    }

    /// Sets a partition's committed offset.
    pub fn kafka_committed(&self, p: &harbour_sources::kafka::Partition, offset: i64) {
        self.kafka_committed_offset
            .get_or_create(&PartitionLabel { topic: p.topic.to_string(), partition: p.partition })
            .set(offset);
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
            let app = Router::new().route("/metrics", get(move || async move { metrics.render() })).route(
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
