//! SQL checks for data engineers, in the dbt style: a check is a SELECT that returns the
//! failing rows.
//!
//! Checks live in `.sql` files (the spec's `[checks] dirs`, by default `sql/`), with
//! metadata in a leading comment block. They query `source`, `profile`, `curated`,
//! `curation`, and per stage `data` and `roles`; parameters from `[checks.params]` are
//! bound as `$name` placeholders, never pasted into the SQL text.

mod file;
mod report;
mod run;
mod tables;
mod threshold;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::*;
use strata_engine::{Engine, EngineError, LabelKind, SOURCE_TABLE, SourceTable};
use strata_run::Destination;
use strata_spec::{ParamValue, Pipeline};

pub use file::{CheckFile, Severity, Stage, load_checks};
pub use report::{CHECKS_SCHEMA_VERSION, CheckRun};
pub use run::{CheckResult, Status};
pub use threshold::Threshold;

/// Why checks could not be loaded or their tables prepared. A check that fails to run is
/// not an error of this kind: it is a result with status `error`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{}:{line}: {message}", path.display())]
    File {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("check folder {}: {message}", path.display())]
    Dir { path: PathBuf, message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Run(#[from] strata_run::RunError),
    #[error(transparent)]
    Profile(#[from] strata_profile::ProfileError),
    /// Reading the curation summary or writing the failing rows. The message shows the
    /// cause on one line; the cause itself is the source.
    #[error("{context}: {message}")]
    Data {
        context: String,
        message: String,
        #[source]
        source: strata_engine::BoxError,
    },
    #[error("{0}")]
    Usage(String),
}

impl CheckError {
    fn data<E: Into<strata_engine::BoxError>>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let context = context.into();
        move |e| {
            let source = e.into();
            Self::Data {
                context,
                message: strata_engine::one_line(&source.to_string()),
                source,
            }
        }
    }
}

/// Which stages `strata check` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StageSelection {
    Source,
    Curated,
    #[default]
    All,
}

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub stages: StageSelection,
    /// The output root of `strata curate` (follows `_latest`), a run folder or a manifest:
    /// where `curated` and `curation` come from.
    pub out: Option<String>,
    /// Where kept failing rows go; by default `checks/` in the run folder.
    pub failing_rows: Option<String>,
    pub strict: bool,
    /// Overrides `[checks] timeout_secs`: seconds one check may run.
    pub timeout_secs: Option<u64>,
    /// The source's profile when the caller has computed it already (a pipeline run);
    /// otherwise `check` computes it.
    pub profile: Option<strata_profile::Profile>,
}

fn df_err(context: &str) -> impl FnOnce(datafusion::error::DataFusionError) -> CheckError + '_ {
    move |e| CheckError::Engine(EngineError::datafusion(context.to_string())(e))
}

