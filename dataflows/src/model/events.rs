//! Validated input events: what the dataflows consume once the sources have parsed and checked a line.
//!
//! The wire format (JSON lines, decimals as strings) lives in `harbour-sources`; the rules that turn
//! a parsed line into one of these or a dead letter live in [`crate::validate`].

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ids::{ExecId, OrderId, PositionKey, Symbol, Ts};

/// Buy or sell, from the account's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Buy: quantity adds to the position.
    Buy,
    /// Sell: quantity subtracts from the position.
    Sell,
}

impl Side {
    /// +1 for a buy, -1 for a sell.
    pub fn sign(self) -> i64 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }

    /// The contract's spelling: `BUY` or `SELL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// One execution. A bust retracts it from every output, as if it never happened.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fill {
    /// Event time (execution time).
    pub ts: Ts,
    /// Unique execution id; also the tie-breaker for fills with the same timestamp.
    pub exec_id: ExecId,
    /// The order this execution belongs to.
    pub order_id: OrderId,
    /// Account, strategy and symbol.
    pub key: PositionKey,
    /// Direction.
    pub side: Side,
    /// Shares, always positive.
    pub qty: i64,
    /// Execution price in the instrument's currency.
    pub price: Decimal,
    /// Broker commission given on the fill; overrides the schedule's broker part when present.
    pub commission: Option<Decimal>,
    /// True when the instrument is exempt from stamp duty (ETFs and the like).
    pub stamp_duty_exempt: bool,
    /// True when the fill was flagged as an odd-lot trade.
    pub odd_lot: bool,
    /// Source position of the line that carried the fill (file line or Kafka offset), for tracing.
    pub source_seq: u64,
}

impl Fill {
    /// Signed quantity: positive for a buy.
    pub fn signed_qty(&self) -> i64 {
        self.side.sign() * self.qty
    }

    /// Price times quantity, unsigned.
    pub fn consideration(&self) -> Decimal {
        // The mantissas' product at the price's scale: what `Decimal` multiplication gives when
        // it fits in 96 bits (always, for a validated fill), without its 192-bit general path.
        // (A zero is `Decimal::ZERO`, scale 0, as `Decimal` gives it.)
        let p = self.price.mantissa().checked_mul(i128::from(self.qty));
        match p.and_then(|p| {
            if p == 0 {
                Some(Decimal::ZERO)
            } else {
                Decimal::try_from_i128_with_scale(p, self.price.scale()).ok()
            }
        }) {
            Some(c) => c,
            None => self.price * Decimal::from(self.qty),
        }
    }
}

/// A cancelled execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bust {
    /// The execution to retract.
    pub exec_id: ExecId,
    /// When the bust was issued.
    pub ts: Ts,
}

/// A top-of-book or last-trade update. Absent fields leave the previous value in place; a field
/// named in `cleared` empties it (the book side emptied, the only recent trade was cancelled).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Quote {
    /// Instrument.
    pub symbol: Symbol,
    /// Event time.
    pub ts: Ts,
    /// Best bid.
    pub bid: Option<Decimal>,
    /// Best ask.
    pub ask: Option<Decimal>,
    /// Last trade price.
    pub last: Option<Decimal>,
    /// Fields this quote empties (each one `None` above).
    #[serde(default)]
    pub cleared: Cleared,
    /// Input order of the line that carried it (the engine's line count, set as the line is
    /// fed; 0 from elsewhere): at equal event times the later line's fields win (a sweep of
    /// several price levels reported at one trade time ends at the last level's price).
    #[serde(default)]
    pub seq: u64,
}

/// The price fields a [`Quote`] empties: `"bid": null` on the wire, no bid any more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cleared {
    /// The bid side of the book is empty.
    pub bid: bool,
    /// The ask side of the book is empty.
    pub ask: bool,
    /// There is no last trade price (the only recent trade was cancelled).
    pub last: bool,
}

impl Cleared {
    /// True when the quote empties any field.
    pub fn any(self) -> bool {
        self.bid || self.ask || self.last
    }
}

/// What a trading status is about: one security, or a whole market's session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StatusSubject {
    /// A security (HKEX Security Status, message 21).
    Security(Symbol),
    /// A market (`MAIN`, `GEM`, …; HKEX Trading Session Status, message 20).
    Market(smol_str::SmolStr),
}

