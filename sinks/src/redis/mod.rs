//! Redis: the live feed. Latest state in hashes, a stream of changes per kind, writes fenced by
//! version.
//!
//! ```text
//!  Changes since the last flush ──► newest row per key ──► WATCH harbour:sink:epoch, GET it
//!   every row newer than the marker (fresh)      some row at or below it (a replay)
//!   MULTI                                        MULTI
//!     HSET, PEXPIRE, XADD per row                  EVALSHA fence.lua (per 500 rows: write each
//!     SET harbour:sink:epoch                         hash only if its version is newer, then
//!   EXEC (refused if the marker moved: again)        TTL and XADD); EVALSHA max-epoch
//!                                                EXEC
//!  ──► durable: the epoch marker and the epoch's writes land in one atomic step
//! ```
//!
//! Keys and streams are documented for consumers in docs/redis.md (positions, account, strategy
//! and desk roll-ups, prices, quotes, instruments, trading status, volatility, risk, alerts; a
//! stream per kind, `harbour:stream:*`, XADD with MAXLEN ~; the table is built in `keys.rs`).
//! Each hash holds the row's fields, its `version` and, for rows that no longer exist,
//! `deleted = 1`. A replay, or an out-of-order retry, writes nothing: the fence keeps the newer
//! version, and its stream entry is not repeated.

mod keys;

use std::time::Duration;

use rand::Rng;
use redis::{Client, Connection, Script};
use serde::Deserialize;

pub use keys::{fields_of_position, position_key};

use crate::tables::Changes;

/// `[redis]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS) URL; empty disables the sink. `HARBOUR_REDIS_URL` overrides it.
    pub url: String,
    /// File holding the password (never logged); `HARBOUR_REDIS_PASSWORD` works too.
    pub password_file: Option<std::path::PathBuf>,
    /// TTL of position hashes, milliseconds (0: none). Default 30000 (the seed's portfolio views).
    pub position_ttl_ms: u64,
    /// TTL of account and strategy roll-ups. Default 30000.
    pub portfolio_ttl_ms: u64,
    /// TTL of prices (marks). Default 10000.
    pub price_ttl_ms: u64,
    /// TTL of instrument reference data. Default 86400000 (a day).
    pub instrument_ttl_ms: u64,
    /// TTL of an alert hash (`harbour:alert:{id}`).
    pub alert_ttl_ms: u64,
    /// TTL of the latest quote per symbol (market data). Default 300000 (5 minutes).
    pub quote_ttl_ms: u64,
    /// Approximate length each stream is trimmed to. Default 100000.
    pub stream_maxlen: u64,
    /// Longest pause between retries while Redis is unreachable, milliseconds. Default 5000.
    pub max_backoff_ms: u64,
    /// How long one command or transaction may wait on the socket before the connection is
    /// dropped and the write retried, milliseconds (0: no limit). Default 30000: a Redis that
    /// stopped answering (a paused process, a network dropping packets) would otherwise hold the
    /// write forever, unseen by the retry metric.
    pub timeout_ms: u64,
    /// The sink is written at most this often, in milliseconds; 0 (the default): every epoch,
    /// for freshness.
    pub flush_ms: u64,
    /// Also PUBLISH each applied change (`<key> <version>`) on a channel named like its stream,
    /// for fire-and-forget listeners. Default false.
    pub publish: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            password_file: None,
            position_ttl_ms: 30_000,
            portfolio_ttl_ms: 30_000,
            price_ttl_ms: 10_000,
            instrument_ttl_ms: 86_400_000,
            alert_ttl_ms: 86_400_000,
            quote_ttl_ms: 300_000,
            stream_maxlen: 100_000,
            max_backoff_ms: 5_000,
            timeout_ms: 30_000,
            flush_ms: 0,
            publish: false,
        }
    }
}

