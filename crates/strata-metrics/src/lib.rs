//! strata's fairness-aware evaluation: per-group metrics, disparities with Fairlearn's
//! definitions, stratified bootstrap intervals and gates.
//!
//! Rows go in through an [`Accumulator`] (one per evaluation, fed Arrow arrays or rows)
//! which keeps each cell's rows (the cell: one value of every protected attribute);
//! [`evaluate`] rolls the cells up into each grouping (each attribute alone and the
//! intersections, as the profile groups them), computes every metric and disparity,
//! and draws the bootstrap. Memory: the rows, column by column, for ROC AUC and the
//! bootstrap: 9 bytes a row (label and prediction, score), 8 more with weights, and
//! 4 bytes a row for ROC AUC's order. The definitions are in `docs/evaluation.md`.

mod accumulator;
mod bootstrap;
mod disparity;
mod gates;
mod read;
pub mod render;
mod tally;

use std::collections::BTreeMap;

use serde::Serialize;

pub use accumulator::{Accumulator, Batch};
pub use bootstrap::percentile_interval;
use bootstrap::{Estimate, auc_bins, counted_metrics, estimate, plans, replicate, replicate_aucs};
pub use disparity::{DISPARITIES, disparities};
pub use gates::{GateResult, check_gates, judge};
pub use read::{Columns, Read, model_names, read_predictions, read_predictions_of};
use tally::Rows;
pub use tally::{ECE_BINS, METRICS, SCORE_METRICS, Tally, Value, roc_auc};

pub const EVAL_SCHEMA_VERSION: u32 = 1;

/// Rows whose log-loss terms the bootstrap keeps (32 MiB): all of them for most test
/// splits; past it the rest are recomputed per replicate, so memory stays bounded.
const LOG_LOSSES_KEPT: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("column `{column}`: {message}")]
    Column { column: String, message: String },
    /// Reading a predictions file. The message shows the cause on one line; the cause
    /// itself is the source.
    #[error("{file}: {message}")]
    Read {
        file: String,
        message: String,
        #[source]
        source: strata_spec::BoxError,
    },
    #[error("{0}")]
    Usage(String),
}

impl MetricsError {
    pub(crate) fn read<E: std::error::Error + Send + Sync + 'static>(
        file: &str,
    ) -> impl FnOnce(E) -> Self + '_ {
        move |e| Self::Read {
            file: file.to_string(),
            message: strata_spec::one_line(&e.to_string()),
            source: Box::new(e),
        }
    }
}

/// What [`evaluate`] computes, and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub attributes: Vec<String>,
    /// Indices into `attributes`: each grouping to report.
    pub groupings: Vec<Vec<usize>>,
    /// Bootstrap replicates (0: point estimates only).
    pub replicates: u64,
    pub confidence: f64,
    pub seed: u64,
    /// Groups with fewer rows are reported as too small and left out of disparities.
    pub min_group_rows: u64,
    /// Per attribute, the reference group of `disparate_impact_ratio` and
    /// `average_odds_difference` (default: the group with the largest weight).
    pub reference: BTreeMap<String, String>,
}

