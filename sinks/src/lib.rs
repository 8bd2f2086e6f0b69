//! Harbour's outputs. The embedded default is [`parquet`]: one file per table in an output folder;
//! [`clickhouse`] holds the analysts' tables; [`redis`] the live feed.
//!
//! Sinks receive the tables the dataflow maintains: whole ([`tables::Tables`], every row with the
//! version it was last written at) or as the changes since the last flush ([`tables::Changes`],
//! for sinks that upsert by key and version).

pub mod clickhouse;
pub mod parquet;
pub mod redis;
pub mod tables;
