//! HKEX OMD-C (Orion Market Data, Securities Market): the exchange's binary market-data feed.
//!
//! ```text
//!  UDP multicast / capture file ─► wire (zero-copy decode) ─► feed (sequence, A/B arbitration)
//!        ─► book (full order book from 30/31/32, aggregated from 53) + prices + status
//!        ─► contract events (instrument, quote, close) ─► the same engine inputs as JSON
//! ```
//!
//! - [`wire`]: packet and message layouts; decoding never panics (errors name the offset).
//! - [`encode`]: the inverse, for tests, the generator and the test retransmission server.
//! - [`book`]: order books per security.
//!
//! Layouts follow HKEX's "OMD-C Interface Specifications – Binary Protocol" v1.45, summarised in
//! ../shared/HKEX.md §1 (the spec itself is copyrighted and not copied here).

pub mod book;
pub mod capture;
pub mod day;
pub mod encode;
pub mod feed;
pub mod replay;
pub mod retrans;
pub mod wire;

#[cfg(test)]
mod tests;
