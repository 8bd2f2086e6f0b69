//! The engine: reads lines, applies the input rules, feeds the dataflow epoch by epoch, and keeps
//! the output tables current.
//!
//! ```text
//!  lines ─► parse ─► Validator ─┬─► InputSessions ─► graph::harbour ─► inspect ─► OutputState
//!                               └─► dead letters (raw line, reason, source position) ─┘
//! ```
//!
//! One timely worker on the calling thread. An epoch is `pipeline.epoch_events` input lines (for
//! [`run`]; a source driving an [`Engine`] decides itself); the input time of an epoch is the
//! position of its first line, so versions grow with the input. Sealing an epoch steps the worker
//! until the outputs are complete for it, then applies the epoch's updates to the [`OutputState`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::VecCollection;
use harbour_dataflows::graph::{harbour, GraphConfig, Inputs};
use harbour_dataflows::marks::{Mark, MarkState};
use harbour_dataflows::model::{
    ExecId, Fill, Instrument, MarketEvent, Order, OrderId, PositionKey, StatusSubject, Symbol, TradingStatus, Ts,
};
use harbour_dataflows::operators::FillPnl;
use harbour_dataflows::orders::OrderFold;
use harbour_dataflows::pnl::PositionRow;
use harbour_dataflows::risk::book::{seeds_of, AlertRow, Limits, RiskRow, RiskSeed, VolRow};
use harbour_dataflows::rollups::Group;
use harbour_dataflows::sharded::ShardedMap;
use harbour_dataflows::sums::{FlowTotals, Totals};
use harbour_dataflows::ticks::SpreadTables;
use harbour_dataflows::validate::{
    trade_date, Accepted, DeadLetter, Input as Event, Rejection, Validator, ValidatorState, TS_MAX, TS_MIN,
};
use harbour_sinks::tables::SourceEvent;
use harbour_sources::contract::parse_line;
use harbour_sources::file::{ReplayError, SourceLine};
use harbour_sources::hkex::replay::FeedItem;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use timely::dataflow::ProbeHandle;

use crate::metrics::{EventCounters, Health, Metrics};
use crate::state::{BackgroundTable, Keyed, TableState};

/// Dead-letter code of a line that is not UTF-8 (see docs/input-contract.md).
pub const NOT_UTF8: &str = "not_utf8";

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Lines per epoch.
    pub epoch_events: usize,
    /// Dataflow settings.
    pub graph: GraphConfig,
    /// Spread tables for the tick check.
    pub spreads: SpreadTables,
    /// The risk limits file to re-read when it changes, and how often to look.
    pub limits_watch: Option<(std::path::PathBuf, std::time::Duration)>,
}

impl EngineConfig {
    /// `epoch_events` lines per epoch; built-in cost schedules, marks policy and spread tables; no
    /// risk history or limits; no limits file.
    pub fn new(epoch_events: usize) -> EngineConfig {
        EngineConfig {
            epoch_events,
            graph: GraphConfig::default(),
            spreads: SpreadTables::default(),
            limits_watch: None,
        }
    }
}

/// Every output table's current rows, plus the dead letters.
#[derive(Default)]
pub struct OutputState {
    /// Positions.
    pub positions: TableState<PositionRow>,
    /// Enriched fills (a million rows a day: applied on a thread of its own).
    pub fills: BackgroundTable<FillPnl>,
    /// Roll-ups.
    pub rollups: TableState<(Group, Totals)>,
    /// Minute flows.
    pub minutes: TableState<((Group, Ts), FlowTotals)>,
    /// Orders.
    pub orders: TableState<(OrderId, Order)>,
    /// Marks.
    pub marks: TableState<(Symbol, Mark)>,
    /// Instruments.
    pub instruments: TableState<Instrument>,
    /// Latest trading status per security and market.
    pub status: TableState<(StatusSubject, TradingStatus)>,
    /// Risk metrics per account, strategy and the desk.
    pub risk: TableState<RiskRow>,
    /// Limit alerts (insert-only).
    pub alerts: TableState<AlertRow>,
    /// EWMA volatility per symbol.
    pub vol: TableState<VolRow>,
    /// Dead letters, in input order.
    pub dead_letters: Vec<DeadLetter>,
}

/// Counts of a finished run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Lines read.
    pub lines: u64,
    /// Lines accepted.
    pub accepted: u64,
    /// Lines rejected.
    pub dead_letters: u64,
    /// Epochs completed.
    pub epochs: u64,
}

type Sink<D> = Rc<RefCell<Vec<(D, u64, isize)>>>;

fn tap<D: Clone + 'static>(c: VecCollection<'_, u64, D, isize>, probe: &ProbeHandle<u64>) -> Sink<D> {
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::operator::Operator;
    use timely::dataflow::operators::Probe;
    let sink: Sink<D> = Rc::new(RefCell::new(Vec::new()));
    let s = sink.clone();
    // The updates are moved into the sink, not copied (a position row is a few hundred bytes).
    // The probe watches the tap's (empty) output, whose frontier passes a time only once the tap
    // has taken every update of it: a probe before the tap would not count updates in flight
    // to it.
    let taken = c.inner.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Tap", move |_cap, _info| {
        // (The initial capability is dropped: the output carries nothing.)
        move |input, _output| {
            let mut s = s.borrow_mut();
            input.for_each(|_, batch| s.append(batch));
        }
    });
    let _ = taken.probe_with(probe);
    sink
}

struct Taps {
    positions: Sink<PositionRow>,
    fills: Sink<FillPnl>,
    rollups: Sink<(Group, Totals)>,
    minutes: Sink<((Group, Ts), FlowTotals)>,
    orders: Sink<(OrderId, Order)>,
    marks: Sink<(Symbol, Mark)>,
    instruments: Sink<Instrument>,
    status: Sink<(StatusSubject, TradingStatus)>,
    risk: Sink<RiskRow>,
    alerts: Sink<AlertRow>,
    vol: Sink<VolRow>,
}

struct Sessions {
    fills: InputSession<u64, Arc<Fill>, isize>,
    market: InputSession<u64, MarketEvent, isize>,
    orders: InputSession<u64, Order, isize>,
    instruments: InputSession<u64, Instrument, isize>,
    status: InputSession<u64, TradingStatus, isize>,
    limits: InputSession<u64, Limits, isize>,
    seeds: InputSession<u64, RiskSeed, isize>,
}

