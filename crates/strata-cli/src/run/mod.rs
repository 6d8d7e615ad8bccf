//! `strata run`: every stage in order, one run folder, a verdict. The stages are the
//! library's and the other commands' own; this module orders them, times them, writes
//! their outputs under the run folder and records it all in `run.json`.

mod record;
mod stages;
mod verdict;

use std::time::Instant;

use serde::Serialize;
use strata_engine::{Engine, EngineOptions};
use url::Url;

use crate::Outcome;
use crate::cli::{EvalArgs, OutputFormat, RunArgs, SummaryFormat};
use crate::commands::print_stdout;
use crate::eval::{EvalContext, EvalRun};
use crate::progress::Style;
use crate::train::{folder, train_to};
use record::{Folder, Recorder, Stage, Status};
use verdict::verdict;

const RUN_SCHEMA_VERSION: u32 = 1;

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
    let mut rec = Recorder::new(args.format == SummaryFormat::Table, style == Style::Bars);
    let spec_path = args.pipeline.clone();

    // validate: the source's schema against the spec
    let pipeline = rec
        .stage("validate", async {
            // every section's columns against the source (the model's inputs too), before
            // anything runs
            let p = strata::Pipeline::from_spec(spec.clone(), &engine_options).await?;
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
        let pipeline = pipeline.as_ref().expect("validated");
        stages::checks(pipeline, &dir, stage, out_run, profile, prefix)
    };
    let has_checks = stages::has_checks(&spec);
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
                let note = stages::predict(&trained, &run_url, &dir, &spec.storage).await?;
                let url = dir.dest.url_of("predictions.parquet");
                Ok(((), Status::Passed, vec![url], Some(note)))
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
        let (facts, check_lines) = stages::report_facts(
            &out,
            seed,
            published.as_ref(),
            [source_checks.as_ref(), curated_checks.as_ref()],
        );
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
