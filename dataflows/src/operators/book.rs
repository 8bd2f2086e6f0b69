//! A position's fill book: its fills in `(ts, exec_id)` order and the average-cost fold over them.
//!
//! The book keeps the realized P&L each fill produced, the running state after the last fill, and a
//! snapshot of the state every [`CHECKPOINT_EVERY`] fills. Applying one epoch's inserts and
//! retractions (busts) finds the earliest fill touched, restarts the fold from the snapshot before
//! it and replays the tail; an append (the normal case) continues from the current state.
//!
//! Cost: an in-order fill is O(1) amortized, independent of the book's length; a late fill or a
//! bust at depth `d` from the end costs O(d + CHECKPOINT_EVERY).

use std::sync::Arc;

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::fees::{CostSchedule, CostSchedules, FeeBreakdown};
use crate::marks::Mark;
use crate::model::{Fill, PositionKey, PositionState, PositionStep};
use crate::pnl::{charge, fees_under, schedule_of, PositionRow, MONEY_DP};

/// Snapshot interval of the fold state within a key's book.
pub const CHECKPOINT_EVERY: usize = 64;

/// An enriched fill with the realized P&L it produced and the position after it.
///
/// The fill is shared, not copied: the input rules (for busts and checkpoints), the book and each
/// row of it hold one allocation. Its costs item by item are a function of the fill and the
/// schedule it was charged under, so the row keeps the schedule (shared too) and the total the
/// fold charged, and [`FillPnl::fees`] works the items out when asked: a row is 56 bytes, where
/// with the fill and its breakdown inline it was 328 (every fill of a day is held in the fills
/// table, and moved through the dataflow's containers on its way there).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FillPnl {
    /// The fill.
    pub fill: Arc<Fill>,
    /// The cost schedule in force on its trade date (none when no schedule covers it).
    pub schedule: Option<Arc<CostSchedule>>,
    /// Its total cost, what the position's fold charged (`fees().total`).
    pub fee: Decimal,
    /// What it did to the position (realized P&L before costs, quantity after).
    pub step: PositionStep,
}

impl FillPnl {
    /// `fill`'s row after `step`, charged under the schedule in force on its trade date.
    pub fn new(fill: Arc<Fill>, schedules: &CostSchedules, step: PositionStep) -> FillPnl {
        let (schedule, fee) = charge(&fill, schedules);
        FillPnl { fill, schedule, fee, step }
    }

    /// Its costs item by item (the same each time: a pure function of the fill and its schedule).
    /// Without a schedule, none of the items and the row's total (zero, unless the row was read
    /// back from a checkpoint without the schedule that charged it), under "none".
    pub fn fees(&self) -> FeeBreakdown {
        match &self.schedule {
            Some(s) => s.fees(&self.fill),
            None => FeeBreakdown { total: self.fee, ..fees_under(&self.fill, None) },
        }
    }
}

/// A row as checkpoints keep it (the fills table's removed rows): the fill, its costs item by item
/// (the shape rows had before they kept their schedule instead, 2026-11-30), what it did to the
/// position, and the schedule itself, so a row read back charges what it charged.
#[derive(Serialize, Deserialize)]
struct StoredFillPnl {
    fill: Arc<Fill>,
    fees: FeeBreakdown,
    step: PositionStep,
    #[serde(default)]
    schedule: Option<Arc<CostSchedule>>,
}

impl Serialize for FillPnl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredFillPnl {
            fill: Arc::clone(&self.fill),
            fees: self.fees(),
            step: self.step.clone(),
            schedule: self.schedule.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for FillPnl {
    /// A row written before rows kept their schedule names it in its costs: the built-in schedule
    /// of that name is taken when it gives the same costs; otherwise (a schedule from the config)
    /// the row keeps its total and no schedule (its items then read as zero, under "none").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let StoredFillPnl { fill, fees, step, schedule } = StoredFillPnl::deserialize(d)?;
        let schedule = schedule.or_else(|| {
            CostSchedules::default().0.into_iter().find(|s| s.name == fees.schedule && s.fees(&fill) == fees)
        });
        Ok(FillPnl { fill, schedule, fee: fees.total, step })
    }
}

