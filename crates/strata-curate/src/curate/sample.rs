//! Pass 1b, exact resampling: per stratum of n training rows and k planned, the cut at
//! rank k mod n by (sample hash, split hash). Rows at or below it get ⌊k/n⌋ + 1 copies,
//! the others ⌊k/n⌋. Identical rows straddling the cut all get the extra copy and the
//! shard writer keeps only as many as the rank allows. Found from what pass 1 observed
//! when the plan is the one it expected, else by a pass of its own over the training
//! rows. Also the pass of reweighing after resampling, over the resampled weights.

use super::*;

/// Trimmed ties: trim id → rows kept of the identical rows straddling a sample cut.
pub(super) type Trims = HashMap<u64, u64>;

impl Passes<'_> {
    /// Pass 1b: each stratum's sample cut, written into its cells' rows of `table`.
    pub(super) async fn sample_pass(
        &self,
        cell_keys: &HashMap<u64, CellKey>,
        cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
        plans: &BTreeMap<(GroupKey, LabelKey), Planned>,
        observed: &Found,
        merged: Option<SampleSeen>,
        table: &mut BTreeMap<u64, CellRow>,
    ) -> Result<Trims, CurateError> {
        let mut trims = Trims::new();
        let strata_plan = self.strata_plan(cells, plans);
        let targets = sample_targets(&strata_plan);
        let split_table = cell_table(table.values());
        let stratum_col = self.stratum_col();
        let train_rows = || async {
            // train is "at or below the first cut": the second cut's lookups are not read
            self.joined(Rows::Keys, split_table.clone())
                .await?
                .filter(at_or_below(col::H_SPLIT, col::H_SAMPLE, "__t1a", "__t1b"))?
                .select(vec![
                    ident(stratum_col).alias(col::STRATUM),
                    ident(col::H_SAMPLE).alias(col::KEY1),
                    ident(col::H_SPLIT).alias(col::KEY2),
                    ident(col::WEIGHT),
                ])
        };
        // pass 1 observed the sample keys of the rows at or below each cell's train
        // window: take out the window's rows above the cut, then find the cuts there
        let from_pass1 = merged.filter(|m| m.plan == strata_plan).and_then(
            |SampleSeen {
                 windows, mut seen, ..
             }| {
                for (cell, (obs, cuts)) in observed {
                    let Cut::At { key, .. } = cuts[0] else {
                        continue;
                    };
                    let stratum = self.stratum_of(&cells[&cell_keys[cell].key]);
                    let into = seen.entry(stratum).or_default();
                    for (&(h_split, h_sample), &(rows, weight)) in obs.keys[1]
                        .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                    {
                        into.remove(
                            strata_functions::zone_of(h_sample, windows.get(&stratum)),
                            (h_sample, h_split),
                            rows,
                            weight,
                        );
                    }
                }
                let (out, missed) = cuts_at(&seen, &targets);
                missed.is_empty().then_some(out)
            },
        );
        let observed = match from_pass1 {
            Some(observed) => observed,
            None => {
                let started = std::time::Instant::now();
                let (observed, _) = find_cuts(
                    train_rows,
                    &targets,
                    self.paths,
                    "curation pass 1b (exact resampling)",
                )
                .await?;
                tracing::info!(
                    strata = observed.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "curation pass 1b done"
                );
                observed
            }
        };
        let mut sample_cuts: HashMap<u64, SampleCut> = HashMap::new();
        for (s, (_, cuts)) in &observed {
            let (k, n) = strata_plan[s];
            let (q, r) = (k / n, k % n);
            let tie = match cuts[0] {
                Cut::At {
                    key, before, at, ..
                } if before + at > r => {
                    let id = trims.len() as u64 + 1;
                    trims.insert(id, q * at + (r - before));
                    Some((id, key))
                }
                _ => None,
            };
            sample_cuts.insert(
                *s,
                SampleCut {
                    copies: q,
                    cut: cuts[0].threshold(),
                    tie,
                },
            );
        }
        for c in cells.values() {
            if let (Some(row), Some(sample)) = (
                table.get_mut(&c.cell_id),
                sample_cuts.get(&self.stratum_of(c)),
            ) {
                row.copies = sample.copies;
                row.sample = sample.cut;
                row.tie = sample.tie;
            }
        }
        Ok(trims)
    }

    /// Reweighing after resampling: the Kamiran–Calders factors of the resampled
    /// training weights (one more aggregate), and whether every cell got one.
    pub(super) async fn reweigh_resampled(
        &self,
        cell_keys: &HashMap<u64, CellKey>,
        table: &BTreeMap<u64, CellRow>,
        trims: &Trims,
        replicate: bool,
    ) -> Result<(BTreeMap<(GroupKey, LabelKey), Option<f64>>, bool), CurateError> {
        let sums = self
            .output(Rows::Keys, cell_table(table.values()), replicate)
            .await
            .and_then(|df| {
                df.filter(is_train())?.aggregate(
                    vec![ident(col::CELL), ident(col::TIE)],
                    vec![
                        count_all().alias("rows"),
                        exact_sum(ident(col::WEIGHT)).alias("w"),
                    ],
                )
            })
            .map_err(df_err("planning reweighing after resampling"))?
            .collect()
            .await
            .map_err(df_err("reweighing after resampling"))?;
        let mut w_after: BTreeMap<(GroupKey, LabelKey), f64> = BTreeMap::new();
        for b in &sums {
            let cell = b
                .column_by_name(col::CELL)
                .expect(col::CELL)
                .as_primitive::<UInt64Type>();
            let tie = b
                .column_by_name(col::TIE)
                .expect(col::TIE)
                .as_primitive::<UInt64Type>();
            let rows = b
                .column_by_name("rows")
                .expect("rows")
                .as_primitive::<Int64Type>();
            let w = decimal_sums(b.column_by_name("w").expect("w"));
            for (r, &w) in w.iter().enumerate() {
                let mut sum = w;
                // a trimmed group of identical rows counts as the rows kept of it
                if let Some(keep) = trims.get(&tie.value(r)) {
                    sum *= *keep as f64 / rows.value(r).max(1) as f64;
                }
                if let Some(k) = cell_keys.get(&cell.value(r)) {
                    *w_after.entry(k.key.clone()).or_default() += sum;
                }
            }
        }
        Ok(kamiran_calders(&w_after))
    }
}
