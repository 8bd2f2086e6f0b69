//! Producing to Kafka: topic creation, publishing contract lines to their topics (what
//! `harbour kafka produce` does with a sample day), and the dead-letter topic.
//!
//! Routing of a contract line: fills and busts to the fills topic keyed by account (a bust takes
//! the account of the fill it cancels, so it lands behind that fill in the same partition), orders
//! keyed by account, quotes and closes keyed by symbol, instruments keyed by symbol. A line that is
//! not a contract object still goes to the fills topic (keyed by its bytes), so that the consumer's
//! dead-letter path sees it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harbour_dataflows::sharded::ShardedMap;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::Deserialize;

use super::consumer::Partition;
use super::retry::{retry, Patience};
use super::transactional::{OutRecord, TransactionalProducer};
use super::{KafkaConfig, KafkaError};

/// Counts failed deliveries (checked at each flush).
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
}

/// The producer context: shares its [`Deliveries`] with the producer's owner.
#[derive(Clone, Default)]
pub struct Counted(Arc<Deliveries>);

impl std::ops::Deref for Counted {
    type Target = Deliveries;
    fn deref(&self) -> &Deliveries {
        &self.0
    }
}

impl ClientContext for Counted {}

impl ProducerContext for Counted {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::warn!(error = %e, "kafka delivery failed");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn producer(config: &KafkaConfig) -> Result<(BaseProducer<Counted>, Counted), KafkaError> {
    producer_with(config, &[])
}

/// A producer with Harbour's defaults, the configured properties, then `own` (which nothing
/// overrides: a transactional id).
pub(crate) fn producer_with(
    config: &KafkaConfig,
    own: &[(&str, &str)],
) -> Result<(BaseProducer<Counted>, Counted), KafkaError> {
    let mut c = config.client_with(&[
        ("linger.ms", "5"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "1000000"),
        ("enable.idempotence", "true"),
        ("compression.type", "lz4"),
    ])?;
    for (k, v) in own {
        c.set(*k, *v);
    }
    let d = Counted::default();
    let p = c.create_with_context(d.clone()).map_err(KafkaError::client)?;
    Ok((p, d))
}

fn send<'a>(p: &BaseProducer<Counted>, record: BaseRecord<'a, [u8], [u8], ()>) -> Result<(), KafkaError> {
    send_queued(p, record).map_err(KafkaError::client)
}

/// Queues a record, waiting while the producer's queue is full.
pub(crate) fn send_queued<'a>(
    p: &BaseProducer<Counted>,
    mut record: BaseRecord<'a, [u8], [u8], ()>,
) -> Result<(), RdError> {
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn flush(p: &BaseProducer<Counted>, d: &Deliveries) -> Result<(), KafkaError> {
    p.flush(Duration::from_secs(60)).map_err(KafkaError::client)?;
    match d.take_failed() {
        0 => Ok(()),
        n => Err(KafkaError::Delivery(n)),
    }
}

impl Deliveries {
    /// Failed deliveries since the last call.
    pub fn take_failed(&self) -> u64 {
        self.failed.swap(0, Ordering::Relaxed)
    }
}

/// Creates the input, dead-letter and alerts topics with `config.partitions` partitions when missing.
pub fn create_topics(config: &KafkaConfig) -> Result<(), KafkaError> {
    let t = &config.topics;
    let names = [&t.instruments, &t.fills, &t.orders, &t.market, &t.dead_letters, &t.alerts];
    ensure_topics(config, &names.map(|n| (n.as_str(), config.partitions)))
}

/// Creates the dead-letter and alerts topics when missing: what `harbour kafka run` writes. The
/// input topics are not created there (a misspelt name would be created empty and read as an
/// idle topic): a missing one stops the run, naming it.
pub fn create_output_topics(config: &KafkaConfig) -> Result<(), KafkaError> {
    let t = &config.topics;
    ensure_topics(config, &[(t.dead_letters.as_str(), config.partitions), (t.alerts.as_str(), config.partitions)])
}

/// Creates the `(name, partitions)` topics that are missing (existing ones are left as they are,
/// and not asked for: a cluster with ACLs refuses a create of an existing topic to a client
/// without the right to create).
pub(crate) fn ensure_topics(config: &KafkaConfig, wanted: &[(&str, i32)]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client()?.create().map_err(KafkaError::client)?;
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10)).map_err(KafkaError::client)?;
    let existing: std::collections::HashSet<&str> =
        metadata.topics().iter().filter(|t| !t.partitions().is_empty()).map(|t| t.name()).collect();
    let topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .filter(|(n, _)| !existing.contains(n))
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    if topics.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(KafkaError::Runtime)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = rt.block_on(admin.create_topics(&topics, &opts)).map_err(KafkaError::client)?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(KafkaError::Admin(name, code.to_string())),
        }
    }
    let created: Vec<(&str, i32)> = topics.iter().map(|t| (t.name, t.num_partitions)).collect();
    wait_until_visible(admin.inner(), &created)
}

