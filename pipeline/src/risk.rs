//! `[risk]` settings and the files behind them: the close history (CSV) the volatilities,
//! correlations and historical scenarios come from, capital per account, and the limits file,
//! which is re-read while the pipeline runs.
//!
//! History: `date,symbol,close` lines (a header line is skipped), e.g. `2026-11-25,00700,385.200`.
//! Limits: a TOML file, see deploy/limits.toml and docs/risk.md:
//!
//! ```toml
//! hysteresis = "0.05"                              # default for every limit
//! [desk]
//! gross = { soft = "50000000", hard = "80000000" }
//! [account_default]
//! var = { soft = "250000", hard = "400000" }
//! [accounts."ACC-001"]
//! lots = { soft = "500", hard = "800", hysteresis = "0.1" }
//! [strategy_default]
//! [strategies.momentum]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use harbour_dataflows::model::Symbol;
use harbour_dataflows::risk::book::{History, LimitSet, Limits, Metric, Proxy, RiskConfig};
use harbour_dataflows::risk::limits::Limit;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;
use smol_str::SmolStr;

use crate::config::ConfigError;

/// `[risk]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskSection {
    /// EWMA decay of volatilities and correlations.
    pub lambda: f64,
    /// Horizon of the `*_horizon` VaR figures, in days.
    pub horizon_days: f64,
    /// Close history CSV (`date,symbol,close`). Without it, `harbour run` generates one for the
    /// sample day (`history_days` days) and other commands use today's moves alone.
    pub history: Option<PathBuf>,
    /// Days of history `harbour run` generates, and the days read from ClickHouse.
    pub history_days: usize,
    /// ClickHouse table of daily closes (`trade_date`, `symbol`, `close`) the history is read from
    /// when `history` is unset and ClickHouse is configured. Harbour fills `daily_closes` itself
    /// from the close messages it receives.
    pub history_table: String,
    /// What a symbol without closes in the history moves with: `market` (each past day's mean
    /// return of every symbol), a stock code with history (an index tracker, e.g. `02800`), or
    /// `none` (such a symbol adds nothing to VaR, ES or σ).
    pub proxy: String,
    /// The trade date whose previous days form the history (read from ClickHouse, or cut from the
    /// `history` file: its closes on or after this date are left out). Default: today in Hong Kong
    /// for ClickHouse; the whole file.
    pub as_of: Option<NaiveDate>,
    /// Capital per account, for leverage (decimal strings).
    pub nav: BTreeMap<String, Decimal>,
    /// The desk's capital.
    pub desk_nav: Option<Decimal>,
    /// Component-VaR contributors per risk row (0: none).
    pub contributors: usize,
    /// Which groups' rows carry contributors: any of `desk`, `strategy`, `account`.
    pub contributor_scopes: Vec<String>,
    /// The limits file (TOML); re-read when it changes.
    pub limits_file: Option<PathBuf>,
    /// How often to look at the limits file for changes.
    pub reload_ms: u64,
    /// Threads a refresh touching many groups spreads them over (a mark in a symbol most
    /// accounts hold); default: the machine's cores, at most 4. 1 keeps risk on its worker.
    pub threads: usize,
}

