-- Migration 5: trading status, the latest per security (halted / trading, HKEX message 21) and per
-- market session (HKEX message 20, or `status` lines of the input contract).

CREATE TABLE IF NOT EXISTS trading_status (
    subject_kind String,
    subject String,
    status String,
    session Nullable(UInt8),
    time DateTime,
    ts_ns Int64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) ORDER BY (subject_kind, subject);
