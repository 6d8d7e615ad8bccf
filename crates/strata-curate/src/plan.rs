//! Pure planning: from per-stratum counts to per-stratum targets and weights. No data
//! here, so every rule is unit- and property-tested.

use std::collections::BTreeMap;

/// Splits `total` into integers proportional to `weights` (largest remainder, ties to
/// the earlier entry): the parts sum to `total` exactly and each is within 1 of its
/// exact share.
pub fn largest_remainder(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let assigned: u64 = parts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.partial_cmp(&ra)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    for &i in order.iter().take(total.saturating_sub(assigned) as usize) {
        parts[i] += 1;
    }
    parts
}

/// Kamiran & Calders (2012) reweighing: `w(g, y) = W_g · W_y / (W · W_gy)`, where the
/// `W` are sums of the existing row weights. Under these weights group and label are
/// independent and the total weight is unchanged.
///
/// When some (group, label) combination has no weight at all, independence cannot be
/// reached and the raw factors would change the total; the factors are then scaled so the
/// total weight is still preserved, and the second value is `false` so callers can warn.
/// Cells with no weight get no factor (never NaN).
pub fn kamiran_calders<G: Ord + Clone, Y: Ord + Clone>(
    cells: &BTreeMap<(G, Y), f64>,
) -> (BTreeMap<(G, Y), Option<f64>>, bool) {
    let mut w_g: BTreeMap<G, f64> = BTreeMap::new();
    let mut w_y: BTreeMap<Y, f64> = BTreeMap::new();
    let mut total = 0.0;
    for ((g, y), w) in cells {
        *w_g.entry(g.clone()).or_default() += w;
        *w_y.entry(y.clone()).or_default() += w;
        total += w;
    }
    let mut factors: BTreeMap<(G, Y), Option<f64>> = cells
        .iter()
        .map(|((g, y), &w_gy)| {
            let factor = (w_gy > 0.0 && total > 0.0).then(|| w_g[g] * w_y[y] / (total * w_gy));
            ((g.clone(), y.clone()), factor)
        })
        .collect();
    let groups = w_g.iter().filter(|(_, w)| **w > 0.0).count();
    let labels = w_y.iter().filter(|(_, w)| **w > 0.0).count();
    let filled = cells.values().filter(|w| **w > 0.0).count();
    let complete = filled == groups * labels;
    if !complete {
        let new_total: f64 = cells
            .iter()
            .map(|(k, w)| w * factors[k].unwrap_or(0.0))
            .sum();
        if new_total > 0.0 {
            let scale = total / new_total;
            factors.values_mut().flatten().for_each(|f| *f *= scale);
        }
    }
    (factors, complete)
}

/// Why a target cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("no stratum has both rows and a positive target share")]
    NothingToSample,
}

