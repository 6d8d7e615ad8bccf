use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, UInt64Type};
use datafusion::functions::math::expr_fn::floor;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, sum};
use datafusion::functions_nested::expr_fn::range;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, JoinType};
use datafusion::prelude::*;
use strata_engine::{Engine, EngineError, SOURCE_TABLE, SourceTable, strata_hash_udf};
use strata_publish::{
    ColumnSchema, Destination, Existing, InputFile, MANIFEST_FILE, MANIFEST_SCHEMA_VERSION, Manifest, ShardEntry, ShardSink, SinkColumns,
    SplitTotals, sha256_hex,
};
use strata_spec::{LabelValue, MISSING_GROUP, Mode, OnEmpty, Pipeline, ShardSize, Strategy, Stratify, Target};

use crate::CurateError;
use crate::plan::{kamiran_calders, largest_remainder, plan_total};
use crate::summary::{Curation, SUMMARY_SCHEMA_VERSION, SplitSummary, StratumSummary};

/// The per-stratum summary, in the run's folder next to the shards.
pub const SUMMARY_FILE: &str = "curation.json";

const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// Per-run settings that the CLI may override.
#[derive(Debug, Clone)]
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

/// Run ids become object key segments: keep them to a portable alphabet.
fn check_run_id(id: &str) -> Result<String, CurateError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(CurateError::Engine(EngineError::Config(format!(
            "run id `{id}`: use 1 to 128 letters, digits, `-`, `_` or `.` (not starting with `.`)"
        ))))
    }
}

/// Group values, in spec order; `None` is the missing group.
type GroupKey = Vec<Option<String>>;
type LabelKey = Option<String>;

/// One (group, label) cell of pass 1, with its rows and weight per split.
#[derive(Debug, Clone, Default)]
struct Cell {
    cell_id: u64,
    group_id: u64,
    rows: [u64; 3],
    weight: [f64; 3],
}

/// A resample stratum's plan: rows available in train and rows planned.
#[derive(Debug, Clone, Copy, Default)]
struct Planned {
    available: u64,
    planned: u64,
    target_share: Option<f64>,
}

/// Derives independent 64-bit seeds from the user's seed (SplitMix64 finaliser), so the
/// split and the sample use unrelated hashes of the same key.
fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & (i64::MAX as u64)
}

fn df_err(context: &str) -> impl FnOnce(datafusion::error::DataFusionError) -> CurateError + '_ {
    move |e| CurateError::Engine(EngineError::datafusion(context.to_string())(e))
}

