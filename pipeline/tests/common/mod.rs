//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;

use harbour::engine::{EngineConfig, OutputState};
use rust_decimal::Decimal;

/// The default schedules, marks and spread tables, with `epoch_events` lines per epoch.
pub fn engine_config(epoch_events: usize) -> EngineConfig {
    EngineConfig::new(epoch_events)
}

/// The sample day's risk settings: a generated close history and limits on every account, strategy
/// and the desk set where the day crosses them (soft at about the median, hard higher), so alerts
/// fire and clear.
pub fn risk_config(gen: &harbour_sources::generate::GenerateConfig) -> harbour_dataflows::risk::book::RiskConfig {
    use harbour_dataflows::risk::book::{History, Limits, Metric, RiskConfig};
    use harbour_dataflows::risk::limits::Limit;
    use rust_decimal::prelude::ToPrimitive;
    let rows = harbour_sources::generate::history(gen, &Default::default(), 120).unwrap();
    let history = History::from_closes(rows.into_iter().map(|(d, s, c)| (d, s, c.to_f64().unwrap())));
    let l = |soft: i64, hard: i64| Limit {
        soft: Decimal::from(soft),
        hard: Decimal::from(hard),
        hysteresis: Decimal::new(5, 2),
    };
    let set = |gross, var, dd| {
        [
            (Metric::Gross, l(gross, gross * 2)),
            (Metric::Var, l(var, var * 2)),
            (Metric::Drawdown, l(dd, dd * 3)),
            (Metric::Loss, l(dd, dd * 4)),
        ]
        .into_iter()
        .chain([(
            Metric::NameWeight,
            Limit { soft: Decimal::new(3, 1), hard: Decimal::new(6, 1), hysteresis: Decimal::new(5, 2) },
        )])
        .collect()
    };
    RiskConfig {
        history: Arc::new(history),
        limits: Limits {
            desk: set(20_000_000, 300_000, 200_000),
            account_default: set(5_000_000, 80_000, 50_000),
            strategy_default: set(6_000_000, 100_000, 60_000),
            ..Limits::default()
        },
        contributor_scopes: vec!["desk", "strategy", "account"],
        ..RiskConfig::default()
    }
}

/// Risk rows compare equal: every field when `path` (the same epochs were observed), else the
/// fields that are functions of the current positions (drawdown and event time follow the path);
/// VaR figures to a cent (float sums in another order).
pub fn assert_same_risk(got: &OutputState, want: &OutputState, path: bool, what: &str) {
    let strip = |s: &OutputState| -> Vec<harbour_dataflows::risk::book::RiskRow> {
        s.risk
            .rows()
            .cloned()
            .map(|mut r| {
                if !path {
                    (r.peak_pnl, r.drawdown, r.max_drawdown, r.ts) = Default::default();
                }
                r
            })
            .collect()
    };
    let (a, b) = (strip(got), strip(want));
    assert_eq!(a.len(), b.len(), "{what}: risk row counts");
    let cent = Decimal::new(1, 2);
    for (x, y) in a.iter().zip(&b) {
        let close = |p: Decimal, q: Decimal| (p - q).abs() <= cent;
        let figures = |r: &harbour_dataflows::risk::book::RiskRow| {
            [r.var_95, r.var_99, r.var_95_horizon, r.var_99_horizon, r.hist_var_95, r.hist_var_99, r.es_95, r.es_99]
        };
        assert!(
            figures(x).iter().zip(figures(y)).all(|(p, q)| close(*p, q)),
            "{what}: risk
  got  {x:?}
  want {y:?}"
        );
        let plain = |r: &harbour_dataflows::risk::book::RiskRow| {
            let mut r = r.clone();
            (r.var_95, r.var_99, r.var_95_horizon, r.var_99_horizon) = Default::default();
            (r.hist_var_95, r.hist_var_99, r.es_95, r.es_99) = Default::default();
            r.contributors.iter_mut().for_each(|c| c.1 = c.1.round_dp(1));
            r
        };
        let (px, py) = (plain(x), plain(y));
        let contributors_close = x.contributors.len() == y.contributors.len()
            && x.contributors.iter().zip(&y.contributors).all(|(p, q)| p.0 == q.0 && close(p.1, q.1));
        assert!(
            contributors_close && PartialEq::eq(&(RowSansContributors(&px)), &RowSansContributors(&py)),
            "{what}: risk\n  got  {x:?}\n  want {y:?}"
        );
    }
}

/// A risk row compared without its contributors (compared to a cent apart).
struct RowSansContributors<'a>(&'a harbour_dataflows::risk::book::RiskRow);

impl PartialEq for RowSansContributors<'_> {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (self.0.clone(), other.0.clone());
        a.contributors.clear();
        b.contributors.clear();
        a == b
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

/// What two runs of the same day may legitimately differ in, besides versions and source
/// positions (epochs are cut differently; offsets vs line numbers).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Nothing else.
    Exact,
    /// Market data came through OMD-C: instruments carry no sector, and market lines refused by
    /// the input rules are re-rendered JSON (dead letters compare by reason code).
    OmdC,
}

