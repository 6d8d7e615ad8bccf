//! What curation did, per stratum: `curation.json` (a versioned contract) and the
//! terminal table.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
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

impl Curation {
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "Curated `{}` with {} (seed {}) -> {}\n",
            self.pipeline, self.strategy, self.seed, self.output
        );
        for s in &self.splits {
            out.push_str(&format!(
                "  {:<10} {:>10} -> {:>10} rows  (weight {:.6e})\n",
                s.split,
                s.rows_before,
                s.rows_after,
                s.weight_sum + 0.0 // an empty split's sum is -0.0
            ));
        }
        out.push_str(&format!(
            "  train effective rows (Kish): {:.1}\n\n",
            self.train_effective_rows
        ));
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(vec![
            "stratum",
            "rows before",
            "share before",
            "target",
            "rows after",
            "share after",
            "weight sum",
            "eff. rows",
            "replication",
        ]);
        for s in &self.strata {
            let name = s
                .stratum
                .values()
                .map(|v| match v {
                    serde_json::Value::Null => strata_spec::MISSING_GROUP.to_string(),
                    serde_json::Value::String(s) => strata_spec::printable(s).into_owned(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" × ");
            table.add_row(vec![
                name,
                s.rows_before.to_string(),
                format!("{:.2}%", s.share_before * 100.0),
                s.target_share
                    .map_or_else(|| "-".into(), |t| format!("{:.2}%", t * 100.0)),
                s.rows_after.to_string(),
                format!("{:.2}%", s.share_after * 100.0),
                format!("{:.1}", s.weight_sum),
                format!("{:.1}", s.effective_rows),
                format!("{:.2}", s.replication),
            ]);
        }
        for i in 1..9 {
            if let Some(c) = table.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        out.push_str(&table.to_string());
        out.push('\n');
        for w in &self.warnings {
            out.push_str(&format!("warning: {}\n", strata_spec::printable(w)));
        }
        out
    }
}
