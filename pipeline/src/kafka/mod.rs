//! The Kafka run loop: consume, cut epochs, feed the engine, write sinks, commit what is durable.
//!
//! ```text
//!  Prefetched ─► Gate (replay limits, bootstrap hold) ─► Engine::feed ─► dead letters ─► DLQ topic
//!        ▲                                                     │ seal (epoch: count / time / idle / new limits)
//!        │                                                     ▼
//!        │                     epochs.log (epoch, end offset per partition), fsynced
//!        │                                                     ▼
//!        └── group commit + `committed` ◄── every sink durable ◄── sinks write the epoch
//!                                            └─► checkpoint (engine snapshot + offsets), periodically
//! ```
//!
//! Layout: this file is the loop and [`run`]; `sink.rs` what a sink is ([`EpochSink`]) and the
//! built-in ones; `worker.rs` each sink's thread and what the loop keeps per sink; `gate.rs` which
//! record is fed when; `alerts.rs` the alerts topic.
//!
//! Start-up: load the newest checkpoint (engine state + offsets; none means "from the
//! beginning"), re-form every epoch logged after it exactly (each partition read up to the logged
//! end offset, messages beyond held back and their partition paused), then read on. On a fresh
//! start the instruments topic is read to its end and sealed as an epoch of its own before any
//! other topic, so fills never meet an unknown symbol because of topic interleaving.
//!
//! The durable-offset contract (../shared/BRIEF.md): an epoch's boundaries are durable before any
//! sink sees its rows; offsets are committed, and `committed` moved, only after every sink wrote
//! through the epoch; nothing is committed past what the sinks hold. Each sink has its own cadence
//! (Redis every epoch, ClickHouse every 250 ms by default); offsets follow the slowest of those
//! that write changes (Parquet, which rewrites everything from its own copy of the tables, holds
//! nothing back). Sinks that read the whole state would be written on the loop's thread; the
//! built-in ones (ClickHouse, Redis, Parquet) run on threads of their own, handed a batch when
//! free while the loop reads on. Checkpoints are snapshots of a sealed epoch, saved once every
//! sink that writes changes holds it, serialized and written on the checkpoint store's thread.
//!
//! Memory: librdkafka's fetch queue (`queued.max.messages.kbytes`, 64 MiB), the reader thread's
//! queue ([`Prefetched`]: at most 18 batches of 512 parsed messages), messages held back during a
//! replay (their partitions are paused), the Parquet sink's copy of the tables, and per
//! threaded sink one batch being written,
//! one queued and up to [`MAX_PENDING_ROWS`] changed rows or [`MAX_PENDING_TEXT_BYTES`] of
//! message text waiting (past either the loop waits for the sink: consumption stops).

pub mod alerts;
mod gate;
mod sink;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harbour_sinks::tables::Changes;
use harbour_sources::file::SourceLine;
use harbour_sources::kafka::{
    DeadLetterProducer, InputConsumer, KafkaConfig, KafkaError, Lease, Offsets, Partition, Poison, Prefetched, Record,
    WatermarkWatch,
};

use crate::checkpoint::{CheckpointError, CheckpointStore, EpochRecord};
use crate::engine::{Engine, EngineConfig, OutputState, RunStats};
use crate::metrics::{Health, Metrics};
use gate::{Gate, Phase, Step};
pub use sink::{from_another_run, ClickHouseEpochSink, EpochSink, ParquetEpochSink, RedisEpochSink};
use worker::{Slot, Worker};
pub use worker::{END_WAIT, MAX_PENDING_ROWS, MAX_PENDING_TEXT_BYTES};

/// Settings of a Kafka run.
#[derive(Clone, Debug)]
pub struct KafkaRun {
    /// Messages per epoch at most.
    pub epoch_events: usize,
    /// An epoch is sealed after this long even when not full.
    pub epoch_max: Duration,
    /// Sinks are written (and offsets committed) at most this often.
    pub flush_every: Duration,
    /// A checkpoint is written at most this often (and at the end).
    pub checkpoint_every: Duration,
    /// Stop once every partition reached the high watermark it had at start.
    pub stop_at_end: bool,
    /// Checkpoint folder.
    pub state_dir: PathBuf,
    /// Parquet output folder.
    pub out_dir: PathBuf,
}

/// Why a Kafka run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum KafkaRunError {
    /// The broker.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The checkpoint folder.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A sink could not write; nothing was committed past what it holds.
    #[error("sink {sink}: {message}")]
    Sink {
        /// Which sink.
        sink: &'static str,
        /// The cause.
        message: String,
    },
    /// Stopped while standing by for the lease: nothing was read or written.
    #[error("stopped while standing by for the lease (nothing read, nothing written)")]
    StoppedInStandby,
    /// Another process took the lease over: this one stopped writing at once.
    #[error("lost the lease to another harbour process (it reads on from the shared checkpoint); this one stops")]
    LeaseLost,
    /// A logged epoch did not re-form identically (the input changed under the checkpoint).
    #[error("replaying epoch {epoch}: {message}")]
    Replay {
        /// The epoch.
        epoch: u64,
        /// What differed.
        message: String,
    },
}

/// What a Kafka run did.
pub struct KafkaOutcome {
    /// Final tables.
    pub state: OutputState,
    /// Counts (lines include those restored from the checkpoint).
    pub stats: RunStats,
    /// Offsets committed last.
    pub committed: Offsets,
    /// Epoch of the checkpoint the run started from (0: none).
    pub restored_from: u64,
    /// Epochs re-formed from the epoch log.
    pub replayed: usize,
    /// From the start of the run to the checkpoint restored (zero without one).
    pub restored_after: Duration,
    /// From the start of the run to reaching the high watermarks seen at start (`stop_at_end`).
    pub caught_up_after: Option<Duration>,
}

