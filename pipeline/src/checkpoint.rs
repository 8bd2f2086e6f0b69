//! Harbour's own durable progress: checkpoints and the epoch log (reclocking).
//!
//! ```text
//!  <dir>/checkpoint.bin   newest complete checkpoint: engine snapshot + source offsets + epoch
//!  <dir>/epochs.log       one line per epoch sealed after it: its time and end offsets
//!  <dir>/committed        the newest epoch every sink holds (offsets committed through it)
//!  <dir>/lock             locked exclusively by the process writing the folder (its pid inside)
//!  <dir>/run              the folder's run identity, carried by the output topics' messages
//! ```
//!
//! The epoch log is what makes a replay reproduce the same versions: an epoch's boundaries (the
//! end offset of every partition) are written and fsynced before any sink sees its rows, and a
//! restart re-forms exactly those epochs before reading on. Without it, a restart could cut the
//! same messages into different epochs and give a row a lower version than one a sink already
//! holds (the "stale row wins under FINAL" fault).
//!
//! Files are written to a temporary name, fsynced and renamed, and the folder fsynced: a crash
//! leaves either the old or the new file, never half of one. A checkpoint can be serialized and
//! written on a thread of its own ([`CheckpointStore::save_in_background`]: a day's state takes
//! the better part of a second), the log trimmed once it is in place
//! ([`CheckpointStore::finish_save`]); until then the old checkpoint and the whole log stand.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harbour_sources::kafka::{Offsets, Partition};
use serde::{Deserialize, Serialize};

use crate::engine::EngineSnapshot;

/// Errors reading or writing checkpoint files.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file operation failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the folder (its `lock` file).
    #[error("state folder {path} is in use by another harbour process (pid in its `lock` file)")]
    Locked {
        /// The folder.
        path: PathBuf,
    },
    /// A file does not decode.
    #[error(
        "checkpoint {path} is damaged: {message}. Harbour cannot restart without it (the epoch log \
         before it is trimmed): restore the state folder from a backup, or start over from the \
         topics' beginning with an empty state folder AND emptied sinks (their rows carry this \
         folder's versions, which a new folder would count again from 1)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_owned(), source }
}

/// Offsets as a list (stable encoding).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetList(pub Vec<(String, i32, i64)>);

impl From<&Offsets> for OffsetList {
    fn from(o: &Offsets) -> Self {
        OffsetList(o.iter().map(|(p, off)| (p.topic.to_string(), p.partition, *off)).collect())
    }
}

impl OffsetList {
    /// The offset of one partition.
    pub fn get(&self, p: &Partition) -> Option<i64> {
        self.0.iter().find(|(t, n, _)| *n == p.partition && *t == p.topic).map(|(_, _, o)| *o)
    }

    /// Back to a map.
    pub fn to_offsets(&self) -> Offsets {
        self.0.iter().map(|(t, p, o)| (Partition { topic: t.as_str().into(), partition: *p }, *o)).collect()
    }
}

/// A checkpoint: the engine's state after `epoch`, and where each partition continues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version of this file.
    pub format: u32,
    /// Time (version) of the last epoch included.
    pub epoch: u64,
    /// Next offset per partition.
    pub offsets: OffsetList,
    /// The engine's state.
    pub engine: EngineSnapshot,
    /// Per partition, where the consumer was past `offsets` with nothing fed between (transaction
    /// markers, aborted messages): retention may delete up to there without a loss. (Checkpoints
    /// written before it was kept read as none.)
    #[serde(default)]
    pub passed: OffsetList,
}

/// One sealed epoch: its time and every partition's end offset (exclusive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch's time (the version of its rows).
    pub epoch: u64,
    /// Input count after it (the next epoch's time is this plus one, or the epoch's plus one when
    /// that is later: after an epoch without lines).
    pub lines: u64,
    /// Next offset per partition after it.
    pub ends: OffsetList,
    /// Risk limits that took effect at this epoch (a reload; and the limits in force at the first
    /// epoch a process logs), applied again when the epoch is re-formed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<harbour_dataflows::risk::book::Limits>,
    /// How many of its lines were refused (dead letters), checked when it is re-formed (`None`:
    /// logged before the count was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<u64>,
}

const FORMAT: u32 = 1;

/// The checkpoint folder.
pub struct CheckpointStore {
    dir: PathBuf,
    log: Option<File>,
    unsynced: bool,
    /// A checkpoint being written on its own thread: its epoch and the thread (its bytes and
    /// how long it took, or the error). Joined before the store (and its lock) goes.
    saving: Option<(u64, JoinHandle<Written>)>,
    /// The open `lock` file holding an exclusive lock while this store writes (`None`: a reader).
    _lock: Option<File>,
}

