//! The risk book: every risk metric of every account, strategy and the desk, kept current from
//! position changes and marks, and the limit alerts they cause.
//!
//! ```text
//!  position row changes ─┐   per (group, symbol): market value, qty, total P&L      ┌─► RiskRow changes
//!  mark changes ─────────┼─► per group: exposure, Σmv², sector sums, sorted sizes,  ├─► AlertRow events
//!  instruments ──────────┘   scenario P&Ls d_k = Σᵢ r_{k,i}·wᵢ, drawdown, limits    ┘
//! ```
//!
//! **Incremental.** A change of one symbol in one group costs O(log n) for exposure and
//! concentration and O(K) for VaR (K = days of return history), whatever the group holds: the
//! EWMA covariance is a weighted sum of outer products of the history's return vectors,
//! Σ = λ·Σₖ aₖ·rₖrₖᵀ + (1−λ)·r_t r_tᵀ (r_t: today's return from the previous close to the mark), so
//! wᵀΣw = λ·Σₖ aₖ·dₖ² + (1−λ)·d_t² with dₖ = rₖ·w, and the same dₖ are the historical scenarios'
//! P&Ls. Exposure, concentration and the scenario P&Ls are functions of the current positions,
//! so a bust or a late fill gives what a recomputation gives (exact for the decimal metrics, to
//! float rounding for VaR); drawdown follows total P&L over the times it was observed.
//!
//! **Alerts.** Each (group, metric) has a [`LimitState`]; a breach emits one [`AlertRow`] when it
//! starts and one when it clears. Rows and alerts carry the group's event time (the latest fill
//! or mark that moved it).

use std::cell::OnceCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use super::concentration::SectorWeights;
use super::drawdown::Drawdown;
use super::exposure::Exposure;
use super::limits::{Alert, Limit, LimitState, Severity};
use super::var::{normal_quantile, tail_len};
use super::vol::LAMBDA;
use crate::model::{Instrument, Symbol, Ts};
use crate::pnl::PositionRow;
use crate::rollups::Group;

/// Decimal places of weights, HHI and leverage in rows.
pub const RATIO_DP: u32 = 6;

/// Own returns a symbol listed inside the history window needs before its proxy is scaled to its
/// own volatility (see [`History::from_closes`]).
pub const PROXY_MIN_DAYS: usize = 5;

/// A symbol's return per day: `None` before its first, else the return and whether it was
/// observed (a close that day and one before; a suspension's zero is not).
type DayReturns = Vec<Option<(f64, bool)>>;

/// σ(own) / σ(market) over the days the symbol has returns, the market there being the other
/// symbols' mean (from each day's `sum` and `count` of observed returns, the symbol's own among
/// them), when it has [`PROXY_MIN_DAYS`] of them and the market moved on those days; 1 otherwise.
fn proxy_scale(own: &[Option<(f64, bool)>], sum: &[f64], count: &[u32]) -> f64 {
    if own.iter().all(Option::is_some) {
        return 1.0;
    }
    let pairs: Vec<(f64, f64)> = own
        .iter()
        .zip(sum.iter().zip(count))
        .filter_map(|(r, (s, n))| match (r, n) {
            // The symbol's own observed return is in the day's sum; a suspension's zero is not.
            (Some((r, true)), n) if *n > 1 => Some((*r, (s - r) / f64::from(n - 1))),
            _ => None,
        })
        .collect();
    if pairs.len() < PROXY_MIN_DAYS {
        return 1.0;
    }
    let sd = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    };
    let (own_sd, market_sd) = (sd(&mut pairs.iter().map(|p| p.0)), sd(&mut pairs.iter().map(|p| p.1)));
    if market_sd > 0.0 && own_sd.is_finite() {
        own_sd / market_sd
    } else {
        1.0
    }
}

/// What a symbol without a close in the history moves with, so that a position in it (a
/// listing of the day, a code the history source does not carry) still counts in VaR, the
/// scenarios and σ instead of adding nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Proxy {
    /// The market: each past day's mean of every symbol's observed return (beta 1 to an
    /// equal-weighted market).
    #[default]
    Market,
    /// The returns of this symbol (an index tracker such as 02800, say), which has history.
    Symbol(Symbol),
    /// None: such a symbol adds nothing to VaR, ES or σ.
    None,
}

/// Daily returns per symbol over the same past days, and each symbol's previous close.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    returns: FxHashMap<Symbol, Series>,
    /// The symbols with returns, by dense index ([`Series::idx`]).
    by_idx: Vec<Symbol>,
    /// The market's mean return of each day, dense index `by_idx.len()` (none without days).
    market: Option<Series>,
    /// What symbols without returns take.
    proxy: Proxy,
    prev_close: FxHashMap<Symbol, f64>,
    days: usize,
}

impl History {
    /// From daily closes `(day, symbol, close)`, any order; `day` is any ordered day key. Returns are
    /// simple returns (close / previous close − 1: a position of market value w would have moved
    /// by w·r, so the historical scenarios revalue exactly) between consecutive days of the whole
    /// set, each from the symbol's last close before the day: a day without a close (a
    /// suspension) has a zero return and the next close carries the whole move since the last
    /// one. Days before a symbol's first return (it listed inside the window) take a proxy: that
    /// day's market return (the mean of every symbol's observed return that day: a close on the
    /// day and one before it), scaled by the ratio of the symbol's own standard deviation to the
    /// market's over the days it has ([`PROXY_MIN_DAYS`] at least; with fewer, scale 1). Zeros
    /// there would understate its σ, its correlations and its tail scenarios in proportion to the
    /// weight those days carry. Non-positive closes are ignored.
    pub fn from_closes<D: Ord + Clone>(closes: impl IntoIterator<Item = (D, Symbol, f64)>) -> History {
        let mut by_symbol: BTreeMap<Symbol, BTreeMap<D, f64>> = BTreeMap::new();
        let mut days: BTreeSet<D> = BTreeSet::new();
        for (d, s, c) in closes {
            if c > 0.0 && c.is_finite() {
                days.insert(d.clone());
                by_symbol.entry(s).or_default().insert(d, c);
            }
        }
        let days: Vec<D> = days.into_iter().collect();
        let k = days.len().saturating_sub(1);
        let mut h = History { days: k, ..Default::default() };
        // Per symbol: each day's return, `None` before its first one; observed returns feed the
        // market's mean of the day.
        let (mut sum, mut count) = (vec![0.0f64; k], vec![0u32; k]);
        // `Some((r, observed))`: observed is a close on the day and one before; a suspension's
        // zero is not.
        let mut series: Vec<(Symbol, DayReturns)> = Vec::with_capacity(by_symbol.len());
        for (s, closes) in &by_symbol {
            let mut last = closes.get(&days[0]).copied();
            let r: DayReturns = days[1..]
                .iter()
                .enumerate()
                .map(|(j, d)| match (last, closes.get(d)) {
                    (Some(a), Some(&b)) => {
                        last = Some(b);
                        let r = b / a - 1.0;
                        (sum[j], count[j]) = (sum[j] + r, count[j] + 1);
                        Some((r, true))
                    }
                    (None, Some(&b)) => {
                        last = Some(b);
                        None
                    }
                    (Some(_), None) => Some((0.0, false)),
                    (None, None) => None,
                })
                .collect();
            if let Some((_, c)) = closes.iter().next_back() {
                h.prev_close.insert(*s, *c);
            }
            series.push((*s, r));
        }
        let market: Vec<f64> =
            sum.iter().zip(&count).map(|(s, n)| if *n == 0 { 0.0 } else { s / f64::from(*n) }).collect();
        for (s, r) in series {
            let scale = proxy_scale(&r, &sum, &count);
            let r: Vec<f64> = r.iter().zip(&market).map(|(r, m)| r.map_or(scale * m, |r| r.0)).collect();
            let max_abs = r.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let idx = h.by_idx.len() as u32;
            h.by_idx.push(s);
            h.returns.insert(s, Series { r: r.into_boxed_slice(), max_abs, idx });
        }
        if k > 0 && !h.by_idx.is_empty() {
            let max_abs = market.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            h.market = Some(Series { r: market.into_boxed_slice(), max_abs, idx: h.by_idx.len() as u32 });
        }
        h
    }

    /// The same history with `proxy` for the symbols it has no returns of; a proxy symbol
    /// without returns of its own in a history that has some is refused (`Err` with it).
    pub fn with_proxy(mut self, proxy: Proxy) -> Result<History, Symbol> {
        if let Proxy::Symbol(p) = proxy {
            if !self.returns.is_empty() && !self.returns.contains_key(&p) {
                return Err(p);
            }
        }
        self.proxy = proxy;
        Ok(self)
    }

    /// The returns a symbol moves with: its own, else its proxy's.
    fn lookup(&self, s: Symbol) -> Option<&Series> {
        self.returns.get(&s).or_else(|| match self.proxy {
            Proxy::Market => self.market.as_ref(),
            Proxy::Symbol(p) => self.returns.get(&p),
            Proxy::None => None,
        })
    }

    /// Whether the symbol has returns of its own (else it takes the proxy's, if any).
    pub fn has_own(&self, s: Symbol) -> bool {
        self.returns.contains_key(&s)
    }

    /// Dense indices (Gram columns): the symbols with returns, then the market's.
    fn columns(&self) -> usize {
        self.by_idx.len() + usize::from(self.market.is_some())
    }

    /// No close at all: no symbol has a previous close (so no return today either).
    pub fn is_empty(&self) -> bool {
        self.prev_close.is_empty()
    }

    /// Past days of returns (K).
    pub fn days(&self) -> usize {
        self.days
    }

    /// The returns the symbol moves with, oldest first: its own, else its [`Proxy`]'s (`None`
    /// without either).
    pub fn returns(&self, s: Symbol) -> Option<&[f64]> {
        self.lookup(s).map(|r| &r.r[..])
    }

    /// The symbol's returns (or its proxy's) with the largest of their magnitudes.
    fn series(&self, s: Symbol) -> Option<(&[f64], f64)> {
        self.lookup(s).map(|r| (&r.r[..], r.max_abs))
    }

    /// The dense index of the returns the symbol moves with (its own, or its proxy's).
    fn index(&self, s: Symbol) -> Option<u32> {
        self.lookup(s).map(|r| r.idx)
    }

    /// The returns at dense index `i` (a symbol's, or the market's after them).
    fn returns_at(&self, i: u32) -> &[f64] {
        match self.by_idx.get(i as usize) {
            Some(s) => self.returns.get(s).map_or(&[], |r| &r.r[..]),
            None => self.market.as_ref().map_or(&[], |m| &m.r[..]),
        }
    }

