use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt64Type};
use datafusion::functions::math::expr_fn::floor;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::functions_nested::expr_fn::range;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::prelude::*;
use strata_engine::{CODED_SOURCE_TABLE, Engine, EngineError, SOURCE_TABLE, SourceTable};
use strata_functions::{derive_seed, lookup, strata_hash_udf, strata_if_udf, stream};
use strata_publish::{ShardSink, SinkColumns};
use strata_run::{Destination, Manifest};
use strata_spec::{LabelValue, Pipeline, ShardSize, Strategy, Stratify};

use crate::CurateError;
use crate::columns as col;
use crate::cut::{self, Cut, Key, Observed, Window};
use crate::plan::kamiran_calders;
use crate::planning::{
    Cell, GroupKey, LabelKey, Planned, Plans, describe, incomplete_warning, make_plans,
};
use crate::publish;
use strata_run::{Curation, SUMMARY_SCHEMA_VERSION, SplitSummary, StratumSummary};

/// The per-stratum summary, in the run's folder next to the shards.
pub const SUMMARY_FILE: &str = "curation.json";

pub(crate) const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// Per-run settings that the CLI may override.
#[derive(Debug, Clone, Default)]
pub struct CurateOptions {
    /// Overrides `curate.seed`.
    pub seed: Option<u64>,
    /// Output folder URL (`file://`, a path, `s3://`, ...).
    pub out: String,
    /// The run's folder name under `runs/`; by default derived from the run's identity.
    pub run_id: Option<String>,
}

/// A published (or already published) run.
#[derive(Debug)]
pub struct Published {
    pub curation: Curation,
    pub manifest: Manifest,
    /// The run's folder.
    pub run_url: String,
    /// The same run (same identity) was already committed there; nothing was written.
    pub already_published: bool,
}

/// Exact resampling's sample keys as pass 1 observed them: per stratum, the rows at or
/// below the top of each of its cells' train windows, in `windows` around the cuts of
/// `plan` (stratum → rows planned, training rows), the plan the split was expected to
/// give.
struct SampleSeen {
    windows: BTreeMap<u64, [Option<Window>; 2]>,
    seen: HashMap<u64, Observed>,
    plan: BTreeMap<u64, (u64, u64)>,
}

fn df_err(context: &str) -> impl FnOnce(datafusion::error::DataFusionError) -> CurateError + '_ {
    move |e| CurateError::Engine(EngineError::datafusion(context.to_string())(e))
}

