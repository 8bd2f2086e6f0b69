//! The input consumer read ahead on a thread of its own: a reader thread polls librdkafka and
//! parses each payload against the input contract (the work of a message that needs no state),
//! and hands batches to the run loop through a bounded queue, so the loop spends its thread on
//! the input rules, the dataflow and the sinks.
//!
//! What the loop sees is what [`InputConsumer::poll`] would have given it, in the same order: a
//! partition's records in offset order, each once. [`Prefetched::positions`] reports where the
//! batches handed over so far end, never further (records still queued are not passed yet): after
//! a full batch, each partition's offset after its last record there; after a batch a poll cut
//! short, where the consumer had read to then (past transaction markers and aborted messages
//! too, which no record shows). Pausing a partition stops fetching it; what
//! the reader took already still arrives, as after [`InputConsumer::pause`] (the caller holds
//! it). Memory ahead of the loop: at most [`QUEUE`] batches of [`BATCH`] records queued, one
//! being taken and one being handed over (plus what librdkafka prefetches,
//! `queued.max.messages.kbytes`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{InputConsumer, KafkaError, Offsets, Record};
use crate::contract::parse_line;

/// Most records in one batch.
pub const BATCH: usize = 512;

/// Most batches queued ahead of the loop.
pub const QUEUE: usize = 16;

/// How long the reader waits in one poll for a first message.
const POLL: Duration = Duration::from_millis(50);

/// Positions `before` moved past `records` (each partition's after its last record there).
fn after(before: &Offsets, records: &[Record]) -> Offsets {
    let mut out = before.clone();
    let mut last: Option<&Record> = None;
    for r in records {
        if let Some(l) = last.filter(|l| l.partition != r.partition) {
            let at = out.entry(l.partition.clone()).or_insert(0);
            *at = (*at).max(l.offset + 1);
        }
        last = Some(r);
    }
    if let Some(l) = last {
        let at = out.entry(l.partition.clone()).or_insert(0);
        *at = (*at).max(l.offset + 1);
    }
    out
}

/// Records taken together, and where they end (see the module docs).
struct Batch {
    records: Vec<Record>,
    positions: Offsets,
}

/// An [`InputConsumer`] read by a thread of its own (see the module docs).
pub struct Prefetched {
    consumer: Arc<InputConsumer>,
    queue: Option<Receiver<Result<Batch, KafkaError>>>,
    current: std::vec::IntoIter<Record>,
    /// Positions after the batch being handed over, adopted once it is all handed over.
    after_current: Option<Offsets>,
    positions: Offsets,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prefetched {
    /// Starts reading `consumer` ahead; each UTF-8 payload is parsed on the reader thread too
    /// ([`Record::parsed`]).
    pub fn start(consumer: InputConsumer) -> Result<Prefetched, KafkaError> {
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(QUEUE);
        let thread = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("harbour-kafka-read".into())
                .spawn(move || {
                    let mut sent = Offsets::new();
                    while !stop.load(Ordering::Relaxed) {
                        let mut records = Vec::with_capacity(BATCH);
                        let mut wait = POLL;
                        while records.len() < BATCH {
                            match consumer.poll(wait) {
                                Ok(Some(mut r)) => {
                                    if let Ok(line) = std::str::from_utf8(&r.payload) {
                                        r.parsed = Some(Box::new(parse_line(line, r.offset as u64)));
                                    }
                                    records.push(r);
                                    wait = Duration::ZERO;
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    // What was taken before the error first (the consumer is
                                    // past it), then the error.
                                    if !records.is_empty() {
                                        let positions = consumer.positions();
                                        let _ = tx.send(Ok(Batch { records, positions }));
                                    }
                                    let _ = tx.send(Err(e));
                                    return;
                                }
                            }
                        }
                        // A full batch: its records say where it ends. A poll that found nothing
                        // more: librdkafka says, also past transaction markers and aborted
                        // messages, which no record shows. (Asking librdkafka goes through its
                        // own thread and back: asked per batch, it was ~80% of the reader's
                        // switches out in a cold start, until 2026-11-29.)
                        let positions =
                            if records.len() == BATCH { after(&sent, &records) } else { consumer.positions() };
                        // Nothing taken and nowhere further (an idle spell): nothing to say (the
                        // loop's own wait tells it the input is idle).
                        if records.is_empty() && positions == sent {
                            continue;
                        }
                        sent = positions.clone();
                        if tx.send(Ok(Batch { records, positions })).is_err() {
                            return; // the loop dropped its end
                        }
                    }
                })
                .map_err(|e| KafkaError::Config(format!("starting the kafka reader thread: {e}")))?
        };
        Ok(Prefetched {
            consumer,
            queue: Some(rx),
            current: Vec::new().into_iter(),
            after_current: None,
            positions: Offsets::new(),
            stop,
            thread: Some(thread),
        })
    }