/// Waits until the broker's metadata lists every `(name, partitions)` topic with all its
/// partitions led: a create returns once the controller has the topic, and a broker answers
/// metadata from a cache it updates a moment later, so a run started right after
/// `harbour kafka topics` could find a just-created input topic missing (a clean-clone CI run
/// did, 2026-11-29).
fn wait_until_visible<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    wanted: &[(&str, i32)],
) -> Result<(), KafkaError> {
    /// Why a look at the metadata did not end the wait.
    enum NotYet {
        Fetch(KafkaError),
        /// This topic is not listed yet with all its partitions led.
        Missing(String),
    }
    let look = || {
        let metadata =
            client.fetch_metadata(None, Duration::from_secs(10)).map_err(|e| NotYet::Fetch(KafkaError::client(e)))?;
        let missing = wanted.iter().find(|(name, partitions)| {
            !metadata.topics().iter().any(|t| {
                t.name() == *name
                    && t.partitions().len() >= *partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
            })
        });
        match missing {
            Some((name, _)) => Err(NotYet::Missing(name.to_string())),
            None => Ok(()),
        }
    };
    let waiting = |e: &NotYet, _| match e {
        NotYet::Missing(name) => {
            tracing::debug!(topic = %name, "waiting for a created topic to be listed");
            true
        }
        NotYet::Fetch(_) => false,
    };
    retry(Patience::fixed(VISIBLE_WITHIN, Duration::from_millis(100)), look, waiting).map_err(|e| match e {
        NotYet::Fetch(e) => e,
        NotYet::Missing(name) => KafkaError::Admin(
            name,
            format!("created, but not listed with its partitions led after {} s", VISIBLE_WITHIN.as_secs()),
        ),
    })
}

/// How long [`ensure_topics`] waits for created topics to be listed.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Route<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    account: Option<&'a str>,
    symbol: Option<&'a str>,
    market: Option<&'a str>,
    exec_id: Option<&'a str>,
}

/// Publishes contract lines to their topics (see the module docs for the routing); returns the
/// number of messages per topic once the broker acknowledged every one.
pub fn publish_lines<S: AsRef<str>>(
    config: &KafkaConfig,
    lines: impl IntoIterator<Item = S>,
) -> Result<HashMap<String, u64>, KafkaError> {
    let (p, d) = producer(config)?;
    let t = &config.topics;
    // (Split by hash: one map of every fill's account stalled publishing ~100 ms at each
    // doubling, half a million fills in.)
    let mut fill_accounts: ShardedMap<String, String> = ShardedMap::new();
    let mut counts: HashMap<String, u64> = HashMap::new();
    for line in lines {
        let line = line.as_ref();
        let route: Option<Route<'_>> = serde_json::from_str(line).ok();
        let (topic, key): (&str, String) = match route {
            Some(Route { kind: Some("fill"), account: Some(a), exec_id, .. }) => {
                if let Some(x) = exec_id {
                    fill_accounts.insert(x.to_string(), a.to_string());
                }
                (&t.fills, a.to_string())
            }
            Some(Route { kind: Some("bust"), exec_id: Some(x), .. }) => {
                (&t.fills, fill_accounts.get(x).cloned().unwrap_or_else(|| x.to_string()))
            }
            Some(Route { kind: Some("order"), account: Some(a), .. }) => (&t.orders, a.to_string()),
            Some(Route { kind: Some("quote" | "close" | "status"), symbol: Some(s), .. }) => (&t.market, s.to_string()),
            Some(Route { kind: Some("status"), market: Some(m), .. }) => (&t.market, m.to_string()),
            Some(Route { kind: Some("instrument"), symbol: Some(s), .. }) => (&t.instruments, s.to_string()),
            _ => (&t.fills, line.chars().take(64).collect()),
        };
        send(&p, BaseRecord::to(topic).key(key.as_bytes()).payload(line.as_bytes()))?;
        *counts.entry(topic.to_string()).or_default() += 1;
        p.poll(Duration::ZERO);
    }
    flush(&p, &d)?;
    Ok(counts)
}

