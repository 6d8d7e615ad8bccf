//! The plan of a curation, on the driver: for every (group, label) cell of the training
//! split, its Kamiran–Calders weight factor (reweighing) or the rows it keeps or copies
//! (resampling), and every group's target share. A pure function of the cells' training
//! rows and weights and the spec, so it is unit- and property-tested without data.

use std::collections::BTreeMap;

use strata_spec::{Curate, MISSING_GROUP, Mode, OnEmpty, Pipeline, Strategy, Target};

use crate::CurateError;
use crate::plan::{kamiran_calders, largest_remainder, plan_total};

/// Group values, in spec order; `None` is the missing group.
pub(crate) type GroupKey = Vec<Option<String>>;
pub(crate) type LabelKey = Option<String>;

/// One (group, label) cell of pass 1, with its rows and weight per split.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cell {
    pub(crate) cell_id: u64,
    pub(crate) group_id: u64,
    pub(crate) rows: [u64; 3],
    pub(crate) weight: [f64; 3],
}

/// A resample stratum's plan: rows available in train and rows planned.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Planned {
    pub(crate) available: u64,
    pub(crate) planned: u64,
    pub(crate) target_share: Option<f64>,
}

/// Every cell's weight factor and plan, and every group's target share.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plans {
    /// The reweighing factor of each cell (`None` where a cell cannot be reweighed).
    pub(crate) factors: BTreeMap<(GroupKey, LabelKey), Option<f64>>,
    pub(crate) plans: BTreeMap<(GroupKey, LabelKey), Planned>,
    /// Each group's target share of the curated training split (resampling).
    pub(crate) group_targets: BTreeMap<GroupKey, f64>,
}

