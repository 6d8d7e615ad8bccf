//! Curation: turning a skewed dataset into a representative one.
//!
//! 1. A deterministic train / validation / test split, stratified by group × label:
//!    within each (group, label) cell rows are ordered by a hash of (seed, row key) and
//!    the first `round(n · train)` go to train, the next to validation, the rest to test.
//! 2. On the training split only: Kamiran–Calders reweighing, or stratified resampling
//!    to a target group mix (exact counts by hash order, or a Bernoulli draw on the hash).
//!
//! Every decision depends only on (seed, row key), so the curated rows are identical for
//! any partitioning, file layout or engine. Nothing is sorted: every cut by hash order
//! is found by counting around where it must lie ([`cut`]), with aggregate passes; only
//! per-cell counts and window keys come back to the driver. The last pass streams the
//! curated rows, unsorted, into `strata-publish`'s shard writer.

mod columns;
mod curate;
mod cut;
mod plan;
mod planning;
mod publish;
mod summary;

pub use curate::{CurateOptions, Published, SUMMARY_FILE, curate};
pub use plan::{kamiran_calders, largest_remainder};
pub use strata_run::{Curation, SUMMARY_SCHEMA_VERSION, StratumSummary};
pub use summary::render_table;

/// Why curation could not run. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    #[error(transparent)]
    Engine(#[from] strata_engine::EngineError),
    #[error(transparent)]
    Spec(#[from] strata_spec::SpecError),
    /// The output folder or a published run's summary, wrong as the message says; the
    /// cause, where there is one, is the source.
    #[error("output `{url}`: {message}")]
    Output {
        url: String,
        message: String,
        #[source]
        source: Option<strata_engine::BoxError>,
    },
    #[error(transparent)]
    Publish(#[from] strata_publish::PublishError),
    #[error(transparent)]
    Run(#[from] strata_run::RunError),
    /// `--run-id` that cannot name a folder.
    #[error("run id `{0}`: use 1 to 128 letters, digits, `-`, `_` or `.` (not starting with `.`)")]
    RunId(String),
    /// Two strata whose values differ got one 64-bit id (about one pair in 10¹⁹).
    #[error("two strata hash to the same id ({first} and {second}); choose another seed")]
    IdCollision { first: String, second: String },
    /// A cut was found neither in its window nor over the whole key space: the rows
    /// differed between two passes over the same files.
    #[error("{pass}: the rows changed while curation read them")]
    SourceChanged { pass: String },
    /// A tuning variable (`STRATA_SHARD_MEMORY`, ...) that does not parse.
    #[error("environment variable {name}{message}")]
    Tuning { name: String, message: String },
}