/// Runs curation (see the crate docs) and publishes the result under `options.out`:
/// stratified shards, `SUMMARY_FILE` and a manifest in the run's folder, then the
/// `_latest` pointer. Every check on the spec, the data and the plan happens before
/// anything is written; a failure before the manifest leaves no committed run.
pub async fn curate(engine: &Engine, pipeline: &Pipeline, source: &SourceTable, options: &CurateOptions) -> Result<Published, CurateError> {
    let spec = pipeline.curate.as_ref().ok_or_else(|| pipeline.error_at("curate", "the pipeline has no [curate] section"))?;
    let seed = options.seed.unwrap_or(spec.seed);
    let ctx = engine.context();
    let attrs = &pipeline.groups.attributes;
    let label_col = &pipeline.label.column;

    for reserved in ["split", "sample_weight"] {
        if source.schema.field_with_name(reserved).is_ok() {
            return Err(EngineError::Source {
                url: source.url.clone(),
                message: format!("has a column named `{reserved}`, which curation adds; rename it first"),
            }
            .into());
        }
    }

    // --- where the run goes; a run already committed there is not redone ---
    let root = strata_publish::parse_location(&options.out)?;
    if root.scheme() == "file"
        && let Ok(dir) = root.to_file_path()
    {
        // fail now, not after the passes, when the folder cannot be made
        std::fs::create_dir_all(&dir)
            .map_err(|e| CurateError::Output { url: root.to_string(), message: format!("cannot create the folder: {e}") })?;
    }
    let store = engine.store_for(&root, &pipeline.storage)?;
    let destination = Destination::new(store, root);
    let identity = identity(pipeline, source, seed);
    let run_id = match &options.run_id {
        Some(id) => check_run_id(id)?,
        None => identity[..16].to_string(),
    };
    let run = Run { url: destination.url_of(&format!("{}/", Destination::run_dir(&run_id))), run_id, identity };
    if let Existing::Same(manifest) = destination.existing(&run.run_id, &run.identity).await? {
        let rel = format!("{}/{SUMMARY_FILE}", Destination::run_dir(&run.run_id));
        let bytes = destination.get(&rel).await?.ok_or_else(|| CurateError::Output {
            url: destination.url_of(&rel),
            message: "the run's manifest exists but its summary is missing; run `strata shards verify`".into(),
        })?;
        let curation: Curation = serde_json::from_slice(&bytes)
            .map_err(|e| CurateError::Output { url: destination.url_of(&rel), message: format!("not a curation summary: {e}") })?;
        destination.point_latest(&manifest).await?;
        tracing::info!(run = %run.url, "this run is already published (same spec, seed and inputs); nothing to do");
        return Ok(Published { curation, manifest: *manifest, run_url: run.url, already_published: true });
    }

    // --- keyed rows: hashes for the split, the sample, and the cell and group ids ---
    let hash = strata_hash_udf();
    let call = |stream: u64, cols: &[Expr]| {
        let mut args = vec![lit(derive_seed(seed, stream))];
        args.extend(cols.iter().cloned());
        hash.call(args)
    };
    let source_cols: Vec<Expr> = source.schema.fields().iter().map(|f| ident(f.name())).collect();
    let key_cols: Vec<Expr> = match &pipeline.source.id_column {
        Some(id) => vec![ident(id)],
        None => source_cols.clone(),
    };
    let attr_cols: Vec<Expr> = attrs.iter().map(ident).collect();
    let mut cell_cols = attr_cols.clone();
    cell_cols.push(ident(label_col));
    let weight = match &pipeline.source.weight_column {
        Some(w) => cast(ident(w), DataType::Float64),
        None => lit(1.0f64),
    };
    let mut keyed_cols = source_cols.clone();
    keyed_cols.extend([
        call(1, &key_cols).alias("__h_split"),
        call(2, &key_cols).alias("__h_sample"),
        call(3, &attr_cols).alias("__grp"),
        call(4, &cell_cols).alias("__cell"),
        weight.alias("__w"),
    ]);

    let split = spec.split;
    let cut = |fraction: f64| floor(cast(ident("__cell_rows"), DataType::Float64) * lit(fraction) + lit(0.5));
    // --- pass 0: rows per cell. A small table joined back gives each row its cell's
    //     size; a count window would buffer each whole cell in memory instead ---
    let mut pass0_cols: Vec<Expr> = attrs.iter().enumerate().map(|(i, a)| ident(a).alias(format!("g{i}"))).collect();
    pass0_cols.extend([ident(label_col).alias("y"), call(4, &cell_cols).alias("__cr_cell"), call(3, &attr_cols).alias("__cr_grp")]);
    let pass0_keys: Vec<Expr> = pass0_cols.iter().map(|e| ident(e.schema_name().to_string())).collect();
    let pass0 = ctx
        .table(SOURCE_TABLE)
        .await
        .and_then(|df| df.select(pass0_cols))
        .and_then(|df| df.aggregate(pass0_keys, vec![count_all().alias("__cell_rows")]))
        .map_err(df_err("planning curation"))?
        .collect()
        .await
        .map_err(df_err("curation pass 0 (rows per cell)"))?;
    // each cell's values, so later passes group and sort by the cell id alone
    let cell_keys = read_cell_keys(&pass0, attrs.len())?;
    let cell_rows_df = ctx
        .read_batches(pass0)
        .and_then(|df| df.select(vec![ident("__cr_cell"), ident("__cell_rows")]))
        .map_err(df_err("planning curation"))?;

    let build_split = || async {
        let df = ctx.table(SOURCE_TABLE).await?.select(keyed_cols.clone())?;
        // small tables go on the left of every join: the left side is the hash table
        // DataFusion builds in memory, and it cannot spill
        let df = cell_rows_df.clone().join(df, JoinType::Right, &["__cr_cell"], &["__cell"], None)?.window(vec![
            row_number()
                .partition_by(vec![ident("__cell")])
                .order_by(vec![ident("__h_split").sort(true, false), ident("__h_sample").sort(true, false)])
                .build()?
                .alias("__split_rank"),
        ])?;
        let rank = cast(ident("__split_rank"), DataType::Float64);
        df.with_column(
            "split",
            when(rank.clone().lt_eq(cut(split.train)), lit("train"))
                .when(rank.lt_eq(cut(split.train + split.validation)), lit("validation"))
                .otherwise(lit("test"))?,
        )
    };

    // --- pass 1: rows and weights per (group, label, split) ---
    let started = std::time::Instant::now();
    let group_by = vec![ident("split"), ident("__cell")];
    let w = ident("__w");
    let pass1_df = build_split()
        .await
        .and_then(|df| {
            df.aggregate(
                group_by,
                vec![count_all().alias("rows"), sum(w.clone()).alias("w"), sum(strata_engine::invalid_weight(w.clone())).alias("bad")],
            )
        })
        .map_err(df_err("planning curation"))?;
    let plan = pass1_df.create_physical_plan().await.map_err(df_err("planning curation pass 1"))?;
    tracing::debug!(plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true), "curation pass 1 plan");
    let pass1 = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.map_err(df_err("curation pass 1 (split and counts)"))?;
    let (cells, bad_weights) = read_cells(&pass1, &cell_keys)?;
    tracing::info!(cells = cells.len(), elapsed_ms = started.elapsed().as_millis() as u64, "curation pass 1 done");
    if bad_weights > 0 {
        return Err(strata_engine::invalid_weights_error(pipeline, bad_weights, &source.url).into());
    }
    check_ids(ctx, pipeline, source).await?;

    // --- plan on the driver ---
    let mut warnings = Vec::new();
    let train = 0;
    let stratify_label = match (&spec.resample, spec.strategy) {
        (Some(r), Strategy::Resample) => r.stratify == Stratify::GroupsLabel,
        _ => true,
    };
    let mut groups: BTreeMap<GroupKey, BTreeMap<LabelKey, Cell>> = BTreeMap::new();
    for ((g, y), c) in &cells {
        groups.entry(g.clone()).or_default().insert(y.clone(), c.clone());
    }
    for ((g, y), c) in &cells {
        if c.rows[train] == 0 {
            warnings.push(format!("cell {} has no rows in the training split", describe(attrs, g, Some((label_col, y)))));
        }
    }

    // factor per cell (reweigh / reweigh_after), plan per cell (k, n of its stratum)
    let mut factors: BTreeMap<(GroupKey, LabelKey), Option<f64>> = BTreeMap::new();
    let mut plans: BTreeMap<(GroupKey, LabelKey), Planned> = BTreeMap::new();
    let mut group_targets: BTreeMap<GroupKey, f64> = BTreeMap::new();
    match (spec.strategy, &spec.resample) {
        (Strategy::Reweigh, _) | (_, None) => {
            let w_train: BTreeMap<(GroupKey, LabelKey), f64> = cells.iter().map(|(k, c)| (k.clone(), c.weight[train])).collect();
            let (f, complete) = kamiran_calders(&w_train);
            factors = f;
            if !complete {
                warnings.push(incomplete_warning());
            }
            for (k, c) in &cells {
                plans.insert(k.clone(), Planned { available: c.rows[train], planned: c.rows[train], target_share: None });
            }
        }
        (Strategy::Resample, Some(r)) => {
            let keys: Vec<GroupKey> = groups.keys().cloned().collect();
            let available: Vec<u64> = keys.iter().map(|g| groups[g].values().map(|c| c.rows[train]).sum()).collect();
            let mut shares: Vec<f64> = vec![0.0; keys.len()];
            let mut counts: Option<Vec<u64>> = None;
            let index_of = |values: &[String]| -> Option<usize> {
                let key: GroupKey = values.iter().map(|v| (v != MISSING_GROUP).then(|| v.clone())).collect();
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
                            .error_at("curate.resample.target", "no group of the data has a positive reference share")
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
                                format!("the target names group {} which does not occur in the data", describe_values(attrs, &t.values)),
                            )
                        })?;
                        shares[i] = t.share.unwrap_or(0.0);
                        c[i] = t.count.unwrap_or(0);
                    }
                    if r.target == Target::Counts {
                        let total: u64 = c.iter().sum();
                        shares = c.iter().map(|&x| if total == 0 { 0.0 } else { x as f64 / total as f64 }).collect();
                        counts = Some(c);
                    }
                    let unlisted: Vec<_> =
                        keys.iter().zip(&shares).filter(|(_, s)| **s == 0.0).map(|(k, _)| describe(attrs, k, None)).collect();
                    if !unlisted.is_empty() {
                        warnings.push(format!("groups with no target rows are left out of train: {}", unlisted.join(", ")));
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
                            warnings.push(format!("group {name} has no training rows; skipped (on_empty = \"skip\")"));
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
                return Err(pipeline.error_at("curate.resample", "no group has both training rows and a positive target").into());
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
                        let share_of_group = if available[i] == 0 { 0.0 } else { n as f64 / available[i] as f64 };
                        plans.insert(
                            (g.clone(), (*y).clone()),
                            Planned { available: n, planned: k[j], target_share: Some(shares[i] * share_of_group) },
                        );
                    }
                } else {
                    for y in labels.keys() {
                        plans.insert(
                            (g.clone(), y.clone()),
                            Planned { available: available[i], planned: planned_groups[i], target_share: Some(shares[i]) },
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

    let resample = matches!(spec.strategy, Strategy::Resample);
    let (exact, reweigh_after) = spec.resample.as_ref().map_or((true, false), |r| (r.exact, r.reweigh_after));
    let replicate = resample && plans.values().any(|p| p.planned > p.available);

    // --- the plan table, joined to the rows by cell id ---
    let plan_df = {
        let rows: Vec<(u64, i64, i64)> = cells
            .iter()
            .map(|(k, c)| {
                let p = plans.get(k).copied().unwrap_or_default();
                (c.cell_id, p.planned as i64, p.available as i64)
            })
            .collect();
        plan_frame(ctx, &rows).map_err(df_err("building the curation plan"))?
    };
    let stratum_col = if stratify_label { "__cell" } else { "__grp" };
    let build_output = || async {
        let mut df = plan_df.clone().join(build_split().await?, JoinType::Right, &["__plan_cell"], &["__cell"], None)?;
        let is_train = ident("split").eq(lit("train"));
        let copies = if !resample {
            lit(1i64)
        } else if exact {
            df = df.window(vec![
                row_number()
                    .partition_by(vec![ident(stratum_col), ident("split")])
                    .order_by(vec![ident("__h_sample").sort(true, false), ident("__h_split").sort(true, false)])
                    .build()?
                    .alias("__rank"),
            ])?;
            let (k, n) = (ident("__k"), ident("__n"));
            let extra =
                when((cast(ident("__rank"), DataType::Int64) - lit(1i64)).lt(k.clone() % n.clone()), lit(1i64)).otherwise(lit(0i64))?;
            when(is_train.clone(), k / n + extra).otherwise(lit(1i64))?
        } else {
            let p = cast(ident("__k"), DataType::Float64) / cast(ident("__n"), DataType::Float64);
            let u = cast(ident("__h_sample"), DataType::Float64) / lit(18_446_744_073_709_551_616.0f64);
            let extra = when(u.lt(p.clone() - floor(p.clone())), lit(1i64)).otherwise(lit(0i64))?;
            when(is_train.clone(), cast(floor(p), DataType::Int64) + extra).otherwise(lit(1i64))?
        };
        df = df.with_column("__copies", copies)?.filter(ident("__copies").gt(lit(0i64)))?;
        df = if replicate {
            df.with_column("__copy", range(lit(0i64), ident("__copies"), lit(1i64)))?.unnest_columns(&["__copy"])?
        } else {
            df.with_column("__copy", lit(0i64))?
        };
        Ok::<_, datafusion::error::DataFusionError>(df)
    };

    // reweighing after resampling uses the resampled weight sums: one more aggregate
    if resample && reweigh_after {
        let sums = build_output()
            .await
            .and_then(|df| {
                let mut g: Vec<Expr> = attrs.iter().enumerate().map(|(i, a)| ident(a).alias(format!("g{i}"))).collect();
                g.push(ident(label_col).alias("y"));
                df.filter(ident("split").eq(lit("train")))?.aggregate(g, vec![sum(ident("__w")).alias("w")])
            })
            .map_err(df_err("planning reweighing after resampling"))?
            .collect()
            .await
            .map_err(df_err("reweighing after resampling"))?;
        let mut w_after: BTreeMap<(GroupKey, LabelKey), f64> = BTreeMap::new();
        for b in &sums {
            let keys = string_columns(b, attrs.len() + 1)?;
            let w = b.column_by_name("w").map(|c| c.as_primitive::<Float64Type>().clone());
            for r in 0..b.num_rows() {
                let g: GroupKey = keys[..attrs.len()].iter().map(|k| k[r].clone()).collect();
                let y = keys[attrs.len()][r].clone();
                w_after.insert((g, y), w.as_ref().map_or(0.0, |w| if w.is_null(r) { 0.0 } else { w.value(r) }));
            }
        }
        let (f, complete) = kamiran_calders(&w_after);
        factors = f;
        if !complete {
            warnings.push(incomplete_warning());
        }
    }

    // --- rows per (split, cell) after curation: from the plan where it fixes them ---
    // Shard strata are the curation's strata: (group, label) cells, or groups when
    // resampling by group only.
    let group_strata = resample && !stratify_label;
    let shard_key = if group_strata { "__grp" } else { "__cell" };
    // rows per (split, stratum id) after curation: from the plan where it fixes them
    let mut counts: BTreeMap<(usize, u64), u64> = BTreeMap::new();
    if !resample || exact {
        for (k, c) in &cells {
            for s in 0..3 {
                let id = if group_strata { c.group_id } else { c.cell_id };
                if s == train && group_strata {
                    // every cell of a group carries the group's plan
                    counts.insert((s, id), plans.get(k).map_or(0, |p| p.planned));
                } else {
                    let n = if s == train { plans.get(k).map_or(c.rows[s], |p| p.planned) } else { c.rows[s] };
                    *counts.entry((s, id)).or_default() += n;
                }
            }
        }
    } else {
        let batches = build_output()
            .await
            .and_then(|df| df.aggregate(vec![ident("split"), ident(shard_key).alias("__stratum")], vec![count_all().alias("rows")]))
            .map_err(df_err("planning the shard plan"))?
            .collect()
            .await
            .map_err(df_err("counting curated rows per stratum"))?;
        for b in &batches {
            let split = string_columns(b, 1)?.remove(0);
            let id = b.column_by_name("__stratum").expect("__stratum").as_primitive::<UInt64Type>();
            let rows = b.column_by_name("rows").expect("rows").as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                counts.insert((split_index(split[r].as_deref().unwrap_or("test")), id.value(r)), rows.value(r) as u64);
            }
        }
    }

    // --- shard plan: per split S shards; the strata are laid end to end in id order and
    //     row i of that sequence goes to shard i mod S, so every shard holds ⌊c/S⌋ or
    //     ⌈c/S⌉ rows of every stratum and ⌊N/S⌋ or ⌈N/S⌉ rows in all. The plan gives each
    //     (cell, split) the offset its rows start at; a row adds its position within
    //     the stratum (or, for a group's natural validation and test rows, within the
    //     cell, the cells of a group following each other) ---
    let shard_rows = match pipeline.publish.shard_size {
        ShardSize::Rows(n) => n,
        ShardSize::Bytes(bytes) => {
            let source_rows: u64 = cells.values().map(|c| c.rows.iter().sum::<u64>()).sum();
            let source_bytes: u64 = source.files.iter().map(|f| f.size).sum();
            let per_row = (source_bytes as f64 / source_rows.max(1) as f64).max(1.0);
            ((bytes as f64 / per_row) as u64).max(1)
        }
    };
    // positions of a group's validation/test rows are per cell (from the split rank)
    // when the plan fixes them; per group otherwise (a window, or the group's sample rank)
    let per_cell_positions = |s: usize| group_strata && exact && s != train;
    let mut shard_plan: Vec<(u64, &'static str, i64, i64)> = Vec::new();
    for (s, split_name) in SPLITS.iter().enumerate() {
        let total: u64 = counts.iter().filter(|((ss, _), _)| *ss == s).map(|(_, n)| n).sum();
        let n_shards = total.div_ceil(shard_rows).max(1);
        let mut offset = 0u64;
        for ((ss, id), n) in &counts {
            if *ss != s {
                continue;
            }
            let mut within = 0u64;
            for c in cells.values().filter(|c| if group_strata { c.group_id == *id } else { c.cell_id == *id }) {
                shard_plan.push((c.cell_id, split_name, ((offset + within) % n_shards) as i64, n_shards as i64));
                if per_cell_positions(s) {
                    within += c.rows[s];
                }
            }
            offset += n;
        }
    }
    // per cell: the weight factor, and each split's shard offset and shard count. One
    // small table joined with the small side as the build side (an inner join would
    // let the planner put the large side there by its estimates, and it cannot spill).
    let lookup_df = {
        let mut shard_of: HashMap<(u64, &str), (i64, i64)> = HashMap::new();
        for (cell, split_name, offset, n) in &shard_plan {
            shard_of.insert((*cell, *split_name), (*offset, *n));
        }
        let rows: Vec<CellLookup> = cells
            .iter()
            .map(|(k, c)| {
                let of = |s: &str| shard_of.get(&(c.cell_id, s)).copied().unwrap_or((0, 1));
                CellLookup {
                    cell: c.cell_id,
                    factor: factors.get(k).copied().flatten(),
                    shards: [of("train"), of("validation"), of("test")],
                }
            })
            .collect();
        lookup_frame(ctx, &rows).map_err(df_err("building the weight and shard table"))?
    };

    // --- pass 2: shards ---
    let mut output_cols = source_cols.clone();
    output_cols.push(ident("sample_weight"));
    output_cols.push(ident("split"));
    output_cols.push(ident("__shard"));
    output_cols.push(ident(shard_key).alias("__stratum"));
    if group_strata {
        output_cols.push(ident("__cell"));
    }
    let sorted = build_output()
        .await
        .and_then(|df| {
            let df = lookup_df.join(df, JoinType::Right, &["__factor_cell"], &["__cell"], None)?;
            let factor = when(ident("split").eq(lit("train")), coalesce(vec![ident("__factor"), lit(1.0f64)])).otherwise(lit(1.0f64))?;
            let df = df.with_column("sample_weight", ident("__w") * factor)?;
            let by_split = |prefix: &str| {
                when(ident("split").eq(lit("train")), ident(format!("{prefix}0")))
                    .when(ident("split").eq(lit("validation")), ident(format!("{prefix}1")))
                    .otherwise(ident(format!("{prefix}2")))
            };
            let df = df.with_column("__sh_offset", by_split("__sh_offset")?)?.with_column("__sh_shards", by_split("__sh_shards")?)?;
            // A row's position within its (split, cell). Where the plan fixes it, it comes
            // from ranks already computed (each cell's splits are consecutive split-rank
            // ranges; exact resampling's copies follow from the sample rank), which spares
            // a sort; only Bernoulli draws and group-level strata need a window.
            let df = if resample && !exact {
                df.window(vec![
                    row_number()
                        .partition_by(vec![ident("split"), ident(shard_key)])
                        .order_by(vec![
                            ident("__h_sample").sort(true, false),
                            ident("__h_split").sort(true, false),
                            ident("__copy").sort(true, false),
                        ])
                        .build()?
                        .alias("__pos"),
                ])?
            } else {
                let int = |e: Expr| cast(e, DataType::Int64);
                let start = when(ident("split").eq(lit("train")), lit(0i64))
                    .when(ident("split").eq(lit("validation")), int(cut(split.train)))
                    .otherwise(int(cut(split.train + split.validation)))?;
                let natural = int(ident("__split_rank")) - start;
                let pos = if resample {
                    // copies of the rank-r row start after (r-1)·q + min(r-1, k mod n) rows
                    let r0 = int(ident("__rank")) - lit(1i64);
                    let (k, n) = (ident("__k"), ident("__n"));
                    let before = r0.clone() * (k.clone() / n.clone()) + when(r0.clone().lt(k.clone() % n.clone()), r0).otherwise(k % n)?;
                    when(ident("split").eq(lit("train")), before + ident("__copy") + lit(1i64)).otherwise(natural)?
                } else {
                    natural
                };
                df.with_column("__pos", pos)?
            };
            let df = df.with_column(
                "__shard",
                (ident("__sh_offset") + cast(ident("__pos"), DataType::Int64) - lit(1i64)) % ident("__sh_shards"),
            )?;
            let df = df.with_column("__shuffle", call(5, &[ident("__h_sample"), ident("__h_split"), ident("__copy")]))?;
            let df = df.sort(vec![
                ident("split").sort(true, false),
                ident("__shard").sort(true, false),
                ident("__shuffle").sort(true, false),
                ident("__h_sample").sort(true, false),
                ident("__h_split").sort(true, false),
                ident("__copy").sort(true, false),
            ])?;
            df.select(output_cols)
        })
        .map_err(df_err("planning the curated output"))?;

    let started = std::time::Instant::now();
    let plan = sorted.create_physical_plan().await.map_err(df_err("planning curation pass 2"))?;
    tracing::debug!(plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true), "curation pass 2 plan");
    let stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx()).map_err(df_err("running curation pass 2"))?;
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
            split: "split".into(),
            weight: "sample_weight".into(),
            shard: "__shard".into(),
            stratum: "__stratum".into(),
            cell: if group_strata { "__cell" } else { "__stratum" }.into(),
        },
        strata: strata_values,
    };
    let written = sink.write(stream).await.map_err(CurateError::from)?;
    tracing::info!(
        out = %run.url,
        shards = written.shards.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "curated shards written"
    );

    // --- summary, from what the sink wrote ---
    let id_to_key: HashMap<u64, &(GroupKey, LabelKey)> = cells.iter().map(|(k, c)| (c.cell_id, k)).collect();
    let mut got: BTreeMap<(GroupKey, LabelKey, usize), (u64, f64, f64)> = BTreeMap::new();
    for ((split_name, cell), t) in &written.totals {
        let (g, y) = id_to_key[cell].clone();
        got.insert((g, y, split_index(split_name)), (t.rows, t.weight_sum, t.weight_sq_sum));
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
    let summary_json = serde_json::to_vec_pretty(&summary).expect("a summary always serializes");
    destination.put(&format!("{}/{SUMMARY_FILE}", Destination::run_dir(&run.run_id)), summary_json.into()).await?;

    // --- commit: the manifest last, then the pointer ---
    let mut shards = written.shards;
    shards.sort_by_key(|s| (split_index(&s.split), s.index));
    let splits = SPLITS
        .iter()
        .map(|name| {
            let mine: Vec<&ShardEntry> = shards.iter().filter(|s| s.split == *name).collect();
            SplitTotals {
                split: (*name).to_string(),
                shards: mine.len() as u64,
                rows: mine.iter().map(|s| s.rows).sum(),
                bytes: mine.iter().map(|s| s.bytes).sum(),
                weight_sum: mine.iter().flat_map(|s| s.strata.iter().map(|c| c.weight_sum)).sum(),
            }
        })
        .collect();
    let mut stratum_columns = attrs.clone();
    if !group_strata {
        stratum_columns.push(label_col.clone());
    }
    let manifest = Manifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        identity: run.identity.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        strata_version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: pipeline.name.clone(),
        seed,
        spec_sha256: sha256_hex(pipeline.text.as_bytes()),
        source: source.url.clone(),
        inputs: input_files(source),
        schema: written
            .schema
            .fields()
            .iter()
            .map(|f| ColumnSchema { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
            .collect(),
        stratum_columns,
        target_shard_rows: shard_rows,
        summary: SUMMARY_FILE.to_string(),
        splits,
        shards,
    };
    destination.commit(&manifest).await?;
    tracing::info!(manifest = %destination.url_of(&format!("{}/{MANIFEST_FILE}", Destination::run_dir(&run.run_id))), "run committed");
    Ok(Published { curation: summary, manifest, run_url: run.url, already_published: false })
}

/// The run this curation publishes: its id, its identity and its folder's URL.
struct Run {
    run_id: String,
    identity: String,
    url: String,
}

fn input_files(source: &SourceTable) -> Vec<InputFile> {
    source
        .files
        .iter()
        .map(|f| InputFile { url: f.url.clone(), size: f.size, e_tag: f.e_tag.clone(), last_modified: f.last_modified.clone() })
        .collect()
}

/// SHA-256 over everything that fixes the output bytes; equal identities give equal runs.
fn identity(pipeline: &Pipeline, source: &SourceTable, seed: u64) -> String {
    let doc = serde_json::json!({
        "strata_version": env!("CARGO_PKG_VERSION"),
        "spec_sha256": sha256_hex(pipeline.text.as_bytes()),
        "source": source.url,
        "inputs": input_files(source),
        "seed": seed,
    });
    sha256_hex(doc.to_string().as_bytes())
}

fn incomplete_warning() -> String {
    "some group × label cells of the training split are empty: group and label cannot be made independent; \
     weights are scaled to keep the total"
        .into()
}

/// Fails when the declared id column has duplicates or nulls: sampling by id would
/// otherwise treat different rows as one.
async fn check_ids(ctx: &SessionContext, pipeline: &Pipeline, source: &SourceTable) -> Result<(), CurateError> {
    let Some(id) = &pipeline.source.id_column else { return Ok(()) };
    let batches = ctx
        .table(SOURCE_TABLE)
        .await
        .and_then(|df| {
            df.aggregate(
                vec![],
                vec![count_all().alias("rows"), count(ident(id)).alias("ids"), count_distinct(ident(id)).alias("distinct")],
            )
        })
        .map_err(df_err("checking the id column"))?
        .collect()
        .await
        .map_err(df_err("checking the id column"))?;
    let get = |name: &str| batches.first().and_then(|b| b.column_by_name(name)).map_or(0, |c| c.as_primitive::<Int64Type>().value(0));
    let (rows, ids, distinct) = (get("rows"), get("ids"), get("distinct"));
    if ids < rows {
        return Err(pipeline
            .error_at("source.id_column", format!("{} rows of source `{}` have a null id in column `{id}`", rows - ids, source.url))
            .into());
    }
    if distinct < ids {
        return Err(pipeline
            .error_at(
                "source.id_column",
                format!("id column `{id}` of source `{}` is not unique: {} duplicate values", source.url, ids - distinct),
            )
            .into());
    }
    Ok(())
}

/// Group by-columns of an aggregate as optional strings (missing group = `None`).
fn string_columns(batch: &RecordBatch, n: usize) -> Result<Vec<Vec<Option<String>>>, CurateError> {
    (0..n)
        .map(|i| {
            let a = datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8).map_err(|e| df_err("reading cells")(e.into()))?;
            let a = a.as_string::<i32>();
            Ok((0..a.len()).map(|r| (!a.is_null(r)).then(|| a.value(r).to_string())).collect())
        })
        .collect()
}

