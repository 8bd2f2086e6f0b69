//! ClickHouse: the analysts' tables, written by epoch, idempotent by key and version.
//!
//! ```text
//!  Changes (rows changed since the last flush, with versions) ──► RowBinary INSERTs over HTTP
//!     events, instruments, positions, position_history, fills, account/strategy_pnl_minute, risk,
//!     risk_history, alerts, daily_closes, trading_status, volatility,
//!     orders, order_history, dead_letters  ──► sink_progress (epoch) last
//! ```
//!
//! Tables are created by the migrations under deploy/clickhouse/ (embedded at build time, applied
//! at start-up, recorded in `harbour_migrations`). [`ClickHouseSink::write`] returns only once
//! ClickHouse acknowledged every insert of the flush; until then the pipeline commits nothing.
//! Retriable failures (connection refused, timeouts, overload) are retried with exponential
//! backoff and jitter, for as long as it takes; a permanent one (a schema mismatch) is returned,
//! and the pipeline stops rather than drop data. Works on ClickHouse 18.16 (Debian's package:
//! `validation = false`, RowBinary without a header) and on current releases (validation on).

mod rows;
pub mod schema;

use std::time::Duration;

use clickhouse::Client;
use rand::Rng;
use serde::Deserialize;

pub use rows::{date, seconds};
pub use schema::MIGRATIONS;

use crate::tables::Changes;
use harbour_dataflows::rollups::Group;

/// `[clickhouse]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL; empty disables the sink. `HARBOUR_CLICKHOUSE_URL` overrides it.
    pub url: String,
    /// Database. Default `default`.
    pub database: String,
    /// User. Default `default`.
    pub user: String,
    /// File holding the password (never logged); `HARBOUR_CLICKHOUSE_PASSWORD` works too.
    pub password_file: Option<std::path::PathBuf>,
    /// Check rows against the table schema before sending (needs ClickHouse ≥ 24.10; off for 18.16).
    pub validation: bool,
    /// Longest pause between retries, in milliseconds. Default 5000.
    pub max_backoff_ms: u64,
    /// How long one request (an insert, a query) may take before it is abandoned and retried,
    /// in milliseconds (0: no limit). Default 60000: a server that accepted the connection and
    /// stopped answering (a half-open connection, a stalled disk) would otherwise hold the write
    /// forever, unseen by the retry metric. An insert is idempotent, so a retried one that had
    /// landed after all changes nothing under `FINAL`.
    pub timeout_ms: u64,
    /// Rows per INSERT at most (a table's rows of one flush go in as many as needed). Default
    /// 500000: a flush in normal running is far below; one after an outage is not.
    pub max_insert_rows: usize,
    /// The sink is written at most this often, in milliseconds (larger batches, fewer parts). Default 250.
    pub flush_ms: u64,
    /// ClickHouse settings sent with every request (`[clickhouse.settings]`, e.g.
    /// `max_memory_usage`, `insert_quorum`, `async_insert`). Default none.
    pub settings: std::collections::BTreeMap<String, String>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: String::new(),
            database: "default".into(),
            user: "default".into(),
            password_file: None,
            validation: false,
            max_backoff_ms: 5_000,
            timeout_ms: 60_000,
            max_insert_rows: 500_000,
            flush_ms: 250,
            settings: Default::default(),
        }
    }
}

