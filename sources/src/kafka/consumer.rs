//! The input consumer: every partition of the input topics, assigned explicitly at the offsets
//! the pipeline's checkpoint names, polled on the calling thread (or read ahead on a thread of its
//! own: [`super::Prefetched`]).
//!
//! Harbour's own checkpoint, not the group's committed offsets, decides where reading starts (the
//! checkpoint is consistent with the dataflow state it restores); the group offsets follow the
//! durable epochs so that lag tooling sees the truth, and are the fallback on a first start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harbour_dataflows::validate::{Input, Rejection};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::{Message, Offset, TopicPartitionList};
use smol_str::SmolStr;

use super::retry::{retry, Patience};
use super::{KafkaConfig, KafkaError};

/// A topic partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    /// Topic name.
    pub topic: SmolStr,
    /// Partition number.
    pub partition: i32,
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Next offset to read, per partition.
pub type Offsets = BTreeMap<Partition, i64>;

/// One consumed message.
#[derive(Clone, Debug)]
pub struct Record {
    /// Where it came from.
    pub partition: Partition,
    /// Its offset.
    pub offset: i64,
    /// The payload (empty when the message had none).
    pub payload: Vec<u8>,
    /// The message's timestamp (ms since the epoch: the producer's create time, or the broker's
    /// append time for a topic configured so); `None` when it has none.
    pub timestamp: Option<i64>,
    /// The payload parsed against the input contract, when the reader thread of a
    /// [`super::Prefetched`] consumer did (boxed: records move through queues and sorts).
    pub parsed: Option<Box<Result<Input, Rejection>>>,
}

/// The input consumer's context: logs the outcome of asynchronous commits.
pub struct CommitLog;

impl ClientContext for CommitLog {}

impl ConsumerContext for CommitLog {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, partitions = offsets.count(), "group commit failed (the next one supersedes it)");
        }
    }
}

/// The input consumer.
pub struct InputConsumer {
    consumer: BaseConsumer<CommitLog>,
    partitions: Vec<Partition>,
    group_id: String,
    /// Where each partition was assigned to start (none: its beginning).
    start: Offsets,
}

const META_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`watermarks_of`] asks again while a partition's leader is not yet known.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// The low and high watermarks of one partition, asking again (every 200 ms, for up to
/// [`LEADER_WAIT`]) while the broker answers that its leader is moving or not yet known: a
/// partition created a moment before (`harbour kafka topics` just ran) can answer
/// NotLeaderForPartition to the first offset request though the metadata lists its leader (seen
/// in a clean-clone CI run).
pub(crate) fn watermarks_of<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), RdError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    retry(
        Patience::fixed(LEADER_WAIT, Duration::from_millis(200)),
        || consumer.fetch_watermarks(topic, partition, timeout),
        |e, _| {
            let again = matches!(e, RdError::MetadataFetch(Code::NotLeaderForPartition | Code::LeaderNotAvailable));
            if again {
                tracing::debug!(topic, partition, error = %e, "watermarks: leader not ready, asking again");
            }
            again
        },
    )
}

impl InputConsumer {
    /// Connects, finds every partition of `topics`, and assigns them starting at `start`; a
    /// partition missing there starts at its beginning. (Not at the group's committed offset:
    /// the pipeline's state is only consistent with the offsets of its own checkpoint, and with
    /// no checkpoint the state is empty, which matches the beginning.)
    pub fn open(config: &KafkaConfig, topics: &[&str], start: &Offsets) -> Result<InputConsumer, KafkaError> {
        InputConsumer::open_passing(config, topics, start, &Offsets::new())
    }