/// A poison message on its way to the dead-letter topic.
#[derive(Clone, Debug)]
pub struct Poison<'a> {
    /// Where it was read.
    pub partition: &'a Partition,
    /// Its offset.
    pub offset: i64,
    /// Machine-readable reason (`parse`, `unknown_symbol`, …).
    pub code: &'a str,
    /// Human-readable reason.
    pub reason: &'a str,
    /// The original payload.
    pub payload: &'a [u8],
    /// The HKT trade date the pipeline filed it under (its `dead_letters` row's), when it did.
    pub trade_date: Option<chrono::NaiveDate>,
}

/// The largest payload a dead letter carries whole (bytes); the `dead_letters` table keeps the
/// line's first 16 KiB (`harbour::engine::DEAD_LETTER_RAW_BYTES`).
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 512 * 1024;

/// The header carrying the epoch a dead letter belongs to.
pub const EPOCH_HEADER: &str = "harbour.epoch";

/// Writes poison messages to the dead-letter topic, with headers `harbour.reason`,
/// `harbour.reason_code`, `harbour.source.topic`, `harbour.source.partition`,
/// `harbour.source.offset`, `harbour.trade_date` (when known) and `harbour.epoch` (the epoch of
/// the message); keyed by
/// `topic/partition/offset`. Messages are kept until [`DeadLetterProducer::flush`], which sends
/// them in one Kafka transaction (`transactional.id` `<kafka.group_id>.<name>`: a producer of its
/// own per writer, `dead-letters` for the pipeline) holding whole epochs:
/// [`DeadLetterProducer::held_through`] then tells a restart which epochs' dead letters the topic
/// holds, so that they are not sent again (exactly once for `read_committed` consumers). A
/// [plain](DeadLetterProducer::plain) one (the OMD-C bridge's, which has no epochs) sends each at
/// once, outside transactions.
pub struct DeadLetterProducer {
    topic: String,
    sender: Sender,
    /// What the start read ([`DeadLetterProducer::held`]), once taken.
    held: Option<u64>,
    batch: Vec<OutRecord>,
    bytes: usize,
    since: Option<std::time::Instant>,
}

impl Drop for DeadLetterProducer {
    /// Waits for a start still running: left alone, it could fence a later producer of the same
    /// transactional id (the next run's, in this process or another).
    fn drop(&mut self) {
        if let Some(t) = self.take_start() {
            let _ = t.join();
        }
    }
}

/// The thread starting a transactional producer: the producer and the newest epoch read.
type StartThread = std::thread::JoinHandle<Result<(Box<TransactionalProducer>, u64), KafkaError>>;

enum Sender {
    Transactional(Box<TransactionalProducer>),
    /// A transactional one starting on a thread of its own, and the newest epoch the topic
    /// holds once it has read it ([`DeadLetterProducer::start_reading_held`]).
    Starting(StartThread),
    Plain(BaseProducer<Counted>, Counted),
    /// Between two of the above (never seen outside a method), or after a start that failed.
    Moved,
}