impl Sessions {
    fn advance(&mut self, t: u64) {
        self.fills.advance_to(t);
        self.market.advance_to(t);
        self.orders.advance_to(t);
        self.instruments.advance_to(t);
        self.limits.advance_to(t);
        self.seeds.advance_to(t);
        self.status.advance_to(t);
        self.status.flush();
        self.limits.flush();
        self.seeds.flush();
        self.fills.flush();
        self.market.flush();
        self.orders.flush();
        self.instruments.flush();
    }
}

fn drain<D: Keyed + Ord + Clone + std::fmt::Debug>(sink: &Sink<D>, table: &mut TableState<D>) {
    // Applied in place: the tap keeps its capacity from epoch to epoch.
    let mut updates = sink.borrow_mut();
    if !updates.is_empty() {
        table.apply(&mut updates);
    }
}

fn kind(e: &Event) -> &'static str {
    match e {
        Event::Fill(_) => "fill",
        Event::Bust(_) => "bust",
        Event::Quote(_) => "quote",
        Event::Close(_) => "close",
        Event::Instrument(_) => "instrument",
        Event::Order(_) => "order",
        Event::Status(_) => "status",
    }
}

/// The state a restarted engine needs to continue exactly where a checkpoint was taken: the input
/// rules' memory, the latest market fields per symbol, the latest state per order, the dead
/// letters so far and the input count (versions continue from it). Positions, fills and roll-ups
/// are functions of these and are rebuilt by feeding them back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// Input lines read before the snapshot.
    pub lines: u64,
    /// Run counts at the snapshot.
    pub accepted: u64,
    /// Dead letters counted at the snapshot.
    pub rejected: u64,
    /// Instruments, live fills, busted exec ids.
    pub validator: ValidatorState,
    /// Latest price fields per symbol.
    pub marks: Vec<(Symbol, MarkState)>,
    /// Latest state per order (shared with the engine: serialized as the orders themselves).
    pub orders: Vec<Arc<Order>>,
    /// Dead letters so far.
    pub dead_letters: Vec<DeadLetter>,
    /// Latest trading status per security and market.
    #[serde(default)]
    pub statuses: Vec<TradingStatus>,
    /// Risk alerts so far, with their versions (the path state of drawdowns and limits is
    /// rebuilt from them and the risk rows).
    #[serde(default)]
    pub alerts: Vec<(AlertRow, u64)>,
    /// Drawdown peaks and limit states per group.
    #[serde(default)]
    pub risk: Vec<RiskSeed>,
    /// Every table's row versions, so that the rows rebuilt by a restore carry the versions they
    /// had, not the snapshot's position. `None` in checkpoints written before they were kept.
    #[serde(default)]
    pub versions: Option<RowVersions>,
    /// The risk limits in force (a reload since the start is not in the configuration the
    /// restarted process reads: the file may have changed again since). `None` in checkpoints
    /// written before it was kept: the configured limits.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// The time the next epoch takes: past `lines` when epochs without lines (limits changed
    /// while the input was idle) were sealed. 0 in checkpoints written before it was kept (the
    /// line after `lines`).
    #[serde(default)]
    pub time: u64,
    /// The input's clock: the newest event time accepted (`None` before any, and in checkpoints
    /// written before it was kept).
    #[serde(default)]
    pub clock: Option<Ts>,
}

impl EngineSnapshot {
    /// Puts the lists taken from hash maps in key order, so that a state gives the same
    /// checkpoint whatever its maps' order (done by the checkpoint store's thread, not the loop).
    pub fn normalize(&mut self) {
        self.validator.sort();
        self.orders.sort_unstable_by(|a, b| a.order_id.cmp(&b.order_id));
    }
}

/// The version of every row of every table, by key (what [`EngineSnapshot::versions`] keeps;
/// alerts keep theirs with the alerts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowVersions {
    positions: Vec<(PositionKey, u64)>,
    fills: Vec<(ExecId, u64)>,
    rollups: Vec<(Group, u64)>,
    minutes: Vec<((Group, Ts), u64)>,
    orders: Vec<(OrderId, u64)>,
    marks: Vec<(Symbol, u64)>,
    instruments: Vec<(Symbol, u64)>,
    status: Vec<(StatusSubject, u64)>,
    risk: Vec<(Group, u64)>,
    vol: Vec<(Symbol, u64)>,
    /// The rows removed since changes were tracked (empty in checkpoints written before they
    /// were kept, 2026-11-27).
    #[serde(default)]
    gone: Gone,
}

/// A row of the minutes table: (group, minute) and its flow.
type MinuteRow = ((Group, Ts), FlowTotals);

/// Every table's removed rows with the versions that removed them ([`TableState::gone`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Gone {
    positions: Vec<(PositionRow, u64)>,
    fills: Vec<(FillPnl, u64)>,
    rollups: Vec<((Group, Totals), u64)>,
    minutes: Vec<(MinuteRow, u64)>,
    orders: Vec<((OrderId, Order), u64)>,
    marks: Vec<((Symbol, Mark), u64)>,
    instruments: Vec<(Instrument, u64)>,
    status: Vec<((StatusSubject, TradingStatus), u64)>,
    risk: Vec<(RiskRow, u64)>,
    vol: Vec<(VolRow, u64)>,
}

/// Calls the macro `$m` with the name of every table [`RowVersions`] keeps (a field of
/// [`OutputState`], of `RowVersions` and of [`Gone`] alike).
macro_rules! versioned_tables {
    ($m:ident) => {
        $m!(positions, fills, rollups, minutes, orders, marks, instruments, status, risk, vol)
    };
}

impl RowVersions {
    fn of(s: &OutputState) -> RowVersions {
        macro_rules! of {
            ($($t:ident),*) => {
                RowVersions { $($t: s.$t.key_versions(),)* gone: Gone { $($t: s.$t.gone(),)* } }
            };
        }
        versioned_tables!(of)
    }

    fn apply(self, s: &mut OutputState) {
        macro_rules! apply {
            ($($t:ident),*) => {{
                $(
                    s.$t.set_versions(self.$t);
                    s.$t.set_gone(self.gone.$t);
                )*
            }};
        }
        versioned_tables!(apply);
    }
}

