use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// strata curates representative training data: profile group representation in
/// Parquet on object storage, curate it to a target mix, check it, publish it.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on stderr: `text` for people, `json` (one object per line) for schedulers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "STRATA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More log output (-v: debug, -vv: trace). `STRATA_LOG` takes a full filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline spec and its source's schema without running a job.
    Validate(PipelineArgs),
    /// Profile group representation: every protected attribute alone and their intersections.
    Profile(ProfileArgs),
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The pipeline spec, e.g. pipelines/adult.toml.
    pub pipeline: PathBuf,
    /// Read this source URL instead of the spec's `source.url`.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// DataFusion target partitions (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub target_partitions: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the output to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Markdown,
}

impl From<OutputFormat> for strata_profile::Format {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Table => Self::Table,
            OutputFormat::Json => Self::Json,
            OutputFormat::Markdown => Self::Markdown,
        }
    }
}