fn split_index(s: &str) -> usize {
    SPLITS.iter().position(|x| *x == s).unwrap_or(2)
}

/// A cell's values and its group's id, by cell id.
type CellKeys = HashMap<u64, ((GroupKey, LabelKey), u64)>;

/// Pass 0's cells: their values (group, label) and group id, keyed by cell id. Fails
/// if two different cells hash to one id.
fn read_cell_keys(batches: &[RecordBatch], n_attrs: usize) -> Result<CellKeys, CurateError> {
    let mut out: CellKeys = HashMap::new();
    for b in batches {
        let keys = string_columns(b, n_attrs + 1)?;
        let cell_ids = b.column_by_name("__cr_cell").expect("__cr_cell").as_primitive::<UInt64Type>();
        let group_ids = b.column_by_name("__cr_grp").expect("__cr_grp").as_primitive::<UInt64Type>();
        for (r, (cell, group)) in cell_ids.values().iter().zip(group_ids.values()).enumerate() {
            let g: GroupKey = keys[..n_attrs].iter().map(|k| k[r].clone()).collect();
            let key = (g, keys[n_attrs][r].clone());
            if let Some((other, _)) = out.insert(*cell, (key.clone(), *group))
                && other != key
            {
                return Err(CurateError::Engine(EngineError::Config(format!(
                    "two strata hash to the same id ({other:?} and {key:?}); choose another seed"
                ))));
            }
        }
    }
    Ok(out)
}

