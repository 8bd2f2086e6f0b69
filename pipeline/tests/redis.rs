//! The Redis sink on a real redis-server (the one `deploy/redis.sh` starts; the README's test
//! command exports `HARBOUR_REDIS_URL`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::engine_config;
use harbour::engine::Engine;
use harbour::metrics::{Health, Metrics};
use harbour_sinks::redis::{fields_of_position, position_key, RedisConfig, RedisSink};
use harbour_sinks::tables::Changes;
use harbour_sources::file::SourceLine;
use harbour_sources::generate::{generate, GenerateConfig};

fn sink(db: u32) -> RedisSink {
    let url = std::env::var("HARBOUR_REDIS_URL").expect(
        "these tests need Redis: run `bash deploy/test.sh` (it starts one), or `eval \"$(deploy/redis.sh start)\"` first",
    );
    // deploy/redis.sh gives `redis://host:port/`: this test uses its own database number.
    let url = format!("{}/{db}", url.trim_end_matches('/'));
    let mut s = RedisSink::connect(&RedisConfig { url, ..RedisConfig::default() }).unwrap();
    let mut c = s.connection().unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    s
}

/// A generated day (`fills` fills, twice as many quotes) through an engine sealed every `every`
/// lines: the engine, and each epoch with its changes.
fn day_epochs(metrics: &Metrics, fills: usize, seed: u64, every: usize) -> (Engine<'_>, Vec<(u64, Changes)>) {
    let lines = generate(&GenerateConfig { fills, quotes: 2 * fills, seed, ..GenerateConfig::default() }).unwrap();
    let mut engine = Engine::new(&engine_config(every), metrics, Arc::new(Health::default()));
    engine.track_changes();
    let mut epochs = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % every == 0 || i + 1 == lines.len() {
            let epoch = engine.seal();
            epochs.push((epoch, engine.take_changes()));
        }
    }
    (engine, epochs)
}

