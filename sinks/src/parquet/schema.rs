//! Arrow schemas of the output tables, and the conversion of rows into record batches.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    ArrayRef, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow_schema::{ArrowError, Field, Schema};
use harbour_dataflows::model::{Symbol, Ts};
use harbour_dataflows::operators::FillPnl;
use harbour_dataflows::rollups::Group;
use rust_decimal::Decimal;

use crate::tables::{TableRefs, Versioned};

/// Scale of every decimal column.
pub const DECIMAL_SCALE: i8 = 8;

/// `d` in units of 10^-[`DECIMAL_SCALE`] (the mantissa of a Decimal128(38, 8)): exact when `d`
/// has at most that many places (the mantissa times a power of ten, which fits an i128 for any
/// decimal), rounded half to even (`round_dp`) when it has more. (`rescale` cannot widen a
/// mantissa past 96 bits: for |d| beyond about 7.9e20 it kept a smaller scale, and the mantissa
/// came out a power of ten too small.)
pub(crate) fn to_i128(d: Decimal) -> i128 {
    // More places are rounded half to even, as the pipeline rounds money (`round_dp`), so a
    // figure shows the same in every table and sink.
    let d = if d.scale() <= DECIMAL_SCALE as u32 { d } else { d.round_dp(DECIMAL_SCALE as u32) };
    d.mantissa() * 10i128.pow(DECIMAL_SCALE as u32 - d.scale())
}

/// Appends a symbol's code as it displays (`00700`), without the formatting machinery for the
/// usual five digits.
fn append_symbol(b: &mut StringBuilder, s: Symbol) {
    if s.0 < 100_000 {
        let mut digits = [b'0'; 5];
        let mut v = s.0;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        b.append_value(std::str::from_utf8(&digits).expect("ASCII digits"));
    } else {
        b.append_value(s.to_string());
    }
}

/// Columns of one table under construction.
#[derive(Default)]
struct Cols {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Cols {
    fn push(mut self, name: &str, nullable: bool, array: ArrayRef) -> Self {
        self.fields.push(Field::new(name, array.data_type().clone(), nullable));
        self.arrays.push(array);
        self
    }

    fn str<'a>(self, name: &str, v: impl Iterator<Item = &'a str>) -> Self {
        self.push(name, false, Arc::new(StringArray::from_iter_values(v)))
    }

    /// Symbol codes (`00700`), formatted straight into the array (no string per row).
    fn sym(self, name: &str, v: impl Iterator<Item = Symbol>) -> Self {
        let mut b = StringBuilder::new();
        for s in v {
            append_symbol(&mut b, s);
        }
        self.push(name, false, Arc::new(b.finish()))
    }

    fn opt_str<'a>(self, name: &str, v: impl Iterator<Item = Option<&'a str>>) -> Self {
        self.push(name, true, Arc::new(v.collect::<StringArray>()))
    }

    fn i64(self, name: &str, v: impl Iterator<Item = i64>) -> Self {
        self.push(name, false, Arc::new(Int64Array::from_iter_values(v)))
    }

    fn opt_i64(self, name: &str, v: impl Iterator<Item = Option<i64>>) -> Self {
        self.push(name, true, Arc::new(Int64Array::from_iter(v)))
    }

    fn u64(self, name: &str, v: impl Iterator<Item = u64>) -> Self {
        self.push(name, false, Arc::new(UInt64Array::from_iter_values(v)))
    }

    fn dec(self, name: &str, v: impl Iterator<Item = Decimal>) -> Self {
        self.opt_dec(name, v.map(Some)).not_null()
    }

    fn opt_dec(self, name: &str, v: impl Iterator<Item = Option<Decimal>>) -> Self {
        let a = v
            .map(|d| d.map(to_i128))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(38, DECIMAL_SCALE)
            .expect("38/8 is a valid decimal type");
        self.push(name, true, Arc::new(a))
    }

    /// A non-null decimal column from mantissas already at [`DECIMAL_SCALE`].
    fn dec128(self, name: &str, v: Vec<i128>) -> Self {
        let a =
            Decimal128Array::from(v).with_precision_and_scale(38, DECIMAL_SCALE).expect("38/8 is a valid decimal type");
        self.push(name, false, Arc::new(a))
    }

    fn ts(self, name: &str, v: impl Iterator<Item = Ts>) -> Self {
        let a = TimestampNanosecondArray::from_iter_values(v).with_timezone("UTC");
        self.push(name, false, Arc::new(a))
    }

    /// Dates (Parquet DATE: days since 1970-01-01).
    fn date(self, name: &str, v: impl Iterator<Item = chrono::NaiveDate>) -> Self {
        let days = v.map(arrow_array::types::Date32Type::from_naive_date);
        self.push(name, false, Arc::new(Date32Array::from_iter_values(days)))
    }

    fn not_null(mut self) -> Self {
        if let Some(f) = self.fields.pop() {
            self.fields.push(f.with_nullable(false));
        }
        self
    }

    fn finish(self) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.arrays)
    }
}