/// Loads the pipeline's checks, prepares their tables and runs them stage by stage.
pub async fn check(
    engine: &Engine,
    pipeline: &Pipeline,
    source: &SourceTable,
    label_kind: LabelKind,
    options: &CheckOptions,
) -> Result<CheckRun, CheckError> {
    let ctx = engine.context();
    let checks = load_checks(&pipeline.checks.dirs)?;
    // the tables of an earlier check run in this session (a pipeline may check twice)
    for table in [
        tables::PROFILE_TABLE,
        tables::CURATED_TABLE,
        tables::CURATION_TABLE,
    ] {
        ctx.deregister_table(table)
            .map_err(df_err("replacing the check tables"))?;
    }
    if checks.is_empty() {
        return Err(CheckError::Usage(format!(
            "no `.sql` checks found in {}",
            pipeline.checks.dirs.join(", ")
        )));
    }
    let mut params: Vec<(String, ParamValue)> = pipeline
        .checks
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !pipeline.checks.params.contains_key("min_group_rows") {
        params.push((
            "min_group_rows".into(),
            ParamValue::Int(pipeline.groups.min_group_rows as i64),
        ));
    }

    let want_source = matches!(options.stages, StageSelection::Source | StageSelection::All);
    let want_curated = matches!(
        options.stages,
        StageSelection::Curated | StageSelection::All
    );
    if options.stages == StageSelection::Curated && options.out.is_none() {
        return Err(CheckError::Usage(
            "--stage curated needs --out URL: the output root of `strata curate`".into(),
        ));
    }

    // the profile of the source: every stage may use it
    let profile = match &options.profile {
        Some(p) => p.clone(),
        None => strata_profile::profile(engine, pipeline, source, label_kind).await?,
    };
    let batch =
        tables::profile_batch(pipeline, &profile).map_err(df_err("building the profile table"))?;
    engine
        .register_small(tables::PROFILE_TABLE, batch)
        .map_err(df_err("registering the profile table"))?;

    // the published run, when asked for
    let mut run: Option<(Destination, strata_run::Manifest)> = None;
    if let (true, Some(out)) = (want_curated, &options.out) {
        let url = strata_run::parse_location(out)?;
        let store = engine.store_for(&url, &pipeline.storage)?;
        let (dest, manifest) = strata_run::resolve(store, &url).await?;
        let urls: Vec<String> = manifest
            .shards
            .iter()
            .map(|s| dest.url_of(&s.path))
            .collect();
        if urls.is_empty() {
            return Err(CheckError::Usage(format!(
                "the run at {} has no shards to check",
                dest.root()
            )));
        }
        let curated = ctx
            .read_parquet(urls, ParquetReadOptions::default())
            .await
            .map_err(df_err("reading the curated shards"))?;
        ctx.register_table(tables::CURATED_TABLE, curated.into_view())
            .map_err(df_err("registering the curated table"))?;
        let summary = dest.get(&manifest.summary).await?.ok_or_else(|| {
            CheckError::Usage(format!("{} is missing", dest.url_of(&manifest.summary)))
        })?;
        let summary: serde_json::Value = serde_json::from_slice(&summary)
            .map_err(CheckError::data(dest.url_of(&manifest.summary)))?;
        let batch =
            tables::curation_batch(&summary).map_err(df_err("building the curation table"))?;
        engine
            .register_small(tables::CURATION_TABLE, batch)
            .map_err(df_err("registering the curation table"))?;
        run = Some((dest, manifest));
    }
    let run_id = run.as_ref().map_or_else(
        || format!("source-{}", chrono_stamp()),
        |(_, m)| m.run_id.clone(),
    );

    let mut results = Vec::new();
    let max = pipeline.checks.max_failing_rows;
    let timeout = std::time::Duration::from_secs(
        options.timeout_secs.unwrap_or(pipeline.checks.timeout_secs),
    );
    for (stage, wanted, table) in [
        (Stage::Source, want_source, SOURCE_TABLE),
        (Stage::Curated, want_curated, tables::CURATED_TABLE),
    ] {
        let mine: Vec<&CheckFile> = checks
            .iter()
            .filter(|c| c.stages.contains(&stage))
            .collect();
        if !wanted || mine.is_empty() {
            continue;
        }
        if stage == Stage::Curated && run.is_none() {
            for c in mine {
                results.push(skipped(
                    c,
                    stage,
                    "no --out given: the curated stage was not run",
                ));
            }
            continue;
        }
        tables::register_stage_views(ctx, pipeline, stage)
            .await
            .map_err(df_err("registering the stage's views"))?;
        let rows = ctx
            .table(table)
            .await
            .map_err(df_err("counting rows"))?
            .count()
            .await
            .map_err(df_err("counting rows"))? as u64;
        results.extend(run::run_stage(ctx, &mine, stage, &params, rows, max, timeout).await);
    }

    // keep failing rows, tagged with the run id
    let keep_at = match (&options.failing_rows, &run) {
        (Some(url), _) => {
            let url = strata_run::parse_location(url)?;
            Some(Destination::new(
                engine.store_for(&url, &pipeline.storage)?,
                url,
            ))
        }
        (None, Some((dest, _))) => Some(dest.clone()),
        (None, None) => None,
    };
    if let Some(dest) = keep_at {
        for r in results
            .iter_mut()
            .filter(|r| matches!(r.status, Status::Fail | Status::Warn) && !r.sample.is_empty())
        {
            let rel = format!("checks/{}__{}.parquet", r.stage.as_str(), r.check.name);
            let bytes = failing_rows_parquet(&r.sample, &run_id).map_err(CheckError::data(&rel))?;
            dest.put(&rel, bytes.into()).await?;
            r.failing_rows_file = Some(dest.url_of(&rel));
        }
    } else if results.iter().any(|r| r.status == Status::Fail) {
        tracing::info!(
            "failing rows are not kept: give --out (a published run) or --failing-rows URL"
        );
    }
    Ok(CheckRun {
        pipeline: pipeline.name.clone(),
        run_id,
        strict: options.strict,
        results,
    })
}

fn skipped(c: &CheckFile, stage: Stage, why: &str) -> CheckResult {
    CheckResult {
        check: c.clone(),
        stage,
        status: Status::Skipped,
        failing_rows: None,
        checked_rows: 0,
        rule: String::new(),
        message: Some(why.into()),
        duration_ms: 0,
        sample: Vec::new(),
        failing_rows_file: None,
    }
}

/// The kept failing rows with a leading `strata_run_id` column.
fn failing_rows_parquet(
    batches: &[RecordBatch],
    run_id: &str,
) -> Result<Vec<u8>, strata_engine::BoxError> {
    let first = &batches[0];
    let mut fields = vec![Arc::new(Field::new("strata_run_id", DataType::Utf8, false))];
    fields.extend(first.schema().fields().iter().cloned());
    let schema = Arc::new(Schema::new(fields));
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), None)?;
    for b in batches {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![run_id; b.num_rows()]))];
        cols.extend(b.columns().iter().cloned());
        let b = RecordBatch::try_new(schema.clone(), cols)?;
        w.write(&b)?;
    }
    Ok(w.into_inner()?)
}

fn chrono_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}