#[test]
fn a_day_in_redis_equals_the_engine_and_replays_are_fenced() {
    let metrics = Metrics::default();
    let (mut engine, epochs) = day_epochs(&metrics, 3_000, 33, 500);
    let mut rs = sink(1);
    let mut sent: Vec<(u64, Changes)> = Vec::new();
    let mut applied = 0;
    for (epoch, changes) in epochs {
        applied += rs.write(epoch, &changes).unwrap();
        assert_eq!(rs.fenced, 0, "fresh versions are all applied");
        // The first write finds no marker and goes through the fence; the others are fresh.
        assert_eq!(rs.fresh_writes as usize, sent.len(), "rows all newer than the marker: no per-row check");
        sent.push((epoch, changes));
    }
    // The latest quote of every symbol: its market fields exactly, each with its event time.
    let mut c = rs.connection().unwrap();
    let mut quoted = 0;
    let symbols: Vec<_> = engine.state().marks.rows().map(|(s, _)| *s).collect();
    for symbol in symbols {
        let Some(m) = engine.market(symbol) else { continue };
        let h: HashMap<String, String> =
            redis::cmd("HGETALL").arg(format!("harbour:quote:{symbol}")).query(&mut c).unwrap();
        for (name, field) in [("bid", m.bid()), ("ask", m.ask()), ("last", m.last()), ("close", m.close())] {
            let want_price = field.map(|(_, p)| p);
            let got_price = h.get(name).filter(|v| !v.is_empty()).map(|v| v.parse::<rust_decimal::Decimal>().unwrap());
            assert_eq!(got_price, want_price, "harbour:quote:{symbol} {name}");
            let got_ts = h.get(&format!("{name}_ts")).filter(|v| !v.is_empty()).map(|v| v.parse::<i64>().unwrap());
            assert_eq!(got_ts, field.map(|(t, _)| t), "harbour:quote:{symbol} {name}_ts");
        }
        let ttl: i64 = redis::cmd("PTTL").arg(format!("harbour:quote:{symbol}")).query(&mut c).unwrap();
        assert!(ttl > 200_000 && ttl <= 300_000, "market data keeps 5 minutes ({ttl} ms)");
        quoted += 1;
    }
    assert!(quoted >= 5, "{quoted} symbols quoted");
    let (state, _) = engine.finish();
    let snapshot = |c: &mut redis::Connection| -> HashMap<String, HashMap<String, String>> {
        let keys: Vec<String> = redis::cmd("KEYS").arg("harbour:position:*").query(c).unwrap();
        keys.into_iter().map(|k| (k.clone(), redis::cmd("HGETALL").arg(&k).query(c).unwrap())).collect()
    };
    let before = snapshot(&mut c);
    // Every live position's hash holds its fields exactly, with the row's version.
    for v in state.positions.versioned() {
        let h = &before[&position_key(&v.row)];
        for (f, want) in fields_of_position(&v.row) {
            assert_eq!(h.get(f), Some(&want), "{} field {f}", position_key(&v.row));
        }
        assert_eq!(h["version"], v.version.to_string());
        let ttl: i64 = redis::cmd("PTTL").arg(position_key(&v.row)).query(&mut c).unwrap();
        assert!(ttl > 0 && ttl <= 30_000, "position TTL {ttl}");
    }
    let live = before.values().filter(|h| h.get("deleted").is_none()).count();
    assert_eq!(live, state.positions.len());
    let streamed: u64 = redis::cmd("XLEN").arg("harbour:stream:positions").query(&mut c).unwrap();
    let position_changes: usize = sent.iter().map(|(_, ch)| ch.positions.len()).sum();
    assert_eq!(streamed as usize, position_changes, "one stream entry per position change");
    let prices: u64 = redis::cmd("XLEN").arg("harbour:stream:prices").query(&mut c).unwrap();
    assert!(prices > 0);
    let last = sent.last().unwrap().0;
    assert_eq!(rs.epoch().unwrap(), last);

    // Replaying every epoch, oldest first, after the newest: nothing is written, nothing streamed.
    for (epoch, ch) in &sent {
        assert_eq!(rs.write(*epoch, ch).unwrap(), 0, "epoch {epoch} is fenced");
    }
    assert_eq!(snapshot(&mut c), before);
    assert_eq!(rs.fresh_writes as usize, sent.len() - 1, "replays go through the fence script");
    // A Redis that lost the marker (evicted, deleted) is not trusted to hold nothing: a replay of
    // the last epoch is still fenced row by row.
    let _: () = redis::cmd("DEL").arg("harbour:sink:epoch").query(&mut c).unwrap();
    let (epoch, ch) = sent.last().unwrap();
    // The sink that had it acknowledged stops (a restart then writes the tables again) ...
    assert!(matches!(rs.write(*epoch, ch), Err(harbour_sinks::redis::RedisError::Lost { marker: 0, .. })));
    // ... and the restarted one, knowing nothing acknowledged, replays through the fence.
    let url = format!("{}/1", std::env::var("HARBOUR_REDIS_URL").unwrap().trim_end_matches('/'));
    let mut rs = RedisSink::connect(&RedisConfig { url, ..RedisConfig::default() }).unwrap();
    assert_eq!(rs.write(*epoch, ch).unwrap(), 0, "fenced without a marker");
    assert_eq!(snapshot(&mut c), before);
    let streamed_again: u64 = redis::cmd("XLEN").arg("harbour:stream:positions").query(&mut c).unwrap();
    assert_eq!(streamed_again, streamed);
    assert_eq!(rs.epoch().unwrap(), last, "the epoch marker never goes back");
    assert!(applied > 0);
}

/// Every hash under `harbour:` (streams and the epoch marker left out), field by field.
fn hashes(c: &mut redis::Connection) -> HashMap<String, HashMap<String, String>> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("harbour:*").query(c).unwrap();
    keys.into_iter()
        .filter_map(|k| {
            let hash = redis::cmd("TYPE").arg(&k).query::<String>(c).unwrap() == "hash";
            hash.then(|| (k.clone(), redis::cmd("HGETALL").arg(&k).query(c).unwrap()))
        })
        .collect()
}

