//! strata's report: one self-contained HTML page a reviewer reads. Inline CSS and
//! inline SVG charts (plotters' SVG backend), no script and a Content-Security-Policy
//! that forbids every fetch, so the page shows the same offline, attached to a ticket
//! or archived. What it holds: the gates' verdicts; per grouping, each group's metrics
//! with interval bars (models side by side, groups too small to judge in grey), the
//! disparities with the gates' thresholds; and, given a curation, the representation
//! before and after curation against the target.

mod charts;
mod representation;

use std::fmt::Write as _;

use strata_metrics::{DISPARITIES, Evaluation, GateResult, GroupResult, METRICS, Value};

pub use charts::PALETTE;
pub use representation::{Representation, Share};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("drawing a chart: {0}")]
    Chart(String),
    #[error("{0}")]
    Input(String),
}

/// What the page shows.
#[derive(Debug)]
pub struct Report<'a> {
    pub title: String,
    /// Key facts shown at the top (pipeline, predictions, rows, ...), in order.
    pub facts: Vec<(String, String)>,
    pub evaluations: &'a [Evaluation],
    pub gates: &'a [GateResult],
    pub representation: Option<&'a Representation>,
    /// SQL check results to show (`strata run`).
    pub checks: Vec<CheckLine>,
}

/// One SQL check's result, as the report shows it.
#[derive(Debug, Clone)]
pub struct CheckLine {
    pub stage: String,
    pub name: String,
    /// `pass`, `warn`, `fail`, `error` or `skipped`.
    pub status: String,
    pub failing_rows: Option<u64>,
    pub rule: String,
    pub message: Option<String>,
}

/// Per-group metrics drawn as charts (every metric is in the tables).
const CHART_METRICS: [(&str, &str); 4] = [
    ("accuracy", "accuracy"),
    ("selection_rate", "selection rate"),
    ("true_positive_rate", "true positive rate"),
    ("false_positive_rate", "false positive rate"),
];

