//! The sample-day generator (being written).
