//! Kafka settings: broker, group, topic names and librdkafka pass-through properties.
//!
//! Secrets never sit in the TOML file: `sasl.password`, `ssl.key.password` and the like come from
//! the environment (`HARBOUR_KAFKA_SASL_PASSWORD`, `HARBOUR_KAFKA_SSL_KEY_PASSWORD`) or from a
//! `secrets_file` of `name=value` lines, and [`KafkaConfig`]'s `Debug` never prints them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::Deserialize;

use super::KafkaError;

/// Topic names of the input contract, and the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Fills and busts, keyed by account (a bust by the account of the fill it cancels).
    pub fills: String,
    /// Orders, keyed by account.
    pub orders: String,
    /// Quotes and closes, keyed by symbol.
    pub market: String,
    /// Instruments, keyed by symbol; read to its end before the other topics at start-up.
    pub instruments: String,
    /// Poison messages, with the reason and source position as headers.
    pub dead_letters: String,
    /// Risk limit alerts (JSON), keyed by alert id, written as epochs become durable.
    pub alerts: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            fills: "harbour.fills".into(),
            orders: "harbour.orders".into(),
            market: "harbour.market".into(),
            instruments: "harbour.instruments".into(),
            dead_letters: "harbour.dead-letters".into(),
            alerts: "harbour.alerts".into(),
        }
    }
}

impl Topics {
    /// The input topics, instruments first.
    pub fn inputs(&self) -> [&str; 4] {
        [&self.instruments, &self.fills, &self.orders, &self.market]
    }
}

/// `[kafka.lease]`: active/standby failover through a consumer group (see `Lease`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Take part in the lease: `kafka run` stands by until this process holds it. Default false
    /// (run at once, alone).
    pub enabled: bool,
    /// The one-partition topic whose assignment is the lease (created when missing). Default
    /// `harbour.lease`; the group is `<kafka.group_id>.lease`.
    pub topic: String,
    /// How long the broker waits for a silent holder before a standby takes over
    /// (`session.timeout.ms`; the broker's `group.min.session.timeout.ms`, 6 s by default, is
    /// the floor). Default 10000.
    pub session_timeout_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { enabled: false, topic: "harbour.lease".into(), session_timeout_ms: 10_000 }
    }
}

/// `[kafka]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`. Default `127.0.0.1:9092`; `HARBOUR_KAFKA_BOOTSTRAP` overrides it.
    pub bootstrap: String,
    /// Consumer group whose committed offsets follow the durable epochs. Default `harbour`.
    pub group_id: String,
    /// Topic names.
    pub topics: Topics,
    /// Partitions per topic when `harbour kafka produce` creates the topics. Default 4.
    pub partitions: i32,
    /// Extra librdkafka properties for every client (e.g. `security.protocol = "SASL_SSL"`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`). Secret ones are refused here.
    pub properties: BTreeMap<String, String>,
    /// A file of `name=value` librdkafka properties holding secrets (read at start, never logged).
    pub secrets_file: Option<PathBuf>,
    /// Active/standby failover.
    pub lease: LeaseConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap: "127.0.0.1:9092".into(),
            group_id: "harbour".into(),
            topics: Topics::default(),
            partitions: 4,
            properties: BTreeMap::new(),
            secrets_file: None,
            lease: LeaseConfig::default(),
        }
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("partitions", &self.partitions)
            .field("properties", &self.properties)
            .field("secrets_file", &self.secrets_file.as_ref().map(|_| "<set>"))
            .field("lease", &self.lease)
            .finish()
    }
}

/// Property names that carry secrets.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.ends_with(".key.pem") || n.contains("oauthbearer.config")
}

