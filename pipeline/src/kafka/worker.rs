//! The sinks' side of the run loop: each sink on a thread of its own ([`Worker`]: batches in,
//! acknowledged epochs out), and what the loop keeps per sink ([`Slot`]: its cadence, the changes
//! it has not been handed yet, the end offsets of the epochs in flight to it).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harbour_sinks::tables::Changes;
use harbour_sources::kafka::Offsets;

use super::{EpochSink, KafkaRunError};
use crate::metrics::SinkMetrics;

/// How long a sink's thread waits for a batch before it ticks ([`EpochSink::tick`]).
const TICK: Duration = Duration::from_secs(1);

/// Changed rows a sink may have waiting while its thread writes the previous batch; past this
/// the loop waits for it (backpressure: consumption stops, memory stays bounded).
pub const MAX_PENDING_ROWS: usize = 2_000_000;

/// Bytes of message text (the event log, dead letters) a sink may have waiting: past this the
/// loop waits for it too, however few the rows (messages can be large).
pub const MAX_PENDING_TEXT_BYTES: usize = 256 << 20;

/// Whether so much waits for a sink (`rows` changed rows carrying `text` bytes of message text)
/// that the loop must wait for it.
pub(super) fn too_much_waiting(rows: usize, text: usize) -> bool {
    rows > MAX_PENDING_ROWS || text > MAX_PENDING_TEXT_BYTES
}

