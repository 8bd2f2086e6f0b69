//! Marks: the price each position is valued at, per symbol, by a configurable policy.
//!
//! The default policy is the last trade price, falling back to the bid/ask mid, then the close.
//! Each field keeps its latest value by event time; a late quote (older than what is held) does
//! not move it. Ties on event time go to the later input line ([`Quote::seq`], `Close::seq`: the
//! engine's line count; a sweep through three price levels reported at one trade time ends at the
//! last level's price, a close sent again corrected is the corrected one; until 2026-11-28 the
//! larger price won, a mark no input had shown), then to the
//! larger price (quotes from elsewhere, with no line count), so the result never depends on the
//! order updates arrive in within one epoch. A quote can also empty a field (the bid side of the
//! book emptied, the only recent trade was cancelled): from then on the field has no price, so
//! the policy falls through to its next source, until a newer price arrives; a price and an
//! emptying of one line and time keep the price.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{Cleared, Close, MarketEvent, Quote, Symbol, Ts};
use crate::operators::LatestFold;

/// Where a mark came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkSource {
    /// Last trade price.
    Last,
    /// Mid of best bid and ask (both present).
    Mid,
    /// Official closing price.
    Close,
    /// No price yet.
    None,
}

impl MarkSource {
    /// Lower-case name for outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkSource::Last => "last",
            MarkSource::Mid => "mid",
            MarkSource::Close => "close",
            MarkSource::None => "none",
        }
    }
}

/// The order in which price sources are tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MarkPolicy(pub Vec<MarkSource>);

impl Default for MarkPolicy {
    fn default() -> Self {
        MarkPolicy(vec![MarkSource::Last, MarkSource::Mid, MarkSource::Close])
    }
}

/// The mark of one symbol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mark {
    /// The price, if any source has one.
    pub price: Option<Decimal>,
    /// Which source gave it.
    pub source: MarkSource,
    /// Event time of that price.
    pub ts: Ts,
}

/// Latest value of each price field of a symbol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkState {
    last: Option<(Ts, Decimal)>,
    bid: Option<(Ts, Decimal)>,
    ask: Option<(Ts, Decimal)>,
    close: Option<(Ts, Decimal)>,
    /// When a field was last emptied, for fields whose latest update is an emptying (the price
    /// slot beside it is then `None`). Last in the struct, and defaulted, so that checkpoints
    /// written before it existed still load.
    #[serde(default)]
    emptied: Emptied,
    /// Input order ([`Quote::seq`]) of each field's latest update (a price or an emptying).
    /// Defaulted (0), so that checkpoints written before it existed still load.
    #[serde(default)]
    seqs: Seqs,
}

/// Input order of each quoted field's latest update (see [`MarkState`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Seqs {
    last: u64,
    bid: u64,
    ask: u64,
    #[serde(default)]
    close: u64,
}

/// Event times at which fields were emptied (see [`MarkState`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Emptied {
    last: Option<Ts>,
    bid: Option<Ts>,
    ask: Option<Ts>,
}

/// Applies a price (`Some`) or an emptying (`None`) at `ts` from input line `seq` to a field
/// when it is newer than the field's latest update (`seq_held` its line); at equal times the later
/// line wins, then a price over an emptying, and the larger price over a smaller one.
fn newer(
    slot: &mut Option<(Ts, Decimal)>,
    emptied: &mut Option<Ts>,
    seq_held: &mut u64,
    (ts, seq): (Ts, u64),
    v: Option<Decimal>,
) {
    let held = match (*slot, *emptied) {
        (Some((t, p)), _) => Some((t, *seq_held, Some(p))),
        (None, Some(t)) => Some((t, *seq_held, None)),
        (None, None) => None,
    };
    if held.is_none_or(|held| (ts, seq, v) > held) {
        match v {
            Some(v) => (*slot, *emptied) = (Some((ts, v)), None),
            None => (*slot, *emptied) = (None, Some(ts)),
        }
        *seq_held = seq;
    }
}

/// A field's update in a quote: a price, an emptying, or nothing.
fn field(price: Option<Decimal>, cleared: bool) -> Option<Option<Decimal>> {
    match (price, cleared) {
        (Some(p), _) => Some(Some(p)),
        (None, true) => Some(None),
        (None, false) => None,
    }
}

impl MarkState {
    /// Latest last-trade price and its event time.
    pub fn last(&self) -> Option<(Ts, Decimal)> {
        self.last
    }
    /// Latest best bid and its event time.
    pub fn bid(&self) -> Option<(Ts, Decimal)> {
        self.bid
    }
    /// Latest best ask and its event time.
    pub fn ask(&self) -> Option<(Ts, Decimal)> {
        self.ask
    }
    /// Latest closing price and its event time.
    pub fn close(&self) -> Option<(Ts, Decimal)> {
        self.close
    }