/// Runs curation (see the crate docs) and publishes the result under `options.out`:
/// stratified shards, `SUMMARY_FILE` and a manifest in the run's folder, then the
/// `_latest` pointer. Every check on the spec, the data and the plan happens before
/// anything is written; a failure before the manifest leaves no committed run.
pub async fn curate(
    engine: &Engine,
    pipeline: &Pipeline,
    source: &SourceTable,
    options: &CurateOptions,
) -> Result<Published, CurateError> {
    let spec = pipeline
        .curate
        .as_ref()
        .ok_or_else(|| pipeline.error_at("curate", "the pipeline has no [curate] section"))?;
    let seed = options.seed.unwrap_or(spec.seed);
    // the shard writer's tuning, checked before any work ("0" spills from the start, as
    // under --memory-limit)
    let shard_memory = tuning("STRATA_SHARD_MEMORY", |v| {
        if v.trim() == "0" {
            Ok(0)
        } else {
            strata_spec::parse_size(v).map(|b| b as usize)
        }
    })?;
    let range_rows = tuning("STRATA_RANGE_ROWS", |v| {
        v.parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or("not a positive row count".into())
    })?;
    // which ways to the cuts are taken: only for tests that check each way gives the
    // same bytes (docs/curation.md, "How it runs")
    let paths = tuning("STRATA_CUT_PATHS", |v| match v {
        "separate" => Ok(CutPaths::Separate),
        "full-window" => Ok(CutPaths::FullWindow),
        _ => Err("one of `separate` or `full-window`".into()),
    })?
    .unwrap_or_default();
    let ctx = engine.context();
    let attrs = &pipeline.groups.attributes;
    let label_col = &pipeline.label.column;

    for reserved in ["split", "sample_weight"].iter().chain(col::ALL) {
        if source.schema.field_with_name(reserved).is_ok() {
            return Err(EngineError::Source {
                url: source.url.clone(),
                message: format!(
                    "has a column named `{reserved}`, which curation adds or uses; rename it first"
                ),
            }
            .into());
        }
    }

    // --- where the run goes; a run already committed there is not redone ---
    let (destination, run) =
        match publish::open_run(engine, pipeline, source, seed, options).await? {
            publish::Opened::Already(published) => return Ok(*published),
            publish::Opened::New { destination, run } => (destination, run),
        };

    // --- keyed rows: hashes for the split, the sample, and the cell and group ids ---
    let hash = strata_hash_udf();
    let call = |stream: u64, cols: &[Expr]| {
        let mut args = vec![lit(derive_seed(seed, stream))];
        args.extend(cols.iter().cloned());
        hash.call(args)
    };
    // the same hash for columns of few values, computed once per distinct tuple
    let group_hash = strata_functions::strata_group_hash_udf();
    let group_call = |stream: u64, cols: &[Expr]| {
        let mut args = vec![lit(derive_seed(seed, stream))];
        args.extend(cols.iter().cloned());
        group_hash.call(args)
    };
    let source_cols: Vec<Expr> = source
        .schema
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .collect();
    let key_cols: Vec<Expr> = match &pipeline.source.id_column {
        Some(id) => vec![ident(id)],
        None => source_cols.clone(),
    };
    let attr_cols: Vec<Expr> = attrs.iter().map(ident).collect();
    let cell_columns = pipeline.cell_columns();
    let cell_cols: Vec<Expr> = cell_columns.iter().map(ident).collect();
    let weight = match &pipeline.source.weight_column {
        Some(w) => cast(ident(w), DataType::Float64),
        None => lit(1.0f64),
    };
    let mut keyed_cols = source_cols.clone();
    keyed_cols.extend([
        call(stream::SPLIT, &key_cols).alias(col::H_SPLIT),
        call(stream::SAMPLE, &key_cols).alias(col::H_SAMPLE),
        group_call(stream::GROUP, &attr_cols).alias(col::GROUP),
        group_call(stream::CELL, &cell_cols).alias(col::CELL),
        weight.alias(col::WEIGHT),
    ]);
    let keyed = || async { ctx.table(SOURCE_TABLE).await?.select(keyed_cols.clone()) };

    // --- pass 0: rows per cell ---
    let cell_keys = count_cells(engine, pipeline, source, seed).await?;

    // --- the plan: a function of each cell's rows per split (for resampling, of its
    //     training rows alone), so exact resampling can work it out before the split
    //     pass from the rows the split will give (see pass 1b) ---
    let train = 0;
    let stratify_label = match (&spec.resample, spec.strategy) {
        (Some(r), Strategy::Resample) => r.stratify == Stratify::GroupsLabel,
        _ => true,
    };
    let resample = matches!(spec.strategy, Strategy::Resample);
    let (exact, reweigh_after) = spec
        .resample
        .as_ref()
        .map_or((true, false), |r| (r.exact, r.reweigh_after));
    // Shard strata are the curation's strata: (group, label) cells, or groups when
    // resampling by group only.
    let group_strata = resample && !stratify_label;
    let stratum_col = if group_strata { col::GROUP } else { col::CELL };
    let stratum_of = |c: &Cell| if group_strata { c.group_id } else { c.cell_id };
    // stratum → (rows planned, training rows) of exact resampling
    let strata_plan_of =
        |cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
         plans: &BTreeMap<(GroupKey, LabelKey), Planned>| {
            let mut strata_plan: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for (k, c) in cells {
                let p = plans.get(k).copied().unwrap_or_default();
                strata_plan.insert(stratum_of(c), (p.planned, p.available));
            }
            strata_plan
        };

    // --- pass 1: the split. Within each cell rows are ordered by (split hash, sample
    //     hash); the first round(n·train) go to train, the next to validation. The two
    //     cut keys are found without sorting (see `cut`) ---
    let split = spec.split;
    let round = |n: u64, f: f64| ((n as f64) * f + 0.5).floor() as u64;
    // cell → (rows, [train cut rank, validation cut rank])
    let targets: BTreeMap<u64, (u64, Vec<u64>)> = cell_keys
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
        .collect();
    let started = std::time::Instant::now();
    let rows_by_cell = || async {
        keyed().await?.select(vec![
            ident(col::CELL).alias(col::STRATUM),
            ident(col::H_SPLIT).alias(col::KEY1),
            ident(col::H_SAMPLE).alias(col::KEY2),
            ident(col::WEIGHT),
        ])
    };
    // Exact resampling's sample cuts need the plan, which needs each cell's training
    // rows: those are the split's first rank, round(n·train), unless identical rows
    // straddle the cut. So the plan is worked out from those ranks, and pass 1 also
    // observes the sample keys of the rows at or below the top of each cell's train
    // window; the rows of that window above the actual cut are taken out afterwards.
    // Pass 1b runs only when the plan turns out different or a cut misses its window.
    let predicted = if resample && exact && paths == CutPaths::Merged {
        let mut predicted_cells = BTreeMap::new();
        for (id, k) in &cell_keys {
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
            pipeline,
            spec,
            stratify_label,
            &predicted_cells,
            &mut Vec::new(),
        )
        .ok()
        .map(|p| strata_plan_of(&predicted_cells, &p.plans))
    } else {
        None
    };
    let mut merged: Option<SampleSeen> = None;
    let (observed, bad_weights) = match predicted {
        Some(strata_plan) => {
            let split_windows = windows_of(&targets);
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
            let df = keyed()
                .await
                .map_err(df_err("curation pass 1 (the split)"))?;
            let df = df
                .select(vec![
                    ident(col::CELL).alias(col::STRATUM),
                    ident(col::H_SPLIT).alias(col::KEY1),
                    ident(col::H_SAMPLE).alias(col::KEY2),
                    ident(col::WEIGHT),
                    ident(stratum_col).alias("__stratum_b"),
                    lookup(
                        ident(col::CELL),
                        &top.iter().map(|t| t.0).collect::<Vec<_>>(),
                        Arc::new(UInt64Array::from(
                            top.iter().map(|t| t.1).collect::<Vec<_>>(),
                        )),
                    )
                    .alias("__top"),
                ])
                .map_err(df_err("curation pass 1 (the split)"))?;
            let a = zones(col::STRATUM, col::KEY1, col::KEY2, &split_windows);
            let b = zones("__stratum_b", col::KEY2, col::KEY1, &sample_windows)
                .filter(ident(col::KEY1).lt_eq(ident("__top")))
                .build()
                .map_err(df_err("curation pass 1 (the split)"))?;
            let what = "curation pass 1 (the split and the sample)";
            let batches = df
                .aggregate(vec![], vec![a.alias("zones"), b.alias("zones_b")])
                .map_err(df_err(what))?
                .collect()
                .await
                .map_err(df_err(what))?;
            let (seen, bad) = read_zones(&batches, "zones", what)?;
            let (seen_b, _) = read_zones(&batches, "zones_b", what)?;
            let (out, missed) = cuts_at(&seen, &targets);
            if missed.is_empty() {
                merged = Some(SampleSeen {
                    windows: sample_windows,
                    seen: seen_b,
                    plan: strata_plan,
                });
                (out, bad)
            } else {
                find_cuts(rows_by_cell, &targets, paths, "curation pass 1 (the split)").await?
            }
        }
        None => find_cuts(rows_by_cell, &targets, paths, "curation pass 1 (the split)").await?,
    };
    tracing::info!(
        cells = observed.len(),
        with_sample = merged.is_some(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "curation pass 1 done"
    );
    if bad_weights > 0 {
        return Err(
            strata_engine::invalid_weights_error(pipeline, bad_weights, &source.url).into(),
        );
    }
    let mut warnings = Vec::new();
    let mut cells: BTreeMap<(GroupKey, LabelKey), Cell> = BTreeMap::new();
    let mut split_cuts: HashMap<u64, [Cut; 2]> = HashMap::new();
    for (id, (obs, cuts)) in &observed {
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
                    describe(attrs, &g, Some((label_col, &y)))
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

    // weights of zero throughout leave nothing to reweigh and nothing for a model to
    // learn from: an error, not a run of all-zero sample weights
    if let Some(w) = &pipeline.source.weight_column
        && cells.values().all(|c| c.weight[train] == 0.0)
        && cells.values().any(|c| c.rows[train] > 0)
    {
        return Err(pipeline
            .error_at(
                "source.weight_column",
                format!(
                    "every training row of source `{}` has weight 0 in column `{w}`; \
                     there is nothing to curate",
                    source.url
                ),
            )
            .into());
    }

    // --- plan on the driver ---
    let Plans {
        mut factors,
        plans,
        group_targets,
    } = make_plans(pipeline, spec, stratify_label, &cells, &mut warnings)?;

    let replicate = resample && plans.values().any(|p| p.planned > p.available);

    // --- the per-cell table every later pass joins to its rows: the split cuts, the
    //     plan of the cell's stratum, later the sample cut and the weight factor ---
    let mut table: BTreeMap<u64, CellRow> = BTreeMap::new();
    for (k, c) in &cells {
        let p = plans.get(k).copied().unwrap_or_default();
        let [c1, c2] = split_cuts[&c.cell_id];
        table.insert(
            c.cell_id,
            CellRow {
                cell: c.cell_id,
                split: [c1.threshold(), c2.threshold()],
                planned: p.planned,
                available: p.available,
                ..CellRow::default()
            },
        );
    }
    // the rows with the cell's table columns and their split, as an index into SPLITS
    // (choices by `strata_if`, not CASE: see strata_functions::strata_if_udf)
    let pick = strata_if_udf();
    let pick = |c: Expr, a: Expr, b: Expr| pick.call(vec![c, a, b]);
    let joined = |table: CellTable| async move {
        let df = keyed().await?;
        let mut columns: Vec<Expr> = df
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        columns.extend(
            table
                .columns
                .into_iter()
                .map(|(name, values)| lookup(ident(col::CELL), &table.keys, values).alias(name)),
        );
        df.select(columns)?.with_column(
            col::SPLIT,
            pick(
                at_or_below(col::H_SPLIT, col::H_SAMPLE, "__t1a", "__t1b"),
                lit(0u8),
                pick(
                    at_or_below(col::H_SPLIT, col::H_SAMPLE, "__t2a", "__t2b"),
                    lit(1u8),
                    lit(2u8),
                ),
            ),
        )
    };
    let is_train = || ident(col::SPLIT).eq(lit(0u8));

    // --- pass 1b (exact resampling): per stratum of n training rows and k planned, the
    //     cut at rank k mod n by (sample hash, split hash). Rows at or below it get
    //     ⌊k/n⌋ + 1 copies, the others ⌊k/n⌋. Identical rows straddling the cut all get
    //     the extra copy and the shard writer keeps only as many as the rank allows.
    //     Found from what pass 1 observed when the plan is the one it expected, else by a
    //     pass of its own over the training rows ---
    let mut trims: HashMap<u64, u64> = HashMap::new();
    if resample && exact {
        let strata_plan = strata_plan_of(&cells, &plans);
        let targets = sample_targets(&strata_plan);
        let split_table = cell_table(table.values());
        let train_rows = || async {
            // train is "at or below the first cut": the second cut's lookups are not read
            joined(split_table.clone())
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
                for (cell, (obs, cuts)) in &observed {
                    let Cut::At { key, .. } = cuts[0] else {
                        continue;
                    };
                    let stratum = stratum_of(&cells[&cell_keys[cell].key]);
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
                    paths,
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
            if let (Some(row), Some(sample)) =
                (table.get_mut(&c.cell_id), sample_cuts.get(&stratum_of(c)))
            {
                row.copies = sample.copies;
                row.sample = sample.cut;
                row.tie = sample.tie;
            }
        }
    }

    let build_output = |table: CellTable| async move {
        let mut df = joined(table).await?;
        let copies = if !resample {
            lit(1i64)
        } else if exact {
            let extra = pick(
                at_or_below(col::H_SAMPLE, col::H_SPLIT, "__ra", "__rb"),
                lit(1i64),
                lit(0i64),
            );
            pick(is_train(), ident("__q") + extra, lit(1i64))
        } else {
            let p = cast(ident("__k"), DataType::Float64) / cast(ident("__n"), DataType::Float64);
            let u = cast(ident(col::H_SAMPLE), DataType::Float64)
                / lit(18_446_744_073_709_551_616.0f64);
            let extra = pick(u.lt(p.clone() - floor(p.clone())), lit(1i64), lit(0i64));
            pick(
                is_train(),
                cast(floor(p), DataType::Int64) + extra,
                lit(1i64),
            )
        };
        df = df
            .with_column(col::COPIES, copies)?
            .filter(ident(col::COPIES).gt(lit(0i64)))?;
        df = if replicate {
            df.with_column(col::COPY, range(lit(0i64), ident(col::COPIES), lit(1i64)))?
                .unnest_columns(&[col::COPY])?
        } else {
            df.with_column(col::COPY, lit(0i64))?
        };
        let in_tie = is_train()
            .and(ident(col::H_SAMPLE).eq(ident("__tie_a")))
            .and(ident(col::H_SPLIT).eq(ident("__tie_b")));
        df.with_column(col::TIE, pick(in_tie, ident("__tie_id"), lit(0u64)))
    };

    // reweighing after resampling uses the resampled weight sums: one more aggregate
    if resample && reweigh_after {
        let sums = build_output(cell_table(table.values()))
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
        let (f, complete) = kamiran_calders(&w_after);
        factors = f;
        if !complete {
            warnings.push(incomplete_warning());
        }
    }
    for (k, c) in &cells {
        if let Some(row) = table.get_mut(&c.cell_id) {
            row.factor = factors.get(k).copied().flatten();
        }
    }

    let shard_rows = match pipeline.publish.shard_size {
        ShardSize::Rows(n) => n,
        ShardSize::Bytes(bytes) => {
            let source_rows: u64 = cells.values().map(|c| c.rows.iter().sum::<u64>()).sum();
            let source_bytes: u64 = source.files.iter().map(|f| f.size).sum();
            let per_row = (source_bytes as f64 / source_rows.max(1) as f64).max(1.0);
            ((bytes as f64 / per_row) as u64).max(1)
        }
    };
    let expected_rows: u64 = {
        let planned: BTreeMap<u64, u64> = cells
            .iter()
            .map(|(k, c)| {
                (
                    stratum_of(c),
                    plans.get(k).map_or(c.rows[train], |p| p.planned),
                )
            })
            .collect();
        planned.values().sum::<u64>() + cells.values().map(|c| c.rows[1] + c.rows[2]).sum::<u64>()
    };

    // --- pass 2: the curated rows, in no order, into the shard writer (which deals each
    //     stratum's rows to the shards in shuffle-key order) ---
    let mut output_cols = source_cols.clone();
    // helpers the writer needs, and no more: every one is copied a few times per row
    // (the stratum is the cell unless resampling by group; trimmed ties exist only when
    // resampling makes them). The shuffle key alone orders the rows: the writer breaks
    // its rare ties on the written values, the row key among them (or the whole row)
    output_cols.extend([
        ident("sample_weight"),
        ident(col::SPLIT),
        ident(col::CELL),
        call(
            stream::SHUFFLE,
            &[ident(col::H_SAMPLE), ident(col::H_SPLIT), ident(col::COPY)],
        )
        .alias(col::SHUFFLE_KEY),
    ]);
    let order: Vec<String> = vec![col::SHUFFLE_KEY.into()];
    if group_strata {
        output_cols.push(ident(col::GROUP));
    }
    if !trims.is_empty() {
        output_cols.push(ident(col::TIE));
    }
    let output = build_output(cell_table(table.values()))
        .await
        .and_then(|df| {
            // nested, not `AND`: see `at_or_below`
            let factor = pick(
                is_train(),
                pick(
                    ident(col::FACTOR).is_not_null(),
                    ident(col::FACTOR),
                    lit(1.0f64),
                ),
                lit(1.0f64),
            );
            df.with_column("sample_weight", ident(col::WEIGHT) * factor)?
                .select(output_cols)
        })
        .map_err(df_err("planning the curated output"))?;

    let started = std::time::Instant::now();
    let plan = output
        .create_physical_plan()
        .await
        .map_err(df_err("planning curation pass 2"))?;
    tracing::debug!(plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true), "curation pass 2 plan");
    let streams = datafusion::physical_plan::execute_stream_partitioned(plan, ctx.task_ctx())
        .map_err(df_err("running curation pass 2"))?;
    let strata_values: HashMap<u64, Vec<Option<String>>> = cells
        .iter()
        .map(|((g, y), c)| {
            if group_strata {
                (c.group_id, g.clone())
            } else {
                let mut v = g.clone();
                v.push(y.clone());
                (c.cell_id, v)
            }
        })
        .collect();
    let sink = ShardSink {
        destination: destination.clone(),
        run_dir: Destination::run_dir(&run.run_id),
        columns: SinkColumns {
            split: col::SPLIT.into(),
            split_names: SPLITS.map(String::from).to_vec(),
            split_column: "split".into(),
            weight: "sample_weight".into(),
            stratum: stratum_col.into(),
            cell: col::CELL.into(),
            order,
            tie: (!trims.is_empty()).then(|| col::TIE.into()),
            distinct: pipeline.source.id_column.iter().cloned().collect(),
            // group attributes and label: a few values each
            categorical: pipeline.cell_columns(),
        },
        strata: strata_values,
        shard_rows,
        expected_rows,
        range_rows: range_rows.unwrap_or(strata_publish::RANGE_ROWS),
        trims,
        // with a memory limit the writer spills from the start; otherwise past a budget
        memory_budget: match (engine.memory_limit(), shard_memory) {
            (Some(_), _) => 0,
            (None, Some(budget)) => budget,
            (None, None) => strata_publish::default_memory_budget(),
        },
        unique_order: pipeline.source.id_column.is_some(),
    };
    let written = match sink.write(streams).await {
        Err(strata_publish::PublishError::RepeatedKeys { rows }) => {
            let id = pipeline.source.id_column.as_deref().unwrap_or_default();
            return Err(pipeline
                .error_at(
                    "source.id_column",
                    format!(
                        "id column `{id}` of source `{}` is not unique: {rows} rows repeat an id",
                        source.url
                    ),
                )
                .into());
        }
        written => written?,
    };
    tracing::info!(
        out = %run.url,
        shards = written.shards.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "curated shards written"
    );

    // --- summary, from what the sink wrote ---
    let id_to_key: HashMap<u64, &(GroupKey, LabelKey)> =
        cells.iter().map(|(k, c)| (c.cell_id, k)).collect();
    let mut got: BTreeMap<(GroupKey, LabelKey, usize), (u64, f64, f64)> = BTreeMap::new();
    for ((split_name, cell), t) in &written.totals {
        let (g, y) = id_to_key[cell].clone();
        got.insert(
            (g, y, split_index(split_name)),
            (t.rows, t.weight_sum, t.weight_sq_sum),
        );
    }
    let summary = summarise(SummaryInput {
        pipeline,
        seed,
        source,
        output: &run.url,
        cells: &cells,
        plans: &plans,
        factors: &factors,
        group_targets: &group_targets,
        stratify_label,
        got: &got,
        warnings,
    })?;
    let mut stratum_columns = attrs.clone();
    if !group_strata {
        stratum_columns.push(label_col.clone());
    }
    publish::commit_run(publish::Commit {
        destination: &destination,
        run,
        pipeline,
        source,
        seed,
        summary,
        written,
        stratum_columns,
        shard_rows,
    })
    .await
}

/// Group by-columns of an aggregate as optional strings (missing group = `None`).
fn string_columns(batch: &RecordBatch, n: usize) -> Result<Vec<Vec<Option<String>>>, CurateError> {
    (0..n)
        .map(|i| {
            let a = datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| df_err("reading cells")(e.into()))?;
            let a = a.as_string::<i32>();
            Ok((0..a.len())
                .map(|r| (!a.is_null(r)).then(|| a.value(r).to_string()))
                .collect())
        })
        .collect()
}

fn split_index(s: &str) -> usize {
    SPLITS.iter().position(|x| *x == s).unwrap_or(2)
}

/// Pass 0: rows per cell, and each cell's values, so later passes group by the cell id
/// alone. One `strata_cells` aggregate (`strata_functions::strata_cells_udaf`) over the
/// source read with its group and label strings as dictionaries; its weight is 1 for
/// rows with an id, so the weight sum counts them (null ids fail the run; duplicates
/// show up where the shard writer sorts rows by their hashes). A source with nothing to
/// curate fails here.
async fn count_cells(
    engine: &Engine,
    pipeline: &Pipeline,
    source: &SourceTable,
    seed: u64,
) -> Result<HashMap<u64, CellKey>, CurateError> {
    let ctx = engine.context();
    let attrs = &pipeline.groups.attributes;
    let cell_columns = pipeline.cell_columns();
    let cell_cols: Vec<Expr> = cell_columns.iter().map(ident).collect();
    let call = |stream: u64, cols: &[Expr]| seeded_hash(seed, stream, cols);
    let mut pass0_args = vec![match &pipeline.source.id_column {
        Some(id) => cast(ident(id).is_not_null(), DataType::Float64),
        None => lit(1.0f64),
    }];
    pass0_args.extend(cell_cols.iter().cloned());
    let started = std::time::Instant::now();
    // read with the group and label strings as dictionaries, as the profile does
    // (strata_engine's `coded` module): `strata_cells` then codes a row by key lookups;
    // the cells' values come out as plain strings, which hash like the views later
    // passes read
    engine
        .register_coded(source, CODED_SOURCE_TABLE, &cell_columns)
        .await?;
    let pass0 = ctx
        .table(CODED_SOURCE_TABLE)
        .await
        .and_then(|df| {
            df.aggregate(
                vec![],
                vec![
                    strata_functions::strata_cells_udaf()
                        .call(pass0_args)
                        .alias("cells"),
                ],
            )
        })
        .map_err(df_err("planning curation"))?
        .collect()
        .await
        .map_err(df_err("curation pass 0 (rows per cell)"))?;
    let pass0 =
        cells_batches(&pass0, attrs.len()).map_err(df_err("curation pass 0 (rows per cell)"))?;
    // the cell and group ids, hashed once per cell rather than once per row
    let pass0 = if pass0.iter().all(|b| b.num_rows() == 0) {
        Vec::new()
    } else {
        let g: Vec<Expr> = (0..attrs.len()).map(|i| ident(format!("g{i}"))).collect();
        let mut gy = g.clone();
        gy.push(ident("y"));
        ctx.read_batches(pass0)
            .and_then(|df| {
                df.with_column(col::CELL_ID, call(stream::CELL, &gy))?
                    .with_column(col::CELL_GROUP, call(stream::GROUP, &g))
            })
            .map_err(df_err("planning curation"))?
            .collect()
            .await
            .map_err(df_err("curation pass 0 (cell ids)"))?
    };
    let cell_keys = read_cell_keys(&pass0, attrs.len())?;
    if let Some(id) = &pipeline.source.id_column {
        let nulls: u64 = cell_keys.values().map(|c| c.rows - c.ids).sum();
        if nulls > 0 {
            return Err(pipeline
                .error_at(
                    "source.id_column",
                    format!(
                        "{nulls} rows of source `{}` have a null id in column `{id}`",
                        source.url
                    ),
                )
                .into());
        }
    }
    tracing::info!(
        cells = cell_keys.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "curation pass 0 done"
    );
    nothing_to_curate(pipeline, source, &cell_keys)?;
    Ok(cell_keys)
}

/// `strata_hash` of `cols` with the seed of `stream`.
fn seeded_hash(seed: u64, stream: u64, cols: &[Expr]) -> Expr {
    let mut args = vec![lit(derive_seed(seed, stream))];
    args.extend(cols.iter().cloned());
    strata_hash_udf().call(args)
}

/// A cell as pass 0 saw it: its values, its group's id and its rows.
#[derive(Debug, Clone)]
struct CellKey {
    key: (GroupKey, LabelKey),
    group: u64,
    rows: u64,
    /// Rows with a non-null id (all rows when there is no id column).
    ids: u64,
}

/// The cells of a `strata_cells(weight, g0.., y)` result as batches of `g0..`, `y`,
/// `__cell_rows` and `__ids` (the weight sum: rows with an id).
fn cells_batches(
    result: &[RecordBatch],
    n_attrs: usize,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for cells in strata_functions::aggregate_rows(result)? {
        if cells.num_rows() == 0 {
            continue;
        }
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for k in 0..=n_attrs {
            let name = if k < n_attrs {
                format!("g{k}")
            } else {
                "y".to_string()
            };
            fields.push(Field::new(name, cells.column(k).data_type().clone(), true));
            columns.push(cells.column(k).clone());
        }
        let rows = cells.column(n_attrs + 1).clone();
        let ids = datafusion::arrow::compute::cast(cells.column(n_attrs + 2), &DataType::Int64)?;
        fields.extend([
            Field::new(col::CELL_ROWS, DataType::Int64, false),
            Field::new(col::CELL_IDS, DataType::Int64, true),
        ]);
        columns.extend([rows, ids]);
        out.push(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    Ok(out)
}

/// Pass 0's cells by cell id. Fails if two different cells hash to one id.
/// A source curation cannot work on is an error before anything is written: no rows,
/// no labelled row, or a positive value that no row has (the profile only warns).
fn nothing_to_curate(
    pipeline: &Pipeline,
    source: &SourceTable,
    cells: &HashMap<u64, CellKey>,
) -> Result<(), CurateError> {
    let rows: u64 = cells.values().map(|c| c.rows).sum();
    if rows == 0 {
        return Err(EngineError::Source {
            url: source.url.clone(),
            message: "has no rows; there is nothing to curate".into(),
        }
        .into());
    }
    let labels: std::collections::BTreeSet<&str> =
        cells.values().filter_map(|c| c.key.1.as_deref()).collect();
    let label = &pipeline.label.column;
    if labels.is_empty() {
        return Err(pipeline
            .error_at(
                "label.column",
                format!(
                    "every row of source `{}` has a null label in column `{label}`; \
                     there is nothing to curate",
                    source.url
                ),
            )
            .into());
    }
    let positive = pipeline.label.positive.as_text();
    if !labels.contains(positive.as_str()) {
        let seen: Vec<&str> = labels.iter().take(20).copied().collect();
        return Err(pipeline
            .error_at(
                "label.positive",
                format!(
                    "positive value {} never appears in label column `{label}` of source `{}` \
                     (values seen: {})",
                    pipeline.label.positive,
                    source.url,
                    seen.join(", ")
                ),
            )
            .into());
    }
    Ok(())
}

fn read_cell_keys(
    batches: &[RecordBatch],
    n_attrs: usize,
) -> Result<HashMap<u64, CellKey>, CurateError> {
    let mut out: HashMap<u64, CellKey> = HashMap::new();
    for b in batches {
        let keys = string_columns(b, n_attrs + 1)?;
        let cell_ids = b
            .column_by_name(col::CELL_ID)
            .expect(col::CELL_ID)
            .as_primitive::<UInt64Type>();
        let group_ids = b
            .column_by_name(col::CELL_GROUP)
            .expect(col::CELL_GROUP)
            .as_primitive::<UInt64Type>();
        let rows = b
            .column_by_name(col::CELL_ROWS)
            .expect(col::CELL_ROWS)
            .as_primitive::<Int64Type>();
        let ids = b
            .column_by_name(col::CELL_IDS)
            .expect(col::CELL_IDS)
            .as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let g: GroupKey = keys[..n_attrs].iter().map(|k| k[r].clone()).collect();
            let key = (g, keys[n_attrs][r].clone());
            let cell = CellKey {
                key: key.clone(),
                group: group_ids.value(r),
                rows: rows.value(r) as u64,
                ids: ids.value(r) as u64,
            };
            if let Some(other) = out.insert(cell_ids.value(r), cell)
                && other.key != key
            {
                return Err(CurateError::IdCollision {
                    first: format!("{:?}", other.key),
                    second: format!("{key:?}"),
                });
            }
        }
    }
    Ok(out)
}

/// Scale of [`exact_sum`]: weights are summed as multiples of 10⁻¹⁰ (as in
/// `strata_cut_zones`).
use strata_functions::WEIGHT_SCALE;

/// Σ weight, exactly: floating-point sums depend on the order rows are added, i.e. on
/// partitioning and batching, and the weight sums fix the Kamiran–Calders factors and
/// so the output bytes. Each weight is rounded to 10 decimals and summed as a 128-bit
/// decimal (up to 10²⁸); unusable weights count as 0 (they are reported separately).
fn exact_sum(w: Expr) -> Expr {
    let usable = strata_if_udf().call(vec![
        strata_functions::invalid_weight(w.clone()).eq(lit(0i64)),
        w,
        lit(0.0f64),
    ]);
    sum(cast(usable, DataType::Decimal128(38, WEIGHT_SCALE)))
}

/// The values of an [`exact_sum`] column as floats (null as 0).
fn decimal_sums(a: &ArrayRef) -> Vec<f64> {
    let a = a.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
    (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                0.0
            } else {
                a.value(i) as f64 / 10f64.powi(WEIGHT_SCALE as i32)
            }
        })
        .collect()
}