/// Pass 1's rows and weight sums per (split, cell id), into cells keyed by their values.
fn read_cells(batches: &[RecordBatch], cell_keys: &CellKeys) -> Result<(BTreeMap<(GroupKey, LabelKey), Cell>, u64), CurateError> {
    let mut cells: BTreeMap<(GroupKey, LabelKey), Cell> = BTreeMap::new();
    let mut bad = 0u64;
    for b in batches {
        let splits = string_columns(b, 1)?.remove(0);
        let cell_ids = b.column_by_name("__cell").expect("__cell").as_primitive::<UInt64Type>();
        let rows = b.column_by_name("rows").expect("rows").as_primitive::<Int64Type>();
        let w = b.column_by_name("w").expect("w").as_primitive::<Float64Type>();
        let bad_col = b.column_by_name("bad").expect("bad").as_primitive::<Int64Type>();
        for (r, split) in splits.iter().enumerate() {
            let split = split_index(split.as_deref().unwrap_or("test"));
            let (key, group_id) = cell_keys.get(&cell_ids.value(r)).cloned().ok_or_else(|| {
                CurateError::Engine(EngineError::Config(format!("cell id {} of pass 1 is unknown to pass 0", cell_ids.value(r))))
            })?;
            let cell = cells.entry(key).or_default();
            cell.cell_id = cell_ids.value(r);
            cell.group_id = group_id;
            cell.rows[split] += rows.value(r) as u64;
            cell.weight[split] += if w.is_null(r) { 0.0 } else { w.value(r) };
            bad += if bad_col.is_null(r) { 0 } else { bad_col.value(r) as u64 };
        }
    }
    Ok((cells, bad))
}

