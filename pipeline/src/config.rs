//! The TOML configuration, environment overrides, and validation that names the offending key.
//!
//! Load order: built-in defaults ← the TOML file (if given) ← environment variables
//! `HARBOUR__<SECTION>__<KEY>` (for example `HARBOUR__PIPELINE__EPOCH_EVENTS=5000`; values are
//! read as TOML scalars or arrays when they parse as such, else as strings). Unknown keys are
//! errors. A documented example lives at deploy/harbour.toml.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use harbour_dataflows::fees::CostSchedules;
use harbour_dataflows::marks::MarkPolicy;
use harbour_dataflows::ticks::SpreadTables;
use harbour_sinks::clickhouse::ClickHouseConfig;
use harbour_sinks::redis::RedisConfig;
use harbour_sources::generate::GenerateConfig;
use harbour_sources::kafka::KafkaConfig;
use serde::Deserialize;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "HARBOUR__";

/// Everything configurable.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Epochs, output folder.
    pub pipeline: PipelineConfig,
    /// The metrics and health server.
    pub metrics: MetricsConfig,
    /// How positions are marked.
    pub marks: MarksConfig,
    /// Dated cost schedules (replace the built-in ones when given).
    pub costs: Option<CostSchedules>,
    /// Dated spread tables (replace the built-in ones when given).
    pub spreads: Option<SpreadTables>,
    /// The sample day `harbour run` and `harbour generate` produce.
    pub generate: GenerateConfig,
    /// The Kafka input (`harbour kafka run`) and `harbour kafka produce`.
    pub kafka: KafkaConfig,
    /// The ClickHouse sink (enabled when `url` or `HARBOUR_CLICKHOUSE_URL` is set).
    pub clickhouse: ClickHouseConfig,
    /// The Redis sink (enabled when `url` or `HARBOUR_REDIS_URL` is set).
    pub redis: RedisConfig,
    /// Risk metrics: history, capital, limits.
    pub risk: crate::risk::RiskSection,
}

/// `[pipeline]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Input events per epoch (the unit of output versions and, later, of durable commits). Default 10000.
    pub epoch_events: usize,
    /// Output folder for Parquet files. Default `harbour-out`.
    pub out_dir: PathBuf,
    /// Kafka runs: an epoch is sealed after this many milliseconds even when not full. Default 20.
    pub epoch_max_ms: u64,
    /// Kafka runs: sinks are written and offsets committed at most this often. Default 1000.
    pub flush_ms: u64,
    /// Kafka runs: a checkpoint is written at most this often (and on stop). Default 30000.
    pub checkpoint_ms: u64,
    /// Kafka runs: the Parquet tables (rewritten whole from the state) are rewritten at most this
    /// often, and on stop; 0: only on stop. Default 60000.
    pub parquet_ms: u64,
    /// Kafka runs: the checkpoint folder (checkpoint, epoch log, committed marker). Default `harbour-state`.
    pub state_dir: PathBuf,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            epoch_events: 10_000,
            out_dir: PathBuf::from("harbour-out"),
            epoch_max_ms: 20,
            flush_ms: 1_000,
            checkpoint_ms: 30_000,
            parquet_ms: 60_000,
            state_dir: PathBuf::from("harbour-state"),
        }
    }
}

/// `[metrics]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address for `/metrics` and `/health`; empty disables the server. Default `127.0.0.1:9187`.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9187".into() }
    }
}

/// `[marks]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarksConfig {
    /// Price sources in order of preference: any of `last`, `mid`, `close`. Default all three in that order.
    pub policy: MarkPolicy,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file a key names (a history, a limits file) could not be read.
    #[error("config key `{key}`: cannot read {path}: {source}")]
    File {
        /// Dotted path of the key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has a bad value or is unknown.
    #[error("config key `{key}`: {message}")]
    Key {
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.into(), message: message.into() }
}

/// Loads the configuration from an optional file and the environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut doc = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_owned(), source })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Syntax { path: p.to_owned(), message: e.to_string() })?
        }
        None => toml::Table::new(),
    };
    apply_env(&mut doc, std::env::vars())?;
    let mut config = from_table(doc)?;
    // The variable deploy/kafka.sh exports.
    if let Ok(b) = std::env::var("HARBOUR_KAFKA_BOOTSTRAP") {
        config.kafka.bootstrap = b;
    }
    // The variable deploy/clickhouse.sh exports.
    if let Ok(u) = std::env::var("HARBOUR_CLICKHOUSE_URL") {
        config.clickhouse.url = u;
    }
    // The variable deploy/redis.sh exports.
    if let Ok(u) = std::env::var("HARBOUR_REDIS_URL") {
        config.redis.url = u;
    }
    Ok(config)
}