/// `(a, b) <= (ta, tb)` in lexicographic order; null (no row is below) when `ta` is null.
///
/// Written as `strata_if(a = ta, b <= tb, a < ta)`, not `a < ta OR (a = ta AND b <= tb)`:
/// DataFusion evaluates the right side of an `OR` whose left side is mostly true on a
/// filtered copy of the whole batch, every column of it (5% of curation's time).
fn at_or_below(a: &str, b: &str, ta: &str, tb: &str) -> Expr {
    strata_if_udf().call(vec![
        ident(a).eq(ident(ta)),
        ident(b).lt_eq(ident(tb)),
        ident(a).lt(ident(ta)),
    ])
}

/// Exact resampling of one stratum.
#[derive(Debug, Clone, Copy)]
struct SampleCut {
    /// Copies every training row gets.
    copies: u64,
    /// The key at or below which a row gets one more.
    cut: Option<Key>,
    /// Identical rows straddling that cut: their trim id and key.
    tie: Option<(u64, Key)>,
}

/// What later passes need of a cell, joined to its rows by cell id.
#[derive(Debug, Clone, Copy, Default)]
struct CellRow {
    cell: u64,
    /// Keys (split hash, sample hash) of the train and validation cuts.
    split: [Option<Key>; 2],
    /// Kamiran–Calders factor of the cell's training rows.
    factor: Option<f64>,
    /// Exact resampling: copies of every training row, plus one at or below `sample`.
    copies: u64,
    sample: Option<Key>,
    /// Identical rows straddling the sample cut: their trim id and key.
    tie: Option<(u64, Key)>,
    /// The stratum's planned and available training rows (Bernoulli resampling).
    planned: u64,
    available: u64,
}