    /// The last close before today.
    pub fn prev_close(&self, s: Symbol) -> Option<f64> {
        self.prev_close.get(&s).copied()
    }

    /// Symbols with history.
    pub fn symbols(&self) -> impl Iterator<Item = Symbol> + '_ {
        self.returns.keys().copied()
    }

    /// EWMA weights aₖ of the K past days (oldest first): the first squared return seeds the
    /// recursion, so a₀ = λ^(K−1) and aₖ = (1−λ)·λ^(K−1−k).
    pub fn weights(&self, lambda: f64) -> Vec<f64> {
        let k = self.days;
        (0..k)
            .map(|i| if i == 0 { lambda.powi(k as i32 - 1) } else { (1.0 - lambda) * lambda.powi((k - 1 - i) as i32) })
            .collect()
    }
}

/// One symbol's past returns and max |rₖ| (how far one unit of its market value moves any
/// scenario P&L).
#[derive(Clone, Debug, Default, PartialEq)]
struct Series {
    r: Box<[f64]>,
    max_abs: f64,
    /// Dense index among the symbols with returns.
    idx: u32,
}

/// A risk metric a limit can be set on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Gross exposure Σ|MV|.
    Gross,
    /// |net exposure|.
    Net,
    /// Largest single-name weight (0..1).
    NameWeight,
    /// Largest position in one symbol, in board lots.
    Lots,
    /// Parametric one-day VaR at 99%.
    Var,
    /// Current drawdown of total P&L from its peak.
    Drawdown,
    /// Loss: −total P&L when negative, else 0.
    Loss,
}

impl Metric {
    /// Every metric, in order.
    pub const ALL: [Metric; 7] =
        [Metric::Gross, Metric::Net, Metric::NameWeight, Metric::Lots, Metric::Var, Metric::Drawdown, Metric::Loss];

    /// Lower-case name (configuration keys, outputs).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Gross => "gross",
            Metric::Net => "net",
            Metric::NameWeight => "name_weight",
            Metric::Lots => "lots",
            Metric::Var => "var",
            Metric::Drawdown => "drawdown",
            Metric::Loss => "loss",
        }
    }

    /// The metric named `s`.
    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Limits per metric.
pub type LimitSet = BTreeMap<Metric, Limit>;

/// Every limit: the desk's, per account and per strategy, with defaults for those not named.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// The desk's limits.
    pub desk: LimitSet,
    /// Limits of accounts not listed in `accounts`.
    pub account_default: LimitSet,
    /// Per account (replaces the default for that account, metric by metric).
    pub accounts: BTreeMap<SmolStr, LimitSet>,
    /// Limits of strategies not listed in `strategies`.
    pub strategy_default: LimitSet,
    /// Per strategy.
    pub strategies: BTreeMap<SmolStr, LimitSet>,
}

impl Limits {
    /// The limit on `metric` for `group`.
    pub fn of(&self, group: &Group, metric: Metric) -> Option<&Limit> {
        let (named, default) = match group {
            Group::Desk => return self.desk.get(&metric),
            Group::Account(a) => (self.accounts.get(a), &self.account_default),
            Group::Strategy(s) => (self.strategies.get(s), &self.strategy_default),
        };
        named.and_then(|l| l.get(&metric)).or_else(|| default.get(&metric))
    }
}

/// Settings of the risk book.
#[derive(Clone, Debug)]
pub struct RiskConfig {
    /// EWMA decay (0.94).
    pub lambda: f64,
    /// Horizon of the `*_horizon` VaR figures, in days (√h scaling).
    pub horizon_days: f64,
    /// Return history and previous closes.
    pub history: Arc<History>,
    /// Capital per account, for leverage.
    pub nav: FxHashMap<SmolStr, Decimal>,
    /// The desk's capital.
    pub desk_nav: Option<Decimal>,
    /// Limits.
    pub limits: Limits,
    /// Component-VaR contributors kept per row (the largest first); 0 for none.
    pub contributors: usize,
    /// Groups whose rows carry contributors (a contributor costs O(K) per name held, so the
    /// default is the desk and strategies, not every account).
    pub contributor_scopes: Vec<&'static str>,
    /// Threads a refresh that touches many groups (a mark in a widely held symbol) spreads them
    /// over; 1 keeps it on the calling thread.
    pub threads: usize,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            lambda: LAMBDA,
            horizon_days: 10.0,
            history: Arc::default(),
            nav: FxHashMap::default(),
            desk_nav: None,
            limits: Limits::default(),
            contributors: 5,
            contributor_scopes: vec!["desk", "strategy"],
            threads: 1,
        }
    }
}

/// The risk metrics of one account, strategy or the desk.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RiskRow {
    /// Whose.
    pub group: Group,
    /// Symbols held (non-zero quantity).
    pub names: u32,
    /// Σ positive market values.
    pub long_mv: Decimal,
    /// Σ negative market values (≤ 0).
    pub short_mv: Decimal,
    /// Σ|MV| over symbols (netted across the group's positions in a symbol).
    pub gross: Decimal,
    /// ΣMV.
    pub net: Decimal,
    /// Capital, when configured.
    pub nav: Option<Decimal>,
    /// gross / NAV.
    pub leverage: Option<Decimal>,
    /// The largest single name and its weight |MV|/gross.
    pub largest: Option<(Symbol, Decimal)>,
    /// Herfindahl index Σw².
    pub hhi: Decimal,
    /// Weight per sector (`None`: instruments without a sector), by sector.
    pub sectors: SectorWeights,
    /// The largest position in board lots, and its symbol.
    pub max_lots: Option<(Symbol, Decimal)>,
    /// Parametric one-day VaR at 95% and 99%.
    pub var_95: Decimal,
    /// 99%, one day.
    pub var_99: Decimal,
    /// 95% over the configured horizon.
    pub var_95_horizon: Decimal,
    /// 99% over the configured horizon.
    pub var_99_horizon: Decimal,
    /// Historical one-day VaR at 95% over the stored scenarios.
    pub hist_var_95: Decimal,
    /// Historical one-day VaR at 99%.
    pub hist_var_99: Decimal,
    /// Expected shortfall at 95%.
    pub es_95: Decimal,
    /// Expected shortfall at 99%.
    pub es_99: Decimal,
    /// The largest component VaR (99%, one day) contributions, largest first.
    pub contributors: Vec<(Symbol, Decimal)>,
    /// Total P&L (realized − fees + unrealized).
    pub total_pnl: Decimal,
    /// Highest total P&L observed.
    pub peak_pnl: Decimal,
    /// peak − total.
    pub drawdown: Decimal,
    /// Largest drawdown observed.
    pub max_drawdown: Decimal,
    /// Event time of the latest fill or mark that moved the group.
    pub ts: Ts,
}

/// Start or end of a breach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The breach started.
    Breach,
    /// The breach cleared.
    Clear,
}

impl AlertKind {
    /// Lower-case name for outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Breach => "breach",
            AlertKind::Clear => "clear",
        }
    }
}

/// One alert: a breach of a limit started or cleared. Key: (group, metric, severity, seq, kind).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertRow {
    /// Whose.
    pub group: Group,
    /// On what.
    pub metric: Metric,
    /// Soft or hard level.
    pub severity: Severity,
    /// The n-th breach of this limit today (its clear has the same number).
    pub seq: u32,
    /// Start or end.
    pub kind: AlertKind,
    /// The metric's value.
    pub value: Decimal,
    /// The level crossed.
    pub level: Decimal,
    /// Event time.
    pub ts: Ts,
    /// The positions that drive the metric: the largest by |MV| (or, for VaR, by component).
    pub drivers: Vec<(Symbol, Decimal)>,
}

impl AlertRow {
    /// The deterministic key sinks write it under.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}",
            self.group.kind(),
            self.group.name(),
            self.metric.as_str(),
            self.severity.as_str(),
            self.seq,
            self.kind.as_str()
        )
    }
}

/// Path-dependent state of one group, carried over a restart: its drawdown and its limits' states.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RiskSeed {
    /// Whose.
    pub group: Group,
    /// Peak total P&L.
    pub peak: Decimal,
    /// Largest drawdown so far.
    pub max_drawdown: Decimal,
    /// Event time of the latest fill or mark that moved the group.
    pub ts: Ts,
    /// Per metric: the breach in force and the breaches counted so far (soft, hard).
    pub limits: Vec<(Metric, Option<Severity>, u32, u32)>,
    /// Per metric and severity: the level of its latest breach, so that a limit removed while
    /// Harbour was down clears at the level it had. (Last, and defaulted: checkpoints written
    /// before it still load.)
    #[serde(default)]
    pub levels: Vec<(Metric, Severity, Decimal)>,
}

/// Seeds for every group from the rows and alerts a run has output (what a checkpoint keeps).
pub fn seeds_of<'a>(
    rows: impl IntoIterator<Item = &'a RiskRow>,
    alerts: impl IntoIterator<Item = &'a AlertRow>,
) -> Vec<RiskSeed> {
    let mut seeds: BTreeMap<Group, RiskSeed> = BTreeMap::new();
    let blank = |g: &Group| RiskSeed {
        group: g.clone(),
        peak: Decimal::ZERO,
        max_drawdown: Decimal::ZERO,
        ts: 0,
        limits: vec![],
        levels: vec![],
    };
    for r in rows {
        let s = seeds.entry(r.group.clone()).or_insert_with(|| blank(&r.group));
        s.peak = r.peak_pnl;
        s.max_drawdown = r.max_drawdown;
        s.ts = r.ts;
    }
    // Per (group, metric, severity): the number of breaches and whether the last one cleared.
    let mut last: BTreeMap<(Group, Metric, Severity), (u32, AlertKind)> = BTreeMap::new();
    let mut levels: BTreeMap<(Group, Metric, Severity), (u32, Decimal)> = BTreeMap::new();
    for a in alerts {
        let e = last.entry((a.group.clone(), a.metric, a.severity)).or_insert((0, AlertKind::Clear));
        if (a.seq, a.kind) > *e {
            *e = (a.seq, a.kind);
        }
        if a.kind == AlertKind::Breach {
            let l = levels.entry((a.group.clone(), a.metric, a.severity)).or_insert((0, a.level));
            if a.seq >= l.0 {
                *l = (a.seq, a.level);
            }
        }
    }
    for ((g, m, sev), (_, level)) in levels {
        seeds.entry(g.clone()).or_insert_with(|| blank(&g)).levels.push((m, sev, level));
    }
    let mut per: BTreeMap<(Group, Metric), (Option<Severity>, u32, u32)> = BTreeMap::new();
    for ((g, m, sev), (seq, kind)) in last {
        let e = per.entry((g, m)).or_insert((None, 0, 0));
        let open = kind == AlertKind::Breach;
        match sev {
            Severity::Soft => {
                e.1 = seq;
                if open && e.0.is_none() {
                    e.0 = Some(Severity::Soft);
                }
            }
            Severity::Hard => {
                e.2 = seq;
                if open {
                    e.0 = Some(Severity::Hard);
                }
            }
        }
    }
    for ((g, m), (state, soft, hard)) in per {
        seeds.entry(g.clone()).or_insert_with(|| blank(&g)).limits.push((m, state, soft, hard));
    }
    seeds.into_values().collect()
}

