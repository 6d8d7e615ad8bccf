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
    /// Run the whole pipeline: validate, profile, checks, curate and publish, train a
    /// baseline and a curated model, score both on the untouched test split, evaluate,
    /// gates, report. Exit 0 passed, 1 a check or gate failed, 3 an error.
    Run(RunArgs),
    /// Check a pipeline spec and its source's schema without running a job.
    Validate(PipelineArgs),
    /// Profile group representation: every protected attribute alone and their intersections.
    Profile(ProfileArgs),
    /// Split, reweigh or resample the training split to the spec's target mix, and
    /// publish stratified shards with a manifest.
    Curate(CurateArgs),
    /// Run the SQL checks (`.sql` files returning failing rows) over the source, its
    /// profile and the published curated run. Exit 1 when an error-severity check fails,
    /// 3 when a check cannot run.
    Check(CheckArgs),
    /// Published runs: verify them, or list the shards a training rank reads.
    #[command(subcommand)]
    Shards(ShardsCommand),
    /// Train the spec's model (`[train]`) on a published run's train split, validating
    /// on its validation split; writes model.safetensors, encoder.json and train.json.
    Train(TrainArgs),
    /// Score a split of a published run (or plain Parquet) with a trained model and
    /// write the predictions as Parquet.
    Predict(PredictArgs),
    /// Evaluate any model's predictions per group: metrics, disparities with bootstrap
    /// intervals, and the spec's gates (exit 1 when a gate fails).
    Eval(EvalArgs),
    /// Generate a skewed, labelled dataset with known group structure (docs/synth.md)
    /// as zstd Parquet files, deterministic by seed, in constant memory.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Rows to generate: a number, or with a suffix `k`, `M` or `G` (e.g. `20M`).
    #[arg(long, value_parser = parse_count)]
    pub rows: u64,
    /// The output folder (a path, `file://`, `s3://`, ...); it must hold no `.parquet`
    /// file yet (see `--overwrite`).
    #[arg(long, value_name = "URL")]
    pub out: String,
    /// Files to cut the rows into.
    #[arg(long, default_value_t = 1)]
    pub files: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What kind of data (docs/synth.md).
    #[arg(long, value_enum, default_value_t = PresetArg::Census)]
    pub preset: PresetArg,
    /// Rows per Parquet row group.
    #[arg(long, value_parser = parse_count, default_value = "1048576")]
    pub row_group_rows: u64,
    /// Remove the `.parquet` files the folder already holds first.
    #[arg(long)]
    pub overwrite: bool,
    /// Files written at once (default: the cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// Census-like people: sex, race, age band (with missing values), features with
    /// signal, a weight and a group-dependent 0/1 label.
    Census,
}