impl Default for RiskSection {
    fn default() -> Self {
        RiskSection {
            lambda: 0.94,
            horizon_days: 10.0,
            history: None,
            history_days: 250,
            history_table: "daily_closes".into(),
            proxy: "market".into(),
            as_of: None,
            nav: BTreeMap::new(),
            desk_nav: None,
            contributors: 5,
            contributor_scopes: vec!["desk".into(), "strategy".into()],
            limits_file: None,
            reload_ms: 1000,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.into(), message: message.into() }
}

impl RiskSection {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.lambda > 0.0 && self.lambda < 1.0) {
            return Err(key_err("risk.lambda", format!("{} is not in (0, 1)", self.lambda)));
        }
        if !(self.horizon_days >= 1.0 && self.horizon_days.is_finite()) {
            return Err(key_err("risk.horizon_days", "must be at least 1"));
        }
        for s in &self.contributor_scopes {
            if !["desk", "strategy", "account"].contains(&s.as_str()) {
                return Err(key_err("risk.contributor_scopes", format!("{s:?} is not desk, strategy or account")));
            }
        }
        if self.desk_nav.is_some_and(|v| v <= Decimal::ZERO) {
            return Err(key_err("risk.desk_nav", "must be positive"));
        }
        for (a, v) in &self.nav {
            if *v <= Decimal::ZERO {
                return Err(key_err(&format!("risk.nav.{a}"), "must be positive"));
            }
        }
        if !self.history_table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || self.history_table.is_empty()
        {
            return Err(key_err("risk.history_table", "must be a table name (letters, digits, `_`, `.`)"));
        }
        self.proxy()?;
        if self.threads == 0 {
            return Err(key_err("risk.threads", "must be at least 1"));
        }
        if self.reload_ms == 0 {
            return Err(key_err("risk.reload_ms", "must be at least 1"));
        }
        Ok(())
    }

    /// `risk.proxy` read.
    pub fn proxy(&self) -> Result<Proxy, ConfigError> {
        match self.proxy.as_str() {
            "market" => Ok(Proxy::Market),
            "none" => Ok(Proxy::None),
            code => Symbol::parse(code)
                .map(Proxy::Symbol)
                .ok_or_else(|| key_err("risk.proxy", format!("{code:?} is not market, none or a stock code"))),
        }
    }

    /// The risk book's settings with `history` (and the limits file read now); a proxy symbol
    /// the history has no closes of is refused naming `risk.proxy`.
    pub fn config(&self, history: History) -> Result<RiskConfig, ConfigError> {
        let history = history
            .with_proxy(self.proxy()?)
            .map_err(|p| key_err("risk.proxy", format!("{p} has no closes in the risk history")))?;
        let limits = match &self.limits_file {
            Some(p) => read_limits(p)?,
            None => Limits::default(),
        };
        let scopes = ["desk", "strategy", "account"];
        Ok(RiskConfig {
            lambda: self.lambda,
            horizon_days: self.horizon_days,
            history: Arc::new(history),
            nav: self.nav.iter().map(|(k, v)| (SmolStr::new(k), *v)).collect(),
            desk_nav: self.desk_nav,
            limits,
            contributors: self.contributors,
            contributor_scopes: scopes.into_iter().filter(|s| self.contributor_scopes.iter().any(|c| c == s)).collect(),
            threads: self.threads,
        })
    }

    /// The history from `risk.history`, if set: the closes before `risk.as_of` when that is set
    /// (a file that also holds the replayed day's own close must not give that day's move as
    /// history).
    pub fn load_history(&self) -> Result<Option<History>, ConfigError> {
        self.history.as_deref().map(|p| read_history_before(p, self.as_of)).transpose()
    }
}

/// Reads a `date,symbol,close` CSV.
pub fn read_history(path: &Path) -> Result<History, ConfigError> {
    read_history_before(path, None)
}

/// Reads a `date,symbol,close` CSV, keeping the closes before `before` when given.
pub fn read_history_before(path: &Path, before: Option<NaiveDate>) -> Result<History, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        key: "risk.history",
        path: path.into(),
        source: e,
    })?;
    let closes = parse_closes(&text, ',', &path.display().to_string())?;
    Ok(History::from_closes(closes.into_iter().filter(|(d, _, _)| before.is_none_or(|b| *d < b))))
}

/// Parses `date<sep>symbol<sep>close` lines (a first line starting with `date` is a header);
/// errors name `risk.history`, the origin and the line.
pub fn parse_closes(text: &str, sep: char, origin: &str) -> Result<Vec<(NaiveDate, Symbol, f64)>, ConfigError> {
    let bad = |n: usize, what: &str| key_err("risk.history", format!("{origin}:{n}: {what}"));
    let mut rows = Vec::new();
    // Line of each (date, symbol): a second close for one would silently replace the first.
    let mut lines: std::collections::HashMap<(NaiveDate, Symbol), usize> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || (n == 1 && line.starts_with("date")) {
            continue;
        }
        let mut f = line.split(sep).map(str::trim);
        let (Some(d), Some(s), Some(c), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(bad(n, "expected date,symbol,close"));
        };
        let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| bad(n, &format!("date {d:?}: {e}")))?;
        let symbol = Symbol::parse(s).ok_or_else(|| bad(n, &format!("symbol {s:?} is not a stock code")))?;
        let close: Decimal = c.parse().map_err(|_| bad(n, &format!("close {c:?} is not a decimal")))?;
        if close <= Decimal::ZERO {
            return Err(bad(n, "close must be positive"));
        }
        if let Some(first) = lines.insert((date, symbol), n) {
            return Err(bad(n, &format!("a second close of {s} on {date} (the first on line {first})")));
        }
        rows.push((date, symbol, close.to_f64().unwrap_or(0.0)));
    }
    Ok(rows)
}

