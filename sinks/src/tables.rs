//! The output tables, as plain rows with versions: what every sink writes.
//!
//! | table | key | row |
//! |---|---|---|
//! | positions | account, strategy, symbol | [`PositionRow`] |
//! | fills | exec_id | [`FillPnl`] (fill, cost schedule and fee total, realized P&L) |
//! | account_rollups / strategy_rollups | account / strategy | [`Totals`] |
//! | account_pnl_minute / strategy_pnl_minute | account / strategy, minute | [`FlowTotals`] |
//! | orders | order_id | [`Order`] (latest state) |
//! | marks | symbol | [`Mark`] |
//! | instruments | symbol | [`Instrument`] |
//! | trading_status | security or market | [`TradingStatus`] (latest) |
//! | risk | account / strategy / desk | [`RiskRow`] |
//! | alerts | group, metric, severity, seq, kind | [`AlertRow`] (insert-only) |
//! | volatility | symbol | [`VolRow`] |
//! | dead_letters | source, position | [`DeadLetter`] |

use harbour_dataflows::marks::{Mark, MarkState};
use harbour_dataflows::model::{Instrument, Order, Symbol, TradingStatus, Ts};
use harbour_dataflows::operators::FillPnl;
use harbour_dataflows::pnl::PositionRow;
use harbour_dataflows::risk::book::{AlertRow, RiskRow, VolRow};
use harbour_dataflows::rollups::Group;
use harbour_dataflows::sums::{FlowTotals, Totals};
use harbour_dataflows::validate::DeadLetter;

/// A row and the version it was written at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Versioned<T> {
    /// The row.
    pub row: T,
    /// Version: grows with the input (the epoch of the update that produced the row).
    pub version: u64,
}

/// Every output table's current rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tables {
    /// Positions valued at marks.
    pub positions: Vec<Versioned<PositionRow>>,
    /// Enriched fills.
    pub fills: Vec<Versioned<FillPnl>>,
    /// Account and strategy roll-ups.
    pub rollups: Vec<Versioned<(Group, Totals)>>,
    /// Flows per account/strategy per minute.
    pub minutes: Vec<Versioned<((Group, Ts), FlowTotals)>>,
    /// Latest order states.
    pub orders: Vec<Versioned<Order>>,
    /// Marks per symbol.
    pub marks: Vec<Versioned<(Symbol, Mark)>>,
    /// Reference data.
    pub instruments: Vec<Versioned<Instrument>>,
    /// Latest trading status per security and market.
    pub status: Vec<Versioned<TradingStatus>>,
    /// Risk metrics.
    pub risk: Vec<Versioned<RiskRow>>,
    /// Limit alerts.
    pub alerts: Vec<Versioned<AlertRow>>,
    /// EWMA volatility per symbol.
    pub vol: Vec<Versioned<VolRow>>,
    /// Rejected input lines.
    pub dead_letters: Vec<DeadLetter>,
}

/// Every output table's current rows, borrowed from where they are kept (what the Parquet sink
/// encodes, with no copy of the state).
#[derive(Clone, Debug, Default)]
pub struct TableRefs<'a> {
    /// Positions valued at marks.
    pub positions: Vec<Versioned<&'a PositionRow>>,
    /// Enriched fills.
    pub fills: Vec<Versioned<&'a FillPnl>>,
    /// Account and strategy roll-ups.
    pub rollups: Vec<Versioned<&'a (Group, Totals)>>,
    /// Flows per account/strategy per minute.
    pub minutes: Vec<Versioned<&'a ((Group, Ts), FlowTotals)>>,
    /// Latest order states.
    pub orders: Vec<Versioned<&'a Order>>,
    /// Marks per symbol.
    pub marks: Vec<Versioned<&'a (Symbol, Mark)>>,
    /// Reference data.
    pub instruments: Vec<Versioned<&'a Instrument>>,
    /// Latest trading status per security and market.
    pub status: Vec<Versioned<&'a TradingStatus>>,
    /// Risk metrics.
    pub risk: Vec<Versioned<&'a RiskRow>>,
    /// Limit alerts.
    pub alerts: Vec<Versioned<&'a AlertRow>>,
    /// EWMA volatility per symbol.
    pub vol: Vec<Versioned<&'a VolRow>>,
    /// Rejected input lines.
    pub dead_letters: &'a [DeadLetter],
}

/// One row change: the row as of `version`, or (when `deleted`) its removal at `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<T> {
    /// The row (for a removal, the row removed: its key is what is deleted).
    pub row: T,
    /// Version: the epoch of the change.
    pub version: u64,
    /// True when the row no longer exists (a busted fill, a position whose fills were all busted).
    pub deleted: bool,
}

/// Every table's changes since the last flush, in epoch order: what upserting sinks write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Positions.
    pub positions: Vec<Change<PositionRow>>,
    /// Enriched fills.
    pub fills: Vec<Change<FillPnl>>,
    /// Roll-ups.
    pub rollups: Vec<Change<(Group, Totals)>>,
    /// Minute flows.
    pub minutes: Vec<Change<((Group, Ts), FlowTotals)>>,
    /// Order states.
    pub orders: Vec<Change<Order>>,
    /// Marks.
    pub marks: Vec<Change<(Symbol, Mark)>>,
    /// Latest market fields (bid, ask, last, close with their times) of symbols quoted.
    pub quotes: Vec<Change<(Symbol, MarkState)>>,
    /// Instruments.
    pub instruments: Vec<Change<Instrument>>,
    /// Trading statuses.
    pub status: Vec<Change<TradingStatus>>,
    /// Risk metrics.
    pub risk: Vec<Change<RiskRow>>,
    /// New alerts.
    pub alerts: Vec<Change<AlertRow>>,
    /// Volatility.
    pub vol: Vec<Change<VolRow>>,
    /// New dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Every input message as received, in order (the event-sourcing log).
    pub events: Vec<SourceEvent>,
}