impl StatusSubject {
    /// `security` or `market`.
    pub fn kind(&self) -> &'static str {
        match self {
            StatusSubject::Security(_) => "security",
            StatusSubject::Market(_) => "market",
        }
    }

    /// The security code or market code.
    pub fn name(&self) -> String {
        match self {
            StatusSubject::Security(s) => s.to_string(),
            StatusSubject::Market(m) => m.to_string(),
        }
    }
}

/// Security statuses.
pub const SECURITY_STATUSES: [&str; 2] = ["trading", "halted"];
/// Market session statuses (TradingSesStatus 0, 10, 20, 30, 40, 50, 100).
pub const MARKET_STATUSES: [&str; 7] = ["unknown", "halted", "pre_open", "open", "pre_close", "closed", "day_closed"];

/// A trading status: a security halted or resumed, a market's session changing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TradingStatus {
    /// Event time.
    pub ts: Ts,
    /// What it is about.
    pub subject: StatusSubject,
    /// One of [`SECURITY_STATUSES`] or [`MARKET_STATUSES`].
    pub status: smol_str::SmolStr,
    /// The market's TradingSessionSubID (markets only).
    pub session: Option<u8>,
}

/// An official closing price.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Close {
    /// Instrument.
    pub symbol: Symbol,
    /// Event time.
    pub ts: Ts,
    /// Closing price.
    pub price: Decimal,
    /// Input order of the line that carried it, as [`Quote::seq`]: of two closes at one event
    /// time (a corrected close sent again), the later line's.
    #[serde(default)]
    pub seq: u64,
}

/// Market data that moves marks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MarketEvent {
    /// The instrument exists (from reference data); gives it a mark row even before any price.
    Listed(Symbol),
    /// A quote or trade.
    Quote(Quote),
    /// A closing price.
    Close(Close),
}

impl MarketEvent {
    /// Sets the input order of a quote or close ([`Quote::seq`], [`Close::seq`]).
    pub fn set_seq(&mut self, seq: u64) {
        match self {
            MarketEvent::Quote(q) => q.seq = seq,
            MarketEvent::Close(c) => c.seq = seq,
            MarketEvent::Listed(_) => {}
        }
    }

    /// The instrument the event is about.
    pub fn symbol(&self) -> Symbol {
        match self {
            MarketEvent::Listed(s) => *s,
            MarketEvent::Quote(q) => q.symbol,
            MarketEvent::Close(c) => c.symbol,
        }
    }
}

/// Reference data for one instrument.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instrument {
    /// Security code.
    pub symbol: Symbol,
    /// Short name.
    pub name: String,
    /// Board lot: quantities must be multiples of it unless traded as odd lots.
    pub lot_size: i64,
    /// ISO currency code.
    pub currency: String,
    /// Sector, for concentration reports.
    pub sector: Option<String>,
    /// Whether stamp duty applies (false for ETFs and other exempt products).
    pub stamp_duty: bool,
    /// HKEX SpreadTableCode (`01`, …) when known: picks the spread table by code (see
    /// [`crate::ticks::SpreadTables::for_code`]). The feed's Security Definition carries it.
    #[serde(default)]
    pub spread_table: Option<smol_str::SmolStr>,
}

/// Lifecycle state of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Accepted by the exchange, nothing filled.
    New,
    /// Some quantity filled.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Cancelled before completion.
    Cancelled,
    /// Rejected.
    Rejected,
    /// Expired at the end of its validity.
    Expired,
}

impl OrderStatus {
    /// Parses the contract's spelling (`NEW`, `PARTIALLY_FILLED`, `FILLED`, `CANCELLED`, `REJECTED`, `EXPIRED`).
    pub fn parse(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "NEW" => OrderStatus::New,
            "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
            "FILLED" => OrderStatus::Filled,
            "CANCELLED" | "CANCELED" => OrderStatus::Cancelled,
            "REJECTED" => OrderStatus::Rejected,
            "EXPIRED" => OrderStatus::Expired,
            _ => return None,
        })
    }

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Expired => "EXPIRED",
        }
    }
}

/// One order event; the latest by event time is the order's state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Order {
    /// Event time.
    pub ts: Ts,
    /// Order id.
    pub order_id: OrderId,
    /// Account, strategy and symbol.
    pub key: PositionKey,
    /// Direction.
    pub side: Side,
    /// Ordered quantity.
    pub qty: i64,
    /// Limit price, absent for market orders.
    pub price: Option<Decimal>,
    /// Order type as given (`LIMIT`, `MARKET`, `ENHANCED_LIMIT`, ...).
    pub order_type: String,
    /// Lifecycle state.
    pub status: OrderStatus,
    /// Source position of the line.
    pub source_seq: u64,
}
