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
    /// Split, then reweigh or resample the training split to the spec's target mix.
    Curate(CurateArgs),
}

#[derive(Debug, Args)]
pub struct CurateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Output folder URL (a path, file://, s3://, ...): curated.parquet and curation.json.
    #[arg(long, value_name = "URL")]
    pub out: String,
    /// Overrides `curate.seed`.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    Table,
    Json,
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
    /// Memory for query execution (e.g. `512MiB`, `2GiB`); sorts spill to disk past it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
}

/// Parses `1024`, `512KiB`, `512MiB`, `2GiB` (also KB/MB/GB as powers of 1000).
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size such as 512MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    let bytes = n * mult;
    if bytes < 1.0 {
        return Err("the memory limit must be positive".into());
    }
    Ok(bytes as usize)
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