/// Parses a TOML table (after overrides) and validates it. A number, boolean or date where the
/// key wants text is taken as its text (an override `HARBOUR__KAFKA__GROUP_ID=2024` or
/// `HARBOUR__RISK__AS_OF=2026-11-25` reads as TOML first, so as a number or a date).
pub fn from_table(mut doc: toml::Table) -> Result<Config, ConfigError> {
    let mut first_error = None;
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(doc.clone())) {
            Ok(config) => {
                config.validate()?;
                return Ok(config);
            }
            Err(e) => {
                let key = e.path().to_string();
                let message = e.into_inner().to_string();
                let retried = value_at(&mut doc, &key).is_some_and(|v| {
                    let text = match v {
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        toml::Value::Datetime(d) => d.to_string(),
                        _ => return false,
                    };
                    *v = toml::Value::String(text);
                    true
                });
                let error = first_error.get_or_insert((key, message));
                if !retried {
                    return Err(key_err(&error.0, error.1.clone()));
                }
            }
        }
    }
    let (key, message) = first_error.expect("an error before giving up");
    Err(key_err(&key, message))
}

/// The value at a dotted key path, if the document has it.
fn value_at<'a>(doc: &'a mut toml::Table, path: &str) -> Option<&'a mut toml::Value> {
    let mut segments = path.split('.');
    let mut value = doc.get_mut(segments.next()?)?;
    for seg in segments {
        value = value.as_table_mut()?.get_mut(seg)?;
    }
    Some(value)
}

/// Applies `HARBOUR__SECTION__KEY=value` overrides onto the document.
pub fn apply_env(doc: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(key_err(&name, "environment override has an empty path segment"));
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let mut table = &mut *doc;
        for seg in &path[..path.len() - 1] {
            let entry = table.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| key_err(&path.join("."), "is not a table"))?;
        }
        table.insert(path[path.len() - 1].clone(), parsed);
    }
    Ok(())
}