/// How far past its message's source time (a Kafka timestamp) an accepted event time may be and
/// still move the input's clock: a day (producers' clocks, a feed stamped in advance).
const CLOCK_AHEAD_NS: i64 = 86_400_000_000_000;

/// A running pipeline: one timely worker with the Harbour dataflow, fed line by line.
///
/// Drive it with [`Engine::feed`] and [`Engine::seal`] (a source decides where epochs end), or run
/// a whole input with [`run`]. After `seal` returns, [`Engine::state`] holds every output as of the
/// sealed epoch: the point where a sink would write and report the epoch durable.
pub struct Engine<'m> {
    worker: timely::worker::Worker,
    inputs: Sessions,
    taps: Taps,
    probe: ProbeHandle<u64>,
    validator: Validator,
    spreads: SpreadTables,
    /// Latest market fields and order states, kept beside the dataflow for snapshots.
    mark_states: FxHashMap<Symbol, MarkState>,
    /// Symbols quoted since the last `take_changes`, with the epoch (version) of their latest
    /// quote (kept only while changes are tracked).
    quoted: Option<FxHashMap<Symbol, u64>>,
    /// Shared with checkpoints (a snapshot takes them by reference count).
    order_states: ShardedMap<OrderId, Arc<Order>>,
    /// Security halts, to flag fills timestamped during one ([`crate::halts`]).
    halts: crate::halts::Halts,
    state: OutputState,
    dead_letters_taken: usize,
    /// Every message fed, while changes are tracked.
    events: Option<Vec<SourceEvent>>,
    /// The newest event time accepted so far: the input's clock, which dates what carries no
    /// time of its own ([`Engine::feed_at`]).
    clock: Option<Ts>,
    /// The whole text of the last refused line, when the dead letter keeps it clipped
    /// ([`Engine::take_unclipped`]).
    unclipped: Option<String>,
    stats: RunStats,
    metrics: &'m Metrics,
    event_counters: EventCounters,
    health: Arc<Health>,
    limits_watch: Option<crate::risk::LimitsWatch>,
    /// The risk limits in force.
    limits: Limits,
    /// Limits that took effect at the last seal (a reload), for the epoch log.
    reloaded: Option<Limits>,
    /// New limits the watch found before the seal that applies them ([`Engine::limits_pending`]).
    pending: Option<Limits>,
    /// Input other than lines went into the open epoch (new limits, a restore): sealed even
    /// without lines.
    inserted: bool,
    /// The time of the restore's epoch, until changes are tracked (its risk rows are logged then).
    restored_at: Option<u64>,
    /// The ids of the alerts the snapshot held, until changes are tracked (an alert at the
    /// restore's version that is one of them was sent before: not the restore's own).
    restored_alerts: Option<std::collections::HashSet<String>>,
}

impl<'m> Engine<'m> {
    /// Builds the dataflow.
    pub fn new(config: &EngineConfig, metrics: &'m Metrics, health: Arc<Health>) -> Engine<'m> {
        let mut worker = local_worker();
        let graph = config.graph.clone();
        let (mut inputs, taps, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (fills_in, fills) = scope.new_collection();
            let (market_in, market) = scope.new_collection();
            let (orders_in, orders) = scope.new_collection();
            let (instruments_in, instruments) = scope.new_collection();
            let (limits_in, limits) = scope.new_collection();
            let (seeds_in, seeds) = scope.new_collection();
            let (status_in, status) = scope.new_collection();
            let out = harbour(Inputs { fills, market, orders, instruments, status, limits, seeds }, &graph);
            let probe = ProbeHandle::new();
            let taps = Taps {
                positions: tap(out.positions, &probe),
                fills: tap(out.fills, &probe),
                rollups: tap(out.rollups, &probe),
                minutes: tap(out.minutes, &probe),
                orders: tap(out.orders, &probe),
                marks: tap(out.marks, &probe),
                instruments: tap(out.instruments, &probe),
                status: tap(out.status, &probe),
                risk: tap(out.risk, &probe),
                alerts: tap(out.alerts, &probe),
                vol: tap(out.vol, &probe),
            };
            let sessions = Sessions {
                fills: fills_in,
                market: market_in,
                orders: orders_in,
                instruments: instruments_in,
                status: status_in,
                limits: limits_in,
                seeds: seeds_in,
            };
            (sessions, taps, probe)
        });
        // An epoch's time is the 1-based position of its first line (or one past the previous
        // epoch's when that is later: after an epoch without lines); versions grow with the input.
        inputs.advance(1);
        Engine {
            worker,
            inputs,
            taps,
            probe,
            validator: Validator::new(config.spreads.clone()).with_costs_from(config.graph.schedules.earliest()),
            spreads: config.spreads.clone(),
            mark_states: FxHashMap::default(),
            quoted: None,
            order_states: ShardedMap::default(),
            halts: crate::halts::Halts::default(),
            state: OutputState::default(),
            dead_letters_taken: 0,
            events: None,
            clock: None,
            unclipped: None,
            stats: RunStats::default(),
            metrics,
            event_counters: EventCounters::new(metrics),
            health,
            limits_watch: config.limits_watch.clone().map(|(p, every)| crate::risk::LimitsWatch::new(p, every)),
            limits: config.graph.risk.limits.clone(),
            reloaded: None,
            pending: None,
            inserted: false,
            restored_at: None,
            restored_alerts: None,
        }
    }

    /// Parses, checks and feeds one line into the current epoch; a refused line becomes a dead
    /// letter (the last of `state().dead_letters`). Returns whether the line was accepted.
    pub fn feed(&mut self, line: SourceLine) -> bool {
        self.feed_at(line, None, None)
    }