impl ClickHouseConfig {
    /// Checks the settings; errors name the key. An insert is acknowledged (and the source
    /// offsets it covers committed) only once ClickHouse holds its rows: `async_insert` with
    /// `wait_for_async_insert = 0` answers before the buffer is written, so a server crash then
    /// would lose rows whose offsets were already committed.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let setting = |name: &str| self.settings.get(name).map(|v| v.trim().to_ascii_lowercase());
        let on = |v: &str| !matches!(v, "0" | "false");
        if setting("async_insert").is_some_and(|v| on(&v)) && setting("wait_for_async_insert").is_some_and(|v| !on(&v))
        {
            return Err((
                "clickhouse.settings.wait_for_async_insert".into(),
                "must not be 0 with async_insert: ClickHouse would acknowledge inserts it has not written, \
                 and the offsets they cover would be committed before the rows are safe"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `url` without a user and password written into it (`https://user:pass@host` shows as
/// `https://***@host`), for logs and `Debug`.
fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{}***@{}", if scheme.is_empty() { "" } else { "://" }, &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &shown_url(&self.url))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password_file", &self.password_file.as_ref().map(|_| "<set>"))
            .field("validation", &self.validation)
            .finish()
    }
}

/// Errors of the ClickHouse sink.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// A permanent failure: retrying cannot help.
    #[error("clickhouse {what}: {message}")]
    Permanent {
        /// What was being done.
        what: String,
        /// ClickHouse's answer.
        message: String,
    },
    /// Bad settings.
    #[error("clickhouse config: {0}")]
    Config(String),
}

/// `e` with every error under it (`network error: client error (Connect): error:0A000086:SSL
/// routines:…:certificate verify failed`), for logs and messages: the top level alone says
/// "client error (Connect)" whatever refused the connection.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        // hyper and native-tls repeat the message of the error they wrap.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A TLS handshake the client refused: a certificate it does not trust (self-signed, unknown
/// issuer, expired, for another host), or `https://` given for a plain HTTP port ("wrong version
/// number"). Waiting cannot cure either; it is the configuration (`clickhouse.url`, the trust
/// store) to fix. (A handshake cut off by the network is not one of these.)
fn tls_refused(e: &clickhouse::error::Error) -> bool {
    let text = chain(e);
    [
        "certificate verify failed",
        "self-signed certificate",
        "unable to get local issuer certificate",
        "certificate has expired",
        "hostname mismatch",
        "wrong version number",
    ]
    .iter()
    .any(|c| text.contains(c))
}

fn retriable(e: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) => !tls_refused(e),
        E::TimedOut => true,
        // Overload, memory, too many parts, network codes: worth waiting for.
        // (252 is also "too many partitions for a single INSERT block", which a retry cannot
        // cure: inserts are cut to stay under the default limit, a lower one is a setting to fix.)
        E::BadResponse(m) if m.contains("Too many partitions") => false,
        // No ClickHouse error code: a proxy or load balancer in front answered; its gateway
        // errors pass (an empty body reads "503 Service Unavailable", a proxy's page names it).
        // (The crate keeps the body, not the status, when there is one: Envoy's 503 reads "no
        // healthy upstream", its 504 "upstream request timeout".)
        E::BadResponse(m) if !m.contains("Code:") => [
            "502",
            "503",
            "504",
            "Bad Gateway",
            "Service Unavailable",
            "Gateway Time",
            "no healthy upstream",
            "upstream connect error",
            "upstream request timeout",
        ]
        .iter()
        .any(|c| m.contains(c)),
        E::BadResponse(m) => {
            // Timeout, too many simultaneous queries, socket timeout, network error, memory
            // limit, too many parts, table read-only (a replica's ZooKeeper session), query
            // cancelled (a server shutting down).
            ["Code: 159", "Code: 202", "Code: 209", "Code: 210", "Code: 241", "Code: 252", "Code: 242", "Code: 394"]
                .iter()
                .any(|c| m.contains(c))
        }
        _ => false,
    }
}

/// The sink.
pub struct ClickHouseSink {
    client: Client,
    rt: tokio::runtime::Runtime,
    max_backoff: Duration,
    /// Per request (`clickhouse.timeout_ms`; none: no limit).
    timeout: Option<Duration>,
    /// Rows per INSERT at most (`clickhouse.max_insert_rows`).
    max_insert_rows: usize,
    name: String,
    /// Failed attempts so far (for metrics and tests).
    retries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The close written last per symbol (its event time): a quote change carries the symbol's
    /// close again, which is written only when it is a new one.
    closes_written: std::collections::HashMap<harbour_dataflows::model::Symbol, i64>,
}