impl DeadLetterProducer {
    /// A producer for `config.topics.dead_letters` named `name` (its transactional id is
    /// `<kafka.group_id>.<name>`; connects on first use).
    pub fn new(config: &KafkaConfig, name: &str) -> DeadLetterProducer {
        let topic = config.topics.dead_letters.clone();
        let id = format!("{}.{name}", config.group_id);
        let sender = Sender::Transactional(Box::new(TransactionalProducer::new(config, &topic, &id)));
        DeadLetterProducer { topic, sender, held: None, batch: Vec::new(), bytes: 0, since: None }
    }

    /// A producer for `config.topics.dead_letters` that sends each dead letter at once, outside
    /// transactions (at least once; [`DeadLetterProducer::flush`] waits for the broker).
    pub fn plain(config: &KafkaConfig) -> Result<DeadLetterProducer, KafkaError> {
        let (p, d) = producer(config)?;
        let topic = config.topics.dead_letters.clone();
        Ok(DeadLetterProducer {
            topic,
            sender: Sender::Plain(p, d),
            held: None,
            batch: Vec::new(),
            bytes: 0,
            since: None,
        })
    }

    /// Dead letters from now on carry `run` ([`RUN_HEADER`](super::RUN_HEADER)), and
    /// [`DeadLetterProducer::held_through`] reads that run's alone (set it before that starts).
    pub fn set_run(&mut self, run: &str) {
        debug_assert!(!matches!(self.sender, Sender::Starting(_)), "the run is set before the start");
        if let Sender::Transactional(p) = &mut self.sender {
            p.set_run(run);
        }
    }

    /// The newest epoch whose dead letters the topic holds, at least `held`
    /// ([`TransactionalProducer::held_through`]; `held` for a plain producer).
    pub fn held_through(&mut self, held: u64, logged: u64) -> Result<u64, KafkaError> {
        self.start_reading_held(held, logged)?;
        self.held()
    }

    /// Starts the producer and reads [`DeadLetterProducer::held_through`] on a thread of its
    /// own, so that a run reads its input meanwhile (the transactional producer's start and the
    /// read of the topic's end took ~0.6 s of a cold start here, until 2026-11-29);
    /// [`DeadLetterProducer::held`] takes the result. Dead letters are kept meanwhile; a flush
    /// with none kept has nothing to wait for. The order is the same as `held_through`'s: the
    /// start fences an earlier holder's producer before the topic's end is read.
    pub fn start_reading_held(&mut self, held: u64, logged: u64) -> Result<(), KafkaError> {
        match std::mem::replace(&mut self.sender, Sender::Moved) {
            Sender::Transactional(mut p) => {
                let thread = std::thread::Builder::new()
                    .name("harbour-dlq-start".into())
                    .spawn(move || {
                        let read = std::time::Instant::now();
                        let held = p.held_through(EPOCH_HEADER, held, logged)?;
                        tracing::info!(held, ms = read.elapsed().as_millis() as u64, "dead-letter topic read");
                        Ok((p, held))
                    })
                    .map_err(|e| KafkaError::Config(format!("starting the dead-letter producer's thread: {e}")))?;
                self.sender = Sender::Starting(thread);
            }
            other => {
                self.sender = other;
                self.held = Some(self.held.unwrap_or(held));
            }
        }
        Ok(())
    }

    /// The newest epoch whose dead letters the topic holds, as the start read it (waiting for
    /// it: [`DeadLetterProducer::start_reading_held`]).
    pub fn held(&mut self) -> Result<u64, KafkaError> {
        self.started()?;
        match (&self.sender, self.held) {
            (Sender::Moved, _) => Err(KafkaError::Client("the dead-letter producer did not start".into())),
            (_, held) => Ok(held.unwrap_or_default()),
        }
    }

    /// The start's error, if it has ended with one (without waiting for a start still running).
    pub fn check_start(&mut self) -> Result<(), KafkaError> {
        match &self.sender {
            Sender::Starting(t) if t.is_finished() => self.started(),
            _ => Ok(()),
        }
    }

