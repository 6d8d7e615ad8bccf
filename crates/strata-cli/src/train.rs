//! `strata train` and `strata predict`.

use strata_engine::{Engine, EngineOptions};
use strata_run::Destination;
use strata_train::{PredictInput, TrainOptions, Trained};

use crate::Outcome;
use crate::cli::{PredictArgs, SummaryFormat, TrainArgs};
use crate::commands::print_stdout;
use crate::progress::{EpochProgress, Style};

pub async fn train(args: TrainArgs, style: Style) -> anyhow::Result<Outcome> {
    let mut spec = strata_spec::Pipeline::load(&args.pipeline)?;
    if args.no_sample_weights {
        spec.train.sample_weights = false;
    }
    let shards = strata_run::parse_location(&args.shards)?;
    let out = folder(strata_run::parse_location(&args.out)?);
    let options = TrainOptions {
        seed: args.seed,
        device: strata_train::device(args.gpu)?,
        memory_limit: args.memory_limit,
    };
    let trained = train_to(&spec, &shards, &out, &options, style).await?;
    let report = trained.report.as_ref().expect("fresh from training");
    let text = match args.format {
        SummaryFormat::Json => strata_spec::json::to_string_pretty(report)? + "\n",
        SummaryFormat::Table => {
            let mut t = format!(
                "Trained {} on run {} ({} train rows, {} validation rows, {} inputs, classes {}):\n",
                describe(&report.hyperparameters.hidden),
                report.run.run_id,
                report.train_rows,
                report.validation_rows,
                report.inputs.len(),
                report.classes.join(" / "),
            );
            t.push_str("  epoch  train loss  train acc  val loss  val acc    rows/s\n");
            for e in &report.epochs {
                let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
                t.push_str(&format!(
                    "  {:>5}  {:>10.4}  {:>9.4}  {:>8}  {:>7}  {:>8.0}\n",
                    e.epoch,
                    e.train_loss,
                    e.train_accuracy,
                    opt(e.validation_loss),
                    opt(e.validation_accuracy),
                    e.rows_per_second
                ));
            }
            t.push_str(&format!(
                "Kept epoch {}{}; model written to {out} in {:.1} s (seed {}, sha256 {})\n",
                report.best_epoch,
                if report.stopped_early {
                    " (stopped early)"
                } else {
                    ""
                },
                report.wall_seconds,
                report.seed,
                &report.model_sha256[..16],
            ));
            t
        }
    };
    print_stdout(&text)?;
    Ok(Outcome::Success)
}

/// A folder URL ends in `/`.
pub fn folder(mut url: url::Url) -> url::Url {
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    url
}

/// Trains the spec's model on the run at `shards` and saves it under `out`.
pub async fn train_to(
    spec: &strata_spec::Pipeline,
    shards: &url::Url,
    out: &url::Url,
    options: &TrainOptions,
    style: Style,
) -> anyhow::Result<Trained> {
    let engine = Engine::new(&EngineOptions::default())?;
    let store = engine.store_for(shards, &spec.storage)?;
    let out_store = engine.store_for(out, &spec.storage)?;
    let mut progress = EpochProgress::new(style);
    let trained = strata_train::train(spec, store, shards, options, &mut progress).await?;
    let dest = Destination::new(out_store, out.clone());
    trained.save(&dest).await?;
    let report = trained.report.as_ref().expect("fresh from training");
    tracing::info!(out = %out, model_sha256 = %report.model_sha256, "model written");
    Ok(trained)
}

/// Scores a split of the run at `run` with a trained model, writing Parquet to `out`.
pub async fn predict_split(
    trained: &Trained,
    run: &url::Url,
    split: &str,
    out: &url::Url,
    storage: &strata_spec::StorageOptions,
) -> anyhow::Result<strata_train::PredictSummary> {
    let engine = Engine::new(&EngineOptions::default())?;
    let store = engine.store_for(run, storage)?;
    let out_store = engine.store_for(out, storage)?;
    let input = PredictInput::Run {
        url: run.clone(),
        split: split.to_string(),
    };
    Ok(strata_train::predict(trained, store, &input, out_store, out).await?)
}

fn describe(hidden: &[u64]) -> String {
    if hidden.is_empty() {
        "a softmax regression".into()
    } else {
        let h: Vec<String> = hidden.iter().map(u64::to_string).collect();
        format!("an MLP ({})", h.join(" → "))
    }
}

pub async fn predict(args: PredictArgs) -> anyhow::Result<Outcome> {
    let engine = Engine::new(&EngineOptions::default())?;
    let storage = strata_spec::StorageOptions::default();
    let mut model_url = strata_run::parse_location(&args.model)?;
    if !model_url.path().ends_with('/') {
        model_url.set_path(&format!("{}/", model_url.path()));
    }
    let model_store = engine.store_for(&model_url, &storage)?;
    let device = strata_train::device(args.gpu)?;
    let trained = Trained::load(&Destination::new(model_store, model_url), &device).await?;
    let (input, input_url) = match (&args.shards, &args.input) {
        (Some(s), _) => {
            let url = strata_run::parse_location(s)?;
            (
                PredictInput::Run {
                    url: url.clone(),
                    split: args.split.clone(),
                },
                url,
            )
        }
        (None, Some(i)) => {
            let url = strata_run::parse_location(i)?;
            (PredictInput::Files { url: url.clone() }, url)
        }
        (None, None) => anyhow::bail!("name the rows to score with --shards or --input"),
    };
    let store = engine.store_for(&input_url, &storage)?;
    let out = strata_run::parse_location(&args.out)?;
    let out_store = engine.store_for(&out, &storage)?;
    let summary = strata_train::predict(&trained, store, &input, out_store, &out).await?;
    tracing::info!(out = %summary.out_url, rows = summary.rows, "predictions written");
    let text = match args.format {
        SummaryFormat::Json => {
            strata_spec::json::to_string_pretty(&serde_json::json!({
                "out": summary.out_url,
                "rows": summary.rows,
                "files": summary.files,
                "accuracy": summary.accuracy,
            }))? + "\n"
        }
        SummaryFormat::Table => format!(
            "Scored {} rows from {} file(s): accuracy {:.4}; predictions written to {}\n",
            summary.rows, summary.files, summary.accuracy, summary.out_url
        ),
    };
    print_stdout(&text)?;
    Ok(Outcome::Success)
}