    /// As [`InputConsumer::open`], where `passed` holds, per partition, an offset the consumer had
    /// read past beyond `start` with nothing there to feed (transaction markers, aborted
    /// messages): a partition whose oldest message held is past its start but not past that
    /// offset starts at its oldest message (retention deleted only what held nothing to read).
    pub fn open_passing(
        config: &KafkaConfig,
        topics: &[&str],
        start: &Offsets,
        passed: &Offsets,
    ) -> Result<InputConsumer, KafkaError> {
        let mut client = config.client_with(&[
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // An offset no longer in the partition (retention deleted messages not yet read, or
            // the topic was recreated) stops the run (`KafkaError::OffsetsGone`) instead of
            // skipping silently to the earliest message (`kafka.properties` can choose that).
            ("auto.offset.reset", "error"),
            ("enable.partition.eof", "false"),
            ("fetch.wait.max.ms", "20"),
            // Fetch ahead up to 64 MiB; a partition whose queue is full retries soon, not after
            // librdkafka's default second (which stalls a consumer of many partitions).
            ("queued.max.messages.kbytes", "65536"),
            ("fetch.queue.backoff.ms", "5"),
        ])?;
        client.set("group.id", &config.group_id);
        let consumer: BaseConsumer<CommitLog> = client.create_with_context(CommitLog).map_err(KafkaError::client)?;
        let mut partitions = Vec::new();
        for topic in topics {
            let md = consumer.fetch_metadata(Some(topic), META_TIMEOUT).map_err(KafkaError::client)?;
            let t = md.topics().iter().find(|t| t.name() == *topic);
            let n = t.map(|t| t.partitions().len()).unwrap_or(0);
            if n == 0 {
                return Err(KafkaError::MissingTopic((*topic).to_string()));
            }
            for p in 0..n as i32 {
                partitions.push(Partition { topic: SmolStr::new(topic), partition: p });
            }
        }
        let mut start = start.clone();
        for (p, past) in passed {
            let Some(at) = start.get_mut(p) else { continue };
            if *past <= *at {
                continue;
            }
            let (low, _) = watermarks_of(&consumer, &p.topic, p.partition, META_TIMEOUT).map_err(KafkaError::client)?;
            if *at < low && low <= *past {
                tracing::info!(partition = %p, from = *at, to = low, "starting past transaction markers retention deleted");
                *at = low;
            }
        }
        let mut assign = TopicPartitionList::new();
        for p in &partitions {
            let offset = start.get(p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            assign.add_partition_offset(&p.topic, p.partition, offset).map_err(KafkaError::client)?;
        }
        consumer.assign(&assign).map_err(KafkaError::client)?;
        tracing::info!(partitions = partitions.len(), group = %config.group_id, "kafka consumer assigned");
        Ok(InputConsumer { consumer, partitions, group_id: config.group_id.clone(), start })
    }

    /// The partitions whose read position is outside what the broker holds, for the error.
    fn offsets_gone(&self) -> KafkaError {
        let mut gone = Vec::new();
        // Where each partition is read: the consumer's position once it read there, else where
        // it was assigned to start.
        let positions = self.positions();
        for p in &self.partitions {
            let Some(&at) = positions.get(p).or_else(|| self.start.get(p)) else { continue };
            if let Ok((low, high)) = self.consumer.fetch_watermarks(&p.topic, p.partition, META_TIMEOUT) {
                if at < low || at > high {
                    gone.push(format!("{p} at offset {at} (it holds {low}..{high})"));
                }
            }
        }
        if gone.is_empty() {
            gone.push("a partition".to_string());
        }
        KafkaError::OffsetsGone(gone.join(", "))
    }

    /// Where the consumer reads each partition on (the offset after the last message it handed
    /// over, or after transaction markers and aborted messages it passed, which it never hands
    /// over); partitions it has not read yet are missing. A local call, no broker round trip.
    pub fn positions(&self) -> Offsets {
        let mut out = Offsets::new();
        if let Ok(list) = self.consumer.position() {
            for e in list.elements() {
                if let Offset::Offset(o) = e.offset() {
                    out.insert(Partition { topic: SmolStr::new(e.topic()), partition: e.partition() }, o);
                }
            }
        }
        out
    }

    /// Where each partition was assigned to start (missing: its beginning); past `start` where
    /// [`InputConsumer::open_passing`] skipped what retention deleted of what it had passed.
    pub fn start(&self) -> &Offsets {
        &self.start
    }

    /// Every assigned partition.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// The next message, waiting up to `timeout`. Transient broker errors are logged and skipped
    /// (librdkafka retries them); fatal ones are returned.
    pub fn poll(&self, timeout: Duration) -> Result<Option<Record>, KafkaError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(m)) => Ok(Some(Record {
                partition: Partition { topic: SmolStr::new(m.topic()), partition: m.partition() },
                offset: m.offset(),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                timestamp: m.timestamp().to_millis(),
                parsed: None,
            })),
            Some(Err(RdError::PartitionEOF(_))) => Ok(None),
            Some(Err(e)) => {
                if let Some(code) = e.rdkafka_error_code() {
                    use rdkafka::types::RDKafkaErrorCode as C;
                    if matches!(code, C::Fatal | C::TopicAuthorizationFailed | C::GroupAuthorizationFailed) {
                        return Err(KafkaError::client(e));
                    }
                    if code == C::AutoOffsetReset {
                        return Err(self.offsets_gone());
                    }
                }
                tracing::warn!(error = %e, "kafka consumer error (retrying)");
                Ok(None)
            }
        }
    }

    /// Stops fetching `p` (messages already fetched may still arrive; the caller keeps order).
    pub fn pause(&self, p: &Partition) -> Result<(), KafkaError> {
        let mut l = TopicPartitionList::new();
        l.add_partition(&p.topic, p.partition);
        self.consumer.pause(&l).map_err(KafkaError::client)
    }

    /// Resumes fetching `p` from the first message not yet returned by [`InputConsumer::poll`].
    pub fn resume(&self, p: &Partition) -> Result<(), KafkaError> {
        let mut l = TopicPartitionList::new();
        l.add_partition(&p.topic, p.partition);
        self.consumer.resume(&l).map_err(KafkaError::client)
    }

    /// Commits `offsets` (next offset to read, per partition) for the group, synchronously.
    pub fn commit(&self, offsets: &Offsets) -> Result<(), KafkaError> {
        self.commit_with(offsets, CommitMode::Sync)
    }

    /// Commits `offsets` without waiting for the broker (a round trip of several ms, up to tens
    /// under load, that the reading thread should not sit through at every epoch). A failed one
    /// is logged (on a later poll) and superseded by the next; the last commit of a run is
    /// synchronous. The group's offsets serve lag tooling and a first start, never a restart.
    pub fn commit_async(&self, offsets: &Offsets) -> Result<(), KafkaError> {
        self.commit_with(offsets, CommitMode::Async)
    }

    fn commit_with(&self, offsets: &Offsets, mode: CommitMode) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut l = TopicPartitionList::new();
        for (p, o) in offsets {
            l.add_partition_offset(&p.topic, p.partition, Offset::Offset(*o)).map_err(KafkaError::client)?;
        }
        match mode {
            CommitMode::Sync => coordinator_retry(|| self.consumer.commit(&l, CommitMode::Sync))?,
            CommitMode::Async => self.consumer.commit(&l, mode).map_err(KafkaError::client)?,
        }
        tracing::debug!(group = %self.group_id, partitions = offsets.len(), "offsets committed");
        Ok(())
    }

    /// The low and high watermarks (first offset held, offset after the last message) of every
    /// partition.
    pub fn watermarks(&self) -> Result<BTreeMap<Partition, (i64, i64)>, KafkaError> {
        let mut out = BTreeMap::new();
        for p in &self.partitions {
            let w = watermarks_of(&self.consumer, &p.topic, p.partition, META_TIMEOUT).map_err(KafkaError::client)?;
            out.insert(p.clone(), w);
        }
        Ok(out)
    }

    /// The group's committed offsets (for tests and tooling).
    pub fn committed(&self) -> Result<Offsets, KafkaError> {
        let mut ask = TopicPartitionList::new();
        for p in &self.partitions {
            ask.add_partition(&p.topic, p.partition);
        }
        let got = coordinator_retry(|| self.consumer.committed_offsets(ask.clone(), META_TIMEOUT))?;
        let mut out = Offsets::new();
        for p in &self.partitions {
            if let Some(Offset::Offset(o)) = got.find_partition(&p.topic, p.partition).map(|e| e.offset()) {
                out.insert(p.clone(), o);
            }
        }
        Ok(out)
    }
}

