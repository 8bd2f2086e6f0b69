-- Migration 4: official closing prices by trade date, written from the close messages Harbour
-- receives; the risk book's return history (`risk.history_table`) is read from here at start-up.

CREATE TABLE IF NOT EXISTS daily_closes (
    trade_date Date,
    symbol String,
    close Decimal(38, 8),
    time DateTime,
    ts_ns Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(trade_date) ORDER BY (trade_date, symbol);
