#!/usr/bin/env python3
"""Harbour's ClickHouse DDL on a current ClickHouse release.

Debian ships ClickHouse 18.16, which the integration tests run against; the migrations must also
work on current releases. This check runs them on chDB (the ClickHouse engine as a library, from
PyPI: chdb-core, ClickHouse 26.x) in a temporary folder, twice (they are idempotent), fills every
table with random rows, runs every example query of docs/clickhouse.md and every panel query of
the desk dashboard (deploy/grafana/dashboards/harbour-desk.json, macros expanded as Grafana's
ClickHouse plugin would), and, when
HARBOUR_CLICKHOUSE_URL points at a running server (the test script's 18.16), checks that both
servers report the same column names and types for every table, so the rows the sink writes in
RowBinary mean the same on both.

Usage: python3 deploy/clickhouse/check_current.py   (deploy/test.sh runs it in a venv)
Exits non-zero on the first failure, naming it.
"""
import json
import os
import re
import sys
import tempfile
import urllib.parse
import urllib.request

import chdb
from chdb import session as chs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def statements(path):
    text = "\n".join(line.split("--")[0] for line in open(path, encoding="utf-8").read().splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def fail(msg):
    print(f"check_current: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def dashboard_sql(run):
    """The desk board's ClickHouse queries as the plugin sends them: each variable set to every
    value its query returns, $__conditionalAll keeping its condition, $__timeFilter over all time
    (the same expansion as pipeline/tests/common/mod.rs, which runs them on 18.16)."""
    board = json.load(open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "harbour-desk.json"), encoding="utf-8"))
    is_ch = lambda v: v.get("datasource", {}).get("type") == "grafana-clickhouse-datasource"  # noqa: E731
    values = {}
    for v in filter(is_ch, board["templating"]["list"]):
        rows = run(v["query"]).splitlines()
        values[v["name"]] = ", ".join("'" + r.replace("\\", "\\\\").replace("'", "\\'") + "'" for r in rows) or "''"
    out = []
    for p in board["panels"]:
        for t in filter(is_ch, p["targets"]):
            sql = t["rawSql"]
            while "$__conditionalAll(" in sql:
                at = sql.index("$__conditionalAll(")
                start = at + len("$__conditionalAll")
                depth, comma = 0, None
                for i in range(start, len(sql)):
                    c = sql[i]
                    if c == "(":
                        depth += 1
                    elif c == ")":
                        depth -= 1
                        if depth == 0:
                            sql = sql[:at] + "(" + sql[start + 1:comma] + ")" + sql[i + 1:]
                            break
                    elif c == "," and depth == 1:
                        comma = i
            sql = re.sub(r"\$__timeFilter\(([^)]*)\)",
                         lambda m: f"({m[1]} >= toDateTime(0) AND {m[1]} <= toDateTime(4102444800))", sql)
            for name, vals in values.items():
                sql = sql.replace("${" + name + ":sqlstring}", vals)
            if "$" in sql:
                fail(f"harbour-desk.json: a macro or variable left in {sql}")
            out.append((p["title"], sql))
    return out


# The latest-state tables the sink moves off a partition by trade date at start-up, and the
# statements it moves one with (sinks/src/clickhouse/schema.rs: MOVES, Move::statements).
UNPARTITIONED = ["positions", "orders", "risk"]

# The tables it moves from no trade date to partitions by it; an old row's date is the expression
# schema.rs holds as DATE_OF_RAW (read from there: one definition), and the copy is filled by
# chunks of at most 100 dates (MAX_DATES_PER_INSERT: current releases refuse an INSERT block over
# more partitions than max_partitions_per_insert_block).
DATED = ["events", "dead_letters"]


def date_of_raw():
    text = open(os.path.join(ROOT, "sinks", "src", "clickhouse", "schema.rs"), encoding="utf-8").read()
    found = re.search(r'pub const DATE_OF_RAW: &str = r#"(.*)"#;', text)
    if not found:
        fail("DATE_OF_RAW not found in sinks/src/clickhouse/schema.rs")
    return found[1]


