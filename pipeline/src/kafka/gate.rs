//! Admission: which consumed record is fed to the engine now, which waits, and when a re-formed
//! epoch is complete. Pure (no broker, no engine): the run loop carries out its [`Step`]s in order.
//!
//! Three phases:
//! - **Replay**: every epoch logged after the restored checkpoint is re-formed exactly. A record
//!   at or beyond its partition's end offset in the epoch being re-formed is held back (its
//!   partition paused); the epoch is sealed as soon as every partition reached its logged end.
//!   Sealing raises the limit of every partition, so held records are released again, over all
//!   partitions, until nothing moves.
//! - **Bootstrap** (fresh start only): only the instruments topic is fed until it reached the
//!   high watermark seen at start; everything else is held.
//! - **Live**: everything is fed as it comes.
//!
//! Invariant at every return: a paused partition has held records, and a partition with held
//! records is paused; in Live no record is held.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use harbour_sources::kafka::{Offsets, Partition, Record};

use crate::checkpoint::EpochRecord;

/// The phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Re-forming logged epochs.
    Replay,
    /// Reading the instruments topic to its end first.
    Bootstrap,
    /// Reading on.
    Live,
}

/// What the run loop does next, in order.
#[derive(Debug)]
pub enum Step {
    /// Feed this record to the engine; `replaying` is the logged epoch it belongs to, if any.
    Feed {
        /// The record.
        record: Record,
        /// The logged epoch being re-formed (its dead letters were already sent when it was
        /// committed).
        replaying: Option<u64>,
    },
    /// Every record of this logged epoch was fed: seal it (and check it re-formed identically).
    SealReplayed(EpochRecord),
    /// The log is re-formed; reading on.
    ReplayDone,
    /// Stop fetching this partition.
    Pause(Partition),
    /// Fetch this partition again.
    Resume(Partition),
    /// The epoch being re-formed cannot be: the partition's next record is at or past its logged
    /// end while records before that end were not fed (deleted by retention or compaction, or
    /// the topic was recreated), so it would wait for them for ever.
    Gone {
        /// The epoch.
        epoch: u64,
        /// The partition.
        partition: Partition,
        /// Where it was to be read from (`None`: its beginning).
        from: Option<i64>,
        /// The logged end.
        end: i64,
        /// The offset the broker delivered instead.
        found: i64,
    },
}

/// Puts an epoch's records in the order they are fed to the engine, the same whatever order they
/// arrived in: each partition's records in offset order, the partitions merged by message
/// timestamp (ties: the instruments topic first, then by topic and partition; a record without a
/// timestamp takes its partition's previous one). The input rules depend on order across
/// partitions (a listing or an instrument change and the fills around it, a bust in another
/// partition than its fill, a second fill with an accepted exec_id), and the broker interleaves
/// partitions differently on every read: fed as delivered, an epoch re-formed after a crash could
/// accept a line the first run refused (or the reverse) while the sinks hold the first run's rows.
/// Timestamps are kept with the messages, so every read of the epoch gives the same order, and it
/// is the order the messages were produced in as far as the producers' clocks agree.
pub fn feed_order<T>(records: &mut Vec<(Record, T)>, instruments_topic: &str) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    if records.len() < 2 {
        return;
    }
    // Each partition's records in offset order (as delivered; sorted all the same).
    records.sort_unstable_by(|(a, _), (b, _)| (&a.partition, a.offset).cmp(&(&b.partition, b.offset)));
    // Runs of one partition: [start, end) with the timestamps carried forward.
    let mut stamps: Vec<i64> = Vec::with_capacity(records.len());
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, (r, _)) in records.iter().enumerate() {
        let new_run = i == 0 || records[i - 1].0.partition != r.partition;
        if new_run {
            runs.push((i, i));
        }
        let carried = if new_run { i64::MIN } else { stamps[i - 1] };
        stamps.push(r.timestamp.unwrap_or(carried).max(carried));
        runs.last_mut().expect("a run").1 = i + 1;
    }
    if runs.len() == 1 {
        return;
    }
    // k-way merge of the runs by (timestamp, not instruments, partition).
    let key = |i: usize, records: &[(Record, T)]| {
        let p = &records[i].0.partition;
        (stamps[i], p.topic != instruments_topic, p.topic.clone(), p.partition)
    };
    // (the head's key, the head, the run's end)
    type Head = ((i64, bool, smol_str::SmolStr, i32), usize, usize);
    let mut heap: BinaryHeap<Reverse<Head>> =
        runs.iter().map(|&(start, end)| Reverse((key(start, records), start, end))).collect();
    let mut order: Vec<usize> = Vec::with_capacity(records.len());
    while let Some(Reverse((_, i, end))) = heap.pop() {
        order.push(i);
        if i + 1 < end {
            heap.push(Reverse((key(i + 1, records), i + 1, end)));
        }
    }
    let mut slots: Vec<Option<(Record, T)>> = records.drain(..).map(Some).collect();
    records.extend(order.into_iter().map(|i| slots[i].take().expect("each record once")));
}