fn versions<'a, T: 'a>(rows: &'a [&'a Versioned<T>]) -> impl Iterator<Item = u64> + 'a {
    rows.iter().map(|r| r.version)
}

/// Every table as a record batch, in a fixed order. Rows are sorted by key first.
pub fn record_batches(t: &TableRefs<'_>) -> Result<Vec<(&'static str, RecordBatch)>, (&'static str, ArrowError)> {
    record_batches_with(t, true)
}

/// The enriched fills (usually the largest table), sorted by time and exec id.
///
/// Built row by row rather than column by column: the fills are scattered over the heap, and a
/// pass per column read each of them 22 times (a cache miss each, for a day's million fills).
/// The sort compares times held beside the references and reads the rows only on equal times.
pub fn fills_batch(t: &TableRefs<'_>) -> Result<RecordBatch, ArrowError> {
    let mut f: Vec<(Ts, &Versioned<&FillPnl>)> = t.fills.iter().map(|r| (r.row.fill.ts, r)).collect();
    f.sort_unstable_by(|(ta, a), (tb, b)| ta.cmp(tb).then_with(|| a.row.fill.exec_id.cmp(&b.row.fill.exec_id)));
    let n = f.len();
    let text = || StringBuilder::with_capacity(n, n * 8);
    let (mut exec_id, mut order_id, mut account, mut strategy) = (text(), text(), text(), text());
    let (mut symbol, mut side, mut schedule) = (text(), text(), text());
    let mut ints: [Vec<i64>; 3] = std::array::from_fn(|_| Vec::with_capacity(n)); // qty, ts, qty_after
    let mut decs: [Vec<i128>; 10] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut seqs: [Vec<u64>; 2] = std::array::from_fn(|_| Vec::with_capacity(n)); // source_seq, version
    for (_, r) in &f {
        let (fill, fees, step) = (&r.row.fill, r.row.fees(), &r.row.step);
        exec_id.append_value(&fill.exec_id);
        order_id.append_value(&fill.order_id);
        account.append_value(&fill.key.account);
        strategy.append_value(&fill.key.strategy);
        append_symbol(&mut symbol, fill.key.symbol);
        side.append_value(fill.side.as_str());
        schedule.append_value(&fees.schedule);
        for (col, v) in ints.iter_mut().zip([fill.qty, fill.ts, step.qty_after]) {
            col.push(v);
        }
        let money = [
            fill.price,
            fill.consideration(),
            fees.stamp_duty,
            fees.sfc_levy,
            fees.afrc_levy,
            fees.trading_fee,
            fees.settlement_fee,
            fees.commission,
            fees.total,
            step.realized,
        ];
        for (col, v) in decs.iter_mut().zip(money) {
            col.push(to_i128(v));
        }
        for (col, v) in seqs.iter_mut().zip([fill.source_seq, r.version]) {
            col.push(v);
        }
    }
    let [qty, ts, qty_after] = ints;
    let [price, consideration, stamp_duty, sfc_levy, afrc_levy, trading_fee, settlement_fee, commission, fees_total, realized] =
        decs;
    let [source_seq, version] = seqs;
    let text_col = |b: &mut StringBuilder| -> ArrayRef { Arc::new(b.finish()) };
    Cols::default()
        .push("exec_id", false, text_col(&mut exec_id))
        .push("order_id", false, text_col(&mut order_id))
        .push("account", false, text_col(&mut account))
        .push("strategy", false, text_col(&mut strategy))
        .push("symbol", false, text_col(&mut symbol))
        .push("side", false, text_col(&mut side))
        .push("qty", false, Arc::new(Int64Array::from(qty)))
        .dec128("price", price)
        .push("ts", false, Arc::new(TimestampNanosecondArray::from(ts).with_timezone("UTC")))
        .dec128("consideration", consideration)
        .dec128("stamp_duty", stamp_duty)
        .dec128("sfc_levy", sfc_levy)
        .dec128("afrc_levy", afrc_levy)
        .dec128("trading_fee", trading_fee)
        .dec128("settlement_fee", settlement_fee)
        .dec128("commission", commission)
        .dec128("fees_total", fees_total)
        .push("fee_schedule", false, text_col(&mut schedule))
        .dec128("realized", realized)
        .push("qty_after", false, Arc::new(Int64Array::from(qty_after)))
        .push("source_seq", false, Arc::new(UInt64Array::from(source_seq)))
        .push("version", false, Arc::new(UInt64Array::from(version)))
        .finish()
}

