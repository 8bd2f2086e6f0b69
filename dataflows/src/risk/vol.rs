//! Returns and EWMA volatility (RiskMetrics 1996): σ²ₜ = λσ²ₜ₋₁ + (1−λ)r²ₜ₋₁, and the same for
//! covariances. The first squared return (cross product) seeds the recursion.

/// RiskMetrics' daily decay.
pub const LAMBDA: f64 = 0.94;

/// Log returns of a price series (prices must be positive; a non-positive price gives no return
/// for the pairs it is in).
pub fn log_returns(prices: &[f64]) -> Vec<f64> {
    prices.windows(2).filter(|w| w[0] > 0.0 && w[1] > 0.0).map(|w| (w[1] / w[0]).ln()).collect()
}

/// EWMA variance state of one series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    /// Current variance (`None` before the first return).
    pub variance: Option<f64>,
}

impl Ewma {
    /// After `returns`, in order.
    pub fn of(returns: &[f64], lambda: f64) -> Ewma {
        let mut e = Ewma::default();
        for r in returns {
            e.update(*r, lambda);
        }
        e
    }

    /// Absorbs one return.
    pub fn update(&mut self, r: f64, lambda: f64) {
        self.variance = Some(match self.variance {
            None => r * r,
            Some(v) => lambda * v + (1.0 - lambda) * r * r,
        });
    }

    /// The volatility (per return period).
    pub fn vol(&self) -> Option<f64> {
        self.variance.map(f64::sqrt)
    }

    /// The variance as if `r` were the next return (intraday: today's move so far, without
    /// committing it).
    pub fn with(&self, r: f64, lambda: f64) -> f64 {
        let mut e = *self;
        e.update(r, lambda);
        e.variance.unwrap_or(0.0)
    }
}

/// EWMA covariance matrix of several return series observed together (row k = the k-th return of
/// every series).
pub fn ewma_covariance(rows: &[Vec<f64>], lambda: f64) -> Vec<Vec<f64>> {
    let n = rows.first().map_or(0, Vec::len);
    let mut cov = vec![vec![0.0; n]; n];
    for (k, r) in rows.iter().enumerate() {
        for i in 0..n {
            for j in 0..n {
                let x = r[i] * r[j];
                cov[i][j] = if k == 0 { x } else { lambda * cov[i][j] + (1.0 - lambda) * x };
            }
        }
    }
    cov
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn ewma_by_hand() {
        let r = log_returns(&[100.0, 102.0, 99.96, 101.9592]);
        assert!(close(r[0], (1.02f64).ln()));
        assert!(close(r[1], (0.98f64).ln()));
        assert!(close(r[2], (1.02f64).ln()));
        // σ² after r0: r0²; after r1: 0.94 r0² + 0.06 r1²; after r2: 0.94(...) + 0.06 r2².
        let (a, b, c) = (r[0] * r[0], r[1] * r[1], r[2] * r[2]);
        let want = 0.94 * (0.94 * a + 0.06 * b) + 0.06 * c;
        let e = Ewma::of(&r, LAMBDA);
        assert!(close(e.variance.unwrap(), want));
        assert!(close(e.vol().unwrap(), want.sqrt()));
        assert!(close(e.with(0.01, LAMBDA), 0.94 * want + 0.06 * 1e-4));
        assert_eq!(Ewma::of(&[], LAMBDA).vol(), None);
        assert_eq!(log_returns(&[1.0, 0.0, 2.0]).len(), 0);
    }

    #[test]
    fn covariance_diagonal_is_the_variance_and_it_is_symmetric() {
        let rows = vec![vec![0.01, -0.02], vec![0.015, 0.005], vec![-0.01, 0.012]];
        let c = ewma_covariance(&rows, LAMBDA);
        let a: Vec<f64> = rows.iter().map(|r| r[0]).collect();
        assert!(close(c[0][0], Ewma::of(&a, LAMBDA).variance.unwrap()));
        assert!(close(c[0][1], c[1][0]));
        let want01 = 0.94 * (0.94 * (0.01 * -0.02) + 0.06 * (0.015 * 0.005)) + 0.06 * (-0.01 * 0.012);
        assert!(close(c[0][1], want01));
    }
}
