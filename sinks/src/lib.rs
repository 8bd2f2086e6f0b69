//! Harbour's outputs. The embedded default is [`parquet`]: one file per table in an output folder.
//!
//! Sinks receive the tables the dataflow maintains ([`tables::Tables`]): every row with the
//! version it was last written at (the timely time of the update that produced it).

pub mod parquet;
pub mod tables;
