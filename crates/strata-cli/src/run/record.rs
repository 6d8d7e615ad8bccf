//! A run's record: each stage's status, time, outputs and note, the line it prints as
//! it ends, and the run folder the stages write to.

use std::io::IsTerminal;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use url::Url;

use crate::commands::print_stdout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Status {
    /// Ran and passed (warnings allowed).
    Passed,
    /// Ran, and its checks or gates failed.
    Failed,
    /// Could not run to the end.
    Error,
    /// Not run: a stage it depends on did not pass, or it has nothing to do.
    Skipped,
}

#[derive(Debug, Serialize)]
pub(super) struct Stage {
    pub(super) name: &'static str,
    pub(super) status: Status,
    pub(super) seconds: f64,
    pub(super) outputs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
}

/// The run folder; small outputs are put whole.
pub(super) struct Folder {
    pub(super) url: Url,
    pub(super) dest: strata_run::Destination,
}

impl Folder {
    pub(super) fn url_of(&self, rel: &str) -> Url {
        self.url.join(rel).expect("a relative path")
    }

    pub(super) async fn put(&self, rel: &str, bytes: impl Into<Bytes>) -> anyhow::Result<String> {
        self.dest.put(rel, bytes.into()).await?;
        Ok(self.dest.url_of(rel))
    }
}

/// Where the stage lines go: stdout, one line per stage as it ends (a scheduler's log
/// keeps them); on a terminal, a spinner on stderr while a stage runs.
struct Lines {
    table: bool,
    spinner: Option<indicatif::ProgressBar>,
    bars: bool,
}

impl Lines {
    fn start(&mut self, name: &str) {
        tracing::info!(stage = name, "stage started");
        if self.bars && std::io::stderr().is_terminal() {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message(name.to_string());
            s.enable_steady_tick(std::time::Duration::from_millis(120));
            self.spinner = Some(s);
        }
    }

    fn end(&mut self, stage: &Stage) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
        tracing::info!(stage = stage.name, status = ?stage.status, seconds = stage.seconds, "stage finished");
        if self.table {
            let mark = match stage.status {
                Status::Passed => "ok",
                Status::Failed => "FAILED",
                Status::Error => "ERROR",
                Status::Skipped => "skipped",
            };
            let mut line = format!("{:<16} {:<8} {:>7.1} s", stage.name, mark, stage.seconds);
            if let Some(m) = &stage.message {
                line.push_str(&format!("  {m}"));
            }
            let _ = print_stdout(&(line + "\n"));
        }
    }
}

/// Runs one stage: times it and records its status; an error becomes the stage's
/// message (the run stops there).
pub(super) struct Recorder {
    pub(super) stages: Vec<Stage>,
    lines: Lines,
    pub(super) stopped_at: Option<&'static str>,
    pub(super) worst: Status,
}

impl Recorder {
    /// A record whose stage lines go to stdout as a table (`table`), with a spinner on
    /// a terminal (`bars`).
    pub(super) fn new(table: bool, bars: bool) -> Self {
        Self {
            stages: Vec::new(),
            lines: Lines {
                table,
                spinner: None,
                bars,
            },
            stopped_at: None,
            worst: Status::Passed,
        }
    }

    /// A stage that cannot run because an earlier one did not pass.
    pub(super) fn blocked(&mut self, name: &'static str) {
        let why = format!(
            "not run: stage {} did not pass",
            self.stopped_at.unwrap_or("an earlier stage")
        );
        self.skip(name, &why);
    }

    pub(super) fn skip(&mut self, name: &'static str, why: &str) {
        let stage = Stage {
            name,
            status: Status::Skipped,
            seconds: 0.0,
            outputs: Vec::new(),
            message: Some(why.to_string()),
        };
        self.lines.end(&stage);
        self.stages.push(stage);
    }

    /// `f` gives the stage's status, outputs and a note; `Err` is an error.
    pub(super) async fn stage<T>(
        &mut self,
        name: &'static str,
        f: impl Future<Output = anyhow::Result<(T, Status, Vec<String>, Option<String>)>>,
    ) -> Option<T> {
        if let Some(at) = self.stopped_at {
            self.skip(name, &format!("not run: stage {at} did not pass"));
            return None;
        }
        self.lines.start(name);
        let t = Instant::now();
        let (value, status, outputs, message) = match f.await {
            Ok((v, s, o, m)) => (Some(v), s, o, m),
            Err(e) => (None, Status::Error, Vec::new(), Some(crate::error_line(&e))),
        };
        let stage = Stage {
            name,
            status,
            seconds: t.elapsed().as_secs_f64(),
            outputs,
            message,
        };
        self.lines.end(&stage);
        if status == Status::Error || status == Status::Failed {
            self.stopped_at = Some(name);
            tracing::error!(
                stage = name,
                message = stage.message.as_deref().unwrap_or(""),
                "stage did not pass"
            );
        }
        self.worst = worse(self.worst, status);
        self.stages.push(stage);
        value
    }
}

fn worse(a: Status, b: Status) -> Status {
    let rank = |s| match s {
        Status::Passed | Status::Skipped => 0,
        Status::Failed => 1,
        Status::Error => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

pub(super) fn check_status(run: &strata_check::CheckRun) -> Status {
    if run.any_error() {
        Status::Error
    } else if run.any_failure() {
        Status::Failed
    } else {
        Status::Passed
    }
}
