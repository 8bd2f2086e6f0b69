-- Migration 6: EWMA volatility per symbol (daily and annualised, today's return so far), as the
-- risk book uses it: from the close history and each mark.

CREATE TABLE IF NOT EXISTS volatility (
    symbol String,
    daily Decimal(38, 8),
    annual Decimal(38, 8),
    today Decimal(38, 8),
    days UInt32,
    time DateTime,
    ts_ns Int64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) ORDER BY symbol;
