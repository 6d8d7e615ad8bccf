//! Pass 1, the split: within each cell rows are ordered by (split hash, sample hash);
//! the first round(n·train) go to train, the next to validation. The two cut keys are
//! found without sorting (`crate::cut`). For exact resampling the same pass also
//! observes the sample keys it will need (docs/curation.md, "How it runs").

use super::*;

/// Per cell: its rows and the ranks of its two split cuts.
pub(super) type SplitTargets = BTreeMap<u64, (u64, Vec<u64>)>;

/// Each cell's rows and split ranks: round(n·train), round(n·(train + validation)).
pub(super) fn split_targets(
    cell_keys: &HashMap<u64, CellKey>,
    split: strata_spec::SplitFractions,
) -> SplitTargets {
    let round = |n: u64, f: f64| ((n as f64) * f + 0.5).floor() as u64;
    cell_keys
        .iter()
        .map(|(id, k)| {
            (
                *id,
                (
                    k.rows,
                    vec![
                        round(k.rows, split.train),
                        round(k.rows, split.train + split.validation).min(k.rows),
                    ],
                ),
            )
        })
        .collect()
}

/// What pass 1 found: each cell's observation and cuts, and, for exact resampling when
/// it could, the sample keys pass 1b needs.
pub(super) struct SplitFound {
    pub(super) observed: Found,
    pub(super) merged: Option<SampleSeen>,
}

impl Passes<'_> {
    /// Pass 1. Exact resampling's sample cuts need the plan, which needs each cell's
    /// training rows: those are the split's first rank, round(n·train), unless identical
    /// rows straddle the cut. So the plan is worked out from those ranks, and this pass
    /// also observes the sample keys of the rows at or below the top of each cell's
    /// train window; the rows of that window above the actual cut are taken out
    /// afterwards. Pass 1b runs only when the plan turns out different or a cut misses
    /// its window.
    pub(super) async fn split_pass(
        &self,
        cell_keys: &HashMap<u64, CellKey>,
        targets: &SplitTargets,
    ) -> Result<SplitFound, CurateError> {
        let started = std::time::Instant::now();
        let what = "curation pass 1 (the split)";
        let rows_by_cell = || async {
            self.keyed(Rows::Keys).await?.select(vec![
                ident(col::CELL).alias(col::STRATUM),
                ident(col::H_SPLIT).alias(col::KEY1),
                ident(col::H_SAMPLE).alias(col::KEY2),
                ident(col::WEIGHT),
            ])
        };
        let predicted = if self.resample && self.exact && self.paths == CutPaths::Merged {
            self.predicted_plan(cell_keys, targets)
        } else {
            None
        };
        let mut merged: Option<SampleSeen> = None;
        let (observed, bad_weights) = match predicted {
            Some(strata_plan) => {
                let split_windows = windows_of(targets);
                let sample_windows = windows_of(&sample_targets(&strata_plan));
                // the top of each cell's train window: rows at or below it may be train
                let top: Vec<(u64, Option<u64>)> = targets
                    .iter()
                    .map(|(id, (n, ks))| {
                        let top = match split_windows[id][0] {
                            Some((_, hi)) => Some(hi),
                            None if ks[0] >= *n && *n > 0 => Some(u64::MAX),
                            None => None,
                        };
                        (*id, top)
                    })
                    .collect();
                let df = self
                    .keyed(Rows::Keys)
                    .await
                    .and_then(|df| {
                        df.select(vec![
                            ident(col::CELL).alias(col::STRATUM),
                            ident(col::H_SPLIT).alias(col::KEY1),
                            ident(col::H_SAMPLE).alias(col::KEY2),
                            ident(col::WEIGHT),
                            ident(self.stratum_col()).alias("__stratum_b"),
                            lookup(
                                ident(col::CELL),
                                &top.iter().map(|t| t.0).collect::<Vec<_>>(),
                                Arc::new(UInt64Array::from(
                                    top.iter().map(|t| t.1).collect::<Vec<_>>(),
                                )),
                            )
                            .alias("__top"),
                        ])
                    })
                    .map_err(df_err(what))?;
                let a = zones(col::STRATUM, col::KEY1, col::KEY2, &split_windows);
                let b = zones("__stratum_b", col::KEY2, col::KEY1, &sample_windows)
                    .filter(ident(col::KEY1).lt_eq(ident("__top")))
                    .build()
                    .map_err(df_err(what))?;
                let both = "curation pass 1 (the split and the sample)";
                let batches = df
                    .aggregate(vec![], vec![a.alias("zones"), b.alias("zones_b")])
                    .map_err(df_err(both))?
                    .collect()
                    .await
                    .map_err(df_err(both))?;
                let (seen, bad) = read_zones(&batches, "zones", both)?;
                let (seen_b, _) = read_zones(&batches, "zones_b", both)?;
                let (out, missed) = cuts_at(&seen, targets);
                if missed.is_empty() {
                    merged = Some(SampleSeen {
                        windows: sample_windows,
                        seen: seen_b,
                        plan: strata_plan,
                    });
                    (out, bad)
                } else {
                    find_cuts(rows_by_cell, targets, self.paths, what).await?
                }
            }
            None => find_cuts(rows_by_cell, targets, self.paths, what).await?,
        };
        tracing::info!(
            cells = observed.len(),
            with_sample = merged.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "curation pass 1 done"
        );
        if bad_weights > 0 {
            return Err(strata_engine::invalid_weights_error(
                self.pipeline,
                bad_weights,
                &self.source.url,
            )
            .into());
        }
        Ok(SplitFound { observed, merged })
    }

    /// The exact-resampling plan the split's ranks predict (each cell's training rows
    /// round(n·train)), or `None` where no plan can be made of them.
    fn predicted_plan(
        &self,
        cell_keys: &HashMap<u64, CellKey>,
        targets: &SplitTargets,
    ) -> Option<BTreeMap<u64, (u64, u64)>> {
        let mut predicted_cells = BTreeMap::new();
        for (id, k) in cell_keys {
            let ranks = &targets[id].1;
            let rows = [ranks[0], ranks[1] - ranks[0], k.rows - ranks[1]];
            predicted_cells.insert(
                k.key.clone(),
                Cell {
                    cell_id: *id,
                    group_id: k.group,
                    rows,
                    weight: [0.0; 3],
                },
            );
        }
        make_plans(
            self.pipeline,
            self.spec,
            self.stratify_label,
            &predicted_cells,
            &mut Vec::new(),
        )
        .ok()
        .map(|p| self.strata_plan(&predicted_cells, &p.plans))
    }
}

