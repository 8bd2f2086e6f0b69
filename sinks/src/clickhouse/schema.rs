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

/// The latest-state tables (a row per key whose trade date moves): not partitioned since
/// 2026-11-27 (deploy/clickhouse/001_init.sql says why). A database created before has them
/// partitioned by trade date; [`move_statements`] moves one to the new layout.
pub const UNPARTITIONED: &[&str] = &["positions", "orders", "risk"];

/// The statements that move `table`, partitioned, to the layout its migration creates: a copy
/// made from that DDL (the columns never changed; `CREATE TABLE … AS` would keep the partition key
/// on current releases) filled from it, swapped in by one RENAME, the old one dropped. Safe to
/// run again after a failure part-way (the copy is filled again, with the same versions, which
/// ReplacingMergeTree folds); a leftover `<table>__partitioned` is dropped at every start.
pub fn move_statements(table: &str) -> Vec<String> {
    let ddl = create_statement(table).unwrap_or_else(|| panic!("a migration creates {table}"));
    vec![
        ddl.replacen(&format!("EXISTS {table} ("), &format!("EXISTS {table}__unpartitioned ("), 1),
        format!("INSERT INTO {table}__unpartitioned SELECT * FROM {table}"),
        format!("RENAME TABLE {table} TO {table}__partitioned, {table}__unpartitioned TO {table}"),
        format!("DROP TABLE {table}__partitioned"),
    ]
}

/// The statement of the migrations that creates `table`.
fn create_statement(table: &str) -> Option<String> {
    let create = format!("CREATE TABLE IF NOT EXISTS {table} (");
    MIGRATIONS.iter().flat_map(Migration::statements).find(|s| s.starts_with(&create))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_split_into_idempotent_statements() {
        let s = MIGRATIONS[0].statements();
        assert!(s.len() >= 6, "{s:?}");
        assert!(s.iter().all(|x| x.starts_with("CREATE TABLE IF NOT EXISTS")), "{s:?}");
    }

    #[test]
    fn latest_state_tables_are_created_unpartitioned() {
        for table in UNPARTITIONED {
            let ddl = create_statement(table).unwrap_or_else(|| panic!("{table} created"));
            assert!(!ddl.contains("PARTITION BY"), "{ddl}");
            let copy = &move_statements(table)[0];
            assert_eq!(copy.replacen(&format!("{table}__unpartitioned ("), &format!("{table} ("), 1), ddl);
        }
    }
}