impl ClickHouseSink {
    /// Connects to `config.url` (the config loader applies `HARBOUR_CLICKHOUSE_URL`) and applies
    /// the migrations, waiting for ClickHouse while it is unreachable.
    pub fn connect(config: &ClickHouseConfig) -> Result<ClickHouseSink, ClickHouseError> {
        let url = config.url.clone();
        if url.is_empty() {
            return Err(ClickHouseError::Config("clickhouse.url is empty".into()));
        }
        let password = match (&config.password_file, std::env::var("HARBOUR_CLICKHOUSE_PASSWORD")) {
            (_, Ok(p)) => Some(p),
            (Some(f), _) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| ClickHouseError::Config(format!("clickhouse.password_file {}: {e}", f.display())))?
                    .trim()
                    .to_string(),
            ),
            (None, _) => None,
        };
        let mut server = Client::default().with_url(&url).with_user(&config.user).with_validation(config.validation);
        if let Some(p) = password {
            server = server.with_password(p);
        }
        for (name, value) in &config.settings {
            server = server.with_setting(name, value);
        }
        let client = server.clone().with_database(&config.database);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClickHouseError::Config(format!("runtime: {e}")))?;
        let mut sink = ClickHouseSink {
            client: server,
            rt,
            max_backoff: Duration::from_millis(config.max_backoff_ms.max(10)),
            timeout: Some(Duration::from_millis(config.timeout_ms)).filter(|t| !t.is_zero()),
            max_insert_rows: config.max_insert_rows.max(1),
            name: "clickhouse".into(),
            retries: Default::default(),
            closes_written: Default::default(),
        };
        let db = config.database.replace('`', "");
        sink.run("creating the database", &format!("CREATE DATABASE IF NOT EXISTS `{db}`"))?;
        sink.client = client;
        sink.migrate()?;
        tracing::info!(url = %shown_url(&url), database = %config.database, "clickhouse sink ready");
        Ok(sink)
    }

    /// Runs `f` until it succeeds or fails permanently, backing off exponentially with jitter.
    fn retry<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T, ClickHouseError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    {
        Ok(self.retry_unless(what, |_| false, f)?.expect("nothing is handed back"))
    }

    /// [`ClickHouseSink::retry`], except that an error `hand_back` picks is not retried but
    /// answered with `None`, for the caller to try another way.
    fn retry_unless<T, F, Fut>(
        &mut self,
        what: &str,
        hand_back: impl Fn(&clickhouse::error::Error) -> bool,
        mut f: F,
    ) -> Result<Option<T>, ClickHouseError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let mut backoff = Duration::from_millis(50);
        loop {
            let request = f(self.client.clone());
            let outcome = match self.timeout {
                Some(t) => self.rt.block_on(async { tokio::time::timeout(t, request).await }),
                None => Ok(self.rt.block_on(request)),
            };
            match outcome.unwrap_or(Err(clickhouse::error::Error::TimedOut)) {
                Ok(v) => return Ok(Some(v)),
                Err(e) if hand_back(&e) => {
                    self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(None);
                }
                Err(e) if retriable(&e) => {
                    self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let jitter = rand::rng().random_range(0.5..1.5);
                    let wait = backoff.mul_f64(jitter).min(self.max_backoff);
                    tracing::warn!(what, error = %chain(&e), retry_in_ms = wait.as_millis() as u64, "clickhouse unavailable, retrying");
                    std::thread::sleep(wait);
                    backoff = (backoff * 2).min(self.max_backoff);
                }
                Err(e) => return Err(ClickHouseError::Permanent { what: what.to_string(), message: chain(&e) }),
            }
        }
    }

    fn migrate(&mut self) -> Result<(), ClickHouseError> {
        for m in MIGRATIONS {
            for statement in m.statements() {
                self.run(&format!("migration {} ({})", m.version, m.name), &statement)?;
            }
            let (version, name) = (m.version, m.name.to_string());
            self.retry("recording a migration", move |c| {
                let name = name.clone();
                async move {
                    c.query("INSERT INTO harbour_migrations (version, name, applied_at) SELECT ?, ?, now()")
                        .bind(version)
                        .bind(name)
                        .execute()
                        .await
                }
            })?;
        }
        self.move_tables()?;
        self.check_columns()
    }

    /// Refuses tables that exist under Harbour's names with other columns (`CREATE TABLE IF NOT
    /// EXISTS` leaves them as they are): a column missing fails every insert, and one of another
    /// type of the same width takes RowBinary rows meaning something else (an Int64 read as a
    /// DateTime64, a Decimal as another scale).
    fn check_columns(&mut self) -> Result<(), ClickHouseError> {
        // Every table's columns in one request.
        let text =
            self.query_text("SELECT table, name, type FROM system.columns WHERE database = currentDatabase()")?;
        let mut found: std::collections::HashMap<&str, Vec<(String, String)>> = Default::default();
        for line in text.lines() {
            let mut f = line.splitn(3, '\t');
            if let (Some(table), Some(name), Some(ty)) = (f.next(), f.next(), f.next()) {
                found.entry(table).or_default().push((name.to_string(), ty.to_string()));
            }
        }
        let mut differences = Vec::new();
        for (table, wanted) in schema::tables() {
            let have = found.get(table.as_str()).map_or(&[][..], Vec::as_slice);
            differences.extend(schema::column_differences(&table, &wanted, have));
        }
        if differences.is_empty() {
            return Ok(());
        }
        Err(ClickHouseError::Permanent {
            what: "checking the tables".into(),
            message: format!(
                "tables under Harbour's names have other columns (made by something else, or by hand): {}; \
                 rename or drop them, or set clickhouse.database to another database",
                differences.join("; ")
            ),
        })
    }

    /// Moves every table of a layout that changed since the database was made
    /// ([`schema::MOVES`]: the latest-state tables created partitioned before 2026-11-27, the
    /// event log and dead letters created without a trade date before 2026-11-29) to its new
    /// layout, rows kept.
    fn move_tables(&mut self) -> Result<(), ClickHouseError> {
        for m in schema::MOVES {
            let table = m.table;
            let (old, copy) = (m.old_name(), m.copy_name());
            if self.table_exists(&old)? && self.table_exists(&copy)? {
                // A start that stopped inside the swap: one RENAME of two tables is two steps on
                // older releases (18.16), and only the first was made. The rows are in the old
                // table; `table`, if there is one, is the empty table this start's migration
                // created. Put the old one back and move it again (dropping the old one here, as
                // below, lost the only complete copy under a usable name).
                if self.table_exists(table)? {
                    let rows = self.rows_in(table)?;
                    if rows != 0 {
                        return Err(ClickHouseError::Permanent {
                            what: format!("moving {table} to its new layout ({})", m.layout),
                            message: format!(
                                "{table}, {old} and {copy} all exist and {table} holds rows ({rows}): keep the one \
                                 with the newest versions as {table} and drop the others"
                            ),
                        });
                    }
                    self.execute(&format!("DROP TABLE {table}"))?;
                }
                tracing::warn!(
                    table,
                    layout = m.layout,
                    "a move to a new layout stopped inside its swap; starting it again"
                );
                self.execute(&format!("RENAME TABLE {old} TO {table}"))?;
                self.execute(&format!("DROP TABLE {copy}"))?;
            }
            // Left by a start that stopped between the swap and the drop.
            self.execute(&format!("DROP TABLE IF EXISTS {old}"))?;
            let found = match m.old_when {
                schema::OldLayout::Partitioned => self
                    .query_text(&format!(
                        "SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = '{table}'"
                    ))?
                    .trim()
                    .to_string(),
                schema::OldLayout::Without(column) => {
                    let n = self.query_text(&format!(
                        "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = '{table}' \
                         AND name = '{column}'"
                    ))?;
                    if n.trim() == "0" {
                        format!("no column {column}")
                    } else {
                        String::new()
                    }
                }
            };
            if found.is_empty() {
                if self.table_exists(&copy)? {
                    // What a release before 2026-11-28 left after a start stopped inside the swap:
                    // it dropped the old table, so the rows are in the copy alone, and `table`
                    // is the empty one its migration created. Put the copy in its place.
                    let rows = self.rows_in(table)?;
                    if rows == 0 {
                        tracing::warn!(table, "the moved copy of a table was left aside; putting it in place");
                        self.execute(&format!("DROP TABLE {table}"))?;
                        self.execute(&format!("RENAME TABLE {copy} TO {table}"))?;
                    } else {
                        tracing::error!(
                            table,
                            rows,
                            "{copy} is left from a stopped move and {table} holds rows written since: \
                             compare them and drop the one not wanted"
                        );
                    }
                }
                continue;
            }
            // A copy left by a start that stopped while filling it: filled again from the start.
            self.execute(&format!("DROP TABLE IF EXISTS {copy}"))?;
            tracing::info!(table, old_layout = %found, layout = m.layout, "moving a table to its new layout");
            // A move reads a whole table (the event log's rows all parsed for their dates): its
            // statements may take far longer than a write, and one abandoned at the request
            // timeout would be sent again while the first still runs.
            let timeout = self.timeout;
            self.timeout = timeout.map(|t| t.max(MOVE_TIMEOUT));
            let moved = self.move_table(m);
            self.timeout = timeout;
            moved?;
        }
        Ok(())
    }

    /// Copies `m`'s table to its new layout (by chunks of dates when the move adds one), swaps
    /// the copy in and drops the old one.
    fn move_table(&mut self, m: &schema::Move) -> Result<(), ClickHouseError> {
        let fills = match m.date {
            None => vec![m.fill_copy(None)],
            Some(date) => {
                let text = self.query_text(&format!("SELECT DISTINCT toUInt16({date}) FROM {} ORDER BY 1", m.table))?;
                let dates: Vec<u16> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
                tracing::info!(table = m.table, dates = dates.len(), "dating the rows of a table");
                dates.chunks(MAX_DATES_PER_INSERT).map(|chunk| m.fill_copy(Some(chunk))).collect()
            }
        };
        for sql in m.statements(fills) {
            self.execute(&sql)?;
        }
        Ok(())
    }

    fn rows_in(&mut self, table: &str) -> Result<u64, ClickHouseError> {
        let text = self.query_text(&format!("SELECT count() FROM {table}"))?;
        text.trim().parse().map_err(|_| ClickHouseError::Permanent {
            what: format!("counting the rows of {table}"),
            message: format!("not a count: {text:?}"),
        })
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, ClickHouseError> {
        let n = self.query_text(&format!(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '{name}'"
        ))?;
        Ok(n.trim() != "0")
    }

    /// Runs a statement that returns nothing (DDL, INSERT … SELECT), retried like the rest.
    pub fn execute(&mut self, sql: &str) -> Result<(), ClickHouseError> {
        self.run("statement", sql)
    }

    /// [`ClickHouseSink::execute`], its retries and errors naming `what` was being done.
    fn run(&mut self, what: &str, sql: &str) -> Result<(), ClickHouseError> {
        self.retry(what, |c| async move { c.query(sql).execute().await })
    }

    /// Writes `changes` and then records `epoch` in `sink_progress`; returns once ClickHouse
    /// acknowledged all of it. Returns the number of rows written.
    pub fn write(&mut self, epoch: u64, changes: &Changes) -> Result<u64, ClickHouseError> {
        let positions: Vec<rows::Position> = changes.positions.iter().map(Into::into).collect();
        let history: Vec<rows::PositionVersion> = changes.positions.iter().map(Into::into).collect();
        let fills: Vec<rows::FillRow> = changes.fills.iter().map(Into::into).collect();
        let dead: Vec<rows::DeadLetterRow> =
            changes.dead_letters.iter().map(|d| rows::DeadLetterRow::new(d, epoch)).collect();
        let is_account = |c: &&crate::tables::Change<_>| matches!(c.row, ((Group::Account(_), _), _));
        let account_minutes: Vec<rows::AccountMinute> =
            changes.minutes.iter().filter(is_account).map(Into::into).collect();
        let strategy_minutes: Vec<rows::StrategyMinute> =
            changes.minutes.iter().filter(|c| !is_account(c)).map(Into::into).collect();
        let orders: Vec<rows::OrderRow> = changes.orders.iter().map(Into::into).collect();
        let instruments: Vec<rows::InstrumentRow> = changes.instruments.iter().map(Into::into).collect();
        let events: Vec<rows::EventRow> = changes.events.iter().map(Into::into).collect();
        let risk: Vec<rows::Risk> = changes.risk.iter().map(Into::into).collect();
        let alerts: Vec<rows::Alert> = changes.alerts.iter().map(Into::into).collect();
        let new_closes: Vec<_> = changes
            .quotes
            .iter()
            .filter(|c| c.row.1.close().is_some_and(|(ts, _)| self.closes_written.get(&c.row.0) != Some(&ts)))
            .collect();
        let closes: Vec<rows::DailyClose> = new_closes.iter().filter_map(|c| rows::DailyClose::of(c)).collect();
        let status: Vec<rows::Status> = changes.status.iter().map(Into::into).collect();
        let vol: Vec<rows::Vol> = changes.vol.iter().map(Into::into).collect();
        let n = (positions.len()
            + vol.len()
            + status.len()
            + closes.len()
            + 2 * risk.len()
            + alerts.len()
            + history.len()
            + fills.len()
            + dead.len()
            + account_minutes.len()
            + strategy_minutes.len()
            + 2 * orders.len()
            + instruments.len()
            + events.len()) as u64;
        insert_partitioned(self, "events", &events)?;
        insert(self, "instruments", &instruments)?;
        insert(self, "positions", &positions)?;
        insert_partitioned(self, "position_history", &history)?;
        insert_partitioned(self, "fills", &fills)?;
        insert_partitioned(self, "account_pnl_minute", &account_minutes)?;
        insert_partitioned(self, "strategy_pnl_minute", &strategy_minutes)?;
        insert(self, "orders", &orders)?;
        insert_partitioned(self, "order_history", &orders)?;
        insert(self, "risk", &risk)?;
        insert_partitioned(self, "risk_history", &risk)?;
        insert_partitioned(self, "alerts", &alerts)?;
        insert_partitioned(self, "daily_closes", &closes)?;
        insert(self, "trading_status", &status)?;
        insert(self, "volatility", &vol)?;
        insert_partitioned(self, "dead_letters", &dead)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
        let progress = [rows::Progress { sink: self.name.clone(), epoch, rows: n, written_at: now }];
        insert(self, "sink_progress", &progress)?;
        for c in new_closes {
            if let Some((ts, _)) = c.row.1.close() {
                self.closes_written.insert(c.row.0, ts);
            }
        }
        Ok(n)
    }

    /// Failed attempts so far (each was retried after a backoff).
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The live count of failed attempts, shared: the pipeline exports it as a metric, read
    /// while a write is still retrying.
    pub fn retry_counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.retries.clone()
    }

    /// The newest epoch `sink_progress` holds for this sink (0: none), read back at start: what
    /// ClickHouse still has of what it acknowledged (an insert is acknowledged before its part
    /// is synced to disk; a server restored from an older backup, or replaced, holds less).
    pub fn epoch(&mut self) -> Result<u64, ClickHouseError> {
        let name = self.name.replace('\\', "\\\\").replace('\'', "\\'");
        let text = self.query_text(&format!("SELECT max(epoch) FROM sink_progress WHERE sink = '{name}'"))?;
        text.trim().parse().map_err(|_| ClickHouseError::Permanent {
            what: "read sink_progress".into(),
            message: format!("not an epoch: {text:?}"),
        })
    }

    /// Runs a query and returns its result as text (TabSeparated), for tests and tools.
    pub fn query_text(&mut self, sql: &str) -> Result<String, ClickHouseError> {
        let sql = sql.to_string();
        self.retry("query", move |c| {
            let sql = sql.clone();
            async move {
                let mut cursor = c.query(&sql).fetch_bytes("TabSeparated")?;
                let bytes = cursor.collect().await?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        })
    }
}

