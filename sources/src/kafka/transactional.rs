//! Output topics written in Kafka transactions, and reading back how far such a topic got.
//!
//! ```text
//!  batch of records ──► begin ─► send … ─► commit ──► visible whole to read_committed consumers
//!                         └── crash: the next producer with the same transactional.id aborts it
//!  newest_header(topic, "harbour.version") ◄── the tail of every partition, read_committed
//! ```
//!
//! A sink that writes each batch in one transaction, with its version in a header, can tell on a
//! restart which versions the topic already holds (the newest committed header: transactions
//! commit in order, and each holds whole epochs) and send only what comes after: exactly once for
//! `read_committed` consumers (librdkafka's default; the Java client's is `read_uncommitted`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::consumer::watermarks_of;
use super::producer::{producer_with, send_queued, Counted};
use super::retry::{retry, Patience};
use super::{KafkaConfig, KafkaError};

/// How long a transaction call may take before it fails.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`init_transactions`] goes on retrying a retriable failure (a coordinator not yet
/// available: a fresh broker creates its transaction log on the first transactional producer).
const INIT_WITHIN: Duration = Duration::from_secs(300);

/// Registers the transactional id (fencing a previous holder and aborting what it left open),
/// retrying a timeout or an unavailable coordinator until [`INIT_WITHIN`] has passed.
fn init_transactions(p: &BaseProducer<Counted>, id: &str) -> Result<(), KafkaError> {
    // (A coordinator not yet available can answer at once: a pause between attempts, not a
    // tight loop of them.)
    retry(
        Patience::fixed(INIT_WITHIN, Duration::from_millis(500)),
        || p.init_transactions(TXN_TIMEOUT),
        |e, _| {
            let again = matches!(e, RdError::Transaction(t) if t.is_retriable());
            if again {
                tracing::warn!(transactional_id = id, error = %e, "transaction coordinator not ready; retrying");
            }
            again
        },
    )
    .map_err(KafkaError::client)
}

/// Attempts at a batch whose transaction the broker made abortable (aborted, then sent again).
const ATTEMPTS: u32 = 3;

/// One record of a batch: key, payload and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRecord {
    /// The message key.
    pub key: String,
    /// The message value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(&'static str, String)>,
}

/// Writes batches of records to one topic, each batch in one transaction, every record marked
/// with the writing state folder's run ([`RUN_HEADER`]) once it has one.
pub struct TransactionalProducer {
    config: KafkaConfig,
    topic: String,
    transactional_id: String,
    run: Option<String>,
    /// Started on first use: starting fences every earlier producer with the id (a process that
    /// lost its lease, a zombie) and aborts its open transaction, so a standby must not start one
    /// while it stands by.
    started: Option<(BaseProducer<Counted>, Counted)>,
}

impl TransactionalProducer {
    /// A producer for `topic` with `transactional_id`; it connects on first use.
    pub fn new(config: &KafkaConfig, topic: &str, transactional_id: &str) -> TransactionalProducer {
        TransactionalProducer {
            config: config.clone(),
            topic: topic.to_string(),
            transactional_id: transactional_id.to_string(),
            run: None,
            started: None,
        }
    }

    /// Records from now on carry `run`, and [`TransactionalProducer::held_through`] reads that
    /// run's alone.
    pub fn set_run(&mut self, run: &str) {
        self.run = Some(run.to_string());
    }

    fn start(&mut self) -> Result<&BaseProducer<Counted>, KafkaError> {
        if self.started.is_none() {
            let (p, d) = producer_with(&self.config, &[("transactional.id", &self.transactional_id)])?;
            init_transactions(&p, &self.transactional_id)?;
            self.started = Some((p, d));
        }
        Ok(&self.started.as_ref().expect("started above").0)
    }

    /// The newest epoch the topic holds whole, by the numeric `header` of this run's committed
    /// records, and at least `held`. Starts the producer first (aborting a batch a crashed holder
    /// left open). A value past `logged`, the newest epoch the state folder sealed, is not this
    /// folder's: then `held`, with a warning (what follows may be sent again).
    pub fn held_through(&mut self, header: &str, held: u64, logged: u64) -> Result<u64, KafkaError> {
        self.start()?;
        match newest_header(&self.config, &self.topic, header, self.run.as_deref())? {
            Some(v) if v > logged => {
                tracing::warn!(topic = %self.topic, newest = v, logged,
                    "the topic holds epochs past this state folder's: those re-formed may be sent again");
                Ok(held)
            }
            Some(v) => Ok(held.max(v)),
            None => Ok(held),
        }
    }

    /// Sends `records` in one transaction and returns once it is committed. A transaction the
    /// broker made abortable is aborted and the batch sent again (at most [`ATTEMPTS`] times).
    pub fn send_batch(&mut self, records: &[OutRecord]) -> Result<(), KafkaError> {
        if records.is_empty() {
            return Ok(());
        }
        self.start()?;
        let mut attempt = 1;
        loop {
            match self.try_batch(records) {
                Ok(()) => return Ok(()),
                Err(RdError::Transaction(e)) if e.txn_requires_abort() && attempt < ATTEMPTS => {
                    tracing::warn!(topic = %self.topic, error = %e, attempt, "transaction aborted; sending the batch again");
                    self.start()?.abort_transaction(TXN_TIMEOUT).map_err(KafkaError::client)?;
                    attempt += 1;
                }
                Err(e) => {
                    // (Best effort: a fatal error leaves nothing to abort.)
                    let _ = self.start()?.abort_transaction(TXN_TIMEOUT);
                    return Err(KafkaError::client(e));
                }
            }
        }
    }

