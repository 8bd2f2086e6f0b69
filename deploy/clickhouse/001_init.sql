-- Harbour's ClickHouse tables, migration 1. Applied at start-up by the ClickHouse sink (each
-- statement is idempotent; applied migrations are recorded in harbour_migrations). Runs on
-- Debian's ClickHouse 18.16 and on current releases: no DateTime64 (event times are a DateTime
-- plus exact nanoseconds in an Int64), no LowCardinality.
--
-- Every table is a ReplacingMergeTree keyed by the row's deterministic key and versioned by the
-- epoch that produced the row, so a replay after a crash writes the same (key, version) again and
-- `FINAL` (or argMax by version) shows each row once. `deleted = 1` marks a row that no longer
-- exists (a busted fill; a position whose fills were all busted): filter it out after FINAL.
--
-- Tables of rows that never change date (a fill, a version of a position, a minute, a dead
-- letter: its message's event time's trade date, else the input's around it) are partitioned by
-- trade date (dead_letters and 002's events were created without one until 2026-11-29; the sink
-- moves such a table at start-up, schema::MOVES). The latest-state tables (positions here, orders
-- and risk in 002 and 003) are not: a key's date moves (a position's last fill, a bust of it, a new day), and
-- ReplacingMergeTree replaces rows within a partition only, so a moved row stayed beside its
-- older self for good (merges and OPTIMIZE never removed it, and FINAL with a date filter, or
-- with do_not_merge_across_partitions_select_final, showed it). Created partitioned until
-- 2026-11-27; the sink moves such a table to this layout at start-up (schema::MOVES).

CREATE TABLE IF NOT EXISTS harbour_migrations (
    version UInt32,
    name String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version;

CREATE TABLE IF NOT EXISTS positions (
    trade_date Date,
    account String,
    strategy String,
    symbol String,
    qty Int64,
    avg_price Nullable(Decimal(38, 8)),
    cost Decimal(38, 8),
    realized Decimal(38, 8),
    fees Decimal(38, 8),
    unrealized Decimal(38, 8),
    market_value Decimal(38, 8),
    total Decimal(38, 8),
    mark Nullable(Decimal(38, 8)),
    mark_source String,
    fills UInt64,
    bought Int64,
    sold Int64,
    last_fill_time DateTime,
    last_fill_ts_ns Int64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) ORDER BY (account, strategy, symbol);

CREATE TABLE IF NOT EXISTS position_history (
    trade_date Date,
    account String,
    strategy String,
    symbol String,
    qty Int64,
    avg_price Nullable(Decimal(38, 8)),
    realized Decimal(38, 8),
    fees Decimal(38, 8),
    unrealized Decimal(38, 8),
    market_value Decimal(38, 8),
    total Decimal(38, 8),
    mark Nullable(Decimal(38, 8)),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) PARTITION BY trade_date ORDER BY (account, strategy, symbol, version);

CREATE TABLE IF NOT EXISTS fills (
    trade_date Date,
    exec_id String,
    order_id String,
    account String,
    strategy String,
    symbol String,
    side String,
    qty Int64,
    price Decimal(38, 8),
    time DateTime,
    ts_ns Int64,
    consideration Decimal(38, 8),
    stamp_duty Decimal(38, 8),
    sfc_levy Decimal(38, 8),
    afrc_levy Decimal(38, 8),
    trading_fee Decimal(38, 8),
    settlement_fee Decimal(38, 8),
    commission Decimal(38, 8),
    fees_total Decimal(38, 8),
    fee_schedule String,
    realized Decimal(38, 8),
    qty_after Int64,
    source_seq UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version) PARTITION BY trade_date ORDER BY exec_id;

CREATE TABLE IF NOT EXISTS dead_letters (
    trade_date Date,
    source String,
    position UInt64,
    code String,
    reason String,
    raw String,
    version UInt64
) ENGINE = ReplacingMergeTree(version) PARTITION BY trade_date ORDER BY (source, position);

CREATE TABLE IF NOT EXISTS sink_progress (
    sink String,
    epoch UInt64,
    rows UInt64,
    written_at DateTime
) ENGINE = ReplacingMergeTree(epoch) ORDER BY sink;
