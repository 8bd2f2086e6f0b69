//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;

use harbour::engine::EngineConfig;
use harbour_dataflows::fees::CostSchedules;
use harbour_dataflows::graph::GraphConfig;
use harbour_dataflows::marks::MarkPolicy;
use harbour_dataflows::ticks::SpreadTables;
use rust_decimal::Decimal;

/// The default schedules, marks and spread tables, with `epoch_events` lines per epoch.
pub fn engine_config(epoch_events: usize) -> EngineConfig {
    EngineConfig {
        epoch_events,
        graph: GraphConfig { schedules: Arc::new(CostSchedules::default()), marks: MarkPolicy::default() },
        spreads: SpreadTables::default(),
    }
}

/// A sum as ClickHouse computes it: of values stored at 8 decimal places (per-fill realized P&L
/// from average cost can have more), printed at 8 places.
pub fn money(values: impl Iterator<Item = Decimal>) -> String {
    let mut sum: Decimal = values
        .map(|mut d| {
            d.rescale(8);
            d
        })
        .sum();
    sum.rescale(8);
    sum.to_string()
}