/// A flush that straddles the marker (a restart re-sending epochs Redis already holds, together
/// with new ones) goes through the fence: the held rows are kept, the newer ones written, each
/// once; Redis ends equal to a run that wrote every epoch once.
#[test]
fn a_flush_straddling_the_marker_writes_only_the_newer_rows() {
    let metrics = Metrics::default();
    let (_, epochs) = day_epochs(&metrics, 2_000, 37, 300);
    assert!(epochs.len() >= 8, "{} epochs", epochs.len());
    let mut whole = sink(6);
    for (epoch, ch) in &epochs {
        whole.write(*epoch, ch).unwrap();
    }
    assert_eq!(whole.fresh_writes as usize, epochs.len() - 1, "all but the first (no marker yet)");

    let mut restarted = sink(7);
    let half = epochs.len() / 2;
    for (epoch, ch) in &epochs[..half] {
        restarted.write(*epoch, ch).unwrap();
    }
    // One flush from a quarter of the way to one epoch past the half: its first epochs are held
    // already (a flush whose newest rows were all past the marker would be fresh, rightly).
    let mut straddling = Changes::default();
    for (_, ch) in &epochs[half / 2..=half] {
        straddling.append(ch.clone());
    }
    let fresh_before = restarted.fresh_writes;
    let applied = restarted.write(epochs[half].0, &straddling).unwrap();
    assert_eq!(restarted.fresh_writes, fresh_before, "a straddling flush is checked row by row");
    assert!(restarted.fenced > 0 && applied > 0, "{} fenced, {applied} applied", restarted.fenced);
    assert_eq!(restarted.epoch().unwrap(), epochs[half].0);
    for (epoch, ch) in &epochs[half + 1..] {
        restarted.write(*epoch, ch).unwrap();
    }
    assert_eq!(restarted.epoch().unwrap(), epochs.last().unwrap().0);

    let (mut a, mut b) = (whole.connection().unwrap(), restarted.connection().unwrap());
    let (want, got) = (hashes(&mut a), hashes(&mut b));
    assert!(want.len() > 20, "{} hashes", want.len());
    assert_eq!(got, want, "the straddling flush ends where writing every epoch once does");
    // No position change is streamed twice.
    let entries: redis::Value =
        redis::cmd("XRANGE").arg("harbour:stream:positions").arg("-").arg("+").query(&mut b).unwrap();
    let mut seen = std::collections::HashSet::new();
    let redis::Value::Array(entries) = entries else { panic!("XRANGE gives an array") };
    for e in entries {
        let (_, fields): (String, HashMap<String, String>) = redis::from_redis_value(e).unwrap();
        assert!(seen.insert((fields["key"].clone(), fields["version"].clone())), "streamed twice: {fields:?}");
    }
    assert!(!seen.is_empty());
}

/// A private redis-server (for a test that stops it, or flushes its scripts: the shared one
/// serves tests running at the same time), named `name`.
fn private_redis(name: &str) -> (std::path::PathBuf, String) {
    let state = std::env::temp_dir().join(format!("harbour-redis-{name}-{}.state", std::process::id()));
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/redis.sh"))
        .arg("start")
        .env("HARBOUR_REDIS_STATE", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8(out.stdout).unwrap().trim().trim_start_matches("export HARBOUR_REDIS_URL=").to_string();
    (state, url)
}

/// Stops a private server (whichever process its state file names by then) when the test ends,
/// passed or failed, so a failed assertion leaves no server holding the test's output.
struct Stop(std::path::PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/redis.sh"))
            .arg("stop")
            .env("HARBOUR_REDIS_STATE", &self.0)
            .status();
    }
}