impl RedisConfig {
    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        // `XADD … MAXLEN ~ 0` trims a stream to nothing: a reader that looks a moment later
        // finds no change at all.
        if self.stream_maxlen == 0 {
            return Err((
                "redis.stream_maxlen".into(),
                "must be at least 1 (0 trims every stream to nothing as it is written)".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show its host part only.
        let host = self.url.rsplit('@').next().unwrap_or_default();
        f.debug_struct("RedisConfig")
            .field("url", &host)
            .field("password_file", &self.password_file.as_ref().map(|_| "<set>"))
            .field("position_ttl_ms", &self.position_ttl_ms)
            .field("price_ttl_ms", &self.price_ttl_ms)
            .finish()
    }
}

/// Errors of the Redis sink.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Retrying cannot help (a script error, a wrong type at a key).
    #[error("redis {what}: {message}")]
    Permanent {
        /// What was being done.
        what: &'static str,
        /// Redis's answer.
        message: String,
    },
    /// Bad settings.
    #[error("redis config: {0}")]
    Config(String),
    /// Redis holds less than it acknowledged: its epoch marker went back (restarted without its
    /// data, or lost the last second of its append-only file). A restart of the pipeline writes
    /// the restored tables again.
    #[error(
        "redis lost acknowledged writes: its epoch marker is {marker}, epoch {acknowledged} was acknowledged; \
         restart the pipeline to write its tables again"
    )]
    Lost {
        /// The marker found.
        marker: u64,
        /// The newest epoch Redis had acknowledged.
        acknowledged: u64,
    },
}

const EPOCH_KEY: &str = "harbour:sink:epoch";
/// Rows per fence-script call.
const ROWS_PER_CALL: usize = 500;
const MAX_EPOCH: &str = "local held = tonumber(redis.call('GET', KEYS[1]) or '0') \
     if held < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0";

/// The sink.
pub struct RedisSink {
    client: Client,
    conn: Option<Connection>,
    fence: Script,
    max_epoch: Script,
    config: RedisConfig,
    /// Failed attempts so far.
    retries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Rows the fence refused (older versions, or equal ones with the content held) in the last write.
    pub fenced: u64,
    /// Writes that took the fresh way (every row newer than the marker: no per-row check).
    pub fresh_writes: u64,
    /// The newest epoch Redis acknowledged to this sink (its marker must not go below it).
    acknowledged: u64,
    /// Whether a connection was ever made (until then, a `rediss://` address is first checked
    /// for a plain Redis behind it: [`plain_redis_behind`]).
    connected_once: bool,
}

/// Bytes of commands gathered before they are sent (the fresh way streams a write in pieces of
/// this size instead of building it whole: no buffer grows with the write).
const SEND_BYTES: usize = 1 << 20;

