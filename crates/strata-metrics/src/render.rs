//! The terminal table and the Markdown summary of an evaluation.

use std::collections::BTreeMap;

use crate::{Evaluation, GateResult, Value};

/// Per-group columns of the summaries (every metric is in `eval.json`).
const COLUMNS: [(&str, &str); 7] = [
    ("accuracy", "accuracy"),
    ("selection_rate", "selection rate"),
    ("true_positive_rate", "TPR"),
    ("false_positive_rate", "FPR"),
    ("precision", "precision"),
    ("roc_auc", "ROC AUC"),
    ("brier_score", "Brier"),
];

/// Disparities shown in the summaries.
const SHOWN: [&str; 6] = [
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "disparate_impact_ratio",
    "worst_group_accuracy",
];

fn cell(v: Option<&Value>) -> String {
    match v {
        None => "-".into(),
        Some(v) => match (v.value, v.lower, v.upper) {
            (Some(x), Some(l), Some(u)) => format!("{x:.3} [{l:.3}, {u:.3}]"),
            (Some(x), _, _) => format!("{x:.3}"),
            (None, _, _) => "n/a".into(),
        },
    }
}

/// One grouping's part of a summary: a row per group (and model), the disparities
/// per model, and the groups too small to judge.
struct Section {
    name: String,
    table: Vec<Vec<String>>,
    disparities: Vec<(String, String)>,
    excluded: Vec<String>,
}

fn model_name(e: &Evaluation) -> &str {
    e.model.as_deref().unwrap_or("model")
}

fn rows(evals: &[Evaluation]) -> Vec<Section> {
    let several = evals.len() > 1;
    let row_of = |name: &str, e: &Evaluation, n: u64, small: bool, m: &BTreeMap<String, Value>| {
        let mut r = vec![format!("{name}{}", if small { " (too small)" } else { "" })];
        if several {
            r.push(model_name(e).to_string());
        }
        r.push(n.to_string());
        r.extend(COLUMNS.iter().map(|(k, _)| cell(m.get(*k))));
        r
    };
    let mut out = vec![Section {
        name: "overall".to_string(),
        table: evals
            .iter()
            .map(|e| row_of("overall", e, e.overall.rows, false, &e.overall.metrics))
            .collect(),
        disparities: Vec::new(),
        excluded: Vec::new(),
    }];
    let Some(first) = evals.first() else {
        return out;
    };
    for (k, g) in first.groupings.iter().enumerate() {
        let mut table = Vec::new();
        for group in &g.groups {
            for e in evals {
                // every model's groupings come from the same spec; a group may be
                // absent from one model's predictions
                let Some(x) = e.groupings[k]
                    .groups
                    .iter()
                    .find(|x| x.group == group.group)
                else {
                    continue;
                };
                table.push(row_of(&x.group, e, x.rows, x.too_small, &x.metrics));
            }
        }
        let disparities = SHOWN
            .iter()
            .filter(|d| {
                evals
                    .iter()
                    .any(|e| e.groupings[k].disparities.contains_key(**d))
            })
            .map(|d| {
                let per: Vec<String> = evals
                    .iter()
                    .filter_map(|e| Some((e, e.groupings[k].disparities.get(*d)?)))
                    .map(|(e, v)| {
                        let text = match &v.undefined {
                            Some(why) => format!("n/a ({why})"),
                            None => cell(Some(v)),
                        };
                        if several {
                            format!("{} {text}", model_name(e))
                        } else {
                            text
                        }
                    })
                    .collect();
                (d.to_string(), per.join("; "))
            })
            .collect();
        let mut excluded: Vec<String> = Vec::new();
        for e in evals {
            for x in &e.groupings[k].excluded_groups {
                if !excluded.contains(x) {
                    excluded.push(x.clone());
                }
            }
        }
        out.push(Section {
            name: g.grouping.clone(),
            table,
            disparities,
            excluded,
        });
    }
    out
}

/// Per-class columns of a multi-class evaluation (overall; per group in eval.json).
const CLASS_COLUMNS: [&str; 4] = [
    "selection_rate",
    "true_positive_rate",
    "false_positive_rate",
    "precision",
];

fn class_header() -> Vec<String> {
    let mut h = vec!["class".to_string()];
    h.extend(CLASS_COLUMNS.iter().map(|c| c.replace('_', " ")));
    h
}