/// Scripts flushed from under the sink's connection (SCRIPT FLUSH, a failover to a replica that
/// never loaded them): NOSCRIPT is waited out on a new connection, which loads them again, and
/// the write lands. (On a server of its own: another test's sink would load them in between.)
#[test]
fn scripts_flushed_from_under_the_sink_are_loaded_again() {
    let (state_file, url) = private_redis("noscript");
    let _stop = Stop(state_file);
    let metrics = Metrics::default();
    let (_, epochs) = day_epochs(&metrics, 600, 41, 300);
    let mut rs = RedisSink::connect(&RedisConfig { url, max_backoff_ms: 200, ..RedisConfig::default() }).unwrap();
    let half = epochs.len() / 2;
    for (epoch, ch) in &epochs[..half] {
        rs.write(*epoch, ch).unwrap();
    }
    let mut other = rs.connection().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut other).unwrap();
    let retries_before = rs.retries();
    // A flush re-sending held epochs (the instruments of the first) with a new one goes through
    // the fence script.
    let mut straddling = Changes::default();
    for (_, ch) in &epochs[..=half] {
        straddling.append(ch.clone());
    }
    let applied = rs.write(epochs[half].0, &straddling).unwrap();
    assert_eq!(rs.retries(), retries_before + 1, "one retry, on a new connection");
    assert!(applied > 0);
    assert_eq!(rs.epoch().unwrap(), epochs[half].0);
}

/// A Redis that stops answering (here a paused process; a network dropping packets alike) holds
/// a write only for `redis.timeout_ms`: the connection is dropped, the wait counted as a retry
/// (the operator's alert), and the write lands once Redis answers again. (Until 2026-11-27 the
/// write waited on the socket for ever, with the retry metric at 0.)
#[test]
fn a_redis_that_stops_answering_is_retried_not_waited_on_for_ever() {
    let (state_file, url) = private_redis("paused");
    let _stop = Stop(state_file.clone());
    let pid = std::fs::read_to_string(&state_file).unwrap().split_whitespace().next().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    };
    /// Wakes the server however the test ends (before [`Stop`] stops it).
    struct Wake<'a>(&'a dyn Fn(&str));
    impl Drop for Wake<'_> {
        fn drop(&mut self) {
            (self.0)("-CONT");
        }
    }
    let metrics = Metrics::default();
    let (_, epochs) = day_epochs(&metrics, 300, 43, 300);
    assert!(epochs.len() >= 2);
    let config = RedisConfig { url, max_backoff_ms: 100, timeout_ms: 300, ..RedisConfig::default() };
    let mut rs = RedisSink::connect(&config).unwrap();
    rs.write(epochs[0].0, &epochs[0].1).unwrap();
    let retries = rs.retry_counter();
    signal("-STOP");
    let _wake = Wake(&signal);
    let (epoch, changes) = epochs[1].clone();
    let writer = std::thread::spawn(move || rs.write(epoch, &changes).map(|_| rs));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while retries.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the write is still waiting on the paused server");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal("-CONT");
    let mut rs = writer.join().unwrap().unwrap();
    assert_eq!(rs.epoch().unwrap(), epoch);
}

/// `rediss://` given for a plain port: redis-rs's TLS handshake has no timeout and hung there (or
/// failed as an I/O error, retried for ever); the sink now says what is wrong, at once.
#[test]
fn a_tls_url_for_a_plain_redis_port_is_a_config_error_not_a_hang() {
    let url = std::env::var("HARBOUR_REDIS_URL").expect("these tests need Redis: run `bash deploy/test.sh`");
    let tls = url.replacen("redis://", "rediss://", 1);
    assert_ne!(tls, url);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = RedisSink::connect(&RedisConfig { url: tls, max_backoff_ms: 100, ..RedisConfig::default() });
        let _ = tx.send(r.err().map(|e| e.to_string()));
    });
    let error = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("connecting over TLS to a plain Redis port still waits")
        .expect("connecting over TLS to a plain Redis port succeeded");
    assert!(error.starts_with("redis config: redis.url:"), "{error}");
    assert!(error.contains("answers plain Redis"), "{error}");
}