/// What later passes need of every cell, attached to each row by its cell id
/// (`strata_functions::lookup`): the cell ids, and per column one value per cell.
#[derive(Clone)]
struct CellTable {
    keys: Vec<u64>,
    columns: Vec<(&'static str, ArrayRef)>,
}

fn cell_table<'a>(rows: impl Iterator<Item = &'a CellRow>) -> CellTable {
    let rows: Vec<&CellRow> = rows.collect();
    let u64s = |name, f: &dyn Fn(&CellRow) -> Option<u64>| {
        (
            name,
            Arc::new(UInt64Array::from(
                rows.iter().map(|r| f(r)).collect::<Vec<_>>(),
            )) as ArrayRef,
        )
    };
    let i64s = |name, f: &dyn Fn(&CellRow) -> i64| {
        (
            name,
            Arc::new(Int64Array::from(
                rows.iter().map(|r| f(r)).collect::<Vec<_>>(),
            )) as ArrayRef,
        )
    };
    let columns = vec![
        u64s("__t1a", &|r| r.split[0].map(|k| k.0)),
        u64s("__t1b", &|r| r.split[0].map(|k| k.1)),
        u64s("__t2a", &|r| r.split[1].map(|k| k.0)),
        u64s("__t2b", &|r| r.split[1].map(|k| k.1)),
        (
            col::FACTOR,
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.factor).collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
        i64s("__q", &|r| r.copies as i64),
        u64s("__ra", &|r| r.sample.map(|k| k.0)),
        u64s("__rb", &|r| r.sample.map(|k| k.1)),
        u64s("__tie_id", &|r| r.tie.map(|t| t.0)),
        u64s("__tie_a", &|r| r.tie.map(|t| t.1.0)),
        u64s("__tie_b", &|r| r.tie.map(|t| t.1.1)),
        i64s("__k", &|r| r.planned as i64),
        i64s("__n", &|r| r.available as i64),
    ];
    CellTable {
        keys: rows.iter().map(|r| r.cell).collect(),
        columns,
    }
}

