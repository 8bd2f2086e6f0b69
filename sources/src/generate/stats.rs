//! What a generated day contains: counts by line type, and the intentionally invalid lines by kind.

use serde::Serialize;

/// The kinds of intentionally invalid line; each is rejected by the input rules for its own reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum InvalidKind {
    /// Not JSON, or not the contract (truncated line, trailing comma, CSV).
    Malformed,
    /// A fill or quote for security code 99999, which is never listed.
    UnknownSymbol,
    /// A fill priced between two ticks of its band.
    OffTick,
    /// A fill of a whole number of lots plus a few shares, not flagged odd-lot.
    NotBoardLot,
    /// A bust of an exec id that was never sent.
    UnknownExecId,
    /// An earlier fill's line sent again.
    DuplicateExecId,
    /// A fill with quantity 0.
    ZeroQty,
}

impl InvalidKind {
    /// Every kind, in a fixed order.
    pub const ALL: [InvalidKind; 7] = [
        InvalidKind::Malformed,
        InvalidKind::UnknownSymbol,
        InvalidKind::OffTick,
        InvalidKind::NotBoardLot,
        InvalidKind::UnknownExecId,
        InvalidKind::DuplicateExecId,
        InvalidKind::ZeroQty,
    ];

    /// The rejection code the input rules give this kind
    /// (`harbour_dataflows::validate::Rejection::code`).
    pub fn rejection_code(self) -> &'static str {
        match self {
            InvalidKind::Malformed => "parse",
            InvalidKind::UnknownSymbol => "unknown_symbol",
            InvalidKind::OffTick => "off_tick",
            InvalidKind::NotBoardLot => "not_board_lot",
            InvalidKind::UnknownExecId => "unknown_exec_id",
            InvalidKind::DuplicateExecId => "duplicate_exec_id",
            InvalidKind::ZeroQty => "qty_not_positive",
        }
    }
}

/// Intentionally invalid lines, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InvalidCounts([usize; 7]);

impl InvalidCounts {
    /// Lines of one kind.
    pub fn get(&self, kind: InvalidKind) -> usize {
        self.0[kind as usize]
    }

    pub(crate) fn add(&mut self, kind: InvalidKind) {
        self.0[kind as usize] += 1;
    }

    /// Every kind with its count, in [`InvalidKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (InvalidKind, usize)> + '_ {
        InvalidKind::ALL.iter().map(|&k| (k, self.get(k)))
    }

    /// All invalid lines.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }
}

/// Counts of the lines of a generated day. Valid lines are counted by type; every intentionally
/// invalid line (whatever its shape) only under `invalid` and `invalid_by_kind`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DayStats {
    /// All lines.
    pub lines: usize,
    /// Valid fills (including those busted later and those that arrive late).
    pub fills: usize,
    /// Valid busts, each of an earlier valid fill.
    pub busts: usize,
    /// Quotes.
    pub quotes: usize,
    /// Closing prices, one per symbol.
    pub closes: usize,
    /// Order events (new, partially filled, filled, cancelled, expired).
    pub orders: usize,
    /// Instrument reference lines, one per symbol.
    pub instruments: usize,
    /// Valid fills emitted out of timestamp order, seconds to minutes after their time.
    pub late: usize,
    /// Intentionally invalid lines; the input rules reject exactly these.
    pub invalid: usize,
    /// The invalid lines by kind.
    pub invalid_by_kind: InvalidCounts,
}
