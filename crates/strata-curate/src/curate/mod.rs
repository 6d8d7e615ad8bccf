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

mod cells;
mod cuts;
mod rows;
mod sample;
mod split;
mod summarise;
mod table;
mod write;

use cells::*;
use cuts::*;
use rows::*;
use sample::*;
use split::*;
use summarise::*;
use table::*;
use write::*;

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
///
/// The passes, each a function of its own: cell counts (pass 0, `cells`) → the split
/// cuts (pass 1, `split`) → the plan (`crate::planning`) → the sample cuts (pass 1b,
/// `sample`) → the curated rows into the shard writer (pass 2, `write`) → the summary
/// and the commit (`crate::publish`).
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
    let tuning = Tuning::from_env()?;
    refuse_reserved_columns(source)?;

    // where the run goes; a run already committed there is not redone
    let (destination, run) =
        match publish::open_run(engine, pipeline, source, seed, options).await? {
            publish::Opened::Already(published) => return Ok(*published),
            publish::Opened::New { destination, run } => (destination, run),
        };
    let passes = Passes::new(engine, pipeline, source, spec, seed, tuning.paths);

    // pass 0: rows per cell
    let cell_keys = count_cells(engine, pipeline, source, seed).await?;

    // pass 1: the split
    let targets = split_targets(&cell_keys, spec.split);
    let SplitFound { observed, merged } = passes.split_pass(&cell_keys, &targets).await?;
    let mut warnings = Vec::new();
    let (cells, split_cuts) = split_cells(pipeline, &cell_keys, &targets, &observed, &mut warnings);
    refuse_all_zero_weights(pipeline, source, &cells)?;

    // the plan, on the driver
    let Plans {
        mut factors,
        plans,
        group_targets,
    } = make_plans(pipeline, spec, passes.stratify_label, &cells, &mut warnings)?;
    let replicate = passes.resample && plans.values().any(|p| p.planned > p.available);
    let mut table = cell_rows(&cells, &plans, &split_cuts);

    // pass 1b (exact resampling): the sample cuts
    let trims = if passes.resample && passes.exact {
        passes
            .sample_pass(&cell_keys, &cells, &plans, &observed, merged, &mut table)
            .await?
    } else {
        Trims::new()
    };
    // reweighing after resampling uses the resampled weight sums: one more aggregate
    if passes.resample && passes.reweigh_after {
        let (f, complete) = passes
            .reweigh_resampled(&cell_keys, &table, &trims, replicate)
            .await?;
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

    // pass 2: the curated rows into the shard writer
    let shard_rows = shard_rows(pipeline, source, &cells);
    let expected_rows = expected_rows(&passes, &cells, &plans);
    let written = passes
        .write_shards(
            &destination,
            &run.run_id,
            ShardPlan {
                cells: &cells,
                table: &table,
                trims,
                replicate,
                shard_rows,
                expected_rows,
                shard_memory: tuning.shard_memory,
                range_rows: tuning.range_rows,
            },
        )
        .await?;
    tracing::info!(out = %run.url, shards = written.shards.len(), "curated run written");

    // the summary, from what the writer wrote, and the commit
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
        stratify_label: passes.stratify_label,
        got: &got,
        warnings,
    })?;
    let mut stratum_columns = pipeline.groups.attributes.clone();
    if !passes.group_strata() {
        stratum_columns.push(pipeline.label.column.clone());
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

/// The environment's tuning of the writer and the cut passes, checked before any work.
struct Tuning {
    /// `STRATA_SHARD_MEMORY` ("0" spills from the start, as under --memory-limit).
    shard_memory: Option<usize>,
    /// `STRATA_RANGE_ROWS`.
    range_rows: Option<u64>,
    /// `STRATA_CUT_PATHS`: which ways to the cuts are taken, only for tests that check
    /// each way gives the same bytes (docs/curation.md, "How it runs").
    paths: CutPaths,
}

impl Tuning {
    fn from_env() -> Result<Self, CurateError> {
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
        let paths = tuning("STRATA_CUT_PATHS", |v| match v {
            "separate" => Ok(CutPaths::Separate),
            "full-window" => Ok(CutPaths::FullWindow),
            _ => Err("one of `separate` or `full-window`".into()),
        })?
        .unwrap_or_default();
        Ok(Self {
            shard_memory,
            range_rows,
            paths,
        })
    }
}

/// A source column named like one curation adds or uses is refused.
fn refuse_reserved_columns(source: &SourceTable) -> Result<(), CurateError> {
    for reserved in ["split", "sample_weight"].iter().chain(col::ALL) {
        if source.schema.field_with_name(reserved).is_ok() {
            return Err(EngineError::bad_source(
                source.url.clone(),
                format!(
                    "has a column named `{reserved}`, which curation adds or uses; rename it first"
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Weights of zero throughout leave nothing to reweigh and nothing for a model to learn
/// from: an error, not a run of all-zero sample weights.
fn refuse_all_zero_weights(
    pipeline: &Pipeline,
    source: &SourceTable,
    cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
) -> Result<(), CurateError> {
    const TRAIN: usize = 0;
    if let Some(w) = &pipeline.source.weight_column
        && cells.values().all(|c| c.weight[TRAIN] == 0.0)
        && cells.values().any(|c| c.rows[TRAIN] > 0)
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
    Ok(())
}

/// The per-cell table every later pass attaches to its rows: the split cuts and the
/// plan of the cell's stratum (the sample cut and the weight factor come later).
fn cell_rows(
    cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
    plans: &BTreeMap<(GroupKey, LabelKey), Planned>,
    split_cuts: &HashMap<u64, [Cut; 2]>,
) -> BTreeMap<u64, CellRow> {
    let mut table: BTreeMap<u64, CellRow> = BTreeMap::new();
    for (k, c) in cells {
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
    table
}

/// Rows per shard: `publish.shard_rows`, or `publish.shard_bytes` over the source's
/// bytes per row.
fn shard_rows(
    pipeline: &Pipeline,
    source: &SourceTable,
    cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
) -> u64 {
    match pipeline.publish.shard_size {
        ShardSize::Rows(n) => n,
        ShardSize::Bytes(bytes) => {
            let source_rows: u64 = cells.values().map(|c| c.rows.iter().sum::<u64>()).sum();
            let source_bytes: u64 = source.files.iter().map(|f| f.size).sum();
            let per_row = (source_bytes as f64 / source_rows.max(1) as f64).max(1.0);
            ((bytes as f64 / per_row) as u64).max(1)
        }
    }
}

/// The rows the curated run will hold: each stratum's planned training rows (or its
/// training rows), and every validation and test row.
fn expected_rows(
    passes: &Passes<'_>,
    cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
    plans: &BTreeMap<(GroupKey, LabelKey), Planned>,
) -> u64 {
    let planned: BTreeMap<u64, u64> = cells
        .iter()
        .map(|(k, c)| {
            (
                passes.stratum_of(c),
                plans.get(k).map_or(c.rows[0], |p| p.planned),
            )
        })
        .collect();
    planned.values().sum::<u64>() + cells.values().map(|c| c.rows[1] + c.rows[2]).sum::<u64>()
}

fn split_index(s: &str) -> usize {
    SPLITS.iter().position(|x| *x == s).unwrap_or(2)
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
