//! Concentration: how much of the gross exposure sits in one name or one sector.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

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

/// A group's weight per sector (`None`: instruments without a sector), in the order of the
/// sectors' names: a list of `(sector, weight)` pairs, ordered and serialized as one. The names
/// are shared between the rows a group shows (they change only when the group's set of sectors
/// does), so a row costs its weights alone; and the weights are kept as integers at one scale
/// (a row's are all to the same places), so that making, comparing and hashing a row's weights
/// handles no decimal (building a dozen decimals for each row cost a tenth of a risk refresh).
#[derive(Clone, Debug, Default)]
pub struct SectorWeights {
    names: Arc<[Option<SmolStr>]>,
    /// Each weight as its mantissa at `scale` places.
    weights: Arc<[i64]>,
    scale: u32,
}

impl SectorWeights {
    /// `weights[i]` is the weight of `names[i]`; `names` sorted and distinct, as each sector once.
    /// The weights are kept at the largest scale among them, or at the most places at which
    /// every mantissa fits an i64 (rounded half to even there: a share of one at more than 18
    /// places, or a weight past 9·10¹⁸ at any scale; the book's weights have 6 places).
    ///
    /// # Panics
    /// When the lengths differ.
    pub fn new(names: Arc<[Option<SmolStr>]>, weights: &[Decimal]) -> SectorWeights {
        assert_eq!(names.len(), weights.len(), "a weight per sector");
        let mut scale = weights.iter().map(|w| w.scale()).max().unwrap_or(0);
        loop {
            let fit: Option<Vec<i64>> = weights.iter().map(|w| mantissa_at(*w, scale)).collect();
            if let Some(fit) = fit {
                return SectorWeights { names, weights: fit.into(), scale };
            }
            if scale == 0 {
                // Past i64 even as whole numbers: saturated (no share of one comes near).
                let w = weights
                    .iter()
                    .map(|w| w.round().to_i64().unwrap_or(if w.is_sign_negative() { i64::MIN } else { i64::MAX }));
                return SectorWeights { names, weights: w.collect(), scale };
            }
            scale -= 1;
        }
    }

    /// `weights[i]` (the mantissa at `scale` places) is the weight of `names[i]`; `names` sorted
    /// and distinct, as each sector once.
    ///
    /// # Panics
    /// When the lengths differ or `scale` is past a decimal's 28 places.
    pub fn from_mantissas(names: Arc<[Option<SmolStr>]>, weights: Arc<[i64]>, scale: u32) -> SectorWeights {
        assert_eq!(names.len(), weights.len(), "a weight per sector");
        assert!(scale <= Decimal::MAX_SCALE, "a decimal's scale");
        // (No weights: the empty list, whatever the scale.)
        let scale = if weights.is_empty() { 0 } else { scale };
        SectorWeights { names, weights, scale }
    }

    /// Each sector with its weight.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Option<SmolStr>, Decimal)> + '_ {
        let scale = self.scale;
        self.names.iter().zip(self.weights.iter().map(move |&m| Decimal::new(m, scale)))
    }

    /// The number of sectors.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no sector has a weight (a flat group).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The pairs, copied out.
    pub fn to_vec(&self) -> Vec<(Option<SmolStr>, Decimal)> {
        self.iter().map(|(s, w)| (s.clone(), w)).collect()
    }
}

/// `w`'s mantissa at `scale` places (at least its own), when it fits an i64.
fn mantissa_at(w: Decimal, scale: u32) -> Option<i64> {
    let w = if scale < w.scale() { w.round_dp(scale) } else { w };
    i64::try_from(w.mantissa().checked_mul(10i128.checked_pow(scale - w.scale())?)?).ok()
}

impl FromIterator<(Option<SmolStr>, Decimal)> for SectorWeights {
    fn from_iter<I: IntoIterator<Item = (Option<SmolStr>, Decimal)>>(pairs: I) -> Self {
        let (names, weights): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        SectorWeights::new(names.into(), &weights)
    }
}

