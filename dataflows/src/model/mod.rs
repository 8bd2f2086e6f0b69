//! The domain model: identifiers, input events and the pure average-cost position fold.
//!
//! Everything here is plain data with `serde`, `Ord` and `Clone`, so it can travel through timely
//! channels and sit in differential collections. Money and prices are [`rust_decimal::Decimal`];
//! quantities are whole shares (`i64`, signed where a direction matters).

mod events;
mod ids;
mod position;

pub use events::{
    Bust, Cleared, Close, Fill, Instrument, MarketEvent, Order, OrderStatus, Quote, Side, StatusSubject, TradingStatus,
    MARKET_STATUSES, SECURITY_STATUSES,
};
pub use ids::{Account, ExecId, OrderId, PositionKey, Strategy, Symbol, Ts, NANOS_PER_MINUTE};
pub use position::{PositionState, PositionStep};