def check_dated_move(s, migrations, version):
    """The event log and dead letters created the old way (no trade date) over 150 days of rows,
    moved by the sink's statements: every row kept, dated by its message's ts in Hong Kong time."""
    s.query("CREATE DATABASE IF NOT EXISTS harbour_dated")
    s.query("USE harbour_dated")
    every = [st for m in migrations for st in statements(m)]
    date = date_of_raw()
    for t in DATED:
        ddl = next((st for st in every if st.startswith(f"CREATE TABLE IF NOT EXISTS {t} (")), None)
        if ddl is None or "PARTITION BY trade_date" not in ddl or "trade_date Date," not in ddl:
            fail(f"{t}: expected its dated DDL in the migrations, found {ddl!r}")
        old = ddl.replace("trade_date Date,", "", 1).replace("PARTITION BY trade_date ", "", 1)
        s.query(old)
        rows = ", ".join(
            f"('s/0', {i}, " + ("'fill', 1, '', " if t == "events" else "'parse', 'bad', ")
            + f"'{{\"ts\" : \"' || toString(toDate('2025-01-01') + {i}) || 'T01:30:00+08:00\"}}', 3)"
            for i in range(150)
        )
        s.query(f"INSERT INTO {t} VALUES {rows}")
        dates = s.query(f"SELECT DISTINCT toUInt16({date}) FROM {t} ORDER BY 1", "TSV").bytes().decode().split()
        fills = [
            f"INSERT INTO {t}__dated SELECT {date} AS trade_date, * FROM {t} WHERE toUInt16({date}) IN "
            f"({', '.join(dates[i:i + 100])})"
            for i in range(0, len(dates), 100)
        ]
        run_move(s, t, move_statements(ddl, t, "__undated", "__dated", fills), version)
        shown = s.query(f"SELECT count(), uniqExact(trade_date), toString(min(trade_date)) FROM {t} FINAL",
                        "TSV").bytes().decode().strip()
        if shown != "150\t150\t2025-01-01":
            fail(f"{t} after the move on ClickHouse {version}: (rows, dates, first date) {shown!r}")
    s.query("USE harbour")
    s.query("DROP DATABASE harbour_dated")
    return len(DATED)


def move_statements(ddl, table, old="__partitioned", copy="__unpartitioned", fills=None):
    """Move::statements: the copy made from the migration's DDL, filled (by `fills`, else one
    INSERT of every row), swapped in, the old table dropped."""
    fills = fills if fills is not None else [f"INSERT INTO {table}{copy} SELECT * FROM {table}"]
    return [
        ddl.replace(f"CREATE TABLE IF NOT EXISTS {table} (", f"CREATE TABLE IF NOT EXISTS {table}{copy} (", 1),
        *fills,
        f"RENAME TABLE {table} TO {table}{old}, {table}{copy} TO {table}",
        f"DROP TABLE {table}{old}",
    ]


def run_move(s, table, sql, version):
    for st in sql:
        try:
            s.query(st)
        except Exception as e:  # noqa: BLE001 - report which statement
            fail(f"moving {table} on ClickHouse {version}: {e}\n{st}")


def check_move(s, migrations, version):
    """Each latest-state table created the old way (partitioned by trade date, with rows) is moved
    by the sink's statements to its migration's layout, rows kept."""
    s.query("CREATE DATABASE IF NOT EXISTS harbour_move")
    s.query("USE harbour_move")
    every = [st for m in migrations for st in statements(m)]
    for t in UNPARTITIONED:
        ddl = next((st for st in every if st.startswith(f"CREATE TABLE IF NOT EXISTS {t} (")), None)
        if ddl is None or "PARTITION BY" in ddl:
            fail(f"{t}: expected its unpartitioned DDL in the migrations, found {ddl!r}")
        s.query(ddl.replace(" ORDER BY ", " PARTITION BY trade_date ORDER BY ", 1))
        rows = s.query(f"SELECT name, type FROM system.columns WHERE database = 'harbour_move' AND table = '{t}' "
                       "ORDER BY position", "TSV").bytes().decode().splitlines()
        structure = ", ".join(" ".join(r.split("\t")) for r in rows)
        s.query(f"INSERT INTO {t} SELECT * FROM generateRandom('{structure}', 11, 12, 3) LIMIT 40")
        shown = lambda: s.query(f"SELECT count(), sum(cityHash64(*)) FROM {t} FINAL", "TSV").bytes().decode().strip()  # noqa: E731
        before = shown()
        run_move(s, t, move_statements(ddl, t), version)
        key = s.query(f"SELECT partition_key FROM system.tables WHERE database = 'harbour_move' AND name = '{t}'",
                      "TSV").bytes().decode().strip()
        after = shown()
        if key or after != before:
            fail(f"{t} after the move on ClickHouse {version}: partition key {key!r}, FINAL shows {after} "
                 f"(count, hash), before {before}")
    s.query("USE harbour")
    s.query("DROP DATABASE harbour_move")
    return len(UNPARTITIONED)


