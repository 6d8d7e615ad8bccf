//! `strata synth`: the generator (strata-synth) behind a command, with a progress bar.

use std::sync::Arc;

use anyhow::Context;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use strata_engine::{Engine, EngineOptions};
use strata_synth::{Preset, SynthOptions};

use crate::Outcome;
use crate::cli::{PresetArg, SummaryFormat, SynthArgs};
use crate::progress::Style;

pub async fn synth(args: SynthArgs, progress: Style) -> anyhow::Result<Outcome> {
    let out = crate::train::folder(strata_run::parse_location(&args.out)?);
    let engine = Engine::new(&EngineOptions::default())?;
    let store = engine.store_for(&out, &strata_spec::StorageOptions::default())?;
    let folder = Path::from_url_path(out.path()).with_context(|| format!("output `{out}`"))?;
    let options = SynthOptions {
        rows: args.rows,
        files: args.files,
        seed: args.seed,
        preset: match args.preset {
            PresetArg::Census => Preset::Census,
        },
        row_group_rows: usize::try_from(args.row_group_rows).unwrap_or(usize::MAX),
        threads: args.threads,
    };
    // refuse the layout before touching the folder
    strata_synth::layout(&options)?;

    // a folder with Parquet files in it would be read as one dataset with them
    let existing: Vec<_> = store
        .list(Some(&folder))
        .try_filter(|m| std::future::ready(m.location.as_ref().ends_with(".parquet")))
        .try_collect()
        .await
        .with_context(|| format!("listing `{out}`"))?;
    if !existing.is_empty() {
        if !args.overwrite {
            anyhow::bail!(
                "output `{out}` already holds {} Parquet file(s) (e.g. `{}`): choose an empty folder, or pass --overwrite to remove them",
                existing.len(),
                existing[0].location
            );
        }
        for m in &existing {
            store
                .delete(&m.location)
                .await
                .with_context(|| format!("removing `{}`", m.location))?;
        }
    }

    let bar = (progress == Style::Bars).then(|| {
        let bar = ProgressBar::new(args.rows);
        bar.set_style(
            ProgressStyle::with_template(
                "synth [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let ticker = bar.clone();
    let started = std::time::Instant::now();
    let written = strata_synth::synthesize(
        store,
        &folder,
        &options,
        Arc::new(move |n| {
            if let Some(bar) = &ticker {
                bar.inc(n);
            }
        }),
    )
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        rows = written.rows,
        files = written.files.len(),
        seconds,
        out = %out,
        "synthetic data written"
    );
    match args.format {
        SummaryFormat::Json => {
            let mut doc = serde_json::to_value(&written)?;
            doc["out"] = out.to_string().into();
            doc["seconds"] = seconds.into();
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        SummaryFormat::Table => println!(
            "wrote {} rows in {} file(s) to {out} (census preset, seed {}) in {seconds:.1} s",
            written.rows,
            written.files.len(),
            written.seed
        ),
    }
    Ok(Outcome::Success)
}
