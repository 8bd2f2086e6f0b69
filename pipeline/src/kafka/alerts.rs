//! The risk alerts topic: every alert as a JSON message, keyed by its deterministic id, written
//! as a sink so an epoch counts as durable only once the broker acknowledged its alerts.
//!
//! A replay after a crash re-sends the alerts of the epochs it re-forms (at-least-once): the key and
//! the `harbour.version` header are the same, so a consumer (or a compacted topic) drops repeats.

use harbour_dataflows::risk::book::AlertRow;
use harbour_sinks::tables::{json_pairs, Changes};
use harbour_sources::kafka::{KafkaConfig, KafkaError, RecordProducer};

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

/// Writes `changes.alerts` to the alerts topic.
pub struct AlertsEpochSink(RecordProducer);

impl AlertsEpochSink {
    /// A producer for `config.topics.alerts`.
    pub fn new(config: &KafkaConfig) -> Result<AlertsEpochSink, KafkaError> {
        Ok(AlertsEpochSink(RecordProducer::new(config, &config.topics.alerts)?))
    }
}

impl EpochSink for AlertsEpochSink {
    fn name(&self) -> &'static str {
        "kafka-alerts"
    }

    fn write_through(&mut self, _epoch: u64, _s: &OutputState, changes: &Changes) -> Result<(), String> {
        for c in &changes.alerts {
            let version = c.version.to_string();
            let payload = alert_json(&c.row, c.version);
            self.0
                .send(&c.row.id(), payload.as_bytes(), &[("harbour.version", &version)])
                .map_err(|e| e.to_string())?;
        }
        self.0.flush().map_err(|e| e.to_string())
    }

    fn reads_state(&self) -> bool {
        false
    }

    fn alerts_only(&self) -> bool {
        true
    }
}