#[test]
fn redis_restarted_mid_run_the_sink_waits_and_ends_complete() {
    let (state_file, url) = private_redis("outage");
    let _stop = Stop(state_file.clone());
    let (pid, dir) = {
        let s = std::fs::read_to_string(&state_file).unwrap();
        let mut p = s.split_whitespace();
        (p.next().unwrap().to_string(), p.next().unwrap().to_string())
    };
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap().to_string();
    let mut rs =
        RedisSink::connect(&RedisConfig { url: url.clone(), max_backoff_ms: 200, ..RedisConfig::default() }).unwrap();
    let lines =
        generate(&GenerateConfig { fills: 1_500, quotes: 3_000, seed: 8, ..GenerateConfig::default() }).unwrap();
    let config = engine_config(400);
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&config, &metrics, health);
    engine.track_changes();
    let mut outage = None;
    for (i, raw) in lines.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % 400 == 0 || i + 1 == lines.len() {
            let epoch = engine.seal();
            if outage.is_none() && i >= lines.len() / 2 {
                // Stop Redis (it saves its append-only file), start it again 1.5 s later on the same port.
                assert!(std::process::Command::new("kill").arg(&pid).status().unwrap().success());
                let (dir, port, state_file) = (dir.clone(), port.clone(), state_file.clone());
                let started = std::time::Instant::now();
                let restart = std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(1500));
                    let child = std::process::Command::new("redis-server")
                        .args([
                            "--bind",
                            "127.0.0.1",
                            "--port",
                            &port,
                            "--dir",
                            &dir,
                            "--appendonly",
                            "yes",
                            "--save",
                            "",
                            "--logfile",
                            &format!("{dir}/redis.log"),
                        ])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap();
                    let url = format!("redis://127.0.0.1:{port}/");
                    std::fs::write(&state_file, format!("{} {dir} {url}\n", child.id())).unwrap();
                    std::mem::forget(child); // stopped by deploy/redis.sh stop, by pid
                });
                rs.write(epoch, &engine.take_changes()).unwrap();
                restart.join().unwrap();
                outage = Some(started.elapsed());
            } else {
                rs.write(epoch, &engine.take_changes()).unwrap();
            }
        }
    }
    let waited = outage.expect("redis was stopped mid-run");
    assert!(waited.as_millis() >= 1_400, "the write waited for Redis ({waited:?})");
    assert!(rs.retries() > 0);
    let (state, _) = engine.finish();
    let mut c = rs.connection().unwrap();
    for p in state.positions.rows() {
        let h: HashMap<String, String> = redis::cmd("HGETALL").arg(position_key(p)).query(&mut c).unwrap();
        for (f, want) in fields_of_position(p) {
            assert_eq!(h.get(f), Some(&want), "{} field {f} after the restart", position_key(p));
        }
    }
    let newest = state.positions.versioned().iter().map(|v| v.version).max().unwrap_or(0);
    assert!(rs.epoch().unwrap() >= newest, "the epoch marker covers every row written");
}

