//! The current rows of every output table, kept from the dataflow's update stream.
//!
//! Each epoch's updates are consolidated, then applied: a +1 inserts the row at the epoch's
//! version, a −1 removes it. The result is what an idempotent sink holds after the epoch, and it
//! is what the Parquet sink writes.

use std::collections::BTreeMap;

use differential_dataflow::consolidation::consolidate;
use harbour_sinks::tables::{Tables, Versioned};

/// One output table's rows with their versions.
#[derive(Debug)]
pub struct TableState<D: Ord> {
    rows: BTreeMap<D, u64>,
}

impl<D: Ord> Default for TableState<D> {
    fn default() -> Self {
        TableState { rows: BTreeMap::new() }
    }
}

impl<D: Ord + Clone> TableState<D> {
    /// Applies one epoch's updates (any order; they are consolidated first).
    pub fn apply(&mut self, mut updates: Vec<(D, u64, isize)>) {
        let version = updates.iter().map(|(_, t, _)| *t).max().unwrap_or_default();
        let mut flat: Vec<(D, isize)> = updates.drain(..).map(|(d, _t, r)| (d, r)).collect();
        consolidate(&mut flat);
        // Removals first, so a row re-inserted in the same epoch keeps its new version.
        for (d, r) in flat.iter().filter(|(_, r)| *r < 0) {
            debug_assert_eq!(*r, -1, "an output row is retracted once");
            self.rows.remove(d);
        }
        for (d, r) in flat {
            if r > 0 {
                debug_assert_eq!(r, 1, "output rows are sets");
                self.rows.insert(d, version);
            }
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows with versions.
    pub fn versioned(&self) -> Vec<Versioned<D>> {
        self.rows.iter().map(|(d, v)| Versioned { row: d.clone(), version: *v }).collect()
    }

    /// Rows.
    pub fn rows(&self) -> impl Iterator<Item = &D> {
        self.rows.keys()
    }
}

/// Builds the sink tables from the states.
pub fn snapshot(s: &crate::engine::OutputState) -> Tables {
    Tables {
        positions: s.positions.versioned(),
        fills: s.fills.versioned(),
        rollups: s.rollups.versioned(),
        minutes: s.minutes.versioned(),
        orders: s.orders.versioned().into_iter().map(|v| Versioned { row: v.row.1, version: v.version }).collect(),
        marks: s.marks.versioned(),
        instruments: s.instruments.versioned(),
        dead_letters: s.dead_letters.clone(),
    }
}