    /// The next record, waiting up to `timeout` for one; errors of the reader's polls (fatal
    /// ones: transient ones are logged and retried there) come out here.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Record>, KafkaError> {
        // The clock is read only when the batch handed over is done (not once per record).
        let mut deadline = None;
        loop {
            if let Some(r) = self.current.next() {
                return Ok(Some(r));
            }
            if let Some(p) = self.after_current.take() {
                self.positions = p;
            }
            let queue = self.queue.as_ref().expect("the queue is dropped only on drop");
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(batch)) => {
                    // (A batch without records says the positions moved past transaction
                    // markers: adopted at once, and the wait goes on.)
                    self.current = batch.records.into_iter();
                    self.after_current = Some(batch.positions);
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(self.reader_stopped()),
            }
        }
    }

    /// Why the reader's end of the queue is gone without an error sent: it panicked.
    fn reader_stopped(&mut self) -> KafkaError {
        let why = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(panic)) => panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()),
            _ => "no error given".into(),
        };
        KafkaError::Client(format!("the kafka reader thread stopped: {why}"))
    }

    /// Where the records handed over so far end (see the module docs; at most
    /// [`InputConsumer::positions`] when they were taken); partitions not read yet are missing.
    pub fn positions(&self) -> Offsets {
        self.positions.clone()
    }

    /// The consumer, for what is not reading (pause and resume: records the reader took already
    /// still come, the caller keeps order; commits, watermarks).
    pub fn consumer(&self) -> &InputConsumer {
        &self.consumer
    }
}

impl Drop for Prefetched {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A reader blocked on a full queue returns once the queue's end is gone.
        self.queue.take();
        // Its polls wait at most 50 ms; a reader still in a broker round trip (naming the
        // partitions whose offsets are gone, 10 s per partition at worst) is not waited for.
        if let Some(t) = self.thread.take() {
            let until = Instant::now() + Duration::from_secs(1);
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};

    use super::*;
    use crate::kafka::{KafkaConfig, Partition};

