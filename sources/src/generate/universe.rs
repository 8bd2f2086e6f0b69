//! The instruments of a generated day: ten real Hong Kong large caps (board lots as published, rough
//! 2025–26 price levels, see ../shared/HKEX.md §2), then synthetic codes from 10001 across price bands.
//!
//! Prices here are integers in units of the spread grid (see [`super::walk::Grid`]); nothing uses
//! floating point for a price, so the output does not depend on the platform's maths library.

use harbour_dataflows::model::{Instrument, Symbol};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::walk::Grid;

/// One listed instrument with what the random walk needs.
pub(crate) struct Listing {
    /// Reference data, sent first.
    pub instrument: Instrument,
    /// Lower end of the usual price range, in grid units.
    pub lo: i64,
    /// Upper end of the usual price range, in grid units.
    pub hi: i64,
    /// Daily volatility in basis points.
    pub vol_bp: u32,
}

/// Code, short name, board lot, price range in HK$ (whole dollars), sector, stamp duty, volatility (bp).
type Real = (u32, &'static str, i64, (i64, i64), &'static str, bool, u32);

#[rustfmt::skip]
const REAL: [Real; 10] = [
    (700, "TENCENT", 100, (380, 520), "Information Technology", true, 200),
    (5, "HSBC HOLDINGS", 400, (60, 100), "Financials", true, 120),
    (9988, "BABA-W", 100, (80, 140), "Consumer Discretionary", true, 300),
    (941, "CHINA MOBILE", 500, (70, 90), "Telecommunications", true, 100),
    (1299, "AIA", 200, (55, 80), "Financials", true, 180),
    (2318, "PING AN", 500, (40, 60), "Financials", true, 200),
    (3690, "MEITUAN-W", 100, (100, 160), "Consumer Discretionary", true, 350),
    (388, "HKEX", 100, (250, 400), "Financials", true, 200),
    (1, "CKH HOLDINGS", 500, (40, 50), "Conglomerates", true, 150),
    (2800, "TRACKER FUND", 500, (20, 27), "Exchange Traded Funds", false, 100),
];

/// Price bands of synthetic listings, in thousandths of a HK$: (low, high, relative weight).
const BANDS: [(i64, i64, u32); 9] = [
    (20, 240, 2),          // penny stocks, tick 0.001
    (260, 490, 2),         // tick 0.005
    (500, 9_900, 6),       // tick 0.01
    (10_100, 19_900, 4),   // tick 0.01
    (20_100, 49_900, 4),   // tick 0.02
    (50_500, 99_500, 3),   // tick 0.05
    (101_000, 199_000, 2), // tick 0.10
    (202_000, 498_000, 2), // tick 0.20
    (505_000, 990_000, 1), // tick 0.50
];

const FIRST: [&str; 12] = [
    "HARBOUR",
    "PEARL",
    "JADE",
    "VICTORIA",
    "KOWLOON",
    "LANTAU",
    "STAR FERRY",
    "DRAGON",
    "LION ROCK",
    "SAMPAN",
    "TSING YI",
    "SHA TIN",
];
const SECOND: [&str; 10] =
    ["HOLDINGS", "GROUP", "TECH", "PPT", "ENERGY", "BIO-B", "INTL", "LOGISTICS", "FIN", "RETAIL"];
const SECTORS: [&str; 11] = [
    "Financials",
    "Properties & Construction",
    "Information Technology",
    "Consumer Discretionary",
    "Consumer Staples",
    "Industrials",
    "Healthcare",
    "Energy",
    "Materials",
    "Utilities",
    "Telecommunications",
];

/// Code of the `i`-th synthetic listing (0-based); never 99999, which the invalid lines use.
fn synthetic_code(i: usize) -> u32 {
    10_001 + u32::try_from(i).expect("symbols are capped")
}

fn instrument(code: u32, name: String, lot: i64, sector: &str, stamp_duty: bool) -> Instrument {
    Instrument {
        symbol: Symbol(code),
        name,
        lot_size: lot,
        currency: "HKD".into(),
        sector: Some(sector.into()),
        stamp_duty,
        spread_table: None,
    }
}

/// The first `n` listings: the real large caps, then synthetic ones drawn from `rng`.
pub(crate) fn universe(n: usize, grid: &Grid, rng: &mut ChaCha8Rng) -> Vec<Listing> {
    let mut out = Vec::with_capacity(n);
    for &(code, name, lot, (lo, hi), sector, duty, vol_bp) in REAL.iter().take(n) {
        out.push(Listing {
            instrument: instrument(code, name.into(), lot, sector, duty),
            lo: grid.thousandths(lo * 1000),
            hi: grid.thousandths(hi * 1000),
            vol_bp,
        });
    }
    let total: u32 = BANDS.iter().map(|b| b.2).sum();
    for i in 0..n.saturating_sub(REAL.len()) {
        let mut pick = rng.random_range(0..total);
        let &(lo, hi, _) = BANDS
            .iter()
            .find(|b| {
                let hit = pick < b.2;
                pick = pick.saturating_sub(b.2);
                hit
            })
            .expect("weights cover the range");
        // Cheap stocks trade in big lots, dear ones in small.
        let lots: &[i64] = match lo {
            ..500 => &[1000, 2000],
            500..10_000 => &[500, 1000, 2000],
            10_000..100_000 => &[100, 200, 400, 500, 1000],
            _ => &[100, 200],
        };
        let lot = lots[rng.random_range(0..lots.len())];
        let name = format!("{} {}", FIRST[rng.random_range(0..FIRST.len())], SECOND[rng.random_range(0..SECOND.len())]);
        let sector = SECTORS[rng.random_range(0..SECTORS.len())];
        let vol_bp = if lo < 500 { rng.random_range(400..=800) } else { rng.random_range(150..=450) };
        out.push(Listing {
            instrument: instrument(synthetic_code(i), name, lot, sector, true),
            lo: grid.thousandths(lo),
            hi: grid.thousandths(hi),
            vol_bp,
        });
    }
    out
}
