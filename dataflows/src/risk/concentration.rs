//! Concentration: how much of the gross exposure sits in one name or one sector.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

/// Weights are |MV| / gross exposure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Concentration<K> {
    /// The largest single-name weight and its name (`None` when flat).
    pub largest: Option<(K, Decimal)>,
    /// Weight per sector (positions without a sector under `None`).
    pub sectors: BTreeMap<Option<String>, Decimal>,
    /// Herfindahl–Hirschman index Σw² (1 = one name; 1/n = n equal names).
    pub hhi: Decimal,
}

/// Concentration of `(name, sector, market value)` rows (one per name: sum positions in the
/// same name first). Ties on the largest weight go to the smaller name.
pub fn concentration<K: Ord + Clone>(rows: &[(K, Option<String>, Decimal)]) -> Concentration<K> {
    let gross: Decimal = rows.iter().map(|(_, _, mv)| mv.abs()).sum();
    let mut c = Concentration { largest: None, sectors: BTreeMap::new(), hhi: Decimal::ZERO };
    if gross.is_zero() {
        return c;
    }
    for (name, sector, mv) in rows {
        let w = mv.abs() / gross;
        *c.sectors.entry(sector.clone()).or_default() += w;
        c.hhi += w * w;
        let better = match &c.largest {
            None => true,
            Some((n, lw)) => w > *lw || (w == *lw && name < n),
        };
        if better {
            c.largest = Some((name.clone(), w));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn three_names_two_sectors_by_hand() {
        let rows = vec![
            ("00700", Some("IT".to_string()), dec!(500000)),
            ("00005", Some("Financials".to_string()), dec!(-300000)),
            ("00388", Some("Financials".to_string()), dec!(200000)),
        ];
        let c = concentration(&rows);
        // gross 1,000,000: weights 0.5, 0.3, 0.2.
        assert_eq!(c.largest, Some(("00700", dec!(0.5))));
        assert_eq!(c.sectors[&Some("IT".to_string())], dec!(0.5));
        assert_eq!(c.sectors[&Some("Financials".to_string())], dec!(0.5));
        assert_eq!(c.hhi, dec!(0.38)); // 0.25 + 0.09 + 0.04
        let equal = concentration(&[
            ("a", None, dec!(10)),
            ("b", None, dec!(-10)),
            ("c", None, dec!(10)),
            ("d", None, dec!(10)),
        ]);
        assert_eq!(equal.hhi, dec!(0.25));
        assert_eq!(equal.largest, Some(("a", dec!(0.25))));
        assert_eq!(concentration::<&str>(&[]).largest, None);
    }
}