/// A sink on a thread of its own: batches go in, acknowledged epochs come back.
pub(super) struct Worker {
    pub(super) tx: Option<SyncSender<(u64, Changes)>>,
    pub(super) durable: Arc<AtomicU64>,
    pub(super) failed: Arc<Mutex<Option<String>>>,
    /// Set before the channel is closed at the end of a completed run: the sink then finishes.
    pub(super) finishing: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    pub(super) fn start(mut sink: Box<dyn EpochSink + Send>, durable_from: u64, m: SinkMetrics) -> Worker {
        // One batch queued while one is written; later changes wait in the slot (and coalesce).
        let (tx, rx) = sync_channel::<(u64, Changes)>(1);
        let durable = Arc::new(AtomicU64::new(durable_from));
        let failed = Arc::new(Mutex::new(None));
        let finishing = Arc::new(AtomicBool::new(false));
        let (d, f, fin) = (durable.clone(), failed.clone(), finishing.clone());
        let own = sink.records_own_writes(&m);
        let name = sink.name();
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                loop {
                    let (epoch, changes) = match rx.recv_timeout(TICK) {
                        Ok(batch) => batch,
                        Err(RecvTimeoutError::Timeout) => {
                            let ticked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.tick()))
                                .unwrap_or_else(|_| Err("the sink panicked".into()));
                            if let Err(m) = ticked {
                                *f.lock().expect("sink failure") = Some(m);
                                return;
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    let started = Instant::now();
                    let rows = changes.len() as u64;
                    let wrote =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.write_changes(epoch, changes)))
                            .unwrap_or_else(|_| Err("the sink panicked".into()));
                    match wrote {
                        Ok(()) => {
                            d.store(epoch, Ordering::Release);
                            if !own {
                                m.written(epoch, rows, started.elapsed());
                            }
                            tracing::debug!(
                                sink = name,
                                epoch,
                                ms = started.elapsed().as_millis() as u64,
                                "sink durable"
                            );
                        }
                        Err(m) => {
                            *f.lock().expect("sink failure") = Some(m);
                            return;
                        }
                    }
                }
                if fin.load(Ordering::Acquire) {
                    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.finish()))
                        .unwrap_or_else(|_| Err("the sink panicked".into()));
                    if let Err(m) = done {
                        *f.lock().expect("sink failure") = Some(m);
                    }
                }
            })
            .expect("a sink thread starts");
        Worker { tx: Some(tx), durable, failed, finishing, thread: Some(thread) }
    }

    /// Ends a completed run: closes the channel once the batches handed are taken, lets the sink
    /// finish, and waits for its thread. Returns the sink's failure, if any.
    pub(super) fn finish(mut self) -> Option<String> {
        self.finishing.store(true, Ordering::Release);
        self.tx.take();
        let joined = self.thread.take().map(|t| t.join());
        let failed = self.failed.lock().expect("sink failure").clone();
        match joined {
            Some(Err(_)) => failed.or_else(|| Some("the sink's thread panicked".into())),
            _ => failed,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its write returns; a thread still retrying
        // an unreachable store is left to the process's exit rather than waited for.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// A sink with its own cadence and the changes it has not written yet.
pub(super) struct Slot {
    pub(super) name: &'static str,
    pub(super) wants_changes: bool,
    pub(super) alerts_only: bool,
    /// [`EpochSink::replaces_all`]
    pub(super) replaces_all: bool,
    /// Changes without events and quotes ([`EpochSink::wants_events`]).
    pub(super) tables_only: bool,
    /// The sink reads the event log (else its copies come without it).
    pub(super) wants_events: bool,
    /// Written on the loop's thread (it reads the whole state).
    pub(super) sink: Option<Box<dyn EpochSink + Send>>,
    /// Or on its own.
    pub(super) worker: Option<Worker>,
    pub(super) every: Duration,
    pub(super) last: Instant,
    /// Newest epoch handed to the sink.
    pub(super) handed: u64,
    /// Newest epoch a loop-thread sink wrote.
    pub(super) durable: u64,
    pub(super) pending: Changes,
    /// Bytes of message text in `pending` (counted as changes join it, not rescanned per flush).
    pub(super) pending_text: usize,
    /// End offsets of the epochs handed to the sink from its durable one on (a commit lands on
    /// the lowest durable epoch over the sinks).
    pub(super) ends: VecDeque<(u64, Offsets)>,
    pub(super) metrics: SinkMetrics,
}

impl Slot {
    /// Adds an epoch's changes to those waiting for the sink.
    pub(super) fn queue(&mut self, changes: Changes) {
        self.pending_text += changes.text_bytes();
        self.pending.append(changes);
    }

    /// Newest epoch the sink holds.
    pub(super) fn durable(&self) -> u64 {
        self.worker.as_ref().map_or(self.durable, |w| w.durable.load(Ordering::Acquire))
    }

    pub(super) fn failure(&self) -> Option<KafkaRunError> {
        let w = self.worker.as_ref()?;
        let m = w.failed.lock().expect("sink failure").clone()?;
        Some(KafkaRunError::Sink { sink: self.name, message: m })
    }

    /// Its thread ended without a recorded failure.
    pub(super) fn stopped(&self) -> KafkaRunError {
        self.failure().unwrap_or(KafkaRunError::Sink { sink: self.name, message: "the sink's thread stopped".into() })
    }

    /// While waiting for the sink: its failure, a stop of the run, or the deadline end the wait.
    pub(super) fn check(&self, stop: Option<&AtomicBool>, deadline: Option<Instant>) -> Result<(), KafkaRunError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if self.worker.as_ref().is_some_and(|w| w.thread.as_ref().is_none_or(|t| t.is_finished())) {
            return Err(self.stopped());
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(KafkaRunError::Sink {
                sink: self.name,
                message: "stopped while waiting for the sink; nothing committed past what it holds".into(),
            });
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(KafkaRunError::Sink {
                sink: self.name,
                message: format!(
                    "no acknowledgement within {} s at the end of the run; nothing committed past what it holds",
                    END_WAIT.as_secs()
                ),
            });
        }
        Ok(())
    }
}

/// How long the end of a run waits for the sinks to acknowledge the last epoch.
pub const END_WAIT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use harbour_sinks::tables::SourceEvent;

    use super::*;

    fn event(raw: String) -> SourceEvent {
        SourceEvent {
            source: "t/0".into(),
            position: 1,
            trade_date: Default::default(),
            kind: "fill",
            code: "".into(),
            raw,
            version: 1,
        }
    }

    /// A few large messages hold the loop back like many rows do.
    #[test]
    fn the_loop_waits_past_a_row_count_or_a_size_of_text() {
        let mut c = Changes::default();
        let too_much_waiting = |c: &Changes| too_much_waiting(c.len(), c.text_bytes());
        assert!(!too_much_waiting(&c));
        c.events = (0..255).map(|_| event("x".repeat(1 << 20))).collect();
        assert!(!too_much_waiting(&c), "255 MiB of text");
        c.events.push(event("x".repeat((1 << 20) + 1)));
        assert!(too_much_waiting(&c), "past 256 MiB of text");
        let rows =
            Changes { events: (0..=MAX_PENDING_ROWS).map(|_| event(String::new())).collect(), ..Changes::default() };
        assert!(too_much_waiting(&rows), "past the row count");
    }
}