    /// A mock cluster with a topic `fills` of `partitions` partitions, a producer and a consumer
    /// config for it.
    fn cluster(partitions: i32) -> (MockCluster<'static, DefaultProducerContext>, BaseProducer, KafkaConfig) {
        let mock = MockCluster::<DefaultProducerContext>::new(1).unwrap();
        mock.create_topic("fills", partitions, 1).unwrap();
        let producer: BaseProducer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).create().unwrap();
        let config =
            KafkaConfig { bootstrap: mock.bootstrap_servers(), group_id: "g".into(), ..KafkaConfig::default() };
        (mock, producer, config)
    }

    const FILL: &str = r#"{"type":"fill","exec_id":"E1","order_id":"O1","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"100","price":"385.200","ts":"2026-03-02T09:30:00+08:00"}"#;

    /// A full batch ends each partition after its last record there, runs of partitions
    /// interleaved; partitions it has no record of stay where they were.
    #[test]
    fn a_full_batch_ends_after_each_partitions_last_record() {
        let p = |n: i32| Partition { topic: "fills".into(), partition: n };
        let r = |n: i32, offset: i64| Record {
            partition: p(n),
            offset,
            payload: Vec::new(),
            timestamp: None,
            parsed: None,
        };
        let before: Offsets = [(p(0), 2), (p(2), 9)].into_iter().collect();
        let records = [r(0, 5), r(0, 6), r(1, 3), r(0, 7), r(1, 4)];
        let want: Offsets = [(p(0), 8), (p(1), 5), (p(2), 9)].into_iter().collect();
        assert_eq!(after(&before, &records), want);
        assert_eq!(after(&want, &[]), want);
    }

    /// Every record comes once, each partition's in offset order, parsed on the reader thread
    /// exactly as `parse_line` would; the positions reported never run ahead of the records
    /// handed over, and reach every partition's end once the input is idle.
    #[test]
    fn records_come_in_order_parsed_and_positions_never_run_ahead() {
        let (_mock, producer, config) = cluster(3);
        let n = 3 * BATCH + 17; // several batches, the last one short
        for i in 0..n {
            let payload: Vec<u8> = match i % 5 {
                0 => vec![0xff, 0xfe], // not UTF-8: left to the loop
                1 => b"{not json".to_vec(),
                _ => FILL.as_bytes().to_vec(),
            };
            let key = format!("k{i}");
            let partition = (i % 3) as i32;
            producer.send(BaseRecord::to("fills").key(&key).payload(&payload).partition(partition)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let consumer = InputConsumer::open(&config, &["fills"], &Offsets::new()).unwrap();
        let mut reader = Prefetched::start(consumer).unwrap();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen < n && Instant::now() < deadline {
            let Some(r) = reader.poll(Duration::from_millis(100)).unwrap() else { continue };
            let expect = next.entry(r.partition.partition).or_insert(0);
            assert_eq!(r.offset, *expect, "{}: offsets in order, each once", r.partition);
            *expect += 1;
            seen += 1;
            match std::str::from_utf8(&r.payload) {
                Ok(line) => assert_eq!(r.parsed.as_deref(), Some(&parse_line(line, r.offset as u64))),
                Err(_) => assert!(r.parsed.is_none()),
            }
            for (p, at) in reader.positions() {
                let handed = next.get(&p.partition).copied().unwrap_or(0);
                assert!(at <= handed, "{p}: position {at} past the records handed over ({handed})");
            }
        }
        assert_eq!(seen, n);
        // Idle: nothing more comes, and the positions reach the ends.
        assert!(reader.poll(Duration::from_millis(300)).unwrap().is_none());
        let positions = reader.positions();
        for (p, end) in &next {
            assert_eq!(positions.get(&Partition { topic: "fills".into(), partition: *p }), Some(end));
        }
        assert!(reader.consumer().watermarks().is_ok());
    }

    /// Pausing a partition while the reader's queue is full: what it took still comes, then
    /// nothing; after resuming, the rest, from where the reader was. Each offset reaches the
    /// caller in order, at most repeated (a fetch in flight when the pause came), which the run
    /// loop's gate drops as it drops offsets already fed.
    #[test]
    fn a_paused_partition_delivers_what_was_taken_then_resumes_where_the_reader_was() {
        let (_mock, producer, config) = cluster(1);
        // More than the reader's queue holds (so librdkafka holds the rest when the pause comes).
        let n = (QUEUE + 4) * BATCH * 2;
        for i in 0..n {
            let payload = format!("m{i}");
            producer.send(BaseRecord::<(), _>::to("fills").payload(&payload).partition(0)).unwrap();
            if i % 10_000 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let consumer = InputConsumer::open(&config, &["fills"], &Offsets::new()).unwrap();
        let mut reader = Prefetched::start(consumer).unwrap();
        let p0 = Partition { topic: "fills".into(), partition: 0 };
        // As the gate does: an offset below the next one to feed was fed already.
        let mut next = 0i64;
        let take = |r: Record, next: &mut i64| {
            if r.offset < *next {
                return;
            }
            assert_eq!(r.offset, *next, "no gap");
            *next += 1;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while next < 100 {
            assert!(Instant::now() < deadline);
            if let Some(r) = reader.poll(Duration::from_millis(100)).unwrap() {
                take(r, &mut next);
            }
        }
        // Let the reader fill its queue, then pause: what it took comes, then nothing.
        std::thread::sleep(Duration::from_millis(300));
        reader.consumer().pause(&p0).unwrap();
        loop {
            assert!(Instant::now() < deadline);
            match reader.poll(Duration::from_millis(500)).unwrap() {
                Some(r) => take(r, &mut next),
                None => break,
            }
        }
        assert!((next as usize) < n, "paused with {next} of {n} read: the pause stopped nothing");
        for (p, at) in reader.positions() {
            assert!(at <= next, "{p}: position {at} past the records handed over ({next})");
        }
        reader.consumer().resume(&p0).unwrap();
        while (next as usize) < n {
            assert!(Instant::now() < deadline, "resumed, {next} of {n} read");
            if let Some(r) = reader.poll(Duration::from_millis(100)).unwrap() {
                take(r, &mut next);
            }
        }
        assert_eq!(next as usize, n);
    }

    /// A fatal poll error of the reader thread comes out of the loop's poll.
    #[test]
    fn the_readers_fatal_error_reaches_the_caller() {
        let (_mock, _, config) = cluster(1);
        // Offset 5 of an empty partition: out of range, and `auto.offset.reset` is `error`.
        let start = Offsets::from([(Partition { topic: "fills".into(), partition: 0 }, 5)]);
        let consumer = InputConsumer::open(&config, &["fills"], &start).unwrap();
        let mut reader = Prefetched::start(consumer).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            match reader.poll(Duration::from_millis(100)) {
                Err(e) => break e,
                Ok(_) => assert!(Instant::now() < deadline, "no error reached the caller"),
            }
        };
        assert!(matches!(err, KafkaError::OffsetsGone(_)), "{err}");
    }
}
