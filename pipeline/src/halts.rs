//! Trading halts per security, to flag fills timestamped while their security was halted (HKEX
//! Security Status, message 21, or a JSON `status` line). On the exchange nothing trades in a
//! halted security, so such a fill is an off-exchange or late-reported trade, or bad data: it is
//! kept (a fill is a fact the broker reported), counted (`harbour_source_fills_during_halt_total`)
//! and logged with its exec id, so the desk sees it.
//!
//! The engine records each security status as it is fed and asks about each accepted fill then:
//! a status that arrives after a fill it would have covered does not flag that fill.

use harbour_dataflows::model::{StatusSubject, Symbol, TradingStatus, Ts};
use rustc_hash::FxHashMap;

/// Status changes kept per security (the latest ones): enough for a fill that arrives after the
/// halt it fell in was lifted.
const KEPT: usize = 16;

/// Halts and resumptions per security, by event time.
#[derive(Default)]
pub struct Halts {
    /// Per security: `(ts, halted)`, ordered by time, at most [`KEPT`].
    changes: FxHashMap<Symbol, Vec<(Ts, bool)>>,
    /// Halts (security, start) a fill was flagged in.
    warned: rustc_hash::FxHashSet<(Symbol, Ts)>,
}

impl Halts {
    /// Takes a status (market statuses are not about one security: ignored).
    pub fn record(&mut self, s: &TradingStatus) {
        let StatusSubject::Security(symbol) = &s.subject else { return };
        let changes = self.changes.entry(*symbol).or_default();
        let halted = s.status == "halted";
        let at = changes.partition_point(|(t, _)| *t <= s.ts);
        changes.insert(at, (s.ts, halted));
        if changes.len() > KEPT {
            changes.remove(0);
        }
    }

    /// Whether `symbol` was halted at `ts`, by the statuses recorded.
    pub fn halted_at(&self, symbol: Symbol, ts: Ts) -> bool {
        self.halt_of(symbol, ts).is_some()
    }

    /// When the halt `symbol` was in at `ts` began, if it was halted then.
    fn halt_of(&self, symbol: Symbol, ts: Ts) -> Option<Ts> {
        let changes = self.changes.get(&symbol)?;
        let at = changes.partition_point(|(t, _)| *t <= ts);
        (at > 0 && changes[at - 1].1).then(|| changes[at - 1].0)
    }

    /// A fill of `symbol` at `ts`: `None` when the security was not halted then, else whether
    /// it is the first fill flagged in that halt (the one worth a warning; the rest are logged
    /// at debug level, so a flood of them does not flood the log).
    pub fn flag(&mut self, symbol: Symbol, ts: Ts) -> Option<bool> {
        let began = self.halt_of(symbol, ts)?;
        Some(self.warned.insert((symbol, began)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(symbol: &str, ts: Ts, status: &str) -> TradingStatus {
        TradingStatus {
            ts,
            subject: StatusSubject::Security(Symbol::parse(symbol).unwrap()),
            status: status.into(),
            session: None,
        }
    }

    #[test]
    fn a_fill_is_judged_by_the_status_in_force_at_its_time() {
        let s = Symbol::parse("00700").unwrap();
        let mut h = Halts::default();
        assert!(!h.halted_at(s, 100));
        h.record(&status("00700", 100, "halted"));
        assert!(!h.halted_at(s, 99));
        assert!(h.halted_at(s, 100));
        assert!(h.halted_at(s, 150));
        h.record(&status("00700", 200, "trading"));
        // A fill that arrives after the resumption, timestamped inside the halt.
        assert!(h.halted_at(s, 150));
        assert!(!h.halted_at(s, 200));
        // A status that arrives late still lands in its place.
        h.record(&status("00700", 120, "trading"));
        assert!(!h.halted_at(s, 150));
        assert!(!h.halted_at(Symbol::parse("00005").unwrap(), 150));
        // The first fill flagged in a halt is the one to warn of.
        h.record(&status("00700", 500, "halted"));
        assert_eq!(h.flag(s, 400), None);
        assert_eq!(h.flag(s, 510), Some(true));
        assert_eq!(h.flag(s, 520), Some(false));
        // Market statuses are not a security's.
        let market = TradingStatus {
            ts: 300,
            subject: StatusSubject::Market("MAIN".into()),
            status: "halted".into(),
            session: None,
        };
        h.record(&market);
        assert!(!h.halted_at(s, 400));
    }
}
