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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
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
            out.push(Share {
                stratum,
                before: need("share_before")?,
                after: need("share_after")?,
                target: f("target_share")?,
                rows_before: count("rows_before"),
                rows_after: count("rows_after"),
            });
        }
        Ok(Self { strata: out })
    }
}

pub(crate) fn section(h: &mut String, r: &Representation) -> Result<(), ReportError> {
    let rows: Vec<String> = r.strata.iter().map(|s| s.stratum.clone()).collect();
    let before: Vec<f64> = r.strata.iter().map(|s| s.before).collect();
    let after: Vec<f64> = r.strata.iter().map(|s| s.after).collect();
    let target: Vec<Option<f64>> = r.strata.iter().map(|s| s.target).collect();
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
        "<section id=\"representation\">\n<h2>Representation of the training split</h2>\n\
         <p class=\"legend\"><span><i style=\"background:rgb({},{},{})\"></i>before curation</span>\
         <span><i style=\"background:rgb({},{},{})\"></i>after curation</span>\
         <span><i style=\"background:rgb(214,39,40)\"></i>target</span></p>\n\
         <figure class=\"chart\" data-metric=\"representation\" data-points=\"{}\">\n{svg}\n\
         <figcaption>Share of the training split per stratum, before and after curation, against the target</figcaption>\n</figure>",
        b.0,
        b.1,
        b.2,
        a.0,
        a.1,
        a.2,
        rows.len()
    );
    h.push_str("<div class=\"scroll\"><table>\n<tr><th class=\"name\">stratum</th><th>rows before</th><th>share before</th><th>rows after</th><th>share after</th><th>target</th></tr>\n");
    for s in &r.strata {
        let _ = writeln!(
            h,
            "<tr class=\"stratum\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.stratum),
            s.rows_before,
            num(s.before),
            s.rows_after,
            num(s.after),
            s.target.map_or("–".into(), num)
        );
    }
    h.push_str("</table></div>\n</section>\n");
    Ok(())
}