/// Dead letters wait at most this long (between epochs) before their transaction is committed…
const DEAD_LETTER_WAIT: Duration = Duration::from_millis(200);
/// …or until they hold this many payload bytes.
const DEAD_LETTER_BYTES: usize = 8 << 20;

/// The input consumer as the loop reads it: polled on the loop's thread while logged epochs are
/// re-formed and the instruments topic bootstraps, read ahead on a thread of its own
/// ([`Prefetched`]) once live. Re-forming pauses partitions whose next records belong to later
/// epochs; read ahead, the records already queued would still come and be held, and once an
/// epoch seals, the held ones would re-form a run of epochs in one go, past a stop requested
/// meanwhile. Reading directly keeps a pause a pause there; throughput matters live.
enum Input {
    Direct(InputConsumer),
    Ahead(Prefetched),
    /// Only while switching from one to the other.
    Switching,
}

impl Input {
    fn poll(&mut self, timeout: Duration) -> Result<Option<Record>, KafkaError> {
        match self {
            Input::Direct(c) => c.poll(timeout),
            Input::Ahead(p) => p.poll(timeout),
            Input::Switching => unreachable!("switched within one call"),
        }
    }

    fn positions(&self) -> Offsets {
        match self {
            Input::Direct(c) => c.positions(),
            Input::Ahead(p) => p.positions(),
            Input::Switching => unreachable!("switched within one call"),
        }
    }

    fn consumer(&self) -> &InputConsumer {
        match self {
            Input::Direct(c) => c,
            Input::Ahead(p) => p.consumer(),
            Input::Switching => unreachable!("switched within one call"),
        }
    }

    /// Reads ahead from now on (records are handed over in the same order; see [`Input`]).
    fn read_ahead(&mut self) -> Result<(), KafkaError> {
        if let Input::Direct(_) = self {
            let Input::Direct(c) = std::mem::replace(self, Input::Switching) else { unreachable!() };
            *self = Input::Ahead(Prefetched::start(c)?);
        }
        Ok(())
    }
}

struct Loop<'a, 'm> {
    engine: Engine<'m>,
    stop: &'a AtomicBool,
    /// The lease, when processes share the state folder: checked again before each step others
    /// would see (the committed marker, a checkpoint), since a wait on a sink can outlast it.
    lease: Option<Lease>,
    /// A snapshot of the sealed epoch, saved once every sink holds that epoch.
    pending_checkpoint: Option<(u64, crate::checkpoint::Checkpoint)>,
    /// The input consumer ([`Input`]: read ahead once live).
    consumer: Input,
    dlq: DeadLetterProducer,
    store: CheckpointStore,
    sinks: Vec<Slot>,
    metrics: &'m Metrics,
    run: &'a KafkaRun,
    /// `topic/partition` names, the dead letters' source.
    names: BTreeMap<Partition, smol_str::SmolStr>,
    /// What is fed now and what waits; where each partition is.
    gate: Gate,
    in_epoch: usize,
    /// The open epoch's records, fed when it is sealed.
    epoch_records: Vec<(Record, Option<u64>)>,
    /// The instruments topic, fed first in an epoch.
    instruments_topic: smol_str::SmolStr,
    epoch_opened: Instant,
    /// The last sealed epoch and its end offsets.
    sealed: (u64, Offsets),
    checkpointed: u64,
    /// How long the loop took to snapshot the engine for the newest checkpoint.
    snapshot_took: Duration,
    committed: u64,
    /// Since when the sinks have been judged on the epochs waiting for them: the last commit, or
    /// the seal that left an epoch uncommitted after none was (an idle spell is not waiting).
    waiting_since: Instant,
    /// Epochs are stretched (the sinks are behind).
    stretched: bool,
    committed_offsets: Offsets,
    last_checkpoint: Instant,
    replayed: usize,
    /// The limits in force were logged with an epoch of this process.
    limits_logged: bool,
}

/// An epoch left waiting for the sinks this long, with no commit meanwhile, means they are behind
/// ([`Loop::judge_behind`]).
const BEHIND_AFTER: Duration = Duration::from_secs(2);

/// The longest an epoch stays open while the sinks are behind.
const BEHIND_EPOCH: Duration = Duration::from_secs(1);

fn lowest(w: &BTreeMap<Partition, (i64, i64)>, p: &Partition) -> i64 {
    w.get(p).map_or(0, |(low, _)| *low)
}

impl<'a, 'm> Loop<'a, 'm> {
    /// Judges whether the sinks are behind (an epoch waiting for them, and no commit, for
    /// [`BEHIND_AFTER`]: a sink down or slow), at each seal and commit (not per record). While
    /// they are, epochs stay open up to [`BEHIND_EPOCH`] and idle input does not seal one
    /// ([`Loop::epoch_max`]): freshness is moot then, and each epoch is a line of the epoch log,
    /// which grows until the next checkpoint (which waits for the sinks): a trickle of input would
    /// add a line per message. (Until 2026-11-27 the wait was counted from the last commit, so
    /// after an idle spell the first epoch counted as behind until it was committed.)
    fn judge_behind(&mut self) {
        let behind = self.sealed.0 > self.committed && self.waiting_since.elapsed() >= BEHIND_AFTER;
        if behind != self.stretched {
            self.stretched = behind;
            if behind {
                tracing::warn!(
                    committed = self.committed,
                    sealed = self.sealed.0,
                    "sinks behind: epochs stretched to 1 s"
                );
            } else {
                tracing::info!(committed = self.committed, "sinks caught up: epochs back to pipeline.epoch_max_ms");
            }
        }
    }

