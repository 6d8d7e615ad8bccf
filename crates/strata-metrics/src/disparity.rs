//! Disparities between the groups of a grouping, with Fairlearn's definitions and
//! names (`fairlearn.metrics`, 0.15): a difference is `max - min` of the groups'
//! values (`between_groups`) or the largest `|group - overall|` (`_to_overall`); a
//! ratio is `min / max`, or the smallest `min(group / overall, overall / group)`.
//! Only groups large enough to judge take part.

pub use strata_spec::EVAL_DISPARITIES as DISPARITIES;

type V = Result<f64, String>;
/// A metric's values over the eligible groups, and overall.
type Series = (Vec<f64>, f64);
type Of<'a> = &'a dyn Fn(&Series) -> V;

/// The values of `metric` over the eligible groups, or why one is missing.
fn values(
    per_group: &dyn Fn(&str) -> Vec<V>,
    metric: &str,
    eligible: &[bool],
    names: &[String],
) -> Result<Vec<f64>, String> {
    let all = per_group(metric);
    let mut out = Vec::new();
    for ((v, ok), name) in all.iter().zip(eligible).zip(names) {
        if !ok {
            continue;
        }
        match v {
            Ok(x) => out.push(*x),
            Err(why) => return Err(format!("{metric} of group {name} is undefined ({why})")),
        }
    }
    if out.len() < 2 {
        return Err("fewer than two groups large enough to compare".into());
    }
    Ok(out)
}

fn difference(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    max - min
}

fn difference_to(v: &[f64], overall: f64) -> f64 {
    v.iter().map(|x| (x - overall).abs()).fold(0.0, f64::max)
}

fn ratio(v: &[f64]) -> V {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    if max > 0.0 {
        Ok(min / max)
    } else {
        Err("every group's rate is 0: the ratio is undefined".into())
    }
}

fn ratio_to(v: &[f64], overall: f64) -> V {
    if overall <= 0.0 {
        return Err("the overall rate is 0: the ratio is undefined".into());
    }
    let mut best = f64::INFINITY;
    for x in v {
        let r = x / overall;
        best = best.min(if r > 1.0 { 1.0 / r } else { r });
    }
    Ok(best)
}

/// Every disparity of [`DISPARITIES`] for one grouping.
pub fn disparities(
    per_group: &dyn Fn(&str) -> Vec<V>,
    overall: &dyn Fn(&str) -> V,
    eligible: &[bool],
    reference: Option<usize>,
    names: &[String],
) -> Vec<V> {
    let vals = |m: &str| values(per_group, m, eligible, names);
    let both = |m: &str| -> Result<Series, String> { Ok((vals(m)?, overall(m)?)) };
    let sel = both("selection_rate");
    let tpr = both("true_positive_rate");
    let fpr = both("false_positive_rate");
    let pair = |f: Of, worst: bool, mean: bool| -> V {
        let a = f(tpr.as_ref().map_err(Clone::clone)?)?;
        let b = f(fpr.as_ref().map_err(Clone::clone)?)?;
        Ok(if mean {
            (a + b) / 2.0
        } else if worst {
            a.max(b)
        } else {
            a.min(b)
        })
    };
    let on = |x: &Result<Series, String>, f: Of| -> V { f(x.as_ref().map_err(Clone::clone)?) };
    let diff = |x: &Series| Ok(difference(&x.0));
    let diff_to = |x: &Series| Ok(difference_to(&x.0, x.1));
    let rat = |x: &Series| ratio(&x.0);
    let rat_to = |x: &Series| ratio_to(&x.0, x.1);

    let against_reference = |kind: &str| -> V {
        let r = reference.ok_or("no reference group")?;
        if !eligible[r] {
            return Err(format!(
                "the reference group {} is too small to judge",
                names[r]
            ));
        }
        let get = |m: &str, g: usize| -> V {
            per_group(m)[g]
                .clone()
                .map_err(|why| format!("{m} of group {} is undefined ({why})", names[g]))
        };
        let mut worst: Option<f64> = None;
        for g in (0..names.len()).filter(|g| *g != r && eligible[*g]) {
            let v = match kind {
                "disparate_impact_ratio" => {
                    let rs = get("selection_rate", r)?;
                    if rs <= 0.0 {
                        return Err(format!("the reference group {} selects no one", names[r]));
                    }
                    get("selection_rate", g)? / rs
                }
                _ => {
                    ((get("false_positive_rate", g)? - get("false_positive_rate", r)?)
                        + (get("true_positive_rate", g)? - get("true_positive_rate", r)?))
                        / 2.0
                }
            };
            worst = Some(match worst {
                None => v,
                Some(w) if kind == "disparate_impact_ratio" => w.min(v),
                Some(w) => {
                    if v.abs() > w.abs() {
                        v
                    } else {
                        w
                    }
                }
            });
        }
        worst.ok_or_else(|| "no other group large enough to compare with the reference".into())
    };

    DISPARITIES
        .iter()
        .map(|name| match *name {
            "demographic_parity_difference" => on(&sel, &diff),
            "demographic_parity_difference_to_overall" => on(&sel, &diff_to),
            "demographic_parity_ratio" => on(&sel, &rat),
            "demographic_parity_ratio_to_overall" => on(&sel, &rat_to),
            "equal_opportunity_difference" => on(&tpr, &diff),
            "equal_opportunity_difference_to_overall" => on(&tpr, &diff_to),
            "equal_opportunity_ratio" => on(&tpr, &rat),
            "equal_opportunity_ratio_to_overall" => on(&tpr, &rat_to),
            "equalized_odds_difference" => pair(&diff, true, false),
            "equalized_odds_difference_to_overall" => pair(&diff_to, true, false),
            "equalized_odds_ratio" => pair(&rat, false, false),
            "equalized_odds_ratio_to_overall" => pair(&rat_to, false, false),
            "equalized_odds_difference_mean" => pair(&diff, true, true),
            "equalized_odds_difference_mean_to_overall" => pair(&diff_to, true, true),
            "equalized_odds_ratio_mean" => pair(&rat, false, true),
            "equalized_odds_ratio_mean_to_overall" => pair(&rat_to, false, true),
            "disparate_impact_ratio" => against_reference("disparate_impact_ratio"),
            "average_odds_difference" => against_reference("average_odds_difference"),
            "worst_group_accuracy" => {
                vals("accuracy").map(|v| v.iter().copied().fold(f64::INFINITY, f64::min))
            }
            other => Err(format!("unknown disparity {other}")),
        })
        .collect()
}
