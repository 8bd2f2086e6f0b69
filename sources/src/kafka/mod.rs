//! Kafka: the production input, and the dead-letter topic.
//!
//! ```text
//!  instruments, fills (+busts), orders, market topics ──► InputConsumer (explicit assignment,
//!        start offsets from Harbour's checkpoint) ──► Record { partition, offset, payload }
//!  poison messages ──► DeadLetterProducer ──► dead-letter topic (reason + source position headers)
//!  contract lines ──► publish_lines (routing by type and key) ──► input topics
//!  lease group (one-partition topic) ──► Lease: which process of an active/standby set runs
//!  output batches ──► TransactionalProducer ──► alerts topic (whole batches, versions in headers)
//! ```
//!
//! Epochs, checkpoints and offset commits are the pipeline's business (`harbour::kafka`); this
//! module only talks to the broker. Message keys: account for fills, busts and orders; symbol for
//! market data and instruments.

mod config;
mod consumer;
mod lease;
mod prefetch;
mod producer;
mod retry;
mod transactional;

pub use config::{is_secret, KafkaConfig, LeaseConfig, Topics, SECRET_ENV};
pub use consumer::{InputConsumer, Offsets, Partition, Record, WatermarkWatch};
pub use lease::Lease;
pub use prefetch::{Prefetched, BATCH, QUEUE};
pub use producer::{
    create_output_topics, create_topics, publish_lines, Counted, DeadLetterProducer, Deliveries, Poison, EPOCH_HEADER,
    MAX_DEAD_LETTER_PAYLOAD,
};
pub use transactional::{OutRecord, TransactionalProducer, RUN_HEADER};

/// Errors talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A librdkafka client call failed.
    #[error("kafka: {0}")]
    Client(String),
    /// A configured topic does not exist.
    #[error("kafka topic `{0}` does not exist (create it, or run `harbour kafka produce` once)")]
    MissingTopic(String),
    /// Some messages were not delivered.
    #[error("kafka: {0} message(s) could not be delivered")]
    Delivery(u64),
    /// Topic creation failed.
    #[error("kafka: creating topic {0}: {1}")]
    Admin(String, String),
    /// The offset to read on from is no longer in its partition.
    #[error(
        "kafka: {0} is outside the messages the broker holds (deleted by retention before they were read, or the \
         topic was recreated): reading on would skip them. Clear the state folder and the sinks to start again, or \
         set kafka.properties.\"auto.offset.reset\" = \"earliest\" to skip to the oldest message held"
    )]
    OffsetsGone(String),
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// The admin runtime could not start.
    #[error("kafka admin runtime: {0}")]
    Runtime(std::io::Error),
}

impl KafkaError {
    /// The client's error as text, without a property's value: a property librdkafka refuses
    /// may be a secret (a misspelt `sasl.passwrd` from the secrets file is not known to be one),
    /// and its message would otherwise carry the value.
    fn client(e: rdkafka::error::KafkaError) -> KafkaError {
        match e {
            rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => {
                let desc = if value.is_empty() { desc } else { desc.replace(&value, "<hidden>") };
                KafkaError::Client(format!("librdkafka refused property {key}: {desc}"))
            }
            e => KafkaError::Client(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_property_is_named_without_its_value() {
        let refused = |key: &str| {
            rdkafka::config::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .set(key, "hunter2")
                .create::<rdkafka::consumer::BaseConsumer>()
                .map(|_| ())
                .unwrap_err()
        };
        let e = refused("sasl.passwrd");
        assert!(e.to_string().contains("hunter2"), "librdkafka's own message carries the value: {e}");
        let ours = KafkaError::client(e).to_string();
        assert!(ours.contains("sasl.passwrd") && !ours.contains("hunter2"), "{ours}");
        let ours = KafkaError::client(refused("security.protocol")).to_string();
        assert!(ours.contains("security.protocol") && !ours.contains("hunter2"), "{ours}");
    }
}
