//! The versioned migrations of deploy/clickhouse/, embedded at build time.

/// One migration: a file of `;`-separated statements, each idempotent.
pub struct Migration {
    /// Its number (the file's prefix).
    pub version: u32,
    /// Its file name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

impl Migration {
    /// The statements, comments removed.
    pub fn statements(&self) -> Vec<String> {
        let text: String = self.sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    }
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "001_init.sql", sql: include_str!("../../../deploy/clickhouse/001_init.sql") },
    Migration {
        version: 2,
        name: "002_flows_orders_events.sql",
        sql: include_str!("../../../deploy/clickhouse/002_flows_orders_events.sql"),
    },
    Migration { version: 3, name: "003_risk.sql", sql: include_str!("../../../deploy/clickhouse/003_risk.sql") },
    Migration {
        version: 4,
        name: "004_daily_closes.sql",
        sql: include_str!("../../../deploy/clickhouse/004_daily_closes.sql"),
    },
    Migration {
        version: 5,
        name: "005_trading_status.sql",
        sql: include_str!("../../../deploy/clickhouse/005_trading_status.sql"),
    },
    Migration {
        version: 6,
        name: "006_volatility.sql",
        sql: include_str!("../../../deploy/clickhouse/006_volatility.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_split_into_idempotent_statements() {
        let s = MIGRATIONS[0].statements();
        assert!(s.len() >= 6, "{s:?}");
        assert!(s.iter().all(|x| x.starts_with("CREATE TABLE IF NOT EXISTS")), "{s:?}");
    }
}