/// The closes of the `days` trade dates before `as_of` from a ClickHouse table of daily closes.
pub fn clickhouse_history(
    sink: &mut harbour_sinks::clickhouse::ClickHouseSink,
    table: &str,
    as_of: NaiveDate,
    days: usize,
) -> Result<History, ConfigError> {
    let sql = format!(
        "SELECT toString(trade_date), symbol, toString(close) FROM {table} FINAL \
         WHERE trade_date IN (SELECT DISTINCT trade_date FROM {table} WHERE trade_date < toDate('{as_of}') \
         ORDER BY trade_date DESC LIMIT {days}) ORDER BY trade_date, symbol"
    );
    let text = sink.query_text(&sql).map_err(|e| key_err("risk.history_table", format!("reading {table}: {e}")))?;
    Ok(History::from_closes(parse_closes(&text, '\t', table)?))
}

/// Writes closes as the CSV [`read_history`] reads.
pub fn write_history(path: &Path, rows: &[(NaiveDate, Symbol, Decimal)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "date,symbol,close")?;
    for (d, s, c) in rows {
        writeln!(w, "{d},{s},{c}")?;
    }
    w.flush()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpec {
    soft: Decimal,
    hard: Option<Decimal>,
    hysteresis: Option<Decimal>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct LimitsFile {
    hysteresis: Option<Decimal>,
    desk: BTreeMap<String, LimitSpec>,
    account_default: BTreeMap<String, LimitSpec>,
    accounts: BTreeMap<String, BTreeMap<String, LimitSpec>>,
    strategy_default: BTreeMap<String, LimitSpec>,
    strategies: BTreeMap<String, BTreeMap<String, LimitSpec>>,
}

/// Parses limits from TOML text; errors name the key (`accounts.ACC-001.var.hard`).
pub fn parse_limits(text: &str, origin: &Path) -> Result<Limits, ConfigError> {
    // An empty file is what a reader sees in the middle of a non-atomic rewrite: never "no limits".
    if text.trim().is_empty() {
        return Err(ConfigError::Syntax { path: origin.into(), message: "the limits file is empty".into() });
    }
    let file: LimitsFile =
        toml::from_str(text).map_err(|e| ConfigError::Syntax { path: origin.into(), message: e.to_string() })?;
    let hysteresis = file.hysteresis.unwrap_or(Decimal::new(5, 2));
    if hysteresis.is_sign_negative() || hysteresis >= Decimal::ONE {
        return Err(key_err("hysteresis", format!("{hysteresis} is not a fraction in [0, 1)")));
    }
    let set = |prefix: &str, specs: BTreeMap<String, LimitSpec>| -> Result<LimitSet, ConfigError> {
        let mut out = LimitSet::new();
        for (name, s) in specs {
            let key = format!("{prefix}.{name}");
            let metric = Metric::parse(&name)
                .ok_or_else(|| key_err(&key, "unknown metric (gross, net, name_weight, lots, var, drawdown, loss)"))?;
            // Without a hard level only soft breaches are reported.
            let hard = s.hard.unwrap_or(Decimal::MAX);
            if s.soft <= Decimal::ZERO {
                return Err(key_err(&format!("{key}.soft"), "must be positive"));
            }
            if hard < s.soft {
                return Err(key_err(&format!("{key}.hard"), format!("{hard} is below soft {}", s.soft)));
            }
            let h = s.hysteresis.unwrap_or(hysteresis);
            if h.is_sign_negative() || h >= Decimal::ONE {
                return Err(key_err(&format!("{key}.hysteresis"), format!("{h} is not a fraction in [0, 1)")));
            }
            out.insert(metric, Limit { soft: s.soft, hard, hysteresis: h });
        }
        Ok(out)
    };
    let mut limits = Limits {
        desk: set("desk", file.desk)?,
        account_default: set("account_default", file.account_default)?,
        strategy_default: set("strategy_default", file.strategy_default)?,
        ..Limits::default()
    };
    for (a, specs) in file.accounts {
        let s = set(&format!("accounts.{a}"), specs)?;
        limits.accounts.insert(SmolStr::new(a), s);
    }
    for (n, specs) in file.strategies {
        let s = set(&format!("strategies.{n}"), specs)?;
        limits.strategies.insert(SmolStr::new(n), s);
    }
    Ok(limits)
}

/// Reads and parses a limits file.
pub fn read_limits(path: &Path) -> Result<Limits, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        key: "risk.limits_file",
        path: path.into(),
        source: e,
    })?;
    parse_limits(&text, path)
}

