-- Migration 2: P&L by minute, orders (latest state and every version), instruments, and the
-- event-sourcing log of every input message as received. Same conventions as 001.

CREATE TABLE IF NOT EXISTS account_pnl_minute (
    trade_date Date,
    account String,
    minute DateTime,
    fills Int64,
    bought Int64,
    sold Int64,
    buy_notional Decimal(38, 8),
    sell_notional Decimal(38, 8),
    realized Decimal(38, 8),
    fees Decimal(38, 8),
    net Decimal(38, 8),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) PARTITION BY trade_date ORDER BY (account, minute);

CREATE TABLE IF NOT EXISTS strategy_pnl_minute (
    trade_date Date,
    strategy String,
    minute DateTime,
    fills Int64,
    bought Int64,
    sold Int64,
    buy_notional Decimal(38, 8),
    sell_notional Decimal(38, 8),
    realized Decimal(38, 8),
    fees Decimal(38, 8),
    net Decimal(38, 8),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) PARTITION BY trade_date ORDER BY (strategy, minute);

CREATE TABLE IF NOT EXISTS orders (
    trade_date Date,
    order_id String,
    account String,
    strategy String,
    symbol String,
    side String,
    qty Int64,
    price Nullable(Decimal(38, 8)),
    order_type String,
    status String,
    time DateTime,
    ts_ns Int64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) ORDER BY order_id;

CREATE TABLE IF NOT EXISTS order_history (
    trade_date Date,
    order_id String,
    account String,
    strategy String,
    symbol String,
    side String,
    qty Int64,
    price Nullable(Decimal(38, 8)),
    order_type String,
    status String,
    time DateTime,
    ts_ns Int64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) PARTITION BY trade_date ORDER BY (order_id, version);

CREATE TABLE IF NOT EXISTS instruments (
    symbol String,
    name String,
    lot_size Int64,
    currency String,
    sector Nullable(String),
    stamp_duty UInt8,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) ORDER BY symbol;

CREATE TABLE IF NOT EXISTS events (
    trade_date Date,
    source String,
    position UInt64,
    type String,
    accepted UInt8,
    reason_code String,
    raw String,
    version UInt64
) ENGINE = ReplacingMergeTree(version) PARTITION BY trade_date ORDER BY (source, position);