impl PartialEq for SectorWeights {
    fn eq(&self, other: &Self) -> bool {
        self.scale == other.scale
            && self.weights == other.weights
            && (Arc::ptr_eq(&self.names, &other.names) || self.names == other.names)
    }
}

impl Eq for SectorWeights {}

impl PartialOrd for SectorWeights {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SectorWeights {
    /// As the lists of pairs compare (then by scale: equal values to other places differ).
    fn cmp(&self, other: &Self) -> Ordering {
        let same_names = Arc::ptr_eq(&self.names, &other.names) || self.names == other.names;
        let pairs = if same_names && self.scale == other.scale {
            // The pairs then differ at the first weight that does.
            self.weights.cmp(&other.weights)
        } else {
            self.iter().cmp(other.iter())
        };
        pairs.then(self.scale.cmp(&other.scale))
    }
}

impl Hash for SectorWeights {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.names.hash(state);
        self.weights.hash(state);
        self.scale.hash(state);
    }
}

impl Serialize for SectorWeights {
    /// As the list of `(sector, weight)` pairs.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for SectorWeights {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<(Option<SmolStr>, Decimal)>::deserialize(deserializer).map(SectorWeights::from_iter)
    }
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

    #[test]
    fn sector_weights_compare_and_serialize_as_their_pairs() {
        let pairs = |v: &[(Option<&str>, Decimal)]| -> Vec<(Option<SmolStr>, Decimal)> {
            v.iter().map(|(s, w)| (s.map(SmolStr::from), *w)).collect()
        };
        let a = pairs(&[(None, dec!(0.2)), (Some("IT"), dec!(0.8))]);
        let b = pairs(&[(None, dec!(0.2)), (Some("IT"), dec!(0.7))]);
        let c = pairs(&[(Some("Financials"), dec!(0.5))]);
        let (wa, wb, wc): (SectorWeights, SectorWeights, SectorWeights) =
            (a.iter().cloned().collect(), b.iter().cloned().collect(), c.iter().cloned().collect());
        // Shared names with other weights, separately built equal names.
        let shared = SectorWeights::new(wa.names.clone(), &[dec!(0.2), dec!(0.7)]);
        assert_eq!(shared, wb);
        assert_ne!(wa, wb);
        assert_eq!(wa.cmp(&wb), a.cmp(&b));
        assert_eq!(wa.cmp(&wc), a.cmp(&c));
        assert_eq!(wc.cmp(&wb), c.cmp(&b));
        assert_eq!(wa.to_vec(), a);
        // Checkpoints hold rows written before the type: the same bytes both ways.
        let bytes = rmp_serde::to_vec(&wa).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec(&a).unwrap());
        assert_eq!(rmp_serde::from_slice::<SectorWeights>(&bytes).unwrap(), wa);
        assert!(SectorWeights::default().is_empty() && wa.len() == 2);
        assert_eq!(SectorWeights::from_mantissas(Arc::new([]), Arc::new([]), 6), SectorWeights::default());
        // Kept at one scale: the largest, or fewer places where a mantissa would not fit.
        let mixed = SectorWeights::new(wa.names.clone(), &[dec!(0.2), dec!(0.75)]);
        assert_eq!(mixed, SectorWeights::from_mantissas(wa.names.clone(), [20, 75].into(), 2));
        assert_eq!(mixed.to_vec()[0].1.to_string(), "0.20");
        let wide = SectorWeights::new(c.iter().map(|p| p.0.clone()).collect(), &[dec!(123456789012.1234567890)]);
        assert_eq!(wide.to_vec()[0].1, dec!(123456789012.1234568));
        // Equal values to other places are other lists (ordered after the fewer places).
        let six = SectorWeights::new(wa.names.clone(), &[dec!(0.200000), dec!(0.750000)]);
        assert_ne!(six, mixed);
        assert_eq!(mixed.cmp(&six), Ordering::Less);
        assert_eq!(six.cmp(&wa), Ordering::Less);
    }
}
