//! The stratified bootstrap: each grouping's cell index, a replicate's resampled
//! tallies and binned ROC AUC, and the percentile intervals drawn from them.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disparity::disparities;
use crate::group_name;
use crate::tally::{METRICS, Rows, SCORE_METRICS, Tally};

/// A grouping's cell index: which group of the grouping each cell belongs to.
pub(crate) struct Plan {
    pub(crate) attributes: Vec<usize>,
    /// Group keys in order, and for each cell its group's position.
    pub(crate) keys: Vec<Vec<Option<String>>>,
    pub(crate) cell_group: Vec<usize>,
}

pub(crate) fn plans(cells: &[&Vec<Option<String>>], groupings: &[Vec<usize>]) -> Vec<Plan> {
    groupings
        .iter()
        .map(|g| {
            let projected: Vec<Vec<Option<String>>> = cells
                .iter()
                .map(|k| g.iter().map(|&i| k[i].clone()).collect())
                .collect();
            let mut keys: Vec<Vec<Option<String>>> = projected.clone();
            keys.sort();
            keys.dedup();
            let cell_group = projected
                .iter()
                .map(|p| keys.binary_search(p).expect("a key of its own"))
                .collect();
            Plan {
                attributes: g.clone(),
                keys,
                cell_group,
            }
        })
        .collect()
}

/// Per-group tallies and, per grouping, the metric values a replicate (or the point
/// estimate) gives: `[grouping][group][metric]` and `[grouping][disparity]`.
pub(crate) struct Estimate {
    pub(crate) overall: Vec<Result<f64, String>>,
    pub(crate) groups: Vec<Vec<Vec<Result<f64, String>>>>,
    pub(crate) disparities: Vec<Vec<Result<f64, String>>>,
    /// A replicate's ROC AUC, overall and `[grouping][group]`, from binned scores (empty
    /// without scores, and for the point estimate, which is exact).
    pub(crate) auc_overall: Option<f64>,
    pub(crate) auc_groups: Vec<Vec<Option<f64>>>,
}

/// Score bins of the replicates' ROC AUC: 4096 (scores rounded down to 1/4096) for up
/// to 256 cells, fewer (at least 256) beyond, to bound each replicate's histogram at
/// 2^20 entries.
pub(crate) fn auc_bins(cells: usize) -> usize {
    ((1usize << 20) / cells.max(1)).clamp(256, 4096)
}

/// ROC AUC from a histogram of (negative weight, positive weight) per ascending score
/// bin; ties within a bin count half, as sklearn counts tied scores.
pub(crate) fn binned_auc(hist: &[[f64; 2]]) -> Option<f64> {
    let (mut neg_below, mut area, mut pos_total) = (0.0, 0.0, 0.0);
    for [neg, pos] in hist {
        area += pos * (neg_below + neg / 2.0);
        neg_below += neg;
        pos_total += pos;
    }
    (pos_total > 0.0 && neg_below > 0.0).then(|| area / (pos_total * neg_below))
}

/// A replicate's AUCs from its per-cell histograms (`cells × bins`).
pub(crate) fn replicate_aucs(
    hist: &[[f64; 2]],
    bins: usize,
    plans: &[Plan],
) -> (Option<f64>, Vec<Vec<Option<f64>>>) {
    let cells = hist.len() / bins;
    let mut sum = vec![[0.0; 2]; bins];
    let add = |sum: &mut Vec<[f64; 2]>, c: usize| {
        for (a, b) in sum.iter_mut().zip(&hist[c * bins..(c + 1) * bins]) {
            a[0] += b[0];
            a[1] += b[1];
        }
    };
    for c in 0..cells {
        add(&mut sum, c);
    }
    let overall = binned_auc(&sum);
    let groups = plans
        .iter()
        .map(|plan| {
            (0..plan.keys.len())
                .map(|g| {
                    sum.iter_mut().for_each(|x| *x = [0.0; 2]);
                    for c in (0..cells).filter(|c| plan.cell_group[*c] == g) {
                        add(&mut sum, c);
                    }
                    binned_auc(&sum)
                })
                .collect()
        })
        .collect();
    (overall, groups)
}