/// Per stratum: what one pass saw and the cuts at the given ranks. `targets` maps a
/// stratum to its rows and ranks (at most two); `rows` yields `__stratum`, `__h1` (the
/// primary key), `__h2` and `__w`. Strata whose cut fell outside its window are looked
/// at again over the whole key space. Also returns the count of unusable weights.
async fn find_cuts<F, Fut>(
    rows: F,
    targets: &BTreeMap<u64, (u64, Vec<u64>)>,
    paths: CutPaths,
    what: &str,
) -> Result<(Found, u64), CurateError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = datafusion::error::Result<DataFrame>>,
{
    let mut windows = windows_of(targets);
    if paths == CutPaths::FullWindow {
        // no window at first: every cut inside a stratum misses, as about one in 10⁹
        // does, and is found again over the whole key space
        windows.values_mut().for_each(|w| *w = [None, None]);
    }
    for _ in 0..2 {
        let df = rows().await.map_err(df_err(what))?;
        let (observed, bad) = observe(df, &windows, what).await?;
        let (out, missed) = cuts_at(&observed, targets);
        if missed.is_empty() {
            return Ok((out, bad));
        }
        tracing::info!(
            strata = missed.len(),
            "{what}: a cut fell outside its window; looking again over the whole key space"
        );
        for s in missed {
            windows.insert(s, [Some(cut::FULL), None]);
        }
    }
    Err(CurateError::SourceChanged {
        pass: what.to_string(),
    })
}