impl Config {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pipeline.epoch_events == 0 {
            return Err(key_err("pipeline.epoch_events", "must be at least 1"));
        }
        if !self.metrics.listen.is_empty() {
            self.metrics
                .listen
                .parse::<SocketAddr>()
                .map_err(|e| key_err("metrics.listen", format!("{:?} is not host:port ({e})", self.metrics.listen)))?;
        }
        if self.marks.policy.0.is_empty() {
            return Err(key_err("marks.policy", "needs at least one of last, mid, close"));
        }
        if let Some(c) = &self.costs {
            if c.0.is_empty() {
                return Err(key_err("costs", "needs at least one schedule"));
            }
            for (i, s) in c.0.iter().enumerate() {
                for (name, v) in [
                    ("stamp_duty_rate", s.stamp_duty_rate),
                    ("sfc_levy_rate", s.sfc_levy_rate),
                    ("afrc_levy_rate", s.afrc_levy_rate),
                    ("trading_fee_rate", s.trading_fee_rate),
                    ("settlement_fee_rate", s.settlement_fee_rate),
                    ("commission_rate", s.commission_rate),
                ] {
                    if v.is_sign_negative() || v >= rust_decimal::Decimal::ONE {
                        return Err(key_err(&format!("costs[{i}].{name}"), format!("{v} is not a rate in [0, 1)")));
                    }
                }
                // Amounts: a negative one would make a fee negative (a maximum of −1 turned every
                // settlement fee into a credit), a minimum over the maximum made the maximum win.
                for (name, v) in [
                    ("settlement_fee_min", s.settlement_fee_min),
                    ("settlement_fee_max", s.settlement_fee_max),
                    ("commission_min", Some(s.commission_min)),
                ] {
                    if let Some(v) = v.filter(|v| v.is_sign_negative() && !v.is_zero()) {
                        return Err(key_err(&format!("costs[{i}].{name}"), format!("{v} is negative")));
                    }
                }
                if let (Some(min), Some(max)) = (s.settlement_fee_min, s.settlement_fee_max) {
                    if min > max {
                        return Err(key_err(
                            &format!("costs[{i}].settlement_fee_min"),
                            format!("{min} is above settlement_fee_max {max}"),
                        ));
                    }
                }
                // Two schedules from one date: which applies would depend on the file's order.
                if let Some(j) = c.0[..i].iter().position(|o| o.effective_from == s.effective_from) {
                    return Err(key_err(
                        &format!("costs[{i}].effective_from"),
                        format!("{} is also costs[{j}]'s: one schedule per date", s.effective_from),
                    ));
                }
            }
        }
        if let Some(s) = &self.spreads {
            if s.0.iter().all(|t| !t.codes.is_empty()) {
                return Err(key_err("spreads", "needs a table without `codes` (for instruments no table names)"));
            }
            for (i, t) in s.0.iter().enumerate() {
                if t.bands.is_empty() || t.bands.windows(2).any(|w| w[0].up_to >= w[1].up_to) {
                    return Err(key_err(&format!("spreads[{i}].bands"), "must be non-empty with ascending up_to"));
                }
                // A zero tick divided every price checked against it (a panic on the first line).
                if let Some(b) = t.bands.iter().find(|b| b.tick <= rust_decimal::Decimal::ZERO) {
                    return Err(key_err(
                        &format!("spreads[{i}].bands"),
                        format!("the band up to {} has tick {}: ticks must be positive", b.up_to, b.tick),
                    ));
                }
                // Two tables for one date and set of codes: which applies would depend on the order.
                let mut codes = t.codes.clone();
                codes.sort();
                if let Some(j) = s.0[..i].iter().position(|o| {
                    let mut theirs = o.codes.clone();
                    theirs.sort();
                    o.effective_from == t.effective_from && theirs == codes
                }) {
                    return Err(key_err(
                        &format!("spreads[{i}].effective_from"),
                        format!("{} is also spreads[{j}]'s, for the same codes: one table per date", t.effective_from),
                    ));
                }
            }
        }
        self.risk.validate()?;
        self.generate.validate().map_err(|e| key_err("generate", e.to_string()))?;
        self.kafka.validate().map_err(|(key, message)| key_err(&key, message))?;
        self.clickhouse.validate().map_err(|(key, message)| key_err(&key, message))?;
        self.redis.validate().map_err(|(key, message)| key_err(&key, message))?;
        for (key, v) in
            [("pipeline.flush_ms", self.pipeline.flush_ms), ("pipeline.epoch_max_ms", self.pipeline.epoch_max_ms)]
        {
            if v == 0 {
                return Err(key_err(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Cost schedules in force.
    pub fn cost_schedules(&self) -> CostSchedules {
        self.costs.clone().unwrap_or_default()
    }

    /// Spread tables in force.
    pub fn spread_tables(&self) -> SpreadTables {
        self.spreads.clone().unwrap_or_default()
    }

    /// The metrics address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.listen.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        from_table(text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse("").unwrap();
        assert_eq!(c.pipeline.epoch_events, 10_000);
        assert_eq!(c.cost_schedules(), CostSchedules::default());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[pipeline]\nepoch_events = \"many\"").unwrap_err().to_string();
        assert!(e.contains("pipeline.epoch_events"), "{e}");
        let e = parse("[pipeline]\nepoch_event = 5").unwrap_err().to_string();
        assert!(e.contains("epoch_event"), "{e}");
        let e = parse("[metrics]\nlisten = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("metrics.listen"), "{e}");
        let e = parse("[marks]\npolicy = [\"last\", \"vwap\"]").unwrap_err().to_string();
        assert!(e.contains("marks.policy"), "{e}");
        let e = parse("[pipeline]\nepoch_events = 0").unwrap_err().to_string();
        assert!(e.contains("pipeline.epoch_events"), "{e}");
        let bad_rate = r#"[[costs]]
name = "x"
effective_from = "2026-01-01"
stamp_duty_rate = "1.5"
sfc_levy_rate = "0"
afrc_levy_rate = "0"
trading_fee_rate = "0"
settlement_fee_rate = "0"
commission_rate = "0"
"#;
        let e = parse(bad_rate).unwrap_err().to_string();
        assert!(e.contains("costs[0].stamp_duty_rate"), "{e}");
        let good = bad_rate.replace("\"1.5\"", "\"0.001\"");
        assert!(parse(&good).is_ok());
        let e = parse(&format!("{good}settlement_fee_max = \"-1\"\n")).unwrap_err().to_string();
        assert!(e.contains("costs[0].settlement_fee_max") && e.contains("negative"), "{e}");
        let e = parse(&format!("{good}settlement_fee_min = \"100\"\nsettlement_fee_max = \"2\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("costs[0].settlement_fee_min") && e.contains("above"), "{e}");
        let e = parse(&format!("{good}\n{good}")).unwrap_err().to_string();
        assert!(e.contains("costs[1].effective_from"), "{e}");
        let table = "[[spreads]]\neffective_from = \"2025-08-04\"\nbands = [{up_to = \"9995\", tick = \"0.01\"}]\n";
        assert!(parse(table).is_ok());
        let e = parse(&table.replace("\"0.01\"", "\"0\"")).unwrap_err().to_string();
        assert!(e.contains("spreads[0].bands") && e.contains("positive"), "{e}");
        let e = parse(&format!("{table}{table}")).unwrap_err().to_string();
        assert!(e.contains("spreads[1].effective_from"), "{e}");
        let e = parse("[clickhouse.settings]\nasync_insert = 1\nwait_for_async_insert = 0").unwrap_err().to_string();
        assert!(e.contains("clickhouse.settings.wait_for_async_insert"), "{e}");
        assert!(parse("[clickhouse.settings]\nasync_insert = 1").is_ok());
        let e = parse("[redis]\nstream_maxlen = 0").unwrap_err().to_string();
        assert!(e.contains("redis.stream_maxlen"), "{e}");
    }

    #[test]
    fn the_documented_example_config_parses_to_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/harbour.toml")).unwrap();
        let c = parse(&text).unwrap();
        let d = parse("").unwrap();
        assert_eq!(c.pipeline.flush_ms, d.pipeline.flush_ms);
        assert_eq!(c.pipeline.state_dir, d.pipeline.state_dir);
        assert_eq!(c.kafka.topics, d.kafka.topics);
        assert_eq!(c.kafka.group_id, d.kafka.group_id);
        let e = parse("[kafka.properties]\n\"sasl.password\" = \"x\"").unwrap_err().to_string();
        assert!(e.contains("kafka.properties.sasl.password"), "{e}");
    }

    #[test]
    fn environment_overrides_win() {
        let mut doc: toml::Table = "[pipeline]\nepoch_events = 5".parse().unwrap();
        let vars = [
            ("HARBOUR__PIPELINE__EPOCH_EVENTS".to_string(), "77".to_string()),
            ("HARBOUR__METRICS__LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        apply_env(&mut doc, vars.into_iter()).unwrap();
        let c = from_table(doc).unwrap();
        assert_eq!(c.pipeline.epoch_events, 77);
        assert_eq!(c.metrics.listen, "127.0.0.1:0");
    }

    /// An override reads as TOML first: a number, a date or a boolean where the key wants text is
    /// taken as its text (a numeric group id, a date written bare), where a number is wanted it
    /// stays one, and text where a number is wanted is still refused, naming the key.
    #[test]
    fn overrides_that_read_as_numbers_or_dates_fill_text_keys() {
        let vars = [
            ("HARBOUR__KAFKA__GROUP_ID".to_string(), "2024".to_string()),
            ("HARBOUR__RISK__AS_OF".to_string(), "2026-11-25".to_string()),
            ("HARBOUR__KAFKA__TOPICS__FILLS".to_string(), "true".to_string()),
            ("HARBOUR__PIPELINE__EPOCH_EVENTS".to_string(), "300".to_string()),
        ];
        let mut doc = toml::Table::new();
        apply_env(&mut doc, vars.into_iter()).unwrap();
        let c = from_table(doc).unwrap();
        assert_eq!(c.kafka.group_id, "2024");
        assert_eq!(c.risk.as_of, chrono::NaiveDate::from_ymd_opt(2026, 11, 25));
        assert_eq!(c.kafka.topics.fills, "true");
        assert_eq!(c.pipeline.epoch_events, 300);
        let mut doc = toml::Table::new();
        apply_env(&mut doc, [("HARBOUR__PIPELINE__EPOCH_EVENTS".to_string(), "many".to_string())].into_iter()).unwrap();
        let e = from_table(doc).unwrap_err().to_string();
        assert!(e.contains("pipeline.epoch_events"), "{e}");
    }
}
