//! The short report `harbour run` and `harbour replay` print at the end.

use std::fmt::Write;
use std::time::Duration;

use harbour_dataflows::rollups::Group;
use harbour_sinks::parquet::Written;
use rust_decimal::Decimal;

use crate::engine::{OutputState, RunStats};

fn money(d: Decimal) -> String {
    let r = d.round_dp(2);
    let s = format!("{:.2}", r.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, "00"));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{}{grouped}.{frac}", if r.is_sign_negative() && !r.is_zero() { "-" } else { "" })
}

/// Renders the summary.
pub fn render(state: &OutputState, stats: &RunStats, written: &[Written], elapsed: Duration) -> String {
    let mut s = String::new();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let _ = writeln!(
        s,
        "harbour: {} lines ({} accepted, {} dead letters) in {} epochs, {:.2} s ({:.0} lines/s)",
        stats.lines,
        stats.accepted,
        stats.dead_letters,
        stats.epochs,
        secs,
        stats.lines as f64 / secs
    );
    let _ = writeln!(s, "\nTop positions by |market value|:");
    let _ = writeln!(
        s,
        "  {:<10} {:<16} {:>5} {:>10} {:>12} {:>16} {:>14} {:>14}",
        "account", "strategy", "symbol", "qty", "avg", "market value", "unrealized", "total P&L"
    );
    let mut rows: Vec<_> = state.positions.rows().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.market_value.abs()));
    for r in rows.iter().take(10) {
        let _ = writeln!(
            s,
            "  {:<10} {:<16} {:>5} {:>10} {:>12} {:>16} {:>14} {:>14}",
            r.key.account,
            r.key.strategy,
            r.key.symbol,
            r.qty,
            r.avg_price.map(|p| p.round_dp(3).to_string()).unwrap_or_else(|| "-".into()),
            money(r.market_value),
            money(r.unrealized),
            money(r.total)
        );
    }
    let _ = writeln!(s, "\nP&L by account (HKD):");
    let _ = writeln!(
        s,
        "  {:<10} {:>9} {:>16} {:>16} {:>14} {:>14} {:>12} {:>14}",
        "account", "positions", "gross", "net", "realized", "unrealized", "fees", "total"
    );
    let mut desk = harbour_dataflows::sums::Totals::default();
    for (g, t) in state.rollups.rows() {
        if let Group::Account(a) = g {
            let _ = writeln!(
                s,
                "  {:<10} {:>9} {:>16} {:>16} {:>14} {:>14} {:>12} {:>14}",
                a,
                t.positions,
                money(t.gross),
                money(t.net),
                money(t.realized),
                money(t.unrealized),
                money(t.fees),
                money(t.total)
            );
            differential_dataflow::difference::Semigroup::plus_equals(&mut desk, t);
        }
    }
    let _ = writeln!(
        s,
        "  {:<10} {:>9} {:>16} {:>16} {:>14} {:>14} {:>12} {:>14}",
        "desk",
        desk.positions,
        money(desk.gross),
        money(desk.net),
        money(desk.realized),
        money(desk.unrealized),
        money(desk.fees),
        money(desk.total)
    );
    let mut risk: Vec<_> = state.risk.rows().filter(|r| !matches!(r.group, Group::Strategy(_))).collect();
    risk.sort_by_key(|r| (r.group == Group::Desk, r.group.clone()));
    if !risk.is_empty() {
        let _ = writeln!(s, "\nRisk (HKD; VaR one day, parametric and historical; docs/risk.md):");
        let _ = writeln!(
            s,
            "  {:<10} {:>14} {:>14} {:>14} {:>14} {:>8} {:>8} {:>14} {:>14}",
            "group", "VaR 95%", "VaR 99%", "hist VaR 99%", "ES 99%", "largest", "weight", "drawdown", "max drawdown"
        );
        for r in risk {
            let name = match &r.group {
                Group::Desk => "desk",
                g => g.name(),
            };
            let _ = writeln!(
                s,
                "  {:<10} {:>14} {:>14} {:>14} {:>14} {:>8} {:>8} {:>14} {:>14}",
                name,
                money(r.var_95),
                money(r.var_99),
                money(r.hist_var_99),
                money(r.es_99),
                r.largest.map(|l| l.0.to_string()).unwrap_or_else(|| "-".into()),
                r.largest.map(|l| format!("{:.1}%", l.1 * Decimal::ONE_HUNDRED)).unwrap_or_else(|| "-".into()),
                money(r.drawdown),
                money(r.max_drawdown)
            );
        }
    }
    let alerts: Vec<_> = state.alerts.rows().collect();
    if !alerts.is_empty() {
        let open = state
            .alerts
            .rows()
            .filter(|a| a.kind == harbour_dataflows::risk::book::AlertKind::Breach)
            .filter(|a| {
                !alerts.iter().any(|c| {
                    c.kind == harbour_dataflows::risk::book::AlertKind::Clear
                        && (&c.group, c.metric, c.severity, c.seq) == (&a.group, a.metric, a.severity, a.seq)
                })
            })
            .count();
        let _ = writeln!(s, "\nLimit alerts: {} ({} breaches still open)", alerts.len(), open);
    }
    if !state.dead_letters.is_empty() {
        let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
        for d in &state.dead_letters {
            *by.entry(d.code.as_str()).or_default() += 1;
        }
        let list: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "\nDead letters: {}", list.join(", "));
    }
    if let Some(first) = written.first() {
        let dir = first.path.parent().map(|p| p.display().to_string()).unwrap_or_default();
        let list: Vec<String> = written.iter().map(|w| format!("{} ({})", w.table, w.rows)).collect();
        let _ = writeln!(s, "\nWrote {dir}/: {}", list.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::money;
    use rust_decimal_macros::dec;

    #[test]
    fn money_groups_thousands() {
        assert_eq!(money(dec!(1234567.891)), "1,234,567.89");
        assert_eq!(money(dec!(-1000)), "-1,000.00");
        assert_eq!(money(dec!(0.004)), "0.00");
        assert_eq!(money(dec!(999)), "999.00");
    }
}
