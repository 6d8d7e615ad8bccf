//! Running checks: each is planned with DDL, DML and other statements disallowed, its
//! parameters bound as values, its failing rows counted and the first ones kept.

use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::*;
use futures::StreamExt;
use serde::Serialize;
use strata_spec::ParamValue;

use crate::file::{CheckFile, Severity, Stage};
use crate::threshold::Threshold;

/// Checks planned and run at once.
const CHECKS_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// The check could not run (SQL error, unknown column, missing parameter).
    Error,
    /// Its stage was not run (e.g. `curated` without `--out`).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Error => "ERROR",
            Self::Skipped => "SKIP",
        }
    }
}

/// One check's outcome at one stage.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub check: CheckFile,
    pub stage: Stage,
    pub status: Status,
    pub failing_rows: Option<u64>,
    /// Rows of the stage's table (`source` or `curated`): the base of percentages.
    pub checked_rows: u64,
    /// What tripped (or would trip) the check, e.g. `error_if > 0`.
    pub rule: String,
    /// The error (status `error`) or why it was skipped, one line.
    pub message: Option<String>,
    pub duration_ms: u64,
    /// The first failing rows (at most `max_failing_rows`).
    pub sample: Vec<RecordBatch>,
    /// Where the kept failing rows were written.
    pub failing_rows_file: Option<String>,
}

/// The rules a check is judged by: its thresholds, or `> 0` at its severity.
pub fn rules(check: &CheckFile) -> (Option<Threshold>, Option<Threshold>) {
    let any = Threshold::parse("> 0").expect("static threshold");
    match (check.warn_if, check.error_if) {
        (None, None) => match check.severity {
            Severity::Warn => (Some(any), None),
            Severity::Error => (None, Some(any)),
        },
        other => other,
    }
}

/// Runs `checks` at `stage` in the session (the stage's views already registered).
pub async fn run_stage(
    ctx: &SessionContext,
    checks: &[&CheckFile],
    stage: Stage,
    params: &[(String, ParamValue)],
    checked_rows: u64,
    max_failing_rows: u64,
    timeout: std::time::Duration,
) -> Vec<CheckResult> {
    futures::stream::iter(checks.iter().map(|c| {
        run_one(
            ctx,
            c,
            stage,
            params,
            checked_rows,
            max_failing_rows,
            timeout,
        )
    }))
    .buffered(CHECKS_IN_FLIGHT)
    .collect()
    .await
}