/// Watches the limits file: [`LimitsWatch::poll`] returns the limits it holds when its content
/// changed (the engine applies them when they differ from the limits in force). A change counts
/// once two looks in a row find the same content: a file written in place (`cat > limits.toml`)
/// can be caught half-written yet parse (its first tables only), which applied those alone and
/// cleared every breach of the rest until the next look (until 2026-11-28). Writing it with a
/// rename switches atomically; an empty file is refused.
#[derive(Debug)]
pub struct LimitsWatch {
    path: PathBuf,
    every: Duration,
    checked: Instant,
    seen: Option<String>,
    /// Content that differs from `seen`, found by the last look (applied if the next finds it too).
    settling: Option<String>,
}

impl LimitsWatch {
    /// Watches `path`, looking every `every`. Its first look reads the file whatever it held at
    /// the start: a restarted engine may run under the limits of its checkpoint or epoch log,
    /// not the file's.
    pub fn new(path: PathBuf, every: Duration) -> LimitsWatch {
        LimitsWatch { path, every, checked: Instant::now(), seen: None, settling: None }
    }

    /// New limits when the file's content changed since it was last read (an error when the new
    /// file is bad: the limits in force stay).
    pub fn poll(&mut self) -> Option<Result<Limits, ConfigError>> {
        if self.checked.elapsed() < self.every {
            return None;
        }
        self.checked = Instant::now();
        // A file gone, unreadable or not UTF-8 is an error (once per distinct error; the limits
        // in force stay): until 2026-11-28 it was skipped without a word.
        let now = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                let seen = format!("\0{e}");
                if self.seen.as_deref() == Some(seen.as_str()) {
                    return None;
                }
                self.seen = Some(seen);
                return Some(Err(ConfigError::File { key: "risk.limits_file", path: self.path.clone(), source: e }));
            }
        };
        if self.seen.as_deref() == Some(now.as_str()) {
            self.settling = None;
            return None;
        }
        // The first look applies what the file holds at once; a change waits for the next look.
        if self.seen.is_some() && self.settling.as_deref() != Some(now.as_str()) {
            self.settling = Some(now);
            return None;
        }
        self.settling = None;
        let parsed = parse_limits(&now, &self.path);
        self.seen = Some(now);
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbour_dataflows::rollups::Group;
    use rust_decimal_macros::dec;

    /// A fresh directory under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("harbour-risk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn limits_file_parses_and_errors_name_the_key() {
        let text = r#"
