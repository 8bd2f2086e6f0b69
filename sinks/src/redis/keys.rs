//! Which hash and stream each changed row goes to, and its fields. Decimals are written exactly,
//! as text; event times as nanoseconds since the Unix epoch.

use harbour_dataflows::pnl::PositionRow;
use harbour_dataflows::risk::book::RiskRow;
use harbour_dataflows::rollups::Group;

use super::RedisConfig;
use crate::tables::{json_pairs, sectors_json, Change, Changes};

/// One fenced write.
pub(super) struct Write {
    pub key: String,
    pub stream: &'static str,
    pub version: u64,
    pub ttl_ms: u64,
    pub deleted: bool,
    /// The row's fields; none for a deleted row.
    pub fields: Vec<(&'static str, String)>,
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// The hash key of a position.
pub fn position_key(r: &PositionRow) -> String {
    format!("harbour:position:{}:{}:{}", key_part(&r.key.account), key_part(&r.key.strategy), r.key.symbol)
}

/// A name as one segment of a key: `%` and `:` percent-encoded (`%25`, `%3A`), so that account
/// `A:B` with strategy `C` and account `A` with strategy `B:C` do not share a key. Names without
/// either are unchanged.
pub fn key_part(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains([':', '%']) {
        name.replace('%', "%25").replace(':', "%3A").into()
    } else {
        name.into()
    }
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
    let mut out = Writes { out: Vec::new(), seen: std::collections::HashSet::new() };
    out.table(&c.positions, position_key, "harbour:stream:positions", cfg.position_ttl_ms, fields_of_position);
    out.table(
        &c.rollups,
        |(g, _)| match g {
            Group::Account(a) => format!("harbour:account:{a}"),
            Group::Strategy(s) => format!("harbour:strategy:{s}"),
            Group::Desk => "harbour:desk".to_string(),
        },
        "harbour:stream:portfolio",
        cfg.portfolio_ttl_ms,
        |(_, t)| {
            vec![
                ("positions", t.positions.to_string()),
                ("long_mv", t.long_mv.to_string()),
                ("short_mv", t.short_mv.to_string()),
                ("gross", t.gross.to_string()),
                ("net", t.net.to_string()),
                ("realized", t.realized.to_string()),
                ("unrealized", t.unrealized.to_string()),
                ("fees", t.fees.to_string()),
                ("total", t.total.to_string()),
            ]
        },
    );
    out.table(
        &c.marks,
        |(s, _)| format!("harbour:price:{s}"),
        "harbour:stream:prices",
        cfg.price_ttl_ms,
        |(_, m)| vec![("price", opt(&m.price)), ("source", m.source.as_str().to_string()), ("ts", m.ts.to_string())],
    );
    out.table(
        &c.quotes,
        |(sym, _)| format!("harbour:quote:{sym}"),
        "harbour:stream:quotes",
        cfg.quote_ttl_ms,
        |(_, q)| {
            let field = |v: Option<(i64, rust_decimal::Decimal)>| v.map(|(_, p)| p.to_string()).unwrap_or_default();
            let time = |v: Option<(i64, rust_decimal::Decimal)>| v.map(|(t, _)| t.to_string()).unwrap_or_default();
            vec![
                ("bid", field(q.bid())),
                ("bid_ts", time(q.bid())),
                ("ask", field(q.ask())),
                ("ask_ts", time(q.ask())),
                ("last", field(q.last())),
                ("last_ts", time(q.last())),
                ("close", field(q.close())),
                ("close_ts", time(q.close())),
            ]
        },
    );
    out.table(
        &c.instruments,
        |i| format!("harbour:instrument:{}", i.symbol),
        "harbour:stream:instruments",
        cfg.instrument_ttl_ms,
        |i| {
            vec![
                ("name", i.name.clone()),
                ("lot_size", i.lot_size.to_string()),
                ("currency", i.currency.clone()),
                ("sector", opt(&i.sector)),
                ("stamp_duty", u8::from(i.stamp_duty).to_string()),
                ("spread_table", opt(&i.spread_table)),
            ]
        },
    );
    out.table(
        &c.status,
        |st| format!("harbour:status:{}:{}", st.subject.kind(), st.subject.name()),
        "harbour:stream:status",
        cfg.instrument_ttl_ms,
        |st| vec![("status", st.status.to_string()), ("session", opt(&st.session)), ("ts", st.ts.to_string())],
    );
    out.table(
        &c.risk,
        |r| match &r.group {
            Group::Desk => "harbour:risk:desk".to_string(),
            g => format!("harbour:risk:{}:{}", g.kind(), g.name()),
        },
        "harbour:stream:risk",
        cfg.portfolio_ttl_ms,
        fields_of_risk,
    );
    out.table(
        &c.vol,
        |v| format!("harbour:vol:{}", v.symbol),
        "harbour:stream:vol",
        cfg.quote_ttl_ms,
        |v| {
            vec![
                ("daily", v.daily.to_string()),
                ("annual", v.annual.to_string()),
                ("today", v.today.to_string()),
                ("days", v.days.to_string()),
                ("ts", v.ts.to_string()),
            ]
        },
    );
    out.table(
        &c.alerts,
        |a| format!("harbour:alert:{}", a.id()),
        "harbour:stream:alerts",
        cfg.alert_ttl_ms,
        |a| {
            vec![
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
            ]
        },
    );
    out.out
}

/// The writes of a flush, conflated: a flush that carries several epochs (the sink was busy)
/// writes each key once, with its newest row; only that row's fields are formatted.
struct Writes {
    out: Vec<Write>,
    seen: std::collections::HashSet<String>,
}

impl Writes {
    /// Appends the newest change per key of one table (its changes come in epoch order), in the
    /// order of those changes.
    fn table<T>(
        &mut self,
        changes: &[Change<T>],
        key: impl Fn(&T) -> String,
        stream: &'static str,
        ttl_ms: u64,
        fields: impl Fn(&T) -> Vec<(&'static str, String)>,
    ) {
        let first = self.out.len();
        self.seen.clear();
        for ch in changes.iter().rev() {
            let k = key(&ch.row);
            if self.seen.contains(&k) {
                continue;
            }
            self.seen.insert(k.clone());
            self.out.push(Write {
                key: k,
                stream,
                version: ch.version,
                ttl_ms,
                deleted: ch.deleted,
                fields: if ch.deleted { Vec::new() } else { fields(&ch.row) },
            });
        }
        self.out[first..].reverse();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_colons_do_not_share_a_position_key() {
        assert_eq!(key_part("ACC-001"), "ACC-001");
        assert_eq!(key_part("A:B"), "A%3AB");
        assert_eq!(key_part("50%:x"), "50%25%3Ax");
        let joined = |a: &str, s: &str| format!("{}:{}", key_part(a), key_part(s));
        assert_ne!(joined("A:B", "C"), joined("A", "B:C"));
    }
}
