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

/// A table whose layout changed after databases were made with it: how a table of the old layout
/// is told, and how its rows go into the new one ([`MOVES`]; `ClickHouseSink` moves each at
/// start-up, before it checks the columns).
pub struct Move {
    /// The table.
    pub table: &'static str,
    /// What tells a table of the old layout.
    pub old_when: OldLayout,
    /// The old table's name, as a suffix of `table`, while it is swapped out.
    pub old: &'static str,
    /// The copy's name, as a suffix of `table`, while it is filled.
    pub copy: &'static str,
    /// For a move that adds a trade date (the new layout's first column): the expression of an
    /// old row's date, which the copy is filled by, at most [`super::MAX_DATES_PER_INSERT`] dates
    /// per INSERT (current releases refuse a block over more partitions). `None`: the rows go
    /// over as they are.
    pub date: Option<&'static str>,
    /// The new layout, for the logs.
    pub layout: &'static str,
}

/// How a table of the old layout is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldLayout {
    /// It has a partition key.
    Partitioned,
    /// It lacks this column.
    Without(&'static str),
}

/// The trade date of an old event-log or dead-letter row: its message's `ts` read as HKT (what
/// the engine files a message under when it parsed), else 1970-01-01 (a refused message's date,
/// which the engine now takes from the input around it, was never kept). Runs on 18.16 and on
/// current releases: the `ts` is found by a regular expression (spaces allowed around the colon;
/// `visitParamExtractString` assumes compact JSON), and an empty one is not given to
/// `parseDateTimeBestEffortOrNull`, which reads it as 2000-01-01 on 18.16.
pub const DATE_OF_RAW: &str = r#"ifNull(toDate(parseDateTimeBestEffortOrNull(nullIf(extract(raw, '"ts"\\s*:\\s*"([^"]*)"'), '')), 'Asia/Hong_Kong'), toDate(0))"#;

/// Every table whose layout changed, in the order they are moved.
pub const MOVES: &[Move] = &[
    // The latest-state tables (a row per key whose trade date moves): not partitioned since
    // 2026-11-27 (deploy/clickhouse/001_init.sql says why).
    Move::unpartitioned("positions"),
    Move::unpartitioned("orders"),
    Move::unpartitioned("risk"),
    // The event log and the dead letters: a trade date and partitions by it since 2026-11-29.
    Move::dated("events"),
    Move::dated("dead_letters"),
];

/// The move of `table`, when its layout changed.
pub fn move_of(table: &str) -> Option<&'static Move> {
    MOVES.iter().find(|m| m.table == table)
}

impl Move {
    /// A table created partitioned by trade date, moved to no partitions.
    const fn unpartitioned(table: &'static str) -> Move {
        Move {
            table,
            old_when: OldLayout::Partitioned,
            old: "__partitioned",
            copy: "__unpartitioned",
            date: None,
            layout: "unpartitioned",
        }
    }

    /// A message table created without a trade date, moved to partitions by one
    /// ([`DATE_OF_RAW`]).
    const fn dated(table: &'static str) -> Move {
        Move {
            table,
            old_when: OldLayout::Without("trade_date"),
            old: "__undated",
            copy: "__dated",
            date: Some(DATE_OF_RAW),
            layout: "partitioned by trade date",
        }
    }

    /// The RENAME that swaps the copy in.
    pub fn swap(&self) -> String {
        format!("RENAME TABLE {0} TO {1}, {2} TO {0}", self.table, self.old_name(), self.copy_name())
    }

    /// The old table's name while it is swapped out.
    pub fn old_name(&self) -> String {
        format!("{}{}", self.table, self.old)
    }

    /// The copy's name while it is filled.
    pub fn copy_name(&self) -> String {
        format!("{}{}", self.table, self.copy)
    }