/// Sends the fresh way of [`RedisSink::write`] (the caller has watched and read the marker):
/// MULTI, each row with plain commands (the same effect as the fence script applying it), the
/// marker, EXEC. Returns false when Redis refused EXEC because the marker moved meanwhile.
fn write_fresh(
    conn: &mut Connection,
    writes: &[keys::Write],
    epoch: u64,
    maxlen: u64,
    publish: bool,
) -> redis::RedisResult<bool> {
    let mut out = Sender { buf: Vec::new(), sent: 0 };
    out.push(conn, &redis::cmd("MULTI"))?;
    for w in writes {
        // A deleted row has no fields: its hash becomes a tombstone.
        let mut hset = redis::cmd("HSET");
        hset.arg(&w.key).arg("version").arg(w.version);
        if w.deleted {
            out.push(conn, redis::cmd("DEL").arg(&w.key))?;
            hset.arg("deleted").arg("1");
        }
        for (f, v) in &w.fields {
            hset.arg(*f).arg(v);
        }
        out.push(conn, &hset)?;
        if !w.deleted {
            out.push(conn, redis::cmd("HDEL").arg(&w.key).arg("deleted"))?;
        }
        if w.ttl_ms > 0 {
            out.push(conn, redis::cmd("PEXPIRE").arg(&w.key).arg(w.ttl_ms))?;
        } else {
            // No expiry: also none left from a TTL configured before (HSET keeps a key's TTL).
            out.push(conn, redis::cmd("PERSIST").arg(&w.key))?;
        }
        let mut xadd = redis::cmd("XADD");
        xadd.arg(w.stream).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
        xadd.arg("key").arg(&w.key).arg("version").arg(w.version).arg("deleted").arg(if w.deleted { "1" } else { "0" });
        for (f, v) in &w.fields {
            xadd.arg(*f).arg(v);
        }
        out.push(conn, &xadd)?;
        if publish {
            out.push(conn, redis::cmd("PUBLISH").arg(w.stream).arg(format!("{} {}", w.key, w.version)))?;
        }
    }
    out.push(conn, redis::cmd("SET").arg(EPOCH_KEY).arg(epoch))?;
    out.push(conn, &redis::cmd("EXEC"))?;
    out.flush(conn)?;
    // Every reply but EXEC's is +OK/+QUEUED, or an error for a command refused while queueing
    // (then EXEC is refused too): read them all so the connection stays in step.
    let mut refused = None;
    for _ in 1..out.sent {
        if let redis::Value::ServerError(e) = conn.recv_response()? {
            refused.get_or_insert(e);
        }
    }
    let exec = conn.recv_response()?;
    if let Some(e) = refused {
        return Err(e.into());
    }
    match exec {
        redis::Value::Nil => Ok(false),
        v => v.extract_error().map(|_| true),
    }
}

/// Commands packed into one buffer, sent whenever it passes [`SEND_BYTES`].
struct Sender {
    buf: Vec<u8>,
    sent: usize,
}

impl Sender {
    fn push(&mut self, conn: &mut Connection, cmd: &redis::Cmd) -> redis::RedisResult<()> {
        cmd.write_packed_command(&mut self.buf);
        self.sent += 1;
        if self.buf.len() >= SEND_BYTES {
            self.flush(conn)?;
        }
        Ok(())
    }

    fn flush(&mut self, conn: &mut Connection) -> redis::RedisResult<()> {
        conn.send_packed_command(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

/// Errors a wait (and a new connection) can cure: the connection, a server loading its data, a
/// replica that is (still or again) read-only or without its primary during a failover, scripts
/// flushed from under the connection (a new one loads them again), and memory full under
/// `noeviction` (keys expire meanwhile; the transaction is refused whole, nothing half-written).
fn retriable(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as K;
    // A certificate the client refuses (unknown issuer, expired, another host's name) stays
    // refused: a setting to fix (`redis.url`, its `#insecure`, the system's CA store).
    if tls_refused(e) {
        return false;
    }
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                K::BusyLoading | K::TryAgain | K::ReadOnly | K::MasterDown | K::ClusterDown | K::NoScript
            )
        )
        || e.code() == Some("OOM")
        || e.to_string().contains("OOM command not allowed")
}

/// Whether `e` is a TLS handshake that failed on the server's certificate.
fn tls_refused(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    text.contains("SSL Handshake error")
        && ["certificate verify failed", "hostname mismatch", "certificate has expired", "self-signed certificate"]
            .iter()
            .any(|c| text.contains(c))
}

/// Whether `host:port` answers plain Redis: an inline `PING` gets a RESP reply (`+PONG`, or an
/// error such as `-NOAUTH`) where a TLS port answers with an alert or closes. redis-rs's TLS
/// handshake has no timeout of its own: against a plain port (`rediss://` given for a
/// `redis://` server) it waits for ever, or fails as an I/O error that would be retried for ever.
/// Anything but a RESP reply within 2 s (including a refused connection) is left to the real
/// connection to report.
fn plain_redis_behind(host: &str, port: u16) -> redis::RedisResult<bool> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let wait = Duration::from_secs(2);
    for addr in (host, port).to_socket_addrs()? {
        let Ok(mut socket) = std::net::TcpStream::connect_timeout(&addr, wait) else {
            continue;
        };
        socket.set_read_timeout(Some(wait))?;
        socket.set_write_timeout(Some(wait))?;
        if socket.write_all(b"PING\r\n").is_err() {
            return Ok(false);
        }
        let mut first = [0u8; 1];
        return Ok(matches!(socket.read(&mut first), Ok(1) if first[0] == b'+' || first[0] == b'-'));
    }
    Ok(false)
}

