//! Updates held until the frontier passes their time, with the capabilities to emit at those times.

use std::collections::BTreeMap;

use timely::dataflow::operators::CapabilitySet;
use timely::order::TotalOrder;
use timely::progress::frontier::MutableAntichain;
use timely::progress::Timestamp;

/// Updates grouped by time, and one capability set covering every time still held.
pub(crate) struct Pending<T: Timestamp, D> {
    by_time: BTreeMap<T, Vec<(D, isize)>>,
    caps: CapabilitySet<T>,
}

impl<T: Timestamp + TotalOrder, D> Pending<T, D> {
    pub(crate) fn new() -> Self {
        Pending {
            by_time: BTreeMap::new(),
            caps: CapabilitySet::new(),
        }
    }

    /// Holds `updates` (each carrying its own time) under a capability for the message.
    pub(crate) fn stash(
        &mut self,
        cap: timely::dataflow::operators::InputCapability<T>,
        updates: &mut Vec<(D, T, isize)>,
    ) {
        if let Some(c) = cap.retain_least(0) {
            self.caps.insert(c);
        }
        for (d, t, r) in updates.drain(..) {
            self.by_time.entry(t).or_default().push((d, r));
        }
    }

    /// Takes the earliest held time that the frontier has passed, with its updates.
    pub(crate) fn next_complete(
        &mut self,
        frontier: &MutableAntichain<T>,
    ) -> Option<(T, Vec<(D, isize)>)> {
        let first = self.by_time.keys().next()?.clone();
        if frontier.less_equal(&first) {
            return None;
        }
        self.by_time.remove_entry(&first)
    }

    /// A capability to emit at `time` (which must be held).
    pub(crate) fn cap_for(&self, time: &T) -> timely::dataflow::operators::Capability<T> {
        self.caps.delayed(time)
    }

    /// Releases capabilities no longer needed: keeps only one at the earliest held time.
    pub(crate) fn downgrade(&mut self) {
        match self.by_time.keys().next() {
            Some(first) => self.caps.downgrade([first.clone()]),
            None => self.caps = CapabilitySet::new(),
        }
    }
}
