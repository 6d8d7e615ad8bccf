//! The terminal verdict of `strata run`: the headline disparities of each model with
//! their intervals, the paired difference, and the gates.

use crate::eval::EvalRun;

/// The headline disparities of each model, and the gates.
pub(super) fn verdict(ev: &EvalRun) -> String {
    let headline = [
        "demographic_parity_difference",
        "equalized_odds_difference",
        "worst_group_accuracy",
    ];
    let mut t = String::new();
    if let Some(first) = ev.evaluations.first() {
        for (k, g) in first.groupings.iter().enumerate() {
            if g.attributes.len() > 1 && k >= first.groupings.len().min(3) {
                continue;
            }
            t.push_str(&format!("{}\n", g.grouping));
            for d in headline {
                let cells: Vec<String> = ev
                    .evaluations
                    .iter()
                    .filter_map(|e| {
                        let v = e.groupings[k].disparities.get(d)?;
                        let m = e.model.as_deref().unwrap_or("model");
                        Some(match (v.value, v.lower, v.upper) {
                            (Some(x), Some(l), Some(u)) => format!("{m} {x:.3} [{l:.3}, {u:.3}]"),
                            (Some(x), _, _) => format!("{m} {x:.3}"),
                            _ => format!("{m} n/a"),
                        })
                    })
                    .collect();
                t.push_str(&format!("  {d:<31} {}\n", cells.join("   ")));
            }
            if let [b, c] = ev.evaluations.as_slice()
                && c.pairs_with(b)
            {
                let d = "demographic_parity_difference";
                let (x, y) = (
                    &c.groupings[k].disparities[d],
                    &b.groupings[k].disparities[d],
                );
                if let (Some(xv), Some(yv), Some(xs), Some(ys)) =
                    (x.value, y.value, &x.samples, &y.samples)
                {
                    let mut diffs: Vec<f64> = xs
                        .iter()
                        .zip(ys.iter())
                        .filter_map(|(a, b)| Some(a.as_ref()? - b.as_ref()?))
                        .collect();
                    if let Some((lo, hi)) =
                        strata_metrics::percentile_interval(&mut diffs, c.confidence)
                    {
                        t.push_str(&format!(
                            "  {:<31} {:+.3} [{lo:+.3}, {hi:+.3}] (paired bootstrap: the same test rows)\n",
                            format!("{d}: {} − {}", c.model.as_deref().unwrap_or(""), b.model.as_deref().unwrap_or("")),
                            xv - yv
                        ));
                    }
                }
            }
        }
        let acc: Vec<String> = ev
            .evaluations
            .iter()
            .filter_map(|e| {
                let v = e.overall.metrics.get("accuracy")?;
                Some(format!(
                    "{} {}",
                    e.model.as_deref().unwrap_or("model"),
                    v.value.map_or("n/a".into(), |x| format!("{x:.4}"))
                ))
            })
            .collect();
        t.push_str(&format!("overall accuracy: {}\n", acc.join(", ")));
    }
    if !ev.gates.is_empty() {
        t.push_str("gates\n");
        for g in &ev.gates {
            t.push_str(&format!("  {}\n", g.line()));
        }
    }
    t
}