    /// As [`Engine::feed`], with the line already parsed (`parse_line(&line.raw, line.position)`,
    /// done by a source on a thread of its own) when `parsed` is given, and the time its source
    /// gave it (`at`, ms since the epoch: a Kafka message's timestamp) when it has one.
    ///
    /// The line's trade date, which the event log and a dead letter carry (ClickHouse partitions
    /// them by it), is that of its own event time when it parsed with one (in range); else that
    /// of the input's clock (the newest event time accepted before it: reference data, a line
    /// refused unparsed, take the date of the input around them); else, before any event time,
    /// that of `at`; else 1970-01-01. Each is a function of the input and its order, so a replay
    /// (a restart re-forming its logged epochs; the clock is kept in checkpoints) dates a line as
    /// before.
    pub fn feed_at(&mut self, mut line: SourceLine, parsed: Option<Result<Event, Rejection>>, at: Option<i64>) -> bool {
        self.count_line();
        let at = at.and_then(|ms| ms.checked_mul(1_000_000));
        if not_utf8(&line.raw) {
            let day = self.day_of(None, at);
            self.dead_letter(line, day, "", NOT_UTF8, "the line is not UTF-8 (bytes replaced by U+FFFD)".into());
            return false;
        }
        let validator = &mut self.validator;
        let mut parsed_kind = "";
        let mut own = None;
        let parsed = parsed.unwrap_or_else(|| parse_line(&line.raw, line.position));
        let outcome = parsed.and_then(|e| {
            let k = kind(&e);
            parsed_kind = k;
            own = e.ts().filter(|ts| (TS_MIN..TS_MAX).contains(ts));
            validator.accept(e).map(|a| (k, a))
        });
        match outcome {
            Ok((k, accepted)) => {
                // A time more than a day past the message's own timestamp (a mistyped year, say)
                // does not move the clock: it would date every later message without a time of
                // its own under that day.
                if own.is_some_and(|t| at.is_none_or(|a| t <= a.saturating_add(CLOCK_AHEAD_NS))) {
                    self.clock = self.clock.max(own);
                }
                if self.events.is_some() {
                    // (Dated only when logged. The line's text is not needed past here: moved
                    // into the log, not copied.)
                    let day = self.day_of(own, at);
                    let raw = std::mem::take(&mut line.raw);
                    self.log_event(&line, day, k, "", raw);
                }
                self.stats.accepted += 1;
                self.event_counters.inc(k);
                let inputs = &mut self.inputs;
                for a in accepted {
                    match a {
                        Accepted::Fill(f) => {
                            if let Some(first) = self.halts.flag(f.key.symbol, f.ts) {
                                self.metrics.fills_during_halt.inc();
                                let (exec_id, symbol) = (&f.exec_id, f.key.symbol);
                                let (source, position) = (&line.source, line.position);
                                let what = "fill timestamped while its security was halted (kept)";
                                if first {
                                    tracing::warn!(%exec_id, %symbol, ts = f.ts, %source, position, "{what}");
                                } else {
                                    tracing::debug!(%exec_id, %symbol, ts = f.ts, %source, position, "{what}");
                                }
                            }
                            inputs.fills.insert(f)
                        }
                        Accepted::Bust(f) => inputs.fills.remove(f),
                        Accepted::Market(mut m) => {
                            // Its place in the input, for ties on event time (marks::newer).
                            m.set_seq(self.stats.lines);
                            self.mark_states.entry(m.symbol()).or_default().update(&m);
                            if let Some(q) = self.quoted.as_mut() {
                                q.insert(m.symbol(), *inputs.fills.time());
                            }
                            inputs.market.insert(m)
                        }
                        Accepted::Status(st) => {
                            self.halts.record(&st);
                            inputs.status.insert(st)
                        }
                        Accepted::Order(o) => {
                            let held = self.order_states.get(&o.order_id).map(Arc::as_ref);
                            if OrderFold::supersedes(&o, held) {
                                self.order_states.insert(o.order_id.clone(), Arc::new(o.clone()));
                            }
                            inputs.orders.insert(o)
                        }
                        Accepted::Instrument { previous, current } => {
                            if let Some(p) = previous {
                                inputs.instruments.remove(p);
                            }
                            inputs.instruments.insert(current);
                        }
                    }
                }
                true
            }
            Err(rejection) => {
                let day = self.day_of(own, at);
                self.dead_letter(line, day, parsed_kind, rejection.code(), rejection.to_string());
                false
            }
        }
    }

    /// The trade date of a line with event time `own` and source time `at` (in ns; see
    /// [`Engine::feed_at`]; the clock moves only to event times at most [`CLOCK_AHEAD_NS`] past
    /// their message's source time, when it has one).
    fn day_of(&self, own: Option<Ts>, at: Option<Ts>) -> NaiveDate {
        let at = at.filter(|ts| (TS_MIN..TS_MAX).contains(ts));
        own.or(self.clock).or(at).map_or(NaiveDate::default(), trade_date)
    }

    /// Records input a source could not decode (an OMD-C packet, say) as a dead letter: counted as
    /// a line and a dead letter, exactly like a refused line.
    pub fn reject(&mut self, line: SourceLine, code: &'static str, reason: String) {
        self.count_line();
        let day = self.day_of(None, None);
        self.dead_letter(line, day, "", code, reason);
    }

    fn count_line(&mut self) {
        self.stats.lines += 1;
        self.health.lines.store(self.stats.lines, Ordering::Relaxed);
    }

    /// The event-sourcing log's record of a line of text `raw` (when changes are tracked; a
    /// refused line's clipped like its dead letter's).
    fn log_event(
        &mut self,
        line: &SourceLine,
        trade_date: NaiveDate,
        kind: &'static str,
        code: &'static str,
        raw: String,
    ) {
        if let Some(log) = self.events.as_mut() {
            log.push(SourceEvent {
                source: line.source.clone(),
                position: line.position,
                trade_date,
                kind,
                code: SmolStr::new_static(code),
                raw,
                version: *self.inputs.fills.time(),
            });
        }
    }

    /// A refused line (of `kind` when it parsed) of trade date `day`: logged and kept as a dead
    /// letter, its text clipped in both.
    fn dead_letter(
        &mut self,
        line: SourceLine,
        day: NaiveDate,
        kind: &'static str,
        code: &'static str,
        reason: String,
    ) {
        self.stats.dead_letters += 1;
        self.metrics.dead_letter(code);
        tracing::debug!(source = %line.source, position = line.position, %reason, "dead letter");
        let clip = clipped(&line.raw);
        if self.events.is_some() {
            let raw = clip.clone().unwrap_or_else(|| line.raw.clone());
            self.log_event(&line, day, kind, code, raw);
        }
        let (raw, unclipped) = match clip {
            Some(c) => (c, Some(line.raw)),
            None => (line.raw, None),
        };
        self.unclipped = unclipped;
        self.state.dead_letters.push(DeadLetter {
            source: line.source,
            position: line.position,
            raw,
            code: code.into(),
            reason,
            trade_date: day,
        });
    }

