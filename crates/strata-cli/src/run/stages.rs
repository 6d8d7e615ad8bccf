//! The steps of `strata run` that are more than a call into a library: a check stage's
//! outputs and note, both models' predictions merged into one file, and what the
//! report shows of the run.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use url::Url;

use super::record::{Folder, Status, check_status};
use crate::train::predict_split;
use strata_train::Trained;

/// Whether any of the spec's check folders holds a SQL check: a pipeline without any
/// skips both check stages (`strata check` alone calls that an error: it was asked to
/// check).
pub(super) fn has_checks(spec: &strata_spec::Pipeline) -> bool {
    spec.checks.dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
    })
}

/// A check stage: runs the checks of `stages`, puts their JSON and JUnit results under
/// `checks/` in the run folder, and notes each check that failed or could not run.
pub(super) async fn checks(
    p: &strata::Pipeline,
    dir: &Folder,
    stages: strata_check::StageSelection,
    out_run: Option<String>,
    profile: Option<strata::Profile>,
    prefix: &str,
) -> anyhow::Result<(strata::CheckRun, Status, Vec<String>, Option<String>)> {
    let run = p
        .check(strata_check::CheckOptions {
            stages,
            out: out_run,
            failing_rows: None,
            strict: false,
            timeout_secs: None,
            profile,
        })
        .await?;
    let json = strata_spec::json::to_string_pretty(&run.to_json())? + "\n";
    let a = dir.put(&format!("checks/{prefix}.json"), json).await?;
    let b = dir
        .put(&format!("checks/{prefix}.junit.xml"), run.to_junit())
        .await?;
    let status = check_status(&run);
    let mut note = format!("{} checks", run.results.len());
    let bad: Vec<String> = run
        .results
        .iter()
        .filter(|r| {
            matches!(
                run.effective(r),
                strata_check::Status::Fail | strata_check::Status::Error
            )
        })
        .map(|r| match (&r.message, run.effective(r)) {
            (Some(m), strata_check::Status::Error) => {
                format!("{} could not run: {m}", r.check.name)
            }
            _ => format!(
                "{} failed ({} failing rows, {})",
                r.check.name,
                r.failing_rows.unwrap_or(0),
                r.rule
            ),
        })
        .collect();
    if !bad.is_empty() {
        note.push_str(&format!("; {}", bad.join("; ")));
    }
    Ok((run, status, vec![a, b], Some(note)))
}

/// Scores the test split of `run_url` with each model (its own file under
/// `models/<name>/`), then writes both models' predictions into `predictions.parquet`
/// with a `model` column, a batch at a time, read and written streaming: neither file is
/// ever whole in memory (at 200M source rows the test split's two files are over half a
/// gigabyte). Returns each model's accuracy, as the stage's note.
pub(super) async fn predict(
    trained: &[(&str, Trained)],
    run_url: &Url,
    dir: &Folder,
    storage: &strata_spec::StorageOptions,
) -> anyhow::Result<String> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let (store, path) = dir.dest.object("predictions.parquet");
    let mut writer: Option<AsyncArrowWriter<BufWriter>> = None;
    let mut rows = Vec::new();
    for (name, model) in trained {
        let rel = format!("models/{name}/test-predictions.parquet");
        let part = dir.url_of(&rel);
        let summary = predict_split(model, run_url, "test", &part, storage).await?;
        rows.push(format!("{name} accuracy {:.4}", summary.accuracy));
        let (part_store, part_path) = dir.dest.object(&rel);
        let context = |e: parquet::errors::ParquetError| anyhow::anyhow!("{part}: {e}");
        let object = strata_run::ObjectReader::open(&part_store, &part_path, part.as_str()).await?;
        let mut batches = ParquetRecordBatchStreamBuilder::new(object)
            .await
            .and_then(|b| b.build())
            .map_err(context)?;
        while let Some(batch) = batches.next().await {
            let batch = with_model(batch.map_err(context)?, name)?;
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(AsyncArrowWriter::try_new(
                    BufWriter::new(store.clone(), path.clone()),
                    batch.schema(),
                    Some(props.clone()),
                )?),
            };
            w.write(&batch).await?;
        }
    }
    writer
        .ok_or_else(|| anyhow::anyhow!("the test split holds no rows to score"))?
        .close()
        .await?;
    Ok(rows.join(", "))
}

/// `batch` with a `model` column of `name` after its columns.
fn with_model(batch: RecordBatch, name: &str) -> anyhow::Result<RecordBatch> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("model", DataType::Utf8, false));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![name; batch.num_rows()])));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// What the report shows of the run before the evaluation: its facts (folder, seed,
/// published run, each check stage's outcome) and every check's line.
pub(super) fn report_facts(
    out: &Url,
    seed: u64,
    published: Option<&strata::Published>,
    checks: [Option<&strata::CheckRun>; 2],
) -> (Vec<(String, String)>, Vec<strata_report::CheckLine>) {
    let mut facts = vec![
        ("run folder".to_string(), out.to_string()),
        ("seed".to_string(), seed.to_string()),
    ];
    if let Some(p) = published {
        facts.push(("published run".to_string(), p.run_url.clone()));
    }
    for (k, c) in ["source checks", "curated checks"].into_iter().zip(checks) {
        if let Some(c) = c {
            facts.push((
                k.to_string(),
                format!(
                    "{} checks, {}",
                    c.results.len(),
                    match check_status(c) {
                        Status::Passed => "all pass",
                        _ => "some fail",
                    }
                ),
            ));
        }
    }
    let lines = checks
        .into_iter()
        .flatten()
        .flat_map(|run| {
            run.results.iter().map(|r| strata_report::CheckLine {
                stage: r.stage.as_str().to_string(),
                name: r.check.name.clone(),
                status: run.effective(r).as_str().to_string(),
                failing_rows: r.failing_rows,
                rule: r.rule.clone(),
                message: r.message.clone(),
            })
        })
        .collect();
    (facts, lines)
}