/// One symbol within a group: the group's positions in it, netted.
#[derive(Clone, Debug, Default)]
struct Name {
    positions: u32,
    qty: i64,
    mv: Decimal,
    total: Decimal,
    /// What the name contributes to the group's aggregates as last added.
    added: Added,
}

impl Name {
    /// What the name contributes now (its position netted, `info` its symbol's reference data
    /// and today's return), reusing what did not change from `old`.
    fn contribution(&self, old: &Added, info: Option<&SymbolInfo>) -> Added {
        let lot = info.map_or(0, |i| i.lot);
        let w = f64_of(self.mv);
        Added {
            qty: self.qty,
            lot,
            mv: self.mv,
            abs_cents: if self.mv == old.mv { old.abs_cents } else { cents_of(self.mv) },
            lots: if self.qty == old.qty && lot == old.lot {
                old.lots
            } else if self.qty == 0 {
                Decimal::ZERO
            } else if lot > 0 {
                Decimal::from(self.qty.abs()) / Decimal::from(lot)
            } else {
                Decimal::from(self.qty.abs())
            },
            w,
            today: info.map_or(0.0, |i| i.ret) * w,
            sector: info.map_or(NO_SECTOR, |i| i.sector),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Added {
    qty: i64,
    lot: i64,
    mv: Decimal,
    /// |MV| in whole cents.
    abs_cents: i128,
    lots: Decimal,
    sector: SectorId,
    w: f64,
    today: f64,
}

/// Every symbol's holders: per group index, the group's name in the symbol. Kept symbol-major,
/// so that a mark, which touches every group holding one symbol, finds all their names in one
/// table instead of one cache (and TLB) miss per group.
type Holdings = FxHashMap<Symbol, HashMap<u32, Name, BuildHasherDefault<GroupIndexHasher>>>;

/// The hash of a group index in a symbol's table: the index itself in the low bits (the bucket),
/// mixed bits in the top seven (hashbrown's tag). A refresh visits groups in index order, so their
/// names are read in bucket order, one memory stream the prefetcher follows, rather than one
/// cache miss per group (Fx scatters consecutive indexes; ~12% of a dense refresh waited there).
#[derive(Default)]
struct GroupIndexHasher(u64);

impl Hasher for GroupIndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u32(&mut self, i: u32) {
        let i = u64::from(i);
        self.0 = i | (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xFE00_0000_0000_0000);
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u32 keys are hashed here (`write_u32`); other bytes still hash, Fx-style.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

#[derive(Default)]
struct GroupState {
    /// The symbols the group holds a name in (its entries in [`Holdings`]).
    held_symbols: FxHashSet<Symbol>,
    /// Groups that show contributors: each name with a non-zero market value, kept here because
    /// reading them from the holdings costs a cache miss per name.
    w: FxHashMap<Symbol, Held>,
    /// The `u` of `w` are to be recomputed before the row (many names changed at once, or
    /// enough incremental updates that rounding is worth resetting).
    u_stale: bool,
    /// Incremental updates of the `u` since they were last recomputed.
    u_updates: u32,
    held: u32,
    positions: u32,
    exposure: Exposure,
    /// Σ (|MV| in cents)², exact (an integer: no decimal multiplication per change), unless
    /// `sum_sq_lost` (an overflow: recomputed at each row).
    sum_sq: i128,
    sum_sq_lost: bool,
    /// Per sector: Σ|MV|, exact, and in f64 (kept beside it: the weights of every sector are
    /// shown at each change, and a decimal's conversion is not free).
    sectors: SectorSums,
    /// The largest names by |MV| (ties: the smaller code): a short list and a bound on the rest.
    largest: Largest,
    by_lots: BTreeSet<(Decimal, Reverse<Symbol>)>,
    /// The last of `by_lots` (the largest position in lots, ties: the smaller code), shown
    /// rounded; kept here because walking to a B-tree's last leaf misses the cache at every level.
    max_lots: Option<(Symbol, Decimal)>,
    /// Scenario P&Ls dₖ = Σᵢ r_{k,i}·wᵢ over the history.
    d: Vec<f64>,
    /// Σₖ aₖ·dₖ² of `d` as it is, when summed as `d` last moved (None: not yet).
    squares: Option<f64>,
    /// The scenarios that can hold the tails (a few more than the tails' length), so that a
    /// refresh selects among those instead of every scenario.
    tail: TailCandidates,
    /// Today's d_t = Σᵢ r_{t,i}·wᵢ.
    today: f64,
    total: Decimal,
    drawdown: Drawdown,
    /// Per metric: the breach state, breaches counted (soft, hard), the limit last judged against.
    limits: BTreeMap<Metric, (LimitState, u32, u32, Option<Limit>)>,
    ts: Ts,
    shown: Option<RiskRow>,
}

/// A sector, by its place in the book's [`Sectors`] (so that a change compares and copies an
/// integer, not a name).
type SectorId = u32;

/// The sector of instruments without one.
const NO_SECTOR: SectorId = 0;

/// The sector names met so far, each given a [`SectorId`] (its place here); the first is "no
/// sector".
struct Sectors {
    names: Vec<Option<SmolStr>>,
    ids: FxHashMap<SmolStr, SectorId>,
}

impl Default for Sectors {
    fn default() -> Self {
        Sectors { names: vec![None], ids: FxHashMap::default() }
    }
}

impl Sectors {
    /// The id of `name` (given one when new).
    fn id(&mut self, name: Option<&str>) -> SectorId {
        let Some(name) = name else { return NO_SECTOR };
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as SectorId;
        self.names.push(Some(SmolStr::from(name)));
        self.ids.insert(SmolStr::from(name), id);
        id
    }
}

/// A group's Σ|MV| per sector, exact and in f64 (kept beside it: every sector's weight is shown
/// at each change, and a decimal's conversion is not free), in the order of the sectors' names
/// (`None` first). A group spans a dozen sectors or so: a short list, searched by id. The list of
/// their names a row shows is kept too, shared by every row until a sector comes or goes (copying
/// a dozen names into each row was a tenth of a refresh).
#[derive(Clone, Debug, Default)]
struct SectorSums {
    sums: Vec<(SectorId, Decimal, f64)>,
    names: OnceCell<Arc<[Option<SmolStr>]>>,
}

impl SectorSums {
    /// Adds `v` to `sector`'s sum (`names`: the book's sector names).
    fn add(&mut self, sector: SectorId, v: Decimal, names: &[Option<SmolStr>]) {
        let i = match self.sums.iter().position(|e| e.0 == sector) {
            Some(i) => i,
            None => {
                let name = &names[sector as usize];
                let i = self.sums.partition_point(|e| names[e.0 as usize] < *name);
                self.sums.insert(i, (sector, Decimal::ZERO, 0.0));
                self.names.take();
                i
            }
        };
        let e = &mut self.sums[i];
        e.1 += v;
        e.2 = f64_of(e.1);
    }

    /// Takes `v` from `sector`'s sum; a sector whose sum reaches zero goes.
    fn sub(&mut self, sector: SectorId, v: Decimal) {
        if let Some(i) = self.sums.iter().position(|e| e.0 == sector) {
            let e = &mut self.sums[i];
            e.1 -= v;
            if e.1.is_zero() {
                self.sums.remove(i);
                self.names.take();
            } else {
                e.2 = f64_of(e.1);
            }
        }
    }

    /// Each sector's share of `gross`, in the order of their names.
    fn shares(&self, gross: f64, names: &[Option<SmolStr>]) -> SectorWeights {
        let names = self.names.get_or_init(|| self.sums.iter().map(|(s, _, _)| names[*s as usize].clone()).collect());
        // One division for the row rather than one per sector: the product differs from the
        // quotient by an ulp or so, which shows in the 6th place only for a weight that close to
        // a half (the incremental book and a recomputation round the same way).
        let per = 1.0 / gross;
        let weights: Option<Arc<[i64]>> = self.sums.iter().map(|(_, _, v)| fixed_mantissa(v * per, RATIO_DP)).collect();
        match weights {
            Some(w) => SectorWeights::from_mantissas(names.clone(), w, RATIO_DP),
            // (Not a share of one: a gross that does not cover its sectors' sums.)
            None => {
                let w: Vec<Decimal> = self.sums.iter().map(|(_, _, v)| fixed(v * per, RATIO_DP)).collect();
                SectorWeights::new(names.clone(), &w)
            }
        }
    }
}

/// A name of a group that shows contributors: its market value in f64, its symbol's dense
/// history index, and uₛ = Σₖ aₖ·r_{k,s}·dₖ (the history's part of (Σw)ₛ, kept as the dₖ move so
/// that a component costs O(1) at each row instead of O(K)).
#[derive(Clone, Copy, Debug)]
struct Held {
    w: f64,
    idx: Option<u32>,
    u: f64,
}

/// Names changed in one refresh of a group past which its `u` are recomputed (O(names × K))
/// rather than updated (O(names) each).
const BULK_CHANGES: u32 = 32;

/// Incremental updates of a group's `u` after which they are recomputed (rounding reset).
const RESYNC_UPDATES: u32 = 4096;

/// Columns of C = Rᵀ·diag(a)·R over the symbols with history (C(t, j) = Σₖ aₖ·r_{k,t}·r_{k,j}),
/// computed when first needed and shared by the shards' threads.
struct Gram {
    cols: Vec<std::sync::OnceLock<Box<[f64]>>>,
}

/// Symbols with history past which contributors are computed from the scenario P&Ls at each row
/// instead of through [`Gram`] (its columns take N² f64: 128 MB at this size).
const GRAM_MAX_SYMBOLS: usize = 4096;

impl Gram {
    fn column(&self, j: u32, history: &History, weights: &[f64]) -> &[f64] {
        self.cols[j as usize].get_or_init(|| {
            let rj = history.returns_at(j);
            (0..self.cols.len() as u32).map(|t| weighted_dot(weights, history.returns_at(t), rj)).collect()
        })
    }
}

/// Σₖ aₖ·xₖ·yₖ in a fixed order.
fn weighted_dot(a: &[f64], x: &[f64], y: &[f64]) -> f64 {
    a.iter().zip(x).zip(y).map(|((a, x), y)| a * x * y).sum()
}

/// A symbol's reference data and today's return.
#[derive(Clone, Debug, Default)]
struct SymbolInfo {
    sector: SectorId,
    lot: i64,
    /// Today's simple return, mark / previous close − 1 (0 without both).
    ret: f64,
    mark_ts: Ts,
    /// The volatility row shown.
    vol: Option<VolRow>,
}

/// A symbol's EWMA volatility: from the history's daily returns and today's move so far (previous
/// close to mark), as if today were the next observation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VolRow {
    /// The symbol.
    pub symbol: Symbol,
    /// Daily volatility σ (a fraction: 0.02 is 2%), to 6 places.
    pub daily: Decimal,
    /// Annualised, σ·√252, to 6 places.
    pub annual: Decimal,
    /// Today's simple return so far (mark / previous close − 1; 0 without a previous close), to 6 places.
    pub today: Decimal,
    /// Days of returns in the history.
    pub days: u32,
    /// Event time of the mark.
    pub ts: Ts,
}

/// The changes one [`RiskBook::apply`] produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RiskChanges {
    /// Rows to retract (−1): the groups' previous rows.
    pub retract: Vec<RiskRow>,
    /// Rows to insert (+1).
    pub insert: Vec<RiskRow>,
    /// Alerts fired (insert-only).
    pub alerts: Vec<AlertRow>,
    /// Volatility rows: retracted (−1) and inserted (+1).
    pub vols: Vec<(VolRow, isize)>,
}

/// Every group's risk state. Feed each time's changes to [`RiskBook::apply`] in time order.
pub struct RiskBook {
    config: RiskConfig,
    weights: Vec<f64>,
    symbols: FxHashMap<Symbol, SymbolInfo>,
    sectors: Sectors,
    /// Every group's state, in the order the groups first appeared; `index` finds them.
    groups: Vec<(Group, GroupState)>,
    /// Names, sharded by group over `risk.threads` (group `i` in shard `shard_of[i]`), so each
    /// thread updates the names of its own groups.
    holdings: Vec<Holdings>,
    /// Each group's shard: the desk and the strategies (few groups, each holding many names and
    /// netting many position changes, and showing contributors, O(names × K) each) dealt over
    /// the shards in turn, and the accounts in turn apart from them, so the shards' work is even.
    shard_of: Vec<u16>,
    /// Groups dealt so far: (accounts, desk and strategies).
    dealt: (usize, usize),
    index: FxHashMap<Group, usize>,
    z95: f64,
    z99: f64,
    scratch: Vec<(f64, u32)>,
    /// Per group index: its place in its shard's work of the current apply (written for the
    /// touched groups only, which are the only ones read).
    rank: Vec<u32>,
    /// Limits changed: judge every group at the next apply.
    rejudge: bool,
    /// The threads a refresh fans out to besides the calling one (started at the first).
    pool: Option<rayon::ThreadPool>,
    /// For contributors, when the history is not too wide.
    gram: Option<Gram>,
}

/// One time's inputs to the risk book.
#[derive(Clone, Debug, Default)]
pub struct RiskInput {
    /// Position rows retracted (−1) and inserted (+1).
    pub positions: Vec<(PositionRow, isize)>,
    /// Marks changed: symbol, price, event time.
    pub marks: Vec<(Symbol, Option<Decimal>, Ts)>,
    /// Instruments (current records).
    pub instruments: Vec<Instrument>,
    /// Path state carried over a restart (applied first).
    pub seeds: Vec<RiskSeed>,
}

/// `x` to `dp` decimal places (at most 9), rounded half away from zero in f64 (exact while the
/// scaled value is below 2^53).
fn fixed(x: f64, dp: u32) -> Decimal {
    match fixed_mantissa(x, dp) {
        Some(m) => Decimal::new(m, dp),
        None => Decimal::from_f64(x).unwrap_or_default().round_dp(dp),
    }
}

/// [`fixed`]'s mantissa (at `dp` places), while the scaled value is below 9·10¹⁵ (`None` past it,
/// and for infinities and NaN).
fn fixed_mantissa(x: f64, dp: u32) -> Option<i64> {
    const SCALE: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
    let v = x * SCALE[dp as usize];
    if v.is_finite() && v.abs() < 9.0e15 {
        // `f64::round` without the libm call (no SSE4.1 in the baseline target): the fraction
        // v − trunc(v) is exact at these magnitudes.
        // Branchless: the fraction's side is a coin toss.
        let i = v as i64;
        let f = v - i as f64;
        Some(i + i64::from(f >= 0.5) - i64::from(f <= -0.5))
    } else {
        None
    }
}

/// `x` in f64: the nearest f64 when its mantissa is below 2⁵³ (both operands of the one
/// division exact), within an ulp up to 2⁶⁴; rust_decimal's `to_f64` beyond (it divides in u128
/// and rounds through libm, ten times the cost, and a refresh converts dozens of decimals).
fn f64_of(x: Decimal) -> f64 {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
        1e20, 1e21, 1e22,
    ];
    let m = x.mantissa();
    let scale = x.scale() as usize;
    match (u64::try_from(m.unsigned_abs()), POW10.get(scale)) {
        (Ok(a), Some(p)) => {
            let v = a as f64 / p;
            if m < 0 {
                -v
            } else {
                v
            }
        }
        _ => x.to_f64().unwrap_or(0.0),
    }
}

fn cents(x: f64) -> Decimal {
    fixed(x, 2)
}

/// `part / whole` to [`RATIO_DP`] places, through f64 (a weight needs no more than its 6
/// places; a decimal division costs ten times as much); `whole` already in f64.
fn weight(part: Decimal, whole: f64) -> Decimal {
    share(f64_of(part), whole)
}

/// [`weight`] with the part in f64 too.
fn share(part: f64, whole: f64) -> Decimal {
    if whole == 0.0 {
        return Decimal::ZERO;
    }
    fixed(part / whole, RATIO_DP)
}

fn ratio(x: Decimal) -> Decimal {
    x.round_dp(RATIO_DP)
}

impl RiskBook {
    /// An empty book.
    pub fn new(config: RiskConfig) -> RiskBook {
        let shards = config.threads.max(1);
        let weights = config.history.weights(config.lambda);
        let n = config.history.columns();
        let gram = (config.contributors > 0 && n <= GRAM_MAX_SYMBOLS)
            .then(|| Gram { cols: (0..n).map(|_| std::sync::OnceLock::new()).collect() });
        RiskBook {
            weights,
            config,
            symbols: FxHashMap::default(),
            sectors: Sectors::default(),
            groups: Vec::new(),
            holdings: (0..shards).map(|_| Holdings::default()).collect(),
            index: FxHashMap::default(),
            shard_of: Vec::new(),
            dealt: (0, 0),
            z95: normal_quantile(0.95),
            z99: normal_quantile(0.99),
            scratch: Vec::new(),
            rank: Vec::new(),
            rejudge: false,
            pool: None,
            gram,
        }
    }

