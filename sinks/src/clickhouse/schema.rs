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
/// on current releases) filled from it, swapped in by one RENAME, the old one dropped. A start
/// that stopped part-way is mended by the next (`ClickHouseSink`'s `unpartition`): a half-filled
/// copy is made again; a swap of which only the first rename was made (two steps on 18.16) is
/// undone, the old table back under its name, and the move made again; an old table left after
/// the swap is dropped.
pub fn move_statements(table: &str) -> Vec<String> {
    let ddl = create_statement(table).unwrap_or_else(|| panic!("a migration creates {table}"));
    vec![
        ddl.replacen(&format!("EXISTS {table} ("), &format!("EXISTS {table}__unpartitioned ("), 1),
        format!("INSERT INTO {table}__unpartitioned SELECT * FROM {table}"),
        format!("RENAME TABLE {table} TO {table}__partitioned, {table}__unpartitioned TO {table}"),
        format!("DROP TABLE {table}__partitioned"),
    ]
}

/// Every table the migrations create, with its columns `(name, type)` in order, from the
/// `CREATE TABLE` statements (the migrations add no column later).
pub fn tables() -> Vec<(String, Vec<(String, String)>)> {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS ";
    MIGRATIONS
        .iter()
        .flat_map(Migration::statements)
        .filter_map(|s| {
            let rest = s.strip_prefix(CREATE)?;
            let open = rest.find('(')?;
            let name = rest[..open].trim().to_string();
            // The column list: to the parenthesis that closes the first one.
            let (mut depth, mut items, mut item) = (0usize, Vec::new(), String::new());
            for c in rest[open + 1..].chars() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => break,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            let columns = items
                .iter()
                .filter_map(|i| {
                    let (name, ty) = i.trim().split_once(char::is_whitespace)?;
                    Some((name.to_string(), ty.trim().to_string()))
                })
                .collect();
            Some((name, columns))
        })
        .collect()
}

/// What differs between the columns Harbour writes to `table` (`wanted`) and those the table
/// has (`found`, as `system.columns` lists them): a column missing, or of another type (rows go
/// in as RowBinary, which a column of another type of the same width would take, meaning
/// something else). Extra columns are fine (they take their defaults). Types compare without
/// spaces.
pub fn column_differences(table: &str, wanted: &[(String, String)], found: &[(String, String)]) -> Vec<String> {
    let squeeze = |t: &str| t.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    wanted
        .iter()
        .filter_map(|(name, ty)| match found.iter().find(|(n, _)| n == name) {
            None => Some(format!("{table}.{name} is missing (Harbour writes {ty})")),
            Some((_, t)) if squeeze(t) != squeeze(ty) => Some(format!("{table}.{name} is {t}, Harbour writes {ty}")),
            Some(_) => None,
        })
        .collect()
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
    fn the_columns_of_every_table_are_read_from_its_migration() {
        let tables = tables();
        let positions = &tables.iter().find(|(t, _)| t == "positions").expect("positions").1;
        assert_eq!(positions.first(), Some(&("trade_date".to_string(), "Date".to_string())));
        assert!(positions.contains(&("avg_price".to_string(), "Nullable(Decimal(38, 8))".to_string())));
        assert_eq!(positions.last(), Some(&("deleted".to_string(), "UInt8".to_string())));
        assert!(tables.len() >= 10 && tables.iter().all(|(_, c)| c.len() >= 2), "{tables:?}");
        let found = vec![("qty".to_string(), "String".to_string()), ("extra".to_string(), "UInt8".to_string())];
        let wanted = vec![("qty".to_string(), "Int64".to_string()), ("side".to_string(), "String".to_string())];
        assert_eq!(
            column_differences("fills", &wanted, &found),
            ["fills.qty is String, Harbour writes Int64", "fills.side is missing (Harbour writes String)"]
        );
        let spaced = vec![("p".to_string(), "Decimal(38,8)".to_string())];
        assert!(column_differences("t", &[("p".to_string(), "Decimal(38, 8)".to_string())], &spaced).is_empty());
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