pub(crate) fn counted_metrics(scores: bool) -> Vec<&'static str> {
    METRICS
        .iter()
        .copied()
        .filter(|m| *m != "roc_auc" && (scores || !SCORE_METRICS.contains(m)))
        .collect()
}

pub(crate) fn estimate(
    cell_tallies: &[Tally],
    plans: &[Plan],
    metrics: &[&str],
    eligible: &[Vec<bool>],
    reference: &[Option<usize>],
) -> Estimate {
    let mut overall = Tally::default();
    for t in cell_tallies {
        overall.merge(t);
    }
    let overall_values: Vec<Result<f64, String>> =
        metrics.iter().map(|m| overall.metric(m)).collect();
    let mut groups = Vec::with_capacity(plans.len());
    let mut disp = Vec::with_capacity(plans.len());
    for (p, plan) in plans.iter().enumerate() {
        let mut tallies = vec![Tally::default(); plan.keys.len()];
        for (c, t) in cell_tallies.iter().enumerate() {
            tallies[plan.cell_group[c]].merge(t);
        }
        let values: Vec<Vec<Result<f64, String>>> = tallies
            .iter()
            .map(|t| metrics.iter().map(|m| t.metric(m)).collect())
            .collect();
        let lookup = |name: &str| metrics.iter().position(|m| *m == name).expect("a metric");
        let per_group = |name: &str| -> Vec<Result<f64, String>> {
            let k = lookup(name);
            values.iter().map(|v| v[k].clone()).collect()
        };
        let d = disparities(
            &|name| per_group(name),
            &|name| overall_values[lookup(name)].clone(),
            &eligible[p],
            reference[p],
            &plan.keys.iter().map(|k| group_name(k)).collect::<Vec<_>>(),
        );
        groups.push(values);
        disp.push(d);
    }
    Estimate {
        overall: overall_values,
        groups,
        disparities: disp,
        auc_overall: None,
        auc_groups: Vec::new(),
    }
}

/// numpy's default percentile (linear interpolation between closest ranks).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The percentile interval of `values` at `confidence` (None when empty).
pub fn percentile_interval(values: &mut [f64], confidence: f64) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let a = (1.0 - confidence) / 2.0;
    Some((percentile(values, a), percentile(values, 1.0 - a)))
}

/// Resamples every cell to its own size (so every group keeps its size): replicate `r`
/// draws from ChaCha8 stream `r` of the seed, cells in key order, so the intervals do
/// not depend on the thread count.
/// With `hist` (scores given), also fills each cell's score histogram (`bins` per cell).
pub(crate) fn replicate(
    cells: &[&Rows],
    log_losses: &[Vec<f64>],
    seed: u64,
    r: u64,
    counts: &mut Vec<u32>,
    mut hist: Option<(&mut Vec<[f64; 2]>, usize)>,
) -> Vec<Tally> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(r);
    if let Some((h, bins)) = hist.as_mut() {
        h.clear();
        h.resize(cells.len() * *bins, [0.0; 2]);
    }
    cells
        .iter()
        .enumerate()
        .map(|(cell, rows)| {
            let n = rows.len();
            counts.clear();
            counts.resize(n, 0);
            for _ in 0..n {
                let j = ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize;
                counts[j] += 1;
            }
            let mut t = Tally::default();
            let kept = &log_losses[cell];
            let log_loss = |i: usize| kept.get(i).copied().unwrap_or_else(|| rows.log_loss(i));
            match hist.as_mut() {
                None => {
                    for (i, &c) in counts.iter().enumerate() {
                        if c > 0 {
                            t.add_with(rows, i, f64::from(c), log_loss(i));
                        }
                    }
                }
                Some((h, bins)) => {
                    let h = &mut h[cell * *bins..(cell + 1) * *bins];
                    let scale = *bins as f64;
                    for (i, &c) in counts.iter().enumerate() {
                        if c > 0 {
                            t.add_with(rows, i, f64::from(c), log_loss(i));
                            let b = ((rows.score[i] * scale) as usize).min(*bins - 1);
                            h[b][usize::from(rows.code[i] & 1)] += rows.w(i) * f64::from(c);
                        }
                    }
                }
            }
            t
        })
        .collect()
}
