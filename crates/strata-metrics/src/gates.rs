//! Gates: thresholds on metrics and disparities that fail a job.

use serde::Serialize;
use strata_spec::{Bound, Gate, Op};

use crate::{Evaluation, GroupingResult, MetricsError, Value};

/// One gate's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    /// The model judged (`None`: the predictions have no model column).
    pub model: Option<String>,
    pub metric: String,
    /// `overall`, or the grouping, e.g. `sex × race`.
    pub grouping: String,
    /// The group whose metric is judged (else a disparity or an overall metric).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub op: Op,
    pub threshold: f64,
    pub on: Bound,
    pub value: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub passed: bool,
    /// Why a gate could not be judged (and so failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A relative gate: the model compared against, its figure, how, and what the
    /// comparison gives (`compared`, with `compared_lower`/`compared_upper` from this
    /// model's interval ends against the baseline's estimate); `threshold` applies to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<strata_spec::Compare>,
    /// Whether `compared_lower`/`compared_upper` come from the paired bootstrap (both
    /// models' figures from the same resampled rows in every replicate); else from this
    /// model's interval ends against the baseline's estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paired: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_lower: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_upper: Option<f64>,
}

impl GateResult {
    /// One line: `FAIL demographic_parity_difference on sex: 0.19 [0.17, 0.21] <= 0.1`.
    pub fn line(&self) -> String {
        let interval = match (self.lower, self.upper) {
            (Some(l), Some(u)) => format!(" [{l:.4}, {u:.4}]"),
            _ => String::new(),
        };
        let judged = match self.on {
            Bound::Point => String::new(),
            Bound::Lower => " (lower end)".into(),
            Bound::Upper => " (upper end)".into(),
        };
        let model = self
            .model
            .as_ref()
            .map(|m| format!(" [{m}]"))
            .unwrap_or_default();
        let on = match &self.group {
            Some(g) => format!("{} = {g}", self.grouping),
            None => self.grouping.clone(),
        };
        let relative = match (&self.baseline, self.compare) {
            (Some(b), Some(c)) => format!(
                " vs {b} {}: {} {}{}",
                self.baseline_value
                    .map_or("undefined".into(), |v| format!("{v:.4}")),
                match c {
                    strata_spec::Compare::Difference => "difference",
                    strata_spec::Compare::Ratio => "ratio",
                },
                self.compared
                    .map_or("undefined".into(), |v| format!("{v:.4}")),
                match (self.compared_lower, self.compared_upper, self.paired) {
                    (Some(l), Some(u), Some(true)) => format!(" [{l:.4}, {u:.4}] (paired)"),
                    _ => String::new(),
                },
            ),
            _ => String::new(),
        };
        format!(
            "{}{model} {} on {on}: {}{interval}{judged}{relative} {} {}{}",
            if self.passed { "PASS" } else { "FAIL" },
            self.metric,
            self.value.map_or("undefined".into(), |v| format!("{v:.4}")),
            self.op.as_str(),
            self.threshold,
            self.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    }
}

/// Checks that every gate's grouping, group and model are in the evaluations (the
/// spec was checked alone; the predictions decide what exists). Run before judging.
pub fn check_gates(evals: &[Evaluation], gates: &[Gate]) -> Result<(), MetricsError> {
    let models: Vec<String> = evals.iter().filter_map(|e| e.model.clone()).collect();
    for g in gates {
        let bad = |m: String| MetricsError::Usage(format!("{}: {m}", g.key));
        if let Some(r) = &g.relative
            && !models.is_empty()
            && !models.contains(&r.baseline)
        {
            return Err(bad(format!(
                "the baseline model `{}` is not in the predictions (models: {})",
                r.baseline,
                if models.is_empty() {
                    "none: the files have no model column".to_string()
                } else {
                    models.join(", ")
                }
            )));
        }
        if let Some(m) = &g.model
            && !models.contains(m)
        {
            return Err(bad(format!(
                "model `{m}` is not in the predictions (models: {})",
                if models.is_empty() {
                    "none: the files have no model column".to_string()
                } else {
                    models.join(", ")
                }
            )));
        }
        for e in evals.iter().filter(|e| applies(g, e)) {
            if g.grouping.is_empty() {
                continue;
            }
            let found = find(e, &g.grouping).ok_or_else(|| {
                bad(format!(
                    "grouping {} is not evaluated (check groups.intersections)",
                    g.grouping.join(" × ")
                ))
            })?;
            if let Some(name) = &g.group
                && !found.groups.iter().any(|x| &x.group == name)
            {
                return Err(bad(format!(
                    "group `{name}` is not in the predictions' {} groups ({})",
                    found.grouping,
                    found
                        .groups
                        .iter()
                        .map(|x| x.group.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn applies(g: &Gate, e: &Evaluation) -> bool {
    match (&g.model, &g.relative) {
        (Some(m), _) => e.model.as_ref() == Some(m),
        // a relative gate judges every model but its baseline
        (None, Some(r)) => e.model.as_ref() != Some(&r.baseline),
        (None, None) => true,
    }
}

fn find<'a>(e: &'a Evaluation, attributes: &[String]) -> Option<&'a GroupingResult> {
    let mut want = attributes.to_vec();
    want.sort();
    e.groupings.iter().find(|r| {
        let mut a = r.attributes.clone();
        a.sort();
        a == want
    })
}

/// The figure a gate reads from one evaluation, and the grouping's display name.
fn figure<'a>(g: &Gate, e: &'a Evaluation) -> Result<(String, &'a Value), MetricsError> {
    let missing = || {
        MetricsError::Usage(format!(
            "{}: the evaluation has no `{}` (scores missing?)",
            g.key, g.metric
        ))
    };
    if g.grouping.is_empty() {
        let v = e.overall.metrics.get(&g.metric).ok_or_else(missing)?;
        return Ok(("overall".into(), v));
    }
    let found = find(e, &g.grouping).expect("checked");
    let v = match &g.group {
        Some(name) => found
            .groups
            .iter()
            .find(|x| &x.group == name)
            .and_then(|x| x.metrics.get(&g.metric)),
        None => found.disparities.get(&g.metric),
    };
    Ok((found.grouping.clone(), v.ok_or_else(missing)?))
}

fn compare(c: strata_spec::Compare, x: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (x, b) = (x?, b?);
    match c {
        strata_spec::Compare::Difference => Some(x - b),
        strata_spec::Compare::Ratio => (b != 0.0).then(|| x / b),
    }
}

/// Judges every gate against every evaluation it applies to (in model order).
pub fn judge(evals: &[Evaluation], gates: &[Gate]) -> Result<Vec<GateResult>, MetricsError> {
    check_gates(evals, gates)?;
    let mut out = Vec::new();
    let single = evals.iter().all(|e| e.model.is_none());
    for g in gates {
        if single && g.relative.is_some() {
            // one model's predictions (no model column): nothing to compare with
            tracing::warn!(gate = %g.key, metric = %g.metric, "a relative gate needs its baseline's predictions (a model column): not judged");
            continue;
        }
        let base = match &g.relative {
            Some(r) => {
                let e = evals
                    .iter()
                    .find(|e| e.model.as_ref() == Some(&r.baseline))
                    .expect("checked");
                Some((r, figure(g, e)?.1.clone(), e))
            }
            None => None,
        };
        for e in evals.iter().filter(|e| applies(g, e)) {
            let (grouping, value) = figure(g, e)?;
            let mut paired = None;
            let (compared, lower, upper) = match &base {
                Some((r, b, be)) => {
                    let point = compare(r.compare, value.value, b.value);
                    // the same rows in every replicate: the comparison's own interval
                    let pairs = match (&value.samples, &b.samples) {
                        (Some(x), Some(y)) if e.pairs_with(be) && x.len() == y.len() => {
                            let mut d: Vec<f64> = x
                                .iter()
                                .zip(y.iter())
                                .filter_map(|(x, y)| compare(r.compare, *x, *y))
                                .filter(|v| v.is_finite())
                                .collect();
                            crate::percentile_interval(&mut d, e.confidence)
                        }
                        _ => None,
                    };
                    paired = Some(pairs.is_some());
                    match pairs {
                        Some((lo, hi)) if point.is_some() => (point, Some(lo), Some(hi)),
                        // unpaired: this model's interval ends against the baseline's estimate
                        _ => (
                            point,
                            compare(r.compare, value.lower, b.value),
                            compare(r.compare, value.upper, b.value),
                        ),
                    }
                }
                None => (value.value, value.lower, value.upper),
            };
            let judged = match g.on {
                Bound::Point => compared,
                Bound::Lower => lower,
                Bound::Upper => upper,
            };
            let (passed, reason) = match judged {
                Some(v) => (g.op.holds(v, g.value), None),
                None => (
                    false,
                    Some(
                        value
                            .undefined
                            .clone()
                            .or_else(|| base.as_ref().and_then(|b| b.1.undefined.clone()))
                            .unwrap_or_else(|| match (&base, g.on) {
                                (Some(_), Bound::Point) => {
                                    "the baseline's figure is 0: no ratio".into()
                                }
                                _ => "no interval: set eval.replicates above 0 to judge an interval's end"
                                    .into(),
                            }),
                    ),
                ),
            };
            out.push(GateResult {
                model: e.model.clone(),
                metric: g.metric.clone(),
                grouping,
                group: g.group.clone(),
                op: g.op,
                threshold: g.value,
                on: g.on,
                value: value.value,
                lower: value.lower,
                upper: value.upper,
                passed,
                reason,
                baseline: base.as_ref().map(|b| b.0.baseline.clone()),
                baseline_value: base.as_ref().and_then(|b| b.1.value),
                compare: base.as_ref().map(|b| b.0.compare),
                paired,
                compared: base.as_ref().and(compared),
                compared_lower: base.as_ref().and(lower),
                compared_upper: base.as_ref().and(upper),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use strata_spec::{Bound, Compare, Gate, Op, Relative};

    use crate::{Accumulator, EvalOptions, evaluate, judge};

    fn model(name: &str, flip: usize, n: usize) -> crate::Evaluation {
        let mut acc = Accumulator::default();
        for i in 0..n {
            let g = if i % 3 == 0 { "a" } else { "b" };
            let y = i % 2 == 0;
            let pred = if i % 7 < flip { !y } else { y };
            acc.push(vec![Some(g.to_string())], y, pred, 1.0, None);
        }
        let options = EvalOptions {
            attributes: vec!["g".into()],
            groupings: vec![vec![0]],
            replicates: 200,
            confidence: 0.95,
            seed: 3,
            min_group_rows: 0,
            reference: Default::default(),
        };
        let mut e = evaluate(&acc, &options).unwrap();
        e.model = Some(name.into());
        e
    }

    fn gate(on: Bound) -> Gate {
        Gate {
            metric: "accuracy".into(),
            grouping: Vec::new(),
            group: None,
            model: None,
            op: Op::Ge,
            value: -0.5,
            on,
            key: "eval.gates[0]".into(),
            relative: Some(Relative {
                baseline: "baseline".into(),
                compare: Compare::Difference,
            }),
        }
    }

    #[test]
    fn a_relative_gate_pairs_the_replicates_of_the_same_rows() {
        // the same predictions twice: every paired replicate's difference is exactly 0,
        // while each model's own interval is wide
        let evals = [model("baseline", 2, 600), model("curated", 2, 600)];
        let r = &judge(&evals, &[gate(Bound::Lower)]).unwrap()[0];
        assert_eq!(r.model.as_deref(), Some("curated"));
        assert_eq!(r.paired, Some(true));
        assert_eq!(
            (r.compared, r.compared_lower, r.compared_upper),
            (Some(0.0), Some(0.0), Some(0.0))
        );
        assert!(r.upper.unwrap() - r.lower.unwrap() > 0.02);
        // two models of other rows (another size): no pairs, this model's ends against
        // the baseline's estimate
        let evals = [model("baseline", 2, 600), model("curated", 1, 630)];
        let r = &judge(&evals, &[gate(Bound::Lower)]).unwrap()[0];
        assert_eq!(r.paired, Some(false));
        let b = evals[0].overall.metrics["accuracy"].value.unwrap();
        assert_eq!(r.compared_lower, Some(r.lower.unwrap() - b));
    }
}