/// The plan for `cells` (keyed by group and label, with their rows and weights per
/// split; only the training split's are read). `stratify_label`: resampling strata are
/// (group, label) cells, each group's count split over its labels in the group's own
/// label proportions; otherwise strata are groups. Warnings (empty cells, groups left
/// out of the target) go to `warnings`; a plan the spec cannot have is an error located
/// at its key.
pub(crate) fn make_plans(
    pipeline: &Pipeline,
    spec: &Curate,
    stratify_label: bool,
    cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
    warnings: &mut Vec<String>,
) -> Result<Plans, CurateError> {
    let attrs = &pipeline.groups.attributes;
    let label_col = &pipeline.label.column;
    let train = 0;
    let mut groups: BTreeMap<GroupKey, BTreeMap<LabelKey, Cell>> = BTreeMap::new();
    for ((g, y), c) in cells {
        groups
            .entry(g.clone())
            .or_default()
            .insert(y.clone(), c.clone());
    }
    for ((g, y), c) in cells {
        if c.rows[train] == 0 {
            warnings.push(format!(
                "cell {} has no rows in the training split",
                describe(attrs, g, Some((label_col, y)))
            ));
        }
    }

    // factor per cell (reweigh / reweigh_after), plan per cell (k, n of its stratum)
    let mut factors: BTreeMap<(GroupKey, LabelKey), Option<f64>> = BTreeMap::new();
    let mut plans: BTreeMap<(GroupKey, LabelKey), Planned> = BTreeMap::new();
    let mut group_targets: BTreeMap<GroupKey, f64> = BTreeMap::new();
    match (spec.strategy, &spec.resample) {
        (Strategy::Reweigh, _) | (_, None) => {
            let w_train: BTreeMap<(GroupKey, LabelKey), f64> = cells
                .iter()
                .map(|(k, c)| (k.clone(), c.weight[train]))
                .collect();
            let (f, complete) = kamiran_calders(&w_train);
            factors = f;
            if !complete {
                warnings.push(incomplete_warning());
            }
            for (k, c) in cells {
                plans.insert(
                    k.clone(),
                    Planned {
                        available: c.rows[train],
                        planned: c.rows[train],
                        target_share: None,
                    },
                );
            }
        }
        (Strategy::Resample, Some(r)) => {
            let keys: Vec<GroupKey> = groups.keys().cloned().collect();
            let available: Vec<u64> = keys
                .iter()
                .map(|g| groups[g].values().map(|c| c.rows[train]).sum())
                .collect();
            let mut shares: Vec<f64> = vec![0.0; keys.len()];
            let mut counts: Option<Vec<u64>> = None;
            let index_of = |values: &[String]| -> Option<usize> {
                let key: GroupKey = values
                    .iter()
                    .map(|v| (v != MISSING_GROUP).then(|| v.clone()))
                    .collect();
                keys.iter().position(|k| *k == key)
            };
            match r.target {
                Target::Uniform => shares.iter_mut().for_each(|s| *s = 1.0 / keys.len() as f64),
                Target::Reference => {
                    for (i, g) in keys.iter().enumerate() {
                        let mut share = 1.0;
                        for (a, v) in attrs.iter().zip(g) {
                            let name = v.as_deref().unwrap_or(MISSING_GROUP);
                            match pipeline.groups.reference.get(a).and_then(|m| m.get(name)) {
                                Some(s) => share *= s,
                                None => {
                                    warnings.push(format!("{a}={name} is not in the reference mix; its groups get no target rows"));
                                    share = 0.0;
                                }
                            }
                        }
                        shares[i] = share;
                    }
                    let sum: f64 = shares.iter().sum();
                    if sum <= 0.0 {
                        return Err(pipeline
                            .error_at(
                                "curate.resample.target",
                                "no group of the data has a positive reference share",
                            )
                            .into());
                    }
                    shares.iter_mut().for_each(|s| *s /= sum);
                }
                Target::Shares | Target::Counts => {
                    let mut c = vec![0u64; keys.len()];
                    for t in &r.strata {
                        let i = index_of(&t.values).ok_or_else(|| {
                            pipeline.error_at(
                                "curate.resample.strata",
                                format!(
                                    "the target names group {} which does not occur in the data",
                                    describe_values(attrs, &t.values)
                                ),
                            )
                        })?;
                        shares[i] = t.share.unwrap_or(0.0);
                        c[i] = t.count.unwrap_or(0);
                    }
                    if r.target == Target::Counts {
                        let total: u64 = c.iter().sum();
                        shares = c
                            .iter()
                            .map(|&x| {
                                if total == 0 {
                                    0.0
                                } else {
                                    x as f64 / total as f64
                                }
                            })
                            .collect();
                        counts = Some(c);
                    }
                    let unlisted: Vec<_> = keys
                        .iter()
                        .zip(&shares)
                        .filter(|(_, s)| **s == 0.0)
                        .map(|(k, _)| describe(attrs, k, None))
                        .collect();
                    if !unlisted.is_empty() {
                        warnings.push(format!(
                            "groups with no target rows are left out of train: {}",
                            unlisted.join(", ")
                        ));
                    }
                }
            }
            // a positive target on a group with no training rows
            for i in 0..keys.len() {
                if shares[i] > 0.0 && available[i] == 0 {
                    let name = describe(attrs, &keys[i], None);
                    match spec.on_empty {
                        OnEmpty::Error => {
                            return Err(pipeline
                                .error_at(
                                    "curate.on_empty",
                                    format!("group {name} has no rows in the training split but a positive target; set on_empty = \"skip\" to drop it"),
                                )
                                .into());
                        }
                        OnEmpty::Skip => {
                            warnings.push(format!(
                                "group {name} has no training rows; skipped (on_empty = \"skip\")"
                            ));
                            shares[i] = 0.0;
                            if let Some(c) = counts.as_mut() {
                                c[i] = 0;
                            }
                        }
                    }
                }
            }
            let sum: f64 = shares.iter().sum();
            if sum <= 0.0 {
                return Err(pipeline
                    .error_at(
                        "curate.resample",
                        "no group has both training rows and a positive target",
                    )
                    .into());
            }
            shares.iter_mut().for_each(|s| *s /= sum);
            let planned_groups: Vec<u64> = match &counts {
                Some(c) if r.mode == Mode::Undersample => c
                    .iter()
                    .zip(&available)
                    .zip(&keys)
                    .map(|((&k, &n), g)| {
                        if k > n {
                            warnings.push(format!(
                                "group {} has {n} training rows but a target of {k}; undersampling keeps {n}",
                                describe(attrs, g, None)
                            ));
                        }
                        k.min(n)
                    })
                    .collect(),
                Some(c) => c.clone(),
                None => {
                    let n = plan_total(r.mode, r.total, &shares, &available)
                        .map_err(|e| pipeline.error_at("curate.resample", e.to_string()))?;
                    let mut k = largest_remainder(n, &shares);
                    for i in 0..k.len() {
                        if shares[i] > 0.0 {
                            match r.mode {
                                Mode::Undersample => k[i] = k[i].min(available[i]),
                                Mode::Oversample => k[i] = k[i].max(available[i]),
                                Mode::Hybrid => {}
                            }
                        }
                    }
                    k
                }
            };
            for (i, g) in keys.iter().enumerate() {
                group_targets.insert(g.clone(), shares[i]);
                let labels = &groups[g];
                if stratify_label {
                    let label_keys: Vec<&LabelKey> = labels.keys().collect();
                    let weights: Vec<f64> = labels.values().map(|c| c.rows[train] as f64).collect();
                    let k = largest_remainder(planned_groups[i], &weights);
                    for (j, y) in label_keys.iter().enumerate() {
                        let n = labels[*y].rows[train];
                        let share_of_group = if available[i] == 0 {
                            0.0
                        } else {
                            n as f64 / available[i] as f64
                        };
                        plans.insert(
                            (g.clone(), (*y).clone()),
                            Planned {
                                available: n,
                                planned: k[j],
                                target_share: Some(shares[i] * share_of_group),
                            },
                        );
                    }
                } else {
                    for y in labels.keys() {
                        plans.insert(
                            (g.clone(), y.clone()),
                            Planned {
                                available: available[i],
                                planned: planned_groups[i],
                                target_share: Some(shares[i]),
                            },
                        );
                    }
                }
            }
            // replication cap, per stratum
            for ((g, y), p) in &plans {
                if p.available > 0 && p.planned as f64 > r.max_replication * p.available as f64 {
                    let name = describe(attrs, g, stratify_label.then_some((label_col, y)));
                    return Err(pipeline
                        .error_at(
                            "curate.resample.max_replication",
                            format!(
                                "stratum {name} needs replication factor {:.2} ({} rows from {}), over the cap {}",
                                p.planned as f64 / p.available as f64,
                                p.planned,
                                p.available,
                                r.max_replication
                            ),
                        )
                        .into());
                }
            }
        }
    }
    Ok(Plans {
        factors,
        plans,
        group_targets,
    })
}