    /// The whole text of the line the last dead letter was made of, when that keeps it clipped
    /// ([`DEAD_LETTER_RAW_BYTES`]): for a destination that takes it whole (the Kafka dead-letter
    /// topic). `None` when it was kept whole.
    pub fn take_unclipped(&mut self) -> Option<String> {
        self.unclipped.take()
    }

    /// Everything needed to continue from here after a restart (see [`EngineSnapshot`]); call it
    /// right after [`Engine::seal`].
    pub fn snapshot(&mut self) -> EngineSnapshot {
        self.state.fills.settle();
        let mut marks: Vec<(Symbol, MarkState)> = self.mark_states.iter().map(|(k, v)| (*k, v.clone())).collect();
        marks.sort_unstable_by_key(|(k, _)| *k);
        // Taken by reference count and not sorted: the loop's thread takes snapshots while the
        // store's thread sorts and writes them (`EngineSnapshot::normalize`).
        let orders: Vec<Arc<Order>> = self.order_states.values().cloned().collect();
        EngineSnapshot {
            lines: self.stats.lines,
            accepted: self.stats.accepted,
            rejected: self.stats.dead_letters,
            validator: self.validator.state(),
            marks,
            orders,
            dead_letters: self.state.dead_letters.clone(),
            statuses: self.state.status.rows().map(|(_, s)| s.clone()).collect(),
            alerts: self.state.alerts.versioned().into_iter().map(|v| (v.row, v.version)).collect(),
            risk: seeds_of(self.state.risk.rows(), self.state.alerts.rows()),
            limits: Some(self.limits.clone()),
            versions: Some(RowVersions::of(&self.state)),
            time: self.open_epoch(),
            clock: self.clock,
        }
    }

    /// Replaces the risk limits from the current epoch on (a reload); false (nothing done) when
    /// they are the limits in force.
    pub fn set_limits(&mut self, limits: Limits) -> bool {
        if limits == self.limits {
            return false;
        }
        self.inputs.limits.insert(limits.clone());
        self.inserted = true;
        self.limits = limits.clone();
        self.reloaded = Some(limits);
        true
    }

    /// The risk limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The limits that took effect at the last seal, if they changed there: what a run that logs
    /// its epochs records with the epoch, so that re-forming it applies them at the same point.
    pub fn take_reloaded(&mut self) -> Option<Limits> {
        self.reloaded.take()
    }

    /// Continues from a snapshot: feeds its instruments, market fields, live fills and orders back
    /// as one epoch at the snapshot's input position, so every output table holds what it held
    /// when the snapshot was taken; the rows then take back the versions they had (kept in the
    /// snapshot; a snapshot without them leaves the restore's position), and later epochs
    /// continue from there.
    /// Call on a fresh engine, before any [`Engine::feed`].
    pub fn restore(&mut self, snap: EngineSnapshot) {
        assert_eq!(self.stats.lines, 0, "restore runs on a fresh engine");
        assert!(self.events.is_none(), "restore runs before track_changes");
        if snap.lines == 0 && snap.time <= 1 {
            return;
        }
        self.inserted = true;
        let inputs = &mut self.inputs;
        // The restore's epoch takes the time of the last epoch sealed before the snapshot (its
        // rows then take back their own versions), so that the next epoch takes the time it would
        // have taken without the restart: never one an epoch before it already had.
        let t = snap.lines.max(snap.time.saturating_sub(1)).max(1);
        inputs.advance(t);
        for i in &snap.validator.instruments {
            inputs.market.insert(harbour_dataflows::model::MarketEvent::Listed(i.symbol));
            inputs.instruments.insert(i.clone());
        }
        for (symbol, m) in &snap.marks {
            for e in m.events(*symbol) {
                inputs.market.insert(e);
            }
        }
        for f in &snap.validator.live {
            inputs.fills.insert(Arc::clone(f));
        }
        for o in &snap.orders {
            inputs.orders.insert(Order::clone(o));
        }
        for s in &snap.risk {
            inputs.seeds.insert(s.clone());
        }
        for s in &snap.statuses {
            inputs.status.insert(s.clone());
        }
        let versions = snap.versions;
        if let Some(l) = snap.limits {
            // The limits in force when the snapshot was taken, whatever the file holds now (a
            // change since is picked up by the watch once the run goes on).
            self.set_limits(l);
        }
        // Alerts are events: they are kept as they were, not fired again.
        self.restored_alerts = Some(snap.alerts.iter().map(|(a, _)| a.id()).collect());
        self.state.alerts.restore(snap.alerts);
        self.mark_states = snap.marks.into_iter().collect();
        self.order_states = snap.orders.into_iter().map(|o| (o.order_id.clone(), o)).collect();
        let costs_from = self.validator.costs_from();
        self.validator = Validator::restore(self.spreads.clone(), snap.validator).with_costs_from(costs_from);
        self.state.dead_letters = snap.dead_letters;
        self.clock = snap.clock;
        self.stats.lines = snap.lines;
        self.stats.accepted = snap.accepted;
        self.stats.dead_letters = snap.rejected;
        // (Rebuilding the dataflow is not an epoch: not counted in harbour_pipeline_epochs_total.)
        self.seal_inner(false, false);
        if let Some(v) = versions {
            v.apply(&mut self.state);
        }
        // Halts from the latest status per security (the changes before it are not kept).
        self.halts = crate::halts::Halts::default();
        for (_, st) in self.state.status.rows() {
            self.halts.record(st);
        }
        self.restored_at = Some(t);
        self.reloaded = None;
        self.stats.epochs = 0;
        // Rebuilding the dataflow is not an epoch of input: its time is not the pipeline's lag.
        self.metrics.epoch_lag_seconds.set(0.0);
        tracing::info!(lines = snap.lines, positions = self.state.positions.len(), "engine restored from snapshot");
    }

    /// Ends the current epoch: runs the dataflow until its outputs are complete and applies them
    /// to the state. Returns the sealed epoch's time (its version). A limits file that changed
    /// takes effect here.
    pub fn seal(&mut self) -> u64 {
        self.seal_inner(true, true)
    }