    /// Replaces the limits (a reload): every group is judged against them at the next apply.
    pub fn set_limits(&mut self, limits: Limits) {
        self.config.limits = limits;
        self.rejudge = true;
    }

    /// The row shown for a group.
    pub fn row(&self, g: &Group) -> Option<&RiskRow> {
        self.index.get(g).and_then(|&i| self.groups[i].1.shown.as_ref())
    }

    /// The index of a group's state, created empty when new.
    fn group(&mut self, g: Group) -> usize {
        if let Some(&i) = self.index.get(&g) {
            return i;
        }
        let dealt = if matches!(g, Group::Account(_)) { &mut self.dealt.0 } else { &mut self.dealt.1 };
        self.shard_of.push((*dealt % self.holdings.len()) as u16);
        *dealt += 1;
        self.groups.push((g.clone(), GroupState::default()));
        self.index.insert(g, self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// The index of the group `kind(name)`, remembering the last one looked up in `last` (rows
    /// of one account or strategy tend to come together).
    fn group_of(&mut self, last: &mut Option<(SmolStr, usize)>, name: &SmolStr, kind: fn(SmolStr) -> Group) -> usize {
        match last {
            Some((n, i)) if n == name => *i,
            _ => {
                let i = self.group(kind(name.clone()));
                *last = Some((name.clone(), i));
                i
            }
        }
    }

    /// Applies one time's changes; returns the rows that changed and the alerts fired.
    pub fn apply(&mut self, input: RiskInput) -> RiskChanges {
        let mut out = RiskChanges::default();
        for p in self.apply_parts(input) {
            merge(&mut out, p);
        }
        out
    }

    /// [`RiskBook::apply`] with the changes in parts, one per shard (the volatility rows in the
    /// first): what the risk operator hands on, without first moving every row into one list
    /// (after a mark in a widely held symbol, ~1,000 rows of ~450 bytes each plus their sector
    /// lists).
    pub fn apply_parts(&mut self, input: RiskInput) -> Vec<RiskChanges> {
        // Per group index: whether anything touched it this time.
        let mut touched: Vec<bool> = Vec::new();
        fn touch(touched: &mut Vec<bool>, i: usize) {
            if touched.len() <= i {
                touched.resize(i + 1, false);
            }
            touched[i] = true;
        }
        for seed in input.seeds {
            let i = self.group(seed.group);
            let g = &mut self.groups[i].1;
            g.drawdown.peak = Some(seed.peak);
            g.drawdown.max = seed.max_drawdown;
            g.ts = g.ts.max(seed.ts);
            for (m, state, soft, hard) in seed.limits {
                // The levels of its latest breaches, for a clear should the limit be gone now.
                let level = |sev| seed.levels.iter().find(|l| l.0 == m && l.1 == sev).map(|l| l.2);
                let last = match (level(Severity::Soft), level(Severity::Hard)) {
                    (None, None) => None,
                    (s, h) => Some(Limit {
                        soft: s.or(h).unwrap_or_default(),
                        hard: h.or(s).unwrap_or_default(),
                        hysteresis: Decimal::ZERO,
                    }),
                };
                g.limits.insert(m, (LimitState { breached: state }, soft, hard, last));
            }
            touch(&mut touched, i);
        }
        if std::mem::take(&mut self.rejudge) {
            // New limits: every group is judged against them now, not at its next change.
            for i in 0..self.groups.len() {
                touch(&mut touched, i);
            }
        }
        // Names to re-file because their instrument changed, by shard.
        let shards = self.holdings.len();
        let mut refile: Vec<Vec<(u32, Symbol)>> = (0..shards).map(|_| Vec::new()).collect();
        for i in input.instruments {
            let info = self.symbols.entry(i.symbol).or_default();
            let sector = self.sectors.id(i.sector.as_deref());
            if info.sector != sector || info.lot != i.lot_size {
                info.sector = sector;
                info.lot = i.lot_size;
                // Rare: re-file the symbol in every group holding it.
                for &g in self.holdings.iter().filter_map(|h| h.get(&i.symbol)).flat_map(|h| h.keys()) {
                    touch(&mut touched, g as usize);
                    refile[self.shard_of[g as usize] as usize].push((g, i.symbol));
                }
            }
        }
        let mut vols: Vec<(VolRow, isize)> = Vec::new();
        for (s, price, ts) in input.marks {
            let h = &self.config.history;
            let ret = match (price.and_then(|p| p.to_f64()), h.prev_close(s)) {
                (Some(p), Some(c)) if p > 0.0 => p / c - 1.0,
                _ => 0.0,
            };
            let info = self.symbols.entry(s).or_default();
            info.ret = ret;
            // The time of the mark in force (not the latest time seen: a mark can fall back to
            // an older source, and a restart sees only the mark in force).
            info.mark_ts = ts;
            let row = vol_row(s, h, &self.weights, self.config.lambda, ret, info.mark_ts);
            if info.vol.as_ref() != Some(&row) {
                if let Some(old) = info.vol.replace(row.clone()) {
                    vols.push((old, -1));
                }
                vols.push((row, 1));
            }
        }
        // Each row's groups (by index: a row's account and strategy are looked up here once, the
        // desk not at all); each shard nets the changes of its own groups' names.
        let desk = if input.positions.is_empty() { u32::MAX } else { self.group(Group::Desk) as u32 };
        let mut last_account: Option<(SmolStr, usize)> = None;
        let mut last_strategy: Option<(SmolStr, usize)> = None;
        let mut row_groups: Vec<[u32; 3]> = Vec::with_capacity(input.positions.len());
        for (row, _) in &input.positions {
            let account = self.group_of(&mut last_account, &row.key.account, Group::Account);
            let strategy = self.group_of(&mut last_strategy, &row.key.strategy, Group::Strategy);
            row_groups.push([desk, account as u32, strategy as u32]);
        }
        for &g in row_groups.iter().flatten() {
            touch(&mut touched, g as usize);
        }
        // The touched groups by shard, each with its own state: disjoint, so shards can go to
        // several threads.
        let mut work: Vec<Vec<(u32, &Group, &mut GroupState)>> = (0..shards).map(|_| Vec::new()).collect();
        let mut touched_groups = 0usize;
        self.rank.resize(self.groups.len(), 0);
        for (i, ((g, st), t)) in self.groups.iter_mut().zip(touched).enumerate() {
            if t {
                let w = &mut work[self.shard_of[i] as usize];
                self.rank[i] = w.len() as u32;
                w.push((i as u32, g, st));
                touched_groups += 1;
            }
        }
        let ctx = Ctx {
            config: &self.config,
            weights: &self.weights,
            symbols: &self.symbols,
            sector_names: &self.sectors.names,
            z95: self.z95,
            z99: self.z99,
            gram: self.gram.as_ref(),
            positions: &input.positions,
            row_groups: &row_groups,
            shard_of: &self.shard_of,
            rank: &self.rank,
        };
        let jobs: Vec<Job> =
            self.holdings.iter_mut().zip(refile).zip(work).enumerate().map(|(k, ((h, r), w))| (k, h, r, w)).collect();
        let threads = self.config.threads.max(1).min(touched_groups.div_ceil(PARALLEL_GROUPS)).min(shards);
        let mut parts: Vec<RiskChanges> = if threads <= 1 {
            jobs.into_iter().map(|job| ctx.run(job, &mut self.scratch)).collect()
        } else {
            // Shard k to thread k % threads; the calling thread takes the first share, the
            // book's pool the others.
            let mut shares: Vec<Vec<(usize, Job)>> = (0..threads).map(|_| Vec::new()).collect();
            for (k, job) in jobs.into_iter().enumerate() {
                shares[k % threads].push((k, job));
            }
            let ctx = &ctx;
            let run = move |share: Vec<(usize, Job)>| {
                let mut scratch = Vec::new();
                share.into_iter().map(|(k, job)| (k, ctx.run(job, &mut scratch))).collect::<Vec<_>>()
            };
            let mut shares = shares.into_iter();
            let first = shares.next().unwrap_or_default();
            let pool = self.pool.get_or_insert_with(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.config.threads.max(2) - 1)
                    .thread_name(|i| format!("risk-{i}"))
                    .build()
                    .expect("the risk book's threads start")
            });
            let mut others: Vec<Vec<(usize, RiskChanges)>> = Vec::new();
            others.resize_with(threads - 1, Vec::new);
            let mut done = Vec::new();
            pool.in_place_scope(|scope| {
                for (share, slot) in std::iter::zip(shares, &mut others) {
                    scope.spawn(move |_| *slot = run(share));
                }
                done = run(first);
            });
            done.extend(others.into_iter().flatten());
            done.sort_unstable_by_key(|(k, _)| *k);
            done.into_iter().map(|(_, p)| p).collect()
        };
        parts[0].vols = vols;
        parts
    }

