//! `harbour replay --verify`: recompute positions, fills, roll-ups, per-minute P&L and marks
//! from scratch and compare with the incremental result (risk, volatility, alerts, orders,
//! instruments and trading status are not recomputed: the risk property tests compare the risk
//! book with its batch recomputation).
//!
//! The same input rules run again over the same lines; the live fills (busted ones removed) and
//! all market events go through `harbour_dataflows::reference::recompute`, the batch fold with no
//! dataflow at all. Any difference is a bug in the incremental path, reported with the first
//! differing row of each table.

use harbour_dataflows::model::{Fill, MarketEvent};
use harbour_dataflows::reference::{recompute, Reference};
use harbour_dataflows::validate::{Accepted, Validator};
use harbour_sources::contract::parse_line;
use harbour_sources::file::SourceLine;
use rustc_hash::FxHashMap;

use crate::engine::{EngineConfig, OutputState};

/// What a verification compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Rows compared, over all tables.
    pub rows: usize,
    /// Tables that differ, each with its first differing row (incremental vs reference).
    pub mismatches: Vec<String>,
}

/// The batch recomputation of `lines` under `config`.
pub fn reference(lines: impl Iterator<Item = SourceLine>, config: &EngineConfig) -> Reference {
    let mut validator = Validator::new(config.spreads.clone()).with_costs_from(config.graph.schedules.earliest());
    let mut live: FxHashMap<smol_str::SmolStr, Fill> = FxHashMap::default();
    let mut market: Vec<MarketEvent> = Vec::new();
    // Each line's place in the input, counted as the engine counts it (every line, refused ones
    // too): quotes at one event time are ordered by it.
    for (seq, line) in (1u64..).zip(lines) {
        if crate::engine::not_utf8(&line.raw) {
            continue;
        }
        let Ok(accepted) = parse_line(&line.raw, line.position).and_then(|e| validator.accept(e)) else { continue };
        for a in accepted {
            match a {
                Accepted::Fill(f) => {
                    live.insert(f.exec_id.clone(), Fill::clone(&f));
                }
                Accepted::Bust(f) => {
                    live.remove(&f.exec_id);
                }
                Accepted::Market(mut m) => {
                    m.set_seq(seq);
                    market.push(m)
                }
                Accepted::Order(_) | Accepted::Instrument { .. } | Accepted::Status(_) => {}
            }
        }
    }
    let fills: Vec<Fill> = live.into_values().collect();
    recompute(&fills, &market, &config.graph.schedules, &config.graph.marks)
}

fn compare<T: PartialEq + std::fmt::Debug>(name: &str, ours: Vec<&T>, theirs: &[T], out: &mut Verified) {
    out.rows += theirs.len();
    if ours.len() != theirs.len() || ours.iter().zip(theirs).any(|(a, b)| *a != b) {
        let first = ours.iter().zip(theirs).find(|(a, b)| **a != *b);
        let detail = match first {
            Some((a, b)) => format!("{name}: incremental {a:?} vs reference {b:?}"),
            None => format!("{name}: {} rows incremental vs {} in the reference", ours.len(), theirs.len()),
        };
        out.mismatches.push(detail);
    }
}

/// Compares the incremental outputs in `state` with `reference`.
pub fn compare_with(state: &OutputState, reference: &Reference) -> Verified {
    let mut out = Verified::default();
    compare("positions", state.positions.rows().collect(), &reference.positions, &mut out);
    compare("fills", state.fills.rows().collect(), &reference.fills, &mut out);
    compare("rollups", state.rollups.rows().collect(), &reference.rollups, &mut out);
    compare("minutes", state.minutes.rows().collect(), &reference.minutes, &mut out);
    compare("marks", state.marks.rows().collect(), &reference.marks, &mut out);
    out
}
