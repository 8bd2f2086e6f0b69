//! The `harbour` pipeline: configuration, the engine that wires sources, dataflows and sinks,
//! metrics and health. The binary (`main.rs`) is a thin command line over this library.
//!
//! - [`config`]: TOML + environment configuration, validated before any I/O.
//! - [`checkpoint`]: checkpoints, the epoch log and the committed marker (Kafka restarts).
//! - [`engine`]: reads lines, applies the input rules, runs the dataflow epoch by epoch.
//! - [`state`]: the output tables kept current from the dataflow's updates.
//! - [`hkex`]: `harbour hkex` encode / replay / record of OMD-C captures.
//! - [`kafka`]: the Kafka run loop: epochs, dead letters, durable commits, checkpoints.
//! - [`metrics`]: Prometheus metrics and the `/metrics` and `/health` server.
//! - [`summary`]: the end-of-run report.
//! - [`verify`]: recompute from scratch and compare (`harbour replay --verify`).

pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod halts;
pub mod hkex;
pub mod kafka;
pub mod metrics;
pub mod risk;
pub mod state;
pub mod summary;
pub mod verify;