/// With `redis.publish`, every applied change is also published on its stream's channel, once:
/// a fenced replay publishes nothing.
#[test]
fn applied_changes_are_published_once_for_listeners() {
    let url = std::env::var("HARBOUR_REDIS_URL").expect("HARBOUR_REDIS_URL (deploy/redis.sh)");
    let url = format!("{}/5", url.trim_end_matches('/'));
    let mut rs =
        RedisSink::connect(&RedisConfig { url: url.clone(), publish: true, ..RedisConfig::default() }).unwrap();
    {
        let mut c = rs.connection().unwrap();
        let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    }
    // A listener on the positions channel (Pub/Sub is server-wide, not per database).
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let ready = Arc::new(std::sync::Barrier::new(2));
    let listener = {
        let (url, ready) = (url.clone(), ready.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
            let mut ps = c.as_pubsub();
            ps.subscribe("harbour:stream:positions").unwrap();
            ready.wait();
            while let Ok(m) = ps.get_message() {
                if tx.send(m.get_payload::<String>().unwrap()).is_err() {
                    return;
                }
            }
        })
    };
    ready.wait();
    let lines = generate(&GenerateConfig { fills: 400, quotes: 800, seed: 35, ..GenerateConfig::default() }).unwrap();
    let config = engine_config(200);
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&config, &metrics, health);
    engine.track_changes();
    let mut sent = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % 200 == 0 || i + 1 == lines.len() {
            let epoch = engine.seal();
            let changes = engine.take_changes();
            // The conflated writes of this flush: the last change per position key.
            let mut last: HashMap<String, u64> = HashMap::new();
            for c in &changes.positions {
                last.insert(position_key(&c.row), c.version);
            }
            expected.extend(last.into_iter().map(|(k, v)| format!("{k} {v}")));
            rs.write(epoch, &changes).unwrap();
            sent.push((epoch, changes));
        }
    }
    // Replaying every epoch (fenced) publishes nothing more.
    for (epoch, changes) in &sent {
        rs.write(*epoch, changes).unwrap();
    }
    let mut got: Vec<String> = Vec::new();
    while let Ok(m) = rx.recv_timeout(std::time::Duration::from_millis(1_000)) {
        got.push(m);
    }
    drop(rx);
    listener.join().unwrap();
    got.sort();
    expected.sort();
    assert!(expected.len() > 50, "{}", expected.len());
    assert_eq!(got, expected, "each applied position change published once, replays none");
}

/// Redis that lost what it acknowledged (its marker went back) makes the next write fail with
/// `Lost`, rather than carrying on with keys that no later change would rewrite; a restart of the
/// pipeline writes its tables again (tests/kafka.rs).
#[test]
fn a_write_after_redis_lost_acknowledged_data_fails_with_lost() {
    let metrics = Metrics::default();
    let (_, epochs) = day_epochs(&metrics, 600, 41, 300);
    assert!(epochs.len() >= 3);
    let mut rs = sink(8);
    let (first, ch) = &epochs[0];
    rs.write(*first, ch).unwrap();
    let mut c = rs.connection().unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let (second, ch) = &epochs[1];
    let err = rs.write(*second, ch).unwrap_err();
    assert!(
        matches!(err, harbour_sinks::redis::RedisError::Lost { marker: 0, acknowledged } if acknowledged == *first),
        "{err}"
    );
    assert!(err.to_string().contains("restart the pipeline"));
    // Replaying an older epoch onto an intact Redis is not a loss (the fence takes it).
    let mut intact = sink(9);
    intact.write(epochs[1].0, &epochs[1].1).unwrap();
    intact.write(epochs[0].0, &epochs[0].1).unwrap();
}

/// A replay must not bring back a key that expired by its TTL after it was written (nor stream
/// it again): a missing key at or below the marker was written once already.
#[test]
fn a_replay_does_not_revive_an_expired_key_nor_stream_it_again() {
    let metrics = Metrics::default();
    let (_, epochs) = day_epochs(&metrics, 600, 43, 300);
    let mut rs = sink(10);
    for (epoch, ch) in &epochs {
        rs.write(*epoch, ch).unwrap();
    }
    let mut c = rs.connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("harbour:position:*").query(&mut c).unwrap();
    let gone = keys[0].clone();
    // As if its TTL had run out.
    let _: () = redis::cmd("DEL").arg(&gone).query(&mut c).unwrap();
    let streamed: u64 = redis::cmd("XLEN").arg("harbour:stream:positions").query(&mut c).unwrap();
    // A restart re-sends every epoch (a new sink: nothing acknowledged to it).
    let url = format!("{}/10", std::env::var("HARBOUR_REDIS_URL").unwrap().trim_end_matches('/'));
    let mut restarted = RedisSink::connect(&RedisConfig { url, ..RedisConfig::default() }).unwrap();
    for (epoch, ch) in &epochs {
        assert_eq!(restarted.write(*epoch, ch).unwrap(), 0, "epoch {epoch} is held (or expired)");
    }
    let exists: u64 = redis::cmd("EXISTS").arg(&gone).query(&mut c).unwrap();
    assert_eq!(exists, 0, "the expired key stays gone");
    let again: u64 = redis::cmd("XLEN").arg("harbour:stream:positions").query(&mut c).unwrap();
    assert_eq!(again, streamed, "nothing streamed twice");
}