/// Disparities drawn on the grouping's chart; every disparity is in its table.
const CHART_DISPARITIES: [&str; 7] = [
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "disparate_impact_ratio",
    "worst_group_accuracy",
];

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:24px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin:0 0 8px}h2{font-size:1.3em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:1.05em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0 16px}dl.facts dt{color:#666}dl.facts dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
.verdict{display:inline-block;padding:6px 14px;border-radius:4px;font-weight:600}.verdict.pass{background:#e6f4ea;color:#1e7d32}.verdict.fail{background:#fdecea;color:#b71c1c}.verdict.none{background:#eee;color:#444}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.88em}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}th:first-child,td:first-child,td.name,th.name{text-align:left}th{background:#f6f6f6;position:sticky;top:0}
tr.too-small td{color:#999}tr.too-small td:first-child::after{content:' (too small to judge)';font-size:.85em}
tr.gate.pass td.verdict-cell,tr.check.pass td.verdict-cell{color:#1e7d32;font-weight:600}tr.gate.fail td.verdict-cell,tr.check.fail td.verdict-cell,tr.check.error td.verdict-cell{color:#b71c1c;font-weight:600}
.scroll{overflow-x:auto}figure{margin:8px 0 20px}figcaption{font-size:.9em;color:#555}svg{max-width:100%;height:auto}
.legend span{display:inline-block;margin-right:16px;font-size:.9em}.legend i{display:inline-block;width:12px;height:12px;border-radius:6px;margin-right:4px;vertical-align:-1px}
.note{color:#666;font-size:.9em}
";

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v}")
    } else if v.abs() >= 1000.0 {
        // weighted counts: whole units are precision enough on a page
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None => "<td>–</td>".into(),
        Some(v) => match (v.value, v.lower, v.upper) {
            (Some(x), Some(l), Some(u)) => format!(
                "<td>{} <span class=\"note\">[{}, {}]</span></td>",
                num(x),
                num(l),
                num(u)
            ),
            (Some(x), _, _) => format!("<td>{}</td>", num(x)),
            (None, _, _) => format!(
                "<td title=\"{}\">n/a</td>",
                esc(v.undefined.as_deref().unwrap_or("undefined"))
            ),
        },
    }
}

fn model_name(e: &Evaluation) -> &str {
    e.model.as_deref().unwrap_or("model")
}

fn legend(evals: &[Evaluation]) -> String {
    if evals.len() < 2 {
        return String::new();
    }
    let mut s = String::from("<p class=\"legend\">");
    for (i, e) in evals.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let _ = write!(
            s,
            "<span><i style=\"background:rgb({},{},{})\"></i>{}</span>",
            c.0,
            c.1,
            c.2,
            esc(model_name(e))
        );
    }
    s.push_str("<span><i style=\"background:#aaa\"></i>too small to judge</span></p>");
    s
}

fn interval(v: &Value) -> Option<(f64, f64)> {
    v.lower.zip(v.upper)
}

/// The page.
pub fn html(r: &Report<'_>) -> Result<String, ReportError> {
    let evals = r.evaluations;
    let first = evals
        .first()
        .ok_or_else(|| ReportError::Input("no evaluation to report".into()))?;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n<dl class=\"facts\">\n",
        esc(&r.title),
        esc(&r.title)
    );
    for (k, v) in &r.facts {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    h.push_str("</dl>\n");
    let failed = r.gates.iter().filter(|g| !g.passed).count();
    if r.gates.is_empty() {
        h.push_str("<p class=\"verdict none\" id=\"verdict\">no gates set</p>\n");
    } else if failed == 0 {
        let _ = writeln!(
            h,
            "<p class=\"verdict pass\" id=\"verdict\">all {} gates pass</p>",
            r.gates.len()
        );
    } else {
        let _ = writeln!(
            h,
            "<p class=\"verdict fail\" id=\"verdict\">{failed} of {} gates fail</p>",
            r.gates.len()
        );
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">Intervals: {}% percentile bootstrap, {} replicates stratified by group (seed {}). \
         Groups under {} rows are shown but not judged and take no part in disparities.</p>\n</header>",
        num(first.confidence * 100.0),
        first.replicates,
        first.seed,
        first.min_group_rows
    );

    if !r.gates.is_empty() {
        h.push_str("<section id=\"gates\">\n<h2>Gates</h2>\n<div class=\"scroll\"><table>\n<tr><th>verdict</th><th class=\"name\">model</th><th class=\"name\">metric</th><th class=\"name\">on</th><th>value</th><th>interval</th><th class=\"name\">against</th><th>judged on</th><th>threshold</th></tr>\n");
        for g in r.gates {
            let on = match &g.group {
                Some(x) => format!("{} = {x}", g.grouping),
                None => g.grouping.clone(),
            };
            let _ = writeln!(
                h,
                "<tr class=\"gate {}\" data-metric=\"{}\"><td class=\"verdict-cell\">{}</td><td class=\"name\">{}</td><td class=\"name\">{}</td><td class=\"name\">{}</td><td>{}</td><td>{}</td><td class=\"name\">{}</td><td>{}</td><td>{} {}</td></tr>",
                if g.passed { "pass" } else { "fail" },
                esc(&g.metric),
                if g.passed { "PASS" } else { "FAIL" },
                esc(g.model.as_deref().unwrap_or("")),
                esc(&g.metric),
                esc(&on),
                g.value.map_or("undefined".into(), num),
                match (g.lower, g.upper) {
                    (Some(l), Some(u)) => format!("[{}, {}]", num(l), num(u)),
                    _ => "–".into(),
                },
                match (&g.baseline, g.compare) {
                    (Some(b), Some(c)) => esc(&format!(
                        "{b} {}: {} {}{}",
                        g.baseline_value.map_or("undefined".into(), num),
                        match c {
                            strata_spec::Compare::Difference => "difference",
                            strata_spec::Compare::Ratio => "ratio",
                        },
                        g.compared.map_or("undefined".into(), num),
                        match (g.compared_lower, g.compared_upper, g.paired) {
                            (Some(l), Some(u), Some(true)) =>
                                format!(" [{}, {}] paired", num(l), num(u)),
                            _ => String::new(),
                        }
                    )),
                    _ => "–".into(),
                },
                match g.on {
                    strata_spec::Bound::Point => "estimate",
                    strata_spec::Bound::Lower => "lower end",
                    strata_spec::Bound::Upper => "upper end",
                },
                esc(g.op.as_str()),
                num(g.threshold)
            );
            if let Some(reason) = &g.reason {
                let _ = writeln!(
                    h,
                    "<tr><td></td><td class=\"name note\" colspan=\"8\">{}</td></tr>",
                    esc(reason)
                );
            }
        }
        h.push_str("</table></div>\n</section>\n");
    }

    overall(&mut h, evals);
    for k in 0..first.groupings.len() {
        grouping(&mut h, evals, r.gates, k)?;
    }
    for e in evals.iter().filter(|e| !e.classes.is_empty()) {
        classes(&mut h, e);
    }
    if let Some(rep) = r.representation {
        representation::section(&mut h, rep)?;
    }
    if !r.checks.is_empty() {
        h.push_str("<section id=\"checks\">\n<h2>Checks</h2>\n<div class=\"scroll\"><table>\n<tr><th class=\"name\">stage</th><th class=\"name\">check</th><th class=\"name\">status</th><th>failing rows</th><th class=\"name\">rule</th><th class=\"name\">message</th></tr>\n");
        for c in &r.checks {
            let _ = writeln!(
                h,
                "<tr class=\"check {}\"><td class=\"name\">{}</td><td class=\"name\">{}</td><td class=\"name verdict-cell\">{}</td><td>{}</td><td class=\"name\">{}</td><td class=\"name\">{}</td></tr>",
                esc(&c.status.to_ascii_lowercase()),
                esc(&c.stage),
                esc(&c.name),
                esc(&c.status),
                c.failing_rows.map_or("–".into(), |n| n.to_string()),
                esc(&c.rule),
                esc(c.message.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table></div>\n</section>\n");
    }
    h.push_str("<footer><p class=\"note\">Metrics and disparities follow scikit-learn's and Fairlearn's definitions (strata's docs/evaluation.md); every figure is in eval.json.</p></footer>\n</body>\n</html>\n");
    Ok(h)
}

/// A multi-class model's classes, each against the rest: overall rates, and per
/// grouping the headline disparities.
fn classes(h: &mut String, e: &Evaluation) {
    const RATES: [&str; 4] = [
        "selection_rate",
        "true_positive_rate",
        "false_positive_rate",
        "precision",
    ];
    const GAPS: [&str; 2] = ["demographic_parity_difference", "equalized_odds_difference"];
    let _ = writeln!(
        h,
        "<section class=\"classes\" data-model=\"{}\">\n<h2>Per class, one against the rest{}</h2>\n<div class=\"scroll\"><table>",
        esc(model_name(e)),
        e.model
            .as_ref()
            .map(|m| format!(" ({})", esc(m)))
            .unwrap_or_default()
    );
    h.push_str("<tr><th class=\"name\">class</th>");
    for m in RATES {
        let _ = write!(h, "<th>{}</th>", esc(&m.replace('_', " ")));
    }
    for g in e
        .classes
        .first()
        .map(|c| c.evaluation.groupings.as_slice())
        .unwrap_or(&[])
    {
        for d in GAPS {
            let _ = write!(
                h,
                "<th>{} ({})</th>",
                esc(&d.replace('_', " ")),
                esc(&g.grouping)
            );
        }
    }
    h.push_str("</tr>\n");
    for c in &e.classes {
        let _ = write!(
            h,
            "<tr class=\"class\" data-class=\"{}\"><td>{}</td>",
            esc(&c.class),
            esc(&c.class)
        );
        for m in RATES {
            h.push_str(&cell(c.evaluation.overall.metrics.get(m)));
        }
        for g in &c.evaluation.groupings {
            for d in GAPS {
                h.push_str(&cell(g.disparities.get(d)));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table></div>\n</section>\n");
}

fn header_row(h: &mut String, several: bool) {
    h.push_str("<tr><th class=\"name\">group</th>");
    if several {
        h.push_str("<th class=\"name\">model</th>");
    }
    h.push_str("<th>rows</th>");
    for m in METRICS.iter().filter(|m| **m != "count") {
        let _ = write!(h, "<th>{}</th>", esc(&m.replace('_', " ")));
    }
    h.push_str("</tr>\n");
}

fn metric_row(h: &mut String, several: bool, e: &Evaluation, grouping: &str, g: &GroupResult) {
    let (name, rows, small, m) = (&g.group, g.rows, g.too_small, &g.metrics);
    let _ = write!(
        h,
        "<tr class=\"group{}\" data-grouping=\"{}\" data-group=\"{}\" data-model=\"{}\"><td>{}</td>",
        if small { " too-small" } else { "" },
        esc(grouping),
        esc(name),
        esc(model_name(e)),
        esc(name)
    );
    if several {
        let _ = write!(h, "<td class=\"name\">{}</td>", esc(model_name(e)));
    }
    let _ = write!(h, "<td>{rows}</td>");
    for k in METRICS.iter().filter(|m| **m != "count") {
        h.push_str(&cell(m.get(*k)));
    }
    h.push_str("</tr>\n");
}

fn overall(h: &mut String, evals: &[Evaluation]) {
    let several = evals.len() > 1;
    h.push_str("<section id=\"overall\">\n<h2>Overall</h2>\n<div class=\"scroll\"><table>\n");
    header_row(h, several);
    for e in evals {
        metric_row(h, several, e, "overall", &e.overall);
    }
    h.push_str("</table></div>\n</section>\n");
}

/// Group names of grouping `k` over every model, in the first model's order then the
/// others' (a group may be missing from one model's predictions).
fn group_names(evals: &[Evaluation], k: usize) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for e in evals {
        for g in &e.groupings[k].groups {
            if !names.contains(&g.group) {
                names.push(g.group.clone());
            }
        }
    }
    names
}

fn grouping(
    h: &mut String,
    evals: &[Evaluation],
    gates: &[GateResult],
    k: usize,
) -> Result<(), ReportError> {
    let several = evals.len() > 1;
    let name = &evals[0].groupings[k].grouping;
    let _ = writeln!(
        h,
        "<section class=\"grouping\" data-grouping=\"{}\">\n<h2>{}</h2>\n{}",
        esc(name),
        esc(name),
        legend(evals)
    );
    let groups = group_names(evals, k);
    for (metric, title) in CHART_METRICS {
        let mut points = Vec::new();
        for (s, e) in evals.iter().enumerate() {
            for g in &e.groupings[k].groups {
                let row = groups.iter().position(|x| *x == g.group).expect("listed");
                if let Some(v) = g.metrics.get(metric)
                    && let Some(x) = v.value
                {
                    points.push(charts::Point {
                        row,
                        series: s,
                        value: x,
                        interval: interval(v),
                        muted: g.too_small,
                    });
                }
            }
        }
        let ticks: Vec<(usize, f64)> = gates
            .iter()
            .filter(|g| g.metric == metric && g.grouping == *name)
            .filter_map(|g| {
                let row = groups.iter().position(|x| Some(x) == g.group.as_ref())?;
                Some((row, g.threshold))
            })
            .collect();
        let svg = charts::IntervalChart {
            x_label: title,
            rows: &groups,
            series: evals.len(),
            points: &points,
            ticks: &ticks,
        }
        .svg()?;
        let _ = writeln!(
            h,
            "<figure class=\"chart\" data-metric=\"{metric}\" data-points=\"{}\">\n{svg}\n<figcaption>{} by {} (dot: estimate; bar: interval{})</figcaption>\n</figure>",
            points.len(),
            esc(title),
            esc(name),
            if ticks.is_empty() {
                ""
            } else {
                "; red: a gate's threshold"
            }
        );
    }
    h.push_str("<h3>Per-group metrics</h3>\n<div class=\"scroll\"><table>\n");
    header_row(h, several);
    for g in &groups {
        for e in evals {
            if let Some(x) = e.groupings[k].groups.iter().find(|x| x.group == *g) {
                metric_row(h, several, e, name, x);
            }
        }
    }
    h.push_str("</table></div>\n");
    let small: Vec<String> = evals
        .iter()
        .flat_map(|e| e.groupings[k].excluded_groups.iter().cloned())
        .fold(Vec::new(), |mut v, g| {
            if !v.contains(&g) {
                v.push(g);
            }
            v
        });
    if !small.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note too-small-list\">Too small to judge (left out of the disparities): {}.</p>",
            esc(&small.join(", "))
        );
    }

    // disparities: a chart of the headline ones with gate ticks, a table of all
    let rows: Vec<String> = CHART_DISPARITIES.iter().map(|d| d.to_string()).collect();
    let mut points = Vec::new();
    for (s, e) in evals.iter().enumerate() {
        for (row, d) in CHART_DISPARITIES.iter().enumerate() {
            let Some(v) = e.groupings[k].disparities.get(*d) else {
                continue;
            };
            if let Some(x) = v.value {
                points.push(charts::Point {
                    row,
                    series: s,
                    value: x,
                    interval: interval(v),
                    muted: false,
                });
            }
        }
    }
    let ticks: Vec<(usize, f64)> = gates
        .iter()
        .filter(|g| g.grouping == *name && g.group.is_none())
        .filter_map(|g| {
            let row = CHART_DISPARITIES.iter().position(|d| *d == g.metric)?;
            Some((row, g.threshold))
        })
        .collect();
    let svg = charts::IntervalChart {
        x_label: "disparity",
        rows: &rows,
        series: evals.len(),
        points: &points,
        ticks: &ticks,
    }
    .svg()?;
    let _ = writeln!(
        h,
        "<h3>Disparities</h3>\n<figure class=\"chart\" data-metric=\"disparities\" data-points=\"{}\">\n{svg}\n<figcaption>Disparities by {} (red: a gate's threshold)</figcaption>\n</figure>",
        points.len(),
        esc(name)
    );
    h.push_str("<div class=\"scroll\"><table>\n<tr><th class=\"name\">disparity</th>");
    for e in evals {
        let _ = write!(h, "<th>{}</th>", esc(model_name(e)));
    }
    h.push_str("<th class=\"name\">gate</th></tr>\n");
    for d in DISPARITIES.iter().copied().filter(|d| {
        evals
            .iter()
            .any(|e| e.groupings[k].disparities.contains_key(*d))
    }) {
        let _ = write!(
            h,
            "<tr class=\"disparity\" data-disparity=\"{d}\"><td class=\"name\">{d}</td>"
        );
        for e in evals {
            h.push_str(&cell(e.groupings[k].disparities.get(d)));
        }
        let verdicts: Vec<String> = gates
            .iter()
            .filter(|g| g.metric == d && g.grouping == *name && g.group.is_none())
            .map(|g| {
                format!(
                    "{}{} {} {}",
                    if g.passed { "PASS" } else { "FAIL" },
                    g.model
                        .as_ref()
                        .map(|m| format!(" [{}]", esc(m)))
                        .unwrap_or_default(),
                    esc(g.op.as_str()),
                    num(g.threshold)
                )
            })
            .collect();
        let _ = writeln!(h, "<td class=\"name\">{}</td></tr>", verdicts.join("; "));
    }
    h.push_str("</table></div>\n");
    if let Some(r) = &evals[0].groupings[k].reference_group {
        let _ = writeln!(
            h,
            "<p class=\"note\">Reference group of disparate_impact_ratio and average_odds_difference: {}.</p>",
            esc(r)
        );
    }
    h.push_str("</section>\n");
    Ok(())
}
