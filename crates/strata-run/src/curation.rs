//! What curation did, per stratum: `curation.json` (a versioned contract,
//! `docs/contracts.md`).

use serde::{Deserialize, Serialize};

pub const SUMMARY_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curation {
    pub schema_version: u32,
    pub pipeline: String,
    pub strategy: String,
    pub seed: u64,
    pub source: String,
    pub output: String,
    /// What a stratum is: the protected attributes, plus the label when stratified by it.
    pub stratum_columns: Vec<String>,
    /// Rows per split after curation (`train` curated; `validation`, `test` natural).
    pub splits: Vec<SplitSummary>,
    /// Training split, per stratum, before and after.
    pub strata: Vec<StratumSummary>,
    /// Kish effective sample size of the curated training split.
    pub train_effective_rows: f64,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitSummary {
    pub split: String,
    pub rows_before: u64,
    pub rows_after: u64,
    pub weight_sum: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StratumSummary {
    /// Column -> value (`null` for the missing group), in spec order, label last.
    pub stratum: serde_json::Map<String, serde_json::Value>,
    pub rows_before: u64,
    pub share_before: f64,
    /// The target share (resample) or null (reweigh).
    pub target_share: Option<f64>,
    pub planned_rows: u64,
    pub rows_after: u64,
    pub share_after: f64,
    pub weight_sum: f64,
    /// (Σw)² / Σw²: how many unweighted rows the stratum is worth.
    pub effective_rows: f64,
    /// rows_after / rows_before.
    pub replication: f64,
    /// The Kamiran–Calders factor applied to this stratum's weights, if any.
    pub weight_factor: Option<f64>,
}