/// The ways to the cuts (`STRATA_CUT_PATHS`, for tests): by default exact resampling
/// finds its sample cuts in the split's pass when it can; `separate` always runs pass
/// 1b; `full-window` starts every cut pass without windows, so the cuts are found by
/// the retry over the whole key space. Every way gives the same cuts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum CutPaths {
    #[default]
    Merged,
    Separate,
    FullWindow,
}

/// Per stratum: what a pass observed and the cuts found in it.
type Found = BTreeMap<u64, (Observed, Vec<Cut>)>;

/// Each target's observation and its cuts at the target's ranks, and the targets with a
/// cut outside its window.
fn cuts_at(
    observed: &HashMap<u64, Observed>,
    targets: &BTreeMap<u64, (u64, Vec<u64>)>,
) -> (Found, Vec<u64>) {
    let mut out = BTreeMap::new();
    let mut missed = Vec::new();
    for (s, (_, ks)) in targets {
        let obs = observed.get(s).cloned().unwrap_or_default();
        match ks
            .iter()
            .map(|&k| cut::find(&obs, k))
            .collect::<Option<Vec<Cut>>>()
        {
            Some(cuts) => {
                out.insert(*s, (obs, cuts));
            }
            None => missed.push(*s),
        }
    }
    (out, missed)
}