fn insert<R>(sink: &mut ClickHouseSink, table: &'static str, rows: &[R]) -> Result<(), ClickHouseError>
where
    R: clickhouse::Row + clickhouse::RowWrite + serde::Serialize + Send + Sync,
    for<'a> R: clickhouse::Row<Value<'a> = R>,
{
    insert_refs(sink, table, &rows.iter().collect::<Vec<_>>())
}

fn insert_refs<R>(sink: &mut ClickHouseSink, table: &'static str, rows: &[&R]) -> Result<(), ClickHouseError>
where
    R: clickhouse::Row + clickhouse::RowWrite + serde::Serialize + Send + Sync,
    for<'a> R: clickhouse::Row<Value<'a> = R>,
{
    // Batched by size too: a flush after an outage (or the restored tables after a loss) can
    // hold millions of rows; each INSERT stays within `clickhouse.max_insert_rows`, so a request
    // stays well inside the timeout and its retry resends that part only.
    for part in rows.chunks(sink.max_insert_rows) {
        insert_part(sink, table, part)?;
    }
    Ok(())
}

/// Rows below which an INSERT refused for memory is retried as it is (the memory was the
/// server's, taken by other queries) rather than cut again.
pub const MIN_SPLIT_ROWS: usize = 1_000;

/// One INSERT of `part`; one that ClickHouse refuses for memory (code 241, the query's
/// `max_memory_usage` or the server's limit) or that does not finish in time (`timeout_ms`,
/// or the server's code 159 / 209) is sent again in two halves, down to [`MIN_SPLIT_ROWS`]: the
/// same INSERT retried would be refused, or cut off, for ever (a flush after an outage into a
/// slow or busy server, a low limit in the user's profile). Below that it is retried like any
/// overload. (A timed-out INSERT may have landed after all: its rows come again with the same
/// versions, which `FINAL` folds.)
fn insert_part<R>(sink: &mut ClickHouseSink, table: &'static str, part: &[&R]) -> Result<(), ClickHouseError>
where
    R: clickhouse::Row + clickhouse::RowWrite + serde::Serialize + Send + Sync,
    for<'a> R: clickhouse::Row<Value<'a> = R>,
{
    let splittable = part.len() >= 2 * MIN_SPLIT_ROWS;
    let too_large = |e: &clickhouse::error::Error| {
        use clickhouse::error::Error as E;
        splittable
            && match e {
                E::TimedOut => true,
                E::BadResponse(m) => ["Code: 241", "Code: 159", "Code: 209"].iter().any(|c| m.contains(c)),
                _ => false,
            }
    };
    let done = sink.retry_unless(&format!("insert into {table}"), too_large, |c| async move {
        let mut ins = c.insert::<R>(table).await?;
        for r in part {
            ins.write(*r).await?;
        }
        ins.end().await
    })?;
    if done.is_none() {
        let (first, second) = part.split_at(part.len() / 2);
        tracing::warn!(
            table,
            rows = part.len(),
            "clickhouse refused an insert for memory or it timed out; sending it in two halves"
        );
        insert_part(sink, table, first)?;
        insert_part(sink, table, second)?;
    }
    Ok(())
}

/// How long one statement of a start-up move may take at least (the request timeout applies
/// when longer).
const MOVE_TIMEOUT: Duration = Duration::from_secs(3_600);

/// Trade dates one INSERT may touch: ClickHouse refuses a block over more partitions than
/// `max_partitions_per_insert_block` (100 by default since 19.x; a book's positions re-valued at
/// the open can carry last fills on hundreds of dates).
pub const MAX_DATES_PER_INSERT: usize = 100;

/// Inserts `rows` of a table partitioned by trade date in blocks of at most
/// [`MAX_DATES_PER_INSERT`] dates each (one insert when they fit).
fn insert_partitioned<R>(sink: &mut ClickHouseSink, table: &'static str, rows: &[R]) -> Result<(), ClickHouseError>
where
    R: clickhouse::Row + clickhouse::RowWrite + serde::Serialize + Send + Sync + rows::Partitioned,
    for<'a> R: clickhouse::Row<Value<'a> = R>,
{
    for block in blocks_by_date(rows, MAX_DATES_PER_INSERT) {
        insert_refs(sink, table, &block)?;
    }
    Ok(())
}

/// `rows` cut into blocks of at most `max_dates` distinct trade dates (in date order when they
/// need more than one block; as they are otherwise).
fn blocks_by_date<R: rows::Partitioned>(rows: &[R], max_dates: usize) -> Vec<Vec<&R>> {
    let mut refs: Vec<&R> = rows.iter().collect();
    let dates: std::collections::BTreeSet<u16> = refs.iter().map(|r| r.trade_date()).collect();
    if dates.len() <= max_dates {
        return if refs.is_empty() { Vec::new() } else { vec![refs] };
    }
    refs.sort_by_key(|r| r.trade_date());
    let mut blocks: Vec<Vec<&R>> = Vec::new();
    let (mut block, mut in_block, mut last) = (Vec::new(), 0usize, None);
    for r in refs {
        let d = r.trade_date();
        if last != Some(d) {
            if in_block == max_dates {
                blocks.push(std::mem::take(&mut block));
                in_block = 0;
            }
            in_block += 1;
            last = Some(d);
        }
        block.push(r);
    }
    blocks.push(block);
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_insert_must_wait_for_the_write() {
        let with = |pairs: &[(&str, &str)]| ClickHouseConfig {
            settings: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        assert!(with(&[]).validate().is_ok());
        assert!(with(&[("async_insert", "1")]).validate().is_ok(), "waits by default");
        assert!(with(&[("async_insert", "1"), ("wait_for_async_insert", "1")]).validate().is_ok());
        assert!(with(&[("async_insert", "0"), ("wait_for_async_insert", "0")]).validate().is_ok());
        for (a, w) in [("1", "0"), ("true", "false"), ("True", " 0 ")] {
            let (key, message) = with(&[("async_insert", a), ("wait_for_async_insert", w)]).validate().unwrap_err();
            assert_eq!(key, "clickhouse.settings.wait_for_async_insert");
            assert!(message.contains("acknowledge"), "{message}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_not_shown() {
        assert_eq!(shown_url("https://analyst:hunter2@ch.example:8443/?x=1"), "https://***@ch.example:8443/?x=1");
        assert_eq!(shown_url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
        assert_eq!(shown_url("http://host/path@x"), "http://host/path@x");
        let c = ClickHouseConfig { url: "http://u:hunter2@h:8123".into(), ..ClickHouseConfig::default() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    struct Dated(u16);

    impl rows::Partitioned for Dated {
        fn trade_date(&self) -> u16 {
            self.0
        }
    }

    #[test]
    fn inserts_are_cut_to_at_most_100_trade_dates() {
        // 250 dates, three rows each, shuffled.
        let rows: Vec<Dated> = (0..750u16).map(|i| Dated(20_000 + (i * 7) % 250)).collect();
        let blocks = blocks_by_date(&rows, MAX_DATES_PER_INSERT);
        assert_eq!(blocks.len(), 3);
        let mut seen = Vec::new();
        for b in &blocks {
            let dates: std::collections::BTreeSet<u16> = b.iter().map(|r| r.0).collect();
            assert!(dates.len() <= MAX_DATES_PER_INSERT, "{}", dates.len());
            seen.extend(b.iter().map(|r| r.0));
        }
        seen.sort_unstable();
        let mut want: Vec<u16> = rows.iter().map(|r| r.0).collect();
        want.sort_unstable();
        assert_eq!(seen, want, "every row once");
        // A batch within the limit is one insert, as it came.
        let few: Vec<Dated> = (0..300u16).map(|i| Dated(20_000 + i % 100)).collect();
        let one = blocks_by_date(&few, MAX_DATES_PER_INSERT);
        assert_eq!(one.len(), 1);
        assert!(one[0].iter().zip(&few).all(|(a, b)| std::ptr::eq(*a, b)));
        assert!(blocks_by_date::<Dated>(&[], MAX_DATES_PER_INSERT).is_empty());
    }

    /// A server that accepts a request and never answers: the request is abandoned after the
    /// timeout and retried (counted), and the retry on a server that answers succeeds.
    #[test]
    fn a_request_left_unanswered_is_abandoned_and_retried() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            // The first connection is held open, unanswered; the next is answered.
            let (silent, _) = listener.accept().unwrap();
            let (mut answered, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = answered.read(&mut buf).unwrap();
            answered.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n1\n").unwrap();
            drop(silent);
        });
        let mut sink = ClickHouseSink {
            client: Client::default().with_url(&url),
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            max_backoff: Duration::from_millis(10),
            timeout: Some(Duration::from_millis(300)),
            max_insert_rows: 1_000,
            name: "clickhouse".into(),
            retries: Default::default(),
            closes_written: Default::default(),
        };
        assert_eq!(sink.query_text("SELECT 1").unwrap(), "1\n");
        assert_eq!(sink.retries(), 1, "the unanswered request was abandoned once");
        server.join().unwrap();
    }

    #[test]
    fn errors_worth_a_retry() {
        use clickhouse::error::Error as E;
        let bad = |m: &str| E::BadResponse(m.to_string());
        assert!(retriable(&bad(
            "Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts"
        )));
        assert!(!retriable(&bad(
            "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100)."
        )));
        assert!(!retriable(&bad("Code: 60. DB::Exception: Table harbour.nope doesn't exist")));
        assert!(retriable(&bad("503 Service Unavailable")));
        assert!(retriable(&bad("<html><body><h1>502 Bad Gateway</h1></body></html>")));
        assert!(!retriable(&bad("401 Unauthorized")));
        assert!(retriable(&bad("no healthy upstream")));
        assert!(retriable(&bad("upstream connect error or disconnect/reset before headers. reset reason: overflow")));
        assert!(retriable(&bad("Code: 394. DB::Exception: Query was cancelled")));
        assert!(!retriable(&bad("Code: 516. DB::Exception: default: Authentication failed")));
    }
}