/// One fill in a book: what the fold and the book's order read, inline, and the fill itself,
/// shared with the input rules and the fill's rows. The fee breakdown is a pure function of the
/// fill and its schedule, so only its total is kept.
pub(crate) struct Entry {
    ts: i64,
    exec_id: smol_str::SmolStr,
    signed_qty: i64,
    price: Decimal,
    fee: Decimal,
    step: PositionStep,
    fill: Arc<Fill>,
}

impl Entry {
    fn new(f: Arc<Fill>, fee: Decimal) -> Entry {
        Entry {
            ts: f.ts,
            exec_id: f.exec_id.clone(),
            signed_qty: f.signed_qty(),
            price: f.price,
            fee,
            step: PositionStep::default(),
            fill: f,
        }
    }

    /// The output row (its schedule looked up again: it is deterministic in the fill).
    fn row(&self, schedules: &CostSchedules) -> FillPnl {
        FillPnl {
            fill: Arc::clone(&self.fill),
            schedule: schedule_of(&self.fill, schedules),
            fee: self.fee,
            step: self.step.clone(),
        }
    }
}

/// The fills of one position and its running fold.
#[derive(Default)]
pub(crate) struct Book {
    pub(crate) entries: Vec<Entry>,
    /// `checkpoints[j]` is the state before entry `(j + 1) * CHECKPOINT_EVERY` (the state before
    /// entry 0 is the empty position, not stored: a short book allocates none).
    checkpoints: Vec<PositionState>,
    pub(crate) current: PositionState,
    /// `current`'s average open price to [`MONEY_DP`] places, worked out once per applied time.
    pub(crate) avg_open: Option<Decimal>,
}

fn order_key(f: &Fill) -> (i64, &str) {
    (f.ts, f.exec_id.as_str())
}

impl Book {
    /// The common case: only inserts, all after the last fill held. Folds them in order from the
    /// current state and emits their rows; no search, no replay. Returns false (having changed
    /// nothing) when the changes are anything else.
    fn append(
        &mut self,
        changes: &mut Vec<(Arc<Fill>, isize)>,
        schedules: &CostSchedules,
        out: &mut impl FnMut(FillPnl, isize),
    ) -> bool {
        if changes.iter().any(|(_, r)| *r != 1) {
            return false;
        }
        // Fills usually arrive in order: check before moving them.
        if !changes.is_sorted_by(|(a, _), (b, _)| order_key(a) <= order_key(b)) {
            changes.sort_by(|(a, _), (b, _)| order_key(a).cmp(&order_key(b)));
        }
        let after_last = match (self.entries.last(), changes.first()) {
            (Some(last), Some((f, _))) => (last.ts, last.exec_id.as_str()) < order_key(f),
            _ => true,
        };
        if !after_last || changes.windows(2).any(|w| order_key(&w[0].0) == order_key(&w[1].0)) {
            return false;
        }
        if self.entries.len() < 8 {
            self.entries.reserve_exact(changes.len());
        }
        for (f, _) in changes.drain(..) {
            let i = self.entries.len();
            if i > 0 && i.is_multiple_of(CHECKPOINT_EVERY) && i / CHECKPOINT_EVERY > self.checkpoints.len() {
                self.checkpoints.push(self.current.clone());
            }
            let (schedule, fee) = charge(&f, schedules);
            let mut entry = Entry::new(Arc::clone(&f), fee);
            entry.step = self.current.apply(entry.signed_qty, entry.price, entry.fee, entry.ts);
            out(FillPnl { fill: f, schedule, fee, step: entry.step.clone() }, 1);
            self.entries.push(entry);
        }
        self.settle();
        true
    }

    /// Event time of the last fill held (to touch the book's memory ahead of a change).
    pub(crate) fn last_ts(&self) -> Option<i64> {
        self.entries.last().map(|e| e.ts)
    }

    /// The row this book shows at `mark`; none when it holds no fill.
    pub(crate) fn row(&self, key: &PositionKey, mark: &Mark) -> Option<PositionRow> {
        (!self.entries.is_empty()).then(|| PositionRow::valued(key.clone(), &self.current, self.avg_open, mark))
    }