    /// The statement that makes the copy, from the DDL of the table's migration (`CREATE TABLE
    /// … AS` would keep the old engine's keys).
    pub fn create_copy(&self) -> String {
        let table = self.table;
        let ddl = create_statement(table).unwrap_or_else(|| panic!("a migration creates {table}"));
        ddl.replacen(&format!("EXISTS {table} ("), &format!("EXISTS {} (", self.copy_name()), 1)
    }

    /// The statement that fills the copy: with the rows of `dates` only (days since 1970-01-01)
    /// when given and the move adds a date.
    pub fn fill_copy(&self, dates: Option<&[u16]>) -> String {
        let (table, copy) = (self.table, self.copy_name());
        match (self.date, dates) {
            (None, _) => format!("INSERT INTO {copy} SELECT * FROM {table}"),
            (Some(date), None) => format!("INSERT INTO {copy} SELECT {date} AS trade_date, * FROM {table}"),
            (Some(date), Some(dates)) => {
                let list = dates.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
                format!(
                    "INSERT INTO {copy} SELECT {date} AS trade_date, * FROM {table} WHERE toUInt16({date}) IN ({list})"
                )
            }
        }
    }

    /// The statements that move the table, of the old layout, to the one its migration creates:
    /// a copy made from that DDL filled by `fills` ([`Move::fill_copy`]: one INSERT, or one per
    /// chunk of dates), swapped in by one RENAME, the old one dropped. A start that stopped part-way is
    /// mended by the next (`ClickHouseSink`'s `move_tables`): a half-filled copy is made again;
    /// a swap of which only the first rename was made (two steps on 18.16) is undone, the old
    /// table back under its name, and the move made again; an old table left after the swap is
    /// dropped.
    pub fn statements(&self, fills: Vec<String>) -> Vec<String> {
        let mut all = vec![self.create_copy()];
        all.extend(fills);
        all.extend([self.swap(), format!("DROP TABLE {}", self.old_name())]);
        all
    }
}

/// The statements that move `table`, its rows in one INSERT ([`Move::statements`]).
///
/// # Panics
/// When `table` has no move.
pub fn move_statements(table: &str) -> Vec<String> {
    let m = move_of(table).unwrap_or_else(|| panic!("{table} has no move"));
    m.statements(vec![m.fill_copy(None)])
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
        let unpartitioned = MOVES.iter().filter(|m| m.old_when == OldLayout::Partitioned).map(|m| m.table);
        assert_eq!(unpartitioned.clone().collect::<Vec<_>>(), ["positions", "orders", "risk"]);
        for table in unpartitioned {
            let ddl = create_statement(table).unwrap_or_else(|| panic!("{table} created"));
            assert!(!ddl.contains("PARTITION BY"), "{ddl}");
            let copy = &move_statements(table)[0];
            assert_eq!(copy.replacen(&format!("{table}__unpartitioned ("), &format!("{table} ("), 1), ddl);
            assert_eq!(move_of(table).map(|m| m.old_when), Some(OldLayout::Partitioned));
        }
    }

    /// The moves that add a column read the old columns after it: the new layout is the added
    /// column first, then the old ones.
    #[test]
    fn dated_tables_are_partitioned_by_trade_date_first() {
        let tables = tables();
        for m in MOVES {
            let ddl = create_statement(m.table).unwrap_or_else(|| panic!("{} created", m.table));
            let columns = &tables.iter().find(|(t, _)| t == m.table).expect("parsed").1;
            if let OldLayout::Without(column) = m.old_when {
                assert!(ddl.contains(&format!("PARTITION BY {column} ")), "{ddl}");
                assert_eq!(columns[0].0, column, "{ddl}");
                assert_eq!(column, "trade_date");
                let chunk = m.fill_copy(Some(&[20_514, 20_515]));
                assert!(chunk.ends_with(" IN (20514, 20515)"), "{chunk}");
                assert!(chunk.contains(" AS trade_date, * FROM "), "{chunk}");
            }
            let s = move_statements(m.table);
            assert_eq!(s[2], format!("RENAME TABLE {0} TO {0}{1}, {0}{2} TO {0}", m.table, m.old, m.copy));
        }
    }
}