/// How long a group request is retried while the group's coordinator moves or loads.
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(30);

/// Runs a group request, retrying it while the broker answers that the group's coordinator is
/// not ready (the offsets topic being created or loaded, leadership moving): transient answers
/// that a first request on a fresh broker meets, not failures.
fn coordinator_retry<T>(mut request: impl FnMut() -> Result<T, RdError>) -> Result<T, KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let patience =
        Patience { within: COORDINATOR_PATIENCE, pause: Duration::from_millis(50), max_pause: Duration::from_secs(1) };
    retry(patience, &mut request, |e, n| {
        let transient = matches!(
            e.rdkafka_error_code(),
            Some(C::NotCoordinator | C::CoordinatorLoadInProgress | C::CoordinatorNotAvailable)
        );
        if transient && n == 1 {
            tracing::warn!(error = %e, "group coordinator not ready (retrying for up to 30 s)");
        }
        transient
    })
    .map_err(KafkaError::client)
}

/// The low and high watermarks of some partitions, fetched every `every` on a thread of its own
/// with a client of its own: a fetch is a broker round trip per partition (170 ms for 20
/// partitions on the test machine), which on the reading thread held every message behind it.
pub struct WatermarkWatch {
    latest: Arc<Mutex<BTreeMap<Partition, (i64, i64)>>>,
    /// Partitions found in the watched topics' metadata beyond those watched (added while
    /// running).
    added: Arc<Mutex<Vec<Partition>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatermarkWatch {
    /// Starts watching `partitions`, from the watermarks `known` already. After each round,
    /// `lag` is told every partition's lag: its high watermark less where `read` says the reader
    /// is (its low watermark when not there), so the lag keeps growing while the reader waits.
    pub fn start(
        config: &KafkaConfig,
        partitions: Vec<Partition>,
        known: BTreeMap<Partition, (i64, i64)>,
        every: Duration,
        read: Arc<Mutex<Offsets>>,
        lag: impl Fn(&Partition, i64) + Send + 'static,
    ) -> Result<WatermarkWatch, KafkaError> {
        let client: BaseConsumer = config.client_with(&[])?.create().map_err(KafkaError::client)?;
        let latest = Arc::new(Mutex::new(known));
        let added = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut topics: BTreeMap<SmolStr, i32> = BTreeMap::new();
        for p in &partitions {
            let n = topics.entry(p.topic.clone()).or_default();
            *n = (*n).max(p.partition + 1);
        }
        let thread = {
            let (latest, added, stop) = (latest.clone(), added.clone(), stop.clone());
            std::thread::Builder::new()
                .name("harbour-watermarks".into())
                .spawn(move || loop {
                    // The lag from the watermarks known, at start and after each round.
                    {
                        let read = read.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let latest = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        for (p, (low, high)) in &latest {
                            lag(p, (high - read.get(p).copied().unwrap_or(*low)).max(0));
                        }
                    }
                    let began = Instant::now();
                    while !stop.load(Ordering::Relaxed) && began.elapsed() < every {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    for p in &partitions {
                        match client.fetch_watermarks(&p.topic, p.partition, META_TIMEOUT) {
                            Ok(w) => {
                                latest.lock().unwrap_or_else(|e| e.into_inner()).insert(p.clone(), w);
                            }
                            Err(e) => tracing::debug!(partition = %p, error = %e, "watermarks not fetched"),
                        }
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                    // Partitions added to a topic (the run reads them once told).
                    for (topic, &known) in &topics {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let Ok(md) = client.fetch_metadata(Some(topic), META_TIMEOUT) else { continue };
                        let n =
                            md.topics().iter().find(|t| t.name() == topic.as_str()).map_or(0, |t| t.partitions().len());
                        let mut added = added.lock().unwrap_or_else(|e| e.into_inner());
                        for partition in known..n as i32 {
                            let p = Partition { topic: topic.clone(), partition };
                            if !added.contains(&p) {
                                added.push(p);
                            }
                        }
                    }
                })
                .map_err(|e| KafkaError::Config(format!("starting the watermark thread: {e}")))?
        };
        Ok(WatermarkWatch { latest, added, stop, thread: Some(thread) })
    }

    /// Partitions added to the watched topics since the watch started.
    pub fn added(&self) -> Vec<Partition> {
        self.added.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The newest watermarks fetched (partitions not fetched yet are missing).
    pub fn latest(&self) -> BTreeMap<Partition, (i64, i64)> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for WatermarkWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    /// A group request that meets "not coordinator" answers (the offsets topic still loading on a
    /// fresh broker) is retried, not failed.
    #[test]
    fn group_requests_ride_out_a_coordinator_that_is_not_ready() {
        let mock = MockCluster::<DefaultProducerContext>::new(1).unwrap();
        mock.create_topic("fills", 2, 1).unwrap();
        let config =
            KafkaConfig { bootstrap: mock.bootstrap_servers(), group_id: "g".into(), ..KafkaConfig::default() };
        let consumer = InputConsumer::open(&config, &["fills"], &Offsets::new()).unwrap();
        let p0 = Partition { topic: "fills".into(), partition: 0 };
        let not_ready = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        ];
        mock.request_errors(RDKafkaApiKey::OffsetCommit, &not_ready);
        consumer.commit(&Offsets::from([(p0.clone(), 7)])).unwrap();
        mock.request_errors(RDKafkaApiKey::OffsetFetch, &not_ready);
        assert_eq!(consumer.committed().unwrap(), Offsets::from([(p0, 7)]));
    }

    /// Any other error is returned at once.
    #[test]
    fn a_permanent_group_error_is_not_retried() {
        let mut attempts = 0;
        let err = coordinator_retry(|| -> Result<(), RdError> {
            attempts += 1;
            Err(RdError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::GroupAuthorizationFailed))
        })
        .unwrap_err();
        assert!(err.to_string().contains("GroupAuthorizationFailed"), "{err}");
        assert_eq!(attempts, 1);
    }
}
