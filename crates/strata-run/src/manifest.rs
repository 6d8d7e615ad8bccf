//! `manifest.json`: the versioned record of a published run (see the README for the
//! field reference). Bump [`MANIFEST_SCHEMA_VERSION`] on any change a reader could trip on.

use serde::{Deserialize, Serialize};

pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// The run's folder name under `runs/`.
    pub run_id: String,
    /// SHA-256 over everything that determines the output: strata's version, the spec
    /// text, the seed, the input snapshot and the shard size. Same identity, same bytes.
    pub identity: String,
    /// When the manifest was written (RFC 3339, UTC); the only field that differs
    /// between two publishes of the same run.
    pub created_at: String,
    pub strata_version: String,
    pub pipeline: String,
    pub seed: u64,
    /// SHA-256 of the pipeline spec's text.
    pub spec_sha256: String,
    /// The source URL and every file read, as listed when the run started.
    pub source: String,
    pub inputs: Vec<InputFile>,
    /// The shards' columns (the source's plus `sample_weight` and `split`).
    pub schema: Vec<ColumnSchema>,
    /// The columns whose values make a stratum (protected attributes, then the label).
    pub stratum_columns: Vec<String>,
    /// Rows per shard the run aimed at; shards of a split hold equal rows (±1).
    pub target_shard_rows: u64,
    /// The curation summary, relative to the run folder.
    pub summary: String,
    pub splits: Vec<SplitTotals>,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub url: String,
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    /// Arrow's display form of the type, e.g. `Utf8`, `Int64`, `Float64`.
    pub data_type: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitTotals {
    pub split: String,
    pub shards: u64,
    pub rows: u64,
    pub bytes: u64,
    pub weight_sum: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Relative to the run folder, e.g. `train/part-00003.parquet`.
    pub path: String,
    pub split: String,
    /// 0-based position of the shard within its split.
    pub index: u64,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Rows and weight sum of every stratum present in the shard, ordered by values.
    pub strata: Vec<StratumCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StratumCount {
    /// One value per stratum column, as text; `null` for a missing value.
    pub values: Vec<Option<String>>,
    pub rows: u64,
    pub weight_sum: f64,
}

/// The `_latest` pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    pub run_id: String,
    /// The committed manifest, relative to the output root.
    pub manifest: String,
}
