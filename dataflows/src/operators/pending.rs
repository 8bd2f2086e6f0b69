//! Updates held until the frontier passes their time, with the capabilities to emit at those times.

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, CapabilitySet, InputCapability};
use timely::order::TotalOrder;
use timely::progress::frontier::MutableAntichain;
use timely::progress::Timestamp;

/// Updates grouped by time, and per output one capability set covering every time still held.
pub(crate) struct Pending<T: Timestamp, D> {
    by_time: BTreeMap<T, Vec<(D, isize)>>,
    caps: Vec<CapabilitySet<T>>,
    /// An emptied time's list handed back ([`Pending::recycle`]), for the next time to fill
    /// without growing a list from nothing (a mark in a widely held symbol stashes ~100,000
    /// position changes: each doubling copied them into fresh, page-faulted memory).
    spare: Option<Vec<(D, isize)>>,
}

impl<T: Timestamp + TotalOrder, D> Pending<T, D> {
    /// Holds updates for an operator with `outputs` outputs.
    pub(crate) fn new(outputs: usize) -> Self {
        Pending { by_time: BTreeMap::new(), caps: (0..outputs).map(|_| CapabilitySet::new()).collect(), spare: None }
    }

    /// Holds `updates` (each carrying its own time) under capabilities for the message.
    pub(crate) fn stash(&mut self, cap: InputCapability<T>, updates: &mut Vec<(D, T, isize)>) {
        self.stash_with(cap, updates, |d| d)
    }

    /// As [`Pending::stash`], wrapping each record (to hold several inputs' records together).
    pub(crate) fn stash_with<D2>(
        &mut self,
        cap: InputCapability<T>,
        updates: &mut Vec<(D2, T, isize)>,
        wrap: impl Fn(D2) -> D,
    ) {
        for (port, set) in self.caps.iter_mut().enumerate() {
            if let Some(c) = cap.retain_least(port) {
                set.insert(c);
            }
        }
        let mut iter = updates.drain(..).peekable();
        while let Some((d, t, r)) = iter.next() {
            // Runs of one time (the usual message) cost one map lookup.
            let spare = &mut self.spare;
            let held = self.by_time.entry(t.clone()).or_insert_with(|| spare.take().unwrap_or_default());
            held.push((wrap(d), r));
            while let Some((d, _, r)) = iter.next_if(|(_, t2, _)| *t2 == t) {
                held.push((wrap(d), r));
            }
        }
    }

    /// Takes the earliest held time that every input frontier has passed, with its updates.
    pub(crate) fn next_complete(&mut self, frontiers: &[MutableAntichain<T>]) -> Option<(T, Vec<(D, isize)>)> {
        let first = self.by_time.keys().next()?.clone();
        if frontiers.iter().any(|f| f.less_equal(&first)) {
            return None;
        }
        self.by_time.remove_entry(&first)
    }

    /// Hands back a time's list once its updates are taken, keeping its capacity for a later
    /// time (one list is kept: the largest time's, so its memory stays in use between times).
    pub(crate) fn recycle(&mut self, mut list: Vec<(D, isize)>) {
        list.clear();
        if self.spare.as_ref().is_none_or(|s| s.capacity() < list.capacity()) {
            self.spare = Some(list);
        }
    }

    /// A capability to emit at `time` on output `port` (the time must be held).
    pub(crate) fn cap_for(&self, time: &T, port: usize) -> Capability<T> {
        self.caps[port].delayed(time)
    }

    /// Releases capabilities no longer needed: keeps only one at the earliest held time.
    pub(crate) fn downgrade(&mut self) {
        let first = self.by_time.keys().next().cloned();
        for set in &mut self.caps {
            match &first {
                Some(t) => set.downgrade([t.clone()]),
                None => *set = CapabilitySet::new(),
            }
        }
    }
}