/// A Redis whose marker is past every epoch the state folder sealed holds another run's rows
/// (the folder started afresh): the run refuses to start, naming what to clear, rather than
/// write rows whose versions lose to them (a feed frozen on the other run's data).
#[test]
fn a_redis_ahead_of_the_state_folder_is_refused() {
    use harbour::engine::OutputState;
    use harbour::kafka::{EpochSink, RedisEpochSink};
    let rs = sink(11);
    let mut sink = RedisEpochSink(rs, None);
    let mut c = sink.0.connection().unwrap();
    let _: () = redis::cmd("SET").arg("harbour:sink:epoch").arg(1_000_000).query(&mut c).unwrap();
    let err = sink.resume(&OutputState::default(), 0, 0, 40).unwrap_err();
    assert!(err.contains("holds epoch 1000000") && err.contains("another run"), "{err}");
    assert!(err.contains("harbour:*"), "{err}");
    // Within what the folder sealed (a crash after the write, before the commit): resumed there.
    assert_eq!(sink.resume(&OutputState::default(), 0, 999_990, 1_000_000), Ok(999_990));
}

/// A TTL configured off (0) leaves the keys it writes without expiry, also those written before
/// with a TTL (HSET keeps a key's TTL: a restart with `position_ttl_ms = 0` left them expiring),
/// through both write paths (a flush after the marker; one straddling it, through the script).
#[test]
fn a_ttl_turned_off_removes_the_expiry_of_keys_written_before() {
    let metrics = Metrics::default();
    let (_, epochs) = day_epochs(&metrics, 600, 47, 200);
    assert!(epochs.len() >= 3);
    let mut with_ttl = sink(13);
    for (epoch, ch) in &epochs {
        with_ttl.write(*epoch, ch).unwrap();
    }
    let mut c = with_ttl.connection().unwrap();
    let ttl = |c: &mut redis::Connection, key: &str| -> i64 { redis::cmd("PTTL").arg(key).query(c).unwrap() };
    let keys_of = |ch: &Changes| -> Vec<String> { ch.positions.iter().map(|p| position_key(&p.row)).collect() };
    let (fresh, straddling) = (keys_of(&epochs[1].1), keys_of(&epochs[2].1));
    assert!(!fresh.is_empty() && !straddling.is_empty());
    assert!(ttl(&mut c, &fresh[0]) > 0);
    // The same Redis, emptied but for the keys, then written again with the TTL off.
    let _: () = redis::cmd("DEL").arg("harbour:sink:epoch").query(&mut c).unwrap();
    let url = format!("{}/13", std::env::var("HARBOUR_REDIS_URL").unwrap().trim_end_matches('/'));
    let mut off = RedisSink::connect(&RedisConfig { url, position_ttl_ms: 0, ..RedisConfig::default() }).unwrap();
    // Versions past every one held: the fresh path (no script).
    let at = |ch: &Changes, version: u64| -> Changes {
        let mut ch = ch.clone();
        for p in ch.positions.iter_mut() {
            p.version = version;
        }
        ch
    };
    let top = epochs.last().unwrap().0;
    off.write(top + 1, &at(&epochs[1].1, top + 1)).unwrap();
    for k in &fresh {
        assert_eq!(ttl(&mut c, k), -1, "{k} without expiry");
    }
    // A flush holding rows at or below the marker too: the fence script.
    let mut mixed = at(&epochs[1].1, top + 1);
    mixed.append(at(&epochs[2].1, top + 2));
    assert!(off.write(top + 2, &mixed).unwrap() > 0);
    for k in &straddling {
        assert_eq!(ttl(&mut c, k), -1, "{k} without expiry");
    }
}