def main():
    migrations = sorted(
        os.path.join(ROOT, "deploy", "clickhouse", f)
        for f in os.listdir(os.path.join(ROOT, "deploy", "clickhouse"))
        if re.match(r"^\d+_.*\.sql$", f)
    )
    if len(migrations) < 2:
        fail(f"expected the migrations under deploy/clickhouse, found {migrations}")
    with tempfile.TemporaryDirectory() as tmp:
        s = chs.Session(os.path.join(tmp, "db"))
        version = s.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')
        s.query("CREATE DATABASE IF NOT EXISTS harbour")
        s.query("USE harbour")
        for _ in range(2):  # idempotent
            for m in migrations:
                for st in statements(m):
                    try:
                        s.query(st)
                    except Exception as e:  # noqa: BLE001 - report which statement
                        fail(f"{os.path.basename(m)} on ClickHouse {version}: {e}\n{st}")
        tables = s.query(
            "SELECT name FROM system.tables WHERE database = 'harbour' ORDER BY name", "CSV"
        ).bytes().decode().split()
        tables = [t.strip('"') for t in tables]
        expected = {"positions", "position_history", "fills", "dead_letters", "sink_progress", "harbour_migrations",
                    "account_pnl_minute", "strategy_pnl_minute", "orders", "order_history", "instruments", "events",
                    "risk", "risk_history", "alerts", "daily_closes", "trading_status",
                    "volatility"}
        missing = expected - set(tables)
        if missing:
            fail(f"tables missing on ClickHouse {version}: {sorted(missing)}")
        moved = check_move(s, migrations, version) + check_dated_move(s, migrations, version)
        columns = {}
        for t in tables:
            rows = s.query(
                f"SELECT name, type FROM system.columns WHERE database = 'harbour' AND table = '{t}' ORDER BY position",
                "TSV",
            ).bytes().decode().splitlines()
            columns[t] = [tuple(r.split("\t")) for r in rows]
            structure = ", ".join(f"{n} {ty}" for n, ty in columns[t])
            s.query(f"INSERT INTO {t} SELECT * FROM generateRandom('{structure}', 7, 12, 3) LIMIT 50")
            n = s.query(f"SELECT count() FROM {t} FINAL", "CSV").bytes().decode().strip()
            if int(n) == 0:
                fail(f"{t}: no rows under FINAL after inserting 50")
        doc = open(os.path.join(ROOT, "docs", "clickhouse.md"), encoding="utf-8").read()
        queries = [b.split("```")[0].strip() for b in doc.split("```sql")[1:]]
        if len(queries) < 5:
            fail(f"expected the example queries of docs/clickhouse.md, found {len(queries)}")
        for q in queries:
            try:
                s.query(q, "CSV")
            except Exception as e:  # noqa: BLE001
                fail(f"docs/clickhouse.md query on ClickHouse {version}: {e}\n{q}")
        panels = dashboard_sql(lambda q: s.query(q, "TSV").bytes().decode())
        if len(panels) < 10:
            fail(f"expected the desk dashboard's panels, found {len(panels)}")
        for title, q in panels:
            try:
                s.query(q, "CSV")
            except Exception as e:  # noqa: BLE001
                fail(f"desk dashboard panel {title!r} on ClickHouse {version}: {e}\n{q}")
        compared = 0
        url = os.environ.get("HARBOUR_CLICKHOUSE_URL")
        if url:
            db = "harbour_check_current"
            post = lambda q: urllib.request.urlopen(  # noqa: E731
                urllib.request.Request(url.rstrip("/") + "/", data=q.encode()), timeout=30
            ).read().decode()
            post(f"CREATE DATABASE IF NOT EXISTS {db}")
            for m in migrations:
                for st in statements(m):
                    post(st.replace("CREATE TABLE IF NOT EXISTS ", f"CREATE TABLE IF NOT EXISTS {db}."))
            old_version = post("SELECT version()").strip()
            for t in tables:
                old = [tuple(r.split("\t")) for r in post(
                    f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{t}' FORMAT TSV"
                ).splitlines()]
                if old != columns[t]:
                    fail(f"{t}: ClickHouse {old_version} reports {old}, ClickHouse {version} reports {columns[t]}")
                compared += 1
            post(f"DROP DATABASE IF EXISTS {db}")
        print(
            f"check_current: ClickHouse {version}: {sum(len(statements(m)) for m in migrations)} statements applied twice, "
            f"{len(tables)} tables with random rows, {moved} tables moved to their new layout, "
            f"{len(queries)} docs queries and {len(panels)} dashboard queries run"
            + (f", column types equal to ClickHouse {old_version} for {compared} tables" if url else "")
        )


if __name__ == "__main__":
    main()
