//! Check results for people (one line per check), for CI (JUnit XML) and for machines
//! (JSON, a versioned contract).

use std::io::Cursor;

use datafusion::arrow::json::ArrayWriter;
use datafusion::arrow::util::pretty::pretty_format_batches;
use quick_xml::Writer;
use quick_xml::events::{BytesCData, BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use crate::run::{CheckResult, Status};

/// Bumped on any change to the JSON contract that could break a reader.
pub const CHECKS_SCHEMA_VERSION: u32 = 1;

/// Rows of a failure shown in JUnit and JSON (all kept rows go to Parquet).
const SHOWN_ROWS: usize = 10;

/// All results of one `strata check`.
#[derive(Debug)]
pub struct CheckRun {
    pub pipeline: String,
    pub run_id: String,
    pub strict: bool,
    pub results: Vec<CheckResult>,
}

impl CheckRun {
    fn count(&self, s: Status) -> usize {
        self.results.iter().filter(|r| r.status == s).count()
    }

    /// A result's status with `--strict` applied (warnings fail).
    pub fn effective(&self, r: &CheckResult) -> Status {
        if self.strict && r.status == Status::Warn {
            Status::Fail
        } else {
            r.status
        }
    }

    pub fn any_error(&self) -> bool {
        self.count(Status::Error) > 0
    }

    pub fn any_failure(&self) -> bool {
        self.results
            .iter()
            .any(|r| self.effective(r) == Status::Fail)
    }

    /// One line per check, then the totals.
    pub fn render_text(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|r| r.check.name.len() + r.stage.as_str().len() + 3)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for r in &self.results {
            let label = format!("{} [{}]", r.check.name, r.stage.as_str());
            let detail = match (r.status, r.failing_rows) {
                (Status::Error | Status::Skipped, _) => r.message.clone().unwrap_or_default(),
                (_, Some(n)) => {
                    let pct = if r.checked_rows > 0 {
                        100.0 * n as f64 / r.checked_rows as f64
                    } else {
                        0.0
                    };
                    let share = match (r.checked_rows, n) {
                        (0, _) | (_, 0) => String::new(),
                        _ if pct < 0.01 => format!(" (<0.01% of {})", r.checked_rows),
                        _ => format!(" ({pct:.2}% of {})", r.checked_rows),
                    };
                    let rule = if r.status == Status::Pass {
                        String::new()
                    } else {
                        format!("; {}", r.rule)
                    };
                    format!(
                        "{n} failing row{}{share}{rule}",
                        if n == 1 { "" } else { "s" }
                    )
                }
                (_, None) => String::new(),
            };
            out.push_str(&format!(
                "{:<5} {label:<width$}  {detail}  ({} ms)\n",
                self.effective(r).as_str(),
                r.duration_ms,
                detail = strata_spec::printable(&detail),
            ));
        }
        out.push_str(&format!(
            "{} checks: {} passed, {} warned, {} failed, {} errors, {} skipped{}\n",
            self.results.len(),
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Error),
            self.count(Status::Skipped),
            if self.strict {
                " (--strict: warnings fail)"
            } else {
                ""
            }
        ));
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.check.name,
                    "file": r.check.path.display().to_string(),
                    "description": r.check.description,
                    "stage": r.stage.as_str(),
                    "severity": r.check.severity.as_str(),
                    "status": self.effective(r),
                    "failing_rows": r.failing_rows,
                    "checked_rows": r.checked_rows,
                    "failing_share": r.failing_rows.map(|n| if r.checked_rows == 0 { 0.0 } else { n as f64 / r.checked_rows as f64 }),
                    "rule": r.rule,
                    "message": r.message,
                    "duration_ms": r.duration_ms,
                    "sample": sample_json(r),
                    "failing_rows_file": r.failing_rows_file,
                })
            })
            .collect();
        serde_json::json!({
            "schema_version": CHECKS_SCHEMA_VERSION,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "strict": self.strict,
            "summary": {
                "checks": self.results.len(),
                "passed": self.count(Status::Pass),
                "warned": self.count(Status::Warn),
                "failed": self.count(Status::Fail),
                "errors": self.count(Status::Error),
                "skipped": self.count(Status::Skipped),
            },
            "checks": checks,
        })
    }

    /// JUnit XML: one testsuite per stage, one testcase per check. Failures carry the
    /// first failing rows; checks that could not run are `<error>`s; warnings pass with
    /// the warning in `<system-out>` (unless `--strict`).
    pub fn to_junit(&self) -> String {
        let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
        let ok = |r: std::io::Result<()>| r.expect("writing XML to memory");
        ok(w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None))));
        let total_ms: u64 = self.results.iter().map(|r| r.duration_ms).sum();
        let mut suites = BytesStart::new("testsuites");
        suites.push_attribute(("name", format!("strata check {}", self.pipeline).as_str()));
        suites.push_attribute(("tests", self.results.len().to_string().as_str()));
        suites.push_attribute((
            "failures",
            self.results
                .iter()
                .filter(|r| self.effective(r) == Status::Fail)
                .count()
                .to_string()
                .as_str(),
        ));
        suites.push_attribute(("errors", self.count(Status::Error).to_string().as_str()));
        suites.push_attribute(("time", secs(total_ms).as_str()));
        ok(w.write_event(Event::Start(suites)));
        let mut stages: Vec<&str> = self.results.iter().map(|r| r.stage.as_str()).collect();
        stages.dedup();
        for stage in stages {
            let mine: Vec<&CheckResult> = self
                .results
                .iter()
                .filter(|r| r.stage.as_str() == stage)
                .collect();
            let mut suite = BytesStart::new("testsuite");
            suite.push_attribute(("name", format!("{}.{stage}", self.pipeline).as_str()));
            suite.push_attribute(("tests", mine.len().to_string().as_str()));
            suite.push_attribute((
                "failures",
                mine.iter()
                    .filter(|r| self.effective(r) == Status::Fail)
                    .count()
                    .to_string()
                    .as_str(),
            ));
            suite.push_attribute((
                "errors",
                mine.iter()
                    .filter(|r| r.status == Status::Error)
                    .count()
                    .to_string()
                    .as_str(),
            ));
            suite.push_attribute((
                "skipped",
                mine.iter()
                    .filter(|r| r.status == Status::Skipped)
                    .count()
                    .to_string()
                    .as_str(),
            ));
            suite.push_attribute((
                "time",
                secs(mine.iter().map(|r| r.duration_ms).sum()).as_str(),
            ));
            ok(w.write_event(Event::Start(suite)));
            for r in mine {
                let mut case = BytesStart::new("testcase");
                case.push_attribute(("classname", format!("strata.{stage}").as_str()));
                case.push_attribute(("name", r.check.name.as_str()));
                case.push_attribute(("file", r.check.path.display().to_string().as_str()));
                case.push_attribute(("time", secs(r.duration_ms).as_str()));
                ok(w.write_event(Event::Start(case)));
                let body = |r: &CheckResult| {
                    let rows = r.failing_rows.unwrap_or(0);
                    format!(
                        "{rows} failing rows of {} ({}); first rows:\n{}",
                        r.checked_rows,
                        r.rule,
                        sample_text(r)
                    )
                };
                match self.effective(r) {
                    Status::Fail => {
                        let mut f = BytesStart::new("failure");
                        f.push_attribute(("type", r.check.severity.as_str()));
                        f.push_attribute((
                            "message",
                            format!(
                                "{}: {} failing rows ({})",
                                r.check.name,
                                r.failing_rows.unwrap_or(0),
                                r.rule
                            )
                            .as_str(),
                        ));
                        ok(w.write_event(Event::Start(f)));
                        ok(w.write_event(Event::CData(BytesCData::new(body(r)))));
                        ok(w.write_event(Event::End(BytesEnd::new("failure"))));
                    }
                    Status::Error => {
                        let mut e = BytesStart::new("error");
                        e.push_attribute((
                            "message",
                            r.message.as_deref().unwrap_or("the check could not run"),
                        ));
                        ok(w.write_event(Event::Empty(e)));
                    }
                    Status::Skipped => {
                        let mut e = BytesStart::new("skipped");
                        e.push_attribute((
                            "message",
                            r.message.as_deref().unwrap_or("stage not run"),
                        ));
                        ok(w.write_event(Event::Empty(e)));
                    }
                    Status::Warn => {
                        ok(w.write_event(Event::Start(BytesStart::new("system-out"))));
                        ok(w.write_event(Event::Text(BytesText::new(&format!(
                            "WARN: {}",
                            body(r)
                        )))));
                        ok(w.write_event(Event::End(BytesEnd::new("system-out"))));
                    }
                    Status::Pass => {}
                }
                ok(w.write_event(Event::End(BytesEnd::new("testcase"))));
            }
            ok(w.write_event(Event::End(BytesEnd::new("testsuite"))));
        }
        ok(w.write_event(Event::End(BytesEnd::new("testsuites"))));
        let mut xml = String::from_utf8(w.into_inner().into_inner()).expect("XML is UTF-8");
        xml.push('\n');
        xml
    }
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

fn shown(r: &CheckResult) -> Vec<datafusion::arrow::array::RecordBatch> {
    let mut left = SHOWN_ROWS;
    let mut out = Vec::new();
    for b in &r.sample {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        out.push(b.slice(0, n));
        left -= n;
    }
    out
}

fn sample_text(r: &CheckResult) -> String {
    pretty_format_batches(&shown(r))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn sample_json(r: &CheckResult) -> serde_json::Value {
    let batches = shown(r);
    if batches.is_empty() {
        return serde_json::Value::Array(vec![]);
    }
    let mut w = ArrayWriter::new(Vec::new());
    let refs: Vec<&datafusion::arrow::array::RecordBatch> = batches.iter().collect();
    if w.write_batches(&refs).and_then(|()| w.finish()).is_err() {
        return serde_json::Value::Array(vec![]);
    }
    serde_json::from_slice(&w.into_inner()).unwrap_or(serde_json::Value::Array(vec![]))
}
