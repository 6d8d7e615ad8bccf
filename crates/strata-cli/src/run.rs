//! `strata run`: every stage in order, one run folder, a verdict. The stages are the
//! library's and the other commands' own; this module orders them, times them, writes
//! their outputs under the run folder and records it all in `run.json`.

use std::io::IsTerminal;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use serde::Serialize;
use std::sync::Arc;
use strata_engine::{Engine, EngineOptions};
use url::Url;

use crate::Outcome;
use crate::cli::{EvalArgs, OutputFormat, RunArgs, SummaryFormat};
use crate::commands::print_stdout;
use crate::eval::{EvalContext, EvalRun};
use crate::progress::Style;
use crate::train::{folder, predict_split, train_to};

const RUN_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    /// Ran and passed (warnings allowed).
    Passed,
    /// Ran, and its checks or gates failed.
    Failed,
    /// Could not run to the end.
    Error,
    /// Not run: a stage it depends on did not pass, or it has nothing to do.
    Skipped,
}

#[derive(Debug, Serialize)]
struct Stage {
    name: &'static str,
    status: Status,
    seconds: f64,
    outputs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// `run.json`.
#[derive(Debug, Serialize)]
struct RunJson {
    schema_version: u32,
    strata_version: &'static str,
    pipeline: String,
    spec: String,
    out: String,
    seed: u64,
    engine: String,
    started_at: String,
    finished_at: String,
    seconds: f64,
    status: Status,
    /// The stage that stopped the run, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at: Option<&'static str>,
    stages: Vec<Stage>,
}

/// The run folder; small outputs are put whole.
struct Folder {
    url: Url,
    dest: strata_run::Destination,
}

impl Folder {
    fn url_of(&self, rel: &str) -> Url {
        self.url.join(rel).expect("a relative path")
    }

    async fn put(&self, rel: &str, bytes: impl Into<Bytes>) -> anyhow::Result<String> {
        self.dest.put(rel, bytes.into()).await?;
        Ok(self.dest.url_of(rel))
    }
}

/// Where the stage lines go: stdout, one line per stage as it ends (a scheduler's log
/// keeps them); on a terminal, a spinner on stderr while a stage runs.
struct Lines {
    table: bool,
    spinner: Option<indicatif::ProgressBar>,
    bars: bool,
}

impl Lines {
    fn start(&mut self, name: &str) {
        tracing::info!(stage = name, "stage started");
        if self.bars && std::io::stderr().is_terminal() {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message(name.to_string());
            s.enable_steady_tick(std::time::Duration::from_millis(120));
            self.spinner = Some(s);
        }
    }

    fn end(&mut self, stage: &Stage) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
        tracing::info!(stage = stage.name, status = ?stage.status, seconds = stage.seconds, "stage finished");
        if self.table {
            let mark = match stage.status {
                Status::Passed => "ok",
                Status::Failed => "FAILED",
                Status::Error => "ERROR",
                Status::Skipped => "skipped",
            };
            let mut line = format!("{:<16} {:<8} {:>7.1} s", stage.name, mark, stage.seconds);
            if let Some(m) = &stage.message {
                line.push_str(&format!("  {m}"));
            }
            let _ = print_stdout(&(line + "\n"));
        }
    }
}

/// Runs one stage: times it and records its status; an error becomes the stage's
/// message (the run stops there).
struct Recorder {
    stages: Vec<Stage>,
    lines: Lines,
    stopped_at: Option<&'static str>,
    worst: Status,
}

impl Recorder {
    /// A stage that cannot run because an earlier one did not pass.
    fn blocked(&mut self, name: &'static str) {
        let why = format!(
            "not run: stage {} did not pass",
            self.stopped_at.unwrap_or("an earlier stage")
        );
        self.skip(name, &why);
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        let stage = Stage {
            name,
            status: Status::Skipped,
            seconds: 0.0,
            outputs: Vec::new(),
            message: Some(why.to_string()),
        };
        self.lines.end(&stage);
        self.stages.push(stage);
    }

