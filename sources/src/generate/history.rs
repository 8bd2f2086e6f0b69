//! A plausible close history for the generated day's symbols: the days before the sample day,
//! ending at each symbol's opening price (yesterday's close), for the risk book's volatility,
//! correlation and historical VaR.
//!
//! Daily log returns are a market factor, a sector factor and the name's own noise, scaled to the
//! listing's volatility (correlations of about 0.3 across the market, 0.5 within a sector). Walked
//! backwards from the opening price, so the newest close is exactly the price the day starts at.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use harbour_dataflows::model::Symbol;
use harbour_dataflows::ticks::SpreadTables;

use super::{Day, GenerateConfig, GenerateError};

/// `days` weekday closes before `cfg.date`, oldest first, as `(date, symbol, close)` rows, for
/// the day generated on the spread tables `spreads`.
pub fn history(
    cfg: &GenerateConfig,
    spreads: &SpreadTables,
    days: usize,
) -> Result<Vec<(NaiveDate, Symbol, Decimal)>, GenerateError> {
    let day = Day::with_spreads(cfg, spreads)?;
    let opening = day.opening();
    let mut dates = Vec::with_capacity(days);
    let mut d = cfg.date;
    while dates.len() < days {
        d -= Duration::days(1);
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            dates.push(d);
        }
    }
    dates.reverse();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(6);
    let sectors: Vec<&str> = {
        let mut s: Vec<&str> = opening.iter().map(|o| o.2.as_str()).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    // Walk back from the opening price: close[t−1] = close[t] / exp(r[t]).
    let mut closes: Vec<f64> = opening.iter().map(|o| o.1).collect();
    let mut out = Vec::with_capacity(days * opening.len());
    for (i, date) in dates.iter().enumerate().rev() {
        for (s, (symbol, _, _, _)) in opening.iter().enumerate() {
            let c = Decimal::from_f64_retain(closes[s]).unwrap_or_default().round_dp(3);
            out.push((*date, *symbol, c));
        }
        if i == 0 {
            break;
        }
        let market = normal(&mut rng);
        let sector: Vec<f64> = sectors.iter().map(|_| normal(&mut rng)).collect();
        for (s, (_, _, sec, vol)) in opening.iter().enumerate() {
            let k = sectors.binary_search(&sec.as_str()).unwrap_or(0);
            let z = 0.55 * market + 0.45 * sector[k] + 0.70 * normal(&mut rng);
            let r = z / (0.55f64.powi(2) + 0.45f64.powi(2) + 0.70f64.powi(2)).sqrt() * vol;
            closes[s] /= r.exp();
        }
    }
    out.reverse();
    out.sort_by_key(|r| (r.0, r.1));
    Ok(out)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_at_the_opening_price_and_is_deterministic() {
        let cfg = GenerateConfig { fills: 100, ..GenerateConfig::default() };
        let spreads = SpreadTables::default();
        let h = history(&cfg, &spreads, 30).unwrap();
        assert_eq!(h, history(&cfg, &spreads, 30).unwrap());
        let open = Day::new(&cfg).unwrap().opening();
        assert_eq!(h.len(), 30 * open.len());
        let last_date = h.last().unwrap().0;
        assert!(last_date < cfg.date);
        for (symbol, price, _, _) in &open {
            let last = h.iter().rev().find(|r| r.1 == *symbol).unwrap();
            assert_eq!(last.0, last_date);
            assert_eq!(last.2, Decimal::from_f64_retain(*price).unwrap().round_dp(3));
        }
        assert!(h.iter().all(|r| r.2 > Decimal::ZERO));
        // Prices move: not every close of a symbol is the same.
        let first = &open[0].0;
        let mut px: Vec<Decimal> = h.iter().filter(|r| r.1 == *first).map(|r| r.2).collect();
        px.dedup();
        assert!(px.len() > 20);
    }
}
