//! The current rows of every output table, kept from the dataflow's update stream.
//!
//! Each table is a hash map from the row's deterministic key (exec id; account, strategy and
//! symbol; …, see [`Keyed`]) to the row and the version it was written at. An epoch's updates
//! are applied retractions first: a −1 removes the key's row when it is that row, a +1 inserts
//! the row at the epoch's version. The result is what an idempotent sink holds after the epoch,
//! and what the Parquet sink writes.

use std::collections::hash_map::Entry;
use std::hash::Hash;

use harbour_dataflows::marks::Mark;
use harbour_dataflows::model::{
    ExecId, Instrument, Order, OrderId, PositionKey, StatusSubject, Symbol, TradingStatus, Ts,
};
use harbour_dataflows::operators::FillPnl;
use harbour_dataflows::pnl::PositionRow;
use harbour_dataflows::risk::book::{AlertKind, AlertRow, Metric, RiskRow, VolRow};
use harbour_dataflows::risk::limits::Severity;
use harbour_dataflows::rollups::Group;
use harbour_dataflows::sharded::ShardedMap;
use harbour_dataflows::sums::{FlowTotals, Totals};
use harbour_sinks::tables::{Change, Changes, TableRefs, Tables, Versioned};
use rustc_hash::FxHashMap;

/// Rows whose table slots [`TableState::apply`] looks up together before applying them.
const WARM_CHUNK: usize = 64;

/// A row of an output table and its deterministic key (what sinks upsert by).
pub trait Keyed {
    /// The key.
    type Key: Hash + Eq + Clone;
    /// The row's key.
    fn key(&self) -> Self::Key;
}

impl Keyed for PositionRow {
    type Key = PositionKey;
    fn key(&self) -> PositionKey {
        self.key.clone()
    }
}

impl Keyed for FillPnl {
    type Key = ExecId;
    fn key(&self) -> ExecId {
        self.fill.exec_id.clone()
    }
}

impl Keyed for (Group, Totals) {
    type Key = Group;
    fn key(&self) -> Group {
        self.0.clone()
    }
}

impl Keyed for ((Group, Ts), FlowTotals) {
    type Key = (Group, Ts);
    fn key(&self) -> (Group, Ts) {
        self.0.clone()
    }
}

impl Keyed for (OrderId, Order) {
    type Key = OrderId;
    fn key(&self) -> OrderId {
        self.0.clone()
    }
}

impl Keyed for (Symbol, Mark) {
    type Key = Symbol;
    fn key(&self) -> Symbol {
        self.0
    }
}

impl Keyed for Instrument {
    type Key = Symbol;
    fn key(&self) -> Symbol {
        self.symbol
    }
}

impl Keyed for (StatusSubject, TradingStatus) {
    type Key = StatusSubject;
    fn key(&self) -> StatusSubject {
        self.0.clone()
    }
}

impl Keyed for RiskRow {
    type Key = Group;
    fn key(&self) -> Group {
        self.group.clone()
    }
}

impl Keyed for VolRow {
    type Key = Symbol;
    fn key(&self) -> Symbol {
        self.symbol
    }
}

impl Keyed for AlertRow {
    type Key = (Group, Metric, Severity, u32, AlertKind);
    fn key(&self) -> Self::Key {
        (self.group.clone(), self.metric, self.severity, self.seq, self.kind)
    }
}

/// One output table's rows with their versions, and (when tracked) its changes since they were
/// last taken.
#[derive(Debug)]
pub struct TableState<D: Keyed> {
    rows: ShardedMap<D::Key, (D, u64)>,
    log: Option<Vec<Change<D>>>,
    /// Changes are tracked: removed rows are kept in `gone` (and logged, when there is a log:
    /// a [`BackgroundTable`] keeps its log on the loop's side).
    tracked: bool,
    /// Rows removed while changes are tracked (a busted fill, a position whose fills were all
    /// busted), as last held, with the version that removed them; a key written again leaves.
    /// What a sink that lost acknowledged data is given again as deletions ([`full_changes`]).
    gone: FxHashMap<D::Key, (D, u64)>,
}