    /// The longest an epoch stays open now.
    fn epoch_max(&self) -> Duration {
        if self.stretched {
            self.run.epoch_max.max(BEHIND_EPOCH)
        } else {
            self.run.epoch_max
        }
    }

    /// Carries out the gate's steps, in order.
    fn apply(&mut self, steps: &mut Vec<Step>) -> Result<(), KafkaRunError> {
        for step in steps.drain(..) {
            match step {
                Step::Feed { record, replaying } => self.feed(record, replaying),
                Step::SealReplayed(r) => {
                    self.seal(Some(r))?;
                    self.flush(false)?;
                }
                Step::ReplayDone => tracing::info!(epochs = self.replayed, "logged epochs re-formed; reading on"),
                Step::Gone { epoch, partition, from, end, found } => {
                    let from = from.map_or("its beginning".to_string(), |o| format!("offset {o}"));
                    return Err(KafkaRunError::Replay {
                        epoch,
                        message: format!(
                            "{partition} was read from {from} to its logged end {end}, but its next message is at \
                             {found}: the messages between are gone (retention, compaction, or the topic was \
                             recreated). The sinks hold rows of them: clear the state folder and the sinks, or \
                             restore the topic"
                        ),
                    });
                }
                Step::Pause(p) => self.consumer.consumer().pause(&p)?,
                Step::Resume(p) => self.consumer.consumer().resume(&p)?,
            }
        }
        Ok(())
    }

    /// Takes a record into the open epoch. Records are fed to the engine when the epoch is
    /// sealed, in one order whatever order they arrived in ([`Loop::feed_epoch`]).
    fn feed(&mut self, r: Record, replaying: Option<u64>) {
        self.epoch_records.push((r, replaying));
        self.in_epoch += 1;
    }

    /// Where each partition is read to: past the records fed, or further where the consumer
    /// passed transaction markers and aborted messages, which it never hands over (not where it
    /// read records the gate holds back).
    fn read_to(&self) -> Offsets {
        let mut read = self.gate.next().clone();
        for (p, at) in self.consumer.positions() {
            if !self.gate.holds_from(&p) {
                let r = read.entry(p).or_insert(at);
                *r = (*r).max(at);
            }
        }
        read
    }

    /// Partitions where the consumer is past the sealed epoch's ends with nothing fed between
    /// (transaction markers, aborted messages), and how far: known only live with nothing held
    /// (none otherwise); callers make sure nothing was fed since the seal.
    fn past_sealed(&self) -> Offsets {
        if self.gate.phase() != Phase::Live || self.gate.holds() {
            return Offsets::new();
        }
        let ends = &self.sealed.1;
        self.read_to().into_iter().filter(|(p, at)| ends.get(p).is_some_and(|e| at > e)).collect()
    }

    /// Feeds the open epoch's records to the engine, in [`gate::feed_order`] (the same records
    /// make the same epoch, re-formed after a crash too). Returns how many were refused.
    fn feed_epoch(&mut self) -> Result<u64, KafkaRunError> {
        let mut records = std::mem::take(&mut self.epoch_records);
        gate::feed_order(&mut records, &self.instruments_topic);
        let before = self.engine.stats().dead_letters;
        for (r, replaying) in records.drain(..) {
            self.feed_now(r, replaying)?;
        }
        // (The buffer's memory is kept for the next epoch.)
        self.epoch_records = records;
        Ok(self.engine.stats().dead_letters - before)
    }

