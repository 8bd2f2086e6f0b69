//! Which hash and stream each changed row goes to, and its fields. Decimals are written exactly,
//! as text; event times as nanoseconds since the Unix epoch.

use harbour_dataflows::pnl::PositionRow;
use harbour_dataflows::risk::book::RiskRow;
use harbour_dataflows::rollups::Group;

use super::RedisConfig;
use crate::tables::{json_pairs, sectors_json, Changes};

/// One fenced write.
pub(super) struct Write {
    pub key: String,
    pub stream: &'static str,
    pub version: u64,
    pub ttl_ms: u64,
    pub deleted: bool,
    pub fields: Vec<(&'static str, String)>,
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// The hash key of a position.
pub fn position_key(r: &PositionRow) -> String {
    format!("harbour:position:{}:{}:{}", r.key.account, r.key.strategy, r.key.symbol)
}

/// The fields of a position hash (besides `version`).
pub fn fields_of_position(r: &PositionRow) -> Vec<(&'static str, String)> {
    vec![
        ("account", r.key.account.to_string()),
        ("strategy", r.key.strategy.to_string()),
        ("symbol", r.key.symbol.to_string()),
        ("qty", r.qty.to_string()),
        ("avg_price", opt(&r.avg_price)),
        ("realized", r.realized.to_string()),
        ("fees", r.fees.to_string()),
        ("unrealized", r.unrealized.to_string()),
        ("market_value", r.market_value.to_string()),
        ("total", r.total.to_string()),
        ("mark", opt(&r.mark)),
        ("mark_source", r.mark_source.as_str().to_string()),
        ("fills", r.fills.to_string()),
        ("last_fill_ts", r.last_fill_ts.to_string()),
    ]
}

pub(super) fn writes(c: &Changes, cfg: &RedisConfig) -> Vec<Write> {
    let mut out =
        Vec::with_capacity(c.positions.len() + c.rollups.len() + c.marks.len() + c.quotes.len() + c.instruments.len());
    for ch in &c.positions {
        out.push(Write {
            key: position_key(&ch.row),
            stream: "harbour:stream:positions",
            version: ch.version,
            ttl_ms: cfg.position_ttl_ms,
            deleted: ch.deleted,
            fields: fields_of_position(&ch.row),
        });
    }
    for ch in &c.rollups {
        let (g, t) = &ch.row;
        let key = match g {
            Group::Account(a) => format!("harbour:account:{a}"),
            Group::Strategy(s) => format!("harbour:strategy:{s}"),
            Group::Desk => "harbour:desk".to_string(),
        };
        out.push(Write {
            key,
            stream: "harbour:stream:portfolio",
            version: ch.version,
            ttl_ms: cfg.portfolio_ttl_ms,
            deleted: ch.deleted,
            fields: vec![
                ("positions", t.positions.to_string()),
                ("long_mv", t.long_mv.to_string()),
                ("short_mv", t.short_mv.to_string()),
                ("gross", t.gross.to_string()),
                ("net", t.net.to_string()),
                ("realized", t.realized.to_string()),
                ("unrealized", t.unrealized.to_string()),
                ("fees", t.fees.to_string()),
                ("total", t.total.to_string()),
            ],
        });
    }
    for ch in &c.marks {
        let (s, m) = &ch.row;
        out.push(Write {
            key: format!("harbour:price:{s}"),
            stream: "harbour:stream:prices",
            version: ch.version,
            ttl_ms: cfg.price_ttl_ms,
            deleted: ch.deleted,
            fields: vec![("price", opt(&m.price)), ("source", m.source.as_str().to_string()), ("ts", m.ts.to_string())],
        });
    }
    for ch in &c.quotes {
        let (sym, q) = &ch.row;
        let field = |v: Option<(i64, rust_decimal::Decimal)>| v.map(|(_, p)| p.to_string()).unwrap_or_default();
        let time = |v: Option<(i64, rust_decimal::Decimal)>| v.map(|(t, _)| t.to_string()).unwrap_or_default();
        out.push(Write {
            key: format!("harbour:quote:{sym}"),
            stream: "harbour:stream:quotes",
            version: ch.version,
            ttl_ms: cfg.quote_ttl_ms,
            deleted: ch.deleted,
            fields: vec![
                ("bid", field(q.bid())),
                ("bid_ts", time(q.bid())),
                ("ask", field(q.ask())),
                ("ask_ts", time(q.ask())),
                ("last", field(q.last())),
                ("last_ts", time(q.last())),
                ("close", field(q.close())),
                ("close_ts", time(q.close())),
            ],
        });
    }
    for ch in &c.instruments {
        let i = &ch.row;
        out.push(Write {
            key: format!("harbour:instrument:{}", i.symbol),
            stream: "harbour:stream:instruments",
            version: ch.version,
            ttl_ms: cfg.instrument_ttl_ms,
            deleted: ch.deleted,
            fields: vec![
                ("name", i.name.clone()),
                ("lot_size", i.lot_size.to_string()),
                ("currency", i.currency.clone()),
                ("sector", opt(&i.sector)),
                ("stamp_duty", u8::from(i.stamp_duty).to_string()),
                ("spread_table", opt(&i.spread_table)),
            ],
        });
    }
    for ch in &c.status {
        let st = &ch.row;
        out.push(Write {
            key: format!("harbour:status:{}:{}", st.subject.kind(), st.subject.name()),
            stream: "harbour:stream:status",
            version: ch.version,
            ttl_ms: cfg.instrument_ttl_ms,
            deleted: ch.deleted,
            fields: vec![("status", st.status.to_string()), ("session", opt(&st.session)), ("ts", st.ts.to_string())],
        });
    }
    for ch in &c.risk {
        let r = &ch.row;
        let key = match &r.group {
            Group::Desk => "harbour:risk:desk".to_string(),
            g => format!("harbour:risk:{}:{}", g.kind(), g.name()),
        };
        out.push(Write {
            key,
            stream: "harbour:stream:risk",
            version: ch.version,
            ttl_ms: cfg.portfolio_ttl_ms,
            deleted: ch.deleted,
            fields: fields_of_risk(r),
        });
    }
    for ch in &c.vol {
        let v = &ch.row;
        out.push(Write {
            key: format!("harbour:vol:{}", v.symbol),
            stream: "harbour:stream:vol",
            version: ch.version,
            ttl_ms: cfg.quote_ttl_ms,
            deleted: ch.deleted,
            fields: vec![
                ("daily", v.daily.to_string()),
                ("annual", v.annual.to_string()),
                ("today", v.today.to_string()),
                ("days", v.days.to_string()),
                ("ts", v.ts.to_string()),
            ],
        });
    }
    for ch in &c.alerts {
        let a = &ch.row;
        out.push(Write {
            key: format!("harbour:alert:{}", a.id()),
            stream: "harbour:stream:alerts",
            version: ch.version,
            ttl_ms: cfg.alert_ttl_ms,
            deleted: ch.deleted,
            fields: vec![
                ("group_kind", a.group.kind().to_string()),
                ("group_name", a.group.name().to_string()),
                ("metric", a.metric.as_str().to_string()),
                ("severity", a.severity.as_str().to_string()),
                ("seq", a.seq.to_string()),
                ("kind", a.kind.as_str().to_string()),
                ("value", a.value.to_string()),
                ("level", a.level.to_string()),
                ("ts", a.ts.to_string()),
                ("drivers", json_pairs(a.drivers.iter().cloned())),
            ],
        });
    }
    conflate(out)
}

/// The fields of a risk hash (besides `version`).
pub fn fields_of_risk(r: &RiskRow) -> Vec<(&'static str, String)> {
    vec![
        ("group_kind", r.group.kind().to_string()),
        ("group_name", r.group.name().to_string()),
        ("names", r.names.to_string()),
        ("long_mv", r.long_mv.to_string()),
        ("short_mv", r.short_mv.to_string()),
        ("gross", r.gross.to_string()),
        ("net", r.net.to_string()),
        ("nav", opt(&r.nav)),
        ("leverage", opt(&r.leverage)),
        ("largest_symbol", opt(&r.largest.map(|l| l.0))),
        ("largest_weight", opt(&r.largest.map(|l| l.1))),
        ("hhi", r.hhi.to_string()),
        ("sectors", sectors_json(r)),
        ("max_lots_symbol", opt(&r.max_lots.map(|l| l.0))),
        ("max_lots", opt(&r.max_lots.map(|l| l.1))),
        ("var_95", r.var_95.to_string()),
        ("var_99", r.var_99.to_string()),
        ("var_95_horizon", r.var_95_horizon.to_string()),
        ("var_99_horizon", r.var_99_horizon.to_string()),
        ("hist_var_95", r.hist_var_95.to_string()),
        ("hist_var_99", r.hist_var_99.to_string()),
        ("es_95", r.es_95.to_string()),
        ("es_99", r.es_99.to_string()),
        ("contributors", json_pairs(r.contributors.iter().cloned())),
        ("total_pnl", r.total_pnl.to_string()),
        ("peak_pnl", r.peak_pnl.to_string()),
        ("drawdown", r.drawdown.to_string()),
        ("max_drawdown", r.max_drawdown.to_string()),
        ("ts", r.ts.to_string()),
    ]
}

/// Keeps the latest write per key (the changes come in epoch order): a flush that carries several
/// epochs (the sink was busy) writes each key once, with its newest row.
fn conflate(mut writes: Vec<Write>) -> Vec<Write> {
    let mut seen = std::collections::HashSet::with_capacity(writes.len());
    writes.reverse();
    writes.retain(|w| seen.insert(w.key.clone()));
    writes.reverse();
    writes
}
