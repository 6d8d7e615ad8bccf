//! The curation summary (`curation.json`), from the plan and what the writer wrote.

use super::*;

/// A summary stratum's figures, summed over its cells.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StratumTally {
    pub(super) rows_before: u64,
    pub(super) planned: u64,
    /// Σw and Σw² of its curated training rows.
    pub(super) weight: f64,
    pub(super) weight_sq: f64,
    pub(super) target_share: Option<f64>,
    /// Its Kamiran–Calders factor, if reweighed.
    pub(super) factor: Option<f64>,
}

pub(super) struct SummaryInput<'a> {
    pub(super) pipeline: &'a Pipeline,
    pub(super) seed: u64,
    pub(super) source: &'a SourceTable,
    pub(super) output: &'a str,
    pub(super) cells: &'a BTreeMap<(GroupKey, LabelKey), Cell>,
    pub(super) plans: &'a BTreeMap<(GroupKey, LabelKey), Planned>,
    pub(super) factors: &'a BTreeMap<(GroupKey, LabelKey), Option<f64>>,
    pub(super) group_targets: &'a BTreeMap<GroupKey, f64>,
    pub(super) stratify_label: bool,
    /// (group, label, split) -> rows, Σw, Σw², as written.
    pub(super) got: &'a BTreeMap<(GroupKey, LabelKey, usize), (u64, f64, f64)>,
    pub(super) warnings: Vec<String>,
}

pub(super) fn summarise(input: SummaryInput<'_>) -> Result<Curation, CurateError> {
    let SummaryInput {
        pipeline,
        seed,
        source,
        output,
        cells,
        plans,
        factors,
        group_targets,
        stratify_label,
        got,
        mut warnings,
    } = input;
    let attrs = &pipeline.groups.attributes;
    let spec = pipeline.curate.as_ref().expect("checked by curate");
    let splits = (0..3)
        .map(|s| SplitSummary {
            split: SPLITS[s].to_string(),
            rows_before: cells.values().map(|c| c.rows[s]).sum(),
            rows_after: got.iter().filter(|(k, _)| k.2 == s).map(|(_, v)| v.0).sum(),
            weight_sum: got.iter().filter(|(k, _)| k.2 == s).map(|(_, v)| v.1).sum(),
        })
        .collect::<Vec<_>>();

    // strata of the summary: cells, or groups when resampling by group only
    let by_label = stratify_label || spec.strategy == Strategy::Reweigh;
    let mut strata: BTreeMap<(GroupKey, Option<LabelKey>), StratumTally> = BTreeMap::new();
    for ((g, y), c) in cells {
        let key = (g.clone(), by_label.then(|| y.clone()));
        let a = got
            .get(&(g.clone(), y.clone(), 0))
            .copied()
            .unwrap_or_default();
        let p = plans
            .get(&(g.clone(), y.clone()))
            .copied()
            .unwrap_or_default();
        let e = strata.entry(key).or_default();
        e.rows_before += c.rows[0];
        e.planned = if by_label {
            p.planned
        } else {
            p.planned.max(e.planned)
        };
        e.weight += a.1;
        e.weight_sq += a.2;
        e.target_share = if by_label {
            p.target_share
        } else {
            group_targets.get(g).copied()
        };
        e.factor = factors.get(&(g.clone(), y.clone())).copied().flatten();
    }
    let train_before: u64 = splits[0].rows_before;
    let train_after: u64 = splits[0].rows_after;
    let mut out = Vec::new();
    for (
        (g, y),
        StratumTally {
            rows_before: before,
            planned,
            weight: w,
            weight_sq: w2,
            target_share: target,
            factor,
        },
    ) in strata
    {
        let rows_after: u64 = got
            .iter()
            .filter(|((gg, yy, s), _)| *s == 0 && *gg == g && y.as_ref().is_none_or(|y| yy == y))
            .map(|(_, v)| v.0)
            .sum();
        let mut stratum = serde_json::Map::new();
        for (a, v) in attrs.iter().zip(&g) {
            stratum.insert(
                a.clone(),
                v.clone()
                    .map_or(serde_json::Value::Null, serde_json::Value::String),
            );
        }
        if let Some(y) = &y {
            stratum.insert(
                pipeline.label.column.clone(),
                label_json(&pipeline.label.positive, y),
            );
        }
        if planned > rows_after
            && spec.strategy == Strategy::Resample
            && spec.resample.as_ref().is_some_and(|r| r.exact)
        {
            warnings.push(format!(
                "stratum {stratum:?} got {rows_after} rows of the {planned} planned"
            ));
        }
        out.push(StratumSummary {
            stratum,
            rows_before: before,
            share_before: if train_before == 0 {
                0.0
            } else {
                before as f64 / train_before as f64
            },
            target_share: target,
            planned_rows: planned,
            rows_after,
            share_after: if train_after == 0 {
                0.0
            } else {
                rows_after as f64 / train_after as f64
            },
            weight_sum: w,
            effective_rows: if w2 > 0.0 { w * w / w2 } else { 0.0 },
            replication: if before == 0 {
                0.0
            } else {
                rows_after as f64 / before as f64
            },
            weight_factor: factor,
        });
    }
    let (tw, tw2) = got
        .iter()
        .filter(|(k, _)| k.2 == 0)
        .fold((0.0, 0.0), |acc, (_, v)| (acc.0 + v.1, acc.1 + v.2));
    let mut stratum_columns = attrs.clone();
    if by_label {
        stratum_columns.push(pipeline.label.column.clone());
    }
    Ok(Curation {
        schema_version: SUMMARY_SCHEMA_VERSION,
        pipeline: pipeline.name.clone(),
        strategy: match spec.strategy {
            Strategy::Reweigh => "reweigh".into(),
            Strategy::Resample => "resample".into(),
        },
        seed,
        source: source.url.clone(),
        output: output.to_string(),
        stratum_columns,
        splits,
        strata: out,
        train_effective_rows: if tw2 > 0.0 { tw * tw / tw2 } else { 0.0 },
        warnings,
    })
}

/// A label value back in its spec type for the JSON summary.
pub(super) fn label_json(positive: &LabelValue, y: &LabelKey) -> serde_json::Value {
    let Some(y) = y else {
        return serde_json::Value::Null;
    };
    match positive {
        LabelValue::Int(_) => y.parse::<i64>().map_or_else(
            |_| serde_json::Value::String(y.clone()),
            serde_json::Value::from,
        ),
        LabelValue::Bool(_) => y.parse::<bool>().map_or_else(
            |_| serde_json::Value::String(y.clone()),
            serde_json::Value::from,
        ),
        LabelValue::String(_) => serde_json::Value::String(y.clone()),
    }
}