fn class_rows(e: &Evaluation) -> Vec<Vec<String>> {
    e.classes
        .iter()
        .map(|c| {
            let m = &c.evaluation.overall.metrics;
            let mut r = vec![c.class.clone()];
            r.extend(CLASS_COLUMNS.iter().map(|k| cell(m.get(*k))));
            r
        })
        .collect()
}

fn header(several: bool) -> Vec<String> {
    let mut h = vec!["group".to_string()];
    if several {
        h.push("model".to_string());
    }
    h.push("rows".to_string());
    h.extend(COLUMNS.iter().map(|(_, t)| t.to_string()));
    h
}

fn aligned(header: &[String], table: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            std::iter::once(&header[c])
                .chain(table.iter().map(|r| &r[c]))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String]| {
        r.iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (s, w))| {
                let pad = w - s.chars().count();
                if i == 0 {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut t = format!("  {}\n", line(header));
    for r in table {
        t.push_str(&format!("  {}\n", line(r)));
    }
    t
}

fn intro(evals: &[Evaluation]) -> String {
    let Some(eval) = evals.first() else {
        return "no predictions".into();
    };
    let models = if evals.len() > 1 {
        format!(
            "{} models ({}); ",
            evals.len(),
            evals.iter().map(model_name).collect::<Vec<_>>().join(", ")
        )
    } else {
        String::new()
    };
    let rows: u64 = evals.iter().map(|e| e.rows).sum();
    let null_labels: u64 = evals.iter().map(|e| e.null_labels).sum();
    format!(
        "{models}{} rows{}; {} bootstrap replicates, {}% intervals (seed {}); groups under {} rows are not judged",
        rows,
        if null_labels > 0 {
            format!(" ({null_labels} without a label, left out)")
        } else {
            String::new()
        },
        eval.replicates,
        eval.confidence * 100.0,
        eval.seed,
        eval.min_group_rows
    )
}

/// ` (model)` after a title, when the predictions name their model.
fn of_model(e: &Evaluation) -> String {
    e.model
        .as_ref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut t = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        " --- |".repeat(header.len())
    );
    for r in rows {
        t.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    t
}

/// A terminal summary.
pub fn table(evals: &[Evaluation], gates: &[GateResult]) -> String {
    let mut t = format!("{}\n", intro(evals));
    for Section {
        name,
        table,
        disparities: disp,
        excluded,
    } in rows(evals)
    {
        t.push_str(&format!("\n{name}\n"));
        t.push_str(&aligned(&header(evals.len() > 1), &table));
        for (d, v) in disp {
            t.push_str(&format!("  {d}: {v}\n"));
        }
        if !excluded.is_empty() {
            t.push_str(&format!("  too small to judge: {}\n", excluded.join(", ")));
        }
    }
    for e in evals.iter().filter(|e| !e.classes.is_empty()) {
        t.push_str(&format!(
            "\nper class, one against the rest{}\n",
            of_model(e)
        ));
        t.push_str(&aligned(&class_header(), &class_rows(e)));
    }
    if !gates.is_empty() {
        t.push_str("\ngates\n");
        for g in gates {
            t.push_str(&format!("  {}\n", g.line()));
        }
    }
    t
}

/// A Markdown summary (for CI logs and pull requests).
pub fn markdown(evals: &[Evaluation], gates: &[GateResult]) -> String {
    let mut t = format!("# Evaluation\n\n{}.\n", intro(evals));
    for Section {
        name,
        table,
        disparities: disp,
        excluded,
    } in rows(evals)
    {
        t.push_str(&format!("\n## {name}\n\n"));
        t.push_str(&markdown_table(&header(evals.len() > 1), &table));
        if !disp.is_empty() {
            t.push_str("\n| disparity | value [interval] |\n| --- | --- |\n");
            for (d, v) in disp {
                t.push_str(&format!("| {d} | {v} |\n"));
            }
        }
        if !excluded.is_empty() {
            t.push_str(&format!("\nToo small to judge: {}.\n", excluded.join(", ")));
        }
    }
    for e in evals.iter().filter(|e| !e.classes.is_empty()) {
        t.push_str(&format!(
            "\n## Per class, one against the rest{}\n\n",
            of_model(e)
        ));
        t.push_str(&markdown_table(&class_header(), &class_rows(e)));
    }
    if !gates.is_empty() {
        t.push_str("\n## Gates\n\n");
        for g in gates {
            t.push_str(&format!("- {}\n", g.line()));
        }
    }
    t
}