    /// Takes name `s`'s previous contribution `old` out of the group's aggregates and adds its
    /// current one, `new`.
    fn refile(
        st: &mut GroupState,
        s: Symbol,
        old: &Added,
        new: &Added,
        history: &History,
        weights: &[f64],
        sectors: &[Option<SmolStr>],
    ) {
        if old.mv != new.mv || old.sector != new.sector {
            if !old.mv.is_zero() {
                st.exposure.remove(old.mv);
                match old.abs_cents.checked_mul(old.abs_cents).and_then(|x| st.sum_sq.checked_sub(x)) {
                    Some(q) => st.sum_sq = q,
                    None => st.sum_sq_lost = true,
                }
                st.sectors.sub(old.sector, old.mv.abs());
            }
            if !new.mv.is_zero() {
                st.exposure.add(new.mv);
                match new.abs_cents.checked_mul(new.abs_cents).and_then(|x| st.sum_sq.checked_add(x)) {
                    Some(q) => st.sum_sq = q,
                    None => st.sum_sq_lost = true,
                }
                st.sectors.add(new.sector, new.mv.abs(), sectors);
            }
            st.largest.resize(s, (!old.mv.is_zero()).then(|| old.mv.abs()), (!new.mv.is_zero()).then(|| new.mv.abs()));
        }
        if old.lots != new.lots {
            if old.lots > Decimal::ZERO {
                st.by_lots.remove(&(old.lots, Reverse(s)));
                st.held -= 1;
            }
            if new.lots > Decimal::ZERO {
                st.by_lots.insert((new.lots, Reverse(s)));
                st.held += 1;
            }
            st.max_lots = st.by_lots.iter().next_back().map(|(l, Reverse(s))| (*s, l.round_dp(4)));
        }
        // Scenario P&Ls: dₖ += r_{k,s}·Δw.
        let dw = new.w - old.w;
        if let Some((r, max_abs)) = history.series(s) {
            if dw != 0.0 {
                if st.d.len() != r.len() {
                    st.d.resize(r.len(), 0.0);
                    st.tail.reset();
                }
                st.squares = move_scenarios(&mut st.d, r, dw, weights);
                st.tail.move_by(max_abs * dw.abs());
            }
        }
        st.today += new.today - old.today;
    }

    /// Checks the group's limits against its new row; pushes the alerts of breaches that start or clear.
    fn judge(
        limits: &Limits,
        st: &mut GroupState,
        row: &RiskRow,
        holdings: &Holdings,
        gi: u32,
        alerts: &mut Vec<AlertRow>,
    ) {
        for m in Metric::ALL {
            let configured = limits.of(&row.group, m).copied();
            // No limit and no breach in force: nothing to judge (and no state kept).
            if configured.is_none() && st.limits.get(&m).is_none_or(|t| t.0.breached.is_none()) {
                continue;
            }
            let value = match m {
                Metric::Gross => row.gross,
                Metric::Net => row.net.abs(),
                Metric::NameWeight => row.largest.map_or(Decimal::ZERO, |l| l.1),
                Metric::Lots => row.max_lots.map_or(Decimal::ZERO, |l| l.1),
                Metric::Var => row.var_99,
                Metric::Drawdown => row.drawdown,
                Metric::Loss => (-row.total_pnl).max(Decimal::ZERO),
            };
            let (state, soft_n, hard_n, last) = st.limits.entry(m).or_default();
            // A clear names the level of the breach it ends: the limit as it was before this
            // judgement (a reload that raised or dropped a level would otherwise show the new one).
            let before = *last;
            let (limit, alerts_now) = match configured {
                Some(l) => {
                    *last = Some(l);
                    (l, state.observe(&l, value))
                }
                None => {
                    // The limit was removed: the breach in force clears, hard first, at the
                    // levels the limit had.
                    let l = last.take().unwrap_or(Limit {
                        soft: Decimal::ZERO,
                        hard: Decimal::ZERO,
                        hysteresis: Decimal::ZERO,
                    });
                    let mut v = Vec::new();
                    if state.breached == Some(Severity::Hard) {
                        v.push(Alert::Clear(Severity::Hard, value));
                    }
                    v.push(Alert::Clear(Severity::Soft, value));
                    state.breached = None;
                    (l, v)
                }
            };
            for a in alerts_now {
                let (kind, sev) = match a {
                    Alert::Breach(s, _) => (AlertKind::Breach, s),
                    Alert::Clear(s, _) => (AlertKind::Clear, s),
                };
                let n = if sev == Severity::Soft { &mut *soft_n } else { &mut *hard_n };
                if kind == AlertKind::Breach {
                    *n += 1;
                }
                let drivers = if m == Metric::Var && !row.contributors.is_empty() {
                    row.contributors.iter().take(3).cloned().collect()
                } else {
                    let mut sizes: Vec<(Decimal, Reverse<Symbol>)> =
                        sizes(names_of(holdings, gi, &st.held_symbols)).collect();
                    sizes.sort_unstable_by(|a, b| b.cmp(a));
                    sizes.into_iter().take(3).map(|(mv, Reverse(s))| (s, mv)).collect()
                };
                alerts.push(AlertRow {
                    group: row.group.clone(),
                    metric: m,
                    severity: sev,
                    seq: *n,
                    kind,
                    value,
                    level: {
                        let at = if kind == AlertKind::Clear { before.unwrap_or(limit) } else { limit };
                        if sev == Severity::Soft {
                            at.soft
                        } else {
                            at.hard
                        }
                    },
                    ts: row.ts,
                    drivers,
                });
            }
        }
    }
}

/// Touched groups fan out over threads past this many per thread (handing a shard to the pool and
/// learning it is done costs tens of µs).
const PARALLEL_GROUPS: usize = 128;

/// `x · r` for a row's multiplicity `r` (a negation for a retraction, no multiplication).
fn times(x: Decimal, r: isize) -> Decimal {
    match r {
        1 => x,
        -1 => -x,
        r => x * Decimal::from(r),
    }
}

/// One (group, symbol)'s position changes of the time, netted (none: a name to re-file).
#[derive(Default)]
struct Delta {
    from_positions: bool,
    positions: i64,
    qty: i64,
    mv: Decimal,
    total: Decimal,
    ts: Ts,
}

impl Delta {
    /// A position row taken `r` times (a retraction: −1).
    fn of_row(row: &PositionRow, r: isize) -> Delta {
        Delta {
            from_positions: true,
            positions: r as i64,
            qty: row.qty * r as i64,
            mv: times(row.market_value, r),
            total: times(row.total, r),
            ts: if r > 0 { row.last_fill_ts } else { 0 },
        }
    }