/// `20M`, `1.5k`, `3G` or a plain number (underscores allowed).
fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (num, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&t[..t.len() - 1], 1e9),
        _ => (t.as_str(), 1.0),
    };
    if scale == 1.0 {
        return num
            .parse::<u64>()
            .map_err(|_| format!("`{s}` is not a count (e.g. 1000000 or 20M)"));
    }
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a count (e.g. 1000000 or 20M)"))?;
    let n = v * scale;
    if !(n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= u64::MAX as f64) {
        return Err(format!("`{s}` is not a whole count"));
    }
    Ok(n as u64)
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Predictions as Parquet: a file or a folder of `.parquet` files, on any store.
    #[arg(long, value_name = "URL")]
    pub predictions: String,
    /// The pipeline spec: protected attributes, the positive label, `[eval]` and its gates.
    pub pipeline: Option<PathBuf>,
    /// A protected attribute column (repeat for several); overrides the spec's.
    #[arg(long = "group", value_name = "COL")]
    pub groups: Vec<String>,
    /// The true label column.
    #[arg(long, value_name = "COL", default_value = "y_true")]
    pub label: String,
    /// The positive label value (default: the spec's `label.positive`).
    #[arg(long, value_name = "VALUE")]
    pub positive: Option<String>,
    /// The predicted class column (`none`: derive it as score >= --threshold).
    #[arg(long, value_name = "COL", default_value = "y_pred")]
    pub pred: String,
    /// The positive class's probability (`none`: no scores; default `y_score` where the
    /// predictions have it).
    #[arg(long, value_name = "COL")]
    pub score: Option<String>,
    /// The row weight column (`none`: every row counts 1; default `sample_weight` where
    /// the predictions have it).
    #[arg(long, value_name = "COL")]
    pub weight: Option<String>,
    /// The column naming the model of each row: each model is evaluated on its own,
    /// side by side (used where the files have it; `none`: one model).
    #[arg(long, value_name = "COL", default_value = "model")]
    pub model_column: String,
    /// Overrides `eval.threshold` (for --pred none).
    #[arg(long, value_name = "T")]
    pub threshold: Option<f64>,
    /// Overrides `eval.replicates` (0: no intervals).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=strata_spec::MAX_REPLICATES))]
    pub replicates: Option<u64>,
    /// Overrides `eval.seed`.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Groups with fewer rows are reported as too small to judge (overrides
    /// `eval.min_group_rows`; default `groups.min_group_rows`, else 30).
    #[arg(long, value_name = "N")]
    pub min_group_rows: Option<u64>,
    /// A curation.json whose representation (before and after curation, against the
    /// target) the HTML report shows.
    #[arg(long, value_name = "FILE")]
    pub curation: Option<PathBuf>,
    /// Write eval.json, eval.md and report.html into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline spec.
    pub pipeline: PathBuf,
    /// The run folder (a path or URL on any supported store; default
    /// `strata-runs/<pipeline name>` under the working directory).
    #[arg(long, value_name = "URL")]
    pub out: Option<String>,
    /// Overrides `curate.seed` (and with it the default train and eval seeds).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Where the data stages run: `local` (this process) or `df://host:port`, an Apache
    /// Ballista scheduler (overrides the spec's `engine`; needs a strata built with
    /// `--features ballista`). Training and evaluation run here either way.
    #[arg(long, value_name = "URL")]
    pub engine: Option<String>,
    /// Memory for the data stages' query execution (e.g. `1GiB`); they spill to disk
    /// past it. Training holds its encoded rows in memory unless `train.shuffle =
    /// "shards"`, and refuses splits that would not fit under this limit.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory_limit: Option<usize>,
    /// Where spill files go (created if missing; default: `$TMPDIR`).
    #[arg(long, value_name = "DIR", env = "STRATA_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// The final summary on stdout: `table` (stage lines and a verdict) or `json` (run.json).
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The pipeline spec whose `[train]` section (and label and groups) to use.
    pub pipeline: PathBuf,
    /// The published run: an output root (follows `_latest`), a run folder or a
    /// manifest.json URL. Verified before training.
    #[arg(long, value_name = "URL")]
    pub shards: String,
    /// The model folder to write (a path or URL on any supported store).
    #[arg(long, value_name = "DIR")]
    pub out: String,
    /// Overrides `train.seed` (default `curate.seed`).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Every row counts 1, whatever its `sample_weight` (the unweighted baseline;
    /// overrides `train.sample_weights`).
    #[arg(long)]
    pub no_sample_weights: bool,
    /// Train on the first CUDA GPU (needs a strata built with `--features cuda`).
    #[arg(long)]
    pub gpu: bool,
    /// With `train.shuffle = "rows"` (the default), refuse a run whose training and
    /// validation splits would encode to more than this (e.g. `1GiB`), naming the key
    /// that trains a shard at a time instead.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory_limit: Option<usize>,
    /// Summary format on stdout (`json` prints train.json).
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("rows").required(true).args(["shards", "input"])))]
pub struct PredictArgs {
    /// The model folder `strata train` wrote.
    #[arg(long, value_name = "DIR")]
    pub model: String,
    /// A published run (output root, run folder or manifest.json URL), verified first.
    #[arg(long, value_name = "URL")]
    pub shards: Option<String>,
    /// The split of the run to score.
    #[arg(long, default_value = "test", requires = "shards")]
    pub split: String,
    /// Plain Parquet instead of a run: a file, or a folder of `.parquet` files.
    #[arg(long, value_name = "URL")]
    pub input: Option<String>,
    /// The Parquet file to write (a folder URL ending in `/` gets predictions.parquet).
    #[arg(long, value_name = "URL")]
    pub out: String,
    /// Score on the first CUDA GPU (needs a strata built with `--features cuda`).
    #[arg(long)]
    pub gpu: bool,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Which checks run: those of the source stage, the curated stage, or both.
    #[arg(long, value_enum, default_value_t = StageArg::All)]
    pub stage: StageArg,
    /// The output root of `strata curate` (follows `_latest`), a run folder or a
    /// manifest.json: the `curated` and `curation` tables. Without it curated checks are skipped.
    #[arg(long, value_name = "URL")]
    pub out: Option<String>,
    /// Write JUnit XML here (one test case per check).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Keep failing rows as Parquet under this URL (default: `checks/` in the run folder).
    #[arg(long, value_name = "URL")]
    pub failing_rows: Option<String>,
    /// Warnings fail the job too.
    #[arg(long)]
    pub strict: bool,
    /// Seconds one check may run before it is cancelled and reported as an error
    /// (overrides `[checks] timeout_secs`; 1 to 86400, default 600).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=strata_spec::MAX_CHECK_TIMEOUT_SECS))]
    pub check_timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    Source,
    Curated,
    All,
}

