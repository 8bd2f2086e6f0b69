//! The risk alerts topic: every alert as a JSON message, keyed by its deterministic id, written
//! as a sink so an epoch counts as durable only once the broker acknowledged its alerts.
//!
//! Each batch goes in one Kafka transaction (`transactional.id` `<kafka.group_id>.alerts`), with
//! the alert's version in a `harbour.version` header. On a restart the sink reads the newest
//! version the topic holds and is handed only the epochs after it, so a replay after a crash does
//! not send an alert again: exactly once for `read_committed` consumers (until 2026-11-28 the
//! alerts of re-formed epochs were sent again, at least once). A batch cut short by a crash is
//! aborted when the next process starts its producer, which also fences a process that lost the
//! lease.

use harbour_dataflows::risk::book::AlertRow;
use harbour_sinks::tables::{json_pairs, Changes};
use harbour_sources::kafka::{KafkaConfig, OutRecord, TransactionalProducer};

use super::EpochSink;
use crate::engine::OutputState;

/// The JSON form of an alert.
pub fn alert_json(a: &AlertRow, version: u64) -> String {
    serde_json::json!({
        "id": a.id(),
        "group_kind": a.group.kind(),
        "group_name": a.group.name(),
        "metric": a.metric.as_str(),
        "severity": a.severity.as_str(),
        "seq": a.seq,
        "kind": a.kind.as_str(),
        "value": a.value.to_string(),
        "level": a.level.to_string(),
        "ts": a.ts,
        "drivers": serde_json::from_str::<serde_json::Value>(&json_pairs(a.drivers.iter().cloned()))
            .unwrap_or(serde_json::Value::Null),
        "version": version,
    })
    .to_string()
}

/// Writes `changes.alerts` to the alerts topic, a transaction per batch.
pub struct AlertsEpochSink(TransactionalProducer);

/// The header carrying an alert's version.
pub const VERSION_HEADER: &str = "harbour.version";

impl AlertsEpochSink {
    /// A sink for `config.topics.alerts`; its transactional producer starts with the run.
    pub fn new(config: &KafkaConfig) -> AlertsEpochSink {
        let id = format!("{}.alerts", config.group_id);
        AlertsEpochSink(TransactionalProducer::new(config, &config.topics.alerts, &id))
    }
}

impl EpochSink for AlertsEpochSink {
    fn name(&self) -> &'static str {
        "kafka-alerts"
    }

    fn write_through(&mut self, _epoch: u64, _s: &OutputState, changes: &Changes) -> Result<(), String> {
        let batch: Vec<OutRecord> = changes
            .alerts
            .iter()
            .map(|c| OutRecord {
                key: c.row.id(),
                payload: alert_json(&c.row, c.version).into_bytes(),
                headers: vec![(VERSION_HEADER, c.version.to_string())],
            })
            .collect();
        self.0.send_batch(&batch).map_err(|e| e.to_string())
    }

    fn set_run(&mut self, run: &str) {
        self.0.set_run(run);
    }

    /// The topic's newest version: the epochs through it are held (their alerts were committed
    /// whole, in order), so the run hands this sink only those after it.
    fn resume(&mut self, _state: &OutputState, _restored: u64, held: u64, logged: u64) -> Result<u64, String> {
        self.0.held_through(VERSION_HEADER, held, logged).map_err(|e| e.to_string())
    }

    fn reads_state(&self) -> bool {
        false
    }

    fn alerts_only(&self) -> bool {
        true
    }
}