/// Display name of a group: its values joined by ` × `, `(missing)` for null.
pub fn group_name(values: &[Option<String>]) -> String {
    values
        .iter()
        .map(|v| v.as_deref().unwrap_or(strata_spec::MISSING_GROUP))
        .collect::<Vec<_>>()
        .join(" × ")
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    pub group: String,
    pub values: Vec<Option<String>>,
    pub rows: u64,
    /// Fewer rows than `min_group_rows`: shown, not judged (left out of disparities).
    pub too_small: bool,
    pub metrics: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupingResult {
    /// e.g. `sex` or `sex × race`.
    pub grouping: String,
    pub attributes: Vec<String>,
    pub groups: Vec<GroupResult>,
    pub disparities: BTreeMap<String, Value>,
    /// Groups left out of the disparities (too small), by name.
    pub excluded_groups: Vec<String>,
    /// The reference group of `disparate_impact_ratio` and `average_odds_difference`.
    pub reference_group: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The model whose predictions these are (`None`: the files have no model column).
    pub model: Option<String>,
    pub rows: u64,
    pub null_labels: u64,
    pub scores: bool,
    pub replicates: u64,
    pub confidence: f64,
    pub seed: u64,
    pub min_group_rows: u64,
    pub overall: GroupResult,
    pub groupings: Vec<GroupingResult>,
    /// Multi-class labels: `overall` and `groupings` hold the accuracy (exact match) and
    /// worst-group accuracy; each class's one-vs-rest metrics and disparities are here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassEvaluation>,
    /// Every cell's key and rows, in key order: two evaluations with the same cells
    /// (and seed) drew the same rows in every replicate, so their replicates pair up.
    #[serde(skip)]
    pub cells: Vec<(Vec<Option<String>>, usize)>,
}

impl Evaluation {
    /// Whether this evaluation's replicates pair with `other`'s: the same cells, sizes,
    /// seed and replicate count (the same rows in each, as two models' predictions of
    /// one test split are).
    pub fn pairs_with(&self, other: &Evaluation) -> bool {
        self.replicates > 0
            && self.replicates == other.replicates
            && self.seed == other.seed
            && self.cells == other.cells
    }
}

/// One class of a multi-class label against the rest.
#[derive(Debug, Clone, Serialize)]
pub struct ClassEvaluation {
    pub class: String,
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

/// Computes every metric, per group and overall, the disparities of every grouping and,
/// with `replicates > 0`, their bootstrap intervals. With more than two classes (labels
/// and predictions together): the accuracy per group, and per class its one-vs-rest
/// metrics (scores are not used).
pub fn evaluate(acc: &Accumulator, options: &EvalOptions) -> Result<Evaluation, MetricsError> {
    if acc.classes.len() > 2 {
        return evaluate_multiclass(acc, options);
    }
    evaluate_binary(acc, options)
}

/// The same rows with the binary label and prediction `f` gives them, without scores.
fn derived(acc: &Accumulator, f: impl Fn((u16, u16)) -> (bool, bool)) -> Accumulator {
    Accumulator {
        cells: acc
            .cells
            .iter()
            .map(|(k, rows)| {
                let code = (0..rows.len())
                    .map(|i| {
                        let (y, p) = f(rows.classes.get(i).copied().unwrap_or((0, 0)));
                        tally::code(y, p)
                    })
                    .collect();
                let rows = Rows {
                    code,
                    score: Vec::new(),
                    w: rows.w.clone(),
                    classes: Vec::new(),
                };
                (k.clone(), rows)
            })
            .collect(),
        has_scores: Some(false),
        classes: Vec::new(),
        null_labels: acc.null_labels,
        rows: acc.rows,
    }
}

/// Keeps only the named metrics and disparities.
fn keep(e: &mut Evaluation, metrics: &[&str], disparities: &[&str]) {
    let m = |g: &mut GroupResult| g.metrics.retain(|k, _| metrics.contains(&k.as_str()));
    m(&mut e.overall);
    for g in &mut e.groupings {
        g.groups.iter_mut().for_each(m);
        g.disparities
            .retain(|k, _| disparities.contains(&k.as_str()));
    }
}

fn evaluate_multiclass(
    acc: &Accumulator,
    options: &EvalOptions,
) -> Result<Evaluation, MetricsError> {
    // accuracy as the share of rows predicted right: label "right", prediction always
    // positive, so its accuracy is Σw·[y = ŷ] / Σw and every replicate draws the same rows
    let mut main = evaluate_binary(&derived(acc, |(y, p)| (y == p, true)), options)?;
    keep(
        &mut main,
        &["count", "weighted_count", "accuracy"],
        &["worst_group_accuracy"],
    );
    let mut order: Vec<usize> = (0..acc.classes.len()).collect();
    let numeric: Option<Vec<i64>> = acc.classes.iter().map(|c| c.parse().ok()).collect();
    match numeric {
        Some(n) => order.sort_by_key(|&i| n[i]),
        None => order.sort_by(|&a, &b| acc.classes[a].cmp(&acc.classes[b])),
    }
    let ovr: Vec<&str> = counted_metrics(false);
    for k in order {
        let k16 = k as u16;
        let mut e = evaluate_binary(&derived(acc, |(y, p)| (y == k16, p == k16)), options)?;
        keep(&mut e, &ovr, &DISPARITIES);
        main.classes.push(ClassEvaluation {
            class: acc.classes[k].clone(),
            evaluation: e,
        });
    }
    Ok(main)
}

fn evaluate_binary(acc: &Accumulator, options: &EvalOptions) -> Result<Evaluation, MetricsError> {
    if acc.cells.is_empty() {
        return Err(MetricsError::Usage("no labelled rows to evaluate".into()));
    }
    if let Some((key, _)) = acc.cells.iter().find(|(_, r)| r.len() > u32::MAX as usize) {
        return Err(MetricsError::Usage(format!(
            "group {} has more than {} rows: more than one evaluation holds",
            group_name(key),
            u32::MAX
        )));
    }
    let scores = acc.has_scores.unwrap_or(false);
    let keys: Vec<&Vec<Option<String>>> = acc.cells.keys().collect();
    let rows: Vec<&Rows> = acc.cells.values().collect();
    let plans = plans(&keys, &options.groupings);
    let metrics = counted_metrics(scores);
    let cell_tallies: Vec<Tally> = rows
        .iter()
        .map(|rs| {
            let mut t = Tally::default();
            for i in 0..rs.len() {
                t.add(rs, i, 1.0);
            }
            t
        })
        .collect();
    // eligibility and references from the point estimate
    let mut eligible = Vec::new();
    let mut reference = Vec::new();
    for plan in &plans {
        let mut t = vec![Tally::default(); plan.keys.len()];
        for (c, ct) in cell_tallies.iter().enumerate() {
            t[plan.cell_group[c]].merge(ct);
        }
        eligible.push(
            t.iter()
                .map(|t| t.rows >= options.min_group_rows as f64)
                .collect::<Vec<_>>(),
        );
        let r = if plan.attributes.len() == 1 {
            let attr = &options.attributes[plan.attributes[0]];
            match options.reference.get(attr) {
                Some(v) => Some(
                    plan.keys
                        .iter()
                        .position(|k| k[0].as_deref() == Some(v.as_str()))
                        .ok_or_else(|| {
                            MetricsError::Usage(format!(
                                "eval.reference_groups.{attr}: group `{v}` is not in the predictions (groups: {})",
                                plan.keys.iter().map(|k| group_name(k)).collect::<Vec<_>>().join(", ")
                            ))
                        })?,
                ),
                None => largest(&t),
            }
        } else {
            largest(&t)
        };
        reference.push(r);
    }
    let point = estimate(&cell_tallies, &plans, &metrics, &eligible, &reference);

    // bootstrap: replicates split over threads, each replicate its own stream
    let mut boot: Vec<Estimate> = Vec::new();
    if options.replicates > 0 {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .max(1) as u64;
        let per = options.replicates.div_ceil(threads);
        // the log-loss terms of up to LOG_LOSSES_KEPT rows, shared by every replicate
        let mut budget = LOG_LOSSES_KEPT;
        let log_losses: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let kept = r.log_losses(budget);
                budget -= kept.len();
                kept
            })
            .collect();
        let chunks: Vec<Vec<Estimate>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (rows, log_losses, plans, metrics, eligible, reference) =
                        (&rows, &log_losses, &plans, &metrics, &eligible, &reference);
                    s.spawn(move || {
                        let mut counts = Vec::new();
                        let mut hist = Vec::new();
                        let bins = auc_bins(rows.len());
                        (t * per..((t + 1) * per).min(options.replicates))
                            .map(|r| {
                                let h = scores.then_some((&mut hist, bins));
                                let tallies =
                                    replicate(rows, log_losses, options.seed, r, &mut counts, h);
                                let mut e = estimate(&tallies, plans, metrics, eligible, reference);
                                if scores {
                                    (e.auc_overall, e.auc_groups) =
                                        replicate_aucs(&hist, bins, plans);
                                }
                                e
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a bootstrap thread panicked"))
                .collect()
        });
        boot = chunks.into_iter().flatten().collect();
    }
    let with_interval = |v: &Result<f64, String>,
                         samples: &mut dyn Iterator<Item = Option<f64>>| {
        let mut value = Value::of(v.clone());
        if value.value.is_some() && !boot.is_empty() {
            let by_replicate: Vec<Option<f64>> = samples.collect();
            let mut xs: Vec<f64> = by_replicate
                .iter()
                .flatten()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            if let Some((lo, hi)) = percentile_interval(&mut xs, options.confidence) {
                value.lower = Some(lo);
                value.upper = Some(hi);
            }
            value.samples = Some(std::sync::Arc::new(by_replicate));
        }
        value
    };
    // the estimate is exact (every score); the replicates' values come from binned scores.
    // Each cell's rows in score order, once (4 bytes a row), merged per group: no copy
    // of the rows, and no sort per group
    let by_score: Vec<Vec<u32>> = if scores {
        rows.iter().map(|rs| rs.by_score()).collect()
    } else {
        Vec::new()
    };
    let auc_of =
        |select: &dyn Fn(usize) -> bool, samples: &mut dyn Iterator<Item = Option<f64>>| -> Value {
            if !scores {
                return Value::undefined("no scores given".into());
            }
            let selected: Vec<(&Rows, &[u32])> = rows
                .iter()
                .zip(&by_score)
                .enumerate()
                .filter(|(c, _)| select(*c))
                .map(|(_, (rs, order))| (*rs, order.as_slice()))
                .collect();
            with_interval(&tally::roc_auc_of_cells(&selected), samples)
        };
    let overall_rows = acc.rows;
    let mut overall_metrics = BTreeMap::new();
    for (k, m) in metrics.iter().enumerate() {
        overall_metrics.insert(
            m.to_string(),
            with_interval(
                &point.overall[k],
                &mut boot.iter().map(|b| b.overall[k].as_ref().ok().copied()),
            ),
        );
    }
    overall_metrics.insert(
        "roc_auc".into(),
        auc_of(&|_| true, &mut boot.iter().map(|b| b.auc_overall)),
    );
    let mut groupings = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        let mut groups = Vec::new();
        for (g, key) in plan.keys.iter().enumerate() {
            let mut m = BTreeMap::new();
            for (k, name) in metrics.iter().enumerate() {
                m.insert(
                    name.to_string(),
                    with_interval(
                        &point.groups[p][g][k],
                        &mut boot
                            .iter()
                            .map(|b| b.groups[p][g][k].as_ref().ok().copied()),
                    ),
                );
            }
            m.insert(
                "roc_auc".into(),
                auc_of(
                    &|c| plan.cell_group[c] == g,
                    &mut boot.iter().map(|b| b.auc_groups.get(p).and_then(|x| x[g])),
                ),
            );
            let rows = m["count"].value.unwrap_or(0.0) as u64;
            groups.push(GroupResult {
                group: group_name(key),
                values: key.clone(),
                rows,
                too_small: !eligible[p][g],
                metrics: m,
            });
        }
        let mut d = BTreeMap::new();
        for (k, name) in DISPARITIES.iter().enumerate() {
            d.insert(
                name.to_string(),
                with_interval(
                    &point.disparities[p][k],
                    &mut boot
                        .iter()
                        .map(|b| b.disparities[p][k].as_ref().ok().copied()),
                ),
            );
        }
        let attributes: Vec<String> = plan
            .attributes
            .iter()
            .map(|&i| options.attributes[i].clone())
            .collect();
        groupings.push(GroupingResult {
            grouping: attributes.join(" × "),
            excluded_groups: groups
                .iter()
                .filter(|g| g.too_small)
                .map(|g| g.group.clone())
                .collect(),
            reference_group: reference[p].map(|r| group_name(&plan.keys[r])),
            attributes,
            groups,
            disparities: d,
        });
    }
    Ok(Evaluation {
        model: None,
        rows: overall_rows,
        null_labels: acc.null_labels,
        scores,
        replicates: options.replicates,
        confidence: options.confidence,
        seed: options.seed,
        min_group_rows: options.min_group_rows,
        overall: GroupResult {
            group: "overall".into(),
            values: Vec::new(),
            rows: overall_rows,
            too_small: false,
            metrics: overall_metrics,
        },
        groupings,
        classes: Vec::new(),
        cells: acc
            .cells
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect(),
    })
}

fn largest(t: &[Tally]) -> Option<usize> {
    (0..t.len()).max_by(|&a, &b| t[a].weight.total_cmp(&t[b].weight).then(b.cmp(&a)))
}

#[cfg(test)]
mod coverage_tests;