#[derive(Debug, Subcommand)]
pub enum ShardsCommand {
    /// Re-read a published run and check every shard against the manifest: existence,
    /// size, sha256, rows and per-stratum counts. Exits 1 on any mismatch.
    Verify(ShardsArgs),
    /// List the shards rank R of a world of N reads (balanced by rows), one URL per line.
    Assign(AssignArgs),
}

#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// The output root (follows `_latest`), a run folder, or a manifest.json URL.
    pub url: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    /// The output root (follows `_latest`), a run folder, or a manifest.json URL.
    pub url: String,
    /// Ranks in the training job (at most 16,777,216).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=strata_run::MAX_WORLD_SIZE))]
    pub world_size: u64,
    /// This rank, from 0 to N - 1.
    #[arg(long, value_name = "R")]
    pub rank: u64,
    /// The split to read.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Output format: `table` prints one URL per line.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

#[derive(Debug, Args)]
pub struct CurateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Output root URL (a path, file://, s3://, ...): the run goes to OUT/runs/<run id>/
    /// and OUT/_latest points at it once its manifest is written.
    #[arg(long, value_name = "URL")]
    pub out: String,
    /// The run's folder name (default: derived from the spec, seed and input files, so a
    /// re-run of the same job is recognised and not redone).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
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
    /// DataFusion target partitions, 1 to 1024 (default: the number of cores).
    #[arg(long, value_name = "N", value_parser = parse_partitions)]
    pub target_partitions: Option<usize>,
    /// Memory for query execution (e.g. `512MiB`, `2GiB`); sorts spill to disk past it.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory_limit: Option<usize>,
    /// Where spill files go (created if missing; default: `$TMPDIR`).
    #[arg(long, value_name = "DIR", env = "STRATA_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Where the plans run: `local` (this process) or `df://host:port`, an Apache
    /// Ballista scheduler (overrides the spec's `engine`; needs a strata built with
    /// `--features ballista`).
    #[arg(long, value_name = "URL")]
    pub engine: Option<String>,
}

fn parse_partitions(s: &str) -> Result<usize, String> {
    let max = strata_engine::MAX_TARGET_PARTITIONS;
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("must be a whole number from 1 to {max}"))
}

fn parse_memory(s: &str) -> Result<usize, String> {
    let bytes = strata_spec::parse_size(s)?;
    if bytes == 0 {
        return Err("must be more than 0 bytes".into());
    }
    usize::try_from(bytes).map_err(|_| format!("`{s}` is more than this machine can address"))
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