impl<D: Keyed> Default for TableState<D> {
    fn default() -> Self {
        TableState { rows: ShardedMap::default(), log: None, tracked: false, gone: FxHashMap::default() }
    }
}

impl<D: Keyed + Ord + Clone + std::fmt::Debug> TableState<D> {
    /// Applies one epoch's updates (any order), leaving `updates` empty with its capacity.
    ///
    /// Every row's key is taken first, and the keys of each [`WARM_CHUNK`] rows are looked up
    /// before any of them is applied: those reads do not depend on each other, so the processor
    /// overlaps their cache misses (a fill row's key is read through its shared fill, and a
    /// table of every fill of the day is far out of cache), where row by row it waited on each.
    pub fn apply(&mut self, updates: &mut Vec<(D, u64, isize)>) {
        let version = updates.iter().map(|(_, t, _)| *t).max().unwrap_or_default();
        let keys: Vec<D::Key> = updates.iter().map(|(d, _, _)| d.key()).collect();
        // Retractions first; one of a row not held cancels an insertion of that row in this epoch.
        let mut unmatched: Vec<D> = Vec::new();
        let mut removed: Vec<D> = Vec::new();
        for ((d, _t, r), key) in updates.iter().zip(&keys).filter(|(u, _)| u.2 < 0) {
            for _ in 0..-r {
                match self.rows.entry(key.clone()) {
                    Entry::Occupied(held) if held.get().0 == *d => {
                        let b = held.remove();
                        if self.tracked {
                            removed.push(b.0);
                        }
                    }
                    _ => unmatched.push(d.clone()),
                }
            }
        }
        let log = &mut self.log;
        let gone = &mut self.gone;
        let rows = &mut self.rows;
        let mut insert = |rows: &mut ShardedMap<D::Key, (D, u64)>, d: D, key: D::Key| {
            if let Some(i) = unmatched.iter().position(|u| *u == d) {
                unmatched.swap_remove(i);
                return;
            }
            if let Some(log) = log.as_mut() {
                log.push(Change { row: d.clone(), version, deleted: false });
            }
            if !gone.is_empty() {
                gone.remove(&key);
            }
            let previous = rows.insert(key, (d, version));
            debug_assert!(previous.is_none(), "one row per key: {previous:?}");
        };
        let mut keys = keys.into_iter();
        let mut rest = updates.drain(..);
        let mut chunk: Vec<D::Key> = Vec::with_capacity(WARM_CHUNK);
        loop {
            chunk.extend(keys.by_ref().take(WARM_CHUNK));
            if chunk.is_empty() {
                break;
            }
            let warm = chunk.iter().filter(|k| rows.contains_key(*k)).count();
            std::hint::black_box(warm);
            for key in chunk.drain(..) {
                let Some((d, _t, r)) = rest.next() else { break };
                if r > 0 {
                    for _ in 1..r {
                        insert(rows, d.clone(), key.clone());
                    }
                    insert(rows, d, key);
                }
            }
        }
        drop(rest);
        debug_assert!(unmatched.is_empty(), "retracted rows that were never held: {unmatched:?}");
        for row in removed {
            let key = row.key();
            if !self.rows.contains_key(&key) {
                if let Some(log) = self.log.as_mut() {
                    log.push(Change { row: row.clone(), version, deleted: true });
                }
                self.gone.insert(key, (row, version));
            }
        }
    }

    /// Applies one row change as an upsert by key (or a removal, when `deleted`).
    pub fn put(&mut self, c: Change<D>) {
        let key = c.row.key();
        if c.deleted {
            if self.rows.remove(&key).is_some() && self.tracked {
                self.gone.insert(key, (c.row, c.version));
            }
        } else {
            self.gone.remove(&key);
            self.rows.insert(key, (c.row, c.version));
        }
    }

    /// The rows removed while changes were tracked, with the versions that removed them (in no
    /// particular order), for a checkpoint.
    pub fn gone(&self) -> Vec<(D, u64)> {
        self.gone.values().map(|b| (b.0.clone(), b.1)).collect()
    }