/// Every cell by its (group, label) values.
pub(super) type Cells = BTreeMap<(GroupKey, LabelKey), Cell>;

/// The cells as the split cut them: rows and weights per split, and the two cuts.
/// Identical rows kept together at a cut are reported in `warnings`.
pub(super) fn split_cells(
    pipeline: &Pipeline,
    cell_keys: &HashMap<u64, CellKey>,
    targets: &SplitTargets,
    observed: &Found,
    warnings: &mut Vec<String>,
) -> (Cells, HashMap<u64, [Cut; 2]>) {
    let mut cells: BTreeMap<(GroupKey, LabelKey), Cell> = BTreeMap::new();
    let mut split_cuts: HashMap<u64, [Cut; 2]> = HashMap::new();
    for (id, (obs, cuts)) in observed {
        let CellKey {
            key: (g, y),
            group: group_id,
            ..
        } = cell_keys[id].clone();
        let (c1, c2) = (cuts[0], cuts[1]);
        let parts = [
            cut::between(obs, None, &c1),
            cut::between(obs, Some(&c1), &c2),
            cut::between(obs, Some(&c2), &Cut::Everything),
        ];
        let ranks = &targets[id].1;
        for (c, k, name) in [
            (c1, ranks[0], "train/validation"),
            (c2, ranks[1], "validation/test"),
        ] {
            if let Cut::At { before, at, .. } = c
                && before + at > k
            {
                warnings.push(format!(
                    "cell {}: {at} identical rows at the {name} cut were kept together",
                    describe(
                        &pipeline.groups.attributes,
                        &g,
                        Some((&pipeline.label.column, &y))
                    )
                ));
            }
        }
        cells.insert(
            (g, y),
            Cell {
                cell_id: *id,
                group_id,
                rows: [parts[0].0, parts[1].0, parts[2].0],
                weight: [parts[0].1, parts[1].1, parts[2].1],
            },
        );
        split_cuts.insert(*id, [c1, c2]);
    }
    (cells, split_cuts)
}
