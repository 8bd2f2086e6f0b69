//! Marks: the price each position is valued at, per symbol, by a configurable policy.
//!
//! The default policy is the last trade price, falling back to the bid/ask mid, then the close.
//! Each field keeps its latest value by event time; a late quote (older than what is held) does
//! not move it. Ties on event time keep the larger price, so the result never depends on the
//! order updates arrive in within one epoch.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{Close, MarketEvent, Quote, Symbol, Ts};
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
}

fn newer(slot: &mut Option<(Ts, Decimal)>, ts: Ts, v: Option<Decimal>) {
    if let Some(v) = v {
        if slot.is_none_or(|held| (ts, v) > held) {
            *slot = Some((ts, v));
        }
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
                newer(&mut self.last, q.ts, q.last);
                newer(&mut self.bid, q.ts, q.bid);
                newer(&mut self.ask, q.ts, q.ask);
            }
            MarketEvent::Close(c) => newer(&mut self.close, c.ts, Some(c.price)),
        }
    }

    /// Market events that rebuild this state from nothing, in any order (checkpoint restore).
    pub fn events(&self, symbol: Symbol) -> Vec<MarketEvent> {
        let quote = |ts, bid, ask, last| MarketEvent::Quote(Quote { symbol, ts, bid, ask, last });
        let mut out = Vec::with_capacity(4);
        if let Some((ts, p)) = self.last {
            out.push(quote(ts, None, None, Some(p)));
        }
        if let Some((ts, p)) = self.bid {
            out.push(quote(ts, Some(p), None, None));
        }
        if let Some((ts, p)) = self.ask {
            out.push(quote(ts, None, Some(p), None));
        }
        if let Some((ts, price)) = self.close {
            out.push(MarketEvent::Close(Close { symbol, ts, price }));
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
