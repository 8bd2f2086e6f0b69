//! Rows as the ClickHouse tables of deploy/clickhouse/ hold them (RowBinary: field order is
//! column order). Money is `Decimal(38, 8)` (an `i128` at scale 8, rounded half to even beyond 8
//! places, as the pipeline rounds: a fill's realized P&L can have more); event times are a `DateTime` (seconds) plus
//! the exact nanoseconds; `trade_date` is the Hong Kong trade date.

use chrono::NaiveDate;
use clickhouse::Row;
use harbour_dataflows::marks::MarkState;
use harbour_dataflows::model::{Instrument, Order, Symbol, TradingStatus, Ts};
use harbour_dataflows::operators::FillPnl;
use harbour_dataflows::pnl::PositionRow;
use harbour_dataflows::risk::book::{AlertRow, RiskRow, VolRow};
use harbour_dataflows::rollups::Group;
use harbour_dataflows::sums::FlowTotals;
use harbour_dataflows::validate::{trade_date, DeadLetter};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::parquet::to_i128;
use crate::tables::{json_pairs, sectors_json, Change, SourceEvent};

fn dec(d: Decimal) -> i128 {
    to_i128(d)
}

/// Days since 1970-01-01 of the HKT trade date of `ts` (ClickHouse `Date`).
pub fn date(ts: Ts) -> u16 {
    days(trade_date(ts))
}

/// `day` as ClickHouse's `Date`: days since 1970-01-01.
pub fn days(day: NaiveDate) -> u16 {
    (day - NaiveDate::default()).num_days().clamp(0, u16::MAX as i64) as u16
}

/// Whole seconds of `ts` (ClickHouse `DateTime`, UTC).
pub fn seconds(ts: Ts) -> u32 {
    (ts.div_euclid(1_000_000_000)).clamp(0, u32::MAX as i64) as u32
}

/// `positions` and (without the cost and counts) `position_history`.
#[derive(Row, Serialize)]
pub struct Position {
    trade_date: u16,
    account: String,
    strategy: String,
    symbol: String,
    qty: i64,
    avg_price: Option<i128>,
    cost: i128,
    realized: i128,
    fees: i128,
    unrealized: i128,
    market_value: i128,
    total: i128,
    mark: Option<i128>,
    mark_source: String,
    fills: u64,
    bought: i64,
    sold: i64,
    last_fill_time: u32,
    last_fill_ts_ns: i64,
    version: u64,
    deleted: u8,
}