    /// Absorbs one market event.
    pub fn update(&mut self, e: &MarketEvent) {
        match e {
            MarketEvent::Listed(_) => {}
            MarketEvent::Quote(q) => {
                let (e, n) = (&mut self.emptied, &mut self.seqs);
                for (slot, emptied, seq, update) in [
                    (&mut self.last, &mut e.last, &mut n.last, field(q.last, q.cleared.last)),
                    (&mut self.bid, &mut e.bid, &mut n.bid, field(q.bid, q.cleared.bid)),
                    (&mut self.ask, &mut e.ask, &mut n.ask, field(q.ask, q.cleared.ask)),
                ] {
                    if let Some(v) = update {
                        newer(slot, emptied, seq, (q.ts, q.seq), v);
                    }
                }
            }
            MarketEvent::Close(c) => {
                newer(&mut self.close, &mut None, &mut self.seqs.close, (c.ts, c.seq), Some(c.price))
            }
        }
    }

    /// Market events that rebuild this state from nothing, in any order (checkpoint restore).
    pub fn events(&self, symbol: Symbol) -> Vec<MarketEvent> {
        let quote =
            |(ts, seq), bid, ask, last, cleared| MarketEvent::Quote(Quote { symbol, ts, bid, ask, last, cleared, seq });
        let none = Cleared::default();
        let n = self.seqs;
        let mut out = Vec::with_capacity(4);
        if let Some((ts, p)) = self.last {
            out.push(quote((ts, n.last), None, None, Some(p), none));
        }
        if let Some((ts, p)) = self.bid {
            out.push(quote((ts, n.bid), Some(p), None, None, none));
        }
        if let Some((ts, p)) = self.ask {
            out.push(quote((ts, n.ask), None, Some(p), None, none));
        }
        let Emptied { last, bid, ask } = self.emptied;
        for (ts, seq, cleared) in [
            (last, n.last, Cleared { last: true, ..none }),
            (bid, n.bid, Cleared { bid: true, ..none }),
            (ask, n.ask, Cleared { ask: true, ..none }),
        ] {
            if let Some(ts) = ts {
                out.push(quote((ts, seq), None, None, None, cleared));
            }
        }
        if let Some((ts, price)) = self.close {
            out.push(MarketEvent::Close(Close { symbol, ts, price, seq: n.close }));
        }
        out
    }

    /// The mark under `policy`.
    pub fn mark(&self, policy: &MarkPolicy) -> Mark {
        for source in &policy.0 {
            let found = match source {
                MarkSource::Last => self.last,
                MarkSource::Close => self.close,
                MarkSource::Mid => match (self.bid, self.ask) {
                    (Some((tb, b)), Some((ta, a))) if b <= a => Some((tb.max(ta), (b + a) / Decimal::TWO)),
                    _ => None,
                },
                MarkSource::None => None,
            };
            if let Some((ts, price)) = found {
                return Mark { price: Some(price), source: *source, ts };
            }
        }
        Mark { price: None, source: MarkSource::None, ts: 0 }
    }
}

/// [`LatestFold`] of market events into marks.
#[derive(Clone, Debug, Default)]
pub struct MarkFold(pub MarkPolicy);

impl LatestFold for MarkFold {
    type Key = Symbol;
    type Value = MarketEvent;
    type State = (bool, MarkState);
    type Output = Mark;

    fn fold(&self, state: &mut Self::State, value: MarketEvent) {
        state.0 = true;
        state.1.update(&value);
    }