    /// `f` gives the stage's status, outputs and a note; `Err` is an error.
    async fn stage<T>(
        &mut self,
        name: &'static str,
        f: impl Future<Output = anyhow::Result<(T, Status, Vec<String>, Option<String>)>>,
    ) -> Option<T> {
        if let Some(at) = self.stopped_at {
            self.skip(name, &format!("not run: stage {at} did not pass"));
            return None;
        }
        self.lines.start(name);
        let t = Instant::now();
        let (value, status, outputs, message) = match f.await {
            Ok((v, s, o, m)) => (Some(v), s, o, m),
            Err(e) => (None, Status::Error, Vec::new(), Some(crate::error_line(&e))),
        };
        let stage = Stage {
            name,
            status,
            seconds: t.elapsed().as_secs_f64(),
            outputs,
            message,
        };
        self.lines.end(&stage);
        if status == Status::Error || status == Status::Failed {
            self.stopped_at = Some(name);
            tracing::error!(
                stage = name,
                message = stage.message.as_deref().unwrap_or(""),
                "stage did not pass"
            );
        }
        self.worst = worse(self.worst, status);
        self.stages.push(stage);
        value
    }
}

fn worse(a: Status, b: Status) -> Status {
    let rank = |s| match s {
        Status::Passed | Status::Skipped => 0,
        Status::Failed => 1,
        Status::Error => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn check_status(run: &strata_check::CheckRun) -> Status {
    if run.any_error() {
        Status::Error
    } else if run.any_failure() {
        Status::Failed
    } else {
        Status::Passed
    }
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

fn default_out(spec: &strata_spec::Pipeline) -> anyhow::Result<Url> {
    let dir = std::env::current_dir()?
        .join("strata-runs")
        .join(&spec.name);
    Url::from_directory_path(&dir)
        .map_err(|()| anyhow::anyhow!("{}: not an absolute folder", dir.display()))
}

pub async fn run(args: RunArgs, style: Style) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // the whole spec is validated here, every section, before any data is read
    let mut spec = strata_spec::Pipeline::load(&args.pipeline)?;
    let curate_section = spec.curate.clone().ok_or_else(|| {
        spec.error_at(
            "curate",
            "`strata run` needs a [curate] section: it compares the curated model with a baseline",
        )
    })?;
    let seed = args.seed.unwrap_or(curate_section.seed);
    if spec.train.seed.is_none() {
        spec.train.seed = Some(seed);
    }
    if spec.eval.seed.is_none() {
        spec.eval.seed = Some(seed);
    }
    let out = folder(match &args.out {
        Some(u) => strata_run::parse_location(u)?,
        None => default_out(&spec)?,
    });
    // the data stages run on this engine; the run folder, training and evaluation are
    // this process's
    let engine_options = EngineOptions {
        engine: Some(args.engine.clone().unwrap_or_else(|| spec.engine.clone())),
        memory_limit: args.memory_limit,
        spill_dir: args.spill_dir.clone(),
        ..EngineOptions::default()
    };
    let engine = Engine::new(&EngineOptions::default())?;
    let store = engine.store_for(&out, &spec.storage)?;
    let dir = Folder {
        url: out.clone(),
        dest: strata_run::Destination::new(store, out.clone()),
    };
    let mut rec = Recorder {
        stages: Vec::new(),
        lines: Lines {
            table: args.format == SummaryFormat::Table,
            spinner: None,
            bars: style == Style::Bars,
        },
        stopped_at: None,
        worst: Status::Passed,
    };
    let spec_path = args.pipeline.clone();

    // validate: the source's schema against the spec
    let pipeline = rec
        .stage("validate", async {
            let p = strata::Pipeline::from_spec(spec.clone(), &engine_options).await?;
            // the later stages' columns, against the source, before anything runs
            let schema = &p.source().schema;
            let named = spec
                .train
                .features
                .iter()
                .flatten()
                .map(|c| ("train.features", c))
                .chain(
                    spec.train
                        .categorical
                        .iter()
                        .map(|c| ("train.categorical", c)),
                )
                .chain(spec.train.numeric.iter().map(|c| ("train.numeric", c)));
            for (key, c) in named {
                if schema.field_with_name(c).is_err() {
                    return Err(spec
                        .error_at(
                            key,
                            format!(
                                "column `{c}` is not in the source `{}` (columns: {})",
                                p.source().url,
                                schema
                                    .fields()
                                    .iter()
                                    .map(|f| f.name().as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                        .into());
                }
            }
            let note = format!(
                "{} file(s), {} columns",
                p.source().files.len(),
                p.source().schema.fields().len()
            );
            Ok((p, Status::Passed, Vec::new(), Some(note)))
        })
        .await;

    let profile = match &pipeline {
        Some(p) => {
            rec.stage("profile", async {
                let profile = p.profile().await?;
                let text = strata_profile::render(&profile, strata_profile::Format::Json);
                let url = dir.put("profile.json", text).await?;
                let note = format!("{} groups", profile.groups.len());
                Ok((profile, Status::Passed, vec![url], Some(note)))
            })
            .await
        }
        None => {
            rec.blocked("profile");
            None
        }
    };

    let checks = |stage: strata_check::StageSelection,
                  out_run: Option<String>,
                  profile: Option<strata::Profile>,
                  prefix: &'static str| {
        let pipeline = pipeline.as_ref();
        let dir = &dir;
        async move {
            let p = pipeline.expect("validated");
            let run = p
                .check(strata_check::CheckOptions {
                    stages: stage,
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
    };
    // a pipeline without SQL checks skips both check stages (`strata check` alone
    // calls that an error: it was asked to check)
    let has_checks = spec.checks.dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
    });
    let no_checks = format!(
        "no SQL checks in checks.dirs ({})",
        spec.checks.dirs.join(", ")
    );
    let source_checks = if pipeline.is_some() && !has_checks {
        rec.skip("source checks", &no_checks);
        None
    } else if pipeline.is_some() {
        rec.stage(
            "source checks",
            checks(
                strata_check::StageSelection::Source,
                None,
                profile.clone(),
                "source",
            ),
        )
        .await
    } else {
        rec.blocked("source checks");
        None
    };

    let curated_root = dir.url_of("curated/");
    let published = match &pipeline {
        Some(p) => {
            rec.stage("curate", async {
                let published = p
                    .curate(&strata_curate::CurateOptions {
                        seed: Some(seed),
                        out: curated_root.to_string(),
                        run_id: None,
                    })
                    .await?;
                let note = format!(
                    "run {}{}",
                    published.manifest.run_id,
                    if published.already_published {
                        " (already published: reused)"
                    } else {
                        ""
                    }
                );
                let url = published.run_url.clone();
                Ok((published, Status::Passed, vec![url], Some(note)))
            })
            .await
        }
        None => {
            rec.blocked("curate");
            None
        }
    };

    let curated_checks = match &published {
        Some(_) if !has_checks => {
            rec.skip("curated checks", &no_checks);
            None
        }
        Some(pb) => {
            rec.stage(
                "curated checks",
                checks(
                    strata_check::StageSelection::Curated,
                    Some(pb.run_url.clone()),
                    profile.clone(),
                    "curated",
                ),
            )
            .await
        }
        None => {
            rec.blocked("curated checks");
            None
        }
    };

    // the baseline trains on the uncurated training split of the same split: with
    // reweighing, the curated run's own train split without its weights; with
    // resampling, the train split of a run of the same spec and seed that only splits
    let baseline_run: Option<Url> = match (&published, &pipeline) {
        (Some(pb), Some(_)) if curate_section.strategy == strata_spec::Strategy::Reweigh => {
            Some(folder(strata_run::parse_location(&pb.run_url)?))
        }
        (Some(_), Some(_)) => {
            let mut base_spec = spec.clone();
            if let Some(c) = base_spec.curate.as_mut() {
                c.strategy = strata_spec::Strategy::Reweigh;
                c.resample = None;
            }
            // the identity hashes the spec's text: mark the derived spec's
            base_spec.text.push_str(
                "\n# strata run: the baseline split (this spec, strategy = \"reweigh\", trained without weights)\n",
            );
            let root = dir.url_of("baseline-split/");
            rec.stage("baseline split", async {
                let p = strata::Pipeline::from_spec(base_spec, &engine_options).await?;
                let published = p
                    .curate(&strata_curate::CurateOptions {
                        seed: Some(seed),
                        out: root.to_string(),
                        run_id: None,
                    })
                    .await?;
                let url = folder(strata_run::parse_location(&published.run_url)?);
                Ok((url, Status::Passed, vec![published.run_url.clone()], None))
            })
            .await
        }
        _ => {
            if curate_section.strategy != strata_spec::Strategy::Reweigh {
                rec.blocked("baseline split");
            }
            None
        }
    };

    let mut trained = Vec::new();
    for (name, shards) in [
        ("baseline", baseline_run.clone()),
        (
            "curated",
            published
                .as_ref()
                .map(|p| folder(strata_run::parse_location(&p.run_url).expect("a URL"))),
        ),
    ] {
        let stage_name = if name == "baseline" {
            "train baseline"
        } else {
            "train curated"
        };
        let Some(shards) = shards else {
            rec.blocked(stage_name);
            continue;
        };
        let mut s = spec.clone();
        s.train.sample_weights = name == "curated" && spec.train.sample_weights;
        let model_url = dir.url_of(&format!("models/{name}/"));
        let t = rec
            .stage(stage_name, async {
                let options = strata_train::TrainOptions {
                    seed: Some(seed),
                    device: strata_train::device(false)?,
                    memory_limit: args.memory_limit,
                };
                let model = train_to(&s, &shards, &model_url, &options, style).await?;
                let r = model.report.as_ref().expect("fresh");
                let note = format!(
                    "{} train rows, validation accuracy {}",
                    r.train_rows,
                    r.epochs
                        .iter()
                        .find(|e| e.epoch == r.best_epoch)
                        .and_then(|e| e.validation_accuracy)
                        .map_or("-".into(), |a| format!("{a:.4}"))
                );
                Ok((
                    model,
                    Status::Passed,
                    vec![model_url.to_string()],
                    Some(note),
                ))
            })
            .await;
        if let Some(t) = t {
            trained.push((name, t));
        }
    }

    let predictions_url = dir.url_of("predictions.parquet");
    let predicted = match &published {
        Some(pb) if trained.len() == 2 => {
            let run_url = folder(strata_run::parse_location(&pb.run_url)?);
            rec.stage("predict", async {
                // both models' predictions in one file, a batch at a time, read and
                // written streaming: neither file is ever whole in memory (at 200M source
                // rows the test split's two files are over half a gigabyte)
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                let (store, path) = dir.dest.object("predictions.parquet");
                let mut writer: Option<AsyncArrowWriter<BufWriter>> = None;
                let mut rows = Vec::new();
                for (name, model) in &trained {
                    let rel = format!("models/{name}/test-predictions.parquet");
                    let part = dir.url_of(&rel);
                    let summary =
                        predict_split(model, &run_url, "test", &part, &spec.storage).await?;
                    rows.push(format!("{name} accuracy {:.4}", summary.accuracy));
                    let (part_store, part_path) = dir.dest.object(&rel);
                    let context = |e: parquet::errors::ParquetError| anyhow::anyhow!("{part}: {e}");
                    let object =
                        strata_run::ObjectReader::open(&part_store, &part_path, part.as_str())
                            .await?;
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
                let url = dir.dest.url_of("predictions.parquet");
                Ok(((), Status::Passed, vec![url], Some(rows.join(", "))))
            })
            .await
        }
        _ => {
            rec.blocked("predict");
            None
        }
    };

    let mut evaluation: Option<EvalRun> = None;
    if predicted.is_some() {
        let curation = published.as_ref().map(|p| {
            (
                format!(
                    "{}curation.json",
                    folder(strata_run::parse_location(&p.run_url).expect("a URL"))
                ),
                serde_json::to_value(&p.curation).unwrap_or_default(),
            )
        });
        let eval_args = EvalArgs {
            predictions: predictions_url.to_string(),
            pipeline: Some(spec_path.clone()),
            groups: Vec::new(),
            label: "y_true".into(),
            positive: None,
            pred: "y_pred".into(),
            score: None,
            weight: None,
            model_column: "model".into(),
            threshold: None,
            replicates: None,
            seed: Some(seed),
            min_group_rows: None,
            curation: None,
            out: None,
            format: OutputFormat::Table,
        };
        let mut facts = vec![
            ("run folder".to_string(), out.to_string()),
            ("seed".to_string(), seed.to_string()),
        ];
        if let Some(p) = &published {
            facts.push(("published run".to_string(), p.run_url.clone()));
        }
        for (k, c) in [
            ("source checks", &source_checks),
            ("curated checks", &curated_checks),
        ] {
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
        let check_lines: Vec<strata_report::CheckLine> = [&source_checks, &curated_checks]
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
        evaluation = rec
            .stage("evaluate", async {
                let run = crate::eval::evaluate(
                    &eval_args,
                    EvalContext {
                        curation,
                        facts,
                        title: Some(format!("strata run: {}", spec.name)),
                        checks: check_lines,
                    },
                )
                .await?;
                let a = dir.put("eval.json", run.json_text.clone()).await?;
                let b = dir.put("report.html", run.html.clone()).await?;
                let c = dir.put("summary.md", run.markdown.clone()).await?;
                let failed = run.gates.iter().filter(|g| !g.passed).count();
                let status = if run.passed {
                    Status::Passed
                } else {
                    Status::Failed
                };
                let note = if run.gates.is_empty() {
                    "no gates".to_string()
                } else {
                    format!("{} gates, {failed} failed", run.gates.len())
                };
                Ok((run, status, vec![a, b, c], Some(note)))
            })
            .await;
    } else {
        rec.blocked("evaluate");
    }

    let status = rec.worst;
    let run_json = RunJson {
        schema_version: RUN_SCHEMA_VERSION,
        strata_version: env!("CARGO_PKG_VERSION"),
        pipeline: spec.name.clone(),
        spec: spec_path.display().to_string(),
        out: out.to_string(),
        seed,
        engine: engine_options.engine.clone().unwrap_or_default(),
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        seconds: started.elapsed().as_secs_f64(),
        status,
        stopped_at: rec.stopped_at,
        stages: rec.stages,
    };
    let text = strata_spec::json::to_string_pretty(&run_json)? + "\n";
    dir.put("run.json", text.clone()).await?;
    match args.format {
        SummaryFormat::Json => print_stdout(&text)?,
        SummaryFormat::Table => {
            let mut t = String::new();
            if let Some(ev) = &evaluation {
                t.push('\n');
                t.push_str(&verdict(ev));
            }
            t.push_str(&format!(
                "\n{}: run folder {out}{}\n",
                match status {
                    Status::Passed | Status::Skipped => "PASSED",
                    Status::Failed => "FAILED",
                    Status::Error => "ERROR",
                },
                if evaluation.is_some() {
                    format!(" (report: {out}report.html)")
                } else {
                    String::new()
                }
            ));
            if let Some(at) = run_json.stopped_at {
                t.push_str(&format!(
                    "stopped at stage {at}; run.json records every stage\n"
                ));
            }
            print_stdout(&t)?;
        }
    }
    Ok(match status {
        Status::Passed | Status::Skipped => Outcome::Success,
        Status::Failed => Outcome::Failed,
        Status::Error => Outcome::Error,
    })
}

/// The headline disparities of each model, and the gates.
fn verdict(ev: &EvalRun) -> String {
    let headline = [
        "demographic_parity_difference",
        "equalized_odds_difference",
        "worst_group_accuracy",
    ];
    let mut t = String::new();
    if let Some(first) = ev.evaluations.first() {
        for (k, g) in first.groupings.iter().enumerate() {
            if g.attributes.len() > 1 && k >= first.groupings.len().min(3) {
                continue;
            }
            t.push_str(&format!("{}\n", g.grouping));
            for d in headline {
                let cells: Vec<String> = ev
                    .evaluations
                    .iter()
                    .filter_map(|e| {
                        let v = e.groupings[k].disparities.get(d)?;
                        let m = e.model.as_deref().unwrap_or("model");
                        Some(match (v.value, v.lower, v.upper) {
                            (Some(x), Some(l), Some(u)) => format!("{m} {x:.3} [{l:.3}, {u:.3}]"),
                            (Some(x), _, _) => format!("{m} {x:.3}"),
                            _ => format!("{m} n/a"),
                        })
                    })
                    .collect();
                t.push_str(&format!("  {d:<31} {}\n", cells.join("   ")));
            }
            if let [b, c] = ev.evaluations.as_slice()
                && c.pairs_with(b)
            {
                let d = "demographic_parity_difference";
                let (x, y) = (
                    &c.groupings[k].disparities[d],
                    &b.groupings[k].disparities[d],
                );
                if let (Some(xv), Some(yv), Some(xs), Some(ys)) =
                    (x.value, y.value, &x.samples, &y.samples)
                {
                    let mut diffs: Vec<f64> = xs
                        .iter()
                        .zip(ys.iter())
                        .filter_map(|(a, b)| Some(a.as_ref()? - b.as_ref()?))
                        .collect();
                    if let Some((lo, hi)) =
                        strata_metrics::percentile_interval(&mut diffs, c.confidence)
                    {
                        t.push_str(&format!(
                            "  {:<31} {:+.3} [{lo:+.3}, {hi:+.3}] (paired bootstrap: the same test rows)\n",
                            format!("{d}: {} − {}", c.model.as_deref().unwrap_or(""), b.model.as_deref().unwrap_or("")),
                            xv - yv
                        ));
                    }
                }
            }
        }
        let acc: Vec<String> = ev
            .evaluations
            .iter()
            .filter_map(|e| {
                let v = e.overall.metrics.get("accuracy")?;
                Some(format!(
                    "{} {}",
                    e.model.as_deref().unwrap_or("model"),
                    v.value.map_or("n/a".into(), |x| format!("{x:.4}"))
                ))
            })
            .collect();
        t.push_str(&format!("overall accuracy: {}\n", acc.join(", ")));
    }
    if !ev.gates.is_empty() {
        t.push_str("gates\n");
        for g in &ev.gates {
            t.push_str(&format!("  {}\n", g.line()));
        }
    }
    t
}
