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

/// A private ClickHouse (deploy/clickhouse.sh with its own state file), which this test kills and
/// restarts.
pub struct PrivateServer {
    /// Its state file.
    pub state: std::path::PathBuf,
    /// Its URL.
    pub url: String,
}

impl PrivateServer {
    pub fn start(name: &str) -> PrivateServer {
        let state = std::env::temp_dir().join(format!("harbour-clickhouse-{name}-{}.state", std::process::id()));
        let out = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/clickhouse.sh"))
            .arg("start")
            .env("HARBOUR_CLICKHOUSE_STATE", &state)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .trim_start_matches("export HARBOUR_CLICKHOUSE_URL=")
            .to_string();
        PrivateServer { state, url }
    }

    pub fn pid_and_dir(&self) -> (String, String) {
        let s = std::fs::read_to_string(&self.state).unwrap();
        let mut parts = s.split_whitespace();
        (parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
    }

    pub fn kill(&self) {
        let (pid, _) = self.pid_and_dir();
        assert!(std::process::Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    }

    /// Starts the server again on the same data and ports, from another thread (no stop on drop).
    pub fn restart_detached(self) {
        self.restart();
        std::mem::forget(self);
    }

    /// Starts the server again on the same data and ports.
    // The server outlives this handle on purpose: `deploy/clickhouse.sh stop` stops it by pid.
    #[allow(clippy::zombie_processes)]
    pub fn restart(&self) {
        let (_, dir) = self.pid_and_dir();
        let child = std::process::Command::new("clickhouse-server")
            .arg(format!("--config-file={dir}/config.xml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(&self.state, format!("{} {dir} {}\n", child.id(), self.url)).unwrap();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/clickhouse.sh"))
            .arg("stop")
            .env("HARBOUR_CLICKHOUSE_STATE", &self.state)
            .status();
    }
}