    /// Works out `avg_open` after `current` changed.
    fn settle(&mut self) {
        self.avg_open = self.current.avg_price().map(|a| a.round_dp(MONEY_DP));
    }

    /// Index of `f` (Ok) or where it would go (Err). Appends, the common case, are O(1).
    fn find(&self, f: &Fill) -> Result<usize, usize> {
        let key = order_key(f);
        match self.entries.last() {
            None => return Err(0),
            Some(last) if (last.ts, last.exec_id.as_str()) < key => return Err(self.entries.len()),
            _ => {}
        }
        self.entries.binary_search_by(|e| (e.ts, e.exec_id.as_str()).cmp(&key))
    }

    /// Applies one time's changes; hands output updates (+1 new, −1 old) to `out`.
    pub(crate) fn apply(
        &mut self,
        changes: Vec<(Arc<Fill>, isize)>,
        schedules: &CostSchedules,
        out: &mut impl FnMut(FillPnl, isize),
    ) {
        let mut changes = changes;
        if self.append(&mut changes, schedules, out) {
            return;
        }
        // Earliest index touched, in the current book.
        let mut lo = self.entries.len();
        for (f, _) in &changes {
            let i = match self.find(f) {
                Ok(i) | Err(i) => i,
            };
            lo = lo.min(i);
        }
        let old_len = self.entries.len();
        // Steps of the entries that may change, to emit only the rows that did.
        let old_steps: FxHashMap<smol_str::SmolStr, PositionStep> =
            self.entries[lo..].iter().map(|e| (e.exec_id.clone(), e.step.clone())).collect();

        for (f, r) in changes {
            if r > 0 {
                let i = match self.find(&f) {
                    Ok(i) | Err(i) => i,
                };
                let (_, fee) = charge(&f, schedules);
                // Small books grow one entry at a time: most positions hold a handful of fills.
                if self.entries.len() < 8 {
                    self.entries.reserve_exact(r as usize);
                }
                for _ in 0..r {
                    self.entries.insert(i, Entry::new(Arc::clone(&f), fee));
                }
            } else {
                for _ in 0..(-r) {
                    if let Ok(i) = self.find(&f) {
                        let gone = self.entries.remove(i);
                        // Retract its row unless it was inserted in this same epoch (never shown).
                        if old_steps.contains_key(&gone.exec_id) {
                            out(gone.row(schedules), -1);
                        }
                    }
                }
            }
        }

        // Appends continue from the current state; anything else restarts the fold from the last
        // snapshot at or before `lo`.
        let (mut state, start) = if lo == old_len {
            (std::mem::take(&mut self.current), lo)
        } else {
            let cp = (lo / CHECKPOINT_EVERY).min(self.checkpoints.len());
            self.checkpoints.truncate(cp);
            let state = if cp == 0 { PositionState::default() } else { self.checkpoints[cp - 1].clone() };
            (state, cp * CHECKPOINT_EVERY)
        };
        for i in start..self.entries.len() {
            if i > 0 && i.is_multiple_of(CHECKPOINT_EVERY) && i / CHECKPOINT_EVERY > self.checkpoints.len() {
                self.checkpoints.push(state.clone());
            }
            let e = &mut self.entries[i];
            e.step = state.apply(e.signed_qty, e.price, e.fee, e.ts);
        }
        self.current = state;
        self.settle();

        // Emit the enriched-fill rows that changed: retract the old row, insert the new one.
        for e in &self.entries[lo.min(self.entries.len())..] {
            match old_steps.get(&e.exec_id) {
                Some(old) if *old == e.step => {}
                Some(old) => {
                    let mut row = e.row(schedules);
                    out(row.clone(), 1);
                    row.step = old.clone();
                    out(row, -1);
                }
                None => out(e.row(schedules), 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Side, Symbol};
    use rust_decimal_macros::dec;

    fn fill(n: i64, signed_qty: i64, price: Decimal) -> Arc<Fill> {
        Arc::new(Fill {
            ts: n,
            exec_id: format!("X{n}").into(),
            order_id: "O1".into(),
            key: PositionKey { account: "A".into(), strategy: "S".into(), symbol: Symbol(700) },
            side: if signed_qty > 0 { Side::Buy } else { Side::Sell },
            qty: signed_qty.abs(),
            price,
            commission: None,
            stamp_duty_exempt: false,
            odd_lot: false,
            source_seq: n as u64,
        })
    }

    /// A row keeps its schedule and total, and works its items out as `fees_of` does; a checkpoint
    /// reads it back equal, and a row in the shape kept before (items, no schedule) finds the
    /// built-in schedule that charged it.
    #[test]
    fn a_row_works_its_costs_out_and_reads_back_equal() {
        let schedules = CostSchedules::default();
        let f = fill(1_772_415_000_000_000_000, 1000, dec!(385.2)); // 2026-03-02 HKT
        let row = FillPnl::new(Arc::clone(&f), &schedules, PositionStep { realized: dec!(1.5), qty_after: 1000 });
        let want = crate::pnl::fees_of(&f, &schedules);
        assert_eq!(row.fees(), want);
        assert_eq!(row.fee, want.total);
        assert_eq!(row.fees().schedule, "HK-2025-06-30");
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(serde_json::from_str::<FillPnl>(&json).unwrap(), row);
        // The shape rows were kept in before: fill, items, step.
        let mut legacy: serde_json::Value = serde_json::from_str(&json).unwrap();
        legacy.as_object_mut().unwrap().remove("schedule");
        assert_eq!(serde_json::from_value::<FillPnl>(legacy.clone()).unwrap(), row);
        // Items no built-in schedule gives: the total stays, the items are not made up.
        legacy["fees"]["commission"] = serde_json::json!("9999");
        legacy["fees"]["total"] = serde_json::json!("12345.67");
        let odd = serde_json::from_value::<FillPnl>(legacy).unwrap();
        assert_eq!((odd.fee, odd.schedule.is_none()), (dec!(12345.67), true));
        assert_eq!((odd.fees().total, odd.fees().commission), (dec!(12345.67), Decimal::ZERO));
        // Checkpoints are MessagePack, structs as arrays: the old three fields read back too.
        #[derive(Serialize)]
        struct Legacy {
            fill: Arc<Fill>,
            fees: FeeBreakdown,
            step: PositionStep,
        }
        let old = Legacy { fill: Arc::clone(&f), fees: want, step: row.step.clone() };
        let back: FillPnl = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
        assert_eq!(back, row);
        let new: FillPnl = rmp_serde::from_slice(&rmp_serde::to_vec(&row).unwrap()).unwrap();
        assert_eq!(new, row);
    }

    /// The average open price a book keeps follows its state, on appends and on replays (a bust, a
    /// late fill), to the rows' 8 places.
    #[test]
    fn the_average_open_price_follows_appends_busts_and_late_fills() {
        let schedules = CostSchedules::default();
        let mut book = Book::default();
        let mut out = |_: FillPnl, _: isize| {};
        book.apply(vec![(fill(1, 1, dec!(10)), 1), (fill(2, 2, dec!(11)), 1)], &schedules, &mut out);
        assert_eq!(book.avg_open, Some(dec!(10.66666667)), "3 held at 32/3");
        book.apply(vec![(fill(3, -3, dec!(12)), 1)], &schedules, &mut out);
        assert_eq!(book.avg_open, None, "flat");
        // Bust the sale: back to 3 held at 32/3 (a replay, not an append).
        book.apply(vec![(fill(3, -3, dec!(12)), -1)], &schedules, &mut out);
        assert_eq!(book.avg_open, Some(dec!(10.66666667)));
        // A late buy before the second fill: 1 @ 10, 1 @ 13, 2 @ 11 → 45/4.
        book.apply(vec![(fill(0, 1, dec!(13)), 1)], &schedules, &mut out);
        assert_eq!(book.avg_open, Some(dec!(11.25)));
        assert_eq!(book.avg_open, book.current.avg_price().map(|a| a.round_dp(MONEY_DP)));
    }
}