    /// Puts back the removals a checkpoint kept (keys held again are skipped).
    pub fn set_gone(&mut self, rows: Vec<(D, u64)>) {
        for (d, v) in rows {
            let key = d.key();
            if !self.rows.contains_key(&key) {
                self.gone.insert(key, (d, v));
            }
        }
    }

    /// Puts back rows held before a restart (at their versions), without logging them as changes.
    pub fn restore(&mut self, rows: Vec<(D, u64)>) {
        for (d, v) in rows {
            self.rows.insert(d.key(), (d, v));
        }
    }

    /// Every row's key and version (in no particular order), for a checkpoint.
    pub fn key_versions(&self) -> Vec<(D::Key, u64)> {
        let mut v = Vec::with_capacity(self.rows.len());
        v.extend(self.rows.iter().map(|(k, b)| (k.clone(), b.1)));
        v
    }

    /// Sets the versions of rows held (rows rebuilt after a restart take the versions they
    /// had); keys not held are skipped. Not logged as changes.
    pub fn set_versions(&mut self, versions: Vec<(D::Key, u64)>) {
        for (k, v) in versions {
            if let Some(b) = self.rows.get_mut(&k) {
                b.1 = v;
            }
        }
    }

    /// Logs the held rows `keep` picks as upserts, at `version` when given (the rows take it),
    /// else at their own: rows a restore rebuilt that the stores may hold otherwise.
    pub fn relog(&mut self, mut keep: impl FnMut(&D, u64) -> bool, version: Option<u64>) {
        let Some(log) = self.log.as_mut() else { return };
        for b in self.rows.values_mut() {
            if keep(&b.0, b.1) {
                if let Some(v) = version {
                    b.1 = v;
                }
                log.push(Change { row: b.0.clone(), version: b.1, deleted: false });
            }
        }
    }

    /// Starts keeping a log of changes (for sinks that upsert by key and version).
    pub fn track(&mut self) {
        self.tracked = true;
        self.log.get_or_insert_with(Vec::new);
    }

    /// The changes since the last call (empty when not tracking).
    pub fn take_changes(&mut self) -> Vec<Change<D>> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row held for a key.
    pub fn get(&self, key: &D::Key) -> Option<&D> {
        self.rows.get(key).map(|b| &b.0)
    }

    /// Rows with versions, sorted by row.
    pub fn versioned(&self) -> Vec<Versioned<D>> {
        let mut v: Vec<Versioned<D>> =
            self.versioned_refs().into_iter().map(|v| Versioned { row: v.row.clone(), version: v.version }).collect();
        v.sort_unstable_by(|a, b| a.row.cmp(&b.row));
        v
    }

    /// Rows with their versions, borrowed, in no particular order.
    pub fn versioned_refs(&self) -> Vec<Versioned<&D>> {
        let mut v = Vec::with_capacity(self.rows.len());
        v.extend(self.rows.values().map(|b| Versioned { row: &b.0, version: b.1 }));
        v
    }

    /// Rows, sorted.
    pub fn rows(&self) -> impl Iterator<Item = &D> {
        let mut v: Vec<&D> = self.rows.values().map(|b| &b.0).collect();
        v.sort_unstable();
        v.into_iter()
    }
}

/// One epoch's updates of a table, as [`TableState::apply`] takes them.
type Updates<D> = Vec<(D, u64, isize)>;