impl From<&Change<PositionRow>> for Position {
    fn from(c: &Change<PositionRow>) -> Self {
        let r = &c.row;
        Position {
            trade_date: date(r.last_fill_ts),
            account: r.key.account.to_string(),
            strategy: r.key.strategy.to_string(),
            symbol: r.key.symbol.to_string(),
            qty: r.qty,
            avg_price: r.avg_price.map(dec),
            cost: dec(r.cost),
            realized: dec(r.realized),
            fees: dec(r.fees),
            unrealized: dec(r.unrealized),
            market_value: dec(r.market_value),
            total: dec(r.total),
            mark: r.mark.map(dec),
            mark_source: r.mark_source.as_str().to_string(),
            fills: u64::from(r.fills),
            bought: r.bought,
            sold: r.sold,
            last_fill_time: seconds(r.last_fill_ts),
            last_fill_ts_ns: r.last_fill_ts,
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// `position_history`: every version of every position.
#[derive(Row, Serialize)]
pub struct PositionVersion {
    trade_date: u16,
    account: String,
    strategy: String,
    symbol: String,
    qty: i64,
    avg_price: Option<i128>,
    realized: i128,
    fees: i128,
    unrealized: i128,
    market_value: i128,
    total: i128,
    mark: Option<i128>,
    version: u64,
    deleted: u8,
}

impl From<&Change<PositionRow>> for PositionVersion {
    fn from(c: &Change<PositionRow>) -> Self {
        let r = &c.row;
        PositionVersion {
            trade_date: date(r.last_fill_ts),
            account: r.key.account.to_string(),
            strategy: r.key.strategy.to_string(),
            symbol: r.key.symbol.to_string(),
            qty: r.qty,
            avg_price: r.avg_price.map(dec),
            realized: dec(r.realized),
            fees: dec(r.fees),
            unrealized: dec(r.unrealized),
            market_value: dec(r.market_value),
            total: dec(r.total),
            mark: r.mark.map(dec),
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// `fills`: enriched, with the fee breakdown; a bust is the same key with `deleted = 1`.
#[derive(Row, Serialize)]
pub struct FillRow {
    trade_date: u16,
    exec_id: String,
    order_id: String,
    account: String,
    strategy: String,
    symbol: String,
    side: String,
    qty: i64,
    price: i128,
    time: u32,
    ts_ns: i64,
    consideration: i128,
    stamp_duty: i128,
    sfc_levy: i128,
    afrc_levy: i128,
    trading_fee: i128,
    settlement_fee: i128,
    commission: i128,
    fees_total: i128,
    fee_schedule: String,
    realized: i128,
    qty_after: i64,
    source_seq: u64,
    version: u64,
    deleted: u8,
}

impl From<&Change<FillPnl>> for FillRow {
    fn from(c: &Change<FillPnl>) -> Self {
        let (f, fees) = (&c.row.fill, c.row.fees());
        FillRow {
            trade_date: date(f.ts),
            exec_id: f.exec_id.to_string(),
            order_id: f.order_id.to_string(),
            account: f.key.account.to_string(),
            strategy: f.key.strategy.to_string(),
            symbol: f.key.symbol.to_string(),
            side: f.side.as_str().to_string(),
            qty: f.qty,
            price: dec(f.price),
            time: seconds(f.ts),
            ts_ns: f.ts,
            consideration: dec(f.consideration()),
            stamp_duty: dec(fees.stamp_duty),
            sfc_levy: dec(fees.sfc_levy),
            afrc_levy: dec(fees.afrc_levy),
            trading_fee: dec(fees.trading_fee),
            settlement_fee: dec(fees.settlement_fee),
            commission: dec(fees.commission),
            fees_total: dec(fees.total),
            fee_schedule: fees.schedule.to_string(),
            realized: dec(c.row.step.realized),
            qty_after: c.row.step.qty_after,
            source_seq: f.source_seq,
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// `dead_letters`.
#[derive(Row, Serialize)]
pub struct DeadLetterRow {
    trade_date: u16,
    source: String,
    position: u64,
    code: String,
    reason: String,
    raw: String,
    version: u64,
}

impl DeadLetterRow {
    /// A dead letter written at `version`.
    pub fn new(d: &DeadLetter, version: u64) -> Self {
        DeadLetterRow {
            trade_date: days(d.trade_date),
            source: d.source.to_string(),
            position: d.position,
            code: d.code.to_string(),
            reason: d.reason.clone(),
            raw: d.raw.clone(),
            version,
        }
    }
}

/// `sink_progress`: the newest epoch the sink holds.
#[derive(Row, Serialize)]
pub struct Progress {
    /// Sink name.
    pub sink: String,
    /// Epoch.
    pub epoch: u64,
    /// Rows written for it.
    pub rows: u64,
    /// When (seconds since the epoch, UTC).
    pub written_at: u32,
}

fn whole(d: Decimal) -> i64 {
    i64::try_from(d.trunc()).unwrap_or(i64::MAX)
}

/// `account_pnl_minute` and `strategy_pnl_minute`: fill flows per group per minute (the column
/// names differ in the group column only).
macro_rules! minute_row {
    ($(#[$m:meta])* $name:ident, $group:ident) => {
        $(#[$m])*
        #[derive(Row, Serialize)]
        pub struct $name {
            trade_date: u16,
            $group: String,
            minute: u32,
            fills: i64,
            bought: i64,
            sold: i64,
            buy_notional: i128,
            sell_notional: i128,
            realized: i128,
            fees: i128,
            net: i128,
            version: u64,
            deleted: u8,
        }

        impl From<&Change<((Group, Ts), FlowTotals)>> for $name {
            fn from(c: &Change<((Group, Ts), FlowTotals)>) -> Self {
                let ((g, minute), t) = &c.row;
                $name {
                    trade_date: date(*minute),
                    $group: g.name().to_string(),
                    minute: seconds(*minute),
                    fills: whole(t.fills),
                    bought: whole(t.bought),
                    sold: whole(t.sold),
                    buy_notional: dec(t.buy_notional),
                    sell_notional: dec(t.sell_notional),
                    realized: dec(t.realized),
                    fees: dec(t.fees),
                    net: dec(t.net),
                    version: c.version,
                    deleted: u8::from(c.deleted),
                }
            }
        }
    };
}

minute_row!(
    /// A row of `account_pnl_minute`.
    AccountMinute,
    account
);
minute_row!(
    /// A row of `strategy_pnl_minute`.
    StrategyMinute,
    strategy
);

/// `orders` (latest state) and `order_history` (every version).
#[derive(Row, Serialize)]
pub struct OrderRow {
    trade_date: u16,
    order_id: String,
    account: String,
    strategy: String,
    symbol: String,
    side: String,
    qty: i64,
    price: Option<i128>,
    order_type: String,
    status: String,
    time: u32,
    ts_ns: i64,
    version: u64,
    deleted: u8,
}

impl From<&Change<Order>> for OrderRow {
    fn from(c: &Change<Order>) -> Self {
        let o = &c.row;
        OrderRow {
            trade_date: date(o.ts),
            order_id: o.order_id.to_string(),
            account: o.key.account.to_string(),
            strategy: o.key.strategy.to_string(),
            symbol: o.key.symbol.to_string(),
            side: o.side.as_str().to_string(),
            qty: o.qty,
            price: o.price.map(dec),
            order_type: o.order_type.clone(),
            status: o.status.as_str().to_string(),
            time: seconds(o.ts),
            ts_ns: o.ts,
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// `instruments`.
#[derive(Row, Serialize)]
pub struct InstrumentRow {
    symbol: String,
    name: String,
    lot_size: i64,
    currency: String,
    sector: Option<String>,
    stamp_duty: u8,
    version: u64,
    deleted: u8,
}

impl From<&Change<Instrument>> for InstrumentRow {
    fn from(c: &Change<Instrument>) -> Self {
        let i = &c.row;
        InstrumentRow {
            symbol: i.symbol.to_string(),
            name: i.name.clone(),
            lot_size: i.lot_size,
            currency: i.currency.clone(),
            sector: i.sector.clone(),
            stamp_duty: u8::from(i.stamp_duty),
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// `events`: every input message as received.
#[derive(Row, Serialize)]
pub struct EventRow {
    trade_date: u16,
    source: String,
    position: u64,
    r#type: String,
    accepted: u8,
    reason_code: String,
    raw: String,
    version: u64,
}

impl From<&SourceEvent> for EventRow {
    fn from(e: &SourceEvent) -> Self {
        EventRow {
            trade_date: days(e.trade_date),
            source: e.source.to_string(),
            position: e.position,
            r#type: e.kind.to_string(),
            accepted: u8::from(e.code.is_empty()),
            reason_code: e.code.to_string(),
            raw: e.raw.clone(),
            version: e.version,
        }
    }
}

/// `risk` (latest per group) and `risk_history` (every version).
#[derive(Row, Serialize)]
pub struct Risk {
    trade_date: u16,
    group_kind: String,
    group_name: String,
    names: i64,
    long_mv: i128,
    short_mv: i128,
    gross: i128,
    net: i128,
    nav: Option<i128>,
    leverage: Option<i128>,
    largest_symbol: Option<String>,
    largest_weight: Option<i128>,
    hhi: i128,
    sectors: String,
    max_lots_symbol: Option<String>,
    max_lots: Option<i128>,
    var_95: i128,
    var_99: i128,
    var_95_horizon: i128,
    var_99_horizon: i128,
    hist_var_95: i128,
    hist_var_99: i128,
    es_95: i128,
    es_99: i128,
    contributors: String,
    total_pnl: i128,
    peak_pnl: i128,
    drawdown: i128,
    max_drawdown: i128,
    time: u32,
    ts_ns: i64,
    version: u64,
    deleted: u8,
}

impl From<&Change<RiskRow>> for Risk {
    fn from(c: &Change<RiskRow>) -> Self {
        let r = &c.row;
        Risk {
            trade_date: date(r.ts),
            group_kind: r.group.kind().to_string(),
            group_name: r.group.name().to_string(),
            names: i64::from(r.names),
            long_mv: dec(r.long_mv),
            short_mv: dec(r.short_mv),
            gross: dec(r.gross),
            net: dec(r.net),
            nav: r.nav.map(dec),
            leverage: r.leverage.map(dec),
            largest_symbol: r.largest.map(|l| l.0.to_string()),
            largest_weight: r.largest.map(|l| dec(l.1)),
            hhi: dec(r.hhi),
            sectors: sectors_json(r),
            max_lots_symbol: r.max_lots.map(|l| l.0.to_string()),
            max_lots: r.max_lots.map(|l| dec(l.1)),
            var_95: dec(r.var_95),
            var_99: dec(r.var_99),
            var_95_horizon: dec(r.var_95_horizon),
            var_99_horizon: dec(r.var_99_horizon),
            hist_var_95: dec(r.hist_var_95),
            hist_var_99: dec(r.hist_var_99),
            es_95: dec(r.es_95),
            es_99: dec(r.es_99),
            contributors: json_pairs(r.contributors.iter().cloned()),
            total_pnl: dec(r.total_pnl),
            peak_pnl: dec(r.peak_pnl),
            drawdown: dec(r.drawdown),
            max_drawdown: dec(r.max_drawdown),
            time: seconds(r.ts),
            ts_ns: r.ts,
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// `alerts`.
#[derive(Row, Serialize)]
pub struct Alert {
    trade_date: u16,
    alert_id: String,
    group_kind: String,
    group_name: String,
    metric: String,
    severity: String,
    seq: u32,
    kind: String,
    value: i128,
    level: i128,
    time: u32,
    ts_ns: i64,
    drivers: String,
    version: u64,
}

impl From<&Change<AlertRow>> for Alert {
    fn from(c: &Change<AlertRow>) -> Self {
        let a = &c.row;
        Alert {
            trade_date: date(a.ts),
            alert_id: a.id(),
            group_kind: a.group.kind().to_string(),
            group_name: a.group.name().to_string(),
            metric: a.metric.as_str().to_string(),
            severity: a.severity.as_str().to_string(),
            seq: a.seq,
            kind: a.kind.as_str().to_string(),
            value: dec(a.value),
            level: dec(a.level),
            time: seconds(a.ts),
            ts_ns: a.ts,
            drivers: json_pairs(a.drivers.iter().cloned()),
            version: c.version,
        }
    }
}

/// `daily_closes`: a symbol's official close on its trade date.
#[derive(Row, Serialize)]
pub struct DailyClose {
    trade_date: u16,
    symbol: String,
    close: i128,
    time: u32,
    ts_ns: i64,
    version: u64,
}

impl DailyClose {
    /// The close a quote change carries, if any.
    pub fn of(c: &Change<(Symbol, MarkState)>) -> Option<DailyClose> {
        let (s, m) = &c.row;
        let (ts, price) = m.close()?;
        Some(DailyClose {
            trade_date: date(ts),
            symbol: s.to_string(),
            close: dec(price),
            time: seconds(ts),
            ts_ns: ts,
            version: c.version,
        })
    }
}

/// `trading_status`.
#[derive(Row, Serialize)]
pub struct Status {
    subject_kind: String,
    subject: String,
    status: String,
    session: Option<u8>,
    time: u32,
    ts_ns: i64,
    version: u64,
    deleted: u8,
}

impl From<&Change<TradingStatus>> for Status {
    fn from(c: &Change<TradingStatus>) -> Self {
        let s = &c.row;
        Status {
            subject_kind: s.subject.kind().to_string(),
            subject: s.subject.name(),
            status: s.status.to_string(),
            session: s.session,
            time: seconds(s.ts),
            ts_ns: s.ts,
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// `volatility`.
#[derive(Row, Serialize)]
pub struct Vol {
    symbol: String,
    daily: i128,
    annual: i128,
    today: i128,
    days: u32,
    time: u32,
    ts_ns: i64,
    version: u64,
    deleted: u8,
}

impl From<&Change<VolRow>> for Vol {
    fn from(c: &Change<VolRow>) -> Self {
        let v = &c.row;
        Vol {
            symbol: v.symbol.to_string(),
            daily: dec(v.daily),
            annual: dec(v.annual),
            today: dec(v.today),
            days: v.days,
            time: seconds(v.ts),
            ts_ns: v.ts,
            version: c.version,
            deleted: u8::from(c.deleted),
        }
    }
}

/// A row of a table partitioned by its trade date (`PARTITION BY trade_date`, or a coarser
/// function of it): inserts are cut so that none touches more trade dates than ClickHouse
/// accepts in one block.
pub trait Partitioned {
    /// The row's trade date (days since 1970-01-01).
    fn trade_date(&self) -> u16;
}

macro_rules! partitioned {
    ($($t:ty),*) => {
        $(impl Partitioned for $t {
            fn trade_date(&self) -> u16 {
                self.trade_date
            }
        })*
    };
}

partitioned!(
    PositionVersion,
    FillRow,
    AccountMinute,
    StrategyMinute,
    OrderRow,
    Risk,
    Alert,
    DailyClose,
    DeadLetterRow,
    EventRow
);