    fn try_batch(&self, records: &[OutRecord]) -> Result<(), RdError> {
        let (producer, deliveries) = self.started.as_ref().expect("started before a batch");
        producer.begin_transaction()?;
        for r in records {
            let mut h = OwnedHeaders::new();
            for (k, v) in &r.headers {
                h = h.insert(Header { key: k, value: Some(v.as_str()) });
            }
            if let Some(run) = &self.run {
                h = h.insert(Header { key: RUN_HEADER, value: Some(run.as_str()) });
            }
            send_queued(
                producer,
                BaseRecord::to(&self.topic).key(r.key.as_bytes()).payload(&r.payload[..]).headers(h),
            )?;
        }
        // Commits once every record is acknowledged (a record that could not be delivered fails it).
        producer.commit_transaction(TXN_TIMEOUT)?;
        deliveries.take_failed();
        Ok(())
    }
}

/// The header carrying the run identity of the state folder that wrote a message.
pub const RUN_HEADER: &str = "harbour.run";

/// Messages per partition past which [`newest_header`] stops looking further back.
const SCAN_MAX: i64 = 256_000;

/// How long [`newest_header`] reads at most.
const SCAN_TIME: Duration = Duration::from_secs(30);

/// The largest numeric `header` among the committed messages of `topic` that carry `run` in
/// [`RUN_HEADER`] (any, without `run`; `None`: no such message). Reads the tail of each partition (widening until a message carrying it is found,
/// the partition is read whole, or [`SCAN_MAX`] messages back) with a `read_committed` consumer of
/// its own, outside any group. What it cannot read in [`SCAN_TIME`] counts for nothing: the
/// answer may be lower than the truth, never higher (a sink skipping through it then sends some
/// again rather than losing any).
fn newest_header(
    config: &KafkaConfig,
    topic: &str,
    header: &str,
    run: Option<&str>,
) -> Result<Option<u64>, KafkaError> {
    let mut client = config.client_with(&[
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
        ("isolation.level", "read_committed"),
        ("auto.offset.reset", "earliest"),
        // The end of each partition is reported by the fetch that reaches it: not half a second
        // (librdkafka's default wait for more) later.
        ("fetch.wait.max.ms", "10"),
    ])?;
    client.set("group.id", format!("{}.scan", config.group_id));
    let consumer: BaseConsumer = client.create().map_err(KafkaError::client)?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(KafkaError::client)?;
    let n = md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len()) as i32;
    // Per partition with messages: (low, high) watermarks.
    let mut todo: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for p in 0..n {
        let (low, high) = watermarks_of(&consumer, topic, p, timeout).map_err(KafkaError::client)?;
        if high > low {
            todo.insert(p, (low, high));
        }
    }
    let mut newest: Option<u64> = None;
    let mut window = 1_000i64;
    let deadline = Instant::now() + SCAN_TIME;
    while !todo.is_empty() {
        let mut assign = TopicPartitionList::new();
        for (p, (low, high)) in &todo {
            assign
                .add_partition_offset(topic, *p, Offset::Offset((*high - window).max(*low)))
                .map_err(KafkaError::client)?;
        }
        consumer.assign(&assign).map_err(KafkaError::client)?;
        let mut open: std::collections::BTreeSet<i32> = todo.keys().copied().collect();
        let mut found: std::collections::BTreeSet<i32> = std::collections::BTreeSet::new();
        while !open.is_empty() {
            if Instant::now() > deadline {
                tracing::warn!(%topic, partitions = ?open, ?newest, "reading the end of the topic took too long: taken as read");
                let _ = consumer.unassign();
                return Ok(newest);
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(RdError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => return Err(KafkaError::client(e)),
                Some(Ok(m)) => {
                    let text =
                        |key: &str| m.headers().and_then(|h| h.iter().find(|x| x.key == key).and_then(|x| x.value));
                    let ours = run.is_none_or(|r| text(RUN_HEADER) == Some(r.as_bytes()));
                    let value =
                        text(header).filter(|_| ours).and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                    if let Some(v) = value {
                        newest = newest.max(Some(v));
                        found.insert(m.partition());
                    }
                }
            }
        }
        // Partitions whose tail held no such message (aborted batches, other writers) are read
        // further back, down to their beginning.
        todo.retain(|p, (low, high)| !found.contains(p) && *high - window > *low);
        window = window.saturating_mul(16);
        if window > SCAN_MAX && !todo.is_empty() {
            tracing::warn!(%topic, %header, partitions = ?todo.keys().collect::<Vec<_>>(), back = SCAN_MAX,
                "no message carrying the header near the end of these partitions: taken as none");
            break;
        }
    }
    consumer.unassign().map_err(KafkaError::client)?;
    Ok(newest)
}
