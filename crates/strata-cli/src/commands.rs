use std::io::Write;
use std::path::Path;

use anyhow::Context;
use strata_engine::{Engine, EngineOptions};

use crate::Outcome;
use crate::cli::{
    AssignArgs, CheckArgs, Cli, Command, CurateArgs, PipelineArgs, ProfileArgs, ShardsArgs,
    ShardsCommand, StageArg, SummaryFormat,
};

pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let progress = crate::progress::Style::of(&cli.global);
    match cli.command {
        Command::Run(args) => crate::run::run(args, progress).await,
        Command::Train(args) => crate::train::train(args, progress).await,
        Command::Predict(args) => crate::train::predict(args).await,
        Command::Eval(args) => crate::eval::eval(args).await,
        Command::Synth(args) => crate::synth::synth(args, progress).await,
        Command::Validate(args) => validate(args).await,
        Command::Profile(args) => profile(args).await,
        Command::Curate(args) => curate(args).await,
        Command::Check(args) => check(args).await,
        Command::Shards(ShardsCommand::Verify(args)) => shards_verify(args).await,
        Command::Shards(ShardsCommand::Assign(args)) => shards_assign(args).await,
    }
}

async fn open(args: &PipelineArgs) -> anyhow::Result<strata::Pipeline> {
    let mut spec = strata_spec::Pipeline::load(&args.pipeline)?;
    if let Some(url) = &args.source {
        spec = spec.with_source_url(url);
    }
    let options = EngineOptions {
        target_partitions: args.target_partitions,
        memory_limit: args.memory_limit,
        spill_dir: args.spill_dir.clone(),
        engine: Some(args.engine.clone().unwrap_or_else(|| spec.engine.clone())),
    };
    Ok(strata::Pipeline::from_spec(spec, &options).await?)
}

async fn validate(args: PipelineArgs) -> anyhow::Result<Outcome> {
    let o = open(&args).await?;
    println!(
        "ok: {} — source {} ({} file{}, {} columns); attributes {}; label {} ({:?}, positive {}){}",
        args.pipeline.display(),
        o.source().url,
        o.source().files.len(),
        if o.source().files.len() == 1 { "" } else { "s" },
        o.source().schema.fields().len(),
        o.spec().groups.attributes.join(", "),
        o.spec().label.column,
        o.label_kind(),
        o.spec().label.positive,
        o.spec()
            .source
            .weight_column
            .as_ref()
            .map(|w| format!("; weight {w}"))
            .unwrap_or_default(),
    );
    Ok(Outcome::Success)
}

async fn profile(args: ProfileArgs) -> anyhow::Result<Outcome> {
    let o = open(&args.pipeline).await?;
    let profile = o.profile().await?;
    let text = strata_profile::render(&profile, args.format.into());
    match &args.out {
        Some(path) => {
            write_atomically(path, text.as_bytes())?;
            tracing::info!(out = %path.display(), groups = profile.groups.len(), "profile written");
        }
        None => print_stdout(&text)?,
    }
    Ok(Outcome::Success)
}

async fn curate(args: CurateArgs) -> anyhow::Result<Outcome> {
    let o = open(&args.pipeline).await?;
    let options = strata_curate::CurateOptions {
        seed: args.seed,
        out: args.out.clone(),
        run_id: args.run_id.clone(),
    };
    let published = o.curate(&options).await?;
    let text = match args.format {
        SummaryFormat::Table => {
            let m = &published.manifest;
            let shards: Vec<String> = m
                .splits
                .iter()
                .map(|s| format!("{} {} shards / {} rows", s.split, s.shards, s.rows))
                .collect();
            format!(
                "{}{} run {} at {}: {}\n",
                strata_curate::render_table(&published.curation),
                if published.already_published {
                    "Already published:"
                } else {
                    "Published"
                },
                m.run_id,
                published.run_url,
                shards.join(", ")
            )
        }
        SummaryFormat::Json => strata_spec::json::to_string_pretty(&published.curation)? + "\n",
    };
    print_stdout(&text)?;
    Ok(Outcome::Success)
}

async fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let o = open(&args.pipeline).await?;
    let options = strata_check::CheckOptions {
        stages: match args.stage {
            StageArg::Source => strata_check::StageSelection::Source,
            StageArg::Curated => strata_check::StageSelection::Curated,
            StageArg::All => strata_check::StageSelection::All,
        },
        out: args.out.clone(),
        failing_rows: args.failing_rows.clone(),
        strict: args.strict,
        timeout_secs: args.check_timeout,
        profile: None,
    };
    let run = o.check(options).await?;
    if let Some(path) = &args.junit {
        write_atomically(path, run.to_junit().as_bytes())?;
    }
    if let Some(path) = &args.json {
        write_atomically(
            path,
            (strata_spec::json::to_string_pretty(&run.to_json())? + "\n").as_bytes(),
        )?;
    }
    print_stdout(&run.render_text())?;
    for r in run
        .results
        .iter()
        .filter(|r| r.status == strata_check::Status::Error)
    {
        tracing::error!(check = %r.check.name, stage = r.stage.as_str(), error = r.message.as_deref().unwrap_or(""), "check could not run");
    }
    Ok(if run.any_error() {
        Outcome::Error
    } else if run.any_failure() {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}

async fn shards_verify(args: ShardsArgs) -> anyhow::Result<Outcome> {
    let url = strata_run::parse_location(&args.url)?;
    let engine = Engine::new(&EngineOptions::default())?;
    let store = engine.store_for(&url, &strata_spec::StorageOptions::default())?;
    let report = strata_run::verify(store, &url).await?;
    let m = &report.manifest;
    let rows: u64 = m.shards.iter().map(|s| s.rows).sum();
    let text = match args.format {
        SummaryFormat::Json => {
            strata_spec::json::to_string_pretty(&serde_json::json!({
                "run_id": m.run_id,
                "run_url": report.run_url,
                "shards": m.shards.len(),
                "rows": rows,
                "ok": report.problems.is_empty(),
                "problems": report.problems,
            }))? + "\n"
        }
        SummaryFormat::Table if report.problems.is_empty() => {
            format!(
                "ok: run {} at {}: {} shards, {rows} rows, sizes, sha256s and stratum counts match the manifest\n",
                m.run_id,
                report.run_url,
                m.shards.len()
            )
        }
        SummaryFormat::Table => {
            let mut t = format!(
                "FAILED: run {} at {}: {} problem(s)\n",
                m.run_id,
                report.run_url,
                report.problems.len()
            );
            for p in &report.problems {
                t.push_str(&format!("  {p}\n"));
            }
            t
        }
    };
    print_stdout(&text)?;
    for p in &report.problems {
        tracing::error!(run = %m.run_id, problem = %p, "shard verification failed");
    }
    Ok(if report.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

async fn shards_assign(args: AssignArgs) -> anyhow::Result<Outcome> {
    let url = strata_run::parse_location(&args.url)?;
    let engine = Engine::new(&EngineOptions::default())?;
    let store = engine.store_for(&url, &strata_spec::StorageOptions::default())?;
    let (run, manifest) = strata_run::resolve(store, &url).await?;
    let mine = strata_run::assign(&manifest, &args.split, args.world_size, args.rank)?;
    if mine.is_empty() {
        tracing::warn!(rank = args.rank, world_size = args.world_size, split = %args.split, "this rank gets no shards: the split has fewer shards than ranks");
    }
    let text = match args.format {
        SummaryFormat::Table => mine
            .iter()
            .map(|s| format!("{}\n", run.url_of(&s.path)))
            .collect::<String>(),
        SummaryFormat::Json => {
            strata_spec::json::to_string_pretty(&serde_json::json!({
                "run_id": manifest.run_id,
                "split": args.split,
                "world_size": args.world_size,
                "rank": args.rank,
                "rows": mine.iter().map(|s| s.rows).sum::<u64>(),
                "shards": mine.iter().map(|s| serde_json::json!({"url": run.url_of(&s.path), "rows": s.rows, "sha256": s.sha256})).collect::<Vec<_>>(),
            }))? + "\n"
        }
    };
    print_stdout(&text)?;
    Ok(Outcome::Success)
}

/// Prints to stdout; a closed pipe (`strata ... | head`) is not an error worth a panic.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing to stdout");
    }
    Ok(())
}

/// Writes through a temporary file in the same folder and renames it into place, so a
/// reader never sees half a file and a failed run leaves no file at all.
/// Writes an output file. A regular file (or a new path) is replaced atomically: a
/// temporary file beside it, then a rename, so a reader never sees half a report. Any
/// other kind of path (a symlink, a FIFO, `/dev/stdout`, a device) is written through
/// as it is: renaming over it would replace the link or the device node itself.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let cannot = || format!("{}: cannot write", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => anyhow::bail!("{}: is a folder, not a file", path.display()),
        Ok(meta) if !meta.file_type().is_file() => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .with_context(cannot)?;
            f.write_all(bytes).with_context(cannot)?;
            return f.flush().with_context(cannot);
        }
        _ => {}
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        cannot()
    })?;
    Ok(())
}