/// A table applied on a thread of its own: the loop hands each epoch's updates over and goes on,
/// and the thread puts them in the table while the loop feeds the next epoch.
///
/// The table of every fill is the one this is for: a million rows a day, each a hash insert far
/// out of cache into memory touched for the first time, was a fifth of the loop's thread in a
/// cold start. The change log stays on the loop's side, worked out from the updates alone (each
/// row inserted; each row retracted whose key gets no row in the epoch, as a deletion), so
/// sinks take an epoch's changes without waiting for the thread. An insertion and a retraction
/// of the same row in one epoch cancel before they are applied (a row that was not held, and one
/// retracted and put back unchanged alike: nothing changed, and the row keeps its version, where
/// [`TableState::apply`] gives it the epoch's and logs it again), tracked or not: on the loop
/// when tracked (the log needs it), else on the thread (that pass was 5% of the loop in a cold
/// start, whose late fills re-emit rows). [`TableState::relog`] is not for this table: its
/// inner table keeps no log.
///
/// The table is on one side at a time: [`BackgroundTable::settle`] (and every mutable access)
/// takes it back, waiting for the thread when an epoch is still being applied; a shared read of
/// an unsettled table panics, so readers go through [`crate::engine::Engine::state`], which
/// settles it.
pub struct BackgroundTable<D: Keyed> {
    /// The table, while it is here (not on the thread).
    table: Option<TableState<D>>,
    applier: Option<Applier<D>>,
    /// Changes since the last take, while tracked.
    log: Option<Vec<Change<D>>>,
    /// An empty update buffer (with capacity) to give the tap back.
    spare: Updates<D>,
}

impl<D: Keyed> From<TableState<D>> for BackgroundTable<D> {
    /// A table applied on a thread named `harbour-table` (started with the first updates).
    fn from(table: TableState<D>) -> Self {
        BackgroundTable { table: Some(table), applier: None, log: None, spare: Vec::new() }
    }
}

impl<D: Keyed> Default for BackgroundTable<D> {
    fn default() -> Self {
        TableState::default().into()
    }
}

/// An epoch handed to the thread: the table, the updates, and whether their identical pairs
/// were cancelled already.
struct Job<D: Keyed> {
    table: TableState<D>,
    batch: Updates<D>,
    cancelled: bool,
}

