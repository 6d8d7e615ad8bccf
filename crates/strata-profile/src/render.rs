//! Rendering a profile for people (terminal table, Markdown) and machines (JSON).

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{CellAlignment, Table};

use strata_run::Profile;

/// Output formats of `strata profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

/// Renders `profile` in `format`; the result ends with a newline.
pub fn render(profile: &Profile, format: Format) -> String {
    match format {
        Format::Json => {
            let mut s =
                strata_spec::json::to_string_pretty(profile).expect("a profile always serializes");
            s.push('\n');
            s
        }
        Format::Table => text(profile, false),
        Format::Markdown => text(profile, true),
    }
}

fn text(p: &Profile, markdown: bool) -> String {
    let mut out = String::new();
    let heading = |out: &mut String, level: &str, s: &str| {
        if markdown {
            out.push_str(&format!("{level} {s}\n\n"));
        } else {
            out.push_str(&format!("{s}\n"));
        }
    };
    heading(&mut out, "##", &format!("Profile of `{}`", p.pipeline));
    let rate = p.positive_rate.map_or_else(|| "n/a".into(), pct);
    out.push_str(&format!(
        "{}source: {} ({} file{}, {})\n{}rows: {}   label: {} = {} ({} positive)\n",
        if markdown { "- " } else { "" },
        p.source.url,
        p.source.files,
        if p.source.files == 1 { "" } else { "s" },
        bytes(p.source.bytes),
        if markdown { "- " } else { "" },
        thousands(p.total_rows),
        p.label.column,
        p.label.positive,
        rate,
    ));
    if let (Some(w), Some(total)) = (&p.weight_column, p.total_weight) {
        out.push_str(&format!(
            "{}weight: {w} (total {total:.6e})\n",
            if markdown { "- " } else { "" }
        ));
    }
    out.push('\n');

    let weighted = p.weight_column.is_some();
    for grouping in &p.groupings {
        let groups: Vec<_> = p.groups_of(grouping).collect();
        let has_reference = groups.iter().any(|g| g.reference_share.is_some());
        let mut table = Table::new();
        table.load_preset(if markdown {
            ASCII_MARKDOWN
        } else {
            UTF8_FULL_CONDENSED
        });
        let mut header = vec!["group", "rows", "share"];
        if weighted {
            header.push("weighted share");
        }
        header.push("positive rate");
        if weighted {
            header.push("weighted positive rate");
        }
        if has_reference {
            header.extend(["reference", "ratio", "gap"]);
        }
        header.push("flag");
        table.set_header(header.clone());
        for g in &groups {
            let mut row = vec![
                g.attributes
                    .0
                    .iter()
                    .map(|(_, v)| {
                        strata_spec::printable(v.as_deref().unwrap_or(strata_spec::MISSING_GROUP))
                    })
                    .collect::<Vec<_>>()
                    .join(" × "),
                thousands(g.rows),
                pct(g.share),
            ];
            if weighted {
                row.push(g.weighted_share.map_or_else(|| "n/a".into(), pct));
            }
            row.push(g.positive_rate.map_or_else(|| "n/a".into(), pct));
            if weighted {
                row.push(g.weighted_positive_rate.map_or_else(|| "n/a".into(), pct));
            }
            if has_reference {
                row.push(g.reference_share.map_or_else(|| "-".into(), pct));
                row.push(
                    g.representation_ratio
                        .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
                );
                row.push(
                    g.gap
                        .map_or_else(|| "-".into(), |d| format!("{:+.2} pp", d * 100.0)),
                );
            }
            row.push(if g.small {
                format!("small (<{})", p.min_group_rows)
            } else {
                String::new()
            });
            table.add_row(row);
        }
        for i in 1..header.len() - 1 {
            if let Some(c) = table.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        heading(
            &mut out,
            "###",
            &strata_spec::printable(&grouping.join(" × ")),
        );
        out.push_str(&table.to_string());
        out.push_str("\n\n");
    }
    if !p.warnings.is_empty() {
        heading(&mut out, "###", "warnings");
        for w in &p.warnings {
            out.push_str(&format!("- {}\n", strata_spec::printable(w)));
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(32561), "32,561");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