/// Compares every table (rows typed: decimals by value).
pub fn assert_same_tables(got: &OutputState, want: &OutputState, compare: Compare) {
    fn table<T: PartialEq + std::fmt::Debug>(name: &str, ours: Vec<T>, theirs: Vec<T>) {
        if let Some((a, b)) = ours.iter().zip(&theirs).find(|(a, b)| a != b) {
            panic!("table {name} differs first at\n  got  {a:?}\n  want {b:?}");
        }
        assert_eq!(ours.len(), theirs.len(), "table {name}: row count");
    }
    let omdc = compare == Compare::OmdC;
    let fills = |s: &OutputState| {
        let mut v: Vec<_> = s
            .fills
            .rows()
            .cloned()
            .map(|mut r| {
                std::sync::Arc::make_mut(&mut r.fill).source_seq = 0;
                r
            })
            .collect();
        v.sort_by(|a, b| a.fill.exec_id.cmp(&b.fill.exec_id));
        v
    };
    let orders = |s: &OutputState| {
        s.orders
            .rows()
            .cloned()
            .map(|(_, mut o)| {
                o.source_seq = 0;
                o
            })
            .collect::<Vec<_>>()
    };
    let instruments = |s: &OutputState| {
        s.instruments
            .rows()
            .cloned()
            .map(|mut i| {
                if omdc {
                    // OMD-C has no sectors, and names the spread table JSON lines leave out.
                    i.sector = None;
                    i.spread_table = None;
                }
                i
            })
            .collect::<Vec<_>>()
    };
    let dead = |s: &OutputState| {
        let mut v: Vec<(String, String)> = s
            .dead_letters
            .iter()
            .map(|d| (d.code.to_string(), if omdc { String::new() } else { d.raw.clone() }))
            .collect();
        v.sort();
        v
    };
    table("positions", got.positions.rows().collect(), want.positions.rows().collect());
    table("fills", fills(got), fills(want));
    table("rollups", got.rollups.rows().collect(), want.rollups.rows().collect());
    table("minutes", got.minutes.rows().collect(), want.minutes.rows().collect());
    table("orders", orders(got), orders(want));
    table("marks", got.marks.rows().collect(), want.marks.rows().collect());
    table("instruments", instruments(got), instruments(want));
    table("dead letters", dead(got), dead(want));
    table("trading status", got.status.rows().collect(), want.status.rows().collect());
    table("volatility", got.vol.rows().collect(), want.vol.rows().collect());
    if !omdc {
        // OMD-C instruments carry no sector; elsewhere risk rows agree (drawdowns follow the epochs).
        assert_same_risk(got, want, false, "risk");
    }
}

/// The SQL of a Grafana dashboard's ClickHouse panels as the data source plugin would send it:
/// `$__timeFilter(c)` over the whole range of a `DateTime`, each template variable set to every
/// value its own query returns (as when the user picks all of them, so the
/// `$__conditionalAll(condition, $var)` macros keep their conditions), `${var:sqlstring}` as quoted
/// values. `query` runs SQL and returns TabSeparated text. Returns (panel title, SQL).
pub fn grafana_clickhouse_sql(dashboard: &str, mut query: impl FnMut(&str) -> String) -> Vec<(String, String)> {
    let path = format!("{}/../deploy/grafana/dashboards/{dashboard}", env!("CARGO_MANIFEST_DIR"));
    let board: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let is_ch = |v: &serde_json::Value| v["datasource"]["type"] == "grafana-clickhouse-datasource";
    let mut vars: Vec<(String, String)> = Vec::new();
    for v in board["templating"]["list"].as_array().unwrap().iter().filter(|v| is_ch(v)) {
        let values: Vec<String> = query(v["query"].as_str().unwrap())
            .lines()
            .map(|l| format!("'{}'", l.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect();
        assert!(!values.is_empty(), "variable {} has no values", v["name"]);
        vars.push((v["name"].as_str().unwrap().to_owned(), values.join(", ")));
    }
    let mut out = Vec::new();
    for p in board["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap().iter().filter(|t| is_ch(t)) {
            let mut sql = t["rawSql"].as_str().unwrap().to_owned();
            while let Some(at) = sql.find("$__conditionalAll(") {
                let open = at + "$__conditionalAll".len();
                let (mut depth, mut comma, mut close) = (0, None, None);
                for (i, c) in sql[open..].char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 1 => {
                            close = Some(open + i);
                            break;
                        }
                        ')' => depth -= 1,
                        ',' if depth == 1 => comma = Some(open + i),
                        _ => {}
                    }
                }
                let (comma, close) = (comma.expect("a condition and a variable"), close.expect("closed"));
                let condition = sql[open + 1..comma].to_owned();
                sql.replace_range(at..=close, &format!("({condition})"));
            }
            while let Some(at) = sql.find("$__timeFilter(") {
                let close = at + sql[at..].find(')').unwrap();
                let column = sql[at + "$__timeFilter(".len()..close].trim().to_owned();
                sql.replace_range(
                    at..=close,
                    &format!("({column} >= toDateTime(0) AND {column} <= toDateTime(4102444800))"),
                );
            }
            for (name, values) in &vars {
                sql = sql.replace(&format!("${{{name}:sqlstring}}"), values);
            }
            assert!(!sql.contains('$'), "a macro or variable left in {sql}");
            out.push((p["title"].as_str().unwrap().to_owned(), sql));
        }
    }
    out
}

/// Copies an OMD-C capture to `out` with every `every`-th datagram of line A damaged (its PktSize,
/// so it does not decode; line B keeps the messages); returns how many were damaged.
pub fn damage_line_a(capture: &std::path::Path, out: &std::path::Path, every: usize) -> usize {
    use harbour_sources::hkex::capture::{CaptureReader, CaptureWriter};
    let records: Vec<_> =
        CaptureReader::new(std::fs::File::open(capture).unwrap(), |_| None).unwrap().map(Result::unwrap).collect();
    let mut w = CaptureWriter::new(std::fs::File::create(out).unwrap()).unwrap();
    let (mut broken, mut a_seen) = (0, 0);
    for mut r in records {
        if r.line == 0 {
            a_seen += 1;
            if a_seen % every == 0 {
                r.data[0] ^= 0x40;
                broken += 1;
            }
        }
        w.write(&r).unwrap();
    }
    w.finish().unwrap();
    broken
}