impl Drop for CheckpointStore {
    fn drop(&mut self) {
        // The folder stays locked while a checkpoint is written into it (a standby taking it
        // over must not see a checkpoint land behind its back). The file is whole or absent; a
        // failure is only logged (the previous checkpoint and the whole log stand).
        if let Some((epoch, thread)) = self.saving.take() {
            if let Ok(Err(e)) = thread.join() {
                tracing::warn!(epoch, error = %e, "a checkpoint being written when the store closed was not written");
            }
        }
    }
}

/// A checkpoint written: its size and the time taken.
type Written = Result<(usize, Duration), CheckpointError>;

/// A checkpoint, whole (its lists in key order), as `dir/checkpoint.bin`: its size.
fn write_checkpoint(dir: &Path, c: &mut Checkpoint) -> Result<usize, CheckpointError> {
    c.engine.normalize();
    let bytes = rmp_serde::to_vec(c).expect("checkpoints serialize");
    write_atomic(dir, "checkpoint.bin", &bytes)?;
    Ok(bytes.len())
}

/// Syncs a folder (the names of files created or renamed in it outlive a power loss).
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `bytes` to `dir/name` whole or not at all: a temporary file, synced, renamed over it,
/// then the folder synced.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

impl CheckpointStore {
    /// Opens (creating) the folder for writing, holding an exclusive lock on its `lock` file
    /// while the store lives (released by the kernel when the process dies, however it dies):
    /// two processes never write one folder. [`CheckpointError::Locked`] when another holds it.
    pub fn open(dir: impl Into<PathBuf>) -> Result<CheckpointStore, CheckpointError> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            // The new folder's own name outlives a power loss too (its files are synced into it;
            // sinks may hold its epochs soon after a first start).
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            sync_dir(parent)?;
        }
        let lock_path = dir.join("lock");
        let mut lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(CheckpointError::Locked { path: dir }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        lock.set_len(0).and_then(|()| writeln!(lock, "{}", std::process::id())).map_err(io(&lock_path))?;
        // A crash mid-append leaves a torn last line: cut it, so new lines start clean.
        let log = dir.join("epochs.log");
        if let Ok(bytes) = fs::read(&log) {
            if bytes.last().is_some_and(|b| *b != b'\n') {
                let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                OpenOptions::new().write(true).open(&log).and_then(|f| f.set_len(keep as u64)).map_err(io(&log))?;
                tracing::warn!(path = %log.display(), cut = bytes.len() - keep, "cut a torn epoch-log line");
            }
        }
        Ok(CheckpointStore { dir, log: None, unsynced: false, saving: None, _lock: Some(lock) })
    }

    /// Opens the folder to read it (no lock taken, nothing changed), e.g. while a run writes it.
    pub fn reader(dir: impl Into<PathBuf>) -> CheckpointStore {
        CheckpointStore { dir: dir.into(), log: None, unsynced: false, saving: None, _lock: None }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This state folder's run identity (`<dir>/run`, made at its first call): what the output
    /// topics' messages carry (`harbour.run`), so that a restart reads its own progress there and
    /// not that of another run writing, or having written, the same topics.
    pub fn run_id(&self) -> Result<String, CheckpointError> {
        let path = self.dir.join("run");
        match fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        h.write_u128(now.as_nanos());
        h.write_u32(std::process::id());
        let id = format!("{:016x}", h.finish());
        write_atomic(&self.dir, "run", format!("{id}\n").as_bytes())?;
        Ok(id)
    }

    /// The newest complete checkpoint, if any.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.dir.join("checkpoint.bin");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let c: Checkpoint = rmp_serde::from_slice(&bytes)
            .map_err(|e| CheckpointError::Corrupt { path: path.clone(), message: e.to_string() })?;
        if c.format != FORMAT {
            return Err(CheckpointError::Corrupt { path, message: format!("format {} (expected {FORMAT})", c.format) });
        }
        Ok(Some(c))
    }

    /// Epochs logged after `after` (a torn last line, from a crash mid-write, is ignored).
    pub fn epochs_after(&self, after: u64) -> Result<Vec<EpochRecord>, CheckpointError> {
        let path = self.dir.join("epochs.log");
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut out: Vec<EpochRecord> = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line.map_err(io(&path))?;
            match serde_json::from_str::<EpochRecord>(&line) {
                Ok(r) if r.epoch > after && out.last().is_none_or(|l| r.epoch > l.epoch) => out.push(r),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring a torn epoch-log line");
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The newest epoch recorded as held by every sink (0 when none).
    ///
    /// The marker is written without fsync (at every flush, it would cost two fsyncs each time):
    /// after a power loss it may be older than what the sinks hold, or empty, and then reads as
    /// an older epoch or 0. That only makes a restart re-send epochs the sinks already hold,
    /// which they take idempotently (same keys, same versions).
    pub fn committed(&self) -> Result<u64, CheckpointError> {
        let path = self.dir.join("committed");
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse().unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "committed marker unreadable; re-sending from the checkpoint");
                0
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Records that every sink holds `epoch`.
    pub fn set_committed(&self, epoch: u64) -> Result<(), CheckpointError> {
        // Replaced whole (temp file + rename), not synced: see [`CheckpointStore::committed`].
        let (path, tmp) = (self.dir.join("committed"), self.dir.join("committed.tmp"));
        fs::write(&tmp, epoch.to_string()).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Appends an epoch to the log (made durable by [`CheckpointStore::sync`]).
    pub fn log_epoch(&mut self, r: &EpochRecord) -> Result<(), CheckpointError> {
        let path = self.dir.join("epochs.log");
        if self.log.is_none() {
            let created = !path.exists();
            self.log = Some(OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?);
            if created {
                // The new file's name must outlive a power loss too, not only its lines.
                sync_dir(&self.dir)?;
            }
        }
        let f = self.log.as_mut().expect("opened above");
        let mut line = serde_json::to_string(r).expect("epoch records serialize");
        line.push('\n');
        f.write_all(line.as_bytes()).map_err(io(&path))?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every logged epoch durable. Called before any sink writes rows of those epochs.
    pub fn sync(&mut self) -> Result<(), CheckpointError> {
        if let (true, Some(f)) = (self.unsynced, self.log.as_mut()) {
            f.sync_data().map_err(io(&self.dir.join("epochs.log")))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Writes a checkpoint atomically, then drops the log lines it covers (after any checkpoint
    /// still being written in the background).
    pub fn save(&mut self, c: Checkpoint) -> Result<usize, CheckpointError> {
        self.save_in_background(c)?;
        Ok(self.finish_save(true)?.expect("a checkpoint being written").1)
    }

    /// Starts writing a checkpoint on a thread of its own (after any still being written);
    /// [`CheckpointStore::finish_save`] trims the log once it is in place. Until then a restart
    /// finds the previous checkpoint and every epoch logged since.
    pub fn save_in_background(&mut self, mut c: Checkpoint) -> Result<(), CheckpointError> {
        self.finish_save(true)?;
        let (dir, epoch) = (self.dir.clone(), c.epoch);
        let thread = std::thread::Builder::new()
            .name("harbour-checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                let bytes = write_checkpoint(&dir, &mut c)?;
                // Its memory is given back here too, not on the caller's thread.
                drop(c);
                Ok((bytes, started.elapsed()))
            })
            .map_err(io(&self.dir))?;
        self.saving = Some((epoch, thread));
        Ok(())
    }

    /// The epoch of the checkpoint being written in the background, if one is.
    pub fn saving(&self) -> Option<u64> {
        self.saving.as_ref().map(|(e, _)| *e)
    }

    /// Once the background checkpoint is written (at once when `wait`, else only if it is done):
    /// trims the log to the epochs after it; its epoch, size and time taken.
    pub fn finish_save(&mut self, wait: bool) -> Result<Option<(u64, usize, Duration)>, CheckpointError> {
        match &self.saving {
            Some((_, thread)) if wait || thread.is_finished() => {}
            _ => return Ok(None),
        }
        let (epoch, thread) = self.saving.take().expect("a checkpoint being written");
        let (bytes, took) = thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        self.trim(epoch)?;
        Ok(Some((epoch, bytes, took)))
    }

    /// Keeps the epochs after `epoch` (a checkpoint in place): rewrites the log atomically.
    fn trim(&mut self, epoch: u64) -> Result<(), CheckpointError> {
        self.sync()?;
        let keep = self.epochs_after(epoch)?;
        let mut text = String::new();
        for r in &keep {
            text.push_str(&serde_json::to_string(r).expect("epoch records serialize"));
            text.push('\n');
        }
        self.log = None;
        write_atomic(&self.dir, "epochs.log", text.as_bytes())
    }

    /// A checkpoint of `engine` at `epoch` with `offsets`.
    pub fn checkpoint(epoch: u64, offsets: &Offsets, passed: &Offsets, engine: EngineSnapshot) -> Checkpoint {
        Checkpoint { format: FORMAT, epoch, offsets: offsets.into(), engine, passed: passed.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("harbour-ckpt-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn offsets(n: i64) -> Offsets {
        [(Partition { topic: "t".into(), partition: 0 }, n)].into_iter().collect()
    }

    #[test]
    fn epochs_survive_and_checkpoints_trim_the_log() {
        let dir = temp();
        let mut s = CheckpointStore::open(&dir).unwrap();
        assert!(s.load().unwrap().is_none());
        for e in 1..=5u64 {
            s.log_epoch(&EpochRecord {
                epoch: e * 10,
                lines: e * 10 + 9,
                ends: (&offsets(e as i64)).into(),
                limits: None,
                refused: Some(0),
            })
            .unwrap();
        }
        s.sync().unwrap();
        // A torn write at the end is ignored.
        OpenOptions::new().append(true).open(dir.join("epochs.log")).unwrap().write_all(b"{\"epoch\":6").unwrap();
        assert_eq!(s.epochs_after(0).unwrap().len(), 5);
        assert!(
            matches!(CheckpointStore::open(&dir), Err(CheckpointError::Locked { .. })),
            "a second writer is refused while the first holds the folder"
        );
        assert_eq!(CheckpointStore::reader(&dir).epochs_after(0).unwrap().len(), 5, "a reader is not");
        drop(s);
        let mut s = CheckpointStore::open(&dir).unwrap();
        assert!(fs::read(dir.join("epochs.log")).unwrap().ends_with(b"\n"), "reopening cuts the torn line");
        let snap = EngineSnapshot { lines: 29, ..EngineSnapshot::default() };
        s.save(CheckpointStore::checkpoint(20, &offsets(2), &Offsets::new(), snap.clone())).unwrap();
        let c = s.load().unwrap().unwrap();
        assert_eq!((c.epoch, c.engine, c.offsets.to_offsets()), (20, snap, offsets(2)));
        let rest: Vec<u64> = s.epochs_after(c.epoch).unwrap().iter().map(|r| r.epoch).collect();
        assert_eq!(rest, vec![30, 40, 50]);
        // Appends after the rewrite land in the new file.
        s.log_epoch(&EpochRecord { epoch: 60, lines: 69, ends: (&offsets(6)).into(), limits: None, refused: None })
            .unwrap();
        s.sync().unwrap();
        assert_eq!(s.epochs_after(20).unwrap().len(), 4);
        assert_eq!(s.committed().unwrap(), 0);
        s.set_committed(40).unwrap();
        assert_eq!(s.committed().unwrap(), 40);
        // The marker is not synced: one left empty by a power loss reads as nothing held (a
        // restart then re-sends from the checkpoint), never as an error.
        fs::write(dir.join("committed"), b"").unwrap();
        assert_eq!(s.committed().unwrap(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    /// A checkpoint written on the store's thread: the log keeps every epoch (a restart from the
    /// old checkpoint needs them) until it is finished, epochs logged meanwhile survive the trim,
    /// and a store dropped while one is written leaves it whole, the folder locked until then.
    #[test]
    fn a_checkpoint_written_in_the_background_trims_the_log_only_once_in_place() {
        let dir = temp();
        let mut s = CheckpointStore::open(&dir).unwrap();
        let record = |e: u64| EpochRecord {
            epoch: e,
            lines: e + 9,
            ends: (&offsets(e as i64)).into(),
            limits: None,
            refused: None,
        };
        for e in [10, 20, 30] {
            s.log_epoch(&record(e)).unwrap();
        }
        s.save(CheckpointStore::checkpoint(10, &offsets(1), &Offsets::new(), EngineSnapshot::default())).unwrap();
        // Lists taken from hash maps are written in key order.
        let mut snap = EngineSnapshot { lines: 29, ..EngineSnapshot::default() };
        snap.validator.busted = vec!["E9".into(), "E1".into(), "E5".into()];
        s.save_in_background(CheckpointStore::checkpoint(20, &offsets(2), &Offsets::new(), snap.clone())).unwrap();
        snap.validator.busted.sort();
        assert_eq!(s.saving(), Some(20));
        s.log_epoch(&record(40)).unwrap();
        s.sync().unwrap();
        let logged = |s: &CheckpointStore| s.epochs_after(0).unwrap().iter().map(|r| r.epoch).collect::<Vec<_>>();
        assert_eq!(logged(&s), vec![20, 30, 40], "nothing trimmed before the checkpoint is in place");
        let (epoch, bytes, _) = s.finish_save(true).unwrap().expect("a checkpoint was being written");
        assert_eq!((epoch, s.saving()), (20, None));
        assert_eq!(bytes as u64, fs::metadata(dir.join("checkpoint.bin")).unwrap().len());
        assert_eq!(logged(&s), vec![30, 40], "the epoch logged while it was written is kept");
        assert_eq!(s.load().unwrap().unwrap().engine, snap);
        assert!(s.finish_save(true).unwrap().is_none());
        // Dropped while writing: the drop waits, and the checkpoint is whole afterwards.
        let later = EngineSnapshot { lines: 49, ..EngineSnapshot::default() };
        s.save_in_background(CheckpointStore::checkpoint(40, &offsets(4), &Offsets::new(), later.clone())).unwrap();
        drop(s);
        let s = CheckpointStore::open(&dir).unwrap();
        let c = s.load().unwrap().unwrap();
        assert_eq!((c.epoch, c.engine), (40, later));
        drop(s);
        fs::remove_dir_all(dir).unwrap();
    }
}
