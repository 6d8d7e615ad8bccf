//! `[eval]`: how predictions are judged, and the gates that fail a job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::Reporter;
use crate::{Location, SpecError};

/// The per-group metrics strata reports, in report order.
pub const EVAL_METRICS: [&str; 15] = [
    "count",
    "weighted_count",
    "accuracy",
    "balanced_accuracy",
    "selection_rate",
    "true_positive_rate",
    "false_positive_rate",
    "false_negative_rate",
    "true_negative_rate",
    "precision",
    "f1",
    "roc_auc",
    "log_loss",
    "brier_score",
    "expected_calibration_error",
];

/// The disparities strata reports per grouping, in report order (Fairlearn's names;
/// `_to_overall` is Fairlearn's `method="to_overall"`, `_mean` its `agg="mean"`).
pub const EVAL_DISPARITIES: [&str; 19] = [
    "demographic_parity_difference",
    "demographic_parity_difference_to_overall",
    "demographic_parity_ratio",
    "demographic_parity_ratio_to_overall",
    "equal_opportunity_difference",
    "equal_opportunity_difference_to_overall",
    "equal_opportunity_ratio",
    "equal_opportunity_ratio_to_overall",
    "equalized_odds_difference",
    "equalized_odds_difference_to_overall",
    "equalized_odds_ratio",
    "equalized_odds_ratio_to_overall",
    "equalized_odds_difference_mean",
    "equalized_odds_difference_mean_to_overall",
    "equalized_odds_ratio_mean",
    "equalized_odds_ratio_mean_to_overall",
    "disparate_impact_ratio",
    "average_odds_difference",
    "worst_group_accuracy",
];

/// The most bootstrap replicates a spec may ask for.
pub const MAX_REPLICATES: u64 = 100_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEval {
    pub replicates: Option<Spanned<u64>>,
    pub confidence: Option<Spanned<f64>>,
    pub seed: Option<u64>,
    pub min_group_rows: Option<u64>,
    pub threshold: Option<Spanned<f64>>,
    #[serde(default)]
    pub reference_groups: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub gates: Vec<Spanned<RawGate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGate {
    pub metric: String,
    pub grouping: Option<GroupingSpec>,
    pub op: String,
    pub value: f64,
    #[serde(default)]
    pub on: Bound,
    pub group: Option<String>,
    pub model: Option<String>,
    pub baseline: Option<String>,
    pub compare: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum GroupingSpec {
    One(String),
    Many(Vec<String>),
}

/// Which figure a gate compares: the estimate, or an end of its interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    #[default]
    Point,
    Lower,
    Upper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = ">")]
    Gt,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Le => value <= threshold,
            Self::Lt => value < threshold,
            Self::Ge => value >= threshold,
            Self::Gt => value > threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Le => "<=",
            Self::Lt => "<",
            Self::Ge => ">=",
            Self::Gt => ">",
        }
    }
}

/// One `[[eval.gates]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    pub metric: String,
    /// The attributes of the grouping (a disparity, or with `group` a group's metric),
    /// or empty for an overall metric.
    pub grouping: Vec<String>,
    /// One group of the grouping (its values joined by ` × `): the gate judges that
    /// group's metric. Checked against the predictions before anything is judged.
    pub group: Option<String>,
    /// Only this model's predictions (default: every model's).
    pub model: Option<String>,
    pub op: Op,
    pub value: f64,
    pub on: Bound,
    /// Where the gate is in the spec, for errors (`eval.gates[k]`).
    pub key: String,
    /// A gate relative to another model's figure (e.g. the curated model against the
    /// baseline): what is compared with `value`.
    pub relative: Option<Relative>,
}

/// How a relative gate compares a model's figure `x` with the baseline's `b`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Relative {
    /// The model compared against (default `baseline`).
    pub baseline: String,
    pub compare: Compare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compare {
    /// `x - b`, e.g. accuracy at most 0.02 below the baseline's: `>= -0.02`.
    Difference,
    /// `x / b`, e.g. a disparity at most half the baseline's: `<= 0.5`.
    Ratio,
}

/// The validated `[eval]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    pub replicates: u64,
    pub confidence: f64,
    /// Default: `curate.seed`.
    pub seed: Option<u64>,
    /// Default: `groups.min_group_rows`.
    pub min_group_rows: Option<u64>,
    /// `y_pred = score >= threshold` when predictions have no `y_pred` column.
    pub threshold: f64,
    pub reference_groups: BTreeMap<String, String>,
    pub gates: Vec<Gate>,
}

impl Default for Eval {
    fn default() -> Self {
        Self {
            replicates: 1000,
            confidence: 0.95,
            seed: None,
            min_group_rows: None,
            threshold: 0.5,
            reference_groups: BTreeMap::new(),
            gates: Vec::new(),
        }
    }
}