    /// Adds the position changes of `o`.
    fn absorb(&mut self, o: &Delta) {
        self.from_positions |= o.from_positions;
        self.positions += o.positions;
        self.qty += o.qty;
        self.mv += o.mv;
        self.total += o.total;
        self.ts = self.ts.max(o.ts);
    }
}

/// The largest names of a group by |MV| (ties: the smaller code): up to [`TOP`] of them with
/// their sizes, and a bound that every other name is at or below. The largest is the first of the
/// list while that is above the bound; only when every listed name has shrunk below it are the
/// names scanned again (a scan reads every name's entry in the holdings, a cache miss each).
#[derive(Clone, Debug, Default)]
struct Largest {
    /// Unordered.
    top: Vec<(Decimal, Reverse<Symbol>)>,
    /// Every name not in `top` is at most this; None: every name is in `top`.
    bound: Option<(Decimal, Reverse<Symbol>)>,
    /// The largest of `top`, as of the last [`Largest::find`].
    first: Option<(Decimal, Reverse<Symbol>)>,
}

/// Names a group's [`Largest`] keeps.
const TOP: usize = 8;

impl Largest {
    /// Name `s`'s |MV| went from `old` to `new` (None: not held, or zero).
    fn resize(&mut self, s: Symbol, old: Option<Decimal>, new: Option<Decimal>) {
        let new = new.map(|m| (m, Reverse(s)));
        if let Some(i) = self.top.iter().position(|e| e.1 .0 == s) {
            // Listed: its size stays exact.
            match new {
                Some(n) => self.top[i] = n,
                None => {
                    self.top.swap_remove(i);
                }
            }
            return;
        }
        // Not listed: it was at most the bound (if it was held at all), and stays unlisted
        // unless it grew past it.
        debug_assert!(old.is_none() || self.bound.is_some());
        let Some(n) = new else { return };
        if self.bound.is_some_and(|b| n <= b) {
            return;
        }
        self.top.push(n);
        if self.top.len() > TOP {
            let (i, smallest) = self.top.iter().enumerate().min_by_key(|(_, e)| **e).map(|(i, e)| (i, *e)).unwrap();
            self.top.swap_remove(i);
            self.bound = self.bound.max(Some(smallest));
        }
    }

    /// Lists the largest names again (from every name's size) when the list no longer shows
    /// the largest.
    fn find<I: Iterator<Item = (Decimal, Reverse<Symbol>)>>(&mut self, sizes: impl FnOnce() -> I) {
        let first = self.top.iter().max().copied();
        let known = match (first, self.bound) {
            (_, None) => true,
            (Some(f), Some(b)) => f > b,
            (None, Some(_)) => false,
        };
        self.first = if known {
            first
        } else {
            let mut all: Vec<(Decimal, Reverse<Symbol>)> = sizes().collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            self.bound = all.get(TOP).copied();
            all.truncate(TOP);
            self.top = all;
            self.top.first().copied()
        };
    }

    /// The largest (as of the last [`Largest::find`]).
    fn known(&self) -> Option<(Decimal, Reverse<Symbol>)> {
        self.first
    }
}

/// A group's names (group index `gi`, holding `held`), from the holdings.
fn names_of<'a>(
    holdings: &'a Holdings,
    gi: u32,
    held: &'a FxHashSet<Symbol>,
) -> impl Iterator<Item = (Symbol, &'a Name)> + 'a {
    held.iter().filter_map(move |s| holdings.get(s)?.get(&gi).map(|n| (*s, n)))
}

/// Every name's |MV| with its code, zero sizes left out.
fn sizes<'a, I: Iterator<Item = (Symbol, &'a Name)> + 'a>(
    names: I,
) -> impl Iterator<Item = (Decimal, Reverse<Symbol>)> + 'a {
    names.filter(|(_, n)| !n.added.mv.is_zero()).map(|(s, n)| (n.added.mv.abs(), Reverse(s)))
}

/// What refreshing a group reads besides the group's own state (shared by the threads).
struct Ctx<'a> {
    config: &'a RiskConfig,
    weights: &'a [f64],
    symbols: &'a FxHashMap<Symbol, SymbolInfo>,
    /// The sector names, by [`SectorId`].
    sector_names: &'a [Option<SmolStr>],
    z95: f64,
    z99: f64,
    gram: Option<&'a Gram>,
    /// The time's position changes, and each one's groups (desk, account, strategy).
    positions: &'a [(PositionRow, isize)],
    row_groups: &'a [[u32; 3]],
    shard_of: &'a [u16],
    /// Per group index: its place in its shard's work (read for touched groups only).
    rank: &'a [u32],
}

/// One shard's work: its number, its names, its names to re-file (instrument changes), its touched groups
/// (by index).
type Job<'a> = (usize, &'a mut Holdings, Vec<(u32, Symbol)>, Vec<(u32, &'a Group, &'a mut GroupState)>);

/// Appends one part's changes to `out` (an empty list is taken whole).
fn merge(out: &mut RiskChanges, p: RiskChanges) {
    fn append<T>(to: &mut Vec<T>, from: Vec<T>) {
        if to.is_empty() {
            *to = from;
        } else {
            to.extend(from);
        }
    }
    append(&mut out.retract, p.retract);
    append(&mut out.insert, p.insert);
    append(&mut out.alerts, p.alerts);
    append(&mut out.vols, p.vols);
}