/// The thread applying a [`BackgroundTable`]'s updates, and its two ends.
struct Applier<D: Keyed> {
    jobs: Option<std::sync::mpsc::SyncSender<Job<D>>>,
    /// (In a mutex only so that the tables can be shared between threads: the loop's side
    /// takes it through `&mut`, without locking.)
    done: std::sync::Mutex<std::sync::mpsc::Receiver<(TableState<D>, Updates<D>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<D: Keyed> Drop for Applier<D> {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<D> BackgroundTable<D>
where
    D: Keyed + Ord + Clone + std::fmt::Debug + Send + 'static,
    D::Key: Send,
{
    /// Logs an epoch's changes (when tracked) and hands its updates to the thread, leaving
    /// `updates` empty (with the capacity of an earlier epoch's buffer).
    pub fn apply(&mut self, updates: &mut Updates<D>) {
        if updates.is_empty() {
            return;
        }
        // (Tracked, the pairs are cancelled here, for the log; untracked, on the thread.)
        let cancelled = self.log.is_some();
        if let Some(log) = self.log.as_mut() {
            cancel_pairs(updates);
            changes_of(updates, log);
            if updates.is_empty() {
                return;
            }
        }
        self.settle();
        let table = self.table.take().expect("settled");
        let batch = std::mem::replace(updates, std::mem::take(&mut self.spare));
        let applier = self.applier.get_or_insert_with(Applier::start);
        let jobs = applier.jobs.as_ref().expect("open until dropped");
        if jobs.send(Job { table, batch, cancelled }).is_err() {
            applier.stopped();
        }
    }

    /// Takes the table back from the thread, waiting for the epoch it is applying.
    pub fn settle(&mut self) {
        if self.table.is_some() {
            return;
        }
        let applier = self.applier.as_mut().expect("a table away is on its thread");
        let done = applier.done.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        match done.recv() {
            Ok((table, mut spare)) => {
                spare.clear();
                self.table = Some(table);
                self.spare = spare;
            }
            Err(_) => applier.stopped(),
        }
    }

    /// Starts tracking changes (see [`TableState::track`]).
    pub fn track(&mut self) {
        let t: &mut TableState<D> = self;
        t.tracked = true;
        self.log.get_or_insert_with(Vec::new);
    }

    /// The changes since the last call (empty when not tracking).
    pub fn take_changes(&mut self) -> Vec<Change<D>> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl<D: Keyed> Applier<D>
where
    D: Keyed + Ord + Clone + std::fmt::Debug + Send + 'static,
    D::Key: Send,
{
    fn start() -> Self {
        // One epoch in flight: the loop takes the table back before it hands over the next.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job<D>>(1);
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("harbour-table".into())
            .spawn(move || {
                for Job { mut table, mut batch, cancelled } in rx {
                    if !cancelled {
                        cancel_pairs(&mut batch);
                    }
                    table.apply(&mut batch);
                    if tx.send((table, batch)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn a table thread");
        Applier { jobs: Some(jobs), done: std::sync::Mutex::new(done), thread: Some(thread) }
    }

    /// The thread is gone: it panicked applying updates (a broken invariant); so does the loop.
    fn stopped(&mut self) -> ! {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => panic!("a table's thread stopped"),
        }
    }
}

impl<D: Keyed> std::ops::Deref for BackgroundTable<D> {
    type Target = TableState<D>;
    fn deref(&self) -> &TableState<D> {
        self.table.as_ref().expect("the table is read before it was settled (Engine::state settles it)")
    }
}

impl<D> std::ops::DerefMut for BackgroundTable<D>
where
    D: Keyed + Ord + Clone + std::fmt::Debug + Send + 'static,
    D::Key: Send,
{
    fn deref_mut(&mut self) -> &mut TableState<D> {
        self.settle();
        self.table.as_mut().expect("settled")
    }
}

/// Cancels insertions and retractions of the same row in one epoch's updates (and drops them).
fn cancel_pairs<D: Keyed + PartialEq>(updates: &mut Updates<D>) {
    if !updates.iter().any(|u| u.2 < 0) {
        return;
    }
    let mut retracted: FxHashMap<D::Key, Vec<usize>> = FxHashMap::default();
    for (i, (d, _, r)) in updates.iter().enumerate() {
        if *r < 0 {
            retracted.entry(d.key()).or_default().push(i);
        }
    }
    let mut cancelled = false;
    for i in 0..updates.len() {
        if updates[i].2 <= 0 {
            continue;
        }
        let Some(js) = retracted.get(&updates[i].0.key()) else { continue };
        for &j in js {
            let (r, q) = (updates[i].2, updates[j].2);
            if r > 0 && q < 0 && updates[j].0 == updates[i].0 {
                let n = r.min(-q);
                updates[i].2 -= n;
                updates[j].2 += n;
                cancelled = true;
            }
        }
    }
    if cancelled {
        updates.retain(|u| u.2 != 0);
    }
}

/// The changes of one epoch's updates (identical pairs cancelled) as [`TableState::apply`] logs
/// them: each insertion, then each retraction whose key gets no row in the epoch, as a deletion.
fn changes_of<D: Keyed + Clone>(updates: &Updates<D>, log: &mut Vec<Change<D>>) {
    let version = updates.iter().map(|(_, t, _)| *t).max().unwrap_or_default();
    let mut retractions = false;
    for (d, _, r) in updates {
        retractions |= *r < 0;
        for _ in 0..*r {
            log.push(Change { row: d.clone(), version, deleted: false });
        }
    }
    if retractions {
        let inserted: rustc_hash::FxHashSet<D::Key> =
            updates.iter().filter(|u| u.2 > 0).map(|(d, _, _)| d.key()).collect();
        for (d, _, r) in updates {
            if *r < 0 && !inserted.contains(&d.key()) {
                log.push(Change { row: d.clone(), version, deleted: true });
            }
        }
    }
}

/// Builds the sink tables from the states.
pub fn snapshot(s: &crate::engine::OutputState) -> Tables {
    Tables {
        positions: s.positions.versioned(),
        fills: s.fills.versioned(),
        rollups: s.rollups.versioned(),
        minutes: s.minutes.versioned(),
        orders: s.orders.versioned().into_iter().map(|v| Versioned { row: v.row.1, version: v.version }).collect(),
        marks: s.marks.versioned(),
        instruments: s.instruments.versioned(),
        status: s.status.versioned().into_iter().map(|v| Versioned { row: v.row.1, version: v.version }).collect(),
        risk: s.risk.versioned(),
        alerts: s.alerts.versioned(),
        vol: s.vol.versioned(),
        dead_letters: s.dead_letters.clone(),
    }
}

/// A copy of the tables (no change log), e.g. to seed a replica kept from changes.
pub fn copy(s: &crate::engine::OutputState) -> crate::engine::OutputState {
    fn table<D: Keyed + Ord + Clone + std::fmt::Debug>(t: &TableState<D>) -> TableState<D> {
        let mut out = TableState::default();
        out.restore(t.versioned_refs().into_iter().map(|v| (v.row.clone(), v.version)).collect());
        out
    }
    crate::engine::OutputState {
        positions: table(&s.positions),
        fills: table(&s.fills).into(),
        rollups: table(&s.rollups),
        minutes: table(&s.minutes),
        orders: table(&s.orders),
        marks: table(&s.marks),
        instruments: table(&s.instruments),
        status: table(&s.status),
        risk: table(&s.risk),
        alerts: table(&s.alerts),
        vol: table(&s.vol),
        dead_letters: s.dead_letters.clone(),
    }
}

/// Brings tables up to date with the changes taken from the engine after them ([`take_changes`]):
/// the replica a sink keeps on a thread of its own ends equal to the engine's tables.
pub fn apply_changes(s: &mut crate::engine::OutputState, c: Changes) {
    fn each<D: Keyed + Ord + Clone + std::fmt::Debug>(t: &mut TableState<D>, changes: Vec<Change<D>>) {
        for c in changes {
            t.put(c);
        }
    }
    each(&mut s.positions, c.positions);
    each(&mut s.fills, c.fills);
    each(&mut s.rollups, c.rollups);
    each(&mut s.minutes, c.minutes);
    for o in c.orders {
        s.orders.put(Change { row: (o.row.order_id.clone(), o.row), version: o.version, deleted: o.deleted });
    }
    each(&mut s.marks, c.marks);
    each(&mut s.instruments, c.instruments);
    for t in c.status {
        s.status.put(Change { row: (t.row.subject.clone(), t.row), version: t.version, deleted: t.deleted });
    }
    each(&mut s.risk, c.risk);
    each(&mut s.alerts, c.alerts);
    each(&mut s.vol, c.vol);
    s.dead_letters.extend(c.dead_letters);
}

/// The second half of keyed rows, borrowed.
fn second<K, V>(v: Vec<Versioned<&(K, V)>>) -> Vec<Versioned<&V>> {
    v.into_iter().map(|v| Versioned { row: &v.row.1, version: v.version }).collect()
}

/// The sink tables, borrowed from the states (no copy; rows in no particular order): what the
/// Parquet sink encodes.
pub fn snapshot_refs(s: &crate::engine::OutputState) -> TableRefs<'_> {
    TableRefs {
        positions: s.positions.versioned_refs(),
        fills: s.fills.versioned_refs(),
        rollups: s.rollups.versioned_refs(),
        minutes: s.minutes.versioned_refs(),
        orders: second(s.orders.versioned_refs()),
        marks: s.marks.versioned_refs(),
        instruments: s.instruments.versioned_refs(),
        status: second(s.status.versioned_refs()),
        risk: s.risk.versioned_refs(),
        alerts: s.alerts.versioned_refs(),
        vol: s.vol.versioned_refs(),
        dead_letters: &s.dead_letters,
    }
}

/// Takes every tracked table's changes since the last call, and the dead letters from `from` on.
pub fn take_changes(s: &mut crate::engine::OutputState, dead_letters_from: usize) -> Changes {
    Changes {
        positions: s.positions.take_changes(),
        fills: s.fills.take_changes(),
        rollups: s.rollups.take_changes(),
        minutes: s.minutes.take_changes(),
        orders: s
            .orders
            .take_changes()
            .into_iter()
            .map(|c| Change { row: c.row.1, version: c.version, deleted: c.deleted })
            .collect(),
        marks: s.marks.take_changes(),
        quotes: Vec::new(), // the engine adds them (market state lives beside the tables)
        instruments: s.instruments.take_changes(),
        status: s
            .status
            .take_changes()
            .into_iter()
            .map(|c| Change { row: c.row.1, version: c.version, deleted: c.deleted })
            .collect(),
        risk: s.risk.take_changes(),
        alerts: s.alerts.take_changes(),
        vol: s.vol.take_changes(),
        dead_letters: s.dead_letters.get(dead_letters_from..).map(<[_]>::to_vec).unwrap_or_default(),
        events: Vec::new(),
    }
}

/// Every row of every table as a change at its own version, at most `epoch`, and every row removed
/// since changes were tracked as a deletion at the version that removed it (no events, quotes or
/// dead letters): what a sink that lost its data is given again, as of the restored `epoch`
/// (until 2026-11-27 without the deletions: a row removed in the epochs the store lost stayed
/// in it, live, for good). (Rebuilding the dataflow after a restore gives the rows it re-derives the
/// version of the next input position, which the first new epoch shares: a row written at that
/// version would fence out that epoch's change of it.)
pub fn full_changes(s: &crate::engine::OutputState, epoch: u64) -> Changes {
    fn all<D: Keyed + Ord + Clone + std::fmt::Debug>(t: &TableState<D>, epoch: u64) -> Vec<Change<D>> {
        let live = t.versioned_refs().into_iter().map(|v| (v.row, v.version, false));
        let gone = t.gone.values().map(|b| (&b.0, b.1, true));
        live.chain(gone)
            .map(|(row, version, deleted)| Change { row: row.clone(), version: version.min(epoch), deleted })
            .collect()
    }
    fn second<K, V: Clone>(t: Vec<Change<(K, V)>>) -> Vec<Change<V>> {
        t.into_iter().map(|c| Change { row: c.row.1, version: c.version, deleted: c.deleted }).collect()
    }
    Changes {
        positions: all(&s.positions, epoch),
        fills: all(&s.fills, epoch),
        rollups: all(&s.rollups, epoch),
        minutes: all(&s.minutes, epoch),
        orders: second(all(&s.orders, epoch)),
        marks: all(&s.marks, epoch),
        quotes: Vec::new(),
        instruments: all(&s.instruments, epoch),
        status: second(all(&s.status, epoch)),
        risk: all(&s.risk, epoch),
        alerts: all(&s.alerts, epoch),
        vol: all(&s.vol, epoch),
        dead_letters: Vec::new(),
        events: Vec::new(),
    }
}

/// Starts change tracking on every table.
pub fn track_changes(s: &mut crate::engine::OutputState) {
    s.positions.track();
    s.fills.track();
    s.rollups.track();
    s.minutes.track();
    s.orders.track();
    s.marks.track();
    s.instruments.track();
    s.status.track();
    s.risk.track();
    s.alerts.track();
    s.vol.track();
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A test row: key and content.
    type Row = (u16, u32);

    impl Keyed for (u16, u32) {
        type Key = u16;
        fn key(&self) -> u16 {
            self.0
        }
    }

    /// Random epochs of a keyed table's updates: new rows, updates, deletions, and rows inserted
    /// and retracted in the same epoch (which cancel); with `put_back`, also a held row retracted
    /// and inserted again unchanged.
    fn epochs(seed: u64, put_back: bool) -> Vec<Updates<Row>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut held: FxHashMap<u16, u32> = FxHashMap::default();
        let mut out = Vec::new();
        for epoch in 1..60u64 {
            let mut updates = Vec::new();
            let mut touched = rustc_hash::FxHashSet::default();
            for _ in 0..rng.random_range(0..40) {
                let key = rng.random_range(0..64u16);
                if !touched.insert(key) {
                    continue;
                }
                let content = rng.random_range(0..1_000u32);
                match (held.get(&key).copied(), rng.random_range(0..4)) {
                    (None, 0) => {
                        updates.push(((key, content), epoch, 1));
                        updates.push(((key, content), epoch, -1));
                    }
                    (None, _) => {
                        updates.push(((key, content), epoch, 1));
                        held.insert(key, content);
                    }
                    (Some(old), 0) => {
                        updates.push(((key, old), epoch, -1));
                        held.remove(&key);
                    }
                    (Some(old), 1) if put_back => {
                        updates.push(((key, old), epoch, 1));
                        updates.push(((key, old), epoch, -1));
                    }
                    (Some(old), _) if old != content => {
                        updates.push(((key, content), epoch, 1));
                        updates.push(((key, old), epoch, -1));
                        held.insert(key, content);
                    }
                    (Some(_), _) => {}
                }
            }
            out.push(updates);
        }
        out
    }

    #[test]
    fn a_table_applied_on_its_thread_equals_one_applied_in_place() {
        for seed in 0..20 {
            let mut here = TableState::default();
            here.track();
            let mut away = BackgroundTable::default();
            away.track();
            let (mut logged_here, mut logged_away) = (Vec::new(), Vec::new());
            for (i, mut updates) in epochs(seed, false).into_iter().enumerate() {
                let mut copy = updates.clone();
                here.apply(&mut copy);
                away.apply(&mut updates);
                assert!(updates.is_empty(), "the updates were handed over");
                logged_here.extend(here.take_changes());
                // Taken while the thread may still be applying the epoch.
                logged_away.extend(away.take_changes());
                if i % 7 == 0 {
                    away.settle();
                    assert_eq!(away.versioned(), here.versioned(), "seed {seed}, epoch {i}");
                }
            }
            away.settle();
            assert_eq!(away.versioned(), here.versioned(), "seed {seed}");
            let gone = |t: &TableState<Row>| {
                let mut g = t.gone();
                g.sort();
                g
            };
            assert_eq!(gone(&away), gone(&here), "seed {seed}: the removed rows kept");
            assert_eq!(logged_away, logged_here, "seed {seed}: the same changes, in the same order");
            assert!(logged_here.iter().any(|c| c.deleted), "seed {seed}: deletions were tried");
        }
    }

    #[test]
    fn a_row_put_back_unchanged_in_an_epoch_is_no_change() {
        let mut t = BackgroundTable::default();
        t.track();
        t.apply(&mut vec![((1, 10), 1, 1), ((2, 20), 1, 1)]);
        assert_eq!(t.take_changes().len(), 2);
        t.apply(&mut vec![((1, 10), 2, -1), ((1, 10), 2, 1), ((2, 20), 2, -1), ((2, 21), 2, 1)]);
        let changes = t.take_changes();
        assert_eq!(changes, vec![Change { row: (2, 21), version: 2, deleted: false }]);
        t.settle();
        assert_eq!(t.versioned(), vec![Versioned { row: (1, 10), version: 1 }, Versioned { row: (2, 21), version: 2 }]);
        // And with put-backs among the random epochs: the rows end as in place, and their
        // versions are the same whether changes are tracked or not.
        for seed in 0..5 {
            let mut here = TableState::default();
            let mut away = BackgroundTable::default();
            let mut tracked = BackgroundTable::default();
            tracked.track();
            for mut updates in epochs(seed, true) {
                here.apply(&mut updates.clone());
                tracked.apply(&mut updates.clone());
                away.apply(&mut updates);
            }
            away.settle();
            tracked.settle();
            let rows = |v: Vec<Versioned<Row>>| v.into_iter().map(|v| v.row).collect::<Vec<_>>();
            assert_eq!(rows(away.versioned()), rows(here.versioned()));
            assert_eq!(away.versioned(), tracked.versioned(), "seed {seed}");
            assert!(away.versioned() != here.versioned(), "seed {seed}: put-backs kept their versions");
        }
    }
}
