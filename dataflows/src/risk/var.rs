//! Value at risk.
//!
//! - Parametric: VaR = z·√(wᵀΣw)·√h, with w the positions' market values, Σ the covariance of
//!   one-period returns, z the standard normal quantile at the confidence, h the horizon in
//!   periods. Component VaR of position i: wᵢ(Σw)ᵢ/√(wᵀΣw)·z·√h; the components sum to the VaR.
//! - Historical: each past return vector revalues the positions (loss = −Σ wᵢrᵢ); VaR is the
//!   loss at the confidence quantile (the ⌈n(1−c)⌉-th largest loss), expected shortfall the mean
//!   of the losses at least as large.

/// The standard normal quantile (Peter Acklam's rational approximation: relative error below
/// 1.2e-9 over (0, 1)).
pub fn normal_quantile(p: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0, "a probability strictly between 0 and 1");
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383_577_518_672_69e2,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Parametric VaR and its components.
#[derive(Clone, Debug, PartialEq)]
pub struct Parametric {
    /// The VaR (a positive loss, in the market values' currency).
    pub var: f64,
    /// Per position, summing to `var`.
    pub components: Vec<f64>,
    /// Portfolio standard deviation over one period, √(wᵀΣw).
    pub sigma: f64,
}

/// Parametric VaR of market values `w` under covariance `cov` (one period), at `confidence`
/// (e.g. 0.99) over `horizon` periods.
pub fn parametric(w: &[f64], cov: &[Vec<f64>], confidence: f64, horizon: f64) -> Parametric {
    let n = w.len();
    let sw: Vec<f64> = (0..n).map(|i| (0..n).map(|j| cov[i][j] * w[j]).sum()).collect();
    let variance: f64 = (0..n).map(|i| w[i] * sw[i]).sum();
    let sigma = variance.max(0.0).sqrt();
    let scale = normal_quantile(confidence) * horizon.sqrt();
    let components = if sigma > 0.0 { (0..n).map(|i| w[i] * sw[i] / sigma * scale).collect() } else { vec![0.0; n] };
    Parametric { var: sigma * scale, components, sigma }
}

/// The tail size at `confidence` over `n` scenarios: ⌈n(1−c)⌉ (at least 1, at most n), with the
/// float error of 1 − c taken out (20 × (1 − 0.95) is 1.0000000000000009).
pub fn tail_len(n: usize, confidence: f64) -> usize {
    (((n as f64) * (1.0 - confidence) - 1e-9).ceil().max(1.0) as usize).min(n)
}

/// Historical VaR and expected shortfall.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Historical {
    /// The loss at the confidence quantile.
    pub var: f64,
    /// Mean of the losses at least that large.
    pub expected_shortfall: f64,
    /// Scenarios used.
    pub scenarios: usize,
}

/// Historical VaR of market values `w` over past return vectors `scenarios` (each one return per
/// position), at `confidence`. `None` without scenarios.
pub fn historical(w: &[f64], scenarios: &[Vec<f64>], confidence: f64) -> Option<Historical> {
    if scenarios.is_empty() {
        return None;
    }
    let mut losses: Vec<f64> =
        scenarios.iter().map(|r| -r.iter().zip(w).map(|(ri, wi)| ri * wi).sum::<f64>()).collect();
    losses.sort_by(|a, b| b.total_cmp(a)); // largest loss first
    let tail = &losses[..tail_len(losses.len(), confidence)];
    Some(Historical {
        var: tail[tail.len() - 1],
        expected_shortfall: tail.iter().sum::<f64>() / tail.len() as f64,
        scenarios: losses.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn normal_quantiles_match_the_tables() {
        assert!(close(normal_quantile(0.95), 1.6448536269514722, 1e-8));
        assert!(close(normal_quantile(0.99), 2.3263478740408408, 1e-8));
        assert!(close(normal_quantile(0.975), 1.959963984540054, 1e-8));
        assert!(close(normal_quantile(0.5), 0.0, 1e-12));
        assert!(close(normal_quantile(0.01), -2.3263478740408408, 1e-8));
    }

    #[test]
    fn two_positions_parametric_by_hand() {
        // 1,000,000 long A (daily vol 2%), 500,000 short B (daily vol 1.5%), correlation 0.5.
        let (sa, sb, rho) = (0.02, 0.015, 0.5);
        let cov = vec![vec![sa * sa, rho * sa * sb], vec![rho * sa * sb, sb * sb]];
        let w = [1_000_000.0, -500_000.0];
        // wᵀΣw = 1e12·4e-4 + 2.5e11·2.25e-4 − 2·5e11·1.5e-4 = 4e8 + 5.625e7 − 1.5e8 = 3.0625e8.
        let p = parametric(&w, &cov, 0.99, 1.0);
        assert!(close(p.sigma, 17_500.0, 1e-12));
        assert!(close(p.var, 17_500.0 * 2.3263478740408408, 1e-8));
        assert!(close(p.components.iter().sum::<f64>(), p.var, 1e-12));
        // A's component: w_a (Σw)_a / σ · z = 1e6·(4e-4·1e6 − 1.5e-4·5e5)/17,500·z = 1e6·325/17,500·z.
        assert!(close(p.components[0], 1e6 * 325.0 / 17_500.0 * 2.3263478740408408, 1e-8));
        // Ten days: × √10.
        let ten = parametric(&w, &cov, 0.99, 10.0);
        assert!(close(ten.var, p.var * 10f64.sqrt(), 1e-12));
        assert_eq!(parametric(&[0.0], &[vec![1e-4]], 0.95, 1.0).var, 0.0);
    }

    #[test]
    fn historical_var_and_shortfall_by_hand() {
        // 100,000 in one name; 20 past returns, -1% .. -20% and flat: the 95% quantile over 20
        // scenarios is the 1st largest loss, at 90% the 2nd.
        let w = [100_000.0];
        let mut scenarios: Vec<Vec<f64>> = (1..=10).map(|k| vec![-(k as f64) / 100.0]).collect();
        scenarios.extend((1..=10).map(|k| vec![k as f64 / 200.0]));
        let h95 = historical(&w, &scenarios, 0.95).unwrap();
        assert!(close(h95.var, 10_000.0, 1e-12));
        assert!(close(h95.expected_shortfall, 10_000.0, 1e-12));
        let h90 = historical(&w, &scenarios, 0.90).unwrap();
        assert!(close(h90.var, 9_000.0, 1e-12));
        assert!(close(h90.expected_shortfall, 9_500.0, 1e-12));
        assert_eq!(h90.scenarios, 20);
        assert_eq!(historical(&w, &[], 0.99), None);
    }
}