/// Plans group totals: `shares` (summing to 1 over groups with rows) and `available`
/// rows per group, for a mode. Returns the planned total N.
pub fn plan_total(
    mode: strata_spec::Mode,
    total: Option<u64>,
    shares: &[f64],
    available: &[u64],
) -> Result<u64, PlanError> {
    let positive: Vec<(f64, u64)> = shares
        .iter()
        .zip(available)
        .filter(|(s, _)| **s > 0.0)
        .map(|(s, n)| (*s, *n))
        .collect();
    if positive.is_empty() {
        return Err(PlanError::NothingToSample);
    }
    Ok(match mode {
        strata_spec::Mode::Undersample => {
            // the largest N with N·share <= rows for every stratum
            positive
                .iter()
                .map(|(s, n)| (*n as f64 / s + 1e-9).floor() as u64)
                .min()
                .unwrap_or(0)
        }
        strata_spec::Mode::Oversample => positive
            .iter()
            .map(|(s, n)| (*n as f64 / s - 1e-9).ceil() as u64)
            .max()
            .unwrap_or(0),
        strata_spec::Mode::Hybrid => total.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn largest_remainder_examples() {
        assert_eq!(largest_remainder(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(largest_remainder(7, &[0.5, 0.25, 0.25]), vec![3, 2, 2]);
        assert_eq!(largest_remainder(8, &[0.5, 0.25, 0.25]), vec![4, 2, 2]);
        assert_eq!(largest_remainder(0, &[1.0, 2.0]), vec![0, 0]);
        assert_eq!(largest_remainder(5, &[0.0, 0.0]), vec![0, 0]);
    }

    #[test]
    fn kamiran_calders_closed_form() {
        // 2 groups x 2 labels, counts: a0=30 a1=10 b0=40 b1=20 (total 100)
        let cells: BTreeMap<(&str, u8), f64> = [
            (("a", 0), 30.0),
            (("a", 1), 10.0),
            (("b", 0), 40.0),
            (("b", 1), 20.0),
        ]
        .into();
        let (w, complete) = kamiran_calders(&cells);
        assert!(complete);
        // w(a,1) = W_a·W_1 / (W·W_a1) = 40·30 / (100·10) = 1.2
        assert!((w[&("a", 1)].unwrap() - 1.2).abs() < 1e-12);
        assert!((w[&("b", 0)].unwrap() - 60.0 * 70.0 / (100.0 * 40.0)).abs() < 1e-12);
    }

    #[test]
    fn empty_cells_get_no_weight() {
        let cells: BTreeMap<(&str, u8), f64> = [
            (("a", 0), 5.0),
            (("a", 1), 0.0),
            (("b", 0), 3.0),
            (("b", 1), 2.0),
        ]
        .into();
        let (w, complete) = kamiran_calders(&cells);
        assert!(!complete);
        assert_eq!(w[&("a", 1)], None);
        assert!(w.values().flatten().all(|v| v.is_finite()));
    }

    proptest! {
        #[test]
        fn largest_remainder_sums_exactly_and_stays_within_one(total in 0u64..100_000, weights in prop::collection::vec(0.0f64..10.0, 1..40)) {
            let parts = largest_remainder(total, &weights);
            let sum: f64 = weights.iter().sum();
            if sum > 0.0 {
                prop_assert_eq!(parts.iter().sum::<u64>(), total);
                for (p, w) in parts.iter().zip(&weights) {
                    let exact = total as f64 * w / sum;
                    prop_assert!((*p as f64 - exact).abs() < 1.0 + 1e-9);
                }
            }
        }

        /// After reweighing, every group has the same weighted label rate, and the total
        /// weight is unchanged.
        #[test]
        fn reweighing_makes_group_and_label_independent(cells in prop::collection::vec((0usize..5, 0u8..2, 0.0f64..1000.0), 1..40)) {
            let mut map: BTreeMap<(usize, u8), f64> = BTreeMap::new();
            for (g, y, w) in cells {
                *map.entry((g, y)).or_default() += w;
            }
            let (factors, complete) = kamiran_calders(&map);
            let total: f64 = map.values().sum();
            let new_total: f64 = map.iter().map(|(k, w)| w * factors[k].unwrap_or(0.0)).sum();
            prop_assert!((total - new_total).abs() <= 1e-9 * total.max(1.0));
            let positive_total: f64 = map.iter().filter(|((_, y), _)| *y == 1).map(|(_, w)| w).sum();
            if total > 0.0 && complete {
                let overall = positive_total / total;
                let groups: std::collections::BTreeSet<usize> = map.keys().map(|(g, _)| *g).collect();
                for g in groups {
                    let wg: f64 = map.iter().filter(|((gg, _), _)| *gg == g).map(|(k, w)| w * factors[k].unwrap_or(0.0)).sum();
                    let wp: f64 = map.iter().filter(|((gg, y), _)| *gg == g && *y == 1).map(|(k, w)| w * factors[k].unwrap_or(0.0)).sum();
                    if wg > 1e-9 {
                        prop_assert!((wp / wg - overall).abs() < 1e-9, "group {} rate {} vs {}", g, wp / wg, overall);
                    }
                }
            }
        }

        #[test]
        fn undersample_never_asks_for_more_rows_than_exist(available in prop::collection::vec(1u64..10_000, 1..20)) {
            let shares = vec![1.0 / available.len() as f64; available.len()];
            let n = plan_total(strata_spec::Mode::Undersample, None, &shares, &available).unwrap();
            let parts = largest_remainder(n, &shares);
            for (p, a) in parts.iter().zip(&available) {
                prop_assert!(p <= a, "{} > {}", p, a);
            }
        }

        #[test]
        fn oversample_keeps_every_row_of_every_stratum(available in prop::collection::vec(1u64..10_000, 1..20)) {
            let shares = vec![1.0 / available.len() as f64; available.len()];
            let n = plan_total(strata_spec::Mode::Oversample, None, &shares, &available).unwrap();
            let parts = largest_remainder(n, &shares);
            for (p, a) in parts.iter().zip(&available) {
                prop_assert!(p + 1 >= *a, "{} < {}", p, a);
            }
        }
    }
}