/// The admission state.
pub struct Gate {
    phase: Phase,
    replay: VecDeque<EpochRecord>,
    bootstrap_until: Offsets,
    instruments_topic: String,
    /// Next offset per partition (what has been fed).
    next: Offsets,
    held: BTreeMap<Partition, VecDeque<Record>>,
    paused: BTreeSet<Partition>,
}

impl Gate {
    /// A gate that re-forms `replay` first (when not empty), else bootstraps from the instruments
    /// topic (`fresh`) or reads on. `next` is where each partition starts.
    pub fn new(
        replay: VecDeque<EpochRecord>,
        fresh: bool,
        instruments_topic: &str,
        bootstrap_until: Offsets,
        next: Offsets,
    ) -> Gate {
        let phase = if !replay.is_empty() {
            Phase::Replay
        } else if fresh {
            Phase::Bootstrap
        } else {
            Phase::Live
        };
        Gate {
            phase,
            replay,
            bootstrap_until,
            instruments_topic: instruments_topic.to_owned(),
            next,
            held: BTreeMap::new(),
            paused: BTreeSet::new(),
        }
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Next offset per partition: everything before it was fed.
    pub fn next(&self) -> &Offsets {
        &self.next
    }

    /// Whether records wait (their partitions paused).
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether records of `p` wait.
    pub fn holds_from(&self, p: &Partition) -> bool {
        self.held.contains_key(p)
    }

    /// The logged epoch being re-formed.
    pub fn replaying(&self) -> Option<&EpochRecord> {
        self.replay.front()
    }

    /// Whether the instruments topic reached the high watermarks seen at start (`low`: where an
    /// untouched partition starts; `past`: where partitions are read to, which passes
    /// transaction markers and aborted messages the consumer never hands over).
    pub fn bootstrap_complete(&self, low: impl Fn(&Partition) -> i64, past: &Offsets) -> bool {
        self.bootstrap_until.iter().all(|(p, high)| {
            let fed = self.next.get(p).copied().unwrap_or_else(|| low(p));
            fed.max(past.get(p).copied().unwrap_or(i64::MIN)) >= *high
        })
    }

    /// Ends the bootstrap (the caller sealed its epoch): every held record is released.
    pub fn go_live(&mut self, out: &mut Vec<Step>) {
        self.phase = Phase::Live;
        self.settle(out);
    }

    /// The offset a record must stay below to be fed now; `None` when unlimited.
    fn limit(&self, p: &Partition) -> Option<i64> {
        match self.phase {
            Phase::Replay => Some(self.replay.front().and_then(|r| r.ends.get(p)).unwrap_or(i64::MIN)),
            Phase::Bootstrap if p.topic != self.instruments_topic => Some(i64::MIN),
            _ => None,
        }
    }

    /// A record from the consumer.
    pub fn offer(&mut self, r: Record, out: &mut Vec<Step>) {
        if self.next.get(&r.partition).is_some_and(|n| r.offset < *n) {
            return; // re-delivered after a pause: already fed
        }
        if self.held.contains_key(&r.partition) || self.limit(&r.partition).is_some_and(|l| r.offset >= l) {
            // A partition delivers in offset order: its first record past the logged end of the
            // epoch being re-formed, with that end not reached, means the records between are gone.
            if let (Phase::Replay, Some(front), false) =
                (self.phase, self.replay.front(), self.held.contains_key(&r.partition))
            {
                let from = self.next.get(&r.partition).copied();
                if let Some(end) = front.ends.get(&r.partition) {
                    if r.offset >= end && from.is_none_or(|n| n < end) {
                        out.push(Step::Gone {
                            epoch: front.epoch,
                            partition: r.partition.clone(),
                            from,
                            end,
                            found: r.offset,
                        });
                    }
                }
            }
            if self.paused.insert(r.partition.clone()) {
                out.push(Step::Pause(r.partition.clone()));
            }
            let q = self.held.entry(r.partition.clone()).or_default();
            // Held records stay in offset order, each once (a fetch in flight when the partition
            // was paused may deliver some again).
            if q.back().is_none_or(|b| r.offset > b.offset) {
                q.push_back(r);
            }
            return;
        }
        self.feed(r, out);
        self.settle(out);
    }

    /// Nothing came: a re-formed epoch may be complete all the same (nothing of it was left).
    pub fn idle(&mut self, out: &mut Vec<Step>) {
        self.settle(out);
    }

    fn feed(&mut self, record: Record, out: &mut Vec<Step>) {
        self.next.insert(record.partition.clone(), record.offset + 1);
        let replaying = (self.phase == Phase::Replay).then(|| self.replay.front().map(|r| r.epoch)).flatten();
        out.push(Step::Feed { record, replaying });
    }

    fn replay_epoch_complete(&self) -> bool {
        self.phase == Phase::Replay
            && self.replay.front().is_some_and(|r| {
                r.ends.0.iter().all(|(t, p, end)| {
                    self.next.get(&Partition { topic: t.as_str().into(), partition: *p }).is_some_and(|n| *n >= *end)
                })
            })
    }

    /// Seals complete re-formed epochs and releases held records whose limit moved, over every
    /// partition, until nothing moves; then resumes partitions with nothing held.
    fn settle(&mut self, out: &mut Vec<Step>) {
        loop {
            let mut moved = false;
            while self.replay_epoch_complete() {
                let r = self.replay.pop_front().expect("complete epoch");
                out.push(Step::SealReplayed(r));
                if self.replay.is_empty() {
                    self.phase = Phase::Live;
                    out.push(Step::ReplayDone);
                }
                moved = true;
            }
            let parts: Vec<Partition> = self.held.keys().cloned().collect();
            for p in parts {
                while let Some(front) = self.held.get(&p).and_then(|q| q.front()) {
                    if self.limit(&p).is_some_and(|l| front.offset >= l) {
                        break;
                    }
                    let r = self.held.get_mut(&p).and_then(VecDeque::pop_front).expect("held");
                    moved = true;
                    if self.next.get(&p).is_none_or(|n| r.offset >= *n) {
                        self.feed(r, out);
                    }
                    if self.replay_epoch_complete() {
                        break; // seal before feeding on
                    }
                }
                if self.replay_epoch_complete() {
                    break;
                }
            }
            self.held.retain(|_, q| !q.is_empty());
            if !moved {
                break;
            }
        }
        let drained: Vec<Partition> = self.paused.iter().filter(|p| !self.held.contains_key(*p)).cloned().collect();
        for p in drained {
            self.paused.remove(&p);
            out.push(Step::Resume(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::OffsetList;

    fn part(t: &str, n: i32) -> Partition {
        Partition { topic: t.into(), partition: n }
    }

    /// An epoch's records in two arrival orders feed the engine the same lines in the same order,
    /// merged by message time: the listing of 00005 before its fill, the fill E2 (partition 2)
    /// before its bust (partition 1), the first E1 before the second, a fill of 00700 before its
    /// lot size changes (accepted) and one after (refused), whichever arrived first. Fed as they
    /// arrived, the two orders accept different lines (the test's premise).
    #[test]
    fn an_epoch_feeds_in_one_order_whatever_the_arrival() {
        let at = |t: &str, n: i32, offset: i64, ms: i64, line: &str| Record {
            partition: part(t, n),
            offset,
            payload: line.as_bytes().to_vec(),
            timestamp: Some(ms),
            parsed: None,
        };
        let instrument = |symbol: &str, lot: u32| {
            format!(
                r#"{{"type":"instrument","symbol":"{symbol}","name":"N","lot_size":{lot},"currency":"HKD","stamp_duty":true}}"#
            )
        };
        let fill = |exec: &str, account: &str, symbol: &str, price: &str| {
            format!(
                r#"{{"type":"fill","exec_id":"{exec}","order_id":"O","account":"{account}","strategy":"S","symbol":"{symbol}","side":"BUY","qty":"400","price":"{price}","ts":"2026-03-02T09:30:00+08:00"}}"#
            )
        };
        let (i, f) = ("harbour.instruments", "harbour.fills");
        let records = vec![
            at(i, 0, 0, 1, &instrument("00700", 100)),
            at(i, 0, 1, 2, &instrument("00005", 400)),
            at(f, 0, 0, 5, &fill("E1", "A", "00005", "60.05")),
            at(f, 2, 0, 10, &fill("E2", "B", "00700", "385.2")),
            at(f, 1, 0, 20, r#"{"type":"bust","exec_id":"E2","ts":"2026-03-02T09:31:00+08:00"}"#),
            at(f, 1, 1, 30, &fill("E1", "C", "00700", "385.2")),
            at(f, 2, 1, 35, &fill("E3", "D", "00700", "385.2")),
            at(i, 0, 2, 40, &instrument("00700", 1_000)),
            at(f, 0, 1, 45, &fill("E4", "D", "00700", "385.2")),
        ];
        let mut reversed = records.clone();
        reversed.reverse();
        // What an engine makes of records fed in this order: the refused lines and the positions.
        let run = |records: Vec<Record>| {
            let (metrics, config) = (crate::metrics::Metrics::default(), crate::engine::EngineConfig::new(100));
            let mut engine = crate::engine::Engine::new(&config, &metrics, Default::default());
            for r in records {
                let source = r.partition.to_string().into();
                let raw = String::from_utf8(r.payload).unwrap();
                engine.feed(harbour_sources::file::SourceLine { source, position: r.offset as u64, raw });
            }
            engine.seal();
            let state = engine.state();
            let refused: Vec<String> =
                state.dead_letters.iter().map(|d| format!("{}@{} {}", d.source, d.position, d.code)).collect();
            let positions: Vec<String> =
                state.positions.rows().map(|p| format!("{}/{}", p.key.account, p.key.symbol)).collect();
            (refused, positions)
        };
        let ordered = |mut records: Vec<Record>| {
            let mut tagged: Vec<(Record, ())> = records.drain(..).map(|r| (r, ())).collect();
            feed_order(&mut tagged, i);
            tagged.into_iter().map(|(r, ())| r).collect::<Vec<_>>()
        };
        assert_ne!(run(records.clone()), run(reversed.clone()), "arrival order matters to the input rules");
        let (a, b) = (run(ordered(records)), run(ordered(reversed)));
        assert_eq!(a, b);
        assert_eq!(a.0, ["harbour.fills/1@1 duplicate_exec_id", "harbour.fills/0@1 not_board_lot"]);
        assert_eq!(a.1, ["A/00005", "D/00700"]);
    }

    /// Within a partition offset order rules, whatever the timestamps (a record without one, or
    /// with an older one, stays behind the one before it); across partitions, equal times put the
    /// instruments topic first.
    #[test]
    fn feed_order_keeps_offsets_within_a_partition() {
        let r = |t: &str, n: i32, offset: i64, ms: Option<i64>| {
            (Record { partition: part(t, n), offset, payload: Vec::new(), timestamp: ms, parsed: None }, ())
        };
        let mut records = vec![
            r("f", 0, 1, None),
            r("f", 0, 0, Some(50)),
            r("f", 0, 2, Some(10)),
            r("f", 1, 0, Some(20)),
            r("i", 0, 0, Some(50)),
            r("f", 1, 1, Some(60)),
        ];
        feed_order(&mut records, "i");
        let got: Vec<String> = records.iter().map(|(r, ())| format!("{}@{}", r.partition, r.offset)).collect();
        assert_eq!(got, ["f/1@0", "i/0@0", "f/0@0", "f/0@1", "f/0@2", "f/1@1"]);
    }

    fn rec(t: &str, n: i32, offset: i64) -> Record {
        Record {
            partition: part(t, n),
            offset,
            payload: format!("{t}/{n}@{offset}").into_bytes(),
            timestamp: None,
            parsed: None,
        }
    }

    fn epoch(epoch: u64, lines: u64, ends: &[(&str, i32, i64)]) -> EpochRecord {
        EpochRecord {
            epoch,
            lines,
            ends: OffsetList(ends.iter().map(|(t, p, o)| (t.to_string(), *p, *o)).collect()),
            limits: None,
            refused: None,
        }
    }

    /// What the loop would do, as text: `feed a/0@1`, `seal 3`, `pause a/0`, ...
    fn run(g: &mut Gate, records: Vec<Record>) -> Vec<String> {
        let mut out = Vec::new();
        for r in records {
            g.offer(r, &mut out);
        }
        g.idle(&mut out);
        out.into_iter()
            .map(|s| match s {
                Step::Feed { record, .. } => format!("feed {}", String::from_utf8(record.payload).unwrap()),
                Step::SealReplayed(r) => format!("seal {}", r.epoch),
                Step::ReplayDone => "live".into(),
                Step::Pause(p) => format!("pause {p}"),
                Step::Resume(p) => format!("resume {p}"),
                Step::Gone { epoch, partition, from, end, found } => {
                    format!("gone {epoch} {partition} from {from:?} to {end}, found {found}")
                }
            })
            .collect()
    }

    /// Records of an epoch being re-formed that the partition no longer has (retention deleted
    /// them): its next record, past the logged end, says so at once instead of waiting for ever.
    #[test]
    fn records_gone_from_under_an_epoch_being_re_formed_are_named() {
        let start: Offsets = [(part("a", 0), 5)].into_iter().collect();
        // Read from 5 to 10 first; now the partition's first record is 12.
        let mut g =
            Gate::new(VecDeque::from([epoch(1, 5, &[("a", 0, 10)])]), false, "i", Offsets::new(), start.clone());
        let steps = run(&mut g, vec![rec("a", 0, 12), rec("a", 0, 13)]);
        assert_eq!(steps, ["gone 1 a/0 from Some(5) to 10, found 12", "pause a/0"]);
        // A partition read from its beginning whose records below the end are gone.
        let mut g =
            Gate::new(VecDeque::from([epoch(1, 3, &[("b", 0, 3)])]), false, "i", Offsets::new(), Offsets::new());
        assert_eq!(run(&mut g, vec![rec("b", 0, 7)])[0], "gone 1 b/0 from None to 3, found 7");
        // Not gone: every record there, the ones past the end held for the next epoch.
        let mut g = Gate::new(VecDeque::from([epoch(1, 5, &[("a", 0, 7)])]), false, "i", Offsets::new(), start);
        let steps = run(&mut g, (5..9).map(|o| rec("a", 0, o)).collect());
        assert!(steps.iter().all(|s| !s.starts_with("gone")), "{steps:?}");
        assert_eq!(feeds(&steps), ["a/0@5", "a/0@6", "a/0@7", "a/0@8"]);
    }

    fn feeds(steps: &[String]) -> Vec<&str> {
        steps.iter().filter_map(|s| s.strip_prefix("feed ")).collect()
    }

    /// The hang CI met: a partition passed over before a seal (here `a/0`, first in order) must
    /// be looked at again once the seal raised its limit, and again once the log is re-formed.
    #[test]
    fn a_seal_releases_partitions_passed_over_before_it() {
        // Logged: epoch 1 = c@0; epoch 2 = a@0, b@0; epoch 3 = a@1. Then live: a@2.
        let log = vec![
            epoch(1, 1, &[("c", 0, 1)]),
            epoch(2, 3, &[("a", 0, 1), ("b", 0, 1), ("c", 0, 1)]),
            epoch(3, 4, &[("a", 0, 2), ("b", 0, 1), ("c", 0, 1)]),
        ];
        let mut g = Gate::new(log.into(), false, "i", Offsets::new(), Offsets::new());
        // a and b wait for epoch 1; c@0 seals it; a@0 is released, then b@0 seals epoch 2 while
        // a@1 still waits: it must be released for epoch 3.
        let steps = run(&mut g, vec![rec("a", 0, 0), rec("a", 0, 1), rec("a", 0, 2), rec("b", 0, 0), rec("c", 0, 0)]);
        assert_eq!(
            steps,
            [
                "pause a/0",
                "pause b/0",
                "feed c/0@0",
                "seal 1",
                "feed a/0@0",
                "feed b/0@0",
                "seal 2",
                "feed a/0@1",
                "seal 3",
                "live",
                "feed a/0@2",
                "resume a/0",
                "resume b/0",
            ]
        );
        assert_eq!(g.phase(), Phase::Live);
        assert!(!g.holds());
    }

    /// Every record once, in offset order per partition, whatever the delivery order and
    /// re-deliveries; every logged epoch sealed with exactly its records before it.
    #[test]
    fn random_deliveries_re_form_every_epoch_and_end_live_with_nothing_held() {
        use rand::{Rng, SeedableRng};
        for seed in 0..300 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let parts = ["a", "b", "c"];
            // A first run's consumption order: records of random partitions, cut into epochs.
            let mut counts = [0i64; 3];
            let mut order = Vec::new();
            for _ in 0..rng.random_range(5..60) {
                let p = rng.random_range(0..3);
                order.push((p, counts[p]));
                counts[p] += 1;
            }
            let logged = rng.random_range(0..=order.len());
            let mut log = VecDeque::new();
            let mut ends = [0i64; 3];
            let mut i = 0;
            while i < logged {
                let n = rng.random_range(1..=4).min(logged - i);
                for &(p, o) in &order[i..i + n] {
                    ends[p] = o + 1;
                }
                i += n;
                let list: Vec<(&str, i32, i64)> =
                    (0..3).filter(|&p| ends[p] > 0).map(|p| (parts[p], 0, ends[p])).collect();
                log.push_back(epoch(i as u64, i as u64, &list));
            }
            let expected_epochs = log.len();
            let mut g = Gate::new(log.clone(), false, "i", Offsets::new(), Offsets::new());
            // Delivery: per-partition order kept, partitions interleaved at random, with
            // re-deliveries of a few records already delivered.
            let mut cursors = [0i64; 3];
            let mut deliveries = Vec::new();
            while (0..3).any(|p| cursors[p] < counts[p]) {
                let p = rng.random_range(0..3);
                if cursors[p] < counts[p] {
                    if cursors[p] > 0 && rng.random_bool(0.1) {
                        deliveries.push(rec(parts[p], 0, cursors[p] - 1));
                    }
                    deliveries.push(rec(parts[p], 0, cursors[p]));
                    cursors[p] += 1;
                }
            }
            let steps = run(&mut g, deliveries);
            // Each epoch's seal comes right after exactly its records.
            let mut fed = 0;
            let mut sealed = 0;
            for s in &steps {
                if s.starts_with("feed ") {
                    fed += 1;
                } else if let Some(e) = s.strip_prefix("seal ") {
                    let want = &log[sealed];
                    assert_eq!(e, want.epoch.to_string(), "seed {seed}");
                    assert_eq!(fed, want.lines, "seed {seed}: epoch {e} sealed after {fed} records");
                    sealed += 1;
                }
            }
            assert_eq!(sealed, expected_epochs, "seed {seed}: every logged epoch sealed");
            let mut per: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
            for f in feeds(&steps) {
                let (pn, o) = f.split_once('@').unwrap();
                per.entry(pn).or_default().push(o.parse().unwrap());
            }
            for (p, name) in parts.iter().enumerate() {
                let want: Vec<i64> = (0..counts[p]).collect();
                assert_eq!(per.remove(format!("{name}/0").as_str()).unwrap_or_default(), want, "seed {seed}");
            }
            assert_eq!(g.phase(), Phase::Live, "seed {seed}");
            assert!(!g.holds(), "seed {seed}: nothing held once live");
            // Pauses and resumes pair up.
            let pauses = steps.iter().filter(|s| s.starts_with("pause")).count();
            let resumes = steps.iter().filter(|s| s.starts_with("resume")).count();
            assert_eq!(pauses, resumes, "seed {seed}");
        }
    }

    #[test]
    fn bootstrap_feeds_instruments_first_then_everything_held() {
        let until: Offsets = [(part("i", 0), 2)].into_iter().collect();
        let mut g = Gate::new(VecDeque::new(), true, "i", until, Offsets::new());
        let mut out = Vec::new();
        for r in [rec("f", 0, 0), rec("i", 0, 0), rec("f", 0, 1), rec("i", 0, 1)] {
            g.offer(r, &mut out);
        }
        assert!(g.bootstrap_complete(|_| 0, &Offsets::new()));
        assert!(g.holds());
        g.go_live(&mut out);
        let steps: Vec<String> = out
            .into_iter()
            .map(|s| match s {
                Step::Feed { record, replaying } => {
                    assert_eq!(replaying, None);
                    format!("feed {}", String::from_utf8(record.payload).unwrap())
                }
                other => format!("{other:?}").split('(').next().unwrap().to_owned(),
            })
            .collect();
        assert_eq!(steps, ["Pause", "feed i/0@0", "feed i/0@1", "feed f/0@0", "feed f/0@1", "Resume"]);
    }
}