pub(crate) fn validate_eval(
    reporter: &Reporter<'_>,
    raw: Spanned<RawEval>,
    text: &str,
    locations: &mut BTreeMap<String, Location>,
    attributes: &[String],
) -> Result<Eval, SpecError> {
    let span = raw.span();
    locations.insert("eval".into(), Location::of_offset(text, span.start));
    let raw = raw.into_inner();
    let mut e = Eval::default();
    if let Some(r) = &raw.replicates {
        if *r.get_ref() > MAX_REPLICATES {
            return Err(reporter.at(
                Some(r.span()),
                "eval.replicates",
                format!("at most {MAX_REPLICATES} (0 for no intervals)"),
            ));
        }
        e.replicates = *r.get_ref();
    }
    if let Some(c) = &raw.confidence {
        let v = *c.get_ref();
        if !(v > 0.0 && v < 1.0) {
            return Err(reporter.at(
                Some(c.span()),
                "eval.confidence",
                format!("must be above 0 and below 1 (e.g. 0.95), found {v}"),
            ));
        }
        e.confidence = v;
    }
    if let Some(t) = &raw.threshold {
        let v = *t.get_ref();
        if !(0.0..=1.0).contains(&v) {
            return Err(reporter.at(
                Some(t.span()),
                "eval.threshold",
                format!("must be from 0 to 1, found {v}"),
            ));
        }
        e.threshold = v;
    }
    e.seed = raw.seed;
    e.min_group_rows = raw.min_group_rows;
    for (attr, group) in raw.reference_groups {
        if !attributes.contains(&attr) {
            return Err(reporter.at(
                Some(group.span()),
                &format!("eval.reference_groups.{attr}"),
                format!("`{attr}` is not one of groups.attributes {attributes:?}"),
            ));
        }
        e.reference_groups.insert(attr, group.into_inner());
    }
    for (k, g) in raw.gates.into_iter().enumerate() {
        let span = g.span();
        let key = format!("eval.gates[{k}]");
        let g = g.into_inner();
        let err = |m: String| reporter.at(Some(span.clone()), &key, m);
        let grouping = match g.grouping {
            None => Vec::new(),
            Some(GroupingSpec::Many(v)) => v,
            Some(GroupingSpec::One(s)) => s
                .split(['×', '*', ','])
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        };
        for a in &grouping {
            if !attributes.contains(a) {
                return Err(err(format!(
                    "grouping names `{a}`, which is not one of groups.attributes {attributes:?}"
                )));
            }
        }
        if g.group.is_some() {
            if grouping.is_empty() {
                return Err(err(
                    "`group` needs `grouping`: the attributes the group's values are of".into(),
                ));
            }
            if !EVAL_METRICS.contains(&g.metric.as_str()) {
                return Err(err(format!(
                    "`{}` is not a metric (a gate on one group judges one of: {})",
                    g.metric,
                    EVAL_METRICS.join(", ")
                )));
            }
        } else if grouping.is_empty() {
            if !EVAL_METRICS.contains(&g.metric.as_str()) {
                return Err(err(format!(
                    "`{}` is not a metric (without `grouping` a gate judges an overall metric: {})",
                    g.metric,
                    EVAL_METRICS.join(", ")
                )));
            }
        } else if !EVAL_DISPARITIES.contains(&g.metric.as_str()) {
            return Err(err(format!(
                "`{}` is not a disparity (a gate on a grouping judges one of: {})",
                g.metric,
                EVAL_DISPARITIES.join(", ")
            )));
        }
        let relative = match (g.baseline, g.compare.as_deref()) {
            (None, None) => None,
            (baseline, compare) => Some(Relative {
                baseline: baseline.unwrap_or_else(|| "baseline".into()),
                compare: match compare.unwrap_or("difference") {
                    "difference" => Compare::Difference,
                    "ratio" => Compare::Ratio,
                    other => {
                        return Err(err(format!(
                            "compare `{other}` is not one of difference, ratio"
                        )));
                    }
                },
            }),
        };
        if let Some(r) = &relative
            && g.model.as_ref() == Some(&r.baseline)
        {
            return Err(err(format!(
                "model and baseline are both `{}`: a relative gate compares two models",
                r.baseline
            )));
        }
        let op = match g.op.as_str() {
            "<=" => Op::Le,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            ">" => Op::Gt,
            other => return Err(err(format!("op `{other}` is not one of <=, <, >=, >"))),
        };
        if !g.value.is_finite() {
            return Err(err(format!(
                "value must be a finite number, found {}",
                g.value
            )));
        }
        e.gates.push(Gate {
            metric: g.metric,
            grouping,
            group: g.group,
            model: g.model,
            op,
            value: g.value,
            on: g.on,
            key,
            relative,
        });
    }
    Ok(e)
}
