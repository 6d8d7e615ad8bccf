//! The bootstrap's intervals cover the true value at about the nominal rate: 400
//! simulated datasets drawn from a known population, each evaluated with its own
//! intervals, and the share of intervals that hold the population's value counted.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Accumulator, EvalOptions, evaluate};

/// Group `a` (1000 rows) and group `b` (400 rows): labels positive with probability
/// 0.4 and 0.3; predictions positive with probability 0.7 for positives and 0.2 for
/// negatives in `a`, 0.65 and 0.05 in `b`; scores uniform on [0.2, 1] for positives and
/// [0, 0.8] for negatives, so ROC AUC is 1 - 0.36 / 1.28 = 0.71875.
fn dataset(seed: u64) -> Accumulator {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut acc = Accumulator::default();
    for (group, n, base, tpr, fpr) in [("a", 1000, 0.4, 0.7, 0.2), ("b", 400, 0.3, 0.65, 0.05)] {
        for _ in 0..n {
            let y = rng.random::<f64>() < base;
            let pred = rng.random::<f64>() < if y { tpr } else { fpr };
            // scores uniform on [0.2, 1] for positives, [0, 0.8] for negatives
            let score = if y { 0.2 } else { 0.0 } + 0.8 * rng.random::<f64>();
            acc.push(vec![Some(group.to_string())], y, pred, 1.0, Some(score));
        }
    }
    acc
}

#[test]
fn intervals_cover_the_true_value_at_about_the_nominal_rate() {
    let options = EvalOptions {
        attributes: vec!["g".into()],
        groupings: vec![vec![0]],
        replicates: 1000,
        confidence: 0.95,
        seed: 7,
        min_group_rows: 30,
        reference: Default::default(),
    };
    // population values
    let sel_a: f64 = 0.4 * 0.7 + 0.6 * 0.2;
    let sel_b: f64 = 0.3 * 0.65 + 0.7 * 0.05;
    let truth = [
        ("a", "selection_rate", sel_a),
        ("a", "true_positive_rate", 0.7),
        ("b", "false_positive_rate", 0.05),
        ("b", "accuracy", 0.3 * 0.65 + 0.7 * 0.95),
        ("a", "roc_auc", 0.71875),
        ("b", "roc_auc", 0.71875),
    ];
    let disparity_truth = [
        ("demographic_parity_difference", (sel_a - sel_b).abs()),
        // the worse of |ΔTPR| = 0.05 and |ΔFPR| = 0.15 (where the two are about equal,
        // the maximum is not smooth and percentile intervals cover less: docs/evaluation.md)
        ("equalized_odds_difference", 0.15),
        (
            "demographic_parity_ratio",
            sel_b.min(sel_a) / sel_a.max(sel_b),
        ),
    ];
    let datasets = 400;
    let mut covered = vec![0u32; truth.len() + disparity_truth.len()];
    for d in 0..datasets {
        let e = evaluate(&dataset(1000 + d), &options).expect("evaluates");
        let g = &e.groupings[0];
        for (k, (group, metric, value)) in truth.iter().enumerate() {
            let v = &g.groups.iter().find(|x| x.group == *group).unwrap().metrics[*metric];
            let (lo, hi) = (v.lower.unwrap(), v.upper.unwrap());
            covered[k] += u32::from(lo <= *value && *value <= hi);
        }
        for (k, (name, value)) in disparity_truth.iter().enumerate() {
            let v = &g.disparities[*name];
            let (lo, hi) = (v.lower.unwrap(), v.upper.unwrap());
            covered[truth.len() + k] += u32::from(lo <= *value && *value <= hi);
        }
    }
    let names: Vec<String> = truth
        .iter()
        .map(|(g, m, _)| format!("{m} of {g}"))
        .chain(disparity_truth.iter().map(|(n, _)| n.to_string()))
        .collect();
    let rates: Vec<(String, f64)> = names
        .iter()
        .zip(&covered)
        .map(|(n, c)| (n.clone(), f64::from(*c) / datasets as f64))
        .collect();
    eprintln!("coverage of 95% intervals over {datasets} datasets: {rates:?}");
    for (name, rate) in &rates {
        assert!(
            (0.93..=0.97).contains(rate),
            "95% intervals of {name} covered the true value in {rate} of {datasets} datasets (all: {rates:?})"
        );
    }
}