impl RedisSink {
    /// A sink for `config.url` (the config loader applies `HARBOUR_REDIS_URL`; the password comes
    /// from `HARBOUR_REDIS_PASSWORD` or `password_file`).
    pub fn connect(config: &RedisConfig) -> Result<RedisSink, RedisError> {
        if config.url.is_empty() {
            return Err(RedisError::Config("redis.url is empty".into()));
        }
        let mut info: redis::ConnectionInfo = config
            .url
            .as_str()
            .parse()
            .map_err(|e: redis::RedisError| RedisError::Config(format!("redis.url: {e}")))?;
        let password = match (std::env::var("HARBOUR_REDIS_PASSWORD"), &config.password_file) {
            (Ok(p), _) => Some(p),
            (_, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| RedisError::Config(format!("redis.password_file {}: {e}", f.display())))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        if let Some(p) = password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(|e| RedisError::Config(e.to_string()))?;
        let mut sink = RedisSink {
            client,
            conn: None,
            fence: Script::new(include_str!("fence.lua")),
            max_epoch: Script::new(MAX_EPOCH),
            config: config.clone(),
            acknowledged: 0,
            retries: Default::default(),
            fenced: 0,
            fresh_writes: 0,
            connected_once: false,
        };
        sink.with_retry("connecting", |_, _| Ok(()))?;
        sink.check_eviction()?;
        tracing::info!(url = %config.url.rsplit('@').next().unwrap_or_default(), "redis sink ready");
        Ok(sink)
    }

    fn with_retry<T>(
        &mut self,
        what: &'static str,
        mut f: impl FnMut(&mut Connection, &RedisSink) -> redis::RedisResult<T>,
    ) -> Result<T, RedisError> {
        let mut backoff = Duration::from_millis(50);
        let max = Duration::from_millis(self.config.max_backoff_ms.max(10));
        loop {
            let attempt = (|| {
                if self.conn.is_none() {
                    if !self.connected_once {
                        if let redis::ConnectionAddr::TcpTls { host, port, .. } =
                            self.client.get_connection_info().addr()
                        {
                            if plain_redis_behind(host, *port)? {
                                return Err(redis::RedisError::from((
                                    redis::ErrorKind::InvalidClientConfig,
                                    "not a TLS port",
                                    format!(
                                        "{host}:{port} answers plain Redis where rediss:// (TLS) was \
                                         given: use redis://, or the server's tls-port"
                                    ),
                                )));
                            }
                        }
                    }
                    let mut c = self.client.get_connection_with_timeout(Duration::from_secs(5))?;
                    // (The connect timeout is not kept for the commands: set theirs.)
                    let timeout = Some(Duration::from_millis(self.config.timeout_ms)).filter(|t| !t.is_zero());
                    c.set_read_timeout(timeout)?;
                    c.set_write_timeout(timeout)?;
                    // Scripts are loaded once per connection, before any MULTI uses them.
                    self.fence.prepare_invoke().load(&mut c)?;
                    self.max_epoch.prepare_invoke().load(&mut c)?;
                    self.conn = Some(c);
                    self.connected_once = true;
                }
                let mut conn = self.conn.take().expect("connected above");
                let r = f(&mut conn, self);
                self.conn = Some(conn);
                r
            })();
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) if retriable(&e) => {
                    self.conn = None;
                    self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.5)).min(max);
                    tracing::warn!(what, error = %e, retry_in_ms = wait.as_millis() as u64, "redis unavailable, retrying");
                    std::thread::sleep(wait);
                    backoff = (backoff * 2).min(max);
                }
                Err(e) if tls_refused(&e) => {
                    return Err(RedisError::Config(format!("redis.url: the server's certificate was refused: {e}")))
                }
                Err(e) if e.kind() == redis::ErrorKind::InvalidClientConfig => {
                    let text = e.to_string();
                    return Err(RedisError::Config(format!("redis.url: {}", e.detail().unwrap_or(&text))));
                }
                Err(e) => return Err(RedisError::Permanent { what, message: e.to_string() }),
            }
        }
    }

    /// Refuses a Redis that may evict keys without a TTL under memory pressure (`maxmemory` set
    /// with an `allkeys-*` policy): it would evict the durable-epoch marker, and every write
    /// after that stops the pipeline as [`RedisError::Lost`]; with no `maxmemory` such a policy
    /// is only warned about (setting one later starts evicting). A server that refuses `CONFIG`
    /// (managed services) is not checked.
    fn check_eviction(&mut self) -> Result<(), RedisError> {
        let read = |conn: &mut Connection, name: &str| -> redis::RedisResult<String> {
            let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(conn)?;
            Ok(pair.get(1).cloned().unwrap_or_default())
        };
        let outcome = self.with_retry("reading the eviction policy", |conn, _| {
            Ok(match (read(conn, "maxmemory-policy"), read(conn, "maxmemory")) {
                (Ok(policy), Ok(max)) => Some((policy, max.parse::<u64>().unwrap_or(0))),
                (Err(e), _) | (_, Err(e)) if retriable(&e) => return Err(e),
                _ => None,
            })
        })?;
        match outcome {
            Some((policy, max)) if policy.starts_with("allkeys-") && max > 0 => Err(RedisError::Config(format!(
                "redis.url: the server evicts any key under memory pressure (maxmemory-policy {policy}, \
                 maxmemory {max}), the durable-epoch marker {EPOCH_KEY} included: set maxmemory-policy to \
                 noeviction or a volatile-* policy (Harbour's hashes carry TTLs; the marker has none)"
            ))),
            Some((policy, _)) if policy.starts_with("allkeys-") => {
                tracing::warn!(
                    policy,
                    "redis evicts any key once a maxmemory is set; the durable-epoch marker would go too"
                );
                Ok(())
            }
            Some(_) => Ok(()),
            None => {
                tracing::debug!("redis refused CONFIG GET: eviction policy not checked");
                Ok(())
            }
        }
    }

    /// Writes `changes` and moves the durable epoch marker to `epoch`, in one MULTI/EXEC; returns
    /// once Redis acknowledged it. Returns how many rows were applied (the others were fenced).
    ///
    /// Two ways, both atomic with the marker and both under `WATCH harbour:sink:epoch`:
    /// - **fresh** (the usual case): every row's version is above the marker. Every stored row
    ///   has a version at or below the marker (rows and marker move together, and no row is newer
    ///   than the epoch written with it), so each row is newer than what its key holds and is
    ///   written with plain commands (HSET, PEXPIRE, XADD), no per-row check needed. Should another
    ///   writer move the marker meanwhile, EXEC is refused and the write is judged again.
    /// - **replay** (some row at or below the marker: a restart re-sending epochs Redis holds):
    ///   the fence script checks each row's version and writes only newer ones.
    pub fn write(&mut self, epoch: u64, changes: &Changes) -> Result<u64, RedisError> {
        let writes = keys::writes(changes, &self.config);
        let (fence_sha, epoch_sha) = (self.fence.get_hash().to_string(), self.max_epoch.get_hash().to_string());
        let (maxlen, publish) = (self.config.stream_maxlen, self.config.publish);
        let min_version = writes.iter().map(|w| w.version).min().unwrap_or(u64::MAX);
        let max_version = writes.iter().map(|w| w.version).max().unwrap_or(0);
        debug_assert!(max_version <= epoch || writes.is_empty(), "a row newer than its epoch");
        let acknowledged = self.acknowledged;
        let lost = std::cell::Cell::new(None);
        let (applied, fresh) = self.with_retry("writing an epoch", |conn, _| {
            redis::transaction(conn, &[EPOCH_KEY], |conn, p| {
                // No marker (a new Redis, or one that lost the key): nothing is known of what the
                // hashes hold, so the fence judges every row.
                let held: Option<u64> = redis::cmd("GET").arg(EPOCH_KEY).query(conn)?;
                if held.unwrap_or(0) < acknowledged {
                    lost.set(held.or(Some(0)));
                    return Ok(Some((0, false)));
                }
                let fresh = held.is_some_and(|h| h < min_version && max_version <= epoch && h < epoch);
                if fresh {
                    let done = write_fresh(conn, &writes, epoch, maxlen, publish)?;
                    return Ok(done.then_some((writes.len() as u64, true)));
                }
                // One script call per chunk of rows: the per-call cost is paid once per chunk.
                for chunk in writes.chunks(ROWS_PER_CALL) {
                    let c = p.cmd("EVALSHA").arg(&fence_sha).arg(0).arg(maxlen).arg(if publish { "1" } else { "0" });
                    c.arg(held.unwrap_or(0));
                    for w in chunk {
                        c.arg(&w.key).arg(w.stream).arg(w.version).arg(w.ttl_ms).arg(if w.deleted { "1" } else { "0" });
                        c.arg(w.fields.len());
                        for (f, v) in &w.fields {
                            c.arg(*f).arg(v);
                        }
                    }
                }
                p.cmd("EVALSHA").arg(&epoch_sha).arg(1).arg(EPOCH_KEY).arg(epoch).ignore();
                let applied: Option<Vec<i64>> = p.query(conn)?;
                Ok(applied.map(|a| (a.iter().sum::<i64>() as u64, false)))
            })
        })?;
        if let Some(marker) = lost.get() {
            return Err(RedisError::Lost { marker, acknowledged });
        }
        self.acknowledged = self.acknowledged.max(epoch);
        if fresh {
            self.fresh_writes += 1;
        }
        self.fenced = writes.len() as u64 - applied;
        Ok(applied)
    }

    /// Takes `epoch` as acknowledged before (a restart that found it held): a later write that
    /// finds the marker below it fails with [`RedisError::Lost`].
    pub fn set_acknowledged(&mut self, epoch: u64) {
        self.acknowledged = epoch;
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

    /// The durable epoch marker.
    pub fn epoch(&mut self) -> Result<u64, RedisError> {
        let v: Option<u64> = self.with_retry("reading the epoch", |c, _| redis::cmd("GET").arg(EPOCH_KEY).query(c))?;
        Ok(v.unwrap_or(0))
    }

    /// A connection for tests and tools.
    pub fn connection(&mut self) -> Result<Connection, RedisError> {
        self.client.get_connection().map_err(|e| RedisError::Permanent { what: "connecting", message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_keep_at_least_one_entry() {
        assert!(RedisConfig::default().validate().is_ok());
        let (key, _) = RedisConfig { stream_maxlen: 0, ..Default::default() }.validate().unwrap_err();
        assert_eq!(key, "redis.stream_maxlen");
    }

    #[test]
    fn a_refused_certificate_is_not_retried_a_dropped_handshake_is() {
        let handshake =
            |detail: &str| redis::RedisError::from((redis::ErrorKind::Io, "SSL Handshake error", detail.to_string()));
        let refused = handshake(
            "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:2091: (unable to get local issuer certificate)",
        );
        assert!(tls_refused(&refused) && !retriable(&refused));
        let reset = handshake("Connection reset by peer (os error 104)");
        assert!(!tls_refused(&reset) && retriable(&reset));
    }
}
