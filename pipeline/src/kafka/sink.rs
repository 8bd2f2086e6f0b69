//! What a sink is to the run loop ([`EpochSink`]), and the built-in ones: Parquet (rewritten
//! whole from its own copy of the tables), Redis and ClickHouse (the changes since the last
//! write, fenced or versioned so a replay is harmless), with what each does when its store lost
//! acknowledged data.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harbour_sinks::clickhouse::ClickHouseSink;
use harbour_sinks::parquet::{ParquetSink, Written};
use harbour_sinks::redis::RedisSink;
use harbour_sinks::tables::Changes;

use crate::engine::OutputState;
use crate::metrics::SinkMetrics;
use crate::state;

/// A destination that holds the pipeline's tables durably.
pub trait EpochSink {
    /// Name, for logs and errors.
    fn name(&self) -> &'static str;
    /// Makes the tables as of `epoch` durable, from the whole `state` or from the `changes` since
    /// the previous call; returns once the store acknowledged.
    fn write_through(&mut self, epoch: u64, state: &OutputState, changes: &Changes) -> Result<(), String>;
    /// How often this sink is written; `None`: the pipeline's `flush_ms`. A live feed can be
    /// written every epoch while an analytical store takes larger batches; offsets are committed
    /// through the newest epoch every sink holds (every sink that does not
    /// [replace everything](EpochSink::replaces_all)).
    fn flush_every(&self) -> Option<Duration> {
        None
    }
    /// Whether the sink reads `changes` (when not, they are not kept for it).
    fn wants_changes(&self) -> bool {
        true
    }
    /// Whether `write_through` reads the whole `state`. A sink that does not (it writes the
    /// changes only) runs on a thread of its own: the loop hands it each batch and reads on
    /// while it writes; offsets still follow what it acknowledged (unless it replaces
    /// everything).
    fn reads_state(&self) -> bool {
        true
    }
    /// Takes a batch of changes on the sink's own thread (sinks that do not read the state); by
    /// default [`EpochSink::write_through`] with them.
    fn write_changes(&mut self, epoch: u64, changes: Changes) -> Result<(), String> {
        self.write_through(epoch, &OutputState::default(), &changes)
    }
    /// Called once before the run reads on, with the tables as restored (a sink that keeps its own
    /// copy of them starts from here).
    fn start_from(&mut self, _state: &OutputState) {}
    /// Called once before the run reads on with the last epoch the previous run logged (0: none):
    /// a sink that replaces everything may have written through it, and writing before it holds
    /// that epoch would put older tables over newer ones.
    fn hold_until(&mut self, _epoch: u64) {}
    /// Called once before [`EpochSink::resume`] with the state folder's run identity
    /// (`CheckpointStore::run_id`): a sink writing a topic marks its messages with it and reads
    /// its own progress there by it.
    fn set_run(&mut self, _run: &str) {}
    /// Called once before the run reads on with the restored tables (as of epoch `restored`) and
    /// `held`, the epoch every sink acknowledged before (offsets were committed through it).
    /// Returns the epoch the sink really holds, from which it is fed: `held`, unless the store
    /// lost acknowledged data (a store that can, like Redis with `appendfsync everysec` after a
    /// power loss, or restarted empty); it then takes the restored tables again and the epochs
    /// after `restored`. `logged`: the newest epoch this state folder sealed (at least `held`); a
    /// store that holds a newer one holds another run's data (see [`from_another_run`]).
    fn resume(&mut self, _state: &OutputState, _restored: u64, held: u64, _logged: u64) -> Result<u64, String> {
        Ok(held)
    }
    /// On a sink's own thread, about once a second while no batch arrives (input idle): a sink
    /// with a cadence of its own writes what it holds when due.
    fn tick(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Called once at the end of a run that completed (a clean stop), after the last batch, on
    /// sinks that run on a thread of their own and replace everything (not after an error).
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Whether the sink reads `changes.events`, the event log (when not, its batches come
    /// without it).
    fn wants_events(&self) -> bool {
        true
    }
    /// Whether the sink reads `changes.quotes` (by default when it reads the event log; a sink
    /// reading neither gets the tables' changes alone).
    fn wants_quotes(&self) -> bool {
        self.wants_events()
    }
    /// Whether each write replaces the sink's whole content from the state (Parquet files). Such
    /// a sink needs no change from before a restart (the restored state has them all), so its
    /// progress holds back neither the committed offsets nor checkpoints; it is written at its
    /// own cadence and at the end of the run.
    fn replaces_all(&self) -> bool {
        false
    }
    /// Whether the sink reads only `changes.alerts` (it is then handed those alone, not a copy
    /// of every table's changes).
    fn alerts_only(&self) -> bool {
        false
    }
    /// The sink's live count of failed attempts at its store, exported as
    /// `harbour_sink_retries_total`.
    fn retry_counter(&self) -> Option<Arc<AtomicU64>> {
        None
    }
    /// Takes the sink's metrics if it records its writes itself (returns true): a sink whose
    /// batches only update memory and that writes its store at a cadence of its own. Otherwise
    /// each acknowledged batch is recorded as a write.
    fn records_own_writes(&mut self, _metrics: &SinkMetrics) -> bool {
        false
    }
}

/// The Parquet files: each write rewrites every table whole (atomic renames).
///
/// A rewrite costs time in proportion to the tables (about 5 s for a day of a million fills on the
/// test machine), so the sink runs on a thread of its own: it keeps a copy of the tables, seeded
/// with the restored state and brought up to date with every batch of changes, and rewrites the
/// files from it at most every `every` (by default a minute) and at the end of the run, while the
/// loop reads on. It [replaces everything](EpochSink::replaces_all): it holds back neither
/// commits nor checkpoints, and a restart seeds it again from the restored state.
pub struct ParquetEpochSink {
    sink: ParquetSink,
    every: Option<Duration>,
    written: Arc<Mutex<Vec<Written>>>,
    tables: OutputState,
    last_write: Instant,
    /// Changes applied since the last rewrite.
    dirty: bool,
    /// Newest epoch applied to `tables`.
    epoch: u64,
    /// No rewrite before `tables` reach this epoch (the files may hold it already).
    hold_until: u64,
    /// Each rewrite is recorded here (epoch, rows in the files, time).
    metrics: Option<SinkMetrics>,
}

impl ParquetEpochSink {
    /// Rewrites the tables at `pipeline.flush_ms`, and at the end.
    pub fn new(sink: ParquetSink) -> ParquetEpochSink {
        ParquetEpochSink {
            sink,
            every: None,
            written: Arc::default(),
            tables: OutputState::default(),
            last_write: Instant::now(),
            dirty: false,
            epoch: 0,
            hold_until: 0,
            metrics: None,
        }
    }

    /// Rewrites the tables at most every `every` (`Duration::MAX`: only at the end).
    pub fn every(mut self, every: Duration) -> ParquetEpochSink {
        self.every = Some(every);
        self
    }

    /// The files of the latest write (the run's summary), shared with the sink.
    pub fn written(&self) -> Arc<Mutex<Vec<Written>>> {
        Arc::clone(&self.written)
    }

    fn rewrite(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let written = self.sink.write(&state::snapshot_refs(&self.tables)).map_err(|e| e.to_string())?;
        let rows: usize = written.iter().map(|w| w.rows).sum();
        if let Some(m) = &self.metrics {
            m.written(self.epoch, rows as u64, started.elapsed());
        }
        *self.written.lock().expect("parquet written") = written;
        self.last_write = Instant::now();
        self.dirty = false;
        tracing::info!(rows, ms = started.elapsed().as_millis() as u64, "parquet tables rewritten");
        Ok(())
    }
}

impl EpochSink for ParquetEpochSink {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn write_through(&mut self, epoch: u64, _s: &OutputState, changes: &Changes) -> Result<(), String> {
        self.write_changes(epoch, changes.clone())
    }

    fn write_changes(&mut self, epoch: u64, changes: Changes) -> Result<(), String> {
        state::apply_changes(&mut self.tables, changes);
        self.epoch = self.epoch.max(epoch);
        self.dirty = true;
        self.tick()
    }

    fn tick(&mut self) -> Result<(), String> {
        let due = self.every.is_none_or(|every| self.last_write.elapsed() >= every);
        if self.dirty && due && self.epoch >= self.hold_until {
            self.rewrite()?;
        }
        Ok(())
    }

    fn hold_until(&mut self, epoch: u64) {
        self.hold_until = epoch;
    }

    fn wants_events(&self) -> bool {
        false
    }

    fn start_from(&mut self, state: &OutputState) {
        self.tables = state::copy(state);
    }

    fn finish(&mut self) -> Result<(), String> {
        if self.epoch < self.hold_until {
            // Stopped while re-forming the epochs of the last run: its files are newer.
            tracing::warn!(
                epoch = self.epoch,
                files = self.hold_until,
                "parquet tables left as the last run wrote them"
            );
            return Ok(());
        }
        self.rewrite()
    }

    fn reads_state(&self) -> bool {
        false
    }

    fn replaces_all(&self) -> bool {
        true
    }

    fn records_own_writes(&mut self, metrics: &SinkMetrics) -> bool {
        self.metrics = Some(metrics.clone());
        true
    }
}

/// Redis: each flush applies the changes since the previous one, fenced by version, and moves the
/// epoch marker, in one MULTI/EXEC.
pub struct RedisEpochSink(pub RedisSink, pub Option<Duration>);

impl EpochSink for RedisEpochSink {
    fn reads_state(&self) -> bool {
        false
    }

    // Redis keeps the tables and the quotes, not the event log.
    fn wants_events(&self) -> bool {
        false
    }

    fn wants_quotes(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn retry_counter(&self) -> Option<Arc<AtomicU64>> {
        Some(self.0.retry_counter())
    }

    fn flush_every(&self) -> Option<Duration> {
        self.1
    }

    fn write_through(&mut self, epoch: u64, _s: &OutputState, changes: &Changes) -> Result<(), String> {
        self.0.write(epoch, changes).map(|_| ()).map_err(|e| e.to_string())
    }

    fn resume(&mut self, state: &OutputState, restored: u64, held: u64, logged: u64) -> Result<u64, String> {
        let marker = self.0.epoch().map_err(|e| e.to_string())?;
        if marker > logged {
            return Err(from_another_run(
                "Redis",
                marker,
                logged,
                "delete its harbour:* keys, or use another Redis database (redis.url ending /N)",
            ));
        }
        if marker >= held {
            self.0.set_acknowledged(held);
            return Ok(held);
        }
        // Restarted without its data, or lost the last second of its append-only file (the
        // rewrite is fenced: newer rows stay).
        rewrite_lost("redis", marker, state, restored, held, |all| {
            if all.is_empty() {
                return Ok(());
            }
            self.0.write(restored, all).map(|_| ()).map_err(|e| e.to_string())
        })
    }
}

/// The refusal of a store whose record of its progress (`holds`) is past every epoch this state
/// folder sealed (`logged`): it holds another run's rows (the state folder started afresh, or
/// another pipeline writes there). Versions start again with a state folder, so every write
/// would lose to those rows under the version fences and `FINAL`, leaving the store frozen on the
/// other run's data while offsets were committed.
pub fn from_another_run(store: &str, holds: u64, logged: u64, clear: &str) -> String {
    format!(
        "{store} holds epoch {holds}, past the newest epoch this state folder sealed ({logged}): its rows come \
         from another run (a state folder started afresh, or another pipeline writing there), and this run's \
         rows, numbered from its own state, would lose to them; {clear}, or run with the state folder that wrote them"
    )
}

/// A store that holds less (`holds`, its own record of its progress) than it acknowledged
/// (`held`): the restored tables (as of `restored`) are written again through `write`, and the
/// sink takes the epochs after `restored`.
fn rewrite_lost(
    store: &'static str,
    holds: u64,
    state: &OutputState,
    restored: u64,
    held: u64,
    write: impl FnOnce(&Changes) -> Result<(), String>,
) -> Result<u64, String> {
    let all = state::full_changes(state, restored);
    tracing::warn!(
        store,
        holds,
        acknowledged = held,
        restored,
        rows = all.len(),
        "the store lost acknowledged writes; writing the restored tables again"
    );
    write(&all)?;
    Ok(restored)
}

/// ClickHouse: each flush inserts the rows changed since the previous one, then `sink_progress`.
pub struct ClickHouseEpochSink(pub ClickHouseSink, pub Option<Duration>);

impl EpochSink for ClickHouseEpochSink {
    fn reads_state(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "clickhouse"
    }

    fn retry_counter(&self) -> Option<Arc<AtomicU64>> {
        Some(self.0.retry_counter())
    }

    fn flush_every(&self) -> Option<Duration> {
        self.1
    }

    fn write_through(&mut self, epoch: u64, _s: &OutputState, changes: &Changes) -> Result<(), String> {
        self.0.write(epoch, changes).map(|_| ()).map_err(|e| e.to_string())
    }

    fn resume(&mut self, state: &OutputState, restored: u64, held: u64, logged: u64) -> Result<u64, String> {
        let progress = self.0.epoch().map_err(|e| e.to_string())?;
        if progress > logged {
            return Err(from_another_run(
                "ClickHouse",
                progress,
                logged,
                "set another clickhouse.database, or drop that one",
            ));
        }
        if progress >= held {
            return Ok(held);
        }
        // Parts lost with an unsynced disk, a server restored or replaced (newer versions it
        // still holds win under FINAL; the event log of the lost epochs before `restored` is not
        // in the state and stays lost). Written even when empty: `sink_progress` moves.
        rewrite_lost("clickhouse", progress, state, restored, held, |all| {
            self.0.write(restored, all).map(|_| ()).map_err(|e| e.to_string())
        })
    }
}