    fn feed_now(&mut self, r: Record, replaying: Option<u64>) -> Result<(), KafkaRunError> {
        // The payload becomes the line without a copy when it is UTF-8 (a poison message that is
        // not keeps its bytes for the dead-letter topic).
        let (raw, payload) = match String::from_utf8(r.payload) {
            Ok(s) => (s, None),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(e.into_bytes())),
        };
        let source = match self.names.get(&r.partition) {
            Some(n) => n.clone(),
            None => {
                let n = smol_str::SmolStr::new(r.partition.to_string());
                self.names.insert(r.partition.clone(), n.clone());
                n
            }
        };
        let line = SourceLine { source, position: r.offset as u64, raw };
        let accepted = self.engine.feed_at(line, r.parsed.map(|p| *p), r.timestamp);
        // A re-formed epoch the dead-letter topic holds had its dead letters sent.
        let sent_before = match replaying {
            Some(e) if !accepted => e <= self.committed || e <= self.dlq.held()?,
            _ => false,
        };
        if !accepted && !sent_before {
            // The topic takes the line whole (the state keeps a long one clipped).
            let whole = self.engine.take_unclipped();
            let d = self.engine.dead_letters().last().expect("a refused line is a dead letter");
            let epoch = replaying.unwrap_or_else(|| self.engine.open_epoch());
            self.dlq.send(
                &Poison {
                    partition: &r.partition,
                    offset: r.offset,
                    code: &d.code,
                    reason: &d.reason,
                    payload: payload.as_deref().or(whole.as_ref().map(String::as_bytes)).unwrap_or(d.raw.as_bytes()),
                    trade_date: Some(d.trade_date),
                },
                Some(epoch),
            )?;
            self.metrics.kafka_dead_letters_sent.inc();
        }
        Ok(())
    }

    /// Seals the epoch: a re-formed one (`replayed`) must come out exactly as logged; a new one
    /// is logged.
    fn seal(&mut self, replayed: Option<EpochRecord>) -> Result<(), KafkaRunError> {
        let refused = self.feed_epoch()?;
        let epoch = match &replayed {
            Some(r) => self.engine.seal_as_logged(r.limits.clone()),
            None => self.engine.seal(),
        };
        let lines = self.engine.stats().lines;
        // Where each partition continues after this epoch: a re-formed epoch's logged ends (the
        // gate has already queued records of later epochs, so its read position is past them).
        let next = match &replayed {
            Some(r) => r.ends.to_offsets(),
            None => self.gate.next().clone(),
        };
        match replayed {
            Some(r) => {
                if r.epoch != epoch || r.lines != lines {
                    return Err(KafkaRunError::Replay {
                        epoch: r.epoch,
                        message: format!(
                            "re-formed as epoch {epoch} ending at line {lines}, logged ending at {}",
                            r.lines
                        ),
                    });
                }
                // (Logs written before the count was kept have none to check.)
                if r.refused.is_some_and(|n| n != refused) {
                    return Err(KafkaRunError::Replay {
                        epoch: r.epoch,
                        message: format!(
                            "re-formed with {refused} lines refused, logged with {} (were the input rules' \
                             tables, `spreads` or `costs`, changed since it was first formed, or Harbour upgraded \
                             to rules that refuse lines they accepted without a clean stop first? \
                             docs/operations.md, Upgrades)",
                            r.refused.unwrap_or_default()
                        ),
                    });
                }
                self.replayed += 1;
                self.metrics.kafka_replayed_epochs.inc();
            }
            None => {
                // Limits that took effect here, and at a process's first epoch the limits it runs
                // under (a restart without a checkpoint starts from the file as it is then).
                let reloaded = self.engine.take_reloaded();
                let limits = match (reloaded, self.limits_logged) {
                    (Some(l), _) => Some(l),
                    (None, false) => Some(self.engine.limits().clone()),
                    (None, true) => None,
                };
                self.limits_logged = true;
                self.store.log_epoch(&EpochRecord {
                    epoch,
                    lines,
                    ends: (&next).into(),
                    limits,
                    refused: Some(refused),
                })?
            }
        }
        if self.sealed.0 == self.committed {
            // The first epoch waiting for the sinks: its wait starts now, not at the last commit
            // (which may be an idle spell ago).
            self.waiting_since = Instant::now();
        }
        self.sealed = (epoch, next);
        // Dead letters go in a transaction of whole epochs, at most DEAD_LETTER_WAIT after the first.
        if self.dlq.due(DEAD_LETTER_WAIT, DEAD_LETTER_BYTES) {
            self.dlq.flush()?;
        }
        // Every sink gets the epoch's changes; each writes them at its own cadence.
        let changes = self.engine.take_changes();
        // (Not for a sink that already holds the epoch: a re-formed epoch it wrote before.)
        for slot in self.sinks.iter_mut().filter(|s| s.alerts_only && s.handed < epoch) {
            slot.queue(Changes { alerts: changes.alerts.clone(), ..Changes::default() });
        }
        // (Sinks that keep tables only get a copy without the event log and the quotes.)
        for slot in self.sinks.iter_mut().filter(|s| s.tables_only && s.handed < epoch) {
            slot.queue(changes.tables_only());
        }
        let mut takers: Vec<&mut Slot> = self
            .sinks
            .iter_mut()
            .filter(|s| s.wants_changes && !s.alerts_only && !s.tables_only && s.handed < epoch)
            .collect();
        // A sink that reads the event log takes the changes themselves (the log is every input
        // message: the largest part); the others get copies, without the log where they do not
        // read it.
        takers.sort_by_key(|s| s.wants_events);
        if let Some((last, rest)) = takers.split_last_mut() {
            for slot in rest {
                slot.queue(if slot.wants_events { changes.clone() } else { changes.without_events() });
            }
            last.queue(changes);
        }
        self.in_epoch = 0;
        self.epoch_opened = Instant::now();
        self.judge_behind();
        Ok(())
    }

    /// Hands `batch` to a sink's thread, waiting while it is busy: until `deadline` (then an
    /// error), unless the sink failed or the run is stopped.
    fn hand_waiting(
        slot: &Slot,
        mut batch: (u64, Changes),
        stop: Option<&AtomicBool>,
        deadline: Option<Instant>,
    ) -> Result<(), KafkaRunError> {
        let w = slot.worker.as_ref().expect("a worker sink");
        let tx = w.tx.as_ref().expect("worker running");
        loop {
            match tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(b)) => batch = b,
                Err(TrySendError::Disconnected(_)) => return Err(slot.stopped()),
            }
            slot.check(stop, deadline)?;
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Writes every sink through the last sealed epoch and commits it, when due (or `force`);
    /// checkpoints when one is due (or `force`). Called between epochs (the engine's state is the
    /// sealed epoch's: an open epoch's records wait in `epoch_records` until its seal), except at
    /// the end of a run stopped inside an epoch being re-formed or bootstrapped (`in_epoch > 0`):
    /// then only the changes of sealed epochs are written, and no whole-state sink or checkpoint
    /// is taken (the records of the open epoch were never fed).
    fn flush(&mut self, force: bool) -> Result<(), KafkaRunError> {
        // A dead-letter producer that failed to start stops the run as soon as that is known,
        // not at the first dead letter.
        self.dlq.check_start()?;
        // (The dead letters kept are whole sealed epochs': records are fed at the seal.)
        if self.dlq.due(DEAD_LETTER_WAIT, DEAD_LETTER_BYTES) {
            self.dlq.flush()?;
        }
        let (epoch, _) = self.sealed.clone();
        let partial = self.in_epoch > 0;
        // (Not while the previous one is still being written: the sinks would be handed every
        // epoch for it until it is in place.)
        let checkpoint_due =
            force || (self.store.saving().is_none() && self.last_checkpoint.elapsed() >= self.run.checkpoint_every);
        let deadline = force.then(|| Instant::now() + END_WAIT);
        // Epoch boundaries first: a sink must never hold rows of an epoch a replay could re-cut.
        let mut synced = false;
        for slot in &mut self.sinks {
            if let Some(e) = slot.failure() {
                return Err(e);
            }
            // (A checkpoint waits for every sink but those that replace everything.)
            let due = force || (checkpoint_due && !slot.replaces_all) || slot.last.elapsed() >= slot.every;
            if slot.handed >= epoch || !due {
                continue;
            }
            if partial && slot.sink.is_some() {
                continue;
            }
            if !synced {
                self.store.sync()?;
                synced = true;
            }
            match (&mut slot.sink, &slot.worker) {
                (Some(sink), _) => {
                    let started = Instant::now();
                    let changes = std::mem::take(&mut slot.pending);
                    slot.pending_text = 0;
                    sink.write_through(epoch, self.engine.state(), &changes)
                        .map_err(|message| KafkaRunError::Sink { sink: slot.name, message })?;
                    slot.durable = epoch;
                    slot.metrics.written(epoch, changes.len() as u64, started.elapsed());
                    tracing::debug!(sink = slot.name, epoch, ms = started.elapsed().as_millis() as u64, "sink durable");
                }
                (None, Some(w)) => {
                    let (changes, text) = (std::mem::take(&mut slot.pending), std::mem::take(&mut slot.pending_text));
                    // Wait for the sink's thread only at the end or when too much is waiting
                    // (backpressure); otherwise hand over when it is free.
                    let wait = force || worker::too_much_waiting(changes.len(), text);
                    let batch = (epoch, changes);
                    if wait {
                        // (A stop does not cut short the wait for a sink that replaces
                        // everything: its write is bounded, and nothing waits on its progress.)
                        let stop = (!force && !slot.replaces_all).then_some(self.stop);
                        Self::hand_waiting(slot, batch, stop, deadline)?;
                    } else {
                        let tx = w.tx.as_ref().expect("worker running");
                        match tx.try_send(batch) {
                            Ok(()) => {}
                            Err(TrySendError::Full((_, changes))) => {
                                // Still busy: later changes join these.
                                (slot.pending, slot.pending_text) = (changes, text);
                                continue;
                            }
                            Err(TrySendError::Disconnected(_)) => return Err(slot.stopped()),
                        }
                    }
                }
                (None, None) => unreachable!("a slot has a sink or a worker"),
            }
            slot.handed = epoch;
            slot.last = Instant::now();
            // A sink's durable epoch is one it was handed: the commit lands on one of those, so
            // each sink keeps the ends of the epochs it was handed (not every sealed epoch, which
            // would grow while a sink is down), trimmed below its durable one further down.
            if !slot.replaces_all {
                slot.ends.push_back(self.sealed.clone());
            }
        }
        for slot in &mut self.sinks {
            // Ends below the sink's durable epoch are never committed: the commit is the lowest
            // durable epoch over the sinks, and a durable epoch only grows. (At most the epochs in
            // flight to the sink and its durable one stay.)
            let durable = slot.durable();
            while slot.ends.get(1).is_some_and(|(e, _)| *e <= durable) {
                slot.ends.pop_front();
            }
            slot.metrics.pending_rows.set(slot.pending.len() as i64);
        }
        // At the end, every sink holds the sealed epoch before the last commit.
        if force {
            for slot in &self.sinks {
                while slot.durable() < epoch && !(partial && slot.sink.is_some()) {
                    slot.check(None, deadline)?;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        // The newest epoch every sink holds (those that replace everything need nothing kept).
        let all = self.sinks.iter().filter(|s| !s.replaces_all).map(Slot::durable).min().unwrap_or(epoch);
        self.metrics.durable_epoch.set(all as i64);
        // With the sealed epoch durable, nothing fed since and nothing held, the consumer is past
        // its ends by transaction markers and aborted messages only: the group's offsets go there
        // too, so lag tools read 0 on a transactional producer's topics (they read 1 for ever,
        // the trailing marker, until 2026-11-28; Harbour's own lag already counted it).
        let past_markers = (all == epoch && !partial)
            .then(|| self.past_sealed())
            .filter(|past| past.iter().any(|(p, at)| self.committed_offsets.get(p) != Some(at)));
        if all > self.committed || past_markers.is_some() {
            self.still_active()?;
            self.dlq.flush()?;
            // (The sinks whose durable epoch is `all` were handed it, and keep its ends.)
            let kept = self.sinks.iter().find_map(|s| s.ends.iter().find(|(e, _)| *e == all).map(|(_, o)| o.clone()));
            let mut ends = kept.unwrap_or_else(|| self.sealed.1.clone());
            ends.extend(past_markers.unwrap_or_default());
            // The group's offsets are for lag tooling and a first start; Harbour restarts from
            // its own marker and checkpoint, so only the last commit of a run is waited for.
            if force {
                self.consumer.consumer().commit(&ends)?;
            } else {
                self.consumer.consumer().commit_async(&ends)?;
            }
            self.store.set_committed(all)?;
            self.committed = all;
            self.waiting_since = Instant::now();
            self.judge_behind();
            for (p, o) in &ends {
                self.metrics.kafka_committed(p, *o);
            }
            self.committed_offsets = ends;
        }
        // Checkpoints: the engine's snapshot is taken while its state is the sealed epoch's, once
        // every sink was handed that epoch, and saved once every sink holds it (a restart never
        // restores past what the sinks hold). The loop does not wait for it.
        // A checkpoint written since (or, at the end, the one being written) is in place.
        self.saved(force)?;
        if let Some((e, _)) = &self.pending_checkpoint {
            if all >= *e {
                let (_, c) = self.pending_checkpoint.take().expect("pending checkpoint");
                // (At the end: in place before the last epoch's own checkpoint below.)
                self.save_checkpoint(c, force)?;
            }
        }
        if checkpoint_due
            && !partial
            && self.pending_checkpoint.is_none()
            && self.store.saving().is_none()
            && epoch > self.checkpointed
            && self.sinks.iter().filter(|s| !s.replaces_all).all(|s| s.handed >= epoch)
        {
            let passed = self.past_sealed();
            let started = Instant::now();
            let c = CheckpointStore::checkpoint(epoch, &self.sealed.1, &passed, self.engine.snapshot());
            self.snapshot_took = started.elapsed();
            if all >= epoch {
                self.save_checkpoint(c, force)?;
            } else {
                self.pending_checkpoint = Some((epoch, c));
                self.last_checkpoint = Instant::now();
            }
        }
        Ok(())
    }

    /// This process still holds the lease (always, without one).
    fn still_active(&mut self) -> Result<(), KafkaRunError> {
        if let Some(lease) = &mut self.lease {
            if !lease.poll(Duration::ZERO)? {
                self.metrics.kafka_lease_held.set(0);
                return Err(KafkaRunError::LeaseLost);
            }
        }
        Ok(())
    }

    /// Starts writing a checkpoint on the store's thread (serializing a day's state would hold
    /// the loop for the better part of a second); [`Loop::saved`] takes its end, at once when
    /// `wait` (a clean stop).
    fn save_checkpoint(&mut self, c: crate::checkpoint::Checkpoint, wait: bool) -> Result<(), KafkaRunError> {
        self.still_active()?;
        self.store.save_in_background(c)?;
        if wait {
            self.saved(true)?;
        }
        Ok(())
    }

    /// The checkpoint being written, once it is in place (at once when `wait`): the log trimmed,
    /// its epoch the one a restart starts from.
    fn saved(&mut self, wait: bool) -> Result<(), KafkaRunError> {
        if let Some((epoch, bytes, took)) = self.store.finish_save(wait)? {
            self.checkpointed = epoch;
            // The next one is due a whole interval after this one is in place (a write longer
            // than the interval would otherwise be followed by the next snapshot at once).
            self.last_checkpoint = Instant::now();
            self.metrics.checkpoint_bytes.set(bytes as i64);
            self.metrics.checkpoint_snapshot_seconds.set(self.snapshot_took.as_secs_f64());
            self.metrics.checkpoint_write_seconds.set(took.as_secs_f64());
            tracing::info!(
                epoch,
                bytes,
                snapshot_ms = self.snapshot_took.as_millis() as u64,
                write_ms = took.as_millis() as u64,
                "checkpoint written (snapshot on the loop, write on the store's thread)"
            );
        }
        Ok(())
    }
}

/// How often the lease holder serves the lease group.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// Stands by until this process holds the lease, then opens the state folder: a holder that is
/// still alive (it lost the group, not its process) keeps the folder's lock until it notices and
/// stops, so the new holder waits for the lock too, serving the group meanwhile.
fn take_over(lease: &mut Lease, dir: &std::path::Path, stop: &AtomicBool) -> Result<CheckpointStore, KafkaRunError> {
    let mut told = false;
    loop {
        if !lease.acquire(stop)? {
            return Err(KafkaRunError::StoppedInStandby);
        }
        match CheckpointStore::open(dir) {
            Err(CheckpointError::Locked { .. }) => {
                if !told {
                    tracing::warn!(dir = %dir.display(), "lease held; waiting for the previous holder to release the state folder");
                    told = true;
                }
                lease.poll(Duration::from_millis(200))?;
            }
            opened => return Ok(opened?),
        }
    }
}

/// Runs the pipeline on Kafka until `stop` is set (or, with `stop_at_end`, until caught up).
///
/// With `kafka.lease.enabled`, first stands by until this process holds the lease (then returns
/// [`KafkaRunError::StoppedInStandby`] if stopped before), and stops with
/// [`KafkaRunError::LeaseLost`] as soon as the group hands the lease to another process.
pub fn run(
    kafka: &KafkaConfig,
    run: &KafkaRun,
    config: &EngineConfig,
    metrics: &Metrics,
    health: &Arc<Health>,
    sinks: Vec<Box<dyn EpochSink + Send>>,
    stop: &AtomicBool,
) -> Result<KafkaOutcome, KafkaRunError> {
    let mut lease = match kafka.lease.enabled {
        true => Some(Lease::join(kafka)?),
        false => None,
    };
    let store = match &mut lease {
        Some(lease) => {
            metrics.kafka_lease_held.set(0);
            let store = take_over(lease, &run.state_dir, stop)?;
            metrics.kafka_lease_held.set(1);
            store
        }
        None => {
            metrics.kafka_lease_held.set(1); // the only process: always active
            CheckpointStore::open(&run.state_dir)?
        }
    };
    let began = Instant::now();
    let checkpoint = store.load()?;
    let mut engine = Engine::new(config, metrics, health.clone());
    let (start, passed, restored_from) = match checkpoint {
        Some(c) => {
            tracing::info!(epoch = c.epoch, lines = c.engine.lines, "restoring from checkpoint");
            engine.restore(c.engine);
            (c.offsets.to_offsets(), c.passed.to_offsets(), c.epoch)
        }
        None => (Offsets::new(), Offsets::new(), 0),
    };
    let restored_after = if restored_from > 0 { began.elapsed() } else { Duration::ZERO };
    // Sinks that upsert take the changes from here on (restored rows are already theirs); with
    // none, the engine keeps no change log.
    if sinks.iter().any(|s| s.wants_changes()) {
        engine.track_changes();
    }
    let replay: VecDeque<EpochRecord> = store.epochs_after(restored_from)?.into();
    // What the output topics' messages carry, to tell this folder's progress from another run's.
    let run_id = store.run_id()?;
    let last_logged = replay.back().map_or(0, |r| r.epoch);
    // The marker is not fsynced: after a power loss it may name an epoch before the checkpoint's,
    // which every sink held when the checkpoint was written.
    let committed = store.committed()?.max(restored_from);
    let consumer = InputConsumer::open_passing(kafka, &kafka.topics.inputs(), &start, &passed)?;
    // (Past the checkpoint's offsets where only passed markers were deleted.)
    let start = consumer.start().clone();
    let watermarks = consumer.watermarks()?;
    if let Some(first) = replay.front() {
        tracing::info!(epochs = replay.len(), from = first.epoch, "re-forming logged epochs");
    }
    let bootstrap_until: Offsets = watermarks
        .iter()
        .filter(|(p, _)| p.topic == kafka.topics.instruments)
        .map(|(p, (_, high))| (p.clone(), *high))
        .collect();
    let gate = Gate::new(replay, restored_from == 0, &kafka.topics.instruments, bootstrap_until, start.clone());
    let end: Offsets = watermarks.iter().map(|(p, (_, high))| (p.clone(), *high)).collect();
    // Sinks hold everything through the committed epoch already.
    let held = restored_from.max(committed);
    let sinks: Vec<Slot> = sinks
        .into_iter()
        .map(|mut sink| {
            sink.start_from(engine.state());
            sink.hold_until(last_logged);
            sink.set_run(&run_id);
            let tables_only =
                sink.wants_changes() && !sink.wants_events() && !sink.wants_quotes() && !sink.alerts_only();
            let wants_events = sink.wants_events();
            let (name, every, wants_changes, alerts_only, replaces_all) = (
                sink.name(),
                sink.flush_every().unwrap_or(run.flush_every),
                sink.wants_changes(),
                sink.alerts_only(),
                sink.replaces_all(),
            );
            // A sink that replaces everything starts from the restored state, not from what it
            // held: it takes every epoch after the checkpoint. Another that lost acknowledged
            // data is fed again from the restored state too (`EpochSink::resume`).
            let held = if replaces_all {
                restored_from
            } else {
                sink.resume(engine.state(), restored_from, held, last_logged.max(held))
                    .map_err(|message| KafkaRunError::Sink { sink: name, message })?
            };
            let m = metrics.sink(name, sink.retry_counter());
            m.durable_epoch.set(held as i64);
            let (sink, worker) = if sink.reads_state() {
                (Some(sink), None)
            } else {
                (None, Some(Worker::start(sink, held, m.clone())))
            };
            Ok(Slot {
                name,
                wants_changes,
                alerts_only,
                replaces_all,
                tables_only,
                wants_events,
                sink,
                worker,
                every,
                last: Instant::now(),
                handed: held,
                durable: held,
                pending: Changes::default(),
                pending_text: 0,
                ends: VecDeque::new(),
                metrics: m,
            })
        })
        .collect::<Result<_, KafkaRunError>>()?;
    // The dead-letter topic's progress: its producer starts here (aborting a batch the previous
    // holder left open), then its newest epoch is read.
    let mut dlq = DeadLetterProducer::new(kafka, "dead-letters");
    dlq.set_run(&run_id);
    // (On a thread of its own: the loop reads meanwhile, and waits for it only to send a dead
    // letter, or to skip one of an epoch re-formed from the log.)
    dlq.start_reading_held(committed, last_logged.max(committed))?;
    let mut l = Loop {
        lease,
        engine,
        stop,
        pending_checkpoint: None,
        consumer: Input::Direct(consumer),
        dlq,
        store,
        sinks,
        metrics,
        run,
        names: BTreeMap::new(),
        gate,
        in_epoch: 0,
        epoch_records: Vec::new(),
        instruments_topic: kafka.topics.instruments.as_str().into(),
        epoch_opened: Instant::now(),
        sealed: (restored_from, start.clone()),
        checkpointed: restored_from,
        snapshot_took: Duration::ZERO,
        committed,
        waiting_since: Instant::now(),
        stretched: false,
        committed_offsets: Offsets::new(),
        last_checkpoint: Instant::now(),
        replayed: 0,
        limits_logged: false,
    };
    // Lag comes from watermarks fetched on a thread of their own (not on this one: a fetch is a
    // broker round trip per partition).
    // Where the loop has read each partition to, for the lag the watch's thread sets (it keeps
    // growing while the loop waits on a sink).
    let read_to: Arc<Mutex<Offsets>> = Arc::new(Mutex::new(start.clone()));
    let mut watch = WatermarkWatch::start(
        kafka,
        l.consumer.consumer().partitions().to_vec(),
        watermarks.clone(),
        Duration::from_secs(2),
        read_to.clone(),
        metrics.kafka_lag_setter(),
    )?;
    // Partitions added to the input topics while running, read once the loop is between epochs.
    let mut added: Vec<Partition> = Vec::new();
    let mut last_lag = Instant::now() - Duration::from_secs(60);
    let mut caught_up_after = None;
    let mut steps = Vec::new();
    let mut lease_checked = Instant::now();
    // The clock as read at the previous turn of the loop (once per turn, below).
    let mut now = lease_checked;
    loop {
        // The holder serves the lease group often enough to see a revocation before it writes
        // much more (sinks fence by version; the state folder's lock keeps a zombie out of it).
        if let Some(lease) = &mut l.lease {
            if now.saturating_duration_since(lease_checked) >= LEASE_POLL {
                if !lease.poll(Duration::ZERO)? {
                    metrics.kafka_lease_held.set(0);
                    return Err(KafkaRunError::LeaseLost);
                }
                lease_checked = now;
            }
        }
        if l.gate.phase() == Phase::Bootstrap && l.gate.bootstrap_complete(|p| lowest(&watermarks, p), &l.read_to()) {
            if l.in_epoch > 0 {
                l.seal(None)?;
            }
            tracing::info!(instruments = l.engine.state().instruments.len(), "instruments loaded; reading every topic");
            l.gate.go_live(&mut steps);
            l.apply(&mut steps)?;
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!("stop requested");
            break;
        }
        if l.gate.phase() == Phase::Live {
            l.consumer.read_ahead()?;
        }
        let record = l.consumer.poll(Duration::from_millis(100))?;
        let idle = record.is_none();
        match record {
            Some(r) => l.gate.offer(r, &mut steps),
            None => l.gate.idle(&mut steps),
        }
        l.apply(&mut steps)?;
        // One reading of the clock per turn of the loop (a message, or a poll that found none),
        // for every check below and the next turn's lease check.
        now = Instant::now();
        if l.gate.phase() == Phase::Live {
            if l.in_epoch > 0
                && (l.in_epoch >= run.epoch_events
                    || (idle && !l.stretched)
                    || now.saturating_duration_since(l.epoch_opened) >= l.epoch_max())
            {
                l.seal(None)?;
            }
            if l.in_epoch == 0 && idle && l.engine.limits_pending() {
                // New limits while nothing comes: an epoch without messages applies them (and
                // alerts their breaches) now, not with the next message; it is logged like any
                // other, so a restart re-forms it at the same place.
                l.seal(None)?;
            }
            if l.in_epoch == 0 {
                l.flush(false)?;
            }
        }
        if !added.is_empty() && l.gate.phase() == Phase::Live && !l.gate.holds() && l.in_epoch == 0 {
            // A consumer assigned anew: every partition where the records fed so far end, the
            // added ones from their beginning (their first epoch logs their ends; a restart
            // before a checkpoint holds them reads them from their beginning again).
            tracing::info!(?added, "partitions added to the input topics: reading them from their beginning");
            // (A broker that fails this now leaves the consumer as it was: tried again in 2 s.)
            match InputConsumer::open(kafka, &kafka.topics.inputs(), l.gate.next()).and_then(Prefetched::start) {
                Ok(c) => {
                    // (Records the old reader took and the loop did not are read again.)
                    l.consumer = Input::Ahead(c);
                    let partitions = l.consumer.consumer().partitions().to_vec();
                    let fresh = WatermarkWatch::start(
                        kafka,
                        partitions,
                        watch.latest(),
                        Duration::from_secs(2),
                        read_to.clone(),
                        metrics.kafka_lag_setter(),
                    )?;
                    let old = std::mem::replace(&mut watch, fresh);
                    // (Its thread may be in a broker round trip: not waited for here.)
                    std::thread::spawn(move || drop(old));
                }
                Err(e) => tracing::warn!(error = %e, "reading the added partitions failed; trying again"),
            }
            added.clear();
        }
        if now.saturating_duration_since(last_lag) >= Duration::from_secs(2) {
            if added.is_empty() {
                added = watch.added();
            }
            if let Some(r) = l.gate.replaying() {
                let short: Vec<String> = r
                    .ends
                    .0
                    .iter()
                    .filter_map(|(t, p, end)| {
                        let part = Partition { topic: t.as_str().into(), partition: *p };
                        let n = l.gate.next().get(&part).copied();
                        (n.is_none_or(|n| n < *end)).then(|| format!("{part} at {n:?} of {end}"))
                    })
                    .collect();
                tracing::debug!(epoch = r.epoch, ?short, "re-forming epoch");
                // A partition that holds fewer messages than the epoch's logged end (recreated or
                // truncated since) can never complete it: nothing past the end arrives to say so.
                let latest = watch.latest();
                for (t, p, end) in &r.ends.0 {
                    let part = Partition { topic: t.as_str().into(), partition: *p };
                    let behind = l.gate.next().get(&part).is_none_or(|n| n < end);
                    if let Some((_, high)) = latest.get(&part).filter(|(_, high)| behind && high < end) {
                        return Err(KafkaRunError::Replay {
                            epoch: r.epoch,
                            message: format!(
                                "{part} ends at offset {high}, before the epoch's logged end {end}: the topic was \
                                 recreated or truncated. The sinks hold rows of the messages it had: clear the state \
                                 folder and the sinks, or restore the topic"
                            ),
                        });
                    }
                }
            }
            *read_to.lock().unwrap_or_else(|e| e.into_inner()) = l.read_to();
            last_lag = Instant::now();
        }
        if run.stop_at_end && l.gate.phase() == Phase::Live && l.in_epoch == 0 && !l.gate.holds() && {
            let read = l.read_to();
            end.iter().all(|(p, high)| read.get(p).copied().unwrap_or(lowest(&watermarks, p)) >= *high)
        } {
            caught_up_after = Some(began.elapsed());
            tracing::info!(seconds = began.elapsed().as_secs_f64(), "caught up with the high watermarks seen at start");
            break;
        }
    }
    // A partly re-formed epoch is not sealed (it would be cut differently from the log), nor a
    // partly read instruments topic (a restart bootstraps again: nothing of it was committed).
    if l.in_epoch > 0 && l.gate.phase() == Phase::Live {
        l.seal(None)?;
    }
    l.flush(true)?;
    // The dead-letter producer's start, if nothing waited for it: its failure is the run's too.
    l.dlq.held()?;
    // Sinks that replace everything write their last version now.
    for slot in l.sinks.iter_mut().filter(|s| s.replaces_all) {
        if let Some(message) = slot.worker.take().and_then(Worker::finish) {
            return Err(KafkaRunError::Sink { sink: slot.name, message });
        }
    }
    let committed = l.committed_offsets.clone();
    let replayed = l.replayed;
    let (state, stats) = l.engine.finish();
    Ok(KafkaOutcome { state, stats, committed, restored_from, replayed, restored_after, caught_up_after })
}