    fn show(&self, _key: &Symbol, state: &Self::State) -> Option<Mark> {
        state.0.then(|| state.1.mark(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const S: Symbol = Symbol(700);

    fn quote(
        ts: Ts,
        bid: Option<Decimal>,
        ask: Option<Decimal>,
        last: Option<Decimal>,
        cleared: Cleared,
    ) -> MarketEvent {
        MarketEvent::Quote(Quote { symbol: S, ts, bid, ask, last, cleared, seq: 0 })
    }

    fn state(events: &[MarketEvent]) -> MarkState {
        let mut s = MarkState::default();
        for e in events {
            s.update(e);
        }
        s
    }

    fn price(s: &MarkState) -> (Option<Decimal>, MarkSource) {
        let m = s.mark(&MarkPolicy::default());
        (m.price, m.source)
    }

    #[test]
    fn an_emptied_field_falls_through_to_the_next_source_until_a_newer_price() {
        let none = Cleared::default();
        let no_bid = Cleared { bid: true, ..none };
        let no_last = Cleared { last: true, ..none };
        let base = [
            MarketEvent::Close(Close { symbol: S, ts: 1, price: dec!(380), seq: 0 }),
            quote(10, Some(dec!(385.0)), Some(dec!(385.4)), None, none),
            quote(11, None, None, Some(dec!(385.2)), none),
        ];
        assert_eq!(price(&state(&base)), (Some(dec!(385.2)), MarkSource::Last));
        // The only trade cancelled: the mid.
        let mut ev = base.to_vec();
        ev.push(quote(12, None, None, None, no_last));
        assert_eq!(price(&state(&ev)), (Some(dec!(385.2)), MarkSource::Mid));
        // The bid side empties while the ask moves: no mid, the close.
        ev.push(quote(13, None, Some(dec!(385.6)), None, no_bid));
        let s = state(&ev);
        assert_eq!((s.bid(), s.ask()), (None, Some((13, dec!(385.6)))));
        assert_eq!(price(&s), (Some(dec!(380)), MarkSource::Close));
        // A late bid (older than the emptying) changes nothing; a newer one brings the mid back.
        ev.push(quote(12, Some(dec!(385.2)), None, None, none));
        assert_eq!(price(&state(&ev)), (Some(dec!(380)), MarkSource::Close));
        ev.push(quote(14, Some(dec!(385.2)), None, None, none));
        assert_eq!(price(&state(&ev)), (Some(dec!(385.4)), MarkSource::Mid));
    }

    #[test]
    fn a_price_and_an_emptying_at_one_time_keep_the_price_in_either_order() {
        let a = quote(5, Some(dec!(10.00)), None, None, Cleared::default());
        let b = quote(5, None, None, None, Cleared { bid: true, ..Cleared::default() });
        let (ab, ba) = (state(&[a.clone(), b.clone()]), state(&[b, a]));
        assert_eq!(ab, ba);
        assert_eq!(ab.bid(), Some((5, dec!(10.00))));
    }

    /// A sweep through three levels reported at one trade time: the last line's price is the
    /// last trade, whatever order the fold sees them in (the larger price won until 2026-11-28).
    #[test]
    fn at_one_event_time_the_later_line_wins_in_any_order() {
        let none = Cleared::default();
        let at = |seq, bid, ask, last| match quote(7, bid, ask, last, none) {
            MarketEvent::Quote(q) => MarketEvent::Quote(Quote { seq, ..q }),
            e => e,
        };
        let sweep = [
            at(11, None, None, Some(dec!(385.4))),
            at(12, None, None, Some(dec!(385.2))),
            at(13, None, None, Some(dec!(385.0))),
            // Two books at one time: the later one's mid (10.01), not a mix of their sides.
            at(14, Some(dec!(9.98)), Some(dec!(10.04)), None),
            at(15, Some(dec!(10.00)), Some(dec!(10.02)), None),
        ];
        let forward = state(&sweep);
        let mut reversed = sweep.to_vec();
        reversed.reverse();
        assert_eq!(state(&reversed), forward);
        assert_eq!(forward.last(), Some((7, dec!(385.0))));
        let mid = forward.mark(&MarkPolicy(vec![MarkSource::Mid]));
        assert_eq!(mid.price, Some(dec!(10.01)));
        // The restore's events keep the lines: a later line at that time still wins after it,
        // an earlier one still loses.
        let rebuilt = state(&forward.events(S));
        assert_eq!(rebuilt, forward);
        let mut a = rebuilt.clone();
        a.update(&at(12, None, None, Some(dec!(390))));
        assert_eq!(a.last(), Some((7, dec!(385.0))));
        a.update(&at(16, None, None, Some(dec!(384.8))));
        assert_eq!(a.last(), Some((7, dec!(384.8))));
    }

    /// A close sent again at the same time with another price (a correction): the later line's.
    #[test]
    fn of_two_closes_at_one_time_the_later_line_wins() {
        let close = |seq, price| MarketEvent::Close(Close { symbol: S, ts: 9, price, seq });
        let (a, b) = (close(3, dec!(386.0)), close(4, dec!(385.8)));
        let (ab, ba) = (state(&[a.clone(), b.clone()]), state(&[b, a]));
        assert_eq!(ab, ba);
        assert_eq!(ab.close(), Some((9, dec!(385.8))));
        assert_eq!(state(&ab.events(S)), ab);
    }

    #[test]
    fn the_restore_events_rebuild_emptied_fields() {
        let none = Cleared::default();
        let s = state(&[
            quote(10, Some(dec!(1.00)), Some(dec!(1.01)), Some(dec!(1.00)), none),
            quote(11, None, None, None, Cleared { bid: true, last: true, ..none }),
        ]);
        let rebuilt = state(&s.events(S));
        assert_eq!(rebuilt, s);
        // Emptied at 11: a late price at 10.5 must still lose after a restore.
        let late = quote(10, Some(dec!(0.99)), None, Some(dec!(0.99)), none);
        let (mut a, mut b) = (s, rebuilt);
        a.update(&late);
        b.update(&late);
        assert_eq!(a, b);
        assert_eq!((a.bid(), a.last()), (None, None));
    }

    #[test]
    fn a_state_written_before_emptied_fields_existed_still_loads() {
        #[derive(Serialize)]
        struct Before {
            last: Option<(Ts, Decimal)>,
            bid: Option<(Ts, Decimal)>,
            ask: Option<(Ts, Decimal)>,
            close: Option<(Ts, Decimal)>,
        }
        let old = Before { last: Some((3, dec!(2.5))), bid: None, ask: Some((2, dec!(2.6))), close: None };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        let s: MarkState = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!((s.last(), s.ask(), s.emptied), (Some((3, dec!(2.5))), Some((2, dec!(2.6))), Emptied::default()));
    }
}
