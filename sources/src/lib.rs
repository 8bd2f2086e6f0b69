//! Harbour's inputs: the JSON input contract, file replay, and the deterministic sample-day generator.
//!
//! - [`contract`]: parse and write the JSON-lines input contract.
//! - [`file`]: replay JSON lines from files or standard input, with line positions.
//! - [`kafka`]: the Kafka consumer of the input topics, topic set-up, publishing and dead letters.
//! - [`generate`]: a seeded, realistic HKEX trading day in the contract's format.
//! - [`hkex`]: the HKEX OMD-C binary feed: decoding, feed handling, captures, retransmission.
//!
//! Sources only read and parse (the OMD-C feed also keeps the books and prices it is made of);
//! the input rules and everything after live in `harbour-dataflows`.

pub mod contract;
pub mod file;
pub mod generate;
pub mod hkex;
pub mod kafka;
