//! The curation summary as the terminal shows it (the data is `strata_run::Curation`).

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use strata_run::Curation;

/// The curation summary as the terminal shows it: splits, then a table of strata.
pub fn render_table(summary: &Curation) -> String {
    {
        let mut out = format!(
            "Curated `{}` with {} (seed {}) -> {}\n",
            summary.pipeline, summary.strategy, summary.seed, summary.output
        );
        for s in &summary.splits {
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
            summary.train_effective_rows
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
        for s in &summary.strata {
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
        for w in &summary.warnings {
            out.push_str(&format!("warning: {}\n", strata_spec::printable(w)));
        }
        out
    }
}
