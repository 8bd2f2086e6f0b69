//! Identifiers and timestamps shared by every event and output row.

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::fmt;

/// An HKEX security code (`00700` is Tencent). Stored as the number OMD-C uses, shown with five digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Symbol(pub u32);

impl Symbol {
    /// Parses a security code such as `"00700"` or `"700"`; at most 5 digits.
    pub fn parse(s: &str) -> Option<Symbol> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(Symbol)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

/// A trading account. Short names are stored inline (no allocation up to 23 bytes).
pub type Account = SmolStr;
/// A strategy (book) within an account.
pub type Strategy = SmolStr;
/// An execution id, unique per fill for the day.
pub type ExecId = SmolStr;
/// An order id.
pub type OrderId = SmolStr;

/// Nanoseconds since the Unix epoch, UTC. Event time of every input.
pub type Ts = i64;

/// Nanoseconds in a minute, for minute buckets.
pub const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// The key of a position: one account, one strategy, one instrument.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PositionKey {
    /// The account holding the position.
    pub account: Account,
    /// The strategy within the account.
    pub strategy: Strategy,
    /// The instrument.
    pub symbol: Symbol,
}

impl fmt::Display for PositionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.strategy, self.symbol)
    }
}