fn plan_frame(ctx: &SessionContext, rows: &[(u64, i64, i64)]) -> datafusion::error::Result<DataFrame> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("__plan_cell", DataType::UInt64, false),
        Field::new("__k", DataType::Int64, false),
        Field::new("__n", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )?;
    ctx.read_batch(batch)
}

/// One row of the per-cell lookup table of pass 2.
struct CellLookup {
    cell: u64,
    factor: Option<f64>,
    /// (offset, shard count) for train, validation, test.
    shards: [(i64, i64); 3],
}

fn lookup_frame(ctx: &SessionContext, rows: &[CellLookup]) -> datafusion::error::Result<DataFrame> {
    let mut fields = vec![Field::new("__factor_cell", DataType::UInt64, false), Field::new("__factor", DataType::Float64, true)];
    let mut columns: Vec<datafusion::arrow::array::ArrayRef> = vec![
        Arc::new(UInt64Array::from(rows.iter().map(|r| r.cell).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.factor).collect::<Vec<_>>())),
    ];
    for s in 0..3 {
        fields.push(Field::new(format!("__sh_offset{s}"), DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(rows.iter().map(|r| r.shards[s].0).collect::<Vec<_>>())));
        fields.push(Field::new(format!("__sh_shards{s}"), DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(rows.iter().map(|r| r.shards[s].1).collect::<Vec<_>>())));
    }
    ctx.read_batch(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn describe(attrs: &[String], g: &GroupKey, label: Option<(&String, &LabelKey)>) -> String {
    let mut parts: Vec<String> = attrs.iter().zip(g).map(|(a, v)| format!("{a}={}", v.as_deref().unwrap_or(MISSING_GROUP))).collect();
    if let Some((l, y)) = label {
        parts.push(format!("{l}={}", y.as_deref().unwrap_or(MISSING_GROUP)));
    }
    parts.join(" × ")
}

fn describe_values(attrs: &[String], values: &[String]) -> String {
    attrs.iter().zip(values).map(|(a, v)| format!("{a}={v}")).collect::<Vec<_>>().join(" × ")
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
    let SummaryInput { pipeline, seed, source, output, cells, plans, factors, group_targets, stratify_label, got, mut warnings } = input;
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
    let mut strata: BTreeMap<(GroupKey, Option<LabelKey>), (u64, u64, f64, f64, Option<f64>, Option<f64>)> = BTreeMap::new();
    for ((g, y), c) in cells {
        let key = (g.clone(), by_label.then(|| y.clone()));
        let a = got.get(&(g.clone(), y.clone(), 0)).copied().unwrap_or_default();
        let p = plans.get(&(g.clone(), y.clone())).copied().unwrap_or_default();
        let e = strata.entry(key).or_insert((0, 0, 0.0, 0.0, None, None));
        e.0 += c.rows[0];
        e.1 = if by_label { p.planned } else { p.planned.max(e.1) };
        e.2 += a.1;
        e.3 += a.2;
        e.4 = if by_label { p.target_share } else { group_targets.get(g).copied() };
        e.5 = factors.get(&(g.clone(), y.clone())).copied().flatten();
    }
    let train_before: u64 = splits[0].rows_before;
    let train_after: u64 = splits[0].rows_after;
    let mut out = Vec::new();
    for ((g, y), (before, planned, w, w2, target, factor)) in strata {
        let rows_after: u64 =
            got.iter().filter(|((gg, yy, s), _)| *s == 0 && *gg == g && y.as_ref().is_none_or(|y| yy == y)).map(|(_, v)| v.0).sum();
        let mut stratum = serde_json::Map::new();
        for (a, v) in attrs.iter().zip(&g) {
            stratum.insert(a.clone(), v.clone().map_or(serde_json::Value::Null, serde_json::Value::String));
        }
        if let Some(y) = &y {
            stratum.insert(pipeline.label.column.clone(), label_json(&pipeline.label.positive, y));
        }
        if planned > rows_after && spec.strategy == Strategy::Resample && spec.resample.as_ref().is_some_and(|r| r.exact) {
            warnings.push(format!("stratum {stratum:?} got {rows_after} rows of the {planned} planned"));
        }
        out.push(StratumSummary {
            stratum,
            rows_before: before,
            share_before: if train_before == 0 { 0.0 } else { before as f64 / train_before as f64 },
            target_share: target,
            planned_rows: planned,
            rows_after,
            share_after: if train_after == 0 { 0.0 } else { rows_after as f64 / train_after as f64 },
            weight_sum: w,
            effective_rows: if w2 > 0.0 { w * w / w2 } else { 0.0 },
            replication: if before == 0 { 0.0 } else { rows_after as f64 / before as f64 },
            weight_factor: factor,
        });
    }
    let (tw, tw2) = got.iter().filter(|(k, _)| k.2 == 0).fold((0.0, 0.0), |acc, (_, v)| (acc.0 + v.1, acc.1 + v.2));
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
    let Some(y) = y else { return serde_json::Value::Null };
    match positive {
        LabelValue::Int(_) => y.parse::<i64>().map_or_else(|_| serde_json::Value::String(y.clone()), serde_json::Value::from),
        LabelValue::Bool(_) => y.parse::<bool>().map_or_else(|_| serde_json::Value::String(y.clone()), serde_json::Value::from),
        LabelValue::String(_) => serde_json::Value::String(y.clone()),
    }
}