/// One `strata_cut_zones` aggregate (strata_functions::strata_cut_zones_udaf) of the named
/// columns and `__w`, the windows travelling as its literal.
fn zones(stratum: &str, h1: &str, h2: &str, windows: &BTreeMap<u64, [Option<Window>; 2]>) -> Expr {
    let windows: Vec<strata_functions::StratumWindows> =
        windows.iter().map(|(s, w)| (*s, *w)).collect();
    strata_functions::cut_zones(
        ident(stratum),
        ident(h1),
        ident(h2),
        ident(col::WEIGHT),
        &windows,
    )
}

/// Each target's windows: around each of its ranks, where the row of that rank almost
/// surely lies.
fn windows_of(targets: &BTreeMap<u64, (u64, Vec<u64>)>) -> BTreeMap<u64, [Option<Window>; 2]> {
    targets
        .iter()
        .map(|(s, (n, ks))| {
            (
                *s,
                [
                    ks.first().and_then(|&k| cut::window(k, *n)),
                    ks.get(1).and_then(|&k| cut::window(k, *n)),
                ],
            )
        })
        .collect()
}

/// Exact resampling's cuts: per stratum of n training rows and k planned, rank k mod n.
fn sample_targets(strata_plan: &BTreeMap<u64, (u64, u64)>) -> BTreeMap<u64, (u64, Vec<u64>)> {
    strata_plan
        .iter()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(s, (k, n))| (*s, (*n, vec![k % n])))
        .collect()
}