hysteresis = "0.1"
[desk]
gross = { soft = "1000", hard = "2000" }
[account_default]
var = { soft = "50" }
[accounts."ACC-001"]
var = { soft = "70", hard = "90", hysteresis = "0" }
"#;
        let l = parse_limits(text, Path::new("limits.toml")).unwrap();
        assert_eq!(l.desk[&Metric::Gross], Limit { soft: dec!(1000), hard: dec!(2000), hysteresis: dec!(0.1) });
        assert_eq!(l.of(&Group::Account("ACC-002".into()), Metric::Var).unwrap().soft, dec!(50));
        assert_eq!(l.of(&Group::Account("ACC-002".into()), Metric::Var).unwrap().hard, Decimal::MAX, "no hard level");
        assert_eq!(l.of(&Group::Account("ACC-001".into()), Metric::Var).unwrap().soft, dec!(70));
        assert_eq!(l.of(&Group::Strategy("x".into()), Metric::Var), None);
        let err = |t: &str| parse_limits(t, Path::new("l.toml")).unwrap_err().to_string();
        assert!(err("[accounts.A]\nvar = { soft = \"5\", hard = \"4\" }").contains("`accounts.A.var.hard`"));
        assert!(err("[desk]\nvarr = { soft = \"5\" }").contains("`desk.varr`"));
        assert!(err("[desk]\ngross = { soft = \"-5\" }").contains("`desk.gross.soft`"));
        assert!(err("hysteresis = \"1.5\"").contains("`hysteresis`"));
        assert!(err("  \n").contains("empty"));
    }

    #[test]
    fn history_csv_round_trips_and_bad_lines_are_named() {
        let p = scratch("history").join("h.csv");
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let rows = vec![
            (d("2026-11-23"), Symbol(700), dec!(380)),
            (d("2026-11-24"), Symbol(700), dec!(385.2)),
            (d("2026-11-25"), Symbol(700), dec!(390)),
        ];
        write_history(&p, &rows).unwrap();
        let h = read_history(&p).unwrap();
        assert_eq!(h.days(), 2);
        assert_eq!(h.prev_close(Symbol(700)), Some(390.0));
        assert!((h.returns(Symbol(700)).unwrap()[1] - (390.0 / 385.2 - 1.0)).abs() < 1e-12);
        // Cut at risk.as_of: the 25th's close is that day's own, not history.
        let before = read_history_before(&p, NaiveDate::from_ymd_opt(2026, 11, 25)).unwrap();
        assert_eq!((before.days(), before.prev_close(Symbol(700))), (1, Some(385.2)));
        std::fs::write(&p, "date,symbol,close\n2026-11-23,00700,380\n2026-11-24,ABC,1\n").unwrap();
        let e = read_history(&p).unwrap_err().to_string();
        assert!(e.contains("risk.history") && e.contains(":3:"), "{e}");
        // A second close for one (date, symbol) was kept over the first without a word.
        std::fs::write(&p, "date,symbol,close\n2026-11-24,00700,385.2\n2026-11-25,00700,390\n2026-11-24,00700,3852\n")
            .unwrap();
        let e = read_history(&p).unwrap_err().to_string();
        assert!(e.contains(":4:") && e.contains("the first on line 2"), "{e}");
        // A missing file names its key.
        let e = read_history(&p.with_file_name("gone.csv")).unwrap_err().to_string();
        assert!(e.starts_with("config key `risk.history`: cannot read"), "{e}");
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_proxy_is_market_none_or_a_code_with_history() {
        let history = || {
            History::from_closes([
                (1, Symbol(2800), 25.0),
                (2, Symbol(2800), 25.5),
                (1, Symbol(700), 380.0),
                (2, Symbol(700), 390.0),
            ])
        };
        let with = |proxy: &str| RiskSection { proxy: proxy.into(), ..RiskSection::default() };
        assert_eq!(with("market").proxy().unwrap(), Proxy::Market);
        assert_eq!(with("none").proxy().unwrap(), Proxy::None);
        // 9988 moves with 02800.
        let config = with("02800").config(history()).unwrap();
        assert_eq!(config.history.returns(Symbol(9988)), Some(&[25.5 / 25.0 - 1.0][..]));
        let e = with("HSI").validate().unwrap_err().to_string();
        assert!(e.contains("risk.proxy") && e.contains("\"HSI\""), "{e}");
        let e = with("09988").config(history()).unwrap_err().to_string();
        assert!(e.contains("risk.proxy") && e.contains("09988 has no closes"), "{e}");
    }

    #[test]
    fn the_watch_sees_a_changed_file() {
        let p = scratch("watch").join("limits.toml");
        std::fs::write(&p, "[desk]\ngross = { soft = \"10\" }\n").unwrap();
        let mut w = LimitsWatch::new(p.clone(), Duration::from_millis(0));
        // The first look reads the file (the engine keeps the limits in force when they are equal).
        assert_eq!(w.poll().unwrap().unwrap().desk[&Metric::Gross].soft, dec!(10));
        assert!(w.poll().is_none());
        // A change counts once two looks in a row find it: a file caught half-written (here its
        // first table only, which parses) is not applied.
        std::fs::write(&p, "[desk]\ngross = { soft = \"20\", hard = \"30\" }\n").unwrap();
        assert!(w.poll().is_none(), "half-written");
        std::fs::write(&p, "[desk]\ngross = { soft = \"20\", hard = \"30\" }\n[accounts.A]\nvar = { soft = \"5\" }\n")
            .unwrap();
        assert!(w.poll().is_none(), "changed again since the last look");
        let l = w.poll().unwrap().unwrap();
        assert_eq!(
            (l.desk[&Metric::Gross].hard, l.of(&Group::Account("A".into()), Metric::Var).unwrap().soft),
            (dec!(30), dec!(5))
        );
        assert!(w.poll().is_none());
        std::fs::write(&p, "[desk]\ngross = { soft = \"x\" }\n").unwrap();
        assert!(w.poll().is_none());
        assert!(w.poll().unwrap().is_err());
        // A file gone (or unreadable) is an error once, not skipped in silence; back, it is read.
        std::fs::rename(&p, p.with_extension("bak")).unwrap();
        let e = w.poll().unwrap().unwrap_err().to_string();
        assert!(e.starts_with("config key `risk.limits_file`: cannot read"), "{e}");
        assert!(w.poll().is_none(), "the same error again");
        std::fs::rename(p.with_extension("bak"), &p).unwrap();
        assert!(w.poll().is_none());
        assert!(w.poll().unwrap().is_err(), "the bad file is back");
        std::fs::write(&p, "[desk]\ngross = { soft = \"40\" }\n").unwrap();
        assert!(w.poll().is_none());
        assert_eq!(w.poll().unwrap().unwrap().desk[&Metric::Gross].soft, dec!(40));
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
