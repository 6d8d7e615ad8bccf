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
        format!(
            "{}{model} {} on {on}: {}{interval}{judged} {} {}{}",
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
    g.model.is_none() || g.model == e.model
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

/// Judges every gate against every evaluation it applies to (in model order).
pub fn judge(evals: &[Evaluation], gates: &[Gate]) -> Result<Vec<GateResult>, MetricsError> {
    check_gates(evals, gates)?;
    let mut out = Vec::new();
    for g in gates {
        for e in evals.iter().filter(|e| applies(g, e)) {
            let missing = || {
                MetricsError::Usage(format!(
                    "{}: the evaluation has no `{}` (scores missing?)",
                    g.key, g.metric
                ))
            };
            let (grouping, value): (String, &Value) = if g.grouping.is_empty() {
                let v = e.overall.metrics.get(&g.metric).ok_or_else(missing)?;
                ("overall".into(), v)
            } else {
                let found = find(e, &g.grouping).expect("checked");
                let v = match &g.group {
                    Some(name) => found
                        .groups
                        .iter()
                        .find(|x| &x.group == name)
                        .expect("checked")
                        .metrics
                        .get(&g.metric),
                    None => found.disparities.get(&g.metric),
                };
                (found.grouping.clone(), v.ok_or_else(missing)?)
            };
            let judged = match g.on {
                Bound::Point => value.value,
                Bound::Lower => value.lower,
                Bound::Upper => value.upper,
            };
            let (passed, reason) = match judged {
                Some(v) => (g.op.holds(v, g.value), None),
                None => (
                    false,
                    Some(value.undefined.clone().unwrap_or_else(|| {
                        "no interval: set eval.replicates above 0 to judge an interval's end".into()
                    })),
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
            });
        }
    }
    Ok(out)
}
