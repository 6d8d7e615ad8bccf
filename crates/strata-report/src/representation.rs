//! The representation section: each training stratum's share before and after
//! curation against its target, read from `curation.json` (its contract:
//! docs/contracts.md, "Curation output contract").

use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::{ReportError, charts, esc, num};

/// One stratum's shares of the training split.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// e.g. `sex=Female, race=Black`.
    pub stratum: String,
    pub before: f64,
    pub after: f64,
    pub target: Option<f64>,
    pub rows_before: u64,
    pub rows_after: u64,
    /// The share of the curated training split's weight (`weight_sum`): what
    /// reweighing changes, where row shares stay as they were.
    pub weighted_after: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    /// Per column of the strata (each attribute, and the label when strata split by
    /// it), each value's shares: the strata summed.
    pub by_column: Vec<Share>,
    pub strata: Vec<Share>,
}

impl Representation {
    /// From a parsed `curation.json`; `source` names the file in errors.
    pub fn from_curation(json: &Json, source: &str) -> Result<Self, ReportError> {
        let bad = |m: String| ReportError::Input(format!("{source}: {m}"));
        let strata = json
            .get("strata")
            .and_then(Json::as_array)
            .ok_or_else(|| bad("no `strata` list: not a curation.json".into()))?;
        let mut out = Vec::with_capacity(strata.len());
        let mut by_column: Vec<Share> = Vec::new();
        let total_weight: f64 = strata
            .iter()
            .filter_map(|s| s.get("weight_sum").and_then(Json::as_f64))
            .sum();
        let weighted = |s: &Json| {
            s.get("weight_sum")
                .and_then(Json::as_f64)
                .filter(|_| total_weight > 0.0)
                .map(|w| w / total_weight)
        };
        for (i, s) in strata.iter().enumerate() {
            let stratum = s
                .get("stratum")
                .and_then(Json::as_object)
                .ok_or_else(|| bad(format!("strata[{i}].stratum: not an object")))?
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Json::Null => strata_spec::MISSING_GROUP.to_string(),
                        Json::String(t) => t.clone(),
                        other => other.to_string(),
                    };
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let f = |key: &str| -> Result<Option<f64>, ReportError> {
                match s.get(key) {
                    None | Some(Json::Null) => Ok(None),
                    Some(v) => v
                        .as_f64()
                        .map(Some)
                        .ok_or_else(|| bad(format!("strata[{i}].{key}: not a number"))),
                }
            };
            let need = |key: &str| -> Result<f64, ReportError> {
                f(key)?.ok_or_else(|| bad(format!("strata[{i}]: no `{key}`")))
            };
            let count = |key: &str| s.get(key).and_then(Json::as_u64).unwrap_or(0);
            for part in stratum.split(", ") {
                let (before, after, target) = (
                    need("share_before")?,
                    need("share_after")?,
                    f("target_share")?,
                );
                match by_column.iter_mut().find(|x| x.stratum == part) {
                    Some(x) => {
                        x.before += before;
                        x.after += after;
                        x.weighted_after = x.weighted_after.zip(weighted(s)).map(|(a, b)| a + b);
                        x.target = x.target.zip(target).map(|(a, b)| a + b);
                        x.rows_before += count("rows_before");
                        x.rows_after += count("rows_after");
                    }
                    None => by_column.push(Share {
                        stratum: part.to_string(),
                        before,
                        after,
                        target,
                        rows_before: count("rows_before"),
                        rows_after: count("rows_after"),
                        weighted_after: weighted(s),
                    }),
                }
            }
            out.push(Share {
                stratum,
                before: need("share_before")?,
                after: need("share_after")?,
                target: f("target_share")?,
                rows_before: count("rows_before"),
                rows_after: count("rows_after"),
                weighted_after: weighted(s),
            });
        }
        // per column, in the strata's column order, values in order of first sight
        let column = |s: &Share| s.stratum.split('=').next().unwrap_or("").to_string();
        let order: Vec<String> = by_column.iter().map(column).fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) {
                v.push(c);
            }
            v
        });
        by_column.sort_by_key(|s| order.iter().position(|c| *c == column(s)));
        Ok(Self {
            by_column,
            strata: out,
        })
    }
}

pub(crate) fn section(h: &mut String, r: &Representation) -> Result<(), ReportError> {
    h.push_str("<section id=\"representation\">\n<h2>Representation of the training split</h2>\n");
    part(
        h,
        &r.by_column,
        "by-column",
        "Per attribute (strata summed)",
    )?;
    part(h, &r.strata, "strata", "Per stratum")?;
    h.push_str("</section>\n");
    Ok(())
}

fn part(h: &mut String, shares: &[Share], kind: &str, title: &str) -> Result<(), ReportError> {
    let rows: Vec<String> = shares.iter().map(|s| s.stratum.clone()).collect();
    let before: Vec<f64> = shares.iter().map(|s| s.before).collect();
    let after: Vec<f64> = shares.iter().map(|s| s.after).collect();
    let target: Vec<Option<f64>> = shares.iter().map(|s| s.target).collect();
    let svg = charts::ShareChart {
        rows: &rows,
        before: &before,
        after: &after,
        target: &target,
    }
    .svg()?;
    let [b, a] = [charts::PALETTE[0], charts::PALETTE[1]];
    let _ = writeln!(
        h,
        "<h3>{title}</h3>\n<p class=\"legend\"><span><i style=\"background:rgb({},{},{})\"></i>before curation</span>\
         <span><i style=\"background:rgb({},{},{})\"></i>after curation</span>\
         <span><i style=\"background:rgb(214,39,40)\"></i>target</span></p>\n\
         <figure class=\"chart\" data-metric=\"representation-{kind}\" data-points=\"{}\">\n{svg}\n\
         <figcaption>Share of the training split, before and after curation, against the target</figcaption>\n</figure>",
        b.0,
        b.1,
        b.2,
        a.0,
        a.1,
        a.2,
        rows.len()
    );
    h.push_str("<div class=\"scroll\"><table>\n<tr><th class=\"name\">stratum</th><th>rows before</th><th>share before</th><th>rows after</th><th>share after</th><th>weighted share after</th><th>target</th></tr>\n");
    for s in shares {
        let _ = writeln!(
            h,
            "<tr class=\"{kind}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.stratum),
            s.rows_before,
            num(s.before),
            s.rows_after,
            num(s.after),
            s.weighted_after.map_or("–".into(), num),
            s.target.map_or("–".into(), num)
        );
    }
    h.push_str("</table></div>\n");
    Ok(())
}