    /// [`Engine::seal`] for an epoch re-formed from a log: the limits it logged (if any) take
    /// effect instead of what the limits file holds now.
    pub fn seal_as_logged(&mut self, limits: Option<Limits>) -> u64 {
        if let Some(l) = limits {
            // An epoch logged with limits is one even without lines: it was sealed for them (or
            // has lines), also when they are in force already here (a restart that read them).
            self.inserted = true;
            if self.set_limits(l) {
                tracing::info!(epoch = *self.inputs.fills.time(), "risk limits of the logged epoch applied");
            }
            self.reloaded = None; // logged already
        }
        self.seal_inner(false, true)
    }

    /// Looks at the limits file (at most every `risk.reload_ms`): whether it holds new limits
    /// that the next seal applies. A source whose input is idle seals an epoch without lines for
    /// them, so that a change takes effect (and its breaches alert) without waiting for input.
    /// A refused file is reported here (the limits in force stay).
    pub fn limits_pending(&mut self) -> bool {
        if self.pending.is_none() {
            let epoch = self.open_epoch();
            match self.limits_watch.as_mut().and_then(|w| w.poll()) {
                Some(Ok(limits)) if limits != self.limits => self.pending = Some(limits),
                Some(Ok(_)) | None => {}
                Some(Err(e)) => self.reload_refused(epoch, &e),
            }
        }
        self.pending.is_some()
    }

    fn reload(&mut self, epoch: u64, limits: Limits) {
        if self.set_limits(limits) {
            tracing::info!(epoch, "risk limits reloaded");
            self.metrics.limit_reloads.inc();
        }
    }

    fn reload_refused(&self, epoch: u64, e: &crate::config::ConfigError) {
        tracing::error!(epoch, error = %e, "risk limits file refused; the limits in force stay");
        self.metrics.limit_reload_errors.inc();
    }

    /// Seals the epoch; `watch`: look at the limits file; `count`: an epoch of input (counted).
    fn seal_inner(&mut self, watch: bool, count: bool) -> u64 {
        let sealed = Instant::now();
        let epoch = *self.inputs.fills.time();
        // (A replayed epoch takes its logged limits, not the file's: a change found stays pending.)
        let reloaded = match (watch, self.pending.take()) {
            (false, kept) => {
                self.pending = kept;
                None
            }
            (true, Some(limits)) => Some(Ok(limits)),
            (true, None) => self.limits_watch.as_mut().and_then(|w| w.poll()),
        };
        match reloaded {
            Some(Ok(limits)) => self.reload(epoch, limits),
            Some(Err(e)) => self.reload_refused(epoch, &e),
            None => {}
        }
        // Past the epoch's lines, and past the epoch itself when it has none but other input
        // (an epoch with nothing at all is not one: its time is the next epoch's).
        let next = (self.stats.lines + 1).max(if std::mem::take(&mut self.inserted) { epoch + 1 } else { epoch });
        self.inputs.advance(next);
        let probe = &self.probe;
        self.worker.step_while(|| probe.less_than(&next));
        let (taps, state) = (&self.taps, &mut self.state);
        drain(&taps.positions, &mut state.positions);
        state.fills.apply(&mut taps.fills.borrow_mut());
        drain(&taps.rollups, &mut state.rollups);
        drain(&taps.minutes, &mut state.minutes);
        drain(&taps.orders, &mut state.orders);
        drain(&taps.marks, &mut state.marks);
        drain(&taps.instruments, &mut state.instruments);
        drain(&taps.status, &mut state.status);
        drain(&taps.risk, &mut state.risk);
        drain(&taps.vol, &mut state.vol);
        if let Some(desk) = state.risk.get(&Group::Desk) {
            use rust_decimal::prelude::ToPrimitive;
            for (figure, v) in [
                ("gross", desk.gross),
                ("net", desk.net),
                ("var_99", desk.var_99),
                ("hist_var_99", desk.hist_var_99),
                ("es_99", desk.es_99),
                ("drawdown", desk.drawdown),
            ] {
                self.metrics
                    .desk_risk
                    .get_or_create(&crate::metrics::FigureLabel { figure })
                    .set(v.to_f64().unwrap_or(0.0));
            }
        }
        let alerts = taps.alerts.borrow().len();
        drain(&taps.alerts, &mut state.alerts);
        self.metrics.risk_alerts.inc_by(alerts as u64);
        self.stats.epochs += 1;
        if count {
            self.metrics.epochs.inc();
        }
        self.metrics.epoch.set(epoch as i64);
        self.metrics.positions.set(state.positions.len() as i64);
        self.metrics.epoch_lag_seconds.set(sealed.elapsed().as_secs_f64());
        self.health.epoch.store(epoch, Ordering::Relaxed);
        tracing::debug!(epoch, positions = state.positions.len(), "epoch complete");
        epoch
    }

    /// The time of the epoch being fed (its rows' version once sealed).
    pub fn open_epoch(&self) -> u64 {
        *self.inputs.fills.time()
    }

    /// Outputs as of the last sealed epoch.
    pub fn state(&mut self) -> &OutputState {
        self.state.fills.settle();
        &self.state
    }

    /// Keeps a log of every table's changes from now on, for [`Engine::take_changes`].
    pub fn track_changes(&mut self) {
        crate::state::track_changes(&mut self.state);
        if let Some(t) = self.restored_at.take() {
            // Risk and volatility rows are functions of settings the checkpoint does not keep
            // (NAVs, lambda, the horizon, contributors) and of float sums in the order of the
            // restore: the rebuilt ones may differ from what the stores hold, so they all go to
            // the sinks again, at the restore's version; and so do alerts the restore fired (a
            // changed setting can start or end a breach there). The restore's version can be the
            // one the stores hold for a row: both take the row written last at a version when its
            // content differs (ClickHouse's ReplacingMergeTree, Redis's fence).
            self.state.risk.relog(|_, _| true, Some(t));
            self.state.vol.relog(|_, _| true, Some(t));
            // (Not those the snapshot held: the restore's epoch can share its time with the last
            // epoch before the snapshot, whose alerts the sinks have.)
            let held = self.restored_alerts.take().unwrap_or_default();
            self.state.alerts.relog(|a, v| v == t && !held.contains(&a.id()), None);
        }
        self.dead_letters_taken = self.state.dead_letters.len();
        self.events.get_or_insert_with(Vec::new);
        self.quoted.get_or_insert_with(FxHashMap::default);
    }

