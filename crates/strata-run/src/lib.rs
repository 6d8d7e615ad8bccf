//! Published runs: what a training cluster, a report or `strata check` reads.
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
//! `_latest` moves only after that. This crate reads and commits runs (the
//! [`Manifest`] and its pointer, [`resolve`], the commit protocol of [`Destination`]),
//! [`verify`] re-reads a run and [`assign`] spreads its shards over the ranks of a
//! training job. It needs no DataFusion: the shard writer is `strata-publish`.

mod assign;
mod curation;
mod destination;
mod manifest;
mod objects;
mod profile;
mod verify;

pub use curation::{Curation, SUMMARY_SCHEMA_VERSION, SplitSummary, StratumSummary};
pub use profile::{
    Attributes, GroupStats, LabelSummary, PROFILE_SCHEMA_VERSION, Profile, SourceSummary,
};

pub use assign::{MAX_WORLD_SIZE, assign};
pub use destination::{
    Destination, Existing, LATEST_FILE, MANIFEST_FILE, RUNS_DIR, resolve, valid_run_id,
};
pub use manifest::{
    ColumnSchema, InputFile, Latest, MANIFEST_SCHEMA_VERSION, Manifest, ShardEntry, SplitTotals,
    StratumCount,
};
pub use objects::{ObjectReader, fetch_object, list_parquet};
pub use verify::{VerifyReport, verify};

/// Why reading, committing, verifying or assigning a run failed. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An object store request failed (after its retries). The message is the store's
    /// error on one line; the error itself is the source.
    #[error("`{url}`: {message}")]
    Store {
        url: String,
        message: String,
        #[source]
        source: object_store::Error,
    },
    /// The run prefix already holds a manifest of a different run.
    #[error(
        "`{url}` already holds the manifest of a different run ({message}); publish to another output or run id, nothing was overwritten"
    )]
    Conflict { url: String, message: String },
    /// A manifest or pointer that cannot be read. The message shows the cause on one
    /// line; the cause itself, where there is one (a JSON error), is the source.
    #[error("`{url}`: {message}")]
    Manifest {
        url: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Reading a shard's Parquet.
    #[error("{context}: {message}")]
    Data {
        context: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("{0}")]
    Usage(String),
}
impl RunError {
    /// A manifest or pointer at `url` that is wrong as `message` says, with no cause.
    pub fn manifest(url: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Manifest {
            url: url.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A manifest or pointer at `url` that is not `what` (its JSON does not parse).
    pub(crate) fn not_json(url: impl Into<String>, what: &str, e: serde_json::Error) -> Self {
        Self::Manifest {
            url: url.into(),
            message: format!("not a strata {what}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub(crate) use strata_spec::{BoxError, one_line};

/// A user-given output URL or local path as a URL; local folders (and paths ending in
/// `/`) get a trailing `/`, so relative names join under them.
pub fn parse_location(s: &str) -> Result<url::Url, RunError> {
    if s.contains("://") {
        return url::Url::parse(s)
            .map_err(|e| RunError::Usage(format!("`{s}`: not a valid URL: {e}")));
    }
    let path = std::path::absolute(s)
        .map_err(|e| RunError::Usage(format!("`{s}`: not a valid path: {e}")))?;
    let url = if path.is_dir() || s.ends_with('/') {
        url::Url::from_directory_path(&path)
    } else {
        url::Url::from_file_path(&path)
    };
    url.map_err(|()| RunError::Usage(format!("`{s}`: not a valid path")))
}
