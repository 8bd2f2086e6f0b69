//! Parquet files: one file per table, rewritten whole at each flush (atomic rename).
//!
//! ```text
//!  Tables ──► arrow RecordBatch per table (schema.rs) ──► <dir>/<table>.parquet
//! ```
//!
//! Schemas are documented in docs/parquet-schema.md. Money and prices are `Decimal128(38, 8)`,
//! event times `Timestamp(ns, UTC)`, quantities `Int64`. Every table is written to a temporary
//! name and synced, and only then are they all renamed into place: a reader never sees half a
//! file, and a write that fails before the renames leaves the previous set of tables whole (the
//! renames follow one another: a crash between two, or a reader opening files while they run,
//! can see some tables of each set). A write holds an exclusive lock on `<dir>/.lock` throughout,
//! so two processes writing one folder (a `harbour replay` beside a `harbour kafka run`) take
//! turns instead of writing into each other's temporary files; the set in place is then that of
//! whichever wrote last, and a warning names the folder.

mod schema;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::tables::TableRefs;
pub use schema::record_batches;
pub(crate) use schema::to_i128;

/// Errors writing Parquet files.
#[derive(Debug, thiserror::Error)]
pub enum ParquetSinkError {
    /// The output folder or a file could not be created or renamed.
    #[error("cannot write {path}: {source} (check the output folder exists and is writable)")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding failed.
    #[error("encoding table {table}: {message}")]
    Encode {
        /// The table.
        table: &'static str,
        /// The cause.
        message: String,
    },
}

/// Writes [`Tables`] as Parquet files into a folder.
#[derive(Clone, Debug)]
pub struct ParquetSink {
    dir: PathBuf,
}

/// One written file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Table name.
    pub table: &'static str,
    /// Path of the file.
    pub path: PathBuf,
    /// Rows written.
    pub rows: usize,
}

impl ParquetSink {
    /// A sink writing into `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> ParquetSink {
        ParquetSink { dir: dir.into() }
    }

    /// The output folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes every table (rows borrowed from where they are kept); returns what was written. The fills table, usually
    /// the largest, is encoded and written on a second thread while the others are.
    ///
    /// Every table is written to a temporary file and synced first; only when all are written
    /// do they replace the previous files (renames, then the folder synced), so an error or a
    /// crash before the renames leaves the previous set whole. Holds `<dir>/.lock` throughout.
    pub fn write(&self, tables: &TableRefs<'_>) -> Result<Vec<Written>, ParquetSinkError> {
        fs::create_dir_all(&self.dir).map_err(|source| ParquetSinkError::Io { path: self.dir.clone(), source })?;
        let lock_path = self.dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| ParquetSinkError::Io { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::warn!(dir = %self.dir.display(), "another process is writing this parquet folder; waiting for it");
                lock.lock().map_err(|source| ParquetSinkError::Io { path: lock_path.clone(), source })?;
            }
            Err(fs::TryLockError::Error(source)) => return Err(ParquetSinkError::Io { path: lock_path, source }),
        }
        // (Released when `lock` is dropped, on every return.)
        let write = |table: &'static str, batch: RecordBatch| -> Result<Written, ParquetSinkError> {
            let path = self.dir.join(format!("{table}.parquet"));
            write_file(&temp_of(&path), table, &batch)?;
            Ok(Written { table, path, rows: batch.num_rows() })
        };
        let encode = |table: &'static str| {
            move |e: arrow_schema::ArrowError| ParquetSinkError::Encode { table, message: e.to_string() }
        };
        let (fills, rest) = std::thread::scope(|scope| {
            let fills = scope.spawn(|| write("fills", schema::fills_batch(tables).map_err(encode("fills"))?));
            let rest = || -> Result<Vec<Written>, ParquetSinkError> {
                let batches = schema::record_batches_with(tables, false)
                    .map_err(|(table, e)| ParquetSinkError::Encode { table, message: e.to_string() })?;
                batches.into_iter().map(|(table, batch)| write(table, batch)).collect()
            };
            let rest = rest();
            (fills.join(), rest)
        });
        let fills = fills.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (fills, mut out) = match (fills, rest) {
            (Ok(f), Ok(r)) => (f, r),
            (f, r) => {
                // Nothing replaced: the temporary files go, the previous tables stay.
                for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                    if e.file_name().to_string_lossy().ends_with(".parquet.tmp") {
                        let _ = fs::remove_file(e.path());
                    }
                }
                return Err(f.err().or(r.err()).expect("one failed"));
            }
        };
        // In record_batches' order: the fills come after the positions.
        out.insert(1.min(out.len()), fills);
        for w in &out {
            fs::rename(temp_of(&w.path), &w.path)
                .map_err(|source| ParquetSinkError::Io { path: w.path.clone(), source })?;
            tracing::debug!(table = w.table, rows = w.rows, path = %w.path.display(), "wrote parquet table");
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| ParquetSinkError::Io { path: self.dir.clone(), source })?;
        Ok(out)
    }
}

/// Where a table is written before it replaces `path`.
fn temp_of(path: &Path) -> PathBuf {
    path.with_extension("parquet.tmp")
}

/// Writes `batch` to `tmp` and syncs it.
fn write_file(tmp: &Path, table: &'static str, batch: &RecordBatch) -> Result<(), ParquetSinkError> {
    let io = |source| ParquetSinkError::Io { path: tmp.to_owned(), source };
    let enc = |e: parquet::errors::ParquetError| ParquetSinkError::Encode { table, message: e.to_string() };
    let file = File::create(tmp).map_err(io)?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&batch.schema()), Some(props)).map_err(enc)?;
    writer.write(batch).map_err(enc)?;
    let file = writer.into_inner().map_err(enc)?;
    file.sync_all().map_err(io)
}