    /// The changes since the last call (or since [`Engine::track_changes`]), in epoch order.
    pub fn take_changes(&mut self) -> harbour_sinks::tables::Changes {
        let mut c = crate::state::take_changes(&mut self.state, self.dead_letters_taken);
        self.dead_letters_taken = self.state.dead_letters.len();
        if let Some(q) = self.quoted.as_mut() {
            let mut quoted: Vec<(Symbol, u64)> = q.drain().collect();
            quoted.sort_unstable();
            c.quotes = quoted
                .into_iter()
                .filter_map(|(s, version)| {
                    let row = (s, self.mark_states.get(&s)?.clone());
                    Some(harbour_sinks::tables::Change { row, version, deleted: false })
                })
                .collect();
        }
        c.events = self.events.as_mut().map(std::mem::take).unwrap_or_default();
        c
    }

    /// The latest market fields of a symbol (bid, ask, last, close with their times).
    pub fn market(&self, symbol: Symbol) -> Option<&MarkState> {
        self.mark_states.get(&symbol)
    }

    /// Counts so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// The dead letters so far, in input order (without waiting for the fills table's thread).
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.state.dead_letters
    }

    /// Ends the run, returning the outputs and counts.
    pub fn finish(mut self) -> (OutputState, RunStats) {
        self.state.fills.settle();
        (self.state, self.stats)
    }
}

/// Runs `lines` through the pipeline to the end, `config.epoch_events` lines per epoch; returns the
/// final outputs.
pub fn run(
    lines: impl Iterator<Item = Result<SourceLine, ReplayError>>,
    config: &EngineConfig,
    metrics: &Metrics,
    health: &Arc<Health>,
) -> Result<(OutputState, RunStats), ReplayError> {
    drive(lines.map(|l| l.map(FeedItem::Line)), config, metrics, health, false, |_, _, _| Ok(()))
}

/// Why [`run_into`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunIntoError {
    /// The input could not be read.
    #[error(transparent)]
    Read(#[from] ReplayError),
    /// The store refused a write (after the sink's own retries).
    #[error("{0}")]
    Sink(String),
}

/// Like [`run`], writing the tables' changes to a store as it goes: at most every `every` (and at
/// the end), `write` gets the changes of the epochs sealed since its previous call, with the
/// newest epoch (the version of the newest rows). The run stops at the first error `write` returns.
pub fn run_into(
    lines: impl Iterator<Item = Result<SourceLine, ReplayError>>,
    config: &EngineConfig,
    metrics: &Metrics,
    health: &Arc<Health>,
    every: std::time::Duration,
    mut write: impl FnMut(u64, harbour_sinks::tables::Changes) -> Result<(), String>,
) -> Result<(OutputState, RunStats), RunIntoError> {
    let mut last = Instant::now();
    let items = lines.map(|l| l.map(FeedItem::Line).map_err(RunIntoError::from));
    drive(items, config, metrics, health, true, |engine, epoch, end| {
        if end || last.elapsed() >= every {
            write(epoch, engine.take_changes()).map_err(RunIntoError::Sink)?;
            last = Instant::now();
        }
        Ok(())
    })
}