/// Every table as a record batch, in [`record_batches`]' order, the fills only `with_fills`.
pub fn record_batches_with(
    t: &TableRefs<'_>,
    with_fills: bool,
) -> Result<Vec<(&'static str, RecordBatch)>, (&'static str, ArrowError)> {
    let mut out = Vec::new();
    let mut add = |name: &'static str, b: Result<RecordBatch, ArrowError>| -> Result<(), (&'static str, ArrowError)> {
        out.push((name, b.map_err(|e| (name, e))?));
        Ok(())
    };

    let mut p: Vec<&Versioned<_>> = t.positions.iter().collect();
    p.sort_unstable_by(|a, b| a.row.key.cmp(&b.row.key));
    add(
        "positions",
        Cols::default()
            .str("account", p.iter().map(|r| r.row.key.account.as_str()))
            .str("strategy", p.iter().map(|r| r.row.key.strategy.as_str()))
            .sym("symbol", p.iter().map(|r| r.row.key.symbol))
            .i64("qty", p.iter().map(|r| r.row.qty))
            .opt_dec("avg_price", p.iter().map(|r| r.row.avg_price))
            .dec("cost", p.iter().map(|r| r.row.cost))
            .dec("realized", p.iter().map(|r| r.row.realized))
            .dec("fees", p.iter().map(|r| r.row.fees))
            .dec("unrealized", p.iter().map(|r| r.row.unrealized))
            .dec("market_value", p.iter().map(|r| r.row.market_value))
            .dec("total", p.iter().map(|r| r.row.total))
            .opt_dec("mark", p.iter().map(|r| r.row.mark))
            .str("mark_source", p.iter().map(|r| r.row.mark_source.as_str()))
            .i64("fills", p.iter().map(|r| r.row.fills as i64))
            .i64("bought", p.iter().map(|r| r.row.bought))
            .i64("sold", p.iter().map(|r| r.row.sold))
            .ts("last_fill_ts", p.iter().map(|r| r.row.last_fill_ts))
            .u64("version", versions(&p))
            .finish(),
    )?;

    if with_fills {
        add("fills", fills_batch(t))?;
    }

    for (kind, name) in [("account", "account_rollups"), ("strategy", "strategy_rollups")] {
        let mut r: Vec<_> = t.rollups.iter().filter(|r| r.row.0.kind() == kind).collect();
        r.sort_unstable_by(|a, b| a.row.0.cmp(&b.row.0));
        add(
            name,
            Cols::default()
                .str(kind, r.iter().map(|r| r.row.0.name()))
                .i64("positions", r.iter().map(|r| i64::try_from(r.row.1.positions).unwrap_or(i64::MAX)))
                .dec("long_mv", r.iter().map(|r| r.row.1.long_mv))
                .dec("short_mv", r.iter().map(|r| r.row.1.short_mv))
                .dec("gross", r.iter().map(|r| r.row.1.gross))
                .dec("net", r.iter().map(|r| r.row.1.net))
                .dec("realized", r.iter().map(|r| r.row.1.realized))
                .dec("unrealized", r.iter().map(|r| r.row.1.unrealized))
                .dec("fees", r.iter().map(|r| r.row.1.fees))
                .dec("total", r.iter().map(|r| r.row.1.total))
                .u64("version", versions(&r))
                .finish(),
        )?;
    }

    for (kind, name) in [("account", "account_pnl_minute"), ("strategy", "strategy_pnl_minute")] {
        let mut m: Vec<_> = t.minutes.iter().filter(|r| r.row.0 .0.kind() == kind).collect();
        m.sort_unstable_by(|a, b| a.row.0.cmp(&b.row.0));
        // Cumulative net P&L from fills per group, in minute order.
        let mut cumulative = Vec::with_capacity(m.len());
        let mut last: Option<&Group> = None;
        let mut acc = Decimal::ZERO;
        for r in &m {
            if last != Some(&r.row.0 .0) {
                acc = Decimal::ZERO;
            }
            acc += r.row.1.net;
            cumulative.push(acc);
            last = Some(&r.row.0 .0);
        }
        add(
            name,
            Cols::default()
                .str(kind, m.iter().map(|r| r.row.0 .0.name()))
                .ts("minute", m.iter().map(|r| r.row.0 .1))
                .i64("fills", m.iter().map(|r| i64::try_from(r.row.1.fills).unwrap_or(i64::MAX)))
                .i64("bought", m.iter().map(|r| i64::try_from(r.row.1.bought).unwrap_or(i64::MAX)))
                .i64("sold", m.iter().map(|r| i64::try_from(r.row.1.sold).unwrap_or(i64::MAX)))
                .dec("buy_notional", m.iter().map(|r| r.row.1.buy_notional))
                .dec("sell_notional", m.iter().map(|r| r.row.1.sell_notional))
                .dec("realized", m.iter().map(|r| r.row.1.realized))
                .dec("fees", m.iter().map(|r| r.row.1.fees))
                .dec("net", m.iter().map(|r| r.row.1.net))
                .dec("cumulative_net", cumulative.into_iter())
                .u64("version", versions(&m))
                .finish(),
        )?;
    }

    let mut o: Vec<&Versioned<_>> = t.orders.iter().collect();
    o.sort_unstable_by(|a, b| a.row.order_id.cmp(&b.row.order_id));
    add(
        "orders",
        Cols::default()
            .str("order_id", o.iter().map(|r| r.row.order_id.as_str()))
            .str("account", o.iter().map(|r| r.row.key.account.as_str()))
            .str("strategy", o.iter().map(|r| r.row.key.strategy.as_str()))
            .sym("symbol", o.iter().map(|r| r.row.key.symbol))
            .str("side", o.iter().map(|r| r.row.side.as_str()))
            .i64("qty", o.iter().map(|r| r.row.qty))
            .opt_dec("price", o.iter().map(|r| r.row.price))
            .str("order_type", o.iter().map(|r| r.row.order_type.as_str()))
            .str("status", o.iter().map(|r| r.row.status.as_str()))
            .ts("ts", o.iter().map(|r| r.row.ts))
            .u64("version", versions(&o))
            .finish(),
    )?;

    let mut mk: Vec<&Versioned<_>> = t.marks.iter().collect();
    mk.sort_unstable_by_key(|r| r.row.0);
    add(
        "marks",
        Cols::default()
            .sym("symbol", mk.iter().map(|r| r.row.0))
            .opt_dec("price", mk.iter().map(|r| r.row.1.price))
            .str("source", mk.iter().map(|r| r.row.1.source.as_str()))
            .ts("ts", mk.iter().map(|r| r.row.1.ts))
            .u64("version", versions(&mk))
            .finish(),
    )?;

    let mut ins: Vec<&Versioned<_>> = t.instruments.iter().collect();
    ins.sort_unstable_by_key(|r| r.row.symbol);
    add(
        "instruments",
        Cols::default()
            .sym("symbol", ins.iter().map(|r| r.row.symbol))
            .str("name", ins.iter().map(|r| r.row.name.as_str()))
            .i64("lot_size", ins.iter().map(|r| r.row.lot_size))
            .str("currency", ins.iter().map(|r| r.row.currency.as_str()))
            .opt_str("sector", ins.iter().map(|r| r.row.sector.as_deref()))
            .i64("stamp_duty", ins.iter().map(|r| r.row.stamp_duty as i64))
            .opt_str("spread_table", ins.iter().map(|r| r.row.spread_table.as_deref()))
            .u64("version", versions(&ins))
            .finish(),
    )?;

    let mut st: Vec<&Versioned<_>> = t.status.iter().collect();
    st.sort_unstable_by(|a, b| a.row.subject.cmp(&b.row.subject));
    let subjects: Vec<String> = st.iter().map(|r| r.row.subject.name()).collect();
    add(
        "trading_status",
        Cols::default()
            .str("subject_kind", st.iter().map(|r| r.row.subject.kind()))
            .str("subject", subjects.iter().map(String::as_str))
            .str("status", st.iter().map(|r| r.row.status.as_str()))
            .opt_i64("session", st.iter().map(|r| r.row.session.map(i64::from)))
            .ts("ts", st.iter().map(|r| r.row.ts))
            .u64("version", versions(&st))
            .finish(),
    )?;

    let mut rk: Vec<&Versioned<_>> = t.risk.iter().collect();
    rk.sort_unstable_by(|a, b| a.row.group.cmp(&b.row.group));
    let largest: Vec<Option<String>> = rk.iter().map(|r| r.row.largest.map(|l| l.0.to_string())).collect();
    let lots: Vec<Option<String>> = rk.iter().map(|r| r.row.max_lots.map(|l| l.0.to_string())).collect();
    let sectors: Vec<String> = rk.iter().map(|r| crate::tables::sectors_json(r.row)).collect();
    let contributors: Vec<String> =
        rk.iter().map(|r| crate::tables::json_pairs(r.row.contributors.iter().cloned())).collect();
    add(
        "risk",
        Cols::default()
            .str("group_kind", rk.iter().map(|r| r.row.group.kind()))
            .str("group_name", rk.iter().map(|r| r.row.group.name()))
            .i64("names", rk.iter().map(|r| i64::from(r.row.names)))
            .dec("long_mv", rk.iter().map(|r| r.row.long_mv))
            .dec("short_mv", rk.iter().map(|r| r.row.short_mv))
            .dec("gross", rk.iter().map(|r| r.row.gross))
            .dec("net", rk.iter().map(|r| r.row.net))
            .opt_dec("nav", rk.iter().map(|r| r.row.nav))
            .opt_dec("leverage", rk.iter().map(|r| r.row.leverage))
            .opt_str("largest_symbol", largest.iter().map(|s| s.as_deref()))
            .opt_dec("largest_weight", rk.iter().map(|r| r.row.largest.map(|l| l.1)))
            .dec("hhi", rk.iter().map(|r| r.row.hhi))
            .str("sectors", sectors.iter().map(String::as_str))
            .opt_str("max_lots_symbol", lots.iter().map(|s| s.as_deref()))
            .opt_dec("max_lots", rk.iter().map(|r| r.row.max_lots.map(|l| l.1)))
            .dec("var_95", rk.iter().map(|r| r.row.var_95))
            .dec("var_99", rk.iter().map(|r| r.row.var_99))
            .dec("var_95_horizon", rk.iter().map(|r| r.row.var_95_horizon))
            .dec("var_99_horizon", rk.iter().map(|r| r.row.var_99_horizon))
            .dec("hist_var_95", rk.iter().map(|r| r.row.hist_var_95))
            .dec("hist_var_99", rk.iter().map(|r| r.row.hist_var_99))
            .dec("es_95", rk.iter().map(|r| r.row.es_95))
            .dec("es_99", rk.iter().map(|r| r.row.es_99))
            .str("contributors", contributors.iter().map(String::as_str))
            .dec("total_pnl", rk.iter().map(|r| r.row.total_pnl))
            .dec("peak_pnl", rk.iter().map(|r| r.row.peak_pnl))
            .dec("drawdown", rk.iter().map(|r| r.row.drawdown))
            .dec("max_drawdown", rk.iter().map(|r| r.row.max_drawdown))
            .ts("ts", rk.iter().map(|r| r.row.ts))
            .u64("version", versions(&rk))
            .finish(),
    )?;

    let mut vo: Vec<&Versioned<_>> = t.vol.iter().collect();
    vo.sort_unstable_by_key(|r| r.row.symbol);
    add(
        "volatility",
        Cols::default()
            .sym("symbol", vo.iter().map(|r| r.row.symbol))
            .dec("daily", vo.iter().map(|r| r.row.daily))
            .dec("annual", vo.iter().map(|r| r.row.annual))
            .dec("today", vo.iter().map(|r| r.row.today))
            .i64("days", vo.iter().map(|r| i64::from(r.row.days)))
            .ts("ts", vo.iter().map(|r| r.row.ts))
            .u64("version", versions(&vo))
            .finish(),
    )?;

    let mut al: Vec<&Versioned<_>> = t.alerts.iter().collect();
    al.sort_unstable_by(|a, b| (a.version, &a.row).cmp(&(b.version, &b.row)));
    let ids: Vec<String> = al.iter().map(|r| r.row.id()).collect();
    let drivers: Vec<String> = al.iter().map(|r| crate::tables::json_pairs(r.row.drivers.iter().cloned())).collect();
    add(
        "alerts",
        Cols::default()
            .str("alert_id", ids.iter().map(String::as_str))
            .str("group_kind", al.iter().map(|r| r.row.group.kind()))
            .str("group_name", al.iter().map(|r| r.row.group.name()))
            .str("metric", al.iter().map(|r| r.row.metric.as_str()))
            .str("severity", al.iter().map(|r| r.row.severity.as_str()))
            .i64("seq", al.iter().map(|r| i64::from(r.row.seq)))
            .str("kind", al.iter().map(|r| r.row.kind.as_str()))
            .dec("value", al.iter().map(|r| r.row.value))
            .dec("level", al.iter().map(|r| r.row.level))
            .ts("ts", al.iter().map(|r| r.row.ts))
            .str("drivers", drivers.iter().map(String::as_str))
            .u64("version", versions(&al))
            .finish(),
    )?;

    let d = &t.dead_letters;
    add(
        "dead_letters",
        Cols::default()
            .str("source", d.iter().map(|r| r.source.as_str()))
            .u64("position", d.iter().map(|r| r.position))
            .str("code", d.iter().map(|r| r.code.as_str()))
            .str("reason", d.iter().map(|r| r.reason.as_str()))
            .str("raw", d.iter().map(|r| r.raw.as_str()))
            .date("trade_date", d.iter().map(|r| r.trade_date))
            .finish(),
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_become_exact_mantissas_at_eight_places() {
        assert_eq!(to_i128(Decimal::new(3852, 1)), 38_520_000_000);
        assert_eq!(to_i128(Decimal::new(-1, 8)), -1);
        assert_eq!(to_i128(Decimal::ZERO), 0);
        // More places: rounded half to even, as the pipeline's `round_dp` (a fill's realized P&L
        // can have more: buying 63 @0.010 and 1 @0.011, then selling 1 @0.010, realizes
        // -0.000015625, shown as -0.00001562 in the fills and the minute tables alike).
        assert_eq!(to_i128(Decimal::new(1_123_456_785, 9)), 112_345_678);
        assert_eq!(to_i128(Decimal::new(-1_123_456_785, 9)), -112_345_678);
        assert_eq!(to_i128(Decimal::new(1_123_456_775, 9)), 112_345_678);
        assert_eq!(to_i128(Decimal::new(-15_625, 9)), -1_562);
        assert_eq!(to_i128(Decimal::new(-15_625, 9)), Decimal::new(-15_625, 9).round_dp(8).mantissa());
        // Beyond 96 bits at eight places: 10^21 HKD is 10^29 units, not 10^28.
        assert_eq!(to_i128(Decimal::from(10u64.pow(19)) * Decimal::from(100)), 10i128.pow(29));
        assert_eq!(to_i128(Decimal::MAX), Decimal::MAX.mantissa() * 100_000_000);
    }
}