/// Environment variables read as secret properties.
pub const SECRET_ENV: [(&str, &str); 3] = [
    ("HARBOUR_KAFKA_SASL_PASSWORD", "sasl.password"),
    ("HARBOUR_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
    ("HARBOUR_KAFKA_SSL_KEYSTORE_PASSWORD", "ssl.keystore.password"),
];

impl KafkaConfig {
    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.bootstrap.trim().is_empty() {
            return Err(("kafka.bootstrap".into(), "must name at least one host:port".into()));
        }
        if self.group_id.trim().is_empty() {
            return Err(("kafka.group_id".into(), "must not be empty".into()));
        }
        if self.partitions < 1 {
            return Err(("kafka.partitions".into(), "must be at least 1".into()));
        }
        let t = &self.topics;
        for (k, v) in [
            ("fills", &t.fills),
            ("orders", &t.orders),
            ("market", &t.market),
            ("instruments", &t.instruments),
            ("dead_letters", &t.dead_letters),
            ("alerts", &t.alerts),
        ] {
            if v.trim().is_empty() {
                return Err((format!("kafka.topics.{k}"), "must not be empty".into()));
            }
        }
        let mut inputs = t.inputs().to_vec();
        inputs.sort_unstable();
        inputs.dedup();
        if inputs.len() != 4 {
            return Err(("kafka.topics".into(), "fills, orders, market and instruments need distinct topics".into()));
        }
        if self.lease.topic.trim().is_empty() {
            return Err(("kafka.lease.topic".into(), "must not be empty".into()));
        }
        if inputs.contains(&self.lease.topic.as_str()) {
            return Err(("kafka.lease.topic".into(), "must not be one of the input topics".into()));
        }
        if self.lease.session_timeout_ms < 1_000 {
            return Err(("kafka.lease.session_timeout_ms".into(), "must be at least 1000".into()));
        }
        if let Some(k) = self.properties.keys().find(|k| is_secret(k)) {
            return Err((
                format!("kafka.properties.{k}"),
                "is a secret: give it in kafka.secrets_file or the environment, not in the config".into(),
            ));
        }
        Ok(())
    }

    /// A librdkafka client configuration with the pass-through properties and the secrets.
    pub fn client(&self) -> Result<ClientConfig, KafkaError> {
        self.client_with(&[])
    }

    /// Like [`KafkaConfig::client`], starting from `defaults` that the configured properties override.
    pub fn client_with(&self, defaults: &[(&str, &str)]) -> Result<ClientConfig, KafkaError> {
        let mut c = ClientConfig::new();
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        if let Some(path) = &self.secrets_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| KafkaError::Config(format!("kafka.secrets_file {}: {e}", path.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (k, v) = line.split_once('=').ok_or_else(|| {
                    KafkaError::Config(format!(
                        "kafka.secrets_file {} line {}: expected name=value",
                        path.display(),
                        n + 1
                    ))
                })?;
                c.set(k.trim(), v.trim());
            }
        }
        for (var, prop) in SECRET_ENV {
            if let Ok(v) = std::env::var(var) {
                c.set(prop, v);
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_refused_in_properties_and_hidden_from_debug() {
        let mut c = KafkaConfig::default();
        c.properties.insert("sasl.password".into(), "hunter2".into());
        let (key, _) = c.validate().unwrap_err();
        assert_eq!(key, "kafka.properties.sasl.password");
        c.properties.clear();
        let dir = std::env::temp_dir().join(format!("harbour-secrets-{}", std::process::id()));
        std::fs::write(&dir, "# secrets\nsasl.password = hunter2\n").unwrap();
        c.secrets_file = Some(dir.clone());
        let client = c.client().unwrap();
        assert_eq!(client.get("sasl.password"), Some("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn topics_must_be_distinct() {
        let mut c = KafkaConfig::default();
        c.topics.orders = c.topics.fills.clone();
        assert_eq!(c.validate().unwrap_err().0, "kafka.topics");
    }

    #[test]
    fn lease_settings_name_their_key() {
        let mut c = KafkaConfig::default();
        c.lease.topic = c.topics.fills.clone();
        assert_eq!(c.validate().unwrap_err().0, "kafka.lease.topic");
        c.lease.topic = " ".into();
        assert_eq!(c.validate().unwrap_err().0, "kafka.lease.topic");
        c.lease = LeaseConfig { session_timeout_ms: 500, ..LeaseConfig::default() };
        assert_eq!(c.validate().unwrap_err().0, "kafka.lease.session_timeout_ms");
        c.lease.session_timeout_ms = 6_000;
        assert!(c.validate().is_ok());
    }
}
