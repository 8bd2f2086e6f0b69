//! The Redis sink on a real redis-server (the one `deploy/redis.sh` starts; the README's test
//! command exports `HARBOUR_REDIS_URL`).

use std::collections::HashMap;
use std::sync::Arc;

use harbour::engine::{Engine, EngineConfig};
use harbour::metrics::{Health, Metrics};
use harbour_dataflows::fees::CostSchedules;
use harbour_dataflows::graph::GraphConfig;
use harbour_dataflows::marks::MarkPolicy;
use harbour_dataflows::ticks::SpreadTables;
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
    let mut s = RedisSink::connect_to(&RedisConfig { url, ..RedisConfig::default() }).unwrap();
    let mut c = s.connection().unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    s
}

#[test]
fn a_day_in_redis_equals_the_engine_and_replays_are_fenced() {
    let lines =
        generate(&GenerateConfig { fills: 3_000, quotes: 6_000, seed: 33, ..GenerateConfig::default() }).unwrap();
    let config = EngineConfig {
        epoch_events: 500,
        graph: GraphConfig { schedules: Arc::new(CostSchedules::default()), marks: MarkPolicy::default() },
        spreads: SpreadTables::default(),
    };
    let (metrics, health) = (Metrics::default(), Arc::new(Health::default()));
    let mut engine = Engine::new(&config, &metrics, health);
    engine.track_changes();
    let mut rs = sink(1);
    let mut sent: Vec<(u64, Changes)> = Vec::new();
    let mut applied = 0;
    for (i, raw) in lines.iter().enumerate() {
        engine.feed(SourceLine { source: "day".into(), position: i as u64 + 1, raw: raw.clone() });
        if (i + 1) % 500 == 0 || i + 1 == lines.len() {
            let epoch = engine.seal();
            let changes = engine.take_changes();
            applied += rs.write(epoch, &changes).unwrap();
            assert_eq!(rs.fenced, 0, "fresh versions are all applied");
            sent.push((epoch, changes));
        }
    }
    let (state, _) = engine.finish();
    let mut c = rs.connection().unwrap();
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
    let streamed_again: u64 = redis::cmd("XLEN").arg("harbour:stream:positions").query(&mut c).unwrap();
    assert_eq!(streamed_again, streamed);
    assert_eq!(rs.epoch().unwrap(), last, "the epoch marker never goes back");
    assert!(applied > 0);
}