impl Ctx<'_> {
    /// Runs one shard: its names take their changes, then its groups are refreshed.
    fn run(&self, (shard, holdings, refile, work): Job, scratch: &mut Vec<(f64, u32)>) -> RiskChanges {
        // Each (group, symbol)'s change of the time: netted position changes, or none (a name to
        // re-file because its instrument changed); found by its slot in `deltas`.
        let mut slots: FxHashMap<(u32, Symbol), u32> = FxHashMap::default();
        slots.reserve(work.len() + refile.len());
        let mut deltas: Vec<((u32, Symbol), Delta)> = Vec::with_capacity(work.len() + refile.len());
        let mut slot = |key: (u32, Symbol), deltas: &mut Vec<((u32, Symbol), Delta)>| {
            *slots.entry(key).or_insert_with(|| {
                deltas.push((key, Delta::default()));
                (deltas.len() - 1) as u32
            })
        };
        for key in refile {
            slot(key, &mut deltas);
        }
        // The slot each of a row's three groups (desk, account, strategy) took last: most often
        // the next row's too (a position's retraction and insertion are adjacent, and a mark's
        // rows all name its symbol, so the desk's is the same throughout), found without a hash.
        let mut last: [Option<((u32, Symbol), u32)>; 3] = [None; 3];
        let rows = self.positions;
        let mut i = 0;
        while i < rows.len() {
            let (row, groups) = (&rows[i].0, &self.row_groups[i]);
            // A position's retraction and insertion (adjacent: same groups, same symbol) are
            // netted first, so that each of its groups takes one decimal addition per sum.
            let start = i;
            i += 1;
            while i < rows.len() && self.row_groups[i] == *groups && rows[i].0.key.symbol == row.key.symbol {
                i += 1;
            }
            if groups.iter().all(|&g| self.shard_of[g as usize] as usize != shard) {
                continue;
            }
            let mut change = Delta::of_row(row, rows[start].1);
            for (row, r) in &rows[start + 1..i] {
                change.absorb(&Delta::of_row(row, *r));
            }
            for (j, &g) in groups.iter().enumerate() {
                if self.shard_of[g as usize] as usize != shard {
                    continue;
                }
                let key = (g, row.key.symbol);
                let i = match last[j] {
                    Some((k, i)) if k == key => i,
                    _ => {
                        let i = slot(key, &mut deltas);
                        last[j] = Some((key, i));
                        i
                    }
                };
                deltas[i as usize].1.absorb(&change);
            }
        }
        // Each group's changes together and in symbol order (so the float sums do not depend on
        // hashing): counted out by the group's place in the work (which is in group order and
        // holds every group with a change), then each group's few sorted by symbol.
        let mut start = vec![0u32; work.len() + 1];
        for ((g, _), _) in &deltas {
            start[self.rank[*g as usize] as usize + 1] += 1;
        }
        for k in 1..start.len() {
            start[k] += start[k - 1];
        }
        let mut order = vec![0u32; deltas.len()];
        let mut next = start.clone();
        for (i, ((g, _), _)) in deltas.iter().enumerate() {
            let k = self.rank[*g as usize] as usize;
            debug_assert!(work.get(k).is_some_and(|w| w.0 == *g), "a group with a change is touched");
            order[next[k] as usize] = i as u32;
            next[k] += 1;
        }
        let mut part = RiskChanges {
            insert: Vec::with_capacity(work.len()),
            retract: Vec::with_capacity(work.len()),
            ..RiskChanges::default()
        };
        for (k, (gi, g, st)) in work.into_iter().enumerate() {
            let mine = &mut order[start[k] as usize..start[k + 1] as usize];
            if mine.len() > 1 {
                mine.sort_unstable_by_key(|&i| deltas[i as usize].0 .1);
            }
            let mine = mine.iter().map(|&i| {
                let ((_, s), d) = &mut deltas[i as usize];
                (*s, std::mem::take(d))
            });
            self.refresh(holdings, gi, g, mine, st, scratch, &mut part);
        }
        part
    }

    /// Applies the group's changes to its names (group index `gi`; `changes` in symbol order)
    /// and re-files them in its aggregates, then gives its new row (when it changed) and the
    /// alerts of its limits.
    #[allow(clippy::too_many_arguments)]
    fn refresh(
        &self,
        holdings: &mut Holdings,
        gi: u32,
        g: &Group,
        changes: impl Iterator<Item = (Symbol, Delta)>,
        st: &mut GroupState,
        scratch: &mut Vec<(f64, u32)>,
        out: &mut RiskChanges,
    ) {
        let (mut total, mut ts) = (Decimal::ZERO, 0);
        let contributors = self.config.contributors > 0 && self.config.contributor_scopes.contains(&g.kind());
        let mut changed = 0u32;
        for (s, d) in changes {
            let info = self.symbols.get(&s);
            let table = holdings.entry(s).or_default();
            let (name, created) = match table.entry(gi) {
                Entry::Occupied(e) => (e.into_mut(), false),
                Entry::Vacant(e) => (e.insert(Name::default()), true),
            };
            name.positions = (name.positions as i64 + d.positions).max(0) as u32;
            name.qty += d.qty;
            name.mv += d.mv;
            name.total += d.total;
            let old = std::mem::take(&mut name.added);
            let new = Name::contribution(name, &old, info);
            let gone = name.positions == 0 && name.qty == 0 && name.mv.is_zero();
            st.positions = (st.positions as i64 + d.positions).max(0) as u32;
            total += d.total;
            if d.from_positions {
                ts = ts.max(d.ts).max(info.map_or(0, |i| i.mark_ts));
            }
            if created {
                st.held_symbols.insert(s);
            }
            RiskBook::refile(st, s, &old, &new, &self.config.history, self.weights, self.sector_names);
            if contributors && new.w != old.w {
                // After the dₖ moved by r_{k,s}·Δw: every held uₜ moves by C(t, s)·Δw.
                self.track(st, s, new.w - old.w, new.w, &mut changed);
            }
            if gone {
                st.held_symbols.remove(&s);
                table.remove(&gi);
                if table.is_empty() {
                    // No group of this shard holds the symbol any more.
                    holdings.remove(&s);
                }
            } else {
                name.added = new;
            }
        }
        let holdings: &Holdings = holdings;
        if contributors && st.u_stale {
            for (s, held) in st.w.iter_mut() {
                held.u = self.u_of(*s, &st.d);
            }
            (st.u_stale, st.u_updates) = (false, 0);
        }
        if st.sum_sq_lost {
            // Back to exact sums once they fit again.
            if let Some(q) = exact_sum_sq(names_of(holdings, gi, &st.held_symbols)) {
                (st.sum_sq, st.sum_sq_lost) = (q, false);
            }
        }
        st.total += total;
        st.ts = st.ts.max(ts);
        st.drawdown.update(st.total);
        // A group keeps its row once it has one, even when its positions are all gone (busted):
        // its drawdown history and limit states live on (and are checkpointed from the row).
        st.largest.find(|| sizes(names_of(holdings, gi, &st.held_symbols)));
        let tails = if st.d.is_empty() { (0.0, 0.0, 0.0, 0.0) } else { st.tail.tails(&st.d, scratch) };
        let row = self.row_of(holdings, gi, g, st, tails);
        RiskBook::judge(&self.config.limits, st, &row, holdings, gi, &mut out.alerts);
        // (The fields a change moves most often first: a refresh changes most rows, and the
        // derived comparison starts with the group's name, which never differs.)
        let differs = |shown: &RiskRow| shown.ts != row.ts || shown.gross != row.gross || *shown != row;
        if st.shown.as_ref().is_none_or(differs) {
            if let Some(old) = st.shown.take() {
                out.retract.push(old);
            }
            out.insert.push(row.clone());
            st.shown = Some(row);
        }
    }

    /// Name `s` of a group showing contributors moved by `dw` to `w` (its dₖ already moved):
    /// updates every held name's u by C(·, s)·dw (or marks them to be recomputed, past
    /// [`BULK_CHANGES`] names in one refresh or [`RESYNC_UPDATES`] updates), and files `s`.
    fn track(&self, st: &mut GroupState, s: Symbol, dw: f64, w: f64, changed: &mut u32) {
        let h = &self.config.history;
        let idx = h.index(s);
        *changed += 1;
        match self.gram {
            Some(gram) if !st.u_stale && *changed <= BULK_CHANGES && st.u_updates < RESYNC_UPDATES => {
                if let Some(j) = idx {
                    let col = gram.column(j, h, self.weights);
                    for held in st.w.values_mut() {
                        if let Some(t) = held.idx {
                            held.u += col[t as usize] * dw;
                        }
                    }
                    st.u_updates += 1;
                }
            }
            _ => st.u_stale = true,
        }
        if w == 0.0 {
            st.w.remove(&s);
        } else {
            match st.w.entry(s) {
                Entry::Occupied(mut e) => e.get_mut().w = w,
                Entry::Vacant(e) => {
                    let u = if st.u_stale { 0.0 } else { self.u_of(s, &st.d) };
                    e.insert(Held { w, idx, u });
                }
            }
        }
    }

    /// uₛ = Σₖ aₖ·r_{k,s}·dₖ from the scenario P&Ls `d` (0 without history).
    fn u_of(&self, s: Symbol, d: &[f64]) -> f64 {
        self.config.history.returns(s).map_or(0.0, |r| weighted_dot(self.weights, r, d))
    }

    /// The row of a group from its state and its historical tails (VaR 95%, ES 95%, VaR 99%, ES 99%).
    fn row_of(
        &self,
        holdings: &Holdings,
        gi: u32,
        g: &Group,
        st: &GroupState,
        (hv95, es95, hv99, es99): (f64, f64, f64, f64),
    ) -> RiskRow {
        let cfg = self.config;
        let e = st.exposure;
        let nav = match g {
            Group::Desk => cfg.desk_nav,
            Group::Account(a) => cfg.nav.get(a).copied(),
            Group::Strategy(_) => None,
        };
        let gross_cents = cents_of(e.gross);
        let (largest, hhi, sectors) = if e.gross.is_zero() {
            (None, Decimal::ZERO, SectorWeights::default())
        } else {
            let gross = f64_of(e.gross);
            let largest = st.largest.known().map(|(mv, Reverse(s))| (s, weight(mv, gross)));
            let hhi = hhi(st, gross_cents, || names_of(holdings, gi, &st.held_symbols));
            let sectors = st.sectors.shares(gross, self.sector_names);
            (largest, hhi, sectors)
        };
        // Parametric: wᵀΣw = λ·Σ aₖdₖ² + (1−λ)·d_t² (d_t² alone without history).
        let lambda = cfg.lambda;
        let variance = if self.weights.is_empty() || st.d.is_empty() {
            if self.weights.is_empty() {
                st.today * st.today
            } else {
                (1.0 - lambda) * st.today * st.today
            }
        } else {
            let squares = st.squares.unwrap_or_else(|| weighted_squares(self.weights, &st.d));
            lambda * squares + (1.0 - lambda) * st.today * st.today
        };
        let sigma = variance.max(0.0).sqrt();
        let h = cfg.horizon_days.max(0.0).sqrt();
        let contributors = if cfg.contributors > 0 && cfg.contributor_scopes.contains(&g.kind()) && sigma > 0.0 {
            let mut c: Vec<(Symbol, f64)> =
                st.w.iter()
                    .map(|(&s, held)| {
                        let w = held.w;
                        let mut sw = lambda * held.u;
                        let ret = self.symbols.get(&s).map_or(0.0, |i| i.ret);
                        sw += if self.weights.is_empty() { ret * st.today } else { (1.0 - lambda) * ret * st.today };
                        (s, w * sw / sigma * self.z99)
                    })
                    .collect();
            // The largest first (ties: the smaller code): the top ones selected, then sorted.
            let order = |a: &(Symbol, f64), b: &(Symbol, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if c.len() > cfg.contributors {
                c.select_nth_unstable_by(cfg.contributors - 1, order);
                c.truncate(cfg.contributors);
            }
            c.sort_unstable_by(order);
            c.into_iter().map(|(s, v)| (s, cents(v))).collect()
        } else {
            Vec::new()
        };
        RiskRow {
            group: g.clone(),
            names: st.held,
            long_mv: e.long,
            short_mv: e.short,
            gross: e.gross,
            net: e.net,
            nav,
            leverage: nav.and_then(|n| e.leverage(n)).map(ratio),
            largest,
            hhi,
            sectors,
            max_lots: st.max_lots,
            var_95: cents(sigma * self.z95),
            var_99: cents(sigma * self.z99),
            var_95_horizon: cents(sigma * self.z95 * h),
            var_99_horizon: cents(sigma * self.z99 * h),
            hist_var_95: cents(hv95),
            hist_var_99: cents(hv99),
            es_95: cents(es95),
            es_99: cents(es99),
            contributors,
            total_pnl: st.total,
            peak_pnl: st.drawdown.peak.unwrap_or(st.total),
            drawdown: st.drawdown.current,
            max_drawdown: st.drawdown.max,
            ts: st.ts,
        }
    }
}

/// The volatility row of `s` with today's return `ret`: σ² = λ·Σₖ aₖ·rₖ² + (1−λ)·ret² (ret² alone
/// without history).
fn vol_row(s: Symbol, h: &History, weights: &[f64], lambda: f64, ret: f64, ts: Ts) -> VolRow {
    let var = match h.returns(s) {
        Some(r) if !weights.is_empty() => {
            lambda * weights.iter().zip(r.iter()).map(|(a, x)| a * x * x).sum::<f64>() + (1.0 - lambda) * ret * ret
        }
        // As Σ has it: without this symbol's history but with the others', today's move weighs 1−λ.
        None if !weights.is_empty() => (1.0 - lambda) * ret * ret,
        _ => ret * ret,
    };
    let six = |x: f64| fixed(x, RATIO_DP);
    let daily = var.max(0.0).sqrt();
    VolRow {
        symbol: s,
        daily: six(daily),
        annual: six(daily * 252f64.sqrt()),
        today: six(ret),
        // A proxied symbol's σ is its proxy's, with 0 days of its own.
        days: if h.has_own(s) { h.returns(s).map_or(0, |r| r.len() as u32) } else { 0 },
        ts,
    }
}

/// Σw² from the exact Σ(|MV| in cents)² (over the gross in cents, squared, through f64 like
/// the weights), else from the names in f64 (amounts beyond about 10¹⁷ HKD).
fn hhi<'a, I: Iterator<Item = (Symbol, &'a Name)>>(
    st: &GroupState,
    gross_cents: i128,
    names: impl Fn() -> I,
) -> Decimal {
    if gross_cents == 0 {
        return Decimal::ZERO;
    }
    let g = gross_cents as f64;
    let sum_sq = if st.sum_sq_lost { exact_sum_sq(names()) } else { Some(st.sum_sq) };
    match sum_sq {
        Some(q) => share(q as f64 / g, g),
        None => {
            let h: f64 = names().map(|(_, n)| (n.added.abs_cents as f64 / g).powi(2)).sum();
            ratio(Decimal::from_f64(h).unwrap_or_default())
        }
    }
}