/// One aggregate pass: per stratum, rows and weights per zone, keys inside windows.
async fn observe(
    rows: DataFrame,
    windows: &BTreeMap<u64, [Option<Window>; 2]>,
    what: &str,
) -> Result<(HashMap<u64, Observed>, u64), CurateError> {
    let zones = zones(col::STRATUM, col::KEY1, col::KEY2, windows);
    let batches = rows
        .aggregate(vec![], vec![zones.alias("zones")])
        .map_err(df_err(what))?
        .collect()
        .await
        .map_err(df_err(what))?;
    read_zones(&batches, "zones", what)
}

/// What a `strata_cut_zones` aggregate named `name` saw, and its unusable weights.
fn read_zones(
    batches: &[RecordBatch],
    name: &str,
    what: &str,
) -> Result<(HashMap<u64, Observed>, u64), CurateError> {
    let batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            b.project(&[b
                .schema()
                .index_of(name)
                .expect("an aggregate of that name")])
        })
        .collect::<Result<_, _>>()
        .map_err(|e| df_err(what)(e.into()))?;
    let mut out: HashMap<u64, Observed> = HashMap::new();
    let mut bad = 0u64;
    for part in strata_functions::aggregate_rows(&batches).map_err(df_err(what))? {
        let col = |name: &str| part.column_by_name(name).expect("a zones column");
        let stratum = col("stratum").as_primitive::<UInt64Type>();
        let zone = col("zone").as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
        let (k1, k2) = (
            col("k1").as_primitive::<UInt64Type>(),
            col("k2").as_primitive::<UInt64Type>(),
        );
        let rows = col("rows").as_primitive::<Int64Type>();
        let w = decimal_sums(col("w"));
        let bad_col = col("bad").as_primitive::<Int64Type>();
        for (r, &weight) in w.iter().enumerate() {
            out.entry(stratum.value(r)).or_default().add(
                zone.value(r) as usize,
                Some((k1.value(r), k2.value(r))),
                rows.value(r) as u64,
                weight,
            );
            bad += bad_col.value(r) as u64;
        }
    }
    Ok((out, bad))
}

/// A tuning variable of the environment, parsed: unset is `None`, and a value that does
/// not parse fails the run, naming the variable (a typo must not fall back silently).
fn tuning<T>(
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, CurateError> {
    match std::env::var(name) {
        Ok(v) => parse(&v).map(Some).map_err(|e| CurateError::Tuning {
            name: name.to_string(),
            message: format!("=`{v}`: {e}"),
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(CurateError::Tuning {
            name: name.to_string(),
            message: "not UTF-8".into(),
        }),
    }
}

/// A summary stratum's figures, summed over its cells.
#[derive(Debug, Clone, Copy, Default)]
struct StratumTally {
    rows_before: u64,
    planned: u64,
    /// Σw and Σw² of its curated training rows.
    weight: f64,
    weight_sq: f64,
    target_share: Option<f64>,
    /// Its Kamiran–Calders factor, if reweighed.
    factor: Option<f64>,
}

struct SummaryInput<'a> {
    pipeline: &'a Pipeline,
    seed: u64,
    source: &'a SourceTable,
    output: &'a str,
    cells: &'a BTreeMap<(GroupKey, LabelKey), Cell>,
    plans: &'a BTreeMap<(GroupKey, LabelKey), Planned>,
    factors: &'a BTreeMap<(GroupKey, LabelKey), Option<f64>>,
    group_targets: &'a BTreeMap<GroupKey, f64>,
    stratify_label: bool,
    /// (group, label, split) -> rows, Σw, Σw², as written.
    got: &'a BTreeMap<(GroupKey, LabelKey, usize), (u64, f64, f64)>,
    warnings: Vec<String>,
}

fn summarise(input: SummaryInput<'_>) -> Result<Curation, CurateError> {
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
fn label_json(positive: &LabelValue, y: &LabelKey) -> serde_json::Value {
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
