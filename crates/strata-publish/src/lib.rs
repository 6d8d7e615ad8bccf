//! Publishing curated data for training clusters.
//!
//! A published run is a folder of Parquet shards plus a `manifest.json` under a
//! run-specific prefix of the output URL:
//!
//! ```text
//! OUT/_latest                         {"run_id": ..., "manifest": "runs/<id>/manifest.json"}
//! OUT/runs/<id>/train/part-00000.parquet
//! OUT/runs/<id>/validation/part-00000.parquet
//! OUT/runs/<id>/test/part-00000.parquet
//! OUT/runs/<id>/curation.json
//! OUT/runs/<id>/manifest.json         written last, create-if-absent
//! ```
//!
//! The manifest is the commit: readers trust a run only once its manifest exists, and
//! `_latest` moves only after that. Shards are written by [`ShardSink`] from a stream
//! in any order; reading, committing, verifying and assigning runs is `strata-run`.

mod exec;
mod sink;

pub use exec::{
    RemoteWritten, ShardWriterExec, ShardWriterNode, ShardWriterPlanner, SinkSpec,
    StrataQueryPlanner, batch_bytes, read_written,
};
pub use sink::{
    RANGE_ROWS, ShardSink, SinkColumns, SinkCopies, SinkOutput, StratumTotals,
    default_memory_budget,
};

/// Why writing shards failed. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Reading, committing or storing the run.
    #[error(transparent)]
    Run(#[from] strata_run::RunError),
    /// Encoding or reading Parquet, or reading the curated stream. The message is the
    /// cause on one line; the cause itself, where there is one, is the source.
    #[error("{context}: {message}")]
    Data {
        context: String,
        message: String,
        #[source]
        source: Option<strata_spec::BoxError>,
    },
    #[error("{0}")]
    Usage(String),
    /// Rows meant to be told apart by their keys share one (see `ShardSink::unique_order`).
    #[error("{rows} rows have the same key as another row")]
    RepeatedKeys { rows: u64 },
}

pub(crate) use strata_spec::one_line;