/// Σ (|MV| in cents)² over the names, `None` when it does not fit an i128.
fn exact_sum_sq<'a>(mut names: impl Iterator<Item = (Symbol, &'a Name)>) -> Option<i128> {
    names.try_fold(0i128, |q, (_, n)| q.checked_add(n.added.abs_cents.checked_mul(n.added.abs_cents)?))
}

/// |x| rounded to the cent (half to even, as `round_dp`), in whole cents.
fn cents_of(x: Decimal) -> i128 {
    let r = x.abs().round_dp(2);
    r.mantissa() * if r.scale() == 2 { 1 } else { 10i128.pow(2 - r.scale()) }
}

/// Σₖ aₖ·dₖ², in four running sums (so the loop vectorizes; the order is fixed, so the result
/// does not depend on anything but `a` and `d`).
fn weighted_squares(a: &[f64], d: &[f64]) -> f64 {
    let n = a.len().min(d.len());
    let (a, d) = (&a[..n], &d[..n]);
    let mut acc = [0.0f64; 4];
    let (ac, dc) = (a.chunks_exact(4), d.chunks_exact(4));
    let rest: f64 = ac.remainder().iter().zip(dc.remainder()).map(|(a, d)| a * d * d).sum();
    for (a, d) in ac.zip(dc) {
        for i in 0..4 {
            acc[i] += a[i] * d[i] * d[i];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// Moves the scenario P&Ls `d` by `r·dw` and gives Σₖ aₖ·dₖ² of the result, summed exactly as
/// [`weighted_squares`] sums it (in the same pass: `d` is read once per change); None when `a`
/// and `d` differ in length.
fn move_scenarios(d: &mut [f64], r: &[f64], dw: f64, a: &[f64]) -> Option<f64> {
    if a.len() != d.len() || r.len() != d.len() {
        for (d, rk) in d.iter_mut().zip(r.iter()) {
            *d += rk * dw;
        }
        return None;
    }
    let mut acc = [0.0f64; 4];
    let (mut dc, rc, ac) = (d.chunks_exact_mut(4), r.chunks_exact(4), a.chunks_exact(4));
    let (r_rest, a_rest) = (rc.remainder(), ac.remainder());
    for ((d, r), a) in (&mut dc).zip(rc).zip(ac) {
        for i in 0..4 {
            d[i] += r[i] * dw;
            acc[i] += a[i] * d[i] * d[i];
        }
    }
    let d_rest = dc.into_remainder();
    for (d, rk) in d_rest.iter_mut().zip(r_rest) {
        *d += rk * dw;
    }
    let rest: f64 = a_rest.iter().zip(d_rest.iter()).map(|(a, d)| a * d * d).sum();
    Some((acc[0] + acc[1]) + (acc[2] + acc[3]) + rest)
}

/// The scenarios whose losses −dₖ can be among a group's tails: the m largest (about twice the
/// tails' length) when every scenario was last looked at, the smallest of them `cut`, and how far
/// any dₖ may have moved since (`moved`, Σ max|r|·|Δw| over the changes).
///
/// A scenario left out had a loss of at most `cut` then, so at most `cut + moved` now. While the
/// k-th largest loss among the candidates (k the longer tail's length) is above that, no
/// scenario left out can be among the k largest, and the tails taken from the candidates are
/// exactly those of every scenario (the same values, summed in the same order, largest first).
/// A refresh then reads a few dozen dₖ instead of all of them, and sorts them from the order they
/// had at the last refresh (a few small moves leave them nearly sorted: an insertion sort is a
/// pass); the candidates are chosen again, from every scenario, once the moves add up past the
/// gap between the tail and the cut.
#[derive(Clone, Debug, Default)]
struct TailCandidates {
    /// Candidate scenarios, by their losses at the last refresh (largest first); empty: none
    /// chosen yet.
    idx: Vec<u32>,
    cut: f64,
    moved: f64,
    /// Moves added to `moved` since the candidates were chosen (each can round dₖ by an ulp).
    moves: u32,
}

impl TailCandidates {
    /// Forgets the candidates (the next selection looks at every scenario).
    fn reset(&mut self) {
        self.idx.clear();
        (self.moved, self.moves) = (0.0, 0);
    }

    /// Every dₖ moved by at most `x`.
    fn move_by(&mut self, x: f64) {
        self.moved += x;
        self.moves = self.moves.saturating_add(1);
    }

    /// Historical VaR and expected shortfall at 95% and 99% of the losses −dₖ of scenario P&Ls
    /// `d`: the k-th largest loss and the mean of the k largest, k = ⌈n(1−c)⌉ (the means summed
    /// largest first, as a selection over every loss gives them).
    fn tails(&mut self, d: &[f64], scratch: &mut Vec<(f64, u32)>) -> (f64, f64, f64, f64) {
        let n = d.len();
        let k = tail_len(n, 0.95).max(tail_len(n, 0.99));
        if self.idx.len() >= k {
            scratch.clear();
            scratch.extend(self.idx.iter().map(|&i| (-d[i as usize], i)));
            insertion_sort_desc(scratch);
            for (i, &(_, s)) in self.idx.iter_mut().zip(scratch.iter()) {
                *i = s;
            }
            // With slack for the rounding of the moves: each rounds a dₖ (and `moved`) by
            // about an ulp of their size.
            let size = self.cut.abs() + self.moved;
            let slack = 1e-9 * (size + 1.0) + 4.0 * f64::EPSILON * size * f64::from(self.moves);
            let bound = self.cut + self.moved + slack;
            if scratch[k - 1].0 >= bound || self.idx.len() == n {
                return sorted_tails(scratch, n);
            }
        }
        // Every scenario: the candidates are the m largest losses.
        let m = (2 * k + 8).min(n);
        scratch.clear();
        scratch.extend(d.iter().enumerate().map(|(i, x)| (-x, i as u32)));
        if m < n {
            scratch.select_nth_unstable_by(m - 1, |a, b| b.0.total_cmp(&a.0));
            scratch.truncate(m);
        }
        scratch.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        self.idx.clear();
        self.idx.extend(scratch.iter().map(|&(_, i)| i));
        self.cut = if m < n { scratch[m - 1].0 } else { f64::NEG_INFINITY };
        (self.moved, self.moves) = (0.0, 0);
        sorted_tails(scratch, n)
    }
}

/// Sorts `v` by its losses, largest first: a pass when it is nearly so already.
fn insertion_sort_desc(v: &mut [(f64, u32)]) {
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && v[j - 1].0.total_cmp(&x.0).is_lt() {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = x;
    }
}

/// The tails of `n` losses from the largest of them, sorted (largest first; at least the longer
/// tail's length of them).
fn sorted_tails(top: &[(f64, u32)], n: usize) -> (f64, f64, f64, f64) {
    let (k95, k99) = (tail_len(n, 0.95), tail_len(n, 0.99));
    let mean = |m: usize| top[..m].iter().map(|x| x.0).sum::<f64>() / m as f64;
    (top[k95 - 1].0, mean(k95), top[k99 - 1].0, mean(k99))
}

/// The tails of every loss in `losses` (reordered), as [`TailCandidates::tails`] gives them:
/// for tests.
#[cfg(test)]
fn select_tails(losses: &mut [f64], n: usize) -> (f64, f64, f64, f64) {
    losses.sort_unstable_by(|a, b| b.total_cmp(a));
    let top: Vec<(f64, u32)> = losses.iter().map(|&x| (x, 0)).collect();
    sorted_tails(&top, n)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn a_day_without_a_close_keeps_the_move_for_the_next_close() {
        // 00700 suspended on day 2: 100 → (none) → 110. 00005 trades every day.
        let h = History::from_closes([
            (1, Symbol(700), 100.0),
            (3, Symbol(700), 110.0),
            (1, Symbol(5), 50.0),
            (2, Symbol(5), 51.0),
            (3, Symbol(5), 50.0),
            // A symbol listed on day 2.
            (2, Symbol(9988), 80.0),
            (3, Symbol(9988), 88.0),
        ]);
        assert_eq!(h.days(), 2);
        assert_eq!(h.returns(Symbol(700)).unwrap(), &[0.0, 110.0 / 100.0 - 1.0]);
        assert_eq!(h.returns(Symbol(5)).unwrap(), &[51.0 / 50.0 - 1.0, 50.0 / 51.0 - 1.0]);
        // Day 2 before 9988's first return: the market's (5's only observed return that day).
        assert_eq!(h.returns(Symbol(9988)).unwrap(), &[51.0 / 50.0 - 1.0, 88.0 / 80.0 - 1.0]);
        assert_eq!(h.prev_close(Symbol(700)), Some(110.0));
    }

    #[test]
    fn a_symbol_listed_inside_the_window_takes_the_market_scaled_to_its_own_volatility() {
        // Two symbols every day of 12; 9988 listed on day 5 and twice as volatile as the market.
        let moves = [0.01, -0.02, 0.015, -0.005, 0.02, -0.01, 0.005, -0.015, 0.01, 0.0, -0.01];
        let mut closes = Vec::new();
        let (mut a, mut b, mut c) = (100.0, 50.0, 80.0);
        closes.push((0, Symbol(700), a));
        closes.push((0, Symbol(5), b));
        for (d, m) in moves.iter().enumerate() {
            let d = d + 1;
            // 700 and 5 move by m ± 0.002 (their mean is m exactly).
            a *= 1.0 + m + 0.002;
            b *= 1.0 + m - 0.002;
            closes.push((d, Symbol(700), a));
            closes.push((d, Symbol(5), b));
            if d == 4 {
                closes.push((d, Symbol(9988), c));
            } else if d > 4 {
                c *= 1.0 + 2.0 * m;
                closes.push((d, Symbol(9988), c));
            }
        }
        let h = History::from_closes(closes);
        assert_eq!(h.days(), 11);
        let r = h.returns(Symbol(9988)).unwrap();
        let own = &r[4..];
        for (x, m) in own.iter().zip(&moves[4..]) {
            assert!((x - 2.0 * m).abs() < 1e-12, "{x} {m}");
        }
        // The four days before its first return: 2 × the market's return (own σ / market σ = 2).
        for (x, m) in r[..4].iter().zip(&moves[..4]) {
            assert!((x - 2.0 * m).abs() < 1e-9, "{x} {m}");
        }
        // Symbols with every day keep their own returns.
        assert!((h.returns(Symbol(700)).unwrap()[0] - 0.012).abs() < 1e-12);
    }
}