pub(crate) fn incomplete_warning() -> String {
    "some group × label cells of the training split are empty: group and label cannot be made independent; \
     weights are scaled to keep the total"
        .into()
}

pub(crate) fn describe(
    attrs: &[String],
    g: &GroupKey,
    label: Option<(&String, &LabelKey)>,
) -> String {
    let mut parts: Vec<String> = attrs
        .iter()
        .zip(g)
        .map(|(a, v)| format!("{a}={}", v.as_deref().unwrap_or(MISSING_GROUP)))
        .collect();
    if let Some((l, y)) = label {
        parts.push(format!("{l}={}", y.as_deref().unwrap_or(MISSING_GROUP)));
    }
    parts.join(" × ")
}

pub(crate) fn describe_values(attrs: &[String], values: &[String]) -> String {
    attrs
        .iter()
        .zip(values)
        .map(|(a, v)| format!("{a}={v}"))
        .collect::<Vec<_>>()
        .join(" × ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use strata_spec::Pipeline;

    use super::{Cell, GroupKey, LabelKey, make_plans};

    fn pipeline(curate: &str) -> Pipeline {
        let text = format!(
            "[source]\nurl = \"memory:///t.parquet\"\n[label]\ncolumn = \"y\"\npositive = 1\n\
             [groups]\nattributes = [\"g\"]\n{curate}"
        );
        Pipeline::parse("/virtual/p.toml", text).unwrap()
    }

    /// Cells g0..gN × labels 0/1 with the given training rows and weights.
    fn cells(spec: &[(u64, u64, f64)]) -> BTreeMap<(GroupKey, LabelKey), Cell> {
        let mut out = BTreeMap::new();
        for (i, &(n0, n1, w)) in spec.iter().enumerate() {
            for (y, n) in [(0, n0), (1, n1)] {
                out.insert(
                    (vec![Some(format!("g{i}"))], Some(y.to_string())),
                    Cell {
                        rows: [n, 0, 0],
                        weight: [n as f64 * w, 0.0, 0.0],
                        ..Cell::default()
                    },
                );
            }
        }
        out
    }

    fn group_cells() -> impl Strategy<Value = Vec<(u64, u64, f64)>> {
        prop::collection::vec((1u64..400, 1u64..400, 0.5f64..3.0), 1..6)
    }

    proptest! {
        /// Reweighing: every factor is W_g · W_y / (W · W_gy), computed here from the
        /// cells; the total weight is kept; rows are not resampled.
        #[test]
        fn reweigh_factors_are_the_closed_form(spec in group_cells()) {
            let p = pipeline("[curate]\nstrategy = \"reweigh\"\n");
            let c = cells(&spec);
            let plans = make_plans(&p, p.curate.as_ref().unwrap(), true, &c, &mut Vec::new()).unwrap();
            let w = |f: &dyn Fn(&(GroupKey, LabelKey)) -> bool| -> f64 {
                c.iter().filter(|(k, _)| f(k)).map(|(_, c)| c.weight[0]).sum()
            };
            let total = w(&|_| true);
            let mut after = 0.0;
            for (k, cell) in &c {
                let wg = w(&|o| o.0 == k.0);
                let wy = w(&|o| o.1 == k.1);
                let want = wg * wy / (total * cell.weight[0]);
                let got = plans.factors[k].unwrap();
                prop_assert!((got - want).abs() <= 1e-9 * want, "{k:?}: {got} vs {want}");
                after += got * cell.weight[0];
                prop_assert_eq!(plans.plans[k].planned, cell.rows[0]);
            }
            prop_assert!((after - total).abs() <= 1e-9 * total);
        }

        /// A uniform undersample gives every group the smallest group's training rows
        /// (largest remainder over equal shares), split over its labels in its own
        /// label proportions, and never plans more rows than a stratum has.
        #[test]
        fn uniform_undersample_is_the_smallest_group_each(spec in group_cells()) {
            let p = pipeline("[curate]\nstrategy = \"resample\"\n[curate.resample]\ntarget = \"uniform\"\nmode = \"undersample\"\n");
            let c = cells(&spec);
            let plans = make_plans(&p, p.curate.as_ref().unwrap(), true, &c, &mut Vec::new()).unwrap();
            let smallest = spec.iter().map(|(a, b, _)| a + b).min().unwrap();
            for (i, &(n0, n1, _)) in spec.iter().enumerate() {
                let g = vec![Some(format!("g{i}"))];
                let k0 = plans.plans[&(g.clone(), Some("0".into()))].planned;
                let k1 = plans.plans[&(g.clone(), Some("1".into()))].planned;
                prop_assert_eq!(k0 + k1, smallest, "group {}", i);
                prop_assert!(k0 <= n0 && k1 <= n1);
                // the label split follows the group's own proportions (to a row)
                let want0 = smallest as f64 * n0 as f64 / (n0 + n1) as f64;
                prop_assert!((k0 as f64 - want0).abs() < 1.0 + 1e-9, "{} vs {}", k0, want0);
                prop_assert!((plans.group_targets[&g] - 1.0 / spec.len() as f64).abs() < 1e-12);
            }
        }

        /// An oversample keeps every row: each group gets at least its own rows, and the
        /// groups' totals are equal (up to the largest-remainder row).
        #[test]
        fn uniform_oversample_keeps_every_row(spec in group_cells()) {
            let p = pipeline("[curate]\nstrategy = \"resample\"\n[curate.resample]\ntarget = \"uniform\"\nmode = \"oversample\"\nmax_replication = 1000\n");
            let c = cells(&spec);
            let plans = make_plans(&p, p.curate.as_ref().unwrap(), true, &c, &mut Vec::new()).unwrap();
            let mut totals = vec![];
            for (i, &(n0, n1, _)) in spec.iter().enumerate() {
                let g = vec![Some(format!("g{i}"))];
                let k: u64 = [Some("0".to_string()), Some("1".to_string())]
                    .into_iter()
                    .map(|y| plans.plans[&(g.clone(), y)].planned)
                    .sum();
                prop_assert!(k >= n0 + n1, "group {} keeps {} of {}", i, k, n0 + n1);
                totals.push(k);
            }
            let (lo, hi) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", totals);
        }
    }

    /// A group with a target but no training rows is an error at `curate.on_empty`, or
    /// dropped with a warning under `on_empty = "skip"`.
    #[test]
    fn an_empty_group_with_a_target() {
        let mut c = cells(&[(10, 10, 1.0), (5, 5, 1.0)]);
        for y in ["0", "1"] {
            c.get_mut(&(vec![Some("g1".into())], Some(y.into())))
                .unwrap()
                .rows = [0, 3, 3];
        }
        let p = pipeline(
            "[curate]\nstrategy = \"resample\"\n[curate.resample]\ntarget = \"uniform\"\n",
        );
        let e = make_plans(&p, p.curate.as_ref().unwrap(), true, &c, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("curate.on_empty"), "{e}");
        let p = pipeline(
            "[curate]\nstrategy = \"resample\"\non_empty = \"skip\"\n[curate.resample]\ntarget = \"uniform\"\n",
        );
        let mut warnings = vec![];
        let plans = make_plans(&p, p.curate.as_ref().unwrap(), true, &c, &mut warnings).unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("g=g1") && w.contains("skipped")),
            "{warnings:?}"
        );
        assert_eq!(
            plans.plans[&(vec![Some("g0".into())], Some("0".into()))].planned,
            10
        );
    }

    /// A replication factor over `max_replication` is an error naming the stratum.
    #[test]
    fn replication_over_the_cap() {
        let c = cells(&[(100, 100, 1.0), (2, 2, 1.0)]);
        let p = pipeline(
            "[curate]\nstrategy = \"resample\"\n[curate.resample]\ntarget = \"uniform\"\nmode = \"oversample\"\nmax_replication = 10\n",
        );
        let e = make_plans(&p, p.curate.as_ref().unwrap(), true, &c, &mut Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("max_replication") && e.to_string().contains("g=g1"),
            "{e}"
        );
    }
}