async fn run_one(
    ctx: &SessionContext,
    check: &CheckFile,
    stage: Stage,
    params: &[(String, ParamValue)],
    checked_rows: u64,
    max_failing_rows: u64,
    timeout: std::time::Duration,
) -> CheckResult {
    let started = Instant::now();
    let (warn_if, error_if) = rules(check);
    let mut result = CheckResult {
        check: check.clone(),
        stage,
        status: Status::Pass,
        failing_rows: None,
        checked_rows,
        rule: String::new(),
        message: None,
        duration_ms: 0,
        sample: Vec::new(),
        failing_rows_file: None,
    };
    // Past its time limit a check's future is dropped, which cancels its plan (the
    // stream's tasks are aborted with it); the other checks go on.
    let outcome = tokio::time::timeout(timeout, evaluate(ctx, check, params, max_failing_rows))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{}: timed out after {} s and was cancelled (`[checks] timeout_secs`, `--check-timeout`)",
                check.path.display(),
                timeout.as_secs()
            ))
        });
    match outcome {
        Err(message) => {
            result.status = Status::Error;
            result.message = Some(message);
        }
        Ok((count, sample)) => {
            result.failing_rows = Some(count);
            result.sample = sample;
            if let Some(t) = error_if.filter(|t| t.trips(count, checked_rows)) {
                result.status = Status::Fail;
                result.rule = format!("error_if {t}");
            } else if let Some(t) = warn_if.filter(|t| t.trips(count, checked_rows)) {
                result.status = Status::Warn;
                result.rule = format!("warn_if {t}");
            } else {
                result.rule = [
                    warn_if.map(|t| format!("warn_if {t}")),
                    error_if.map(|t| format!("error_if {t}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            }
        }
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(check = %check.name, stage = stage.as_str(), status = result.status.as_str(), "check done");
    result
}

/// The failing-row count and the first failing rows, or a one-line error that names the
/// file and the line.
async fn evaluate(
    ctx: &SessionContext,
    check: &CheckFile,
    params: &[(String, ParamValue)],
    max_failing_rows: u64,
) -> Result<(u64, Vec<RecordBatch>), String> {
    let located = |e: datafusion::error::DataFusionError| locate(check, &e.to_string());
    // Checks read; they never create, change or drop anything.
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(&check.sql, options)
        .await
        .map_err(located)?;
    // a check returns failing rows: EXPLAIN and DESCRIBE return text about a query
    if matches!(
        df.logical_plan(),
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
    ) {
        return Err(format!(
            "{}:1: a check must be a query that returns the failing rows (SELECT ...), not EXPLAIN or DESCRIBE",
            check.path.display()
        ));
    }
    let values: Vec<(String, ScalarValue)> =
        params.iter().map(|(k, v)| (k.clone(), scalar(v))).collect();
    let df = df
        .with_param_values(ParamValues::Map(
            values.into_iter().map(|(k, v)| (k, v.into())).collect(),
        ))
        .map_err(located)?;
    // One execution: count every failing row, keep the first `max_failing_rows`.
    let mut stream = df.execute_stream().await.map_err(located)?;
    let (mut count, mut sample) = (0u64, Vec::new());
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(located)?;
        let keep = (max_failing_rows.saturating_sub(count) as usize).min(batch.num_rows());
        if keep > 0 {
            sample.push(batch.slice(0, keep));
        }
        count += batch.num_rows() as u64;
    }
    Ok((count, sample))
}

fn scalar(v: &ParamValue) -> ScalarValue {
    match v {
        ParamValue::String(s) => ScalarValue::Utf8(Some(s.clone())),
        ParamValue::Int(i) => ScalarValue::Int64(Some(*i)),
        ParamValue::Float(f) => ScalarValue::Float64(Some(*f)),
        ParamValue::Bool(b) => ScalarValue::Boolean(Some(*b)),
    }
}

/// `FILE:LINE: message`. The line comes from the SQL parser's `Line: N`, or for an
/// unknown column or table from the first SQL line that names it.
fn locate(check: &CheckFile, error: &str) -> String {
    let message = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // DataFusion lists every valid field after an unknown one: long and not the point.
    let message = match message.find(". Valid fields are") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let mut line = parser_line(&message);
    if line.is_none() {
        let name = [
            "No field named ",
            "table '",
            "No value found for placeholder with name ",
        ]
        .iter()
        .find_map(|p| message.find(p).map(|i| &message[i + p.len()..]))
        .map(|rest| {
            rest.split([' ', '\'', ','])
                .next()
                .unwrap_or("")
                .trim_end_matches('.')
                .to_string()
        });
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let bare = name
                .rsplit('.')
                .next()
                .unwrap_or(&name)
                .trim_matches('"')
                .to_string();
            line = sql_lines(&check.sql)
                .find(|(_, l)| l.contains(&bare))
                .map(|(n, _)| n);
        }
    }
    let line = line
        .or_else(|| sql_lines(&check.sql).next().map(|(n, _)| n))
        .unwrap_or(1);
    let message = message.replace(
        "No value found for placeholder with name ",
        "parameter not declared in [checks.params]: ",
    );
    format!("{}:{line}: {message}", check.path.display())
}

fn parser_line(message: &str) -> Option<usize> {
    let i = message.find("Line: ")?;
    message[i + 6..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// (1-based line number, text) of the lines that are SQL, not comments or blanks.
fn sql_lines(sql: &str) -> impl Iterator<Item = (usize, &str)> {
    sql.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with("--"))
        .map(|(i, l)| (i + 1, l))
}
