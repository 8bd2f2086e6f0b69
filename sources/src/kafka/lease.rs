//! The lease: which of several Harbour processes configured alike is the active one.
//!
//! Every process with `[kafka.lease] enabled = true` joins the consumer group
//! `<kafka.group_id>.lease` on a one-partition topic (`kafka.lease.topic`, created when missing).
//! The member the group assigns that partition to holds the lease and runs the pipeline; the
//! others stand by. The cooperative-sticky assignor keeps the partition where it is when a member
//! joins, so a standby starting up never interrupts the active process. When the holder dies, the
//! broker drops it after `kafka.lease.session_timeout_ms` without heartbeats and hands the
//! partition to a standby, which restores the shared checkpoint and reads on; when it stops
//! cleanly, it leaves the group and a standby takes over at once. A holder that lost its
//! membership (its heartbeats stopped reaching the broker) sees the partition revoked on its next
//! [`Lease::poll`] and must stop writing.
//!
//! Nothing is ever read from or written to the topic: the group's assignment is the whole protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use super::producer::ensure_topics;
use super::{KafkaConfig, KafkaError};

/// Logs the lease group's rebalances.
struct LeaseLog;

impl ClientContext for LeaseLog {}

impl ConsumerContext for LeaseLog {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => tracing::debug!(partitions = tpl.count(), "lease group: assigned"),
            Rebalance::Revoke(tpl) => tracing::debug!(partitions = tpl.count(), "lease group: revoked"),
            Rebalance::Error(e) => tracing::warn!(error = %e, "lease group: rebalance failed"),
        }
    }
}

/// This process's membership of the lease group.
pub struct Lease {
    consumer: BaseConsumer<LeaseLog>,
    topic: String,
    group: String,
    held: bool,
}

impl Lease {
    /// Creates the lease topic when missing and joins the group (without waiting for an
    /// assignment: see [`Lease::acquire`]).
    pub fn join(config: &KafkaConfig) -> Result<Lease, KafkaError> {
        let l = &config.lease;
        ensure_topics(config, &[(l.topic.as_str(), 1)])?;
        let session = l.session_timeout_ms.to_string();
        let heartbeat = (l.session_timeout_ms / 5).max(100).to_string();
        let mut client = config.client_with(&[
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "latest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", &session),
            ("heartbeat.interval.ms", &heartbeat),
            // The holder serves the group from its loop, which may wait long on a sink that is
            // down (backpressure): librdkafka's heartbeats keep the session alive meanwhile, and
            // the poll interval must not take the lease from a live process (a standby could do
            // no better with the sink down). A dead process stops heartbeating: the session
            // timeout hands the lease on.
            ("max.poll.interval.ms", "86400000"),
        ])?;
        let group = format!("{}.lease", config.group_id);
        client.set("group.id", &group);
        let consumer: BaseConsumer<LeaseLog> = client.create_with_context(LeaseLog).map_err(KafkaError::client)?;
        consumer.subscribe(&[l.topic.as_str()]).map_err(KafkaError::client)?;
        tracing::info!(%group, topic = %l.topic, "joined the lease group");
        Ok(Lease { consumer, topic: l.topic.clone(), group, held: false })
    }

    /// Serves the group (rebalances are delivered here; heartbeats are librdkafka's own), waiting
    /// up to `timeout`; whether this process holds the lease now.
    pub fn poll(&mut self, timeout: Duration) -> Result<bool, KafkaError> {
        let mut wait = timeout;
        // The topic carries nothing Harbour reads; anything found there is skipped.
        while let Some(r) = self.consumer.poll(wait) {
            wait = Duration::ZERO;
            if let Err(e) = r {
                // A session timeout outside the broker's bounds (`group.min.session.timeout.ms`,
                // 6 s by default, to `group.max.session.timeout.ms`) is refused at every join:
                // waiting would leave every process standing by for ever.
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::InvalidSessionTimeout) {
                    return Err(KafkaError::Config(format!(
                        "kafka.lease.session_timeout_ms: the broker refuses it ({e}); its bounds are \
                         group.min.session.timeout.ms (6000 by default) and group.max.session.timeout.ms"
                    )));
                }
                tracing::warn!(error = %e, group = %self.group, "lease group error (retrying)");
            }
        }
        let assignment = self.consumer.assignment().map_err(KafkaError::client)?;
        let held = assignment.elements_for_topic(&self.topic).iter().any(|e| e.partition() == 0);
        if held != self.held {
            if held {
                tracing::info!(group = %self.group, "lease acquired: this process is the active one");
            } else {
                tracing::warn!(group = %self.group, "lease lost: another process is the active one now");
            }
            self.held = held;
        }
        Ok(held)
    }

    /// Waits until this process holds the lease (`true`) or `stop` is set (`false`).
    pub fn acquire(&mut self, stop: &AtomicBool) -> Result<bool, KafkaError> {
        tracing::info!(group = %self.group, "standing by until this process holds the lease");
        loop {
            if self.poll(Duration::from_millis(200))? {
                return Ok(true);
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
        }
    }
}