/// Runs recorded OMD-C merged with JSON lines (see `harbour_sources::hkex::replay`), sealing an
/// epoch every `epoch_events` items.
pub fn run_feed(
    items: impl Iterator<Item = FeedItem>,
    config: &EngineConfig,
    metrics: &Metrics,
    health: &Arc<Health>,
) -> (OutputState, RunStats) {
    match drive(items.map(Ok::<_, std::convert::Infallible>), config, metrics, health, false, |_, _, _| Ok(())) {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Feeds `items` to a new engine, sealing an epoch every `epoch_events` items (and at the end);
/// `sealed(engine, epoch, end)` after each seal and once more at the end (`end`), with the
/// engine's changes tracked when `track`.
fn drive<'m, E>(
    items: impl Iterator<Item = Result<FeedItem, E>>,
    config: &EngineConfig,
    metrics: &'m Metrics,
    health: &Arc<Health>,
    track: bool,
    mut sealed: impl FnMut(&mut Engine<'m>, u64, bool) -> Result<(), E>,
) -> Result<(OutputState, RunStats), E> {
    let mut engine = Engine::new(config, metrics, health.clone());
    if track {
        engine.track_changes();
    }
    let mut in_epoch = 0usize;
    let mut epoch = 0;
    for item in items {
        match item? {
            FeedItem::Line(line) => {
                engine.feed(line);
            }
            FeedItem::Reject { source, position, raw, code, reason } => {
                engine.reject(SourceLine { source, position, raw }, code, reason)
            }
        }
        in_epoch += 1;
        if in_epoch >= config.epoch_events {
            epoch = engine.seal();
            in_epoch = 0;
            sealed(&mut engine, epoch, false)?;
        }
    }
    if in_epoch > 0 || engine.stats().epochs == 0 {
        epoch = engine.seal();
    }
    sealed(&mut engine, epoch, true)?;
    Ok(engine.finish())
}

/// Bytes of a refused line that its dead letter and its event-log record keep. Every dead
/// letter stays in the state (the tables of refused input are written from it) and in every
/// checkpoint: kept whole, a flood of large poison messages (Kafka takes up to a megabyte each)
/// grew memory by their size until the process ran out of it. A longer line is kept to its first
/// 16 KiB (cut at a character boundary) and a note of its size; the Kafka dead-letter topic still
/// gets it whole (up to its own cap), and its source position says where the original is.
pub const DEAD_LETTER_RAW_BYTES: usize = 16 * 1024;

/// `raw` cut to [`DEAD_LETTER_RAW_BYTES`] with a note of its size, if it is longer.
fn clipped(raw: &str) -> Option<String> {
    // (A line at most a note's length over the limit is kept whole: clipped, it would grow.)
    if raw.len() <= DEAD_LETTER_RAW_BYTES + 64 {
        return None;
    }
    let mut end = DEAD_LETTER_RAW_BYTES;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}… [clipped: {} bytes in all]", &raw[..end], raw.len()))
}

/// Whether a line is refused as `not_utf8`: it holds U+FFFD, bytes that were not UTF-8 replaced
/// on reading (or a replacement character sent as such), so a name or code is no longer what was
/// sent. (`harbour replay --verify` applies the same rule.)
pub fn not_utf8(raw: &str) -> bool {
    raw.contains(char::REPLACEMENT_CHARACTER)
}

/// A single timely worker on this thread (`execute_directly` wants a `Send` closure; the input
/// iterator need not be).
fn local_worker() -> timely::worker::Worker {
    use timely::communication::allocator::thread::Thread;
    let alloc = timely::communication::Allocator::Thread(Thread::default());
    timely::worker::Worker::new(timely::WorkerConfig::default(), alloc, Some(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint written before the removed rows were kept (ten tables of versions, no `gone`)
    /// still loads, with none removed; one written now keeps them.
    #[test]
    fn row_versions_of_older_checkpoints_still_load() {
        let old = rmp_serde::to_vec(&vec![Vec::<u64>::new(); 10]).unwrap();
        let v: RowVersions = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(v, RowVersions::default());
        let mut now = RowVersions::default();
        now.gone
            .marks
            .push(((Symbol(700), Mark { price: None, source: harbour_dataflows::marks::MarkSource::Last, ts: 7 }), 9));
        let back: RowVersions = rmp_serde::from_slice(&rmp_serde::to_vec(&now).unwrap()).unwrap();
        assert_eq!(back, now);
    }

    /// A long refused line is kept clipped in the dead letters and the event log, whole for the
    /// caller that takes it; a short one, and any accepted line, whole.
    #[test]
    fn a_long_refused_line_is_kept_clipped_and_handed_whole_once() {
        let metrics = Metrics::default();
        let mut engine = Engine::new(&EngineConfig::new(100), &metrics, Arc::new(Health::default()));
        engine.track_changes();
        let line = |position: u64, raw: String| SourceLine { source: "in".into(), position, raw };
        // 20,000 bytes of 'é' (two bytes each) after an opening brace: the cut falls inside one.
        let long = format!("{{{}", "é".repeat(10_000));
        assert!(!engine.feed(line(1, long.clone())));
        assert_eq!(engine.take_unclipped().as_deref(), Some(long.as_str()));
        assert_eq!(engine.take_unclipped(), None, "handed once");
        assert!(!engine.feed(line(2, "not json".into())));
        assert_eq!(engine.take_unclipped(), None, "a short line is kept whole");
        let instrument = r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#;
        assert!(engine.feed(line(3, instrument.into())));
        engine.seal();

        let d = engine.state().dead_letters.clone();
        assert_eq!(d.len(), 2);
        assert!(d[0].raw.len() < DEAD_LETTER_RAW_BYTES + 40, "{}", d[0].raw.len());
        assert!(d[0].raw.starts_with(&long[..DEAD_LETTER_RAW_BYTES - 1]));
        assert!(d[0].raw.ends_with("… [clipped: 20001 bytes in all]"), "{}", &d[0].raw[DEAD_LETTER_RAW_BYTES - 10..]);
        assert_eq!(d[1].raw, "not json");
        let events = engine.take_changes().events;
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].raw, d[0].raw);
        assert_eq!((events[1].raw.as_str(), events[2].raw.as_str()), ("not json", instrument));
    }

    /// Every message is filed under a trade date: its own event time's (HKT) when it parsed with
    /// one, refused or not; else the input's clock (the newest event time accepted); before any,
    /// its source's time; else 1970-01-01. A restored engine keeps the clock.
    #[test]
    fn messages_are_dated_by_their_time_else_the_inputs() {
        let metrics = Metrics::default();
        let mut engine = Engine::new(&EngineConfig::new(100), &metrics, Arc::new(Health::default()));
        engine.track_changes();
        let line = |position: u64, raw: &str| SourceLine { source: "in".into(), position, raw: raw.into() };
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let instrument = r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true}"#;
        let fill = |exec: &str, price: &str, ts: &str| {
            format!(
                r#"{{"type":"fill","exec_id":"{exec}","order_id":"O1","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"100","price":"{price}","ts":"{ts}"}}"#
            )
        };
        // 2026-03-01 23:30 UTC is 2026-03-02 07:30 in Hong Kong.
        let kafka_time = Some(1_772_407_800_000);
        assert!(!engine.feed(line(1, "not json")));
        assert!(engine.feed_at(line(2, instrument), None, kafka_time));
        assert!(engine.feed(line(3, &fill("E1", "385.2", "2026-03-03T09:30:00+08:00"))));
        // Off the tick grid: refused, dated by its own time.
        assert!(!engine.feed(line(4, &fill("E2", "385.21", "2026-03-04T09:30:00+08:00"))));
        assert!(!engine.feed_at(line(5, "{"), None, kafka_time));
        // A late fill does not move the clock back, nor one stamped years past its message.
        assert!(engine.feed(line(6, &fill("E3", "385.2", "2026-03-02T15:00:00+08:00"))));
        assert!(engine.feed_at(line(7, &fill("E4", "385.2", "2062-03-02T10:00:00+08:00")), None, kafka_time));
        assert!(engine.feed(line(8, instrument)));
        engine.seal();
        let dates: Vec<NaiveDate> = engine.take_changes().events.iter().map(|e| e.trade_date).collect();
        let (epoch, mar2, mar3, mar4) = (NaiveDate::default(), day(2026, 3, 2), day(2026, 3, 3), day(2026, 3, 4));
        assert_eq!(dates, [epoch, mar2, mar3, mar4, mar3, mar2, day(2062, 3, 2), mar3]);
        let dead: Vec<NaiveDate> = engine.state().dead_letters.iter().map(|d| d.trade_date).collect();
        assert_eq!(dead, [epoch, mar4, mar3]);

        let snapshot = engine.snapshot();
        assert_eq!(snapshot.clock.map(trade_date), Some(mar3));
        let back: EngineSnapshot = rmp_serde::from_slice(&rmp_serde::to_vec(&snapshot).unwrap()).unwrap();
        let mut restored = Engine::new(&EngineConfig::new(100), &metrics, Arc::new(Health::default()));
        restored.restore(back);
        restored.track_changes();
        assert!(!restored.feed_at(line(9, "nope"), None, kafka_time));
        assert_eq!(restored.state().dead_letters.last().map(|d| d.trade_date), Some(mar3));
    }
}