    /// The starting thread, if the producer is starting (leaving `Moved` in its place).
    fn take_start(&mut self) -> Option<StartThread> {
        match std::mem::replace(&mut self.sender, Sender::Moved) {
            Sender::Starting(t) => Some(t),
            other => {
                self.sender = other;
                None
            }
        }
    }

    /// Takes the producer over from its starting thread, if it is starting.
    fn started(&mut self) -> Result<(), KafkaError> {
        if let Some(t) = self.take_start() {
            let (p, held) =
                t.join().map_err(|_| KafkaError::Client("the dead-letter producer's start panicked".into()))??;
            self.sender = Sender::Transactional(p);
            self.held = Some(held);
        }
        Ok(())
    }

    /// Keeps one poison message of `epoch` (if any: the `harbour.epoch` header) for the next flush. A payload over
    /// [`MAX_DEAD_LETTER_PAYLOAD`] bytes goes as its first bytes, with `harbour.truncated`
    /// (`true`) and `harbour.payload_bytes` (the whole size) headers, and a reason as its first
    /// 1,024 bytes: the broker takes input messages larger than a producer's default maximum
    /// (1,048,588 against 1,000,000 bytes), and a dead letter that could not be sent would stop
    /// the run at that message again after every restart.
    pub fn send(&mut self, m: &Poison<'_>, epoch: Option<u64>) -> Result<(), KafkaError> {
        let truncated = m.payload.len() > MAX_DEAD_LETTER_PAYLOAD;
        let payload = &m.payload[..m.payload.len().min(MAX_DEAD_LETTER_PAYLOAD)];
        let reason = match m.reason.char_indices().nth(1_024) {
            Some((at, _)) => &m.reason[..at],
            None => m.reason,
        };
        let mut headers = vec![
            ("harbour.reason", reason.to_string()),
            ("harbour.reason_code", m.code.to_string()),
            ("harbour.source.topic", m.partition.topic.to_string()),
            ("harbour.source.partition", m.partition.partition.to_string()),
            ("harbour.source.offset", m.offset.to_string()),
        ];
        if let Some(d) = m.trade_date {
            headers.push(("harbour.trade_date", d.to_string()));
        }
        if let Some(e) = epoch {
            headers.push((EPOCH_HEADER, e.to_string()));
        }
        if truncated {
            headers.extend([
                ("harbour.truncated", "true".to_string()),
                ("harbour.payload_bytes", m.payload.len().to_string()),
            ]);
        }
        let key = format!("{}/{}", m.partition, m.offset);
        if let Sender::Plain(p, _) = &self.sender {
            let mut h = OwnedHeaders::new();
            for (k, v) in &headers {
                h = h.insert(Header { key: k, value: Some(v.as_str()) });
            }
            send(p, BaseRecord::to(&self.topic).key(key.as_bytes()).payload(payload).headers(h))?;
            p.poll(Duration::ZERO);
            return Ok(());
        }
        self.bytes += payload.len();
        self.since.get_or_insert_with(std::time::Instant::now);
        self.batch.push(OutRecord { key, payload: payload.to_vec(), headers });
        Ok(())
    }

    /// Whether dead letters have waited `age` or hold `bytes` or more.
    pub fn due(&self, age: Duration, bytes: usize) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= age) || self.bytes >= bytes
    }

    /// Sends the kept dead letters in one transaction and returns once it is committed: the
    /// dead-letter topic is then durable for the epochs kept so far (call between epochs).
    pub fn flush(&mut self) -> Result<(), KafkaError> {
        if self.batch.is_empty() && matches!(self.sender, Sender::Starting(_)) {
            return Ok(()); // nothing to send: no need to wait for the start
        }
        self.started()?;
        match &mut self.sender {
            Sender::Plain(p, d) => flush(p, d),
            Sender::Moved | Sender::Starting(_) => {
                Err(KafkaError::Client("the dead-letter producer did not start".into()))
            }
            Sender::Transactional(p) => {
                p.send_batch(&self.batch)?;
                self.batch.clear();
                (self.bytes, self.since) = (0, None);
                Ok(())
            }
        }
    }
}