/// One input message as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEvent {
    /// Where it came from (`topic/partition`, a file name).
    pub source: smol_str::SmolStr,
    /// Offset or line number.
    pub position: u64,
    /// The HKT trade date it is filed under (its event time's, else the input's around it).
    pub trade_date: chrono::NaiveDate,
    /// Its `type` (`fill`, `quote`, …), or empty when it did not parse.
    pub kind: &'static str,
    /// The dead-letter reason code when refused, else empty.
    pub code: smol_str::SmolStr,
    /// The message.
    pub raw: String,
    /// The epoch it was read in.
    pub version: u64,
}

impl Changes {
    /// Number of changed rows over all tables.
    pub fn len(&self) -> usize {
        self.positions.len()
            + self.fills.len()
            + self.rollups.len()
            + self.minutes.len()
            + self.orders.len()
            + self.marks.len()
            + self.quotes.len()
            + self.instruments.len()
            + self.status.len()
            + self.risk.len()
            + self.alerts.len()
            + self.vol.len()
            + self.dead_letters.len()
            + self.events.len()
    }

    /// Bytes of message text the changes carry (the event log's messages and the dead letters'
    /// lines): what makes a batch large beyond its row count (a message can be up to the
    /// broker's limit, 1 MiB by default).
    pub fn text_bytes(&self) -> usize {
        self.events.iter().map(|e| e.raw.len()).sum::<usize>()
            + self.dead_letters.iter().map(|d| d.raw.len() + d.reason.len()).sum::<usize>()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy without the event log (every input message as received), for a sink that reads
    /// the tables and the quotes but not the log.
    pub fn without_events(&self) -> Changes {
        Changes { quotes: self.quotes.clone(), ..self.tables_only() }
    }

    /// A copy of the tables' changes, without the event log and the quotes (for a sink that keeps
    /// tables only).
    pub fn tables_only(&self) -> Changes {
        Changes {
            positions: self.positions.clone(),
            fills: self.fills.clone(),
            rollups: self.rollups.clone(),
            minutes: self.minutes.clone(),
            orders: self.orders.clone(),
            marks: self.marks.clone(),
            quotes: Vec::new(),
            instruments: self.instruments.clone(),
            status: self.status.clone(),
            risk: self.risk.clone(),
            alerts: self.alerts.clone(),
            vol: self.vol.clone(),
            dead_letters: self.dead_letters.clone(),
            events: Vec::new(),
        }
    }

    /// Appends later changes (of later epochs) to these.
    pub fn append(&mut self, mut later: Changes) {
        self.positions.append(&mut later.positions);
        self.fills.append(&mut later.fills);
        self.rollups.append(&mut later.rollups);
        self.minutes.append(&mut later.minutes);
        self.orders.append(&mut later.orders);
        self.marks.append(&mut later.marks);
        self.quotes.append(&mut later.quotes);
        self.instruments.append(&mut later.instruments);
        self.status.append(&mut later.status);
        self.risk.append(&mut later.risk);
        self.alerts.append(&mut later.alerts);
        self.vol.append(&mut later.vol);
        self.dead_letters.append(&mut later.dead_letters);
        self.events.append(&mut later.events);
    }
}

/// `{"name":"value",...}` of (name, decimal) pairs: the JSON form of a row's sector weights,
/// contributors and alert drivers in every sink (decimals as strings, as in the input contract).
pub fn json_pairs<K: std::fmt::Display>(pairs: impl IntoIterator<Item = (K, rust_decimal::Decimal)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in k.to_string().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push_str("\":\"");
        out.push_str(&v.to_string());
        out.push('"');
    }
    out.push('}');
    out
}

/// The sector weights of a risk row as JSON (instruments without a sector under `""`).
pub fn sectors_json(r: &RiskRow) -> String {
    json_pairs(r.sectors.iter().map(|(s, w)| (s.as_deref().unwrap_or(""), w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn json_pairs_escape_names() {
        assert_eq!(
            json_pairs([("IT", Decimal::new(5, 1)), ("a\"b", Decimal::new(-125, 2))]),
            r#"{"IT":"0.5","a\"b":"-1.25"}"#
        );
        assert_eq!(json_pairs(Vec::<(String, rust_decimal::Decimal)>::new()), "{}");
    }

    /// A copy without the event log keeps the quotes and the tables (what Redis reads); a
    /// tables-only copy drops the quotes too.
    #[test]
    fn copies_drop_what_their_sink_does_not_read() {
        let mut c = Changes::default();
        c.quotes.push(Change { row: (Symbol(700), Default::default()), version: 3, deleted: false });
        let mark = Mark { price: None, source: harbour_dataflows::marks::MarkSource::None, ts: 0 };
        c.marks.push(Change { row: (Symbol(700), mark), version: 3, deleted: false });
        c.events.push(SourceEvent {
            source: "fills/0".into(),
            position: 9,
            trade_date: Default::default(),
            kind: "quote",
            code: Default::default(),
            raw: "{}".into(),
            version: 3,
        });
        let w = c.without_events();
        assert_eq!((w.quotes.len(), w.marks.len(), w.events.len()), (1, 1, 0));
        let t = c.tables_only();
        assert_eq!((t.quotes.len(), t.marks.len(), t.events.len()), (0, 1, 0));
        assert_eq!(c.len(), 3);
    }
}
