use std::io::Write;
use std::path::Path;

use anyhow::Context;
use strata_engine::{Engine, EngineOptions, LabelKind, SourceTable, SOURCE_TABLE};
use strata_spec::Pipeline;

use crate::cli::{Cli, Command, CurateArgs, PipelineArgs, ProfileArgs, SummaryFormat};
use crate::Outcome;

pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate(args) => validate(args).await,
        Command::Profile(args) => profile(args).await,
        Command::Curate(args) => curate(args).await,
    }
}

/// A pipeline with its source opened and its schema checked.
struct Opened {
    pipeline: Pipeline,
    engine: Engine,
    source: SourceTable,
    label_kind: LabelKind,
}

async fn open(args: &PipelineArgs) -> anyhow::Result<Opened> {
    let mut pipeline = Pipeline::load(&args.pipeline)?;
    if let Some(url) = &args.source {
        pipeline = pipeline.with_source_url(url);
    }
    let engine = Engine::new(&EngineOptions {
        target_partitions: args.target_partitions,
        memory_limit: args.memory_limit,
    })?;
    let source = engine.open_source(&pipeline.source.url, &pipeline.storage, SOURCE_TABLE).await?;
    let label_kind = strata_engine::check_schema(&pipeline, &source.schema, &source.url)?;
    Ok(Opened {
        pipeline,
        engine,
        source,
        label_kind,
    })
}

async fn validate(args: PipelineArgs) -> anyhow::Result<Outcome> {
    let o = open(&args).await?;
    println!(
        "ok: {} — source {} ({} file{}, {} columns); attributes {}; label {} ({:?}, positive {}){}",
        args.pipeline.display(),
        o.source.url,
        o.source.files.len(),
        if o.source.files.len() == 1 { "" } else { "s" },
        o.source.schema.fields().len(),
        o.pipeline.groups.attributes.join(", "),
        o.pipeline.label.column,
        o.label_kind,
        o.pipeline.label.positive,
        o.pipeline.source.weight_column.as_ref().map(|w| format!("; weight {w}")).unwrap_or_default(),
    );
    Ok(Outcome::Success)
}

async fn profile(args: ProfileArgs) -> anyhow::Result<Outcome> {
    let o = open(&args.pipeline).await?;
    let profile = strata_profile::profile(&o.engine, &o.pipeline, &o.source, o.label_kind).await?;
    let text = strata_profile::render(&profile, args.format.into());
    match &args.out {
        Some(path) => {
            write_atomically(path, text.as_bytes())?;
            tracing::info!(out = %path.display(), groups = profile.groups.len(), "profile written");
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`strata profile ... | head`) is not an error worth a panic.
            if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("writing to stdout");
                }
            }
        }
    }
    Ok(Outcome::Success)
}

async fn curate(args: CurateArgs) -> anyhow::Result<Outcome> {
    let o = open(&args.pipeline).await?;
    let options = strata_curate::CurateOptions {
        seed: args.seed,
        out: args.out.clone(),
    };
    let curation = strata_curate::curate(&o.engine, &o.pipeline, &o.source, &options).await?;
    let text = match args.format {
        SummaryFormat::Table => curation.render_table(),
        SummaryFormat::Json => serde_json::to_string_pretty(&curation)? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
    }
    Ok(Outcome::Success)
}

/// Writes through a temporary file in the same folder and renames it into place, so a
/// reader never sees half a file and a failed run leaves no file at all.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write", path.display())
    })?;
    Ok(())
}