/// A Redis that evicts any key under memory pressure (`allkeys-*` with a `maxmemory`) would evict
/// the durable-epoch marker, and every write after that stops the pipeline as lost data: refused
/// at start, naming the policy; `volatile-*` (Harbour's hashes carry TTLs, the marker none) is fine.
#[test]
fn a_redis_that_may_evict_the_epoch_marker_is_refused_at_start() {
    let (state_file, url) = private_redis("evict");
    let _stop = Stop(state_file);
    let mut c = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let set = |c: &mut redis::Connection, k: &str, v: &str| {
        let _: () = redis::cmd("CONFIG").arg("SET").arg(k).arg(v).query(c).unwrap();
    };
    set(&mut c, "maxmemory", "100mb");
    set(&mut c, "maxmemory-policy", "allkeys-lru");
    let config = RedisConfig { url, ..RedisConfig::default() };
    let error = RedisSink::connect(&config).err().expect("an allkeys-lru Redis accepted").to_string();
    assert!(error.starts_with("redis config: redis.url:") && error.contains("allkeys-lru"), "{error}");
    set(&mut c, "maxmemory-policy", "volatile-lru");
    assert!(RedisSink::connect(&config).is_ok());
    // Without a maxmemory nothing is evicted: a warning only.
    set(&mut c, "maxmemory-policy", "allkeys-lru");
    set(&mut c, "maxmemory", "0");
    assert!(RedisSink::connect(&config).is_ok());
}

/// At an equal version the last write wins when its content differs, as in ClickHouse (whose
/// ReplacingMergeTree keeps the last row inserted of a version): a restart can rebuild rows at the
/// version the stores hold with other values (risk under changed settings, sent again at the
/// restore's version), and both stores must end with them. The same content again is a replay:
/// not applied, not streamed; an older version never is.
#[test]
fn an_equal_version_with_other_content_is_taken_the_same_content_is_not() {
    let metrics = Metrics::default();
    let (_, epochs) = day_epochs(&metrics, 300, 47, 200);
    let mut rs = sink(12);
    for (epoch, ch) in &epochs {
        rs.write(*epoch, ch).unwrap();
    }
    let mut c = rs.connection().unwrap();
    let xlen =
        |c: &mut redis::Connection| -> u64 { redis::cmd("XLEN").arg("harbour:stream:positions").query(c).unwrap() };
    let streamed = xlen(&mut c);
    let (epoch, last) = epochs.iter().rev().find(|(_, ch)| !ch.positions.is_empty()).unwrap();
    let mut changed = Changes { positions: vec![last.positions[0].clone()], ..Changes::default() };
    changed.positions[0].row.realized += rust_decimal::Decimal::new(1, 2);
    let realized = changed.positions[0].row.realized.to_string();
    let key = position_key(&changed.positions[0].row);
    let held = |c: &mut redis::Connection| -> (String, String) {
        redis::cmd("HMGET").arg(&key).arg("realized").arg("version").query(c).unwrap()
    };
    let before = held(&mut c);
    assert_ne!(before.0, realized);
    // The same version, other content: applied and streamed.
    assert_eq!(rs.write(*epoch, &changed).unwrap(), 1);
    assert_eq!(held(&mut c), (realized.clone(), before.1.clone()));
    assert_eq!(xlen(&mut c), streamed + 1);
    // Again: the content held, nothing applied or streamed.
    assert_eq!(rs.write(*epoch, &changed).unwrap(), 0);
    assert_eq!(xlen(&mut c), streamed + 1);
    // An older version with other content: refused.
    let mut older = changed.clone();
    older.positions[0].version -= 1;
    older.positions[0].row.realized += rust_decimal::Decimal::ONE;
    assert_eq!(rs.write(*epoch, &older).unwrap(), 0);
    assert_eq!(held(&mut c), (realized, before.1));
    assert_eq!(xlen(&mut c), streamed + 1);
}
